//! One round of every workload on arbor (mirrored in mitogen_bench.py: keep them in step).
//!
//! Each workload prints one JSON line (samples.rs). The shutdown workloads start a root of their
//! own each time, since a shutdown ends the root.

use std::thread;
use std::time::{Duration, Instant};

use arbor::blocking::Root;
use arbor::{CallError, ChildInfo, ContextId, SpawnError, SpawnOptions, StartError};

use crate::blob::Blob;
use crate::exited::ExitWatch;
use crate::functions::functions;
use crate::samples::emit;

const MIB: usize = 1024 * 1024;

/// The system this round reports as: arbor on the runtime `ARBOR_RUNTIME` names (the
/// orchestrator sets it; `arbor::Launcher` reads it).
pub fn system() -> &'static str {
    match std::env::var(arbor::RUNTIME_VAR).as_deref() {
        Ok("tokio") => "arbor-tokio",
        _ => "arbor",
    }
}

/// What stops a round.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("the root does not start: {0}")]
    Start(#[from] StartError),
    #[error("a spawn failed: {0}")]
    Spawn(#[from] SpawnError),
    #[error("a call failed: {0}")]
    Call(#[from] CallError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a call answered {0}, not what was asked")]
    Wrong(String),
}

fn start() -> Result<Root, RoundError> {
    // No signal handlers: a Ctrl-C kills the bench, and PDEATHSIG its children.
    Ok(arbor::init(functions()).handle_signals(false).start_blocking()?)
}

fn spawn(root: &Root) -> Result<ChildInfo, RoundError> {
    Ok(root.context().spawn(SpawnOptions::default())?)
}

fn noop(root: &Root, target: ContextId) -> Result<(), RoundError> {
    Ok(root.context().call(target, "noop", &())?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the round; `only_rtt` keeps to the round trips (the pinned run), `only_calls` to the
/// round trips and the pipelined calls (a quick look at call latency while tuning the driver),
/// `only_rss` to five idle children's RSS (one at a time, each spawned fresh; RSS is not
/// timing-sensitive, so this reads the same on a busy machine).
pub fn run(only_rtt: bool, only_calls: bool, only_bulk: bool, only_rss: bool) -> Result<(), RoundError> {
    let root = start()?;
    if let Some(n) = crate::count_calls() {
        // Counting, not timing: N child round trips and nothing else, for `strace -c -f` or
        // callgrind (a run with 2N less one with N is what N round trips cost).
        let child = spawn(&root)?;
        if let Some(gap) = crate::gap() {
            // Each call after that long idle (bench/gaps.sh), timed.
            let samples = crate::after_gaps(n, gap, || noop(&root, child.id))?;
            emit(system(), "rtt_child_after_gap", "us", samples);
        } else {
            for _ in 0..n {
                noop(&root, child.id)?;
            }
        }
        root.shutdown();
        return Ok(());
    }
    if only_rss {
        for _ in 0..5 {
            idle_rss(&root)?;
        }
        root.shutdown();
        return Ok(());
    }
    if only_bulk {
        let child = spawn(&root)?;
        bulk(&root, child.id)?;
        root.shutdown();
        return Ok(());
    }
    if only_calls {
        rtt(&root, false, true)?;
        root.shutdown();
        return Ok(());
    }
    rtt(&root, only_rtt, false)?;
    if !only_rtt {
        spawn_first_answer(&root)?;
        idle_rss(&root)?;
    }
    root.shutdown();
    if !only_rtt {
        shutdowns()?;
    }
    Ok(())
}

fn rtt(root: &Root, only_rtt: bool, only_calls: bool) -> Result<(), RoundError> {
    let child = spawn(root)?;
    noop(root, child.id)?;
    let grandchild = ContextId(root.context().call(child.id, "spawn_child", &())?);
    noop(root, grandchild)?;
    for (name, target) in [("rtt_child", child.id), ("rtt_grandchild", grandchild)] {
        for _ in 0..50 {
            noop(root, target)?;
        }
        let mut samples = Vec::with_capacity(400);
        for _ in 0..400 {
            let t = Instant::now();
            noop(root, target)?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        emit(system(), name, "us", samples);
    }
    if only_rtt {
        return Ok(());
    }
    let ctx = root.context();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let pending: Vec<_> = (0..100).map(|_| ctx.call_async::<_, ()>(child.id, "noop", &())).collect();
        for p in pending {
            p.wait()?;
        }
        samples.push(100.0 / t.elapsed().as_secs_f64());
    }
    emit(system(), "pipelined_100", "calls/s", samples);
    if only_calls {
        return Ok(());
    }
    bulk(root, child.id)
}

/// The 16 MiB argument and the 1 MiB result.
fn bulk(root: &Root, child: ContextId) -> Result<(), RoundError> {
    let ctx = root.context();
    let arg = Blob(vec![0xa5; 16 * MIB]);
    let mut samples = Vec::new();
    for round in 0..6 {
        let t = Instant::now();
        let n: u64 = ctx.call(child, "length", &arg)?;
        let took = t.elapsed();
        if n != arg.0.len() as u64 {
            return Err(RoundError::Wrong(format!("length {n}")));
        }
        if round > 0 {
            samples.push(arg.0.len() as f64 / took.as_secs_f64() / 1e6);
        }
    }
    emit(system(), "arg_16mib", "MB/s", samples);

    let mut samples = Vec::new();
    for round in 0..11 {
        let t = Instant::now();
        let out: Blob = ctx.call(child, "make", &(MIB as u64))?;
        let took = t.elapsed();
        if out.0.len() != MIB {
            return Err(RoundError::Wrong(format!("{} bytes made", out.0.len())));
        }
        if round > 0 {
            samples.push(MIB as f64 / took.as_secs_f64() / 1e6);
        }
    }
    emit(system(), "result_1mib", "MB/s", samples);
    Ok(())
}

fn spawn_first_answer(root: &Root) -> Result<(), RoundError> {
    let warm = spawn(root)?; // as in mitogen_bench.py: the first spawn is not counted
    noop(root, warm.id)?;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let child = spawn(root)?;
        noop(root, child.id)?;
        samples.push(ms(t.elapsed()));
    }
    emit(system(), "spawn_first_answer", "ms", samples);
    Ok(())
}

fn idle_rss(root: &Root) -> Result<(), RoundError> {
    let child = spawn(root)?;
    let pid: u32 = root.context().call(child.id, "pid", &())?;
    thread::sleep(Duration::from_millis(300));
    if let Some(secs) = std::env::var("ARBOR_BENCH_HOLD_SECS").ok().and_then(|s| s.parse().ok()) {
        // A look at the idle child from outside (/proc/PID/smaps) before it is measured.
        eprintln!("idle child: pid {pid}");
        thread::sleep(Duration::from_secs(secs));
    }
    emit(system(), "idle_rss", "MiB", vec![crate::status_kib(pid, "VmRSS")? / 1024.0]);
    emit(system(), "idle_rss_anon", "MiB", vec![crate::status_kib(pid, "RssAnon")? / 1024.0]);
    Ok(())
}

/// (all children exited, shutdown returned), in ms from the shutdown call.
type Timing = (Option<f64>, f64);

fn timed_shutdown(root: Root, pids: &[u32]) -> Result<Timing, RoundError> {
    let watch = ExitWatch::start(pids)?;
    let t = Instant::now();
    root.shutdown();
    let returned = ms(t.elapsed());
    Ok((watch.last_exit().map(|last| ms(last.saturating_duration_since(t))), returned))
}

fn shutdown_of(n: usize) -> Result<Timing, RoundError> {
    let root = start()?;
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        let child = spawn(&root)?;
        pids.push(root.context().call(child.id, "pid", &())?);
    }
    timed_shutdown(root, &pids)
}

fn shutdown_hung(ignore_sigterm: bool) -> Result<Timing, RoundError> {
    let root = start()?;
    let child = spawn(&root)?;
    let pid: u32 = root.context().call(child.id, "pid", &())?;
    if ignore_sigterm {
        root.context().call::<_, ()>(child.id, "ignore_sigterm", &())?;
    }
    // Its answer (ShuttingDown) is never awaited: the call just occupies the child.
    drop(root.context().call_async::<_, ()>(child.id, "hang", &()));
    thread::sleep(Duration::from_millis(50));
    timed_shutdown(root, &[pid])
}

fn emit_timings(name: &str, exited: &str, results: &[Timing]) {
    emit(system(), &format!("{name}_{exited}"), "ms", results.iter().filter_map(|r| r.0).collect());
    emit(system(), &format!("{name}_returned"), "ms", results.iter().map(|r| r.1).collect());
}

fn shutdowns() -> Result<(), RoundError> {
    for (n, times) in [(1, 3), (10, 2), (50, 1)] {
        let results = (0..times).map(|_| shutdown_of(n)).collect::<Result<Vec<_>, _>>()?;
        emit_timings(&format!("shutdown_{n}"), "exited", &results);
    }
    for (name, ignore, times) in [("hung", false, 2), ("hung_ignoring_sigterm", true, 1)] {
        let results = (0..times).map(|_| shutdown_hung(ignore)).collect::<Result<Vec<_>, _>>()?;
        emit_timings(name, "gone", &results);
    }
    Ok(())
}
