//! `arbor-sim`: run, sweep, replay and benchmark simulated arbor process trees.
//!
//! ```text
//! arbor-sim list
//! arbor-sim run SCENARIO [--seed N] [--timeline] [--chrome FILE] [--repro FILE]
//! arbor-sim sweep [--scenario NAME|all] [--seeds N] [--start S] [--jobs J]
//! arbor-sim replay FILE [--timeline] [--chrome FILE]
//! arbor-sim bench tree [--n 10] [--k 1000] [--seed S]
//! arbor-sim bench sweep [--children 3] [--rpcs 20] [--seeds 20000] [--budget-s 20] [--jobs J]
//! ```
// The command line measures wall time for progress and benchmarks; the simulation never does.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant as WallClock;

use arbor_sim::plan::Plan;
use arbor_sim::run::{run, Report};
use arbor_sim::scenario::{find, Scenario, SCENARIOS};
use arbor_sim::shrink::shrink;
use arbor_sim::trace::Fnv;

const USAGE: &str = "usage:
  arbor-sim list
  arbor-sim run SCENARIO [--seed N] [--timeline] [--chrome FILE] [--repro FILE]
  arbor-sim sweep [--scenario NAME|all] [--seeds N] [--start S] [--jobs J]
  arbor-sim replay FILE [--timeline] [--chrome FILE]
  arbor-sim bench tree [--n N] [--k K] [--seed S]
  arbor-sim bench sweep [--children C] [--rpcs R] [--seeds N] [--budget-s S] [--jobs J]";

/// Parsed `--flag value` / `--switch` arguments after the positional ones.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(raw: Vec<String>) -> Args {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut it = raw.into_iter().peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next(),
                    _ => None,
                };
                flags.push((name.to_string(), value));
            } else {
                positional.push(a);
            }
        }
        Args { positional, flags }
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    fn num(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.value(name) {
            None if self.has(name) => Err(format!("--{name} needs a number")),
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number: {v}")),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse(std::env::args().skip(1).collect());
    let result = match args.positional.first().map(String::as_str) {
        Some("list") => {
            for s in SCENARIOS {
                println!("{:<28} {}", s.name, s.about);
            }
            Ok(true)
        }
        Some("run") => cmd_run(&args),
        Some("replay") => cmd_replay(&args),
        Some("sweep") => cmd_sweep(&args),
        Some("bench") => {
            arbor_sim::bench::command(&args.positional[1..], |n, d| args.num(n, d), |n| args.value(n))
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn scenario(name: &str) -> Result<&'static Scenario, String> {
    find(name).ok_or_else(|| format!("no scenario named {name:?}; `arbor-sim list` shows them"))
}

fn print_plan(plan: &Plan) {
    println!("# plan (replay with `arbor-sim replay FILE` after saving these lines)");
    for line in plan.to_text().lines() {
        println!("  {line}");
    }
}

fn show(report: &Report, args: &Args) -> Result<(), String> {
    if args.has("timeline") {
        println!("# timeline");
        print!("{}", report.trace.timeline());
    }
    if let Some(path) = args.value("chrome") {
        std::fs::write(path, report.trace.chrome_json()).map_err(|e| format!("{path}: {e}"))?;
        println!("# Chrome trace written to {path} (open in https://ui.perfetto.dev)");
    }
    println!("# summary");
    print!("{}", report.summary());
    println!(
        "# {} events, {} messages, virtual time {:.6}s",
        report.stats.events,
        report.stats.messages,
        report.end.as_nanos() as f64 / 1e9
    );
    println!("# trace hash {:016x}", report.hash);
    Ok(())
}

/// Prints the verdict; on failure shrinks the plan and writes the repro file.
fn verdict(report: &Report, repro_path: Option<&str>) -> Result<bool, String> {
    if report.passed() {
        println!("PASS: all {} invariants held", arbor_sim::check::CHECKERS.len());
        return Ok(true);
    }
    println!("FAIL:");
    for v in &report.violations {
        println!("  {v}");
    }
    let (small, runs) = shrink(&report.plan, 500);
    let path = repro_path
        .map(str::to_string)
        .unwrap_or_else(|| format!("repro-{}-{}.plan", report.plan.name, report.plan.seed));
    std::fs::write(&path, small.to_text()).map_err(|e| format!("{path}: {e}"))?;
    println!(
        "shrunk in {runs} runs to {} faults, {} actions, {} processes; repro written to {path}",
        small.faults.len(),
        small.actions.len(),
        small.procs()
    );
    println!("replay: arbor-sim replay {path} --timeline");
    Ok(false)
}

fn cmd_run(args: &Args) -> Result<bool, String> {
    let name = args.positional.get(1).ok_or(USAGE)?;
    let plan = scenario(name)?.plan(args.num("seed", 0)?);
    print_plan(&plan);
    let report = run(&plan);
    show(&report, args)?;
    verdict(&report, args.value("repro"))
}

fn cmd_replay(args: &Args) -> Result<bool, String> {
    let path = args.positional.get(1).ok_or(USAGE)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let plan = Plan::from_text(&text).map_err(|e| format!("{path}: {e}"))?;
    print_plan(&plan);
    let report = run(&plan);
    show(&report, args)?;
    if report.passed() {
        println!("PASS: all {} invariants held", arbor_sim::check::CHECKERS.len());
    } else {
        println!("FAIL:");
        for v in &report.violations {
            println!("  {v}");
        }
    }
    Ok(report.passed())
}

fn cmd_sweep(args: &Args) -> Result<bool, String> {
    let which: Vec<&'static Scenario> = match args.value("scenario") {
        None | Some("all") => SCENARIOS.iter().collect(),
        Some(name) => vec![scenario(name)?],
    };
    let seeds = args.num("seeds", 100)?;
    let start = args.num("start", 0)?;
    let jobs = args.num("jobs", std::thread::available_parallelism().map_or(1, |n| n.get() as u64))?.max(1);
    let work: Vec<(&'static Scenario, u64)> =
        which.iter().flat_map(|s| (start..start + seeds).map(move |seed| (*s, seed))).collect();
    let total = work.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let hashes: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::with_capacity(total));
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let events = AtomicU64::new(0);
    let t0 = WallClock::now();
    println!(
        "sweep: {} scenarios × {seeds} seeds from {start} = {total} runs on {jobs} threads",
        which.len()
    );
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((s, seed)) = work.get(i) else { break };
                let report = run(&s.plan(*seed));
                events.fetch_add(report.stats.events, Ordering::Relaxed);
                hashes.lock().unwrap_or_else(|e| e.into_inner()).push((i, report.hash));
                if !report.passed() {
                    let first = report.violations[0].to_string();
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push((
                        i,
                        format!(
                            "{} seed {seed}: {first}\n    repro: arbor-sim run {} --seed {seed}",
                            s.name, s.name
                        ),
                    ));
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // Progress bar on stderr, redrawn a few times a second.
        let mut last = usize::MAX;
        loop {
            let d = done.load(Ordering::Relaxed);
            if d != last {
                let width = 40;
                let filled = d * width / total.max(1);
                eprint!("\r[{}{}] {d}/{total}", "#".repeat(filled), ".".repeat(width - filled));
                let _ = std::io::stderr().flush();
                last = d;
            }
            if d >= total {
                eprintln!();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut hashes = hashes.into_inner().unwrap_or_else(|e| e.into_inner());
    hashes.sort_unstable();
    let mut h = Fnv::default();
    for (_, x) in &hashes {
        h.u64(*x);
    }
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    for (_, f) in &failures {
        println!("FAIL {f}");
    }
    println!(
        "{} of {total} runs passed in {secs:.2}s ({:.0} runs/s, {} events); sweep hash {:016x}",
        total - failures.len(),
        total as f64 / secs,
        events.load(Ordering::Relaxed),
        h.finish()
    );
    Ok(failures.is_empty())
}
