//! `docs/tour.md` and `docs/security.md` run as written: every ` ```sh ` block is executed with
//! `bash -eo pipefail`, `sandbox` first on `PATH` and a private `$SANDBOX_HOME`, and must end
//! with status 0 — or with N when its first line is `# exit: N`. VM blocks go through `sandbox
//! lab` as the pages write them. The tour must cover claims 1 to 10 and the security page its
//! eleven sections, each with a command and a shown output.
//!
//! Needs root, busybox-static, a built workspace (`cargo build --workspace`), and for the lab
//! blocks qemu-system-x86 and the guest kernel (`sandbox kernel build`); a missing piece fails
//! with the block and the fix `sandbox` printed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");
const TOUR: &str = include_str!("../docs/tour.md");
const SECURITY: &str = include_str!("../docs/security.md");

/// One command block of the tour.
#[derive(Debug)]
struct Block {
    /// The `## N.` section it is in (0 before the first).
    claim: u32,
    script: String,
    expected_status: i32,
}

/// The ` ```sh ` blocks of `markdown`, with the claim each belongs to and its expected status.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut claim = 0;
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            Some(script) if line.trim_end() == "```" => {
                let expected_status = script
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("# exit: "))
                    .map(|n| n.trim().parse().expect("a number after `# exit: `"))
                    .unwrap_or(0);
                out.push(Block {
                    claim,
                    script: std::mem::take(script),
                    expected_status,
                });
                current = None;
            }
            Some(script) => {
                script.push_str(line);
                script.push('\n');
            }
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            None => {
                if let Some(n) = line
                    .strip_prefix("## ")
                    .and_then(|h| h.split_once('.'))
                    .and_then(|(n, _)| n.parse().ok())
                {
                    claim = n;
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    out
}

/// Every numbered section 1..=`sections` of `page` has a command block, and each block a shown
/// output.
fn assert_covered(name: &str, page: &str, sections: u32) {
    let blocks = blocks(page);
    for claim in 1..=sections {
        assert!(
            blocks.iter().any(|b| b.claim == claim),
            "section {claim} of {name} has no ```sh command block"
        );
    }
    assert!(
        !page.contains("OUTPUT-"),
        "{name} still has an output placeholder"
    );
    let outputs = page.matches("```text").count();
    assert!(
        outputs >= blocks.len(),
        "{name}: {} command blocks but only {outputs} shown outputs",
        blocks.len()
    );
}

#[test]
fn the_tour_covers_every_claim_with_a_command_and_its_output() {
    assert_covered("docs/tour.md", TOUR, 10);
}

#[test]
fn the_security_page_shows_every_claim_with_a_probe_and_its_output() {
    assert_covered("docs/security.md", SECURITY, 11);
}

#[test]
fn the_tours_commands_run_as_written() {
    run_page("docs/tour.md", TOUR);
}

#[test]
fn the_security_pages_probes_run_as_written() {
    run_page("docs/security.md", SECURITY);
}

/// Runs every command block of `page`, each in a fresh bash with `sandbox` on PATH and one
/// private `$SANDBOX_HOME` for the page.
fn run_page(name: &str, page: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the tour runs containers and the lab: run the test as root"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "busybox is missing (the default image is built from it): run `apt-get install busybox-static`"
    );
    let bin_dir = Path::new(SANDBOX).parent().unwrap();
    assert!(
        bin_dir.join("sandbox-guest").is_file(),
        "sandbox-guest is not built next to sandbox: run `cargo build --workspace` first"
    );
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The repository's scripts too (claim 11 runs `oci-vm-lab`).
    let path = format!(
        "{}:{}/scripts:{}",
        bin_dir.display(),
        env!("CARGO_MANIFEST_DIR"),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    for (i, block) in blocks(page).iter().enumerate() {
        let t = Instant::now();
        // A block's `2>/dev/null` (hiding a trace from the reader) goes to a file instead, so a
        // failure shows why; stdout, which the page prints, is unchanged.
        let hidden = work.path().join(format!("block-{i}.stderr"));
        let script = block.script.replace("2>/dev/null", "2>>\"$SANDBOX_TOUR_HIDDEN\"");
        let mut cmd = Command::new("bash");
        if block.expected_status == 0 {
            cmd.arg("-e");
        }
        let out = cmd
            .args(["-o", "pipefail", "-c", &script])
            .current_dir(work.path())
            .env("SANDBOX_TOUR_HIDDEN", &hidden)
            .env("SANDBOX_BIN_DIR", bin_dir)
            // A stalled emulated host gets a lab block's run again, once (announced).
            .env(sandbox_lab::RETRY_STALLED_ENV, "1")
            .env("PATH", &path)
            .env("SANDBOX_HOME", home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash runs");
        let status = out.status.code().unwrap_or(-1);
        eprintln!(
            "{name} block {i} (section {}): status {status} in {:.1} s",
            block.claim,
            t.elapsed().as_secs_f64()
        );
        if status != block.expected_status {
            let hidden_text = std::fs::read_to_string(&hidden).unwrap_or_default();
            let hidden_tail: Vec<&str> = hidden_text.lines().rev().take(60).collect();
            let hidden_tail: Vec<&str> = hidden_tail.into_iter().rev().collect();
            failures.push(format!(
                "{name} block {i} (section {}) ended with {status}, the page says {}:\n{}--- stdout\n{}--- stderr\n{}--- stderr the page hides (last 60 lines)\n{}",
                block.claim,
                block.expected_status,
                block.script,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                hidden_tail.join("\n")
            ));
        }
    }
    eprintln!("all of {name} ran in {:.1} s", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn blocks_are_found_with_their_claim_and_status() {
    let md = "intro\n```sh\necho a\n```\n## 3. Three\n```text\nout\n```\n```sh\n# exit: 2\nfalse\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].claim, b[0].expected_status), (0, 0));
    assert_eq!((b[1].claim, b[1].expected_status), (3, 2));
    assert_eq!(b[1].script, "# exit: 2\nfalse\n");
}
