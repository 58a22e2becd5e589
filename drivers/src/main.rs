//! `arbor`: the command-line front end. `arbor demo` spawns a real tree of processes, calls a
//! function in every context, lets them print, injects two faults (a hung call and a child that
//! ignores SIGTERM), shuts the tree down and prints how it went.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use arbor::blocking::{PendingCall, Root};
use arbor::{CallError, ContextId, Functions, SpawnOptions};

const HELP: &str = "\
arbor: the arbor process-tree driver

Usage: arbor <COMMAND>

Commands:
  demo   Spawn a real tree, call into every context, collect its output, shut it down
  help   Print this message or the help of a command

Options:
  -h, --help     Print help
  -V, --version  Print version

Exit status: 0 the demo ran and every process is gone; 1 it failed (an error, or a process
left running); 2 usage error (unknown command or flag, a missing or bad value).";

const DEMO_HELP: &str = "\
Spawn a real tree of processes, call a function in every context, let them print, inject two
faults (a hung call and a child that ignores SIGTERM), shut the tree down and show that every
process is gone.

Usage: arbor demo [OPTIONS]

Options:
      --children <N>  children of the root, at least 1 [default: 3]
      --depth <D>     contexts in the chain below each child [default: 1]
      --lines <L>     lines each context prints [default: 2]
      --grace-ms <G>  the root's grace period in milliseconds [default: 5000]
      --no-faults     skip the hung call and the SIGTERM-ignoring child
  -h, --help          Print help";

/// Status for a command line that is wrong (unknown command or flag, missing or bad value), as
/// cargo and clap use it.
const EXIT_USAGE: u8 = 2;

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    /// Print this text on stdout and exit 0 (`--help`, `help`, `--version`).
    Print(String),
    /// Run the demo.
    Demo(Demo),
}

/// The demo's settings.
#[derive(Debug)]
struct Demo {
    children: u32,
    depth: u32,
    lines: u32,
    grace: Duration,
    faults: bool,
}

/// Functions every context of the demo offers (every process runs this same binary).
fn functions() -> Functions {
    Functions::new()
        .register("whoami", |(): ()| {
            let ctx = arbor::blocking::context().ok_or("no context")?;
            Ok::<_, String>((ctx.id().0, std::process::id()))
        })
        .register("grow", |depth: u32| -> Result<Vec<(u32, u32, String)>, String> {
            // Spawn one child below this context and let it grow the rest of the chain.
            if depth == 0 {
                return Ok(Vec::new());
            }
            let ctx = arbor::blocking::context().ok_or("no context")?;
            let name = format!("below-{}", ctx.id());
            let child = ctx.spawn(SpawnOptions::named(name)).map_err(|e| e.to_string())?;
            let mut chain = vec![(child.id.0, child.pid.0, child.name)];
            let below: Vec<(u32, u32, String)> =
                ctx.call(child.id, "grow", &(depth - 1)).map_err(|e| e.to_string())?;
            chain.extend(below);
            Ok(chain)
        })
        .register("print", |lines: u32| {
            let id = arbor::blocking::context().map(|c| c.id().0).unwrap_or_default();
            for i in 1..=lines {
                println!("hello from context {id} (line {i} of {lines})");
            }
            tracing::info!(pid = std::process::id(), "a tracing event from context {id}");
            Ok::<_, String>(())
        })
        .register("hang", arbor::faults::hang)
        .register("ignore_sigterm", arbor::faults::ignore_sigterm)
}

fn main() -> ExitCode {
    let launcher = arbor::init(functions());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_target(false).without_time().with_ansi(colour).init();
    let demo = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Demo(demo)) => demo,
        Ok(Command::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let root = match launcher.grace(demo.grace).start_blocking() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&demo, root) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("arbor demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments after the program name with lexopt: flags in any order, `--flag value`
/// or `--flag=value`, anything unknown an error.
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut command: Option<String> = None;
    let mut demo = Demo { children: 3, depth: 1, lines: 2, grace: Duration::from_secs(5), faults: true };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                return Ok(Command::Print(if command.is_some() { DEMO_HELP } else { HELP }.into()))
            }
            Short('V') | Long("version") if command.is_none() => {
                return Ok(Command::Print(format!("arbor {}", env!("CARGO_PKG_VERSION"))))
            }
            Value(word) if command.is_none() => {
                let word = word.into_string().map_err(|w| format!("unknown command {w:?}"))?;
                match word.as_str() {
                    "demo" => command = Some(word),
                    "help" => {
                        let topic = parser.value().ok().and_then(|v| v.into_string().ok());
                        return match topic.as_deref() {
                            None => Ok(Command::Print(HELP.into())),
                            Some("demo") => Ok(Command::Print(DEMO_HELP.into())),
                            Some(other) => Err(format!("unknown command {other:?}")),
                        };
                    }
                    _ => return Err(format!("unknown command {word:?}")),
                }
            }
            Long("no-faults") if command.is_some() => demo.faults = false,
            Long(flag @ ("children" | "depth" | "lines" | "grace-ms")) if command.is_some() => {
                let flag = flag.to_string();
                let value = parser.value().map_err(|e| e.to_string())?;
                let number: u32 = value.parse().map_err(|e| format!("--{flag}: {e}"))?;
                match flag.as_str() {
                    "children" => demo.children = number,
                    "depth" => demo.depth = number,
                    "lines" => demo.lines = number,
                    _ => demo.grace = Duration::from_millis(number.into()),
                }
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if command.is_none() {
        return Err(format!("a command is required\n\n{HELP}"));
    }
    if demo.children == 0 {
        return Err("--children must be at least 1".into());
    }
    Ok(Command::Demo(demo))
}

/// One context of the tree, as the demo knows it.
#[derive(Clone, Debug)]
struct Member {
    id: ContextId,
    pid: u32,
    name: String,
    level: u32,
}

fn run(demo: &Demo, root: Root) -> Result<bool, Box<dyn std::error::Error>> {
    let ctx = root.context().clone();
    let start = Instant::now();
    println!(
        "arbor demo: {} children of the root, a chain of {} below each, {} lines per context",
        demo.children, demo.depth, demo.lines
    );

    // 1. The tree: children of the root, then each grows its own chain (in parallel).
    let mut tree = Vec::new();
    let mut first_answer = None;
    for i in 0..demo.children {
        let child = ctx.spawn(SpawnOptions::named(format!("child-{i}")))?;
        if first_answer.is_none() {
            let t = Instant::now();
            let _: (u32, u32) = ctx.call(child.id, "whoami", &())?;
            first_answer = Some(start.elapsed().max(t.elapsed()));
        }
        tree.push(Member { id: child.id, pid: child.pid.0, name: child.name, level: 1 });
    }
    let growing: Vec<PendingCall<Vec<(u32, u32, String)>>> =
        tree.iter().map(|m| ctx.call_async(m.id, "grow", &demo.depth)).collect();
    for grown in growing {
        for (level, (id, pid, name)) in grown.wait()?.into_iter().enumerate() {
            tree.push(Member { id: ContextId(id), pid, name, level: level as u32 + 2 });
        }
    }
    let built = start.elapsed();
    println!(
        "\ntree of {} processes up in {:.1} ms (spawn to first answer: {:.1} ms)",
        tree.len(),
        ms(built),
        first_answer.map_or(0.0, ms)
    );

    // 2. A call in every context, pipelined.
    let asked: Vec<PendingCall<(u32, u32)>> =
        tree.iter().map(|m| ctx.call_async(m.id, "whoami", &())).collect();
    println!("\n  {:>5}  {:>5}  {:>8}  name", "level", "id", "pid");
    for (member, answer) in tree.iter().zip(asked) {
        let (id, pid) = answer.wait()?;
        let ok = if id == member.id.0 && pid == member.pid { "" } else { "  (unexpected answer!)" };
        println!("  {:>5}  {:>5}  {:>8}  {}{ok}", member.level, id, pid, member.name);
    }

    // 3. Output from every context, forwarded to the root and printed as tracing events.
    println!();
    let printed: Vec<PendingCall<()>> =
        tree.iter().map(|m| ctx.call_async(m.id, "print", &demo.lines)).collect();
    for p in printed {
        p.wait()?;
    }

    // 4. Faults: a call that never returns, in a context that ignores SIGTERM.
    let mut hung: Vec<(String, PendingCall<()>)> = Vec::new();
    if demo.faults {
        let deepest = tree.iter().rfind(|m| m.level > 1).unwrap_or(&tree[0]).clone();
        hung.push((deepest.name.clone(), ctx.call_async(deepest.id, "hang", &())));
        let stubborn = tree.get(1).unwrap_or(&tree[0]).clone();
        ctx.call::<_, ()>(stubborn.id, "ignore_sigterm", &())?;
        hung.push((stubborn.name.clone(), ctx.call_async(stubborn.id, "hang", &())));
        thread::sleep(Duration::from_millis(20));
        println!(
            "\nfaults: {:?} hangs in a call; {:?} ignores SIGTERM and hangs too",
            deepest.name, stubborn.name
        );
    }

    // 5. Shutdown.
    println!("\nshutting the tree down (grace {:?}) ...", demo.grace);
    let report = root.shutdown();
    println!("\ntimeline (from the shutdown request):");
    for r in &report.reaped {
        println!(
            "  {:>8.1} ms  {} (pid {}, context {}) reaped: {:?}",
            ms(r.after),
            r.name,
            r.pid,
            r.id,
            r.status
        );
    }
    println!("  {:>8.1} ms  root exits", ms(report.took));
    for (name, call) in hung {
        let answer: Result<(), CallError> = call.wait();
        println!(
            "hung call in {name:?} answered: {}",
            answer.map_or_else(|e| format!("{:?}", e.kind), |()| "Ok".into())
        );
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while tree.iter().any(|m| alive(m.pid)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let left: Vec<u32> = tree.iter().filter(|m| alive(m.pid)).map(|m| m.pid).collect();
    if left.is_empty() {
        println!("\nall {} processes gone; whole demo took {:.0} ms", tree.len(), ms(start.elapsed()));
        Ok(true)
    } else {
        println!("\nstill running: {left:?}");
        Ok(false)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether `pid` exists and is not a zombie (an exited child of an exited parent may linger
/// as a zombie until init reaps it; that process is gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
