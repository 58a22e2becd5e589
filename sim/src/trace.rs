//! The trace of a run: every node output and every world event, in order, with its time.
//!
//! The trace is what the invariant checkers read, what the text timeline and the Chrome trace
//! show, and what the trace hash summarises. Two runs of one plan give byte-identical traces;
//! the hash makes that cheap to compare.

use std::fmt::{self, Write as _};

use arbor_core::call::{CallId, JobId};
use arbor_core::frame::Header;
use arbor_core::handle::Handle;
use arbor_core::host::SpawnRefused;
use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, Output};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::{Cause, PhaseKind};
use arbor_core::time::Instant;

use crate::plan::{Fault, FaultText, ProcId};

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, in virtual time.
    pub at: Instant,
    /// Which process.
    pub proc: ProcId,
    /// What.
    pub what: What,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// The process was started.
    Spawned {
        /// Its context id.
        id: ContextId,
        /// Its pid.
        pid: Pid,
    },
    /// The host registered a stream with the node.
    Opened(StreamId),
    /// The node produced an output.
    Out(Output),
    /// The node's shutdown phase changed.
    Phase {
        /// The new phase.
        to: PhaseKind,
        /// Why shutdown began, once it has.
        cause: Option<Cause>,
    },
    /// The process wrote this text to stdout (a line, with its newline if it had one).
    Printed(String),
    /// The process issued a call that wants an answer.
    CallIssued {
        /// The node's name for it.
        call: CallId,
        /// The context called.
        to: ContextId,
        /// When it fails `Timeout` if no answer came first.
        deadline: Option<Instant>,
    },
    /// A fault was applied.
    Fault(Fault),
    /// A signal reached the process.
    Signalled(Signal),
    /// The process ended.
    Died(ExitStatus),
    /// The process began its graceful shutdown on the script's request.
    ShutdownRequested,
    /// The host stopped (`paused`) or resumed reading the process's loggers and child streams:
    /// the bytes queued towards its parent crossed the high-water mark (`Action::Backpressure`).
    Backpressure {
        /// Whether loggers and child streams are now left unread.
        paused: bool,
        /// Bytes queued on the parent stream at that moment.
        parent_queued: usize,
    },
    /// A read of one of the process's loggers or child streams (the reads backpressure holds
    /// back) left more bytes queued on its parent stream than ever before, and more than the
    /// high-water mark (only such marks are recorded: they are what the `parent-queue-bound`
    /// checker judges).
    ParentQueued {
        /// The stream read: a logger, or a child's framed stream.
        stream: StreamId,
        /// Bytes queued on the parent stream right after the read.
        queued: usize,
        /// How many of them that read added (the frames of the lines it completed).
        read: usize,
    },
    /// The host stopped (`held`) or resumed reading one child's stream: the bytes queued
    /// towards that child crossed the child high-water mark (`Action::ChildHeld`).
    ChildHeld {
        /// The child's framed stream.
        stream: StreamId,
        /// Whether it is now left unread.
        held: bool,
        /// Bytes queued towards the child at that moment.
        queued: usize,
    },
    /// The process asked its node to stop one child on its own (`kill`: to kill it), and the
    /// node took the request.
    ChildControl {
        /// The child's context id.
        child: ContextId,
        /// Killed rather than shut down.
        kill: bool,
    },
    /// A spawn the process asked for will not be carried out (`Action::SpawnRefused`): plan
    /// process `child` is never born.
    SpawnRefused {
        /// The plan process that was to be spawned.
        child: ProcId,
        /// Why not.
        reason: SpawnRefused,
    },
}

/// A run's events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The events, in order.
    pub events: Vec<Event>,
}

/// The header of a transmitted frame, if the output is one.
pub fn transmitted(o: &Output) -> Option<Header> {
    match o {
        Output::Transmit { frame, .. } => Header::parse(frame.header()).ok(),
        _ => None,
    }
}

/// The header of a transmitted SHUTDOWN frame, if the output is one (checked on the handle's
/// bytes first: checkers ask this of every frame of a run).
pub fn transmitted_shutdown(o: &Output) -> Option<Header> {
    match o {
        Output::Transmit { frame, .. } if frame.header()[14..18] == Handle::SHUTDOWN.0.to_be_bytes() => {
            Header::parse(frame.header()).ok()
        }
        _ => None,
    }
}

fn hash_what(h: &mut Fnv, w: &What) {
    match w {
        What::Spawned { id, pid } => {
            h.u64(1);
            h.u64(u64::from(id.0) << 32 | u64::from(pid.0));
        }
        What::Opened(s) => h.u64(2 << 32 | u64::from(s.0)),
        What::Out(o) => {
            h.u64(3);
            hash_output(h, o);
        }
        What::Phase { to, cause } => h.u64(4 << 32 | (*to as u64) << 8 | cause.map_or(0xff, |c| c as u64)),
        What::Printed(t) => {
            h.u64(5);
            h.bytes(t.as_bytes());
        }
        What::CallIssued { call, to, deadline } => {
            h.u64(6);
            h.u64(call.0);
            h.u64(u64::from(to.0));
            if let Some(at) = deadline {
                h.u64(at.as_nanos());
            }
        }
        What::Fault(f) => {
            h.u64(7);
            h.bytes(format!("{}", FaultText(f)).as_bytes());
        }
        What::Signalled(s) => h.u64(8 << 32 | *s as u64),
        What::Died(st) => h.u64(match st {
            ExitStatus::Code(c) => 9 << 40 | u64::from(*c as u32),
            ExitStatus::Signaled(s) => 10 << 40 | u64::from(*s as u32),
        }),
        What::ShutdownRequested => h.u64(11),
        What::Backpressure { paused, parent_queued } => {
            h.u64(12 << 32 | u64::from(*paused));
            h.u64(*parent_queued as u64);
        }
        What::ParentQueued { stream, queued, read } => {
            h.u64(13 << 32 | u64::from(stream.0));
            h.u64(*queued as u64);
            h.u64(*read as u64);
        }
        What::SpawnRefused { child, reason } => h.u64(14 << 40 | (*reason as u64) << 32 | *child as u64),
        What::ChildControl { child, kill } => h.u64(15 << 40 | u64::from(*kill) << 32 | u64::from(child.0)),
        What::ChildHeld { stream, held, queued } => {
            h.u64(16 << 40 | u64::from(*held) << 32 | u64::from(stream.0));
            h.u64(*queued as u64);
        }
    }
}

fn hash_output(h: &mut Fnv, o: &Output) {
    match o {
        Output::Transmit { stream, frame } => {
            h.u64(1 << 32 | u64::from(stream.0));
            h.bytes(frame.header());
        }
        Output::ShutdownWrite { stream } => h.u64(2 << 32 | u64::from(stream.0)),
        Output::Close { stream } => h.u64(3 << 32 | u64::from(stream.0)),
        Output::Signal { pid, signal } => h.u64(4 << 40 | (*signal as u64) << 32 | u64::from(pid.0)),
        Output::RunCall { job, caller, request } => {
            h.u64(5 << 32 | u64::from(caller.0));
            h.u64(job.0);
            h.bytes(request.function.as_bytes());
        }
        Output::CallsClosed => h.u64(6),
        Output::CallReturned { call, result } => {
            h.u64(7);
            h.u64(call.0);
            match result {
                Ok(v) => h.bytes(v),
                Err(e) => {
                    h.u64(u64::MAX - e.kind as u64);
                    h.bytes(e.message.as_bytes());
                }
            }
        }
        Output::LogLine(l) => {
            h.u64(8 << 32 | u64::from(l.context.0));
            h.u64(u64::from(l.level));
            h.bytes(l.source.as_bytes());
            h.bytes(l.text.as_bytes());
        }
        Output::IdsAvailable => h.u64(9),
        Output::Diagnostic(d) => {
            h.u64(10);
            h.bytes(format!("{d:?}").as_bytes());
        }
        Output::Exit { how } => h.u64(11 << 32 | *how as u64),
        Output::CancelCall { job } => {
            h.u64(12);
            h.u64(job.0);
        }
        Output::Departed(d) => {
            h.u64(13 << 32 | u64::from(d.id.0));
            h.u64(u64::from(d.parent.0) << 32 | u64::from(d.pid.0));
            h.u64(d.cause as u64);
            h.u64(match d.status {
                ExitStatus::Code(c) => 9 << 40 | u64::from(c as u32),
                ExitStatus::Signaled(s) => 10 << 40 | u64::from(s as u32),
            });
        }
    }
}

/// FNV-1a, 64-bit: small, stable and written out here so hashes never change under us.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes bytes in: eight at a time as a word ([`Fnv::u64`]), the last few one by one, then
    /// their count (so `ab` + `c` and `a` + `bc` differ). A trace's bytes are mostly frame
    /// headers of 26 bytes, which byte-wise FNV took a multiply each for.
    pub fn bytes(&mut self, b: &[u8]) {
        let words = b.chunks_exact(8);
        let tail = words.remainder();
        for w in words {
            self.u64(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        for x in tail {
            self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.u64(b.len() as u64);
    }
    /// Mixes a number in, a word at a time (FNV's multiply on whole words: not byte-wise FNV-1a,
    /// but as stable and four times cheaper for the numbers that dominate a trace).
    pub fn u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Trace {
    /// The outputs of process `p`, in order.
    pub fn outputs_of(&self, p: ProcId) -> Vec<&Output> {
        self.events
            .iter()
            .filter(|e| e.proc == p)
            .filter_map(|e| match &e.what {
                What::Out(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// Position among all events of process `p`'s first output matching `f`.
    pub fn first(&self, p: ProcId, f: impl Fn(&Output) -> bool) -> Option<usize> {
        self.events.iter().position(|e| e.proc == p && matches!(&e.what, What::Out(o) if f(o)))
    }

    /// The messages process `p` transmitted, decoded, with their streams.
    pub fn sent_by(&self, p: ProcId) -> Vec<(StreamId, arbor_core::frame::Message)> {
        self.outputs_of(p)
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit { stream, frame } => {
                    let mut d = arbor_core::frame::Decoder::new(u32::MAX);
                    d.feed(&frame.to_vec());
                    Some((*stream, d.next_message().ok()??))
                }
                _ => None,
            })
            .collect()
    }

    /// The result of `call`, made by process `p`, if it was resolved.
    pub fn result_of(&self, p: ProcId, call: CallId) -> Option<&arbor_core::call::CallResult> {
        self.outputs_of(p).into_iter().find_map(|o| match o {
            Output::CallReturned { call: c, result } if *c == call => Some(result),
            _ => None,
        })
    }

    /// Log lines that reached the root (process 0), as `(context, text)`.
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
    pub fn exit_time(&self, p: ProcId) -> Option<Instant> {
        self.events
            .iter()
            .find(|e| e.proc == p && matches!(e.what, What::Out(Output::Exit { .. })))
            .map(|e| e.at)
    }

    /// Process `p`'s shutdown-relevant outputs, in order, in words: `calls closed`,
    /// `SHUTDOWN to N`, `SHUT_WR stdout`, `close stdout|parent|child stream`,
    /// `SIGTERM|SIGKILL pid`, `exit SigtermSelf|Clean`.
    pub fn story(&self, p: ProcId) -> Vec<String> {
        use crate::world::{PARENT_STREAM, STDOUT_STREAM};
        let mut out = Vec::new();
        for o in self.outputs_of(p) {
            out.push(match o {
                Output::CallsClosed => "calls closed".to_string(),
                Output::Transmit { .. } => match transmitted(o) {
                    Some(h) if h.handle == Handle::SHUTDOWN => format!("SHUTDOWN to {}", h.dst),
                    _ => continue,
                },
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

    /// Appends an event.
    pub fn push(&mut self, at: Instant, proc: ProcId, what: What) {
        self.events.push(Event { at, proc, what });
    }

    /// The trace hash: a 64-bit digest of every event, field by field (time, process, kind and
    /// every value the timeline shows — frame headers, answers' bytes, log lines with their
    /// source and level, departures with their exit status), so equal hashes mean equal
    /// timelines for all practical purposes, at a fraction of the cost of printing them. Frame
    /// bodies are not digested: their lengths are, in the headers, and what they carry shows up
    /// as the events they cause.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::default();
        for e in &self.events {
            h.u64(e.at.as_nanos());
            h.u64(e.proc as u64);
            hash_what(&mut h, &e.what);
        }
        h.finish()
    }

    /// The readable timeline, one line per event.
    pub fn timeline(&self) -> String {
        let mut s = String::new();
        for e in &self.events {
            let _ = writeln!(s, "{}", Line(e));
        }
        s
    }

    /// The trace as Chrome-trace JSON (open in Perfetto or chrome://tracing): one track per
    /// process, an instant event per trace event, and a span for each process's life.
    pub fn chrome_json(&self) -> String {
        let mut s = String::from("{\"traceEvents\":[\n");
        let mut first = true;
        let mut sep = |s: &mut String| {
            if !first {
                s.push_str(",\n");
            }
            first = false;
        };
        let mut born: Vec<(ProcId, u64)> = Vec::new();
        for e in &self.events {
            let us = e.at.as_nanos() as f64 / 1000.0;
            match &e.what {
                What::Spawned { id, pid } => {
                    born.push((e.proc, e.at.as_nanos()));
                    sep(&mut s);
                    let _ = write!(
                        s,
                        "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{},\"args\":{{\"name\":\"proc {} (context {id}, pid {pid})\"}}}}",
                        e.proc, e.proc
                    );
                }
                What::Died(status) => {
                    if let Some((_, start)) = born.iter().find(|(p, _)| *p == e.proc) {
                        sep(&mut s);
                        let dur = (e.at.as_nanos() - start) as f64 / 1000.0;
                        let _ = write!(
                            s,
                            "{{\"name\":\"alive\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{:.3},\"dur\":{dur:.3},\"args\":{{\"end\":\"{}\"}}}}",
                            e.proc,
                            *start as f64 / 1000.0,
                            json_escape(&format!("{status:?}"))
                        );
                    }
                }
                _ => {}
            }
            sep(&mut s);
            let _ = write!(
                s,
                "{{\"name\":\"{}\",\"ph\":\"i\",\"s\":\"t\",\"pid\":1,\"tid\":{},\"ts\":{us:.3}}}",
                json_escape(&format!("{}", WhatText(&e.what))),
                e.proc
            );
        }
        s.push_str("\n]}\n");
        s
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// One timeline line: `   0.001250000 p2  <what>`.
#[derive(Debug)]
pub struct Line<'a>(pub &'a Event);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.at.as_nanos();
        write!(
            f,
            "{:>4}.{:09} p{:<3} {}",
            ns / 1_000_000_000,
            ns % 1_000_000_000,
            self.0.proc,
            WhatText(&self.0.what)
        )
    }
}

/// The readable form of one event.
#[derive(Debug)]
pub struct WhatText<'a>(pub &'a What);

impl fmt::Display for WhatText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            What::Spawned { id, pid } => write!(f, "spawned as context {id}, pid {pid}"),
            What::Opened(s) => write!(f, "stream {s} opened"),
            What::Out(o) => OutText(o).fmt(f),
            What::Phase { to, cause } => match cause {
                Some(c) => write!(f, "phase {to:?} ({c:?})"),
                None => write!(f, "phase {to:?}"),
            },
            What::Printed(line) => write!(f, "prints {line:?}"),
            What::CallIssued { call, to, deadline: None } => write!(f, "issues call {} to {to}", call.0),
            What::CallIssued { call, to, deadline: Some(at) } => {
                write!(f, "issues call {} to {to}, deadline {:.9}s", call.0, at.as_nanos() as f64 / 1e9)
            }
            What::Fault(x) => write!(f, "FAULT {}", FaultText(x)),
            What::Signalled(s) => write!(f, "receives {s:?}"),
            What::Died(s) => write!(f, "dies: {s:?}"),
            What::ShutdownRequested => f.write_str("shutdown requested"),
            What::Backpressure { paused: true, parent_queued } => {
                write!(f, "loggers and children paused: {parent_queued} bytes queued to the parent")
            }
            What::Backpressure { paused: false, parent_queued } => {
                write!(f, "loggers and children resumed: {parent_queued} bytes queued to the parent")
            }
            What::ParentQueued { stream, queued, read } => {
                write!(f, "parent queue high mark {queued} bytes ({read} from this read of {stream})")
            }
            What::SpawnRefused { child, reason } => write!(f, "spawn of p{child} refused: {reason}"),
            What::ChildHeld { stream, held: true, queued } => {
                write!(f, "child stream {stream} held: {queued} bytes queued to it")
            }
            What::ChildHeld { stream, held: false, queued } => {
                write!(f, "child stream {stream} read again: {queued} bytes queued to it")
            }
            What::ChildControl { child, kill: false } => write!(f, "stops child context {child} on its own"),
            What::ChildControl { child, kill: true } => write!(f, "kills child context {child}"),
        }
    }
}

/// The readable form of one node output.
#[derive(Debug)]
pub struct OutText<'a>(pub &'a Output);

impl fmt::Display for OutText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Output::Transmit { stream, frame } => match Header::parse(frame.header()) {
                Ok(h) => write!(
                    f,
                    "→ {stream} {} dst={} src={} auth={} reply_to={} len={}",
                    Handle(h.handle.0),
                    h.dst,
                    h.src,
                    h.auth,
                    h.reply_to,
                    h.len
                ),
                Err(_) => write!(f, "→ {stream} (corrupt header)"),
            },
            Output::ShutdownWrite { stream } => write!(f, "SHUT_WR {stream}"),
            Output::Close { stream } => write!(f, "close {stream}"),
            Output::Signal { pid, signal } => write!(f, "signal {signal:?} → pid {pid}"),
            Output::RunCall { job, caller, request } => {
                write!(f, "run call job={} {}() for context {caller}", JobText(*job), request.function)
            }
            Output::CallsClosed => f.write_str("call channel closed"),
            Output::CallReturned { call, result } => match result {
                Ok(v) => write!(f, "call {} returned {} bytes", call.0, v.len()),
                Err(e) => write!(f, "call {} failed: {:?} {}", call.0, e.kind, e.message),
            },
            Output::LogLine(l) => write!(f, "log [{} {}] {:?}", l.context, l.source, l.text),
            Output::IdsAvailable => f.write_str("ids available"),
            Output::Diagnostic(d) => DiagText(d).fmt(f),
            Output::Exit { how } => write!(f, "EXIT {how:?}"),
            Output::CancelCall { job } => write!(f, "cancel running call job={}", JobText(*job)),
            Output::Departed(d) => {
                write!(
                    f,
                    "departed: context {} (pid {}, child of {}) {:?}, {}",
                    d.id, d.pid, d.parent, d.status, d.cause
                )
            }
        }
    }
}

#[derive(Debug)]
struct JobText(JobId);

impl fmt::Display for JobText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 .0)
    }
}

#[derive(Debug)]
struct DiagText<'a>(&'a Diagnostic);

impl fmt::Display for DiagText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Diagnostic::Rejected(r) => write!(
                f,
                "rejected {} from {:?} (dst={} src={} auth={}): {}",
                r.handle, r.stream, r.dst, r.src, r.auth, r.reason
            ),
            other => write!(f, "diagnostic {other:?}"),
        }
    }
}
