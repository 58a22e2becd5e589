//! The child bootstrap, public so that a host running contexts under its own executor reuses it
//! (docs/embedding.md "A real host"): how a parent hands a child its configuration and parent
//! stream, and how the child installs its output capture.
//!
//! The protocol (docs/driver.md "A child's start"):
//! - the parent re-executes its own binary with the child's end of a socketpair (its *parent
//!   stream*) on fd 0 and the child's configuration in `ARBOR_*` environment variables
//!   ([`ChildEnv`]); the child sits in a process group of its own;
//! - the child ([`take_over`]) reads and removes the variables, sets PR_SET_PDEATHSIG (and
//!   checks that its parent is still the one that spawned it, closing the race where the parent
//!   died first), moves the parent stream to a close-on-exec fd, puts /dev/null on fd 0, and
//!   installs two capture socketpairs whose write ends sit on fds 1 and 2 ([`Capture`]).
//!
//! Until [`take_over`] has run, the child's stderr is its parent's, so a crash during start-up
//! is visible. A child that cannot start exits with [`START_FAILED`], whatever its stdout and
//! stderr point at by then — never with a panic.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

use arbor_core::lines::LogSource;
use rustix::process::{getppid, set_parent_process_death_signal, Signal};

pub use crate::capture::{Capture, CaptureWrite};
pub use crate::child_env::{BadEnv, ChildEnv};

/// Exit code of a child that could not start (its parent sees its stream close).
pub const START_FAILED: i32 = 70;

/// What a child starts from once [`take_over`] has run.
#[derive(Debug)]
pub struct Bootstrap {
    /// The configuration its parent handed over.
    pub env: ChildEnv,
    /// The framed stream to the parent (close-on-exec).
    pub parent: OwnedFd,
    /// The stdout and stderr captures: the write halves to shut on shutdown, the read ends to
    /// read as the core's logger streams.
    pub captures: Vec<(CaptureWrite, OwnedFd)>,
}

/// Why a child could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The environment is malformed.
    #[error("refusing to start as a child context: {0}")]
    Env(#[from] BadEnv),
    /// The parent died before the child could arrange to die with it.
    #[error("the parent context died before the child started")]
    ParentGone,
    /// Setting up the parent-death signal or the fds failed.
    #[error("cannot set the child up: {0}")]
    Io(#[from] io::Error),
}

/// In a process spawned as a child context: takes the process over as described above and
/// returns what it starts from. `Ok(None)` in any other process. Call it first thing in
/// `main`, while the process has one thread (it changes the environment).
pub fn take_over() -> Result<Option<Bootstrap>, BootstrapError> {
    let Some(env) = ChildEnv::take()? else { return Ok(None) };
    take_program_name();
    // Die with the thread that spawned us (the parent's IO thread) — and if the parent died
    // before this line, PDEATHSIG will never fire: we are already someone else's child.
    set_parent_process_death_signal(Some(Signal::KILL)).map_err(io::Error::from)?;
    if getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(env.parent_pid) {
        return Err(BootstrapError::ParentGone);
    }
    let parent = rustix::io::fcntl_dupfd_cloexec(io::stdin().as_fd(), 3).map_err(io::Error::from)?;
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null).map_err(io::Error::from)?;
    // Whatever std's stdout holds (a test harness's partial line) goes where it was meant to,
    // not into the capture.
    let _ = io::stdout().flush();
    let mut captures = Vec::new();
    for source in [LogSource::Stdout, LogSource::Stderr] {
        captures.push(CaptureWrite::split(Capture::install(source)?));
    }
    Ok(Some(Bootstrap { env, parent, captures }))
}

/// The parent starts this binary through a descriptor of its own executable
/// (`/proc/self/fd/N`, so a binary deleted or replaced since still starts the same build), which
/// names the process after the descriptor's number in `ps`, `top` and `pkill`. It
/// takes back the name the kernel would have given it, from argv[0], which the parent kept: the
/// file name, at most 15 bytes. Best effort: a process that cannot rename itself runs on under
/// the descriptor's number.
fn take_program_name() {
    let Some(arg0) = std::env::args_os().next() else { return };
    let Some(name) = std::path::Path::new(&arg0).file_name() else { return };
    let name = &std::os::unix::ffi::OsStrExt::as_bytes(name)[..name.len().min(15)];
    let _ = std::fs::write("/proc/self/comm", name);
}

/// Ends a child that could not start: says why on stderr if anyone listens (a write error —
/// EPIPE on a dead parent's capture socket — is ignored, never a panic), and exits with
/// [`START_FAILED`] without running destructors or atexit handlers.
pub fn fail(why: &dyn std::fmt::Display) -> ! {
    let _ = writeln!(io::stderr().lock(), "arbor child: {why}");
    signal_hook::low_level::exit(START_FAILED)
}
