//! Running a plan to completion and judging it.

use std::time::Duration;

use arbor_core::reaper::Escalation;
use arbor_core::time::Instant;

use crate::check::{check, Violation};
use crate::plan::Plan;
use crate::trace::{Trace, What};
use crate::world::{Stats, World};

/// How far past the liveness bound a run is allowed to go before it is stopped: long enough
/// that a liveness failure shows as a late death rather than a missing one.
pub const OVERTIME: Duration = Duration::from_secs(30);

/// The outcome of one run.
#[derive(Debug)]
pub struct Report {
    /// The plan that ran.
    pub plan: Plan,
    /// What happened.
    pub trace: Trace,
    /// The trace hash.
    pub hash: u64,
    /// Broken invariants; empty means the run passed.
    pub violations: Vec<Violation>,
    /// Counters.
    pub stats: Stats,
    /// Virtual time at the end.
    pub end: Instant,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// A summary table: one row per process.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from("proc  context  calls-run  lines-printed  log-lines-at-root  exit\n");
        let procs = self.plan.procs();
        for p in 0..procs {
            let mut id = None;
            let (mut runs, mut printed, mut lines) = (0, 0, 0);
            let mut end = String::from("alive");
            for e in &self.trace.events {
                match &e.what {
                    What::Spawned { id: i, .. } if e.proc == p => id = Some(*i),
                    What::Out(arbor_core::node::Output::RunCall { .. }) if e.proc == p => runs += 1,
                    What::Printed(_) if e.proc == p => printed += 1,
                    What::Out(arbor_core::node::Output::LogLine(l)) if Some(l.context) == id => lines += 1,
                    What::Died(st) if e.proc == p => {
                        end = format!("{st:?} at {:.6}s", e.at.as_nanos() as f64 / 1e9);
                    }
                    _ => {}
                }
            }
            if id.is_none() {
                end = String::from("never born");
            }
            let id = id.map_or("-".to_string(), |i| i.to_string());
            let _ = writeln!(s, "{p:>4}  {id:>7}  {runs:>9}  {printed:>13}  {lines:>17}  {end}");
        }
        s
    }
}

/// Runs `plan` until nothing is left to happen (or well past the liveness bound) and checks it.
pub fn run(plan: &Plan) -> Report {
    let mut world = World::new(plan);
    world.run_until(limit(plan));
    finish(world)
}

/// How long a run of `plan` goes on at most: [`OVERTIME`] past the liveness bound.
pub fn limit(plan: &Plan) -> Instant {
    Instant::ZERO + plan.shutdown_at + plan.net.grace + Escalation::default().total() + OVERTIME
}

/// Checks a finished world.
pub fn finish(world: World) -> Report {
    let end = world.now;
    let stats = world.stats;
    let plan = world.plan().clone();
    let trace = world.trace;
    let violations = check(&plan, &trace);
    Report { hash: trace.hash(), plan, trace, violations, stats, end }
}
