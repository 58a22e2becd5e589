//! Child-process kill escalation: what a context does about child processes that did not leave
//! on their own by the grace deadline (docs/shutdown.md "Escalation").
//!
//! Every child process is tracked from spawn until the host reports it exited. At a forced
//! disconnect each live child gets SIGTERM; whoever is still alive `kill_after` later gets
//! SIGKILL; whoever is still unreported `abandon_after` after that is given up on (reported, so
//! the bound on shutdown holds even if a host never delivers an exit).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

/// A process id, as the host knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The signals the core asks a host to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// SIGTERM: please go.
    Term,
    /// SIGKILL: go.
    Kill,
}

/// How a child process ended, as the host observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal with this number ended it.
    Signaled(i32),
}

/// The kill schedule after a forced disconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// From SIGTERM to SIGKILL.
    pub kill_after: Duration,
    /// From SIGKILL to giving up on a process whose exit is never reported.
    pub abandon_after: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation { kill_after: Duration::from_secs(1), abandon_after: Duration::from_secs(1) }
    }
}

impl Escalation {
    /// The longest a forced disconnect can take to end every child: SIGTERM, SIGKILL, give up.
    pub fn total(&self) -> Duration {
        self.kill_after.saturating_add(self.abandon_after)
    }
}

/// Where one child process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildProcess {
    /// Alive as far as we know; no signal sent.
    Running,
    /// SIGTERM sent.
    Terminated,
    /// SIGKILL sent.
    Killed,
}

/// The live child processes of one context.
#[derive(Clone, Debug, Default)]
pub struct Reaper {
    children: BTreeMap<Pid, ChildProcess>,
}

impl Reaper {
    /// Starts tracking a spawned child.
    pub fn track(&mut self, pid: Pid) {
        self.children.entry(pid).or_insert(ChildProcess::Running);
    }

    /// The host reaped `pid`; returns whether it was tracked.
    pub fn exited(&mut self, pid: Pid) -> bool {
        self.reaped(pid).is_some()
    }

    /// The host reaped `pid`: where it stood (`None` if it was not tracked).
    pub fn reaped(&mut self, pid: Pid) -> Option<ChildProcess> {
        self.children.remove(&pid)
    }

    /// Moves one child on to `signal` (as [`Reaper::escalate`] does for all); true if the
    /// signal is to be sent now.
    pub fn escalate_one(&mut self, pid: Pid, signal: Signal) -> bool {
        let Some(state) = self.children.get_mut(&pid) else { return false };
        let next = match (signal, *state) {
            (Signal::Term, ChildProcess::Running) => ChildProcess::Terminated,
            (Signal::Kill, ChildProcess::Running | ChildProcess::Terminated) => ChildProcess::Killed,
            _ => return false,
        };
        *state = next;
        true
    }

    /// Gives up on one child; true if it was tracked.
    pub fn abandon(&mut self, pid: Pid) -> bool {
        self.children.remove(&pid).is_some()
    }

    /// Whether every tracked child has been reaped or given up on.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Live children, in pid order.
    pub fn live(&self) -> impl Iterator<Item = (Pid, ChildProcess)> + '_ {
        self.children.iter().map(|(p, s)| (*p, *s))
    }

    /// Children to send `signal` to now, moving each to the matching state. SIGTERM goes to
    /// those not yet signalled; SIGKILL to all still alive.
    pub fn escalate(&mut self, signal: Signal) -> Vec<Pid> {
        let mut out = Vec::new();
        for (pid, state) in self.children.iter_mut() {
            let next = match (signal, *state) {
                (Signal::Term, ChildProcess::Running) => ChildProcess::Terminated,
                (Signal::Kill, ChildProcess::Running | ChildProcess::Terminated) => ChildProcess::Killed,
                _ => continue,
            };
            *state = next;
            out.push(*pid);
        }
        out
    }

    /// Gives up on those of `round` (children sent SIGKILL together) still unreported; returns
    /// them. Only a child that got SIGKILL is given up on: one that arrived after the round (a
    /// spawn carried out before shutdown began, whose stream opened late) has had only SIGTERM,
    /// and stays tracked for its own SIGKILL and its own round.
    pub fn abandon_killed(&mut self, round: &[Pid]) -> Vec<Pid> {
        let out: Vec<Pid> = round
            .iter()
            .copied()
            .filter(|pid| self.children.get(pid) == Some(&ChildProcess::Killed))
            .collect();
        for pid in &out {
            self.children.remove(pid);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn escalation_signals_each_live_child_once_per_step() {
        let mut r = Reaper::default();
        r.track(Pid(10));
        r.track(Pid(11));
        assert!(r.exited(Pid(11)));
        assert_eq!(r.escalate(Signal::Term), vec![Pid(10)]);
        assert_eq!(r.escalate(Signal::Term), vec![]);
        assert_eq!(r.escalate(Signal::Kill), vec![Pid(10)]);
        assert_eq!(r.escalate(Signal::Kill), vec![]);
        assert_eq!(r.abandon_killed(&[Pid(10), Pid(11)]), vec![Pid(10)]);
        assert!(r.is_empty());
    }

    #[test]
    fn an_unknown_exit_is_reported_as_untracked() {
        let mut r = Reaper::default();
        assert!(!r.exited(Pid(99)));
    }
}
