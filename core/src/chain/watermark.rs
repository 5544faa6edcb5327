//! Signing watermarks: for each proposer key, the highest slot it has
//! signed a block for.
//!
//! # Design
//! A proposer that signs two different blocks for one slot equivocates,
//! and both blocks circulate (Ethereum clients keep a slashing-protection
//! record for the same reason, EIP-3076). The node signs at slot `s` only
//! after a watermark `s` for that key is durable, and never at or below a
//! watermark it holds, so a restart, or a key moved to another machine
//! with its watermark, cannot sign a slot twice. The record names the key
//! by its compressed BLS public key (48 bytes), not its genesis index: the
//! key is what signs, and the same file can serve another genesis.

use blst::min_pk::SecretKey;

/// Bytes of a compressed BLS (min_pk) public key.
pub const PROPOSER_PUBLIC_KEY_BYTES: usize = 48;

/// A proposer's compressed BLS public key: what a watermark is kept for.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ProposerPublicKey(
    #[serde(with = "crate::serial::byte_array")] pub [u8; PROPOSER_PUBLIC_KEY_BYTES],
);

impl ProposerPublicKey {
    /// The public key of `secret_key`.
    pub fn of(secret_key: &SecretKey) -> ProposerPublicKey {
        ProposerPublicKey(secret_key.sk_to_pk().compress())
    }

    /// Lower-case hex, 96 digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Parses [`ProposerPublicKey::to_hex`]'s form (an optional `0x` first).
    pub fn from_hex(text: &str) -> Option<ProposerPublicKey> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        if digits.len() != 2 * PROPOSER_PUBLIC_KEY_BYTES || !digits.is_ascii() {
            return None;
        }
        let mut key = [0u8; PROPOSER_PUBLIC_KEY_BYTES];
        for (byte, pair) in key.iter_mut().zip(digits.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(ProposerPublicKey(key))
    }
}

impl std::fmt::Debug for ProposerPublicKey {
    /// The first 8 hex digits: enough to tell keys apart in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..", &self.to_hex()[..8])
    }
}

/// The highest slot `proposer` has signed a block for: it never signs at
/// or below it again.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct SigningWatermark {
    /// The key.
    pub proposer: ProposerPublicKey,
    /// Its highest signed slot.
    pub slot: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::devnet_keys;

    #[test]
    fn a_public_key_round_trips_through_hex_and_bad_text_is_refused() {
        let key = ProposerPublicKey::of(&devnet_keys(1, 1)[0]);
        let text = key.to_hex();
        assert_eq!(text.len(), 96);
        assert_eq!(ProposerPublicKey::from_hex(&text), Some(key));
        assert_eq!(ProposerPublicKey::from_hex(&format!("0x{text}")), Some(key));
        assert_eq!(ProposerPublicKey::from_hex(&text[..94]), None);
        assert_eq!(
            ProposerPublicKey::from_hex(&format!("{}zz", &text[..94])),
            None
        );
        assert_eq!(
            ProposerPublicKey::from_hex(&format!("{}é", &text[..94])),
            None
        );
        assert_ne!(key, ProposerPublicKey::of(&devnet_keys(2, 1)[0]));
    }
}
