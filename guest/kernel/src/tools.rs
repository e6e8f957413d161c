//! Checking, before anything runs, that the programs and headers a kernel build needs are there,
//! so that a missing one is named with its Debian package instead of failing deep inside make.

use crate::KernelError;
use std::path::{Path, PathBuf};

/// `(program, Debian package)` for each program the unpack and build steps run.
const PROGRAMS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
];

/// `(header, Debian package)` for headers the host tools of the build include.
const HEADERS: &[(&str, &str)] = &[("/usr/include/libelf.h", "libelf-dev")];

/// Finds `program` on `$PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Fails naming every missing program or header together with the packages to install.
pub fn check_build_tools() -> Result<(), KernelError> {
    let mut missing: Vec<(&str, &str)> = PROGRAMS
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .copied()
        .collect();
    missing.extend(
        HEADERS
            .iter()
            .filter(|(header, _)| !Path::new(header).exists())
            .copied(),
    );
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", ");
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    Err(KernelError::ToolMissing {
        what: format!("{what} (needed to build the guest kernel)"),
        package: packages.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_and_absent_ones_are_not() {
        assert!(find_program("sh").is_some());
        assert!(find_program("sandbox-no-such-program").is_none());
    }
}
