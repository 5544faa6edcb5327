//! Byte layouts: the wire framing of Noise messages, the reassembly of logical
//! messages from decrypted plaintext, and the messages themselves.
//!
//! # Design
//! Three layers, each incremental so bytes may arrive split anywhere:
//!
//! ```text
//! wire bytes ──► NoiseFrameDecoder ──► one Noise message (u16 length prefix)
//!   Noise message ──► decrypt (secure::) ──► plaintext chunk
//!   plaintext stream ──► MessageReassembler ──► one logical message (u32 length prefix)
//!   logical message ──► kind byte: 16, 17, 18 are req/resp (`crate::reqresp::wire`)
//! ```
//!
//! # Security
//! Provided: every declared length is checked against its limit before any
//! buffer grows; buffers grow only with bytes that actually arrived, so a
//! peer cannot make us allocate a declared-but-unsent 10 MiB.
//! Not provided: authenticity (that is `secure::`'s job).
//!
//! # Limits
//! A Noise message is at most [`NOISE_MESSAGE_BYTES_MAX`]; a logical message
//! at most [`MESSAGE_BYTES_MAX`]. Both are refused before buffering when declared larger.

#[warn(clippy::arithmetic_side_effects)]
mod frame;
#[warn(clippy::arithmetic_side_effects)]
pub mod snappy;

pub use frame::{
    append_length_prefixed, append_length_prefixed_with, keep_at_most, MessageReassembler,
    NoiseFrameDecoder,
};

use std::fmt;

use crate::limits::{MESSAGE_BYTES_MAX, NOISE_MESSAGE_BYTES_MAX};

/// Bytes of the length prefix of a Noise message on the wire (big-endian u16).
pub const NOISE_LENGTH_PREFIX_BYTES: usize = 2;
/// Bytes of the length prefix of a logical message in the plaintext stream (big-endian u32).
pub const MESSAGE_LENGTH_PREFIX_BYTES: usize = 4;

/// Why peer bytes could not be decoded. All of these are the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A Noise message declared a length of zero or below the AEAD tag.
    NoiseMessageTooShort {
        /// The declared length.
        length: usize,
    },
    /// A Noise message declared a length above the limit of the current phase.
    NoiseMessageTooLong {
        /// The declared length.
        length: usize,
    },
    /// A logical message declared a length above [`MESSAGE_BYTES_MAX`] (or zero).
    MessageLength {
        /// The declared length.
        length: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NoiseMessageTooShort { length } => {
                write!(f, "noise message of {length} bytes is too short")
            }
            DecodeError::NoiseMessageTooLong { length } => {
                write!(
                    f,
                    "noise message of {length} bytes is too long for this phase"
                )
            }
            DecodeError::MessageLength { length } => write!(
                f,
                "message length {length} outside 1..={MESSAGE_BYTES_MAX} bytes"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

const _: () = assert!(NOISE_MESSAGE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(MESSAGE_BYTES_MAX <= u32::MAX as usize);
