//! `arbor-bench`: arbor against mitogen 0.3.54 and a socketpair floor (issue 7).
//!
//! `bench/run.sh` is the one command: it installs mitogen in a virtualenv, builds this in release
//! and runs `arbor-bench run`, which starts every round as a fresh process of this binary
//! (`arbor-round`, `floor-round`) or of mitogen_bench.py, interleaved, and writes
//! docs/benchmarks.md. Children of an arbor round are re-execs of this binary too, which is why
//! `arbor::init` comes first.
// A benchmark measures wall time and prints what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod arbor_round;
mod blob;
mod exited;
mod floor;
mod functions;
mod machine;
mod report;
mod samples;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: arbor-bench run [--rounds N] [--python PATH] [--script PATH] [--out PATH] [--command TEXT]
       arbor-bench arbor-round|floor-round [--only rtt]
       arbor-bench arbor-round --only calls   (round trips and 100 pipelined calls only)
       arbor-bench arbor-round --only bulk    (the 16 MiB argument and 1 MiB result only)
       arbor-bench arbor-round --only rss     (five idle children's RSS, one after another;
                                               ARBOR_BENCH_HOLD_SECS=N holds each N s first)
       ARBOR_BENCH_COUNT_CALLS=N arbor-bench arbor-round   (N child round trips only: bench/counts.sh;
           with ARBOR_BENCH_GAP_MS=M each after M ms idle, timed, floor-round too: bench/gaps.sh)
(bench/run.sh is the documented way to run it)";

fn main() -> ExitCode {
    // In a child context of an arbor round this never returns. In the root it only reads the
    // environment: each arbor root of a round is started from a fresh `arbor::init` (a shutdown
    // ends a root), see arbor_round.rs.
    drop(arbor::init(functions::functions()));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_rtt = args.windows(2).any(|w| w[0] == "--only" && w[1] == "rtt");
    let only_calls = args.windows(2).any(|w| w[0] == "--only" && w[1] == "calls");
    let only_bulk = args.windows(2).any(|w| w[0] == "--only" && w[1] == "bulk");
    let only_rss = args.windows(2).any(|w| w[0] == "--only" && w[1] == "rss");
    let result: Result<(), String> = match args.first().map(String::as_str) {
        Some("run") => run_options(&args[1..]).and_then(|o| report::run(&o).map_err(|e| e.to_string())),
        Some("arbor-round") => {
            arbor_round::run(only_rtt, only_calls, only_bulk, only_rss).map_err(|e| e.to_string())
        }
        Some("floor-round") => floor::run(only_rtt).map_err(|e| e.to_string()),
        Some("floor-echo") => floor::echo().map_err(|e| e.to_string()),
        Some("floor-relay") => floor::relay().map_err(|e| e.to_string()),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_options(args: &[String]) -> Result<report::RunOptions, String> {
    let mut opts = report::RunOptions {
        rounds: 5,
        python: "python3".into(),
        script: PathBuf::from("bench/mitogen_bench.py"),
        out: PathBuf::from("docs/benchmarks.md"),
        command: "bench/run.sh".into(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--rounds" => opts.rounds = value.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--python" => opts.python.clone_from(value),
            "--script" => opts.script = value.into(),
            "--out" => opts.out = value.into(),
            "--command" => opts.command.clone_from(value),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(opts)
}

/// `ARBOR_BENCH_COUNT_CALLS`: how many calls a counting run makes (bench/counts.sh,
/// bench/gaps.sh), if set.
fn count_calls() -> Option<usize> {
    std::env::var("ARBOR_BENCH_COUNT_CALLS").ok().and_then(|s| s.parse().ok())
}

/// `ARBOR_BENCH_GAP_MS`: how long the counting runs leave the tree idle before each call
/// (bench/gaps.sh), if set.
fn gap() -> Option<std::time::Duration> {
    std::env::var("ARBOR_BENCH_GAP_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_millis)
}

/// `n` calls of `call`, each after `gap` idle: how long each took, in µs.
fn after_gaps<E>(
    n: usize,
    gap: std::time::Duration,
    mut call: impl FnMut() -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        std::thread::sleep(gap);
        let t = std::time::Instant::now();
        call()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// A memory figure of a process from /proc/<pid>/status (`VmRSS`, `RssAnon`), in KiB.
pub(crate) fn status_kib(pid: u32, field: &str) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no such line in /proc/<pid>/status"))
}
