//! The thread that runs user functions: a context's main thread (the root uses a dedicated
//! thread). It takes one job at a time from the broker and reports the result; the broker never
//! waits for it, so a function that hangs blocks only further calls (docs/embedding.md).
//!
//! Jobs reach it through a queue of its own rather than `std::sync::mpsc`: a mutex-guarded
//! queue whose sender unparks the calls thread only when it is actually asleep, and whose
//! receiver spins briefly (when more than one CPU is available) before it sleeps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};

use arbor_core::call::{CallRequest, JobId};

use crate::broker::Command;
use crate::registry::Functions;
use crate::{mailbox, spin};

/// One call handed out by the core with `Output::RunCall`.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: JobId,
    pub request: CallRequest,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// The sender is gone: no job will come after those queued.
    closed: bool,
    /// The receiver is gone: sending fails.
    deaf: bool,
    /// The calls thread, while it sleeps waiting for a job.
    sleeper: Option<Thread>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// A job is queued or the sender is gone (a hint read while spinning; the queue decides).
    ready: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The broker's end: hands jobs to the calls thread.
pub(crate) struct JobSender(Arc<Shared>);

/// The calls thread's end.
pub(crate) struct JobReceiver(Arc<Shared>);

pub(crate) fn jobs() -> (JobSender, JobReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false, deaf: false, sleeper: None }),
        ready: AtomicBool::new(false),
    });
    (JobSender(shared.clone()), JobReceiver(shared))
}

impl JobSender {
    /// Queues `job`; gives it back if the calls thread is gone.
    pub fn send(&self, job: Job) -> Result<(), Job> {
        let sleeper = {
            let mut queue = self.0.lock();
            if queue.deaf {
                return Err(job);
            }
            queue.jobs.push_back(job);
            self.0.ready.store(true, Ordering::Release);
            queue.sleeper.take()
        };
        if let Some(thread) = sleeper {
            thread.unpark();
        }
        Ok(())
    }
}

impl Drop for JobSender {
    fn drop(&mut self) {
        let sleeper = {
            let mut queue = self.0.lock();
            queue.closed = true;
            self.0.ready.store(true, Ordering::Release);
            queue.sleeper.take()
        };
        if let Some(thread) = sleeper {
            thread.unpark();
        }
    }
}

impl JobReceiver {
    /// The next job, or `None` once the sender is gone and every job was taken.
    fn recv(&self) -> Option<Job> {
        loop {
            {
                let mut queue = self.0.lock();
                if let Some(job) = queue.jobs.pop_front() {
                    if queue.jobs.is_empty() && !queue.closed {
                        self.0.ready.store(false, Ordering::Relaxed);
                    }
                    return Some(job);
                }
                if queue.closed {
                    return None;
                }
            }
            if spin::until(|| self.0.ready.load(Ordering::Acquire)) {
                continue;
            }
            {
                let mut queue = self.0.lock();
                if !queue.jobs.is_empty() || queue.closed {
                    continue;
                }
                queue.sleeper = Some(thread::current());
            }
            // An unpark between the unlock and here leaves the token set: park returns at once.
            // Any other wake-up (a stray token) just looks at the queue again.
            thread::park();
        }
    }
}

impl Drop for JobReceiver {
    fn drop(&mut self) {
        let jobs = {
            let mut queue = self.0.lock();
            queue.deaf = true;
            queue.sleeper = None;
            std::mem::take(&mut queue.jobs)
        };
        drop(jobs);
    }
}

/// Runs jobs until the broker drops its sender (`Output::CallsClosed`) or goes away.
pub(crate) fn serve(
    functions: &Functions,
    jobs: JobReceiver,
    done: &mailbox::Sender<Command>,
    context: &str,
) {
    while let Some(job) = jobs.recv() {
        let result = functions.run(&job.request, context);
        if done.send(Command::Finished { job: job.id, result }).is_err() {
            return;
        }
    }
}
