//! A complete host of your own: one thread and `poll(2)`, no async runtime, built only on the
//! public pieces every host shares — the core's host contract (`arbor_core::host::Host`), the
//! child bootstrap (`arbor::bootstrap`) and the function registry (`arbor::Functions`).
//!
//! `cargo run -p arbor --example own_host`: the root spawns one child (a re-exec of this
//! program, which runs the same loop as a child), calls `add` in it, prints the answer and the
//! child's output, and shuts the tree down. docs/embedding.md walks through it.
//!
//! Simplifications a real host would not make: calls run on the loop's own thread (so a hung
//! function would stall this context's IO; arbor's driver runs them on a thread of their own),
//! and there is no SIGINT handling.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use arbor::bootstrap::{self, CaptureWrite, ChildEnv};
use arbor::Functions;
use arbor_core::host::{Action, Host, HostConfig, Io};
use arbor_core::ids::ContextId;
use arbor_core::node::{Node, NodeConfig, Output, StreamKind};
use arbor_core::reaper::{ExitStatus, Pid, Signal};
use arbor_core::router::StreamId;
use arbor_core::shutdown::ExitKind;
use arbor_core::time::Instant;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

fn functions() -> Functions {
    Functions::new().register("add", |(a, b): (i32, i32)| {
        println!("adding {a} and {b}"); // captured, forwarded to the root as a log line
        Ok::<_, String>(a + b)
    })
}

/// One stream: a socket, and for a logger our handle on its write half.
struct Stream {
    fd: OwnedFd,
    capture: Option<CaptureWrite>,
    reading: bool,
}

/// The host: the contract's state plus the real things it names.
struct OwnHost {
    host: Host,
    functions: Functions,
    streams: BTreeMap<StreamId, Stream>,
    children: BTreeMap<Pid, (Child, OwnedFd)>,
    next_stream: u32,
    deadline: Option<Instant>,
    epoch: StdInstant,
    exit: Option<ExitKind>,
    /// The root's script: the child it spawned, the call it made.
    child: Option<ContextId>,
}

impl OwnHost {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn open(&mut self, fd: OwnedFd, kind: StreamKind, capture: Option<CaptureWrite>) -> StreamId {
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        rustix::io::ioctl_fionbio(&fd, true).expect("non-blocking");
        self.streams.insert(stream, Stream { fd, capture, reading: true });
        let now = self.now();
        self.host.opened(now, stream, kind, None).expect("each stream is opened once");
        stream
    }

    /// Carries out every action, in order: the whole of the host contract's "output" side.
    fn carry_out(&mut self) {
        while let Some(action) = self.host.poll_action() {
            let now = self.now();
            match action {
                Action::Io(Io::Write { stream }) => self.write(stream),
                Action::Io(Io::ShutdownWrite { stream }) => {
                    if let Some(capture) = self.streams.get_mut(&stream).and_then(|s| s.capture.take()) {
                        let _ = capture.shut();
                    }
                }
                Action::Io(Io::Close { stream }) => drop(self.streams.remove(&stream)),
                Action::Io(Io::Signal { pid, signal }) => {
                    let sig = if signal == Signal::Kill {
                        rustix::process::Signal::KILL
                    } else {
                        rustix::process::Signal::TERM
                    };
                    if let Some(p) = rustix::process::Pid::from_raw(pid.0 as i32) {
                        let _ = rustix::process::kill_process(p, sig);
                    }
                }
                Action::Io(Io::Spawn { ticket, id }) => {
                    let (ours, theirs) =
                        socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
                            .expect("socketpair");
                    let config = self.host.node().config();
                    let mut ancestors = vec![config.id];
                    ancestors.extend_from_slice(&config.ancestors);
                    let env = ChildEnv {
                        id,
                        ancestors,
                        parent_pid: std::process::id(),
                        grace: config.grace,
                        name: format!("worker-{id}"),
                        runtime: String::new(),
                    };
                    let mut cmd = Command::new(std::env::current_exe().expect("our own binary"));
                    env.apply(&mut cmd);
                    let child = cmd.stdin(Stdio::from(theirs)).process_group(0).spawn().expect("spawn");
                    let pid = Pid(child.id());
                    let pidfd = rustix::process::pidfd_open(
                        rustix::process::Pid::from_raw(pid.0 as i32).expect("a pid"),
                        rustix::process::PidfdFlags::empty(),
                    )
                    .expect("pidfd");
                    self.children.insert(pid, (child, pidfd));
                    self.next_stream += 1;
                    let stream = StreamId(self.next_stream);
                    rustix::io::ioctl_fionbio(&ours, true).expect("non-blocking");
                    self.streams.insert(stream, Stream { fd: ours, capture: None, reading: true });
                    let kind = StreamKind::Child { id, pid: Some(pid), name: Some(env.name) };
                    self.host.opened(now, stream, kind, Some(ticket)).expect("opened once");
                    // The root's script: call the child as soon as it is there.
                    self.child = Some(id);
                    let args = postcard::to_allocvec(&(2i32, 3i32)).expect("encodes");
                    self.host.call(now, id, "add", args).expect("a call");
                }
                Action::Io(Io::Timer(at)) => self.deadline = at,
                Action::Io(Io::Exit { how }) => self.exit = Some(how),
                Action::Output(Output::RunCall { job, request, .. }) => {
                    let result = self.functions.run(&request, &self.host.node().config().name);
                    self.host.call_finished(now, job, result);
                }
                Action::Output(Output::CallReturned { result, .. }) => {
                    let answer = result.map(|b| postcard::from_bytes::<i32>(&b));
                    println!("root: add(2, 3) in context {:?} answered {answer:?}", self.child);
                    self.host.shutdown(now);
                }
                Action::Output(Output::LogLine(line)) => {
                    println!("root: [{}:{}] {}", line.context, line.source, line.text)
                }
                Action::SpawnRefused { reason, .. } => eprintln!("spawn refused: {reason}"),
                Action::Output(_) | Action::Backpressure { .. } | Action::ChildHeld { .. } => {}
            }
        }
    }

    /// Writes the stream's queue until it is empty or the socket would block.
    fn write(&mut self, stream: StreamId) {
        loop {
            let (Some(s), Some(q)) = (self.streams.get(&stream), self.host.write_queue(stream)) else {
                return;
            };
            if q.is_empty() {
                return;
            }
            let slices: Vec<IoSlice<'_>> = q.segments(64).map(|seg| IoSlice::new(seg.as_slice())).collect();
            let written = rustix::io::writev(&s.fd, &slices);
            drop(slices);
            let now = self.now();
            match written {
                Ok(n) => self.host.wrote(now, stream, n),
                Err(rustix::io::Errno::AGAIN) => return, // poll says when to go on
                Err(_) => self.host.write_failed(now, stream),
            }
        }
    }

    /// Waits for readiness or the deadline and feeds what happened to the host.
    fn turn(&mut self) {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        for id in &ids {
            let s = &self.streams[id];
            let mut flags = PollFlags::empty();
            if s.reading && self.host.may_read(*id) {
                flags |= PollFlags::IN;
            }
            if self.host.write_queue(*id).is_some_and(|q| !q.is_empty()) {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&s.fd, flags));
        }
        for pid in &pids {
            fds.push(PollFd::from_borrowed_fd(self.children[pid].1.as_fd(), PollFlags::IN));
        }
        let timeout = self.deadline.map(|at| {
            let left = Duration::from_nanos(at.as_nanos().saturating_sub(self.now().as_nanos()));
            Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 }
        });
        let _ = poll(&mut fds, timeout.as_ref());
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        let now = self.now();
        for (id, flags) in ids.iter().zip(&ready) {
            if flags.contains(PollFlags::OUT) {
                self.write(*id);
            }
            if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                let mut buf = [0u8; 64 * 1024];
                let Some(s) = self.streams.get_mut(id).filter(|s| s.reading) else { continue };
                match rustix::io::read(&s.fd, &mut buf) {
                    Ok(0) => {
                        s.reading = false;
                        self.host.eof(now, *id);
                    }
                    Ok(n) => self.host.received(now, *id, &buf[..n]),
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                    Err(_) => {
                        s.reading = false;
                        self.host.read_failed(now, *id);
                    }
                }
            }
        }
        for (pid, flags) in pids.iter().zip(&ready[ids.len()..]) {
            if flags.contains(PollFlags::IN) {
                if let Some((mut child, _)) = self.children.remove(pid) {
                    let status = child.wait().expect("reap");
                    let status = match (status.code(), status.signal()) {
                        (Some(c), _) => ExitStatus::Code(c),
                        (None, s) => ExitStatus::Signaled(s.unwrap_or(0)),
                    };
                    self.host.child_exited(now, *pid, status);
                }
            }
        }
        if self.deadline.is_some_and(|at| at <= self.now()) {
            let now = self.now();
            self.host.handle_timeout(now);
        }
    }

    /// The whole host loop: carry out, wait, feed — until the host says `Exit`.
    fn run(mut self) -> ExitKind {
        loop {
            self.carry_out();
            if let Some(how) = self.exit {
                return how;
            }
            self.turn();
        }
    }
}

fn main() {
    let epoch = StdInstant::now();
    let new = |config: NodeConfig| OwnHost {
        host: Host::new(Node::new(config), HostConfig::default()),
        functions: functions(),
        streams: BTreeMap::new(),
        children: BTreeMap::new(),
        next_stream: 0,
        deadline: None,
        epoch,
        exit: None,
        child: None,
    };
    match bootstrap::take_over() {
        // A child: its parent stream and output captures come from the bootstrap.
        Ok(Some(boot)) => {
            let mut config = NodeConfig::child(boot.env.id, boot.env.ancestors.clone());
            config.name = boot.env.name.clone();
            let mut host = new(config);
            host.open(boot.parent, StreamKind::Parent, None);
            for (capture, read) in boot.captures {
                let kind = StreamKind::Logger { source: capture.source() };
                host.open(read, kind, Some(capture));
            }
            host.run();
            // Exit { SigtermSelf }: end the way mitogen's children do.
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM);
            std::process::exit(143);
        }
        Ok(None) => {
            let mut host = new(NodeConfig::root());
            let now = host.now();
            let _ = host.host.request_spawn(now);
            let how = host.run();
            println!("root: exited {how:?}; every child reaped");
        }
        Err(e) => bootstrap::fail(&e),
    }
}
