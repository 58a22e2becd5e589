//! The root's `tracing` events, emitted off its IO thread.
//!
//! At the root, `tracing` is the program's own subscriber: often `tracing_subscriber::fmt()`
//! writing to stdout, which may be a pipe nobody reads. The driver's notes (warnings,
//! diagnostics) and, with [`crate::ChildOutput::Tracing`], every line of the tree become events
//! there; emitted on the IO thread, one write into a stalled stdout would stop the tree's IO and
//! its shutdown. So the root queues them for a thread of their own (`arbor-events`, started with
//! the first, ended with the root), with the printer's bound (output.rs): the queue takes up to
//! [`QUEUE_BYTES`] of text; past that a push waits for room while the subscriber makes progress,
//! and once it has taken nothing for [`STALL`], events are dropped and counted, and a warning says
//! how many when it moves again. A stalled subscriber holds the tree back by [`STALL`] at most.
//!
//! A child needs none of this: its subscriber writes to its capture socket without blocking on
//! the IO thread (logs.rs).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tracing::level_filters::LevelFilter;

use crate::deliveries::Note;
use crate::logs::{self, LogRecord};
use crate::output::{QUEUE_BYTES, STALL};

/// One event for the program's subscriber.
#[derive(Debug)]
pub(crate) enum Event {
    /// A note of the driver's.
    Note(Note),
    /// A line of the tree ([`crate::ChildOutput::Tracing`]).
    Record(LogRecord),
}

impl Event {
    /// The level it is emitted at.
    fn level(&self) -> tracing::Level {
        match self {
            Event::Note(Note::Diagnostic(d)) => logs::diagnostic_level(d),
            Event::Note(Note::Warn(_)) => tracing::Level::WARN,
            Event::Note(Note::Debug(_)) => tracing::Level::DEBUG,
            Event::Record(record) => record.tracing_level().0,
        }
    }

    /// What it holds in memory, about: its text, and a little for the rest.
    fn size(&self) -> usize {
        64 + match self {
            Event::Note(Note::Warn(m) | Note::Debug(m)) => m.len(),
            Event::Note(Note::Diagnostic(_)) => 64,
            Event::Record(r) => r.text.len() + r.name.len(),
        }
    }

    fn emit(self) {
        match self {
            Event::Note(note) => note.emit(),
            Event::Record(record) => logs::emit(&record),
        }
    }
}

/// The queue and its thread.
#[derive(Debug)]
pub(crate) struct Events {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Debug)]
struct Queue {
    events: VecDeque<Event>,
    /// [`Event::size`] of what `events` holds.
    bytes: usize,
    /// The thread is handing an event to the subscriber.
    emitting: bool,
    /// When the thread last finished an event (or took its current one).
    progress: Instant,
    /// Events dropped since the subscriber stalled (reported when it moves again).
    dropped: u64,
    /// A thread runs.
    thread: bool,
    /// No thread could be started: events are emitted where they are pushed.
    no_thread: bool,
    /// The root is done ([`Events::finish`]): the thread ends once the queue is empty, and a
    /// later event is emitted where it is pushed.
    closed: bool,
}

impl Queue {
    fn stalled(&self) -> bool {
        self.emitting && self.progress.elapsed() >= STALL
    }
}

impl Events {
    pub fn new() -> Arc<Events> {
        let queue = Queue {
            events: VecDeque::new(),
            bytes: 0,
            emitting: false,
            progress: Instant::now(),
            dropped: 0,
            thread: false,
            no_thread: false,
            closed: false,
        };
        Arc::new(Events { queue: Mutex::new(queue), changed: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` for the subscriber (see the module doc for when it waits or drops). An
    /// event at a level no subscriber takes ([`LevelFilter::current`]: off without one) is not
    /// queued at all, and starts no thread.
    pub fn push(self: &Arc<Self>, event: Event) {
        if event.level() > LevelFilter::current() {
            return;
        }
        let mut q = self.lock();
        if q.closed {
            drop(q);
            return event.emit();
        }
        if !q.thread && !q.no_thread {
            let events = self.clone();
            let started = thread::Builder::new().name("arbor-events".into()).spawn(move || events.run());
            q.thread = started.is_ok();
            q.no_thread = started.is_err();
        }
        if q.no_thread {
            drop(q);
            return event.emit();
        }
        let size = event.size();
        while q.bytes > 0 && q.bytes + size > QUEUE_BYTES {
            if q.stalled() {
                q.dropped += 1;
                return;
            }
            let left = STALL.saturating_sub(q.progress.elapsed()).max(Duration::from_millis(1));
            q = self.changed.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.bytes += size;
        q.events.push_back(event);
        drop(q);
        self.changed.notify_all();
    }

    fn run(&self) {
        let mut q = self.lock();
        loop {
            let Some(event) = q.events.pop_front() else {
                if q.closed {
                    q.thread = false;
                    return;
                }
                q = self.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            q.bytes = q.bytes.saturating_sub(event.size());
            q.emitting = true;
            q.progress = Instant::now();
            let dropped = std::mem::take(&mut q.dropped);
            drop(q);
            if dropped > 0 {
                tracing::warn!(
                    "{dropped} event(s) dropped while the tracing subscriber took nothing for {STALL:?}"
                );
            }
            event.emit();
            q = self.lock();
            q.emitting = false;
            q.progress = Instant::now();
            self.changed.notify_all();
        }
    }

    /// Waits until every queued event is emitted, or the subscriber stalls (the root's last
    /// events are not lost when it returns from shutdown), then lets the thread end.
    pub fn finish(&self) {
        let mut q = self.lock();
        while q.thread && (!q.events.is_empty() || q.emitting) && !q.stalled() {
            let left = STALL.saturating_sub(q.progress.elapsed()).max(Duration::from_millis(1));
            q = self.changed.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.closed = true;
        drop(q);
        self.changed.notify_all();
    }
}
