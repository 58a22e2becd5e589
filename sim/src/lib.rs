//! `arbor-sim`: the deterministic simulator of arbor process trees.
//!
//! Many real [`arbor_core::node::Node`]s run in modelled processes joined by modelled sockets,
//! in virtual time, with faults drawn from a seed. Every run is checked by invariant checkers;
//! the same plan always gives the byte-identical trace; a failing run shrinks to a small
//! self-contained repro file. See docs/simulator.md.
//!
//! ```
//! let plan = arbor_sim::scenario::find("s3-hung-call").unwrap().plan(7);
//! let report = arbor_sim::run::run(&plan);
//! assert!(report.passed(), "{:?}", report.violations);
//! assert_eq!(report.hash, arbor_sim::run::run(&plan).hash); // determinism
//! ```
#![forbid(unsafe_code)]

pub mod bench;
pub mod check;
pub mod plan;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod trace;
pub mod world;
