//! The router of a context in a small tree, fed arbitrary frames on arbitrary streams
//! (docs/protocol.md §4).
//!
//! The context has a parent stream and three child streams (children 2, 3 and 7, the ids the
//! golden frames use); the first byte picks whether it is context 1 below the root or context 5
//! two levels down (ancestors 1 and 0). Then each step is one of: raw bytes on a stream, a
//! well-formed frame built from ids and handles that matter (whole or in two pieces), EOF,
//! removing or adding a stream, or a message sent from this context. Properties:
//! - nothing panics;
//! - a message that arrived on a child stream carrying the authority of this context or one of
//!   its ancestors is never delivered here nor forwarded anywhere (the frames a router writes
//!   itself — DEL_ROUTE, ADD_ROUTE, dead replies — carry its own id as source and authority);
//! - every frame it transmits decodes back to one message.

use arbor_core::frame::{Decoder, Encoding, Frame, Message, DEFAULT_MAX_MESSAGE_SIZE};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::router::{Event, Origin, Peer, Router, RouterConfig, StreamId};

use crate::input::{Input, Script};

/// The contexts a built frame may name: the tree's own, a stranger and a large id.
pub(crate) const IDS: &[u32] = &[0, 1, 2, 3, 5, 7, 8, 9, 1000];

/// The handles a built frame may name: every one with a rule attached, a reply handle, and one
/// nobody listens on.
pub(crate) const HANDLES: &[Handle] = &[
    Handle::CALL_FUNCTION,
    Handle::FORWARD_LOG,
    Handle::ADD_ROUTE,
    Handle::DEL_ROUTE,
    Handle::ALLOCATE_ID,
    Handle::SHUTDOWN,
    Handle(1000),
    Handle(1001),
    Handle(5),
];

const REPLY_TOS: &[Handle] = &[Handle::NONE, Handle::IS_DEAD, Handle(1000), Handle(1001)];
const ENCODINGS: &[Encoding] = &[Encoding::Mitogen, Encoding::Pickle, Encoding::Binary, Encoding::Postcard];
/// Bodies that mean something to route control, besides arbitrary ones.
const BODIES: &[&[u8]] = &[b"", b"0", b"1", b"2", b"5", b"7", b"8", b"9:web", b"1000", b"8:"];
/// Stream 0 is the parent; 1-3 the children; 4 and 9 unknown until added.
const STREAMS: &[u32] = &[0, 1, 2, 3, 4, 9];
const CHILDREN: &[(u32, u32)] = &[(1, 2), (2, 3), (3, 7)];

/// The two shapes of tree the router can sit in: `(id, ancestors nearest first)`.
const PLACES: &[(u32, &[u32])] = &[(1, &[0]), (5, &[1, 0])];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (id, ancestors) = input.pick(PLACES);
    let mut fx = Fixture::new(ContextId(id), ancestors.iter().map(|a| ContextId(*a)).collect());
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        fx.step(&mut input);
        steps += 1;
    }
}

/// A router and what the test knows about its streams.
struct Fixture {
    router: Router,
    /// Ids with parent authority: this context and its ancestors.
    authorities: Vec<ContextId>,
}

impl Fixture {
    fn new(id: ContextId, ancestors: Vec<ContextId>) -> Fixture {
        let mut authorities = ancestors.clone();
        authorities.push(id);
        let config = RouterConfig { id, ancestors, max_message_size: 4096 };
        let mut router = Router::new(config);
        router.add_stream(StreamId(0), Peer::Parent).expect("a parent stream in a child context");
        for (stream, child) in CHILDREN {
            let peer = Peer::Child { id: ContextId(*child), name: Some(format!("child-{child}")) };
            router.add_stream(StreamId(*stream), peer).expect("distinct children");
        }
        let mut fx = Fixture { router, authorities };
        fx.drain(None);
        fx
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let stream = StreamId(input.pick(STREAMS));
        match input.byte() % 7 {
            0 => self.receive(stream, &[input.short_slice()]),
            1 => {
                let wire = frame(input).to_frame().to_vec();
                self.receive(stream, &[&wire]);
            }
            2 => {
                let wire = frame(input).to_frame().to_vec();
                let (a, b) = wire.split_at(usize::from(input.byte()).min(wire.len()));
                self.receive(stream, &[a, b]);
            }
            3 => {
                self.router.eof(stream);
                self.drain(None);
            }
            4 => {
                self.router.remove_stream(stream);
                self.drain(None);
            }
            5 => {
                let id = ContextId(input.pick(IDS));
                let peer = if input.byte() % 4 == 0 { Peer::Parent } else { Peer::Child { id, name: None } };
                let _ = self.router.add_stream(stream, peer);
                self.drain(None);
            }
            _ => {
                self.router.send(frame(input));
                self.drain(None);
            }
        }
    }

    /// Feeds `pieces` to `stream` one after the other, checking what each causes.
    fn receive(&mut self, stream: StreamId, pieces: &[&[u8]]) {
        for piece in pieces {
            let from_child = matches!(self.router.peer(stream), Some(Peer::Child { .. }));
            self.router.receive(stream, piece);
            self.drain(from_child.then_some(stream));
        }
    }

    /// Takes every event; `child` is the child stream whose bytes caused them, if any.
    fn drain(&mut self, child: Option<StreamId>) {
        while let Some(event) = self.router.poll_event() {
            match event {
                Event::Deliver { origin: Origin::Stream(s), message } if Some(s) == child => {
                    assert!(
                        !self.authorities.contains(&message.auth),
                        "delivered a message from child stream {s} with authority {}",
                        message.auth
                    );
                }
                Event::Transmit { stream, frame } => self.check_transmit(child, stream, &frame),
                _ => {}
            }
        }
    }

    fn check_transmit(&self, child: Option<StreamId>, stream: StreamId, frame: &Frame) {
        let msg = decode_one(frame);
        let Some(from) = child else { return };
        let own = msg.src == self.router.id() && msg.auth == self.router.id();
        assert!(
            own || !self.authorities.contains(&msg.auth),
            "forwarded to {stream} a message from child stream {from} with authority {}",
            msg.auth
        );
    }
}

/// A well-formed message with fields that matter to the router.
pub(crate) fn frame(input: &mut Input<'_>) -> Message {
    let enc = input.pick(ENCODINGS);
    let dst = ContextId(input.pick(IDS));
    let src = ContextId(input.pick(IDS));
    let auth = if input.byte() % 2 == 0 { src } else { ContextId(input.pick(IDS)) };
    let handle = input.pick(HANDLES);
    let reply_to = input.pick(REPLY_TOS);
    let body_choice = usize::from(input.byte());
    let body = match BODIES.get(body_choice) {
        Some(b) => b.to_vec(),
        None => input.short_slice().to_vec(),
    };
    Message { enc, dst, src, auth, handle, reply_to, body: body.into() }
}

/// A transmitted frame decodes to exactly one message.
fn decode_one(frame: &Frame) -> Message {
    let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.feed(&frame.to_vec());
    let msg = d.next_message().ok().flatten().expect("a transmitted frame decodes");
    assert_eq!(d.buffered(), 0, "a transmitted frame is one message");
    msg
}

/// The indices into [`STREAMS`], [`IDS`]... that seeds use, by value.
fn index_of<T: PartialEq>(items: &[T], item: &T) -> u8 {
    items.iter().position(|i| i == item).unwrap_or(0) as u8
}

/// Seeds: each golden frame arriving raw on the parent and on child 2's stream, in both places;
/// a grandchild announced by child 2 and then called through; and a child trying to claim the
/// root's authority.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for place in 0..PLACES.len() as u8 {
        for stream in [0u32, 1] {
            let mut s = Script::default();
            s.byte(place);
            for f in crate::golden::frames().iter().filter(|f| f.len() <= 255) {
                s.byte(index_of(STREAMS, &stream)).byte(0).short_slice(f);
            }
            seeds.push(s.0);
        }
        let mut s = Script::default();
        s.byte(place);
        // child 2 announces grandchild 8, then the parent calls 8 through us
        built(&mut s, 1, Encoding::Binary, 0, 2, 2, Handle::ADD_ROUTE, Handle::NONE, 7);
        built(&mut s, 0, Encoding::Mitogen, 8, 0, 0, Handle::CALL_FUNCTION, Handle(1000), 0);
        // child 2 claims the root's authority, to the root and to this context
        built(&mut s, 1, Encoding::Mitogen, 0, 2, 0, Handle::FORWARD_LOG, Handle::NONE, 0);
        built(&mut s, 1, Encoding::Mitogen, 1, 0, 0, Handle::CALL_FUNCTION, Handle(1000), 0);
        seeds.push(s.0);
    }
    seeds
}

/// Appends a "built frame" step (op 1) as [`frame`] reads it; `body` indexes [`BODIES`].
#[allow(clippy::too_many_arguments)]
fn built(
    s: &mut Script,
    stream: u32,
    enc: Encoding,
    dst: u32,
    src: u32,
    auth: u32,
    handle: Handle,
    reply_to: Handle,
    body: u8,
) {
    s.byte(index_of(STREAMS, &stream)).byte(1);
    s.byte(index_of(ENCODINGS, &enc)).byte(index_of(IDS, &dst)).byte(index_of(IDS, &src));
    if src == auth {
        s.byte(0);
    } else {
        s.byte(1).byte(index_of(IDS, &auth));
    }
    s.byte(index_of(HANDLES, &handle)).byte(index_of(REPLY_TOS, &reply_to)).byte(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Fixture {
        Fixture::new(ContextId(1), vec![ContextId(0)])
    }

    #[test]
    #[should_panic(expected = "with authority 0")]
    fn forwarding_a_childs_frame_with_the_roots_authority_is_caught() {
        let mut forged =
            Message::new(ContextId(3), ContextId(2), Handle::CALL_FUNCTION, Encoding::Mitogen, "");
        forged.auth = ContextId(0);
        fixture().check_transmit(Some(StreamId(1)), StreamId(2), &forged.to_frame());
    }

    #[test]
    fn the_routers_own_frames_carry_its_authority_and_pass() {
        let own = Message::new(ContextId(0), ContextId(1), Handle::DEL_ROUTE, Encoding::Binary, "2");
        fixture().check_transmit(Some(StreamId(1)), StreamId(0), &own.to_frame());
    }

    #[test]
    fn a_child_claiming_the_roots_authority_is_refused_not_delivered() {
        let mut fx = fixture();
        let mut forged =
            Message::new(ContextId(1), ContextId(2), Handle::CALL_FUNCTION, Encoding::Mitogen, "");
        forged.auth = ContextId(0);
        fx.receive(StreamId(1), &[&forged.to_frame().to_vec()]);
    }
}
