//! Per-peer send queues: what waits for each peer, what a full queue drops
//! (gossip before control), and how `poll_send` packs queued items into RPCs.

use super::config::{
    SEND_QUEUE_BYTES_PER_PEER_MAX, SEND_QUEUE_ITEMS_PER_PEER_MAX, SLOW_PEER_GOSSIP_DROPS_MAX,
};
use super::events::GossipEvent;
use super::peers::Peer;
use super::Gossip;
use crate::gossip::wire::{
    Control, MessageId, Rpc, Subscription, WireMessage, CONTROLS_PER_RPC_MAX,
    CONTROL_IDS_PER_RPC_MAX, MESSAGES_PER_RPC_MAX, RPC_EMPTY_BYTES, SUBSCRIPTIONS_PER_RPC_MAX,
};
use crate::identity::PeerId;
use crate::limits::MESSAGE_BYTES_MAX;

/// How much a peer's connection can take now (see [`Gossip::poll_send_ready`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SendReadiness {
    /// Its transport keeps up: control and gossip.
    Everything,
    /// Its transport is backed up: control only (small, and what keeps the
    /// mesh and the IDONTWANTs working); gossip waits in the queue.
    ControlOnly,
}

/// One item of a peer's send queue.
#[derive(Clone, Debug)]
pub(super) enum Item {
    Subscription(Subscription),
    Control(Control),
    /// A message and its id (so an IDONTWANT can cancel it while queued).
    Message(MessageId, WireMessage),
    /// A message the peer asked for with IWANT: sent even if the peer said
    /// IDONTWANT before, since its IWANT is the later word (it dropped the
    /// copy it had unjudged, e.g. while its verifier was busy). Cancelling
    /// it would break the promise it holds on us and cost us its score.
    Answer(WireMessage),
}

impl Item {
    pub(super) fn encoded_len(&self) -> usize {
        match self {
            Item::Subscription(subscription) => 1 + subscription.topic.encoded_len(),
            Item::Control(control) => control.encoded_len(),
            Item::Message(_, message) | Item::Answer(message) => message.encoded_len(),
        }
    }

    fn is_gossip(&self) -> bool {
        matches!(
            self,
            Item::Message(..) | Item::Answer(_) | Item::Control(Control::IHave { .. })
        )
    }
}

impl Gossip {
    /// The next RPC to send: `(peer, encoded logical message of kind 32)`.
    /// Peers take turns; one RPC carries as many queued items (control
    /// first) as fit the caps and the logical message limit.
    pub fn poll_send(&mut self) -> Option<(PeerId, Vec<u8>)> {
        self.poll_send_ready(|_| SendReadiness::Everything)
    }

    /// [`Gossip::poll_send`] with backpressure: `readiness` says, per peer,
    /// whether its connection can take everything or only control (its
    /// transport is backed up). Held-back gossip stays queued, where an
    /// IDONTWANT can still cancel it and where a full queue drops gossip
    /// before control (and, past [`SLOW_PEER_GOSSIP_DROPS_MAX`], reports the
    /// peer as [`GossipEvent::SlowPeer`]).
    pub fn poll_send_ready(
        &mut self,
        readiness: impl Fn(&PeerId) -> SendReadiness,
    ) -> Option<(PeerId, Vec<u8>)> {
        // Each round that sends nothing (all it took was cancelled by
        // IDONTWANT) removed at least one item, so this ends.
        loop {
            if let Some(sent) = self.poll_send_round(&readiness)? {
                return Some(sent);
            }
        }
    }

    /// One round of [`Gossip::poll_send_ready`]: `None` if no peer has
    /// anything to send, `Some(None)` if what was taken was all cancelled.
    fn poll_send_round(
        &mut self,
        readiness: &impl Fn(&PeerId) -> SendReadiness,
    ) -> Option<Option<(PeerId, Vec<u8>)>> {
        // Readiness is asked only of a peer with gossip alone queued: most
        // peers have nothing queued, and asking costs the caller lookups.
        let sendable = |id: &PeerId, p: &Peer| {
            !p.control_queue.is_empty()
                || (!p.gossip_queue.is_empty() && readiness(id) == SendReadiness::Everything)
        };
        let peer = {
            let after = self
                .send_cursor
                .and_then(|cursor| {
                    self.peers
                        .range((
                            std::ops::Bound::Excluded(cursor),
                            std::ops::Bound::Unbounded,
                        ))
                        .find(|(id, p)| sendable(id, p))
                })
                .map(|(id, _)| *id);
            after.or_else(|| {
                self.peers
                    .iter()
                    .find(|(id, p)| sendable(id, p))
                    .map(|(id, _)| *id)
            })?
        };
        let control_only = readiness(&peer) == SendReadiness::ControlOnly;
        self.send_cursor = Some(peer);
        let p = self.peers.get_mut(&peer).expect("found above");
        let mut rpc = Rpc::default();
        let mut bytes = RPC_EMPTY_BYTES;
        let mut ids = 0usize;
        let queues = if control_only {
            [Some(&mut p.control_queue), None]
        } else {
            [Some(&mut p.control_queue), Some(&mut p.gossip_queue)]
        };
        for queue in queues.into_iter().flatten() {
            while let Some(item) = queue.front() {
                let size = item.encoded_len();
                let item_ids = match item {
                    Item::Control(control) => control.ids().len(),
                    _ => 0,
                };
                let fits = bytes + size <= MESSAGE_BYTES_MAX
                    && ids + item_ids <= CONTROL_IDS_PER_RPC_MAX
                    && match item {
                        Item::Subscription(_) => {
                            rpc.subscriptions.len() < SUBSCRIPTIONS_PER_RPC_MAX
                        }
                        Item::Control(_) => rpc.control.len() < CONTROLS_PER_RPC_MAX,
                        Item::Message(..) | Item::Answer(_) => {
                            rpc.messages.len() < MESSAGES_PER_RPC_MAX
                        }
                    };
                if !fits {
                    break;
                }
                let item = queue.pop_front().expect("front exists");
                p.queued_bytes -= size;
                if let Item::Message(id, _) = &item {
                    if p.dont_want.contains_key(id) {
                        // It said it has this one since we queued it.
                        self.counters.idontwant_suppressed += 1;
                        continue;
                    }
                }
                bytes += size;
                ids += item_ids;
                match item {
                    Item::Subscription(subscription) => rpc.subscriptions.push(subscription),
                    Item::Control(control) => rpc.control.push(control),
                    Item::Message(_, message) | Item::Answer(message) => rpc.messages.push(message),
                }
            }
        }
        if p.queued_items() == 0 {
            p.slow_reported = false;
            p.gossip_drops = 0;
        }
        if rpc.is_empty() {
            return Some(None);
        }
        Some(Some((peer, rpc.encode())))
    }

    pub(super) fn enqueue(&mut self, peer: PeerId, item: Item) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let size = item.encoded_len();
        debug_assert!(RPC_EMPTY_BYTES + size <= MESSAGE_BYTES_MAX);
        // Too slow: control had to be dropped, or gossip kept overflowing.
        let mut too_slow = false;
        let mut accepted = true;
        while p.queued_bytes + size > SEND_QUEUE_BYTES_PER_PEER_MAX
            || p.queued_items() >= SEND_QUEUE_ITEMS_PER_PEER_MAX
        {
            if item.is_gossip() {
                self.counters.gossip_dropped += 1;
                p.gossip_drops = p.gossip_drops.saturating_add(1);
                accepted = false;
                break;
            }
            if let Some(old) = p.gossip_queue.pop_front() {
                p.queued_bytes -= old.encoded_len();
                self.counters.gossip_dropped += 1;
                p.gossip_drops = p.gossip_drops.saturating_add(1);
            } else {
                self.counters.control_dropped += 1;
                too_slow = true;
                accepted = false;
                break;
            }
        }
        too_slow |= p.gossip_drops > SLOW_PEER_GOSSIP_DROPS_MAX;
        if accepted {
            p.queued_bytes += size;
            if item.is_gossip() {
                p.gossip_queue.push_back(item);
            } else {
                p.control_queue.push_back(item);
            }
        }
        if too_slow && !p.slow_reported {
            p.slow_reported = true;
            self.push_event(GossipEvent::SlowPeer { peer });
        }
    }
}
