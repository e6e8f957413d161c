//! `cpu`: fixed integer work in chunks until the requested time has passed.

use super::args::{round3, Flags};
use super::WorkloadError;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

/// Rounds of 64-bit mixing per op.
const ROUNDS_PER_OP: u64 = 4096;
/// Ops between two clock reads.
const OPS_PER_CHECK: u64 = 16;

/// One op: [`ROUNDS_PER_OP`] rounds of the splitmix64 finalizer over a running state.
fn op(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..ROUNDS_PER_OP {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x = black_box(z ^ (z >> 31));
    }
    x
}

/// Runs `cpu [--seconds S]`.
pub fn run(flags: &Flags) -> Result<Value, WorkloadError> {
    let seconds = flags.seconds(1.0)?;
    super::args::progress("cpu", seconds, "integer mixing on one core");
    let start = Instant::now();
    let mut ops = 0u64;
    let mut state = 1u64;
    let elapsed = loop {
        for _ in 0..OPS_PER_CHECK {
            state = op(black_box(state));
        }
        ops += OPS_PER_CHECK;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds {
            break elapsed;
        }
    };
    black_box(state);
    Ok(json!({
        "workload": "cpu",
        "seconds": round3(elapsed),
        "ops": ops,
        "ops_per_second": round3(ops as f64 / elapsed),
        "op": format!("{ROUNDS_PER_OP} rounds of 64-bit splitmix64 mixing on one core"),
    }))
}
