//! What the router and the node tell each other: events, the application's
//! verdicts, the errors of publishing and subscribing, and the counters.

use std::collections::BTreeMap;
use std::fmt;

use crate::gossip::wire::{GossipDecodeError, MessageId, Topic};
use crate::identity::PeerId;

/// The application's verdict on a message from [`GossipEvent::Message`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Validation {
    /// Valid: cache and forward it; credit its senders.
    Accept,
    /// Not useful (e.g. too old) but not malicious: drop it, nobody is penalised.
    Ignore,
    /// Invalid: drop it and penalise every peer that sent it.
    Reject,
}

/// Why a peer's gossip score was lowered, reported so the node can log and count it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Misbehaviour {
    /// The RPC could not be decoded; the node should treat this as a protocol violation.
    Malformed(GossipDecodeError),
    /// A message it sent was rejected by the application.
    InvalidMessage(MessageId),
    /// It GRAFTed during a backoff.
    GraftDuringBackoff(Topic),
    /// It did not deliver a message it announced with IHAVE within [`IWANT_FOLLOWUP_TIME`](super::IWANT_FOLLOWUP_TIME).
    BrokenPromise,
    /// It announced more than [`PEER_TOPICS_MAX`](super::PEER_TOPICS_MAX) topics.
    TooManyTopics,
    /// It sent more control than its per-heartbeat allowance (IHAVE
    /// messages or ids, IWANT or IDONTWANT ids, beyond
    /// [`CONTROL_ALLOWANCE_SLACK_FACTOR`](super::CONTROL_ALLOWANCE_SLACK_FACTOR) times the cap), or asked with
    /// IWANT for ids we never announced to it. Reported once per heartbeat.
    ControlFlood,
}

/// Something the node must know or act on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum GossipEvent {
    /// A new message: validate it and call [`Gossip::report_validation`](super::Gossip::report_validation).
    Message {
        /// Its id.
        id: MessageId,
        /// Its topic (one we are subscribed to).
        topic: Topic,
        /// The uncompressed payload.
        payload: Vec<u8>,
        /// The peer that delivered it first.
        from: PeerId,
    },
    /// A peer misbehaved (its gossip score already reflects it).
    Penalty {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Misbehaviour,
    },
    /// An RPC from a peer below [`GRAYLIST_THRESHOLD`](crate::gossip::score::GRAYLIST_THRESHOLD) was dropped unread.
    Graylisted {
        /// The peer.
        peer: PeerId,
    },
    /// The peer's send queue overflowed: it does not read fast enough.
    /// Gossip was dropped first; the node should disconnect it.
    SlowPeer {
        /// The peer.
        peer: PeerId,
    },
}

/// Why [`Gossip::publish`](super::Gossip::publish) refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum PublishError {
    /// The payload, or its RPC, exceeds [`GOSSIP_MESSAGE_BYTES_MAX`](crate::gossip::wire::GOSSIP_MESSAGE_BYTES_MAX) or the logical message limit.
    TooLarge,
    /// The same payload was published or received on the topic within [`SEEN_TTL`](super::SEEN_TTL).
    Duplicate,
    /// No peer to send it to.
    NoPeers,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge => write!(f, "message too large"),
            PublishError::Duplicate => write!(f, "message already seen"),
            PublishError::NoPeers => write!(f, "no peers to publish to"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why [`Gossip::subscribe`](super::Gossip::subscribe) refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum SubscribeError {
    /// Already subscribed to [`TOPICS_MAX`](super::TOPICS_MAX) topics.
    TooManyTopics,
}

/// What the router counted, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// RPCs decoded.
    pub rpcs_received: u64,
    /// RPCs that did not decode.
    pub rpcs_malformed: u64,
    /// RPCs dropped because their sender was graylisted.
    pub rpcs_graylisted: u64,
    /// New messages handed to the application.
    pub messages_received: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// Messages on topics we are not subscribed to.
    pub messages_unsubscribed: u64,
    /// Messages dropped while awaiting validation (cap or timeout).
    pub validations_dropped: u64,
    /// Gossip items (messages, IHAVE) dropped from full send queues.
    pub gossip_dropped: u64,
    /// Control items dropped from full send queues.
    pub control_dropped: u64,
    /// Messages we did not send because the peer sent IDONTWANT.
    pub idontwant_suppressed: u64,
    /// IWANT ids not answered because the retransmission cap was reached.
    pub iwant_over_cap: u64,
    /// IWANT ids not answered because we never announced them to the asker.
    pub iwant_unannounced: u64,
    /// Times a peer was penalised for control over its allowance.
    pub control_floods: u64,
    /// Promises broken.
    pub promises_broken: u64,
    /// PRUNEs received on our topics.
    pub prunes_received: u64,
    /// GRAFTs refused because they came inside a backoff (each a penalty).
    pub grafts_refused_in_backoff: u64,
    /// Counts per topic we are subscribed to (at most `TOPICS_MAX`); a
    /// topic's entry goes when we unsubscribe from it.
    pub topics: BTreeMap<Topic, TopicCounters>,
}

/// What the router counted on one subscribed topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicCounters {
    /// New messages handed to the application.
    pub received: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// Messages the application accepted (and we forwarded).
    pub accepted: u64,
    /// Messages the application rejected (their senders penalised).
    pub rejected: u64,
    /// Messages the application ignored.
    pub ignored: u64,
}
