//! The IO ("broker") thread: it owns the core `Node` and is its host, exactly as
//! docs/embedding.md describes — carry out every output in order, sleep until IO, a command or
//! the node's next deadline, feed what happened back in.
//!
//! Nothing here ever waits for user code: calls go to another thread as `Job`s and come back as
//! [`Command::Finished`], so shutdown proceeds however long a function hangs.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, CallResult, JobId};
use arbor_core::ids::{ContextId, IdError};
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::{ExitKind, Phase};
use arbor_core::time::Instant;
use async_executor::{LocalExecutor, Task};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, Stream as _};

use crate::clock;
use crate::error::SpawnError;
use crate::logger::CaptureWrite;
use crate::logs::{self, LogRecord};
use crate::oneshot;
use crate::reap;
use crate::runner::Job;
use crate::spawn::{self, ChildInfo, SpawnOptions};
use crate::streams::{self, Writer};

/// How much one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// Reads of one stream in one turn of the loop before the others (and the executor's tasks)
/// get theirs.
const READS_PER_TURN: usize = 16;
/// Commands or events taken in one turn of the loop before the node's outputs are carried out.
const RECEIVES_PER_TURN: usize = 64;

/// Bytes queued towards the parent above which the broker stops reading its own loggers, so a
/// runaway printer cannot grow memory without bound (docs/embedding.md "Backpressure").
const PARENT_HIGH_WATER: usize = 8 * 1024 * 1024;
/// While throttled, how often to look at the parent queue again.
const THROTTLE_RECHECK: Duration = Duration::from_millis(5);
/// After `Exit`, how long frames already queued (the last log lines, DEL_ROUTEs) may take to
/// reach the parent before the process ends regardless.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// A request from another thread: the client API, or the thread running calls.
#[derive(Debug)]
pub(crate) enum Command {
    Call { target: ContextId, function: String, args: Vec<u8>, reply: oneshot::Sender<CallResult> },
    CallNoReply { target: ContextId, function: String, args: Vec<u8>, reply: oneshot::Sender<CallResult> },
    Spawn { options: SpawnOptions, reply: async_channel::Sender<Result<ChildInfo, SpawnError>> },
    Finished { job: JobId, result: CallResult },
    Shutdown,
    ForceShutdown,
}

/// Something that happened on the IO thread's sockets or children.
#[derive(Debug)]
pub(crate) enum Event {
    Broken(StreamId),
    /// A closed framed stream finished writing out what was queued on it.
    Closed(StreamId),
    Exited(Pid, ExitStatus),
    Interrupt,
}

/// How log records reaching the root are handled.
pub(crate) type LogHandler = Box<dyn Fn(&LogRecord) + Send>;

/// Everything the IO thread starts from; built on the spawning thread and moved in.
pub(crate) struct Setup {
    pub config: NodeConfig,
    pub parent: Option<OwnedFd>,
    pub captures: Vec<(CaptureWrite, OwnedFd)>,
    pub commands: async_channel::Receiver<Command>,
    pub jobs: mpsc::Sender<Job>,
    pub interrupts: Option<UnixStream>,
    pub on_log: Option<LogHandler>,
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
    /// When it was reaped, counted from the start of shutdown (from spawn if it left earlier).
    pub after: Duration,
}

/// What the broker reports when the node exits.
#[derive(Debug)]
pub(crate) struct Finished {
    pub how: ExitKind,
    pub shutdown_began: Option<std::time::Instant>,
    pub reaped: Vec<Reaped>,
}

/// A stream's read side, read by the broker itself: the socket is read until it would block
/// before the broker sleeps again, with no task or channel between the read and the node.
struct Reading {
    sock: Rc<Async<UnixStream>>,
    /// False once EOF or an error was fed to the node.
    open: bool,
    /// The last turn stopped at its read budget: read again without waiting for readiness.
    more: bool,
}

enum Stream {
    Framed { reading: Reading, writer: Writer, writer_task: Task<()> },
    Logger { reading: Reading, capture: Option<CaptureWrite> },
}

impl Stream {
    fn reading(&mut self) -> &mut Reading {
        match self {
            Stream::Framed { reading, .. } | Stream::Logger { reading, .. } => reading,
        }
    }
}

/// What a turn of the loop waits on besides the streams.
struct Waits<'a> {
    commands: Pin<&'a mut async_channel::Receiver<Command>>,
    commands_open: bool,
    events: Pin<&'a mut async_channel::Receiver<Event>>,
    /// The node's next deadline, armed (re-armed only when it changes).
    timer: Option<(Instant, Timer)>,
    /// While the parent queue is over its high-water mark: when to look again.
    throttle: Option<Timer>,
    buf: Vec<u8>,
    /// A read budget ran out last turn: give the executor's tasks a turn before reading on.
    yield_first: bool,
}

struct Broker {
    node: Node,
    ex: Rc<LocalExecutor<'static>>,
    events: async_channel::Sender<Event>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: u32,
    parent: Option<StreamId>,
    calls: BTreeMap<CallId, oneshot::Sender<CallResult>>,
    jobs: Option<mpsc::Sender<Job>>,
    spawns_waiting: VecDeque<(SpawnOptions, async_channel::Sender<Result<ChildInfo, SpawnError>>)>,
    children: BTreeMap<Pid, ChildInfo>,
    reaped: Vec<Reaped>,
    closing: Vec<Task<()>>,
    on_log: Option<LogHandler>,
    interrupts: u32,
    shutdown_began: Option<std::time::Instant>,
    started: std::time::Instant,
}

/// Runs a context's IO until its node exits. Blocks the calling thread (the IO thread).
pub(crate) fn run(setup: Setup) -> Finished {
    let ex = Rc::new(LocalExecutor::new());
    let (events, events_rx) = async_channel::bounded(256);
    let mut broker = Broker {
        node: Node::new(setup.config),
        ex: ex.clone(),
        events,
        streams: BTreeMap::new(),
        next_stream: 0,
        parent: None,
        calls: BTreeMap::new(),
        jobs: Some(setup.jobs),
        spawns_waiting: VecDeque::new(),
        children: BTreeMap::new(),
        reaped: Vec::new(),
        closing: Vec::new(),
        on_log: setup.on_log,
        interrupts: 0,
        shutdown_began: None,
        started: std::time::Instant::now(),
    };
    let now = clock::now();
    if let Some(fd) = setup.parent {
        broker.open_framed(now, fd, StreamKind::Parent);
    }
    for (capture, read) in setup.captures {
        broker.open_logger(now, capture, read);
    }
    if let Some(sock) = setup.interrupts {
        match Async::new(sock) {
            Ok(sock) => ex.spawn(read_interrupts(sock, broker.events.clone())).detach(),
            Err(e) => tracing::warn!("cannot watch SIGINT/SIGTERM: {e}"),
        }
    }
    async_io::block_on(ex.run(broker.run(setup.commands, events_rx)))
}

impl Broker {
    async fn run(
        mut self,
        commands: async_channel::Receiver<Command>,
        events: async_channel::Receiver<Event>,
    ) -> Finished {
        let commands = std::pin::pin!(commands);
        let events = std::pin::pin!(events);
        let mut waits = Waits {
            commands,
            commands_open: true,
            events,
            timer: None,
            throttle: None,
            buf: vec![0u8; READ_CHUNK],
            yield_first: false,
        };
        loop {
            if let Some(how) = self.carry_out() {
                return self.finish(how).await;
            }
            // A timer is armed only for a deadline, and re-armed only when it moves: arming one
            // wakes async-io's reactor.
            match (self.node.poll_timeout(), &mut waits.timer) {
                (None, timer) => *timer = None,
                (Some(at), Some((armed, timer))) => {
                    if *armed != at {
                        timer.set_at(clock::to_std(at));
                        *armed = at;
                    }
                }
                (Some(at), timer @ None) => *timer = Some((at, Timer::at(clock::to_std(at)))),
            }
            if self.parent_queued() <= PARENT_HIGH_WATER {
                waits.throttle = None;
            } else if waits.throttle.is_none() {
                waits.throttle = Some(Timer::after(THROTTLE_RECHECK));
            }
            future::poll_fn(|cx| self.turn(cx, &mut waits)).await;
        }
    }

    /// One turn: feeds the node everything that is ready (reads, commands, events, the
    /// deadline) and is ready itself if anything was; else it waits for any of them.
    fn turn(&mut self, cx: &mut Context<'_>, waits: &mut Waits<'_>) -> Poll<()> {
        if std::mem::take(&mut waits.yield_first) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let now = clock::now();
        let mut progressed = self.read_streams(cx, now, waits);
        for _ in 0..RECEIVES_PER_TURN {
            if !waits.commands_open {
                break;
            }
            match waits.commands.as_mut().poll_next(cx) {
                Poll::Ready(Some(command)) => self.command(now, command),
                Poll::Ready(None) => {
                    // Every handle on this context is gone: nobody can ask for anything again.
                    waits.commands_open = false;
                    self.begin_shutdown(now);
                }
                Poll::Pending => break,
            }
            progressed = true;
        }
        for _ in 0..RECEIVES_PER_TURN {
            match waits.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(event)) => self.event(now, event),
                Poll::Ready(None) | Poll::Pending => break,
            }
            progressed = true;
        }
        if let Some((_, timer)) = &mut waits.timer {
            if Pin::new(timer).poll(cx).is_ready() {
                waits.timer = None;
                self.node.handle_timeout(now);
                progressed = true;
            }
        }
        if let Some(throttle) = &mut waits.throttle {
            if Pin::new(throttle).poll(cx).is_ready() {
                waits.throttle = None;
                progressed = true;
            }
        }
        if progressed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Reads every stream that is readable until it would block (or its budget runs out),
    /// feeding the node as it goes; loggers wait while the parent queue is over its mark.
    fn read_streams(&mut self, cx: &mut Context<'_>, now: Instant, waits: &mut Waits<'_>) -> bool {
        let throttled = waits.throttle.is_some();
        let mut ready = Vec::new();
        for (&id, stream) in &mut self.streams {
            if throttled && matches!(stream, Stream::Logger { .. }) {
                continue;
            }
            let reading = stream.reading();
            if reading.open
                && (std::mem::take(&mut reading.more) || reading.sock.poll_readable(cx).is_ready())
            {
                ready.push((id, reading.sock.clone()));
            }
        }
        let mut progressed = false;
        for (id, sock) in ready {
            let mut reads = 0;
            let end = loop {
                if reads == READS_PER_TURN {
                    if let Some(stream) = self.streams.get_mut(&id) {
                        stream.reading().more = true;
                    }
                    waits.yield_first = true;
                    break None;
                }
                match sock.get_ref().read(&mut waits.buf) {
                    Ok(0) => break Some(Input::Eof { stream: id }),
                    Ok(n) => {
                        reads += 1;
                        progressed = true;
                        self.input(now, Input::Received { stream: id, bytes: &waits.buf[..n] });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Waits for the next readiness; ready already if it came meanwhile.
                        if sock.poll_readable(cx).is_pending() {
                            break None;
                        }
                    }
                    Err(_) => break Some(Input::StreamClosed { stream: id }),
                }
            };
            if let Some(input) = end {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.reading().open = false;
                }
                progressed = true;
                self.input(now, input);
            }
        }
        progressed
    }

    fn parent_queued(&self) -> usize {
        match self.parent.and_then(|p| self.streams.get(&p)) {
            Some(Stream::Framed { writer, .. }) => writer.queued(),
            _ => 0,
        }
    }

    fn input(&mut self, now: Instant, input: Input<'_>) {
        if let Err(e) = self.node.handle_input(now, input) {
            // Only a host mistake gets here (docs/embedding.md): say so loudly, keep going.
            tracing::error!("arbor driver bug: {e}");
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown_began.get_or_insert_with(std::time::Instant::now);
        self.node.shutdown(now);
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Call { target, function, args, reply } => {
                match self.node.call(now, target, &function, args) {
                    Ok(call) => {
                        self.calls.insert(call, reply);
                    }
                    Err(e) => {
                        reply.send(Err(e));
                    }
                }
            }
            Command::CallNoReply { target, function, args, reply } => {
                let result = self.node.call_no_reply(now, target, &function, args);
                reply.send(result.map(|()| bytes::Bytes::new()));
            }
            Command::Spawn { options, reply } => self.spawn(now, options, reply),
            Command::Finished { job, result } => self.input(now, Input::CallFinished { job, result }),
            Command::Shutdown => self.begin_shutdown(now),
            Command::ForceShutdown => {
                self.shutdown_began.get_or_insert_with(std::time::Instant::now);
                self.node.force_shutdown(now);
            }
        }
    }

    fn event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Broken(stream) => self.input(now, Input::StreamClosed { stream }),
            Event::Closed(stream) => self.input(now, Input::Closed { stream }),
            Event::Exited(pid, status) => {
                if let Some(info) = self.children.remove(&pid) {
                    let since = self.shutdown_began.unwrap_or(self.started);
                    let after = since.elapsed();
                    tracing::debug!(%pid, id = info.id.0, ?status, ?after, "child reaped");
                    self.reaped.push(Reaped { id: info.id, name: info.name, pid, status, after });
                }
                self.input(now, Input::ChildExited { pid, status });
            }
            Event::Interrupt => {
                self.interrupts += 1;
                if self.interrupts == 1 {
                    tracing::info!("interrupted: shutting the tree down (again to force)");
                    self.begin_shutdown(now);
                } else {
                    tracing::warn!("interrupted again: forcing the shutdown");
                    self.node.force_shutdown(now);
                }
            }
        }
    }

    /// Carries out every output, in order; returns how to exit once the node says so.
    fn carry_out(&mut self) -> Option<ExitKind> {
        loop {
            let (finished_late, ids_arrived) = match self.carry_out_queued() {
                Ok(deferred) => deferred,
                Err(how) => return Some(how),
            };
            if finished_late.is_empty() && !ids_arrived {
                return None;
            }
            // Inputs that outputs gave rise to; their own outputs are drained next time round.
            let now = clock::now();
            for (job, result) in finished_late {
                self.input(now, Input::CallFinished { job, result });
            }
            if ids_arrived {
                for (options, reply) in std::mem::take(&mut self.spawns_waiting) {
                    self.spawn(now, options, reply);
                }
            }
        }
    }

    /// Drains the node's output queue; returns what must be fed back in, or how to exit.
    #[allow(clippy::type_complexity)]
    fn carry_out_queued(&mut self) -> Result<(Vec<(JobId, CallResult)>, bool), ExitKind> {
        let mut finished_late = Vec::new();
        let mut ids_arrived = false;
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit { stream, frame } => {
                    if let Some(Stream::Framed { writer, .. }) = self.streams.get(&stream) {
                        // A writer that already ended has reported the stream broken.
                        let _ = writer.send(frame);
                    }
                }
                Output::ShutdownWrite { stream } => {
                    if let Some(Stream::Logger { capture, .. }) = self.streams.get_mut(&stream) {
                        if let Some(Err(e)) = capture.take().map(CaptureWrite::shut) {
                            tracing::warn!("cannot shut the output capture down: {e}");
                        }
                    }
                }
                Output::Close { stream } => self.close(stream),
                Output::Signal { pid, signal } => kill(pid, signal),
                Output::RunCall { job, request, .. } => {
                    let sent = self.jobs.as_ref().map(|jobs| jobs.send(Job { id: job, request }));
                    if !matches!(sent, Some(Ok(()))) {
                        let e = CallError::new(
                            CallErrorKind::ShuttingDown,
                            "the thread running calls is gone",
                            self.node.config().name.clone(),
                        );
                        finished_late.push((job, Err(e)));
                    }
                }
                Output::CallsClosed => self.jobs = None,
                Output::CallReturned { call, result } => {
                    if let Some(reply) = self.calls.remove(&call) {
                        reply.send(result);
                    }
                }
                Output::LogLine(line) => {
                    let name = self.node.router().name(line.context).map(str::to_owned);
                    let record = LogRecord::new(line, name.as_deref());
                    match &self.on_log {
                        Some(handler) => handler(&record),
                        None => logs::emit(&record),
                    }
                }
                Output::IdsAvailable => ids_arrived = true,
                Output::Diagnostic(d) => diagnostic(&d),
                Output::Exit { how } => return Err(how),
            }
        }
        Ok((finished_late, ids_arrived))
    }

    /// After `Exit`: let the last frames reach the parent (bounded), then report.
    async fn finish(mut self, how: ExitKind) -> Finished {
        let closing = std::mem::take(&mut self.closing);
        let flush = async {
            for task in closing {
                task.await;
            }
        };
        future::or(flush, async {
            Timer::after(FINAL_FLUSH).await;
        })
        .await;
        Finished { how, shutdown_began: self.shutdown_began, reaped: std::mem::take(&mut self.reaped) }
    }

    fn take_stream_id(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }

    fn open_framed(&mut self, now: Instant, fd: OwnedFd, kind: StreamKind) -> Option<StreamId> {
        let sock = match Async::new(UnixStream::from(fd)) {
            Ok(sock) => Rc::new(sock),
            Err(e) => {
                tracing::error!("cannot watch a stream: {e}");
                return None;
            }
        };
        let stream = self.take_stream_id();
        let reading = Reading { sock: sock.clone(), open: true, more: true };
        let (writer, task) = streams::writer(sock, stream, self.events.clone());
        let writer_task = self.ex.spawn(task);
        if kind == StreamKind::Parent {
            self.parent = Some(stream);
        }
        self.streams.insert(stream, Stream::Framed { reading, writer, writer_task });
        self.input(now, Input::StreamOpened { stream, kind });
        Some(stream)
    }

    fn open_logger(&mut self, now: Instant, capture: CaptureWrite, read: OwnedFd) {
        let source = capture.source();
        let sock = match Async::new(UnixStream::from(read)) {
            Ok(sock) => Rc::new(sock),
            Err(e) => {
                tracing::error!("cannot watch the output capture: {e}");
                return;
            }
        };
        let stream = self.take_stream_id();
        let reading = Reading { sock, open: true, more: true };
        self.streams.insert(stream, Stream::Logger { reading, capture: Some(capture) });
        self.input(now, Input::StreamOpened { stream, kind: StreamKind::Logger { source } });
    }

    /// `Output::Close`: framed streams finish their queued writes first; readers stop now.
    fn close(&mut self, stream: StreamId) {
        if self.parent == Some(stream) {
            self.parent = None;
        }
        match self.streams.remove(&stream) {
            Some(Stream::Framed { reading, writer, writer_task }) => {
                drop(reading);
                writer.close();
                // Tell the node once the queued bytes are out: a child waits for this on its
                // parent stream before it exits (docs/shutdown.md "Closing and exit").
                let events = self.events.clone();
                self.closing.push(self.ex.spawn(async move {
                    writer_task.await;
                    let _ = events.send(Event::Closed(stream)).await;
                }));
            }
            Some(Stream::Logger { reading, capture }) => {
                drop(reading);
                // Closed without a SHUT_WR first (a forced disconnect): still move fds 1 and 2
                // off the socket, so a late print cannot fail.
                if let Some(Err(e)) = capture.map(CaptureWrite::shut) {
                    tracing::warn!("cannot shut the output capture down: {e}");
                }
            }
            None => {}
        }
    }

    fn spawn(
        &mut self,
        now: Instant,
        options: SpawnOptions,
        reply: async_channel::Sender<Result<ChildInfo, SpawnError>>,
    ) {
        if self.node.phase() != Phase::Running {
            let _ = reply.try_send(Err(SpawnError::ShuttingDown));
            return;
        }
        let id = match self.node.allocate_id(now) {
            Ok(id) => id,
            Err(IdError::NeedBlock) => {
                // The node asked the root for a block; retried on `Output::IdsAvailable`.
                self.spawns_waiting.push_back((options, reply));
                return;
            }
            Err(IdError::Exhausted) => {
                let _ = reply.try_send(Err(SpawnError::IdsExhausted));
                return;
            }
        };
        let config = self.node.config();
        let started = spawn::start(id, config.id, &config.ancestors, config.grace, &options);
        let started = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = reply.try_send(Err(SpawnError::Io(e)));
                return;
            }
        };
        let info = started.info.clone();
        self.children.insert(info.pid, info.clone());
        self.ex.spawn(reap::reap(started.child, self.events.clone())).detach();
        let kind = StreamKind::Child { id, pid: Some(info.pid), name: Some(info.name.clone()) };
        self.open_framed(now, started.stream, kind);
        let _ = reply.try_send(Ok(info));
    }
}

/// Reads the self-pipe the root's signal handlers write to.
async fn read_interrupts(sock: Async<UnixStream>, events: async_channel::Sender<Event>) {
    let mut sock = sock;
    let mut buf = [0u8; 16];
    while let Ok(n) = sock.read(&mut buf).await {
        if n == 0 {
            return;
        }
        for _ in 0..n {
            if events.send(Event::Interrupt).await.is_err() {
                return;
            }
        }
    }
}

fn kill(pid: Pid, signal: Signal) {
    let sig = match signal {
        Signal::Term => rustix::process::Signal::TERM,
        Signal::Kill => rustix::process::Signal::KILL,
    };
    let Some(target) = i32::try_from(pid.0).ok().and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    // The child is not reaped before the core hears of it, so the pid is still ours to signal.
    if let Err(e) = rustix::process::kill_process(target, sig) {
        tracing::warn!(%pid, "cannot signal child: {e}");
    }
}

fn diagnostic(d: &Diagnostic) {
    match d {
        Diagnostic::StreamFailed { .. }
        | Diagnostic::ChildAbandoned(_)
        | Diagnostic::BadCallRequest { .. } => {
            tracing::warn!(diagnostic = ?d, "arbor")
        }
        _ => tracing::debug!(diagnostic = ?d, "arbor"),
    }
}
