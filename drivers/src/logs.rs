//! Log lines of the whole tree, as the root receives them (`Output::LogLine`), and the child's
//! own `tracing` setup that feeds them.
//!
//! A child's `tracing` events are formatted as text on its stderr, which is a capture socket, so
//! they travel to the root like any other output — in order with the prints around them, and
//! with nothing to lose at shutdown that a print would not also lose. The root turns every line
//! back into a `tracing` event tagged with the context's id and name; a line that starts the way
//! the child's formatter starts one (`<LEVEL> <target>: …`) keeps its level.

use arbor_core::ids::ContextId;
use arbor_core::node::{Diagnostic, LogLine};
use std::io::Write as _;

use tracing::Level;

/// A function that takes the tree's output lines at the root ([`crate::ChildOutput::Handler`]).
pub type LogHandler = Box<dyn Fn(&LogRecord) + Send + Sync>;

/// A core diagnostic as a `tracing` event: what means something went wrong at `warn`, the
/// rest at `debug`.
pub(crate) fn diagnostic(d: &Diagnostic) {
    match diagnostic_level(d) {
        Level::WARN => tracing::warn!(diagnostic = ?d, "arbor"),
        _ => tracing::debug!(diagnostic = ?d, "arbor"),
    }
}

/// The level [`diagnostic`] emits `d` at.
pub(crate) fn diagnostic_level(d: &Diagnostic) -> Level {
    match d {
        Diagnostic::StreamFailed { .. }
        | Diagnostic::ChildAbandoned(_)
        | Diagnostic::BadCallRequest { .. }
        | Diagnostic::UnansweredCallFailed { .. }
        // Not `IdRequestRefused`: a child can send any number of such requests, and a warning
        // each would flood the root's log (the asker's own `IdsRefused` says it once).
        | Diagnostic::IdsRefused { .. } => Level::WARN,
        _ => Level::DEBUG,
    }
}

/// One line of output from a context, as it reached the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The context that printed it.
    pub context: ContextId,
    /// Its name, as announced when it was spawned (empty if unknown).
    pub name: String,
    /// `stdout` or `stderr`.
    pub source: String,
    /// Python `logging` level number: 20 for stdout, 30 for stderr.
    pub level: u32,
    /// The line, without its newline.
    pub text: String,
}

impl LogRecord {
    pub(crate) fn new(line: LogLine, name: Option<&str>) -> LogRecord {
        LogRecord {
            context: line.context,
            name: name.unwrap_or_default().to_string(),
            source: line.source,
            level: line.level,
            text: line.text,
        }
    }

    /// The level to re-emit the line at, and the text without a `tracing` level prefix.
    pub fn tracing_level(&self) -> (Level, &str) {
        let trimmed = self.text.trim_start();
        for (word, level) in [
            ("TRACE ", Level::TRACE),
            ("DEBUG ", Level::DEBUG),
            ("INFO ", Level::INFO),
            ("WARN ", Level::WARN),
            ("ERROR ", Level::ERROR),
        ] {
            if let Some(rest) = trimmed.strip_prefix(word) {
                return (level, rest);
            }
        }
        let level = if self.level >= 30 { Level::WARN } else { Level::INFO };
        (level, &self.text)
    }
}

/// The default handling of a record: a `tracing` event with target `arbor::remote`.
pub(crate) fn emit(record: &LogRecord) {
    let (level, text) = record.tracing_level();
    let (ctx, name) = (record.context.0, record.name.as_str());
    match level {
        Level::TRACE => tracing::trace!(target: "arbor::remote", context = ctx, "[{name}] {text}"),
        Level::DEBUG => tracing::debug!(target: "arbor::remote", context = ctx, "[{name}] {text}"),
        Level::INFO => tracing::info!(target: "arbor::remote", context = ctx, "[{name}] {text}"),
        Level::WARN => tracing::warn!(target: "arbor::remote", context = ctx, "[{name}] {text}"),
        Level::ERROR => tracing::error!(target: "arbor::remote", context = ctx, "[{name}] {text}"),
    }
}

/// In a child: `tracing` events go, formatted, to stderr (the capture socket). No colours, no
/// time stamps: the root adds its own when it prints them.
///
/// On the IO thread, which is the one that drains the capture sockets, a write to stderr must
/// never block: with the socket full (a runaway printer, or loggers paused by backpressure) it
/// would wait for itself forever. So there its events — and a panic's message — are sent with
/// `MSG_DONTWAIT`, and dropped (counted, and said when there is room again) if the socket is
/// full; every other thread writes normally, blocking as a print does.
pub(crate) fn install_child_subscriber(max: tracing::level_filters::LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| ChildStderr)
        .with_ansi(false)
        .without_time()
        .with_max_level(max)
        .try_init();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if on_io_thread() {
            let _ = ChildStderr.write_all(format!("arbor IO thread: {info}\n").as_bytes());
        } else {
            previous(info);
        }
    }));
}

thread_local! {
    static IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as the context's IO thread (see [`install_child_subscriber`]).
pub(crate) fn mark_io_thread() {
    IO_THREAD.with(|f| f.set(true));
}

fn on_io_thread() -> bool {
    IO_THREAD.with(|f| f.get())
}

/// Lines the IO thread could not write to a full stderr capture.
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The child's stderr for its own `tracing` events.
struct ChildStderr;

impl std::io::Write for ChildStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        if !on_io_thread() {
            return std::io::stderr().write(buf);
        }
        let fd = std::io::stderr();
        let fd = std::os::fd::AsFd::as_fd(&fd);
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!(
                "arbor: {dropped} line(s) of the IO thread's own logging dropped (stderr was full)\n"
            );
            if rustix::net::send(fd, note.as_bytes(), rustix::net::SendFlags::DONTWAIT).is_err() {
                DROPPED.fetch_add(dropped, Ordering::Relaxed);
            }
        }
        // Not a socket any more (user code replaced fd 2, or shutdown pointed it at /dev/null)
        // or full: dropped, never waited for.
        if rustix::net::send(fd, buf, rustix::net::SendFlags::DONTWAIT).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(level: u32, text: &str) -> LogRecord {
        LogRecord {
            context: ContextId(1),
            name: String::new(),
            source: "stderr".into(),
            level,
            text: text.into(),
        }
    }

    #[test]
    fn a_child_tracing_line_keeps_its_level_and_other_lines_follow_their_stream() {
        assert_eq!(record(30, " INFO demo: hi").tracing_level(), (Level::INFO, "demo: hi"));
        assert_eq!(record(30, "ERROR demo: bad").tracing_level(), (Level::ERROR, "demo: bad"));
        assert_eq!(record(30, "plain").tracing_level(), (Level::WARN, "plain"));
        assert_eq!(record(20, "INFOrmation").tracing_level(), (Level::INFO, "INFOrmation"));
    }
}
