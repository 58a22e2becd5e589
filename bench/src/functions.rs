//! The functions every context of a benchmark tree offers (mirrored in mitogen_bench.py).

use arbor::{Functions, SpawnOptions};

use crate::blob::Blob;

/// The benchmark's registry; every process of the tree builds the same one.
pub fn functions() -> Functions {
    Functions::new()
        .register("noop", |(): ()| Ok::<_, String>(()))
        .register("pid", |(): ()| Ok::<_, String>(std::process::id()))
        .register("length", |blob: Blob| Ok::<_, String>(blob.0.len() as u64))
        .register("make", |n: u64| {
            let n = usize::try_from(n).map_err(|e| e.to_string())?;
            Ok::<_, String>(Blob(vec![0xa5; n]))
        })
        .register("hang", arbor::faults::hang)
        .register("ignore_sigterm", arbor::faults::ignore_sigterm)
        .register("spawn_child", |(): ()| {
            // Runs in a child: starts a grandchild below it and hands back its id.
            let ctx = arbor::blocking::context().ok_or("no context")?;
            let child = ctx.spawn(SpawnOptions::named("grandchild")).map_err(|e| e.to_string())?;
            Ok::<_, String>(child.id.0)
        })
}
