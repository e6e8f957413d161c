//! Sandbox ids: the one rule for what may name a run dir, a cgroup and a host link.

/// Whether `id` is safe as a single path component and a link alias: 1–64 characters of
/// `[A-Za-z0-9_.-]`, and not `.` or `..`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
