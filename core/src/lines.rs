//! Log capture: turning a child's stdout/stderr bytes into lines (docs/shutdown.md "Output").
//!
//! A logger stream carries whatever the process and anything that inherited its fds 1 and 2
//! wrote. The splitter cuts it at `\n`; a line longer than the bound is cut at the bound (on a
//! UTF-8 character boundary when one is near) so a runaway writer with no newline cannot grow
//! memory; at EOF a final line without a newline is still delivered (mitogen drops it). Text is
//! decoded lossily: invalid UTF-8 becomes U+FFFD rather than losing the line.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// The default bound on one line, in bytes. Longer lines arrive as several.
pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;

/// Which of a process's output fds a logger stream captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogSource {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl LogSource {
    /// The logger name carried in FORWARD_LOG.
    pub fn name(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
        }
    }

    /// The level carried in FORWARD_LOG, in Python `logging` numbers: INFO for stdout, WARNING
    /// for stderr.
    pub fn level(self) -> u32 {
        match self {
            LogSource::Stdout => 20,
            LogSource::Stderr => 30,
        }
    }
}

/// Splits a byte stream into bounded lines.
#[derive(Clone, Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line_len: usize,
}

impl LineSplitter {
    /// A splitter that never holds more than `max_line_len` bytes (at least 4, so that one
    /// UTF-8 character always fits).
    pub fn new(max_line_len: usize) -> LineSplitter {
        LineSplitter { partial: Vec::new(), max_line_len: max_line_len.max(4) }
    }

    /// Bytes held back waiting for a newline.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Feeds bytes; `emit` is called with each complete line, without its `\n`.
    ///
    /// A full buffer is cut only once the next byte is known not to be its newline: a line of
    /// exactly the bound is one line however the reads split it (cutting as soon as the buffer
    /// filled gave an extra empty line when the `\n` came in the next read, but not when it came
    /// in the same one).
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        self.split(bytes, |line| emit(lossy(line)));
    }

    /// [`LineSplitter::push`], lending each line instead of allocating it: a line that arrived
    /// whole in `bytes` is decoded in place (with no copy at all when it is valid UTF-8), one
    /// that spanned reads from the splitter's own buffer.
    pub fn push_lines(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        self.split(bytes, |line| emit(&decode(line)));
    }

    /// The splitting itself: `emit` gets each line's raw bytes.
    fn split(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(&next) = bytes.first() {
            let room = self.max_line_len - self.partial.len();
            if room == 0 {
                if next == b'\n' {
                    emit(&self.partial);
                    self.partial.clear();
                    bytes = &bytes[1..];
                } else {
                    // Full without a newline: cut, preferably where a character ends.
                    let cut = char_boundary_cut(&self.partial);
                    emit(&self.partial[..cut]);
                    self.partial.drain(..cut);
                }
                continue;
            }
            let window = &bytes[..bytes.len().min(room)];
            if let Some(nl) = find_newline(window) {
                if self.partial.is_empty() {
                    emit(&window[..nl]); // the whole line is in this read
                } else {
                    self.partial.extend_from_slice(&window[..nl]);
                    emit(&self.partial);
                    self.partial.clear();
                }
                bytes = &bytes[nl + 1..];
            } else {
                self.partial.extend_from_slice(window);
                bytes = &bytes[window.len()..];
            }
        }
    }

    /// The stream ended: the final unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| {
            let line = core::mem::take(&mut self.partial);
            String::from_utf8(line).unwrap_or_else(|bad| lossy(bad.as_bytes()))
        })
    }
}

/// Where the first `\n` in `bytes` is, looked for eight bytes at a time: a runaway writer's
/// lines are 64 KiB long, and a byte-by-byte scan of them was most of a simulated run.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let w = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        // A zero byte in `w ^ NEWLINES` is a newline in `word`; this is nonzero exactly when
        // there is one (the classic test: it may flag bytes after the first zero, never before).
        let x = w ^ NEWLINES;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|b| *b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    words.remainder().iter().position(|b| *b == b'\n').map(|i| at + i)
}

/// `bytes` as text, invalid UTF-8 as U+FFFD, borrowed when valid. Valid text — nearly every
/// line — is checked by `str::from_utf8`, which takes ASCII a word at a time;
/// `String::from_utf8_lossy` walks every byte, and a runaway writer's 64 KiB lines made that
/// most of a simulated run.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match core::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// [`decode`], owned.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    decode(bytes).into_owned()
}

/// Where to cut a full buffer so a multi-byte character is not split: just before the lead
/// byte of a character that is incomplete at the end, else at the end.
fn char_boundary_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let width = match b {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if width > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn the_newline_search_finds_the_first_newline_wherever_it_is() {
        // Every position in and around a word, every byte value beside it (a 0x0a-adjacent byte
        // or a high byte must not fool the word test), and no newline at all.
        for len in 0..40 {
            for fill in [0x00u8, 0x09, 0x0b, 0x0a ^ 0x80, 0x8a, 0xff, b'x'] {
                let mut bytes = vec![fill; len];
                assert_eq!(find_newline(&bytes), None, "len {len} fill {fill:#x}");
                for at in 0..len {
                    bytes[at] = b'\n';
                    assert_eq!(find_newline(&bytes), Some(at), "len {len} fill {fill:#x} at {at}");
                    if at + 1 < len {
                        bytes[at + 1] = b'\n';
                        assert_eq!(find_newline(&bytes), Some(at), "two from {at}");
                        bytes[at + 1] = fill;
                    }
                    bytes[at] = fill;
                }
            }
        }
    }

    #[test]
    fn lent_lines_are_the_lines_push_gives_however_the_reads_fall() {
        let mut text = b"one\ntwo, a longer one\n\xff\xfe bad\n".to_vec();
        text.extend_from_slice("\u{e9}\u{20ac}\u{1f600}\u{1f600}xyz\nlast".as_bytes());
        let text = &text[..];
        for max in [4, 5, 7, 64] {
            for step in 1..=text.len() {
                let chunks: Vec<&[u8]> = text.chunks(step).collect();
                let (given, last) = split(max, &chunks);
                let mut s = LineSplitter::new(max);
                let mut lent = Vec::new();
                for c in &chunks {
                    s.push_lines(c, |l| lent.push(String::from(l)));
                }
                assert_eq!((lent, s.finish()), (given, last), "bound {max}, reads of {step}");
            }
        }
    }

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        let last = s.finish();
        (out, last)
    }

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        let (lines, last) = split(100, &[b"one\ntw", b"o\n", b"\nthree"]);
        assert_eq!(lines, vec!["one", "two", ""]);
        assert_eq!(last.as_deref(), Some("three"));
    }

    #[test]
    fn final_line_without_newline_is_delivered_at_eof() {
        assert_eq!(split(100, &[b"no newline"]).1.as_deref(), Some("no newline"));
        assert_eq!(split(100, &[b"with newline\n"]).1, None);
    }

    #[test]
    fn overlong_lines_are_split_at_the_bound() {
        let (lines, last) = split(4, &[b"abcdefghij\n"]);
        assert_eq!(lines, vec!["abcd", "efgh", "ij"]);
        assert_eq!(last, None);
    }

    #[test]
    fn a_line_of_exactly_the_bound_is_one_line() {
        assert_eq!(split(4, &[b"abcd\nef\n"]).0, vec!["abcd", "ef"]);
    }

    #[test]
    fn a_line_of_exactly_the_bound_is_one_line_when_its_newline_comes_in_the_next_read() {
        // Found by the lines fuzzer (fuzz/regressions/lines): the full buffer was cut at the end
        // of the first read, and the newline then ended an extra, empty line.
        assert_eq!(split(4, &[b"abcd", b"\nef\n"]).0, vec!["abcd", "ef"]);
        assert_eq!(split(4, &[b"ab", b"cd", b"\n"]).0, vec!["abcd"]);
    }

    #[test]
    fn a_full_buffer_is_cut_once_the_next_byte_is_not_its_newline() {
        assert_eq!(split(4, &[b"abcd", b"e"]), (vec![String::from("abcd")], Some(String::from("e"))));
        assert_eq!(split(4, &[b"abcd"]), (vec![], Some(String::from("abcd"))));
    }

    #[test]
    fn splitting_avoids_cutting_a_character_in_half() {
        // "aé…" : 'é' is 2 bytes, '…' is 3 bytes.
        let (lines, last) = split(4, &["aé…".as_bytes()]);
        assert_eq!(lines, vec!["aé"]);
        assert_eq!(last.as_deref(), Some("…"));
    }

    #[test]
    fn invalid_utf8_is_delivered_lossily() {
        assert_eq!(split(100, &[b"ok\xffok\n"]).0, vec!["ok\u{fffd}ok"]);
    }

    #[test]
    fn memory_stays_bounded_with_a_runaway_writer() {
        let mut s = LineSplitter::new(1024);
        let mut n = 0;
        for _ in 0..1000 {
            s.push(&[b'x'; 777], |_| n += 1);
            assert!(s.buffered() <= 1024);
        }
        assert_eq!(n, 777 * 1000 / 1024);
    }
}
