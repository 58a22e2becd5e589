//! A plan: everything one simulated run depends on, and nothing else.
//!
//! A (scenario, seed) pair expands into a [`Plan`]: the tree, the network's parameters, the
//! scripted actions, the faults and when the root shuts down. The run is a pure function of the
//! plan, so a plan written to a file (its text form, [`Plan::to_text`]) is a self-contained
//! repro that `arbor-sim replay FILE` reruns, whatever the scenario code later becomes.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// Index of a process in a plan's tree; 0 is the root.
pub type ProcId = usize;

/// The modelled network and processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    /// One-way latency of every framed link.
    pub latency: Duration,
    /// Socket buffer capacity per direction, in bytes.
    pub capacity: usize,
    /// Largest single read.
    pub read_size: usize,
    /// How long a `work` call takes on a main thread.
    pub call_time: Duration,
    /// Every node's grace period.
    pub grace: Duration,
    /// Bytes queued towards its parent above which a host stops reading its own loggers
    /// (`HostConfig::parent_high_water`).
    pub parent_high_water: usize,
    /// Bytes queued towards one child above which its parent stops reading that child's stream
    /// (`HostConfig::child_high_water`).
    pub child_high_water: usize,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            latency: Duration::from_micros(100),
            capacity: 256 * 1024,
            read_size: 128 * 1024,
            call_time: Duration::from_millis(1),
            grace: arbor_core::node::DEFAULT_GRACE,
            parent_high_water: arbor_core::host::DEFAULT_PARENT_HIGH_WATER,
            child_high_water: arbor_core::host::DEFAULT_CHILD_HIGH_WATER,
        }
    }
}

/// The largest `read` a plan may set: 64 MiB.
pub const MAX_READ: usize = 64 << 20;
/// The largest socket `capacity` a plan may set: 1 GiB.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Something a process does on schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `from` calls `function` in `to` (`echo`: instant, `work`: takes `Net::call_time`,
    /// `hang`: never returns, `fail`: an error at once, anything else: unknown);
    /// `reply = false` is `call_no_reply`.
    Call {
        /// Caller.
        from: ProcId,
        /// Callee.
        to: ProcId,
        /// Function name.
        function: String,
        /// Whether an answer is wanted.
        reply: bool,
    },
    /// `from` calls `echo` in `to` `count` times, each call sent when the previous answered.
    Chain {
        /// Caller.
        from: ProcId,
        /// Callee.
        to: ProcId,
        /// How many calls.
        count: u32,
    },
    /// `proc` prints `lines` numbered lines on stdout; the last without a newline if `!newline`.
    Print {
        /// The printing process.
        proc: ProcId,
        /// How many lines.
        lines: u32,
        /// Whether the last line ends with a newline.
        newline: bool,
    },
    /// `from` calls `function` in `to` with a deadline `timeout` from now (docs/shutdown.md
    /// "Deadlines"): it resolves `Timeout` then unless answered first, and the callee is told.
    /// `park` is a function that waits forever but can be stopped, like an async one.
    CallWithin {
        /// Caller.
        from: ProcId,
        /// Callee.
        to: ProcId,
        /// Function name.
        function: String,
        /// From the call to its deadline.
        timeout: Duration,
    },
    /// `proc`'s parent shuts `proc` and its subtree down, the rest of the tree running on.
    StopChild {
        /// The child to stop (never the root).
        proc: ProcId,
    },
    /// `proc`'s parent kills `proc`.
    KillChild {
        /// The child to kill (never the root).
        proc: ProcId,
    },
    /// `proc` begins a graceful shutdown of itself and its subtree.
    Shutdown {
        /// The process.
        proc: ProcId,
    },
    /// `proc` forces its shutdown (skips the grace period), like a second Ctrl-C.
    Force {
        /// The process.
        proc: ProcId,
    },
}

/// Something that goes wrong, on schedule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Every call the process runs hangs forever.
    HangCalls(ProcId),
    /// The process ignores SIGTERM.
    IgnoreSigterm(ProcId),
    /// SIGSTOP: the process does nothing until thawed (never, if not).
    Freeze(ProcId),
    /// SIGCONT.
    Thaw(ProcId),
    /// SIGKILL from outside (the root included).
    Kill(ProcId),
    /// The link between the process and its parent breaks both ways.
    Cut(ProcId),
    /// The link between the process and its parent delivers nothing for this long.
    Stall(ProcId, Duration),
    /// Reads on the link to the parent return 1 to 64 bytes at a time.
    Fragment(ProcId),
    /// Extra latency on the link to the parent.
    Delay(ProcId, Duration),
    /// The process writes to stdout without end.
    Runaway(ProcId),
    /// The process starts a daemon that inherits its stdout and outlives it.
    Daemon(ProcId),
    /// The process writes forged frames: a call with the root's authority and a SHUTDOWN in its
    /// parent's name, both up its parent stream towards a sibling.
    Spoof(ProcId),
}

impl Fault {
    /// The process the fault is about.
    pub fn proc(&self) -> ProcId {
        match *self {
            Fault::HangCalls(p)
            | Fault::IgnoreSigterm(p)
            | Fault::Freeze(p)
            | Fault::Thaw(p)
            | Fault::Kill(p)
            | Fault::Cut(p)
            | Fault::Stall(p, _)
            | Fault::Fragment(p)
            | Fault::Delay(p, _)
            | Fault::Runaway(p)
            | Fault::Daemon(p)
            | Fault::Spoof(p) => p,
        }
    }

    /// Whether a run with this fault may lose log lines or force a disconnect legitimately.
    pub fn is_disruptive(&self) -> bool {
        !matches!(
            self,
            Fault::HangCalls(_)
                | Fault::IgnoreSigterm(_)
                | Fault::Fragment(_)
                | Fault::Delay(..)
                | Fault::Spoof(_)
        )
    }
}

/// What a scenario promises beyond the invariants every run is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The root produces `Exit` within this long after shutdown began.
    RootExitWithin(Duration),
    /// Every line printed reaches the root (checked even if the generic checker would excuse
    /// the run as disruptive).
    AllLines,
    /// This many calls resolve with the given error kind.
    CallErrors(String, usize),
    /// Some process's loggers are paused at least once (backpressure happened: the scenario
    /// shows what it is about).
    LoggersPaused,
    /// Some parent stops reading a child's stream at least once, its queue towards that child
    /// above [`Net::child_high_water`].
    ChildHeld,
}

/// A deliberately broken core, to show the checkers and the shrinker catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The real core.
    None,
    /// Nodes forward SHUTDOWN to their children before closing their call channel.
    ShutdownBeforeChannelClose,
}

/// Everything one run depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The scenario it came from.
    pub name: String,
    /// The seed it came from (kept for the record; the run itself uses only the plan).
    pub seed: u64,
    /// Network and process parameters.
    pub net: Net,
    /// `parents[i]` is the parent of process `i + 1`.
    pub parents: Vec<ProcId>,
    /// Scripted actions, by time.
    pub actions: Vec<(Duration, Action)>,
    /// Faults, by time.
    pub faults: Vec<(Duration, Fault)>,
    /// When the root begins shutdown.
    pub shutdown_at: Duration,
    /// Scenario-specific promises.
    pub expect: Vec<Expect>,
    /// The core variant under test.
    pub mutation: Mutation,
}

impl Plan {
    /// A plan for driving a world by hand: the given tree, no script, no faults, zero latency,
    /// roomy sockets, and no automatic shutdown.
    pub fn manual(parents: Vec<ProcId>) -> Plan {
        Plan {
            name: "manual".into(),
            seed: 0,
            net: Net { latency: Duration::ZERO, capacity: 1 << 30, ..Net::default() },
            parents,
            actions: Vec::new(),
            faults: Vec::new(),
            shutdown_at: Duration::MAX,
            expect: Vec::new(),
            mutation: Mutation::None,
        }
    }

    /// Number of processes.
    pub fn procs(&self) -> usize {
        self.parents.len() + 1
    }

    /// The parent of process `p`.
    pub fn parent(&self, p: ProcId) -> Option<ProcId> {
        // `None` for the root, and for a process the tree does not have (a hand-made trace may
        // name one; a checker must report it, not panic).
        p.checked_sub(1).and_then(|i| self.parents.get(i).copied())
    }

    /// Whether any fault (or a child killed on purpose) may legitimately lose lines or force a
    /// disconnect.
    pub fn is_disruptive(&self) -> bool {
        self.faults.iter().any(|(_, f)| f.is_disruptive())
            || self.actions.iter().any(|(_, a)| matches!(a, Action::KillChild { .. }))
    }

    /// The plan as text: the repro file format, read back by [`Plan::from_text`].
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "arbor-sim plan v1");
        let _ = writeln!(s, "name {}", self.name);
        let _ = writeln!(s, "seed {}", self.seed);
        let n = &self.net;
        let _ = writeln!(
            s,
            "net latency={} capacity={} read={} call={} grace={} high-water={}",
            ns(n.latency),
            n.capacity,
            n.read_size,
            ns(n.call_time),
            ns(n.grace),
            n.parent_high_water
        );
        if n.child_high_water != Net::default().child_high_water {
            // Only when set: plans written before the key read and print as they did.
            s.pop();
            let _ = writeln!(s, " child-high-water={}", n.child_high_water);
        }
        let tree: Vec<String> = self.parents.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(s, "tree {}", tree.join(" "));
        for (at, a) in &self.actions {
            let _ = match a {
                Action::Call { from, to, function, reply } => {
                    writeln!(s, "action {} call {from} {to} {function} {}", ns(at), u8::from(*reply))
                }
                Action::Chain { from, to, count } => {
                    writeln!(s, "action {} chain {from} {to} {count}", ns(at))
                }
                Action::Print { proc, lines, newline } => {
                    writeln!(s, "action {} print {proc} {lines} {}", ns(at), u8::from(*newline))
                }
                Action::CallWithin { from, to, function, timeout } => {
                    writeln!(s, "action {} call-within {from} {to} {function} {}", ns(at), ns(timeout))
                }
                Action::StopChild { proc } => writeln!(s, "action {} stop-child {proc}", ns(at)),
                Action::KillChild { proc } => writeln!(s, "action {} kill-child {proc}", ns(at)),
                Action::Shutdown { proc } => writeln!(s, "action {} shutdown {proc}", ns(at)),
                Action::Force { proc } => writeln!(s, "action {} force {proc}", ns(at)),
            };
        }
        for (at, f) in &self.faults {
            let _ = writeln!(s, "fault {} {}", ns(at), FaultText(f));
        }
        let _ = writeln!(s, "shutdown {}", ns(self.shutdown_at));
        for e in &self.expect {
            let _ = match e {
                Expect::RootExitWithin(d) => writeln!(s, "expect root-exit-within {}", ns(d)),
                Expect::AllLines => writeln!(s, "expect all-lines"),
                Expect::CallErrors(kind, n) => writeln!(s, "expect call-errors {kind} {n}"),
                Expect::LoggersPaused => writeln!(s, "expect loggers-paused"),
                Expect::ChildHeld => writeln!(s, "expect child-held"),
            };
        }
        let _ = writeln!(
            s,
            "mutation {}",
            match self.mutation {
                Mutation::None => "none",
                Mutation::ShutdownBeforeChannelClose => "shutdown-before-channel-close",
            }
        );
        s
    }

    /// Checks that the plan describes a run that can happen: every parent comes before its
    /// child, every action and fault names a process of the tree, and every name is one word (so
    /// the text form reads back the same plan). [`crate::Sim::run`] refuses a plan that fails
    /// this, so a call to process 5 of a 2-process tree is an error, not a quiet pass.
    pub fn validate(&self) -> Result<(), PlanError> {
        // A read of nothing would be retried at the same instant for ever; a socket of no room
        // could never carry a byte.
        if !(1..=MAX_READ).contains(&self.net.read_size) {
            return Err(PlanError::BadNet { what: "read", value: self.net.read_size, max: MAX_READ });
        }
        if !(1..=MAX_CAPACITY).contains(&self.net.capacity) {
            return Err(PlanError::BadNet { what: "capacity", value: self.net.capacity, max: MAX_CAPACITY });
        }
        for e in &self.expect {
            if let Expect::CallErrors(kind, _) = e {
                if !crate::check::KINDS.iter().any(|k| crate::check::kind_name(*k) == kind) {
                    return Err(PlanError::UnknownErrorKind(kind.clone()));
                }
            }
        }
        for (i, p) in self.parents.iter().enumerate() {
            if *p > i {
                return Err(PlanError::ParentAfterChild { child: i + 1, parent: *p });
            }
        }
        let procs = self.procs();
        let named = |what: &'static str, proc: ProcId| {
            if proc < procs {
                Ok(())
            } else {
                Err(PlanError::NoSuchProcess { what, proc, procs })
            }
        };
        for (_, a) in &self.actions {
            match a {
                Action::Call { from, to, function, .. } => {
                    named("call", *from)?;
                    named("call", *to)?;
                    one_word("function", function)?;
                }
                Action::Chain { from, to, .. } => {
                    named("chain", *from)?;
                    named("chain", *to)?;
                }
                Action::Print { proc, .. } => named("print", *proc)?,
                Action::CallWithin { from, to, function, .. } => {
                    named("call-within", *from)?;
                    named("call-within", *to)?;
                    one_word("function", function)?;
                }
                Action::StopChild { proc } | Action::KillChild { proc } => {
                    named("stop-child", *proc)?;
                    if *proc == 0 {
                        return Err(PlanError::NotAChild);
                    }
                }
                Action::Shutdown { proc } => named("shutdown", *proc)?,
                Action::Force { proc } => named("force", *proc)?,
            }
        }
        for (_, f) in &self.faults {
            named("fault", f.proc())?;
        }
        if !self.name.is_empty() {
            one_word("name", &self.name)?;
        }
        for e in &self.expect {
            if let Expect::CallErrors(kind, _) = e {
                one_word("call-errors kind", kind)?;
            }
        }
        Ok(())
    }

    /// Parses [`Plan::to_text`]'s format and [validates](Plan::validate) the plan; the error
    /// names the offending line.
    pub fn from_text(text: &str) -> Result<Plan, PlanError> {
        let mut plan = Plan {
            name: String::new(),
            seed: 0,
            net: Net::default(),
            parents: Vec::new(),
            actions: Vec::new(),
            faults: Vec::new(),
            shutdown_at: Duration::ZERO,
            expect: Vec::new(),
            mutation: Mutation::None,
        };
        let mut lines = text.lines().enumerate().filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        });
        match lines.next() {
            Some((_, l)) if l.trim() == "arbor-sim plan v1" => {}
            _ => return Err(PlanError::NotAPlan),
        }
        let mut tree_seen = false;
        for (no, line) in lines {
            let bad = |why: &'static str| PlanError::Line { line: no + 1, why, text: line.to_string() };
            let w: Vec<&str> = line.split_whitespace().collect();
            // Every line has an exact number of words (but `net` and `tree`): words left over
            // are a mistake to report, not to ignore.
            let words = |n: usize| if w.len() == n { Ok(()) } else { Err(bad("wrong number of words")) };
            let small = |i: usize| -> Result<u32, PlanError> {
                w.get(i)
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| bad("expected a number"))
                    .and_then(|n| u32::try_from(n).map_err(|_| bad("number too large")))
            };
            let num = |i: usize| -> Result<u64, PlanError> {
                w.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| bad("expected a number"))
            };
            let ns = |i: usize| num(i).map(Duration::from_nanos);
            let idx = |i: usize| num(i).map(|n| n as usize);
            match w[0] {
                "name" => plan.name = line.trim().strip_prefix("name").unwrap_or_default().trim().to_string(),
                "seed" => {
                    words(2)?;
                    plan.seed = num(1)?
                }
                "net" => {
                    for kv in &w[1..] {
                        let (k, v) = kv.split_once('=').ok_or_else(|| bad("expected key=value"))?;
                        let v: u64 = v.parse().map_err(|_| bad("expected a number"))?;
                        match k {
                            "latency" => plan.net.latency = Duration::from_nanos(v),
                            "capacity" => plan.net.capacity = v as usize,
                            "read" => plan.net.read_size = v as usize,
                            "call" => plan.net.call_time = Duration::from_nanos(v),
                            "grace" => plan.net.grace = Duration::from_nanos(v),
                            "high-water" => plan.net.parent_high_water = v as usize,
                            "child-high-water" => plan.net.child_high_water = v as usize,
                            _ => return Err(bad("unknown net key")),
                        }
                    }
                }
                "tree" => {
                    if std::mem::replace(&mut tree_seen, true) {
                        return Err(bad("a second tree line"));
                    }
                    plan.parents = w[1..]
                        .iter()
                        .map(|s| s.parse().map_err(|_| bad("bad parent")))
                        .collect::<Result<_, _>>()?;
                    if plan.parents.iter().enumerate().any(|(i, p)| *p > i) {
                        return Err(bad("a parent must come before its child"));
                    }
                }
                "action" => {
                    let at = ns(1)?;
                    let kind = *w.get(2).ok_or_else(|| bad("missing action"))?;
                    words(match kind {
                        "call" | "call-within" => 7,
                        "chain" | "print" => 6,
                        _ => 4,
                    })?;
                    let a = match kind {
                        "call" => Action::Call {
                            from: idx(3)?,
                            to: idx(4)?,
                            function: w.get(5).ok_or_else(|| bad("missing function"))?.to_string(),
                            reply: num(6)? != 0,
                        },
                        "chain" => Action::Chain { from: idx(3)?, to: idx(4)?, count: small(5)? },
                        "print" => Action::Print { proc: idx(3)?, lines: small(4)?, newline: num(5)? != 0 },
                        "call-within" => Action::CallWithin {
                            from: idx(3)?,
                            to: idx(4)?,
                            function: w.get(5).ok_or_else(|| bad("missing function"))?.to_string(),
                            timeout: ns(6)?,
                        },
                        "stop-child" => Action::StopChild { proc: idx(3)? },
                        "kill-child" => Action::KillChild { proc: idx(3)? },
                        "shutdown" => Action::Shutdown { proc: idx(3)? },
                        "force" => Action::Force { proc: idx(3)? },
                        _ => return Err(bad("unknown action")),
                    };
                    plan.actions.push((at, a));
                }
                "fault" => {
                    let at = ns(1)?;
                    let p = idx(3)?;
                    let kind = *w.get(2).ok_or_else(|| bad("missing fault"))?;
                    words(if matches!(kind, "stall" | "delay") { 5 } else { 4 })?;
                    let f = match kind {
                        "hang-calls" => Fault::HangCalls(p),
                        "ignore-sigterm" => Fault::IgnoreSigterm(p),
                        "freeze" => Fault::Freeze(p),
                        "thaw" => Fault::Thaw(p),
                        "kill" => Fault::Kill(p),
                        "cut" => Fault::Cut(p),
                        "stall" => Fault::Stall(p, ns(4)?),
                        "fragment" => Fault::Fragment(p),
                        "delay" => Fault::Delay(p, ns(4)?),
                        "runaway" => Fault::Runaway(p),
                        "daemon" => Fault::Daemon(p),
                        "spoof" => Fault::Spoof(p),
                        _ => return Err(bad("unknown fault")),
                    };
                    plan.faults.push((at, f));
                }
                "shutdown" => {
                    words(2)?;
                    plan.shutdown_at = ns(1)?
                }
                "expect" => plan.expect.push(match *w.get(1).ok_or_else(|| bad("missing expectation"))? {
                    "root-exit-within" | "call-errors"
                        if w.len() != if w[1] == "call-errors" { 4 } else { 3 } =>
                    {
                        return Err(bad("wrong number of words"))
                    }
                    "all-lines" | "loggers-paused" | "child-held" if w.len() != 2 => {
                        return Err(bad("wrong number of words"))
                    }
                    "root-exit-within" => Expect::RootExitWithin(ns(2)?),
                    "all-lines" => Expect::AllLines,
                    "loggers-paused" => Expect::LoggersPaused,
                    "child-held" => Expect::ChildHeld,
                    "call-errors" => {
                        Expect::CallErrors(w.get(2).ok_or_else(|| bad("missing kind"))?.to_string(), idx(3)?)
                    }
                    _ => return Err(bad("unknown expectation")),
                }),
                "mutation" => {
                    words(2)?;
                    plan.mutation = match w.get(1).copied() {
                        Some("none") => Mutation::None,
                        Some("shutdown-before-channel-close") => Mutation::ShutdownBeforeChannelClose,
                        _ => return Err(bad("unknown mutation")),
                    }
                }
                _ => return Err(bad("unknown line")),
            }
        }
        plan.validate()?;
        Ok(plan)
    }
}

/// Why a plan cannot run, or a text is not a plan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `expect call-errors` names no kind of call error (a run could never meet it).
    #[error("expect call-errors {0:?}: no such error kind")]
    UnknownErrorKind(String),
    /// A network setting out of range (`read` and `capacity` are 1 to their maximum).
    #[error("net {what}={value} is out of range (1 to {max})")]
    BadNet {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The text does not start with the format's first line.
    #[error("not an arbor-sim plan (first line must be `arbor-sim plan v1`)")]
    NotAPlan,
    /// A line of the text could not be read.
    #[error("line {line}: {why}: {text}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
        /// The line.
        text: String,
    },
    /// `parents` lists a parent at or after its child (the tree is spawned in index order).
    #[error("process {child}'s parent {parent} must come before it")]
    ParentAfterChild {
        /// The child.
        child: ProcId,
        /// Its parent.
        parent: ProcId,
    },
    /// An action or fault names a process the tree does not have.
    #[error("{what} names process {proc}, but the tree has only processes 0..{procs}")]
    NoSuchProcess {
        /// The kind of step.
        what: &'static str,
        /// The process it names.
        proc: ProcId,
        /// How many processes the tree has.
        procs: usize,
    },
    /// `stop-child` or `kill-child` names the root, which has no parent to do it.
    #[error("stop-child and kill-child need a child: the root has no parent")]
    NotAChild,
    /// A name that must be one word (the text form splits on whitespace) is empty or is not.
    #[error("{what} {value:?} must be one word")]
    NotOneWord {
        /// Which name.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

fn one_word(what: &'static str, value: &str) -> Result<(), PlanError> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(PlanError::NotOneWord { what, value: value.to_string() });
    }
    Ok(())
}

/// A fault in the plan's text form.
#[derive(Debug)]
pub struct FaultText<'a>(pub &'a Fault);

impl fmt::Display for FaultText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Fault::HangCalls(p) => write!(f, "hang-calls {p}"),
            Fault::IgnoreSigterm(p) => write!(f, "ignore-sigterm {p}"),
            Fault::Freeze(p) => write!(f, "freeze {p}"),
            Fault::Thaw(p) => write!(f, "thaw {p}"),
            Fault::Kill(p) => write!(f, "kill {p}"),
            Fault::Cut(p) => write!(f, "cut {p}"),
            Fault::Stall(p, d) => write!(f, "stall {p} {}", ns(d)),
            Fault::Fragment(p) => write!(f, "fragment {p}"),
            Fault::Delay(p, d) => write!(f, "delay {p} {}", ns(d)),
            Fault::Runaway(p) => write!(f, "runaway {p}"),
            Fault::Daemon(p) => write!(f, "daemon {p}"),
            Fault::Spoof(p) => write!(f, "spoof {p}"),
        }
    }
}

/// A duration in the text's nanoseconds, capped at `u64::MAX` (584 years: never, for a run) —
/// the most the reader takes back, so every plan prints as one that replays.
fn ns(d: impl core::borrow::Borrow<Duration>) -> u64 {
    u64::try_from(d.borrow().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_through_their_text_form() {
        let plan = Plan {
            name: "chaos".into(),
            seed: 99,
            net: Net {
                latency: Duration::from_micros(250),
                parent_high_water: 65_536,
                child_high_water: 4096,
                ..Net::default()
            },
            parents: vec![0, 0, 1],
            actions: vec![
                (Duration::ZERO, Action::Call { from: 0, to: 3, function: "hang".into(), reply: true }),
                (Duration::from_millis(1), Action::Chain { from: 0, to: 1, count: 5 }),
                (Duration::from_millis(2), Action::Print { proc: 2, lines: 10, newline: false }),
                (Duration::from_millis(3), Action::Shutdown { proc: 1 }),
                (Duration::from_millis(4), Action::Force { proc: 2 }),
            ],
            faults: vec![
                (Duration::ZERO, Fault::IgnoreSigterm(3)),
                (Duration::from_millis(5), Fault::Stall(2, Duration::from_secs(1))),
                (Duration::from_millis(6), Fault::Kill(0)),
            ],
            shutdown_at: Duration::from_millis(20),
            expect: vec![
                Expect::RootExitWithin(Duration::from_millis(50)),
                Expect::AllLines,
                Expect::LoggersPaused,
                Expect::ChildHeld,
            ],
            mutation: Mutation::ShutdownBeforeChannelClose,
        };
        assert_eq!(Plan::from_text(&plan.to_text()), Ok(plan.clone()));
        // The child mark is printed only when set, so every plan written before it reads and
        // prints as it did.
        assert!(plan_text_has("child-high-water=4096", &plan));
        assert!(!Plan::manual(vec![0]).to_text().contains("child-high-water"));
    }

    fn plan_text_has(what: &str, plan: &Plan) -> bool {
        plan.to_text().lines().any(|l| l.starts_with("net ") && l.contains(what))
    }

    /// The reader takes exactly what the writer writes: words left over, a count past `u32`, a
    /// second `tree` line and an error kind that does not exist are errors (each was read as
    /// something else, or kept, before); an indented comment and a header with a space after it
    /// are read as written.
    #[test]
    fn the_reader_refuses_what_the_writer_never_writes() {
        let base = Plan::manual(vec![0]).to_text();
        let with = |line: &str| base.replace("\nshutdown ", &format!("\n{line}\nshutdown "));
        for bad in [
            with("action 0 call 0 1 echo 1 trailing junk"),
            with("action 0 chain 0 1 4294967297"),
            with("action 0 print 1 4294967296 1"),
            with("fault 0 freeze 1 extra"),
            with("tree 0 0"),
            with("expect call-errors nonsense 3"),
            with("expect all-lines please"),
            base.replace("\nseed 0", "\nseed 0 1"),
        ] {
            assert!(Plan::from_text(&bad).is_err(), "accepted:\n{bad}");
        }
        let good = with("   # an indented comment").replacen("arbor-sim plan v1", "arbor-sim plan v1 ", 1);
        assert_eq!(Plan::from_text(&good), Plan::from_text(&base));
        // A name is one word: `name a b` is refused, not read as `a`.
        assert!(matches!(
            Plan::from_text(&base.replace("name manual", "name a b")),
            Err(PlanError::NotOneWord { what: "name", .. })
        ));
    }

    /// A duration past what the text's nanoseconds hold (2^64 ns, 584 years) prints as the
    /// most it holds, so the printed plan still reads back (it printed the full 128-bit count,
    /// which the reader refused), and replays the same run: both mean "never" to a run.
    #[test]
    fn a_duration_too_long_for_the_text_still_prints_a_plan_that_reads_back() {
        let mut plan = Plan::manual(vec![0]);
        let forever = Duration::from_secs(u64::MAX);
        plan.actions.push((
            Duration::from_millis(1),
            Action::CallWithin { from: 0, to: 1, function: "hang".into(), timeout: forever },
        ));
        let back = Plan::from_text(&plan.to_text()).expect("reads back");
        assert_eq!(Plan::from_text(&back.to_text()), Ok(back.clone()), "and is stable from then on");
        let Action::CallWithin { timeout, .. } = &back.actions[0].1 else { panic!("{back:?}") };
        assert_eq!(*timeout, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn bad_plans_are_refused_with_the_line() {
        assert!(Plan::from_text("hello").is_err());
        let err = Plan::from_text("arbor-sim plan v1\ntree 0\nfault 0 kill 7\n").unwrap_err();
        assert_eq!(err, PlanError::NoSuchProcess { what: "fault", proc: 7, procs: 2 });
        let err = Plan::from_text("arbor-sim plan v1\nbogus 1\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_plan_that_names_a_process_the_tree_lacks_does_not_validate() {
        let mut plan = Plan::manual(vec![0]);
        assert_eq!(plan.validate(), Ok(()));
        plan.actions
            .push((Duration::ZERO, Action::Call { from: 0, to: 5, function: "echo".into(), reply: true }));
        assert_eq!(plan.validate(), Err(PlanError::NoSuchProcess { what: "call", proc: 5, procs: 2 }));
        let mut plan = Plan::manual(vec![0, 2, 1]);
        assert_eq!(plan.validate(), Err(PlanError::ParentAfterChild { child: 2, parent: 2 }));
        plan.parents = vec![0];
        plan.actions.push((
            Duration::ZERO,
            Action::Call { from: 0, to: 1, function: "two words".into(), reply: true },
        ));
        assert!(matches!(plan.validate(), Err(PlanError::NotOneWord { what: "function", .. })));
    }
}
