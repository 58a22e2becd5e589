#!/usr/bin/env bash
# The benchmarks of issue 7, in one command from a fresh clone (Linux, a Rust toolchain, python3
# with venv, util-linux's taskset):
#
#     bench/run.sh [ROUNDS]        # default 5 rounds, about 3 minutes on 2 vCPUs
#
# It creates a virtualenv under target/bench-venv, installs mitogen==0.3.54 into it, builds
# arbor-bench in release, runs floor, arbor and mitogen rounds interleaved (unpinned, then pinned
# to one CPU with taskset), prints the table and writes it to docs/benchmarks.md with the machine
# description and this command.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-5}"
venv=target/bench-venv
mitogen_version=0.3.54

command -v taskset >/dev/null || { echo "taskset (util-linux) is required for the pinned runs"; exit 1; }
if ! "$venv/bin/python" -c "import mitogen, sys; sys.exit(mitogen.__version__ != (0, 3, 54))" 2>/dev/null; then
    echo "== virtualenv $venv with mitogen==$mitogen_version" >&2
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "mitogen==$mitogen_version"
fi

echo "== building arbor-bench (release)" >&2
cargo build --release --quiet -p arbor-bench

echo "== $rounds rounds" >&2
exec target/release/arbor-bench run \
    --rounds "$rounds" \
    --python "$venv/bin/python" \
    --script bench/mitogen_bench.py \
    --out docs/benchmarks.md \
    --command "bench/run.sh${1:+ $1}"
