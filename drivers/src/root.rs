//! The entry point ([`init`]) and the root context ([`Launcher`], [`Root`]).

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arbor_core::host::{Host, HostConfig};
use arbor_core::node::{Node, NodeConfig, DEFAULT_GRACE};

use crate::blocking;
use crate::bootstrap;
use crate::client::{self, Context};
use crate::deliveries::DepartureHandler;
use crate::driver::{self, Setup};
use crate::error::StartError;
use crate::events::Events;
use crate::logs::LogRecord;
use crate::oneshot;
use crate::output::{ChildOutput, Printer};
use crate::registry::Functions;
use crate::root_slot::RootSlot;
use crate::runtime::{self, Runtime};
use crate::shared::Shared;
use crate::signals::Interrupts;
use crate::state::Reaped;
use crate::{clock, context, job_queue};
use arbor_core::departure::Departure;

/// Set while a root runs in this process.
static ROOT_RUNNING: RootSlot = RootSlot::new();

/// The environment variable that picks the root's runtime when [`Launcher::runtime`] was not
/// called (`smol`, or `tokio` with the `tokio` feature); children run on their parent's.
pub const RUNTIME_VAR: &str = "ARBOR_RUNTIME";

/// Call first thing in `main`, before any thread starts, with the functions this program
/// offers. In a process spawned as a child context it runs that context and never returns; in
/// any other process it returns a [`Launcher`] for the root.
pub fn init(functions: Functions) -> Launcher {
    match bootstrap::take_over() {
        Ok(None) => Launcher {
            functions,
            grace: DEFAULT_GRACE,
            handle_signals: true,
            output: ChildOutput::Print,
            on_departure: None,
            test: false,
            runtime: None,
        },
        Ok(Some(boot)) => context::run_child(boot, functions),
        Err(e) => bootstrap::fail(&e),
    }
}

/// The root context, not yet started.
pub struct Launcher {
    functions: Functions,
    grace: Duration,
    handle_signals: bool,
    output: ChildOutput,
    on_departure: Option<DepartureHandler>,
    /// Started by [`crate::test_support::init`].
    test: bool,
    runtime: Option<Arc<dyn Runtime>>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("functions", &self.functions)
            .field("grace", &self.grace)
            .field("handle_signals", &self.handle_signals)
            .field("output", &self.output)
            .field("runtime", &self.runtime)
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

    /// Where the tree's output lines go: by default ([`ChildOutput::Print`]) each is printed on
    /// the root's stdout or stderr — the stream it was printed on — as `[name] text`;
    /// [`ChildOutput::Tracing`] makes each a `tracing` event instead. The last of this and
    /// [`Launcher::on_log`] called wins (docs/driver.md "Output at the root").
    ///
    /// ```no_run
    /// # let functions = arbor::Functions::new();
    /// let launcher = arbor::init(functions).child_output(arbor::ChildOutput::Tracing);
    /// ```
    pub fn child_output(mut self, output: ChildOutput) -> Launcher {
        self.output = output;
        self
    }

    /// Called for every context that leaves the tree — a child of the root, or any descendant,
    /// whose parent reports it — with who it was, how its process ended and why. Runs on
    /// whichever thread handed the departure out, with no lock held; it should be quick. The
    /// same departures are in [`ShutdownReport::departed`]. A panic in it is caught and
    /// reported as a `tracing` warning; the tree goes on.
    pub fn on_departure(mut self, handler: impl Fn(&Departure) + Send + Sync + 'static) -> Launcher {
        self.on_departure = Some(Arc::new(handler));
        self
    }

    /// Hands each of the tree's output lines to `handler` instead of printing it
    /// ([`ChildOutput::Handler`]). It runs on whichever thread handed the line out — often the
    /// IO thread — with no lock held: it should be quick and must not wait for the tree. A panic
    /// in it is caught and reported as a `tracing` warning; the tree goes on (that one line is
    /// all the handler misses).
    pub fn on_log(self, handler: impl Fn(&LogRecord) + Send + Sync + 'static) -> Launcher {
        self.child_output(ChildOutput::Handler(Box::new(handler)))
    }

    /// Under the test harness (test_support.rs): wait for a running root, capture the output
    /// with the test's, no signal handlers.
    pub(crate) fn in_test(mut self) -> Launcher {
        self.test = true;
        self.handle_signals = false;
        self
    }

    /// The runtime the tree's IO threads run on (default: [`RUNTIME_VAR`], else smol).
    pub fn runtime(mut self, runtime: impl Runtime) -> Launcher {
        self.runtime = Some(Arc::new(runtime));
        self
    }

    /// Starts the root: its IO thread (running the driver on the runtime) and a thread for
    /// blocking calls made to the root. Returns at once; usable from async code.
    pub fn start(self) -> Result<Root, StartError> {
        if !ROOT_RUNNING.take(self.test) {
            return Err(StartError::AlreadyStarted);
        }
        let started = self.start_inner();
        if started.is_err() {
            ROOT_RUNNING.release();
        }
        started
    }

    /// [`Launcher::start`], for the blocking API.
    pub fn start_blocking(self) -> Result<blocking::Root, StartError> {
        self.start().map(blocking::Root::new)
    }

    fn start_inner(self) -> Result<Root, StartError> {
        clock::now();
        let runtime = match self.runtime {
            Some(r) => r,
            None => match std::env::var(RUNTIME_VAR) {
                Ok(name) if !name.is_empty() => {
                    runtime::by_name(&name).ok_or(StartError::UnknownRuntime(name))?
                }
                _ => Arc::new(runtime::Smol::new()),
            },
        };
        let (interrupts, wakeups) = match self.handle_signals {
            true => Interrupts::install().map(|(i, w)| (Some(i), Some(w)))?,
            false => (None, None),
        };
        let mut config = NodeConfig::root();
        config.grace = self.grace;
        config.name = "root".to_string();
        let (jobs, calls) = job_queue::channel();
        let host = Host::new(Node::new(config), HostConfig::default());
        let events = Events::new();
        let (on_log, printer) = self.output.into_handler(self.test, &events);
        let shared = Shared::new(host, runtime, self.functions, on_log, Some(events.clone()), jobs);
        let on_departure = self.on_departure;
        shared.with(|state, _| state.on_departure = on_departure);
        let (report, done) = oneshot::channel();
        let io_shared = shared.clone();
        let setup = Setup { parent: None, captures: Vec::new(), interrupts: wakeups };
        let io = thread::Builder::new().name("arbor-io".into()).spawn(move || {
            let finished = driver::run(io_shared, setup);
            drop(interrupts);
            client::set_current(None);
            ROOT_RUNNING.release();
            let report_of = |f: driver::Finished| {
                let took = f.shutdown_began.map(|t| t.elapsed()).unwrap_or_default();
                ShutdownReport { took, reaped: f.reaped, departed: f.departed }
            };
            report.send(finished.map(report_of).unwrap_or_default());
        })?;
        let calls_shared = shared.clone();
        // Blocking calls made *to* the root run here; a hung one blocks only later calls to it.
        thread::Builder::new().name("arbor-calls".into()).spawn(move || {
            for job in calls {
                let result = calls_shared.functions.run(&job.request, &calls_shared.name);
                calls_shared.call_finished(job.id, result);
            }
        })?;
        let context = Context::new(shared);
        client::set_current(Some(context.clone()));
        Ok(Root { context, io: Some(io), done: Some(done), printer, events })
    }
}

/// How the tree's shutdown went.
#[derive(Clone, Debug, Default)]
pub struct ShutdownReport {
    /// From the shutdown request to the root's exit: every child reaped.
    pub took: Duration,
    /// The root's children, in the order they were reaped.
    pub reaped: Vec<Reaped>,
    /// Every context that left the tree while the root ran — its children and, reported up by
    /// their parents, every descendant — in the order the root heard of them. A descendant
    /// whose parent was itself forced out (killed before it could report) is missing; its
    /// parent's departure says `Forced` or `Killed`.
    pub departed: Vec<Departure>,
}

/// The running root context. Dropping it shuts the tree down and waits (blocking the thread).
#[derive(Debug)]
pub struct Root {
    context: Context,
    io: Option<JoinHandle<()>>,
    done: Option<oneshot::Receiver<ShutdownReport>>,
    /// The default output sink, finished once the tree is gone.
    printer: Option<Arc<Printer>>,
    /// The root's `tracing` events, emitted off its IO thread (events.rs).
    events: Arc<Events>,
}

impl Root {
    /// The root's context handle: spawn children, call them.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Shuts the whole tree down gracefully; resolves once every child is reaped.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.context.request_shutdown();
        self.finished().await
    }

    /// Resolves once the tree has shut down for another reason (a signal, or
    /// [`Context::request_shutdown`] from elsewhere).
    pub async fn wait(mut self) -> ShutdownReport {
        self.finished().await
    }

    pub(crate) fn shutdown_blocking(mut self) -> ShutdownReport {
        self.context.request_shutdown();
        self.finished_blocking()
    }

    pub(crate) fn wait_blocking(mut self) -> ShutdownReport {
        self.finished_blocking()
    }

    async fn finished(&mut self) -> ShutdownReport {
        let report = match self.done.take() {
            Some(done) => done.await.unwrap_or_default(),
            None => ShutdownReport::default(),
        };
        // The IO thread sent the report as its last act: joining it does not wait.
        self.join();
        report
    }

    fn finished_blocking(&mut self) -> ShutdownReport {
        let report = self.done.take().and_then(oneshot::Receiver::wait).unwrap_or_default();
        self.join();
        report
    }

    fn join(&mut self) {
        let joined = self.io.take().map(JoinHandle::join);
        // The last lines of the tree are printed before the shutdown returns.
        if let Some(printer) = self.printer.take() {
            printer.finish();
        }
        self.events.finish();
        if let Some(Err(panic)) = joined {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.context.request_shutdown();
            let _ = self.io.take().map(JoinHandle::join);
        }
        if let Some(printer) = self.printer.take() {
            printer.finish();
        }
        self.events.finish();
    }
}
