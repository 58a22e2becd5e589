//! The commands other threads send the IO thread: an unbounded queue behind a mutex, and an
//! eventfd the IO thread's epoll watches. A sender writes the eventfd only when the IO thread
//! has not been told yet since it last looked, so a burst of commands costs one wake-up.
//!
//! When the last sender is gone the receiver hears it (the queue is then closed for good), and
//! once the receiver is gone sending fails, as with a channel. The eventfd is closed with the
//! receiver, not with the last sender (another thread may hold one a while longer; a sender
//! holds the fd itself only while it writes), so a context that ended leaves no fd behind.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::event::{eventfd, EventfdFlags};

use crate::spin;

struct Queue<T> {
    items: VecDeque<T>,
    senders: usize,
    /// The eventfd; `None` once the receiver is gone.
    wake: Option<Arc<OwnedFd>>,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// The eventfd was written since the receiver last cleared this (or the receiver is
    /// awake, watching `pending`).
    told: AtomicBool,
    /// Something is queued or the last sender is gone (a hint for spinning; the queue decides).
    pending: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called with the queue locked: the eventfd to write once the lock is released, unless
    /// the receiver was told already (or is gone). Written after unlocking, so an IO thread
    /// woken at once (on a single CPU the wake-up may preempt the sender) does not find the
    /// queue still locked and sleep on the mutex.
    fn tell(&self, queue: &Queue<T>) -> Option<Arc<OwnedFd>> {
        let wake = queue.wake.as_ref()?;
        (!self.told.swap(true, Ordering::SeqCst)).then(|| wake.clone())
    }
}

/// Writes the eventfd `tell` returned.
fn wake(fd: Option<Arc<OwnedFd>>) {
    if let Some(fd) = fd {
        // Only EAGAIN (the counter is full, so the receiver wakes anyway) can fail.
        let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
    }
}

/// Sends commands to the IO thread; cheap to clone, usable from any thread.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The IO thread's end.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    wake: Arc<OwnedFd>,
    /// Wake-ups taken since the eventfd's counter was last read down.
    unread: Cell<u32>,
}

/// How many wake-ups may go by before the eventfd's counter is read down.
const DRAIN_EVERY: u32 = 1 << 20;

/// What [`Receiver::try_recv`] found.
pub(crate) enum Recv<T> {
    Item(T),
    Empty,
    /// Empty, and every sender is gone.
    Closed,
}

pub(crate) fn channel<T>() -> std::io::Result<(Sender<T>, Receiver<T>)> {
    let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { items: VecDeque::new(), senders: 1, wake: Some(wake.clone()) }),
        told: AtomicBool::new(false),
        pending: AtomicBool::new(false),
    });
    Ok((Sender(shared.clone()), Receiver { shared, wake, unread: Cell::new(0) }))
}

impl<T> Sender<T> {
    /// Queues `item`; gives it back if the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let fd = {
            let mut queue = self.0.lock();
            if queue.wake.is_none() {
                return Err(item);
            }
            queue.items.push_back(item);
            self.0.pending.store(true, Ordering::SeqCst);
            self.0.tell(&queue)
        };
        wake(fd);
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let fd = {
            let mut queue = self.0.lock();
            queue.senders -= 1;
            if queue.senders == 0 {
                self.0.pending.store(true, Ordering::SeqCst);
                self.0.tell(&queue)
            } else {
                None
            }
        };
        wake(fd);
    }
}

impl<T> Receiver<T> {
    /// The fd to watch for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Call when the fd was readable, before taking commands: the next send after this
    /// writes the eventfd again.
    ///
    /// The eventfd is watched edge-triggered, and every write to it is a new edge, so its
    /// counter is read down only now and then (it would take 2^64 writes to fill), saving a
    /// syscall per wake-up.
    pub fn reset(&self) {
        let unread = self.unread.get() + 1;
        if unread >= DRAIN_EVERY {
            let mut buf = [0u8; 8];
            // Nothing to read (EAGAIN) is fine.
            let _ = rustix::io::read(&*self.wake, &mut buf);
            self.unread.set(0);
        } else {
            self.unread.set(unread);
        }
        self.shared.told.store(false, Ordering::SeqCst);
    }

    /// Watches the queue for a short while (when spinning can help) instead of sleeping; true
    /// if something came, to be taken with [`Receiver::try_recv`]. Senders skip the eventfd
    /// meanwhile; whatever they queued is seen here.
    pub fn spin(&self) -> bool {
        let shared = &*self.shared;
        if shared.told.swap(true, Ordering::SeqCst) {
            // Told already: the eventfd was written and epoll will report it.
            return false;
        }
        let came = spin::until(|| shared.pending.load(Ordering::Acquire));
        // From here senders write the eventfd again; one that found `told` set before this
        // store queued before it, so `pending` shows its item.
        shared.told.store(false, Ordering::SeqCst);
        came || shared.pending.load(Ordering::SeqCst)
    }

    pub fn try_recv(&self) -> Recv<T> {
        let mut queue = self.shared.lock();
        if queue.items.len() <= 1 && queue.senders > 0 {
            self.shared.pending.store(false, Ordering::SeqCst);
        }
        match queue.items.pop_front() {
            Some(item) => Recv::Item(item),
            None if queue.senders == 0 => Recv::Closed,
            None => Recv::Empty,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut queue = self.shared.lock();
            // The last reference to the eventfd besides ours: it closes with this receiver.
            queue.wake = None;
            std::mem::take(&mut queue.items)
        };
        // Dropped outside the lock: a command's drop may wake a waiting thread.
        drop(items);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mailbox::Receiver")
    }
}
