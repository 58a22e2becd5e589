//! mitogen 0.3.54's own encoder produced `data/mitogen-frames.json`. arbor must read every one of
//! those frames exactly, write them back byte for byte, and decode their concatenation however
//! the transport chops it up (docs/protocol.md §2).

use arbor_core::frame::{Decoder, Encoding, Message, DEFAULT_MAX_MESSAGE_SIZE};
use arbor_core::handle::Handle;
use arbor_core::ids::ContextId;
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    header_len: usize,
    max_message_size: u32,
    is_dead: u32,
    frames: Vec<GoldenFrame>,
}

#[derive(Deserialize)]
struct GoldenFrame {
    enc: i16,
    dst_id: u32,
    src_id: u32,
    auth_id: u32,
    handle: u32,
    reply_to: u32,
    data_hex: String,
    frame_hex: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn golden() -> &'static (Vec<Message>, Vec<Vec<u8>>) {
    static G: std::sync::OnceLock<(Vec<Message>, Vec<Vec<u8>>)> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mitogen-frames.json");
        let g: Golden =
            serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json");
        assert_eq!(g.header_len, arbor_core::frame::HEADER_LEN);
        assert_eq!(g.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(g.is_dead, Handle::IS_DEAD.0);
        assert_eq!(g.frames.len(), 33);
        let msgs = g
            .frames
            .iter()
            .map(|f| Message {
                enc: Encoding::from_wire(f.enc).expect("golden frames use known encodings"),
                dst: ContextId(f.dst_id),
                src: ContextId(f.src_id),
                auth: ContextId(f.auth_id),
                handle: Handle(f.handle),
                reply_to: Handle(f.reply_to),
                body: unhex(&f.data_hex).into(),
            })
            .collect();
        let wires = g.frames.iter().map(|f| unhex(&f.frame_hex)).collect();
        (msgs, wires)
    })
}

fn stream() -> Vec<u8> {
    golden().1.concat()
}

/// Feeds `wire` to a fresh decoder in chunks of the given sizes (cycled) and collects messages.
fn decode_chunked(wire: &[u8], sizes: &[usize]) -> Vec<Message> {
    let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= wire.len() {
            break;
        }
        let end = (at + size.max(&1)).min(wire.len());
        d.feed(&wire[at..end]);
        at = end;
        while let Some(m) = d.next_message().expect("golden stream is valid") {
            out.push(m);
        }
    }
    assert_eq!(d.finish(), Ok(()), "nothing left over");
    out
}

#[test]
fn every_golden_frame_decodes_to_its_recorded_fields() {
    let (msgs, wires) = golden();
    for (i, (want, wire)) in msgs.iter().zip(wires).enumerate() {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(wire);
        let got = d.next_message().expect("decodes").expect("whole");
        assert_eq!(&got, want, "frame {i}");
        assert_eq!(d.buffered(), 0, "frame {i} has no trailing bytes");
    }
}

#[test]
fn every_golden_frame_reencodes_byte_for_byte() {
    let (msgs, wires) = golden();
    for (i, (m, wire)) in msgs.iter().zip(wires).enumerate() {
        assert_eq!(&m.to_frame().to_vec(), wire, "frame {i} via Frame");
        let mut buf = bytes::BytesMut::new();
        m.encode(&mut buf);
        assert_eq!(&buf[..], &wire[..], "frame {i} via encode");
    }
}

#[test]
fn golden_dead_message_is_recognised() {
    let m = &golden().0[1];
    assert!(m.is_dead());
    assert_eq!(m.handle, Handle::CALL_FUNCTION);
    assert_eq!(m.dead_reason(), Some("dead: shutting down"));
}

#[test]
fn concatenation_decodes_in_one_read() {
    assert_eq!(&decode_chunked(&stream(), &[usize::MAX]), &golden().0);
}

#[test]
fn concatenation_decodes_one_byte_at_a_time() {
    // One byte per read splits the stream at every byte boundary.
    assert_eq!(&decode_chunked(&stream(), &[1]), &golden().0);
}

#[test]
fn small_frames_decode_split_in_two_at_every_boundary() {
    let (msgs, wires) = golden();
    for (m, wire) in msgs.iter().zip(wires).filter(|(_, w)| w.len() <= 4096) {
        for cut in 0..=wire.len() {
            let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
            d.feed(&wire[..cut]);
            let early = d.next_message().expect("valid");
            d.feed(&wire[cut..]);
            let got = match early {
                Some(got) => got,
                None => d.next_message().expect("valid").expect("whole after second chunk"),
            };
            assert_eq!(&got, m, "split at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn concatenation_decodes_in_random_chunk_sizes(sizes in prop::collection::vec(1usize..70_000, 1..40)) {
        prop_assert_eq!(&decode_chunked(&stream(), &sizes), &golden().0);
    }
}
