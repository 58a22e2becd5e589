//! A child's `tracing` subscriber: each event becomes one line on stderr (the capture socket),
//! in `tracing_subscriber::fmt`'s format without time stamps or colours —
//! `LEVEL span{fields}:span: target: message key=value` — which the root reads the level back
//! from (logs.rs, `LogRecord::tracing_level`).
//!
//! It is this small on purpose: `tracing_subscriber`'s registry costs every child about 100 KiB
//! of resident memory (its span slab is 32 KiB of zeroed pointers from the start, and its code
//! is touched by the first event), and a child needs none of its layers or filters.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::num::NonZeroU64;
use std::sync::{Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

/// The subscriber: events at `max` or above become lines written with `write`.
pub(crate) struct LineSubscriber {
    max: LevelFilter,
    write: fn(&[u8]),
    spans: Mutex<Spans>,
}

/// Open spans, by id (index + 1).
#[derive(Default)]
struct Spans {
    slots: Vec<Option<Span>>,
    free: Vec<usize>,
}

struct Span {
    name: &'static str,
    /// Its fields, formatted as they are on an event's line.
    fields: String,
    parent: Option<Id>,
    /// Handles on it (`clone_span`), and its children, which keep it open.
    refs: usize,
}

thread_local! {
    /// The spans this thread has entered, innermost last.
    static ENTERED: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
}

impl LineSubscriber {
    pub(crate) fn new(max: LevelFilter, write: fn(&[u8])) -> LineSubscriber {
        LineSubscriber { max, write, spans: Mutex::default() }
    }

    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current() -> Option<Id> {
        ENTERED.try_with(|e| e.borrow().last().cloned()).ok().flatten()
    }

    /// The line for `event`: level, the spans it is in (outermost first), target, fields.
    fn line(&self, event: &Event<'_>) -> String {
        let meta = event.metadata();
        let mut line = String::with_capacity(128);
        let _ = write!(line, "{} ", level(meta.level()));
        let parent = match event.parent() {
            Some(id) => Some(id.clone()),
            None if event.is_contextual() => Self::current(),
            None => None,
        };
        if let Some(id) = parent {
            let spans = self.spans();
            let mut scope = Vec::new();
            let mut at = spans.get(&id);
            while let Some(span) = at {
                scope.push(span);
                at = span.parent.as_ref().and_then(|p| spans.get(p));
            }
            for span in scope.iter().rev() {
                line.push_str(span.name);
                if !span.fields.is_empty() {
                    let _ = write!(line, "{{{}}}", span.fields);
                }
                line.push(':');
            }
            if !scope.is_empty() {
                line.push(' ');
            }
        }
        let _ = write!(line, "{}: ", meta.target());
        event.record(&mut Fields(&mut line, false));
        line.push('\n');
        line
    }
}

impl Spans {
    fn get(&self, id: &Id) -> Option<&Span> {
        let i = usize::try_from(id.into_u64()).ok()?.checked_sub(1)?;
        self.slots.get(i)?.as_ref()
    }

    fn get_mut(&mut self, id: &Id) -> Option<&mut Span> {
        let i = usize::try_from(id.into_u64()).ok()?.checked_sub(1)?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Lets go of one handle on `id`; true if that closed it (and perhaps its parents).
    fn release(&mut self, id: &Id) -> bool {
        let mut next = Some(id.clone());
        let mut closed_first = false;
        let mut first = true;
        while let Some(id) = next.take() {
            let Some(span) = self.get_mut(&id) else { break };
            span.refs -= 1;
            if span.refs == 0 {
                next = span.parent.take();
                let i = (id.into_u64() - 1) as usize;
                self.slots[i] = None;
                self.free.push(i);
                closed_first |= first;
            }
            first = false;
        }
        closed_first
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// Formats fields as `tracing_subscriber` does: the message as it is, others `name=value:?`,
/// separated by spaces. The flag says whether something was written already.
struct Fields<'a>(&'a mut String, bool);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if std::mem::replace(&mut self.1, true) {
            self.0.push(' ');
        }
        let _ = match field.name() {
            "message" => write!(self.0, "{value:?}"),
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.0, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}

impl tracing::Subscriber for LineSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let parent = match attrs.parent() {
            Some(id) => Some(id.clone()),
            None if attrs.is_contextual() => Self::current(),
            None => None,
        };
        let mut fields = String::new();
        attrs.record(&mut Fields(&mut fields, false));
        let mut spans = self.spans();
        let parent = parent.filter(|p| match spans.get_mut(p) {
            Some(p) => {
                p.refs += 1;
                true
            }
            None => false,
        });
        let span = Span { name: attrs.metadata().name(), fields, parent, refs: 1 };
        let i = match spans.free.pop() {
            Some(i) => {
                spans.slots[i] = Some(span);
                i
            }
            None => {
                spans.slots.push(Some(span));
                spans.slots.len() - 1
            }
        };
        Id::from_non_zero_u64(NonZeroU64::MIN.saturating_add(i as u64))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(span) = self.spans().get_mut(span) {
            let written = !span.fields.is_empty();
            values.record(&mut Fields(&mut span.fields, written));
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        (self.write)(self.line(event).as_bytes());
    }

    fn enter(&self, span: &Id) {
        let _ = ENTERED.try_with(|e| e.borrow_mut().push(span.clone()));
    }

    fn exit(&self, span: &Id) {
        let _ = ENTERED.try_with(|e| {
            let mut e = e.borrow_mut();
            if let Some(i) = e.iter().rposition(|s| s == span) {
                e.remove(i);
            }
        });
    }

    fn clone_span(&self, id: &Id) -> Id {
        if let Some(span) = self.spans().get_mut(id) {
            span.refs += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        self.spans().release(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    static OURS: StdMutex<String> = StdMutex::new(String::new());
    static THEIRS: StdMutex<Vec<u8>> = StdMutex::new(Vec::new());

    struct Theirs;

    impl std::io::Write for Theirs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            THEIRS.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() {
        tracing::info!(target: "demo", "hello {}", 1);
        tracing::warn!(target: "demo", n = 2, name = "x", yes = true, r#type = ?Some(3), "careful");
        tracing::debug!(target: "demo", "not shown");
        tracing::error!(n = -4);
        let outer = tracing::info_span!("outer", id = 7, what = "w");
        let _o = outer.enter();
        let inner = tracing::info_span!("inner", later = tracing::field::Empty);
        inner.record("later", 5);
        let _i = inner.enter();
        tracing::error!(target: "demo", "inside");
        let empty = tracing::info_span!(parent: None, "detached");
        tracing::info!(parent: &empty, "explicit parent");
    }

    #[test]
    fn lines_read_exactly_as_tracing_subscribers_fmt_without_time_or_colours() {
        let ours = LineSubscriber::new(LevelFilter::INFO, |line| {
            OURS.lock().unwrap().push_str(&String::from_utf8_lossy(line));
        });
        tracing::subscriber::with_default(ours, events);
        let theirs = tracing_subscriber::fmt()
            .with_writer(|| Theirs)
            .with_ansi(false)
            .without_time()
            .with_max_level(LevelFilter::INFO)
            .finish();
        tracing::subscriber::with_default(theirs, events);
        let theirs = String::from_utf8(THEIRS.lock().unwrap().clone()).unwrap();
        assert_eq!(*OURS.lock().unwrap(), theirs);
        assert!(theirs.starts_with(" INFO demo: hello 1\n"), "{theirs}");
        assert!(theirs.contains("ERROR outer{id=7 what=\"w\"}:inner{later=5}: demo: inside\n"), "{theirs}");
    }

    #[test]
    fn a_closed_span_frees_its_slot_and_its_parents() {
        let subscriber = LineSubscriber::new(LevelFilter::INFO, |_| {});
        let dispatch = tracing::Dispatch::new(subscriber);
        tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("outer");
            let inner = outer.in_scope(|| tracing::info_span!("inner"));
            drop(outer);
            drop(inner);
        });
        let subscriber = dispatch.downcast_ref::<LineSubscriber>().unwrap();
        let spans = subscriber.spans();
        assert!(spans.slots.iter().all(Option::is_none));
        assert_eq!(spans.free.len(), 2);
    }
}
