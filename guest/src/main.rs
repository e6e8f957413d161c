//! `sandbox-guest`: PID 1 of every sandbox and the workload suite.
fn main() {
    eprintln!("sandbox-guest: not built yet");
    std::process::exit(2);
}
