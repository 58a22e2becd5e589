//! What a parent tells the child it spawns, through environment variables (docs/driver.md).
//!
//! The environment is the one channel that exists before the child has run any of our code, and
//! it survives `exec` without any `pre_exec` hook. [`ChildEnv::take`] removes the variables, so a
//! program the child later starts with `std::process::Command` does not mistake itself for an
//! arbor child.

use std::env;
use std::process::Command;
use std::time::Duration;

use arbor_core::ids::ContextId;

/// The child's context id. Its presence is what makes [`crate::init`] take over.
const ID: &str = "ARBOR_CONTEXT_ID";
/// Ancestor ids, nearest first, comma separated.
const ANCESTORS: &str = "ARBOR_ANCESTORS";
/// The pid of the spawning process, to detect a parent that died before PR_SET_PDEATHSIG.
const PARENT_PID: &str = "ARBOR_PARENT_PID";
/// The grace period in milliseconds.
const GRACE_MS: &str = "ARBOR_GRACE_MS";
/// The context's human name.
const NAME: &str = "ARBOR_CONTEXT_NAME";
/// The runtime the parent runs on (`smol`, `tokio`); the child runs on the same.
const RUNTIME: &str = "ARBOR_RUNTIME_NAME";
/// Under the test harness: the hidden test a child is started to run (test_support.rs).
pub(crate) const HARNESS: &str = "ARBOR_TEST_HARNESS";

/// The environment variables arbor sets for every child it spawns and removes in the child's
/// [`crate::init`] before user code runs, so user code never sees them. A
/// [`crate::SpawnOptions::env`] or [`crate::SpawnOptions::env_remove`] naming one is refused
/// with [`crate::SpawnError::ReservedEnv`]. (`ARBOR_RUNTIME`, [`crate::RUNTIME_VAR`], is not
/// among them: only a root reads it.)
pub const RESERVED_ENV: &[&str] = &[ID, ANCESTORS, PARENT_PID, GRACE_MS, NAME, RUNTIME, HARNESS];

/// A child's configuration as its parent handed it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildEnv {
    /// The child's context id.
    pub id: ContextId,
    /// Its ancestors, nearest first.
    pub ancestors: Vec<ContextId>,
    /// The pid of the process that spawned it.
    pub parent_pid: u32,
    /// Its grace period.
    pub grace: Duration,
    /// Its name (empty: the default, `context <id>`).
    pub name: String,
    /// The runtime its parent runs on.
    pub runtime: String,
}

/// A malformed arbor environment variable (a bug or tampering: the child refuses to start).
#[derive(Debug, thiserror::Error)]
#[error("bad value for {var}: {value:?}")]
pub struct BadEnv {
    var: &'static str,
    value: String,
}

impl ChildEnv {
    /// Sets the variables on a command that will start the child.
    pub fn apply(&self, cmd: &mut Command) {
        let ancestors: Vec<String> = self.ancestors.iter().map(|a| a.0.to_string()).collect();
        cmd.env(ID, self.id.0.to_string())
            .env(ANCESTORS, ancestors.join(","))
            .env(PARENT_PID, self.parent_pid.to_string())
            .env(GRACE_MS, grace_ms(self.grace))
            .env(NAME, &self.name)
            .env(RUNTIME, &self.runtime);
    }

    /// Reads and removes the variables: `Ok(None)` in a process that is not an arbor child.
    /// A child whose parent runs under the test harness runs (and spawns) under it too.
    ///
    /// Must run while the process has one thread (at the top of `main`): changing the
    /// environment races with other threads reading it.
    pub fn take() -> Result<Option<ChildEnv>, BadEnv> {
        let Some(id) = env::var_os(ID) else { return Ok(None) };
        let get = |var: &'static str| env::var(var).unwrap_or_default();
        let bad = |var: &'static str| BadEnv { var, value: get(var) };
        let id = id.to_str().and_then(|s| s.parse().ok()).map(ContextId).ok_or_else(|| bad(ID))?;
        let ancestors = get(ANCESTORS)
            .split(',')
            .map(|a| a.parse().map(ContextId))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad(ANCESTORS))?;
        let parent_pid = get(PARENT_PID).parse().map_err(|_| bad(PARENT_PID))?;
        let grace = get(GRACE_MS).parse().map(Duration::from_millis).map_err(|_| bad(GRACE_MS))?;
        let name = get(NAME);
        let runtime = get(RUNTIME);
        if env::var_os(HARNESS).is_some() {
            crate::test_support::adopt();
        }
        for var in RESERVED_ENV {
            env::remove_var(var);
        }
        Ok(Some(ChildEnv { id, ancestors, parent_pid, grace, name, runtime }))
    }
}

/// The grace in whole milliseconds, rounded up (a grace under a millisecond is not "none") and
/// capped at `u64::MAX` ms, which the child reads back (a grace of `Duration::MAX`, "never
/// force", printed as its full 128-bit millisecond count, was refused by every child).
fn grace_ms(grace: Duration) -> String {
    let ms = grace.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every grace a root may be given reaches the child as one it can read, never shorter.
    #[test]
    fn every_grace_is_passed_as_milliseconds_the_child_reads_back() {
        let read = |d: Duration| grace_ms(d).parse::<u64>().map(Duration::from_millis).ok();
        assert_eq!(read(Duration::from_secs(5)), Some(Duration::from_secs(5)));
        assert_eq!(read(Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(read(Duration::from_micros(1500)), Some(Duration::from_millis(2)));
        assert_eq!(read(Duration::from_nanos(1)), Some(Duration::from_millis(1)));
        assert_eq!(read(Duration::MAX), Some(Duration::from_millis(u64::MAX)));
    }
}
