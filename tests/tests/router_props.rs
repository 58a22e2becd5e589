//! Property tests of the router against hostile input (docs/protocol.md §4): it never panics,
//! and nothing arriving from below ever carries an ancestor's authority further.

use arbor_core::frame::{Encoding, Message};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::router::{Event, Peer, RejectReason, Rejection, Router, StreamId};
use arbor_tests::{child, drain, router};
use proptest::prelude::*;

const PARENT: StreamId = StreamId(0);
const CHILD_STREAMS: [StreamId; 2] = [StreamId(1), StreamId(2)];

/// Context 1 (ancestors 0) with children 5 and 6.
fn subject() -> Router {
    let mut r = router(1, &[0]);
    r.add_stream(PARENT, Peer::Parent).unwrap();
    r.add_stream(CHILD_STREAMS[0], child(5)).unwrap();
    r.add_stream(CHILD_STREAMS[1], child(6)).unwrap();
    drain(&mut r);
    r
}

/// Ids drawn mostly from the ones that matter here, sometimes from anywhere.
fn id() -> impl Strategy<Value = ContextId> {
    prop_oneof![
        4 => prop::sample::select(vec![0u32, 1, 2, 5, 6, 7, 50]).prop_map(ContextId),
        1 => any::<u32>().prop_map(ContextId),
    ]
}

fn handle() -> impl Strategy<Value = Handle> {
    prop_oneof![
        4 => (100u32..=110).prop_map(Handle),
        1 => prop::sample::select(vec![0u32, 999, 1000, 1001]).prop_map(Handle),
        1 => any::<u32>().prop_map(Handle),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["5", "6", "7", "50", "0", "1", "7:x", "", "x"])
            .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (id(), id(), id(), handle(), handle(), body(), 0usize..4).prop_map(
        |(dst, src, auth, handle, reply_to, body, enc)| {
            let enc = [Encoding::Binary, Encoding::Mitogen, Encoding::Postcard, Encoding::Pickle][enc];
            Message { enc, dst, src, auth, handle, reply_to, body: body.into() }
        },
    )
}

#[derive(Debug, Clone)]
enum Step {
    Frame { stream: u32, msg: Message, split: usize },
    Garbage { stream: u32, bytes: Vec<u8> },
    Eof { stream: u32 },
    Send { msg: Message },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u32..4, message(), 0usize..64).prop_map(|(stream, msg, split)| Step::Frame { stream, msg, split }),
        1 => (0u32..4, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(stream, bytes)| Step::Garbage { stream, bytes }),
        1 => (0u32..4).prop_map(|stream| Step::Eof { stream }),
        1 => message().prop_map(|msg| Step::Send { msg }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn router_never_panics_on_arbitrary_input(steps in prop::collection::vec(step(), 0..60)) {
        let mut r = subject();
        for s in steps {
            match s {
                Step::Frame { stream, msg, split } => {
                    let wire = msg.to_frame().to_vec();
                    let cut = split.min(wire.len());
                    r.receive(StreamId(stream), &wire[..cut]);
                    r.receive(StreamId(stream), &wire[cut..]);
                }
                Step::Garbage { stream, bytes } => r.receive(StreamId(stream), &bytes),
                Step::Eof { stream } => r.eof(StreamId(stream)),
                Step::Send { msg } => r.send(msg),
            }
            for e in drain(&mut r) {
                // Whatever happened, a Transmit only ever goes to a stream the router knows or
                // knew, and every frame it writes decodes again.
                if let Event::Transmit { stream, frame } = e {
                    prop_assert!(stream.0 < 4);
                    arbor_tests::decode_one(&frame.to_vec());
                }
            }
        }
    }

    #[test]
    fn ancestor_authority_from_below_is_never_delivered_or_forwarded(
        prelude in prop::collection::vec((0usize..2, message()), 0..20),
        stream in 0usize..2,
        mut msg in message(),
        ancestor in prop::sample::select(vec![0u32, 1]),
        spoof_src in any::<bool>(),
    ) {
        let mut r = subject();
        // Whatever the children said before (route claims included) …
        for (s, m) in prelude {
            r.receive(CHILD_STREAMS[s], &m.to_frame().to_vec());
        }
        drain(&mut r);
        // … a frame from below carrying this context's or an ancestor's authority goes nowhere.
        msg.auth = ContextId(ancestor);
        if spoof_src {
            msg.src = ContextId(ancestor);
        }
        r.receive(CHILD_STREAMS[stream], &msg.to_frame().to_vec());
        let events = drain(&mut r);
        // It is refused. If it wanted an answer and its src_id is genuine (only its auth_id is
        // forged), the only thing written is a dead reply to that sender, down the stream it
        // came from; a forged src_id gets no answer at all (no one can be named).
        let answered = matches!(
            events.last(),
            Some(Event::Rejected(Rejection { dead_reply_sent: true, .. }))
        );
        prop_assert_eq!(events.len(), 1 + usize::from(answered), "{:?}", events);
        prop_assert!(!answered || (msg.reply_to != Handle::NONE && !msg.is_dead() && !spoof_src));
        if answered {
            let is_dead_reply_back = match &events[0] {
                Event::Transmit { stream: s, frame } if *s == CHILD_STREAMS[stream] => {
                    let reply = arbor_tests::decode_one(&frame.to_vec());
                    reply.is_dead() && reply.handle == msg.reply_to && reply.dst == msg.src
                }
                _ => false,
            };
            prop_assert!(is_dead_reply_back, "{:?}", events);
        }
        let is_auth_rejection = matches!(
            events.last(),
            Some(Event::Rejected(Rejection {
                reason: RejectReason::AuthMismatch { .. } | RejectReason::SpoofedSelf,
                ..
            }))
        );
        prop_assert!(is_auth_rejection, "{:?}", events);
    }
}
