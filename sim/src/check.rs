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
use crate::trace::{transmitted_shutdown, Event, Trace, What};

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
    "child-hold",
    "expectations",
];

/// Facts about the tree that the checkers need, read off the trace and plan.
pub(crate) struct Tree {
    ids: ProcMap<ContextId>,
    parents: ProcMap<ProcId>,
}

/// A map keyed by process, as a vector indexed by it: processes are numbered from 0 in plan
/// order, and the checkers look one up for most events. Iterates in process order, as an
/// ordered map would. A number past [`ProcMap::DENSE`] (no world makes one, but a trace built
/// by hand may say anything) goes to an ordered map instead, so it costs no vector that long.
#[derive(Clone, Debug)]
struct ProcMap<V> {
    dense: Vec<Option<V>>,
    sparse: BTreeMap<ProcId, V>,
}

impl<V> Default for ProcMap<V> {
    fn default() -> Self {
        ProcMap { dense: Vec::new(), sparse: BTreeMap::new() }
    }
}

impl<V> ProcMap<V> {
    const DENSE: usize = 1 << 16;

    fn insert(&mut self, p: ProcId, v: V) {
        if p >= Self::DENSE {
            self.sparse.insert(p, v);
            return;
        }
        if self.dense.len() <= p {
            self.dense.resize_with(p + 1, || None);
        }
        self.dense[p] = Some(v);
    }

    fn get(&self, p: &ProcId) -> Option<&V> {
        match self.dense.get(*p) {
            Some(v) => v.as_ref(),
            None => self.sparse.get(p),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (ProcId, &V)> {
        let dense = self.dense.iter().enumerate().filter_map(|(p, v)| v.as_ref().map(|v| (p, v)));
        dense.chain(self.sparse.iter().map(|(p, v)| (*p, v)))
    }

    fn keys(&self) -> impl Iterator<Item = ProcId> + '_ {
        self.iter().map(|(p, _)| p)
    }

    /// `p`'s value, a default one first if it has none.
    fn get_or_default(&mut self, p: ProcId) -> &mut V
    where
        V: Default,
    {
        if p >= Self::DENSE {
            return self.sparse.entry(p).or_default();
        }
        if self.dense.len() <= p {
            self.dense.resize_with(p + 1, || None);
        }
        self.dense[p].get_or_insert_with(V::default)
    }
}

impl<V> FromIterator<(ProcId, V)> for ProcMap<V> {
    fn from_iter<I: IntoIterator<Item = (ProcId, V)>>(entries: I) -> ProcMap<V> {
        let mut map = ProcMap::default();
        for (p, v) in entries {
            map.insert(p, v);
        }
        map
    }
}

impl Tree {
    /// The whole tree of a finished run.
    #[cfg(test)]
    fn new(plan: &Plan, trace: &Trace) -> Tree {
        let mut tree = Tree::empty(plan);
        for e in &trace.events {
            if let What::Spawned { id, .. } = e.what {
                tree.ids.insert(e.proc, id);
            }
        }
        tree
    }

    /// The plan's tree with no process's id known yet ([`check`] learns them as it reads).
    fn empty(plan: &Plan) -> Tree {
        let parents = (1..plan.procs()).filter_map(|p| plan.parent(p).map(|q| (p, q))).collect();
        Tree { ids: ProcMap::default(), parents }
    }

    /// No tree at all: for the checkers that never ask.
    #[cfg(test)]
    fn none() -> Tree {
        Tree { ids: ProcMap::default(), parents: ProcMap::default() }
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
        self.ids.iter().find(|(_, i)| **i == id).map(|(p, _)| p)
    }
}

/// Runs every checker, in one pass over the trace: each event is handed to every rule in turn
/// (a rule keeps what it needs to judge the run at the end), so a long trace is read once, not
/// once per checker. Violations come out grouped by checker, in [`CHECKERS`] order.
pub fn check(plan: &Plan, trace: &Trace) -> Vec<Violation> {
    // Ids are learnt as the trace goes: a process's `Spawned` precedes everything it does, and
    // its ancestors' precede its own.
    let mut tree = Tree::empty(plan);
    let mut ordering = ShutdownOrdering::default();
    let mut from_parent = ShutdownFromParent::default();
    let mut liveness = Liveness::new(plan);
    let mut lines = NoLostLines::new(plan);
    let mut once = CallsResolveOnce::default();
    let mut timing = CallTiming::new(plan);
    let mut departures = Departures::new(plan);
    let mut auth = AuthBoundary::default();
    let mut left = NoProcessLeft::default();
    let mut streams = NoStreamLeftOpen::default();
    let mut exit_final = ExitIsFinal::default();
    let mut abandoned = NoChildAbandoned::default();
    let mut queue_bound = ParentQueueBound::new(plan);
    let mut hold = ChildHold::new(plan);
    let mut expectations = Expectations::new(plan);
    // One look at each event's kind, then only the rules that judge that kind see it (each
    // rule also ignores what it does not judge, so `alone` can feed it everything).
    for e in &trace.events {
        let t = &tree;
        match &e.what {
            What::Spawned { id, .. } => {
                tree.ids.insert(e.proc, *id);
                departures.event(&tree, e);
            }
            What::Opened(_) => streams.event(t, e),
            What::Out(o) => {
                exit_final.event(t, e);
                match o {
                    Output::Transmit { .. } => {
                        ordering.event(t, e);
                        from_parent.event(t, e);
                        timing.event(t, e);
                    }
                    Output::CallsClosed => ordering.event(t, e),
                    Output::RunCall { .. } => {
                        ordering.event(t, e);
                        auth.event(t, e);
                    }
                    Output::LogLine(_) => lines.event(t, e),
                    Output::CallReturned { .. } => {
                        once.event(t, e);
                        timing.event(t, e);
                        expectations.event(t, e);
                    }
                    Output::Exit { .. } => {
                        once.event(t, e);
                        departures.event(t, e);
                        streams.event(t, e);
                        expectations.event(t, e);
                    }
                    Output::Close { .. } => {
                        streams.event(t, e);
                        hold.event(t, e);
                    }
                    Output::Diagnostic(_) => {
                        timing.event(t, e);
                        abandoned.event(t, e);
                    }
                    Output::Departed(_) => departures.event(t, e),
                    _ => {}
                }
            }
            What::Phase { .. } => {
                from_parent.event(t, e);
                lines.event(t, e);
                timing.event(t, e);
                departures.event(t, e);
            }
            What::Printed(_) => {
                lines.event(t, e);
                timing.event(t, e);
            }
            What::CallIssued { .. } => {
                once.event(t, e);
                timing.event(t, e);
            }
            What::Died(_) => {
                liveness.event(t, e);
                timing.event(t, e);
                departures.event(t, e);
                left.event(t, e);
            }
            What::ShutdownRequested => {
                liveness.event(t, e);
                expectations.event(t, e);
            }
            What::Backpressure { .. } => expectations.event(t, e),
            What::ParentQueued { .. } => queue_bound.event(t, e),
            What::ChildHeld { .. } => {
                hold.event(t, e);
                timing.event(t, e);
                expectations.event(t, e);
            }
            What::ChildControl { .. } => ordering.event(t, e),
            What::Signalled(_) => {
                lines.event(t, e);
                timing.event(t, e);
                departures.event(t, e);
            }
            What::Fault(_) | What::SpawnRefused { .. } => {}
        }
    }
    // The call-timing rules judge against the run's end, which they saw only if its last event
    // was theirs.
    timing.end = trace.events.last().map_or(Instant::ZERO, |e| e.at);
    let mut v = Vec::new();
    ordering.finish(&tree, &mut v);
    from_parent.finish(&tree, &mut v);
    liveness.finish(&tree, &mut v);
    lines.finish(&tree, &mut v);
    once.finish(&tree, &mut v);
    timing.finish(&tree, &mut v); // deadlines, then refusals-answered
    departures.finish(&tree, &mut v);
    auth.finish(&tree, &mut v);
    left.finish(&tree, &mut v);
    streams.finish(&tree, &mut v);
    exit_final.finish(&tree, &mut v);
    abandoned.finish(&tree, &mut v);
    queue_bound.finish(&tree, &mut v);
    hold.finish(&tree, &mut v);
    expectations.finish(&tree, &mut v);
    v
}

/// One checker, as [`check`] runs it: it sees every event once, in order, with the tree as known
/// so far, then says what the run broke.
trait Rule<'t> {
    /// The next event of the trace.
    fn event(&mut self, tree: &Tree, e: &'t Event);
    /// Appends the run's violations of this rule to `v`.
    fn finish(self, tree: &Tree, v: &mut Vec<Violation>);
}

/// Runs one rule alone over a whole trace (the checkers' own tests).
#[cfg(test)]
fn alone<'t>(mut rule: impl Rule<'t>, tree: &Tree, trace: &'t Trace, v: &mut Vec<Violation>) {
    for e in &trace.events {
        rule.event(tree, e);
    }
    rule.finish(tree, v);
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
#[derive(Default)]
struct ShutdownOrdering {
    closed: BTreeSet<ProcId>,
    /// A child being stopped on its own gets its SHUTDOWN while its parent runs on (the
    /// ordering then holds inside that subtree, which its own nodes are checked for).
    stopping: BTreeSet<(ProcId, ContextId)>,
    found: Vec<Violation>,
}

impl Rule<'_> for ShutdownOrdering {
    fn event(&mut self, _: &Tree, e: &Event) {
        if let What::ChildControl { child, kill: false } = e.what {
            self.stopping.insert((e.proc, child));
        }
        let What::Out(o) = &e.what else { return };
        let v = &mut self.found;
        match o {
            Output::CallsClosed => {
                if !self.closed.insert(e.proc) {
                    violation(
                        v,
                        "shutdown-ordering",
                        Some(e.proc),
                        Some(e.at),
                        "closed its call channel twice".into(),
                    );
                }
            }
            Output::RunCall { request, .. } if self.closed.contains(&e.proc) => violation(
                v,
                "shutdown-ordering",
                Some(e.proc),
                Some(e.at),
                format!("started call {}() after closing its call channel", request.function),
            ),
            _ => {
                if let Some(h) = transmitted_shutdown(o) {
                    if !self.closed.contains(&e.proc) && !self.stopping.remove(&(e.proc, h.dst)) {
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

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`ShutdownOrdering`] alone over a whole trace.
#[cfg(test)]
fn shutdown_ordering(trace: &Trace, v: &mut Vec<Violation>) {
    alone(ShutdownOrdering::default(), &Tree::none(), trace, v);
}

/// A node begins shutdown on a parent's request only after its immediate parent sent it one.
#[derive(Default)]
struct ShutdownFromParent {
    told: BTreeSet<ProcId>,
    found: Vec<Violation>,
}

impl Rule<'_> for ShutdownFromParent {
    fn event(&mut self, tree: &Tree, e: &Event) {
        match &e.what {
            What::Out(o) => {
                if let Some(h) = transmitted_shutdown(o) {
                    if h.src == tree.ids.get(&e.proc).copied().unwrap_or(h.src) {
                        if let Some(child) = tree.proc_of(h.dst) {
                            if tree.parents.get(&child) == Some(&e.proc) {
                                self.told.insert(child);
                            }
                        }
                    }
                }
            }
            What::Phase { to: PhaseKind::Draining, cause: Some(Cause::ParentRequest) }
                if !self.told.contains(&e.proc) =>
            {
                violation(
                    &mut self.found,
                    "shutdown-from-parent",
                    Some(e.proc),
                    Some(e.at),
                    "obeyed a SHUTDOWN its immediate parent never sent".into(),
                );
            }
            _ => {}
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`ShutdownFromParent`] alone over a whole trace.
#[cfg(test)]
fn shutdown_from_parent(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(ShutdownFromParent::default(), tree, trace, v);
}

/// Once the root begins shutdown, every process is gone within the root's grace plus the kill
/// escalation; if the root dies first, everything dies with it at once.
struct Liveness {
    bound: Duration,
    began: Option<Instant>,
    root_died: Option<Instant>,
    deaths: Vec<(ProcId, Instant)>,
}

impl Liveness {
    fn new(plan: &Plan) -> Liveness {
        let bound = plan.net.grace + Escalation::default().total() + LIVENESS_SLACK;
        Liveness { bound, began: None, root_died: None, deaths: Vec::new() }
    }
}

impl Rule<'_> for Liveness {
    fn event(&mut self, _: &Tree, e: &Event) {
        match e.what {
            What::ShutdownRequested if e.proc == 0 && self.began.is_none() => self.began = Some(e.at),
            What::Died(_) => {
                if e.proc == 0 && self.root_died.is_none() {
                    self.root_died = Some(e.at);
                }
                self.deaths.push((e.proc, e.at));
            }
            _ => {}
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        let deadline = match (self.began, self.root_died) {
            (Some(t), Some(d)) if d < t => d + LIVENESS_SLACK,
            (Some(t), _) => t + self.bound,
            (None, Some(d)) => d + LIVENESS_SLACK,
            (None, None) => return, // never asked to end; no-process-left reports what lives on
        };
        for (p, at) in self.deaths {
            if at > deadline {
                violation(
                    v,
                    "liveness",
                    Some(p),
                    Some(at),
                    format!("gone only {:?} after the bound", at.saturating_duration_since(deadline)),
                );
            }
        }
    }
}

/// [`Liveness`] alone over a whole trace.
#[cfg(test)]
fn liveness(plan: &Plan, trace: &Trace, v: &mut Vec<Violation>) {
    alone(Liveness::new(plan), &Tree::none(), trace, v);
}

/// On a graceful shutdown (nothing forced, no disruptive fault) every line printed reaches the
/// root exactly once, in order.
struct NoLostLines<'t> {
    /// Lines must arrive whatever happened (`Expect::AllLines`).
    required: bool,
    disruptive: bool,
    forced: bool,
    /// What each context wrote, as one text; its lines are what must arrive (a final fragment
    /// without a newline included, as it is delivered at EOF).
    written: BTreeMap<ContextId, String>,
    arrived: BTreeMap<ContextId, Vec<&'t str>>,
}

impl NoLostLines<'_> {
    fn new(plan: &Plan) -> Self {
        NoLostLines {
            required: plan.expect.contains(&Expect::AllLines),
            disruptive: plan.is_disruptive(),
            forced: false,
            written: BTreeMap::new(),
            arrived: BTreeMap::new(),
        }
    }
}

impl<'t> Rule<'t> for NoLostLines<'t> {
    fn event(&mut self, tree: &Tree, e: &'t Event) {
        match &e.what {
            // A forced disconnect, of the tree or of one child stopped on its own and escalated
            // (the signals say so), may lose what was still in flight.
            What::Phase { to: PhaseKind::ForceDisconnect, .. } | What::Signalled(_) => self.forced = true,
            What::Printed(text) => {
                if let Some(id) = tree.ids.get(&e.proc) {
                    self.written.entry(*id).or_default().push_str(text);
                }
            }
            What::Out(Output::LogLine(l)) if e.proc == 0 => {
                self.arrived.entry(l.context).or_default().push(&l.text)
            }
            _ => {}
        }
    }

    fn finish(self, tree: &Tree, v: &mut Vec<Violation>) {
        if !self.required && (self.forced || self.disruptive) {
            return;
        }
        for (id, text) in &self.written {
            let lines: Vec<&str> = text.strip_suffix('\n').unwrap_or(text).split('\n').collect();
            let got = self.arrived.get(id).map(Vec::as_slice).unwrap_or(&[]);
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
}

/// [`NoLostLines`] alone over a whole trace.
#[cfg(test)]
fn no_lost_lines(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(NoLostLines::new(plan), tree, trace, v);
}

/// Every call is resolved at most once, and exactly once by a node that finished on its own.
#[derive(Default)]
struct CallsResolveOnce {
    /// Per process, per call: what has been seen of it.
    calls: ProcMap<CallTable>,
    exited: BTreeSet<ProcId>,
    found: Vec<Violation>,
}

/// What is known of one process's calls, by call id. A node numbers its calls 0, 1, 2, … so
/// they index a vector (a map at every issue and answer cost more than every other checker
/// together); ids past [`CallTable::DENSE`] (never made by a node, but a trace may say
/// anything) go to a map.
#[derive(Default)]
struct CallTable {
    /// `0`: not seen; `n + 1`: seen with `n` answers since it was last issued.
    dense: Vec<u32>,
    sparse: BTreeMap<u64, u32>,
}

impl CallTable {
    const DENSE: u64 = 1 << 20;

    fn slot(&mut self, call: u64) -> &mut u32 {
        if call < Self::DENSE {
            let i = call as usize;
            if i >= self.dense.len() {
                self.dense.resize(i + 1, 0);
            }
            &mut self.dense[i]
        } else {
            self.sparse.entry(call).or_insert(0)
        }
    }

    /// Every call in id order with its state.
    fn all(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let dense = self.dense.iter().enumerate().map(|(i, s)| (i as u64, *s));
        dense.chain(self.sparse.iter().map(|(c, s)| (*c, *s)))
    }
}

impl Rule<'_> for CallsResolveOnce {
    fn event(&mut self, _: &Tree, e: &Event) {
        match &e.what {
            What::CallIssued { call: c, .. } => *self.calls.get_or_default(e.proc).slot(c.0) = 1,
            What::Out(Output::CallReturned { call, .. }) => {
                let slot = self.calls.get_or_default(e.proc).slot(call.0);
                *slot = (*slot).max(1) + 1;
                if *slot > 2 {
                    violation(
                        &mut self.found,
                        "calls-resolve-once",
                        Some(e.proc),
                        Some(e.at),
                        format!("call {} resolved twice", call.0),
                    );
                }
            }
            What::Out(Output::Exit { .. }) => {
                self.exited.insert(e.proc);
            }
            _ => {}
        }
    }

    fn finish(mut self, _: &Tree, v: &mut Vec<Violation>) {
        for (p, table) in self.calls.iter() {
            if !self.exited.contains(&p) {
                continue;
            }
            for (call, _) in table.all().filter(|(_, state)| *state == 1) {
                violation(
                    &mut self.found,
                    "calls-resolve-once",
                    Some(p),
                    None,
                    format!("call {call} never resolved before exit"),
                );
            }
        }
        v.extend(self.found);
    }
}

/// [`CallsResolveOnce`] alone over a whole trace.
#[cfg(test)]
fn calls_resolve_once(trace: &Trace, v: &mut Vec<Violation>) {
    alone(CallsResolveOnce::default(), &Tree::none(), trace, v);
}

/// What the call-timing checkers (`deadlines`, `refusals-answered`) need of a run, noted in
/// the one pass: the calls they may judge and those calls' answers, in order, each process's
/// first death, the cancels, the bytes framed. They judge at the end, when the tree is whole.
///
/// A call neither rule can judge is not noted at all: one without a deadline to a callee already
/// known, when the call is issued, to be the caller or below it. The tree read at the end would
/// say the same of it (a process's id, its parents and its ancestors' ids are all known once it
/// has been spawned, and a later process never takes a lower index), so the end's verdict is
/// unchanged; a long run of ordinary calls then costs no memory here.
struct CallTiming<'t> {
    /// Every call that may be judged: (caller, call, callee's id, deadline, when).
    issued: Vec<(ProcId, u64, ContextId, Option<Instant>, Instant)>,
    /// The `(caller, call)` of each of them, to note their answers.
    judged: BTreeSet<(ProcId, u64)>,
    /// Whether a caller may call a context ([`refused_by`]), for the pairs whose callee was known
    /// when the first call between them was issued (a run makes many calls between few pairs).
    allowed: BTreeMap<(ProcId, ContextId), bool>,
    /// The answers of those calls: (caller, call, when, error kind if any).
    answered: Vec<(ProcId, u64, Instant, Option<CallErrorKind>)>,
    died: BTreeMap<ProcId, Instant>,
    /// A CANCEL_CALL sent, or refused by the caller's own router, by (caller, when).
    cancels: BTreeSet<(ProcId, Instant)>,
    /// Everything framed in the run, generously: each line and each frame header with room to
    /// spare. What can be queued ahead of an answer on any link is at most this.
    framed: usize,
    /// When the run's last event happened.
    end: Instant,
    /// A node force-disconnected its children, or a process was signalled (a forced stop of
    /// one child): links that an answer would travel were closed under it.
    forced: bool,
    /// A parent stopped reading a child's stream (a hold): an answer coming up it waited.
    held: bool,
    plan: &'t Plan,
}

impl<'t> CallTiming<'t> {
    fn new(plan: &'t Plan) -> CallTiming<'t> {
        CallTiming {
            issued: Vec::new(),
            judged: BTreeSet::new(),
            allowed: BTreeMap::new(),
            answered: Vec::new(),
            died: BTreeMap::new(),
            cancels: BTreeSet::new(),
            framed: 0,
            end: Instant::ZERO,
            forced: false,
            held: false,
            plan,
        }
    }

    /// The first answer of each of `calls`: `(proc, call) -> (at, error kind if any)`.
    fn resolutions(
        &self,
        calls: &BTreeSet<(ProcId, u64)>,
    ) -> BTreeMap<(ProcId, u64), (Instant, Option<CallErrorKind>)> {
        let mut out = BTreeMap::new();
        if calls.is_empty() {
            return out;
        }
        for &(p, call, at, kind) in &self.answered {
            if calls.contains(&(p, call)) {
                out.entry((p, call)).or_insert((at, kind));
            }
        }
        out
    }

    /// Calls with a deadline (docs/shutdown.md "Deadlines"): each resolves no later than its
    /// deadline, `Timeout` exactly at it, and a caller that times a call out tells the callee
    /// at that instant (a CANCEL_CALL sent, or refused for want of a route; a call to itself is
    /// told within the node). A caller that is frozen, or dies first, is excused: it cannot act.
    fn deadlines(&self, tree: &Tree, v: &mut Vec<Violation>) {
        let (plan, end) = (self.plan, self.end);
        let judged: BTreeSet<(ProcId, u64)> =
            self.issued.iter().filter(|c| c.3.is_some()).map(|c| (c.0, c.1)).collect();
        let resolved = self.resolutions(&judged);
        for &(p, call, to, deadline, _) in &self.issued {
            let Some(deadline) = deadline else { continue };
            let to_self = tree.ids.get(&p) == Some(&to);
            if ever_frozen(plan, p) || self.died.get(&p).is_some_and(|d| *d <= deadline) {
                continue;
            }
            let mut bad = |at: Instant, detail: String| violation(v, "deadlines", Some(p), Some(at), detail);
            match resolved.get(&(p, call)) {
                Some(&(at, _)) if at > deadline => bad(
                    at,
                    format!(
                        "call {call} resolved {:?} after its deadline",
                        at.saturating_duration_since(deadline)
                    ),
                ),
                Some(&(at, Some(CallErrorKind::Timeout))) if at != deadline => {
                    bad(at, format!("call {call} timed out before its deadline"))
                }
                Some(&(at, Some(CallErrorKind::Timeout))) if !to_self && !self.cancels.contains(&(p, at)) => {
                    bad(at, format!("call {call} timed out without telling its callee"))
                }
                None if end > deadline => {
                    bad(deadline, format!("call {call} still pending past its deadline"))
                }
                _ => {}
            }
        }
    }

    /// The liveness side of exactly-once (scenario S28): a call that a router refuses — here,
    /// any call to a context the caller is not an ancestor of — is answered by that router, so
    /// it resolves within one round trip of the path between caller and callee, never left
    /// pending until someone exits. Checked on runs where nothing may hold a message back (no
    /// stall, cut, freeze, kill, runaway output, forced disconnect or held child stream). The round trip counts each hop's latency (a
    /// `Delay` included) and, per hop, the time the link needs to carry everything the run sent
    /// before the answer could be queued behind it (a socket moves at most `capacity` bytes per
    /// latency).
    fn refusals_answered(&self, tree: &Tree, v: &mut Vec<Violation>) {
        let plan = self.plan;
        if self.forced
            || self.held
            || plan.is_disruptive()
            || plan.faults.iter().any(|(_, f)| matches!(f, Fault::Runaway(_)))
        {
            return;
        }
        // The refused calls: to a context the caller is not an ancestor of (worked out once per
        // caller and callee: a run makes many calls between few pairs).
        let mut judged: BTreeMap<(ProcId, ContextId), Option<ProcId>> = BTreeMap::new();
        let refused: Vec<(ProcId, u64, ContextId, ProcId, Instant)> = self
            .issued
            .iter()
            .filter_map(|&(p, call, to, _, at)| {
                let refused_by = *judged.entry((p, to)).or_insert_with(|| refused_by(tree, p, to).flatten());
                refused_by.map(|callee| (p, call, to, callee, at))
            })
            .collect();
        if refused.is_empty() {
            return;
        }
        let resolved = self.resolutions(&refused.iter().map(|r| (r.0, r.1)).collect());
        let windows = 1 + self.framed.div_ceil(plan.net.capacity.max(1)) as u32;
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
        for (caller, call, to, callee, issued_at) in refused {
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
            let mut q = Some(caller);
            while let Some(p) = q {
                above_caller.insert(p);
                q = plan.parent(p);
            }
            let (down, lca) = path(callee, &above_caller);
            let (up, _) = path(caller, &BTreeSet::from([lca]));
            // A callee that died before the call resolved may have taken its routes with it:
            // then no context below the root need know of it, the call goes up by the parent
            // fallback, and the refusal can come from as high as the root.
            let resolved_at = resolved.get(&(caller, call)).map_or(self.end, |r| r.0);
            let (up, down) = match self.died.get(&callee) {
                Some(&died) if died <= resolved_at => (path(caller, &BTreeSet::new()).0.max(up), down),
                _ => (up, down),
            };
            let bound = issued_at + 2 * (up + down) + LIVENESS_SLACK;
            match resolved.get(&(caller, call)) {
                Some(&(at, _)) if at > bound => violation(
                    v,
                    "refusals-answered",
                    Some(caller),
                    Some(at),
                    format!(
                        "refused call {call} resolved {:?} after one round trip",
                        at.saturating_duration_since(bound)
                    ),
                ),
                None if self.end > bound => violation(
                    v,
                    "refusals-answered",
                    Some(caller),
                    Some(bound),
                    format!("refused call {call} to {to} still pending after one round trip"),
                ),
                _ => {}
            }
        }
    }
}

impl<'t> Rule<'t> for CallTiming<'_> {
    fn event(&mut self, tree: &Tree, e: &'t Event) {
        self.end = e.at;
        match &e.what {
            What::CallIssued { call, to, deadline } => {
                let allowed = match self.allowed.get(&(e.proc, *to)) {
                    Some(&allowed) => allowed,
                    None => match refused_by(tree, e.proc, *to) {
                        Some(refused) => *self.allowed.entry((e.proc, *to)).or_insert(refused.is_none()),
                        None => false, // no such context yet: judged at the end
                    },
                };
                if deadline.is_some() || !allowed {
                    self.issued.push((e.proc, call.0, *to, *deadline, e.at));
                    self.judged.insert((e.proc, call.0));
                }
            }
            What::Out(Output::CallReturned { call, result }) if self.judged.contains(&(e.proc, call.0)) => {
                self.answered.push((e.proc, call.0, e.at, result.as_ref().err().map(|e| e.kind)))
            }
            What::Died(_) => {
                self.died.entry(e.proc).or_insert(e.at);
            }
            What::Printed(t) => self.framed += t.len() + 64,
            What::Phase { to: PhaseKind::ForceDisconnect, .. } | What::Signalled(_) => self.forced = true,
            What::ChildHeld { held: true, .. } => self.held = true,
            What::Out(o) => {
                if let Output::Transmit { frame, .. } = o {
                    self.framed += frame.len();
                }
                if is_cancel(o) {
                    self.cancels.insert((e.proc, e.at));
                }
            }
            _ => {}
        }
    }

    fn finish(self, tree: &Tree, v: &mut Vec<Violation>) {
        self.deadlines(tree, v);
        self.refusals_answered(tree, v);
    }
}

/// Whether the plan ever freezes `p` (a frozen process does nothing, its timers included, so
/// no time bound holds for what it waits on).
fn ever_frozen(plan: &Plan, p: ProcId) -> bool {
    plan.faults.iter().any(|(_, f)| matches!(f, Fault::Freeze(q) if *q == p))
}

/// The `deadlines` checker alone over a whole trace.
#[cfg(test)]
fn deadlines(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let mut timing = CallTiming::new(plan);
    trace.events.iter().for_each(|e| timing.event(tree, e));
    timing.deadlines(tree, v);
}

/// The `refusals-answered` checker alone over a whole trace.
#[cfg(test)]
fn refusals_answered(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    let mut timing = CallTiming::new(plan);
    trace.events.iter().for_each(|e| timing.event(tree, e));
    timing.refusals_answered(tree, v);
}

/// Whether a call from `caller` to context `to` is one a router refuses, by the tree known so
/// far: `Some(Some(callee))` if the caller is not an ancestor of the callee (`refusals-answered`
/// judges it), `Some(None)` if it may call it (itself, or a context below it), `None` while no
/// process with that id is known.
fn refused_by(tree: &Tree, caller: ProcId, to: ContextId) -> Option<Option<ProcId>> {
    let callee = tree.proc_of(to)?;
    let caller_id = tree.ids.get(&caller).copied();
    let allowed = callee == caller || caller_id.is_none_or(|id| tree.ancestors(callee).contains(&id));
    Some((!allowed).then_some(callee))
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

/// The root hears of every context that leaves (docs/shutdown.md "One child"): each departure it
/// reports names a process of the tree by its id and pid with its real parent, at most once;
/// every child of the root that died before the root exited was reported, and, on a run where
/// nothing was forced or disrupted, every other process too, grandchildren included (their
/// parents send the news up).
struct Departures<'t> {
    plan: &'t Plan,
    pids: BTreeMap<ProcId, arbor_core::reaper::Pid>,
    died: BTreeSet<ProcId>,
    /// The departures the root reported, in order (judged at the end, with the whole tree).
    reported: Vec<(&'t arbor_core::departure::Departure, Instant)>,
    root_exited: bool,
    disrupted: bool,
}

impl<'t> Departures<'t> {
    fn new(plan: &'t Plan) -> Departures<'t> {
        Departures {
            plan,
            pids: BTreeMap::new(),
            died: BTreeSet::new(),
            reported: Vec::new(),
            root_exited: false,
            disrupted: plan.is_disruptive(),
        }
    }
}

impl<'t> Rule<'t> for Departures<'t> {
    fn event(&mut self, _: &Tree, e: &'t Event) {
        match &e.what {
            What::Spawned { pid, .. } => {
                self.pids.insert(e.proc, *pid);
            }
            What::Died(_) if e.proc != 0 && !self.root_exited => {
                self.died.insert(e.proc);
            }
            What::Phase { to: PhaseKind::ForceDisconnect, .. } | What::Signalled(_) => self.disrupted = true,
            What::Out(Output::Exit { .. }) if e.proc == 0 => self.root_exited = true,
            What::Out(Output::Departed(d)) if e.proc == 0 => self.reported.push((d, e.at)),
            _ => {}
        }
    }

    fn finish(self, tree: &Tree, v: &mut Vec<Violation>) {
        let plan = self.plan;
        let mut heard: BTreeMap<ProcId, usize> = BTreeMap::new();
        for (d, at) in self.reported {
            let who = tree.proc_of(d.id);
            let real_parent = who.and_then(|p| plan.parent(p)).and_then(|q| tree.ids.get(&q)).copied();
            match who {
                Some(p) if self.pids.get(&p) == Some(&d.pid) && real_parent == Some(d.parent) => {
                    *heard.entry(p).or_insert(0) += 1;
                    if heard[&p] > 1 {
                        violation(
                            v,
                            "departures",
                            Some(p),
                            Some(at),
                            format!("context {} reported twice", d.id),
                        );
                    }
                }
                _ => violation(
                    v,
                    "departures",
                    None,
                    Some(at),
                    format!(
                        "a departure of no such process: {} (pid {}, child of {})",
                        d.id, d.pid, d.parent
                    ),
                ),
            }
        }
        if !self.root_exited {
            return;
        }
        // The root reaps its own children, so it hears of each of them whatever happened; news
        // of deeper ones travels up links a disrupted run may have cut or a stop may have
        // forced, so those are required only when nothing was.
        let required = |p: &&ProcId| !self.disrupted || plan.parent(**p) == Some(0);
        for p in self.died.iter().filter(required).filter(|p| !heard.contains_key(p)) {
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
}

/// [`Departures`] alone over a whole trace.
#[cfg(test)]
fn departures(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(Departures::new(plan), tree, trace, v);
}

/// Nothing crosses an authentication boundary: no forged call runs, and every call that runs
/// was made by the context itself or one of its ancestors.
#[derive(Default)]
struct AuthBoundary {
    /// Each process's ancestors' ids, learnt at its first call (they were all spawned before it).
    ancestors: ProcMap<Vec<ContextId>>,
    found: Vec<Violation>,
}

impl Rule<'_> for AuthBoundary {
    fn event(&mut self, tree: &Tree, e: &Event) {
        if let What::Out(Output::RunCall { caller, request, .. }) = &e.what {
            let me = tree.ids.get(&e.proc).copied();
            let allowed = Some(*caller) == me || {
                if self.ancestors.get(&e.proc).is_none() {
                    self.ancestors.insert(e.proc, tree.ancestors(e.proc));
                }
                self.ancestors.get(&e.proc).is_some_and(|a| a.contains(caller))
            };
            if request.function == crate::world::FORGED_FUNCTION || !allowed {
                violation(
                    &mut self.found,
                    "auth-boundary",
                    Some(e.proc),
                    Some(e.at),
                    format!("ran {}() for context {caller}", request.function),
                );
            }
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`AuthBoundary`] alone over a whole trace.
#[cfg(test)]
fn auth_boundary(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(AuthBoundary::default(), tree, trace, v);
}

/// No process outlives the run.
#[derive(Default)]
struct NoProcessLeft {
    dead: BTreeSet<ProcId>,
}

impl Rule<'_> for NoProcessLeft {
    fn event(&mut self, _: &Tree, e: &Event) {
        if matches!(e.what, What::Died(_)) {
            self.dead.insert(e.proc);
        }
    }

    fn finish(self, tree: &Tree, v: &mut Vec<Violation>) {
        for p in tree.ids.keys() {
            if !self.dead.contains(&p) {
                violation(v, "no-process-left", Some(p), None, "still alive at the end of the run".into());
            }
        }
    }
}

/// [`NoProcessLeft`] alone over a whole trace.
#[cfg(test)]
fn no_process_left(tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(NoProcessLeft::default(), tree, trace, v);
}

/// A node that exits has closed every stream it was given.
#[derive(Default)]
struct NoStreamLeftOpen {
    open: BTreeMap<ProcId, BTreeSet<StreamId>>,
    found: Vec<Violation>,
}

impl Rule<'_> for NoStreamLeftOpen {
    fn event(&mut self, _: &Tree, e: &Event) {
        match &e.what {
            What::Opened(s) => {
                self.open.entry(e.proc).or_default().insert(*s);
            }
            What::Out(Output::Close { stream }) => {
                self.open.entry(e.proc).or_default().remove(stream);
            }
            What::Out(Output::Exit { .. }) => {
                if let Some(left) = self.open.get(&e.proc).filter(|s| !s.is_empty()) {
                    violation(
                        &mut self.found,
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

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`NoStreamLeftOpen`] alone over a whole trace.
#[cfg(test)]
fn no_stream_left_open(trace: &Trace, v: &mut Vec<Violation>) {
    alone(NoStreamLeftOpen::default(), &Tree::none(), trace, v);
}

/// `Exit` is a node's last output: nothing follows it, not even a diagnostic.
#[derive(Default)]
struct ExitIsFinal {
    exited: BTreeSet<ProcId>,
    found: Vec<Violation>,
}

impl Rule<'_> for ExitIsFinal {
    fn event(&mut self, _: &Tree, e: &Event) {
        if let What::Out(o) = &e.what {
            if self.exited.contains(&e.proc) {
                violation(
                    &mut self.found,
                    "exit-is-final",
                    Some(e.proc),
                    Some(e.at),
                    format!("output after Exit: {}", crate::trace::OutText(o)),
                );
            }
            if matches!(o, Output::Exit { .. }) {
                self.exited.insert(e.proc);
            }
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`ExitIsFinal`] alone over a whole trace.
#[cfg(test)]
fn exit_is_final(trace: &Trace, v: &mut Vec<Violation>) {
    alone(ExitIsFinal::default(), &Tree::none(), trace, v);
}

/// The simulator reports every exit, so a child given up on means the kill escalation failed
/// to end it.
#[derive(Default)]
struct NoChildAbandoned {
    found: Vec<Violation>,
}

impl Rule<'_> for NoChildAbandoned {
    fn event(&mut self, _: &Tree, e: &Event) {
        if let What::Out(Output::Diagnostic(arbor_core::node::Diagnostic::ChildAbandoned(pid))) = &e.what {
            violation(
                &mut self.found,
                "no-child-abandoned",
                Some(e.proc),
                Some(e.at),
                format!("gave up on child pid {pid}"),
            );
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`NoChildAbandoned`] alone over a whole trace.
#[cfg(test)]
fn no_child_abandoned(trace: &Trace, v: &mut Vec<Violation>) {
    alone(NoChildAbandoned::default(), &Tree::none(), trace, v);
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
    let text = DEFAULT_MAX_LINE_LEN.saturating_add(read_size);
    let lines = read_size.saturating_add(1 + text / DEFAULT_MAX_LINE_LEN);
    text.saturating_add(lines.saturating_mul(FRAME_OVERHEAD))
}

/// A parent's hold on a child's stream (the host contract, docs/embedding.md): the stream is
/// left unread only once more than the child high-water mark is queued towards that child, and
/// read again once the child has read the queue down to half the mark (or a write to it failed
/// and nothing is queued). A hold is taken once and let go once. A stream that closes while
/// held may still be let go (its queue drains, or fails, before the close is done).
struct ChildHold {
    mark: usize,
    held: BTreeSet<(ProcId, StreamId)>,
    /// Held streams whose node has closed them: what is queued may still drain.
    closing: BTreeSet<(ProcId, StreamId)>,
    found: Vec<Violation>,
}

impl ChildHold {
    fn new(plan: &Plan) -> ChildHold {
        ChildHold {
            mark: plan.net.child_high_water,
            held: BTreeSet::new(),
            closing: BTreeSet::new(),
            found: Vec::new(),
        }
    }
}

impl Rule<'_> for ChildHold {
    fn event(&mut self, _: &Tree, e: &Event) {
        let mark = self.mark;
        let mut bad =
            |detail: String| violation(&mut self.found, "child-hold", Some(e.proc), Some(e.at), detail);
        match e.what {
            What::ChildHeld { stream, held: true, queued } => {
                if queued <= mark {
                    bad(format!(
                        "held {stream} with {queued} bytes queued to it, not above the {mark}-byte mark"
                    ));
                }
                if !self.held.insert((e.proc, stream)) {
                    bad(format!("held {stream}, already held"));
                }
            }
            What::ChildHeld { stream, held: false, queued } => {
                if queued > mark / 2 {
                    bad(format!(
                        "read {stream} again with {queued} bytes queued to it, above half the {mark}-byte mark"
                    ));
                }
                if !self.held.remove(&(e.proc, stream)) && !self.closing.remove(&(e.proc, stream)) {
                    bad(format!("read {stream} again, never held"));
                }
            }
            What::Out(Output::Close { stream }) => {
                let was_held = self.held.remove(&(e.proc, stream));
                if was_held {
                    self.closing.insert((e.proc, stream));
                }
            }
            _ => {}
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`ChildHold`] alone over a whole trace.
#[cfg(test)]
fn child_hold(plan: &Plan, trace: &Trace, v: &mut Vec<Violation>) {
    alone(ChildHold::new(plan), &Tree::none(), trace, v);
}

/// Backpressure (the host contract, docs/embedding.md): a process reads its loggers and its
/// children's streams only while the bytes queued on its parent stream are at most the
/// high-water mark, so that queue never exceeds the mark by more than one read's worth — a
/// middle context included, whatever its children forward up. The world records every new
/// high mark above the mark that such a read left, with the stream read and what the read added.
struct ParentQueueBound {
    mark: usize,
    worth: usize,
    found: Vec<Violation>,
}

impl ParentQueueBound {
    fn new(plan: &Plan) -> ParentQueueBound {
        ParentQueueBound {
            mark: plan.net.parent_high_water,
            worth: one_read_worth(plan.net.read_size),
            found: Vec::new(),
        }
    }
}

impl Rule<'_> for ParentQueueBound {
    fn event(&mut self, _: &Tree, e: &Event) {
        let What::ParentQueued { stream, queued, read } = e.what else { return };
        let (mark, worth) = (self.mark, self.worth);
        let before = queued.saturating_sub(read);
        if before > mark {
            violation(
                &mut self.found,
                "parent-queue-bound",
                Some(e.proc),
                Some(e.at),
                format!("read {stream} with {before} bytes queued on its parent stream, above the {mark}-byte high-water mark"),
            );
        } else if read > worth {
            violation(
                &mut self.found,
                "parent-queue-bound",
                Some(e.proc),
                Some(e.at),
                format!("one read of {stream} queued {read} bytes towards the parent, more than one read's worth ({worth})"),
            );
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        v.extend(self.found);
    }
}

/// [`ParentQueueBound`] alone over a whole trace.
#[cfg(test)]
fn parent_queue_bound(plan: &Plan, trace: &Trace, v: &mut Vec<Violation>) {
    alone(ParentQueueBound::new(plan), &Tree::none(), trace, v);
}

/// The scenario's own promises.
struct Expectations<'p> {
    expect: &'p [Expect],
    began: Option<Instant>,
    root_exit: Option<Instant>,
    paused: bool,
    held: bool,
    /// Calls that failed, by error kind.
    errors: BTreeMap<&'static str, usize>,
}

impl<'p> Expectations<'p> {
    fn new(plan: &'p Plan) -> Expectations<'p> {
        Expectations {
            expect: &plan.expect,
            began: None,
            root_exit: None,
            paused: false,
            held: false,
            errors: BTreeMap::new(),
        }
    }
}

impl Rule<'_> for Expectations<'_> {
    fn event(&mut self, _: &Tree, e: &Event) {
        if self.expect.is_empty() {
            return;
        }
        match &e.what {
            What::ShutdownRequested if e.proc == 0 && self.began.is_none() => self.began = Some(e.at),
            What::Out(Output::Exit { .. }) if e.proc == 0 && self.root_exit.is_none() => {
                self.root_exit = Some(e.at)
            }
            What::Backpressure { paused: true, .. } => self.paused = true,
            What::ChildHeld { held: true, .. } => self.held = true,
            What::Out(Output::CallReturned { result: Err(err), .. }) => {
                *self.errors.entry(kind_name(err.kind)).or_default() += 1
            }
            _ => {}
        }
    }

    fn finish(self, _: &Tree, v: &mut Vec<Violation>) {
        for x in self.expect {
            match x {
                Expect::RootExitWithin(d) => match (self.began, self.root_exit) {
                    (Some(b), Some(x)) if x <= b + *d => {}
                    (Some(b), Some(x)) => violation(
                        v,
                        "expectations",
                        Some(0),
                        Some(x),
                        format!(
                            "root-exit-within: root exited {:?} after shutdown began, promised within {d:?}",
                            x.saturating_duration_since(b)
                        ),
                    ),
                    _ => violation(
                        v,
                        "expectations",
                        Some(0),
                        None,
                        "root-exit-within: the root never exited after shutdown".into(),
                    ),
                },
                Expect::AllLines => {} // enforced by no-lost-lines
                Expect::LoggersPaused => {
                    if !self.paused {
                        violation(
                            v,
                            "expectations",
                            None,
                            None,
                            "loggers-paused: no process's loggers were ever paused".into(),
                        );
                    }
                }
                Expect::ChildHeld => {
                    if !self.held {
                        violation(
                            v,
                            "expectations",
                            None,
                            None,
                            "child-held: no child stream was ever held".into(),
                        );
                    }
                }
                Expect::CallErrors(kind, n) => {
                    let got = self.errors.get(kind.as_str()).copied().unwrap_or(0);
                    if got != *n {
                        violation(
                            v,
                            "expectations",
                            None,
                            None,
                            format!("call-errors {kind}: {got} calls failed with {kind}, expected {n}"),
                        );
                    }
                }
            }
        }
    }
}

/// [`Expectations`] alone over a whole trace.
#[cfg(test)]
fn expectations(plan: &Plan, tree: &Tree, trace: &Trace, v: &mut Vec<Violation>) {
    alone(Expectations::new(plan), tree, trace, v);
}

/// Every kind of call error, in the order [`kind_name`] lists them.
pub const KINDS: [CallErrorKind; 10] = [
    CallErrorKind::Failed,
    CallErrorKind::UnknownFunction,
    CallErrorKind::Malformed,
    CallErrorKind::ShuttingDown,
    CallErrorKind::Disconnected,
    CallErrorKind::Undeliverable,
    CallErrorKind::TooLarge,
    CallErrorKind::TypeMismatch,
    CallErrorKind::Timeout,
    CallErrorKind::Cancelled,
];

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
    fn child_hold_catches_a_hold_below_the_mark_a_release_above_half_and_unpaired_ones() {
        let mut p = plan(vec![0]);
        p.net.child_high_water = 1000;
        let held = |held, queued| What::ChildHeld { stream: StreamId(101), held, queued };
        let judge = |tr: &Trace| {
            let mut v = Vec::new();
            child_hold(&p, tr, &mut v);
            v.iter().map(|x| x.detail.clone()).collect::<Vec<_>>()
        };
        // As the host does it: held above the mark, read again at half of it (or at 0 after a
        // failed write), held again; a stream that closes while held ends the hold.
        let mut good = base();
        good.push(t(1), 0, held(true, 1001));
        good.push(t(2), 0, held(false, 500));
        good.push(t(3), 0, held(true, 1200));
        good.push(t(4), 0, held(false, 0));
        good.push(t(5), 0, held(true, 1001));
        good.push(t(6), 0, What::Out(Output::Close { stream: StreamId(101) }));
        // Closed while held: the queue drains (or fails) before the close is done.
        good.push(t(7), 0, held(false, 0));
        good.push(t(8), 0, held(true, 1001));
        good.push(t(9), 0, What::Out(Output::Close { stream: StreamId(101) }));
        assert_eq!(judge(&good), Vec::<String>::new());

        for (bad, says) in [
            (vec![held(true, 1000)], "not above the 1000-byte mark"),
            (vec![held(true, 1001), held(false, 501)], "above half the 1000-byte mark"),
            (vec![held(true, 1001), held(true, 2000)], "already held"),
            (vec![held(false, 0)], "never held"),
        ] {
            let mut tr = base();
            for (i, w) in bad.into_iter().enumerate() {
                tr.push(t(i as u64 + 1), 0, w);
            }
            let v = judge(&tr);
            assert!(v.len() == 1 && v[0].contains(says), "{says}: {v:?}");
        }
    }

    #[test]
    fn the_child_held_expectation_fails_a_run_without_a_hold() {
        let mut p = plan(vec![0]);
        p.expect = vec![Expect::ChildHeld];
        let v = check(&p, &base());
        assert!(
            v.iter().any(|x| x.checker == "expectations" && x.detail.starts_with("child-held:")),
            "{v:?}"
        );
        let mut held = base();
        held.push(t(1), 0, What::ChildHeld { stream: StreamId(101), held: true, queued: usize::MAX });
        assert!(!check(&p, &held).iter().any(|x| x.detail.starts_with("child-held:")));
    }

    #[test]
    fn a_hand_made_trace_naming_any_process_number_is_judged_without_a_crash() {
        // Process numbers far past any plan's: the checkers' tables must not try to be that
        // long, nor overflow.
        for p in [usize::MAX, usize::MAX - 1, 1 << 40, ProcMap::<()>::DENSE] {
            let mut tr = base();
            tr.push(t(1), p, What::Spawned { id: ContextId(7), pid: Pid(107) });
            tr.push(t(1), p, What::CallIssued { call: CallId(0), to: ContextId(1), deadline: None });
            tr.push(
                t(2),
                p,
                What::Out(Output::RunCall {
                    job: JobId(0),
                    caller: ContextId(0),
                    request: CallRequest::new("f", ""),
                }),
            );
            tr.push(
                t(3),
                p,
                What::Out(Output::CallReturned { call: CallId(0), result: Ok(bytes::Bytes::new()) }),
            );
            tr.push(t(4), p, What::Out(Output::Exit { how: ExitKind::Clean }));
            let v = check(&plan(vec![0]), &tr);
            assert!(!v.is_empty(), "an unknown process that never died is still a violation");
        }
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

    #[test]
    fn calls_checker_judges_any_call_id_and_a_reissued_call_afresh() {
        let ret = |c: u64| {
            What::Out(Output::CallReturned {
                call: CallId(c),
                result: Err(CallError::new(CallErrorKind::Disconnected, "x", "y")),
            })
        };
        let far = u64::MAX - 1; // past the dense table: kept in its map
        let mut bad = base();
        bad.push(t(1), 0, What::CallIssued { call: CallId(far), to: ContextId(1), deadline: None });
        bad.push(t(1), 0, What::CallIssued { call: CallId(3), to: ContextId(1), deadline: None });
        bad.push(t(2), 0, ret(far));
        bad.push(t(3), 0, ret(far));
        // Answered, issued again, answered again: once per issue.
        bad.push(t(4), 0, ret(3));
        bad.push(t(5), 0, What::CallIssued { call: CallId(3), to: ContextId(1), deadline: None });
        bad.push(t(6), 0, ret(3));
        bad.push(t(7), 0, What::CallIssued { call: CallId(far + 1), to: ContextId(1), deadline: None });
        bad.push(t(8), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        calls_resolve_once(&bad, &mut v);
        let details: Vec<&str> = v.iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(
            details,
            [format!("call {far} resolved twice"), format!("call {} never resolved before exit", far + 1)]
        );
        // check() finds the same in its one pass.
        let all = check(&plan(vec![0]), &bad);
        assert_eq!(all.iter().filter(|v| v.checker == "calls-resolve-once").count(), 2);
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
    fn call_timing_judges_each_call_by_the_whole_tree_even_one_issued_before_its_callee_was_known() {
        // `check` learns ids as it reads, so when a call is issued its callee may not be known
        // yet: such a call is kept and judged once the tree is whole. A call already known to go
        // down the tree (root 0 calling its child 2) cannot be refused, and is not kept at all.
        let p = plan(vec![0, 0]);
        let learning = |trace: &Trace| {
            let mut tree = Tree::empty(&p);
            let mut timing = CallTiming::new(&p);
            for e in &trace.events {
                if let What::Spawned { id, .. } = e.what {
                    tree.ids.insert(e.proc, id);
                }
                timing.event(&tree, e);
            }
            timing.end = trace.events.last().map_or(Instant::ZERO, |e| e.at);
            let kept = timing.issued.len();
            let mut v = Vec::new();
            timing.finish(&tree, &mut v);
            (names(&v), kept)
        };
        let mut tr = base();
        // 1 calls context 2 before 2 is spawned; 2 is its sibling, so 1's router refuses it.
        tr.push(t(1), 1, What::CallIssued { call: CallId(0), to: ContextId(2), deadline: None });
        tr.push(t(1), 2, What::Spawned { id: ContextId(2), pid: Pid(102) });
        tr.push(t(2), 0, What::CallIssued { call: CallId(7), to: ContextId(2), deadline: None });
        let mut bad = tr.clone();
        bad.push(t(41), 1, returned(0, CallErrorKind::ShuttingDown));
        assert_eq!(learning(&bad), (vec!["refusals-answered"], 1));
        let mut good = tr.clone();
        good.push(t(2), 1, returned(0, CallErrorKind::Undeliverable));
        good.push(t(41), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        assert_eq!(learning(&good), (Vec::<&str>::new(), 1));
        // A deadline keeps any call, even one down the tree: it is judged by `deadlines`.
        let mut late = tr.clone();
        late.push(t(3), 0, What::CallIssued { call: CallId(8), to: ContextId(2), deadline: Some(t(10)) });
        late.push(t(2), 1, returned(0, CallErrorKind::Undeliverable));
        late.push(t(41), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        assert_eq!(learning(&late), (vec!["deadlines"], 2));
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

        // A forced disconnect on the way may close the links the answer would take: excused.
        let mut forced = tr.clone();
        forced.push(t(1), 0, What::Phase { to: PhaseKind::ForceDisconnect, cause: Some(Cause::Forced) });
        forced.push(t(41), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let mut v = Vec::new();
        refusals_answered(&p, &Tree::new(&p, &forced), &forced, &mut v);
        assert!(v.is_empty(), "{v:?}");

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
    fn a_trace_naming_a_process_the_plan_lacks_is_judged_not_a_panic() {
        let p = plan(vec![0]);
        let mut tr = base();
        tr.push(t(0), 5, What::Spawned { id: ContextId(5), pid: Pid(105) });
        tr.push(t(1), 5, What::CallIssued { call: CallId(0), to: ContextId(1), deadline: Some(t(2)) });
        tr.push(t(1), 1, What::CallIssued { call: CallId(0), to: ContextId(5), deadline: None });
        tr.push(t(3), 5, What::Died(ExitStatus::Code(0)));
        tr.push(t(3), 0, departed(5, 105, 0));
        tr.push(t(4), 0, What::Out(Output::Exit { how: ExitKind::Clean }));
        let v = check(&p, &tr);
        assert!(v.iter().any(|v| v.checker == "departures"), "a departure of no such process: {v:?}");
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
        bad.push(t(1), 1, run(0, crate::world::FORGED_FUNCTION));
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
