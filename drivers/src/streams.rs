//! Writing one framed socket on the IO thread (the broker reads its sockets itself).
//!
//! A frame is written at once, from the broker, when nothing is queued before it and the socket
//! takes it (header and body in one vectored write); whatever the socket does not take goes to
//! the stream's writer task, which writes queued frames in order as the socket drains. The write
//! queue is unbounded, but its size in bytes is counted so the broker can stop reading the
//! streams that feed it (docs/embedding.md "Backpressure").

use std::cell::Cell;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;

use arbor_core::frame::Frame;
use arbor_core::router::StreamId;
use async_io::Async;
use futures_lite::{future, AsyncWrite};

use crate::broker::Event;

/// What the broker asks a writer task to do.
#[derive(Debug)]
pub(crate) enum WriteCmd {
    /// Write this frame, from this many bytes in, after everything queued before it.
    Frame(Frame, usize),
    /// Shut the socket down after everything queued before this, then end.
    Close,
}

/// A framed stream's write side, as the broker holds it.
#[derive(Debug)]
pub(crate) struct Writer {
    sock: Rc<Async<UnixStream>>,
    queue: async_channel::Sender<WriteCmd>,
    queued: Rc<Cell<usize>>,
}

impl Writer {
    /// Writes a frame now if nothing is queued and the socket takes it, else queues (the rest
    /// of) it; false if the writer already ended (the stream broke).
    pub fn send(&self, frame: Frame) -> bool {
        let mut done = 0;
        if self.queued.get() == 0 {
            // A failed write is left to the writer task, which meets it again and reports the
            // stream broken, exactly as if the frame had been queued.
            if let Ok(true) = write_now(self.sock.get_ref(), &frame, &mut done) {
                return true;
            }
        }
        self.queued.set(self.queued.get() + frame.len());
        self.queue.try_send(WriteCmd::Frame(frame, done)).is_ok()
    }

    /// Asks the writer to finish what is queued and shut the socket down.
    pub fn close(&self) {
        let _ = self.queue.try_send(WriteCmd::Close);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.get()
    }
}

/// Starts a writer for `sock`; the returned future is the writer task's body.
pub(crate) fn writer(
    sock: Rc<Async<UnixStream>>,
    stream: StreamId,
    events: async_channel::Sender<Event>,
) -> (Writer, impl std::future::Future<Output = ()>) {
    let (queue, commands) = async_channel::unbounded();
    let queued = Rc::new(Cell::new(0usize));
    let counter = queued.clone();
    let sock_for_writer = sock.clone();
    let task = async move {
        while let Ok(cmd) = commands.recv().await {
            match cmd {
                WriteCmd::Frame(frame, done) => {
                    let result = write_frame(&sock, &frame, done).await;
                    counter.set(counter.get().saturating_sub(frame.len()));
                    if result.is_err() {
                        let _ = events.send(Event::Broken(stream)).await;
                        return;
                    }
                }
                WriteCmd::Close => break,
            }
        }
        let _ = sock.get_ref().shutdown(Shutdown::Both);
    };
    (Writer { sock: sock_for_writer, queue, queued }, task)
}

/// Writes one frame, header and body in as few syscalls as the socket allows.
async fn write_frame(sock: &Async<UnixStream>, frame: &Frame, mut done: usize) -> io::Result<()> {
    let (header, body) = (&frame.header()[..], &frame.body()[..]);
    while done < header.len() + body.len() {
        let mut w = sock;
        let n = if done < header.len() {
            let slices = [IoSlice::new(&header[done..]), IoSlice::new(body)];
            future::poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &slices)).await
        } else {
            let rest = &body[done - header.len()..];
            future::poll_fn(|cx| Pin::new(&mut w).poll_write(cx, rest)).await
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
