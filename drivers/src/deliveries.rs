//! What a context hands out once its lock is let go of: blocking calls for the calls thread,
//! answers to callers, spawn results, log records, diagnostics, async-function tasks, and a
//! wake-up for the driver. Handing any of them out with the lock held could block (a caller's
//! thread, an `on_log` handler, a write to a capture socket only this context drains) with the
//! context stuck behind it, or wake a thread only to have it wait for the lock.

use arbor_core::call::CallResult;
use arbor_core::departure::{ControlError, Departure};
use arbor_core::node::Diagnostic;
use std::sync::Arc;
use std::task::Waker;

use crate::error::SpawnError;
use crate::events::{Event, Events};
use crate::job_queue::JobSender;
use crate::logs::{self, LogHandler, LogRecord};
use crate::oneshot;
use crate::registry::Job;
use crate::runtime::{Runtime, Task};
use crate::spawn::ChildInfo;

/// Something to log once the lock is let go of: in a child, `tracing` writes to fd 2, a capture
/// socket only this context drains, so logging with the lock held could block with no one
/// left to drain it.
#[derive(Debug)]
pub(crate) enum Note {
    Diagnostic(Diagnostic),
    Warn(String),
    Debug(String),
}

pub(crate) type SpawnReply = oneshot::Sender<Result<ChildInfo, SpawnError>>;

/// Where one child's departure, or why there will be none, goes.
pub(crate) type DepartureReply = oneshot::Sender<Result<Departure, ControlError>>;

/// Told of every context that leaves the tree ([`crate::Launcher::on_departure`]).
pub(crate) type DepartureHandler = std::sync::Arc<dyn Fn(&Departure) + Send + Sync>;

/// Everything handed out once the lock is let go of.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Blocking calls for the calls thread (each with its queue: `CallsClosed` may drop the
    /// state's before this is handed out). Sent after the lock is let go of, so the calls
    /// thread, woken, does not find the state still locked when it reports the result.
    pub jobs: Vec<(JobSender, Job)>,
    pub answers: Vec<(oneshot::Sender<CallResult>, CallResult)>,
    pub spawns: Vec<(SpawnReply, Result<ChildInfo, SpawnError>)>,
    pub logs: Vec<LogRecord>,
    pub notes: Vec<Note>,
    pub tasks: Vec<Task>,
    /// Departures for the handler, and for whoever waits on one child leaving.
    pub departures: Vec<(Option<DepartureHandler>, Vec<DepartureReply>, Departure)>,
    /// Waiters for a departure that will not come, and why.
    pub no_departures: Vec<(DepartureReply, ControlError)>,
    /// Stops for async functions whose callers gave up.
    pub stops: Vec<oneshot::Sender<()>>,
    pub wake: Option<Waker>,
}

impl Note {
    /// At the root (`events`: the program's own subscriber) through its events thread, never on
    /// the calling thread (events.rs); in a child, at once.
    fn emit_via(self, events: Option<&Arc<Events>>) {
        match events {
            Some(events) => events.push(Event::Note(self)),
            None => self.emit(),
        }
    }

    pub(crate) fn emit(self) {
        match self {
            Note::Diagnostic(d) => logs::diagnostic(&d),
            Note::Warn(m) => tracing::warn!("{m}"),
            Note::Debug(m) => tracing::debug!("{m}"),
        }
    }
}

impl Deliveries {
    /// Hands out what [`State::carry_out`] gathered. Never called with the lock held. Returns
    /// the calls the calls thread is no longer there to take.
    ///
    /// Everything is drained, not consumed: the IO thread hands the emptied vectors back to the
    /// state for the next round (`Deliveries::keep`), so a round that answers one call
    /// allocates nothing for it.
    #[must_use]
    pub fn deliver(
        &mut self,
        on_log: Option<&LogHandler>,
        events: Option<&Arc<Events>>,
        runtime: &dyn Runtime,
    ) -> Vec<Job> {
        let out = self;
        let mut refused = Vec::new();
        for (jobs, job) in out.jobs.drain(..) {
            if let Err(job) = jobs.send(job) {
                refused.push(job);
            }
        }
        for note in out.notes.drain(..) {
            note.emit_via(events);
        }
        for record in out.logs.drain(..) {
            match on_log {
                Some(handler) => user_handler("on_log", events, || handler(&record)),
                None => logs::emit(&record),
            }
        }
        for (reply, result) in out.answers.drain(..) {
            reply.send(result);
        }
        for (reply, result) in out.spawns.drain(..) {
            reply.send(result);
        }
        for (handler, waiting, departure) in out.departures.drain(..) {
            if let Some(handler) = handler {
                user_handler("on_departure", events, || handler(&departure));
            }
            for w in waiting {
                w.send(Ok(departure.clone()));
            }
        }
        for (w, why) in out.no_departures.drain(..) {
            w.send(Err(why));
        }
        for stop in out.stops.drain(..) {
            stop.send(());
        }
        for task in out.tasks.drain(..) {
            runtime.spawn(task);
        }
        if let Some(waker) = out.wake.take() {
            waker.wake();
        }
        refused
    }

    /// What has been gathered, moved out vector by vector; the empty ones stay (with their
    /// room) for the next round — a thread other than the IO thread, which takes this instead
    /// of handing back a spare, would otherwise take the room the IO thread's rounds reuse.
    pub fn take_filled(&mut self) -> Deliveries {
        fn filled<T>(v: &mut Vec<T>) -> Vec<T> {
            if v.is_empty() {
                Vec::new()
            } else {
                std::mem::take(v)
            }
        }
        Deliveries {
            jobs: filled(&mut self.jobs),
            answers: filled(&mut self.answers),
            spawns: filled(&mut self.spawns),
            logs: filled(&mut self.logs),
            notes: filled(&mut self.notes),
            tasks: filled(&mut self.tasks),
            departures: filled(&mut self.departures),
            no_departures: filled(&mut self.no_departures),
            stops: filled(&mut self.stops),
            wake: self.wake.take(),
        }
    }

    /// Whether these emptied vectors are worth keeping for the next round: not after a burst
    /// (a hundred pipelined answers), whose room would otherwise stay allocated for good.
    pub fn keep(&self) -> bool {
        const KEEP: usize = 16;
        self.jobs.capacity() <= KEEP
            && self.answers.capacity() <= KEEP
            && self.spawns.capacity() <= KEEP
            && self.logs.capacity() <= KEEP
            && self.notes.capacity() <= KEEP
            && self.tasks.capacity() <= KEEP
            && self.departures.capacity() <= KEEP
            && self.no_departures.capacity() <= KEEP
            && self.stops.capacity() <= KEEP
    }
}

/// Runs a handler the user gave the launcher ([`crate::Launcher::on_log`],
/// [`crate::Launcher::on_departure`]). It runs on the IO thread: a panic escaping it would end
/// that thread, and with it the tree's IO — calls in flight unanswered for ever, children never
/// reaped, the root never released. The panic is reported (the panic hook already printed it)
/// and the tree goes on; the one line or departure it was handed is all the handler misses.
fn user_handler(which: &str, events: Option<&Arc<Events>>, handler: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).is_err() {
        Note::Warn(format!("the {which} handler panicked; the tree goes on without it for that one"))
            .emit_via(events);
    }
}
