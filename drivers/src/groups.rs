//! The process groups of children that ended: anything user code started in a child context
//! (an ordinary `std::process::Command`, which inherits the child's process group) ends with
//! it — SIGTERM when the child is reaped, SIGKILL after the escalation delay if anything is
//! still there (docs/driver.md "Processes user code starts"; mitogen issue #264).
//!
//! A process user code detaches on purpose — in a process group or session of its own
//! (`Command::process_group(0)`, `setsid`) — is not touched.

use std::time::{Duration, Instant};

use arbor_core::reaper::Pid;
use rustix::process::{kill_process_group, test_kill_process_group, Signal};

/// The first look after SIGTERM; each later look waits twice as long (never past SIGKILL).
const FIRST_LOOK: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Group {
    pgid: rustix::process::Pid,
    kill_at: Instant,
    look_at: Instant,
    step: Duration,
}

/// Groups signalled and not yet seen empty.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    pending: Vec<Group>,
}

impl Groups {
    /// Child `leader` (a group leader: children start with `process_group(0)`) has exited and
    /// is not reaped yet, so its pid still names its group: SIGTERM whatever else is in it.
    pub fn terminate(leader: Pid) {
        if let Some(pgid) = pgid(leader) {
            let _ = kill_process_group(pgid, Signal::TERM);
        }
    }

    /// After `leader` was reaped: if its group still has members, watch it until it is empty or
    /// `kill_after` has passed (then SIGKILL).
    pub fn watch(&mut self, leader: Pid, kill_after: Duration) {
        let Some(pgid) = pgid(leader) else { return };
        if test_kill_process_group(pgid).is_err() {
            return; // ESRCH: the leader was all there was (the common case: one syscall)
        }
        let now = Instant::now();
        self.pending.push(Group { pgid, kill_at: now + kill_after, look_at: now, step: FIRST_LOOK });
    }

    /// Looks at the groups due: empty ones are forgotten, those past the escalation delay get
    /// SIGKILL. Returns when to look again.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        self.pending.retain_mut(|g| {
            if g.look_at > now {
                return true;
            }
            if !populated(g.pgid) {
                return false;
            }
            if now >= g.kill_at {
                let _ = kill_process_group(g.pgid, Signal::KILL);
                return false;
            }
            g.look_at = (now + g.step).min(g.kill_at);
            g.step *= 2;
            true
        });
        self.pending.iter().map(|g| g.look_at).min()
    }

    /// Whether no group is waiting to be seen empty.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Whether a live (non-zombie) process is in group `pgid`. A zombie member — its parent, the
/// child context, is gone and whoever inherited it has not reaped it yet — counts as gone.
fn populated(pgid: rustix::process::Pid) -> bool {
    if test_kill_process_group(pgid).is_err() {
        return false;
    }
    let want = pgid.as_raw_nonzero().get().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return true };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { return false };
            // After the command's closing parenthesis: state, ppid, pgrp, ...
            let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1);
            pgrp == Some(want.as_str()) && state != Some("Z")
        })
}

fn pgid(leader: Pid) -> Option<rustix::process::Pid> {
    i32::try_from(leader.0).ok().and_then(rustix::process::Pid::from_raw)
}
