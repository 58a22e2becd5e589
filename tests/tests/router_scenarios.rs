//! Scenarios S8–S14, S16 and S25 of docs/scenarios.md at the router level, written as the inputs a
//! context's router is given and the exact events it answers with (docs/protocol.md §2–§4).

use arbor_core::frame::{DecodeError, Encoding, Message, HEADER_LEN};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::router::{Event, Origin, RejectReason, Rejection, Router, RouterConfig, StreamId};
use arbor_tests::{child, drain, feed, msg, router, sent_on, Net};

const PARENT: u32 = 0; // stream ids used in single-router tests
const KID_A: u32 = 1;
const KID_B: u32 = 2;

/// Context 1, child of the root 0, with its own children 5 (on stream 1) and 6 (on stream 2).
fn middle() -> Router {
    let mut r = router(1, &[0]);
    r.add_stream(StreamId(PARENT), arbor_core::router::Peer::Parent).unwrap();
    r.add_stream(StreamId(KID_A), child(5)).unwrap();
    r.add_stream(StreamId(KID_B), child(6)).unwrap();
    drain(&mut r);
    r
}

fn rejected(stream: u32, m: &Message, reason: RejectReason) -> Event {
    Event::Rejected(Rejection {
        stream: Some(StreamId(stream)),
        dst: m.dst,
        src: m.src,
        auth: m.auth,
        handle: m.handle,
        reason,
        dead_reply_sent: false,
    })
}

fn routes(r: &Router) -> Vec<(ContextId, StreamId)> {
    r.routes().collect()
}

// --- S8: SHUTDOWN is obeyed only from the immediate parent ---------------------------------

#[test]
fn s8_shutdown_from_the_parent_is_delivered() {
    let mut r = middle();
    let m = msg(1, 0, Handle::SHUTDOWN, "");
    assert_eq!(
        feed(&mut r, PARENT, &m),
        vec![Event::Deliver { origin: Origin::Stream(StreamId(PARENT)), message: m }]
    );
}

#[test]
fn s8_shutdown_from_a_sibling_is_ignored_and_logged() {
    let mut r = middle();
    let before = routes(&r);
    // Sibling 2 reaches us through our parent, with its own (valid) authority.
    let m = msg(1, 2, Handle::SHUTDOWN, "");
    assert_eq!(feed(&mut r, PARENT, &m), vec![rejected(PARENT, &m, RejectReason::ShutdownNotFromParent)]);
    assert_eq!(routes(&r), before);
}

#[test]
fn s8_shutdown_from_the_grandparent_is_ignored() {
    // Context 5 sits below 1 below 0: the root may call it, but only 1 may shut it down.
    let mut r = router(5, &[1, 0]);
    r.add_stream(StreamId(PARENT), arbor_core::router::Peer::Parent).unwrap();
    let m = msg(5, 0, Handle::SHUTDOWN, "");
    assert_eq!(feed(&mut r, PARENT, &m), vec![rejected(PARENT, &m, RejectReason::ShutdownNotFromParent)]);
}

#[test]
fn s8_shutdown_from_a_grandchild_is_ignored() {
    let mut r = middle();
    let m = msg(1, 5, Handle::SHUTDOWN, "");
    assert_eq!(feed(&mut r, KID_A, &m), vec![rejected(KID_A, &m, RejectReason::ShutdownNotFromParent)]);
}

#[test]
fn s8_shutdown_with_spoofed_parent_authority_is_ignored() {
    let mut r = middle();
    let before = routes(&r);
    let mut m = msg(1, 5, Handle::SHUTDOWN, "");
    m.auth = ContextId(0);
    assert_eq!(
        feed(&mut r, KID_A, &m),
        vec![rejected(KID_A, &m, RejectReason::AuthMismatch { expected: Some(StreamId(PARENT)) })]
    );
    let forged = msg(1, 0, Handle::SHUTDOWN, "");
    assert_eq!(
        feed(&mut r, KID_A, &forged),
        vec![rejected(KID_A, &forged, RejectReason::AuthMismatch { expected: Some(StreamId(PARENT)) })]
    );
    assert_eq!(routes(&r), before);
}

// --- S9: CALL_FUNCTION needs parent authority, proven by the arrival stream -----------------

#[test]
fn s9_call_with_root_authority_from_a_child_stream_is_dropped() {
    let mut r = middle();
    let mut m = msg(1, 5, Handle::CALL_FUNCTION, "f");
    m.auth = ContextId(0);
    assert_eq!(
        feed(&mut r, KID_A, &m),
        vec![rejected(KID_A, &m, RejectReason::AuthMismatch { expected: Some(StreamId(PARENT)) })]
    );
}

#[test]
fn s9_call_from_a_child_with_its_own_authority_is_refused_by_policy() {
    let mut r = middle();
    let m = msg(1, 5, Handle::CALL_FUNCTION, "f");
    assert_eq!(feed(&mut r, KID_A, &m), vec![rejected(KID_A, &m, RejectReason::NotParentAuthority)]);
}

#[test]
fn s9_call_from_any_ancestor_via_the_parent_is_delivered() {
    let mut r = router(5, &[1, 0]);
    r.add_stream(StreamId(PARENT), arbor_core::router::Peer::Parent).unwrap();
    let m = msg(5, 0, Handle::CALL_FUNCTION, "f");
    assert_eq!(
        feed(&mut r, PARENT, &m),
        vec![Event::Deliver { origin: Origin::Stream(StreamId(PARENT)), message: m }]
    );
}

#[test]
fn a_message_claiming_our_own_authority_from_outside_is_dropped() {
    let mut r = middle();
    let m = msg(1, 1, Handle(1000), "");
    assert_eq!(feed(&mut r, PARENT, &m), vec![rejected(PARENT, &m, RejectReason::SpoofedSelf)]);
}

#[test]
fn src_must_match_the_arrival_stream_too() {
    let mut r = middle();
    // Authority of child 5 (correct stream) but claiming to come from child 6.
    let mut m = msg(0, 6, Handle(1000), "");
    m.auth = ContextId(5);
    assert_eq!(
        feed(&mut r, KID_A, &m),
        vec![rejected(KID_A, &m, RejectReason::SrcMismatch { expected: Some(StreamId(KID_B)) })]
    );
}

// --- S10: undeliverable messages are answered dead ---------------------------------------

#[test]
fn s10_message_to_an_unknown_id_gets_a_dead_reply_naming_both_ids() {
    let mut r = router(0, &[]);
    r.add_stream(StreamId(KID_A), child(1)).unwrap();
    drain(&mut r);
    let m = msg(1234, 1, Handle(77), "hello").with_reply_to(Handle(1000));
    let events = feed(&mut r, KID_A, &m);
    let replies = sent_on(&events, KID_A);
    assert_eq!(
        replies,
        vec![Message::dead(ContextId(1), ContextId(0), Handle(1000), "no route to 1234, my ID is 0")]
    );
    assert_eq!(
        events.last(),
        Some(&Event::Rejected(Rejection {
            stream: Some(StreamId(KID_A)),
            dst: ContextId(1234),
            src: ContextId(1),
            auth: ContextId(1),
            handle: Handle(77),
            reason: RejectReason::NoRoute,
            dead_reply_sent: true,
        }))
    );
}

#[test]
fn s10_without_reply_to_nothing_is_sent_back() {
    let mut r = router(0, &[]);
    r.add_stream(StreamId(KID_A), child(1)).unwrap();
    drain(&mut r);
    let m = msg(1234, 1, Handle(77), "hello");
    assert_eq!(feed(&mut r, KID_A, &m), vec![rejected(KID_A, &m, RejectReason::NoRoute)]);
}

#[test]
fn dead_messages_are_never_answered_with_dead_messages() {
    let mut r = router(0, &[]);
    r.add_stream(StreamId(KID_A), child(1)).unwrap();
    drain(&mut r);
    let m = Message::dead(ContextId(1234), ContextId(1), Handle(1000), "gone");
    assert_eq!(feed(&mut r, KID_A, &m), vec![rejected(KID_A, &m, RejectReason::NoRoute)]);
}

#[test]
fn a_message_from_the_parent_is_never_routed_back_up() {
    let mut r = middle();
    let m = msg(99, 0, Handle(1000), "x").with_reply_to(Handle(1001));
    let events = feed(&mut r, PARENT, &m);
    // The dead reply goes to the sender (up, as a new message); the message itself does not.
    assert_eq!(
        sent_on(&events, PARENT),
        vec![Message::dead(ContextId(0), ContextId(1), Handle(1001), "no route to 99, my ID is 1")]
    );
    assert!(matches!(
        events.last(),
        Some(Event::Rejected(Rejection {
            reason: RejectReason::WouldReturnToParent,
            dead_reply_sent: true,
            ..
        }))
    ));
}

#[test]
fn messages_between_children_and_up_are_forwarded_without_copying_bodies() {
    let mut r = middle();
    let m = msg(6, 5, Handle(1000), "to my sibling");
    let events = feed(&mut r, KID_A, &m);
    assert_eq!(sent_on(&events, KID_B), vec![m.clone()]);
    let up = msg(0, 5, Handle(1000), "to the root");
    assert_eq!(sent_on(&feed(&mut r, KID_A, &up), PARENT), vec![up]);
    assert_eq!(r.egress_ids(StreamId(KID_A)).collect::<Vec<_>>(), vec![ContextId(0), ContextId(6)]);
}

// --- S11: a corrupt stream is dropped alone ------------------------------------------------

#[test]
fn s11_bad_enc_drops_that_stream_only() {
    let mut r = middle();
    let mut wire = msg(6, 5, Handle(1000), "x").to_frame().to_vec();
    wire[0] = 0;
    wire[1] = 1;
    wire.extend(msg(6, 5, Handle(1000), "after").to_frame().to_vec());
    r.receive(StreamId(KID_A), &wire);
    assert_eq!(
        drain(&mut r),
        vec![
            Event::Disconnected { id: ContextId(5) },
            Event::Transmit {
                stream: StreamId(PARENT),
                frame: Message::new(ContextId(0), ContextId(1), Handle::DEL_ROUTE, Encoding::Binary, "5")
                    .to_frame()
            },
            Event::StreamFailed { stream: StreamId(KID_A), error: DecodeError::UnknownEncoding { enc: 1 } },
        ]
    );
    assert_eq!(r.route(ContextId(5)), None);
    // Bytes arriving later on the dropped stream are ignored; the other child still works.
    r.receive(StreamId(KID_A), &wire);
    assert_eq!(drain(&mut r), vec![]);
    let m = msg(0, 6, Handle(1000), "still here");
    assert_eq!(sent_on(&feed(&mut r, KID_B, &m), PARENT), vec![m]);
}

// --- S12: oversize messages -----------------------------------------------------------------

fn small_router(max: u32) -> Router {
    let mut r = Router::new(RouterConfig { id: ContextId(0), ancestors: vec![], max_message_size: max });
    r.add_stream(StreamId(KID_A), child(1)).unwrap();
    drain(&mut r);
    r
}

#[test]
fn s12_incoming_oversize_frame_drops_the_stream_from_its_header_alone() {
    let mut r = small_router(1024);
    let big = Message::new(ContextId(0), ContextId(1), Handle(1000), Encoding::Binary, vec![0u8; 1025]);
    // Only the header is fed: the router refuses before a single body byte exists.
    r.receive(StreamId(KID_A), &big.to_frame().to_vec()[..HEADER_LEN]);
    assert_eq!(
        drain(&mut r),
        vec![
            Event::Disconnected { id: ContextId(1) },
            Event::StreamFailed {
                stream: StreamId(KID_A),
                error: DecodeError::TooLarge { len: 1025, max: 1024 }
            },
        ]
    );
}

#[test]
fn s12_a_claimed_length_of_4_gib_is_refused_without_allocating_it() {
    let mut r = small_router(arbor_core::frame::DEFAULT_MAX_MESSAGE_SIZE);
    let mut header = msg(0, 1, Handle(1000), "").header();
    header.len = u32::MAX;
    r.receive(StreamId(KID_A), &header.to_bytes());
    assert!(drain(&mut r).contains(&Event::StreamFailed {
        stream: StreamId(KID_A),
        error: DecodeError::TooLarge { len: u32::MAX, max: arbor_core::frame::DEFAULT_MAX_MESSAGE_SIZE },
    }));
}

#[test]
fn s12_routed_oversize_message_is_answered_dead() {
    let mut r = small_router(1024);
    let big = Message::new(ContextId(1), ContextId(0), Handle(1000), Encoding::Binary, vec![0u8; 1025])
        .with_reply_to(Handle(1005));
    r.send(big);
    let events = drain(&mut r);
    assert_eq!(
        events[0],
        Event::Deliver {
            origin: Origin::Local,
            message: Message::dead(
                ContextId(0),
                ContextId(0),
                Handle(1005),
                "message too large (max 1024 bytes)"
            ),
        }
    );
    assert!(matches!(
        &events[1],
        Event::Rejected(Rejection { reason: RejectReason::TooLarge { len: 1025, max: 1024 }, .. })
    ));
    assert_eq!(events.len(), 2);
}

// --- S13: framing independent of read boundaries --------------------------------------------

#[test]
fn s13_many_frames_in_one_read_and_one_frame_over_many_reads_route_identically() {
    let msgs: Vec<Message> = (0..20).map(|i| msg(6, 5, Handle(1000 + i), "payload")).collect();
    let wire: Vec<u8> = msgs.iter().flat_map(|m| m.to_frame().to_vec()).collect();

    let mut whole = middle();
    whole.receive(StreamId(KID_A), &wire);
    let at_once = sent_on(&drain(&mut whole), KID_B);

    let mut bytewise = middle();
    for b in &wire {
        bytewise.receive(StreamId(KID_A), std::slice::from_ref(b));
    }
    assert_eq!(sent_on(&drain(&mut bytewise), KID_B), at_once);
    assert_eq!(at_once, msgs);
}

// --- S14: EOF inside a frame ----------------------------------------------------------------

#[test]
fn s14_eof_mid_frame_discards_the_partial_frame_and_closes_the_stream() {
    let mut r = middle();
    let whole = msg(6, 5, Handle(1000), "complete");
    let partial = msg(6, 5, Handle(1001), "cut short").to_frame().to_vec();
    let mut wire = whole.to_frame().to_vec();
    wire.extend_from_slice(&partial[..HEADER_LEN + 3]);
    r.receive(StreamId(KID_A), &wire);
    assert_eq!(sent_on(&drain(&mut r), KID_B), vec![whole]);
    r.eof(StreamId(KID_A));
    let events = drain(&mut r);
    assert_eq!(
        events.last(),
        Some(&Event::StreamFailed {
            stream: StreamId(KID_A),
            error: DecodeError::Truncated { buffered: HEADER_LEN + 3 }
        })
    );
    assert!(events.contains(&Event::Disconnected { id: ContextId(5) }));
    assert!(!events.iter().any(|e| matches!(e, Event::Deliver { .. })));
    assert_eq!(r.peer(StreamId(KID_A)), None);
}

// --- S16: a grandchild disconnects ------------------------------------------------------------

#[test]
fn s16_del_route_reaches_the_root_and_every_stream_that_sent_to_the_lost_context() {
    // root(0) ─s1─ C(1) ─s7─ G(5);  root ─s2─ D(2);  D has sent to G, so root's s2 knows G.
    let mut net = Net::default();
    let root = net.add(router(0, &[]));
    let c = net.add(router(1, &[0]));
    let d = net.add(router(2, &[0]));
    let g = net.add(router(5, &[1, 0]));
    net.link(root, 1, c, 0);
    net.link(root, 2, d, 0);
    net.link(c, 7, g, 0);
    assert_eq!(net.routers[root].route(ContextId(5)), Some(StreamId(1)), "ADD_ROUTE reached the root");

    net.routers[d].send(msg(5, 2, Handle(1000), "hi G"));
    net.run();
    assert!(net
        .events_of(g)
        .iter()
        .any(|e| matches!(e, Event::Deliver { message, .. } if message.body == "hi G")));
    net.log.clear();

    net.cut(c, 7);

    for (who, name) in [(root, "root"), (c, "C"), (d, "D")] {
        assert!(
            net.events_of(who).contains(&&Event::Disconnected { id: ContextId(5) }),
            "{name} saw G disconnect"
        );
        assert_eq!(net.routers[who].route(ContextId(5)), None, "{name} has no route to G");
    }
    let del_route = |dst: u32, src: u32| {
        Message::new(ContextId(dst), ContextId(src), Handle::DEL_ROUTE, Encoding::Binary, "5").to_frame()
    };
    assert!(net.events_of(c).contains(&&Event::Transmit { stream: StreamId(0), frame: del_route(0, 1) }));
    assert!(net.events_of(root).contains(&&Event::Transmit { stream: StreamId(2), frame: del_route(2, 0) }));
    // Never back down the stream the news came from, and D does not echo it back up.
    assert!(!net
        .events_of(root)
        .iter()
        .any(|e| matches!(e, Event::Transmit { stream, .. } if *stream == StreamId(1))));
    assert!(!net.events_of(d).iter().any(|e| matches!(e, Event::Transmit { .. })));
    assert!(!net.log.iter().any(|(_, e)| matches!(e, Event::Rejected(_))));
}

#[test]
fn del_route_from_a_stream_not_holding_the_route_is_refused() {
    let mut r = middle();
    let m = msg(1, 6, Handle::DEL_ROUTE, "5");
    assert_eq!(
        feed(&mut r, KID_B, &m),
        vec![rejected(
            KID_B,
            &m,
            RejectReason::DelRouteFromWrongStream { id: ContextId(5), holder: Some(StreamId(KID_A)) }
        )]
    );
    assert_eq!(r.route(ContextId(5)), Some(StreamId(KID_A)));
}

// --- S25: duplicate ADD_ROUTE -----------------------------------------------------------------

#[test]
fn s25_add_route_for_an_id_reachable_elsewhere_is_refused_and_the_table_unchanged() {
    let mut r = router(0, &[]);
    r.add_stream(StreamId(KID_A), child(1)).unwrap();
    r.add_stream(StreamId(KID_B), child(2)).unwrap();
    drain(&mut r);
    let first = msg(0, 1, Handle::ADD_ROUTE, "9:worker");
    assert_eq!(
        feed(&mut r, KID_A, &first),
        vec![Event::RouteAdded { id: ContextId(9), stream: StreamId(KID_A) }]
    );
    let before = routes(&r);

    let dup = msg(0, 2, Handle::ADD_ROUTE, "9");
    assert_eq!(
        feed(&mut r, KID_B, &dup),
        vec![rejected(
            KID_B,
            &dup,
            RejectReason::DuplicateRoute { id: ContextId(9), existing: StreamId(KID_A) }
        )]
    );
    assert_eq!(routes(&r), before);
    assert_eq!(r.name(ContextId(9)), Some("worker"));
}

#[test]
fn add_route_for_an_ancestor_is_refused_so_authority_cannot_be_stolen() {
    let mut r = middle();
    let m = msg(1, 5, Handle::ADD_ROUTE, "0");
    assert_eq!(
        feed(&mut r, KID_A, &m),
        vec![rejected(KID_A, &m, RejectReason::RouteToAncestor { id: ContextId(0) })]
    );
    // So a grandchild still cannot speak with the root's authority.
    let mut call = msg(1, 5, Handle::CALL_FUNCTION, "f");
    call.auth = ContextId(0);
    assert!(matches!(
        feed(&mut r, KID_A, &call)[..],
        [Event::Rejected(Rejection { reason: RejectReason::AuthMismatch { .. }, .. })]
    ));
}

#[test]
fn accepted_routes_propagate_up_with_their_names() {
    let mut r = middle();
    let events = feed(&mut r, KID_A, &msg(1, 5, Handle::ADD_ROUTE, "50:leaf"));
    assert_eq!(events[0], Event::RouteAdded { id: ContextId(50), stream: StreamId(KID_A) });
    assert_eq!(sent_on(&events, PARENT), vec![msg(0, 1, Handle::ADD_ROUTE, "50:leaf")]);
}

/// One stream may teach at most `MAX_ROUTES_PER_STREAM` routes: past that ADD_ROUTE is refused
/// (each route costs memory at every hop above, and below the root nothing else bounds what a
/// subtree claims). A route forgotten (DEL_ROUTE) frees its place; the sibling is unaffected.
#[test]
fn a_stream_teaches_at_most_max_routes_and_a_forgotten_one_frees_its_place() {
    use arbor_core::router::MAX_ROUTES_PER_STREAM;
    let route = |handle: Handle, id: u32| {
        Message::new(ContextId(1), ContextId(5), handle, Encoding::Binary, id.to_string())
    };
    let mut r = middle();
    let first = 1000u32;
    let limit = MAX_ROUTES_PER_STREAM as u32;
    for id in first..first + limit {
        r.receive(StreamId(KID_A), &route(Handle::ADD_ROUTE, id).to_frame().to_vec());
    }
    drain(&mut r);
    assert_eq!(routes(&r).len(), MAX_ROUTES_PER_STREAM + 2, "every one taken, beside children 5 and 6");
    let over = route(Handle::ADD_ROUTE, first + limit);
    assert_eq!(
        feed(&mut r, KID_A, &over),
        vec![rejected(KID_A, &over, RejectReason::TooManyRoutes { id: ContextId(first + limit) })]
    );
    // The sibling still teaches its own.
    assert!(matches!(feed(&mut r, KID_B, &msg(1, 6, Handle::ADD_ROUTE, "9"))[0], Event::RouteAdded { .. }));
    // One forgotten, one more taken.
    feed(&mut r, KID_A, &route(Handle::DEL_ROUTE, first));
    assert!(matches!(feed(&mut r, KID_A, &over)[0], Event::RouteAdded { .. }));
}

#[test]
fn route_control_must_come_from_the_neighbour_on_the_stream() {
    let mut r = middle();
    r.receive(StreamId(KID_A), &msg(1, 5, Handle::ADD_ROUTE, "50").to_frame().to_vec());
    drain(&mut r);
    // Context 50, two hops down, announces a route straight to us: not its place.
    let m = msg(1, 50, Handle::ADD_ROUTE, "51");
    assert_eq!(
        feed(&mut r, KID_A, &m),
        vec![rejected(KID_A, &m, RejectReason::RouteControlNotFromNeighbour)]
    );
    let bad = msg(1, 5, Handle::ADD_ROUTE, "fifty");
    assert_eq!(feed(&mut r, KID_A, &bad), vec![rejected(KID_A, &bad, RejectReason::BadRouteBody)]);
    let from_parent = msg(1, 0, Handle::ADD_ROUTE, "77");
    assert_eq!(
        feed(&mut r, PARENT, &from_parent),
        vec![rejected(PARENT, &from_parent, RejectReason::AddRouteFromParent)]
    );
}

#[test]
fn losing_the_parent_stream_disconnects_the_parent() {
    let mut r = middle();
    r.eof(StreamId(PARENT));
    assert_eq!(drain(&mut r), vec![Event::Disconnected { id: ContextId(0) }]);
    assert_eq!(r.parent_stream(), None);
}

#[test]
fn a_child_cannot_delete_its_own_route_by_message() {
    let mut r = middle();
    let m = msg(1, 5, Handle::DEL_ROUTE, "5");
    assert_eq!(feed(&mut r, KID_A, &m), vec![rejected(KID_A, &m, RejectReason::DelRouteForNeighbour)]);
    assert_eq!(r.route(ContextId(5)), Some(StreamId(KID_A)));
}

#[test]
fn a_message_claiming_to_come_from_us_is_dropped_even_with_foreign_authority() {
    let mut r = middle();
    let mut m = msg(99, 1, Handle(1000), "").with_reply_to(Handle(1000));
    m.auth = ContextId(0);
    assert_eq!(feed(&mut r, PARENT, &m), vec![rejected(PARENT, &m, RejectReason::SpoofedSelf)]);
}

#[test]
fn host_cannot_register_a_child_under_an_ancestors_id() {
    let mut r = middle();
    assert_eq!(
        r.add_stream(StreamId(9), child(0)),
        Err(arbor_core::router::RouterError::ReservedId(ContextId(0)))
    );
    assert_eq!(
        r.add_stream(StreamId(9), child(1)),
        Err(arbor_core::router::RouterError::ReservedId(ContextId(1)))
    );
}

#[test]
fn children_registered_before_the_parent_stream_are_announced_with_it() {
    let mut r = router(1, &[0]);
    r.add_stream(StreamId(KID_A), child(5)).unwrap();
    drain(&mut r);
    r.add_stream(StreamId(PARENT), arbor_core::router::Peer::Parent).unwrap();
    assert_eq!(sent_on(&drain(&mut r), PARENT), vec![msg(0, 1, Handle::ADD_ROUTE, "5")]);
}

#[test]
fn egress_ids_stay_bounded_however_many_destinations_a_child_names() {
    let mut r = middle();
    let mut wire = Vec::new();
    for dst in 0..(arbor_core::router::MAX_EGRESS_IDS as u32 + 100) {
        wire.extend(
            Message::new(ContextId(10_000 + dst), ContextId(5), Handle(1000), Encoding::Binary, "")
                .to_frame()
                .to_vec(),
        );
    }
    r.receive(StreamId(KID_A), &wire);
    drain(&mut r);
    assert_eq!(r.egress_ids(StreamId(KID_A)).count(), arbor_core::router::MAX_EGRESS_IDS);
}

// --- S28: refusals are answered ---------------------------------------------------------

/// Root 0 with children 1 and 2, linked through in-memory streams.
fn siblings() -> Net {
    let mut net = Net::default();
    let root = net.add(router(0, &[]));
    let a = net.add(router(1, &[0]));
    let b = net.add(router(2, &[0]));
    net.link(root, 1, a, 0);
    net.link(root, 2, b, 0);
    net.log.clear();
    net
}

/// The dead replies router `i` delivered to itself, as (handle, reason).
fn dead_replies_at(net: &Net, i: usize) -> Vec<(Handle, String)> {
    net.events_of(i)
        .into_iter()
        .filter_map(|e| match e {
            Event::Deliver { message, .. } if message.is_dead() => {
                Some((message.handle, message.dead_reason().unwrap_or_default().to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn s28_a_call_to_a_sibling_is_answered_with_the_refusal_at_once() {
    let mut net = siblings();
    // Child 1 calls its sibling 2: the root forwards it, 2's router refuses it (1 is not an
    // ancestor of 2) and answers, so the call cannot stay pending until someone exits.
    let call = msg(2, 1, Handle::CALL_FUNCTION, "f").with_reply_to(Handle(1000));
    net.routers[1].send(call);
    net.run();
    assert_eq!(
        dead_replies_at(&net, 1),
        vec![(Handle(1000), "refused by context 2: CALL_FUNCTION without parent authority".to_string())]
    );
    assert!(net.events_of(2).iter().any(|e| matches!(
        e,
        Event::Rejected(Rejection { reason: RejectReason::NotParentAuthority, dead_reply_sent: true, .. })
    )));
}

#[test]
fn s28_a_shutdown_from_a_sibling_that_wants_a_reply_is_answered() {
    let mut net = siblings();
    net.routers[1].send(msg(2, 1, Handle::SHUTDOWN, "").with_reply_to(Handle(1001)));
    net.run();
    let replies = dead_replies_at(&net, 1);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].1.contains("SHUTDOWN not from the immediate parent"), "{replies:?}");
}

#[test]
fn s28_borrowed_authority_with_a_genuine_sender_is_answered_down_its_stream() {
    let mut r = middle();
    // Child 5 claims the root's authority for a call: refused, and 5 (whose src_id matches
    // its stream) is told why.
    let mut m = msg(1, 5, Handle::CALL_FUNCTION, "f").with_reply_to(Handle(1000));
    m.auth = ContextId(0);
    let events = feed(&mut r, KID_A, &m);
    let back = sent_on(&events, KID_A);
    assert_eq!(back.len(), 1, "{events:?}");
    assert!(back[0].is_dead() && back[0].dst == ContextId(5) && back[0].handle == Handle(1000));
    assert!(matches!(
        events.last(),
        Some(Event::Rejected(Rejection {
            reason: RejectReason::AuthMismatch { .. },
            dead_reply_sent: true,
            ..
        }))
    ));
}

#[test]
fn s28_a_forged_sender_is_not_answered_no_one_can_be_named() {
    let mut r = middle();
    // Through child 5's stream, claiming to come from child 6: an answer routed to 6 would let
    // 5 fail 6's calls, so nothing is sent; the refusal is still reported.
    let mut m = msg(0, 6, Handle::CALL_FUNCTION, "f").with_reply_to(Handle(1000));
    m.auth = ContextId(5);
    let events = feed(&mut r, KID_A, &m);
    assert_eq!(
        events,
        vec![rejected(KID_A, &m, RejectReason::SrcMismatch { expected: Some(StreamId(KID_B)) })]
    );
}

// --- a context's name outlives its route a while ----------------------------------------------

#[test]
fn a_message_decoded_with_its_senders_del_route_still_names_its_sender() {
    // root(0) ─s1─ C(1) ─ G(5, "grand"): G's last message and C's DEL_ROUTE for G arrive in one
    // read. A host handles the delivered message after the whole read, when the route is gone:
    // G's name must still be known then (a log line's prefix at the root).
    let mut r = router(0, &[]);
    r.add_stream(StreamId(1), child(1)).unwrap();
    feed(&mut r, 1, &msg(0, 1, Handle::ADD_ROUTE, "5:grand"));
    let last = msg(0, 5, Handle(1000), "last words");
    let mut bytes = last.to_frame().to_vec();
    bytes.extend_from_slice(&msg(0, 1, Handle::DEL_ROUTE, "5").to_frame().to_vec());
    r.receive(StreamId(1), &bytes);
    assert_eq!(
        drain(&mut r),
        vec![
            Event::Deliver { origin: Origin::Stream(StreamId(1)), message: last },
            Event::Disconnected { id: ContextId(5) }
        ]
    );
    assert_eq!(r.route(ContextId(5)), None);
    assert_eq!(r.name(ContextId(5)), Some("grand"));
}

#[test]
fn departed_names_are_kept_within_a_bound() {
    let mut r = router(0, &[]);
    let n = arbor_core::router::MAX_DEPARTED_NAMES as u32 + 1;
    for id in 1..=n {
        r.add_stream(
            StreamId(id),
            arbor_core::router::Peer::Child { id: ContextId(id), name: Some(format!("c{id}")) },
        )
        .unwrap();
        r.eof(StreamId(id));
    }
    drain(&mut r);
    assert_eq!(r.name(ContextId(1)), None, "the oldest is forgotten");
    assert_eq!(r.name(ContextId(2)).map(str::to_owned), Some("c2".to_string()));
    assert_eq!(r.name(ContextId(n)).map(str::to_owned), Some(format!("c{n}")));
}
