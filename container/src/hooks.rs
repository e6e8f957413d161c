//! OCI hooks: programs the runtime runs at points of a container's life, each given the
//! container's state JSON on its stdin. Where and when each kind runs is the caller's business
//! (createContainer and startContainer from the container's first process, the others from the
//! runtime); this runs one list of hooks in order, each with its timeout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One hook (OCI `hooks.<kind>[]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds; `None` waits as long as it takes.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Runs `hooks` in order with `state` on stdin; the first that fails (cannot start, exits
/// non-zero, or outlives its timeout and is killed) ends the list with an error naming it.
pub fn run(kind: &str, hooks: &[Hook], state: &str) -> Result<(), String> {
    for hook in hooks {
        run_one(kind, hook, state)?;
    }
    Ok(())
}

fn run_one(kind: &str, hook: &Hook, state: &str) -> Result<(), String> {
    let name = format!("{kind} hook {}", hook.path);
    let mut cmd = Command::new(&hook.path);
    if let Some((first, rest)) = hook.args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let began = sandbox_protocol::trace::start();
    let mut child = cmd.spawn().map_err(|e| format!("{name}: cannot start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin may close it: that is its right.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s.max(1)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name}: still running after its timeout of {} s, killed",
                    hook.timeout.unwrap_or(0)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("{name}: cannot wait for it: {e}")),
        }
    };
    sandbox_protocol::trace::step("hook", began, || format!("{name}: {status}"));
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["GREETING=hi".into()],
            timeout,
        }
    }

    #[test]
    fn hooks_get_the_state_on_stdin_and_their_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo $GREETING >> {0}", out.display());
        run("poststop", &[sh(&script, Some(5))], "{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}hi\n");
    }

    #[test]
    fn a_failing_or_slow_hook_is_named() {
        let err = run("prestart", &[sh("exit 3", None)], "{}").unwrap_err();
        assert!(err.contains("prestart hook /bin/sh failed"), "{err}");
        let err = run("prestart", &[sh("sleep 5", Some(1))], "{}").unwrap_err();
        assert!(err.contains("timeout of 1 s"), "{err}");
        let missing = Hook {
            path: "/nonexistent/hook".into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: None,
        };
        let err = run("poststart", &[missing], "{}").unwrap_err();
        assert!(err.contains("/nonexistent/hook"), "{err}");
    }
}
