//! proptest strategies for trees, scripts and fault plans (the `proptest` feature), so a user's
//! property tests generate the same kinds of runs this crate's own do.
//!
//! ```
//! use proptest::prelude::*;
//! proptest!(ProptestConfig::with_cases(4), |(plan in arbor_sim::strategy::plan())| {
//!     let report = arbor_sim::Sim::new().run(&plan).unwrap();
//!     prop_assert!(report.passed(), "{}", plan.to_text());
//! });
//! ```

use std::time::Duration;

use proptest::prelude::*;

use crate::plan::{Action, Fault, Mutation, Net, Plan, ProcId};

/// A tree of 2 to `max_procs` processes, as [`Plan::parents`] (every parent before its child).
pub fn tree(max_procs: usize) -> impl Strategy<Value = Vec<ProcId>> {
    (1usize..max_procs.max(2)).prop_flat_map(|n| (0..n).map(|i| 0..=i).collect::<Vec<_>>())
}

fn ms(max: u64) -> impl Strategy<Value = Duration> {
    (0..max).prop_map(Duration::from_millis)
}

/// One scripted action among `procs` processes within the first 80 ms: calls of every kind
/// (`echo`, `work`, `hang` and an unknown function), calls with deadlines (of `work`, `hang`
/// and the stoppable `park`), chains, output, graceful and forced shutdowns of any process, and
/// one child stopped or killed by its parent.
pub fn action(procs: usize) -> impl Strategy<Value = (Duration, Action)> {
    let p = 0..procs;
    let child = 1..procs.max(2);
    let a = prop_oneof![
        (p.clone(), p.clone(), prop::sample::select(vec!["work", "hang", "park"]), 1u64..30).prop_map(
            |(from, to, f, ms)| Action::CallWithin {
                from,
                to,
                function: f.into(),
                timeout: Duration::from_millis(ms)
            }
        ),
        child.clone().prop_map(|proc| Action::StopChild { proc }),
        child.prop_map(|proc| Action::KillChild { proc }),
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

/// One fault among `procs` processes (at least 2) within the first 120 ms; faults about a
/// parent link are drawn for children only.
pub fn fault(procs: usize) -> impl Strategy<Value = (Duration, Fault)> {
    let any_p = 0..procs;
    let child = 1..procs.max(2);
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

/// A whole plan: a tree of up to 7 processes, up to 10 actions, up to 4 faults, a shutdown
/// between 10 and 150 ms, latency from 10 µs to 3 ms and small or large socket buffers. Every
/// plan it makes [validates](Plan::validate).
pub fn plan() -> impl Strategy<Value = Plan> {
    tree(7).prop_flat_map(|parents| {
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
