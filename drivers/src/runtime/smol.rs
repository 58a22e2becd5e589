//! The smol runtime: async-io's reactor and timers; the IO thread's driver runs under
//! `async_io::block_on` (which drives the reactor itself while the driver waits), and async
//! functions on an `Executor` of their own on a tasks thread, started with the first task.
//!
//! What it costs: async-io also runs a fallback thread of its own, which takes the reactor once
//! it has seen it go 10 ms without a turn and keeps it until the IO thread wins it back; until
//! then each event reaches the IO thread through that thread, one more wake-up per process
//! (docs/benchmarks.md, "After an idle spell"; bench/gaps.sh). Nothing in async-io's API lets
//! the IO thread keep the reactor. On tokio the IO thread owns its reactor.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use super::{try_read, try_write, AsyncFd, AsyncTimer, Runtime, Task};

/// smol: the default runtime.
#[derive(Debug, Clone, Default)]
pub struct Smol {
    tasks: Arc<Tasks>,
}

/// The tasks thread: an executor run until the runtime is dropped.
#[derive(Debug, Default)]
struct Tasks {
    executor: Arc<smol::Executor<'static>>,
    /// Dropping the sender ends the tasks thread.
    stop: OnceLock<smol::channel::Sender<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get() {
            stop.close();
        }
    }
}

impl Smol {
    /// A runtime with its own executor.
    pub fn new() -> Smol {
        Smol::default()
    }
}

impl Runtime for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn block_on(&self, task: Task) {
        smol::block_on(task);
    }

    fn spawn(&self, task: Task) {
        self.tasks.stop.get_or_init(|| {
            let (stop, stopped) = smol::channel::bounded::<()>(1);
            let executor = self.tasks.executor.clone();
            let started = std::thread::Builder::new().name("arbor-tasks".into()).spawn(move || {
                smol::block_on(executor.run(async move { while stopped.recv().await.is_ok() {} }))
            });
            if let Err(e) = started {
                tracing::error!("cannot start the tasks thread: {e}");
            }
            stop
        });
        self.tasks.executor.spawn(task).detach();
    }

    fn wrap(&self, fd: OwnedFd) -> io::Result<Box<dyn AsyncFd>> {
        Ok(Box::new(SmolFd(smol::Async::new(fd)?)))
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(SmolTimer(smol::Timer::at(at)))
    }
}

#[derive(Debug)]
struct SmolTimer(smol::Timer);

impl AsyncTimer for SmolTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.set_at(at);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

#[derive(Debug)]
struct SmolFd(smol::Async<OwnedFd>);

impl AsyncFd for SmolFd {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if let Some(n) = try_read(self.fd(), buf)? {
                return Poll::Ready(Ok(n));
            }
            ready!(self.0.poll_readable(cx))?;
        }
    }

    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            if let Some(n) = try_write(self.fd(), bufs)? {
                return Poll::Ready(Ok(n));
            }
            ready!(self.0.poll_writable(cx))?;
        }
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}
