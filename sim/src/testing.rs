//! Seed sweeps under `cargo test`, with the seeds taken from the environment.
//!
//! madsim's `MADSIM_TEST_SEED` / `MADSIM_TEST_NUM` / `MADSIM_TEST_CHECK_DETERMINISM` are the
//! model: a test names its scenario and [`Sim::test`] runs it over the seeds the environment
//! asks for, so CI can widen a sweep, and a developer can replay one seed, without editing the
//! test:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ARBOR_SIM_TEST_SEED` | the first seed | 0 |
//! | `ARBOR_SIM_TEST_NUM` | how many seeds from there | the test's own |
//! | `ARBOR_SIM_TEST_CHECK_DETERMINISM` | run every seed twice and compare trace hashes (`1`/`true`) | off |
//! | `ARBOR_SIM_REPRO_DIR` | where a failure's shrunk plan file is written | the system's temp dir |
//!
//! Unlike madsim, the first seed does not default to the clock: a test that passed in CI passes
//! again on the same commit, and a wider hunt is asked for explicitly. A failure is shrunk with
//! every check the [`Sim`] carries (the user's too) and written as a plan file that
//! `arbor-sim replay FILE` (or [`Plan::from_text`]) reruns.

use std::fmt;
use std::path::PathBuf;

use crate::check::Violation;
use crate::plan::{Plan, PlanError};
use crate::run::Sim;
use crate::scenario::Scenario;

/// The seeds to run: `start..start + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// The first seed.
    pub start: u64,
    /// How many.
    pub count: u64,
    /// Run every seed twice and compare the trace hashes.
    pub check_determinism: bool,
}

/// An environment variable that is set but cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {why}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub why: &'static str,
}

impl Seeds {
    /// `count` seeds from 0, determinism not checked.
    pub fn new(count: u64) -> Seeds {
        Seeds { start: 0, count, check_determinism: false }
    }

    /// These seeds with the environment's overrides (see the module docs); `count` is the
    /// default for `ARBOR_SIM_TEST_NUM`. Zero seeds is an error: a sweep that runs nothing must
    /// not pass.
    pub fn from_env(count: u64) -> Result<Seeds, EnvError> {
        Seeds::from_lookup(count, |name| std::env::var(name).ok())
    }

    /// [`Seeds::from_env`] over any lookup (testable without touching the process environment).
    pub fn from_lookup(count: u64, get: impl Fn(&str) -> Option<String>) -> Result<Seeds, EnvError> {
        let number = |name: &'static str, default: u64| -> Result<u64, EnvError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| EnvError { name, value: v, why: "not a number" }),
            }
        };
        let start = number("ARBOR_SIM_TEST_SEED", 0)?;
        let count = number("ARBOR_SIM_TEST_NUM", count)?;
        if count == 0 {
            return Err(EnvError {
                name: "ARBOR_SIM_TEST_NUM",
                value: "0".into(),
                why: "zero seeds would run nothing",
            });
        }
        if start.checked_add(count).is_none() {
            return Err(EnvError {
                name: "ARBOR_SIM_TEST_SEED",
                value: start.to_string(),
                why: "the seeds would run past the last one, u64::MAX",
            });
        }
        let check_determinism = match get("ARBOR_SIM_TEST_CHECK_DETERMINISM").as_deref().map(str::trim) {
            None | Some("" | "0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(EnvError {
                    name: "ARBOR_SIM_TEST_CHECK_DETERMINISM",
                    value: other.into(),
                    why: "expected 1, true, 0 or false",
                })
            }
        };
        Ok(Seeds { start, count, check_determinism })
    }

    fn iter(&self) -> std::ops::Range<u64> {
        self.start..self.start.saturating_add(self.count)
    }
}

/// Why a sweep failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A run broke a property; the plan was shrunk and written to `repro`.
    #[error("{}", violated(.scenario, .seed, .violations, .repro))]
    Violated {
        /// The scenario.
        scenario: String,
        /// The seed.
        seed: u64,
        /// What the (unshrunk) run broke.
        violations: Vec<Violation>,
        /// The shrunk plan that still breaks one of them.
        shrunk: Box<Plan>,
        /// Where it was written, if that worked.
        repro: Option<PathBuf>,
    },
    /// Two runs of one plan gave different traces.
    #[error("{scenario} seed {seed} is not deterministic: trace hashes {first:016x} and {second:016x}")]
    NotDeterministic {
        /// The scenario.
        scenario: String,
        /// The seed.
        seed: u64,
        /// The first run's hash.
        first: u64,
        /// The second's.
        second: u64,
    },
    /// The scenario made a plan that cannot run.
    #[error("{scenario} seed {seed} made an invalid plan: {error}")]
    InvalidPlan {
        /// The scenario.
        scenario: String,
        /// The seed.
        seed: u64,
        /// Why it is invalid.
        error: PlanError,
    },
    /// The environment asked for something unreadable.
    #[error(transparent)]
    Env(#[from] EnvError),
}

fn violated(scenario: &str, seed: &u64, violations: &[Violation], repro: &Option<PathBuf>) -> String {
    let mut s = format!("{scenario} seed {seed} broke {} properties:\n", violations.len());
    for v in violations {
        s.push_str(&format!("  {v}\n"));
    }
    // The stock `arbor-sim` binary judges by the built-in checks only: a plan that breaks only
    // one of the user's would pass there, so it is not offered as the way to replay one.
    let own = violations.iter().any(|v| !crate::check::CHECKERS.contains(&v.checker));
    match repro {
        Some(path) if own => s.push_str(&format!(
            "shrunk repro written to {p}\nreplay, with your checks: sim.run(&Plan::from_text(&std::fs::read_to_string({p:?})?)?)\n   or: ARBOR_SIM_TEST_SEED={seed} ARBOR_SIM_TEST_NUM=1 cargo test",
            p = path.display()
        )),
        Some(path) => s.push_str(&format!(
            "shrunk repro written to {p}\nreplay: arbor-sim replay {p} --timeline\n   or: ARBOR_SIM_TEST_SEED={seed} ARBOR_SIM_TEST_NUM=1 cargo test",
            p = path.display()
        )),
        None => s.push_str(&format!("replay: ARBOR_SIM_TEST_SEED={seed} ARBOR_SIM_TEST_NUM=1 cargo test")),
    }
    s
}

/// Writes `text` to a file of its own in `dir`, `STEM.plan`, or `STEM-2.plan`, `STEM-3.plan`, ...
/// when that name holds another plan: tests running at once (threads of one `cargo test`) may
/// fail on the same scenario and seed, each with its own checks, and each message must name its
/// own plan. A file that already holds this very plan is reused.
fn write_new(dir: &std::path::Path, stem: &str, text: &str) -> Option<PathBuf> {
    use std::io::Write as _;
    for n in 1..1000 {
        let name = if n == 1 { format!("{stem}.plan") } else { format!("{stem}-{n}.plan") };
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return f.write_all(text.as_bytes()).ok().map(|()| path),
            // The same plan already there (this failure, seen on an earlier run) is this one's.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
                    return Some(path);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

impl fmt::Display for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seeds {}..{}", self.start, self.start.saturating_add(self.count))
    }
}

impl Sim {
    /// Runs `scenario` over `seeds`; stops at the first failure, shrinks it (at most 500 runs)
    /// and writes the shrunk plan to [`Sim::repro_dir`], `ARBOR_SIM_REPRO_DIR` or the temp dir as
    /// `repro-SCENARIO-SEED.plan` (or `repro-SCENARIO-SEED-N.plan` if that file exists: an
    /// earlier or concurrent failure's is never overwritten). Returns how many seeds ran.
    pub fn sweep(&self, scenario: &Scenario, seeds: Seeds) -> Result<u64, Failure> {
        let mut ran = 0;
        for seed in seeds.iter() {
            let plan = scenario.plan(seed);
            let invalid = |error| Failure::InvalidPlan { scenario: scenario.name.into(), seed, error };
            let report = self.run(&plan).map_err(invalid)?;
            ran += 1;
            if !report.passed() {
                let (shrunk, _) = self.shrink(&plan, 500).map_err(invalid)?;
                let dir = self.repro_dir.clone().unwrap_or_else(|| {
                    std::env::var_os("ARBOR_SIM_REPRO_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
                });
                let repro = write_new(&dir, &format!("repro-{}-{seed}", scenario.name), &shrunk.to_text());
                return Err(Failure::Violated {
                    scenario: scenario.name.into(),
                    seed,
                    violations: report.violations,
                    shrunk: Box::new(shrunk),
                    repro,
                });
            }
            if seeds.check_determinism {
                let again = self.run(&plan).map_err(invalid)?;
                if again.hash != report.hash {
                    return Err(Failure::NotDeterministic {
                        scenario: scenario.name.into(),
                        seed,
                        first: report.hash,
                        second: again.hash,
                    });
                }
            }
        }
        Ok(ran)
    }

    /// For `#[test]` functions: [`Sim::sweep`] over the environment's seeds (`default_count`
    /// of them unless `ARBOR_SIM_TEST_NUM` says otherwise), panicking with the failure, its
    /// repro file and the command that replays it.
    ///
    /// ```
    /// arbor_sim::Sim::new().test(arbor_sim::scenario::find("s1-one-child").unwrap(), 5);
    /// ```
    #[track_caller]
    pub fn test(&self, scenario: &Scenario, default_count: u64) {
        let result =
            Seeds::from_env(default_count).map_err(Failure::from).and_then(|s| self.sweep(scenario, s));
        if let Err(failure) = result {
            panic!("{failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_environment_picks_the_seeds() {
        assert_eq!(Seeds::from_lookup(20, env(&[])), Ok(Seeds::new(20)));
        let s = Seeds::from_lookup(
            20,
            env(&[
                ("ARBOR_SIM_TEST_SEED", "7"),
                ("ARBOR_SIM_TEST_NUM", "1"),
                ("ARBOR_SIM_TEST_CHECK_DETERMINISM", "1"),
            ]),
        );
        assert_eq!(s, Ok(Seeds { start: 7, count: 1, check_determinism: true }));
    }

    /// Two failures on one scenario and seed with different plans get a file each; the same
    /// plan again reuses its file.
    #[test]
    fn each_failure_gets_its_own_repro_file() {
        let dir = std::env::temp_dir().join(format!("arbor-sim-write-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = write_new(&dir, "repro-s-1", "plan a\n").unwrap();
        let b = write_new(&dir, "repro-s-1", "plan b\n").unwrap();
        let a_again = write_new(&dir, "repro-s-1", "plan a\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(a, a_again);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "plan a\n");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "plan b\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zero_seeds_and_unreadable_values_are_errors() {
        assert!(Seeds::from_lookup(0, env(&[])).is_err());
        assert!(Seeds::from_lookup(5, env(&[("ARBOR_SIM_TEST_NUM", "0")])).is_err());
        assert!(Seeds::from_lookup(5, env(&[("ARBOR_SIM_TEST_SEED", "seven")])).is_err());
        assert!(Seeds::from_lookup(5, env(&[("ARBOR_SIM_TEST_CHECK_DETERMINISM", "yes")])).is_err());
        // Seeds past the last one would run fewer than asked (none at all from u64::MAX).
        assert!(Seeds::from_lookup(5, env(&[("ARBOR_SIM_TEST_SEED", "18446744073709551615")])).is_err());
        assert!(Seeds::from_lookup(5, env(&[("ARBOR_SIM_TEST_SEED", "18446744073709551610")])).is_ok());
    }
}
