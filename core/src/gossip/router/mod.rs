//! The gossip router: topics, the mesh, lazy gossip, IDONTWANT, validation
//! and scores, as one pure state machine.
//!
//! # Design
//! [`Gossip`] follows the core's run-loop contract. Sort its methods so:
//! - `on_*`, [`Machine::handle_timeout`](crate::machine::Machine::handle_timeout) (the heartbeat), [`Gossip::report_validation`]: something
//!   happened (a peer came or went, an RPC arrived, time passed, the
//!   application judged a message);
//! - [`Gossip::subscribe`], [`Gossip::unsubscribe`], [`Gossip::publish`],
//!   [`Gossip::set_application_score`]: the node asks for something;
//! - `poll_*`: after every call above, drain [`Gossip::poll_send`] (one
//!   encoded RPC of kind 32 per call, for one peer) and [`Gossip::poll_event`]
//!   until `None`, then call the heartbeat ([`Machine::handle_timeout`](crate::machine::Machine::handle_timeout)) at [`Machine::next_deadline`](crate::machine::Machine::next_deadline).
//!
//! ```text
//!  handle_rpc ─► graylisted? drop ─► decode ─► subscriptions, control, messages
//!   message ─► subscribed? ─► seen? (duplicate: credit/penalise) ─► IDONTWANT to mesh (> 1 KiB)
//!              (a copy of a large frame we hold is known by its bytes, before decompressing)
//!           ─► pending validation ─► GossipEvent::Message
//!  report_validation ─► Accept: mcache, forward to mesh (not to senders nor IDONTWANT-ers)
//!                    ─► Reject: invalid-message penalty for every sender; Ignore: nothing
//!  heartbeat (700 ms) ─► expire (seen 2 min, promises 3 s, IDONTWANT, backoffs, fanout 60 s)
//!                     ─► decay scores ─► mesh: prune negative, fill to D below D_lo,
//!                        trim to D above D_hi (best D_score kept, D_out outbound),
//!                        opportunistic grafting ─► IHAVE over the last 3 of 6 mcache windows
//! ```
//!
//! Every timer is checked at the heartbeat, so [`Machine::next_deadline`](crate::machine::Machine::next_deadline) is
//! only ever the next heartbeat. Randomness (mesh selection, gossip targets,
//! id shuffles) comes from a `ChaCha20Rng` seeded at construction; every map
//! is a `BTreeMap`, so the same inputs give the same RPCs, bit for bit.
//!
//! The code is split by concern: `config.rs` (the limits and [`Config`]),
//! `events.rs` (what the router and the node tell each other), `peers.rs`
//! (peers coming and going, scores), `topics.rs` (subscribing, publishing),
//! `rpc.rs` (inbound RPCs and validation), `cache.rs` (message cache and
//! seen-set), `mesh.rs` (the heartbeat), `queue.rs` (per-peer send queues);
//! this file holds [`Gossip`] itself, its getters and its invariants.
//!
//! Both sides respect the prune backoff: a PRUNE we send or receive records
//! `(topic, peer) → until`, we never GRAFT such a peer before then, and a
//! GRAFT received before then is refused with a PRUNE and costs the peer a
//! behaviour penalty.
//!
//! # Security
//! Provided: no state is created for topics we are not subscribed to (GRAFT,
//! PRUNE, IHAVE and messages on other topics are dropped), every per-peer
//! and per-topic structure is capped (see Limits), times derived from peer
//! values saturate and peer backoffs are capped at [`PRUNE_BACKOFF_SECS_MAX`];
//! outbound queues are bounded and drop gossip before control; peers below
//! [`GRAYLIST_THRESHOLD`](crate::gossip::score::GRAYLIST_THRESHOLD) are not read at all. Scores survive a reconnect for
//! [`SCORE_RETENTION`].
//! Not provided: message authenticity (messages are unsigned; the channel is
//! authenticated hop by hop), peer exchange (PRUNE carries no peers: ids
//! without addresses are of no use to us), and any judgement of payloads
//! (the application's validator).
//!
//! # Limits
//! Per peer: [`PEER_TOPICS_MAX`] announced topics (more are ignored),
//! [`SEND_QUEUE_BYTES_PER_PEER_MAX`] and [`SEND_QUEUE_ITEMS_PER_PEER_MAX`]
//! queued (drop the newest gossip, then the oldest gossip, then control),
//! [`IDONTWANT_IDS_PER_PEER_MAX`] ids (oldest evicted, expire after
//! [`IDONTWANT_TTL`]), [`IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX`] IHAVEs
//! read and [`IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX`] ids asked per heartbeat,
//! [`IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX`] IWANT ids and
//! [`IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX`] IDONTWANT ids taken per
//! heartbeat (beyond [`CONTROL_ALLOWANCE_SLACK_FACTOR`] times any of these
//! allowances, a [`Misbehaviour::ControlFlood`] penalty, once per heartbeat),
//! [`GOSSIP_RETRANSMISSIONS_MAX`] answers per id and only to a peer we
//! announced it to. Every id list is handled in time linear in its length
//! (sets, not scans; IDONTWANT cancels queued messages when they reach the
//! front of the queue, not by scanning it). Global: [`GOSSIP_PEERS_MAX`]
//! peers, [`TOPICS_MAX`] topics, [`SEEN_MESSAGES_MAX`] seen ids (oldest
//! evicted), [`MCACHE_MESSAGES_MAX`] and [`MCACHE_BYTES_MAX`] cached (oldest
//! evicted), [`KNOWN_FRAMES_MAX`] keys of large frames (oldest forgotten),
//! [`VALIDATION_PENDING_MAX`] and [`VALIDATION_PENDING_BYTES_MAX`]
//! pending (oldest dropped), [`PROMISES_MAX`] promises (new ones not made),
//! [`BACKOFFS_MAX`] backoffs (one per our topic and connected peer: they die
//! with the connection, so none is ever evicted),
//! [`RETAINED_SCORES_MAX`] retained scores (earliest expiring evicted),
//! [`EVENTS_MAX`] events (oldest dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::score::PeerStats;
use super::wire::{MessageId, Topic};
use crate::identity::PeerId;
use crate::time::Instant;

mod cache;
mod config;
mod events;
mod mesh;
mod peers;
mod queue;
mod rpc;
mod topics;

pub use config::{
    Config, BACKOFFS_MAX, CONTROL_ALLOWANCE_SLACK_FACTOR, DELIVERERS_PER_MESSAGE_MAX, EVENTS_MAX,
    FANOUT_TTL, FRAME_KEY_EDGE_BYTES, FRAME_MATCH_BYTES_MIN, GOSSIP_FACTOR_PERCENT, GOSSIP_LAZY,
    GOSSIP_PEERS_MAX, GOSSIP_RETRANSMISSIONS_MAX, GOSSIP_WINDOWS, HEARTBEAT_INTERVAL,
    IDONTWANT_BYTES_MIN, IDONTWANT_IDS_PER_PEER_MAX, IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX,
    IDONTWANT_TTL, IHAVE_IDS_PER_MESSAGE_MAX, IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX,
    IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX, IWANT_FOLLOWUP_TIME,
    IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX, IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX,
    KNOWN_FRAMES_MAX, MCACHE_BYTES_MAX, MCACHE_MESSAGES_MAX, MCACHE_WINDOWS, MESH_N, MESH_N_HIGH,
    MESH_N_LOW, MESH_N_SCORE, MESH_OUTBOUND_MIN, OPPORTUNISTIC_GRAFT_HEARTBEATS,
    OPPORTUNISTIC_GRAFT_PEERS, PEER_TOPICS_MAX, PROMISES_MAX, PRUNE_BACKOFF,
    PRUNE_BACKOFF_SECS_MAX, RETAINED_SCORES_MAX, SCORE_RETENTION, SEEN_MESSAGES_MAX, SEEN_TTL,
    SEND_QUEUE_BYTES_PER_PEER_MAX, SEND_QUEUE_ITEMS_PER_PEER_MAX, SLOW_PEER_GOSSIP_DROPS_MAX,
    TOPICS_MAX, VALIDATION_PENDING_BYTES_MAX, VALIDATION_PENDING_MAX, VALIDATION_TIMEOUT,
};
pub use events::{
    Counters, GossipEvent, Misbehaviour, PublishError, SubscribeError, TopicCounters, Validation,
};
pub use queue::SendReadiness;

use cache::{KnownFrames, MessageCache, Seen};
use peers::Peer;
use queue::Item;
use rpc::Pending;
use topics::Fanout;

/// The gossip router. See the module docs for the call order.
#[derive(Debug)]
pub struct Gossip {
    config: Config,
    rng: ChaCha20Rng,
    peers: BTreeMap<PeerId, Peer>,
    peers_per_ip: BTreeMap<IpAddr, usize>,
    subscriptions: BTreeSet<Topic>,
    mesh: BTreeMap<Topic, BTreeSet<PeerId>>,
    fanout: BTreeMap<Topic, Fanout>,
    backoff: BTreeMap<(Topic, PeerId), Instant>,
    topic_deliveries: BTreeMap<Topic, f64>,
    seen: BTreeMap<MessageId, Seen>,
    seen_order: VecDeque<MessageId>,
    mcache: MessageCache,
    known_frames: KnownFrames,
    pending: BTreeMap<MessageId, Pending>,
    pending_order: VecDeque<MessageId>,
    pending_bytes: usize,
    promises: BTreeMap<MessageId, (PeerId, Instant)>,
    retained: BTreeMap<PeerId, (Instant, PeerStats)>,
    events: VecDeque<GossipEvent>,
    next_heartbeat: Instant,
    heartbeats: u64,
    send_cursor: Option<PeerId>,
    last_now: Instant,
    counters: Counters,
}

impl Gossip {
    /// A router with no peers and no topics, drawing its randomness from `seed`.
    ///
    /// # Panics
    /// If the configuration breaks `0 < D_lo ≤ D ≤ D_hi` or has a zero heartbeat.
    pub fn new(config: Config, seed: [u8; 32]) -> Gossip {
        assert!(0 < config.mesh_n_low && config.mesh_n_low <= config.mesh_n);
        assert!(config.mesh_n <= config.mesh_n_high);
        assert!(!config.heartbeat_interval.is_zero());
        let next_heartbeat = Instant::ZERO + config.heartbeat_interval;
        Gossip {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            peers: BTreeMap::new(),
            peers_per_ip: BTreeMap::new(),
            subscriptions: BTreeSet::new(),
            mesh: BTreeMap::new(),
            fanout: BTreeMap::new(),
            backoff: BTreeMap::new(),
            topic_deliveries: BTreeMap::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            mcache: MessageCache::new(),
            known_frames: KnownFrames::default(),
            pending: BTreeMap::new(),
            pending_order: VecDeque::new(),
            pending_bytes: 0,
            promises: BTreeMap::new(),
            retained: BTreeMap::new(),
            events: VecDeque::new(),
            next_heartbeat,
            heartbeats: 0,
            send_cursor: None,
            last_now: Instant::ZERO,
            counters: Counters::default(),
        }
    }

    /// What was counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Peers tracked.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether we are subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &Topic) -> bool {
        self.subscriptions.contains(topic)
    }

    /// The topics we are subscribed to, in order.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Topic> {
        self.subscriptions.iter()
    }

    /// Our mesh for `topic`, in `PeerId` order.
    pub fn mesh_peers(&self, topic: &Topic) -> Vec<PeerId> {
        self.mesh
            .get(topic)
            .map_or_else(Vec::new, |mesh| mesh.iter().copied().collect())
    }

    /// Our fanout for `topic`, in `PeerId` order.
    pub fn fanout_peers(&self, topic: &Topic) -> Vec<PeerId> {
        self.fanout
            .get(topic)
            .map_or_else(Vec::new, |fanout| fanout.peers.iter().copied().collect())
    }

    /// Topics `peer` announced.
    pub fn peer_topics(&self, peer: &PeerId) -> Vec<Topic> {
        self.peers
            .get(peer)
            .map_or_else(Vec::new, |p| p.topics.iter().cloned().collect())
    }

    /// Whether `peer` is in backoff for `topic` at `now`.
    pub fn in_backoff(&self, now: Instant, topic: &Topic, peer: &PeerId) -> bool {
        self.backoff
            .get(&(topic.clone(), *peer))
            .is_some_and(|until| now < *until)
    }

    /// `peer`'s gossip score at `now`, if it is connected.
    pub fn score(&self, now: Instant, peer: &PeerId) -> Option<f64> {
        self.peers.get(peer).map(|p| self.score_of_peer(now, p))
    }

    /// Items queued for `peer`.
    pub fn queued_items(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, Peer::queued_items)
    }

    /// Bytes queued for `peer` (as encoded items).
    pub fn queued_bytes(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.queued_bytes)
    }

    /// Ids remembered as seen.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Messages in the message cache.
    pub fn mcache_len(&self) -> usize {
        self.mcache.entries.len()
    }

    /// Messages awaiting the application's verdict.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Outstanding IWANT promises.
    pub fn promises_len(&self) -> usize {
        self.promises.len()
    }

    /// GRAFTs from `peer` (while connected) we refused because they came
    /// inside a backoff; `None` if it is not connected.
    pub fn grafts_refused_in_backoff(&self, peer: &PeerId) -> Option<u32> {
        self.peers.get(peer).map(|p| p.grafts_refused_in_backoff)
    }

    /// Backoffs remembered.
    pub fn backoffs_len(&self) -> usize {
        self.backoff.len()
    }

    /// Ids `peer` asked us not to send, remembered.
    pub fn dont_want_len(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.dont_want.len())
    }

    /// Panics if a bound or an internal invariant is broken: every cap of
    /// the module docs' Limits, and the meshes holding only connected,
    /// subscribed peers. For tests and fuzzing; cheap enough for debug runs.
    pub fn assert_invariants(&self) {
        assert!(self.peers.len() <= GOSSIP_PEERS_MAX);
        assert!(self.subscriptions.len() <= TOPICS_MAX);
        assert!(self.seen.len() <= SEEN_MESSAGES_MAX);
        assert!(self.pending.len() <= VALIDATION_PENDING_MAX);
        assert!(self.pending_bytes <= VALIDATION_PENDING_BYTES_MAX);
        assert!(self.pending_order.len() <= 2 * VALIDATION_PENDING_MAX + 1);
        assert!(self.seen_order.len() == self.seen.len());
        assert!(self.mcache.entries.len() <= MCACHE_MESSAGES_MAX);
        assert!(self.known_frames.len() <= KNOWN_FRAMES_MAX);
        assert!(self.mcache.bytes <= MCACHE_BYTES_MAX);
        assert!(self.mcache.windows.len() <= MCACHE_WINDOWS);
        assert!(self.promises.len() <= PROMISES_MAX);
        assert!(self.backoff.len() <= BACKOFFS_MAX);
        assert!(self.retained.len() <= RETAINED_SCORES_MAX);
        assert!(self.events.len() <= EVENTS_MAX);
        assert_eq!(
            self.peers_per_ip.values().sum::<usize>(),
            self.peers.len(),
            "every peer counted once by IP"
        );
        for (topic, mesh) in &self.mesh {
            assert!(
                self.subscriptions.contains(topic),
                "a mesh only for our topics"
            );
            for peer in mesh {
                assert!(self.peers.contains_key(peer), "mesh peers are connected");
            }
        }
        for fanout in self.fanout.values() {
            assert!(fanout.peers.len() <= self.config.mesh_n);
        }
        for (topic, peer) in self.backoff.keys() {
            assert!(
                self.subscriptions.contains(topic),
                "backoffs only for our topics"
            );
            assert!(
                self.peers.contains_key(peer),
                "backoffs only for connected peers"
            );
        }
        for p in self.peers.values() {
            assert!(p.topics.len() <= PEER_TOPICS_MAX);
            assert!(p.queued_bytes <= SEND_QUEUE_BYTES_PER_PEER_MAX);
            assert!(p.queued_items() <= SEND_QUEUE_ITEMS_PER_PEER_MAX);
            assert!(p.dont_want.len() <= IDONTWANT_IDS_PER_PEER_MAX);
            assert_eq!(p.dont_want_order.len(), p.dont_want.len());
            let queued: usize = p
                .control_queue
                .iter()
                .chain(&p.gossip_queue)
                .map(Item::encoded_len)
                .sum();
            assert_eq!(queued, p.queued_bytes, "queued bytes are accounted exactly");
            assert!(p
                .stats
                .topics
                .keys()
                .all(|t| self.subscriptions.contains(t)));
        }
    }

    /// Whether every mesh is within [0, D_hi]: true right after a heartbeat
    /// (between heartbeats, GRAFTs from outbound peers may exceed D_hi).
    pub fn meshes_within_high_bound(&self) -> bool {
        self.mesh
            .values()
            .all(|mesh| mesh.len() <= self.config.mesh_n_high)
    }

    /// The next event, oldest first: messages to validate and penalties from
    /// [`Gossip::handle_rpc`], and what the heartbeat, slow peers and
    /// rejected messages led to.
    pub fn poll_event(&mut self) -> Option<GossipEvent> {
        self.events.pop_front()
    }

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    fn push_event(&mut self, event: GossipEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Fisher–Yates with the seeded RNG.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = (self.rng.next_u64() % (index as u64 + 1)) as usize;
            items.swap(index, other);
        }
    }
}

#[cfg(test)]
mod tests;
