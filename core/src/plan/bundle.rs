//! An OCI bundle: a directory with `config.json` and a root filesystem. [`Bundle::open`] reads
//! and checks it (every refusal one line naming the field and the fix); [`Bundle::assemble`]
//! maps `config.json` onto the [`Plan`] field by field.

use super::{oci, Assembled, Entry, Hooks, RootKind};
use crate::error::CoreError;
use crate::state::Mode;
use sandbox_container::hooks::Hook;
use sandbox_protocol::isolation::{
    BlockIoLimits, CapabilitySets, CpuLimits, DevicePlan, DeviceRule, IdMapping, Isolation, MemoryLimits,
    MountPlan, Namespace, NamespaceKind, NetworkLimits, ProcessPlan, ResourcePlan, Rlimit, SeccompArg,
    SeccompProfile, SeccompRulePlan,
};
use sandbox_protocol::{Mode as GuestMode, Plan};
use std::path::{Path, PathBuf};

/// A bundle whose `config.json` was read and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The directory as the caller gave it (absolute).
    pub dir: PathBuf,
    config: oci::Config,
    /// The root filesystem, absolute.
    pub root: PathBuf,
}

fn bad(what: impl Into<String>) -> CoreError {
    CoreError::Bundle(what.into())
}

impl Bundle {
    /// Reads `dir/config.json` and checks what can be checked before anything is created.
    pub fn open(dir: &Path) -> Result<Bundle, CoreError> {
        if !dir.is_absolute() {
            return Err(bad(format!(
                "bundle path {} is relative: give an absolute path (--bundle \"$PWD/{}\")",
                dir.display(),
                dir.display()
            )));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad(format!(
                "cannot read {}: {e}; a bundle is a directory with config.json (`runc spec` writes one)",
                path.display()
            ))
        })?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let config: oci::Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            bad(format!(
                "{}: {}{}: fix that field of config.json",
                path.display(),
                if at == "." {
                    String::new()
                } else {
                    format!("at {at}: ")
                },
                e.inner()
            ))
        })?;
        check_version(&config.oci_version)?;
        let root = config
            .root
            .as_ref()
            .ok_or_else(|| bad("config.json has no root: add \"root\": {\"path\": \"rootfs\"}"))?;
        let root_path = dir.join(&root.path);
        if !root_path.is_dir() {
            return Err(bad(format!(
                "root.path {} is not a directory ({}): unpack the root filesystem there, or fix root.path",
                root.path,
                root_path.display()
            )));
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            config,
            root: root_path,
        })
    }

    /// The bundle's annotations.
    pub fn annotations(&self) -> &std::collections::BTreeMap<String, String> {
        &self.config.annotations
    }

    /// Maps `config.json` onto a Plan.
    pub fn assemble(&self, mode: Mode) -> Result<Assembled, CoreError> {
        let c = &self.config;
        let mut plan = Plan::new(
            match mode {
                Mode::Container => GuestMode::Container,
                Mode::Vm => GuestMode::Vm,
            },
            Vec::new(),
        );
        let entry = match &c.process {
            Some(p) if !p.args.is_empty() => {
                apply_process(&mut plan, p)?;
                Entry::Direct
            }
            Some(_) => return Err(bad("process.args is empty: give the command to run")),
            None => Entry::Nothing,
        };
        plan.hostname = c.hostname.clone().filter(|h| !h.is_empty());
        let linux = c.linux.clone().unwrap_or_default();
        plan.isolation = isolation(c, &linux, &self.dir)?;
        plan.resources = linux
            .resources
            .as_ref()
            .map(resources)
            .transpose()?
            .unwrap_or_default();
        Ok(Assembled {
            plan,
            root: RootKind::Directory(self.root.clone()),
            entry,
            source_name: self.dir.display().to_string(),
            hooks: c.hooks.as_ref().map(hooks).unwrap_or_default(),
            annotations: c.annotations.clone(),
            oci_version: c.oci_version.clone(),
            cgroups_path: linux.cgroups_path.clone(),
        })
    }
}

/// Accepts runtime-spec 1.x versions (`1.0.2-dev`, `1.1.0`).
fn check_version(version: &str) -> Result<(), CoreError> {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(bad(format!(
            "ociVersion {version:?} is not a version (MAJOR.MINOR.PATCH): write the runtime-spec version, e.g. \"1.0.2\""
        )));
    }
    if parts[0] != "1" {
        return Err(bad(format!(
            "ociVersion {version:?}: sandbox-runtime implements runtime-spec 1.x (1.0.0 to {}): write a 1.x config",
            super::OCI_VERSION
        )));
    }
    Ok(())
}

/// Security-module labels sandbox cannot apply: refused where the module is active (running
/// without the confinement asked for would be a silent downgrade), ignored where it is not
/// (there is nothing to confine with, as for any runtime on such a host).
fn check_lsm(field: &str, value: Option<&str>) -> Result<(), CoreError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let active = match field {
        "process.apparmorProfile" => {
            std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
        }
        _ => Path::new("/sys/fs/selinux/enforce").exists(),
    };
    if active {
        return Err(bad(format!(
            "{field} {value:?}: sandbox-runtime cannot apply security-module labels, and this host enforces them: \
             remove {field}, or use runc or crun for this container"
        )));
    }
    Ok(())
}

pub(super) fn apply_process(plan: &mut Plan, p: &oci::Process) -> Result<(), CoreError> {
    check_lsm("process.apparmorProfile", p.apparmor_profile.as_deref())?;
    check_lsm("process.selinuxLabel", p.selinux_label.as_deref())?;
    plan.command = p.args.clone();
    plan.env = p
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    if !p.cwd.is_empty() && !p.cwd.starts_with('/') {
        return Err(bad(format!(
            "process.cwd {:?} is relative: give an absolute path",
            p.cwd
        )));
    }
    plan.workdir = Some(if p.cwd.is_empty() {
        "/".to_string()
    } else {
        p.cwd.clone()
    });
    plan.user = Some((p.user.uid, p.user.gid));
    let rlimits = p
        .rlimits
        .iter()
        .map(|r| Rlimit {
            kind: r.kind.clone(),
            soft: r.soft,
            hard: r.hard,
        })
        .collect::<Vec<_>>();
    sandbox_container::rlimits::resolve(&rlimits).map_err(|e| bad(format!("process.rlimits: {e}")))?;
    let capabilities = p.capabilities.as_ref().map(|c| CapabilitySets {
        bounding: c.bounding.clone(),
        effective: c.effective.clone(),
        inheritable: c.inheritable.clone(),
        permitted: c.permitted.clone(),
        ambient: c.ambient.clone(),
    });
    let sets = capabilities.clone().unwrap_or_default();
    for name in [
        &sets.bounding,
        &sets.effective,
        &sets.inheritable,
        &sets.permitted,
        &sets.ambient,
    ]
    .into_iter()
    .flatten()
    {
        if sandbox_container::caps::number(name).is_none() {
            return Err(bad(format!(
                "process.capabilities: unknown capability {name:?}: use names like CAP_CHOWN (capabilities(7))"
            )));
        }
    }
    plan.process = ProcessPlan {
        additional_gids: p.user.additional_gids.clone(),
        umask: p.user.umask,
        rlimits,
        // No capabilities object: none at all, as the spec says.
        capabilities: Some(capabilities.unwrap_or_default()),
        no_new_privileges: p.no_new_privileges,
        oom_score_adj: p.oom_score_adj,
        terminal: p.terminal,
        console_size: p.console_size.map(|s| (s.height, s.width)),
    };
    Ok(())
}

fn namespace_kind(name: &str) -> Result<NamespaceKind, CoreError> {
    Ok(match name {
        "pid" => NamespaceKind::Pid,
        "network" => NamespaceKind::Network,
        "mount" => NamespaceKind::Mount,
        "ipc" => NamespaceKind::Ipc,
        "uts" => NamespaceKind::Uts,
        "user" => NamespaceKind::User,
        "cgroup" => NamespaceKind::Cgroup,
        "time" => NamespaceKind::Time,
        other => {
            return Err(bad(format!(
                "linux.namespaces: unknown type {other:?}: use pid, network, mount, ipc, uts, user, cgroup or time"
            )))
        }
    })
}

fn isolation(c: &oci::Config, linux: &oci::Linux, bundle: &Path) -> Result<Isolation, CoreError> {
    check_lsm("linux.mountLabel", linux.mount_label.as_deref())?;
    let namespaces = linux
        .namespaces
        .iter()
        .map(|n| {
            Ok(Namespace {
                kind: namespace_kind(&n.kind)?,
                path: n.path.clone().filter(|p| !p.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let mapping = |m: &oci::IdMapping| IdMapping {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.size,
    };
    let mounts = c
        .mounts
        .iter()
        .map(|m| {
            if !m.destination.starts_with('/') {
                return Err(bad(format!(
                    "mounts: destination {:?} is relative: give an absolute path",
                    m.destination
                )));
            }
            let bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
            // A relative bind source is relative to the bundle.
            let source = if bind && !m.source.starts_with('/') {
                bundle.join(&m.source).display().to_string()
            } else {
                m.source.clone()
            };
            Ok(MountPlan {
                destination: m.destination.clone(),
                kind: m.kind.clone(),
                source,
                options: m.options.clone(),
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let devices = linux
        .devices
        .iter()
        .map(|d| {
            let kind = d
                .kind
                .chars()
                .next()
                .filter(|k| "cubp".contains(*k) && d.kind.len() == 1)
                .ok_or_else(|| {
                    bad(format!(
                        "linux.devices {}: type {:?} is not c, u, b or p",
                        d.path, d.kind
                    ))
                })?;
            Ok(DevicePlan {
                path: d.path.clone(),
                kind: if kind == 'u' { 'c' } else { kind },
                major: d.major,
                minor: d.minor,
                file_mode: d.file_mode,
                uid: d.uid,
                gid: d.gid,
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    Ok(Isolation {
        namespaces,
        uid_mappings: linux.uid_mappings.iter().map(mapping).collect(),
        gid_mappings: linux.gid_mappings.iter().map(mapping).collect(),
        mounts,
        masked_paths: linux.masked_paths.clone(),
        readonly_paths: linux.readonly_paths.clone(),
        devices,
        sysctl: linux.sysctl.clone(),
        seccomp: linux.seccomp.as_ref().map(seccomp),
        rootfs_propagation: linux.rootfs_propagation.clone().filter(|p| !p.is_empty()),
        readonly_root: c.root.as_ref().is_some_and(|r| r.readonly),
    })
}

fn seccomp(s: &oci::Seccomp) -> SeccompProfile {
    SeccompProfile {
        default_action: s.default_action.clone(),
        default_errno: s.default_errno_ret,
        architectures: s.architectures.clone(),
        syscalls: s
            .syscalls
            .iter()
            .map(|r| SeccompRulePlan {
                names: r.names.clone(),
                action: r.action.clone(),
                errno: r.errno_ret,
                args: r
                    .args
                    .iter()
                    .map(|a| SeccompArg {
                        index: a.index,
                        value: a.value,
                        value_two: a.value_two,
                        op: a.op.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `linux.resources` as cgroup limits.
pub(crate) fn resources(r: &oci::Resources) -> Result<ResourcePlan, CoreError> {
    let devices = r
        .devices
        .iter()
        .map(|d| {
            let kind = d.kind.as_deref().unwrap_or("a");
            let kind = kind
                .chars()
                .next()
                .filter(|k| "acb".contains(*k) && kind.len() == 1)
                .ok_or_else(|| bad(format!("linux.resources.devices: type {kind:?} is not a, c or b")))?;
            let access = d.access.clone().unwrap_or_else(|| "rwm".to_string());
            if access.chars().any(|c| !"rwm".contains(c)) {
                return Err(bad(format!(
                    "linux.resources.devices: access {access:?} is not made of r, w, m"
                )));
            }
            Ok(DeviceRule {
                allow: d.allow,
                kind,
                major: d.major,
                minor: d.minor,
                access,
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let memory = r.memory.clone().unwrap_or_default();
    let cpu = r.cpu.clone().unwrap_or_default();
    let bio = r.block_io.clone().unwrap_or_default();
    let mut throttle = Vec::new();
    for (file, list) in [
        ("blkio.throttle.read_bps_device", &bio.throttle_read_bps_device),
        ("blkio.throttle.write_bps_device", &bio.throttle_write_bps_device),
        ("blkio.throttle.read_iops_device", &bio.throttle_read_iops_device),
        (
            "blkio.throttle.write_iops_device",
            &bio.throttle_write_iops_device,
        ),
    ] {
        throttle.extend(list.iter().map(|t| (file.to_string(), t.major, t.minor, t.rate)));
    }
    for h in &r.hugepage_limits {
        let ok = h.page_size.len() > 2
            && h.page_size.ends_with('B')
            && h.page_size[..h.page_size.len() - 2]
                .bytes()
                .all(|b| b.is_ascii_digit())
            && std::path::Path::new(&format!(
                "/sys/kernel/mm/hugepages/hugepages-{}",
                kib(&h.page_size)
            ))
            .exists();
        if !ok {
            return Err(bad(format!(
                "linux.resources.hugepageLimits: page size {:?} is not one this host has (/sys/kernel/mm/hugepages)",
                h.page_size
            )));
        }
    }
    let network = r.network.clone().unwrap_or_default();
    Ok(ResourcePlan {
        memory: MemoryLimits {
            limit: memory.limit,
            reservation: memory.reservation,
            swap: memory.swap,
            kernel: memory.kernel,
            kernel_tcp: memory.kernel_tcp,
            swappiness: memory.swappiness,
            disable_oom_killer: memory.disable_oom_killer,
        },
        cpu: CpuLimits {
            shares: cpu.shares,
            quota: cpu.quota,
            period: cpu.period,
            realtime_runtime: cpu.realtime_runtime,
            realtime_period: cpu.realtime_period,
            cpus: cpu.cpus.filter(|s| !s.is_empty()),
            mems: cpu.mems.filter(|s| !s.is_empty()),
        },
        pids: r.pids.as_ref().map(|p| p.limit),
        devices,
        block_io: BlockIoLimits {
            weight: bio.weight,
            leaf_weight: bio.leaf_weight,
            weight_devices: bio
                .weight_device
                .iter()
                .map(|w| (w.major, w.minor, w.weight, w.leaf_weight))
                .collect(),
            throttle,
        },
        hugepages: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        network: NetworkLimits {
            class_id: network.class_id,
            priorities: network
                .priorities
                .iter()
                .map(|p| (p.name.clone(), p.priority))
                .collect(),
        },
    })
}

/// A hugepage size (`2MB`, `1GB`) in the kernel's `NNNNkB` directory naming.
fn kib(size: &str) -> String {
    let (num, unit) = size.split_at(size.len().saturating_sub(2));
    let n: u64 = num.parse().unwrap_or(0);
    let factor = match unit {
        "KB" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        _ => 0,
    };
    format!("{}kB", n * factor)
}

fn hooks(h: &oci::Hooks) -> Hooks {
    let list = |v: &[oci::Hook]| {
        v.iter()
            .map(|h| Hook {
                path: h.path.clone(),
                args: h.args.clone(),
                env: h.env.clone(),
                timeout: h.timeout.filter(|t| *t > 0).map(|t| t as u64),
            })
            .collect()
    };
    Hooks {
        prestart: list(&h.prestart),
        create_runtime: list(&h.create_runtime),
        create_container: list(&h.create_container),
        start_container: list(&h.start_container),
        poststart: list(&h.poststart),
        poststop: list(&h.poststop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str) -> (tempfile::TempDir, Result<Bundle, CoreError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let b = Bundle::open(dir.path());
        (dir, b)
    }

    #[test]
    fn a_runc_spec_config_maps_onto_the_plan() {
        let config = r#"{
            "ociVersion": "1.0.2-dev",
            "process": {"terminal": false, "user": {"uid": 10, "gid": 10, "additionalGids": [5]},
                "args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=b=c"], "cwd": "/tmp",
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true, "oomScoreAdj": 100},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "box",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}],
                "resources": {"memory": {"limit": 1048576}, "pids": {"limit": 10},
                    "devices": [{"allow": false, "access": "rwm"}]},
                "cgroupsPath": "/cgrouptest", "maskedPaths": ["/proc/kcore"],
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}},
            "annotations": {"k": "v"},
            "someFutureField": 1
        }"#;
        let (_dir, b) = bundle(config);
        let a = b.unwrap().assemble(Mode::Container).unwrap();
        assert_eq!(a.entry, Entry::Direct);
        assert_eq!(a.plan.command, ["sh", "-c", "echo hi"]);
        assert_eq!(a.plan.env[1], ("A".to_string(), "b=c".to_string()));
        assert_eq!(a.plan.user, Some((10, 10)));
        assert_eq!(a.plan.process.additional_gids, [5]);
        assert!(a.plan.process.no_new_privileges);
        assert!(a.plan.isolation.readonly_root);
        assert_eq!(
            a.plan.isolation.namespaces[1].path.as_deref(),
            Some("/proc/1/ns/net")
        );
        assert_eq!(a.plan.resources.pids, Some(10));
        assert!(!a.plan.resources.devices[0].allow);
        assert_eq!(a.cgroups_path.as_deref(), Some("/cgrouptest"));
        assert_eq!(a.annotations["k"], "v");
        assert_eq!(a.plan.isolation.seccomp.unwrap().syscalls[0].names, ["getcwd"]);
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        let cases = [
            (
                r#"{"ociVersion": "invalid", "root": {"path": "rootfs"}}"#,
                "is not a version",
            ),
            (r#"{"ociVersion": "2.0.0", "root": {"path": "rootfs"}}"#, "1.x"),
            (r#"{"ociVersion": "1.0.0"}"#, "no root"),
            (
                r#"{"ociVersion": "1.0.0", "root": {"path": "nope"}}"#,
                "not a directory",
            ),
            (
                r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "process": {"user": {"uid": "root"}}}"#,
                "process.user.uid",
            ),
            (
                r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "#,
                "config.json",
            ),
        ];
        for (config, want) in cases {
            let (_dir, b) = bundle(config);
            let msg = b.unwrap_err().to_string();
            assert!(msg.contains(want), "{config}: {msg}");
        }
        let (_dir, b) = bundle(
            r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "process": {"args": ["x"], "capabilities": {"bounding": ["CAP_TEST"]}}}"#,
        );
        let msg = b.unwrap().assemble(Mode::Container).unwrap_err().to_string();
        assert!(msg.contains("CAP_TEST"), "{msg}");
        let (_dir, b) = bundle(
            r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "process": {"args": ["x"], "rlimits": [{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}]}}"#,
        );
        let msg = b.unwrap().assemble(Mode::Container).unwrap_err().to_string();
        assert!(msg.contains("RLIMIT_TEST"), "{msg}");
        let err = Bundle::open(Path::new("relative/bundle"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative"), "{err}");
    }

    #[test]
    fn a_bundle_without_a_process_has_nothing_to_run() {
        let (_dir, b) = bundle(r#"{"ociVersion": "1.1.0", "root": {"path": "rootfs"}}"#);
        assert_eq!(
            b.unwrap().assemble(Mode::Container).unwrap().entry,
            Entry::Nothing
        );
    }
}
