//! `cargo test` support, as a user's crate would use it: `enable_test_support!` at the crate
//! root, and tests — run in parallel by libtest — that each start a root and spawn contexts,
//! which start as this test binary running the hidden test (docs/driver.md "Contexts in tests").

use std::time::Duration;

use arbor::{Functions, SpawnOptions};

fn functions() -> Functions {
    Functions::new()
        .register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b))
        .register("pid", |(): ()| Ok::<_, String>(std::process::id()))
        .register("args", |(): ()| {
            let args = arbor::args().into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
            Ok::<Vec<String>, String>(args)
        })
        .register("env", |name: String| Ok::<_, String>(std::env::var(name).ok()))
        .register("cwd", |(): ()| {
            std::env::current_dir().map(|d| d.display().to_string()).map_err(|e| e.to_string())
        })
        .register("say", |text: String| {
            println!("{text}");
            Ok::<_, String>(())
        })
        .register("grandchild_pid", |(): ()| {
            // A child under the harness spawns its own children under it too.
            let ctx = arbor::blocking::context().ok_or("no context")?;
            let grandchild = ctx.spawn(SpawnOptions::named("grandchild")).map_err(|e| e.to_string())?;
            ctx.call::<_, u32>(grandchild.id, "pid", &()).map_err(|e| e.to_string())
        })
}

arbor::enable_test_support!(functions);

fn root(runtime: &str) -> arbor::blocking::Root {
    let launcher = arbor::test_support::init(functions()).grace(Duration::from_secs(5));
    let launcher = match runtime {
        #[cfg(feature = "tokio")]
        "tokio" => launcher.runtime(arbor::runtime::Tokio::new()),
        _ => launcher.runtime(arbor::runtime::Smol::new()),
    };
    launcher.start_blocking().expect("a root (waiting for another test's, if one runs)")
}

/// Each of these tests starts a root of its own while the others run: they take turns.
fn spawns_calls_and_shuts_down(runtime: &str) {
    let root = root(runtime);
    let child = root.context().spawn(SpawnOptions::named("adder")).expect("a child of the test binary");
    assert_eq!(root.context().call::<_, i32>(child.id, "add", &(2, 3)), Ok(5));
    let pid: u32 = root.context().call(child.id, "pid", &()).expect("pid");
    assert_eq!(pid, child.pid.0);
    assert_ne!(pid, std::process::id());
    let grandchild: u32 = root.context().call(child.id, "grandchild_pid", &()).expect("a grandchild");
    assert!(grandchild != pid && grandchild != std::process::id());
    let report = root.shutdown();
    assert_eq!(report.reaped.len(), 1);
}

#[test]
fn a_test_spawns_contexts_on_smol() {
    spawns_calls_and_shuts_down("smol");
}

#[cfg(feature = "tokio")]
#[test]
fn a_test_spawns_contexts_on_tokio() {
    spawns_calls_and_shuts_down("tokio");
}

#[test]
fn another_test_spawns_contexts_at_the_same_time() {
    spawns_calls_and_shuts_down("smol");
}

#[test]
fn spawn_options_reach_a_child_under_the_harness() {
    let root = root("smol");
    let dir = std::env::temp_dir().canonicalize().expect("a temp dir");
    let options = SpawnOptions::named("options")
        .args(["first", "--second", "with space"])
        .env("ARBOR_TEST_SUPPORT_VAR", "set")
        .current_dir(&dir);
    let child = root.context().spawn(options).expect("spawn");
    let args: Vec<String> = root.context().call(child.id, "args", &()).expect("args");
    assert_eq!(args, ["first", "--second", "with space"]);
    let var: Option<String> = root.context().call(child.id, "env", "ARBOR_TEST_SUPPORT_VAR").expect("env");
    assert_eq!(var.as_deref(), Some("set"));
    let cwd: String = root.context().call(child.id, "cwd", &()).expect("cwd");
    assert_eq!(cwd, dir.display().to_string());
    root.shutdown();
}

/// A thread that starts a second root while its first still runs would wait for itself: it is
/// told `AlreadyStarted` instead.
#[test]
fn a_second_root_on_the_same_thread_is_refused_not_waited_for() {
    let first = root("smol");
    let second = arbor::test_support::init(functions()).start_blocking();
    assert!(matches!(second, Err(arbor::StartError::AlreadyStarted)), "{second:?}");
    first.shutdown();
}

/// A root printing a child's line; run on its own by the test below.
#[test]
fn a_child_says_something() {
    let root = root("smol");
    let child = root.context().spawn(SpawnOptions::named("talker")).expect("spawn");
    root.context().call::<_, ()>(child.id, "say", "a line from the talker").expect("say");
    root.shutdown();
}

/// The tree's lines go into libtest's capture of the test that started the root: hidden for a
/// passing test, shown with `--nocapture`.
#[test]
fn the_tree_output_is_captured_with_the_test_output() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", "a_child_says_something", "--test-threads=1"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the test binary runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let line = "[talker] a line from the talker";
    let captured = run(&[]);
    assert!(
        captured.contains("test a_child_says_something ... ok") && !captured.contains(line),
        "{captured}"
    );
    let shown = run(&["--nocapture"]);
    assert!(shown.contains(line), "{shown}");
}
