//! The simulator's outputs are what they claim to be: the Chrome trace is valid JSON in the
//! trace-event format with a track per process, and the timeline has a line per event.

use arbor_sim::run::run;
use arbor_sim::scenario::find;

#[test]
fn chrome_trace_is_valid_trace_event_json() {
    let report = run(&find("s23-frozen-child").unwrap().plan(3));
    let json: serde_json::Value = serde_json::from_str(&report.trace.chrome_json()).expect("valid JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents array");
    assert!(events.len() > report.trace.events.len(), "an instant per event plus metadata and spans");
    let tracks: std::collections::BTreeSet<u64> = events.iter().filter_map(|e| e["tid"].as_u64()).collect();
    assert_eq!(tracks.len(), report.plan.procs());
    // Every process that died has a complete ("X") span for its life.
    let spans = events.iter().filter(|e| e["ph"] == "X").count();
    assert_eq!(spans, report.plan.procs());
    assert!(events.iter().all(|e| e["ph"] == "M" || e["ts"].is_number()));
}

#[test]
fn timeline_has_one_line_per_event_and_summary_one_row_per_process() {
    let report = run(&find("s2-grandchild").unwrap().plan(5));
    assert_eq!(report.trace.timeline().lines().count(), report.trace.events.len());
    assert_eq!(report.summary().lines().count(), 1 + report.plan.procs());
}
