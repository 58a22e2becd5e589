//! The orchestrator (`arbor-bench run`): runs floor, arbor and mitogen rounds interleaved, then
//! prints the table and writes docs/benchmarks.md.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::machine::Machine;
use crate::samples::{Line, Stats};

/// What `arbor-bench run` takes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub rounds: usize,
    /// The virtualenv's python, with mitogen installed.
    pub python: String,
    /// mitogen_bench.py.
    pub script: PathBuf,
    /// Where the markdown report goes.
    pub out: PathBuf,
    /// The command that produced the run, quoted in the report.
    pub command: String,
}

/// What stops a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {what}: {source}")]
    Spawn { what: String, source: io::Error },
    #[error("{what} failed ({status})")]
    Failed { what: String, status: std::process::ExitStatus },
    #[error("cannot write the report: {0}")]
    Write(#[from] io::Error),
}

/// Lower or higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// A row of the table.
struct Row {
    label: &'static str,
    key: &'static str,
    unit: &'static str,
    better: Better,
}

const fn row(label: &'static str, key: &'static str, unit: &'static str, better: Better) -> Row {
    Row { label, key, unit, better }
}

const ROWS: &[Row] = &[
    row("spawn a local child, first call answered", "spawn_first_answer", "ms", Better::Lower),
    row("call round trip, child", "rtt_child", "µs", Better::Lower),
    row("call round trip, grandchild", "rtt_grandchild", "µs", Better::Lower),
    row("call round trip, child, pinned to 1 CPU", "rtt_child_pinned", "µs", Better::Lower),
    row("call round trip, grandchild, pinned to 1 CPU", "rtt_grandchild_pinned", "µs", Better::Lower),
    row("100 pipelined calls in flight", "pipelined_100", "calls/s", Better::Higher),
    row("16 MiB argument", "arg_16mib", "MB/s", Better::Higher),
    row("1 MiB result", "result_1mib", "MB/s", Better::Higher),
    row("shutdown, 1 child: all exited", "shutdown_1_exited", "ms", Better::Lower),
    row("shutdown, 1 child: root's shutdown returned", "shutdown_1_returned", "ms", Better::Lower),
    row("shutdown, 10 children: all exited", "shutdown_10_exited", "ms", Better::Lower),
    row("shutdown, 10 children: root's shutdown returned", "shutdown_10_returned", "ms", Better::Lower),
    row("shutdown, 50 children: all exited", "shutdown_50_exited", "ms", Better::Lower),
    row("shutdown, 50 children: root's shutdown returned", "shutdown_50_returned", "ms", Better::Lower),
    row("child hung in a function: gone", "hung_gone", "ms", Better::Lower),
    row("child hung in a function: root's shutdown returned", "hung_returned", "ms", Better::Lower),
    row("child hung + ignoring SIGTERM: gone", "hung_ignoring_sigterm_gone", "ms", Better::Lower),
    row(
        "child hung + ignoring SIGTERM: root's shutdown returned",
        "hung_ignoring_sigterm_returned",
        "ms",
        Better::Lower,
    ),
    row("idle child RSS", "idle_rss", "MiB", Better::Lower),
    row("idle child RSS, anonymous only (RssAnon)", "idle_rss_anon", "MiB", Better::Lower),
];

/// A target of issue 11, checked against the run.
struct Target {
    what: &'static str,
    key: &'static str,
    check: Check,
}

enum Check {
    /// arbor ÷ floor at most this.
    WithinFloor(f64),
    /// arbor at least this many times better than mitogen.
    Beats(f64),
    /// arbor's median at most this, in the row's unit.
    AtMost(f64),
}

const TARGETS: &[Target] = &[
    Target {
        what: "round trip within 2× of the floor, unpinned",
        key: "rtt_child",
        check: Check::WithinFloor(2.0),
    },
    Target {
        what: "round trip within 2.5× of the floor, pinned",
        key: "rtt_child_pinned",
        check: Check::WithinFloor(2.5),
    },
    Target {
        what: "round trip ≥ 5× faster than mitogen, unpinned",
        key: "rtt_child",
        check: Check::Beats(5.0),
    },
    Target {
        what: "round trip ≥ 8× faster than mitogen, pinned",
        key: "rtt_child_pinned",
        check: Check::Beats(8.0),
    },
    Target { what: "grandchild round trip ≥ 5× faster", key: "rtt_grandchild", check: Check::Beats(5.0) },
    Target {
        what: "100 pipelined calls ≥ 15× the calls/s", key: "pipelined_100", check: Check::Beats(15.0)
    },
    Target { what: "16 MiB argument ≥ 25× the MB/s", key: "arg_16mib", check: Check::Beats(25.0) },
    Target {
        what: "spawn to first answer ≥ 50× faster",
        key: "spawn_first_answer",
        check: Check::Beats(50.0),
    },
    Target {
        what: "50 children all exited ≥ 5× faster",
        key: "shutdown_50_exited",
        check: Check::Beats(5.0),
    },
    Target {
        what: "hung child ignoring SIGTERM gone within 5 ms",
        key: "hung_ignoring_sigterm_gone",
        check: Check::AtMost(5.0),
    },
    Target { what: "idle child RSS ≤ 3 MiB", key: "idle_rss", check: Check::AtMost(3.0) },
];

/// Every sample, by system then workload key.
#[derive(Default)]
struct Results(BTreeMap<(String, String), Vec<f64>>);

impl Results {
    fn add(&mut self, line: Line, suffix: &str) {
        let key = (line.system, format!("{}{suffix}", line.workload));
        self.0.entry(key).or_default().extend(line.samples);
    }

    fn stats(&self, system: &str, key: &str) -> Option<Stats> {
        self.0.get(&(system.to_string(), key.to_string())).and_then(|s| Stats::of(s))
    }
}

/// One process of a round: which system, pinned or not.
fn round_command(opts: &RunOptions, system: &str, pinned: bool) -> io::Result<Command> {
    let mut argv: Vec<OsString> = Vec::new();
    if pinned {
        // taskset pins the process before it starts; threads and children inherit the mask,
        // so the root, its IO thread and every child share CPU 0 (mitogen's too).
        argv.extend(["taskset", "-c", "0"].map(OsString::from));
    }
    let runtime = match system {
        "mitogen" => {
            argv.extend([OsString::from(&opts.python), opts.script.clone().into(), "round".into()]);
            None
        }
        "arbor" => Some("smol"),
        "arbor-tokio" => Some("tokio"),
        _ => None,
    };
    if system != "mitogen" {
        let round = if system == "floor" { "floor-round" } else { "arbor-round" };
        argv.extend([std::env::current_exe()?.into(), round.into()]);
    }
    if pinned {
        argv.extend(["--only", "rtt"].map(OsString::from));
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    match runtime {
        Some(rt) => cmd.env(arbor::RUNTIME_VAR, rt),
        None => cmd.env_remove(arbor::RUNTIME_VAR),
    };
    Ok(cmd)
}

fn run_one(opts: &RunOptions, system: &str, pinned: bool, results: &mut Results) -> Result<(), RunError> {
    let what = format!("{system}{}", if pinned { " (pinned)" } else { "" });
    eprintln!("  {what}");
    let mut cmd = round_command(opts, system, pinned)
        .map_err(|source| RunError::Spawn { what: what.clone(), source })?;
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| RunError::Spawn { what: what.clone(), source })?;
    if !out.status.success() {
        return Err(RunError::Failed { what, status: out.status });
    }
    for text in String::from_utf8_lossy(&out.stdout).lines() {
        match serde_json::from_str::<Line>(text) {
            Ok(line) => results.add(line, if pinned { "_pinned" } else { "" }),
            Err(_) => eprintln!("  ({what} printed: {text})"),
        }
    }
    Ok(())
}

/// Runs every round, prints the table, writes the report.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    let mut results = Results::default();
    for round in 0..opts.rounds {
        eprintln!("round {} of {}", round + 1, opts.rounds);
        // Alternate who goes first, so neither always runs on a machine the other just warmed.
        let mut order = ["arbor", "arbor-tokio", "mitogen"];
        order.rotate_left(round % 3);
        for pinned in [false, true] {
            run_one(opts, "floor", pinned, &mut results)?;
            for system in order {
                run_one(opts, system, pinned, &mut results)?;
            }
        }
    }
    let machine = Machine::describe(&opts.python);
    let table = table(&results);
    println!("{table}");
    let targets = targets(&results);
    println!("{targets}");
    std::fs::write(&opts.out, markdown(opts, &machine, &table, &targets))?;
    eprintln!("written to {}", opts.out.display());
    Ok(())
}

/// How many times better arbor is than `other` (above 1: arbor wins).
fn advantage(better: Better, arbor: f64, other: f64) -> f64 {
    match better {
        Better::Lower => other / arbor,
        Better::Higher => arbor / other,
    }
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e5 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(s: Option<Stats>, unit: &str) -> String {
    match s {
        Some(s) => format!("{} {unit} ({}–{})", num(s.median), num(s.p10), num(s.p90)),
        None => "—".to_string(),
    }
}

fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_string(), |x| format!("{}×", num(x)))
}

fn table(results: &Results) -> String {
    let mut t = String::from(
        "| workload | arbor (smol) | arbor (tokio) | mitogen 0.3.54 | advantage smol / tokio | floor | \
         ÷ floor smol / tokio |\n|---|---|---|---|---|---|---|\n",
    );
    for row in ROWS {
        let (a, k, m, f) = (
            results.stats("arbor", row.key),
            results.stats("arbor-tokio", row.key),
            results.stats("mitogen", row.key),
            results.stats("floor", row.key),
        );
        let adv = |x: Option<Stats>| x.zip(m).map(|(x, m)| advantage(row.better, x.median, m.median));
        let over_floor = |x: Option<Stats>| x.zip(f).map(|(x, f)| x.median / f.median);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} / {} | {} | {} / {} |",
            row.label,
            cell(a, row.unit),
            cell(k, row.unit),
            cell(m, row.unit),
            ratio(adv(a)),
            ratio(adv(k)),
            cell(f, row.unit),
            ratio(over_floor(a)),
            ratio(over_floor(k)),
        );
    }
    t
}

fn targets(results: &Results) -> String {
    let mut t = String::from(
        "| target (issue 11) | arbor (smol) | met | arbor (tokio) | met |\n|---|---|---|---|---|\n",
    );
    for target in TARGETS {
        let Some(row) = ROWS.iter().find(|r| r.key == target.key) else { continue };
        let _ = write!(t, "| {} |", target.what);
        for system in ["arbor", "arbor-tokio"] {
            let (measured, met) = check(results, system, row, &target.check);
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = write!(t, " {measured} | {met} |");
        }
        t.push('\n');
    }
    t
}

/// What `system` measured against one target, and whether it met it.
fn check(results: &Results, system: &str, row: &Row, check: &Check) -> (String, Option<bool>) {
    let a = results.stats(system, row.key).map(|s| s.median);
    match *check {
        Check::WithinFloor(max) => {
            let r = a.zip(results.stats("floor", row.key)).map(|(a, f)| a / f.median);
            (format!("÷ floor = {}", ratio(r)), r.map(|r| r <= max))
        }
        Check::Beats(min) => {
            let r = a.zip(results.stats("mitogen", row.key)).map(|(a, m)| advantage(row.better, a, m.median));
            (format!("{} mitogen", ratio(r)), r.map(|r| r >= min))
        }
        Check::AtMost(max) => (format!("{} {}", a.map_or("—".into(), num), row.unit), a.map(|a| a <= max)),
    }
}

fn markdown(opts: &RunOptions, m: &Machine, table: &str, targets: &str) -> String {
    format!(
        "# Benchmarks: arbor against mitogen 0.3.54\n\n\
         Produced by one command from the repository root (the figures below come from that run, \
         unedited):\n\n```sh\n{command}\n```\n\n\
         ## Machine\n\n\
         | | |\n|---|---|\n\
         | CPUs (nproc) | {cpus} |\n| CPU model | {cpu} |\n| kernel | {kernel} |\n| rustc | {rustc} |\n\
         | python | {python} |\n| mitogen | {mitogen} |\n| date | {date} |\n| rounds | {rounds} |\n\n\
         ## Results\n\n\
         Each cell: median (p10–p90) over every sample of every round. *arbor advantage*: how many \
         times better arbor is than mitogen (mitogen ÷ arbor for times and sizes, arbor ÷ mitogen for \
         rates). *arbor ÷ floor*: arbor's median divided by the floor's, in the row's unit (above 1× \
         for times means slower than the floor; below 1× for rates means slower than the floor).\n\n\
         {table}\n\
         ## Targets\n\n{targets}\n\
         ## How it is measured\n\n{method}\n\
         ## What limits arbor, and why\n\n{why}\n{previous}",
        command = opts.command,
        cpus = m.cpus,
        cpu = m.cpu_model,
        kernel = m.kernel,
        rustc = m.rustc,
        python = m.python,
        mitogen = m.mitogen,
        date = m.date,
        rounds = opts.rounds,
        method = METHOD,
        why = WHY,
        previous = include_str!("../previous_driver.md"),
    )
}

const METHOD: &str = "\
- **Rounds, interleaved.** Every round runs, each in a fresh process: the floor, then arbor on \
smol, arbor on tokio (`ARBOR_RUNTIME=tokio`: the whole tree on tokio) and mitogen (the order \
rotates from round to round), then the same four again pinned. Workloads are the same on \
both sides (bench/src/arbor_round.rs, bench/mitogen_bench.py) and in the same order.
- **Round trips**: 400 timed calls of a function doing nothing after 50 untimed, per round; each \
call is one sample. The grandchild is spawned by the child (arbor: from a call running in the \
child; mitogen: `router.local(via=child)`) and called directly by the root.
- **Pinned**: the round's process is started under `taskset -c 0`; the affinity mask is inherited \
by every thread and every child, so root, IO threads and children share one CPU (mitogen's too).
- **Spawn**: one untimed spawn first (mitogen's first spawn in a process also warms its importer), \
then 5 timed spawns per round, each until the first call (a no-op) has answered.
- **Pipelined**: 100 calls sent before the first answer is awaited; 20 batches per round.
- **Bulk**: a 16 MiB `bytes` argument to a function returning its length, and a function returning \
1 MiB of `bytes` (arbor: a newtype serialized with `serialize_bytes`); MB/s = 10^6 bytes/s; the \
first of each is untimed.
- **Shutdown**: a fresh root (mitogen: Broker + Router) with N idle children that have each \
answered a call. *All exited*: a thread polls a pidfd per child (readable as soon as the process \
exits, whoever reaps it), time from the shutdown call (`Root::shutdown()`; mitogen: \
`broker.shutdown(); broker.join()`) to the last exit. *Returned*: until that call returns.
- **Hung**: the child is running a function that never returns (50 ms after the call was sent); \
*ignoring SIGTERM*: it first installed a SIGTERM handler that does nothing.
- **Idle RSS**: `VmRSS` from /proc/<pid>/status of a child that answered one call 300 ms ago; \
`RssAnon` is the part that is not file-backed (VmRSS also counts the pages of the executable and \
of libc/libpython that the child has touched, which it shares with its parent).
- **Floor**: this binary re-executed as a peer on a socketpair (fd 0), no framing, no threads: \
1-byte ping-pong (grandchild: through a relay process), 100 pings written at once, 16 MiB written \
then a 1-byte ack, 1 MiB read back, spawn + first ping, the peer's own RSS, and for shutdown: \
close the sockets, time until every peer has exited (pidfd, as above).
";

/// What profiling (strace -c -f, perf stat; see the issue 11 note) found behind the figures.
/// It is about mechanisms, not figures: the figures are the tables above.
const WHY: &str = "\
- **Call round trip: four thread hand-offs where the floor has two.** The driver is one future \
per context on its IO thread, over the runtime's reactor, and a blocking function runs on the \
context's calls thread (so a hung one never blocks IO). A round trip therefore wakes four \
threads in turn: the child's IO thread (the call arrived), the child's calls thread (run it; it \
writes the answer itself), the root's IO thread (the answer arrived) and the caller (its one-shot). \
The caller writes its own call, so no hand-off is spent on the way out. The previous driver (table \
below) had the calls thread serve IO itself while idle and polled for up to 50 µs before sleeping, \
which cut two of those hand-offs — but relied on Linux waking the most recent `epoll_wait` \
waiter first, which epoll(7) does not promise, and spun; both are gone. Unpinned, each hand-off \
to a thread on a halted vCPU costs the host's rescheduling of that vCPU, which is most of the \
difference to the floor; pinned, each costs a context switch.
- **After an idle spell, smol's fallback thread holds the reactor: one more hop per process.** \
async-io (2.6.0, the latest release) starts an `async-io` thread beside every `block_on`. While \
a `block_on` runs, that thread sleeps with backoff; once it has seen the reactor go a 10 ms \
window without a turn, it blocks on the reactor's lock and takes it the moment the IO thread \
lets go of it to poll the driver. From then on an event wakes the `async-io` thread, which wakes \
the IO thread: one more thread hop in the child (the call arrived) and one in the root (the \
answer arrived), until the IO thread wins the lock back. The back-to-back round trips above \
never meet it (the reactor turns every few tens of µs); calls 30 ms apart always do. \
`bench/gaps.sh 5` (5 interleaved rounds × 60 calls, each after 30 ms idle, 2026-12-01 18:36 \
UTC): floor 52.6 µs, smol 374 µs, tokio 313 µs — smol 1.19× tokio (1.38× and 1.30× in two \
other runs that day: 388 against 282, 417 against 321); perf's count of epoll waits by thread: smol's `async-io` threads 109, \
its IO threads 46; tokio's IO threads 224, no other. Nothing in async-io's API lets the IO \
thread keep the reactor: the choice is made inside its `block_on` and its thread's loop \
(upstream: smol-rs/async-io#40; a change that keeps the reactor with a lone `block_on`, PR #249, \
was closed, and is in no release). Arming a timer to keep the reactor turning would be polling, \
which the driver does not do. On tokio, the IO thread owns its reactor. Both runtimes are still \
several times the floor after an idle spell (the floor's two processes wake each other, arbor \
wakes four threads in turn), more so than back to back (bench/gaps.sh's floor is as fast \
after 30 ms idle as back to back; arbor is not).
- **Syscalls per round trip** (counts, not timings, `bench/counts.sh`: `perf stat` over \
`ARBOR_BENCH_COUNT_CALLS=3000 arbor-bench arbor-round` less the same with 1000, i.e. per child \
round trip, at commit 5df762b): smol 20 — ours: 2 reads (a read only when the reactor reported \
the stream readable, and a short read taken as drained), 2 `writev`, 4 futex (one wake and one \
wait each for the calls thread's queue and the caller's one-shot; every wake is sent after the \
context's lock is let go of, and the calls thread's queue wakes it outside its own mutex, so a \
woken thread never finds a lock still held — with `std::sync::mpsc` and a wake under the lock it \
was 6.9 pinned to one CPU), and 2 `epoll_ctl` re-arms (async-io registers every source one-shot \
and re-arms it after each event); async-io and polling 3.11's own wait: 2 `epoll_pwait`, 2 reads \
and 2 re-arms of the notifier eventfd, 2 `timerfd_settime` and 2 re-arms of the timerfd (polling \
sets its timerfd on every wait, even with no timeout). No timer moves per call: the driver moves \
its timer only when the deadline comes earlier than where it is armed (a call's timeout moved it \
twice per call, two reactor timer operations each). tokio: 11-12 — 2 reads (its readiness is \
edge-tracked; the driver clears it on a short read, which epoll(7) says exhausted a stream \
socket, rather than read again for a `WouldBlock`: 13-17 with 4 reads at 2c5c32c), 2 `writev`, \
4 futex, 3-4 `epoll_wait`. Before the driver read only what the reactor reported, smol's round \
trip cost 38 syscalls (17 reads, 15 of them `WouldBlock`), and at 2c5c32c 20-23 with 3.7-7.3 \
futex, depending on who found a lock held. Instructions per child round trip (callgrind \
`--trace-children=yes`, summed over root and child, 1500 less 500 calls, at 5df762b): smol \
21.0k, tokio 23.0k (28.0k and 28.3k at 2c5c32c; on 2026-12-02, after the core's cheaper table \
of calls in flight, function names kept in place and inlined accessors, 18.9k and 20.6k against \
19.7k and 21.6k for cea9712's build beside it — which needed the same day's spawn fix, children \
started from `/proc/self/fd/N` instead of `/proc/self/exe`, for any child to start under \
valgrind); a call or an answer costs the driver one \
round of its poll, not two, unless that round left it work. \
Allocations per child round trip on smol (callgrind's call counts over 1000 calls, root and \
child): 8.0 — in the root (5.9) the call's body, the shared header its frame's second holder \
(the host's write queue) needs, the caller's one-shot, 1.5 tree nodes for the call's entries in \
the node's and the driver's tables of calls in flight (a `BTreeMap` frees its last node when it \
empties, which a lone call in flight makes it do every time; a sorted vector would keep its room \
but make many calls in flight quadratic), and async-io's list of wakers for each turn of its \
reactor; in the child (2.1) the function's name and async-io's list. The child's answer is \
carved out of the node's 4 KiB body chunks (`core/src/arena.rs`) and the driver reuses its \
per-round vectors; before those two changes it was 14.1, with no change in instructions that \
three runs each side by side could tell from noise (20.4-20.9k).
- **Pipelined calls.** A blocking `call_async` leaves its frame queued for the first `wait` (or \
the IO thread, woken at once, whichever comes first), so a burst leaves in one write; the callee's \
calls thread, when finishing a call hands out the next one at once, leaves its answer for its \
IO thread to write with the answers after it. No timers and no polling are involved.
- **Bulk transfers.** A 16 MiB argument is serialized straight into the call's body (one \
allocation of the exact size), written in vectored writes of the socket's send buffer (framed \
streams ask for 2 MiB), read in pieces of up to 64 KiB (the read buffer starts at 4 KiB and \
doubles whenever a read fills it) into the decoder's buffer, and decoded by the function: five \
passes over the bytes where the floor makes two.
- **Shutdown and spawn.** Children are reaped through pidfds in the runtime's reactor; each \
child's process group gets SIGTERM when the child is reaped and one `kill(-pgid, 0)` after (so \
nothing user code started outlives the tree); that is two syscalls per child.
- **Idle RSS.** Most of a child's VmRSS is file-backed and shared with its parent: the kernel \
maps the page cache 64 KiB around every page a process faults in (fault-around), so the child's \
VmRSS holds the benchmark binary's whole .text (1.24 MB: both runtimes, and the orchestrator and \
its JSON parser, which every child is a re-exec of), about 1 MiB of libc's, ld.so and libgcc; \
the floor, the same binary, leaves about 30% of that .text untouched. The anonymous part \
(the row below it; `/proc/PID/smaps`, arbor-round `--only rss` with `ARBOR_BENCH_HOLD_SECS`) is, \
on smol: the binary's relocated data (56 KiB), async-io's reactor (48 KiB of its timer queue, \
touched at start), the IO thread's malloc arena, three thread stacks (the calls thread, the IO \
thread, async-io's own), libc's data. What the driver itself held is trimmed: a 4 KiB first read \
buffer instead of 64 KiB zeroed, vectors sorted by key for its small maps (streams, children). \
A tracing subscriber of the driver's own instead of `tracing_subscriber`'s registry (its span \
slab is 32 KiB from the start) saved about 100 KiB more, but was taken out again: a value whose \
`Debug` logs could deadlock it, and its lines differed from `fmt`'s for errors with sources. \
Built with link-time optimisation (`CARGO_PROFILE_RELEASE_LTO=fat \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1`), the benchmark binary is 1.88 MB instead of 2.51 MB \
(.text 1.14 MB), and an idle child's VmRSS was 2.98 MiB (2.94–3.04, ten children) against \
3.24 MiB (3.13–3.31) for the default build run beside it (2026-12-01 20:05 UTC, main at \
ea1eb8a): less code, so fewer 64 KiB windows faulted in (RssAnon 0.28 against 0.30 MiB). That \
only just meets the 3 MiB target, and not on every child. The workspace keeps the default release \
profile, for CI's build time and because the simulator is compared with madsim on default \
profiles.
";
