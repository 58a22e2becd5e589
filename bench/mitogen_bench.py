#!/usr/bin/env python3
"""The arbor benchmark workloads, run on mitogen (0.3.54) for comparison.

Usage: mitogen_bench.py round [--only rtt]

Prints one JSON line per workload on stdout:
    {"system": "mitogen", "workload": "rtt_child", "unit": "us", "samples": [...]}
The orchestrator (`arbor-bench run`, see bench/run.sh) runs this interleaved with the arbor
rounds, renames the workloads of a pinned run (it runs this under `taskset -c 0`) and prints the
table. Every workload here mirrors one in bench/src/arbor_round.rs: keep them in step.

Children are local() contexts (fork+exec of this Python, as mitogen does). The functions below are
served to them by mitogen's importer from __main__, which is why main() is guarded.
"""

import json
import os
import select
import signal
import sys
import threading
import time

import mitogen.core
import mitogen.master

MIB = 1024 * 1024


# ---- functions run in the children (mirrors of bench/src/functions.rs) ----

def noop():
    return None


def pid():
    return os.getpid()


def length(blob):
    return len(blob)


def make(n):
    return b"\xa5" * n


def hang():
    while True:
        time.sleep(3600)


def ignore_sigterm():
    # A handler, like arbor's signal_hook flag: SIGTERM no longer ends this process.
    signal.signal(signal.SIGTERM, lambda *_: None)


# ---- measurement helpers ----

def emit(workload, unit, samples):
    print(json.dumps({"system": "mitogen", "workload": workload, "unit": unit, "samples": samples}),
          flush=True)


class ExitWatch:
    """Watches pids through pidfds on a thread; `last` is when the last of them exited.

    The same method as bench/src/exited.rs: a pidfd turns readable when its process exits,
    whoever reaps it."""

    def __init__(self, pids):
        self.fds = [os.pidfd_open(p) for p in pids]
        self.last = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        left = len(self.fds)
        deadline = time.perf_counter() + 30
        while left and time.perf_counter() < deadline:
            for fd, _ in poller.poll(1000):
                poller.unregister(fd)
                left -= 1
        self.last = time.perf_counter() if left == 0 else None

    def wait(self):
        self.thread.join()
        for fd in self.fds:
            os.close(fd)
        return self.last


def start():
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    return broker, router


def stop(broker):
    broker.shutdown()
    broker.join()


def ms(seconds):
    return seconds * 1000.0


# ---- workloads ----

def rtt(router, only_rtt):
    child = router.local()
    child.call(noop)
    grandchild = router.local(via=child)
    grandchild.call(noop)
    for name, ctx in (("rtt_child", child), ("rtt_grandchild", grandchild)):
        for _ in range(50):
            ctx.call(noop)
        samples = []
        for _ in range(400):
            t = time.perf_counter()
            ctx.call(noop)
            samples.append((time.perf_counter() - t) * 1e6)
        emit(name, "us", samples)
    if only_rtt:
        return
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        receivers = [child.call_async(noop) for _ in range(100)]
        for r in receivers:
            r.get().unpickle()
        samples.append(100 / (time.perf_counter() - t))
    emit("pipelined_100", "calls/s", samples)

    arg = b"\xa5" * (16 * MIB)
    child.call(length, arg)
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        n = child.call(length, arg)
        samples.append(len(arg) / (time.perf_counter() - t) / 1e6)
        assert n == len(arg)
    emit("arg_16mib", "MB/s", samples)

    child.call(make, MIB)
    samples = []
    for _ in range(10):
        t = time.perf_counter()
        out = child.call(make, MIB)
        samples.append(MIB / (time.perf_counter() - t) / 1e6)
        assert len(out) == MIB
    emit("result_1mib", "MB/s", samples)


def spawn_first_answer(router):
    router.local().call(noop)  # warm-up: the first spawn of a process also loads the importer
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        router.local().call(noop)
        samples.append(ms(time.perf_counter() - t))
    emit("spawn_first_answer", "ms", samples)


def idle_rss(router):
    child = router.local()
    child_pid = child.call(pid)
    time.sleep(0.3)
    with open("/proc/%d/status" % child_pid) as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    for workload, field in (("idle_rss", "VmRSS"), ("idle_rss_anon", "RssAnon")):
        emit(workload, "MiB", [int(status[field].split()[0]) / 1024.0])


def shutdown_of(n):
    """Times one whole-tree shutdown with n idle children."""
    broker, router = start()
    pids = [router.local().call(pid) for _ in range(n)]
    watch = ExitWatch(pids)
    t = time.perf_counter()
    stop(broker)
    returned = time.perf_counter() - t
    last = watch.wait()
    return (ms(last - t) if last else None), ms(returned)


def shutdown_hung(ignore):
    """Times a shutdown while the only child is hung in a function (and maybe ignores SIGTERM)."""
    broker, router = start()
    child = router.local()
    child_pid = child.call(pid)
    if ignore:
        child.call(ignore_sigterm)
    child.call_async(hang)
    time.sleep(0.05)
    watch = ExitWatch([child_pid])
    t = time.perf_counter()
    stop(broker)
    returned = time.perf_counter() - t
    last = watch.wait()
    return (ms(last - t) if last else None), ms(returned)


def shutdowns():
    for n, times in ((1, 3), (10, 2), (50, 1)):
        results = [shutdown_of(n) for _ in range(times)]
        emit("shutdown_%d_exited" % n, "ms", [e for e, _ in results if e is not None])
        emit("shutdown_%d_returned" % n, "ms", [r for _, r in results])
    for name, ignore, times in (("hung", False, 2), ("hung_ignoring_sigterm", True, 1)):
        results = [shutdown_hung(ignore) for _ in range(times)]
        emit(name + "_gone", "ms", [e for e, _ in results if e is not None])
        emit(name + "_returned", "ms", [r for _, r in results])


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "round":
        sys.exit(__doc__)
    only_rtt = "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "rtt"
    broker, router = start()
    try:
        rtt(router, only_rtt)
        if not only_rtt:
            spawn_first_answer(router)
            idle_rss(router)
    finally:
        stop(broker)
    if not only_rtt:
        shutdowns()


if __name__ == "__main__":
    main()
