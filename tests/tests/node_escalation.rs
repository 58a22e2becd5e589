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
    let mut config = NodeConfig::root();
    config.escalation.kill_after = KILL_AFTER;
    config.escalation.abandon_after = ABANDON_AFTER;
    let mut node = Node::new(config);
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
    let mut config = NodeConfig::root();
    config.escalation.kill_after = KILL_AFTER;
    config.escalation.abandon_after = ABANDON_AFTER;
    let mut node = Node::new(config);
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
