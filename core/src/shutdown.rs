//! The shutdown state machine: one enum of phases, one table of transitions
//! (docs/shutdown.md, which embeds [`render_table`]'s output and is checked against it).
//!
//! ```text
//!                 SHUTDOWN from parent │ shutdown() │ parent stream lost
//!   ┌─────────┐ ─────────────────────────────────────────────────────▶ ┌──────────┐
//!   │ Running │                                                        │ Draining │
//!   └─────────┘ ──force_shutdown()──┐        ┌──── grace deadline ──── └──────────┘
//!                                   ▼        ▼         │ force_shutdown()   │ drained
//!                           ┌─────────────────┐◀───────┘                    ▼
//!                           │ ForceDisconnect │ ────── drained ──────▶ ┌─────────┐
//!                           └─────────────────┘                        │ Closing │
//!                                                                      └─────────┘
//!                    parent stream flushed │ lost │ deadline │ force_shutdown()  │
//!                                                                              ▼
//!                                                                        ┌────────┐
//!                                                                        │ Exited │
//!                                                                        └────────┘
//! ```
//!
//! *Drained* means: no child stream open, every child process reaped (or given up on), every
//! logger stream at EOF. The phase is pure bookkeeping; the node performs each transition's
//! actions in the order the table lists them.

use alloc::string::String;
use core::fmt::Write as _;
use core::time::Duration;

use crate::time::Instant;

/// Why shutdown began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// SHUTDOWN arrived from the immediate parent.
    ParentRequest,
    /// The host asked (`Node::shutdown`).
    Local,
    /// The parent stream ended: a child whose parent is gone always shuts down.
    ParentLost,
    /// The host asked for a forced shutdown (`Node::force_shutdown`), e.g. a second Ctrl-C.
    Forced,
}

/// How a context's process should end (the last output a node produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// A child's final step: SIGTERM to itself, so a main thread stuck in user code dies with the
    /// process. A host whose process ignores SIGTERM exits anyway.
    SigtermSelf,
    /// The root ends normally once every child is reaped.
    Clean,
}

/// Where a node stands in its life. Each phase carries what only it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving calls and routing.
    Running,
    /// Shutdown announced; waiting for children, processes and loggers to finish on their own.
    Draining {
        /// Why it began.
        cause: Cause,
        /// When patience runs out.
        deadline: Instant,
    },
    /// Grace is over: remaining streams were closed and child processes are being killed.
    ForceDisconnect {
        /// Why shutdown began.
        cause: Cause,
    },
    /// Drained; the parent stream was closed and the host is writing out what was queued on it
    /// (the last log lines, DEL_ROUTEs) before the process ends.
    Closing {
        /// The parent stream being flushed; `None` in the root (or once the parent is gone),
        /// which passes straight through.
        stream: Option<crate::router::StreamId>,
        /// When to stop waiting for the flush.
        deadline: Instant,
    },
    /// The node is finished; its last output was `Exit`.
    Exited {
        /// How the process ends.
        how: ExitKind,
    },
}

impl Phase {
    /// The phase without its data, as named in the transition table.
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::Running => PhaseKind::Running,
            Phase::Draining { .. } => PhaseKind::Draining,
            Phase::ForceDisconnect { .. } => PhaseKind::ForceDisconnect,
            Phase::Closing { .. } => PhaseKind::Closing,
            Phase::Exited { .. } => PhaseKind::Exited,
        }
    }
}

/// The phases by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PhaseKind {
    /// See [`Phase::Running`].
    Running,
    /// See [`Phase::Draining`].
    Draining,
    /// See [`Phase::ForceDisconnect`].
    ForceDisconnect,
    /// See [`Phase::Closing`].
    Closing,
    /// See [`Phase::Exited`].
    Exited,
}

/// What can move the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SHUTDOWN from the immediate parent (any other sender was already refused by the router).
    ShutdownFromParent,
    /// `Node::shutdown` from the host.
    LocalShutdown,
    /// The parent stream reached EOF or failed.
    ParentLost,
    /// `Node::force_shutdown` from the host.
    ForceRequested,
    /// The grace deadline passed.
    GraceExpired,
    /// Nothing left to wait for: no child stream, no unreaped child, no logger.
    Drained,
    /// The host reports the parent stream written out and closed (`Input::Closed`).
    Flushed,
}

/// One row of the table: in `from`, `trigger` leads to `to`, doing `actions` in order.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    /// The phase it applies in.
    pub from: PhaseKind,
    /// What happened.
    pub trigger: Trigger,
    /// The phase after it.
    pub to: PhaseKind,
    /// What the node does, in order.
    pub actions: &'static str,
}

const ENTER_DRAINING: &str = "1. close the CALL_FUNCTION channel (queued calls answered \"shutting down\"); \
     2. send SHUTDOWN, with the remaining budget, to every child stream; \
     3. SHUT_WR every logger stream (keep reading to EOF); \
     4. arm the grace deadline";
const FORCE: &str =
    "close every remaining child and logger stream; SIGTERM every unreaped child; arm SIGKILL";
const CLOSE: &str = "resolve calls still pending (\"broker has exited\"); close the parent stream \
     (the host writes out what is queued on it first); a root, having none, goes straight on";
const CLOSE_FORCED: &str = "resolve calls still pending (\"broker has exited\"); close the parent stream; \
     exit without waiting for the flush";
const EXIT: &str = "Exit(SigtermSelf) in a child, Exit(Clean) in the root";
const REPEAT: &str = "nothing (idempotent); a SHUTDOWN with a smaller budget may bring the deadline forward";

/// Every transition there is. A (phase, trigger) pair not listed changes nothing.
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        from: PhaseKind::Running,
        trigger: Trigger::ShutdownFromParent,
        to: PhaseKind::Draining,
        actions: ENTER_DRAINING,
    },
    Transition {
        from: PhaseKind::Running,
        trigger: Trigger::LocalShutdown,
        to: PhaseKind::Draining,
        actions: ENTER_DRAINING,
    },
    Transition {
        from: PhaseKind::Running,
        trigger: Trigger::ParentLost,
        to: PhaseKind::Draining,
        actions: ENTER_DRAINING,
    },
    Transition {
        from: PhaseKind::Running,
        trigger: Trigger::ForceRequested,
        to: PhaseKind::ForceDisconnect,
        actions: "close the CALL_FUNCTION channel; then as on GraceExpired",
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::ShutdownFromParent,
        to: PhaseKind::Draining,
        actions: REPEAT,
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::LocalShutdown,
        to: PhaseKind::Draining,
        actions: REPEAT,
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::ParentLost,
        to: PhaseKind::Draining,
        actions: "nothing more to tell the parent",
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::GraceExpired,
        to: PhaseKind::ForceDisconnect,
        actions: FORCE,
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::ForceRequested,
        to: PhaseKind::ForceDisconnect,
        actions: FORCE,
    },
    Transition {
        from: PhaseKind::Draining,
        trigger: Trigger::Drained,
        to: PhaseKind::Closing,
        actions: CLOSE,
    },
    Transition {
        from: PhaseKind::ForceDisconnect,
        trigger: Trigger::Drained,
        to: PhaseKind::Closing,
        actions: CLOSE_FORCED,
    },
    Transition { from: PhaseKind::Closing, trigger: Trigger::Flushed, to: PhaseKind::Exited, actions: EXIT },
    Transition {
        from: PhaseKind::Closing,
        trigger: Trigger::ParentLost,
        to: PhaseKind::Exited,
        actions: EXIT,
    },
    Transition {
        from: PhaseKind::Closing,
        trigger: Trigger::GraceExpired,
        to: PhaseKind::Exited,
        actions: "stop waiting for the flush; Exit as above",
    },
    Transition {
        from: PhaseKind::Closing,
        trigger: Trigger::ForceRequested,
        to: PhaseKind::Exited,
        actions: EXIT,
    },
];

/// The phase `trigger` leads to from `from`, if the table lists one.
pub fn next(from: PhaseKind, trigger: Trigger) -> Option<PhaseKind> {
    TRANSITIONS.iter().find(|t| t.from == from && t.trigger == trigger).map(|t| t.to)
}

/// How long a child may drain, given its own grace and the budget its parent sent.
///
/// The child takes three quarters of what its parent has left, so it force-disconnects its own
/// children before its parent would force-disconnect it; at any depth the whole tree is gone
/// within the root's grace plus one escalation, not grace × depth.
pub fn child_grace(own: Duration, budget: Option<Duration>) -> Duration {
    match budget {
        Some(b) => own.min(b - b / 4),
        None => own,
    }
}

/// The SHUTDOWN body: the remaining budget in nanoseconds, big-endian (empty = none given, as
/// mitogen sends it).
pub fn encode_budget(budget: Duration) -> [u8; 8] {
    u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).to_be_bytes()
}

/// A SHUTDOWN body that is neither empty nor 8 bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadBudget {
    /// The body's length.
    pub len: usize,
}

impl core::fmt::Display for BadBudget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SHUTDOWN body of {} bytes is neither empty nor an 8-byte budget", self.len)
    }
}

impl core::error::Error for BadBudget {}

/// Parses a SHUTDOWN body: `Ok(None)` for an empty body (as mitogen sends it), the budget for
/// 8 bytes, [`BadBudget`] for anything else.
pub fn decode_budget(body: &[u8]) -> Result<Option<Duration>, BadBudget> {
    match body.len() {
        0 => Ok(None),
        8 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(body);
            Ok(Some(Duration::from_nanos(u64::from_be_bytes(raw))))
        }
        len => Err(BadBudget { len }),
    }
}

/// The transition table as Markdown, exactly as docs/shutdown.md embeds it.
pub fn render_table() -> String {
    let mut out = String::from("| from | trigger | to | actions, in order |\n|---|---|---|---|\n");
    for t in TRANSITIONS {
        let _ = writeln!(out, "| {:?} | {:?} | {:?} | {} |", t.from, t.trigger, t.to, t.actions);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_is_final() {
        for t in [
            Trigger::ShutdownFromParent,
            Trigger::LocalShutdown,
            Trigger::ParentLost,
            Trigger::ForceRequested,
            Trigger::GraceExpired,
            Trigger::Drained,
            Trigger::Flushed,
        ] {
            assert_eq!(next(PhaseKind::Exited, t), None);
        }
    }

    #[test]
    fn each_pair_has_at_most_one_row() {
        for (i, a) in TRANSITIONS.iter().enumerate() {
            for b in &TRANSITIONS[i + 1..] {
                assert!(!(a.from == b.from && a.trigger == b.trigger), "{a:?} / {b:?}");
            }
        }
    }

    #[test]
    fn children_always_finish_before_their_parent_gives_up() {
        let five = Duration::from_secs(5);
        assert_eq!(child_grace(five, None), five);
        assert_eq!(child_grace(five, Some(Duration::from_secs(4))), Duration::from_secs(3));
        assert_eq!(child_grace(Duration::from_secs(1), Some(five)), Duration::from_secs(1));
    }

    #[test]
    fn budget_bodies_round_trip_and_mitogens_empty_body_means_none() {
        let b = Duration::from_millis(1234);
        assert_eq!(decode_budget(&encode_budget(b)), Ok(Some(b)));
        assert_eq!(decode_budget(b""), Ok(None));
        assert_eq!(decode_budget(b"xyz"), Err(BadBudget { len: 3 }));
    }
}
