//! Handshake and transport tests.

use super::*;
use crate::codec::{DecodeError, NoiseFrameDecoder};
use crate::identity::Identity;
use crate::limits::NOISE_PLAINTEXT_BYTES_MAX;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn hello(network_id: u64) -> Hello {
    Hello {
        version: 1,
        network_id,
        listen_port: 9000,
        capabilities: 0,
    }
}

/// One side's view after the handshake.
type Side = (Transport, RemoteIdentity);

/// Runs a handshake between two key sets, returning both transports and what each learned.
fn handshake(
    initiator: &LocalKeys,
    responder: &LocalKeys,
    expected: Option<crate::identity::PeerId>,
) -> Result<(Side, Side), SecureError> {
    let mut wire = Vec::new();
    let dialer = Handshake::initiate(initiator, [1; 32], expected, &mut wire)?;
    let listener = Handshake::respond(responder, [2; 32])?;
    let message1 = unframe(&wire);
    let mut wire = Vec::new();
    let HandshakeStep::Continue(listener) =
        listener.read_message(responder, &hello(1), &message1, &mut wire)?
    else {
        panic!("responder finished after message 1");
    };
    let message2 = unframe(&wire);
    let mut wire = Vec::new();
    let HandshakeStep::Done {
        transport: dialer_transport,
        remote: seen_by_dialer,
    } = dialer.read_message(initiator, &hello(1), &message2, &mut wire)?
    else {
        panic!("initiator not finished after message 2");
    };
    let message3 = unframe(&wire);
    let mut wire = Vec::new();
    let HandshakeStep::Done {
        transport: listener_transport,
        remote: seen_by_listener,
    } = listener.read_message(responder, &hello(1), &message3, &mut wire)?
    else {
        panic!("responder not finished after message 3");
    };
    assert!(wire.is_empty());
    Ok((
        (dialer_transport, seen_by_dialer),
        (listener_transport, seen_by_listener),
    ))
}

fn unframe(wire: &[u8]) -> Vec<u8> {
    let mut messages = Vec::new();
    NoiseFrameDecoder::new()
        .decode(wire, |message| {
            messages.push(message.to_vec());
            Ok::<(), DecodeError>(())
        })
        .unwrap();
    assert_eq!(messages.len(), 1);
    messages.pop().unwrap()
}

fn keys(seed: u64) -> LocalKeys {
    LocalKeys::new(
        Identity::from_seed(seed),
        &mut ChaCha20Rng::seed_from_u64(seed),
    )
}

#[test]
fn handshake_proves_both_identities_and_carries_hellos() {
    let (a, b) = (keys(1), keys(2));
    let ((mut a_transport, a_saw), (mut b_transport, b_saw)) =
        handshake(&a, &b, Some(b.peer_id())).unwrap();
    assert_eq!(a_saw.peer, b.peer_id());
    assert_eq!(b_saw.peer, a.peer_id());
    assert_eq!(a_saw.hello, hello(1));
    // Transport works both ways, for more than one Noise message.
    let big = vec![9u8; 200_000];
    let mut wire = Vec::new();
    a_transport.seal(&big, &mut wire);
    let mut plain = Vec::new();
    let mut frames = NoiseFrameDecoder::new();
    frames.enter_transport_mode();
    frames
        .decode(&wire, |message| {
            b_transport
                .open(message, &mut plain)
                .map_err(|_| DecodeError::MessageLength { length: 0 })
        })
        .unwrap();
    assert_eq!(plain, big);
    let mut wire = Vec::new();
    b_transport.seal(b"pong", &mut wire);
    let mut plain = Vec::new();
    a_transport.open(&wire[2..], &mut plain).unwrap();
    assert_eq!(plain, b"pong");
}

#[test]
fn sealing_grows_the_output_by_exactly_what_it_says_once() {
    let (a, b) = (keys(1), keys(2));
    let ((mut transport, _), _) = handshake(&a, &b, None).unwrap();
    for length in [
        1,
        NOISE_PLAINTEXT_BYTES_MAX - 1,
        NOISE_PLAINTEXT_BYTES_MAX,
        NOISE_PLAINTEXT_BYTES_MAX + 1,
        1 << 20,
    ] {
        let mut wire = Vec::new();
        transport.seal(&vec![1u8; length], &mut wire);
        assert_eq!(wire.len(), Transport::sealed_bytes(length), "{length}");
        // One allocation of the exact size: no growth message by message,
        // which copies what was sealed so far each time.
        assert_eq!(wire.capacity(), wire.len(), "{length}");
    }
    assert_eq!(Transport::sealed_bytes(0), 0);
}

#[test]
fn handshake_is_deterministic_for_fixed_seeds() {
    let mut first = Vec::new();
    let mut second = Vec::new();
    Handshake::initiate(&keys(1), [5; 32], None, &mut first).unwrap();
    Handshake::initiate(&keys(1), [5; 32], None, &mut second).unwrap();
    assert_eq!(first, second);
    let mut third = Vec::new();
    Handshake::initiate(&keys(1), [6; 32], None, &mut third).unwrap();
    assert_ne!(first, third);
}

#[test]
fn dialler_refuses_an_unexpected_identity_before_revealing_its_own() {
    let (a, b, c) = (keys(1), keys(2), keys(3));
    let result = handshake(&a, &b, Some(c.peer_id()));
    assert!(matches!(result, Err(SecureError::UnexpectedPeer { actual }) if actual == b.peer_id()));
}

#[test]
fn a_forged_identity_signature_is_refused() {
    // Keys whose signature was made by another identity.
    let honest = keys(2);
    let mut forged = keys(4);
    forged.signature = honest.signature;
    forged.identity = honest.identity.clone();
    let result = handshake(&keys(1), &forged, None);
    assert_eq!(result.err(), Some(SecureError::BadSignature));
}

#[test]
fn a_tampered_transport_message_fails_to_open() {
    let (a, b) = (keys(1), keys(2));
    let ((mut a_transport, _), (mut b_transport, _)) = handshake(&a, &b, None).unwrap();
    let mut wire = Vec::new();
    a_transport.seal(b"hello", &mut wire);
    wire[5] ^= 1;
    let mut plain = Vec::new();
    assert_eq!(
        b_transport.open(&wire[2..], &mut plain),
        Err(SecureError::Decrypt)
    );
    assert!(plain.is_empty());
}

#[test]
fn garbage_handshake_messages_are_errors_not_panics() {
    let b = keys(2);
    for garbage in [
        &[][..],
        &[0u8; 1][..],
        &[7u8; 32][..],
        &[1u8; 500][..],
        &[3u8; 5000][..],
    ] {
        let listener = Handshake::respond(&b, [2; 32]).unwrap();
        let mut out = Vec::new();
        match listener.read_message(&b, &hello(1), garbage, &mut out) {
            Err(_) => {}
            Ok(HandshakeStep::Continue(_)) => {
                assert_eq!(garbage.len(), 32, "only a 32-byte key passes message 1")
            }
            Ok(HandshakeStep::Done { .. }) => panic!("finished on garbage"),
        }
    }
}

/// Message 3 written by a raw snow initiator with `payload_bytes` of payload:
/// a valid identity proof and Hello, padded with zeros (the bytes past 116
/// that later versions may use). Returns the responder's verdict.
fn respond_to_message3_with_payload(payload_bytes: usize) -> Result<HandshakeStep, SecureError> {
    let responder = keys(2);
    let identity = Identity::from_seed(7);
    let builder = snow::Builder::new(NOISE_PARAMS.parse().unwrap());
    let static_keys = builder.generate_keypair().unwrap();
    let mut initiator = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
        .local_private_key(&static_keys.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buffer = vec![0u8; 65_535];
    let written = initiator.write_message(&[], &mut buffer).unwrap();
    let listener = Handshake::respond(&responder, [2; 32]).unwrap();
    let mut wire = Vec::new();
    let HandshakeStep::Continue(listener) =
        listener.read_message(&responder, &hello(1), &buffer[..written], &mut wire)?
    else {
        panic!("responder finished after message 1");
    };
    let message2 = unframe(&wire);
    initiator.read_message(&message2, &mut buffer).unwrap();

    let mut payload = Vec::new();
    payload.extend_from_slice(&1u16.to_be_bytes()); // version
    payload.extend_from_slice(&1u64.to_be_bytes()); // network id
    payload.extend_from_slice(&0u16.to_be_bytes()); // listen port
    payload.extend_from_slice(&0u64.to_be_bytes()); // capabilities
    payload.extend_from_slice(identity.peer_id().as_bytes());
    let mut signed = IDENTITY_SIGNATURE_DOMAIN.to_vec();
    signed.extend_from_slice(&static_keys.public);
    payload.extend_from_slice(&identity.sign(&signed));
    assert_eq!(payload.len(), handshake::HANDSHAKE_PAYLOAD_BYTES);
    payload.resize(payload_bytes, 0);
    let written = initiator.write_message(&payload, &mut buffer).unwrap();
    assert_eq!(
        written,
        payload_bytes + handshake::MESSAGE3_NOISE_OVERHEAD_BYTES
    );
    assert!(
        written <= crate::limits::HANDSHAKE_MESSAGE_BYTES_MAX,
        "within the message limit: only the payload limit can refuse it"
    );
    let mut out = Vec::new();
    listener.read_message(&responder, &hello(1), &buffer[..written], &mut out)
}

#[test]
fn a_handshake_payload_over_its_limit_is_refused_even_within_the_message_limit() {
    use crate::limits::{HANDSHAKE_MESSAGE_BYTES_MAX, HANDSHAKE_PAYLOAD_BYTES_MAX};
    // The limit itself is accepted, with its padding ignored.
    let step = respond_to_message3_with_payload(HANDSHAKE_PAYLOAD_BYTES_MAX).unwrap();
    let HandshakeStep::Done { remote, .. } = step else {
        panic!("not done after message 3");
    };
    assert_eq!(remote.peer, Identity::from_seed(7).peer_id());
    // One byte more is refused, up to the largest payload message 3 can
    // carry within the message limit (1 056 bytes).
    let largest = HANDSHAKE_MESSAGE_BYTES_MAX - handshake::MESSAGE3_NOISE_OVERHEAD_BYTES;
    assert_eq!(largest, 1_056);
    for payload_bytes in [HANDSHAKE_PAYLOAD_BYTES_MAX + 1, largest] {
        assert_eq!(
            respond_to_message3_with_payload(payload_bytes).err(),
            Some(SecureError::MalformedPayload("handshake payload too long")),
            "{payload_bytes} payload bytes"
        );
    }
}
