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
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while let Some(&next) = bytes.first() {
            let room = self.max_line_len - self.partial.len();
            if room == 0 {
                if next == b'\n' {
                    emit(take_text(&mut self.partial, usize::MAX));
                    bytes = &bytes[1..];
                } else {
                    // Full without a newline: cut, preferably where a character ends.
                    let cut = char_boundary_cut(&self.partial);
                    emit(take_text(&mut self.partial, cut));
                }
                continue;
            }
            let window = &bytes[..bytes.len().min(room)];
            if let Some(nl) = window.iter().position(|b| *b == b'\n') {
                self.partial.extend_from_slice(&window[..nl]);
                emit(take_text(&mut self.partial, usize::MAX));
                bytes = &bytes[nl + 1..];
            } else {
                self.partial.extend_from_slice(window);
                bytes = &bytes[window.len()..];
            }
        }
    }

    /// The stream ended: the final unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| take_text(&mut self.partial, usize::MAX))
    }
}

/// Removes the first `cut` bytes (all, if fewer) and decodes them lossily.
fn take_text(buf: &mut Vec<u8>, cut: usize) -> String {
    let rest = buf.split_off(cut.min(buf.len()));
    let line = core::mem::replace(buf, rest);
    match String::from_utf8_lossy(&line) {
        Cow::Borrowed(_) => String::from_utf8(line).unwrap_or_default(),
        Cow::Owned(s) => s,
    }
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
