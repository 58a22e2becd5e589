//! Calls: request and result bodies, the caller's pending-call table, and the callee's
//! dispatcher queue (docs/shutdown.md "Calls").
//!
//! A call is a CALL_FUNCTION message whose postcard body names a function and carries its
//! argument bytes; the answer goes to the caller's reply handle as a postcard `Result`. The core
//! never runs user code: it hands the host one [`crate::node::Output::RunCall`] at a time
//! (a context's main thread runs one call at a time) and takes the result back.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::handle::Handle;
use crate::ids::ContextId;

/// Names one outgoing call made by this context; unique for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Names one incoming call handed to the host to run; unique for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// What a call asks for: a function name and its serialized arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    /// The registered function's name.
    pub function: String,
    /// Its arguments, serialized by the caller (postcard in arbor's drivers); opaque to the core.
    pub args: Bytes,
}

/// Borrowed bytes that serialize as one byte string (postcard: a length and the bytes).
struct ByteStr<'a>(&'a [u8]);

impl Serialize for ByteStr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
struct RequestOut<'a> {
    function: &'a str,
    args: ByteStr<'a>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    function: &'a str,
    args: &'a [u8],
}

#[derive(Serialize)]
enum ResultOut<'a> {
    Ok(ByteStr<'a>),
    Err { kind: CallErrorKind, message: &'a str, context: &'a str },
}

#[derive(Deserialize)]
enum ResultIn<'a> {
    Ok(&'a [u8]),
    Err { kind: CallErrorKind, message: &'a str, context: &'a str },
}

/// A body that is not a valid postcard request or result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// postcard could not decode it.
    Malformed,
    /// It decoded, but bytes were left over after the value.
    TrailingBytes(usize),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed => f.write_str("malformed postcard body"),
            BodyError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the body"),
        }
    }
}

impl core::error::Error for BodyError {}

/// Decodes a whole body as `T`, borrowing from it. The body's length is already bounded by the
/// maximum message size, and borrowed strings and byte slices make postcard allocate nothing of
/// a size the peer chose.
fn decode_whole<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| BodyError::Malformed)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(BodyError::TrailingBytes(rest.len()))
    }
}

/// A postcard output that appends byte strings with one `memcpy` (postcard's own `Vec`
/// flavours push them a byte at a time).
struct VecOut(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Serializes into a vector sized up front (`hint` plus room for lengths), so a large argument
/// or result is copied once, in one piece, rather than byte by byte into a growing vector.
fn encode<T: Serialize>(value: &T, hint: usize) -> Bytes {
    let out = VecOut(Vec::with_capacity(hint + 32));
    // Serializing plain structs of strings and bytes into a Vec cannot fail.
    Bytes::from(postcard::serialize_with_flavor(value, out).unwrap_or_default())
}

/// Counts the bytes postcard would write, for sizing a buffer before writing into it.
struct Count(usize);

impl postcard::ser_flavors::Flavor for Count {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

/// Appends `n` as postcard writes a length (LEB128: seven bits a byte, low bits first).
fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A CALL_FUNCTION body built ahead of the call, with the function it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBody {
    function: String,
    body: Bytes,
}

impl RequestBody {
    /// The function the request names.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The encoded body.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Never true: a body holds at least the function's name and the arguments' length.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.body
    }
}

impl CallRequest {
    /// The CALL_FUNCTION body for `function`, its arguments serialized by postcard straight
    /// into it: one allocation of the exact size and no copy of the serialized arguments, which
    /// matters for large ones (a 16 MiB argument would otherwise be serialized into a growing
    /// vector, then copied into the body: two fresh 16 MiB buffers and their page faults). The
    /// same bytes as [`CallRequest::encode_parts`] given `postcard::to_allocvec(args)`.
    pub fn encode_args<T: Serialize + ?Sized>(function: &str, args: &T) -> postcard::Result<RequestBody> {
        let size = postcard::serialize_with_flavor(args, Count(0))?;
        let mut out = Vec::with_capacity(function.len() + size + 20);
        push_varint(&mut out, function.len());
        out.extend_from_slice(function.as_bytes());
        push_varint(&mut out, size);
        let head = out.len();
        let out = postcard::serialize_with_flavor(args, VecOut(out))?;
        let body = if out.len() - head == size {
            Bytes::from(out)
        } else {
            // A `Serialize` that writes differently each time: fall back to what it wrote last.
            CallRequest::encode_parts(function, &out[head..])
        };
        Ok(RequestBody { function: function.to_string(), body })
    }

    /// The CALL_FUNCTION body for `function` and already-serialized `args`, as a
    /// [`RequestBody`].
    pub fn body(function: &str, args: &[u8]) -> RequestBody {
        RequestBody { function: function.to_string(), body: CallRequest::encode_parts(function, args) }
    }

    /// A request for `function` with already-serialized arguments.
    pub fn new(function: impl Into<String>, args: impl Into<Bytes>) -> CallRequest {
        CallRequest { function: function.into(), args: args.into() }
    }

    /// The CALL_FUNCTION body.
    pub fn encode(&self) -> Bytes {
        CallRequest::encode_parts(&self.function, &self.args)
    }

    /// The CALL_FUNCTION body for `function` and `args`, without building a request first.
    pub fn encode_parts(function: &str, args: &[u8]) -> Bytes {
        encode(&RequestOut { function, args: ByteStr(args) }, function.len() + args.len())
    }

    /// Parses a CALL_FUNCTION body; the arguments share the body's buffer.
    pub fn decode(body: &Bytes) -> Result<CallRequest, BodyError> {
        let req: RequestIn<'_> = decode_whole(body)?;
        Ok(CallRequest { function: req.function.to_string(), args: body.slice_ref(req.args) })
    }
}

/// What kind of failure a call met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallErrorKind {
    /// The function ran and returned an error.
    Failed,
    /// No function of that name is registered in the callee.
    UnknownFunction,
    /// The callee could not decode the request, or the caller could not decode the answer.
    Malformed,
    /// The callee was shutting down and refused the call, or this context shut down first.
    ShuttingDown,
    /// The callee disconnected before answering.
    Disconnected,
    /// A router could not deliver the call (the dead message's reason is the message).
    Undeliverable,
    /// The call or its result was larger than the maximum message size.
    TooLarge,
}

/// A failed call: what kind of failure, a message, and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// The kind of failure.
    pub kind: CallErrorKind,
    /// What went wrong, in words.
    pub message: String,
    /// Where: the context that reported it and, for [`CallErrorKind::Failed`], any backtrace or
    /// detail the function gave.
    pub context: String,
}

impl CallError {
    /// An error of `kind` with a message and context text.
    pub fn new(kind: CallErrorKind, message: impl Into<String>, context: impl Into<String>) -> CallError {
        CallError { kind, message: message.into(), context: context.into() }
    }

    /// What a host answers for a function it does not know.
    pub fn unknown_function(function: &str, context: impl Into<String>) -> CallError {
        CallError::new(
            CallErrorKind::UnknownFunction,
            alloc::format!("no function named {function:?}"),
            context,
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {} ({})", self.kind, self.message, self.context)
    }
}

impl core::error::Error for CallError {}

/// The outcome of a call: the function's serialized return value, or why there is none.
pub type CallResult = Result<Bytes, CallError>;

/// The body of a call's answer.
pub fn encode_result(result: &CallResult) -> Bytes {
    match result {
        Ok(value) => encode(&ResultOut::Ok(ByteStr(value)), value.len()),
        Err(e) => encode(
            &ResultOut::Err { kind: e.kind, message: &e.message, context: &e.context },
            e.message.len() + e.context.len(),
        ),
    }
}

/// Parses an answer body; the value shares the body's buffer.
pub fn decode_result(body: &Bytes) -> Result<CallResult, BodyError> {
    Ok(match decode_whole::<ResultIn<'_>>(body)? {
        ResultIn::Ok(value) => Ok(body.slice_ref(value)),
        ResultIn::Err { kind, message, context } => Err(CallError::new(kind, message, context)),
    })
}

/// An outgoing call awaiting its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The caller's name for it.
    pub call: CallId,
    /// The context it was sent to; only that context may answer it (dead replies aside).
    pub target: ContextId,
}

/// The caller's table of outgoing calls, keyed by reply handle. Every entry leaves it exactly
/// once — by its answer, a dead message, its target's disconnection or this context's exit — and
/// leaving is what resolves the call, so no call can be resolved twice.
#[derive(Clone, Debug, Default)]
pub struct PendingCalls {
    by_handle: BTreeMap<Handle, Pending>,
}

impl PendingCalls {
    /// Records a call sent with `reply_to = handle`.
    pub fn insert(&mut self, handle: Handle, pending: Pending) {
        debug_assert!(!self.by_handle.contains_key(&handle), "reply handles are never reused");
        self.by_handle.insert(handle, pending);
    }

    /// The call waiting on `handle`, without resolving it.
    pub fn get(&self, handle: Handle) -> Option<Pending> {
        self.by_handle.get(&handle).copied()
    }

    /// Resolves the call waiting on `handle`.
    pub fn take(&mut self, handle: Handle) -> Option<Pending> {
        self.by_handle.remove(&handle)
    }

    /// Resolves every call for which `lost` is true, in reply-handle (= issue) order.
    pub fn take_where(&mut self, mut lost: impl FnMut(ContextId) -> bool) -> Vec<Pending> {
        let handles: Vec<Handle> =
            self.by_handle.iter().filter(|(_, p)| lost(p.target)).map(|(h, _)| *h).collect();
        handles.into_iter().filter_map(|h| self.by_handle.remove(&h)).collect()
    }

    /// How many calls are waiting.
    pub fn len(&self) -> usize {
        self.by_handle.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_handle.is_empty()
    }
}

/// An incoming call: who asked, where the answer goes, and what to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The host's name for it.
    pub id: JobId,
    /// The calling context.
    pub caller: ContextId,
    /// The caller's reply handle, [`Handle::NONE`] for `call_no_reply`.
    pub reply_to: Handle,
    /// What to run.
    pub request: CallRequest,
}

/// Whether the CALL_FUNCTION channel still takes calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Calls are queued and run.
    Open,
    /// Shutdown has begun: nothing new runs (docs/shutdown.md step 1).
    Closed,
}

/// Who to answer for the call the main thread is running (its request went to the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    /// The host's name for it.
    pub id: JobId,
    /// The calling context.
    pub caller: ContextId,
    /// The caller's reply handle, [`Handle::NONE`] for `call_no_reply`.
    pub reply_to: Handle,
}

/// The callee's side: a FIFO of calls and at most one running on the main thread.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    channel: Channel,
    queue: VecDeque<Job>,
    running: Option<Running>,
    next_job: u64,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher { channel: Channel::Open, queue: VecDeque::new(), running: None, next_job: 0 }
    }
}

impl Dispatcher {
    /// The channel's state.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Queues a call, or gives it back if the channel is closed.
    pub fn enqueue(
        &mut self,
        caller: ContextId,
        reply_to: Handle,
        request: CallRequest,
    ) -> Result<JobId, Job> {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let job = Job { id, caller, reply_to, request };
        match self.channel {
            Channel::Open => {
                self.queue.push_back(job);
                Ok(id)
            }
            Channel::Closed => Err(job),
        }
    }

    /// Calls waiting behind the one running.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next call to hand to the main thread, if it is idle and the channel open. The
    /// request moves to the host; the dispatcher keeps who to answer.
    pub fn start_next(&mut self) -> Option<Job> {
        if self.running.is_some() || self.channel == Channel::Closed {
            return None;
        }
        let job = self.queue.pop_front()?;
        self.running = Some(Running { id: job.id, caller: job.caller, reply_to: job.reply_to });
        Some(job)
    }

    /// The main thread finished `job`; returns who to answer.
    pub fn finish(&mut self, job: JobId) -> Option<Running> {
        match self.running {
            Some(r) if r.id == job => self.running.take(),
            _ => None,
        }
    }

    /// Closes the channel; returns the queued calls that will now never run. The running call,
    /// if any, is left to finish (or hang) on its own: nothing waits for it.
    pub fn close(&mut self) -> Vec<Job> {
        self.channel = Channel::Closed;
        self.queue.drain(..).collect()
    }

    /// The call the main thread is running, if any.
    pub fn running(&self) -> Option<Running> {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_sharing_the_body() {
        let req = CallRequest::new("add", &b"\x01\x02"[..]);
        let body = req.encode();
        assert_eq!(CallRequest::decode(&body), Ok(req));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_refused() {
        let mut body = CallRequest::new("f", "").encode().to_vec();
        body.push(0);
        assert_eq!(CallRequest::decode(&Bytes::from(body)), Err(BodyError::TrailingBytes(1)));
        assert_eq!(
            CallRequest::decode(&Bytes::from_static(b"\xff\xff\xff\xff\xff")),
            Err(BodyError::Malformed)
        );
        // A length prefix claiming far more than the body holds allocates nothing and fails.
        assert_eq!(
            CallRequest::decode(&Bytes::from_static(b"\xff\xff\xff\xff\x0f")),
            Err(BodyError::Malformed)
        );
    }

    #[test]
    fn results_round_trip() {
        let ok: CallResult = Ok(Bytes::from_static(b"42"));
        assert_eq!(decode_result(&encode_result(&ok)), Ok(ok));
        let err: CallResult = Err(CallError::new(CallErrorKind::Failed, "boom", "context 3"));
        assert_eq!(decode_result(&encode_result(&err)), Ok(err));
    }

    #[test]
    fn dispatcher_runs_one_call_at_a_time_in_order() {
        let mut d = Dispatcher::default();
        let a = d.enqueue(ContextId(0), Handle(1000), CallRequest::new("a", "")).unwrap();
        let b = d.enqueue(ContextId(0), Handle(1001), CallRequest::new("b", "")).unwrap();
        assert_eq!(d.start_next().map(|j| j.id), Some(a));
        assert_eq!(d.start_next(), None, "main thread busy");
        assert_eq!(d.finish(b), None, "not running");
        assert_eq!(d.finish(a).map(|j| j.reply_to), Some(Handle(1000)));
        assert_eq!(d.start_next().map(|j| j.id), Some(b));
    }

    #[test]
    fn closing_hands_back_queued_calls_and_refuses_new_ones() {
        let mut d = Dispatcher::default();
        d.enqueue(ContextId(0), Handle(1000), CallRequest::new("running", "")).unwrap();
        d.start_next();
        d.enqueue(ContextId(0), Handle(1001), CallRequest::new("queued", "")).unwrap();
        let refused = d.close();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].request.function, "queued");
        assert!(d.enqueue(ContextId(0), Handle(1002), CallRequest::new("late", "")).is_err());
        assert_eq!(d.start_next(), None);
        assert_eq!(d.running().map(|j| j.reply_to), Some(Handle(1000)));
    }

    /// Arguments serialized straight into the body give the same bytes as serializing them
    /// first and copying them in, whatever their size (the lengths' varints change width at
    /// 128 and 16 384 bytes).
    #[test]
    fn arguments_serialized_in_place_match_the_two_step_encoding() {
        for n in [0usize, 1, 126, 127, 128, 129, 16_383, 16_384, 70_000] {
            let args = (7u32, "text", serde_bytes_like(n));
            let two_step = CallRequest::encode_parts("f", &postcard::to_allocvec(&args).unwrap());
            let in_place = CallRequest::encode_args("f", &args).unwrap();
            assert_eq!(in_place.bytes(), &two_step, "{n} bytes");
            assert_eq!(in_place.function(), "f");
            let decoded = CallRequest::decode(in_place.bytes()).unwrap();
            assert_eq!(decoded.args, postcard::to_allocvec(&args).unwrap());
        }
        let long_name = "g".repeat(300);
        let in_place = CallRequest::encode_args(&long_name, &()).unwrap();
        assert_eq!(in_place.bytes(), &CallRequest::encode_parts(&long_name, &[]));
    }

    /// A byte string postcard writes with one `serialize_bytes`.
    fn serde_bytes_like(n: usize) -> ByteVec {
        ByteVec((0..n).map(|i| i as u8).collect())
    }

    struct ByteVec(Vec<u8>);

    impl Serialize for ByteVec {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}
