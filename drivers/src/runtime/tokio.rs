//! The tokio runtime (feature `tokio`): a current-thread runtime on the IO thread, its reactor
//! through `tokio::io::unix::AsyncFd`, its timers through `tokio::time::Sleep`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use super::{try_read, try_write, AsyncFd, AsyncTimer, Runtime, Task};

/// tokio, behind the `tokio` feature.
#[derive(Debug, Clone, Default)]
pub struct Tokio {
    /// The IO thread's runtime, once [`Runtime::block_on`] built it.
    handle: Arc<Mutex<Option<tokio::runtime::Handle>>>,
}

impl Tokio {
    /// A runtime whose current-thread tokio runtime is built on the IO thread.
    pub fn new() -> Tokio {
        Tokio::default()
    }
}

impl Runtime for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn block_on(&self, task: Task) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot build the tokio runtime: {e}");
                return;
            }
        };
        *self.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(rt.handle().clone());
        rt.block_on(task);
        self.handle.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn spawn(&self, task: Task) {
        match &*self.handle.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(handle) => drop(handle.spawn(task)),
            None => tracing::error!("a task was spawned before the IO thread's runtime runs"),
        }
    }

    fn wrap(&self, fd: OwnedFd) -> io::Result<Box<dyn AsyncFd>> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Box::new(TokioFd(register(fd)?)))
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(TokioTimer(Box::pin(tokio::time::sleep_until(at.into()))))
    }
}

#[derive(Debug)]
struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl AsyncTimer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

#[derive(Debug)]
struct TokioFd(tokio::io::unix::AsyncFd<OwnedFd>);

impl AsyncFd for TokioFd {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            match try_read(self.fd(), buf)? {
                Some(n) => return Poll::Ready(Ok(n)),
                None => guard.clear_ready(),
            }
        }
    }

    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match try_write(self.fd(), bufs)? {
                Some(n) => return Poll::Ready(Ok(n)),
                None => guard.clear_ready(),
            }
        }
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx).map_ok(|_| ())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// Registers `fd` with the current tokio reactor.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `register` asks that the fd stay open and be the same file description for as
    // long as the `AsyncFd` lives, and that `as_raw_fd` always return it. An `OwnedFd` owns its
    // descriptor exclusively, returns the same number every time, and closes it only when
    // dropped — which happens when the `AsyncFd` (its only owner) is dropped. rustix has no
    // reactor registration to offer instead.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}
