//! The router's limits and tunables: every named constant with its reason,
//! their compile-time relations, and [`Config`] with its defaults.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::gossip::wire::{CONTROL_IDS_PER_RPC_MAX, SUBSCRIPTIONS_PER_RPC_MAX};
use crate::limits::{MESSAGE_BYTES_MAX, PEERS_MAX};
use crate::time::Duration;

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
/// A frame this long or longer (compressed bytes) is remembered by its
/// [`FRAME_KEY_EDGE_BYTES`] ends while we hold it, so that its copies are
/// known by comparing bytes (about 10 GB/s) instead of decompressing and
/// hashing each (sha256: about 2 GB/s): a node that takes in five copies of
/// each 1 MiB block saves about 2 ms of CPU per block.
pub const FRAME_MATCH_BYTES_MIN: usize = 64 * 1024;
/// Bytes taken from each end of a large frame for its key: the frame's
/// first chunk header and checksum, and its last bytes.
pub const FRAME_KEY_EDGE_BYTES: usize = 32;
/// Large frames remembered at most: as many as the message cache and the
/// validation queue can hold together; oldest forgotten first.
pub const KNOWN_FRAMES_MAX: usize =
    (MCACHE_BYTES_MAX + VALIDATION_PENDING_BYTES_MAX) / FRAME_MATCH_BYTES_MIN;
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
/// Events not yet taken by [`Gossip::poll_event`](super::Gossip::poll_event); oldest dropped.
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

/// What a [`Gossip`](super::Gossip) enforces. [`Config::default`] is the table above.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
