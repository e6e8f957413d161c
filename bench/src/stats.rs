//! Summary statistics of one measured series: min, median, p95, mean, standard deviation.

use serde::{Deserialize, Serialize};

/// The statistics the report shows for every series (warm-up runs never reach here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for a single sample.
    pub stddev: f64,
}

impl Stats {
    /// The statistics of `samples`; `None` when there are none (or any is not finite).
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            sorted.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(Stats {
            n,
            min: sorted[0],
            median: percentile(&sorted, 0.5),
            p95: percentile(&sorted, 0.95),
            max: sorted[n - 1],
            mean,
            stddev: var.sqrt(),
        })
    }
}

/// Linear interpolation between closest ranks of an ascending slice (not empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_series() {
        let s = Stats::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.median, 3.0);
        assert!((s.p95 - 4.8).abs() < 1e-9);
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert!((s.stddev - 2.5f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn median_of_even_count_interpolates() {
        assert_eq!(Stats::of(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
    }

    #[test]
    fn single_sample_has_zero_stddev_and_empty_has_none() {
        let s = Stats::of(&[7.0]).unwrap();
        assert_eq!((s.min, s.median, s.p95, s.stddev), (7.0, 7.0, 7.0, 0.0));
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
    }
}
