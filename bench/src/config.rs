//! What `sandbox bench` is asked to run: scenarios, modes, peers, repetitions, sizes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in report order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used on the command line and in the report.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown {} {s:?}: use one of {}", stringify!($name).to_lowercase(), names.join(", "))
                })
            }
        }
    };
}

named_enum!(
    /// One scenario of the lecture's VM-vs-container comparison.
    Scenario {
        /// Launch to the workload's `ready`, with the launcher's phases.
        Boot = "boot",
        /// Host memory one sandbox costs beyond its workload.
        Memory = "memory",
        /// N sandboxes at once: host memory per sandbox, time to all ready.
        Density = "density",
        /// The disk workload on the image root, on a volume and natively; overlayfs copy-up.
        Disk = "disk",
        /// Host↔sandbox TCP throughput and request/response latency.
        Net = "net",
        /// `exec ID -- true` into a running sandbox: the command's start to its exit.
        Exec = "exec",
        /// The cpu workload vs native.
        Cpu = "cpu",
        /// The syscall workload vs native.
        Syscall = "syscall",
    }
);

named_enum!(
    /// A sandbox kind of this project.
    Mode {
        /// A KVM microVM (`sandbox run --mode vm`).
        Vm = "vm",
        /// A namespace container (`sandbox run --mode container`).
        Container = "container",
    }
);

named_enum!(
    /// A runtime measured in the same run beside `sandbox run`, on the same image and kernel:
    /// another project's, or this project's container mode through the OCI command line.
    Peer {
        /// `sandbox-runtime` (this project, the path podman and containerd take), an OCI bundle
        /// of the same image.
        SandboxRuntime = "sandbox-runtime",
        /// crun (Debian package `crun`), an OCI bundle of the same image.
        Crun = "crun",
        /// runc (Debian package `runc`), an OCI bundle of the same image.
        Runc = "runc",
        /// gVisor's `runsc` (Debian package `runsc`): the same bundle as runc, run on a kernel in
        /// user space (its Sentry) instead of the host kernel.
        Runsc = "runsc",
        /// QEMU `-M microvm` (Debian package `qemu-system-x86`) as a speed-minded user runs it:
        /// QEMU's documented fast microvm options, our kernel parameters, the faster kernel
        /// format; the same kernel, root disk, plan and `sandbox-guest init` as VM mode.
        QemuMicrovm = "qemu-microvm",
        /// QEMU `-M microvm` with its defaults and a minimal kernel command line (the bench's
        /// peer before the tuned one existed); the same guest work as the tuned one.
        QemuMicrovmDefault = "qemu-microvm-default",
    }
);

/// Parses a comma-separated list of scenario, mode or peer names.
pub fn parse_list<T: FromStr<Err = String>>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(T::from_str)
        .collect()
}

/// A whole `sandbox bench` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub scenarios: Vec<Scenario>,
    pub modes: Vec<Mode>,
    pub peers: Vec<Peer>,
    /// Measured runs per scenario, mode and peer.
    pub runs: usize,
    /// Discarded runs before them.
    pub warmup: usize,
    /// Small sizes, short workloads, density of at most 2.
    pub quick: bool,
    /// Sandboxes started at once in the density scenario, for every mode (`--density N`);
    /// `None`: 8 containers and 4 VMs (2 each with `quick`).
    #[serde(default)]
    pub density: Option<usize>,
    /// Where report.md, report.json and the charts go.
    pub out: PathBuf,
    /// The image every sandbox and peer runs.
    pub image: String,
    /// The `sandbox` binary the sandboxes are launched with.
    #[serde(skip)]
    pub sandbox_bin: PathBuf,
}

impl Peer {
    /// The OCI runtimes among the peers (they run a bundle of the image).
    pub fn is_oci(self) -> bool {
        matches!(self, Peer::SandboxRuntime | Peer::Crun | Peer::Runc | Peer::Runsc)
    }

    /// The QEMU configurations among the peers.
    pub fn is_qemu(self) -> bool {
        matches!(self, Peer::QemuMicrovm | Peer::QemuMicrovmDefault)
    }
}

impl Config {
    /// The full run's defaults: every scenario, both modes, every peer, 10 runs, 2 warm-ups.
    pub fn new(out: PathBuf, sandbox_bin: PathBuf) -> Config {
        Config {
            scenarios: Scenario::ALL.to_vec(),
            modes: Mode::ALL.to_vec(),
            peers: Peer::ALL.to_vec(),
            runs: 10,
            warmup: 2,
            quick: false,
            density: None,
            out,
            image: sandbox_spec::DEFAULT_IMAGE.to_string(),
            sandbox_bin,
        }
    }

    /// `--quick`: 1 warm-up and 3 runs.
    pub fn make_quick(&mut self) {
        self.quick = true;
        self.runs = 3;
        self.warmup = 1;
    }

    /// Sizes and durations of the workloads for this run.
    pub fn sizes(&self) -> Sizes {
        let mut sizes = self.default_sizes();
        if let Some(n) = self.density {
            sizes.density_container = n;
            sizes.density_vm = n;
        }
        sizes
    }

    fn default_sizes(&self) -> Sizes {
        if self.quick {
            Sizes {
                disk_mib: 16,
                copy_up_mib: 16,
                workload_seconds: 0.3,
                density_container: 2,
                density_vm: 2,
            }
        } else {
            Sizes {
                disk_mib: 64,
                copy_up_mib: 64,
                workload_seconds: 1.0,
                density_container: 8,
                density_vm: 4,
            }
        }
    }
}

/// Workload sizes; `--quick` shrinks them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sizes {
    /// The `disk` workload's file size.
    pub disk_mib: u64,
    /// The large image file whose first write measures copy-up.
    pub copy_up_mib: u64,
    /// `--seconds` for the cpu, syscall and net workloads.
    pub workload_seconds: f64,
    /// Sandboxes started at once in the density scenario.
    pub density_container: usize,
    pub density_vm: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_unknown_names_are_explained() {
        let s: Vec<Scenario> = parse_list("boot, net,cpu").unwrap();
        assert_eq!(s, vec![Scenario::Boot, Scenario::Net, Scenario::Cpu]);
        let p: Vec<Peer> = parse_list("qemu-microvm,runsc,qemu-microvm-default").unwrap();
        assert_eq!(p, vec![Peer::QemuMicrovm, Peer::Runsc, Peer::QemuMicrovmDefault]);
        assert!(Peer::ALL.iter().all(|p| p.is_oci() != p.is_qemu()));
        let err = parse_list::<Mode>("vm,lxc").unwrap_err();
        assert!(err.contains("\"lxc\"") && err.contains("vm, container"), "{err}");
    }
}
