//! The logical messages exchanged by established peers.
//!
//! A message is one kind byte followed by a body whose layout the kind fixes.
//! Integers are big-endian. `docs/protocol.md` draws the byte tables.

use super::DecodeError;
use crate::io::GoodbyeReason;

/// The first byte of every logical message.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum MessageKind {
    /// Keepalive probe; the body is a u64 nonce.
    Ping = 1,
    /// Answer to a ping, echoing its nonce.
    Pong = 2,
    /// The sender is closing the connection; the body is a u64 reason code.
    Goodbye = 3,
}

impl MessageKind {
    fn from_byte(byte: u8) -> Result<MessageKind, DecodeError> {
        match byte {
            1 => Ok(MessageKind::Ping),
            2 => Ok(MessageKind::Pong),
            3 => Ok(MessageKind::Goodbye),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// A decoded logical message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// Keepalive probe.
    Ping {
        /// Echoed in the Pong.
        nonce: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// The sender closes the connection after this message.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
    },
}

impl Message {
    /// The kind byte.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Ping { .. } => MessageKind::Ping,
            Message::Pong { .. } => MessageKind::Pong,
            Message::Goodbye { .. } => MessageKind::Goodbye,
        }
    }

    /// Appends the encoding (kind byte and body, no length prefix) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind() as u8);
        match self {
            Message::Ping { nonce } | Message::Pong { nonce } => {
                out.extend_from_slice(&nonce.to_be_bytes())
            }
            Message::Goodbye { reason } => out.extend_from_slice(&reason.code().to_be_bytes()),
        }
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        self.encode_into(&mut out);
        out
    }

    /// Decodes one whole message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (&kind, body) = bytes
            .split_first()
            .ok_or(DecodeError::MessageLength { length: 0 })?;
        let kind = MessageKind::from_byte(kind)?;
        let u64_body = || -> Result<u64, DecodeError> {
            let array: [u8; 8] = body.try_into().map_err(|_| DecodeError::BodyLength {
                kind,
                length: body.len(),
            })?;
            Ok(u64::from_be_bytes(array))
        };
        Ok(match kind {
            MessageKind::Ping => Message::Ping { nonce: u64_body()? },
            MessageKind::Pong => Message::Pong { nonce: u64_body()? },
            MessageKind::Goodbye => Message::Goodbye {
                reason: GoodbyeReason::from_code(u64_body()?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for message in [
            Message::Ping { nonce: 0 },
            Message::Pong { nonce: u64::MAX },
            Message::Goodbye {
                reason: GoodbyeReason::IrrelevantNetwork,
            },
            Message::Goodbye {
                reason: GoodbyeReason::Other(77),
            },
        ] {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn goodbye_layout_is_kind_then_big_endian_code() {
        let bytes = Message::Goodbye {
            reason: GoodbyeReason::IrrelevantNetwork,
        }
        .encode();
        assert_eq!(bytes, [3, 0, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(
            Message::decode(&[]),
            Err(DecodeError::MessageLength { length: 0 })
        );
        assert_eq!(Message::decode(&[99]), Err(DecodeError::UnknownKind(99)));
        assert_eq!(
            Message::decode(&[1, 0, 0]),
            Err(DecodeError::BodyLength {
                kind: MessageKind::Ping,
                length: 2
            })
        );
        assert_eq!(
            Message::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
            Err(DecodeError::BodyLength {
                kind: MessageKind::Pong,
                length: 9
            })
        );
    }
}
