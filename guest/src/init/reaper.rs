//! PID 1's duties while the workload runs: forward termination signals to it, reap every
//! zombie (orphans are re-parented to PID 1), and when the workload ends, kill and reap whatever
//! it left behind.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals init passes on to the workload.
pub const FORWARDED: [Signal; 4] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];

/// The signals init waits for: the forwarded ones and SIGCHLD.
fn waited() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the waited-for signals, so they queue for [`wait_for`] instead of being dropped (the
/// kernel discards default-action signals sent to a namespace's PID 1). Call before forking.
pub fn block_signals() -> Result<(), Errno> {
    waited().thread_block()
}

/// Undoes [`block_signals`] in the child before it runs the workload.
pub fn unblock_all() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The shell convention for a wait status: the exit code, or 128 + the signal number.
pub fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every child that has ended; returns `main`'s status code if it was among them.
fn reap_ready(main: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(main) {
                    found = found.or(status_code(status));
                }
            }
        }
    }
}

/// Waits until `main` ends, forwarding signals to it and reaping every other child meanwhile;
/// returns its status code.
pub fn wait_for(main: Pid) -> i32 {
    let set = waited();
    loop {
        if let Some(code) = reap_ready(main) {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = kill(main, sig);
            }
            Err(_) => {
                // sigwait only fails for a bad set; fall back to a blocking wait for the child.
                if let Ok(status) = waitpid(main, None) {
                    if let Some(code) = status_code(status) {
                        return code;
                    }
                }
            }
        }
    }
}

/// Kills every process left (only as PID 1, where `kill(-1)` means "everyone in this sandbox")
/// and reaps them all.
pub fn kill_remaining() {
    if std::process::id() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    while let Ok(status) = waitpid(Pid::from_raw(-1), None) {
        let _ = status;
    }
}
