//! The `arbor-sim` command line keeps the conventions of cargo and nextest: help and version on
//! stdout with status 0, usage errors with status 2, failures found with status 1, flags in any
//! order, no progress drawing into a pipe, JSON lines and JUnit XML that parse, and a printed
//! plan that replays when pasted into a file.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_arbor-sim");

fn sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("arbor-sim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("arbor-sim-cli-{}-{name}", std::process::id()))
}

/// The lines `run` prints from `# plan` to `# end of plan`, as a user would select them.
fn printed_plan(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("# plan"))
        .take_while(|l| *l != "# end of plan")
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn help_and_version_go_to_stdout_with_status_zero() {
    for args in [&["--help"][..], &["-h"], &["help"], &["sweep", "--help"], &["run", "--help"]] {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{args:?}: {}", stdout(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
    }
    let o = sim(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), format!("arbor-sim {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_help_documents_the_exit_codes() {
    let help = stdout(&sim(&["--help"]));
    for code in ["0 every run passed", "1 a run broke an invariant", "2 usage error", "3 an output file"] {
        assert!(help.contains(code), "{code:?} missing from:\n{help}");
    }
}

#[test]
fn a_misspelt_flag_is_a_usage_error_not_a_pass() {
    let o = sim(&["sweep", "--scenaro", "s3-hung-call", "--seeds", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--scenaro"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--scenario"), "the error suggests the right flag: {}", stderr(&o));
    assert!(o.stdout.is_empty());
    // Unknown commands and scenarios, and missing arguments, are usage errors too.
    assert_eq!(sim(&["swep"]).status.code(), Some(2));
    assert_eq!(sim(&["run"]).status.code(), Some(2));
    assert_eq!(sim(&[]).status.code(), Some(2));
    let o = sim(&["run", "s3-hung-cal"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no scenario named"), "{}", stderr(&o));
    assert_eq!(sim(&["sweep", "--scenario", "nope", "--seeds", "1"]).status.code(), Some(2));
    assert_eq!(sim(&["sweep", "--seeds", "ten"]).status.code(), Some(2));
}

#[test]
fn zero_runs_fail() {
    let o = sim(&["sweep", "--seeds", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("would run nothing"), "{}", stderr(&o));
    assert_eq!(sim(&["sweep", "--seeds", "3", "--jobs", "0"]).status.code(), Some(2));
    assert_eq!(sim(&["bench", "sweep", "--jobs", "0"]).status.code(), Some(2));
}

#[test]
fn flags_go_in_any_order() {
    let a = sim(&["run", "--timeline", "s3-hung-call", "--seed", "4"]);
    let b = sim(&["run", "--seed", "4", "s3-hung-call", "--timeline"]);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).contains("# timeline"));
    let c = sim(&["sweep", "--jobs", "1", "--seeds", "2", "--scenario", "s1-one-child"]);
    let d = sim(&["sweep", "--scenario", "s1-one-child", "--seeds", "2", "--jobs", "1"]);
    assert_eq!(c.status.code(), Some(0));
    let hash = |o: &Output| stdout(o).rsplit("sweep hash ").next().map(str::to_string);
    assert_eq!(hash(&c), hash(&d));
}

#[test]
fn no_progress_is_drawn_into_a_pipe() {
    let o = sim(&["sweep", "--scenario", "s1-one-child", "--seeds", "20"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!o.stderr.contains(&b'\r'), "carriage returns on a pipe: {:?}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn json_is_one_object_per_run_then_a_summary() {
    let o = sim(&[
        "sweep",
        "--scenario",
        "s1-one-child",
        "--scenario",
        "s3-hung-call",
        "--seeds",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    assert_eq!(lines.len(), 7);
    for run in &lines[..6] {
        assert_eq!(run["type"], "run");
        assert_eq!(run["passed"], true);
        assert!(run["scenario"].is_string() && run["seed"].is_u64() && run["hash"].is_string());
        assert!(run["violations"].as_array().is_some_and(Vec::is_empty));
        assert!(run["replay"].as_str().is_some_and(|r| r.starts_with("arbor-sim run ")));
    }
    let summary = &lines[6];
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        (summary["runs"].as_u64(), summary["passed"].as_u64(), summary["failed"].as_u64()),
        (Some(6), Some(6), Some(0))
    );
    assert_eq!(summary["sweep_hash"].as_str().map(str::len), Some(16));

    let o = sim(&["run", "s2-grandchild", "--seed", "1", "--format", "json"]);
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "run");
    assert!(lines[0]["plan"].as_str().is_some_and(|p| p.starts_with("arbor-sim plan v1\n")));
    assert_eq!(lines[1]["type"], "summary");
}

/// The JUnit XML schema CI dashboards read (Jenkins' junit-10.xsd, as GitLab and GitHub
/// reporters accept it): `testsuites` holds `testsuite`s, each with `name` and `tests`, holding
/// `testcase`s with `name` and `classname`; a `failure` carries a `message`.
#[test]
fn junit_has_the_schemas_required_elements() {
    let path = temp("junit.xml");
    let o = sim(&["sweep", "--scenario", "s1-one-child", "--scenario", "s2-grandchild", "--seeds", "4"]);
    assert_eq!(o.status.code(), Some(0));
    let o = sim(&[
        "sweep",
        "--scenario",
        "s1-one-child",
        "--scenario",
        "s2-grandchild",
        "--seeds",
        "4",
        "--junit",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let xml = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("8"));
    assert_eq!(root.attribute("failures"), Some("0"));
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), 2);
    for suite in suites {
        assert_eq!(suite.tag_name().name(), "testsuite");
        assert!(suite.attribute("name").is_some());
        assert_eq!(suite.attribute("tests"), Some("4"));
        let cases: Vec<_> = suite.children().filter(|n| n.is_element()).collect();
        assert_eq!(cases.len(), 4);
        for case in cases {
            assert_eq!(case.tag_name().name(), "testcase");
            assert!(case.attribute("name").is_some_and(|n| n.starts_with("seed ")));
            assert!(case.attribute("classname").is_some());
            assert!(case.attribute("time").and_then(|t| t.parse::<f64>().ok()).is_some());
        }
    }
}

/// The plan `run` prints, pasted into a file as it stands, replays the same run (same trace
/// hash), and a plan that breaks an invariant replays as a failure with status 1.
#[test]
fn a_pasted_plan_replays() {
    let o = sim(&["run", "chaos", "--seed", "11"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    let plan = printed_plan(&out);
    assert!(plan.lines().nth(1) == Some("arbor-sim plan v1"), "{plan}");
    let file = temp("pasted.plan");
    std::fs::write(&file, &plan).unwrap();
    let again = sim(&["replay", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    let hash = |s: &str| s.lines().find_map(|l| l.split("trace hash ").nth(1).map(str::to_string));
    assert_eq!(hash(&out), hash(&stdout(&again)));
    assert!(hash(&out).is_some());
}

/// A plan that breaks an invariant fails with status 1, and its shrunk repro is written and
/// fails the same way.
#[test]
fn a_broken_run_exits_one_and_writes_a_shrunk_repro() {
    let plan = printed_plan(&stdout(&sim(&["run", "s2-grandchild", "--seed", "1"])))
        .replace("mutation none", "mutation shutdown-before-channel-close");
    let file = temp("broken.plan");
    std::fs::write(&file, &plan).unwrap();
    let repro = temp("broken-repro.plan");
    let o = sim(&["replay", file.to_str().unwrap(), "--repro", repro.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("[shutdown-ordering]"), "{}", stdout(&o));
    assert!(stdout(&o).contains("repro written to"), "{}", stdout(&o));
    let small = std::fs::read_to_string(&repro).unwrap();
    assert!(small.lines().count() <= plan.lines().count(), "{small}");
    let again = sim(&["replay", repro.to_str().unwrap(), "--repro", repro.to_str().unwrap()]);
    let _ = std::fs::remove_file(&repro);
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).contains("[shutdown-ordering]"));
    let o = sim(&["replay", file.to_str().unwrap(), "--format", "json", "--repro", repro.to_str().unwrap()]);
    let _ = std::fs::remove_file(&repro);
    assert_eq!(o.status.code(), Some(1));
    let run: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(run["passed"], false);
    assert_eq!(run["violations"][0]["checker"], "shutdown-ordering");
    let _ = std::fs::remove_file(&file);

    // An invalid plan file is a usage error, naming what is wrong.
    let file = temp("invalid.plan");
    std::fs::write(&file, "arbor-sim plan v1\ntree 0\naction 0 call 0 5 echo 1\n").unwrap();
    let o = sim(&["replay", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("process 5"), "{}", stderr(&o));
}

#[test]
fn list_prints_every_scenario_as_text_or_json() {
    let o = sim(&["list", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let names: Vec<String> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), arbor_sim::scenario::SCENARIOS.len());
    assert!(names.iter().any(|n| n == "chaos"));
}

#[test]
fn bench_speaks_the_sim_anchors_protocol() {
    let o = sim(&["bench", "tree", "--n", "2", "--k", "5", "--seed", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let metrics: Vec<Vec<String>> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("sample\t"))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    assert!(metrics.iter().all(|m| m.len() == 6 && m[1] == "arbor-sim" && m[2] == "W1 tree"));
    assert!(metrics.iter().any(|m| m[3] == "throughput" && m[4] == "msgs/wall-s"));
    let o = sim(&["bench", "sweep", "--seeds", "3", "--budget-s", "5", "--jobs", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("W2 sweep\tseeds completed\tseeds\t3\n"), "{}", stdout(&o));
    // W1's calls on bare hosts: every one answered.
    let o = sim(&["bench", "core", "--n", "3", "--k", "7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "calls answered: 21\n");
    let o = sim(&["bench", "core", "--n", "3", "--k", "0"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "calls answered: 0\n".to_string()), "{}", stderr(&o));
}

/// `arbor-sim sweep ... | head -1`: once stdout is gone the sweep writes nothing more to it but
/// carries on — the JUnit file is still written and the status still says the runs passed (it
/// used to stop at once with status 3 and no file, which `set -o pipefail` turns into a red CI).
#[test]
fn a_closed_stdout_still_gets_the_junit_file_and_the_real_status() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let path = temp("closed-stdout.xml");
    let mut child = Command::new(BIN)
        .args(["sweep", "--scenario", "s1-one-child", "--seeds", "3000", "--format", "json"])
        .args(["--junit", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The reader is gone (dropped above): every later write gets EPIPE.
    let status = child.wait().unwrap();
    let xml = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert!(first.starts_with('{'), "{first}");
    assert_eq!(status.code(), Some(0));
    let doc = roxmltree::Document::parse(&xml).expect("the JUnit file was written");
    assert_eq!(doc.root_element().attribute("tests"), Some("3000"));
}

/// A scenario named twice is swept once: the JUnit counts match the test cases.
#[test]
fn a_scenario_named_twice_is_swept_once() {
    let path = temp("twice.xml");
    let o = sim(&["sweep", "--scenario", "s1-one-child", "--scenario", "s1-one-child", "--seeds", "3"]);
    assert!(stdout(&o).contains("3 of 3 runs passed"), "{}", stdout(&o));
    let o = sim(&["sweep", "--scenario", "s1-one-child", "--scenario", "s1-one-child", "--seeds", "3"]
        .into_iter()
        .chain(["--junit", path.to_str().unwrap()])
        .collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0));
    let xml = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases = doc.descendants().filter(|n| n.has_tag_name("testcase")).count();
    assert_eq!((doc.root_element().attribute("tests"), cases), (Some("3"), 3));
}

/// Seeds past the last one are a usage error, not a silent "0 of 0 runs passed".
#[test]
fn seeds_past_the_last_one_are_a_usage_error() {
    let o = sim(&["sweep", "--scenario", "s1-one-child", "--start", "18446744073709551615", "--seeds", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("past the last seed"), "{}", stderr(&o));
}

/// A plan whose reads take nothing (`read=0`) could never end: it is an invalid plan (status 2),
/// not a run that hangs.
#[test]
fn a_plan_that_reads_nothing_is_refused() {
    let plan = printed_plan(&stdout(&sim(&["run", "s1-one-child", "--seed", "1"])));
    let read = plan.split_whitespace().find(|w| w.starts_with("read=")).expect("a read= setting").to_string();
    let file = temp("read0.plan");
    std::fs::write(&file, plan.replace(&read, "read=0")).unwrap();
    let o = sim(&["replay", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("net read=0 is out of range"), "{}", stderr(&o));
}

/// A plan may call a function named `forged` like any other: the `auth-boundary` checker knows
/// a forged call by a name no plan can give (it flagged this correct run).
#[test]
fn a_call_to_a_function_named_forged_is_not_a_forgery() {
    let plan = printed_plan(&stdout(&sim(&["run", "s1-one-child", "--seed", "1"])));
    let plan = plan.replace("\nshutdown ", "\naction 1 call 0 1 forged 1\nshutdown ");
    assert!(plan.contains("call 0 1 forged"), "{plan}");
    let file = temp("forged-name.plan");
    std::fs::write(&file, &plan).unwrap();
    let o = sim(&["replay", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// A root stopped (SIGSTOP) when its shutdown is due shuts down once it is thawed, as every
/// other event that reaches a stopped process waits for SIGCONT: the shutdown was dropped, and
/// the tree never left.
#[test]
fn a_root_stopped_when_its_shutdown_is_due_shuts_down_once_thawed() {
    let plan = "arbor-sim plan v1\nname s1-one-child\nseed 1\n\
        net latency=1625000 capacity=262144 read=512 call=14927000 grace=5000000000 high-water=8388608\n\
        tree 0\naction 26000000 call 0 1 work 1\nfault 59000000 freeze 0\nfault 20000000000 thaw 0\n\
        shutdown 60000000\nmutation none\n";
    let file = temp("frozen-root.plan");
    let repro = temp("frozen-root-repro.plan");
    std::fs::write(&file, plan).unwrap();
    let o = sim(&["replay", file.to_str().unwrap(), "--repro", repro.to_str().unwrap()]);
    let _ = (std::fs::remove_file(&file), std::fs::remove_file(&repro));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// A plan's own promises are told apart when it is shrunk: this one breaks `root-exit-within`
/// (a stalled link holds the root 2 s), and its shrunk repro still does. Judged by checker
/// alone, the shrinker dropped the stall and kept a plan that broke only the other promise
/// (`call-errors`, once its call was dropped): a different failure.
#[test]
fn a_shrunk_repro_breaks_the_same_promise() {
    let plan = "arbor-sim plan v1\nname drift\nseed 0\ntree 0\naction 30000000 call 0 1 hang 1\n\
        fault 40000000 stall 1 2000000000\nshutdown 60000000\nexpect root-exit-within 100000000\n\
        expect call-errors disconnected 1\n";
    let file = temp("drift.plan");
    let repro = temp("drift-repro.plan");
    std::fs::write(&file, plan).unwrap();
    let o = sim(&["replay", file.to_str().unwrap(), "--repro", repro.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("root-exit-within:"), "{}", stdout(&o));
    let again =
        sim(&["replay", repro.to_str().unwrap(), "--repro", temp("drift-repro-2.plan").to_str().unwrap()]);
    let _ = (
        std::fs::remove_file(&file),
        std::fs::remove_file(&repro),
        std::fs::remove_file(temp("drift-repro-2.plan")),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).contains("root-exit-within:"), "{}", stdout(&again));
}

/// `replay repro-NAME-SEED.plan` with no `--repro` does not overwrite the file it replays (its
/// default repro name is that same file): the shrunk plan goes beside it, as `.shrunk.plan`.
#[test]
fn replaying_a_repro_file_leaves_it_as_it_is() {
    let plan = printed_plan(&stdout(&sim(&["run", "s2-grandchild", "--seed", "1"])))
        .replace("mutation none", "mutation shutdown-before-channel-close");
    let dir = temp("replay-in-place");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("repro-s2-grandchild-1.plan");
    std::fs::write(&file, &plan).unwrap();
    let o =
        Command::new(BIN).current_dir(&dir).args(["replay", "repro-s2-grandchild-1.plan"]).output().unwrap();
    let kept = std::fs::read_to_string(&file).unwrap();
    let shrunk = std::fs::read_to_string(dir.join("repro-s2-grandchild-1.shrunk.plan"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(kept, plan, "the replayed file is as it was");
    assert!(shrunk.is_ok_and(|s| s.starts_with("arbor-sim plan v1")));
}
