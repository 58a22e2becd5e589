//! The host contract: what every host must do around a [`Node`], written once.
//!
//! A [`Node`] decides everything, but its outputs are not all directly IO: a `Transmit` must
//! wait behind what is queued on its stream, a `Close` of a framed stream must wait until that
//! queue is written (and the node then hears [`Input::Closed`]), a spawn must wait for a block of
//! ids and must not happen once shutdown began, loggers and children's streams must stop being
//! read while the parent stream cannot keep up (see [`Host::may_read`]), a timer is re-armed only
//! when the deadline moves, and after `Exit` the last queued bytes get a bounded time to leave.
//! Every host — the simulator's world and every real runtime — needs exactly this, so it lives
//! here, sans-IO, and the simulator proves it along with the node (docs/embedding.md "The host
//! contract").
//!
//! A [`Host`] turns node outputs into a few primitive requests ([`Io`]: write a stream, shut a
//! write half, close, signal, spawn, exit, re-arm the timer) and takes their completions back
//! ([`Host::wrote`], [`Host::write_failed`], [`Host::opened`], ...). Like the node it reads no
//! clock and touches no fd: `now` is passed in, streams are [`StreamId`]s.

use alloc::collections::{BTreeSet, VecDeque};
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

use crate::call::{CallError, CallId, CallResult, JobId, RequestBody};
use crate::departure::ControlError;
use crate::frame::Frame;
use crate::ids::{ContextId, IdError};
use crate::node::{Input, Node, NodeError, Output, StreamKind};
use crate::reaper::{ExitStatus, Pid, Signal};
use crate::router::StreamId;
use crate::shutdown::{ExitKind, Phase};
use crate::time::Instant;
use crate::vec_map::VecMap;

/// Bytes queued towards the parent above which the host stops reading its own loggers and its
/// children's streams, so a runaway printer anywhere below cannot grow memory without bound (see
/// [`Host::may_read`]).
pub const DEFAULT_PARENT_HIGH_WATER: usize = 8 * 1024 * 1024;

/// Bytes queued towards one child above which the host stops reading that child's stream, so a
/// child that stops reading cannot make its parent queue without bound what its own frames ask
/// for (dead replies to junk, answers to its calls): see [`Host::may_read`].
pub const DEFAULT_CHILD_HIGH_WATER: usize = 8 * 1024 * 1024;

/// After `Exit`, how long bytes still queued on closing streams may take to leave before the
/// process ends regardless.
pub const DEFAULT_FINAL_FLUSH: Duration = Duration::from_secs(1);

/// How a host is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// See [`DEFAULT_PARENT_HIGH_WATER`].
    pub parent_high_water: usize,
    /// See [`DEFAULT_CHILD_HIGH_WATER`].
    pub child_high_water: usize,
    /// See [`DEFAULT_FINAL_FLUSH`].
    pub final_flush: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            parent_high_water: DEFAULT_PARENT_HIGH_WATER,
            child_high_water: DEFAULT_CHILD_HIGH_WATER,
            final_flush: DEFAULT_FINAL_FLUSH,
        }
    }
}

/// The host's name for one spawn request, from [`Host::request_spawn`] to its [`Io::Spawn`] or
/// [`Action::SpawnRefused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpawnTicket(pub u64);

/// Why a spawn was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnRefused {
    /// The context began shutting down before the spawn could be carried out (a spawn waiting
    /// for a block of ids included): a child started now would outlive its parent's shutdown.
    ShuttingDown,
    /// The root has handed out every context id.
    IdsExhausted,
}

impl fmt::Display for SpawnRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnRefused::ShuttingDown => f.write_str("the context is shutting down"),
            SpawnRefused::IdsExhausted => f.write_str("context ids exhausted"),
        }
    }
}

impl core::error::Error for SpawnRefused {}

/// A primitive request: the only IO a runtime carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// The stream's write queue stopped being empty: write from [`Host::write_queue`] and report
    /// with [`Host::wrote`] (or [`Host::write_failed`]) until it is empty again.
    Write {
        /// The framed stream.
        stream: StreamId,
    },
    /// `shutdown(SHUT_WR)` this logger's write half (every holder of a copy gets EPIPE); keep
    /// reading its read end to EOF.
    ShutdownWrite {
        /// The logger stream.
        stream: StreamId,
    },
    /// Close the stream's fd now: everything queued on it was written (or could not be).
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
    /// Start a child context with this id now, then report its stream with [`Host::opened`]
    /// (kind [`StreamKind::Child`]), or [`Host::spawn_failed`].
    Spawn {
        /// The request this carries out.
        ticket: SpawnTicket,
        /// The child's context id.
        id: ContextId,
    },
    /// The deadline moved: wake at this instant and call [`Host::handle_timeout`] (`None`:
    /// nothing is due).
    Timer(Option<Instant>),
    /// End the process as told. Nothing follows.
    Exit {
        /// How.
        how: ExitKind,
    },
}

/// What a host tells its runtime, drained with [`Host::poll_action`] after every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Every output of the node, in order, as the node gave it, after the host took its part.
    /// The IO ones (`Transmit`, `ShutdownWrite`, `Close`, `Signal`, `IdsAvailable`, `Exit`) need
    /// nothing more: their primitives follow as [`Action::Io`]. The others (`RunCall`,
    /// `CallsClosed`, `CallReturned`, `LogLine`, `Diagnostic`) are for the runtime's API.
    Output(Output),
    /// Carry this out.
    Io(Io),
    /// A spawn request will not be carried out.
    SpawnRefused {
        /// The request.
        ticket: SpawnTicket,
        /// Why.
        reason: SpawnRefused,
    },
    /// Logger streams and child streams stopped (`paused`) or resumed being read: the bytes
    /// queued towards the parent crossed [`HostConfig::parent_high_water`]. Ask
    /// [`Host::may_read`]; once `paused` is false, read those streams again (they may have
    /// become readable meanwhile). The parent stream is never paused.
    Backpressure {
        /// Whether loggers and child streams are now left unread.
        paused: bool,
        /// Bytes queued on the parent stream at that moment.
        parent_queued: usize,
    },
    /// One child's stream stopped (`held`) or resumed being read: the bytes queued towards that
    /// child crossed [`HostConfig::child_high_water`]. Ask [`Host::may_read`]; once `held` is
    /// false, read the stream again (it may have become readable meanwhile).
    ChildHeld {
        /// The child's framed stream.
        stream: StreamId,
        /// Whether it is now left unread.
        held: bool,
        /// Bytes queued towards the child at that moment.
        queued: usize,
    },
}

/// Where a write queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    Open,
    /// The node closed the stream: close it once the queue is written.
    Closing,
}

/// A framed stream's bytes not yet written, frame by frame (header and body kept apart, for
/// vectored writes and zero-copy bodies).
#[derive(Debug, Default)]
pub struct WriteQueue {
    frames: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    done: usize,
    queued: usize,
}

/// One contiguous piece of a write queue.
#[derive(Clone, Copy, Debug)]
pub enum Segment<'a> {
    /// (Part of) a frame header.
    Header(&'a [u8]),
    /// A frame body from this offset on.
    Body(&'a Bytes, usize),
}

impl<'a> Segment<'a> {
    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &'a [u8] {
        match *self {
            Segment::Header(h) => h,
            Segment::Body(b, from) => &b[from..],
        }
    }
}

/// The segments of a [`WriteQueue`], in order ([`WriteQueue::segments`]): each frame's header
/// (what is left of it), then its body, with empty ones left out. A state machine of its own
/// rather than a chain of iterator adapters: every write of every host walks it.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    frames: alloc::collections::vec_deque::Iter<'a, Frame>,
    /// The body of the frame whose header was handed out last, and where it starts.
    body: Option<(&'a Bytes, usize)>,
    /// Bytes of the next frame already written (the first frame's only).
    skip: usize,
    /// Segments still to hand out.
    left: usize,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    #[inline]
    fn next(&mut self) -> Option<Segment<'a>> {
        while self.left > 0 {
            if let Some((body, from)) = self.body.take() {
                if from < body.len() {
                    self.left -= 1;
                    return Some(Segment::Body(body, from));
                }
                continue;
            }
            let frame = self.frames.next()?;
            let skip = core::mem::take(&mut self.skip);
            let header = frame.header();
            match header.get(skip..).filter(|rest| !rest.is_empty()) {
                Some(rest) => {
                    self.body = Some((frame.body(), 0));
                    self.left -= 1;
                    return Some(Segment::Header(rest));
                }
                None => self.body = Some((frame.body(), skip - header.len())),
            }
        }
        None
    }
}

impl WriteQueue {
    /// Bytes queued and not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The queued bytes in order, as at most `max` non-empty segments.
    #[inline]
    pub fn segments(&self, max: usize) -> Segments<'_> {
        Segments { frames: self.frames.iter(), body: None, skip: self.done, left: max }
    }

    fn push(&mut self, frame: Frame) {
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    /// Drops the first `n` bytes (written).
    fn consume(&mut self, mut n: usize) {
        n = n.min(self.queued);
        self.queued -= n;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.done;
            if n < left {
                self.done += n;
                return;
            }
            n -= left;
            self.done = 0;
            self.frames.pop_front();
        }
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.done = 0;
        self.queued = 0;
    }
}

#[derive(Debug)]
struct Framed {
    queue: WriteQueue,
    state: WriteState,
    /// A child's stream left unread while its queue is above the child high-water mark.
    held: bool,
}

/// Where the host is once the node has said `Exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Running,
    /// The node exited; closing streams are flushing until `until` at the latest.
    Flushing {
        how: ExitKind,
        until: Instant,
    },
    /// `Io::Exit` was handed out.
    Done,
}

/// The host contract around one [`Node`].
#[derive(Debug)]
pub struct Host {
    node: Node,
    config: HostConfig,
    framed: VecMap<StreamId, Framed>,
    loggers: BTreeSet<StreamId>,
    parent: Option<StreamId>,
    /// The parent stream's queued bytes, kept in step with its queue at every change: it is
    /// read after every input (the backpressure mark), by hosts as often.
    parent_queued: usize,
    actions: VecDeque<Action>,
    next_ticket: u64,
    /// Spawns waiting for a block of ids, in the order they were asked for.
    waiting: VecDeque<SpawnTicket>,
    /// Spawns handed out with `Io::Spawn` and not yet opened or failed.
    spawning: BTreeSet<SpawnTicket>,
    paused: bool,
    /// Child streams held ([`Action::ChildHeld`]): while none is, reading asks nothing more.
    held: usize,
    armed: Option<Instant>,
    ending: Ending,
}

impl Host {
    /// A host around `node`.
    pub fn new(node: Node, config: HostConfig) -> Host {
        Host {
            node,
            config,
            framed: VecMap::new(),
            loggers: BTreeSet::new(),
            parent: None,
            parent_queued: 0,
            actions: VecDeque::new(),
            next_ticket: 0,
            waiting: VecDeque::new(),
            spawning: BTreeSet::new(),
            paused: false,
            held: 0,
            armed: None,
            ending: Ending::Running,
        }
    }

    /// The node (read-only).
    #[inline]
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The next action, if any. Drain completely after every call.
    #[must_use]
    #[inline]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest instant at which [`Host::handle_timeout`] has work (also announced, when it
    /// moves, as [`Io::Timer`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.ending {
            Ending::Running => self.node.poll_timeout(),
            Ending::Flushing { until, .. } => Some(until),
            Ending::Done => None,
        }
    }

    /// Whether `Io::Exit` was handed out: the host takes nothing more.
    pub fn is_done(&self) -> bool {
        self.ending == Ending::Done
    }

    /// The stream's write queue, to write from.
    #[inline]
    pub fn write_queue(&self, stream: StreamId) -> Option<&WriteQueue> {
        self.framed.get(&stream).map(|f| &f.queue)
    }

    /// Bytes queued on the parent stream.
    #[inline]
    pub fn parent_queued(&self) -> usize {
        debug_assert_eq!(
            self.parent_queued,
            self.parent.and_then(|p| self.framed.get(&p)).map_or(0, |f| f.queue.len())
        );
        self.parent_queued
    }

    /// Whether the runtime should read `stream` now. While more than
    /// [`HostConfig::parent_high_water`] bytes are queued on the parent stream, the context's
    /// loggers and its children's framed streams are left unread: their writers then block,
    /// which is the point. Everything a middle context reads from below may have to go up
    /// (FORWARD_LOG frames above all), so reading its children on would only move the runaway
    /// queue from a child's socket into this context's memory.
    ///
    /// The parent stream is always readable: a paused context must still hear SHUTDOWN and the
    /// answers from above.
    ///
    /// This passes backpressure down the tree without a deadlock. A paused context stops reading
    /// a child; the child's writes then block, its own parent queue grows past the mark, and it
    /// pauses its loggers and children in turn, and so on down. A pause waits only for the
    /// parent to read, never for anything below: each context reads its parent stream always,
    /// so what goes down always drains, and what goes up drains once the parent is not paused
    /// itself. The root has no parent and never pauses, so every chain of pauses ends at a
    /// context whose parent reads.
    ///
    /// A child's stream is also left unread while more than [`HostConfig::child_high_water`]
    /// bytes are queued towards that child ([`Action::ChildHeld`]). What a child sends may make
    /// its parent queue bytes for it — answers to its calls, a dead reply to every frame it
    /// should not have sent — so a child that stops reading (frozen, or hostile) would otherwise
    /// grow its parent's memory at its own pace. Held, it only fills its own socket. This
    /// cannot deadlock either: the child reads its parent stream always, so the queue drains
    /// while the child lives, and the hold ends.
    #[inline]
    pub fn may_read(&self, stream: StreamId) -> bool {
        let held = self.held > 0 && self.framed.get(&stream).is_some_and(|f| f.held);
        !held && !(self.paused && (self.loggers.contains(&stream) || self.is_child(stream)))
    }

    /// Whether `stream` is a child's framed stream (registered as [`StreamKind::Child`] and not
    /// closed yet).
    fn is_child(&self, stream: StreamId) -> bool {
        self.parent != Some(stream) && self.framed.contains_key(&stream)
    }

    /// Whether loggers and child streams are paused (see [`Action::Backpressure`]).
    pub fn paused(&self) -> bool {
        self.paused
    }

    // --- completions and events from the runtime -------------------------------------------

    /// A stream is ready: the parent stream, a logger, or the stream of a child spawned for
    /// `ticket` (pass it so the spawn is known to be carried out).
    pub fn opened(
        &mut self,
        now: Instant,
        stream: StreamId,
        kind: StreamKind,
        ticket: Option<SpawnTicket>,
    ) -> Result<(), NodeError> {
        if let Some(t) = ticket {
            self.spawning.remove(&t);
        }
        if self.ending != Ending::Running {
            self.actions.push_back(Action::Io(Io::Close { stream }));
            return Ok(());
        }
        // The node judges first: a host mistake (a stream registered twice, a child id already
        // routed) must leave what is registered as it was, the live stream's queue included.
        let (logger, parent) = (matches!(kind, StreamKind::Logger { .. }), kind == StreamKind::Parent);
        let r = self.node.handle_input(now, Input::StreamOpened { stream, kind });
        if r.is_ok() {
            if logger {
                self.loggers.insert(stream);
            } else {
                if parent {
                    self.parent = Some(stream);
                }
                let open = Framed { queue: WriteQueue::default(), state: WriteState::Open, held: false };
                self.framed.insert(stream, open);
                if self.parent == Some(stream) {
                    // A new parent stream, or a new queue under the parent's id (a host reusing
                    // a closing parent stream's id): nothing is queued on it.
                    self.parent_queued = 0;
                }
            }
        }
        self.settle(now);
        r
    }

    /// A spawn handed out with [`Io::Spawn`] could not be carried out (the runtime tells its
    /// own caller why).
    pub fn spawn_failed(&mut self, now: Instant, ticket: SpawnTicket) {
        self.spawning.remove(&ticket);
        self.settle(now);
    }

    /// Bytes were read from a stream.
    pub fn received(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        self.input(now, Input::Received { stream, bytes });
    }

    /// A read returned 0: the peer sends nothing more.
    pub fn eof(&mut self, now: Instant, stream: StreamId) {
        self.input(now, Input::Eof { stream });
    }

    /// Reading the stream failed (treated as EOF).
    pub fn read_failed(&mut self, now: Instant, stream: StreamId) {
        self.input(now, Input::StreamClosed { stream });
    }

    /// `n` bytes from the front of the stream's write queue were written.
    pub fn wrote(&mut self, now: Instant, stream: StreamId, n: usize) {
        let Some(f) = self.framed.get_mut(&stream) else { return };
        f.queue.consume(n);
        let queued = f.queue.len();
        if self.parent == Some(stream) {
            self.parent_queued = queued;
        }
        // Released at half the mark, so a queue hovering at it does not flap.
        let released = f.held && queued <= self.config.child_high_water / 2;
        f.held &= !released;
        let closed = f.queue.is_empty() && f.state == WriteState::Closing;
        if released {
            self.held -= 1;
            self.actions.push_back(Action::ChildHeld { stream, held: false, queued });
        }
        if closed {
            self.finish_close(now, stream);
            self.settle(now);
        } else {
            // The node heard nothing, so it has no output and its deadline has not moved: only
            // what a shorter queue changes is left to settle.
            self.settle_queues();
        }
    }

    /// Writing the stream failed (EPIPE and the like): what is queued is lost.
    ///
    /// The node is not told: the peer is gone, but what it wrote before it went may still wait
    /// in the socket (a child's last log lines, its DEL_ROUTEs), and the read side reaches it,
    /// then EOF ([`Host::eof`]) or a read error ([`Host::read_failed`]), which end the stream.
    /// Ending it here would drop those bytes unread.
    pub fn write_failed(&mut self, now: Instant, stream: StreamId) {
        let Some(f) = self.framed.get_mut(&stream) else { return };
        f.queue.clear();
        if self.parent == Some(stream) {
            self.parent_queued = 0;
        }
        // Nothing is queued for it any more: a held child stream is read again, so its last
        // bytes and its EOF are seen.
        if core::mem::take(&mut f.held) {
            self.held -= 1;
            self.actions.push_back(Action::ChildHeld { stream, held: false, queued: 0 });
        }
        let Some(f) = self.framed.get(&stream) else { return };
        if f.state == WriteState::Closing {
            self.finish_close(now, stream);
        }
        self.settle(now);
    }

    /// A child process was reaped.
    pub fn child_exited(&mut self, now: Instant, pid: Pid, status: ExitStatus) {
        self.input(now, Input::ChildExited { pid, status });
    }

    /// The main thread finished a call handed out with `Output::RunCall`.
    pub fn call_finished(&mut self, now: Instant, job: JobId, result: CallResult) {
        self.input(now, Input::CallFinished { job, result });
    }

    /// Fires what is due at `now`: the node's timers, or the end of the final flush.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.ending {
            Ending::Running if self.node.poll_timeout().is_some_and(|t| t <= now) => {
                self.node.handle_timeout(now);
            }
            Ending::Flushing { how, until } if until <= now => self.exit(how),
            _ => {}
        }
        self.settle(now);
    }

    // --- the API ---------------------------------------------------------------------------

    /// Asks for a child context to be spawned. The answer comes as [`Io::Spawn`] with its id
    /// (perhaps after a block of ids arrived from the root) or [`Action::SpawnRefused`].
    pub fn request_spawn(&mut self, now: Instant) -> SpawnTicket {
        let ticket = SpawnTicket(self.next_ticket);
        self.next_ticket += 1;
        self.waiting.push_back(ticket);
        self.settle(now);
        ticket
    }

    /// See [`Node::call`].
    pub fn call(
        &mut self,
        now: Instant,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<CallId, CallError> {
        let r = self.node.call(now, target, function, args);
        self.settle(now);
        r
    }

    /// See [`Node::call_body`].
    pub fn call_body(
        &mut self,
        now: Instant,
        target: ContextId,
        body: RequestBody,
    ) -> Result<CallId, CallError> {
        let r = self.node.call_body(now, target, body);
        self.settle(now);
        r
    }

    /// See [`Node::shutdown_child`].
    pub fn shutdown_child(&mut self, now: Instant, id: ContextId) -> Result<(), ControlError> {
        let r = self.node.shutdown_child(now, id);
        self.settle(now);
        r
    }

    /// See [`Node::kill_child`].
    pub fn kill_child(&mut self, now: Instant, id: ContextId) -> Result<(), ControlError> {
        let r = self.node.kill_child(now, id);
        self.settle(now);
        r
    }

    /// See [`Node::cancel_call`].
    pub fn cancel_call(&mut self, now: Instant, call: CallId) {
        self.node.cancel_call(now, call);
        self.settle(now);
    }

    /// See [`Node::call_no_reply`].
    pub fn call_no_reply(
        &mut self,
        now: Instant,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        let r = self.node.call_no_reply(now, target, function, args);
        self.settle(now);
        r
    }

    /// See [`Node::call_no_reply_body`].
    pub fn call_no_reply_body(
        &mut self,
        now: Instant,
        target: ContextId,
        body: RequestBody,
    ) -> Result<(), CallError> {
        let r = self.node.call_no_reply_body(now, target, body);
        self.settle(now);
        r
    }

    /// See [`Node::shutdown`].
    pub fn shutdown(&mut self, now: Instant) {
        self.node.shutdown(now);
        self.settle(now);
    }

    /// See [`Node::force_shutdown`].
    pub fn force_shutdown(&mut self, now: Instant) {
        self.node.force_shutdown(now);
        self.settle(now);
    }

    /// Feeds a raw input to the node (forged frames in tests; everything else has a method).
    pub fn inject(&mut self, now: Instant, input: Input<'_>) -> Result<(), NodeError> {
        let r = self.node_input(now, input);
        self.settle(now);
        r
    }

    // --- inside ----------------------------------------------------------------------------

    fn input(&mut self, now: Instant, input: Input<'_>) {
        // Every input reaching here names a stream the host registered, or none: the node
        // reports nothing but `StreamExists` for host mistakes, and that only from `opened`.
        let _ = self.node_input(now, input);
        self.settle(now);
    }

    fn node_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), NodeError> {
        if self.ending != Ending::Running {
            return Ok(());
        }
        self.node.handle_input(now, input)
    }

    fn finish_close(&mut self, now: Instant, stream: StreamId) {
        if self.framed.remove(&stream).is_some_and(|f| f.held) {
            self.held -= 1;
        }
        if self.parent == Some(stream) {
            self.parent = None;
            self.parent_queued = 0;
        }
        self.actions.push_back(Action::Io(Io::Close { stream }));
        let _ = self.node_input(now, Input::Closed { stream });
    }

    /// Takes every node output, carries out the host's part, hands out spawns, checks the
    /// backpressure mark and the deadline. Called at the end of every entry point.
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.node.poll_output() {
                self.take(now, out);
            }
            let progressed = self.start_spawns(now);
            let mut more = false;
            while let Some(out) = self.node.poll_output() {
                more = true;
                self.take(now, out);
            }
            if !progressed && !more {
                break;
            }
        }
        self.settle_queues();
        let t = self.poll_timeout();
        if t != self.armed && self.ending != Ending::Done {
            self.armed = t;
            self.actions.push_back(Action::Io(Io::Timer(t)));
        }
    }

    /// What the queues' lengths decide: the backpressure mark, and the exit once the final
    /// flush is done. The pause is settled before the exit: nothing may follow `Io::Exit`, and
    /// a pause ends (if it has not already) when the node exits.
    fn settle_queues(&mut self) {
        let queued = self.parent_queued();
        let paused = queued > self.config.parent_high_water && self.ending == Ending::Running;
        if paused != self.paused {
            self.paused = paused;
            self.actions.push_back(Action::Backpressure { paused, parent_queued: queued });
        }
        if let Ending::Flushing { how, .. } = self.ending {
            if self.framed.values().all(|f| f.queue.is_empty()) {
                self.exit(how);
            }
        }
    }

    /// Hands out waiting spawns while the node is running; refuses them all once it is not.
    /// Returns whether the node may have new outputs (an id was taken, or ALLOCATE_ID sent).
    fn start_spawns(&mut self, now: Instant) -> bool {
        if self.waiting.is_empty() {
            return false;
        }
        if self.node.phase() != Phase::Running || self.ending != Ending::Running {
            for ticket in core::mem::take(&mut self.waiting) {
                self.actions.push_back(Action::SpawnRefused { ticket, reason: SpawnRefused::ShuttingDown });
            }
            return false;
        }
        let mut progressed = false;
        while let Some(&ticket) = self.waiting.front() {
            match self.node.allocate_id(now) {
                Ok(id) => {
                    self.waiting.pop_front();
                    self.spawning.insert(ticket);
                    self.actions.push_back(Action::Io(Io::Spawn { ticket, id }));
                    progressed = true;
                }
                // ALLOCATE_ID is on its way (sent once; its output is taken by the caller's
                // loop); `IdsAvailable` brings us back here.
                Err(IdError::NeedBlock) => return progressed,
                Err(IdError::Exhausted) => {
                    self.waiting.pop_front();
                    self.actions
                        .push_back(Action::SpawnRefused { ticket, reason: SpawnRefused::IdsExhausted });
                }
            }
        }
        progressed
    }

    fn take(&mut self, now: Instant, out: Output) {
        let io = match &out {
            Output::Transmit { stream, frame } => match self.framed.get_mut(stream) {
                Some(f) if f.state == WriteState::Open => {
                    let was_empty = f.queue.is_empty();
                    f.queue.push(frame.clone());
                    let queued = f.queue.len();
                    if self.parent == Some(*stream) {
                        self.parent_queued = queued;
                    }
                    if !f.held && queued > self.config.child_high_water && self.parent != Some(*stream) {
                        f.held = true;
                        self.held += 1;
                        self.actions.push_back(Action::ChildHeld { stream: *stream, held: true, queued });
                    }
                    was_empty.then_some(Io::Write { stream: *stream })
                }
                _ => None,
            },
            Output::ShutdownWrite { stream } => Some(Io::ShutdownWrite { stream: *stream }),
            Output::Close { stream } => {
                if self.loggers.remove(stream) {
                    Some(Io::Close { stream: *stream })
                } else {
                    match self.framed.get_mut(stream) {
                        Some(f) if f.queue.is_empty() => {
                            let s = *stream;
                            self.actions.push_back(Action::Output(out));
                            self.finish_close(now, s);
                            return;
                        }
                        Some(f) => {
                            f.state = WriteState::Closing;
                            None
                        }
                        None => None,
                    }
                }
            }
            Output::Signal { pid, signal } => Some(Io::Signal { pid: *pid, signal: *signal }),
            Output::Exit { how } => {
                let how = *how;
                self.actions.push_back(Action::Output(out));
                // Streams still open are closed by the process's end; their queues (and the
                // closing ones') get the final flush bound.
                for f in self.framed.values_mut() {
                    f.state = WriteState::Closing;
                }
                self.ending = Ending::Flushing { how, until: now + self.config.final_flush };
                for ticket in core::mem::take(&mut self.waiting) {
                    self.actions
                        .push_back(Action::SpawnRefused { ticket, reason: SpawnRefused::ShuttingDown });
                }
                return;
            }
            Output::IdsAvailable
            | Output::RunCall { .. }
            | Output::CancelCall { .. }
            | Output::Departed(_)
            | Output::CallsClosed
            | Output::CallReturned { .. }
            | Output::LogLine(_)
            | Output::Diagnostic(_) => None,
        };
        self.actions.push_back(Action::Output(out));
        if let Some(io) = io {
            self.actions.push_back(Action::Io(io));
        }
    }

    fn exit(&mut self, how: ExitKind) {
        self.ending = Ending::Done;
        self.armed = None;
        self.actions.push_back(Action::Io(Io::Exit { how }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Encoding, Message};
    use crate::handle::Handle;
    use crate::lines::LogSource;
    use crate::node::NodeConfig;
    use alloc::vec;
    use alloc::vec::Vec;

    const PARENT: StreamId = StreamId(0);
    const LOGGER: StreamId = StreamId(1);

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn child_host(config: HostConfig) -> Host {
        let node = Node::new(NodeConfig::child(ContextId(1), vec![ContextId::ROOT]));
        let mut host = Host::new(node, config);
        host.opened(t(0), PARENT, StreamKind::Parent, None).unwrap();
        host.opened(t(0), LOGGER, StreamKind::Logger { source: LogSource::Stdout }, None).unwrap();
        drain(&mut host);
        host
    }

    fn drain(host: &mut Host) -> Vec<Action> {
        core::iter::from_fn(|| host.poll_action()).collect()
    }

    fn ios(actions: &[Action]) -> Vec<Io> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Io(io) => Some(io.clone()),
                _ => None,
            })
            .collect()
    }

    fn shutdown_frame() -> Vec<u8> {
        Message::new(ContextId(1), ContextId::ROOT, Handle::SHUTDOWN, Encoding::Binary, "")
            .to_frame()
            .to_vec()
    }

    #[test]
    fn a_write_is_requested_once_per_empty_to_queued_and_segments_survive_partial_writes() {
        let mut host = child_host(HostConfig::default());
        host.received(t(1), LOGGER, b"one\ntwo\n");
        let acts = drain(&mut host);
        assert_eq!(ios(&acts).iter().filter(|io| matches!(io, Io::Write { .. })).count(), 1);
        let q = host.write_queue(PARENT).unwrap();
        let all: Vec<u8> = q.segments(usize::MAX).flat_map(|s| s.as_slice().to_vec()).collect();
        assert_eq!(all.len(), q.len());
        // Write it out a byte at a time: the segments always continue where the last write ended.
        let mut out = Vec::new();
        loop {
            let byte = host.write_queue(PARENT).unwrap().segments(1).next().map(|s| s.as_slice()[0]);
            let Some(byte) = byte else { break };
            out.push(byte);
            host.wrote(t(1), PARENT, 1);
        }
        assert_eq!(out, all);
        // More lines after the queue emptied ask for a write again.
        host.received(t(2), LOGGER, b"three\n");
        assert!(ios(&drain(&mut host)).contains(&Io::Write { stream: PARENT }));
    }

    #[test]
    fn segments_are_the_unwritten_bytes_in_order_none_of_them_empty_at_most_max() {
        // An empty body (SHUTDOWN's) has no segment; a partly written frame starts mid-header
        // or mid-body, wherever the last write ended.
        let frames: Vec<Frame> = ["", "hello", "", "a body of some length"]
            .iter()
            .map(|body| {
                Message::new(ContextId(1), ContextId::ROOT, Handle::SHUTDOWN, Encoding::Binary, *body)
                    .to_frame()
            })
            .collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for done in 0..=wire.len() {
            let mut q = WriteQueue::default();
            frames.iter().for_each(|f| q.push(f.clone()));
            q.consume(done);
            let all: Vec<Segment<'_>> = q.segments(usize::MAX).collect();
            assert!(all.iter().all(|s| !s.as_slice().is_empty()), "an empty segment after {done}");
            let bytes: Vec<u8> = all.iter().flat_map(|s| s.as_slice().to_vec()).collect();
            assert_eq!(bytes, wire[done..], "after {done} bytes written");
            for max in 0..4 {
                let some: Vec<Segment<'_>> = q.segments(max).collect();
                assert_eq!(some.len(), all.len().min(max));
                assert!(some.iter().zip(&all).all(|(a, b)| a.as_slice() == b.as_slice()));
            }
        }
    }

    #[test]
    fn close_waits_for_the_queue_then_the_node_hears_closed_and_exits() {
        let mut host = child_host(HostConfig::default());
        host.received(t(1), PARENT, &shutdown_frame());
        host.received(t(1), LOGGER, b"last words\n");
        drain(&mut host);
        // The logger reaches EOF after SHUT_WR: the node drains, closes the parent stream.
        host.eof(t(2), LOGGER);
        let acts = drain(&mut host);
        assert!(!ios(&acts).contains(&Io::Close { stream: PARENT }), "not before the queue is written");
        assert!(!ios(&acts).iter().any(|io| matches!(io, Io::Exit { .. })));
        let left = host.write_queue(PARENT).unwrap().len();
        host.wrote(t(3), PARENT, left);
        let acts = ios(&drain(&mut host));
        let close = acts.iter().position(|io| *io == Io::Close { stream: PARENT });
        let exit = acts.iter().position(|io| matches!(io, Io::Exit { how: ExitKind::SigtermSelf }));
        assert!(close.is_some() && exit.is_some() && close < exit, "{acts:?}");
        assert!(host.is_done());
    }

    #[test]
    fn loggers_pause_above_the_parent_high_water_mark_and_resume_below_it() {
        let mut host = child_host(HostConfig { parent_high_water: 64, ..HostConfig::default() });
        assert!(host.may_read(LOGGER));
        host.received(t(1), LOGGER, &[b'x'; 200]);
        host.received(t(1), LOGGER, b"\n");
        let acts = drain(&mut host);
        assert!(acts.iter().any(|a| matches!(a, Action::Backpressure { paused: true, .. })));
        assert!(!host.may_read(LOGGER) && host.may_read(PARENT));
        let left = host.write_queue(PARENT).unwrap().len();
        host.wrote(t(2), PARENT, left);
        let acts = drain(&mut host);
        assert!(acts.iter().any(|a| matches!(a, Action::Backpressure { paused: false, parent_queued: 0 })));
        assert!(host.may_read(LOGGER));
    }

    #[test]
    fn a_paused_context_stops_reading_its_children_but_never_its_parent() {
        // A middle context: parent, logger, and one child (context 2) below it.
        let mut host = child_host(HostConfig { parent_high_water: 64, ..HostConfig::default() });
        let child = StreamId(5);
        let kind = StreamKind::Child { id: ContextId(2), pid: Some(Pid(9)), name: None };
        host.opened(t(0), child, kind, None).unwrap();
        drain(&mut host);
        assert!(host.may_read(PARENT) && host.may_read(LOGGER) && host.may_read(child));
        // The child's long line goes up through us, and the parent link takes nothing for now.
        let text = ["stdout\x0020\x00", &"x".repeat(200)].concat();
        let line = Message::new(ContextId::ROOT, ContextId(2), Handle::FORWARD_LOG, Encoding::Binary, text);
        host.received(t(1), child, &line.to_frame().to_vec());
        let acts = drain(&mut host);
        assert!(acts.iter().any(|a| matches!(a, Action::Backpressure { paused: true, .. })), "{acts:?}");
        assert!(host.parent_queued() > 64);
        // Paused: neither our own output nor our children's is read, so nothing more piles up
        // here; the child's writes block instead, and it pauses in turn.
        assert!(!host.may_read(LOGGER) && !host.may_read(child));
        // The parent stream is read on: SHUTDOWN still gets in, and goes down to the child.
        assert!(host.may_read(PARENT));
        host.received(t(2), PARENT, &shutdown_frame());
        let acts = drain(&mut host);
        assert!(ios(&acts).contains(&Io::Write { stream: child }), "{acts:?}");
        assert!(!host.may_read(child), "still paused while the parent queue is full");
        // Once the parent takes the queue, the child is read again (and so is the logger).
        let left = host.write_queue(PARENT).unwrap().len();
        host.wrote(t(3), PARENT, left);
        let acts = drain(&mut host);
        assert!(acts.iter().any(|a| matches!(a, Action::Backpressure { paused: false, .. })), "{acts:?}");
        assert!(host.may_read(child) && host.may_read(LOGGER) && host.may_read(PARENT));
    }

    /// A root with child context 1 on stream 5, its child high-water mark `mark`.
    fn root_with_child(mark: usize) -> (Host, StreamId) {
        let config = HostConfig { child_high_water: mark, ..HostConfig::default() };
        let mut host = Host::new(Node::new(NodeConfig::root()), config);
        let child = StreamId(5);
        host.opened(t(0), child, StreamKind::Child { id: ContextId(1), pid: None, name: None }, None)
            .unwrap();
        drain(&mut host);
        (host, child)
    }

    /// A frame from child 1 that earns it a dead reply: for a context no route leads to, with an
    /// answer wanted.
    fn junk_asking_for_answers() -> Vec<u8> {
        Message::new(ContextId(77), ContextId(1), Handle(1000), Encoding::Binary, "")
            .with_reply_to(Handle(1000))
            .to_frame()
            .to_vec()
    }

    /// A child that stops reading cannot make its parent queue, without bound, what its own
    /// frames ask for. Here every frame it sends earns a dead reply (a message for a context no
    /// route leads to, an answer wanted): past the child high-water mark its stream is held
    /// (`ChildHeld`), so the queue stops at the mark and one read's worth of replies; once the
    /// child reads what waits for it, its stream is read again.
    #[test]
    fn a_child_that_stops_reading_is_left_unread_while_its_queue_is_above_the_mark() {
        let (mut host, child) = root_with_child(1024);
        let read = junk_asking_for_answers().repeat(16);
        let mut reads = 0;
        while host.may_read(child) && reads < 1000 {
            host.received(t(1), child, &read);
            reads += 1;
        }
        let acts = drain(&mut host);
        assert!(reads < 1000, "never held: {} bytes queued", host.write_queue(child).unwrap().len());
        let held: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::ChildHeld { .. })).collect();
        assert!(
            matches!(held[..], [Action::ChildHeld { stream, held: true, .. }] if *stream == child),
            "{held:?}"
        );
        let queued = host.write_queue(child).unwrap().len();
        let per_read = queued / reads; // the replies one read earns
        assert!(queued > 1024 && queued <= 1024 + per_read, "{queued} bytes queued after {reads} reads");

        // Half the mark is not enough to let it go (no flapping at the mark)...
        host.wrote(t(2), child, queued - 1024);
        assert!(!host.may_read(child), "{} bytes left", host.write_queue(child).unwrap().len());
        // ...but the child reading everything is: its stream is read again.
        let queued = host.write_queue(child).unwrap().len();
        host.wrote(t(2), child, queued);
        let acts = drain(&mut host);
        assert!(
            acts.iter().any(
                |a| matches!(a, Action::ChildHeld { stream, held: false, queued: 0 } if *stream == child)
            ),
            "{acts:?}"
        );
        assert!(host.may_read(child));
    }

    /// A stream registered twice is the host's mistake, refused without touching the live one:
    /// what is queued on it stays queued (the second registration overwrote its queue, then
    /// removed it on the node's refusal, and later frames for it were dropped).
    #[test]
    fn registering_a_live_stream_again_is_refused_and_leaves_it_as_it_was() {
        let mut host = child_host(HostConfig::default());
        host.received(t(1), PARENT, &shutdown_frame());
        drain(&mut host);
        let queued = host.write_queue(PARENT).map(|q| q.len());
        assert!(host.opened(t(2), PARENT, StreamKind::Parent, None).is_err());
        assert_eq!(host.write_queue(PARENT).map(|q| q.len()), queued);
        assert!(host.opened(t(2), LOGGER, StreamKind::Logger { source: LogSource::Stderr }, None).is_err());
        assert!(host.may_read(LOGGER));
    }

    /// A held child whose writes then fail (it died with bytes still queued for it) is read
    /// again: its last lines and its EOF are still to be seen, and nothing is queued for it now.
    #[test]
    fn a_held_child_whose_writes_fail_is_read_again() {
        let (mut host, child) = root_with_child(64);
        host.received(t(1), child, &junk_asking_for_answers().repeat(8));
        assert!(!host.may_read(child), "held");
        drain(&mut host);
        host.write_failed(t(2), child);
        let acts = drain(&mut host);
        assert!(acts.iter().any(|a| matches!(a, Action::ChildHeld { held: false, .. })), "{acts:?}");
        assert!(host.may_read(child));
    }

    #[test]
    fn the_root_never_pauses_so_its_children_are_always_read() {
        let mut host = Host::new(
            Node::new(NodeConfig::root()),
            HostConfig { parent_high_water: 0, ..HostConfig::default() },
        );
        let child = StreamId(5);
        host.opened(t(0), child, StreamKind::Child { id: ContextId(1), pid: None, name: None }, None)
            .unwrap();
        drain(&mut host);
        let text = ["stdout\x0020\x00", &"x".repeat(200)].concat();
        let line = Message::new(ContextId::ROOT, ContextId(1), Handle::FORWARD_LOG, Encoding::Binary, text);
        host.received(t(1), child, &line.to_frame().to_vec());
        let acts = drain(&mut host);
        assert!(!acts.iter().any(|a| matches!(a, Action::Backpressure { .. })), "{acts:?}");
        assert!(!host.paused() && host.may_read(child));
    }

    #[test]
    fn a_spawn_waiting_for_ids_is_refused_once_shutdown_begins() {
        let mut host = child_host(HostConfig::default());
        let ticket = host.request_spawn(t(1));
        let acts = drain(&mut host);
        // A child has no ids of its own: it asks the root (a Write on the parent stream).
        assert!(!ios(&acts).iter().any(|io| matches!(io, Io::Spawn { .. })));
        assert!(ios(&acts).contains(&Io::Write { stream: PARENT }));
        host.received(t(2), PARENT, &shutdown_frame());
        let acts = drain(&mut host);
        assert!(acts.contains(&Action::SpawnRefused { ticket, reason: SpawnRefused::ShuttingDown }));
        assert!(!ios(&acts).iter().any(|io| matches!(io, Io::Spawn { .. })));
    }

    #[test]
    fn the_root_spawns_at_once_and_not_after_shutdown() {
        let mut host = Host::new(Node::new(NodeConfig::root()), HostConfig::default());
        let first = host.request_spawn(t(0));
        let acts = drain(&mut host);
        assert!(matches!(ios(&acts)[..], [Io::Spawn { ticket, .. }] if ticket == first), "{acts:?}");
        host.shutdown(t(1));
        drain(&mut host);
        let late = host.request_spawn(t(2));
        let acts = drain(&mut host);
        assert!(acts.contains(&Action::SpawnRefused { ticket: late, reason: SpawnRefused::ShuttingDown }));
    }

    #[test]
    fn a_failed_write_loses_the_queue_but_not_what_the_peer_wrote_before_it_went() {
        let mut host = Host::new(Node::new(NodeConfig::root()), HostConfig::default());
        let child = StreamId(5);
        let kind = StreamKind::Child { id: ContextId(1), pid: Some(Pid(9)), name: None };
        host.opened(t(0), child, kind, None).unwrap();
        drain(&mut host);
        // The child wrote its last line and closed; the root's SHUTDOWN to it meets EPIPE.
        host.shutdown(t(1));
        drain(&mut host);
        host.write_failed(t(1), child);
        assert!(host.write_queue(child).is_some_and(|q| q.is_empty()));
        assert!(!ios(&drain(&mut host)).contains(&Io::Close { stream: child }), "still to be read");
        // The line still in the socket is read, then EOF ends the stream.
        let last = Message::new(
            ContextId::ROOT,
            ContextId(1),
            Handle::FORWARD_LOG,
            Encoding::Binary,
            "stdout\x0020\x00last words",
        );
        host.received(t(2), child, &last.to_frame().to_vec());
        let acts = drain(&mut host);
        assert!(
            acts.iter().any(|a| matches!(a, Action::Output(Output::LogLine(l)) if l.text == "last words")),
            "{acts:?}"
        );
        host.eof(t(2), child);
        assert!(ios(&drain(&mut host)).contains(&Io::Close { stream: child }));
        host.child_exited(t(3), Pid(9), ExitStatus::Code(0));
        assert!(ios(&drain(&mut host)).contains(&Io::Exit { how: ExitKind::Clean }));
    }

    #[test]
    fn the_timer_is_announced_only_when_the_deadline_moves() {
        let mut host = Host::new(Node::new(NodeConfig::root()), HostConfig::default());
        host.opened(
            t(0),
            StreamId(5),
            StreamKind::Child { id: ContextId(1), pid: Some(Pid(9)), name: None },
            None,
        )
        .unwrap();
        drain(&mut host);
        host.shutdown(t(1));
        let timers: Vec<Io> =
            ios(&drain(&mut host)).into_iter().filter(|io| matches!(io, Io::Timer(_))).collect();
        assert_eq!(timers, vec![Io::Timer(host.poll_timeout())]);
        assert!(host.poll_timeout().is_some());
        host.received(t(2), StreamId(5), b""); // nothing changes: no new timer
        assert!(!ios(&drain(&mut host)).iter().any(|io| matches!(io, Io::Timer(_))));
    }

    #[test]
    fn after_exit_queued_bytes_get_the_final_flush_bound_and_no_more() {
        let mut host = Host::new(Node::new(NodeConfig::root()), HostConfig::default());
        let child = StreamId(5);
        host.opened(t(0), child, StreamKind::Child { id: ContextId(1), pid: None, name: None }, None)
            .unwrap();
        drain(&mut host);
        host.shutdown(t(1));
        drain(&mut host);
        assert!(host.write_queue(child).is_some_and(|q| !q.is_empty()), "SHUTDOWN queued for the child");
        // The child goes away without reading; the root drains and exits with bytes still queued.
        host.eof(t(2), child);
        let acts = drain(&mut host);
        if !host.is_done() {
            assert!(!ios(&acts).iter().any(|io| matches!(io, Io::Exit { .. })));
            let until = host.poll_timeout().unwrap();
            host.handle_timeout(until);
            assert!(ios(&drain(&mut host)).contains(&Io::Exit { how: ExitKind::Clean }));
        }
        assert!(host.is_done());
        host.received(t(9), child, b"late");
        assert!(drain(&mut host).is_empty(), "nothing follows Exit");
    }

    #[test]
    fn nothing_follows_exit_not_even_the_end_of_a_pause() {
        // Found by the node fuzzer (fuzz/regressions/node): a paused context whose last queue
        // emptied as it exited announced the pause's end after `Io::Exit`.
        let mut host = child_host(HostConfig { parent_high_water: 64, ..HostConfig::default() });
        host.received(t(1), LOGGER, &[b'x'; 200]);
        host.received(t(1), LOGGER, b"\n");
        host.received(t(1), PARENT, &shutdown_frame());
        host.eof(t(2), LOGGER);
        assert!(host.paused());
        drain(&mut host);
        // The parent goes away with the queue unwritten: the node hears Closed and exits.
        host.write_failed(t(3), PARENT);
        let acts = drain(&mut host);
        assert!(host.is_done());
        assert!(matches!(acts.last(), Some(Action::Io(Io::Exit { .. }))), "{acts:?}");
        assert!(acts.contains(&Action::Backpressure { paused: false, parent_queued: 0 }), "{acts:?}");
    }
}
