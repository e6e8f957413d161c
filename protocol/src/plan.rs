//! The contract between the host (container launcher, VMM) and the guest program.
//!
//! Three things cross the boundary, and each is defined here once:
//! - the [`Plan`]: the guest program's whole input (what to run, as whom, with which hostname,
//!   network address and volumes). Container: a file or inherited fd named by `SANDBOX_PLAN`.
//!   VM: a small read-only block device (see [`encode_plan_block`]) named on the kernel command
//!   line by `sandbox.plan=/dev/vdX` — the command never travels split on the kernel command line.
//! - the ready signal: `sandbox-guest ready` tells the host "the workload has started". Container:
//!   a line written to an inherited pipe fd; VM: a value written to the boot/exit device's port.
//!   The channel reaches the workload in the `SANDBOX_READY` environment variable.
//! - the ending: container — PID 1's exit status; VM — init writes [`exit_device::EXIT_BASE`] +
//!   status to the boot/exit device, then reboots (`reboot=k`, the VMM ends on the i8042 reset).

use crate::isolation::{Isolation, ProcessPlan, ResourcePlan};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Environment variable naming where init finds its [`Plan`]: a path, or `fd:N`.
pub const PLAN_ENV: &str = "SANDBOX_PLAN";
/// Kernel command-line key naming the block device that holds the [`Plan`] in a VM.
pub const PLAN_CMDLINE_KEY: &str = "sandbox.plan";
/// Environment variable naming the ready channel, as printed by [`ReadyChannel`]'s `Display`.
pub const READY_ENV: &str = "SANDBOX_READY";
/// Where the guest program lives in every image and every root disk (on PATH).
pub const GUEST_PATH_IN_IMAGE: &str = "/usr/bin/sandbox-guest";
/// The search path a workload gets when nothing sets one (the OCI and Docker default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The exit status init reports when the command cannot be found in the image.
pub const EXIT_NOT_FOUND: i32 = 127;
/// The exit status init reports when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// The boot/exit device: one 32-bit I/O port the guest writes to, like Firecracker's boot timer
/// but carrying the workload's exit status too. The VMM timestamps each write relative to its
/// own start.
pub mod exit_device {
    /// The I/O port (unused on a PC: between the PIIX4 SMBus and the parallel port ranges).
    pub const PORT: u16 = 0x04f0;
    /// Written by init as its first act: "the kernel has handed over to user space".
    pub const INIT_STARTED: u32 = 0x5342_0001;
    /// Written by `sandbox-guest ready`: "the workload has started".
    pub const READY: u32 = 0x5342_0002;
    /// Written by init just before it reboots: `EXIT_BASE | (status & 0xff)`.
    pub const EXIT_BASE: u32 = 0x5345_0000;
    /// Mask selecting the exit-status byte of an exit write.
    pub const EXIT_STATUS_MASK: u32 = 0xff;

    /// What a value written to [`PORT`] means.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Event {
        InitStarted,
        Ready,
        Exit(u8),
    }

    impl Event {
        /// The value the guest writes for this event.
        pub fn encode(self) -> u32 {
            match self {
                Event::InitStarted => INIT_STARTED,
                Event::Ready => READY,
                Event::Exit(status) => EXIT_BASE | u32::from(status),
            }
        }

        /// What the VMM makes of a written value; `None` for anything else.
        pub fn decode(value: u32) -> Option<Event> {
            match value {
                INIT_STARTED => Some(Event::InitStarted),
                READY => Some(Event::Ready),
                v if v & !EXIT_STATUS_MASK == EXIT_BASE => Some(Event::Exit((v & EXIT_STATUS_MASK) as u8)),
                _ => None,
            }
        }
    }
}

/// Which kind of sandbox the guest program finds itself in; decides what init mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// PID 1 of a VM: init mounts devtmpfs, mounts volumes from block devices, configures eth0,
    /// and ends the VM through the boot/exit device.
    Vm,
    /// PID 1 of a container: the launcher already prepared /dev and the volumes.
    Container,
}

/// How `sandbox-guest ready` reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyChannel {
    /// Nobody listens; `ready` says so and fails.
    None,
    /// An inherited pipe file descriptor (container mode).
    Fd(i32),
    /// The boot/exit device's I/O port (VM mode).
    Port(u16),
}

impl fmt::Display for ReadyChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyChannel::None => write!(f, "none"),
            ReadyChannel::Fd(fd) => write!(f, "fd:{fd}"),
            ReadyChannel::Port(port) => write!(f, "port:{port:#x}"),
        }
    }
}

impl FromStr for ReadyChannel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad ready channel {s:?}: expected none, fd:N or port:0xNNNN");
        match s.split_once(':') {
            None if s == "none" => Ok(ReadyChannel::None),
            Some(("fd", n)) => n.parse().map(ReadyChannel::Fd).map_err(|_| bad()),
            Some(("port", p)) => {
                let p = p.trim_start_matches("0x");
                u16::from_str_radix(p, 16)
                    .map(ReadyChannel::Port)
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

/// The guest side of `--net host`: one interface with a static address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// Interface name inside the sandbox (`eth0`).
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The host end of the link, used as the default route.
    pub gateway: Option<Ipv4Addr>,
}

/// A volume for init to mount (VM mode: a block device; container mode: already bind-mounted by
/// the launcher, listed for `info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePlan {
    /// VM: the block device (`/dev/vdc`); container: the host path.
    pub source: String,
    /// Where it appears inside the sandbox.
    pub target: String,
    pub read_only: bool,
}

/// Everything the guest program needs to know to run one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    /// argv of the command; empty means `sandbox-guest info`.
    pub command: Vec<String>,
    /// Extra environment (`K`, `V`), added to a minimal default (PATH, HOME, TERM).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub hostname: Option<String>,
    pub workdir: Option<String>,
    /// `(uid, gid)` the command runs as; root when absent.
    pub user: Option<(u32, u32)>,
    pub net: Option<NetPlan>,
    #[serde(default)]
    pub volumes: Vec<VolumePlan>,
    pub ready: ReadyChannel,
    /// The process's privileges and limits beyond its user (capabilities, rlimits, ...).
    #[serde(default)]
    pub process: ProcessPlan,
    /// Namespaces, mounts, devices, seccomp and protected paths (applied by the container
    /// launcher; a VM is isolated by the hypervisor instead).
    #[serde(default)]
    pub isolation: Isolation,
    /// The cgroup limits (a VM's memory and vCPUs come from these too).
    #[serde(default)]
    pub resources: ResourcePlan,
    /// In a VM: the workload reads the console (`sandbox run -i`; the VMM feeds it the
    /// launcher's stdin); without it, and without a terminal, its stdin is `/dev/null`. (A
    /// container's launcher hands its workload the right stdin itself.)
    #[serde(default)]
    pub stdin: bool,
    /// When init starts the workload: at boot, or (a VM's guest agent) on the host's `run`
    /// request ([`crate::agent`]).
    #[serde(default)]
    pub start: StartMode,
    /// VM mode for an OCI bundle: the bundle's root filesystem as a disk, which init mounts at
    /// [`WORKLOAD_ROOT_MOUNT`] and makes the root of the workload and of every process the
    /// agent starts; the VM's own root (with the guest program) stays init's. `None`: the
    /// workload runs in the VM's root.
    #[serde(default)]
    pub workload_root: Option<WorkloadRoot>,
    /// VM mode for an OCI bundle: the bundle's namespaces, capabilities and seccomp profile,
    /// which init applies to the workload and to every process the agent starts.
    #[serde(default)]
    pub confinement: Option<crate::isolation::GuestConfinement>,
}

/// Where init mounts a [`WorkloadRoot`].
pub const WORKLOAD_ROOT_MOUNT: &str = "/run/sandbox-root";

/// A workload's own root filesystem, on a disk of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRoot {
    /// The block device (`/dev/vdc`).
    pub device: String,
    /// Mounted read-only (the bundle's `root.readonly`).
    pub read_only: bool,
    /// Host files the bundle bind-mounts, copied in: init mounts each over its destination.
    #[serde(default)]
    pub files: Vec<CopiedFile>,
}

/// The largest host file a VM's bundle may bind-mount (it is copied into the plan).
pub const COPIED_FILE_MAX: u64 = 256 << 10;
/// The most bytes of copied files one plan carries.
pub const COPIED_FILES_TOTAL_MAX: u64 = 1 << 20;

/// A host file a bundle bind-mounts (podman's `/etc/hosts`, `/etc/resolv.conf`,
/// `/etc/hostname`, `/run/.containerenv`), copied at `create` because a VM cannot share the
/// host's files: later changes on the host are not seen, and writes stay in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFile {
    /// Where it is mounted, an absolute path in the workload's root.
    pub destination: String,
    pub contents: Vec<u8>,
    /// Permission bits (`0o644`).
    pub mode: u32,
    /// Mounted read-only (the mount's `ro` option).
    pub read_only: bool,
}

/// When init starts the workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// As soon as the sandbox is set up (mounts, network, hostname).
    #[default]
    Boot,
    /// After set-up, init waits for the guest agent's `run` request (the OCI runtime's `start`
    /// after its `create`); only a VM with a vsock device has the agent.
    OnRequest,
}

impl Plan {
    /// A plan running `command` with everything else at its default.
    pub fn new(mode: Mode, command: Vec<String>) -> Plan {
        Plan {
            mode,
            command,
            env: Vec::new(),
            hostname: None,
            workdir: None,
            user: None,
            net: None,
            volumes: Vec::new(),
            ready: ReadyChannel::None,
            process: ProcessPlan::default(),
            isolation: Isolation::default(),
            resources: ResourcePlan::default(),
            stdin: false,
            start: StartMode::Boot,
            workload_root: None,
            confinement: None,
        }
    }

    /// The argv init will execute: the command, or `sandbox-guest info` when none was given.
    pub fn argv(&self) -> Vec<String> {
        if self.command.is_empty() {
            vec!["sandbox-guest".to_string(), "info".to_string()]
        } else {
            self.command.clone()
        }
    }
}

/// Magic at the start of a plan block device.
pub const PLAN_BLOCK_MAGIC: &[u8; 8] = b"SBXPLAN1";
/// Plan blocks are padded to this size (a whole number of sectors).
pub const PLAN_BLOCK_ALIGN: usize = 4096;

/// Errors reading a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan block does not start with {PLAN_BLOCK_MAGIC:?}: the device is not a sandbox plan")]
    BadMagic,
    #[error("plan block is truncated: header says {expected} bytes of JSON, {found} present")]
    Truncated { expected: usize, found: usize },
    #[error("plan JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes a plan as a block-device image: magic, little-endian u32 length, JSON, zero padding.
pub fn encode_plan_block(plan: &Plan) -> Vec<u8> {
    let json = serde_json::to_vec(plan).expect("a Plan always serializes");
    let mut block = Vec::with_capacity(PLAN_BLOCK_ALIGN);
    block.extend_from_slice(PLAN_BLOCK_MAGIC);
    block.extend_from_slice(&(json.len() as u32).to_le_bytes());
    block.extend_from_slice(&json);
    let padded = block.len().div_ceil(PLAN_BLOCK_ALIGN) * PLAN_BLOCK_ALIGN;
    block.resize(padded, 0);
    block
}

/// Decodes a plan block made by [`encode_plan_block`].
pub fn decode_plan_block(block: &[u8]) -> Result<Plan, PlanError> {
    let header = PLAN_BLOCK_MAGIC.len() + 4;
    if block.len() < header || &block[..PLAN_BLOCK_MAGIC.len()] != PLAN_BLOCK_MAGIC {
        return Err(PlanError::BadMagic);
    }
    let len_bytes: [u8; 4] = block[PLAN_BLOCK_MAGIC.len()..header].try_into().expect("4 bytes");
    let expected = u32::from_le_bytes(len_bytes) as usize;
    let found = block.len() - header;
    if found < expected {
        return Err(PlanError::Truncated { expected, found });
    }
    Ok(serde_json::from_slice(&block[header..header + expected])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_block_round_trips_arguments_with_spaces_and_quotes() {
        let mut plan = Plan::new(
            Mode::Vm,
            vec!["sh".into(), "-c".into(), "echo 'a  b' \"c\"".into()],
        );
        plan.net = Some(NetPlan {
            interface: "eth0".into(),
            address: Ipv4Addr::new(172, 30, 0, 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
        });
        plan.ready = ReadyChannel::Port(exit_device::PORT);
        let block = encode_plan_block(&plan);
        assert_eq!(block.len() % PLAN_BLOCK_ALIGN, 0);
        assert_eq!(decode_plan_block(&block).unwrap(), plan);
    }

    #[test]
    fn plan_block_refuses_foreign_and_truncated_blocks() {
        assert!(matches!(decode_plan_block(&[0u8; 512]), Err(PlanError::BadMagic)));
        let block = encode_plan_block(&Plan::new(Mode::Container, vec!["true".into()]));
        let json_len = u32::from_le_bytes(block[8..12].try_into().unwrap()) as usize;
        assert!(matches!(
            decode_plan_block(&block[..12 + json_len - 1]),
            Err(PlanError::Truncated { .. })
        ));
    }

    #[test]
    fn start_mode_defaults_to_boot_and_reads_on_request() {
        let plan = Plan::new(Mode::Vm, vec!["true".into()]);
        let mut json: serde_json::Value = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["start"], "boot");
        json.as_object_mut().unwrap().remove("start");
        let old: Plan = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old.start, StartMode::Boot, "a plan without the field still reads");
        json["start"] = "on_request".into();
        let later: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(later.start, StartMode::OnRequest);
    }

    #[test]
    fn ready_channel_parses_what_it_prints() {
        for ch in [
            ReadyChannel::None,
            ReadyChannel::Fd(3),
            ReadyChannel::Port(exit_device::PORT),
        ] {
            assert_eq!(ch.to_string().parse::<ReadyChannel>().unwrap(), ch);
        }
        assert!("fd:x".parse::<ReadyChannel>().is_err());
        assert!("pipe".parse::<ReadyChannel>().is_err());
    }

    #[test]
    fn exit_device_events_round_trip() {
        for ev in [
            exit_device::Event::InitStarted,
            exit_device::Event::Ready,
            exit_device::Event::Exit(0),
            exit_device::Event::Exit(137),
        ] {
            assert_eq!(exit_device::Event::decode(ev.encode()), Some(ev));
        }
        assert_eq!(exit_device::Event::decode(0x1234), None);
    }
}
