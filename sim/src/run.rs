//! Running a plan to completion and judging it.

use std::time::Duration;

use arbor_core::reaper::Escalation;
use arbor_core::time::Instant;

use std::sync::Arc;

use crate::check::{check, Check, Violation};
use crate::plan::{Plan, PlanError};
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
    /// The report of a plan that was not run because it is invalid: one `plan` violation.
    pub(crate) fn refused(plan: &Plan, error: &PlanError) -> Report {
        Report {
            plan: plan.clone(),
            trace: Trace::default(),
            hash: 0,
            violations: vec![Violation::new("plan", error.to_string())],
            stats: Stats::default(),
            end: Instant::ZERO,
        }
    }

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

/// Runs `plan` until nothing is left to happen (or well past the liveness bound) and checks it
/// with the built-in checkers. A plan that does not [validate](Plan::validate) is not run: its
/// report carries one `plan` violation saying why, so it cannot pass ([`Sim::run`] returns the
/// error instead).
pub fn run(plan: &Plan) -> Report {
    Sim::new().run(plan).unwrap_or_else(|e| Report::refused(plan, &e))
}

/// The simulator as a user drives it: plans are validated before they run, and every run is
/// judged by the built-in checkers and by the user's own [`Check`]s, which shrinking honours
/// too.
///
/// ```
/// use arbor_sim::{scenario, Sim, Violation};
/// let sim = Sim::new().check(("root-dies-last", |plan: &arbor_sim::Plan, trace: &arbor_sim::Trace| {
///     let died = |p| trace.events.iter().rposition(|e| e.proc == p && matches!(e.what, arbor_sim::What::Died(_)));
///     (1..plan.procs())
///         .filter(|p| died(*p) > died(0))
///         .map(|p| Violation::new("root-dies-last", format!("process {p} outlived the root")))
///         .collect()
/// }));
/// let report = sim.run(&scenario::find("s2-grandchild").unwrap().plan(3)).unwrap();
/// assert!(report.passed(), "{:?}", report.violations);
/// ```
#[derive(Clone, Default)]
pub struct Sim {
    checks: Vec<Arc<dyn Check>>,
    /// Where [`Sim::sweep`] writes a failure's repro file, if not `ARBOR_SIM_REPRO_DIR`.
    pub(crate) repro_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("checks", &self.check_names().collect::<Vec<_>>()).finish()
    }
}

impl Sim {
    /// A simulator with the built-in checkers only.
    pub fn new() -> Sim {
        Sim::default()
    }

    /// Adds a user's check, run after the built-in checkers on every run.
    pub fn check(mut self, check: impl Check + 'static) -> Sim {
        self.checks.push(Arc::new(check));
        self
    }

    /// Makes [`Sim::sweep`] and [`Sim::test`] write repro files into `dir` (instead of
    /// `ARBOR_SIM_REPRO_DIR`, or the temp dir).
    pub fn repro_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Sim {
        self.repro_dir = Some(dir.into());
        self
    }

    /// The names of every check a run is judged by: the built-in ones, then the user's.
    pub fn check_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        crate::check::CHECKERS.iter().copied().chain(self.checks.iter().map(|c| c.name()))
    }

    /// Validates `plan`, runs it until nothing is left to happen (or well past the liveness
    /// bound) and judges it.
    pub fn run(&self, plan: &Plan) -> Result<Report, PlanError> {
        plan.validate()?;
        let mut world = World::new(plan);
        world.run_until(limit(plan));
        let mut report = finish(world);
        for c in &self.checks {
            c.check(&report.plan, &report.trace, &mut report.violations);
        }
        Ok(report)
    }

    /// A smaller plan that still breaks at least one of the properties `plan` breaks (a user's
    /// included), and how many runs it took; `plan` unchanged if it passes.
    pub fn shrink(&self, plan: &Plan, max_runs: usize) -> Result<(Plan, usize), PlanError> {
        plan.validate()?;
        Ok(crate::shrink::shrink_with(self, plan, max_runs))
    }
}

/// How long a run of `plan` goes on at most: [`OVERTIME`] past the liveness bound.
pub fn limit(plan: &Plan) -> Instant {
    Instant::ZERO + plan.shutdown_at + plan.net.grace + Escalation::default().total() + OVERTIME
}

/// Checks a finished world.
pub fn finish(world: World) -> Report {
    let end = world.now;
    let stats = world.stats;
    let (plan, trace) = world.into_plan_and_trace();
    let violations = check(&plan, &trace);
    Report { hash: trace.hash(), plan, trace, violations, stats, end }
}
