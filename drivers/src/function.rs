//! Typed function handles: a function declared once, with its argument and result types, and
//! used both to register it and to call it, so a call with the wrong types does not compile.
//!
//! ```
//! use arbor::Function;
//!
//! /// Adds two numbers (declared once, shared by the code that registers and the code that calls).
//! const ADD: Function<(i32, i32), i32> = Function::new("add");
//!
//! let functions = arbor::Functions::new().register(ADD, |(a, b)| Ok::<_, String>(a + b));
//! # let _ = functions;
//! // … later, in any context: `ctx.call(child.id, ADD, &(2, 3))` is a `PendingCall<i32>`,
//! // and `ctx.call(child.id, ADD, &(2u8, 3u8))` is a compile error.
//! ```
//!
//! A plain `&str` names a function too, with the types taken from the call or the closure.
//! Either way every request carries a fingerprint of the caller's types
//! ([`TypeFingerprint`](arbor_core::call::TypeFingerprint): what it covers and what it cannot
//! see is said there), which the callee checks before
//! decoding: a call whose types differ from the callee's — a stringly-typed call with the wrong
//! types, or two builds of a program that disagree — fails with
//! [`CallErrorKind::TypeMismatch`](crate::CallErrorKind::TypeMismatch) naming both sides, never
//! with a value decoded from the wrong bytes.

use std::fmt;
use std::marker::PhantomData;

/// A function's name with its argument type `A` and result type `R`.
pub struct Function<A, R> {
    name: &'static str,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Function<A, R> {
    /// Declares the function named `name`.
    pub const fn new(name: &'static str) -> Function<A, R> {
        Function { name, _types: PhantomData }
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// Not derived: a derive would ask `A: Clone` and `R: Clone`, which a handle does not need.
impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Function<A, R> {}

impl<A, R> fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({:?}: {})", self.name, Types::of::<A, R>())
    }
}

/// What names a function taking `A` and returning `R`: a typed [`Function`], whose types are
/// fixed, or a `&str`, which takes them from the call or the closure it is used with.
pub trait FunctionName<A: ?Sized, R> {
    /// The function's name.
    fn name(&self) -> &str;
}

impl<A, R> FunctionName<A, R> for Function<A, R> {
    fn name(&self) -> &str {
        self.name
    }
}

impl<A: ?Sized, R> FunctionName<A, R> for &str {
    fn name(&self) -> &str {
        self
    }
}

impl<A: ?Sized, R> FunctionName<A, R> for &String {
    fn name(&self) -> &str {
        self.as_str()
    }
}

/// One side's types: their names (for errors) and fingerprint (for the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Types {
    pub args: &'static str,
    pub result: &'static str,
}

impl Types {
    pub fn of<A: ?Sized, R: ?Sized>() -> Types {
        Types { args: std::any::type_name::<A>(), result: std::any::type_name::<R>() }
    }
}

impl fmt::Display for Types {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.args, self.result)
    }
}
