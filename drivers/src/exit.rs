//! Ending a child process as the core's `Exit { SigtermSelf }` asks (docs/shutdown.md "Closing and exit").

use rustix::process::{getpid, kill_process, Signal};

/// SIGTERM to ourselves, so the process ends the way mitogen's children do (a main thread hung
/// in user code dies with it); if we are still here, SIGTERM is ignored or handled, and we
/// `_exit` anyway — no atexit handlers, no flushing through a stdout that is now /dev/null.
pub(crate) fn sigterm_self() -> ! {
    // A signal a process sends itself that the calling thread does not block is delivered
    // before kill() returns: if SIGTERM's action is to terminate, we never get past this line.
    let _ = kill_process(getpid(), Signal::TERM);
    signal_hook::low_level::exit(128 + 15)
}
