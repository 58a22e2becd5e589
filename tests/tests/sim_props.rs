//! Property tests of shutdown ordering that drive the simulator with proptest-generated trees,
//! scripts (calls, output, graceful and forced shutdowns of any node) and fault plans: whatever
//! proptest throws at it, every invariant checker passes — the channel closes before SHUTDOWN
//! goes down, once; every call resolves exactly once; nothing follows Exit; the tree is gone
//! within the root's grace plus escalation (docs/simulator.md lists them all) — and a run
//! replays to the same trace hash.

//! The generators are the simulator's own (`arbor_sim::strategy`, the `proptest` feature), the
//! same a user's property tests get.

use arbor_sim::run::run;
use arbor_sim::strategy::plan;
use proptest::prelude::*;

proptest! {
    // 128 cases per CI run; PROPTEST_CASES asks for more (a longer hunt, e.g. before a release).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn every_generated_tree_and_fault_plan_keeps_every_invariant(plan in plan()) {
        let report = run(&plan);
        prop_assert!(report.passed(), "{}\n{}", plan.to_text(),
            report.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"));
        prop_assert_eq!(report.hash, run(&plan).hash, "not deterministic");
    }
}
