//! Device nodes and FIFOs in imported layers. An image that carries `/dev/sda` (or any block or
//! character device) hands whoever runs it — and whoever can reach the unpacked layer — the host
//! device behind that number, so import refuses them unless explicitly allowed. Character
//! devices 0/0 are exempt: that is the overlayfs whiteout form, which opens no device.

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;

use crate::error::ImageError;

/// Whether an import may bring device nodes and FIFOs into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevicePolicy {
    Refuse,
    Allow,
}

impl DevicePolicy {
    pub(crate) fn from_allow(allow: bool) -> DevicePolicy {
        if allow {
            DevicePolicy::Allow
        } else {
            DevicePolicy::Refuse
        }
    }
}

/// A device node or FIFO found in a layer: its path in the layer and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecialEntry {
    pub entry: String,
    pub kind: &'static str,
}

/// What a tar entry of type `kind` with device `major`/`minor` is, if it is a device node or
/// FIFO that the policy governs (whiteouts, 0/0 character devices, are not).
pub(crate) fn tar_special(kind: tar::EntryType, major: u32, minor: u32) -> Option<&'static str> {
    match kind {
        tar::EntryType::Char if (major, minor) == (0, 0) => None,
        tar::EntryType::Char => Some("a character device"),
        tar::EntryType::Block => Some("a block device"),
        tar::EntryType::Fifo => Some("a FIFO"),
        _ => None,
    }
}

/// The same for a file on disk (a rootfs directory being imported); sockets count too.
pub(crate) fn file_special(ft: FileType, rdev: u64) -> Option<&'static str> {
    if ft.is_char_device() && rdev == 0 {
        None
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// Refuses `special` (found in `what`) unless the policy allows it.
pub(crate) fn check(
    policy: DevicePolicy,
    what: &str,
    special: Option<&SpecialEntry>,
) -> Result<(), ImageError> {
    match (policy, special) {
        (DevicePolicy::Refuse, Some(s)) => Err(ImageError::DeviceEntry {
            what: what.to_string(),
            entry: s.entry.clone(),
            kind: s.kind,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_are_not_devices() {
        assert_eq!(tar_special(tar::EntryType::Char, 0, 0), None);
        assert_eq!(
            tar_special(tar::EntryType::Char, 1, 3),
            Some("a character device")
        );
        assert_eq!(tar_special(tar::EntryType::Block, 0, 0), Some("a block device"));
        assert_eq!(tar_special(tar::EntryType::Fifo, 0, 0), Some("a FIFO"));
        assert_eq!(tar_special(tar::EntryType::Regular, 0, 0), None);
    }

    #[test]
    fn refused_only_without_the_opt_in() {
        let s = SpecialEntry {
            entry: "dev/sda".into(),
            kind: "a block device",
        };
        assert!(check(DevicePolicy::Allow, "x", Some(&s)).is_ok());
        assert!(check(DevicePolicy::Refuse, "x", None).is_ok());
        let err = check(DevicePolicy::Refuse, "layer 1", Some(&s))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev/sda") && err.contains("--allow-devices"),
            "{err}"
        );
    }
}
