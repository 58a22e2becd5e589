//! Every scenario passes every checker over a range of seeds, and replays byte for byte.

use arbor_sim::run::run;
use arbor_sim::scenario::SCENARIOS;

#[test]
fn every_scenario_passes_for_many_seeds_and_is_deterministic() {
    let seeds: u64 = std::env::var("ARBOR_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut failures = Vec::new();
    for s in SCENARIOS {
        for seed in 0..seeds {
            let plan = s.plan(seed);
            let a = run(&plan);
            if !a.passed() {
                failures.push(format!(
                    "{} seed {seed}: {}",
                    s.name,
                    a.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
                ));
                continue;
            }
            if seed < 3 {
                let b = run(&plan);
                assert_eq!(
                    a.trace.timeline(),
                    b.trace.timeline(),
                    "{} seed {seed} is not deterministic",
                    s.name
                );
                assert_eq!(a.hash, b.hash);
            }
        }
    }
    assert!(failures.is_empty(), "{} failing runs:\n{}", failures.len(), failures.join("\n"));
}
