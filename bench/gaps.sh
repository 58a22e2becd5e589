#!/usr/bin/env bash
# A child round trip after the tree sat idle: each call preceded by GAP_MS of nothing, the way
# most programs call (bench/run.sh's round trips are back to back). Interleaved rounds of the
# floor, arbor on smol and arbor on tokio, then — counts, not timings — which thread of each
# process waited in epoll for the events (perf record on the epoll_pwait tracepoint; needs perf).
#
#     bench/gaps.sh [ROUNDS] [BIN]      # default 5 rounds, target/release/arbor-bench
#
# Knobs: GAP_MS (30), CALLS per run (60). Time it only on a quiet machine.
set -euo pipefail
rounds="${1:-5}"
bin="${2:-target/release/arbor-bench}"
gap="${GAP_MS:-30}"
calls="${CALLS:-60}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

systems=(floor smol tokio)
for r in $(seq 1 "$rounds"); do
    for i in 0 1 2; do
        s="${systems[$(( (i + r) % 3 ))]}"
        case "$s" in
            floor) ARBOR_BENCH_COUNT_CALLS="$calls" ARBOR_BENCH_GAP_MS="$gap" "$bin" floor-round ;;
            *) ARBOR_RUNTIME="$s" ARBOR_BENCH_COUNT_CALLS="$calls" ARBOR_BENCH_GAP_MS="$gap" "$bin" arbor-round |
                sed "s/\"system\":\"arbor[a-z-]*\"/\"system\":\"$s\"/" ;;
        esac
    done >"$out/round-$r.jsonl"
done
cat "$out"/round-*.jsonl | python3 -c '
import json, statistics, sys
by = {}
for line in sys.stdin:
    r = json.loads(line)
    by.setdefault(r["system"], []).append(r["samples"])
n = len(by["floor"])
print(f"child round trip after {sys.argv[1]} ms idle, {sys.argv[2]} calls x {n} rounds:")
med = {}
for s in ("floor", "smol", "tokio"):
    rounds = [statistics.median(x) for x in by[s]]
    allv = [v for x in by[s] for v in x]
    med[s] = statistics.median(allv)
    q = statistics.quantiles(allv, n=10)
    print(f"  {s:5} median {med[s]:7.1f} us (p10 {q[0]:.1f}, p90 {q[-1]:.1f}); round medians "
          + " ".join(f"{m:.0f}" for m in rounds))
fl, sm, tk = med["floor"], med["smol"], med["tokio"]
print(f"  smol / tokio {sm / tk:.2f}x, smol / floor {sm / fl:.2f}x, tokio / floor {tk / fl:.2f}x")
' "$gap" "$calls"

if command -v perf >/dev/null && [[ "$(perf list 2>/dev/null | grep -c syscalls:sys_enter_epoll_pwait)" -gt 0 ]]; then
    for s in smol tokio; do
        ARBOR_RUNTIME="$s" ARBOR_BENCH_COUNT_CALLS="$calls" ARBOR_BENCH_GAP_MS="$gap" \
            perf record -q -o "$out/perf.data" -e syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait \
            "$bin" arbor-round >/dev/null 2>&1
        echo "  $s: epoll waits by thread name (root and child together): $(perf script -i "$out/perf.data" -F comm 2>/dev/null |
            sort | uniq -c | sort -rn | awk '{printf "%s %s, ", $2, $1}' | sed 's/, $//')"
    done
fi
