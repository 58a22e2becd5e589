//! Contexts leaving: what a parent knows about each child process it reaped, the report of it
//! that travels up to the root (so the root hears of every descendant, grandchildren included),
//! and the per-child stop — one child and its subtree shut down, or killed, while the rest of
//! the tree runs on (docs/shutdown.md "One child").
//!
//! A stop is the whole-tree sequence applied to one subtree: SHUTDOWN with a budget to that
//! child, which closes its own call channel before telling its own children (S1/S2 hold
//! inside the subtree, by the same code); if it has not left by its parent's grace, its stream
//! is closed and its process gets SIGTERM, then SIGKILL, then is given up on — the escalation
//! schedule of a forced shutdown, for that one process.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::ContextId;
use crate::reaper::{ExitStatus, Pid};
use crate::time::Instant;

/// Why a child left, as its parent saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DepartureCause {
    /// It was asked to shut down (the tree's shutdown or its own) and left on its own.
    Shutdown,
    /// It did not leave in time and was signalled (SIGTERM, then SIGKILL).
    Forced,
    /// It was killed on request ([`crate::node::Node::kill_child`]).
    Killed,
    /// It ended without being asked: it crashed, exited, or lost its parent stream.
    Exited,
}

impl fmt::Display for DepartureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DepartureCause::Shutdown => "shut down",
            DepartureCause::Forced => "forced after the grace period",
            DepartureCause::Killed => "killed on request",
            DepartureCause::Exited => "ended without being asked",
        })
    }
}

/// A context that left: who it was, how it ended and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    /// Its context id.
    pub id: ContextId,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// Its process id.
    pub pid: Pid,
    /// The context that reaped it (its parent).
    pub parent: ContextId,
    /// How its process ended.
    pub status: ExitStatus,
    /// Why.
    pub cause: DepartureCause,
}

#[derive(Serialize, Deserialize)]
enum StatusWire {
    Code(i32),
    Signaled(i32),
}

#[derive(Serialize)]
struct DepartureOut<'a> {
    id: u32,
    pid: u32,
    name: Option<&'a str>,
    status: StatusWire,
    cause: DepartureCause,
}

#[derive(Deserialize)]
struct DepartureIn<'a> {
    id: u32,
    pid: u32,
    name: Option<&'a str>,
    status: StatusWire,
    cause: DepartureCause,
}

impl Departure {
    /// The CHILD_LEFT body (postcard); the reporting context is the message's `src`.
    pub fn encode(&self) -> Bytes {
        let status = match self.status {
            ExitStatus::Code(c) => StatusWire::Code(c),
            ExitStatus::Signaled(s) => StatusWire::Signaled(s),
        };
        let out = DepartureOut {
            id: self.id.0,
            pid: self.pid.0,
            name: self.name.as_deref(),
            status,
            cause: self.cause,
        };
        Bytes::from(postcard::to_allocvec(&out).unwrap_or_default())
    }

    /// Parses a CHILD_LEFT body sent by `parent`. `None` if it is not one (or has bytes left
    /// over).
    pub fn decode(body: &[u8], parent: ContextId) -> Option<Departure> {
        let (d, rest) = postcard::take_from_bytes::<DepartureIn<'_>>(body).ok()?;
        if !rest.is_empty() || d.name.is_some_and(|n| n.len() > crate::router::MAX_ROUTE_NAME_LEN) {
            return None;
        }
        let status = match d.status {
            StatusWire::Code(c) => ExitStatus::Code(c),
            StatusWire::Signaled(s) => ExitStatus::Signaled(s),
        };
        Some(Departure {
            id: ContextId(d.id),
            name: d.name.map(String::from),
            pid: Pid(d.pid),
            parent,
            status,
            cause: d.cause,
        })
    }
}

/// A child process, from its spawn until it is reaped: what its departure will say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChildRecord {
    pub id: ContextId,
    pub name: Option<String>,
    /// SHUTDOWN was sent to it.
    pub asked: bool,
    /// Killed on request.
    pub killed: bool,
    /// Its own stop, if it is being stopped on its own.
    pub stop: Option<Stop>,
}

/// Where a per-child stop stands, and when it moves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stop {
    pub stage: StopStage,
    pub deadline: Instant,
}

/// The steps of a per-child stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopStage {
    /// SHUTDOWN sent; waiting for it to leave by the deadline.
    Asked,
    /// Its stream closed and SIGTERM sent; SIGKILL at the deadline.
    Terminated,
    /// SIGKILL sent; given up on at the deadline.
    Killed,
}

/// Errors of per-child control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// The id is not a child of this context that is still connected.
    NotAChild(ContextId),
    /// This context is shutting down: every child is being stopped already.
    ShuttingDown,
    /// The child never reported its exit, even after SIGKILL, and was given up on: no
    /// departure will come.
    Abandoned(ContextId),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotAChild(id) => write!(f, "context {id} is not a connected child of this context"),
            ControlError::ShuttingDown => f.write_str("this context is shutting down"),
            ControlError::Abandoned(id) => {
                write!(f, "context {id} never reported its exit, even after SIGKILL, and was given up on")
            }
        }
    }
}

impl core::error::Error for ControlError {}

/// The earliest deadline among the stops in progress.
pub(crate) fn next_stop(records: &alloc::collections::BTreeMap<Pid, ChildRecord>) -> Option<Instant> {
    records.values().filter_map(|r| r.stop.map(|s| s.deadline)).min()
}

/// The pids whose stop deadline has passed.
pub(crate) fn due_stops(records: &alloc::collections::BTreeMap<Pid, ChildRecord>, now: Instant) -> Vec<Pid> {
    records.iter().filter(|(_, r)| r.stop.is_some_and(|s| s.deadline <= now)).map(|(p, _)| *p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_round_trip_and_the_parent_is_the_reporter() {
        let d = Departure {
            id: ContextId(7),
            name: Some(String::from("worker")),
            pid: Pid(4242),
            parent: ContextId(3),
            status: ExitStatus::Signaled(9),
            cause: DepartureCause::Forced,
        };
        assert_eq!(Departure::decode(&d.encode(), ContextId(3)), Some(d.clone()));
        // Whoever claims it, the reporter is who sent it.
        assert_eq!(Departure::decode(&d.encode(), ContextId(5)).map(|d| d.parent), Some(ContextId(5)));
        let mut long = d.encode().to_vec();
        long.push(0);
        assert_eq!(Departure::decode(&long, ContextId(3)), None);
        assert_eq!(Departure::decode(b"\xff\xff", ContextId(3)), None);
    }
}
