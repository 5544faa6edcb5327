//! Mesh upkeep at the heartbeat: expiry, score decay, GRAFT and PRUNE with
//! backoff, opportunistic grafting, the fanout, and IHAVE gossip.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{
    BACKOFFS_MAX, GOSSIP_FACTOR_PERCENT, IHAVE_IDS_PER_MESSAGE_MAX,
    IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX, MESH_N_SCORE, MESH_OUTBOUND_MIN,
    OPPORTUNISTIC_GRAFT_HEARTBEATS, OPPORTUNISTIC_GRAFT_PEERS, VALIDATION_TIMEOUT,
};
use super::events::{GossipEvent, Misbehaviour};
use super::peers::Peer;
use super::queue::Item;
use super::Gossip;
use crate::gossip::score::decayed;
use crate::gossip::score::{
    GOSSIP_THRESHOLD, MESH_MESSAGE_DELIVERIES_DECAY, OPPORTUNISTIC_GRAFT_THRESHOLD,
    PUBLISH_THRESHOLD,
};
use crate::gossip::wire::{Control, MessageId, Topic};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::Instant;

impl Machine for Gossip {
    /// Mesh maintenance, gossip emission and every expiry. A call before
    /// [`Machine::next_deadline`] is a no-op.
    fn handle_timeout(&mut self, now: Instant) {
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

    /// When the heartbeat is due next.
    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_heartbeat)
    }
}

impl Gossip {
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
                log::debug!(
                    "{peer:?}: pruned from the mesh of {topic:?}: score {:?}",
                    scores.get(peer)
                );
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

    pub(super) fn set_backoff(&mut self, topic: Topic, peer: PeerId, until: Instant) {
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

    pub(super) fn graft(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
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

    pub(super) fn prune(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        if let Some(mesh) = self.mesh.get_mut(topic) {
            mesh.remove(&peer);
        }
        let expected = self.expected(topic);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.prune(now, topic, expected);
        }
        self.send_prune(now, topic, peer);
    }

    pub(super) fn send_prune(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
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

    pub(super) fn graftable(
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
}
