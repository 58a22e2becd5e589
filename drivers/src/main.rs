//! `arbor`: the command-line front end. `arbor demo` spawns a real tree of processes, calls a
//! function in every context, lets them print, injects two faults (a hung call and a child that
//! ignores SIGTERM), shuts the tree down and prints how it went.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use arbor::blocking::{PendingCall, Root};
use arbor::{CallError, ContextId, Functions, SpawnOptions};

const USAGE: &str = "\
usage: arbor demo [--children N] [--depth D] [--lines L] [--grace-ms G] [--no-faults]

  --children N   children of the root (default 3)
  --depth D      contexts in the chain below each child (default 1)
  --lines L      lines each context prints (default 2)
  --grace-ms G   the root's grace period in milliseconds (default 5000)
  --no-faults    skip the hung call and the SIGTERM-ignoring child";

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let demo = match parse(&args) {
        Ok(demo) => demo,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
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

fn parse(args: &[String]) -> Result<Demo, String> {
    let mut demo = Demo { children: 3, depth: 1, lines: 2, grace: Duration::from_secs(5), faults: true };
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("demo") => {}
        Some("-h" | "--help") => return Err("arbor: the arbor process-tree driver".into()),
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("a command is required".into()),
    }
    while let Some(flag) = args.next() {
        if flag == "--no-faults" {
            demo.faults = false;
            continue;
        }
        if !["--children", "--depth", "--lines", "--grace-ms"].contains(&flag.as_str()) {
            return Err(format!("unknown option {flag:?}"));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u32 = value.parse().map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--children" => demo.children = number,
            "--depth" => demo.depth = number,
            "--lines" => demo.lines = number,
            "--grace-ms" => demo.grace = Duration::from_millis(number.into()),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    if demo.children == 0 {
        return Err("--children must be at least 1".into());
    }
    Ok(demo)
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
