//! Starting a child context: a re-exec of our own binary with its parent stream on fd 0 and its
//! configuration in the environment (docs/driver.md "Spawning").
//!
//! Spawning happens on a context's IO thread only. PR_SET_PDEATHSIG, which the child sets in
//! [`crate::init`], fires when the *thread* that forked the child exits; the IO thread lives
//! until the context has exited and every child is reaped (a child context's until its process
//! ends), so the signal means exactly "the parent context died".

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arbor_core::ids::ContextId;
use arbor_core::reaper::Pid;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::child_env::ChildEnv;

/// The send buffer asked for on framed streams.
pub(crate) const FRAMED_SEND_BUFFER: usize = 2 * 1024 * 1024;

/// How to start a child context.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Its name, shown with its log lines (default: `context <id>`).
    pub name: Option<String>,
}

impl SpawnOptions {
    /// Options with a name.
    pub fn named(name: impl Into<String>) -> SpawnOptions {
        SpawnOptions { name: Some(name.into()) }
    }
}

/// A child context that was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its context id, the target of calls.
    pub id: ContextId,
    /// Its process id.
    pub pid: Pid,
    /// Its name.
    pub name: String,
}

/// A started child process and our end of its parent stream.
#[derive(Debug)]
pub(crate) struct Started {
    pub child: Child,
    pub stream: OwnedFd,
    pub info: ChildInfo,
}

/// Starts a child context with id `id` below a context whose id and ancestors are given.
pub(crate) fn start(
    id: ContextId,
    parent: ContextId,
    parent_ancestors: &[ContextId],
    grace: Duration,
    options: &SpawnOptions,
    runtime: &str,
) -> io::Result<Started> {
    let name = options.name.clone().unwrap_or_else(|| format!("context {id}"));
    // Both ends close-on-exec: a sibling spawned at the same moment by another thread never
    // inherits this child's stream. `Stdio::from` dup2s the child's end onto its fd 0, which
    // clears the flag for that one copy in that one process.
    let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    let mut ancestors = vec![parent];
    ancestors.extend_from_slice(parent_ancestors);
    let env = ChildEnv {
        id,
        ancestors,
        parent_pid: std::process::id(),
        grace,
        name: name.clone(),
        runtime: runtime.to_string(),
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    env.apply(&mut cmd);
    cmd.stdin(Stdio::from(theirs))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own process group: a terminal's Ctrl-C reaches only the root, which shuts the
        // tree down in order.
        .process_group(0);
    let child = cmd.spawn()?;
    // A larger send buffer than the default (about 208 KiB) halves the write-and-wake cycles a
    // large message takes; the kernel caps it at net.core.wmem_max and charges memory only for
    // bytes queued. Failure leaves the default.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&ours, FRAMED_SEND_BUFFER);
    let info = ChildInfo { id, pid: Pid(child.id()), name };
    Ok(Started { child, stream: ours, info })
}
