//! The gossip router: topics, the mesh, lazy gossip, IDONTWANT, validation
//! and scores, as one pure state machine.
//!
//! # Design
//! [`Gossip`] follows the core's run-loop contract. Sort its methods so:
//! - `on_*`, [`Gossip::heartbeat`], [`Gossip::report_validation`]: something
//!   happened (a peer came or went, an RPC arrived, time passed, the
//!   application judged a message);
//! - [`Gossip::subscribe`], [`Gossip::unsubscribe`], [`Gossip::publish`],
//!   [`Gossip::set_application_score`]: the node asks for something;
//! - `poll_*`: after every call above, drain [`Gossip::poll_send`] (one
//!   encoded RPC of kind 32 per call, for one peer) and [`Gossip::poll_event`]
//!   until `None`, then call [`Gossip::heartbeat`] at [`Gossip::next_deadline`].
//!
//! ```text
//!  on_rpc ─► graylisted? drop ─► decode ─► subscriptions, control, messages
//!   message ─► subscribed? ─► seen? (duplicate: credit/penalise) ─► IDONTWANT to mesh (> 1 KiB)
//!           ─► pending validation ─► GossipEvent::Message
//!  report_validation ─► Accept: mcache, forward to mesh (not to senders nor IDONTWANT-ers)
//!                    ─► Reject: invalid-message penalty for every sender; Ignore: nothing
//!  heartbeat (700 ms) ─► expire (seen 2 min, promises 3 s, IDONTWANT, backoffs, fanout 60 s)
//!                     ─► decay scores ─► mesh: prune negative, fill to D below D_lo,
//!                        trim to D above D_hi (best D_score kept, D_out outbound),
//!                        opportunistic grafting ─► IHAVE over the last 3 of 6 mcache windows
//! ```
//!
//! Every timer is checked at the heartbeat, so [`Gossip::next_deadline`] is
//! only ever the next heartbeat. Randomness (mesh selection, gossip targets,
//! id shuffles) comes from a `ChaCha20Rng` seeded at construction; every map
//! is a `BTreeMap`, so the same inputs give the same RPCs, bit for bit.
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
//! [`GRAYLIST_THRESHOLD`] are not read at all. Scores survive a reconnect for
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
//! evicted), [`VALIDATION_PENDING_MAX`] and [`VALIDATION_PENDING_BYTES_MAX`]
//! pending (oldest dropped), [`PROMISES_MAX`] promises (new ones not made),
//! [`BACKOFFS_MAX`] backoffs (one per our topic and connected peer: they die
//! with the connection, so none is ever evicted),
//! [`RETAINED_SCORES_MAX`] retained scores (earliest expiring evicted),
//! [`EVENTS_MAX`] events (oldest dropped).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::IpAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::score::decayed;
use super::score::{
    expected_mesh_deliveries, PeerStats, TopicStats, GOSSIP_THRESHOLD, GRAYLIST_THRESHOLD,
    MESH_MESSAGE_DELIVERIES_DECAY, MESH_MESSAGE_DELIVERIES_WINDOW, OPPORTUNISTIC_GRAFT_THRESHOLD,
    PUBLISH_THRESHOLD,
};
use super::wire::{
    Control, GossipDecodeError, MessageId, Rpc, Subscription, Topic, WireMessage,
    CONTROLS_PER_RPC_MAX, CONTROL_IDS_PER_RPC_MAX, GOSSIP_MESSAGE_BYTES_MAX, MESSAGES_PER_RPC_MAX,
    RPC_EMPTY_BYTES, SUBSCRIPTIONS_PER_RPC_MAX,
};
use crate::identity::PeerId;
use crate::limits::{MESSAGE_BYTES_MAX, PEERS_MAX};
use crate::time::{Duration, Instant};

// --- Mesh ----------------------------------------------------------------------

/// D: the mesh size the heartbeat aims for (Ethereum consensus specs).
pub const MESH_N: usize = 8;
/// D_lo: below this the heartbeat grafts peers up to D.
pub const MESH_N_LOW: usize = 6;
/// D_hi: above this the heartbeat prunes peers down to D.
pub const MESH_N_HIGH: usize = 12;
/// D_score: when trimming a mesh, this many best-scoring peers are kept first.
pub const MESH_N_SCORE: usize = 4;
/// D_out: outbound peers a mesh keeps (when trimming) and tops up to (at
/// D_lo or above), so inbound Sybils cannot fill it alone.
pub const MESH_OUTBOUND_MIN: usize = 2;
/// D_lazy: the least number of non-mesh peers we send IHAVE to per topic.
pub const GOSSIP_LAZY: usize = 6;
/// Share of eligible non-mesh peers, in percent, we send IHAVE to when that is more than D_lazy.
pub const GOSSIP_FACTOR_PERCENT: usize = 25;
/// Time between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(700);
/// A fanout (topic we publish to without subscribing) unused this long is forgotten.
pub const FANOUT_TTL: Duration = Duration::from_secs(60);
/// Backoff we ask for in our PRUNEs and respect after them.
pub const PRUNE_BACKOFF: Duration = Duration::from_secs(60);
/// Largest backoff we accept from a peer's PRUNE: longer ones are cut to this,
/// so a peer cannot make us keep state (or compute a time) far in the future.
/// Ten times what honest peers ask ([`PRUNE_BACKOFF`]).
pub const PRUNE_BACKOFF_SECS_MAX: u32 = 600;
/// Heartbeats between opportunistic grafting rounds (42 s).
pub const OPPORTUNISTIC_GRAFT_HEARTBEATS: u64 = 60;
/// Peers grafted per opportunistic grafting round per topic.
pub const OPPORTUNISTIC_GRAFT_PEERS: usize = 2;

// --- Caches --------------------------------------------------------------------

/// A message id is remembered this long after it was first seen (duplicates dropped).
pub const SEEN_TTL: Duration = Duration::from_secs(120);
/// Seen ids remembered at most (100 messages/s for 2 min is 12 000); oldest evicted.
pub const SEEN_MESSAGES_MAX: usize = 65_536;
/// Heartbeat windows a message stays in the message cache (IWANT answered from it).
pub const MCACHE_WINDOWS: usize = 6;
/// Most recent windows whose ids are announced in IHAVE.
pub const GOSSIP_WINDOWS: usize = 3;
/// Messages in the message cache at most; oldest evicted.
pub const MCACHE_MESSAGES_MAX: usize = 8_192;
/// Compressed bytes in the message cache at most; oldest evicted.
pub const MCACHE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Times one peer may ask for one cached message (libp2p's `gossip_retransimission`).
pub const GOSSIP_RETRANSMISSIONS_MAX: u8 = 3;
/// Ids in one IHAVE we send (the rest are left out, chosen at random).
pub const IHAVE_IDS_PER_MESSAGE_MAX: usize = 1_000;
/// Ids we announce to one peer per heartbeat across topics.
pub const IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX: usize = 5_000;
/// IHAVEs from one peer we read per heartbeat (libp2p's `max_ihave_messages`); more are ignored.
pub const IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX: usize = 10;
/// Ids we ask one peer for per heartbeat (libp2p's `max_ihave_length`).
pub const IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX: usize = 5_000;
/// IWANT ids from one peer we look at per heartbeat; more are ignored. An
/// honest peer asks at most for what we announced to it, and we announce at
/// most [`IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX`] per heartbeat.
pub const IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX: usize =
    IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX;
/// IDONTWANT ids from one peer we take per heartbeat; more are ignored. An
/// honest peer sends one per large message it receives.
pub const IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX: usize = 1_024;
/// How far over a per-heartbeat allowance (IHAVE messages and ids, IWANT
/// ids, IDONTWANT ids) a peer may go before it is penalised: its heartbeats
/// and ours are not aligned, so two of its rounds can fall into one of ours.
pub const CONTROL_ALLOWANCE_SLACK_FACTOR: usize = 2;
/// An id we asked for with IWANT must arrive within this, or the promise is broken.
pub const IWANT_FOLLOWUP_TIME: Duration = Duration::from_secs(3);
/// Outstanding IWANT promises at most; past it we ask without tracking.
pub const PROMISES_MAX: usize = 8_192;

// --- IDONTWANT -----------------------------------------------------------------

/// Messages longer than this (uncompressed) trigger IDONTWANT to our mesh (v1.2: 1 KiB).
pub const IDONTWANT_BYTES_MIN: usize = 1_024;
/// Ids one peer may ask us not to send, remembered at most; oldest evicted.
pub const IDONTWANT_IDS_PER_PEER_MAX: usize = 4_096;
/// An IDONTWANT is remembered this long: longer than a message stays in the
/// message cache, so it covers IWANT answers too.
pub const IDONTWANT_TTL: Duration = Duration::from_secs(10);

// --- Validation, peers, queues -------------------------------------------------

/// Messages awaiting the application's verdict; past it the oldest is dropped.
pub const VALIDATION_PENDING_MAX: usize = 1_024;
/// Compressed bytes of messages awaiting a verdict; past it the oldest is dropped.
pub const VALIDATION_PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A message without a verdict this long after it arrived is dropped.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Topics we subscribe to at most.
pub const TOPICS_MAX: usize = 64;
/// Topics one peer may announce; more subscriptions are ignored.
pub const PEER_TOPICS_MAX: usize = 64;
/// Peers the router tracks (the node's peer cap).
pub const GOSSIP_PEERS_MAX: usize = PEERS_MAX;
/// Bytes of RPC items queued for one peer: one largest message and room to spare.
pub const SEND_QUEUE_BYTES_PER_PEER_MAX: usize = 16 * 1024 * 1024;
/// RPC items queued for one peer.
pub const SEND_QUEUE_ITEMS_PER_PEER_MAX: usize = 4_096;
/// Gossip items (messages, IHAVEs) a peer's full queue may drop before the
/// peer is judged too slow and disconnected. The count restarts whenever its
/// queue drains completely, so a peer that lags in bursts keeps its place.
pub const SLOW_PEER_GOSSIP_DROPS_MAX: u32 = 256;
/// A disconnected peer's non-neutral score is remembered this long, so it
/// cannot shed penalties by reconnecting.
pub const SCORE_RETENTION: Duration = Duration::from_secs(10 * 60);
/// Disconnected peers whose scores are retained; the earliest to expire is evicted.
pub const RETAINED_SCORES_MAX: usize = 256;
/// Backoffs remembered: one per (our topic, connected peer) at most, since a
/// backoff exists only for our topics and dies with its peer's connection.
/// Nothing is ever evicted, so a flood of PRUNEs from throwaway identities
/// cannot push out the backoff an honest connected peer asked for.
pub const BACKOFFS_MAX: usize = TOPICS_MAX * GOSSIP_PEERS_MAX;
/// Events not yet taken by [`Gossip::poll_event`]; oldest dropped.
pub const EVENTS_MAX: usize = 4_096;
/// Peers remembered per message as having sent it (for delivery credit and penalties).
pub const DELIVERERS_PER_MESSAGE_MAX: usize = 16;

const _: () = assert!(MESH_N_LOW <= MESH_N && MESH_N <= MESH_N_HIGH);
const _: () = assert!(MESH_N_SCORE <= MESH_N && MESH_OUTBOUND_MIN <= MESH_N_LOW);
const _: () = assert!(MESH_OUTBOUND_MIN <= MESH_N / 2);
const _: () = assert!(MESH_N_SCORE + MESH_OUTBOUND_MIN <= MESH_N);
const _: () = assert!(GOSSIP_WINDOWS <= MCACHE_WINDOWS);
const _: () = assert!(IHAVE_IDS_PER_MESSAGE_MAX <= CONTROL_IDS_PER_RPC_MAX);
const _: () = assert!(IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX <= CONTROL_IDS_PER_RPC_MAX);
const _: () = assert!(SEND_QUEUE_BYTES_PER_PEER_MAX >= MESSAGE_BYTES_MAX);
const _: () =
    assert!(IDONTWANT_TTL.as_micros() > HEARTBEAT_INTERVAL.as_micros() * MCACHE_WINDOWS as u128);
const _: () = assert!(DELIVERERS_PER_MESSAGE_MAX > MESH_N_HIGH);
const _: () = assert!(PEER_TOPICS_MAX >= SUBSCRIPTIONS_PER_RPC_MAX);
const _: () = assert!(PRUNE_BACKOFF.as_secs() <= PRUNE_BACKOFF_SECS_MAX as u64);

/// What a [`Gossip`] enforces. [`Config::default`] is the table above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// D.
    pub mesh_n: usize,
    /// D_lo.
    pub mesh_n_low: usize,
    /// D_hi.
    pub mesh_n_high: usize,
    /// D_lazy.
    pub gossip_lazy: usize,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Fanout lifetime after the last publish.
    pub fanout_ttl: Duration,
    /// Backoff after a PRUNE we send.
    pub prune_backoff: Duration,
    /// Seen-cache lifetime.
    pub seen_ttl: Duration,
    /// Our own messages go to every peer subscribed to the topic and above
    /// the publish threshold, not only the mesh (v1.1 flood publishing).
    pub flood_publish: bool,
    /// IP addresses exempt from the colocation penalty (loopback always is,
    /// so local multi-process tests are not penalised).
    pub ip_colocation_exempt: BTreeSet<IpAddr>,
    /// Floodsub instead of a mesh: every message goes to every peer
    /// subscribed to its topic; no GRAFT, PRUNE, IHAVE, IWANT or IDONTWANT
    /// is sent. For the simulator's baseline only: it is what the mesh is
    /// measured against, never a setting for a real node.
    pub floodsub: bool,
    /// Fault (hostile simulator nodes only): join meshes like everyone else
    /// but never forward others' messages nor answer IWANT.
    pub fault_withhold: bool,
    /// Fault (hostile simulator nodes only): keep no mesh of our own;
    /// instead, at the first heartbeat after a peer announced its topics,
    /// GRAFT it on each of them (crowding its mesh, so it may trim honest
    /// peers), and at the next heartbeat PRUNE it on each with the longest
    /// backoff the wire can say (`u32::MAX` seconds). Once per connection,
    /// so it never GRAFTs inside a backoff and is never penalised: a PRUNE
    /// flood is made of many throwaway identities, each doing this once.
    pub fault_prune_flood: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mesh_n: MESH_N,
            mesh_n_low: MESH_N_LOW,
            mesh_n_high: MESH_N_HIGH,
            gossip_lazy: GOSSIP_LAZY,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            fanout_ttl: FANOUT_TTL,
            prune_backoff: PRUNE_BACKOFF,
            seen_ttl: SEEN_TTL,
            flood_publish: true,
            ip_colocation_exempt: BTreeSet::new(),
            floodsub: false,
            fault_withhold: false,
            fault_prune_flood: false,
        }
    }
}

/// How much a peer's connection can take now (see [`Gossip::poll_send_ready`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SendReadiness {
    /// Its transport keeps up: control and gossip.
    Everything,
    /// Its transport is backed up: control only (small, and what keeps the
    /// mesh and the IDONTWANTs working); gossip waits in the queue.
    ControlOnly,
}

/// The application's verdict on a message from [`GossipEvent::Message`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Validation {
    /// Valid: cache and forward it; credit its senders.
    Accept,
    /// Not useful (e.g. too old) but not malicious: drop it, nobody is penalised.
    Ignore,
    /// Invalid: drop it and penalise every peer that sent it.
    Reject,
}

/// Why a peer's gossip score was lowered, reported so the node can log and count it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Misbehaviour {
    /// The RPC could not be decoded; the node should treat this as a protocol violation.
    Malformed(GossipDecodeError),
    /// A message it sent was rejected by the application.
    InvalidMessage(MessageId),
    /// It GRAFTed during a backoff.
    GraftDuringBackoff(Topic),
    /// It did not deliver a message it announced with IHAVE within [`IWANT_FOLLOWUP_TIME`].
    BrokenPromise,
    /// It announced more than [`PEER_TOPICS_MAX`] topics.
    TooManyTopics,
    /// It sent more control than its per-heartbeat allowance (IHAVE
    /// messages or ids, IWANT or IDONTWANT ids, beyond
    /// [`CONTROL_ALLOWANCE_SLACK_FACTOR`] times the cap), or asked with
    /// IWANT for ids we never announced to it. Reported once per heartbeat.
    ControlFlood,
}

/// Something the node must know or act on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum GossipEvent {
    /// A new message: validate it and call [`Gossip::report_validation`].
    Message {
        /// Its id.
        id: MessageId,
        /// Its topic (one we are subscribed to).
        topic: Topic,
        /// The uncompressed payload.
        payload: Vec<u8>,
        /// The peer that delivered it first.
        from: PeerId,
    },
    /// A peer misbehaved (its gossip score already reflects it).
    Penalty {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Misbehaviour,
    },
    /// An RPC from a peer below [`GRAYLIST_THRESHOLD`] was dropped unread.
    Graylisted {
        /// The peer.
        peer: PeerId,
    },
    /// The peer's send queue overflowed: it does not read fast enough.
    /// Gossip was dropped first; the node should disconnect it.
    SlowPeer {
        /// The peer.
        peer: PeerId,
    },
}

/// Why [`Gossip::publish`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PublishError {
    /// The payload, or its RPC, exceeds [`GOSSIP_MESSAGE_BYTES_MAX`] or the logical message limit.
    TooLarge,
    /// The same payload was published or received on the topic within [`SEEN_TTL`].
    Duplicate,
    /// No peer to send it to.
    NoPeers,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge => write!(f, "message too large"),
            PublishError::Duplicate => write!(f, "message already seen"),
            PublishError::NoPeers => write!(f, "no peers to publish to"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why [`Gossip::subscribe`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubscribeError {
    /// Already subscribed to [`TOPICS_MAX`] topics.
    TooManyTopics,
}

/// What the router counted, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// RPCs decoded.
    pub rpcs_received: u64,
    /// RPCs that did not decode.
    pub rpcs_malformed: u64,
    /// RPCs dropped because their sender was graylisted.
    pub rpcs_graylisted: u64,
    /// New messages handed to the application.
    pub messages_received: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// Messages on topics we are not subscribed to.
    pub messages_unsubscribed: u64,
    /// Messages dropped while awaiting validation (cap or timeout).
    pub validations_dropped: u64,
    /// Gossip items (messages, IHAVE) dropped from full send queues.
    pub gossip_dropped: u64,
    /// Control items dropped from full send queues.
    pub control_dropped: u64,
    /// Messages we did not send because the peer sent IDONTWANT.
    pub idontwant_suppressed: u64,
    /// IWANT ids not answered because the retransmission cap was reached.
    pub iwant_over_cap: u64,
    /// IWANT ids not answered because we never announced them to the asker.
    pub iwant_unannounced: u64,
    /// Times a peer was penalised for control over its allowance.
    pub control_floods: u64,
    /// Promises broken.
    pub promises_broken: u64,
    /// PRUNEs received on our topics.
    pub prunes_received: u64,
    /// GRAFTs refused because they came inside a backoff (each a penalty).
    pub grafts_refused_in_backoff: u64,
}

/// One item of a peer's send queue.
#[derive(Clone, Debug)]
enum Item {
    Subscription(Subscription),
    Control(Control),
    /// A message and its id (so an IDONTWANT can cancel it while queued).
    Message(MessageId, WireMessage),
    /// A message the peer asked for with IWANT: sent even if the peer said
    /// IDONTWANT before, since its IWANT is the later word (it dropped the
    /// copy it had unjudged, e.g. while its verifier was busy). Cancelling
    /// it would break the promise it holds on us and cost us its score.
    Answer(WireMessage),
}

impl Item {
    fn encoded_len(&self) -> usize {
        match self {
            Item::Subscription(subscription) => 1 + subscription.topic.encoded_len(),
            Item::Control(control) => control.encoded_len(),
            Item::Message(_, message) | Item::Answer(message) => message.encoded_len(),
        }
    }

    fn is_gossip(&self) -> bool {
        matches!(
            self,
            Item::Message(..) | Item::Answer(_) | Item::Control(Control::IHave { .. })
        )
    }
}

#[derive(Debug)]
struct Peer {
    outbound: bool,
    ip: IpAddr,
    topics: BTreeSet<Topic>,
    stats: PeerStats,
    control_queue: VecDeque<Item>,
    gossip_queue: VecDeque<Item>,
    queued_bytes: usize,
    /// Gossip dropped from a full queue since it last drained.
    gossip_drops: u32,
    slow_reported: bool,
    dont_want: BTreeMap<MessageId, Instant>,
    dont_want_order: VecDeque<(Instant, MessageId)>,
    ihave_received: usize,
    iwant_asked: usize,
    ihave_ids_sent: usize,
    /// Ids in the IHAVEs it sent this heartbeat.
    ihave_ids_received: usize,
    /// Ids in the IWANTs it sent this heartbeat.
    iwant_ids_received: usize,
    /// Ids in the IDONTWANTs it sent this heartbeat.
    idontwant_ids_received: usize,
    /// Whether it already paid for control flooding this heartbeat.
    control_flood_reported: bool,
    /// `fault_prune_flood` only: whether we already GRAFTed it, and PRUNEd it.
    prune_flood_grafted: bool,
    prune_flooded: bool,
    /// GRAFTs from it we refused because they came inside a backoff.
    grafts_refused_in_backoff: u32,
}

impl Peer {
    fn queued_items(&self) -> usize {
        self.control_queue.len() + self.gossip_queue.len()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SeenState {
    Pending,
    Accepted,
    Rejected,
    Ignored,
    Own,
    /// The application could not judge it (no capacity): the next copy, or
    /// an IHAVE for it, is treated as new.
    Abandoned,
}

#[derive(Debug)]
struct Seen {
    first_seen: Instant,
    deliverers: Vec<PeerId>,
    state: SeenState,
}

#[derive(Debug)]
struct Pending {
    message: WireMessage,
    received: Instant,
}

#[derive(Debug)]
struct CacheEntry {
    message: WireMessage,
    iwant_counts: BTreeMap<PeerId, u8>,
}

/// The message cache: windows of ids, newest first, and the messages.
#[derive(Debug, Default)]
struct MessageCache {
    entries: BTreeMap<MessageId, CacheEntry>,
    windows: VecDeque<Vec<MessageId>>,
    bytes: usize,
}

impl MessageCache {
    fn new() -> MessageCache {
        let mut windows = VecDeque::with_capacity(MCACHE_WINDOWS + 1);
        windows.push_front(Vec::new());
        MessageCache {
            entries: BTreeMap::new(),
            windows,
            bytes: 0,
        }
    }

    fn put(&mut self, id: MessageId, message: WireMessage) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.bytes += message.frame.len();
        self.entries.insert(
            id,
            CacheEntry {
                message,
                iwant_counts: BTreeMap::new(),
            },
        );
        self.windows
            .front_mut()
            .expect("there is always a current window")
            .push(id);
        while self.entries.len() > MCACHE_MESSAGES_MAX || self.bytes > MCACHE_BYTES_MAX {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        for window in self.windows.iter_mut().rev() {
            if !window.is_empty() {
                let id = window.remove(0);
                self.forget(&id);
                return;
            }
        }
    }

    fn forget(&mut self, id: &MessageId) {
        if let Some(entry) = self.entries.remove(id) {
            self.bytes -= entry.message.frame.len();
        }
    }

    fn shift(&mut self) {
        self.windows.push_front(Vec::new());
        while self.windows.len() > MCACHE_WINDOWS {
            let oldest = self.windows.pop_back().expect("more than zero windows");
            for id in oldest {
                self.forget(&id);
            }
        }
    }

    fn gossip_ids(&self, topic: &Topic) -> Vec<MessageId> {
        self.windows
            .iter()
            .take(GOSSIP_WINDOWS)
            .flatten()
            .filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|entry| entry.message.topic == *topic)
            })
            .copied()
            .collect()
    }
}

#[derive(Debug)]
struct Fanout {
    peers: BTreeSet<PeerId>,
    last_published: Instant,
}

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

    // --- Getters ------------------------------------------------------------------

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

    /// When [`Gossip::heartbeat`] must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_heartbeat)
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

    // --- Peers --------------------------------------------------------------------

    /// `peer` is connected (`outbound`: we dialled it) from `ip`. We announce
    /// our subscriptions to it. A peer past [`GOSSIP_PEERS_MAX`], or one
    /// already connected, is ignored.
    pub fn on_peer_connected(&mut self, now: Instant, peer: PeerId, outbound: bool, ip: IpAddr) {
        self.advance(now);
        if self.peers.contains_key(&peer) || self.peers.len() >= GOSSIP_PEERS_MAX {
            return;
        }
        let mut stats = self
            .retained
            .remove(&peer)
            .map(|(_, stats)| stats)
            .unwrap_or_default();
        stats
            .topics
            .retain(|topic, _| self.subscriptions.contains(topic));
        for topic in &self.subscriptions {
            let entry = stats.topics.entry(topic.clone()).or_default();
            entry.mesh_since = None;
        }
        *self.peers_per_ip.entry(ip).or_insert(0) += 1;
        self.peers.insert(
            peer,
            Peer {
                outbound,
                ip,
                topics: BTreeSet::new(),
                stats,
                control_queue: VecDeque::new(),
                gossip_queue: VecDeque::new(),
                queued_bytes: 0,
                gossip_drops: 0,
                slow_reported: false,
                dont_want: BTreeMap::new(),
                dont_want_order: VecDeque::new(),
                ihave_received: 0,
                iwant_asked: 0,
                ihave_ids_sent: 0,
                ihave_ids_received: 0,
                iwant_ids_received: 0,
                idontwant_ids_received: 0,
                control_flood_reported: false,
                prune_flood_grafted: false,
                prune_flooded: false,
                grafts_refused_in_backoff: 0,
            },
        );
        let topics: Vec<Topic> = self.subscriptions.iter().cloned().collect();
        for topic in topics {
            self.enqueue(
                peer,
                Item::Subscription(Subscription {
                    subscribe: true,
                    topic,
                }),
            );
        }
    }

    /// `peer` is gone: it leaves every mesh and fanout; its score is retained
    /// for [`SCORE_RETENTION`] if it carries penalties.
    pub fn on_peer_disconnected(&mut self, now: Instant, peer: &PeerId) {
        self.advance(now);
        let Some(mut removed) = self.peers.remove(peer) else {
            return;
        };
        if let Some(count) = self.peers_per_ip.get_mut(&removed.ip) {
            *count -= 1;
            if *count == 0 {
                self.peers_per_ip.remove(&removed.ip);
            }
        }
        for (topic, mesh) in &mut self.mesh {
            if mesh.remove(peer) {
                let expected = expected_mesh_deliveries(
                    self.topic_deliveries.get(topic).copied().unwrap_or(0.0),
                );
                removed.stats.prune(now, topic, expected);
            }
        }
        for fanout in self.fanout.values_mut() {
            fanout.peers.remove(peer);
        }
        // Its backoffs go with it: the table holds connected peers only, so
        // identities that PRUNE and leave cannot fill it.
        for topic in &self.subscriptions {
            self.backoff.remove(&(topic.clone(), *peer));
        }
        // Its promises stay: one it leaves without keeping is broken at its
        // deadline and charged to its identity.
        if self.send_cursor == Some(*peer) {
            self.send_cursor = None;
        }
        if !removed.stats.is_neutral() {
            if self.retained.len() >= RETAINED_SCORES_MAX {
                let earliest = self
                    .retained
                    .iter()
                    .min_by_key(|(id, (until, _))| (*until, **id))
                    .map(|(id, _)| *id)
                    .expect("the map is full, so not empty");
                self.retained.remove(&earliest);
            }
            self.retained
                .insert(*peer, (now + SCORE_RETENTION, removed.stats));
        }
    }

    /// Sets `peer`'s application-specific score (P5): the peer manager's
    /// score, in points.
    pub fn set_application_score(&mut self, peer: &PeerId, points: f64) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.stats.application_score = if points.is_finite() { points } else { 0.0 };
        }
    }

    // --- Topics and publishing ----------------------------------------------------

    /// Joins `topic`: announces it to every peer and builds its mesh (from
    /// the fanout first, if we published to it). Returns whether it is new.
    pub fn subscribe(&mut self, now: Instant, topic: Topic) -> Result<bool, SubscribeError> {
        self.advance(now);
        if self.subscriptions.contains(&topic) {
            return Ok(false);
        }
        if self.subscriptions.len() >= TOPICS_MAX {
            return Err(SubscribeError::TooManyTopics);
        }
        self.subscriptions.insert(topic.clone());
        self.topic_deliveries.insert(topic.clone(), 0.0);
        for p in self.peers.values_mut() {
            p.stats.topics.insert(topic.clone(), TopicStats::default());
        }
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in &peers {
            self.enqueue(
                *peer,
                Item::Subscription(Subscription {
                    subscribe: true,
                    topic: topic.clone(),
                }),
            );
        }
        self.mesh.insert(topic.clone(), BTreeSet::new());
        if self.config.floodsub {
            return Ok(true);
        }
        let scores = self.scores(now);
        let mut chosen: Vec<PeerId> = Vec::new();
        if let Some(fanout) = self.fanout.remove(&topic) {
            let mut from_fanout: Vec<PeerId> = fanout
                .peers
                .into_iter()
                .filter(|peer| self.graftable(now, &topic, peer, &scores))
                .collect();
            self.shuffle(&mut from_fanout);
            from_fanout.truncate(self.config.mesh_n);
            chosen = from_fanout;
        }
        if chosen.len() < self.config.mesh_n {
            let mut candidates: Vec<PeerId> = self
                .peers_in_topic(&topic)
                .into_iter()
                .filter(|peer| !chosen.contains(peer) && self.graftable(now, &topic, peer, &scores))
                .collect();
            self.shuffle(&mut candidates);
            candidates.truncate(self.config.mesh_n - chosen.len());
            chosen.extend(candidates);
        }
        for peer in chosen {
            self.graft(now, &topic, peer);
        }
        Ok(true)
    }

    /// Leaves `topic`: PRUNEs its mesh (with backoff) and announces it.
    /// Returns whether we were subscribed.
    pub fn unsubscribe(&mut self, now: Instant, topic: &Topic) -> bool {
        self.advance(now);
        if !self.subscriptions.remove(topic) {
            return false;
        }
        for peer in self.mesh_peers(topic) {
            self.prune(now, topic, peer);
        }
        self.mesh.remove(topic);
        self.topic_deliveries.remove(topic);
        self.backoff
            .retain(|(backoff_topic, _), _| backoff_topic != topic);
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stats.topics.remove(topic);
            }
            self.enqueue(
                peer,
                Item::Subscription(Subscription {
                    subscribe: false,
                    topic: topic.clone(),
                }),
            );
        }
        true
    }

    /// Publishes `payload` on `topic`. With flood publishing (the default) it
    /// goes to every peer subscribed to the topic scoring at least
    /// [`PUBLISH_THRESHOLD`]; otherwise to the mesh, or to the fanout (D
    /// peers, kept for [`FANOUT_TTL`] after the last publish) when we are not
    /// subscribed.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: &[u8],
    ) -> Result<MessageId, PublishError> {
        self.advance(now);
        if payload.len() > GOSSIP_MESSAGE_BYTES_MAX {
            return Err(PublishError::TooLarge);
        }
        let message = WireMessage::new(topic.clone(), payload);
        if RPC_EMPTY_BYTES + message.encoded_len() > MESSAGE_BYTES_MAX {
            return Err(PublishError::TooLarge);
        }
        let id = MessageId::compute(&topic, payload);
        if self.seen.contains_key(&id) {
            return Err(PublishError::Duplicate);
        }
        let scores = self.scores(now);
        let publishable = |peer: &PeerId| scores.get(peer).is_some_and(|s| *s >= PUBLISH_THRESHOLD);
        let mut recipients: BTreeSet<PeerId> = BTreeSet::new();
        if self.config.floodsub {
            recipients.extend(self.peers_in_topic(&topic));
        } else if self.config.flood_publish {
            recipients.extend(self.peers_in_topic(&topic).into_iter().filter(publishable));
        }
        if self.config.floodsub {
            // No mesh and no fanout: the flood above is the whole story.
        } else if let Some(mesh) = self.mesh.get(&topic) {
            recipients.extend(mesh.iter().copied());
        } else {
            if !self.fanout.contains_key(&topic) {
                let mut candidates: Vec<PeerId> = self
                    .peers_in_topic(&topic)
                    .into_iter()
                    .filter(publishable)
                    .collect();
                self.shuffle(&mut candidates);
                candidates.truncate(self.config.mesh_n);
                if !candidates.is_empty() {
                    self.fanout.insert(
                        topic.clone(),
                        Fanout {
                            peers: candidates.into_iter().collect(),
                            last_published: now,
                        },
                    );
                }
            }
            if let Some(fanout) = self.fanout.get_mut(&topic) {
                fanout.last_published = now;
                recipients.extend(fanout.peers.iter().copied());
            }
        }
        if recipients.is_empty() {
            return Err(PublishError::NoPeers);
        }
        self.remember_seen(
            id,
            Seen {
                first_seen: now,
                deliverers: Vec::new(),
                state: SeenState::Own,
            },
        );
        self.mcache.put(id, message.clone());
        for peer in recipients {
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.dont_want.contains_key(&id))
            {
                self.counters.idontwant_suppressed += 1;
                continue;
            }
            self.enqueue(peer, Item::Message(id, message.clone()));
        }
        Ok(id)
    }

    // --- Inbound ------------------------------------------------------------------

    /// Handles one RPC (a logical message of kind 32) from `peer`. Returns
    /// every event now pending: the new messages to validate, penalties, and
    /// any event an earlier call left for [`Gossip::poll_event`].
    pub fn on_rpc(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) -> Vec<GossipEvent> {
        self.advance(now);
        if let Some(p) = self.peers.get(&peer) {
            if self.score_of_peer(now, p) < GRAYLIST_THRESHOLD {
                self.counters.rpcs_graylisted += 1;
                self.push_event(GossipEvent::Graylisted { peer });
            } else {
                match Rpc::decode(bytes) {
                    Ok(rpc) => {
                        self.counters.rpcs_received += 1;
                        self.handle_rpc(now, peer, rpc);
                    }
                    Err(error) => {
                        self.counters.rpcs_malformed += 1;
                        self.push_event(GossipEvent::Penalty {
                            peer,
                            reason: Misbehaviour::Malformed(error),
                        });
                    }
                }
            }
        }
        self.events.drain(..).collect()
    }

    fn handle_rpc(&mut self, now: Instant, peer: PeerId, rpc: Rpc) {
        for subscription in rpc.subscriptions {
            self.on_subscription(now, peer, subscription);
        }
        for message in rpc.messages {
            self.on_message(now, peer, message);
        }
        // In the order first asked (then shuffled), with a set beside it so
        // that checking an id costs a lookup, not a scan.
        let mut wanted: Vec<MessageId> = Vec::new();
        let mut wanted_set: BTreeSet<MessageId> = BTreeSet::new();
        for control in rpc.control {
            match control {
                Control::Graft { topic } => self.on_graft(now, peer, topic),
                Control::Prune {
                    topic,
                    backoff_secs,
                } => self.on_prune(now, peer, topic, backoff_secs),
                Control::IHave { topic, ids } => {
                    self.on_ihave(now, peer, &topic, ids, &mut wanted, &mut wanted_set)
                }
                Control::IWant { ids } => self.on_iwant(now, peer, ids),
                Control::IDontWant { ids } => self.on_idontwant(now, peer, ids),
            }
        }
        if !wanted.is_empty() {
            self.shuffle(&mut wanted);
            for id in &wanted {
                if self.promises.len() < PROMISES_MAX {
                    self.promises.insert(*id, (peer, now + IWANT_FOLLOWUP_TIME));
                }
            }
            self.enqueue(peer, Item::Control(Control::IWant { ids: wanted }));
        }
    }

    fn on_subscription(&mut self, now: Instant, peer: PeerId, subscription: Subscription) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if subscription.subscribe {
            if p.topics.contains(&subscription.topic) {
                return;
            }
            if p.topics.len() >= PEER_TOPICS_MAX {
                self.push_event(GossipEvent::Penalty {
                    peer,
                    reason: Misbehaviour::TooManyTopics,
                });
                return;
            }
            p.topics.insert(subscription.topic);
        } else {
            p.topics.remove(&subscription.topic);
            let topic = subscription.topic;
            let in_mesh = self
                .mesh
                .get_mut(&topic)
                .is_some_and(|mesh| mesh.remove(&peer));
            if in_mesh {
                let expected = self.expected(&topic);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.stats.prune(now, &topic, expected);
                }
            }
            if let Some(fanout) = self.fanout.get_mut(&topic) {
                fanout.peers.remove(&peer);
            }
        }
    }

    fn on_message(&mut self, now: Instant, peer: PeerId, message: WireMessage) {
        if !self.subscriptions.contains(&message.topic) {
            self.counters.messages_unsubscribed += 1;
            return;
        }
        let payload = match message.payload() {
            Ok(payload) => payload,
            Err(error) => {
                self.counters.rpcs_malformed += 1;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.stats.invalid_delivery(&message.topic);
                }
                self.push_event(GossipEvent::Penalty {
                    peer,
                    reason: Misbehaviour::Malformed(error),
                });
                return;
            }
        };
        let id = MessageId::compute(&message.topic, &payload);
        self.promises.remove(&id);
        let mut retried = false;
        if let Some(seen) = self.seen.get_mut(&id) {
            if seen.state == SeenState::Abandoned {
                // Judged by nobody: this copy gets the chance the first lacked.
                seen.state = SeenState::Pending;
                seen.deliverers = vec![peer];
                retried = true;
            }
        }
        if let Some(seen) = self.seen.get_mut(&id).filter(|_| !retried) {
            self.counters.duplicates += 1;
            let state = seen.state;
            match state {
                SeenState::Pending => {
                    if seen.deliverers.len() < DELIVERERS_PER_MESSAGE_MAX
                        && !seen.deliverers.contains(&peer)
                    {
                        seen.deliverers.push(peer);
                    }
                }
                SeenState::Accepted => {
                    let in_window = now.saturating_duration_since(seen.first_seen)
                        <= MESH_MESSAGE_DELIVERIES_WINDOW;
                    if in_window {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.stats.mesh_delivery(&message.topic);
                        }
                    }
                }
                SeenState::Rejected => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.stats.invalid_delivery(&message.topic);
                    }
                }
                SeenState::Ignored | SeenState::Own | SeenState::Abandoned => {}
            }
            return;
        }
        if self.pending.contains_key(&id) {
            // Only possible if the seen cache overflowed while it was pending.
            self.counters.duplicates += 1;
            return;
        }
        self.counters.messages_received += 1;
        if !retried {
            self.remember_seen(
                id,
                Seen {
                    first_seen: now,
                    deliverers: vec![peer],
                    state: SeenState::Pending,
                },
            );
        }
        if payload.len() > IDONTWANT_BYTES_MIN && !self.config.floodsub {
            for mesh_peer in self.mesh_peers(&message.topic) {
                if mesh_peer != peer {
                    self.enqueue(
                        mesh_peer,
                        Item::Control(Control::IDontWant { ids: vec![id] }),
                    );
                }
            }
        }
        self.pending_bytes += message.frame.len();
        self.pending.insert(
            id,
            Pending {
                message: message.clone(),
                received: now,
            },
        );
        self.pending_order.push_back(id);
        while self.pending.len() > VALIDATION_PENDING_MAX
            || self.pending_bytes > VALIDATION_PENDING_BYTES_MAX
        {
            let Some(oldest) = self.pending_order.pop_front() else {
                break;
            };
            self.drop_pending(&oldest);
        }
        self.push_event(GossipEvent::Message {
            id,
            topic: message.topic,
            payload,
            from: peer,
        });
    }

    fn drop_pending(&mut self, id: &MessageId) {
        if let Some(pending) = self.pending.remove(id) {
            self.pending_bytes -= pending.message.frame.len();
            self.counters.validations_dropped += 1;
            if let Some(seen) = self.seen.get_mut(id) {
                seen.state = SeenState::Ignored;
            }
        }
    }

    fn on_graft(&mut self, now: Instant, peer: PeerId, topic: Topic) {
        // No state for topics we are not in: that is the GRAFT-topic DoS.
        // A floodsub router keeps no mesh at all.
        if !self.subscriptions.contains(&topic) || self.config.floodsub {
            return;
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if self
            .mesh
            .get(&topic)
            .is_some_and(|mesh| mesh.contains(&peer))
        {
            return;
        }
        if self.in_backoff(now, &topic, &peer) {
            self.counters.grafts_refused_in_backoff += 1;
            if let Some(p) = self.peers.get_mut(&peer) {
                p.grafts_refused_in_backoff = p.grafts_refused_in_backoff.saturating_add(1);
                p.stats.behaviour_penalty += 1.0;
            }
            self.push_event(GossipEvent::Penalty {
                peer,
                reason: Misbehaviour::GraftDuringBackoff(topic.clone()),
            });
            self.send_prune(now, &topic, peer);
            return;
        }
        let score = self.score_of_peer(now, p);
        let outbound = p.outbound;
        let subscribed = p.topics.contains(&topic);
        let full = self.mesh.get(&topic).map_or(0, BTreeSet::len) >= self.config.mesh_n_high;
        if score < 0.0 || !subscribed || (full && !outbound) {
            self.send_prune(now, &topic, peer);
            return;
        }
        self.mesh.entry(topic.clone()).or_default().insert(peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.graft(now, &topic);
        }
    }

    fn on_prune(&mut self, now: Instant, peer: PeerId, topic: Topic, backoff_secs: u32) {
        if !self.subscriptions.contains(&topic) {
            return;
        }
        self.counters.prunes_received += 1;
        let in_mesh = self
            .mesh
            .get_mut(&topic)
            .is_some_and(|mesh| mesh.remove(&peer));
        if in_mesh {
            let expected = self.expected(&topic);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stats.prune(now, &topic, expected);
            }
        }
        let backoff = Duration::from_secs(u64::from(backoff_secs.min(PRUNE_BACKOFF_SECS_MAX)));
        // At least our own backoff: a peer that asks for none still waits the usual time.
        let backoff = backoff.max(self.config.prune_backoff);
        self.set_backoff(topic, peer, now + backoff);
    }

    fn on_ihave(
        &mut self,
        now: Instant,
        peer: PeerId,
        topic: &Topic,
        ids: Vec<MessageId>,
        wanted: &mut Vec<MessageId>,
        wanted_set: &mut BTreeSet<MessageId>,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.ihave_received = p.ihave_received.saturating_add(1);
        p.ihave_ids_received = p.ihave_ids_received.saturating_add(ids.len());
        let flood = p.ihave_received
            > CONTROL_ALLOWANCE_SLACK_FACTOR * IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX
            || p.ihave_ids_received
                > CONTROL_ALLOWANCE_SLACK_FACTOR * IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX;
        let over = p.ihave_received > IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX;
        if flood {
            self.control_flood(peer);
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if over
            || self.score_of_peer(now, p) < GOSSIP_THRESHOLD
            || !self.subscriptions.contains(topic)
        {
            return;
        }
        let p = self.peers.get_mut(&peer).expect("checked above");
        for id in ids {
            if p.iwant_asked >= IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX {
                break;
            }
            let judged = self
                .seen
                .get(&id)
                .is_some_and(|seen| seen.state != SeenState::Abandoned);
            if judged || self.promises.contains_key(&id) || !wanted_set.insert(id) {
                continue;
            }
            p.iwant_asked += 1;
            wanted.push(id);
        }
    }

    fn on_iwant(&mut self, now: Instant, peer: PeerId, ids: Vec<MessageId>) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let before = p.iwant_ids_received;
        p.iwant_ids_received = before.saturating_add(ids.len());
        let flood = p.iwant_ids_received
            > CONTROL_ALLOWANCE_SLACK_FACTOR * IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX;
        let room = IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX.saturating_sub(before);
        if flood {
            self.control_flood(peer);
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if self.config.fault_withhold {
            return;
        }
        if self.score_of_peer(now, p) < GOSSIP_THRESHOLD {
            return;
        }
        let mut unannounced = false;
        for id in ids.into_iter().take(room) {
            let Some(entry) = self.mcache.entries.get_mut(&id) else {
                continue;
            };
            // Only what we announced to this peer (its entry appears when we
            // send the IHAVE): an IWANT is the answer to an IHAVE, not a
            // way to pull any cached message at will.
            let Some(count) = entry.iwant_counts.get_mut(&peer) else {
                self.counters.iwant_unannounced += 1;
                unannounced = true;
                continue;
            };
            if *count >= GOSSIP_RETRANSMISSIONS_MAX {
                self.counters.iwant_over_cap += 1;
                continue;
            }
            *count += 1;
            let message = entry.message.clone();
            self.enqueue(peer, Item::Answer(message));
        }
        if unannounced {
            self.control_flood(peer);
        }
    }

    fn on_idontwant(&mut self, now: Instant, peer: PeerId, ids: Vec<MessageId>) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let before = p.idontwant_ids_received;
        p.idontwant_ids_received = before.saturating_add(ids.len());
        let flood = p.idontwant_ids_received
            > CONTROL_ALLOWANCE_SLACK_FACTOR * IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX;
        let room = IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX.saturating_sub(before);
        if flood {
            self.control_flood(peer);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let until = now + IDONTWANT_TTL;
        // Messages still queued for it (held back by a busy connection) are
        // not cancelled here, which would scan the queue per IDONTWANT: they
        // are skipped when they reach the front (`poll_send_ready`).
        for id in ids.into_iter().take(room) {
            // A repeated id keeps its first expiry, so the map and the order stay in step.
            if let std::collections::btree_map::Entry::Vacant(entry) = p.dont_want.entry(id) {
                entry.insert(until);
                p.dont_want_order.push_back((until, id));
            }
            while p.dont_want.len() > IDONTWANT_IDS_PER_PEER_MAX {
                let Some((_, oldest)) = p.dont_want_order.pop_front() else {
                    break;
                };
                p.dont_want.remove(&oldest);
            }
        }
    }

    /// The application's verdict on message `id`. Accept caches it and
    /// forwards it to the mesh; Reject penalises every peer that sent it.
    /// Returns false if the message is not pending (unknown, already judged,
    /// or dropped for lack of room or time).
    pub fn report_validation(&mut self, now: Instant, id: MessageId, verdict: Validation) -> bool {
        self.advance(now);
        let Some(pending) = self.pending.remove(&id) else {
            return false;
        };
        self.pending_bytes -= pending.message.frame.len();
        if self.pending_order.len() > 2 * VALIDATION_PENDING_MAX {
            // Judged ids linger in the order queue until they reach its front;
            // sweep them so the queue stays within twice the cap.
            let pending = &self.pending;
            self.pending_order.retain(|id| pending.contains_key(id));
        }
        let topic = pending.message.topic.clone();
        // The seen entry outlives the pending one unless the seen cache
        // overflowed; then the senders are unknown and nobody is credited.
        let deliverers = match self.seen.get_mut(&id) {
            Some(seen) => {
                seen.state = match verdict {
                    Validation::Accept => SeenState::Accepted,
                    Validation::Ignore => SeenState::Ignored,
                    Validation::Reject => SeenState::Rejected,
                };
                seen.deliverers.clone()
            }
            None => Vec::new(),
        };
        match verdict {
            Validation::Accept => {
                if let Some(count) = self.topic_deliveries.get_mut(&topic) {
                    *count += 1.0;
                }
                for (index, deliverer) in deliverers.iter().enumerate() {
                    if let Some(p) = self.peers.get_mut(deliverer) {
                        if index == 0 {
                            p.stats.first_delivery(&topic);
                        }
                        p.stats.mesh_delivery(&topic);
                    }
                }
                self.mcache.put(id, pending.message.clone());
                let forward_to = if self.config.fault_withhold {
                    Vec::new()
                } else if self.config.floodsub {
                    self.peers_in_topic(&topic)
                } else {
                    self.mesh_peers(&topic)
                };
                for peer in forward_to {
                    if deliverers.contains(&peer) {
                        continue;
                    }
                    if self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.dont_want.contains_key(&id))
                    {
                        self.counters.idontwant_suppressed += 1;
                        continue;
                    }
                    self.enqueue(peer, Item::Message(id, pending.message.clone()));
                }
            }
            Validation::Reject => {
                // A sender that left before the verdict pays all the same:
                // its retained score here, its identity's with the node.
                for deliverer in deliverers {
                    if let Some(p) = self.peers.get_mut(&deliverer) {
                        p.stats.invalid_delivery(&topic);
                    } else if let Some((_, stats)) = self.retained.get_mut(&deliverer) {
                        stats.invalid_delivery(&topic);
                    }
                    self.push_event(GossipEvent::Penalty {
                        peer: deliverer,
                        reason: Misbehaviour::InvalidMessage(id),
                    });
                }
            }
            Validation::Ignore => {}
        }
        true
    }

    /// The application cannot judge message `id` now (its verification
    /// capacity is taken): it is dropped unjudged, nobody is penalised or
    /// credited, and it is not left marked as seen, so the next copy (or an
    /// IHAVE naming it) is handled as new. Returns false if it was not pending.
    pub fn abandon_validation(&mut self, now: Instant, id: MessageId) -> bool {
        if !self.report_validation(now, id, Validation::Ignore) {
            return false;
        }
        if let Some(seen) = self.seen.get_mut(&id) {
            seen.state = SeenState::Abandoned;
            seen.deliverers.clear();
        }
        true
    }

    // --- Heartbeat ----------------------------------------------------------------

    /// Mesh maintenance, gossip emission and every expiry. A call before
    /// [`Gossip::next_deadline`] is a no-op.
    pub fn heartbeat(&mut self, now: Instant) {
        self.advance(now);
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + self.config.heartbeat_interval;
        self.heartbeats += 1;
        self.expire(now);
        for p in self.peers.values_mut() {
            p.stats.decay();
            p.ihave_received = 0;
            p.iwant_asked = 0;
            p.ihave_ids_sent = 0;
            p.ihave_ids_received = 0;
            p.iwant_ids_received = 0;
            p.idontwant_ids_received = 0;
            p.control_flood_reported = false;
        }
        for count in self.topic_deliveries.values_mut() {
            *count = decayed(*count, MESH_MESSAGE_DELIVERIES_DECAY);
        }
        if self.config.floodsub {
            // No mesh to keep and nothing to gossip about.
            self.maintain_fanout(now);
            self.mcache.shift();
            return;
        }
        let topics: Vec<Topic> = self.subscriptions.iter().cloned().collect();
        if self.config.fault_prune_flood {
            self.prune_flood();
        } else {
            for topic in &topics {
                self.maintain_mesh(now, topic);
            }
        }
        self.maintain_fanout(now);
        for topic in &topics {
            let mesh = self.mesh.get(topic).cloned().unwrap_or_default();
            self.emit_gossip(now, topic, &mesh);
        }
        let fanout_topics: Vec<(Topic, BTreeSet<PeerId>)> = self
            .fanout
            .iter()
            .map(|(topic, fanout)| (topic.clone(), fanout.peers.clone()))
            .collect();
        for (topic, peers) in fanout_topics {
            self.emit_gossip(now, &topic, &peers);
        }
        self.mcache.shift();
    }

    fn expire(&mut self, now: Instant) {
        let seen_ttl = self.config.seen_ttl;
        while let Some(oldest) = self.seen_order.front() {
            let expired = self
                .seen
                .get(oldest)
                .is_none_or(|seen| now.saturating_duration_since(seen.first_seen) >= seen_ttl);
            if !expired {
                break;
            }
            let oldest = self.seen_order.pop_front().expect("front exists");
            self.seen.remove(&oldest);
        }
        while let Some(oldest) = self.pending_order.front().copied() {
            match self.pending.get(&oldest) {
                None => {
                    self.pending_order.pop_front();
                }
                Some(pending)
                    if now.saturating_duration_since(pending.received) >= VALIDATION_TIMEOUT =>
                {
                    self.pending_order.pop_front();
                    self.drop_pending(&oldest);
                }
                Some(_) => break,
            }
        }
        let broken: Vec<(MessageId, PeerId)> = self
            .promises
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, (peer, _))| (*id, *peer))
            .collect();
        for (id, peer) in broken {
            self.promises.remove(&id);
            self.counters.promises_broken += 1;
            // A peer that left before delivering broke its promise all the same.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stats.behaviour_penalty += 1.0;
            } else if let Some((_, stats)) = self.retained.get_mut(&peer) {
                stats.behaviour_penalty += 1.0;
            }
            self.push_event(GossipEvent::Penalty {
                peer,
                reason: Misbehaviour::BrokenPromise,
            });
        }
        for p in self.peers.values_mut() {
            while let Some(&(until, id)) = p.dont_want_order.front() {
                if until > now {
                    break;
                }
                p.dont_want_order.pop_front();
                p.dont_want.remove(&id);
            }
        }
        self.backoff.retain(|_, until| *until > now);
        self.retained.retain(|_, (until, _)| *until > now);
        let fanout_ttl = self.config.fanout_ttl;
        self.fanout
            .retain(|_, fanout| fanout.last_published + fanout_ttl > now);
    }

    fn maintain_mesh(&mut self, now: Instant, topic: &Topic) {
        let scores = self.scores(now);
        let mesh: Vec<PeerId> = self.mesh_peers(topic);
        for peer in &mesh {
            if scores.get(peer).is_none_or(|score| *score < 0.0) {
                self.prune(now, topic, *peer);
            }
        }
        let d = self.config.mesh_n;
        let size = self.mesh.get(topic).map_or(0, BTreeSet::len);
        if size < self.config.mesh_n_low {
            let candidates = self.graft_candidates(now, topic, &scores, |_| true);
            for peer in candidates.into_iter().take(d - size) {
                self.graft(now, topic, peer);
            }
        }
        let mesh = self.mesh_peers(topic);
        if mesh.len() > self.config.mesh_n_high {
            let mut ranked = mesh.clone();
            self.shuffle(&mut ranked);
            ranked.sort_by(|a, b| scores[b].total_cmp(&scores[a]));
            let keep_by_score = MESH_N_SCORE.min(d);
            let mut keep: Vec<PeerId> = ranked[..keep_by_score].to_vec();
            let mut rest: Vec<PeerId> = ranked[keep_by_score..].to_vec();
            self.shuffle(&mut rest);
            let outbound = |peer: &PeerId| self.peers.get(peer).is_some_and(|p| p.outbound);
            // D_out outbound peers first (the shuffled rest keeps them random),
            // then the rest in random order up to D.
            let outbound_kept = keep.iter().filter(|peer| outbound(peer)).count();
            let needed = MESH_OUTBOUND_MIN.saturating_sub(outbound_kept);
            let (outbound_rest, inbound_rest): (Vec<PeerId>, Vec<PeerId>) =
                rest.into_iter().partition(|peer| outbound(peer));
            let needed = needed.min(outbound_rest.len());
            keep.extend_from_slice(&outbound_rest[..needed]);
            let mut rest: Vec<PeerId> = outbound_rest[needed..].to_vec();
            rest.extend(inbound_rest);
            self.shuffle(&mut rest);
            let room = d.saturating_sub(keep.len());
            keep.extend(rest.into_iter().take(room));
            for peer in mesh {
                if !keep.contains(&peer) {
                    self.prune(now, topic, peer);
                }
            }
        }
        let mesh = self.mesh_peers(topic);
        if mesh.len() >= self.config.mesh_n_low {
            let outbound_count = mesh
                .iter()
                .filter(|peer| self.peers.get(peer).is_some_and(|p| p.outbound))
                .count();
            if outbound_count < MESH_OUTBOUND_MIN {
                let candidates = self.graft_candidates(now, topic, &scores, |p| p.outbound);
                for peer in candidates
                    .into_iter()
                    .take(MESH_OUTBOUND_MIN - outbound_count)
                {
                    self.graft(now, topic, peer);
                }
            }
        }
        let mesh = self.mesh_peers(topic);
        if self.heartbeats % OPPORTUNISTIC_GRAFT_HEARTBEATS == 0 && mesh.len() > 1 {
            let mut mesh_scores: Vec<f64> = mesh.iter().map(|peer| scores[peer]).collect();
            mesh_scores.sort_by(f64::total_cmp);
            let median = mesh_scores[mesh_scores.len() / 2];
            if median < OPPORTUNISTIC_GRAFT_THRESHOLD {
                let candidates = self.graft_candidates(now, topic, &scores, |_| true);
                let better: Vec<PeerId> = candidates
                    .into_iter()
                    .filter(|peer| scores[peer] > median)
                    .take(OPPORTUNISTIC_GRAFT_PEERS)
                    .collect();
                for peer in better {
                    self.graft(now, topic, peer);
                }
            }
        }
    }

    /// `fault_prune_flood`: peers GRAFTed at an earlier heartbeat are now
    /// PRUNEd on each of their topics with the longest backoff; peers that
    /// announced topics and were not GRAFTed yet are GRAFTed on each.
    /// Nothing else of the mesh is kept.
    fn prune_flood(&mut self) {
        let mut grafts: Vec<(PeerId, Vec<Topic>)> = Vec::new();
        let mut prunes: Vec<(PeerId, Vec<Topic>)> = Vec::new();
        for (id, p) in &mut self.peers {
            if p.prune_flooded || p.topics.is_empty() {
                continue;
            }
            let topics = p.topics.iter().cloned().collect();
            if p.prune_flood_grafted {
                p.prune_flooded = true;
                prunes.push((*id, topics));
            } else {
                p.prune_flood_grafted = true;
                grafts.push((*id, topics));
            }
        }
        for (peer, topics) in prunes {
            for topic in topics {
                if let Some(mesh) = self.mesh.get_mut(&topic) {
                    mesh.remove(&peer);
                }
                self.enqueue(
                    peer,
                    Item::Control(Control::Prune {
                        topic,
                        backoff_secs: u32::MAX,
                    }),
                );
            }
        }
        for (peer, topics) in grafts {
            for topic in topics {
                self.enqueue(peer, Item::Control(Control::Graft { topic }));
            }
        }
    }

    fn maintain_fanout(&mut self, now: Instant) {
        let scores = self.scores(now);
        let topics: Vec<Topic> = self.fanout.keys().cloned().collect();
        for topic in topics {
            let subscribed: BTreeSet<PeerId> = self.peers_in_topic(&topic).into_iter().collect();
            let fanout = self.fanout.get_mut(&topic).expect("listed above");
            fanout.peers.retain(|peer| {
                subscribed.contains(peer)
                    && scores.get(peer).is_some_and(|s| *s >= PUBLISH_THRESHOLD)
            });
            let have = fanout.peers.len();
            if have < self.config.mesh_n {
                let mut candidates: Vec<PeerId> = subscribed
                    .iter()
                    .filter(|peer| {
                        !fanout.peers.contains(peer)
                            && scores.get(peer).is_some_and(|s| *s >= PUBLISH_THRESHOLD)
                    })
                    .copied()
                    .collect();
                self.shuffle(&mut candidates);
                let fanout = self.fanout.get_mut(&topic).expect("listed above");
                fanout
                    .peers
                    .extend(candidates.into_iter().take(self.config.mesh_n - have));
            }
        }
    }

    fn emit_gossip(&mut self, now: Instant, topic: &Topic, exclude: &BTreeSet<PeerId>) {
        let ids = self.mcache.gossip_ids(topic);
        if ids.is_empty() {
            return;
        }
        let scores = self.scores(now);
        let mut eligible: Vec<PeerId> = self
            .peers_in_topic(topic)
            .into_iter()
            .filter(|peer| {
                !exclude.contains(peer) && scores.get(peer).is_some_and(|s| *s >= GOSSIP_THRESHOLD)
            })
            .collect();
        let target = self
            .config
            .gossip_lazy
            .max(eligible.len() * GOSSIP_FACTOR_PERCENT / 100);
        self.shuffle(&mut eligible);
        eligible.truncate(target);
        for peer in eligible {
            let room = self.peers.get(&peer).map_or(0, |p| {
                IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX.saturating_sub(p.ihave_ids_sent)
            });
            let count = room.min(IHAVE_IDS_PER_MESSAGE_MAX).min(ids.len());
            if count == 0 {
                continue;
            }
            let mut chosen = ids.clone();
            if chosen.len() > count {
                self.shuffle(&mut chosen);
                chosen.truncate(count);
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.ihave_ids_sent += count;
            }
            // Announced to this peer: now (and only now) it may ask for them.
            for id in &chosen {
                if let Some(entry) = self.mcache.entries.get_mut(id) {
                    entry.iwant_counts.entry(peer).or_insert(0);
                }
            }
            self.enqueue(
                peer,
                Item::Control(Control::IHave {
                    topic: topic.clone(),
                    ids: chosen,
                }),
            );
        }
    }

    // --- Outbound -----------------------------------------------------------------

    /// The next RPC to send: `(peer, encoded logical message of kind 32)`.
    /// Peers take turns; one RPC carries as many queued items (control
    /// first) as fit the caps and the logical message limit.
    pub fn poll_send(&mut self) -> Option<(PeerId, Vec<u8>)> {
        self.poll_send_ready(|_| SendReadiness::Everything)
    }

    /// [`Gossip::poll_send`] with backpressure: `readiness` says, per peer,
    /// whether its connection can take everything or only control (its
    /// transport is backed up). Held-back gossip stays queued, where an
    /// IDONTWANT can still cancel it and where a full queue drops gossip
    /// before control (and, past [`SLOW_PEER_GOSSIP_DROPS_MAX`], reports the
    /// peer as [`GossipEvent::SlowPeer`]).
    pub fn poll_send_ready(
        &mut self,
        readiness: impl Fn(&PeerId) -> SendReadiness,
    ) -> Option<(PeerId, Vec<u8>)> {
        // Each round that sends nothing (all it took was cancelled by
        // IDONTWANT) removed at least one item, so this ends.
        loop {
            if let Some(sent) = self.poll_send_round(&readiness)? {
                return Some(sent);
            }
        }
    }

    /// One round of [`Gossip::poll_send_ready`]: `None` if no peer has
    /// anything to send, `Some(None)` if what was taken was all cancelled.
    fn poll_send_round(
        &mut self,
        readiness: &impl Fn(&PeerId) -> SendReadiness,
    ) -> Option<Option<(PeerId, Vec<u8>)>> {
        let sendable = |id: &PeerId, p: &Peer| match readiness(id) {
            SendReadiness::Everything => p.queued_items() > 0,
            SendReadiness::ControlOnly => !p.control_queue.is_empty(),
        };
        let peer = {
            let after = self
                .send_cursor
                .and_then(|cursor| {
                    self.peers
                        .range((
                            std::ops::Bound::Excluded(cursor),
                            std::ops::Bound::Unbounded,
                        ))
                        .find(|(id, p)| sendable(id, p))
                })
                .map(|(id, _)| *id);
            after.or_else(|| {
                self.peers
                    .iter()
                    .find(|(id, p)| sendable(id, p))
                    .map(|(id, _)| *id)
            })?
        };
        let control_only = readiness(&peer) == SendReadiness::ControlOnly;
        self.send_cursor = Some(peer);
        let p = self.peers.get_mut(&peer).expect("found above");
        let mut rpc = Rpc::default();
        let mut bytes = RPC_EMPTY_BYTES;
        let mut ids = 0usize;
        let queues = if control_only {
            [Some(&mut p.control_queue), None]
        } else {
            [Some(&mut p.control_queue), Some(&mut p.gossip_queue)]
        };
        for queue in queues.into_iter().flatten() {
            while let Some(item) = queue.front() {
                let size = item.encoded_len();
                let item_ids = match item {
                    Item::Control(control) => control.ids().len(),
                    _ => 0,
                };
                let fits = bytes + size <= MESSAGE_BYTES_MAX
                    && ids + item_ids <= CONTROL_IDS_PER_RPC_MAX
                    && match item {
                        Item::Subscription(_) => {
                            rpc.subscriptions.len() < SUBSCRIPTIONS_PER_RPC_MAX
                        }
                        Item::Control(_) => rpc.control.len() < CONTROLS_PER_RPC_MAX,
                        Item::Message(..) | Item::Answer(_) => {
                            rpc.messages.len() < MESSAGES_PER_RPC_MAX
                        }
                    };
                if !fits {
                    break;
                }
                let item = queue.pop_front().expect("front exists");
                p.queued_bytes -= size;
                if let Item::Message(id, _) = &item {
                    if p.dont_want.contains_key(id) {
                        // It said it has this one since we queued it.
                        self.counters.idontwant_suppressed += 1;
                        continue;
                    }
                }
                bytes += size;
                ids += item_ids;
                match item {
                    Item::Subscription(subscription) => rpc.subscriptions.push(subscription),
                    Item::Control(control) => rpc.control.push(control),
                    Item::Message(_, message) | Item::Answer(message) => rpc.messages.push(message),
                }
            }
        }
        if p.queued_items() == 0 {
            p.slow_reported = false;
            p.gossip_drops = 0;
        }
        if rpc.is_empty() {
            return Some(None);
        }
        Some(Some((peer, rpc.encode())))
    }

    /// The next event produced outside [`Gossip::on_rpc`] (penalties at the
    /// heartbeat, slow peers, rejected messages).
    pub fn poll_event(&mut self) -> Option<GossipEvent> {
        self.events.pop_front()
    }

    // --- Helpers ------------------------------------------------------------------

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    /// `peer` sent control over its allowance: a behaviour penalty and one
    /// event, at most once per heartbeat (the excess itself was ignored).
    fn control_flood(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.control_flood_reported {
            return;
        }
        p.control_flood_reported = true;
        p.stats.behaviour_penalty += 1.0;
        self.counters.control_floods += 1;
        self.push_event(GossipEvent::Penalty {
            peer,
            reason: Misbehaviour::ControlFlood,
        });
    }

    fn push_event(&mut self, event: GossipEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn enqueue(&mut self, peer: PeerId, item: Item) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let size = item.encoded_len();
        debug_assert!(RPC_EMPTY_BYTES + size <= MESSAGE_BYTES_MAX);
        // Too slow: control had to be dropped, or gossip kept overflowing.
        let mut too_slow = false;
        let mut accepted = true;
        while p.queued_bytes + size > SEND_QUEUE_BYTES_PER_PEER_MAX
            || p.queued_items() >= SEND_QUEUE_ITEMS_PER_PEER_MAX
        {
            if item.is_gossip() {
                self.counters.gossip_dropped += 1;
                p.gossip_drops = p.gossip_drops.saturating_add(1);
                accepted = false;
                break;
            }
            if let Some(old) = p.gossip_queue.pop_front() {
                p.queued_bytes -= old.encoded_len();
                self.counters.gossip_dropped += 1;
                p.gossip_drops = p.gossip_drops.saturating_add(1);
            } else {
                self.counters.control_dropped += 1;
                too_slow = true;
                accepted = false;
                break;
            }
        }
        too_slow |= p.gossip_drops > SLOW_PEER_GOSSIP_DROPS_MAX;
        if accepted {
            p.queued_bytes += size;
            if item.is_gossip() {
                p.gossip_queue.push_back(item);
            } else {
                p.control_queue.push_back(item);
            }
        }
        if too_slow && !p.slow_reported {
            p.slow_reported = true;
            self.push_event(GossipEvent::SlowPeer { peer });
        }
    }

    fn remember_seen(&mut self, id: MessageId, seen: Seen) {
        self.seen.insert(id, seen);
        self.seen_order.push_back(id);
        while self.seen.len() > SEEN_MESSAGES_MAX {
            let Some(oldest) = self.seen_order.pop_front() else {
                break;
            };
            self.seen.remove(&oldest);
        }
    }

    fn set_backoff(&mut self, topic: Topic, peer: PeerId, until: Instant) {
        // Only for connected peers and our topics: within `BACKOFFS_MAX`
        // by construction, so no entry is ever evicted for room.
        if !self.peers.contains_key(&peer) || !self.subscriptions.contains(&topic) {
            return;
        }
        let key = (topic, peer);
        let until = self.backoff.get(&key).map_or(until, |old| until.max(*old));
        self.backoff.insert(key, until);
        debug_assert!(self.backoff.len() <= BACKOFFS_MAX);
    }

    fn graft(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        self.mesh.entry(topic.clone()).or_default().insert(peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.graft(now, topic);
        }
        self.enqueue(
            peer,
            Item::Control(Control::Graft {
                topic: topic.clone(),
            }),
        );
    }

    fn prune(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        if let Some(mesh) = self.mesh.get_mut(topic) {
            mesh.remove(&peer);
        }
        let expected = self.expected(topic);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.prune(now, topic, expected);
        }
        self.send_prune(now, topic, peer);
    }

    fn send_prune(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        let backoff = self.config.prune_backoff;
        self.set_backoff(topic.clone(), peer, now + backoff);
        let backoff_secs = u32::try_from(backoff.as_secs()).unwrap_or(u32::MAX);
        self.enqueue(
            peer,
            Item::Control(Control::Prune {
                topic: topic.clone(),
                backoff_secs,
            }),
        );
    }

    fn expected(&self, topic: &Topic) -> f64 {
        expected_mesh_deliveries(self.topic_deliveries.get(topic).copied().unwrap_or(0.0))
    }

    fn score_of_peer(&self, now: Instant, p: &Peer) -> f64 {
        let on_ip = if p.ip.is_loopback() || self.config.ip_colocation_exempt.contains(&p.ip) {
            0
        } else {
            self.peers_per_ip.get(&p.ip).copied().unwrap_or(0)
        };
        p.stats.score(now, on_ip, |topic| self.expected(topic))
    }

    fn scores(&self, now: Instant) -> BTreeMap<PeerId, f64> {
        self.peers
            .iter()
            .map(|(id, p)| (*id, self.score_of_peer(now, p)))
            .collect()
    }

    fn peers_in_topic(&self, topic: &Topic) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.topics.contains(topic))
            .map(|(id, _)| *id)
            .collect()
    }

    fn graftable(
        &self,
        now: Instant,
        topic: &Topic,
        peer: &PeerId,
        scores: &BTreeMap<PeerId, f64>,
    ) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.topics.contains(topic))
            && !self.mesh.get(topic).is_some_and(|mesh| mesh.contains(peer))
            && !self.in_backoff(now, topic, peer)
            && scores.get(peer).is_some_and(|score| *score >= 0.0)
    }

    /// Peers that may join `topic`'s mesh and pass `filter`, in random order.
    fn graft_candidates(
        &mut self,
        now: Instant,
        topic: &Topic,
        scores: &BTreeMap<PeerId, f64>,
        filter: impl Fn(&Peer) -> bool,
    ) -> Vec<PeerId> {
        let mut candidates: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| filter(p) && self.graftable(now, topic, id, scores))
            .map(|(id, _)| *id)
            .collect();
        self.shuffle(&mut candidates);
        candidates
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
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn topic() -> Topic {
        Topic::new("/meshsync/test/1").unwrap()
    }

    fn at(millis: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(millis)
    }

    fn rpc_bytes(rpc: Rpc) -> Vec<u8> {
        rpc.encode()
    }

    fn subscribe_rpc(topic: &Topic) -> Vec<u8> {
        rpc_bytes(Rpc {
            subscriptions: vec![Subscription {
                subscribe: true,
                topic: topic.clone(),
            }],
            ..Rpc::default()
        })
    }

    fn control_rpc(control: Control) -> Vec<u8> {
        rpc_bytes(Rpc {
            control: vec![control],
            ..Rpc::default()
        })
    }

    fn message_rpc(topic: &Topic, payload: &[u8]) -> Vec<u8> {
        rpc_bytes(Rpc {
            messages: vec![WireMessage::new(topic.clone(), payload)],
            ..Rpc::default()
        })
    }

    fn drain(gossip: &mut Gossip) -> Vec<(PeerId, Rpc)> {
        let mut sent = Vec::new();
        while let Some((peer, bytes)) = gossip.poll_send() {
            assert!(bytes.len() <= MESSAGE_BYTES_MAX);
            sent.push((peer, Rpc::decode(&bytes).expect("we send valid RPCs")));
        }
        sent
    }

    fn controls_to(sent: &[(PeerId, Rpc)], to: PeerId) -> Vec<Control> {
        sent.iter()
            .filter(|(p, _)| *p == to)
            .flat_map(|(_, rpc)| rpc.control.clone())
            .collect()
    }

    fn messages_to(sent: &[(PeerId, Rpc)], to: PeerId) -> usize {
        sent.iter()
            .filter(|(p, _)| *p == to)
            .map(|(_, rpc)| rpc.messages.len())
            .sum()
    }

    /// A router subscribed to `topic()` with `count` peers (1..=count) that
    /// are subscribed too; odd peers are outbound.
    fn router_with_peers(count: u8) -> Gossip {
        let mut gossip = Gossip::new(Config::default(), [7; 32]);
        gossip.subscribe(at(0), topic()).unwrap();
        for n in 1..=count {
            gossip.on_peer_connected(at(0), peer(n), n % 2 == 1, ip(n));
            gossip.on_rpc(at(0), peer(n), &subscribe_rpc(&topic()));
        }
        drain(&mut gossip);
        gossip
    }

    fn heartbeats(gossip: &mut Gossip, from_millis: u64, count: u64) -> u64 {
        let mut now = from_millis;
        for _ in 0..count {
            now += 700;
            gossip.heartbeat(at(now));
        }
        now
    }

    #[test]
    fn subscriptions_are_announced_and_recorded() {
        let mut gossip = Gossip::new(Config::default(), [1; 32]);
        gossip.subscribe(at(0), topic()).unwrap();
        assert_eq!(gossip.subscribe(at(0), topic()), Ok(false));
        gossip.on_peer_connected(at(0), peer(1), true, ip(1));
        let sent = drain(&mut gossip);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.subscriptions[0].topic, topic());
        gossip.on_rpc(at(0), peer(1), &subscribe_rpc(&topic()));
        assert_eq!(gossip.peer_topics(&peer(1)), vec![topic()]);
        // A peer announcing too many topics gets no state beyond the cap.
        for n in 0..PEER_TOPICS_MAX + 5 {
            let events = gossip.on_rpc(
                at(0),
                peer(1),
                &subscribe_rpc(&Topic::new(&format!("/t/{n}")).unwrap()),
            );
            if n + 1 >= PEER_TOPICS_MAX {
                assert!(matches!(
                    events[..],
                    [GossipEvent::Penalty {
                        reason: Misbehaviour::TooManyTopics,
                        ..
                    }]
                ));
            }
        }
        assert_eq!(gossip.peer_topics(&peer(1)).len(), PEER_TOPICS_MAX);
        assert!(gossip.unsubscribe(at(0), &topic()));
        assert!(!gossip.is_subscribed(&topic()));
    }

    #[test]
    fn mesh_stays_within_bounds_after_heartbeats() {
        let mut gossip = router_with_peers(30);
        let now = heartbeats(&mut gossip, 0, 1);
        assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
        // Twenty peers graft us: inbound ones are refused past D_hi (and
        // backed off); ten stay untouched to refill the mesh later.
        for n in 1..=20 {
            gossip.on_rpc(
                at(now),
                peer(n),
                &control_rpc(Control::Graft { topic: topic() }),
            );
        }
        assert!(gossip.mesh_peers(&topic()).len() > MESH_N_HIGH);
        let now = heartbeats(&mut gossip, now, 1);
        let mesh = gossip.mesh_peers(&topic());
        assert_eq!(mesh.len(), MESH_N);
        let outbound = mesh.iter().filter(|p| p.as_bytes()[0] % 2 == 1).count();
        assert!(outbound >= MESH_OUTBOUND_MIN);
        // Mesh peers leave: the heartbeat fills the mesh back up to D.
        for peer in mesh.iter().take(4) {
            gossip.on_rpc(
                at(now),
                *peer,
                &control_rpc(Control::Prune {
                    topic: topic(),
                    backoff_secs: 60,
                }),
            );
        }
        assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N - 4);
        let mut now = now;
        for _ in 0..20 {
            now = heartbeats(&mut gossip, now, 1);
            let size = gossip.mesh_peers(&topic()).len();
            assert!((MESH_N_LOW..=MESH_N_HIGH).contains(&size), "mesh of {size}");
        }
        drain(&mut gossip);
    }

    #[test]
    fn backoff_is_respected_on_both_sides() {
        let mut gossip = router_with_peers(10);
        let now = heartbeats(&mut gossip, 0, 1);
        let victim = gossip.mesh_peers(&topic())[0];
        // The peer prunes us: we must not graft it for the backoff.
        gossip.on_rpc(
            at(now),
            victim,
            &control_rpc(Control::Prune {
                topic: topic(),
                backoff_secs: 60,
            }),
        );
        assert!(gossip.in_backoff(at(now), &topic(), &victim));
        for n in 1..=10 {
            if peer(n) != victim && gossip.mesh_peers(&topic()).contains(&peer(n)) {
                gossip.on_rpc(
                    at(now),
                    peer(n),
                    &control_rpc(Control::Prune {
                        topic: topic(),
                        backoff_secs: 1,
                    }),
                );
            }
        }
        drain(&mut gossip);
        // Everyone pruned us; after our own minimum backoff the others return, the victim not sooner.
        let mut now = now;
        while now < 59_000 {
            now = heartbeats(&mut gossip, now, 1);
            let sent = drain(&mut gossip);
            assert!(!controls_to(&sent, victim)
                .iter()
                .any(|c| matches!(c, Control::Graft { .. })));
        }
        // It grafts us during the backoff: refused with a PRUNE, penalised.
        let events = gossip.on_rpc(
            at(now),
            victim,
            &control_rpc(Control::Graft { topic: topic() }),
        );
        assert!(events.iter().any(|e| matches!(
            e,
            GossipEvent::Penalty {
                reason: Misbehaviour::GraftDuringBackoff(_),
                ..
            }
        )));
        assert!(!gossip.mesh_peers(&topic()).contains(&victim));
        assert_eq!(gossip.grafts_refused_in_backoff(&victim), Some(1));
        assert_eq!(gossip.counters().grafts_refused_in_backoff, 1);
        let sent = drain(&mut gossip);
        assert!(controls_to(&sent, victim).iter().any(|c| matches!(
            c,
            Control::Prune {
                backoff_secs: 60,
                ..
            }
        )));
        // After the (refreshed) backoff it may join again.
        let now = heartbeats(&mut gossip, now, 100);
        assert!(!gossip.in_backoff(at(now), &topic(), &victim));
    }

    #[test]
    fn huge_backoffs_saturate_and_are_capped() {
        let mut gossip = router_with_peers(2);
        let late = Instant::from_micros(u64::MAX - 5);
        gossip.on_rpc(
            late,
            peer(1),
            &control_rpc(Control::Prune {
                topic: topic(),
                backoff_secs: u32::MAX,
            }),
        );
        assert!(gossip.in_backoff(late, &topic(), &peer(1)));
        let mut gossip = router_with_peers(2);
        gossip.on_rpc(
            at(0),
            peer(1),
            &control_rpc(Control::Prune {
                topic: topic(),
                backoff_secs: u32::MAX,
            }),
        );
        let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
        assert!(gossip.in_backoff(at(cap - 1), &topic(), &peer(1)));
        assert!(!gossip.in_backoff(at(cap), &topic(), &peer(1)));
        // PRUNE and GRAFT for topics we are not in create no state.
        gossip.on_rpc(
            at(0),
            peer(2),
            &control_rpc(Control::Graft {
                topic: Topic::new("/other").unwrap(),
            }),
        );
        gossip.on_rpc(
            at(0),
            peer(2),
            &control_rpc(Control::Prune {
                topic: Topic::new("/other").unwrap(),
                backoff_secs: 5,
            }),
        );
        assert_eq!(gossip.backoffs_len(), 1);
    }

    #[test]
    fn fanout_is_used_then_expires() {
        let mut gossip = Gossip::new(
            Config {
                flood_publish: false,
                ..Config::default()
            },
            [3; 32],
        );
        for n in 1..=12 {
            gossip.on_peer_connected(at(0), peer(n), true, ip(n));
            gossip.on_rpc(at(0), peer(n), &subscribe_rpc(&topic()));
        }
        assert_eq!(
            gossip.publish(at(0), Topic::new("/nobody").unwrap(), b"x"),
            Err(PublishError::NoPeers)
        );
        gossip.publish(at(0), topic(), b"hello").unwrap();
        assert_eq!(gossip.fanout_peers(&topic()).len(), MESH_N);
        let sent = drain(&mut gossip);
        assert_eq!(
            sent.iter()
                .map(|(_, rpc)| rpc.messages.len())
                .sum::<usize>(),
            MESH_N
        );
        assert_eq!(
            gossip.publish(at(10), topic(), b"hello"),
            Err(PublishError::Duplicate)
        );
        let now = heartbeats(&mut gossip, 0, 80);
        assert!(now < 60_000);
        assert_eq!(gossip.fanout_peers(&topic()).len(), MESH_N);
        heartbeats(&mut gossip, now, 10);
        assert!(gossip.fanout_peers(&topic()).is_empty());
        // Subscribing after publishing starts the mesh from the fanout.
        gossip.publish(at(70_000), topic(), b"again").unwrap();
        let fanout = gossip.fanout_peers(&topic());
        gossip.subscribe(at(70_000), topic()).unwrap();
        assert_eq!(gossip.mesh_peers(&topic()), fanout);
        assert!(gossip.fanout_peers(&topic()).is_empty());
    }

    #[test]
    fn flood_publish_reaches_every_subscriber() {
        let mut gossip = router_with_peers(20);
        gossip.publish(at(0), topic(), b"flood").unwrap();
        let sent = drain(&mut gossip);
        for n in 1..=20 {
            assert_eq!(messages_to(&sent, peer(n)), 1);
        }
        assert_eq!(
            gossip.publish(at(0), topic(), &vec![0; GOSSIP_MESSAGE_BYTES_MAX + 1]),
            Err(PublishError::TooLarge)
        );
    }

    #[test]
    fn an_iwant_is_answered_even_after_the_peer_said_idontwant() {
        // A peer that said IDONTWANT and then dropped its copy unjudged (its
        // verifier was busy) asks again when we announce the id: it holds a
        // promise on us, so we must deliver, not cancel by the old IDONTWANT.
        let mut gossip = router_with_peers(10);
        let id = gossip.publish(at(0), topic(), b"cached").unwrap();
        drain(&mut gossip);
        let now = heartbeats(&mut gossip, 0, 1);
        let sent = drain(&mut gossip);
        let asker = sent
            .iter()
            .find(|(_, rpc)| {
                rpc.control
                    .iter()
                    .any(|c| matches!(c, Control::IHave { ids, .. } if ids == &vec![id]))
            })
            .map(|(p, _)| *p)
            .expect("announced to a non-mesh peer");
        gossip.on_rpc(
            at(now),
            asker,
            &control_rpc(Control::IDontWant { ids: vec![id] }),
        );
        gossip.on_rpc(
            at(now),
            asker,
            &control_rpc(Control::IWant { ids: vec![id] }),
        );
        let sent = drain(&mut gossip);
        assert_eq!(messages_to(&sent, asker), 1, "the IWANT is the later word");
        gossip.assert_invariants();
    }

    #[test]
    fn ihave_iwant_flow_with_promises_and_retransmission_cap() {
        let mut gossip = router_with_peers(10);
        // A message we cache, announced by IHAVE to some non-mesh peers at the heartbeat.
        let id = gossip.publish(at(0), topic(), b"cached").unwrap();
        drain(&mut gossip);
        let now = heartbeats(&mut gossip, 0, 1);
        let sent = drain(&mut gossip);
        let announced: Vec<PeerId> = sent
            .iter()
            .filter(|(_, rpc)| {
                rpc.control
                    .iter()
                    .any(|c| matches!(c, Control::IHave { ids, .. } if ids == &vec![id]))
            })
            .map(|(p, _)| *p)
            .collect();
        assert!(!announced.is_empty());
        for p in &announced {
            assert!(!gossip.mesh_peers(&topic()).contains(p));
        }
        // IWANT answered from the cache, at most GOSSIP_RETRANSMISSIONS_MAX
        // times per peer, and only to a peer we announced it to.
        let asker = announced[0];
        for _ in 0..5 {
            gossip.on_rpc(
                at(now),
                asker,
                &control_rpc(Control::IWant { ids: vec![id] }),
            );
        }
        let sent = drain(&mut gossip);
        assert_eq!(
            messages_to(&sent, asker),
            usize::from(GOSSIP_RETRANSMISSIONS_MAX)
        );
        assert_eq!(gossip.counters().iwant_over_cap, 2);
        // An IHAVE for an unknown id: we ask with IWANT and hold a promise.
        let unknown = MessageId([9; 20]);
        while gossip.poll_event().is_some() {}
        gossip.on_rpc(
            at(now),
            peer(2),
            &control_rpc(Control::IHave {
                topic: topic(),
                ids: vec![unknown, id],
            }),
        );
        let sent = drain(&mut gossip);
        assert_eq!(
            controls_to(&sent, peer(2)),
            vec![Control::IWant { ids: vec![unknown] }]
        );
        assert_eq!(gossip.promises_len(), 1);
        // Not delivered within 3 s: a broken promise, penalised.
        let before = gossip.score(at(now), &peer(2)).unwrap();
        heartbeats(&mut gossip, now, 5);
        assert_eq!(gossip.promises_len(), 0);
        assert_eq!(gossip.counters().promises_broken, 1);
        let mut broken = false;
        while let Some(event) = gossip.poll_event() {
            broken |= matches!(
                event,
                GossipEvent::Penalty {
                    reason: Misbehaviour::BrokenPromise,
                    ..
                }
            );
        }
        assert!(broken);
        let stats = &gossip.peers[&peer(2)].stats;
        assert!(stats.behaviour_penalty > 0.9);
        assert!(gossip.score(at(now), &peer(2)).unwrap() <= before);
        // The message leaves the cache after 6 windows: IWANT gets nothing.
        heartbeats(&mut gossip, now + 5 * 700, 6);
        gossip.on_rpc(
            at(now + 20_000),
            asker,
            &control_rpc(Control::IWant { ids: vec![id] }),
        );
        assert_eq!(messages_to(&drain(&mut gossip), asker), 0);
    }

    #[test]
    fn fulfilled_promise_is_not_penalised() {
        let mut gossip = router_with_peers(4);
        let payload = b"promised".to_vec();
        let id = MessageId::compute(&topic(), &payload);
        gossip.on_rpc(
            at(0),
            peer(2),
            &control_rpc(Control::IHave {
                topic: topic(),
                ids: vec![id],
            }),
        );
        assert_eq!(gossip.promises_len(), 1);
        gossip.on_rpc(at(100), peer(2), &message_rpc(&topic(), &payload));
        assert_eq!(gossip.promises_len(), 0);
        heartbeats(&mut gossip, 100, 10);
        assert_eq!(gossip.counters().promises_broken, 0);
    }

    /// The peers penalised for `reason` in `events` and in what is left to poll.
    fn penalties_in(
        gossip: &mut Gossip,
        events: Vec<GossipEvent>,
        reason: &Misbehaviour,
    ) -> Vec<PeerId> {
        let polled: Vec<GossipEvent> = std::iter::from_fn(|| gossip.poll_event()).collect();
        events
            .into_iter()
            .chain(polled)
            .filter_map(|event| match event {
                GossipEvent::Penalty { peer, reason: r } if r == *reason => Some(peer),
                _ => None,
            })
            .collect()
    }

    fn penalties(gossip: &mut Gossip, reason: &Misbehaviour) -> Vec<PeerId> {
        penalties_in(gossip, Vec::new(), reason)
    }

    /// Hit and run: a peer sends junk and leaves before the verdict. The
    /// Reject is still reported against it, so its identity pays.
    #[test]
    fn a_reject_is_charged_to_a_sender_that_already_left() {
        let mut gossip = router_with_peers(3);
        let events = gossip.on_rpc(at(0), peer(1), &message_rpc(&topic(), b"junk"));
        let id = MessageId::compute(&topic(), b"junk");
        assert!(matches!(events[..], [GossipEvent::Message { .. }]));
        gossip.on_peer_disconnected(at(10), &peer(1));
        assert!(gossip.report_validation(at(20), id, Validation::Reject));
        assert_eq!(
            penalties(&mut gossip, &Misbehaviour::InvalidMessage(id)),
            vec![peer(1)]
        );
    }

    /// A peer that announces an id and leaves without delivering it broke
    /// its promise: charged at the deadline like a connected one.
    #[test]
    fn a_promise_broken_by_leaving_is_still_charged() {
        let mut gossip = router_with_peers(3);
        let unknown = MessageId([9; 20]);
        let ihave = Control::IHave {
            topic: topic(),
            ids: vec![unknown],
        };
        gossip.on_rpc(at(0), peer(2), &control_rpc(ihave));
        assert_eq!(gossip.promises_len(), 1);
        gossip.on_peer_disconnected(at(10), &peer(2));
        heartbeats(&mut gossip, 0, 6);
        assert_eq!(gossip.counters().promises_broken, 1);
        assert_eq!(
            penalties(&mut gossip, &Misbehaviour::BrokenPromise),
            vec![peer(2)]
        );
    }

    /// A message the application could not judge (no verification slot) is
    /// not left marked as seen: the next copy, or an IHAVE naming it, is new.
    #[test]
    fn an_abandoned_message_is_handled_as_new_when_it_comes_again() {
        let mut gossip = router_with_peers(3);
        let payload = b"honest block".to_vec();
        let id = MessageId::compute(&topic(), &payload);
        gossip.on_rpc(at(0), peer(1), &message_rpc(&topic(), &payload));
        assert!(gossip.abandon_validation(at(1), id));
        assert!(!gossip.abandon_validation(at(1), id), "no longer pending");
        let ihave = Control::IHave {
            topic: topic(),
            ids: vec![id],
        };
        gossip.on_rpc(at(2), peer(3), &control_rpc(ihave));
        assert_eq!(gossip.promises_len(), 1, "asked for again");
        let events = gossip.on_rpc(at(3), peer(2), &message_rpc(&topic(), &payload));
        assert!(
            matches!(&events[..], [GossipEvent::Message { id: got, from, .. }] if *got == id && *from == peer(2)),
            "{events:?}"
        );
        assert!(gossip.report_validation(at(4), id, Validation::Accept));
        // Judged now: a further copy is a duplicate.
        let events = gossip.on_rpc(at(5), peer(3), &message_rpc(&topic(), &payload));
        assert!(events.is_empty());
        gossip.assert_invariants();
    }

    /// The attack: throwaway identities PRUNE every topic with the largest
    /// backoff and leave, to fill the backoff table until an honest peer's
    /// backoff is evicted and we GRAFT it inside it. Their entries die with
    /// their connections, backoffs are clamped, and the honest one stays.
    #[test]
    fn a_prune_flood_from_departing_identities_evicts_no_honest_backoff() {
        let mut gossip = router_with_peers(12);
        let now = heartbeats(&mut gossip, 0, 3);
        let honest = peer(1);
        if !gossip.mesh_peers(&topic()).contains(&honest) {
            gossip.on_rpc(
                at(now),
                honest,
                &control_rpc(Control::Graft { topic: topic() }),
            );
        }
        assert!(gossip.mesh_peers(&topic()).contains(&honest));
        let prune = |backoff_secs| {
            control_rpc(Control::Prune {
                topic: topic(),
                backoff_secs,
            })
        };
        gossip.on_rpc(at(now), honest, &prune(60));
        drain(&mut gossip);
        for n in 0..20_000u32 {
            let mut bytes = [0xee; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            let sybil = PeerId::from_bytes(bytes);
            gossip.on_peer_connected(at(now), sybil, false, ip(200));
            gossip.on_rpc(at(now), sybil, &subscribe_rpc(&topic()));
            gossip.on_rpc(at(now), sybil, &prune(u32::MAX));
            gossip.on_peer_disconnected(at(now), &sybil);
        }
        assert!(gossip.backoffs_len() <= 12, "{}", gossip.backoffs_len());
        assert!(gossip.in_backoff(at(now), &topic(), &honest));
        // No GRAFT to it inside the 60 s it asked for, whatever the mesh needs.
        let mut later = now;
        let mut grafted_at = None;
        while later < now + 70_000 {
            later = heartbeats(&mut gossip, later, 1);
            let sent = drain(&mut gossip);
            let grafted = controls_to(&sent, honest)
                .iter()
                .any(|c| matches!(c, Control::Graft { .. }));
            if grafted && grafted_at.is_none() {
                grafted_at = Some(later);
            }
        }
        if let Some(at_millis) = grafted_at {
            assert!(at_millis >= now + 60_000, "grafted at {at_millis} ms");
        }
        // A connected peer's backoff request is clamped.
        gossip.on_rpc(at(later), peer(2), &prune(u32::MAX));
        let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
        assert!(gossip.in_backoff(at(later + cap - 1), &topic(), &peer(2)));
        assert!(!gossip.in_backoff(at(later + cap), &topic(), &peer(2)));
        gossip.assert_invariants();
    }

    /// The attack: IWANT as a free pull of any cached message. Only ids we
    /// announced to the asker are answered; asking for others is a penalty.
    #[test]
    fn iwant_is_answered_only_for_ids_announced_to_the_asker() {
        let mut gossip = router_with_peers(12);
        let id = gossip.publish(at(0), topic(), b"cached").unwrap();
        drain(&mut gossip);
        let now = heartbeats(&mut gossip, 0, 1);
        let sent = drain(&mut gossip);
        let announced_to = |p: PeerId| {
            controls_to(&sent, p)
                .iter()
                .any(|c| matches!(c, Control::IHave { ids, .. } if ids.contains(&id)))
        };
        let stranger = (1..=12)
            .map(peer)
            .find(|p| !announced_to(*p))
            .expect("IHAVE goes to a few peers, not all");
        while gossip.poll_event().is_some() {}
        let iwant = control_rpc(Control::IWant { ids: vec![id] });
        let events = gossip.on_rpc(at(now), stranger, &iwant);
        assert_eq!(messages_to(&drain(&mut gossip), stranger), 0);
        assert_eq!(gossip.counters().iwant_unannounced, 1);
        assert_eq!(
            penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
            vec![stranger]
        );
    }

    /// The attack: control sized to cost us more than it costs the sender.
    /// Every id list is handled in linear time, the excess over the
    /// per-heartbeat allowance is ignored, and the sender pays once per heartbeat.
    #[test]
    fn control_over_its_allowance_is_ignored_and_penalised_once_per_heartbeat() {
        let mut gossip = router_with_peers(4);
        let flooder = peer(3);
        let ids = |from: u32, count: usize| -> Vec<MessageId> {
            (from..from + count as u32)
                .map(|n| {
                    let mut id = [0u8; 20];
                    id[..4].copy_from_slice(&n.to_le_bytes());
                    MessageId(id)
                })
                .collect()
        };
        // IHAVE: asks stop at the allowance; more IHAVEs than allowed are not read.
        let mut asked = 0;
        let mut events = Vec::new();
        for round in 0..(2 * IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX + 1) as u32 {
            let ihave = Control::IHave {
                topic: topic(),
                ids: ids(100_000 + round * 1_000, 1_000),
            };
            events.extend(gossip.on_rpc(at(20), flooder, &control_rpc(ihave)));
            for control in controls_to(&drain(&mut gossip), flooder) {
                if let Control::IWant { ids } = control {
                    asked += ids.len();
                }
            }
        }
        assert_eq!(asked, IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX);
        assert_eq!(
            penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
            vec![flooder],
            "over twice the allowance: once per heartbeat"
        );
        // IDONTWANT, the next heartbeat: at most the allowance is remembered.
        let now = heartbeats(&mut gossip, 0, 1);
        let mut events = Vec::new();
        for round in 0..3u32 {
            let batch = ids(round * 1_000, 1_000);
            let rpc = control_rpc(Control::IDontWant { ids: batch });
            events.extend(gossip.on_rpc(at(now), flooder, &rpc));
        }
        assert_eq!(
            gossip.dont_want_len(&flooder),
            IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX
        );
        assert_eq!(
            penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
            vec![flooder]
        );
        // IWANT, the heartbeat after: the same.
        let now = heartbeats(&mut gossip, now, 1);
        let mut events = Vec::new();
        for round in 0..3u32 {
            let batch = ids(500_000 + round * 4_000, 4_000);
            let rpc = control_rpc(Control::IWant { ids: batch });
            events.extend(gossip.on_rpc(at(now), flooder, &rpc));
        }
        assert_eq!(
            penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
            vec![flooder]
        );
        gossip.assert_invariants();
    }

    fn router_with_config(config: Config, count: u8) -> Gossip {
        let mut gossip = Gossip::new(config, [7; 32]);
        gossip.subscribe(at(0), topic()).unwrap();
        for n in 1..=count {
            gossip.on_peer_connected(at(0), peer(n), n % 2 == 1, ip(n));
            gossip.on_rpc(at(0), peer(n), &subscribe_rpc(&topic()));
        }
        drain(&mut gossip);
        gossip
    }

    #[test]
    fn floodsub_sends_every_message_to_every_subscriber_and_no_control() {
        let config = Config {
            floodsub: true,
            ..Config::default()
        };
        let mut gossip = router_with_config(config, 15);
        let now = heartbeats(&mut gossip, 0, 3);
        // No mesh, no GRAFT, no IHAVE: nothing but messages ever leaves.
        assert!(gossip.mesh_peers(&topic()).is_empty());
        assert!(drain(&mut gossip).is_empty());
        gossip.publish(at(now), topic(), b"own").unwrap();
        let sent = drain(&mut gossip);
        assert_eq!(sent.len(), 15);
        for n in 1..=15 {
            assert_eq!(messages_to(&sent, peer(n)), 1);
        }
        // A large message from a peer: no IDONTWANT; accepted, it goes to
        // every other subscriber.
        let large = vec![9u8; IDONTWANT_BYTES_MIN + 1];
        let events = gossip.on_rpc(at(now), peer(1), &message_rpc(&topic(), &large));
        assert!(drain(&mut gossip).is_empty());
        let GossipEvent::Message { id, .. } = events[0] else {
            panic!("expected a message, got {events:?}");
        };
        gossip.report_validation(at(now), id, Validation::Accept);
        let sent = drain(&mut gossip);
        assert_eq!(messages_to(&sent, peer(1)), 0);
        for n in 2..=15 {
            assert_eq!(messages_to(&sent, peer(n)), 1);
            assert!(controls_to(&sent, peer(n)).is_empty());
        }
        // A GRAFT builds no mesh.
        gossip.on_rpc(
            at(now),
            peer(2),
            &control_rpc(Control::Graft { topic: topic() }),
        );
        assert!(gossip.mesh_peers(&topic()).is_empty());
    }

    #[test]
    fn a_withholding_router_grafts_but_never_forwards_or_answers_iwant() {
        let config = Config {
            fault_withhold: true,
            ..Config::default()
        };
        let mut gossip = router_with_config(config, 10);
        heartbeats(&mut gossip, 0, 1);
        drain(&mut gossip);
        let mesh = gossip.mesh_peers(&topic());
        assert!(mesh.len() >= MESH_N_LOW, "it joins the mesh like anyone");
        let events = gossip.on_rpc(at(800), mesh[0], &message_rpc(&topic(), b"payload"));
        let GossipEvent::Message { id, .. } = events[0] else {
            panic!("expected a message, got {events:?}");
        };
        gossip.report_validation(at(800), id, Validation::Accept);
        let sent = drain(&mut gossip);
        assert!(sent.iter().all(|(_, rpc)| rpc.messages.is_empty()));
        gossip.on_rpc(
            at(900),
            mesh[1],
            &control_rpc(Control::IWant { ids: vec![id] }),
        );
        let sent = drain(&mut gossip);
        assert_eq!(messages_to(&sent, mesh[1]), 0);
    }

    /// The hostile side of a PRUNE flood: once per connection, a GRAFT on
    /// each topic the peer announced, and a heartbeat later a PRUNE with the
    /// longest backoff; never a GRAFT inside the backoff (which would cost
    /// it a penalty).
    /// The honest side clamps the backoff and keeps it for that peer only.
    #[test]
    fn a_prune_flooding_router_grafts_and_prunes_each_peer_once() {
        let config = Config {
            fault_prune_flood: true,
            ..Config::default()
        };
        let mut sybil = router_with_config(config, 3);
        let mut honest = router_with_peers(3);
        let sybil_id = peer(3);
        let mut now = 0;
        let mut flooded_at = None;
        for round in 0..4 {
            now = heartbeats(&mut sybil, now, 1);
            let sent = drain(&mut sybil);
            for n in 1..=3 {
                let controls = controls_to(&sent, peer(n));
                let expected = match round {
                    0 => vec![Control::Graft { topic: topic() }],
                    1 => vec![Control::Prune {
                        topic: topic(),
                        backoff_secs: u32::MAX,
                    }],
                    _ => vec![],
                };
                assert_eq!(controls, expected, "round {round}");
            }
            if round == 1 {
                flooded_at = Some(now);
            }
            // `honest` plays peer 1, and knows the Sybil as its peer 3.
            for (_, rpc) in sent.into_iter().filter(|(to, _)| *to == peer(1)) {
                honest.on_rpc(at(now), sybil_id, &rpc_bytes(rpc));
            }
            if round == 0 {
                // The honest router takes the GRAFT: a mesh slot, for a heartbeat.
                assert!(honest.mesh_peers(&topic()).contains(&sybil_id));
            }
        }
        assert!(sybil.mesh_peers(&topic()).is_empty(), "it keeps no mesh");
        assert_eq!(honest.counters().prunes_received, 1);
        assert_eq!(honest.counters().grafts_refused_in_backoff, 0);
        assert_eq!(honest.grafts_refused_in_backoff(&sybil_id), Some(0));
        assert!(!honest.mesh_peers(&topic()).contains(&sybil_id));
        let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
        let flooded_at = flooded_at.expect("the second round ran");
        assert!(honest.in_backoff(at(flooded_at + cap - 1), &topic(), &sybil_id));
        assert!(!honest.in_backoff(at(flooded_at + cap), &topic(), &sybil_id));
        honest.on_peer_disconnected(at(now), &sybil_id);
        assert!(!honest.in_backoff(at(now), &topic(), &sybil_id));
        honest.assert_invariants();
    }

    #[test]
    fn idontwant_is_sent_for_large_messages_and_suppresses_forwarding() {
        let mut gossip = router_with_peers(10);
        heartbeats(&mut gossip, 0, 1);
        drain(&mut gossip);
        let mesh = gossip.mesh_peers(&topic());
        let (from, asked, others) = (mesh[0], mesh[1], &mesh[2..]);
        let large = vec![5u8; IDONTWANT_BYTES_MIN + 1];
        let id = MessageId::compute(&topic(), &large);
        gossip.on_rpc(
            at(800),
            asked,
            &control_rpc(Control::IDontWant { ids: vec![id] }),
        );
        let events = gossip.on_rpc(at(800), from, &message_rpc(&topic(), &large));
        assert!(matches!(events[..], [GossipEvent::Message { from: f, .. }] if f == from));
        // IDONTWANT went to the other mesh peers at once, before validation.
        let sent = drain(&mut gossip);
        for p in others.iter().chain([&asked]) {
            assert_eq!(
                controls_to(&sent, *p),
                vec![Control::IDontWant { ids: vec![id] }]
            );
        }
        assert!(controls_to(&sent, from).is_empty());
        // Accepted: forwarded to the mesh except its sender and the peer that asked not to.
        assert!(gossip.report_validation(at(900), id, Validation::Accept));
        let sent = drain(&mut gossip);
        assert_eq!(messages_to(&sent, from), 0);
        assert_eq!(messages_to(&sent, asked), 0);
        for p in others {
            assert_eq!(messages_to(&sent, *p), 1);
        }
        assert_eq!(gossip.counters().idontwant_suppressed, 1);
        // A small message triggers no IDONTWANT.
        gossip.on_rpc(at(1_000), from, &message_rpc(&topic(), b"small"));
        assert!(drain(&mut gossip).is_empty());
        // IDONTWANT sets are bounded (per heartbeat and in all) and expire.
        let mut now = 1_000;
        for round in 0..5u32 {
            let ids: Vec<MessageId> = (0..IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX as u32)
                .map(|n| {
                    let mut id = [0u8; 20];
                    id[..4].copy_from_slice(&(round * 100_000 + n).to_be_bytes());
                    MessageId(id)
                })
                .collect();
            gossip.on_rpc(at(now), from, &control_rpc(Control::IDontWant { ids }));
            now = heartbeats(&mut gossip, now, 1);
        }
        assert_eq!(gossip.dont_want_len(&from), IDONTWANT_IDS_PER_PEER_MAX);
        heartbeats(&mut gossip, now, 20);
        assert_eq!(gossip.dont_want_len(&from), 0);
    }

    #[test]
    fn seen_cache_deduplicates_then_expires() {
        let mut gossip = router_with_peers(3);
        let bytes = message_rpc(&topic(), b"once");
        let events = gossip.on_rpc(at(0), peer(1), &bytes);
        assert_eq!(events.len(), 1);
        let GossipEvent::Message {
            id, ref payload, ..
        } = events[0]
        else {
            panic!("a message event");
        };
        assert_eq!(payload, b"once");
        assert!(gossip.on_rpc(at(10), peer(2), &bytes).is_empty());
        assert_eq!(gossip.counters().duplicates, 1);
        assert!(gossip.report_validation(at(20), id, Validation::Ignore));
        assert!(!gossip.report_validation(at(20), id, Validation::Accept));
        let now = heartbeats(&mut gossip, 0, 150);
        assert!(now < 120_000);
        assert!(gossip.on_rpc(at(now), peer(2), &bytes).is_empty());
        let now = heartbeats(&mut gossip, now, 30);
        assert!(now > 120_000);
        assert_eq!(gossip.on_rpc(at(now), peer(2), &bytes).len(), 1);
        // Messages on topics we are not in are dropped.
        assert!(gossip
            .on_rpc(
                at(now),
                peer(2),
                &message_rpc(&Topic::new("/x").unwrap(), b"x")
            )
            .is_empty());
        assert_eq!(gossip.counters().messages_unsubscribed, 1);
    }

    #[test]
    fn pending_validations_are_bounded_and_time_out() {
        let mut gossip = router_with_peers(2);
        for n in 0..VALIDATION_PENDING_MAX + 10 {
            gossip.on_rpc(
                at(0),
                peer(1),
                &message_rpc(&topic(), format!("m{n}").as_bytes()),
            );
        }
        assert_eq!(gossip.pending_len(), VALIDATION_PENDING_MAX);
        assert_eq!(gossip.counters().validations_dropped, 10);
        heartbeats(&mut gossip, 0, 50);
        assert_eq!(gossip.pending_len(), 0);
    }

    #[test]
    fn invalid_messages_lead_to_graylisting() {
        let mut gossip = router_with_peers(3);
        let liar = peer(1);
        for n in 0..3u8 {
            let events = gossip.on_rpc(at(0), liar, &message_rpc(&topic(), &[b'x', n]));
            let GossipEvent::Message { id, .. } = events[0] else {
                panic!("a message event");
            };
            gossip.report_validation(at(0), id, Validation::Reject);
            let event = gossip.poll_event();
            assert!(matches!(
                event,
                Some(GossipEvent::Penalty {
                    reason: Misbehaviour::InvalidMessage(_),
                    ..
                })
            ));
        }
        assert!(gossip.score(at(0), &liar).unwrap() < GRAYLIST_THRESHOLD);
        let events = gossip.on_rpc(at(0), liar, &message_rpc(&topic(), b"valid now"));
        assert_eq!(events, vec![GossipEvent::Graylisted { peer: liar }]);
        assert_eq!(gossip.counters().rpcs_graylisted, 1);
        // It is pruned from the mesh and not grafted back.
        heartbeats(&mut gossip, 0, 3);
        assert!(!gossip.mesh_peers(&topic()).contains(&liar));
        // Reconnecting does not shed the score.
        gossip.on_peer_disconnected(at(3_000), &liar);
        gossip.on_peer_connected(at(3_000), liar, false, ip(1));
        assert!(gossip.score(at(3_000), &liar).unwrap() < GRAYLIST_THRESHOLD);
        // The honest peers are unaffected.
        assert!(gossip.score(at(3_000), &peer(2)).unwrap() >= 0.0);
    }

    #[test]
    fn accepted_messages_credit_their_first_sender() {
        let mut gossip = router_with_peers(3);
        let events = gossip.on_rpc(at(0), peer(2), &message_rpc(&topic(), b"good"));
        let GossipEvent::Message { id, .. } = events[0] else {
            panic!("a message event");
        };
        gossip.report_validation(at(0), id, Validation::Accept);
        assert!(gossip.score(at(0), &peer(2)).unwrap() >= 1.0);
        assert_eq!(gossip.mcache_len(), 1);
    }

    #[test]
    fn ip_colocation_is_penalised_except_when_exempt() {
        let mut gossip = Gossip::new(Config::default(), [0; 32]);
        for n in 1..=5 {
            gossip.on_peer_connected(at(0), peer(n), false, ip(200));
        }
        assert_eq!(gossip.score(at(0), &peer(1)), Some(-40.0));
        let mut exempt = Config::default();
        exempt.ip_colocation_exempt.insert(ip(200));
        let mut gossip = Gossip::new(exempt, [0; 32]);
        for n in 1..=5 {
            gossip.on_peer_connected(at(0), peer(n), false, ip(200));
        }
        assert_eq!(gossip.score(at(0), &peer(1)), Some(0.0));
        gossip.set_application_score(&peer(1), -15.0);
        assert_eq!(gossip.score(at(0), &peer(1)), Some(-15.0));
    }

    #[test]
    fn full_queue_drops_gossip_before_control_and_reports_the_peer() {
        let mut gossip = router_with_peers(1);
        // Incompressible payloads, so each message is about 1 MiB on the wire.
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut published = 0;
        for n in 0..20 {
            let mut payload = vec![0u8; 1024 * 1024];
            rng.fill_bytes(&mut payload);
            payload[0] = n;
            gossip.publish(at(0), topic(), &payload).unwrap();
            published += 1;
        }
        assert!(gossip.queued_bytes(&peer(1)) <= SEND_QUEUE_BYTES_PER_PEER_MAX);
        assert!(gossip.counters().gossip_dropped > 0);
        assert!(gossip.queued_items(&peer(1)) < published + 1);
        assert_eq!(
            gossip.poll_event(),
            None,
            "a few drops are not yet too slow"
        );
        // Control items still get in (here 2 MB of IWANT), evicting the oldest gossip.
        let queued_gossip = gossip.peers[&peer(1)].gossip_queue.len();
        let dropped = gossip.counters().gossip_dropped;
        for _ in 0..20 {
            let ids = vec![MessageId([1; 20]); CONTROL_IDS_PER_RPC_MAX];
            gossip.enqueue(peer(1), Item::Control(Control::IWant { ids }));
        }
        assert_eq!(gossip.counters().control_dropped, 0);
        assert!(gossip.peers[&peer(1)].gossip_queue.len() < queued_gossip);
        assert!(gossip.counters().gossip_dropped > dropped);
        assert!(gossip.queued_bytes(&peer(1)) <= SEND_QUEUE_BYTES_PER_PEER_MAX);
        assert_eq!(gossip.poll_event(), None);
        // Control that cannot fit even without gossip: the peer is too slow.
        for _ in 0..200 {
            let ids = vec![MessageId([1; 20]); CONTROL_IDS_PER_RPC_MAX];
            gossip.enqueue(peer(1), Item::Control(Control::IWant { ids }));
        }
        assert!(gossip.counters().control_dropped > 0);
        assert!(gossip.peers[&peer(1)].gossip_queue.is_empty());
        assert_eq!(
            gossip.poll_event(),
            Some(GossipEvent::SlowPeer { peer: peer(1) })
        );
        assert_eq!(gossip.poll_event(), None, "reported once");
        // Control leaves first.
        let (to, bytes) = gossip.poll_send().unwrap();
        assert_eq!(to, peer(1));
        let rpc = Rpc::decode(&bytes).unwrap();
        assert!(!rpc.subscriptions.is_empty() || !rpc.control.is_empty());
        drain(&mut gossip);
        assert_eq!(gossip.queued_items(&peer(1)), 0);
    }

    #[test]
    fn a_peer_that_keeps_dropping_gossip_is_reported_slow() {
        let mut gossip = router_with_peers(1);
        let drops_to_report = SLOW_PEER_GOSSIP_DROPS_MAX as usize + 1;
        let total = SEND_QUEUE_ITEMS_PER_PEER_MAX + drops_to_report;
        for n in 0..total as u32 {
            gossip.publish(at(0), topic(), &n.to_be_bytes()).unwrap();
            if n as usize + 1 < total {
                assert_eq!(gossip.poll_event(), None, "after {n} messages");
            }
        }
        assert_eq!(
            gossip.poll_event(),
            Some(GossipEvent::SlowPeer { peer: peer(1) })
        );
        // Drained, its slate is clean.
        drain(&mut gossip);
        assert_eq!(gossip.peers[&peer(1)].gossip_drops, 0);
    }

    #[test]
    fn backed_up_peers_get_control_only_and_idontwant_cancels_what_waits() {
        let mut gossip = router_with_peers(2);
        let now = heartbeats(&mut gossip, 0, 1);
        drain(&mut gossip);
        let large = vec![3u8; IDONTWANT_BYTES_MIN + 1];
        let id = gossip.publish(at(now), topic(), &large).unwrap();
        gossip.publish(at(now), topic(), b"small").unwrap();
        gossip.enqueue(peer(1), Item::Control(Control::Graft { topic: topic() }));
        let busy = peer(1);
        let readiness = |p: &PeerId| {
            if *p == busy {
                SendReadiness::ControlOnly
            } else {
                SendReadiness::Everything
            }
        };
        let mut sent = Vec::new();
        while let Some((to, bytes)) = gossip.poll_send_ready(readiness) {
            sent.push((to, Rpc::decode(&bytes).unwrap()));
        }
        assert_eq!(messages_to(&sent, peer(2)), 2);
        assert_eq!(messages_to(&sent, busy), 0, "gossip waits");
        assert_eq!(
            controls_to(&sent, busy),
            vec![Control::Graft { topic: topic() }]
        );
        assert_eq!(gossip.peers[&busy].gossip_queue.len(), 2);
        // The busy peer got the large message elsewhere: it is cancelled here.
        let suppressed = gossip.counters().idontwant_suppressed;
        gossip.on_rpc(
            at(now),
            busy,
            &control_rpc(Control::IDontWant { ids: vec![id] }),
        );
        let sent = drain(&mut gossip);
        assert_eq!(messages_to(&sent, busy), 1, "only the small one is left");
        assert_eq!(gossip.counters().idontwant_suppressed, suppressed + 1);
        assert_eq!(gossip.queued_items(&busy), 0);
        gossip.assert_invariants();
    }

    #[test]
    fn malformed_rpcs_are_reported() {
        let mut gossip = router_with_peers(1);
        let events = gossip.on_rpc(at(0), peer(1), &[32, 0]);
        assert!(matches!(
            events[..],
            [GossipEvent::Penalty {
                reason: Misbehaviour::Malformed(_),
                ..
            }]
        ));
        // Unknown peers are ignored.
        assert!(gossip
            .on_rpc(at(0), peer(99), &subscribe_rpc(&topic()))
            .is_empty());
        assert_eq!(gossip.counters().rpcs_malformed, 1);
    }

    #[test]
    fn heartbeat_is_scheduled_and_early_calls_are_no_ops() {
        let mut gossip = router_with_peers(10);
        assert_eq!(gossip.next_deadline(), Some(at(700)));
        // Peers came after we subscribed: the first heartbeat builds the mesh.
        gossip.heartbeat(at(699));
        assert!(gossip.mesh_peers(&topic()).is_empty());
        gossip.heartbeat(at(700));
        assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
        assert_eq!(gossip.next_deadline(), Some(at(1_400)));
    }

    #[test]
    fn grafts_from_negative_peers_are_refused_and_unsubscribe_prunes() {
        let mut gossip = router_with_peers(10);
        heartbeats(&mut gossip, 0, 1);
        drain(&mut gossip);
        let outsider = (1..=10)
            .map(peer)
            .find(|p| !gossip.mesh_peers(&topic()).contains(p))
            .unwrap();
        gossip.set_application_score(&outsider, -5.0);
        gossip.on_rpc(
            at(800),
            outsider,
            &control_rpc(Control::Graft { topic: topic() }),
        );
        assert!(!gossip.mesh_peers(&topic()).contains(&outsider));
        let sent = drain(&mut gossip);
        assert!(matches!(
            controls_to(&sent, outsider)[..],
            [Control::Prune {
                backoff_secs: 60,
                ..
            }]
        ));
        // Leaving the topic PRUNEs the whole mesh, with backoff.
        let mesh = gossip.mesh_peers(&topic());
        assert!(gossip.unsubscribe(at(900), &topic()));
        let sent = drain(&mut gossip);
        for p in mesh {
            assert!(controls_to(&sent, p).iter().any(|c| matches!(
                c,
                Control::Prune {
                    backoff_secs: 60,
                    ..
                }
            )));
        }
        assert_eq!(
            gossip.backoffs_len(),
            0,
            "no state is kept for a topic we left"
        );
        gossip.assert_invariants();
    }

    #[test]
    fn outbound_peers_are_topped_up() {
        let mut gossip = Gossip::new(Config::default(), [4; 32]);
        gossip.subscribe(at(0), topic()).unwrap();
        for n in 1..=10 {
            gossip.on_peer_connected(at(0), peer(n), false, ip(n));
            gossip.on_rpc(at(0), peer(n), &subscribe_rpc(&topic()));
        }
        let now = heartbeats(&mut gossip, 0, 1);
        assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
        for n in 11..=13 {
            gossip.on_peer_connected(at(now), peer(n), true, ip(n));
            gossip.on_rpc(at(now), peer(n), &subscribe_rpc(&topic()));
        }
        heartbeats(&mut gossip, now, 1);
        let mesh = gossip.mesh_peers(&topic());
        let outbound = mesh.iter().filter(|p| p.as_bytes()[0] > 10).count();
        assert_eq!(outbound, MESH_OUTBOUND_MIN);
        assert_eq!(mesh.len(), MESH_N + MESH_OUTBOUND_MIN);
    }

    #[test]
    fn opportunistic_grafting_brings_in_better_peers() {
        let mut gossip = router_with_peers(10);
        let now = heartbeats(&mut gossip, 0, 1);
        let outsiders: Vec<PeerId> = (1..=10)
            .map(peer)
            .filter(|p| !gossip.mesh_peers(&topic()).contains(p))
            .collect();
        assert_eq!(outsiders.len(), 2);
        for p in &outsiders {
            gossip.set_application_score(p, 50.0);
        }
        // Before the round (every 60 heartbeats) the mesh is left alone.
        let now = heartbeats(&mut gossip, now, OPPORTUNISTIC_GRAFT_HEARTBEATS - 2);
        assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
        heartbeats(&mut gossip, now, 1);
        let mesh = gossip.mesh_peers(&topic());
        assert_eq!(mesh.len(), MESH_N + OPPORTUNISTIC_GRAFT_PEERS);
        for p in &outsiders {
            assert!(mesh.contains(p));
        }
    }

    /// Mesh peers that never forward build a delivery deficit once active
    /// and are pruned; the peer that delivers keeps its place.
    #[test]
    fn withholding_mesh_peers_are_pruned_for_their_deficit() {
        let mut gossip = router_with_peers(12);
        let mut now = heartbeats(&mut gossip, 0, 1);
        drain(&mut gossip);
        let good = gossip.mesh_peers(&topic())[0];
        let withholders: Vec<PeerId> = gossip.mesh_peers(&topic())[1..].to_vec();
        for round in 0..30u32 {
            let events = gossip.on_rpc(at(now), good, &message_rpc(&topic(), &round.to_be_bytes()));
            for event in events {
                if let GossipEvent::Message { id, .. } = event {
                    gossip.report_validation(at(now), id, Validation::Accept);
                }
            }
            now = heartbeats(&mut gossip, now, 1);
            drain(&mut gossip);
        }
        let mesh = gossip.mesh_peers(&topic());
        assert!(mesh.contains(&good));
        assert!(gossip.score(at(now), &good).unwrap() > 0.0);
        let pruned = withholders.iter().filter(|p| !mesh.contains(p)).count();
        assert!(pruned > 0, "withholders were pruned");
        for p in &withholders {
            assert!(!mesh.contains(p) || gossip.score(at(now), p).unwrap() >= 0.0);
        }
    }

    #[test]
    fn caches_stay_bounded() {
        let mut gossip = router_with_peers(1);
        for n in 0..(MCACHE_MESSAGES_MAX + 10) as u32 {
            gossip.publish(at(0), topic(), &n.to_be_bytes()).unwrap();
            if n % 512 == 0 {
                drain(&mut gossip);
            }
        }
        assert_eq!(gossip.mcache_len(), MCACHE_MESSAGES_MAX);
        assert_eq!(gossip.seen_len(), MCACHE_MESSAGES_MAX + 10);
        gossip.assert_invariants();
        drain(&mut gossip);
        // Retained scores are capped: the earliest to expire goes first.
        let mut gossip = Gossip::new(Config::default(), [5; 32]);
        for n in 0..(RETAINED_SCORES_MAX + 4) as u32 {
            let id = PeerId::from_bytes({
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&n.to_be_bytes());
                bytes
            });
            gossip.on_peer_connected(at(u64::from(n)), id, false, ip(1));
            gossip.peers.get_mut(&id).unwrap().stats.behaviour_penalty = 3.0;
            gossip.on_peer_disconnected(at(u64::from(n)), &id);
        }
        assert_eq!(gossip.retained.len(), RETAINED_SCORES_MAX);
        assert!(!gossip.retained.contains_key(&PeerId::from_bytes([0; 32])));
        gossip.assert_invariants();
    }

    /// Nodes joined in memory: every RPC is delivered at once and every
    /// message accepted.
    struct Net {
        nodes: Vec<Gossip>,
        received: Vec<BTreeSet<MessageId>>,
        now: Instant,
    }

    impl Net {
        fn new(count: u8, degree: u8, seed: u8) -> Net {
            let mut nodes: Vec<Gossip> = (0..count)
                .map(|n| Gossip::new(Config::default(), [seed.wrapping_add(n); 32]))
                .collect();
            for (n, node) in nodes.iter_mut().enumerate() {
                node.subscribe(Instant::ZERO, topic()).unwrap();
                let _ = n;
            }
            for a in 0..count {
                for step in 1..=degree / 2 {
                    let b = (a + step) % count;
                    nodes[usize::from(a)].on_peer_connected(Instant::ZERO, peer(b), true, ip(b));
                    nodes[usize::from(b)].on_peer_connected(Instant::ZERO, peer(a), false, ip(a));
                }
            }
            let received = vec![BTreeSet::new(); usize::from(count)];
            let mut net = Net {
                nodes,
                received,
                now: Instant::ZERO,
            };
            net.deliver();
            net
        }

        fn deliver(&mut self) -> Vec<(usize, PeerId, Vec<u8>)> {
            let mut log = Vec::new();
            for _ in 0..10_000 {
                let mut moved = false;
                for from in 0..self.nodes.len() {
                    while let Some((to, bytes)) = self.nodes[from].poll_send() {
                        moved = true;
                        log.push((from, to, bytes.clone()));
                        let to = usize::from(to.as_bytes()[0]);
                        let events = self.nodes[to].on_rpc(self.now, peer(from as u8), &bytes);
                        for event in events {
                            if let GossipEvent::Message { id, .. } = event {
                                self.received[to].insert(id);
                                self.nodes[to].report_validation(self.now, id, Validation::Accept);
                            }
                        }
                    }
                }
                if !moved {
                    return log;
                }
            }
            panic!("delivery did not settle");
        }

        fn heartbeat(&mut self) -> Vec<(usize, PeerId, Vec<u8>)> {
            self.now = self.now + HEARTBEAT_INTERVAL;
            for node in &mut self.nodes {
                node.heartbeat(self.now);
            }
            self.deliver()
        }
    }

    #[test]
    fn a_published_message_reaches_every_node_through_the_mesh() {
        let mut net = Net::new(30, 10, 1);
        for _ in 0..3 {
            net.heartbeat();
        }
        for node in &net.nodes {
            let size = node.mesh_peers(&topic()).len();
            assert!(
                size >= MESH_N_LOW.min(10) && size <= MESH_N_HIGH,
                "mesh of {size}"
            );
        }
        let now = net.now;
        let id = net.nodes[0].publish(now, topic(), b"to all").unwrap();
        net.deliver();
        net.heartbeat();
        for (n, received) in net.received.iter().enumerate().skip(1) {
            assert!(received.contains(&id), "node {n} missed the message");
        }
    }

    #[test]
    fn same_seed_gives_the_same_sends() {
        let run = |seed: u8| {
            let mut net = Net::new(16, 8, seed);
            let mut log = Vec::new();
            for round in 0..5u8 {
                log.extend(net.heartbeat());
                let now = net.now;
                let origin = usize::from(round) % 16;
                net.nodes[origin]
                    .publish(now, topic(), &[round; 2000])
                    .unwrap();
                log.extend(net.deliver());
            }
            log
        };
        let first = run(9);
        assert!(!first.is_empty());
        assert_eq!(first, run(9));
    }
}
