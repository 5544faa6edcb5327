//! `meshsync bench handshakes` and `meshsync bench requests`: how close the
//! driver and the core get to a limit measured in the same run.
//!
//! # Handshakes
//! Both measurements run the same cycle, `count` times: A dials B (expecting
//! B's identity), the handshake completes (a handshake is done when *both*
//! sides have notified `PeerConnected`), then A says Goodbye and both sides
//! see `PeerDisconnected`, so the next cycle starts from scratch with a fresh
//! connection.
//! - In memory: two [`Node`](meshsync_core::Node)s in a [`MemoryNet`] on
//!   one thread, each one's `Action::Send` bytes handed straight to the
//!   other as `Input::BytesReceived`. No sockets, no syscalls, no threads:
//!   the limit set by the cryptography and the core.
//! - Over loopback TCP: one listening [`Driver`] and `parallel` dialling
//!   drivers, each on its own thread, coordinated through their notification
//!   channels. With `parallel > 1` several handshakes are in flight at once.
//!
//! The report is handshakes per second for each, the ratio TCP / memory,
//! and the process CPU time per connection of each (both sides' work, on
//! whichever thread it ran: see [`crate::cpu_time`]), against
//! [`CPU_PER_CONNECTION_GOAL`].
//!
//! # Requests
//! Request serving per core, everything on the calling thread:
//! - Serving: two [`Node`](meshsync_core::Node)s in a [`MemoryNet`]; node 1 serves a signed devnet
//!   chain, node 0 asks it for ranges of 64 blocks and counts the
//!   `Notification::Response`s. Node 0 holds the same chain, so it has
//!   nothing to sync: no BLS verification runs in the timed rounds. Both
//!   nodes' work is measured: the server
//!   builds, compresses and seals the blocks, the client opens, reassembles,
//!   decompresses and checks them. The quotas are the real ones, so the
//!   benchmark advances the network's virtual clock by a quota period
//!   whenever the budget of the period is spent; virtual time costs nothing,
//!   wall time is what is measured.
//! - The limit: the per-byte work the response path cannot avoid, for the
//!   same blocks in the same grouping (one response at a time): snappy
//!   compression, a Noise seal, a Noise open and snappy decompression, the
//!   two ends of a real handshake's transports on this one thread.
//! - Small requests: an application protocol whose requests the benchmark
//!   itself answers on the server's behalf (`Notification::InboundRequest`
//!   in, `Command::Respond` out): the fixed cost of a request.
//!
//! Serving and the limit take turns in rounds of one quota period (16
//! requests), each timed on its own, so a change in the machine's load
//! during the run weighs on both sides of the ratio alike. The report is
//! requests, blocks and payload bytes per second, and the ratio serving /
//! limit in blocks per second.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Select};
use meshsync_core::chain::block::SIGNED_BLOCK_OVERHEAD_BYTES;
use meshsync_core::chain::ChainConfig;
use meshsync_core::codec::{DecodeError, NoiseFrameDecoder};
use meshsync_core::io::{GoodbyeReason, Notification};
use meshsync_core::reqresp::bodies::BlocksByRangeRequest;
use meshsync_core::reqresp::limits::{
    BLOCKS_BY_RANGE_QUOTA, BLOCKS_PER_RANGE_REQUEST_MAX, BLOCK_BYTES_MAX, GLOBAL_SERVING_QUOTA,
    REQUESTS_IN_FLIGHT_PER_PEER_MAX,
};
use meshsync_core::reqresp::{snappy, Answer, Body, ProtocolId, ProtocolName, Quota};
use meshsync_core::secure::{Handshake, HandshakeStep, Hello, LocalKeys, SecureError, Transport};
use meshsync_core::testing::{address_of, MemoryNet};
use meshsync_core::{Command, Config, Identity, Input, Instant, PeerId, PROTOCOL_VERSION};
use meshsync_mio::{Driver, RunningDriver};
use rand_core::RngCore;

use crate::cpu_time::{self, Spent, Stopwatch};

/// How long one TCP cycle may take before the benchmark gives up.
pub const CYCLE_TIMEOUT: Duration = Duration::from_secs(15);
/// What one connection may cost over TCP, both sides together: dial, Noise
/// XX, identity proof, admission and Goodbye. A target, not a limit: the
/// report states it beside the measured figure.
pub const CPU_PER_CONNECTION_GOAL: Duration = Duration::from_micros(750);

/// The figures of one run.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeReport {
    /// Cycles run in each measurement.
    pub count: u64,
    /// Dialling drivers in the TCP measurement.
    pub parallel: usize,
    /// Time of the in-memory measurement.
    pub memory: Spent,
    /// Time of the TCP measurement (from the first dial to the last
    /// Goodbye seen by both sides; starting and stopping the drivers is not in it).
    pub tcp: Spent,
}

impl HandshakeReport {
    /// Handshakes per second between two nodes wired in memory.
    pub fn memory_per_second(&self) -> f64 {
        self.count as f64 / self.memory.wall.as_secs_f64()
    }

    /// Handshakes per second over loopback TCP.
    pub fn tcp_per_second(&self) -> f64 {
        self.count as f64 / self.tcp.wall.as_secs_f64()
    }

    /// Process CPU time per connection over loopback TCP: both drivers'
    /// threads and the benchmark's own loop that waits on their notifications.
    pub fn tcp_cpu_per_connection(&self) -> Option<Duration> {
        Some(self.tcp.cpu? / self.count_u32())
    }

    /// Process CPU time per connection in memory, on one thread: what the
    /// cryptography and the core cost without sockets.
    pub fn memory_cpu_per_connection(&self) -> Option<Duration> {
        Some(self.memory.cpu? / self.count_u32())
    }

    fn count_u32(&self) -> u32 {
        // Counts beyond u32 would take days; saturating keeps the figure finite.
        u32::try_from(self.count).unwrap_or(u32::MAX)
    }

    /// The report as one JSON object (`meshsync bench handshakes --json`).
    pub fn json(&self) -> serde_json::Value {
        let micros = |cpu: Option<Duration>| cpu.map(|cpu| cpu.as_secs_f64() * 1e6);
        serde_json::json!({
            "bench": "handshakes",
            "count": self.count,
            "parallel": self.parallel,
            "memory_handshakes_per_second": self.memory_per_second(),
            "tcp_handshakes_per_second": self.tcp_per_second(),
            "ratio_to_limit": self.tcp_per_second() / self.memory_per_second(),
            "cpu_us_per_connection": micros(self.tcp_cpu_per_connection()),
            "memory_cpu_us_per_connection": micros(self.memory_cpu_per_connection()),
            "cpu_us_per_connection_goal": micros(Some(CPU_PER_CONNECTION_GOAL)),
            "memory_seconds": self.memory.wall.as_secs_f64(),
            "tcp_seconds": self.tcp.wall.as_secs_f64(),
            "cpu_resolution_seconds": cpu_time::RESOLUTION.as_secs_f64(),
        })
    }
}

impl fmt::Display for HandshakeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = self.memory_per_second();
        let tcp = self.tcp_per_second();
        writeln!(
            f,
            "handshakes (connect + goodbye cycles, {} each):",
            self.count
        )?;
        writeln!(
            f,
            "  (a) in memory, one thread:          {memory:>9.0} /s  ({:.1} µs each)",
            1e6 / memory
        )?;
        writeln!(
            f,
            "  (b) loopback TCP, {} dialler(s):     {tcp:>9.0} /s  ({:.1} µs each)",
            self.parallel,
            1e6 / tcp
        )?;
        writeln!(f, "  ratio (b)/(a): {:.2}", tcp / memory)?;
        let micros = |cpu: Option<Duration>| {
            cpu.map_or("unknown".to_string(), |cpu| {
                format!("{:.0} µs", cpu.as_secs_f64() * 1e6)
            })
        };
        write!(
            f,
            "  process CPU per connection, both sides: (b) {}, (a) {}; goal for (b) <= {}",
            micros(self.tcp_cpu_per_connection()),
            micros(self.memory_cpu_per_connection()),
            micros(Some(CPU_PER_CONNECTION_GOAL)),
        )
    }
}

/// Runs both measurements.
pub fn handshakes(count: u64, parallel: usize) -> io::Result<HandshakeReport> {
    assert!(
        count > 0 && parallel > 0,
        "count and parallel must be positive"
    );
    let memory = memory_handshakes(count);
    let tcp = tcp_handshakes(count, parallel)?;
    Ok(HandshakeReport {
        count,
        parallel,
        memory,
        tcp,
    })
}

/// Seeds for benchmark nodes: reproducible, and distinct per node.
fn bench_seed(index: u8) -> [u8; 32] {
    [index; 32]
}

/// Runs `count` in-memory cycles and returns what they took.
fn memory_handshakes(count: u64) -> Spent {
    let config = || {
        let mut config = Config::new(1);
        config.listen_port = 9000;
        config
    };
    // Node `i` has `Identity::from_seed(i)` and seed `[i; 32]`, as `bench_seed` gives.
    let mut net = MemoryNet::new(vec![config(), config()]);
    let target = net.nodes[1].peer_id();
    let source = net.nodes[0].peer_id();
    // The nodes' clock is the wall clock, as under a driver. No timer input
    // is given: a cycle takes microseconds, far below any of the core's timers.
    let origin = StdInstant::now();
    let wall = || Instant::from_micros(origin.elapsed().as_micros() as u64);
    let stopwatch = Stopwatch::start();
    for _ in 0..count {
        net.now = wall();
        net.handle(
            0,
            Input::Command(Command::Dial {
                addr: address_of(1),
                peer: Some(target),
            }),
        );
        net.drain();
        let (connected, _) = take_peer_notices(&mut net);
        assert_eq!(connected, [true; 2], "in-memory handshake completes");
        net.now = wall();
        net.handle(
            0,
            Input::Command(Command::Disconnect {
                peer: target,
                reason: GoodbyeReason::ClientShutdown,
            }),
        );
        net.drain();
        let (_, disconnected) = take_peer_notices(&mut net);
        assert_eq!(disconnected, [true; 2], "in-memory goodbye completes");
        assert!(!net.nodes[1].is_connected(&source));
    }
    stopwatch.stop()
}

/// Which of the two nodes notified `PeerConnected`, and which
/// `PeerDisconnected`, since the last call (the notifications are taken, so
/// they do not pile up over the cycles). Anything else but peer chatter is
/// not part of a cycle: a bug.
fn take_peer_notices(net: &mut MemoryNet) -> ([bool; 2], [bool; 2]) {
    let (mut connected, mut disconnected) = ([false; 2], [false; 2]);
    for (index, notifications) in net.notifications.iter_mut().enumerate() {
        for notification in notifications.drain(..) {
            match notification {
                Notification::PeerConnected { .. } => connected[index] = true,
                Notification::PeerDisconnected { .. } => disconnected[index] = true,
                other if is_peer_chatter(&other) => {}
                other => panic!("in-memory benchmark: unexpected {other:?}"),
            }
        }
    }
    (connected, disconnected)
}

/// What a freshly connected peer tells us (its Status, its Metadata) while
/// the handshake cycle goes on: expected, and of no interest to it.
fn is_peer_chatter(notification: &Notification) -> bool {
    matches!(
        notification,
        Notification::PeerStatus { .. } | Notification::PeerMetadata { .. }
    )
}

/// Where one dialler is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cycle {
    Connecting {
        dialler_saw: bool,
        listener_saw: bool,
    },
    Disconnecting {
        dialler_saw: bool,
        listener_saw: bool,
    },
    Idle,
}

/// Runs `count` cycles over loopback TCP with `parallel` diallers and
/// returns what they took.
fn tcp_handshakes(count: u64, parallel: usize) -> io::Result<Spent> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut listener = Driver::bind(
        loopback,
        Config::new(1),
        Identity::from_seed(100),
        bench_seed(100),
    )?;
    let listener_events = listener.subscribe();
    let listener = listener.spawn("bench-listener")?;
    let target = listener.peer_id();
    let target_addr = listener.local_addr();

    let mut diallers: Vec<(RunningDriver, Receiver<Notification>)> = Vec::new();
    for index in 0..parallel {
        let seed = 101 + index as u64;
        let mut driver = Driver::bind(
            loopback,
            Config::new(1),
            Identity::from_seed(seed),
            bench_seed(seed as u8),
        )?;
        let events = driver.subscribe();
        diallers.push((driver.spawn(&format!("bench-dialler-{index}"))?, events));
    }
    let dial = Command::Dial {
        addr: target_addr,
        peer: Some(target),
    };
    let goodbye = Command::Disconnect {
        peer: target,
        reason: GoodbyeReason::ClientShutdown,
    };
    let broken = |what: &str| io::Error::other(format!("TCP benchmark: {what}"));
    let mut states = vec![Cycle::Idle; parallel];
    let mut started = 0u64;
    let mut finished = 0u64;
    let stopwatch = Stopwatch::start();
    for (index, (dialler, _)) in diallers.iter().enumerate() {
        if started < count {
            dialler
                .handle()
                .command(dial.clone())
                .map_err(|_| broken("dialler stopped"))?;
            states[index] = Cycle::Connecting {
                dialler_saw: false,
                listener_saw: false,
            };
            started += 1;
        }
    }
    let dialler_ids: Vec<PeerId> = diallers
        .iter()
        .map(|(driver, _)| driver.peer_id())
        .collect();
    while finished < count {
        let mut select = Select::new();
        select.recv(&listener_events);
        for (_, events) in &diallers {
            select.recv(events);
        }
        let operation = select
            .select_timeout(CYCLE_TIMEOUT)
            .map_err(|_| broken("a cycle timed out"))?;
        let source = operation.index();
        let notification = if source == 0 {
            operation.recv(&listener_events)
        } else {
            operation.recv(&diallers[source - 1].1)
        }
        .map_err(|_| broken("a driver stopped"))?;
        if is_peer_chatter(&notification) {
            continue;
        }
        // Which dialler the notification is about, and whether the dialler side said it.
        let (index, from_dialler) = if source == 0 {
            let peer = match &notification {
                Notification::PeerConnected { peer, .. }
                | Notification::PeerDisconnected { peer, .. } => *peer,
                other => return Err(broken(&format!("listener: unexpected {other:?}"))),
            };
            let index = dialler_ids
                .iter()
                .position(|id| *id == peer)
                .ok_or_else(|| broken("listener heard of an unknown peer"))?;
            (index, false)
        } else {
            (source - 1, true)
        };
        let mark = |saw_dialler: &mut bool, saw_listener: &mut bool| {
            if from_dialler {
                *saw_dialler = true;
            } else {
                *saw_listener = true;
            }
        };
        match (&mut states[index], &notification) {
            (
                Cycle::Connecting {
                    dialler_saw,
                    listener_saw,
                },
                Notification::PeerConnected { .. },
            ) => {
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    states[index] = Cycle::Disconnecting {
                        dialler_saw: false,
                        listener_saw: false,
                    };
                    diallers[index]
                        .0
                        .handle()
                        .command(goodbye.clone())
                        .map_err(|_| broken("dialler stopped"))?;
                }
            }
            (
                Cycle::Disconnecting {
                    dialler_saw,
                    listener_saw,
                },
                Notification::PeerDisconnected { .. },
            ) => {
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    finished += 1;
                    if started < count {
                        started += 1;
                        states[index] = Cycle::Connecting {
                            dialler_saw: false,
                            listener_saw: false,
                        };
                        diallers[index]
                            .0
                            .handle()
                            .command(dial.clone())
                            .map_err(|_| broken("dialler stopped"))?;
                    } else {
                        states[index] = Cycle::Idle;
                    }
                }
            }
            (state, notification) => {
                return Err(broken(&format!(
                    "dialler {index} in {state:?}: unexpected {notification:?}"
                )))
            }
        }
    }
    let spent = stopwatch.stop();
    for (dialler, _) in diallers {
        dialler.stop()?;
    }
    listener.stop()?;
    Ok(spent)
}

/// The network id of the request benchmark's nodes.
const REQUESTS_NETWORK_ID: u64 = 1;
/// The requesting node's index in the [`MemoryNet`].
const CLIENT: usize = 0;
/// The serving node's index in the [`MemoryNet`].
const SERVER: usize = 1;
/// Blocks in the served chain: 64 distinct ranges, 4 MiB of 1 KiB blocks,
/// small enough to sign in a moment at start-up.
pub const REQUESTS_CHAIN_HEAD_SLOT: u64 = 4096;
/// Blocks asked for per BlocksByRange request: the most one may ask for.
pub const BLOCKS_PER_REQUEST: u64 = BLOCKS_PER_RANGE_REQUEST_MAX;
/// Largest block the benchmark serves: a full answer (64 blocks, 4 MiB)
/// stays well inside the driver's send queue, which the core does not yet
/// pace large answers against.
pub const BENCH_BLOCK_BYTES_MAX: usize = 64 * 1024;
/// Distinct ranges in the chain; requests cycle through them.
const RANGES_IN_CHAIN: u64 = REQUESTS_CHAIN_HEAD_SLOT / BLOCKS_PER_REQUEST;
/// Requests the benchmark keeps handed to the client node: its in-flight cap
/// of 4, and as many queued behind them, so a finished request is replaced
/// from the node's own queue within the same `handle` call.
const REQUESTS_OUTSTANDING_MAX: u64 = 2 * REQUESTS_IN_FLIGHT_PER_PEER_MAX as u64;
/// BlocksByRange requests per quota period: the per-peer quota's whole
/// budget (1024 blocks per 10 s: 16 requests).
const RANGES_PER_PERIOD: u64 = BLOCKS_BY_RANGE_QUOTA.tokens_max / BLOCKS_PER_REQUEST;
/// The application protocol of the small requests.
const SMALL_PROTOCOL: &str = "bench-echo";
/// Its quota: far more than the benchmark uses in a period, so only the
/// server's global budget paces it.
const SMALL_QUOTA: Quota = Quota::new(1 << 20, BLOCKS_BY_RANGE_QUOTA.period);
/// Small requests per quota period: half the server's global serving budget,
/// which application requests draw on, whatever the previous period left.
const SMALL_PER_PERIOD: u64 = GLOBAL_SERVING_QUOTA.tokens_max / 2;
/// BlocksByRange requests per round. Serving and the limit take turns, a
/// round (one quota period) each, so that both see the same machine: on a
/// shared machine the load changes from one second to the next.
const ROUND_REQUESTS: u64 = RANGES_PER_PERIOD;
/// Periods in a row without a single response before the benchmark gives up.
const STALLED_PERIODS_MAX: u32 = 3;

const _: () = assert!(REQUESTS_CHAIN_HEAD_SLOT.is_multiple_of(BLOCKS_PER_REQUEST));
const _: () = assert!(RANGES_PER_PERIOD >= 1 && SMALL_PER_PERIOD >= 1);
const _: () = assert!(GLOBAL_SERVING_QUOTA.period.as_micros() == SMALL_QUOTA.period.as_micros());

/// What `meshsync bench requests` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    /// BlocksByRange requests of [`BLOCKS_PER_REQUEST`] blocks, served and
    /// then put through the limit.
    pub requests: u64,
    /// Small application requests.
    pub small_requests: u64,
    /// Bytes of each encoded signed block (header, signature and body).
    pub block_bytes: usize,
}

/// Why the request benchmark could not run.
#[derive(Debug)]
pub enum RequestBenchError {
    /// Blocks of this size cannot be built or served.
    BlockBytes {
        /// Asked for.
        requested: usize,
    },
    /// The two in-memory nodes did not connect.
    NotConnected,
    /// A request failed: the benchmark only sends what the server admits.
    RequestFailed(String),
    /// A response did not carry what was asked for.
    WrongResponse(String),
    /// Nothing came back for several quota periods.
    Stalled {
        /// Responses received until then.
        answered: u64,
    },
    /// The Noise transports of the limit measurement could not be set up or used.
    Secure(SecureError),
    /// The limit measurement's framing or snappy frames failed.
    Decode(String),
}

impl fmt::Display for RequestBenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBenchError::BlockBytes { requested } => write!(
                f,
                "blocks of {requested} bytes are not possible (from \
                 {SIGNED_BLOCK_OVERHEAD_BYTES}, the header and signature, to {BENCH_BLOCK_BYTES_MAX})"
            ),
            RequestBenchError::NotConnected => write!(f, "the in-memory nodes did not connect"),
            RequestBenchError::RequestFailed(what) => write!(f, "a request failed: {what}"),
            RequestBenchError::WrongResponse(what) => write!(f, "wrong response: {what}"),
            RequestBenchError::Stalled { answered } => write!(
                f,
                "no response for {STALLED_PERIODS_MAX} quota periods after {answered} responses"
            ),
            RequestBenchError::Secure(error) => write!(f, "noise: {error}"),
            RequestBenchError::Decode(what) => write!(f, "limit measurement: {what}"),
        }
    }
}

impl std::error::Error for RequestBenchError {}

impl From<SecureError> for RequestBenchError {
    fn from(error: SecureError) -> RequestBenchError {
        RequestBenchError::Secure(error)
    }
}

impl From<DecodeError> for RequestBenchError {
    fn from(error: DecodeError) -> RequestBenchError {
        RequestBenchError::Decode(error.to_string())
    }
}

/// The figures of one `meshsync bench requests` run.
#[derive(Clone, Copy, Debug)]
pub struct RequestReport {
    /// What was run.
    pub options: RequestOptions,
    /// Blocks served (and put through the limit): `requests` × 64.
    pub blocks: u64,
    /// Wall time of serving the BlocksByRange requests.
    pub serving_elapsed: Duration,
    /// Wall time of the limit measurement over the same blocks.
    pub limit_elapsed: Duration,
    /// Wall time of serving the small requests.
    pub small_elapsed: Duration,
    /// Virtual time the network was advanced by, for the quotas.
    pub virtual_elapsed: Duration,
    /// Snappy frames' bytes per block payload byte: what Noise seals and opens.
    pub compressed_fraction: f64,
}

impl RequestReport {
    /// BlocksByRange requests served per wall-clock second.
    pub fn serving_requests_per_second(&self) -> f64 {
        self.options.requests as f64 / self.serving_elapsed.as_secs_f64()
    }

    /// Blocks served per wall-clock second.
    pub fn serving_blocks_per_second(&self) -> f64 {
        self.blocks as f64 / self.serving_elapsed.as_secs_f64()
    }

    /// Blocks per second through snappy and Noise alone.
    pub fn limit_blocks_per_second(&self) -> f64 {
        self.blocks as f64 / self.limit_elapsed.as_secs_f64()
    }

    /// Small requests served per wall-clock second.
    pub fn small_requests_per_second(&self) -> f64 {
        self.options.small_requests as f64 / self.small_elapsed.as_secs_f64()
    }

    /// Megabytes (10^6 bytes) of block payload per second at `blocks_per_second`.
    fn megabytes_per_second(&self, blocks_per_second: f64) -> f64 {
        blocks_per_second * self.options.block_bytes as f64 / 1e6
    }

    /// The report as one JSON object (`meshsync bench requests --json`).
    pub fn json(&self) -> serde_json::Value {
        let serving = self.serving_blocks_per_second();
        let limit = self.limit_blocks_per_second();
        serde_json::json!({
            "bench": "requests",
            "requests": self.options.requests,
            "small_requests": self.options.small_requests,
            "block_bytes": self.options.block_bytes,
            "blocks": self.blocks,
            "serving_requests_per_second": self.serving_requests_per_second(),
            "serving_blocks_per_second": serving,
            "serving_mb_per_second": self.megabytes_per_second(serving),
            "limit_blocks_per_second": limit,
            "limit_mb_per_second": self.megabytes_per_second(limit),
            "ratio_to_limit": serving / limit,
            "small_requests_per_second": self.small_requests_per_second(),
            "compressed_fraction": self.compressed_fraction,
            "serving_seconds": self.serving_elapsed.as_secs_f64(),
            "limit_seconds": self.limit_elapsed.as_secs_f64(),
            "small_seconds": self.small_elapsed.as_secs_f64(),
            "virtual_seconds": self.virtual_elapsed.as_secs_f64(),
        })
    }
}

impl fmt::Display for RequestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serving = self.serving_blocks_per_second();
        let limit = self.limit_blocks_per_second();
        let small = self.small_requests_per_second();
        writeln!(
            f,
            "requests ({} BlocksByRange x {BLOCKS_PER_REQUEST} blocks of {} B, {} small; \
             one thread; {:.0} s of virtual time for the quotas):",
            self.options.requests,
            self.options.block_bytes,
            self.options.small_requests,
            self.virtual_elapsed.as_secs_f64(),
        )?;
        writeln!(
            f,
            "  (a) served, two nodes in memory:  {:>9.0} req/s  {serving:>9.0} blocks/s  {:>7.1} MB/s",
            self.serving_requests_per_second(),
            self.megabytes_per_second(serving),
        )?;
        writeln!(
            f,
            "  (b) limit, snappy + Noise only:   {:>9}        {limit:>9.0} blocks/s  {:>7.1} MB/s",
            "",
            self.megabytes_per_second(limit),
        )?;
        writeln!(
            f,
            "      snappy frames are {:.1} % of the payload bytes: what Noise seals and opens",
            100.0 * self.compressed_fraction
        )?;
        writeln!(
            f,
            "  (c) small requests, app answers:  {small:>9.0} req/s  ({:.1} µs each)",
            1e6 / small
        )?;
        writeln!(
            f,
            "  ratio (a)/(b): {:.3} (blocks/s; fair: both do both ends' work on this one thread)",
            serving / limit
        )?;
        write!(
            f,
            "  (a) build, compress, seal | open, reassemble, decompress, check; \
             (b) compress, seal | open, decompress"
        )
    }
}

/// Runs the serving, limit and small-request measurements.
pub fn requests(options: RequestOptions) -> Result<RequestReport, RequestBenchError> {
    assert!(
        options.requests > 0 && options.small_requests > 0,
        "request counts must be positive"
    );
    if !(SIGNED_BLOCK_OVERHEAD_BYTES..=BENCH_BLOCK_BYTES_MAX).contains(&options.block_bytes) {
        return Err(RequestBenchError::BlockBytes {
            requested: options.block_bytes,
        });
    }
    let chain = ChainConfig::devnet_with_chain(
        REQUESTS_NETWORK_ID,
        REQUESTS_CHAIN_HEAD_SLOT,
        options.block_bytes - SIGNED_BLOCK_OVERHEAD_BYTES,
    );
    let blocks: Vec<Vec<u8>> = chain.stored.iter().map(|block| block.encode()).collect();
    debug_assert!(blocks
        .iter()
        .all(|block| block.len() == options.block_bytes));
    let mut bench = RequestBench::new(chain, options.block_bytes)?;
    let mut limit = Limit::new()?;
    // One untimed pass over the whole chain checks that the bytes survive
    // the trip, and measures how well they compress.
    let mut compressed_bytes = 0;
    for range in blocks.chunks(BLOCKS_PER_REQUEST as usize) {
        if limit.respond(range)? != range {
            return Err(RequestBenchError::Decode(
                "blocks changed on the way".to_string(),
            ));
        }
        compressed_bytes += limit.compressed.len();
    }
    let payload_bytes = blocks.len() * options.block_bytes;
    let mut pacer = Pacer::new(0, RANGES_PER_PERIOD);
    let mut serving_elapsed = Duration::ZERO;
    let mut limit_elapsed = Duration::ZERO;
    while pacer.count < options.requests {
        let first = pacer.count;
        pacer.count = (first + ROUND_REQUESTS).min(options.requests);
        let start = StdInstant::now();
        bench.serve_ranges(&mut pacer)?;
        serving_elapsed += start.elapsed();
        let start = StdInstant::now();
        for index in first..pacer.count {
            let first_block = ((index % RANGES_IN_CHAIN) * BLOCKS_PER_REQUEST) as usize;
            let range = &blocks[first_block..first_block + BLOCKS_PER_REQUEST as usize];
            std::hint::black_box(limit.respond(range)?);
        }
        limit_elapsed += start.elapsed();
    }
    let small_elapsed = bench.serve_small(options.small_requests)?;
    Ok(RequestReport {
        options,
        blocks: options.requests * BLOCKS_PER_REQUEST,
        serving_elapsed,
        limit_elapsed,
        small_elapsed,
        virtual_elapsed: Duration::from_micros(bench.net.now.as_micros()),
        compressed_fraction: compressed_bytes as f64 / payload_bytes as f64,
    })
}

/// A client and a serving node, connected, in a [`MemoryNet`].
struct RequestBench {
    net: MemoryNet,
    server: PeerId,
    client: PeerId,
    small_protocol: ProtocolName,
    block_bytes: usize,
}

/// What one look at the client's notifications found.
#[derive(Default)]
struct Answers {
    responses: u64,
}

impl RequestBench {
    fn new(chain: ChainConfig, block_bytes: usize) -> Result<RequestBench, RequestBenchError> {
        // Both clocks after the pre-signed chain, so its Status is believed.
        let slot_ms = meshsync_core::chain::DEVNET_SLOT_DURATION_MS;
        let clock_ms = (chain.stored.len() as u64 + 1).saturating_mul(slot_ms);
        let mut client = Config::new(REQUESTS_NETWORK_ID);
        client.unix_ms_at_origin = clock_ms;
        // The client holds the chain too: one that lacked it would range-sync
        // it from the server during the measurement, and the blocks that sync
        // fetches and verifies (BLS) would be counted against serving.
        client.chain = chain.clone();
        let mut server = Config::new(REQUESTS_NETWORK_ID);
        server.unix_ms_at_origin = clock_ms;
        server.chain = chain;
        let mut net = MemoryNet::new(vec![client, server]);
        let server = net.nodes[SERVER].peer_id();
        let client = net.nodes[CLIENT].peer_id();
        net.dial(CLIENT, SERVER, Some(server));
        if !net.connected(CLIENT, SERVER) {
            return Err(RequestBenchError::NotConnected);
        }
        let small_protocol =
            ProtocolName::new(SMALL_PROTOCOL).expect("the constant is a valid protocol name");
        for node in [CLIENT, SERVER] {
            net.handle(
                node,
                Input::Command(Command::RegisterProtocol {
                    name: small_protocol,
                    quota: SMALL_QUOTA,
                }),
            );
        }
        net.drain();
        // Start both measurements with full quotas.
        net.advance(BLOCKS_BY_RANGE_QUOTA.period);
        for notifications in &mut net.notifications {
            notifications.clear();
        }
        Ok(RequestBench {
            net,
            server,
            client,
            small_protocol,
            block_bytes,
        })
    }

    /// Serves BlocksByRange requests until `pacer` has all it counts answered.
    fn serve_ranges(&mut self, pacer: &mut Pacer) -> Result<(), RequestBenchError> {
        while pacer.answered < pacer.count {
            while let Some(index) = pacer.next_request() {
                let body = BlocksByRangeRequest {
                    start_slot: 1 + (index % RANGES_IN_CHAIN) * BLOCKS_PER_REQUEST,
                    count: BLOCKS_PER_REQUEST,
                }
                .encode();
                self.request(ProtocolId::BlocksByRange, body, index);
            }
            self.net.drain();
            // The server's notifications (Statuses) are of no interest here.
            self.net.notifications[SERVER].clear();
            let answers = self.collect_range_answers()?;
            pacer.on_answers(&mut self.net, answers.responses)?;
        }
        Ok(())
    }

    /// Serves `count` small application requests, answered by this loop on
    /// the server's behalf; returns the wall time taken.
    fn serve_small(&mut self, count: u64) -> Result<Duration, RequestBenchError> {
        // A fresh period: whatever the range requests spent is refilled.
        self.net.advance(BLOCKS_BY_RANGE_QUOTA.period);
        for notifications in &mut self.net.notifications {
            notifications.clear();
        }
        let protocol = ProtocolId::Application(self.small_protocol);
        let start = StdInstant::now();
        let mut pacer = Pacer::new(count, SMALL_PER_PERIOD);
        while pacer.answered < count {
            while let Some(index) = pacer.next_request() {
                self.request(protocol, index.to_be_bytes().to_vec(), index);
            }
            self.net.drain();
            self.answer_inbound();
            self.net.drain();
            let answers = self.collect_small_answers()?;
            pacer.on_answers(&mut self.net, answers.responses)?;
        }
        Ok(start.elapsed())
    }

    fn request(&mut self, protocol: ProtocolId, body: Vec<u8>, tag: u64) {
        self.net.handle(
            CLIENT,
            Input::Command(Command::Request {
                peer: self.server,
                protocol,
                body,
                tag,
            }),
        );
    }

    /// The server's application: echoes every small request's body.
    fn answer_inbound(&mut self) {
        let inbound = std::mem::take(&mut self.net.notifications[SERVER]);
        for notification in inbound {
            if let Notification::InboundRequest { peer, id, body, .. } = notification {
                debug_assert_eq!(peer, self.client);
                self.net.handle(
                    SERVER,
                    Input::Command(Command::Respond {
                        peer,
                        id,
                        answer: Answer::Chunks(vec![body]),
                    }),
                );
            }
        }
    }

    fn collect_range_answers(&mut self) -> Result<Answers, RequestBenchError> {
        let mut answers = Answers::default();
        for notification in std::mem::take(&mut self.net.notifications[CLIENT]) {
            match notification {
                Notification::Response { tag, chunks, .. } => {
                    let complete = chunks.len() as u64 == BLOCKS_PER_REQUEST
                        && chunks.iter().all(|block| block.len() == self.block_bytes);
                    if !complete {
                        return Err(RequestBenchError::WrongResponse(format!(
                            "request {tag}: {} blocks, expected {BLOCKS_PER_REQUEST} of {} bytes",
                            chunks.len(),
                            self.block_bytes
                        )));
                    }
                    answers.responses += 1;
                }
                Notification::RequestFailed { tag, error, .. } => {
                    return Err(RequestBenchError::RequestFailed(format!(
                        "request {tag}: {error:?}"
                    )))
                }
                _ => {}
            }
        }
        Ok(answers)
    }

    fn collect_small_answers(&mut self) -> Result<Answers, RequestBenchError> {
        let mut answers = Answers::default();
        for notification in std::mem::take(&mut self.net.notifications[CLIENT]) {
            match notification {
                Notification::Response { tag, chunks, .. } => {
                    if chunks.len() != 1 || chunks[0] != tag.to_be_bytes() {
                        return Err(RequestBenchError::WrongResponse(format!(
                            "small request {tag}: not its echo"
                        )));
                    }
                    answers.responses += 1;
                }
                Notification::RequestFailed { tag, error, .. } => {
                    return Err(RequestBenchError::RequestFailed(format!(
                        "small request {tag}: {error:?}"
                    )))
                }
                _ => {}
            }
        }
        Ok(answers)
    }
}

/// Hands requests to the client within the outstanding cap and the quota
/// period's budget, and advances virtual time when the budget is spent (or
/// when nothing comes back, which should not happen).
struct Pacer {
    count: u64,
    per_period: u64,
    sent: u64,
    answered: u64,
    sent_this_period: u64,
    stalled_periods: u32,
}

impl Pacer {
    fn new(count: u64, per_period: u64) -> Pacer {
        Pacer {
            count,
            per_period,
            sent: 0,
            answered: 0,
            sent_this_period: 0,
            stalled_periods: 0,
        }
    }

    /// The index of the next request to hand over now, if any.
    fn next_request(&mut self) -> Option<u64> {
        let outstanding = self.sent - self.answered;
        let ready = self.sent < self.count
            && outstanding < REQUESTS_OUTSTANDING_MAX
            && self.sent_this_period < self.per_period;
        ready.then(|| {
            self.sent += 1;
            self.sent_this_period += 1;
            self.sent - 1
        })
    }

    fn on_answers(&mut self, net: &mut MemoryNet, responses: u64) -> Result<(), RequestBenchError> {
        self.answered += responses;
        let outstanding = self.sent - self.answered;
        let period_spent = self.sent_this_period == self.per_period && outstanding == 0;
        let stalled = responses == 0 && outstanding > 0;
        if stalled {
            self.stalled_periods += 1;
            if self.stalled_periods > STALLED_PERIODS_MAX {
                return Err(RequestBenchError::Stalled {
                    answered: self.answered,
                });
            }
        } else {
            self.stalled_periods = 0;
        }
        if period_spent || stalled {
            net.advance(BLOCKS_BY_RANGE_QUOTA.period);
            self.sent_this_period = 0;
        }
        Ok(())
    }
}

/// What serving a response cannot avoid doing to its blocks, one response
/// at a time as the server sends it: snappy-compress each block, seal the
/// response in Noise messages, open them with the other end's transport,
/// decompress each block.
struct Limit {
    sender: Transport,
    receiver: Transport,
    frames: NoiseFrameDecoder,
    /// Snappy frames of one response's blocks, back to back.
    compressed: Vec<u8>,
    /// Where each frame ends in `compressed`.
    frame_ends: Vec<usize>,
    /// The sealed Noise messages with their length prefixes.
    wire: Vec<u8>,
    /// The opened plaintext.
    opened: Vec<u8>,
}

impl Limit {
    fn new() -> Result<Limit, RequestBenchError> {
        let (sender, receiver) = noise_pair()?;
        let mut frames = NoiseFrameDecoder::new();
        frames.enter_transport_mode();
        Ok(Limit {
            sender,
            receiver,
            frames,
            compressed: Vec::new(),
            frame_ends: Vec::new(),
            wire: Vec::new(),
            opened: Vec::new(),
        })
    }

    /// Puts one response's `blocks` through and returns them as received.
    fn respond(&mut self, blocks: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, RequestBenchError> {
        self.compressed.clear();
        self.frame_ends.clear();
        for block in blocks {
            snappy::compress_into(block, &mut self.compressed);
            self.frame_ends.push(self.compressed.len());
        }
        self.wire.clear();
        self.sender.seal(&self.compressed, &mut self.wire);
        self.opened.clear();
        let (receiver, opened) = (&mut self.receiver, &mut self.opened);
        self.frames
            .decode(&self.wire, |message| -> Result<(), RequestBenchError> {
                receiver.open(message, opened)?;
                Ok(())
            })?;
        let mut start = 0;
        let mut decompressed = Vec::with_capacity(blocks.len());
        for &end in &self.frame_ends {
            let frame = self.opened.get(start..end).ok_or_else(|| {
                RequestBenchError::Decode("opened fewer bytes than sealed".to_string())
            })?;
            let block = snappy::decompress(frame, BLOCK_BYTES_MAX)
                .map_err(|error| RequestBenchError::Decode(error.to_string()))?;
            decompressed.push(block);
            start = end;
        }
        Ok(decompressed)
    }
}

/// Two transports joined by a real XX handshake, through the public API:
/// (the dialler's, the listener's).
pub(crate) fn noise_pair() -> Result<(Transport, Transport), RequestBenchError> {
    let dialler_keys = LocalKeys::new(Identity::from_seed(200), &mut SplitMix64(200));
    let listener_keys = LocalKeys::new(Identity::from_seed(201), &mut SplitMix64(201));
    let hello = Hello {
        version: PROTOCOL_VERSION,
        network_id: REQUESTS_NETWORK_ID,
        listen_port: 0,
        capabilities: 0,
    };
    let mut wire = Vec::new();
    let dialler = Handshake::initiate(
        &dialler_keys,
        bench_seed(200),
        Some(listener_keys.peer_id()),
        &mut wire,
    )?;
    let listener = Handshake::respond(&listener_keys, bench_seed(201))?;
    let mut reply = Vec::new();
    let HandshakeStep::Continue(listener) =
        listener.read_message(&listener_keys, &hello, &unframe(&wire)?, &mut reply)?
    else {
        return Err(handshake_broken("the listener finished after message 1"));
    };
    let mut last = Vec::new();
    let HandshakeStep::Done {
        transport: dialler, ..
    } = dialler.read_message(&dialler_keys, &hello, &unframe(&reply)?, &mut last)?
    else {
        return Err(handshake_broken(
            "the dialler did not finish after message 2",
        ));
    };
    let mut nothing = Vec::new();
    let HandshakeStep::Done {
        transport: listener,
        ..
    } = listener.read_message(&listener_keys, &hello, &unframe(&last)?, &mut nothing)?
    else {
        return Err(handshake_broken(
            "the listener did not finish after message 3",
        ));
    };
    Ok((dialler, listener))
}

fn handshake_broken(what: &'static str) -> RequestBenchError {
    RequestBenchError::Secure(SecureError::MalformedPayload(what))
}

/// The one handshake message in `wire`, without its length prefix.
fn unframe(wire: &[u8]) -> Result<Vec<u8>, RequestBenchError> {
    let mut messages = Vec::new();
    NoiseFrameDecoder::new().decode(wire, |message| {
        messages.push(message.to_vec());
        Ok::<(), DecodeError>(())
    })?;
    match <[Vec<u8>; 1]>::try_from(messages) {
        Ok([message]) => Ok(message),
        Err(messages) => Err(RequestBenchError::Decode(format!(
            "{} handshake messages where one was expected",
            messages.len()
        ))),
    }
}

/// SplitMix64: a reproducible source for the benchmark's Noise static keys.
/// Not for keys that protect anything.
pub(crate) struct SplitMix64(pub(crate) u64);

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few connect-and-goodbye cycles, in memory and over loopback TCP
    /// with two diallers: every cycle completes on both sides (the harness
    /// asserts it, and panics on any notification a cycle should not
    /// bring), and both figures are reported.
    #[test]
    fn handshake_cycles_complete_in_memory_and_over_tcp() {
        let report = handshakes(5, 2).expect("the benchmark runs");
        assert_eq!((report.count, report.parallel), (5, 2));
        assert!(report.memory_per_second() > 0.0 && report.tcp_per_second() > 0.0);
        // Five cycles take too little CPU for the clock's 10 ms ticks to be
        // sure to move; the integration test runs enough for a figure.
        assert!(report.tcp_cpu_per_connection().is_some());
        let text = report.to_string();
        assert!(
            text.contains("in memory") && text.contains("ratio") && text.contains("CPU"),
            "{text}"
        );
    }

    /// Enough requests to need several quota periods of each kind: the
    /// pacing keeps every request within the server's quotas (a refused one
    /// fails the run), and every response carries what was asked for.
    #[test]
    fn request_bench_paces_itself_through_several_quota_periods() {
        let options = RequestOptions {
            requests: 2 * RANGES_PER_PERIOD + 3,
            small_requests: 2 * SMALL_PER_PERIOD + 5,
            block_bytes: 300,
        };
        let report = requests(options).expect("the benchmark runs");
        assert_eq!(report.blocks, options.requests * BLOCKS_PER_REQUEST);
        // At least two refills for each kind, after the two fresh starts.
        assert!(report.virtual_elapsed >= BLOCKS_BY_RANGE_QUOTA.period * 6);
    }

    #[test]
    fn impossible_block_sizes_are_refused() {
        for block_bytes in [
            0,
            SIGNED_BLOCK_OVERHEAD_BYTES - 1,
            BENCH_BLOCK_BYTES_MAX + 1,
        ] {
            let options = RequestOptions {
                requests: 1,
                small_requests: 1,
                block_bytes,
            };
            assert!(matches!(
                requests(options),
                Err(RequestBenchError::BlockBytes { .. })
            ));
        }
    }
}
