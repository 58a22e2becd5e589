//! The IO ("broker") thread: it owns the core `Node` and is its host, exactly as
//! docs/embedding.md describes — carry out every output in order, sleep until IO, a command or
//! the node's next deadline, feed what happened back in.
//!
//! The thread sleeps in `epoll_wait` on one epoll of its own: every socket, child pidfd, the
//! interrupt socket and the command queue's eventfd are registered once, edge-triggered, and
//! the node's next deadline is the wait's timeout (no timerfd). Write interest is added to a
//! socket only while frames are queued on it, so a peer reading what we wrote does not wake us.
//!
//! Nothing here ever waits for user code: calls go to another thread as `Job`s and come back as
//! [`Command::Finished`], so shutdown proceeds however long a function hangs.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, CallResult, JobId};
use arbor_core::ids::{ContextId, IdError};
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::{ExitKind, Phase};
use arbor_core::time::Instant;
use rustix::event::{epoll, Timespec};

use crate::clock;
use crate::error::SpawnError;
use crate::logger::CaptureWrite;
use crate::logs::{self, LogRecord};
use crate::mailbox::{self, Recv};
use crate::oneshot;
use crate::reap::{self, Reaper};
use crate::runner::{Job, JobSender};
use crate::spawn::{self, ChildInfo, SpawnOptions};
use crate::streams::Writer;

/// How much one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// Reads of one stream in one turn of the loop before the others get theirs.
const READS_PER_TURN: usize = 16;
/// Commands or events taken in one turn of the loop before the node's outputs are carried out.
const RECEIVES_PER_TURN: usize = 64;
/// Readiness events taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 64;
/// The longest single sleep (a deadline further off is slept towards in steps).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// Bytes queued towards the parent above which the broker stops reading its own loggers, so a
/// runaway printer cannot grow memory without bound (docs/embedding.md "Backpressure").
const PARENT_HIGH_WATER: usize = 8 * 1024 * 1024;
/// After `Exit`, how long frames already queued (the last log lines, DEL_ROUTEs) may take to
/// reach the parent before the process ends regardless.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// epoll tokens: the command queue's eventfd, the interrupt socket, a stream (tag | stream id),
/// a child's pidfd (tag | pid).
const TOKEN_COMMANDS: u64 = 0;
const TOKEN_INTERRUPTS: u64 = 1;
const TAG_STREAM: u64 = 1 << 32;
const TAG_CHILD: u64 = 2 << 32;
const TAG_MASK: u64 = !0 << 32;

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
}

/// How log records reaching the root are handled.
pub(crate) type LogHandler = Box<dyn Fn(&LogRecord) + Send>;

/// Everything the IO thread starts from; built on the spawning thread and moved in.
pub(crate) struct Setup {
    pub config: NodeConfig,
    pub parent: Option<OwnedFd>,
    pub captures: Vec<(CaptureWrite, OwnedFd)>,
    pub commands: mailbox::Receiver<Command>,
    pub jobs: JobSender,
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

enum Kind {
    Framed(Writer),
    Logger(Option<CaptureWrite>),
}

/// A socket the broker reads (and, framed, writes) itself: read until it would block before
/// the broker sleeps again, with no task or channel between the read and the node.
struct Stream {
    sock: UnixStream,
    kind: Kind,
    /// False once EOF or an error was fed to the node.
    open: bool,
    /// epoll said readable (or the last turn stopped at its read budget) and no read has met
    /// `WouldBlock` (or a short read) since.
    readable: bool,
    /// epoll reported the peer's end (or an error): read on to EOF, never stopping at a short
    /// read.
    hung_up: bool,
    /// Registered for writability too (while frames are queued).
    want_write: bool,
}

/// A closed framed stream still writing out what was queued on it.
struct Closing {
    sock: UnixStream,
    writer: Writer,
}

struct Broker {
    node: Node,
    epoll: OwnedFd,
    commands: mailbox::Receiver<Command>,
    commands_open: bool,
    /// The command queue may hold something: its eventfd fired, or a turn's budget ran out.
    commands_ready: bool,
    interrupts_sock: Option<UnixStream>,
    interrupts_ready: bool,
    events: VecDeque<Event>,
    streams: BTreeMap<StreamId, Stream>,
    closing: BTreeMap<StreamId, Closing>,
    next_stream: u32,
    parent: Option<StreamId>,
    calls: BTreeMap<CallId, oneshot::Sender<CallResult>>,
    jobs: Option<JobSender>,
    /// A command is likely soon: a job was handed to the calls thread (a quick function's
    /// result comes back within microseconds), or the last call in flight was answered (its
    /// caller may call again at once). The next sleep then begins with a short spin on the
    /// command queue, so that command needs no eventfd write and epoll wake-up. Once per such
    /// event, so a long-running function costs one spin, not one per wake-up; and never while
    /// other calls are in flight, whose answers arrive on sockets, which a spin does not watch.
    spin_for_command: bool,
    spawns_waiting: VecDeque<(SpawnOptions, async_channel::Sender<Result<ChildInfo, SpawnError>>)>,
    children: BTreeMap<Pid, ChildInfo>,
    reapers: BTreeMap<u32, Reaper>,
    reaped: Vec<Reaped>,
    on_log: Option<LogHandler>,
    interrupts: u32,
    shutdown_began: Option<std::time::Instant>,
    started: std::time::Instant,
    buf: Vec<u8>,
    ready: Vec<epoll::Event>,
}

/// Runs a context's IO until its node exits. Blocks the calling thread (the IO thread).
pub(crate) fn run(setup: Setup) -> Finished {
    let epoll = match epoll::create(epoll::CreateFlags::CLOEXEC) {
        Ok(epoll) => epoll,
        // Without epoll nothing can be served; a context's IO thread ending ends the process.
        Err(e) => panic!("arbor: cannot create an epoll instance: {e}"),
    };
    let mut broker = Broker {
        node: Node::new(setup.config),
        epoll,
        commands: setup.commands,
        commands_open: true,
        commands_ready: true,
        interrupts_sock: None,
        interrupts_ready: false,
        events: VecDeque::new(),
        streams: BTreeMap::new(),
        closing: BTreeMap::new(),
        next_stream: 0,
        parent: None,
        calls: BTreeMap::new(),
        jobs: Some(setup.jobs),
        spin_for_command: false,
        spawns_waiting: VecDeque::new(),
        children: BTreeMap::new(),
        reapers: BTreeMap::new(),
        reaped: Vec::new(),
        on_log: setup.on_log,
        interrupts: 0,
        shutdown_began: None,
        started: std::time::Instant::now(),
        buf: vec![0u8; READ_CHUNK],
        ready: Vec::with_capacity(EVENTS_PER_WAIT),
    };
    if let Err(e) = broker.watch(broker.commands.fd(), TOKEN_COMMANDS, false) {
        panic!("arbor: cannot watch the command queue: {e}");
    }
    let now = clock::now();
    if let Some(fd) = setup.parent {
        broker.open_framed(now, fd, StreamKind::Parent);
    }
    for (capture, read) in setup.captures {
        broker.open_logger(now, capture, read);
    }
    if let Some(sock) = setup.interrupts {
        let watched =
            sock.set_nonblocking(true).and_then(|()| broker.watch(sock.as_fd(), TOKEN_INTERRUPTS, false));
        match watched {
            Ok(()) => {
                broker.interrupts_sock = Some(sock);
                broker.interrupts_ready = true;
            }
            Err(e) => tracing::warn!("cannot watch SIGINT/SIGTERM: {e}"),
        }
    }
    broker.run()
}

fn interest(write: bool) -> epoll::EventFlags {
    let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
    if write {
        flags | epoll::EventFlags::OUT
    } else {
        flags
    }
}

/// Registers a framed stream for writability exactly while it has frames queued.
fn sync_write_interest(epoll: &OwnedFd, id: StreamId, sock: &UnixStream, writer: &Writer, want: &mut bool) {
    let need = !writer.idle();
    if need != *want {
        let data = epoll::EventData::new_u64(TAG_STREAM | u64::from(id.0));
        match epoll::modify(epoll, sock, data, interest(need)) {
            Ok(()) => *want = need,
            Err(e) => tracing::error!("cannot change what epoll watches a stream for: {e}"),
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    let d = d.min(LONGEST_SLEEP);
    Timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ }
}

impl Broker {
    fn watch(&self, fd: std::os::fd::BorrowedFd<'_>, token: u64, write: bool) -> io::Result<()> {
        Ok(epoll::add(&self.epoll, fd, epoll::EventData::new_u64(token), interest(write))?)
    }

    fn unwatch(&self, fd: std::os::fd::BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
    }

    fn run(mut self) -> Finished {
        loop {
            if let Some(how) = self.carry_out() {
                return self.finish(how);
            }
            if self.has_work() {
                self.wait(Some(Duration::ZERO));
            } else if std::mem::take(&mut self.spin_for_command) && self.commands_open && self.commands.spin()
            {
                // A job's result came back while we watched the queue: no eventfd write, no
                // epoll wake-up. Readiness that arrived meanwhile stays queued in the epoll
                // (edge-triggered) for the next wait.
                self.commands_ready = true;
            } else {
                let timeout = self.sleep_for();
                self.wait(timeout);
            }
            self.turn();
        }
    }

    fn throttled(&self) -> bool {
        self.parent_queued() > PARENT_HIGH_WATER
    }

    /// Something can be done without waiting.
    fn has_work(&self) -> bool {
        if !self.events.is_empty() || self.commands_ready || self.interrupts_ready {
            return true;
        }
        let throttled = self.throttled();
        self.streams
            .values()
            .any(|s| s.open && s.readable && !(throttled && matches!(s.kind, Kind::Logger(_))))
    }

    /// How long to sleep at most: until the node's deadline (and, for children without a
    /// pidfd, until it is time to poll them).
    fn sleep_for(&self) -> Option<Duration> {
        let deadline = self
            .node
            .poll_timeout()
            .map(|at| clock::to_std(at).saturating_duration_since(std::time::Instant::now()));
        if self.reapers.values().any(|r| r.pidfd.is_none()) {
            Some(deadline.map_or(reap::POLL_WITHOUT_PIDFD, |d| d.min(reap::POLL_WITHOUT_PIDFD)))
        } else {
            deadline
        }
    }

    /// Sleeps in `epoll_wait` (not at all with a zero timeout) and notes what became ready;
    /// queued writes are carried on at once.
    fn wait(&mut self, timeout: Option<Duration>) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        let timeout = timeout.map(timespec);
        match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut ready), timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::error!("epoll_wait failed: {e}");
                // Never spin on a persistent failure.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for event in &ready {
            let (flags, token) = (event.flags, event.data.u64());
            self.ready(token, flags);
        }
        self.ready = ready;
    }

    fn ready(&mut self, token: u64, flags: epoll::EventFlags) {
        match (token & TAG_MASK, token) {
            (_, TOKEN_COMMANDS) => {
                self.commands.reset();
                self.commands_ready = true;
            }
            (_, TOKEN_INTERRUPTS) => self.interrupts_ready = true,
            (TAG_STREAM, _) => {
                let id = StreamId(token as u32);
                let writable = flags
                    .intersects(epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP);
                if let Some(stream) = self.streams.get_mut(&id) {
                    if flags.intersects(!epoll::EventFlags::OUT) {
                        stream.readable = true;
                    }
                    if flags.intersects(
                        epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                    ) {
                        stream.hung_up = true;
                    }
                    if writable && stream.want_write {
                        let Stream { sock, kind, want_write, .. } = stream;
                        if let Kind::Framed(writer) = kind {
                            if writer.flush(sock) {
                                self.events.push_back(Event::Broken(id));
                            }
                            sync_write_interest(&self.epoll, id, sock, writer, want_write);
                        }
                    }
                } else if writable {
                    self.flush_closing(id);
                }
            }
            (TAG_CHILD, _) => {
                let pid = token as u32;
                self.try_reap(pid);
            }
            _ => {}
        }
    }

    fn try_reap(&mut self, pid: u32) {
        let Some(reaper) = self.reapers.get_mut(&pid) else { return };
        if let Some(status) = reaper.try_reap() {
            if let Some(reaper) = self.reapers.remove(&pid) {
                if let Some(fd) = &reaper.pidfd {
                    self.unwatch(fd.as_fd());
                }
            }
            self.events.push_back(Event::Exited(Pid(pid), status));
        }
    }

    /// Writes on a closed stream's queue; once it is all out, shuts the socket down and tells
    /// the node.
    fn flush_closing(&mut self, id: StreamId) {
        let Some(closing) = self.closing.get_mut(&id) else { return };
        if closing.writer.flush(&closing.sock) {
            self.events.push_back(Event::Broken(id));
        }
        if closing.writer.idle() {
            if let Some(closing) = self.closing.remove(&id) {
                self.closed(id, closing);
            }
        }
    }

    fn closed(&mut self, id: StreamId, closing: Closing) {
        if !closing.writer.broken() {
            let _ = closing.sock.shutdown(Shutdown::Both);
        }
        self.unwatch(closing.sock.as_fd());
        self.events.push_back(Event::Closed(id));
    }

    /// One turn: feeds the node everything that is ready (reads, commands, events, the
    /// deadline).
    fn turn(&mut self) {
        let now = clock::now();
        self.read_streams(now);
        if self.commands_ready {
            // The budget may run out with commands left: then look again next turn (without
            // sleeping). Otherwise the queue was found empty, and the next command writes the
            // eventfd.
            self.commands_ready = true;
            for _ in 0..RECEIVES_PER_TURN {
                match self.commands.try_recv() {
                    Recv::Item(command) => self.command(now, command),
                    Recv::Empty => {
                        self.commands_ready = false;
                        break;
                    }
                    Recv::Closed => {
                        self.commands_ready = false;
                        if std::mem::take(&mut self.commands_open) {
                            // Every handle on this context is gone: nobody can ask for anything
                            // again.
                            self.begin_shutdown(now);
                        }
                        break;
                    }
                }
            }
        }
        for _ in 0..RECEIVES_PER_TURN {
            match self.events.pop_front() {
                Some(event) => self.event(now, event),
                None => break,
            }
        }
        if std::mem::take(&mut self.interrupts_ready) {
            self.read_interrupts(now);
        }
        let polled: Vec<u32> =
            self.reapers.iter().filter(|(_, r)| r.pidfd.is_none()).map(|(&pid, _)| pid).collect();
        for pid in polled {
            self.try_reap(pid);
        }
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
    }

    /// Reads every stream that is readable until it would block (or its budget runs out),
    /// feeding the node as it goes; loggers wait while the parent queue is over its mark.
    fn read_streams(&mut self, now: Instant) {
        let throttled = self.throttled();
        let ready: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.open && s.readable && !(throttled && matches!(s.kind, Kind::Logger(_))))
            .map(|(&id, _)| id)
            .collect();
        let mut buf = std::mem::take(&mut self.buf);
        for id in ready {
            let mut reads = 0;
            let end = loop {
                if reads == READS_PER_TURN {
                    // Still readable: the next wait does not sleep, and the others go first.
                    break None;
                }
                let Some(stream) = self.streams.get_mut(&id) else { break None };
                match (&stream.sock).read(&mut buf) {
                    Ok(0) => break Some(Input::Eof { stream: id }),
                    Ok(n) => {
                        reads += 1;
                        // A short read emptied the socket: whatever arrives later is a new
                        // edge, so no read need meet `WouldBlock` (one syscall fewer per
                        // wake-up). Not once the peer's end was reported: EOF may already be
                        // waiting behind the data, with no edge to come.
                        if n < buf.len() && !stream.hung_up {
                            stream.readable = false;
                        }
                        let more = stream.readable;
                        self.input(now, Input::Received { stream: id, bytes: &buf[..n] });
                        if !more {
                            break None;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        stream.readable = false;
                        break None;
                    }
                    Err(_) => break Some(Input::StreamClosed { stream: id }),
                }
            };
            if let Some(input) = end {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.open = false;
                    stream.readable = false;
                }
                self.input(now, input);
            }
        }
        self.buf = buf;
    }

    /// Reads the self-pipe the root's signal handlers write to.
    fn read_interrupts(&mut self, now: Instant) {
        let mut buf = [0u8; 16];
        loop {
            let Some(sock) = &self.interrupts_sock else { return };
            match (&*sock).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for _ in 0..n {
                        self.interrupted(now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        if let Some(sock) = self.interrupts_sock.take() {
            self.unwatch(sock.as_fd());
        }
    }

    fn interrupted(&mut self, now: Instant) {
        self.interrupts += 1;
        if self.interrupts == 1 {
            tracing::info!("interrupted: shutting the tree down (again to force)");
            self.begin_shutdown(now);
        } else {
            tracing::warn!("interrupted again: forcing the shutdown");
            self.node.force_shutdown(now);
        }
    }

    fn parent_queued(&self) -> usize {
        match self.parent.and_then(|p| self.streams.get(&p)) {
            Some(Stream { kind: Kind::Framed(writer), .. }) => writer.queued(),
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
                    if let Some(Stream { sock, kind: Kind::Framed(writer), want_write, .. }) =
                        self.streams.get_mut(&stream)
                    {
                        // A writer that already broke has reported the stream broken.
                        if writer.send(sock, frame) {
                            self.events.push_back(Event::Broken(stream));
                        }
                        sync_write_interest(&self.epoll, stream, sock, writer, want_write);
                    }
                }
                Output::ShutdownWrite { stream } => {
                    if let Some(Stream { kind: Kind::Logger(capture), .. }) = self.streams.get_mut(&stream) {
                        if let Some(Err(e)) = capture.take().map(CaptureWrite::shut) {
                            tracing::warn!("cannot shut the output capture down: {e}");
                        }
                    }
                }
                Output::Close { stream } => self.close(stream),
                Output::Signal { pid, signal } => kill(pid, signal),
                Output::RunCall { job, request, .. } => {
                    let sent = self.jobs.as_ref().map(|jobs| jobs.send(Job { id: job, request }));
                    if matches!(sent, Some(Ok(()))) {
                        self.spin_for_command = true;
                    } else {
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
                        if self.calls.is_empty() {
                            // The caller may well call again at once.
                            self.spin_for_command = true;
                        }
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
    fn finish(mut self, how: ExitKind) -> Finished {
        let until = std::time::Instant::now() + FINAL_FLUSH;
        while !self.closing.is_empty() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.wait(Some(left));
        }
        Finished { how, shutdown_began: self.shutdown_began, reaped: std::mem::take(&mut self.reaped) }
    }

    fn take_stream_id(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }

    fn open_framed(&mut self, now: Instant, fd: OwnedFd, kind: StreamKind) -> Option<StreamId> {
        let stream = self.take_stream_id();
        let sock = UnixStream::from(fd);
        if let Err(e) = self.watch_stream(stream, &sock) {
            tracing::error!("cannot watch a stream: {e}");
            return None;
        }
        if kind == StreamKind::Parent {
            self.parent = Some(stream);
        }
        let framed = Kind::Framed(Writer::default());
        self.streams.insert(
            stream,
            Stream { sock, kind: framed, open: true, readable: true, hung_up: false, want_write: false },
        );
        self.input(now, Input::StreamOpened { stream, kind });
        Some(stream)
    }

    fn open_logger(&mut self, now: Instant, capture: CaptureWrite, read: OwnedFd) {
        let source = capture.source();
        let stream = self.take_stream_id();
        let sock = UnixStream::from(read);
        if let Err(e) = self.watch_stream(stream, &sock) {
            tracing::error!("cannot watch the output capture: {e}");
            return;
        }
        let logger = Kind::Logger(Some(capture));
        self.streams.insert(
            stream,
            Stream { sock, kind: logger, open: true, readable: true, hung_up: false, want_write: false },
        );
        self.input(now, Input::StreamOpened { stream, kind: StreamKind::Logger { source } });
    }

    fn watch_stream(&self, stream: StreamId, sock: &UnixStream) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        self.watch(sock.as_fd(), TAG_STREAM | u64::from(stream.0), false)
    }

    /// `Output::Close`: framed streams finish their queued writes first; readers stop now.
    fn close(&mut self, stream: StreamId) {
        if self.parent == Some(stream) {
            self.parent = None;
        }
        match self.streams.remove(&stream) {
            Some(Stream { sock, kind: Kind::Framed(writer), mut want_write, .. }) => {
                // Tell the node once the queued bytes are out: a child waits for this on its
                // parent stream before it exits (docs/shutdown.md "Closing and exit").
                let closing = Closing { sock, writer };
                if closing.writer.idle() {
                    self.closed(stream, closing);
                } else {
                    sync_write_interest(&self.epoll, stream, &closing.sock, &closing.writer, &mut want_write);
                    self.closing.insert(stream, closing);
                }
            }
            Some(Stream { sock, kind: Kind::Logger(capture), .. }) => {
                self.unwatch(sock.as_fd());
                drop(sock);
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
        let mut reaper = Reaper::new(started.child);
        if let Some(pidfd) = &reaper.pidfd {
            if let Err(e) = self.watch(pidfd.as_fd(), TAG_CHILD | u64::from(info.pid.0), false) {
                tracing::warn!(pid = %info.pid, "cannot watch the child's pidfd, polling it: {e}");
                reaper.pidfd = None;
            }
        }
        self.reapers.insert(info.pid.0, reaper);
        let kind = StreamKind::Child { id, pid: Some(info.pid), name: Some(info.name.clone()) };
        self.open_framed(now, started.stream, kind);
        let _ = reply.try_send(Ok(info));
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
