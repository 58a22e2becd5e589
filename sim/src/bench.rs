//! Benchmarks of the simulator itself, on workloads other simulators are measured on too:
//!
//! - **W1 tree**: a root and `n` children, each child serving `k` sequential calls from the root
//!   (16-byte argument and result), link latency 1 ms each way, then a graceful shutdown.
//! - **W2 sweep**: a fresh world per seed with `children` children, `rpcs` calls each, then the
//!   full graceful shutdown, until the seeds or the wall-clock budget run out, on every core.
//!
//! Every run is checked by every invariant checker, inside the timed region. Output lines are
//! `sample<TAB>arbor-sim<TAB>W1 tree|W2 sweep<TAB>metric<TAB>unit<TAB>value`.
// Benchmarks measure wall time; the simulation itself never reads a clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use arbor_core::node::Output;

use crate::plan::{Action, Mutation, Net, Plan};
use crate::run::run;
use crate::trace::What;

/// The W1 plan: `n` children, `k` sequential echo calls to each, 1 ms latency.
pub fn tree_plan(n: usize, k: u32, seed: u64) -> Plan {
    let settle = Duration::from_millis(25);
    Plan {
        name: "bench-tree".into(),
        seed,
        net: Net { latency: Duration::from_millis(1), ..Net::default() },
        parents: vec![0; n],
        actions: (1..=n).map(|c| (settle, Action::Chain { from: 0, to: c, count: k })).collect(),
        faults: Vec::new(),
        // Each call is a 2 ms round trip; shut down once every chain must be done.
        shutdown_at: settle + Duration::from_millis(2 * u64::from(k) + 50),
        expect: Vec::new(),
        mutation: Mutation::None,
    }
}

/// The W2 plan for one seed: `children` children, `rpcs` sequential calls each; the seed varies
/// the latency.
pub fn sweep_plan(children: usize, rpcs: u32, seed: u64) -> Plan {
    let latency = Duration::from_micros(50 + seed % 950);
    let settle = Duration::from_millis(10);
    Plan {
        name: "bench-sweep".into(),
        seed,
        net: Net { latency, ..Net::default() },
        parents: vec![0; children],
        actions: (1..=children).map(|c| (settle, Action::Chain { from: 0, to: c, count: rpcs })).collect(),
        faults: Vec::new(),
        shutdown_at: settle + latency * 2 * (rpcs + 5),
        expect: Vec::new(),
        mutation: Mutation::None,
    }
}

fn sample(workload: &str, metric: &str, unit: &str, value: f64) {
    println!("sample\tarbor-sim\t{workload}\t{metric}\t{unit}\t{value}");
}

/// `arbor-sim bench tree`: runs W1 once and prints its samples; an error if a call went
/// unanswered, `Ok(false)` if an invariant broke.
pub fn tree(n: usize, k: u32, seed: u64) -> Result<bool, String> {
    let plan = tree_plan(n, k, seed);
    let t0 = WallClock::now();
    let report = run(&plan);
    let wall = t0.elapsed().as_secs_f64();
    let ok = report.passed();
    let answered = report
        .trace
        .events
        .iter()
        .filter(|e| matches!(&e.what, What::Out(Output::CallReturned { result: Ok(_), .. })))
        .count();
    if answered != n * k as usize {
        return Err(format!("only {answered} of {} calls answered", n * k as usize));
    }
    let sim_s = report
        .trace
        .events
        .iter()
        .rev()
        .find(|e| e.proc == 0 && matches!(e.what, What::Died(_)))
        .map_or(0.0, |e| e.at.as_nanos() as f64 / 1e9);
    sample("W1 tree", "wall time", "s", wall);
    sample("W1 tree", "messages delivered", "msgs", report.stats.messages as f64);
    sample("W1 tree", "throughput", "msgs/wall-s", report.stats.messages as f64 / wall);
    sample("W1 tree", "simulated time", "sim-s", sim_s);
    for v in &report.violations {
        eprintln!("{v}");
    }
    Ok(ok)
}

/// `arbor-sim bench sweep`: W2 on `jobs` threads until `seeds` or `budget_s` run out; whether
/// every run passed.
pub fn sweep(children: usize, rpcs: u32, seeds: u64, budget_s: u64, jobs: u64) -> bool {
    let budget = Duration::from_secs(budget_s);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let t0 = WallClock::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                if t0.elapsed() >= budget {
                    break;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds {
                    break;
                }
                let report = run(&sweep_plan(children, rpcs, seed));
                if !report.passed() {
                    eprintln!("seed {seed}: {}", report.violations[0]);
                    failed.store(true, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed) as f64;
    sample("W2 sweep", "wall time", "s", wall);
    sample("W2 sweep", "seed rate", "seeds/min", n / wall * 60.0);
    sample("W2 sweep", "seeds completed", "seeds", n);
    !failed.load(Ordering::Relaxed)
}

/// `arbor-sim bench core`: W1's calls with the world taken away — a root host and `n` child
/// hosts wired back to back (each write handed whole to the peer's host at once), `k`
/// sequential echo calls to each child, no sockets, no clock, no trace, no checkers. What it
/// costs is the core's share of W1 (run it under callgrind beside `bench tree`). Returns the
/// calls answered.
pub fn core_only(n: usize, k: u32) -> Result<u64, String> {
    use arbor_core::host::{Action as HostAction, Host, HostConfig, Io};
    use arbor_core::node::{Node, NodeConfig, StreamKind};
    use arbor_core::router::StreamId;
    use arbor_core::time::Instant;
    use bytes::Bytes;
    use std::collections::VecDeque;

    const PARENT: StreamId = StreamId(0);
    let now = Instant::ZERO;
    let mut hosts = vec![Host::new(Node::new(NodeConfig::root()), HostConfig::default())];
    // (host, stream) -> (peer host, peer stream), by host index: the root's child stream to
    // child c is StreamId(c).
    let peer = |h: usize, s: StreamId| if h == 0 { (s.0 as usize, PARENT) } else { (0, StreamId(h as u32)) };
    for c in 1..=n {
        let ticket = hosts[0].request_spawn(now);
        let id = loop {
            match hosts[0].poll_action() {
                Some(HostAction::Io(Io::Spawn { id, .. })) => break id,
                Some(_) => {}
                None => return Err("the root never spawned".into()),
            }
        };
        let mut child =
            Host::new(Node::new(NodeConfig::child(id, vec![hosts[0].node().id()])), HostConfig::default());
        child.opened(now, PARENT, StreamKind::Parent, None).map_err(|e| e.to_string())?;
        hosts.push(child);
        let kind = StreamKind::Child { id, pid: None, name: None };
        hosts[0].opened(now, StreamId(c as u32), kind, Some(ticket)).map_err(|e| e.to_string())?;
    }
    let args = Bytes::from_static(b"0123456789abcdef");
    let mut left = vec![k; n + 1];
    // The child each call went to, by call id (the root numbers its calls 0, 1, 2, ...).
    let mut targets = Vec::with_capacity(n * k as usize);
    for c in (1..=n).filter(|_| k > 0) {
        let target = hosts[c].node().id();
        let call = hosts[0].call(now, target, "echo", args.clone()).map_err(|e| e.to_string())?;
        debug_assert_eq!(call.0 as usize, targets.len());
        targets.push(c);
        left[c] -= 1;
    }
    let mut answered = 0u64;
    let mut busy: VecDeque<usize> = (0..=n).collect();
    let mut buf = Vec::new();
    while let Some(h) = busy.pop_front() {
        while let Some(action) = hosts[h].poll_action() {
            match action {
                HostAction::Output(Output::RunCall { job, request, .. }) => {
                    hosts[h].call_finished(now, job, Ok(request.args));
                }
                HostAction::Output(Output::CallReturned { call, result }) => {
                    result.map_err(|e| e.to_string())?;
                    answered += 1;
                    let c = *targets.get(call.0 as usize).ok_or("an answer to no call")?;
                    if left[c] > 0 {
                        left[c] -= 1;
                        let target = hosts[c].node().id();
                        let call =
                            hosts[0].call(now, target, "echo", args.clone()).map_err(|e| e.to_string())?;
                        debug_assert_eq!(call.0 as usize, targets.len());
                        targets.push(c);
                    }
                }
                HostAction::Io(Io::Write { stream }) => {
                    buf.clear();
                    if let Some(q) = hosts[h].write_queue(stream) {
                        for segment in q.segments(usize::MAX) {
                            buf.extend_from_slice(segment.as_slice());
                        }
                    }
                    hosts[h].wrote(now, stream, buf.len());
                    let (p, ps) = peer(h, stream);
                    hosts[p].received(now, ps, &buf);
                    busy.push_back(p);
                }
                _ => {}
            }
        }
    }
    Ok(answered)
}
