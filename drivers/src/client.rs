//! The API other threads use to talk to their context's broker: typed calls and spawning.
//!
//! A call is encoded by the calling thread and written by it too (holding the context's broker
//! for as long as that takes), or handed to whichever thread holds the broker at the moment; its
//! answer is awaited on a one-shot channel. A spawn is carried out by one of the context's
//! service threads. Every method is safe from any thread, except from inside a
//! `Launcher::on_log` handler (which runs with the broker held).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use arbor_core::call::{CallError, CallErrorKind, CallRequest, CallResult, RequestBody};
use arbor_core::ids::ContextId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::broker::{gone, Shared};
use crate::error::SpawnError;
use crate::oneshot;
use crate::spawn::{ChildInfo, SpawnOptions};

static CURRENT: Mutex<Option<Context>> = Mutex::new(None);

pub(crate) fn set_current(context: Option<Context>) {
    if let Ok(mut current) = CURRENT.lock() {
        *current = context;
    }
}

pub(crate) fn current() -> Option<Context> {
    CURRENT.lock().ok().and_then(|c| c.clone())
}

/// A handle on a running context (this process's), cheap to clone and usable from any thread.
#[derive(Clone, Debug)]
pub struct Context {
    id: ContextId,
    shared: Arc<Shared>,
}

/// A call in flight: [`PendingCall::wait`] blocks for the answer, [`PendingCall::recv`] awaits
/// it. Any number may be in flight at once (pipelined); each resolves exactly once.
#[derive(Debug)]
#[must_use = "a call's answer, or its error, arrives here"]
pub struct PendingCall<R> {
    answer: Result<oneshot::Receiver<CallResult>, CallError>,
    shared: Arc<Shared>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// Waits for the answer, blocking this thread.
    pub fn wait(self) -> Result<R, CallError> {
        let answer = self.answer?;
        if !answer.ready() {
            // The call may still sit with others sent since: out with them before sleeping.
            self.shared.flush();
        }
        decode(answer.wait(), self.shared.name())
    }

    /// The answer, asynchronously.
    pub async fn recv(self) -> Result<R, CallError> {
        let answer = self.answer?;
        if !answer.ready() {
            self.shared.flush();
        }
        decode(answer.await, self.shared.name())
    }
}

fn decode<R: DeserializeOwned>(answer: Option<CallResult>, context: &str) -> Result<R, CallError> {
    let bytes = answer.ok_or_else(|| gone(context))??;
    postcard::from_bytes(&bytes).map_err(|e| {
        CallError::new(CallErrorKind::Malformed, format!("the result does not decode: {e}"), context)
    })
}

impl Context {
    pub(crate) fn new(id: ContextId, shared: Arc<Shared>) -> Context {
        Context { id, shared }
    }

    /// This context's id.
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// Calls `function` in context `target` and waits for its answer.
    pub fn call<A, R>(&self, target: ContextId, function: &str, args: &A) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(target, function, args, true).wait()
    }

    /// Sends a call and returns at once; the answer arrives in the [`PendingCall`].
    ///
    /// Calls sent this way in a burst leave together: the call may wait to be written until a
    /// service thread of this context wakes up for it (microseconds), or until any pending call
    /// is waited for, whichever comes first — so a hundred pipelined calls cost a few writes,
    /// not a hundred.
    pub fn call_async<A, R>(&self, target: ContextId, function: &str, args: &A) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(target, function, args, false)
    }

    fn send<A, R>(&self, target: ContextId, function: &str, args: &A, flush: bool) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let answer = self.encode(function, args).map(|body| self.shared.call(target, body, flush));
        PendingCall { answer, shared: self.shared.clone(), _result: PhantomData }
    }

    /// Sends a call that wants no answer: `Ok` once it is on its way (docs/shutdown.md
    /// "call_no_reply and shutdown" says what becomes of it).
    pub fn call_no_reply<A>(&self, target: ContextId, function: &str, args: &A) -> Result<(), CallError>
    where
        A: Serialize + ?Sized,
    {
        let body = self.encode(function, args)?;
        self.shared.call_no_reply(target, body)
    }

    /// Starts a child context of this context and waits until it is connected.
    pub fn spawn(&self, options: SpawnOptions) -> Result<ChildInfo, SpawnError> {
        let (reply, answer) = async_channel::bounded(1);
        self.shared.spawn(options, reply);
        answer.recv_blocking().map_err(|_| SpawnError::ShuttingDown)?
    }

    /// Starts a graceful shutdown of this context and everything below it; returns at once.
    pub fn request_shutdown(&self) {
        self.shared.shutdown();
    }

    /// Skips the grace period: disconnects and kills what is left (a second Ctrl-C).
    pub fn force_shutdown(&self) {
        self.shared.force_shutdown();
    }

    /// The request body, with the arguments serialized straight into it (no copy of them).
    fn encode<A: Serialize + ?Sized>(&self, function: &str, args: &A) -> Result<RequestBody, CallError> {
        CallRequest::encode_args(function, args).map_err(|e| {
            CallError::new(
                CallErrorKind::Malformed,
                format!("the arguments do not encode: {e}"),
                self.shared.name(),
            )
        })
    }
}
