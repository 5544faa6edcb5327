//! Blocks: the header, the signed block, their byte encodings and roots.
//!
//! # Design
//! A block is a [`BlockHeader`] (slot, proposer index, parent root, body
//! root), an opaque application body, and the proposer's BLS signature. The
//! block's root is `sha256(header encoding)`, so a block can be named, linked
//! and checked against its parent without hashing its body; the body is bound
//! to the header by `body_root = sha256(body)`.
//!
//! Header encoding (80 bytes, integers big-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     slot, u64 (slot 0 is genesis: no block has it)
//! 8       8     proposer index, u64 (= slot mod proposer count)
//! 16      32    parent root
//! 48      32    body root, sha256(body)
//! ```
//!
//! Signed block encoding (180 + n bytes, at most `BLOCK_BYTES_MAX`):
//!
//! ```text
//! offset  size  field
//! 0       80    header, as above
//! 80      96    signature: compressed BLS12-381 G2 point (blst min_pk)
//! 176     4     body length n, u32, at most BLOCK_BODY_BYTES_MAX
//! 180     n     body
//! ```
//!
//! The encoding is canonical: decode then encode gives the same bytes back.
//!
//! The proposer signs [`signing_message`]:
//! `sha256("meshsync-block-v1" ‖ network_id u64 BE ‖ root)`, with the
//! Ethereum proof-of-possession ciphersuite ([`BLS_DST`]). Mixing in the
//! network id means a signature from one network never verifies on another.
//!
//! # Security
//! *Provided*: [`SignedBlock::decode`] never panics and never allocates more
//! than the input's own length; every length is checked against its limit
//! before anything is read past it; trailing bytes are an error.
//!
//! *Not provided*: decoding does not check the signature (not even that it is
//! a valid curve point) nor the body root; that is
//! [`verify_block`](super::verify::verify_block)'s job, done after decoding.
//!
//! # Limits
//! A whole signed block is at most [`BLOCK_BYTES_MAX`] (1 MiB), so
//! any block we accept can be served in one response chunk; the body may use
//! what the header, signature and length leave ([`BLOCK_BODY_BYTES_MAX`]).

use std::fmt;

use sha2::{Digest, Sha256};

use super::Root;

/// Largest signed block, encoded (design.md §3: 1 MiB): the bound of a
/// block's bytes everywhere, on gossip, in sync answers and in the store.
pub const BLOCK_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of an encoded [`BlockHeader`].
pub const BLOCK_HEADER_BYTES: usize = 8 + 8 + 32 + 32;
/// Bytes of a compressed BLS signature (a G2 point, blst `min_pk`).
pub const SIGNATURE_BYTES: usize = 96;
/// Bytes of a compressed BLS public key (a G1 point, blst `min_pk`).
pub const PUBLIC_KEY_BYTES: usize = 48;
/// Bytes of the body length field of a signed block.
pub const BODY_LENGTH_BYTES: usize = 4;
/// Bytes of a signed block besides its body: header, signature, body length.
pub const SIGNED_BLOCK_OVERHEAD_BYTES: usize =
    BLOCK_HEADER_BYTES + SIGNATURE_BYTES + BODY_LENGTH_BYTES;
/// Largest encoded signed block: the req/resp block limit, so every block we
/// accept can be served in one response chunk.
pub const SIGNED_BLOCK_BYTES_MAX: usize = BLOCK_BYTES_MAX;
/// Largest block body: what a 1 MiB block leaves after header, signature and
/// length (1 048 396 bytes).
pub const BLOCK_BODY_BYTES_MAX: usize = SIGNED_BLOCK_BYTES_MAX - SIGNED_BLOCK_OVERHEAD_BYTES;
/// Domain string that starts every signing message; the `v1` changes if the
/// header or the message ever changes, so old signatures cannot be replayed.
pub const SIGNING_DOMAIN: &[u8] = b"meshsync-block-v1";
/// The BLS domain separation tag: the Ethereum proof-of-possession
/// ciphersuite (signatures in G2, hashed to the curve with SHA-256 and SSWU).
pub const BLS_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

const _: () = assert!(BLOCK_HEADER_BYTES == 80);
const _: () = assert!(SIGNED_BLOCK_OVERHEAD_BYTES == 180);
const _: () = assert!(SIGNED_BLOCK_OVERHEAD_BYTES + BLOCK_BODY_BYTES_MAX == BLOCK_BYTES_MAX);
const _: () = assert!(SIGNED_BLOCK_BYTES_MAX < crate::limits::MESSAGE_BYTES_MAX);
const _: () = assert!(BLOCK_BODY_BYTES_MAX <= u32::MAX as usize);

/// Why bytes could not be decoded as a header or a signed block. Every
/// variant is the sender's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockDecodeError {
    /// The input is longer than any valid encoding.
    TooLong {
        /// Bytes received.
        length: usize,
        /// The most allowed.
        max: usize,
    },
    /// The input ended before `field` was complete.
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The declared body length is above [`BLOCK_BODY_BYTES_MAX`].
    BodyTooLong {
        /// The declared length.
        length: u64,
        /// The most allowed.
        max: usize,
    },
    /// Bytes were left over after the last field.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for BlockDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockDecodeError::TooLong { length, max } => {
                write!(f, "block of {length} bytes exceeds {max}")
            }
            BlockDecodeError::Truncated { field } => write!(f, "block truncated in {field}"),
            BlockDecodeError::BodyTooLong { length, max } => {
                write!(f, "declared body length {length} exceeds {max}")
            }
            BlockDecodeError::TrailingBytes { count } => {
                write!(f, "{count} bytes after the block")
            }
        }
    }
}

impl std::error::Error for BlockDecodeError {}

/// What a block says about itself; its encoding's sha256 is the block root.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct BlockHeader {
    /// The slot the block was proposed for; at least 1 (slot 0 is genesis).
    pub slot: u64,
    /// Index of the proposer in the genesis key list (`slot mod n`).
    pub proposer_index: u64,
    /// Root of the block this one builds on (the genesis root for the first).
    pub parent_root: Root,
    /// `sha256(body)`.
    pub body_root: Root,
}

impl BlockHeader {
    /// The 80-byte encoding (layout in the module docs).
    pub fn encode(&self) -> [u8; BLOCK_HEADER_BYTES] {
        let mut out = [0u8; BLOCK_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.slot.to_be_bytes());
        out[8..16].copy_from_slice(&self.proposer_index.to_be_bytes());
        out[16..48].copy_from_slice(self.parent_root.as_bytes());
        out[48..80].copy_from_slice(self.body_root.as_bytes());
        out
    }

    /// Decodes exactly [`BLOCK_HEADER_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
        let mut reader = Reader { bytes };
        let header = read_header(&mut reader)?;
        reader.finish()?;
        Ok(header)
    }

    /// The block root: sha256 of the encoding.
    pub fn root(&self) -> Root {
        Root(header_digest(&self.encode()))
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
/// Bytes of a SHA-256 block.
const SHA256_BLOCK_BYTES: usize = 64;
/// Bytes of the message length that ends SHA-256's padding.
const SHA256_LENGTH_BYTES: usize = 8;
/// Where the length goes in the last padded block.
const SHA256_LENGTH_OFFSET: usize = SHA256_BLOCK_BYTES - SHA256_LENGTH_BYTES;
/// The header's length in bits, as the padding states it.
const BLOCK_HEADER_BITS: u64 = BLOCK_HEADER_BYTES as u64 * 8;

// The header needs exactly two blocks once padded: more than one block of
// its own, and room in the second for the 0x80 byte and the length.
const _: () = assert!(BLOCK_HEADER_BYTES > SHA256_BLOCK_BYTES);
const _: () = assert!(BLOCK_HEADER_BYTES + 1 + SHA256_LENGTH_BYTES <= 2 * SHA256_BLOCK_BYTES);

/// `sha256(header)`, the bytes `Sha256::digest` gives: the header's length
/// is fixed, so its two padded blocks are laid out here and compressed in
/// one call, without the streaming hasher's buffering and finalisation,
/// which cost a quarter of the time of hashing 80 bytes. A requester hashes
/// the header of every block an answer brings.
fn header_digest(header: &[u8; BLOCK_HEADER_BYTES]) -> [u8; 32] {
    use sha2::digest::consts::U64;
    use sha2::digest::generic_array::GenericArray;
    let (first, rest) = header.split_at(SHA256_BLOCK_BYTES);
    let mut blocks = [GenericArray::<u8, U64>::default(); 2];
    blocks[0].copy_from_slice(first);
    blocks[1][..rest.len()].copy_from_slice(rest);
    blocks[1][rest.len()] = 0x80;
    blocks[1][SHA256_LENGTH_OFFSET..].copy_from_slice(&BLOCK_HEADER_BITS.to_be_bytes());
    let mut state = SHA256_INITIAL_STATE;
    sha2::compress256(&mut state, &blocks);
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// The body root of `body`: its sha256.
pub fn body_root(body: &[u8]) -> Root {
    Root(Sha256::digest(body).into())
}

/// What the proposer signs for the block with root `root` on network
/// `network_id`: `sha256("meshsync-block-v1" ‖ network_id u64 BE ‖ root)`.
pub fn signing_message(network_id: u64, root: &Root) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNING_DOMAIN);
    hasher.update(network_id.to_be_bytes());
    hasher.update(root);
    hasher.finalize().into()
}

/// A block with its body and its proposer's signature, as sent and stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedBlock {
    /// The header; its root names the block.
    pub header: BlockHeader,
    /// Opaque application bytes, at most [`BLOCK_BODY_BYTES_MAX`].
    pub body: Vec<u8>,
    /// The proposer's compressed BLS signature over [`signing_message`].
    pub signature: [u8; SIGNATURE_BYTES],
}

impl fmt::Debug for SignedBlock {
    /// Leaves out the body and signature bytes: a body may be a megabyte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedBlock")
            .field("header", &self.header)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Through the block's own encoding (and [`SignedBlock::decode`]'s checks).
impl serde::Serialize for SignedBlock {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::serial::encoded::serialize(&self.encode(), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SignedBlock {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SignedBlock, D::Error> {
        crate::serial::encoded::deserialize(deserializer, "a signed block", SignedBlock::decode)
    }
}

impl SignedBlock {
    /// The block root (sha256 of the header encoding; the body is not hashed).
    pub fn root(&self) -> Root {
        self.header.root()
    }

    /// The block's slot.
    pub fn slot(&self) -> u64 {
        self.header.slot
    }

    /// The parent's root.
    pub fn parent_root(&self) -> Root {
        self.header.parent_root
    }

    /// Bytes of the encoding.
    #[allow(clippy::arithmetic_side_effects)] // A body is at most BLOCK_BODY_BYTES_MAX.
    pub fn encoded_len(&self) -> usize {
        SIGNED_BLOCK_OVERHEAD_BYTES + self.body.len()
    }

    /// Appends the encoding (layout in the module docs) to `out`.
    ///
    /// # Panics
    /// If the body is longer than [`BLOCK_BODY_BYTES_MAX`]: we never send
    /// what we would refuse.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.body.len() <= BLOCK_BODY_BYTES_MAX,
            "block body of {} bytes exceeds {BLOCK_BODY_BYTES_MAX}",
            self.body.len()
        );
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.signature);
        // Cannot truncate: checked above, and BLOCK_BODY_BYTES_MAX <= u32::MAX.
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// The encoding as a new vector (see [`SignedBlock::encode_into`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly `bytes`. Checks lengths only: the signature and body
    /// root are checked by [`verify_block`](super::verify::verify_block).
    pub fn decode(bytes: &[u8]) -> Result<SignedBlock, BlockDecodeError> {
        let (header, signature, body) = split_signed_block(bytes)?;
        Ok(SignedBlock {
            header,
            body: body.to_vec(),
            signature: signature.try_into().expect("split at SIGNATURE_BYTES"),
        })
    }

    /// The header of the signed block encoded in `bytes`, after every check
    /// [`SignedBlock::decode`] makes (same order, same errors), without
    /// copying the body: for a requester that checks an answer's slots and
    /// links and hands the bytes on as they came.
    pub fn decode_header(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
        split_signed_block(bytes).map(|(header, _, _)| header)
    }
}

/// The fields of exactly one signed block encoding, the signature and the
/// body borrowed.
fn split_signed_block(bytes: &[u8]) -> Result<(BlockHeader, &[u8], &[u8]), BlockDecodeError> {
    if bytes.len() > SIGNED_BLOCK_BYTES_MAX {
        return Err(BlockDecodeError::TooLong {
            length: bytes.len(),
            max: SIGNED_BLOCK_BYTES_MAX,
        });
    }
    let mut reader = Reader { bytes };
    let header = read_header(&mut reader)?;
    let signature = reader.take(SIGNATURE_BYTES, "signature")?;
    let length = u32::from_be_bytes(reader.array("body length")?);
    if u64::from(length) > BLOCK_BODY_BYTES_MAX as u64 {
        return Err(BlockDecodeError::BodyTooLong {
            length: u64::from(length),
            max: BLOCK_BODY_BYTES_MAX,
        });
    }
    // Cannot truncate: at most BLOCK_BODY_BYTES_MAX, checked above.
    let body = reader.take(length as usize, "body")?;
    reader.finish()?;
    Ok((header, signature, body))
}

fn read_header(reader: &mut Reader<'_>) -> Result<BlockHeader, BlockDecodeError> {
    Ok(BlockHeader {
        slot: u64::from_be_bytes(reader.array("slot")?),
        proposer_index: u64::from_be_bytes(reader.array("proposer index")?),
        parent_root: Root(reader.array("parent root")?),
        body_root: Root(reader.array("body root")?),
    })
}

/// Reads fields off the front of a byte slice, never past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], BlockDecodeError> {
        if self.bytes.len() < count {
            return Err(BlockDecodeError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BlockDecodeError> {
        let bytes = self.take(N, field)?;
        // Cannot fail: `take` returned exactly N bytes.
        Ok(bytes.try_into().expect("take returns the length asked for"))
    }

    fn finish(self) -> Result<(), BlockDecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(BlockDecodeError::TrailingBytes {
                count: self.bytes.len(),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;

    fn sample() -> SignedBlock {
        let body = b"hello, chain".to_vec();
        SignedBlock {
            header: BlockHeader {
                slot: 7,
                proposer_index: 3,
                parent_root: Root([0x11; 32]),
                body_root: body_root(&body),
            },
            body,
            signature: [0xA5; SIGNATURE_BYTES],
        }
    }

    #[test]
    fn header_layout_is_big_endian_and_fixed() {
        let header = sample().header;
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], &[0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&bytes[8..16], &[0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&bytes[16..48], &[0x11; 32]);
        assert_eq!(BlockHeader::decode(&bytes), Ok(header));
        assert_eq!(header.root(), Root(Sha256::digest(bytes).into()));
    }

    /// The root's own SHA-256 of the fixed-length header is the hasher's,
    /// for headers that differ in every field and in both padded blocks.
    #[test]
    fn the_root_is_the_sha256_of_the_header() {
        for seed in 0..64u8 {
            let header = BlockHeader {
                slot: u64::from(seed) << (seed % 57),
                proposer_index: u64::MAX - u64::from(seed),
                parent_root: Root([seed.wrapping_mul(37); 32]),
                body_root: Root(std::array::from_fn(|index| seed ^ index as u8)),
            };
            let expected: [u8; 32] = Sha256::digest(header.encode()).into();
            assert_eq!(header.root(), Root(expected), "seed {seed}");
        }
    }

    #[test]
    fn signed_block_round_trips() {
        let block = sample();
        let bytes = block.encode();
        assert_eq!(bytes.len(), SIGNED_BLOCK_OVERHEAD_BYTES + 12);
        assert_eq!(&bytes[176..180], &[0, 0, 0, 12]);
        let decoded = SignedBlock::decode(&bytes).unwrap();
        assert_eq!(decoded, block);
        assert_eq!(SignedBlock::decode_header(&bytes), Ok(block.header));
        assert_eq!(decoded.encode(), bytes);
        let empty = SignedBlock {
            body: Vec::new(),
            ..block
        };
        assert_eq!(SignedBlock::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn largest_body_fits_the_req_resp_limit() {
        let block = SignedBlock {
            body: vec![7; BLOCK_BODY_BYTES_MAX],
            ..sample()
        };
        let bytes = block.encode();
        assert_eq!(bytes.len(), BLOCK_BYTES_MAX);
        assert_eq!(SignedBlock::decode(&bytes).unwrap(), block);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(
                matches!(
                    SignedBlock::decode(&bytes[..length]),
                    Err(BlockDecodeError::Truncated { .. })
                ),
                "truncated to {length}"
            );
            assert_eq!(
                SignedBlock::decode_header(&bytes[..length]),
                SignedBlock::decode(&bytes[..length]).map(|block| block.header)
            );
        }
        assert_eq!(
            SignedBlock::decode(&bytes[..100]),
            Err(BlockDecodeError::Truncated { field: "signature" })
        );
        assert_eq!(
            BlockHeader::decode(&bytes[..79]),
            Err(BlockDecodeError::Truncated { field: "body root" })
        );
    }

    #[test]
    fn malformed_lengths_are_refused() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            SignedBlock::decode(&bytes),
            Err(BlockDecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            BlockHeader::decode(&bytes[..81]),
            Err(BlockDecodeError::TrailingBytes { count: 1 })
        );

        // A declared length above the limit is refused before the body is read.
        let mut bytes = sample().encode();
        bytes[176..180].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            SignedBlock::decode(&bytes),
            Err(BlockDecodeError::BodyTooLong {
                length: u64::from(u32::MAX),
                max: BLOCK_BODY_BYTES_MAX
            })
        );
        let over = (BLOCK_BODY_BYTES_MAX + 1) as u32;
        bytes[176..180].copy_from_slice(&over.to_be_bytes());
        assert!(matches!(
            SignedBlock::decode(&bytes),
            Err(BlockDecodeError::BodyTooLong { .. })
        ));

        // A declared length longer than what follows.
        let mut bytes = sample().encode();
        bytes[176..180].copy_from_slice(&13u32.to_be_bytes());
        assert_eq!(
            SignedBlock::decode(&bytes),
            Err(BlockDecodeError::Truncated { field: "body" })
        );

        let huge = vec![0u8; SIGNED_BLOCK_BYTES_MAX + 1];
        assert_eq!(
            SignedBlock::decode(&huge),
            Err(BlockDecodeError::TooLong {
                length: SIGNED_BLOCK_BYTES_MAX + 1,
                max: SIGNED_BLOCK_BYTES_MAX
            })
        );
    }

    /// The requester's header-only decoding refuses exactly what the full
    /// decoding refuses, with the same error.
    #[test]
    fn decode_header_refuses_what_decode_refuses() {
        let good = sample().encode();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut body_too_long = good.clone();
        body_too_long[176..180].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut body_short = good.clone();
        body_short[176..180].copy_from_slice(&13u32.to_be_bytes());
        let huge = vec![0u8; SIGNED_BLOCK_BYTES_MAX + 1];
        for bytes in [good, trailing, body_too_long, body_short, huge, Vec::new()] {
            assert_eq!(
                SignedBlock::decode_header(&bytes),
                SignedBlock::decode(&bytes).map(|block| block.header)
            );
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn encoding_an_oversized_body_is_a_bug() {
        let block = SignedBlock {
            body: vec![0; BLOCK_BODY_BYTES_MAX + 1],
            ..sample()
        };
        let _ = block.encode();
    }

    #[test]
    fn signing_message_binds_network_and_root() {
        let root = sample().root();
        let message = signing_message(1, &root);
        assert_ne!(message, signing_message(2, &root));
        assert_ne!(message, signing_message(1, &Root([0; 32])));
        let mut hasher = Sha256::new();
        hasher.update(b"meshsync-block-v1");
        hasher.update([0, 0, 0, 0, 0, 0, 0, 1]);
        hasher.update(root);
        assert_eq!(message, <[u8; 32]>::from(hasher.finalize()));
    }

    #[test]
    fn debug_leaves_out_the_body() {
        let text = format!("{:?}", sample());
        assert!(text.contains("body_bytes: 12"), "{text}");
    }
}
