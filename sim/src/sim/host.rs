//! One hosted node: the production [`Node`] of its current life, and the
//! driver state the world keeps beside it (identity and seeds, link rates,
//! modelled CPU and disk, its timer, its dials, what it announced).
//!
//! Each life of a node is an *incarnation*: a restart starts a fresh
//! [`Node`] with the same identity and configuration and a seed derived
//! from the first one and the restart count ([`incarnation_seed`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use meshsync_core::chain::{ProposerPublicKey, Root, SignedBlock};
use meshsync_core::metrics::Counters;
use meshsync_core::peerstore::KnownPeers;
use meshsync_core::work::PersistBatch;
use meshsync_core::{Config, DialId, Instant, Node, Notification, PeerId};
use sha2::{Digest, Sha256};

use super::clock::NodeClock;

/// One simulated node and the driver state the simulator keeps for it.
pub(super) struct SimNode {
    pub(super) node: Node,
    /// The configuration every incarnation starts with.
    pub(super) config: Config,
    /// What the identity is derived from, so a restart keeps it.
    pub(super) identity_seed: u64,
    /// The first incarnation's seed; later ones are derived from it.
    pub(super) node_seed: [u8; 32],
    /// 0 for the first life, one more per restart.
    pub(super) incarnation: u32,
    pub(super) up: bool,
    pub(super) peer_id: PeerId,
    pub(super) addr: SocketAddr,
    pub(super) peers_max: usize,
    /// Bytes per second the node can send, if limited.
    pub(super) uplink_bytes_per_second: Option<u64>,
    /// When the uplink finishes sending what it was given so far.
    pub(super) uplink_free_at: Instant,
    /// When the node's modelled CPU finishes the jobs it was given.
    pub(super) cpu_free_at: Instant,
    /// When the node's modelled disk finishes the writes it was given.
    pub(super) disk_free_at: Instant,
    /// The node's disk: blocks whose persist batch completed. A restart
    /// starts from these.
    pub(super) disk: BTreeMap<Root, SignedBlock>,
    /// The finalized root of the last batch on the disk: where a read of
    /// finalized history (`Action::ReadBlocks`) starts walking down.
    pub(super) disk_finalized: Root,
    /// Until when the disk refuses writes (see [`crate::Sim::fail_disk`]).
    pub(super) disk_fails_until: Instant,
    /// Batches the failing disk refused, waiting in order for a retry.
    pub(super) disk_unwritten: VecDeque<PersistBatch>,
    /// The signing watermarks on the node's disk: per key, the highest
    /// slot a completed batch recorded. A restart loads these.
    pub(super) disk_watermarks: BTreeMap<ProposerPublicKey, u64>,
    /// The peer store on the node's disk (the last `Action::PersistPeers`),
    /// for a node whose config keeps one. A restart loads it.
    pub(super) disk_known_peers: Option<KnownPeers>,
    /// Bytes per second the node can receive, if limited.
    pub(super) downlink_bytes_per_second: Option<u64>,
    /// When the downlink finishes receiving what is on its way so far.
    pub(super) downlink_free_at: Instant,
    /// Fault: the node takes in nothing (its sockets' receive buffers are
    /// full), so what others send it stays in their send queues.
    pub(super) stopped_reading: bool,
    /// Fault: nothing the node writes leaves it, as with a host that opens
    /// connections and never sends a byte (a half-open flood).
    pub(super) mute: bool,
    /// The node's clock: how its instants run against the world's (drift).
    pub(super) clock: NodeClock,
    /// Milliseconds the node's wall clock is off true time.
    pub(super) clock_skew_ms: i64,
    /// Each disk write takes this many times its modelled time.
    pub(super) disk_slowdown: u32,
    /// Each job takes this many times its modelled cost.
    pub(super) cpu_slowdown: u32,
    /// Generation of the live timer event; older ones are stale.
    pub(super) timer_generation: u64,
    /// The instant of the live timer event, if one is queued.
    pub(super) timer_at: Option<Instant>,
    /// Dials asked for and neither answered nor cancelled yet.
    pub(super) dials: BTreeSet<DialId>,
    /// Every dial asked for, with when (the last [`crate::sim::DIALS_KEPT_PER_NODE_MAX`]).
    pub(super) dial_log: VecDeque<(Instant, SocketAddr)>,
    pub(super) notifications: VecDeque<(Instant, Notification)>,
    /// Payload bytes of `notifications` ([`super::drive::payload_bytes`]).
    pub(super) notification_payload_bytes: usize,
    /// Peers announced connected and not since disconnected.
    pub(super) notified_peers: BTreeSet<PeerId>,
    /// Counters of earlier incarnations.
    pub(super) retired_counters: Vec<Counters>,
    /// The next tag [`crate::Sim::request`] gives a request of this node.
    pub(super) request_tag_next: u64,
}

impl SimNode {
    /// The Unix time (ms) of `Instant::ZERO` the node's skewed wall clock
    /// gives: its configuration's, moved by the skew (not below 0).
    pub(super) fn skewed_unix_ms_at_origin(&self) -> u64 {
        self.config
            .unix_ms_at_origin
            .saturating_add_signed(self.clock_skew_ms)
    }
}

/// The seed of incarnation `incarnation` of a node whose first seed was
/// `first`: the first itself, then a hash of it and the restart count.
pub(super) fn incarnation_seed(first: &[u8; 32], incarnation: u32) -> [u8; 32] {
    if incarnation == 0 {
        return *first;
    }
    let mut hasher = Sha256::new();
    hasher.update(b"meshsync-sim restart");
    hasher.update(first);
    hasher.update(incarnation.to_le_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_seeds_are_derived_and_distinct() {
        let first = [7u8; 32];
        assert_eq!(incarnation_seed(&first, 0), first);
        assert_ne!(incarnation_seed(&first, 1), first);
        assert_ne!(incarnation_seed(&first, 1), incarnation_seed(&first, 2));
        assert_eq!(incarnation_seed(&first, 2), incarnation_seed(&first, 2));
    }
}
