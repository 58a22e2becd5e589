//! The `arbor-sim` command line (the `cli` feature), callable from a user's own binary with
//! their own scenarios and checks:
//!
//! ```no_run
//! use arbor_sim::{Scenario, Scenarios, Sim};
//! static MINE: Scenario = Scenario::new("my-tree", "my tree, my faults", |_, plan| plan.parents = vec![0, 0]);
//! fn main() -> std::process::ExitCode {
//!     arbor_sim::cli::main(Scenarios::builtin().with(&MINE), Sim::new())
//! }
//! ```
//!
//! It keeps the conventions of cargo and nextest: `--help` and `--version` print on stdout and
//! exit 0; flags go in any order; an unknown flag, an unknown scenario or a sweep of zero runs is
//! a usage error; progress is drawn only on a terminal; `--format json` prints one JSON object
//! per run and a summary, and `--junit FILE` writes a JUnit XML report for CI dashboards. Exit
//! codes are [`EXIT_PASS`], [`EXIT_FAILED`], [`EXIT_USAGE`] and [`EXIT_IO`].
// The command line measures wall time for progress and benchmarks; the simulation never does.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant as WallClock;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::plan::Plan;
use crate::run::{Report, Sim};
use crate::scenario::{Scenario, Scenarios};
use crate::trace::Fnv;

/// `println!` that stops writing once stdout is gone (a reader such as `head` that has seen
/// enough) instead of panicking on the broken pipe — and carries on: the repro and JUnit files
/// are still written, and the exit status still says whether the runs passed.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        if !STDOUT_GONE.load(Relaxed) && writeln!(std::io::stdout().lock(), $($t)*).is_err() {
            STDOUT_GONE.store(true, Relaxed);
        }
    }};
}

/// Stdout could not be written to: `out!` writes nothing more.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Every run passed (or there was nothing to judge: `list`, `--help`, `--version`).
pub const EXIT_PASS: u8 = 0;
/// A run broke an invariant (or a check of the user's).
pub const EXIT_FAILED: u8 = 1;
/// The command line or its input is wrong: an unknown flag or scenario, a missing argument, zero
/// runs, a plan file that is not a valid plan. Nothing was judged.
pub const EXIT_USAGE: u8 = 2;
/// An output file (repro, Chrome trace, JUnit report) could not be written.
pub const EXIT_IO: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "arbor-sim",
    version,
    about = "Deterministic simulator of arbor process trees: run, sweep, replay and benchmark",
    after_help = "Exit status: 0 every run passed; 1 a run broke an invariant; \
                  2 usage error (bad flag, unknown scenario, zero runs, invalid plan file); \
                  3 an output file could not be written."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the scenarios.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run one scenario for one seed, print its plan (pasteable as a repro file), a summary and
    /// the verdict; on failure shrink the plan and write it as a repro file.
    Run {
        /// The scenario (`arbor-sim list`).
        scenario: String,
        /// The seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where a failure's shrunk plan goes (default `repro-SCENARIO-SEED.plan`).
        #[arg(long, value_name = "FILE")]
        repro: Option<PathBuf>,
        #[command(flatten)]
        show: Show,
    },
    /// Run every scenario (or those named) over a range of seeds on several threads.
    Sweep {
        /// A scenario to sweep (repeatable); all of them if none is named.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// Seeds per scenario (at least 1).
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Worker threads (default: one per core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        jobs: Option<u64>,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also write a JUnit XML report here (a test suite per scenario, a test case per seed).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Rerun a plan file (a repro written by `run`, or a plan printed by it); on failure shrink
    /// it and write the smaller repro.
    Replay {
        /// The plan file.
        file: PathBuf,
        /// Where a failure's shrunk plan goes (default `repro-NAME-SEED.plan`).
        #[arg(long, value_name = "FILE")]
        repro: Option<PathBuf>,
        #[command(flatten)]
        show: Show,
    },
    /// Benchmarks in the sim-anchors protocol (bench/sim-anchors/README.md).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Args, Debug)]
struct Show {
    /// Print the text timeline of the run.
    #[arg(long)]
    timeline: bool,
    /// Write a Chrome trace (open in https://ui.perfetto.dev).
    #[arg(long, value_name = "FILE")]
    chrome: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// W1: a root calling each of N children K times in sequence, 1 ms latency.
    Tree {
        #[arg(long, default_value_t = 10)]
        n: usize,
        #[arg(long, default_value_t = 1000)]
        k: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// W1's calls on bare hosts wired back to back (no world, trace or checkers): the core's
    /// share of W1, for instruction counts.
    Core {
        #[arg(long, default_value_t = 10)]
        n: usize,
        #[arg(long, default_value_t = 1000)]
        k: u32,
    },
    /// W2: a fresh world per seed until the seeds or the wall-clock budget run out.
    Sweep {
        #[arg(long, default_value_t = 3)]
        children: usize,
        #[arg(long, default_value_t = 20)]
        rpcs: u32,
        #[arg(long, default_value_t = 20_000)]
        seeds: u64,
        #[arg(long = "budget-s", default_value_t = 20)]
        budget_s: u64,
        /// Worker threads (default: one per core; 1 for a per-core figure).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        jobs: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Human-readable text.
    Text,
    /// One JSON object per line: one per run, then a summary.
    Json,
}

/// An error that ends the command before a verdict.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Io { .. } => EXIT_IO,
        }
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), CliError> {
    std::fs::write(path, contents).map_err(|error| CliError::Io { path: path.to_path_buf(), error })
}

/// Parses the process's arguments and runs the command over `scenarios`, judging every run with
/// `sim`'s checks.
pub fn main(scenarios: Scenarios, sim: Sim) -> ExitCode {
    main_from(std::env::args_os(), scenarios, sim)
}

/// [`main`] over given arguments (the first is the program name).
pub fn main_from<I, T>(args: I, scenarios: Scenarios, sim: Sim) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_PASS });
        }
    };
    let ctx = Ctx { scenarios, sim };
    let result = match cli.command {
        Command::List { format } => {
            ctx.list(format);
            Ok(true)
        }
        Command::Run { scenario, seed, repro, show } => ctx.run(&scenario, seed, repro, &show),
        Command::Replay { file, repro, show } => ctx.replay(&file, repro, &show),
        Command::Sweep { scenarios, seeds, start, jobs, format, junit } => {
            ctx.sweep(&scenarios, seeds, start, jobs, format, junit.as_deref())
        }
        Command::Bench(Bench::Tree { n, k, seed }) => crate::bench::tree(n, k, seed).map_err(CliError::Usage),
        Command::Bench(Bench::Core { n, k }) => {
            crate::bench::core_only(n, k).map_err(CliError::Usage).map(|answered| {
                println!("calls answered: {answered}");
                answered == n as u64 * u64::from(k)
            })
        }
        Command::Bench(Bench::Sweep { children, rpcs, seeds, budget_s, jobs }) => {
            Ok(crate::bench::sweep(children, rpcs, seeds, budget_s, jobs.unwrap_or_else(cores)))
        }
    };
    match result {
        Ok(true) => ExitCode::from(EXIT_PASS),
        Ok(false) => ExitCode::from(EXIT_FAILED),
        Err(e) => {
            eprintln!("arbor-sim: {e}");
            ExitCode::from(e.code())
        }
    }
}

fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

struct Ctx {
    scenarios: Scenarios,
    sim: Sim,
}

/// The outcome of one run as the command line reports it.
struct Outcome {
    report: Report,
    /// The command that reruns it.
    replay: String,
}

impl Ctx {
    fn scenario(&self, name: &str) -> Result<&'static Scenario, CliError> {
        self.scenarios.find(name).ok_or_else(|| {
            CliError::Usage(format!("no scenario named {name:?}; `arbor-sim list` shows them"))
        })
    }

    fn list(&self, format: Format) {
        for s in self.scenarios.iter() {
            match format {
                Format::Text => out!("{:<34} {}", s.name, s.about),
                Format::Json => out!("{}", json!({ "type": "scenario", "name": s.name, "about": s.about })),
            }
        }
    }

    /// Runs a plan; a plan `sim` refuses becomes a failed report carrying the reason.
    fn judge(&self, plan: &Plan) -> Report {
        self.sim.run(plan).unwrap_or_else(|e| Report::refused(plan, &e))
    }

    fn run(&self, name: &str, seed: u64, repro: Option<PathBuf>, show: &Show) -> Result<bool, CliError> {
        let plan = self.scenario(name)?.plan(seed);
        let replay = format!("arbor-sim run {name} --seed {seed}");
        let outcome = Outcome { report: self.judge(&plan), replay };
        self.show(&outcome, show)?;
        self.repro(&outcome.report, repro, show.format, None)
    }

    /// On a failure: shrinks the plan, writes the repro file (`repro-SCENARIO-SEED.plan` unless
    /// named) and says where; whether the run passed.
    /// `input`: the plan file replayed, if one was, which the default name must not overwrite
    /// (replaying `repro-X-1.plan` would otherwise replace it with its own shrunk copy).
    fn repro(
        &self,
        report: &Report,
        repro: Option<PathBuf>,
        format: Format,
        input: Option<&Path>,
    ) -> Result<bool, CliError> {
        if report.passed() {
            return Ok(true);
        }
        let plan = &report.plan;
        let (small, runs) = self.sim.shrink(plan, 500).unwrap_or((plan.clone(), 0));
        let path = repro.unwrap_or_else(|| {
            let default = PathBuf::from(format!("repro-{}-{}.plan", plan.name, plan.seed));
            let same =
                |a: &Path, b: &Path| a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok() == Some(a));
            match input {
                Some(input) if same(input, &default) => default.with_extension("shrunk.plan"),
                _ => default,
            }
        });
        write_file(&path, &small.to_text())?;
        let shrunk = format!(
            "shrunk in {runs} runs to {} faults, {} actions, {} processes; repro written to {}",
            small.faults.len(),
            small.actions.len(),
            small.procs(),
            path.display()
        );
        match format {
            Format::Text => {
                out!("# {shrunk}");
                out!("# replay: arbor-sim replay {} --timeline", path.display());
            }
            Format::Json => out!(
                "{}",
                json!({ "type": "repro", "file": path.display().to_string(), "runs": runs, "plan": small.to_text() })
            ),
        }
        Ok(false)
    }

    fn replay(&self, file: &Path, repro: Option<PathBuf>, show: &Show) -> Result<bool, CliError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
        let plan = Plan::from_text(&text).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
        let outcome =
            Outcome { report: self.judge(&plan), replay: format!("arbor-sim replay {}", file.display()) };
        self.show(&outcome, show)?;
        self.repro(&outcome.report, repro, show.format, Some(file))
    }

    /// Prints one run: in text, its plan (every line of which pastes into a repro file; the lines
    /// around it are `#` comments, which plan files ignore), then timeline, summary and verdict.
    fn show(&self, o: &Outcome, show: &Show) -> Result<(), CliError> {
        let report = &o.report;
        if let Some(path) = &show.chrome {
            write_file(path, &report.trace.chrome_json())?;
        }
        if show.format == Format::Json {
            out!("{}", run_json(report, &o.replay, true));
            out!("{}", summary_json(1, usize::from(!report.passed()), None, report.stats.events, None));
            return Ok(());
        }
        out!("# plan: save the lines down to `# end of plan` as a file; `arbor-sim replay FILE` reruns it");
        out!("{}", report.plan.to_text().trim_end());
        out!("# end of plan");
        if show.timeline {
            out!("# timeline");
            for line in report.trace.timeline().lines() {
                out!("#   {line}");
            }
        }
        if let Some(path) = &show.chrome {
            out!("# Chrome trace written to {} (open in https://ui.perfetto.dev)", path.display());
        }
        out!("# summary");
        for line in report.summary().lines() {
            out!("#   {line}");
        }
        out!(
            "# {} events, {} messages, virtual time {:.6}s, trace hash {:016x}",
            report.stats.events,
            report.stats.messages,
            report.end.as_nanos() as f64 / 1e9,
            report.hash
        );
        if report.passed() {
            out!("PASS: all {} checks held", self.sim.check_names().count());
        } else {
            out!("FAIL:");
            for v in &report.violations {
                out!("  {v}");
            }
        }
        Ok(())
    }

    fn sweep(
        &self,
        names: &[String],
        seeds: u64,
        start: u64,
        jobs: Option<u64>,
        format: Format,
        junit: Option<&Path>,
    ) -> Result<bool, CliError> {
        let which: Vec<&'static Scenario> = if names.is_empty() {
            self.scenarios.iter().collect()
        } else {
            let mut which: Vec<&'static Scenario> = Vec::new();
            for n in names {
                let s = self.scenario(n)?;
                // Named twice, swept once (twice would run every seed twice, and count it so).
                if !which.iter().any(|w| w.name == s.name) {
                    which.push(s);
                }
            }
            which
        };
        if seeds == 0 || which.is_empty() {
            return Err(CliError::Usage("the sweep would run nothing (--seeds must be at least 1)".into()));
        }
        let Some(end) = start.checked_add(seeds) else {
            return Err(CliError::Usage(format!(
                "--start {start} --seeds {seeds} runs past the last seed, {}",
                u64::MAX
            )));
        };
        let jobs = jobs.unwrap_or_else(cores);
        let work: Vec<(&'static Scenario, u64)> =
            which.iter().flat_map(|s| (start..end).map(move |seed| (*s, seed))).collect();
        let total = work.len();
        let next = AtomicUsize::new(0);
        let events = AtomicU64::new(0);
        // Per run: its hash, and what the report says of it (text or JSON line, JUnit case).
        let results: Mutex<Vec<Option<RunResult>>> = Mutex::new((0..total).map(|_| None).collect());
        let progress = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(total as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        if format == Format::Text {
            out!(
                "sweep: {} scenarios × {seeds} seeds from {start} = {total} runs on {jobs} threads",
                which.len()
            );
        }
        let t0 = WallClock::now();
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((s, seed)) = work.get(i) else { break };
                    let t = WallClock::now();
                    let report = self.judge(&s.plan(*seed));
                    let secs = t.elapsed().as_secs_f64();
                    events.fetch_add(report.stats.events, Ordering::Relaxed);
                    let replay = format!("arbor-sim run {} --seed {seed}", s.name);
                    let result = RunResult {
                        hash: report.hash,
                        failure: (!report.passed())
                            .then(|| report.violations.iter().map(|v| v.to_string()).collect()),
                        json: (format == Format::Json).then(|| run_json(&report, &replay, false).to_string()),
                        scenario: s.name,
                        seed: *seed,
                        secs,
                        replay,
                    };
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    progress.inc(1);
                });
            }
        });
        progress.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let results: Vec<RunResult> =
            results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect();
        // The runs' hashes in work order (scenario, then seed), whatever thread ran them.
        let mut h = Fnv::default();
        for r in &results {
            h.u64(r.hash);
        }
        let failed = results.iter().filter(|r| r.failure.is_some()).count();
        let events = events.load(Ordering::Relaxed);
        match format {
            Format::Json => {
                for r in &results {
                    out!("{}", r.json.as_deref().unwrap_or("{}"));
                }
                out!("{}", summary_json(total, failed, Some(secs), events, Some(h.finish())));
            }
            Format::Text => {
                for r in results.iter().filter(|r| r.failure.is_some()) {
                    let first = r.failure.as_ref().and_then(|f| f.first()).map_or("", String::as_str);
                    out!("FAIL {} seed {}: {first}\n    repro: {}", r.scenario, r.seed, r.replay);
                }
                out!(
                    "{} of {total} runs passed in {secs:.2}s ({:.0} runs/s, {events} events); sweep hash {:016x}",
                    total - failed,
                    total as f64 / secs,
                    h.finish()
                );
            }
        }
        if let Some(path) = junit {
            write_file(path, &junit_xml(&which, &results, secs))?;
        }
        Ok(failed == 0)
    }
}

struct RunResult {
    scenario: &'static str,
    seed: u64,
    hash: u64,
    secs: f64,
    failure: Option<Vec<String>>,
    json: Option<String>,
    replay: String,
}

fn run_json(report: &Report, replay: &str, with_plan: bool) -> serde_json::Value {
    let violations: Vec<serde_json::Value> = report
        .violations
        .iter()
        .map(|v| {
            json!({
                "checker": v.checker,
                "proc": v.proc,
                "at_s": v.at.map(|t| t.as_nanos() as f64 / 1e9),
                "detail": v.detail,
            })
        })
        .collect();
    let mut o = json!({
        "type": "run",
        "scenario": report.plan.name,
        "seed": report.plan.seed,
        "passed": report.passed(),
        "hash": format!("{:016x}", report.hash),
        "events": report.stats.events,
        "messages": report.stats.messages,
        "virtual_time_s": report.end.as_nanos() as f64 / 1e9,
        "violations": violations,
        "replay": replay,
    });
    if with_plan || !report.passed() {
        o["plan"] = json!(report.plan.to_text());
    }
    o
}

fn summary_json(
    runs: usize,
    failed: usize,
    secs: Option<f64>,
    events: u64,
    hash: Option<u64>,
) -> serde_json::Value {
    json!({
        "type": "summary",
        "runs": runs,
        "passed": runs - failed,
        "failed": failed,
        "seconds": secs,
        "events": events,
        "sweep_hash": hash.map(|h| format!("{h:016x}")),
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report (the Ant/Jenkins schema CI dashboards read): `<testsuites>` with one
/// `<testsuite>` per scenario, one `<testcase>` per seed, a `<failure>` naming the first broken
/// invariant with all of them and the replay command in its text.
fn junit_xml(scenarios: &[&'static Scenario], results: &[RunResult], secs: f64) -> String {
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"arbor-sim sweep\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{secs:.3}\">",
        results.len()
    );
    for s in scenarios {
        let cases: Vec<&RunResult> = results.iter().filter(|r| r.scenario == s.name).collect();
        let failures = cases.iter().filter(|r| r.failure.is_some()).count();
        let time: f64 = cases.iter().map(|r| r.secs).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">",
            xml_escape(s.name),
            cases.len()
        );
        for r in cases {
            let _ = write!(
                x,
                "    <testcase classname=\"arbor-sim.{}\" name=\"seed {}\" time=\"{:.6}\"",
                xml_escape(s.name),
                r.seed,
                r.secs
            );
            match &r.failure {
                None => x.push_str("/>\n"),
                Some(violations) => {
                    let first = violations.first().map_or("", String::as_str);
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\" type=\"invariant\">{}\nrepro: {}</failure>\n    </testcase>",
                        xml_escape(first),
                        xml_escape(&violations.join("\n")),
                        xml_escape(&r.replay)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_is_a_junit_failure_with_its_message_and_repro() {
        let s1 = crate::scenario::find("s1-one-child").unwrap();
        let result = |seed, failure: Option<Vec<String>>| RunResult {
            scenario: s1.name,
            seed,
            hash: 0,
            secs: 0.5,
            failure,
            json: None,
            replay: format!("arbor-sim run s1-one-child --seed {seed}"),
        };
        let results =
            [result(0, None), result(1, Some(vec!["[liveness] p1: gone <late> & \"late\"".into()]))];
        let xml = junit_xml(&[s1], &results, 1.0);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("failures"), Some("1"));
        let failure = doc.descendants().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(failure.attribute("message"), Some("[liveness] p1: gone <late> & \"late\""));
        assert!(failure.text().unwrap().contains("repro: arbor-sim run s1-one-child --seed 1"));
        assert_eq!(failure.parent().unwrap().attribute("name"), Some("seed 1"));
    }
}
