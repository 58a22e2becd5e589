//! The `Node`: one context, all of the core's state machines behind one sans-IO interface.
//!
//! The host loop (docs/embedding.md): feed an [`Input`] with [`Node::handle_input`] (or call an
//! API method such as [`Node::call`]), drain every [`Output`] with [`Node::poll_output`], ask
//! [`Node::poll_timeout`] when to wake, and call [`Node::handle_timeout`] then. Every entry point
//! takes `now`; nothing here reads a clock, blocks or waits — in particular, no step of shutdown
//! ever waits for a call to finish, so a hung user function delays nothing.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

use crate::arena::BodyArena;
use crate::call::{
    decode_result, encode_result, encode_result_in, BodyError, CallError, CallErrorKind, CallId, CallRequest,
    CallResult, Cancelled, Dispatcher, FunctionName, JobId, Pending, PendingCalls, RequestBody,
};
use crate::departure::{self, ChildRecord, ControlError, Departure, DepartureCause, Stop, StopStage};
use crate::frame::{DecodeError, Encoding, Frame, Message, DEFAULT_MAX_MESSAGE_SIZE};
use crate::handle::{Handle, ReplyHandles};
use crate::ids::{ContextId, IdAllocator, IdBlock, IdError};
use crate::lines::{LineSplitter, LogSource, DEFAULT_MAX_LINE_LEN};
use crate::reaper::{ChildProcess, Escalation, ExitStatus, Pid, Reaper, Signal};
use crate::router::{Event, Origin, Peer, Rejection, Router, RouterConfig, RouterError, StreamId};
use crate::shutdown::{self, Cause, ExitKind, Phase, PhaseKind, Trigger};
use crate::time::Instant;

/// The default grace period: how long a shutting-down context waits for its children to leave
/// on their own before forcing them (mitogen's master waits 5 s).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The default of [`NodeConfig::id_blocks_per_child`]: 65 536 blocks (65 536 000 ids, 1.5 % of
/// the space) for one child of the root and everything below it over the tree's life (ids are
/// never reused). Every context below that spawns at all takes a block of its own, so this is
/// also 65 536 spawning contexts.
pub const DEFAULT_ID_BLOCKS_PER_CHILD: u32 = 1 << 16;

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This context's id.
    pub id: ContextId,
    /// Ancestors, nearest first; empty for the root.
    pub ancestors: Vec<ContextId>,
    /// A human name, used in call error contexts.
    pub name: String,
    /// The grace period (a child uses at most three quarters of its parent's remaining budget).
    pub grace: Duration,
    /// The kill schedule after a forced disconnect.
    pub escalation: Escalation,
    /// The largest body accepted or sent.
    pub max_message_size: u32,
    /// The longest log line; longer ones are split.
    pub max_line_len: usize,
    /// At the root: how many blocks of ids ([`crate::ids::ID_BLOCK_SIZE`] each) the subtree
    /// behind one child stream may be granted in all. Past it, ALLOCATE_ID from that subtree is
    /// answered dead, so one descendant that asks without end exhausts its own subtree's share,
    /// not the 32-bit id space every other subtree spawns from.
    pub id_blocks_per_child: u32,
    /// A deliberate defect, for showing that invariant checkers catch it. Always
    /// [`TestMutation::None`] outside such tests.
    #[doc(hidden)]
    pub test_mutation: TestMutation,
}

/// Deliberate defects the simulator's own tests switch on to prove its checkers work.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TestMutation {
    /// The real behaviour.
    #[default]
    None,
    /// Send SHUTDOWN to children before closing the call channel (violates docs/shutdown.md).
    ShutdownBeforeChannelClose,
}

impl NodeConfig {
    /// The root context (id 0) with default settings.
    pub fn root() -> NodeConfig {
        NodeConfig::child(ContextId::ROOT, Vec::new())
    }

    /// A context with the given id and ancestors (nearest first) and default settings.
    pub fn child(id: ContextId, ancestors: Vec<ContextId>) -> NodeConfig {
        NodeConfig {
            name: format!("context {id}"),
            id,
            ancestors,
            grace: DEFAULT_GRACE,
            escalation: Escalation::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_line_len: DEFAULT_MAX_LINE_LEN,
            id_blocks_per_child: DEFAULT_ID_BLOCKS_PER_CHILD,
            test_mutation: TestMutation::None,
        }
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.ancestors.is_empty()
    }
}

/// What a stream the host opened carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The framed stream to our parent.
    Parent,
    /// The framed stream to a child we spawned.
    Child {
        /// The id we gave it.
        id: ContextId,
        /// Its process, if we spawned one (tracked until reaped).
        pid: Option<Pid>,
        /// Its name, announced upwards.
        name: Option<String>,
    },
    /// The read end of one of our own stdout/stderr capture sockets.
    Logger {
        /// Which fd it captures.
        source: LogSource,
    },
}

/// Something that happened, reported by the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A stream is ready.
    StreamOpened {
        /// The host's name for it.
        stream: StreamId,
        /// What it carries.
        kind: StreamKind,
    },
    /// Bytes were read from a stream.
    Received {
        /// Where from.
        stream: StreamId,
        /// What was read.
        bytes: &'a [u8],
    },
    /// The peer will send nothing more (a read returned 0).
    Eof {
        /// The stream.
        stream: StreamId,
    },
    /// The stream broke (a write or read failed). Treated as EOF.
    StreamClosed {
        /// The stream.
        stream: StreamId,
    },
    /// A child process was reaped.
    ChildExited {
        /// Its pid.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// The host finished an [`Output::Close`]: what was transmitted before it was written out (or
    /// could not be) and the stream is closed. The node waits for this on its parent stream
    /// before it exits, so the last log lines are not lost with the process.
    Closed {
        /// The stream.
        stream: StreamId,
    },
    /// The main thread finished a call handed out with [`Output::RunCall`].
    CallFinished {
        /// Which one.
        job: JobId,
        /// Its result.
        result: CallResult,
    },
}

/// A log line that reached the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The context that printed it.
    pub context: ContextId,
    /// The logger name (`stdout`, `stderr`, or a driver's own).
    pub source: String,
    /// Python `logging` level number.
    pub level: u32,
    /// The line, without its newline.
    pub text: String,
}

/// Something worth logging that needs no action from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diagnostic {
    /// The router refused a message.
    Rejected(Rejection),
    /// A stream's bytes could not be decoded; it was closed.
    StreamFailed {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: DecodeError,
    },
    /// A CALL_FUNCTION body could not be decoded (answered with a `Malformed` error if a reply
    /// was wanted).
    BadCallRequest {
        /// The caller.
        caller: ContextId,
        /// Why.
        error: BodyError,
    },
    /// A `call_no_reply` was refused because the call channel was closed; no one can be told.
    CallDiscarded {
        /// The caller.
        caller: ContextId,
        /// The function it asked for.
        function: FunctionName,
    },
    /// A message for a handle nothing listens on (answered dead if a reply was wanted).
    UnknownHandle {
        /// Sender.
        src: ContextId,
        /// The handle.
        handle: Handle,
    },
    /// An answer on a reply handle from a context other than the one called.
    UnexpectedReply {
        /// Sender.
        src: ContextId,
        /// The handle.
        handle: Handle,
    },
    /// A CHILD_LEFT body that does not parse.
    BadDepartureReport {
        /// Sender.
        src: ContextId,
    },
    /// A FORWARD_LOG body was not `name\0level\0text`.
    BadLogRecord {
        /// Sender.
        src: ContextId,
    },
    /// A SHUTDOWN body was neither empty nor an 8-byte budget; shutdown began without a budget.
    BadShutdownBody {
        /// Its length.
        len: usize,
    },
    /// A received call was never started: its caller gave up first (`cancelled`), or its
    /// deadline passed while it waited behind others.
    CallNotStarted {
        /// The caller.
        caller: ContextId,
        /// The function it asked for.
        function: FunctionName,
        /// Cancelled by the caller (else expired here).
        cancelled: bool,
    },
    /// The caller gave up on the call now running; the host was told with
    /// [`Output::CancelCall`] and its result will be dropped.
    RunningCallCancelled {
        /// The caller.
        caller: ContextId,
        /// The job.
        job: JobId,
    },
    /// A `call_no_reply` failed (an error, a panic, a type mismatch): no one asked for the
    /// answer, so it is reported here.
    UnansweredCallFailed {
        /// The caller.
        caller: ContextId,
        /// What went wrong.
        error: CallError,
    },
    /// `CallFinished` for a job that is not running.
    UnknownJob(JobId),
    /// `ChildExited` for a pid not tracked.
    UnknownChild(Pid),
    /// A child process never reported its exit, even after SIGKILL; it was given up on.
    ChildAbandoned(Pid),
    /// The root refused an ALLOCATE_ID (answered dead when a reply handle was given).
    IdRequestRefused {
        /// Who asked.
        src: ContextId,
        /// Why.
        reason: IdRefusal,
    },
    /// The root refused to grant this context more ids (its answer to ALLOCATE_ID was dead):
    /// from now on a spawn that needs a new id fails ([`crate::host::SpawnRefused::IdsExhausted`]).
    IdsRefused {
        /// The root's reason, as it gave it.
        reason: String,
    },
    /// The shutdown state machine moved (docs/shutdown.md); `cause` once shutdown has begun
    /// and until the node closes.
    PhaseChanged {
        /// The phase left.
        from: PhaseKind,
        /// The phase entered.
        to: PhaseKind,
        /// Why shutdown began, while draining or forcing.
        cause: Option<Cause>,
    },
}

/// Why the root refused an ALLOCATE_ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdRefusal {
    /// It named no reply handle: no one could have received the block, so none was spent.
    NoReplyHandle,
    /// The asker's subtree was already granted [`NodeConfig::id_blocks_per_child`] blocks.
    QuotaExhausted,
    /// Every id of the 32-bit space has been handed out.
    SpaceExhausted,
}

impl fmt::Display for IdRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdRefusal::NoReplyHandle => "ALLOCATE_ID without a reply handle",
            IdRefusal::QuotaExhausted => "this subtree's share of context ids is used up",
            IdRefusal::SpaceExhausted => "context id space exhausted",
        })
    }
}

/// What the node asks its host to do. Drain with [`Node::poll_output`] after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write this frame to this stream, after everything transmitted on it before.
    Transmit {
        /// Where.
        stream: StreamId,
        /// What; header and body kept apart for a vectored write.
        frame: Frame,
    },
    /// `shutdown(SHUT_WR)` the write end of this logger stream. Every process holding a copy of
    /// it gets EPIPE from now on, so the read end reaches EOF once its buffer is drained; keep
    /// reading it and report the [`Input::Eof`].
    ShutdownWrite {
        /// The logger stream.
        stream: StreamId,
    },
    /// Close this stream, after writing what was transmitted on it before. The core has
    /// forgotten it; later bytes for it are ignored.
    Close {
        /// The stream.
        stream: StreamId,
    },
    /// Send a signal to a child process.
    Signal {
        /// The process.
        pid: Pid,
        /// The signal.
        signal: Signal,
    },
    /// Run this call on the main thread and report [`Input::CallFinished`]. At most one is
    /// outstanding at a time.
    RunCall {
        /// The host's ticket for it.
        job: JobId,
        /// Who asked.
        caller: ContextId,
        /// What to run.
        request: CallRequest,
    },
    /// The caller of the running call `job` gave up on it. Stop it if it can be stopped (drop an
    /// async function's future); a blocking function runs on, reported as still running. Either
    /// way report [`Input::CallFinished`] when it ends: its result is dropped, not sent.
    CancelCall {
        /// The running call.
        job: JobId,
    },
    /// The CALL_FUNCTION channel is closed: no further `RunCall` will come, so the main thread
    /// may stop waiting for work once its current call (if any) returns.
    CallsClosed,
    /// An outgoing call is resolved. Exactly one per [`CallId`].
    CallReturned {
        /// Which call.
        call: CallId,
        /// Its result.
        result: CallResult,
    },
    /// A child process of this context was reaped, or — at the root — a descendant's parent
    /// reported one (CHILD_LEFT), so the root hears of every context that leaves.
    Departed(Departure),
    /// A log line arrived at the root.
    LogLine(LogLine),
    /// The root answered ALLOCATE_ID: retry [`Node::allocate_id`]. It succeeds if a block
    /// arrived, and fails [`IdError::Exhausted`] if the root refused (then for good:
    /// [`Diagnostic::IdsRefused`]).
    IdsAvailable,
    /// Worth logging; no action needed.
    Diagnostic(Diagnostic),
    /// The node is done: end the process as told. Nothing follows.
    Exit {
        /// How.
        how: ExitKind,
    },
}

/// Misuse of the node by its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// The router refused the stream.
    Router(RouterError),
    /// A logger stream id already in use.
    StreamExists(StreamId),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Router(e) => write!(f, "{e}"),
            NodeError::StreamExists(s) => write!(f, "stream {s} is already registered"),
        }
    }
}

impl core::error::Error for NodeError {}

impl From<RouterError> for NodeError {
    fn from(e: RouterError) -> Self {
        NodeError::Router(e)
    }
}

/// The node's timers: one enum, one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Draining ends in a forced disconnect.
    Grace = 0,
    /// SIGTERMed children get SIGKILL.
    Kill = 1,
    /// SIGKILLed children that never reported their exit are given up on.
    Abandon = 2,
}

const TIMERS: [Timer; 3] = [Timer::Grace, Timer::Kill, Timer::Abandon];

#[derive(Clone, Copy, Debug, Default)]
struct TimerTable([Option<Instant>; 3]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn clear(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn earliest(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

#[derive(Clone, Debug)]
struct ChildLink {
    id: ContextId,
    pid: Option<Pid>,
}

#[derive(Clone, Debug)]
struct Logger {
    source: LogSource,
    lines: LineSplitter,
}

/// One context.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    router: Router,
    phase: Phase,
    timers: TimerTable,
    outputs: VecDeque<Output>,
    reply_handles: ReplyHandles,
    ids: IdAllocator,
    id_request: Option<Handle>,
    /// The root answered ALLOCATE_ID dead: no more blocks will come.
    ids_refused: bool,
    /// Each SIGKILL round of the escalation: when its children are given up on, and who they are.
    kill_rounds: VecDeque<(Instant, Vec<Pid>)>,
    next_call: u64,
    pending: PendingCalls,
    dispatcher: Dispatcher,
    parent: Option<StreamId>,
    children: BTreeMap<StreamId, ChildLink>,
    reaper: Reaper,
    /// Every child process not reaped yet: what its departure will say, and its own stop.
    records: BTreeMap<Pid, ChildRecord>,
    /// The earliest deadline among `records`' stops, kept in step with them (`restop`), so
    /// `poll_timeout`, asked after every input, does not walk the children.
    next_stop: Option<Instant>,
    loggers: BTreeMap<StreamId, Logger>,
    /// Set when the parent stream is forgotten; acted on in `settle`, which knows `now`.
    parent_lost: bool,
    /// Where the calls, answers and log lines this node encodes are written.
    bodies: BodyArena,
}

impl Node {
    /// A node in [`Phase::Running`] with no streams.
    pub fn new(config: NodeConfig) -> Node {
        let mut router = Router::new(RouterConfig {
            id: config.id,
            ancestors: config.ancestors.clone(),
            max_message_size: config.max_message_size,
        });
        let ids = if config.is_root() {
            router.require_grants();
            IdAllocator::root()
        } else {
            IdAllocator::delegated()
        };
        Node {
            router,
            phase: Phase::Running,
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            reply_handles: ReplyHandles::default(),
            ids,
            id_request: None,
            ids_refused: false,
            kill_rounds: VecDeque::new(),
            next_call: 0,
            pending: PendingCalls::default(),
            dispatcher: Dispatcher::default(),
            parent: None,
            children: BTreeMap::new(),
            reaper: Reaper::default(),
            records: BTreeMap::new(),
            next_stop: None,
            loggers: BTreeMap::new(),
            parent_lost: false,
            bodies: BodyArena::default(),
            config,
        }
    }

    /// This context's id.
    #[inline]
    pub fn id(&self) -> ContextId {
        self.config.id
    }

    /// The configuration.
    #[inline]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Calls received and waiting for the one handed out with [`Output::RunCall`] to finish: a
    /// host may use it to write answers in batches while more calls are about to run.
    pub fn calls_waiting(&self) -> usize {
        self.dispatcher.queued()
    }

    /// The router (read-only), for inspection.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Outgoing calls not yet resolved.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// The next output, if any. Drain completely after every input.
    #[must_use]
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest instant at which [`Node::handle_timeout`] has work, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.timers.earliest();
        for t in [self.pending.next_deadline(), self.next_stop].into_iter().flatten() {
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        at
    }

    /// Handles one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), NodeError> {
        if let Phase::Exited { .. } = self.phase {
            return Ok(()); // nothing follows Exit, not even a diagnostic
        }
        match input {
            Input::StreamOpened { stream, kind } => self.open_stream(now, stream, kind)?,
            Input::Received { stream, bytes } => {
                if let Some(logger) = self.loggers.get_mut(&stream) {
                    // The splitter is lent out for the read (a new one allocates nothing), so
                    // each line is forwarded as it is cut, straight from the read's bytes.
                    let source = logger.source;
                    let mut lines = core::mem::replace(&mut logger.lines, LineSplitter::new(0));
                    lines.push_lines(bytes, |line| self.forward_line(now, source, line));
                    if let Some(logger) = self.loggers.get_mut(&stream) {
                        logger.lines = lines;
                    }
                } else {
                    // Each message is handled to the end before the next is decoded, as if
                    // each came in a read of its own: a call an idle main thread can take is
                    // handed over before a SHUTDOWN behind it closes the channel (S20).
                    self.router.feed(stream, bytes);
                    while self.router.route_next(stream) {
                        self.pump(now);
                        self.start_next_call(now);
                    }
                    self.pump(now);
                }
            }
            Input::Eof { stream } | Input::StreamClosed { stream } | Input::Closed { stream } if matches!(self.phase, Phase::Closing { stream: Some(s), .. } if s == stream) =>
            {
                let trigger = if matches!(input, Input::Closed { .. }) {
                    Trigger::Flushed
                } else {
                    Trigger::ParentLost
                };
                self.apply(now, trigger, None);
            }
            Input::Eof { stream } | Input::StreamClosed { stream } => self.stream_ended(now, stream),
            Input::Closed { .. } => {}
            Input::ChildExited { pid, status } => match self.reaper.reaped(pid) {
                Some(state) => self.departed(now, pid, status, state),
                None => self.diag(Diagnostic::UnknownChild(pid)),
            },
            Input::CallFinished { job, result } => self.call_finished(job, result),
        }
        self.settle(now);
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_stop.is_some_and(|at| at <= now) {
            for pid in departure::due_stops(&self.records, now) {
                self.advance_stop(now, pid);
            }
            self.restop();
        }
        for (handle, p) in self.pending.take_expired(now) {
            let e = CallError::new(
                CallErrorKind::Timeout,
                "no answer before the call's deadline",
                format!("context {}", p.target),
            );
            self.resolve(p.call, Err(e));
            self.send_cancel(now, p.target, handle);
        }
        for t in TIMERS {
            if self.timers.get(t).is_some_and(|at| at <= now) {
                self.timers.clear(t);
                match t {
                    Timer::Grace => self.apply(now, Trigger::GraceExpired, None),
                    Timer::Kill => {
                        let killed = self.reaper.escalate(Signal::Kill);
                        for &pid in &killed {
                            self.outputs.push_back(Output::Signal { pid, signal: Signal::Kill });
                        }
                        // Each round is given up on `abandon_after` after its own SIGKILL: a
                        // later round (children that arrived late) never moves an earlier one's.
                        let at = now + self.config.escalation.abandon_after;
                        self.kill_rounds.push_back((at, killed));
                        if self.timers.get(Timer::Abandon).is_none() {
                            self.timers.set(Timer::Abandon, at);
                        }
                    }
                    Timer::Abandon => {
                        while self.kill_rounds.front().is_some_and(|(at, _)| *at <= now) {
                            let Some((_, pids)) = self.kill_rounds.pop_front() else { break };
                            for pid in self.reaper.abandon_killed(&pids) {
                                self.records.remove(&pid);
                                self.diag(Diagnostic::ChildAbandoned(pid));
                            }
                        }
                        if let Some(&(at, _)) = self.kill_rounds.front() {
                            self.timers.set(Timer::Abandon, at);
                        }
                        self.restop();
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Calls `function` in `target` and wants the answer, which comes back as exactly one
    /// [`Output::CallReturned`] with the returned id. Any number may be in flight.
    pub fn call(
        &mut self,
        now: Instant,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<CallId, CallError> {
        self.check_can_call(|| function)?;
        let body = CallRequest::body_in(&mut self.bodies, function, &args.into());
        self.call_body(now, target, body)
    }

    /// [`Node::call`] with a body built beforehand, for example by
    /// [`CallRequest::encode_args`], which serializes large arguments without a copy.
    pub fn call_body(
        &mut self,
        now: Instant,
        target: ContextId,
        body: RequestBody,
    ) -> Result<CallId, CallError> {
        self.check_can_call(|| body.function())?;
        self.check_size(body.len())?;
        let handle =
            self.reply_handles.allocate().map_err(|e| self.local_error(CallErrorKind::Undeliverable, e))?;
        let call = CallId(self.next_call);
        self.next_call += 1;
        let deadline = body.timeout().map(|t| now + t);
        self.pending.insert(handle, Pending { call, target, deadline });
        self.send_request(now, target, body, handle);
        Ok(call)
    }

    /// Shuts one child and its subtree down gracefully while the rest of the tree runs on: the
    /// whole-tree sequence, for that subtree (SHUTDOWN with this context's grace as budget, so
    /// the child closes its call channel before telling its own children); if it has not left
    /// by then, its stream is closed and its process gets SIGTERM, SIGKILL `kill_after` later,
    /// and is given up on `abandon_after` after that. Its departure comes as
    /// [`Output::Departed`]. docs/shutdown.md "One child".
    pub fn shutdown_child(&mut self, now: Instant, id: ContextId) -> Result<(), ControlError> {
        let pid = self.control_target(id)?;
        let deadline = now + self.config.grace;
        if let Some(r) = pid.and_then(|p| self.records.get_mut(&p)) {
            if r.stop.is_none() {
                r.stop = Some(Stop { stage: StopStage::Asked, deadline });
            }
        }
        self.restop();
        self.send_shutdown(now, id, deadline);
        self.settle(now);
        Ok(())
    }

    /// Kills one child now: its process gets SIGKILL, then its stream is closed (every call
    /// waiting on it or below it fails `Disconnected`); it is given up on `abandon_after` later
    /// if its exit is never reported. Its subtree follows: each descendant loses its parent and
    /// ends itself. The departure comes as [`Output::Departed`], cause `Killed`.
    ///
    /// The signal goes first: a child that saw its stream close first could notice the EOF and
    /// end itself before the signal came, and a killed child would then be reported with the
    /// status of its own exit.
    pub fn kill_child(&mut self, now: Instant, id: ContextId) -> Result<(), ControlError> {
        let pid = self.control_target(id)?;
        if let Some(pid) = pid {
            let abandon_at = now + self.config.escalation.abandon_after;
            if let Some(r) = self.records.get_mut(&pid) {
                r.killed = true;
                r.stop = Some(Stop { stage: StopStage::Killed, deadline: abandon_at });
            }
            self.restop();
            self.signal_child(pid, Signal::Kill);
        }
        self.disconnect_child(now, id);
        self.settle(now);
        Ok(())
    }

    /// A connected child of a running context, and its pid.
    fn control_target(&self, id: ContextId) -> Result<Option<Pid>, ControlError> {
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown);
        }
        let pid =
            self.children.values().find(|c| c.id == id).map(|c| c.pid).ok_or(ControlError::NotAChild(id))?;
        // Reaped already, its stream not yet at EOF: it has left, and its departure is out.
        if pid.is_some_and(|p| !self.records.contains_key(&p)) {
            return Err(ControlError::NotAChild(id));
        }
        Ok(pid)
    }

    /// Closes a child's framed stream: the core forgets it, and everything reachable through it
    /// is disconnected (calls waiting on it fail, DEL_ROUTE spreads).
    fn close_child_stream(&mut self, now: Instant, stream: StreamId) {
        self.forget_framed(stream);
        self.router.remove_stream(stream);
        self.pump(now);
    }

    /// [`Node::close_child_stream`] for the child `id`, if it is still connected.
    fn disconnect_child(&mut self, now: Instant, id: ContextId) {
        if let Some(stream) = self.children.iter().find(|(_, c)| c.id == id).map(|(s, _)| *s) {
            self.close_child_stream(now, stream);
        }
    }

    /// Sends one child process `signal`, if the escalation has not sent it already.
    fn signal_child(&mut self, pid: Pid, signal: Signal) {
        if self.reaper.escalate_one(pid, signal) {
            self.outputs.push_back(Output::Signal { pid, signal });
        }
    }

    /// Recomputes the earliest stop deadline after a stop began, moved on or ended.
    fn restop(&mut self) {
        self.next_stop = departure::next_stop(&self.records);
    }

    /// A per-child stop's deadline passed: the next step of its escalation.
    fn advance_stop(&mut self, now: Instant, pid: Pid) {
        let Some(r) = self.records.get_mut(&pid) else { return };
        let Some(stop) = r.stop else { return };
        let id = r.id;
        match stop.stage {
            StopStage::Asked => {
                r.stop = Some(Stop {
                    stage: StopStage::Terminated,
                    deadline: now + self.config.escalation.kill_after,
                });
                self.disconnect_child(now, id);
                self.signal_child(pid, Signal::Term);
            }
            StopStage::Terminated => {
                r.stop = Some(Stop {
                    stage: StopStage::Killed,
                    deadline: now + self.config.escalation.abandon_after,
                });
                self.signal_child(pid, Signal::Kill);
            }
            StopStage::Killed => {
                self.records.remove(&pid);
                if self.reaper.abandon(pid) {
                    self.diag(Diagnostic::ChildAbandoned(pid));
                }
            }
        }
    }

    /// A child process was reaped: say so here and, from below the root, to the root.
    fn departed(&mut self, now: Instant, pid: Pid, status: ExitStatus, state: ChildProcess) {
        let Some(r) = self.records.remove(&pid) else { return };
        if r.stop.is_some() {
            self.restop();
        }
        let cause = if r.killed {
            DepartureCause::Killed
        } else if state != ChildProcess::Running {
            DepartureCause::Forced
        } else if r.asked {
            DepartureCause::Shutdown
        } else {
            DepartureCause::Exited
        };
        let d = Departure { id: r.id, name: r.name, pid, parent: self.id(), status, cause };
        if !self.config.is_root() {
            let msg =
                Message::new(ContextId::ROOT, self.id(), Handle::CHILD_LEFT, Encoding::Postcard, d.encode());
            self.send(now, msg);
        }
        self.outputs.push_back(Output::Departed(d));
    }

    /// Gives up on an outgoing call (its future was dropped): it resolves now with
    /// [`CallErrorKind::Cancelled`] and the callee is told, so a call still queued there never
    /// starts and a running async function is dropped. Unknown or resolved calls are ignored.
    pub fn cancel_call(&mut self, now: Instant, call: CallId) {
        let Some((handle, p)) = self.pending.take_call(call) else { return };
        let e = CallError::new(
            CallErrorKind::Cancelled,
            "the caller gave up on the call",
            self.config.name.clone(),
        );
        self.resolve(p.call, Err(e));
        self.send_cancel(now, p.target, handle);
        self.settle(now);
    }

    /// Tells `target` that the call answered at `handle` is abandoned. No reply is wanted: if it
    /// cannot be delivered, the call is gone there anyway.
    fn send_cancel(&mut self, now: Instant, target: ContextId, handle: Handle) {
        let body = handle.0.to_be_bytes().to_vec();
        self.send(now, Message::new(target, self.id(), Handle::CANCEL_CALL, Encoding::Binary, body));
    }

    /// Sends a checked CALL_FUNCTION body; the answer, if any, goes to `reply_to`.
    fn send_request(&mut self, now: Instant, target: ContextId, body: RequestBody, reply_to: Handle) {
        let msg =
            Message::new(target, self.id(), Handle::CALL_FUNCTION, Encoding::Postcard, body.into_bytes())
                .with_reply_to(reply_to);
        self.send(now, msg);
        self.settle(now);
    }

    /// Calls `function` in `target` without wanting an answer. See docs/shutdown.md
    /// ("call_no_reply and shutdown") for what becomes of one sent just before shutdown.
    pub fn call_no_reply(
        &mut self,
        now: Instant,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        self.check_can_call(|| function)?;
        let body = CallRequest::body_in(&mut self.bodies, function, &args.into());
        self.call_no_reply_body(now, target, body)
    }

    /// [`Node::call_no_reply`] with a body built beforehand.
    pub fn call_no_reply_body(
        &mut self,
        now: Instant,
        target: ContextId,
        body: RequestBody,
    ) -> Result<(), CallError> {
        self.check_can_call(|| body.function())?;
        self.check_size(body.len())?;
        self.send_request(now, target, body, Handle::NONE);
        Ok(())
    }

    /// Begins a graceful shutdown of this context and everything below it. Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        self.apply(now, Trigger::LocalShutdown, None);
        self.settle(now);
    }

    /// Skips the grace period: closes what is left and starts killing child processes now.
    pub fn force_shutdown(&mut self, now: Instant) {
        self.apply(now, Trigger::ForceRequested, None);
        self.settle(now);
    }

    /// An id for a new child of this context. A non-root context without ids left asks the root
    /// for a block and returns [`IdError::NeedBlock`]; [`Output::IdsAvailable`] says when to retry.
    /// Once the root has refused a block, [`IdError::Exhausted`] whenever the blocks run dry.
    pub fn allocate_id(&mut self, now: Instant) -> Result<ContextId, IdError> {
        match self.ids.allocate() {
            Err(IdError::NeedBlock) if self.ids_refused => Err(IdError::Exhausted),
            Err(IdError::NeedBlock) => {
                if self.id_request.is_none() {
                    if let Ok(handle) = self.reply_handles.allocate() {
                        self.id_request = Some(handle);
                        let msg = Message::new(
                            ContextId::ROOT,
                            self.id(),
                            Handle::ALLOCATE_ID,
                            Encoding::Binary,
                            "",
                        )
                        .with_reply_to(handle);
                        self.send(now, msg);
                    }
                }
                Err(IdError::NeedBlock)
            }
            other => other,
        }
    }

    // --- inputs ---------------------------------------------------------------------------

    fn open_stream(&mut self, now: Instant, stream: StreamId, kind: StreamKind) -> Result<(), NodeError> {
        if self.loggers.contains_key(&stream) || self.router.peer(stream).is_some() {
            return Err(NodeError::StreamExists(stream));
        }
        match kind {
            StreamKind::Parent => {
                self.router.add_stream(stream, Peer::Parent)?;
                self.parent = Some(stream);
            }
            StreamKind::Child { id, pid, name } => {
                self.router.add_stream(stream, Peer::Child { id, name: name.clone() })?;
                self.children.insert(stream, ChildLink { id, pid });
                if let Some(pid) = pid {
                    self.reaper.track(pid);
                    let record = ChildRecord { id, name, asked: false, killed: false, stop: None };
                    self.records.insert(pid, record);
                }
                // A child that arrives while we are already going tells it to follow at once.
                // One that arrives after we drained (its spawn was carried out before shutdown
                // began, and took longer than the drain) is forced at once: nothing is left to
                // wait for it, and this process may end before it would drain.
                match self.phase {
                    Phase::Draining { deadline, .. } => self.send_shutdown(now, id, deadline),
                    Phase::ForceDisconnect { .. } | Phase::Closing { .. } => {
                        self.force_streams(now);
                        self.terminate_children(now);
                    }
                    _ => {}
                }
            }
            StreamKind::Logger { source } => {
                self.loggers
                    .insert(stream, Logger { source, lines: LineSplitter::new(self.config.max_line_len) });
                if !matches!(self.phase, Phase::Running) {
                    self.outputs.push_back(Output::ShutdownWrite { stream });
                }
            }
        }
        self.pump(now);
        Ok(())
    }

    fn stream_ended(&mut self, now: Instant, stream: StreamId) {
        if let Some(mut logger) = self.loggers.remove(&stream) {
            if let Some(last) = logger.lines.finish() {
                self.forward_line(now, logger.source, &last);
            }
            self.outputs.push_back(Output::Close { stream });
            return;
        }
        if self.router.peer(stream).is_none() {
            return; // already forgotten
        }
        self.forget_framed(stream);
        self.router.eof(stream);
        self.pump(now);
    }

    /// Bookkeeping for a framed stream the core is done with; the router is told separately.
    fn forget_framed(&mut self, stream: StreamId) {
        self.children.remove(&stream);
        self.outputs.push_back(Output::Close { stream });
        if self.parent == Some(stream) {
            self.parent = None;
            self.parent_lost = true;
        }
    }

    fn call_finished(&mut self, job: JobId, result: CallResult) {
        let Some(job) = self.dispatcher.finish(job) else {
            return self.diag(Diagnostic::UnknownJob(job));
        };
        if job.cancelled {
            return; // the caller has given up and resolved the call itself
        }
        if job.reply_to == Handle::NONE {
            // No one to tell (`call_no_reply`): a failure is reported here, not lost.
            if let Err(error) = result {
                self.diag(Diagnostic::UnansweredCallFailed { caller: job.caller, error });
            }
            return;
        }
        let mut body = encode_result_in(Some(&mut self.bodies), &result);
        if body.len() > self.config.max_message_size as usize {
            let e = CallError::new(
                CallErrorKind::TooLarge,
                format!("result of {} bytes exceeds the maximum message size", body.len()),
                self.config.name.clone(),
            );
            body = encode_result(&Err(e));
        }
        let msg = Message::new(job.caller, self.id(), job.reply_to, Encoding::Postcard, body);
        self.router.send(msg);
    }

    // --- routing ---------------------------------------------------------------------------

    fn send(&mut self, now: Instant, msg: Message) {
        self.router.send(msg);
        self.pump(now);
    }

    /// Moves every router event into outputs or acts on it, in order.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.router.poll_event() {
            match event {
                Event::Transmit { stream, frame } => {
                    self.outputs.push_back(Output::Transmit { stream, frame })
                }
                Event::Deliver { origin, message } => self.deliver(now, origin, message),
                Event::Rejected(r) => self.diag(Diagnostic::Rejected(r)),
                Event::StreamFailed { stream, error } => {
                    // A truncated frame at EOF is reported after the stream was already
                    // forgotten by `stream_ended`; a decode error mid-stream was not.
                    if self.parent == Some(stream) || self.children.contains_key(&stream) {
                        self.forget_framed(stream);
                    }
                    self.diag(Diagnostic::StreamFailed { stream, error });
                }
                Event::RouteAdded { .. } => {}
                Event::Disconnected { id } => {
                    for p in self.pending.take_where(|target| target == id) {
                        self.resolve(p.call, Err(disconnected(id)));
                    }
                }
            }
        }
    }

    fn deliver(&mut self, now: Instant, origin: Origin, msg: Message) {
        if !msg.handle.is_well_known() {
            return self.deliver_reply(msg);
        }
        match msg.handle {
            Handle::CALL_FUNCTION if !msg.is_dead() => self.call_requested(now, msg),
            Handle::CANCEL_CALL if !msg.is_dead() => self.call_cancelled(&msg),
            Handle::SHUTDOWN if origin != Origin::Local && !msg.is_dead() => {
                let budget = match shutdown::decode_budget(&msg.body) {
                    Ok(b) => b,
                    Err(bad) => {
                        self.diag(Diagnostic::BadShutdownBody { len: bad.len });
                        None
                    }
                };
                self.apply(now, Trigger::ShutdownFromParent, budget);
            }
            Handle::FORWARD_LOG if self.config.is_root() && !msg.is_dead() => match parse_log(&msg.body) {
                Some((source, level, text)) => {
                    self.outputs.push_back(Output::LogLine(LogLine { context: msg.src, source, level, text }))
                }
                None => self.diag(Diagnostic::BadLogRecord { src: msg.src }),
            },
            Handle::CHILD_LEFT if self.config.is_root() && !msg.is_dead() => {
                match Departure::decode(&msg.body, msg.src) {
                    Some(d) => self.outputs.push_back(Output::Departed(d)),
                    None => self.diag(Diagnostic::BadDepartureReport { src: msg.src }),
                }
            }
            Handle::ALLOCATE_ID if self.config.is_root() && !msg.is_dead() => {
                self.ids_requested(origin, &msg)
            }
            _ => self.unknown_handle(&msg),
        }
    }

    /// ALLOCATE_ID at the root: the next block of ids for the asker, unless no one could receive
    /// it or its subtree (the stream it arrived on) has had its share.
    fn ids_requested(&mut self, origin: Origin, msg: &Message) {
        let refuse = |node: &mut Node, reason: IdRefusal| {
            node.diag(Diagnostic::IdRequestRefused { src: msg.src, reason });
            if msg.reply_to != Handle::NONE {
                node.router.send(Message::dead(msg.src, node.id(), msg.reply_to, format!("{reason}")));
            }
        };
        if msg.reply_to == Handle::NONE {
            return refuse(self, IdRefusal::NoReplyHandle);
        }
        let stream = match origin {
            Origin::Stream(s) => Some(s),
            Origin::Local => None,
        };
        if stream.is_some_and(|s| self.router.granted_blocks(s) >= self.config.id_blocks_per_child as usize) {
            return refuse(self, IdRefusal::QuotaExhausted);
        }
        let Ok(block) = self.ids.allocate_block() else { return refuse(self, IdRefusal::SpaceExhausted) };
        if let Some(s) = stream {
            self.router.grant(s, block);
        }
        let body = block.to_bytes().to_vec();
        self.router.send(Message::new(msg.src, self.id(), msg.reply_to, Encoding::Binary, body));
    }

    fn deliver_reply(&mut self, msg: Message) {
        if self.id_request == Some(msg.handle) {
            // Only the root grants ids. Reply handles are easy to guess, so an answer from anyone
            // else is refused and the request stays open for the root's own answer.
            if msg.src != ContextId::ROOT {
                return self.diag(Diagnostic::UnexpectedReply { src: msg.src, handle: msg.handle });
            }
            self.id_request = None;
            if msg.is_dead() {
                // A refusal is final (the space, or this subtree's share, is used up): asking
                // again would only repeat it. The spawns waiting for ids are retried and fail.
                self.ids_refused = true;
                let reason = String::from_utf8_lossy(&msg.body).into_owned();
                self.diag(Diagnostic::IdsRefused { reason });
                self.outputs.push_back(Output::IdsAvailable);
                return;
            }
            // A block holding 0 (the root) would route the root's traffic to a child.
            match IdBlock::from_bytes(&msg.body).filter(|b| b.start > 0) {
                Some(block) => {
                    self.ids.add_block(block);
                    self.outputs.push_back(Output::IdsAvailable);
                }
                None => self.diag(Diagnostic::UnexpectedReply { src: msg.src, handle: msg.handle }),
            }
            return;
        }
        let Some(pending) = self.pending.get(msg.handle) else {
            return self.unknown_handle(&msg);
        };
        let result = if let Some(reason) = msg.is_dead().then(|| String::from_utf8_lossy(&msg.body)) {
            // Any router on the way may answer dead ("no route", "too large", a refusal) — but
            // only one that can be on the way: this context, the target, an ancestor (a call
            // sent before the route to its target was known goes up), or a context reached the
            // same way as the target (down the same child stream, or both up the parent). A
            // descendant down another branch cannot fail a call it never saw.
            let on_the_way = msg.src == self.id()
                || msg.src == pending.target
                || self.config.ancestors.contains(&msg.src)
                || self.router.route(msg.src) == self.router.route(pending.target);
            if !on_the_way {
                return self.diag(Diagnostic::UnexpectedReply { src: msg.src, handle: msg.handle });
            }
            Err(CallError::new(CallErrorKind::Undeliverable, reason, format!("context {}", msg.src)))
        } else if msg.src != pending.target {
            return self.diag(Diagnostic::UnexpectedReply { src: msg.src, handle: msg.handle });
        } else {
            decode_result(&msg.body).unwrap_or_else(|e| {
                Err(CallError::new(
                    CallErrorKind::Malformed,
                    format!("bad answer: {e}"),
                    format!("context {}", msg.src),
                ))
            })
        };
        self.pending.take(msg.handle);
        self.resolve(pending.call, result);
    }

    fn unknown_handle(&mut self, msg: &Message) {
        self.diag(Diagnostic::UnknownHandle { src: msg.src, handle: msg.handle });
        if msg.reply_to != Handle::NONE && !msg.is_dead() {
            let reason = format!("invalid handle {} in context {}", msg.handle, self.id());
            self.router.send(Message::dead(msg.src, self.id(), msg.reply_to, reason));
        }
    }

    /// The caller gave up on a call it made here (only the caller that made a call can, since
    /// `src` is authenticated on arrival).
    fn call_cancelled(&mut self, msg: &Message) {
        let Ok(bytes) = <[u8; 4]>::try_from(&msg.body[..]) else {
            return self.diag(Diagnostic::UnknownHandle { src: msg.src, handle: msg.handle });
        };
        match self.dispatcher.cancel(msg.src, Handle(u32::from_be_bytes(bytes))) {
            Cancelled::Queued(job) => self.diag(Diagnostic::CallNotStarted {
                caller: job.caller,
                function: job.request.function,
                cancelled: true,
            }),
            Cancelled::Running(job) => {
                self.outputs.push_back(Output::CancelCall { job });
                self.diag(Diagnostic::RunningCallCancelled { caller: msg.src, job });
            }
            Cancelled::Unknown => {}
        }
    }

    fn call_requested(&mut self, now: Instant, msg: Message) {
        let request = match CallRequest::decode(&msg.body) {
            Ok(r) => r,
            Err(error) => {
                self.diag(Diagnostic::BadCallRequest { caller: msg.src, error: error.clone() });
                let e = CallError::new(
                    CallErrorKind::Malformed,
                    format!("bad call request: {error}"),
                    self.config.name.clone(),
                );
                return self.answer(msg.src, msg.reply_to, Err(e));
            }
        };
        let deadline = request.meta.timeout.map(|t| now + t);
        if let Err(job) = self.dispatcher.enqueue(msg.src, msg.reply_to, request, deadline) {
            self.refuse(job.caller, job.reply_to, job.request.function);
        }
    }

    /// Answers a call refused because the channel is closed, or reports it if no one can hear.
    fn refuse(&mut self, caller: ContextId, reply_to: Handle, function: FunctionName) {
        if reply_to == Handle::NONE {
            return self.diag(Diagnostic::CallDiscarded { caller, function });
        }
        let e = CallError::new(CallErrorKind::ShuttingDown, "shutting down", self.config.name.clone());
        self.answer(caller, reply_to, Err(e));
    }

    fn answer(&mut self, caller: ContextId, reply_to: Handle, result: CallResult) {
        if reply_to != Handle::NONE {
            self.router.send(Message::new(
                caller,
                self.id(),
                reply_to,
                Encoding::Postcard,
                encode_result_in(Some(&mut self.bodies), &result),
            ));
        }
    }

    // --- shutdown --------------------------------------------------------------------------

    /// Runs `trigger` through the transition table and performs the transition's actions.
    fn apply(&mut self, now: Instant, trigger: Trigger, budget: Option<Duration>) {
        let from = self.phase.kind();
        let Some(to) = shutdown::next(from, trigger) else { return };
        match (from, to) {
            (PhaseKind::Running, PhaseKind::Draining) => {
                let cause = match trigger {
                    Trigger::ShutdownFromParent => Cause::ParentRequest,
                    Trigger::ParentLost => Cause::ParentLost,
                    _ => Cause::Local,
                };
                let grace = if self.config.is_root() {
                    self.config.grace
                } else {
                    shutdown::child_grace(self.config.grace, budget)
                };
                let deadline = now + grace;
                let broken = self.config.test_mutation == TestMutation::ShutdownBeforeChannelClose;
                // 1. Close the call channel before anything is said to the children.
                if !broken {
                    self.close_calls(now);
                }
                // 2. SHUTDOWN, with the remaining budget, to each directly connected child.
                let kids: Vec<ContextId> = self.children.values().map(|c| c.id).collect();
                for id in kids {
                    self.send_shutdown(now, id, deadline);
                }
                if broken {
                    self.close_calls(now);
                }
                // 3. SHUT_WR each logger; its read end is drained to EOF.
                let loggers: Vec<StreamId> = self.loggers.keys().copied().collect();
                for stream in loggers {
                    self.outputs.push_back(Output::ShutdownWrite { stream });
                }
                // 4. Arm the grace deadline.
                self.timers.set(Timer::Grace, deadline);
                self.enter(Phase::Draining { cause, deadline });
            }
            (PhaseKind::Draining, PhaseKind::Draining) => {
                if let (Phase::Draining { cause, deadline }, Some(budget)) = (self.phase, budget) {
                    let tighter = now + shutdown::child_grace(self.config.grace, Some(budget));
                    if tighter < deadline {
                        self.timers.set(Timer::Grace, tighter);
                        self.phase = Phase::Draining { cause, deadline: tighter };
                        // The children drain against the new deadline too: each must be done,
                        // or forced, before this node forces it.
                        let kids: Vec<ContextId> = self.children.values().map(|c| c.id).collect();
                        for id in kids {
                            self.send_shutdown(now, id, tighter);
                        }
                    }
                }
            }
            (_, PhaseKind::ForceDisconnect) => {
                let cause = match self.phase {
                    Phase::Draining { cause, .. } => cause,
                    _ => Cause::Forced,
                };
                if from == PhaseKind::Running {
                    self.close_calls(now);
                }
                self.timers.clear(Timer::Grace);
                self.enter(Phase::ForceDisconnect { cause });
                self.force_streams(now);
                self.terminate_children(now);
            }
            (_, PhaseKind::Closing) => self.close(now),
            (_, PhaseKind::Exited) => self.finish(),
            _ => {}
        }
    }

    fn close_calls(&mut self, now: Instant) {
        let refused = self.dispatcher.close();
        self.outputs.push_back(Output::CallsClosed);
        for job in refused {
            self.refuse(job.caller, job.reply_to, job.request.function);
        }
        self.pump(now);
    }

    fn send_shutdown(&mut self, now: Instant, child: ContextId, deadline: Instant) {
        if let Some(r) = self.records.values_mut().find(|r| r.id == child) {
            r.asked = true;
        }
        let budget = deadline.saturating_duration_since(now);
        let body = shutdown::encode_budget(budget).to_vec();
        self.send(now, Message::new(child, self.id(), Handle::SHUTDOWN, Encoding::Binary, body));
    }

    /// Closes every child and logger stream still open (forced disconnect).
    fn force_streams(&mut self, now: Instant) {
        let kids: Vec<StreamId> = self.children.keys().copied().collect();
        for stream in kids {
            self.close_child_stream(now, stream);
        }
        let loggers: Vec<StreamId> = self.loggers.keys().copied().collect();
        for stream in loggers {
            self.stream_ended(now, stream);
        }
    }

    /// Moves to `phase`, reporting the change of phase (not a change of deadline alone) as a
    /// diagnostic, so a host or checker sees every step, even several taken in one input.
    fn enter(&mut self, phase: Phase) {
        let from = self.phase.kind();
        self.phase = phase;
        if phase.kind() != from {
            let cause = match phase {
                Phase::Draining { cause, .. } | Phase::ForceDisconnect { cause } => Some(cause),
                _ => None,
            };
            self.diag(Diagnostic::PhaseChanged { from, to: phase.kind(), cause });
        }
    }

    /// SIGTERM to every child process not yet signalled; SIGKILL follows on the Kill timer.
    fn terminate_children(&mut self, now: Instant) {
        let pids = self.reaper.escalate(Signal::Term);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            self.outputs.push_back(Output::Signal { pid, signal: Signal::Term });
        }
        if self.timers.get(Timer::Kill).is_none() {
            self.timers.set(Timer::Kill, now + self.config.escalation.kill_after);
        }
    }

    fn drained(&self) -> bool {
        self.children.is_empty() && self.reaper.is_empty() && self.loggers.is_empty()
    }

    /// Drained: resolve what this node still waits for and close the parent stream. The node
    /// then waits (until its grace deadline at most) for the host to write out what is queued on
    /// it; a root, or a node whose deadline has passed, goes straight on to exit.
    fn close(&mut self, now: Instant) {
        let deadline = match self.phase {
            Phase::Draining { deadline, .. } => deadline,
            _ => now,
        };
        for p in self.pending.take_where(|_| true) {
            let e =
                CallError::new(CallErrorKind::ShuttingDown, "broker has exited", self.config.name.clone());
            self.resolve(p.call, Err(e));
        }
        self.timers = TimerTable::default();
        let Some(parent) = self.parent.take() else {
            self.enter(Phase::Closing { stream: None, deadline: now });
            return self.apply(now, Trigger::Flushed, None);
        };
        self.router.remove_stream(parent);
        self.pump(now);
        self.outputs.push_back(Output::Close { stream: parent });
        self.enter(Phase::Closing { stream: Some(parent), deadline });
        if deadline <= now {
            return self.apply(now, Trigger::GraceExpired, None);
        }
        self.timers.set(Timer::Grace, deadline);
    }

    /// The last step.
    fn finish(&mut self) {
        self.timers = TimerTable::default();
        let how = if self.config.is_root() { ExitKind::Clean } else { ExitKind::SigtermSelf };
        self.enter(Phase::Exited { how });
        self.outputs.push_back(Output::Exit { how });
    }

    /// Hands the next queued call to the main thread if it is idle (its queued calls past their
    /// own timeout are dropped, and reported, instead).
    #[inline]
    fn start_next_call(&mut self, now: Instant) {
        if self.dispatcher.may_start() {
            self.start_next_call_now(now);
        }
    }

    fn start_next_call_now(&mut self, now: Instant) {
        let mut expired = Vec::new();
        if let Some(job) = self.dispatcher.start_next(now, &mut expired) {
            self.outputs.push_back(Output::RunCall { job: job.id, caller: job.caller, request: job.request });
        }
        for job in expired {
            self.diag(Diagnostic::CallNotStarted {
                caller: job.caller,
                function: job.request.function,
                cancelled: false,
            });
        }
    }

    /// After every entry point: start the next call, react to a lost parent, finish if drained.
    fn settle(&mut self, now: Instant) {
        self.pump(now);
        if core::mem::take(&mut self.parent_lost) {
            // Everything not reachable below us was reachable only through the parent.
            let (me, router) = (self.config.id, &self.router);
            for p in self.pending.take_where(|t| t != me && router.route(t).is_none()) {
                self.resolve(p.call, Err(disconnected(p.target)));
            }
            self.apply(now, Trigger::ParentLost, None);
        }
        self.start_next_call(now);
        if matches!(self.phase, Phase::Draining { .. } | Phase::ForceDisconnect { .. }) && self.drained() {
            self.apply(now, Trigger::Drained, None);
        }
    }

    // --- helpers ---------------------------------------------------------------------------

    /// Refuses a call once shutdown began; the function's name is looked up only then.
    fn check_can_call<'a>(&self, function: impl FnOnce() -> &'a str) -> Result<(), CallError> {
        if self.phase != Phase::Running {
            let function = function();
            return Err(self.local_error(
                CallErrorKind::ShuttingDown,
                format!("cannot call {function:?}: shutting down"),
            ));
        }
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<(), CallError> {
        if len > self.config.max_message_size as usize {
            return Err(self.local_error(
                CallErrorKind::TooLarge,
                format!(
                    "call of {} bytes exceeds the maximum message size {}",
                    len, self.config.max_message_size
                ),
            ));
        }
        Ok(())
    }

    fn local_error(&self, kind: CallErrorKind, message: impl fmt::Display) -> CallError {
        CallError::new(kind, format!("{message}"), self.config.name.clone())
    }

    fn resolve(&mut self, call: CallId, result: CallResult) {
        self.outputs.push_back(Output::CallReturned { call, result });
    }

    fn diag(&mut self, d: Diagnostic) {
        self.outputs.push_back(Output::Diagnostic(d));
    }

    /// Sends one captured line towards the root as FORWARD_LOG (delivered locally in the root).
    /// Sends a captured line up as FORWARD_LOG: `name \0 level \0 text`, written straight into
    /// the node's body chunks (a busy logger forwards thousands of lines).
    fn forward_line(&mut self, now: Instant, source: LogSource, text: &str) {
        let mut level = [0u8; 10];
        let level = decimal(source.level(), &mut level);
        let body = self.bodies.concat(&[source.name().as_bytes(), b"\0", level, b"\0", text.as_bytes()]);
        self.send(now, Message::new(ContextId::ROOT, self.id(), Handle::FORWARD_LOG, Encoding::Binary, body));
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn disconnected(id: ContextId) -> CallError {
    CallError::new(
        CallErrorKind::Disconnected,
        "the respondent context has disconnected",
        format!("context {id}"),
    )
}

/// Parses `name \0 level \0 text`.
fn parse_log(body: &[u8]) -> Option<(String, u32, String)> {
    let mut parts = body.splitn(3, |b| *b == 0);
    let name = core::str::from_utf8(parts.next()?).ok()?;
    let level = core::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let text = crate::lines::lossy(parts.next()?);
    Some((String::from(name), level, text))
}
