#!/usr/bin/env bash
# Counts, not timings, for one build of arbor-bench — repeatable on a busy shared machine:
#
#     bench/counts.sh [BIN] [RUNTIME]     # default target/release/arbor-bench, smol
#
# - syscalls, futex calls and context switches per child round trip, unpinned and pinned to one
#   CPU (perf stat over `ARBOR_BENCH_COUNT_CALLS=3000 arbor-round` less the same with 1000);
# - instructions per child round trip, summed over the root and the child (callgrind
#   --trace-children=yes over 1500 calls less 500);
# - the idle child's VmRSS / RssAnon in KiB, median of 10 fresh children (`--only rss`).
# Needs perf (with the syscalls tracepoints readable) and valgrind.
set -euo pipefail
bin="${1:-target/release/arbor-bench}"
rt="${2:-smol}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

ev='raw_syscalls:sys_enter,syscalls:sys_enter_futex,context-switches'
perf_run() { # N [prefix...]
    local n="$1"; shift
    ARBOR_RUNTIME="$rt" ARBOR_BENCH_COUNT_CALLS="$n" perf stat -x, -e "$ev" "$@" "$bin" arbor-round \
        2>&1 >/dev/null | awk -F, '{print $3, $1}'
}
per_call() { # [prefix...]
    paste <(perf_run 1000 "$@") <(perf_run 3000 "$@") |
        awk '{n=$1; sub("raw_syscalls:sys_enter","syscalls",n); sub("syscalls:sys_enter_","",n);
              printf "%s %.2f  ", n, ($4-$2)/2000} END {print ""}'
}
echo "$rt per round trip, unpinned: $(per_call)"
echo "$rt per round trip, pinned:   $(per_call taskset -c 0)"

instructions() { # N
    local dir="$out/cg-$1"; mkdir -p "$dir"
    ARBOR_RUNTIME="$rt" ARBOR_BENCH_COUNT_CALLS="$1" valgrind --tool=callgrind --trace-children=yes \
        --callgrind-out-file="$dir/cg.%p" "$bin" arbor-round >/dev/null 2>"$dir/log"
    cat "$dir"/cg.* | awk '/^summary:/ {s+=$2} END {print s}'
}
a="$(instructions 500)"; b="$(instructions 1500)"
echo "$rt instructions per round trip (root + child): $(( (b - a) / 1000 ))"

for _ in 1 2; do ARBOR_RUNTIME="$rt" "$bin" arbor-round --only rss; done | python3 -c '
import json, statistics, sys
v, a = [], []
for line in sys.stdin:
    r = json.loads(line)
    (v if r["workload"] == "idle_rss" else a).append(r["samples"][0] * 1024)
print(f"idle child: VmRSS {statistics.median(v):.0f} KiB [{min(v):.0f}-{max(v):.0f}], "
      f"RssAnon {statistics.median(a):.0f} KiB (median of {len(v)})")'
