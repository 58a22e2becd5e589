//! A function's panic as its caller sees it: the message, where it panicked and — when
//! `RUST_BACKTRACE` (or `RUST_LIB_BACKTRACE`) asks for one — the backtrace, all in the
//! `Failed` error's text (docs/driver.md "A function's panic").
//!
//! `catch_unwind` hands back the payload only: the location and the backtrace exist only while
//! the panic hook runs, on the panicking thread. So [`catch`] marks its thread as running a call,
//! and the hook [`install`] adds records the location and a `Backtrace::capture()` for that
//! thread instead of printing them; `catch` picks the record up once the unwinding reaches it.
//! The same holds for blocking functions (the calls thread) and async ones (each poll of the
//! task, on the tasks thread). A panic anywhere else — outside any call, or on a thread arbor
//! does not run calls on — goes to the hook that was there before, as if arbor were not there.
//! A call's panic is not printed as well: its caller has all of it, so the text is not
//! duplicated into the tree's output.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a call under [`catch`].
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the last panic of a call on this thread.
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

struct Seen {
    location: Option<String>,
    backtrace: Backtrace,
}

/// A panic caught in a call: its message, location and (if captured) backtrace.
#[derive(Debug)]
pub(crate) struct Panic {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

impl fmt::Display for Panic {
    /// `panicked at src/lib.rs:10:5: the message`, then `stack backtrace:` and the frames when
    /// one was captured — the default hook's own layout.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "panicked at {location}: {}", self.message)?,
            None => write!(f, "panicked: {}", self.message)?,
        }
        if let Some(backtrace) = &self.backtrace {
            write!(f, "\nstack backtrace:\n{backtrace}")?;
        }
        Ok(())
    }
}

/// Adds arbor's hook in front of the current one, once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CALL.with(Cell::get) {
                let location = info.location().map(ToString::to_string);
                let seen = Seen { location, backtrace: Backtrace::capture() };
                SEEN.with(|s| *s.borrow_mut() = Some(seen));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f` as a call: its panic comes back as a [`Panic`] with what the hook saw.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panic> {
    install();
    let outer = IN_CALL.with(|c| c.replace(true));
    SEEN.with(|s| s.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(outer));
    result.map_err(|payload| {
        let seen = SEEN.with(|s| s.borrow_mut().take());
        let message = message(&*payload);
        match seen {
            Some(Seen { location, backtrace }) => {
                let backtrace = (backtrace.status() == BacktraceStatus::Captured).then(|| {
                    let full = backtrace.to_string();
                    match std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v == "full") {
                        true => full,
                        false => short(&full),
                    }
                });
                Panic { message, location, backtrace }
            }
            // Another hook replaced ours since: the message is all there is.
            None => Panic { message, location: None, backtrace: None },
        }
    })
}

/// The frames the default hook shows for `RUST_BACKTRACE=1`: those between std's
/// `__rust_end_short_backtrace` (the panic machinery and arbor's hook above it) and
/// `__rust_begin_short_backtrace` (a thread's or `main`'s start below), numbered from 0.
/// Without both markers, the whole backtrace.
fn short(full: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in full.lines() {
        let starts_frame = line.trim_start().split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        match frames.last_mut() {
            Some(frame) if !starts_frame => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    let has = |frame: &Vec<&str>, marker: &str| frame.first().is_some_and(|l| l.contains(marker));
    let start = frames.iter().position(|f| has(f, "__rust_end_short_backtrace"));
    let end = frames.iter().position(|f| has(f, "__rust_begin_short_backtrace"));
    let (Some(start), Some(end)) = (start, end) else { return full.to_string() };
    if start + 1 >= end {
        return full.to_string();
    }
    let mut out = String::new();
    for (n, frame) in frames[start + 1..end].iter().enumerate() {
        let name = frame[0].trim_start().split_once(": ").map_or("", |(_, name)| name);
        out.push_str(&format!("{n:>4}: {name}\n"));
        for line in &frame[1..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.");
    out
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_names_its_message_and_location() {
        let line = line!() + 1;
        let panic = catch(|| -> () { panic!("on purpose {}", 7) }).err().map(|p| p.to_string());
        let text = panic.unwrap_or_default();
        let at = format!("panicked at {}:{line}:", file!());
        assert!(text.starts_with(&at), "{text}");
        assert!(text.lines().next().is_some_and(|l| l.ends_with(": on purpose 7")), "{text}");
    }

    #[test]
    fn a_short_backtrace_keeps_the_frames_between_the_markers_renumbered() {
        let full = "   0: arbor::hook\n             at src/panics.rs:1:1\n   1: std::__rust_end_short_backtrace\n   2: user::f\n             at src/main.rs:3:4\n   3: user::g\n   4: std::__rust_begin_short_backtrace\n   5: main\n";
        let short = short(full);
        assert!(
            short.starts_with("   0: user::f\n             at src/main.rs:3:4\n   1: user::g\n"),
            "{short}"
        );
        assert!(!short.contains("arbor::hook") && !short.contains("main\n"), "{short}");
        assert_eq!(super::short("   0: no markers\n"), "   0: no markers\n");
    }

    #[test]
    fn a_call_that_returns_is_not_a_panic_and_nesting_restores_the_mark() {
        let inner = catch(|| catch(|| 5).ok());
        assert_eq!(inner.ok().flatten(), Some(5));
        assert!(!IN_CALL.with(Cell::get));
    }
}
