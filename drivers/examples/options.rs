//! Spawn options, the tree's output and a function's panic, as the root sees them:
//! `cargo run -p arbor --example options` (try `RUST_BACKTRACE=1` too).
//!
//! Prints, among the root's own lines:
//! ```text
//! [configured] args ["--mode", "fast"], GREETING=hello, in /tmp   (the child's stdout)
//! [configured] and a line on stderr                              (the child's stderr)
//! ```

use arbor::{Functions, SpawnOptions};

fn functions() -> Functions {
    Functions::new()
        .register("report", |(): ()| {
            let args: Vec<String> =
                arbor::args().into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
            let greeting = std::env::var("GREETING").unwrap_or_default();
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            println!("args {args:?}, GREETING={greeting}, in {}", cwd.display());
            eprintln!("and a line on stderr");
            Ok::<_, String>(())
        })
        .register("boom", |(): ()| -> Result<(), String> { panic!("asked to fail") })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = arbor::init(functions()).start_blocking()?;
    let options = SpawnOptions::named("configured")
        .args(["--mode", "fast"])
        .env("GREETING", "hello")
        .env_remove("HTTP_PROXY")
        .current_dir(std::env::temp_dir());
    let child = root.context().spawn(options)?;
    root.context().call::<_, ()>(child.id, "report", &())?;
    if let Err(e) = root.context().call::<_, ()>(child.id, "boom", &()) {
        println!("the call failed: {}", e.message);
    }
    match root.context().spawn(SpawnOptions::named("refused").env("ARBOR_CONTEXT_ID", "7")) {
        Ok(_) => println!("spawned?"),
        Err(e) => println!("refused: {e}"),
    }
    root.shutdown();
    Ok(())
}
