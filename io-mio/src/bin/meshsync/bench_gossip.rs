//! `meshsync bench gossip`: one gossip topic among real drivers over
//! loopback TCP, every message judged by the application on every node,
//! measured as delivery latency, duplicates, and process CPU per delivery.
//!
//! # What runs
//! `--nodes` [`Driver`]s in this one process, each on a thread of its own
//! with one worker, listening on 127.0.0.1, all subscribed to [`TOPIC`].
//! Node `i` in turn draws distinct other nodes from SplitMix64 seeded with
//! `--seed` until it has `--degree` of them, and dials each one unless the
//! two are connected already (dialled from the other end): every node has
//! at least `--degree` peers, about twice that on average. This is the
//! graph rule of rust-libp2p's gossip benchmark, drawn with the same
//! generator, so the same seed gives the same graph.
//!
//! Beside each driver runs its application: a thread that reads the node's
//! notifications and judges every gossip message through the driver's
//! public API (`Notification::GossipMessage` in, `Command::ValidateGossip`
//! out), as `examples/chat.rs` does. The router forwards nothing the
//! application has not accepted. The check is a real one: the message has
//! the size asked for, a header that parses, a sequence number in range
//! published by the node it names, and a publish time not in the future;
//! anything else is rejected (its senders penalised) and counted.
//!
//! The router runs with its defaults (D 8, D_lo 6, D_hi 12, D_lazy 6, a
//! 700 ms heartbeat, a message cache of 6 windows gossiping the last 3, a
//! 2-minute seen cache) but for flood publishing, which is off: a
//! publisher sends to its mesh only, as rust-libp2p's gossipsub does with
//! `flood_publish(false)`, so the two can be compared on one workload.
//!
//! # Phases
//! 1. Connect: every dial made, until both ends of every edge have
//!    notified `PeerConnected` (at most [`CONNECT_WAIT_MAX`]).
//! 2. Warm-up: `--warmup-secs` of an idle mesh, whose process CPU is
//!    reported; then until every node's mesh holds `D_lo` peers, or all of
//!    its peers where it has fewer (at most [`MESH_WAIT_MAX`] more, after
//!    which the run goes on and the mesh sizes say so).
//! 3. Timed: message `i` is published by node `i mod K` at `t0 + i / rate`,
//!    open loop: a publish that is late goes at once, and the schedule does
//!    not slip. Its payload is `--size` bytes: a [`Header`] (the publish
//!    time, read from a monotonic clock every thread of the process
//!    shares; the sequence number; the publisher), then pseudo-random bytes,
//!    which snappy on the wire cannot shrink. The phase ends when all
//!    `M × (K − 1)` deliveries have arrived, or `--drain-secs` after the
//!    last publish.
//!
//! # What is measured
//! - A delivery is a node's application taking a message it did not
//!   publish off its notification channel; its latency is the time then
//!   less the publish time in the payload. The publisher stamps the time
//!   on this benchmark's thread just before handing the message to its
//!   driver, so the hand-over to the driver's thread is in the latency.
//! - Duplicates, from the router's own counters on the topic: copies of
//!   messages it had seen already, against new messages it handed to the
//!   application, summed over the nodes.
//! - Process CPU (every thread: drivers, workers, applications, the
//!   publisher; see [`crate::cpu_time`]) over the timed phase, per
//!   delivery; and over the warm-up's idle seconds, per second.
//! - Peak resident memory of the process, and the CPU that other processes
//!   used during the timed phase (the machine's busy time in `/proc/stat`
//!   less ours), since the machine may be shared.
//!
//! # Limits
//! Every figure on the command line is bounded by a named constant that the
//! parser checks ([`GOSSIP_BENCH_NODES_MAX`], [`GOSSIP_BENCH_MESSAGES_MAX`],
//! [`GOSSIP_BENCH_MESSAGE_BYTES_MAX`], [`GOSSIP_BENCH_RATE_PER_SECOND_MAX`],
//! [`WARMUP_SECS_MAX`], [`DRAIN_SECS_MAX`]), and their relations by
//! [`GossipOptions::check`] (the degree below the node count, publishing at
//! most [`PUBLISH_DURATION_MAX`], the open files the nodes need within the
//! process's limit). Every wait has a deadline; a node that does not start
//! is an error naming it; every driver and application thread is stopped
//! and joined on every way out ([`Nodes`] does it when dropped).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Sender};
use meshsync_core::gossip::router::MESH_N_LOW;
use meshsync_core::gossip::GOSSIP_MESSAGE_BYTES_MAX;
use meshsync_core::io::Notification;
use meshsync_core::limits::PEERS_MAX;
use meshsync_core::peer::ConnectionLimits;
use meshsync_core::{Command, Config, Identity, Topic, Validation};
use meshsync_mio::driver::{Driver, DriverHandle, DriverOptions, RunningDriver};
use rand_core::RngCore;

use crate::bench::SplitMix64;
use crate::cpu_time::{self, Spent, Stopwatch};

/// Nodes at most: one more than a node's peer cap, so that every node can
/// hold every other as a peer whatever graph the seed draws, and no
/// connection is ever refused for want of a slot.
pub const GOSSIP_BENCH_NODES_MAX: usize = PEERS_MAX + 1;
/// Messages at most. Every delivery is kept (16 bytes) until the report:
/// at [`GOSSIP_BENCH_NODES_MAX`] nodes, about 80 MiB.
pub const GOSSIP_BENCH_MESSAGES_MAX: u32 = 100_000;
/// Payload bytes of one message at most: far below what gossip carries
/// ([`GOSSIP_MESSAGE_BYTES_MAX`]), so that the message caches of every
/// node of one process (up to 64 MiB each) stay within a machine's memory.
pub const GOSSIP_BENCH_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Messages per second at most: one every 100 µs, about what a thread's
/// sleep can still pace.
pub const GOSSIP_BENCH_RATE_PER_SECOND_MAX: f64 = 10_000.0;
/// Messages per second at least: one every 10 s.
pub const GOSSIP_BENCH_RATE_PER_SECOND_MIN: f64 = 0.1;
/// The longest the publishing may last (`--messages` over `--rate`).
pub const PUBLISH_DURATION_MAX: Duration = Duration::from_secs(3_600);
/// The longest warm-up.
pub const WARMUP_SECS_MAX: u64 = 600;
/// The longest wait for deliveries after the last publish.
pub const DRAIN_SECS_MAX: u64 = 600;
/// The longest wait for every connection of the graph.
pub const CONNECT_WAIT_MAX: Duration = Duration::from_secs(30);
/// The longest wait for the meshes after the warm-up, as rust-libp2p's
/// benchmark waits.
pub const MESH_WAIT_MAX: Duration = Duration::from_secs(20);
/// The longest a query of one driver may take.
const QUERY_WAIT_MAX: Duration = Duration::from_secs(10);
/// Time between two looks at the connections made.
const CONNECT_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Time between two looks at the meshes.
const MESH_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Failures (dials, refusals) kept to name in an error; more are counted only.
const FAILURES_KEPT_MAX: usize = 8;
/// The topic every node follows.
pub const TOPIC: &str = "/bench/gossip/1";
const NETWORK_ID: u64 = 1;
/// Open files of one node besides its connections: its poll instance, its
/// waker and its listening socket.
const FILES_PER_NODE: u64 = 3;
/// Open files of the process besides the nodes': the standard streams, the
/// binary and its libraries, room to spare.
const FILES_SPARE: u64 = 64;
/// Mixes a node's index into the seed of its identity and randomness (the
/// constant rust-libp2p's benchmark mixes its keys with).
const NODE_SEED_MIX: u64 = 0xA076_1D64_78BD_642F;

const _: () = assert!(GOSSIP_BENCH_NODES_MAX - 1 <= PEERS_MAX);
const _: () = assert!(GOSSIP_BENCH_NODES_MAX <= u32::MAX as usize);
const _: () = assert!(Header::BYTES <= GOSSIP_BENCH_MESSAGE_BYTES_MAX);
const _: () = assert!(GOSSIP_BENCH_MESSAGE_BYTES_MAX <= GOSSIP_MESSAGE_BYTES_MAX);

/// What `meshsync bench gossip` runs.
#[derive(Clone, Copy, Debug)]
pub struct GossipOptions {
    /// Nodes (K), each a driver on its own thread.
    pub nodes: usize,
    /// Payload bytes of each message, the header included.
    pub size_bytes: usize,
    /// Messages published per second, open loop.
    pub rate_per_second: f64,
    /// Messages published (M).
    pub messages: u32,
    /// Others each node dials.
    pub degree: usize,
    /// Idle time after the connections, before the meshes are checked.
    pub warmup: Duration,
    /// The longest wait for deliveries after the last publish.
    pub drain: Duration,
    /// Seeds the graph and every node's identity and randomness.
    pub seed: u64,
}

impl GossipOptions {
    /// Checks every bound (the command line checked each as it parsed) and
    /// the relations between them.
    pub fn check(&self) -> Result<(), String> {
        if !(2..=GOSSIP_BENCH_NODES_MAX).contains(&self.nodes) {
            return Err(format!(
                "--nodes must be from 2 to {GOSSIP_BENCH_NODES_MAX}"
            ));
        }
        if self.degree == 0 || self.degree >= self.nodes {
            return Err(format!(
                "--degree must be from 1 to --nodes - 1 ({})",
                self.nodes - 1
            ));
        }
        if !(1..=GOSSIP_BENCH_MESSAGES_MAX).contains(&self.messages) {
            return Err(format!(
                "--messages must be from 1 to {GOSSIP_BENCH_MESSAGES_MAX}"
            ));
        }
        if !(Header::BYTES..=GOSSIP_BENCH_MESSAGE_BYTES_MAX).contains(&self.size_bytes) {
            return Err(format!(
                "--size must be from {} (the header) to {GOSSIP_BENCH_MESSAGE_BYTES_MAX}",
                Header::BYTES
            ));
        }
        check_rate(self.rate_per_second)?;
        let publishing = f64::from(self.messages - 1) / self.rate_per_second;
        if publishing > PUBLISH_DURATION_MAX.as_secs_f64() {
            return Err(format!(
                "--messages at --rate would publish for {publishing:.0} s, more than {} s",
                PUBLISH_DURATION_MAX.as_secs()
            ));
        }
        if self.warmup > Duration::from_secs(WARMUP_SECS_MAX) {
            return Err(format!("--warmup-secs must be at most {WARMUP_SECS_MAX}"));
        }
        if self.drain > Duration::from_secs(DRAIN_SECS_MAX) {
            return Err(format!("--drain-secs must be at most {DRAIN_SECS_MAX}"));
        }
        Ok(())
    }

    /// Deliveries if every node but the publisher gets every message: M × (K − 1).
    pub fn deliveries_expected(&self) -> u64 {
        u64::from(self.messages) * (self.nodes as u64 - 1)
    }

    /// When message `sequence` is due, after the first.
    fn due(&self, sequence: u32) -> Duration {
        Duration::from_secs_f64(f64::from(sequence) / self.rate_per_second)
    }
}

/// Whether `rate` is a rate this benchmark paces: finite, within
/// [`GOSSIP_BENCH_RATE_PER_SECOND_MIN`] and [`GOSSIP_BENCH_RATE_PER_SECOND_MAX`].
pub fn check_rate(rate: f64) -> Result<(), String> {
    if (GOSSIP_BENCH_RATE_PER_SECOND_MIN..=GOSSIP_BENCH_RATE_PER_SECOND_MAX).contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "--rate must be from {GOSSIP_BENCH_RATE_PER_SECOND_MIN} to \
             {GOSSIP_BENCH_RATE_PER_SECOND_MAX} messages per second"
        ))
    }
}

/// The first bytes of every message.
///
/// | bytes | field | why |
/// |---|---|---|
/// | 0..8 | publish time, ns since the run's epoch, big-endian | the latency of each delivery |
/// | 8..12 | sequence number, big-endian | which message (M at most [`GOSSIP_BENCH_MESSAGES_MAX`]) |
/// | 12..16 | publisher's index, big-endian | checked against `sequence mod K` |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// When it was published, ns since the run's epoch.
    pub published_ns: u64,
    /// Its sequence number.
    pub sequence: u32,
    /// The node that published it.
    pub publisher: u32,
}

impl Header {
    /// Bytes of a header.
    pub const BYTES: usize = 16;

    /// Writes the header over the first [`Header::BYTES`] of `payload`.
    fn write(&self, payload: &mut [u8]) {
        payload[0..8].copy_from_slice(&self.published_ns.to_be_bytes());
        payload[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        payload[12..16].copy_from_slice(&self.publisher.to_be_bytes());
    }

    /// The header at the start of `payload`, if it is long enough for one.
    fn read(payload: &[u8]) -> Option<Header> {
        let header = payload.get(..Header::BYTES)?;
        Some(Header {
            published_ns: u64::from_be_bytes(header[0..8].try_into().ok()?),
            sequence: u32::from_be_bytes(header[8..12].try_into().ok()?),
            publisher: u32::from_be_bytes(header[12..16].try_into().ok()?),
        })
    }
}

/// What makes a message well-formed in this run.
#[derive(Clone, Copy, Debug)]
struct Judge {
    size_bytes: usize,
    messages: u32,
    nodes: u32,
}

impl Judge {
    /// The header of `payload` if the message is well-formed at `now_ns`.
    fn check(&self, payload: &[u8], now_ns: u64) -> Option<Header> {
        if payload.len() != self.size_bytes {
            return None;
        }
        let header = Header::read(payload)?;
        let well_formed = header.sequence < self.messages
            && header.publisher == header.sequence % self.nodes
            && header.published_ns <= now_ns;
        well_formed.then_some(header)
    }
}

/// The dials of the graph, (dialler, listener), in the order made: node
/// `i` in turn draws distinct others until it has `degree` of them, and
/// dials each one unless the edge exists already. The same seed gives the
/// graph rust-libp2p's gossip benchmark draws.
pub fn topology(nodes: usize, degree: usize, seed: u64) -> Vec<(usize, usize)> {
    assert!(
        nodes >= 2 && (1..nodes).contains(&degree),
        "checked by GossipOptions::check"
    );
    let mut rng = SplitMix64(seed);
    let mut edges = BTreeSet::new();
    let mut dials = Vec::new();
    for i in 0..nodes {
        let mut picked = BTreeSet::new();
        // Ends: every draw names any other node with probability about
        // 1/nodes, and there are more others than `degree`.
        while picked.len() < degree {
            let j = (rng.next_u64() % nodes as u64) as usize;
            if j != i && picked.insert(j) && edges.insert((i.min(j), i.max(j))) {
                dials.push((i, j));
            }
        }
    }
    dials
}

/// Nanoseconds from `epoch` to now: the clock every thread of the run shares.
fn nanos_since(epoch: StdInstant) -> u64 {
    // u64 nanoseconds last 584 years.
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What every node's application tells the benchmark's thread as it goes.
struct Tally {
    /// `PeerConnected` notifications, all nodes together.
    connected: AtomicU64,
    /// `PeerDisconnected` notifications.
    disconnected: AtomicU64,
    /// Deliveries so far.
    delivered: AtomicU64,
    /// Messages an application rejected.
    rejected: AtomicU64,
    /// `PublishFailed` notifications.
    publish_failures: AtomicU64,
    /// The latest delivery, ns since the epoch.
    last_delivery_ns: AtomicU64,
    /// Dials that failed and connections refused, the first
    /// [`FAILURES_KEPT_MAX`], in words.
    failures: Mutex<Vec<String>>,
    /// Deliveries at which `all_delivered` is signalled.
    expected: u64,
    /// Signalled once, by the delivery that completes the run.
    all_delivered: Sender<()>,
}

impl Tally {
    fn fail(&self, failure: String) {
        // A poisoned lock means an application thread panicked while
        // holding it: the failure list is then whatever it holds.
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() < FAILURES_KEPT_MAX {
                failures.push(failure);
            }
        }
    }

    fn first_failure(&self) -> Option<String> {
        self.failures.lock().ok()?.first().cloned()
    }
}

/// What one node's application recorded.
#[derive(Debug, Default)]
struct Received {
    /// (sequence number, latency ns) of each delivery.
    deliveries: Vec<(u32, u64)>,
    /// Messages notified again after a first delivery, or its own: none
    /// are expected, the router hands each id over once.
    repeats: u64,
}

/// One node's application: judges its node's gossip and times it.
struct Application {
    index: usize,
    node: DriverHandle,
    notifications: Receiver<Notification>,
    topic: Topic,
    judge: Judge,
    epoch: StdInstant,
    tally: Arc<Tally>,
}

impl Application {
    /// Runs until the node stops (its notifications end).
    fn run(self) -> Received {
        let mut received = Received::default();
        let mut delivered = vec![false; self.judge.messages as usize];
        for notification in self.notifications.iter() {
            match notification {
                Notification::GossipMessage {
                    id, topic, payload, ..
                } => {
                    let now_ns = nanos_since(self.epoch);
                    let verdict = if topic != self.topic {
                        Validation::Ignore
                    } else if let Some(header) = self.judge.check(&payload, now_ns) {
                        let first =
                            !std::mem::replace(&mut delivered[header.sequence as usize], true);
                        if first && header.publisher as usize != self.index {
                            let latency_ns = now_ns - header.published_ns;
                            received.deliveries.push((header.sequence, latency_ns));
                            self.delivered(now_ns);
                        } else {
                            received.repeats += 1;
                        }
                        Validation::Accept
                    } else {
                        self.tally.rejected.fetch_add(1, Ordering::Relaxed);
                        Validation::Reject
                    };
                    if self
                        .node
                        .command(Command::ValidateGossip { id, verdict })
                        .is_err()
                    {
                        break; // The node stopped.
                    }
                }
                Notification::PeerConnected { .. } => {
                    self.tally.connected.fetch_add(1, Ordering::Relaxed);
                }
                Notification::PeerDisconnected { .. } => {
                    self.tally.disconnected.fetch_add(1, Ordering::Relaxed);
                }
                Notification::DialFailed { addr, error } => self.tally.fail(format!(
                    "node {}: the dial to {addr} failed: {error}",
                    self.index
                )),
                Notification::ConnectionRefused { addr, reason, .. } => self.tally.fail(format!(
                    "node {}: the connection with {addr} was refused: {reason}",
                    self.index
                )),
                Notification::PublishFailed { .. } => {
                    self.tally.publish_failures.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        received
    }

    fn delivered(&self, now_ns: u64) {
        let tally = &self.tally;
        tally.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
        if tally.delivered.fetch_add(1, Ordering::Relaxed) + 1 == tally.expected {
            // Capacity 1 and sent once: never full.
            let _ = tally.all_delivered.try_send(());
        }
    }
}

/// The running nodes and their applications. Dropping it stops every
/// driver and joins every thread, whichever way the benchmark ends.
#[derive(Default)]
struct Nodes {
    drivers: Vec<RunningDriver>,
    applications: Vec<JoinHandle<Received>>,
}

impl Nodes {
    /// Starts node `index` and its application.
    fn start(
        &mut self,
        index: usize,
        options: &GossipOptions,
        topic: &Topic,
        epoch: StdInstant,
        tally: &Arc<Tally>,
    ) -> Result<(), String> {
        let mut config = Config::new(NETWORK_ID);
        config.gossip.flood_publish = false;
        // Room for every other node, in either direction (the limit of
        // `--nodes` sees to it that this is all of them).
        config.peer.limits = ConnectionLimits {
            peers_max: PEERS_MAX,
            inbound_peers_max: PEERS_MAX,
            ..ConnectionLimits::default()
        };
        let mut rng = SplitMix64(options.seed ^ (index as u64).wrapping_mul(NODE_SEED_MIX));
        let identity = Identity::from_seed(rng.next_u64());
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut driver = Driver::bind_with(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            config,
            identity,
            seed,
            &DriverOptions {
                // The nodes share the machine's cores; gossip gives the
                // workers nothing to do.
                workers: 1,
                ..DriverOptions::default()
            },
        )
        .map_err(|error| format!("node {index} did not start: {error}"))?;
        // Subscribed before the node runs, so no notification is missed.
        let notifications = driver.subscribe();
        driver.command(Command::Subscribe {
            topic: topic.clone(),
        });
        let node = driver.handle();
        let driver = driver
            .spawn(&format!("gossip-node-{index}"))
            .map_err(|error| format!("node {index}: its thread did not start: {error}"))?;
        self.drivers.push(driver);
        let application = Application {
            index,
            node,
            notifications,
            topic: topic.clone(),
            judge: Judge {
                size_bytes: options.size_bytes,
                messages: options.messages,
                // Below u32::MAX: GOSSIP_BENCH_NODES_MAX is.
                nodes: options.nodes as u32,
            },
            epoch,
            tally: Arc::clone(tally),
        };
        let thread = std::thread::Builder::new()
            .name(format!("gossip-app-{index}"))
            .spawn(move || application.run())
            .map_err(|error| {
                format!("node {index}: its application's thread did not start: {error}")
            })?;
        self.applications.push(thread);
        Ok(())
    }

    fn handle(&self, index: usize) -> &DriverHandle {
        self.drivers[index].handle()
    }

    /// Runs `query` on node `index`'s thread.
    fn query<R, F>(&self, index: usize, query: F) -> Result<R, String>
    where
        R: Send + 'static,
        F: FnOnce(&Driver) -> R + Send + 'static,
    {
        self.handle(index)
            .query(query, QUERY_WAIT_MAX)
            .map_err(|error| format!("node {index}: {error}"))
    }

    /// Stops every driver and joins every thread; returns what each
    /// application recorded, or the first failure to stop.
    fn finish(mut self) -> Result<Vec<Received>, String> {
        let (stopped, joined) = self.stop_all();
        stopped?;
        joined
    }

    /// Asks every driver to stop at once (each flushes its Goodbyes on its
    /// own thread), then joins them, then their applications, whose
    /// notifications end with their drivers.
    fn stop_all(&mut self) -> (Result<(), String>, Result<Vec<Received>, String>) {
        for driver in &self.drivers {
            // Fails only if it stopped already; joining says how.
            let _ = driver.handle().stop();
        }
        let mut stopped = Ok(());
        for (index, driver) in self.drivers.drain(..).enumerate() {
            let result = driver
                .stop()
                .map_err(|error| format!("node {index} stopped with an error: {error}"));
            stopped = stopped.and(result);
        }
        let mut joined = Ok(Vec::with_capacity(self.applications.len()));
        for (index, application) in self.applications.drain(..).enumerate() {
            let result = application
                .join()
                .map_err(|_| format!("node {index}: its application panicked"));
            joined = match (joined, result) {
                (Ok(mut all), Ok(received)) => {
                    all.push(received);
                    Ok(all)
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
        }
        (stopped, joined)
    }
}

impl Drop for Nodes {
    /// After [`Nodes::finish`] there is nothing left to stop.
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// What the router counted on the topic, and beside it, summed over the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterCounts {
    /// New messages handed to the application.
    pub received: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// Messages the application accepted.
    pub accepted: u64,
    /// Messages the application rejected.
    pub rejected: u64,
    /// Messages not sent because the peer had said IDONTWANT.
    pub idontwant_suppressed: u64,
    /// Gossip dropped from full send queues.
    pub gossip_dropped: u64,
    /// Messages dropped while awaiting a verdict.
    pub validations_dropped: u64,
}

impl RouterCounts {
    /// What was counted since `before`.
    fn since(self, before: RouterCounts) -> RouterCounts {
        RouterCounts {
            received: self.received.saturating_sub(before.received),
            duplicates: self.duplicates.saturating_sub(before.duplicates),
            accepted: self.accepted.saturating_sub(before.accepted),
            rejected: self.rejected.saturating_sub(before.rejected),
            idontwant_suppressed: self
                .idontwant_suppressed
                .saturating_sub(before.idontwant_suppressed),
            gossip_dropped: self.gossip_dropped.saturating_sub(before.gossip_dropped),
            validations_dropped: self
                .validations_dropped
                .saturating_sub(before.validations_dropped),
        }
    }

    fn add(self, other: RouterCounts) -> RouterCounts {
        RouterCounts {
            received: self.received + other.received,
            duplicates: self.duplicates + other.duplicates,
            accepted: self.accepted + other.accepted,
            rejected: self.rejected + other.rejected,
            idontwant_suppressed: self.idontwant_suppressed + other.idontwant_suppressed,
            gossip_dropped: self.gossip_dropped + other.gossip_dropped,
            validations_dropped: self.validations_dropped + other.validations_dropped,
        }
    }
}

/// The figures of one `meshsync bench gossip` run.
#[derive(Clone, Debug)]
pub struct GossipReport {
    /// What ran.
    pub options: GossipOptions,
    /// Edges of the graph (connections).
    pub edges: usize,
    /// From the first dial to the last connection.
    pub connect: Duration,
    /// The warm-up's idle seconds, before the meshes were checked.
    pub idle: Spent,
    /// Each node's mesh size on the topic when publishing began.
    pub mesh_sizes: Vec<usize>,
    /// The timed phase: first publish to last delivery or the drain's end.
    pub timed: Spent,
    /// CPU other processes used during the timed phase, where known.
    pub other_cpu: Option<Duration>,
    /// From the first publish to the last.
    pub publishing: Duration,
    /// From the first publish to the last delivery, if any.
    pub last_delivery: Option<Duration>,
    /// Every delivery's latency, ns, sorted.
    pub latencies_ns: Vec<u64>,
    /// For each message every other node got, the latency of the last, ns, sorted.
    pub full_propagation_ns: Vec<u64>,
    /// The router's counts over the timed phase.
    pub router: RouterCounts,
    /// Messages the applications rejected.
    pub rejected: u64,
    /// Publishes the nodes refused.
    pub publish_failures: u64,
    /// Peers lost during the run (before the nodes stopped).
    pub disconnections: u64,
    /// Messages notified twice, or to their publisher (none expected).
    pub repeats: u64,
    /// Peak resident memory of the process, MiB, where known.
    pub rss_peak_mib: Option<f64>,
}

impl GossipReport {
    /// Deliveries recorded.
    pub fn deliveries(&self) -> u64 {
        self.latencies_ns.len() as u64
    }

    /// Deliveries over M × (K − 1).
    pub fn delivery_ratio(&self) -> f64 {
        self.deliveries() as f64 / self.options.deliveries_expected() as f64
    }

    /// Copies of messages already seen per new message, from the routers' counters.
    pub fn duplicates_per_delivery(&self) -> Option<f64> {
        let received = self.router.received;
        (received > 0).then(|| self.router.duplicates as f64 / received as f64)
    }

    /// Process CPU of the timed phase per delivery, µs.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.timed.cpu?;
        (self.deliveries() > 0).then(|| cpu.as_secs_f64() * 1e6 / self.deliveries() as f64)
    }

    /// Cores the process kept busy on average over the timed phase.
    pub fn cpu_cores(&self) -> Option<f64> {
        Some(self.timed.cpu?.as_secs_f64() / self.timed.wall.as_secs_f64())
    }

    /// Cores the idle mesh kept busy on average over the warm-up.
    pub fn idle_cpu_cores(&self) -> Option<f64> {
        let wall = self.idle.wall.as_secs_f64();
        (wall > 0.0).then_some(self.idle.cpu?.as_secs_f64() / wall)
    }

    /// Cores other processes kept busy on average over the timed phase.
    pub fn other_cpu_cores(&self) -> Option<f64> {
        Some(self.other_cpu?.as_secs_f64() / self.timed.wall.as_secs_f64())
    }

    /// A delivery latency percentile (nearest rank), ms.
    pub fn latency_ms(&self, percent: f64) -> Option<f64> {
        percentile_ms(&self.latencies_ns, percent)
    }

    fn mesh_min(&self) -> Option<usize> {
        self.mesh_sizes.iter().copied().min()
    }

    fn mesh_max(&self) -> Option<usize> {
        self.mesh_sizes.iter().copied().max()
    }

    fn mesh_mean(&self) -> f64 {
        self.mesh_sizes.iter().sum::<usize>() as f64 / self.mesh_sizes.len().max(1) as f64
    }

    fn latency_mean_ms(&self) -> Option<f64> {
        let count = self.latencies_ns.len();
        let total: u128 = self.latencies_ns.iter().map(|&ns| u128::from(ns)).sum();
        (count > 0).then(|| total as f64 / count as f64 / 1e6)
    }

    /// The report as one JSON object (`meshsync bench gossip --json`).
    pub fn json(&self) -> serde_json::Value {
        let options = &self.options;
        let seconds = |duration: Duration| duration.as_secs_f64();
        // In three parts: one `json!` of every field is past the macro's recursion limit.
        let run = serde_json::json!({
            "bench": "gossip",
            "nodes": options.nodes,
            "edges": self.edges,
            "degree": options.degree,
            "messages": options.messages,
            "size_bytes": options.size_bytes,
            "rate_per_second": options.rate_per_second,
            "seed": options.seed,
            "warmup_seconds": seconds(options.warmup),
            "drain_seconds": seconds(options.drain),
            "connect_seconds": seconds(self.connect),
            "mesh_min": self.mesh_min(),
            "mesh_mean": self.mesh_mean(),
            "mesh_max": self.mesh_max(),
            "publish_seconds": seconds(self.publishing),
            "seconds": seconds(self.timed.wall),
            "last_delivery_seconds": self.last_delivery.map(seconds),
        });
        let deliveries = serde_json::json!({
            "deliveries_expected": options.deliveries_expected(),
            "deliveries": self.deliveries(),
            "delivery_ratio": self.delivery_ratio(),
            "fully_delivered_messages": self.full_propagation_ns.len(),
            "latency_p50_ms": self.latency_ms(50.0),
            "latency_p90_ms": self.latency_ms(90.0),
            "latency_p99_ms": self.latency_ms(99.0),
            "latency_max_ms": self.latency_ms(100.0),
            "latency_mean_ms": self.latency_mean_ms(),
            "full_propagation_p50_ms": percentile_ms(&self.full_propagation_ns, 50.0),
            "full_propagation_p99_ms": percentile_ms(&self.full_propagation_ns, 99.0),
            "received_unique": self.router.received,
            "received_with_duplicates": self.router.received + self.router.duplicates,
            "duplicates": self.router.duplicates,
            "duplicates_per_delivery": self.duplicates_per_delivery(),
            "accepted": self.router.accepted,
            "rejected": self.rejected,
            "idontwant_suppressed": self.router.idontwant_suppressed,
            "gossip_dropped": self.router.gossip_dropped,
            "validations_dropped": self.router.validations_dropped,
            "publish_failures": self.publish_failures,
            "disconnections": self.disconnections,
            "repeats": self.repeats,
        });
        let cost = serde_json::json!({
            "cpu_seconds": self.timed.cpu.map(seconds),
            "cpu_cores": self.cpu_cores(),
            "cpu_us_per_delivery": self.cpu_us_per_delivery(),
            "idle_seconds": seconds(self.idle.wall),
            "idle_cpu_seconds": self.idle.cpu.map(seconds),
            "idle_cpu_cores": self.idle_cpu_cores(),
            "other_cpu_cores": self.other_cpu_cores(),
            "rss_peak_mib": self.rss_peak_mib,
            "cpu_resolution_seconds": cpu_time::RESOLUTION.as_secs_f64(),
        });
        let mut object = serde_json::Map::new();
        for part in [run, deliveries, cost] {
            if let serde_json::Value::Object(fields) = part {
                object.extend(fields);
            }
        }
        serde_json::Value::Object(object)
    }
}

impl fmt::Display for GossipReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = &self.options;
        let figure = |value: Option<f64>, decimals: usize| {
            value.map_or("unknown".to_string(), |value| format!("{value:.decimals$}"))
        };
        writeln!(
            f,
            "gossip: {} nodes, {} edges (each dialled {} others), {} messages of {} B at {}/s \
             from rotating publishers; every node's application validates every message",
            options.nodes,
            self.edges,
            options.degree,
            options.messages,
            options.size_bytes,
            options.rate_per_second
        )?;
        writeln!(
            f,
            "  connected in {:.2} s; mesh sizes at the first publish: min {}, mean {:.1}, max {}",
            self.connect.as_secs_f64(),
            self.mesh_min().unwrap_or(0),
            self.mesh_mean(),
            self.mesh_max().unwrap_or(0)
        )?;
        writeln!(
            f,
            "  delivered {} of {} (ratio {:.4}) in {:.2} s (publishing {:.2} s); {} rejected, \
             {} publishes refused, {} peers lost",
            self.deliveries(),
            options.deliveries_expected(),
            self.delivery_ratio(),
            self.timed.wall.as_secs_f64(),
            self.publishing.as_secs_f64(),
            self.rejected,
            self.publish_failures,
            self.disconnections
        )?;
        writeln!(
            f,
            "  latency ms: p50 {}  p90 {}  p99 {}  max {};  every node (per message): p50 {}  p99 {}",
            figure(self.latency_ms(50.0), 2),
            figure(self.latency_ms(90.0), 2),
            figure(self.latency_ms(99.0), 2),
            figure(self.latency_ms(100.0), 2),
            figure(percentile_ms(&self.full_propagation_ns, 50.0), 2),
            figure(percentile_ms(&self.full_propagation_ns, 99.0), 2),
        )?;
        writeln!(
            f,
            "  duplicates per delivery: {} ({} copies of seen messages, {} new; \
             {} not sent for IDONTWANT)",
            figure(self.duplicates_per_delivery(), 2),
            self.router.duplicates,
            self.router.received,
            self.router.idontwant_suppressed
        )?;
        writeln!(
            f,
            "  process CPU: {} s ({} cores) = {} µs per delivery; idle mesh in warm-up: {} cores",
            figure(self.timed.cpu.map(|cpu| cpu.as_secs_f64()), 2),
            figure(self.cpu_cores(), 2),
            figure(self.cpu_us_per_delivery(), 1),
            figure(self.idle_cpu_cores(), 3)
        )?;
        write!(
            f,
            "  peak RSS: {} MiB; other processes meanwhile: {} cores",
            figure(self.rss_peak_mib, 1),
            figure(self.other_cpu_cores(), 2)
        )
    }
}

/// A percentile of `sorted` nanoseconds (nearest rank: the smallest value
/// with at least `percent` % of them at or below it), in ms.
fn percentile_ms(sorted: &[u64], percent: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6)
}

/// Runs the benchmark.
pub fn gossip(options: GossipOptions) -> Result<GossipReport, String> {
    options.check()?;
    let dials = topology(options.nodes, options.degree, options.seed);
    check_open_files(options.nodes, dials.len())?;
    let topic = Topic::new(TOPIC).expect("the constant is a valid topic");
    let (all_delivered, all_delivered_signal) = crossbeam_channel::bounded(1);
    let tally = Arc::new(Tally {
        connected: AtomicU64::new(0),
        disconnected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        publish_failures: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        expected: options.deliveries_expected(),
        all_delivered,
    });
    let epoch = StdInstant::now();
    let mut nodes = Nodes::default();
    for index in 0..options.nodes {
        nodes.start(index, &options, &topic, epoch, &tally)?;
    }
    let connect = connect(&nodes, &dials, &tally)?;

    let stopwatch = Stopwatch::start();
    std::thread::sleep(options.warmup);
    let idle = stopwatch.stop();
    let mesh_sizes = wait_for_meshes(&nodes, options.nodes, &topic)?;

    let before = router_counts(&nodes, options.nodes, &topic)?;
    let timed = publish_and_drain(
        &nodes,
        &options,
        &topic,
        epoch,
        &tally,
        &all_delivered_signal,
    )?;
    let router = router_counts(&nodes, options.nodes, &topic)?.since(before);
    let disconnections = tally.disconnected.load(Ordering::Relaxed);
    let rss_peak_mib = rss_peak_mib();
    // Every driver would warn that it lost all its peers as they stop
    // together: noise after the figures. Errors still show.
    log::set_max_level(log::LevelFilter::Error);
    let received = nodes.finish()?;

    let last_delivery_ns = tally.last_delivery_ns.load(Ordering::Relaxed);
    let last_delivery = (last_delivery_ns > timed.start_ns)
        .then(|| Duration::from_nanos(last_delivery_ns - timed.start_ns));
    let (latencies_ns, full_propagation_ns, repeats) = gather(&received, &options);
    Ok(GossipReport {
        options,
        edges: dials.len(),
        connect,
        idle,
        mesh_sizes,
        timed: timed.spent,
        other_cpu: timed.other_cpu,
        publishing: timed.publishing,
        last_delivery,
        latencies_ns,
        full_propagation_ns,
        router,
        rejected: tally.rejected.load(Ordering::Relaxed),
        publish_failures: tally.publish_failures.load(Ordering::Relaxed),
        disconnections,
        repeats,
        rss_peak_mib,
    })
}

/// Makes every dial of the graph and waits until both ends of every edge
/// have connected; returns how long that took.
fn connect(nodes: &Nodes, dials: &[(usize, usize)], tally: &Tally) -> Result<Duration, String> {
    let start = StdInstant::now();
    for &(from, to) in dials {
        let target = &nodes.drivers[to];
        let dial = Command::Dial {
            addr: target.local_addr(),
            peer: Some(target.peer_id()),
        };
        nodes
            .handle(from)
            .command(dial)
            .map_err(|_| format!("node {from} stopped before it dialled node {to}"))?;
    }
    let ends = 2 * dials.len() as u64;
    let deadline = start + CONNECT_WAIT_MAX;
    loop {
        if let Some(failure) = tally.first_failure() {
            return Err(format!("while connecting: {failure}"));
        }
        let connected = tally.connected.load(Ordering::Relaxed);
        if connected >= ends {
            return Ok(start.elapsed());
        }
        if StdInstant::now() >= deadline {
            return Err(format!(
                "{connected} of {ends} connection ends were up after {CONNECT_WAIT_MAX:?}"
            ));
        }
        std::thread::sleep(CONNECT_POLL_INTERVAL);
    }
}

/// Each node's mesh size on `topic` once every mesh holds `D_lo` peers,
/// or all of its node's peers where it has fewer; past [`MESH_WAIT_MAX`],
/// the sizes as they are.
fn wait_for_meshes(nodes: &Nodes, count: usize, topic: &Topic) -> Result<Vec<usize>, String> {
    let deadline = StdInstant::now() + MESH_WAIT_MAX;
    loop {
        let mut sizes = Vec::with_capacity(count);
        let mut formed = true;
        for index in 0..count {
            let topic = topic.clone();
            let (mesh, peers) = nodes.query(index, move |driver: &Driver| {
                let gossip = driver.node().gossip();
                (gossip.mesh_peers(&topic).len(), gossip.peer_count())
            })?;
            formed &= mesh >= MESH_N_LOW.min(peers);
            sizes.push(mesh);
        }
        if formed || StdInstant::now() >= deadline {
            return Ok(sizes);
        }
        std::thread::sleep(MESH_POLL_INTERVAL);
    }
}

/// The routers' counts so far, summed over the nodes.
fn router_counts(nodes: &Nodes, count: usize, topic: &Topic) -> Result<RouterCounts, String> {
    let mut total = RouterCounts::default();
    for index in 0..count {
        let topic = topic.clone();
        let counts = nodes.query(index, move |driver: &Driver| {
            let counters = driver.node().gossip().counters();
            let on_topic = counters.topics.get(&topic).copied().unwrap_or_default();
            RouterCounts {
                received: on_topic.received,
                duplicates: on_topic.duplicates,
                accepted: on_topic.accepted,
                rejected: on_topic.rejected,
                idontwant_suppressed: counters.idontwant_suppressed,
                gossip_dropped: counters.gossip_dropped,
                validations_dropped: counters.validations_dropped,
            }
        })?;
        total = total.add(counts);
    }
    Ok(total)
}

/// What the timed phase took.
struct Timed {
    spent: Spent,
    other_cpu: Option<Duration>,
    publishing: Duration,
    /// Its start, ns since the epoch.
    start_ns: u64,
}

/// Publishes every message on its schedule, then waits for the last
/// delivery or the end of the drain.
fn publish_and_drain(
    nodes: &Nodes,
    options: &GossipOptions,
    topic: &Topic,
    epoch: StdInstant,
    tally: &Tally,
    all_delivered: &Receiver<()>,
) -> Result<Timed, String> {
    let host_start = host_busy();
    let stopwatch = Stopwatch::start();
    let start = StdInstant::now();
    let start_ns = nanos_since(epoch);
    for sequence in 0..options.messages {
        let publisher = sequence as usize % options.nodes;
        // The padding first, so that the publish time is stamped as late
        // as it can be.
        let mut payload = vec![0u8; options.size_bytes];
        SplitMix64(options.seed ^ u64::from(sequence)).fill_bytes(&mut payload[Header::BYTES..]);
        let due = start + options.due(sequence);
        std::thread::sleep(due.saturating_duration_since(StdInstant::now()));
        let header = Header {
            published_ns: nanos_since(epoch),
            sequence,
            // Below u32::MAX: GOSSIP_BENCH_NODES_MAX is.
            publisher: publisher as u32,
        };
        header.write(&mut payload);
        let publish = Command::Publish {
            topic: topic.clone(),
            payload,
        };
        nodes
            .handle(publisher)
            .command(publish)
            .map_err(|_| format!("node {publisher} stopped before message {sequence}"))?;
    }
    let publishing = start.elapsed();
    // Either every delivery has arrived or the drain is over; the tally
    // holds the sender, so the channel cannot disconnect.
    let _ = all_delivered.recv_deadline(StdInstant::now() + options.drain);
    let spent = stopwatch.stop();
    let other_cpu = match (host_start, host_busy(), spent.cpu) {
        (Some(start), Some(end), Some(ours)) => {
            Some(end.saturating_sub(start).saturating_sub(ours))
        }
        _ => None,
    };
    if let Some(failure) = tally.first_failure() {
        log::warn!("gossip benchmark: {failure}");
    }
    Ok(Timed {
        spent,
        other_cpu,
        publishing,
        start_ns,
    })
}

/// Every delivery's latency (sorted), each fully delivered message's
/// last latency (sorted), and the repeats, from every application's record.
fn gather(received: &[Received], options: &GossipOptions) -> (Vec<u64>, Vec<u64>, u64) {
    let total: usize = received.iter().map(|r| r.deliveries.len()).sum();
    let mut latencies = Vec::with_capacity(total);
    // Per message: (deliveries, the latest latency).
    let mut per_message = vec![(0u64, 0u64); options.messages as usize];
    let mut repeats = 0;
    for record in received {
        repeats += record.repeats;
        for &(sequence, latency_ns) in &record.deliveries {
            latencies.push(latency_ns);
            let message = &mut per_message[sequence as usize];
            message.0 += 1;
            message.1 = message.1.max(latency_ns);
        }
    }
    latencies.sort_unstable();
    let everyone = options.nodes as u64 - 1;
    let mut full: Vec<u64> = per_message
        .iter()
        .filter(|(deliveries, _)| *deliveries == everyone)
        .map(|&(_, last)| last)
        .collect();
    full.sort_unstable();
    (latencies, full, repeats)
}

/// Refuses a run whose sockets would not fit in the process's limit of
/// open files: one file per end of each edge, a few per node.
fn check_open_files(nodes: usize, edges: usize) -> Result<(), String> {
    let needed = 2 * edges as u64 + FILES_PER_NODE * nodes as u64 + FILES_SPARE;
    match open_files_max() {
        Some(limit) if needed > limit => Err(format!(
            "{nodes} nodes with {edges} connections need about {needed} open files, \
             more than this process may hold ({limit}): raise it with `ulimit -n`"
        )),
        _ => Ok(()),
    }
}

/// The soft limit of open files from `/proc/self/limits`; `None` where it
/// cannot be read or is unlimited.
fn open_files_max() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The machine's busy CPU time so far (user, nice, system, irq, softirq,
/// steal of every core) from `/proc/stat`, in the same ticks as
/// [`cpu_time::process`]; `None` where it cannot be read.
fn host_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&index| fields.get(index).copied().unwrap_or(0))
        .sum();
    let tick_ms = cpu_time::RESOLUTION.as_millis() as u64;
    Some(Duration::from_millis(busy.checked_mul(tick_ms)?))
}

/// The process's peak resident memory from `/proc/self/status` (`VmHWM`,
/// what `getrusage` reports as `ru_maxrss`), MiB; `None` where unreadable.
fn rss_peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> GossipOptions {
        GossipOptions {
            nodes: 30,
            size_bytes: 1024,
            rate_per_second: 50.0,
            messages: 1000,
            degree: 6,
            warmup: Duration::from_secs(5),
            drain: Duration::from_secs(10),
            seed: 42,
        }
    }

    /// The graph rule: every node ends with at least `degree` peers, no
    /// pair is dialled twice (in either direction), nobody dials itself,
    /// and the same seed draws the same graph.
    #[test]
    fn every_node_has_at_least_degree_peers_and_no_edge_is_dialled_twice() {
        let dials = topology(30, 6, 42);
        let mut peers = vec![BTreeSet::new(); 30];
        let mut pairs = BTreeSet::new();
        for &(from, to) in &dials {
            assert_ne!(from, to);
            assert!(
                pairs.insert((from.min(to), from.max(to))),
                "{from}-{to} twice"
            );
            peers[from].insert(to);
            peers[to].insert(from);
        }
        assert!(peers.iter().all(|p| p.len() >= 6), "{peers:?}");
        let mean = 2.0 * dials.len() as f64 / 30.0;
        assert!((9.0..12.0).contains(&mean), "mean degree {mean}");
        assert_eq!(topology(30, 6, 42), dials);
        assert_ne!(topology(30, 6, 43), dials);
        // The smallest graph: two nodes, one dial.
        assert_eq!(topology(2, 1, 7), vec![(0, 1)]);
    }

    #[test]
    fn a_header_reads_back_and_only_well_formed_messages_pass() {
        let judge = Judge {
            size_bytes: 64,
            messages: 10,
            nodes: 3,
        };
        let header = Header {
            published_ns: 1_234_567,
            sequence: 7,
            publisher: 1,
        };
        let mut payload = vec![0xAB; 64];
        header.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(header));
        assert_eq!(judge.check(&payload, 2_000_000), Some(header));
        // From the future, cut short, a sequence out of range, the wrong publisher.
        assert_eq!(judge.check(&payload, 1_000_000), None);
        assert_eq!(judge.check(&payload[..63], 2_000_000), None);
        assert_eq!(Header::read(&payload[..15]), None);
        for wrong in [
            Header {
                sequence: 10,
                ..header
            },
            Header {
                publisher: 2,
                ..header
            },
        ] {
            wrong.write(&mut payload);
            assert_eq!(judge.check(&payload, 2_000_000), None, "{wrong:?}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&sorted[..1], 50.0), Some(1.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn options_out_of_bounds_are_refused_with_the_flag_named() {
        assert_eq!(options().check(), Ok(()));
        let refused = |options: GossipOptions, flag: &str| {
            let error = options.check().expect_err("refused");
            assert!(error.contains(flag), "{error}");
        };
        refused(
            GossipOptions {
                nodes: GOSSIP_BENCH_NODES_MAX + 1,
                ..options()
            },
            "--nodes",
        );
        refused(
            GossipOptions {
                degree: 30,
                ..options()
            },
            "--degree",
        );
        refused(
            GossipOptions {
                messages: GOSSIP_BENCH_MESSAGES_MAX + 1,
                ..options()
            },
            "--messages",
        );
        refused(
            GossipOptions {
                size_bytes: Header::BYTES - 1,
                ..options()
            },
            "--size",
        );
        refused(
            GossipOptions {
                rate_per_second: f64::NAN,
                ..options()
            },
            "--rate",
        );
        refused(
            GossipOptions {
                messages: GOSSIP_BENCH_MESSAGES_MAX,
                rate_per_second: GOSSIP_BENCH_RATE_PER_SECOND_MIN,
                ..options()
            },
            "would publish",
        );
    }
}
