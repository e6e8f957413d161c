//! The user-namespace and privilege checks: may this user create namespaces, and is it root.

use super::report::{Check, Needed};
use serde_json::json;

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn userns_check() -> Check {
    let max = read_number("/proc/sys/user/max_user_namespaces");
    let clone = read_number("/proc/sys/kernel/unprivileged_userns_clone");
    let root = nix::unistd::geteuid().is_root();
    let data = json!({ "max_user_namespaces": max, "unprivileged_userns_clone": clone });
    let check = match (max, clone) {
        (None, _) => Check::warn(
            "userns",
            Needed::Container,
            "/proc/sys/user/max_user_namespaces is missing (kernel without CONFIG_USER_NS?)",
            "use a kernel with user namespaces, or run as root",
        ),
        (Some(0), _) => Check::fail(
            "userns",
            Needed::Container,
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "`sysctl -w user.max_user_namespaces=15000`",
        ),
        (Some(n), Some(0)) if !root => Check::warn(
            "userns",
            Needed::Container,
            format!("max_user_namespaces = {n}, but kernel.unprivileged_userns_clone = 0"),
            "`sysctl -w kernel.unprivileged_userns_clone=1`, or run as root",
        ),
        (Some(n), clone) => {
            let extra = clone
                .map(|c| format!(", unprivileged_userns_clone = {c}"))
                .unwrap_or_default();
            Check::ok(
                "userns",
                Needed::Container,
                format!("user namespaces allowed (max {n}{extra})"),
            )
        }
    };
    check.with_data(data)
}

pub fn root_check() -> Check {
    let uid = nix::unistd::geteuid();
    let data = json!({ "euid": uid.as_raw() });
    if uid.is_root() {
        Check::ok("privileges", Needed::Both, "running as root").with_data(data)
    } else {
        Check::warn(
            "privileges",
            Needed::Both,
            format!("running as uid {uid}, not root"),
            "cgroup limits, network set-up and loop-free disks need privileges: run with sudo",
        )
        .with_data(data)
    }
}
