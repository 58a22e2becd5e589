//! An in-memory harness of N nodes wired by queues: quinn-proto's `Pair`, generalised to a tree.
//!
//! Each process is an `arbor_core::Node` plus the least model of a process that shutdown needs:
//! a pid, a main thread that runs one call at a time (finishing after a delay, or never), a
//! stdout capture stream, SIGTERM honoured or ignored. Frames move between nodes instantly and
//! in order; time is virtual and jumps to the next timer or call completion. Every output every
//! node produces is kept in [`Harness::trace`] for assertions.
//!
//! The harness checks core invariants as it goes (it panics if violated): at most one `RunCall`
//! outstanding per node, nothing after `Exit`, every `CallId` resolved at most once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, CallResult, JobId};
use arbor_core::frame::{Decoder, Message};
use arbor_core::ids::{ContextId, IdError};
use arbor_core::lines::LogSource;
use arbor_core::node::{Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::ExitKind;
use arbor_core::time::Instant;
use bytes::Bytes;

/// The child's end of its parent stream.
pub const PARENT_STREAM: StreamId = StreamId(0);
/// The child's stdout capture stream.
pub const STDOUT_STREAM: StreamId = StreamId(1);

/// How the modelled main thread runs a function, by name:
/// `echo` returns its arguments at once; `sleep` returns them after [`Harness::call_time`];
/// `hang` never returns; `fail` returns a `Failed` error; anything else is unknown.
fn run(function: &str, args: &Bytes, name: &str) -> Option<(Duration, CallResult)> {
    match function {
        "echo" => Some((Duration::ZERO, Ok(args.clone()))),
        "sleep" => Some((Duration::from_millis(10), Ok(args.clone()))),
        "hang" => None,
        "fail" => Some((Duration::ZERO, Err(CallError::new(CallErrorKind::Failed, "boom", name)))),
        other => Some((Duration::ZERO, Err(CallError::unknown_function(other, name)))),
    }
}

/// One traced output.
#[derive(Clone, Debug)]
pub struct Traced {
    /// When.
    pub at: Instant,
    /// Which process.
    pub proc: usize,
    /// What.
    pub output: Output,
}

/// A modelled process.
#[derive(Debug)]
pub struct Proc {
    /// Its node.
    pub node: Node,
    /// Its pid.
    pub pid: Pid,
    /// Its parent process, if any.
    pub parent: Option<usize>,
    /// Whether it is still running.
    pub alive: bool,
    /// Whether SIGTERM is ignored.
    pub ignores_sigterm: bool,
    /// Whether the process is stopped (SIGSTOP): it handles no input and only SIGKILL ends it.
    pub frozen: bool,
    /// The call its main thread runs, and when it finishes (`None`: never).
    pub running: Option<(JobId, Option<(Instant, CallResult)>)>,
    /// Whether stdout was shut (SHUT_WR): prints now fail with EPIPE.
    pub stdout_shut: bool,
    /// Whether the stdout capture stream is still open.
    pub stdout_open: bool,
    next_stream: u32,
}

/// N processes joined by in-memory links.
#[derive(Debug)]
pub struct Harness {
    /// Virtual time.
    pub now: Instant,
    /// The processes; index 0 is the root.
    pub procs: Vec<Proc>,
    /// `(proc, stream) -> (proc, stream)`, both directions, for open framed links.
    links: BTreeMap<(usize, StreamId), (usize, StreamId)>,
    /// Bytes in flight, delivered in order.
    wire: VecDeque<(usize, StreamId, Vec<u8>)>,
    /// Closes carried out, to be reported to their nodes as `Input::Closed`.
    closed: VecDeque<(usize, StreamId)>,
    /// Every output of every node, in order.
    pub trace: Vec<Traced>,
    resolved: BTreeSet<(usize, CallId)>,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new(NodeConfig::root())
    }
}

impl Harness {
    /// A harness holding only the root, configured as given.
    pub fn new(root: NodeConfig) -> Harness {
        let mut h = Harness {
            now: Instant::ZERO,
            procs: Vec::new(),
            links: BTreeMap::new(),
            wire: VecDeque::new(),
            closed: VecDeque::new(),
            trace: Vec::new(),
            resolved: BTreeSet::new(),
        };
        h.procs.push(Proc::new(Node::new(root), Pid(1000), None));
        h
    }

    /// A root with a chain of `depth` descendants below it (0 → 1 → 2 …); returns their indexes.
    pub fn chain(depth: usize) -> (Harness, Vec<usize>) {
        let mut h = Harness::default();
        let mut at = 0;
        let mut out = vec![0];
        for _ in 0..depth {
            at = h.spawn(at);
            out.push(at);
        }
        (h, out)
    }

    /// Spawns a child of process `parent` with default settings; returns its index.
    pub fn spawn(&mut self, parent: usize) -> usize {
        self.spawn_with(parent, |_| {})
    }

    /// Spawns a child of `parent`, letting `tweak` adjust its config; returns its index.
    pub fn spawn_with(&mut self, parent: usize, tweak: impl FnOnce(&mut NodeConfig)) -> usize {
        let now = self.now;
        let id = match self.procs[parent].node.allocate_id(now) {
            Ok(id) => id,
            Err(IdError::NeedBlock) => {
                // The node asked the root for a block; let the answer arrive, then retry.
                self.drain(parent);
                self.settle();
                let now = self.now;
                self.procs[parent].node.allocate_id(now).expect("an id block arrived")
            }
            Err(e) => panic!("id allocation failed: {e}"),
        };
        let p = &self.procs[parent].node;
        let mut ancestors = vec![p.id()];
        ancestors.extend_from_slice(p.config().ancestors.as_slice());
        let mut config = NodeConfig::child(id, ancestors);
        tweak(&mut config);
        let idx = self.procs.len();
        let pid = Pid(1000 + idx as u32);
        self.procs.push(Proc::new(Node::new(config), pid, Some(parent)));
        let ps = self.procs[parent].take_stream();
        self.links.insert((parent, ps), (idx, PARENT_STREAM));
        self.links.insert((idx, PARENT_STREAM), (parent, ps));
        self.input(idx, Input::StreamOpened { stream: PARENT_STREAM, kind: StreamKind::Parent });
        self.input(
            idx,
            Input::StreamOpened {
                stream: STDOUT_STREAM,
                kind: StreamKind::Logger { source: LogSource::Stdout },
            },
        );
        self.procs[idx].stdout_open = true;
        let kind = StreamKind::Child { id, pid: Some(pid), name: Some(format!("proc{idx}")) };
        self.input(parent, Input::StreamOpened { stream: ps, kind });
        self.settle();
        idx
    }

    /// Feeds one input to a live process's node (inputs to dead processes are dropped).
    pub fn input(&mut self, p: usize, input: Input<'_>) {
        if !self.procs[p].alive || self.procs[p].frozen {
            return;
        }
        let now = self.now;
        self.procs[p].node.handle_input(now, input).expect("host uses the node correctly");
        self.drain(p);
    }

    /// The process prints `bytes` to stdout. Fails (EPIPE) once stdout was shut.
    pub fn print(&mut self, p: usize, bytes: &[u8]) -> Result<(), &'static str> {
        if self.procs[p].stdout_shut || !self.procs[p].stdout_open {
            return Err("EPIPE");
        }
        self.input(p, Input::Received { stream: STDOUT_STREAM, bytes });
        Ok(())
    }

    /// Calls `function` in process `target` from process `from`; returns the call id.
    pub fn call(
        &mut self,
        from: usize,
        target: usize,
        function: &str,
        args: &[u8],
    ) -> Result<CallId, CallError> {
        let target = self.procs[target].node.id();
        self.call_context(from, target, function, args)
    }

    /// Calls `function` in the context with id `target` (which need not exist) from `from`.
    pub fn call_context(
        &mut self,
        from: usize,
        target: ContextId,
        function: &str,
        args: &[u8],
    ) -> Result<CallId, CallError> {
        let now = self.now;
        let r = self.procs[from].node.call(now, target, function, Bytes::copy_from_slice(args));
        self.drain(from);
        r
    }

    /// `call_no_reply` from `from` to `target`.
    pub fn call_no_reply(&mut self, from: usize, target: usize, function: &str) -> Result<(), CallError> {
        let now = self.now;
        let target = self.procs[target].node.id();
        let r = self.procs[from].node.call_no_reply(now, target, function, Bytes::new());
        self.drain(from);
        r
    }

    /// Graceful shutdown of process `p`.
    pub fn shutdown(&mut self, p: usize) {
        let now = self.now;
        self.procs[p].node.shutdown(now);
        self.drain(p);
    }

    /// Forced shutdown of process `p` (a second Ctrl-C).
    pub fn force_shutdown(&mut self, p: usize) {
        let now = self.now;
        self.procs[p].node.force_shutdown(now);
        self.drain(p);
    }

    /// Delivers everything in flight and every consequence, without advancing time.
    pub fn settle(&mut self) {
        loop {
            if let Some((p, stream, bytes)) = self.wire.pop_front() {
                self.input(p, Input::Received { stream, bytes: &bytes });
            } else if let Some((p, stream)) = self.closed.pop_front() {
                self.input(p, Input::Closed { stream });
            } else {
                return;
            }
        }
    }

    /// The next instant anything is scheduled: a node timer or a call completion.
    pub fn next_event(&self) -> Option<Instant> {
        self.procs
            .iter()
            .filter(|p| p.alive && !p.frozen)
            .flat_map(|p| {
                let call = p.running.as_ref().and_then(|(_, done)| done.as_ref().map(|(at, _)| *at));
                p.node.poll_timeout().into_iter().chain(call)
            })
            .min()
    }

    /// Runs until nothing is scheduled or `limit` is reached; returns the time reached.
    pub fn run_until(&mut self, limit: Instant) -> Instant {
        self.settle();
        while let Some(at) = self.next_event() {
            if at > limit {
                break;
            }
            self.now = self.now.max(at);
            self.fire_due();
            self.settle();
        }
        self.now
    }

    /// Runs for at most `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Instant {
        let limit = self.now + d;
        self.run_until(limit)
    }

    /// Advances virtual time by `d` exactly, firing whatever falls due on the way.
    pub fn advance(&mut self, d: Duration) {
        let limit = self.now + d;
        self.run_until(limit);
        self.now = limit;
        self.fire_due();
        self.settle();
    }

    fn fire_due(&mut self) {
        let now = self.now;
        for p in 0..self.procs.len() {
            if !self.procs[p].alive || self.procs[p].frozen {
                continue;
            }
            let due = matches!(&self.procs[p].running, Some((_, Some((at, _))) ) if *at <= now);
            if due {
                if let Some((job, Some((_, result)))) = self.procs[p].running.take() {
                    self.input(p, Input::CallFinished { job, result });
                }
            }
            if self.procs[p].alive && self.procs[p].node.poll_timeout().is_some_and(|t| t <= now) {
                self.procs[p].node.handle_timeout(now);
                self.drain(p);
            }
        }
    }

    /// Carries out every output of process `p`.
    fn drain(&mut self, p: usize) {
        while let Some(output) = self.procs[p].node.poll_output() {
            self.trace.push(Traced { at: self.now, proc: p, output: output.clone() });
            self.carry_out(p, output);
        }
    }

    fn carry_out(&mut self, p: usize, output: Output) {
        match output {
            Output::Transmit { stream, frame } => {
                if let Some(&(q, far)) = self.links.get(&(p, stream)) {
                    self.wire.push_back((q, far, frame.to_vec()));
                }
            }
            Output::ShutdownWrite { stream } => {
                assert_eq!(stream, STDOUT_STREAM);
                // SHUT_WR: nothing buffered in this model, so the read end is at EOF at once.
                self.procs[p].stdout_shut = true;
                self.input(p, Input::Eof { stream });
            }
            Output::Close { stream } => {
                if stream == STDOUT_STREAM && !self.links.contains_key(&(p, stream)) {
                    self.procs[p].stdout_open = false;
                } else {
                    // Everything transmitted before is already in flight: the close is done,
                    // and the node hears so once it has finished this step.
                    self.close_link(p, stream);
                    self.closed.push_back((p, stream));
                }
            }
            Output::Signal { pid, signal } => {
                let Some(q) = self.procs.iter().position(|x| x.pid == pid) else { return };
                if signal == Signal::Kill || !(self.procs[q].ignores_sigterm || self.procs[q].frozen) {
                    self.die(q, ExitStatus::Signaled(if signal == Signal::Kill { 9 } else { 15 }));
                }
            }
            Output::RunCall { job, caller: _, request } => {
                assert!(
                    self.procs[p].running.is_none(),
                    "process {p}: a second RunCall while one is running"
                );
                let name = self.procs[p].node.config().name.clone();
                let done = run(&request.function, &request.args, &name).map(|(d, r)| (self.now + d, r));
                self.procs[p].running = Some((job, done));
                if matches!(&self.procs[p].running, Some((_, Some((at, _)))) if *at <= self.now) {
                    if let Some((job, Some((_, result)))) = self.procs[p].running.take() {
                        self.input(p, Input::CallFinished { job, result });
                    }
                }
            }
            Output::CallReturned { call, .. } => {
                assert!(self.resolved.insert((p, call)), "process {p}: {call:?} resolved twice");
            }
            Output::Exit { how } => {
                let status = match how {
                    ExitKind::SigtermSelf => ExitStatus::Signaled(15),
                    ExitKind::Clean => ExitStatus::Code(0),
                };
                // A child's IO side ends the process even if SIGTERM is ignored.
                self.die(p, status);
            }
            Output::CallsClosed | Output::LogLine(_) | Output::IdsAvailable | Output::Diagnostic(_) => {}
        }
    }

    fn close_link(&mut self, p: usize, stream: StreamId) {
        if let Some((q, far)) = self.links.remove(&(p, stream)) {
            self.links.remove(&(q, far));
            // Bytes already in flight to q are still delivered before the EOF.
            self.settle();
            self.input(q, Input::Eof { stream: far });
        }
    }

    /// Process `p` ends: its streams close, its parent reaps it, and its children get their
    /// parent-death signal (SIGKILL, as arbor's driver sets PR_SET_PDEATHSIG).
    pub fn die(&mut self, p: usize, status: ExitStatus) {
        if !self.procs[p].alive {
            return;
        }
        self.procs[p].alive = false;
        self.procs[p].running = None;
        let orphans: Vec<usize> =
            (0..self.procs.len()).filter(|q| self.procs[*q].parent == Some(p)).collect();
        for q in orphans {
            self.die(q, ExitStatus::Signaled(9));
        }
        let ends: Vec<StreamId> = self.links.keys().filter(|(q, _)| *q == p).map(|(_, s)| *s).collect();
        for s in ends {
            self.close_link(p, s);
        }
        if let Some(parent) = self.procs[p].parent {
            let pid = self.procs[p].pid;
            self.input(parent, Input::ChildExited { pid, status });
        }
    }

    /// Cuts the link between process `p`'s stream `stream` and its peer, as if both ends broke.
    pub fn cut(&mut self, p: usize, stream: StreamId) {
        if let Some((q, far)) = self.links.remove(&(p, stream)) {
            self.links.remove(&(q, far));
            self.input(p, Input::StreamClosed { stream });
            self.input(q, Input::StreamClosed { stream: far });
        }
    }

    // --- reading the trace ----------------------------------------------------------------

    /// The outputs of process `p`, in order.
    pub fn outputs_of(&self, p: usize) -> Vec<&Output> {
        self.trace.iter().filter(|t| t.proc == p).map(|t| &t.output).collect()
    }

    /// The messages process `p` transmitted, decoded, with the stream.
    pub fn sent_by(&self, p: usize) -> Vec<(StreamId, Message)> {
        self.outputs_of(p)
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit { stream, frame } => {
                    let mut d = Decoder::new(u32::MAX);
                    d.feed(&frame.to_vec());
                    Some((*stream, d.next_message().ok()??))
                }
                _ => None,
            })
            .collect()
    }

    /// Process `p`'s shutdown-relevant outputs, in order, in words: `calls closed`,
    /// `SHUTDOWN to N`, `SHUT_WR stdout`, `close stdout|parent|child stream`, `SIGTERM|SIGKILL N`,
    /// `exit SigtermSelf|Clean`.
    pub fn story(&self, p: usize) -> Vec<String> {
        let mut out = Vec::new();
        for o in self.outputs_of(p) {
            out.push(match o {
                Output::CallsClosed => "calls closed".to_string(),
                Output::Transmit { frame, .. } => {
                    let mut d = Decoder::new(u32::MAX);
                    d.feed(&frame.to_vec());
                    match d.next_message() {
                        Ok(Some(m)) if m.handle == arbor_core::handle::Handle::SHUTDOWN => {
                            format!("SHUTDOWN to {}", m.dst)
                        }
                        _ => continue,
                    }
                }
                Output::ShutdownWrite { .. } => "SHUT_WR stdout".to_string(),
                Output::Close { stream } if *stream == PARENT_STREAM => "close parent".to_string(),
                Output::Close { stream } if *stream == STDOUT_STREAM => "close stdout".to_string(),
                Output::Close { .. } => "close child stream".to_string(),
                Output::Signal { pid, signal: Signal::Term } => format!("SIGTERM {pid}"),
                Output::Signal { pid, signal: Signal::Kill } => format!("SIGKILL {pid}"),
                Output::Exit { how } => format!("exit {how:?}"),
                _ => continue,
            });
        }
        out
    }

    /// Position in the global trace of process `p`'s first output matching `f`.
    pub fn first(&self, p: usize, f: impl Fn(&Output) -> bool) -> Option<usize> {
        self.trace.iter().position(|t| t.proc == p && f(&t.output))
    }

    /// The result of `call` made by process `p`, if resolved.
    pub fn result_of(&self, p: usize, call: CallId) -> Option<&CallResult> {
        self.outputs_of(p).into_iter().find_map(|o| match o {
            Output::CallReturned { call: c, result } if *c == call => Some(result),
            _ => None,
        })
    }

    /// Log lines that reached the root, as `(context, text)`.
    pub fn root_lines(&self) -> Vec<(ContextId, String)> {
        self.outputs_of(0)
            .into_iter()
            .filter_map(|o| match o {
                Output::LogLine(l) => Some((l.context, l.text.clone())),
                _ => None,
            })
            .collect()
    }

    /// When process `p` produced `Exit`, if it did.
    pub fn exit_time(&self, p: usize) -> Option<Instant> {
        self.trace.iter().find(|t| t.proc == p && matches!(t.output, Output::Exit { .. })).map(|t| t.at)
    }

    /// Whether every process has ended.
    pub fn all_gone(&self) -> bool {
        self.procs.iter().all(|p| !p.alive)
    }
}

impl Proc {
    fn new(node: Node, pid: Pid, parent: Option<usize>) -> Proc {
        Proc {
            node,
            pid,
            parent,
            alive: true,
            ignores_sigterm: false,
            frozen: false,
            running: None,
            stdout_shut: false,
            stdout_open: false,
            next_stream: 100,
        }
    }

    fn take_stream(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }
}
