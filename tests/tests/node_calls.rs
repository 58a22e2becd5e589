//! The node's call API as a host with large arguments or a burst of calls uses it:
//! `CallRequest::encode_args` + `Node::call_body`, and `Node::calls_waiting`.

use arbor_core::call::{CallErrorKind, CallRequest};
use arbor_core::frame::{Encoding, Message};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::node::{Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::router::StreamId;
use arbor_core::time::Instant;

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
