//! A child context taking over its process: what [`crate::init`] does in a process that a parent
//! context spawned (docs/driver.md "A child's start").
//!
//! Two threads: the IO thread runs the context's driver on the runtime its parent runs on (and
//! spawns grandchildren, so PR_SET_PDEATHSIG ties them to a thread that lives as long as the
//! process), and the main thread runs blocking calls, one at a time, until calls are closed.
//! The IO thread ends the process once the context exits, whatever the main thread is doing.

use std::thread;

use arbor_core::host::{Host, HostConfig};
use arbor_core::node::{Node, NodeConfig};

use crate::bootstrap::{self, Bootstrap};
use crate::client::{self, Context};
use crate::driver::{self, Setup};
use crate::registry::Functions;
use crate::runtime;
use crate::shared::Shared;
use crate::{clock, exit, job_queue, logs};

/// Runs this process as the child context `boot` describes, until the context exits.
pub(crate) fn run_child(boot: Bootstrap, functions: Functions) -> ! {
    clock::now();
    let Bootstrap { env, parent, captures } = boot;
    logs::install_child_subscriber(tracing::level_filters::LevelFilter::INFO);
    let runtime = runtime::by_name(&env.runtime).unwrap_or_else(|| {
        bootstrap::fail(&format_args!(
            "this build has no {:?} runtime (it has {:?})",
            env.runtime,
            runtime::available()
        ))
    });
    let mut config = NodeConfig::child(env.id, env.ancestors);
    config.grace = env.grace;
    if !env.name.is_empty() {
        config.name = env.name;
    }
    let (jobs, calls) = job_queue::channel();
    let host = Host::new(Node::new(config), HostConfig::default());
    let shared = Shared::new(host, runtime, functions, None, None, jobs);
    let io_shared = shared.clone();
    let setup = Setup { parent: Some(parent), captures, interrupts: None };
    let io = thread::Builder::new().name("arbor-io".into()).spawn(move || {
        logs::mark_io_thread();
        // Whatever happens on the IO thread — exit, or a bug that panics — the process ends
        // here, never leaving a main thread behind with no one to serve its streams.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || driver::run(io_shared, setup)));
        exit::sigterm_self()
    });
    if let Err(e) = io {
        bootstrap::fail(&format_args!("cannot start the IO thread: {e}"));
    }
    client::set_current(Some(Context::new(shared.clone())));
    // The main thread runs blocking calls until calls are closed; the IO thread ends the process.
    for job in calls {
        let result = shared.functions.run(&job.request, &shared.name);
        flush_stdout();
        shared.call_finished(job.id, result);
    }
    drop(shared);
    loop {
        thread::park();
    }
}

/// Writes out what a function left in std's stdout buffer: a `print!` without a newline stays
/// there (std flushes at a newline), and this process ends by SIGTERM, which flushes nothing, so
/// a last partial line would be lost. Done on the thread that ran the function, before its answer
/// is reported, so the text reaches the capture socket ahead of the answer. Never on the IO
/// thread: the stdout lock may be held by a writer waiting for that thread to drain the socket.
pub(crate) fn flush_stdout() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}
