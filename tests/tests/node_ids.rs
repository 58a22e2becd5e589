//! Context ids (docs/protocol.md §1): only the root hands them out, a block of
//! `ID_BLOCK_SIZE` at a time for each ALLOCATE_ID, and only the root's answer counts. What one
//! misbehaving subtree can do with ids stays in that subtree: it cannot burn the tree's id space,
//! claim an id it was not given, or answer another context's request.

use arbor_core::frame::{Decoder, Encoding, Message, DEFAULT_MAX_MESSAGE_SIZE};
use arbor_core::handle::Handle;
use arbor_core::ids::{ContextId, IdBlock, IdError, ID_BLOCK_SIZE};
use arbor_core::node::{Diagnostic, IdRefusal, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::router::{RejectReason, StreamId};
use arbor_core::time::Instant;

const NOW: Instant = Instant::ZERO;

fn outputs(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn feed(node: &mut Node, stream: StreamId, m: &Message) -> Vec<Output> {
    node.handle_input(NOW, Input::Received { stream, bytes: &m.to_frame().to_vec() }).unwrap();
    outputs(node)
}

/// The messages among `outs` written to `stream`.
fn sent(outs: &[Output], stream: StreamId) -> Vec<Message> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit { stream: s, frame } if *s == stream => {
                let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
                d.feed(&frame.to_vec());
                d.next_message().unwrap()
            }
            _ => None,
        })
        .collect()
}

fn diags(outs: &[Output]) -> Vec<&Diagnostic> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Diagnostic(d) if !matches!(d, Diagnostic::PhaseChanged { .. }) => Some(d),
            _ => None,
        })
        .collect()
}

/// A root with children 1 and 2 on streams 1 and 2, their ids allocated as a host does.
fn root(config: NodeConfig) -> Node {
    let mut node = Node::new(config);
    for n in [1, 2] {
        assert_eq!(node.allocate_id(NOW), Ok(ContextId(n)));
        let kind = StreamKind::Child { id: ContextId(n), pid: None, name: None };
        node.handle_input(NOW, Input::StreamOpened { stream: StreamId(n), kind }).unwrap();
    }
    outputs(&mut node);
    node
}

fn ask(from: u32, reply_to: Handle) -> Message {
    Message::new(ContextId::ROOT, ContextId(from), Handle::ALLOCATE_ID, Encoding::Binary, "")
        .with_reply_to(reply_to)
}

fn add_route(from: u32, id: u32) -> Message {
    Message::new(ContextId::ROOT, ContextId(from), Handle::ADD_ROUTE, Encoding::Binary, id.to_string())
}

/// The block in the root's answer on `stream`.
fn granted(outs: &[Output], stream: StreamId) -> IdBlock {
    let answers = sent(outs, stream);
    assert_eq!(answers.len(), 1, "one answer");
    assert!(!answers[0].is_dead(), "a block, not a refusal: {:?}", answers[0].dead_reason());
    IdBlock::from_bytes(&answers[0].body).expect("an 8-byte block")
}

// --- the root --------------------------------------------------------------------------------

/// An ALLOCATE_ID with no reply handle could never deliver its block: the root spends no ids
/// on it (a child sending thousands of them cannot move the root's next id), and says so.
#[test]
fn the_root_spends_no_ids_on_a_request_that_names_no_reply_handle() {
    let mut node = root(NodeConfig::root());
    for _ in 0..1000 {
        let outs = feed(&mut node, StreamId(1), &ask(1, Handle::NONE));
        assert!(sent(&outs, StreamId(1)).is_empty(), "nothing to answer to");
        assert_eq!(
            diags(&outs),
            [&Diagnostic::IdRequestRefused { src: ContextId(1), reason: IdRefusal::NoReplyHandle }]
        );
    }
    assert_eq!(node.allocate_id(NOW), Ok(ContextId(3)), "children 1 and 2 took 1 and 2; nothing else went");
}

/// Each child's subtree gets at most `id_blocks_per_child` blocks over the tree's life. Past
/// its share it is answered dead, and its sibling still gets ids: a subtree that asks without
/// end exhausts itself, not the tree.
#[test]
fn a_subtree_past_its_share_of_ids_is_refused_and_its_sibling_still_gets_blocks() {
    let mut config = NodeConfig::root();
    config.id_blocks_per_child = 2;
    let mut node = root(config);

    let first = granted(&feed(&mut node, StreamId(1), &ask(1, Handle(1000))), StreamId(1));
    let second = granted(&feed(&mut node, StreamId(1), &ask(1, Handle(1001))), StreamId(1));
    assert_eq!((first.len(), second.len()), (ID_BLOCK_SIZE, ID_BLOCK_SIZE));
    assert_eq!(second.start, first.end, "blocks follow one another");

    let outs = feed(&mut node, StreamId(1), &ask(1, Handle(1002)));
    let answer = sent(&outs, StreamId(1));
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].dead_reason(), Some("this subtree's share of context ids is used up"));
    assert_eq!(
        diags(&outs),
        [&Diagnostic::IdRequestRefused { src: ContextId(1), reason: IdRefusal::QuotaExhausted }]
    );

    let sibling = granted(&feed(&mut node, StreamId(2), &ask(2, Handle(1000))), StreamId(2));
    assert_eq!(sibling.start, second.end);
}

/// At the root, ADD_ROUTE from a child stream is taken only for an id inside a block granted to
/// that stream's subtree. An id never issued (the impostor would take the traffic of the context
/// spawned with it later, and that spawn would fail) and an id granted to the sibling's subtree
/// are both refused, and the route table is unchanged.
#[test]
fn add_route_at_the_root_needs_an_id_granted_to_that_stream() {
    let mut node = root(NodeConfig::root());
    let unissued = feed(&mut node, StreamId(1), &add_route(1, 3));
    assert!(matches!(
        diags(&unissued)[..],
        [Diagnostic::Rejected(r)] if r.reason == RejectReason::RouteNotGranted { id: ContextId(3) }
    ));
    assert_eq!(node.allocate_id(NOW), Ok(ContextId(3)), "3 is still the root's to give");

    let block = granted(&feed(&mut node, StreamId(1), &ask(1, Handle(1000))), StreamId(1));
    let grandchild = block.start + 7;
    assert!(diags(&feed(&mut node, StreamId(1), &add_route(1, grandchild))).is_empty(), "granted: taken");

    let stolen = feed(&mut node, StreamId(2), &add_route(2, block.start + 8));
    assert!(matches!(
        diags(&stolen)[..],
        [Diagnostic::Rejected(r)] if r.reason == RejectReason::RouteNotGranted { id: ContextId(block.start + 8) }
    ));
}

// --- a context below the root ------------------------------------------------------------------

const PARENT: StreamId = StreamId(1);

/// Context 5 (parent 1, under the root) with its parent stream open, having asked for ids: the
/// reply handle its ALLOCATE_ID named.
fn asking() -> (Node, Handle) {
    let mut node = Node::new(NodeConfig::child(ContextId(5), vec![ContextId(1), ContextId::ROOT]));
    node.handle_input(NOW, Input::StreamOpened { stream: PARENT, kind: StreamKind::Parent }).unwrap();
    outputs(&mut node);
    assert_eq!(node.allocate_id(NOW), Err(IdError::NeedBlock));
    let asked = sent(&outputs(&mut node), PARENT);
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].dst, asked[0].handle), (ContextId::ROOT, Handle::ALLOCATE_ID));
    (node, asked[0].reply_to)
}

fn block_from(src: u32, to: Handle, block: IdBlock) -> Message {
    Message::new(ContextId(5), ContextId(src), to, Encoding::Binary, block.to_bytes().to_vec())
}

/// Reply handles are easy to guess. A block "answered" by any context but the root is refused,
/// and the request stays open: the root's own answer is still taken when it comes.
#[test]
fn an_id_block_from_anyone_but_the_root_is_refused_and_the_roots_answer_still_counts() {
    let (mut node, handle) = asking();
    let forged = IdBlock { start: 0, end: 4 };
    let outs = feed(&mut node, PARENT, &block_from(7, handle, forged));
    assert_eq!(diags(&outs), [&Diagnostic::UnexpectedReply { src: ContextId(7), handle }]);
    assert!(!outs.contains(&Output::IdsAvailable));
    assert_eq!(node.allocate_id(NOW), Err(IdError::NeedBlock));
    assert!(sent(&outputs(&mut node), PARENT).is_empty(), "the request is still open: not sent again");

    let real = IdBlock { start: 2000, end: 3000 };
    let outs = feed(&mut node, PARENT, &block_from(0, handle, real));
    assert!(outs.contains(&Output::IdsAvailable));
    assert_eq!(node.allocate_id(NOW), Ok(ContextId(2000)));
}

/// A block holding id 0 would route the root's traffic to a child: refused even from the root.
#[test]
fn an_id_block_holding_the_roots_own_id_is_refused() {
    let (mut node, handle) = asking();
    let outs = feed(&mut node, PARENT, &block_from(0, handle, IdBlock { start: 0, end: 1000 }));
    assert_eq!(diags(&outs), [&Diagnostic::UnexpectedReply { src: ContextId::ROOT, handle }]);
    assert!(!outs.contains(&Output::IdsAvailable));
}

/// The root's refusal is final: the context says so once, its waiting spawns are retried
/// (`IdsAvailable`) and fail `Exhausted`, and it does not ask again — before, it asked again
/// at every step and its spawns waited for ever.
#[test]
fn a_refusal_from_the_root_is_final_and_the_spawns_waiting_for_ids_fail() {
    let (mut node, handle) = asking();
    let refusal = Message::dead(ContextId(5), ContextId::ROOT, handle, "context id space exhausted");
    let outs = feed(&mut node, PARENT, &refusal);
    assert_eq!(diags(&outs), [&Diagnostic::IdsRefused { reason: "context id space exhausted".into() }]);
    assert!(outs.contains(&Output::IdsAvailable), "the host retries its spawns");
    for _ in 0..3 {
        assert_eq!(node.allocate_id(NOW), Err(IdError::Exhausted));
        assert!(sent(&outputs(&mut node), PARENT).is_empty(), "no new ALLOCATE_ID");
    }
}
