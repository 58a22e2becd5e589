//! `arbor-core`: the sans-IO heart of arbor.
//!
//! This crate holds every protocol decision of an arbor context — framing, routing, ids, calls,
//! log capture and the shutdown sequence — as plain state machines. It performs no IO, reads no
//! clock, draws no random numbers and spawns no threads: bytes, time and process events are fed
//! in, and the decisions come out as values for a host (the simulator or a real driver) to carry
//! out. That is what lets the simulator prove behaviour that real processes then inherit.
//!
//! The wire format is byte-compatible with mitogen 0.3's stream protocol; see `docs/protocol.md`.
//!
//! ```
//! use arbor_core::frame::{Decoder, Encoding, Message, DEFAULT_MAX_MESSAGE_SIZE};
//! use arbor_core::handle::Handle;
//! use arbor_core::ids::ContextId;
//!
//! let msg = Message::new(ContextId(1), ContextId(0), Handle::SHUTDOWN, Encoding::Binary, "");
//! let wire = msg.to_frame().to_vec();
//!
//! let mut decoder = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
//! decoder.feed(&wire[..10]); // a frame may arrive in any number of pieces
//! assert_eq!(decoder.next_message(), Ok(None));
//! decoder.feed(&wire[10..]);
//! assert_eq!(decoder.next_message(), Ok(Some(msg)));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod arena;
pub mod call;
pub mod departure;
pub mod frame;
pub mod handle;
pub mod host;
pub mod ids;
pub mod lines;
pub mod node;
pub mod reaper;
pub mod router;
pub mod shutdown;
pub mod time;
pub mod vec_map;
