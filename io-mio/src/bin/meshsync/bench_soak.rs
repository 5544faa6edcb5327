//! `meshsync bench soak`: one node under churn for a bounded time, sampled
//! as it goes, to show that what it holds stays flat.
//!
//! # What runs
//! Two processes, so that the node's memory and file descriptors are told
//! apart from those of the clients that churn against it.
//! - **The node process**: this program again (`meshsync bench soak-node`,
//!   a hidden subcommand), started by the soak with its stdin and stdout
//!   piped. It runs a [`Driver`] proposing a block every slot (a fresh
//!   devnet chain, one key, 1 KiB bodies, the genesis time chosen by the
//!   soak) and gossiping it to its peers, with room for every client as a
//!   peer. Once listening it prints one JSON line with its address and
//!   peer id; then it answers each `sample` line on its stdin with one
//!   JSON line of its figures, and stops at the end of its stdin.
//! - **The clients' process** (the soak itself): `clients` threads, each
//!   churning without pause. Three sessions in four are a client node of
//!   its own (a fresh identity, a real driver) that dials the node,
//!   completes the handshake, exchanges Status, Ping and Metadata, follows
//!   the blocks topic (and asks for the parents of what it cannot import
//!   yet) for 1 to 4 s, then stops with Goodbye. The fourth is a bare TCP
//!   connection that sends a few bytes of garbage or nothing and drops
//!   after up to 2 s, never finishing a handshake.
//!
//! # What is sampled
//! Every `sample` interval, from the node process: its resident memory and
//! open file descriptors (read from its own `/proc/self`), its peers,
//! inbound handshakes, sockets, bytes its driver has queued to send, the
//! bytes of the blocks its chain holds, remembered scores, gossip's seen
//! and message caches, verification work in flight and parent lookups,
//! bans, and its head slot. From the clients' process: its own resident
//! memory and file descriptors, and the sessions begun and connected. The
//! report is the table of samples, and each figure's growth from the
//! first sample after warm-up (a quarter of the run) to the last.
//!
//! # No node process left behind
//! The soak kills and reaps the node process on every way out (a guard's
//! `Drop`: an error, a panic), and ends it by closing its stdin when all
//! went well. Should the soak die without unwinding (a signal), the node
//! process reads the end of its stdin and stops by itself. A node process
//! that ends early is an error naming its exit status and the last lines
//! of its stderr (which is forwarded to the soak's, line by line).
//!
//! # Limits
//! Every wait on the node process has a deadline, and every line read from
//! it (or by it) has a length cap: [`SAMPLE_LINE_BYTES_MAX`],
//! [`COMMAND_LINE_BYTES_MAX`], [`STDERR_LINE_BYTES_MAX`].

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use meshsync_core::chain::{devnet_keys, ChainConfig, ProposerKey};
use meshsync_core::io::Notification;
use meshsync_core::peer::ConnectionLimits;
use meshsync_core::{Command as NodeCommand, Config, PeerId};
use meshsync_mio::driver::{Driver, DriverOptions, RunningDriver};
use meshsync_mio::testing::devnet_genesis;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::bench::SplitMix64;
use crate::genesis_files::next_second_ms;

const NETWORK_ID: u64 = 1;
/// The node's slot: a block every second, gossiped to every client.
const SLOT_MS: u64 = 1_000;
/// The longest a client waits for the handshake before giving up on a session.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(10);
/// The longest any query of a driver may take.
const QUERY_WAIT_MAX: Duration = Duration::from_secs(10);
/// The longest the node process may take to start and say where it
/// listens: a program start and a bind, on a machine the clients may
/// already be loading.
const NODE_START_WAIT_MAX: Duration = Duration::from_secs(30);
/// The longest the node process may take to answer `sample`: its own
/// query of its driver, bounded by [`QUERY_WAIT_MAX`], and one line.
const SAMPLE_WAIT_MAX: Duration = Duration::from_secs(QUERY_WAIT_MAX.as_secs() + 5);
/// The longest the node process may take to stop its driver and exit once
/// its stdin is closed; past it, it is killed.
const NODE_EXIT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Time between two looks at whether the node process has exited.
const NODE_EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The longest line the soak reads from the node process's stdout, its
/// newline included: a sample is about 300 bytes of JSON, the line that
/// says where it listens about 100.
const SAMPLE_LINE_BYTES_MAX: usize = 4 * 1024;
/// The longest line the node process reads on its stdin, its newline
/// included: the one command is `sample`.
const COMMAND_LINE_BYTES_MAX: usize = 64;
/// The longest line of the node process's stderr forwarded and kept as
/// one; a longer one is cut into pieces of this size.
const STDERR_LINE_BYTES_MAX: usize = 1024;
/// Lines of the node process's stderr kept, the last ones, to say why it
/// ended.
const STDERR_TAIL_LINES_MAX: usize = 10;

const _: () = assert!(COMMAND_LINE_BYTES_MAX > b"sample\n".len());

/// What `meshsync bench soak` runs.
#[derive(Clone, Copy, Debug)]
pub struct SoakOptions {
    /// Client threads churning at once.
    pub clients: usize,
    /// How long the soak lasts.
    pub duration: Duration,
    /// Time between samples.
    pub sample: Duration,
}

/// What the node process (`meshsync bench soak-node`) runs.
#[derive(Clone, Copy, Debug)]
pub struct NodeOptions {
    /// Where it listens (port 0: a free one, which it reports).
    pub listen: SocketAddr,
    /// Start of slot 0 of the devnet chain, which the clients share.
    pub genesis_time_ms: u64,
    /// Clients of the soak: the node makes room for every one as a peer.
    pub clients: usize,
}

/// The node process's first line on stdout: where the clients dial it.
#[derive(Debug, Serialize, Deserialize)]
struct NodeListening {
    addr: SocketAddr,
    peer_id: String,
}

/// One sample of the node, taken in its own process: the line it answers
/// `sample` with.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSample {
    /// Resident memory of the node process, MiB.
    pub node_rss_mib: f64,
    /// Open file descriptors of the node process.
    pub node_fds: u64,
    /// The node's peers.
    pub peers: u64,
    /// Its inbound handshakes in progress.
    pub handshakes: u64,
    /// Its sockets (open and lingering).
    pub sockets: u64,
    /// Bytes its driver has queued for sockets, KiB.
    pub queued_kib: u64,
    /// Encoded bytes of the blocks its chain holds in memory, KiB.
    pub chain_kib: u64,
    /// Scores it remembers (capped at `SCORES_MAX`).
    pub scores: u64,
    /// Its gossip seen cache.
    pub gossip_seen: u64,
    /// Its gossip message cache.
    pub gossip_mcache: u64,
    /// Verification jobs in flight.
    pub work: u64,
    /// Parent lookups pending.
    pub lookups: u64,
    /// Peer and IP bans held.
    pub bans: u64,
    /// Its head slot.
    pub head_slot: u64,
}

/// One sample of the soak: the node process's figures and the clients'.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since the soak began.
    pub seconds: f64,
    /// What the node process reported.
    #[serde(flatten)]
    pub node: NodeSample,
    /// Resident memory of the clients' process, MiB.
    pub clients_rss_mib: f64,
    /// Open file descriptors of the clients' process.
    pub clients_fds: u64,
    /// Client sessions begun so far (handshaking nodes and bare sockets).
    pub sessions: u64,
    /// Of those, client nodes that became the node's peer.
    pub connected: u64,
}

/// What `meshsync bench soak` measured.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// The options it ran with.
    pub options: SoakOptions,
    /// The node process's id (gone by the time the report exists).
    pub node_pid: u32,
    /// Every sample, in order.
    pub samples: Vec<SoakSample>,
}

impl SoakReport {
    /// The first sample after warm-up (a quarter of the run) and the last.
    fn baseline_and_last(&self) -> Option<(&SoakSample, &SoakSample)> {
        let warm = self.options.duration.as_secs_f64() / 4.0;
        let baseline = self
            .samples
            .iter()
            .find(|sample| sample.seconds >= warm)
            .or_else(|| self.samples.first())?;
        Some((baseline, self.samples.last()?))
    }

    /// A figure at the end over the baseline's.
    fn growth_ratio(&self, figure: impl Fn(&SoakSample) -> f64) -> Option<f64> {
        let (baseline, last) = self.baseline_and_last()?;
        (figure(baseline) > 0.0).then(|| figure(last) / figure(baseline))
    }

    /// The node process's resident memory at the end over the baseline's:
    /// the figure a leak in the node shows in.
    pub fn node_rss_growth_ratio(&self) -> Option<f64> {
        self.growth_ratio(|sample| sample.node.node_rss_mib)
    }

    /// The clients' process's resident memory at the end over the baseline's.
    pub fn clients_rss_growth_ratio(&self) -> Option<f64> {
        self.growth_ratio(|sample| sample.clients_rss_mib)
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let (baseline, last) = match self.baseline_and_last() {
            Some((baseline, last)) => (Some(*baseline), Some(*last)),
            None => (None, None),
        };
        let samples = &self.samples;
        serde_json::json!({
            "clients": self.options.clients,
            "duration_seconds": self.options.duration.as_secs_f64(),
            "sample_seconds": self.options.sample.as_secs_f64(),
            "node_pid": self.node_pid,
            "samples": samples,
            "baseline": baseline,
            "last": last,
            "node_rss_growth_ratio": self.node_rss_growth_ratio(),
            "clients_rss_growth_ratio": self.clients_rss_growth_ratio(),
            "node_rss_mib_max": samples.iter().map(|s| s.node.node_rss_mib).reduce(f64::max),
            "node_fds_max": samples.iter().map(|s| s.node.node_fds).max(),
            "clients_rss_mib_max": samples.iter().map(|s| s.clients_rss_mib).reduce(f64::max),
            "clients_fds_max": samples.iter().map(|s| s.clients_fds).max(),
        })
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} clients churning for {:?}, a sample every {:?}; the node in process {}, \
             the clients in this one",
            self.options.clients, self.options.duration, self.options.sample, self.node_pid
        )?;
        writeln!(
            f,
            "{:>6} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>4} {:>7} {:>4} {:>5} {:>8} {:>9}",
            "t(s)", "node MiB", "node fds", "cli MiB", "cli fds", "peers", "hshk", "sockets",
            "que KiB", "chn KiB", "scores", "seen", "mcache", "work", "lookups", "bans", "head",
            "sessions", "connected"
        )?;
        for s in &self.samples {
            let n = &s.node;
            writeln!(
                f,
                "{:>6.0} {:>8.1} {:>8} {:>8.1} {:>8} {:>5} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>4} {:>7} {:>4} {:>5} {:>8} {:>9}",
                s.seconds, n.node_rss_mib, n.node_fds, s.clients_rss_mib, s.clients_fds, n.peers,
                n.handshakes, n.sockets, n.queued_kib, n.chain_kib, n.scores, n.gossip_seen,
                n.gossip_mcache, n.work, n.lookups, n.bans, n.head_slot, s.sessions, s.connected
            )?;
        }
        if let Some((baseline, last)) = self.baseline_and_last() {
            write!(
                f,
                "from {:.0} s to {:.0} s: node rss {:.1} -> {:.1} MiB ({:.2}x), node fds {} -> {}, \
                 clients rss {:.1} -> {:.1} MiB ({:.2}x), clients fds {} -> {}, scores {} -> {}, \
                 seen {} -> {}",
                baseline.seconds,
                last.seconds,
                baseline.node.node_rss_mib,
                last.node.node_rss_mib,
                self.node_rss_growth_ratio().unwrap_or(f64::NAN),
                baseline.node.node_fds,
                last.node.node_fds,
                baseline.clients_rss_mib,
                last.clients_rss_mib,
                self.clients_rss_growth_ratio().unwrap_or(f64::NAN),
                baseline.clients_fds,
                last.clients_fds,
                baseline.node.scores,
                last.node.scores,
                baseline.node.gossip_seen,
                last.node.gossip_seen
            )?;
        }
        Ok(())
    }
}

/// Counts the clients share with the sampler.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    connected: AtomicU64,
}

/// Runs the soak and returns its samples.
pub fn soak(options: SoakOptions) -> Result<SoakReport, String> {
    if options.clients == 0 || options.sample.is_zero() || options.duration < options.sample {
        return Err("--clients must be at least 1 and --duration at least --sample".to_string());
    }
    // Every client session is a node of its own, and each would log its
    // start (no data directory) and its end: thousands of lines that say
    // nothing about the node under test. Errors still show.
    log::set_max_level(log::LevelFilter::Error);
    let genesis_time_ms = next_second_ms(SystemTime::now());
    let chain = devnet_chain(genesis_time_ms)?;
    let (mut node, target) = NodeProcess::spawn(&NodeOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        genesis_time_ms,
        clients: options.clients,
    })?;
    let node_pid = node.child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::with_capacity(options.clients);
    let spawned = (0..options.clients).try_for_each(|index| {
        let (stop, tally, chain) = (Arc::clone(&stop), Arc::clone(&tally), chain.clone());
        let client = std::thread::Builder::new()
            .name(format!("soak-client-{index}"))
            .spawn(move || churn(index as u64, target, &chain, &stop, &tally))
            .map_err(|error| format!("client thread: {error}"))?;
        clients.push(client);
        Ok(())
    });
    let samples = spawned.and_then(|()| sample_until_end(&mut node, &options, &tally));
    // The clients stop on every way out, the node process after them:
    // `finish` below, or its guard's `Drop` on an error.
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let samples = samples?;
    node.finish()?;
    Ok(SoakReport {
        options,
        node_pid,
        samples,
    })
}

/// Samples the node process and this one every `options.sample` until
/// `options.duration` has passed.
fn sample_until_end(
    node: &mut NodeProcess,
    options: &SoakOptions,
    tally: &Tally,
) -> Result<Vec<SoakSample>, String> {
    let start = StdInstant::now();
    let mut samples = Vec::new();
    let mut next = start + options.sample;
    while next <= start + options.duration {
        std::thread::sleep(next.saturating_duration_since(StdInstant::now()));
        let node_sample = node.sample()?;
        samples.push(SoakSample {
            seconds: start.elapsed().as_secs_f64(),
            node: node_sample,
            clients_rss_mib: rss_mib(),
            clients_fds: open_fds(),
            sessions: tally.sessions.load(Ordering::Relaxed),
            connected: tally.connected.load(Ordering::Relaxed),
        });
        next += options.sample;
    }
    Ok(samples)
}

/// The devnet chain every process of the soak follows: one proposer, a
/// block of 1 KiB every slot. Without the proposer's key: only the node
/// holds it.
fn devnet_chain(genesis_time_ms: u64) -> Result<ChainConfig, String> {
    let genesis = devnet_genesis(NETWORK_ID, 1, SLOT_MS, genesis_time_ms)
        .map_err(|error| format!("genesis: {error}"))?;
    Ok(ChainConfig {
        genesis: Arc::new(genesis),
        stored: Arc::from(Vec::new()),
        history_anchor: None,
        proposer_keys: Vec::new(),
        signed_slots: Vec::new(),
        body_bytes: 1024,
        follow_gossip: true,
    })
}

/// A driver with a fresh identity, with one worker (the node and every
/// client alike: the machine's cores are shared by all of them).
fn bind(addr: SocketAddr, config: Config) -> Result<Driver, meshsync_mio::StartError> {
    Driver::bind_with(
        addr,
        config,
        meshsync_mio::generate_identity(),
        meshsync_mio::os_seed(),
        &DriverOptions {
            workers: 1,
            ..DriverOptions::default()
        },
    )
}

/// A client's driver, on an ephemeral loopback port.
fn bind_loopback(config: Config) -> Result<Driver, meshsync_mio::StartError> {
    bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config)
}

/// The node process, seen from the soak: its pipes, and the guard that
/// kills and reaps it when dropped.
struct NodeProcess {
    child: Child,
    /// `None` once closed: the end of its stdin asks the node process to stop.
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line, from a reader thread (at most
    /// [`SAMPLE_LINE_BYTES_MAX`] each); disconnected at its end.
    lines: Receiver<Result<String, String>>,
    /// The thread forwarding its stderr, which returns the last lines.
    stderr: Option<JoinHandle<VecDeque<String>>>,
}

impl NodeProcess {
    /// Starts `meshsync bench soak-node`, waits until it listens, and
    /// returns it with where the clients dial it.
    fn spawn(options: &NodeOptions) -> Result<(Self, (SocketAddr, PeerId)), String> {
        let program = std::env::current_exe()
            .map_err(|error| format!("the node process: cannot find this program: {error}"))?;
        let mut child = Command::new(&program)
            .args(["bench", "soak-node", "--listen"])
            .arg(options.listen.to_string())
            .arg("--genesis-time-ms")
            .arg(options.genesis_time_ms.to_string())
            .arg("--clients")
            .arg(options.clients.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                format!(
                    "the node process: cannot start {}: {error}",
                    program.display()
                )
            })?;
        // All three were piped just above.
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // One line at a time: the node process writes one per `sample` asked.
        let (sender, lines) = crossbeam_channel::bounded(1);
        // The guard exists before anything else can fail: from here on,
        // an error kills the child.
        let mut node = NodeProcess {
            child,
            stdin: Some(stdin),
            lines,
            stderr: None,
        };
        node.stderr = Some(
            std::thread::Builder::new()
                .name("soak-node-stderr".to_string())
                .spawn(move || forward_stderr(stderr))
                .map_err(|error| format!("the node process: stderr thread: {error}"))?,
        );
        std::thread::Builder::new()
            .name("soak-node-stdout".to_string())
            .spawn(move || read_lines(stdout, &sender))
            .map_err(|error| format!("the node process: stdout thread: {error}"))?;
        let line = node.next_line(NODE_START_WAIT_MAX, "starting")?;
        let listening: NodeListening = serde_json::from_str(&line).map_err(|error| {
            format!("the node process said {line:?} instead of where it listens: {error}")
        })?;
        let peer = listening.peer_id.parse().map_err(|error| {
            format!(
                "the node process named a peer id {:?} that does not parse: {error}",
                listening.peer_id
            )
        })?;
        Ok((node, (listening.addr, peer)))
    }

    /// Asks the node process for a sample and reads it.
    fn sample(&mut self) -> Result<NodeSample, String> {
        // `stdin` is closed only by `finish`, which consumes the guard, and
        // on the way to an error, after which no sample is asked.
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        if stdin
            .write_all(b"sample\n")
            .and_then(|()| stdin.flush())
            .is_err()
        {
            // A broken pipe: the node process has gone.
            return Err(self.ended_early("sampling"));
        }
        let line = self.next_line(SAMPLE_WAIT_MAX, "sampling")?;
        serde_json::from_str(&line).map_err(|error| {
            format!("the node process answered {line:?} instead of a sample: {error}")
        })
    }

    /// Closes the node process's stdin, which stops it, and checks it
    /// exited well.
    fn finish(mut self) -> Result<(), String> {
        let status = self.wait_exit()?;
        if status.success() {
            return Ok(());
        }
        Err(format!(
            "the node process failed as it stopped ({status}){}",
            self.stderr_tail()
        ))
    }

    /// The next line of the node process's stdout, within `wait_max`.
    fn next_line(&mut self, wait_max: Duration, doing: &str) -> Result<String, String> {
        match self.lines.recv_timeout(wait_max) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(error)) => Err(format!("the node process, {doing}: {error}")),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the node process did not answer within {wait_max:?} while {doing}"
            )),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended_early(doing)),
        }
    }

    /// Why the node process is gone: how it exited and its last words.
    fn ended_early(&mut self, doing: &str) -> String {
        let status = match self.wait_exit() {
            Ok(status) => status.to_string(),
            Err(error) => error,
        };
        format!(
            "the node process ended while {doing} ({status}){}",
            self.stderr_tail()
        )
    }

    /// Closes its stdin and waits for it to exit, killing it past
    /// [`NODE_EXIT_WAIT_MAX`].
    fn wait_exit(&mut self) -> Result<ExitStatus, String> {
        self.stdin = None;
        let deadline = StdInstant::now() + NODE_EXIT_WAIT_MAX;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if StdInstant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "it did not exit within {NODE_EXIT_WAIT_MAX:?} of the end of its stdin: killed"
                    ));
                }
                Ok(None) => std::thread::sleep(NODE_EXIT_POLL_INTERVAL),
                Err(error) => return Err(format!("it cannot be waited for: {error}")),
            }
        }
    }

    /// The last lines of its stderr, to end an error message with. Called
    /// once it has exited: its stderr closed with it, so the thread has
    /// returned or is about to.
    fn stderr_tail(&mut self) -> String {
        match self.stderr.take().map(JoinHandle::join) {
            Some(Ok(tail)) if !tail.is_empty() => {
                let lines: Vec<String> = tail.into_iter().collect();
                format!("; the last of its stderr:\n{}", lines.join("\n"))
            }
            _ => String::new(),
        }
    }
}

impl Drop for NodeProcess {
    /// Whichever way the soak ends (an error, a panic), no node process
    /// outlives it. After `finish` the child is already reaped, and both
    /// calls do nothing.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the node process's stdout as lines until its end, or until the
/// soak stops listening, or a line breaks the bounds (sent as the last item).
fn read_lines(stdout: ChildStdout, lines: &Sender<Result<String, String>>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let line = match read_line_bounded(&mut reader, SAMPLE_LINE_BYTES_MAX) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => return,
            Err(error) => Err(error),
        };
        let last = line.is_err();
        if lines.send(line).is_err() || last {
            return;
        }
    }
}

/// Forwards the node process's stderr to ours, line by line, and returns
/// its last [`STDERR_TAIL_LINES_MAX`] lines when it closes.
fn forward_stderr(stderr: ChildStderr) -> VecDeque<String> {
    let mut reader = BufReader::new(stderr);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES_MAX);
    let mut line = Vec::with_capacity(STDERR_LINE_BYTES_MAX);
    loop {
        line.clear();
        match (&mut reader)
            .take(STDERR_LINE_BYTES_MAX as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return tail,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        eprintln!("soak node: {text}");
        if tail.len() == STDERR_TAIL_LINES_MAX {
            tail.pop_front();
        }
        tail.push_back(text);
    }
}

/// One line of at most `bytes_max` bytes, its newline included, without
/// that newline; `None` at the end of the input.
fn read_line_bounded(input: &mut impl BufRead, bytes_max: usize) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let read = input
        .take(bytes_max as u64)
        .read_until(b'\n', &mut line)
        .map_err(|error| format!("cannot read: {error}"))?;
    if read == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(format!(
            "a line longer than {bytes_max} bytes, or cut short by the end of input"
        ));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| "a line that is not UTF-8".to_string())
}

/// `meshsync bench soak-node`: the node of the soak, in a process of its
/// own. Says where it listens, answers each `sample` on stdin with one
/// JSON line, and stops at the end of stdin.
pub fn soak_node(options: &NodeOptions) -> Result<(), String> {
    // As in the soak: the node's warnings about every client that leaves
    // would drown what matters. Errors still show.
    log::set_max_level(log::LevelFilter::Error);
    let chain = devnet_chain(options.genesis_time_ms)?;
    let mut config = Config::new(NETWORK_ID);
    config.chain = ChainConfig {
        proposer_keys: devnet_keys(NETWORK_ID, 1)
            .into_iter()
            .map(|key| ProposerKey(Arc::new(key)))
            .collect(),
        ..chain
    };
    let peers_max = options.clients.saturating_add(50);
    config.peer.limits = ConnectionLimits {
        inbound_peers_max: peers_max,
        ..ConnectionLimits::for_peers_max(peers_max)
    };
    let node = bind(options.listen, config)
        .map_err(|error| format!("the node: {error}"))?
        .spawn("soak-node")
        .map_err(|error| format!("the node: {error}"))?;
    let mut stdout = std::io::stdout().lock();
    let listening = NodeListening {
        addr: node.local_addr(),
        peer_id: node.peer_id().to_string(),
    };
    let served = write_json_line(&mut stdout, &listening)
        .and_then(|()| serve_samples(&node, &mut std::io::stdin().lock(), &mut stdout));
    let stopped = node.stop().map_err(|error| format!("the node: {error}"));
    served.and(stopped)
}

/// Answers each `sample` line of `input` with one JSON line on `output`,
/// until the end of `input`.
fn serve_samples(
    node: &RunningDriver,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<(), String> {
    loop {
        match read_line_bounded(input, COMMAND_LINE_BYTES_MAX)
            .map_err(|error| format!("stdin: {error}"))?
            .as_deref()
        {
            None => return Ok(()),
            Some("sample") => write_json_line(output, &node_sample(node)?)?,
            Some(other) => return Err(format!("stdin: {other:?} is not a command")),
        }
    }
}

fn write_json_line(output: &mut impl Write, value: &impl Serialize) -> Result<(), String> {
    let line = serde_json::to_string(value).map_err(|error| format!("stdout: {error}"))?;
    writeln!(output, "{line}")
        .and_then(|()| output.flush())
        .map_err(|error| format!("stdout: {error}"))
}

/// The node's figures from its own thread, and this process's memory and
/// file descriptors.
fn node_sample(node: &RunningDriver) -> Result<NodeSample, String> {
    let mut sample = node
        .handle()
        .query(
            |driver: &Driver| {
                let node = driver.node();
                let manager = node.peer_manager();
                NodeSample {
                    peers: node.peer_count() as u64,
                    handshakes: node.inbound_handshakes() as u64,
                    sockets: driver.connection_count() as u64,
                    queued_kib: driver.send_queued_bytes() as u64 / 1024,
                    chain_kib: node.chain().bytes() as u64 / 1024,
                    scores: manager.remembered_scores() as u64,
                    gossip_seen: node.gossip().seen_len() as u64,
                    gossip_mcache: node.gossip().mcache_len() as u64,
                    work: node.work_in_flight() as u64,
                    lookups: node.lookups_pending() as u64,
                    bans: (manager.banned_peer_count() + manager.banned_ip_count()) as u64,
                    head_slot: node.chain().head().slot,
                    ..NodeSample::default()
                }
            },
            QUERY_WAIT_MAX,
        )
        .map_err(|error| format!("the node did not answer: {error}"))?;
    sample.node_rss_mib = rss_mib();
    sample.node_fds = open_fds();
    Ok(sample)
}

/// One client thread: sessions one after another until `stop`.
fn churn(
    index: u64,
    target: (SocketAddr, PeerId),
    chain: &ChainConfig,
    stop: &AtomicBool,
    tally: &Tally,
) {
    let mut rng = SplitMix64(0x50a6 ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    while !stop.load(Ordering::Relaxed) {
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        if rng.next_u64() % 4 == 3 {
            bare_socket(target.0, &mut rng);
        } else if client_session(target, chain, &mut rng) {
            tally.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A TCP connection that sends garbage or nothing and drops within 2 s.
fn bare_socket(addr: SocketAddr, rng: &mut SplitMix64) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let garbage = (rng.next_u64() % 64) as usize;
    let mut bytes = vec![0u8; garbage];
    rng.fill_bytes(&mut bytes);
    let _ = stream.write_all(&bytes);
    std::thread::sleep(Duration::from_millis(rng.next_u64() % 2_000));
}

/// A client node's session: dial, handshake, 1 to 4 s as a peer, Goodbye.
/// Returns whether it became the node's peer.
fn client_session(
    (addr, peer): (SocketAddr, PeerId),
    chain: &ChainConfig,
    rng: &mut SplitMix64,
) -> bool {
    let mut config = Config::new(NETWORK_ID);
    config.chain = chain.clone();
    // With one peer, range sync waits 30 s before it starts: a session is
    // shorter, so clients never sync the whole chain (the node serves
    // Status, Ping, Metadata and the parents of gossiped blocks).
    config.sync.peers_min = 2;
    let Ok(mut driver) = bind_loopback(config) else {
        return false;
    };
    let notifications = driver.subscribe();
    let Ok(client) = driver.spawn("soak-session") else {
        return false;
    };
    let connected = client
        .handle()
        .command(NodeCommand::Dial {
            addr,
            peer: Some(peer),
        })
        .is_ok()
        && wait_connected(&notifications, &peer);
    if connected {
        std::thread::sleep(Duration::from_millis(1_000 + rng.next_u64() % 3_000));
    }
    let _ = client.stop();
    connected
}

fn wait_connected(
    notifications: &crossbeam_channel::Receiver<Notification>,
    peer: &PeerId,
) -> bool {
    let deadline = StdInstant::now() + CONNECT_WAIT_MAX;
    loop {
        let left = deadline.saturating_duration_since(StdInstant::now());
        match notifications.recv_timeout(left) {
            Ok(Notification::PeerConnected {
                peer: connected, ..
            }) if connected == *peer => return true,
            Ok(Notification::ConnectionRefused { .. } | Notification::DialFailed { .. }) => {
                return false
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// This process's resident memory from `/proc/self/status`, MiB (0 where
/// there is no `/proc`).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        })
        .unwrap_or(0.0)
}

/// This process's open file descriptors (0 where there is no `/proc`).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64)
}
