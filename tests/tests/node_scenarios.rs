//! The shutdown sequence and calls, scenario by scenario (docs/scenarios.md S1–S4, S15, S19, S20,
//! S22, S24), as the exact order of outputs each context produces (docs/shutdown.md). The nodes
//! run in the simulator's world, driven by hand with zero latency.

use std::time::Duration;

use arbor_core::call::CallErrorKind;
use arbor_core::frame::{Encoding, Message};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, Input, NodeConfig, Output};
use arbor_core::shutdown::{decode_budget, Phase};
use arbor_core::time::Instant;
use arbor_sim::plan::Fault;
use arbor_sim::world::PARENT_STREAM;
use arbor_tests::{chain, id, world};

const G: Duration = arbor_core::node::DEFAULT_GRACE;

fn is_shutdown(o: &Output) -> bool {
    matches!(o, Output::Transmit { frame, .. } if frame.header()[14..18] == Handle::SHUTDOWN.0.to_be_bytes())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// --- S1 ---------------------------------------------------------------------------------------

#[test]
fn s1_child_closes_its_call_channel_before_anything_else_and_leaves_without_waiting_for_grace() {
    let mut h = chain(1);
    let child = 1;
    let call = h.call(0, id(&h, child), "echo", "ping").unwrap();
    h.settle();
    assert_eq!(h.trace.result_of(0, call), Some(&Ok(bytes::Bytes::from_static(b"ping"))));

    h.shutdown(0);
    h.run_until(Instant::ZERO + G);

    assert_eq!(
        h.trace.story(child),
        strs(&["calls closed", "SHUT_WR stdout", "close stdout", "close parent", "exit SigtermSelf"])
    );
    assert_eq!(
        h.trace.story(0),
        strs(&["calls closed", "SHUTDOWN to 1", "close child stream", "exit Clean"])
    );
    assert!(h.all_gone());
    assert_eq!(
        h.trace.exit_time(0),
        Some(Instant::ZERO),
        "nothing hung, so nobody waited for the grace period"
    );
}

// --- S2 ---------------------------------------------------------------------------------------

#[test]
fn s2_each_level_closes_its_channel_before_forwarding_shutdown_to_its_own_children() {
    let mut h = chain(2);
    let (child, grandchild) = (1, 2);
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);

    assert_eq!(
        h.trace.story(0),
        strs(&["calls closed", "SHUTDOWN to 1", "close child stream", "exit Clean"])
    );
    assert_eq!(
        h.trace.story(child),
        strs(&[
            "calls closed",
            "SHUTDOWN to 2",
            "SHUT_WR stdout",
            "close stdout",
            "close child stream",
            "close parent",
            "exit SigtermSelf"
        ])
    );
    assert_eq!(
        h.trace.story(grandchild),
        strs(&["calls closed", "SHUT_WR stdout", "close stdout", "close parent", "exit SigtermSelf"])
    );
    // Across the tree: the child closed its channel before it told the grandchild, which closed
    // its own channel only after that.
    let child_closed = h.trace.first(child, |o| matches!(o, Output::CallsClosed)).unwrap();
    let told = h.trace.first(child, is_shutdown).unwrap();
    let grandchild_closed = h.trace.first(grandchild, |o| matches!(o, Output::CallsClosed)).unwrap();
    assert!(child_closed < told && told < grandchild_closed);
    // The grandchild heard SHUTDOWN only from its immediate parent: the root never sent it one.
    assert!(!h.trace.sent_by(0).iter().any(|(_, m)| m.handle == Handle::SHUTDOWN && m.dst == ContextId(2)));
    assert!(h.all_gone());
}

// --- S3 / S4 ----------------------------------------------------------------------------------

#[test]
fn s3_hung_call_does_not_delay_shutdown_and_its_caller_hears_disconnected_once() {
    let mut h = chain(1);
    let child = 1;
    let call = h.call(0, id(&h, child), "hang", "").unwrap();
    h.settle();
    assert!(h.running_call(child), "main thread is stuck");

    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    assert!(h.all_gone());
    assert_eq!(h.trace.exit_time(child), Some(Instant::ZERO));
    let answers: Vec<_> = h
        .trace
        .outputs_of(0)
        .into_iter()
        .filter(|o| matches!(o, Output::CallReturned { call: c, .. } if *c == call))
        .collect();
    assert_eq!(answers.len(), 1);
    assert!(
        matches!(answers[0], Output::CallReturned { result: Err(e), .. } if e.kind == CallErrorKind::Disconnected)
    );
}

#[test]
fn s4_child_ignoring_sigterm_with_a_hung_call_is_still_gone_at_once() {
    let mut h = chain(1);
    let child = 1;
    h.fault(Fault::IgnoreSigterm(child));
    h.call(0, id(&h, child), "hang", "").unwrap();
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    assert!(h.all_gone());
    assert_eq!(
        h.trace.exit_time(0),
        Some(Instant::ZERO),
        "its own IO side ended it; no parent escalation needed"
    );
    assert!(!h.trace.story(0).iter().any(|s| s.starts_with("SIG")));
}

#[test]
fn s4_s23_a_frozen_child_is_forced_at_the_grace_deadline_and_killed() {
    let mut h = chain(1);
    let child = 1;
    h.fault(Fault::Freeze(child));
    h.shutdown(0);
    h.run_until(Instant::ZERO + G + Duration::from_secs(10));
    let pid = h.procs[child].pid;
    assert_eq!(
        h.trace.story(0),
        vec![
            "calls closed".to_string(),
            "SHUTDOWN to 1".to_string(),
            "close child stream".to_string(),
            format!("SIGTERM {pid}"),
            format!("SIGKILL {pid}"),
            "exit Clean".to_string(),
        ]
    );
    let kill_after = NodeConfig::root().escalation.kill_after;
    assert_eq!(h.trace.exit_time(0), Some(Instant::ZERO + G + kill_after));
    assert!(h.all_gone());
}

// --- S15 --------------------------------------------------------------------------------------

#[test]
fn s15_fifty_pending_calls_all_resolve_disconnected_exactly_once() {
    let mut h = chain(1);
    let child = 1;
    let calls: Vec<_> = (0..50).map(|_| h.call(0, id(&h, child), "hang", "").unwrap()).collect();
    h.settle();
    assert_eq!(h.procs[0].host.node().pending_calls(), 50);
    h.fault(Fault::Kill(child));
    h.settle();
    for call in &calls {
        let n = h
            .trace
            .outputs_of(0)
            .iter()
            .filter(|o| matches!(o, Output::CallReturned { call: c, .. } if c == call))
            .count();
        assert_eq!(n, 1, "{call:?}");
        assert!(matches!(h.trace.result_of(0, *call), Some(Err(e)) if e.kind == CallErrorKind::Disconnected));
    }
    assert_eq!(h.procs[0].host.node().pending_calls(), 0);
}

// --- S19 --------------------------------------------------------------------------------------

#[test]
fn s19_shutdown_twice_is_one_sequence() {
    let mut h = chain(2);
    h.fault(Fault::Freeze(2)); // keeps the middle context draining
    h.shutdown(0);
    h.shutdown(0);
    // A second SHUTDOWN reaches the middle context while it drains.
    let again = Message::new(ContextId(1), ContextId(0), Handle::SHUTDOWN, Encoding::Binary, "");
    h.inject(1, Input::Received { stream: PARENT_STREAM, bytes: &again.to_frame().to_vec() });
    h.shutdown(1);
    assert!(matches!(h.procs[1].host.node().phase(), Phase::Draining { .. }));
    for p in [0, 1] {
        let story = h.trace.story(p);
        assert_eq!(story.iter().filter(|s| *s == "calls closed").count(), 1, "{story:?}");
        assert_eq!(story.iter().filter(|s| s.starts_with("SHUTDOWN to")).count(), 1, "{story:?}");
    }
    h.run_until(Instant::ZERO + G * 3);
    assert!(h.all_gone());
}

/// Two SHUTDOWNs can arrive in one read (a parent that stopped this child on its own, then shut
/// down itself). The first is handled to its end before the second is even decoded: the second
/// finds the context draining and is one sequence with the first. (Before the router decoded one
/// message at a time, the second was handled inside the first's handler, while the phase was
/// still Running: the call channel closed twice and every child was told twice.)
#[test]
fn s19_two_shutdowns_in_one_read_are_one_sequence() {
    let mut h = chain(2);
    h.fault(Fault::Freeze(2)); // keeps the middle context draining
    let shutdown = Message::new(ContextId(1), ContextId(0), Handle::SHUTDOWN, Encoding::Binary, "");
    let mut read = shutdown.to_frame().to_vec();
    read.extend_from_slice(&shutdown.to_frame().to_vec());
    h.inject(1, Input::Received { stream: PARENT_STREAM, bytes: &read });
    assert!(matches!(h.procs[1].host.node().phase(), Phase::Draining { .. }));
    let story = h.trace.story(1);
    assert_eq!(story.iter().filter(|s| *s == "calls closed").count(), 1, "{story:?}");
    assert_eq!(story.iter().filter(|s| s.starts_with("SHUTDOWN to")).count(), 1, "{story:?}");
    assert_eq!(story.iter().filter(|s| s.starts_with("SHUT_WR")).count(), 1, "{story:?}");
    // The root was never asked: the middle context's subtree leaves on its own.
    h.run_until(Instant::ZERO + G * 3);
    assert!(!h.procs[1].alive && !h.procs[2].alive);
}

// --- S20 --------------------------------------------------------------------------------------

/// The rule (docs/shutdown.md "call_no_reply and shutdown"): frames on a stream arrive in order,
/// so a call sent before SHUTDOWN reaches the callee's dispatcher first. If the main thread is
/// idle it is handed over (`RunCall`) before the channel closes; shutdown then does not wait for
/// it. If the main thread is busy, the queued call is dropped when the channel closes and the
/// callee reports `CallDiscarded` — never silently lost.
#[test]
fn s20_call_no_reply_just_before_shutdown_is_started_when_the_callee_is_idle() {
    let mut h = chain(1);
    let child = 1;
    h.call_no_reply(0, id(&h, child), "work", "").unwrap();
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    let run =
        h.trace.first(child, |o| matches!(o, Output::RunCall { request, .. } if request.function == "work"));
    let closed = h.trace.first(child, |o| matches!(o, Output::CallsClosed));
    assert!(run.unwrap() < closed.unwrap());
    assert_eq!(h.trace.exit_time(child), Some(Instant::ZERO), "shutdown did not wait for the call");
}

/// The same when the call and the SHUTDOWN behind it come in one read: each message is handled
/// as if it came alone, so the idle main thread is handed the call before the channel closes.
#[test]
fn s20_call_no_reply_and_shutdown_in_one_read_start_the_call_first() {
    let mut h = chain(1);
    let child = 1;
    let body = arbor_core::call::CallRequest::encode_parts("work", &b""[..]);
    let call = Message::new(ContextId(1), ContextId(0), Handle::CALL_FUNCTION, Encoding::Postcard, body);
    let shutdown = Message::new(ContextId(1), ContextId(0), Handle::SHUTDOWN, Encoding::Binary, "");
    let mut read = call.to_frame().to_vec();
    read.extend_from_slice(&shutdown.to_frame().to_vec());
    h.inject(child, Input::Received { stream: PARENT_STREAM, bytes: &read });
    let run =
        h.trace.first(child, |o| matches!(o, Output::RunCall { request, .. } if request.function == "work"));
    let closed = h.trace.first(child, |o| matches!(o, Output::CallsClosed));
    assert!(run.expect("the call was started") < closed.expect("the channel closed"));
}

#[test]
fn s20_call_no_reply_queued_behind_a_busy_main_thread_is_discarded_and_reported() {
    let mut h = chain(1);
    let child = 1;
    h.call(0, id(&h, child), "hang", "").unwrap();
    h.call_no_reply(0, id(&h, child), "echo", "").unwrap();
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    assert!(!h
        .trace
        .outputs_of(child)
        .iter()
        .any(|o| matches!(o, Output::RunCall { request, .. } if request.function == "echo")));
    assert!(h.trace.outputs_of(child).iter().any(|o| matches!(
        o,
        Output::Diagnostic(Diagnostic::CallDiscarded { function, .. }) if function == "echo"
    )));
}

#[test]
fn queued_calls_wanting_an_answer_are_answered_shutting_down() {
    let mut h = chain(1);
    let child = 1;
    h.call(0, id(&h, child), "hang", "").unwrap();
    let queued = h.call(0, id(&h, child), "echo", "").unwrap();
    h.shutdown(0);
    h.settle();
    assert!(matches!(h.trace.result_of(0, queued), Some(Err(e)) if e.kind == CallErrorKind::ShuttingDown));
}

// --- S22 --------------------------------------------------------------------------------------

#[test]
fn s22_depth_four_chain_with_a_hung_call_at_every_level_is_gone_at_once() {
    let mut h = chain(4);
    for p in 1..=4 {
        h.call(0, id(&h, p), "hang", "").unwrap();
    }
    h.settle();
    assert!((1..=4).all(|p| h.running_call(p)));
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    assert!(h.all_gone());
    assert_eq!(h.trace.exit_time(0), Some(Instant::ZERO));
}

#[test]
fn s22_deadline_propagation_bounds_a_stuck_depth_four_chain_by_one_grace_not_four() {
    let mut h = chain(4);
    h.fault(Fault::Freeze(4)); // the deepest context cannot act at all
    h.shutdown(0);
    let esc = NodeConfig::root().escalation;
    h.run_until(Instant::ZERO + (G + esc.total()) * 4);
    assert!(h.all_gone());
    assert!(h.trace.exit_time(0).unwrap() <= Instant::ZERO + G + esc.total());
    // Each SHUTDOWN carried a smaller budget than the one before.
    let budgets: Vec<Duration> = (0..4)
        .map(|p| {
            let (_, m) = h.trace.sent_by(p).into_iter().find(|(_, m)| m.handle == Handle::SHUTDOWN).unwrap();
            decode_budget(&m.body).unwrap().unwrap()
        })
        .collect();
    assert_eq!(budgets[0], G);
    assert!(budgets.windows(2).all(|w| w[1] < w[0]), "{budgets:?}");
}

// --- S24 --------------------------------------------------------------------------------------

#[test]
fn s24_runaway_output_is_split_into_bounded_lines_and_shutdown_completes() {
    let mut h = chain(1);
    let child = 1;
    let max = h.procs[child].host.node().config().max_line_len;
    let chunk = vec![b'x'; 100_000];
    let mut written = 0;
    for _ in 0..50 {
        h.print(child, std::str::from_utf8(&chunk).unwrap()).unwrap();
        written += chunk.len();
        h.settle();
    }
    h.shutdown(0);
    h.settle();
    assert_eq!(
        h.print(child, std::str::from_utf8(&chunk).unwrap()),
        Err("EPIPE"),
        "SHUT_WR reaches every writer"
    );
    h.run_until(Instant::ZERO + G);
    let lines = h.trace.root_lines();
    assert!(lines.iter().all(|(_, l)| l.len() <= max));
    assert_eq!(lines.iter().map(|(_, l)| l.len()).sum::<usize>(), written, "nothing lost");
    assert!(h.all_gone());
}

// --- log lines --------------------------------------------------------------------------------

#[test]
fn an_unterminated_final_line_reaches_the_root() {
    let mut h = chain(2);
    h.print(2, "first\nlast words").unwrap();
    h.settle();
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    assert_eq!(
        h.trace.root_lines(),
        vec![(ContextId(2), "first".to_string()), (ContextId(2), "last words".to_string())]
    );
}

#[test]
fn a_captured_line_goes_up_as_mitogens_forward_log_name_level_text_and_the_root_reads_it_back() {
    // FORWARD_LOG's body is `name NUL level NUL text`, the level in Python `logging` numbers
    // (INFO for stdout), addressed to the root (protocol.md).
    let mut h = chain(1);
    h.print(1, "hello, world\n").unwrap();
    h.settle();
    let sent: Vec<Message> =
        h.trace.sent_by(1).into_iter().map(|(_, m)| m).filter(|m| m.handle == Handle::FORWARD_LOG).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].dst, sent[0].src), (ContextId::ROOT, id(&h, 1)));
    assert_eq!(&sent[0].body[..], b"stdout\x0020\x00hello, world");
    let lines: Vec<_> = h
        .trace
        .outputs_of(0)
        .into_iter()
        .filter_map(|o| match o {
            Output::LogLine(l) => Some((l.context, l.source.clone(), l.level, l.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(lines, vec![(id(&h, 1), "stdout".to_string(), 20, "hello, world".to_string())]);
}

#[test]
fn ten_thousand_lines_reach_the_root_in_order_none_lost_or_duplicated() {
    let mut h = chain(1);
    let child = 1;
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!("line {i}\n"));
    }
    // Printed in uneven pieces, the last just before shutdown.
    for piece in text.as_bytes().chunks(4093) {
        h.print(child, std::str::from_utf8(piece).unwrap()).unwrap();
    }
    h.shutdown(0);
    h.run_until(Instant::ZERO + G);
    let got: Vec<String> = h.trace.root_lines().into_iter().map(|(_, l)| l).collect();
    let want: Vec<String> = (0..10_000).map(|i| format!("line {i}")).collect();
    assert_eq!(got, want);
}

// --- bad input ----------------------------------------------------------------------------------

#[test]
fn calls_to_unknown_functions_and_failing_functions_return_typed_errors() {
    let mut h = chain(1);
    let unknown = h.call(0, id(&h, 1), "no_such_fn", "").unwrap();
    let failing = h.call(0, id(&h, 1), "fail", "").unwrap();
    h.settle();
    assert!(
        matches!(h.trace.result_of(0, unknown), Some(Err(e)) if e.kind == CallErrorKind::UnknownFunction)
    );
    assert!(
        matches!(h.trace.result_of(0, failing), Some(Err(e)) if e.kind == CallErrorKind::Failed && e.message == "boom")
    );
}

#[test]
fn a_malformed_call_body_is_answered_with_a_malformed_error() {
    let mut h = chain(1);
    let bad =
        Message::new(ContextId(1), ContextId(0), Handle::CALL_FUNCTION, Encoding::Postcard, "\u{7f}garbage")
            .with_reply_to(Handle(5000));
    h.inject(1, Input::Received { stream: PARENT_STREAM, bytes: &bad.to_frame().to_vec() });
    let (_, reply) = h.trace.sent_by(1).into_iter().find(|(_, m)| m.handle == Handle(5000)).unwrap();
    let result = arbor_core::call::decode_result(&reply.body).unwrap();
    assert!(matches!(result, Err(e) if e.kind == CallErrorKind::Malformed));
    assert!(h
        .trace
        .outputs_of(1)
        .iter()
        .any(|o| matches!(o, Output::Diagnostic(Diagnostic::BadCallRequest { .. }))));
}

#[test]
fn a_message_to_an_unknown_handle_is_answered_dead() {
    let mut h = chain(1);
    let m = Message::new(ContextId(1), ContextId(0), Handle(4242), Encoding::Binary, "")
        .with_reply_to(Handle(5001));
    h.inject(1, Input::Received { stream: PARENT_STREAM, bytes: &m.to_frame().to_vec() });
    let (_, reply) = h.trace.sent_by(1).into_iter().find(|(_, m)| m.handle == Handle(5001)).unwrap();
    assert_eq!(reply.dead_reason(), Some("invalid handle 4242 in context 1"));
}

#[test]
fn a_reply_to_a_handle_nobody_waits_on_is_reported_not_fatal() {
    let mut h = chain(1);
    let m = Message::new(ContextId(0), ContextId(1), Handle(7777), Encoding::Postcard, "whatever");
    h.inject(0, Input::Received { stream: arbor_core::router::StreamId(101), bytes: &m.to_frame().to_vec() });
    assert!(h
        .trace
        .outputs_of(0)
        .iter()
        .any(|o| matches!(o, Output::Diagnostic(Diagnostic::UnknownHandle { handle: Handle(7777), .. }))));
    // Everything still works.
    let c = h.call(0, id(&h, 1), "echo", "ok").unwrap();
    h.settle();
    assert!(matches!(h.trace.result_of(0, c), Some(Ok(_))));
}

#[test]
fn a_call_to_an_unreachable_context_is_answered_undeliverable() {
    let mut h = world(vec![]);
    let lost = h.call(0, ContextId(99), "echo", "").unwrap();
    assert!(matches!(
        h.trace.result_of(0, lost),
        Some(Err(e)) if e.kind == CallErrorKind::Undeliverable && e.message == "no route to 99, my ID is 0"
    ));
}

#[test]
fn a_context_may_call_itself() {
    let mut h = world(vec![]);
    let c = h.call(0, id(&h, 0), "echo", "me").unwrap();
    h.settle();
    assert!(matches!(h.trace.result_of(0, c), Some(Ok(b)) if b == "me"));
}

#[test]
fn calls_after_shutdown_began_are_refused_locally() {
    let mut h = chain(1);
    h.shutdown(0);
    let err = h.call(0, id(&h, 1), "echo", "").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::ShuttingDown);
}

#[test]
fn nested_children_get_ids_from_a_block_granted_by_the_root() {
    let mut h = chain(2);
    assert_eq!(h.procs[1].host.node().id(), ContextId(1));
    assert_eq!(
        h.procs[2].host.node().id(),
        ContextId(2),
        "the root's first block starts after the ids it gave out"
    );
    let third = h.spawn_child(1);
    assert_eq!(h.procs[third].host.node().id(), ContextId(3));
    // The root can reach the grandchildren through the routes their parent announced.
    let c = h.call(0, id(&h, third), "echo", "deep").unwrap();
    h.settle();
    assert!(matches!(h.trace.result_of(0, c), Some(Ok(b)) if b == "deep"));
}
