#!/usr/bin/env bash
# Runs arbor's coverage-guided fuzzers (docs/fuzzing.md).
#
#   fuzz/run.sh TARGET SECONDS    fuzz one target for SECONDS; exits non-zero on a crash
#   fuzz/run.sh all SECONDS       every target in turn, SECONDS each
#   fuzz/run.sh minimise TARGET   merge what the runs found into the checked-in corpus, minimised
#   fuzz/run.sh list              the targets
#
# libFuzzer (through the libfuzzer-sys crate) on the stable toolchain: coverage comes from
# rustc's own SanitizerCoverage pass, switched on with stable -C flags, so no nightly, no
# RUSTC_BOOTSTRAP and no cargo-fuzz are needed. Needs a C++ compiler for libFuzzer itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

targets="decoder router node bodies lines plan"
work="$root/target/fuzz"
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$work/$host/release"

usage() { sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# Instrumented for libFuzzer; --target keeps build scripts and proc-macros uninstrumented
# (they link without libFuzzer's runtime). Debug assertions and overflow checks stay on: the
# fuzzers should see every debug_assert! the core states.
build() {
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    CARGO_TARGET_DIR="$work" \
        cargo build --quiet --release --locked --manifest-path fuzz/libfuzzer/Cargo.toml --target "$host"
}

known() { case " $targets " in *" $1 "*) ;; *) echo "unknown target '$1' (targets: $targets)"; exit 2;; esac; }

# The seeds, written afresh each run (they follow the code that builds them).
seeds() {
    rm -rf "$work/seeds/$1"
    cargo run --quiet --release -p arbor-fuzz --bin arbor-fuzz-seeds -- "$work/seeds" "$1"
}

fuzz_one() {
    local t="$1" secs="$2"
    known "$t"
    seeds "$t"
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t" "$work/logs" "fuzz/corpus/$t"
    echo "== fuzz $t for ${secs}s (log: target/fuzz/logs/$t.log)"
    # New inputs go to the first folder (not checked in); the kept corpus and the seeds are read.
    if ! "$bin_dir/$t" "$work/corpus/$t" "fuzz/corpus/$t" "$work/seeds/$t" \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t/" >"$work/logs/$t.log" 2>&1; then
        tail -n 60 "$work/logs/$t.log"
        echo "!! $t crashed; the input is in target/fuzz/artifacts/$t/."
        echo "!! Copy it to fuzz/regressions/$t/, fix the crate at fault, and cargo test -p arbor-fuzz."
        return 1
    fi
    grep -E '^#[0-9]+[[:space:]]+INITED' "$work/logs/$t.log" | tail -n 1 || true
    grep -E '^#[0-9]+[[:space:]]+DONE' "$work/logs/$t.log" | tail -n 1 || true
    grep -E 'stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$work/logs/$t.log" || true
}

minimise() {
    local t="$1"
    known "$t"
    seeds "$t"
    local merged="$work/merged/$t"
    rm -rf "$merged" && mkdir -p "$merged"
    # Set-cover merge: the fewest inputs that keep every feature the corpora reach.
    "$bin_dir/$t" -set_cover_merge=1 -max_len=4096 "$merged" "fuzz/corpus/$t" "$work/corpus/$t" "$work/seeds/$t" \
        >"$work/logs/$t.merge.log" 2>&1
    rm -rf "fuzz/corpus/$t" && mkdir -p "fuzz/corpus/$t"
    cp "$merged"/* "fuzz/corpus/$t/"
    echo "fuzz/corpus/$t: $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
}

[ $# -ge 1 ] || usage
case "$1" in
    list) echo "$targets" ;;
    minimise) [ $# -eq 2 ] || usage; build; minimise "$2" ;;
    all) [ $# -eq 2 ] || usage; build; for t in $targets; do fuzz_one "$t" "$2"; done ;;
    *) [ $# -eq 2 ] || usage; build; fuzz_one "$1" "$2" ;;
esac
