//! Calls: request and result bodies, the caller's pending-call table, and the callee's
//! dispatcher queue (docs/shutdown.md "Calls").
//!
//! A call is a CALL_FUNCTION message whose postcard body names a function and carries its
//! argument bytes; the answer goes to the caller's reply handle as a postcard `Result`. The core
//! never runs user code: it hands the host one [`crate::node::Output::RunCall`] at a time
//! (a context's main thread runs one call at a time) and takes the result back.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::arena::BodyArena;
use crate::handle::Handle;
use crate::ids::ContextId;
use crate::time::Instant;

/// Names one outgoing call made by this context; unique for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Names one incoming call handed to the host to run; unique for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// A fingerprint of a function's argument and result types, carried in every typed request so
/// the callee can refuse a call whose types differ from its own before decoding anything
/// (postcard is not self-describing: `(2u8, 3u8)` decodes as an `(i32, i32)` of garbage).
///
/// It hashes (64-bit FNV-1a) the types' names as `core::any::type_name` gives them — full paths
/// with generic parameters — after treating borrowed forms as the owned types they encode like:
/// `&T` as `T`, `str` as `String`, a slice `[T]` as `Vec<T>` (an array `[T; N]` stays an array:
/// it encodes without a length). So it sees a different type, width or arity, and a renamed or
/// moved type, while `call(id, "greet", "text")` still matches a function taking `String`. It
/// cannot see a type that changed shape but kept its path (a struct that gained a field between
/// two builds: version such types by name), and it reports a mismatch between other types that
/// encode alike but are named differently (`Box<T>` and `T`, `Cow<str>` and `String`, a newtype
/// and what it wraps). Type names are stable within one build of a program, which every context
/// of a tree normally runs; builds by different compilers may name types differently.
///
/// On the wire it is 16 bytes, both hashes little-endian: fixed-size, so writing and reading it
/// costs a copy, not two ten-byte varints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "[u8; 16]", from = "[u8; 16]")]
pub struct TypeFingerprint {
    /// Of the argument type.
    pub args: u64,
    /// Of the result type.
    pub result: u64,
}

impl From<TypeFingerprint> for [u8; 16] {
    fn from(f: TypeFingerprint) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&f.args.to_le_bytes());
        out[8..].copy_from_slice(&f.result.to_le_bytes());
        out
    }
}

impl From<[u8; 16]> for TypeFingerprint {
    fn from(b: [u8; 16]) -> TypeFingerprint {
        let (args, result) = b.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        TypeFingerprint { args: word(args), result: word(result) }
    }
}

impl TypeFingerprint {
    /// In `result`: the caller takes no result (`call_no_reply`), so any result type will do.
    pub const ANY_RESULT: u64 = 0;

    /// The fingerprint of a function taking `A` and returning `R`.
    pub fn of<A: ?Sized, R: ?Sized>() -> TypeFingerprint {
        TypeFingerprint {
            args: type_hash(core::any::type_name::<A>()),
            result: type_hash(core::any::type_name::<R>()),
        }
    }

    /// The fingerprint of a call taking `A` whose result nobody reads.
    pub fn of_args<A: ?Sized>() -> TypeFingerprint {
        TypeFingerprint { args: type_hash(core::any::type_name::<A>()), result: TypeFingerprint::ANY_RESULT }
    }

    /// Whether a caller with these types may call a function with the callee's.
    pub fn accepts(&self, callee: &TypeFingerprint) -> bool {
        self.args == callee.args
            && (self.result == callee.result || self.result == TypeFingerprint::ANY_RESULT)
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const START: Fnv = Fnv(0xcbf2_9ce4_8422_2325);

    fn write(&mut self, text: &str) {
        for b in text.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
fn fnv1a(text: &str) -> u64 {
    let mut h = Fnv::START;
    h.write(text);
    h.0
}

/// The hash of a type name with borrowed forms read as the owned types they encode like (see
/// [`TypeFingerprint`]).
fn type_hash(name: &str) -> u64 {
    let mut h = Fnv::START;
    // Most names have nothing to read differently: hash them as they are (the same bytes the
    // canonical walk would feed), which is several times cheaper.
    if name.bytes().any(|b| b == b'&' || b == b'[') || name.contains("str") {
        canonical(name, &mut h);
    } else {
        h.write(name);
    }
    h.0
}

/// Feeds `name` to `h`, dropping `&` / `&mut `, reading the token `str` as `String` and a slice
/// `[T]` as `Vec<T>`.
fn canonical(name: &str, h: &mut Fnv) {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' => {
                i += 1;
                if name[i..].starts_with("mut ") {
                    i += 4;
                }
            }
            b'[' => {
                let Some(len) = matching_bracket(&name[i..]) else {
                    h.write(&name[i..]);
                    return;
                };
                let inner = &name[i + 1..i + len];
                if has_top_level_semicolon(inner) {
                    h.write("[");
                    canonical(inner, h);
                    h.write("]");
                } else {
                    h.write("alloc::vec::Vec<");
                    canonical(inner, h);
                    h.write(">");
                }
                i += len + 1;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                match &name[start..i] {
                    "str" | "core::primitive::str" => h.write("alloc::string::String"),
                    token => h.write(token),
                }
            }
            _ => {
                let start = i;
                i += 1;
                while i < bytes.len() && !name.is_char_boundary(i) {
                    i += 1;
                }
                h.write(&name[start..i]);
            }
        }
    }
}

/// The offset of the `]` matching the `[` that `text` starts with.
fn matching_bracket(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'[' | b'(' | b'<' => depth += 1,
            b']' | b')' | b'>' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (b == b']').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn has_top_level_semicolon(text: &str) -> bool {
    let mut depth = 0i32;
    text.bytes().any(|b| {
        match b {
            b'[' | b'(' | b'<' => depth += 1,
            b']' | b')' | b'>' => depth -= 1,
            _ => {}
        }
        b == b';' && depth == 0
    })
}

/// What a request says about itself besides the function and its arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The caller's types, checked by the callee before decoding (`None`: unchecked, for
    /// hosts that build requests from raw bytes).
    pub types: Option<TypeFingerprint>,
    /// How long the caller waits for the answer. The caller's call fails with
    /// [`CallErrorKind::Timeout`] when it has passed; the callee never starts a call still
    /// queued once this long has passed since it arrived (docs/shutdown.md "Deadlines").
    pub timeout: Option<Duration>,
}

/// A function's name as a received call carries it.
///
/// Names are short ("echo", "fetch_config"), and every call a context receives has one: a name
/// of up to [`FunctionName::INLINE`] bytes is kept in place, so taking a call allocates nothing
/// for it; a longer one is allocated. It reads as a `str` (`Deref`, `as_str`, `==` with `&str`),
/// prints as one, and orders and compares as one.
#[derive(Clone)]
pub struct FunctionName(NameRepr);

#[derive(Clone)]
enum NameRepr {
    Inline { len: u8, bytes: [u8; FunctionName::INLINE] },
    Heap(Box<str>),
}

impl FunctionName {
    /// The longest name kept without an allocation, in bytes.
    pub const INLINE: usize = 22;

    /// The name, as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only a `str` is ever stored, so the check always passes; it is the price of
            // keeping the bytes in place without `unsafe`, a few instructions for a short name.
            NameRepr::Inline { len, bytes } => {
                core::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            NameRepr::Heap(name) => name,
        }
    }

    /// The name's bytes (no check needed).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            NameRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            NameRepr::Heap(name) => name.as_bytes(),
        }
    }
}

impl From<&str> for FunctionName {
    fn from(name: &str) -> FunctionName {
        if name.len() <= FunctionName::INLINE {
            let mut bytes = [0; FunctionName::INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            FunctionName(NameRepr::Inline { len: name.len() as u8, bytes })
        } else {
            FunctionName(NameRepr::Heap(name.into()))
        }
    }
}

impl From<String> for FunctionName {
    fn from(name: String) -> FunctionName {
        if name.len() <= FunctionName::INLINE {
            FunctionName::from(name.as_str())
        } else {
            FunctionName(NameRepr::Heap(name.into_boxed_str()))
        }
    }
}

impl From<&String> for FunctionName {
    fn from(name: &String) -> FunctionName {
        FunctionName::from(name.as_str())
    }
}

impl From<&mut str> for FunctionName {
    fn from(name: &mut str) -> FunctionName {
        FunctionName::from(&*name)
    }
}

impl From<Box<str>> for FunctionName {
    fn from(name: Box<str>) -> FunctionName {
        if name.len() <= FunctionName::INLINE {
            FunctionName::from(&*name)
        } else {
            FunctionName(NameRepr::Heap(name))
        }
    }
}

impl From<alloc::borrow::Cow<'_, str>> for FunctionName {
    fn from(name: alloc::borrow::Cow<'_, str>) -> FunctionName {
        match name {
            alloc::borrow::Cow::Borrowed(name) => FunctionName::from(name),
            alloc::borrow::Cow::Owned(name) => FunctionName::from(name),
        }
    }
}

impl From<char> for FunctionName {
    fn from(c: char) -> FunctionName {
        FunctionName::from(c.encode_utf8(&mut [0; 4]) as &str)
    }
}

impl From<FunctionName> for String {
    fn from(name: FunctionName) -> String {
        match name.0 {
            NameRepr::Heap(name) => name.into_string(),
            NameRepr::Inline { .. } => String::from(name.as_str()),
        }
    }
}

impl core::ops::Deref for FunctionName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for FunctionName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl core::borrow::Borrow<str> for FunctionName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for FunctionName {
    fn eq(&self, other: &FunctionName) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for FunctionName {}

impl PartialOrd for FunctionName {
    fn partial_cmp(&self, other: &FunctionName) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FunctionName {
    fn cmp(&self, other: &FunctionName) -> core::cmp::Ordering {
        // `str` orders by its bytes.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl core::hash::Hash for FunctionName {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so `Borrow<str>` lookups find it.
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for FunctionName {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for FunctionName {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for FunctionName {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<FunctionName> for str {
    fn eq(&self, other: &FunctionName) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<FunctionName> for &str {
    fn eq(&self, other: &FunctionName) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// What a call asks for: a function name and its serialized arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    /// The registered function's name.
    pub function: FunctionName,
    /// Its arguments, serialized by the caller (postcard in arbor's drivers); opaque to the core.
    pub args: Bytes,
    /// The caller's types and timeout.
    pub meta: RequestMeta,
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
    types: Option<TypeFingerprint>,
    timeout_ns: Option<u64>,
}

/// The request's head as postcard reads it; the trailer after it is read by hand
/// ([`read_meta`]), held to postcard's own reading of [`RequestInFull`] by the tests.
#[derive(Deserialize)]
struct RequestIn<'a> {
    function: &'a str,
    args: &'a [u8],
}

#[cfg(test)]
#[derive(Deserialize, Debug, PartialEq)]
struct RequestInFull<'a> {
    function: &'a str,
    args: &'a [u8],
    types: Option<TypeFingerprint>,
    timeout_ns: Option<u64>,
}

/// Reads a request's trailer as postcard would (an option is a 0 or 1 byte; the fingerprint 16
/// bytes; a `u64` a LEB128 varint of at most 10 bytes whose last carries at most one bit),
/// returning what is left.
fn read_meta(mut rest: &[u8]) -> Result<(RequestMeta, &[u8]), BodyError> {
    fn varint(rest: &mut &[u8]) -> Result<u64, BodyError> {
        let mut n = 0u64;
        for i in 0..10 {
            let (&b, tail) = rest.split_first().ok_or(BodyError::Malformed)?;
            *rest = tail;
            if i == 9 && b > 1 {
                return Err(BodyError::Malformed);
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(BodyError::Malformed)
    }
    fn tag(rest: &mut &[u8]) -> Result<bool, BodyError> {
        let (&b, tail) = rest.split_first().ok_or(BodyError::Malformed)?;
        *rest = tail;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(BodyError::Malformed),
        }
    }
    let types = match tag(&mut rest)? {
        true => {
            let (bytes, tail) = rest.split_first_chunk::<16>().ok_or(BodyError::Malformed)?;
            rest = tail;
            Some(TypeFingerprint::from(*bytes))
        }
        false => None,
    };
    let timeout_ns = match tag(&mut rest)? {
        true => Some(varint(&mut rest)?),
        false => None,
    };
    Ok((RequestMeta { types, timeout: timeout_ns.map(Duration::from_nanos) }, rest))
}

/// The wire form of a timeout: nanoseconds, saturating (a timeout of centuries is no timeout
/// anyone waits out).
fn timeout_ns(meta: &RequestMeta) -> Option<u64> {
    meta.timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
}

/// Appends the part of a request body after its arguments as postcard writes it (an option is
/// a 0 or 1 byte, then the value; the fingerprint 16 bytes; a `u64` a LEB128 varint), by hand: it is on every call's path,
/// and postcard's serializer costs several times as much for these few bytes. The tests hold it
/// to postcard's own encoding of [`RequestOut`].
fn push_meta(out: &mut Vec<u8>, meta: &RequestMeta) {
    fn varint(buf: &mut [u8; 32], len: &mut usize, mut n: u64) {
        while n >= 0x80 {
            buf[*len] = (n as u8 & 0x7f) | 0x80;
            *len += 1;
            n >>= 7;
        }
        buf[*len] = n as u8;
        *len += 1;
    }
    // At most 1 + 16 + 1 + 10 bytes, gathered on the stack and appended at once.
    let mut buf = [0u8; 32];
    let mut len = 0;
    match meta.types {
        Some(t) => {
            buf[0] = 1;
            buf[1..17].copy_from_slice(&<[u8; 16]>::from(t));
            len = 17;
        }
        None => len += 1,
    }
    match timeout_ns(meta) {
        Some(ns) => {
            buf[len] = 1;
            len += 1;
            varint(&mut buf, &mut len, ns);
        }
        None => len += 1,
    }
    out.extend_from_slice(&buf[..len]);
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
/// A small body is carved out of `arena`, when there is one, instead.
fn encode_in<T: Serialize>(arena: Option<&mut BodyArena>, value: &T, hint: usize) -> Bytes {
    if let Some(body) = arena.and_then(|a| a.encode(value, hint)) {
        return body;
    }
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

/// How many bytes [`push_varint`] writes for `n`.
fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
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
#[derive(Clone, PartialEq, Eq)]
pub struct RequestBody {
    body: Bytes,
    /// Where the function's name is in `body` (it opens the body, after its length): the name
    /// is read from there rather than kept in a `String` of its own, which cost an allocation on
    /// every call for a name wanted only in the error of a call refused before it is sent.
    name: (usize, usize),
    timeout: Option<Duration>,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("function", &self.function())
            .field("len", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RequestBody {
    /// A body whose first field is `function` (postcard: its length, then its bytes).
    fn new(function: &str, body: Bytes, timeout: Option<Duration>) -> RequestBody {
        let start = varint_len(function.len());
        debug_assert_eq!(body.get(start..start + function.len()), Some(function.as_bytes()));
        RequestBody { body, name: (start, start + function.len()), timeout }
    }

    /// The function the request names.
    pub fn function(&self) -> &str {
        // Written from a `&str` by `RequestBody::new`'s callers, so always UTF-8.
        self.body.get(self.name.0..self.name.1).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("")
    }

    /// The timeout written into it, which the caller's node also arms as the call's deadline.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
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
        CallRequest::encode_args_with(function, args, RequestMeta::default())
    }

    /// [`CallRequest::encode_args`] with the caller's types and timeout.
    pub fn encode_args_with<T: Serialize + ?Sized>(
        function: &str,
        args: &T,
        meta: RequestMeta,
    ) -> postcard::Result<RequestBody> {
        let size = postcard::serialize_with_flavor(args, Count(0))?;
        let mut out = Vec::with_capacity(function.len() + size + 48);
        push_varint(&mut out, function.len());
        out.extend_from_slice(function.as_bytes());
        push_varint(&mut out, size);
        let head = out.len();
        let out = postcard::serialize_with_flavor(args, VecOut(out))?;
        let body = if out.len() - head == size {
            let mut out = out;
            push_meta(&mut out, &meta);
            Bytes::from(out)
        } else {
            // A `Serialize` that writes differently each time: fall back to what it wrote last.
            CallRequest::encode_parts_with(function, &out[head..], &meta)
        };
        Ok(RequestBody::new(function, body, meta.timeout))
    }

    /// The CALL_FUNCTION body for `function` and already-serialized `args`, as a
    /// [`RequestBody`].
    pub fn body(function: &str, args: &[u8]) -> RequestBody {
        CallRequest::body_with(function, args, RequestMeta::default())
    }

    /// [`CallRequest::body`] with the caller's types and timeout.
    pub fn body_with(function: &str, args: &[u8], meta: RequestMeta) -> RequestBody {
        RequestBody::new(function, CallRequest::encode_parts_with(function, args, &meta), meta.timeout)
    }

    /// A request for `function` with already-serialized arguments.
    pub fn new(function: impl Into<FunctionName>, args: impl Into<Bytes>) -> CallRequest {
        CallRequest { function: function.into(), args: args.into(), meta: RequestMeta::default() }
    }

    /// The same request with the caller's types and timeout.
    pub fn with_meta(mut self, meta: RequestMeta) -> CallRequest {
        self.meta = meta;
        self
    }

    /// The CALL_FUNCTION body.
    pub fn encode(&self) -> Bytes {
        CallRequest::encode_parts_with(&self.function, &self.args, &self.meta)
    }

    /// The CALL_FUNCTION body for `function` and `args`, without building a request first.
    pub fn encode_parts(function: &str, args: &[u8]) -> Bytes {
        CallRequest::encode_parts_with(function, args, &RequestMeta::default())
    }

    fn encode_parts_with(function: &str, args: &[u8], meta: &RequestMeta) -> Bytes {
        CallRequest::encode_parts_in(None, function, args, meta)
    }

    fn encode_parts_in(
        arena: Option<&mut BodyArena>,
        function: &str,
        args: &[u8],
        meta: &RequestMeta,
    ) -> Bytes {
        let out =
            RequestOut { function, args: ByteStr(args), types: meta.types, timeout_ns: timeout_ns(meta) };
        encode_in(arena, &out, function.len() + args.len() + 24)
    }

    /// [`CallRequest::body`], a small one carved out of a node's arena.
    pub(crate) fn body_in(arena: &mut BodyArena, function: &str, args: &[u8]) -> RequestBody {
        let meta = RequestMeta::default();
        let body = CallRequest::encode_parts_in(Some(arena), function, args, &meta);
        RequestBody::new(function, body, meta.timeout)
    }

    /// Parses a CALL_FUNCTION body; the arguments share the body's buffer.
    pub fn decode(body: &Bytes) -> Result<CallRequest, BodyError> {
        let (req, rest) =
            postcard::take_from_bytes::<RequestIn<'_>>(body).map_err(|_| BodyError::Malformed)?;
        let (meta, rest) = read_meta(rest)?;
        if !rest.is_empty() {
            return Err(BodyError::TrailingBytes(rest.len()));
        }
        Ok(CallRequest { function: FunctionName::from(req.function), args: body.slice_ref(req.args), meta })
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
    /// The caller's argument or result types are not the callee's ([`TypeFingerprint`]); the
    /// message names both sides.
    TypeMismatch,
    /// The call's deadline passed before its answer arrived; the callee was told to drop it.
    Timeout,
    /// The caller gave up on the call (dropped its future); the callee was told to drop it.
    Cancelled,
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
    encode_result_in(None, result)
}

/// [`encode_result`], a small one carved out of a node's arena.
pub(crate) fn encode_result_in(arena: Option<&mut BodyArena>, result: &CallResult) -> Bytes {
    match result {
        Ok(value) => encode_in(arena, &ResultOut::Ok(ByteStr(value)), value.len()),
        Err(e) => encode_in(
            arena,
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
    /// When it fails with [`CallErrorKind::Timeout`] if no answer came.
    pub deadline: Option<Instant>,
}

/// The caller's table of outgoing calls, keyed by reply handle. Every entry leaves it exactly
/// once — by its answer, a dead message, its deadline, being cancelled, its target's
/// disconnection or this context's exit — and leaving is what resolves the call, so no call can
/// be resolved twice.
///
/// Reply handles are handed out in increasing order ([`crate::handle::ReplyHandles`]) and most
/// calls are answered soon, so the table is a window of slots over the newest handles, found by
/// subtraction: a call costs no tree node and no search. A call still waiting when the window
/// has moved [`PendingCalls::WINDOW`] handles past it (a hung call behind many quick ones, or
/// many calls in flight) moves to an ordered map, so the window never grows past that however
/// long a call waits. Every traversal is in handle order, as one ordered map's would be.
#[derive(Clone, Debug, Default)]
pub struct PendingCalls {
    /// Slot `i` is the call sent with handle `base + i`, if it still waits (a handle used for
    /// something else, or resolved, leaves its slot empty). The front slot is never empty.
    window: VecDeque<Option<Pending>>,
    base: u32,
    /// Full slots in `window`.
    in_window: usize,
    /// Calls older than the window, by handle (each below `base`).
    old: BTreeMap<Handle, Pending>,
    /// The entries with a deadline, earliest first; kept in step with the entries.
    deadlines: BTreeSet<(Instant, Handle)>,
}

impl PendingCalls {
    /// How many of the newest handles the window spans at most.
    pub const WINDOW: usize = 1024;

    /// Records a call sent with `reply_to = handle`, a handle newer than every one recorded.
    pub fn insert(&mut self, handle: Handle, pending: Pending) {
        debug_assert!(self.get(handle).is_none(), "reply handles are never reused");
        if let Some(at) = pending.deadline {
            self.deadlines.insert((at, handle));
        }
        let end = self.base as u64 + self.window.len() as u64;
        if self.window.is_empty() || u64::from(handle.0) < end {
            // A first entry, or (not from this node's handles) one out of order: the window
            // restarts at it, and whatever it held is kept, in order, in the map.
            self.retire_window();
            if !self.old.is_empty() && self.old.last_key_value().is_some_and(|(h, _)| *h >= handle) {
                self.old.insert(handle, pending);
                return;
            }
            self.base = handle.0;
        } else {
            let gap = u64::from(handle.0) - end;
            if gap >= Self::WINDOW as u64 {
                self.retire_window();
                self.base = handle.0;
            } else {
                self.window.extend(core::iter::repeat_n(None, gap as usize));
            }
        }
        self.window.push_back(Some(pending));
        self.in_window += 1;
        while self.window.len() > Self::WINDOW {
            self.retire_front();
        }
    }

    /// Moves every call in the window to the map.
    fn retire_window(&mut self) {
        while !self.window.is_empty() {
            self.retire_front();
        }
    }

    /// Moves the front slot's call (if any) to the map and drops the slot, then the empty slots
    /// behind it.
    fn retire_front(&mut self) {
        if let Some(Some(p)) = self.window.pop_front() {
            self.old.insert(Handle(self.base), p);
            self.in_window -= 1;
        }
        self.base = self.base.wrapping_add(1);
        self.trim();
    }

    /// Drops the empty slots at the front.
    fn trim(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base = self.base.wrapping_add(1);
        }
    }

    fn slot(&self, handle: Handle) -> Option<usize> {
        let i = handle.0.checked_sub(self.base)? as usize;
        (i < self.window.len()).then_some(i)
    }

    /// The call waiting on `handle`, without resolving it.
    pub fn get(&self, handle: Handle) -> Option<Pending> {
        match self.slot(handle) {
            Some(i) => self.window[i],
            None => self.old.get(&handle).copied(),
        }
    }

    /// Resolves the call waiting on `handle`.
    pub fn take(&mut self, handle: Handle) -> Option<Pending> {
        let pending = match self.slot(handle) {
            Some(i) => {
                let p = self.window[i].take()?;
                self.in_window -= 1;
                self.trim();
                p
            }
            None => self.old.remove(&handle)?,
        };
        if let Some(at) = pending.deadline {
            self.deadlines.remove(&(at, handle));
        }
        Some(pending)
    }

    /// Every waiting call with its handle, in handle order.
    fn entries(&self) -> impl Iterator<Item = (Handle, Pending)> + '_ {
        let window = self
            .window
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (Handle(self.base.wrapping_add(i as u32)), p)));
        self.old.iter().map(|(h, p)| (*h, *p)).chain(window)
    }

    /// Resolves the call named `call` (a linear search: for cancelling, which is rare).
    pub fn take_call(&mut self, call: CallId) -> Option<(Handle, Pending)> {
        let handle = self.entries().find(|(_, p)| p.call == call).map(|(h, _)| h)?;
        self.take(handle).map(|p| (handle, p))
    }

    /// Resolves every call for which `lost` is true, in reply-handle (= issue) order.
    pub fn take_where(&mut self, mut lost: impl FnMut(ContextId) -> bool) -> Vec<Pending> {
        let handles: Vec<Handle> = self.entries().filter(|(_, p)| lost(p.target)).map(|(h, _)| h).collect();
        handles.into_iter().filter_map(|h| self.take(h)).collect()
    }

    /// Resolves every call whose deadline is at or before `now`, earliest first.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(Handle, Pending)> {
        let mut out = Vec::new();
        while let Some(&(at, handle)) = self.deadlines.first() {
            if at > now {
                break;
            }
            if let Some(p) = self.take(handle) {
                out.push((handle, p));
            }
        }
        out
    }

    /// The earliest deadline of a waiting call.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// How many calls are waiting.
    pub fn len(&self) -> usize {
        self.old.len() + self.in_window
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// Past this, a call still queued is never started: its caller has given up (its timeout,
    /// counted from the call's arrival here, so never earlier than the caller's deadline).
    pub deadline: Option<Instant>,
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
    /// The caller cancelled it while it ran: its result is dropped, not sent.
    pub cancelled: bool,
}

/// What a cancel message found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The call was still queued: it is removed and never starts.
    Queued(Job),
    /// The call is running: the host is told (an async function can be dropped, a blocking
    /// one runs on) and its result will be dropped.
    Running(JobId),
    /// No such call here: it finished, or the cancel overtook nothing.
    Unknown,
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
        deadline: Option<Instant>,
    ) -> Result<JobId, Box<Job>> {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let job = Job { id, caller, reply_to, request, deadline };
        match self.channel {
            Channel::Open => {
                self.queue.push_back(job);
                Ok(id)
            }
            Channel::Closed => Err(Box::new(job)),
        }
    }

    /// Calls waiting behind the one running.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether [`Dispatcher::start_next`] has anything to look at: the main thread idle, the
    /// channel open and a call queued (the common case, checked on every message, is no).
    #[inline]
    pub fn may_start(&self) -> bool {
        self.running.is_none() && self.channel != Channel::Closed && !self.queue.is_empty()
    }

    /// The next call to hand to the main thread, if it is idle and the channel open. The
    /// request moves to the host; the dispatcher keeps who to answer. Calls whose deadline
    /// passed while they waited are never started: they come back in `expired`.
    pub fn start_next(&mut self, now: Instant, expired: &mut Vec<Job>) -> Option<Job> {
        if self.running.is_some() || self.channel == Channel::Closed {
            return None;
        }
        loop {
            let job = self.queue.pop_front()?;
            if job.deadline.is_some_and(|at| at <= now) {
                expired.push(job);
                continue;
            }
            self.running =
                Some(Running { id: job.id, caller: job.caller, reply_to: job.reply_to, cancelled: false });
            return Some(job);
        }
    }

    /// The caller `caller` gave up on its call answered at `reply_to`.
    pub fn cancel(&mut self, caller: ContextId, reply_to: Handle) -> Cancelled {
        if reply_to == Handle::NONE {
            return Cancelled::Unknown;
        }
        if let Some(r) = self.running.as_mut().filter(|r| r.caller == caller && r.reply_to == reply_to) {
            r.cancelled = true;
            return Cancelled::Running(r.id);
        }
        match self.queue.iter().position(|j| j.caller == caller && j.reply_to == reply_to) {
            Some(i) => self.queue.remove(i).map_or(Cancelled::Unknown, Cancelled::Queued),
            None => Cancelled::Unknown,
        }
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
        let now = Instant::ZERO;
        let mut expired = Vec::new();
        let a = d.enqueue(ContextId(0), Handle(1000), CallRequest::new("a", ""), None).unwrap();
        let b = d.enqueue(ContextId(0), Handle(1001), CallRequest::new("b", ""), None).unwrap();
        assert_eq!(d.start_next(now, &mut expired).map(|j| j.id), Some(a));
        assert_eq!(d.start_next(now, &mut expired), None, "main thread busy");
        assert_eq!(d.finish(b), None, "not running");
        assert_eq!(d.finish(a).map(|j| j.reply_to), Some(Handle(1000)));
        assert_eq!(d.start_next(now, &mut expired).map(|j| j.id), Some(b));
        assert!(expired.is_empty());
    }

    #[test]
    fn closing_hands_back_queued_calls_and_refuses_new_ones() {
        let mut d = Dispatcher::default();
        let mut expired = Vec::new();
        d.enqueue(ContextId(0), Handle(1000), CallRequest::new("running", ""), None).unwrap();
        d.start_next(Instant::ZERO, &mut expired);
        d.enqueue(ContextId(0), Handle(1001), CallRequest::new("queued", ""), None).unwrap();
        let refused = d.close();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].request.function, "queued");
        assert!(d.enqueue(ContextId(0), Handle(1002), CallRequest::new("late", ""), None).is_err());
        assert_eq!(d.start_next(Instant::ZERO, &mut expired), None);
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

    #[test]
    fn types_and_timeout_travel_in_the_body_and_in_place_encoding_matches() {
        let meta = RequestMeta {
            types: Some(TypeFingerprint::of::<(i32, i32), i32>()),
            timeout: Some(Duration::from_millis(250)),
        };
        let args = (2i32, 3i32);
        let in_place = CallRequest::encode_args_with("add", &args, meta).unwrap();
        let two_step = CallRequest::new("add", postcard::to_allocvec(&args).unwrap()).with_meta(meta);
        assert_eq!(in_place.bytes(), &two_step.encode());
        assert_eq!(in_place.timeout(), meta.timeout);
        assert_eq!(CallRequest::decode(in_place.bytes()), Ok(two_step));
    }

    #[test]
    fn fingerprints_tell_types_apart_and_are_stable() {
        assert_ne!(TypeFingerprint::of::<(u8, u8), i32>(), TypeFingerprint::of::<(i32, i32), i32>());
        assert_ne!(TypeFingerprint::of::<(i32, i32), i32>(), TypeFingerprint::of::<(i32, i32), u32>());
        // FNV-1a's published test vector: the hash is the same in every build.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(TypeFingerprint::of::<(i32, i32), ()>().args, fnv1a("(i32, i32)"));
    }

    #[test]
    fn a_request_body_names_its_function_from_the_body_whatever_the_names_length() {
        for len in [0, 1, 127, 128, 300, 16_384] {
            let name: String = core::iter::repeat_n('é', len).collect(); // two bytes each
            assert_eq!(varint_len(name.len()), postcard::to_allocvec(&name.len()).unwrap().len());
            let built = CallRequest::body(&name, b"xy");
            assert_eq!(built.function(), name);
            let typed = CallRequest::encode_args(&name, &(1u8, "two")).unwrap();
            assert_eq!(typed.function(), name);
            assert_eq!(CallRequest::decode(built.bytes()).unwrap().function, name);
        }
    }

    #[test]
    fn the_hand_read_trailer_reads_what_postcard_reads() {
        let head = CallRequest::encode_parts("f", b"xy");
        let head = &head[..head.len() - 2]; // without the two `None` tags
        let fp = b"\x01\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10";
        let with = |tail: &[u8]| [&fp[..], tail].concat();
        let trailers: Vec<Vec<u8>> = alloc::vec![
            b"\0\0".to_vec(),
            with(b"\0"),
            with(b"\x01\x80\x00"), // an overlong varint postcard accepts
            b"\0\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01".to_vec(), // u64::MAX
            b"\0\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02".to_vec(), // overflows
            b"\x02\0".to_vec(),    // a bad option tag
            fp[..9].to_vec(),      // a truncated fingerprint
            b"\0\x01\x80".to_vec(), // a truncated varint
            b"\0\0\0".to_vec(),    // a byte left over
            Vec::new(),
        ];
        for t in &trailers {
            let body = Bytes::from([head, t].concat());
            let ours = CallRequest::decode(&body).ok().map(|r| (r.meta.types, r.meta.timeout));
            let theirs = decode_whole::<RequestInFull<'_>>(&body)
                .ok()
                .map(|r| (r.types, r.timeout_ns.map(Duration::from_nanos)));
            assert_eq!(ours, theirs, "{t:x?}");
        }
    }

    #[test]
    fn the_hand_written_trailer_is_postcards_own() {
        let metas = [
            RequestMeta::default(),
            RequestMeta { types: Some(TypeFingerprint { args: u64::MAX, result: 0 }), timeout: None },
            RequestMeta {
                types: Some(TypeFingerprint::of::<u8, ()>()),
                timeout: Some(Duration::from_nanos(127)),
            },
            RequestMeta { types: None, timeout: Some(Duration::MAX) },
        ];
        for meta in metas {
            let in_place = CallRequest::encode_args_with("f", &(1u8, 2u64), meta).unwrap();
            let by_postcard =
                CallRequest::new("f", postcard::to_allocvec(&(1u8, 2u64)).unwrap()).with_meta(meta);
            assert_eq!(in_place.bytes(), &by_postcard.encode(), "{meta:?}");
        }
    }

    #[test]
    fn the_fast_path_hashes_what_the_canonical_walk_would() {
        for name in ["(i32, i32)", "u8", "()", "my_crate::Job<u64, bool>", "(f64, core::option::Option<u32>)"]
        {
            let mut walked = Fnv::START;
            canonical(name, &mut walked);
            assert_eq!(type_hash(name), walked.0, "{name}");
            assert_eq!(type_hash(name), fnv1a(name), "{name}");
        }
    }

    #[test]
    fn borrowed_forms_match_the_owned_types_they_encode_like() {
        let same = |a: TypeFingerprint, b: TypeFingerprint| a.args == b.args;
        assert!(same(TypeFingerprint::of::<str, ()>(), TypeFingerprint::of::<String, ()>()));
        assert!(same(TypeFingerprint::of::<[u8], ()>(), TypeFingerprint::of::<Vec<u8>, ()>()));
        assert!(same(
            TypeFingerprint::of::<(&str, &[(u32, &str)]), ()>(),
            TypeFingerprint::of::<(String, Vec<(u32, String)>), ()>()
        ));
        assert!(same(TypeFingerprint::of::<&mut Vec<u8>, ()>(), TypeFingerprint::of::<Vec<u8>, ()>()));
        // An array encodes without a length: not a Vec.
        assert!(!same(TypeFingerprint::of::<[u8; 4], ()>(), TypeFingerprint::of::<Vec<u8>, ()>()));
        assert!(same(TypeFingerprint::of::<&[u8; 4], ()>(), TypeFingerprint::of::<[u8; 4], ()>()));
        // A type merely containing "str" in its name is not a string.
        assert!(!same(TypeFingerprint::of::<Vec<Strukt>, ()>(), TypeFingerprint::of::<Vec<String>, ()>()));
    }

    #[test]
    fn a_queued_call_past_its_deadline_never_starts() {
        let mut d = Dispatcher::default();
        let mut expired = Vec::new();
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        d.enqueue(ContextId(0), Handle(1000), CallRequest::new("late", ""), Some(at(10))).unwrap();
        let fresh =
            d.enqueue(ContextId(0), Handle(1001), CallRequest::new("fresh", ""), Some(at(50))).unwrap();
        assert_eq!(d.start_next(at(10), &mut expired).map(|j| j.id), Some(fresh));
        assert_eq!(expired.iter().map(|j| j.request.function.as_str()).collect::<Vec<_>>(), ["late"]);
    }

    #[test]
    fn cancelling_removes_a_queued_call_and_marks_a_running_one() {
        let mut d = Dispatcher::default();
        let mut expired = Vec::new();
        let running = d.enqueue(ContextId(3), Handle(1000), CallRequest::new("hung", ""), None).unwrap();
        d.start_next(Instant::ZERO, &mut expired);
        d.enqueue(ContextId(3), Handle(1001), CallRequest::new("queued", ""), None).unwrap();
        // Only the caller that made a call can cancel it.
        assert_eq!(d.cancel(ContextId(4), Handle(1001)), Cancelled::Unknown);
        assert!(
            matches!(d.cancel(ContextId(3), Handle(1001)), Cancelled::Queued(j) if j.request.function == "queued")
        );
        assert_eq!(d.queued(), 0);
        assert_eq!(d.cancel(ContextId(3), Handle(1000)), Cancelled::Running(running));
        assert_eq!(d.finish(running).map(|r| r.cancelled), Some(true));
        assert_eq!(d.cancel(ContextId(3), Handle(1000)), Cancelled::Unknown);
    }

    #[test]
    fn pending_calls_leave_once_by_deadline_or_answer() {
        let mut p = PendingCalls::default();
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        p.insert(Handle(1000), Pending { call: CallId(0), target: ContextId(1), deadline: Some(at(20)) });
        p.insert(Handle(1001), Pending { call: CallId(1), target: ContextId(1), deadline: Some(at(10)) });
        p.insert(Handle(1002), Pending { call: CallId(2), target: ContextId(1), deadline: None });
        assert_eq!(p.next_deadline(), Some(at(10)));
        assert!(p.take(Handle(1001)).is_some(), "answered before its deadline");
        assert_eq!(p.next_deadline(), Some(at(20)));
        assert!(p.take_expired(at(19)).is_empty());
        assert_eq!(p.take_expired(at(20)).iter().map(|(_, p)| p.call).collect::<Vec<_>>(), [CallId(0)]);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.take_call(CallId(2)).map(|(h, _)| h), Some(Handle(1002)));
        assert!(p.is_empty());
    }

    #[test]
    fn pending_calls_take_handles_at_the_top_of_the_range_and_out_of_order() {
        let p = |n: u64| Pending { call: CallId(n), target: ContextId(1), deadline: None };
        let mut t = PendingCalls::default();
        t.insert(Handle(u32::MAX - 1), p(0));
        t.insert(Handle(u32::MAX), p(1));
        assert_eq!(t.take(Handle(u32::MAX - 1)), Some(p(0)));
        assert_eq!(t.take(Handle(u32::MAX)), Some(p(1)));
        assert!(t.is_empty());
        // Not in increasing order (no node does this, but the table is public): still one
        // answer each, in handle order.
        t.insert(Handle(2000), p(2));
        t.insert(Handle(1500), p(3));
        t.insert(Handle(1700), p(4));
        t.insert(Handle(1600), p(5));
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(Handle(1500)), Some(p(3)));
        assert_eq!(t.take(Handle(1700)), Some(p(4)));
        assert_eq!(t.take(Handle(1700)), None);
        assert_eq!(t.take_where(|_| true), [p(3), p(5), p(2)]);
        assert!(t.is_empty());
    }

    /// The table against the plainest model of it, one ordered map: every answer the same, for
    /// calls answered in and out of order, calls left waiting while thousands of newer ones come
    /// and go (past the window), handles skipped, deadlines, cancels and disconnections.
    mod pending_against_a_map {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// A call to this target, after skipping this many handles, with a deadline or not.
            Insert {
                skip: u32,
                target: u32,
                deadline: Option<u64>,
            },
            /// This many quick calls, each answered at once (the window moves on).
            Burst(u32),
            /// Answer the call this far back from the newest handle.
            Take(u32),
            Cancel(u64),
            Disconnect(u32),
            Expire(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (prop_oneof![3 => Just(0u32), 1 => 0..4u32, 1 => Just(2000u32)], 0..3u32, proptest::option::of(0..50u64))
                    .prop_map(|(skip, target, deadline)| Op::Insert { skip, target, deadline }),
                1 => (1..1500u32).prop_map(Op::Burst),
                4 => (0..2100u32).prop_map(Op::Take),
                1 => (0..40u64).prop_map(Op::Cancel),
                1 => (0..3u32).prop_map(Op::Disconnect),
                1 => (0..60u64).prop_map(Op::Expire),
            ]
        }

        proptest! {
            #[test]
            fn answers_as_one_ordered_map(ops in proptest::collection::vec(op(), 1..120)) {
                let at = |ms: u64| Instant::ZERO + Duration::from_millis(ms);
                let (mut table, mut model) = (PendingCalls::default(), BTreeMap::<Handle, Pending>::new());
                let (mut next, mut calls) = (Handle::FIRST_REPLY.0, 0u64);
                let add = |table: &mut PendingCalls, model: &mut BTreeMap<Handle, Pending>, next: &mut u32, calls: &mut u64, skip: u32, target: u32, deadline: Option<u64>| {
                    *next += skip;
                    let p = Pending { call: CallId(*calls), target: ContextId(target), deadline: deadline.map(at) };
                    *calls += 1;
                    table.insert(Handle(*next), p);
                    model.insert(Handle(*next), p);
                    *next += 1;
                    Handle(*next - 1)
                };
                for op in ops {
                    match op {
                        Op::Insert { skip, target, deadline } => {
                            add(&mut table, &mut model, &mut next, &mut calls, skip, target, deadline);
                        }
                        Op::Burst(n) => {
                            for _ in 0..n {
                                let h = add(&mut table, &mut model, &mut next, &mut calls, 0, 9, None);
                                prop_assert_eq!(table.take(h), model.remove(&h));
                            }
                        }
                        Op::Take(back) => {
                            let h = Handle(next.saturating_sub(back + 1));
                            prop_assert_eq!(table.get(h), model.get(&h).copied());
                            prop_assert_eq!(table.take(h), model.remove(&h));
                        }
                        Op::Cancel(call) => {
                            let want = model.iter().find(|(_, p)| p.call == CallId(call)).map(|(h, p)| (*h, *p));
                            if let Some((h, _)) = want {
                                model.remove(&h);
                            }
                            prop_assert_eq!(table.take_call(CallId(call)), want);
                        }
                        Op::Disconnect(target) => {
                            let lost: Vec<Handle> =
                                model.iter().filter(|(_, p)| p.target == ContextId(target)).map(|(h, _)| *h).collect();
                            let want: Vec<Pending> = lost.iter().filter_map(|h| model.remove(h)).collect();
                            prop_assert_eq!(table.take_where(|t| t == ContextId(target)), want);
                        }
                        Op::Expire(ms) => {
                            let mut due: Vec<(Instant, Handle)> = model
                                .iter()
                                .filter_map(|(h, p)| p.deadline.filter(|d| *d <= at(ms)).map(|d| (d, *h)))
                                .collect();
                            due.sort();
                            let want: Vec<(Handle, Pending)> =
                                due.into_iter().map(|(_, h)| (h, model.remove(&h).unwrap())).collect();
                            prop_assert_eq!(table.take_expired(at(ms)), want);
                        }
                    }
                    prop_assert_eq!(table.len(), model.len());
                    prop_assert!(table.window.len() <= PendingCalls::WINDOW);
                    let next_deadline = model.values().filter_map(|p| p.deadline).min();
                    prop_assert_eq!(table.next_deadline(), next_deadline);
                }
                let everything: Vec<Pending> = model.values().copied().collect();
                prop_assert_eq!(table.take_where(|_| true), everything);
                prop_assert!(table.is_empty());
            }
        }
    }

    #[test]
    fn a_function_name_reads_prints_compares_and_orders_as_its_str() {
        let short = "x".repeat(FunctionName::INLINE);
        let long = "y".repeat(FunctionName::INLINE + 1);
        let names = ["", "echo", "é£", short.as_str(), long.as_str(), "zz"];
        for a in names {
            let n = FunctionName::from(a);
            assert_eq!(n.as_str(), a);
            assert_eq!(n.as_bytes(), a.as_bytes());
            assert_eq!(n, a);
            assert_eq!(alloc::format!("{n}"), a);
            assert_eq!(alloc::format!("{n:?}"), alloc::format!("{a:?}"));
            assert_eq!(String::from(n.clone()), a);
            assert_eq!(FunctionName::from(String::from(a)), n);
            assert_eq!(FunctionName::from(Box::<str>::from(a)), n);
            assert_eq!(FunctionName::from(alloc::borrow::Cow::Borrowed(a)), n);
            for b in names {
                assert_eq!(FunctionName::from(a).cmp(&FunctionName::from(b)), a.cmp(b));
                let (na, nb) = (FunctionName::from(a), FunctionName::from(b));
                assert_eq!(na == nb, a == b);
            }
        }
        // Kept in place up to the inline size: no allocation for a call's usual name.
        assert!(matches!(FunctionName::from(short.as_str()).0, NameRepr::Inline { .. }));
        assert!(matches!(FunctionName::from(long.as_str()).0, NameRepr::Heap(_)));
        assert!(core::mem::size_of::<FunctionName>() <= core::mem::size_of::<String>());
        assert_eq!(FunctionName::from('é'), "é");
        // A registry keyed by `String` finds it by its `str`.
        let by_name: BTreeMap<String, u8> = [(String::from("echo"), 1)].into();
        assert_eq!(by_name.get(FunctionName::from("echo").as_str()), Some(&1));
        let names: BTreeMap<FunctionName, u8> = [(FunctionName::from("echo"), 1)].into();
        assert_eq!(names.get("echo"), Some(&1));
    }

    struct Strukt;

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
