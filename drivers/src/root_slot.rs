//! One root per process at a time: the slot a root takes in [`crate::Launcher::start`] and its
//! IO thread gives back once the tree is gone. Under the test harness a second root waits for
//! the slot instead of failing (test_support.rs).

use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};

/// The slot: which thread started the running root, if one runs.
#[derive(Debug)]
pub(crate) struct RootSlot {
    holder: Mutex<Option<ThreadId>>,
    freed: Condvar,
}

impl RootSlot {
    pub const fn new() -> RootSlot {
        RootSlot { holder: Mutex::new(None), freed: Condvar::new() }
    }

    /// Takes the slot for the calling thread. With `wait`, waits while another thread's root
    /// runs; without, or if the running root is this thread's own (it would wait for itself),
    /// returns false.
    pub fn take(&self, wait: bool) -> bool {
        let me = thread::current().id();
        let mut holder = self.holder.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(other) = *holder {
            if !wait || other == me {
                return false;
            }
            holder = self.freed.wait(holder).unwrap_or_else(PoisonError::into_inner);
        }
        *holder = Some(me);
        true
    }

    /// Gives the slot back.
    pub fn release(&self) {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.freed.notify_all();
    }
}
