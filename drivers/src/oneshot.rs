//! A one-shot channel for call answers: one value, one receiver that either blocks its thread
//! (`wait`, with `std::thread::park`: one futex wait and one wake per answer) or awaits it from
//! any task of any runtime (a plain `Waker`). Lighter than a bounded async-channel, whose
//! blocking receive parks on a mutex and condvar.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};

enum Waiter {
    None,
    Thread(Thread),
    Task(Waker),
}

struct State<T> {
    value: Option<T>,
    /// The sender is gone (with or without sending).
    done: bool,
    waiter: Waiter,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

type Shared<T> = Arc<Inner<T>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends the one value; dropping it unsent tells the receiver none will come.
pub(crate) struct Sender<T>(Shared<T>);

/// Receives the one value, or `None` if the sender went away without sending.
pub(crate) struct Receiver<T>(Shared<T>);

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared =
        Arc::new(Inner { state: Mutex::new(State { value: None, done: false, waiter: Waiter::None }) });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        lock(&self.0).value = Some(value);
        // Drop marks it done and wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiter = {
            let mut state = lock(&self.0);
            state.done = true;
            std::mem::replace(&mut state.waiter, Waiter::None)
        };
        match waiter {
            Waiter::None => {}
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

impl<T> Receiver<T> {
    /// Blocks this thread until the value (or the sender's end) arrives.
    pub fn wait(self) -> Option<T> {
        loop {
            {
                let mut state = lock(&self.0);
                if state.done {
                    return state.value.take();
                }
                state.waiter = Waiter::Thread(thread::current());
            }
            // A wake-up between the unlock and here leaves the token set: park returns at once.
            thread::park();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.0);
        if state.done {
            return Poll::Ready(state.value.take());
        }
        state.waiter = Waiter::Task(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}
