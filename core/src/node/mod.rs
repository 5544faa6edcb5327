//! The top-level state machine: connections, handshakes, peers, req/resp.
//!
//! # Design
//! Each connection is a small state machine, `Handshaking` then `Established`,
//! keyed by the driver's [`ConnId`]; an established connection is mapped to the
//! [`PeerId`] its handshake proved. Outbound plaintext is buffered per
//! connection and sealed once per `handle` call (or before a close), so a burst
//! of small messages becomes one Noise message and one `Send`.
//!
//! Around the connections sit three pure state machines the node drives:
//! the [`PeerManager`] (gating, scores, bans, static peers), the
//! [`OutboundRequests`] tracker (our requests: quotas, in-flight caps,
//! deadlines) and [`InboundRequests`] (peers' requests: admission, quotas,
//! answer deadlines). `rpc.rs` holds the req/resp glue: the built-in
//! protocols' handlers, responses, and what each outcome costs a peer.
//! The [`Gossip`] router is driven the same way; `gossip.rs` holds its glue
//! (logical messages of kind 32, events, heartbeat, application scores).
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
mod faults;
mod gossip;
mod rpc;
mod signing;
#[warn(clippy::arithmetic_side_effects)]
mod sync;

pub use self::chain::{BLOCKS_TOPIC, CLOCK_DISPARITY, WORK_IN_FLIGHT_MAX};
pub use self::faults::{StatusClaim, OVERSIZE_BLOCKS_MAX, SQUAT_CHAIN_BLOCKS, SQUAT_INTERVAL};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use log::{debug, info, warn};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::chain::{ChainConfig, ChainStore, StoreLimits};
use crate::codec::{append_length_prefixed, DecodeError, MessageReassembler, NoiseFrameDecoder};
use crate::gossip::{Gossip, Topic};
use crate::identity::{Identity, PeerId};
use crate::io::{
    Action, CloseCause, Command, ConnId, DialId, Direction, DisconnectReason, GoodbyeReason, Input,
    Notification, Origin, RefuseReason,
};
use crate::limits;
use crate::machine::Machine;
use crate::metrics::Counters;
use crate::peer::{Decision, PeerEvent, PeerManager};
use crate::reqresp::bodies::Metadata;
use crate::reqresp::{InboundConfig, InboundRequests, OutboundConfig, OutboundRequests};
use crate::secure::{
    Handshake, HandshakeStep, Hello, LocalKeys, RemoteIdentity, SecureError, Transport,
};
use crate::time::{Duration, Instant};

use self::rpc::Purpose;

/// Protocol version spoken by this build; peers must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// Node configuration. [`Config::new`] gives the defaults of [`crate::limits`].
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Deliberate misbehaviour, so the simulator can run hostile nodes on the
/// production code. Never set these in a real node. The sync liars' hooks
/// live in `node/faults.rs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
        }
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
    keys: LocalKeys,
    hello: Hello,
    rng: ChaCha20Rng,
    connections: BTreeMap<ConnId, Connection>,
    peers: BTreeMap<PeerId, ConnId>,
    dials: BTreeMap<DialId, PendingDial>,
    next_dial_id: u64,
    /// Connections with plaintext waiting to be sealed.
    unflushed: BTreeSet<ConnId>,
    actions: VecDeque<Action>,
    counters: Counters,
    last_now: Instant,
    shutting_down: bool,
    peer_manager: PeerManager,
    outbound: OutboundRequests,
    inbound: InboundRequests,
    /// Why we sent each request still open, by peer and request id.
    purposes: BTreeMap<(PeerId, crate::reqresp::RequestId), Purpose>,
    chain: ChainStore,
    chain_state: self::chain::ChainState,
    range_sync: crate::sync::RangeSync,
    lookups: crate::sync::Lookups,
    metadata: Metadata,
    gossip: Gossip,
    /// The topics we are subscribed to (at most `gossip::router::TOPICS_MAX`).
    gossip_topics: BTreeSet<Topic>,
    /// What our faults remember (empty for an honest node).
    hostile: self::faults::HostileState,
}

struct PendingDial {
    addr: SocketAddr,
    expected: Option<PeerId>,
    deadline: Instant,
}

struct Connection {
    addr: SocketAddr,
    direction: Direction,
    /// For a dial with a known identity: the peer that must answer.
    expected: Option<PeerId>,
    frames: NoiseFrameDecoder,
    state: ConnectionState,
    /// Bytes handed to the driver in `Action::Send` that it has not yet
    /// reported written (`Input::BytesWritten`): how backed up the transport is.
    unwritten_bytes: usize,
    /// When the driver last reported bytes of this connection written, or
    /// when bytes began to wait after none did: since when it has taken nothing.
    write_progress_at: Instant,
    /// Since when `unwritten_bytes` has been at least
    /// [`limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX`] (`None` while below).
    share_full_since: Option<Instant>,
}

enum ConnectionState {
    /// `None` only transiently while a message is being read.
    Handshaking {
        handshake: Option<Box<Handshake>>,
        deadline: Instant,
    },
    /// The channel is up. `accepted` turns true once the node's policy
    /// (network, version, duplicates, gater) has admitted the peer.
    Established(Box<Established>),
}

struct Established {
    peer: PeerId,
    accepted: bool,
    transport: Transport,
    messages: MessageReassembler,
    /// Plaintext (length-prefixed messages) not yet sealed.
    outbound: Vec<u8>,
    last_received: Instant,
    next_ping: Instant,
    next_status: Instant,
    /// The peer's Metadata sequence number we know, if any.
    metadata_seq: Option<u64>,
    /// Whether a Metadata request to it is open.
    metadata_requested: bool,
    /// The sequence number named by the Ping that made us ask for its
    /// Metadata last, and when: it counts as fetched once the answer comes,
    /// whatever the answer's own number, and the next fetch waits
    /// `METADATA_FETCH_INTERVAL`.
    metadata_asked: Option<(u64, Instant)>,
    /// Metadata answers it completed; only the first earns a reward.
    metadata_fetches: u32,
    /// Our requests to it that timed out in a row (a complete answer resets it).
    timeouts_in_a_row: u32,
    /// When we last asked it for its Status because a gossiped orphan of
    /// its found no lookup place (see `Node::sync_orphan`).
    orphan_status_asked_at: Option<Instant>,
}

/// What reading one connection's bytes produced, applied in order afterwards.
enum Received {
    HandshakeDone(RemoteIdentity),
    Message(Vec<u8>),
}

/// Why reading a connection's bytes failed.
enum ReadError {
    Decode(DecodeError),
    Secure(SecureError),
}

impl From<DecodeError> for ReadError {
    fn from(error: DecodeError) -> ReadError {
        ReadError::Decode(error)
    }
}

impl From<SecureError> for ReadError {
    fn from(error: SecureError) -> ReadError {
        ReadError::Secure(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Decode(error) => error.fmt(f),
            ReadError::Secure(error) => error.fmt(f),
        }
    }
}

impl Node {
    /// A node with `identity`, drawing all its randomness from `seed`.
    ///
    /// # Panics
    /// If the genesis names another network than `config.network_id`: a
    /// configuration bug the driver must catch first.
    pub fn new(config: Config, identity: Identity, seed: [u8; 32]) -> Node {
        assert_eq!(
            config.chain.genesis.network_id(),
            config.network_id,
            "the genesis is for another network"
        );
        let (chain, refused) = ChainStore::from_blocks(
            &config.chain.genesis,
            StoreLimits::default(),
            config.chain.stored.iter().cloned(),
        );
        for (root, error) in &refused {
            warn!(
                "stored block {} not loaded: {error}",
                crate::chain::genesis::hex_encode(&root[..4])
            );
        }
        let mut rng = ChaCha20Rng::from_seed(seed);
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
        // Both sides of a network derive the range quota from its genesis.
        let slot_duration_ms = config.chain.genesis.slot_duration_ms();
        let mut outbound_config = OutboundConfig::default();
        outbound_config.quotas = outbound_config.quotas.for_slot_duration(slot_duration_ms);
        let mut inbound_config = InboundConfig::default();
        inbound_config.quotas = inbound_config.quotas.for_slot_duration(slot_duration_ms);
        if config.faults.ignore_peer_quotas {
            outbound_config = rpc::flooding_outbound_config(outbound_config);
        }
        if config.faults.ignore_busy_answers {
            outbound_config.back_off_when_busy = false;
        }
        let mut node = Node {
            peer_manager: PeerManager::new(config.peer, peer_manager_seed),
            outbound: OutboundRequests::new(outbound_config),
            inbound: InboundRequests::new(inbound_config),
            purposes: BTreeMap::new(),
            chain,
            chain_state: self::chain::ChainState::new(&config),
            range_sync: crate::sync::RangeSync::new(config.sync.clone(), sync_seed),
            lookups: crate::sync::Lookups::new(),
            metadata: Metadata {
                seq: 0,
                topics: Vec::new(),
                capabilities: config.capabilities,
            },
            gossip: Gossip::new(config.gossip.clone(), gossip_seed),
            gossip_topics: BTreeSet::new(),
            hostile: self::faults::HostileState::default(),
            config,
            keys,
            hello,
            rng,
            connections: BTreeMap::new(),
            peers: BTreeMap::new(),
            dials: BTreeMap::new(),
            next_dial_id: 0,
            unflushed: BTreeSet::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            last_now: Instant::ZERO,
            shutting_down: false,
        };
        node.start_chain(Instant::ZERO);
        node
    }

    /// Our identity.
    pub fn peer_id(&self) -> PeerId {
        self.keys.peer_id()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connected peers, in `PeerId` order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(&peer, conn)| {
                let connection = &self.connections[conn];
                PeerInfo {
                    peer,
                    addr: connection.addr,
                    direction: connection.direction,
                }
            })
            .collect()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Event counts since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Scores, bans, chain status and best-peer selection.
    pub fn peer_manager(&self) -> &PeerManager {
        &self.peer_manager
    }

    /// The gossip router: meshes, topics, gossip scores, its counters.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Feeds one input. Then drain [`Node::poll_action`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        debug_assert!(
            now >= self.last_now,
            "time went backwards: {now} < {}",
            self.last_now
        );
        self.last_now = self.last_now.max(now);
        let now = self.last_now;
        match input {
            Input::ConnectionOpened {
                conn,
                remote,
                origin,
            } => self.on_connection_opened(now, conn, remote, origin),
            Input::BytesReceived { conn, bytes } => self.on_bytes(now, conn, &bytes),
            Input::ConnectionClosed { conn, cause } => self.on_connection_closed(now, conn, cause),
            Input::DialFailed { dial, error } => self.on_dial_failed(now, dial, error),
            Input::BytesWritten { conn, bytes } => self.on_bytes_written(now, conn, bytes),
            Input::WorkDone { id, output } => self.on_work_done(now, id, output),
            Input::Persisted { id } => self.on_persisted(now, id),
            Input::Timeout => self.on_timeout(now),
            Input::Command(command) => self.on_command(now, command),
            Input::Health(health) => self.on_health(health),
        }
        self.drive_sync(now);
        self.transmit_requests(now);
        self.transmit_gossip(now);
        self.flush_all();
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the driver must next call `handle(now, Input::Timeout)`, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dials = self.dials.values().map(|dial| dial.deadline);
        let connections = self
            .connections
            .values()
            .map(|connection| match &connection.state {
                ConnectionState::Handshaking { deadline, .. } => *deadline,
                ConnectionState::Established(established) => {
                    let at = established
                        .next_ping
                        .min(established.next_status)
                        .min(established.last_received + self.config.peer_silence_timeout);
                    // A deadline already past (a slow connection that stopped
                    // counting) is not a reason to wake again.
                    Node::write_deadline(connection)
                        .filter(|&deadline| deadline > self.last_now)
                        .map_or(at, |deadline| deadline.min(at))
                }
            });
        let machines = self.machines().map(|machine| machine.next_deadline());
        // Not plain sub-machines: the router's heartbeat is scheduled only
        // while it has work, production follows the slot clock, and faults
        // have timers of their own.
        let glue = [
            self.gossip_deadline(),
            self.chain_state.next_deadline(self.last_now),
            self.hostile_deadline(),
        ];
        dials
            .chain(connections)
            .chain(machines.into_iter().flatten())
            .chain(glue.into_iter().flatten())
            .min()
    }

    /// The parts that keep the [`Machine`] contract and whose every deadline
    /// wakes the node. A new protocol's machine is added here and to
    /// [`Node::on_timeout`], which drains its outputs in order.
    fn machines(&self) -> [&dyn Machine; 5] {
        [
            &self.peer_manager,
            &self.outbound,
            &self.inbound,
            &self.range_sync,
            &self.lookups,
        ]
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Dial { addr, peer } => self.dial(now, addr, peer),
            Command::Disconnect { peer, reason } => {
                if let Some(&conn) = self.peers.get(&peer) {
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
            Command::SetTopics { topics } => self.set_topics(topics),
            Command::Subscribe { topic } => self.gossip_subscribe(now, topic),
            Command::Unsubscribe { topic } => self.gossip_unsubscribe(now, topic),
            Command::Publish { topic, payload } => self.gossip_publish(now, topic, &payload),
            Command::ProposeBody { body } => {
                let bytes = body.len();
                if !self.queue_body(body) {
                    self.notify(Notification::BodyRefused { bytes });
                }
            }
            Command::ValidateGossip { id, verdict } => self.gossip_validate(now, id, verdict),
        }
    }

    fn dial(&mut self, now: Instant, addr: SocketAddr, peer: Option<PeerId>) {
        let refusal = if self.shutting_down {
            Some("shutting down".to_string())
        } else if peer.is_some_and(|peer| self.peers.contains_key(&peer)) {
            Some("already connected".to_string())
        } else if peer == Some(self.peer_id()) {
            Some("that is our own identity".to_string())
        } else if self.dials.len() >= limits::DIALS_IN_PROGRESS_MAX {
            Some("too many dials in progress".to_string())
        } else if let Decision::Refuse(refusal) = self.peer_manager.check_dial(now, addr, peer) {
            Some(format!("gated: {refusal:?}"))
        } else {
            None
        };
        if let Some(error) = refusal {
            self.counters.dials_failed += 1;
            self.peer_manager.on_dial_failed(now, addr);
            self.notify(Notification::DialFailed { addr, error });
            return;
        }
        let dial = DialId(self.next_dial_id);
        self.next_dial_id += 1;
        self.dials.insert(
            dial,
            PendingDial {
                addr,
                expected: peer,
                deadline: now + self.config.dial_timeout,
            },
        );
        self.counters.dials_started += 1;
        self.actions.push_back(Action::Dial { dial, addr });
    }

    fn on_dial_failed(&mut self, now: Instant, dial: DialId, error: String) {
        if let Some(pending) = self.dials.remove(&dial) {
            self.counters.dials_failed += 1;
            self.peer_manager.on_dial_failed(now, pending.addr);
            self.notify(Notification::DialFailed {
                addr: pending.addr,
                error,
            });
        }
    }

    fn on_connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: SocketAddr,
        origin: Origin,
    ) {
        if self.connections.contains_key(&conn) {
            // A driver bug, not a peer's doing; refusing it keeps the node consistent.
            log::error!("driver reused connection id {conn:?}; ignoring the new connection");
            return;
        }
        self.counters.connections_opened += 1;
        let (direction, expected) = match origin {
            Origin::Accepted => (Direction::Inbound, None),
            Origin::Dialed(dial) => match self.dials.remove(&dial) {
                Some(pending) => (Direction::Outbound, pending.expected),
                None => {
                    debug!("{addr}: connected after its dial was cancelled; closing");
                    self.actions.push_back(Action::Close { conn });
                    return;
                }
            },
        };
        // Inbound and outbound handshakes have their own slots: an inbound
        // flood must not refuse the dials we chose.
        let handshaking = self
            .connections
            .values()
            .filter(|connection| {
                connection.direction == direction
                    && matches!(connection.state, ConnectionState::Handshaking { .. })
            })
            .count();
        let handshakes_max = match direction {
            Direction::Inbound => limits::HANDSHAKES_IN_PROGRESS_MAX,
            Direction::Outbound => limits::OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX,
        };
        let refusal = if self.shutting_down {
            Some(RefuseReason::ShuttingDown)
        } else if handshaking >= handshakes_max {
            Some(RefuseReason::TooManyHandshakes)
        } else if let Decision::Refuse(refusal) = self
            .peer_manager
            .on_connection_attempt(now, conn, addr, direction)
        {
            Some(RefuseReason::Gated(refusal))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.counters.handshakes_failed += 1;
            self.counters.refused_no_room += 1;
            self.actions.push_back(Action::Close { conn });
            self.notify(Notification::ConnectionRefused {
                addr,
                peer: None,
                reason,
            });
            return;
        }
        let mut ephemeral_seed = [0u8; 32];
        self.rng.fill_bytes(&mut ephemeral_seed);
        let mut out = Vec::new();
        let handshake = match direction {
            Direction::Outbound => {
                Handshake::initiate(&self.keys, ephemeral_seed, expected, &mut out)
            }
            Direction::Inbound => Handshake::respond(&self.keys, ephemeral_seed),
        }
        .expect("building a handshake from our own valid keys cannot fail");
        self.connections.insert(
            conn,
            Connection {
                addr,
                direction,
                expected,
                frames: NoiseFrameDecoder::new(),
                unwritten_bytes: 0,
                write_progress_at: now,
                share_full_since: None,
                state: ConnectionState::Handshaking {
                    handshake: Some(Box::new(handshake)),
                    deadline: now + self.config.handshake_timeout,
                },
            },
        );
        if !out.is_empty() {
            self.emit_send(conn, out);
        }
    }

    fn on_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let keys = &self.keys;
        let hello = &self.hello;
        let Some(connection) = self.connections.get_mut(&conn) else {
            return; // Closed by us already; late bytes are dropped.
        };
        let mut received = Vec::new();
        let mut handshake_out = Vec::new();
        let mut plaintext = Vec::new();
        let Connection { frames, state, .. } = connection;
        let result = frames.decode(bytes, |message| -> Result<(), ReadError> {
            match state {
                ConnectionState::Handshaking { handshake, .. } => {
                    let current = handshake.take().expect("present between messages");
                    match (*current).read_message(keys, hello, message, &mut handshake_out)? {
                        HandshakeStep::Continue(next) => *handshake = Some(Box::new(next)),
                        HandshakeStep::Done { transport, remote } => {
                            *state = ConnectionState::Established(Box::new(Established {
                                peer: remote.peer,
                                accepted: false,
                                transport,
                                messages: MessageReassembler::new(),
                                outbound: Vec::new(),
                                last_received: now,
                                next_ping: Instant::MAX,
                                next_status: Instant::MAX,
                                metadata_seq: None,
                                metadata_requested: false,
                                metadata_asked: None,
                                metadata_fetches: 0,
                                orphan_status_asked_at: None,
                                timeouts_in_a_row: 0,
                            }));
                            received.push(Received::HandshakeDone(remote));
                        }
                    }
                }
                ConnectionState::Established(established) => {
                    plaintext.clear();
                    established.transport.open(message, &mut plaintext)?;
                    established
                        .messages
                        .push(&plaintext, |bytes| -> Result<(), ReadError> {
                            received.push(Received::Message(bytes.to_vec()));
                            Ok(())
                        })?;
                }
            }
            Ok(())
        });
        if matches!(state, ConnectionState::Established(_)) {
            frames.enter_transport_mode();
        }
        if !handshake_out.is_empty() {
            self.emit_send(conn, handshake_out);
        }
        for item in received {
            if !self.connections.contains_key(&conn) {
                return; // Closed while applying an earlier item.
            }
            match item {
                Received::HandshakeDone(remote) => self.on_handshake_done(now, conn, remote),
                Received::Message(message) => self.on_message(now, conn, &message),
            }
        }
        if let Err(error) = result {
            if self.connections.contains_key(&conn) {
                self.on_read_error(now, conn, error);
            }
        }
    }

    fn on_read_error(&mut self, now: Instant, conn: ConnId, error: ReadError) {
        let connection = &self.connections[&conn];
        match &connection.state {
            ConnectionState::Handshaking { .. } => {
                let mut peer = None;
                let reason = match error {
                    ReadError::Secure(SecureError::BadSignature) => {
                        self.counters.refused_bad_signature += 1;
                        RefuseReason::BadSignature
                    }
                    ReadError::Secure(SecureError::UnexpectedPeer { actual }) => {
                        self.counters.refused_unexpected_peer += 1;
                        debug!("{}: dialled peer answered as {actual}", connection.addr);
                        peer = Some(actual);
                        RefuseReason::UnexpectedPeer {
                            expected: connection
                                .expected
                                .expect("only dials with an expected peer check it"),
                        }
                    }
                    other => {
                        self.counters.refused_handshake_error += 1;
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
        }) = self.connections.get(&conn)
        else {
            return;
        };
        let peer = established.peer;
        info!("{peer:?} at {addr}: protocol violation: {what}");
        self.counters.protocol_violations += 1;
        self.send_raw(conn, &rpc::goodbye_request(GoodbyeReason::Fault));
        self.counters.goodbyes_sent += 1;
        self.remove_established(now, conn, DisconnectReason::ProtocolViolation(what));
        self.report(
            now,
            peer,
            crate::peer::Report::Penalty(crate::peer::Penalty::High),
        );
    }

    /// The handshake proved `remote`; admit it as a peer or refuse it.
    fn on_handshake_done(&mut self, now: Instant, conn: ConnId, remote: RemoteIdentity) {
        let ours = &self.hello;
        let (refusal, goodbye) = if remote.hello.version != ours.version {
            self.counters.refused_incompatible_version += 1;
            (
                Some(RefuseReason::IncompatibleVersion {
                    ours: ours.version,
                    theirs: remote.hello.version,
                }),
                Some(GoodbyeReason::IrrelevantNetwork),
            )
        } else if remote.hello.network_id != ours.network_id {
            self.counters.refused_wrong_network += 1;
            (
                Some(RefuseReason::WrongNetwork {
                    ours: ours.network_id,
                    theirs: remote.hello.network_id,
                }),
                Some(GoodbyeReason::IrrelevantNetwork),
            )
        } else if remote.peer == self.peer_id() {
            self.counters.refused_self_connection += 1;
            (Some(RefuseReason::SelfConnection), None)
        } else if self.shutting_down {
            self.counters.refused_no_room += 1;
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
        let existing = self.peers.get(&remote.peer).copied();
        if let Some(existing) = existing {
            self.counters.refused_duplicate += 1;
            if !self.keep_new_connection(existing, conn, remote.peer) {
                self.refuse(now, conn, Some(remote.peer), RefuseReason::Duplicate, None);
                return;
            }
        }
        if let Decision::Refuse(refusal) = self.peer_manager.on_connected(now, conn, remote.peer) {
            self.counters.refused_no_room += 1;
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
            self.flush(existing);
            self.unflushed.remove(&existing);
            self.connections.remove(&existing);
            self.actions.push_back(Action::Close { conn: existing });
            self.peers.insert(remote.peer, conn);
            self.mark_accepted(now, conn);
            return;
        }
        self.peers.insert(remote.peer, conn);
        self.mark_accepted(now, conn);
        self.counters.handshakes_completed += 1;
        let connection = &self.connections[&conn];
        let (addr, direction) = (connection.addr, connection.direction);
        self.notify(Notification::PeerConnected {
            peer: remote.peer,
            addr,
            direction,
        });
        self.gossip_peer_connected(now, remote.peer, direction, addr);
        self.sync_peer_connected(now, remote.peer);
        self.request_status(now, remote.peer);
    }

    /// Which of two connections to one peer both ends keep: the one dialled by
    /// the lower `PeerId`, or, when one side dialled both, the newer one
    /// (the dialler evidently no longer trusts the old one).
    fn keep_new_connection(&self, existing: ConnId, new: ConnId, remote: PeerId) -> bool {
        let dialler = |conn: ConnId| match self.connections[&conn].direction {
            Direction::Outbound => self.peer_id(),
            Direction::Inbound => remote,
        };
        let (old_dialler, new_dialler) = (dialler(existing), dialler(new));
        if old_dialler == new_dialler {
            true
        } else {
            new_dialler < old_dialler
        }
    }

    fn mark_accepted(&mut self, now: Instant, conn: ConnId) {
        let ping_interval = self.config.ping_interval;
        let status_interval = self.config.status_interval;
        if let Some(Connection {
            state: ConnectionState::Established(established),
            ..
        }) = self.connections.get_mut(&conn)
        {
            established.accepted = true;
            established.next_ping = now + ping_interval;
            established.next_status = now + status_interval;
        }
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
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let addr = connection.addr;
        if let Some(goodbye) = goodbye {
            if matches!(connection.state, ConnectionState::Established(_)) {
                self.send_raw(conn, &rpc::goodbye_request(goodbye));
                self.counters.goodbyes_sent += 1;
            }
        }
        self.counters.handshakes_failed += 1;
        self.flush(conn);
        self.forget_connection(now, conn);
        self.actions.push_back(Action::Close { conn });
        debug!("{addr}: refused: {reason}");
        self.notify(Notification::ConnectionRefused { addr, peer, reason });
    }

    /// Drops our state for `conn` (not the peer's: see `remove_established`).
    fn forget_connection(&mut self, now: Instant, conn: ConnId) -> Option<Connection> {
        self.unflushed.remove(&conn);
        self.peer_manager.on_connection_closed(now, conn);
        self.connections.remove(&conn)
    }

    fn on_connection_closed(&mut self, now: Instant, conn: ConnId, cause: CloseCause) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        match &connection.state {
            ConnectionState::Established(established) if established.accepted => {
                // The driver has closed it already: no flush, no Close.
                self.forget_peer(now, conn, DisconnectReason::ConnectionLost(cause));
            }
            _ => {
                let addr = connection.addr;
                self.forget_connection(now, conn);
                self.counters.handshakes_failed += 1;
                self.counters.refused_handshake_error += 1;
                self.notify(Notification::ConnectionRefused {
                    addr,
                    peer: None,
                    reason: RefuseReason::ConnectionLost(cause),
                });
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.chain_tick(now);
        self.sync_tick(now);
        let expired_dials: Vec<DialId> = self
            .dials
            .iter()
            .filter(|(_, dial)| dial.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for dial in expired_dials {
            self.actions.push_back(Action::CancelDial { dial });
            self.on_dial_failed(now, dial, "dial timed out".to_string());
        }
        let mut handshakes_expired = Vec::new();
        let mut silent = Vec::new();
        let mut stalled = Vec::new();
        let mut due = Vec::new();
        for (&conn, connection) in &self.connections {
            match &connection.state {
                ConnectionState::Handshaking { deadline, .. } => {
                    if *deadline <= now {
                        handshakes_expired.push(conn);
                    }
                }
                ConnectionState::Established(established) => {
                    if established.last_received + self.config.peer_silence_timeout <= now {
                        silent.push(conn);
                    } else if established.accepted && Node::is_stalled(now, connection) {
                        stalled.push(established.peer);
                    } else if established.next_ping <= now || established.next_status <= now {
                        due.push(established.peer);
                    }
                }
            }
        }
        for conn in handshakes_expired {
            self.counters.refused_timeout += 1;
            self.refuse(now, conn, None, RefuseReason::Timeout, None);
        }
        for conn in silent {
            self.counters.peers_silent += 1;
            self.remove_established(now, conn, DisconnectReason::Silent);
        }
        for peer in stalled {
            self.cut_stalled(now, peer);
        }
        for peer in due {
            self.keepalive(now, peer);
        }
        self.on_request_timeouts(now);
        self.peer_manager.handle_timeout(now);
        self.apply_peer_timeout_events(now);
        self.gossip_heartbeat(now);
        self.hostile_tick(now);
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
                    if let Some(&conn) = self.peers.get(&peer) {
                        info!("{peer:?}: disconnecting: goodbye {}", reason.code());
                        self.say_goodbye(now, conn, reason);
                    }
                }
                PeerEvent::Banned { peer, ip, until } => {
                    info!("{peer:?}: banned until {until} (ip {ip:?})");
                    self.counters.peers_banned += 1;
                    self.notify(Notification::PeerBanned { peer, ip, until });
                }
                PeerEvent::Unbanned { peer } => self.notify(Notification::PeerUnbanned { peer }),
                PeerEvent::IpUnbanned { ip } => self.notify(Notification::IpUnbanned { ip }),
                PeerEvent::ScoreRecovered { peer } => {
                    self.notify(Notification::ScoreRecovered { peer })
                }
                PeerEvent::Dial { addr, peer } => self.dial(now, addr, peer),
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
            self.peers.len()
        );
        self.shutting_down = true;
        let dials: Vec<DialId> = self.dials.keys().copied().collect();
        for dial in dials {
            self.dials.remove(&dial);
            self.actions.push_back(Action::CancelDial { dial });
        }
        let conns: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in conns {
            match &self.connections[&conn].state {
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
        self.counters.connections_stalled += 1;
        self.report(
            now,
            peer,
            crate::peer::Report::Penalty(crate::peer::Penalty::Mid),
        );
        if let Some(&conn) = self.peers.get(&peer) {
            self.say_goodbye(now, conn, GoodbyeReason::Fault);
        }
    }

    /// Sends Goodbye(reason) to an accepted peer and forgets it.
    fn say_goodbye(&mut self, now: Instant, conn: ConnId, reason: GoodbyeReason) {
        self.send_raw(conn, &rpc::goodbye_request(reason));
        self.counters.goodbyes_sent += 1;
        self.remove_established(now, conn, DisconnectReason::LocalGoodbye(reason));
    }

    /// Closes an established connection (after flushing) and reports the peer gone.
    fn remove_established(&mut self, now: Instant, conn: ConnId, reason: DisconnectReason) {
        if !self.connections.contains_key(&conn) {
            return;
        }
        self.flush(conn);
        self.actions.push_back(Action::Close { conn });
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
                self.peers.remove(&peer);
                self.counters.peers_disconnected += 1;
                debug!("{peer:?}: disconnected: {reason}");
                self.notify(Notification::PeerDisconnected { peer, reason });
                self.on_peer_gone(peer);
                self.gossip.on_peer_disconnected(now, &peer);
                self.sync_peer_gone(now, peer);
            }
        }
    }

    /// Queues one logical message for an established connection; sealed at the next flush.
    fn send_raw(&mut self, conn: ConnId, message: &[u8]) {
        let Some(Connection {
            state: ConnectionState::Established(established),
            ..
        }) = self.connections.get_mut(&conn)
        else {
            return;
        };
        append_length_prefixed(&mut established.outbound, message);
        self.counters.messages_sent += 1;
        self.unflushed.insert(conn);
    }

    /// Seals a connection's queued plaintext into one `Send`.
    fn flush(&mut self, conn: ConnId) {
        if !self.unflushed.remove(&conn) {
            return;
        }
        let Some(Connection {
            state: ConnectionState::Established(established),
            ..
        }) = self.connections.get_mut(&conn)
        else {
            return;
        };
        let mut bytes = Vec::with_capacity(established.outbound.len() + 64);
        established
            .transport
            .seal(&established.outbound, &mut bytes);
        established.outbound.clear();
        self.emit_send(conn, bytes);
    }

    /// Hands `bytes` to the driver, counting them as unwritten until it says otherwise.
    fn emit_send(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let now = self.last_now;
        if let Some(connection) = self.connections.get_mut(&conn) {
            if connection.unwritten_bytes == 0 {
                connection.write_progress_at = now;
            }
            connection.unwritten_bytes = connection.unwritten_bytes.saturating_add(bytes.len());
            if connection.unwritten_bytes >= limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX {
                connection.share_full_since.get_or_insert(now);
            }
        }
        self.actions.push_back(Action::Send { conn, bytes });
    }

    fn on_bytes_written(&mut self, now: Instant, conn: ConnId, bytes: usize) {
        // Late reports for a connection we closed are expected and harmless;
        // a driver that wrote bytes of its own (a test's) may over-report,
        // which only opens the window early.
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.unwritten_bytes = connection.unwritten_bytes.saturating_sub(bytes);
            if bytes > 0 {
                connection.write_progress_at = now;
            }
            if connection.unwritten_bytes < limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX {
                connection.share_full_since = None;
            }
        }
    }

    /// What the connections count toward the node-wide gossip window at
    /// `now`: each its unwritten bytes plus plaintext waiting to be sealed,
    /// capped at [`limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX`], and nothing
    /// from one that has held its full share for
    /// [`limits::GOSSIP_SLOW_CONNECTION_AFTER`] (its own link or reader is the
    /// bottleneck, not our uplink).
    fn unwritten_total(now: Instant, connections: &BTreeMap<ConnId, Connection>) -> usize {
        connections
            .values()
            .map(|connection| Node::node_window_share(now, connection))
            .fold(0usize, usize::saturating_add)
    }

    /// One connection's part of [`Node::unwritten_total`].
    fn node_window_share(now: Instant, connection: &Connection) -> usize {
        if Node::slow_since(connection).is_some_and(|since| since <= now) {
            return 0;
        }
        Node::unsent_bytes(connection).min(limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX)
    }

    /// Bytes handed to the driver and not written, plus plaintext waiting to be sealed.
    fn unsent_bytes(connection: &Connection) -> usize {
        let pending = match &connection.state {
            ConnectionState::Established(established) => established.outbound.len(),
            ConnectionState::Handshaking { .. } => 0,
        };
        connection.unwritten_bytes.saturating_add(pending)
    }

    /// From when `connection` is slow (its own link or reader, not our
    /// uplink, holds it back): it has held its full share, or taken none of
    /// its waiting bytes, for [`limits::GOSSIP_SLOW_CONNECTION_AFTER`].
    /// `None` while nothing waits.
    fn slow_since(connection: &Connection) -> Option<Instant> {
        if connection.unwritten_bytes == 0 {
            return None;
        }
        let idle = connection.write_progress_at;
        let since = connection
            .share_full_since
            .map_or(idle, |full| full.min(idle));
        Some(since + limits::GOSSIP_SLOW_CONNECTION_AFTER)
    }

    /// Whether `connection` is over its own gossip window and has taken
    /// nothing for [`limits::WRITE_STALL_TIMEOUT`]: its peer stopped reading.
    fn is_stalled(now: Instant, connection: &Connection) -> bool {
        Node::unsent_bytes(connection) >= limits::GOSSIP_SEND_WINDOW_BYTES
            && connection.write_progress_at + limits::WRITE_STALL_TIMEOUT <= now
    }

    /// When `connection` next changes state without an input: it stops
    /// counting toward the node window, or it is cut as stalled.
    fn write_deadline(connection: &Connection) -> Option<Instant> {
        let slow = Node::slow_since(connection)?;
        if Node::unsent_bytes(connection) < limits::GOSSIP_SEND_WINDOW_BYTES {
            return Some(slow);
        }
        Some(slow.min(connection.write_progress_at + limits::WRITE_STALL_TIMEOUT))
    }

    /// Whether `conn` can take more gossip now: what the driver has not
    /// written plus what waits to be sealed is below [`limits::GOSSIP_SEND_WINDOW_BYTES`].
    fn gossip_window_open(connections: &BTreeMap<ConnId, Connection>, conn: ConnId) -> bool {
        match connections.get(&conn) {
            Some(Connection {
                state: ConnectionState::Established(established),
                unwritten_bytes,
                ..
            }) => {
                unwritten_bytes.saturating_add(established.outbound.len())
                    < limits::GOSSIP_SEND_WINDOW_BYTES
            }
            _ => false,
        }
    }

    fn flush_all(&mut self) {
        while let Some(&conn) = self.unflushed.first() {
            self.flush(conn);
        }
    }

    fn notify(&mut self, notification: Notification) {
        self.actions.push_back(Action::Notify(notification));
    }

    /// Queues `message` (one logical message, any bytes) to `peer` as if
    /// this node had produced it. For fuzzing and tests of hostile peers:
    /// it lets a harness speak arbitrary messages over a real, authenticated
    /// channel. Returns whether `peer` is connected. Only with the `testing`
    /// feature: a production build cannot send what the node did not make.
    #[cfg(any(test, feature = "testing"))]
    pub fn testing_send_message(&mut self, peer: &PeerId, message: &[u8]) -> bool {
        let Some(&conn) = self.peers.get(peer) else {
            return false;
        };
        if message.is_empty() || message.len() > limits::MESSAGE_BYTES_MAX {
            return false;
        }
        self.send_raw(conn, message);
        self.flush_all();
        true
    }

    /// The established, accepted connection state of `peer`.
    fn established_mut(&mut self, peer: &PeerId) -> Option<&mut Established> {
        let conn = self.peers.get(peer)?;
        match &mut self.connections.get_mut(conn)?.state {
            ConnectionState::Established(established) => Some(established),
            ConnectionState::Handshaking { .. } => None,
        }
    }
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;
