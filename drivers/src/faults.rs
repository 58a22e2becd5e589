//! Functions that misbehave on purpose, for demonstrating and testing shutdown (the demo, the
//! real-process tests, the benchmarks): register them by name like any other function.
//!
//! ```no_run
//! let functions = arbor::Functions::new()
//!     .register("hang", arbor::faults::hang)
//!     .register("ignore_sigterm", arbor::faults::ignore_sigterm);
//! ```

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Never returns: the calling thread parks forever (a user function stuck for good).
pub fn hang(_: ()) -> Result<(), String> {
    loop {
        std::thread::park();
    }
}

/// From now on SIGTERM does not end this process (a handler that only sets a flag), as with a
/// program that ignores it.
pub fn ignore_sigterm(_: ()) -> Result<(), String> {
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::new(AtomicBool::new(false)))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
