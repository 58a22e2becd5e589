//! Real-process scenarios (docs/scenarios.md, rows marked R), run against the `arbor-fixture`
//! binary on every runtime this build has (smol always; tokio with the `tokio` feature, which
//! `cargo test --workspace` turns on): each test starts a fresh root process running one
//! scenario, reads the `key=value` lines it prints, and checks that no process carrying the
//! test's marker is left anywhere. Each test has its own processes and marker, so they run in
//! parallel safely.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any scenario may take before the test fails instead of hanging.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);

/// One `#[test]` per scenario and runtime, so a failure names both.
macro_rules! on_every_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod smol {
            $(#[test] fn $scenario() { super::$scenario("smol") })*
        }
        #[cfg(feature = "tokio")]
        mod tokio {
            $(#[test] fn $scenario() { super::$scenario("tokio") })*
        }
    };
}

on_every_runtime!(
    s1_a_child_with_nothing_hung_is_gone_long_before_the_grace_period,
    s2_a_three_level_chain_routes_calls_and_shuts_down_level_by_level,
    s3_a_hung_call_resolves_disconnected_and_its_child_still_goes,
    s4_a_child_ignoring_sigterm_with_a_hung_call_is_gone_within_milliseconds,
    s5_ten_thousand_lines_arrive_in_order,
    s6_a_final_line_without_newline_arrives,
    s7_a_daemon_holding_stdout_does_not_delay_shutdown,
    s21_fifty_children_go_together_not_one_after_another,
    bad_input_is_a_typed_error_and_the_child_keeps_serving,
    s17_a_sigkilled_root_leaves_no_descendant_alive,
    pipelined_calls_are_all_answered_and_an_unwaited_one_still_runs,
    s26_a_child_that_closed_fd_1_keeps_its_grandchild_stream_and_shuts_down_at_once,
    s27_a_child_whose_parent_is_gone_exits_with_the_start_failure_code,
    s29_a_process_user_code_left_in_the_group_does_not_outlive_the_tree,
    the_async_api_spawns_pipelines_and_runs_async_functions_from_any_task,
    a_spawn_not_carried_out_when_shutdown_begins_fails_shutting_down,
    s28_a_call_to_a_sibling_is_answered_with_the_refusal_within_milliseconds,
    s30_mismatched_types_are_a_type_mismatch_naming_both_sides,
    s31_deadlines_resolve_once_at_the_deadline_and_the_callee_is_told,
    s32_one_child_and_its_subtree_shut_down_while_its_sibling_serves,
    children_start_after_the_running_binary_was_deleted,
    a_panicking_output_or_departure_handler_does_not_take_the_tree_down,
);

static NEXT_MARKER: AtomicU32 = AtomicU32::new(0);

/// An environment variable every process of one test inherits, to find leftovers by.
fn marker() -> String {
    format!("arbor-test-{}-{}", std::process::id(), NEXT_MARKER.fetch_add(1, Ordering::SeqCst))
}

fn fixture(scenario: &str, marker: &str, runtime: &str) -> Child {
    fixture_at(env!("CARGO_BIN_EXE_arbor-fixture").as_ref(), scenario, marker, runtime)
}

/// [`fixture`] from a copy of the binary at `program`.
fn fixture_at(program: &std::path::Path, scenario: &str, marker: &str, runtime: &str) -> Child {
    // A copy just written may be briefly held open for writing by a process another test
    // forked meanwhile (its fds are closed at its exec): ETXTBSY until then.
    for _ in 0..100 {
        match command(program, scenario, marker, runtime).spawn() {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error()) => {
                thread::sleep(Duration::from_millis(10))
            }
            started => return started.expect("the fixture starts"),
        }
    }
    panic!("{} stayed busy", program.display())
}

fn command(program: &std::path::Path, scenario: &str, marker: &str, runtime: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg(scenario)
        .env("ARBOR_TEST_MARKER", marker)
        .env("ARBOR_RUNTIME", runtime)
        // Whatever the caller's environment: a panic's message then carries a backtrace of a few
        // KiB, written in many small pieces — which once filled the capture socket of the very
        // thread that drains it (an async function's panic on the IO thread; async_api).
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the fixture running `scenario` to exit, killing it (and failing the test) if it
/// has not within [`SCENARIO_TIMEOUT`].
fn wait_bounded(child: &mut Child, scenario: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the fixture") {
            return status;
        }
        if started.elapsed() > SCENARIO_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scenario {scenario} did not finish within {SCENARIO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a scenario to completion on `runtime` and returns what it printed.
fn run(scenario: &str, runtime: &str) -> BTreeMap<String, String> {
    run_at(env!("CARGO_BIN_EXE_arbor-fixture").as_ref(), scenario, runtime, &marker())
}

/// [`run`] from the binary at `program`.
fn run_at(
    program: &std::path::Path,
    scenario: &str,
    runtime: &str,
    marker: &str,
) -> BTreeMap<String, String> {
    let marker = marker.to_string();
    let mut child = fixture_at(program, scenario, &marker, runtime);
    let status = wait_bounded(&mut child, scenario);
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_string(&mut stderr));
    checked_report(scenario, &marker, status, &stdout, &stderr, &stdout)
}

/// How every scenario's run is judged: the fixture exited 0 and left no process behind, and its
/// report — the `key=value` lines of `report` (a child's own lines, `[name] ...`, are not part
/// of it) — ends with the root's own checks of its shutdown: the whole tree gone, no zombie, no
/// leaked fd. Returns the report.
fn checked_report(
    scenario: &str,
    marker: &str,
    status: std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
    report: &str,
) -> BTreeMap<String, String> {
    assert!(status.success(), "scenario {scenario} failed: {status}\n{stdout}\n{stderr}");
    assert_eq!(leftovers(marker), Vec::<u32>::new(), "processes of {scenario} left running");
    let out: BTreeMap<String, String> = report
        .lines()
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(out.get("all_gone").map(String::as_str), Some("true"), "{scenario}: {out:?}");
    assert_eq!(out.get("zombies").map(String::as_str), Some("0"), "{scenario}: {out:?}");
    assert_eq!(out.get("fds_leaked").map(String::as_str), Some("0"), "{scenario}: {out:?}");
    out
}

fn ms(out: &BTreeMap<String, String>, key: &str) -> f64 {
    out.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

fn get<'a>(out: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    out.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

/// Live (non-zombie) processes whose environment holds `marker`.
fn leftovers(marker: &str) -> Vec<u32> {
    let needle = format!("ARBOR_TEST_MARKER={marker}\0");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&environ).contains(&needle) && alive(*pid)
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn s1_a_child_with_nothing_hung_is_gone_long_before_the_grace_period(runtime: &str) {
    let out = run("s1", runtime);
    assert_eq!(get(&out, "sum"), "5");
    assert_eq!(get(&out, "reaped"), "1");
    // G is 5 s; with nothing hung the tree must not wait for it.
    assert!(ms(&out, "shutdown_ms") < 1000.0, "{out:?}");
}

fn s2_a_three_level_chain_routes_calls_and_shuts_down_level_by_level(runtime: &str) {
    let out = run("s2", runtime);
    assert_eq!(get(&out, "depth"), "3");
    assert_eq!(get(&out, "deepest_pid_matches"), "true");
    assert!(ms(&out, "shutdown_ms") < 1000.0, "{out:?}");
}

fn s3_a_hung_call_resolves_disconnected_and_its_child_still_goes(runtime: &str) {
    let out = run("s3", runtime);
    assert_eq!(get(&out, "hang_result"), "Disconnected");
    assert!(ms(&out, "shutdown_ms") < 1000.0, "{out:?}");
}

fn s4_a_child_ignoring_sigterm_with_a_hung_call_is_gone_within_milliseconds(runtime: &str) {
    let out = run("s4", runtime);
    assert_eq!(get(&out, "ignoring"), "Ok");
    assert_eq!(get(&out, "hang_result"), "Disconnected");
    // mitogen needs ~1 s of parent escalation; arbor's child ends itself. Generous bound.
    assert!(ms(&out, "gone_ms") < 500.0, "{out:?}");
}

fn s5_ten_thousand_lines_arrive_in_order(runtime: &str) {
    let out = run("s5", runtime);
    assert_eq!(get(&out, "call"), "Ok");
    assert_eq!(get(&out, "stdout_lines"), "10000");
    assert_eq!(get(&out, "lines_in_order"), "true");
}

fn s6_a_final_line_without_newline_arrives(runtime: &str) {
    let out = run("s6", runtime);
    assert_eq!(get(&out, "last_line"), "no newline at the end");
}

fn s7_a_daemon_holding_stdout_does_not_delay_shutdown(runtime: &str) {
    let out = run("s7", runtime);
    // The daemon (detached: a process group of its own) was still running when the child had
    // already gone: nothing waited for it, and nothing killed it.
    assert_eq!(get(&out, "daemon_alive"), "true");
    assert!(ms(&out, "child_gone_ms") < 1000.0, "{out:?}");
}

fn s21_fifty_children_go_together_not_one_after_another(runtime: &str) {
    let out = run("s21", runtime);
    assert_eq!(get(&out, "answers"), "50");
    assert_eq!(get(&out, "reaped"), "50");
    assert!(ms(&out, "shutdown_ms") < 2000.0, "{out:?}");
}

fn bad_input_is_a_typed_error_and_the_child_keeps_serving(runtime: &str) {
    let out = run("bad_input", runtime);
    assert_eq!(get(&out, "unknown"), "UnknownFunction");
    assert_eq!(get(&out, "panic"), "Failed");
    assert_eq!(get(&out, "bad_args"), "TypeMismatch");
    assert_eq!(get(&out, "bad_result"), "TypeMismatch");
    assert_eq!(get(&out, "still_serving"), "Ok");
}

fn s17_a_sigkilled_root_leaves_no_descendant_alive(runtime: &str) {
    let marker = marker();
    let mut root = fixture("s17", &marker, runtime);
    let stdout = root.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pids) = line.strip_prefix("pids=") {
                let _ = tx.send(pids.to_string());
            }
        }
    });
    let Ok(pids) = rx.recv_timeout(SCENARIO_TIMEOUT) else {
        let _ = root.kill();
        let _ = root.wait();
        panic!("the s17 tree never came up");
    };
    let pids: Vec<u32> = pids.split(',').filter_map(|p| p.parse().ok()).collect();
    assert_eq!(pids.len(), 3, "three levels below the root: {pids:?}");
    assert!(pids.iter().all(|p| alive(*p)), "the tree is up");
    assert_eq!(leftovers(&marker).len(), 4, "root and three descendants carry the marker");

    root.kill().expect("SIGKILL the root");
    let _ = root.wait();
    let killed = Instant::now();
    while !leftovers(&marker).is_empty() && killed.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(2));
    }
    let took = killed.elapsed();
    assert_eq!(leftovers(&marker), Vec::<u32>::new(), "orphans after {took:?}");
    // Parent-death signals cascade level by level; a generous bound for a loaded machine.
    assert!(took < Duration::from_secs(2), "descendants took {took:?} to die");
    eprintln!("s17: every descendant gone {took:?} after the root was SIGKILLed");
}

/// S28: a call from one child to its sibling is refused by the sibling's router for lacking
/// authority, and answered at once with the refusal — never left pending until someone exits.
fn s28_a_call_to_a_sibling_is_answered_with_the_refusal_within_milliseconds(runtime: &str) {
    let out = run("s28", runtime);
    assert_eq!(get(&out, "sibling_call"), "Undeliverable", "{out:?}");
    assert!(get(&out, "sibling_message").contains("CALL_FUNCTION without parent authority"), "{out:?}");
    assert!(ms(&out, "sibling_ms") < 500.0, "{out:?}");
    assert_eq!(get(&out, "b_still_serving"), "Ok");
}

/// S30: `(2u8, 3u8)` sent to a function of `(i32, i32)` is a `TypeMismatch` naming both sides,
/// never a value; the typed handle gives the answer.
fn s30_mismatched_types_are_a_type_mismatch_naming_both_sides(runtime: &str) {
    let out = run("s30", runtime);
    assert_eq!(get(&out, "wrong_types"), "TypeMismatch", "{out:?}");
    let message = get(&out, "wrong_types_message");
    assert!(message.contains("called as (u8, u8) -> i32"), "{message}");
    assert!(message.contains("declares \"add\" as (i32, i32) -> i32"), "{message}");
    assert_eq!(get(&out, "wrong_result"), "TypeMismatch");
    assert_eq!(get(&out, "typed"), "5");
    assert_eq!(get(&out, "str_for_string"), "Ok");
}

/// S31: a call with a deadline queued behind a busy function times out at its deadline and
/// never starts; a running async function past its deadline, or whose future was dropped, is
/// dropped; a running blocking one runs on and is reported; the child serves on throughout.
fn s31_deadlines_resolve_once_at_the_deadline_and_the_callee_is_told(runtime: &str) {
    let out = run("s31", runtime);
    assert_eq!(get(&out, "queued"), "Timeout", "{out:?}");
    let at = ms(&out, "queued_ms");
    assert!((100.0..400.0).contains(&at), "timed out after {at} ms, not at its 100 ms deadline");
    assert_eq!(get(&out, "busy"), "Ok");
    assert_eq!(get(&out, "serving_after"), "Ok");
    assert_eq!(get(&out, "queued_never_ran"), "true", "{out:?}");
    assert_eq!(get(&out, "async"), "Timeout");
    assert!(ms(&out, "async_ms") < 300.0, "{out:?}");
    assert_eq!(get(&out, "blocking"), "Timeout");
    assert_eq!(get(&out, "blocking_reported"), "true", "{out:?}");
    assert_eq!(get(&out, "async_never_finished"), "true", "{out:?}");
    assert_eq!(get(&out, "dropped_never_finished"), "true", "{out:?}");
    assert_eq!(get(&out, "serving_at_end"), "Ok");
}

/// S32: one child with a child of its own is shut down on its own, gracefully and at once,
/// while its sibling keeps answering; another is killed with a call hung on it. The root hears
/// of every departure — the grandchildren's from their parents — and the shutdown report has
/// them all.
fn s32_one_child_and_its_subtree_shut_down_while_its_sibling_serves(runtime: &str) {
    let out = run("s32", runtime);
    assert_eq!(get(&out, "a_cause"), "Shutdown", "{out:?}");
    // A child context ends itself with SIGTERM once drained (docs/shutdown.md).
    assert_eq!(get(&out, "a_status"), "Signaled(15)", "{out:?}");
    assert_eq!(get(&out, "a_pid_matches"), "true");
    assert!(ms(&out, "a_ms") < 1000.0, "nothing hung, so no waiting for the grace period: {out:?}");
    assert_eq!(get(&out, "a_gone"), "true", "{out:?}");
    assert_eq!(get(&out, "b_served"), "true", "{out:?}");
    assert_ne!(get(&out, "call_to_a_after"), "Ok");
    assert!(get(&out, "again").contains("not a connected child"), "{out:?}");
    assert_eq!(get(&out, "a1_heard"), "1", "{out:?}");
    assert_eq!(get(&out, "a1_parent_is_a"), "true", "{out:?}");
    assert_eq!(get(&out, "c_cause"), "Killed", "{out:?}");
    assert!(get(&out, "second_kill").contains("not a connected child"), "{out:?}");
    assert_eq!(get(&out, "c_status"), "true", "{out:?}");
    assert_eq!(get(&out, "c_hung_call"), "Disconnected", "{out:?}");
    // a, its child, c, then at the tree's shutdown b and its child: five departures, each of
    // the two grandchildren reported by its own parent.
    assert_eq!(get(&out, "departed"), "5", "{out:?}");
    let names: Vec<String> = get(&out, "departed_names").split(',').map(String::from).collect();
    for direct in ["a<0", "c<0", "b<0"] {
        assert!(names.iter().any(|n| n == direct), "{names:?}");
    }
    let grandchildren: Vec<&String> = names.iter().filter(|n| n.starts_with("depth-1<")).collect();
    assert_eq!(grandchildren.len(), 2, "{names:?}");
    assert!(grandchildren.iter().all(|n| !n.ends_with("<0")), "reported by their own parents: {names:?}");
    assert_eq!(get(&out, "all_gone"), "true", "{out:?}");
}

/// A child is the running binary started again. Deleted from disk while the root runs (a
/// rebuild, a package upgrade), it still starts children — the same build, not whatever now
/// sits at the old path — and they serve calls and spawn their own.
fn children_start_after_the_running_binary_was_deleted(runtime: &str) {
    let marker = marker();
    let copy = std::env::temp_dir().join(format!("{marker}-fixture"));
    std::fs::copy(env!("CARGO_BIN_EXE_arbor-fixture"), &copy).expect("copy the fixture");
    let out = run_at(&copy, "deleted_exe", runtime, &marker);
    let _ = std::fs::remove_file(&copy);
    assert_eq!(get(&out, "deleted"), "true");
    assert_eq!(get(&out, "child_answered"), "true");
    assert_eq!(get(&out, "child_comm_is_ours"), "true", "ps and pkill see the program's name, not \"exe\"");
    assert_eq!(get(&out, "grandchild_answered"), "true");
}

/// The root's handlers run on its IO thread. One that panics (on_log on a line, on_departure on
/// a departure) is reported and the tree goes on: later lines arrive, calls are answered, spawns
/// start, and shutdown leaves nothing behind. Before, the IO thread died with the handler.
fn a_panicking_output_or_departure_handler_does_not_take_the_tree_down(runtime: &str) {
    let out = run("handler_panics", runtime);
    for key in ["printed", "printed_after", "answers_after", "line_after_arrived", "spawns_after"] {
        assert_eq!(get(&out, key), "true", "{key}: {out:?}");
    }
    assert_eq!(get(&out, "reaped"), "2");
}

/// A thousand calls in flight from one thread, and bursts from four threads at once, are each
/// answered exactly once with the right result; a call sent with `call_async` and never waited
/// for still reaches its callee (it is written by a service thread, not only by a waiter); and a
/// quick call's answer is not held back by a hung call queued behind it.
fn pipelined_calls_are_all_answered_and_an_unwaited_one_still_runs(runtime: &str) {
    let out = run("pipelined", runtime);
    assert_eq!(get(&out, "one_thread_ok"), "true", "{out:?}");
    assert_eq!(get(&out, "threads_ok"), "true", "{out:?}");
    assert_eq!(get(&out, "unwaited_ran"), "true", "{out:?}");
    // Its answer is written by the IO thread within microseconds; a second would mean it waited
    // for the hung call (which would be forever).
    assert_eq!(get(&out, "quick_behind_hang"), "Ok", "{out:?}");
    assert!(ms(&out, "quick_behind_hang_ms") < 1000.0, "{out:?}");
}

/// User code closed fd 1, then spawned a grandchild whose parent stream landed on fd 1.
/// Shutdown must not point that fd at /dev/null (it is no longer the capture socket): the
/// grandchild stays connected until its own shutdown, and the tree goes as fast as S1.
fn s26_a_child_that_closed_fd_1_keeps_its_grandchild_stream_and_shuts_down_at_once(runtime: &str) {
    let out = run("s26", runtime);
    assert_eq!(get(&out, "stream_on_fd_1"), "true", "the scenario put the stream on fd 1: {out:?}");
    assert_eq!(get(&out, "grandchild"), "Ok", "{out:?}");
    assert_eq!(get(&out, "stderr_arrived"), "true", "{out:?}");
    // The old driver waited out 3/4 of the 5 s grace here.
    assert!(ms(&out, "gone_ms") < 1000.0, "{out:?}");
}

/// A child started by a parent that is no longer its parent (it died before the child's
/// `init`): the child exits with the documented start-failure code — not a panic's 101 —
/// even with its stderr on a socket nobody reads (EPIPE).
fn s27_a_child_whose_parent_is_gone_exits_with_the_start_failure_code(runtime: &str) {
    let (parent_end, child_end) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
    let (dead_reader, stderr) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
    drop(dead_reader);
    let marker = marker();
    let status = Command::new(env!("CARGO_BIN_EXE_arbor-fixture"))
        .env("ARBOR_TEST_MARKER", &marker)
        .env("ARBOR_CONTEXT_ID", "7")
        .env("ARBOR_ANCESTORS", "0")
        // Not our pid: to the child, its parent is gone.
        .env("ARBOR_PARENT_PID", "1")
        .env("ARBOR_GRACE_MS", "1000")
        .env("ARBOR_CONTEXT_NAME", "orphan")
        .env("ARBOR_RUNTIME_NAME", runtime)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(child_end)))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(stderr.try_clone().expect("dup"))))
        .stderr(std::process::Stdio::from(std::os::fd::OwnedFd::from(stderr)))
        .status()
        .expect("the fixture runs");
    drop(parent_end);
    assert_eq!(status.code(), Some(arbor::bootstrap::START_FAILED), "{status}");
    assert_eq!(leftovers(&marker), Vec::<u32>::new());
}

/// A `sleep 3600` that user code started with `std::process::Command` (so in the child
/// context's process group) is ended with the context: SIGTERM when the context is reaped.
fn s29_a_process_user_code_left_in_the_group_does_not_outlive_the_tree(runtime: &str) {
    let out = run("s29", runtime);
    assert_eq!(get(&out, "sleeper_alive"), "true", "it ran while the tree did: {out:?}");
    // `run` checked `all_gone` (the sleeper included) when shutdown returned, and no leftovers.
    assert!(ms(&out, "shutdown_ms") < 1000.0, "{out:?}");
}

/// The async API awaited from a smol task and from a tokio task, whichever runtime the tree runs
/// on: a spawn, 100 pipelined calls answered in order, an async function (a task on the child's
/// tasks thread) and its panic answered `Failed`.
fn the_async_api_spawns_pipelines_and_runs_async_functions_from_any_task(runtime: &str) {
    let out = run("async_api", runtime);
    assert_eq!(get(&out, "smol_pipelined_ok"), "true", "{out:?}");
    assert_eq!(get(&out, "async_function"), "42", "{out:?}");
    assert_eq!(get(&out, "async_panic"), "Failed", "{out:?}");
    assert_eq!(get(&out, "tokio_task"), "42", "{out:?}");
}

/// A thread spawns children back to back while the root shuts the tree down: the first spawn
/// not carried out before shutdown began fails "shutting down" (none succeeds after), and every
/// child that was started is reaped with the tree — `run` checks none is left. The simulator
/// holds the sharper race, a grandchild's spawn still waiting for its ids, in a regression test.
fn a_spawn_not_carried_out_when_shutdown_begins_fails_shutting_down(runtime: &str) {
    let out = run("spawn_during_shutdown", runtime);
    let said = get(&out, "spawner_said");
    assert!(said.starts_with("spawn ") && said.ends_with("refused: the context is shutting down"), "{out:?}");
    assert_eq!(get(&out, "reaped"), get(&out, "spawned"), "every child started was reaped: {out:?}");
}

/// The tree's output at the root with the default sink, a child's panic as its caller sees it,
/// and spawn options (issue 12, points 5 and 6).
mod output_and_spawn {
    use super::*;

    on_every_runtime!(
        child_lines_reach_the_root_stream_they_were_printed_on_prefixed_with_the_context_name,
        a_closed_root_stdout_drops_the_tree_lines_without_a_panic_or_a_hang,
        a_stalled_root_stdout_holds_the_tree_back_only_until_the_stall_bound,
        a_non_blocking_root_stdout_gets_every_line,
        a_failing_root_stdout_is_reported_on_stderr,
        a_stalled_tracing_subscriber_holds_the_tree_back_only_until_the_stall_bound,
        a_panicking_call_reports_its_message_location_and_backtrace,
        without_rust_backtrace_a_panicking_call_reports_its_message_and_location,
        spawn_options_set_the_childs_arguments_environment_and_directory,
    );

    /// What the test does with the fixture's stdout.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Stdout {
        /// Read all of it.
        Read,
        /// Read one line, then close it (`| head -1`).
        CloseAfterOneLine,
        /// Never read it (a stalled pipe), until the fixture has exited.
        Stall,
        /// A pipe whose write end is non-blocking (O_NONBLOCK, as a tool sharing the stream may
        /// leave it), read all of it only after a pause, so the root's writer meets a full pipe.
        NonBlockingSlow,
        /// /dev/full: every write fails with ENOSPC.
        DevFull,
    }

    /// What a `print_*` scenario printed: its `key=value` report (from stdout, or from stderr
    /// when stdout is not read) and everything on each stream.
    struct Printed {
        report: BTreeMap<String, String>,
        stdout: String,
        stderr: String,
    }

    /// Runs a `print_*` scenario with the default output sink, reading its streams while it runs.
    fn run_printing(scenario: &str, runtime: &str, env: &[(&str, Option<&str>)], mode: Stdout) -> Printed {
        let marker = marker();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor-fixture"));
        cmd.arg(scenario)
            .env("ARBOR_TEST_MARKER", &marker)
            .env("ARBOR_RUNTIME", runtime)
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("ARBOR_FIXTURE_ECHO")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut slow_reader = None;
        if mode == Stdout::DevFull {
            cmd.stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full"));
        }
        if mode == Stdout::NonBlockingSlow {
            use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("a pipe");
            fcntl_setfl(&write, fcntl_getfl(&write).expect("flags") | OFlags::NONBLOCK).expect("O_NONBLOCK");
            cmd.stdout(Stdio::from(write));
            slow_reader = Some(std::fs::File::from(read));
        }
        for (name, value) in env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let mut child = cmd.spawn().expect("the fixture starts");
        drop(cmd); // our copy of a non-blocking pipe's write end: EOF once the fixture ends
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take().expect("piped stderr");
        let err_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (out_reader, held) = match mode {
            Stdout::Read => (
                Some(thread::spawn(move || {
                    let mut text = String::new();
                    let _ = stdout.expect("piped stdout").read_to_string(&mut text);
                    text
                })),
                None,
            ),
            Stdout::CloseAfterOneLine => (
                Some(thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout.expect("piped stdout")).read_line(&mut line);
                    line
                })),
                None,
            ),
            Stdout::Stall => (None, stdout),
            Stdout::NonBlockingSlow => {
                let mut pipe = slow_reader.expect("the non-blocking pipe's read end");
                let reader = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(300));
                    let mut text = String::new();
                    let _ = pipe.read_to_string(&mut text);
                    text
                });
                (Some(reader), None)
            }
            Stdout::DevFull => (None, None),
        };
        let status = super::wait_bounded(&mut child, scenario);
        drop(held);
        let stdout = out_reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let report_text = if mode == Stdout::Read { &stdout } else { &stderr };
        let report = super::checked_report(scenario, &marker, status, &stdout, &stderr, report_text);
        Printed { report, stdout, stderr }
    }

    /// The lines of `text` that start with `prefix`.
    fn with_prefix<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    /// Two children print 300 lines on each stream at once, and a grandchild three: each line is
    /// on the root's stream it was printed on, whole, as `[name] text`, in order per context; a
    /// child's `tracing` event is a line of its stderr.
    fn child_lines_reach_the_root_stream_they_were_printed_on_prefixed_with_the_context_name(runtime: &str) {
        let p = run_printing("print_default", runtime, &[], Stdout::Read);
        assert_eq!(get(&p.report, "a"), "Ok");
        assert_eq!(get(&p.report, "b"), "Ok");
        assert_eq!(get(&p.report, "grandchild"), "Ok");
        for (name, tag, n) in [("out-a", "a", 300), ("out-b", "b", 300), ("depth-1", "g", 3)] {
            let prefix = format!("[{name}] ");
            let expected_out: Vec<String> = (0..n).map(|i| format!("{prefix}{tag} out {i}")).collect();
            let expected_err: Vec<String> = (0..n).map(|i| format!("{prefix}{tag} err {i}")).collect();
            assert_eq!(with_prefix(&p.stdout, &prefix), expected_out, "{name}'s stdout lines");
            let err = with_prefix(&p.stderr, &prefix);
            let (events, prints): (Vec<&str>, Vec<&str>) =
                err.into_iter().partition(|l| l.contains(" INFO "));
            assert_eq!(prints, expected_err, "{name}'s stderr lines");
            assert_eq!(events, vec![format!("{prefix} INFO arbor_fixture: printed {n} lines")]);
        }
        // Nothing else reached the root's streams: the report on stdout, nothing on stderr.
        assert!(p.stdout.lines().all(|l| l.starts_with('[') || l.contains('=')), "{}", p.stdout);
        assert!(p.stderr.lines().all(|l| l.starts_with('[')), "{}", p.stderr);
    }

    /// `fixture print_epipe | head -1`: the root's writer gets EPIPE; the rest of the tree's
    /// lines are dropped, and the root neither panics nor hangs.
    fn a_closed_root_stdout_drops_the_tree_lines_without_a_panic_or_a_hang(runtime: &str) {
        let p = run_printing("print_epipe", runtime, &[], Stdout::CloseAfterOneLine);
        assert_eq!(p.stdout, "[many] line 0\n");
        assert_eq!(get(&p.report, "call"), "Ok");
        assert!(!p.stderr.contains("panicked"), "{}", p.stderr);
    }

    /// The root's stdout is a pipe someone made non-blocking, read only after a pause: when it is
    /// full the writer waits for room, as a blocking write would, and every line arrives (it
    /// counted `WouldBlock` as a broken stream and dropped all later lines, silently).
    fn a_non_blocking_root_stdout_gets_every_line(runtime: &str) {
        let p = run_printing("print_nonblocking", runtime, &[], Stdout::NonBlockingSlow);
        assert_eq!(get(&p.report, "call"), "Ok");
        let lines: Vec<&str> = with_prefix(&p.stdout, "[many] ");
        assert_eq!(lines.len(), 20_000, "{}", p.stderr);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("[many] line {i}")));
        assert!(!p.stderr.contains("[arbor]"), "{}", p.stderr);
    }

    /// The root's stdout fails with an error other than EPIPE (here ENOSPC, /dev/full): the tree's
    /// lines for it are dropped, and the root says so, once, on its stderr — not silently.
    fn a_failing_root_stdout_is_reported_on_stderr(runtime: &str) {
        let p = run_printing("print_full", runtime, &[], Stdout::DevFull);
        assert_eq!(get(&p.report, "call"), "Ok");
        let notes: Vec<&str> = with_prefix(&p.stderr, "[arbor] the root's stdout failed (");
        assert_eq!(notes.len(), 1, "{}", p.stderr);
        assert!(notes[0].ends_with("): dropping the tree's lines for it"), "{}", notes[0]);
    }

    /// The tree's lines are `tracing` events (`ChildOutput::Tracing`) for the program's own
    /// subscriber, which writes to a stdout nobody reads: the root's IO thread never waits for it
    /// (it once blocked in the subscriber's write and the shutdown never came), so the call
    /// returns and the tree shuts down, the events past the stall bound dropped.
    fn a_stalled_tracing_subscriber_holds_the_tree_back_only_until_the_stall_bound(runtime: &str) {
        let p = run_printing("tracing_stalled", runtime, &[], Stdout::Stall);
        assert_eq!(get(&p.report, "call"), "Ok");
        assert!(ms(&p.report, "shutdown_ms") < 5_000.0, "{:?}", p.report);
    }

    /// A child prints 8 MB while the root's stdout is a pipe nobody reads: the tree waits for
    /// room at most the stall bound, then drops the lines and says so on stderr; the call
    /// returns and the tree shuts down.
    fn a_stalled_root_stdout_holds_the_tree_back_only_until_the_stall_bound(runtime: &str) {
        let p = run_printing("print_stalled", runtime, &[], Stdout::Stall);
        assert_eq!(get(&p.report, "call"), "Ok");
        let note = "[arbor] the root's stdout has taken nothing for 1s: dropping the tree's lines for it";
        assert!(p.stderr.contains(note), "{}", p.stderr);
    }

    /// The `Failed` error of a panicking function — blocking (calls thread) and async (tasks
    /// thread) — says what, where and, with RUST_BACKTRACE=1, the backtrace; the panic is not
    /// printed a second time at the root.
    fn a_panicking_call_reports_its_message_location_and_backtrace(runtime: &str) {
        let p = run_printing("print_panic", runtime, &[], Stdout::Read);
        check_panics(&p, true);
    }

    fn without_rust_backtrace_a_panicking_call_reports_its_message_and_location(runtime: &str) {
        let p = run_printing("print_panic", runtime, &[("RUST_BACKTRACE", None)], Stdout::Read);
        check_panics(&p, false);
    }

    fn check_panics(p: &Printed, backtrace: bool) {
        for (key, function, message) in
            [("blocking", "panic", "asked to panic"), ("async", "panic_async", "an async function panicked")]
        {
            let first = get(&p.report, &format!("{key}_first_line"));
            let at = format!("{function:?} panicked at drivers/fixture/main.rs:");
            assert!(first.starts_with(&at) && first.ends_with(&format!(": {message}")), "{first}");
            assert_eq!(get(&p.report, &format!("{key}_location")), "true");
            assert_eq!(get(&p.report, &format!("{key}_backtrace")), backtrace.to_string(), "{key}");
            assert!(!p.stderr.contains(message), "printed at the root as well: {}", p.stderr);
        }
        assert_eq!(get(&p.report, "still_serving"), "Ok");
    }

    /// Arguments, a variable set (twice: the last wins), one removed and a working directory reach
    /// the child; its own child inherits the environment and directory but not the arguments; a
    /// reserved name, an invalid variable or argument, a context name no child could carry (a NUL
    /// byte, over 255 bytes) and a missing directory are typed refusals, before an id is taken.
    fn spawn_options_set_the_childs_arguments_environment_and_directory(runtime: &str) {
        let out = run_printing("spawn_options", runtime, &[("FIXTURE_INHERITED", Some("yes"))], Stdout::Read)
            .report;
        assert_eq!(get(&out, "root_has_inherited"), "true");
        assert_eq!(get(&out, "child_args"), "one|two words|--flag");
        assert_eq!(get(&out, "child_arbor_args"), "one|two words|--flag");
        assert_eq!(get(&out, "child_set"), "set");
        assert_eq!(get(&out, "child_inherited"), "false");
        assert_eq!(get(&out, "child_cwd_is_dir"), "true");
        assert_eq!(get(&out, "grandchild_args"), "0");
        assert_eq!(get(&out, "grandchild_set"), "set");
        assert_eq!(get(&out, "grandchild_inherited"), "false");
        assert_eq!(get(&out, "grandchild_cwd_is_dir"), "true");
        assert_eq!(get(&out, "reserved_set"), "ReservedEnv");
        assert_eq!(get(&out, "reserved_removed"), "ReservedEnv");
        assert_eq!(get(&out, "bad_name"), "InvalidEnv");
        assert_eq!(get(&out, "bad_arg"), "InvalidArg");
        assert_eq!(get(&out, "nul_context_name"), "InvalidName");
        assert_eq!(get(&out, "long_context_name"), "InvalidName");
        assert_eq!(get(&out, "longest_context_name"), "true");
        assert_eq!(get(&out, "bad_dir"), "CurrentDir");
    }
}
