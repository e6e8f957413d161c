//! The peers: the OCI runtimes (sandbox-runtime, crun, runc, gVisor's runsc) on an OCI bundle of
//! the same image, and QEMU `-M microvm` in two configurations booting the same guest kernel,
//! root disk and plan as VM mode. Prepared once, on first use; a peer that is missing is skipped
//! with a note saying how to install it.

pub mod oci;
pub mod qemu;

use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::process::{Finished, Memory};
use crate::runner::Bench;
use std::path::PathBuf;
use std::time::Duration;

pub use oci::{hold_env, OciHold, OciRun, HOLD_ARGS};
pub use qemu::Work as QemuWork;

/// The prepared peers of a run.
#[derive(Default)]
pub struct Peers {
    work: Option<tempfile::TempDir>,
    rootfs: Option<PathBuf>,
    image: Option<sandbox_image::ResolvedImage>,
    oci: oci::Oci,
    qemu: qemu::Qemu,
    refused: Vec<Peer>,
}

impl Peers {
    /// Whether `peer` was asked for, is installed and can be prepared; notes why not otherwise
    /// (a preparation error is recorded as a failure of `scenario`).
    pub fn usable(&mut self, bench: &mut Bench, peer: Peer, scenario: Scenario) -> bool {
        if !bench.config.peers.contains(&peer) || self.refused.contains(&peer) {
            return false;
        }
        if bench.env.peer_version(peer).is_none() {
            if let Some(info) = bench.env.peers.iter().find(|p| p.peer == peer) {
                if let Some(hint) = &info.install_hint {
                    bench.note_once(format!("{peer} skipped: {hint}"));
                }
            }
            self.refused.push(peer);
            return false;
        }
        if peer.is_qemu() && !bench.env.place.can_boot_vms() {
            bench.note_once(format!(
                "{peer} skipped: this host's KVM ({}) cannot boot stock guest kernels; the lab run \
                 (`sandbox lab ... -- bench`) measures it",
                bench.env.kvm_kind
            ));
            self.refused.push(peer);
            return false;
        }
        match self.prepare(bench, peer) {
            Ok(()) => true,
            Err(e) => {
                bench.fail(scenario, peer.name(), &e);
                self.refused.push(peer);
                false
            }
        }
    }

    fn prepare(&mut self, bench: &mut Bench, peer: Peer) -> Result<(), BenchError> {
        if self.rootfs.is_none() {
            let work = tempfile::Builder::new()
                .prefix("sandbox-bench-peers-")
                .tempdir()
                .map_err(|e| BenchError::io("cannot create a directory in", std::env::temp_dir(), e))?;
            let store = sandbox_image::Store::open_default()?;
            let image = store.resolve(&bench.config.image)?;
            let rootfs = work.path().join("rootfs");
            bench.say(&format!("unpacking image {} for the peers", bench.config.image));
            image.flatten_into(&rootfs)?;
            self.image = Some(image);
            self.rootfs = Some(rootfs);
            self.work = Some(work);
        }
        let (Some(work), Some(rootfs), Some(image)) = (&self.work, &self.rootfs, &self.image) else {
            return Err(BenchError::run("preparing the peers", "no work directory"));
        };
        if peer.is_oci() {
            self.oci.prepare(bench, peer, work.path(), rootfs)
        } else {
            self.qemu.prepare(bench, image)?;
            if peer == Peer::QemuMicrovm {
                self.qemu.choose_kernel(bench)?;
            }
            Ok(())
        }
    }

    /// The image the peers run (resolved on first use).
    pub fn image(&self) -> Option<&sandbox_image::ResolvedImage> {
        self.image.as_ref()
    }

    /// Makes `peer`'s bundle for `purpose` and records its command line (see
    /// [`oci::Oci::setup`]): `args` replaces the process's, `edit` changes the rest.
    pub fn oci_setup(
        &mut self,
        bench: &mut Bench,
        scenario: Scenario,
        peer: Peer,
        purpose: &str,
        args: Option<&[&str]>,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<OciRun, BenchError> {
        self.oci.setup(bench, scenario, peer, purpose, args, edit)
    }

    /// Runs a prepared bundle once to its end.
    pub fn oci_run(&mut self, run: &OciRun) -> Result<Finished, BenchError> {
        self.oci.run(run)
    }

    /// Starts a prepared hold bundle; returns once its workload said ready.
    pub fn oci_hold(&mut self, run: &OciRun) -> Result<OciHold, BenchError> {
        self.oci.hold(run)
    }

    /// runsc's network namespace for the net scenario: (gateway, namespace path).
    pub fn runsc_network(&mut self) -> Result<(std::net::Ipv4Addr, String), BenchError> {
        let gw = self.oci.net_gateway()?;
        let path = self
            .oci
            .net_namespace_path()
            .ok_or_else(|| BenchError::run("runsc net", "no network namespace"))?;
        Ok((gw, path))
    }

    /// Boots `peer` (a QEMU configuration) to its ready line and lets it end: (ready, exit).
    pub fn qemu_boot(&mut self, peer: Peer) -> Result<(Duration, Duration), BenchError> {
        self.qemu.boot_ready(peer)
    }

    /// Boots `peer` running `true`: spawn to exit.
    pub fn qemu_true(&mut self, peer: Peer) -> Result<Duration, BenchError> {
        self.qemu.boot_true(peer)
    }

    /// Boots `peer` and reads its memory once the guest is ready.
    pub fn qemu_disk(
        &mut self,
        peer: Peer,
        command: Vec<String>,
        volume: Option<&std::path::Path>,
    ) -> Result<(crate::process::Finished, String), BenchError> {
        self.qemu.run_disk(peer, command, volume)
    }

    pub fn qemu_memory(&mut self, peer: Peer) -> Result<Memory, BenchError> {
        self.qemu.memory(peer)
    }

    /// Records `peer`'s QEMU configuration and the command line of `work` in the report.
    pub fn qemu_describe(&self, bench: &mut Bench, peer: Peer, scenario: Scenario, work: QemuWork) {
        self.qemu.describe(bench, peer, scenario, work);
    }
}
