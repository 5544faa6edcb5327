//! The node's gossip glue: what connects the [`crate::gossip::Gossip`] router to the
//! connections, the peer manager and the application.
//!
//! # Design
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

use crate::machine::Machine;
use std::net::SocketAddr;

use log::{debug, info};

use super::Node;
use crate::gossip::{GossipEvent, MessageId, Misbehaviour, SendReadiness, Topic, Validation};
use crate::identity::PeerId;
use crate::io::{Direction, GoodbyeReason, Notification};
use crate::limits;
use crate::peer::{Penalty, Report};
use crate::time::Instant;

impl Node {
    /// One gossip RPC (a logical message of kind 32) from accepted `peer`.
    pub(super) fn on_gossip_rpc(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        self.out.counters.gossip_rpcs_received += 1;
        self.gossip.handle_rpc(now, peer, bytes);
        // Taken all at once: what applying them makes the router queue waits
        // for the next drain, as it always has.
        let events: Vec<_> = std::iter::from_fn(|| self.gossip.poll_event()).collect();
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
        let outbound = direction == Direction::Outbound;
        self.gossip
            .handle_peer_connected(now, peer, outbound, addr.ip());
        self.update_application_score(now, peer);
    }

    /// Passes the peer manager's current score of `peer` to the router.
    pub(super) fn update_application_score(&mut self, now: Instant, peer: PeerId) {
        let points = self.peer_manager.score(now, &peer).as_points();
        self.gossip.set_application_score(&peer, points);
    }

    /// Drains the router: events first (a penalty may disconnect a peer, and
    /// the router then drops what it had queued for it), then its RPCs.
    pub(super) fn transmit_gossip(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.gossip.poll_event() {
                self.apply_gossip_event(now, event);
            }
            let conns = &self.conns;
            // The node's uplink is one: while it is busy, gossip waits in the
            // router, where an IDONTWANT can still cancel it. Without this, a
            // 1 MiB block forwarded to 8 mesh peers is handed over 8 times at
            // once and the IDONTWANTs arriving a moment later save nothing.
            // Each connection counts for at most its share, and a slow one
            // not at all (see `Connections::unwritten_total`): one peer that
            // stops reading must not silence the others.
            let node_busy = conns.unwritten_total(now) >= limits::GOSSIP_NODE_WINDOW_BYTES;
            let readiness = |peer: &PeerId| {
                if !node_busy && conns.gossip_window_open(peer) {
                    SendReadiness::Everything
                } else {
                    SendReadiness::ControlOnly
                }
            };
            let Some((peer, rpc)) = self.gossip.poll_send_ready(readiness) else {
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
                if self.chain_state.is_blocks_topic(&topic) {
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
        match self.gossip.subscribe(now, topic.clone()) {
            Ok(_) => {
                self.gossip_topics.insert(topic);
                self.announce_topics();
            }
            Err(error) => {
                debug!("subscribe {topic}: {error:?}");
                self.out
                    .notify(Notification::SubscribeFailed { topic, error });
            }
        }
    }

    pub(super) fn gossip_unsubscribe(&mut self, now: Instant, topic: Topic) {
        self.gossip.unsubscribe(now, &topic);
        if self.gossip_topics.remove(&topic) {
            self.announce_topics();
        }
    }

    /// Our Metadata lists the topics we subscribe to; a change raises its
    /// sequence number, so peers fetch it at their next Ping.
    fn announce_topics(&mut self) {
        let topics = self
            .gossip_topics
            .iter()
            .map(|topic| topic.as_str().to_string())
            .collect();
        self.set_topics(topics);
    }

    pub(super) fn gossip_publish(&mut self, now: Instant, topic: Topic, payload: &[u8]) {
        match self.gossip.publish(now, topic.clone(), payload) {
            Ok(id) => {
                self.out.counters.gossip_messages_published += 1;
                debug!("published {id:?} on {topic}");
            }
            Err(error) => {
                self.out.counters.gossip_publish_failed += 1;
                debug!("publish on {topic}: {error}");
                self.out
                    .notify(Notification::PublishFailed { topic, error });
            }
        }
    }

    pub(super) fn gossip_validate(&mut self, now: Instant, id: MessageId, verdict: Validation) {
        if !self.gossip.report_validation(now, id, verdict) {
            debug!("verdict on {id:?} ignored: not pending (unknown, judged, or expired)");
            return;
        }
        match verdict {
            Validation::Accept => self.out.counters.gossip_messages_forwarded += 1,
            Validation::Reject => self.out.counters.gossip_messages_rejected += 1,
            Validation::Ignore => {}
        }
    }

    /// When the router needs its heartbeat: only while it has something to
    /// maintain. An idle router's heartbeat changes nothing (no mesh, nothing
    /// to expire or gossip), so it is not worth a wake-up.
    pub(super) fn gossip_deadline(&self) -> Option<Instant> {
        let gossip = &self.gossip;
        let idle = self.gossip_topics.is_empty()
            && !self.gossip.is_subscribed(self.chain_state.blocks_topic())
            && gossip.seen_len() == 0
            && gossip.pending_len() == 0
            && gossip.mcache_len() == 0
            && gossip.promises_len() == 0
            && gossip.backoffs_len() == 0;
        if idle {
            None
        } else {
            gossip.next_deadline()
        }
    }

    /// Runs the router's heartbeat when it is due, with fresh application scores.
    pub(super) fn gossip_heartbeat(&mut self, now: Instant) {
        if self.gossip.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        let peers = self.conns.peer_ids();
        for peer in peers {
            self.update_application_score(now, peer);
        }
        self.gossip.handle_timeout(now);
    }
}
