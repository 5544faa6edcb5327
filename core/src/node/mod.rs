//! The top-level state machine: admission, peers, and the parts it composes.
//!
//! # Design
//! The node is a composition of parts, each in its own file, each writing
//! what it decides to the one `Outbox` it is handed:
//! - `connections.rs`: every connection's state, `Handshaking` then
//!   `Established`, keyed by the driver's [`ConnId`], the handshake, sealing
//!   and flushing (outbound plaintext is buffered per connection and sealed
//!   once per `handle` call, or before a close, so a burst of small messages
//!   becomes one Noise message and one `Send`), and the write windows;
//! - `purpose.rs`: what each of our requests is for, the leaf that lets the
//!   req/resp glue and the sync glue share it without importing each other.
//!
//! Around the connections sit pure state machines the node drives: the
//! [`PeerManager`] (gating, scores, bans, static peers), and `rpc.rs`'s
//! `RpcPart`, which owns the [`crate::reqresp::OutboundRequests`] tracker
//! (our requests: quotas, in-flight caps, deadlines),
//! [`crate::reqresp::InboundRequests`] (peers' requests: admission, quotas,
//! answer deadlines), what each of our requests is for, and our Metadata;
//! beside it, the req/resp glue: the built-in protocols' handlers,
//! responses, and what each outcome costs a peer.
//! The [`Gossip`] router is driven the same way, owned by `gossip.rs`'s
//! `GossipPart` (router and topics, no other part's state) beside its glue
//! (logical messages of kind 32, events, heartbeat, application scores).
//! `sync.rs`'s `SyncPart` owns range sync and lookups the same way; its glue
//! turns what they ask for into requests, work and imports. `chain.rs`'s
//! `ChainPart` owns the fork-choice store, production, verification work in
//! flight and durability. `discovery.rs`'s `DiscoveryPart` owns the
//! Kademlia machine when discovery is configured, with the connection
//! manager that trims peers above the target. Each part's fields are
//! private to its file.
//!
//! # Security
//! Provided: handshakes bounded in number and time; a connection that sends
//! anything undecryptable, oversize or undecodable is closed alone, with
//! Goodbye(fault) when the channel is up; peers must prove the expected
//! identity, network and version before they count as peers; requests are
//! rate-limited per peer and protocol and globally; misbehaviour costs score,
//! which ends in a disconnect and then a ban by identity and IP.
//! Block answers carry at most `rpc::ANSWER_BLOCK_BYTES_MAX` (a prefix of
//! what was asked) and none while the connection's unwritten bytes exceed
//! half the driver's queue, so serving 1 MiB blocks cannot overflow it.
//! Blocks are verified before import, whether gossiped, synced or looked up
//! (see `chain.rs` and `sync.rs`).

mod chain;
mod connections;
mod discovery;
mod faults;
mod gossip;
mod history;
mod outbox;
mod peerstore;
mod purpose;
mod rpc;
mod signing;
#[warn(clippy::arithmetic_side_effects)]
mod sync;

pub use self::chain::{BLOCKS_TOPIC, CLOCK_DISPARITY, WORK_IN_FLIGHT_MAX};
pub use self::discovery::{DiscoveryConfig, LIVENESS_DIALS_MAX, QUERIES_WAITING_MAX};
pub use self::faults::{StatusClaim, OVERSIZE_BLOCKS_MAX, SQUAT_CHAIN_BLOCKS, SQUAT_INTERVAL};
pub use self::history::HISTORY_READS_MAX;

use std::net::SocketAddr;

use log::{debug, info, warn};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::chain::{ChainConfig, ChainStore};
use crate::gossip::Gossip;
use crate::identity::{Identity, PeerId};
use crate::io::{
    Action, CloseCause, Command, ConnId, DialId, Direction, DisconnectReason, GoodbyeReason, Input,
    Notification, Origin, RefuseReason,
};
use crate::limits;
use crate::machine::Machine;
use crate::metrics::Counters;
use crate::peer::{Decision, PeerEvent, PeerManager};
use crate::secure::{Hello, LocalKeys, RemoteIdentity, SecureError};
use crate::time::{Duration, Instant};

use self::connections::{
    Connection, ConnectionState, Connections, DueConnections, Read, ReadError, Received,
};
use self::outbox::Outbox;

/// Protocol version spoken by this build; peers must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// Node configuration. [`Config::new`] gives the defaults of [`crate::limits`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Peers on another network are refused with Goodbye(irrelevant network).
    pub network_id: u64,
    /// Advertised in the Hello so inbound peers can dial us back (0: not listening).
    pub listen_port: u16,
    /// Capability bits advertised in the Hello.
    pub capabilities: u64,
    /// A connection must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// A dial must connect within this.
    pub dial_timeout: Duration,
    /// How often established peers are pinged.
    pub ping_interval: Duration,
    /// A peer silent for this long is dropped.
    pub peer_silence_timeout: Duration,
    /// How often we ask each peer for its Status again.
    pub status_interval: Duration,
    /// Connection limits, scores, bans and static-peer backoff.
    pub peer: crate::peer::Config,
    /// The genesis and the blocks the driver loaded from its store.
    pub chain: ChainConfig,
    /// Range sync's tunables (the devnet lowers `peers_min` to 1).
    pub sync: crate::sync::SyncConfig,
    /// Unix time, in milliseconds, at the driver's `Instant::ZERO`: how the
    /// core tells slots from instants (the simulator: 0).
    pub unix_ms_at_origin: u64,
    /// Deliberate misbehaviour, for hostile nodes in the simulator. All off by default.
    pub faults: Faults,
    /// The gossip router's mesh parameters.
    pub gossip: crate::gossip::Config,
    /// Kademlia discovery, with what we advertise and where we start; off
    /// when `None` (the default: only the driver knows our addresses).
    pub discovery: Option<DiscoveryConfig>,
    /// The peer store the driver loaded, when it keeps one (`None`: it
    /// keeps none, and the node emits no `Action::PersistPeers`). Records
    /// become discovery candidates, scores and bans return to the peer
    /// manager; see `node/peerstore.rs`.
    pub known_peers: Option<crate::peerstore::KnownPeers>,
}

/// Deliberate misbehaviour, so the simulator can run hostile nodes on the
/// production code. Never set these in a real node. The sync liars' hooks
/// live in `node/faults.rs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Faults {
    /// Accept requests and never answer them.
    pub never_answer_requests: bool,
    /// Ignore peers' quotas and in-flight limits when sending our requests.
    pub ignore_peer_quotas: bool,
    /// Keep asking a peer that answered `ResourceUnavailable`, without the
    /// back-off (a Sybil that stays within our quotas but wants all it can get).
    pub ignore_busy_answers: bool,
    /// Claim this chain in every Status we send (a Status liar).
    pub status_claim: Option<StatusClaim>,
    /// Sign one block at least this many slots past the clock on our head
    /// (with one of `chain.proposer_keys`, which then never produce
    /// honestly), claim it as our head, and serve it by range (nothing
    /// between our chain and it) and by root.
    pub future_block_slots_ahead: Option<u64>,
    /// Answer every BlocksByRange and BlocksByRoot with as many of the
    /// largest blocks as the request allows (up to [`OVERSIZE_BLOCKS_MAX`]),
    /// linked to each other, unsigned, past every honest byte budget.
    pub oversize_answers: bool,
    /// Every [`SQUAT_INTERVAL`], gossip an orphan on a made-up chain of
    /// [`SQUAT_CHAIN_BLOCKS`] unsigned ancestors, and serve them by root.
    pub lookup_squatting: bool,
    /// Answer every FIND_NODE with the records of this set nearest its
    /// target (at most a bucket's worth, never the asker's own) instead of
    /// from the routing table: a Sybil that steers lookups to its own kind.
    pub find_node_records: Option<Vec<crate::discovery::Record>>,
}

/// How often each peer is asked for its Status again (Ethereum p2p: every 5 min or so).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5 * 60);

impl Config {
    /// The defaults, on network `network_id`.
    pub fn new(network_id: u64) -> Config {
        Config {
            network_id,
            listen_port: 0,
            capabilities: 0,
            handshake_timeout: limits::HANDSHAKE_TIMEOUT,
            dial_timeout: limits::DIAL_TIMEOUT,
            ping_interval: limits::PING_INTERVAL,
            peer_silence_timeout: limits::PEER_SILENCE_TIMEOUT,
            status_interval: STATUS_INTERVAL,
            peer: crate::peer::Config::default(),
            chain: ChainConfig::devnet(network_id),
            sync: crate::sync::SyncConfig::default(),
            unix_ms_at_origin: 0,
            faults: Faults::default(),
            gossip: crate::gossip::Config::default(),
            discovery: None,
            known_peers: None,
        }
    }
}

impl Config {
    /// Drops a peer nothing has come from for `timeout`, and pings each
    /// peer at least every third of it (never less often than
    /// [`limits::PING_INTERVAL`]): an idle honest peer answers a Ping well
    /// before the timeout, a frozen or cut-off one cannot.
    pub fn with_peer_silence_timeout(mut self, timeout: Duration) -> Config {
        self.peer_silence_timeout = timeout;
        self.ping_interval = (timeout / 3).min(limits::PING_INTERVAL);
        self
    }
}

/// A connected peer as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its identity.
    pub peer: PeerId,
    /// Its address.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
}

/// A meshsync node: the whole protocol, without IO.
///
/// # The run loop
/// A driver owns the sockets and the clock and does, forever:
/// 1. call [`Node::handle`] with the current time and one [`Input`]
///    (bytes received, a connection opened or closed, a timeout, a command);
/// 2. drain [`Node::poll_action`] until it returns `None`, carrying out each
///    [`Action`] as its doc says (send bytes, dial, close, notify);
/// 3. ask [`Node::poll_timeout`] for the next instant at which to call
///    `handle(now, Input::Timeout)`, and wait for that or the next input.
///
/// `now` must never go backwards. A timeout that comes early, or twice, is a
/// no-op. The node reads no clock, starts no thread, opens no socket or file,
/// and draws all its randomness from the seed given to [`Node::new`]: the
/// same inputs at the same instants give the same actions, bit for bit.
///
/// # Methods
/// Getters: [`Node::peer_id`], [`Node::config`], [`Node::peers`],
/// [`Node::is_connected`], [`Node::peer_count`], [`Node::counters`],
/// [`Node::peer_manager`], [`Node::gossip`]. Mutator: [`Node::handle`]. Polls:
/// [`Node::poll_action`], [`Node::poll_timeout`].
pub struct Node {
    config: Config,
    rng: ChaCha20Rng,
    /// Connection state, handshakes, sealing and flushing.
    conns: Connections,
    /// The actions for the driver and the counters, which every part writes to.
    out: Outbox,
    last_now: Instant,
    shutting_down: bool,
    peer_manager: PeerManager,
    /// Request/response: both trackers, our requests' purposes, our Metadata.
    rpc: self::rpc::RpcPart,
    /// The fork-choice store, production, verification work, durability.
    chain: self::chain::ChainPart,
    /// Range sync and parent lookups.
    sync: self::sync::SyncPart,
    /// The gossip router and the application's topics.
    gossip: self::gossip::GossipPart,
    /// What our faults remember (empty for an honest node).
    hostile: self::faults::HostileState,
    /// Reads of finalized history from the driver's store, to serve ranges.
    history: self::history::HistoryPart,
    /// Kademlia discovery, when configured.
    discovery: Option<self::discovery::DiscoveryPart>,
    /// The peer store's records and timer, when the driver keeps a store.
    peerstore: Option<self::peerstore::PeerStorePart>,
}

impl Node {
    /// A node with `identity`, drawing all its randomness from `seed`.
    ///
    /// # Panics
    /// If the genesis names another network than `config.network_id`: a
    /// configuration bug the driver must catch first.
    pub fn new(config: Config, identity: Identity, seed: [u8; 32]) -> Node {
        let (store, refused) = ChainStore::for_config(&config.chain);
        for (root, error) in &refused {
            warn!("stored block {root} not loaded: {error}");
        }
        Node::with_chain_store(config, identity, seed, store)
    }

    /// [`Node::new`], with the chain store it would build from
    /// `config.chain` already built: for a driver that starts many nodes on
    /// one stored chain (the simulator), which builds the store once with
    /// [`ChainStore::for_config`] and hands each node a clone (the clones
    /// share their maps until one changes). The node is the one
    /// [`Node::new`] makes, bit for bit, only if `store` is what
    /// [`ChainStore::for_config`] gives for `config.chain`.
    ///
    /// # Panics
    /// As [`Node::new`], and if `store` was built on another genesis.
    pub fn with_chain_store(
        config: Config,
        identity: Identity,
        seed: [u8; 32],
        store: ChainStore,
    ) -> Node {
        assert_eq!(
            store.genesis_root(),
            config.chain.genesis.root(),
            "the chain store was built on another genesis"
        );
        assert_eq!(
            config.chain.genesis.network_id(),
            config.network_id,
            "the genesis is for another network"
        );
        let mut rng = ChaCha20Rng::from_seed(seed);
        // Only a node that runs discovery keeps its identity to sign its record.
        let record_identity = config.discovery.as_ref().map(|_| identity.clone());
        let keys = LocalKeys::new(identity, &mut rng);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            network_id: config.network_id,
            listen_port: config.listen_port,
            capabilities: config.capabilities,
        };
        let mut peer_manager_seed = [0u8; 32];
        rng.fill_bytes(&mut peer_manager_seed);
        // Drawn after the other draws of `new`, so the keys and the peer
        // manager's seed are unchanged; the Noise ephemeral seeds drawn later
        // from the same stream each move by one draw.
        let mut gossip_seed = [0u8; 32];
        rng.fill_bytes(&mut gossip_seed);
        let mut sync_seed = [0u8; 32];
        rng.fill_bytes(&mut sync_seed);
        // Drawn only when discovery runs, so a node without it draws what
        // it always did.
        let discovery = match (&config.discovery, &record_identity) {
            (Some(discovery), Some(identity)) => {
                let mut discovery_seed = [0u8; 32];
                rng.fill_bytes(&mut discovery_seed);
                let network_id = config.network_id;
                match self::discovery::DiscoveryPart::new(
                    discovery,
                    identity,
                    network_id,
                    discovery_seed,
                    Instant::ZERO,
                ) {
                    Ok(part) => Some(part),
                    Err(error) => {
                        warn!("discovery off: {error}");
                        None
                    }
                }
            }
            _ => None,
        };
        let mut peer_config = config.peer;
        if discovery.is_some() {
            // The connection manager keeps inbound peers to their share of
            // the target by trimming (`discovery.rs`).
            peer_config.limits.inbound_peers_max = peer_config.limits.peers_max;
        }
        let subnet_limits = config
            .discovery
            .as_ref()
            .is_some_and(|discovery| discovery.subnet_limits);
        if discovery.is_some() && subnet_limits {
            // The table's anti-eclipse caps have a peer-set twin: one
            // network group takes a tenth of the peer slots at most.
            peer_config.limits.peers_per_netgroup_max = Some(crate::peer::PEERS_PER_NETGROUP_MAX);
        }
        let mut node = Node {
            peer_manager: PeerManager::new(peer_config, peer_manager_seed),
            rpc: self::rpc::RpcPart::new(
                config.chain.genesis.slot_duration_ms(),
                config.capabilities,
                &config.faults,
                discovery.is_some(),
            ),
            chain: self::chain::ChainPart::new(&config, store),
            sync: self::sync::SyncPart::new(
                config.sync.clone(),
                sync_seed,
                config.chain.genesis.finality_depth_slots(),
            ),
            gossip: self::gossip::GossipPart::new(Gossip::new(config.gossip.clone(), gossip_seed)),
            hostile: self::faults::HostileState::default(),
            history: self::history::HistoryPart::new(),
            discovery,
            peerstore: None,
            config,
            rng,
            conns: Connections::new(keys, hello),
            out: Outbox::default(),
            last_now: Instant::ZERO,
            shutting_down: false,
        };
        // The chain store holds the loaded blocks now: a second copy here
        // would double what start-up costs for the node's whole life.
        node.config.chain.stored = std::sync::Arc::from(Vec::new());
        node.start_chain(Instant::ZERO);
        if let Some(known) = node.config.known_peers.clone() {
            node.load_known_peers(Instant::ZERO, known);
        }
        node
    }

    /// Our identity.
    pub fn peer_id(&self) -> PeerId {
        self.conns.local_peer()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connected peers, in `PeerId` order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.conns.peer_infos()
    }

    /// The ids of [`Node::peers`], in the same order, without building
    /// the list: for a caller that looks at them after every input.
    pub fn peer_ids(&self) -> impl ExactSizeIterator<Item = &PeerId> + '_ {
        self.conns.connected_peers()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.conns.is_connected(peer)
    }

    /// Inbound connections still in their handshake: the slots
    /// (`limits::HANDSHAKES_IN_PROGRESS_MAX`) a flood of half-open
    /// connections fills.
    pub fn inbound_handshakes(&self) -> usize {
        self.conns.handshaking(Direction::Inbound)
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.conns.peer_count()
    }

    /// Event counts since start.
    pub fn counters(&self) -> &Counters {
        &self.out.counters
    }

    /// Scores, bans, chain status and best-peer selection.
    pub fn peer_manager(&self) -> &PeerManager {
        &self.peer_manager
    }

    /// The gossip router: meshes, topics, gossip scores, its counters.
    pub fn gossip(&self) -> &Gossip {
        self.gossip.router()
    }

    /// Feeds one input. Then drain [`Node::poll_action`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        let now = self.advance_to(now);
        match input {
            Input::ConnectionOpened {
                conn,
                remote,
                origin,
            } => self.on_connection_opened(now, conn, remote, origin),
            Input::BytesReceived { conn, bytes } => self.on_bytes(now, conn, &bytes),
            Input::ConnectionClosed { conn, cause } => self.on_connection_closed(now, conn, cause),
            Input::DialFailed { dial, error } => self.on_dial_failed(now, dial, error),
            Input::BytesWritten { conn, bytes } => {
                self.conns.handle_bytes_written(now, conn, bytes)
            }
            Input::WorkDone { id, output } => self.on_work_done(now, id, output),
            Input::WorkFailed { id } => self.on_work_failed(now, id),
            Input::Persisted { id } => self.on_persisted(now, id),
            Input::BlocksRead {
                id,
                blocks,
                complete,
            } => self.on_blocks_read(now, id, blocks, complete),
            Input::Timeout => self.on_timeout(now),
            Input::Command(command) => self.on_command(now, command),
            Input::Health(health) => self.on_health(health),
        }
        self.after_input(now);
    }

    /// Feeds `bytes` received on `conn`: exactly what
    /// `handle(now, Input::BytesReceived { conn, bytes: bytes.to_vec() })`
    /// does, without the copy. A driver reads into a buffer of its own and
    /// hands it over here, so the bytes of a bulk transfer are not copied
    /// once more on their way in. Then drain [`Node::poll_action`].
    pub fn handle_bytes_received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let now = self.advance_to(now);
        self.on_bytes(now, conn, bytes);
        self.after_input(now);
    }

    /// Takes `now` as the node's time (never earlier than the last) and returns it.
    fn advance_to(&mut self, now: Instant) -> Instant {
        self.last_now.advance_to(now)
    }

    /// What every input is followed by: the machines' work that the input
    /// may have made due, and the sealing of what it queued.
    fn after_input(&mut self, now: Instant) {
        self.drive_sync(now);
        self.drive_discovery(now);
        self.peerstore_watch_growth(now);
        self.transmit_requests(now);
        self.transmit_gossip(now);
        self.conns.flush_all(now, &mut self.out);
        self.conns.index_timers(self.config.peer_silence_timeout);
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// When the driver must next call `handle(now, Input::Timeout)`, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connections = self
            .conns
            .next_deadline(self.last_now, self.config.peer_silence_timeout);
        let machines = self.machines().map(|machine| machine.next_deadline());
        // Not plain sub-machines: the router's heartbeat is scheduled only
        // while it has work, production follows the slot clock, and faults
        // have timers of their own.
        let glue = [
            self.gossip.next_deadline(self.chain.blocks_topic()),
            self.chain.next_deadline(self.last_now),
            self.hostile_deadline(),
            self.trim_deadline(),
            self.peerstore_deadline(),
        ];
        connections
            .into_iter()
            .chain(machines.flatten())
            .chain(glue.into_iter().flatten())
            .min()
    }

    /// The parts that keep the [`Machine`] contract and whose every deadline
    /// wakes the node. A new protocol's machine is added here and to
    /// [`Node::on_timeout`], which drains its outputs in order.
    fn machines(&self) -> impl Iterator<Item = &dyn Machine> {
        let [outbound, inbound] = self.rpc.machines();
        let [range_sync, lookups] = self.sync.machines();
        let discovery = self.discovery.as_ref().map(|part| part.as_machine());
        [
            &self.peer_manager as &dyn Machine,
            outbound,
            inbound,
            range_sync,
            lookups,
        ]
        .into_iter()
        .chain(discovery)
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Dial { addr, peer } => {
                self.dial(now, addr, peer);
            }
            Command::Disconnect { peer, reason } => {
                if let Some(conn) = self.conns.conn_of(&peer) {
                    self.say_goodbye(now, conn, reason);
                } else {
                    debug!("disconnect {peer:?}: not connected");
                }
            }
            Command::Shutdown => self.shut_down(now),
            Command::AddStaticPeer { addr, peer } => {
                if let Err(error) = self.peer_manager.add_static_peer(now, addr, peer) {
                    log::warn!("static peer {addr}: {error:?}");
                }
                // The manager dials at its next timeout, which is now.
                self.peer_manager.handle_timeout(now);
                self.apply_peer_timeout_events(now);
            }
            Command::RemoveStaticPeer { addr } => {
                self.peer_manager.remove_static_peer(addr);
            }
            Command::RegisterProtocol { name, quota } => self.register_protocol(name, quota),
            Command::Request {
                peer,
                protocol,
                body,
                tag,
            } => self.application_request(now, peer, protocol, body, tag),
            Command::Respond { peer, id, answer } => {
                self.application_respond(now, peer, id, answer)
            }
            Command::Subscribe { topic } => self.gossip_subscribe(now, topic),
            Command::Unsubscribe { topic } => self.gossip_unsubscribe(now, topic),
            Command::Publish { topic, payload } => {
                self.gossip.publish(now, topic, &payload, &mut self.out)
            }
            Command::ProposeBody { body } => {
                let bytes = body.len();
                if !self.queue_body(body) {
                    self.out.notify(Notification::BodyRefused { bytes });
                }
            }
            Command::ValidateGossip { id, verdict } => {
                self.gossip.validate(now, id, verdict, &mut self.out)
            }
        }
    }

    /// Starts a dial, or refuses it (counted, and notified as `DialFailed`).
    /// Returns whether the dial started.
    fn dial(&mut self, now: Instant, addr: SocketAddr, peer: Option<PeerId>) -> bool {
        let refusal = if self.shutting_down {
            Some("shutting down".to_string())
        } else if peer.is_some_and(|peer| self.conns.is_connected(&peer)) {
            Some("already connected".to_string())
        } else if peer == Some(self.peer_id()) {
            Some("that is our own identity".to_string())
        } else if self.conns.dials_in_progress() >= limits::DIALS_IN_PROGRESS_MAX {
            Some("too many dials in progress".to_string())
        } else if let Decision::Refuse(refusal) = self.peer_manager.check_dial(now, addr, peer) {
            Some(format!("gated: {refusal:?}"))
        } else {
            None
        };
        if let Some(error) = refusal {
            self.out.counters.dials_failed += 1;
            self.peer_manager.handle_dial_failed(now, addr);
            self.out.notify(Notification::DialFailed { addr, error });
            return false;
        }
        let dial = self
            .conns
            .start_dial(addr, peer, now + self.config.dial_timeout);
        self.out.counters.dials_started += 1;
        self.out.push(Action::Dial { dial, addr });
        true
    }

    fn on_dial_failed(&mut self, now: Instant, dial: DialId, error: String) {
        if let Some(pending) = self.conns.take_dial(dial) {
            self.out.counters.dials_failed += 1;
            self.peer_manager.handle_dial_failed(now, pending.addr);
            self.out.notify(Notification::DialFailed {
                addr: pending.addr,
                error,
            });
            if let Some(peer) = pending.expected {
                self.discovery_connect_failed(now, peer);
            }
        }
    }

    fn on_connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: SocketAddr,
        origin: Origin,
    ) {
        if self.conns.contains(conn) {
            // A driver bug, not a peer's doing; refusing it keeps the node consistent.
            log::error!("driver reused connection id {conn:?}; ignoring the new connection");
            return;
        }
        self.out.counters.connections_opened += 1;
        let (direction, expected) = match origin {
            Origin::Accepted => (Direction::Inbound, None),
            Origin::Dialed(dial) => match self.conns.take_dial(dial) {
                Some(pending) => (Direction::Outbound, pending.expected),
                None => {
                    debug!("{addr}: connected after its dial was cancelled; closing");
                    self.out.push(Action::Close { conn });
                    return;
                }
            },
        };
        // Inbound and outbound handshakes have their own slots: an inbound
        // flood must not refuse the dials we chose. Inbound slots are never
        // refused for being full (see `make_room_for_handshake`), only one
        // address's share of them is.
        let handshaking = self.conns.handshaking(direction);
        let ip = crate::peer::ip_key(addr.ip());
        let ip_limited = !(self.config.peer.limits.exempt_loopback && ip.is_loopback());
        let refusal = if self.shutting_down {
            Some(RefuseReason::ShuttingDown)
        } else if direction == Direction::Outbound
            && handshaking >= limits::OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX
        {
            Some(RefuseReason::TooManyHandshakes)
        } else if direction == Direction::Inbound
            && ip_limited
            && self.conns.inbound_handshakes_from(ip) >= limits::HANDSHAKES_PER_IP_MAX
        {
            Some(RefuseReason::TooManyHandshakesFromIp)
        } else if let Decision::Refuse(refusal) = self
            .peer_manager
            .handle_connection_attempt(now, conn, addr, direction)
        {
            Some(RefuseReason::Gated(refusal))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.out.counters.handshakes_failed += 1;
            if reason == RefuseReason::TooManyHandshakesFromIp {
                self.out.counters.refused_handshakes_from_ip += 1;
            } else {
                self.out.counters.refused_no_room += 1;
            }
            self.out.push(Action::Close { conn });
            self.out.notify(Notification::ConnectionRefused {
                addr,
                peer: None,
                reason,
            });
            return;
        }
        let mut timeout = self.config.handshake_timeout;
        if direction == Direction::Inbound {
            let handshaking = self.make_room_for_handshake(now, handshaking);
            if handshaking >= limits::HANDSHAKES_UNDER_PRESSURE_MIN {
                self.out.counters.handshakes_under_pressure += 1;
                timeout = timeout.min(limits::HANDSHAKE_TIMEOUT_UNDER_PRESSURE);
            }
        }
        let mut ephemeral_seed = [0u8; 32];
        self.rng.fill_bytes(&mut ephemeral_seed);
        let deadline = now + timeout;
        self.conns.open(
            now,
            conn,
            addr,
            direction,
            expected,
            ephemeral_seed,
            deadline,
            &mut self.out,
        );
    }

    /// With every inbound handshake slot taken, closes the handshake open
    /// the longest so that an admitted newcomer gets its slot: refusing the
    /// newcomer instead would let a flood of half-open connections lock out
    /// every honest peer for as long as it lasts. Returns the inbound
    /// handshakes in progress once there is room.
    fn make_room_for_handshake(&mut self, now: Instant, handshaking: usize) -> usize {
        if handshaking < limits::HANDSHAKES_IN_PROGRESS_MAX {
            return handshaking;
        }
        let Some(oldest) = self.conns.oldest_inbound_handshake() else {
            return handshaking;
        };
        self.out.counters.handshakes_evicted += 1;
        self.refuse(now, oldest, None, RefuseReason::HandshakeEvicted, None);
        handshaking - 1
    }

    fn on_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(Read {
            mut received,
            messages,
            result,
        }) = self.conns.read(now, conn, bytes, &mut self.out)
        else {
            return; // Closed by us already; late bytes are dropped.
        };
        for item in received.drain(..) {
            if !self.conns.contains(conn) {
                break; // Closed while applying an earlier item.
            }
            match item {
                Received::HandshakeDone(remote) => self.on_handshake_done(now, conn, remote),
                Received::Message(range) => self.on_message(now, conn, &messages[range]),
            }
        }
        self.conns.recycle(received, messages);
        if let Err(error) = result {
            if self.conns.contains(conn) {
                self.on_read_error(now, conn, error);
            }
        }
    }

    fn on_read_error(&mut self, now: Instant, conn: ConnId, error: ReadError) {
        let Some(connection) = self.conns.get(conn) else {
            return;
        };
        match &connection.state {
            ConnectionState::Handshaking { .. } => {
                let mut peer = None;
                let reason = match error {
                    ReadError::Secure(SecureError::BadSignature) => {
                        self.out.counters.refused_bad_signature += 1;
                        RefuseReason::BadSignature
                    }
                    ReadError::Secure(SecureError::UnexpectedPeer { actual }) => {
                        self.out.counters.refused_unexpected_peer += 1;
                        debug!("{}: dialled peer answered as {actual}", connection.addr);
                        peer = Some(actual);
                        RefuseReason::UnexpectedPeer {
                            expected: connection
                                .expected
                                .expect("only dials with an expected peer check it"),
                        }
                    }
                    other => {
                        self.out.counters.refused_handshake_error += 1;
                        RefuseReason::Handshake(other.to_string())
                    }
                };
                self.refuse(now, conn, peer, reason, None);
            }
            ConnectionState::Established(_) => {
                self.protocol_violation(now, conn, error.to_string())
            }
        }
    }

    /// The peer on `conn` broke the protocol: Goodbye(fault), close, and a
    /// high penalty so that a peer that keeps doing it is soon banned.
    fn protocol_violation(&mut self, now: Instant, conn: ConnId, what: String) {
        let Some(Connection {
            state: ConnectionState::Established(established),
            addr,
            ..
        }) = self.conns.get(conn)
        else {
            return;
        };
        let peer = established.peer;
        info!("{peer:?} at {addr}: protocol violation: {what}");
        self.out.counters.protocol_violations += 1;
        let goodbye = rpc::goodbye_request(GoodbyeReason::Fault);
        self.conns.send_raw(conn, &goodbye, &mut self.out);
        self.out.counters.goodbyes_sent += 1;
        self.remove_established(now, conn, DisconnectReason::ProtocolViolation(what));
        self.report(
            now,
            peer,
            crate::peer::Report::Penalty(crate::peer::Penalty::High),
        );
    }

    /// The handshake proved `remote`; admit it as a peer or refuse it.
    fn on_handshake_done(&mut self, now: Instant, conn: ConnId, remote: RemoteIdentity) {
        let ours = self.conns.hello();
        let (refusal, goodbye) = if remote.hello.version != ours.version {
            self.out.counters.refused_incompatible_version += 1;
            (
                Some(RefuseReason::IncompatibleVersion {
                    ours: ours.version,
                    theirs: remote.hello.version,
                }),
                Some(GoodbyeReason::IrrelevantNetwork),
            )
        } else if remote.hello.network_id != ours.network_id {
            self.out.counters.refused_wrong_network += 1;
            (
                Some(RefuseReason::WrongNetwork {
                    ours: ours.network_id,
                    theirs: remote.hello.network_id,
                }),
                Some(GoodbyeReason::IrrelevantNetwork),
            )
        } else if remote.peer == self.peer_id() {
            self.out.counters.refused_self_connection += 1;
            (Some(RefuseReason::SelfConnection), None)
        } else if self.shutting_down {
            self.out.counters.refused_no_room += 1;
            (
                Some(RefuseReason::ShuttingDown),
                Some(GoodbyeReason::ClientShutdown),
            )
        } else {
            (None, None)
        };
        if let Some(reason) = refusal {
            self.refuse(now, conn, Some(remote.peer), reason, goodbye);
            return;
        }
        let existing = self.conns.conn_of(&remote.peer);
        if let Some(existing) = existing {
            self.out.counters.refused_duplicate += 1;
            if !self.conns.keep_new_connection(existing, conn, remote.peer) {
                self.refuse(now, conn, Some(remote.peer), RefuseReason::Duplicate, None);
                return;
            }
        }
        if existing.is_none() {
            // With discovery, a full node makes room for a newcomer (see
            // `discovery.rs`) rather than refusing it unheard.
            self.make_room_for_inbound(now, conn, remote.peer);
        }
        if let Decision::Refuse(refusal) =
            self.peer_manager.handle_connected(now, conn, remote.peer)
        {
            self.out.counters.refused_no_room += 1;
            let goodbye = Some(refusal.goodbye_reason());
            self.refuse(
                now,
                conn,
                Some(remote.peer),
                RefuseReason::Gated(refusal),
                goodbye,
            );
            if refusal == crate::peer::Refusal::BadScore {
                // Coming back while still scored out is sustained abuse:
                // a few such returns end in a ban.
                let penalty = crate::peer::Report::Penalty(crate::peer::Penalty::Mid);
                self.report(now, remote.peer, penalty);
            }
            return;
        }
        if let Some(existing) = existing {
            // Move the peer to the new connection silently: to the
            // application the peer stays connected. Its open requests are lost
            // with the old connection and time out.
            debug!(
                "{:?}: replacing connection {existing:?} with {conn:?}",
                remote.peer
            );
            self.conns.drop_replaced(now, existing, &mut self.out);
            self.accept(now, conn, remote.peer);
            self.restart_session(now, conn, remote.peer);
            return;
        }
        self.accept(now, conn, remote.peer);
        self.out.counters.handshakes_completed += 1;
        let Some(connection) = self.conns.get(conn) else {
            return;
        };
        let (addr, direction) = (connection.addr, connection.direction);
        self.out.notify(Notification::PeerConnected {
            peer: remote.peer,
            addr,
            direction,
        });
        self.gossip_peer_connected(now, remote.peer, direction, addr);
        self.sync_peer_connected(now, remote.peer);
        self.request_status(now, remote.peer);
        self.discovery_peer_connected(now, remote.peer);
    }

    /// `peer` moved to `conn` silently, but its end may have seen the old
    /// connection close before this handshake ended and counts `conn` as a
    /// new session, knowing none of our subscriptions or chain. So a new
    /// session starts here too (the application still sees one peer): the
    /// router and range sync forget the peer and meet it again, and we ask
    /// for its Status.
    fn restart_session(&mut self, now: Instant, conn: ConnId, peer: PeerId) {
        let Some(connection) = self.conns.get(conn) else {
            return;
        };
        let (addr, direction) = (connection.addr, connection.direction);
        self.gossip.handle_peer_disconnected(now, &peer);
        self.gossip_peer_connected(now, peer, direction, addr);
        self.sync_peer_gone(now, peer);
        self.sync_peer_connected(now, peer);
        self.request_status(now, peer);
    }

    fn accept(&mut self, now: Instant, conn: ConnId, peer: PeerId) {
        let (ping, status) = (self.config.ping_interval, self.config.status_interval);
        self.conns.accept(now, conn, peer, ping, status);
    }

    /// Refuses a connection before it became a peer: optional Goodbye, close, notify.
    fn refuse(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: Option<PeerId>,
        reason: RefuseReason,
        goodbye: Option<GoodbyeReason>,
    ) {
        let Some(connection) = self.conns.get(conn) else {
            return;
        };
        let (addr, expected) = (connection.addr, connection.expected);
        if let Some(goodbye) = goodbye {
            if matches!(connection.state, ConnectionState::Established(_)) {
                let goodbye = rpc::goodbye_request(goodbye);
                self.conns.send_raw(conn, &goodbye, &mut self.out);
                self.out.counters.goodbyes_sent += 1;
            }
        }
        self.out.counters.handshakes_failed += 1;
        self.conns.flush(now, conn, &mut self.out);
        self.forget_connection(now, conn);
        self.out.push(Action::Close { conn });
        debug!("{addr}: refused: {reason}");
        self.out
            .notify(Notification::ConnectionRefused { addr, peer, reason });
        // Only our own dials name the peer we expected; an inbound
        // connection's claims must not remove anyone's candidate.
        if let Some(expected) = expected {
            self.discovery_connect_failed(now, expected);
        }
    }

    /// Drops our state for `conn` (not the peer's: see `remove_established`).
    fn forget_connection(&mut self, now: Instant, conn: ConnId) -> Option<Connection> {
        self.peer_manager.handle_connection_closed(now, conn);
        self.conns.forget(conn)
    }

    fn on_connection_closed(&mut self, now: Instant, conn: ConnId, cause: CloseCause) {
        let Some(connection) = self.conns.get(conn) else {
            return;
        };
        match &connection.state {
            ConnectionState::Established(established) if established.accepted => {
                // The driver has closed it already: no flush, no Close.
                self.forget_peer(now, conn, DisconnectReason::ConnectionLost(cause));
            }
            _ => {
                let (addr, expected) = (connection.addr, connection.expected);
                self.forget_connection(now, conn);
                self.out.counters.handshakes_failed += 1;
                self.out.counters.refused_handshake_error += 1;
                self.out.notify(Notification::ConnectionRefused {
                    addr,
                    peer: None,
                    reason: RefuseReason::ConnectionLost(cause),
                });
                // Our dial of `expected` ended before it became a peer.
                if let Some(expected) = expected {
                    self.discovery_connect_failed(now, expected);
                }
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.chain_tick(now);
        self.sync_tick(now);
        for dial in self.conns.expired_dials(now) {
            self.out.push(Action::CancelDial { dial });
            self.on_dial_failed(now, dial, "dial timed out".to_string());
        }
        let DueConnections {
            handshakes_expired,
            silent,
            stalled,
            keepalive,
        } = self.conns.due(now, self.config.peer_silence_timeout);
        for conn in handshakes_expired {
            self.out.counters.refused_timeout += 1;
            self.refuse(now, conn, None, RefuseReason::Timeout, None);
        }
        for conn in silent {
            self.out.counters.peers_silent += 1;
            self.remove_established(now, conn, DisconnectReason::Silent);
        }
        for peer in stalled {
            self.cut_stalled(now, peer);
        }
        for peer in keepalive {
            self.keepalive(now, peer);
        }
        self.on_request_timeouts(now);
        self.peer_manager.handle_timeout(now);
        self.apply_peer_timeout_events(now);
        self.gossip_heartbeat(now);
        self.hostile_tick(now);
        self.discovery_tick(now);
        self.peerstore_tick(now);
    }

    /// Carries out what the peer manager decided at its timeout.
    fn apply_peer_timeout_events(&mut self, now: Instant) {
        let events: Vec<PeerEvent> =
            std::iter::from_fn(|| self.peer_manager.poll_event()).collect();
        self.apply_peer_events(now, events);
    }

    /// Carries out what the peer manager decided.
    fn apply_peer_events(&mut self, now: Instant, events: Vec<PeerEvent>) {
        for event in events {
            match event {
                PeerEvent::Disconnect { peer, reason } => {
                    if let Some(conn) = self.conns.conn_of(&peer) {
                        info!("{peer:?}: disconnecting: goodbye {}", reason.code());
                        self.say_goodbye(now, conn, reason);
                    }
                }
                PeerEvent::Banned { peer, ip, until } => {
                    info!("{peer:?}: banned until {until} (ip {ip:?})");
                    self.out.counters.peers_banned += 1;
                    // Saved soon, not at the next interval (also when the
                    // application reported it, outside `handle`).
                    self.peerstore_watch_growth(now);
                    self.out
                        .notify(Notification::PeerBanned { peer, ip, until });
                }
                PeerEvent::Unbanned { peer } => {
                    self.out.notify(Notification::PeerUnbanned { peer })
                }
                PeerEvent::IpUnbanned { ip } => self.out.notify(Notification::IpUnbanned { ip }),
                PeerEvent::ScoreRecovered { peer } => {
                    self.out.notify(Notification::ScoreRecovered { peer })
                }
                PeerEvent::Dial { addr, peer } => {
                    self.dial(now, addr, peer);
                }
            }
        }
    }

    /// Scores `peer` and carries out what follows (disconnects, bans); the
    /// gossip router learns the new score.
    fn report(&mut self, now: Instant, peer: PeerId, report: crate::peer::Report) {
        let events = self.peer_manager.report(now, peer, report);
        self.update_application_score(now, peer);
        self.apply_peer_events(now, events);
    }

    fn shut_down(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        info!(
            "shutting down: saying goodbye to {} peers",
            self.conns.peer_count()
        );
        self.shutting_down = true;
        for dial in self.conns.dial_ids() {
            self.conns.take_dial(dial);
            self.out.push(Action::CancelDial { dial });
        }
        for conn in self.conns.conn_ids() {
            let Some(connection) = self.conns.get(conn) else {
                continue;
            };
            match &connection.state {
                ConnectionState::Established(established) if established.accepted => {
                    self.say_goodbye(now, conn, GoodbyeReason::ClientShutdown)
                }
                _ => self.refuse(
                    now,
                    conn,
                    None,
                    RefuseReason::ShuttingDown,
                    Some(GoodbyeReason::ClientShutdown),
                ),
            }
        }
        // The last snapshot, with every score and ban of this run.
        self.persist_known_peers(now);
    }

    /// `peer` has more than its gossip window waiting and took none of it
    /// for [`limits::WRITE_STALL_TIMEOUT`]: it stopped reading. Its identity pays
    /// a Mid penalty (first, so a ban it reaches also reaches its IP while it
    /// is still in the table), and the connection is cut with Goodbye(fault).
    fn cut_stalled(&mut self, now: Instant, peer: PeerId) {
        info!(
            "{peer:?}: disconnecting: took nothing we wrote for {:?}",
            limits::WRITE_STALL_TIMEOUT
        );
        self.out.counters.connections_stalled += 1;
        self.report(
            now,
            peer,
            crate::peer::Report::Penalty(crate::peer::Penalty::Mid),
        );
        if let Some(conn) = self.conns.conn_of(&peer) {
            self.say_goodbye(now, conn, GoodbyeReason::Fault);
        }
    }

    /// Sends Goodbye(reason) to an accepted peer and forgets it.
    fn say_goodbye(&mut self, now: Instant, conn: ConnId, reason: GoodbyeReason) {
        self.conns
            .send_raw(conn, &rpc::goodbye_request(reason), &mut self.out);
        self.out.counters.goodbyes_sent += 1;
        self.remove_established(now, conn, DisconnectReason::LocalGoodbye(reason));
    }

    /// Closes an established connection (after flushing) and reports the peer gone.
    fn remove_established(&mut self, now: Instant, conn: ConnId, reason: DisconnectReason) {
        if !self.conns.contains(conn) {
            return;
        }
        self.conns.flush(now, conn, &mut self.out);
        self.out.push(Action::Close { conn });
        self.forget_peer(now, conn, reason);
    }

    /// Forgets an established connection and reports its peer gone, without
    /// touching the transport (the caller closes it, or the driver already did).
    fn forget_peer(&mut self, now: Instant, conn: ConnId, reason: DisconnectReason) {
        let Some(connection) = self.forget_connection(now, conn) else {
            return;
        };
        if let ConnectionState::Established(established) = connection.state {
            if established.accepted {
                let peer = established.peer;
                self.out.counters.peers_disconnected += 1;
                debug!("{peer:?}: disconnected: {reason}");
                self.out
                    .notify(Notification::PeerDisconnected { peer, reason });
                self.on_peer_gone(peer);
                self.gossip.handle_peer_disconnected(now, &peer);
                self.sync_peer_gone(now, peer);
                self.discovery_peer_gone(now, peer);
            }
        }
    }

    /// Queues `message` (one logical message, any bytes) to `peer` as if
    /// this node had produced it. For fuzzing and tests of hostile peers:
    /// it lets a harness speak arbitrary messages over a real, authenticated
    /// channel. Returns whether `peer` is connected. Only with the `testing`
    /// feature: a production build cannot send what the node did not make.
    #[cfg(any(test, feature = "testing"))]
    pub fn testing_send_message(&mut self, peer: &PeerId, message: &[u8]) -> bool {
        if message.is_empty() || message.len() > limits::MESSAGE_BYTES_MAX {
            return false;
        }
        if !self.conns.send_to(peer, message, &mut self.out) {
            return false;
        }
        self.conns.flush_all(self.last_now, &mut self.out);
        true
    }
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;
