//! A child spawns a grandchild, whose output and `tracing` events reach the root, printed there
//! as `[grandchild] FROM THE ROOT, VIA THE CHILD` (stdout) and `[grandchild]  WARN nested:
//! shouted 28 bytes` (stderr): `cargo run -p arbor --example nested`.

use arbor::{Functions, SpawnOptions};

fn functions() -> Functions {
    Functions::new()
        .register("shout", |text: String| {
            println!("{}", text.to_uppercase());
            tracing::warn!("shouted {} bytes", text.len());
            Ok::<_, String>(())
        })
        .register("delegate", |text: String| {
            // Runs in the child: spawn a grandchild and pass the work down.
            let ctx = arbor::blocking::context().ok_or("no context")?;
            let grandchild = ctx.spawn(SpawnOptions::named("grandchild")).map_err(|e| e.to_string())?;
            ctx.call::<_, ()>(grandchild.id, "shout", &text).map_err(|e| e.to_string())?;
            Ok::<_, String>(grandchild.id.0)
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let launcher = arbor::init(functions());
    // For the root's own events; the tree's lines are printed whether or not one is installed.
    tracing_subscriber::fmt().without_time().init();
    let root = launcher.start_blocking()?;
    let child = root.context().spawn(SpawnOptions::named("child"))?;
    let grandchild: u32 = root.context().call(child.id, "delegate", "from the root, via the child")?;
    // Ids are tree-wide: the root can call the grandchild directly.
    root.context().call::<_, ()>(arbor::ContextId(grandchild), "shout", "and directly")?;
    let report = root.shutdown();
    println!("{} child reaped; tree gone in {:?}", report.reaped.len(), report.took);
    Ok(())
}
