//! Named scenarios (docs/scenarios.md), each a recipe that turns a seed into a [`Plan`].
//!
//! The seed varies what the scenario leaves open — latency, buffer sizes, read sizes, call
//! durations, when things happen — and, in `chaos`, the tree and a fault plan of up to four
//! faults. What a scenario is about (the hung call of S3, the frozen child of S23) is fixed.

use std::time::Duration;

use crate::plan::{Action, Expect, Fault, Mutation, Net, Plan, ProcId};
use crate::rng::Rng;

/// A scenario: a name, what it shows, and its recipe.
///
/// Users define their own with [`Scenario::new`] and run them beside the built-in ones through a
/// [`Scenarios`] list (the command line of [`crate::cli`] takes one):
///
/// ```
/// use std::time::Duration;
/// use arbor_sim::{Action, Fault, Scenario, Scenarios};
/// static FROZEN_LEAF: Scenario = Scenario::new(
///     "my-frozen-leaf",
///     "a leaf frozen while its parent serves a call",
///     |rng, plan| {
///         plan.parents = vec![0, 1];
///         let at = Duration::from_millis(rng.range(1, 5));
///         plan.actions.push((at, Action::Call { from: 0, to: 1, function: "work".into(), reply: true }));
///         plan.faults.push((at, Fault::Freeze(2)));
///     },
/// );
/// let all = Scenarios::builtin().with(&FROZEN_LEAF);
/// let plan = all.find("my-frozen-leaf").unwrap().plan(7);
/// assert!(arbor_sim::Sim::new().run(&plan).unwrap().passed());
/// ```
#[derive(Debug)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    build: fn(&mut Rng, &mut Plan),
}

impl Scenario {
    /// A scenario whose recipe `build` fills in a plan's tree, actions, faults and expectations.
    /// The plan it is handed already has a seeded network and a shutdown time (20 to 60 ms);
    /// afterwards every time in it except zero is moved [`SETTLE`] later, so the recipe's
    /// actions find a spawned tree (for every scenario but the built-in `chaos` and
    /// `chaos-control`, which act on a tree still starting on purpose).
    pub const fn new(name: &'static str, about: &'static str, build: fn(&mut Rng, &mut Plan)) -> Scenario {
        Scenario { name, about, build }
    }
}

/// A list of scenarios to look names up in: the built-in ones and any a user adds.
#[derive(Clone, Debug)]
pub struct Scenarios {
    list: Vec<&'static Scenario>,
}

impl Scenarios {
    /// The built-in scenarios ([`SCENARIOS`]).
    pub fn builtin() -> Scenarios {
        Scenarios { list: SCENARIOS.iter().collect() }
    }

    /// No scenarios at all: only the ones [added](Scenarios::with).
    pub fn none() -> Scenarios {
        Scenarios { list: Vec::new() }
    }

    /// The list with `scenario` added at its end. A scenario named like one already listed
    /// takes its place, so a user can replace a built-in one.
    pub fn with(mut self, scenario: &'static Scenario) -> Scenarios {
        match self.list.iter_mut().find(|s| s.name == scenario.name) {
            Some(old) => *old = scenario,
            None => self.list.push(scenario),
        }
        self
    }

    /// The scenario called `name`.
    pub fn find(&self, name: &str) -> Option<&'static Scenario> {
        self.list.iter().copied().find(|s| s.name == name)
    }

    /// Every scenario, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Scenario> + '_ {
        self.list.iter().copied()
    }
}

const MS: Duration = Duration::from_millis(1);

/// Time for the deepest tree a named scenario builds to finish spawning: a round trip for an id
/// block and one for ADD_ROUTE per level, at the largest latency a seed picks.
pub const SETTLE: Duration = Duration::from_millis(25);

fn call(from: ProcId, to: ProcId, f: &str) -> Action {
    Action::Call { from, to, function: f.into(), reply: true }
}

/// A chain `0 → 1 → … → depth`.
fn chain(depth: usize) -> Vec<ProcId> {
    (0..depth).collect()
}

/// Every scenario there is, in order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "s1-one-child",
        about: "root with one child, one call, root shuts down: child gone long before the grace period",
        build: |_, p| {
            p.parents = vec![0];
            p.actions.push((MS, call(0, 1, "work")));
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s2-grandchild",
        about: "root → child → grandchild: each level closes its channel before forwarding SHUTDOWN",
        build: |_, p| {
            p.parents = chain(2);
            p.actions.push((MS, call(0, 2, "echo")));
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s3-hung-call",
        about: "child's main thread hung forever: child still gone, the caller hears 'disconnected' once",
        build: |_, p| {
            p.parents = vec![0];
            p.actions.push((MS, call(0, 1, "hang")));
            p.expect.push(Expect::CallErrors("disconnected".into(), 1));
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s4-ignores-sigterm",
        about: "child ignores SIGTERM and its call hangs: gone within milliseconds anyway",
        build: |_, p| {
            p.parents = vec![0];
            p.faults.push((Duration::ZERO, Fault::IgnoreSigterm(1)));
            p.actions.push((MS, call(0, 1, "hang")));
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s5-ten-thousand-lines",
        about: "child prints 10 000 lines then the root shuts down: all arrive, in order",
        build: |_, p| {
            p.parents = vec![0];
            p.actions.push((MS, Action::Print { proc: 1, lines: 10_000, newline: true }));
            p.expect.push(Expect::AllLines);
        },
    },
    Scenario {
        name: "s6-no-final-newline",
        about: "child prints a last line with no newline: it arrives",
        build: |_, p| {
            p.parents = vec![0, 1];
            p.actions.push((MS, Action::Print { proc: 2, lines: 3, newline: false }));
            p.expect.push(Expect::AllLines);
        },
    },
    Scenario {
        name: "s7-daemon-holds-stdout",
        about: "a daemon grandchild keeps stdout open: shutdown is not delayed (SHUT_WR, not wait-for-close)",
        build: |_, p| {
            p.parents = vec![0];
            p.faults.push((MS, Fault::Daemon(1)));
            p.actions.push((2 * MS, Action::Print { proc: 1, lines: 5, newline: true }));
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
            p.expect.push(Expect::AllLines);
        },
    },
    Scenario {
        name: "s8-s9-spoofing",
        about: "a child forges a call with the root's authority and a SHUTDOWN in its parent's name: ignored",
        build: |_, p| {
            p.parents = vec![0, 0, 1, 1];
            p.faults.push((MS, Fault::Spoof(2)));
            p.faults.push((MS, Fault::Spoof(3)));
            p.actions.push((2 * MS, call(0, 4, "echo")));
        },
    },
    Scenario {
        name: "s15-fifty-pending",
        about: "child disconnects with 50 calls pending on it: all 50 resolve 'disconnected', once each",
        build: |rng, p| {
            p.parents = vec![0];
            for _ in 0..50 {
                p.actions.push((MS, call(0, 1, "hang")));
            }
            p.faults.push((MS * rng.range(2, 9) as u32, Fault::Kill(1)));
            p.expect.push(Expect::CallErrors("disconnected".into(), 50));
        },
    },
    Scenario {
        name: "s16-grandchild-lost",
        about: "a grandchild disconnects: DEL_ROUTE reaches the root; calls to it fail 'disconnected'",
        build: |_, p| {
            p.parents = vec![0, 1, 0];
            p.actions.push((MS, call(0, 2, "hang")));
            p.faults.push((3 * MS, Fault::Kill(2)));
            p.actions.push((5 * MS, call(0, 3, "echo")));
            p.expect.push(Expect::CallErrors("disconnected".into(), 1));
        },
    },
    Scenario {
        name: "s17-root-killed",
        about: "the root is SIGKILLed with a 3-level tree and a child ignoring SIGTERM: no orphan",
        build: |_, p| {
            p.parents = vec![0, 1, 0];
            p.faults.push((Duration::ZERO, Fault::IgnoreSigterm(1)));
            p.actions.push((MS, call(0, 2, "hang")));
            p.faults.push((3 * MS, Fault::Kill(0)));
        },
    },
    Scenario {
        name: "s18-stalled-link",
        about: "the link to a grandchild stalls during shutdown: forced disconnect at the deadline",
        build: |_, p| {
            p.parents = vec![0, 1];
            p.faults.push((p.shutdown_at - MS, Fault::Stall(2, Duration::from_secs(3600))));
        },
    },
    Scenario {
        name: "s19-shutdown-twice",
        about: "shutdown requested twice and while draining: one sequence",
        build: |_, p| {
            p.parents = vec![0, 1];
            p.faults.push((Duration::ZERO, Fault::Freeze(2)));
            p.actions.push((p.shutdown_at + MS, Action::Shutdown { proc: 0 }));
            p.actions.push((p.shutdown_at + MS, Action::Shutdown { proc: 1 }));
        },
    },
    Scenario {
        name: "s20-no-reply-then-shutdown",
        about: "call_no_reply sent immediately before shutdown: run if the callee is idle (docs/shutdown.md)",
        build: |_, p| {
            p.parents = vec![0];
            let at = p.shutdown_at;
            p.actions.push((at, Action::Call { from: 0, to: 1, function: "echo".into(), reply: false }));
        },
    },
    Scenario {
        name: "s21-fifty-children",
        about: "50 children, root shuts down: every child gone; total ≈ slowest child",
        build: |_, p| {
            p.parents = vec![0; 50];
            for c in 1..=50 {
                p.actions.push((MS, call(0, c, "work")));
            }
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s22-deep-hung-chain",
        about: "depth-4 chain, a hung call at every level: whole tree gone within G + escalation",
        build: |_, p| {
            p.parents = chain(4);
            for c in 1..=4 {
                p.actions.push((MS, call(0, c, "hang")));
            }
            p.expect.push(Expect::RootExitWithin(Duration::from_millis(100)));
        },
    },
    Scenario {
        name: "s22-deep-frozen-chain",
        about: "depth-4 chain whose deepest context is frozen: bounded by one grace, not four",
        build: |_, p| {
            p.parents = chain(4);
            p.faults.push((MS, Fault::Freeze(4)));
            let bound = p.net.grace + arbor_core::reaper::Escalation::default().total();
            p.expect.push(Expect::RootExitWithin(bound));
        },
    },
    Scenario {
        name: "s23-frozen-child",
        about: "child frozen (SIGSTOP) during shutdown: forced disconnect and kill at the bound",
        build: |_, p| {
            p.parents = vec![0, 0];
            p.faults.push((p.shutdown_at - MS, Fault::Freeze(1)));
        },
    },
    Scenario {
        name: "s24-runaway-output",
        about: "a child writes output forever: shutdown still completes",
        build: |_, p| {
            p.parents = vec![0, 1];
            p.faults.push((MS, Fault::Runaway(2)));
        },
    },
    Scenario {
        name: "s24-runaway-behind-stalled-link",
        about: "a runaway child behind a stalled link: its loggers pause above a 64 KiB parent queue, which stays bounded; shutdown completes, no line lost",
        // The runaway's own link to the middle.
        build: |rng, p| runaway_behind_stall(rng, p, 2),
    },
    Scenario {
        name: "s24-runaway-behind-stalled-middle",
        about: "a runaway grandchild whose parent's own link to the root stalls: the middle stops reading it above a 64 KiB queue and it pauses in turn; both queues stay bounded, shutdown completes, no line lost",
        // The middle's own link to the root: the SHUTDOWN held back behind it.
        build: |rng, p| runaway_behind_stall(rng, p, 1),
    },
    Scenario {
        name: "s28-sibling-call",
        about: "a child calls its sibling and its parent: each call is refused by the callee's router and answered at once (dead reply), never left pending",
        build: |rng, p| {
            p.parents = vec![0, 0];
            let n = rng.range(1, 6);
            for i in 0..n {
                let at = MS + Duration::from_micros(rng.range(0, 5000)) + i as u32 * MS;
                p.actions.push((at, call(1, 2, "work")));
            }
            p.actions.push((2 * MS, call(2, 0, "echo")));
            p.actions.sort_by_key(|a| a.0);
            p.expect.push(Expect::CallErrors("undeliverable".into(), n as usize + 1));
        },
    },
    Scenario {
        name: "s31-deadlines",
        about: "calls with deadlines behind a hung call, on a running async-like one and across a link that may be cut: each resolves once, Timeout at its deadline, the callee told; queued ones never start",
        build: |rng, p| {
            p.parents = vec![0, 1];
            let to = 1 + rng.below(2) as usize;
            p.actions.push((MS, call(0, to, "hang")));
            let within = |f: &str, ms: u64| Action::CallWithin {
                from: 0,
                to,
                function: f.into(),
                timeout: Duration::from_millis(ms),
            };
            let n = rng.range(1, 6);
            for _ in 0..n {
                let f = ["work", "park", "echo"][rng.below(3) as usize];
                p.actions.push((2 * MS, within(f, rng.range(1, 15))));
            }
            // A stoppable call on an idle context, timed out while it runs.
            let idle = if to == 1 { 2 } else { 1 };
            p.actions.push((2 * MS, Action::CallWithin { from: 0, to: idle, function: "park".into(), timeout: 3 * MS }));
            if rng.chance(1, 3) {
                p.faults.push((Duration::from_millis(rng.range(2, 12)), Fault::Cut(2)));
            } else {
                // Every call queued behind the hung one times out, and so does the parked one.
                p.expect.push(Expect::CallErrors("timeout".into(), n as usize + 1));
            }
        },
    },
    Scenario {
        name: "s32-stop-one-child",
        about: "one child with a subtree is shut down on its own (sometimes hung and ignoring SIGTERM, so forced) while its sibling serves a chain of calls",
        build: |rng, p| {
            p.parents = vec![0, 1, 0];
            p.actions.push((MS, Action::Chain { from: 0, to: 3, count: rng.range(5, 40) as u32 }));
            let at = MS + Duration::from_micros(rng.range(0, 3000));
            p.actions.push((at, Action::StopChild { proc: 1 }));
            if rng.chance(1, 3) {
                p.faults.push((MS, Fault::HangCalls(2)));
                p.faults.push((MS, Fault::IgnoreSigterm(2)));
            }
            if rng.chance(1, 4) {
                p.actions.push((at + MS, Action::KillChild { proc: 3 }));
            } else {
                p.expect.push(Expect::CallErrors("disconnected".into(), 0));
            }
            p.net.grace = Duration::from_millis(rng.range(5, 200));
        },
    },
    Scenario {
        name: "s33-held-child",
        about: "a child stops reading (SIGSTOP) while its parent sends it calls: above a 4 KiB queue towards it the parent stops reading its stream, reads it again at half that once the child is thawed and reads; every call is answered",
        build: |rng, p| {
            p.parents = vec![0, 0];
            p.net.capacity = 2048;
            p.net.child_high_water = 4096;
            p.faults.push((MS, Fault::Freeze(1)));
            // 160 to 400 calls of about 56 bytes each: more than a socket and the mark behind a
            // stopped reader, so the queue towards it passes the mark.
            for _ in 0..rng.range(160, 400) {
                p.actions.push((2 * MS, call(0, 1, "echo")));
            }
            // Its sibling is served all along.
            p.actions.push((2 * MS, Action::Chain { from: 0, to: 2, count: 20 }));
            p.faults.push((MS + Duration::from_micros(rng.range(2000, 40_000)), Fault::Thaw(1)));
            // Shutdown well after the thaw: every call is answered first.
            p.shutdown_at = 100 * MS;
            p.expect.push(Expect::ChildHeld);
            p.expect.push(Expect::CallErrors("disconnected".into(), 0));
        },
    },
    Scenario {
        name: "chaos",
        about: "a random tree of up to 8 contexts, random calls and output, and up to 4 random faults",
        build: chaos,
    },
    Scenario {
        name: "chaos-control",
        about: "chaos, with calls that have deadlines and children stopped or killed on their own mixed in",
        build: chaos_control,
    },
];

/// `chaos`, and then up to 6 calls with deadlines (of `work`, `hang`, the stoppable `park` and
/// `echo`) and up to 2 children stopped or killed by their parents, at random times.
fn chaos_control(rng: &mut Rng, p: &mut Plan) {
    chaos(rng, p);
    let procs = p.procs();
    let horizon = p.shutdown_at.as_nanos() as u64;
    for _ in 0..rng.range(0, 6) {
        let from = rng.below(procs as u64) as usize;
        let to = rng.below(procs as u64) as usize;
        let function = ["work", "hang", "park", "echo"][rng.below(4) as usize].into();
        let timeout = Duration::from_micros(rng.range(100, 30_000));
        let at = Duration::from_nanos(rng.range(1_000_000, horizon));
        p.actions.push((at, Action::CallWithin { from, to, function, timeout }));
    }
    for _ in 0..rng.range(0, 2) {
        let proc = 1 + rng.below(procs as u64 - 1) as usize;
        let at = Duration::from_nanos(rng.range(1_000_000, horizon));
        let a = if rng.chance(1, 3) { Action::KillChild { proc } } else { Action::StopChild { proc } };
        p.actions.push((at, a));
    }
    p.actions.sort_by_key(|a| a.0);
}

fn chaos(rng: &mut Rng, p: &mut Plan) {
    // Sometimes a child high-water mark of a few frames, so that a parent holds a child that
    // stops reading (frozen, stalled, behind a slow link) among the other faults.
    if rng.chance(1, 3) {
        p.net.child_high_water = rng.range(64, 2048) as usize;
    }
    let n = rng.range(1, 7) as usize;
    p.parents = (0..n).map(|i| rng.below(i as u64 + 1) as usize).collect();
    let procs = n + 1;
    let horizon = p.shutdown_at.as_nanos() as u64;
    let when = |rng: &mut Rng| Duration::from_nanos(rng.range(1_000_000, horizon));
    for _ in 0..rng.range(0, 12) {
        let from = rng.below(procs as u64) as usize;
        let to = rng.below(procs as u64) as usize;
        let a = match rng.below(4) {
            0 => Action::Chain { from, to, count: rng.range(1, 20) as u32 },
            1 => Action::Print { proc: to, lines: rng.range(1, 200) as u32, newline: rng.chance(3, 4) },
            2 => Action::Call { from, to, function: "hang".into(), reply: rng.chance(3, 4) },
            _ => Action::Call { from, to, function: "work".into(), reply: rng.chance(3, 4) },
        };
        p.actions.push((when(rng), a));
    }
    for _ in 0..rng.range(0, 4) {
        let any = rng.below(procs as u64) as usize;
        let child = 1 + rng.below(n as u64) as usize;
        let f = match rng.below(11) {
            0 => Fault::HangCalls(any),
            1 => Fault::IgnoreSigterm(any),
            2 => Fault::Freeze(child),
            3 => Fault::Kill(any),
            4 => Fault::Cut(child),
            5 => Fault::Stall(child, Duration::from_millis(rng.range(1, 8000))),
            6 => Fault::Fragment(child),
            7 => Fault::Delay(child, Duration::from_micros(rng.range(1, 5000))),
            8 => Fault::Runaway(child),
            9 => Fault::Daemon(child),
            _ => Fault::Spoof(child),
        };
        let at = when(rng);
        if let Fault::Freeze(c) = f {
            if rng.chance(1, 2) {
                let thaw = at + Duration::from_millis(rng.range(1, 8000));
                p.faults.push((thaw, Fault::Thaw(c)));
            }
        }
        p.faults.push((at, f));
    }
    p.faults.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    p.actions.sort_by_key(|a| a.0);
}

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

impl Scenario {
    /// The plan this scenario makes of `seed`.
    pub fn plan(&self, seed: u64) -> Plan {
        let mut rng = Rng::new(seed);
        let net = Net {
            latency: Duration::from_micros(rng.range(10, 2000)),
            capacity: [4096, 65_536, 262_144][rng.below(3) as usize],
            read_size: [512, 16_384, 131_072][rng.below(3) as usize],
            call_time: Duration::from_micros(rng.range(10, 20_000)),
            ..Net::default()
        };
        let mut plan = Plan {
            name: self.name.to_string(),
            seed,
            net,
            parents: Vec::new(),
            actions: Vec::new(),
            faults: Vec::new(),
            shutdown_at: Duration::from_millis(rng.range(20, 60)),
            expect: Vec::new(),
            mutation: Mutation::None,
        };
        (self.build)(&mut rng, &mut plan);
        if !matches!(self.name, "chaos" | "chaos-control") {
            // Named scenarios act on a settled tree: every spawn done, every route announced.
            // (chaos deliberately does not wait.)
            for (at, _) in plan.actions.iter_mut().filter(|(at, _)| !at.is_zero()) {
                *at += SETTLE;
            }
            for (at, _) in plan.faults.iter_mut().filter(|(at, _)| !at.is_zero()) {
                *at += SETTLE;
            }
            plan.shutdown_at += SETTLE;
        }
        plan
    }
}

/// A runaway grandchild (p2) under a 64 KiB parent high-water mark, with the parent link of
/// `stalled` stalled for 10 ms to 2 s — sometimes over before shutdown begins (pause, resume,
/// pause again), sometimes holding back the SHUTDOWN itself: either way well within the grace.
fn runaway_behind_stall(rng: &mut Rng, p: &mut Plan, stalled: ProcId) {
    p.parents = vec![0, 1];
    p.net.parent_high_water = 64 * 1024;
    p.faults.push((MS, Fault::Runaway(2)));
    p.faults.push((MS, Fault::Stall(stalled, Duration::from_millis(rng.range(10, 2000)))));
    p.actions.push((2 * MS, Action::Print { proc: 2, lines: 100, newline: true }));
    p.expect.push(Expect::AllLines);
    p.expect.push(Expect::LoggersPaused);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    /// A user's scenario acts on a settled tree whatever its name: only the two built-in chaos
    /// scenarios act on a tree still starting (a user scenario named `chaos-mine` was not moved).
    #[test]
    fn every_scenario_but_the_built_in_chaos_pair_acts_on_a_settled_tree() {
        fn recipe(_: &mut Rng, p: &mut Plan) {
            p.actions.push((Duration::from_millis(1), Action::Shutdown { proc: 0 }));
        }
        for name in ["mine", "chaos-mine", "chaotic"] {
            let plan = Scenario::new(name, "", recipe).plan(1);
            assert_eq!(plan.actions[0].0, Duration::from_millis(1) + SETTLE, "{name}");
        }
        let chaos = Scenario::new("chaos", "", recipe).plan(1);
        assert_eq!(chaos.actions[0].0, Duration::from_millis(1));
    }
}
