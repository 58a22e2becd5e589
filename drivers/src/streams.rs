//! Writing one framed socket on the IO thread (the broker reads its sockets itself).
//!
//! A frame is written at once, from the broker, when nothing is queued before it and the socket
//! takes it (header and body in one vectored write); whatever the socket does not take is
//! queued, and the broker writes queued frames in order when epoll says the socket drained. The
//! write queue is unbounded, but its size in bytes is counted so the broker can stop reading
//! the streams that feed it (docs/embedding.md "Backpressure").

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::unix::net::UnixStream;

use arbor_core::frame::Frame;

/// A framed stream's write side: what the socket has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Frames not fully written, each with how many of its bytes are.
    queue: VecDeque<(Frame, usize)>,
    queued: usize,
    broken: bool,
}

impl Writer {
    /// Writes a frame now if nothing is queued and the socket takes it, else queues (the rest
    /// of) it. True if the stream broke with this write (reported once; later frames are
    /// dropped).
    pub fn send(&mut self, sock: &UnixStream, frame: Frame) -> bool {
        if self.broken {
            return false;
        }
        let mut done = 0;
        if self.queue.is_empty() {
            match write_now(sock, &frame, &mut done) {
                Ok(true) => return false,
                Ok(false) => {}
                Err(_) => return self.broke(),
            }
        }
        self.queued += frame.len() - done;
        self.queue.push_back((frame, done));
        false
    }

    /// Writes queued frames until the socket would block; true if the stream broke now.
    pub fn flush(&mut self, sock: &UnixStream) -> bool {
        if self.broken {
            return false;
        }
        while let Some((frame, done)) = self.queue.front_mut() {
            let before = *done;
            let result = write_now(sock, frame, done);
            self.queued = self.queued.saturating_sub(*done - before);
            match result {
                Ok(true) => {
                    self.queue.pop_front();
                }
                Ok(false) => return false,
                Err(_) => return self.broke(),
            }
        }
        false
    }

    fn broke(&mut self) -> bool {
        self.broken = true;
        self.queue.clear();
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

/// Writes what the socket takes of `frame` from `*done` on, without waiting: true once all of it
/// is written, false when the socket would block (`*done` says how far it got).
fn write_now(sock: &UnixStream, frame: &Frame, done: &mut usize) -> io::Result<bool> {
    let (header, body) = (&frame.header()[..], &frame.body()[..]);
    let mut w = sock;
    while *done < header.len() + body.len() {
        let n = if *done < header.len() {
            w.write_vectored(&[IoSlice::new(&header[*done..]), IoSlice::new(body)])
        } else {
            w.write(&body[*done - header.len()..])
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
