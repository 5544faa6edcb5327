//! The transport phase: a stream of plaintext sealed into Noise messages.

use super::SecureError;
use crate::codec::NOISE_LENGTH_PREFIX_BYTES;
use crate::limits::{NOISE_PLAINTEXT_BYTES_MAX, NOISE_TAG_BYTES};

/// Encrypts and decrypts one connection's traffic after the handshake.
pub struct Transport {
    state: snow::TransportState,
}

impl Transport {
    pub(super) fn new(state: snow::TransportState) -> Transport {
        Transport { state }
    }

    /// Bytes [`Transport::seal`] appends for `plaintext_bytes` of plaintext:
    /// each Noise message adds its length prefix and tag.
    pub fn sealed_bytes(plaintext_bytes: usize) -> usize {
        let messages = plaintext_bytes.div_ceil(NOISE_PLAINTEXT_BYTES_MAX);
        plaintext_bytes
            .saturating_add(messages.saturating_mul(NOISE_LENGTH_PREFIX_BYTES + NOISE_TAG_BYTES))
    }

    /// Seals `plaintext` (any length) into as few Noise messages as possible,
    /// each with its u16 length prefix, appended to `out` (which grows by
    /// [`Transport::sealed_bytes`] at once, not message by message).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        out.reserve(Transport::sealed_bytes(plaintext.len()));
        for chunk in plaintext.chunks(NOISE_PLAINTEXT_BYTES_MAX) {
            let start = out.len();
            let sealed = chunk.len() + NOISE_TAG_BYTES;
            out.resize(start + NOISE_LENGTH_PREFIX_BYTES + sealed, 0);
            let written = self
                .state
                .write_message(chunk, &mut out[start + NOISE_LENGTH_PREFIX_BYTES..])
                .expect("a chunk within the plaintext limit always seals, and nonces cannot run out in practice");
            debug_assert_eq!(written, sealed);
            // Cannot truncate: `sealed` is at most NOISE_MESSAGE_BYTES_MAX.
            out[start..start + NOISE_LENGTH_PREFIX_BYTES]
                .copy_from_slice(&(written as u16).to_be_bytes());
        }
    }

    /// Opens one Noise message (without its prefix), appending the plaintext to `out`.
    /// On failure nothing is appended and the connection must be closed.
    pub fn open(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        let start = out.len();
        out.resize(start + message.len(), 0);
        match self.state.read_message(message, &mut out[start..]) {
            Ok(read) => {
                out.truncate(start + read);
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(SecureError::Decrypt)
            }
        }
    }
}
