//! The runtime seam, in the manner of quinn's `runtime` module: the few things the driver needs
//! from an async runtime — readiness of a non-blocking fd, a timer, spawning a task, and running
//! the IO thread's future to completion. smol ([`Smol`]) is the default; tokio (`Tokio`) sits
//! behind the `tokio` feature. Everything else in the driver is runtime-agnostic: the API's
//! futures wake through plain [`Waker`](std::task::Waker)s and can be awaited from any task.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

mod smol;
#[cfg(feature = "tokio")]
mod tokio;

pub use self::smol::Smol;
#[cfg(feature = "tokio")]
pub use self::tokio::Tokio;

/// A boxed task.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An async runtime the driver runs on.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Its name (`smol`, `tokio`), handed to child contexts so they run on the same.
    fn name(&self) -> &'static str;
    /// Runs `task` to completion on the calling thread (the context's IO thread), with the
    /// runtime's reactor and executor running there too.
    fn block_on(&self, task: Task);
    /// Spawns a task (an async function's call) on the runtime's tasks thread — never on the IO
    /// thread, which must stay free to drain the capture sockets user code writes to.
    fn spawn(&self, task: Task);
    /// Registers a non-blocking fd with the reactor. Called on the IO thread.
    fn wrap(&self, fd: OwnedFd) -> io::Result<Box<dyn AsyncFd>>;
    /// A timer firing at `at`. Called on the IO thread.
    fn timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>>;
}

/// A timer that can be moved.
pub trait AsyncTimer: Send + fmt::Debug {
    /// Fires at `at` instead.
    fn reset(self: Pin<&mut Self>, at: Instant);
    /// Ready once the instant has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A non-blocking fd registered with a reactor. Each operation is tried first; only
/// `WouldBlock` registers interest (so an fd with data costs one syscall).
pub trait AsyncFd: Send + Sync + fmt::Debug {
    /// Reads into `buf`. The fd is a stream socket: a read shorter than `buf` exhausted it
    /// (epoll(7), Q9), and a runtime may take it as `WouldBlock` for its readiness.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `bufs`.
    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;
    /// Ready once the fd is readable (a pidfd: once the process exited).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// The fd, for syscalls that need no readiness (SHUT_WR, a write from another thread).
    fn fd(&self) -> BorrowedFd<'_>;
}

/// The runtime named `name`, if this build has it.
pub fn by_name(name: &str) -> Option<Arc<dyn Runtime>> {
    match name {
        "smol" => Some(Arc::new(Smol::new())),
        #[cfg(feature = "tokio")]
        "tokio" => Some(Arc::new(Tokio::new())),
        _ => None,
    }
}

/// The runtimes this build has, by name.
pub fn available() -> &'static [&'static str] {
    #[cfg(feature = "tokio")]
    return &["smol", "tokio"];
    #[cfg(not(feature = "tokio"))]
    return &["smol"];
}

/// Hands `f` up to `max` segments of `queue` as `IoSlice`s for one vectored write: on the stack
/// when they are few (a frame is two segments), so a write allocates nothing; in a vector past
/// that.
pub(crate) fn with_io_slices<R>(
    queue: &arbor_core::host::WriteQueue,
    max: usize,
    f: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> R {
    const ON_STACK: usize = 16;
    let mut stack = [IoSlice::new(&[]); ON_STACK];
    let mut segments = queue.segments(max);
    for (n, slot) in stack.iter_mut().enumerate() {
        match segments.next() {
            Some(seg) => *slot = IoSlice::new(seg.as_slice()),
            None => return f(&stack[..n]),
        }
    }
    let Some(next) = segments.next() else { return f(&stack) };
    // A burst (pipelined calls): room for a few times what the stack held, in one allocation.
    let mut all = Vec::with_capacity(4 * ON_STACK);
    all.extend_from_slice(&stack);
    all.push(IoSlice::new(next.as_slice()));
    all.extend(segments.map(|seg| IoSlice::new(seg.as_slice())));
    f(&all)
}

/// A read with `EINTR` retried: `Ok(None)` is `WouldBlock`.
pub(crate) fn try_read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(Some(n)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A vectored write with `EINTR` retried, never raising SIGPIPE: `Ok(None)` is `WouldBlock`.
pub(crate) fn try_write(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
    loop {
        match rustix::io::writev(fd, bufs) {
            Ok(n) => return Ok(Some(n)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
