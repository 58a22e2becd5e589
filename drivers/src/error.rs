//! The driver's errors (call errors are the core's typed [`arbor_core::call::CallError`]).

use std::io;

/// Why a child context could not be spawned.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The context is shutting down (or has exited) and spawns nothing more.
    #[error("the context is shutting down")]
    ShuttingDown,
    /// The root has handed out every context id.
    #[error("context ids exhausted")]
    IdsExhausted,
    /// Creating the socketpair, finding our own executable or starting the process failed.
    #[error("cannot start the child process: {0}")]
    Io(#[from] io::Error),
}

/// Why the root context could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A root already runs in this process (the node and its signal handlers are per process).
    #[error("a root context already runs in this process")]
    AlreadyStarted,
    /// Creating the IO thread or the signal pipe failed.
    #[error("cannot start the root context: {0}")]
    Io(#[from] io::Error),
}
