//! The node's call API as a host with large arguments or a burst of calls uses it:
//! `CallRequest::encode_args` + `Node::call_body`, and `Node::calls_waiting`.

use std::time::Duration;

use arbor_core::call::{CallErrorKind, CallId, CallRequest, JobId, RequestMeta};
use arbor_core::frame::{Encoding, Message};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::router::StreamId;
use arbor_core::time::Instant;
use bytes::Bytes;

const PARENT: StreamId = StreamId(1);

fn outputs(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// A child context with its parent stream open.
fn child(max_message_size: u32) -> Node {
    let mut config = NodeConfig::child(ContextId(1), vec![ContextId::ROOT]);
    config.max_message_size = max_message_size;
    let mut node = Node::new(config);
    node.handle_input(Instant::ZERO, Input::StreamOpened { stream: PARENT, kind: StreamKind::Parent })
        .unwrap();
    outputs(&mut node);
    node
}

/// A body built ahead with the arguments serialized in place is sent as it is: the frame on the
/// wire carries exactly those bytes.
#[test]
fn a_prebuilt_body_goes_out_unchanged() {
    let mut node = child(1 << 20);
    let body = CallRequest::encode_args("add", &(2i32, 3i32)).unwrap();
    let sent = body.bytes().clone();
    node.call_body(Instant::ZERO, ContextId::ROOT, body).unwrap();
    let frames: Vec<_> = outputs(&mut node)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit { stream, frame } if stream == PARENT => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].body(), &sent);
}

/// A body over the maximum message size is refused locally, typed, and nothing is sent; the
/// next call goes out normally.
#[test]
fn an_oversize_prebuilt_body_is_refused_locally() {
    let mut node = child(1024);
    let big = CallRequest::encode_args("f", &vec![7u8; 4096]).unwrap();
    let err = node.call_body(Instant::ZERO, ContextId::ROOT, big).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::TooLarge);
    assert!(outputs(&mut node).iter().all(|o| !matches!(o, Output::Transmit { .. })));
    let small = CallRequest::encode_args("f", &1u8).unwrap();
    node.call_body(Instant::ZERO, ContextId::ROOT, small).unwrap();
    assert!(outputs(&mut node).iter().any(|o| matches!(o, Output::Transmit { .. })));
}

/// Calls received while one runs wait in the node, one `RunCall` at a time; `calls_waiting`
/// says how many, which is what lets a host batch the answers of a burst.
#[test]
fn calls_waiting_counts_the_calls_behind_the_running_one() {
    let mut node = child(1 << 20);
    let mut wire = Vec::new();
    for i in 0..3u32 {
        let body = CallRequest::encode_parts("f", b"");
        let msg =
            Message::new(ContextId(1), ContextId::ROOT, Handle::CALL_FUNCTION, Encoding::Postcard, body)
                .with_reply_to(Handle(1000 + i));
        wire.extend_from_slice(&msg.into_frame().to_vec());
    }
    node.handle_input(Instant::ZERO, Input::Received { stream: PARENT, bytes: &wire }).unwrap();
    let jobs: Vec<_> = outputs(&mut node)
        .into_iter()
        .filter_map(|o| match o {
            Output::RunCall { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one call at a time");
    assert_eq!(node.calls_waiting(), 2);
    node.handle_input(Instant::ZERO, Input::CallFinished { job: jobs[0], result: Ok(Default::default()) })
        .unwrap();
    let next = outputs(&mut node).into_iter().filter(|o| matches!(o, Output::RunCall { .. })).count();
    assert_eq!(next, 1);
    assert_eq!(node.calls_waiting(), 1);
}

// --- S31: deadlines and cancellation ------------------------------------------------------------

const TO_CHILD: StreamId = StreamId(7);

/// A root and its child 1, joined by hand: every frame one transmits is fed to the other at the
/// same instant. Outputs other than frames are kept per side, in order.
struct Pair {
    root: Node,
    child: Node,
    now: Instant,
    at_root: Vec<Output>,
    at_child: Vec<Output>,
    /// Frames for the child are dropped while set (a cut-off cancel).
    drop_to_child: bool,
}

impl Pair {
    fn new() -> Pair {
        let mut root = Node::new(NodeConfig::root());
        let kind = StreamKind::Child { id: ContextId(1), pid: None, name: None };
        root.handle_input(Instant::ZERO, Input::StreamOpened { stream: TO_CHILD, kind }).unwrap();
        let mut pair = Pair {
            root,
            child: child(1 << 20),
            now: Instant::ZERO,
            at_root: Vec::new(),
            at_child: Vec::new(),
            drop_to_child: false,
        };
        pair.pump();
        pair.at_root.clear();
        pair.at_child.clear();
        pair
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(o) = self.root.poll_output() {
                match o {
                    Output::Transmit { stream, frame } if stream == TO_CHILD => {
                        if !self.drop_to_child {
                            let bytes = frame.to_vec();
                            self.child
                                .handle_input(self.now, Input::Received { stream: PARENT, bytes: &bytes })
                                .unwrap();
                        }
                        moved = true;
                    }
                    other => self.at_root.push(other),
                }
            }
            while let Some(o) = self.child.poll_output() {
                match o {
                    Output::Transmit { stream, frame } if stream == PARENT => {
                        let bytes = frame.to_vec();
                        self.root
                            .handle_input(self.now, Input::Received { stream: TO_CHILD, bytes: &bytes })
                            .unwrap();
                        moved = true;
                    }
                    other => self.at_child.push(other),
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn call(&mut self, function: &str, timeout: Option<Duration>) -> CallId {
        let meta = RequestMeta { types: None, timeout };
        let body = CallRequest::body_with(function, b"", meta);
        let call = self.root.call_body(self.now, ContextId(1), body).unwrap();
        self.pump();
        call
    }

    /// Moves time to `at`, firing the root's and the child's timers that are due.
    fn advance(&mut self, at: Instant) {
        self.now = at;
        self.root.handle_timeout(at);
        self.child.handle_timeout(at);
        self.pump();
    }

    fn finish(&mut self, job: JobId) {
        self.child.handle_input(self.now, Input::CallFinished { job, result: Ok(Bytes::new()) }).unwrap();
        self.pump();
    }

    fn answers(&self, call: CallId) -> Vec<Result<Bytes, CallErrorKind>> {
        self.at_root
            .iter()
            .filter_map(|o| match o {
                Output::CallReturned { call: c, result } if *c == call => {
                    Some(result.clone().map_err(|e| e.kind))
                }
                _ => None,
            })
            .collect()
    }

    fn started(&self) -> Vec<(JobId, String)> {
        self.at_child
            .iter()
            .filter_map(|o| match o {
                Output::RunCall { job, request, .. } => Some((*job, request.function.to_string())),
                _ => None,
            })
            .collect()
    }

    fn not_started(&self) -> Vec<(String, bool)> {
        self.at_child
            .iter()
            .filter_map(|o| match o {
                Output::Diagnostic(Diagnostic::CallNotStarted { function, cancelled, .. }) => {
                    Some((function.to_string(), *cancelled))
                }
                _ => None,
            })
            .collect()
    }
}

fn ms(n: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(n)
}

#[test]
fn s31_calls_queued_behind_a_hung_call_time_out_at_their_deadlines_and_never_start() {
    let mut p = Pair::new();
    let hung = p.call("hang", None);
    let a = p.call("a", Some(Duration::from_millis(100)));
    let b = p.call("b", Some(Duration::from_millis(200)));
    assert_eq!(p.started().len(), 1, "only the hung call runs");
    assert_eq!(p.root.poll_timeout(), Some(ms(100)), "the earliest deadline is the root's timer");

    p.advance(ms(99));
    assert!(p.answers(a).is_empty(), "not before its deadline");
    p.advance(ms(100));
    assert_eq!(p.answers(a), vec![Err(CallErrorKind::Timeout)]);
    assert_eq!(p.not_started(), vec![("a".to_string(), true)], "the callee was told, and dropped it");
    p.advance(ms(200));
    assert_eq!(p.answers(b), vec![Err(CallErrorKind::Timeout)]);

    // The hung call ends at last: nothing queued behind it starts, nothing resolves twice.
    let (job, _) = p.started()[0].clone();
    p.finish(job);
    assert_eq!(p.started().len(), 1);
    assert_eq!(p.answers(hung), vec![Ok(Bytes::new())]);
    assert_eq!(p.answers(a).len() + p.answers(b).len(), 2);
    assert_eq!(p.root.pending_calls(), 0);
}

#[test]
fn s31_a_queued_call_whose_cancel_was_lost_still_never_starts_after_its_deadline() {
    let mut p = Pair::new();
    p.call("hang", None);
    let late = p.call("late", Some(Duration::from_millis(50)));
    p.drop_to_child = true; // the cancel never arrives
    p.advance(ms(50));
    assert_eq!(p.answers(late), vec![Err(CallErrorKind::Timeout)]);
    p.drop_to_child = false;
    p.advance(ms(60));
    let (job, _) = p.started()[0].clone();
    p.finish(job);
    assert_eq!(p.started().len(), 1, "expired in the queue: never started");
    assert_eq!(p.not_started(), vec![("late".to_string(), false)]);
}

#[test]
fn s31_a_running_call_whose_caller_gave_up_is_reported_and_its_late_result_dropped() {
    let mut p = Pair::new();
    let slow = p.call("slow", Some(Duration::from_millis(10)));
    let (job, _) = p.started()[0].clone();
    p.advance(ms(10));
    assert_eq!(p.answers(slow), vec![Err(CallErrorKind::Timeout)]);
    assert!(p.at_child.iter().any(|o| matches!(o, Output::CancelCall { job: j } if *j == job)));
    p.finish(job);
    assert_eq!(p.answers(slow).len(), 1, "the late result is not sent, so not seen");
    assert!(
        !p.at_root.iter().any(|o| matches!(o, Output::Diagnostic(Diagnostic::UnknownHandle { .. }))),
        "nothing arrived for a handle nobody waits on"
    );
}

#[test]
fn s31_cancelling_a_call_resolves_it_once_and_the_callee_drops_it() {
    let mut p = Pair::new();
    p.call("hang", None);
    let dropped = p.call("dropped", None);
    p.root.cancel_call(p.now, dropped);
    p.pump();
    assert_eq!(p.answers(dropped), vec![Err(CallErrorKind::Cancelled)]);
    assert_eq!(p.not_started(), vec![("dropped".to_string(), true)]);
    p.root.cancel_call(p.now, dropped); // twice: nothing more
    p.pump();
    assert_eq!(p.answers(dropped).len(), 1);
}

#[test]
fn a_failed_call_no_reply_is_reported_where_it_failed_not_lost() {
    let mut p = Pair::new();
    let body = CallRequest::body("fail", b"");
    p.root.call_no_reply_body(p.now, ContextId(1), body).unwrap();
    p.pump();
    let (job, _) = p.started()[0].clone();
    let error = arbor_core::call::CallError::new(CallErrorKind::TypeMismatch, "wrong types", "context 1");
    p.child.handle_input(p.now, Input::CallFinished { job, result: Err(error.clone()) }).unwrap();
    p.pump();
    assert!(p
        .at_child
        .contains(&Output::Diagnostic(Diagnostic::UnansweredCallFailed { caller: ContextId::ROOT, error })));
}

#[test]
fn s31_a_call_answered_before_its_deadline_leaves_no_timer_behind() {
    let mut p = Pair::new();
    let quick = p.call("quick", Some(Duration::from_secs(5)));
    let (job, _) = p.started()[0].clone();
    p.finish(job);
    assert_eq!(p.answers(quick), vec![Ok(Bytes::new())]);
    assert_eq!(p.root.poll_timeout(), None);
    p.advance(ms(5000));
    assert_eq!(p.answers(quick).len(), 1);
}

// --- S32: one child on its own, and every departure reaching the root -------------------------

mod one_child {
    use super::*;
    use arbor_core::departure::{ControlError, DepartureCause};
    use arbor_core::reaper::{ExitStatus, Pid, Signal};

    const KID: StreamId = StreamId(3);
    const SIBLING: StreamId = StreamId(4);

    /// The root with two children, 1 (pid 10) and 2 (pid 11).
    fn root() -> Node {
        let mut root = Node::new(NodeConfig::root());
        for (stream, id, pid) in [(KID, 1, 10), (SIBLING, 2, 11)] {
            let kind =
                StreamKind::Child { id: ContextId(id), pid: Some(Pid(pid)), name: Some(format!("k{id}")) };
            root.handle_input(Instant::ZERO, Input::StreamOpened { stream, kind }).unwrap();
        }
        outputs(&mut root);
        root
    }

    fn handles_sent(out: &[Output], on: StreamId) -> Vec<Handle> {
        out.iter()
            .filter_map(|o| match o {
                Output::Transmit { stream, frame } if *stream == on => {
                    Some(Handle(u32::from_be_bytes(frame.header()[14..18].try_into().unwrap())))
                }
                _ => None,
            })
            .collect()
    }

    fn departures(out: &[Output]) -> Vec<(ContextId, DepartureCause, ContextId)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Departed(d) => Some((d.id, d.cause, d.parent)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn s32_a_child_shut_down_alone_is_asked_once_and_reported_shut_down() {
        let mut root = root();
        root.shutdown_child(Instant::ZERO, ContextId(1)).unwrap();
        let out = outputs(&mut root);
        assert_eq!(handles_sent(&out, KID), vec![Handle::SHUTDOWN]);
        assert!(handles_sent(&out, SIBLING).is_empty(), "the sibling is told nothing");
        assert_eq!(root.phase(), arbor_core::shutdown::Phase::Running, "the root runs on");
        // It leaves on its own: EOF, then its exit.
        root.handle_input(Instant::ZERO, Input::Eof { stream: KID }).unwrap();
        root.handle_input(
            Instant::ZERO,
            Input::ChildExited { pid: Pid(10), status: ExitStatus::Signaled(15) },
        )
        .unwrap();
        let out = outputs(&mut root);
        assert_eq!(departures(&out), vec![(ContextId(1), DepartureCause::Shutdown, ContextId::ROOT)]);
        assert_eq!(root.poll_timeout(), None, "its stop is over: no timer left");
        assert_eq!(
            root.shutdown_child(Instant::ZERO, ContextId(1)),
            Err(ControlError::NotAChild(ContextId(1)))
        );
    }

    #[test]
    fn s32_a_child_that_does_not_leave_is_forced_on_the_escalation_schedule() {
        let mut root = root();
        root.shutdown_child(Instant::ZERO, ContextId(1)).unwrap();
        outputs(&mut root);
        let grace = root.config().grace;
        let esc = root.config().escalation;
        assert_eq!(root.poll_timeout(), Some(Instant::ZERO + grace));
        let t1 = Instant::ZERO + grace;
        root.handle_timeout(t1);
        let out = outputs(&mut root);
        assert!(out.contains(&Output::Close { stream: KID }));
        assert!(out.contains(&Output::Signal { pid: Pid(10), signal: Signal::Term }));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Signal { pid, .. } if *pid == Pid(11))),
            "never the sibling"
        );
        let t2 = t1 + esc.kill_after;
        root.handle_timeout(t2);
        assert!(outputs(&mut root).contains(&Output::Signal { pid: Pid(10), signal: Signal::Kill }));
        root.handle_input(t2, Input::ChildExited { pid: Pid(10), status: ExitStatus::Signaled(9) }).unwrap();
        assert_eq!(
            departures(&outputs(&mut root)),
            vec![(ContextId(1), DepartureCause::Forced, ContextId::ROOT)]
        );
    }

    #[test]
    fn s32_a_killed_child_fails_its_calls_at_once_and_is_reported_killed() {
        let mut root = root();
        let call = root.call(Instant::ZERO, ContextId(1), "hang", b"".to_vec()).unwrap();
        outputs(&mut root);
        root.kill_child(Instant::ZERO, ContextId(1)).unwrap();
        let out = outputs(&mut root);
        // SIGKILL before the stream closes: a child that saw its stream close first could end
        // itself first, and its departure would then not say it was killed.
        let kill = out.iter().position(|o| *o == Output::Signal { pid: Pid(10), signal: Signal::Kill });
        let close = out.iter().position(|o| *o == Output::Close { stream: KID });
        assert!(kill.is_some() && close.is_some() && kill < close, "{out:?}");
        assert!(out.iter().any(
            |o| matches!(o, Output::CallReturned { call: c, result: Err(e) } if *c == call && e.kind == CallErrorKind::Disconnected)
        ));
        root.handle_input(
            Instant::ZERO,
            Input::ChildExited { pid: Pid(10), status: ExitStatus::Signaled(9) },
        )
        .unwrap();
        assert_eq!(
            departures(&outputs(&mut root)),
            vec![(ContextId(1), DepartureCause::Killed, ContextId::ROOT)]
        );
    }

    #[test]
    fn s32_a_child_reaped_before_its_stream_ends_is_no_longer_a_child_to_stop() {
        let mut root = root();
        root.handle_input(Instant::ZERO, Input::ChildExited { pid: Pid(10), status: ExitStatus::Code(0) })
            .unwrap();
        assert_eq!(
            departures(&outputs(&mut root)),
            vec![(ContextId(1), DepartureCause::Exited, ContextId::ROOT)]
        );
        // Its stream has not reached EOF yet, but it has left: nothing to wait for.
        assert_eq!(
            root.shutdown_child(Instant::ZERO, ContextId(1)),
            Err(ControlError::NotAChild(ContextId(1)))
        );
        assert_eq!(root.kill_child(Instant::ZERO, ContextId(1)), Err(ControlError::NotAChild(ContextId(1))));
    }

    #[test]
    fn a_dead_reply_from_a_child_the_call_never_passed_is_ignored() {
        // The root calls child 2; child 1, down another stream, forges a dead reply for it.
        let mut root = root();
        let call = root.call(Instant::ZERO, ContextId(2), "work", b"".to_vec()).unwrap();
        outputs(&mut root);
        let handle = Handle(1000); // the root's first reply handle
        let forged = arbor_core::frame::Message::dead(ContextId::ROOT, ContextId(1), handle, "gone");
        root.handle_input(
            Instant::ZERO,
            Input::Received { stream: KID, bytes: &forged.into_frame().to_vec() },
        )
        .unwrap();
        let out = outputs(&mut root);
        assert!(!out.iter().any(|o| matches!(o, Output::CallReturned { .. })), "{out:?}");
        assert_eq!(root.pending_calls(), 1, "the call still waits for its answer");
        // The callee itself may answer dead (a refusal), and that resolves it.
        let refusal = arbor_core::frame::Message::dead(ContextId::ROOT, ContextId(2), handle, "refused");
        root.handle_input(
            Instant::ZERO,
            Input::Received { stream: SIBLING, bytes: &refusal.into_frame().to_vec() },
        )
        .unwrap();
        assert!(outputs(&mut root).iter().any(
            |o| matches!(o, Output::CallReturned { call: c, result: Err(e) } if *c == call && e.kind == CallErrorKind::Undeliverable)
        ));
    }

    #[test]
    fn s32_a_grandchilds_departure_travels_to_the_root_named_by_its_parent() {
        // Child 1 reaps its own child 5; its report goes up as CHILD_LEFT and the root hears
        // of it, with 1 as the parent whatever the body claims.
        let mut mid = child(1 << 20);
        let kind = StreamKind::Child { id: ContextId(5), pid: Some(Pid(50)), name: Some("g".into()) };
        mid.handle_input(Instant::ZERO, Input::StreamOpened { stream: StreamId(9), kind }).unwrap();
        outputs(&mut mid);
        mid.handle_input(Instant::ZERO, Input::ChildExited { pid: Pid(50), status: ExitStatus::Code(3) })
            .unwrap();
        let out = outputs(&mut mid);
        assert_eq!(departures(&out), vec![(ContextId(5), DepartureCause::Exited, ContextId(1))]);
        let report: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|o| match o {
                Output::Transmit { stream, frame } if *stream == PARENT => Some(frame.to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(report.len(), 1);

        let mut root = root();
        root.handle_input(Instant::ZERO, Input::Received { stream: KID, bytes: &report[0] }).unwrap();
        let out = outputs(&mut root);
        assert_eq!(departures(&out), vec![(ContextId(5), DepartureCause::Exited, ContextId(1))]);
        let d = out.iter().find_map(|o| match o {
            Output::Departed(d) => Some(d.clone()),
            _ => None,
        });
        assert_eq!(
            d.map(|d| (d.name, d.pid, d.status)),
            Some((Some("g".into()), Pid(50), ExitStatus::Code(3)))
        );
    }
}
