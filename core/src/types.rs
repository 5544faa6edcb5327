//! The shared vocabulary of the core: names and small values that every
//! layer speaks (connections, directions, block roots, a chain's status,
//! Goodbye reasons, what a valid topic name is). This module imports
//! nothing from the crate, so any
//! module may import it without making a cycle; the layers above it are
//! described in ARCHITECTURE.md.

/// A transport connection, named by the driver. The driver must never reuse an id.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct ConnId(pub u64);

/// A dial the core asked for, named by the core in [`crate::io::Action::Dial`].
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct DialId(pub u64);

/// Who opened a connection.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum Direction {
    /// The remote dialled us.
    Inbound,
    /// We dialled the remote.
    Outbound,
}

/// Orders two 32-byte strings as their bytes would be ordered, comparing
/// four big-endian words: the derived order of a `[u8; 32]` calls `memcmp`
/// for each comparison, which the maps keyed by roots and peer ids make by
/// the dozen per lookup.
pub(crate) fn cmp_as_words(ours: &[u8; 32], theirs: &[u8; 32]) -> std::cmp::Ordering {
    let word = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().expect("chunks of 8"));
    for (ours, theirs) in ours.chunks_exact(8).zip(theirs.chunks_exact(8)) {
        match word(ours).cmp(&word(theirs)) {
            std::cmp::Ordering::Equal => {}
            unequal => return unequal,
        }
    }
    std::cmp::Ordering::Equal
}

/// A 32-byte block root (sha256 of the block header encoding).
///
/// A type of its own, not a `[u8; 32]`, so a root cannot be mixed up with a
/// key, a seed or a signing message, and so it has one formatter for people:
/// `Display` shows its first [`Root::SHORT_BYTES`] bytes in hex (like a short
/// commit id), `{:x}` all 32. `Debug` prints the bytes as the array would,
/// so traces that hash notifications' `Debug` text do not move.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Root(pub [u8; 32]);

/// The bytes' order, as the derived one on the array would give, compared
/// as words: roots key the chain store's maps, where every lookup of a
/// block compares a few dozen of them.
impl Ord for Root {
    fn cmp(&self, other: &Root) -> std::cmp::Ordering {
        cmp_as_words(&self.0, &other.0)
    }
}

impl PartialOrd for Root {
    fn partial_cmp(&self, other: &Root) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Root {
    /// Bytes `Display` shows: 8 hex digits, enough to tell the blocks of
    /// one run apart.
    pub const SHORT_BYTES: usize = 4;

    /// The all-zero root: no block has it (a sha256 output), so it marks
    /// "none" on the wire, as in a Status before any finality.
    pub const ZERO: Root = Root([0; 32]);

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for Root {
    fn from(bytes: [u8; 32]) -> Root {
        Root(bytes)
    }
}

impl AsRef<[u8]> for Root {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0[..Self::SHORT_BYTES] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::LowerHex for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// The chain as the sender sees it; the body of a Status request and of its answer.
///
/// ```text
/// offset  size  field
/// 0       8     network id, u64
/// 8       32    finalized root
/// 40      8     finalized slot, u64
/// 48      32    head root
/// 80      8     head slot, u64
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The network; a peer on another one gets Goodbye(irrelevant network).
    pub network_id: u64,
    /// The latest finalized block's root.
    pub finalized_root: Root,
    /// Its slot.
    pub finalized_slot: u64,
    /// The head block's root.
    pub head_root: Root,
    /// Its slot.
    pub head_slot: u64,
}

/// The Goodbye reason codes (Ethereum p2p spec values, plus Lighthouse's 128+).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum GoodbyeReason {
    /// 1: the node is shutting down.
    ClientShutdown,
    /// 2: the peer is on another network or an incompatible version.
    IrrelevantNetwork,
    /// 3: the peer broke the protocol or sent something undecodable.
    Fault,
    /// 128: the network could not be verified.
    UnableToVerifyNetwork,
    /// 129: we have as many peers as we want.
    TooManyPeers,
    /// 250: the peer's score fell too low.
    BadScore,
    /// 251: the peer is banned.
    Banned,
    /// 252: the peer's IP address is banned.
    BannedIp,
    /// Any other code, kept as received.
    Other(u64),
}

impl GoodbyeReason {
    /// The wire code.
    pub const fn code(self) -> u64 {
        match self {
            GoodbyeReason::ClientShutdown => 1,
            GoodbyeReason::IrrelevantNetwork => 2,
            GoodbyeReason::Fault => 3,
            GoodbyeReason::UnableToVerifyNetwork => 128,
            GoodbyeReason::TooManyPeers => 129,
            GoodbyeReason::BadScore => 250,
            GoodbyeReason::Banned => 251,
            GoodbyeReason::BannedIp => 252,
            GoodbyeReason::Other(code) => code,
        }
    }

    /// The reason for a wire code.
    pub const fn from_code(code: u64) -> GoodbyeReason {
        match code {
            1 => GoodbyeReason::ClientShutdown,
            2 => GoodbyeReason::IrrelevantNetwork,
            3 => GoodbyeReason::Fault,
            128 => GoodbyeReason::UnableToVerifyNetwork,
            129 => GoodbyeReason::TooManyPeers,
            250 => GoodbyeReason::BadScore,
            251 => GoodbyeReason::Banned,
            252 => GoodbyeReason::BannedIp,
            other => GoodbyeReason::Other(other),
        }
    }
}

/// Longest topic name, in bytes, in gossip (§5b) and in Metadata (§5.6)
/// alike: topics are short paths (`blocks`, `/meshsync/blocks/1`), and the
/// bound caps what a peer makes us store per announced topic.
pub const TOPIC_BYTES_MAX: usize = 128;

/// Whether `name` is a valid topic name: 1..=[`TOPIC_BYTES_MAX`] bytes of
/// printable ASCII other than space (0x21..=0x7E). The one definition, used
/// by gossip's `Topic` and by the Metadata decoder, so a topic one accepts
/// the other never refuses. No space and no control bytes: topics are
/// metric labels and log words, where either would be ambiguous.
pub fn is_valid_topic_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_BYTES_MAX
        && name.iter().all(|byte| (0x21..=0x7E).contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_shows_its_first_four_bytes_in_hex_and_all_of_them_with_x() {
        let mut bytes = [0xffu8; 32];
        bytes[..4].copy_from_slice(&[0x00, 0x1a, 0xb2, 0xc3]);
        let root = Root(bytes);
        assert_eq!(root.to_string(), "001ab2c3");
        assert_eq!(format!("{root:x}"), format!("001ab2c3{}", "ff".repeat(28)));
        // Debug is the array's, so hashed Debug text of notifications stays put.
        assert_eq!(format!("{root:?}"), format!("{bytes:?}"));
    }

    /// Maps keyed by roots iterate in the same order as before the word
    /// comparison: the bytes' order, whichever byte differs first.
    #[test]
    fn roots_order_as_their_bytes() {
        let mut roots = Vec::new();
        for position in [0, 7, 8, 15, 31] {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = [0x55u8; 32];
                bytes[position] = value;
                roots.push(Root(bytes));
            }
        }
        for a in &roots {
            for b in &roots {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0), "{a:x} against {b:x}");
                assert_eq!(a.partial_cmp(b), Some(a.0.cmp(&b.0)));
            }
        }
    }
}
