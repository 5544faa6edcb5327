//! The typed bodies of the built-in protocols: request bodies and success
//! payloads, each with a canonical encoding (decode then encode gives the
//! same bytes back).
//!
//! Integers are big-endian and fixed-width; counts and string lengths are
//! `u16` and are checked against their limits before anything is allocated;
//! strings are printable ASCII; trailing bytes are an error.

use super::error::ReqRespDecodeError;
use super::limits::{
    APPLICATION_REQUEST_BYTES_MAX, BLOCKS_PER_RANGE_REQUEST_MAX, BLOCK_BYTES_MAX,
    METADATA_TOPICS_MAX, ROOTS_PER_REQUEST_MAX,
};
use super::wire::{ProtocolId, Reader};
use crate::types::{is_valid_topic_name, GoodbyeReason, TOPIC_BYTES_MAX};
pub use crate::types::{Root, Status};

/// A body with a canonical, bounded encoding.
pub trait Body: Sized {
    /// The longest encoding, in bytes.
    const BYTES_MAX: usize;

    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If the value breaks a limit its decoder enforces (a count or string
    /// length): we never send what we would refuse.
    fn encode_into(&self, out: &mut Vec<u8>);

    /// Decodes exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, ReqRespDecodeError>;

    /// The encoding as a new vector.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

impl Body for Status {
    const BYTES_MAX: usize = 8 + 32 + 8 + 32 + 8;

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_be_bytes());
        out.extend_from_slice(self.finalized_root.as_bytes());
        out.extend_from_slice(&self.finalized_slot.to_be_bytes());
        out.extend_from_slice(self.head_root.as_bytes());
        out.extend_from_slice(&self.head_slot.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Status, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let status = Status {
            network_id: reader.u64("network id")?,
            finalized_root: Root(reader.array("finalized root")?),
            finalized_slot: reader.u64("finalized slot")?,
            head_root: Root(reader.array("head root")?),
            head_slot: reader.u64("head slot")?,
        };
        reader.finish()?;
        Ok(status)
    }
}

/// The body of a Ping request and of its answer: the sender's metadata
/// sequence number; a higher one than last seen makes the receiver fetch Metadata.
///
/// ```text
/// offset  size  field
/// 0       8     metadata sequence number, u64
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ping {
    /// The sender's current [`Metadata::seq`].
    pub metadata_seq: u64,
}

impl Body for Ping {
    const BYTES_MAX: usize = 8;

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.metadata_seq.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Ping, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let metadata_seq = reader.u64("metadata sequence number")?;
        reader.finish()?;
        Ok(Ping { metadata_seq })
    }
}

/// The body of a Metadata request: empty.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MetadataRequest;

impl Body for MetadataRequest {
    const BYTES_MAX: usize = 0;

    fn encode_into(&self, _out: &mut Vec<u8>) {}

    fn decode(bytes: &[u8]) -> Result<MetadataRequest, ReqRespDecodeError> {
        Reader::new(bytes).finish()?;
        Ok(MetadataRequest)
    }
}

/// What a node says about itself; the answer to a Metadata request.
///
/// ```text
/// offset  size  field
/// 0       8     sequence number, u64 (raised whenever the rest changes)
/// 8       8     capability bits, u64
/// 16      2     topic count t, u16, 0..=64
/// 18      ..    t times: length n u16 (1..=128), then n bytes of printable ASCII
/// ```
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// Raised whenever the topics or capabilities change.
    pub seq: u64,
    /// Gossip topics the node subscribes to, the chain's `blocks` included:
    /// at most [`METADATA_TOPICS_MAX`], each a valid topic name
    /// ([`is_valid_topic_name`]: 1 to [`TOPIC_BYTES_MAX`] bytes of
    /// 0x21..=0x7E, as in gossip).
    pub topics: Vec<String>,
    /// Capability bits.
    pub capabilities: u64,
}

impl Metadata {
    /// Whether the topics are within the limits the decoder enforces.
    pub fn is_valid(&self) -> bool {
        self.topics.len() <= METADATA_TOPICS_MAX
            && self
                .topics
                .iter()
                .all(|topic| is_valid_topic_name(topic.as_bytes()))
    }
}

impl Body for Metadata {
    const BYTES_MAX: usize = 8 + 8 + 2 + METADATA_TOPICS_MAX * (2 + TOPIC_BYTES_MAX);

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(self.is_valid(), "our metadata breaks its limits: {self:?}");
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.capabilities.to_be_bytes());
        // Cannot truncate: bounded by METADATA_TOPICS_MAX and TOPIC_BYTES_MAX,
        // both checked below u16::MAX in limits.rs.
        out.extend_from_slice(&(self.topics.len() as u16).to_be_bytes());
        for topic in &self.topics {
            out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Metadata, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let seq = reader.u64("sequence number")?;
        let capabilities = reader.u64("capabilities")?;
        let count = reader.u16("topic count")?;
        if usize::from(count) > METADATA_TOPICS_MAX {
            return Err(ReqRespDecodeError::Count {
                field: "topic",
                count: u64::from(count),
                min: 0,
                max: METADATA_TOPICS_MAX as u64,
            });
        }
        let mut topics = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let length = reader.u16("topic length")?;
            if usize::from(length) > TOPIC_BYTES_MAX {
                return Err(ReqRespDecodeError::InvalidString { field: "topic" });
            }
            let topic = reader.bytes(usize::from(length), "topic")?;
            if !is_valid_topic_name(topic) {
                return Err(ReqRespDecodeError::InvalidString { field: "topic" });
            }
            let topic = std::str::from_utf8(topic).expect("checked to be printable ASCII");
            topics.push(topic.to_owned());
        }
        reader.finish()?;
        Ok(Metadata {
            seq,
            topics,
            capabilities,
        })
    }
}

/// The body of a Goodbye request: why the sender is closing the connection.
///
/// ```text
/// offset  size  field
/// 0       8     reason code, u64 (see `GoodbyeReason`)
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
}

impl Body for Goodbye {
    const BYTES_MAX: usize = 8;

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.reason.code().to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Goodbye, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let reason = GoodbyeReason::from_code(reader.u64("reason")?);
        reader.finish()?;
        Ok(Goodbye { reason })
    }
}

/// The body of a BlocksByRange request: the blocks at slots
/// `start_slot..start_slot + count`, answered in slot order from one chain,
/// one chunk per block (slots without a block are skipped).
///
/// ```text
/// offset  size  field
/// 0       8     start slot, u64
/// 8       8     count, u64, 1..=64; start + count must not overflow
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BlocksByRangeRequest {
    /// The first slot.
    pub start_slot: u64,
    /// How many slots, 1 to [`BLOCKS_PER_RANGE_REQUEST_MAX`].
    pub count: u64,
}

impl BlocksByRangeRequest {
    /// Whether the request is within the limits the decoder enforces.
    pub fn is_valid(&self) -> bool {
        (1..=BLOCKS_PER_RANGE_REQUEST_MAX).contains(&self.count)
            && self.start_slot.checked_add(self.count).is_some()
    }

    /// The slot after the last one asked for.
    pub fn end_slot(&self) -> u64 {
        self.start_slot.saturating_add(self.count)
    }
}

impl Body for BlocksByRangeRequest {
    const BYTES_MAX: usize = 16;

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.is_valid(),
            "our range request breaks its limits: {self:?}"
        );
        out.extend_from_slice(&self.start_slot.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<BlocksByRangeRequest, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let start_slot = reader.u64("start slot")?;
        let count = reader.u64("count")?;
        reader.finish()?;
        if !(1..=BLOCKS_PER_RANGE_REQUEST_MAX).contains(&count) {
            return Err(ReqRespDecodeError::Count {
                field: "block",
                count,
                min: 1,
                max: BLOCKS_PER_RANGE_REQUEST_MAX,
            });
        }
        if start_slot.checked_add(count).is_none() {
            return Err(ReqRespDecodeError::SlotOverflow);
        }
        Ok(BlocksByRangeRequest { start_slot, count })
    }
}

/// The body of a BlocksByRoot request: the blocks with these roots, one
/// chunk per block the responder has, in request order.
///
/// ```text
/// offset  size  field
/// 0       2     root count r, u16, 1..=128
/// 2       32·r  roots
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlocksByRootRequest {
    /// 1 to [`ROOTS_PER_REQUEST_MAX`] roots.
    pub roots: Vec<Root>,
}

impl BlocksByRootRequest {
    /// Whether the request is within the limits the decoder enforces.
    pub fn is_valid(&self) -> bool {
        (1..=ROOTS_PER_REQUEST_MAX).contains(&self.roots.len())
    }
}

impl Body for BlocksByRootRequest {
    const BYTES_MAX: usize = 2 + 32 * ROOTS_PER_REQUEST_MAX;

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.is_valid(),
            "our root request has {} roots",
            self.roots.len()
        );
        // Cannot truncate: at most ROOTS_PER_REQUEST_MAX, checked below u16::MAX.
        out.extend_from_slice(&(self.roots.len() as u16).to_be_bytes());
        for root in &self.roots {
            out.extend_from_slice(root.as_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<BlocksByRootRequest, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        let count = reader.u16("root count")?;
        if !(1..=ROOTS_PER_REQUEST_MAX).contains(&usize::from(count)) {
            return Err(ReqRespDecodeError::Count {
                field: "root",
                count: u64::from(count),
                min: 1,
                max: ROOTS_PER_REQUEST_MAX as u64,
            });
        }
        // Checked before allocating: the roots must all be there.
        let needed = usize::from(count) * 32;
        if reader.remaining() < needed {
            return Err(ReqRespDecodeError::Truncated { field: "roots" });
        }
        let mut roots = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            roots.push(Root(reader.array("root")?));
        }
        reader.finish()?;
        Ok(BlocksByRootRequest { roots })
    }
}

/// One block in a BlocksByRange or BlocksByRoot response chunk: opaque bytes
/// (the chain layer's encoding), at most [`BLOCK_BYTES_MAX`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlockPayload(pub Vec<u8>);

impl Body for BlockPayload {
    const BYTES_MAX: usize = BLOCK_BYTES_MAX;

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(self.0.len() <= BLOCK_BYTES_MAX, "our block is too large");
        out.extend_from_slice(&self.0);
    }

    fn decode(bytes: &[u8]) -> Result<BlockPayload, ReqRespDecodeError> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return Err(ReqRespDecodeError::TooLarge {
                field: "block",
                length: bytes.len() as u64,
                limit: BLOCK_BYTES_MAX as u64,
            });
        }
        Ok(BlockPayload(bytes.to_vec()))
    }
}

/// Checks a request body against its protocol's layout and returns the most
/// success chunks its response may carry: 1 for Status, Ping, Metadata and
/// application protocols, 0 for Goodbye (never answered), the count for
/// BlocksByRange and the number of roots for BlocksByRoot. This is also the
/// request's rate-limit cost (at least 1).
pub fn response_chunks_max(protocol: &ProtocolId, body: &[u8]) -> Result<u64, ReqRespDecodeError> {
    Ok(match protocol {
        ProtocolId::Status => Status::decode(body).map(|_| 1)?,
        ProtocolId::Ping => Ping::decode(body).map(|_| 1)?,
        ProtocolId::Metadata => MetadataRequest::decode(body).map(|_| 1)?,
        ProtocolId::Goodbye => Goodbye::decode(body).map(|_| 0)?,
        ProtocolId::BlocksByRange => BlocksByRangeRequest::decode(body)?.count,
        ProtocolId::BlocksByRoot => BlocksByRootRequest::decode(body)?.roots.len() as u64,
        ProtocolId::FindNode | ProtocolId::PeerRecord => {
            let expected = protocol.request_bytes_max();
            if body.len() != expected {
                return Err(ReqRespDecodeError::TooLarge {
                    field: "discovery request",
                    length: body.len() as u64,
                    limit: expected as u64,
                });
            }
            1
        }
        ProtocolId::Application(_) => {
            if body.len() > APPLICATION_REQUEST_BYTES_MAX {
                return Err(ReqRespDecodeError::TooLarge {
                    field: "application request",
                    length: body.len() as u64,
                    limit: APPLICATION_REQUEST_BYTES_MAX as u64,
                });
            }
            1
        }
    })
}

/// The rate-limit cost of a request whose response may carry `chunks_max` chunks.
pub fn request_cost(chunks_max: u64) -> u64 {
    chunks_max.max(1)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;

    fn round_trip<B: Body + PartialEq + std::fmt::Debug>(body: &B) {
        let bytes = body.encode();
        assert!(bytes.len() <= B::BYTES_MAX, "{body:?}");
        assert_eq!(&B::decode(&bytes).unwrap(), body);
        // Every strict prefix is truncated and every extension has trailing bytes.
        for cut in 0..bytes.len() {
            assert!(B::decode(&bytes[..cut]).is_err(), "{body:?} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(B::decode(&longer).is_err(), "{body:?} with a trailing byte");
    }

    fn status() -> Status {
        Status {
            network_id: 7,
            finalized_root: Root([1; 32]),
            finalized_slot: 100,
            head_root: Root([2; 32]),
            head_slot: 164,
        }
    }

    #[test]
    fn bodies_round_trip_and_refuse_truncation_and_trailing_bytes() {
        round_trip(&status());
        round_trip(&Ping {
            metadata_seq: u64::MAX,
        });
        round_trip(&Goodbye {
            reason: GoodbyeReason::BadScore,
        });
        round_trip(&Metadata {
            seq: 3,
            topics: vec!["/meshsync/blocks/1".into(), "t".into()],
            capabilities: 0b101,
        });
        round_trip(&Metadata {
            seq: 0,
            topics: (0..METADATA_TOPICS_MAX)
                .map(|i| format!("{i:0>128}"))
                .collect(),
            capabilities: u64::MAX,
        });
        round_trip(&BlocksByRangeRequest {
            start_slot: u64::MAX - 64,
            count: 64,
        });
        round_trip(&BlocksByRootRequest {
            roots: (0..128u8).map(|i| Root([i; 32])).collect(),
        });
        round_trip(&BlocksByRootRequest {
            roots: vec![Root([9; 32])],
        });
        assert_eq!(MetadataRequest::decode(&[]), Ok(MetadataRequest));
        assert_eq!(
            MetadataRequest::decode(&[0]),
            Err(ReqRespDecodeError::TrailingBytes { count: 1 })
        );
        let block = BlockPayload(vec![5; BLOCK_BYTES_MAX]);
        assert_eq!(BlockPayload::decode(&block.encode()), Ok(block));
    }

    #[test]
    fn metadata_is_the_largest_of_its_bound() {
        let full = Metadata {
            seq: 0,
            topics: vec!["x".repeat(TOPIC_BYTES_MAX); METADATA_TOPICS_MAX],
            capabilities: 0,
        };
        assert_eq!(full.encode().len(), Metadata::BYTES_MAX);
    }

    #[test]
    fn status_layout_is_fixed() {
        let bytes = status().encode();
        assert_eq!(bytes.len(), 88);
        assert_eq!(bytes[..8], 7u64.to_be_bytes());
        assert_eq!(bytes[8..40], [1; 32]);
        assert_eq!(bytes[40..48], 100u64.to_be_bytes());
        assert_eq!(bytes[48..80], [2; 32]);
        assert_eq!(bytes[80..88], 164u64.to_be_bytes());
    }

    #[test]
    fn oversize_counts_are_refused_before_allocating() {
        let mut bytes = vec![0; 16];
        bytes.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Metadata::decode(&bytes),
            Err(ReqRespDecodeError::Count {
                field: "topic",
                count: 65_535,
                min: 0,
                max: 64
            })
        );
        assert_eq!(
            BlocksByRootRequest::decode(&u16::MAX.to_be_bytes()),
            Err(ReqRespDecodeError::Count {
                field: "root",
                count: 65_535,
                min: 1,
                max: 128
            })
        );
        assert!(matches!(
            BlocksByRootRequest::decode(&129u16.to_be_bytes()),
            Err(ReqRespDecodeError::Count { count: 129, .. })
        ));
        assert!(matches!(
            BlocksByRootRequest::decode(&0u16.to_be_bytes()),
            Err(ReqRespDecodeError::Count { count: 0, .. })
        ));
        // 128 roots declared, one present: refused without reserving 128.
        let mut bytes = 128u16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        assert_eq!(
            BlocksByRootRequest::decode(&bytes),
            Err(ReqRespDecodeError::Truncated { field: "roots" })
        );
        for count in [0, 65, u64::MAX] {
            let mut bytes = 5u64.to_be_bytes().to_vec();
            bytes.extend_from_slice(&count.to_be_bytes());
            assert!(matches!(
                BlocksByRangeRequest::decode(&bytes),
                Err(ReqRespDecodeError::Count { .. })
            ));
        }
        let mut bytes = (u64::MAX - 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(
            BlocksByRangeRequest::decode(&bytes),
            Err(ReqRespDecodeError::SlotOverflow)
        );
        assert!(matches!(
            BlockPayload::decode(&vec![0; BLOCK_BYTES_MAX + 1]),
            Err(ReqRespDecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_topics_are_refused() {
        let encode_raw = |topic: &[u8]| {
            let mut bytes = vec![0; 16];
            bytes.extend_from_slice(&1u16.to_be_bytes());
            bytes.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            bytes.extend_from_slice(topic);
            bytes
        };
        assert!(Metadata::decode(&encode_raw(b"ok")).is_ok());
        for topic in [&b""[..], b"a b", b"\xff", &[b'a'; 129]] {
            assert_eq!(
                Metadata::decode(&encode_raw(topic)),
                Err(ReqRespDecodeError::InvalidString { field: "topic" }),
                "{topic:?}"
            );
        }
        // A huge declared topic length is refused before reading it.
        let mut bytes = vec![0; 16];
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Metadata::decode(&bytes),
            Err(ReqRespDecodeError::InvalidString { field: "topic" })
        );
    }

    #[test]
    #[should_panic(expected = "breaks its limits")]
    fn encoding_invalid_metadata_is_a_bug() {
        Metadata {
            seq: 0,
            topics: vec!["has space".into()],
            capabilities: 0,
        }
        .encode();
    }

    #[test]
    fn chunk_bounds_follow_the_request() {
        let range = BlocksByRangeRequest {
            start_slot: 10,
            count: 33,
        }
        .encode();
        assert_eq!(
            response_chunks_max(&ProtocolId::BlocksByRange, &range),
            Ok(33)
        );
        let roots = BlocksByRootRequest {
            roots: vec![Root([0; 32]); 7],
        }
        .encode();
        assert_eq!(
            response_chunks_max(&ProtocolId::BlocksByRoot, &roots),
            Ok(7)
        );
        assert_eq!(
            response_chunks_max(&ProtocolId::Status, &status().encode()),
            Ok(1)
        );
        assert_eq!(response_chunks_max(&ProtocolId::Metadata, &[]), Ok(1));
        let goodbye = Goodbye {
            reason: GoodbyeReason::ClientShutdown,
        };
        assert_eq!(
            response_chunks_max(&ProtocolId::Goodbye, &goodbye.encode()),
            Ok(0)
        );
        assert!(response_chunks_max(&ProtocolId::Ping, &[1, 2]).is_err());
        assert!(response_chunks_max(&ProtocolId::BlocksByRange, &roots).is_err());
        assert_eq!(request_cost(0), 1);
        assert_eq!(request_cost(64), 64);
    }
}
