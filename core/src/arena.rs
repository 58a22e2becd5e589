//! Small message bodies carved out of shared chunks instead of allocated one by one.
//!
//! Every call and every answer a node encodes is a small body (a name, a few argument bytes, a
//! result), and so is every captured line it forwards. Allocated one by one, each cost two
//! allocations: its vector, and the shared header `Bytes` adds to a vector with spare capacity.
//! Carved out of a 4 KiB chunk, a body costs a reference count; the chunk is freed when its last
//! body is, and reused in place when every body cut from it is gone by the time the next one is
//! encoded (`BytesMut::reserve` reclaims a buffer it holds alone) — so a node answering one call
//! at a time allocates nothing in its steady state. A body kept alive keeps at most one chunk alive; bodies above an eighth of a
//! chunk get an allocation of their own, so a large result never pins, nor is copied into,
//! a chunk.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

/// The size of a chunk.
const CHUNK: usize = 4 * 1024;
/// The largest expected body carved out of a chunk.
const SMALL: usize = CHUNK / 8;
/// Room reserved beyond the caller's estimate: lengths, tags and the request's metadata.
const SLACK: usize = 32;

/// Where a node's small bodies are serialized.
#[derive(Debug, Default)]
pub(crate) struct BodyArena {
    buf: BytesMut,
}

impl BodyArena {
    /// `value` serialized by postcard into the current chunk, or `None` when `hint` (the
    /// expected size) is too large for one — or postcard refused `value` — for the caller to
    /// serialize on its own.
    pub(crate) fn encode<T: Serialize + ?Sized>(&mut self, value: &T, hint: usize) -> Option<Bytes> {
        if hint > SMALL {
            return None;
        }
        self.make_room(hint + SLACK);
        match postcard::serialize_with_flavor(value, Out(&mut self.buf)) {
            Ok(()) => Some(self.buf.split().freeze()),
            Err(_) => {
                self.buf.clear();
                None
            }
        }
    }

    /// `parts`, one after another, as one body: carved out of the current chunk when small
    /// enough, otherwise an allocation of its own, exactly its size.
    pub(crate) fn concat(&mut self, parts: &[&[u8]]) -> Bytes {
        let len = parts.iter().map(|p| p.len()).sum();
        if len > SMALL {
            let mut body = Vec::with_capacity(len);
            parts.iter().for_each(|p| body.extend_from_slice(p));
            return Bytes::from(body);
        }
        self.make_room(len);
        parts.iter().for_each(|p| self.buf.extend_from_slice(p));
        self.buf.split().freeze()
    }

    /// Room for `n` more bytes in the current chunk, or a fresh chunk.
    fn make_room(&mut self, n: usize) {
        if self.buf.capacity() == 0 {
            // The first body: the chunk's size is what `reserve` allocates every later chunk at.
            self.buf = BytesMut::with_capacity(CHUNK);
        }
        self.buf.reserve(n);
    }
}

/// postcard's output into the chunk: a body longer than its estimate simply continues in a
/// fresh chunk (`BytesMut` moves what was written).
struct Out<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Out<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.extend_from_slice(&[data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn bodies_are_what_postcard_writes_and_share_one_chunk() {
        let mut arena = BodyArena::default();
        let a = arena.encode(&(1u8, "one"), 8).unwrap();
        let b = arena.encode(&(2u8, "two"), 8).unwrap();
        assert_eq!(a, postcard::to_allocvec(&(1u8, "one")).unwrap());
        assert_eq!(b, postcard::to_allocvec(&(2u8, "two")).unwrap());
        // Cut one after the other out of the same chunk.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
    }

    #[test]
    fn concatenated_bodies_are_their_parts_in_order_small_ones_in_the_chunk() {
        let mut arena = BodyArena::default();
        let a = arena.concat(&[b"stdout", b"\0", b"20", b"\0", b"a line"]);
        let b = arena.concat(&[b"", b"x"]);
        assert_eq!(a, b"stdout\x0020\x00a line"[..]);
        assert_eq!(b, b"x"[..]);
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr(), "cut one after the other");
        // A large one has an allocation of its own, and the chunk goes on after it.
        let long = vec![9u8; SMALL + 1];
        let big = arena.concat(&[b"<", &long, b">"]);
        assert_eq!(big.len(), SMALL + 3);
        assert_eq!((big[0], big[1], big[SMALL + 1], big[SMALL + 2]), (b'<', 9, 9, b'>'));
        let c = arena.concat(&[b"y"]);
        assert_eq!(b.as_ptr().wrapping_add(b.len()), c.as_ptr());
    }

    #[test]
    fn a_body_longer_than_its_estimate_is_whole() {
        let mut arena = BodyArena::default();
        let long = vec![7u8; 3 * CHUNK];
        let body = arena.encode(&long, 0).unwrap();
        assert_eq!(body, postcard::to_allocvec(&long).unwrap());
        let next = arena.encode(&3u8, 1).unwrap();
        assert_eq!(next, [3u8][..]);
    }

    #[test]
    fn large_bodies_are_left_to_the_caller() {
        let mut arena = BodyArena::default();
        assert_eq!(arena.encode(&vec![0u8; SMALL + 1], SMALL + 1), None);
        assert_eq!(arena.buf.capacity(), 0, "nothing allocated for a body it refused");
    }

    #[test]
    fn a_chunk_whose_bodies_are_all_gone_is_reused() {
        let mut arena = BodyArena::default();
        let first = arena.encode(&1u32, 4).unwrap();
        let chunk = first.as_ptr() as usize..first.as_ptr() as usize + CHUNK;
        drop(first);
        // Many chunks' worth of bodies, each dropped before the next: all cut from the first.
        for i in 0..4 * CHUNK as u32 {
            let body = arena.encode(&i, 4).unwrap();
            assert!(chunk.contains(&(body.as_ptr() as usize)), "body {i} is not in the first chunk");
        }
    }

    #[test]
    fn later_chunks_are_chunks_too() {
        // Every body kept alive, so each full chunk is replaced rather than reused: the new
        // ones must still hold many bodies each, not one allocation per body.
        let mut arena = BodyArena::default();
        let bodies: Vec<Bytes> = (0..4 * CHUNK as u32).map(|i| arena.encode(&i, 4).unwrap()).collect();
        let adjacent =
            bodies.windows(2).filter(|w| w[0].as_ptr().wrapping_add(w[0].len()) == w[1].as_ptr()).count();
        assert!(
            adjacent * 100 >= bodies.len() * 99,
            "{adjacent} of {} bodies follow the one before",
            bodies.len()
        );
    }

    #[test]
    fn a_kept_body_outlives_its_chunk_being_replaced() {
        let mut arena = BodyArena::default();
        let kept = arena.encode("kept", 4).unwrap();
        for i in 0..2 * CHUNK as u32 {
            arena.encode(&i, 4).unwrap();
        }
        assert_eq!(kept, postcard::to_allocvec("kept").unwrap());
    }
}
