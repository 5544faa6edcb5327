//! Inbound RPC handling: subscriptions, messages awaiting validation and the
//! application's verdict, and the control messages GRAFT, PRUNE, IHAVE, IWANT
//! and IDONTWANT.

use std::collections::BTreeSet;

use super::cache::{Seen, SeenState};
use super::config::{
    CONTROL_ALLOWANCE_SLACK_FACTOR, DELIVERERS_PER_MESSAGE_MAX, GOSSIP_RETRANSMISSIONS_MAX,
    IDONTWANT_BYTES_MIN, IDONTWANT_IDS_PER_PEER_MAX, IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX,
    IDONTWANT_TTL, IHAVE_IDS_PER_PEER_PER_HEARTBEAT_MAX, IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX,
    IWANT_FOLLOWUP_TIME, IWANT_IDS_ANSWERED_PER_PEER_PER_HEARTBEAT_MAX,
    IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX, PEER_TOPICS_MAX, PROMISES_MAX, PRUNE_BACKOFF_SECS_MAX,
    VALIDATION_PENDING_BYTES_MAX, VALIDATION_PENDING_MAX,
};
use super::events::{GossipEvent, Misbehaviour, Validation};
use super::queue::Item;
use super::Gossip;
use crate::gossip::score::{GOSSIP_THRESHOLD, GRAYLIST_THRESHOLD, MESH_MESSAGE_DELIVERIES_WINDOW};
use crate::gossip::wire::{Control, MessageId, Rpc, Subscription, Topic, WireMessage};
use crate::identity::PeerId;
use crate::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) message: WireMessage,
    pub(super) received: Instant,
}

impl Gossip {
    /// Handles one RPC (a logical message of kind 32) from `peer`. What it
    /// leads to (messages to validate, penalties) is queued for
    /// [`Gossip::poll_event`].
    pub fn handle_rpc(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        self.advance(now);
        if let Some(p) = self.peers.get(&peer) {
            if self.score_of_peer(now, p) < GRAYLIST_THRESHOLD {
                self.counters.rpcs_graylisted += 1;
                self.push_event(GossipEvent::Graylisted { peer });
            } else {
                match Rpc::decode(bytes) {
                    Ok(rpc) => {
                        self.counters.rpcs_received += 1;
                        self.apply_rpc(now, peer, rpc);
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
    }

    /// Applies a decoded RPC: subscriptions, then messages, then control.
    fn apply_rpc(&mut self, now: Instant, peer: PeerId, rpc: Rpc) {
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
        if let Some(id) = self.held_copy_of(&message) {
            // A copy of a large message we hold, known by its bytes: no
            // need to decompress and hash it to learn its id. (An abandoned
            // one is judged anew below, which needs its payload.)
            let abandoned = self
                .seen
                .get(&id)
                .is_some_and(|seen| seen.state == SeenState::Abandoned);
            if !abandoned && self.seen.contains_key(&id) {
                self.promises.remove(&id);
                self.on_copy(now, peer, &id, &message.topic);
                return;
            }
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
        if !retried && self.seen.contains_key(&id) {
            self.on_copy(now, peer, &id, &message.topic);
            return;
        }
        if self.pending.contains_key(&id) {
            // Only possible if the seen cache overflowed while it was pending.
            self.counters.duplicates += 1;
            if let Some(counts) = self.counters.topics.get_mut(&message.topic) {
                counts.duplicates += 1;
            }
            return;
        }
        self.counters.messages_received += 1;
        if let Some(counts) = self.counters.topics.get_mut(&message.topic) {
            counts.received += 1;
        }
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
        self.known_frames.remember(&message.frame, id);
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

    /// The id of `message` if it is, byte for byte and on the same topic,
    /// a large frame we hold (awaiting a verdict or in the message cache).
    pub(super) fn held_copy_of(&self, message: &WireMessage) -> Option<MessageId> {
        let id = self.known_frames.candidate(&message.frame)?;
        let held = self
            .pending
            .get(&id)
            .map(|pending| &pending.message)
            .or_else(|| self.mcache.entries.get(&id).map(|entry| &entry.message))?;
        (held.topic == message.topic && held.frame[..] == message.frame[..]).then_some(id)
    }

    /// Another copy of `id`, which we have seen: counted, and credited or
    /// charged to `peer` by what became of the first.
    fn on_copy(&mut self, now: Instant, peer: PeerId, id: &MessageId, topic: &Topic) {
        self.counters.duplicates += 1;
        if let Some(counts) = self.counters.topics.get_mut(topic) {
            counts.duplicates += 1;
        }
        let Some(seen) = self.seen.get_mut(id) else {
            return;
        };
        match seen.state {
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
                        p.stats.mesh_delivery(topic);
                    }
                }
            }
            SeenState::Rejected => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.stats.invalid_delivery(topic);
                }
            }
            SeenState::Ignored | SeenState::Own | SeenState::Abandoned => {}
        }
    }

    pub(super) fn drop_pending(&mut self, id: &MessageId) {
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
            log::debug!("{peer:?}: GRAFT on {topic:?} during its backoff: penalised and pruned");
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
            log::debug!(
                "{peer:?}: GRAFT on {topic:?} refused (score {score:.2}, subscribed {subscribed}, mesh full {full}, outbound {outbound})"
            );
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
        log::debug!("{peer:?}: PRUNE on {topic:?} asking a {backoff_secs} s backoff");
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
        if let Some(counts) = self.counters.topics.get_mut(&topic) {
            match verdict {
                Validation::Accept => counts.accepted += 1,
                Validation::Reject => counts.rejected += 1,
                Validation::Ignore => counts.ignored += 1,
            }
        }
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
}
