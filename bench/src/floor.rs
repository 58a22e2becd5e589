//! The floor: what two (or three) processes on a socketpair cost with no framing, routing or
//! threads at all, measured the same way as the arbor workloads (per sample, same sizes).
//!
//! The peer is this same binary started as `floor-echo` (or `floor-relay`, which starts an echo
//! below itself and forwards), with its socket on fd 0. Its one-byte commands:
//! `p` → answers `p`; `b` + u64 length + bytes → answers `k` once all are read; `r` + u64 length
//! → answers that many bytes.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::exited::ExitWatch;
use crate::samples::emit;

const MIB: usize = 1024 * 1024;
/// The read size of the peers (the arbor driver's too).
const CHUNK: usize = 64 * 1024;

/// A peer process and our end of its socket.
struct Peer {
    child: Child,
    sock: UnixStream,
}

impl Peer {
    fn start(role: &str) -> io::Result<Peer> {
        // std's socketpair is close-on-exec; `Stdio::from` puts the peer's end on its fd 0.
        let (sock, theirs) = UnixStream::pair()?;
        let child = Command::new(std::env::current_exe()?)
            .arg(role)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()?;
        Ok(Peer { child, sock })
    }

    fn ping(&mut self) -> io::Result<()> {
        self.sock.write_all(b"p")?;
        let mut b = [0u8; 1];
        self.sock.read_exact(&mut b)
    }

    /// Closes the socket (the peer exits on EOF) and reaps the peer.
    fn stop(self) -> io::Result<()> {
        let Peer { mut child, sock } = self;
        drop(sock);
        child.wait().map(|_| ())
    }
}

/// Runs one floor round; `only_rtt` keeps to the round trips (the pinned run).
pub fn run(only_rtt: bool) -> io::Result<()> {
    let mut child = Peer::start("floor-echo")?;
    if let Some(gap) = crate::gap() {
        // bench/gaps.sh: ARBOR_BENCH_COUNT_CALLS pings, each after ARBOR_BENCH_GAP_MS idle.
        let samples = crate::after_gaps(crate::count_calls().unwrap_or(100), gap, || child.ping())?;
        emit("floor", "rtt_child_after_gap", "us", samples);
        return child.stop();
    }
    let mut relay = Peer::start("floor-relay")?;
    for (name, peer) in [("rtt_child", &mut child), ("rtt_grandchild", &mut relay)] {
        for _ in 0..50 {
            peer.ping()?;
        }
        let mut samples = Vec::with_capacity(400);
        for _ in 0..400 {
            let t = Instant::now();
            peer.ping()?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        emit("floor", name, "us", samples);
    }
    relay.stop()?;
    if !only_rtt {
        idle_rss(&child)?; // before bulk touches the peer's buffers
        pipelined(&mut child)?;
        bulk(&mut child)?;
        spawn_first_answer()?;
        shutdowns()?;
    }
    child.stop()
}

fn pipelined(peer: &mut Peer) -> io::Result<()> {
    let mut samples = Vec::new();
    let mut answers = [0u8; 100];
    for _ in 0..20 {
        let t = Instant::now();
        peer.sock.write_all(&[b'p'; 100])?;
        peer.sock.read_exact(&mut answers)?;
        samples.push(100.0 / t.elapsed().as_secs_f64());
    }
    emit("floor", "pipelined_100", "calls/s", samples);
    Ok(())
}

fn bulk(peer: &mut Peer) -> io::Result<()> {
    let arg = vec![0xa5u8; 16 * MIB];
    let mut samples = Vec::new();
    for round in 0..6 {
        let t = Instant::now();
        peer.sock.write_all(b"b")?;
        peer.sock.write_all(&(arg.len() as u64).to_le_bytes())?;
        peer.sock.write_all(&arg)?;
        let mut k = [0u8; 1];
        peer.sock.read_exact(&mut k)?;
        if round > 0 {
            samples.push(arg.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    emit("floor", "arg_16mib", "MB/s", samples);

    let mut result = vec![0u8; MIB];
    let mut samples = Vec::new();
    for round in 0..11 {
        let t = Instant::now();
        peer.sock.write_all(b"r")?;
        peer.sock.write_all(&(MIB as u64).to_le_bytes())?;
        peer.sock.read_exact(&mut result)?;
        if round > 0 {
            samples.push(MIB as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    emit("floor", "result_1mib", "MB/s", samples);
    Ok(())
}

fn idle_rss(peer: &Peer) -> io::Result<()> {
    thread::sleep(Duration::from_millis(300));
    let pid = peer.child.id();
    emit("floor", "idle_rss", "MiB", vec![crate::status_kib(pid, "VmRSS")? / 1024.0]);
    emit("floor", "idle_rss_anon", "MiB", vec![crate::status_kib(pid, "RssAnon")? / 1024.0]);
    Ok(())
}

fn spawn_first_answer() -> io::Result<()> {
    let mut samples = Vec::new();
    for round in 0..6 {
        let t = Instant::now();
        let mut peer = Peer::start("floor-echo")?;
        peer.ping()?;
        let took = t.elapsed();
        peer.stop()?;
        if round > 0 {
            samples.push(took.as_secs_f64() * 1000.0);
        }
    }
    emit("floor", "spawn_first_answer", "ms", samples);
    Ok(())
}

/// The floor of a shutdown: close every peer's socket, time until all have exited.
fn shutdowns() -> io::Result<()> {
    for (n, times) in [(1, 3), (10, 2), (50, 1)] {
        let mut samples = Vec::new();
        for _ in 0..times {
            let mut peers = (0..n).map(|_| Peer::start("floor-echo")).collect::<io::Result<Vec<_>>>()?;
            for p in &mut peers {
                p.ping()?;
            }
            let pids: Vec<u32> = peers.iter().map(|p| p.child.id()).collect();
            let watch = ExitWatch::start(&pids)?;
            let t = Instant::now();
            let mut children = Vec::with_capacity(n);
            for p in peers {
                children.push(p.child);
                drop(p.sock);
            }
            if let Some(last) = watch.last_exit() {
                samples.push(last.saturating_duration_since(t).as_secs_f64() * 1000.0);
            }
            for mut c in children {
                c.wait()?;
            }
        }
        emit("floor", &format!("shutdown_{n}_exited"), "ms", samples);
    }
    Ok(())
}

/// The socket on fd 0, as a peer process sees it.
fn our_socket() -> io::Result<UnixStream> {
    Ok(UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?))
}

/// `floor-echo`: answers commands until EOF.
pub fn echo() -> io::Result<()> {
    let mut sock = our_socket()?;
    // Allocated on first use, so the idle peer's RSS is the bare process's.
    let mut buf = Vec::new();
    let mut blob = Vec::new();
    let mut cmd = [0u8; 1];
    loop {
        match sock.read(&mut cmd) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        match cmd[0] {
            b'p' => sock.write_all(b"p")?,
            b'b' => {
                let mut left = read_len(&mut sock)?;
                buf.resize(CHUNK, 0);
                while left > 0 {
                    let want = left.min(CHUNK);
                    let n = sock.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(());
                    }
                    left -= n;
                }
                sock.write_all(b"k")?;
            }
            b'r' => {
                let mut left = read_len(&mut sock)?;
                blob.resize(MIB, 0xa5);
                while left > 0 {
                    let n = left.min(blob.len());
                    sock.write_all(&blob[..n])?;
                    left -= n;
                }
            }
            other => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("command {other}"))),
        }
    }
}

/// `floor-relay`: starts an echo below itself and forwards pings to it.
pub fn relay() -> io::Result<()> {
    let mut up = our_socket()?;
    let mut down = Peer::start("floor-echo")?;
    let mut b = [0u8; 1];
    loop {
        match up.read(&mut b) {
            Ok(0) => return down.stop(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        down.sock.write_all(&b)?;
        down.sock.read_exact(&mut b)?;
        up.write_all(&b)?;
    }
}

fn read_len(sock: &mut UnixStream) -> io::Result<usize> {
    let mut len = [0u8; 8];
    sock.read_exact(&mut len)?;
    usize::try_from(u64::from_le_bytes(len)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
