//! `syscall`: the cost of entering the kernel — raw `getpid` and 64-byte writes to /dev/null.

use super::args::{round3, Flags};
use super::WorkloadError;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

/// Calls between two clock reads.
const BATCH: u64 = 1000;

fn getpid_raw() -> libc::c_long {
    // SAFETY: SYS_getpid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) }
}

/// Calls `call` in batches until `budget` has passed; returns (calls, seconds).
fn timed(
    budget: Duration,
    mut call: impl FnMut() -> Result<(), WorkloadError>,
) -> Result<(u64, f64), WorkloadError> {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..BATCH {
            call()?;
        }
        calls += BATCH;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok((calls, elapsed.as_secs_f64()));
        }
    }
}

fn phase(calls: u64, seconds: f64) -> Value {
    json!({
        "calls": calls,
        "seconds": round3(seconds),
        "calls_per_second": round3(calls as f64 / seconds),
        "ns_per_call": round3(seconds * 1e9 / calls as f64),
    })
}

/// Runs `syscall [--seconds S]`.
pub fn run(flags: &Flags) -> Result<Value, WorkloadError> {
    let seconds = flags.seconds(1.0)?;
    super::args::progress("syscall", seconds, "getpid, then 64-byte writes to /dev/null");
    let half = Duration::from_secs_f64(seconds / 2.0);
    let (getpid_calls, getpid_s) = timed(half, || {
        std::hint::black_box(getpid_raw());
        Ok(())
    })?;
    let mut null = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| WorkloadError::Failed(format!("cannot open /dev/null for writing: {e}")))?;
    let buf = [0x5au8; 64];
    let (write_calls, write_s) = timed(half, || {
        null.write(&buf)
            .map(drop)
            .map_err(|e| WorkloadError::Failed(format!("write to /dev/null failed: {e}")))
    })?;
    Ok(json!({
        "workload": "syscall",
        "seconds": round3(getpid_s + write_s),
        "getpid": phase(getpid_calls, getpid_s),
        "write_64_bytes_dev_null": phase(write_calls, write_s),
    }))
}
