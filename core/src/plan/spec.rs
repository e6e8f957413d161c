//! `sandbox run`'s flags and image → Plan: the command after the image's entrypoint, the
//! image's environment under the flags', and for container mode Docker's defaults for
//! everything the flags do not say (namespaces, the OCI default mounts plus /tmp and /run,
//! masked and read-only paths, an open-file limit, `no_new_privs`).

use super::{Assembled, Entry, Hooks, RootKind, OCI_VERSION};
use crate::error::CoreError;
use crate::plan::image::{self, Image};
use crate::state::Mode;
use sandbox_container::protect::{MASKED_PATHS, READONLY_PATHS};
use sandbox_image::ResolvedImage;
use sandbox_protocol::isolation::{
    CpuLimits, IdMapping, Isolation, MemoryLimits, MountPlan, Namespace, NamespaceKind, ProcessPlan,
    ResourcePlan,
};
use sandbox_protocol::{Mode as GuestMode, Plan, VolumePlan};
use sandbox_spec::{Resources, SandboxSpec};
use std::collections::BTreeMap;

pub(super) fn assemble(
    spec: &SandboxSpec,
    resolved: &ResolvedImage,
    mode: Mode,
    id: &str,
) -> Result<Assembled, CoreError> {
    let image = layer_view(resolved, spec.user.is_none())?;
    let command = command_argv(spec, &image);
    let rootless = sandbox_container::namespaces::rootless();
    if mode == Mode::Container {
        let volume_pairs: Vec<(String, std::path::PathBuf)> = spec
            .volumes
            .iter()
            .map(|v| (v.guest.clone(), v.host.clone()))
            .collect();
        image::check(&image, command.first().map(String::as_str), &volume_pairs)?;
    }
    let mut plan = Plan::new(
        match mode {
            Mode::Container => GuestMode::Container,
            Mode::Vm => GuestMode::Vm,
        },
        command,
    );
    // With a terminal, TERM says what it understands (the launcher's own, as docker -t does);
    // the image's and the user's settings come after and win.
    let term = spec.tty.then(|| {
        let value = std::env::var("TERM").ok().filter(|t| !t.is_empty());
        ("TERM".to_string(), value.unwrap_or_else(|| "xterm".into()))
    });
    plan.env = term
        .into_iter()
        .chain(image.env.iter().cloned())
        .chain(spec.env.iter().cloned())
        .collect();
    plan.hostname = Some(spec.hostname.clone().unwrap_or_else(|| format!("sbx-{id}")));
    plan.workdir = spec.workdir.clone().or_else(|| image.working_dir.clone());
    plan.user = spec.user.or(image.user);
    plan.volumes = spec
        .volumes
        .iter()
        .map(|v| VolumePlan {
            source: v.host.display().to_string(),
            target: v.guest.clone(),
            read_only: v.read_only,
        })
        .collect();
    plan.resources = resources(&spec.resources);
    plan.process.terminal = spec.tty;
    plan.process.console_size = spec.tty.then(crate::terminal::host_size).flatten();
    if mode == Mode::Container {
        plan.process = ProcessPlan {
            rlimits: sandbox_container::rlimits::defaults(),
            no_new_privileges: true,
            ..plan.process
        };
        plan.isolation = container_isolation(spec, rootless);
    }
    Ok(Assembled {
        plan,
        root: RootKind::Layers(image.layers.clone()),
        entry: Entry::GuestInit,
        source_name: resolved.name.clone(),
        hooks: Hooks::default(),
        annotations: BTreeMap::new(),
        oci_version: OCI_VERSION.to_string(),
        cgroups_path: None,
    })
}

/// The image store's answer as a read-only layer view, with its user resolved when `need_user`
/// (an image user sandbox cannot look up only matters when no `--user` replaces it).
fn layer_view(resolved: &ResolvedImage, need_user: bool) -> Result<Image, CoreError> {
    let env = resolved
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let user = match resolved.config.user.as_deref().filter(|_| need_user) {
        None | Some("") => None,
        Some(u) => Some(SandboxSpec::parse_user(u).map_err(|_| {
            CoreError::Bundle(format!(
                "image {:?} names its user {u:?}, which sandbox cannot look up: pass --user UID:GID",
                resolved.name
            ))
        })?),
    };
    Ok(Image {
        name: resolved.name.clone(),
        layers: resolved.layers.clone(),
        env,
        entrypoint: resolved.config.entrypoint.clone(),
        working_dir: resolved.config.working_dir.clone(),
        user,
    })
}

/// The argv the guest program will run: empty (its `info`) when no command was given,
/// otherwise the image's entrypoint followed by the command — in both modes.
fn command_argv(spec: &SandboxSpec, image: &Image) -> Vec<String> {
    if spec.command.is_empty() {
        return Vec::new();
    }
    image
        .entrypoint
        .iter()
        .chain(spec.command.iter())
        .cloned()
        .collect()
}

/// `--memory`, `--cpus`, `--pids` as cgroup limits. Memory and swap together are limited to
/// `--memory`, so the workload cannot escape into swap.
pub(crate) fn resources(r: &Resources) -> ResourcePlan {
    let memory = r.memory_bytes.map(|b| b as i64);
    let (quota, period) = match r.cpus {
        Some(cpus) => {
            let (q, p) = sandbox_container::cgroups::cpus_to_quota(cpus);
            (Some(q), Some(p))
        }
        None => (None, None),
    };
    ResourcePlan {
        memory: MemoryLimits {
            limit: memory,
            swap: memory,
            ..MemoryLimits::default()
        },
        cpu: CpuLimits {
            quota,
            period,
            ..CpuLimits::default()
        },
        pids: r.pids.map(|p| p as i64),
        ..ResourcePlan::default()
    }
}

/// Docker's defaults: new PID, mount, UTS, IPC, network and cgroup namespaces (and a user
/// namespace for a non-root launcher, or with `--userns`: its ids 0..65536 mapped onto the
/// range asked for), the OCI default mounts plus tmpfs on /tmp and /run (the guest program
/// expects both and could not mount them itself), the volumes as bind mounts without device
/// nodes, runc's masked and read-only paths, and the default seccomp allowlist.
fn container_isolation(spec: &SandboxSpec, rootless: bool) -> Isolation {
    let mut namespaces: Vec<Namespace> = Vec::new();
    if rootless || spec.userns.is_some() {
        namespaces.push(Namespace {
            kind: NamespaceKind::User,
            path: None,
        });
    }
    // A rootless launcher's namespace gets the one mapping it may write (its own ids, chosen by
    // the launcher); `--userns` the range asked for.
    let mapping = |host_id: u32, size: u32| {
        vec![IdMapping {
            container_id: 0,
            host_id,
            size,
        }]
    };
    let (uid_mappings, gid_mappings) = match spec.userns.filter(|_| !rootless) {
        Some(range) => (mapping(range.uid, range.count), mapping(range.gid, range.count)),
        None => (Vec::new(), Vec::new()),
    };
    for kind in [
        NamespaceKind::Pid,
        NamespaceKind::Mount,
        NamespaceKind::Uts,
        NamespaceKind::Ipc,
        NamespaceKind::Network,
        NamespaceKind::Cgroup,
    ] {
        namespaces.push(Namespace { kind, path: None });
    }
    let devpts = if rootless {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    let devpts_options: Vec<&str> = ["nosuid", "noexec"]
        .into_iter()
        .chain(devpts.split(','))
        .collect();
    let mut mounts = vec![
        MountPlan::filesystem("proc", "/proc", &["nosuid", "noexec", "nodev"]),
        MountPlan::filesystem("sysfs", "/sys", &["nosuid", "noexec", "nodev", "ro"]),
        MountPlan::filesystem(
            "tmpfs",
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountPlan::filesystem("devpts", "/dev/pts", &devpts_options),
        MountPlan {
            source: "shm".into(),
            ..MountPlan::filesystem(
                "tmpfs",
                "/dev/shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )
        },
        MountPlan::filesystem("mqueue", "/dev/mqueue", &["nosuid", "noexec", "nodev"]),
        MountPlan::filesystem("tmpfs", "/tmp", &["nosuid", "nodev", "mode=1777"]),
        MountPlan::filesystem("tmpfs", "/run", &["nosuid", "nodev", "mode=755"]),
    ];
    for v in &spec.volumes {
        let mut options = vec!["rbind".to_string(), "nodev".to_string()];
        if v.read_only {
            options.push("ro".to_string());
        }
        mounts.push(MountPlan {
            destination: v.guest.clone(),
            kind: "bind".into(),
            source: v.host.display().to_string(),
            options,
        });
    }
    Isolation {
        namespaces,
        uid_mappings,
        gid_mappings,
        mounts,
        masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
        readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        seccomp: Some(sandbox_container::seccomp::default_profile()),
        ..Isolation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_cgroup_limits_with_swap_closed() {
        let r = resources(&Resources {
            memory_bytes: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(32),
        });
        assert_eq!(r.memory.limit, Some(64 << 20));
        assert_eq!(r.memory.swap, Some(64 << 20));
        assert_eq!((r.cpu.quota, r.cpu.period), (Some(50_000), Some(100_000)));
        assert_eq!(r.pids, Some(32));
        assert!(!resources(&Resources::default()).any());
    }

    #[test]
    fn containers_get_dockers_namespaces_and_mounts() {
        let mut spec = SandboxSpec::default();
        spec.volumes.push("/srv:/data:ro".parse().unwrap());
        let iso = container_isolation(&spec, false);
        let kinds: Vec<_> = iso.namespaces.iter().map(|n| n.kind.proc_name()).collect();
        assert_eq!(kinds, ["pid", "mnt", "uts", "ipc", "net", "cgroup"]);
        let dests: Vec<_> = iso.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/tmp",
                "/run",
                "/data"
            ]
        );
        let volume = iso.mounts.last().unwrap();
        assert!(volume.is_bind() && volume.options.contains(&"nodev".to_string()));
        assert!(volume.options.contains(&"ro".to_string()));
        assert!(container_isolation(&spec, true).namespaces[0].kind == NamespaceKind::User);
        assert!(iso.uid_mappings.is_empty() && iso.gid_mappings.is_empty());
    }

    #[test]
    fn userns_maps_the_container_ids_onto_the_range() {
        let spec = SandboxSpec {
            userns: Some(sandbox_spec::IdRange {
                uid: 1_000_000,
                gid: 2_000_000,
                count: 65536,
            }),
            ..SandboxSpec::default()
        };
        let iso = container_isolation(&spec, false);
        let kinds: Vec<_> = iso.namespaces.iter().map(|n| n.kind.proc_name()).collect();
        assert_eq!(kinds, ["user", "pid", "mnt", "uts", "ipc", "net", "cgroup"]);
        let one = |host_id| {
            vec![IdMapping {
                container_id: 0,
                host_id,
                size: 65536,
            }]
        };
        assert_eq!(iso.uid_mappings, one(1_000_000));
        assert_eq!(iso.gid_mappings, one(2_000_000));
        let devpts = iso.mounts.iter().find(|m| m.destination == "/dev/pts").unwrap();
        assert!(
            devpts.options.contains(&"gid=5".to_string()),
            "group tty (5) is mapped: {:?}",
            devpts.options
        );
    }
}
