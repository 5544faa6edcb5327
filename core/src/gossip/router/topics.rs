//! Topics we join and leave, and the messages we publish (to the mesh, the
//! fanout, or every subscriber with flood publishing).

use std::collections::BTreeSet;

use super::cache::{Seen, SeenState};
use super::config::TOPICS_MAX;
use super::events::{PublishError, SubscribeError};
use super::queue::Item;
use super::Gossip;
use crate::gossip::score::{TopicStats, PUBLISH_THRESHOLD};
use crate::gossip::wire::{
    MessageId, Subscription, Topic, WireMessage, GOSSIP_MESSAGE_BYTES_MAX, RPC_EMPTY_BYTES,
};
use crate::identity::PeerId;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::time::Instant;

#[derive(Debug)]
pub(super) struct Fanout {
    pub(super) peers: BTreeSet<PeerId>,
    pub(super) last_published: Instant,
}

impl Gossip {
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
        self.counters
            .topics
            .insert(topic.clone(), super::TopicCounters::default());
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
        self.counters.topics.remove(topic);
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
    /// peers, kept for [`FANOUT_TTL`](super::FANOUT_TTL) after the last publish) when we are not
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
        self.known_frames.remember(&message.frame, id);
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
}
