//! Property tests of the node over random trees and random sequences of calls, shutdown
//! requests, broken links, dying and frozen processes, output and time (docs/shutdown.md).
//!
//! Whatever happens: no node panics; every node closes its call channel before it sends
//! SHUTDOWN to any child and starts no call after; every call a surviving node made is resolved
//! exactly once; and once the root has shut down and its grace period plus escalation has passed,
//! every process is gone.

use std::collections::BTreeSet;
use std::time::Duration;

use arbor_core::call::CallId;
use arbor_core::handle::Handle;
use arbor_core::node::{Diagnostic, NodeConfig, Output};
use arbor_core::reaper::ExitStatus;
use arbor_tests::harness::{Harness, PARENT_STREAM};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Call { from: usize, to: usize, function: &'static str },
    CallNoReply { from: usize, to: usize, function: &'static str },
    Shutdown(usize),
    Force(usize),
    CutParentLink(usize),
    Kill(usize),
    Freeze(usize),
    IgnoreSigterm(usize),
    Print { proc: usize, lines: usize, newline: bool },
    Advance(u64),
}

fn function() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["echo", "sleep", "hang", "fail", "nope"])
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0usize..8;
    prop_oneof![
        6 => (p.clone(), p.clone(), function()).prop_map(|(from, to, function)| Op::Call { from, to, function }),
        2 => (p.clone(), p.clone(), function()).prop_map(|(from, to, function)| Op::CallNoReply { from, to, function }),
        2 => p.clone().prop_map(Op::Shutdown),
        1 => p.clone().prop_map(Op::Force),
        1 => p.clone().prop_map(Op::CutParentLink),
        1 => p.clone().prop_map(Op::Kill),
        1 => p.clone().prop_map(Op::Freeze),
        1 => p.clone().prop_map(Op::IgnoreSigterm),
        2 => (p, 0usize..50, any::<bool>()).prop_map(|(proc, lines, newline)| Op::Print { proc, lines, newline }),
        3 => (0u64..7000).prop_map(Op::Advance),
    ]
}

/// `parents[i]` is the parent of process `i + 1` among processes `0..=i`.
fn tree() -> impl Strategy<Value = Vec<usize>> {
    (0usize..8).prop_flat_map(|n| (0..n).map(|i| 0..=i).collect::<Vec<_>>())
}

fn is_shutdown_frame(o: &Output) -> bool {
    matches!(o, Output::Transmit { frame, .. } if frame.header()[14..18] == Handle::SHUTDOWN.0.to_be_bytes())
}

fn run(parents: &[usize], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::default();
    for &parent in parents {
        h.spawn(parent);
    }
    let n = h.procs.len();
    let mut issued: Vec<BTreeSet<CallId>> = vec![BTreeSet::new(); n];
    for op in ops {
        match *op {
            Op::Call { from, to, function } if from < n && to < n && h.procs[from].alive => {
                if let Ok(c) = h.call(from, to, function, b"args") {
                    issued[from].insert(c);
                }
            }
            Op::CallNoReply { from, to, function } if from < n && to < n && h.procs[from].alive => {
                let _ = h.call_no_reply(from, to, function);
            }
            Op::Shutdown(p) if p < n && h.procs[p].alive => h.shutdown(p),
            Op::Force(p) if p < n && h.procs[p].alive => h.force_shutdown(p),
            Op::CutParentLink(p) if p > 0 && p < n => h.cut(p, PARENT_STREAM),
            Op::Kill(p) if p < n => h.die(p, ExitStatus::Signaled(9)),
            Op::Freeze(p) if p > 0 && p < n => h.procs[p].frozen = true,
            Op::IgnoreSigterm(p) if p < n => h.procs[p].ignores_sigterm = true,
            Op::Print { proc, lines, newline } if proc > 0 && proc < n => {
                for i in 0..lines {
                    let _ = h.print(proc, format!("line {i}{}", if newline { "\n" } else { "" }).as_bytes());
                }
            }
            Op::Advance(ms) => h.advance(Duration::from_millis(ms)),
            _ => {}
        }
        h.settle();
    }

    // The liveness phase: the root shuts down and the bound passes.
    let esc = NodeConfig::root().escalation;
    let start = h.now;
    h.shutdown(0);
    let bound = start + arbor_core::node::DEFAULT_GRACE + esc.total();
    h.run_until(bound);
    let gone: Vec<bool> = h.procs.iter().map(|p| !p.alive).collect();
    prop_assert!(gone.iter().all(|g| *g), "alive at the bound: {:?}", gone);

    // The harness reports every exit, so a child given up on means escalation failed to end it.
    let abandoned =
        h.trace.iter().any(|t| matches!(t.output, Output::Diagnostic(Diagnostic::ChildAbandoned(_))));
    prop_assert!(!abandoned, "a child outlived SIGKILL");

    for (p, issued) in issued.iter().enumerate() {
        let outs = h.outputs_of(p);
        // Ordering: the channel closes before any SHUTDOWN leaves, and no call starts after.
        let closed = outs.iter().position(|o| matches!(o, Output::CallsClosed));
        if let Some(first_shutdown) = outs.iter().position(|o| is_shutdown_frame(o)) {
            prop_assert!(
                closed.is_some_and(|c| c < first_shutdown),
                "process {}: SHUTDOWN before channel closed",
                p
            );
        }
        if let Some(c) = closed {
            prop_assert!(
                !outs[c..].iter().any(|o| matches!(o, Output::RunCall { .. })),
                "process {}: RunCall after close",
                p
            );
            prop_assert_eq!(outs.iter().filter(|o| matches!(o, Output::CallsClosed)).count(), 1);
        }
        // Nothing after Exit.
        if let Some(e) = outs.iter().position(|o| matches!(o, Output::Exit { .. })) {
            prop_assert_eq!(e, outs.len() - 1, "process {} produced output after Exit", p);
            // A node that finished on its own resolved every call it made, exactly once (the
            // harness panics on a second resolution).
            let resolved: BTreeSet<CallId> = outs
                .iter()
                .filter_map(|o| match o {
                    Output::CallReturned { call, .. } => Some(*call),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(&resolved, issued, "process {}", p);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn shutdown_is_ordered_calls_resolve_once_and_the_tree_is_gone_within_the_bound(
        parents in tree(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        run(&parents, &ops)?;
    }
}
