//! The thread that runs user functions: a context's main thread (the root uses a dedicated
//! thread). It takes one job at a time from the broker and reports the result; the broker never
//! waits for it, so a function that hangs blocks only further calls (docs/embedding.md).

use std::sync::mpsc;

use arbor_core::call::{CallRequest, JobId};

use crate::broker::Command;
use crate::mailbox;
use crate::registry::Functions;

/// One call handed out by the core with `Output::RunCall`.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: JobId,
    pub request: CallRequest,
}

/// Runs jobs until the broker drops its sender (`Output::CallsClosed`) or goes away.
pub(crate) fn serve(
    functions: &Functions,
    jobs: mpsc::Receiver<Job>,
    done: &mailbox::Sender<Command>,
    context: &str,
) {
    for job in jobs {
        let result = functions.run(&job.request, context);
        if done.send(Command::Finished { job: job.id, result }).is_err() {
            return;
        }
    }
}
