//! The results a round prints, one JSON line per workload, and their statistics.

use serde::{Deserialize, Serialize};

/// One workload's samples from one round of one system.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Line {
    /// `arbor`, `mitogen` or `floor`.
    pub system: String,
    /// The workload's key (the table in report.rs names them).
    pub workload: String,
    /// The samples' unit.
    pub unit: String,
    /// Every sample of the round.
    pub samples: Vec<f64>,
}

/// Prints one result line on stdout, where the orchestrator reads it.
pub fn emit(system: &str, workload: &str, unit: &str, samples: Vec<f64>) {
    let line = Line { system: system.into(), workload: workload.into(), unit: unit.into(), samples };
    match serde_json::to_string(&line) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("cannot encode the results of {workload}: {e}"),
    }
}

/// Median and spread of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub count: usize,
}

impl Stats {
    /// None for no samples.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Stats { median: at(0.5), p10: at(0.1), p90: at(0.9), count: v.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_small_set() {
        let s = Stats::of(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]);
        assert_eq!(s, Some(Stats { median: 3.0, p10: 1.0, p90: 5.0, count: 5 }));
        assert_eq!(Stats::of(&[]), None);
    }
}
