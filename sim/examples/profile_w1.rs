//! Where W1's time goes: the world, the checkers, the trace hash.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn main() {
    sizes();
    let plan = arbor_sim::bench::tree_plan(10, 1000, 1);
    let t = std::time::Instant::now();
    let mut w = arbor_sim::world::World::new(&plan);
    w.run_until(arbor_core::time::Instant::from_nanos(u64::MAX));
    let t1 = t.elapsed();
    let reps: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    for _ in 0..reps {
        let mut w = arbor_sim::world::World::new(&plan);
        w.run_until(arbor_core::time::Instant::from_nanos(u64::MAX));
    }
    let trace = w.trace.clone();
    let t = std::time::Instant::now();
    let v = arbor_sim::check::check(&plan, &trace);
    let t2 = t.elapsed();
    let t = std::time::Instant::now();
    let h = trace.hash();
    let t3 = t.elapsed();
    println!(
        "world {t1:?} check {t2:?} hash {t3:?} events {} violations {} hash {h:x}",
        trace.events.len(),
        v.len()
    );
}

#[allow(dead_code)]
fn sizes() {
    println!(
        "Event {} Output {} Frame {}",
        std::mem::size_of::<arbor_sim::trace::Event>(),
        std::mem::size_of::<arbor_core::node::Output>(),
        std::mem::size_of::<arbor_core::frame::Frame>()
    );
}
