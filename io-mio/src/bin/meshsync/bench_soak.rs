//! `meshsync bench soak`: one node under churn for a bounded time, sampled
//! as it goes, to show that what it holds stays flat.
//!
//! # What runs
//! - **The node**: a [`Driver`] proposing a block every slot (a fresh devnet
//!   chain, one key, 1 KiB bodies) and gossiping it to its peers, with room
//!   for every client as a peer.
//! - **The clients**: `clients` threads, each churning without pause. Three
//!   sessions in four are a client node of its own (a fresh identity, a
//!   real driver) that dials the node, completes the handshake, exchanges
//!   Status, Ping and Metadata, follows the blocks topic (and asks for the
//!   parents of what it cannot import yet) for 1 to 4 s, then stops with
//!   Goodbye. The fourth is a bare TCP connection that sends a few bytes
//!   of garbage or nothing and drops after up to 2 s, never finishing a
//!   handshake.
//!
//! # What is sampled
//! Every `sample` interval: this process's resident memory and open file
//! descriptors (clients included: their number is constant, so a leak
//! anywhere shows as growth), and from the node's own thread its peers,
//! inbound handshakes, sockets, bytes its driver has queued to send, the
//! bytes of the blocks its chain holds, remembered scores, gossip's seen and
//! message caches, verification work in flight and parent lookups, bans,
//! and its head slot. The report is the table of samples, and each
//! figure's growth from the first sample after warm-up (a quarter of the
//! run) to the last.

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use meshsync_core::chain::{devnet_keys, ChainConfig, ProposerKey};
use meshsync_core::io::Notification;
use meshsync_core::peer::ConnectionLimits;
use meshsync_core::{Command, Config, PeerId};
use meshsync_mio::driver::{Driver, DriverOptions, RunningDriver};
use meshsync_mio::testing::devnet_genesis;
use rand_core::RngCore;
use serde::Serialize;

use crate::bench::SplitMix64;
use crate::genesis_files::next_second_ms;

const NETWORK_ID: u64 = 1;
/// The node's slot: a block every second, gossiped to every client.
const SLOT_MS: u64 = 1_000;
/// The longest a client waits for the handshake before giving up on a session.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(10);
/// The longest any query of a driver may take.
const QUERY_WAIT_MAX: Duration = Duration::from_secs(10);

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

/// One sample of the node and this process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since the soak began.
    pub seconds: f64,
    /// Resident memory of the process, MiB.
    pub rss_mib: f64,
    /// Open file descriptors of the process.
    pub fds: u64,
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

    /// Resident memory at the end over the baseline's.
    pub fn rss_growth_ratio(&self) -> Option<f64> {
        let (baseline, last) = self.baseline_and_last()?;
        (baseline.rss_mib > 0.0).then(|| last.rss_mib / baseline.rss_mib)
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let (baseline, last) = match self.baseline_and_last() {
            Some((baseline, last)) => (Some(*baseline), Some(*last)),
            None => (None, None),
        };
        serde_json::json!({
            "clients": self.options.clients,
            "duration_seconds": self.options.duration.as_secs_f64(),
            "sample_seconds": self.options.sample.as_secs_f64(),
            "samples": self.samples,
            "baseline": baseline,
            "last": last,
            "rss_growth_ratio": self.rss_growth_ratio(),
            "fds_max": self.samples.iter().map(|sample| sample.fds).max(),
            "rss_mib_max": self.samples.iter().map(|sample| sample.rss_mib).reduce(f64::max),
        })
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} clients churning for {:?}, a sample every {:?}",
            self.options.clients, self.options.duration, self.options.sample
        )?;
        writeln!(
            f,
            "{:>6} {:>8} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>4} {:>7} {:>4} {:>5} {:>8} {:>9}",
            "t(s)", "rss MiB", "fds", "peers", "hshk", "sockets", "que KiB", "chn KiB", "scores",
            "seen", "mcache", "work", "lookups", "bans", "head", "sessions", "connected"
        )?;
        for s in &self.samples {
            writeln!(
                f,
                "{:>6.0} {:>8.1} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>4} {:>7} {:>4} {:>5} {:>8} {:>9}",
                s.seconds, s.rss_mib, s.fds, s.peers, s.handshakes, s.sockets, s.queued_kib,
                s.chain_kib, s.scores,
                s.gossip_seen, s.gossip_mcache, s.work, s.lookups, s.bans, s.head_slot,
                s.sessions, s.connected
            )?;
        }
        if let Some((baseline, last)) = self.baseline_and_last() {
            write!(
                f,
                "from {:.0} s to {:.0} s: rss {:.1} -> {:.1} MiB ({:.2}x), fds {} -> {}, scores {} -> {}, seen {} -> {}",
                baseline.seconds,
                last.seconds,
                baseline.rss_mib,
                last.rss_mib,
                self.rss_growth_ratio().unwrap_or(f64::NAN),
                baseline.fds,
                last.fds,
                baseline.scores,
                last.scores,
                baseline.gossip_seen,
                last.gossip_seen
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
    let genesis = Arc::new(
        devnet_genesis(NETWORK_ID, 1, SLOT_MS, next_second_ms(SystemTime::now()))
            .map_err(|error| format!("genesis: {error}"))?,
    );
    let chain = ChainConfig {
        genesis: Arc::clone(&genesis),
        stored: Arc::from(Vec::new()),
        proposer_keys: Vec::new(),
        signed_slots: Vec::new(),
        body_bytes: 1024,
        follow_gossip: true,
    };
    let mut config = Config::new(NETWORK_ID);
    config.chain = ChainConfig {
        proposer_keys: devnet_keys(NETWORK_ID, 1)
            .into_iter()
            .map(|key| ProposerKey(Arc::new(key)))
            .collect(),
        ..chain.clone()
    };
    let peers_max = options.clients + 50;
    config.peer.limits = ConnectionLimits {
        inbound_peers_max: peers_max,
        ..ConnectionLimits::for_peers_max(peers_max)
    };
    let node = bind_loopback(config)
        .map_err(|error| format!("the node: {error}"))?
        .spawn("soak-node")
        .map_err(|error| format!("the node: {error}"))?;
    let target = (node.local_addr(), node.peer_id());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let (stop, tally, chain) = (Arc::clone(&stop), Arc::clone(&tally), chain.clone());
        let client = std::thread::Builder::new()
            .name(format!("soak-client-{index}"))
            .spawn(move || churn(index as u64, target, &chain, &stop, &tally))
            .map_err(|error| format!("client thread: {error}"))?;
        clients.push(client);
    }

    let start = StdInstant::now();
    let mut samples = Vec::new();
    let mut next = start + options.sample;
    while next <= start + options.duration {
        std::thread::sleep(next.saturating_duration_since(StdInstant::now()));
        samples.push(sample(&node, start, &tally)?);
        next += options.sample;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    node.stop().map_err(|error| format!("the node: {error}"))?;
    Ok(SoakReport { options, samples })
}

/// A driver with a fresh identity on an ephemeral loopback port, with
/// one worker (the node and every client alike: the machine's cores are
/// shared by all of them).
fn bind_loopback(config: Config) -> Result<Driver, meshsync_mio::StartError> {
    Driver::bind_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        config,
        meshsync_mio::generate_identity(),
        meshsync_mio::os_seed(),
        &DriverOptions {
            workers: 1,
            ..DriverOptions::default()
        },
    )
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
        .command(Command::Dial {
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

fn sample(node: &RunningDriver, start: StdInstant, tally: &Tally) -> Result<SoakSample, String> {
    let mut sample = node
        .handle()
        .query(
            |driver: &Driver| {
                let node = driver.node();
                let manager = node.peer_manager();
                SoakSample {
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
                    ..SoakSample::default()
                }
            },
            QUERY_WAIT_MAX,
        )
        .map_err(|error| format!("the node did not answer: {error}"))?;
    sample.seconds = start.elapsed().as_secs_f64();
    sample.rss_mib = rss_mib();
    sample.fds = open_fds();
    sample.sessions = tally.sessions.load(Ordering::Relaxed);
    sample.connected = tally.connected.load(Ordering::Relaxed);
    Ok(sample)
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
