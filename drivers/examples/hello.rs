//! One child, one call: `cargo run -p arbor --example hello`.

use arbor::{Functions, SpawnOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Register first: a child process runs this same `main` and never gets past `init`.
    let functions =
        Functions::new().register("greet", |name: String| Ok::<_, String>(format!("hello, {name}")));
    let root = arbor::init(functions).start_blocking()?;
    let child = root.context().spawn(SpawnOptions::named("greeter"))?;
    let answer: String = root.context().call(child.id, "greet", "world")?;
    println!("context {} (pid {}) says: {answer}", child.id, child.pid);
    let report = root.shutdown();
    println!("tree gone in {:?}", report.took);
    Ok(())
}
