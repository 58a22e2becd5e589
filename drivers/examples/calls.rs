//! Calls users can trust: `cargo run -p arbor --example calls`.
//!
//! A typed function handle; what a call with the wrong types gets instead of a wrong value; a
//! deadline against a busy child; a call cancelled by dropping its future; one child (with a
//! child of its own) shut down on its own while its sibling serves on; another killed; and the
//! root told of every context that leaves, grandchildren included. Every claim is checked:
//! the example exits non-zero if one does not hold.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor::{CallErrorKind, CallOptions, DepartureCause, Function, Functions, SpawnOptions};

/// Declared once, used to register and to call: a call with other types does not compile.
const ADD: Function<(i32, i32), i32> = Function::new("add");
/// Sleeps for the given milliseconds on the child's calls thread (a blocking function).
const NAP: Function<u64, ()> = Function::new("nap");
/// Starts a child of the context it runs in.
const SPAWN_ONE: Function<String, u32> = Function::new("spawn_one");

fn functions() -> Functions {
    Functions::new()
        .register(ADD, |(a, b)| Ok::<_, String>(a + b))
        .register(NAP, |ms| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(())
        })
        .register(SPAWN_ONE, |name| {
            let ctx = arbor::blocking::context().ok_or("no context")?;
            let child = ctx.spawn(SpawnOptions::named(name)).map_err(|e| e.to_string())?;
            Ok::<_, String>(child.id.0)
        })
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    println!("{} {what}", if ok { "ok  " } else { "FAIL" });
    if ok {
        Ok(())
    } else {
        Err(format!("not so: {what}"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let departures = Arc::new(Mutex::new(Vec::new()));
    let seen = departures.clone();
    let root = arbor::init(functions())
        .on_departure(move |d| seen.lock().unwrap_or_else(|e| e.into_inner()).push(d.clone()))
        .start_blocking()?;
    let ctx = root.context();
    let worker = ctx.spawn(SpawnOptions::named("worker"))?;

    // Typed: the handle fixes the types.
    check("ADD(2, 3) = 5", ctx.call(worker.id, ADD, &(2, 3))? == 5)?;
    // Stringly typed with the wrong types: a TypeMismatch naming both sides, never a value.
    let wrong = ctx.call::<_, i32>(worker.id, "add", &(2u8, 3u8)).unwrap_err();
    println!("     {}", wrong.message);
    check("(2u8, 3u8) against (i32, i32) is a TypeMismatch", wrong.kind == CallErrorKind::TypeMismatch)?;

    // A deadline: a call queued behind a 300 ms one gives up at 50 ms, and never starts.
    let busy = ctx.call_async(worker.id, NAP, &300);
    let t = Instant::now();
    let late = ctx.call_with(worker.id, ADD, &(1, 1), CallOptions::new().timeout(Duration::from_millis(50)));
    let waited = t.elapsed();
    check(
        "the queued call timed out at its deadline",
        late.map_err(|e| e.kind) == Err(CallErrorKind::Timeout),
    )?;
    check(
        "… after 50 ms, not 300",
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(300),
    )?;
    busy.wait()?;

    // Dropping an async call's future cancels it: queued behind a busy call, the callee drops
    // it unstarted. (One already running is dropped if it is async; a blocking one, like this
    // nap, cannot be stopped and runs on.)
    let busy = ctx.call_async(worker.id, NAP, &200);
    smol::block_on(async {
        let nap = ctx.as_async().call(worker.id, NAP, &10_000);
        drop(nap); // the call resolves `Cancelled` and the worker is told
    });
    busy.wait()?;
    let t = Instant::now();
    let four = ctx.call(worker.id, ADD, &(2, 2))?;
    check(
        "the cancelled 10 s nap never ran: the worker answers at once",
        four == 4 && t.elapsed() < Duration::from_secs(5),
    )?;

    // One child, with a child of its own, shut down on its own while its sibling serves.
    let doomed = ctx.spawn(SpawnOptions::named("doomed"))?;
    let grandchild = ctx.call(doomed.id, SPAWN_ONE, &"doomed's child".to_string())?;
    let left = ctx.shutdown_child(doomed.id)?;
    check("the doomed child was shut down, not forced", left.cause == DepartureCause::Shutdown)?;
    check("its sibling still answers", ctx.call(worker.id, ADD, &(3, 4))? == 7)?;
    let heard_grandchild = departures.lock().map(|d| d.iter().any(|d| d.id.0 == grandchild)).unwrap_or(false);
    check("the root heard its grandchild leave, reported by its parent", heard_grandchild)?;

    // Another one killed, with a call hung on it: the call fails at once.
    let victim = ctx.spawn(SpawnOptions::named("victim"))?;
    let hung = ctx.call_async(victim.id, NAP, &60_000);
    let killed = ctx.kill_child(victim.id)?;
    check("the victim was killed", killed.cause == DepartureCause::Killed)?;
    check(
        "the call hung on it failed Disconnected",
        hung.wait().map_err(|e| e.kind) == Err(CallErrorKind::Disconnected),
    )?;

    let report = root.shutdown();
    for d in &report.departed {
        println!(
            "     left: {} (context {}, pid {}, child of {}): {:?}, {}",
            d.name.as_deref().unwrap_or("?"),
            d.id,
            d.pid,
            d.parent,
            d.status,
            d.cause
        );
    }
    check("the report names all four contexts that left", report.departed.len() == 4)?;
    Ok(())
}
