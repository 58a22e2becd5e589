//! One child, calls from tokio tasks, the tree on tokio:
//! `cargo run -p arbor --features tokio --example hello_tokio`.

use arbor::{Functions, SpawnOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Register first: a child process runs this same `main` and never gets past `init`.
    let functions = Functions::new()
        .register("greet", |name: String| Ok::<_, String>(format!("hello, {name}")))
        .register_async("double_later", |n: u64| async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok::<_, String>(n * 2)
        });
    // Children run on their parent's runtime: the whole tree is on tokio.
    let root = arbor::init(functions).runtime(arbor::runtime::Tokio::new()).start()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let child = root.context().spawn(SpawnOptions::named("greeter")).await?;
        let greeting = tokio::spawn(root.context().call::<_, String>(child.id, "greet", "tokio"));
        let doubled = root.context().call::<_, u64>(child.id, "double_later", &21u64);
        println!("context {} (pid {}) says: {}", child.id, child.pid, greeting.await??);
        println!("and doubles 21 to {}", doubled.await?);
        let report = root.shutdown().await;
        println!("tree gone in {:?}", report.took);
        Ok(())
    })
}
