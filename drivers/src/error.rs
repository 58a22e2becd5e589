//! The driver's errors (call errors are the core's typed [`arbor_core::call::CallError`]).

use std::io;

/// Why a child context could not be spawned.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The context is shutting down (or has exited) and spawns nothing more.
    #[error("the context is shutting down")]
    ShuttingDown,
    /// The host contract refused it: shutdown began before it could be carried out (a spawn
    /// waiting for a block of ids included), or the root has handed out every id.
    #[error("{0}")]
    Refused(#[from] arbor_core::host::SpawnRefused),
    /// Creating the socketpair, finding our own executable or starting the process failed.
    #[error("cannot start the child process: {0}")]
    Io(#[from] io::Error),
    /// [`crate::SpawnOptions::env`] or [`crate::SpawnOptions::env_remove`] named a variable
    /// arbor itself sets for the child ([`crate::RESERVED_ENV`]).
    #[error(
        "the environment variable {0} is arbor's own (it tells a child how to start); choose another name"
    )]
    ReservedEnv(String),
    /// An environment variable's name is empty or holds `=` or NUL, or its value holds NUL.
    #[error("invalid environment variable {name:?}: {why}")]
    InvalidEnv {
        /// The name as given.
        name: std::ffi::OsString,
        /// What is wrong with it.
        why: &'static str,
    },
    /// [`crate::SpawnOptions::named`] gave a name that holds a NUL byte (no environment
    /// variable can carry it to the child) or is longer than
    /// [`arbor_core::router::MAX_ROUTE_NAME_LEN`] bytes (the ADD_ROUTE announcing the child's
    /// own children would be refused above it, leaving them unreachable).
    #[error("invalid context name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An argument holds a NUL byte, which no `execve` argument can.
    #[error("argument {index} holds a NUL byte")]
    InvalidArg {
        /// Its position among [`crate::SpawnOptions::arg`]s, from 0.
        index: usize,
    },
    /// [`crate::SpawnOptions::current_dir`] is not a directory this process can see.
    #[error("cannot start the child in {dir:?}: {source}")]
    CurrentDir {
        /// The directory as given.
        dir: std::path::PathBuf,
        /// Why it cannot be used.
        source: io::Error,
    },
}

/// Why the root context could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A root already runs in this process (the node and its signal handlers are per process).
    /// A root started with [`crate::test_support::init`] waits for it instead, unless it is
    /// the calling thread's own.
    #[error("a root context already runs in this process")]
    AlreadyStarted,
    /// `ARBOR_RUNTIME` names a runtime this build does not have.
    #[error("unknown runtime {0:?} (this build has {available:?})", available = crate::runtime::available())]
    UnknownRuntime(String),
    /// Creating the IO thread or the signal pipe failed.
    #[error("cannot start the root context: {0}")]
    Io(#[from] io::Error),
}
