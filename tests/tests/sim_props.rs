//! Property tests of shutdown ordering that drive the simulator with proptest-generated trees,
//! scripts (calls, output, graceful and forced shutdowns of any node) and fault plans: whatever
//! proptest throws at it, every invariant checker passes — the channel closes before SHUTDOWN
//! goes down, once; every call resolves exactly once; nothing follows Exit; the tree is gone
//! within the root's grace plus escalation (docs/simulator.md lists them all) — and a run
//! replays to the same trace hash.

use std::time::Duration;

use arbor_sim::plan::{Action, Fault, Mutation, Net, Plan};
use arbor_sim::run::run;
use proptest::prelude::*;

fn tree() -> impl Strategy<Value = Vec<usize>> {
    (1usize..7).prop_flat_map(|n| (0..n).map(|i| 0..=i).collect::<Vec<_>>())
}

fn ms(max: u64) -> impl Strategy<Value = Duration> {
    (0..max).prop_map(Duration::from_millis)
}

fn action(procs: usize) -> impl Strategy<Value = (Duration, Action)> {
    let p = 0..procs;
    let a = prop_oneof![
        (p.clone(), p.clone(), prop::sample::select(vec!["echo", "work", "hang", "nope"]), any::<bool>())
            .prop_map(|(from, to, f, reply)| Action::Call { from, to, function: f.into(), reply }),
        (p.clone(), p.clone(), 1u32..10).prop_map(|(from, to, count)| Action::Chain { from, to, count }),
        (p.clone(), 1u32..50, any::<bool>()).prop_map(|(proc, lines, newline)| Action::Print {
            proc,
            lines,
            newline
        }),
        p.clone().prop_map(|proc| Action::Shutdown { proc }),
        p.prop_map(|proc| Action::Force { proc }),
    ];
    (ms(80), a)
}

fn fault(procs: usize) -> impl Strategy<Value = (Duration, Fault)> {
    let any_p = 0..procs;
    let child = 1..procs;
    let f = prop_oneof![
        any_p.clone().prop_map(Fault::HangCalls),
        any_p.clone().prop_map(Fault::IgnoreSigterm),
        child.clone().prop_map(Fault::Freeze),
        child.clone().prop_map(Fault::Thaw),
        any_p.prop_map(Fault::Kill),
        child.clone().prop_map(Fault::Cut),
        (child.clone(), ms(9000)).prop_map(|(p, d)| Fault::Stall(p, d)),
        child.clone().prop_map(Fault::Fragment),
        (child.clone(), ms(20)).prop_map(|(p, d)| Fault::Delay(p, d)),
        child.clone().prop_map(Fault::Runaway),
        child.clone().prop_map(Fault::Daemon),
        child.prop_map(Fault::Spoof),
    ];
    (ms(120), f)
}

fn plan() -> impl Strategy<Value = Plan> {
    tree().prop_flat_map(|parents| {
        let procs = parents.len() + 1;
        (
            Just(parents),
            prop::collection::vec(action(procs), 0..10),
            prop::collection::vec(fault(procs), 0..4),
            (10u64..150).prop_map(Duration::from_millis),
            (10u64..3000).prop_map(Duration::from_micros),
            prop::sample::select(vec![4096usize, 65_536]),
        )
            .prop_map(|(parents, mut actions, mut faults, shutdown_at, latency, capacity)| {
                actions.sort_by_key(|a| a.0);
                faults.sort();
                Plan {
                    name: "proptest".into(),
                    seed: 0,
                    net: Net { latency, capacity, ..Net::default() },
                    parents,
                    actions,
                    faults,
                    shutdown_at,
                    expect: Vec::new(),
                    mutation: Mutation::None,
                }
            })
    })
}

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
