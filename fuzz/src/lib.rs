//! arbor's fuzz targets, as plain functions of a byte string.
//!
//! Each module holds one target: `run(data)` drives the code under test with whatever `data`
//! describes and panics if a property the protocol promises does not hold; `seeds()` gives the
//! inputs a fresh corpus starts from (built from the golden mitogen frames and the simulator's
//! plans). The libFuzzer binaries in `fuzz/libfuzzer` call `run` and nothing else, and the
//! regression tests (`tests/replay.rs`) feed every checked-in crash and corpus input through the
//! same `run`, so whatever a fuzzer finds stays found under `cargo test` (docs/fuzzing.md).

pub mod bodies;
pub mod decoder;
pub mod golden;
pub mod input;
pub mod lines;
pub mod node;
pub mod plan;
pub mod router;

/// One fuzz target: its name (a folder under `fuzz/corpus` and `fuzz/regressions`, a binary in
/// `fuzz/libfuzzer`), its entry point and its seeds.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The name `fuzz/run.sh` takes.
    pub name: &'static str,
    /// Runs one input; panics on a broken property.
    pub run: fn(&[u8]),
    /// The inputs a fresh corpus starts from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "decoder", run: decoder::run, seeds: decoder::seeds },
    Target { name: "router", run: router::run, seeds: router::seeds },
    Target { name: "node", run: node::run, seeds: node::seeds },
    Target { name: "bodies", run: bodies::run, seeds: bodies::seeds },
    Target { name: "lines", run: lines::run, seeds: lines::seeds },
    Target { name: "plan", run: plan::run, seeds: plan::seeds },
];
