//! The VM side of init's set-up, run for real in fresh mount, network and PID namespaces (as
//! root, through `unshare`) instead of a VM: the API filesystems, an ext4 volume from a block
//! device (a loop device here, virtio-blk in a VM) mounted read-only, and eth0 configured by
//! ioctl with an address and a default route. The port writes of VM mode are not exercised.
//!
//! A test without the standard harness (`harness = false`): run on the host it prepares the
//! volume and runs itself again inside the namespaces, where it does the set-up and checks it.

use sandbox_guest::init::mounts;
use sandbox_protocol::ifconfig as net;
use sandbox_protocol::mountinfo::current as mountinfo;
use sandbox_protocol::{NetPlan, VolumePlan};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Set for the inner test, which must only run inside the namespaces the outer test made.
const INNER: &str = "SANDBOX_GUEST_VM_SETUP_INNER";

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is missing: run `apt-get install {package}`");
}

/// A loop device over an image file, detached when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn sh_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    if std::env::var_os(INNER).is_some() {
        inner_vm_setup();
        println!("inner set-up checked");
        return;
    }
    vm_setup_mounts_filesystems_and_volumes_and_configures_eth0();
    println!("test vm_setup_mounts_filesystems_and_volumes_and_configures_eth0 ... ok");
}

fn vm_setup_mounts_filesystems_and_volumes_and_configures_eth0() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (namespaces, loop devices, mounts)"
    );
    require("unshare", "util-linux");
    require("losetup", "util-linux");
    require("mkfs.ext4", "e2fsprogs");
    require("ip", "iproute2");
    // Not under /tmp: the VM set-up mounts a fresh tmpfs there.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("marker"), "hello from the volume\n").unwrap();
    let image = dir.path().join("volume.ext4");
    std::fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    sh_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&content)
            .arg(&image),
    );
    let dev = Loop(sh_ok(Command::new("losetup").args(["-f", "--show"]).arg(&image)));
    let target = dir.path().join("volume");

    let out = Command::new("unshare")
        .args(["--mount", "--net", "--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .env(INNER, "1")
        .env("SBX_VOLUME_DEVICE", &dev.0)
        .env("SBX_VOLUME_TARGET", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("inner set-up checked"),
        "inner test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dev);
}

fn mounted(target: &Path) -> Option<(String, String)> {
    let target = target.to_str().unwrap();
    mountinfo()
        .unwrap()
        .into_iter()
        .rev()
        .find(|m| m.target == target)
        .map(|m| (m.fstype, m.options))
}

/// Protected paths apply to a workload root only (the lab's OCI VM script checks them).
const NO_PROTECTED_PATHS: mounts::ProtectedPaths<'static> = mounts::ProtectedPaths {
    masked: &[],
    read_only: &[],
};

/// The part that runs inside the namespaces the outer part made.
fn inner_vm_setup() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "run through the outer test, never on the host itself"
    );
    let device = std::env::var("SBX_VOLUME_DEVICE").unwrap();
    let target = PathBuf::from(std::env::var("SBX_VOLUME_TARGET").unwrap());

    mounts::setup_vm(
        &[VolumePlan {
            source: device,
            target: target.to_str().unwrap().into(),
            read_only: true,
        }],
        None,
        NO_PROTECTED_PATHS,
    )
    .unwrap();
    for (path, fstype) in [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/tmp", "tmpfs"),
        ("/run", "tmpfs"),
    ] {
        let (found, _) = mounted(Path::new(path)).unwrap_or_else(|| panic!("{path} is not mounted"));
        assert_eq!(found, fstype, "{path}");
    }
    let (fstype, options) = mounted(&target).expect("the volume is mounted");
    assert_eq!(fstype, "ext4");
    assert!(options.split(',').any(|o| o == "ro"), "{options}");
    assert_eq!(
        std::fs::read_to_string(target.join("marker")).unwrap(),
        "hello from the volume\n"
    );
    let err = std::fs::write(target.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // Running it again (init restarted in the same namespace) mounts nothing twice.
    mounts::setup_vm(&[], None, NO_PROTECTED_PATHS).unwrap();
    let tmp_mounts = mountinfo().unwrap().iter().filter(|m| m.target == "/tmp").count();
    assert_eq!(tmp_mounts, 1);

    let plan = NetPlan {
        interface: "eth0".into(),
        address: Ipv4Addr::new(10, 99, 0, 2),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
    };
    let missing = net::configure(&plan, true).unwrap_err().to_string();
    assert!(missing.contains("eth0 does not exist"), "{missing}");
    net::bring_up_loopback().unwrap();
    // A veth pair stands in for the virtio-net device (the dummy driver may be missing).
    sh_ok(Command::new("ip").args(["link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]));
    sh_ok(Command::new("ip").args(["link", "set", "eth0peer", "up"]));
    net::configure(&plan, true).unwrap();
    let addr = sh_ok(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addr.contains("inet 10.99.0.2/24"), "{addr}");
    let link = sh_ok(Command::new("ip").args(["-o", "link", "show", "dev", "eth0"]));
    assert!(link.contains(",UP"), "{link}");
    let lo = sh_ok(Command::new("ip").args(["-o", "link", "show", "dev", "lo"]));
    assert!(lo.contains(",UP"), "{lo}");
    let route = sh_ok(Command::new("ip").args(["-4", "route", "show", "default"]));
    assert!(route.contains("default via 10.99.0.1 dev eth0"), "{route}");
    // A container's interface that already has its address is left alone.
    let other = NetPlan {
        address: Ipv4Addr::new(10, 99, 0, 7),
        ..plan
    };
    net::configure(&other, false).unwrap();
    let addr = sh_ok(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(!addr.contains("10.99.0.7"), "{addr}");
}
