//! The guest kernel command line: console, fast-boot flags, the root disk, the virtio-mmio
//! devices, where the Plan is, and init = the guest program. The workload's command never goes
//! here (it travels in the plan block), so spaces and quotes in it cannot be mangled.

use linux_loader::cmdline::Cmdline;
use sandbox_protocol::{GUEST_PATH_IN_IMAGE, PLAN_CMDLINE_KEY};
use vm_memory::GuestAddress;

use crate::error::VmmError;
use crate::layout::{CMDLINE_MAX_LEN, VIRTIO_MMIO_SLOT};

/// Flags Firecracker boots with: reboot through the keyboard controller (which ends the VMM at
/// once), reboot a second after a panic, no PCI scan, no module loading, and a minimal i8042
/// probe; and one serial port: the 8250 driver probes only ttyS0, the one port this VM has
/// (each probe of an absent port is dozens of port I/O exits to the VMM).
pub const FAST_BOOT_FLAGS: &[&str] = &[
    "reboot=k",
    "panic=1",
    "pci=off",
    "nomodule",
    "8250.nr_uarts=1",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
];

/// What the command line must say.
#[derive(Debug, Clone, Default)]
pub struct CmdlineSpec {
    /// Mount the root disk (`/dev/vda`) read-only.
    pub root_read_only: bool,
    /// `(MMIO base, IRQ)` of each virtio device, in slot order (vda first).
    pub virtio_devices: Vec<(u64, u32)>,
    /// The block device holding the Plan (`/dev/vdb`), if any.
    pub plan_device: Option<String>,
    /// Print kernel messages below error level (`false` adds `quiet`).
    pub verbose: bool,
    /// Extra kernel parameters from `--cmdline-extra`, placed after ours so they win.
    pub extra: String,
}

/// Builds the command line for `spec`; fails with a one-line error naming the problem when it is
/// too long for the kernel or `--cmdline-extra` is malformed.
pub fn build(spec: &CmdlineSpec) -> Result<Cmdline, VmmError> {
    let mut boot: Vec<String> = vec!["console=ttyS0".into()];
    boot.extend(FAST_BOOT_FLAGS.iter().map(|s| s.to_string()));
    if !spec.verbose {
        boot.push("quiet".into());
    }
    boot.push("root=/dev/vda".into());
    boot.push(if spec.root_read_only { "ro" } else { "rw" }.into());
    boot.push("rootfstype=ext4".into());
    for &(base, irq) in &spec.virtio_devices {
        // The same `virtio_mmio.device=SIZE@BASE:IRQ` syntax linux-loader writes.
        let mut one = Cmdline::new(CMDLINE_MAX_LEN).map_err(cmdline_err)?;
        one.add_virtio_mmio_device(VIRTIO_MMIO_SLOT, GuestAddress(base), irq, None)
            .map_err(cmdline_err)?;
        boot.push(
            one.as_cstring()
                .map_err(cmdline_err)?
                .into_string()
                .unwrap_or_default(),
        );
    }
    if let Some(dev) = &spec.plan_device {
        boot.push(format!("{PLAN_CMDLINE_KEY}={dev}"));
    }
    boot.push(format!("init={GUEST_PATH_IN_IMAGE}"));
    let extra = spec.extra.trim();
    if extra.split_whitespace().any(|w| w == "--") {
        return Err(VmmError::Cmdline(format!(
            "--cmdline-extra {extra:?} contains `--`, which would change init's arguments: remove it"
        )));
    }
    if let Some(c) = extra.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(VmmError::Cmdline(format!(
            "--cmdline-extra contains {c:?}: only printable ASCII is allowed on a kernel command line"
        )));
    }
    if !extra.is_empty() {
        boot.push(extra.to_string());
    }
    let init_args = "init";
    let text = format!("{} -- {init_args}", boot.join(" "));
    if text.len() + 1 > CMDLINE_MAX_LEN {
        return Err(VmmError::CmdlineTooLong {
            len: text.len() + 1,
            max: CMDLINE_MAX_LEN,
        });
    }
    Cmdline::try_from(&text, CMDLINE_MAX_LEN).map_err(cmdline_err)
}

fn cmdline_err(e: linux_loader::cmdline::Error) -> VmmError {
    VmmError::Cmdline(e.to_string())
}

/// The kernel's name for the `index`-th virtio block device (`0` → `/dev/vda`).
pub fn disk_device_name(index: usize) -> String {
    // vda..vdz, then vdaa.. (the kernel's sd-style naming).
    let mut name = String::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        name.insert(0, (b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    format!("/dev/vd{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(spec: &CmdlineSpec) -> String {
        build(spec).unwrap().as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn has_console_fast_boot_flags_root_and_init() {
        let s = text(&CmdlineSpec::default());
        let words: Vec<&str> = s.split(' ').collect();
        for flag in [
            "console=ttyS0",
            "root=/dev/vda",
            "rw",
            "quiet",
            "init=/usr/bin/sandbox-guest",
        ] {
            assert!(words.contains(&flag), "{flag} missing from {s}");
        }
        for flag in FAST_BOOT_FLAGS {
            assert!(words.contains(flag), "{flag} missing from {s}");
        }
        assert!(s.ends_with(" -- init"), "{s}");
        assert_eq!(s.matches(" -- ").count(), 1);
    }

    #[test]
    fn read_only_root_and_verbose_change_their_flags() {
        let s = text(&CmdlineSpec {
            root_read_only: true,
            verbose: true,
            ..Default::default()
        });
        let words: Vec<&str> = s.split(' ').collect();
        assert!(words.contains(&"ro") && !words.contains(&"rw"));
        assert!(!words.contains(&"quiet"));
    }

    #[test]
    fn lists_each_virtio_device_and_the_plan_device() {
        let s = text(&CmdlineSpec {
            virtio_devices: vec![(0xd000_0000, 5), (0xd000_1000, 6)],
            plan_device: Some("/dev/vdb".into()),
            ..Default::default()
        });
        assert!(
            s.contains("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"),
            "{s}"
        );
        assert!(s.contains("sandbox.plan=/dev/vdb"), "{s}");
    }

    #[test]
    fn extra_parameters_come_after_ours_and_before_init_args() {
        let s = text(&CmdlineSpec {
            extra: "  loglevel=8 foo.bar=1 ".into(),
            ..Default::default()
        });
        let extra_at = s.find("loglevel=8 foo.bar=1").unwrap();
        assert!(extra_at > s.find("init=").unwrap());
        assert!(extra_at < s.find(" -- init").unwrap());
    }

    #[test]
    fn extra_with_a_separator_or_control_characters_is_refused() {
        for bad in ["a -- b", "--", "tab\there", "é"] {
            let err = build(&CmdlineSpec {
                extra: bad.into(),
                ..Default::default()
            })
            .unwrap_err();
            assert!(matches!(err, VmmError::Cmdline(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn too_long_a_command_line_is_a_clear_error() {
        let err = build(&CmdlineSpec {
            extra: "x".repeat(CMDLINE_MAX_LEN),
            ..Default::default()
        })
        .unwrap_err();
        match err {
            VmmError::CmdlineTooLong { len, max } => {
                assert!(len > max);
                assert_eq!(max, CMDLINE_MAX_LEN);
            }
            other => panic!("{other}"),
        }
        // Just under the limit still fits.
        let base = text(&CmdlineSpec::default()).len() + 1;
        let room = CMDLINE_MAX_LEN - base - 1;
        let s = text(&CmdlineSpec {
            extra: "y".repeat(room),
            ..Default::default()
        });
        assert_eq!(s.len() + 1, CMDLINE_MAX_LEN);
    }

    #[test]
    fn disk_names_follow_the_kernel() {
        assert_eq!(disk_device_name(0), "/dev/vda");
        assert_eq!(disk_device_name(1), "/dev/vdb");
        assert_eq!(disk_device_name(25), "/dev/vdz");
        assert_eq!(disk_device_name(26), "/dev/vdaa");
    }
}
