//! The gossip RPC: one logical message of kind [`GOSSIP_KIND`] carrying
//! subscriptions, published messages and control messages.
//!
//! # Design
//! Integers are big-endian and fixed-width. Every count precedes its items
//! and is checked against its cap before anything is allocated; a message
//! ends exactly after its last field (trailing bytes are an error).
//!
//! ```text
//! RPC
//! offset  size  field                                     why
//! 0       1     kind = 32                                 the codec layer's dispatch byte (req/resp is 16..=18)
//! 1       2     subscription count S, u16 (≤ 64)          checked before allocating S entries
//!         ...   S × subscription
//!         2     message count M, u16 (≤ 256)              checked before allocating M entries
//!         ...   M × message
//!         2     control count C, u16 (≤ 256)              checked before allocating C entries
//!         ...   C × control
//!         (end) trailing bytes are an error               one encoding per value
//!
//! topic
//!         1     length L, 1..=128                         short paths; a u8 cannot claim more than 255
//!         L     printable ASCII 0x20..=0x7e               safe to log, no Unicode confusables
//!
//! subscription
//!         1     action: 1 subscribe, 0 unsubscribe        any other value is an error
//!         1+L   topic
//!
//! message
//!         1+L   topic
//!         4     frame length F, u32 (≤ 4 + 32 + n + n/6   bounded by the largest compression of 10 MiB,
//!                                    for n = 10 MiB)      checked before the frame is sliced
//!         F     snappy frame: 4 uncompressed length u32   declared length checked against 10 MiB (and the
//!                 (≤ 10 MiB) ‖ raw snappy block           RPC's sum against 10 MiB) before decompressing;
//!                                                         snappy's own header must agree with it
//!
//! control: 1 tag ‖ body
//!   1 GRAFT      1+L topic
//!   2 PRUNE      1+L topic ‖ 4 backoff seconds, u32       the receiver caps it (router::PRUNE_BACKOFF_SECS_MAX)
//!   3 IHAVE      1+L topic ‖ 2 id count N, u16 ‖ N × 20   ids of all IHAVE/IWANT/IDONTWANT of one RPC ≤ 5000
//!   4 IWANT      2 id count N, u16 ‖ N × 20               (checked cumulatively, before reading the ids)
//!   5 IDONTWANT  2 id count N, u16 ‖ N × 20
//! ```
//!
//! The message id is the first 20 bytes of
//! `sha256(len(topic) as u16 big-endian ‖ topic ‖ uncompressed payload)`:
//! the length prefix makes the split between topic and payload unambiguous,
//! and hashing the uncompressed payload makes the id independent of how a
//! sender compressed it.
//!
//! # Security
//! Provided: [`Rpc::decode`] never panics; counts are capped before any
//! allocation; every snappy frame's declared length is checked against
//! [`GOSSIP_MESSAGE_BYTES_MAX`] and, summed over the RPC, against
//! [`RPC_PAYLOAD_BYTES_MAX`] before it is decompressed, so one 10 MiB RPC
//! cannot make us allocate more than 10 MiB of payloads.
//! Not provided: what a payload means (the application validates it), and
//! authenticity (the Noise channel's job; messages are not signed).
//!
//! # Limits
//! [`TOPIC_BYTES_MAX`], [`SUBSCRIPTIONS_PER_RPC_MAX`], [`MESSAGES_PER_RPC_MAX`],
//! [`CONTROLS_PER_RPC_MAX`], [`CONTROL_IDS_PER_RPC_MAX`],
//! [`GOSSIP_MESSAGE_BYTES_MAX`], [`RPC_PAYLOAD_BYTES_MAX`].

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::codec::snappy;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::reqresp::ReqRespDecodeError;

/// Kind byte of a gossip RPC. Kinds 32..=47 are reserved for gossip.
pub const GOSSIP_KIND: u8 = 32;
pub use crate::types::TOPIC_BYTES_MAX;
/// Largest uncompressed payload of one published message (the Ethereum p2p
/// spec's `MAX_PAYLOAD_SIZE`; blocks are at most 1 MiB).
pub const GOSSIP_MESSAGE_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Largest sum of the declared uncompressed payload lengths of one RPC: a
/// compressible 10 MiB RPC must not expand into hundreds of MiB.
pub const RPC_PAYLOAD_BYTES_MAX: usize = GOSSIP_MESSAGE_BYTES_MAX;
/// Subscription changes in one RPC: a node subscribes to a handful of topics.
pub const SUBSCRIPTIONS_PER_RPC_MAX: usize = 64;
/// Published messages in one RPC: batching beyond this buys nothing.
pub const MESSAGES_PER_RPC_MAX: usize = 256;
/// Control messages in one RPC: a GRAFT, PRUNE and IHAVE per topic and a few
/// IWANT/IDONTWANT fit comfortably.
pub const CONTROLS_PER_RPC_MAX: usize = 256;
/// Message ids in all IHAVE, IWANT and IDONTWANT of one RPC together (libp2p's
/// `max_ihave_length`, 5000): 100 KB of ids at most.
pub const CONTROL_IDS_PER_RPC_MAX: usize = 5_000;
/// Bytes of a message id.
pub const MESSAGE_ID_BYTES: usize = 20;
/// Bytes of a message's framing besides its topic and snappy frame: the
/// topic length byte and the frame length.
pub const MESSAGE_OVERHEAD_BYTES: usize = 1 + 4;
/// Bytes of an RPC with nothing in it: kind and three counts.
pub const RPC_EMPTY_BYTES: usize = 1 + 2 + 2 + 2;
/// Longest snappy frame of one message: its prefix and the longest block a
/// compressor may produce from [`GOSSIP_MESSAGE_BYTES_MAX`].
pub const MESSAGE_FRAME_BYTES_MAX: usize =
    snappy::LENGTH_PREFIX_BYTES + snappy::max_compressed_len(GOSSIP_MESSAGE_BYTES_MAX);

const _: () = assert!(TOPIC_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(SUBSCRIPTIONS_PER_RPC_MAX <= u16::MAX as usize);
const _: () = assert!(MESSAGES_PER_RPC_MAX <= u16::MAX as usize);
const _: () = assert!(CONTROLS_PER_RPC_MAX <= u16::MAX as usize);
const _: () = assert!(CONTROL_IDS_PER_RPC_MAX <= u16::MAX as usize);
const _: () = assert!(GOSSIP_MESSAGE_BYTES_MAX <= MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_FRAME_BYTES_MAX <= u32::MAX as usize);

/// A message's identity: the first 20 bytes of sha256 over its topic and
/// uncompressed payload (see the module docs for the exact bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MessageId(pub [u8; MESSAGE_ID_BYTES]);

impl MessageId {
    /// The id of `payload` published on `topic`.
    pub fn compute(topic: &Topic, payload: &[u8]) -> MessageId {
        let mut hasher = Sha256::new();
        // Cannot truncate: topics are at most 128 bytes.
        hasher.update((topic.as_str().len() as u16).to_be_bytes());
        hasher.update(topic.as_str().as_bytes());
        hasher.update(payload);
        let digest = hasher.finalize();
        let mut id = [0u8; MESSAGE_ID_BYTES];
        id.copy_from_slice(&digest[..MESSAGE_ID_BYTES]);
        MessageId(id)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A topic name: 1..=[`TOPIC_BYTES_MAX`] bytes of printable ASCII without
/// space ([`crate::types::is_valid_topic_name`], shared with Metadata).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Topic(String);

impl Topic {
    /// `name` as a topic, if it is a valid topic name
    /// ([`crate::types::is_valid_topic_name`]).
    pub fn new(name: &str) -> Result<Topic, GossipDecodeError> {
        if !crate::types::is_valid_topic_name(name.as_bytes()) {
            return Err(GossipDecodeError::InvalidTopic);
        }
        Ok(Topic(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bytes of the topic on the wire (length byte included).
    #[allow(clippy::arithmetic_side_effects)] // A topic is at most TOPIC_BYTES_MAX, checked at construction.
    pub fn encoded_len(&self) -> usize {
        1 + self.0.len()
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        // Cannot truncate: checked at construction.
        out.push(self.0.len() as u8);
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription change announced by a peer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Subscription {
    /// Subscribe (true) or unsubscribe (false).
    pub subscribe: bool,
    /// The topic.
    pub topic: Topic,
}

/// A published message as carried on the wire: its topic and its snappy
/// frame. The frame is shared (`Arc`) so that forwarding a message to many
/// peers neither recompresses nor copies it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WireMessage {
    /// The topic.
    pub topic: Topic,
    /// The snappy frame of the payload (`crate::reqresp::snappy`).
    pub frame: Arc<[u8]>,
}

impl WireMessage {
    /// Compresses `payload` for `topic`.
    pub fn new(topic: Topic, payload: &[u8]) -> WireMessage {
        WireMessage {
            topic,
            frame: snappy::compress(payload).into(),
        }
    }

    /// Bytes of the message on the wire.
    #[allow(clippy::arithmetic_side_effects)] // Topic and frame are bounded by their limits at construction or decode.
    pub fn encoded_len(&self) -> usize {
        self.topic.encoded_len() + 4 + self.frame.len()
    }

    /// The declared uncompressed length of the payload.
    pub fn payload_len(&self) -> usize {
        self.frame
            .first_chunk::<4>()
            .map_or(0, |prefix| u32::from_be_bytes(*prefix) as usize)
    }

    /// The uncompressed payload (checked against [`GOSSIP_MESSAGE_BYTES_MAX`]).
    pub fn payload(&self) -> Result<Vec<u8>, GossipDecodeError> {
        snappy::decompress(&self.frame, GOSSIP_MESSAGE_BYTES_MAX)
            .map_err(|error| GossipDecodeError::Payload(error.into()))
    }
}

/// A control message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Control {
    /// The sender added us to its mesh for `topic`.
    Graft {
        /// The topic.
        topic: Topic,
    },
    /// The sender removed us from its mesh for `topic`; we must not GRAFT
    /// again for `backoff_secs`.
    Prune {
        /// The topic.
        topic: Topic,
        /// Seconds before we may GRAFT again.
        backoff_secs: u32,
    },
    /// The sender has these messages of `topic` in its cache.
    IHave {
        /// The topic.
        topic: Topic,
        /// The ids.
        ids: Vec<MessageId>,
    },
    /// The sender asks for these messages.
    IWant {
        /// The ids.
        ids: Vec<MessageId>,
    },
    /// The sender already has these messages: do not send them.
    IDontWant {
        /// The ids.
        ids: Vec<MessageId>,
    },
}

const GRAFT_TAG: u8 = 1;
const PRUNE_TAG: u8 = 2;
const IHAVE_TAG: u8 = 3;
const IWANT_TAG: u8 = 4;
const IDONTWANT_TAG: u8 = 5;

impl Control {
    /// Bytes of the control message on the wire.
    #[allow(clippy::arithmetic_side_effects)] // Id lists are bounded at construction or decode (u16 counts).
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Control::Graft { topic } => topic.encoded_len(),
            Control::Prune { topic, .. } => topic.encoded_len() + 4,
            Control::IHave { topic, ids } => topic.encoded_len() + 2 + ids.len() * MESSAGE_ID_BYTES,
            Control::IWant { ids } | Control::IDontWant { ids } => 2 + ids.len() * MESSAGE_ID_BYTES,
        }
    }

    /// The ids it carries (none for GRAFT and PRUNE).
    pub fn ids(&self) -> &[MessageId] {
        match self {
            Control::Graft { .. } | Control::Prune { .. } => &[],
            Control::IHave { ids, .. } | Control::IWant { ids } | Control::IDontWant { ids } => ids,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Control::Graft { topic } => {
                out.push(GRAFT_TAG);
                topic.encode_into(out);
            }
            Control::Prune {
                topic,
                backoff_secs,
            } => {
                out.push(PRUNE_TAG);
                topic.encode_into(out);
                out.extend_from_slice(&backoff_secs.to_be_bytes());
            }
            Control::IHave { topic, ids } => {
                out.push(IHAVE_TAG);
                topic.encode_into(out);
                encode_ids(ids, out);
            }
            Control::IWant { ids } => {
                out.push(IWANT_TAG);
                encode_ids(ids, out);
            }
            Control::IDontWant { ids } => {
                out.push(IDONTWANT_TAG);
                encode_ids(ids, out);
            }
        }
    }
}

fn encode_ids(ids: &[MessageId], out: &mut Vec<u8>) {
    assert!(
        ids.len() <= CONTROL_IDS_PER_RPC_MAX,
        "id lists are capped by the sender"
    );
    out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
}

/// One gossip RPC.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Rpc {
    /// Subscription changes.
    pub subscriptions: Vec<Subscription>,
    /// Published or forwarded messages.
    pub messages: Vec<WireMessage>,
    /// Control messages.
    pub control: Vec<Control>,
}

impl Rpc {
    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.messages.is_empty() && self.control.is_empty()
    }

    /// Bytes of the encoded RPC.
    #[allow(clippy::arithmetic_side_effects)] // Every part is bounded by the RPC limits checked at decode or construction.
    pub fn encoded_len(&self) -> usize {
        RPC_EMPTY_BYTES
            + self
                .subscriptions
                .iter()
                .map(|s| 1 + s.topic.encoded_len())
                .sum::<usize>()
            + self
                .messages
                .iter()
                .map(WireMessage::encoded_len)
                .sum::<usize>()
            + self.control.iter().map(Control::encoded_len).sum::<usize>()
    }

    /// The logical message, kind byte first.
    ///
    /// # Panics
    /// If a count exceeds its cap or a frame is longer than
    /// [`MESSAGE_FRAME_BYTES_MAX`]: senders build RPCs within the caps, so
    /// that is a bug.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.subscriptions.len() <= SUBSCRIPTIONS_PER_RPC_MAX);
        assert!(self.messages.len() <= MESSAGES_PER_RPC_MAX);
        assert!(self.control.len() <= CONTROLS_PER_RPC_MAX);
        assert!(
            self.control.iter().map(|c| c.ids().len()).sum::<usize>() <= CONTROL_IDS_PER_RPC_MAX
        );
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(GOSSIP_KIND);
        out.extend_from_slice(&(self.subscriptions.len() as u16).to_be_bytes());
        for subscription in &self.subscriptions {
            out.push(u8::from(subscription.subscribe));
            subscription.topic.encode_into(&mut out);
        }
        out.extend_from_slice(&(self.messages.len() as u16).to_be_bytes());
        for message in &self.messages {
            assert!(message.frame.len() <= MESSAGE_FRAME_BYTES_MAX);
            message.topic.encode_into(&mut out);
            out.extend_from_slice(&(message.frame.len() as u32).to_be_bytes());
            out.extend_from_slice(&message.frame);
        }
        out.extend_from_slice(&(self.control.len() as u16).to_be_bytes());
        for control in &self.control {
            control.encode_into(&mut out);
        }
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes a logical message of kind [`GOSSIP_KIND`]. Message frames are
    /// checked (declared lengths, each and in sum, and snappy's own header)
    /// but kept compressed; [`WireMessage::payload`] decompresses them.
    pub fn decode(bytes: &[u8]) -> Result<Rpc, GossipDecodeError> {
        let mut reader = Reader { bytes };
        let kind = reader.u8("kind")?;
        if kind != GOSSIP_KIND {
            return Err(GossipDecodeError::UnknownKind(kind));
        }
        let count = reader.count("subscription count", SUBSCRIPTIONS_PER_RPC_MAX)?;
        let mut subscriptions = Vec::with_capacity(count);
        for _ in 0..count {
            let subscribe = match reader.u8("subscription action")? {
                0 => false,
                1 => true,
                other => return Err(GossipDecodeError::InvalidSubscriptionAction(other)),
            };
            let topic = reader.topic()?;
            subscriptions.push(Subscription { subscribe, topic });
        }
        let count = reader.count("message count", MESSAGES_PER_RPC_MAX)?;
        let mut messages = Vec::with_capacity(count);
        let mut payload_bytes_total = 0usize;
        for _ in 0..count {
            let topic = reader.topic()?;
            let frame_len = reader.u32("frame length")? as usize;
            if frame_len > MESSAGE_FRAME_BYTES_MAX {
                return Err(GossipDecodeError::TooLarge {
                    field: "message frame",
                    length: frame_len as u64,
                    limit: MESSAGE_FRAME_BYTES_MAX as u64,
                });
            }
            let frame = reader.take("message frame", frame_len)?;
            let declared = snappy::check_frame(frame, GOSSIP_MESSAGE_BYTES_MAX)
                .map_err(|error| GossipDecodeError::Payload(error.into()))?;
            payload_bytes_total = payload_bytes_total.saturating_add(declared);
            if payload_bytes_total > RPC_PAYLOAD_BYTES_MAX {
                return Err(GossipDecodeError::TooLarge {
                    field: "payloads of the RPC",
                    length: payload_bytes_total as u64,
                    limit: RPC_PAYLOAD_BYTES_MAX as u64,
                });
            }
            // The block's own header must agree with the prefix: a lie is
            // caught here rather than when someone decompresses it.
            let block = &frame[snappy::LENGTH_PREFIX_BYTES..];
            let actual = snap::raw::decompress_len(block).map_err(|error| {
                GossipDecodeError::Payload(ReqRespDecodeError::Snappy(error.to_string()))
            })?;
            if actual != declared {
                return Err(GossipDecodeError::Payload(
                    ReqRespDecodeError::LengthMismatch {
                        declared: declared as u64,
                        actual: actual as u64,
                    },
                ));
            }
            messages.push(WireMessage {
                topic,
                frame: frame.into(),
            });
        }
        let count = reader.count("control count", CONTROLS_PER_RPC_MAX)?;
        let mut control = Vec::with_capacity(count);
        let mut ids_total = 0usize;
        for _ in 0..count {
            let tag = reader.u8("control tag")?;
            let item = match tag {
                GRAFT_TAG => Control::Graft {
                    topic: reader.topic()?,
                },
                PRUNE_TAG => Control::Prune {
                    topic: reader.topic()?,
                    backoff_secs: reader.u32("backoff seconds")?,
                },
                IHAVE_TAG => {
                    let topic = reader.topic()?;
                    Control::IHave {
                        topic,
                        ids: reader.ids(&mut ids_total)?,
                    }
                }
                IWANT_TAG => Control::IWant {
                    ids: reader.ids(&mut ids_total)?,
                },
                IDONTWANT_TAG => Control::IDontWant {
                    ids: reader.ids(&mut ids_total)?,
                },
                other => return Err(GossipDecodeError::UnknownControl(other)),
            };
            control.push(item);
        }
        if !reader.bytes.is_empty() {
            return Err(GossipDecodeError::TrailingBytes {
                count: reader.bytes.len(),
            });
        }
        Ok(Rpc {
            subscriptions,
            messages,
            control,
        })
    }
}

/// Why bytes from a peer are not a gossip RPC. Every variant is the peer's fault.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum GossipDecodeError {
    /// The message ended before `field` was complete.
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes were left over after the last field.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The first byte is not [`GOSSIP_KIND`].
    UnknownKind(u8),
    /// A count above its cap.
    Count {
        /// What was counted.
        field: &'static str,
        /// The count received.
        count: u64,
        /// The cap.
        max: u64,
    },
    /// A topic is empty, longer than [`TOPIC_BYTES_MAX`] or not printable ASCII without space.
    InvalidTopic,
    /// A subscription action other than 0 or 1.
    InvalidSubscriptionAction(u8),
    /// A control tag other than 1..=5.
    UnknownControl(u8),
    /// A length above its limit.
    TooLarge {
        /// What was too large.
        field: &'static str,
        /// Its length in bytes.
        length: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A payload's snappy frame is malformed (declared length over the limit,
    /// too long for its declared length, disagreeing or corrupt).
    Payload(ReqRespDecodeError),
}

impl fmt::Display for GossipDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GossipDecodeError::Truncated { field } => write!(f, "truncated at {field}"),
            GossipDecodeError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the last field")
            }
            GossipDecodeError::UnknownKind(kind) => write!(f, "unknown gossip kind {kind}"),
            GossipDecodeError::Count { field, count, max } => {
                write!(f, "{field} {count} exceeds {max}")
            }
            GossipDecodeError::InvalidTopic => {
                write!(
                    f,
                    "topic is not 1..={TOPIC_BYTES_MAX} printable ASCII bytes without space"
                )
            }
            GossipDecodeError::InvalidSubscriptionAction(action) => {
                write!(f, "subscription action {action} is neither 0 nor 1")
            }
            GossipDecodeError::UnknownControl(tag) => write!(f, "unknown control tag {tag}"),
            GossipDecodeError::TooLarge {
                field,
                length,
                limit,
            } => write!(f, "{field} of {length} bytes exceeds {limit} bytes"),
            GossipDecodeError::Payload(error) => write!(f, "message payload: {error}"),
        }
    }
}

impl std::error::Error for GossipDecodeError {}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], GossipDecodeError> {
        if self.bytes.len() < count {
            return Err(GossipDecodeError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, GossipDecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, GossipDecodeError> {
        let bytes = self.take(field, 2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, GossipDecodeError> {
        let bytes = self.take(field, 4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, GossipDecodeError> {
        let count = usize::from(self.u16(field)?);
        if count > max {
            return Err(GossipDecodeError::Count {
                field,
                count: count as u64,
                max: max as u64,
            });
        }
        Ok(count)
    }

    fn topic(&mut self) -> Result<Topic, GossipDecodeError> {
        let length = usize::from(self.u8("topic length")?);
        let bytes = self.take("topic", length)?;
        let name = std::str::from_utf8(bytes).map_err(|_| GossipDecodeError::InvalidTopic)?;
        Topic::new(name)
    }

    fn ids(&mut self, total: &mut usize) -> Result<Vec<MessageId>, GossipDecodeError> {
        let count = usize::from(self.u16("id count")?);
        *total = total.saturating_add(count);
        if *total > CONTROL_IDS_PER_RPC_MAX {
            return Err(GossipDecodeError::Count {
                field: "message ids in the RPC",
                count: *total as u64,
                max: CONTROL_IDS_PER_RPC_MAX as u64,
            });
        }
        let bytes = self.take("message ids", count * MESSAGE_ID_BYTES)?;
        Ok(bytes
            .chunks_exact(MESSAGE_ID_BYTES)
            .map(|chunk| {
                let mut id = [0u8; MESSAGE_ID_BYTES];
                id.copy_from_slice(chunk);
                MessageId(id)
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    fn sample() -> Rpc {
        Rpc {
            subscriptions: vec![
                Subscription {
                    subscribe: true,
                    topic: topic("/a"),
                },
                Subscription {
                    subscribe: false,
                    topic: topic("/b"),
                },
            ],
            messages: vec![
                WireMessage::new(topic("/a"), b"hello hello hello"),
                WireMessage::new(topic("/a"), &[]),
            ],
            control: vec![
                Control::Graft { topic: topic("/a") },
                Control::Prune {
                    topic: topic("/b"),
                    backoff_secs: 60,
                },
                Control::IHave {
                    topic: topic("/a"),
                    ids: vec![MessageId([1; 20]), MessageId([2; 20])],
                },
                Control::IWant {
                    ids: vec![MessageId([3; 20])],
                },
                Control::IDontWant { ids: vec![] },
            ],
        }
    }

    #[test]
    fn rpcs_round_trip() {
        for rpc in [Rpc::default(), sample()] {
            let bytes = rpc.encode();
            assert_eq!(bytes.len(), rpc.encoded_len());
            assert_eq!(bytes[0], GOSSIP_KIND);
            assert_eq!(Rpc::decode(&bytes), Ok(rpc.clone()));
        }
        let decoded = Rpc::decode(&sample().encode()).unwrap();
        assert_eq!(decoded.messages[0].payload().unwrap(), b"hello hello hello");
        assert_eq!(decoded.messages[0].payload_len(), 17);
    }

    #[test]
    fn empty_rpc_layout_is_fixed() {
        assert_eq!(Rpc::default().encode(), vec![32, 0, 0, 0, 0, 0, 0]);
        let rpc = Rpc {
            control: vec![Control::Prune {
                topic: topic("t"),
                backoff_secs: 0x0102_0304,
            }],
            ..Rpc::default()
        };
        assert_eq!(
            rpc.encode(),
            vec![32, 0, 0, 0, 0, 0, 1, 2, 1, b't', 1, 2, 3, 4]
        );
    }

    #[test]
    fn message_id_hashes_topic_length_topic_and_payload() {
        let mut hasher = Sha256::new();
        hasher.update([0, 2]);
        hasher.update(b"/a");
        hasher.update(b"xyz");
        let digest = hasher.finalize();
        assert_eq!(MessageId::compute(&topic("/a"), b"xyz").0, digest[..20]);
        assert_ne!(
            MessageId::compute(&topic("/a"), b"xyz"),
            MessageId::compute(&topic("/ax"), b"yz")
        );
    }

    /// A topic gossip accepts is one a Metadata may list, and the other way
    /// round: both use `types::is_valid_topic_name`, checked byte by byte.
    #[test]
    fn gossip_and_metadata_accept_the_same_topics() {
        use crate::reqresp::bodies::{Body, Metadata};
        let metadata_accepts = |name: &[u8]| {
            let mut bytes = vec![0; 16];
            bytes.extend_from_slice(&1u16.to_be_bytes());
            bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
            bytes.extend_from_slice(name);
            Metadata::decode(&bytes).is_ok()
        };
        let mut names: Vec<Vec<u8>> = (0..=255u8).map(|byte| vec![byte]).collect();
        names.push(Vec::new());
        names.push(vec![b'x'; TOPIC_BYTES_MAX]);
        names.push(vec![b'x'; TOPIC_BYTES_MAX + 1]);
        names.push(b"/meshsync/blocks/1".to_vec());
        for name in names {
            let gossip_accepts =
                std::str::from_utf8(&name).is_ok_and(|text| Topic::new(text).is_ok());
            assert_eq!(gossip_accepts, metadata_accepts(&name), "{name:?}");
            assert_eq!(gossip_accepts, crate::types::is_valid_topic_name(&name));
        }
        assert!(!crate::types::is_valid_topic_name(b" "));
        assert!(crate::types::is_valid_topic_name(b"!"));
        assert!(crate::types::is_valid_topic_name(b"~"));
    }

    #[test]
    fn topics_are_checked() {
        assert!(Topic::new("").is_err());
        assert!(Topic::new(&"x".repeat(129)).is_err());
        assert!(Topic::new(&"x".repeat(128)).is_ok());
        assert!(Topic::new("tab\there").is_err());
        assert!(Topic::new("é").is_err());
        assert!(Topic::new("has space").is_err());
        // Non-ASCII and empty topics on the wire.
        assert_eq!(
            Rpc::decode(&[32, 0, 1, 1, 1, 0xff, 0, 0, 0, 0]),
            Err(GossipDecodeError::InvalidTopic)
        );
        assert_eq!(
            Rpc::decode(&[32, 0, 1, 1, 0, 0, 0, 0, 0]),
            Err(GossipDecodeError::InvalidTopic)
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(Rpc::decode(&bytes[..length]).is_err(), "cut at {length}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Rpc::decode(&trailing),
            Err(GossipDecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn malformed_fields_are_refused() {
        assert_eq!(
            Rpc::decode(&[16, 0, 0]),
            Err(GossipDecodeError::UnknownKind(16))
        );
        assert_eq!(
            Rpc::decode(&[32, 0, 1, 2, 1, b'a', 0, 0, 0, 0]),
            Err(GossipDecodeError::InvalidSubscriptionAction(2))
        );
        assert_eq!(
            Rpc::decode(&[32, 0, 0, 0, 0, 0, 1, 9]),
            Err(GossipDecodeError::UnknownControl(9))
        );
        assert!(matches!(
            Rpc::decode(&[32, 0, 65, 0]),
            Err(GossipDecodeError::Count { count: 65, .. })
        ));
        assert!(matches!(
            Rpc::decode(&[32, 0, 0, 1, 1, 0]),
            Err(GossipDecodeError::Count { count: 257, .. })
        ));
        assert!(matches!(
            Rpc::decode(&[32, 0, 0, 0, 0, 1, 1]),
            Err(GossipDecodeError::Count { count: 257, .. })
        ));
        // 5001 ids declared across two IWANTs, refused before reading them.
        let mut bytes = vec![32, 0, 0, 0, 0, 0, 2, IWANT_TAG];
        bytes.extend_from_slice(&5000u16.to_be_bytes());
        bytes.extend_from_slice(&vec![0; 5000 * 20]);
        bytes.push(IWANT_TAG);
        bytes.extend_from_slice(&1u16.to_be_bytes());
        assert!(matches!(
            Rpc::decode(&bytes),
            Err(GossipDecodeError::Count { count: 5001, .. })
        ));
        // A frame length beyond any possible frame.
        let mut bytes = vec![32, 0, 0, 0, 1, 1, b'a'];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Rpc::decode(&bytes),
            Err(GossipDecodeError::TooLarge {
                field: "message frame",
                ..
            })
        ));
    }

    /// A few bytes that claim 2.6 GB, or 10 MiB + 1: refused before decompressing.
    #[test]
    fn snappy_bombs_are_refused_before_allocating() {
        let varint = crate::codec::snappy::bomb_header(2_600_000_000);
        let message = |declared: u32, block: &[u8]| {
            let mut frame = declared.to_be_bytes().to_vec();
            frame.extend_from_slice(block);
            let mut bytes = vec![32, 0, 0, 0, 1, 1, b'a'];
            bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&frame);
            bytes.extend_from_slice(&[0, 0]);
            bytes
        };
        // The prefix tells the lie: over the limit.
        assert!(matches!(
            Rpc::decode(&message(2_600_000_000, &varint)),
            Err(GossipDecodeError::Payload(
                ReqRespDecodeError::TooLarge { .. }
            ))
        ));
        assert!(matches!(
            Rpc::decode(&message(GOSSIP_MESSAGE_BYTES_MAX as u32 + 1, &varint)),
            Err(GossipDecodeError::Payload(
                ReqRespDecodeError::TooLarge { .. }
            ))
        ));
        // The block's header tells it: the cross-check refuses.
        assert!(matches!(
            Rpc::decode(&message(10, &varint)),
            Err(GossipDecodeError::Payload(
                ReqRespDecodeError::LengthMismatch { .. }
            ))
        ));
        // Many messages each within the limit, together beyond it.
        let big = snappy::compress(&vec![0; GOSSIP_MESSAGE_BYTES_MAX / 2 + 1]);
        let mut bytes = vec![32, 0, 0, 0, 2];
        for _ in 0..2 {
            bytes.extend_from_slice(&[1, b'a']);
            bytes.extend_from_slice(&(big.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&big);
        }
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            Rpc::decode(&bytes),
            Err(GossipDecodeError::TooLarge {
                field: "payloads of the RPC",
                ..
            })
        ));
    }

    #[test]
    fn corrupt_payload_is_refused_on_decompression() {
        let mut rpc = Rpc::default();
        let mut frame = snappy::compress(b"hello world hello world").to_vec();
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        frame[6] = 0xff;
        rpc.messages.push(WireMessage {
            topic: topic("/a"),
            frame: frame.into(),
        });
        if let Ok(decoded) = Rpc::decode(&rpc.encode()) {
            assert!(decoded.messages[0]
                .payload()
                .map_or(true, |payload| payload.len() == 23));
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            GossipDecodeError::UnknownControl(9).to_string(),
            "unknown control tag 9"
        );
        assert_eq!(format!("{:?}", MessageId([0xab; 20])), "abababababab");
    }
}
