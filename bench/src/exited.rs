//! When processes exit, seen from outside: a pidfd turns readable the moment its process exits,
//! whoever reaps it. mitogen_bench.py measures mitogen the same way.

use std::io;
use std::os::fd::OwnedFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

/// Gives up on processes that are still there after this long.
const LIMIT: Duration = Duration::from_secs(30);

/// A thread watching a set of processes.
#[derive(Debug)]
pub struct ExitWatch {
    thread: JoinHandle<Option<Instant>>,
}

impl ExitWatch {
    /// Starts watching `pids` (which must be alive now).
    pub fn start(pids: &[u32]) -> io::Result<ExitWatch> {
        let fds = pids
            .iter()
            .map(|&p| {
                let pid = i32::try_from(p).ok().and_then(Pid::from_raw).ok_or(io::ErrorKind::InvalidInput)?;
                Ok(pidfd_open(pid, PidfdFlags::empty())?)
            })
            .collect::<io::Result<Vec<OwnedFd>>>()?;
        let thread = thread::Builder::new().name("exit-watch".into()).spawn(move || watch(fds))?;
        Ok(ExitWatch { thread })
    }

    /// When the last of them exited; None if one outlived [`LIMIT`].
    pub fn last_exit(self) -> Option<Instant> {
        self.thread.join().ok().flatten()
    }
}

fn watch(mut fds: Vec<OwnedFd>) -> Option<Instant> {
    let limit = Instant::now() + LIMIT;
    while !fds.is_empty() {
        let left = limit.checked_duration_since(Instant::now())?;
        let timeout = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
        match poll(&mut polled, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
        let done: Vec<bool> = polled.iter().map(|p| !p.revents().is_empty()).collect();
        drop(polled);
        let mut done = done.into_iter();
        fds.retain(|_| !done.next().unwrap_or(false));
    }
    Some(Instant::now())
}
