//! Context ids and their allocation (docs/protocol.md §1).
//!
//! Only the root hands out ids, so they are unique in the tree: its own children get 1, 2, 3, …
//! A non-root context that spawns children asks the root (handle ALLOCATE_ID) for a block of
//! [`ID_BLOCK_SIZE`] ids and hands them out locally, asking again when the block runs dry.

use alloc::collections::VecDeque;
use core::fmt;

/// A context's id, unique in the tree. The root is [`ContextId::ROOT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextId(pub u32);

impl ContextId {
    /// The root ("master") context.
    pub const ROOT: ContextId = ContextId(0);
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How many ids the root hands out per ALLOCATE_ID request.
pub const ID_BLOCK_SIZE: u32 = 1000;

/// A half-open range of ids `[start, end)` granted by the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdBlock {
    /// First id of the block.
    pub start: u32,
    /// One past the last id of the block.
    pub end: u32,
}

impl IdBlock {
    /// Body of an ALLOCATE_ID reply: `start` and `end` as big-endian `u32`s.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.start.to_be_bytes());
        out[4..].copy_from_slice(&self.end.to_be_bytes());
        out
    }

    /// Parses an ALLOCATE_ID reply body; `None` unless it is exactly 8 bytes with `start < end`.
    pub fn from_bytes(body: &[u8]) -> Option<IdBlock> {
        let raw: &[u8; 8] = body.try_into().ok()?;
        let start = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let end = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        (start < end).then_some(IdBlock { start, end })
    }

    /// Ids left in the block.
    pub fn len(&self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// Whether no id is left.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Why no id could be allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// A non-root context has no ids left: it must send ALLOCATE_ID to the root and retry once
    /// the block arrives.
    NeedBlock,
    /// The root has handed out every id in the 32-bit space.
    Exhausted,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::NeedBlock => f.write_str("no context ids left; a block must be requested from the root"),
            IdError::Exhausted => f.write_str("context id space exhausted"),
        }
    }
}

impl core::error::Error for IdError {}

/// Hands out context ids for the children of one context.
#[derive(Clone, Debug)]
pub enum IdAllocator {
    /// The root owns the id space; `next` is the lowest id never handed out.
    Root {
        /// Lowest id not yet handed out.
        next: u32,
    },
    /// Any other context allocates from blocks the root granted it, oldest first.
    Delegated {
        /// Granted blocks not yet used up.
        blocks: VecDeque<IdBlock>,
    },
}

impl IdAllocator {
    /// The root's allocator: children get 1, 2, 3, …
    pub fn root() -> IdAllocator {
        IdAllocator::Root { next: 1 }
    }

    /// A non-root context's allocator, empty until a block arrives.
    pub fn delegated() -> IdAllocator {
        IdAllocator::Delegated { blocks: VecDeque::new() }
    }

    /// One id for a new child of this context.
    pub fn allocate(&mut self) -> Result<ContextId, IdError> {
        match self {
            IdAllocator::Root { next } => {
                let id = *next;
                *next = id.checked_add(1).ok_or(IdError::Exhausted)?;
                Ok(ContextId(id))
            }
            IdAllocator::Delegated { blocks } => loop {
                let block = blocks.front_mut().ok_or(IdError::NeedBlock)?;
                if block.is_empty() {
                    blocks.pop_front();
                    continue;
                }
                let id = block.start;
                block.start += 1;
                return Ok(ContextId(id));
            },
        }
    }

    /// The root's answer to ALLOCATE_ID: the next [`ID_BLOCK_SIZE`] ids, never handed out again.
    /// Only the root can grant blocks.
    pub fn allocate_block(&mut self) -> Result<IdBlock, IdError> {
        match self {
            IdAllocator::Root { next } => {
                let start = *next;
                let end = start.checked_add(ID_BLOCK_SIZE).ok_or(IdError::Exhausted)?;
                *next = end;
                Ok(IdBlock { start, end })
            }
            IdAllocator::Delegated { .. } => Err(IdError::NeedBlock),
        }
    }

    /// Adds a block granted by the root (ignored by the root itself, which needs none).
    pub fn add_block(&mut self, block: IdBlock) {
        if let IdAllocator::Delegated { blocks } = self {
            if !block.is_empty() {
                blocks.push_back(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hands_out_one_two_three() {
        let mut a = IdAllocator::root();
        assert_eq!(a.allocate(), Ok(ContextId(1)));
        assert_eq!(a.allocate(), Ok(ContextId(2)));
        assert_eq!(a.allocate(), Ok(ContextId(3)));
    }

    #[test]
    fn blocks_never_overlap_single_ids() {
        let mut a = IdAllocator::root();
        assert_eq!(a.allocate(), Ok(ContextId(1)));
        assert_eq!(a.allocate_block(), Ok(IdBlock { start: 2, end: 1002 }));
        assert_eq!(a.allocate(), Ok(ContextId(1002)));
    }

    #[test]
    fn delegated_allocator_asks_for_a_block_when_dry() {
        let mut a = IdAllocator::delegated();
        assert_eq!(a.allocate(), Err(IdError::NeedBlock));
        a.add_block(IdBlock { start: 5, end: 7 });
        assert_eq!(a.allocate(), Ok(ContextId(5)));
        assert_eq!(a.allocate(), Ok(ContextId(6)));
        assert_eq!(a.allocate(), Err(IdError::NeedBlock));
    }

    #[test]
    fn id_block_round_trips_and_rejects_garbage() {
        let b = IdBlock { start: 1000, end: 2000 };
        assert_eq!(IdBlock::from_bytes(&b.to_bytes()), Some(b));
        assert_eq!(IdBlock::from_bytes(b"short"), None);
        assert_eq!(IdBlock::from_bytes(&IdBlock { start: 9, end: 9 }.to_bytes()), None);
    }

    #[test]
    fn root_id_space_exhaustion_is_an_error() {
        let mut a = IdAllocator::Root { next: u32::MAX - 10 };
        assert_eq!(a.allocate_block(), Err(IdError::Exhausted));
    }
}
