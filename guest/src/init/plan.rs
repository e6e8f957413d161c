//! Where init finds its [`Plan`]: `SANDBOX_PLAN` (a file or an inherited `fd:N`) in a
//! container, or the block device named by `sandbox.plan=` on the kernel command line in a VM.

use sandbox_protocol::{
    decode_plan_block, Plan, PLAN_BLOCK_ALIGN, PLAN_BLOCK_MAGIC, PLAN_CMDLINE_KEY, PLAN_ENV,
};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;

/// The largest plan init accepts (a plan is a few hundred bytes; this catches a wrong device).
const MAX_PLAN_BYTES: usize = 16 << 20;

/// Why the plan could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanLoadError {
    #[error(
        "no plan: set {PLAN_ENV} to a plan file or fd:N, or boot with {PLAN_CMDLINE_KEY}=/dev/vdX on the kernel command line"
    )]
    Missing,
    #[error("{PLAN_ENV}={value}: {reason}")]
    Env { value: String, reason: String },
    #[error("cannot read /proc/cmdline to find {PLAN_CMDLINE_KEY}=: {0}")]
    Cmdline(io::Error),
    #[error("plan device {device} (from {PLAN_CMDLINE_KEY}=): {reason}")]
    Device { device: String, reason: String },
}

/// The value of `sandbox.plan=` on a kernel command line.
pub fn cmdline_plan_device(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(PLAN_CMDLINE_KEY)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Takes ownership of the inherited descriptor `fd` (checked to be open).
fn inherited_fd(fd: i32) -> Result<File, String> {
    if fd < 3 {
        return Err("a plan descriptor must be 3 or above (0-2 are stdio)".into());
    }
    // SAFETY: F_GETFD only queries the descriptor's flags; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "descriptor {fd} is not open: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is open (checked above) and was inherited for init alone; nothing
    // else in this process uses it, so the File may own and close it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads the plan named by the value of `SANDBOX_PLAN`.
pub fn read_env_plan(value: &str) -> Result<Plan, PlanLoadError> {
    let err = |reason: String| PlanLoadError::Env {
        value: value.to_string(),
        reason,
    };
    let mut file = match value.strip_prefix("fd:") {
        Some(n) => {
            let fd = n
                .parse::<i32>()
                .map_err(|_| err("expected fd:N with a number N".into()))?;
            inherited_fd(fd).map_err(err)?
        }
        None => File::open(value).map_err(|e| err(format!("cannot open the plan file: {e}")))?,
    };
    let mut text = String::new();
    file.by_ref()
        .take(MAX_PLAN_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("cannot read the plan: {e}")))?;
    if text.len() > MAX_PLAN_BYTES {
        return Err(err(format!("the plan is larger than {MAX_PLAN_BYTES} bytes")));
    }
    serde_json::from_str(&text).map_err(|e| err(format!("the plan is not valid plan JSON: {e}")))
}

/// Reads and decodes a plan block device.
pub fn read_plan_device(device: &str) -> Result<Plan, PlanLoadError> {
    let err = |reason: String| PlanLoadError::Device {
        device: device.to_string(),
        reason,
    };
    let mut file = File::open(device).map_err(|e| err(format!("cannot open: {e}")))?;
    let header_len = PLAN_BLOCK_MAGIC.len() + 4;
    let mut block = vec![0u8; PLAN_BLOCK_ALIGN];
    file.read_exact(&mut block[..header_len])
        .map_err(|e| err(format!("cannot read the header: {e}")))?;
    let len_bytes: [u8; 4] = block[PLAN_BLOCK_MAGIC.len()..header_len]
        .try_into()
        .map_err(|_| err("short header".into()))?;
    let json_len = u32::from_le_bytes(len_bytes) as usize;
    if &block[..PLAN_BLOCK_MAGIC.len()] == PLAN_BLOCK_MAGIC && json_len <= MAX_PLAN_BYTES {
        block.resize(header_len + json_len, 0);
        file.read_exact(&mut block[header_len..])
            .map_err(|e| err(format!("cannot read {json_len} bytes of plan: {e}")))?;
    } else {
        block.truncate(header_len);
    }
    decode_plan_block(&block).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_device_is_read_like_a_block_device() {
        use sandbox_protocol::{encode_plan_block, Mode};
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new(Mode::Vm, vec!["sh".into(), "-c".into(), "echo 'x  y'".into()]);
        let dev = dir.path().join("vdb");
        let mut block = encode_plan_block(&plan);
        block.resize(1 << 20, 0); // a device larger than the plan
        std::fs::write(&dev, &block).unwrap();
        assert_eq!(read_plan_device(dev.to_str().unwrap()).unwrap(), plan);
        std::fs::write(&dev, vec![0u8; 4096]).unwrap();
        let err = read_plan_device(dev.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a sandbox plan") && err.contains("vdb"), "{err}");
        let err = read_plan_device("/nonexistent/vdz").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vdz"), "{err}");
    }

    #[test]
    fn env_plan_errors_name_the_value() {
        let err = read_env_plan("fd:1").unwrap_err().to_string();
        assert!(err.contains("SANDBOX_PLAN=fd:1"), "{err}");
        let err = read_env_plan("fd:x").unwrap_err().to_string();
        assert!(err.contains("fd:N"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("plan.json");
        std::fs::write(&bad, "{}").unwrap();
        let err = read_env_plan(bad.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not valid plan JSON"), "{err}");
    }

    #[test]
    fn cmdline_key_is_found_among_other_words() {
        let line = "console=ttyS0 reboot=k sandbox.plan=/dev/vdb quiet -- init\n";
        assert_eq!(cmdline_plan_device(line), Some("/dev/vdb".into()));
        assert_eq!(cmdline_plan_device("console=ttyS0 sandbox.planx=/dev/vdb"), None);
        assert_eq!(cmdline_plan_device("sandbox.plan="), None);
    }
}
