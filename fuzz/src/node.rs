//! A `Node` inside the host contract (`arbor_core::host::Host`, which every real host and the
//! simulator's world use), fed an arbitrary sequence of inputs, completions, timer firings and
//! API calls (docs/shutdown.md, docs/embedding.md "The host contract").
//!
//! The first byte picks the context: 1 below the root (with a parent stream) or the root
//! itself; both get stdout and stderr loggers. Each step then is one of: bytes from a peer (raw,
//! or a frame built from ids and handles that matter), EOF or a read error, a write completing
//! (partly) or failing, a child reaped, a call finishing, time passing and the timer firing, a
//! spawn asked for, carried out or failed, a child stream opened, a call with or without reply,
//! shutdown or forced shutdown. The simulated runtime behaves as a correct one would (it never
//! reports more written than was queued); the peers and the timing are arbitrary. Properties:
//! - nothing panics;
//! - every call resolves at most once, and only calls that were made resolve;
//! - when the node exits, every call made has resolved;
//! - at most one `RunCall` is outstanding;
//! - nothing follows `Output::Exit` but the host's IO, and nothing at all follows `Io::Exit`.

use std::collections::BTreeSet;
use std::time::Duration;

use arbor_core::call::{CallError, CallErrorKind, CallId, JobId};
use arbor_core::host::{Action, Host, HostConfig, Io, SpawnTicket};
use arbor_core::ids::ContextId;
use arbor_core::lines::LogSource;
use arbor_core::node::{Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid};
use arbor_core::router::StreamId;
use arbor_core::time::Instant;

use crate::input::{Input, Script};
use crate::router::{frame, IDS};

/// Stream 0 is the parent; 1-3 children's; 10 and 11 the loggers; 20 never opened.
const STREAMS: &[u32] = &[0, 1, 2, 3, 10, 11, 20];
const PIDS: &[u32] = &[101, 102, 103, 104];
const FUNCTIONS: &[&str] = &["work", "hang", "", "x"];
/// Steps of time: none, a tick, a call's length, a second, the grace period and past it.
const DELAYS: &[Duration] = &[
    Duration::ZERO,
    Duration::from_micros(1),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut fx = Fixture::new(input.byte() % 2 == 0);
    let mut steps = 0;
    // After `Io::Exit` the process is gone: a runtime calls nothing more.
    while !input.is_empty() && steps < 512 && !fx.host_exited {
        fx.step(&mut input);
        steps += 1;
    }
}

/// A host, the runtime's view of it, and what the properties need to remember.
struct Fixture {
    host: Host,
    now: Instant,
    /// Calls made and not yet resolved, and those resolved.
    pending: BTreeSet<CallId>,
    resolved: BTreeSet<CallId>,
    /// `RunCall`s handed out and not finished.
    jobs: BTreeSet<JobId>,
    /// Spawns handed out with `Io::Spawn`, with the child id, not yet opened or failed.
    spawns: Vec<(SpawnTicket, ContextId)>,
    /// Streams whose write queue the runtime is draining.
    writing: BTreeSet<StreamId>,
    node_exited: bool,
    host_exited: bool,
    next_stream: u32,
}

impl Fixture {
    fn new(child: bool) -> Fixture {
        let config =
            if child { NodeConfig::child(ContextId(1), vec![ContextId(0)]) } else { NodeConfig::root() };
        let mut fx = Fixture {
            host: Host::new(
                Node::new(config),
                HostConfig { parent_high_water: 4096, ..HostConfig::default() },
            ),
            now: Instant::ZERO,
            pending: BTreeSet::new(),
            resolved: BTreeSet::new(),
            jobs: BTreeSet::new(),
            spawns: Vec::new(),
            writing: BTreeSet::new(),
            node_exited: false,
            host_exited: false,
            next_stream: 30,
        };
        if child {
            fx.open(StreamId(0), StreamKind::Parent, None);
        }
        fx.open(StreamId(10), StreamKind::Logger { source: LogSource::Stdout }, None);
        fx.open(StreamId(11), StreamKind::Logger { source: LogSource::Stderr }, None);
        fx
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let stream = StreamId(input.pick(STREAMS));
        let now = self.now;
        match input.byte() % 17 {
            0 => self.host.received(now, stream, input.short_slice()),
            1 => {
                let wire = frame(input).to_frame().to_vec();
                self.host.received(now, stream, &wire);
            }
            2 => self.host.eof(now, stream),
            3 => self.host.read_failed(now, stream),
            4 => self.write(stream, usize::from(input.u16())),
            5 => {
                self.writing.remove(&stream);
                self.host.write_failed(now, stream);
            }
            6 => {
                self.host.child_exited(now, Pid(input.pick(PIDS)), ExitStatus::Code(i32::from(input.byte())))
            }
            7 => self.finish_call(input),
            8 => self.advance(input),
            9 => {
                let _ = self.host.request_spawn(now);
            }
            10 => self.carry_out_spawn(input),
            11 => {
                if let Some((ticket, _)) = self.take_spawn(input) {
                    self.host.spawn_failed(now, ticket);
                }
            }
            12 => self.call(input, true),
            13 => self.call(input, false),
            14 => self.host.shutdown(now),
            15 => self.host.force_shutdown(now),
            _ => {
                let id = ContextId(input.pick(IDS));
                let pid = Some(Pid(input.pick(PIDS)));
                self.open(stream, StreamKind::Child { id, pid, name: None }, None);
            }
        }
        self.drain();
    }

    fn open(&mut self, stream: StreamId, kind: StreamKind, ticket: Option<SpawnTicket>) {
        // A second stream of the same id, or a child id in use, is the host's own mistake,
        // which it is told of; neither may break the node.
        let _ = self.host.opened(self.now, stream, kind, ticket);
        self.drain();
    }

    /// The runtime wrote up to `n` bytes of the stream's queue (never more than is queued).
    fn write(&mut self, stream: StreamId, n: usize) {
        let queued = self.host.write_queue(stream).map_or(0, |q| q.len());
        if queued > 0 {
            self.host.wrote(self.now, stream, n.min(queued));
        }
    }

    fn finish_call(&mut self, input: &mut Input<'_>) {
        let job = match self.jobs.iter().next().copied() {
            Some(job) if input.byte() % 8 != 0 => job,
            _ => JobId(u64::from(input.byte())),
        };
        self.jobs.remove(&job);
        let result = match input.byte() % 3 {
            0 => Ok(input.short_slice().to_vec().into()),
            1 => Err(CallError::new(CallErrorKind::Failed, "it failed", "fuzz")),
            _ => Ok(vec![0; 5000].into()), // larger than the parent's high-water mark
        };
        self.host.call_finished(self.now, job, result);
    }

    /// Time passes, and the timer fires if it is due (as a runtime's would).
    fn advance(&mut self, input: &mut Input<'_>) {
        let step = input.pick(DELAYS);
        let to_timer = input.byte() % 2 == 0;
        let later = Instant::from_nanos(self.now.as_nanos().saturating_add(step.as_nanos() as u64));
        self.now = match self.host.poll_timeout() {
            Some(t) if to_timer && t > self.now => t,
            _ => later,
        };
        if self.host.poll_timeout().is_some_and(|t| t <= self.now) {
            self.host.handle_timeout(self.now);
        }
    }

    fn take_spawn(&mut self, input: &mut Input<'_>) -> Option<(SpawnTicket, ContextId)> {
        if self.spawns.is_empty() {
            return None;
        }
        let i = usize::from(input.byte()) % self.spawns.len();
        Some(self.spawns.remove(i))
    }

    /// The runtime started a spawned child: its stream opens on a fresh id.
    fn carry_out_spawn(&mut self, input: &mut Input<'_>) {
        let Some((ticket, id)) = self.take_spawn(input) else { return };
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        let pid = Some(Pid(1000 + id.0));
        self.open(stream, StreamKind::Child { id, pid, name: Some("spawned".into()) }, Some(ticket));
    }

    fn call(&mut self, input: &mut Input<'_>, reply: bool) {
        let target = ContextId(input.pick(IDS));
        let function = input.pick(FUNCTIONS);
        let args = input.short_slice().to_vec();
        if reply {
            if let Ok(call) = self.host.call(self.now, target, function, args) {
                assert!(
                    !self.pending.contains(&call) && !self.resolved.contains(&call),
                    "call id {call:?} handed out twice"
                );
                self.pending.insert(call);
            }
        } else {
            let _ = self.host.call_no_reply(self.now, target, function, args);
        }
    }

    /// Takes every action, checking the properties.
    fn drain(&mut self) {
        while let Some(action) = self.host.poll_action() {
            assert!(!self.host_exited, "{action:?} after Io::Exit");
            match action {
                Action::Output(out) => self.output(out),
                Action::Io(io) => self.io(io),
                Action::SpawnRefused { .. } | Action::Backpressure { .. } | Action::ChildHeld { .. } => {}
            }
        }
    }

    fn output(&mut self, out: Output) {
        assert!(!self.node_exited, "{out:?} after Output::Exit");
        match out {
            Output::CallReturned { call, .. } => {
                assert!(!self.resolved.contains(&call), "call {call:?} resolved twice");
                assert!(self.pending.remove(&call), "call {call:?} resolved but never made");
                self.resolved.insert(call);
            }
            Output::RunCall { job, .. } => {
                assert!(self.jobs.is_empty(), "RunCall {job:?} while {:?} is outstanding", self.jobs);
                self.jobs.insert(job);
            }
            Output::Exit { .. } => {
                self.node_exited = true;
                assert!(self.pending.is_empty(), "the node exited with calls unresolved: {:?}", self.pending);
            }
            _ => {}
        }
    }

    fn io(&mut self, io: Io) {
        match io {
            Io::Write { stream } => {
                self.writing.insert(stream);
            }
            Io::Close { stream } => {
                self.writing.remove(&stream);
            }
            Io::Spawn { ticket, id } => self.spawns.push((ticket, id)),
            Io::Exit { .. } => self.host_exited = true,
            Io::ShutdownWrite { .. } | Io::Signal { .. } | Io::Timer(_) => {}
        }
    }
}

/// Seeds, for both places: the golden frames arriving from the parent; a call from the parent
/// run and answered, then shutdown with the writes completing and time passing; a spawn carried
/// out, a call to the child, the child's exit.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for place in [0u8, 1] {
        let mut s = Script::default();
        s.byte(place);
        for f in crate::golden::frames().iter().filter(|f| f.len() <= 255) {
            s.byte(0).byte(0).short_slice(f);
        }
        seeds.push(s.0);

        let mut s = Script::default();
        s.byte(place);
        let call = arbor_core::call::CallRequest::new("work", vec![1, 2, 3]).encode();
        let msg = arbor_core::frame::Message::new(
            ContextId(1),
            ContextId(0),
            arbor_core::handle::Handle::CALL_FUNCTION,
            arbor_core::frame::Encoding::Postcard,
            call,
        )
        .with_reply_to(arbor_core::handle::Handle(1000));
        s.byte(0).byte(0).short_slice(&msg.to_frame().to_vec());
        s.byte(0).byte(7).byte(1).byte(0).short_slice(b"ok"); // the call finishes
        s.byte(0).byte(4).u16(u16::MAX); // its answer is written
        s.byte(0).byte(9); // a spawn
        s.byte(0).byte(8).byte(1).byte(1); // time passes
        s.byte(0).byte(10).byte(0); // the spawn is carried out
        s.byte(0).byte(12).byte(3).byte(0).short_slice(b"args"); // a call to context 2
        s.byte(0).byte(14); // shutdown
        for _ in 0..8 {
            s.byte(0).byte(4).u16(u16::MAX).byte(0).byte(8).byte(4).byte(0);
        }
        seeds.push(s.0);
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn returned(call: u64) -> Output {
        Output::CallReturned { call: CallId(call), result: Ok(Bytes::new()) }
    }

    #[test]
    #[should_panic(expected = "resolved twice")]
    fn a_call_resolved_twice_is_caught() {
        let mut fx = Fixture::new(true);
        fx.pending.insert(CallId(0));
        fx.output(returned(0));
        fx.output(returned(0));
    }

    #[test]
    #[should_panic(expected = "never made")]
    fn a_call_resolved_that_was_never_made_is_caught() {
        Fixture::new(true).output(returned(7));
    }

    #[test]
    #[should_panic(expected = "after Output::Exit")]
    fn output_after_exit_is_caught() {
        let mut fx = Fixture::new(true);
        fx.output(Output::Exit { how: arbor_core::shutdown::ExitKind::Clean });
        fx.output(Output::CallsClosed);
    }

    #[test]
    #[should_panic(expected = "calls unresolved")]
    fn exiting_with_a_call_unresolved_is_caught() {
        let mut fx = Fixture::new(true);
        fx.pending.insert(CallId(3));
        fx.output(Output::Exit { how: arbor_core::shutdown::ExitKind::SigtermSelf });
    }
}
