//! Serde helpers for values serde cannot derive by itself: byte arrays
//! longer than 32 (signatures, BLS keys, inline names), written as one
//! length-prefixed byte string rather than element by element.
//!
//! Used by the derives that make [`crate::Input`], [`crate::Action`] and
//! [`crate::Config`] serializable for the recording of a node
//! (`crate::record`). Types with a wire encoding of their own (a signed
//! block, a genesis, a peer record, a BLS key) implement serde by hand
//! beside their definition, through that encoding, so a decoded value has
//! passed the same checks as one read from a peer.

/// `#[serde(with = "crate::serial::byte_array")]` on a `[u8; N]` field:
/// serialized as a byte string of exactly `N` bytes; any other length is a
/// decoding error.
pub mod byte_array {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `bytes` as one byte string.
    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a byte string of exactly `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        deserializer.deserialize_bytes(ArrayVisitor::<N>)
    }

    struct ArrayVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a byte string of {N} bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<[u8; N], E> {
            bytes
                .try_into()
                .map_err(|_| E::invalid_length(bytes.len(), &self))
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<[u8; N], E> {
            self.visit_bytes(&bytes)
        }
    }
}

/// Serde through a type's own byte encoding: `serialize` writes
/// `encode(value)` as a byte string, `deserialize` hands the bytes to a
/// checking decoder. For the hand-written impls beside each such type.
pub(crate) mod encoded {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `bytes`, a value's encoding, as one byte string.
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a byte string and decodes it with `decode`, whose error
    /// becomes the deserializer's, naming `what`.
    pub(crate) fn deserialize<'de, D, T, E>(
        deserializer: D,
        what: &'static str,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        E: std::fmt::Debug,
    {
        let bytes = deserializer.deserialize_bytes(BytesVisitor(what))?;
        decode(&bytes).map_err(|error| D::Error::custom(format_args!("{what}: {error:?}")))
    }

    struct BytesVisitor(&'static str);

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "the encoding of {}", self.0)
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}
