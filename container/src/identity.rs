//! Who the workload runs as: supplementary groups, group, user, umask, in the order the kernel
//! needs (groups while still root; `PR_SET_KEEPCAPS` across the uid change, so the capability
//! sets can be set afterwards for a non-root user).

use crate::sys::{ctx, Step};
use nix::unistd::{Gid, Uid};

/// The identity the plan asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
}

/// Switches the calling process to `id`. `setgroups_allowed` is false in a user namespace whose
/// `setgroups` was denied (a rootless launcher's): then the groups stay as they are.
pub fn switch(id: &Identity, setgroups_allowed: bool) -> Step {
    if let Some(mask) = id.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if setgroups_allowed {
        let groups: Vec<Gid> = id.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
        ctx(nix::unistd::setgroups(&groups), || {
            format!("setting the supplementary groups {:?}", id.additional_gids)
        })?;
    }
    let gid = Gid::from_raw(id.gid);
    ctx(nix::unistd::setresgid(gid, gid, gid), || {
        format!("setting the group to {}", id.gid)
    })?;
    if id.uid != 0 {
        ctx(nix::sys::prctl::set_keepcaps(true), || {
            "keeping capabilities across the user change".into()
        })?;
    }
    let uid = Uid::from_raw(id.uid);
    ctx(nix::unistd::setresuid(uid, uid, uid), || {
        format!("setting the user to {}", id.uid)
    })?;
    if id.uid != 0 {
        ctx(nix::sys::prctl::set_keepcaps(false), || {
            "clearing keep-capabilities".into()
        })?;
    }
    Ok(())
}
