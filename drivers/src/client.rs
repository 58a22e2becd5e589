//! The async API: a [`Context`] handle to spawn, call and shut down, usable from any thread and
//! awaited from any task of any runtime (its futures wake through plain wakers; nothing here
//! needs the runtime the context's IO thread runs on).
//!
//! A call is sent when it is made, not when it is first polled: `let a = ctx.call(..); let b =
//! ctx.call(..);` puts both on the wire before either answer is awaited (pipelined calls), and
//! the thread making it writes it itself when the socket takes it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use arbor_core::call::{CallError, CallErrorKind, CallRequest, CallResult, RequestBody};
use arbor_core::ids::ContextId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SpawnError;
use crate::oneshot;
use crate::shared::{gone, Shared};
use crate::spawn::{ChildInfo, SpawnOptions};

static CURRENT: Mutex<Option<Context>> = Mutex::new(None);

pub(crate) fn set_current(context: Option<Context>) {
    if let Ok(mut current) = CURRENT.lock() {
        *current = context;
    }
}

/// The context this process runs, once it runs one: set in a child by [`crate::init`], in the
/// root by [`crate::Launcher::start`]. Functions use it to spawn and call further.
pub fn context() -> Option<Context> {
    CURRENT.lock().ok().and_then(|c| c.clone())
}

/// A handle on a running context (this process's), cheap to clone and usable from any thread.
#[derive(Clone, Debug)]
pub struct Context {
    shared: Arc<Shared>,
}

/// A call in flight: await it for the answer. Any number may be in flight at once (pipelined);
/// each resolves exactly once.
#[derive(Debug)]
#[must_use = "a call's answer, or its error, arrives here"]
pub struct PendingCall<R> {
    answer: Result<oneshot::Receiver<CallResult>, Option<CallError>>,
    /// Its frame may still be queued (a blocking `call_async`): flush before waiting.
    deferred: bool,
    shared: Arc<Shared>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// Waits for the answer, blocking this thread.
    pub(crate) fn wait(self) -> Result<R, CallError> {
        if self.deferred {
            self.shared.flush();
        }
        match self.answer {
            Ok(answer) => decode(answer.wait(), &self.shared.name),
            Err(e) => Err(e.unwrap_or_else(|| gone(&self.shared.name))),
        }
    }
}

impl<R: DeserializeOwned> Future for PendingCall<R> {
    type Output = Result<R, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if std::mem::take(&mut this.deferred) {
            this.shared.flush();
        }
        match &mut this.answer {
            Ok(answer) => Pin::new(answer).poll(cx).map(|a| decode(a, &this.shared.name)),
            Err(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| gone(&this.shared.name)))),
        }
    }
}

/// A spawn in flight: await it for the child, once it is connected.
#[derive(Debug)]
#[must_use = "the child, or why it could not start, arrives here"]
pub struct PendingSpawn {
    answer: oneshot::Receiver<Result<ChildInfo, SpawnError>>,
}

impl PendingSpawn {
    pub(crate) fn wait(self) -> Result<ChildInfo, SpawnError> {
        self.answer.wait().unwrap_or(Err(SpawnError::ShuttingDown))
    }
}

impl Future for PendingSpawn {
    type Output = Result<ChildInfo, SpawnError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx).map(|a| a.unwrap_or(Err(SpawnError::ShuttingDown)))
    }
}

fn decode<R: DeserializeOwned>(answer: Option<CallResult>, context: &str) -> Result<R, CallError> {
    let bytes = answer.ok_or_else(|| gone(context))??;
    postcard::from_bytes(&bytes).map_err(|e| {
        CallError::new(CallErrorKind::Malformed, format!("the result does not decode: {e}"), context)
    })
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>) -> Context {
        Context { shared }
    }

    /// This context's id.
    pub fn id(&self) -> ContextId {
        self.shared.id
    }

    /// Calls `function` in context `target`; the call is sent now, the answer arrives in the
    /// returned future.
    pub fn call<A, R>(&self, target: ContextId, function: &str, args: &A) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(target, function, args, false)
    }

    /// [`Context::call`], with the frame left queued until the call is first waited for (or
    /// the IO thread, woken, writes it): a burst of such calls leaves in one write.
    pub(crate) fn send<A, R>(
        &self,
        target: ContextId,
        function: &str,
        args: &A,
        defer: bool,
    ) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let answer = match self.encode(function, args) {
            Ok(body) => Ok(self.shared.call(target, body, defer)),
            Err(e) => Err(Some(e)),
        };
        PendingCall { answer, deferred: defer, shared: self.shared.clone(), _result: PhantomData }
    }

    /// Sends a call that wants no answer: `Ok` once it is on its way (docs/shutdown.md
    /// "call_no_reply and shutdown" says what becomes of it).
    pub fn call_no_reply<A>(&self, target: ContextId, function: &str, args: &A) -> Result<(), CallError>
    where
        A: Serialize + ?Sized,
    {
        let body = self.encode(function, args)?;
        self.shared.with(|state, now| {
            if state.exited.is_some() {
                return Err(gone(&self.shared.name));
            }
            state.host.call_no_reply_body(now, target, body)
        })
    }

    /// Starts a child context of this context; the future resolves once it is connected. A
    /// spawn not carried out when shutdown begins fails with [`SpawnError::ShuttingDown`] or
    /// [`SpawnError::Refused`].
    pub fn spawn(&self, options: SpawnOptions) -> PendingSpawn {
        PendingSpawn { answer: self.shared.spawn(options) }
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
                &self.shared.name,
            )
        })
    }
}
