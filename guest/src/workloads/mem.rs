//! `mem`: allocate memory and write every page of it, keeping all of it allocated meanwhile (so a
//! memory limit below the size ends the process, as an OOM test expects).

use super::args::{round3, Flags};
use super::WorkloadError;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// Runs `mem --mib N`.
pub fn run(flags: &Flags) -> Result<Value, WorkloadError> {
    let mib = flags.positive("mib", None)?;
    let bytes = usize::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul(MIB))
        .ok_or_else(|| flags.bad("mib", &mib.to_string(), "a size this machine can address"))?;
    let start = Instant::now();
    let mut block: Vec<u8> = Vec::new();
    block.try_reserve_exact(bytes).map_err(|e| {
        WorkloadError::Failed(format!("cannot allocate {mib} MiB: {e}: ask for less with --mib"))
    })?;
    // Writing one byte per page makes the kernel back every page; the allocation is only
    // released when `block` drops, after all pages were touched.
    let spare = block.spare_capacity_mut();
    let mut pages = 0u64;
    for (i, byte) in spare.iter_mut().step_by(PAGE).enumerate() {
        byte.write(i as u8);
        pages += 1;
    }
    black_box(&mut block);
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    drop(block);
    Ok(json!({
        "workload": "mem",
        "mib": mib,
        "pages_touched": pages,
        "page_bytes": PAGE,
        "seconds": round3(seconds),
        "mib_per_second": round3(mib as f64 / seconds),
    }))
}
