//! S24 behind a stalled link (`s24-runaway-behind-stalled-link`): a runaway writer whose parent
//! link delivers nothing for a while. Its host stops reading its stdout once the bytes queued
//! towards the parent pass the high-water mark, so the writer blocks on a full capture socket
//! instead of growing that queue without bound; once the link moves again everything flows,
//! shutdown completes within the liveness bound and every line printed reaches the root.
//!
//! And behind a stalled link one level up (`s24-runaway-behind-stalled-middle`): the middle
//! context between the stalled link and the runaway stops reading its child's stream too, so the
//! lines it would forward wait in the child instead of in the middle's memory; the child's writes
//! block, and it pauses in turn.

use arbor_sim::check::one_read_worth;
use arbor_sim::run::{finish, limit};
use arbor_sim::scenario::find;
use arbor_sim::trace::What;
use arbor_sim::world::World;

const RUNAWAY: usize = 2;

#[test]
fn a_runaway_behind_a_stalled_link_is_held_to_the_high_water_mark_plus_one_read() {
    let scenario = find("s24-runaway-behind-stalled-link").unwrap();
    for seed in 0..10 {
        let plan = scenario.plan(seed);
        let mut world = World::new(&plan);
        world.run_until(limit(&plan));
        let mark = plan.net.parent_high_water;
        let high = world.procs[RUNAWAY].parent_queue_high;
        assert!(high > mark, "seed {seed}: the stall never filled the parent queue ({high} bytes)");
        assert!(
            high <= mark + one_read_worth(plan.net.read_size),
            "seed {seed}: {high} bytes queued, mark {mark}, read size {}",
            plan.net.read_size
        );
        let report = finish(world);
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    }
}

#[test]
fn loggers_pause_while_the_link_is_stalled_and_resume_once_it_drains() {
    let plan = find("s24-runaway-behind-stalled-link").unwrap().plan(1);
    let mut world = World::new(&plan);
    world.run_until(limit(&plan));
    let turns: Vec<bool> = world
        .trace
        .events
        .iter()
        .filter(|e| e.proc == RUNAWAY)
        .filter_map(|e| match e.what {
            What::Backpressure { paused, .. } => Some(paused),
            _ => None,
        })
        .collect();
    assert!(turns.len() >= 2 && turns[0], "{turns:?}");
    assert!(turns.windows(2).all(|w| w[0] != w[1]), "pauses and resumes alternate: {turns:?}");
    // While paused the runaway's output stays in the capture socket: nothing it printed is lost.
    assert!(finish(world).passed());
}

#[test]
fn without_the_small_mark_the_same_stall_queues_megabytes() {
    // The default mark (8 MiB) on the same plan: the bound above is backpressure's doing.
    let mut plan = find("s24-runaway-behind-stalled-link").unwrap().plan(1);
    plan.net.parent_high_water = arbor_core::host::DEFAULT_PARENT_HIGH_WATER;
    let mut world = World::new(&plan);
    world.run_until(limit(&plan));
    assert!(world.procs[RUNAWAY].parent_queue_high > 1 << 20);
}

// --- a middle context behind a stalled parent link ------------------------------------------

const MIDDLE: usize = 1;

/// The probe (`s24-runaway-behind-stalled-middle` with its longest stall): tree `0 1` (root,
/// middle, grandchild), a runaway writer on the grandchild, the middle's own parent link stalled
/// for 2 s, a 64 KiB mark; and 100 lines printed meanwhile. Before child streams paused too, the
/// middle queued 165 MB here.
fn runaway_behind_a_stalled_middle(seed: u64) -> arbor_sim::plan::Plan {
    use arbor_sim::plan::Fault;
    use std::time::Duration;
    let mut plan = find("s24-runaway-behind-stalled-middle").unwrap().plan(seed);
    assert_eq!(plan.parents, [0, 1]);
    for (_, f) in &mut plan.faults {
        if let Fault::Stall(p, d) = f {
            assert_eq!(*p, MIDDLE);
            *d = Duration::from_secs(2);
        }
    }
    plan
}

#[test]
fn a_middle_context_behind_a_stalled_link_stops_reading_its_children_and_loses_nothing() {
    for seed in 0..10 {
        let plan = runaway_behind_a_stalled_middle(seed);
        let mut world = World::new(&plan);
        world.run_until(limit(&plan));
        let mark = plan.net.parent_high_water;
        let bound = mark + one_read_worth(plan.net.read_size);
        let high = world.procs[MIDDLE].parent_queue_high;
        assert!(high > mark, "seed {seed}: the stall never filled the middle's parent queue ({high} bytes)");
        assert!(
            high <= bound,
            "seed {seed}: the middle queued {high} bytes, mark {mark}, read size {}",
            plan.net.read_size
        );
        // The pause passed down: the grandchild's writes to the middle blocked, its own queue
        // filled, and it paused its loggers in turn, held to the same bound.
        let grandchild = world.procs[RUNAWAY].parent_queue_high;
        assert!(
            grandchild > mark && grandchild <= bound,
            "seed {seed}: the grandchild queued {grandchild} bytes"
        );
        for p in [MIDDLE, RUNAWAY] {
            assert!(
                world
                    .trace
                    .events
                    .iter()
                    .any(|e| e.proc == p && matches!(e.what, What::Backpressure { paused: true, .. })),
                "seed {seed}: p{p} never paused"
            );
        }
        // Every line printed (the runaway's and the 100 scripted ones) reached the root once and
        // in order once the link moved again, and shutdown completed within the liveness bound.
        let report = finish(world);
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    }
}
