//! Sandbox ids: the one rule for what may name a sandbox (its directory, cgroup and host link),
//! and fresh short ids for `sandbox run`.

use crate::error::CoreError;
use std::io::Read;

/// Refuses an id that cannot name a directory, cgroup and link alias: 1–64 characters of
/// `[A-Za-z0-9_.-]`, not `.` or `..` (so no `/`, no `..` path tricks).
pub fn check(id: &str) -> Result<(), CoreError> {
    if sandbox_container::id::is_valid(id) {
        Ok(())
    } else {
        Err(CoreError::BadId { id: id.to_string() })
    }
}

/// A short id that is unlikely to repeat: 8 hex digits from the kernel's random source, or from
/// the pid and clock when that cannot be read (8 digits so `sbx<id>` fits an interface name).
pub fn new_short(attempt: u32) -> String {
    let mut buf = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    let value = match random {
        Ok(()) => u32::from_le_bytes(buf),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            nanos ^ std::process::id().rotate_left(16) ^ attempt.wrapping_mul(0x9e37_79b9)
        }
    };
    format!("{value:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_enough_for_interface_names() {
        let id = new_short(0);
        assert_eq!(id.len(), 8);
        assert!(format!("sbx{id}").len() <= 15);
        check(&id).unwrap();
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(65)] {
            let err = check(bad).unwrap_err().to_string();
            assert!(err.contains("invalid sandbox id"), "{bad:?}: {err}");
        }
    }
}
