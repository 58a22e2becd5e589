//! The IO thread's driver: one future per context, in the manner of quinn's
//! `ConnectionDriver`. Each poll locks the state, carries out the spawns only this thread may
//! do, reads every readable stream (within a budget), writes what the sockets take, reaps
//! children whose pidfd became readable, takes SIGINT/SIGTERM, fires the deadline (its timer
//! moved only when the deadline comes earlier), and hands out what that caused once the lock
//! is let go of. Every fd is the runtime's (async-io's `Async` on smol, `AsyncFd` on tokio): a
//! readiness the driver has not asked for never wakes it, and nothing here depends on which
//! thread the kernel wakes first.

use std::future::{poll_fn, Future};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use arbor_core::node::StreamKind;
use arbor_core::reaper::{ExitStatus, Pid};
use arbor_core::router::StreamId;
use arbor_core::shutdown::Phase;
use arbor_core::time::Instant;
use arbor_core::vec_map::VecMap;
use rustix::process::{pidfd_open, PidfdFlags};

use crate::bootstrap::CaptureWrite;
use crate::clock;
use crate::deliveries::{Deliveries, Note};
use crate::error::SpawnError;
use crate::groups::Groups;
use crate::runtime::{with_io_slices, AsyncFd, AsyncTimer};
use crate::shared::Shared;
use crate::spawn;
use crate::state::{ChildProc, Kind, Reaped, State};

/// How much one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// How much the first read takes: the read buffer starts this small and doubles (up to
/// `READ_CHUNK`) whenever a read fills it, so an idle context never touches 64 KiB it does not
/// use (a zeroed buffer is resident memory) while a bulk transfer reaches full-size reads
/// after four reads.
const FIRST_READ: usize = 4 * 1024;
/// Reads of one stream in one round before the others get theirs.
const READS_PER_ROUND: usize = 16;
/// Rounds in one poll before the driver yields to other tasks (and polls again at once).
const ROUNDS_PER_POLL: usize = 32;
/// Segments gathered into one vectored write at most.
const SEGMENTS_PER_WRITE: usize = 512;
/// How often a child is polled on kernels without pidfd (before Linux 5.3).
const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(5);

/// What a context starts from, opened on the IO thread (the runtime's reactor is there).
pub(crate) struct Setup {
    pub parent: Option<OwnedFd>,
    pub captures: Vec<(CaptureWrite, OwnedFd)>,
    pub interrupts: Option<UnixStream>,
}

/// What the driver reports once the context is done.
#[derive(Debug)]
pub(crate) struct Finished {
    pub shutdown_began: Option<std::time::Instant>,
    pub reaped: Vec<Reaped>,
    pub departed: Vec<arbor_core::departure::Departure>,
}

/// Drives the context until the host says `Exit` and every process group it signalled is
/// empty (or killed).
pub(crate) async fn drive(shared: Arc<Shared>, setup: Setup) -> Finished {
    let mut driver = Driver {
        shared,
        timer: None,
        timer_at: None,
        interrupts: None,
        buf: vec![0; FIRST_READ],
        streams: Vec::new(),
        pids: Vec::new(),
        spare: Deliveries::default(),
    };
    driver.start(setup);
    poll_fn(|cx| driver.poll(cx)).await
}

struct Driver {
    shared: Arc<Shared>,
    timer: Option<Pin<Box<dyn AsyncTimer>>>,
    /// Where the timer is armed (at or before the earliest deadline), if it is.
    timer_at: Option<std::time::Instant>,
    interrupts: Option<Box<dyn AsyncFd>>,
    buf: Vec<u8>,
    /// The streams (children) a round looks at, kept between rounds so that a round
    /// allocates nothing.
    streams: Vec<StreamId>,
    pids: Vec<Pid>,
    /// What the last round handed out, emptied, for the next round to gather into (see
    /// `Deliveries::keep`).
    spare: Deliveries,
}

impl Driver {
    fn start(&mut self, setup: Setup) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let now = clock::now();
        if let Some(fd) = setup.parent {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, spawn::FRAMED_SEND_BUFFER);
            st.open(&shared, now, fd, StreamKind::Parent, None, None);
        }
        for (capture, read) in setup.captures {
            let kind = StreamKind::Logger { source: capture.source() };
            st.open(&shared, now, read, kind, Some(capture), None);
        }
        if let Some(sock) = setup.interrupts {
            match shared.runtime.wrap(sock.into()) {
                Ok(fd) => self.interrupts = Some(fd),
                Err(e) => st.note(Note::Warn(format!("cannot watch SIGINT/SIGTERM: {e}"))),
            }
        }
        st.carry_out(&shared, true);
        self.hand_out(&shared, st);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Finished> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        let mut finished = None;
        for round in 0.. {
            let now = clock::now();
            st.driver_work = false;
            // What was read or written needs another round only if it left this thread work
            // (`driver_work`, or a stream with bytes left); a spawn (its new streams and pidfd
            // are to be polled), a reaped child, an interrupt or the timer always do.
            let mut again = self.spawn(&mut st, now);
            let mut progress = self.read(&mut st, cx, now);
            progress |= self.write(&mut st, cx, now);
            again |= self.reap(&mut st, cx, now);
            again |= self.interrupted(&mut st, cx, now);
            again |= self.timer(&mut st, cx);
            st.carry_out(&shared, true);
            progress = again || (progress && (st.driver_work || st.streams.values().any(|s| s.more)));
            if st.exited.is_some() && st.groups.is_empty() {
                // What belongs to this thread's runtime goes with it, now: a waker (on tokio it
                // holds the runtime's scheduler, and with it the reactor's epoll and eventfd)
                // or a registered fd left in the state would otherwise live as long as the last
                // handle on the context — a caller's or the calls thread's.
                st.waker = None;
                st.streams.clear();
                wait_for_abandoned(std::mem::take(&mut st.children));
                finished = Some(Finished {
                    shutdown_began: st.shutdown_began,
                    reaped: std::mem::take(&mut st.reaped),
                    departed: std::mem::take(&mut st.departed),
                });
                break;
            }
            if !progress {
                break;
            }
            if round + 1 == ROUNDS_PER_POLL {
                // More may be ready: let other tasks run, then come straight back.
                cx.waker().wake_by_ref();
                break;
            }
        }
        self.hand_out(&shared, st);
        match finished {
            Some(f) => Poll::Ready(f),
            None => Poll::Pending,
        }
    }

    /// Lets go of the lock, then hands out what the round gathered, into the vectors the
    /// last round emptied (see `Deliveries::keep`).
    fn hand_out(&mut self, shared: &Arc<Shared>, mut st: MutexGuard<'_, State>) {
        let mut out = st.take_deliveries(std::mem::take(&mut self.spare));
        drop(st);
        shared.deliver(&mut out);
        if out.keep() {
            self.spare = out;
        }
    }

    /// Carries out the spawns the host handed out — unless shutdown began since (a spawn asked
    /// for from another thread waits for this thread): then it fails "shutting down".
    fn spawn(&mut self, st: &mut State, now: Instant) -> bool {
        let todo = std::mem::take(&mut st.to_spawn);
        let progress = !todo.is_empty();
        for (ticket, id) in todo {
            let Some((options, reply)) = st.spawn_request(ticket) else {
                st.host.spawn_failed(now, ticket);
                continue;
            };
            if st.host.node().phase() != Phase::Running || st.exited.is_some() {
                st.host.spawn_failed(now, ticket);
                st.spawn_answer(reply, Err(SpawnError::ShuttingDown));
                continue;
            }
            let config = st.host.node().config();
            let runtime = self.shared.runtime.name();
            match spawn::start(id, config.id, &config.ancestors, config.grace, &options, runtime) {
                Ok(started) => {
                    let info = started.info.clone();
                    let pidfd = rustix::process::Pid::from_raw(info.pid.0 as i32)
                        .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
                        .and_then(|fd| self.shared.runtime.wrap(fd).ok());
                    st.children
                        .insert(info.pid, ChildProc { child: started.child, pidfd, info: info.clone() });
                    let kind = StreamKind::Child { id, pid: Some(info.pid), name: Some(info.name.clone()) };
                    st.open(&self.shared, now, started.stream, kind, None, Some(ticket));
                    st.spawn_answer(reply, Ok(info));
                }
                Err(e) => {
                    st.host.spawn_failed(now, ticket);
                    st.spawn_answer(reply, Err(SpawnError::Io(e)));
                }
            }
        }
        progress
    }

    fn read(&mut self, st: &mut State, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut ids = std::mem::take(&mut self.streams);
        ids.clear();
        ids.extend(st.streams.iter().filter(|(_, s)| s.reading).map(|(id, _)| *id));
        let mut progress = false;
        for &id in &ids {
            if !st.host.may_read(id) {
                continue; // a paused logger: its writers block until the parent queue drains
            }
            // Only a stream the reactor said is readable (or one left with bytes last round) is
            // read: an idle stream costs no syscall, not even a read that would block.
            let Some(s) = st.streams.get_mut(&id) else { continue };
            if !std::mem::take(&mut s.more) && s.fd.poll_readable(cx).is_pending() {
                continue;
            }
            for n in 0..=READS_PER_ROUND {
                let Some(s) = st.streams.get_mut(&id).filter(|s| s.reading) else { break };
                if n == READS_PER_ROUND || !st.host.may_read(id) {
                    s.more = true; // the budget ran out (or loggers paused): look again first
                    break;
                }
                match s.fd.poll_read(cx, &mut self.buf) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) => {
                        s.reading = false;
                        st.host.eof(now, id);
                    }
                    Poll::Ready(Ok(n)) => {
                        st.host.received(now, id, &self.buf[..n]);
                        let short = n < self.buf.len();
                        if !short && n < READ_CHUNK {
                            self.buf.resize(2 * n, 0);
                        }
                        // A short read drained the socket: wait for the reactor rather than
                        // spend a read on `WouldBlock` (anything arriving meanwhile is reported
                        // as soon as interest is registered).
                        let Some(s) = st.streams.get_mut(&id) else { break };
                        if short && s.fd.poll_readable(cx).is_pending() {
                            progress = true;
                            break;
                        }
                    }
                    Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Poll::Ready(Err(_)) => {
                        s.reading = false;
                        st.host.read_failed(now, id);
                    }
                }
                progress = true;
            }
            st.carry_out(&self.shared, true);
        }
        self.streams = ids;
        progress
    }

    fn write(&mut self, st: &mut State, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut ids = std::mem::take(&mut self.streams);
        ids.clear();
        ids.extend(
            st.streams
                .iter()
                .filter(|(id, s)| {
                    matches!(s.kind, Kind::Framed) && st.host.write_queue(**id).is_some_and(|q| !q.is_empty())
                })
                .map(|(id, _)| *id),
        );
        let mut progress = false;
        for &id in &ids {
            loop {
                let written = {
                    let (Some(s), Some(queue)) = (st.streams.get(&id), st.host.write_queue(id)) else {
                        break;
                    };
                    if queue.is_empty() {
                        break;
                    }
                    with_io_slices(queue, SEGMENTS_PER_WRITE, |slices| s.fd.poll_write_vectored(cx, slices))
                };
                match written {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) => st.host.wrote(now, id, n),
                    Poll::Ready(Err(_)) => st.host.write_failed(now, id),
                }
                progress = true;
            }
        }
        self.streams = ids;
        progress
    }

    /// Reaps every child whose pidfd is readable (or, without pidfd, that has exited): first
    /// SIGTERM to what else is in its process group (the zombie still holds the group's id),
    /// then the status, then the host.
    fn reap(&mut self, st: &mut State, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        pids.extend(st.children.keys().copied());
        let mut progress = false;
        for &pid in &pids {
            let Some(c) = st.children.get_mut(&pid) else { continue };
            let exited = match &c.pidfd {
                Some(fd) => fd.poll_readable(cx).is_ready(),
                None => true,
            };
            if !exited {
                continue;
            }
            if c.pidfd.is_some() {
                Groups::terminate(pid);
            }
            let status = match c.child.try_wait() {
                Ok(Some(status)) => convert(status),
                Ok(None) => continue,
                Err(e) => {
                    st.note(Note::Warn(format!("cannot wait for child {pid}: {e}")));
                    ExitStatus::Code(-1)
                }
            };
            st.reaped(now, pid, status);
            progress = true;
        }
        self.pids = pids;
        progress
    }

    /// The root's SIGINT/SIGTERM: the first begins a graceful shutdown, the second forces it.
    fn interrupted(&mut self, st: &mut State, cx: &mut Context<'_>, now: Instant) -> bool {
        let Some(fd) = &self.interrupts else { return false };
        if fd.poll_readable(cx).is_pending() {
            return false;
        }
        let mut progress = false;
        let mut buf = [0u8; 16];
        // Read until `Pending`, which registers interest again: a read that stopped on anything
        // else would leave the next SIGTERM unheard until some other event polled this.
        let mut gone = false;
        loop {
            let n = match fd.poll_read(cx, &mut buf) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    gone = true;
                    break;
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => {
                    st.note(Note::Warn(format!("cannot read SIGINT/SIGTERM any more: {e}")));
                    gone = true;
                    break;
                }
            };
            for _ in 0..n {
                st.interrupts += 1;
                if st.interrupts == 1 {
                    st.note(Note::Warn("interrupted: shutting the tree down (again to force)".into()));
                    st.begin_shutdown(now);
                } else {
                    st.note(Note::Warn("interrupted again: forcing the shutdown".into()));
                    st.host.force_shutdown(now);
                }
            }
            progress = true;
        }
        if gone {
            self.interrupts = None;
        }
        progress
    }

    /// Keeps the timer at or before the earliest deadline (the host's, a process group to look
    /// at, a child to poll without pidfd), and fires what is due. The timer moves only when
    /// that deadline comes *earlier* than where the timer is: a deadline that moved later — a
    /// call's timeout moves on with every call sent or answered — or went away leaves the
    /// timer where it is, so it may fire early, once: the host fires only what is due, and the
    /// next round arms the timer at the real deadline. So a stream of calls costs no timer
    /// change per call (async-io's cost two reactor timer operations and a notification each).
    fn timer(&mut self, st: &mut State, cx: &mut Context<'_>) -> bool {
        let now = std::time::Instant::now();
        let poll_children = st.children.values().any(|c| c.pidfd.is_none()).then(|| now + POLL_WITHOUT_PIDFD);
        let groups = st.groups.tick(now);
        let at = [st.deadline.map(clock::to_std), groups, poll_children].into_iter().flatten().min();
        if let Some(at) = at.filter(|at| self.timer_at.is_none_or(|armed| *at < armed)) {
            self.timer_at = Some(at);
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(self.shared.runtime.timer(at)),
            }
        }
        let (Some(_), Some(timer)) = (self.timer_at, &mut self.timer) else { return false };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer_at = None;
        st.host.handle_timeout(clock::now());
        true
    }
}

fn convert(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signaled(signal),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// Runs the driver on the current thread with `shared`'s runtime, returning what it reports.
pub(crate) fn run(shared: Arc<Shared>, setup: Setup) -> Option<Finished> {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let out = slot.clone();
    let runtime = shared.runtime.clone();
    let context = shared.clone();
    let task = async move {
        let finished = drive(shared, setup).await;
        if let Ok(mut out) = out.lock() {
            *out = Some(finished);
        }
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(Box::pin(task) as Pin<Box<dyn Future<Output = ()> + Send>>)
    }));
    let finished = slot.lock().ok().and_then(|mut s| s.take());
    if finished.is_none() {
        // The driver never ran to its end (the runtime could not be built, or it panicked):
        // nothing will answer this context's calls and spawns, so they fail now, and later ones
        // at once, instead of waiting for ever.
        context.with(|st, _| st.io_gone(&context));
    }
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
    finished
}

/// Children the core gave up on (SIGKILLed, their exit never seen: a process stuck in the
/// kernel) are still ours to reap once they do die; dropped unwaited, each would stay a zombie for
/// as long as this process lives, which for a root may be long after its tree. A thread of its
/// own waits for them, so nothing here blocks on a process that may take its time.
fn wait_for_abandoned(children: VecMap<Pid, ChildProc>) {
    let left: Vec<std::process::Child> = children.into_iter().map(|(_, c)| c.child).collect();
    if left.is_empty() {
        return;
    }
    let waiting = std::thread::Builder::new().name("arbor-reaper".into()).spawn(move || {
        for mut child in left {
            let _ = child.wait();
        }
    });
    if let Err(e) = waiting {
        tracing::warn!("cannot start a thread to reap abandoned children: {e}");
    }
}
