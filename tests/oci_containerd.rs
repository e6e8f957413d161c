//! containerd drives `sandbox-runtime` through its runc shim (`ctr run --runc-binary`, the
//! switch a containerd config sets with `BinaryName`): output and exit status. The test starts
//! its own containerd with a private root, state and socket under a temporary directory and
//! stops it afterwards; the image is an OCI archive made here from busybox and imported with
//! `ctr image import`.

mod oci_support;

use oci_support::{wait_output, Bundle, RUNTIME};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        oci_support::preconditions();
        assert!(
            Command::new("containerd").arg("--version").output().is_ok(),
            "containerd is not installed: run scripts/setup (it installs Debian's containerd)"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n\
                 [ttrpc]\n  address = \"{1}.ttrpc\"\n[debug]\n  address = \"{0}/debug.sock\"\n",
                dir.path().display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, daemon, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status().is_ok_and(|s| s.success()) {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.socket).args(args).stdin(Stdio::null());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Its shims and snapshot mounts live under the directory too.
        let _ = Command::new("pkill").arg("-f").arg(self.dir.path()).status();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = sandbox_protocol::mountinfo::parse(&mountinfo)
            .into_iter()
            .map(|m| m.target)
            .filter(|t| Path::new(t).starts_with(self.dir.path()))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI image archive (`oci-layout`, `index.json`, blobs) of `rootfs`, tagged `name`.
fn oci_archive(rootfs: &Path, name: &str, dest: &Path) {
    let mut layer = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut layer, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", rootfs).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&layer[..])
        .read_to_end(&mut raw)
        .unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&raw)]}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}
        }]
    })
    .to_string()
    .into_bytes();
    let mut out = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&layer, &config, &manifest] {
        let digest = sha256(blob);
        add(
            &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
            blob,
        );
    }
    out.finish().unwrap();
}

#[test]
fn containerd_runs_a_container_through_the_runc_shim() {
    let c = Containerd::start();
    let bundle = Bundle::new(&["true"]);
    let archive = c.dir.path().join("image.tar");
    let name = format!("localhost/sandbox-oci-test:{}", std::process::id());
    oci_archive(&bundle.path().join("rootfs"), &name, &archive);
    let import = c
        .ctr(&["image", "import", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "import: {}",
        String::from_utf8_lossy(&import.stderr)
    );

    let id = format!("sbx-ctr-{}", std::process::id());
    let child = c
        .ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            RUNTIME,
            &name,
            &id,
            "sh",
            "-c",
            "echo hello from containerd; exit 4",
        ])
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout {stdout}\nstderr {stderr}\ncontainerd log:\n{}",
        c.log()
    );
    assert_eq!(stdout, "hello from containerd\n", "{stderr}");
    // The shim deleted the container: nothing of it is left in the runtime's state (the shim
    // gives the runtime --root /run/containerd/runc/<namespace>).
    let state = Path::new("/run/containerd/runc/default").join(&id);
    assert!(!state.exists(), "{} left behind", state.display());
}
