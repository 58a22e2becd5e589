#!/usr/bin/env bash
# arbor-sim beside turmoil and madsim on the sim-anchors workloads (bench/sim-anchors/README.md),
# one thread each, and their instruction counts (docs/benchmarks.md, "The simulator").
#
#   bench/sim.sh                 # wall-clock table: REPS interleaved rounds, median/min/max
#   bench/sim.sh callgrind       # instructions (valgrind --tool=callgrind) of W1 and of W2 over
#                                # CG_SEEDS seeds, for every simulator: noise-free
#
# Knobs: REPS (5), SEEDS (20000) and SWEEP_BUDGET_S (20) as in sim-anchors/run.sh; CG_SEEDS
# (200); ARBOR_SIM_BASE=path/to/another/arbor-sim adds it as a row labelled arbor-sim-base
# (a build before a change); SKIP_BUILD=1 reuses the built binaries.
# Time it only on a quiet machine (no rustc running; check `uptime`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
kit=$root/bench/sim-anchors

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building arbor-sim (release)..." >&2
    cargo build --release -p arbor-sim --quiet
    echo "building the anchors (release)..." >&2
    (cd "$kit/turmoil-bench" && cargo build --release --locked --quiet)
    (cd "$kit/madsim-bench" && RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" cargo build --release --locked --quiet)
fi

extra="$kit/arbor-sim.sh"
if [[ -n "${ARBOR_SIM_BASE:-}" ]]; then
    extra+=$'\n'"env ARBOR_SIM=${ARBOR_SIM_BASE} ARBOR_SIM_LABEL=arbor-sim-base $kit/arbor-sim.sh"
fi

if [[ "${1:-}" == callgrind ]]; then
    command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
    seeds=${CG_SEEDS:-200}
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    count() { # count LABEL CMD... -> instructions
        valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$@" >/dev/null 2>"$out/err" \
            || { cat "$out/err" >&2; exit 1; }
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/err"
    }
    echo "| simulator | W1 tree (10 x 1000 calls) | W2 sweep ($seeds seeds) | W1 per message | W2 per seed |"
    echo "|---|---:|---:|---:|---:|"
    # Binaries are run directly (callgrind does not follow a wrapper script's children);
    # arbor-sim's sweep on one thread, as arbor-sim.sh runs it.
    row() { # row LABEL CMD... (CMD tree|sweep ARGS is the workload)
        local label=$1 jobs=()
        shift
        [[ $label == arbor-sim* ]] && jobs=(--jobs 1)
        local w1 w2
        w1=$(count "$@" tree --n 10 --k 1000 --seed 1)
        w2=$(count "$@" sweep --children 3 --rpcs 20 --seeds "$seeds" --budget-s 100000 "${jobs[@]}")
        echo "| $label | $w1 | $w2 | $((w1 / 20000)) | $((w2 / seeds)) |"
    }
    row turmoil "$kit/turmoil-bench/target/release/sim-anchor-turmoil"
    row madsim "$kit/madsim-bench/target/release/sim-anchor-madsim"
    row arbor-sim "$root/target/release/arbor-sim" bench
    if [[ -n "${ARBOR_SIM_BASE:-}" ]]; then
        row arbor-sim-base "$ARBOR_SIM_BASE" bench
    fi
    # W1's calls on the arbor core alone (bare hosts back to back: no world, trace or checkers):
    # the part of arbor-sim's W1 that is the system under test, not the simulator.
    core=$(count "$root/target/release/arbor-sim" bench core --n 10 --k 1000)
    echo "| arbor core alone (\`bench core\`, W1's calls) | $core | | $((core / 20000)) | |"
    exit 0
fi

REPS=${REPS:-5} SKIP_BUILD=1 SIM_ANCHORS_EXTRA="$extra" "$kit/run.sh"
