//! The node's peer store part: what it loads at start from
//! [`super::Config::known_peers`] and what it hands the driver to keep (see
//! [`crate::peerstore`] for the data and its bounds).
//!
//! # Design
//! The snapshot leaves the core as an action, `Action::PersistPeers`,
//! rather than through a getter the driver calls on its own timer: it is
//! the shape of `Action::Persist` (persistence leaves the core as an
//! action, design.md §1), the core's own timer decides when
//! ([`PEERSTORE_PERSIST_INTERVAL`], [`PEERSTORE_GROWTH_PERSIST_DELAY`] after
//! the table grows or a peer is banned, and at shutdown), so every driver does
//! the same thing at the same instants and the simulator stays
//! deterministic without a timer of its own, and a node whose driver keeps
//! no store (`known_peers: None`) emits nothing, so runs without one are
//! unchanged, action for action.
//!
//! At start, the loaded store is checked as input we did not produce:
//! - records: cut to [`PEERSTORE_RECORDS_MAX`] (most recently seen kept)
//!   before anything is verified, so a huge store costs bounded work; then
//!   each is decoded and its signature verified for our network, and one
//!   that fails, or is ours, is skipped with a WARN. They are remembered
//!   and, when discovery runs, become its candidates, so a node restarted
//!   without bootnodes dials the peers it knew;
//! - scores: decayed over the time since they were taken (the node was
//!   down, but the half-life counts wall time) and given back to the peer
//!   manager;
//! - bans: those already past are dropped, the rest are back in force
//!   until their end.
//!
//! A snapshot folds the routing table's entries (peers we met this run,
//! with when they were last seen) into the remembered records, evicts the
//! least recently seen beyond the bound, and adds the peer manager's
//! scores and bans, every instant turned into Unix milliseconds.

use std::collections::BTreeMap;

use log::warn;

use super::Node;
use crate::discovery::limits::{BUCKETS, BUCKET_ENTRIES_MAX};
use crate::discovery::record::Record;
use crate::identity::PeerId;
use crate::io::Action;
use crate::peer::score::decay;
use crate::peer::{Score, BANNED_IPS_MAX, BANNED_PEERS_MAX, SCORES_MAX};
use crate::peerstore::{
    KnownIpBan, KnownPeerBan, KnownPeers, KnownRecord, KnownScore, PEERSTORE_GROWTH_PERSIST_DELAY,
    PEERSTORE_PERSIST_INTERVAL, PEERSTORE_RECORDS_MAX,
};
use crate::time::{Duration, Instant};

// A full routing table fits in the store: no entry we met is forgotten
// while the table still holds it.
const _: () = assert!(PEERSTORE_RECORDS_MAX >= BUCKETS * BUCKET_ENTRIES_MAX);

/// The peer store part: the records we remember and when we next persist.
pub(super) struct PeerStorePart {
    /// Records of peers we met, this run or an earlier one, with when each
    /// was last seen (Unix ms). At most [`PEERSTORE_RECORDS_MAX`].
    records: BTreeMap<PeerId, (Record, u64)>,
    /// When the next snapshot is due.
    next_persist: Instant,
    /// Routing-table entries at the last snapshot: growth past it brings
    /// the next one forward ([`PEERSTORE_GROWTH_PERSIST_DELAY`]).
    table_entries_persisted: usize,
    /// Bans made this run at the last snapshot: a new one brings the next
    /// forward the same way, so a node killed within a minute of a ban
    /// still refuses the banned peer when it comes back.
    bans_persisted: u64,
}

impl PeerStorePart {
    /// An empty part; the first snapshot is due one interval after `now`.
    pub(super) fn new(now: Instant) -> PeerStorePart {
        PeerStorePart {
            records: BTreeMap::new(),
            next_persist: now + PEERSTORE_PERSIST_INTERVAL,
            table_entries_persisted: 0,
            bans_persisted: 0,
        }
    }

    /// Remembers `record`, seen at `seen_unix_ms`: a newer record replaces
    /// an older one, and the later sighting is kept.
    fn remember(&mut self, record: Record, seen_unix_ms: u64) {
        match self.records.get_mut(&record.peer()) {
            Some((kept, last_seen)) => {
                if record.supersedes(kept) {
                    *kept = record;
                }
                *last_seen = (*last_seen).max(seen_unix_ms);
            }
            None => {
                self.records.insert(record.peer(), (record, seen_unix_ms));
            }
        }
    }

    /// Evicts the least recently seen records beyond the bound (ties: by
    /// `PeerId`); returns how many went.
    fn trim(&mut self) -> usize {
        let excess = self.records.len().saturating_sub(PEERSTORE_RECORDS_MAX);
        if excess == 0 {
            return 0;
        }
        let mut by_age: Vec<(u64, PeerId)> = self
            .records
            .iter()
            .map(|(peer, (_, seen))| (*seen, *peer))
            .collect();
        by_age.sort_unstable();
        for (_, peer) in by_age.into_iter().take(excess) {
            self.records.remove(&peer);
        }
        excess
    }

    /// The records, most recently seen first (ties: by `PeerId`).
    fn known_records(&self) -> Vec<KnownRecord> {
        let mut records: Vec<(u64, PeerId, &Record)> = self
            .records
            .iter()
            .map(|(peer, (record, seen))| (*seen, *peer, record))
            .collect();
        records.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        records
            .into_iter()
            .map(|(seen, _, record)| KnownRecord {
                record: record.encode(),
                last_seen_unix_ms: seen,
            })
            .collect()
    }

    /// Records remembered.
    pub(super) fn record_count(&self) -> usize {
        self.records.len()
    }
}

impl Node {
    /// Takes back what the driver's peer store held (see the module doc).
    pub(super) fn load_known_peers(&mut self, now: Instant, mut known: KnownPeers) {
        let mut part = PeerStorePart::new(now);
        let origin_ms = self.unix_ms_at_origin();
        let now_ms = origin_ms.saturating_add(now.as_millis());
        let network_id = self.config.network_id;
        let local = self.peer_id();

        if known.records.len() > PEERSTORE_RECORDS_MAX {
            warn!(
                "peer store: {} records, keeping the {PEERSTORE_RECORDS_MAX} seen last",
                known.records.len()
            );
            known
                .records
                .sort_by_key(|known| std::cmp::Reverse(known.last_seen_unix_ms));
            known.records.truncate(PEERSTORE_RECORDS_MAX);
        }
        let mut refused = 0usize;
        for stored in &known.records {
            match Record::decode(&stored.record, network_id) {
                Ok(record) if record.peer() != local => {
                    part.remember(record, stored.last_seen_unix_ms.min(now_ms))
                }
                Ok(_) => refused += 1,
                Err(error) => {
                    refused += 1;
                    log::debug!("peer store: record refused: {error}");
                }
            }
        }
        if refused > 0 {
            warn!("peer store: skipped {refused} records that are invalid, of another network or ours");
        }

        let half_life = self.config.peer.score_half_life;
        if known.scores.len() > SCORES_MAX {
            warn!(
                "peer store: {} scores, keeping {SCORES_MAX}",
                known.scores.len()
            );
        }
        for stored in known.scores.iter().take(SCORES_MAX) {
            let elapsed_ms = now_ms.saturating_sub(stored.at_unix_ms);
            let score = decay(
                Score::from_micropoints(stored.score_micropoints),
                Duration::from_millis(elapsed_ms),
                half_life,
            );
            self.peer_manager
                .restore_score(now, stored.peer, score, stored.last_ip);
        }

        let instant_of = |unix_ms: u64| {
            Instant::from_micros(unix_ms.saturating_sub(origin_ms).saturating_mul(1_000))
        };
        let mut expired = 0usize;
        if known.peer_bans.len() > BANNED_PEERS_MAX || known.ip_bans.len() > BANNED_IPS_MAX {
            warn!(
                "peer store: {} peer bans and {} IP bans, keeping {BANNED_PEERS_MAX} and {BANNED_IPS_MAX}",
                known.peer_bans.len(),
                known.ip_bans.len()
            );
        }
        for ban in known.peer_bans.iter().take(BANNED_PEERS_MAX) {
            if ban.until_unix_ms <= now_ms {
                expired += 1;
                continue;
            }
            // Nothing is connected yet: bans lifted to make room need no action.
            let _ = self.peer_manager.restore_peer_ban(
                now,
                ban.peer,
                ban.ip,
                instant_of(ban.until_unix_ms),
            );
        }
        for ban in known.ip_bans.iter().take(BANNED_IPS_MAX) {
            if ban.until_unix_ms <= now_ms {
                expired += 1;
                continue;
            }
            let _ = self
                .peer_manager
                .restore_ip_ban(now, ban.ip, instant_of(ban.until_unix_ms));
        }
        log::info!(
            "peer store: {} records, {} scores, {} peer bans and {} IP bans loaded ({expired} bans had ended)",
            part.record_count(),
            known.scores.len().min(SCORES_MAX),
            self.peer_manager.banned_peer_count(),
            self.peer_manager.banned_ip_count(),
        );

        if let Some(discovery) = self.discovery.as_mut() {
            // Least recently seen first: the candidate set evicts the
            // oldest arrival, so the most recently seen stay.
            let mut records: Vec<(u64, PeerId, Record)> = part
                .records
                .iter()
                .map(|(peer, (record, seen))| (*seen, *peer, record.clone()))
                .collect();
            records.sort_unstable_by_key(|(seen, peer, _)| (*seen, *peer));
            let records = records.into_iter().map(|(_, _, record)| record).collect();
            discovery.add_known(now, records);
        }
        self.peerstore = Some(part);
    }

    /// What the peer store should hold now, or `None` if the driver keeps
    /// no store. Folds the routing table into the remembered records.
    pub(super) fn known_peers(&mut self, now: Instant) -> Option<KnownPeers> {
        let origin_ms = self.unix_ms_at_origin();
        let unix_ms = |at: Instant| origin_ms.saturating_add(at.as_millis());
        let entries: Vec<(Record, u64)> = self
            .discovery()
            .map(|machine| {
                machine
                    .table()
                    .entries()
                    .map(|entry| (entry.record.clone(), unix_ms(entry.last_seen)))
                    .collect()
            })
            .unwrap_or_default();
        let (scores, peer_bans, ip_bans) = self.peer_manager.snapshot(now);
        let part = self.peerstore.as_mut()?;
        for (record, seen) in entries {
            part.remember(record, seen);
        }
        part.trim();
        let now_ms = unix_ms(now);
        Some(KnownPeers {
            records: part.known_records(),
            scores: scores
                .into_iter()
                .map(|(peer, score, last_ip)| KnownScore {
                    peer,
                    score_micropoints: score.as_micropoints(),
                    at_unix_ms: now_ms,
                    last_ip,
                })
                .collect(),
            peer_bans: peer_bans
                .into_iter()
                .map(|(peer, ip, until)| KnownPeerBan {
                    peer,
                    ip,
                    until_unix_ms: unix_ms(until),
                })
                .collect(),
            ip_bans: ip_bans
                .into_iter()
                .map(|(ip, until)| KnownIpBan {
                    ip,
                    until_unix_ms: unix_ms(until),
                })
                .collect(),
        })
    }

    /// Hands the driver a snapshot, if it keeps a store.
    pub(super) fn persist_known_peers(&mut self, now: Instant) {
        if let Some(known) = self.known_peers(now) {
            self.out.push(Action::PersistPeers(known));
        }
    }

    /// Persists when due.
    pub(super) fn peerstore_tick(&mut self, now: Instant) {
        let entries = self.table_entries();
        let Some(part) = self.peerstore.as_mut() else {
            return;
        };
        if now < part.next_persist {
            return;
        }
        part.next_persist = now + PEERSTORE_PERSIST_INTERVAL;
        part.table_entries_persisted = entries;
        part.bans_persisted = self.out.counters.peers_banned;
        self.persist_known_peers(now);
    }

    /// Brings the next snapshot forward when the routing table has grown
    /// or a peer was banned since the last one (see
    /// [`PEERSTORE_GROWTH_PERSIST_DELAY`]).
    pub(super) fn peerstore_watch_growth(&mut self, now: Instant) {
        let entries = self.table_entries();
        let bans = self.out.counters.peers_banned;
        let Some(part) = self.peerstore.as_mut() else {
            return;
        };
        if entries > part.table_entries_persisted || bans > part.bans_persisted {
            part.next_persist = part
                .next_persist
                .min(now.saturating_add(PEERSTORE_GROWTH_PERSIST_DELAY));
        }
    }

    fn table_entries(&self) -> usize {
        self.discovery().map_or(0, |found| found.table().len())
    }

    /// When the next snapshot is due, if the driver keeps a store.
    pub(super) fn peerstore_deadline(&self) -> Option<Instant> {
        self.peerstore.as_ref().map(|part| part.next_persist)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::identity::Identity;

    fn record(seed: u64) -> Record {
        Record::sign(
            &Identity::from_seed(seed),
            1,
            1,
            &[SocketAddr::from(([20, 0, 0, 1], 9000))],
        )
    }

    #[test]
    fn the_least_recently_seen_records_are_evicted_first() {
        let mut part = PeerStorePart::new(Instant::ZERO);
        let count = PEERSTORE_RECORDS_MAX as u64 + 3;
        // Seen in reverse seed order: seeds count, count-1, count-2 are oldest.
        for seed in 1..=count {
            part.remember(record(seed), 1_000 + count - seed);
        }
        assert_eq!(part.trim(), 3);
        assert_eq!(part.record_count(), PEERSTORE_RECORDS_MAX);
        for seed in count - 2..=count {
            assert!(!part.records.contains_key(&record(seed).peer()));
        }
        // A later sighting is kept; an older one does not move it back.
        let peer = record(1).peer();
        part.remember(record(1), 5);
        assert_eq!(part.records[&peer].1, 1_000 + count - 1);
        assert_eq!(part.trim(), 0);
        let known = part.known_records();
        assert_eq!(known.len(), PEERSTORE_RECORDS_MAX);
        assert!(known
            .windows(2)
            .all(|pair| pair[0].last_seen_unix_ms >= pair[1].last_seen_unix_ms));
    }
}
