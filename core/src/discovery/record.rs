//! Signed peer records: who a peer is, where it listens, on which network,
//! and how fresh that statement is.
//!
//! # Design
//! A [`Record`] names a `PeerId`, 0 to [`ADDRESSES_PER_RECORD_MAX`] socket
//! addresses, the network id (the `u64` the handshake's Hello and the
//! genesis carry) and a sequence number, signed by the peer's Ed25519
//! identity over `"meshsync-peer-record-v1" ‖ encoding without signature`,
//! so a record can be relayed by anyone and still proves its author. A
//! record with a higher sequence number replaces an older one of the same
//! peer ([`Record::supersedes`]); an equal or lower one is ignored.
//!
//! A record may name no address: a node behind an unspecified listen
//! address (`0.0.0.0`) starts that way and still looks up and dials
//! others, until its peers tell it where they see it (`observed.rs`).
//! Nobody dials it meanwhile: the table and the candidates keep only
//! records with a dialable address (`address::first_dialable`).
//!
//! ```text
//! offset      size  field
//! 0           1     version = 1
//! 1           32    peer id (Ed25519 public key)
//! 33          8     network id, u64
//! 41          8     sequence number, u64
//! 49          1     address count n, 0..=4
//! 50          ..    n addresses: family u8 (4 or 6), 4 or 16 address bytes, port u16
//! ..          64    Ed25519 signature over domain ‖ bytes 0..(here)
//! ```
//!
//! # Security
//! *Provided*: the length is checked against [`RECORD_BYTES_MAX`] before
//! anything is read, counts before anything is allocated; the network is
//! checked before the (costlier) signature; signatures are verified with
//! `verify_strict` (no small-order keys, no malleable signatures); the
//! encoding is canonical, so a record has one byte form.
//! *Not provided*: that the addresses are the signer's (see
//! `address.rs` for which are accepted), or that the signer is honest.
//!
//! # Limits
//! [`RECORD_BYTES_MAX`] (190 bytes), [`ADDRESSES_PER_RECORD_MAX`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::identity::{Identity, PeerId};
use crate::peer::Penalty;

use super::limits::{
    ADDRESSES_PER_RECORD_MAX, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, RECORD_SIGNATURE_BYTES,
};

/// Prefix of every signed record message: a signature made for a record can
/// be used for nothing else (the handshake signs another domain).
pub const RECORD_SIGNATURE_DOMAIN: &[u8] = b"meshsync-peer-record-v1";
/// The version byte this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Family byte of an IPv4 address.
const FAMILY_V4: u8 = 4;
/// Family byte of an IPv6 address.
const FAMILY_V6: u8 = 6;

/// A signed peer record. Made only by [`Record::sign`] or [`Record::decode`],
/// so every value carries a valid signature of its peer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    peer: PeerId,
    network_id: u64,
    seq: u64,
    addresses: Vec<SocketAddr>,
    signature: [u8; 64],
}

/// As its network id and its encoding; read back through
/// [`Record::decode`], so the signature is checked again.
impl serde::Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(self.network_id, self.encode()), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Record, D::Error> {
        let (network_id, bytes): (u64, Vec<u8>) = serde::Deserialize::deserialize(deserializer)?;
        Record::decode(&bytes, network_id)
            .map_err(|error| serde::de::Error::custom(format_args!("a peer record: {error:?}")))
    }
}

/// Why bytes were not a record we accept. Every variant is the sender's
/// fault; [`RecordError::penalty`] says what it costs the peer that sent
/// the bytes (the author, or the peer that relayed them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecordError {
    /// Longer than [`RECORD_BYTES_MAX`]; nothing was read.
    TooLarge {
        /// The length received.
        length: usize,
    },
    /// Truncated, trailing bytes, an address count above 4, or an
    /// unknown address family.
    Malformed {
        /// The field that broke its layout.
        field: &'static str,
    },
    /// A version byte this code does not know.
    UnknownVersion(u8),
    /// Signed for another network.
    WrongNetwork {
        /// Ours.
        expected: u64,
        /// The record's.
        actual: u64,
    },
    /// The signature is not the named peer's over these bytes.
    BadSignature,
}

impl RecordError {
    /// What the peer that sent these bytes is penalised with (the peer
    /// manager's vocabulary, `crate::peer::Penalty`):
    ///
    /// | error | penalty | why |
    /// |---|---|---|
    /// | `TooLarge`, `Malformed` | High | no honest encoder writes it |
    /// | `BadSignature` | High | an honest relayer verifies before it keeps a record; not Fatal, since two Ed25519 implementations may disagree on edge-case signatures |
    /// | `WrongNetwork` | Mid | a misconfigured peer, or records relayed across networks |
    /// | `UnknownVersion` | Low | a newer peer may relay a newer record |
    pub fn penalty(&self) -> Penalty {
        match self {
            RecordError::TooLarge { .. }
            | RecordError::Malformed { .. }
            | RecordError::BadSignature => Penalty::High,
            RecordError::WrongNetwork { .. } => Penalty::Mid,
            RecordError::UnknownVersion(_) => Penalty::Low,
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooLarge { length } => {
                write!(f, "record of {length} bytes exceeds {RECORD_BYTES_MAX}")
            }
            RecordError::Malformed { field } => write!(f, "malformed record at {field}"),
            RecordError::UnknownVersion(version) => write!(f, "unknown record version {version}"),
            RecordError::WrongNetwork { expected, actual } => {
                write!(f, "record of network {actual}, ours is {expected}")
            }
            RecordError::BadSignature => write!(f, "record signature does not verify"),
        }
    }
}

impl std::error::Error for RecordError {}

impl Record {
    /// Our record: `addresses` signed by `identity` for `network_id` at `seq`.
    ///
    /// # Panics
    /// If `addresses` is longer than [`ADDRESSES_PER_RECORD_MAX`]: we never
    /// sign what we would refuse.
    pub fn sign(
        identity: &Identity,
        network_id: u64,
        seq: u64,
        addresses: &[SocketAddr],
    ) -> Record {
        assert!(
            addresses.len() <= ADDRESSES_PER_RECORD_MAX,
            "a record names 0..={ADDRESSES_PER_RECORD_MAX} addresses, not {}",
            addresses.len()
        );
        let mut record = Record {
            peer: identity.peer_id(),
            network_id,
            seq,
            addresses: addresses.to_vec(),
            signature: [0; 64],
        };
        let mut message = RECORD_SIGNATURE_DOMAIN.to_vec();
        record.encode_unsigned_into(&mut message);
        record.signature = identity.sign(&message);
        record
    }

    /// The peer that signed it.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The network it was signed for.
    pub fn network_id(&self) -> u64 {
        self.network_id
    }

    /// Its sequence number: higher is newer.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The addresses it names, in the signer's order of preference.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Whether this record should replace `older`: same peer, higher
    /// sequence number. An equal or lower one is ignored.
    pub fn supersedes(&self, older: &Record) -> bool {
        self.peer == older.peer && self.seq > older.seq
    }

    /// The encoding's length in bytes.
    pub fn encoded_len(&self) -> usize {
        // At most ADDRESSES_PER_RECORD_MAX addresses: no overflow is possible.
        let addresses = self
            .addresses
            .iter()
            .map(address_bytes)
            .fold(0usize, usize::saturating_add);
        RECORD_HEADER_BYTES
            .saturating_add(addresses)
            .saturating_add(RECORD_SIGNATURE_BYTES)
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_unsigned_into(out);
        out.extend_from_slice(&self.signature);
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    fn encode_unsigned_into(&self, out: &mut Vec<u8>) {
        out.push(RECORD_VERSION);
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&self.network_id.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        // Cannot truncate: at most ADDRESSES_PER_RECORD_MAX, checked below u8::MAX.
        out.push(self.addresses.len() as u8);
        for addr in &self.addresses {
            encode_address_into(addr, out);
        }
    }

    /// Decodes exactly `bytes` and verifies the record for `network_id`.
    /// Checks, in order: the length, the layout, the version, the network,
    /// the signature.
    pub fn decode(bytes: &[u8], network_id: u64) -> Result<Record, RecordError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge {
                length: bytes.len(),
            });
        }
        let mut reader = Reader::new(bytes);
        let unverified = Unverified::read(&mut reader)?;
        reader.finish()?;
        unverified.verify(network_id)
    }
}

/// A record whose layout was read and whose signature is not yet checked:
/// the first half of [`Record::decode`], shared with decoders that carry a
/// record followed by more fields (the record-exchange answer).
pub(super) struct Unverified<'a> {
    /// The bytes the signature covers (after the domain).
    signed: &'a [u8],
    record: Record,
}

impl<'a> Unverified<'a> {
    /// Reads one record's layout from `reader`, leaving it after the
    /// signature. The caller bounds the length first.
    pub(super) fn read(reader: &mut Reader<'a>) -> Result<Unverified<'a>, RecordError> {
        let start = reader.rest;
        let version = reader.array::<1>("version")?[0];
        if version != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let peer = PeerId::from_bytes(reader.array("peer id")?);
        let network_id = u64::from_be_bytes(reader.array("network id")?);
        let seq = u64::from_be_bytes(reader.array("sequence number")?);
        let count = usize::from(reader.array::<1>("address count")?[0]);
        if count > ADDRESSES_PER_RECORD_MAX {
            return Err(RecordError::Malformed {
                field: "address count",
            });
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            addresses.push(reader.address()?);
        }
        let signed_len = start.len().saturating_sub(reader.remaining());
        let signature = reader.array::<64>("signature")?;
        Ok(Unverified {
            signed: &start[..signed_len],
            record: Record {
                peer,
                network_id,
                seq,
                addresses,
                signature,
            },
        })
    }

    /// The record, if it is for `network_id` and its signature verifies.
    pub(super) fn verify(self, network_id: u64) -> Result<Record, RecordError> {
        let record = self.record;
        if record.network_id != network_id {
            return Err(RecordError::WrongNetwork {
                expected: network_id,
                actual: record.network_id,
            });
        }
        let mut message = Vec::with_capacity(
            RECORD_SIGNATURE_DOMAIN
                .len()
                .saturating_add(self.signed.len()),
        );
        message.extend_from_slice(RECORD_SIGNATURE_DOMAIN);
        message.extend_from_slice(self.signed);
        if !record.peer.verify(&message, &record.signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(record)
    }
}

/// Appends one address in the record encoding: family u8 (4 or 6), the
/// 4 or 16 address bytes, port u16. IPv4-mapped IPv6 addresses are written
/// as the IPv6 address they are (the signer chose them).
pub(super) fn encode_address_into(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Bytes of one encoded address (at most `ADDRESS_BYTES_MAX`).
pub(super) fn address_bytes(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Reads fixed-width fields from peer bytes, never past the end; a short
/// read or a leftover is [`RecordError::Malformed`].
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], RecordError> {
        let Some((taken, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(RecordError::Malformed { field });
        };
        self.rest = rest;
        Ok(*taken)
    }

    pub(super) fn bytes(
        &mut self,
        count: usize,
        field: &'static str,
    ) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < count {
            return Err(RecordError::Malformed { field });
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    /// One address in the record encoding (see [`encode_address_into`]).
    pub(super) fn address(&mut self) -> Result<SocketAddr, RecordError> {
        let ip = match self.array::<1>("address family")?[0] {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>("IPv4 address")?)),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>("IPv6 address")?)),
            _ => {
                return Err(RecordError::Malformed {
                    field: "address family",
                })
            }
        };
        let port = u16::from_be_bytes(self.array("port")?);
        Ok(SocketAddr::new(ip, port))
    }

    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(super) fn finish(self) -> Result<(), RecordError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Malformed {
                field: "trailing bytes",
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests build their own fixtures.
mod tests {
    use super::*;

    const NETWORK: u64 = 7;

    fn addresses() -> Vec<SocketAddr> {
        vec![
            "203.0.113.5:9000".parse().unwrap(),
            "[2001:db8::5]:9001".parse().unwrap(),
        ]
    }

    #[test]
    fn sign_then_decode_round_trips() {
        let identity = Identity::from_seed(1);
        let record = Record::sign(&identity, NETWORK, 3, &addresses());
        let bytes = record.encode();
        assert_eq!(bytes.len(), record.encoded_len());
        assert_eq!(bytes.len(), 50 + 7 + 19 + 64);
        let back = Record::decode(&bytes, NETWORK).expect("our own record decodes");
        assert_eq!(back, record);
        assert_eq!(back.peer(), identity.peer_id());
        assert_eq!(back.seq(), 3);
        assert_eq!(back.addresses(), &addresses()[..]);
        assert_eq!(back.encode(), bytes, "canonical");
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let record = Record::sign(&Identity::from_seed(2), NETWORK, 1, &addresses());
        let bytes = record.encode();
        for index in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[index] ^= 0x01;
            let error = Record::decode(&tampered, NETWORK).expect_err("tampered");
            // The network id's bytes decode as another network; every other
            // byte that still parses fails the signature.
            if (33..41).contains(&index) {
                assert!(matches!(error, RecordError::WrongNetwork { .. }), "{index}");
            } else if index == 0 {
                assert_eq!(error, RecordError::UnknownVersion(0), "{index}");
            } else if index == 49 || index == 50 || index == 57 {
                // The address count and the families change the layout.
                assert!(
                    matches!(error, RecordError::Malformed { .. }),
                    "{index}: {error:?}"
                );
            } else {
                assert_eq!(error, RecordError::BadSignature, "{index}");
            }
        }
    }

    #[test]
    fn another_network_is_refused_before_the_signature() {
        let record = Record::sign(&Identity::from_seed(3), NETWORK + 1, 1, &addresses());
        assert_eq!(
            Record::decode(&record.encode(), NETWORK),
            Err(RecordError::WrongNetwork {
                expected: NETWORK,
                actual: NETWORK + 1
            })
        );
        assert_eq!(
            RecordError::WrongNetwork {
                expected: 0,
                actual: 1
            }
            .penalty(),
            Penalty::Mid
        );
    }

    #[test]
    fn oversize_truncated_and_odd_layouts_are_refused() {
        let record = Record::sign(&Identity::from_seed(4), NETWORK, 1, &addresses());
        let bytes = record.encode();
        let mut long = bytes.clone();
        long.resize(RECORD_BYTES_MAX + 1, 0);
        assert_eq!(
            Record::decode(&long, NETWORK),
            Err(RecordError::TooLarge {
                length: RECORD_BYTES_MAX + 1
            })
        );
        assert_eq!(RecordError::TooLarge { length: 0 }.penalty(), Penalty::High);
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    Record::decode(&bytes[..cut], NETWORK),
                    Err(RecordError::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Record::decode(&trailing, NETWORK),
            Err(RecordError::Malformed {
                field: "trailing bytes"
            })
        );
        let mut five_addresses = bytes[..49].to_vec();
        five_addresses.push(ADDRESSES_PER_RECORD_MAX as u8 + 1);
        five_addresses.extend_from_slice(&[0; 64]);
        assert_eq!(
            Record::decode(&five_addresses, NETWORK),
            Err(RecordError::Malformed {
                field: "address count"
            })
        );
        assert_eq!(RecordError::BadSignature.penalty(), Penalty::High);
    }

    #[test]
    fn a_record_without_addresses_round_trips_and_is_never_dialable() {
        let record = Record::sign(&Identity::from_seed(9), NETWORK, 1, &[]);
        let bytes = record.encode();
        assert_eq!(bytes.len(), RECORD_HEADER_BYTES + RECORD_SIGNATURE_BYTES);
        let back = Record::decode(&bytes, NETWORK).expect("an empty record decodes");
        assert!(back.addresses().is_empty());
        assert_eq!(back, record);
        assert_eq!(
            super::super::address::first_dialable(back.addresses(), true),
            None
        );
    }

    #[test]
    fn the_largest_record_fits_the_bound() {
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let record = Record::sign(&Identity::from_seed(5), NETWORK, u64::MAX, &[v6; 4]);
        assert_eq!(record.encoded_len(), RECORD_BYTES_MAX);
        assert_eq!(Record::decode(&record.encode(), NETWORK), Ok(record));
    }

    #[test]
    fn a_higher_sequence_number_supersedes_an_equal_or_lower_does_not() {
        let identity = Identity::from_seed(6);
        let old = Record::sign(&identity, NETWORK, 5, &addresses());
        let new = Record::sign(&identity, NETWORK, 6, &addresses());
        let same = Record::sign(&identity, NETWORK, 5, &addresses()[..1]);
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        assert!(!same.supersedes(&old));
        let other = Record::sign(&Identity::from_seed(7), NETWORK, 9, &addresses());
        assert!(
            !other.supersedes(&old),
            "another peer's record never replaces"
        );
    }

    #[test]
    #[should_panic(expected = "a record names")]
    fn signing_too_many_addresses_is_a_bug() {
        let addr: SocketAddr = "203.0.113.1:1".parse().unwrap();
        Record::sign(&Identity::from_seed(8), NETWORK, 0, &[addr; 5]);
    }
}
