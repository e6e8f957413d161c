//! What every workload shares: `--flag VALUE` parsing and the one-line JSON result.

use super::WorkloadError;
use serde_json::Value;
use std::io::Write;

/// The `--name value` (or `--name=value`) flags given to one workload.
#[derive(Debug)]
pub struct Flags {
    workload: String,
    values: Vec<(String, String)>,
}

impl Flags {
    /// Parses `args`, accepting only the flag names in `allowed`, each with one value.
    pub fn parse(workload: &str, args: &[String], allowed: &[&str]) -> Result<Flags, WorkloadError> {
        let mut values: Vec<(String, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(WorkloadError::Usage(format!(
                    "{workload}: unexpected argument {arg:?}"
                )));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| WorkloadError::Usage(format!("{workload}: --{flag} needs a value")))?;
                    (flag.to_string(), v.clone())
                }
            };
            if !allowed.contains(&name.as_str()) {
                return Err(WorkloadError::Usage(format!("{workload}: unknown flag --{name}")));
            }
            if values.iter().any(|(n, _)| *n == name) {
                return Err(WorkloadError::Usage(format!("{workload}: --{name} given twice")));
            }
            values.push((name, value));
        }
        Ok(Flags {
            workload: workload.to_string(),
            values,
        })
    }

    /// The raw value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `--name`, required.
    pub fn required(&self, name: &str) -> Result<&str, WorkloadError> {
        self.get(name)
            .ok_or_else(|| WorkloadError::Usage(format!("{}: --{name} is required", self.workload)))
    }

    /// A duration in seconds (fractions allowed), positive and finite; `default` when absent.
    pub fn seconds(&self, default: f64) -> Result<f64, WorkloadError> {
        match self.get("seconds") {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
                _ => Err(self.bad("seconds", v, "a positive number of seconds up to 86400, e.g. 0.5")),
            },
        }
    }

    /// A positive whole number for `--name`; `default` when absent (`None`: required).
    pub fn positive(&self, name: &str, default: Option<u64>) -> Result<u64, WorkloadError> {
        let v = match (self.get(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => return Ok(d),
            (None, None) => self.required(name)?,
        };
        match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.bad(name, v, "a positive whole number")),
        }
    }

    /// A usage error for a bad value.
    pub fn bad(&self, name: &str, value: &str, expected: &str) -> WorkloadError {
        WorkloadError::Usage(format!("{}: --{name} {value:?} is not {expected}", self.workload))
    }
}

/// Prints `value` as one JSON line on stdout and flushes it.
pub fn emit(value: &Value) -> Result<(), WorkloadError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|e| WorkloadError::Failed(format!("cannot write the result to stdout: {e}")))
}

/// Says on stderr what a workload of `seconds` is about to do, when it runs a second or more
/// (stdout carries only the result line).
pub fn progress(workload: &str, seconds: f64, what: &str) {
    if seconds >= 1.0 {
        eprintln!("sandbox-guest {workload}: {what} for {seconds} s");
    }
}

/// Rounds a rate or duration to 3 decimals so results stay readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
