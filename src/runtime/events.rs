//! `events`: a container's resource figures as runc's stats events
//! (`{"type":"stats","id":..,"data":{"cpu":..,"memory":..,"pids":..}}`): once with --stats,
//! else every --interval until the container stops.

use sandbox_core::{Root, Stats};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one stats event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Between events: `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    pub id: String,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad --interval {s:?}: write a duration such as 5s or 500ms");
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<u64>().map(Duration::from_millis).map_err(|_| bad());
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    secs.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(bad)
}

/// One stats event, in runc's field names.
pub fn event(id: &str, s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": { "total": s.cpu_usage_ns.unwrap_or(0), "kernel": 0, "user": 0 },
                "throttling": {
                    "periods": s.cpu_periods.unwrap_or(0),
                    "throttledPeriods": s.cpu_throttled_periods.unwrap_or(0),
                    "throttledTime": s.cpu_throttled_ns.unwrap_or(0),
                },
            },
            "memory": {
                "usage": {
                    "usage": s.memory_usage_bytes.unwrap_or(0),
                    "max": s.memory_max_usage_bytes.unwrap_or(0),
                    "limit": s.memory_limit_bytes.unwrap_or(0),
                    "failcnt": 0,
                },
            },
            "pids": { "current": s.pids_current.unwrap_or(0), "limit": s.pids_limit.unwrap_or(0) },
        }
    })
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    loop {
        let stats = sandbox_core::oci::stats(root, &args.id)?;
        println!("{}", event(&args.id, &stats));
        if args.stats {
            return Ok(0);
        }
        std::thread::sleep(args.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("soon").is_err());
    }
}
