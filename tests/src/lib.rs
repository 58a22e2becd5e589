//! Shared helpers for arbor's cross-crate tests: building messages, draining routers, a small
//! in-memory network of routers joined by links, and simulator worlds driven by hand (nodes
//! always run together in `arbor_sim::world::World`: one way to run them).

use arbor_core::frame::{Decoder, Encoding, Message, DEFAULT_MAX_MESSAGE_SIZE};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::router::{Event, Peer, Router, RouterConfig, StreamId};

/// A message with `auth = src` and no reply handle.
pub fn msg(dst: u32, src: u32, handle: Handle, body: &'static str) -> Message {
    Message::new(ContextId(dst), ContextId(src), handle, Encoding::Binary, body)
}

/// A router for context `id` with the given ancestors (nearest first).
pub fn router(id: u32, ancestors: &[u32]) -> Router {
    Router::new(RouterConfig {
        id: ContextId(id),
        ancestors: ancestors.iter().map(|a| ContextId(*a)).collect(),
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
    })
}

/// A child peer without a name.
pub fn child(id: u32) -> Peer {
    Peer::Child { id: ContextId(id), name: None }
}

/// Every pending event, in order.
pub fn drain(r: &mut Router) -> Vec<Event> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// Encodes `m` and feeds it to `r` as bytes read from `stream`; returns the events it caused.
pub fn feed(r: &mut Router, stream: u32, m: &Message) -> Vec<Event> {
    r.receive(StreamId(stream), &m.to_frame().to_vec());
    drain(r)
}

/// Decodes a transmitted frame back into a message (panics on a bad frame: test-only).
pub fn decode_one(bytes: &[u8]) -> Message {
    let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.feed(bytes);
    let m = d.next_message().expect("valid frame").expect("whole frame");
    assert_eq!(d.buffered(), 0, "exactly one frame");
    m
}

/// The messages transmitted on `stream` among `events`.
pub fn sent_on(events: &[Event], stream: u32) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transmit { stream: s, frame } if *s == StreamId(stream) => {
                Some(decode_one(&frame.to_vec()))
            }
            _ => None,
        })
        .collect()
}

/// A tree of routers joined by in-memory links, stepped until quiet: the router-level ancestor
/// of the core's node harness. Every transmitted frame is fed, as bytes, to the far end.
#[derive(Debug, Default)]
pub struct Net {
    /// The routers, by index.
    pub routers: Vec<Router>,
    /// `(router, stream) -> (router, stream)` for both directions of every link.
    links: Vec<((usize, StreamId), (usize, StreamId))>,
    /// Every event any router produced, with the router's index, in order.
    pub log: Vec<(usize, Event)>,
}

impl Net {
    /// Adds a router; returns its index.
    pub fn add(&mut self, r: Router) -> usize {
        self.routers.push(r);
        self.routers.len() - 1
    }

    /// Connects `parent`'s stream `ps` to `child`'s stream `cs` (the child's parent stream).
    pub fn link(&mut self, parent: usize, ps: u32, child: usize, cs: u32) {
        let child_id = self.routers[child].id();
        self.routers[child].add_stream(StreamId(cs), Peer::Parent).expect("parent stream");
        self.routers[parent]
            .add_stream(StreamId(ps), Peer::Child { id: child_id, name: None })
            .expect("child");
        self.links.push(((parent, StreamId(ps)), (child, StreamId(cs))));
        self.links.push(((child, StreamId(cs)), (parent, StreamId(ps))));
        self.run();
    }

    /// Delivers frames until no router has anything left to send.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.routers.len() {
                while let Some(ev) = self.routers[i].poll_event() {
                    if let Event::Transmit { stream, frame } = &ev {
                        if let Some(&(_, (j, far))) =
                            self.links.iter().find(|(near, _)| *near == (i, *stream))
                        {
                            self.routers[j].receive(far, &frame.to_vec());
                            moved = true;
                        }
                    }
                    self.log.push((i, ev));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Ends the link at `(router, stream)` as if the peer closed it: EOF at both ends.
    pub fn cut(&mut self, router: usize, stream: u32) {
        let near = (router, StreamId(stream));
        let far = self.links.iter().find(|(n, _)| *n == near).map(|(_, f)| *f).expect("linked");
        self.links.retain(|(n, f)| *n != near && *f != near);
        self.routers[near.0].eof(near.1);
        self.routers[far.0].eof(far.1);
        self.run();
    }

    /// Events logged for router `i`.
    pub fn events_of(&self, i: usize) -> Vec<&Event> {
        self.log.iter().filter(|(r, _)| *r == i).map(|(_, e)| e).collect()
    }
}

/// docs/embedding.md, compiled and run as a doctest so the host loop it shows stays true.
#[doc = include_str!("../../docs/embedding.md")]
pub mod embedding_guide {}

/// A simulated world driven by hand: the given tree (`parents[i]` is the parent of process
/// `i + 1`), zero latency, no script; settled, so every process is spawned and routed.
pub fn world(parents: Vec<usize>) -> arbor_sim::world::World {
    let mut w = arbor_sim::world::World::new(&arbor_sim::plan::Plan::manual(parents));
    w.settle();
    w
}

/// A chain root → 1 → … → `depth`.
pub fn chain(depth: usize) -> arbor_sim::world::World {
    world((0..depth).collect())
}

/// The context id of process `p`.
pub fn id(w: &arbor_sim::world::World, p: usize) -> ContextId {
    w.procs[p].host.node().id()
}
