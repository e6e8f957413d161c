//! Finding the workspace's built binaries from a bench (which runs from target/<triple>/release).

use std::path::PathBuf;

/// `name` beside this bench's deps directory, or in the debug profile's directory; `env` wins.
fn built(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    for candidate in [dir.join(name), dir.parent().unwrap().join("debug").join(name)] {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "no {name} binary near {}: run `cargo build -p {}` first (or set {env})",
        dir.display(),
        if name == "sandbox" {
            "sandbox"
        } else {
            "sandbox-guest"
        }
    );
}

/// The `sandbox` binary.
#[allow(dead_code)]
pub fn sandbox_binary() -> PathBuf {
    built("sandbox", "SANDBOX_BIN")
}

/// The static guest program.
#[allow(dead_code)]
pub fn guest_binary() -> PathBuf {
    built("sandbox-guest", sandbox_protocol::paths::GUEST_BIN_ENV)
}
