//! Ed25519 identities and the [`PeerId`] derived from them.
//!
//! # Design
//! A `PeerId` *is* the peer's Ed25519 public key (32 bytes), so a handshake can
//! check a signature against the id a user typed without any lookup. Its text
//! form is base58 (about 44 characters, like libp2p and Solana ids); logs use
//! the first 8 characters via `{:?}`.
//!
//! Key files are read and written by the drivers; this module only turns a
//! secret key into text and back, so the core stays free of file IO.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};

/// First line of a key file; names the format so a wrong file is refused clearly.
pub const KEY_FILE_HEADER: &str = "meshsync-ed25519-secret-key-v1";

/// A node's long-term identity: its Ed25519 signing key.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

/// Why a key file's text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The first line is not [`KEY_FILE_HEADER`].
    WrongHeader,
    /// The key line is not 64 hexadecimal characters.
    MalformedKey,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::WrongHeader => {
                write!(
                    f,
                    "not a meshsync key file (first line must be `{KEY_FILE_HEADER}`)"
                )
            }
            KeyFileError::MalformedKey => {
                write!(
                    f,
                    "malformed key (second line must be 64 hexadecimal characters)"
                )
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

impl Identity {
    /// A fresh identity drawn from `rng` (the drivers pass OS entropy, tests a seeded RNG).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Identity {
        Identity {
            key: SigningKey::generate(rng),
        }
    }

    /// The identity whose secret key is `secret`.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// A deterministic identity for tests and the simulator.
    pub fn from_seed(seed: u64) -> Identity {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..16].copy_from_slice(b"meshsync");
        Identity::from_secret_bytes(secret)
    }

    /// This identity's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The key file text: a header line and the secret key in hex.
    pub fn to_key_file(&self) -> String {
        let mut text = String::with_capacity(KEY_FILE_HEADER.len() + 66);
        text.push_str(KEY_FILE_HEADER);
        text.push('\n');
        for byte in self.key.to_bytes() {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
        text
    }

    /// Parses the text written by [`Identity::to_key_file`].
    pub fn from_key_file(text: &str) -> Result<Identity, KeyFileError> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(KEY_FILE_HEADER) {
            return Err(KeyFileError::WrongHeader);
        }
        let hex = lines.next().map(str::trim).unwrap_or("");
        if hex.len() != 64 || lines.any(|line| !line.trim().is_empty()) {
            return Err(KeyFileError::MalformedKey);
        }
        // Hex digits only: `from_str_radix` alone would also take a sign
        // ("+f"), and a key file has one spelling per key.
        if !hex.bytes().all(|digit| digit.is_ascii_hexdigit()) {
            return Err(KeyFileError::MalformedKey);
        }
        let mut secret = [0u8; 32];
        for (index, byte) in secret.iter_mut().enumerate() {
            let pair = hex
                .get(index * 2..index * 2 + 2)
                .ok_or(KeyFileError::MalformedKey)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyFileError::MalformedKey)?;
        }
        Ok(Identity::from_secret_bytes(secret))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Identity({:?})", self.peer_id())
    }
}

/// A peer's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PeerId([u8; 32]);

/// The bytes' order, as the derived one on the array would give, compared
/// as words: peer ids key the maps a request and each chunk of its answer
/// are looked up in.
impl Ord for PeerId {
    fn cmp(&self, other: &PeerId) -> std::cmp::Ordering {
        crate::types::cmp_as_words(&self.0, &other.0)
    }
}

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &PeerId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a text was not a peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdParseError;

impl fmt::Display for PeerIdParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a peer id (expected base58 of a 32-byte Ed25519 public key)"
        )
    }
}

impl std::error::Error for PeerIdParseError {}

impl PeerId {
    /// The peer id of the raw public key bytes (not checked to be a curve point).
    pub const fn from_bytes(bytes: [u8; 32]) -> PeerId {
        PeerId(bytes)
    }

    /// The public key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this peer's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        // `verify_strict` does everything plain `verify` does and also
        // refuses small-order keys and malleable signatures.
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = bs58::encode(self.0).into_string();
        f.write_str(&text[..8.min(text.len())])
    }
}

impl FromStr for PeerId {
    type Err = PeerIdParseError;
    fn from_str(text: &str) -> Result<PeerId, PeerIdParseError> {
        let mut bytes = [0u8; 32];
        let written = bs58::decode(text.trim())
            .onto(&mut bytes)
            .map_err(|_| PeerIdParseError)?;
        if written != 32 {
            return Err(PeerIdParseError);
        }
        Ok(PeerId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps keyed by peer ids iterate in the bytes' order, as with the
    /// derived order they had: whichever byte differs first decides.
    #[test]
    fn peer_ids_order_as_their_bytes() {
        let mut ids = Vec::new();
        for position in [0, 7, 8, 24, 31] {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bytes = [0x33u8; 32];
                bytes[position] = value;
                ids.push(bytes);
            }
        }
        for a in &ids {
            for b in &ids {
                let (ours, theirs) = (PeerId::from_bytes(*a), PeerId::from_bytes(*b));
                assert_eq!(ours.cmp(&theirs), a.cmp(b));
                assert_eq!(ours.partial_cmp(&theirs), Some(a.cmp(b)));
            }
        }
    }

    #[test]
    fn peer_id_text_round_trips() {
        let id = Identity::from_seed(7).peer_id();
        let text = id.to_string();
        assert!(text.len() >= 43 && text.len() <= 44, "{text}");
        assert_eq!(text.parse::<PeerId>(), Ok(id));
        assert_eq!(format!("{id:?}"), text[..8]);
        assert_eq!(Identity::from_seed(7).peer_id().to_string(), text, "stable");
    }

    #[test]
    fn peer_id_parse_refuses_bad_text() {
        assert_eq!("".parse::<PeerId>(), Err(PeerIdParseError));
        assert_eq!("0OIl".parse::<PeerId>(), Err(PeerIdParseError));
        assert_eq!("abc".parse::<PeerId>(), Err(PeerIdParseError));
        let long = bs58::encode([1u8; 33]).into_string();
        assert_eq!(long.parse::<PeerId>(), Err(PeerIdParseError));
    }

    #[test]
    fn key_file_round_trips_and_refuses_garbage() {
        let identity = Identity::from_seed(3);
        let text = identity.to_key_file();
        let back = Identity::from_key_file(&text).expect("own format parses");
        assert_eq!(back.peer_id(), identity.peer_id());
        assert_eq!(
            Identity::from_key_file("hello\n").unwrap_err(),
            KeyFileError::WrongHeader
        );
        let short = format!("{KEY_FILE_HEADER}\nabcd\n");
        assert_eq!(
            Identity::from_key_file(&short).unwrap_err(),
            KeyFileError::MalformedKey
        );
        let not_hex = format!("{KEY_FILE_HEADER}\n{}\n", "zz".repeat(32));
        assert_eq!(
            Identity::from_key_file(&not_hex).unwrap_err(),
            KeyFileError::MalformedKey
        );
        let signed = format!("{KEY_FILE_HEADER}\n{}\n", "+a".repeat(32));
        assert_eq!(
            Identity::from_key_file(&signed).unwrap_err(),
            KeyFileError::MalformedKey
        );
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let alice = Identity::from_seed(1);
        let bob = Identity::from_seed(2);
        let signature = alice.sign(b"hello");
        assert!(alice.peer_id().verify(b"hello", &signature));
        assert!(!alice.peer_id().verify(b"hellp", &signature));
        assert!(!bob.peer_id().verify(b"hello", &signature));
    }
}
