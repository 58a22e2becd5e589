//! The log-line splitter fed arbitrary bytes in arbitrary chunks (docs/shutdown.md "Output").
//!
//! Input: a byte choosing the line bound, a count of chunk sizes and the sizes, then the
//! bytes. Properties:
//! - no piece is longer than the bound (in the bytes it was cut from: a lossily decoded
//!   invalid byte becomes the 3-byte U+FFFD, so the decoded text may be up to 3 times longer);
//! - nothing is lost: for valid UTF-8, the pieces put together are the input without its
//!   newlines, and there are at least as many pieces as newlines;
//! - how the bytes were chunked changes nothing: the pieces are those of one single push.

use arbor_core::lines::LineSplitter;

use crate::input::{Input, Script};

const MAX_CHUNKS: usize = 32;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let max = 4 + usize::from(input.byte() % 61);
    let chunks: Vec<usize> =
        (0..usize::from(input.byte()) % (MAX_CHUNKS + 1)).map(|_| usize::from(input.byte())).collect();
    let bytes = input.rest();

    let whole = split(max, &[bytes]);
    let pieces = split(max, &cut(bytes, &chunks));
    assert_eq!(whole, pieces, "chunking changed the lines");
    assert_eq!(lent(max, &cut(bytes, &chunks)), pieces, "push_lines lent other lines than push gave");
    for p in &pieces {
        assert!(p.len() <= 3 * max, "a piece of {} bytes with a bound of {max}", p.len());
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        assert!(pieces.iter().all(|p| p.len() <= max), "a piece of valid text over the bound {max}");
        assert_eq!(pieces.concat(), text.replace('\n', ""), "text was lost or changed");
        assert!(pieces.len() >= text.matches('\n').count(), "a line was lost");
    }
}

/// Every piece the splitter gives for `chunks`, the unterminated last one included.
fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut splitter = LineSplitter::new(max);
    let mut out = Vec::new();
    for c in chunks {
        splitter.push(c, |l| out.push(l));
        assert!(splitter.buffered() <= max, "the splitter holds more than its bound");
    }
    out.extend(splitter.finish());
    out
}

/// The same through [`LineSplitter::push_lines`], which lends each line.
fn lent(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut splitter = LineSplitter::new(max);
    let mut out = Vec::new();
    for c in chunks {
        splitter.push_lines(c, |l| out.push(l.to_owned()));
    }
    out.extend(splitter.finish());
    out
}

fn cut<'a>(mut bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    for &n in sizes {
        let (head, rest) = bytes.split_at(n.min(bytes.len()));
        pieces.push(head);
        bytes = rest;
    }
    pieces.push(bytes);
    pieces
}

/// Seeds: short lines, a long line with multi-byte characters near the cuts, invalid UTF-8,
/// and output without a final newline.
pub fn seeds() -> Vec<Vec<u8>> {
    let texts: [&[u8]; 4] = [
        b"hello\nworld\n",
        "ab\u{e9}\u{20ac}\u{1f600}cdefghij\u{1f600}\u{1f600}\u{1f600}\n".as_bytes(),
        b"\xff\xfe\xc3\n\xe2\x82",
        b"no newline at the end",
    ];
    texts.iter().map(|t| Script::default().byte(4).byte(3).raw(&[1, 5, 7]).raw(t).0.clone()).collect()
}
