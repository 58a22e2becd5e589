//! A child context taking over its process: what [`crate::init`] does in a process that a parent
//! context spawned (docs/driver.md "A child's start").

use std::fs::File;
use std::os::fd::AsFd;
use std::thread;

use arbor_core::lines::LogSource;
use arbor_core::node::NodeConfig;
use rustix::process::{getppid, set_parent_process_death_signal, Signal};

use crate::broker::{Setup, Shared};
use crate::child_env::ChildEnv;
use crate::client::{self, Context};
use crate::logger::{Capture, CaptureWrite};
use crate::registry::Functions;
use crate::{clock, exit, logs};

/// Exit code of a child that could not start (its parent sees the stream close).
const START_FAILED: i32 = 70;

/// Runs this process as the child context `env` describes, until the context exits.
pub(crate) fn run_child(env: ChildEnv, functions: Functions) -> ! {
    clock::now();
    // Die with the thread that spawned us (a service thread of the parent) — and if the parent died
    // before this line, PDEATHSIG will never fire: we are already someone else's child.
    if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
        fail(&format!("cannot set the parent-death signal: {e}"));
    }
    if getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(env.parent_pid) {
        fail("the parent context died before the child started");
    }
    let (parent, captures) = match rewire_fds() {
        Ok(fds) => fds,
        Err(e) => fail(&format!("cannot set up the child's file descriptors: {e}")),
    };
    logs::install_child_subscriber(tracing::level_filters::LevelFilter::INFO);

    let mut config = NodeConfig::child(env.id, env.ancestors);
    config.grace = env.grace;
    if !env.name.is_empty() {
        config.name = env.name;
    }
    let setup = Setup { config, parent: Some(parent), captures, interrupts: None, on_log: None };
    let shared = match Shared::new(setup) {
        Ok(shared) => shared,
        Err(e) => fail(&format!("cannot set the context up: {e}")),
    };
    let io_shared = shared.clone();
    let io = thread::Builder::new().name("arbor-io".into()).spawn(move || {
        // Whatever happens on the IO thread — exit, or a bug that panics — the process ends
        // here, never leaving a main thread behind with no one to serve its streams.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || io_shared.serve_io(false)));
        exit::sigterm_self()
    });
    if let Err(e) = io {
        fail(&format!("cannot start the IO thread: {e}"));
    }
    client::set_current(Some(Context::new(env.id, shared.clone())));
    // The main thread runs calls (and serves IO while it has none) until the context exits,
    // then ends the process (unless the IO thread got there first).
    shared.serve_calls_then_exit(&functions)
}

/// Moves the parent stream off fd 0 (to a close-on-exec fd), puts /dev/null on fd 0, and
/// installs the stdout and stderr capture sockets on fds 1 and 2.
fn rewire_fds() -> std::io::Result<(std::os::fd::OwnedFd, Vec<(CaptureWrite, std::os::fd::OwnedFd)>)> {
    let parent = rustix::io::fcntl_dupfd_cloexec(std::io::stdin().as_fd(), 3)?;
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    let mut captures = Vec::new();
    for source in [LogSource::Stdout, LogSource::Stderr] {
        let (write, read) = CaptureWrite::split(Capture::install(source)?);
        captures.push((write, read));
    }
    Ok((parent, captures))
}

fn fail(why: &str) -> ! {
    eprintln!("arbor child: {why}");
    signal_hook::low_level::exit(START_FAILED)
}
