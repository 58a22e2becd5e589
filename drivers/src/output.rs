//! Where the tree's output goes at the root ([`ChildOutput`]), and the default: every line a
//! child printed, printed again on the root's own stdout or stderr as `[name] text`
//! (docs/driver.md "Output at the root").
//!
//! Log records are handed out by whichever thread took them from the core — often the IO
//! thread, which must never wait for a terminal, a file or a pipe it does not control. So the
//! root's stdout and stderr each get a writer thread, fed by a queue of whole lines:
//!
//! - **Whole lines.** Lines are written in batches of whole lines of at most `PIPE_BUF` bytes
//!   (a longer line alone), with the stream's lock held, so a batch never splits a line, the
//!   root's own `println!`s land between lines, and on a pipe each write is atomic against other
//!   writers of the same pipe.
//! - **Order.** One queue and one writer per stream: the lines of a context (and of the whole
//!   tree) come out on each stream in the order the root received them.
//! - **Backpressure, bounded.** The queue holds up to [`QUEUE_BYTES`]; past that, the thread
//!   handing out a line waits for room — the tree slows down to the speed of the root's stdout,
//!   and nothing is lost — but only while the writer makes progress. With the queue full and
//!   the writer stuck in one write for [`STALL`] (a pipe nobody reads), the stream is *stalled*:
//!   lines that do not fit are then dropped and counted instead of waited for, a note says so on the other stream, and a second
//!   note says how many were dropped once the stream moves again. So a stalled stdout cannot hold
//!   the IO thread, and with it shutdown, for longer than [`STALL`].
//! - **EPIPE** (`| head` has gone): the stream is *broken*: its later lines are dropped without a
//!   word, never a panic (the root's own `println!` would panic there; this writes with
//!   `write`, and Rust ignores SIGPIPE).
//! - **Finishing.** [`Printer::finish`], when the root has shut down, waits until the queues are
//!   written — again only while the writers make progress.
//!
//! Under the test harness ([`crate::test_support`]) the lines go through `print!`/`eprint!`
//! instead, so libtest captures them with the test's own output.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd as _, BorrowedFd};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};

use crate::events::{Event, Events};
use crate::logs::{LogHandler, LogRecord};

/// Bytes queued for one stream before a new line waits for room.
pub(crate) const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// How long a writer may fail to write anything before its stream counts as stalled.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// Bytes written together at most (Linux's `PIPE_BUF`: a pipe write of this size is atomic).
const BATCH: usize = 4096;

/// Where the root sends each line of the tree's output (docs/driver.md "Output at the root").
///
/// The choice is explicit ([`crate::Launcher::child_output`], [`crate::Launcher::on_log`]),
/// never guessed from whether a `tracing` subscriber is installed: a subscriber may be
/// installed for the program's own events and filter out `arbor::remote`, and a line that
/// vanishes because of a filter is exactly what this is meant to rule out.
#[non_exhaustive]
pub enum ChildOutput {
    /// The default: each line on the root's stdout or stderr — the stream it was printed on in
    /// the child — as `[name] text`, where `name` is the context's name
    /// ([`crate::SpawnOptions::named`], else `context <id>`). A child's `tracing` events are
    /// lines of its stderr, so they appear as `[name]  INFO target: message`.
    Print,
    /// Each line as a `tracing` event, target `arbor::remote`, message `[name] text`, with the
    /// field `context` (the id): at the level of the child's own `tracing` event when the line is
    /// one, else `INFO` for stdout and `WARN` for stderr. Lines are lost if no subscriber takes
    /// them. They are emitted by a thread of their own, never the IO thread: a subscriber that
    /// blocks holds the tree back by one second at most, after which lines are dropped and
    /// counted.
    Tracing,
    /// Each line to a function ([`crate::Launcher::on_log`]).
    Handler(LogHandler),
}

impl std::fmt::Debug for ChildOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChildOutput::Print => "Print",
            ChildOutput::Tracing => "Tracing",
            ChildOutput::Handler(_) => "Handler",
        })
    }
}

impl ChildOutput {
    /// The handler the context's deliveries call (`None`: `tracing`), and the printer to finish
    /// when the root is done.
    pub(crate) fn into_handler(
        self,
        captured: bool,
        events: &Arc<Events>,
    ) -> (Option<LogHandler>, Option<Arc<Printer>>) {
        match self {
            ChildOutput::Print => {
                let printer = Arc::new(Printer::new(captured));
                let lines = printer.clone();
                (Some(Box::new(move |r: &LogRecord| lines.line(r))), Some(printer))
            }
            // Events for the program's subscriber, off the IO thread (events.rs).
            ChildOutput::Tracing => {
                let events = events.clone();
                (Some(Box::new(move |r: &LogRecord| events.push(Event::Record(r.clone())))), None)
            }
            ChildOutput::Handler(h) => (Some(h), None),
        }
    }
}

/// The root's stdout or stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Stdout,
    Stderr,
}

/// The default sink: a queue and a writer thread for each of the root's stdout and stderr.
#[derive(Debug)]
pub(crate) struct Printer {
    stdout: Arc<Lane>,
    stderr: Arc<Lane>,
}

impl Printer {
    /// `captured`: write with `print!`/`eprint!`, for libtest to capture (test support).
    pub fn new(captured: bool) -> Printer {
        Printer { stdout: Lane::new(Which::Stdout, captured), stderr: Lane::new(Which::Stderr, captured) }
    }

    /// Queues one record as `[name] text\n` on the stream it was printed on.
    pub fn line(&self, record: &LogRecord) {
        let line = format_line(record);
        let (lane, other) = match record.source.as_str() {
            "stdout" => (&self.stdout, &self.stderr),
            _ => (&self.stderr, &self.stdout),
        };
        match lane.push(line.into_bytes()) {
            Pushed::BecameStalled => {
                let note = format!(
                    "[arbor] the root's {} has taken nothing for {STALL:?}: dropping the tree's lines for it until it does\n",
                    lane.which.name()
                );
                other.push(note.into_bytes());
            }
            Pushed::Failed(e) => {
                let note = format!(
                    "[arbor] the root's {} failed ({e}): dropping the tree's lines for it\n",
                    lane.which.name()
                );
                other.push(note.into_bytes());
            }
            Pushed::Queued | Pushed::Dropped => {}
        }
    }

    /// Waits until both queues are written, or their streams stall or break.
    pub fn finish(&self) {
        self.stdout.finish();
        self.stderr.finish();
    }
}

/// `[name] text\n`; a context whose name is unknown is `context <id>`.
pub(crate) fn format_line(record: &LogRecord) -> String {
    let text = &record.text;
    match record.name.as_str() {
        "" => format!("[context {}] {text}\n", record.context.0),
        name => format!("[{name}] {text}\n"),
    }
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Stdout => "stdout",
            Which::Stderr => "stderr",
        }
    }
}

#[derive(Debug)]
enum Pushed {
    Queued,
    Dropped,
    /// Dropped, and the first line dropped since the stream last moved.
    BecameStalled,
    /// Dropped, and the first line dropped since a write failed with this error (EPIPE, the
    /// reader gone, is not reported: `| head` is how such a stream usually ends).
    Failed(io::Error),
}

/// One stream's queue and writer.
#[derive(Debug)]
struct Lane {
    which: Which,
    captured: bool,
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Debug)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    /// Bytes in `lines` and in the writer's hands.
    bytes: usize,
    /// The writer is in a write.
    writing: bool,
    /// When the writer last wrote anything (or was handed its current batch).
    progress: Instant,
    /// Lines dropped since the stream stalled (reported when it moves again).
    dropped: u64,
    /// Lines were dropped since the writer last finished a write.
    stalled: bool,
    /// EPIPE or another write error: nothing more is written.
    broken: bool,
    /// The write error that broke the stream, until a pushed line reports it.
    failure: Option<io::Error>,
    /// A writer thread runs.
    writer: bool,
    /// The root is done: the writer ends once the queue is empty.
    closed: bool,
}

impl Queue {
    fn stalled_now(&self) -> bool {
        self.writing && self.progress.elapsed() >= STALL
    }
}

impl Lane {
    fn new(which: Which, captured: bool) -> Arc<Lane> {
        let queue = Queue {
            lines: VecDeque::new(),
            bytes: 0,
            writing: false,
            progress: Instant::now(),
            dropped: 0,
            stalled: false,
            broken: false,
            failure: None,
            writer: false,
            closed: false,
        };
        Arc::new(Lane { which, captured, queue: Mutex::new(queue), changed: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(self: &Arc<Self>, line: Vec<u8>) -> Pushed {
        let mut q = self.lock();
        loop {
            if q.broken {
                return match q.failure.take() {
                    Some(e) => Pushed::Failed(e),
                    None => Pushed::Dropped,
                };
            }
            if !q.writer {
                if !self.start_writer() {
                    // No thread to be had: dropped rather than queued for no one.
                    q.dropped += 1;
                    return Pushed::Dropped;
                }
                q.writer = true;
            }
            if q.bytes == 0 || q.bytes + line.len() <= QUEUE_BYTES {
                break;
            }
            if q.stalled_now() {
                // Full, and the writer has not moved for STALL: dropped, not waited for.
                q.dropped += 1;
                let first = !std::mem::replace(&mut q.stalled, true);
                return if first { Pushed::BecameStalled } else { Pushed::Dropped };
            }
            // Full: wait for room while the writer moves (woken on each write it makes).
            let left = STALL.saturating_sub(q.progress.elapsed()).max(Duration::from_millis(1));
            q = self.changed.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.bytes += line.len();
        q.lines.push_back(line);
        drop(q);
        self.changed.notify_all();
        Pushed::Queued
    }

    /// Starts the writer thread (false if the system has no thread to give).
    fn start_writer(self: &Arc<Self>) -> bool {
        let lane = self.clone();
        let name = format!("arbor-{}", self.which.name());
        thread::Builder::new().name(name).spawn(move || lane.write_loop()).is_ok()
    }

    fn write_loop(&self) {
        let mut q = self.lock();
        loop {
            if q.lines.is_empty() || q.broken {
                if q.closed {
                    q.writer = false;
                    return;
                }
                // Idle: parked until a line comes or the printer is finished.
                q = self.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(line) = q.lines.front() {
                if !batch.is_empty() && batch.len() + line.len() > BATCH {
                    break;
                }
                batch.extend_from_slice(line);
                q.lines.pop_front();
            }
            q.writing = true;
            q.progress = Instant::now();
            drop(q);
            let written = self.write(&batch);
            q = self.lock();
            q.writing = false;
            q.progress = Instant::now();
            q.bytes = q.bytes.saturating_sub(batch.len());
            if let Err(e) = written {
                q.broken = true;
                if e.kind() != io::ErrorKind::BrokenPipe {
                    q.failure = Some(e);
                }
                q.lines.clear();
                q.bytes = 0;
            } else if std::mem::take(&mut q.stalled) {
                // Moving again: say how much was lost, before the lines that follow.
                let n = std::mem::take(&mut q.dropped);
                let note = format!(
                    "[arbor] {n} line(s) dropped while the root's {} was stalled\n",
                    self.which.name()
                );
                q.bytes += note.len();
                q.lines.push_front(note.into_bytes());
            }
            self.changed.notify_all();
        }
    }

    /// Writes one batch of whole lines, with the stream's lock held.
    fn write(&self, batch: &[u8]) -> io::Result<()> {
        if self.captured {
            // libtest's capture sees only the print macros. They panic on a write error (with
            // --nocapture and a closed pipe): caught, and the stream counts as broken.
            let text = String::from_utf8_lossy(batch);
            let printed = std::panic::catch_unwind(AssertUnwindSafe(|| match self.which {
                Which::Stdout => print!("{text}"),
                Which::Stderr => eprint!("{text}"),
            }));
            return printed.map_err(|_| io::Error::other("printing failed"));
        }
        match self.which {
            Which::Stdout => write_all(&mut io::stdout().lock(), io::stdout().as_fd(), batch),
            Which::Stderr => write_all(&mut io::stderr().lock(), io::stderr().as_fd(), batch),
        }
    }

    /// Waits while there is something to write and the writer moves; then lets the writer end
    /// once its queue is empty (a line pushed later starts a new one).
    fn finish(&self) {
        let mut q = self.lock();
        while q.bytes > 0 && q.writer && !q.broken && !q.stalled_now() {
            let left = STALL.saturating_sub(q.progress.elapsed()).max(Duration::from_millis(1));
            q = self.changed.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.closed = true;
        drop(q);
        self.changed.notify_all();
    }
}

/// `write_all` that flushes: a batch is whole lines, and std's stdout holds back only a partial
/// line, so the flush is a no-op unless the root's own code left one there. A stream someone
/// made non-blocking (a terminal or pipe shared with a tool that set O_NONBLOCK on it) answers
/// `WouldBlock` when full: the writer waits until `fd` takes more, as a blocking write would,
/// instead of counting the stream as broken and dropping every later line.
fn write_all(out: &mut impl Write, fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) => retry_after(e, fd)?,
        }
    }
    loop {
        match out.flush() {
            Ok(()) => return Ok(()),
            Err(e) => retry_after(e, fd)?,
        }
    }
}

/// Whether a failed write may be tried again: after an interruption at once, after
/// `WouldBlock` once `fd` is writable; any other error is the stream's end.
fn retry_after(e: io::Error, fd: BorrowedFd<'_>) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock => wait_writable(fd),
        _ => Err(e),
    }
}

/// Blocks until `fd` is writable (or has an error or hang-up to report: the next write says
/// which).
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_core::ids::ContextId;

    fn record(name: &str, text: &str) -> LogRecord {
        LogRecord {
            context: ContextId(4),
            name: name.into(),
            source: "stdout".into(),
            level: 20,
            text: text.into(),
        }
    }

    #[test]
    fn a_line_is_prefixed_with_its_context_name_or_id() {
        assert_eq!(format_line(&record("worker", "hello")), "[worker] hello\n");
        assert_eq!(format_line(&record("", "hello")), "[context 4] hello\n");
    }
}
