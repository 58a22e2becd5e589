//! A context's state: the core's [`Host`] (the shared host contract around the `Node`) and the
//! real things it names — sockets, child processes, callers waiting for answers — behind one
//! mutex, in the manner of quinn's connection state.
//!
//! The IO thread's driver future (driver.rs) owns readiness: it reads, waits for writability,
//! reaps children, fires the timer and carries out what only it may (spawning: a child's
//! PR_SET_PDEATHSIG fires when the thread that forked it ends). Any other thread — a caller, the
//! thread that ran a blocking function — locks the state, changes it through the host, writes
//! what became writable at once if the socket takes it (one `writev`, no hand-off), and wakes
//! the driver for the rest. Blocking calls for the calls thread, answers, log records and
//! diagnostics are handed out after the lock is let go of, never while it is held.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, CallRequest, CallResult, JobId};
use arbor_core::departure::{ControlError, Departure};
use arbor_core::host::{Action, Host, Io, SpawnTicket};
use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::ExitKind;
use arbor_core::time::Instant;
use arbor_core::vec_map::VecMap;

use crate::bootstrap::CaptureWrite;
use crate::clock;
use crate::deliveries::{Deliveries, DepartureHandler, DepartureReply, Note, SpawnReply};
use crate::error::SpawnError;
use crate::groups::Groups;
use crate::job_queue::JobSender;
use crate::logs::LogRecord;
use crate::oneshot;
use crate::registry::Job;
use crate::runtime::{try_write, with_io_slices, AsyncFd};
use crate::shared::{gone, Shared};
use crate::spawn::{ChildInfo, SpawnOptions};

/// Segments gathered into one vectored write at most.
const SEGMENTS_PER_WRITE: usize = 512;

/// What a stream carries, on our side.
pub(crate) enum Kind {
    Framed,
    /// Our handle on the capture socket's write half, until `ShutdownWrite`.
    Logger(Option<CaptureWrite>),
}

/// A socket the context reads (and, framed, writes).
pub(crate) struct Stream {
    pub fd: Box<dyn AsyncFd>,
    pub kind: Kind,
    /// False once EOF or a read error was reported.
    pub reading: bool,
    /// The last round stopped reading it before it would block: read it again without waiting
    /// for the reactor.
    pub more: bool,
}

/// A child process not reaped yet.
pub(crate) struct ChildProc {
    pub child: std::process::Child,
    /// Readable once the child exited; `None` without pidfd support (polled instead).
    pub pidfd: Option<Box<dyn AsyncFd>>,
    pub info: ChildInfo,
}

/// A child process reaped by this context, for the shutdown report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Its context id.
    pub id: ContextId,
    /// Its name.
    pub name: String,
    /// Its pid.
    pub pid: Pid,
    /// How it ended.
    pub status: ExitStatus,
    /// When it was reaped, counted from the start of shutdown (from the context's start if it
    /// left earlier).
    pub after: Duration,
}

/// The state of one context.
pub(crate) struct State {
    pub host: Host,
    pub streams: VecMap<StreamId, Stream>,
    pub children: VecMap<Pid, ChildProc>,
    pub groups: Groups,
    pub next_stream: u32,
    /// The calls in flight, answered in any order. Not a `VecMap`: there may be any number of
    /// them (a caller pipelining 100 000 calls), and removing each answered one from a sorted
    /// vector would move all those after it — quadratic over a burst.
    pub calls: BTreeMap<CallId, oneshot::Sender<CallResult>>,
    /// What stops each running async function's task (dropping its future) if its caller
    /// gives up (as many as are running: a `BTreeMap`, as `calls`).
    pub stops: BTreeMap<JobId, oneshot::Sender<()>>,
    /// Spawns asked for and not yet carried out (as many as were asked for at once).
    pub spawns: BTreeMap<SpawnTicket, (SpawnOptions, SpawnReply)>,
    /// Spawns the host handed out, for the IO thread to carry out.
    pub to_spawn: Vec<(SpawnTicket, ContextId)>,
    /// Blocking calls for the calls thread; dropped on `CallsClosed`.
    pub jobs: Option<JobSender>,
    /// The deadline the host announced last.
    pub deadline: Option<Instant>,
    /// The driver's waker.
    pub waker: Option<Waker>,
    /// The host said `Exit`.
    pub exited: Option<ExitKind>,
    pub reaped: Vec<Reaped>,
    /// Every departure this context heard of: its children's and, at the root, every
    /// descendant's, in the order they were reported.
    pub departed: Vec<Departure>,
    pub on_departure: Option<DepartureHandler>,
    /// Who waits for a child to leave (`shutdown_child`, `kill_child`).
    pub awaiting: VecMap<ContextId, Vec<DepartureReply>>,
    pub shutdown_began: Option<std::time::Instant>,
    pub started: std::time::Instant,
    pub interrupts: u32,
    pub deliveries: Deliveries,
    /// The streams one round of `carry_out` wrote to, kept between rounds (a round allocates
    /// nothing).
    dirty: Vec<StreamId>,
    /// Leave writes for a later flush (or the driver, woken) instead of writing them now.
    pub defer_writes: bool,
    /// Leave them if a blocking call was handed out meanwhile (set by the calls thread).
    pub defer_if_busy: bool,
    /// A blocking call went to the calls thread during this `carry_out`.
    pub job_sent: bool,
    /// Streams with writes left for a later flush.
    pub unwritten: Vec<StreamId>,
    /// The driver's own `carry_out` left it work for its next round (writes, a spawn, a moved
    /// deadline, the exit, loggers to read again).
    pub driver_work: bool,
}

impl State {
    pub fn new(host: Host, jobs: JobSender) -> State {
        State {
            host,
            streams: VecMap::new(),
            children: VecMap::new(),
            groups: Groups::default(),
            next_stream: 0,
            calls: BTreeMap::new(),
            stops: BTreeMap::new(),
            spawns: BTreeMap::new(),
            to_spawn: Vec::new(),
            jobs: Some(jobs),
            deadline: None,
            waker: None,
            exited: None,
            reaped: Vec::new(),
            departed: Vec::new(),
            on_departure: None,
            awaiting: VecMap::new(),
            shutdown_began: None,
            started: std::time::Instant::now(),
            interrupts: 0,
            deliveries: Deliveries::default(),
            dirty: Vec::new(),
            defer_writes: false,
            defer_if_busy: false,
            job_sent: false,
            unwritten: Vec::new(),
            driver_work: false,
        }
    }

    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown_began.get_or_insert_with(std::time::Instant::now);
        self.host.shutdown(now);
    }

    pub fn take_stream_id(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }

    /// Registers a socket as a stream of `kind` (on the IO thread: the reactor is there).
    pub fn open(
        &mut self,
        shared: &Shared,
        now: Instant,
        fd: OwnedFd,
        kind: StreamKind,
        capture: Option<CaptureWrite>,
        ticket: Option<SpawnTicket>,
    ) -> Option<StreamId> {
        let stream = self.take_stream_id();
        let fd = match shared.runtime.wrap(fd) {
            Ok(fd) => fd,
            Err(e) => {
                self.deliveries.notes.push(Note::Warn(format!("cannot watch a stream: {e}")));
                return None;
            }
        };
        let ours = match capture {
            Some(c) => Kind::Logger(Some(c)),
            None => Kind::Framed,
        };
        self.streams.insert(stream, Stream { fd, kind: ours, reading: true, more: true });
        if let Err(e) = self.host.opened(now, stream, kind, ticket) {
            self.deliveries.notes.push(Note::Warn(format!("arbor driver bug: {e}")));
        }
        Some(stream)
    }

    /// Carries out every action the host has, in order. `on_io`: the caller is the IO thread's
    /// driver (otherwise spawns, timer changes and writes that would block are left for it and
    /// it is woken).
    pub fn carry_out(&mut self, shared: &Arc<Shared>, on_io: bool) {
        let mut wake = false;
        let mut dirty = std::mem::take(&mut self.dirty);
        loop {
            dirty.clear();
            while let Some(action) = self.host.poll_action() {
                match action {
                    Action::Output(out) => self.output(shared, out),
                    Action::Io(Io::Write { stream }) => dirty.push(stream),
                    Action::Io(Io::ShutdownWrite { stream }) => self.shut_write(stream),
                    Action::Io(Io::Close { stream }) => {
                        self.streams.remove(&stream);
                    }
                    Action::Io(Io::Signal { pid, signal }) => self.signal(pid, signal),
                    Action::Io(Io::Spawn { ticket, id }) => {
                        self.to_spawn.push((ticket, id));
                        wake = true;
                    }
                    Action::Io(Io::Timer(at)) => {
                        self.deadline = at;
                        wake = true;
                    }
                    Action::Io(Io::Exit { how }) => {
                        self.exited = Some(how);
                        self.fail_leftovers(shared);
                        wake = true;
                    }
                    Action::SpawnRefused { ticket, reason } => {
                        if let Some((_, reply)) = self.spawns.remove(&ticket) {
                            self.deliveries.spawns.push((reply, Err(SpawnError::Refused(reason))));
                        }
                    }
                    Action::Backpressure { paused, parent_queued } => {
                        self.deliveries.notes.push(Note::Debug(format!(
                            "reading of output captures and children {} ({parent_queued} bytes queued towards the parent)",
                            if paused { "paused" } else { "resumed" }
                        )));
                        wake |= !paused;
                    }
                    Action::ChildHeld { stream, held, queued } => {
                        self.deliveries.notes.push(Note::Debug(format!(
                            "reading of child stream {stream} {} ({queued} bytes queued towards it)",
                            if held { "held" } else { "resumed" }
                        )));
                        wake |= !held;
                    }
                }
            }
            if dirty.is_empty() {
                break;
            }
            if !on_io && (self.defer_writes || (self.defer_if_busy && self.job_sent)) {
                for &stream in &dirty {
                    if !self.unwritten.contains(&stream) {
                        self.unwritten.push(stream);
                    }
                }
                wake = true;
                break;
            } else if !on_io {
                // Written now if the sockets take it; what is left is the driver's.
                for &stream in &dirty {
                    wake |= !self.write_now(stream);
                }
            } else {
                wake = true;
                break;
            }
        }
        self.dirty = dirty;
        self.defer_writes = false;
        self.defer_if_busy = false;
        self.job_sent = false;
        if wake && !on_io {
            self.deliveries.wake = self.waker.clone();
        }
        self.driver_work |= wake && on_io;
    }

    /// Writes the stream's queue until it is empty or the socket would block; false if
    /// something is left.
    pub fn write_now(&mut self, stream: StreamId) -> bool {
        loop {
            let (Some(s), Some(queue)) = (self.streams.get(&stream), self.host.write_queue(stream)) else {
                return true;
            };
            if queue.is_empty() {
                return true;
            }
            let written = with_io_slices(queue, SEGMENTS_PER_WRITE, |slices| try_write(s.fd.fd(), slices));
            let now = clock::now();
            match written {
                Ok(Some(n)) => self.host.wrote(now, stream, n),
                Ok(None) => return false,
                Err(_) => self.host.write_failed(now, stream),
            }
        }
    }

    fn output(&mut self, shared: &Arc<Shared>, out: Output) {
        match out {
            Output::RunCall { job, request, .. } => self.run_call(shared, job, request),
            Output::CallsClosed => self.jobs = None,
            Output::CancelCall { job } => match self.stops.remove(&job) {
                // Handed out once the lock is let go of: it wakes the task.
                Some(stop) => self.deliveries.stops.push(stop),
                None => self.deliveries.notes.push(Note::Warn(format!(
                    "the caller of call {} gave up on it, but a blocking function cannot be stopped: it \
                     runs on, and its result will be dropped",
                    job.0
                ))),
            },
            Output::CallReturned { call, result } => {
                if let Some(reply) = self.calls.remove(&call) {
                    self.deliveries.answers.push((reply, result));
                }
            }
            Output::Departed(d) => {
                let waiting = match d.parent == shared.id {
                    true => self.awaiting.remove(&d.id).unwrap_or_default(),
                    false => Vec::new(),
                };
                self.departed.push(d.clone());
                self.deliveries.departures.push((self.on_departure.clone(), waiting, d));
            }
            Output::LogLine(line) => {
                let name = self.host.node().router().name(line.context).map(str::to_owned);
                self.deliveries.logs.push(LogRecord::new(line, name.as_deref()));
            }
            Output::Diagnostic(d) => {
                if let Diagnostic::ChildAbandoned(pid) = d {
                    // No departure will come for it: tell whoever waits for one.
                    if let Some(id) = self.children.get(&pid).map(|c| c.info.id) {
                        for w in self.awaiting.remove(&id).unwrap_or_default() {
                            self.deliveries.no_departures.push((w, ControlError::Abandoned(id)));
                        }
                    }
                }
                self.deliveries.notes.push(Note::Diagnostic(d))
            }
            // The host has taken care of these; their primitives follow as `Io`.
            Output::Transmit { .. }
            | Output::ShutdownWrite { .. }
            | Output::Close { .. }
            | Output::Signal { .. }
            | Output::IdsAvailable
            | Output::Exit { .. } => {}
        }
    }

    /// An async function runs as a task on the runtime's tasks thread (never on the IO thread,
    /// which must stay free to drain the capture sockets: `Runtime::spawn`); anything else goes
    /// to the calls thread, which answers an unknown name too.
    fn run_call(&mut self, shared: &Arc<Shared>, job: JobId, request: CallRequest) {
        if let Some(task) = shared.functions.task(&request, &shared.name) {
            let done = Arc::downgrade(shared);
            let (stop, stopped) = oneshot::channel::<()>();
            self.stops.insert(job, stop);
            let name = shared.name.clone();
            let is_root = shared.id == ContextId::ROOT;
            self.deliveries.tasks.push(Box::pin(async move {
                // The function's own future is polled first, so one that finished wins; a stop
                // drops it where it stands.
                let dropped = async move {
                    let _ = stopped.await;
                    Err(CallError::new(CallErrorKind::Cancelled, "dropped: its caller gave up", name))
                };
                let result = smol::future::or(task, dropped).await;
                // In a child only: the root's stdout is no capture, and its printer may hold
                // std's stdout lock while it waits for a stalled reader.
                if !is_root {
                    crate::context::flush_stdout();
                }
                if let Some(shared) = done.upgrade() {
                    shared.task_finished(job, result);
                }
            }));
            return;
        }
        match &self.jobs {
            // Sent once the lock is let go of (a refusal is reported then).
            Some(jobs) => {
                self.job_sent = true;
                self.deliveries.jobs.push((jobs.clone(), Job { id: job, request }));
            }
            None => {
                let e = CallError::new(
                    CallErrorKind::ShuttingDown,
                    "calls to this context are closed",
                    &shared.name,
                );
                self.host.call_finished(clock::now(), job, Err(e));
            }
        }
    }

    fn shut_write(&mut self, stream: StreamId) {
        if let Some(Stream { kind: Kind::Logger(capture), .. }) = self.streams.get_mut(&stream) {
            if let Some(Err(e)) = capture.take().map(CaptureWrite::shut) {
                self.deliveries.notes.push(Note::Warn(format!("cannot shut the output capture down: {e}")));
            }
        }
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        let sig = match signal {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        };
        // The child is not reaped before the core hears of it, so the pid is still ours.
        let Some(target) = i32::try_from(pid.0).ok().and_then(rustix::process::Pid::from_raw) else { return };
        if let Err(e) = rustix::process::kill_process(target, sig) {
            self.deliveries.notes.push(Note::Warn(format!("cannot signal child {pid}: {e}")));
        }
    }

    /// A child was reaped: the report, its process group, the host.
    pub fn reaped(&mut self, now: Instant, pid: Pid, status: ExitStatus) {
        if let Some(c) = self.children.remove(&pid) {
            let since = self.shutdown_began.unwrap_or(self.started);
            let after = since.elapsed();
            self.deliveries.notes.push(Note::Debug(format!(
                "child {pid} (context {}) reaped: {status:?} after {after:?}",
                c.info.id.0
            )));
            self.reaped.push(Reaped { id: c.info.id, name: c.info.name, pid, status, after });
            let escalation = self.host.node().config().escalation.kill_after;
            self.groups.watch(pid, escalation);
        }
        self.host.child_exited(now, pid, status);
    }

    /// Takes the spawn request for `ticket`.
    pub fn spawn_request(&mut self, ticket: SpawnTicket) -> Option<(SpawnOptions, SpawnReply)> {
        self.spawns.remove(&ticket)
    }

    pub fn spawn_answer(&mut self, reply: SpawnReply, result: Result<ChildInfo, SpawnError>) {
        self.deliveries.spawns.push((reply, result));
    }

    pub fn note(&mut self, note: Note) {
        self.deliveries.notes.push(note);
    }

    pub fn take_deliveries(&mut self, spare: Deliveries) -> Deliveries {
        std::mem::replace(&mut self.deliveries, spare)
    }

    /// After `Exit`: calls and spawns still waiting will never be answered by the node.
    /// The IO thread is gone without the context having exited: as if it had, for every caller.
    pub fn io_gone(&mut self, shared: &Shared) {
        if self.exited.is_none() {
            self.exited = Some(ExitKind::SigtermSelf);
            self.fail_leftovers(shared);
        }
    }

    fn fail_leftovers(&mut self, shared: &Shared) {
        for (_, reply) in std::mem::take(&mut self.calls) {
            self.deliveries.answers.push((reply, Err(gone(&shared.name))));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.spawns) {
            self.deliveries.spawns.push((reply, Err(SpawnError::ShuttingDown)));
        }
        for (_, waiting) in std::mem::take(&mut self.awaiting) {
            for w in waiting {
                self.deliveries.no_departures.push((w, ControlError::ShuttingDown));
            }
        }
        self.jobs = None;
    }
}
