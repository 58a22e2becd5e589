//! Invariant checkers: each reads a finished run's trace and says what, if anything, went wrong.
//!
//! Every run is checked by all of them. Each has a test that hands it a small violating trace and
//! sees it object (see the tests at the bottom), so a checker that cannot fail does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use arbor_core::call::CallErrorKind;
use arbor_core::frame::HEADER_LEN;
use arbor_core::ids::ContextId;
use arbor_core::lines::DEFAULT_MAX_LINE_LEN;
use arbor_core::node::Output;
use arbor_core::reaper::Escalation;
use arbor_core::router::StreamId;
use arbor_core::shutdown::{Cause, PhaseKind};
use arbor_core::time::Instant;

use crate::plan::{Expect, Fault, Plan, ProcId};
use crate::trace::{transmitted_shutdown, Trace, What};

/// Slack on the liveness bound: everything in the model is instantaneous except latency, which
/// the deadline propagation already absorbs; this covers the final reap.
pub const LIVENESS_SLACK: Duration = Duration::from_millis(1);

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which checker.
    pub checker: &'static str,
    /// Which process, if one.
    pub proc: Option<ProcId>,
    /// When, if known.
    pub at: Option<Instant>,
    /// What.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.checker)?;
        if let Some(p) = self.proc {
            write!(f, " p{p}")?;
        }
        if let Some(at) = self.at {
            write!(f, " at {:.9}s", at.as_nanos() as f64 / 1e9)?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl Violation {
    /// A violation of the property `checker`, about no process and no instant in particular
    /// (see [`Violation::at`]).
    pub fn new(checker: &'static str, detail: impl Into<String>) -> Violation {
        Violation { checker, proc: None, at: None, detail: detail.into() }
    }

    /// The same violation, about process `proc` at `at`.
    pub fn at(self, proc: ProcId, at: Instant) -> Violation {
        Violation { proc: Some(proc), at: Some(at), ..self }
    }
}

/// A property of a finished run, stated by a user of the crate and checked beside the built-in
/// checkers ([`crate::Sim::check`]): its violations fail the run like theirs do, and the shrinker
/// keeps a smaller plan only while it still breaks one of the properties the original broke, a
/// user's included.
///
/// Any `Fn(&Plan, &Trace) -> Vec<Violation>` paired with its name is one:
///
/// ```
/// use arbor_sim::{Check, Violation, What};
/// let no_kill = ("no-sigkill", |_: &arbor_sim::Plan, trace: &arbor_sim::Trace| {
///     trace.events.iter()
///         .filter(|e| matches!(e.what, What::Signalled(arbor_core::reaper::Signal::Kill)))
///         .map(|e| Violation::new("no-sigkill", "a process was SIGKILLed").at(e.proc, e.at))
///         .collect::<Vec<_>>()
/// });
/// assert_eq!(no_kill.name(), "no-sigkill");
/// ```
pub trait Check: Send + Sync {
    /// The name violations carry ([`Violation::checker`]).
    fn name(&self) -> &'static str;
    /// Appends to `out` what the run broke; nothing if it held.
    fn check(&self, plan: &Plan, trace: &Trace, out: &mut Vec<Violation>);
}

impl<F> Check for (&'static str, F)
where
    F: Fn(&Plan, &Trace) -> Vec<Violation> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.0
    }

    fn check(&self, plan: &Plan, trace: &Trace, out: &mut Vec<Violation>) {
        out.extend((self.1)(plan, trace));
    }
}

/// The names of all checkers, in the order they run.
pub const CHECKERS: &[&str] = &[
    "shutdown-ordering",
    "shutdown-from-parent",
    "liveness",
    "no-lost-lines",
    "calls-resolve-once",
    "deadlines",
    "refusals-answered",
    "departures",
    "auth-boundary",
    "no-process-left",
    "no-stream-left-open",
    "exit-is-final",
    "no-child-abandoned",
    "parent-queue-bound",
    "expectations",
];

/// Facts about the tree that the checkers need, read off the trace and plan.
pub(crate) struct Tree {
    ids: BTreeMap<ProcId, ContextId>,
    parents: BTreeMap<ProcId, ProcId>,
}

impl Tree {
    fn new(plan: &Plan, trace: &Trace) -> Tree {
        let mut ids = BTreeMap::new();
        for e in &trace.events {
            if let What::Spawned { id, .. } = e.what {
                ids.insert(e.proc, id);
            }
        }
        let parents = (1..plan.procs()).filter_map(|p| plan.parent(p).map(|q| (p, q))).collect();
        Tree { ids, parents }
    }

    fn ancestors(&self, mut p: ProcId) -> Vec<ContextId> {
        let mut out = Vec::new();
        while let Some(q) = self.parents.get(&p) {
            if let Some(id) = self.ids.get(q) {
                out.push(*id);
            }
            p = *q;
        }
        out
    }

    fn proc_of(&self, id: ContextId) -> Option<ProcId> {
        self.ids.iter().find(|(_, i)| **i == id).map(|(p, _)| *p)
    }
}

/// Runs every checker.
pub fn check(plan: &Plan, trace: &Trace) -> Vec<Violation> {
    let tree = Tree::new(plan, trace);
    let mut v = Vec::new();
    shutdown_ordering(trace, &mut v);
    shutdown_from_parent(&tree, trace, &mut v);
    liveness(plan, trace, &mut v);
    no_lost_lines(plan, &tree, trace, &mut v);
    calls_resolve_once(trace, &mut v);
    deadlines(plan, &tree, trace, &mut v);
    refusals_answered(plan, &tree, trace, &mut v);
    departures(plan, &tree, trace, &mut v);
    auth_boundary(&tree, trace, &mut v);
    no_process_left(&tree, trace, &mut v);
    no_stream_left_open(trace, &mut v);
    exit_is_final(trace, &mut v);
    no_child_abandoned(trace, &mut v);
    parent_queue_bound(plan, trace, &mut v);
    expectations(plan, &tree, trace, &mut v);
    v
}

fn violation(
    v: &mut Vec<Violation>,
    checker: &'static str,
    proc: Option<ProcId>,
    at: Option<Instant>,
    detail: String,
) {
    v.push(Violation { checker, proc, at, detail });
}

/// A node closes its call channel before it sends SHUTDOWN to any child, and never starts a
/// call after closing it.
pub(crate) fn shutdown_ordering(trace: &Trace, v: &mut Vec<Violation>) {
    let mut closed: BTreeSet<ProcId> = BTreeSet::new();
    // A child being stopped on its own gets its SHUTDOWN while its parent runs on (the
    // ordering then holds inside that subtree, which its own nodes are checked for).
    let mut stopping: BTreeSet<(ProcId, ContextId)> = BTreeSet::new();
    for e in &trace.events {
        if let What::ChildControl { child, kill: false } = e.what {
            stopping.insert((e.proc, child));
        }
        let What::Out(o) = &e.what else { continue };
        match o {
            Output::CallsClosed => {
                if !closed.insert(e.proc) {
                    violation(
                        v,
                        "shutdown-ordering",
                        Some(e.proc),
                        Some(e.at),
                        "closed its call channel twice".into(),
                    );
                }
            }
            Output::RunCall { request, .. } if closed.contains(&e.proc) => violation(
                v,
                "shutdown-ordering",
                Some(e.proc),
                Some(e.at),
                format!("started call {}() after closing its call channel", request.function),
            ),
            _ => {
                if let Some(h) = transmitted_shutdown(o) {
                    if !closed.contains(&e.proc) && !stopping.remove(&(e.proc, h.dst)) {
                        violation(
                            v,
                            "shutdown-ordering",
                            Some(e.proc),
                            Some(e.at),
                            format!("sent SHUTDOWN to {} before closing its call channel", h.dst),
                        );
                    }
                }
            }
        }
    }
}

/// A node begins shutdown on a parent's request only after its immediate parent sent it one.
pub(crate) fn shutdown_from_parent(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let mut told: BTreeSet<ProcId> = BTreeSet::new();
    for e in &trace.events {
        match &e.what {
            What::Out(o) => {
                if let Some(h) = transmitted_shutdown(o) {
                    if h.src == tree.ids.get(&e.proc).copied().unwrap_or(h.src) {
                        if let Some(child) = tree.proc_of(h.dst) {
                            if tree.parents.get(&child) == Some(&e.proc) {
                                told.insert(child);
                            }
                        }
                    }
                }
            }
            What::Phase { to: PhaseKind::Draining, cause: Some(Cause::ParentRequest) }
                if !told.contains(&e.proc) =>
            {
                violation(
                    v,
                    "shutdown-from-parent",
                    Some(e.proc),
                    Some(e.at),
                    "obeyed a SHUTDOWN its immediate parent never sent".into(),
                );
            }
            _ => {}
        }
    }
}

/// Once the root begins shutdown, every process is gone within the root's grace plus the kill
/// escalation; if the root dies first, everything dies with it at once.
pub(crate) fn liveness(plan: &Plan, trace: &Trace, v: &mut Vec<Violation>) {
    let esc = Escalation::default();
    let began =
        trace.events.iter().find(|e| e.proc == 0 && matches!(e.what, What::ShutdownRequested)).map(|e| e.at);
    let root_died =
        trace.events.iter().find(|e| e.proc == 0 && matches!(e.what, What::Died(_))).map(|e| e.at);
    let deadline = match (began, root_died) {
        (Some(t), Some(d)) if d < t => d + LIVENESS_SLACK,
        (Some(t), _) => t + plan.net.grace + esc.total() + LIVENESS_SLACK,
        (None, Some(d)) => d + LIVENESS_SLACK,
        (None, None) => return, // never asked to end; no-process-left reports what lives on
    };
    for e in &trace.events {
        if matches!(e.what, What::Died(_)) && e.at > deadline {
            violation(
                v,
                "liveness",
                Some(e.proc),
                Some(e.at),
                format!("gone only {:?} after the bound", e.at.saturating_duration_since(deadline)),
            );
        }
    }
}

/// On a graceful shutdown (nothing forced, no disruptive fault) every line printed reaches the
/// root exactly once, in order.
pub(crate) fn no_lost_lines(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    // A forced disconnect, of the tree or of one child stopped on its own and escalated (the
    // signals say so), may lose what was still in flight.
    let forced = trace
        .events
        .iter()
        .any(|e| matches!(e.what, What::Phase { to: PhaseKind::ForceDisconnect, .. } | What::Signalled(_)));
    let required = plan.expect.contains(&Expect::AllLines);
    if !required && (forced || plan.is_disruptive()) {
        return;
    }
    // What each context wrote, as one text; its lines are what must arrive (a final fragment
    // without a newline included, as it is delivered at EOF).
    let mut written: BTreeMap<ContextId, String> = BTreeMap::new();
    let mut arrived: BTreeMap<ContextId, Vec<&str>> = BTreeMap::new();
    for e in &trace.events {
        match &e.what {
            What::Printed(text) => {
                if let Some(id) = tree.ids.get(&e.proc) {
                    written.entry(*id).or_default().push_str(text);
                }
            }
            What::Out(Output::LogLine(l)) if e.proc == 0 => {
                arrived.entry(l.context).or_default().push(&l.text)
            }
            _ => {}
        }
    }
    let printed: BTreeMap<ContextId, Vec<&str>> = written
        .iter()
        .map(|(id, text)| (*id, text.strip_suffix('\n').unwrap_or(text).split('\n').collect()))
        .collect();
    for (id, lines) in &printed {
        let got = arrived.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if got != lines.as_slice() {
            let first_diff =
                lines.iter().zip(got).position(|(a, b)| a != b).unwrap_or(lines.len().min(got.len()));
            violation(
                v,
                "no-lost-lines",
                tree.proc_of(*id),
                None,
                format!(
                    "context {id} printed {} lines, the root got {}; first difference at line {first_diff}",
                    lines.len(),
                    got.len()
                ),
            );
        }
    }
}

/// Every call is resolved at most once, and exactly once by a node that finished on its own.
pub(crate) fn calls_resolve_once(trace: &Trace, v: &mut Vec<Violation>) {
    let mut issued: BTreeMap<(ProcId, u64), usize> = BTreeMap::new();
    let mut exited: BTreeSet<ProcId> = BTreeSet::new();
    for e in &trace.events {
        match &e.what {
            What::CallIssued { call: c, .. } => {
                issued.insert((e.proc, c.0), 0);
            }
            What::Out(Output::CallReturned { call, .. }) => {
                let n = issued.entry((e.proc, call.0)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    violation(
                        v,
                        "calls-resolve-once",
                        Some(e.proc),
                        Some(e.at),
                        format!("call {} resolved twice", call.0),
                    );
                }
            }
            What::Out(Output::Exit { .. }) => {
                exited.insert(e.proc);
            }
            _ => {}
        }
    }
    for ((p, call), n) in issued {
        if n == 0 && exited.contains(&p) {
            violation(
                v,
                "calls-resolve-once",
                Some(p),
                None,
                format!("call {call} never resolved before exit"),
            );
        }
    }
}

/// How each call a process issued was resolved: `(proc, call) -> (at, error kind if any)`.
fn resolutions(trace: &Trace) -> BTreeMap<(ProcId, u64), (Instant, Option<CallErrorKind>)> {
    let mut out = BTreeMap::new();
    for e in &trace.events {
        if let What::Out(Output::CallReturned { call, result }) = &e.what {
            out.entry((e.proc, call.0)).or_insert((e.at, result.as_ref().err().map(|e| e.kind)));
        }
    }
    out
}

/// Whether the plan ever freezes `p` (a frozen process does nothing, its timers included, so
/// no time bound holds for what it waits on).
fn ever_frozen(plan: &Plan, p: ProcId) -> bool {
    plan.faults.iter().any(|(_, f)| matches!(f, Fault::Freeze(q) if *q == p))
}

/// Calls with a deadline (docs/shutdown.md "Deadlines"): each resolves no later than its
/// deadline, `Timeout` exactly at it, and a caller that times a call out tells the callee at
/// that instant (a CANCEL_CALL sent, or refused for want of a route; a call to itself is told
/// within the node). A caller that is frozen, or dies first, is excused: it cannot act.
pub(crate) fn deadlines(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let resolved = resolutions(trace);
    let mut died: BTreeMap<ProcId, Instant> = BTreeMap::new();
    let mut cancels: BTreeSet<(ProcId, Instant)> = BTreeSet::new();
    let end = trace.events.last().map_or(Instant::ZERO, |e| e.at);
    for e in &trace.events {
        match &e.what {
            What::Died(_) => {
                died.entry(e.proc).or_insert(e.at);
            }
            What::Out(o) if is_cancel(o) => {
                cancels.insert((e.proc, e.at));
            }
            _ => {}
        }
    }
    for e in &trace.events {
        let What::CallIssued { call, to, deadline: Some(deadline) } = &e.what else { continue };
        let (p, deadline) = (e.proc, *deadline);
        let to_self = tree.ids.get(&p) == Some(to);
        if ever_frozen(plan, p) || died.get(&p).is_some_and(|d| *d <= deadline) {
            continue;
        }
        let mut bad = |at: Instant, detail: String| violation(v, "deadlines", Some(p), Some(at), detail);
        match resolved.get(&(p, call.0)) {
            Some(&(at, _)) if at > deadline => bad(
                at,
                format!(
                    "call {} resolved {:?} after its deadline",
                    call.0,
                    at.saturating_duration_since(deadline)
                ),
            ),
            Some(&(at, Some(CallErrorKind::Timeout))) if at != deadline => {
                bad(at, format!("call {} timed out before its deadline", call.0))
            }
            Some(&(at, Some(CallErrorKind::Timeout))) if !to_self && !cancels.contains(&(p, at)) => {
                bad(at, format!("call {} timed out without telling its callee", call.0))
            }
            None if end > deadline => {
                bad(deadline, format!("call {} still pending past its deadline", call.0))
            }
            _ => {}
        }
    }
}

/// A CANCEL_CALL leaving, or refused by the caller's own router (no route to the callee).
fn is_cancel(o: &Output) -> bool {
    use arbor_core::handle::Handle;
    use arbor_core::node::Diagnostic;
    match o {
        Output::Transmit { frame, .. } => frame.header()[14..18] == Handle::CANCEL_CALL.0.to_be_bytes(),
        Output::Diagnostic(Diagnostic::Rejected(r)) => r.handle == Handle::CANCEL_CALL && r.stream.is_none(),
        _ => false,
    }
}

/// The liveness side of exactly-once (scenario S28): a call that a router refuses — here, any
/// call to a context the caller is not an ancestor of — is answered by that router, so it
/// resolves within one round trip of the path between caller and callee, never left pending
/// until someone exits. Checked on runs where nothing may hold a message back (no stall, cut,
/// freeze, kill or runaway output). The round trip counts each hop's latency (a `Delay`
/// included) and, per hop, the time the link needs to carry everything the run sent before the
/// answer could be queued behind it (a socket moves at most `capacity` bytes per latency).
pub(crate) fn refusals_answered(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    if plan.is_disruptive() || plan.faults.iter().any(|(_, f)| matches!(f, Fault::Runaway(_))) {
        return;
    }
    let resolved = resolutions(trace);
    let end = trace.events.last().map_or(Instant::ZERO, |e| e.at);
    // Everything framed in the run, generously: each line and each frame header with room to
    // spare. What can be queued ahead of an answer on any link is at most this.
    let framed: usize = trace
        .events
        .iter()
        .map(|e| match &e.what {
            What::Printed(t) => t.len() + 64,
            What::Out(Output::Transmit { frame, .. }) => frame.len(),
            _ => 0,
        })
        .sum();
    let windows = 1 + framed.div_ceil(plan.net.capacity.max(1)) as u32;
    let hop = |p: ProcId| {
        let delay = plan
            .faults
            .iter()
            .filter_map(|(_, f)| match f {
                Fault::Delay(q, d) if *q == p => Some(*d),
                _ => None,
            })
            .sum::<Duration>();
        (plan.net.latency + delay) * windows
    };
    for e in &trace.events {
        let What::CallIssued { call, to, .. } = &e.what else { continue };
        let Some(callee) = tree.proc_of(*to) else { continue };
        let caller_id = tree.ids.get(&e.proc).copied();
        if callee == e.proc || caller_id.is_none_or(|id| tree.ancestors(callee).contains(&id)) {
            continue; // allowed: not refused
        }
        // Up from each side to their nearest common ancestor, there and back.
        let path = |mut p: ProcId, stop: &BTreeSet<ProcId>| {
            let mut d = Duration::ZERO;
            while !stop.contains(&p) {
                d += hop(p);
                match plan.parent(p) {
                    Some(q) => p = q,
                    None => break,
                }
            }
            (d, p)
        };
        let mut above_caller = BTreeSet::new();
        let mut q = Some(e.proc);
        while let Some(p) = q {
            above_caller.insert(p);
            q = plan.parent(p);
        }
        let (down, lca) = path(callee, &above_caller);
        let (up, _) = path(e.proc, &BTreeSet::from([lca]));
        let bound = e.at + 2 * (up + down) + LIVENESS_SLACK;
        match resolved.get(&(e.proc, call.0)) {
            Some(&(at, _)) if at > bound => violation(
                v,
                "refusals-answered",
                Some(e.proc),
                Some(at),
                format!(
                    "refused call {} resolved {:?} after one round trip",
                    call.0,
                    at.saturating_duration_since(bound)
                ),
            ),
            None if end > bound => violation(
                v,
                "refusals-answered",
                Some(e.proc),
                Some(bound),
                format!("refused call {} to {to} still pending after one round trip", call.0),
            ),
            _ => {}
        }
    }
}

/// The root hears of every context that leaves (docs/shutdown.md "One child"): each departure it
/// reports names a process of the tree by its id and pid with its real parent, at most once;
/// and on a run where nothing was forced or disrupted, every process that died before the root
/// exited was reported, grandchildren included (their parents send the news up).
pub(crate) fn departures(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let mut pids: BTreeMap<ProcId, arbor_core::reaper::Pid> = BTreeMap::new();
    let mut died: BTreeSet<ProcId> = BTreeSet::new();
    let mut heard: BTreeMap<ProcId, usize> = BTreeMap::new();
    let mut root_exited = false;
    let mut disrupted = plan.is_disruptive();
    for e in &trace.events {
        match &e.what {
            What::Spawned { pid, .. } => {
                pids.insert(e.proc, *pid);
            }
            What::Died(_) if e.proc != 0 && !root_exited => {
                died.insert(e.proc);
            }
            What::Phase { to: PhaseKind::ForceDisconnect, .. } | What::Signalled(_) => disrupted = true,
            What::Out(Output::Exit { .. }) if e.proc == 0 => root_exited = true,
            What::Out(Output::Departed(d)) if e.proc == 0 => {
                let who = tree.proc_of(d.id);
                let real_parent = who.and_then(|p| plan.parent(p)).and_then(|q| tree.ids.get(&q)).copied();
                match who {
                    Some(p) if pids.get(&p) == Some(&d.pid) && real_parent == Some(d.parent) => {
                        *heard.entry(p).or_insert(0) += 1;
                        if heard[&p] > 1 {
                            violation(
                                v,
                                "departures",
                                Some(p),
                                Some(e.at),
                                format!("context {} reported twice", d.id),
                            );
                        }
                    }
                    _ => violation(
                        v,
                        "departures",
                        None,
                        Some(e.at),
                        format!(
                            "a departure of no such process: {} (pid {}, child of {})",
                            d.id, d.pid, d.parent
                        ),
                    ),
                }
            }
            _ => {}
        }
    }
    if disrupted || !root_exited {
        return;
    }
    for p in died.iter().filter(|p| !heard.contains_key(p)) {
        let id = tree.ids.get(p).map_or_else(|| "?".to_string(), |id| id.to_string());
        violation(
            v,
            "departures",
            Some(*p),
            None,
            format!("context {id} left but the root never heard of it"),
        );
    }
}

/// Nothing crosses an authentication boundary: no forged call runs, and every call that runs
/// was made by the context itself or one of its ancestors.
pub(crate) fn auth_boundary(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let ancestors: BTreeMap<ProcId, Vec<ContextId>> =
        tree.ids.keys().map(|p| (*p, tree.ancestors(*p))).collect();
    for e in &trace.events {
        if let What::Out(Output::RunCall { caller, request, .. }) = &e.what {
            let me = tree.ids.get(&e.proc).copied();
            let allowed = Some(*caller) == me || ancestors.get(&e.proc).is_some_and(|a| a.contains(caller));
            if request.function == "forged" || !allowed {
                violation(
                    v,
                    "auth-boundary",
                    Some(e.proc),
                    Some(e.at),
                    format!("ran {}() for context {caller}", request.function),
                );
            }
        }
    }
}

/// No process outlives the run.
pub(crate) fn no_process_left(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let dead: BTreeSet<ProcId> =
        trace.events.iter().filter(|e| matches!(e.what, What::Died(_))).map(|e| e.proc).collect();
    for p in tree.ids.keys() {
        if !dead.contains(p) {
            violation(v, "no-process-left", Some(*p), None, "still alive at the end of the run".into());
        }
    }
}

/// A node that exits has closed every stream it was given.
pub(crate) fn no_stream_left_open(trace: &Trace, v: &mut Vec<Violation>) {
    let mut open: BTreeMap<ProcId, BTreeSet<StreamId>> = BTreeMap::new();
    for e in &trace.events {
        match &e.what {
            What::Opened(s) => {
                open.entry(e.proc).or_default().insert(*s);
            }
            What::Out(Output::Close { stream }) => {
                open.entry(e.proc).or_default().remove(stream);
            }
            What::Out(Output::Exit { .. }) => {
                if let Some(left) = open.get(&e.proc).filter(|s| !s.is_empty()) {
                    violation(
                        v,
                        "no-stream-left-open",
                        Some(e.proc),
                        Some(e.at),
                        format!("exited with {left:?} open"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// `Exit` is a node's last output: nothing follows it, not even a diagnostic.
pub(crate) fn exit_is_final(trace: &Trace, v: &mut Vec<Violation>) {
    let mut exited: BTreeSet<ProcId> = BTreeSet::new();
    for e in &trace.events {
        if let What::Out(o) = &e.what {
            if exited.contains(&e.proc) {
                violation(
                    v,
                    "exit-is-final",
                    Some(e.proc),
                    Some(e.at),
                    format!("output after Exit: {}", crate::trace::OutText(o)),
                );
            }
            if matches!(o, Output::Exit { .. }) {
                exited.insert(e.proc);
            }
        }
    }
}

/// The simulator reports every exit, so a child given up on means the kill escalation failed
/// to end it.
pub(crate) fn no_child_abandoned(trace: &Trace, v: &mut Vec<Violation>) {
    for e in &trace.events {
        if let What::Out(Output::Diagnostic(arbor_core::node::Diagnostic::ChildAbandoned(pid))) = &e.what {
            violation(
                v,
                "no-child-abandoned",
                Some(e.proc),
                Some(e.at),
                format!("gave up on child pid {pid}"),
            );
        }
    }
}

/// The most bytes of frames one read of `read_size` bytes can queue towards the parent.
///
/// A logger read: the lines it completes (a partial line carried over from the last read
/// included, which is shorter than the longest line) and a FORWARD_LOG frame each, header and
/// `source\0level\0` prefix included, down to empty lines.
///
/// A child stream read: the frames it completes and the middle context forwards up — the bytes
/// read and the rest of one frame begun by earlier reads. No frame in the simulator is longer
/// than a FORWARD_LOG of the longest line (calls carry 16 bytes), so that is less than the
/// above. (A real context forwarding a large call result may add up to one whole message.)
pub fn one_read_worth(read_size: usize) -> usize {
    /// Header, `stdout`/`stderr`, a two-digit level and the two separators, with room to spare.
    const FRAME_OVERHEAD: usize = HEADER_LEN + 16;
    let text = DEFAULT_MAX_LINE_LEN + read_size;
    let lines = read_size + 1 + text / DEFAULT_MAX_LINE_LEN;
    text + lines * FRAME_OVERHEAD
}

/// Backpressure (the host contract, docs/embedding.md): a process reads its loggers and its
/// children's streams only while the bytes queued on its parent stream are at most the
/// high-water mark, so that queue never exceeds the mark by more than one read's worth — a
/// middle context included, whatever its children forward up. The world records every new
/// high mark above the mark that such a read left, with the stream read and what the read added.
pub(crate) fn parent_queue_bound(plan: &Plan, trace: &Trace, v: &mut Vec<Violation>) {
    let mark = plan.net.parent_high_water;
    let worth = one_read_worth(plan.net.read_size);
    for e in &trace.events {
        let What::ParentQueued { stream, queued, read } = e.what else { continue };
        let before = queued.saturating_sub(read);
        if before > mark {
            violation(
                v,
                "parent-queue-bound",
                Some(e.proc),
                Some(e.at),
                format!("read {stream} with {before} bytes queued on its parent stream, above the {mark}-byte high-water mark"),
            );
        } else if read > worth {
            violation(
                v,
                "parent-queue-bound",
                Some(e.proc),
                Some(e.at),
                format!("one read of {stream} queued {read} bytes towards the parent, more than one read's worth ({worth})"),
            );
        }
    }
}

/// The scenario's own promises.
pub(crate) fn expectations(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let _ = tree;
    for x in &plan.expect {
        match x {
            Expect::RootExitWithin(d) => {
                let began =
                    trace.events.iter().find(|e| e.proc == 0 && matches!(e.what, What::ShutdownRequested));
                let exit = trace
                    .events
                    .iter()
                    .find(|e| e.proc == 0 && matches!(e.what, What::Out(Output::Exit { .. })));
                match (began, exit) {
                    (Some(b), Some(x)) if x.at <= b.at + *d => {}
                    (Some(b), Some(x)) => violation(
                        v,
                        "expectations",
                        Some(0),
                        Some(x.at),
                        format!(
                            "root exited {:?} after shutdown began, promised within {d:?}",
                            x.at.saturating_duration_since(b.at)
                        ),
                    ),
                    _ => violation(
                        v,
                        "expectations",
                        Some(0),
                        None,
                        "the root never exited after shutdown".into(),
                    ),
                }
            }
            Expect::AllLines => {} // enforced by no-lost-lines
            Expect::LoggersPaused => {
                if !trace.events.iter().any(|e| matches!(e.what, What::Backpressure { paused: true, .. })) {
                    violation(v, "expectations", None, None, "no process's loggers were ever paused".into());
                }
            }
            Expect::CallErrors(kind, n) => {
                let got = trace
                    .events
                    .iter()
                    .filter(|e| {
                        matches!(&e.what, What::Out(Output::CallReturned { result: Err(err), .. })
                            if kind_name(err.kind) == kind)
                    })
                    .count();
                if got != *n {
                    violation(
                        v,
                        "expectations",
                        None,
                        None,
                        format!("{got} calls failed with {kind}, expected {n}"),
                    );
                }
            }
        }
    }
}

/// The name of an error kind as plans spell it.
pub fn kind_name(k: CallErrorKind) -> &'static str {
    match k {
        CallErrorKind::Failed => "failed",
        CallErrorKind::UnknownFunction => "unknown-function",
        CallErrorKind::Malformed => "malformed",
        CallErrorKind::ShuttingDown => "shutting-down",
        CallErrorKind::Disconnected => "disconnected",
        CallErrorKind::Undeliverable => "undeliverable",
        CallErrorKind::TooLarge => "too-large",
        CallErrorKind::TypeMismatch => "type-mismatch",
        CallErrorKind::Timeout => "timeout",
        CallErrorKind::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    //! Each checker, handed a small hand-made trace that breaks its rule, objects; and the same
    //! trace with the rule kept passes.
    use super::*;
    use crate::plan::{Fault, Mutation, Net};
    use arbor_core::call::{CallError, CallId, CallRequest, JobId};
    use arbor_core::frame::{Encoding, Message};
    use arbor_core::handle::Handle;
    use arbor_core::lines::LogSource;
    use arbor_core::node::LogLine;
    use arbor_core::reaper::{ExitStatus, Pid};
    use arbor_core::shutdown::ExitKind;

    fn plan(parents: Vec<ProcId>) -> Plan {
        Plan {
            name: "hand-made".into(),
            seed: 0,
            net: Net::default(),
            parents,
            actions: vec![],
            faults: vec![],
            shutdown_at: Duration::ZERO,
            expect: vec![],
            mutation: Mutation::None,
        }
    }

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    /// A trace of a root (context 0) and one child (context 1, process 1).
    fn base() -> Trace {
        let mut tr = Trace::default();
        tr.push(t(0), 0, What::Spawned { id: ContextId(0), pid: Pid(100) });
        tr.push(t(0), 1, What::Spawned { id: ContextId(1), pid: Pid(101) });
        tr
    }

    fn shutdown_frame(dst: u32, src: u32) -> Output {
        let m = Message::new(ContextId(dst), ContextId(src), Handle::SHUTDOWN, Encoding::Binary, "");
        Output::Transmit { stream: StreamId(101), frame: m.to_frame() }
    }

    fn died(tr: &mut Trace, at: u64, p: ProcId) {
        tr.push(t(at), p, What::Died(ExitStatus::Code(0)));
    }

    fn names(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|x| x.checker).collect()
    }

    #[test]
    fn ordering_catches_shutdown_sent_before_the_channel_closed() {
        let mut bad = base();
        bad.push(t(1), 0, What::Out(shutdown_frame(1, 0)));
        bad.push(t(1), 0, What::Out(Output::CallsClosed));
        let mut v = Vec::new();
        shutdown_ordering(&bad, &mut v);
        assert_eq!(names(&v), ["shutdown-ordering"]);

        let mut good = base();
        good.push(t(1), 0, What::Out(Output::CallsClosed));
        good.push(t(1), 0, What::Out(shutdown_frame(1, 0)));
        let mut v = Vec::new();
        shutdown_ordering(&good, &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn ordering_catches_a_second_shutdown_sequence() {
        let mut bad = base();
        bad.push(t(1), 0, What::Out(Output::CallsClosed));
        bad.push(t(2), 0, What::Out(Output::CallsClosed));
        let mut v = Vec::new();
        shutdown_ordering(&bad, &mut v);
        assert_eq!(names(&v), ["shutdown-ordering"]);
    }

    #[test]
    fn exit_checker_catches_output_after_exit() {
        let mut bad = base();
        bad.push(t(1), 1, What::Out(Output::Exit { how: ExitKind::SigtermSelf }));
        bad.push(t(1), 1, What::Out(Output::CallsClosed));
        let mut v = Vec::new();
        exit_is_final(&bad, &mut v);
        assert_eq!(names(&v), ["exit-is-final"]);
    }

    #[test]
    fn abandonment_checker_catches_a_child_given_up_on() {
        let mut bad = base();
        let d = arbor_core::node::Diagnostic::ChildAbandoned(Pid(101));
        bad.push(t(7000), 0, What::Out(Output::Diagnostic(d)));
        let mut v = Vec::new();
        no_child_abandoned(&bad, &mut v);
        assert_eq!(names(&v), ["no-child-abandoned"]);
    }

    #[test]
    fn ordering_catches_a_call_started_after_the_channel_closed() {
        let mut bad = base();
        bad.push(t(1), 1, What::Out(Output::CallsClosed));
        bad.push(
            t(2),
            1,
            What::Out(Output::RunCall {
                job: JobId(0),
                caller: ContextId(0),
                request: CallRequest::new("f", ""),
            }),
        );
        let mut v = Vec::new();
        shutdown_ordering(&bad, &mut v);
        assert_eq!(names(&v), ["shutdown-ordering"]);
    }

    #[test]
    fn shutdown_from_parent_catches_obeying_an_unsent_shutdown() {
        let p = plan(vec![0]);
        let mut bad = base();
        bad.push(t(1), 1, What::Phase { to: PhaseKind::Draining, cause: Some(Cause::ParentRequest) });
        let mut v = Vec::new();
        shutdown_from_parent(&Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["shutdown-from-parent"]);

        let mut good = base();
        good.push(t(1), 0, What::Out(shutdown_frame(1, 0)));
        good.push(t(1), 1, What::Phase { to: PhaseKind::Draining, cause: Some(Cause::ParentRequest) });
        let mut v = Vec::new();
        shutdown_from_parent(&Tree::new(&p, &good), &good, &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn liveness_catches_a_process_gone_after_the_bound() {
        let p = plan(vec![0]);
        let bound_ms = (p.net.grace + Escalation::default().total()).as_millis() as u64;
        let mut bad = base();
        bad.push(t(10), 0, What::ShutdownRequested);
        died(&mut bad, 10 + bound_ms + 5, 1);
        died(&mut bad, 10 + bound_ms + 5, 0);
        let mut v = Vec::new();
        liveness(&p, &bad, &mut v);
        assert_eq!(names(&v), ["liveness", "liveness"]);

        let mut good = base();
        good.push(t(10), 0, What::ShutdownRequested);
        died(&mut good, 11, 1);
        died(&mut good, 11, 0);
        let mut v = Vec::new();
        liveness(&p, &good, &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn liveness_catches_a_descendant_outliving_a_killed_root() {
        let p = plan(vec![0]);
        let mut bad = base();
        bad.push(t(10), 0, What::Died(ExitStatus::Signaled(9)));
        died(&mut bad, 500, 1);
        let mut v = Vec::new();
        liveness(&p, &bad, &mut v);
        assert_eq!(names(&v), ["liveness"]);
    }

    fn line(ctx: u32, text: &str) -> What {
        What::Out(Output::LogLine(LogLine {
            context: ContextId(ctx),
            source: LogSource::Stdout.name().into(),
            level: 20,
            text: text.into(),
        }))
    }

    #[test]
    fn lost_lines_are_caught_on_a_graceful_run_and_excused_on_a_disruptive_one() {
        let mut p = plan(vec![0]);
        let mut bad = base();
        bad.push(t(1), 1, What::Printed("a\n".into()));
        bad.push(t(1), 1, What::Printed("b\n".into()));
        bad.push(t(2), 0, line(1, "a"));
        let tree = Tree::new(&p, &bad);
        let mut v = Vec::new();
        no_lost_lines(&p, &tree, &bad, &mut v);
        assert_eq!(names(&v), ["no-lost-lines"]);

        // Duplicated or reordered lines are caught too.
        let mut dup = base();
        dup.push(t(1), 1, What::Printed("a\n".into()));
        dup.push(t(2), 0, line(1, "a"));
        dup.push(t(2), 0, line(1, "a"));
        let mut v = Vec::new();
        no_lost_lines(&p, &tree, &dup, &mut v);
        assert_eq!(names(&v), ["no-lost-lines"]);

        p.faults.push((Duration::ZERO, Fault::Kill(1)));
        let mut v = Vec::new();
        no_lost_lines(&p, &tree, &bad, &mut v);
        assert!(v.is_empty(), "a killed process may lose lines");
    }

    #[test]
    fn calls_checker_catches_double_and_missing_resolution() {
        let ret = |c: u64| {
            What::Out(Output::CallReturned {
                call: CallId(c),
                result: Err(CallError::new(CallErrorKind::Disconnected, "x", "y")),
            })
        };
        let mut bad = base();
        bad.push(t(1), 0, What::CallIssued { call: CallId(0), to: ContextId(1), deadline: None });
        bad.push(t(1), 0, What::CallIssued { call: CallId(1), to: ContextId(1), deadline: None });
        bad.push(t(2), 0, ret(0));
        bad.push(t(3), 0, ret(0));
        bad.push(t(4), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        calls_resolve_once(&bad, &mut v);
        assert_eq!(names(&v), ["calls-resolve-once", "calls-resolve-once"]);
    }

    fn returned(c: u64, kind: CallErrorKind) -> What {
        What::Out(Output::CallReturned { call: CallId(c), result: Err(CallError::new(kind, "x", "y")) })
    }

    fn cancel_frame(dst: u32, src: u32) -> Output {
        let m = Message::new(
            ContextId(dst),
            ContextId(src),
            Handle::CANCEL_CALL,
            Encoding::Binary,
            &b"\0\0\x03\xe8"[..],
        );
        Output::Transmit { stream: StreamId(1), frame: m.to_frame() }
    }

    #[test]
    fn deadline_checker_catches_late_early_silent_and_missing_timeouts() {
        let p = plan(vec![0]);
        let issue = |tr: &mut Trace, c: u64, deadline: u64| {
            tr.push(
                t(1),
                0,
                What::CallIssued { call: CallId(c), to: ContextId(1), deadline: Some(t(deadline)) },
            )
        };
        let mut bad = base();
        issue(&mut bad, 0, 10);
        bad.push(t(12), 0, returned(0, CallErrorKind::Timeout)); // late
        issue(&mut bad, 1, 10);
        bad.push(t(8), 0, returned(1, CallErrorKind::Timeout)); // early
        bad.push(t(8), 0, What::Out(cancel_frame(1, 0)));
        issue(&mut bad, 2, 10);
        bad.push(t(10), 0, returned(2, CallErrorKind::Timeout)); // on time, but the callee never told
        issue(&mut bad, 3, 10); // never resolved, though the run went on past its deadline
        bad.push(t(20), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        deadlines(&p, &Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["deadlines"; 4], "{v:?}");

        let mut good = base();
        issue(&mut good, 0, 10);
        good.push(t(10), 0, returned(0, CallErrorKind::Timeout));
        good.push(t(10), 0, What::Out(cancel_frame(1, 0)));
        issue(&mut good, 1, 10);
        good.push(
            t(5),
            0,
            What::Out(Output::CallReturned { call: CallId(1), result: Ok(Default::default()) }),
        );
        good.push(t(20), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        deadlines(&p, &Tree::new(&p, &good), &good, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn refusal_checker_catches_a_refused_call_left_pending() {
        // Root 0 with children 1 and 2; 1 calls its sibling 2, which refuses it. Latency 100 µs,
        // so one round trip over the four hops is well under 1 ms (plus the slack).
        let p = plan(vec![0, 0]);
        let mut tr = base();
        tr.push(t(0), 2, What::Spawned { id: ContextId(2), pid: Pid(102) });
        tr.push(t(1), 1, What::CallIssued { call: CallId(0), to: ContextId(2), deadline: None });
        // Only resolved when the caller exits, 40 ms later: the refusal was never answered.
        let mut bad = tr.clone();
        bad.push(t(41), 1, returned(0, CallErrorKind::ShuttingDown));
        let mut v = Vec::new();
        refusals_answered(&p, &Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["refusals-answered"]);
        // Never resolved at all, and the run went on.
        let mut bad = tr.clone();
        bad.push(t(41), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        refusals_answered(&p, &Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["refusals-answered"]);

        let mut good = tr.clone();
        good.push(t(2), 1, returned(0, CallErrorKind::Undeliverable));
        good.push(t(41), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        // A call down the tree (the root calling 2) is not a refusal and may take its time.
        good.push(t(1), 0, What::CallIssued { call: CallId(5), to: ContextId(2), deadline: None });
        let mut v = Vec::new();
        refusals_answered(&p, &Tree::new(&p, &good), &good, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    fn departed(id: u32, pid: u32, parent: u32) -> What {
        What::Out(Output::Departed(arbor_core::departure::Departure {
            id: ContextId(id),
            name: None,
            pid: Pid(pid),
            parent: ContextId(parent),
            status: ExitStatus::Signaled(15),
            cause: arbor_core::departure::DepartureCause::Shutdown,
        }))
    }

    #[test]
    fn departure_checker_catches_a_missing_a_doubled_and_a_false_report() {
        // Root 0 → 1 → 2: both leave before the root exits.
        let p = plan(vec![0, 1]);
        let mut tr = base();
        tr.push(t(0), 2, What::Spawned { id: ContextId(2), pid: Pid(102) });
        tr.push(t(5), 2, What::Died(ExitStatus::Signaled(15)));
        tr.push(t(6), 1, What::Died(ExitStatus::Signaled(15)));
        let mut bad = tr.clone();
        bad.push(t(6), 0, departed(1, 101, 0));
        bad.push(t(6), 0, departed(1, 101, 0)); // twice
        bad.push(t(6), 0, departed(2, 999, 1)); // wrong pid
        bad.push(t(7), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        departures(&p, &Tree::new(&p, &bad), &bad, &mut v);
        // Reported twice; a false report; and so the grandchild never truly heard of.
        assert_eq!(names(&v), ["departures"; 3], "{v:?}");

        let mut good = tr.clone();
        good.push(t(5), 0, departed(2, 102, 1));
        good.push(t(6), 0, departed(1, 101, 0));
        good.push(t(7), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        departures(&p, &Tree::new(&p, &good), &good, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn auth_checker_catches_calls_run_for_non_ancestors_and_forged_calls() {
        let p = plan(vec![0, 0]);
        let mut bad = base();
        bad.push(t(0), 2, What::Spawned { id: ContextId(2), pid: Pid(102) });
        let run = |caller: u32, f: &str| {
            What::Out(Output::RunCall {
                job: JobId(0),
                caller: ContextId(caller),
                request: CallRequest::new(f, ""),
            })
        };
        bad.push(t(1), 1, run(2, "echo")); // a sibling's call
        bad.push(t(1), 1, run(0, "forged"));
        bad.push(t(1), 1, run(0, "echo")); // fine: the root is an ancestor
        let mut v = Vec::new();
        auth_boundary(&Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["auth-boundary", "auth-boundary"]);
    }

    #[test]
    fn process_checker_catches_a_survivor() {
        let p = plan(vec![0]);
        let mut bad = base();
        died(&mut bad, 1, 0);
        let mut v = Vec::new();
        no_process_left(&Tree::new(&p, &bad), &bad, &mut v);
        assert_eq!(names(&v), ["no-process-left"]);
    }

    #[test]
    fn stream_checker_catches_exit_with_a_stream_open() {
        let mut bad = base();
        bad.push(t(0), 1, What::Opened(StreamId(0)));
        bad.push(t(0), 1, What::Opened(StreamId(1)));
        bad.push(t(1), 1, What::Out(Output::Close { stream: StreamId(1) }));
        bad.push(t(1), 1, What::Out(Output::Exit { how: ExitKind::SigtermSelf }));
        let mut v = Vec::new();
        no_stream_left_open(&bad, &mut v);
        assert_eq!(names(&v), ["no-stream-left-open"]);
    }

    #[test]
    fn parent_queue_checker_catches_a_logger_read_above_the_high_water_mark() {
        let mut p = plan(vec![0]);
        p.net.parent_high_water = 64 * 1024;
        let mark = p.net.parent_high_water;
        let logger = StreamId(1);
        let mut good = base();
        // A read that started at the mark and added one read's lines is what backpressure allows.
        good.push(t(1), 1, What::ParentQueued { stream: logger, queued: mark + 4000, read: 4000 });
        let mut v = Vec::new();
        parent_queue_bound(&p, &good, &mut v);
        assert!(v.is_empty(), "{v:?}");

        let mut bad = base();
        // Loggers read on while the parent queue was already past the mark.
        bad.push(t(1), 1, What::ParentQueued { stream: logger, queued: mark + 5000, read: 4000 });
        // One "read" far bigger than a read can be.
        let huge = one_read_worth(p.net.read_size) + 1;
        bad.push(t(2), 1, What::ParentQueued { stream: logger, queued: mark + huge, read: huge });
        let mut v = Vec::new();
        parent_queue_bound(&p, &bad, &mut v);
        assert_eq!(names(&v), ["parent-queue-bound", "parent-queue-bound"]);
    }

    #[test]
    fn parent_queue_checker_catches_a_middle_context_reading_its_child_above_the_mark() {
        // Root → middle (process 1) → grandchild; the middle reads the grandchild on `s101`.
        let mut p = plan(vec![0, 1]);
        p.net.parent_high_water = 64 * 1024;
        let mark = p.net.parent_high_water;
        let child = StreamId(101);
        let line = 4096 + HEADER_LEN + 10; // one forwarded FORWARD_LOG of a runaway line
        let mut good = base();
        good.push(t(0), 2, What::Spawned { id: ContextId(2), pid: Pid(102) });
        good.push(t(1), 1, What::ParentQueued { stream: child, queued: mark + line, read: line });
        let mut v = Vec::new();
        parent_queue_bound(&p, &good, &mut v);
        assert!(v.is_empty(), "{v:?}");

        // The middle forwards its child's lines on while its own parent link takes nothing:
        // the queue climbs a frame at a time, each read starting above the mark.
        let mut bad = good.clone();
        for i in 2..5 {
            bad.push(
                t(i),
                1,
                What::ParentQueued { stream: child, queued: mark + i as usize * line, read: line },
            );
        }
        let mut v = Vec::new();
        parent_queue_bound(&p, &bad, &mut v);
        assert_eq!(names(&v), ["parent-queue-bound"; 3]);
        assert!(v[0].detail.starts_with("read s101 with"), "{}", v[0].detail);
    }

    #[test]
    fn expectation_checker_catches_loggers_never_paused() {
        let mut p = plan(vec![0]);
        p.expect = vec![Expect::LoggersPaused];
        let tree = Tree::new(&p, &base());
        let mut v = Vec::new();
        expectations(&p, &tree, &base(), &mut v);
        assert_eq!(names(&v), ["expectations"]);

        let mut good = base();
        good.push(t(1), 1, What::Backpressure { paused: true, parent_queued: 70_000 });
        let mut v = Vec::new();
        expectations(&p, &tree, &good, &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn expectation_checker_catches_a_slow_root_and_a_wrong_error_count() {
        let mut p = plan(vec![0]);
        p.expect = vec![
            Expect::RootExitWithin(Duration::from_millis(5)),
            Expect::CallErrors("disconnected".into(), 1),
        ];
        let mut bad = base();
        bad.push(t(10), 0, What::ShutdownRequested);
        bad.push(t(20), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let tree = Tree::new(&p, &bad);
        let mut v = Vec::new();
        expectations(&p, &tree, &bad, &mut v);
        assert_eq!(names(&v), ["expectations", "expectations"]);
    }
}
