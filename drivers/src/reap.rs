//! Reaping child processes: every child the broker spawned is waited for by a task that wakes
//! when the child's pidfd becomes readable (the child exited) and then collects its status, so
//! no zombie is left and the core hears `Input::ChildExited` exactly once per child.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::Duration;

use arbor_core::reaper::{ExitStatus, Pid};
use async_io::{Async, Timer};
use rustix::process::{pidfd_open, PidfdFlags};

use crate::broker::Event;

/// How often to poll a child on kernels without pidfd (before Linux 5.3).
const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(5);

/// Waits for `child` to exit, reaps it, and reports it.
pub(crate) async fn reap(mut child: Child, events: async_channel::Sender<Event>) {
    let pid = Pid(child.id());
    // The pid cannot be reused before we reap it, so the pidfd names this very child.
    let pidfd: Option<Async<OwnedFd>> = rustix::process::Pid::from_raw(pid.0 as i32)
        .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
        .and_then(|fd| Async::new(fd).ok());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break convert(status),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%pid, "cannot wait for child: {e}");
                break ExitStatus::Code(-1);
            }
        }
        match &pidfd {
            Some(fd) => {
                if fd.readable().await.is_err() {
                    Timer::after(POLL_WITHOUT_PIDFD).await;
                }
            }
            None => {
                Timer::after(POLL_WITHOUT_PIDFD).await;
            }
        }
    };
    let _ = events.send(Event::Exited(pid, status)).await;
}

fn convert(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signaled(signal),
        (None, None) => ExitStatus::Code(-1),
    }
}
