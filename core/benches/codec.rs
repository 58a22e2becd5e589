//! Codec, router and node-step throughput, each beside a floor measured the same way in the
//! same run.
//!
//! `cargo bench -p arbor-core --bench codec` prints, per workload, the median of several rounds
//! and the ratio to its floor: a plain `memcpy` of the same bytes in the same read-sized chunks
//! (the least any decoder fed from a read buffer must do).
// A benchmark measures wall time; the library itself never reads a clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use arbor_core::frame::{Decoder, Encoding, Message, DEFAULT_MAX_MESSAGE_SIZE};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use arbor_core::node::{Input, Node, NodeConfig, Output, StreamKind};
use arbor_core::router::{Event, Peer, Router, RouterConfig, StreamId};
use arbor_core::time::Instant as CoreInstant;

/// mitogen's read size; the host hands the core at most this much per read.
const READ: usize = 128 * 1024;
const ROUNDS: usize = 9;

fn stream_of(count: usize, body_len: usize, dst: u32, src: u32) -> Vec<u8> {
    let body = vec![0xa5u8; body_len];
    let m = Message::new(ContextId(dst), ContextId(src), Handle(1000), Encoding::Binary, body);
    let frame = m.to_frame().to_vec();
    frame.repeat(count)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    f(); // warm up
    median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn floor_copy(wire: &[u8]) -> Duration {
    let mut sink = Vec::with_capacity(READ);
    time(|| {
        for chunk in wire.chunks(READ) {
            sink.clear();
            sink.extend_from_slice(chunk);
            black_box(&sink);
        }
    })
}

fn decode_all(wire: &[u8]) -> usize {
    let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    let mut n = 0;
    for chunk in wire.chunks(READ) {
        d.feed(chunk);
        while let Some(m) = d.next_message().expect("valid") {
            black_box(&m);
            n += 1;
        }
    }
    n
}

fn route_all(wire: &[u8]) -> usize {
    let mut r = Router::new(RouterConfig {
        id: ContextId(1),
        ancestors: vec![ContextId(0)],
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
    });
    r.add_stream(StreamId(0), Peer::Parent).expect("parent");
    r.add_stream(StreamId(1), Peer::Child { id: ContextId(5), name: None }).expect("child 5");
    r.add_stream(StreamId(2), Peer::Child { id: ContextId(6), name: None }).expect("child 6");
    while r.poll_event().is_some() {}
    let mut n = 0;
    for chunk in wire.chunks(READ) {
        r.receive(StreamId(1), chunk);
        while let Some(e) = r.poll_event() {
            if let Event::Transmit { frame, .. } = e {
                black_box(&frame);
                n += 1;
            }
        }
    }
    n
}

/// Writes a frame into the "socket" buffer and feeds it to the node at the other end; returns
/// its length on the wire.
fn carry(frame: &arbor_core::frame::Frame, wire: &mut Vec<u8>, to: &mut Node, stream: StreamId) -> usize {
    wire.clear();
    wire.extend_from_slice(frame.header());
    wire.extend_from_slice(frame.body());
    to.handle_input(CoreInstant::ZERO, Input::Received { stream, bytes: wire }).expect("input");
    wire.len()
}

/// `calls` sequential call round trips between a root node and a child node joined in memory:
/// every frame goes through encode, decode, authentication, routing, the dispatcher and the
/// pending-call table; the "main thread" answers at once. Returns the bytes that crossed.
fn node_steps(calls: usize) -> usize {
    let now = CoreInstant::ZERO;
    let mut root = Node::new(NodeConfig::root());
    let mut child = Node::new(NodeConfig::child(ContextId(1), vec![ContextId(0)]));
    let (down, up) = (StreamId(1), StreamId(0));
    let kind = StreamKind::Child { id: ContextId(1), pid: None, name: None };
    root.handle_input(now, Input::StreamOpened { stream: down, kind }).expect("child stream");
    child.handle_input(now, Input::StreamOpened { stream: up, kind: StreamKind::Parent }).expect("parent");
    let mut wire = Vec::with_capacity(256);
    let mut crossed = 0;
    let mut done = 0;
    root.call(now, ContextId(1), "echo", &b"0123456789abcdef"[..]).expect("call");
    while done < calls {
        while let Some(o) = root.poll_output() {
            match o {
                Output::Transmit { frame, .. } => crossed += carry(&frame, &mut wire, &mut child, up),
                Output::CallReturned { result, .. } => {
                    black_box(result.expect("echo answers"));
                    done += 1;
                    if done < calls {
                        root.call(now, ContextId(1), "echo", &b"0123456789abcdef"[..]).expect("call");
                    }
                }
                _ => {}
            }
        }
        while let Some(o) = child.poll_output() {
            match o {
                Output::Transmit { frame, .. } => crossed += carry(&frame, &mut wire, &mut root, down),
                Output::RunCall { job, request, .. } => {
                    child
                        .handle_input(now, Input::CallFinished { job, result: Ok(request.args) })
                        .expect("done");
                }
                _ => {}
            }
        }
    }
    crossed
}

fn report(name: &str, unit: &str, amount: f64, t: Duration, floor: Duration) {
    let rate = amount / t.as_secs_f64();
    let floor_rate = amount / floor.as_secs_f64();
    println!(
        "{name:<34} {rate:>12.3e} {unit:<8} floor(memcpy) {floor_rate:>12.3e} {unit:<8} arbor/floor {:>5.2}",
        rate / floor_rate
    );
}

fn main() {
    // Decode throughput, 64 KiB bodies.
    let big = stream_of(512, 64 * 1024, 5, 6);
    assert_eq!(decode_all(&big), 512);
    let t = time(|| {
        black_box(decode_all(&big));
    });
    report("decode 64 KiB bodies", "B/s", big.len() as f64, t, floor_copy(&big));

    // Small messages: decode alone, then decode + authenticate + route.
    let count = 400_000;
    let small = stream_of(count, 16, 6, 5);
    assert_eq!(decode_all(&small), count);
    assert_eq!(route_all(&small), count);
    let floor = floor_copy(&small);
    let t = time(|| {
        black_box(decode_all(&small));
    });
    report("decode 16 B messages", "msg/s", count as f64, t, floor);
    let t = time(|| {
        black_box(route_all(&small));
    });
    report("decode+route 16 B messages", "msg/s", count as f64, t, floor);

    // Node step: whole call round trips between two nodes (two frames each).
    let calls = 100_000;
    let crossed = node_steps(calls);
    let t = time(|| {
        black_box(node_steps(calls));
    });
    let floor = floor_copy(&vec![0u8; crossed]);
    report("node step: call round trips", "calls/s", calls as f64, t, floor);
}
