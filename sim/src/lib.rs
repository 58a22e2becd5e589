//! `arbor-sim`: the deterministic simulator of arbor process trees.
//!
//! Many real [`arbor_core::node::Node`]s run in modelled processes joined by modelled sockets,
//! in virtual time, with faults drawn from a seed. Every run is checked by invariant checkers
//! (and by any [`Check`] of the user's); the same plan always gives the byte-identical trace; a
//! failing run shrinks to a small self-contained repro file. See docs/simulator.md.
//!
//! ```
//! use arbor_sim::{scenario, Sim};
//! let plan = scenario::find("s3-hung-call").unwrap().plan(7);
//! let sim = Sim::new();
//! let report = sim.run(&plan).unwrap();
//! assert!(report.passed(), "{:?}", report.violations);
//! assert_eq!(report.hash, sim.run(&plan).unwrap().hash); // determinism
//! ```
//!
//! What a user needs is exported here: plans ([`Plan`], validated by [`Plan::validate`]),
//! scenarios of their own ([`Scenario::new`], [`Scenarios`]), checks of their own ([`Check`]),
//! runs and shrinking ([`Sim`]), seed sweeps under `cargo test` with the seeds from the
//! environment ([`Sim::test`], [`testing`]), proptest strategies (the `proptest` feature,
//! [`strategy`]) and the command line (the default `cli` feature, [`cli`]).
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod bench;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod plan;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod shrink;
#[cfg(feature = "proptest")]
pub mod strategy;
pub mod testing;
pub mod trace;
pub mod world;

pub use check::{Check, Violation};
pub use plan::{Action, Expect, Fault, Net, Plan, PlanError, ProcId};
pub use run::{Report, Sim};
pub use scenario::{Scenario, Scenarios};
pub use testing::{Failure, Seeds};
pub use trace::{Event, Trace, What};
