//! `libp2p-peer gossip`: one gossipsub topic among rust-libp2p swarms over
//! loopback TCP, every message judged by the application on every node,
//! the workload of `meshsync bench gossip`, measured the same way.
//!
//! # What runs
//! `--nodes` swarms in this process, each a tokio task of its own,
//! listening on 127.0.0.1, all subscribed to [`TOPIC`]. The graph is
//! meshsync's: node `i` in turn draws distinct others from SplitMix64
//! seeded with `--seed` until it has `--degree` of them, and dials each
//! unless the two are connected already, so the same seed gives the same
//! graph in both.
//!
//! Gossipsub is set as meshsync's router runs in its benchmark: D 8, D_lo 6,
//! D_hi 12, D_lazy 6, a 700 ms heartbeat, a message cache of 6 windows
//! gossiping the last 3, a 2-minute seen cache, a 60 s fanout, flood
//! publishing off, 10 MiB messages at most, IDONTWANT for messages over
//! 1 KiB; the rest at libp2p's defaults. Messages are unsigned
//! (`ValidationMode::Anonymous`): meshsync does not sign them either, its
//! Noise channel authenticates the sender. The message id is meshsync's,
//! the first 20 bytes of SHA-256 over the topic's length (u16, big-endian),
//! the topic and the payload. With `--compression snappy` (the default)
//! payloads travel as raw snappy blocks, as meshsync's do, through
//! gossipsub's data transform.
//!
//! Each node's task is also its application: gossipsub holds every message
//! back (`validate_messages`) until the task has checked it (the size asked
//! for, a header that parses, a sequence number in range published by the
//! node it names, a publish time not in the future) and reported the
//! verdict, so nothing is forwarded that the application has not
//! accepted, as in meshsync's benchmark.
//!
//! # Phases
//! 1. Connect: every dial made, until both ends of every edge have
//!    reported `ConnectionEstablished` (at most [`CONNECT_WAIT_MAX`]).
//! 2. Warm-up: `--warmup-secs` of an idle mesh, whose CPU is reported;
//!    then until every node's mesh holds D_lo peers, or all of its peers
//!    where it has fewer (at most [`MESH_WAIT_MAX`] more).
//! 3. Timed: message `i` is published by node `i mod K` at `t0 + i / rate`,
//!    open loop (a late publish goes at once; the schedule does not slip).
//!    Its payload is `--size` bytes: a [`Header`], then pseudo-random bytes
//!    that snappy cannot shrink. The phase ends when all `M × (K − 1)`
//!    deliveries have arrived, or `--drain-secs` after the last publish.
//!
//! # What is measured
//! - A delivery is a node's application taking a message it did not
//!   publish from gossipsub; its latency is that moment less the publish
//!   time in the payload, stamped by the publishing task just before it
//!   hands the message to the node's task.
//! - Duplicates, from gossipsub's own metrics on the topic: every message
//!   received (`topic_msg_recv_counts_unfiltered`) less those new to the
//!   node (`topic_msg_recv_counts`), over the new ones, summed over the
//!   nodes; meshsync's router counts the same two things.
//! - Process CPU (every task and thread) over the timed phase, per
//!   delivery; over the warm-up's idle seconds, per second; the CPU other
//!   processes used meanwhile; peak resident memory.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::cpu::{self, Spent, Stopwatch};
use crate::flags::Flags;
use crate::stack::{self, Compression, SplitMix64};

/// Nodes at most: meshsync's bound (one more than its peer cap), so both
/// run the same range.
pub const NODES_MAX: u64 = 51;
/// Messages at most. Every delivery is kept (16 bytes) until the report.
pub const MESSAGES_MAX: u32 = 100_000;
/// Payload bytes of one message at most, so that every node's message
/// cache of one process stays within a machine's memory.
pub const MESSAGE_BYTES_MAX: u64 = 1 << 20;
/// Messages per second: from one every 10 s to one every 100 µs, about
/// what a timer can still pace.
pub const RATE_PER_SECOND_MIN: f64 = 0.1;
pub const RATE_PER_SECOND_MAX: f64 = 10_000.0;
/// The longest the publishing may last (`--messages` over `--rate`).
pub const PUBLISH_DURATION_MAX: Duration = Duration::from_secs(3_600);
pub const WARMUP_SECS_MAX: u64 = 600;
pub const DRAIN_SECS_MAX: u64 = 600;
/// The longest wait for every connection of the graph.
pub const CONNECT_WAIT_MAX: Duration = Duration::from_secs(30);
/// The longest wait for the meshes after the warm-up.
pub const MESH_WAIT_MAX: Duration = Duration::from_secs(20);
/// The longest a question to one node's task may take.
const QUERY_WAIT_MAX: Duration = Duration::from_secs(10);
const CONNECT_POLL_INTERVAL: Duration = Duration::from_millis(10);
const MESH_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Orders waiting for one node's task: the publisher hands over at most
/// one message at a time per node, so this is only slack for a slow node.
const CONTROLS_QUEUED_MAX: usize = 1_024;
/// Failures (dials, incoming connections) kept to name in an error.
const FAILURES_KEPT_MAX: usize = 8;
/// The topic every node follows, meshsync's benchmark topic.
pub const TOPIC: &str = "/bench/gossip/1";
/// Mixes a node's index into the seed of its identity, as meshsync does.
const NODE_SEED_MIX: u64 = 0xA076_1D64_78BD_642F;

// Meshsync's router defaults (core/src/gossip/router/config.rs).
const MESH_N: usize = 8;
const MESH_N_LOW: usize = 6;
const MESH_N_HIGH: usize = 12;
const GOSSIP_LAZY: usize = 6;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(700);
const MCACHE_WINDOWS: usize = 6;
const GOSSIP_WINDOWS: usize = 3;
const FANOUT_TTL: Duration = Duration::from_secs(60);
const SEEN_TTL: Duration = Duration::from_secs(120);
/// The largest gossip message, meshsync's `GOSSIP_MESSAGE_BYTES_MAX`.
const TRANSMIT_BYTES_MAX: usize = 10 << 20;
/// IDONTWANT for larger messages. Meshsync compares the payload, libp2p
/// the encoded message (payload, topic, protobuf fields), which is some
/// 40 bytes longer: at `--size 1024` libp2p sends IDONTWANT and meshsync
/// does not, which lowers libp2p's duplicates, not meshsync's.
const IDONTWANT_BYTES_MIN: usize = 1_024;

const _: () = assert!(Header::BYTES as u64 <= MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX as usize <= TRANSMIT_BYTES_MAX);
const _: () = assert!(NODES_MAX <= u32::MAX as u64);

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    nodes: usize,
    size_bytes: usize,
    rate_per_second: f64,
    messages: u32,
    degree: usize,
    warmup: Duration,
    drain: Duration,
    seed: u64,
    compression: Compression,
}

impl Options {
    /// Takes meshsync's `bench gossip` flags with meshsync's defaults and
    /// bounds, and `--compression`.
    pub fn take(flags: &mut Flags) -> Result<Options, String> {
        let nodes = flags.take("nodes", 30, 2..=NODES_MAX)?;
        let size_bytes = flags.take("size", 1_024, Header::BYTES as u64..=MESSAGE_BYTES_MAX)?;
        let rate_per_second =
            flags.take("rate", 50.0, RATE_PER_SECOND_MIN..=RATE_PER_SECOND_MAX)?;
        let messages = flags.take("messages", 1_000, 1..=MESSAGES_MAX)?;
        let degree = flags.take("degree", 6, 1..=nodes - 1)?;
        let warmup_secs = flags.take("warmup-secs", 5, 0..=WARMUP_SECS_MAX)?;
        let drain_secs = flags.take("drain-secs", 10, 0..=DRAIN_SECS_MAX)?;
        let seed = flags.take("seed", 42, 0..=u64::MAX)?;
        let compression = Compression::take(flags)?;
        let publishing = f64::from(messages - 1) / rate_per_second;
        if publishing > PUBLISH_DURATION_MAX.as_secs_f64() {
            return Err(format!(
                "--messages at --rate would publish for {publishing:.0} s, more than {} s",
                PUBLISH_DURATION_MAX.as_secs()
            ));
        }
        // Each within usize: bounded far below by the flags.
        Ok(Options {
            nodes: nodes as usize,
            size_bytes: size_bytes as usize,
            rate_per_second,
            messages,
            degree: degree as usize,
            warmup: Duration::from_secs(warmup_secs),
            drain: Duration::from_secs(drain_secs),
            seed,
            compression,
        })
    }

    /// Deliveries if every node but the publisher gets every message: M × (K − 1).
    fn deliveries_expected(&self) -> u64 {
        u64::from(self.messages) * (self.nodes as u64 - 1)
    }

    /// When message `sequence` is due, after the first.
    fn due(&self, sequence: u32) -> Duration {
        Duration::from_secs_f64(f64::from(sequence) / self.rate_per_second)
    }
}

/// The first bytes of every message, meshsync's benchmark header.
///
/// | bytes | field | why |
/// |---|---|---|
/// | 0..8 | publish time, ns since the run's epoch, big-endian | the latency of each delivery |
/// | 8..12 | sequence number, big-endian | which message |
/// | 12..16 | publisher's index, big-endian | checked against `sequence mod K` |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    published_ns: u64,
    sequence: u32,
    publisher: u32,
}

impl Header {
    const BYTES: usize = 16;

    fn write(&self, payload: &mut [u8]) {
        payload[0..8].copy_from_slice(&self.published_ns.to_be_bytes());
        payload[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        payload[12..16].copy_from_slice(&self.publisher.to_be_bytes());
    }

    fn read(payload: &[u8]) -> Option<Header> {
        let header = payload.get(..Header::BYTES)?;
        Some(Header {
            published_ns: u64::from_be_bytes(header[0..8].try_into().ok()?),
            sequence: u32::from_be_bytes(header[8..12].try_into().ok()?),
            publisher: u32::from_be_bytes(header[12..16].try_into().ok()?),
        })
    }
}

/// What makes a message well-formed in this run: meshsync's check.
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

/// The dials of the graph, (dialler, listener), in the order made:
/// meshsync's `topology`, draw for draw.
fn topology(nodes: usize, degree: usize, seed: u64) -> Vec<(usize, usize)> {
    assert!(
        nodes >= 2 && (1..nodes).contains(&degree),
        "checked by Options::take"
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

/// Nanoseconds from `epoch` to now: the clock every task of the run shares.
fn nanos_since(epoch: Instant) -> u64 {
    // u64 nanoseconds last 584 years.
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Payloads as raw snappy blocks on the wire, or as they are.
struct Transform {
    compression: Compression,
}

impl gossipsub::DataTransform for Transform {
    fn inbound_transform(
        &self,
        raw: gossipsub::RawMessage,
    ) -> Result<gossipsub::Message, std::io::Error> {
        let data = match self.compression {
            Compression::None => raw.data,
            Compression::Snappy => {
                let invalid = |what: &str| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
                };
                // The declared length is checked before anything is allocated for it.
                let declared =
                    snap::raw::decompress_len(&raw.data).map_err(|_| invalid("snappy"))?;
                if declared > TRANSMIT_BYTES_MAX {
                    return Err(invalid("a message that would decompress too long"));
                }
                snap::raw::Decoder::new()
                    .decompress_vec(&raw.data)
                    .map_err(|_| invalid("snappy"))?
            }
        };
        Ok(gossipsub::Message {
            source: raw.source,
            data,
            sequence_number: raw.sequence_number,
            topic: raw.topic,
        })
    }

    fn outbound_transform(
        &self,
        _: &gossipsub::TopicHash,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, std::io::Error> {
        match self.compression {
            Compression::None => Ok(data),
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(&data)
                .map_err(std::io::Error::other),
        }
    }
}

type Gossip = gossipsub::Behaviour<Transform, gossipsub::AllowAllSubscriptionFilter>;

/// Meshsync's message id: the first 20 bytes of
/// `sha256(len(topic) as u16 big-endian ‖ topic ‖ payload)`.
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let topic = message.topic.as_str().as_bytes();
    let mut hasher = Sha256::new();
    // Topics are far shorter than 64 KiB: gossipsub names them in a frame.
    hasher.update((topic.len() as u16).to_be_bytes());
    hasher.update(topic);
    hasher.update(&message.data);
    gossipsub::MessageId::new(&hasher.finalize()[..20])
}

fn router_config() -> gossipsub::Config {
    gossipsub::ConfigBuilder::default()
        .mesh_n(MESH_N)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(MESH_N_HIGH)
        .gossip_lazy(GOSSIP_LAZY)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .history_length(MCACHE_WINDOWS)
        .history_gossip(GOSSIP_WINDOWS)
        .fanout_ttl(FANOUT_TTL)
        .duplicate_cache_time(SEEN_TTL)
        .flood_publish(false)
        .max_transmit_size(TRANSMIT_BYTES_MAX)
        .idontwant_message_size_threshold(IDONTWANT_BYTES_MIN)
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .build()
        .expect("the constants above make a valid gossipsub configuration")
}

/// What every node's task tells the benchmark as it goes.
struct Tally {
    connected: AtomicU64,
    disconnected: AtomicU64,
    delivered: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    publish_failures: AtomicU64,
    /// The latest delivery, ns since the epoch.
    last_delivery_ns: AtomicU64,
    /// Failed dials and incoming connections, the first [`FAILURES_KEPT_MAX`], in words.
    failures: Mutex<Vec<String>>,
    /// Deliveries at which `all_delivered` is notified.
    expected: u64,
    all_delivered: Notify,
}

impl Tally {
    fn fail(&self, failure: String) {
        // A poisoned lock means a task panicked holding it: keep what it holds.
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
    /// Messages handed over again after a first delivery, or its own:
    /// none are expected, gossipsub hands each id over once.
    repeats: u64,
}

/// What the benchmark asks of a node's task.
enum Control {
    Publish(Vec<u8>),
    /// Its mesh size on the topic and its connected peers.
    Mesh(oneshot::Sender<(usize, usize)>),
    /// Stop, handing back what the application recorded.
    Stop(oneshot::Sender<Received>),
}

/// One node: its swarm and its application, on one task.
struct Node {
    index: usize,
    swarm: Swarm<Gossip>,
    topic: gossipsub::IdentTopic,
    judge: Judge,
    epoch: Instant,
    tally: Arc<Tally>,
    received: Received,
    /// Which sequence numbers it has had.
    seen: Vec<bool>,
}

impl Node {
    async fn run(mut self, mut controls: mpsc::Receiver<Control>) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                control = controls.recv() => match control {
                    Some(Control::Publish(payload)) => {
                        let topic = self.topic.clone();
                        if self.swarm.behaviour_mut().publish(topic, payload).is_err() {
                            self.tally.publish_failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Control::Mesh(reply)) => {
                        let mesh = self.swarm.behaviour().mesh_peers(&self.topic.hash()).count();
                        let _ = reply.send((mesh, self.swarm.connected_peers().count()));
                    }
                    Some(Control::Stop(reply)) => {
                        let _ = reply.send(std::mem::take(&mut self.received));
                        return;
                    }
                    // The benchmark is gone.
                    None => return,
                },
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<gossipsub::Event>) {
        let tally = &self.tally;
        match event {
            SwarmEvent::Behaviour(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let verdict = self.judge_message(&message);
                self.swarm.behaviour_mut().report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    verdict,
                );
            }
            SwarmEvent::ConnectionEstablished { .. } => {
                tally.connected.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionClosed { .. } => {
                tally.disconnected.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                tally.fail(format!("node {}: a dial failed: {error}", self.index))
            }
            SwarmEvent::IncomingConnectionError { error, .. } => tally.fail(format!(
                "node {}: an incoming connection failed: {error}",
                self.index
            )),
            _ => {}
        }
    }

    /// The application's check of one message, and its record if a delivery.
    fn judge_message(&mut self, message: &gossipsub::Message) -> MessageAcceptance {
        let now_ns = nanos_since(self.epoch);
        let tally = &self.tally;
        if message.topic != self.topic.hash() {
            return MessageAcceptance::Ignore;
        }
        let Some(header) = self.judge.check(&message.data, now_ns) else {
            tally.rejected.fetch_add(1, Ordering::Relaxed);
            return MessageAcceptance::Reject;
        };
        tally.accepted.fetch_add(1, Ordering::Relaxed);
        let first = !std::mem::replace(&mut self.seen[header.sequence as usize], true);
        if first && header.publisher as usize != self.index {
            let latency_ns = now_ns - header.published_ns;
            self.received.deliveries.push((header.sequence, latency_ns));
            tally.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
            if tally.delivered.fetch_add(1, Ordering::Relaxed) + 1 == tally.expected {
                tally.all_delivered.notify_one();
            }
        } else {
            self.received.repeats += 1;
        }
        MessageAcceptance::Accept
    }
}

/// The running nodes' tasks; dropping it aborts every one, whichever way
/// the benchmark ends.
#[derive(Default)]
struct Nodes {
    controls: Vec<mpsc::Sender<Control>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Nodes {
    async fn send(&self, index: usize, control: Control) -> Result<(), String> {
        self.controls[index]
            .send(control)
            .await
            .map_err(|_| format!("node {index}: its task ended"))
    }

    /// Asks node `index` something and waits for the answer.
    async fn ask<R>(
        &self,
        index: usize,
        control: impl FnOnce(oneshot::Sender<R>) -> Control,
    ) -> Result<R, String> {
        let (reply, answer) = oneshot::channel();
        self.send(index, control(reply)).await?;
        tokio::time::timeout(QUERY_WAIT_MAX, answer)
            .await
            .map_err(|_| format!("node {index}: no answer in {QUERY_WAIT_MAX:?}"))?
            .map_err(|_| format!("node {index}: its task ended"))
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs the benchmark.
pub async fn run(options: Options) -> Result<serde_json::Value, String> {
    let dials = topology(options.nodes, options.degree, options.seed);
    let topic = gossipsub::IdentTopic::new(TOPIC);
    let tally = Arc::new(Tally {
        connected: AtomicU64::new(0),
        disconnected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        publish_failures: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        expected: options.deliveries_expected(),
        all_delivered: Notify::new(),
    });
    let epoch = Instant::now();

    // Every swarm listening, then every dial made, before any task runs.
    let mut registry = Registry::default();
    let mut swarms = Vec::with_capacity(options.nodes);
    let mut addresses: Vec<(PeerId, Multiaddr)> = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        let mut rng = SplitMix64(options.seed ^ (index as u64).wrapping_mul(NODE_SEED_MIX));
        let mut behaviour: Gossip = gossipsub::Behaviour::new_with_transform(
            gossipsub::MessageAuthenticity::Anonymous,
            router_config(),
            Transform {
                compression: options.compression,
            },
        )
        .map_err(|error| format!("node {index}: gossipsub: {error}"))?;
        let label = (Cow::Borrowed("node"), Cow::Owned(index.to_string()));
        behaviour =
            behaviour.with_metrics(registry.sub_registry_with_label(label), Default::default());
        behaviour
            .subscribe(&topic)
            .map_err(|error| format!("node {index}: subscribe: {error}"))?;
        let mut swarm = stack::swarm(stack::identity(rng.next_u64()), behaviour);
        let address = stack::listen(&mut swarm)
            .await
            .map_err(|error| format!("node {index}: {error}"))?;
        addresses.push((*swarm.local_peer_id(), address));
        swarms.push(swarm);
    }
    let connect_start = Instant::now();
    for &(from, to) in &dials {
        let (peer, address) = addresses[to].clone();
        swarms[from]
            .dial(DialOpts::peer_id(peer).addresses(vec![address]).build())
            .map_err(|error| format!("node {from}: dial node {to}: {error}"))?;
    }
    let mut nodes = Nodes::default();
    let judge = Judge {
        size_bytes: options.size_bytes,
        messages: options.messages,
        // Below u32::MAX: NODES_MAX is.
        nodes: options.nodes as u32,
    };
    for (index, swarm) in swarms.into_iter().enumerate() {
        let (control, controls) = mpsc::channel(CONTROLS_QUEUED_MAX);
        let node = Node {
            index,
            swarm,
            topic: topic.clone(),
            judge,
            epoch,
            tally: Arc::clone(&tally),
            received: Received::default(),
            seen: vec![false; options.messages as usize],
        };
        nodes.controls.push(control);
        nodes.tasks.push(tokio::spawn(node.run(controls)));
    }
    wait_for_connections(&tally, dials.len()).await?;
    let connect = connect_start.elapsed();

    let stopwatch = Stopwatch::start();
    tokio::time::sleep(options.warmup).await;
    let idle = stopwatch.stop();
    let mesh_sizes = wait_for_meshes(&nodes).await?;

    let before = RouterCounts::read(&registry)?;
    let (timed, publishing, start_ns) = publish_and_drain(&nodes, &options, epoch, &tally).await?;
    let router = RouterCounts::read(&registry)?.since(before);
    let disconnections = tally.disconnected.load(Ordering::Relaxed);
    let rss_peak_mib = cpu::rss_peak_mib();
    let mut received = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        received.push(nodes.ask(index, Control::Stop).await?);
    }
    drop(nodes);

    let last_delivery_ns = tally.last_delivery_ns.load(Ordering::Relaxed);
    let last_delivery =
        (last_delivery_ns > start_ns).then(|| Duration::from_nanos(last_delivery_ns - start_ns));
    let (latencies_ns, full_propagation_ns, repeats) = gather(&received, &options);
    let report = Report {
        options,
        edges: dials.len(),
        connect,
        idle,
        mesh_sizes,
        timed,
        publishing,
        last_delivery,
        latencies_ns,
        full_propagation_ns,
        router,
        accepted: tally.accepted.load(Ordering::Relaxed),
        rejected: tally.rejected.load(Ordering::Relaxed),
        publish_failures: tally.publish_failures.load(Ordering::Relaxed),
        disconnections,
        repeats,
        rss_peak_mib,
    };
    Ok(report.json())
}

/// Waits until both ends of every edge have connected.
async fn wait_for_connections(tally: &Tally, edges: usize) -> Result<(), String> {
    let ends = 2 * edges as u64;
    let deadline = Instant::now() + CONNECT_WAIT_MAX;
    loop {
        if let Some(failure) = tally.first_failure() {
            return Err(format!("while connecting: {failure}"));
        }
        let connected = tally.connected.load(Ordering::Relaxed);
        if connected >= ends {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{connected} of {ends} connection ends were up after {CONNECT_WAIT_MAX:?}"
            ));
        }
        tokio::time::sleep(CONNECT_POLL_INTERVAL).await;
    }
}

/// Each node's mesh size once every mesh holds D_lo peers, or all of its
/// node's peers where it has fewer; past [`MESH_WAIT_MAX`], the sizes as they are.
async fn wait_for_meshes(nodes: &Nodes) -> Result<Vec<usize>, String> {
    let deadline = Instant::now() + MESH_WAIT_MAX;
    loop {
        let mut sizes = Vec::with_capacity(nodes.controls.len());
        let mut formed = true;
        for index in 0..nodes.controls.len() {
            let (mesh, peers) = nodes.ask(index, Control::Mesh).await?;
            formed &= mesh >= MESH_N_LOW.min(peers);
            sizes.push(mesh);
        }
        if formed || Instant::now() >= deadline {
            return Ok(sizes);
        }
        tokio::time::sleep(MESH_POLL_INTERVAL).await;
    }
}

/// Publishes every message on its schedule, then waits for the last
/// delivery or the end of the drain. Returns what the phase took, how long
/// the publishing took, and the phase's start (ns since the epoch).
async fn publish_and_drain(
    nodes: &Nodes,
    options: &Options,
    epoch: Instant,
    tally: &Tally,
) -> Result<(Spent, Duration, u64), String> {
    let stopwatch = Stopwatch::start();
    let start = tokio::time::Instant::now();
    let start_ns = nanos_since(epoch);
    for sequence in 0..options.messages {
        let publisher = sequence as usize % options.nodes;
        // The padding first, so that the publish time is stamped as late as it can be.
        let mut payload = vec![0u8; options.size_bytes];
        SplitMix64(options.seed ^ u64::from(sequence)).fill_bytes(&mut payload[Header::BYTES..]);
        tokio::time::sleep_until(start + options.due(sequence)).await;
        let header = Header {
            published_ns: nanos_since(epoch),
            sequence,
            // Below u32::MAX: NODES_MAX is.
            publisher: publisher as u32,
        };
        header.write(&mut payload);
        nodes.send(publisher, Control::Publish(payload)).await?;
    }
    let publishing = start.elapsed();
    // Either every delivery has arrived (the notification keeps its permit
    // if it came first) or the drain is over.
    let _ = tokio::time::timeout(options.drain, tally.all_delivered.notified()).await;
    let spent = stopwatch.stop();
    if let Some(failure) = tally.first_failure() {
        eprintln!("gossip: {failure}");
    }
    Ok((spent, publishing, start_ns))
}

/// What gossipsub counted on the topic, summed over the nodes.
#[derive(Clone, Copy, Debug, Default)]
struct RouterCounts {
    /// Every message received, duplicates included.
    received_with_duplicates: u64,
    /// Messages new to the node.
    received: u64,
}

impl RouterCounts {
    /// Reads the counters from every node's metrics.
    fn read(registry: &Registry) -> Result<RouterCounts, String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)
            .map_err(|error| format!("gossipsub metrics: {error}"))?;
        Ok(RouterCounts {
            received_with_duplicates: counter_sum(&text, "topic_msg_recv_counts_unfiltered_total"),
            received: counter_sum(&text, "topic_msg_recv_counts_total"),
        })
    }

    fn since(self, before: RouterCounts) -> RouterCounts {
        RouterCounts {
            received_with_duplicates: self
                .received_with_duplicates
                .saturating_sub(before.received_with_duplicates),
            received: self.received.saturating_sub(before.received),
        }
    }

    fn duplicates(&self) -> u64 {
        self.received_with_duplicates.saturating_sub(self.received)
    }
}

/// The sum of every sample of counter `name` (all its labels) in
/// OpenMetrics text.
fn counter_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every delivery's latency (sorted), each fully delivered message's last
/// latency (sorted), and the repeats, from every application's record.
fn gather(received: &[Received], options: &Options) -> (Vec<u64>, Vec<u64>, u64) {
    let total: usize = received.iter().map(|record| record.deliveries.len()).sum();
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

/// The figures of one run.
struct Report {
    options: Options,
    edges: usize,
    connect: Duration,
    idle: Spent,
    mesh_sizes: Vec<usize>,
    timed: Spent,
    publishing: Duration,
    last_delivery: Option<Duration>,
    latencies_ns: Vec<u64>,
    full_propagation_ns: Vec<u64>,
    router: RouterCounts,
    accepted: u64,
    rejected: u64,
    publish_failures: u64,
    disconnections: u64,
    repeats: u64,
    rss_peak_mib: Option<f64>,
}

impl Report {
    /// One JSON object, each figure named as `meshsync bench gossip --json` names it.
    fn json(&self) -> serde_json::Value {
        let options = &self.options;
        let seconds = |duration: Duration| duration.as_secs_f64();
        let deliveries = self.latencies_ns.len() as u64;
        let latency_ms = |percent| stack::percentile_ms(&self.latencies_ns, percent);
        let latency_mean_ms = (deliveries > 0).then(|| {
            let total: u128 = self.latencies_ns.iter().map(|&ns| u128::from(ns)).sum();
            total as f64 / deliveries as f64 / 1e6
        });
        let router = self.router;
        let mesh_mean =
            self.mesh_sizes.iter().sum::<usize>() as f64 / self.mesh_sizes.len().max(1) as f64;
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
            "compression": options.compression.name(),
            "warmup_seconds": seconds(options.warmup),
            "drain_seconds": seconds(options.drain),
            "connect_seconds": seconds(self.connect),
            "mesh_min": self.mesh_sizes.iter().min(),
            "mesh_mean": mesh_mean,
            "mesh_max": self.mesh_sizes.iter().max(),
            "publish_seconds": seconds(self.publishing),
            "seconds": seconds(self.timed.wall),
            "last_delivery_seconds": self.last_delivery.map(seconds),
        });
        let delivered = serde_json::json!({
            "deliveries_expected": options.deliveries_expected(),
            "deliveries": deliveries,
            "delivery_ratio": deliveries as f64 / options.deliveries_expected() as f64,
            "fully_delivered_messages": self.full_propagation_ns.len(),
            "latency_p50_ms": latency_ms(50.0),
            "latency_p90_ms": latency_ms(90.0),
            "latency_p99_ms": latency_ms(99.0),
            "latency_max_ms": latency_ms(100.0),
            "latency_mean_ms": latency_mean_ms,
            "full_propagation_p50_ms": stack::percentile_ms(&self.full_propagation_ns, 50.0),
            "full_propagation_p99_ms": stack::percentile_ms(&self.full_propagation_ns, 99.0),
            "received_unique": router.received,
            "received_with_duplicates": router.received_with_duplicates,
            "duplicates": router.duplicates(),
            "duplicates_per_delivery": (router.received > 0)
                .then(|| router.duplicates() as f64 / router.received as f64),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "publish_failures": self.publish_failures,
            "disconnections": self.disconnections,
            "repeats": self.repeats,
        });
        let cpu_seconds = self.timed.cpu.map(seconds);
        let cost = serde_json::json!({
            "cpu_seconds": cpu_seconds,
            "cpu_cores": self.timed.cpu_cores(),
            "cpu_us_per_delivery": cpu_seconds
                .filter(|_| deliveries > 0)
                .map(|cpu| cpu * 1e6 / deliveries as f64),
            "idle_seconds": seconds(self.idle.wall),
            "idle_cpu_seconds": self.idle.cpu.map(seconds),
            "idle_cpu_cores": self.idle.cpu_cores(),
            "other_cpu_cores": self.timed.other_cpu_cores(),
            "rss_peak_mib": self.rss_peak_mib,
            "cpu_resolution_seconds": cpu::RESOLUTION.as_secs_f64(),
        });
        let mut object = serde_json::Map::new();
        for part in [run, delivered, cost] {
            if let serde_json::Value::Object(fields) = part {
                object.extend(fields);
            }
        }
        serde_json::Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph rule gives every node at least `degree` peers and never
    /// dials one edge twice; its mean degree is about twice `degree`.
    #[test]
    fn the_graph_is_meshsyncs_rule() {
        let dials = topology(30, 6, 42);
        let mut peers = vec![0usize; 30];
        let mut edges = BTreeSet::new();
        for &(from, to) in &dials {
            assert!(
                edges.insert((from.min(to), from.max(to))),
                "edge dialled twice"
            );
            peers[from] += 1;
            peers[to] += 1;
        }
        assert!(peers.iter().all(|&count| count >= 6));
        let mean = peers.iter().sum::<usize>() as f64 / 30.0;
        assert!((9.0..12.0).contains(&mean), "mean degree {mean}");
    }

    #[test]
    fn a_message_is_judged_as_meshsync_judges_it() {
        let judge = Judge {
            size_bytes: 64,
            messages: 10,
            nodes: 3,
        };
        let mut payload = vec![0u8; 64];
        let header = Header {
            published_ns: 5,
            sequence: 4,
            publisher: 1,
        };
        header.write(&mut payload);
        assert_eq!(judge.check(&payload, 5), Some(header));
        assert_eq!(judge.check(&payload, 4), None, "published in the future");
        assert_eq!(judge.check(&payload[..63], 5), None, "the wrong size");
        Header {
            publisher: 2,
            ..header
        }
        .write(&mut payload);
        assert_eq!(
            judge.check(&payload, 5),
            None,
            "not the publisher of its turn"
        );
    }

    #[test]
    fn counters_are_summed_over_every_label() {
        let text = "# TYPE topic_msg_recv_counts counter\n\
                    topic_msg_recv_counts_total{node=\"0\",hash=\"t\"} 3\n\
                    topic_msg_recv_counts_total{node=\"1\",hash=\"t\"} 4\n\
                    topic_msg_recv_counts_unfiltered_total{node=\"0\",hash=\"t\"} 9\n";
        assert_eq!(counter_sum(text, "topic_msg_recv_counts_total"), 7);
        assert_eq!(
            counter_sum(text, "topic_msg_recv_counts_unfiltered_total"),
            9
        );
    }
}
