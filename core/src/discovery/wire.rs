//! The bodies of discovery's two request/response protocols: FIND_NODE
//! (the records nearest a target) and the record exchange (a peer's own
//! record), with their tags, bounds and quotas.
//!
//! # Design
//! Both ride the req/resp layer like the built-in protocols (a Request of
//! kind 16 with the tag, one success chunk, then the End); the bodies here
//! are what its snappy frames carry, uncompressed. Integers are big-endian
//! and fixed-width; counts are checked before anything is allocated, and
//! every record is verified (`record.rs`) for our network.
//!
//! ```text
//! FIND_NODE request (tag 7)        32 bytes: target key
//! FIND_NODE answer                 count u8 (0..=16), then count × (length u16 (1..=190), record)
//! PEER_RECORD request (tag 8)      empty
//! PEER_RECORD answer               the responder's own record (≤ 190 bytes), then the
//!                                  requester's address as the responder's connection
//!                                  sees it (family u8, 4 or 16 IP bytes, port u16: ≤ 19 bytes)
//! ```
//!
//! The observed address is libp2p identify's `observedAddr`: a node behind
//! an unspecified listen address learns from it where peers can reach it
//! (`observed.rs` decides when enough peers agree).
//!
//! The req/resp layer knows them as `ProtocolId::FindNode` and
//! `ProtocolId::PeerRecord`, with the byte bounds below restated in
//! `crate::reqresp::limits` (checked equal here, since req/resp must not
//! import discovery); the node serves and sends them only when it runs
//! discovery (`node/discovery.rs`), and refuses them as unsupported otherwise.
//!
//! # Security
//! *Provided*: decoders never panic, check the whole length and every count
//! against [`FIND_NODE_ANSWER_BYTES_MAX`] and [`BUCKET_ENTRIES_MAX`] before
//! allocating, refuse duplicate peers in one answer, and verify each record;
//! each error maps to a penalty ([`WireError::penalty`]).
//! *Not provided*: that an answer's records are really the nearest the
//! responder knows (a lookup trusts no single answer; `lookup.rs`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use crate::identity::PeerId;
use crate::peer::Penalty;
use crate::reqresp::rate::Quota;

use super::key::Key;
use super::limits::{
    ADDRESS_BYTES_MAX, BUCKET_ENTRIES_MAX, FIND_NODE_QUOTA, FIND_NODE_TAG, PEER_RECORD_QUOTA,
    PEER_RECORD_TAG, RECORD_BYTES_MAX,
};
use super::record::{address_bytes, encode_address_into, Reader, Record, RecordError, Unverified};

/// Bytes of a FIND_NODE request body.
pub const FIND_NODE_REQUEST_BYTES: usize = 32;
/// Longest FIND_NODE answer: a count and 16 length-prefixed records (3 073 bytes).
pub const FIND_NODE_ANSWER_BYTES_MAX: usize = 1 + BUCKET_ENTRIES_MAX * (2 + RECORD_BYTES_MAX);
/// Bytes of a record-exchange request body.
pub const PEER_RECORD_REQUEST_BYTES: usize = 0;
/// Longest record-exchange answer: the largest record and the largest
/// (IPv6) observed address (209 bytes).
pub const PEER_RECORD_ANSWER_BYTES_MAX: usize = RECORD_BYTES_MAX + ADDRESS_BYTES_MAX;

const _: () =
    assert!(FIND_NODE_ANSWER_BYTES_MAX <= crate::reqresp::limits::RESPONSE_PAYLOAD_BYTES_MAX);
const _: () =
    assert!(FIND_NODE_ANSWER_BYTES_MAX == crate::reqresp::limits::FIND_NODE_ANSWER_BYTES_MAX);
const _: () = assert!(FIND_NODE_REQUEST_BYTES == crate::reqresp::limits::FIND_NODE_REQUEST_BYTES);
const _: () =
    assert!(PEER_RECORD_ANSWER_BYTES_MAX == crate::reqresp::limits::PEER_RECORD_ANSWER_BYTES_MAX);
const _: () =
    assert!(PEER_RECORD_ANSWER_BYTES_MAX <= crate::reqresp::limits::RESPONSE_PAYLOAD_BYTES_MAX);

/// Discovery's request/response protocols.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum DiscoveryProtocol {
    /// Tag 7: the records nearest a target.
    FindNode,
    /// Tag 8: the responder's own current record.
    PeerRecord,
}

impl DiscoveryProtocol {
    /// Both, in tag order.
    pub const ALL: [DiscoveryProtocol; 2] =
        [DiscoveryProtocol::FindNode, DiscoveryProtocol::PeerRecord];

    /// The tag byte in a Request.
    pub const fn tag(&self) -> u8 {
        match self {
            DiscoveryProtocol::FindNode => FIND_NODE_TAG,
            DiscoveryProtocol::PeerRecord => PEER_RECORD_TAG,
        }
    }

    /// The protocol of a tag, if it is one of these.
    pub const fn from_tag(tag: u8) -> Option<DiscoveryProtocol> {
        match tag {
            FIND_NODE_TAG => Some(DiscoveryProtocol::FindNode),
            PEER_RECORD_TAG => Some(DiscoveryProtocol::PeerRecord),
            _ => None,
        }
    }

    /// The name in logs and metrics.
    pub const fn name(&self) -> &'static str {
        match self {
            DiscoveryProtocol::FindNode => "find_node",
            DiscoveryProtocol::PeerRecord => "peer_record",
        }
    }

    /// Largest uncompressed request body.
    pub const fn request_bytes_max(&self) -> usize {
        match self {
            DiscoveryProtocol::FindNode => FIND_NODE_REQUEST_BYTES,
            DiscoveryProtocol::PeerRecord => PEER_RECORD_REQUEST_BYTES,
        }
    }

    /// Largest uncompressed payload of the one success chunk.
    pub const fn response_bytes_max(&self) -> usize {
        match self {
            DiscoveryProtocol::FindNode => FIND_NODE_ANSWER_BYTES_MAX,
            DiscoveryProtocol::PeerRecord => PEER_RECORD_ANSWER_BYTES_MAX,
        }
    }

    /// Success chunks in a response: exactly one.
    pub const fn chunks_max(&self) -> u64 {
        1
    }

    /// Requests one peer may make of us.
    pub const fn quota(&self) -> Quota {
        match self {
            DiscoveryProtocol::FindNode => FIND_NODE_QUOTA,
            DiscoveryProtocol::PeerRecord => PEER_RECORD_QUOTA,
        }
    }
}

impl fmt::Display for DiscoveryProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a discovery body was refused. All are the sender's fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireError {
    /// The body is longer than its protocol allows; nothing was read.
    TooLarge {
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Truncated, trailing bytes, or a record length outside 1..=190.
    Malformed {
        /// The field that broke the layout.
        field: &'static str,
    },
    /// More records than [`BUCKET_ENTRIES_MAX`].
    Count {
        /// The count received.
        count: usize,
    },
    /// One answer names a peer twice.
    DuplicatePeer,
    /// A record-exchange answer is another peer's record.
    WrongPeer,
    /// The `index`-th record was refused.
    Record {
        /// Its position in the answer.
        index: usize,
        /// Why.
        error: RecordError,
    },
}

impl WireError {
    /// What the sender is penalised with: High for a broken layout, a
    /// count over the bound, a duplicate or someone else's record as one's
    /// own; a refused record costs what `RecordError::penalty` says.
    pub fn penalty(&self) -> Penalty {
        match self {
            WireError::TooLarge { .. }
            | WireError::Malformed { .. }
            | WireError::Count { .. }
            | WireError::DuplicatePeer
            | WireError::WrongPeer => Penalty::High,
            WireError::Record { error, .. } => error.penalty(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { length, limit } => {
                write!(f, "body of {length} bytes exceeds {limit}")
            }
            WireError::Malformed { field } => write!(f, "malformed at {field}"),
            WireError::Count { count } => {
                write!(f, "{count} records exceed {BUCKET_ENTRIES_MAX}")
            }
            WireError::DuplicatePeer => write!(f, "a peer named twice"),
            WireError::WrongPeer => write!(f, "another peer's record"),
            WireError::Record { index, error } => write!(f, "record {index}: {error}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<RecordError> for WireError {
    fn from(error: RecordError) -> WireError {
        match error {
            RecordError::Malformed { field } => WireError::Malformed { field },
            error => WireError::Record { index: 0, error },
        }
    }
}

/// A FIND_NODE request: which point of the key space to answer about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FindNodeRequest {
    /// The target key (sha256 of a peer id, or any 32 bytes for a random walk).
    pub target: Key,
}

impl FindNodeRequest {
    /// The 32-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.target.0.to_vec()
    }

    /// Decodes exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<FindNodeRequest, WireError> {
        if bytes.len() > FIND_NODE_REQUEST_BYTES {
            return Err(WireError::TooLarge {
                length: bytes.len(),
                limit: FIND_NODE_REQUEST_BYTES,
            });
        }
        let target: [u8; FIND_NODE_REQUEST_BYTES] = bytes
            .try_into()
            .map_err(|_| WireError::Malformed { field: "target" })?;
        Ok(FindNodeRequest {
            target: Key(target),
        })
    }
}

/// A FIND_NODE answer: up to [`BUCKET_ENTRIES_MAX`] records, nearest first
/// (by the responder's account), of distinct peers.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FindNodeAnswer {
    /// The records.
    pub records: Vec<Record>,
}

impl FindNodeAnswer {
    /// The encoding.
    ///
    /// # Panics
    /// With more than [`BUCKET_ENTRIES_MAX`] records: we never send what
    /// we would refuse.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.records.len() <= BUCKET_ENTRIES_MAX,
            "an answer carries at most {BUCKET_ENTRIES_MAX} records"
        );
        let mut out = Vec::with_capacity(FIND_NODE_ANSWER_BYTES_MAX);
        // Cannot truncate: at most BUCKET_ENTRIES_MAX, checked below u8::MAX.
        out.push(self.records.len() as u8);
        for record in &self.records {
            // Cannot truncate: at most RECORD_BYTES_MAX, checked below u16::MAX.
            out.extend_from_slice(&(record.encoded_len() as u16).to_be_bytes());
            record.encode_into(&mut out);
        }
        out
    }

    /// Decodes exactly `bytes`, verifying every record for `network_id`.
    pub fn decode(bytes: &[u8], network_id: u64) -> Result<FindNodeAnswer, WireError> {
        if bytes.len() > FIND_NODE_ANSWER_BYTES_MAX {
            return Err(WireError::TooLarge {
                length: bytes.len(),
                limit: FIND_NODE_ANSWER_BYTES_MAX,
            });
        }
        let mut reader = Reader::new(bytes);
        let count = usize::from(reader.array::<1>("record count")?[0]);
        if count > BUCKET_ENTRIES_MAX {
            return Err(WireError::Count { count });
        }
        let mut records = Vec::with_capacity(count);
        let mut peers = BTreeSet::new();
        for index in 0..count {
            let length = usize::from(u16::from_be_bytes(reader.array("record length")?));
            if length == 0 || length > RECORD_BYTES_MAX {
                return Err(WireError::Malformed {
                    field: "record length",
                });
            }
            let record_bytes = reader.bytes(length, "record")?;
            let record = Record::decode(record_bytes, network_id)
                .map_err(|error| WireError::Record { index, error })?;
            if !peers.insert(record.peer()) {
                return Err(WireError::DuplicatePeer);
            }
            records.push(record);
        }
        reader.finish()?;
        Ok(FindNodeAnswer { records })
    }
}

/// Decodes a record-exchange request body (empty).
pub fn decode_peer_record_request(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() > PEER_RECORD_REQUEST_BYTES {
        return Err(WireError::TooLarge {
            length: bytes.len(),
            limit: PEER_RECORD_REQUEST_BYTES,
        });
    }
    Ok(())
}

/// A record-exchange answer: the responder's own record, and where the
/// responder sees the requester.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerRecordAnswer {
    /// The responder's record.
    pub record: Record,
    /// The requester's address as the responder's connection sees it: its
    /// remote address, IPv4-mapped IPv6 written as IPv4. Only a hint: the
    /// responder may lie, and the port of a connection the requester
    /// dialled is an ephemeral one.
    pub observed: SocketAddr,
}

impl PeerRecordAnswer {
    /// The answer of `record`'s author to a requester it sees at `observed`.
    pub fn new(record: Record, observed: SocketAddr) -> PeerRecordAnswer {
        // A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d; the
        // requester knows itself by its IPv4 address.
        let observed = SocketAddr::new(observed.ip().to_canonical(), observed.port());
        PeerRecordAnswer { record, observed }
    }

    /// The encoding: the record, then the observed address.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.record
                .encoded_len()
                .saturating_add(address_bytes(&self.observed)),
        );
        self.record.encode_into(&mut out);
        encode_address_into(&self.observed, &mut out);
        out
    }

    /// Decodes exactly `bytes` from `expected`: its own record, for
    /// `network_id`, and an observed address. The length is checked first,
    /// then the layout of both, then the record's network and signature.
    pub fn decode(
        bytes: &[u8],
        network_id: u64,
        expected: PeerId,
    ) -> Result<PeerRecordAnswer, WireError> {
        if bytes.len() > PEER_RECORD_ANSWER_BYTES_MAX {
            return Err(WireError::TooLarge {
                length: bytes.len(),
                limit: PEER_RECORD_ANSWER_BYTES_MAX,
            });
        }
        let mut reader = Reader::new(bytes);
        let unverified = Unverified::read(&mut reader)?;
        // Refused like a malformed record: no honest responder writes it.
        let observed = reader.address().map_err(|_| WireError::Malformed {
            field: "observed address",
        })?;
        reader.finish()?;
        let record = unverified
            .verify(network_id)
            .map_err(|error| WireError::Record { index: 0, error })?;
        if record.peer() != expected {
            return Err(WireError::WrongPeer);
        }
        Ok(PeerRecordAnswer { record, observed })
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests build their own fixtures.
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::identity::Identity;

    const NETWORK: u64 = 3;

    fn record(seed: u64) -> Record {
        let addr: SocketAddr = format!("203.0.113.{}:9000", seed % 250 + 1)
            .parse()
            .unwrap();
        Record::sign(&Identity::from_seed(seed), NETWORK, seed, &[addr])
    }

    #[test]
    fn find_node_request_is_exactly_32_bytes() {
        let request = FindNodeRequest {
            target: Key([9; 32]),
        };
        assert_eq!(FindNodeRequest::decode(&request.encode()), Ok(request));
        assert!(matches!(
            FindNodeRequest::decode(&[0; 31]),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            FindNodeRequest::decode(&[0; 33]),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn find_node_answer_round_trips_and_its_largest_fits_the_bound() {
        for count in [0, 1, BUCKET_ENTRIES_MAX] {
            let answer = FindNodeAnswer {
                records: (1..=count as u64).map(record).collect(),
            };
            let bytes = answer.encode();
            assert_eq!(FindNodeAnswer::decode(&bytes, NETWORK), Ok(answer));
        }
        assert_eq!(FIND_NODE_ANSWER_BYTES_MAX, 3_073);
    }

    #[test]
    fn find_node_answer_refuses_counts_duplicates_and_bad_records() {
        let mut over = vec![BUCKET_ENTRIES_MAX as u8 + 1];
        over.extend_from_slice(&[0; 64]);
        assert_eq!(
            FindNodeAnswer::decode(&over, NETWORK),
            Err(WireError::Count {
                count: BUCKET_ENTRIES_MAX + 1
            })
        );
        let twice = FindNodeAnswer {
            records: vec![record(1), record(1)],
        };
        assert_eq!(
            FindNodeAnswer::decode(&twice.encode(), NETWORK),
            Err(WireError::DuplicatePeer)
        );
        let mut forged = FindNodeAnswer {
            records: vec![record(1), record(2)],
        }
        .encode();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let error = FindNodeAnswer::decode(&forged, NETWORK).unwrap_err();
        assert_eq!(
            error,
            WireError::Record {
                index: 1,
                error: RecordError::BadSignature
            }
        );
        assert_eq!(error.penalty(), Penalty::High);
        let other = FindNodeAnswer::decode(&twice.encode(), NETWORK + 1).unwrap_err();
        assert_eq!(other.penalty(), Penalty::Mid, "{other:?}");
        // A count promising more than the bytes hold.
        assert!(matches!(
            FindNodeAnswer::decode(&[3, 0, 5], NETWORK),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            FindNodeAnswer::decode(&[1, 0, 0], NETWORK),
            Err(WireError::Malformed {
                field: "record length"
            })
        ));
        let long = vec![0; FIND_NODE_ANSWER_BYTES_MAX + 1];
        assert!(matches!(
            FindNodeAnswer::decode(&long, NETWORK),
            Err(WireError::TooLarge { .. })
        ));
        let mut trailing = FindNodeAnswer::default().encode();
        trailing.push(0);
        assert!(matches!(
            FindNodeAnswer::decode(&trailing, NETWORK),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn record_exchange_checks_the_peer() {
        assert_eq!(decode_peer_record_request(&[]), Ok(()));
        assert!(decode_peer_record_request(&[0]).is_err());
        let own = record(4);
        let observed: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let answer = PeerRecordAnswer::new(own.clone(), observed);
        assert_eq!(
            PeerRecordAnswer::decode(&answer.encode(), NETWORK, own.peer()),
            Ok(answer.clone())
        );
        assert_eq!(
            PeerRecordAnswer::decode(&answer.encode(), NETWORK, record(5).peer()),
            Err(WireError::WrongPeer)
        );
        assert!(matches!(
            PeerRecordAnswer::decode(&[0; PEER_RECORD_ANSWER_BYTES_MAX + 1], NETWORK, own.peer()),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_observed_address_follows_the_record_and_is_checked_like_it() {
        let own = record(6);
        let v4: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:40123".parse().unwrap();
        assert_eq!(PeerRecordAnswer::new(own.clone(), mapped).observed, v4);
        let bytes = PeerRecordAnswer::new(own.clone(), v4).encode();
        assert_eq!(bytes.len(), own.encoded_len() + 7);
        assert_eq!(&bytes[..own.encoded_len()], &own.encode()[..]);
        assert_eq!(
            &bytes[own.encoded_len()..],
            &[4, 198, 51, 100, 7, 0x9c, 0xbb]
        );
        // The record alone, as a node before the observed address sent it.
        let error = PeerRecordAnswer::decode(&own.encode(), NETWORK, own.peer()).unwrap_err();
        assert_eq!(
            error,
            WireError::Malformed {
                field: "observed address"
            }
        );
        assert_eq!(error.penalty(), Penalty::High);
        // An unknown family, a cut address, trailing bytes.
        let mut family = bytes.clone();
        family[own.encoded_len()] = 5;
        let mut cut = bytes.clone();
        cut.pop();
        let mut trailing = bytes.clone();
        trailing.push(0);
        for broken in [family, cut, trailing] {
            let error = PeerRecordAnswer::decode(&broken, NETWORK, own.peer()).unwrap_err();
            assert!(matches!(error, WireError::Malformed { .. }), "{error:?}");
            assert_eq!(error.penalty(), Penalty::High);
        }
        // The largest answer: the largest record and an IPv6 address.
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let largest = Record::sign(&Identity::from_seed(9), NETWORK, u64::MAX, &[v6; 4]);
        let answer = PeerRecordAnswer::new(largest.clone(), v6);
        let bytes = answer.encode();
        assert_eq!(bytes.len(), PEER_RECORD_ANSWER_BYTES_MAX);
        assert_eq!(
            PeerRecordAnswer::decode(&bytes, NETWORK, largest.peer()),
            Ok(answer)
        );
        // A forged record is refused whatever follows it.
        let mut forged = PeerRecordAnswer::new(own.clone(), v4).encode();
        forged[own.encoded_len() - 1] ^= 1;
        assert_eq!(
            PeerRecordAnswer::decode(&forged, NETWORK, own.peer()),
            Err(WireError::Record {
                index: 0,
                error: RecordError::BadSignature
            })
        );
    }

    #[test]
    fn tags_sit_next_to_the_built_in_protocols() {
        for protocol in DiscoveryProtocol::ALL {
            assert_eq!(DiscoveryProtocol::from_tag(protocol.tag()), Some(protocol));
            assert!(crate::reqresp::ProtocolId::BUILT_IN
                .iter()
                .all(|built_in| built_in.tag() != protocol.tag()));
            assert!(
                protocol.response_bytes_max() <= crate::reqresp::limits::RESPONSE_PAYLOAD_BYTES_MAX
            );
        }
        assert_eq!(DiscoveryProtocol::from_tag(6), None);
    }
}
