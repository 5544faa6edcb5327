//! The peer store: what a node remembers of other peers across restarts.
//!
//! # Design
//! The core does no IO, so the store crosses the boundary twice, like the
//! chain: the driver loads a [`KnownPeers`] and hands it to `Node::new` in
//! `node::Config::known_peers`, and the node hands a fresh snapshot back as
//! `Action::PersistPeers` every [`PEERSTORE_PERSIST_INTERVAL`],
//! [`PEERSTORE_GROWTH_PERSIST_DELAY`] after the routing table grows or a
//! peer is banned, and at
//! shutdown, which the driver writes over the previous one in one
//! transaction. No acknowledgement comes back: a snapshot lost in a crash
//! costs only what changed since the one before.
//!
//! Every instant is Unix milliseconds here (the core's own `Instant`s
//! start at each run's origin, so they mean nothing to the next run): the
//! node converts with `Config::unix_ms_at_origin` both ways.
//!
//! What is kept:
//! - the signed records of peers we met (routing-table entries, which a
//!   handshake proved and whose own record they gave us), with when they
//!   were last seen alive; relayed records are never kept, so nobody can
//!   fill our store by answering FIND_NODE;
//! - the peers' scores (non-zero ones), with when they were taken, so the
//!   time a node was down counts toward their decay;
//! - the bans in force, by identity and by IP, with their ends.
//!
//! # Security
//! *Provided*: a loaded store is input we did not check: records are
//! decoded and their signatures verified for our network by the node (one
//! that fails is skipped with a WARN), bans past their end are dropped,
//! every list is cut to its bound, oldest first.
//! *Not provided*: protection from someone who can write the data
//! directory (they could ban or unban anyone).
//!
//! # Limits
//! [`PEERSTORE_RECORDS_MAX`] records, the least recently seen evicted
//! first; scores and bans are bounded by the peer manager's tables
//! (`SCORES_MAX`, `BANNED_PEERS_MAX`, `BANNED_IPS_MAX` in `peer/`).

use std::net::IpAddr;

use crate::identity::PeerId;
use crate::time::Duration;

/// Peer records kept across restarts: as many as a full routing table
/// holds (256 buckets of 16), so no entry of a full table is forgotten.
/// The least recently seen are evicted first.
pub const PEERSTORE_RECORDS_MAX: usize = 4_096;
/// How often the node hands the driver a snapshot: a node killed without
/// a shutdown forgets at most this much of what it learned.
pub const PEERSTORE_PERSIST_INTERVAL: Duration = Duration::from_secs(60);
/// A routing table grown past its size at the last snapshot, or a new
/// ban, is saved this soon after, not up to a whole interval later: a
/// node killed while it bootstraps still restarts from the peers it met,
/// and one killed just after a ban still refuses the banned peer. Growth
/// only, so a table that merely replaces entries waits for the interval,
/// and growth or bans cost at most one snapshot per this delay.
pub const PEERSTORE_GROWTH_PERSIST_DELAY: Duration = Duration::from_secs(5);

/// A peer we met, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownRecord {
    /// Its signed record, encoded (`discovery::Record::encode`); verified
    /// again when loaded.
    pub record: Vec<u8>,
    /// When it was last seen alive (entered the table, answered, passed a
    /// liveness check), in Unix milliseconds.
    pub last_seen_unix_ms: u64,
}

/// A peer's score, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownScore {
    /// The peer.
    pub peer: PeerId,
    /// Its score in millionths of a point (`peer::Score::as_micropoints`).
    pub score_micropoints: i64,
    /// When the score had that value, in Unix milliseconds: it decays from
    /// there.
    pub at_unix_ms: u64,
    /// The IP address it last connected from, if known: a ban its score
    /// reaches later still bans that address.
    pub last_ip: Option<IpAddr>,
}

/// A ban by identity, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownPeerBan {
    /// The banned peer.
    pub peer: PeerId,
    /// The IP key it was banned from, if known.
    pub ip: Option<IpAddr>,
    /// When the ban ends, in Unix milliseconds.
    pub until_unix_ms: u64,
}

/// A ban by IP address, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownIpBan {
    /// The banned IP key (an IPv6 address stands for its /64).
    pub ip: IpAddr,
    /// When the ban ends, in Unix milliseconds.
    pub until_unix_ms: u64,
}

/// Everything the peer store holds; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownPeers {
    /// Peers we met, most recently seen first.
    pub records: Vec<KnownRecord>,
    /// Non-zero scores, in `PeerId` order.
    pub scores: Vec<KnownScore>,
    /// Bans by identity in force, in `PeerId` order.
    pub peer_bans: Vec<KnownPeerBan>,
    /// Bans by IP in force, in address order.
    pub ip_bans: Vec<KnownIpBan>,
}

impl KnownPeers {
    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.scores.is_empty()
            && self.peer_bans.is_empty()
            && self.ip_bans.is_empty()
    }
}
