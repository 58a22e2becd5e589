//! A three-context tree driven by hand: root(0) ─ worker(1) ─ leaf(2).
//!
//! Shows the sans-IO shape of the core: the host feeds bytes in and carries the router's
//! decisions out. Here the "transport" is a loop that hands every transmitted frame to the
//! router at the other end of its link, one byte at a time to show that framing does not care.
//!
//! Run: `cargo run -p arbor-core --example tree`

use arbor_core::frame::{Encoding, Message};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::router::{Event, Peer, Router, RouterConfig, StreamId};

struct Node {
    name: &'static str,
    router: Router,
}

/// `(from node, from stream) -> (to node, to stream)`.
const LINKS: [((usize, u32), (usize, u32)); 4] =
    [((0, 10), (1, 0)), ((1, 0), (0, 10)), ((1, 20), (2, 0)), ((2, 0), (1, 20))];

fn run(nodes: &mut [Node]) {
    loop {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(event) = nodes[i].router.poll_event() {
                let name = nodes[i].name;
                match event {
                    Event::Transmit { stream, frame } => {
                        let (_, (j, far)) =
                            LINKS.iter().find(|(near, _)| *near == (i, stream.0)).copied().expect("linked");
                        println!("{name:>6} → {:<6} {} bytes on {stream}", nodes[j].name, frame.len());
                        for byte in frame.to_vec() {
                            nodes[j].router.receive(StreamId(far), &[byte]);
                        }
                        moved = true;
                    }
                    Event::Deliver { message, .. } => match message.dead_reason() {
                        Some(reason) => {
                            println!("{name:>6} got a dead reply on handle {}: {reason}", message.handle)
                        }
                        None => println!(
                            "{name:>6} got {:?} on handle {} from context {}",
                            String::from_utf8_lossy(&message.body),
                            message.handle,
                            message.src
                        ),
                    },
                    other => println!("{name:>6} {other:?}"),
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn router(id: u32, ancestors: &[u32]) -> Router {
    Router::new(RouterConfig {
        id: ContextId(id),
        ancestors: ancestors.iter().copied().map(ContextId).collect(),
        max_message_size: arbor_core::frame::DEFAULT_MAX_MESSAGE_SIZE,
    })
}

fn main() {
    let mut nodes = vec![
        Node { name: "root", router: router(0, &[]) },
        Node { name: "worker", router: router(1, &[0]) },
        Node { name: "leaf", router: router(2, &[1, 0]) },
    ];
    let child = |id, name: &str| Peer::Child { id: ContextId(id), name: Some(name.into()) };
    println!("-- wiring the tree; the worker announces the leaf to the root with ADD_ROUTE");
    nodes[1].router.add_stream(StreamId(0), Peer::Parent).expect("worker's parent");
    nodes[0].router.add_stream(StreamId(10), child(1, "worker")).expect("root's child");
    nodes[2].router.add_stream(StreamId(0), Peer::Parent).expect("leaf's parent");
    nodes[1].router.add_stream(StreamId(20), child(2, "leaf")).expect("worker's child");
    run(&mut nodes);

    println!("\n-- the root speaks to the leaf, two hops down");
    let hello = Message::new(ContextId(2), ContextId(0), Handle(1000), Encoding::Binary, "hello, leaf");
    nodes[0].router.send(hello);
    run(&mut nodes);

    println!("\n-- the leaf tries to shut its parent down: refused, not its place");
    nodes[2].router.send(Message::new(ContextId(1), ContextId(2), Handle::SHUTDOWN, Encoding::Binary, ""));
    run(&mut nodes);

    println!("\n-- the worker writes to a context that does not exist, asking for a reply");
    let lost = Message::new(ContextId(42), ContextId(1), Handle(1000), Encoding::Binary, "anyone?")
        .with_reply_to(Handle(1001));
    nodes[1].router.send(lost);
    run(&mut nodes);

    println!("\n-- the leaf's stream to the worker ends: DEL_ROUTE travels up");
    nodes[1].router.eof(StreamId(20));
    run(&mut nodes);
    println!("\nroot's routes now: {:?}", nodes[0].router.routes().collect::<Vec<_>>());
}
