//! The functions a context can be asked to run, by name, with postcard-encoded arguments and
//! results (docs/shutdown.md "Calls").
//!
//! Every process of a tree runs the same binary and builds the same [`Functions`] before
//! [`crate::init`], so a name means the same function in every context.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arbor_core::call::{CallError, CallErrorKind, CallRequest, CallResult};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

type Erased = dyn Fn(&[u8], &str) -> CallResult + Send + Sync;

/// A registry of named functions.
#[derive(Clone, Default)]
pub struct Functions {
    by_name: BTreeMap<String, Arc<Erased>>,
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

    /// Adds `function` under `name` (replacing any function of that name).
    ///
    /// Arguments that do not decode as `A` are answered with a `Malformed` error; an `Err(e)`
    /// is answered `Failed` with `e`'s text; a panic is caught and answered `Failed`. In every
    /// case the context keeps serving.
    pub fn register<A, R, E, F>(mut self, name: &str, function: F) -> Functions
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let fname = name.to_string();
        let erased = move |args: &[u8], context: &str| -> CallResult {
            let malformed = |why: String| {
                CallError::new(CallErrorKind::Malformed, format!("arguments of {fname:?} {why}"), context)
            };
            // postcard is not self-describing: refusing leftover bytes catches most arguments
            // meant for another signature instead of running on garbage.
            let (args, rest) =
                postcard::take_from_bytes::<A>(args).map_err(|e| malformed(format!("do not decode: {e}")))?;
            if !rest.is_empty() {
                return Err(malformed(format!("have {} bytes left over", rest.len())));
            }
            let value =
                function(args).map_err(|e| CallError::new(CallErrorKind::Failed, e.to_string(), context))?;
            postcard::to_allocvec(&value).map(Bytes::from).map_err(|e| {
                CallError::new(
                    CallErrorKind::Failed,
                    format!("result of {fname:?} does not encode: {e}"),
                    context,
                )
            })
        };
        self.by_name.insert(name.to_string(), Arc::new(erased));
        self
    }

    /// Runs one request; `context` names this context in errors.
    pub(crate) fn run(&self, request: &CallRequest, context: &str) -> CallResult {
        let Some(function) = self.by_name.get(&request.function) else {
            return Err(CallError::unknown_function(&request.function, context));
        };
        match catch_unwind(AssertUnwindSafe(|| function(&request.args, context))) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".to_string());
                Err(CallError::new(
                    CallErrorKind::Failed,
                    format!("{:?} panicked: {what}", request.function),
                    context,
                ))
            }
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
    fn bad_input_is_a_typed_error_never_a_crash() {
        let f = functions();
        let kind = |r: CallResult| r.err().map(|e| e.kind);
        assert_eq!(kind(f.run(&request("nope", &()), "ctx")), Some(CallErrorKind::UnknownFunction));
        assert_eq!(kind(f.run(&CallRequest::new("add", vec![1u8]), "ctx")), Some(CallErrorKind::Malformed));
        assert_eq!(kind(f.run(&request("add", &(1, 2, 3)), "ctx")), Some(CallErrorKind::Malformed));
        assert_eq!(kind(f.run(&request("fail", &()), "ctx")), Some(CallErrorKind::Failed));
        let panicked = f.run(&request("panic", &()), "ctx").err().map(|e| e.message);
        assert_eq!(panicked.as_deref(), Some("\"panic\" panicked: on purpose"));
    }
}
