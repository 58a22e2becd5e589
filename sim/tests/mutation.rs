//! The simulator catches a broken core, shrinks the failure to a small plan, and the plan file
//! replays it. The broken core is a test-only mutation that forwards SHUTDOWN to children before
//! closing the call channel (docs/shutdown.md step 1 and 2 swapped).

use arbor_sim::plan::{Mutation, Plan};
use arbor_sim::run::run;
use arbor_sim::scenario::find;
use arbor_sim::shrink::shrink;

fn broken(name: &str, seed: u64) -> Plan {
    let mut plan = find(name).unwrap().plan(seed);
    plan.mutation = Mutation::ShutdownBeforeChannelClose;
    plan
}

#[test]
fn the_ordering_checker_catches_a_core_that_forwards_shutdown_first() {
    let report = run(&broken("s2-grandchild", 1));
    assert!(report.violations.iter().any(|v| v.checker == "shutdown-ordering"), "{:?}", report.violations);
    // The real core passes the same plan.
    assert!(run(&find("s2-grandchild").unwrap().plan(1)).passed());
}

#[test]
fn a_failing_chaos_run_shrinks_to_a_small_repro_that_replays() {
    // A chaos seed with a bigger tree than needed.
    let plan = (0..200)
        .map(|seed| broken("chaos", seed))
        .find(|p| p.procs() >= 5 && !run(p).passed())
        .expect("some chaos run trips over the mutation");
    let (small, runs) = shrink(&plan, 400);
    assert!(runs > 1);
    assert!(small.faults.len() <= plan.faults.len());
    assert!(small.procs() <= plan.procs());
    assert!(
        small.procs() < plan.procs()
            || small.actions.len() < plan.actions.len()
            || small.faults.len() < plan.faults.len(),
        "shrinking made no progress on\n{}",
        plan.to_text()
    );
    // The smallest tree that shows the bug: a root and one child (the root itself sends
    // SHUTDOWN before closing its channel), with nothing else left in the plan.
    assert_eq!(small.procs(), 2, "{}", small.to_text());
    assert!(small.faults.is_empty() && small.actions.is_empty(), "{}", small.to_text());

    let file = std::env::temp_dir().join(format!("arbor-sim-repro-{}.plan", std::process::id()));
    std::fs::write(&file, small.to_text()).unwrap();
    let replayed = Plan::from_text(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&file);
    let report = run(&replayed);
    assert!(report.violations.iter().any(|v| v.checker == "shutdown-ordering"));
}
