//! One child, calls from smol tasks: `cargo run -p arbor --example hello_smol`.
//!
//! The async API's futures wake through plain wakers, so they run on any executor; here the
//! caller is a smol task and the tree's IO threads run on smol too (the default runtime).

use arbor::{Functions, SpawnOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Register first: a child process runs this same `main` and never gets past `init`.
    let functions = Functions::new()
        .register("greet", |name: String| Ok::<_, String>(format!("hello, {name}")))
        // An async function runs as a task on the child's tasks thread.
        .register_async("double_later", |n: u64| async move {
            smol::Timer::after(std::time::Duration::from_millis(1)).await;
            Ok::<_, String>(n * 2)
        });
    let root = arbor::init(functions).runtime(arbor::runtime::Smol::new()).start()?;
    smol::block_on(async {
        let child = root.context().spawn(SpawnOptions::named("greeter")).await?;
        // Pipelined: both calls are on the wire before either answer is awaited.
        let greeting = root.context().call::<_, String>(child.id, "greet", "smol");
        let doubled = root.context().call::<_, u64>(child.id, "double_later", &21u64);
        println!("context {} (pid {}) says: {}", child.id, child.pid, greeting.await?);
        println!("and doubles 21 to {}", doubled.await?);
        let report = root.shutdown().await;
        println!("tree gone in {:?}", report.took);
        Ok(())
    })
}
