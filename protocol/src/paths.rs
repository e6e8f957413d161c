//! Where sandbox keeps its state on the host, and where it finds its own guest program.
//!
//! - `$SANDBOX_HOME` (default `~/.local/share/sandbox`): the image store and run directories.
//! - `$SANDBOX_CACHE` (default `$XDG_CACHE_HOME/sandbox`, else `~/.cache/sandbox`): rebuildable
//!   artifacts — guest kernels, root disks, lab images — keyed by content, shared by tests and CI.

use std::env;
use std::path::PathBuf;

fn home_dir() -> PathBuf {
    env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The state directory: the image store (`images/`), unpacked layers (`layers/`), run dirs (`run/`).
pub fn sandbox_home() -> PathBuf {
    match env::var_os("SANDBOX_HOME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => home_dir().join(".local/share/sandbox"),
    }
}

/// The cache directory for artifacts that are expensive to rebuild and keyed by their inputs.
pub fn sandbox_cache() -> PathBuf {
    if let Some(p) = env::var_os("SANDBOX_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    match env::var_os("XDG_CACHE_HOME") {
        Some(p) if !p.is_empty() => PathBuf::from(p).join("sandbox"),
        _ => home_dir().join(".cache/sandbox"),
    }
}

/// Environment variable overriding where the static `sandbox-guest` binary is taken from.
pub const GUEST_BIN_ENV: &str = "SANDBOX_GUEST_BIN";

/// Finds the static `sandbox-guest` binary that goes into every image and root disk:
/// `$SANDBOX_GUEST_BIN`, else next to the running executable (also one level up, for test
/// binaries under `target/.../deps/`).
pub fn guest_binary() -> Result<PathBuf, String> {
    if let Some(p) = env::var_os(GUEST_BIN_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{GUEST_BIN_ENV}={} is not a file: point it at a built sandbox-guest",
                p.display()
            ))
        };
    }
    let exe = env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("sandbox-guest"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("sandbox-guest"));
        }
    }
    candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
        format!(
            "sandbox-guest not found next to {}: build it with `cargo build --workspace` (add --release for a release `sandbox`) or set {GUEST_BIN_ENV}",
            exe.display()
        )
    })
}
