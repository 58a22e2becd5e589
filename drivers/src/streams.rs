//! Reading and writing one socket on the IO thread's executor.
//!
//! Each stream gets a reader task that turns reads into [`Event`]s, and each framed stream a
//! writer task that writes queued frames in order (header and body in one vectored write). The
//! write queue is unbounded, but its size in bytes is counted so the broker can stop reading
//! the streams that feed it (docs/embedding.md "Backpressure").

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;

use arbor_core::frame::Frame;
use arbor_core::router::StreamId;
use async_io::Async;
use futures_lite::{future, AsyncRead, AsyncWrite};

use crate::broker::Event;

/// How much one read takes at most.
const READ_CHUNK: usize = 64 * 1024;

/// What the broker asks a writer task to do.
#[derive(Debug)]
pub(crate) enum WriteCmd {
    /// Write this frame after everything queued before it.
    Frame(Frame),
    /// Shut the socket down after everything queued before this, then end.
    Close,
}

/// A framed stream's write side, as the broker holds it.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: async_channel::Sender<WriteCmd>,
    queued: Rc<Cell<usize>>,
}

impl Writer {
    /// Queues a frame; false if the writer already ended (the stream broke).
    pub fn send(&self, frame: Frame) -> bool {
        self.queued.set(self.queued.get() + frame.len());
        self.queue.try_send(WriteCmd::Frame(frame)).is_ok()
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

/// Reads `sock` until EOF or error, sending every chunk as an event.
pub(crate) async fn read_loop(
    sock: Rc<Async<UnixStream>>,
    stream: StreamId,
    events: async_channel::Sender<Event>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let mut r = &*sock;
        let event = match future::poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf)).await {
            Ok(0) => Event::Eof(stream),
            Ok(n) => Event::Read(stream, buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Event::Broken(stream),
        };
        let last = !matches!(event, Event::Read(..));
        if events.send(event).await.is_err() || last {
            return;
        }
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
    let task = async move {
        while let Ok(cmd) = commands.recv().await {
            match cmd {
                WriteCmd::Frame(frame) => {
                    let result = write_frame(&sock, &frame).await;
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
    (Writer { queue, queued }, task)
}

/// Writes one frame, header and body in as few syscalls as the socket allows.
async fn write_frame(sock: &Async<UnixStream>, frame: &Frame) -> io::Result<()> {
    let (header, body) = (&frame.header()[..], &frame.body()[..]);
    let mut done = 0;
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
