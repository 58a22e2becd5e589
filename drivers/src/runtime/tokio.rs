//! The tokio runtime (feature `tokio`): a current-thread runtime on the IO thread (its reactor
//! through `tokio::io::unix::AsyncFd`, its timers through `tokio::time::Sleep`), and another on a
//! tasks thread for async functions, started with the first task.

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
    tasks: Arc<Tasks>,
}

/// The tasks thread: a current-thread runtime run until this runtime is dropped.
#[derive(Debug, Default)]
struct Tasks {
    handle: Mutex<Option<(tokio::runtime::Handle, smol::channel::Sender<()>)>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some((_, stop)) = self.handle.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            stop.close();
        }
    }
}

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()
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
        match current_thread() {
            Ok(rt) => rt.block_on(task),
            Err(e) => tracing::error!("cannot build the tokio runtime: {e}"),
        }
    }

    fn spawn(&self, task: Task) {
        let mut tasks = self.tasks.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.is_none() {
            let (stop, stopped) = smol::channel::bounded::<()>(1);
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new().name("arbor-tasks".into()).spawn(move || {
                let rt = match current_thread() {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!("cannot build the tokio runtime for tasks: {e}"),
                };
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async move { while stopped.recv().await.is_ok() {} });
            });
            match started.map_err(|e| e.to_string()).and_then(|_| handle_rx.recv().map_err(|e| e.to_string()))
            {
                Ok(handle) => *tasks = Some((handle, stop)),
                Err(e) => return tracing::error!("cannot start the tasks thread: {e}"),
            }
        }
        if let Some((handle, _)) = &*tasks {
            drop(handle.spawn(task));
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
                Some(n) => {
                    // A short read of a stream socket exhausted it (epoll(7), Q9): its
                    // readiness goes now rather than after one more read that would block
                    // (tokio clears only what it reported before this read, so data arriving
                    // since keeps the fd ready).
                    if n > 0 && n < buf.len() {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
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
