//! The one error every req/resp decoder returns.

use std::fmt;

/// Why bytes from a peer could not be decoded as a req/resp message, body or
/// payload. Every variant is the peer's fault; what goes back to the peer is
/// coarser (`ResultCode::InvalidRequest` or a Goodbye).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReqRespDecodeError {
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
    /// The first byte is not one of the req/resp message kinds.
    UnknownKind(u8),
    /// The protocol tag is not one we know.
    UnknownProtocol(u8),
    /// An application protocol name is empty, too long, or not printable ASCII.
    InvalidProtocolName,
    /// A result code of 128 or more (0..=127 are defined or reserved).
    InvalidResultCode(u8),
    /// A count read from the wire is outside its bounds.
    Count {
        /// What was counted.
        field: &'static str,
        /// The count received.
        count: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A string is empty, too long, or not printable ASCII.
    InvalidString {
        /// The field.
        field: &'static str,
    },
    /// `start_slot + count` of a range request overflows.
    SlotOverflow,
    /// A payload or body is larger than its protocol allows.
    TooLarge {
        /// What was too large.
        field: &'static str,
        /// Its length in bytes (declared or actual).
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
    Snappy(String),
}

impl fmt::Display for ReqRespDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReqRespDecodeError::Truncated { field } => write!(f, "truncated at {field}"),
            ReqRespDecodeError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the last field")
            }
            ReqRespDecodeError::UnknownKind(kind) => write!(f, "unknown req/resp kind {kind}"),
            ReqRespDecodeError::UnknownProtocol(tag) => write!(f, "unknown protocol tag {tag}"),
            ReqRespDecodeError::InvalidProtocolName => {
                write!(
                    f,
                    "application protocol name is not 1..=64 printable ASCII bytes"
                )
            }
            ReqRespDecodeError::InvalidResultCode(code) => {
                write!(f, "result code {code} is not below 128")
            }
            ReqRespDecodeError::Count {
                field,
                count,
                min,
                max,
            } => write!(f, "{field} count {count} outside {min}..={max}"),
            ReqRespDecodeError::InvalidString { field } => {
                write!(f, "{field} is empty, too long or not printable ASCII")
            }
            ReqRespDecodeError::SlotOverflow => write!(f, "start slot + count overflows"),
            ReqRespDecodeError::TooLarge {
                field,
                length,
                limit,
            } => write!(f, "{field} of {length} bytes exceeds {limit} bytes"),
            ReqRespDecodeError::CompressedTooLong { compressed, max } => write!(
                f,
                "{compressed} bytes of compressed data exceed the {max} any compression can need"
            ),
            ReqRespDecodeError::LengthMismatch { declared, actual } => write!(
                f,
                "declared uncompressed length {declared} but the snappy data holds {actual}"
            ),
            ReqRespDecodeError::Snappy(error) => write!(f, "corrupt snappy data: {error}"),
        }
    }
}

impl std::error::Error for ReqRespDecodeError {}

impl From<crate::codec::snappy::SnappyError> for ReqRespDecodeError {
    /// The same refusals, named as req/resp has always named them.
    fn from(error: crate::codec::snappy::SnappyError) -> ReqRespDecodeError {
        use crate::codec::snappy::SnappyError;
        match error {
            SnappyError::Truncated => ReqRespDecodeError::Truncated {
                field: "uncompressed length",
            },
            SnappyError::TooLarge { length, limit } => ReqRespDecodeError::TooLarge {
                field: "declared uncompressed length",
                length,
                limit,
            },
            SnappyError::CompressedTooLong { compressed, max } => {
                ReqRespDecodeError::CompressedTooLong { compressed, max }
            }
            SnappyError::LengthMismatch { declared, actual } => {
                ReqRespDecodeError::LengthMismatch { declared, actual }
            }
            SnappyError::Corrupt(error) => ReqRespDecodeError::Snappy(error),
        }
    }
}
