//! The world: real `arbor_core::Node`s in modelled processes joined by modelled sockets, driven
//! by one virtual clock and one event queue.
//!
//! Everything that happens is an event at an instant; ties are broken by the order events were
//! scheduled, so a run is a pure function of its [`Plan`]. The clock jumps from one event to the
//! next (no idle ticking). Node outputs never call back into a node: they only change the
//! modelled world and schedule events, which keeps every step small and the order explicit.
//!
//! What is modelled (docs/simulator.md): processes with a pid, a main thread that runs one call
//! at a time for a modelled duration or forever, SIGTERM (default or ignored), SIGKILL,
//! SIGSTOP/SIGCONT and a parent-death signal (SIGKILL); socketpairs with a buffer capacity per
//! direction, latency, partial reads and writes, EOF after SHUT_WR or close; stdout capture
//! sockets whose write end may be held by several processes (a daemon), where SHUT_WR reaches
//! every holder; reaping by the parent.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use arbor_core::call::{CallError, CallId, CallRequest, JobId};
use arbor_core::frame::{Encoding, Message, HEADER_LEN};
use arbor_core::handle::Handle;
use arbor_core::ids::{ContextId, IdError};
use arbor_core::lines::LogSource;
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind, TestMutation};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::ExitKind;
use arbor_core::time::Instant;
use bytes::Bytes;

use crate::plan::{Action, Fault, Mutation, Plan, ProcId};
use crate::rng::Rng;
use crate::trace::{Trace, What};

/// A child's end of its parent stream.
pub const PARENT_STREAM: StreamId = StreamId(0);
/// A child's stdout capture stream (read end).
pub const STDOUT_STREAM: StreamId = StreamId(1);

/// How often a runaway writer writes, and how much.
const RUNAWAY_EVERY: Duration = Duration::from_micros(50);
const RUNAWAY_CHUNK: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The process may read from this stream.
    Read(ProcId, StreamId),
    /// The process's node timer may be due.
    Timer(ProcId),
    /// The process's main thread finishes this call.
    CallDone(ProcId, JobId),
    /// The parent reaps a dead child.
    Reap(ProcId, Pid, i32),
    /// A broken link is noticed by this end.
    Broken(ProcId, StreamId),
    /// Scripted action number.
    Action(usize),
    /// Fault number.
    Fault(usize),
    /// The root begins shutdown.
    RootShutdown,
    /// A runaway writer writes again.
    Runaway(ProcId),
    /// Try the pending spawns again.
    Spawn,
    /// The host finished closing a stream (its queued bytes are written out or lost).
    Closed(ProcId, StreamId),
}

type LinkId = usize;
type LoggerId = usize;

/// A piece of bytes in flight: a frame header kept inline (no allocation per frame), or shared
/// bytes (a body, captured output).
#[derive(Debug, Clone)]
enum Chunk {
    Header { bytes: [u8; HEADER_LEN], start: usize },
    Data(Bytes),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Header { bytes, start } => &bytes[*start..],
            Chunk::Data(b) => b,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Splits off and returns the first `n` bytes.
    fn split_to(&mut self, n: usize) -> Chunk {
        match self {
            Chunk::Header { bytes, start } => {
                // The piece sits right-aligned in its own array, so `as_slice` sees only it.
                let mut piece = [0u8; HEADER_LEN];
                piece[HEADER_LEN - n..].copy_from_slice(&bytes[*start..*start + n]);
                *start += n;
                Chunk::Header { bytes: piece, start: HEADER_LEN - n }
            }
            Chunk::Data(b) => Chunk::Data(b.split_to(n)),
        }
    }

    /// Keeps the first `n` bytes and returns the rest.
    fn split_off(&mut self, n: usize) -> Chunk {
        let head = self.split_to(n);
        std::mem::replace(self, head)
    }
}

#[derive(Debug, Default)]
struct Pipe {
    /// Bytes in the socket, with the instant each chunk becomes readable.
    chunks: VecDeque<(Instant, Chunk)>,
    buffered: usize,
    /// No more bytes will be written: EOF once drained.
    shut: bool,
}

#[derive(Debug)]
struct LinkEnd {
    proc: ProcId,
    stream: StreamId,
    /// The host still uses this end (not closed).
    open: bool,
    /// Closed by the node: flush what is queued, then shut.
    closing: bool,
    /// Bytes the host has queued but the socket has not taken yet.
    out: VecDeque<Chunk>,
    eof_reported: bool,
}

#[derive(Debug)]
struct Link {
    ends: [LinkEnd; 2],
    /// `pipes[i]` carries bytes written at end `i`.
    pipes: [Pipe; 2],
    latency: Duration,
    stalled_until: Instant,
    fragment: bool,
    broken: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Proc(ProcId),
    Daemon(ProcId),
}

#[derive(Debug)]
struct Logger {
    reader: ProcId,
    stream: StreamId,
    pipe: Pipe,
    holders: BTreeSet<Holder>,
    reader_open: bool,
    eof_reported: bool,
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Link(LinkId, usize),
    Logger(LoggerId),
}

#[derive(Debug)]
struct Running {
    job: JobId,
    function: Function,
    args: Bytes,
}

/// The modelled functions a main thread can run.
#[derive(Debug, Clone)]
enum Function {
    /// Returns its arguments at once.
    Echo,
    /// Returns its arguments after `Net::call_time`.
    Work,
    /// Never returns.
    Hang,
    /// Returns a `Failed` error ("boom") at once.
    Fail,
    /// Not registered: answered `UnknownFunction`.
    Unknown(String),
}

/// What the world must do for one node output: the few cheap values carrying it out needs, so
/// the output itself can move into the trace without a copy.
enum Act {
    Transmit(StreamId, arbor_core::frame::Frame),
    ShutdownWrite(StreamId),
    Close(StreamId),
    Signal(Pid, Signal),
    RunCall(JobId, Function, Bytes),
    Returned(CallId),
    IdsAvailable,
    Exit(ExitKind),
    Nothing,
}

impl Act {
    fn of(out: &Output) -> Act {
        match out {
            Output::Transmit { stream, frame } => Act::Transmit(*stream, frame.clone()),
            Output::ShutdownWrite { stream } => Act::ShutdownWrite(*stream),
            Output::Close { stream } => Act::Close(*stream),
            Output::Signal { pid, signal } => Act::Signal(*pid, *signal),
            Output::RunCall { job, request, .. } => {
                let function = match request.function.as_str() {
                    "echo" => Function::Echo,
                    "work" => Function::Work,
                    "hang" => Function::Hang,
                    "fail" => Function::Fail,
                    other => Function::Unknown(other.to_string()),
                };
                Act::RunCall(*job, function, request.args.clone())
            }
            Output::CallReturned { call, .. } => Act::Returned(*call),
            Output::IdsAvailable => Act::IdsAvailable,
            Output::Exit { how } => Act::Exit(*how),
            Output::CallsClosed | Output::LogLine(_) | Output::Diagnostic(_) => Act::Nothing,
        }
    }
}

/// A modelled process.
#[derive(Debug)]
pub struct Process {
    /// Its node.
    pub node: Node,
    /// Its pid.
    pub pid: Pid,
    /// Its parent process.
    pub parent: Option<ProcId>,
    /// Still running.
    pub alive: bool,
    /// Stopped by SIGSTOP.
    pub frozen: bool,
    ignore_sigterm: bool,
    pending_term: bool,
    hang_calls: bool,
    running: Option<Running>,
    timer_at: Option<Instant>,
    streams: BTreeMap<StreamId, Endpoint>,
    next_stream: u32,
    stdout: Option<LoggerId>,
    /// Events that arrived while the process was stopped, replayed when it is thawed.
    deferred: Vec<Ev>,
    printed: u32,
    /// Lines the main thread is blocked writing to stdout (a full socket blocks a print).
    backlog: VecDeque<(Bytes, String)>,
}

/// A chain of sequential calls: the next is sent when the previous answers.
#[derive(Debug)]
struct Chain {
    to: ProcId,
    left: u32,
}

/// Counters for a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed from one node to another (counted when fully written into a socket).
    pub messages: u64,
    /// Events processed.
    pub events: u64,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    /// Virtual time.
    pub now: Instant,
    /// The processes, by plan index.
    pub procs: Vec<Process>,
    /// Everything that happened.
    pub trace: Trace,
    /// Counters.
    pub stats: Stats,
    /// When the root began shutdown, if it has.
    pub shutdown_began: Option<Instant>,
    plan: Plan,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    links: Vec<Link>,
    loggers: Vec<Logger>,
    chains: BTreeMap<(ProcId, CallId), Chain>,
    /// Plan processes not spawned yet, in order (a parent may be waiting for an id block).
    to_spawn: VecDeque<ProcId>,
}

impl World {
    /// A world for `plan`, with its tree spawned at time zero and its script scheduled.
    pub fn new(plan: &Plan) -> World {
        let mut w = World {
            now: Instant::ZERO,
            procs: Vec::new(),
            trace: Trace { events: Vec::with_capacity(4096) },
            stats: Stats::default(),
            shutdown_began: None,
            plan: plan.clone(),
            rng: Rng::new(plan.seed ^ 0x5eed),
            queue: BinaryHeap::new(),
            seq: 0,
            links: Vec::new(),
            loggers: Vec::new(),
            chains: BTreeMap::new(),
            to_spawn: (1..plan.procs()).collect(),
        };
        let mut root = NodeConfig::root();
        root.grace = plan.net.grace;
        w.add_process(root, None);
        w.spawn_pending();
        for (i, (at, _)) in plan.actions.iter().enumerate() {
            w.schedule(Instant::ZERO + *at, Ev::Action(i));
        }
        for (i, (at, _)) in plan.faults.iter().enumerate() {
            w.schedule(Instant::ZERO + *at, Ev::Fault(i));
        }
        w.schedule(Instant::ZERO + plan.shutdown_at, Ev::RootShutdown);
        w
    }

    /// The plan being run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs until nothing is scheduled or virtual time passes `limit`.
    pub fn run_until(&mut self, limit: Instant) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > limit {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else { break };
            self.now = self.now.max(at);
            self.stats.events += 1;
            self.handle(ev);
        }
    }

    /// Whether every process has ended.
    pub fn all_gone(&self) -> bool {
        self.procs.iter().all(|p| !p.alive)
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, ev)));
    }

    fn record(&mut self, proc: ProcId, what: What) {
        self.trace.push(self.now, proc, what);
    }

    // --- processes -----------------------------------------------------------------------

    fn add_process(&mut self, mut config: NodeConfig, parent: Option<ProcId>) -> ProcId {
        config.test_mutation = match self.plan.mutation {
            Mutation::None => TestMutation::None,
            Mutation::ShutdownBeforeChannelClose => TestMutation::ShutdownBeforeChannelClose,
        };
        let p = self.procs.len();
        let id = config.id;
        let pid = Pid(100 + p as u32);
        self.procs.push(Process {
            node: Node::new(config),
            pid,
            parent,
            alive: true,
            frozen: false,
            ignore_sigterm: false,
            pending_term: false,
            hang_calls: false,
            running: None,
            timer_at: None,
            streams: BTreeMap::new(),
            next_stream: 100,
            stdout: None,
            deferred: Vec::new(),
            printed: 0,
            backlog: VecDeque::new(),
        });
        self.record(p, What::Spawned { id, pid });
        p
    }

    /// Spawns plan processes in order until one must wait for its parent's id block (plan
    /// indexes are process indexes, so none may overtake another).
    fn spawn_pending(&mut self) {
        while let Some(&child) = self.to_spawn.front() {
            let parent = self.plan.parent(child).unwrap_or(0);
            if !self.procs[parent].alive {
                // Its parent is gone: it is never born, and neither is anything after it.
                self.to_spawn.clear();
                return;
            }
            let now = self.now;
            match self.procs[parent].node.allocate_id(now) {
                Ok(id) => {
                    self.to_spawn.pop_front();
                    self.spawn(child, parent, id);
                }
                Err(IdError::NeedBlock) => {
                    self.after_step(parent); // sends ALLOCATE_ID; IdsAvailable resumes us
                    return;
                }
                Err(_) => {
                    self.to_spawn.clear();
                    return;
                }
            }
        }
    }

    fn spawn(&mut self, child: ProcId, parent: ProcId, id: ContextId) {
        debug_assert_eq!(self.procs.len(), child, "plan processes are spawned in order");
        let pnode = &self.procs[parent].node;
        let mut ancestors = vec![pnode.id()];
        ancestors.extend_from_slice(&pnode.config().ancestors);
        let mut config = NodeConfig::child(id, ancestors);
        config.grace = self.plan.net.grace;
        let c = self.add_process(config, Some(parent));
        // The parent stream: a socketpair between the parent's new stream and the child's 0.
        self.procs[parent].next_stream += 1;
        let ps = StreamId(self.procs[parent].next_stream);
        let link = self.links.len();
        self.links.push(Link {
            ends: [LinkEnd::new(parent, ps), LinkEnd::new(c, PARENT_STREAM)],
            pipes: [Pipe::default(), Pipe::default()],
            latency: self.plan.net.latency,
            stalled_until: Instant::ZERO,
            fragment: false,
            broken: false,
        });
        self.procs[parent].streams.insert(ps, Endpoint::Link(link, 0));
        self.procs[c].streams.insert(PARENT_STREAM, Endpoint::Link(link, 1));
        // stdout: a capture socket the child itself reads.
        let lg = self.loggers.len();
        self.loggers.push(Logger {
            reader: c,
            stream: STDOUT_STREAM,
            pipe: Pipe::default(),
            holders: BTreeSet::from([Holder::Proc(c)]),
            reader_open: true,
            eof_reported: false,
        });
        self.procs[c].streams.insert(STDOUT_STREAM, Endpoint::Logger(lg));
        self.procs[c].stdout = Some(lg);
        self.input(c, Input::StreamOpened { stream: PARENT_STREAM, kind: StreamKind::Parent });
        self.input(
            c,
            Input::StreamOpened {
                stream: STDOUT_STREAM,
                kind: StreamKind::Logger { source: LogSource::Stdout },
            },
        );
        let pid = self.procs[c].pid;
        self.input(
            parent,
            Input::StreamOpened { stream: ps, kind: StreamKind::Child { id, pid: Some(pid), name: None } },
        );
    }

    /// Feeds one input to a live, running process's node and carries out what follows.
    fn input(&mut self, p: ProcId, input: Input<'_>) {
        if !self.procs[p].alive || self.procs[p].frozen {
            return;
        }
        if let Input::StreamOpened { stream, .. } = &input {
            let s = *stream;
            self.record(p, What::Opened(s));
        }
        let now = self.now;
        // Host misuse is a simulator bug: there is no honest way to go on.
        self.procs[p].node.handle_input(now, input).expect("the simulator registers each stream once");
        self.after_step(p);
    }

    /// Drains a node's outputs, records phase changes and re-arms its timer.
    fn after_step(&mut self, p: ProcId) {
        while let Some(out) = self.procs[p].node.poll_output() {
            // Recorded before it is carried out, so its consequences follow it in the trace.
            let act = Act::of(&out);
            match out {
                Output::Diagnostic(Diagnostic::PhaseChanged { to, cause, .. }) => {
                    self.record(p, What::Phase { to, cause })
                }
                out => self.record(p, What::Out(out)),
            }
            self.carry_out(p, act);
        }
        let t = self.procs[p].node.poll_timeout();
        if t != self.procs[p].timer_at {
            self.procs[p].timer_at = t;
            if let Some(at) = t {
                self.schedule(at, Ev::Timer(p));
            }
        }
    }

    fn carry_out(&mut self, p: ProcId, act: Act) {
        match act {
            Act::Transmit(stream, frame) => {
                if let Some(Endpoint::Link(l, side)) = self.procs[p].streams.get(&stream).copied() {
                    let end = &mut self.links[l].ends[side];
                    if end.open && !end.closing {
                        end.out.push_back(Chunk::Header { bytes: *frame.header(), start: 0 });
                        if !frame.body().is_empty() {
                            end.out.push_back(Chunk::Data(frame.body().clone()));
                        }
                        self.stats.messages += 1;
                        self.flush(l, side);
                    }
                }
            }
            Act::ShutdownWrite(stream) => {
                if let Some(Endpoint::Logger(lg)) = self.procs[p].streams.get(&stream).copied() {
                    self.loggers[lg].pipe.shut = true;
                    self.schedule(self.now, Ev::Read(p, stream));
                }
            }
            Act::Close(stream) => match self.procs[p].streams.get(&stream).copied() {
                Some(Endpoint::Link(l, side)) => {
                    self.links[l].ends[side].closing = true;
                    self.flush(l, side);
                }
                Some(Endpoint::Logger(lg)) => self.loggers[lg].reader_open = false,
                None => {}
            },
            Act::Signal(pid, signal) => {
                if let Some(q) = self.procs.iter().position(|x| x.pid == pid) {
                    self.signal(q, signal);
                }
            }
            Act::RunCall(job, function, args) => {
                let done_at = match function {
                    _ if self.procs[p].hang_calls => None,
                    Function::Hang => None,
                    Function::Work => Some(self.now + self.plan.net.call_time),
                    Function::Echo | Function::Fail | Function::Unknown(_) => Some(self.now),
                };
                self.procs[p].running = Some(Running { job, function, args });
                match done_at {
                    // A call that takes no time returns before the IO side does anything else.
                    Some(at) if at == self.now => self.call_done(p, job),
                    Some(at) => self.schedule(at, Ev::CallDone(p, job)),
                    None => {}
                }
            }
            Act::Returned(call) => {
                if let Some(mut chain) = self.chains.remove(&(p, call)) {
                    if chain.left > 0 {
                        chain.left -= 1;
                        if let Some(next) = self.issue_call(p, chain.to, "echo", true) {
                            self.chains.insert((p, next), chain);
                        }
                    }
                }
            }
            Act::IdsAvailable => self.schedule(self.now, Ev::Spawn),
            Act::Exit(how) => {
                let status = match how {
                    // SIGTERM to self; a process that ignores it exits anyway.
                    ExitKind::SigtermSelf if !self.procs[p].ignore_sigterm => ExitStatus::Signaled(15),
                    ExitKind::SigtermSelf => ExitStatus::Code(1),
                    ExitKind::Clean => ExitStatus::Code(0),
                };
                self.die(p, status);
            }
            Act::Nothing => {}
        }
    }

    fn signal(&mut self, q: ProcId, signal: Signal) {
        if !self.procs[q].alive {
            return;
        }
        self.record(q, What::Signalled(signal));
        match signal {
            Signal::Kill => self.die(q, ExitStatus::Signaled(9)),
            Signal::Term if self.procs[q].ignore_sigterm => {}
            Signal::Term if self.procs[q].frozen => self.procs[q].pending_term = true,
            Signal::Term => self.die(q, ExitStatus::Signaled(15)),
        }
    }

    /// Process `p` ends: the kernel closes its fds, its children get the parent-death signal,
    /// its parent reaps it.
    fn die(&mut self, p: ProcId, status: ExitStatus) {
        if !self.procs[p].alive {
            return;
        }
        self.procs[p].alive = false;
        self.procs[p].running = None;
        self.record(p, What::Died(status));
        let ends: Vec<Endpoint> = self.procs[p].streams.values().copied().collect();
        for e in ends {
            match e {
                Endpoint::Link(l, side) => {
                    let end = &mut self.links[l].ends[side];
                    end.open = false;
                    end.out.clear();
                    self.shut_pipe(l, side);
                }
                Endpoint::Logger(lg) => self.loggers[lg].reader_open = false,
            }
        }
        for lg in 0..self.loggers.len() {
            if self.loggers[lg].holders.remove(&Holder::Proc(p)) && self.loggers[lg].holders.is_empty() {
                self.loggers[lg].pipe.shut = true;
            }
        }
        let orphans: Vec<ProcId> =
            (0..self.procs.len()).filter(|q| self.procs[*q].parent == Some(p)).collect();
        for q in orphans {
            self.die(q, ExitStatus::Signaled(9));
        }
        if let Some(parent) = self.procs[p].parent {
            let code = match status {
                ExitStatus::Code(c) => c,
                ExitStatus::Signaled(s) => -s,
            };
            self.schedule(self.now, Ev::Reap(parent, self.procs[p].pid, code));
        }
    }

    // --- sockets -------------------------------------------------------------------------

    /// Moves queued bytes of link end `side` into its socket, as far as capacity allows.
    fn flush(&mut self, l: LinkId, side: usize) {
        let capacity = self.plan.net.capacity;
        let now = self.now;
        let link = &mut self.links[l];
        if link.broken {
            link.ends[side].out.clear();
            return;
        }
        if !link.ends[1 - side].open {
            // The reader is gone: the write fails (EPIPE) and what was queued is lost.
            link.ends[side].out.clear();
        }
        let ready_at = now + link.latency;
        let peer = (link.ends[1 - side].proc, link.ends[1 - side].stream);
        let pipe = &mut link.pipes[side];
        let end = &mut link.ends[side];
        let mut wrote = false;
        while pipe.buffered < capacity {
            let Some(mut chunk) = end.out.pop_front() else { break };
            let room = capacity - pipe.buffered;
            if chunk.len() > room {
                // A partial write: the rest waits for the reader to make room.
                let rest = chunk.split_off(room);
                end.out.push_front(rest);
            }
            pipe.buffered += chunk.len();
            pipe.chunks.push_back((ready_at, chunk));
            wrote = true;
        }
        let drained = end.out.is_empty();
        let closing = end.closing;
        if wrote {
            self.schedule(ready_at, Ev::Read(peer.0, peer.1));
        }
        if drained && closing && self.links[l].ends[side].open {
            self.links[l].ends[side].open = false;
            self.shut_pipe(l, side);
            let (writer, stream) = (self.links[l].ends[side].proc, self.links[l].ends[side].stream);
            self.schedule(self.now, Ev::Closed(writer, stream));
        }
    }

    /// No more bytes will be written at end `side`: its peer sees EOF once the socket drains.
    fn shut_pipe(&mut self, l: LinkId, side: usize) {
        let link = &mut self.links[l];
        if link.pipes[side].shut {
            return;
        }
        link.pipes[side].shut = true;
        // The end-of-stream travels like data: after the last chunk, and never faster than the
        // link's latency.
        let at = link.pipes[side].chunks.back().map_or(self.now, |(t, _)| *t).max(self.now + link.latency);
        let peer = (link.ends[1 - side].proc, link.ends[1 - side].stream);
        self.schedule(at, Ev::Read(peer.0, peer.1));
    }

    fn read(&mut self, p: ProcId, stream: StreamId) {
        match self.procs[p].streams.get(&stream).copied() {
            Some(Endpoint::Link(l, side)) => self.read_link(p, l, side),
            Some(Endpoint::Logger(lg)) => self.read_logger(p, lg),
            None => {}
        }
    }

    fn read_link(&mut self, p: ProcId, l: LinkId, side: usize) {
        let now = self.now;
        let (stream, open) = (self.links[l].ends[side].stream, self.links[l].ends[side].open);
        if !open || self.links[l].broken {
            return;
        }
        if self.links[l].stalled_until > now {
            let at = self.links[l].stalled_until;
            self.schedule(at, Ev::Read(p, stream));
            return;
        }
        let max =
            if self.links[l].fragment { self.rng.range(1, 64) as usize } else { self.plan.net.read_size };
        let from = 1 - side;
        let mut n = 0;
        while n < max {
            let piece = {
                let pipe = &mut self.links[l].pipes[from];
                let Some((at, chunk)) = pipe.chunks.front_mut() else { break };
                if *at > now {
                    break;
                }
                let take = (max - n).min(chunk.len());
                let piece = if take == chunk.len() {
                    match pipe.chunks.pop_front() {
                        Some((_, c)) => c,
                        None => break,
                    }
                } else {
                    chunk.split_to(take)
                };
                pipe.buffered -= piece.len();
                piece
            };
            n += piece.len();
            self.input(p, Input::Received { stream, bytes: piece.as_slice() });
            if !self.procs[p].alive || self.procs[p].frozen {
                return;
            }
        }
        // The writer may now move more bytes in.
        if n > 0 && !self.links[l].ends[from].out.is_empty() {
            self.flush(l, from);
        }
        let pipe = &self.links[l].pipes[from];
        let next = pipe.chunks.front().map(|(at, _)| *at);
        let at_eof = next.is_none() && pipe.shut && !self.links[l].ends[side].eof_reported;
        match next {
            Some(at) if at <= now => self.schedule(now, Ev::Read(p, stream)),
            Some(_) => {} // a Read is already scheduled for when it becomes readable
            None if at_eof => {
                self.links[l].ends[side].eof_reported = true;
                self.input(p, Input::Eof { stream });
            }
            None => {}
        }
    }

    fn read_logger(&mut self, p: ProcId, lg: LoggerId) {
        let lgr = &mut self.loggers[lg];
        if !lgr.reader_open {
            return;
        }
        let stream = lgr.stream;
        let max = self.plan.net.read_size;
        let mut got = Vec::new();
        let mut n = 0;
        while n < max {
            let Some((_, chunk)) = lgr.pipe.chunks.front_mut() else { break };
            let take = (max - n).min(chunk.len());
            let piece = chunk.split_to(take);
            if chunk.len() == 0 {
                lgr.pipe.chunks.pop_front();
            }
            n += piece.len();
            got.push(piece);
        }
        lgr.pipe.buffered -= n;
        for piece in got {
            self.input(p, Input::Received { stream, bytes: piece.as_slice() });
            if !self.procs[p].alive || self.procs[p].frozen {
                return;
            }
        }
        if n > 0 && !self.procs[p].backlog.is_empty() && !self.procs[p].frozen {
            self.pump_stdout(p);
        }
        let lgr = &mut self.loggers[lg];
        if !lgr.pipe.chunks.is_empty() {
            self.schedule(self.now, Ev::Read(p, stream));
        } else if lgr.pipe.shut && !lgr.eof_reported {
            lgr.eof_reported = true;
            self.input(p, Input::Eof { stream });
        }
    }

    /// `p` writes to its stdout: returns how many bytes the socket took, or `None` for EPIPE.
    fn write_stdout(&mut self, p: ProcId, bytes: &[u8]) -> Option<usize> {
        let lg = self.procs[p].stdout?;
        let capacity = self.plan.net.capacity;
        let lgr = &mut self.loggers[lg];
        if lgr.pipe.shut || !lgr.reader_open {
            return None;
        }
        // An empty socket takes a whole write even past its nominal capacity (a big line is not
        // split by this model); otherwise only what fits.
        let take = if lgr.pipe.buffered == 0 {
            bytes.len()
        } else {
            bytes.len().min(capacity.saturating_sub(lgr.pipe.buffered))
        };
        if take > 0 {
            lgr.pipe.buffered += take;
            lgr.pipe.chunks.push_back((self.now, Chunk::Data(Bytes::copy_from_slice(&bytes[..take]))));
            let reader = lgr.reader;
            self.schedule(self.now, Ev::Read(reader, STDOUT_STREAM));
        }
        Some(take)
    }

    /// Writes the print backlog, a whole line at a time (a line-buffered stdout writing lines
    /// shorter than the socket buffer), as far as the stdout socket has room; a full socket blocks
    /// the printing thread. EPIPE ends the backlog: those lines were never printed.
    fn pump_stdout(&mut self, p: ProcId) {
        let capacity = self.plan.net.capacity;
        while let Some((bytes, _)) = self.procs[p].backlog.front() {
            let Some(lg) = self.procs[p].stdout else { return };
            let lgr = &self.loggers[lg];
            if lgr.pipe.shut || !lgr.reader_open {
                self.procs[p].backlog.clear();
                return;
            }
            if lgr.pipe.buffered > 0 && lgr.pipe.buffered + bytes.len() > capacity {
                return; // blocked until the reader drains
            }
            let bytes = bytes.clone();
            self.write_stdout(p, &bytes);
            if let Some((_, text)) = self.procs[p].backlog.pop_front() {
                self.record(p, What::Printed(text));
            }
        }
    }

    // --- events --------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        if let Ev::Read(p, _) | Ev::Timer(p) | Ev::CallDone(p, _) | Ev::Reap(p, ..) | Ev::Broken(p, _) = ev {
            if !self.procs[p].alive {
                return;
            }
            if self.procs[p].frozen {
                self.procs[p].deferred.push(ev);
                return;
            }
        }
        match ev {
            Ev::Spawn => self.spawn_pending(),
            Ev::Closed(p, stream) => self.input(p, Input::Closed { stream }),
            Ev::Read(p, s) => self.read(p, s),
            Ev::Timer(p) => {
                let due = self.procs[p].node.poll_timeout().is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    self.procs[p].node.handle_timeout(now);
                    self.after_step(p);
                }
            }
            Ev::CallDone(p, job) => self.call_done(p, job),
            Ev::Reap(parent, pid, code) => {
                let status = if code < 0 { ExitStatus::Signaled(-code) } else { ExitStatus::Code(code) };
                self.input(parent, Input::ChildExited { pid, status });
            }
            Ev::Broken(p, stream) => self.input(p, Input::StreamClosed { stream }),
            Ev::Action(i) => self.action(i),
            Ev::Fault(i) => self.scheduled_fault(i),
            Ev::RootShutdown => self.shutdown(0),
            Ev::Runaway(p) => {
                if !self.procs[p].alive {
                    return;
                }
                if !self.procs[p].frozen {
                    let mut chunk = vec![b'r'; RUNAWAY_CHUNK];
                    chunk[RUNAWAY_CHUNK - 1] = b'\n';
                    if self.write_stdout(p, &chunk).is_none() {
                        return; // EPIPE: the runaway writer stops
                    }
                }
                self.schedule(self.now + RUNAWAY_EVERY, Ev::Runaway(p));
            }
        }
    }

    /// The main thread finished `job` (if that is still the one it runs).
    fn call_done(&mut self, p: ProcId, job: JobId) {
        let Some(r) = self.procs[p].running.take_if(|r| r.job == job) else { return };
        let result = match &r.function {
            Function::Echo | Function::Work => Ok(r.args),
            Function::Hang => return,
            Function::Fail => Err(CallError::new(
                arbor_core::call::CallErrorKind::Failed,
                "boom",
                self.procs[p].node.config().name.clone(),
            )),
            Function::Unknown(name) => {
                Err(CallError::unknown_function(name, self.procs[p].node.config().name.clone()))
            }
        };
        self.input(p, Input::CallFinished { job, result });
    }

    /// Whether the process can act now; a stopped one remembers to catch up when thawed.
    fn runnable(&self, p: ProcId) -> bool {
        self.procs[p].alive && !self.procs[p].frozen
    }

    fn action(&mut self, i: usize) {
        let (_, action) = self.plan.actions[i].clone();
        let named = match &action {
            Action::Call { from, to, .. } | Action::Chain { from, to, .. } => vec![*from, *to],
            Action::Print { proc, .. } | Action::Shutdown { proc } | Action::Force { proc } => vec![*proc],
        };
        if let Some(unborn) = named.iter().find(|p| **p >= self.procs.len()) {
            // Still being spawned (its parent awaits an id block): try again shortly. Never to
            // be born (its parent died first): nothing happens.
            if self.to_spawn.contains(unborn) {
                self.schedule(self.now + Duration::from_millis(1), Ev::Action(i));
            }
            return;
        }
        match action {
            Action::Call { from, to, function, reply } => {
                self.issue_call(from, to, &function, reply);
            }
            Action::Chain { from, to, count } => {
                if count > 0 {
                    if let Some(call) = self.issue_call(from, to, "echo", true) {
                        self.chains.insert((from, call), Chain { to, left: count - 1 });
                    }
                }
            }
            Action::Print { proc, lines, newline } => {
                if !self.runnable(proc) || proc == 0 {
                    return;
                }
                for i in 0..lines {
                    let n = self.procs[proc].printed + i;
                    let text = format!("p{proc} line {n}");
                    let last = i + 1 == lines;
                    let text = if last && !newline { text } else { format!("{text}\n") };
                    self.procs[proc].backlog.push_back((Bytes::from(text.clone()), text));
                }
                self.procs[proc].printed += lines;
                self.pump_stdout(proc);
            }
            Action::Shutdown { proc } => self.shutdown(proc),
            Action::Force { proc } => self.force_shutdown(proc),
        }
    }

    fn issue_call(&mut self, from: ProcId, to: ProcId, function: &str, reply: bool) -> Option<CallId> {
        if !self.runnable(from) {
            return None;
        }
        let target = self.procs[to].node.id();
        let args = Bytes::from_static(b"0123456789abcdef");
        if reply {
            self.call(from, target, function, args).ok()
        } else {
            let _ = self.call_no_reply(from, target, function, args);
            None
        }
    }

    // --- driving a world by hand (tests) -----------------------------------------------------

    /// Process `from` calls `function` in context `target` (which need not exist).
    pub fn call(
        &mut self,
        from: ProcId,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<CallId, CallError> {
        let now = self.now;
        let r = self.procs[from].node.call(now, target, function, args);
        if let Ok(c) = r {
            self.record(from, What::CallIssued(c));
        }
        self.after_step(from);
        r
    }

    /// Process `from` calls `function` in context `target` without wanting an answer.
    pub fn call_no_reply(
        &mut self,
        from: ProcId,
        target: ContextId,
        function: &str,
        args: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        let now = self.now;
        let r = self.procs[from].node.call_no_reply(now, target, function, args);
        self.after_step(from);
        r
    }

    /// Process `p` begins a graceful shutdown.
    pub fn shutdown(&mut self, p: ProcId) {
        if self.runnable(p) {
            if p == 0 && self.shutdown_began.is_none() {
                self.shutdown_began = Some(self.now);
            }
            self.record(p, What::ShutdownRequested);
            let now = self.now;
            self.procs[p].node.shutdown(now);
            self.after_step(p);
        }
    }

    /// Process `p` forces its shutdown (a second Ctrl-C).
    pub fn force_shutdown(&mut self, p: ProcId) {
        if self.runnable(p) {
            let now = self.now;
            self.procs[p].node.force_shutdown(now);
            self.after_step(p);
        }
    }

    /// Process `p` prints `text` on stdout (blocking while the socket is full); `Err` is EPIPE.
    pub fn print(&mut self, p: ProcId, text: &str) -> Result<(), &'static str> {
        let Some(lg) = self.procs[p].stdout else { return Err("no stdout capture") };
        if self.loggers[lg].pipe.shut || !self.loggers[lg].reader_open {
            return Err("EPIPE");
        }
        self.procs[p].backlog.push_back((Bytes::copy_from_slice(text.as_bytes()), text.to_string()));
        self.pump_stdout(p);
        Ok(())
    }

    /// Feeds a raw input to process `p`'s node (forged frames, bad bodies).
    pub fn inject(&mut self, p: ProcId, input: Input<'_>) {
        self.input(p, input);
    }

    /// Spawns one more process under `parent`, after those of the plan; returns its index.
    pub fn spawn_child(&mut self, parent: ProcId) -> ProcId {
        let idx = self.plan.procs();
        self.plan.parents.push(parent);
        self.to_spawn.push_back(idx);
        self.spawn_pending();
        self.run_until(self.now);
        idx
    }

    /// Runs everything due now, without advancing time.
    pub fn settle(&mut self) {
        self.run_until(self.now);
    }

    /// Runs for `d` of virtual time and leaves the clock there.
    pub fn advance(&mut self, d: Duration) {
        let limit = self.now + d;
        self.run_until(limit);
        self.now = limit;
    }

    /// Whether process `p`'s main thread is busy with a call.
    pub fn running_call(&self, p: ProcId) -> bool {
        self.procs[p].running.is_some()
    }

    fn scheduled_fault(&mut self, i: usize) {
        let (_, fault) = self.plan.faults[i].clone();
        let p = fault.proc();
        if p >= self.procs.len() && self.to_spawn.contains(&p) {
            self.schedule(self.now + Duration::from_millis(1), Ev::Fault(i));
            return;
        }
        self.fault(fault);
    }

    /// Applies a fault now (to a live process; otherwise nothing happens).
    pub fn fault(&mut self, fault: Fault) {
        let p = fault.proc();
        if !self.procs.get(p).is_some_and(|x| x.alive) {
            return;
        }
        self.record(p, What::Fault(fault.clone()));
        let parent_link = self_link(&self.procs[p]);
        match fault {
            Fault::HangCalls(_) => self.procs[p].hang_calls = true,
            Fault::IgnoreSigterm(_) => self.procs[p].ignore_sigterm = true,
            Fault::Freeze(_) => self.procs[p].frozen = true,
            Fault::Thaw(_) => {
                self.procs[p].frozen = false;
                if std::mem::take(&mut self.procs[p].pending_term) {
                    return self.signal(p, Signal::Term);
                }
                // Catch up on everything that happened while stopped, in its order.
                for ev in std::mem::take(&mut self.procs[p].deferred) {
                    self.schedule(self.now, ev);
                }
            }
            Fault::Kill(_) => self.die(p, ExitStatus::Signaled(9)),
            Fault::Cut(_) => {
                if let Some(l) = parent_link {
                    let link = &mut self.links[l];
                    link.broken = true;
                    for side in 0..2 {
                        link.pipes[side].chunks.clear();
                        link.pipes[side].buffered = 0;
                        link.ends[side].out.clear();
                    }
                    let ends: Vec<(ProcId, StreamId)> =
                        link.ends.iter().map(|e| (e.proc, e.stream)).collect();
                    for (q, s) in ends {
                        self.schedule(self.now, Ev::Broken(q, s));
                    }
                }
            }
            Fault::Stall(_, d) => {
                if let Some(l) = parent_link {
                    self.links[l].stalled_until = self.now + d;
                }
            }
            Fault::Fragment(_) => {
                if let Some(l) = parent_link {
                    self.links[l].fragment = true;
                }
            }
            Fault::Delay(_, d) => {
                if let Some(l) = parent_link {
                    self.links[l].latency += d;
                }
            }
            Fault::Runaway(_) => self.schedule(self.now, Ev::Runaway(p)),
            Fault::Daemon(_) => {
                if let Some(lg) = self.procs[p].stdout {
                    self.loggers[lg].holders.insert(Holder::Daemon(p));
                }
            }
            Fault::Spoof(_) => {
                let Some(l) = parent_link else { return };
                let Some(parent) = self.procs[p].parent else { return };
                let parent_id = self.procs[parent].node.id();
                let root_id = ContextId::ROOT;
                // A call in the root's name, and a SHUTDOWN in our parent's name, for a sibling
                // (or, failing one, for the parent itself).
                let victim = (1..self.procs.len())
                    .find(|q| *q != p && self.procs[*q].parent == Some(parent))
                    .map_or(parent_id, |q| self.procs[q].node.id());
                let mut call = Message::new(
                    victim,
                    root_id,
                    Handle::CALL_FUNCTION,
                    Encoding::Postcard,
                    CallRequest::new("forged", "").encode(),
                );
                call.auth = root_id;
                let mut stop = Message::new(victim, parent_id, Handle::SHUTDOWN, Encoding::Binary, "");
                stop.auth = parent_id;
                let side = 1; // the child's end of its parent link
                for m in [call, stop] {
                    let f = m.to_frame();
                    self.links[l].ends[side].out.push_back(Chunk::Data(Bytes::from(f.to_vec())));
                }
                self.flush(l, side);
            }
        }
    }
}

/// The link to a process's parent.
fn self_link(p: &Process) -> Option<LinkId> {
    match p.streams.get(&PARENT_STREAM) {
        Some(Endpoint::Link(l, _)) => Some(*l),
        _ => None,
    }
}

impl LinkEnd {
    fn new(proc: ProcId, stream: StreamId) -> LinkEnd {
        LinkEnd { proc, stream, open: true, closing: false, out: VecDeque::new(), eof_reported: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_chunks_split_anywhere_without_losing_a_byte() {
        let raw: [u8; HEADER_LEN] = core::array::from_fn(|i| i as u8);
        for cut in 0..=HEADER_LEN {
            let mut c = Chunk::Header { bytes: raw, start: 0 };
            let head = c.split_to(cut);
            assert_eq!([head.as_slice(), c.as_slice()].concat(), raw.to_vec());
            let mut d = Chunk::Header { bytes: raw, start: 0 };
            let rest = d.split_off(cut);
            assert_eq!(d.as_slice(), &raw[..cut]);
            assert_eq!(rest.as_slice(), &raw[cut..]);
        }
    }
}
