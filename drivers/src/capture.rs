//! A child's stdout and stderr capture: two socketpairs whose write ends sit on fds 1 and 2
//! (inherited by anything the child starts) and whose read ends are the core's `Logger`
//! streams (docs/shutdown.md "Output", docs/protocol.md "Output capture").
//!
//! Socketpairs, not pipes: `shutdown(SHUT_WR)` changes the socket itself, so every process
//! holding a copy of fd 1 gets EPIPE and the read end reaches EOF once drained, even while a
//! daemon grandchild keeps its copy open.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use arbor_core::lines::LogSource;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

/// One capture socket.
#[derive(Debug)]
pub struct Capture {
    /// Which fd it captures.
    pub source: LogSource,
    /// The read end, the core's logger stream.
    pub read: OwnedFd,
    /// Our own close-on-exec handle on the write end that fd 1 or 2 duplicates; used to shut it.
    write: OwnedFd,
}

impl Capture {
    /// Makes the socketpair for `source` and puts its write end on fd 1 or 2.
    pub fn install(source: LogSource) -> io::Result<Capture> {
        let (read, write) = socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        redirect(source, &write)?;
        Ok(Capture { source, read, write })
    }
}

/// The write half of a capture socket, kept until the core says `ShutdownWrite`.
#[derive(Debug)]
pub struct CaptureWrite {
    source: LogSource,
    write: OwnedFd,
}

impl CaptureWrite {
    /// Splits a capture into its write handle and its read end (the logger stream to read).
    pub fn split(capture: Capture) -> (CaptureWrite, OwnedFd) {
        (CaptureWrite { source: capture.source, write: capture.write }, capture.read)
    }

    /// Which fd it captures.
    pub fn source(&self) -> LogSource {
        self.source
    }

    /// `Io::ShutdownWrite`: SHUT_WR the socket (every holder of a copy now gets EPIPE), then
    /// point our own fd 1 or 2 at /dev/null — Rust ignores SIGPIPE, so a hung main thread's next
    /// `println!` would otherwise panic on EPIPE — but only while that fd still is this capture
    /// socket: user code may have closed it and put something else there (a file, a socket, a
    /// grandchild's stream), which is none of ours to touch.
    pub fn shut(self) -> io::Result<()> {
        let shut = rustix::net::shutdown(&self.write, rustix::net::Shutdown::Write);
        if self.still_installed() {
            let null = File::options().read(true).write(true).open("/dev/null")?;
            redirect(self.source, &null)?;
        }
        shut.map_err(io::Error::from)
    }

    /// Whether fd 1 (or 2) is still this capture socket: the same inode on the same device.
    pub fn still_installed(&self) -> bool {
        let installed = match self.source {
            LogSource::Stdout => rustix::fs::fstat(io::stdout().as_fd()),
            LogSource::Stderr => rustix::fs::fstat(io::stderr().as_fd()),
        };
        match (installed, rustix::fs::fstat(&self.write)) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }
}

fn redirect(source: LogSource, to: impl rustix::fd::AsFd) -> io::Result<()> {
    match source {
        LogSource::Stdout => rustix::stdio::dup2_stdout(to)?,
        LogSource::Stderr => rustix::stdio::dup2_stderr(to)?,
    }
    Ok(())
}
