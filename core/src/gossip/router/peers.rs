//! Peers coming and going: the state kept per connected peer, scores
//! retained across reconnects, and each peer's gossip score.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use super::config::{GOSSIP_PEERS_MAX, RETAINED_SCORES_MAX, SCORE_RETENTION};
use super::queue::Item;
use super::Gossip;
use crate::gossip::score::{expected_mesh_deliveries, PeerStats};
use crate::gossip::wire::{MessageId, Subscription, Topic};
use crate::identity::PeerId;
use crate::time::Instant;

#[derive(Debug)]
pub(super) struct Peer {
    pub(super) outbound: bool,
    pub(super) ip: IpAddr,
    pub(super) topics: BTreeSet<Topic>,
    pub(super) stats: PeerStats,
    pub(super) control_queue: VecDeque<Item>,
    pub(super) gossip_queue: VecDeque<Item>,
    pub(super) queued_bytes: usize,
    /// Gossip dropped from a full queue since it last drained.
    pub(super) gossip_drops: u32,
    pub(super) slow_reported: bool,
    pub(super) dont_want: BTreeMap<MessageId, Instant>,
    pub(super) dont_want_order: VecDeque<(Instant, MessageId)>,
    pub(super) ihave_received: usize,
    pub(super) iwant_asked: usize,
    pub(super) ihave_ids_sent: usize,
    /// Ids in the IHAVEs it sent this heartbeat.
    pub(super) ihave_ids_received: usize,
    /// Ids in the IWANTs it sent this heartbeat.
    pub(super) iwant_ids_received: usize,
    /// Ids in the IDONTWANTs it sent this heartbeat.
    pub(super) idontwant_ids_received: usize,
    /// Whether it already paid for control flooding this heartbeat.
    pub(super) control_flood_reported: bool,
    /// `fault_prune_flood` only: whether we already GRAFTed it, and PRUNEd it.
    pub(super) prune_flood_grafted: bool,
    pub(super) prune_flooded: bool,
    /// GRAFTs from it we refused because they came inside a backoff.
    pub(super) grafts_refused_in_backoff: u32,
}

impl Peer {
    pub(super) fn queued_items(&self) -> usize {
        self.control_queue.len() + self.gossip_queue.len()
    }
}

impl Gossip {
    /// `peer` is connected (`outbound`: we dialled it) from `ip`. We announce
    /// our subscriptions to it. A peer past [`GOSSIP_PEERS_MAX`], or one
    /// already connected, is ignored.
    pub fn handle_peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        outbound: bool,
        ip: IpAddr,
    ) {
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
    pub fn handle_peer_disconnected(&mut self, now: Instant, peer: &PeerId) {
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

    pub(super) fn expected(&self, topic: &Topic) -> f64 {
        expected_mesh_deliveries(self.topic_deliveries.get(topic).copied().unwrap_or(0.0))
    }

    pub(super) fn score_of_peer(&self, now: Instant, p: &Peer) -> f64 {
        let on_ip = if p.ip.is_loopback() || self.config.ip_colocation_exempt.contains(&p.ip) {
            0
        } else {
            self.peers_per_ip.get(&p.ip).copied().unwrap_or(0)
        };
        p.stats.score(now, on_ip, |topic| self.expected(topic))
    }

    pub(super) fn scores(&self, now: Instant) -> BTreeMap<PeerId, f64> {
        self.peers
            .iter()
            .map(|(id, p)| (*id, self.score_of_peer(now, p)))
            .collect()
    }

    pub(super) fn peers_in_topic(&self, topic: &Topic) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.topics.contains(topic))
            .map(|(id, _)| *id)
            .collect()
    }
}
