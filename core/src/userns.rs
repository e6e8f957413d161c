//! `sandbox run --userns`: a root launcher's container in a user namespace of its own, its ids
//! 0..65536 mapped onto an unprivileged host range, so a process escaping the container is that
//! range's uid on the host, not root. What is refused, and the image's layers shifted into the
//! range (the plan's mappings are in `plan::spec`, the overlay mounted from descriptors in
//! `sandbox_container::userns_overlay`).

use crate::error::CoreError;
use crate::state::Mode;
use sandbox_image::{human, IdShift, ResolvedImage, Store};
use sandbox_protocol::trace;
use sandbox_spec::{IdRange, SandboxSpec};

/// Refuses `--userns` where it does not apply: VM mode (a VM's root runs on the VM's kernel,
/// never on the host's), and a non-root launcher (its container has a user namespace already,
/// and only root may map a range of other ids).
pub fn check(mode: Mode, spec: &SandboxSpec) -> Result<(), CoreError> {
    if spec.userns.is_none() {
        return Ok(());
    }
    if mode == Mode::Vm {
        return Err(CoreError::Unsupported {
            what: "--userns".into(),
            mode,
            remedy: "a VM's root runs on the VM's own kernel, never as a host user, so there is \
                     nothing to map; drop --userns, or use --mode container"
                .into(),
        });
    }
    if sandbox_container::namespaces::rootless() {
        return Err(CoreError::UsernsNeedsRoot {
            uid: nix::unistd::geteuid().as_raw(),
        });
    }
    Ok(())
}

/// `image` with each layer replaced by its copy owned by `range`'s ids, made the first time
/// and kept in the image store (`layers/userns/`) for later runs; traced as `userns.layers`.
pub fn shift_image(image: &ResolvedImage, range: IdRange) -> Result<ResolvedImage, CoreError> {
    let began = trace::start();
    let failed = |source| CoreError::Image {
        image: image.name.clone(),
        source,
    };
    let store = Store::open_default().map_err(failed)?;
    let shift = IdShift {
        uid: range.uid,
        gid: range.gid,
        count: range.count,
    };
    let (shifted, report) = store.shifted(image, shift).map_err(failed)?;
    trace::step("userns.layers", began, || {
        let ids = format!("uid {} gid {} and up", range.uid, range.gid);
        if report.made == 0 {
            format!(
                "{} layers reused from {} (owners shifted to {ids} on an earlier run)",
                report.reused,
                report.dir.display()
            )
        } else {
            format!(
                "{} layers copied into {} with owners shifted to {ids}: {} files, {}{}",
                report.made,
                report.dir.display(),
                report.entries,
                human(report.bytes),
                if report.reused > 0 {
                    format!("; {} reused", report.reused)
                } else {
                    String::new()
                }
            )
        }
    });
    Ok(shifted)
}
