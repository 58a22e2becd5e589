//! The frame: mitogen's 26-byte big-endian header and a body, and an incremental decoder.
//!
//! Layout (docs/protocol.md §2): `enc:i16 dst:u32 src:u32 auth:u32 handle:u32 reply_to:u32
//! len:u32`, then `len` body bytes. The decoder is fed whatever the transport produced — half a
//! header, a hundred frames — and yields whole [`Message`]s whose bodies are split out of the read
//! buffer without a copy, so a routed body travels from the inbound buffer to the outbound
//! [`Frame`] by reference count alone.

use alloc::vec::Vec;
use core::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::handle::Handle;
use crate::ids::ContextId;

/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 26;

/// The least the decoder grows its buffer by when fed bytes that do not fit.
const FEED_RESERVE: usize = 16 * 1024;

/// The default maximum body size: mitogen's 128 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 128 * 1024 * 1024;

/// What a body is encoded as; the header's first field doubles as the stream's magic number.
///
/// Any value not listed here means the stream is corrupt: a receiver cannot find the next frame
/// boundary, so the only safe answer is to drop the whole stream (docs/protocol.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    /// `0x4d49` "MI": mitogen's own serialisation.
    Mitogen,
    /// `0x4d4a` "MJ": pickle.
    Pickle,
    /// `0x4d4b` "MK": raw bytes. Used by arbor for control messages (routes, dead replies, logs).
    Binary,
    /// `0x4150` "AP": arbor's postcard-encoded bodies (call requests and results).
    Postcard,
}

impl Encoding {
    /// The value carried in the header's `enc` field.
    pub const fn to_wire(self) -> i16 {
        match self {
            Encoding::Mitogen => 0x4d49,
            Encoding::Pickle => 0x4d4a,
            Encoding::Binary => 0x4d4b,
            Encoding::Postcard => 0x4150,
        }
    }

    /// Parses a header's `enc` field; `None` means the stream is corrupt.
    pub const fn from_wire(enc: i16) -> Option<Self> {
        match enc {
            0x4d49 => Some(Encoding::Mitogen),
            0x4d4a => Some(Encoding::Pickle),
            0x4d4b => Some(Encoding::Binary),
            0x4150 => Some(Encoding::Postcard),
            _ => None,
        }
    }
}

/// A parsed frame header. `len` is the length of the body that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Body encoding.
    pub enc: Encoding,
    /// Destination context.
    pub dst: ContextId,
    /// Originating context.
    pub src: ContextId,
    /// Context whose authority the message carries.
    pub auth: ContextId,
    /// Receiving endpoint in the destination.
    pub handle: Handle,
    /// Where an answer goes; [`Handle::NONE`] for none, [`Handle::IS_DEAD`] marks a dead message.
    pub reply_to: Handle,
    /// Body length in bytes.
    pub len: u32,
}

impl Header {
    /// Parses the fixed header. Only the encoding can be wrong; every other field is any `u32`.
    pub fn parse(raw: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let mut b = &raw[..];
        let enc_raw = b.get_i16();
        let enc = Encoding::from_wire(enc_raw).ok_or(DecodeError::UnknownEncoding { enc: enc_raw })?;
        Ok(Header {
            enc,
            dst: ContextId(b.get_u32()),
            src: ContextId(b.get_u32()),
            auth: ContextId(b.get_u32()),
            handle: Handle(b.get_u32()),
            reply_to: Handle(b.get_u32()),
            len: b.get_u32(),
        })
    }

    /// The 26 wire bytes of this header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut b = &mut out[..];
        b.put_i16(self.enc.to_wire());
        b.put_u32(self.dst.0);
        b.put_u32(self.src.0);
        b.put_u32(self.auth.0);
        b.put_u32(self.handle.0);
        b.put_u32(self.reply_to.0);
        b.put_u32(self.len);
        out
    }
}

/// One message: header fields and a body. The body length is the body's own length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Body encoding.
    pub enc: Encoding,
    /// Destination context.
    pub dst: ContextId,
    /// Originating context.
    pub src: ContextId,
    /// Context whose authority the message carries (normally `src`).
    pub auth: ContextId,
    /// Receiving endpoint in the destination.
    pub handle: Handle,
    /// Where an answer goes, [`Handle::NONE`] if nowhere.
    pub reply_to: Handle,
    /// The body, shared with the buffer it was read from.
    pub body: Bytes,
}

impl Message {
    /// A message from `src` with its own authority and no reply handle.
    pub fn new(
        dst: ContextId,
        src: ContextId,
        handle: Handle,
        enc: Encoding,
        body: impl Into<Bytes>,
    ) -> Message {
        Message { enc, dst, src, auth: src, handle, reply_to: Handle::NONE, body: body.into() }
    }

    /// A dead message: `reply_to` is [`Handle::IS_DEAD`] and the body is a UTF-8 reason.
    /// Delivering one to a handle closes that channel (docs/protocol.md §3).
    pub fn dead(dst: ContextId, src: ContextId, handle: Handle, reason: impl Into<Bytes>) -> Message {
        Message {
            enc: Encoding::Binary,
            dst,
            src,
            auth: src,
            handle,
            reply_to: Handle::IS_DEAD,
            body: reason.into(),
        }
    }

    /// Sets `reply_to`.
    #[must_use]
    pub fn with_reply_to(mut self, reply_to: Handle) -> Message {
        self.reply_to = reply_to;
        self
    }

    /// Whether this is a dead message (a channel-closing notice rather than data).
    pub fn is_dead(&self) -> bool {
        self.reply_to == Handle::IS_DEAD
    }

    /// The dead message's reason, if this is a dead message with a UTF-8 body.
    pub fn dead_reason(&self) -> Option<&str> {
        if self.is_dead() {
            core::str::from_utf8(&self.body).ok()
        } else {
            None
        }
    }

    /// The header this message is sent with.
    ///
    /// # Panics
    /// Never for messages the core builds: bodies are bounded by the maximum message size, which
    /// fits in `u32`. A body over 4 GiB built by hand is clamped and will not decode.
    pub fn header(&self) -> Header {
        Header {
            enc: self.enc,
            dst: self.dst,
            src: self.src,
            auth: self.auth,
            handle: self.handle,
            reply_to: self.reply_to,
            len: u32::try_from(self.body.len()).unwrap_or(u32::MAX),
        }
    }

    /// The frame that carries this message; the body is shared, not copied.
    pub fn to_frame(&self) -> Frame {
        Frame { header: self.header().to_bytes(), body: self.body.clone() }
    }

    /// The frame that carries this message, consuming it (not even a reference count changes
    /// hands: the router forwards bodies this way).
    pub fn into_frame(self) -> Frame {
        Frame { header: self.header().to_bytes(), body: self.body }
    }

    /// Appends the whole frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.body.len());
        out.put_slice(&self.header().to_bytes());
        out.put_slice(&self.body);
    }

    fn from_parts(h: Header, body: Bytes) -> Message {
        Message {
            enc: h.enc,
            dst: h.dst,
            src: h.src,
            auth: h.auth,
            handle: h.handle,
            reply_to: h.reply_to,
            body,
        }
    }
}

/// An encoded frame ready to write: the header bytes and the shared body, kept apart so that a
/// host can write both with one vectored write and a forwarded body is never copied.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    header: [u8; HEADER_LEN],
    body: Bytes,
}

impl Frame {
    /// The 26 header bytes.
    #[inline]
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The body bytes.
    #[inline]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Total length on the wire.
    #[inline]
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Always false: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the frame's bytes to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        out.put_slice(&self.header);
        out.put_slice(&self.body);
    }

    /// The frame's bytes in one vector (copies the body; for tests and simple hosts).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.body);
        v
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Frames are only built from valid headers, so the parse cannot fail in practice.
        f.debug_struct("Frame")
            .field("header", &Header::parse(&self.header).ok())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a stream's bytes could not be decoded. Every variant except [`DecodeError::Truncated`]
/// means the stream has lost frame sync and must be dropped; none affects any other stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The `enc` field holds no known encoding: the stream is corrupt.
    UnknownEncoding {
        /// The value found.
        enc: i16,
    },
    /// The header claims a body larger than the configured maximum. Detected from the header
    /// alone, before any of the body is buffered.
    TooLarge {
        /// The claimed body length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The stream ended in the middle of a frame; the partial frame was discarded.
    Truncated {
        /// Bytes of the unfinished frame that were buffered and thrown away.
        buffered: usize,
    },
    /// The decoder already failed; it yields nothing more.
    Failed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownEncoding { enc } => {
                write!(f, "corrupt stream: unknown frame encoding {:#06x}", *enc as u16)
            }
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the maximum message size of {max} bytes")
            }
            DecodeError::Truncated { buffered } => {
                write!(f, "stream ended inside a frame; {buffered} buffered bytes discarded")
            }
            DecodeError::Failed => f.write_str("decoder already failed on this stream"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// An incremental frame decoder for one stream.
///
/// Feed it chunks of any size with [`Decoder::feed`], then call [`Decoder::next_message`] until it
/// returns `Ok(None)`. Memory use is bounded by what has been fed: the claimed length of a body
/// is checked against the maximum as soon as its header is complete, and buffer space is never
/// reserved for the claimed length up front.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message_size: u32,
    state: DecodeState,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    /// Waiting for the 26 header bytes.
    Header,
    /// Header parsed; waiting for `header.len` body bytes.
    Body(Header),
    /// A fatal error was reported; nothing more is decoded.
    Failed,
}

impl Decoder {
    /// A decoder that refuses bodies longer than `max_message_size`.
    pub fn new(max_message_size: u32) -> Decoder {
        Decoder { buf: BytesMut::new(), max_message_size, state: DecodeState::Header }
    }

    /// Appends bytes read from the stream.
    ///
    /// This is the one copy a received byte undergoes (from the host's read buffer into the
    /// decoder's); bodies are then split out without copying. Bytes fed after a failure are
    /// dropped.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, DecodeState::Failed) {
            return;
        }
        // Grow in steps of at least FEED_RESERVE: bodies split out of one allocation share it,
        // so many small frames cost one allocation rather than two each.
        let mut want = data.len();
        if let DecodeState::Body(h) = self.state {
            // A large body would otherwise grow the buffer by doubling, copying it again at each
            // step. Once an eighth of it has arrived, room for the rest is reserved in one go:
            // a peer can make us reserve at most eight times what it actually sent, and never
            // anything for a length it merely claims.
            let body = h.len as usize;
            let have = self.buf.len() + data.len();
            if body > have && have >= body / 8 {
                want = body - self.buf.len();
            }
        }
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want.max(FEED_RESERVE));
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    ///
    /// An error is fatal for the stream: the buffer is released and every later call returns
    /// [`DecodeError::Failed`].
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        loop {
            match self.state {
                DecodeState::Failed => return Err(DecodeError::Failed),
                DecodeState::Header => {
                    let Some(raw) = self.buf.get(..HEADER_LEN) else { return Ok(None) };
                    let raw: &[u8; HEADER_LEN] = raw.try_into().map_err(|_| DecodeError::Failed)?;
                    let header = match Header::parse(raw) {
                        Ok(h) => h,
                        Err(e) => return Err(self.fail(e)),
                    };
                    if header.len > self.max_message_size {
                        return Err(
                            self.fail(DecodeError::TooLarge { len: header.len, max: self.max_message_size })
                        );
                    }
                    self.buf.advance(HEADER_LEN);
                    self.state = DecodeState::Body(header);
                }
                DecodeState::Body(header) => {
                    let len = header.len as usize;
                    if self.buf.len() < len {
                        return Ok(None);
                    }
                    let body = self.buf.split_to(len).freeze();
                    self.state = DecodeState::Header;
                    return Ok(Some(Message::from_parts(header, body)));
                }
            }
        }
    }

    /// Declares the end of the stream. Whole messages must have been taken first; anything still
    /// buffered is an unfinished frame, which is discarded and reported.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        let pending = match self.state {
            DecodeState::Failed => return Ok(()),
            DecodeState::Header => self.buf.len(),
            DecodeState::Body(_) => HEADER_LEN + self.buf.len(),
        };
        self.state = DecodeState::Failed;
        self.buf = BytesMut::new();
        if pending == 0 {
            Ok(())
        } else {
            Err(DecodeError::Truncated { buffered: pending })
        }
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.state = DecodeState::Failed;
        self.buf = BytesMut::new();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn shutdown_msg() -> Message {
        Message::new(ContextId(1), ContextId(0), Handle::SHUTDOWN, Encoding::Mitogen, "")
    }

    #[test]
    fn header_is_26_bytes_big_endian() {
        let frame = shutdown_msg().to_frame().to_vec();
        assert_eq!(
            frame,
            vec![0x4d, 0x49, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x6a, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn unknown_encoding_fails_the_stream_for_good() {
        let mut wire = shutdown_msg().to_frame().to_vec();
        wire[0] = 0x12;
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(&wire);
        d.feed(&shutdown_msg().to_frame().to_vec());
        assert_eq!(d.next_message(), Err(DecodeError::UnknownEncoding { enc: 0x1249 }));
        assert_eq!(d.next_message(), Err(DecodeError::Failed));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let mut header = shutdown_msg().header();
        header.len = u32::MAX;
        let mut d = Decoder::new(1024);
        d.feed(&header.to_bytes());
        assert_eq!(d.next_message(), Err(DecodeError::TooLarge { len: u32::MAX, max: 1024 }));
    }

    #[test]
    fn body_of_exactly_the_maximum_is_accepted() {
        let msg = Message::new(ContextId(1), ContextId(0), Handle(1000), Encoding::Binary, vec![7u8; 64]);
        let mut d = Decoder::new(64);
        d.feed(&msg.to_frame().to_vec());
        assert_eq!(d.next_message(), Ok(Some(msg)));
    }

    #[test]
    fn a_claimed_length_reserves_nothing_until_an_eighth_of_it_arrived() {
        let mut header = shutdown_msg().header();
        header.len = 64 * 1024 * 1024;
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(&header.to_bytes());
        assert_eq!(d.next_message(), Ok(None));
        d.feed(&[0u8; 1000]);
        assert!(d.buf.capacity() < 1024 * 1024, "reserved {} bytes for a bare claim", d.buf.capacity());
        // Past an eighth, room for the whole body is made at once.
        d.feed(&vec![0u8; 8 * 1024 * 1024]);
        assert!(d.buf.capacity() >= 64 * 1024 * 1024 - HEADER_LEN);
    }

    #[test]
    fn eof_inside_a_frame_reports_the_discarded_bytes() {
        let msg = Message::new(ContextId(1), ContextId(0), Handle(1000), Encoding::Binary, "hello");
        let wire = msg.to_frame().to_vec();
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(&wire[..HEADER_LEN + 2]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated { buffered: HEADER_LEN + 2 }));

        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(&wire[..3]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated { buffered: 3 }));
    }

    #[test]
    fn eof_at_a_frame_boundary_is_clean() {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        d.feed(&shutdown_msg().to_frame().to_vec());
        assert_eq!(d.next_message(), Ok(Some(shutdown_msg())));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn dead_message_carries_its_reason() {
        let m = Message::dead(ContextId(0), ContextId(1), Handle(1000), "no route to 5, my ID is 1");
        assert!(m.is_dead());
        assert_eq!(m.dead_reason(), Some("no route to 5, my ID is 1"));
    }
}
