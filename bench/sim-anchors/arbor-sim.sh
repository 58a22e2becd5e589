#!/usr/bin/env bash
# arbor-sim in the sim-anchors protocol (README.md here), on one thread: the W2 sweep gets
# `--jobs 1`, so its seed rate is per core like the anchors'.
#   arbor-sim.sh tree|sweep ARGS...
# ARBOR_SIM: the binary (default: the workspace's target/release/arbor-sim).
# ARBOR_SIM_LABEL: the framework column (default arbor-sim), to put two builds side by side.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${ARBOR_SIM:-$here/../../target/release/arbor-sim}
label=${ARBOR_SIM_LABEL:-arbor-sim}
cmd=$1
shift
extra=()
[[ $cmd == sweep ]] && extra=(--jobs 1)
"$bin" bench "$cmd" "$@" "${extra[@]}" | sed "s/^sample\tarbor-sim\t/sample\t$label\t/"
