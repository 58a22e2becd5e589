//! The queue of blocking calls for the calls thread: a mutex-guarded deque and a condvar,
//! notified only when the calls thread waits, and only after the mutex is let go of.
//!
//! (`std::sync::mpsc` wakes a waiting receiver while holding its own internal lock: a woken
//! calls thread that runs at once — on one CPU it does, preempting the IO thread — finds that
//! lock still held when it comes back for the next call, and two more futex calls and context
//! switches follow on every call.)

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::registry::Job;

#[derive(Default)]
struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    senders: usize,
    /// The receiver is gone: sends are refused.
    closed: bool,
    /// The receiver waits on the condvar.
    waiting: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands calls to the calls thread. The queue ends (after the calls in it) when every sender
/// is dropped.
pub(crate) struct JobSender(Arc<Inner>);

/// The calls thread's end: an iterator over calls, ending once every sender is dropped.
pub(crate) struct JobQueue(Arc<Inner>);

/// A queue of calls and its first sender.
pub(crate) fn channel() -> (JobSender, JobQueue) {
    let inner = Arc::new(Inner::default());
    inner.lock().senders = 1;
    (JobSender(inner.clone()), JobQueue(inner))
}

impl JobSender {
    /// Queues `job`, waking the calls thread if it waits; gives it back if the calls thread is
    /// gone.
    pub fn send(&self, job: Job) -> Result<(), Job> {
        let mut q = self.0.lock();
        if q.closed {
            return Err(job);
        }
        q.jobs.push_back(job);
        let wake = std::mem::take(&mut q.waiting);
        drop(q);
        if wake {
            self.0.ready.notify_one();
        }
        Ok(())
    }
}

impl Clone for JobSender {
    fn clone(&self) -> JobSender {
        self.0.lock().senders += 1;
        JobSender(self.0.clone())
    }
}

impl Drop for JobSender {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.senders -= 1;
        let wake = q.senders == 0 && std::mem::take(&mut q.waiting);
        drop(q);
        if wake {
            self.0.ready.notify_one();
        }
    }
}

impl Iterator for JobQueue {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        let mut q = self.0.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                return Some(job);
            }
            if q.senders == 0 {
                return None;
            }
            q.waiting = true;
            q = self.0.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_core::call::{CallRequest, JobId, RequestMeta};

    fn job(n: u64) -> Job {
        let meta = RequestMeta { types: None, timeout: None };
        Job { id: JobId(n), request: CallRequest { function: "f".into(), args: Default::default(), meta } }
    }

    #[test]
    fn jobs_arrive_in_order_and_the_queue_ends_with_its_last_sender() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        let taker = std::thread::spawn(move || rx.map(|j| j.id.0).collect::<Vec<_>>());
        for n in 0..100 {
            assert!(tx.send(job(n)).is_ok());
            if n % 7 == 0 {
                std::thread::yield_now();
            }
        }
        drop(tx);
        assert!(tx2.send(job(100)).is_ok());
        drop(tx2);
        assert_eq!(taker.join().unwrap(), (0..=100).collect::<Vec<_>>());
    }

    /// Senders racing each other and spurious wake-ups of the waiting thread never lose a job
    /// or leave the taker asleep with work queued (a lost wake-up fails the bounded wait
    /// instead of hanging the test).
    #[test]
    fn racing_senders_and_spurious_wake_ups_lose_no_job() {
        for round in 0..200u64 {
            let (tx, rx) = channel();
            let inner = rx.0.clone();
            let (done, taken) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = done.send(rx.count());
            });
            let spurious = std::thread::spawn(move || {
                for _ in 0..20 {
                    inner.ready.notify_all();
                    std::thread::yield_now();
                }
            });
            let senders: Vec<_> = (0..3u64)
                .map(|t| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        for n in 0..20 {
                            assert!(tx.send(job(t * 100 + n)).is_ok());
                            if (n + round) % 3 == 0 {
                                std::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            for s in senders {
                s.join().unwrap();
            }
            spurious.join().unwrap();
            let taken = taken.recv_timeout(std::time::Duration::from_secs(10));
            assert_eq!(taken, Ok(60), "round {round}: the taker lost a job or slept through one");
        }
    }

    #[test]
    fn a_send_after_the_calls_thread_is_gone_is_refused() {
        let (tx, rx) = channel();
        drop(rx);
        assert_eq!(tx.send(job(1)).map_err(|j| j.id.0), Err(1));
    }
}
