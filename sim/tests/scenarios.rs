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

#[test]
fn different_seeds_give_different_runs() {
    let chaos = arbor_sim::scenario::find("chaos").unwrap();
    let hashes: std::collections::BTreeSet<u64> = (0..10).map(|seed| run(&chaos.plan(seed)).hash).collect();
    assert!(hashes.len() >= 9, "seeds barely matter: {hashes:?}");
}

#[test]
fn a_plan_file_replays_the_same_run() {
    let plan = arbor_sim::scenario::find("chaos").unwrap().plan(11);
    let text = plan.to_text();
    let again = arbor_sim::plan::Plan::from_text(&text).unwrap();
    assert_eq!(run(&plan).hash, run(&again).hash);
}
