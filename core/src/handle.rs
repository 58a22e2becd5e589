//! Handles: the receiving endpoints inside a context (docs/protocol.md §3).
//!
//! Handles below 1000 are well-known and mean the same in every context; from 1000 up, each
//! context allocates reply handles for itself. Handle 999 is not an endpoint but a marker: a
//! message whose `reply_to` is [`Handle::IS_DEAD`] is a *dead message* whose body is a reason,
//! and delivering one to a handle closes that channel.

use core::fmt;

/// A receiving endpoint in a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

impl Handle {
    /// "No reply wanted" in `reply_to`.
    pub const NONE: Handle = Handle(0);
    /// Module fetching (not implemented by arbor; listed so it is never reused).
    pub const GET_MODULE: Handle = Handle(100);
    /// A context's call dispatcher.
    pub const CALL_FUNCTION: Handle = Handle(101);
    /// Log records travelling to the root: `name \0 level \0 text`.
    pub const FORWARD_LOG: Handle = Handle(102);
    /// A new context is reachable through the stream this arrived on.
    pub const ADD_ROUTE: Handle = Handle(103);
    /// A context is no longer reachable.
    pub const DEL_ROUTE: Handle = Handle(104);
    /// A request for a block of context ids, answered by the root.
    pub const ALLOCATE_ID: Handle = Handle(105);
    /// Begin the shutdown sequence; obeyed only from the immediate parent.
    pub const SHUTDOWN: Handle = Handle(106);
    /// Module loading (not implemented by arbor).
    pub const LOAD_MODULE: Handle = Handle(107);
    /// Module forwarding (not implemented by arbor).
    pub const FORWARD_MODULE: Handle = Handle(108);
    /// A child announcing it is detaching from its parent.
    pub const DETACHING: Handle = Handle(109);
    /// Service calls (not implemented by arbor).
    pub const CALL_SERVICE: Handle = Handle(110);
    /// arbor's own: the caller gave up on a call (its deadline passed, or it was dropped); the
    /// body is the call's reply handle, 4 bytes big-endian. Not a mitogen handle.
    pub const CANCEL_CALL: Handle = Handle(120);
    /// arbor's own: a context reaped a child; the postcard body says who, how and why, for the
    /// root's record of every descendant ([`crate::departure::Departure`]). Not a mitogen
    /// handle.
    pub const CHILD_LEFT: Handle = Handle(121);
    /// The `reply_to` value that marks a dead message.
    pub const IS_DEAD: Handle = Handle(999);
    /// The first handle a context allocates for itself.
    pub const FIRST_REPLY: Handle = Handle(1000);

    /// Whether this is a well-known handle (below [`Handle::FIRST_REPLY`]).
    pub fn is_well_known(self) -> bool {
        self.0 < Self::FIRST_REPLY.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Handle::NONE => "NONE",
            Handle::GET_MODULE => "GET_MODULE",
            Handle::CALL_FUNCTION => "CALL_FUNCTION",
            Handle::FORWARD_LOG => "FORWARD_LOG",
            Handle::ADD_ROUTE => "ADD_ROUTE",
            Handle::DEL_ROUTE => "DEL_ROUTE",
            Handle::ALLOCATE_ID => "ALLOCATE_ID",
            Handle::SHUTDOWN => "SHUTDOWN",
            Handle::LOAD_MODULE => "LOAD_MODULE",
            Handle::FORWARD_MODULE => "FORWARD_MODULE",
            Handle::DETACHING => "DETACHING",
            Handle::CALL_SERVICE => "CALL_SERVICE",
            Handle::CANCEL_CALL => "CANCEL_CALL",
            Handle::CHILD_LEFT => "CHILD_LEFT",
            Handle::IS_DEAD => "IS_DEAD",
            Handle(n) => return write!(f, "{n}"),
        };
        f.write_str(name)
    }
}

/// All reply handles of this context have been used (after about four billion allocations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlesExhausted;

impl fmt::Display for HandlesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reply handle space exhausted")
    }
}

impl core::error::Error for HandlesExhausted {}

/// Hands out this context's reply handles: 1000, 1001, … never reusing one, so a late answer to
/// a finished call can never be mistaken for the answer to a newer one.
#[derive(Clone, Debug)]
pub struct ReplyHandles {
    next: u32,
}

impl Default for ReplyHandles {
    fn default() -> Self {
        ReplyHandles { next: Handle::FIRST_REPLY.0 }
    }
}

impl ReplyHandles {
    /// The next unused handle.
    pub fn allocate(&mut self) -> Result<Handle, HandlesExhausted> {
        let h = self.next;
        self.next = h.checked_add(1).ok_or(HandlesExhausted)?;
        Ok(Handle(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_handles_start_at_1000_and_never_repeat() {
        let mut h = ReplyHandles::default();
        assert_eq!(h.allocate(), Ok(Handle(1000)));
        assert_eq!(h.allocate(), Ok(Handle(1001)));
    }

    #[test]
    fn reply_handle_exhaustion_is_an_error_not_a_wrap() {
        let mut h = ReplyHandles { next: u32::MAX - 1 };
        assert_eq!(h.allocate(), Ok(Handle(u32::MAX - 1)));
        assert_eq!(h.allocate(), Err(HandlesExhausted));
    }

    #[test]
    fn well_known_handles_print_by_name() {
        assert_eq!(alloc::format!("{}", Handle::SHUTDOWN), "SHUTDOWN");
        assert_eq!(alloc::format!("{}", Handle(1234)), "1234");
    }
}
