//! A short bounded spin before a thread sleeps, so a hand-off answered within a few
//! microseconds costs no futex wait and wake (nor, unpinned, a cross-CPU wake-up of an idle
//! core). Only when this process may run on more than one CPU: on one CPU the thread being
//! waited for cannot run while we spin, so spinning would only delay it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a thread about to sleep first watches for what it waits for. Measured on two
/// cores (docs/benchmarks.md): 10 µs catches too little, 50 µs and more starves the threads
/// being waited for (four threads share two CPUs in a root-and-child round trip).
const BUDGET: Duration = Duration::from_micros(20);

/// Spinning may pay off: more than one CPU is available to this process (the affinity mask,
/// as `available_parallelism` reads it on Linux), looked up once.
fn allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Spins until `ready()` holds (true) or the budget runs out (false); false at once when
/// spinning cannot help.
pub(crate) fn until(mut ready: impl FnMut() -> bool) -> bool {
    if !allowed() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= BUDGET {
            return ready();
        }
    }
}
