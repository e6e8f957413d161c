//! crun and runc: an OCI bundle (`<runtime> spec`, with `/bin/true`, no terminal and the image's
//! flattened root read-only), started with `<runtime> run`. On hybrid cgroup hosts crun refuses
//! to run while cgroup2 is mounted beside v1; it runs in a private mount namespace with
//! /sys/fs/cgroup/unified unmounted (`unshare -m`), as the report notes.

use crate::config::Peer;
use crate::environment::peer_program;
use crate::error::BenchError;
use crate::process::run_to_end;
use crate::runner::Bench;
use sandbox_container::cgroups::Layout;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Default)]
pub struct Oci {
    bundles: Vec<(Peer, PathBuf)>,
    crun_unshare: bool,
    counter: u64,
}

impl Oci {
    pub fn prepare(
        &mut self,
        bench: &mut Bench,
        peer: Peer,
        work: &Path,
        rootfs: &Path,
    ) -> Result<(), BenchError> {
        if self.bundles.iter().any(|(p, _)| *p == peer) {
            return Ok(());
        }
        let program = peer_program(peer);
        let bundle = work.join(format!("bundle-{peer}"));
        std::fs::create_dir_all(&bundle).map_err(|e| BenchError::io("cannot create", &bundle, e))?;
        let what = format!("{program} spec");
        run_to_end(Command::new(&program).arg("spec").current_dir(&bundle), &what)?.check(&what)?;
        let path = bundle.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io("cannot read", &path, e))?;
        let mut config: Value = serde_json::from_str(&text)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["/bin/true"]);
        config["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
        config["root"]["readonly"] = true.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .map_err(|e| BenchError::io("cannot write", &path, e))?;
        if peer == Peer::Crun && sandbox_container::cgroups::layout() == Layout::Hybrid {
            self.crun_unshare = true;
            bench.note_once(
                "crun runs in a private mount namespace with /sys/fs/cgroup/unified unmounted \
                 (`unshare -m` + umount, inside its timed run): crun 1.8 refuses hybrid cgroup \
                 hosts otherwise"
                    .to_string(),
            );
        }
        self.bundles.push((peer, bundle));
        Ok(())
    }

    pub fn run_true(&mut self, peer: Peer) -> Result<Duration, BenchError> {
        let bundle = self
            .bundles
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| BenchError::run(peer.name(), "its bundle was not prepared"))?;
        self.counter += 1;
        let id = format!("sandbox-bench-{}-{}", std::process::id(), self.counter);
        let program = peer_program(peer);
        let mut cmd = if peer == Peer::Crun && self.crun_unshare {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\"",
                "sh",
            ]);
            c.arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.arg("run").arg("--bundle").arg(&bundle).arg(&id);
        let what = format!("{program} run /bin/true");
        let f = run_to_end(&mut cmd, &what)?;
        if f.status != 0 {
            // A failed start may leave the container's state behind.
            let _ = Command::new(program).args(["delete", "--force", &id]).output();
        }
        Ok(f.check(&what)?.wall)
    }
}
