//! The frame decoder fed one stream in arbitrary chunks (docs/protocol.md §2).
//!
//! Input: a byte choosing the maximum message size, a count of chunk sizes and the sizes, then
//! the stream itself. Properties:
//! - every split of the same bytes gives the same messages, then the same error or the same
//!   end-of-stream verdict, as feeding them in one piece;
//! - the messages re-encode to exactly the bytes they were read from;
//! - the decoder never buffers more than it was fed.

use arbor_core::frame::{DecodeError, Decoder, Message, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};

use crate::input::{Input, Script};

/// The maximum sizes a run may pick: none, tiny, header-sized, small, and the real default.
const MAX_SIZES: &[u32] = &[0, 1, HEADER_LEN as u32, 64, 4096, DEFAULT_MAX_MESSAGE_SIZE];

/// Most chunk sizes one input gives; the rest of the stream is one last chunk.
const MAX_CHUNKS: usize = 32;

/// What a decoder made of a whole stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Message>,
    /// The first error `next_message` returned, else what `finish` said.
    end: Result<(), DecodeError>,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let max = input.pick(MAX_SIZES);
    let chunks: Vec<usize> =
        (0..usize::from(input.byte()) % (MAX_CHUNKS + 1)).map(|_| usize::from(input.byte())).collect();
    let stream = input.rest();

    let whole = decode(max, [stream]);
    let split = decode(max, split_at_sizes(stream, &chunks));
    assert_eq!(whole, split, "a different split of the same bytes decoded differently");
    assert_reencodes(&whole.messages, stream);
}

/// Feeds `chunks` in order, taking every whole message after each; stops at the first error.
fn decode<'a>(max: u32, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut messages = Vec::new();
    let mut fed = 0;
    for chunk in chunks {
        decoder.feed(chunk);
        fed += chunk.len();
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return Outcome { messages, end: Err(e) },
            }
        }
        assert!(decoder.buffered() <= fed, "the decoder holds more than it was fed");
    }
    Outcome { messages, end: decoder.finish() }
}

/// Cuts `stream` into pieces of the given sizes, then the rest.
fn split_at_sizes<'a>(mut stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    for &n in sizes {
        let (head, rest) = stream.split_at(n.min(stream.len()));
        pieces.push(head);
        stream = rest;
    }
    pieces.push(stream);
    pieces
}

/// The decoded messages, encoded again, are the front of the stream byte for byte.
fn assert_reencodes(messages: &[Message], stream: &[u8]) {
    let mut offset = 0;
    for m in messages {
        let wire = m.to_frame().to_vec();
        assert_eq!(
            stream.get(offset..offset + wire.len()),
            Some(&wire[..]),
            "a message re-encoded differently"
        );
        offset += wire.len();
    }
}

/// Seeds: each golden frame alone, all of them back to back split at awkward places, and a
/// truncated frame.
pub fn seeds() -> Vec<Vec<u8>> {
    let frames = crate::golden::frames();
    let default = (MAX_SIZES.len() - 1) as u8;
    let mut seeds: Vec<Vec<u8>> =
        frames.iter().map(|f| Script::default().byte(default).byte(0).raw(f).0.clone()).collect();
    let all: Vec<u8> = frames.concat();
    let mut split = Script::default();
    split.byte(default).byte(4).raw(&[1, 25, 26, 100]).raw(&all);
    seeds.push(split.0);
    let mut truncated = Script::default();
    truncated.byte(default).byte(1).byte(3).raw(&frames[1][..frames[1].len() - 1]);
    seeds.push(truncated.0);
    seeds
}
