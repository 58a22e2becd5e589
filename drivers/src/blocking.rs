//! The blocking API, a thin layer over the async one (in the manner of reqwest's `blocking`
//! module): the same [`Context`], [`Root`] and calls, each method blocking its thread until the
//! answer is there. Use it from plain threads and from blocking functions (which run on a
//! context's calls thread); never from inside an async task, which it would block.
//!
//! ```no_run
//! use arbor::{Functions, SpawnOptions};
//!
//! let functions = Functions::new().register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b));
//! let root = arbor::init(functions).start_blocking()?; // a child never gets past init()
//! let child = root.context().spawn(SpawnOptions::named("worker"))?;
//! let sum: i32 = root.context().call(child.id, "add", &(2, 3))?;
//! assert_eq!(sum, 5);
//! println!("tree gone in {:?}", root.shutdown().took);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use arbor_core::call::CallError;
use arbor_core::departure::{ControlError, Departure};
use arbor_core::ids::ContextId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SpawnError;
use crate::function::FunctionName;
use crate::root::ShutdownReport;
use crate::spawn::{ChildInfo, SpawnOptions};
use crate::CallOptions;

/// The context this process runs, once it runs one (see [`crate::context`]).
pub fn context() -> Option<Context> {
    crate::context().map(Context)
}

/// A handle on a running context, blocking flavour; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct Context(crate::Context);

/// A call in flight: [`PendingCall::wait`] blocks for the answer.
#[derive(Debug)]
#[must_use = "a call's answer, or its error, arrives here"]
pub struct PendingCall<R>(crate::PendingCall<R>);

impl<R: DeserializeOwned> PendingCall<R> {
    /// Waits for the answer, blocking this thread.
    pub fn wait(self) -> Result<R, CallError> {
        self.0.wait()
    }

    /// The async call underneath, to await instead.
    pub fn into_async(self) -> crate::PendingCall<R> {
        self.0
    }
}

impl Context {
    /// The async handle underneath.
    pub fn as_async(&self) -> &crate::Context {
        &self.0
    }

    /// This context's id.
    pub fn id(&self) -> ContextId {
        self.0.id()
    }

    /// Calls `function` — a typed [`Function`](crate::Function) handle, or a name — in context
    /// `target` and waits for its answer.
    pub fn call<A, R>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, R>,
        args: &A,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.0.call(target, function, args).wait()
    }

    /// [`Context::call`] with options: a deadline ([`CallOptions::timeout`]).
    pub fn call_with<A, R>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, R>,
        args: &A,
        options: CallOptions,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.0.call_with(target, function, args, options).wait()
    }

    /// Sends a call and returns at once; the answer arrives in the [`PendingCall`]. Calls sent
    /// this way are pipelined and leave together: the frame waits until a call is waited for,
    /// or until the context's IO thread (woken at once) writes it, whichever comes first — so a
    /// burst of a hundred costs a few writes, not a hundred, and none waits for a `wait`.
    /// Dropping the [`PendingCall`] unwaited cancels the call (use
    /// [`Context::call_no_reply`] for a call nobody waits for).
    pub fn call_async<A, R>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, R>,
        args: &A,
    ) -> PendingCall<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_async_with(target, function, args, CallOptions::default())
    }

    /// [`Context::call_async`] with options.
    pub fn call_async_with<A, R>(
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
        PendingCall(self.0.send(target, function.name(), args, options, true))
    }

    /// Sends a call that wants no answer (see [`crate::Context::call_no_reply`]).
    pub fn call_no_reply<A>(
        &self,
        target: ContextId,
        function: impl FunctionName<A, ()>,
        args: &A,
    ) -> Result<(), CallError>
    where
        A: Serialize + ?Sized,
    {
        self.0.call_no_reply(target, function, args)
    }

    /// Starts a child context of this context and waits until it is connected.
    pub fn spawn(&self, options: SpawnOptions) -> Result<ChildInfo, SpawnError> {
        self.0.spawn(options).wait()
    }

    /// Shuts one child and its subtree down gracefully (see [`crate::Context::shutdown_child`])
    /// and waits until it is reaped.
    pub fn shutdown_child(&self, child: ContextId) -> Result<Departure, ControlError> {
        self.0.shutdown_child(child).wait()
    }

    /// Kills one child (see [`crate::Context::kill_child`]) and waits until it is reaped.
    pub fn kill_child(&self, child: ContextId) -> Result<Departure, ControlError> {
        self.0.kill_child(child).wait()
    }

    /// Starts a graceful shutdown of this context and everything below it; returns at once.
    pub fn request_shutdown(&self) {
        self.0.request_shutdown();
    }

    /// Skips the grace period: disconnects and kills what is left.
    pub fn force_shutdown(&self) {
        self.0.force_shutdown();
    }
}

/// The running root context, blocking flavour. Dropping it shuts the tree down and waits.
#[derive(Debug)]
pub struct Root {
    inner: crate::Root,
    context: Context,
}

impl Root {
    pub(crate) fn new(inner: crate::Root) -> Root {
        let context = Context(inner.context().clone());
        Root { inner, context }
    }

    /// The root's context handle: spawn children, call them.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Shuts the whole tree down gracefully and waits until every child is reaped.
    pub fn shutdown(self) -> ShutdownReport {
        self.inner.shutdown_blocking()
    }

    /// Waits until the tree has shut down for another reason (a signal, or
    /// [`Context::request_shutdown`] from another thread).
    pub fn wait(self) -> ShutdownReport {
        self.inner.wait_blocking()
    }
}
