//! `spec`: writes a config.json to start a bundle from — `sh` on a terminal in a rootfs
//! directory beside it, with the namespaces, mounts, capabilities and protected paths
//! sandbox-runtime gives a container by default (those runc's `spec` writes too).

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write config.json (default: the current directory).
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,
}

/// The default config.
pub fn default_config() -> serde_json::Value {
    let caps: Vec<String> = sandbox_container::caps::names(sandbox_container::caps::DEFAULT_CAPS)
        .split(',')
        .map(|n| format!("CAP_{}", n.to_uppercase()))
        .collect();
    let masked: Vec<&str> = sandbox_container::protect::MASKED_PATHS.to_vec();
    let readonly: Vec<&str> = sandbox_container::protect::READONLY_PATHS.to_vec();
    serde_json::json!({
        "ociVersion": sandbox_core::plan::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "sandbox",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": masked,
            "readonlyPaths": readonly
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let dir = crate::create::bundle_dir(args.bundle)?;
    let path = dir.join("config.json");
    anyhow::ensure!(
        !path.exists(),
        "{} already exists: remove it, or write the spec into another --bundle",
        path.display()
    );
    std::fs::write(&path, serde_json::to_string_pretty(&default_config())? + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(0)
}
