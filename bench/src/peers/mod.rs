//! The peers: sandbox-runtime (this project's OCI path), crun and runc on an OCI bundle of the
//! same image, QEMU `-M microvm` booting the
//! same guest kernel and a root disk of the same image. Prepared once, on first use; a peer that
//! is missing is skipped with a note saying how to install it.

pub mod oci;
pub mod qemu;

use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::runner::Bench;
use std::path::PathBuf;

/// The prepared peers of a run.
#[derive(Default)]
pub struct Peers {
    work: Option<tempfile::TempDir>,
    rootfs: Option<PathBuf>,
    content_key: String,
    oci: oci::Oci,
    qemu: qemu::Qemu,
    refused: Vec<Peer>,
}

impl Peers {
    /// Whether `peer` was asked for, is installed and can be prepared; notes why not otherwise.
    pub fn usable(&mut self, bench: &mut Bench, peer: Peer) -> bool {
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
        if peer == Peer::QemuMicrovm && !bench.env.place.can_boot_vms() {
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
                bench.fail(Scenario::Boot, peer.name(), &e);
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
            self.content_key = image.content_key().replace(':', "-");
            self.rootfs = Some(rootfs);
            self.work = Some(work);
        }
        let (Some(work), Some(rootfs)) = (&self.work, &self.rootfs) else {
            return Err(BenchError::run("preparing the peers", "no work directory"));
        };
        match peer {
            Peer::SandboxRuntime | Peer::Crun | Peer::Runc => {
                self.oci.prepare(bench, peer, work.path(), rootfs)
            }
            Peer::QemuMicrovm => self.qemu.prepare(bench, rootfs, &self.content_key),
        }
    }

    /// Runs `/bin/true` in a fresh container of `peer`; the wall clock from spawn to exit.
    pub fn oci_true(&mut self, peer: Peer) -> Result<std::time::Duration, BenchError> {
        self.oci.run_true(peer)
    }

    /// Boots the QEMU microvm to its ready line and lets it reboot at once: (ready, exit) times.
    pub fn qemu_boot(&mut self) -> Result<(std::time::Duration, std::time::Duration), BenchError> {
        self.qemu.boot()
    }

    /// Boots the QEMU microvm and reads its memory once the guest is ready.
    pub fn qemu_memory(&mut self) -> Result<crate::process::Memory, BenchError> {
        self.qemu.memory()
    }
}
