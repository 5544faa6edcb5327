//! The node's gossip part, and the glue that connects it to the
//! connections, the peer manager, the chain and the application.
//!
//! # Design
//! `GossipPart` owns the [`crate::gossip::Gossip`] router and the topics the
//! application subscribed to; it reads no other part's state, and what it
//! needs of them (the connections' write windows, the outbox, scores) comes
//! in as arguments. What its events mean for the rest of the node (a block
//! for the chain, a penalty for the peer manager, a disconnect) is decided
//! by the `impl Node` block below it, the node's mediation. This is the
//! shape every glue module takes (see ARCHITECTURE.md, "Adding a protocol").
//!
//! The router is one more pure state machine the node drives, in the same
//! way as the req/resp trackers in `rpc.rs`:
//! - a peer admitted or gone is told to the router (`on_peer_connected`,
//!   `on_peer_disconnected`); logical messages of kind
//!   [`crate::gossip::GOSSIP_KIND`] from accepted peers go to `handle_rpc`;
//! - after every `handle`, the node drains the router's events (new messages
//!   become [`Notification::GossipMessage`], misbehaviour becomes a score
//!   penalty) and then its RPCs, each one logical message to one peer;
//! - the router's heartbeat is folded into `poll_timeout` while the router
//!   has anything to maintain (a topic, a cached, seen or pending message, a
//!   promise, a backoff), so a node that never gossips wakes no more often
//!   than before;
//! - the peer manager's score is the router's application-specific score
//!   (P5): set when a peer is admitted, after every report, and at each
//!   heartbeat (the manager's scores decay with time).
//!
//! # Security
//! What gossip misbehaviour costs a peer with the peer manager (its gossip
//! score has already paid inside the router):
//! - Low (−1): a GRAFT during a backoff, a broken IHAVE promise, more
//!   announced topics than `PEER_TOPICS_MAX`, control over its per-heartbeat
//!   allowance (at most once per heartbeat);
//! - Mid (−5): a message the application rejected (charged to its identity
//!   even when it left before the verdict, as are broken promises);
//! - an RPC or message payload that does not decode is a protocol violation:
//!   Goodbye(fault), close, and High (−10).
//!
//! Backpressure: the driver reports what it has written
//! (`Input::BytesWritten`); while a connection has more than
//! [`crate::limits::GOSSIP_SEND_WINDOW_BYTES`] unwritten, the router gives it
//! control only and its gossip waits in the router's bounded queue, where an
//! IDONTWANT can still cancel it. A queue that keeps overflowing drops gossip
//! first; a peer that drops more than `SLOW_PEER_GOSSIP_DROPS_MAX` messages
//! before catching up, or whose control no longer fits, is disconnected with
//! Goodbye(fault). The driver's `PENDING_SEND_BYTES_MAX` stays the last line.
//!
//! The node-wide window ([`crate::limits::GOSSIP_NODE_WINDOW_BYTES`]) is
//! shared, not owned: each connection counts for at most
//! [`crate::limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX`], and one that has
//! held its full share, or taken none of its waiting bytes, for
//! [`crate::limits::GOSSIP_SLOW_CONNECTION_AFTER`] counts for nothing (its
//! link or reader is the bottleneck, not our uplink), so a peer that stops
//! reading, or a huge answer to one slow peer, holds back only that peer. A
//! connection over its own window that takes none of its waiting bytes for
//! [`crate::limits::WRITE_STALL_TIMEOUT`] is cut: Goodbye(fault) and a Mid
//! penalty to its identity.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use log::{debug, info};

use super::connections::Connections;
use super::outbox::Outbox;
use super::Node;
use crate::gossip::{
    Gossip, GossipEvent, MessageId, Misbehaviour, SendReadiness, Topic, Validation,
};
use crate::identity::PeerId;
use crate::io::{Direction, GoodbyeReason, Notification};
use crate::limits;
use crate::machine::Machine;
use crate::peer::{Penalty, Report};
use crate::time::Instant;

// Our Metadata lists every subscription: the router must never hold more
// topics than a Metadata may list.
const _: () =
    assert!(crate::gossip::router::TOPICS_MAX <= crate::reqresp::limits::METADATA_TOPICS_MAX);

/// The gossip part: the router and the application's topics.
pub(super) struct GossipPart {
    router: Gossip,
    /// The topics the application subscribed to (at most
    /// `gossip::router::TOPICS_MAX`); the blocks topic is the chain's.
    topics: BTreeSet<Topic>,
}

impl GossipPart {
    pub(super) fn new(router: Gossip) -> GossipPart {
        GossipPart {
            router,
            topics: BTreeSet::new(),
        }
    }

    /// The router, for reading.
    pub(super) fn router(&self) -> &Gossip {
        &self.router
    }

    /// The router, for the chain's own topic (subscribe, publish, verdicts
    /// the chain abandons).
    pub(super) fn router_mut(&mut self) -> &mut Gossip {
        &mut self.router
    }

    /// One gossip RPC from accepted `peer`; returns the router's events,
    /// taken all at once: what applying them makes the router queue waits
    /// for the next drain, as it always has.
    pub(super) fn handle_rpc(
        &mut self,
        now: Instant,
        peer: PeerId,
        bytes: &[u8],
        out: &mut Outbox,
    ) -> Vec<GossipEvent> {
        out.counters.gossip_rpcs_received += 1;
        self.router.handle_rpc(now, peer, bytes);
        std::iter::from_fn(|| self.router.poll_event()).collect()
    }

    /// A peer was admitted, with the peer manager's score of it in points.
    pub(super) fn handle_peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        direction: Direction,
        addr: SocketAddr,
        score_points: f64,
    ) {
        let outbound = direction == Direction::Outbound;
        self.router
            .handle_peer_connected(now, peer, outbound, addr.ip());
        self.router.set_application_score(&peer, score_points);
    }

    /// `peer` left: the router drops its state and what it queued for it.
    pub(super) fn handle_peer_disconnected(&mut self, now: Instant, peer: &PeerId) {
        self.router.handle_peer_disconnected(now, peer);
    }

    /// The peer manager's current score of `peer`, as the router's
    /// application-specific score (P5).
    pub(super) fn set_score(&mut self, peer: &PeerId, points: f64) {
        self.router.set_application_score(peer, points);
    }

    /// The router's next event, if any.
    pub(super) fn poll_event(&mut self) -> Option<GossipEvent> {
        self.router.poll_event()
    }

    /// The next RPC to send, to a peer whose connection can take it.
    ///
    /// The node's uplink is one: while it is busy, gossip waits in the
    /// router, where an IDONTWANT can still cancel it. Without this, a
    /// 1 MiB block forwarded to 8 mesh peers is handed over 8 times at
    /// once and the IDONTWANTs arriving a moment later save nothing.
    /// Each connection counts for at most its share, and a slow one
    /// not at all (see `Connections::unwritten_total`): one peer that
    /// stops reading must not silence the others.
    pub(super) fn poll_send(
        &mut self,
        now: Instant,
        conns: &Connections,
    ) -> Option<(PeerId, Vec<u8>)> {
        // Summed over every connection, so only once a peer has gossip
        // waiting, and at most once per call.
        let node_busy = std::cell::OnceCell::new();
        let readiness = |peer: &PeerId| {
            let busy = *node_busy
                .get_or_init(|| conns.unwritten_total(now) >= limits::GOSSIP_NODE_WINDOW_BYTES);
            if !busy && conns.gossip_window_open(peer) {
                SendReadiness::Everything
            } else {
                SendReadiness::ControlOnly
            }
        };
        self.router.poll_send_ready(readiness)
    }

    /// Subscribes the application to `topic`; returns whether its topics
    /// changed (then our Metadata must say so).
    pub(super) fn subscribe(&mut self, now: Instant, topic: Topic, out: &mut Outbox) -> bool {
        match self.router.subscribe(now, topic.clone()) {
            Ok(_) => {
                self.topics.insert(topic);
                true
            }
            Err(error) => {
                debug!("subscribe {topic}: {error:?}");
                out.notify(Notification::SubscribeFailed { topic, error });
                false
            }
        }
    }

    /// Unsubscribes the application from `topic`; returns whether its
    /// topics changed.
    pub(super) fn unsubscribe(&mut self, now: Instant, topic: &Topic) -> bool {
        self.router.unsubscribe(now, topic);
        self.topics.remove(topic)
    }

    /// Every topic the router is subscribed to, the chain's blocks topic
    /// included, as our Metadata lists them: what peers learn from it must
    /// be what we take part in.
    pub(super) fn topic_names(&self) -> Vec<String> {
        self.router
            .subscriptions()
            .map(|topic| topic.as_str().to_string())
            .collect()
    }

    pub(super) fn publish(&mut self, now: Instant, topic: Topic, payload: &[u8], out: &mut Outbox) {
        match self.router.publish(now, topic.clone(), payload) {
            Ok(id) => {
                out.counters.gossip_messages_published += 1;
                debug!("published {id:?} on {topic}");
            }
            Err(error) => {
                out.counters.gossip_publish_failed += 1;
                debug!("publish on {topic}: {error}");
                out.notify(Notification::PublishFailed { topic, error });
            }
        }
    }

    pub(super) fn validate(
        &mut self,
        now: Instant,
        id: MessageId,
        verdict: Validation,
        out: &mut Outbox,
    ) {
        if !self.router.report_validation(now, id, verdict) {
            debug!("verdict on {id:?} ignored: not pending (unknown, judged, or expired)");
            return;
        }
        match verdict {
            Validation::Accept => out.counters.gossip_messages_forwarded += 1,
            Validation::Reject => out.counters.gossip_messages_rejected += 1,
            Validation::Ignore => {}
        }
    }

    /// When the router needs its heartbeat: only while it has something to
    /// maintain. An idle router's heartbeat changes nothing (no mesh, nothing
    /// to expire or gossip), so it is not worth a wake-up.
    pub(super) fn next_deadline(&self, blocks_topic: &Topic) -> Option<Instant> {
        let router = &self.router;
        let idle = self.topics.is_empty()
            && !router.is_subscribed(blocks_topic)
            && router.seen_len() == 0
            && router.pending_len() == 0
            && router.mcache_len() == 0
            && router.promises_len() == 0
            && router.backoffs_len() == 0;
        if idle {
            None
        } else {
            router.next_deadline()
        }
    }

    /// Whether the router's heartbeat is due at `now`.
    pub(super) fn heartbeat_due(&self, now: Instant) -> bool {
        self.router.next_deadline().is_some_and(|at| at <= now)
    }

    /// Runs the router's heartbeat, with the scores of `peers` refreshed first.
    pub(super) fn heartbeat(
        &mut self,
        now: Instant,
        scores: impl IntoIterator<Item = (PeerId, f64)>,
    ) {
        for (peer, points) in scores {
            self.router.set_application_score(&peer, points);
        }
        self.router.handle_timeout(now);
    }
}

/// The node's mediation: what the gossip part's events mean for the other
/// parts, and the calls that need more than one part.
impl Node {
    /// One gossip RPC (a logical message of kind 32) from accepted `peer`.
    pub(super) fn on_gossip_rpc(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        let events = self.gossip.handle_rpc(now, peer, bytes, &mut self.out);
        for event in events {
            self.apply_gossip_event(now, event);
        }
    }

    /// A peer was admitted: the router announces our topics to it.
    pub(super) fn gossip_peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        direction: Direction,
        addr: SocketAddr,
    ) {
        let points = self.peer_manager.score(now, &peer).as_points();
        self.gossip
            .handle_peer_connected(now, peer, direction, addr, points);
    }

    /// Passes the peer manager's current score of `peer` to the router.
    pub(super) fn update_application_score(&mut self, now: Instant, peer: PeerId) {
        let points = self.peer_manager.score(now, &peer).as_points();
        self.gossip.set_score(&peer, points);
    }

    /// Drains the router: events first (a penalty may disconnect a peer, and
    /// the router then drops what it had queued for it), then its RPCs.
    pub(super) fn transmit_gossip(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.gossip.poll_event() {
                self.apply_gossip_event(now, event);
            }
            let Some((peer, rpc)) = self.gossip.poll_send(now, &self.conns) else {
                break;
            };
            if !self.conns.send_to(&peer, &rpc, &mut self.out) {
                debug!("{peer:?}: gossip RPC for a peer that is gone");
            }
        }
    }

    fn apply_gossip_event(&mut self, now: Instant, event: GossipEvent) {
        match event {
            GossipEvent::Message {
                id,
                topic,
                payload,
                from,
            } => {
                self.out.counters.gossip_messages_received += 1;
                if self.chain.is_blocks_topic(&topic) {
                    self.on_gossip_block(now, id, &payload, from);
                    return;
                }
                self.out.notify(Notification::GossipMessage {
                    id,
                    topic,
                    payload,
                    from,
                });
            }
            GossipEvent::Penalty { peer, reason } => {
                self.out.counters.gossip_penalties += 1;
                let penalty = match reason {
                    Misbehaviour::Malformed(error) => {
                        if let Some(conn) = self.conns.conn_of(&peer) {
                            self.protocol_violation(now, conn, format!("gossip: {error}"));
                        }
                        return;
                    }
                    Misbehaviour::InvalidMessage(_) => Penalty::Mid,
                    Misbehaviour::GraftDuringBackoff(_)
                    | Misbehaviour::BrokenPromise
                    | Misbehaviour::TooManyTopics
                    | Misbehaviour::ControlFlood => Penalty::Low,
                };
                debug!("{peer:?}: gossip misbehaviour: {reason:?}");
                self.report(now, peer, Report::Penalty(penalty));
            }
            GossipEvent::Graylisted { peer } => {
                self.out.counters.gossip_rpcs_graylisted += 1;
                debug!("{peer:?}: gossip RPC dropped: graylisted");
            }
            GossipEvent::SlowPeer { peer } => {
                if let Some(conn) = self.conns.conn_of(&peer) {
                    self.out.counters.gossip_slow_peers += 1;
                    info!("{peer:?}: disconnecting: gossip send queue full");
                    self.say_goodbye(now, conn, GoodbyeReason::Fault);
                }
            }
        }
    }

    pub(super) fn gossip_subscribe(&mut self, now: Instant, topic: Topic) {
        if self.gossip.subscribe(now, topic, &mut self.out) {
            self.announce_topics();
        }
    }

    pub(super) fn gossip_unsubscribe(&mut self, now: Instant, topic: Topic) {
        if self.gossip.unsubscribe(now, &topic) {
            self.announce_topics();
        }
    }

    /// Our Metadata lists the topics we subscribe to; a change raises its
    /// sequence number, so peers fetch it at their next Ping.
    pub(super) fn announce_topics(&mut self) {
        let topics = self.gossip.topic_names();
        self.set_topics(topics);
    }

    /// Runs the router's heartbeat when it is due, with fresh application scores.
    pub(super) fn gossip_heartbeat(&mut self, now: Instant) {
        if !self.gossip.heartbeat_due(now) {
            return;
        }
        let peer_manager = &self.peer_manager;
        let scores = self
            .conns
            .peer_ids()
            .into_iter()
            .map(|peer| (peer, peer_manager.score(now, &peer).as_points()));
        self.gossip.heartbeat(now, scores);
    }
}
