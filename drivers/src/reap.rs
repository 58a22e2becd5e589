//! Reaping child processes: every child the broker spawned is watched through its pidfd, which
//! the broker's epoll reports readable when the child exited; the broker then collects its
//! status, so no zombie is left and the core hears `Input::ChildExited` exactly once per child.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::Duration;

use arbor_core::reaper::{ExitStatus, Pid};
use rustix::process::{pidfd_open, PidfdFlags};

/// How often to poll a child on kernels without pidfd (before Linux 5.3).
pub(crate) const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(5);

/// A child not reaped yet.
#[derive(Debug)]
pub(crate) struct Reaper {
    child: Child,
    /// Readable once the child exited; `None` without pidfd support (polled instead).
    pub pidfd: Option<OwnedFd>,
}

impl Reaper {
    pub fn new(child: Child) -> Reaper {
        // The pid cannot be reused before we reap it, so the pidfd names this very child.
        let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
        Reaper { child, pidfd }
    }

    pub fn pid(&self) -> Pid {
        Pid(self.child.id())
    }

    /// Reaps the child if it exited.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(convert(status)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(pid = %self.pid(), "cannot wait for child: {e}");
                Some(ExitStatus::Code(-1))
            }
        }
    }
}

fn convert(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signaled(signal),
        (None, None) => ExitStatus::Code(-1),
    }
}
