//! The sandbox's cgroup: `sandbox/<id>` on every hierarchy that carries a controller it uses
//! (memory, cpu, pids) plus the cgroup2 hierarchy where one is mounted, on v1, v2 and hybrid hosts.
//!
//! [`Cgroup`] owns those directories: dropping it kills whatever still runs inside and removes
//! them. [`remove_stale`] and [`list_ids`] let `sandbox gc` find and remove ones whose owner died.
//!
//! On cgroup2 the controllers are enabled in the root's and `sandbox/`'s `cgroup.subtree_control`
//! as needed. A limit whose controller the host does not offer is an error naming the flag; a
//! controller used only for statistics is skipped when it cannot be set up.

mod files;
mod layout;
mod teardown;
mod v1;
mod v2;

pub use layout::{Layout, Mounts, V1Mount};

use nix::unistd::Pid;
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directory under each hierarchy's root that holds one cgroup per sandbox.
const PARENT: &str = "sandbox";
/// The CFS period the CPU quota is expressed in (100 ms, the kernel default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// Resource limits for one sandbox; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

/// Figures read from the sandbox's cgroup; `None` where the host does not provide one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    pub memory_current_bytes: Option<u64>,
    /// memory.peak on v2 (kernel 5.19 and later), memory.max_usage_in_bytes on v1.
    pub memory_peak_bytes: Option<u64>,
    pub cpu_nr_periods: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    pub cpu_throttled_usec: Option<u64>,
    pub pids_current: Option<u64>,
}

/// Errors creating, filling or removing a sandbox cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{flag} needs the {controller} cgroup controller, which this host does not offer: mount the \
         {controller} controller (cgroup v1) or enable it in /sys/fs/cgroup/cgroup.subtree_control \
         (cgroup v2), or run without {flag}"
    )]
    MissingController {
        controller: &'static str,
        flag: &'static str,
    },
    #[error("invalid sandbox id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-'")]
    BadId { id: String },
    #[error("{flag} {value} is out of range: {expected}")]
    BadLimit {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "cgroup {} already exists: a sandbox with id {id} is running or was left behind; run `sandbox gc`",
        .path.display()
    )]
    Exists { id: String, path: PathBuf },
    #[error("cannot {action} {}: {source}{}", .path.display(), permission_hint(.source))]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cgroup {} still holds processes {pids:?} after repeated SIGKILL: find what keeps them \
         alive (uninterruptible sleep, a frozen cgroup) and run `sandbox gc` again",
        .path.display()
    )]
    StillBusy { path: PathBuf, pids: Vec<i32> },
}

fn permission_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => " (cgroups need root: run sandbox as root)",
        _ => "",
    }
}

/// A controller the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    /// The `sandbox run` flag that asks for this controller's limit.
    fn flag(self) -> &'static str {
        match self {
            Controller::Memory => "--memory",
            Controller::Cpu => "--cpus",
            Controller::Pids => "--pids",
        }
    }

    fn requested(self, limits: &Limits) -> bool {
        match self {
            Controller::Memory => limits.memory_bytes.is_some(),
            Controller::Cpu => limits.cpus.is_some(),
            Controller::Pids => limits.pids.is_some(),
        }
    }
}

/// The sandbox's directory on one hierarchy, and the controllers it is used for there.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    /// The hierarchy's mount point.
    root: PathBuf,
    /// `root/sandbox/<id>`.
    dir: PathBuf,
    v2: bool,
    controllers: Vec<Controller>,
}

impl Part {
    fn new(root: &Path, id: &str, v2: bool) -> Part {
        Part {
            root: root.to_path_buf(),
            dir: root.join(PARENT).join(id),
            v2,
            controllers: Vec::new(),
        }
    }

    /// Whether the sandbox cannot do without this part: it carries a requested limit.
    fn required(&self, limits: &Limits) -> bool {
        self.controllers.iter().any(|c| c.requested(limits))
    }
}

/// Which hierarchy each controller is taken from: its v1 hierarchy if it is bound to one, else
/// cgroup2 if that offers it (`v2_controllers`: the root's cgroup.controllers). cgroup2 always
/// gets a part when mounted, for `cgroup.kill` and membership tracking.
fn plan_parts(
    mounts: &Mounts,
    v2_controllers: &[String],
    id: &str,
    limits: &Limits,
) -> Result<Vec<Part>, CgroupError> {
    let mut parts: Vec<Part> = Vec::new();
    let mut v2_part = mounts.v2.as_deref().map(|root| Part::new(root, id, true));
    for controller in Controller::ALL {
        if let Some(root) = mounts.v1_for(controller.name()) {
            match parts.iter_mut().find(|p| p.root == root) {
                Some(part) => part.controllers.push(controller),
                None => {
                    let mut part = Part::new(root, id, false);
                    part.controllers.push(controller);
                    parts.push(part);
                }
            }
        } else if let Some(part) = v2_part
            .as_mut()
            .filter(|_| v2_controllers.iter().any(|c| c == controller.name()))
        {
            part.controllers.push(controller);
        } else if controller.requested(limits) {
            return Err(CgroupError::MissingController {
                controller: controller.name(),
                flag: controller.flag(),
            });
        }
    }
    parts.extend(v2_part);
    Ok(parts)
}

/// Checks that each requested limit is one the kernel accepts.
fn validate_limits(limits: &Limits) -> Result<(), CgroupError> {
    if limits.memory_bytes == Some(0) {
        return Err(CgroupError::BadLimit {
            flag: "--memory",
            value: "0".into(),
            expected: "give a size above zero, e.g. 256M",
        });
    }
    cpu_quota_us(limits)?;
    if limits.pids == Some(0) {
        return Err(CgroupError::BadLimit {
            flag: "--pids",
            value: "0".into(),
            expected: "give at least 1 (the sandbox's init counts)",
        });
    }
    Ok(())
}

/// The CFS quota for `--cpus` in microseconds per [`CPU_PERIOD_US`].
fn cpu_quota_us(limits: &Limits) -> Result<Option<u64>, CgroupError> {
    let Some(cpus) = limits.cpus else {
        return Ok(None);
    };
    let quota = cpus * CPU_PERIOD_US as f64;
    if !quota.is_finite() || quota.round() < CPU_MIN_QUOTA_US as f64 || quota > u32::MAX as f64 {
        return Err(CgroupError::BadLimit {
            flag: "--cpus",
            value: cpus.to_string(),
            expected: "give a number of CPUs of at least 0.01, e.g. 0.5 or 2",
        });
    }
    Ok(Some(quota.round() as u64))
}

fn validate_id(id: &str) -> Result<(), CgroupError> {
    if crate::id::is_valid(id) {
        Ok(())
    } else {
        Err(CgroupError::BadId { id: id.to_string() })
    }
}

fn read_mounts() -> Result<Mounts, CgroupError> {
    Mounts::read().map_err(|source| CgroupError::Io {
        action: "read".into(),
        path: PathBuf::from("/proc/self/mountinfo"),
        source,
    })
}

/// The host's cgroup layout (read from /proc/self/mountinfo; see [`Layout`]).
pub fn layout() -> Layout {
    Mounts::read().unwrap_or_default().layout()
}

/// A sandbox's cgroup (`sandbox/<id>` on each hierarchy). Dropping it kills the processes still
/// inside and removes the directories; [`Cgroup::remove`] does the same and reports failures.
#[derive(Debug)]
pub struct Cgroup {
    id: String,
    parts: Vec<Part>,
}

impl Cgroup {
    /// Creates `sandbox/<id>` with `limits` applied. On failure nothing is left behind.
    pub fn create(id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        validate_id(id)?;
        validate_limits(limits)?;
        let mounts = read_mounts()?;
        let v2_controllers: Vec<String> = mounts
            .v2
            .as_deref()
            .and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok())
            .map(|text| text.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let planned = plan_parts(&mounts, &v2_controllers, id, limits)?;

        // Parts are recorded as soon as their directory exists, so an error below drops
        // `cgroup`, which removes exactly what was created.
        let mut cgroup = Cgroup {
            id: id.to_string(),
            parts: Vec::new(),
        };
        for part in planned {
            let began = sandbox_protocol::trace::start();
            let Some(part) = create_part(part, id, limits)? else {
                continue;
            };
            sandbox_protocol::trace::step("cgroup.create", began, || {
                let names: Vec<&str> = part.controllers.iter().map(|c| c.name()).collect();
                format!(
                    "{} ({} for {})",
                    part.dir.display(),
                    if part.v2 { "cgroup2" } else { "cgroup v1" },
                    if names.is_empty() {
                        "membership".to_string()
                    } else {
                        names.join(",")
                    }
                )
            });
            cgroup.parts.push(part.clone());
            for &controller in &part.controllers {
                if part.v2 {
                    v2::apply(&part.dir, controller, limits)?;
                } else {
                    v1::apply(&part.dir, controller, limits)?;
                }
            }
        }
        Ok(cgroup)
    }

    /// The sandbox id this cgroup belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Moves process `pid` (and, on v1, its threads) into the cgroup on every hierarchy.
    pub fn add_pid(&self, pid: Pid) -> Result<(), CgroupError> {
        for part in &self.parts {
            files::write(&part.dir.join("cgroup.procs"), &pid.as_raw().to_string())?;
        }
        Ok(())
    }

    /// The cgroup's directories, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.dir.clone()).collect()
    }

    /// Whether the kernel's OOM killer killed a process in this cgroup.
    pub fn oom_killed(&self) -> bool {
        self.part_for(Controller::Memory).is_some_and(|p| {
            if p.v2 {
                v2::oom_killed(&p.dir)
            } else {
                v1::oom_killed(&p.dir)
            }
        })
    }

    /// Current figures: memory use and peak, CPU throttling, number of tasks.
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        for controller in Controller::ALL {
            if let Some(part) = self.part_for(controller) {
                if part.v2 {
                    v2::stats(&part.dir, controller, &mut stats);
                } else {
                    v1::stats(&part.dir, controller, &mut stats);
                }
            }
        }
        stats
    }

    /// Kills what still runs inside and removes the directories, reporting what went wrong.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let parts = std::mem::take(&mut self.parts);
        teardown::remove(&parts)
    }

    fn part_for(&self, controller: Controller) -> Option<&Part> {
        self.parts.iter().find(|p| p.controllers.contains(&controller))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        if let Err(e) = teardown::remove(&parts) {
            eprintln!("warning: removing the cgroup of sandbox {}: {e}", self.id);
        }
    }
}

/// Makes `part`'s directory (and, on cgroup2, enables its controllers on the way). Returns `None`
/// for a part no requested limit needs and that cannot be set up; its controllers then give no
/// statistics.
fn create_part(mut part: Part, id: &str, limits: &Limits) -> Result<Option<Part>, CgroupError> {
    let required = part.required(limits);
    let parent = part.root.join(PARENT);
    if let Err(source) = fs::create_dir(&parent) {
        if source.kind() != io::ErrorKind::AlreadyExists {
            if !required {
                return Ok(None);
            }
            return Err(CgroupError::Io {
                action: "create".into(),
                path: parent,
                source,
            });
        }
    }
    if part.v2 {
        let mut enabled = Vec::new();
        for controller in part.controllers {
            match v2::enable(&part.root, controller) {
                Ok(()) => enabled.push(controller),
                Err(e) if controller.requested(limits) => return Err(e),
                Err(_) => {}
            }
        }
        part.controllers = enabled;
    }
    match fs::create_dir(&part.dir) {
        Ok(()) => Ok(Some(part)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::Exists {
            id: id.to_string(),
            path: part.dir,
        }),
        Err(_) if !required => Ok(None),
        Err(source) => Err(CgroupError::Io {
            action: "create".into(),
            path: part.dir,
            source,
        }),
    }
}

/// Removes `sandbox/<id>` wherever it exists, killing what still runs inside (for `sandbox gc`).
pub fn remove_stale(id: &str) -> Result<(), CgroupError> {
    validate_id(id)?;
    let mounts = read_mounts()?;
    let parts: Vec<Part> = mounts
        .all_roots()
        .iter()
        .map(|root| Part::new(root, id, Some(root) == mounts.v2.as_ref()))
        .filter(|p| p.dir.is_dir())
        .collect();
    teardown::remove(&parts)
}

/// The ids that have a `sandbox/<id>` cgroup on any hierarchy, sorted.
pub fn list_ids() -> Vec<String> {
    let mounts = Mounts::read().unwrap_or_default();
    let mut ids: Vec<String> = mounts
        .all_roots()
        .iter()
        .filter_map(|root| fs::read_dir(root.join(PARENT)).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> Mounts {
        Mounts::parse(text)
    }

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const V2: &str = "27 24 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_takes_controllers_from_v1_and_adds_the_unified_dir() {
        let parts = plan_parts(&mounts(HYBRID), &["hugetlb".into()], "abc", &Limits::default()).unwrap();
        let dirs: Vec<_> = parts.iter().map(|p| p.dir.to_str().unwrap()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/memory/sandbox/abc",
                "/sys/fs/cgroup/cpu/sandbox/abc",
                "/sys/fs/cgroup/pids/sandbox/abc",
                "/sys/fs/cgroup/unified/sandbox/abc",
            ]
        );
        assert!(parts[3].v2 && parts[3].controllers.is_empty());
    }

    #[test]
    fn v2_puts_every_controller_in_one_dir() {
        let offered: Vec<String> = ["cpuset", "cpu", "io", "memory", "pids"]
            .map(String::from)
            .to_vec();
        let parts = plan_parts(&mounts(V2), &offered, "abc", &Limits::default()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].dir, Path::new("/sys/fs/cgroup/sandbox/abc"));
        assert_eq!(
            parts[0].controllers,
            [Controller::Memory, Controller::Cpu, Controller::Pids]
        );
    }

    #[test]
    fn a_limit_without_its_controller_names_the_flag_and_the_fix() {
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        let err = plan_parts(&mounts(V2), &["memory".into(), "cpu".into()], "abc", &limits).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--pids") && msg.contains("pids cgroup controller"),
            "{msg}"
        );
        assert!(msg.contains("cgroup.subtree_control"), "{msg}");
        // Without the limit, a missing controller only costs statistics.
        assert!(plan_parts(&mounts(V2), &["memory".into()], "abc", &Limits::default()).is_ok());
    }

    #[test]
    fn limits_and_ids_are_validated() {
        let cpus = |c| Limits {
            cpus: Some(c),
            ..Limits::default()
        };
        assert_eq!(cpu_quota_us(&cpus(0.1)).unwrap(), Some(10_000));
        assert_eq!(cpu_quota_us(&cpus(2.0)).unwrap(), Some(200_000));
        for bad in [0.0, 0.001, -1.0, f64::NAN, f64::INFINITY] {
            let msg = validate_limits(&cpus(bad)).unwrap_err().to_string();
            assert!(msg.contains("--cpus"), "{msg}");
        }
        let zero_mem = Limits {
            memory_bytes: Some(0),
            ..Limits::default()
        };
        assert!(validate_limits(&zero_mem)
            .unwrap_err()
            .to_string()
            .contains("--memory"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(validate_id(bad), Err(CgroupError::BadId { .. })),
                "{bad:?}"
            );
        }
        validate_id("run-1.a_B").unwrap();
    }
}
