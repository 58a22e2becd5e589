//! arbor-sim as a user's own test suite would use it: their tree, their faults, their own
//! ordering property checked beside the built-in checkers over seeds from the environment
//! (`ARBOR_SIM_TEST_SEED`, `ARBOR_SIM_TEST_NUM`, `ARBOR_SIM_TEST_CHECK_DETERMINISM`), and a
//! deliberately wrong property that the sweep catches, shrinks to a plan file, and that the file
//! replays. Nothing here uses more than the crate's root exports.

use std::time::Duration;

use arbor_core::reaper::Signal;
use arbor_sim::{
    Action, Check, Fault, Plan, PlanError, Scenario, Scenarios, Seeds, Sim, Trace, Violation, What,
};

/// Our service: a root with two workers, the first with a helper below it. Work arrives at
/// both workers; the helper freezes (SIGSTOP) at some point; the second worker ignores SIGTERM.
static OUR_SERVICE: Scenario = Scenario::new(
    "our-service",
    "two workers, one with a helper that freezes, one that ignores SIGTERM",
    |rng, plan| {
        plan.parents = vec![0, 1, 0];
        for worker in [1, 3] {
            let at = Duration::from_millis(rng.range(1, 10));
            plan.actions.push((at, Action::Chain { from: 0, to: worker, count: rng.range(1, 20) as u32 }));
            plan.actions.push((at, Action::Print { proc: worker, lines: 5, newline: true }));
        }
        plan.actions.push((
            Duration::from_millis(2),
            Action::Call { from: 1, to: 2, function: "work".into(), reply: true },
        ));
        plan.faults.push((Duration::ZERO, Fault::IgnoreSigterm(3)));
        plan.faults.push((Duration::from_millis(rng.range(1, 40)), Fault::Freeze(2)));
        plan.actions.sort_by_key(|a| a.0);
    },
);

/// Our ordering property: no process ends before any of its children (a parent that has gone
/// leaves nobody to reap them).
fn children_end_first(plan: &Plan, trace: &Trace) -> Vec<Violation> {
    let death = |p: usize| trace.events.iter().find(|e| e.proc == p && matches!(e.what, What::Died(_)));
    (1..plan.procs())
        .filter_map(|child| {
            let parent = plan.parent(child)?;
            let (c, p) = (death(child)?, death(parent)?);
            (c.at > p.at).then(|| {
                Violation::new("children-end-first", format!("p{child} outlived its parent p{parent}"))
                    .at(child, c.at)
            })
        })
        .collect()
}

/// A property that does not hold, on purpose: "nothing ever needs SIGKILL". The frozen helper
/// and the SIGTERM-ignoring worker both do.
fn never_sigkilled(_: &Plan, trace: &Trace) -> Vec<Violation> {
    trace
        .events
        .iter()
        .filter(|e| matches!(e.what, What::Signalled(Signal::Kill)))
        .map(|e| Violation::new("never-sigkilled", "needed SIGKILL").at(e.proc, e.at))
        .collect()
}

fn our_sim() -> Sim {
    Sim::new().check(("children-end-first", children_end_first))
}

#[test]
fn our_ordering_property_holds_over_the_environments_seeds() {
    // `ARBOR_SIM_TEST_NUM=2000 cargo test` hunts longer; `ARBOR_SIM_TEST_SEED=7 ARBOR_SIM_TEST_NUM=1`
    // replays one seed.
    our_sim().test(&OUR_SERVICE, 30);
    // Beside the built-in scenarios too.
    for s in Scenarios::builtin().iter() {
        our_sim().test(s, 3);
    }
}

#[test]
fn a_broken_property_is_caught_shrunk_and_replayed_from_its_file() {
    let dir = std::env::temp_dir().join(format!("arbor-sim-user-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Repro files go where ARBOR_SIM_REPRO_DIR says, unless the Sim names a folder.
    let sim = our_sim().check(("never-sigkilled", never_sigkilled)).repro_dir(&dir);
    let failure = sim.sweep(&OUR_SERVICE, Seeds::new(20)).expect_err("the wrong property is caught");
    let arbor_sim::Failure::Violated { seed, violations, shrunk, repro, .. } = &failure else {
        panic!("{failure}");
    };
    assert!(violations.iter().any(|v| v.checker == "never-sigkilled"), "{violations:?}");
    assert!(violations.iter().all(|v| v.checker == "never-sigkilled"), "only ours broke: {violations:?}");
    let original = OUR_SERVICE.plan(*seed);
    assert!(
        shrunk.actions.len() < original.actions.len() || shrunk.procs() < original.procs(),
        "shrinking made no progress:\n{}",
        shrunk.to_text()
    );
    let message = failure.to_string();
    assert!(message.contains("ARBOR_SIM_TEST_SEED="), "{message}");
    // The stock binary has none of our checks, so the message does not offer it for the replay.
    assert!(!message.contains("arbor-sim replay"), "{message}");
    assert!(message.contains("with your checks: sim.run(&Plan::from_text("), "{message}");

    // The file replays the failure.
    let path = repro.as_ref().expect("the repro file was written");
    let text = std::fs::read_to_string(path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let replayed = Plan::from_text(&text).unwrap();
    assert_eq!(&replayed, &**shrunk);
    let report = sim.run(&replayed).unwrap();
    assert!(report.violations.iter().any(|v| v.checker == "never-sigkilled"), "{:?}", report.violations);
    // The built-in checkers and our real property still pass it: only the wrong one fails.
    assert!(our_sim().run(&replayed).unwrap().passed());
}

#[test]
fn a_plan_calling_a_process_that_does_not_exist_is_an_error_not_a_pass() {
    let mut plan = Plan::manual(vec![0]);
    plan.shutdown_at = Duration::from_millis(20);
    plan.actions.push((
        Duration::from_millis(1),
        Action::Call { from: 0, to: 5, function: "echo".into(), reply: true },
    ));
    assert_eq!(plan.validate(), Err(PlanError::NoSuchProcess { what: "call", proc: 5, procs: 2 }));
    assert_eq!(
        Sim::new().run(&plan).unwrap_err(),
        PlanError::NoSuchProcess { what: "call", proc: 5, procs: 2 }
    );
    // The plain runner does not pass it either.
    let report = arbor_sim::run::run(&plan);
    assert!(!report.passed());
    assert_eq!(report.violations[0].checker, "plan");
}

#[test]
fn our_check_is_named_beside_the_built_in_ones() {
    let names: Vec<&str> = our_sim().check_names().collect();
    assert_eq!(names.last(), Some(&"children-end-first"));
    assert!(names.contains(&"shutdown-ordering"));
    let check = ("children-end-first", children_end_first);
    assert_eq!(check.name(), "children-end-first");
}
