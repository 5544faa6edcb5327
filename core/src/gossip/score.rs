//! Gossipsub v1.1 peer scores, simplified but faithful.
//!
//! # Design
//! A peer's score is a sum of weighted counters (the v1.1 spec's P1..P7):
//!
//! ```text
//! score = Σ over our topics ( TOPIC_WEIGHT · (
//!             TIME_IN_MESH_WEIGHT · min(seconds in mesh, TIME_IN_MESH_CAP_SECS)       P1
//!           + FIRST_MESSAGE_DELIVERIES_WEIGHT · first deliveries (capped, decaying)   P2
//!           + MESH_MESSAGE_DELIVERIES_WEIGHT · deficit²  (after activation)           P3
//!           + MESH_FAILURE_PENALTY_WEIGHT · failure penalty (deficit² at prune)       P3b
//!           + INVALID_MESSAGE_DELIVERIES_WEIGHT · invalid²))                          P4
//!       + APPLICATION_SCORE_WEIGHT · the peer manager's score                         P5
//!       + IP_COLOCATION_FACTOR_WEIGHT · max(0, peers on its IP − threshold)²          P6
//!       + BEHAVIOUR_PENALTY_WEIGHT · max(0, penalty − threshold)²                     P7
//! ```
//!
//! Counters decay once per heartbeat by a constant factor and are zeroed
//! below [`SCORE_DECAY_TO_ZERO`].
//!
//! One deliberate deviation: the mesh delivery threshold of a topic is
//! `min(MESH_MESSAGE_DELIVERIES_THRESHOLD, MESH_MESSAGE_DELIVERIES_SHARE ·
//! the topic's own recent deliveries)`. With a fixed threshold a quiet topic
//! penalises every mesh peer for messages nobody sent, and the heartbeat then
//! prunes its whole mesh; here a quiet topic expects nothing.
//!
//! Scores are `f64`, computed only with `+`, `−`, `·`, `/` and comparisons.
//! IEEE 754 rounds each of these exactly the same way on every platform and
//! Rust never fuses them into FMA on its own, so the results are bit-identical
//! everywhere (no `exp`, `powf` or other libm function is used, whose
//! rounding differs between platforms). The simulator's trace hash may
//! therefore depend on scores.
//!
//! # Security
//! Provided: invalid messages (squared) and protocol misbehaviour (squared)
//! push a peer quickly below the graylist threshold; Sybils on one IP lose
//! score quadratically; positive counters are capped so good behaviour cannot
//! bank unlimited credit.
//! Not provided: a peer that reconnects starts afresh unless the router
//! retains its stats (it does, for [`super::router::SCORE_RETENTION`]).
//!
//! # Limits
//! One [`TopicStats`] per topic we are subscribed to, per peer (bounded by
//! the router's topic cap).

use std::collections::BTreeMap;

use super::wire::Topic;
use crate::time::{Duration, Instant};

/// Weight of every topic's part of the score (one set of topic parameters for all topics).
pub const TOPIC_WEIGHT: f64 = 1.0;
/// P1: points per second a peer has been in our mesh for a topic.
pub const TIME_IN_MESH_WEIGHT: f64 = 0.01;
/// P1: seconds in mesh beyond which no more credit is given (so P1 ≤ 10 points).
pub const TIME_IN_MESH_CAP_SECS: f64 = 1_000.0;
/// P2: points per message the peer delivered to us first.
pub const FIRST_MESSAGE_DELIVERIES_WEIGHT: f64 = 1.0;
/// P2: decay factor per heartbeat (half-life about 69 heartbeats, 48 s).
pub const FIRST_MESSAGE_DELIVERIES_DECAY: f64 = 0.99;
/// P2: the counter's cap (so P2 ≤ 20 points).
pub const FIRST_MESSAGE_DELIVERIES_CAP: f64 = 20.0;
/// P3: weight of the squared deficit of mesh deliveries (negative).
pub const MESH_MESSAGE_DELIVERIES_WEIGHT: f64 = -1.0;
/// P3: decay factor per heartbeat (half-life about 23 heartbeats, 16 s).
pub const MESH_MESSAGE_DELIVERIES_DECAY: f64 = 0.97;
/// P3: the counter's cap.
pub const MESH_MESSAGE_DELIVERIES_CAP: f64 = 10.0;
/// P3: deliveries (decayed) a mesh peer is expected to make at most.
pub const MESH_MESSAGE_DELIVERIES_THRESHOLD: f64 = 2.0;
/// P3: share of the topic's own decayed delivery count a mesh peer is
/// expected to deliver, when that is below the threshold.
pub const MESH_MESSAGE_DELIVERIES_SHARE: f64 = 0.25;
/// P3: a copy from a mesh peer this long after the first still counts as a delivery.
pub const MESH_MESSAGE_DELIVERIES_WINDOW: Duration = Duration::from_secs(2);
/// P3: a peer's deficit counts only once it has been in the mesh this long.
pub const MESH_MESSAGE_DELIVERIES_ACTIVATION: Duration = Duration::from_secs(10);
/// P3b: weight of the sticky penalty (the squared deficit when a peer is pruned).
pub const MESH_FAILURE_PENALTY_WEIGHT: f64 = -1.0;
/// P3b: decay factor per heartbeat.
pub const MESH_FAILURE_PENALTY_DECAY: f64 = 0.97;
/// P4: weight of the squared count of invalid messages: three reach the graylist.
pub const INVALID_MESSAGE_DELIVERIES_WEIGHT: f64 = -10.0;
/// P4: decay factor per heartbeat (half-life about 69 heartbeats, 48 s).
pub const INVALID_MESSAGE_DELIVERIES_DECAY: f64 = 0.99;
/// P5: weight of the application's score (the peer manager's, in points, −100..=100).
pub const APPLICATION_SCORE_WEIGHT: f64 = 1.0;
/// P6: weight of the squared surplus of peers on one IP.
pub const IP_COLOCATION_FACTOR_WEIGHT: f64 = -10.0;
/// P6: peers on one IP that cost nothing.
pub const IP_COLOCATION_FACTOR_THRESHOLD: usize = 3;
/// P7: weight of the squared behaviour penalty (broken promises, GRAFT in backoff, ...).
pub const BEHAVIOUR_PENALTY_WEIGHT: f64 = -1.0;
/// P7: penalty that costs nothing (honest peers' clocks and races).
pub const BEHAVIOUR_PENALTY_THRESHOLD: f64 = 1.0;
/// P7: decay factor per heartbeat.
pub const BEHAVIOUR_PENALTY_DECAY: f64 = 0.99;
/// Counters that decay below this are zeroed.
pub const SCORE_DECAY_TO_ZERO: f64 = 0.01;

/// Below this, we neither gossip to the peer nor accept its gossip (IHAVE/IWANT).
pub const GOSSIP_THRESHOLD: f64 = -10.0;
/// Below this, we do not flood-publish our own messages to the peer.
pub const PUBLISH_THRESHOLD: f64 = -50.0;
/// Below this, every RPC from the peer is dropped unread.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// At or above this, peer exchange from the peer would be accepted (peer
/// exchange is not carried on our wire yet: we know no addresses from ids).
pub const ACCEPT_PX_THRESHOLD: f64 = 10.0;
/// When the median score of a mesh falls below this, the heartbeat grafts
/// peers scoring above the median (opportunistic grafting).
pub const OPPORTUNISTIC_GRAFT_THRESHOLD: f64 = 1.0;

const _: () = assert!(GRAYLIST_THRESHOLD < PUBLISH_THRESHOLD);
const _: () = assert!(PUBLISH_THRESHOLD < GOSSIP_THRESHOLD);
const _: () = assert!(GOSSIP_THRESHOLD < 0.0);
const _: () = assert!(0.0 <= OPPORTUNISTIC_GRAFT_THRESHOLD);
const _: () = assert!(OPPORTUNISTIC_GRAFT_THRESHOLD <= ACCEPT_PX_THRESHOLD);

/// What we know of one peer's behaviour in one of our topics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicStats {
    /// When it joined our mesh for the topic, if it is in it.
    pub mesh_since: Option<Instant>,
    /// P2: messages it delivered first (decaying, capped).
    pub first_deliveries: f64,
    /// P3: messages it delivered while in the mesh, first or within the window.
    pub mesh_deliveries: f64,
    /// P3b: the sticky penalty from prunes with a deficit.
    pub mesh_failure_penalty: f64,
    /// P4: invalid messages it delivered.
    pub invalid_deliveries: f64,
}

/// What we know of one peer, across topics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerStats {
    /// Per topic we are subscribed to.
    pub topics: BTreeMap<Topic, TopicStats>,
    /// P5: the application's score, in points.
    pub application_score: f64,
    /// P7: the behaviour penalty counter.
    pub behaviour_penalty: f64,
}

impl PeerStats {
    /// The score at `now`, given how many peers share its IP (itself
    /// included; 0 when the IP is exempt) and the expected mesh deliveries of
    /// each topic.
    pub fn score(
        &self,
        now: Instant,
        peers_on_ip: usize,
        expected_deliveries: impl Fn(&Topic) -> f64,
    ) -> f64 {
        let mut score = 0.0;
        for (topic, stats) in &self.topics {
            let mut topic_score = 0.0;
            if let Some(since) = stats.mesh_since {
                let in_mesh = now.saturating_duration_since(since);
                let secs = in_mesh.as_millis() as f64 / 1_000.0;
                topic_score += TIME_IN_MESH_WEIGHT * secs.min(TIME_IN_MESH_CAP_SECS);
                if in_mesh >= MESH_MESSAGE_DELIVERIES_ACTIVATION {
                    let expected = expected_deliveries(topic);
                    if stats.mesh_deliveries < expected {
                        let deficit = expected - stats.mesh_deliveries;
                        topic_score += MESH_MESSAGE_DELIVERIES_WEIGHT * deficit * deficit;
                    }
                }
            }
            topic_score += FIRST_MESSAGE_DELIVERIES_WEIGHT * stats.first_deliveries;
            topic_score += MESH_FAILURE_PENALTY_WEIGHT * stats.mesh_failure_penalty;
            topic_score += INVALID_MESSAGE_DELIVERIES_WEIGHT
                * stats.invalid_deliveries
                * stats.invalid_deliveries;
            score += TOPIC_WEIGHT * topic_score;
        }
        score += APPLICATION_SCORE_WEIGHT * self.application_score;
        if peers_on_ip > IP_COLOCATION_FACTOR_THRESHOLD {
            let surplus = (peers_on_ip - IP_COLOCATION_FACTOR_THRESHOLD) as f64;
            score += IP_COLOCATION_FACTOR_WEIGHT * surplus * surplus;
        }
        if self.behaviour_penalty > BEHAVIOUR_PENALTY_THRESHOLD {
            let excess = self.behaviour_penalty - BEHAVIOUR_PENALTY_THRESHOLD;
            score += BEHAVIOUR_PENALTY_WEIGHT * excess * excess;
        }
        score
    }

    /// One heartbeat of decay.
    pub fn decay(&mut self) {
        for stats in self.topics.values_mut() {
            stats.first_deliveries =
                decayed(stats.first_deliveries, FIRST_MESSAGE_DELIVERIES_DECAY);
            stats.mesh_deliveries = decayed(stats.mesh_deliveries, MESH_MESSAGE_DELIVERIES_DECAY);
            stats.mesh_failure_penalty =
                decayed(stats.mesh_failure_penalty, MESH_FAILURE_PENALTY_DECAY);
            stats.invalid_deliveries =
                decayed(stats.invalid_deliveries, INVALID_MESSAGE_DELIVERIES_DECAY);
        }
        self.behaviour_penalty = decayed(self.behaviour_penalty, BEHAVIOUR_PENALTY_DECAY);
    }

    /// Whether nothing is remembered that a reconnecting peer could shed.
    pub fn is_neutral(&self) -> bool {
        self.behaviour_penalty == 0.0
            && self
                .topics
                .values()
                .all(|stats| stats.invalid_deliveries == 0.0 && stats.mesh_failure_penalty == 0.0)
    }

    /// The peer delivered a message of `topic` first.
    pub fn first_delivery(&mut self, topic: &Topic) {
        if let Some(stats) = self.topics.get_mut(topic) {
            stats.first_deliveries =
                (stats.first_deliveries + 1.0).min(FIRST_MESSAGE_DELIVERIES_CAP);
        }
    }

    /// The peer, in our mesh, delivered a message of `topic` (first or in the window).
    pub fn mesh_delivery(&mut self, topic: &Topic) {
        if let Some(stats) = self.topics.get_mut(topic) {
            if stats.mesh_since.is_some() {
                stats.mesh_deliveries =
                    (stats.mesh_deliveries + 1.0).min(MESH_MESSAGE_DELIVERIES_CAP);
            }
        }
    }

    /// The peer delivered a message of `topic` the application rejected.
    pub fn invalid_delivery(&mut self, topic: &Topic) {
        if let Some(stats) = self.topics.get_mut(topic) {
            stats.invalid_deliveries += 1.0;
        }
    }

    /// The peer joined our mesh for `topic`.
    pub fn graft(&mut self, now: Instant, topic: &Topic) {
        if let Some(stats) = self.topics.get_mut(topic) {
            stats.mesh_since = Some(now);
            stats.mesh_deliveries = 0.0;
        }
    }

    /// The peer left our mesh for `topic`: a deficit it had becomes sticky (P3b).
    pub fn prune(&mut self, now: Instant, topic: &Topic, expected: f64) {
        if let Some(stats) = self.topics.get_mut(topic) {
            if let Some(since) = stats.mesh_since.take() {
                let active =
                    now.saturating_duration_since(since) >= MESH_MESSAGE_DELIVERIES_ACTIVATION;
                if active && stats.mesh_deliveries < expected {
                    let deficit = expected - stats.mesh_deliveries;
                    stats.mesh_failure_penalty += deficit * deficit;
                }
            }
        }
    }
}

/// `value · factor`, zeroed below [`SCORE_DECAY_TO_ZERO`].
pub fn decayed(value: f64, factor: f64) -> f64 {
    let next = value * factor;
    if next.abs() < SCORE_DECAY_TO_ZERO {
        0.0
    } else {
        next
    }
}

/// The mesh deliveries expected of a peer in a topic whose own recent
/// (decayed) deliveries are `topic_deliveries`.
pub fn expected_mesh_deliveries(topic_deliveries: f64) -> f64 {
    (MESH_MESSAGE_DELIVERIES_SHARE * topic_deliveries).min(MESH_MESSAGE_DELIVERIES_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_in(topic: &Topic) -> PeerStats {
        let mut stats = PeerStats::default();
        stats.topics.insert(topic.clone(), TopicStats::default());
        stats
    }

    #[test]
    fn three_invalid_messages_reach_the_graylist() {
        let topic = Topic::new("/t").unwrap();
        let mut stats = stats_in(&topic);
        for _ in 0..3 {
            stats.invalid_delivery(&topic);
        }
        let score = stats.score(Instant::ZERO, 1, |_| 0.0);
        assert_eq!(score, -90.0);
        assert!(score < GRAYLIST_THRESHOLD);
    }

    #[test]
    fn positive_counters_are_capped_and_decay_to_zero() {
        let topic = Topic::new("/t").unwrap();
        let mut stats = stats_in(&topic);
        stats.graft(Instant::ZERO, &topic);
        for _ in 0..100 {
            stats.first_delivery(&topic);
        }
        let late = Instant::ZERO + Duration::from_secs(100_000);
        assert_eq!(stats.score(late, 1, |_| 0.0), 10.0 + 20.0);
        for _ in 0..1_000 {
            stats.decay();
        }
        assert_eq!(stats.topics[&topic].first_deliveries, 0.0);
    }

    #[test]
    fn mesh_deficit_counts_after_activation_and_sticks_at_prune() {
        let topic = Topic::new("/t").unwrap();
        let mut stats = stats_in(&topic);
        stats.graft(Instant::ZERO, &topic);
        let early = Instant::ZERO + Duration::from_secs(5);
        assert!(stats.score(early, 1, |_| 2.0) > 0.0);
        let active = Instant::ZERO + Duration::from_secs(10);
        assert_eq!(stats.score(active, 1, |_| 2.0), 0.1 - 4.0);
        stats.prune(active, &topic, 2.0);
        assert_eq!(stats.topics[&topic].mesh_failure_penalty, 4.0);
        assert_eq!(stats.score(active, 1, |_| 2.0), -4.0);
        // A quiet topic expects nothing.
        assert_eq!(expected_mesh_deliveries(0.0), 0.0);
        assert_eq!(
            expected_mesh_deliveries(100.0),
            MESH_MESSAGE_DELIVERIES_THRESHOLD
        );
    }

    #[test]
    fn colocation_and_behaviour_are_squared() {
        let stats = PeerStats {
            behaviour_penalty: 4.0,
            ..PeerStats::default()
        };
        assert_eq!(stats.score(Instant::ZERO, 3, |_| 0.0), -9.0);
        assert_eq!(stats.score(Instant::ZERO, 5, |_| 0.0), -9.0 - 40.0);
    }
}
