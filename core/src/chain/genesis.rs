//! Genesis: the parameters every node of a network must agree on, their TOML
//! file, devnet proposer keys, and the proposer secret key file format.
//!
//! # Design
//! A [`Genesis`] names the network id, the genesis time, the slot duration,
//! the proposers' BLS public keys (the proposer of slot `s` is
//! `keys[s mod n]`) and the finality depth. It is always valid: the only ways
//! to get one ([`Genesis::new`], [`Genesis::from_toml`]) check every field, so
//! `proposer_index_at` never divides by zero and `to_toml` always renders
//! text that `from_toml` reads back to an equal value.
//!
//! The genesis file is TOML; public keys are 96 hex characters (48-byte
//! compressed G1 points):
//!
//! ```toml
//! network_id = 1
//! genesis_time_ms = 1700000000000
//! slot_duration_ms = 2000
//! finality_depth_slots = 64   # optional, 64 when absent
//! proposer_keys = [
//!     "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c",
//! ]
//! ```
//!
//! The genesis root, the parent of the first block, is the root of a header at
//! slot 0 whose body root hashes every genesis parameter, so two networks
//! that differ in anything have different chains from the first block.
//!
//! Times are milliseconds since the Unix epoch, as the file states them; the
//! driver converts between them and the core's [`Instant`](crate::Instant).
//!
//! A proposer secret key file is two lines: [`BLS_KEY_FILE_HEADER`] and the
//! 32-byte secret scalar in hex (big-endian). This module only formats and
//! parses the text; drivers read and write the files.
//!
//! # Security
//! *Provided*: public keys are validated when parsed (blst `key_validate`:
//! no point at infinity, in the prime-order subgroup), so verification can
//! skip that check; duplicate keys are refused; every integer is range-checked.
//! Secret keys are checked to be non-zero scalars below the group order.
//!
//! *Not provided*: proof of possession of each public key. The POP
//! ciphersuite assumes one, and the genesis author is trusted to have it
//! (every node must be given the same file out of band anyway).
//!
//! # Limits
//! At most [`PROPOSERS_MAX`] keys and [`GENESIS_TEXT_BYTES_MAX`] bytes of
//! text; the finality depth is 1..=[`FINALITY_DEPTH_SLOTS_MAX`].

use std::fmt;

use blst::min_pk::{PublicKey, SecretKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::block::{BlockHeader, PUBLIC_KEY_BYTES};
use super::Root;

/// Most proposer keys a genesis may list. Each is validated (a subgroup
/// check) when the genesis is read; 1 024 keeps that under a second and the
/// file near 100 KiB.
pub const PROPOSERS_MAX: usize = 1_024;
/// Longest genesis text accepted, in bytes: room for [`PROPOSERS_MAX`] keys
/// (about 100 bytes per line) and comments.
pub const GENESIS_TEXT_BYTES_MAX: usize = 256 * 1024;
/// Finality depth when the genesis file names none (design.md §4).
pub const FINALITY_DEPTH_SLOTS_DEFAULT: u64 = 64;
/// Largest finality depth. Blocks above the finalized one cannot be evicted
/// from memory, so the depth bounds that window (256 full blocks = 256 MiB,
/// half of the store's byte budget).
pub const FINALITY_DEPTH_SLOTS_MAX: u64 = 256;
/// Largest value of any integer in a genesis: TOML integers are signed 64-bit.
pub const GENESIS_INTEGER_MAX: u64 = i64::MAX as u64;
/// First line of a proposer secret key file; names the format so a wrong
/// file (an Ed25519 identity key, say) is refused clearly.
pub const BLS_KEY_FILE_HEADER: &str = "meshsync-bls-secret-key-v1";
/// Domain string of the devnet key derivation.
const DEVNET_KEY_DOMAIN: &[u8] = b"meshsync-devnet-proposer-key-v1";
/// Domain string of the genesis parameters hash.
const GENESIS_DOMAIN: &[u8] = b"meshsync-genesis-v1";

const _: () = assert!(FINALITY_DEPTH_SLOTS_DEFAULT <= FINALITY_DEPTH_SLOTS_MAX);
const _: () = assert!(PROPOSERS_MAX <= u32::MAX as usize);
const _: () = assert!(PROPOSERS_MAX * 128 < GENESIS_TEXT_BYTES_MAX);

/// Why a genesis was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenesisError {
    /// The text is longer than [`GENESIS_TEXT_BYTES_MAX`].
    TooLong {
        /// Bytes given.
        length: usize,
    },
    /// The text is not valid TOML, lacks a field, has an unknown one, or a
    /// value of the wrong type; the message is the TOML parser's.
    Syntax(String),
    /// No proposer keys.
    NoProposers,
    /// More than [`PROPOSERS_MAX`] proposer keys.
    TooManyProposers {
        /// Keys given.
        count: usize,
    },
    /// A proposer key is not 96 hexadecimal characters.
    MalformedKey {
        /// Its position in the list.
        index: usize,
    },
    /// A proposer key does not decode to a valid public key (not on the curve,
    /// the point at infinity, or outside the subgroup).
    InvalidKey {
        /// Its position in the list.
        index: usize,
    },
    /// A proposer key appears twice.
    DuplicateKey {
        /// The position of the second occurrence.
        index: usize,
    },
    /// The slot duration is zero.
    ZeroSlotDuration,
    /// The finality depth is outside 1..=[`FINALITY_DEPTH_SLOTS_MAX`].
    FinalityDepth {
        /// The depth given.
        slots: u64,
    },
    /// An integer is above [`GENESIS_INTEGER_MAX`] (TOML cannot hold it).
    IntegerTooLarge {
        /// The field.
        field: &'static str,
    },
}

impl fmt::Display for GenesisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenesisError::TooLong { length } => write!(
                f,
                "genesis text of {length} bytes exceeds {GENESIS_TEXT_BYTES_MAX}"
            ),
            GenesisError::Syntax(message) => write!(f, "genesis is not valid: {message}"),
            GenesisError::NoProposers => write!(f, "genesis lists no proposer keys"),
            GenesisError::TooManyProposers { count } => write!(
                f,
                "genesis lists {count} proposer keys, at most {PROPOSERS_MAX} are allowed"
            ),
            GenesisError::MalformedKey { index } => write!(
                f,
                "proposer key {index} is not {} hexadecimal characters",
                PUBLIC_KEY_BYTES * 2
            ),
            GenesisError::InvalidKey { index } => {
                write!(f, "proposer key {index} is not a valid BLS public key")
            }
            GenesisError::DuplicateKey { index } => {
                write!(f, "proposer key {index} appears earlier in the list")
            }
            GenesisError::ZeroSlotDuration => write!(f, "slot_duration_ms must be at least 1"),
            GenesisError::FinalityDepth { slots } => write!(
                f,
                "finality_depth_slots {slots} is outside 1..={FINALITY_DEPTH_SLOTS_MAX}"
            ),
            GenesisError::IntegerTooLarge { field } => {
                write!(f, "{field} exceeds {GENESIS_INTEGER_MAX}")
            }
        }
    }
}

impl std::error::Error for GenesisError {}

/// The parameters of a network; always valid (see the module docs).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Genesis {
    network_id: u64,
    genesis_time_ms: u64,
    slot_duration_ms: u64,
    proposer_keys: Vec<PublicKey>,
    finality_depth_slots: u64,
    root: Root,
}

/// The genesis file as TOML states it, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisText {
    network_id: u64,
    genesis_time_ms: u64,
    slot_duration_ms: u64,
    #[serde(default = "finality_depth_default")]
    finality_depth_slots: u64,
    proposer_keys: Vec<String>,
}

fn finality_depth_default() -> u64 {
    FINALITY_DEPTH_SLOTS_DEFAULT
}

/// Through the genesis file's text (and [`Genesis::from_toml`]'s checks).
impl serde::Serialize for Genesis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::serial::encoded::serialize(self.to_toml().as_bytes(), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Genesis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Genesis, D::Error> {
        crate::serial::encoded::deserialize(deserializer, "a genesis", |bytes| {
            let text = std::str::from_utf8(bytes)
                .map_err(|error| GenesisError::Syntax(error.to_string()))?;
            Genesis::from_toml(text)
        })
    }
}

impl Genesis {
    /// A genesis with these parameters, if they are valid. The keys must
    /// already be validated public keys (blst `key_validate`); they are
    /// checked again here.
    pub fn new(
        network_id: u64,
        genesis_time_ms: u64,
        slot_duration_ms: u64,
        proposer_keys: Vec<PublicKey>,
        finality_depth_slots: u64,
    ) -> Result<Genesis, GenesisError> {
        for (field, value) in [
            ("network_id", network_id),
            ("genesis_time_ms", genesis_time_ms),
            ("slot_duration_ms", slot_duration_ms),
        ] {
            if value > GENESIS_INTEGER_MAX {
                return Err(GenesisError::IntegerTooLarge { field });
            }
        }
        if slot_duration_ms == 0 {
            return Err(GenesisError::ZeroSlotDuration);
        }
        if !(1..=FINALITY_DEPTH_SLOTS_MAX).contains(&finality_depth_slots) {
            return Err(GenesisError::FinalityDepth {
                slots: finality_depth_slots,
            });
        }
        if proposer_keys.is_empty() {
            return Err(GenesisError::NoProposers);
        }
        if proposer_keys.len() > PROPOSERS_MAX {
            return Err(GenesisError::TooManyProposers {
                count: proposer_keys.len(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, key) in proposer_keys.iter().enumerate() {
            if key.validate().is_err() {
                return Err(GenesisError::InvalidKey { index });
            }
            if !seen.insert(key.to_bytes()) {
                return Err(GenesisError::DuplicateKey { index });
            }
        }
        let mut genesis = Genesis {
            network_id,
            genesis_time_ms,
            slot_duration_ms,
            proposer_keys,
            finality_depth_slots,
            root: Root([0; 32]),
        };
        genesis.root = genesis.compute_root();
        Ok(genesis)
    }

    /// Parses and validates a genesis file's text.
    pub fn from_toml(text: &str) -> Result<Genesis, GenesisError> {
        if text.len() > GENESIS_TEXT_BYTES_MAX {
            return Err(GenesisError::TooLong { length: text.len() });
        }
        let parsed: GenesisText =
            toml::from_str(text).map_err(|error| GenesisError::Syntax(error.to_string()))?;
        if parsed.proposer_keys.len() > PROPOSERS_MAX {
            return Err(GenesisError::TooManyProposers {
                count: parsed.proposer_keys.len(),
            });
        }
        let mut keys = Vec::with_capacity(parsed.proposer_keys.len());
        for (index, text) in parsed.proposer_keys.iter().enumerate() {
            let bytes: [u8; PUBLIC_KEY_BYTES] =
                hex_decode(text.trim()).ok_or(GenesisError::MalformedKey { index })?;
            let key =
                PublicKey::key_validate(&bytes).map_err(|_| GenesisError::InvalidKey { index })?;
            keys.push(key);
        }
        Genesis::new(
            parsed.network_id,
            parsed.genesis_time_ms,
            parsed.slot_duration_ms,
            keys,
            parsed.finality_depth_slots,
        )
    }

    /// The genesis file's text; [`Genesis::from_toml`] reads it back to an
    /// equal genesis.
    pub fn to_toml(&self) -> String {
        let mut text = String::with_capacity(160 + self.proposer_keys.len() * 104);
        text.push_str("# meshsync genesis: every node of the network must use this exact file.\n");
        text.push_str(&format!("network_id = {}\n", self.network_id));
        text.push_str(&format!("genesis_time_ms = {}\n", self.genesis_time_ms));
        text.push_str(&format!("slot_duration_ms = {}\n", self.slot_duration_ms));
        text.push_str(&format!(
            "finality_depth_slots = {}\n",
            self.finality_depth_slots
        ));
        text.push_str("proposer_keys = [\n");
        for key in &self.proposer_keys {
            text.push_str(&format!("    \"{}\",\n", hex_encode(&key.to_bytes())));
        }
        text.push_str("]\n");
        text
    }

    /// The network id.
    pub fn network_id(&self) -> u64 {
        self.network_id
    }

    /// Start of slot 0, in milliseconds since the Unix epoch.
    pub fn genesis_time_ms(&self) -> u64 {
        self.genesis_time_ms
    }

    /// Length of a slot in milliseconds (at least 1).
    pub fn slot_duration_ms(&self) -> u64 {
        self.slot_duration_ms
    }

    /// The proposers' public keys, 1..=[`PROPOSERS_MAX`] of them, all validated.
    pub fn proposer_keys(&self) -> &[PublicKey] {
        &self.proposer_keys
    }

    /// How far below the head a block must be to count as finalized.
    pub fn finality_depth_slots(&self) -> u64 {
        self.finality_depth_slots
    }

    /// The root every first block names as its parent.
    pub fn root(&self) -> Root {
        self.root
    }

    /// Index of the proposer of `slot`: `slot mod n`.
    pub fn proposer_index_at(&self, slot: u64) -> u64 {
        // Cannot divide by zero: a Genesis has at least one key.
        slot % self.proposer_keys.len() as u64
    }

    /// The public key of proposer `index`, if there is one.
    pub fn proposer_key(&self, index: u64) -> Option<&PublicKey> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.proposer_keys.get(index))
    }

    /// The slot in progress at `time_ms` (milliseconds since the Unix epoch);
    /// 0 before genesis.
    pub fn slot_at(&self, time_ms: u64) -> u64 {
        time_ms.saturating_sub(self.genesis_time_ms) / self.slot_duration_ms
    }

    /// When `slot` starts, in milliseconds since the Unix epoch, saturating at `u64::MAX`.
    pub fn start_of(&self, slot: u64) -> u64 {
        self.genesis_time_ms
            .saturating_add(slot.saturating_mul(self.slot_duration_ms))
    }

    fn compute_root(&self) -> Root {
        let mut hasher = Sha256::new();
        hasher.update(GENESIS_DOMAIN);
        hasher.update(self.network_id.to_be_bytes());
        hasher.update(self.genesis_time_ms.to_be_bytes());
        hasher.update(self.slot_duration_ms.to_be_bytes());
        hasher.update(self.finality_depth_slots.to_be_bytes());
        // Cannot truncate: at most PROPOSERS_MAX keys, below u32::MAX.
        hasher.update((self.proposer_keys.len() as u32).to_be_bytes());
        for key in &self.proposer_keys {
            hasher.update(key.to_bytes());
        }
        BlockHeader {
            slot: 0,
            proposer_index: 0,
            parent_root: Root([0; 32]),
            body_root: Root(hasher.finalize().into()),
        }
        .root()
    }
}

/// `count` deterministic proposer secret keys for a devnet or a test,
/// derived from `seed`: key `i` is blst `key_gen` (EIP-2333 HKDF) over
/// `sha256("meshsync-devnet-proposer-key-v1" ‖ seed u64 BE ‖ i u64 BE)`.
/// Anyone who knows the seed knows the keys: never for a real network.
pub fn devnet_keys(seed: u64, count: usize) -> Vec<SecretKey> {
    (0..count as u64)
        .map(|index| {
            let mut hasher = Sha256::new();
            hasher.update(DEVNET_KEY_DOMAIN);
            hasher.update(seed.to_be_bytes());
            hasher.update(index.to_be_bytes());
            let ikm: [u8; 32] = hasher.finalize().into();
            // Cannot fail: key_gen only refuses input keying material under 32 bytes.
            SecretKey::key_gen(&ikm, &[]).expect("32 bytes of key material")
        })
        .collect()
}

/// Why a proposer secret key file's text was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlsKeyFileError {
    /// The first line is not [`BLS_KEY_FILE_HEADER`].
    WrongHeader,
    /// The key line is not 64 hexadecimal characters, or more lines follow.
    MalformedKey,
    /// The 32 bytes are zero or not below the group order.
    InvalidKey,
}

impl fmt::Display for BlsKeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlsKeyFileError::WrongHeader => write!(
                f,
                "not a meshsync proposer key file (first line must be `{BLS_KEY_FILE_HEADER}`)"
            ),
            BlsKeyFileError::MalformedKey => write!(
                f,
                "malformed key (second line must be 64 hexadecimal characters)"
            ),
            BlsKeyFileError::InvalidKey => write!(f, "not a valid BLS secret key"),
        }
    }
}

impl std::error::Error for BlsKeyFileError {}

/// The proposer key file text: [`BLS_KEY_FILE_HEADER`], then the secret key
/// as 64 hex characters (big-endian scalar), each line ending in a newline.
pub fn secret_key_to_text(secret_key: &SecretKey) -> String {
    format!(
        "{BLS_KEY_FILE_HEADER}\n{}\n",
        hex_encode(&secret_key.to_bytes())
    )
}

/// Parses the text written by [`secret_key_to_text`].
pub fn secret_key_from_text(text: &str) -> Result<SecretKey, BlsKeyFileError> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(BLS_KEY_FILE_HEADER) {
        return Err(BlsKeyFileError::WrongHeader);
    }
    let line = lines.next().map(str::trim).unwrap_or("");
    if lines.any(|line| !line.trim().is_empty()) {
        return Err(BlsKeyFileError::MalformedKey);
    }
    let bytes: [u8; 32] = hex_decode(line).ok_or(BlsKeyFileError::MalformedKey)?;
    SecretKey::from_bytes(&bytes).map_err(|_| BlsKeyFileError::InvalidKey)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Exactly `N` bytes from `2N` hex digits (either case), or `None`.
pub(crate) fn hex_decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        // Cannot truncate: two hex digits are at most 255.
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(count: usize) -> Vec<PublicKey> {
        devnet_keys(9, count)
            .iter()
            .map(SecretKey::sk_to_pk)
            .collect()
    }

    fn sample() -> Genesis {
        Genesis::new(7, 1_700_000_000_000, 2_000, keys(3), 64).unwrap()
    }

    #[test]
    fn toml_round_trips() {
        let genesis = sample();
        let text = genesis.to_toml();
        assert!(text.contains("network_id = 7\n"), "{text}");
        let parsed = Genesis::from_toml(&text).unwrap();
        assert_eq!(parsed, genesis);
        assert_eq!(parsed.root(), genesis.root());
        assert_eq!(parsed.to_toml(), text);
    }

    #[test]
    fn finality_depth_defaults_to_64() {
        let text = sample()
            .to_toml()
            .replace("finality_depth_slots = 64\n", "");
        assert_eq!(
            Genesis::from_toml(&text).unwrap().finality_depth_slots(),
            64
        );
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let good = sample().to_toml();
        let syntax = |text: &str| match Genesis::from_toml(text) {
            Err(GenesisError::Syntax(message)) => message,
            other => panic!("expected a syntax error, got {other:?}"),
        };
        assert!(syntax("network_id = ").contains("line 1"));
        assert!(syntax(&good.replace("network_id = 7\n", "")).contains("network_id"));
        assert!(syntax(&format!("{good}colour = 1\n")).contains("colour"));
        assert!(syntax(&good.replace("network_id = 7", "network_id = -7")).contains("network_id"));
        assert!(
            syntax(&good.replace("network_id = 7", "network_id = \"7\"")).contains("network_id")
        );

        let first_key = hex_encode(&sample().proposer_keys()[0].to_bytes());
        assert_eq!(
            Genesis::from_toml(&good.replace(&first_key, &first_key[2..])),
            Err(GenesisError::MalformedKey { index: 0 })
        );
        assert_eq!(
            Genesis::from_toml(&good.replace(&first_key, &"zz".repeat(48))),
            Err(GenesisError::MalformedKey { index: 0 })
        );
        // Not on the curve (a compressed point whose x has no square root is
        // likely; an all-0x8f x coordinate is not a valid field element).
        let not_a_point = format!("8f{}", "ff".repeat(47));
        assert_eq!(
            Genesis::from_toml(&good.replace(&first_key, &not_a_point)),
            Err(GenesisError::InvalidKey { index: 0 })
        );
        // The point at infinity.
        let infinity = format!("c0{}", "00".repeat(47));
        assert_eq!(
            Genesis::from_toml(&good.replace(&first_key, &infinity)),
            Err(GenesisError::InvalidKey { index: 0 })
        );
        let second_key = hex_encode(&sample().proposer_keys()[1].to_bytes());
        assert_eq!(
            Genesis::from_toml(&good.replace(&second_key, &first_key)),
            Err(GenesisError::DuplicateKey { index: 1 })
        );
        assert_eq!(
            Genesis::from_toml(&good.replace("slot_duration_ms = 2000", "slot_duration_ms = 0")),
            Err(GenesisError::ZeroSlotDuration)
        );
        assert_eq!(
            Genesis::from_toml(
                &good.replace("finality_depth_slots = 64", "finality_depth_slots = 0")
            ),
            Err(GenesisError::FinalityDepth { slots: 0 })
        );
        assert_eq!(
            Genesis::from_toml(
                &good.replace("finality_depth_slots = 64", "finality_depth_slots = 257")
            ),
            Err(GenesisError::FinalityDepth { slots: 257 })
        );
        let no_keys =
            good.split("proposer_keys").next().unwrap().to_string() + "proposer_keys = []\n";
        assert_eq!(Genesis::from_toml(&no_keys), Err(GenesisError::NoProposers));
        let too_many = format!(
            "network_id = 1\ngenesis_time_ms = 0\nslot_duration_ms = 1\nproposer_keys = [{}]\n",
            "\"\",".repeat(PROPOSERS_MAX + 1)
        );
        assert_eq!(
            Genesis::from_toml(&too_many),
            Err(GenesisError::TooManyProposers {
                count: PROPOSERS_MAX + 1
            })
        );
        let long = " ".repeat(GENESIS_TEXT_BYTES_MAX + 1);
        assert_eq!(
            Genesis::from_toml(&long),
            Err(GenesisError::TooLong {
                length: GENESIS_TEXT_BYTES_MAX + 1
            })
        );
        assert_eq!(
            Genesis::new(u64::MAX, 0, 1, keys(1), 64),
            Err(GenesisError::IntegerTooLarge {
                field: "network_id"
            })
        );
        assert!(GenesisError::NoProposers
            .to_string()
            .contains("no proposer"));
    }

    #[test]
    fn genesis_roots_differ_by_any_parameter() {
        let base = sample();
        let other_network = Genesis::new(8, 1_700_000_000_000, 2_000, keys(3), 64).unwrap();
        let other_keys = Genesis::new(7, 1_700_000_000_000, 2_000, keys(2), 64).unwrap();
        let other_depth = Genesis::new(7, 1_700_000_000_000, 2_000, keys(3), 32).unwrap();
        assert_ne!(base.root(), other_network.root());
        assert_ne!(base.root(), other_keys.root());
        assert_ne!(base.root(), other_depth.root());
    }

    #[test]
    fn slots_and_times_saturate() {
        let genesis = sample();
        let start = genesis.genesis_time_ms();
        assert_eq!(genesis.slot_at(0), 0);
        assert_eq!(genesis.slot_at(start), 0);
        assert_eq!(genesis.slot_at(start + 1_999), 0);
        assert_eq!(genesis.slot_at(start + 2_000), 1);
        assert_eq!(genesis.start_of(0), start);
        assert_eq!(genesis.start_of(5), start + 10_000);
        assert_eq!(genesis.start_of(u64::MAX), u64::MAX);
        assert_eq!(genesis.slot_at(u64::MAX), (u64::MAX - start) / 2_000);
        assert_eq!(genesis.slot_at(genesis.start_of(123)), 123);
    }

    #[test]
    fn proposers_rotate_by_slot() {
        let genesis = sample();
        assert_eq!(genesis.proposer_index_at(0), 0);
        assert_eq!(genesis.proposer_index_at(4), 1);
        assert_eq!(genesis.proposer_index_at(u64::MAX), u64::MAX % 3);
        assert!(genesis.proposer_key(2).is_some());
        assert!(genesis.proposer_key(3).is_none());
        assert!(genesis.proposer_key(u64::MAX).is_none());
    }

    #[test]
    fn devnet_keys_are_deterministic_and_distinct() {
        let a = devnet_keys(1, 3);
        let b = devnet_keys(1, 3);
        let c = devnet_keys(2, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].to_bytes(), b[0].to_bytes());
        assert_ne!(a[0].to_bytes(), a[1].to_bytes());
        assert_ne!(a[0].to_bytes(), c[0].to_bytes());
    }

    #[test]
    fn secret_key_files_round_trip_and_refuse_garbage() {
        let key = &devnet_keys(3, 1)[0];
        let text = secret_key_to_text(key);
        assert!(text.starts_with("meshsync-bls-secret-key-v1\n"));
        assert_eq!(text.lines().nth(1).unwrap().len(), 64);
        let parsed = secret_key_from_text(&text).unwrap();
        assert_eq!(parsed.to_bytes(), key.to_bytes());
        assert_eq!(
            secret_key_from_text("meshsync-ed25519-secret-key-v1\n00\n").unwrap_err(),
            BlsKeyFileError::WrongHeader
        );
        assert_eq!(
            secret_key_from_text(&format!("{BLS_KEY_FILE_HEADER}\nabc\n")).unwrap_err(),
            BlsKeyFileError::MalformedKey
        );
        assert_eq!(
            secret_key_from_text(&format!("{text}extra\n")).unwrap_err(),
            BlsKeyFileError::MalformedKey
        );
        assert_eq!(
            secret_key_from_text(&format!("{BLS_KEY_FILE_HEADER}\n{}\n", "00".repeat(32)))
                .unwrap_err(),
            BlsKeyFileError::InvalidKey
        );
        assert_eq!(
            secret_key_from_text(&format!("{BLS_KEY_FILE_HEADER}\n{}\n", "ff".repeat(32)))
                .unwrap_err(),
            BlsKeyFileError::InvalidKey
        );
    }

    #[test]
    fn hex_helpers_round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff];
        assert_eq!(hex_encode(&bytes), "007f80ff");
        assert_eq!(hex_decode::<4>("007F80ff"), Some(bytes));
        assert_eq!(hex_decode::<4>("007f80f"), None);
        assert_eq!(hex_decode::<4>("007f80fg"), None);
        assert_eq!(hex_decode::<2>("+1+1"), None);
    }
}
