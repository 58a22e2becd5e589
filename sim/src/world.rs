//! The world: real `arbor_core::Node`s, each inside the shared host contract
//! ([`arbor_core::host::Host`]), in modelled processes joined by modelled sockets, driven by one
//! virtual clock and one event queue.
//!
//! Everything that happens is an event at an instant; ties are broken by the order events were
//! scheduled, so a run is a pure function of its [`Plan`]. The clock jumps from one event to the
//! next (no idle ticking).
//!
//! The world does for a host exactly what a real runtime does: it feeds it bytes, EOFs, timers,
//! reaped children and finished calls, and carries out the primitives it asks for
//! ([`Io`]: write a stream's queue, shut a logger's write half, close, signal, spawn, exit, arm
//! the timer), reporting their completions back (`wrote`, `write_failed`, `opened`). Everything
//! else a host must do around a node — write queues, Close-after-flush, backpressure, spawns
//! that wait for ids, the final flush — is the host's, written once in the core, so what the
//! simulator proves covers it too. A process's actions only change the modelled world and
//! schedule events for other processes; the completions of its own primitives go straight back
//! to its own host.
//!
//! What is modelled (docs/simulator.md): processes with a pid, a main thread that runs one call
//! at a time for a modelled duration or forever, SIGTERM (default or ignored), SIGKILL,
//! SIGSTOP/SIGCONT and a parent-death signal (SIGKILL); socketpairs with a buffer capacity per
//! direction, latency, partial reads and writes, EOF after SHUT_WR or close, EPIPE once the
//! reader is gone; stdout capture sockets whose write end may be held by several processes (a
//! daemon), where SHUT_WR reaches every holder, and whose writers block while they are full;
//! reaping by the parent.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use arbor_core::call::{CallError, CallId, CallRequest, JobId};
use arbor_core::frame::{Encoding, Message, HEADER_LEN};
use arbor_core::handle::Handle;
use arbor_core::host::{Action as HostAction, Host, HostConfig, Io, Segment, SpawnRefused, SpawnTicket};
use arbor_core::ids::ContextId;
use arbor_core::lines::LogSource;
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind, TestMutation};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::ExitKind;
use arbor_core::time::Instant;
use arbor_core::vec_map::VecMap;
use bytes::Bytes;

use crate::plan::{Action, Fault, Mutation, Plan, ProcId};
use crate::rng::Rng;
use crate::trace::{Trace, What};

/// A child's end of its parent stream.
pub const PARENT_STREAM: StreamId = StreamId(0);
/// A child's stdout capture stream (read end).
pub const STDOUT_STREAM: StreamId = StreamId(1);

/// How often a runaway writer writes a line, and how long the line is.
const RUNAWAY_EVERY: Duration = Duration::from_micros(50);
const RUNAWAY_LINE_LEN: usize = 4096;

/// The line a runaway writer writes again and again.
static RUNAWAY_LINE: [u8; RUNAWAY_LINE_LEN] = runaway_line();

const fn runaway_line() -> [u8; RUNAWAY_LINE_LEN] {
    let mut line = [b'r'; RUNAWAY_LINE_LEN];
    line[RUNAWAY_LINE_LEN - 1] = b'\n';
    line
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// The process may read from this stream.
    Read(ProcId, StreamId),
    /// The process may write more of this stream's queue: its reader made room, or went away.
    Writable(ProcId, StreamId),
    /// The process's host timer may be due.
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
    /// Ask for the next plan process's spawn (its parent was stopped when its turn came).
    Spawn,
}

/// An event for a later instant, ordered for the queue's max-heap: the earliest first, and
/// among events for one instant the one scheduled first (`seq` is unique, so the event itself
/// never takes part in the comparison).
#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl Scheduled {
    fn key(&self) -> (Instant, u64) {
        (self.at, self.seq)
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

/// The events for later instants, popped in (instant, order scheduled) order: one heap, beside
/// a run of events each scheduled no earlier than the one before it.
///
/// Most events are a link's reads, at "now + the link's latency": each no earlier than the last
/// when latencies are alike, so they go to the back of the run and come off its front, with no
/// heap operation. The others (timers, calls' ends, a slower link's reads) go to the heap.
/// Popping takes the earlier of the two fronts, so the order is the one heap's, exactly: `seq`
/// grows with every event, so no two keys are equal and the run is sorted by key.
#[derive(Debug, Default)]
struct Later {
    heap: BinaryHeap<Scheduled>,
    run: VecDeque<Scheduled>,
}

impl Later {
    fn push(&mut self, s: Scheduled) {
        let in_order = self.run.back().is_none_or(|last| last.at <= s.at);
        // Only reads: a timer or a scripted action may be far off, and at the back of the run
        // it would send every nearer read after it to the heap.
        if in_order && matches!(s.ev, Ev::Read(..)) {
            self.run.push_back(s);
        } else {
            self.heap.push(s);
        }
    }

    /// The instant of the earliest event.
    fn next_at(&self) -> Option<Instant> {
        match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(h)) => Some(r.at.min(h.at)),
            (r, h) => r.or(h).map(|s| s.at),
        }
    }

    fn pop(&mut self) -> Option<Scheduled> {
        let from_run = match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(h)) => r.key() < h.key(),
            (r, _) => r.is_some(),
        };
        if from_run {
            self.run.pop_front()
        } else {
            self.heap.pop()
        }
    }
}

type LinkId = usize;
type LoggerId = usize;

/// A piece of bytes in flight: (part of) a frame header kept inline (no allocation per frame),
/// or shared bytes (a body, captured output).
#[derive(Debug, Clone)]
enum Chunk {
    Header { bytes: [u8; HEADER_LEN], start: usize },
    Data(Bytes),
}

impl Chunk {
    /// (Part of) a header, right-aligned in its own array so `as_slice` sees only it.
    fn header(part: &[u8]) -> Chunk {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[HEADER_LEN - part.len()..].copy_from_slice(part);
        Chunk::Header { bytes, start: HEADER_LEN - part.len() }
    }

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
                let head = Chunk::header(&bytes[*start..*start + n]);
                *start += n;
                head
            }
            Chunk::Data(b) => Chunk::Data(b.split_to(n)),
        }
    }

    /// Keeps the first `n` bytes and returns the rest.
    #[cfg(test)]
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

impl Pipe {
    /// Copies up to `max` bytes that are readable at `now` into `got` (emptied first), in one
    /// piece, as `read(2)` fills a host's buffer: one read. The caller's buffer is reused from
    /// read to read, so a read allocates nothing once it has grown.
    fn read(&mut self, now: Instant, max: usize, got: &mut Vec<u8>) {
        got.clear();
        while got.len() < max {
            let Some((at, chunk)) = self.chunks.front_mut() else { break };
            if *at > now {
                break;
            }
            let room = max - got.len();
            if chunk.len() <= room {
                got.extend_from_slice(chunk.as_slice());
                self.chunks.pop_front();
            } else {
                got.extend_from_slice(chunk.split_to(room).as_slice());
            }
        }
        self.buffered -= got.len();
    }
}

#[derive(Debug)]
struct LinkEnd {
    proc: ProcId,
    stream: StreamId,
    /// The process still has this end (not closed, not dead).
    open: bool,
    eof_reported: bool,
    /// Forged frames a rogue process writes here behind its host's back (the spoof fault),
    /// waiting for the host's queue to reach a frame boundary.
    forged: VecDeque<Chunk>,
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
    /// Never returns, but stops when its caller gives up (`Output::CancelCall`), as an async
    /// function's future is dropped.
    Park,
    /// Returns a `Failed` error ("boom") at once.
    Fail,
    /// Not registered: answered `UnknownFunction`.
    Unknown(String),
}

/// What the world's API side must do for one node output: the few cheap values acting on it
/// needs, so the output itself can move into the trace without a copy. (The IO outputs need
/// nothing here: their primitives follow as `Io` actions.)
enum Api {
    RunCall(JobId, Function, Bytes),
    Returned(CallId),
    Cancel(JobId),
    Nothing,
}

impl Api {
    fn of(out: &Output) -> Api {
        match out {
            Output::RunCall { job, request, .. } => {
                let function = match request.function.as_str() {
                    "echo" => Function::Echo,
                    "work" => Function::Work,
                    "hang" => Function::Hang,
                    "park" => Function::Park,
                    "fail" => Function::Fail,
                    other => Function::Unknown(other.to_string()),
                };
                Api::RunCall(*job, function, request.args.clone())
            }
            Output::CallReturned { call, .. } => Api::Returned(*call),
            Output::CancelCall { job } => Api::Cancel(*job),
            _ => Api::Nothing,
        }
    }
}

/// A modelled process.
#[derive(Debug)]
pub struct Process {
    /// Its host, around its node (`host.node()`).
    pub host: Host,
    /// Its pid.
    pub pid: Pid,
    /// Its parent process.
    pub parent: Option<ProcId>,
    /// Still running.
    pub alive: bool,
    /// Stopped by SIGSTOP.
    pub frozen: bool,
    /// The most bytes ever queued on its parent stream (measured after every input, before the
    /// writes it led to).
    pub parent_queue_high: usize,
    /// The high mark as recorded in the trace (`What::ParentQueued`): after reads of loggers and
    /// child streams only (the reads backpressure holds back).
    read_high: usize,
    ignore_sigterm: bool,
    pending_term: bool,
    hang_calls: bool,
    running: Option<Running>,
    /// Its streams: a handful, read at every read and write, so a sorted vector.
    streams: VecMap<StreamId, Endpoint>,
    next_stream: u32,
    stdout: Option<LoggerId>,
    /// Events that arrived while the process was stopped, replayed when it is thawed.
    deferred: Vec<Ev>,
    printed: u32,
    /// Whole lines the process is blocked writing to stdout (a full socket blocks a print).
    backlog: VecDeque<Bytes>,
}

/// A chain of sequential calls: the next is sent when the previous answers.
#[derive(Debug)]
struct Chain {
    to: ProcId,
    left: u32,
}

/// The one spawn under way: asked for and not yet carried out or refused.
#[derive(Clone, Copy, Debug)]
struct Spawning {
    parent: ProcId,
    ticket: SpawnTicket,
    child: ProcId,
}

/// Counters for a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames the nodes transmitted.
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
    /// Events for later instants, by (instant, order scheduled).
    queue: Later,
    /// Events scheduled for the current instant, in the order scheduled. They come after every
    /// queued event for this instant (those were scheduled before the clock got here) and
    /// before any later one: the heap's order, without a heap operation for each of the many
    /// events a step schedules for "now".
    now_queue: VecDeque<Ev>,
    seq: u64,
    links: Vec<Link>,
    loggers: Vec<Logger>,
    /// Chains under way, by (caller, the call in flight): a handful, so a list.
    chains: Vec<(ProcId, CallId, Chain)>,
    /// Plan processes not spawned yet, in order.
    to_spawn: VecDeque<ProcId>,
    spawning: Option<Spawning>,
    /// `spawn_next` is on the stack (it loops itself; nested calls return at once).
    asking: bool,
    /// The buffer every read fills, in one piece, kept between reads (a read allocates
    /// nothing once it has grown): the host takes a read at once, not a chunk at a time.
    read_buf: Vec<u8>,
    /// [`crate::check::one_read_worth`] of the plan's read size (see `note_read`).
    read_worth: usize,
}

impl World {
    /// A world for `plan`, with its tree spawned at time zero and its script scheduled.
    ///
    /// # Panics
    ///
    /// If `plan` is not valid ([`Plan::validate`]), saying why: a world of a plan that names a
    /// process it does not have cannot be built. [`crate::Sim::run`] validates first and returns
    /// the error instead.
    pub fn new(plan: &Plan) -> World {
        if let Err(e) = plan.validate() {
            panic!("World::new: the plan is not valid: {e}");
        }
        let mut w = World {
            now: Instant::ZERO,
            // Room for the plan's processes from the start: a `Process` is large, and a vector
            // of such grows one slot at a time.
            procs: Vec::with_capacity(plan.procs()),
            trace: Trace { events: Vec::with_capacity(4096) },
            stats: Stats::default(),
            shutdown_began: None,
            plan: plan.clone(),
            rng: Rng::new(plan.seed ^ 0x5eed),
            queue: Later::default(),
            now_queue: VecDeque::new(),
            seq: 0,
            links: Vec::with_capacity(plan.procs()),
            loggers: Vec::with_capacity(plan.procs()),
            chains: Vec::new(),
            to_spawn: (1..plan.procs()).collect(),
            spawning: None,
            asking: false,
            read_buf: Vec::new(),
            read_worth: crate::check::one_read_worth(plan.net.read_size),
        };
        let mut root = NodeConfig::root();
        root.grace = plan.net.grace;
        w.add_process(root, None);
        w.spawn_next();
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

    /// The plan and the trace, taken out of a finished world (no copy of either).
    pub(crate) fn into_plan_and_trace(self) -> (Plan, Trace) {
        (self.plan, self.trace)
    }

    /// Runs until nothing is scheduled or virtual time passes `limit`.
    pub fn run_until(&mut self, limit: Instant) {
        loop {
            let next_at = self.queue.next_at();
            let ev = match next_at {
                _ if self.now > limit => None,
                // Queued for this instant: scheduled before anything in `now_queue`.
                Some(at) if at <= self.now => self.queue.pop().map(|s| s.ev),
                _ if !self.now_queue.is_empty() => self.now_queue.pop_front(),
                Some(at) if at <= limit => {
                    self.now = at;
                    self.queue.pop().map(|s| s.ev)
                }
                _ => None,
            };
            let Some(ev) = ev else { break };
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
        if at <= self.now {
            self.now_queue.push_back(ev);
        } else {
            self.queue.push(Scheduled { at, seq: self.seq, ev });
        }
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
        let host_config = HostConfig {
            parent_high_water: self.plan.net.parent_high_water,
            child_high_water: self.plan.net.child_high_water,
            ..HostConfig::default()
        };
        self.procs.push(Process {
            host: Host::new(Node::new(config), host_config),
            pid,
            parent,
            alive: true,
            frozen: false,
            parent_queue_high: 0,
            read_high: 0,
            ignore_sigterm: false,
            pending_term: false,
            hang_calls: false,
            running: None,
            streams: VecMap::new(),
            next_stream: 100,
            stdout: None,
            deferred: Vec::new(),
            printed: 0,
            backlog: VecDeque::new(),
        });
        self.record(p, What::Spawned { id, pid });
        p
    }

    /// Asks for the front plan process's spawn, unless one is under way. Plan indexes are
    /// process indexes, so none may overtake another: the next is asked for only once the last
    /// was carried out or refused. (Whether it must wait for a block of ids, and whether it may
    /// still happen at all once its parent began shutting down, is the host's to decide.)
    fn spawn_next(&mut self) {
        if self.asking {
            return;
        }
        self.asking = true;
        while self.spawning.is_none() {
            let Some(&child) = self.to_spawn.front() else { break };
            let parent = self.plan.parent(child).unwrap_or(0);
            if !self.procs[parent].alive {
                // Its parent is gone: it is never born, and neither is anything after it.
                self.to_spawn.clear();
                break;
            }
            if self.procs[parent].frozen {
                break; // a stopped parent asks once thawed
            }
            let now = self.now;
            let ticket = self.procs[parent].host.request_spawn(now);
            self.spawning = Some(Spawning { parent, ticket, child });
            self.after_step(parent);
        }
        self.asking = false;
    }

    /// Carries out `Io::Spawn`: the child process, its parent link and its stdout capture, then
    /// the parent's host hears the spawn for `ticket` is done.
    fn carry_out_spawn(&mut self, parent: ProcId, ticket: SpawnTicket, id: ContextId) {
        let Some(s) = self.spawning.take_if(|s| s.parent == parent && s.ticket == ticket) else {
            debug_assert!(false, "a spawn the world never asked for");
            return;
        };
        debug_assert_eq!(self.to_spawn.front(), Some(&s.child), "plan processes are spawned in order");
        self.to_spawn.pop_front();
        debug_assert_eq!(self.procs.len(), s.child, "plan processes are spawned in order");
        let pnode = self.procs[parent].host.node();
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
        self.open(c, PARENT_STREAM, StreamKind::Parent, None);
        self.open(c, STDOUT_STREAM, StreamKind::Logger { source: LogSource::Stdout }, None);
        let pid = self.procs[c].pid;
        self.open(parent, ps, StreamKind::Child { id, pid: Some(pid), name: None }, Some(ticket));
    }

    /// `Action::SpawnRefused`: the plan process is never born, and (none may overtake another)
    /// neither is anything after it; scripted actions and faults naming them do nothing.
    fn spawn_refused(&mut self, parent: ProcId, ticket: SpawnTicket, reason: SpawnRefused) {
        let Some(s) = self.spawning.take_if(|s| s.parent == parent && s.ticket == ticket) else { return };
        self.record(parent, What::SpawnRefused { child: s.child, reason });
        self.to_spawn.clear();
    }

    /// Registers a stream with a process's host.
    fn open(&mut self, p: ProcId, stream: StreamId, kind: StreamKind, ticket: Option<SpawnTicket>) {
        self.step(p, |w| {
            w.record(p, What::Opened(stream));
            let now = w.now;
            // Host misuse is a simulator bug: there is no honest way to go on.
            w.procs[p]
                .host
                .opened(now, stream, kind, ticket)
                .expect("the simulator registers each stream once");
        });
    }

    /// Lets live, running process `p` take one input (`f` calls its host), then carries out
    /// what follows.
    fn step(&mut self, p: ProcId, f: impl FnOnce(&mut World)) {
        if !self.runnable(p) {
            return;
        }
        f(self);
        let queued = self.procs[p].host.parent_queued();
        let proc = &mut self.procs[p];
        proc.parent_queue_high = proc.parent_queue_high.max(queued);
        self.after_step(p);
    }

    /// Drains a host's actions: node outputs into the trace (and to the API side), primitives
    /// carried out.
    fn after_step(&mut self, p: ProcId) {
        while self.procs[p].alive {
            let Some(action) = self.procs[p].host.poll_action() else { break };
            match action {
                HostAction::Output(out) => self.output(p, out),
                HostAction::Io(io) => self.carry_out(p, io),
                HostAction::SpawnRefused { ticket, reason } => self.spawn_refused(p, ticket, reason),
                HostAction::Backpressure { paused, parent_queued } => {
                    self.backpressure(p, paused, parent_queued)
                }
                HostAction::ChildHeld { stream, held, queued } => {
                    self.record(p, What::ChildHeld { stream, held, queued });
                    // A held child stream's `Read`s found it unread: read it again once released.
                    if !held {
                        self.schedule(self.now, Ev::Read(p, stream))
                    }
                }
            }
        }
        if self.spawning.is_none() && !self.to_spawn.is_empty() {
            self.spawn_next();
        }
    }

    /// Records a node output (before it is acted on, so its consequences follow it in the
    /// trace) and does the API's part: calls on the main thread, chains of calls.
    fn output(&mut self, p: ProcId, out: Output) {
        let api = Api::of(&out);
        match out {
            Output::Diagnostic(Diagnostic::PhaseChanged { to, cause, .. }) => {
                self.record(p, What::Phase { to, cause })
            }
            out => {
                if matches!(out, Output::Transmit { .. }) {
                    self.stats.messages += 1;
                }
                self.record(p, What::Out(out))
            }
        }
        match api {
            Api::RunCall(job, function, args) => {
                let done_at = match function {
                    _ if self.procs[p].hang_calls => None,
                    Function::Hang | Function::Park => None,
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
            Api::Returned(call) => {
                if let Some(i) = self.chains.iter().position(|(q, c, _)| (*q, *c) == (p, call)) {
                    let (_, _, mut chain) = self.chains.swap_remove(i);
                    if chain.left > 0 {
                        chain.left -= 1;
                        if let Some(next) = self.issue_call(p, chain.to, "echo", true) {
                            self.chains.push((p, next, chain));
                        }
                    }
                }
            }
            Api::Cancel(job) => {
                // A stoppable function is dropped where it stands; a blocking one runs on.
                let stoppable = self.procs[p]
                    .running
                    .as_ref()
                    .is_some_and(|r| r.job == job && matches!(r.function, Function::Park));
                if stoppable {
                    self.procs[p].running = None;
                    let name = self.procs[p].host.node().config().name.clone();
                    let stopped = CallError::new(arbor_core::call::CallErrorKind::Cancelled, "dropped", name);
                    self.step(p, |w| w.procs[p].host.call_finished(w.now, job, Err(stopped)));
                }
            }
            Api::Nothing => {}
        }
    }

    /// Carries out one primitive a host asked for.
    fn carry_out(&mut self, p: ProcId, io: Io) {
        match io {
            Io::Write { stream } => self.flush(p, stream),
            Io::ShutdownWrite { stream } => {
                if let Some(Endpoint::Logger(lg)) = self.procs[p].streams.get(&stream).copied() {
                    self.loggers[lg].pipe.shut = true;
                    self.schedule(self.now, Ev::Read(p, stream));
                }
            }
            Io::Close { stream } => self.close(p, stream),
            Io::Signal { pid, signal } => {
                if let Some(q) = self.procs.iter().position(|x| x.pid == pid) {
                    self.signal(q, signal);
                }
            }
            Io::Spawn { ticket, id } => self.carry_out_spawn(p, ticket, id),
            Io::Timer(Some(at)) => self.schedule(at, Ev::Timer(p)),
            Io::Timer(None) => {}
            Io::Exit { how } => {
                let status = match how {
                    // SIGTERM to self; a process that ignores it exits anyway.
                    ExitKind::SigtermSelf if !self.procs[p].ignore_sigterm => ExitStatus::Signaled(15),
                    ExitKind::SigtermSelf => ExitStatus::Code(1),
                    ExitKind::Clean => ExitStatus::Code(0),
                };
                self.die(p, status);
            }
        }
    }

    /// `Action::Backpressure`: recorded; once loggers and child streams may be read again, they
    /// are (what became readable meanwhile was not read: its `Read` found the host paused).
    fn backpressure(&mut self, p: ProcId, paused: bool, parent_queued: usize) {
        self.record(p, What::Backpressure { paused, parent_queued });
        if !paused {
            let held: Vec<StreamId> = self.procs[p]
                .streams
                .iter()
                // A parent's end of a link (side 0) is a child stream; the parent stream
                // (side 1) is never paused.
                .filter(|(_, e)| matches!(e, Endpoint::Logger(_) | Endpoint::Link(_, 0)))
                .map(|(s, _)| *s)
                .collect();
            for s in held {
                self.schedule(self.now, Ev::Read(p, s));
            }
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

    /// Process `p` ends: the kernel closes its fds (whoever still writes to them gets EPIPE),
    /// its children get the parent-death signal, its parent reaps it.
    fn die(&mut self, p: ProcId, status: ExitStatus) {
        if !self.procs[p].alive {
            return;
        }
        self.procs[p].alive = false;
        self.procs[p].running = None;
        self.procs[p].backlog.clear();
        self.record(p, What::Died(status));
        if self.spawning.is_some_and(|s| s.parent == p) {
            // The spawn it was waiting to carry out dies with it.
            self.spawning = None;
            self.to_spawn.clear();
        }
        let ends: Vec<Endpoint> = self.procs[p].streams.values().copied().collect();
        for e in ends {
            match e {
                Endpoint::Link(l, side) => self.close_end(l, side),
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

    /// Carries out `Io::Write` (and every later chance to write): moves what `p`'s host has
    /// queued on `stream` into the socket, as far as its capacity allows (a partial write leaves
    /// the rest queued until the reader makes room), and reports how much went — or, once the
    /// reader is gone, that the write failed (EPIPE).
    fn flush(&mut self, p: ProcId, stream: StreamId) {
        let Some(Endpoint::Link(l, side)) = self.procs[p].streams.get(&stream).copied() else { return };
        if !self.links[l].ends[side].open {
            return;
        }
        let now = self.now;
        if self.links[l].broken || !self.links[l].ends[1 - side].open {
            self.links[l].ends[side].forged.clear();
            if self.procs[p].host.write_queue(stream).is_some_and(|q| !q.is_empty()) {
                self.procs[p].host.write_failed(now, stream);
            }
            return;
        }
        let n = self.write_queue(p, stream, l, side);
        if n > 0 {
            self.procs[p].host.wrote(now, stream, n);
        }
        self.write_forged(l, side);
    }

    /// Copies the front of the host's write queue into the socket (bodies shared, not copied);
    /// returns how many bytes went (none from an empty queue).
    fn write_queue(&mut self, p: ProcId, stream: StreamId, l: LinkId, side: usize) -> usize {
        let Some(queue) = self.procs[p].host.write_queue(stream) else { return 0 };
        let link = &mut self.links[l];
        let ready_at = self.now + link.latency;
        let pipe = &mut link.pipes[side];
        let room = self.plan.net.capacity.saturating_sub(pipe.buffered);
        let mut n = 0;
        for segment in queue.segments(usize::MAX) {
            if n == room {
                break;
            }
            let take = (room - n).min(segment.as_slice().len());
            let chunk = match segment {
                Segment::Header(h) => Chunk::header(&h[..take]),
                Segment::Body(b, from) => Chunk::Data(b.slice(from..from + take)),
            };
            pipe.chunks.push_back((ready_at, chunk));
            n += take;
        }
        pipe.buffered += n;
        if n > 0 {
            let peer = &link.ends[1 - side];
            let (q, s) = (peer.proc, peer.stream);
            self.schedule(ready_at, Ev::Read(q, s));
        }
        n
    }

    /// Writes the spoof fault's forged frames once the host's queue on that end is empty, so
    /// they start at a frame boundary (whole, past the capacity if need be: they are small).
    fn write_forged(&mut self, l: LinkId, side: usize) {
        let end = &self.links[l].ends[side];
        if end.forged.is_empty() {
            return;
        }
        if !end.open || self.links[l].broken || !self.links[l].ends[1 - side].open {
            self.links[l].ends[side].forged.clear();
            return;
        }
        let end = &self.links[l].ends[side];
        let host_busy = self.procs[end.proc].host.write_queue(end.stream).is_some_and(|q| !q.is_empty());
        if host_busy {
            return;
        }
        let link = &mut self.links[l];
        let ready_at = self.now + link.latency;
        for chunk in std::mem::take(&mut link.ends[side].forged) {
            link.pipes[side].buffered += chunk.len();
            link.pipes[side].chunks.push_back((ready_at, chunk));
        }
        let (q, s) = (link.ends[1 - side].proc, link.ends[1 - side].stream);
        self.schedule(ready_at, Ev::Read(q, s));
    }

    /// Carries out `Io::Close`: the host already wrote what was queued (or could not).
    fn close(&mut self, p: ProcId, stream: StreamId) {
        match self.procs[p].streams.get(&stream).copied() {
            Some(Endpoint::Link(l, side)) => self.close_end(l, side),
            Some(Endpoint::Logger(lg)) => self.loggers[lg].reader_open = false,
            None => {}
        }
    }

    /// Link end `side` is closed: its peer sees EOF once the socket drains, and a peer still
    /// trying to write gets EPIPE.
    fn close_end(&mut self, l: LinkId, side: usize) {
        let end = &mut self.links[l].ends[side];
        if !end.open {
            return;
        }
        end.open = false;
        end.forged.clear();
        self.shut_pipe(l, side);
        let peer = &self.links[l].ends[1 - side];
        let (q, s) = (peer.proc, peer.stream);
        if self.procs[q].alive && self.procs[q].host.write_queue(s).is_some_and(|w| !w.is_empty()) {
            self.schedule(self.now, Ev::Writable(q, s));
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

    /// One read of a link end, unless the host leaves it unread for now (backpressure holds a
    /// child stream back while the parent queue is above its mark: it is read again once the
    /// host says so). What the read returns goes to the host at once (then EOF, if that is all
    /// there is), and a writer waiting for room may write again.
    fn read_link(&mut self, p: ProcId, l: LinkId, side: usize) {
        let now = self.now;
        let (stream, open) = (self.links[l].ends[side].stream, self.links[l].ends[side].open);
        if !open || self.links[l].broken || !self.procs[p].host.may_read(stream) {
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
        let mut bytes = std::mem::take(&mut self.read_buf);
        self.links[l].pipes[from].read(now, max, &mut bytes);
        let pipe = &self.links[l].pipes[from];
        let next = pipe.chunks.front().map(|(at, _)| *at);
        let at_eof = next.is_none() && pipe.shut && !self.links[l].ends[side].eof_reported;
        if at_eof {
            self.links[l].ends[side].eof_reported = true;
        }
        if !bytes.is_empty() {
            let writer = &self.links[l].ends[from];
            let (q, s) = (writer.proc, writer.stream);
            if self.procs[q].host.write_queue(s).is_some_and(|w| !w.is_empty()) {
                self.schedule(now, Ev::Writable(q, s));
            }
        }
        if next.is_some_and(|at| at <= now) {
            self.schedule(now, Ev::Read(p, stream));
        } // else a Read is already scheduled for when the next chunk becomes readable
        if !bytes.is_empty() || at_eof {
            // A read of a child stream (the parent's end of a link) is what backpressure
            // judges; the parent stream is read always.
            self.feed_read(p, stream, &bytes, at_eof, side == 0);
        }
        self.read_buf = bytes;
    }

    /// Hands what one read took to the host, and, for a read that backpressure judges (a
    /// logger or a child stream), notes how the parent queue grew.
    fn feed_read(&mut self, p: ProcId, stream: StreamId, bytes: &[u8], at_eof: bool, judged: bool) {
        let now = self.now;
        self.step(p, |w| {
            let before = w.procs[p].host.parent_queued();
            let host = &mut w.procs[p].host;
            if !bytes.is_empty() {
                host.received(now, stream, bytes);
            }
            if at_eof {
                host.eof(now, stream);
            }
            if judged {
                let after = w.procs[p].host.parent_queued();
                w.note_read(p, stream, after, after.saturating_sub(before));
            }
        });
    }

    /// One read of a stdout capture socket, unless the host leaves its loggers unread for now
    /// (backpressure: they are read again once it says so). The print backlog may then go on.
    fn read_logger(&mut self, p: ProcId, lg: LoggerId) {
        let now = self.now;
        let stream = self.loggers[lg].stream;
        if !self.loggers[lg].reader_open || !self.procs[p].host.may_read(stream) {
            return;
        }
        let max = self.plan.net.read_size;
        let mut bytes = std::mem::take(&mut self.read_buf);
        let lgr = &mut self.loggers[lg];
        lgr.pipe.read(now, max, &mut bytes);
        let more = !lgr.pipe.chunks.is_empty();
        let at_eof = !more && lgr.pipe.shut && !lgr.eof_reported;
        if at_eof {
            lgr.eof_reported = true;
        }
        if more {
            self.schedule(now, Ev::Read(p, stream));
        }
        let read_some = !bytes.is_empty();
        if read_some || at_eof {
            self.feed_read(p, stream, &bytes, at_eof, true);
        }
        self.read_buf = bytes;
        if read_some && !self.procs[p].backlog.is_empty() && self.runnable(p) {
            self.pump_stdout(p);
        }
    }

    /// Records a new high mark of the parent queue after a read of a logger or a child stream,
    /// when it is above the high-water mark: what the `parent-queue-bound` checker judges.
    ///
    /// A read the checker would object to is recorded too, high mark or not: one that began with
    /// the queue already above the mark (backpressure should have held it back), or that alone
    /// added more than one read's worth. In a correct run there are none, so the trace holds
    /// only the high marks.
    fn note_read(&mut self, p: ProcId, stream: StreamId, queued: usize, read: usize) {
        let mark = self.plan.net.parent_high_water;
        if queued <= mark {
            return;
        }
        let proc = &mut self.procs[p];
        if queued > proc.read_high || queued.saturating_sub(read) > mark || read > self.read_worth {
            proc.read_high = proc.read_high.max(queued);
            self.record(p, What::ParentQueued { stream, queued, read });
        }
    }

    /// Whether `p`'s stdout is gone for writing (EPIPE): shut, or its reader closed it.
    fn stdout_broken(&self, p: ProcId) -> bool {
        self.procs[p].stdout.is_none_or(|lg| self.loggers[lg].pipe.shut || !self.loggers[lg].reader_open)
    }

    /// `p` writes to its stdout: returns how many bytes the socket took, or `None` for EPIPE.
    fn write_stdout(&mut self, p: ProcId, bytes: Bytes) -> Option<usize> {
        if self.stdout_broken(p) {
            return None;
        }
        let lg = self.procs[p].stdout?;
        let capacity = self.plan.net.capacity;
        let lgr = &mut self.loggers[lg];
        // An empty socket takes a whole write even past its nominal capacity (a big line is not
        // split by this model); otherwise only what fits.
        let take = if lgr.pipe.buffered == 0 {
            bytes.len()
        } else {
            bytes.len().min(capacity.saturating_sub(lgr.pipe.buffered))
        };
        if take > 0 {
            lgr.pipe.buffered += take;
            // The whole write moves in (a slice of it would be a second holder of its bytes).
            let chunk = if take == bytes.len() { bytes } else { bytes.slice(..take) };
            lgr.pipe.chunks.push_back((self.now, Chunk::Data(chunk)));
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
        while let Some(bytes) = self.procs[p].backlog.front() {
            if self.stdout_broken(p) {
                self.procs[p].backlog.clear();
                return;
            }
            let Some(lg) = self.procs[p].stdout else { return };
            let buffered = self.loggers[lg].pipe.buffered;
            if buffered > 0 && buffered + bytes.len() > capacity {
                return; // blocked until the reader drains
            }
            // Valid text is checked the fast way (`from_utf8_lossy` walks every byte).
            let text = std::str::from_utf8(bytes)
                .map_or_else(|_| String::from_utf8_lossy(bytes).into_owned(), str::to_owned);
            let Some(bytes) = self.procs[p].backlog.pop_front() else { return };
            self.write_stdout(p, bytes);
            self.record(p, What::Printed(text));
        }
    }

    /// A runaway writer's turn: unless its last line is still blocked, it writes another
    /// (blocking like any printer while the socket is full); EPIPE stops it for good.
    fn runaway(&mut self, p: ProcId) {
        if !self.procs[p].alive {
            return;
        }
        if !self.procs[p].frozen {
            if self.stdout_broken(p) {
                return;
            }
            if self.procs[p].backlog.is_empty() {
                self.procs[p].backlog.push_back(Bytes::from_static(&RUNAWAY_LINE));
                self.pump_stdout(p);
            }
        }
        self.schedule(self.now + RUNAWAY_EVERY, Ev::Runaway(p));
    }

    // --- events --------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        if let Ev::Read(p, _)
        | Ev::Writable(p, _)
        | Ev::Timer(p)
        | Ev::CallDone(p, _)
        | Ev::Reap(p, ..)
        | Ev::Broken(p, _) = ev
        {
            if !self.procs[p].alive {
                return;
            }
            if self.procs[p].frozen {
                self.procs[p].deferred.push(ev);
                return;
            }
        }
        match ev {
            Ev::Spawn => self.spawn_next(),
            Ev::Read(p, s) => self.read(p, s),
            Ev::Writable(p, s) => self.step(p, |w| w.flush(p, s)),
            Ev::Timer(p) => self.step(p, |w| w.procs[p].host.handle_timeout(w.now)),
            Ev::CallDone(p, job) => self.call_done(p, job),
            Ev::Reap(parent, pid, code) => {
                let status = if code < 0 { ExitStatus::Signaled(-code) } else { ExitStatus::Code(code) };
                self.step(parent, |w| w.procs[parent].host.child_exited(w.now, pid, status));
            }
            Ev::Broken(p, stream) => self.step(p, |w| {
                w.procs[p].host.read_failed(w.now, stream);
                w.flush(p, stream); // what is still queued cannot be written either
            }),
            // A stopped process does what it was scripted to once it is thawed, as it does
            // with everything else that reaches it while stopped.
            Ev::Action(i) => {
                match self.actor(i).filter(|&p| self.procs.get(p).is_some_and(|x| x.alive && x.frozen)) {
                    Some(p) => self.procs[p].deferred.push(ev),
                    None => self.action(i),
                }
            }
            Ev::Fault(i) => self.scheduled_fault(i),
            Ev::RootShutdown if self.procs[0].alive && self.procs[0].frozen => {
                self.procs[0].deferred.push(ev)
            }
            Ev::RootShutdown => self.shutdown(0),
            Ev::Runaway(p) => self.runaway(p),
        }
    }

    /// The main thread finished `job` (if that is still the one it runs).
    fn call_done(&mut self, p: ProcId, job: JobId) {
        let Some(r) = self.procs[p].running.take_if(|r| r.job == job) else { return };
        let name = || self.procs[p].host.node().config().name.clone();
        let result = match &r.function {
            Function::Echo | Function::Work => Ok(r.args),
            Function::Hang | Function::Park => return,
            Function::Fail => Err(CallError::new(arbor_core::call::CallErrorKind::Failed, "boom", name())),
            Function::Unknown(function) => Err(CallError::unknown_function(function, name())),
        };
        self.step(p, |w| w.procs[p].host.call_finished(w.now, job, result));
    }

    /// Whether the process can act now; a stopped one remembers to catch up when thawed.
    fn runnable(&self, p: ProcId) -> bool {
        self.procs[p].alive && !self.procs[p].frozen
    }

    /// The process that carries action `i` out: the caller, the printer, the one shutting down,
    /// or the parent of the child stopped.
    fn actor(&self, i: usize) -> Option<ProcId> {
        match &self.plan.actions[i].1 {
            Action::Call { from, .. } | Action::Chain { from, .. } | Action::CallWithin { from, .. } => {
                Some(*from)
            }
            Action::Print { proc, .. } | Action::Shutdown { proc } | Action::Force { proc } => Some(*proc),
            Action::StopChild { proc } | Action::KillChild { proc } => {
                proc.checked_sub(1).map(|c| self.plan.parents[c])
            }
        }
    }

    fn action(&mut self, i: usize) {
        let (_, action) = self.plan.actions[i].clone();
        let named = match &action {
            Action::Call { from, to, .. } | Action::Chain { from, to, .. } => vec![*from, *to],
            Action::CallWithin { from, to, .. } => vec![*from, *to],
            Action::Print { proc, .. }
            | Action::Shutdown { proc }
            | Action::Force { proc }
            | Action::StopChild { proc }
            | Action::KillChild { proc } => vec![*proc],
        };
        if let Some(unborn) = named.iter().find(|p| **p >= self.procs.len()) {
            // Still being spawned (its parent awaits an id block): try again shortly. Never to
            // be born (its parent died or refused the spawn): nothing happens.
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
                        self.chains.push((from, call, Chain { to, left: count - 1 }));
                    }
                }
            }
            Action::Print { proc, lines, newline } => {
                if !self.runnable(proc) || proc == 0 {
                    return;
                }
                let mut text = Vec::new();
                for i in 0..lines {
                    let n = self.procs[proc].printed + i;
                    // `p{proc} line {n}`, newline-terminated but for an unterminated last line;
                    // written by hand (`write!` was most of a print-heavy run's own cost).
                    text.clear();
                    text.push(b'p');
                    push_decimal(&mut text, proc as u64);
                    text.extend_from_slice(b" line ");
                    push_decimal(&mut text, u64::from(n));
                    if i + 1 < lines || newline {
                        text.push(b'\n');
                    }
                    // One allocation, exactly the line's size (no spare room for `Bytes` to
                    // need a shared header for).
                    self.procs[proc].backlog.push_back(Bytes::copy_from_slice(&text));
                }
                self.procs[proc].printed += lines;
                self.pump_stdout(proc);
            }
            Action::CallWithin { from, to, function, timeout } => {
                if self.runnable(from) {
                    let target = self.procs[to].host.node().id();
                    let args = b"0123456789abcdef";
                    let _ = self.call_within(from, target, &function, &args[..], timeout);
                }
            }
            Action::StopChild { proc } => self.control_child(proc, false),
            Action::KillChild { proc } => self.control_child(proc, true),
            Action::Shutdown { proc } => self.shutdown(proc),
            Action::Force { proc } => self.force_shutdown(proc),
        }
    }

    /// `proc`'s parent stops (or kills) it; refused quietly if `proc` is no longer its
    /// connected child or the parent is shutting down (the plan cannot know).
    fn control_child(&mut self, proc: ProcId, kill: bool) {
        let Some(parent) = self.plan.parent(proc) else { return };
        let id = self.procs[proc].host.node().id();
        if !self.runnable(parent)
            || self.procs[parent].host.node().phase() != arbor_core::shutdown::Phase::Running
        {
            return;
        }
        // Recorded before the node acts, so the SHUTDOWN it sends follows the request.
        let known = self.procs[parent].host.node().router().route(id).is_some();
        if known {
            self.record(parent, What::ChildControl { child: id, kill });
        }
        self.step(parent, |w| {
            let now = w.now;
            let host = &mut w.procs[parent].host;
            let _ = if kill { host.kill_child(now, id) } else { host.shutdown_child(now, id) };
        });
    }

    fn issue_call(&mut self, from: ProcId, to: ProcId, function: &str, reply: bool) -> Option<CallId> {
        if !self.runnable(from) {
            return None;
        }
        let target = self.procs[to].host.node().id();
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
        let r = self.procs[from].host.call(now, target, function, args);
        if let Ok(call) = r {
            self.record(from, What::CallIssued { call, to: target, deadline: None });
        }
        self.after_step(from);
        r
    }

    /// Process `from` calls `function` in context `target` with a deadline `timeout` from now.
    pub fn call_within(
        &mut self,
        from: ProcId,
        target: ContextId,
        function: &str,
        args: &[u8],
        timeout: Duration,
    ) -> Result<CallId, CallError> {
        let now = self.now;
        let meta = arbor_core::call::RequestMeta { types: None, timeout: Some(timeout) };
        let body = arbor_core::call::CallRequest::body_with(function, args, meta);
        let r = self.procs[from].host.call_body(now, target, body);
        if let Ok(call) = r {
            self.record(from, What::CallIssued { call, to: target, deadline: Some(now + timeout) });
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
        let r = self.procs[from].host.call_no_reply(now, target, function, args);
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
            self.step(p, |w| w.procs[p].host.shutdown(w.now));
        }
    }

    /// Process `p` forces its shutdown (a second Ctrl-C).
    pub fn force_shutdown(&mut self, p: ProcId) {
        self.step(p, |w| w.procs[p].host.force_shutdown(w.now));
    }

    /// Process `p` prints `text` on stdout (blocking while the socket is full); `Err` is EPIPE.
    pub fn print(&mut self, p: ProcId, text: &str) -> Result<(), &'static str> {
        if self.procs[p].stdout.is_none() {
            return Err("no stdout capture");
        }
        if self.stdout_broken(p) {
            return Err("EPIPE");
        }
        self.procs[p].backlog.push_back(Bytes::copy_from_slice(text.as_bytes()));
        self.pump_stdout(p);
        Ok(())
    }

    /// Feeds a raw input to process `p`'s node (forged frames, bad bodies).
    pub fn inject(&mut self, p: ProcId, input: Input<'_>) {
        self.step(p, |w| {
            let now = w.now;
            // Host misuse is a simulator bug: there is no honest way to go on.
            w.procs[p].host.inject(now, input).expect("a well-formed input");
        });
    }

    /// Spawns one more process under `parent`, after those of the plan; returns its index.
    pub fn spawn_child(&mut self, parent: ProcId) -> ProcId {
        let idx = self.plan.procs();
        self.plan.parents.push(parent);
        self.to_spawn.push_back(idx);
        self.spawn_next();
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
            Fault::Thaw(_) => self.thaw(p),
            Fault::Kill(_) => self.die(p, ExitStatus::Signaled(9)),
            Fault::Cut(_) => {
                if let Some(l) = parent_link {
                    let link = &mut self.links[l];
                    link.broken = true;
                    for side in 0..2 {
                        link.pipes[side].chunks.clear();
                        link.pipes[side].buffered = 0;
                        link.ends[side].forged.clear();
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
            Fault::Spoof(_) => self.spoof(p, parent_link),
        }
    }

    /// SIGCONT: a SIGTERM that arrived while stopped takes effect; otherwise the process
    /// catches up on everything that happened while it was stopped, in its order.
    fn thaw(&mut self, p: ProcId) {
        self.procs[p].frozen = false;
        if std::mem::take(&mut self.procs[p].pending_term) {
            return self.signal(p, Signal::Term);
        }
        for ev in std::mem::take(&mut self.procs[p].deferred) {
            self.schedule(self.now, ev);
        }
        if self.spawning.is_none() && !self.to_spawn.is_empty() {
            self.schedule(self.now, Ev::Spawn);
        }
    }

    /// A call in the root's name, and a SHUTDOWN in our parent's name, for a sibling (or,
    /// failing one, for the parent itself), written up `p`'s parent stream behind its host.
    fn spoof(&mut self, p: ProcId, parent_link: Option<LinkId>) {
        let Some(l) = parent_link else { return };
        let Some(parent) = self.procs[p].parent else { return };
        let parent_id = self.procs[parent].host.node().id();
        let root_id = ContextId::ROOT;
        let victim = (1..self.procs.len())
            .find(|q| *q != p && self.procs[*q].parent == Some(parent))
            .map_or(parent_id, |q| self.procs[q].host.node().id());
        let mut call = Message::new(
            victim,
            root_id,
            Handle::CALL_FUNCTION,
            Encoding::Postcard,
            CallRequest::new(FORGED_FUNCTION, "").encode(),
        );
        call.auth = root_id;
        let mut stop = Message::new(victim, parent_id, Handle::SHUTDOWN, Encoding::Binary, "");
        stop.auth = parent_id;
        let side = 1; // the child's end of its parent link
        for m in [call, stop] {
            let f = m.to_frame();
            self.links[l].ends[side].forged.push_back(Chunk::Data(Bytes::from(f.to_vec())));
        }
        self.write_forged(l, side);
    }
}

/// The function the spoof fault's forged CALL_FUNCTION names: not one word, so no plan can call
/// it (`Plan::validate`), and the `auth-boundary` checker knows any run of it was forged.
pub const FORGED_FUNCTION: &str = "forged call";

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
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
        LinkEnd { proc, stream, open: true, eof_reported: false, forged: VecDeque::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_events_come_off_in_the_order_one_heap_gives() {
        // Reads in and out of order, timers and calls' ends, some for one instant, popped
        // between pushes: the run beside the heap must not change what comes first.
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let (mut later, mut heap, mut seq) = (Later::default(), BinaryHeap::new(), 0u64);
            let mut now = 0u64;
            for _ in 0..300 {
                if rng.range(0, 3) == 0 {
                    let (a, b) = (later.pop().map(|s| s.key()), heap.pop().map(|s: Scheduled| s.key()));
                    assert_eq!(a, b, "seed {seed}");
                    if let Some((at, _)) = a {
                        now = at.as_nanos();
                    }
                    continue;
                }
                seq += 1;
                let at = Instant::ZERO + Duration::from_nanos(now + rng.range(0, 4) * 1000);
                let ev = match rng.range(0, 4) {
                    0 => Ev::Timer(0),
                    1 => Ev::CallDone(0, JobId(seq)),
                    _ => Ev::Read(0, StreamId(0)),
                };
                assert_eq!(later.next_at(), heap.peek().map(|s| s.at), "seed {seed}");
                later.push(Scheduled { at, seq, ev });
                heap.push(Scheduled { at, seq, ev });
            }
            while let Some(s) = heap.pop() {
                assert_eq!(later.pop().map(|s| s.key()), Some(s.key()), "seed {seed}");
            }
            assert!(later.pop().is_none());
        }
    }

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 7, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

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
