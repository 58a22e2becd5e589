//! Writing one framed socket.
//!
//! Frames are queued as the node emits them and written when the thread driving the context
//! lets go of it (or when epoll says the socket drained): every frame queued while the context
//! was held goes out in one vectored write, so a burst of answers costs one syscall rather than
//! one per frame, and nothing waits longer than the work already under way. The write queue is
//! unbounded, but its size in bytes is counted so the broker can stop reading the streams that
//! feed it (docs/embedding.md "Backpressure").

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::unix::net::UnixStream;

use arbor_core::frame::Frame;

/// Frames gathered into one vectored write at most (two slices each: header and body).
const FRAMES_PER_WRITE: usize = 256;

/// A framed stream's write side: what the socket has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Frames not fully written, the first with how many of its bytes are.
    queue: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    done: usize,
    queued: usize,
    broken: bool,
}

impl Writer {
    /// Queues a frame for the next [`Writer::flush`]; dropped if the stream broke already.
    pub fn push(&mut self, frame: Frame) {
        if self.broken {
            return;
        }
        self.queued += frame.len();
        self.queue.push_back(frame);
    }

    /// Writes queued frames until the socket would block; true if the stream broke now
    /// (reported once; later frames are dropped).
    pub fn flush(&mut self, sock: &UnixStream) -> bool {
        if self.broken {
            return false;
        }
        let mut w = sock;
        while !self.queue.is_empty() {
            let written = {
                let mut slices = Vec::with_capacity(2 * FRAMES_PER_WRITE.min(self.queue.len()));
                for (i, frame) in self.queue.iter().take(FRAMES_PER_WRITE).enumerate() {
                    let skip = if i == 0 { self.done } else { 0 };
                    let (header, body) = (&frame.header()[..], &frame.body()[..]);
                    if skip < header.len() {
                        slices.push(IoSlice::new(&header[skip..]));
                        slices.push(IoSlice::new(body));
                    } else {
                        slices.push(IoSlice::new(&body[skip - header.len()..]));
                    }
                }
                w.write_vectored(&slices)
            };
            match written {
                Ok(0) => return self.broke(),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return self.broke(),
            }
        }
        false
    }

    /// Drops the `n` bytes just written from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(n);
        while let Some(front) = self.queue.front() {
            let left = front.len() - self.done;
            if n < left {
                self.done += n;
                return;
            }
            n -= left;
            self.done = 0;
            self.queue.pop_front();
        }
    }

    fn broke(&mut self) -> bool {
        self.broken = true;
        self.queue.clear();
        self.done = 0;
        self.queued = 0;
        true
    }

    /// Nothing left to write (all written, or the stream broke).
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_core::frame::{Encoding, Message};
    use arbor_core::handle::Handle;
    use arbor_core::ids::ContextId;
    use std::io::Read;

    fn frame(fill: u8, len: usize) -> Frame {
        Message::new(ContextId(1), ContextId(0), Handle(100), Encoding::Binary, vec![fill; len]).into_frame()
    }

    /// Frames written in one go, through partial writes, arrive whole and in order.
    #[test]
    fn a_burst_goes_out_in_order_through_partial_writes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let frames: Vec<Frame> = (0..40).map(|i| frame(i as u8, 7000 + i * 13)).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let mut writer = Writer::default();
        for f in frames {
            writer.push(f);
        }
        assert_eq!(writer.queued(), expected.len());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !writer.idle() {
            assert!(!writer.flush(&a));
            // Read a little at a time so the writer meets a full socket mid-frame.
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(writer.queued(), 0);
        drop(a);
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected);
    }

    /// A peer that went away breaks the stream once; later frames are dropped, not queued.
    #[test]
    fn a_closed_peer_breaks_the_stream_once() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut writer = Writer::default();
        writer.push(frame(1, 10));
        assert!(writer.flush(&a));
        assert!(writer.broken() && writer.idle());
        writer.push(frame(2, 10));
        assert!(writer.idle());
        assert!(!writer.flush(&a));
    }
}
