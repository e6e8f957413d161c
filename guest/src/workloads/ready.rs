//! `ready`: tells the host "the workload has started", over the channel init put in
//! `SANDBOX_READY`: a line on an inherited pipe (container) or the boot/exit device (VM).

use super::WorkloadError;
use crate::init::power;
use sandbox_protocol::{exit_device::Event, ReadyChannel, READY_ENV};
use serde_json::{json, Value};

/// Writes `ready\n` to the inherited file descriptor `fd`.
fn write_fd(fd: i32) -> Result<(), WorkloadError> {
    let line = b"ready\n";
    // SAFETY: write(2) only reads `line.len()` bytes from a live buffer; a descriptor that is not
    // open in this process makes it fail with EBADF, nothing else.
    let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    let why = match n {
        n if n == line.len() as isize => return Ok(()),
        n if n >= 0 => format!("short write ({n} of {} bytes)", line.len()),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EBADF) => {
                format!("{e}: the descriptor is not open in this process (was it inherited?)")
            }
            e => e.to_string(),
        },
    };
    Err(WorkloadError::Failed(format!(
        "cannot write to the ready channel fd:{fd} ({READY_ENV}): {why}"
    )))
}

/// Runs `ready`.
pub fn run() -> Result<Value, WorkloadError> {
    let raw = std::env::var(READY_ENV).map_err(|_| {
        WorkloadError::Usage(format!(
            "{READY_ENV} is not set: `ready` only works under sandbox-guest init, which names the channel"
        ))
    })?;
    let channel: ReadyChannel = raw
        .parse()
        .map_err(|e| WorkloadError::Usage(format!("{READY_ENV}: {e}")))?;
    match channel {
        ReadyChannel::None => {
            return Err(WorkloadError::Usage(format!(
                "{READY_ENV}=none: nobody listens for the ready signal in this sandbox"
            )))
        }
        ReadyChannel::Fd(fd) => write_fd(fd)?,
        ReadyChannel::Port(port) => power::write_port(port, Event::Ready.encode()).map_err(|e| {
            WorkloadError::Failed(format!("cannot signal ready through {READY_ENV}={channel}: {e}"))
        })?,
    }
    Ok(json!({ "workload": "ready", "channel": channel.to_string() }))
}
