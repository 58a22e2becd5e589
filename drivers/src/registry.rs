//! The functions a context can be asked to run, by name, with postcard-encoded arguments and
//! results (docs/shutdown.md "Calls").
//!
//! Every process of a tree runs the same binary and builds the same [`Functions`] before
//! [`crate::init`], so a name means the same function in every context. A function registered
//! with [`Functions::register`] blocks: it runs on the context's calls thread (a child's main
//! thread), so a hung one blocks further calls but never IO or shutdown. One registered with
//! [`Functions::register_async`] runs as a task on the context's tasks thread (on the runtime
//! the context runs on); it should not block, or other async calls wait.
//! The node hands out one call at a time either way (docs/shutdown.md "Calls").

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;

use arbor_core::call::{CallError, CallErrorKind, CallRequest, CallResult, JobId, TypeFingerprint};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::function::{FunctionName, Types};
use crate::panics;

type Erased = dyn Fn(&[u8], &str) -> CallResult + Send + Sync;
/// An async function's future, answering one call.
pub type CallFuture = Pin<Box<dyn Future<Output = CallResult> + Send + 'static>>;
type ErasedAsync = dyn Fn(Bytes, String) -> CallFuture + Send + Sync;

#[derive(Clone)]
enum Run {
    Blocking(Arc<Erased>),
    Async(Arc<ErasedAsync>),
}

/// A registered function: how to run it and its types.
#[derive(Clone)]
struct Entry {
    run: Run,
    types: Types,
    fingerprint: TypeFingerprint,
}

impl Entry {
    fn new<A, R>(run: Run) -> Entry {
        Entry { run, types: Types::of::<A, R>(), fingerprint: TypeFingerprint::of::<A, R>() }
    }

    /// Refuses a request whose caller's types are not this function's, before anything is
    /// decoded. A request without a fingerprint (built from raw bytes) is not checked.
    fn check(&self, request: &CallRequest, context: &str) -> Result<(), CallError> {
        match request.meta.types {
            Some(theirs) if !theirs.accepts(&self.fingerprint) => Err(CallError::new(
                CallErrorKind::TypeMismatch,
                format!("{context} declares {:?} as {}", request.function, self.types),
                context,
            )),
            _ => Ok(()),
        }
    }
}

/// One call handed to the calls thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: JobId,
    pub request: CallRequest,
}

/// A registry of named functions.
#[derive(Clone, Default)]
pub struct Functions {
    by_name: BTreeMap<String, Entry>,
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl Functions {
    /// An empty registry.
    pub fn new() -> Functions {
        Functions::default()
    }

    /// Adds `function` under `name` — a typed [`Function`](crate::Function) handle, or a `&str`
    /// — replacing any function of that name.
    ///
    /// A call whose types are not `A` and `R` is answered `TypeMismatch` before anything is
    /// decoded; arguments that still do not decode as `A` are answered `Malformed`; an `Err(e)`
    /// is answered `Failed` with `e`'s text; a panic is caught and answered `Failed`. In every
    /// case the context keeps serving.
    pub fn register<A, R, E, F>(mut self, name: impl FunctionName<A, R>, function: F) -> Functions
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let name = name.name().to_string();
        let fname = name.clone();
        let erased = move |args: &[u8], context: &str| -> CallResult {
            // postcard is not self-describing: refusing leftover bytes catches most arguments
            // meant for another signature instead of running on garbage.
            let args = decode_args::<A>(&fname, args, context)?;
            let value =
                function(args).map_err(|e| CallError::new(CallErrorKind::Failed, e.to_string(), context))?;
            encode_result(&fname, &value, context)
        };
        self.by_name.insert(name, Entry::new::<A, R>(Run::Blocking(Arc::new(erased))));
        self
    }

    /// Adds an async `function` under `name`: it runs as a task on the context's tasks thread,
    /// so it should not block (use [`Functions::register`] for code that does). Errors and panics
    /// are answered as for [`Functions::register`].
    pub fn register_async<A, R, E, F, Fut>(mut self, name: impl FunctionName<A, R>, function: F) -> Functions
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let function = Arc::new(function);
        let name = name.name().to_string();
        let fname = name.clone();
        let erased = move |args: Bytes, context: String| -> CallFuture {
            let function = function.clone();
            let fname = fname.clone();
            Box::pin(async move {
                // Decoded in the task, not by whoever hands the call out (the IO thread, with
                // the context's state locked), and all of it inside the panic guard — the
                // arguments' `Deserialize`, the function, its error's `Display`, its result's
                // `Serialize` — as the blocking path does: a panic in any of them costs this
                // call only, answered `Failed`. (Escaping, it ended the task unanswered, and the
                // node, which runs one call at a time, waited for it for ever.)
                let (name, ctx) = (fname.clone(), context.clone());
                let run = CatchUnwind(Box::pin(async move {
                    let args = decode_args::<A>(&name, &args, &ctx)?;
                    let value = function(args)
                        .await
                        .map_err(|e| CallError::new(CallErrorKind::Failed, e.to_string(), &ctx))?;
                    encode_result(&name, &value, &ctx)
                }));
                match run.await {
                    Ok(result) => result,
                    Err(panic) => {
                        Err(CallError::new(CallErrorKind::Failed, format!("{fname:?} {panic}"), &context))
                    }
                }
            })
        };
        self.by_name.insert(name, Entry::new::<A, R>(Run::Async(Arc::new(erased))));
        self
    }

    /// The future for `request` if it names an async function (a host runs it as a task and
    /// reports its result with `Input::CallFinished`); `None` for a blocking or unknown one,
    /// which [`Functions::run`] answers.
    pub fn task(&self, request: &CallRequest, context: &str) -> Option<CallFuture> {
        let entry = self.by_name.get(request.function.as_str())?;
        let Run::Async(f) = &entry.run else { return None };
        Some(match entry.check(request, context) {
            Ok(()) => f(request.args.clone(), context.to_string()),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        })
    }

    /// Runs one request on this thread, as a host does with the core's `Output::RunCall`;
    /// `context` names this context in errors. An unknown name is answered `UnknownFunction`,
    /// arguments that do not decode `Malformed`, a panic `Failed`; an async function is run to
    /// completion on this thread.
    pub fn run(&self, request: &CallRequest, context: &str) -> CallResult {
        let Some(entry) = self.by_name.get(request.function.as_str()) else {
            return Err(CallError::unknown_function(&request.function, context));
        };
        entry.check(request, context)?;
        let function = match &entry.run {
            Run::Blocking(f) => f,
            Run::Async(f) => {
                // Only reached if a caller bypassed the IO thread: run it to completion here.
                return smol::future::block_on(f(request.args.clone(), context.to_string()));
            }
        };
        // A panic's text: message, location and (with RUST_BACKTRACE) backtrace (panics.rs).
        match panics::catch(|| function(&request.args, context)) {
            Ok(result) => result,
            Err(panic) => {
                Err(CallError::new(CallErrorKind::Failed, format!("{:?} {panic}", request.function), context))
            }
        }
    }
}

/// Decodes arguments, refusing leftover bytes (see [`Functions::register`]).
fn decode_args<A: DeserializeOwned>(fname: &str, args: &[u8], context: &str) -> Result<A, CallError> {
    let malformed = |why: String| {
        CallError::new(CallErrorKind::Malformed, format!("arguments of {fname:?} {why}"), context)
    };
    let (args, rest) =
        postcard::take_from_bytes::<A>(args).map_err(|e| malformed(format!("do not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!("have {} bytes left over", rest.len())));
    }
    Ok(args)
}

fn encode_result<R: Serialize>(fname: &str, value: &R, context: &str) -> CallResult {
    postcard::to_allocvec(value).map(Bytes::from).map_err(|e| {
        CallError::new(CallErrorKind::Failed, format!("result of {fname:?} does not encode: {e}"), context)
    })
}

/// A future whose panic is caught, with its location and backtrace (panics.rs).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, panics::Panic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match panics::catch(move || inner.poll(cx)) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn functions() -> Functions {
        Functions::new()
            .register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b))
            .register("fail", |(): ()| Err::<(), _>("no luck"))
            .register("panic", |(): ()| -> Result<(), String> { panic!("on purpose") })
    }

    fn request(function: &str, args: &impl Serialize) -> CallRequest {
        CallRequest::new(function, postcard::to_allocvec(args).unwrap_or_default())
    }

    #[test]
    fn a_registered_function_runs_on_decoded_arguments() {
        let out = functions().run(&request("add", &(2, 3)), "ctx").map(|b| postcard::from_bytes::<i32>(&b));
        assert_eq!(out, Ok(Ok(5)));
    }

    #[test]
    fn a_call_with_other_types_is_refused_before_decoding_naming_the_callees_types() {
        use arbor_core::call::{RequestMeta, TypeFingerprint};
        // (2u8, 3u8) would decode as an (i32, i32) of garbage: the fingerprint stops it first.
        let meta = RequestMeta { types: Some(TypeFingerprint::of::<(u8, u8), i32>()), timeout: None };
        let wrong = request("add", &(2u8, 3u8)).with_meta(meta);
        let e = functions().run(&wrong, "ctx").unwrap_err();
        assert_eq!(e.kind, CallErrorKind::TypeMismatch);
        assert_eq!(e.message, "ctx declares \"add\" as (i32, i32) -> i32");
        let meta = RequestMeta { types: Some(TypeFingerprint::of::<(i32, i32), i32>()), timeout: None };
        let right = request("add", &(2i32, 3i32)).with_meta(meta);
        assert_eq!(functions().run(&right, "ctx").map(|b| postcard::from_bytes::<i32>(&b).ok()), Ok(Some(5)));
        // A caller that takes no result (call_no_reply) matches on the arguments alone.
        let meta = RequestMeta { types: Some(TypeFingerprint::of_args::<(i32, i32)>()), timeout: None };
        assert!(functions().run(&request("add", &(2i32, 3i32)).with_meta(meta), "ctx").is_ok());
    }

    #[test]
    fn bad_input_is_a_typed_error_never_a_crash() {
        let f = functions();
        let kind = |r: CallResult| r.err().map(|e| e.kind);
        assert_eq!(kind(f.run(&request("nope", &()), "ctx")), Some(CallErrorKind::UnknownFunction));
        assert_eq!(kind(f.run(&CallRequest::new("add", vec![1u8]), "ctx")), Some(CallErrorKind::Malformed));
        assert_eq!(kind(f.run(&request("add", &(1, 2, 3)), "ctx")), Some(CallErrorKind::Malformed));
        assert_eq!(kind(f.run(&request("fail", &()), "ctx")), Some(CallErrorKind::Failed));
        let panicked = f.run(&request("panic", &()), "ctx").err().map(|e| e.message).unwrap_or_default();
        let at = format!("\"panic\" panicked at {}:", file!());
        assert!(panicked.starts_with(&at) && panicked.contains(": on purpose"), "{panicked}");
    }

    /// An error whose `Display` panics, and a result whose `Serialize` does.
    struct Rude;

    impl fmt::Display for Rude {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("Display on purpose")
        }
    }

    impl Serialize for Rude {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("Serialize on purpose")
        }
    }

    /// A panic in an error's `Display` or a result's `Serialize` is the call's `Failed` answer,
    /// for an async function as for a blocking one: it never escapes the task, which would leave
    /// the call unanswered and its context waiting for it for ever.
    #[test]
    fn a_panic_turning_the_outcome_into_an_answer_is_answered_failed_for_async_functions_too() {
        let f = Functions::new()
            .register("err", |(): ()| Err::<(), _>(Rude))
            .register("ok", |(): ()| Ok::<_, String>(Rude))
            .register_async("err_async", |(): ()| async { Err::<(), _>(Rude) })
            .register_async("ok_async", |(): ()| async { Ok::<_, String>(Rude) });
        for (name, what) in
            [("err", "Display"), ("ok", "Serialize"), ("err_async", "Display"), ("ok_async", "Serialize")]
        {
            let call = request(name, &());
            let result = match f.task(&call, "ctx") {
                Some(task) => smol::future::block_on(task),
                None => f.run(&call, "ctx"),
            };
            let e = result.expect_err(name);
            assert_eq!(e.kind, CallErrorKind::Failed, "{name}");
            assert!(e.message.contains(&format!("{what} on purpose")), "{name}: {}", e.message);
        }
    }
}
