//! Spawning contexts from `cargo test` (docs/driver.md "Contexts in tests").
//!
//! A test binary's `main` is libtest's, so nothing can call [`crate::init`] first thing in it.
//! [`enable_test_support!`](crate::enable_test_support) adds a hidden test,
//! `__arbor_test_child`, that does: a child context is started as the test binary running
//! just that test (`__arbor_test_child --exact --nocapture --test-threads=1 -q`, then `--` and
//! the [`crate::SpawnOptions::arg`]s), and its `init` takes the process over there. In an
//! ordinary test run the hidden test does nothing and passes. Use the macro once, at the crate
//! root of the test target (the hidden test's name must be exactly `__arbor_test_child`; the
//! test fails with a message saying so otherwise), and start roots with [`init`]:
//!
//! ```no_run
//! // tests/workers.rs
//! fn functions() -> arbor::Functions {
//!     arbor::Functions::new().register("add", |(a, b): (i32, i32)| Ok::<_, String>(a + b))
//! }
//!
//! arbor::enable_test_support!(functions);
//!
//! #[test]
//! fn adds_in_a_child() {
//!     let root = arbor::test_support::init(functions()).start_blocking().unwrap();
//!     let child = root.context().spawn(arbor::SpawnOptions::named("adder")).unwrap();
//!     assert_eq!(root.context().call::<_, i32>(child.id, "add", &(2, 3)), Ok(5));
//!     root.shutdown();
//! }
//! ```
//!
//! A root in a test must come from [`init`]: one from [`crate::init`] would start its children
//! as the whole test binary, running every test.
//!
//! What [`init`] changes from [`crate::init`]:
//! - **Tests run in parallel, roots one at a time.** A process runs one root at a time (its
//!   `arbor::context()`, signal handling and children are per process), so a root started while
//!   another test's root runs *waits* for that one to shut down instead of failing with
//!   [`crate::StartError::AlreadyStarted`]. Every test gets a fresh tree; tests that spawn
//!   contexts take turns, and the others run beside them. A thread that starts a second root
//!   while its own first one still runs gets `AlreadyStarted` (waiting would never end).
//! - **Output is captured like the test's own**: the tree's lines go through `print!` and
//!   `eprint!`, so libtest shows them for a failing test (or with `--nocapture`) only.
//! - **No signal handlers**: Ctrl-C ends the test binary as usual; every context dies with it
//!   by its parent-death signal.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::registry::Functions;
use crate::root::Launcher;

/// The hidden test [`enable_test_support!`](crate::enable_test_support) adds.
pub const CHILD_TEST: &str = "__arbor_test_child";

/// libtest's arguments for a child: just the hidden test, output not captured (the child's
/// output goes to arbor's capture), one thread, and no `test name ...` line left half-written
/// in std's stdout buffer (`-q`).
const HARNESS_ARGS: [&str; 5] = [CHILD_TEST, "--exact", "--nocapture", "--test-threads=1", "-q"];

/// Set once a root or child of this process runs under the test harness.
static HARNESS: OnceLock<()> = OnceLock::new();
/// Set in a child started under the harness.
static CHILD_UNDER_HARNESS: AtomicBool = AtomicBool::new(false);

/// Adds the hidden test that child contexts of this test binary run; `$functions` is a function
/// (or closure) returning the [`Functions`](crate::Functions) every context of the tests offers.
/// Invoke once, at the crate root of the test target. See [`crate::test_support`].
#[macro_export]
macro_rules! enable_test_support {
    ($functions:expr) => {
        #[test]
        #[doc(hidden)]
        fn __arbor_test_child() {
            $crate::test_support::run_child(::core::module_path!(), $functions);
        }
    };
}

/// The body of the hidden test: in a process spawned as a child context, [`crate::init`] takes
/// it over (it never returns); anywhere else, nothing. Used by
/// [`enable_test_support!`](crate::enable_test_support).
///
/// # Panics
///
/// If the macro was not invoked at the crate root (`module_path` has a `::`), so that its test
/// is not named [`CHILD_TEST`] and no child could start: the hidden test fails saying so.
#[doc(hidden)]
pub fn run_child(module_path: &str, functions: impl FnOnce() -> Functions) {
    assert!(
        !module_path.contains("::"),
        "arbor::enable_test_support! must be invoked at the crate root of the test target, \
         not in module {module_path}: child contexts run the test named {CHILD_TEST} exactly"
    );
    drop(crate::init(functions()));
}

/// [`crate::init`] for a test: a [`Launcher`] whose children start as this test binary running
/// the hidden test, which waits for another test's root instead of failing, captures the tree's
/// output with the test's and installs no signal handlers (see the module docs).
pub fn init(functions: Functions) -> Launcher {
    HARNESS.get_or_init(|| ());
    crate::init(functions).in_test()
}

/// How a child is started under the harness, if this process runs under it: the arguments
/// before the user's.
pub(crate) fn harness_args() -> Option<[&'static str; 5]> {
    HARNESS.get().map(|()| HARNESS_ARGS)
}

/// In a child: its parent ran under the harness (the `ARBOR_TEST_HARNESS` variable), so this
/// child runs under it too, and spawns its own children the same way.
pub(crate) fn adopt() {
    HARNESS.get_or_init(|| ());
    CHILD_UNDER_HARNESS.store(true, Ordering::SeqCst);
}

/// The arguments this context was given: in a child, those of its
/// [`crate::SpawnOptions::arg`]s — under the test harness too, where `std::env::args()` starts
/// with the harness's own; in the root, the program's (`std::env::args_os()` without the
/// executable).
pub fn args() -> Vec<OsString> {
    let args = std::env::args_os().skip(1);
    if CHILD_UNDER_HARNESS.load(Ordering::SeqCst) {
        return args.skip_while(|a| a.as_os_str() != "--").skip(1).collect();
    }
    args.collect()
}
