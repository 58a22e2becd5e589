//! `arbor-sim`: run, sweep, replay and benchmark simulated arbor process trees
//! (`arbor-sim --help`; docs/simulator.md). The command line itself is [`arbor_sim::cli`], so a
//! user's binary can offer it with their own scenarios and checks.

fn main() -> std::process::ExitCode {
    arbor_sim::cli::main(arbor_sim::Scenarios::builtin(), arbor_sim::Sim::new())
}
