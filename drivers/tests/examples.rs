//! The examples that check their own claims, run as a user would run them (`cargo test` builds
//! every example beside the test binaries, in `target/<profile>/examples/`).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary> → target/<profile>/examples/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    dir.join("examples").join(name)
}

/// docs/driver.md's tour of typed functions, deadlines, cancellation, one child shut down or
/// killed on its own, and departures: it exits non-zero if any claim fails.
#[test]
fn the_calls_example_holds_every_claim_it_makes() {
    let out = Command::new(example("calls")).env("ARBOR_RUNTIME", "smol").output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 11, "{stdout}");
}
