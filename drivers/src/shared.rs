//! A context as threads share it: its [`State`] behind one mutex, and what reaches it without
//! the lock (the runtime, the functions, the log handler, its name). Every entry point locks the
//! state, changes it through the host, carries out what followed, lets go, then hands out answers
//! and records (deliveries.rs).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arbor_core::call::{CallError, CallErrorKind, CallId, CallResult, JobId};
use arbor_core::host::Host;
use arbor_core::ids::ContextId;
use arbor_core::time::Instant;

use crate::clock;
use crate::deliveries::Deliveries;
use crate::error::SpawnError;
use crate::events::Events;
use crate::job_queue::JobSender;
use crate::logs::LogHandler;
use crate::oneshot;
use crate::registry::Functions;
use crate::runtime::Runtime;
use crate::spawn::{ChildInfo, SpawnOptions};
use crate::state::State;

/// A context: its state, and what reaches it without the lock.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub runtime: Arc<dyn Runtime>,
    pub functions: Functions,
    on_log: Option<LogHandler>,
    /// At the root: where its `tracing` events go (events.rs).
    events: Option<Arc<Events>>,
    /// This context's name and id, for errors made without the lock.
    pub name: String,
    pub id: ContextId,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// The error for a call to or from a context that has exited.
pub(crate) fn gone(context: &str) -> CallError {
    CallError::new(CallErrorKind::ShuttingDown, "the context has exited", context)
}

impl Shared {
    pub fn new(
        host: Host,
        runtime: Arc<dyn Runtime>,
        functions: Functions,
        on_log: Option<LogHandler>,
        events: Option<Arc<Events>>,
        jobs: JobSender,
    ) -> Arc<Shared> {
        let name = host.node().config().name.clone();
        let id = host.node().id();
        let state = State::new(host, jobs);
        Arc::new(Shared { state: Mutex::new(state), runtime, functions, on_log, events, name, id })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state from any thread, carries out what it caused, lets go of the lock,
    /// then hands out answers, records and notes (and wakes the driver if it has work).
    pub fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut state = self.lock();
        let r = f(&mut state, clock::now());
        state.carry_out(self, false);
        let mut out = state.deliveries.take_filled();
        drop(state);
        self.deliver(&mut out);
        r
    }

    /// Hands out what [`State::carry_out`] gathered. Never called with the lock held.
    pub fn deliver(self: &Arc<Self>, out: &mut Deliveries) {
        let refused = out.deliver(self.on_log.as_ref(), self.events.as_ref(), &*self.runtime);
        if !refused.is_empty() {
            self.with(|state, now| {
                for job in refused {
                    let e = CallError::new(
                        CallErrorKind::ShuttingDown,
                        "calls to this context are closed",
                        &self.name,
                    );
                    state.host.call_finished(now, job.id, Err(e));
                }
            });
        }
    }

    /// Sends a call; its answer arrives on the returned receiver.
    ///
    /// With `defer`, its frame is left queued for the next [`Shared::flush`] (which a waiter
    /// runs before it sleeps) or for the driver, woken to write it — so calls sent in a burst
    /// leave together, in one write, rather than one write each.
    pub fn call(
        self: &Arc<Self>,
        target: ContextId,
        body: arbor_core::call::RequestBody,
        defer: bool,
    ) -> (oneshot::Receiver<CallResult>, Option<CallId>) {
        let (reply, answer) = oneshot::channel();
        let call = self.with(|state, now| {
            state.defer_writes = defer;
            if state.exited.is_some() {
                state.deliveries.answers.push((reply, Err(gone(&self.name))));
                return None;
            }
            match state.host.call_body(now, target, body) {
                Ok(call) => {
                    state.calls.insert(call, reply);
                    Some(call)
                }
                Err(e) => {
                    state.deliveries.answers.push((reply, Err(e)));
                    None
                }
            }
        });
        (answer, call)
    }

    /// Gives up on a call whose future was dropped unresolved (the node tells the callee).
    pub fn cancel(self: &Arc<Self>, call: CallId) {
        self.with(|state, now| {
            if state.exited.is_none() && state.calls.contains_key(&call) {
                state.host.cancel_call(now, call);
            }
        });
    }

    /// Asks for a child context; the answer arrives on the returned receiver.
    pub fn spawn(
        self: &Arc<Self>,
        options: SpawnOptions,
    ) -> oneshot::Receiver<Result<ChildInfo, SpawnError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = options.check() {
            reply.send(Err(e));
            return answer;
        }
        self.with(|state, now| {
            if state.exited.is_some() {
                state.deliveries.spawns.push((reply, Err(SpawnError::ShuttingDown)));
                return;
            }
            let ticket = state.host.request_spawn(now);
            state.spawns.insert(ticket, (options, reply));
        });
        answer
    }

    /// A blocking call finished on the calls thread. If that hands out the next call at once,
    /// the answer is left for the driver (woken) to write, with the answers of the calls after
    /// it: a burst of calls is answered in a few writes, and a quick answer never waits for the
    /// next function to end.
    pub fn call_finished(self: &Arc<Self>, job: JobId, result: CallResult) {
        self.with(|state, now| {
            state.defer_if_busy = true;
            state.host.call_finished(now, job, result);
        });
    }

    /// An async function's task ended (or was stopped because its caller gave up).
    pub fn task_finished(self: &Arc<Self>, job: JobId, result: CallResult) {
        self.with(|state, now| {
            state.stops.remove(&job);
            state.host.call_finished(now, job, result);
        });
    }

    /// Writes what deferred calls left queued (see [`Shared::call`]).
    pub fn flush(self: &Arc<Self>) {
        self.with(|state, _| {
            for stream in std::mem::take(&mut state.unwritten) {
                state.write_now(stream);
            }
        });
    }

    /// Begins a graceful shutdown.
    pub fn shutdown(self: &Arc<Self>) {
        self.with(|state, now| state.begin_shutdown(now));
    }

    /// Skips the grace period.
    pub fn force_shutdown(self: &Arc<Self>) {
        self.with(|state, now| {
            state.shutdown_began.get_or_insert_with(std::time::Instant::now);
            state.host.force_shutdown(now);
        });
    }
}
