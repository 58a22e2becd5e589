#!/usr/bin/env bash
# Side-by-side call benchmark of two builds of arbor-bench (a change against its baseline):
#
#     bench/compare_calls.sh BASELINE_BIN CANDIDATE_BIN [ROUNDS]
#
# Runs `arbor-bench arbor-round --only calls` (child and grandchild round trips, 100 pipelined
# calls) from each binary in interleaved rounds (A B A B ...), so drift on a shared machine hits
# both alike, and prints per workload the median of each side's round medians, their spread
# (min–max of round medians) and the candidate/baseline ratio. Run it on a quiet machine.
set -euo pipefail
base="$1"; cand="$2"; rounds="${3:-7}"
out="$(mktemp -d)"
for i in $(seq 1 "$rounds"); do
    "$base" arbor-round --only calls > "$out/base.$i.jsonl"
    "$cand" arbor-round --only calls > "$out/cand.$i.jsonl"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def medians(side):
    by = {}
    for i in range(1, rounds + 1):
        for line in open(f"{out}/{side}.{i}.jsonl"):
            r = json.loads(line)
            by.setdefault((r["workload"], r["unit"]), []).append(statistics.median(r["samples"]))
    return by
b, c = medians("base"), medians("cand")
print(f"{'workload':<16} {'baseline':>22} {'candidate':>22} {'cand/base':>10}")
for (w, unit), bs in b.items():
    cs = c[(w, unit)]
    mb, mc = statistics.median(bs), statistics.median(cs)
    fmt = lambda m, v: f"{m:9.1f} [{min(v):.1f}–{max(v):.1f}]"
    print(f"{w:<16} {fmt(mb, bs):>22} {fmt(mc, cs):>22} {mc / mb:>9.3f}  ({unit})")
PY
