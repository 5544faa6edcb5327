//! The Kademlia key space: a peer's key is sha256 of its `PeerId`, and
//! closeness is the XOR of two keys read as a 256-bit big-endian number.
//!
//! Hashing the id spreads keys uniformly even if ids are not (an Ed25519
//! key's bytes are not uniform), and a lookup target is any 32 bytes.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::identity::PeerId;

/// A point of the key space.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub [u8; 32]);

/// The XOR of two keys; compares as a 256-bit big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

impl Key {
    /// The key of `peer`: sha256 of its 32 id bytes.
    pub fn of_peer(peer: &PeerId) -> Key {
        Key(Sha256::digest(peer.as_bytes()).into())
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut xor = [0u8; 32];
        for (index, byte) in xor.iter_mut().enumerate() {
            *byte = self.0[index] ^ other.0[index];
        }
        Distance(xor)
    }
}

impl Distance {
    /// The bucket a key at this distance belongs to: the position of the
    /// highest set bit, 0..=255 (bucket 255 holds half the key space), or
    /// `None` for distance 0 (the key itself).
    pub fn bucket(&self) -> Option<usize> {
        let (index, byte) = self.0.iter().enumerate().find(|(_, byte)| **byte != 0)?;
        let leading = index * 8 + byte.leading_zeros() as usize;
        Some(255 - leading)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("..")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_the_highest_differing_bit() {
        let zero = Key([0; 32]);
        assert_eq!(zero.distance(&zero).bucket(), None);
        let mut top = [0u8; 32];
        top[0] = 0x80;
        assert_eq!(zero.distance(&Key(top)).bucket(), Some(255));
        let mut low = [0u8; 32];
        low[31] = 1;
        assert_eq!(zero.distance(&Key(low)).bucket(), Some(0));
        let mut middle = [0u8; 32];
        middle[1] = 0x10;
        middle[5] = 0xff;
        assert_eq!(zero.distance(&Key(middle)).bucket(), Some(255 - 11));
    }

    #[test]
    fn distance_is_symmetric_and_orders_as_a_number() {
        let a = Key::of_peer(&PeerId::from_bytes([1; 32]));
        let b = Key::of_peer(&PeerId::from_bytes([2; 32]));
        assert_eq!(a.distance(&b), b.distance(&a));
        let mut near = [0u8; 32];
        near[31] = 0xff;
        let mut far = [0u8; 32];
        far[30] = 1;
        assert!(Distance(near) < Distance(far));
    }
}
