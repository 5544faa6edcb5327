//! The authenticated, encrypted channel: `Noise_XX_25519_ChaChaPoly_SHA256`
//! with Ed25519 identities.
//!
//! # Design
//! A consuming typestate: [`Handshake`] reads one message at a time and turns
//! into a [`Transport`] once the third message is through. The caller owns the
//! buffers. Randomness (the ephemeral keys) comes from a seed the node draws
//! from its own seeded RNG, through a snow `CryptoResolver`, so the whole
//! exchange is reproducible in the simulator.
//!
//! ```text
//! initiator                                   responder
//!   -> e                          (message 1, empty payload)
//!   <- e, ee, s, es               (message 2, payload: identity proof + hello)
//!   -> s, se                      (message 3, payload: identity proof + hello)
//! ```
//!
//! The identity proof is the Ed25519 public key and its signature over
//! [`IDENTITY_SIGNATURE_DOMAIN`] followed by the sender's Noise static key,
//! binding the long-term identity to this channel.
//!
//! # Security
//! Provided: mutual authentication of Ed25519 identities, confidentiality and
//! integrity of everything after message 1, a dialler that checks the expected
//! identity before revealing its own (message 3 is never written to a wrong peer).
//! Not provided: protection against replaying a whole recorded session's
//! *handshake* (a replayed message 1 costs us one DH, bounded by
//! `HANDSHAKES_IN_PROGRESS_MAX`), nor any hiding of the fact that two nodes talk.
//!
//! # Limits
//! Handshake payloads are at most [`crate::limits::HANDSHAKE_PAYLOAD_BYTES_MAX`].
//! A transport message that fails to decrypt ends the connection.

mod handshake;
mod resolver;
#[cfg(test)]
mod tests;
mod transport;

pub use handshake::{
    Handshake, HandshakeStep, Hello, LocalKeys, RemoteIdentity, HANDSHAKE_PAYLOAD_BYTES,
};
pub use transport::Transport;

use std::fmt;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Signed before the Noise static key so the signature cannot be reused elsewhere.
pub const IDENTITY_SIGNATURE_DOMAIN: &[u8] = b"meshsync-noise-identity-v1:";

/// Why the secure channel failed. All but `Internal` are the peer's doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureError {
    /// snow refused a message (bad MAC, bad key, wrong size).
    Noise(String),
    /// A handshake payload did not have the expected layout.
    MalformedPayload(&'static str),
    /// The identity signature over the Noise static key did not verify.
    BadSignature,
    /// The dialled peer proved another identity than the one expected.
    UnexpectedPeer {
        /// The identity that answered.
        actual: crate::identity::PeerId,
    },
    /// A transport message failed to decrypt.
    Decrypt,
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::Noise(error) => write!(f, "noise: {error}"),
            SecureError::MalformedPayload(what) => write!(f, "malformed handshake payload: {what}"),
            SecureError::BadSignature => write!(f, "identity signature does not verify"),
            SecureError::UnexpectedPeer { actual } => write!(f, "unexpected peer {actual}"),
            SecureError::Decrypt => write!(f, "transport message failed to decrypt"),
        }
    }
}

impl std::error::Error for SecureError {}

impl From<snow::Error> for SecureError {
    fn from(error: snow::Error) -> SecureError {
        SecureError::Noise(error.to_string())
    }
}
