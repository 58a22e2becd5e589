//! Starting a child context: a re-exec of our own binary with its parent stream on fd 0 and its
//! configuration in the environment (docs/driver.md "Spawning").
//!
//! Spawning happens on a context's IO thread only. PR_SET_PDEATHSIG, which the child sets in
//! [`crate::init`], fires when the *thread* that forked the child exits; the IO thread lives
//! until the context has exited and every child is reaped (a child context's until its process
//! ends), so the signal means exactly "the parent context died".

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arbor_core::ids::ContextId;
use arbor_core::reaper::Pid;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::child_env::{ChildEnv, HARNESS, RESERVED_ENV};
use crate::error::SpawnError;
use crate::test_support;

/// The send buffer asked for on framed streams.
pub(crate) const FRAMED_SEND_BUFFER: usize = 2 * 1024 * 1024;

/// How to start a child context: its name, and what user code in it sees of its process —
/// arguments, environment, working directory (docs/driver.md "Spawn options").
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let root = arbor::init(arbor::Functions::new()).start_blocking()?;
/// let options = arbor::SpawnOptions::named("worker")
///     .arg("--verbose")
///     .env("WORKER_MODE", "fast")
///     .env_remove("HTTP_PROXY")
///     .current_dir("/tmp");
/// let child = root.context().spawn(options)?;
/// # Ok(()) }
/// ```
///
/// The child is a re-exec of the same binary, so:
/// - **arguments**: `std::env::args()` in the child is the executable followed by these
///   arguments (not the parent's); under the test harness ([`crate::test_support`]) the
///   harness's own come first — [`crate::args`] gives these alone either way;
/// - **environment**: the spawning process's environment, then each [`SpawnOptions::env`] and
///   [`SpawnOptions::env_remove`] in the order given (the last one for a name wins); arbor's
///   own variables ([`crate::RESERVED_ENV`]) are added and removed again by `init` before user
///   code runs, and may not be set or removed here ([`SpawnError::ReservedEnv`]);
/// - **working directory**: [`SpawnOptions::current_dir`] (relative to the spawning process's),
///   else the spawning process's.
///
/// The child's own children inherit its environment and working directory as any process's
/// do; arguments are per spawn. Invalid options are refused when [`crate::Context::spawn`] is
/// called, before anything is started.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Its name, shown with its log lines (default: `context <id>`).
    pub name: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
}

impl SpawnOptions {
    /// Options with a name.
    pub fn named(name: impl Into<String>) -> SpawnOptions {
        SpawnOptions { name: Some(name.into()), ..SpawnOptions::default() }
    }

    /// Adds an argument for the child's `std::env::args()`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> SpawnOptions {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments (see [`SpawnOptions::arg`]).
    pub fn args<I, S>(mut self, args: I) -> SpawnOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> SpawnOptions {
        self.env.push((name.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable from the child's (inherited) environment.
    pub fn env_remove(mut self, name: impl Into<OsString>) -> SpawnOptions {
        self.env.push((name.into(), None));
        self
    }

    /// The child's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> SpawnOptions {
        self.current_dir = Some(dir.into());
        self
    }

    /// Refuses what could never start, or would collide with arbor's own variables.
    pub(crate) fn check(&self) -> Result<(), SpawnError> {
        if let Some(name) = &self.name {
            let why = if name.as_bytes().contains(&0) {
                Some("it holds a NUL byte")
            } else if name.len() > arbor_core::router::MAX_ROUTE_NAME_LEN {
                Some("it is longer than 255 bytes")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SpawnError::InvalidName { name: name.clone(), why });
            }
        }
        for (name, value) in &self.env {
            let bytes = name.as_bytes();
            let why = if bytes.is_empty() {
                Some("the name is empty")
            } else if bytes.contains(&b'=') {
                Some("the name holds '='")
            } else if bytes.contains(&0) {
                Some("the name holds a NUL byte")
            } else if value.as_ref().is_some_and(|v| v.as_bytes().contains(&0)) {
                Some("the value holds a NUL byte")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SpawnError::InvalidEnv { name: name.clone(), why });
            }
            if let Some(reserved) = RESERVED_ENV.iter().find(|r| r.as_bytes() == bytes) {
                return Err(SpawnError::ReservedEnv(reserved.to_string()));
            }
        }
        if let Some(index) = self.args.iter().position(|a| a.as_bytes().contains(&0)) {
            return Err(SpawnError::InvalidArg { index });
        }
        if let Some(dir) = &self.current_dir {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
                    return Err(SpawnError::CurrentDir { dir: dir.clone(), source });
                }
                Err(source) => return Err(SpawnError::CurrentDir { dir: dir.clone(), source }),
            }
        }
        Ok(())
    }

    /// Puts the options on the command that starts the child.
    fn apply(&self, cmd: &mut Command) {
        cmd.args(&self.args);
        for (name, value) in &self.env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
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
    // `_exe` stays open until the child is started.
    let (mut cmd, _exe) = own_program()?;
    let mut stdout = Stdio::inherit();
    if let Some(harness) = test_support::harness_args() {
        // A test binary running just the hidden test; its harness's own first line ("running
        // 1 test"), printed before `init` captures fd 1, is not the tree's output.
        cmd.args(harness);
        if !options.args.is_empty() {
            cmd.arg("--");
        }
        cmd.env(HARNESS, "1");
        stdout = Stdio::null();
    }
    // The user's options first: arbor's own variables are set after them (and `check` refused
    // any that would collide), so a child always learns who it is.
    options.apply(&mut cmd);
    env.apply(&mut cmd);
    cmd.stdin(Stdio::from(theirs))
        .stdout(stdout)
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

/// A command that starts this very binary again: the file this process runs, even if it has
/// since been deleted or replaced at its path (a rebuild, a package upgrade: the path would
/// start another build, or nothing). argv[0] stays what this process got. Without /proc, the
/// path the binary was started from.
///
/// It runs `/proc/self/fd/N`, N a descriptor of the executable opened from `/proc/self/exe`
/// for this spawn (returned: keep it until the spawn is done). Not `/proc/self/exe` itself:
/// under valgrind (`--trace-children=yes`) that names valgrind's own tool binary, which it
/// cannot load as a program, so no child started; valgrind opens the program it runs for an
/// `open` of `/proc/self/exe`, and the kernel, too, resolves the descriptor to the file being
/// run. The descriptor is close-on-exec (an `execve` resolves its path before it closes those)
/// and is closed once the child is started, so nothing is left open.
fn own_program() -> io::Result<(Command, Option<OwnedFd>)> {
    use rustix::fs::{open, Mode, OFlags};
    use std::os::fd::AsRawFd;
    // Read-only first (what valgrind redirects); a binary we may run but not read (mode 0711)
    // still opens as a path, which is enough to run it.
    let exe = open("/proc/self/exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .or_else(|_| open("/proc/self/exe", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()))
        .ok();
    let mut cmd = match &exe {
        Some(fd) => Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => Command::new(std::env::current_exe()?),
    };
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    Ok((cmd, exe))
}
