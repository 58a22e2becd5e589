//! The entry point ([`init`]) and the root context ([`Launcher`], [`Root`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arbor_core::node::{NodeConfig, DEFAULT_GRACE};

pub use crate::broker::Reaped;
use crate::broker::{LogHandler, Setup, Shared};
use crate::child_env::ChildEnv;
use crate::client::{self, Context};
use crate::error::StartError;
use crate::logs::LogRecord;
use crate::registry::Functions;
use crate::signals::Interrupts;
use crate::{clock, context};

/// Set while a root runs in this process.
static ROOT_RUNNING: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`, before any thread starts, with the functions this program
/// offers. In a process spawned as a child context it runs that context and never returns; in
/// any other process it returns a [`Launcher`] for the root.
pub fn init(functions: Functions) -> Launcher {
    match ChildEnv::take() {
        Ok(None) => Launcher { functions, grace: DEFAULT_GRACE, handle_signals: true, on_log: None },
        Ok(Some(env)) => context::run_child(env, functions),
        Err(e) => {
            eprintln!("arbor: refusing to start as a child context: {e}");
            std::process::exit(2)
        }
    }
}

/// The root context, not yet started.
pub struct Launcher {
    functions: Functions,
    grace: Duration,
    handle_signals: bool,
    on_log: Option<LogHandler>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("functions", &self.functions)
            .field("grace", &self.grace)
            .field("handle_signals", &self.handle_signals)
            .finish_non_exhaustive()
    }
}

impl Launcher {
    /// The grace period: how long shutdown waits for the tree to leave on its own before forcing
    /// it (default 5 s; children use at most ¾ of what remains of their parent's).
    pub fn grace(mut self, grace: Duration) -> Launcher {
        self.grace = grace;
        self
    }

    /// Whether SIGINT/SIGTERM shut the tree down (first: gracefully, second: forced). On by
    /// default.
    pub fn handle_signals(mut self, on: bool) -> Launcher {
        self.handle_signals = on;
        self
    }

    /// Handles the tree's output lines instead of re-emitting them as `tracing` events. Runs on
    /// whichever of the root's threads is driving it at the time, with the root held: it must
    /// not block, nor call into the root.
    pub fn on_log(mut self, handler: impl Fn(&LogRecord) + Send + 'static) -> Launcher {
        self.on_log = Some(Box::new(handler));
        self
    }

    /// Starts the root's IO thread (and a thread for calls made to the root).
    pub fn start(self) -> Result<Root, StartError> {
        if ROOT_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(StartError::AlreadyStarted);
        }
        let started = self.start_inner();
        if started.is_err() {
            ROOT_RUNNING.store(false, Ordering::SeqCst);
        }
        started
    }

    fn start_inner(self) -> Result<Root, StartError> {
        clock::now();
        let (interrupts, wakeups) = match self.handle_signals {
            true => Interrupts::install().map(|(i, w)| (Some(i), Some(w)))?,
            false => (None, None),
        };
        let mut config = NodeConfig::root();
        config.grace = self.grace;
        config.name = "root".to_string();
        let setup =
            Setup { config, parent: None, captures: Vec::new(), interrupts: wakeups, on_log: self.on_log };
        let shared = Shared::new(setup)?;
        let io_shared = shared.clone();
        let io = thread::Builder::new().name("arbor-io".into()).spawn(move || {
            let finished = io_shared.serve_io(true);
            debug_assert_eq!(finished.how, arbor_core::shutdown::ExitKind::Clean, "a root exits cleanly");
            drop(interrupts);
            client::set_current(None);
            ROOT_RUNNING.store(false, Ordering::SeqCst);
            let took = finished.shutdown_began.map(|t| t.elapsed()).unwrap_or_default();
            ShutdownReport { took, reaped: finished.reaped }
        })?;
        let calls_shared = shared.clone();
        let functions = self.functions;
        // Calls made *to* the root run here; a hung one blocks only later calls to the root.
        thread::Builder::new()
            .name("arbor-calls".into())
            .spawn(move || calls_shared.serve_calls(&functions))?;
        let context = Context::new(arbor_core::ids::ContextId::ROOT, shared);
        client::set_current(Some(context.clone()));
        Ok(Root { context, io: Some(io) })
    }
}

/// How the tree's shutdown went.
#[derive(Clone, Debug, Default)]
pub struct ShutdownReport {
    /// From the shutdown request to the root's exit: every child reaped.
    pub took: Duration,
    /// The root's children, in the order they were reaped.
    pub reaped: Vec<Reaped>,
}

/// The running root context. Dropping it shuts the tree down and waits.
#[derive(Debug)]
pub struct Root {
    context: Context,
    io: Option<JoinHandle<ShutdownReport>>,
}

impl Root {
    /// The root's context handle: spawn children, call them.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Shuts the whole tree down gracefully and waits until every child is reaped.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.context.request_shutdown();
        self.join()
    }

    /// Waits until the tree has shut down for another reason (a signal, or
    /// [`Context::request_shutdown`] from another thread).
    pub fn wait(mut self) -> ShutdownReport {
        self.join()
    }

    fn join(&mut self) -> ShutdownReport {
        match self.io.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => ShutdownReport::default(),
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.context.request_shutdown();
            let _ = self.io.take().map(JoinHandle::join);
        }
    }
}
