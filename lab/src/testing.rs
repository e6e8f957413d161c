//! For tests that need hardware KVM: run the test's body here when this host has it, and
//! otherwise run the same test — this very test binary, filtered to that one test — inside L1,
//! where `kvm_amd` provides it. Either way the body runs against a real KVM; a test never passes
//! without it.
//!
//! ```no_run
//! #[test]
//! fn boots_a_guest() {
//!     if sandbox_lab::testing::delegate("boots_a_guest").unwrap().ran_in_lab() {
//!         return; // the body ran, and passed, inside L1
//!     }
//!     // ... the body: open /dev/kvm and boot something
//! }
//! ```

use crate::{qemu_run_captured, retrying_a_faulty_host, Environment, HostKvm, LabError, LabOptions};
use std::time::Duration;
use std::time::Instant;

/// Where a delegated test's body runs.
#[derive(Debug)]
pub enum Place {
    /// Here: this host (or the L1 the test already runs in) has hardware KVM; run the body.
    Here,
    /// Inside L1, where it ran and passed; `output` is what the test binary printed.
    Lab { output: String },
}

impl Place {
    /// True when the body already ran in L1, so the caller returns.
    pub fn ran_in_lab(&self) -> bool {
        matches!(self, Place::Lab { .. })
    }

    /// Where the body ran.
    pub fn environment(&self) -> Environment {
        match self {
            Place::Here => Environment::Native,
            Place::Lab { .. } => Environment::Lab,
        }
    }
}

/// [`delegate_with`] with the default lab options (but no progress lines).
pub fn delegate(test_name: &str) -> Result<Place, LabError> {
    delegate_with(
        test_name,
        &LabOptions {
            progress: false,
            ..LabOptions::default()
        },
    )
}

/// Decides where the test `test_name` (its full path as the harness prints it, e.g.
/// `module::name` for unit tests) runs. Without hardware KVM here, boots L1 with this test binary
/// as its `sandbox` and runs `TEST_NAME --exact --include-ignored --test-threads=1 --nocapture`
/// there; panics with the output unless exactly that one test ran and passed.
pub fn delegate_with(test_name: &str, opts: &LabOptions) -> Result<Place, LabError> {
    if !HostKvm::detect().needs_lab() {
        return Ok(Place::Here);
    }
    let exe = std::env::current_exe()
        .map_err(|e| LabError::BinaryNotFound(format!("cannot find the running test binary: {e}")))?;
    let opts = LabOptions {
        sandbox_bin: Some(exe),
        ..opts.clone()
    };
    let start = Instant::now();
    let args = [
        test_name,
        "--exact",
        "--include-ignored",
        "--test-threads=1",
        "--nocapture",
    ];
    let opts = with_test_timeout(&opts);
    let ended = retrying_a_faulty_host(
        || qemu_run_captured(&args, &opts),
        true,
        |signature, tail| announce_retry(test_name, signature, tail),
    )?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ended.stdout),
        String::from_utf8_lossy(&ended.stderr)
    );
    eprintln!(
        "--- {test_name} inside the lab's L1 ({:.1} s, status {}) ---\n{output}--- end of L1 output ---",
        start.elapsed().as_secs_f64(),
        ended.status
    );
    assert!(!ended.timed_out, "{test_name} timed out inside L1");
    assert!(
        ended.status == 0 && output.contains("test result: ok. 1 passed"),
        "{test_name} failed inside L1 (status {}), or did not run exactly once",
        ended.status
    );
    Ok(Place::Lab { output })
}

/// What a delegated test prints before its one rerun after L1's kernel crashed.
pub fn announce_retry(what: &str, signature: &str, console_tail: &str) {
    eprintln!(
        "--- {what}: the emulated host failed ({signature}); running it again, once. L1 console \
         tail:\n{console_tail}\n---"
    );
}

/// The timeout a lab test run gets when it names none: every one finishes in a fraction of it,
/// so reaching it means a stall (see [`retrying_a_faulty_host`]).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// `opts` with [`TEST_TIMEOUT`] unless it has a timeout of its own.
pub fn with_test_timeout(opts: &LabOptions) -> LabOptions {
    LabOptions {
        timeout: opts.timeout.or(Some(TEST_TIMEOUT)),
        ..opts.clone()
    }
}
