//! Snappy frames: request bodies and response payloads in req/resp, and
//! gossip payloads.
//!
//! A frame is the uncompressed length as a big-endian `u32`, then one raw
//! snappy block (no snappy framing format, no CRC: the Noise channel already
//! authenticates every byte):
//!
//! ```text
//! offset  size  field
//! 0       4     uncompressed length, u32 big-endian
//! 4       rest  raw snappy block of exactly that many bytes
//! ```
//!
//! # Security
//! `snap::raw::Decoder::decompress_vec` allocates whatever length the block
//! claims (a 2.6 GB buffer from five bytes). [`decompress`] therefore checks,
//! in order and before allocating anything: the declared length against the
//! caller's limit, the compressed length against [`max_compressed_len`] of the
//! declared length, and the block's own length header
//! (`snap::raw::decompress_len`) against the declared length. Only then does
//! it allocate exactly the declared length.

use std::fmt;

/// Why a snappy frame was refused. All of these are the sender's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnappyError {
    /// The frame ended before its uncompressed-length prefix.
    Truncated,
    /// The declared uncompressed length is above the caller's limit.
    TooLarge {
        /// The declared length in bytes.
        length: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The compressed data is longer than any compression of the declared length can be.
    CompressedTooLong {
        /// Bytes of compressed data received.
        compressed: u64,
        /// `max_compressed_len(declared)`.
        max: u64,
    },
    /// The length prefix and the snappy data disagree about the uncompressed length.
    LengthMismatch {
        /// From our length prefix.
        declared: u64,
        /// From the snappy data.
        actual: u64,
    },
    /// The snappy data is corrupt.
    Corrupt(String),
}

impl fmt::Display for SnappyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnappyError::Truncated => write!(f, "truncated at uncompressed length"),
            SnappyError::TooLarge { length, limit } => write!(
                f,
                "declared uncompressed length of {length} bytes exceeds the limit of {limit}"
            ),
            SnappyError::CompressedTooLong { compressed, max } => write!(
                f,
                "{compressed} compressed bytes, more than the {max} any compression allows"
            ),
            SnappyError::LengthMismatch { declared, actual } => write!(
                f,
                "declared uncompressed length {declared} but the snappy data holds {actual}"
            ),
            SnappyError::Corrupt(error) => write!(f, "corrupt snappy data: {error}"),
        }
    }
}

/// Bytes of the uncompressed-length prefix of a frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The longest raw snappy block a compressor may produce from `uncompressed_bytes`
/// (`32 + n + n/6`, the bound of the snappy format and the Ethereum p2p spec).
/// Saturates instead of overflowing.
pub const fn max_compressed_len(uncompressed_bytes: usize) -> usize {
    uncompressed_bytes
        .saturating_add(uncompressed_bytes / 6)
        .saturating_add(32)
}

/// Appends the frame of `payload` to `out`.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes: every caller bounds its
/// payloads far below that, so a longer one is a bug.
pub fn compress_into(payload: &[u8], out: &mut Vec<u8>) {
    Compressor::new().compress_into(payload, out);
}

/// A snappy encoder kept for many frames: [`compress_into`] builds one per
/// frame, which zeroes its 2 KiB table (and for a payload above 1 KiB
/// allocates a 32 KiB one) every time, where a server answering with
/// dozens of blocks per request can keep one. snap clears the table at the
/// start of every block itself, so a frame's bytes never depend on what
/// the encoder compressed before: the output is [`compress_into`]'s.
#[derive(Debug)]
pub struct Compressor {
    encoder: snap::raw::Encoder,
}

impl Default for Compressor {
    fn default() -> Compressor {
        Compressor::new()
    }
}

impl Compressor {
    /// A compressor with snap's tables not yet used.
    pub fn new() -> Compressor {
        Compressor {
            encoder: snap::raw::Encoder::new(),
        }
    }

    /// Appends the frame of `payload` to `out`, as [`compress_into`] does.
    ///
    /// # Panics
    /// If `payload` is longer than `u32::MAX` bytes (see [`compress_into`]).
    #[allow(clippy::arithmetic_side_effects)] // The payload is below 4 GiB (checked first); `out` holds what it held plus that.
    pub fn compress_into(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let length = u32::try_from(payload.len()).expect("payloads are bounded far below 4 GiB");
        out.extend_from_slice(&length.to_be_bytes());
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(payload.len()), 0);
        let written = self
            .encoder
            .compress(payload, &mut out[start..])
            // Cannot fail: the input is below snappy's 4 GiB bound and the output
            // has max_compress_len bytes, the two conditions of its errors.
            .expect("output sized by max_compress_len");
        out.truncate(start + written);
    }
}

/// The frame of `payload` as a new vector.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    let capacity = LENGTH_PREFIX_BYTES.saturating_add(max_compressed_len(payload.len()));
    let mut out = Vec::with_capacity(capacity);
    compress_into(payload, &mut out);
    out
}

/// Checks a frame's declared length against `limit_bytes` and its compressed
/// length against the declared one, without decompressing. Returns the
/// declared uncompressed length.
pub fn check_frame(frame: &[u8], limit_bytes: usize) -> Result<usize, SnappyError> {
    let (prefix, compressed) = split_prefix(frame)?;
    let declared = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if declared > limit_bytes {
        return Err(SnappyError::TooLarge {
            length: u64::from(u32::from_be_bytes(prefix)),
            limit: limit_bytes as u64,
        });
    }
    let max = max_compressed_len(declared);
    if compressed.len() > max {
        return Err(SnappyError::CompressedTooLong {
            compressed: compressed.len() as u64,
            max: max as u64,
        });
    }
    Ok(declared)
}

/// Decompresses a frame whose uncompressed length must be at most
/// `limit_bytes`. Allocates only after every length has been checked, and
/// then exactly the declared length.
pub fn decompress(frame: &[u8], limit_bytes: usize) -> Result<Vec<u8>, SnappyError> {
    let declared = check_frame(frame, limit_bytes)?;
    let compressed = &frame[LENGTH_PREFIX_BYTES..];
    let actual = snap::raw::decompress_len(compressed).map_err(snappy_error)?;
    if actual != declared {
        return Err(SnappyError::LengthMismatch {
            declared: declared as u64,
            actual: actual as u64,
        });
    }
    let mut out = vec![0; declared];
    let written = snap::raw::Decoder::new()
        .decompress(compressed, &mut out)
        .map_err(snappy_error)?;
    if written != declared {
        // The block's header said `declared`; snap checks the body matches it,
        // so this is unreachable, but it is cheap to refuse rather than trust.
        return Err(SnappyError::LengthMismatch {
            declared: declared as u64,
            actual: written as u64,
        });
    }
    Ok(out)
}

fn split_prefix(frame: &[u8]) -> Result<([u8; LENGTH_PREFIX_BYTES], &[u8]), SnappyError> {
    let Some((prefix, rest)) = frame.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Err(SnappyError::Truncated);
    };
    Ok((*prefix, rest))
}

fn snappy_error(error: snap::Error) -> SnappyError {
    SnappyError::Corrupt(error.to_string())
}

/// The varint header of a raw snappy block claiming `length` bytes: what a
/// decompression bomb starts with (tests of every decoder that takes snappy).
#[cfg(test)]
pub(crate) fn bomb_header(mut length: u64) -> Vec<u8> {
    let mut varint = Vec::new();
    while length >= 0x80 {
        varint.push((length as u8) | 0x80);
        length >>= 7;
    }
    varint.push(length as u8);
    varint
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let repetitive = vec![7u8; 100_000];
        let mixed: Vec<u8> = (0..5_000u32)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes())
            .collect();
        for payload in [
            &[][..],
            b"x",
            b"hello hello hello hello",
            &repetitive,
            &mixed,
        ] {
            let frame = compress(payload);
            assert_eq!(frame[..4], (payload.len() as u32).to_be_bytes());
            assert!(frame.len() - 4 <= max_compressed_len(payload.len()));
            assert_eq!(decompress(&frame, payload.len()).unwrap(), payload);
        }
        assert!(
            compress(&repetitive).len() < 10_000,
            "repetitive data compresses"
        );
    }

    /// One compressor kept across frames of every size, in an order where
    /// a large frame (snap's heap table) comes between small ones: each
    /// frame is the bytes a fresh encoder gives.
    #[test]
    fn a_kept_compressor_gives_a_fresh_one_s_frames() {
        let mixed: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes())
            .collect();
        let mut compressor = Compressor::new();
        for length in [0, 1, 300, 1024, 1025, 80_000, 7, 5_000, 80_000, 1024] {
            let payload = &mixed[..length];
            let mut out = vec![0xAA];
            compressor.compress_into(payload, &mut out);
            assert_eq!(out[0], 0xAA, "appends after what `out` held");
            assert_eq!(out[1..], compress(payload)[..], "{length} bytes");
        }
    }

    #[test]
    fn max_compressed_len_follows_the_spec_and_saturates() {
        assert_eq!(max_compressed_len(0), 32);
        assert_eq!(max_compressed_len(600), 32 + 600 + 100);
        assert_eq!(max_compressed_len(usize::MAX), usize::MAX);
        for n in [0, 1, 5, 1000, 1 << 20] {
            assert_eq!(max_compressed_len(n), snap::raw::max_compress_len(n));
        }
    }

    #[test]
    fn declared_length_over_the_limit_is_refused() {
        let frame = compress(&[1; 100]);
        assert_eq!(
            decompress(&frame, 99),
            Err(SnappyError::TooLarge {
                length: 100,
                limit: 99
            })
        );
    }

    /// Five bytes of snappy header claiming 2.6 GB: refused by the checks that
    /// run before any allocation, whichever length field carries the lie.
    #[test]
    fn snappy_bomb_is_refused_before_allocating() {
        let varint = bomb_header(2_600_000_000);
        assert_eq!(
            snap::raw::decompress_len(&varint).unwrap(),
            2_600_000_000,
            "the block header alone claims 2.6 GB"
        );
        // The prefix tells the truth about the lie: refused by the limit.
        let mut frame = 2_600_000_000u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&varint);
        assert!(matches!(
            decompress(&frame, 1 << 20),
            Err(SnappyError::TooLarge {
                length: 2_600_000_000,
                ..
            })
        ));
        // The prefix claims little, the block a lot: refused by the cross-check.
        let mut frame = 10u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&varint);
        assert_eq!(
            decompress(&frame, 1 << 20),
            Err(SnappyError::LengthMismatch {
                declared: 10,
                actual: 2_600_000_000
            })
        );
    }

    #[test]
    fn compressed_data_longer_than_possible_is_refused() {
        let mut frame = compress(b"abc");
        frame.extend_from_slice(&[0; 40]);
        assert_eq!(
            decompress(&frame, 100),
            Err(SnappyError::CompressedTooLong {
                compressed: (frame.len() - 4) as u64,
                max: 32 + 3
            })
        );
    }

    #[test]
    fn truncated_corrupt_and_trailing_frames_are_refused() {
        assert_eq!(decompress(&[0, 0, 1], 100), Err(SnappyError::Truncated));
        // A declared length with no snappy block at all.
        assert!(matches!(
            decompress(&[0, 0, 0, 0], 100),
            Err(SnappyError::Corrupt(_))
        ));
        let frame = compress(b"hello world, hello world");
        // Cut short inside the block.
        assert!(matches!(
            decompress(&frame[..frame.len() - 2], 100),
            Err(SnappyError::Corrupt(_))
        ));
        // A literal after the block is complete: trailing bytes are corrupt data.
        let mut trailing = frame.clone();
        trailing.extend_from_slice(&[0x00, b'!']);
        assert!(matches!(
            decompress(&trailing, 100),
            Err(SnappyError::Corrupt(_))
        ));
        // Prefix and block disagree the other way round.
        let mut lying = frame.clone();
        lying[3] += 1;
        assert!(matches!(
            decompress(&lying, 100),
            Err(SnappyError::LengthMismatch { .. })
        ));
    }
}
