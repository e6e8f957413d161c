//! The sandbox's cgroup: one directory on every hierarchy that carries a controller it uses,
//! plus the cgroup2 hierarchy where one is mounted, on v1, v2 and hybrid hosts.
//!
//! Where: `sandbox/<id>` under each hierarchy's root for `sandbox run` (and for an OCI bundle
//! that names no `cgroupsPath`), or the bundle's `cgroupsPath` — absolute, under each root, or
//! relative, under the runtime's own cgroup on that hierarchy ([`Placement`]).
//!
//! What: the limits of a [`ResourcePlan`] (memory, cpu, cpuset, pids, block I/O, hugepages,
//! network classes) written in each version's file names ([`v1`], [`v2`]), and always the device
//! allowlist ([`devices`]): only the standard nodes and ptys may be opened, whatever device
//! nodes the sandbox can create or its image brings.
//!
//! [`Cgroup`] owns the directories: dropping it kills whatever still runs inside and removes
//! them (only the directories it created: a `cgroupsPath` that already existed is left). An OCI
//! `create` hands ownership to its state file ([`Cgroup::into_paths`]); `delete` takes it back
//! ([`Cgroup::open`]). [`remove_stale`] and [`list_ids`] let `sandbox gc` find and remove ones
//! whose owner died.

pub mod devices;
mod files;
mod layout;
mod teardown;
mod v1;
mod v2;

pub use layout::{Layout, Mounts, V1Mount};

use nix::unistd::Pid;
use sandbox_protocol::isolation::ResourcePlan;
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directory under each hierarchy's root that holds one cgroup per `sandbox run`.
const PARENT: &str = "sandbox";
/// The CFS period a CPU quota is expressed in when the plan gives none (100 ms, the default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts.
const CPU_MIN_QUOTA_US: i64 = 1_000;

/// Figures read from the sandbox's cgroup; `None` where the host does not provide one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    pub memory_current_bytes: Option<u64>,
    /// memory.peak on v2 (kernel 5.19 and later), memory.max_usage_in_bytes on v1.
    pub memory_peak_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_usec: Option<u64>,
    pub cpu_nr_periods: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    pub cpu_throttled_usec: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit: Option<u64>,
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
    #[error("invalid cgroupsPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
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
pub(crate) enum Controller {
    Memory,
    Cpu,
    Cpuset,
    Pids,
    Devices,
    Freezer,
    Blkio,
    Hugetlb,
    NetCls,
    NetPrio,
}

impl Controller {
    const ALL: [Controller; 10] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Pids,
        Controller::Devices,
        Controller::Freezer,
        Controller::Blkio,
        Controller::Hugetlb,
        Controller::NetCls,
        Controller::NetPrio,
    ];

    /// The v1 controller name.
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
        }
    }

    /// The name cgroup2 lists it under in `cgroup.controllers`; `None` for what cgroup2 does
    /// without a controller (the freezer is `cgroup.freeze`, devices an eBPF program) or
    /// lacks (network classes).
    fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Cpu => Some("cpu"),
            Controller::Cpuset => Some("cpuset"),
            Controller::Pids => Some("pids"),
            Controller::Blkio => Some("io"),
            Controller::Hugetlb => Some("hugetlb"),
            Controller::Devices | Controller::Freezer | Controller::NetCls | Controller::NetPrio => None,
        }
    }

    /// The flag (and OCI field) that asks for this controller's limit.
    fn flag(self) -> &'static str {
        match self {
            Controller::Memory => "--memory (linux.resources.memory)",
            Controller::Cpu => "--cpus (linux.resources.cpu)",
            Controller::Cpuset => "linux.resources.cpu.cpus/mems",
            Controller::Pids => "--pids (linux.resources.pids)",
            Controller::Devices => "linux.resources.devices",
            Controller::Freezer => "pause",
            Controller::Blkio => "linux.resources.blockIO",
            Controller::Hugetlb => "linux.resources.hugepageLimits",
            Controller::NetCls | Controller::NetPrio => "linux.resources.network",
        }
    }

    /// Whether `want` asks for a limit of this controller (then it cannot be done without).
    fn requested(self, want: &Wanted) -> bool {
        let r = want.resources;
        match self {
            Controller::Memory => r.memory != Default::default(),
            Controller::Cpu => {
                r.cpu.shares.is_some()
                    || r.cpu.quota.is_some()
                    || r.cpu.period.is_some()
                    || r.cpu.realtime_period.is_some()
                    || r.cpu.realtime_runtime.is_some()
            }
            Controller::Cpuset => r.cpu.cpus.is_some() || r.cpu.mems.is_some(),
            Controller::Pids => r.pids.is_some(),
            Controller::Devices => false,
            Controller::Freezer => want.pausable,
            Controller::Blkio => r.block_io != Default::default(),
            Controller::Hugetlb => !r.hugepages.is_empty(),
            Controller::NetCls => r.network.class_id.is_some(),
            Controller::NetPrio => !r.network.priorities.is_empty(),
        }
    }

    /// Whether the sandbox gets a directory on this controller's hierarchy even without a
    /// limit: memory, cpu and pids for statistics, devices for the allowlist.
    fn always(self) -> bool {
        matches!(
            self,
            Controller::Memory | Controller::Cpu | Controller::Pids | Controller::Devices
        )
    }
}

/// Where the sandbox's cgroup goes on each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `sandbox/<id>` under each hierarchy's root.
    Sandbox(String),
    /// An OCI `cgroupsPath` starting with `/`: under each hierarchy's root.
    Absolute(String),
    /// An OCI `cgroupsPath` without `/`: under the calling process's own cgroup.
    Relative(String),
}

impl Placement {
    /// The placement of an OCI `cgroupsPath` (`None`: `sandbox/<id>`).
    pub fn from_oci(cgroups_path: Option<&str>, id: &str) -> Result<Placement, CgroupError> {
        let Some(path) = cgroups_path.filter(|p| !p.is_empty()) else {
            return Ok(Placement::Sandbox(id.to_string()));
        };
        if path.contains(':') {
            return Err(CgroupError::BadPath {
                path: path.to_string(),
                why: "this looks like a systemd slice:prefix:name path; sandbox-runtime manages \
                      cgroupfs paths only (drop --systemd-cgroup, or give a /path)",
            });
        }
        if path.split('/').any(|c| c == "..") {
            return Err(CgroupError::BadPath {
                path: path.to_string(),
                why: "it must not contain `..`",
            });
        }
        Ok(match path.strip_prefix('/') {
            Some(abs) => Placement::Absolute(abs.trim_end_matches('/').to_string()),
            None => Placement::Relative(path.trim_end_matches('/').to_string()),
        })
    }

    /// The directory on the hierarchy mounted at `root`; `own` is the calling process's cgroup
    /// there (from /proc/self/cgroup) for a relative placement.
    fn dir(&self, root: &Path, own: &str) -> PathBuf {
        match self {
            Placement::Sandbox(id) => root.join(PARENT).join(id),
            Placement::Absolute(p) => root.join(p),
            Placement::Relative(p) => root.join(own.trim_start_matches('/')).join(p),
        }
    }

    /// The sandbox id this placement names, for `sandbox/<id>`.
    fn sandbox_id(&self) -> Option<&str> {
        match self {
            Placement::Sandbox(id) => Some(id),
            _ => None,
        }
    }
}

/// What a cgroup is asked to be.
struct Wanted<'a> {
    resources: &'a ResourcePlan,
    pausable: bool,
}

/// The sandbox's directory on one hierarchy, and the controllers it is used for there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    /// The hierarchy's mount point.
    root: PathBuf,
    /// The sandbox's directory.
    dir: PathBuf,
    v2: bool,
    controllers: Vec<Controller>,
    /// The directories this part created (deepest last); only these are removed.
    created: Vec<PathBuf>,
}

impl Part {
    fn new(root: &Path, dir: PathBuf, v2: bool) -> Part {
        Part {
            root: root.to_path_buf(),
            dir,
            v2,
            controllers: Vec::new(),
            created: Vec::new(),
        }
    }

    /// Whether the sandbox cannot do without this part: it carries a requested limit.
    fn required(&self, want: &Wanted) -> bool {
        self.controllers.iter().any(|c| c.requested(want))
    }
}

/// The calling process's cgroup on each hierarchy, from /proc/self/cgroup: v1 lines by
/// controller, the v2 line under "".
fn own_cgroups() -> Vec<(String, String)> {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            Some((controllers.to_string(), path.to_string()))
        })
        .collect()
}

fn own_path(own: &[(String, String)], controller: Option<&str>) -> String {
    own.iter()
        .find(|(c, _)| match controller {
            Some(name) => c.split(',').any(|n| n == name),
            None => c.is_empty(),
        })
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| "/".to_string())
}

/// Which hierarchy each controller is taken from: its v1 hierarchy if it is bound to one, else
/// cgroup2 if that offers it (`v2_controllers`: the root's cgroup.controllers). cgroup2 always
/// gets a part when mounted, for `cgroup.kill`, the freezer and membership tracking.
fn plan_parts(
    mounts: &Mounts,
    v2_controllers: &[String],
    placement: &Placement,
    own: &[(String, String)],
    want: &Wanted,
) -> Result<Vec<Part>, CgroupError> {
    let mut parts: Vec<Part> = Vec::new();
    let mut v2_part = mounts
        .v2
        .as_deref()
        .map(|root| Part::new(root, placement.dir(root, &own_path(own, None)), true));
    for controller in Controller::ALL {
        if !controller.always() && !controller.requested(want) {
            continue;
        }
        if let Some(root) = mounts.v1_for(controller.name()) {
            match parts.iter_mut().find(|p| p.root == root) {
                Some(part) => part.controllers.push(controller),
                None => {
                    let own = own_path(own, Some(controller.name()));
                    let mut part = Part::new(root, placement.dir(root, &own), false);
                    part.controllers.push(controller);
                    parts.push(part);
                }
            }
        } else if let Some(part) = v2_part.as_mut().filter(|_| {
            controller
                .v2_name()
                .is_none_or(|n| v2_controllers.iter().any(|c| c == n))
                && !matches!(controller, Controller::NetCls | Controller::NetPrio)
        }) {
            part.controllers.push(controller);
        } else if controller.requested(want) {
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
fn validate_limits(r: &ResourcePlan) -> Result<(), CgroupError> {
    if r.memory.limit == Some(0) {
        return Err(CgroupError::BadLimit {
            flag: "--memory",
            value: "0".into(),
            expected: "give a size above zero, e.g. 256M",
        });
    }
    if let Some(quota) = r.cpu.quota.filter(|q| *q >= 0) {
        if quota < CPU_MIN_QUOTA_US {
            let period = r.cpu.period.unwrap_or(CPU_PERIOD_US);
            return Err(CgroupError::BadLimit {
                flag: "--cpus",
                value: format!("{}", quota as f64 / period as f64),
                expected: "give a number of CPUs of at least 0.01, e.g. 0.5 or 2",
            });
        }
    }
    if r.pids == Some(0) {
        return Err(CgroupError::BadLimit {
            flag: "--pids",
            value: "0".into(),
            expected: "give at least 1 (the sandbox's init counts)",
        });
    }
    Ok(())
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

/// A sandbox's cgroup (one directory per hierarchy). Dropping one this process created kills
/// the processes still inside and removes the directories it created; [`Cgroup::remove`] does
/// the same and reports failures. One opened from a state file ([`Cgroup::open`]) is only a
/// handle: dropping it leaves everything as it is.
#[derive(Debug)]
pub struct Cgroup {
    parts: Vec<Part>,
    /// Whether dropping it removes the cgroup.
    owned: bool,
}

impl Cgroup {
    /// Creates the cgroup at `placement` with `resources` applied (and the freezer when
    /// `pausable`). On failure nothing is left behind.
    pub fn create(
        placement: &Placement,
        resources: &ResourcePlan,
        pausable: bool,
    ) -> Result<Cgroup, CgroupError> {
        if let Some(id) = placement.sandbox_id() {
            validate_id(id)?;
        }
        validate_limits(resources)?;
        let want = Wanted { resources, pausable };
        let mounts = read_mounts()?;
        let v2_controllers: Vec<String> = mounts
            .v2
            .as_deref()
            .and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok())
            .map(|text| text.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let planned = plan_parts(&mounts, &v2_controllers, placement, &own_cgroups(), &want)?;

        // Parts are recorded as soon as their directory exists, so an error below drops
        // `cgroup`, which removes exactly what was created.
        let mut cgroup = Cgroup {
            parts: Vec::new(),
            owned: true,
        };
        for part in planned {
            let began = sandbox_protocol::trace::start();
            let Some(part) = create_part(part, placement, &want)? else {
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
                    v2::apply(&part.dir, controller, resources)?;
                } else {
                    v1::apply(&part.dir, controller, resources)?;
                }
            }
        }
        Ok(cgroup)
    }

    /// The cgroup whose directories `dirs` a state file recorded (for `delete`, `kill --all`,
    /// `pause` and statistics from another process). Each hierarchy is recognised from the
    /// host's mounts; directories of unmounted hierarchies are ignored.
    pub fn open(dirs: &[PathBuf], created: &[PathBuf]) -> Cgroup {
        let mounts = Mounts::read().unwrap_or_default();
        let parts = dirs
            .iter()
            .filter_map(|dir| {
                let v2 = mounts.v2.as_deref().filter(|r| dir.starts_with(r));
                let (root, controllers) = match v2 {
                    Some(root) => (root.to_path_buf(), Controller::ALL.to_vec()),
                    None => {
                        let m = mounts.v1.iter().find(|m| dir.starts_with(&m.path))?;
                        let controllers = Controller::ALL
                            .into_iter()
                            .filter(|c| m.controllers.iter().any(|n| n == c.name()))
                            .collect();
                        (m.path.clone(), controllers)
                    }
                };
                Some(Part {
                    root,
                    dir: dir.clone(),
                    v2: v2.is_some(),
                    controllers,
                    created: created
                        .iter()
                        .filter(|c| c.starts_with(dir) || dir.starts_with(c))
                        .cloned()
                        .collect(),
                })
            })
            .collect();
        Cgroup { parts, owned: false }
    }

    /// Gives up ownership: the directories stay when this value is dropped. Returns them and
    /// the ones this cgroup created, for a state file.
    pub fn into_paths(mut self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let parts = std::mem::take(&mut self.parts);
        let dirs = parts.iter().map(|p| p.dir.clone()).collect();
        let created = parts.into_iter().flat_map(|p| p.created).collect();
        (dirs, created)
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

    /// The cgroup2 directory, where there is one (`clone3(CLONE_INTO_CGROUP)` needs it).
    pub fn v2_dir(&self) -> Option<&Path> {
        self.parts.iter().find(|p| p.v2).map(|p| p.dir.as_path())
    }

    /// The cgroup2 directory when it is the cgroup's only one (a pure v2 host): a process
    /// cloned into it with `clone3(CLONE_INTO_CGROUP)` needs no [`Cgroup::add_pid`].
    pub fn sole_v2_dir(&self) -> Option<&Path> {
        match self.parts.as_slice() {
            [part] if part.v2 => Some(part.dir.as_path()),
            _ => None,
        }
    }

    /// The processes in the cgroup (from the first hierarchy that has it).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .parts
            .iter()
            .flat_map(|p| files::read_pids(&p.dir.join("cgroup.procs")).unwrap_or_default())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
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

    /// Current figures: memory use and peak, CPU use and throttling, number of tasks.
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        for controller in [Controller::Memory, Controller::Cpu, Controller::Pids] {
            if let Some(part) = self.part_for(controller) {
                if part.v2 {
                    v2::stats(&part.dir, controller, &mut stats);
                } else {
                    v1::stats(&part.dir, controller, &mut stats);
                }
            }
        }
        if stats.cpu_usage_usec.is_none() {
            // v1 keeps CPU time in cpuacct, which may be its own hierarchy.
            stats.cpu_usage_usec = self
                .parts
                .iter()
                .find_map(|p| files::read_u64(&p.dir.join("cpuacct.usage")))
                .map(|ns| ns / 1000);
        }
        stats
    }

    /// Freezes (`true`) or thaws every process of the cgroup, and waits until the kernel says
    /// it is done.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let part = self
            .part_for(Controller::Freezer)
            .or_else(|| self.parts.iter().find(|p| p.v2))
            .ok_or(CgroupError::MissingController {
                controller: "freezer",
                flag: "pause",
            })?;
        if part.v2 {
            v2::freeze(&part.dir, frozen)
        } else {
            v1::freeze(&part.dir, frozen)
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match self
            .part_for(Controller::Freezer)
            .or_else(|| self.parts.iter().find(|p| p.v2))
        {
            Some(p) if p.v2 => files::read_keyed(&p.dir.join("cgroup.events"), "frozen") == Some(1),
            Some(p) => fs::read_to_string(p.dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN"),
            None => false,
        }
    }

    /// Writes new limits (OCI `update`): only the controllers the cgroup has.
    pub fn update(&self, resources: &ResourcePlan) -> Result<(), CgroupError> {
        validate_limits(resources)?;
        for part in &self.parts {
            for &controller in &part.controllers {
                if controller == Controller::Devices {
                    continue;
                }
                if part.v2 {
                    v2::apply(&part.dir, controller, resources)?;
                } else {
                    v1::apply(&part.dir, controller, resources)?;
                }
            }
        }
        Ok(())
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
        if !self.owned {
            return;
        }
        let parts = std::mem::take(&mut self.parts);
        if let Err(e) = teardown::remove(&parts) {
            let dirs: Vec<String> = parts.iter().map(|p| p.dir.display().to_string()).collect();
            // A library has no better channel from a destructor; the error names the fix.
            eprintln!("warning: removing cgroup {}: {e}", dirs.join(" "));
        }
    }
}

/// Makes `part`'s directory and the missing ones above it (on cgroup2 enabling its controllers
/// on the way, on v1 giving each new cpuset level its parent's CPUs and memory nodes). Returns
/// `None` for a part no requested limit needs and that cannot be set up; its controllers then
/// give no statistics.
fn create_part(mut part: Part, placement: &Placement, want: &Wanted) -> Result<Option<Part>, CgroupError> {
    let required = part.required(want);
    let rel = part
        .dir
        .strip_prefix(&part.root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut levels: Vec<PathBuf> = Vec::new();
    let mut at = part.root.clone();
    for component in rel.components() {
        at.push(component);
        levels.push(at.clone());
    }
    let Some((leaf, parents)) = levels.split_last() else {
        return Err(CgroupError::BadPath {
            path: rel.display().to_string(),
            why: "it names the hierarchy's root; give a path below it",
        });
    };
    if part.v2 {
        let mut enabled = Vec::new();
        let chain: Vec<PathBuf> = std::iter::once(part.root.clone())
            .chain(parents.iter().cloned())
            .collect();
        for &controller in &part.controllers {
            let result =
                parents_exist(parents, &mut part.created).and_then(|()| match controller.v2_name() {
                    Some(name) => v2::enable(&chain, name),
                    None => Ok(()),
                });
            match result {
                Ok(()) => enabled.push(controller),
                Err(e) if controller.requested(want) => {
                    remove_created(&part.created);
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        part.controllers = enabled;
    }
    if let Err(e) = parents_exist(parents, &mut part.created) {
        remove_created(&part.created);
        return if required { Err(e) } else { Ok(None) };
    }
    if placement.sandbox_id().is_some() {
        // `sandbox/` is shared by every sandbox: never this one's to remove.
        part.created.clear();
    }
    let cpuset = !part.v2 && part.controllers.contains(&Controller::Cpuset);
    match fs::create_dir(leaf) {
        Ok(()) => part.created.push(leaf.clone()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if let Some(id) = placement.sandbox_id() {
                remove_created(&part.created);
                return Err(CgroupError::Exists {
                    id: id.to_string(),
                    path: leaf.clone(),
                });
            }
        }
        Err(_) if !required => {
            remove_created(&part.created);
            return Ok(None);
        }
        Err(source) => {
            remove_created(&part.created);
            return Err(CgroupError::Io {
                action: "create".into(),
                path: leaf.clone(),
                source,
            });
        }
    }
    if cpuset {
        for dir in &part.created {
            v1::inherit_cpuset(dir)?;
        }
    }
    Ok(Some(part))
}

/// Creates the missing directories of `parents` in order, recording each one created.
fn parents_exist(parents: &[PathBuf], created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    for dir in parents {
        match fs::create_dir(dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Io {
                    action: "create".into(),
                    path: dir.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// Removes `sandbox/<id>` wherever it exists, killing what still runs inside (for `sandbox gc`).
pub fn remove_stale(id: &str) -> Result<(), CgroupError> {
    validate_id(id)?;
    let mounts = read_mounts()?;
    let parts: Vec<Part> = mounts
        .all_roots()
        .iter()
        .map(|root| {
            let dir = root.join(PARENT).join(id);
            let mut part = Part::new(root, dir.clone(), Some(root) == mounts.v2.as_ref());
            part.created.push(dir);
            part
        })
        .filter(|p| p.dir.is_dir())
        .collect();
    teardown::remove(&parts)
}

/// Removes the cgroup directories a state file recorded (`dirs`, of which this sandbox created
/// `created`), killing what still runs inside.
pub fn remove_recorded(dirs: &[PathBuf], created: &[PathBuf]) -> Result<(), CgroupError> {
    Cgroup::open(dirs, created).remove()
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

/// The CFS quota and period for a number of CPUs (`--cpus 0.5` → 50 ms per 100 ms).
pub fn cpus_to_quota(cpus: f64) -> (i64, u64) {
    ((cpus * CPU_PERIOD_US as f64).round() as i64, CPU_PERIOD_US)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::isolation::{CpuLimits, MemoryLimits};

    fn mounts(text: &str) -> Mounts {
        Mounts::parse(text)
    }

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const V2: &str = "27 24 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    fn want(resources: &ResourcePlan) -> Wanted<'_> {
        Wanted {
            resources,
            pausable: false,
        }
    }

    fn sandbox(id: &str) -> Placement {
        Placement::Sandbox(id.into())
    }

    #[test]
    fn hybrid_takes_controllers_from_v1_and_adds_the_unified_dir() {
        let none = ResourcePlan::default();
        let parts = plan_parts(
            &mounts(HYBRID),
            &["hugetlb".into()],
            &sandbox("abc"),
            &[],
            &want(&none),
        )
        .unwrap();
        let dirs: Vec<_> = parts.iter().map(|p| p.dir.to_str().unwrap()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/memory/sandbox/abc",
                "/sys/fs/cgroup/cpu/sandbox/abc",
                "/sys/fs/cgroup/pids/sandbox/abc",
                "/sys/fs/cgroup/devices/sandbox/abc",
                "/sys/fs/cgroup/unified/sandbox/abc",
            ]
        );
        assert!(parts[4].v2 && parts[4].controllers.is_empty());
        // Pausable and a cpuset limit add their hierarchies.
        let cpus = ResourcePlan {
            cpu: CpuLimits {
                cpus: Some("0".into()),
                ..CpuLimits::default()
            },
            ..ResourcePlan::default()
        };
        let w = Wanted {
            resources: &cpus,
            pausable: true,
        };
        let parts = plan_parts(&mounts(HYBRID), &[], &sandbox("abc"), &[], &w).unwrap();
        assert!(parts.iter().any(|p| p.dir.starts_with("/sys/fs/cgroup/cpuset")));
        assert!(parts.iter().any(|p| p.dir.starts_with("/sys/fs/cgroup/freezer")));
    }

    #[test]
    fn v2_puts_every_controller_in_one_dir() {
        let offered: Vec<String> = ["cpuset", "cpu", "io", "memory", "pids"]
            .map(String::from)
            .to_vec();
        let none = ResourcePlan::default();
        let parts = plan_parts(&mounts(V2), &offered, &sandbox("abc"), &[], &want(&none)).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].dir, Path::new("/sys/fs/cgroup/sandbox/abc"));
        assert_eq!(
            parts[0].controllers,
            [
                Controller::Memory,
                Controller::Cpu,
                Controller::Pids,
                Controller::Devices
            ]
        );
    }

    #[test]
    fn oci_paths_are_placed_under_the_root_or_the_own_cgroup() {
        let own = vec![
            ("memory".to_string(), "/user.slice".to_string()),
            ("".to_string(), "/init.scope".to_string()),
        ];
        let none = ResourcePlan::default();
        let abs = Placement::from_oci(Some("/cgrouptest"), "x").unwrap();
        let parts = plan_parts(&mounts(HYBRID), &[], &abs, &own, &want(&none)).unwrap();
        assert_eq!(parts[0].dir, Path::new("/sys/fs/cgroup/memory/cgrouptest"));
        let rel = Placement::from_oci(Some("testdir/cgrouptest/container"), "x").unwrap();
        let parts = plan_parts(&mounts(HYBRID), &[], &rel, &own, &want(&none)).unwrap();
        assert_eq!(
            parts[0].dir,
            Path::new("/sys/fs/cgroup/memory/user.slice/testdir/cgrouptest/container")
        );
        assert_eq!(
            parts.last().unwrap().dir,
            Path::new("/sys/fs/cgroup/unified/init.scope/testdir/cgrouptest/container")
        );
        assert_eq!(Placement::from_oci(None, "x").unwrap(), sandbox("x"));
        for bad in ["/a/../b", "machine.slice:libpod:abc"] {
            assert!(Placement::from_oci(Some(bad), "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_limit_without_its_controller_names_the_flag_and_the_fix() {
        let limits = ResourcePlan {
            pids: Some(10),
            ..ResourcePlan::default()
        };
        let err = plan_parts(
            &mounts(V2),
            &["memory".into(), "cpu".into()],
            &sandbox("abc"),
            &[],
            &want(&limits),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--pids") && msg.contains("pids cgroup controller"),
            "{msg}"
        );
        assert!(msg.contains("cgroup.subtree_control"), "{msg}");
        // Without the limit, a missing controller only costs statistics.
        let none = ResourcePlan::default();
        assert!(plan_parts(
            &mounts(V2),
            &["memory".into()],
            &sandbox("abc"),
            &[],
            &want(&none)
        )
        .is_ok());
    }

    #[test]
    fn limits_and_ids_are_validated() {
        let quota = |q| ResourcePlan {
            cpu: CpuLimits {
                quota: Some(q),
                ..CpuLimits::default()
            },
            ..ResourcePlan::default()
        };
        assert!(validate_limits(&quota(10_000)).is_ok());
        let msg = validate_limits(&quota(100)).unwrap_err().to_string();
        assert!(msg.contains("--cpus"), "{msg}");
        assert!(validate_limits(&quota(-1)).is_ok(), "-1 is unlimited");
        let zero_mem = ResourcePlan {
            memory: MemoryLimits {
                limit: Some(0),
                ..MemoryLimits::default()
            },
            ..ResourcePlan::default()
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
        assert_eq!(cpus_to_quota(0.5), (50_000, 100_000));
    }
}
