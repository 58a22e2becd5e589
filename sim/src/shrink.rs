//! Shrinking a failing plan to a small one that still fails.
//!
//! Greedy and deterministic: try dropping each fault, then each action, then each leaf process
//! (with everything that names it), then pull every time earlier by halves, keeping any change
//! after which the run still breaks one of the invariants the original broke. The result is
//! usually a handful of lines — the repro file.

use std::time::Duration;

use crate::plan::{Action, Fault, Plan, ProcId};
use crate::run::Sim;

/// A smaller plan that still breaks at least one built-in invariant `plan` breaks, and how many
/// runs it took. Returns `plan` unchanged if it passes. [`Sim::shrink`] does the same with a
/// user's checks too.
pub fn shrink(plan: &Plan, max_runs: usize) -> (Plan, usize) {
    shrink_with(&Sim::new(), plan, max_runs)
}

/// What a plan breaks when `sim` runs it (nothing for a plan `sim` refuses): each checker by
/// name, and each of the plan's own promises (the `expectations` checker) by the expectation it
/// breaks — its detail's text up to the first colon, the expectation as the plan writes it
/// (`root-exit-within`, `call-errors disconnected`, ...). A shrink keeps a change only if the
/// smaller plan still breaks one of these: one promise dropped and another broken is a
/// different failure, not the same one smaller.
fn broken(sim: &Sim, plan: &Plan) -> Vec<String> {
    let Ok(report) = sim.run(plan) else { return Vec::new() };
    let mut names: Vec<String> = report
        .violations
        .iter()
        .map(|v| match (v.checker, v.detail.split_once(':')) {
            ("expectations", Some((which, _))) => format!("expectations: {which}"),
            (checker, _) => checker.to_string(),
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// [`shrink`] judged by `sim`'s checkers, the built-in ones and the user's.
pub(crate) fn shrink_with(sim: &Sim, plan: &Plan, max_runs: usize) -> (Plan, usize) {
    let broken = |p: &Plan| broken(sim, p);
    let target = broken(plan);
    let mut runs = 1;
    if target.is_empty() {
        return (plan.clone(), runs);
    }
    let still_fails = |p: &Plan, runs: &mut usize| {
        *runs += 1;
        broken(p).iter().any(|c| target.contains(c))
    };
    let mut best = plan.clone();
    let mut progress = true;
    while progress && runs < max_runs {
        progress = false;
        // Fewer faults, then fewer actions.
        progress |= drop_each(&mut best, |p| &mut p.faults, &mut runs, max_runs, &still_fails);
        progress |= drop_each(&mut best, |p| &mut p.actions, &mut runs, max_runs, &still_fails);
        // A smaller tree: drop a leaf (the last process that is nobody's parent).
        let mut leaf = best.procs() - 1;
        while leaf > 0 && runs < max_runs {
            if !best.parents.contains(&leaf) {
                if let Some(c) = without_leaf(&best, leaf) {
                    if still_fails(&c, &mut runs) {
                        best = c;
                        progress = true;
                    }
                }
            }
            leaf -= 1;
            leaf = leaf.min(best.procs() - 1);
        }
        // Earlier times.
        for i in 0..best.faults.len() {
            let mut c = best.clone();
            c.faults[i].0 /= 2;
            if c.faults[i].0 != best.faults[i].0 && runs < max_runs && still_fails(&c, &mut runs) {
                best = c;
                progress = true;
            }
        }
        let mut c = best.clone();
        c.shutdown_at = (c.shutdown_at / 2).max(Duration::from_millis(1));
        if c.shutdown_at != best.shutdown_at && runs < max_runs && still_fails(&c, &mut runs) {
            best = c;
            progress = true;
        }
    }
    (best, runs)
}

/// Tries the plan without each element of one of its lists in turn, keeping every removal after
/// which it still fails; returns whether any was kept.
fn drop_each<T>(
    best: &mut Plan,
    list: impl Fn(&mut Plan) -> &mut Vec<T>,
    runs: &mut usize,
    max_runs: usize,
    still_fails: &impl Fn(&Plan, &mut usize) -> bool,
) -> bool {
    let mut kept = false;
    let mut i = 0;
    while i < list(best).len() && *runs < max_runs {
        let mut c = best.clone();
        list(&mut c).remove(i);
        if still_fails(&c, runs) {
            *best = c;
            kept = true;
        } else {
            i += 1;
        }
    }
    kept
}

/// `plan` without process `leaf` (which has no children) and everything naming it; later
/// processes move down one index.
fn without_leaf(plan: &Plan, leaf: ProcId) -> Option<Plan> {
    let re = |p: ProcId| -> Option<ProcId> {
        match p.cmp(&leaf) {
            std::cmp::Ordering::Less => Some(p),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(p - 1),
        }
    };
    let mut c = plan.clone();
    c.parents = plan
        .parents
        .iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != leaf)
        .map(|(_, p)| re(*p))
        .collect::<Option<Vec<_>>>()?;
    c.actions = plan
        .actions
        .iter()
        .filter_map(|(at, a)| {
            let a = match a {
                Action::Call { from, to, function, reply } => {
                    Action::Call { from: re(*from)?, to: re(*to)?, function: function.clone(), reply: *reply }
                }
                Action::Chain { from, to, count } => {
                    Action::Chain { from: re(*from)?, to: re(*to)?, count: *count }
                }
                Action::Print { proc, lines, newline } => {
                    Action::Print { proc: re(*proc)?, lines: *lines, newline: *newline }
                }
                Action::CallWithin { from, to, function, timeout } => Action::CallWithin {
                    from: re(*from)?,
                    to: re(*to)?,
                    function: function.clone(),
                    timeout: *timeout,
                },
                Action::StopChild { proc } => Action::StopChild { proc: re(*proc).filter(|p| *p != 0)? },
                Action::KillChild { proc } => Action::KillChild { proc: re(*proc).filter(|p| *p != 0)? },
                Action::Shutdown { proc } => Action::Shutdown { proc: re(*proc)? },
                Action::Force { proc } => Action::Force { proc: re(*proc)? },
            };
            Some((*at, a))
        })
        .collect();
    c.faults = plan
        .faults
        .iter()
        .filter_map(|(at, f)| {
            let p = re(f.proc())?;
            let f = match f {
                Fault::HangCalls(_) => Fault::HangCalls(p),
                Fault::IgnoreSigterm(_) => Fault::IgnoreSigterm(p),
                Fault::Freeze(_) => Fault::Freeze(p),
                Fault::Thaw(_) => Fault::Thaw(p),
                Fault::Kill(_) => Fault::Kill(p),
                Fault::Cut(_) => Fault::Cut(p),
                Fault::Stall(_, d) => Fault::Stall(p, *d),
                Fault::Fragment(_) => Fault::Fragment(p),
                Fault::Delay(_, d) => Fault::Delay(p, *d),
                Fault::Runaway(_) => Fault::Runaway(p),
                Fault::Daemon(_) => Fault::Daemon(p),
                Fault::Spoof(_) => Fault::Spoof(p),
            };
            Some((*at, f))
        })
        .collect();
    Some(c)
}
