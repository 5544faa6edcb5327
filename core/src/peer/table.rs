//! The table of connected peers and the choice of the best ones to sync from.
//!
//! # Design
//! One [`PeerRecord`] per connected peer, keyed by [`PeerId`] in a `BTreeMap`
//! so every iteration is in identity order. Scores are not stored here (they
//! outlive connections, see [`super::score`]); the selections take a function
//! giving each peer's current score.
//!
//! Two selections, after Prysm's sync:
//! - [`PeerTable::best_peers`]: peers whose claimed head is ahead of ours,
//!   best first (score, then head, then identity);
//! - [`PeerTable::best_finalized`]: the finalized slot most peers claim among
//!   those ahead of ours (its `BestFinalized`), so that one peer claiming a far
//!   future cannot set the sync target alone, and the peers that can serve it.
//!
//! Both skip peers with a negative score and peers whose status is unknown.
//! Ties always fall to a total order, so the same table gives the same answer
//! on every run.
//!
//! # Security
//! Provided: a single liar cannot set the finalized sync target while honest
//! peers agree on another; a peer whose status has finalized ahead of head
//! is refused ([`StatusError`]). Not provided: claims are believed until
//! disproved; a majority of Sybils can set the target (scores and bans deal
//! with them afterwards).
//!
//! # Limits
//! The table holds connected peers only, which the gater bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::score::Score;
use crate::identity::PeerId;
use crate::time::Instant;
use crate::types::{ConnId, Direction};

/// What a peer last told us about its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainStatus {
    /// The slot of its head block.
    pub head_slot: u64,
    /// The slot of its latest finalized block.
    pub finalized_slot: u64,
}

/// A status that cannot be true: finalized ahead of head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusError {
    /// The status refused.
    pub status: ChainStatus,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "finalized slot {} is ahead of head slot {}",
            self.status.finalized_slot, self.status.head_slot
        )
    }
}

impl std::error::Error for StatusError {}

impl ChainStatus {
    /// `Ok` if the status is consistent (finalized at or below head).
    pub fn check(self) -> Result<ChainStatus, StatusError> {
        if self.finalized_slot <= self.head_slot {
            Ok(self)
        } else {
            Err(StatusError { status: self })
        }
    }
}

/// A connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its identity.
    pub peer: PeerId,
    /// The driver's connection carrying it.
    pub conn: ConnId,
    /// Its address.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
    /// When its handshake completed.
    pub connected_at: Instant,
    /// Its last status, once it has sent one.
    pub status: Option<ChainStatus>,
}

/// The finalized slot to sync toward and the peers to sync from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalizedTarget {
    /// The finalized slot claimed by the most peers (ties: the higher slot).
    pub slot: u64,
    /// How many peers claim exactly that slot.
    pub votes: usize,
    /// Peers that claim at least that slot, best first.
    pub peers: Vec<PeerId>,
}

/// The connected peers.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    peers: BTreeMap<PeerId, PeerRecord>,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> PeerTable {
        PeerTable::default()
    }

    /// Connected peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The record of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    /// Whether `peer` is connected.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Every record, in identity order.
    pub fn iter(&self) -> impl Iterator<Item = &PeerRecord> {
        self.peers.values()
    }

    /// Adds or replaces the record of `record.peer`; returns the old one.
    pub fn insert(&mut self, record: PeerRecord) -> Option<PeerRecord> {
        self.peers.insert(record.peer, record)
    }

    /// Removes the record of `peer`.
    pub fn remove(&mut self, peer: &PeerId) -> Option<PeerRecord> {
        self.peers.remove(peer)
    }

    /// Records `status` for connected `peer`. Returns whether `peer` is connected.
    pub fn set_status(&mut self, peer: &PeerId, status: ChainStatus) -> bool {
        match self.peers.get_mut(peer) {
            Some(record) => {
                record.status = Some(status);
                true
            }
            None => false,
        }
    }

    /// Up to `count` peers with a non-negative score whose head is ahead of
    /// `our_head_slot`: highest score first, then highest head, then lowest identity.
    pub fn best_peers(
        &self,
        our_head_slot: u64,
        count: usize,
        score: impl Fn(&PeerId) -> Score,
    ) -> Vec<PeerId> {
        let mut candidates: Vec<(Score, u64, PeerId)> = self
            .peers
            .values()
            .filter_map(|record| {
                let head = record.status?.head_slot;
                let score = score(&record.peer);
                (head > our_head_slot && score >= Score::ZERO).then_some((score, head, record.peer))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        candidates
            .into_iter()
            .take(count)
            .map(|(_, _, peer)| peer)
            .collect()
    }

    /// Among peers with a non-negative score whose finalized slot is ahead of
    /// `our_finalized_slot`: the finalized slot most of them claim (ties: the
    /// higher), and up to `count` peers claiming at least it, highest score
    /// first, then highest finalized slot, then lowest identity. `None` when no
    /// peer is ahead.
    pub fn best_finalized(
        &self,
        our_finalized_slot: u64,
        count: usize,
        score: impl Fn(&PeerId) -> Score,
    ) -> Option<FinalizedTarget> {
        let ahead: Vec<(Score, u64, PeerId)> = self
            .peers
            .values()
            .filter_map(|record| {
                let finalized = record.status?.finalized_slot;
                let score = score(&record.peer);
                (finalized > our_finalized_slot && score >= Score::ZERO).then_some((
                    score,
                    finalized,
                    record.peer,
                ))
            })
            .collect();
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for &(_, finalized, _) in &ahead {
            *votes.entry(finalized).or_insert(0) += 1;
        }
        let (slot, votes) = votes
            .into_iter()
            .max_by_key(|&(slot, votes)| (votes, slot))?;
        let mut peers: Vec<(Score, u64, PeerId)> = ahead
            .into_iter()
            .filter(|&(_, finalized, _)| finalized >= slot)
            .collect();
        peers.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        Some(FinalizedTarget {
            slot,
            votes,
            peers: peers
                .into_iter()
                .take(count)
                .map(|(_, _, peer)| peer)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn peer(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    fn record(index: u8, head_slot: u64, finalized_slot: u64) -> PeerRecord {
        PeerRecord {
            peer: peer(index),
            conn: ConnId(u64::from(index)),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, index)), 9000),
            direction: Direction::Outbound,
            connected_at: Instant::ZERO,
            status: Some(ChainStatus {
                head_slot,
                finalized_slot,
            }),
        }
    }

    fn scores(pairs: &[(u8, i64)]) -> impl Fn(&PeerId) -> Score {
        let map: BTreeMap<PeerId, Score> = pairs
            .iter()
            .map(|&(index, points)| (peer(index), Score::from_points(points)))
            .collect();
        move |peer| map.get(peer).copied().unwrap_or(Score::ZERO)
    }

    #[test]
    fn best_peers_are_ahead_healthy_and_ordered() {
        let mut table = PeerTable::new();
        table.insert(record(1, 110, 90));
        table.insert(record(2, 120, 90));
        table.insert(record(3, 130, 90)); // Negative score: skipped.
        table.insert(record(4, 100, 90)); // Not ahead: skipped.
        table.insert(record(5, 120, 90));
        table.insert(record(6, 200, 90));
        let mut unknown = record(7, 0, 0);
        unknown.status = None;
        table.insert(unknown);
        let score = scores(&[(1, 5), (2, 3), (3, -1), (5, 3), (6, 0)]);
        assert_eq!(
            table.best_peers(100, 10, &score),
            vec![peer(1), peer(2), peer(5), peer(6)],
            "score first, then head, then identity"
        );
        assert_eq!(table.best_peers(100, 2, &score), vec![peer(1), peer(2)]);
        assert!(table.best_peers(500, 10, &score).is_empty());
        // Equal scores: the higher head first.
        let flat = scores(&[]);
        assert_eq!(
            table.best_peers(100, 3, &flat),
            vec![peer(6), peer(3), peer(2)]
        );
    }

    #[test]
    fn best_peers_are_deterministic_whatever_the_insertion_order() {
        let build = |order: &[u8]| {
            let mut table = PeerTable::new();
            for &index in order {
                table.insert(record(index, 100 + u64::from(index % 3), 10));
            }
            table
        };
        let flat = scores(&[]);
        let a = build(&[1, 2, 3, 4, 5, 6, 7, 8]).best_peers(50, 8, &flat);
        let b = build(&[8, 6, 4, 2, 7, 5, 3, 1]).best_peers(50, 8, &flat);
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
    }

    #[test]
    fn best_finalized_picks_the_most_common_claim() {
        let mut table = PeerTable::new();
        table.insert(record(1, 200, 64));
        table.insert(record(2, 210, 64));
        table.insert(record(3, 220, 96));
        table.insert(record(4, 9_999, 9_000)); // A lone liar far ahead.
        table.insert(record(5, 100, 32)); // Not ahead of us.
        let flat = scores(&[]);
        let target = table.best_finalized(32, 10, &flat).expect("peers ahead");
        assert_eq!(target.slot, 64);
        assert_eq!(target.votes, 2);
        // Everyone who claims at least 64 can serve it; the liar's score is equal, so
        // higher finalized slots come first.
        assert_eq!(target.peers, vec![peer(4), peer(3), peer(1), peer(2)]);
        // A tie goes to the higher slot.
        table.insert(record(6, 230, 96));
        let target = table.best_finalized(32, 2, &flat).unwrap();
        assert_eq!((target.slot, target.votes), (96, 2));
        assert_eq!(target.peers, vec![peer(4), peer(3)]);
        // Peers with negative scores do not vote.
        let distrusted = scores(&[(3, -1), (6, -1)]);
        assert_eq!(table.best_finalized(32, 10, &distrusted).unwrap().slot, 64);
        assert_eq!(table.best_finalized(9_000, 10, &flat), None);
    }

    #[test]
    fn status_is_checked_and_stored_for_connected_peers_only() {
        let mut table = PeerTable::new();
        table.insert(record(1, 5, 5));
        let good = ChainStatus {
            head_slot: 10,
            finalized_slot: 4,
        };
        assert_eq!(good.check(), Ok(good));
        let bad = ChainStatus {
            head_slot: 3,
            finalized_slot: 4,
        };
        assert_eq!(bad.check(), Err(StatusError { status: bad }));
        assert!(table.set_status(&peer(1), good));
        assert_eq!(table.get(&peer(1)).unwrap().status, Some(good));
        assert!(!table.set_status(&peer(2), good));
    }
}
