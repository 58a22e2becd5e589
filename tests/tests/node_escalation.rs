//! The kill schedule after a forced disconnect (docs/shutdown.md): SIGTERM to every child,
//! SIGKILL `kill_after` later, and a child still unreported `abandon_after` after its SIGKILL is
//! given up on. Each child is taken through every step, whenever its stream opened.

use std::time::Duration;

use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::time::Instant;

const KILL_AFTER: Duration = Duration::from_secs(1);
const ABANDON_AFTER: Duration = Duration::from_secs(1);

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// What the node did about its child processes: signals sent and children given up on.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Signal(Pid, Signal),
    Abandoned(Pid),
}

fn steps(node: &mut Node) -> Vec<Step> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Signal { pid, signal } => Some(Step::Signal(pid, signal)),
            Output::Diagnostic(Diagnostic::ChildAbandoned(pid)) => Some(Step::Abandoned(pid)),
            _ => None,
        })
        .collect()
}

/// A root with this kill schedule.
fn root_node(kill_after: Duration, abandon_after: Duration) -> Node {
    let mut config = NodeConfig::root();
    config.escalation.kill_after = kill_after;
    config.escalation.abandon_after = abandon_after;
    Node::new(config)
}

fn open_child(node: &mut Node, now: Instant, n: u32) {
    let kind = StreamKind::Child { id: ContextId(n), pid: Some(Pid(100 + n)), name: None };
    node.handle_input(now, Input::StreamOpened { stream: StreamId(n), kind }).unwrap();
}

/// A child whose stream opens after the SIGKILL round (its spawn was carried out before
/// shutdown began and took a while) has had only SIGTERM when the first children are given up
/// on. It must not be given up on with them: it gets its own SIGKILL `kill_after` after its
/// SIGTERM, and is given up on only `abandon_after` after that — the bound holds for it too.
#[test]
fn a_child_that_arrived_after_the_sigkill_round_still_gets_sigkill_before_it_is_given_up_on() {
    let mut node = root_node(KILL_AFTER, ABANDON_AFTER);
    open_child(&mut node, at(0), 1);
    steps(&mut node);

    node.force_shutdown(at(0));
    assert_eq!(steps(&mut node), [Step::Signal(Pid(101), Signal::Term)]);
    node.handle_timeout(at(1000));
    assert_eq!(steps(&mut node), [Step::Signal(Pid(101), Signal::Kill)]);

    // Half-way to the abandon deadline, a late child appears: SIGTERM at once.
    open_child(&mut node, at(1500), 2);
    assert_eq!(steps(&mut node), [Step::Signal(Pid(102), Signal::Term)]);

    // The first child is given up on; the late one, SIGTERMed only, is not.
    node.handle_timeout(at(2000));
    assert_eq!(steps(&mut node), [Step::Abandoned(Pid(101))]);
    assert!(node.poll_timeout().is_some(), "the late child's SIGKILL is still to come");

    node.handle_timeout(node.poll_timeout().unwrap());
    assert_eq!(steps(&mut node), [Step::Signal(Pid(102), Signal::Kill)]);
    node.handle_timeout(node.poll_timeout().unwrap());
    assert_eq!(steps(&mut node), [Step::Abandoned(Pid(102))]);
}

/// The whole schedule for children there from the start: SIGTERM, SIGKILL `kill_after` later,
/// given up on `abandon_after` after that, each child once.
#[test]
fn every_child_gets_sigterm_then_sigkill_then_is_given_up_on_once() {
    let mut node = root_node(KILL_AFTER, ABANDON_AFTER);
    open_child(&mut node, at(0), 1);
    open_child(&mut node, at(0), 2);
    steps(&mut node);

    node.force_shutdown(at(0));
    assert_eq!(
        steps(&mut node),
        [Step::Signal(Pid(101), Signal::Term), Step::Signal(Pid(102), Signal::Term)]
    );
    assert_eq!(node.poll_timeout(), Some(at(1000)));
    node.handle_timeout(at(1000));
    assert_eq!(
        steps(&mut node),
        [Step::Signal(Pid(101), Signal::Kill), Step::Signal(Pid(102), Signal::Kill)]
    );
    assert_eq!(node.poll_timeout(), Some(at(2000)));
    node.handle_timeout(at(2000));
    assert_eq!(steps(&mut node), [Step::Abandoned(Pid(101)), Step::Abandoned(Pid(102))]);
}

// --- a deadline that comes closer ---------------------------------------------------------------

/// The SHUTDOWN budgets a node sent on `stream`, in order.
fn budgets_sent(outs: &[Output], stream: StreamId) -> Vec<Option<Duration>> {
    use arbor_core::frame::Decoder;
    use arbor_core::handle::Handle;
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit { stream: s, frame } if *s == stream => {
                let mut d = Decoder::new(1 << 20);
                d.feed(&frame.to_vec());
                d.next_message().unwrap()
            }
            _ => None,
        })
        .filter(|m| m.handle == Handle::SHUTDOWN)
        .map(|m| arbor_core::shutdown::decode_budget(&m.body).unwrap())
        .collect()
}

/// A draining node whose parent sends SHUTDOWN again with a smaller budget drains against the
/// nearer deadline, and passes it on: each child gets SHUTDOWN again with the new remaining
/// budget, so it force-disconnects its own children before this node would force it (the
/// ordering of docs/shutdown.md holds when the deadline moves, not only when it is first set).
#[test]
fn a_tighter_budget_from_the_parent_is_passed_on_to_every_child() {
    use arbor_core::frame::{Encoding, Message};
    use arbor_core::handle::Handle;
    let parent = StreamId(1);
    let mut node = Node::new(NodeConfig::child(ContextId(1), vec![ContextId::ROOT]));
    node.handle_input(at(0), Input::StreamOpened { stream: parent, kind: StreamKind::Parent }).unwrap();
    let kind = StreamKind::Child { id: ContextId(2), pid: Some(Pid(102)), name: None };
    node.handle_input(at(0), Input::StreamOpened { stream: StreamId(2), kind }).unwrap();
    std::iter::from_fn(|| node.poll_output()).for_each(drop);

    let shutdown = |budget: Duration| {
        let body = arbor_core::shutdown::encode_budget(budget).to_vec();
        Message::new(ContextId(1), ContextId::ROOT, Handle::SHUTDOWN, Encoding::Binary, body)
            .to_frame()
            .to_vec()
    };
    let feed = |node: &mut Node, now: Instant, bytes: &[u8]| {
        node.handle_input(now, Input::Received { stream: parent, bytes }).unwrap();
        std::iter::from_fn(|| node.poll_output()).collect::<Vec<_>>()
    };
    // Budget 8 s: this node drains for its own grace, 5 s, and gives its child that much.
    let first = feed(&mut node, at(0), &shutdown(Duration::from_secs(8)));
    assert_eq!(budgets_sent(&first, StreamId(2)), [Some(Duration::from_secs(5))]);
    // 1 s later the parent has only 1 s left: ¾ of it, 750 ms, from now.
    let second = feed(&mut node, at(1000), &shutdown(Duration::from_secs(1)));
    assert_eq!(budgets_sent(&second, StreamId(2)), [Some(Duration::from_millis(750))]);
    assert_eq!(node.poll_timeout(), Some(at(1750)));
    // A budget that would move the deadline later changes nothing and is not passed on.
    let third = feed(&mut node, at(1100), &shutdown(Duration::from_secs(60)));
    assert_eq!(budgets_sent(&third, StreamId(2)), []);
}

/// A child whose stream opens after its parent drained and began closing (its spawn was carried
/// out before shutdown began, and was slower than the drain) is not left running unasked: its
/// stream is closed and its process gets SIGTERM at once, as during a forced disconnect.
#[test]
fn a_child_that_arrives_after_its_parent_drained_is_closed_and_signalled_at_once() {
    use arbor_core::frame::{Encoding, Message};
    use arbor_core::handle::Handle;
    use arbor_core::shutdown::PhaseKind;
    let parent = StreamId(1);
    let mut node = Node::new(NodeConfig::child(ContextId(1), vec![ContextId::ROOT]));
    node.handle_input(at(0), Input::StreamOpened { stream: parent, kind: StreamKind::Parent }).unwrap();
    let shutdown = Message::new(ContextId(1), ContextId::ROOT, Handle::SHUTDOWN, Encoding::Binary, "");
    node.handle_input(at(0), Input::Received { stream: parent, bytes: &shutdown.to_frame().to_vec() })
        .unwrap();
    std::iter::from_fn(|| node.poll_output()).for_each(drop);
    assert_eq!(node.phase().kind(), PhaseKind::Closing, "nothing to wait for: drained at once");

    let kind = StreamKind::Child { id: ContextId(7), pid: Some(Pid(107)), name: None };
    node.handle_input(at(10), Input::StreamOpened { stream: StreamId(7), kind }).unwrap();
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(outs.contains(&Output::Close { stream: StreamId(7) }), "{outs:?}");
    assert!(outs.contains(&Output::Signal { pid: Pid(107), signal: Signal::Term }), "{outs:?}");
}

/// With `abandon_after` longer than `kill_after`, two SIGKILL rounds are given up on each at its
/// own time: the late child's round does not push back the first one's.
#[test]
fn each_sigkill_round_is_given_up_on_abandon_after_its_own_sigkill() {
    let mut node = root_node(Duration::from_secs(1), Duration::from_secs(5));
    open_child(&mut node, at(0), 1);
    steps(&mut node);
    node.force_shutdown(at(0));
    steps(&mut node);
    node.handle_timeout(at(1000));
    assert_eq!(steps(&mut node), [Step::Signal(Pid(101), Signal::Kill)]);
    open_child(&mut node, at(2000), 2);
    assert_eq!(steps(&mut node), [Step::Signal(Pid(102), Signal::Term)]);
    node.handle_timeout(at(3000));
    assert_eq!(steps(&mut node), [Step::Signal(Pid(102), Signal::Kill)]);
    assert_eq!(node.poll_timeout(), Some(at(6000)), "the first round's deadline stands");
    node.handle_timeout(at(6000));
    assert_eq!(steps(&mut node), [Step::Abandoned(Pid(101))]);
    assert_eq!(node.poll_timeout(), Some(at(8000)));
    node.handle_timeout(at(8000));
    assert_eq!(steps(&mut node), [Step::Abandoned(Pid(102))]);
}
