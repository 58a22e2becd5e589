//! `arbor_sim::plan::Plan::from_text`, the repro file format, fed arbitrary text
//! (docs/simulator.md).
//!
//! Properties: parsing never panics; a text that parses gives a plan whose `to_text` parses
//! back to the same plan, and prints the same text again.

use arbor_sim::plan::Plan;
use arbor_sim::scenario::SCENARIOS;

/// Runs one input (invalid UTF-8 is read lossily, so every input is some text).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(plan) = Plan::from_text(&text) else { return };
    let printed = plan.to_text();
    assert_eq!(Plan::from_text(&printed).as_ref(), Ok(&plan), "the plan changed through to_text:\n{printed}");
    assert_eq!(Plan::from_text(&printed).map(|p| p.to_text()), Ok(printed), "to_text is not stable");
}

/// Seeds: every scenario's plan for one seed, as `arbor-sim` writes repro files.
pub fn seeds() -> Vec<Vec<u8>> {
    SCENARIOS.iter().map(|s| s.plan(1).to_text().into_bytes()).collect()
}
