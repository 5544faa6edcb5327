//! The XX handshake with identity proofs and Hellos in messages 2 and 3.

use rand_core::RngCore;

use super::resolver::SeededResolver;
use super::transport::Transport;
use super::{SecureError, IDENTITY_SIGNATURE_DOMAIN, NOISE_PARAMS};
use crate::codec::NOISE_LENGTH_PREFIX_BYTES;
use crate::identity::{Identity, PeerId};
use crate::limits::{HANDSHAKE_MESSAGE_BYTES_MAX, HANDSHAKE_PAYLOAD_BYTES_MAX};

/// Bytes of a HandshakePayload (docs/protocol.md §3): hello (20) + Ed25519
/// key (32) + signature (64).
pub const HANDSHAKE_PAYLOAD_BYTES: usize = HELLO_BYTES + 32 + 64;
/// Bytes of an encoded [`Hello`].
pub const HELLO_BYTES: usize = 2 + 8 + 2 + 8;
/// Noise overhead of the largest handshake message, message 2 (`<- e, ee, s, es`):
/// ephemeral key, encrypted static key and two tags.
const HANDSHAKE_NOISE_OVERHEAD_BYTES: usize = 32 + 32 + 16 + 16;
/// Noise overhead of message 3 (`-> s, se`): encrypted static key and two
/// tags, no ephemeral key. Smaller than message 2's, which is why the payload
/// limit is checked on the decrypted payload, not only on the message.
pub(super) const MESSAGE3_NOISE_OVERHEAD_BYTES: usize = 32 + 16 + 16;
const _: () = assert!(
    HANDSHAKE_MESSAGE_BYTES_MAX == HANDSHAKE_PAYLOAD_BYTES_MAX + HANDSHAKE_NOISE_OVERHEAD_BYTES
);

const _: () = assert!(HANDSHAKE_PAYLOAD_BYTES <= HANDSHAKE_PAYLOAD_BYTES_MAX);
// Why `read_message` checks the payload itself: a message 3 within the
// message limit can carry more than the payload limit.
const _: () = assert!(
    HANDSHAKE_PAYLOAD_BYTES_MAX + MESSAGE3_NOISE_OVERHEAD_BYTES < HANDSHAKE_MESSAGE_BYTES_MAX
);

/// What a node says about itself in the handshake: the first
/// `HELLO_BYTES` of the HandshakePayload (docs/protocol.md §3, fields
/// `version`, `network_id`, `listen_port`, `capabilities`), which continues
/// with the identity key and its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version; peers must match.
    pub version: u16,
    /// Network id; peers must match.
    pub network_id: u64,
    /// The port the sender listens on (0 if it does not), so inbound peers can be dialled back.
    pub listen_port: u16,
    /// Capability bits; unknown bits are ignored.
    pub capabilities: u64,
}

impl Hello {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.network_id.to_be_bytes());
        out.extend_from_slice(&self.listen_port.to_be_bytes());
        out.extend_from_slice(&self.capabilities.to_be_bytes());
    }

    fn decode(bytes: &[u8; HELLO_BYTES]) -> Hello {
        let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let u64_at = |at: usize| {
            let mut array = [0u8; 8];
            array.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(array)
        };
        Hello {
            version: u16_at(0),
            network_id: u64_at(2),
            listen_port: u16_at(10),
            capabilities: u64_at(12),
        }
    }
}

/// Our long-term keys: the Ed25519 identity, the Noise static key pair and
/// the signature binding them, computed once per node.
pub struct LocalKeys {
    pub(super) identity: Identity,
    noise_private: [u8; 32],
    noise_public: [u8; 32],
    pub(super) signature: [u8; 64],
}

impl LocalKeys {
    /// Draws a Noise static key from `rng` and signs it with `identity`.
    pub fn new(identity: Identity, rng: &mut impl RngCore) -> LocalKeys {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let builder = snow::Builder::with_resolver(
            NOISE_PARAMS
                .parse()
                .expect("the constant names valid params"),
            Box::new(SeededResolver::new(seed)),
        );
        let keypair = builder
            .generate_keypair()
            .expect("the resolver always provides an RNG and X25519");
        let mut noise_private = [0u8; 32];
        let mut noise_public = [0u8; 32];
        noise_private.copy_from_slice(&keypair.private);
        noise_public.copy_from_slice(&keypair.public);
        let signature = identity.sign(&signed_message(&noise_public));
        LocalKeys {
            identity,
            noise_private,
            noise_public,
            signature,
        }
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    fn payload(&self, hello: &Hello) -> Vec<u8> {
        let mut payload = Vec::with_capacity(HANDSHAKE_PAYLOAD_BYTES);
        hello.encode_into(&mut payload);
        payload.extend_from_slice(self.identity.peer_id().as_bytes());
        payload.extend_from_slice(&self.signature);
        payload
    }
}

fn signed_message(noise_static: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(IDENTITY_SIGNATURE_DOMAIN.len() + 32);
    message.extend_from_slice(IDENTITY_SIGNATURE_DOMAIN);
    message.extend_from_slice(noise_static);
    message
}

/// The remote's proven identity and its Hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// Proven by the signature over its Noise static key.
    pub peer: PeerId,
    /// What it says about itself (authenticated by the Noise transcript).
    pub hello: Hello,
}

/// Where a handshake stands after a message.
#[allow(clippy::large_enum_variant)] // Both variants are large; it lives only on the stack between messages.
pub enum HandshakeStep {
    /// Waiting for the remote's next message.
    Continue(Handshake),
    /// The channel is up.
    Done {
        /// Encrypts and decrypts from now on.
        transport: Transport,
        /// Who is at the other end.
        remote: RemoteIdentity,
    },
}

/// A Noise XX handshake in progress.
pub struct Handshake {
    state: snow::HandshakeState,
    /// For an initiator: the identity the responder must prove, if known.
    expected: Option<PeerId>,
    /// Whether the responder has read message 1 already.
    message1_read: bool,
}

impl Handshake {
    /// Starts a handshake as the dialler and appends message 1 (framed) to `out`.
    pub fn initiate(
        keys: &LocalKeys,
        ephemeral_seed: [u8; 32],
        expected: Option<PeerId>,
        out: &mut Vec<u8>,
    ) -> Result<Handshake, SecureError> {
        let mut state = builder(keys, ephemeral_seed).build_initiator()?;
        write_framed(&mut state, &[], out)?;
        Ok(Handshake {
            state,
            expected,
            message1_read: false,
        })
    }

    /// Starts a handshake as the listener; it waits for message 1.
    pub fn respond(keys: &LocalKeys, ephemeral_seed: [u8; 32]) -> Result<Handshake, SecureError> {
        let state = builder(keys, ephemeral_seed).build_responder()?;
        Ok(Handshake {
            state,
            expected: None,
            message1_read: false,
        })
    }

    /// Reads one handshake message (without its length prefix), appending any
    /// reply (framed) to `out`. Any error means: close the connection.
    pub fn read_message(
        mut self,
        keys: &LocalKeys,
        hello: &Hello,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<HandshakeStep, SecureError> {
        if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX {
            return Err(SecureError::MalformedPayload("handshake message too long"));
        }
        let mut payload = vec![0u8; message.len()];
        let payload_bytes = self.state.read_message(message, &mut payload)?;
        // The message bound alone does not bound the payload: message 3
        // carries 32 bytes less Noise overhead than message 2, so a message
        // within HANDSHAKE_MESSAGE_BYTES_MAX could hold up to 1 056 payload bytes.
        if payload_bytes > HANDSHAKE_PAYLOAD_BYTES_MAX {
            return Err(SecureError::MalformedPayload("handshake payload too long"));
        }
        let payload = &payload[..payload_bytes];
        if self.state.is_initiator() {
            // Message 2: the responder's proof. Check it, and the expected
            // identity, before revealing ours in message 3.
            let remote = self.verify_remote(payload)?;
            if let Some(expected) = self.expected {
                if expected != remote.peer {
                    return Err(SecureError::UnexpectedPeer {
                        actual: remote.peer,
                    });
                }
            }
            write_framed(&mut self.state, &keys.payload(hello), out)?;
            self.finish(remote)
        } else if !self.message1_read {
            self.message1_read = true;
            // Message 1 carries nothing; message 2 carries our proof.
            if !payload.is_empty() {
                return Err(SecureError::MalformedPayload("message 1 must be empty"));
            }
            write_framed(&mut self.state, &keys.payload(hello), out)?;
            Ok(HandshakeStep::Continue(self))
        } else {
            // Message 3: the initiator's proof.
            let remote = self.verify_remote(payload)?;
            self.finish(remote)
        }
    }

    fn verify_remote(&self, payload: &[u8]) -> Result<RemoteIdentity, SecureError> {
        if payload.len() < HANDSHAKE_PAYLOAD_BYTES {
            return Err(SecureError::MalformedPayload("handshake payload too short"));
        }
        let hello_bytes: &[u8; HELLO_BYTES] = payload[..HELLO_BYTES]
            .try_into()
            .expect("length checked above");
        let hello = Hello::decode(hello_bytes);
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[HELLO_BYTES..HELLO_BYTES + 32]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&payload[HELLO_BYTES + 32..HELLO_BYTES + 96]);
        let remote_static: [u8; 32] = self
            .state
            .get_remote_static()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(SecureError::MalformedPayload("no remote static key"))?;
        let peer = PeerId::from_bytes(key);
        if !peer.verify(&signed_message(&remote_static), &signature) {
            return Err(SecureError::BadSignature);
        }
        Ok(RemoteIdentity { peer, hello })
    }

    fn finish(self, remote: RemoteIdentity) -> Result<HandshakeStep, SecureError> {
        debug_assert!(self.state.is_handshake_finished());
        let transport = Transport::new(self.state.into_transport_mode()?);
        Ok(HandshakeStep::Done { transport, remote })
    }
}

fn builder(keys: &LocalKeys, ephemeral_seed: [u8; 32]) -> snow::Builder<'_> {
    snow::Builder::with_resolver(
        NOISE_PARAMS
            .parse()
            .expect("the constant names valid params"),
        Box::new(SeededResolver::new(ephemeral_seed)),
    )
    .local_private_key(&keys.noise_private)
    .expect("a 32-byte X25519 key is always accepted")
}

/// Writes one handshake message with its u16 length prefix.
fn write_framed(
    state: &mut snow::HandshakeState,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SecureError> {
    let start = out.len();
    out.resize(
        start + NOISE_LENGTH_PREFIX_BYTES + payload.len() + HANDSHAKE_NOISE_OVERHEAD_BYTES,
        0,
    );
    let written = state.write_message(payload, &mut out[start + NOISE_LENGTH_PREFIX_BYTES..])?;
    out.truncate(start + NOISE_LENGTH_PREFIX_BYTES + written);
    // Cannot truncate: a handshake message is far below 64 KiB.
    out[start..start + NOISE_LENGTH_PREFIX_BYTES].copy_from_slice(&(written as u16).to_be_bytes());
    Ok(())
}

impl LocalKeys {
    /// Our Noise static public key (exposed for tests and fuzzing harnesses).
    pub fn noise_public(&self) -> &[u8; 32] {
        &self.noise_public
    }
}
