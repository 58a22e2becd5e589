//! The `arbor` command line keeps the conventions `arbor-sim` and cargo keep: help and version
//! on stdout with status 0, usage errors on stderr with status 2, flags in any order.

use std::process::{Command, Output};

fn arbor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arbor")).args(args).output().expect("arbor runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_go_to_stdout_with_status_zero() {
    for args in [&["--help"][..], &["-h"], &["help"], &["demo", "--help"], &["help", "demo"]] {
        let o = arbor(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains("Usage: arbor"), "{args:?}: {}", text(&o.stdout));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o.stderr));
    }
    assert!(text(&arbor(&["--help"]).stdout).contains("Exit status: 0"));
    assert!(text(&arbor(&["demo", "--help"]).stdout).contains("--no-faults"));
    let o = arbor(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout).trim(), format!("arbor {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_two_on_stderr() {
    for args in [
        &["demo", "--childre", "3"][..],
        &["dmeo"],
        &[],
        &["demo", "--children"],
        &["demo", "--children", "many"],
        &["demo", "--children", "0"],
        &["help", "nope"],
        &["demo", "extra"],
    ] {
        let o = arbor(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stdout));
        assert!(text(&o.stderr).starts_with("error: "), "{args:?}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
    }
    assert!(text(&arbor(&["demo", "--childre", "3"]).stderr).contains("--childre"));
}

#[test]
fn flags_go_in_any_order_and_in_either_form() {
    let o =
        arbor(&["demo", "--no-faults", "--lines=1", "--depth", "0", "--children=1", "--grace-ms", "2000"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("all 1 processes gone"), "{}", text(&o.stdout));
}
