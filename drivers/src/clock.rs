//! The driver's clock: the core's [`Instant`] as monotonic nanoseconds since this process
//! started using arbor (the core reads no clock; docs/embedding.md "Time").

use std::sync::OnceLock;
use std::time::Duration;

use arbor_core::time::Instant;

static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

fn epoch() -> std::time::Instant {
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// Now, as the core counts time.
pub(crate) fn now() -> Instant {
    let nanos = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    Instant::from_nanos(nanos)
}

/// The std instant matching a core instant, for arming a timer.
pub(crate) fn to_std(at: Instant) -> std::time::Instant {
    epoch() + Duration::from_nanos(at.as_nanos())
}
