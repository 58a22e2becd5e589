//! `arbor`: the real-process driver of arbor-core.
//!
//! Every context is a process running the same binary: [`init`] at the top of `main` decides
//! whether this process is the root (it returns a [`Launcher`]) or a child spawned by another
//! context (it takes over and never returns). Each context's core
//! [`Node`](arbor_core::node::Node) is driven by two threads in turn (docs/embedding.md): an IO
//! thread, and the thread that runs calls (a child's main thread), which serves IO itself while
//! it has no call to run — so a call costs no hand-off between threads, and a hung user function
//! blocks calls only, never IO or shutdown. The process model (fds, environment, signals,
//! reaping) is in docs/driver.md.
//!
//! ```no_run
//! use arbor::{ContextId, Functions, SpawnOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let functions = Functions::new()
//!         .register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b));
//!     let root = arbor::init(functions).start()?; // a child never gets past init()
//!     let child = root.context().spawn(SpawnOptions::named("worker"))?;
//!     let sum: i32 = root.context().call(child.id, "add", &(2, 3))?;
//!     assert_eq!(sum, 5);
//!     let report = root.shutdown();
//!     println!("tree gone in {:?}", report.took);
//!     Ok(())
//! }
//! # let _ = ContextId::ROOT;
//! ```

mod broker;
mod child_env;
mod client;
mod clock;
mod context;
mod error;
mod exit;
pub mod faults;
mod logger;
mod logs;
mod oneshot;
mod reap;
mod registry;
mod root;
mod signals;
mod spawn;
mod spin;
mod streams;

pub use arbor_core::call::{CallError, CallErrorKind};
pub use arbor_core::ids::ContextId;
pub use arbor_core::lines::LogSource;
pub use arbor_core::reaper::{ExitStatus, Pid};

pub use client::{Context, PendingCall};
pub use error::{SpawnError, StartError};
pub use logs::LogRecord;
pub use registry::Functions;
pub use root::{init, Launcher, Reaped, Root, ShutdownReport};
pub use spawn::{ChildInfo, SpawnOptions};

/// The context this process runs, once it runs one: set in a child by [`init`], in the root by
/// [`Launcher::start`]. Functions running on the main thread use it to spawn and call further.
pub fn context() -> Option<Context> {
    client::current()
}
