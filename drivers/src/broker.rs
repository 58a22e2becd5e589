//! A context's broker: the state that owns the core `Node` and is its host, exactly as
//! docs/embedding.md describes — carry out every output in order, sleep until IO or the node's
//! next deadline, feed what happened back in — shared by the threads that drive it.
//!
//! Any thread may drive the node, one at a time (it is behind one mutex), and two service
//! threads do: the IO thread and the calls thread (a child's main thread; in the root a thread
//! of its own). Both sleep in `epoll_wait` on the same epoll, which wakes one waiter per event,
//! the most recent first, so an idle calls thread is the one that reads a call, runs it and
//! writes the answer itself: no hand-off between threads on a call's path. While the calls
//! thread runs a user function the IO thread serves everything else, so a hung function blocks
//! further calls only, never IO or shutdown. A thread calling out (the client API) encodes its
//! call and writes it itself, and waits for the answer on a one-shot.
//!
//! Every socket, child pidfd, the interrupt socket and a "poke" eventfd are registered once,
//! edge-triggered; write interest is added to a socket only while frames are queued on it. A
//! thread letting go of the broker writes out the frames queued meanwhile (one vectored write
//! per stream) and pokes a sleeping service thread if something needs one that none would
//! otherwise notice: work left for it, a job for the calls thread, or a deadline earlier than
//! any sleeper's timeout. Frames may be left unwritten for a few microseconds so that a burst
//! leaves in one write (docs/driver.md "Pipelined calls leave together").

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, CallRequest, CallResult, JobId, RequestBody};
use arbor_core::ids::{ContextId, IdError};
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::{ExitKind, Phase};
use arbor_core::time::Instant;
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};

use crate::clock;
use crate::error::SpawnError;
use crate::logger::CaptureWrite;
use crate::logs::{self, LogRecord};
use crate::oneshot;
use crate::reap::{self, Reaper};
use crate::registry::Functions;
use crate::spawn::{self, ChildInfo, SpawnOptions};
use crate::spin;
use crate::streams::Writer;

/// The send buffer asked for on framed streams (see `open_framed`).
const FRAMED_SEND_BUFFER: usize = 2 * 1024 * 1024;
/// How much one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// Reads of one stream in one turn of the loop before the others get theirs.
const READS_PER_TURN: usize = 16;
/// Events or spawn requests taken in one turn of the loop before the node's outputs are
/// carried out.
const RECEIVES_PER_TURN: usize = 64;
/// Readiness events taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 64;
/// The longest single sleep (a deadline further off is slept towards in steps).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// How long frames may be left unwritten to batch them (pipelined calls, answers to calls
/// queued behind one another): the thread leaving them writes them itself at its next turn
/// after this long, and the calls thread arms a timer for it, so a quick answer never waits for
/// the next function to end.
const LONGEST_UNWRITTEN: Duration = Duration::from_micros(20);
/// How many pokes may go by before the eventfd's counter is read down (every write to it is a
/// new edge, and it would take 2^64 writes to fill, so it need not be read each time).
const DRAIN_POKES_EVERY: u32 = 1 << 20;

/// Bytes queued towards the parent above which the broker stops reading its own loggers, so a
/// runaway printer cannot grow memory without bound (docs/embedding.md "Backpressure").
const PARENT_HIGH_WATER: usize = 8 * 1024 * 1024;
/// After `Exit`, how long frames already queued (the last log lines, DEL_ROUTEs) may take to
/// reach the parent before the process ends regardless.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// epoll tokens: the poke eventfd, the interrupt socket, the unwritten-answers timer, a stream (tag | stream id), a child's
/// pidfd (tag | pid).
const TOKEN_POKE: u64 = 0;
const TOKEN_INTERRUPTS: u64 = 1;
const TOKEN_UNWRITTEN: u64 = 2;
const TAG_STREAM: u64 = 1 << 32;
const TAG_CHILD: u64 = 2 << 32;
const TAG_MASK: u64 = !0 << 32;

/// A spawn asked for by a thread that is not a service thread (answered on this channel).
type SpawnReply = async_channel::Sender<Result<ChildInfo, SpawnError>>;

/// Something that happened on the context's sockets or children.
#[derive(Debug)]
pub(crate) enum Event {
    Broken(StreamId),
    /// A closed framed stream finished writing out what was queued on it.
    Closed(StreamId),
    Exited(Pid, ExitStatus),
}

/// How log records reaching the root are handled.
pub(crate) type LogHandler = Box<dyn Fn(&LogRecord) + Send>;

/// Everything a context starts from; built on the starting thread.
pub(crate) struct Setup {
    pub config: NodeConfig,
    pub parent: Option<OwnedFd>,
    pub captures: Vec<(CaptureWrite, OwnedFd)>,
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

/// What the IO thread reports when the node exits.
#[derive(Debug)]
pub(crate) struct Finished {
    pub how: ExitKind,
    pub shutdown_began: Option<std::time::Instant>,
    pub reaped: Vec<Reaped>,
}

/// The two threads that serve a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Never runs user code; sees the context out after `Exit`.
    Io,
    /// Runs calls made to this context, one at a time, and serves IO while it has none.
    Calls,
}

impl Role {
    fn index(self) -> usize {
        match self {
            Role::Io => 0,
            Role::Calls => 1,
        }
    }
}

/// Where a service thread is, as the threads letting go of the broker see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Worker {
    /// Not serving: not started yet, or gone.
    Off,
    /// Between a wake-up and its next sleep: it looks at everything before it sleeps again.
    Awake,
    /// In `epoll_wait`, until this deadline at the latest (`None`: no deadline).
    Asleep(Option<std::time::Instant>),
    /// The calls thread, running a user function.
    Running,
}

enum Kind {
    Framed(Writer),
    Logger(Option<CaptureWrite>),
}

/// A socket the broker reads (and, framed, writes) itself: read until it would block before
/// the thread driving it sleeps again, with no task or channel between the read and the node.
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

/// One call handed out by the core with `Output::RunCall`, for the calls thread.
struct Job {
    id: JobId,
    request: CallRequest,
}

/// Something to log, kept until the broker is let go of: in a child, `tracing` writes to fd 2,
/// a capture socket only this broker drains, so a thread logging while it holds the broker could
/// block on a full socket (or on stderr's lock, held by a user thread blocked on it) with no one
/// left to drain it.
enum Note {
    Diagnostic(Diagnostic),
    Warn(String),
    Error(String),
    Info(String),
    Debug(String),
}

impl Note {
    fn emit(self) {
        match self {
            Note::Diagnostic(d) => diagnostic(&d),
            Note::Warn(m) => tracing::warn!("{m}"),
            Note::Error(m) => tracing::error!("{m}"),
            Note::Info(m) => tracing::info!("{m}"),
            Note::Debug(m) => tracing::debug!("{m}"),
        }
    }
}

/// A call handed to the thread holding the broker.
struct HandedCall {
    target: ContextId,
    body: RequestBody,
    reply: oneshot::Sender<CallResult>,
}

/// A context: its broker, and what threads need to reach it without holding it.
pub(crate) struct Shared {
    broker: Mutex<Broker>,
    /// Calls made while another thread held the broker, for that thread to send before it lets
    /// go (or for the caller, if it takes the broker after all): a caller never queues on the
    /// mutex behind a thread reading answers, and calls made meanwhile leave together, in one
    /// write.
    handed: Mutex<VecDeque<HandedCall>>,
    /// `handed` may hold something.
    any_handed: AtomicBool,
    /// A call was sent without being written out (see [`Shared::call`]) and no flush has run
    /// since: a caller about to wait must flush first.
    unflushed: AtomicBool,
    /// Opened once the calls thread has stopped serving and let go of the context.
    calls_left: Arc<Gate>,
    /// Opened once the IO thread has seen the context out (every child reaped). The root's calls
    /// thread, which may have forked children, outlives them: a child's PR_SET_PDEATHSIG fires
    /// when the *thread* that forked it ends.
    io_done: Arc<Gate>,
    epoll: Arc<OwnedFd>,
    poke: Arc<OwnedFd>,
    /// This context's name, for errors made without the broker.
    name: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("name", &self.name).finish_non_exhaustive()
    }
}

struct Broker {
    node: Node,
    epoll: Arc<OwnedFd>,
    poke: Arc<OwnedFd>,
    /// A poke was written and no service thread has taken it yet.
    poked: bool,
    /// Pokes taken since the eventfd's counter was last read down.
    pokes_unread: u32,
    workers: [Worker; 2],
    interrupts_sock: Option<UnixStream>,
    interrupts_ready: bool,
    events: VecDeque<Event>,
    streams: BTreeMap<StreamId, Stream>,
    /// Framed streams with frames queued since the broker was last let go of.
    dirty: Vec<StreamId>,
    /// Since when frames have been left unwritten for a service thread to write.
    unwritten_since: Option<std::time::Instant>,
    /// A timer that wakes a service thread [`LONGEST_UNWRITTEN`] after the calls thread left
    /// answers unwritten (`None` if it could not be made: the calls thread then pokes).
    unwritten_timer: Option<OwnedFd>,
    /// The timer is armed and has not fired yet: frames left unwritten are covered.
    unwritten_timer_armed: bool,
    closing: BTreeMap<StreamId, Closing>,
    next_stream: u32,
    parent: Option<StreamId>,
    calls: BTreeMap<CallId, oneshot::Sender<CallResult>>,
    /// Answers to hand to their callers once the broker is let go of (a caller woken while the
    /// broker is still held would only find it held when it calls again).
    answers: Vec<(oneshot::Sender<CallResult>, CallResult)>,
    /// What to log once the broker is let go of.
    notes: Vec<Note>,
    /// Calls for the calls thread (the core hands out one at a time).
    jobs: VecDeque<Job>,
    /// `Output::CallsClosed` has not come yet.
    calls_open: bool,
    /// Spawns asked for from other threads, for a service thread to carry out (a child dies
    /// with the thread that forked it, so only the long-lived service threads fork).
    spawn_requests: VecDeque<(SpawnOptions, SpawnReply)>,
    /// Spawns waiting for a block of ids from the root.
    spawns_waiting: VecDeque<(SpawnOptions, SpawnReply)>,
    /// `Output::IdsAvailable` came: retry the waiting spawns.
    ids_arrived: bool,
    children: BTreeMap<Pid, ChildInfo>,
    reapers: BTreeMap<u32, Reaper>,
    reaped: Vec<Reaped>,
    on_log: Option<LogHandler>,
    interrupts: u32,
    shutdown_began: Option<std::time::Instant>,
    started: std::time::Instant,
    /// The node said `Exit`.
    exited: Option<ExitKind>,
    buf: Vec<u8>,
}

/// The error for a call to or from a context that has exited.
pub(crate) fn gone(context: &str) -> CallError {
    CallError::new(CallErrorKind::ShuttingDown, "the context has exited", context)
}

impl Shared {
    /// Sets a context up: its node, epoll and streams. Nothing runs until service threads
    /// call [`Shared::serve`].
    pub fn new(setup: Setup) -> io::Result<Arc<Shared>> {
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let poke = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        let name = setup.config.name.clone();
        let mut broker = Broker {
            node: Node::new(setup.config),
            epoll: epoll.clone(),
            poke: poke.clone(),
            poked: false,
            pokes_unread: 0,
            workers: [Worker::Off; 2],
            interrupts_sock: None,
            interrupts_ready: false,
            events: VecDeque::new(),
            streams: BTreeMap::new(),
            dirty: Vec::new(),
            unwritten_since: None,
            unwritten_timer: None,
            unwritten_timer_armed: false,
            closing: BTreeMap::new(),
            next_stream: 0,
            parent: None,
            calls: BTreeMap::new(),
            answers: Vec::new(),
            notes: Vec::new(),
            jobs: VecDeque::new(),
            calls_open: true,
            spawn_requests: VecDeque::new(),
            spawns_waiting: VecDeque::new(),
            ids_arrived: false,
            children: BTreeMap::new(),
            reapers: BTreeMap::new(),
            reaped: Vec::new(),
            on_log: setup.on_log,
            interrupts: 0,
            shutdown_began: None,
            started: std::time::Instant::now(),
            exited: None,
            buf: vec![0u8; READ_CHUNK],
        };
        broker.watch(poke.as_fd(), TOKEN_POKE, false)?;
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK);
        match timer
            .map_err(io::Error::from)
            .and_then(|t| broker.watch(t.as_fd(), TOKEN_UNWRITTEN, false).map(|()| t))
        {
            Ok(timer) => broker.unwritten_timer = Some(timer),
            Err(e) => tracing::debug!("no timer for unwritten answers (poking instead): {e}"),
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
        Ok(Arc::new(Shared {
            broker: Mutex::new(broker),
            handed: Mutex::new(VecDeque::new()),
            any_handed: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            calls_left: Arc::default(),
            io_done: Arc::default(),
            epoll,
            poke,
            name,
        }))
    }

    /// This context's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Broker> {
        self.broker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets go of the broker: writes out the frames queued meanwhile and, if a sleeping
    /// service thread must look, pokes one — after unlocking, so the thread woken does not
    /// find the broker still held.
    fn unlock<'a>(&'a self, broker: MutexGuard<'a, Broker>) {
        self.unlock_flushing(broker, true);
    }

    /// [`Shared::unlock`]; without `flush`, frames queued meanwhile are left for a service
    /// thread (poked if asleep) to write — unless frames have waited for that longer than
    /// [`LONGEST_UNWRITTEN`] already (the thread poked may not have had a CPU yet).
    fn unlock_flushing<'a>(&'a self, mut broker: MutexGuard<'a, Broker>, mut flush: bool) {
        loop {
            self.send_handed(&mut broker);
            let now = std::time::Instant::now;
            if !flush && broker.unwritten_since.is_some_and(|t| now().duration_since(t) > LONGEST_UNWRITTEN) {
                flush = true;
            }
            if std::mem::replace(&mut flush, true) {
                self.unflushed.store(false, Ordering::SeqCst);
                broker.flush_dirty();
            } else {
                self.unflushed.store(true, Ordering::SeqCst);
                if !broker.dirty.is_empty() {
                    broker.unwritten_since.get_or_insert_with(now);
                }
            }
            let poke = broker.wants_poke();
            if poke {
                broker.poked = true;
            }
            let answers =
                if broker.answers.is_empty() { Vec::new() } else { std::mem::take(&mut broker.answers) };
            let notes = if broker.notes.is_empty() { Vec::new() } else { std::mem::take(&mut broker.notes) };
            drop(broker);
            // Pairs with the fence in `call`: a caller that handed a call over and found the
            // broker held, and this thread, cannot both miss each other.
            std::sync::atomic::fence(Ordering::SeqCst);
            for note in notes {
                note.emit();
            }
            if poke {
                // Only EAGAIN (the counter is full, so a waiter wakes anyway) can fail.
                let _ = rustix::io::write(&*self.poke, &1u64.to_ne_bytes());
            }
            for (reply, result) in answers {
                reply.send(result);
            }
            // A call handed over after the last look: send it, unless another thread holds the
            // broker now (it looks before it lets go).
            if !self.any_handed.load(Ordering::SeqCst) {
                return;
            }
            broker = match self.broker.try_lock() {
                Ok(broker) => broker,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
        }
    }

    /// Sends the calls other threads handed over, in the order they were handed.
    fn send_handed(&self, broker: &mut Broker) {
        if !self.any_handed.swap(false, Ordering::SeqCst) {
            return;
        }
        let handed = std::mem::take(&mut *self.handed.lock().unwrap_or_else(PoisonError::into_inner));
        let now = clock::now();
        for HandedCall { target, body, reply } in handed {
            broker.send_call(now, target, body, reply, &self.name);
        }
        broker.carry_out();
    }

    /// Runs `f` on the broker from a thread that is not serving it, then carries out what it
    /// caused.
    fn with<R>(&self, f: impl FnOnce(&mut Broker, Instant) -> R) -> R {
        let mut broker = self.lock();
        // Calls handed over earlier (perhaps by this thread) go first.
        self.send_handed(&mut broker);
        let result = f(&mut broker, clock::now());
        broker.carry_out();
        self.unlock(broker);
        result
    }

    /// Sends a call; its answer arrives on the returned one-shot. If another thread holds the
    /// broker, the call is handed to it rather than waited for.
    ///
    /// Without `flush` the call's frame may be left for a service thread to write (poked if
    /// asleep) together with others sent meanwhile — the pipelined case; whoever waits for an
    /// answer calls [`Shared::flush`] first, so waiting never depends on that.
    pub fn call(&self, target: ContextId, body: RequestBody, flush: bool) -> oneshot::Receiver<CallResult> {
        let (reply, answer) = oneshot::channel();
        let broker = match self.broker.try_lock() {
            Ok(broker) => Some(broker),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                self.handed.lock().unwrap_or_else(PoisonError::into_inner).push_back(HandedCall {
                    target,
                    body,
                    reply,
                });
                self.any_handed.store(true, Ordering::SeqCst);
                // Pairs with the fence after the holder lets go (`unlock_flushing`).
                std::sync::atomic::fence(Ordering::SeqCst);
                // The holder may have let go before it could see the flag: look again.
                match self.broker.try_lock() {
                    Ok(broker) => self.unlock(broker),
                    Err(TryLockError::Poisoned(p)) => self.unlock(p.into_inner()),
                    Err(TryLockError::WouldBlock) => {}
                }
                return answer;
            }
        };
        if let Some(mut broker) = broker {
            // Calls handed over earlier (by this thread too) go first.
            self.send_handed(&mut broker);
            broker.send_call(clock::now(), target, body, reply, &self.name);
            broker.carry_out();
            self.unlock_flushing(broker, flush);
        }
        answer
    }

    /// Writes out whatever frames are queued, if a call was sent without flushing since the
    /// last flush.
    pub fn flush(&self) {
        if self.unflushed.load(Ordering::SeqCst) || self.any_handed.load(Ordering::SeqCst) {
            let broker = self.lock();
            self.unlock(broker);
        }
    }

    /// Sends a call that wants no answer.
    pub fn call_no_reply(&self, target: ContextId, body: RequestBody) -> Result<(), CallError> {
        self.with(|b, now| {
            if b.exited.is_some() {
                return Err(gone(&self.name));
            }
            b.node.call_no_reply_body(now, target, body)
        })
    }

    /// Asks a service thread to spawn a child; the answer arrives on `reply`.
    pub fn spawn(&self, options: SpawnOptions, reply: SpawnReply) {
        self.with(|b, _| {
            if b.exited.is_some() {
                let _ = reply.try_send(Err(SpawnError::ShuttingDown));
            } else {
                b.spawn_requests.push_back((options, reply));
            }
        })
    }

    /// Begins a graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        self.with(|b, now| {
            if b.exited.is_none() {
                b.begin_shutdown(now);
            }
        })
    }

    /// Skips the grace period.
    pub fn force_shutdown(&self) {
        self.with(|b, now| {
            if b.exited.is_none() {
                b.shutdown_began.get_or_insert_with(std::time::Instant::now);
                b.node.force_shutdown(now);
            }
        })
    }

    /// Serves the context as the IO thread until the node exits, then lets the last frames
    /// reach the parent (bounded) and reports. With `wait_for_calls` (the root, whose process
    /// lives on) it then waits briefly for the calls thread to let go of the context; a child
    /// ends its process at once.
    pub fn serve_io(&self, wait_for_calls: bool) -> Finished {
        // Opened however this ends, a panic included: the root's calls thread waits for it.
        let _done = OpenOnDrop(&self.io_done);
        let broker = self.serve(Role::Io, None);
        self.finish(broker, Role::Io, wait_for_calls)
    }

    /// A child context's main thread: serves as the calls thread until calls are closed (then
    /// it leaves the rest to the IO thread and parks) or the node exits (then it sees the
    /// context out and ends the process itself, as the IO thread would: whichever gets there
    /// first ends it).
    pub fn serve_calls_then_exit(&self, functions: &Functions) -> ! {
        let mut broker = self.serve(Role::Calls, Some(functions));
        if broker.exited.is_some() {
            self.finish(broker, Role::Calls, false);
            crate::exit::sigterm_self()
        }
        // Calls are closed: the IO thread ends the process when the context is done.
        broker.workers[Role::Calls.index()] = Worker::Off;
        self.unlock(broker);
        loop {
            std::thread::park();
        }
    }

    /// Serves the context as its calls thread — running every call made to it, and IO while it
    /// has none — until calls are closed (shutdown began) or the node exits.
    ///
    /// The thread then lives on until the IO thread has seen the context out: children it forked
    /// would otherwise get their parent-death signal the moment it ends.
    pub fn serve_calls(self: Arc<Self>, functions: &Functions) {
        let mut broker = self.serve(Role::Calls, Some(functions));
        broker.workers[Role::Calls.index()] = Worker::Off;
        self.unlock(broker);
        let (left, io_done) = (self.calls_left.clone(), self.io_done.clone());
        drop(self);
        left.open();
        io_done.wait(None);
    }

    /// The service loop: take what is ready, feed it to the node, carry out its outputs, run a
    /// call (the calls thread), sleep. Returns, holding the broker, once the node has exited.
    fn serve(&self, role: Role, functions: Option<&Functions>) -> MutexGuard<'_, Broker> {
        let me = role.index();
        let mut ready: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
        let mut broker = self.lock();
        broker.workers[me] = Worker::Awake;
        loop {
            for event in &ready {
                broker.ready(event.data.u64(), event.flags);
            }
            ready.clear();
            broker.turn(clock::now());
            broker.carry_out();
            if broker.exited.is_some() {
                return broker;
            }
            if functions.is_some() && !broker.calls_open && broker.jobs.is_empty() {
                // No call will come again: the IO thread sees the rest of the shutdown through
                // alone (two threads taking turns at the broker would only pass it back and
                // forth as each of many children's streams and exits wakes one of them).
                return broker;
            }
            if let Some(functions) = functions {
                if let Some(job) = broker.jobs.pop_front() {
                    broker.workers[me] = Worker::Running;
                    // Answers to earlier calls are written now, unless more calls are queued
                    // behind this one and the IO thread can write them meanwhile: then a burst
                    // of calls is answered in a few writes rather than one each, and an answer
                    // waits at most LONGEST_UNWRITTEN (a timer then wakes the IO thread), never
                    // for the next function.
                    let io = broker.workers[Role::Io.index()];
                    let more = !broker.jobs.is_empty() || broker.node.calls_waiting() > 0;
                    let flush = !more || !matches!(io, Worker::Awake | Worker::Asleep(_));
                    if !flush {
                        broker.arm_unwritten_timer();
                    }
                    self.unlock_flushing(broker, flush);
                    let result = functions.run(&job.request, &self.name);
                    broker = self.lock();
                    broker.workers[me] = Worker::Awake;
                    if broker.exited.is_none() {
                        broker.input(clock::now(), Input::CallFinished { job: job.id, result });
                    }
                    continue;
                }
            }
            // Only a running context polls: one shutting down wants no latency from it, and
            // many children polling at once would slow the tree's exit.
            // Nor right after queueing a call for the calls thread: polling, this thread would
            // likely collect the very poke meant to wake that one.
            let poll = broker.node.phase() == Phase::Running && broker.jobs.is_empty();
            let timeout = if broker.has_work() {
                // Back at once (after a look at the epoll): still awake, nobody need be poked.
                Some(Duration::ZERO)
            } else {
                broker.fall_asleep(role)
            };
            self.unlock(broker);
            if poll && timeout != Some(Duration::ZERO) {
                // Poll the epoll briefly before sleeping in it (spin.rs): the next call or
                // answer then finds this thread awake on its CPU.
                spin::until(|| {
                    wait(&self.epoll, &mut ready, Some(Duration::ZERO));
                    !ready.is_empty()
                });
            }
            if ready.is_empty() {
                wait(&self.epoll, &mut ready, timeout);
            }
            broker = self.lock();
            broker.workers[me] = Worker::Awake;
        }
    }

    /// After `Exit`: let the last frames reach the parent (bounded), then report.
    fn finish<'a>(
        &'a self,
        mut broker: MutexGuard<'a, Broker>,
        role: Role,
        wait_for_calls: bool,
    ) -> Finished {
        let me = role.index();
        let until = std::time::Instant::now() + FINAL_FLUSH;
        let mut ready: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            for event in &ready {
                broker.ready(event.data.u64(), event.flags);
            }
            ready.clear();
            let left = until.saturating_duration_since(std::time::Instant::now());
            if broker.closing.is_empty() || left.is_zero() {
                break;
            }
            // Not `Asleep`: a thread seeing the context out needs no poke (its own timeout and
            // the streams' writability wake it), and counted as a sleeper it would be poked for
            // the exit it is handling — by itself, again and again.
            broker.workers[me] = Worker::Off;
            self.unlock(broker);
            wait(&self.epoll, &mut ready, Some(left));
            broker = self.lock();
        }
        broker.workers[me] = Worker::Off;
        // Wait (briefly) for the calls thread to stop serving and let go of the context (it
        // opens the gate after it dropped its handle: seen `Off`, it may still hold one), so that
        // once the root's shutdown returns no thread of the context is left holding its sockets
        // and epoll. One running a user function that hangs keeps them until it returns.
        let calls = Role::Calls.index();
        if wait_for_calls && broker.workers[calls] != Worker::Running {
            broker.poked = false;
            self.unlock(broker);
            self.calls_left.wait(Some(FINAL_FLUSH));
            broker = self.lock();
        }
        let finished = Finished {
            how: broker.exited.unwrap_or(ExitKind::Clean),
            shutdown_began: broker.shutdown_began,
            reaped: std::mem::take(&mut broker.reaped),
        };
        self.unlock(broker);
        finished
    }
}

/// Opens a gate when dropped.
struct OpenOnDrop<'a>(&'a Gate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A one-way gate: opened once, waited for with a timeout.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.opened.notify_all();
    }

    /// Waits until the gate is open, or `at_most` (`None`: for good).
    fn wait(&self, at_most: Option<Duration>) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match at_most {
            Some(at_most) => drop(self.opened.wait_timeout_while(open, at_most, |open| !*open)),
            None => drop(self.opened.wait_while(open, |open| !*open)),
        }
    }
}

/// Sleeps in `epoll_wait` (not at all with a zero timeout) and collects what became ready.
fn wait(epoll: &OwnedFd, ready: &mut Vec<epoll::Event>, timeout: Option<Duration>) {
    let timeout = timeout.map(timespec);
    match epoll::wait(epoll, rustix::buffer::spare_capacity(ready), timeout.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => {}
        Err(e) => {
            tracing::error!("epoll_wait failed: {e}");
            // Never spin on a persistent failure.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
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
fn sync_write_interest(
    epoll: &OwnedFd,
    id: StreamId,
    sock: &UnixStream,
    writer: &Writer,
    want: &mut bool,
    notes: &mut Vec<Note>,
) {
    let need = !writer.idle();
    if need != *want {
        let data = epoll::EventData::new_u64(TAG_STREAM | u64::from(id.0));
        match epoll::modify(epoll, sock, data, interest(need)) {
            Ok(()) => *want = need,
            Err(e) => notes.push(Note::Error(format!("cannot change what epoll watches a stream for: {e}"))),
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    let d = d.min(LONGEST_SLEEP);
    Timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ }
}

impl Broker {
    fn watch(&self, fd: std::os::fd::BorrowedFd<'_>, token: u64, write: bool) -> io::Result<()> {
        Ok(epoll::add(&*self.epoll, fd, epoll::EventData::new_u64(token), interest(write))?)
    }

    fn unwatch(&self, fd: std::os::fd::BorrowedFd<'_>) {
        let _ = epoll::delete(&*self.epoll, fd);
    }

    /// Whether a sleeping service thread must be woken for something no thread would
    /// otherwise look at: asked by each thread as it lets go of the broker.
    fn wants_poke(&self) -> bool {
        if self.poked || self.workers.contains(&Worker::Awake) {
            // One is coming, or awake already: it looks at everything before it sleeps.
            return false;
        }
        let asleep = |w: &Worker| matches!(w, Worker::Asleep(_));
        if !self.jobs.is_empty() && asleep(&self.workers[Role::Calls.index()]) {
            return true;
        }
        if !self.workers.iter().any(asleep) {
            return false;
        }
        if self.has_work()
            || (!self.dirty.is_empty() && !self.unwritten_timer_armed)
            || !self.spawn_requests.is_empty()
            || self.ids_arrived
            || self.exited.is_some()
        {
            return true;
        }
        let Some(deadline) = self.node.poll_timeout().map(clock::to_std) else { return false };
        let earliest = self
            .workers
            .iter()
            .filter_map(|w| match w {
                Worker::Asleep(until) => Some(*until),
                _ => None,
            })
            .fold(None, |earliest: Option<Option<std::time::Instant>>, until| {
                Some(match (earliest.flatten(), until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (Some(a), None) | (None, Some(a)) => Some(a),
                    (None, None) => None,
                })
            })
            .flatten();
        earliest.is_none_or(|until| deadline < until)
    }

    /// Arms the unwritten-answers timer if frames are queued and it is not armed: a service
    /// thread then writes them [`LONGEST_UNWRITTEN`] from now unless the calls thread has by then
    /// — one timer per batch of answers rather than a poke, a wake-up and the broker's mutex
    /// changing hands every few answers.
    fn arm_unwritten_timer(&mut self) {
        if self.dirty.is_empty() || self.unwritten_timer_armed {
            return;
        }
        let Some(timer) = &self.unwritten_timer else { return };
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let at = Itimerspec { it_interval: zero, it_value: timespec(LONGEST_UNWRITTEN) };
        // Unarmed, the frames are covered by a poke instead (wants_poke).
        self.unwritten_timer_armed = timerfd_settime(timer, TimerfdTimerFlags::empty(), &at).is_ok();
    }

    /// Writes out every framed stream that had frames queued since the last time.
    fn flush_dirty(&mut self) {
        self.unwritten_since = None;
        for id in std::mem::take(&mut self.dirty) {
            if let Some(Stream { sock, kind: Kind::Framed(writer), want_write, .. }) =
                self.streams.get_mut(&id)
            {
                if writer.flush(sock) {
                    self.events.push_back(Event::Broken(id));
                }
                sync_write_interest(&self.epoll, id, sock, writer, want_write, &mut self.notes);
            }
        }
    }

    fn throttled(&self) -> bool {
        self.parent_queued() > PARENT_HIGH_WATER
    }

    /// Something can be done without waiting.
    fn has_work(&self) -> bool {
        if !self.events.is_empty()
            || self.interrupts_ready
            || !self.spawn_requests.is_empty()
            || self.ids_arrived
        {
            return true;
        }
        let throttled = self.throttled();
        self.streams
            .values()
            .any(|s| s.open && s.readable && !(throttled && matches!(s.kind, Kind::Logger(_))))
    }

    /// When to wake at the latest: the node's deadline (and, for children without a pidfd, the
    /// time to poll them). Kept as an instant, not a duration, so that the deadline a sleeper
    /// records is the node's own: a thread letting go of the broker compares the two, and one
    /// recomputed from a duration would land a little after the deadline and poke the sleeper
    /// for nothing (the sleeper being, at worst, itself — over and over until the deadline).
    fn sleep_until(&self) -> Option<std::time::Instant> {
        let deadline = self.node.poll_timeout().map(clock::to_std);
        if self.reapers.values().any(|r| r.pidfd.is_none()) {
            let poll = std::time::Instant::now() + reap::POLL_WITHOUT_PIDFD;
            Some(deadline.map_or(poll, |d| d.min(poll)))
        } else {
            deadline
        }
    }

    /// Records `role` as asleep until the node's deadline (see [`Broker::sleep_until`]) and
    /// returns how long to wait in `epoll_wait`.
    fn fall_asleep(&mut self, role: Role) -> Option<Duration> {
        let now = std::time::Instant::now();
        let until = self.sleep_until().map(|u| u.min(now + LONGEST_SLEEP));
        self.workers[role.index()] = Worker::Asleep(until);
        until.map(|u| u.saturating_duration_since(now))
    }

    /// Notes what epoll reported ready; queued writes are carried on at once.
    fn ready(&mut self, token: u64, flags: epoll::EventFlags) {
        match (token & TAG_MASK, token) {
            (_, TOKEN_POKE) => {
                self.poked = false;
                self.pokes_unread += 1;
                if self.pokes_unread >= DRAIN_POKES_EVERY {
                    let mut buf = [0u8; 8];
                    // Nothing to read (EAGAIN) is fine.
                    let _ = rustix::io::read(&*self.poke, &mut buf);
                    self.pokes_unread = 0;
                }
            }
            (_, TOKEN_INTERRUPTS) => self.interrupts_ready = true,
            (_, TOKEN_UNWRITTEN) => {
                self.unwritten_timer_armed = false;
                if let Some(timer) = &self.unwritten_timer {
                    let mut buf = [0u8; 8];
                    // Reads the expiration count down; nothing to read (EAGAIN) is fine.
                    let _ = rustix::io::read(timer, &mut buf);
                }
            }
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
                            sync_write_interest(&self.epoll, id, sock, writer, want_write, &mut self.notes);
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

    /// One turn: feeds the node everything that is ready (reads, events, spawn requests, the
    /// deadline). Only service threads take turns (they may fork).
    fn turn(&mut self, now: Instant) {
        self.read_streams(now);
        for _ in 0..RECEIVES_PER_TURN {
            match self.events.pop_front() {
                Some(event) => self.event(now, event),
                None => break,
            }
        }
        if std::mem::take(&mut self.interrupts_ready) {
            self.read_interrupts(now);
        }
        if std::mem::take(&mut self.ids_arrived) {
            for (options, reply) in std::mem::take(&mut self.spawns_waiting) {
                self.spawn(now, options, reply);
            }
        }
        for _ in 0..RECEIVES_PER_TURN {
            match self.spawn_requests.pop_front() {
                Some((options, reply)) => self.spawn(now, options, reply),
                None => break,
            }
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
            self.notes.push(Note::Info("interrupted: shutting the tree down (again to force)".into()));
            self.begin_shutdown(now);
        } else {
            self.notes.push(Note::Warn("interrupted again: forcing the shutdown".into()));
            self.node.force_shutdown(now);
        }
    }

    /// Sends one call; its answer, or why it could not be sent, goes to `reply`.
    fn send_call(
        &mut self,
        now: Instant,
        target: ContextId,
        body: RequestBody,
        reply: oneshot::Sender<CallResult>,
        context: &str,
    ) {
        // Refusals are answered once the broker is let go of, like every answer.
        if self.exited.is_some() {
            self.answers.push((reply, Err(gone(context))));
            return;
        }
        match self.node.call_body(now, target, body) {
            Ok(call) => {
                self.calls.insert(call, reply);
            }
            Err(e) => self.answers.push((reply, Err(e))),
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
            self.notes.push(Note::Error(format!("arbor driver bug: {e}")));
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown_began.get_or_insert_with(std::time::Instant::now);
        self.node.shutdown(now);
    }

    fn event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Broken(stream) => self.input(now, Input::StreamClosed { stream }),
            Event::Closed(stream) => self.input(now, Input::Closed { stream }),
            Event::Exited(pid, status) => {
                if let Some(info) = self.children.remove(&pid) {
                    let since = self.shutdown_began.unwrap_or(self.started);
                    let after = since.elapsed();
                    self.notes.push(Note::Debug(format!(
                        "child {pid} (context {}) reaped: {status:?} after {after:?}",
                        info.id.0
                    )));
                    self.reaped.push(Reaped { id: info.id, name: info.name, pid, status, after });
                }
                self.input(now, Input::ChildExited { pid, status });
            }
        }
    }

    /// Carries out every output, in order, until the node has none left or says `Exit`.
    fn carry_out(&mut self) {
        while self.exited.is_none() {
            let Some(output) = self.node.poll_output() else { return };
            match output {
                Output::Transmit { stream, frame } => {
                    if let Some(Stream { kind: Kind::Framed(writer), .. }) = self.streams.get_mut(&stream) {
                        // Written when the broker is let go of; a writer that already broke
                        // has reported the stream broken and drops it.
                        if writer.idle() {
                            self.dirty.push(stream);
                        }
                        writer.push(frame);
                    }
                }
                Output::ShutdownWrite { stream } => {
                    if let Some(Stream { kind: Kind::Logger(capture), .. }) = self.streams.get_mut(&stream) {
                        if let Some(Err(e)) = capture.take().map(CaptureWrite::shut) {
                            self.notes.push(Note::Warn(format!("cannot shut the output capture down: {e}")));
                        }
                    }
                }
                Output::Close { stream } => self.close(stream),
                Output::Signal { pid, signal } => self.notes.extend(kill(pid, signal)),
                Output::RunCall { job, request, .. } => {
                    if self.calls_open {
                        self.jobs.push_back(Job { id: job, request });
                    } else {
                        let e = CallError::new(
                            CallErrorKind::ShuttingDown,
                            "calls to this context are closed",
                            self.node.config().name.clone(),
                        );
                        let now = clock::now();
                        self.input(now, Input::CallFinished { job, result: Err(e) });
                    }
                }
                Output::CallsClosed => self.calls_open = false,
                Output::CallReturned { call, result } => {
                    if let Some(reply) = self.calls.remove(&call) {
                        self.answers.push((reply, result));
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
                Output::IdsAvailable => self.ids_arrived = true,
                Output::Diagnostic(d) => self.notes.push(Note::Diagnostic(d)),
                Output::Exit { how } => self.exited = Some(how),
            }
        }
    }

    fn take_stream_id(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }

    fn open_framed(&mut self, now: Instant, fd: OwnedFd, kind: StreamKind) -> Option<StreamId> {
        let stream = self.take_stream_id();
        let sock = UnixStream::from(fd);
        // A larger send buffer than the default (about 208 KiB) halves the write-and-wake
        // cycles a large message takes: measured, a 16 MiB argument went from about 2.2 to 2.6
        // GB/s. The kernel caps it at net.core.wmem_max and charges memory only for bytes
        // actually queued, so an idle stream costs nothing; failure only leaves the default.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&sock, FRAMED_SEND_BUFFER);
        if let Err(e) = self.watch_stream(stream, &sock) {
            self.notes.push(Note::Error(format!("cannot watch a stream: {e}")));
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
            self.notes.push(Note::Error(format!("cannot watch the output capture: {e}")));
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
                let mut closing = Closing { sock, writer };
                if closing.writer.flush(&closing.sock) {
                    self.events.push_back(Event::Broken(stream));
                }
                if closing.writer.idle() {
                    self.closed(stream, closing);
                } else {
                    sync_write_interest(
                        &self.epoll,
                        stream,
                        &closing.sock,
                        &closing.writer,
                        &mut want_write,
                        &mut self.notes,
                    );
                    self.closing.insert(stream, closing);
                }
            }
            Some(Stream { sock, kind: Kind::Logger(capture), .. }) => {
                self.unwatch(sock.as_fd());
                drop(sock);
                // Closed without a SHUT_WR first (a forced disconnect): still move fds 1 and 2
                // off the socket, so a late print cannot fail.
                if let Some(Err(e)) = capture.map(CaptureWrite::shut) {
                    self.notes.push(Note::Warn(format!("cannot shut the output capture down: {e}")));
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
                self.notes.push(Note::Warn(format!(
                    "cannot watch the pidfd of child {}, polling it: {e}",
                    info.pid
                )));
                reaper.pidfd = None;
            }
        }
        self.reapers.insert(info.pid.0, reaper);
        let kind = StreamKind::Child { id, pid: Some(info.pid), name: Some(info.name.clone()) };
        self.open_framed(now, started.stream, kind);
        let _ = reply.try_send(Ok(info));
    }
}

fn kill(pid: Pid, signal: Signal) -> Option<Note> {
    let sig = match signal {
        Signal::Term => rustix::process::Signal::TERM,
        Signal::Kill => rustix::process::Signal::KILL,
    };
    let target = i32::try_from(pid.0).ok().and_then(rustix::process::Pid::from_raw)?;
    // The child is not reaped before the core hears of it, so the pid is still ours to signal.
    rustix::process::kill_process(target, sig)
        .err()
        .map(|e| Note::Warn(format!("cannot signal child {pid}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with one child stream (a socketpair, no process) that has begun its shutdown: the
    /// node now has a deadline (the grace period) and waits for the child.
    fn shutting_down_root() -> (Arc<Shared>, UnixStream) {
        let setup = Setup {
            config: NodeConfig::root(),
            parent: None,
            captures: Vec::new(),
            interrupts: None,
            on_log: None,
        };
        let shared = Shared::new(setup).expect("a context");
        let (ours, theirs) = UnixStream::pair().expect("a socketpair");
        {
            let mut b = shared.lock();
            let now = clock::now();
            let kind = StreamKind::Child { id: ContextId(1), pid: None, name: None };
            b.open_framed(now, OwnedFd::from(ours), kind);
            b.begin_shutdown(now);
            b.carry_out();
            b.flush_dirty();
            // Read what is ready (nothing: the child has not written), as a service thread would.
            b.turn(now);
            b.carry_out();
            b.flush_dirty();
        }
        (shared, theirs)
    }

    /// A service thread that goes to sleep until the node's deadline needs no poke for that
    /// deadline — in particular not from itself, which used to happen when the deadline it
    /// recorded was recomputed from a duration and landed a few nanoseconds late: the thread
    /// then poked itself awake at once, again and again, busy until the deadline.
    #[test]
    fn a_thread_asleep_until_the_deadline_is_not_poked_for_it() {
        let (shared, _child) = shutting_down_root();
        let mut b = shared.lock();
        assert!(b.node.poll_timeout().is_some(), "the grace period runs");
        assert!(!b.has_work());
        let timeout = b.fall_asleep(Role::Io);
        assert!(timeout.is_some_and(|t| t > Duration::from_secs(1)), "asleep for the grace period");
        assert!(!b.wants_poke());
        // A sleeper due to wake later than the deadline is poked, once.
        let late = b.sleep_until().map(|d| d + Duration::from_millis(1));
        b.workers[Role::Io.index()] = Worker::Asleep(late);
        assert!(b.wants_poke());
        b.poked = true;
        assert!(!b.wants_poke(), "a poke is on its way");
    }
}
