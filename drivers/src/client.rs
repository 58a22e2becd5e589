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
use std::time::Duration;

use arbor_core::call::{
    CallError, CallErrorKind, CallId, CallRequest, CallResult, RequestBody, RequestMeta, TypeFingerprint,
};
use arbor_core::departure::{ControlError, Departure};
use arbor_core::ids::ContextId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SpawnError;
use crate::function::{FunctionName, Types};
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

/// How to make one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Option<Duration>,
}

impl CallOptions {
    /// No deadline: the call waits for its answer, or for the callee to leave.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call fails with [`CallErrorKind::Timeout`] if no answer came within `timeout`; the
    /// callee is told, so a call still queued there never starts, and a running async function
    /// is dropped (a running blocking function cannot be stopped: it runs on, reported as still
    /// running, and its result is dropped). docs/driver.md "Deadlines and cancellation".
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// A call in flight: await it for the answer. Any number may be in flight at once (pipelined);
/// each resolves exactly once. Dropping it before it resolved cancels the call: it is
/// resolved `Cancelled` and the callee is told, as for a deadline ([`CallOptions::timeout`]).
#[derive(Debug)]
#[must_use = "a call's answer, or its error, arrives here; dropping it cancels the call"]
pub struct PendingCall<R> {
    answer: Result<oneshot::Receiver<CallResult>, Option<CallError>>,
    /// Its frame may still be queued (a blocking `call_async`): flush before waiting.
    deferred: bool,
    /// The node's name for it, until it resolved: what dropping it cancels.
    call: Option<CallId>,
    /// The caller's types, named in a `TypeMismatch`.
    types: Types,
    shared: Arc<Shared>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// Waits for the answer, blocking this thread.
    pub(crate) fn wait(mut self) -> Result<R, CallError> {
        if self.deferred {
            self.shared.flush();
        }
        self.call = None;
        let answer = match std::mem::replace(&mut self.answer, Err(None)) {
            Ok(answer) => answer.wait(),
            Err(e) => return Err(e.unwrap_or_else(|| gone(&self.shared.name))),
        };
        decode(answer, &self.shared.name, &self.types)
    }
}

impl<R: DeserializeOwned> Future for PendingCall<R> {
    type Output = Result<R, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if std::mem::take(&mut this.deferred) {
            this.shared.flush();
        }
        let ready = match &mut this.answer {
            Ok(answer) => match Pin::new(answer).poll(cx) {
                Poll::Ready(a) => decode(a, &this.shared.name, &this.types),
                Poll::Pending => return Poll::Pending,
            },
            Err(e) => Err(e.take().unwrap_or_else(|| gone(&this.shared.name))),
        };
        this.call = None;
        Poll::Ready(ready)
    }
}

impl<R> Drop for PendingCall<R> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.shared.cancel(call);
        }
    }
}

/// One child being stopped ([`Context::shutdown_child`], [`Context::kill_child`]): await it
/// for its departure, once its process is reaped.
#[derive(Debug)]
#[must_use = "the child's departure arrives here (dropping this does not undo the stop)"]
pub struct PendingDeparture {
    answer: Result<oneshot::Receiver<Result<Departure, ControlError>>, Option<ControlError>>,
}

impl PendingDeparture {
    pub(crate) fn wait(self) -> Result<Departure, ControlError> {
        match self.answer {
            Ok(answer) => answer.wait().unwrap_or(Err(ControlError::ShuttingDown)),
            Err(e) => Err(e.unwrap_or(ControlError::ShuttingDown)),
        }
    }
}

impl Future for PendingDeparture {
    type Output = Result<Departure, ControlError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.answer {
            Ok(answer) => Pin::new(answer).poll(cx).map(|d| d.unwrap_or(Err(ControlError::ShuttingDown))),
            Err(e) => Poll::Ready(Err(e.take().unwrap_or(ControlError::ShuttingDown))),
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

thread_local! {
    /// Fingerprints already computed on this thread, by the addresses of the types' names:
    /// hashing the names is the larger part of what a fingerprint costs a call, and a thread
    /// calls few distinct signatures. Equal addresses and lengths are equal names, so a hit
    /// is always right; a miss only recomputes.
    static FINGERPRINTS: std::cell::RefCell<Vec<(NameKey, NameKey, TypeFingerprint)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a type's name lives, and its length.
type NameKey = (usize, usize);

/// Most signatures a thread remembers; past it the memory starts over.
const FINGERPRINTS_KEPT: usize = 64;

fn name_key(name: &'static str) -> NameKey {
    (name.as_ptr() as usize, name.len())
}

fn cached(
    args: &'static str,
    result: &'static str,
    compute: impl FnOnce() -> TypeFingerprint,
) -> TypeFingerprint {
    let key = (name_key(args), name_key(result));
    let remembered = FINGERPRINTS.try_with(|cache| {
        let cache = cache.try_borrow().ok()?;
        cache.iter().find(|(a, r, _)| (*a, *r) == key).map(|(_, _, f)| *f)
    });
    if let Ok(Some(f)) = remembered {
        return f;
    }
    let f = compute();
    // Not remembered from a thread-local destructor (the cache may be gone): only recomputed.
    let _ = FINGERPRINTS.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            if cache.len() >= FINGERPRINTS_KEPT {
                cache.clear();
            }
            cache.push((key.0, key.1, f));
        }
    });
    f
}

/// [`TypeFingerprint::of`], remembered per thread.
fn fingerprint<A: ?Sized, R: ?Sized>() -> TypeFingerprint {
    cached(std::any::type_name::<A>(), std::any::type_name::<R>(), TypeFingerprint::of::<A, R>)
}

/// [`TypeFingerprint::of_args`], remembered per thread (keyed apart from any `R`: the empty
/// name stands for "no result").
fn args_fingerprint<A: ?Sized>() -> TypeFingerprint {
    cached(std::any::type_name::<A>(), "", TypeFingerprint::of_args::<A>)
}

fn decode<R: DeserializeOwned>(
    answer: Option<CallResult>,
    context: &str,
    types: &Types,
) -> Result<R, CallError> {
    let bytes = match answer.ok_or_else(|| gone(context))? {
        Ok(bytes) => bytes,
        Err(mut e) if e.kind == CallErrorKind::TypeMismatch => {
            // The callee named its side; name ours.
            e.message = format!("called as {types}, but {}", e.message);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
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

    /// Calls `function` — a typed [`Function`](crate::Function) handle, or a name — in context
    /// `target`; the call is sent now, the answer arrives in the returned future. A callee
    /// whose function has other types answers [`CallErrorKind::TypeMismatch`].
    pub fn call<A, R>(&self, target: ContextId, function: impl FunctionName<A, R>, args: &A) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(target, function.name(), args, CallOptions::default(), false)
    }

    /// [`Context::call`] with options: a deadline ([`CallOptions::timeout`]).
    pub fn call_with<A, R>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, R>,
        args: &A,
        options: CallOptions,
    ) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(target, function.name(), args, options, false)
    }

    /// [`Context::call`], with the frame left queued until the call is first waited for (or
    /// the IO thread, woken, writes it): a burst of such calls leaves in one write.
    pub(crate) fn send<A, R>(
        &self,
        target: ContextId,
        function: &str,
        args: &A,
        options: CallOptions,
        defer: bool,
    ) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let meta = RequestMeta { types: Some(fingerprint::<A, R>()), timeout: options.timeout };
        let (answer, call) = match self.encode(function, args, meta) {
            Ok(body) => {
                let (answer, call) = self.shared.call(target, body, defer);
                (Ok(answer), call)
            }
            Err(e) => (Err(Some(e)), None),
        };
        PendingCall {
            answer,
            deferred: defer,
            call,
            types: Types::of::<A, R>(),
            shared: self.shared.clone(),
            _result: PhantomData,
        }
    }

    /// Sends a call that wants no answer: `Ok` once it is on its way (docs/shutdown.md
    /// "call_no_reply and shutdown" says what becomes of it). The callee checks the argument
    /// types; a mismatch is only logged there, since no one waits for an answer.
    pub fn call_no_reply<A>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, ()>,
        args: &A,
    ) -> Result<(), CallError>
    where
        A: Serialize + ?Sized,
    {
        let meta = RequestMeta { types: Some(args_fingerprint::<A>()), timeout: None };
        let body = self.encode(function.name(), args, meta)?;
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

    /// Shuts one child of this context, and everything below it, down gracefully while the
    /// rest of the tree serves on: the child closes its call channel, then tells its own
    /// children, as in a whole-tree shutdown (S1/S2 hold inside that subtree); if it has not
    /// left within this context's grace period it is forced (its stream closed, SIGTERM, then
    /// SIGKILL). Calls waiting on it fail once it is gone. The future resolves with its
    /// [`Departure`]. Only a connected child of *this* context can be stopped (to stop a
    /// grandchild, call a function in its parent that stops it): anything else is
    /// [`ControlError::NotAChild`].
    pub fn shutdown_child(&self, child: ContextId) -> PendingDeparture {
        self.control(child, |state, now| state.host.shutdown_child(now, child))
    }

    /// Kills one child of this context now (SIGKILL; calls waiting on it fail `Disconnected`
    /// at once). Its own children lose their parent and end themselves. The future resolves
    /// with its [`Departure`], cause [`DepartureCause::Killed`](arbor_core::departure::DepartureCause).
    pub fn kill_child(&self, child: ContextId) -> PendingDeparture {
        self.control(child, |state, now| state.host.kill_child(now, child))
    }

    fn control(
        &self,
        child: ContextId,
        act: impl FnOnce(&mut crate::state::State, arbor_core::time::Instant) -> Result<(), ControlError>,
    ) -> PendingDeparture {
        let (reply, answer) = oneshot::channel();
        let done = self.shared.with(|state, now| {
            if state.exited.is_some() {
                return Err(ControlError::ShuttingDown);
            }
            // Registered first: the departure may be handed out within `act` itself.
            state.awaiting.get_or_insert_default(child).push(reply);
            let r = act(state, now);
            if r.is_err() {
                // Only this waiter: another caller's stop of the same child still stands.
                if let Some(waiting) = state.awaiting.get_mut(&child) {
                    waiting.pop();
                    if waiting.is_empty() {
                        state.awaiting.remove(&child);
                    }
                }
            }
            r
        });
        PendingDeparture { answer: done.map(|()| answer).map_err(Some) }
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
    fn encode<A: Serialize + ?Sized>(
        &self,
        function: &str,
        args: &A,
        meta: RequestMeta,
    ) -> Result<RequestBody, CallError> {
        CallRequest::encode_args_with(function, args, meta).map_err(|e| {
            CallError::new(
                CallErrorKind::Malformed,
                format!("the arguments do not encode: {e}"),
                &self.shared.name,
            )
        })
    }
}
