//! Finding host programs on PATH (so tests can hide one by changing PATH) and running them.

use crate::LabError;
use std::env;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// The first executable file named `name` in `$PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Like [`find_on_path`], but a missing tool is an error naming its Debian package.
pub fn require(tool: &'static str, package: &'static str) -> Result<PathBuf, LabError> {
    find_on_path(tool).ok_or(LabError::ToolMissing { tool, package })
}

/// Runs a command to completion; a non-zero status is an error carrying its stderr.
pub fn run_capture(program: &std::path::Path, args: &[&OsStr]) -> Result<String, LabError> {
    let shown = || {
        let mut s = program.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::CommandFailed {
            command: shown(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(LabError::CommandFailed {
            command: shown(),
            detail: format!("{}: {}", out.status, stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
