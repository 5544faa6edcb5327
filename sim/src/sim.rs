//! The simulated world: nodes, the network between them, one clock, one queue.
//!
//! # Design
//! [`Sim`] is the driver of every node at once. It owns the virtual clock,
//! the [`EventQueue`], the [`Network`] and the nodes, and does for each node
//! what `io-mio` does for one, following the core's run-loop contract:
//! `handle(now, input)`, drain `poll_action()` into effects, ask
//! `poll_timeout()` for the next wake-up. Nodes never call each other: every
//! effect on another node becomes an event in the queue, due when the link
//! model says, so one step is one event and touches at most two nodes.
//!
//! Randomness comes from the world seed only. It is split at construction
//! into three independent ChaCha20 streams: one draws each node's seeds (so
//! node *i*'s identity depends only on the seed and *i*), one draws network
//! delays and slicing, and one is lent to scenarios for their plans.
//!
//! Timers: each node has at most one live timer event. A new wake-up instant
//! bumps the node's timer generation and queues an event carrying it; events
//! with an older generation are stale and skipped without counting as steps.
//!
//! Crashes: [`Sim::crash`] stops a node as a killed process stops. Its
//! connections end (each remote sees `ConnectionClosed` once the bytes
//! already on their way have arrived), its dials in progress die with it,
//! whatever was on its way to it is dropped, and dials to it are refused,
//! both when they are made and when they would have connected.
//! [`Sim::restart`] starts a fresh [`Node`] with the same identity and
//! configuration and a new seed derived from the old one and the restart
//! count, and with the blocks its modelled disk holds (a persist batch is on
//! the disk once its modelled write completed; a crash loses the ones still
//! being written); nothing else survives. Each life of a
//! node is an *incarnation*; events addressed to an earlier one (a late dial
//! answer, a stale timer) are dropped.
//!
//! Bandwidth: every node has an uplink and a downlink rate, 50 Mbit/s each
//! by default ([`SimConfig::bandwidth_bytes_per_second`], [`Sim::set_uplink`],
//! [`Sim::set_downlink`]). Its sends leave one after another, each taking its
//! size over the rate, so a burst of responses to one peer delays what it
//! sends to the others; when the last byte has left, the node hears
//! `Input::BytesWritten`. Arrivals then queue for the receiver's downlink,
//! booked in the order they were sent.
//! Bytes queued on one connection beyond
//! [`meshsync_core::limits::PENDING_SEND_BYTES_MAX`] close it with
//! `CloseCause::SendBufferFull`, as the `Action::Send` contract says.
//!
//! Applications: scenarios run logic beside the nodes (see [`crate::app`]):
//! it hears notifications and its own wake-ups ([`Sim::wake_at`]) and gives
//! commands. Requests given through [`Sim::request`] (or any
//! `Command::Request`) are timed into a [`RequestLog`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use meshsync_core::chain::{Root, SignedBlock};
use meshsync_core::io::{CloseCause, DisconnectReason};
use meshsync_core::metrics::Counters;
use meshsync_core::reqresp::ProtocolId;
use meshsync_core::work::{Job, PersistBatch, WorkId, WorkOutput};
use meshsync_core::{
    Action, Command, Config, ConnId, DialId, Direction, Duration, Faults, Health, Identity, Input,
    Instant, Node, Notification, Origin, PeerId,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::app::AppEvent;
use crate::invariants::{self, NodeView, Violation, Violations};
use crate::link::LinkModel;
use crate::network::{self, Network};
use crate::queue::EventQueue;
use crate::requests::{self, RequestLog, RequestOutcome};
use crate::rng;
use crate::summary::Summary;
use crate::trace::{Marker, Trace};

/// Network id every simulated node is configured with, unless a test says otherwise.
pub const NETWORK_ID_DEFAULT: u64 = 0x6d65_7368; // "mesh"
/// Port every simulated node listens on by default.
pub const LISTEN_PORT_DEFAULT: u16 = 9000;
/// Notifications kept per node for inspection; older ones are dropped first.
pub const NOTIFICATIONS_KEPT_PER_NODE_MAX: usize = 4_096;
/// Dials kept per node in its dial log; older ones are dropped first.
pub const DIALS_KEPT_PER_NODE_MAX: usize = 4_096;
/// Application events waiting to be taken. An application takes them after
/// every step, so only a world with collection on and nobody taking fills it.
pub const APP_EVENTS_PENDING_MAX: usize = 1 << 20;
/// How far a node that asks for a wake-up at or before the timeout it just
/// handled is pushed forward, so a buggy timer cannot stall the clock.
pub const TIMER_STALL_BACKOFF: Duration = Duration::from_millis(1);

/// A node's place in the simulation, in the order nodes were added.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeIndex(pub usize);

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// How to build a world.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one seed everything random derives from.
    pub seed: u64,
    /// The model every link follows.
    pub link: LinkModel,
    /// The network id nodes added with [`Sim::add_node`] use.
    pub network_id: u64,
    /// A label for summaries (the scenario's name).
    pub label: String,
    /// Every node's uplink and downlink rate, bytes per second (`None`:
    /// unlimited). [`Sim::set_uplink`] and [`Sim::set_downlink`] change one node's.
    pub bandwidth_bytes_per_second: Option<u64>,
}

/// Fixed cost of one modelled disk write (a durable commit: an fsync).
pub const DISK_WRITE_LATENCY: Duration = Duration::from_millis(2);
/// Modelled disk write throughput.
pub const DISK_WRITE_BYTES_PER_SECOND: u64 = 200_000_000;

/// The default bandwidth of every node, each way: 50 Mbit/s.
pub const BANDWIDTH_BYTES_PER_SECOND_DEFAULT: u64 = 50_000_000 / 8;

impl SimConfig {
    /// Defaults for everything but the seed.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            link: LinkModel::default(),
            network_id: NETWORK_ID_DEFAULT,
            label: "custom".to_owned(),
            bandwidth_bytes_per_second: Some(BANDWIDTH_BYTES_PER_SECOND_DEFAULT),
        }
    }
}

/// `run_until` gave up: the predicate did not hold within its bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// Steps taken before giving up.
    pub steps: u64,
    /// Virtual time when it gave up.
    pub now: Instant,
    /// True if it stopped because nothing was left to happen, not because of the bound.
    pub idle: bool,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.idle {
            write!(
                f,
                "predicate still false after {} steps at {}: nothing left to happen",
                self.steps, self.now
            )
        } else {
            write!(
                f,
                "predicate still false after the bound of {} steps, at {}",
                self.steps, self.now
            )
        }
    }
}

impl std::error::Error for Timeout {}

/// Counts of notifications, by kind, over all nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NotificationCounts {
    /// `PeerConnected`.
    pub peer_connected: u64,
    /// `PeerConnected` with `Direction::Outbound`: one per completed handshake.
    pub peer_connected_outbound: u64,
    /// `PeerDisconnected`.
    pub peer_disconnected: u64,
    /// `PeerDisconnected` for silence.
    pub peer_disconnected_silent: u64,
    /// `ConnectionRefused`.
    pub connection_refused: u64,
    /// `DialFailed`.
    pub dial_failed: u64,
    /// `Response`.
    pub response: u64,
    /// `RequestFailed`.
    pub request_failed: u64,
    /// `PeerBanned`.
    pub peer_banned: u64,
}

/// What the network did, counted by the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkCounts {
    /// Transport connections set up (both ends told).
    pub connections_established: u64,
    /// Dials answered with a refusal (nobody listening there, or the node is down).
    pub dials_refused: u64,
    /// `Action::Send`s applied.
    pub sends: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Bytes delivered to a node.
    pub bytes_delivered: u64,
    /// Bytes lost: sent by a blackholed node, or arriving at a closed end.
    pub bytes_dropped: u64,
    /// Connections closed because too much waited to go out on them.
    pub send_buffer_overflows: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
}

/// Something due at an instant.
#[derive(Debug)]
enum Event {
    /// An application command for a node.
    Command { node: NodeIndex, command: Command },
    /// A dial's TCP handshake completed: both ends learn of the connection.
    Connect {
        dialer: NodeIndex,
        incarnation: u32,
        dial: DialId,
        acceptor: NodeIndex,
    },
    /// A dial reached an address nobody listens on.
    DialRefused {
        node: NodeIndex,
        incarnation: u32,
        dial: DialId,
        error: String,
    },
    /// Bytes arrive at one end of a connection.
    Bytes {
        node: NodeIndex,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// The remote's close arrives at one end of a connection.
    Closed {
        node: NodeIndex,
        conn: ConnId,
        cause: CloseCause,
    },
    /// A job of `node`'s is done (if that life of the node still runs).
    WorkDone {
        node: NodeIndex,
        incarnation: u32,
        id: WorkId,
        output: WorkOutput,
    },
    /// A persist batch of `node`'s reached its disk (if that life still runs).
    Persisted {
        node: NodeIndex,
        incarnation: u32,
        batch: PersistBatch,
    },
    /// `node`'s failing disk is tried again (see [`Sim::fail_disk`]).
    DiskRetry { node: NodeIndex, incarnation: u32 },
    /// `node`'s driver wrote `bytes` of its sends on `conn` (they left its uplink).
    Written {
        node: NodeIndex,
        conn: ConnId,
        bytes: usize,
    },
    /// The driver of `node` gives up a connection of its own (send buffer full).
    LocalClose {
        node: NodeIndex,
        conn: ConnId,
        cause: CloseCause,
    },
    /// A node's wake-up, valid only while its generation is current.
    Timer { node: NodeIndex, generation: u64 },
    /// The node's process dies.
    Crash { node: NodeIndex },
    /// The node's process starts again.
    Restart { node: NodeIndex },
    /// An application's wake-up.
    Wake { token: u64 },
}

/// One simulated node and the driver state the simulator keeps for it.
struct SimNode {
    node: Node,
    /// The configuration every incarnation starts with.
    config: Config,
    /// What the identity is derived from, so a restart keeps it.
    identity_seed: u64,
    /// The first incarnation's seed; later ones are derived from it.
    node_seed: [u8; 32],
    /// 0 for the first life, one more per restart.
    incarnation: u32,
    up: bool,
    peer_id: PeerId,
    addr: SocketAddr,
    peers_max: usize,
    /// Bytes per second the node can send, if limited.
    uplink_bytes_per_second: Option<u64>,
    /// When the uplink finishes sending what it was given so far.
    uplink_free_at: Instant,
    /// When the node's modelled CPU finishes the jobs it was given.
    cpu_free_at: Instant,
    /// When the node's modelled disk finishes the writes it was given.
    disk_free_at: Instant,
    /// The node's disk: blocks whose persist batch completed. A restart
    /// starts from these.
    disk: BTreeMap<Root, SignedBlock>,
    /// Until when the disk refuses writes (see [`Sim::fail_disk`]).
    disk_fails_until: Instant,
    /// Batches the failing disk refused, waiting in order for a retry.
    disk_unwritten: VecDeque<PersistBatch>,
    /// Bytes per second the node can receive, if limited.
    downlink_bytes_per_second: Option<u64>,
    /// When the downlink finishes receiving what is on its way so far.
    downlink_free_at: Instant,
    /// Fault: the node takes in nothing (its sockets' receive buffers are
    /// full), so what others send it stays in their send queues.
    stopped_reading: bool,
    /// Generation of the live timer event; older ones are stale.
    timer_generation: u64,
    /// The instant of the live timer event, if one is queued.
    timer_at: Option<Instant>,
    /// Dials asked for and neither answered nor cancelled yet.
    dials: BTreeSet<DialId>,
    /// Every dial asked for, with when (the last [`DIALS_KEPT_PER_NODE_MAX`]).
    dial_log: VecDeque<(Instant, SocketAddr)>,
    notifications: VecDeque<(Instant, Notification)>,
    /// Peers announced connected and not since disconnected.
    notified_peers: BTreeSet<PeerId>,
    /// Counters of earlier incarnations.
    retired_counters: Vec<Counters>,
    /// The next tag [`Sim::request`] gives a request of this node.
    request_tag_next: u64,
}

/// The simulated world. See the module docs.
pub struct Sim {
    config: SimConfig,
    now: Instant,
    queue: EventQueue<Event>,
    rng_nodes: ChaCha20Rng,
    rng_network: ChaCha20Rng,
    rng_scenario: ChaCha20Rng,
    nodes: Vec<SimNode>,
    by_peer_id: BTreeMap<PeerId, NodeIndex>,
    network: Network,
    trace: Trace,
    violations: Violations,
    notification_counts: NotificationCounts,
    network_counts: NetworkCounts,
    requests: RequestLog,
    app_events: VecDeque<AppEvent>,
    collect_app_events: bool,
    events: u64,
    dials_planned: Vec<(NodeIndex, NodeIndex)>,
    wall_started: std::time::Instant,
}

/// A node configuration with every default, listening on `listen_port`.
pub fn node_config(network_id: u64, listen_port: u16) -> Config {
    let mut config = Config::new(network_id);
    config.listen_port = listen_port;
    config
}

/// The seed of incarnation `incarnation` of a node whose first seed was `first`.
/// How long `bytes` take on a link of `rate` bytes per second, rounded up so
/// even one byte takes time on a limited link.
fn transmit_time(bytes: usize, rate: u64) -> Duration {
    let micros = (bytes as u128 * 1_000_000).div_ceil(u128::from(rate));
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

fn incarnation_seed(first: &[u8; 32], incarnation: u32) -> [u8; 32] {
    if incarnation == 0 {
        return *first;
    }
    let mut hasher = Sha256::new();
    hasher.update(b"meshsync-sim restart");
    hasher.update(first);
    hasher.update(incarnation.to_le_bytes());
    hasher.finalize().into()
}

impl Sim {
    /// An empty world at virtual time zero.
    pub fn new(config: SimConfig) -> Sim {
        let mut world = ChaCha20Rng::seed_from_u64(config.seed);
        let rng_nodes = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        let rng_network = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        let rng_scenario = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        Sim {
            network: Network::new(config.link),
            config,
            now: Instant::ZERO,
            queue: EventQueue::new(),
            rng_nodes,
            rng_network,
            rng_scenario,
            nodes: Vec::new(),
            by_peer_id: BTreeMap::new(),
            trace: Trace::new(),
            violations: Violations::default(),
            notification_counts: NotificationCounts::default(),
            network_counts: NetworkCounts::default(),
            requests: RequestLog::new(),
            app_events: VecDeque::new(),
            collect_app_events: false,
            events: 0,
            dials_planned: Vec::new(),
            wall_started: std::time::Instant::now(),
        }
    }

    // ---- Building the world ----

    /// The configuration [`Sim::add_node`] uses: every default, on this
    /// world's network, listening on [`LISTEN_PORT_DEFAULT`]. Change what a
    /// scenario needs (faults, chain) and pass it to [`Sim::add_node_with_config`].
    pub fn node_config(&self) -> Config {
        node_config(self.config.network_id, LISTEN_PORT_DEFAULT)
    }

    /// Adds a node with the default configuration; it listens at once.
    pub fn add_node(&mut self) -> NodeIndex {
        let config = self.node_config();
        self.add_node_with_config(config)
    }

    /// Adds a node with `config`; it listens on `config.listen_port` at its address.
    /// A node whose `config.faults` are all off counts as honest.
    pub fn add_node_with_config(&mut self, config: Config) -> NodeIndex {
        let index = NodeIndex(self.nodes.len());
        let addr = network::node_address(index, config.listen_port);
        let node_seed = rng::seed_bytes(&mut self.rng_nodes);
        let identity_seed = self.rng_nodes.next_u64();
        let identity = Identity::from_seed(identity_seed);
        let peer_id = identity.peer_id();
        let peers_max = config.peer.limits.peers_max;
        let node = Node::new(config.clone(), identity, node_seed);
        assert_eq!(
            node.peer_id(),
            peer_id,
            "the node must use the identity it was given"
        );
        let previous = self.by_peer_id.insert(peer_id, index);
        // Identities come from 64 random bits each: a repeat is a broken RNG.
        assert!(previous.is_none(), "two nodes share identity {peer_id}");
        self.network.listen(addr, index);
        self.nodes.push(SimNode {
            node,
            config,
            identity_seed,
            node_seed,
            incarnation: 0,
            up: true,
            peer_id,
            addr,
            peers_max,
            uplink_bytes_per_second: self.config.bandwidth_bytes_per_second,
            uplink_free_at: Instant::ZERO,
            downlink_bytes_per_second: self.config.bandwidth_bytes_per_second,
            downlink_free_at: Instant::ZERO,
            stopped_reading: false,
            cpu_free_at: Instant::ZERO,
            disk_free_at: Instant::ZERO,
            disk: BTreeMap::new(),
            disk_fails_until: Instant::ZERO,
            disk_unwritten: VecDeque::new(),
            timer_generation: 0,
            timer_at: None,
            dials: BTreeSet::new(),
            dial_log: VecDeque::new(),
            notifications: VecDeque::new(),
            notified_peers: BTreeSet::new(),
            retired_counters: Vec::new(),
            request_tag_next: 0,
        });
        log::debug!("{index} is {peer_id} at {addr}");
        self.schedule_timer(index, false);
        index
    }

    /// Adds `count` nodes with the default configuration.
    pub fn add_nodes(&mut self, count: usize) -> Vec<NodeIndex> {
        (0..count).map(|_| self.add_node()).collect()
    }

    /// Limits what `node` can receive to `bytes_per_second` (`None`: unlimited).
    ///
    /// # Panics
    /// If the rate is zero.
    pub fn set_downlink(&mut self, node: NodeIndex, bytes_per_second: Option<u64>) {
        assert!(
            bytes_per_second != Some(0),
            "a downlink of 0 bytes/s receives nothing"
        );
        self.node_state_mut(node).downlink_bytes_per_second = bytes_per_second;
    }

    /// Makes `node` stop reading (`true`): from now on, what others send it
    /// neither leaves their uplink nor arrives, and they never hear it
    /// written, as with a TCP peer whose receive window is closed; their
    /// send queues grow until [`meshsync_core::limits::PENDING_SEND_BYTES_MAX`]
    /// closes the connection. It keeps sending. `false` lets later sends through
    /// (what was held stays lost: a simplification).
    pub fn set_stops_reading(&mut self, node: NodeIndex, stopped: bool) {
        self.node_state_mut(node).stopped_reading = stopped;
    }

    /// Limits what `node` can send to `bytes_per_second` (`None`: unlimited;
    /// the default is [`SimConfig::bandwidth_bytes_per_second`]).
    ///
    /// # Panics
    /// If the rate is zero.
    pub fn set_uplink(&mut self, node: NodeIndex, bytes_per_second: Option<u64>) {
        assert!(
            bytes_per_second != Some(0),
            "an uplink of 0 bytes/s sends nothing"
        );
        self.node_state_mut(node).uplink_bytes_per_second = bytes_per_second;
    }

    // ---- Telling nodes what to do ----

    /// Gives `node` an application command now. A node that is down ignores it.
    pub fn command(&mut self, node: NodeIndex, command: Command) {
        if !self.is_up(node) {
            log::debug!("{node} is down: {command:?} is lost");
            return;
        }
        self.deliver(node, Input::Command(command));
    }

    /// Gives `node` an application command at `at` (not before now).
    pub fn command_at(&mut self, at: Instant, node: NodeIndex, command: Command) {
        self.queue
            .push(at.max(self.now), Event::Command { node, command });
    }

    /// Makes `from` dial `to` now, expecting `to`'s identity; the dial is
    /// counted as planned for [`Sim::is_fully_connected`].
    pub fn dial(&mut self, from: NodeIndex, to: NodeIndex) {
        let command = self.dial_command(from, to);
        self.command(from, command);
    }

    /// Like [`Sim::dial`], at `at`.
    pub fn dial_at(&mut self, at: Instant, from: NodeIndex, to: NodeIndex) {
        let command = self.dial_command(from, to);
        self.command_at(at, from, command);
    }

    fn dial_command(&mut self, from: NodeIndex, to: NodeIndex) -> Command {
        self.dials_planned.push((from, to));
        Command::Dial {
            addr: self.node_state(to).addr,
            peer: Some(self.node_state(to).peer_id),
        }
    }

    /// Makes `from` send `to` a request now, with a fresh tag, and returns the
    /// tag. Its outcome comes out of `from` as `Response` or `RequestFailed`
    /// with that tag, and its latency goes into [`Sim::request_log`].
    pub fn request(
        &mut self,
        from: NodeIndex,
        to: NodeIndex,
        protocol: ProtocolId,
        body: Vec<u8>,
    ) -> u64 {
        let state = self.node_state_mut(from);
        let tag = state.request_tag_next;
        // One tag per request: a u64 cannot run out.
        state.request_tag_next += 1;
        let peer = self.peer_id(to);
        self.command(
            from,
            Command::Request {
                peer,
                protocol,
                body,
                tag,
            },
        );
        tag
    }

    /// Starts (`true`) or stops dropping everything `node` sends; see [`crate::network`].
    pub fn set_blackholed(&mut self, node: NodeIndex, blackholed: bool) {
        log::debug!("{node} blackholed: {blackholed}");
        self.network.set_blackholed(node, blackholed);
    }

    /// Splits the network into `groups` (see [`Network::partition`]): bytes,
    /// closes and dials between groups are lost from now on, so connections
    /// across the cut die of silence, as they would behind a cut cable.
    pub fn partition(&mut self, groups: &[Vec<NodeIndex>]) {
        log::debug!("partition into {groups:?}");
        self.network.partition(groups);
    }

    /// Ends the partition; connections lost to it must be dialled again.
    pub fn heal(&mut self) {
        log::debug!("partition healed");
        self.network.heal();
    }

    /// Kills `node` now; see the module's crash design.
    ///
    /// # Panics
    /// If it is already down (a bug in the scenario).
    pub fn crash(&mut self, node: NodeIndex) {
        assert!(self.is_up(node), "{node} crashed while down");
        log::debug!("{node} crashes at {}", self.now);
        self.network_counts.crashes += 1;
        let now = self.now;
        self.trace.record_marker(node, now, Marker::Crash);
        let state = self.node_state_mut(node);
        state.up = false;
        state.dials.clear();
        state.notified_peers.clear();
        state.uplink_free_at = now;
        state.downlink_free_at = now;
        state.cpu_free_at = now;
        state.disk_free_at = now;
        // Refused batches die with the process, as unwritten ones do.
        state.disk_unwritten.clear();
        if state.timer_at.take().is_some() {
            state.timer_generation += 1; // Invalidates the queued event.
        }
        self.requests.abandon(node);
        let conns: Vec<ConnId> = self
            .network
            .endpoints()
            .filter(|(_, endpoint)| endpoint.node == node)
            .map(|(conn, _)| conn)
            .collect();
        for conn in conns {
            // The kernel of the dead process closes its sockets: each remote
            // hears the end after whatever was already on its way.
            self.close_endpoint(
                node,
                conn,
                CloseCause::Io("connection reset by peer".into()),
            );
        }
    }

    /// Starts `node` again now: a fresh [`Node`], same identity and
    /// configuration, a seed derived from its first one and the restart count.
    ///
    /// # Panics
    /// If it is up (a bug in the scenario).
    pub fn restart(&mut self, node: NodeIndex) {
        assert!(!self.is_up(node), "{node} restarted while up");
        log::debug!("{node} restarts at {}", self.now);
        self.network_counts.restarts += 1;
        let now = self.now;
        self.trace.record_marker(node, now, Marker::Restart);
        let state = self.node_state_mut(node);
        state.incarnation += 1;
        let seed = incarnation_seed(&state.node_seed, state.incarnation);
        // What it had on disk, after what it was configured with at first.
        let mut config = state.config.clone();
        if !state.disk.is_empty() {
            let mut stored = config.chain.stored.to_vec();
            stored.extend(state.disk.values().cloned());
            config.chain.stored = stored.into();
        }
        let fresh = Node::new(config, Identity::from_seed(state.identity_seed), seed);
        assert_eq!(
            fresh.peer_id(),
            state.peer_id,
            "a restart keeps the identity"
        );
        let old = std::mem::replace(&mut state.node, fresh);
        state.retired_counters.push(old.counters().clone());
        state.up = true;
        state.uplink_free_at = now;
        state.downlink_free_at = now;
        self.schedule_timer(node, false);
    }

    /// Kills `node` at `at` (it must be up then).
    pub fn crash_at(&mut self, at: Instant, node: NodeIndex) {
        self.queue.push(at.max(self.now), Event::Crash { node });
    }

    /// Starts `node` again at `at` (it must be down then).
    pub fn restart_at(&mut self, at: Instant, node: NodeIndex) {
        self.queue.push(at.max(self.now), Event::Restart { node });
    }

    /// Asks for an [`AppEvent::Wake`] carrying `token` at `at` (not before now).
    pub fn wake_at(&mut self, at: Instant, token: u64) {
        self.queue.push(at.max(self.now), Event::Wake { token });
    }

    /// Starts or stops handing notifications to applications (wake-ups always are).
    pub fn collect_app_events(&mut self, collect: bool) {
        self.collect_app_events = collect;
    }

    /// The oldest application event not yet taken.
    pub fn take_app_event(&mut self) -> Option<AppEvent> {
        self.app_events.pop_front()
    }

    // ---- Running ----

    /// Processes the next event. Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.step_until(Instant::MAX)
    }

    /// Processes the next event due at or before `deadline`; false if there is none.
    pub fn step_until(&mut self, deadline: Instant) -> bool {
        while let Some(at) = self.queue.peek_at() {
            if at > deadline {
                return false;
            }
            // Just peeked: the queue is not empty.
            let (at, event) = self.queue.pop().expect("peeked event");
            if let Event::Timer { node, generation } = event {
                if generation != self.node_state(node).timer_generation {
                    continue; // Stale: a later wake-up replaced it.
                }
            }
            debug_assert!(at >= self.now, "the clock never goes backwards");
            self.now = at;
            self.events += 1;
            self.process(event);
            return true;
        }
        false
    }

    /// Steps until `predicate` holds, at most `steps_max` steps.
    pub fn run_until(
        &mut self,
        mut predicate: impl FnMut(&Sim) -> bool,
        steps_max: u64,
    ) -> Result<(), Timeout> {
        let mut steps = 0;
        loop {
            if predicate(self) {
                return Ok(());
            }
            if steps == steps_max {
                return Err(Timeout {
                    steps,
                    now: self.now,
                    idle: false,
                });
            }
            if !self.step() {
                return Err(Timeout {
                    steps,
                    now: self.now,
                    idle: true,
                });
            }
            steps += 1;
        }
    }

    /// Processes everything due within `duration` and leaves the clock at its end.
    ///
    /// Always ends: every network hop and every timer moves virtual time
    /// forward (see [`crate::link::DELAY_MIN`] and [`TIMER_STALL_BACKOFF`]).
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while self.step_until(deadline) {}
        self.now = deadline;
    }

    // ---- Looking at the world ----

    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed this world was built from.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Nodes added so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's index, in order.
    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> {
        (0..self.nodes.len()).map(NodeIndex)
    }

    /// The node itself: its current incarnation, or the last one if it is down.
    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.node_state(index).node
    }

    /// Whether the node is running (not crashed).
    pub fn is_up(&self, index: NodeIndex) -> bool {
        self.node_state(index).up
    }

    /// How many times the node was restarted.
    pub fn incarnation(&self, index: NodeIndex) -> u32 {
        self.node_state(index).incarnation
    }

    /// The node's modelled disk: every block whose persist batch completed
    /// (and was not deleted by a later one). A restart loads these.
    pub fn disk(&self, index: NodeIndex) -> &BTreeMap<Root, SignedBlock> {
        &self.node_state(index).disk
    }

    /// Whether the node runs without faults.
    pub fn is_honest(&self, index: NodeIndex) -> bool {
        self.node_state(index).config.faults == Faults::default()
    }

    /// The node's identity.
    pub fn peer_id(&self, index: NodeIndex) -> PeerId {
        self.node_state(index).peer_id
    }

    /// The node's listening address.
    pub fn addr(&self, index: NodeIndex) -> SocketAddr {
        self.node_state(index).addr
    }

    /// The node with identity `peer`, if it is in this world.
    pub fn index_of(&self, peer: PeerId) -> Option<NodeIndex> {
        self.by_peer_id.get(&peer).copied()
    }

    /// The peers `node` lists, as nodes of this world, in `PeerId` order
    /// (none while it is down).
    pub fn peers_of(&self, node: NodeIndex) -> Vec<NodeIndex> {
        if !self.is_up(node) {
            return Vec::new();
        }
        self.node(node)
            .peers()
            .iter()
            .filter_map(|info| self.index_of(info.peer))
            .collect()
    }

    /// Whether `a` is up and lists `b` as a peer.
    pub fn has_peer(&self, a: NodeIndex, b: NodeIndex) -> bool {
        let peer = self.peer_id(b);
        self.is_up(a) && self.node(a).is_connected(&peer)
    }

    /// Whether `a` and `b` list each other as peers.
    pub fn are_connected(&self, a: NodeIndex, b: NodeIndex) -> bool {
        self.has_peer(a, b) && self.has_peer(b, a)
    }

    /// The dials made through [`Sim::dial`] and [`Sim::dial_at`], as (from, to).
    pub fn dials_planned(&self) -> &[(NodeIndex, NodeIndex)] {
        &self.dials_planned
    }

    /// Every dial `node` asked its driver for (the last
    /// [`DIALS_KEPT_PER_NODE_MAX`]), with the instant, oldest first.
    pub fn dial_log(&self, node: NodeIndex) -> impl Iterator<Item = &(Instant, SocketAddr)> {
        self.node_state(node).dial_log.iter()
    }

    /// Whether every planned dial became a peer relation on both sides and
    /// the peer graph (edges where both sides agree) connects every node.
    pub fn is_fully_connected(&self) -> bool {
        let planned_up = self
            .dials_planned
            .iter()
            .all(|&(from, to)| self.are_connected(from, to));
        planned_up && self.is_peer_graph_connected()
    }

    /// Whether the graph of mutual peer relations connects every node.
    pub fn is_peer_graph_connected(&self) -> bool {
        let Some(first) = self.node_indices().next() else {
            return true;
        };
        let mut seen = BTreeSet::from([first]);
        let mut frontier = vec![first];
        while let Some(node) = frontier.pop() {
            for peer in self.peers_of(node) {
                if self.has_peer(peer, node) && seen.insert(peer) {
                    frontier.push(peer);
                }
            }
        }
        seen.len() == self.nodes.len()
    }

    /// The notifications `node` emitted, oldest first (the last
    /// [`NOTIFICATIONS_KEPT_PER_NODE_MAX`]), with the instant of each.
    pub fn notifications(&self, node: NodeIndex) -> impl Iterator<Item = &(Instant, Notification)> {
        self.node_state(node).notifications.iter()
    }

    /// Counts of every notification of every node, by kind.
    pub fn notification_counts(&self) -> NotificationCounts {
        self.notification_counts
    }

    /// What the network carried.
    pub fn network_counts(&self) -> NetworkCounts {
        self.network_counts
    }

    /// `field` of the node's counters, summed over all its incarnations.
    pub fn counter(&self, node: NodeIndex, field: fn(&Counters) -> u64) -> u64 {
        let state = self.node_state(node);
        field(state.node.counters()) + state.retired_counters.iter().map(field).sum::<u64>()
    }

    /// `field` of the counters, summed over every node and incarnation.
    pub fn counter_sum(&self, field: fn(&Counters) -> u64) -> u64 {
        self.node_indices()
            .map(|node| self.counter(node, field))
            .sum()
    }

    /// Requests timed from command to outcome.
    pub fn request_log(&self) -> &RequestLog {
        &self.requests
    }

    /// Latencies of the finished requests honest nodes sent to honest nodes,
    /// whatever their outcome (a timeout counts with its full wait).
    pub fn honest_request_latencies(&self) -> Vec<Duration> {
        self.requests
            .records()
            .iter()
            .filter(|record| {
                self.is_honest(record.from)
                    && self
                        .index_of(record.peer)
                        .is_some_and(|peer| self.is_honest(peer))
            })
            .map(|record| record.latency())
            .collect()
    }

    /// The 99th percentile of [`Sim::honest_request_latencies`], if any finished.
    pub fn honest_request_p99(&self) -> Option<Duration> {
        requests::percentile(&mut self.honest_request_latencies(), 99)
    }

    /// Events processed so far (stale timers not counted).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events waiting in the queue (stale timers included).
    pub fn events_queued(&self) -> usize {
        self.queue.len()
    }

    /// The trace so far; its hash is the run's fingerprint.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Invariant violations seen so far.
    pub fn invariant_violations(&self) -> u64 {
        self.violations.count()
    }

    /// The first violations seen, with descriptions.
    pub fn violations(&self) -> &[Violation] {
        self.violations.kept()
    }

    /// The lender of the scenario's random stream (topologies, schedules).
    pub fn scenario_rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng_scenario
    }

    /// The summary of the run so far.
    pub fn summary(&self) -> Summary {
        Summary::of(self, self.wall_started.elapsed())
    }

    /// The configuration the world was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Checks that peer relations are symmetric between every two nodes with
    /// nothing in flight between them; counts a violation for each that is not.
    /// Returns how many violations it found.
    pub fn check_peer_symmetry(&mut self) -> u64 {
        let busy = self.network.busy_pairs();
        let mut problems = Vec::new();
        for a in self.node_indices() {
            if !self.is_up(a) {
                continue;
            }
            for info in self.node(a).peers() {
                let Some(b) = self.index_of(info.peer) else {
                    problems.push((
                        a,
                        format!("lists {:?}, which is no node of this world", info.peer),
                    ));
                    continue;
                };
                if !self.has_peer(b, a) && !busy.contains(&(a.min(b), a.max(b))) {
                    problems.push((
                        a,
                        format!("lists {b} as a peer, but {b} does not list it and nothing is in flight between them"),
                    ));
                }
            }
        }
        let found = problems.len() as u64;
        for (node, description) in problems {
            self.violation(Some(node), description);
        }
        found
    }

    // ---- Driving one node ----

    fn node_state(&self, index: NodeIndex) -> &SimNode {
        &self.nodes[index.0]
    }

    fn node_state_mut(&mut self, index: NodeIndex) -> &mut SimNode {
        &mut self.nodes[index.0]
    }

    /// Whether `node` is up and still the incarnation `incarnation`.
    fn is_incarnation(&self, node: NodeIndex, incarnation: u32) -> bool {
        let state = self.node_state(node);
        state.up && state.incarnation == incarnation
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Command { node, command } => self.command(node, command),
            Event::Connect {
                dialer,
                incarnation,
                dial,
                acceptor,
            } => {
                if self.is_incarnation(dialer, incarnation) {
                    self.connect(dialer, dial, acceptor);
                }
            }
            Event::DialRefused {
                node,
                incarnation,
                dial,
                error,
            } => {
                // A cancelled dial is forgotten: its late answer is not reported.
                if self.is_incarnation(node, incarnation)
                    && self.node_state_mut(node).dials.remove(&dial)
                {
                    self.deliver(node, Input::DialFailed { dial, error });
                }
            }
            Event::Bytes { node, conn, bytes } => {
                if self.network.arrive(conn) {
                    self.network_counts.bytes_delivered += bytes.len() as u64;
                    log::trace!("{node} receives {} bytes on {conn:?}", bytes.len());
                    self.deliver(node, Input::BytesReceived { conn, bytes });
                } else {
                    self.network_counts.bytes_dropped += bytes.len() as u64;
                }
            }
            Event::Closed { node, conn, cause } => {
                if self.network.arrive(conn) {
                    self.network.remove(conn);
                    log::debug!("{node} sees {conn:?} closed: {cause}");
                    self.deliver(node, Input::ConnectionClosed { conn, cause });
                }
            }
            Event::WorkDone {
                node,
                incarnation,
                id,
                output,
            } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    self.deliver(node, Input::WorkDone { id, output });
                }
            }
            Event::Persisted {
                node,
                incarnation,
                batch,
            } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    let now = self.now;
                    let state = self.node_state_mut(node);
                    if now < state.disk_fails_until || !state.disk_unwritten.is_empty() {
                        // Refused; later batches wait behind it, in order.
                        let first = state.disk_unwritten.is_empty();
                        state.disk_unwritten.push_back(batch);
                        if first {
                            let retry_at = state.disk_fails_until.max(now);
                            self.queue
                                .push(retry_at, Event::DiskRetry { node, incarnation });
                            self.deliver(node, Input::Health(Health::StoreFailing));
                        }
                        return;
                    }
                    Self::write_to_disk(state, &batch);
                    self.deliver(node, Input::Persisted { id: batch.id });
                }
            }
            Event::DiskRetry { node, incarnation } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    let now = self.now;
                    let state = self.node_state_mut(node);
                    if now < state.disk_fails_until {
                        let retry_at = state.disk_fails_until;
                        self.queue
                            .push(retry_at, Event::DiskRetry { node, incarnation });
                        return;
                    }
                    let batches = std::mem::take(&mut state.disk_unwritten);
                    let mut last = None;
                    for batch in &batches {
                        Self::write_to_disk(state, batch);
                        last = Some(batch.id);
                    }
                    if let Some(id) = last {
                        // Acknowledgements are cumulative.
                        self.deliver(node, Input::Persisted { id });
                    }
                    self.deliver(node, Input::Health(Health::StoreWriting));
                }
            }
            Event::Written { node, conn, bytes } => {
                if self.network.endpoint_of(node, conn).is_some() {
                    self.deliver(node, Input::BytesWritten { conn, bytes });
                }
            }
            Event::LocalClose { node, conn, cause } => {
                if self.network.endpoint_of(node, conn).is_some() {
                    log::debug!("{node} gives up {conn:?}: {cause}");
                    self.close_endpoint(node, conn, CloseCause::RemoteClosed);
                    self.deliver(node, Input::ConnectionClosed { conn, cause });
                }
            }
            Event::Timer { node, .. } => {
                self.node_state_mut(node).timer_at = None;
                self.deliver(node, Input::Timeout);
            }
            Event::Crash { node } => self.crash(node),
            Event::Restart { node } => self.restart(node),
            Event::Wake { token } => self.push_app_event(AppEvent::Wake { token }),
        }
    }

    fn connect(&mut self, dialer: NodeIndex, dial: DialId, acceptor: NodeIndex) {
        if !self.node_state_mut(dialer).dials.remove(&dial) {
            // Cancelled before it connected: the attempt is dropped unreported,
            // and the acceptor never sees it either.
            return;
        }
        if !self.is_up(acceptor) {
            // It went down while the connection was being set up: the
            // dialler gets the refusal the dead host's kernel sends.
            self.network_counts.dials_refused += 1;
            let error = format!("connection refused: {acceptor} is down");
            self.deliver(dialer, Input::DialFailed { dial, error });
            return;
        }
        let (dialer_conn, acceptor_conn) = self.network.open(dialer, acceptor);
        self.network_counts.connections_established += 1;
        log::debug!("{dialer} connected to {acceptor} ({dialer_conn:?}/{acceptor_conn:?})");
        let acceptor_addr = self.node_state(acceptor).addr;
        let dialer_addr = network::ephemeral_address(self.node_state(dialer).addr, acceptor_conn);
        self.deliver(
            dialer,
            Input::ConnectionOpened {
                conn: dialer_conn,
                remote: acceptor_addr,
                origin: Origin::Dialed(dial),
            },
        );
        self.deliver(
            acceptor,
            Input::ConnectionOpened {
                conn: acceptor_conn,
                remote: dialer_addr,
                origin: Origin::Accepted,
            },
        );
    }

    /// The run-loop contract: handle, drain every action, reschedule the timer,
    /// then check the node.
    fn deliver(&mut self, index: NodeIndex, input: Input) {
        debug_assert!(self.is_up(index), "{index} is down: nothing reaches it");
        let now = self.now;
        let is_timeout = matches!(input, Input::Timeout);
        if let Input::Command(Command::Request {
            peer,
            protocol,
            tag,
            ..
        }) = &input
        {
            if !self.requests.issued(index, *tag, *peer, *protocol, now) {
                self.violation(
                    Some(index),
                    format!("the scenario reused request tag {tag} while it was open"),
                );
            }
        }
        self.node_state_mut(index).node.handle(now, input);
        while let Some(action) = self.node_state_mut(index).node.poll_action() {
            self.trace.record(index, now, &action);
            self.apply(index, action);
        }
        self.schedule_timer(index, is_timeout);
        self.check_node(index);
    }

    fn schedule_timer(&mut self, index: NodeIndex, after_timeout: bool) {
        let now = self.now;
        let wanted = self.node_state(index).node.poll_timeout();
        let at = match wanted {
            Some(at) if after_timeout && at <= now => {
                self.violation(
                    Some(index),
                    format!("asked to wake at {at} right after handling its timeout at {now}"),
                );
                now + TIMER_STALL_BACKOFF
            }
            Some(at) => at.max(now),
            None => {
                let state = self.node_state_mut(index);
                if state.timer_at.take().is_some() {
                    state.timer_generation += 1; // Invalidates the queued event.
                }
                return;
            }
        };
        let state = self.node_state_mut(index);
        if state.timer_at == Some(at) {
            return; // Already queued.
        }
        state.timer_generation += 1;
        state.timer_at = Some(at);
        let generation = state.timer_generation;
        self.queue.push(
            at,
            Event::Timer {
                node: index,
                generation,
            },
        );
    }

    fn apply(&mut self, index: NodeIndex, action: Action) {
        match action {
            Action::Dial { dial, addr } => self.apply_dial(index, dial, addr),
            Action::CancelDial { dial } => {
                if !self.node_state_mut(index).dials.remove(&dial) {
                    self.violation(
                        Some(index),
                        format!("cancelled {dial:?}, which is not in progress"),
                    );
                }
            }
            Action::Send { conn, bytes } => self.apply_send(index, conn, bytes),
            Action::Close { conn } => self.apply_close(index, conn),
            Action::Work { id, job } => self.apply_work(index, id, job),
            Action::Persist(batch) => self.apply_persist(index, batch),
            Action::Notify(notification) => self.record_notification(index, notification),
        }
    }

    /// Runs `job` now (its output is needed to be faithful) but answers only
    /// once the node's one modelled CPU has spent [`Job::modelled_cost`] on
    /// it, after the jobs before it.
    fn apply_work(&mut self, index: NodeIndex, id: WorkId, job: Job) {
        let now = self.now;
        let cost = job.modelled_cost();
        let output = job.run();
        let state = self.node_state_mut(index);
        let done = state.cpu_free_at.max(now) + cost;
        state.cpu_free_at = done;
        let incarnation = state.incarnation;
        self.queue.push(
            done,
            Event::WorkDone {
                node: index,
                incarnation,
                id,
                output,
            },
        );
    }

    /// `node`'s disk refuses every write that completes before `until` (a
    /// full disk, an I/O error): like the production driver, the node is
    /// told (`Health::StoreFailing`), the refused batches wait in order, and
    /// at `until` they are written, acknowledged, and the node hears
    /// `Health::StoreWriting`. A crash meanwhile loses them.
    pub fn fail_disk(&mut self, node: NodeIndex, until: Instant) {
        self.node_state_mut(node).disk_fails_until = until;
    }

    fn write_to_disk(state: &mut SimNode, batch: &PersistBatch) {
        for root in &batch.delete {
            state.disk.remove(root);
        }
        for (root, block) in &batch.blocks {
            state.disk.insert(*root, block.clone());
        }
    }

    /// Writes `batch` to the node's modelled disk after [`DISK_WRITE_LATENCY`]
    /// plus its bytes over [`DISK_WRITE_BYTES_PER_SECOND`], after the writes
    /// before it. A crash before then loses it, as a killed process loses
    /// an unfinished transaction.
    fn apply_persist(&mut self, index: NodeIndex, batch: PersistBatch) {
        let now = self.now;
        let bytes: usize = batch
            .blocks
            .iter()
            .map(|(_, block)| block.encoded_len())
            .sum();
        let state = self.node_state_mut(index);
        let done = state.disk_free_at.max(now)
            + DISK_WRITE_LATENCY
            + transmit_time(bytes, DISK_WRITE_BYTES_PER_SECOND);
        state.disk_free_at = done;
        let incarnation = state.incarnation;
        self.queue.push(
            done,
            Event::Persisted {
                node: index,
                incarnation,
                batch,
            },
        );
    }

    fn apply_dial(&mut self, index: NodeIndex, dial: DialId, addr: SocketAddr) {
        let now = self.now;
        let state = self.node_state_mut(index);
        if state.dial_log.len() == DIALS_KEPT_PER_NODE_MAX {
            state.dial_log.pop_front();
        }
        state.dial_log.push_back((now, addr));
        if !state.dials.insert(dial) {
            self.violation(
                Some(index),
                format!("reused {dial:?} while it is in progress"),
            );
            return;
        }
        let incarnation = self.node_state(index).incarnation;
        let round_trip = self
            .network
            .link(index, index)
            .sample_round_trip(&mut self.rng_network);
        let at = self.now + round_trip;
        match self.network.listener(addr) {
            Some(acceptor) if !self.is_up(acceptor) => {
                self.network_counts.dials_refused += 1;
                self.queue.push(
                    at,
                    Event::DialRefused {
                        node: index,
                        incarnation,
                        dial,
                        error: format!("connection refused: {acceptor} is down"),
                    },
                );
            }
            None => {
                self.network_counts.dials_refused += 1;
                self.queue.push(
                    at,
                    Event::DialRefused {
                        node: index,
                        incarnation,
                        dial,
                        error: format!("connection refused: nothing listens on {addr}"),
                    },
                );
            }
            Some(acceptor) if self.network.connects(index, acceptor) => {
                self.queue.push(
                    at,
                    Event::Connect {
                        dialer: index,
                        incarnation,
                        dial,
                        acceptor,
                    },
                );
            }
            // Packets are lost one way or the other: no answer ever comes,
            // and the core's dial timeout must give up.
            Some(_) => {}
        }
    }

    /// When bytes handed to `index`'s uplink now finish leaving it.
    fn uplink_departure(&mut self, index: NodeIndex, bytes: usize) -> Instant {
        let now = self.now;
        let state = self.node_state_mut(index);
        let Some(rate) = state.uplink_bytes_per_second else {
            return now;
        };
        let departure = state.uplink_free_at.max(now) + transmit_time(bytes, rate);
        state.uplink_free_at = departure;
        departure
    }

    /// When bytes reaching `index` at `arrival` have all come through its
    /// downlink. The downlink is booked in the order bytes are sent, not the
    /// order they arrive: a simplification that keeps one pass per send.
    fn downlink_arrival(&mut self, index: NodeIndex, arrival: Instant, bytes: usize) -> Instant {
        let state = self.node_state_mut(index);
        let Some(rate) = state.downlink_bytes_per_second else {
            return arrival;
        };
        let done = state.downlink_free_at.max(arrival) + transmit_time(bytes, rate);
        state.downlink_free_at = done;
        done
    }

    fn apply_send(&mut self, index: NodeIndex, conn: ConnId, bytes: Vec<u8>) {
        let now = self.now;
        let Some(endpoint) = self.network.endpoint_of(index, conn) else {
            self.violation(Some(index), format!("sent on {conn:?}, which is not open"));
            return;
        };
        let (remote, remote_conn) = (endpoint.remote, endpoint.remote_conn);
        self.network_counts.sends += 1;
        self.network_counts.bytes_sent += bytes.len() as u64;
        if bytes.is_empty() {
            return; // A zero-length write puts nothing on the wire.
        }
        if self.node_state(remote).stopped_reading {
            // Its receive window is closed: the bytes wait in our send queue
            // for ever, never written, never delivered.
            let endpoint = self
                .network
                .endpoint_of(index, conn)
                .expect("looked up above");
            if endpoint.queue_outbound(now, Instant::MAX, bytes.len()) {
                self.network_counts.send_buffer_overflows += 1;
                self.queue.push(
                    now,
                    Event::LocalClose {
                        node: index,
                        conn,
                        cause: CloseCause::SendBufferFull,
                    },
                );
            }
            return;
        }
        let departure = self.uplink_departure(index, bytes.len());
        self.queue.push(
            departure,
            Event::Written {
                node: index,
                conn,
                bytes: bytes.len(),
            },
        );
        // Looked up above, and nothing closed it since.
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        if endpoint.queue_outbound(now, departure, bytes.len()) {
            // More than the driver may queue: give the connection up, as
            // `Action::Send`'s contract says, once this step is over.
            self.network_counts.send_buffer_overflows += 1;
            self.queue.push(
                now,
                Event::LocalClose {
                    node: index,
                    conn,
                    cause: CloseCause::SendBufferFull,
                },
            );
        }
        if !self.network.delivers(index, remote) || !self.network.is_open(remote_conn) {
            // Lost, or on its way to an end that already closed: it would be dropped there.
            self.network_counts.bytes_dropped += bytes.len() as u64;
            return;
        }
        let link = *self.network.link(index, remote);
        let delay = link.sample_delay(&mut self.rng_network);
        let bytes_len = bytes.len();
        let pieces = link.slice(&mut self.rng_network, bytes);
        // Looked up above, and nothing closed it since.
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        let arrival = endpoint.outbound.arrival(departure, delay);
        let arrival = self.downlink_arrival(remote, arrival, bytes_len);
        // Later sends and the close on this pipe come after these bytes.
        self.network
            .endpoint_of(index, conn)
            .expect("open endpoint")
            .outbound
            .hold_until(arrival);
        for piece in pieces {
            self.network.expect_delivery(remote_conn);
            self.queue.push(
                arrival,
                Event::Bytes {
                    node: remote,
                    conn: remote_conn,
                    bytes: piece,
                },
            );
        }
    }

    fn apply_close(&mut self, index: NodeIndex, conn: ConnId) {
        if self.network.endpoint_of(index, conn).is_none() {
            self.violation(Some(index), format!("closed {conn:?}, which is not open"));
            return;
        }
        self.close_endpoint(index, conn, CloseCause::RemoteClosed);
    }

    /// Removes `index`'s open endpoint `conn` and tells the remote end, with
    /// `cause`, after every byte already on its way (TCP's FIN follows the data).
    fn close_endpoint(&mut self, index: NodeIndex, conn: ConnId, cause: CloseCause) {
        // Callers check that it is open and belongs to `index`.
        let mut endpoint = self.network.remove(conn).expect("open endpoint");
        debug_assert_eq!(endpoint.node, index);
        let remote = endpoint.remote;
        if !self.network.delivers(index, remote) || !self.network.is_open(endpoint.remote_conn) {
            return;
        }
        let delay = self
            .network
            .link(index, remote)
            .sample_delay(&mut self.rng_network);
        let departure = self.node_state(index).uplink_free_at.max(self.now);
        let arrival = endpoint.outbound.arrival(departure, delay);
        self.network.expect_delivery(endpoint.remote_conn);
        self.queue.push(
            arrival,
            Event::Closed {
                node: remote,
                conn: endpoint.remote_conn,
                cause,
            },
        );
    }

    fn record_notification(&mut self, index: NodeIndex, notification: Notification) {
        let now = self.now;
        let counts = &mut self.notification_counts;
        let mut problem = None;
        let state = &mut self.nodes[index.0];
        match &notification {
            Notification::PeerConnected {
                peer, direction, ..
            } => {
                counts.peer_connected += 1;
                if *direction == Direction::Outbound {
                    counts.peer_connected_outbound += 1;
                }
                if !state.notified_peers.insert(*peer) {
                    problem = Some(format!("announced {peer:?} connected twice"));
                }
            }
            Notification::PeerDisconnected { peer, reason } => {
                counts.peer_disconnected += 1;
                if *reason == DisconnectReason::Silent {
                    counts.peer_disconnected_silent += 1;
                }
                if !state.notified_peers.remove(peer) {
                    problem = Some(format!(
                        "announced {peer:?} disconnected, but it was not connected"
                    ));
                }
            }
            Notification::ConnectionRefused { .. } => counts.connection_refused += 1,
            Notification::DialFailed { .. } => counts.dial_failed += 1,
            Notification::Response { tag, chunks, .. } => {
                counts.response += 1;
                let outcome = RequestOutcome::Response {
                    chunks: chunks.len(),
                };
                self.requests.finished(index, *tag, now, outcome);
            }
            Notification::RequestFailed { tag, error, .. } => {
                counts.request_failed += 1;
                let outcome = RequestOutcome::Failed(error.clone());
                self.requests.finished(index, *tag, now, outcome);
            }
            Notification::PeerBanned { .. } => counts.peer_banned += 1,
            Notification::PeerStatus { .. }
            | Notification::PeerMetadata { .. }
            | Notification::InboundRequest { .. }
            | Notification::PeerUnbanned { .. }
            | Notification::IpUnbanned { .. }
            | Notification::ScoreRecovered { .. }
            | Notification::GossipMessage { .. }
            | Notification::BlockImported { .. }
            | Notification::SyncProgress { .. }
            | Notification::Synced { .. }
            | Notification::BodyRefused { .. }
            | Notification::PublishFailed { .. }
            | Notification::SubscribeFailed { .. } => {}
        }
        log::debug!("{index} at {now}: {notification:?}");
        if state.notifications.len() == NOTIFICATIONS_KEPT_PER_NODE_MAX {
            state.notifications.pop_front();
        }
        if self.collect_app_events {
            self.push_app_event(AppEvent::Notification {
                node: index,
                notification: notification.clone(),
            });
        }
        self.nodes[index.0]
            .notifications
            .push_back((now, notification));
        if let Some(description) = problem {
            self.violation(Some(index), description);
        }
    }

    fn push_app_event(&mut self, event: AppEvent) {
        if self.app_events.len() == APP_EVENTS_PENDING_MAX {
            self.app_events.pop_front();
            self.violation(
                None,
                format!("{APP_EVENTS_PENDING_MAX} application events waiting: nobody takes them"),
            );
        }
        self.app_events.push_back(event);
    }

    fn check_node(&mut self, index: NodeIndex) {
        let state = self.node_state(index);
        let problems = invariants::check_node(&NodeView {
            node: &state.node,
            peer_id: state.peer_id,
            peers_max: state.peers_max,
            notified_peers: &state.notified_peers,
        });
        for problem in problems {
            self.violation(Some(index), problem);
        }
    }

    fn violation(&mut self, node: Option<NodeIndex>, description: String) {
        let violation = Violation {
            at: self.now,
            node,
            description,
        };
        self.violations.record(self.config.seed, violation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(seed: u64) -> Sim {
        Sim::new(SimConfig::new(seed))
    }

    /// The roots of `node`'s chain from its head down to genesis.
    fn chain_roots(sim: &Sim, node: NodeIndex) -> Vec<Root> {
        let chain = sim.node(node).chain();
        let mut roots = Vec::new();
        let mut at = chain.head().root;
        while let Some(block) = chain.block_by_root(&at) {
            roots.push(at);
            at = block.parent_root();
        }
        roots
    }

    /// A proposer's disk refuses writes for ten seconds while a follower
    /// listens: the proposer produces nothing meanwhile and the follower
    /// hears of nothing new. In one run the proposer crashes before its
    /// disk recovers, and every block the follower holds is on the
    /// proposer's disk: nothing was announced that was then lost. In the
    /// other the disk recovers, the refused batches are written, and
    /// production resumes. Over 20 seeds.
    #[test]
    fn a_failing_disk_announces_nothing_it_could_lose() {
        use crate::scenario::chain_faults::{producing_config, producing_genesis};
        for seed in 1..=20 {
            for crash in [true, false] {
                let mut sim = sim(seed);
                let network_id = sim.config().network_id;
                let (genesis, mut keys) = producing_genesis(network_id, 1, 500);
                let config = producing_config(&sim, &genesis, Some(keys.remove(0)), 256);
                let proposer = sim.add_node_with_config(config);
                let config = producing_config(&sim, &genesis, None, 256);
                let follower = sim.add_node_with_config(config);
                sim.dial(follower, proposer);
                sim.run_for(Duration::from_secs(10));
                let before = sim.node(follower).chain().head().slot;
                assert!(before >= 5, "seed {seed}: head {before}");

                let recovers_at = sim.now() + Duration::from_secs(10);
                sim.fail_disk(proposer, recovers_at);
                sim.run_for(Duration::from_secs(8));
                assert!(sim.node(proposer).is_store_failing(), "seed {seed}");
                let held = sim.node(proposer).counters().blocks_not_produced_unhealthy;
                assert!(held >= 10, "seed {seed}: {held} slots held");
                let during = sim.node(follower).chain().head().slot;
                assert!(
                    during <= before + 1,
                    "seed {seed}: the follower heard of slots {before}..={during} meanwhile"
                );
                if crash {
                    sim.crash(proposer);
                    let disk = sim.disk(proposer);
                    for root in chain_roots(&sim, follower) {
                        assert!(
                            disk.contains_key(&root),
                            "seed {seed}: the follower holds a block the proposer lost"
                        );
                    }
                } else {
                    sim.run_for(Duration::from_secs(10));
                    assert!(!sim.node(proposer).is_store_failing(), "seed {seed}");
                    let after = sim.node(follower).chain().head().slot;
                    assert!(after >= during + 10, "seed {seed}: {during} -> {after}");
                    // Everything below its announced (durable) head is on disk.
                    let chain = sim.node(proposer).chain();
                    let mut at = sim.node(proposer).status().head_root;
                    while let Some(block) = chain.block_by_root(&at) {
                        assert!(sim.disk(proposer).contains_key(&at), "seed {seed}");
                        at = block.parent_root();
                    }
                }
            }
        }
    }

    #[test]
    fn run_until_is_bounded_and_reports_why_it_stopped() {
        let mut empty = sim(1);
        let idle = empty.run_until(|_| false, 10).unwrap_err();
        assert!(idle.idle && idle.steps == 0, "{idle}");
        assert_eq!(empty.run_until(|_| true, 0), Ok(()));

        let mut busy = sim(1);
        let a = busy.add_node();
        let b = busy.add_node();
        busy.dial(a, b);
        let bounded = busy.run_until(|_| false, 3).unwrap_err();
        assert!(!bounded.idle && bounded.steps == 3, "{bounded}");
        assert_eq!(busy.events(), 3);
    }

    #[test]
    fn nodes_get_addresses_and_identities_from_the_seed() {
        let mut first = sim(5);
        let mut again = sim(5);
        let mut other = sim(6);
        let nodes: Vec<_> = (0..3).map(|_| first.add_node()).collect();
        for _ in 0..3 {
            again.add_node();
            other.add_node();
        }
        assert_eq!(first.addr(nodes[2]).to_string(), "10.0.0.3:9000");
        for &node in &nodes {
            assert_eq!(first.peer_id(node), again.peer_id(node));
            assert_ne!(first.peer_id(node), other.peer_id(node));
            assert_eq!(first.index_of(first.peer_id(node)), Some(node));
        }
    }

    #[test]
    fn a_dial_to_an_empty_address_fails_after_a_round_trip() {
        let mut sim = sim(2);
        let node = sim.add_node();
        let nowhere: SocketAddr = "10.9.9.9:9000".parse().expect("literal address");
        sim.command(
            node,
            Command::Dial {
                addr: nowhere,
                peer: None,
            },
        );
        let failed = |sim: &Sim| sim.notification_counts().dial_failed == 1;
        sim.run_until(failed, 100).expect("the refusal arrives");
        // Two one-way delays of 25 ms ± 10 %.
        assert!(sim.now() >= Instant::from_micros(45_000), "{}", sim.now());
        assert!(sim.now() <= Instant::from_micros(55_000), "{}", sim.now());
        assert_eq!(sim.network_counts().dials_refused, 1);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn a_half_open_connection_after_an_outage_is_not_an_asymmetry() {
        // Both ends go dark; the first to time out closes, but its close is
        // lost. When the network heals, the other end still lists its peer
        // until its own silence timeout: TCP's half-open connection.
        let mut sim = sim(7);
        let a = sim.add_node();
        let b = sim.add_node();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("a clean link connects");
        sim.set_blackholed(a, true);
        sim.set_blackholed(b, true);
        let one_gave_up = |sim: &Sim| !sim.has_peer(a, b) || !sim.has_peer(b, a);
        sim.run_until(one_gave_up, 10_000)
            .expect("silence is noticed");
        sim.set_blackholed(a, false);
        sim.set_blackholed(b, false);
        assert!(
            sim.has_peer(a, b) != sim.has_peer(b, a),
            "exactly one end gave up"
        );
        assert_eq!(sim.check_peer_symmetry(), 0);

        let both_gave_up = |sim: &Sim| !sim.has_peer(a, b) && !sim.has_peer(b, a);
        sim.run_until(both_gave_up, 10_000)
            .expect("the other end times out too");
        assert_eq!(sim.notification_counts().peer_disconnected_silent, 2);
        assert_eq!(sim.check_peer_symmetry(), 0);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn a_crashed_node_drops_its_connections_refuses_dials_and_restarts_as_itself() {
        let mut sim = sim(8);
        let a = sim.add_node();
        let b = sim.add_node();
        let c = sim.add_node();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("a clean link connects");
        let b_id = sim.peer_id(b);

        // c dials b just before b dies: the attempt is refused when it
        // would have connected, not when it was made.
        sim.dial(c, b);
        sim.crash(b);
        assert!(!sim.is_up(b) && sim.peers_of(b).is_empty());
        sim.run_until(|sim| !sim.has_peer(a, b), 1_000)
            .expect("a hears the connection end");
        let lost = sim.notifications(a).last().map(|(_, n)| n.clone());
        assert!(
            matches!(lost, Some(Notification::PeerDisconnected { peer, reason: DisconnectReason::ConnectionLost(_) }) if peer == b_id),
            "{lost:?}"
        );
        sim.run_until(|sim| sim.notification_counts().dial_failed == 1, 1_000)
            .expect("c's dial is refused");
        // A dial made while b is down is refused at once.
        sim.dial(a, b);
        sim.run_until(|sim| sim.notification_counts().dial_failed == 2, 1_000)
            .expect("a's dial is refused");
        assert_eq!(sim.network_counts().dials_refused, 2);

        sim.restart(b);
        assert_eq!(sim.incarnation(b), 1);
        assert_eq!(sim.node(b).peer_id(), b_id, "same identity");
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("the new b accepts a");
        assert_eq!(sim.network_counts().crashes, 1);
        assert_eq!(sim.network_counts().restarts, 1);
        assert_eq!(sim.check_peer_symmetry(), 0);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn events_for_an_earlier_life_do_not_reach_the_next() {
        // a's dial is on its way when a itself crashes and restarts: the
        // answer belongs to the dead process and is dropped, and b never
        // sees a connection from it.
        let mut sim = sim(9);
        let a = sim.add_node();
        let b = sim.add_node();
        sim.dial(a, b);
        sim.crash(a);
        sim.restart(a);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.network_counts().connections_established, 0);
        assert!(!sim.has_peer(a, b) && !sim.has_peer(b, a));
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn a_limited_uplink_sends_one_thing_after_another() {
        let mut sim = sim(10);
        let a = sim.add_node();
        sim.set_uplink(a, Some(1_000)); // 1 kB/s: every byte is a millisecond.
        assert_eq!(sim.uplink_departure(a, 500), Instant::from_micros(500_000));
        assert_eq!(sim.uplink_departure(a, 1), Instant::from_micros(501_000));
        sim.set_uplink(a, None);
        assert_eq!(sim.uplink_departure(a, 1_000_000), Instant::ZERO);
    }

    #[test]
    fn a_limited_downlink_takes_in_one_thing_after_another() {
        let mut sim = sim(10);
        let a = sim.add_node();
        sim.set_downlink(a, Some(1_000));
        let at = Instant::from_micros(100_000);
        assert_eq!(
            sim.downlink_arrival(a, at, 500),
            Instant::from_micros(600_000)
        );
        // Arriving earlier than the downlink is free: it waits its turn.
        assert_eq!(
            sim.downlink_arrival(a, Instant::ZERO, 100),
            Instant::from_micros(700_000)
        );
        sim.set_downlink(a, None);
        assert_eq!(sim.downlink_arrival(a, at, 1_000_000), at);
    }

    #[test]
    fn bandwidth_defaults_to_fifty_megabits_each_way() {
        let mut sim = sim(10);
        let a = sim.add_node();
        // 6.25 MB at 6.25 MB/s: one second out, one second in.
        let bytes = BANDWIDTH_BYTES_PER_SECOND_DEFAULT as usize;
        assert_eq!(
            sim.uplink_departure(a, bytes),
            Instant::from_micros(1_000_000)
        );
        assert_eq!(
            sim.downlink_arrival(a, Instant::ZERO, bytes),
            Instant::from_micros(1_000_000)
        );
    }

    #[test]
    fn incarnation_seeds_are_derived_and_distinct() {
        let first = [7u8; 32];
        assert_eq!(incarnation_seed(&first, 0), first);
        assert_ne!(incarnation_seed(&first, 1), first);
        assert_ne!(incarnation_seed(&first, 1), incarnation_seed(&first, 2));
        assert_eq!(incarnation_seed(&first, 2), incarnation_seed(&first, 2));
    }

    #[test]
    fn a_pair_connects_and_keeps_alive_the_same_way_from_the_same_seed() {
        let run = |seed: u64| {
            let mut sim = sim(seed);
            let a = sim.add_node();
            let b = sim.add_node();
            sim.dial(a, b);
            sim.run_until(|sim| sim.are_connected(a, b), 1_000)
                .expect("a clean link connects");
            sim.run_for(Duration::from_secs(100));
            assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
            (sim.trace().hash_hex(), sim.events(), sim.trace().actions())
        };
        let first = run(3);
        assert_eq!(first, run(3));
        assert_ne!(first.0, run(4).0);
    }
}
