//! `arbor`: the real-process driver of arbor-core.
//!
//! Every context is a process running the same binary: [`init`] at the top of `main` decides
//! whether this process is the root (it returns a [`Launcher`]) or a child spawned by another
//! context (it takes over and never returns). Each context's core
//! [`Host`](arbor_core::host::Host) — the shared host contract around its `Node` — is driven by
//! one future on an IO thread, on a small runtime seam ([`runtime`]): smol by default, tokio
//! behind the `tokio` feature. Blocking functions run on the context's calls thread (a child's
//! main thread), so a hung one blocks calls only, never IO or shutdown; async functions run as
//! tasks on a tasks thread. The process model (fds, environment, signals, reaping) is in
//! docs/driver.md.
//!
//! Every line a context prints reaches the root, which by default prints it on its own stdout
//! or stderr — the stream it was printed on — as `[name] text` ([`ChildOutput`]; a callback or
//! `tracing` instead, by choice). A function's panic answers its call with the message,
//! location and (with `RUST_BACKTRACE`) backtrace. [`SpawnOptions`] give a child arguments,
//! environment and a working directory; [`test_support`] lets a `#[test]` spawn contexts.
//!
//! The API is async first ([`Context`], [`Root`]: futures usable from any smol or tokio task),
//! with a thin blocking layer in [`blocking`]:
//!
//! ```no_run
//! use arbor::{Functions, SpawnOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let functions = Functions::new()
//!         .register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b));
//!     let root = arbor::init(functions).start()?; // a child never gets past init()
//!     smol::block_on(async {
//!         let child = root.context().spawn(SpawnOptions::named("worker")).await?;
//!         let sum: i32 = root.context().call(child.id, "add", &(2, 3)).await?;
//!         assert_eq!(sum, 5);
//!         let report = root.shutdown().await;
//!         println!("tree gone in {:?}", report.took);
//!         Ok(())
//!     })
//! }
//! ```

pub mod blocking;
pub mod bootstrap;
mod capture;
mod child_env;
mod client;
mod clock;
mod context;
mod deliveries;
mod driver;
mod error;
mod events;
mod exit;
pub mod faults;
mod function;
mod groups;
mod job_queue;
mod logs;
mod oneshot;
mod output;
mod panics;
mod registry;
mod root;
mod root_slot;
pub mod runtime;
mod shared;
mod signals;
mod spawn;
mod state;
pub mod test_support;

pub use arbor_core::call::{CallError, CallErrorKind};
pub use arbor_core::ids::ContextId;
pub use arbor_core::lines::LogSource;
pub use arbor_core::reaper::{ExitStatus, Pid};

pub use arbor_core::departure::{ControlError, Departure, DepartureCause};
pub use child_env::RESERVED_ENV;
pub use client::{context, CallOptions, Context, PendingCall, PendingDeparture, PendingSpawn};
pub use error::{SpawnError, StartError};
pub use function::{Function, FunctionName};
pub use logs::{LogHandler, LogRecord};
pub use output::ChildOutput;
pub use registry::{CallFuture, Functions};
pub use root::{init, Launcher, Root, ShutdownReport, RUNTIME_VAR};
pub use spawn::{ChildInfo, SpawnOptions};
pub use state::Reaped;
pub use test_support::args;
