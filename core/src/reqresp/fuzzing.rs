//! Entry points for fuzz targets over everything in req/resp that takes
//! peer bytes, in the style of `crate::fuzzing`: each takes arbitrary bytes,
//! must never panic on them, and asserts the properties that must hold (a
//! panic is a real bug).

use super::bodies::{
    BlockPayload, BlocksByRangeRequest, BlocksByRootRequest, Body, Goodbye, Metadata,
    MetadataRequest, Ping, Status,
};
use super::inbound::{Answer, InboundConfig, InboundOutcome, InboundRequests};
use super::limits::{RESPONSE_PAYLOAD_BYTES_MAX, ROOTS_PER_REQUEST_MAX};
use super::outbound::{ChunkOutcome, EndOutcome, OutboundConfig, OutboundRequests};
use super::rate::{RateCheck, RateLimiter, RateLimiterConfig};
use super::snappy;
use super::wire::{
    ProtocolId, ReqRespMessage, Request, RequestId, ResponseChunk, ResponseEnd, ResultCode,
};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::{Duration, Instant};
use crate::types::Root;

/// Any req/resp message: decoding never panics; a decoded message encodes
/// to bytes that decode to the same message (chunks and ends byte for byte;
/// requests up to the choice of snappy encoding of the body).
pub fn message_decode(data: &[u8]) {
    let Ok(message) = ReqRespMessage::decode(data) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(
        ReqRespMessage::decode(&encoded).as_ref(),
        Ok(&message),
        "re-encoding changed the message"
    );
    match &message {
        ReqRespMessage::Request(request) => {
            assert_eq!(Request::peek_id(data), Some(request.id));
            assert!(request.body.len() <= request.protocol.request_bytes_max());
        }
        ReqRespMessage::Chunk(chunk) => {
            assert_eq!(encoded, data, "chunks are canonical");
            if let Ok(payload) = chunk.payload(RESPONSE_PAYLOAD_BYTES_MAX) {
                assert!(payload.len() <= RESPONSE_PAYLOAD_BYTES_MAX);
            }
            if !chunk.code.is_success() {
                let _ = chunk.error_message();
            }
        }
        ReqRespMessage::End(_) => assert_eq!(encoded, data, "ends are canonical"),
    }
}

/// The typed bodies; the first byte picks which. A decoded body encodes to
/// exactly the input (every body encoding is canonical).
pub fn body_decode(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => canonical::<Status>(bytes),
        1 => canonical::<Ping>(bytes),
        2 => canonical::<MetadataRequest>(bytes),
        3 => canonical::<Metadata>(bytes),
        4 => canonical::<Goodbye>(bytes),
        5 => canonical::<BlocksByRangeRequest>(bytes),
        6 => canonical::<BlocksByRootRequest>(bytes),
        _ => canonical::<BlockPayload>(bytes),
    }
}

fn canonical<B: Body + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(body) = B::decode(bytes) {
        let encoded = body.encode();
        assert_eq!(encoded, bytes, "{body:?} is not canonical");
        assert!(encoded.len() <= B::BYTES_MAX);
    }
}

/// A snappy frame, decompressed within a limit taken from the first two
/// bytes. Success means the output is within the limit and survives a round
/// trip through our compressor.
pub fn snappy_decompress(data: &[u8]) {
    let Some((limit, frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit_bytes = usize::from(u16::from_be_bytes(*limit)) * 16;
    if let Ok(payload) = snappy::decompress(frame, limit_bytes) {
        assert!(payload.len() <= limit_bytes);
        let again = snappy::compress(&payload);
        assert_eq!(snappy::decompress(&again, limit_bytes), Ok(payload));
    }
}

use crate::fuzz_script::Script;

const PEERS: u8 = 3;

fn peer_of(byte: u8) -> PeerId {
    PeerId::from_bytes([byte % PEERS; 32])
}

fn valid_request_body(protocol: ProtocolId, argument: u8) -> Vec<u8> {
    match protocol {
        ProtocolId::Status => Status {
            network_id: 1,
            finalized_root: Root([argument; 32]),
            finalized_slot: 0,
            head_root: Root([argument; 32]),
            head_slot: u64::from(argument),
        }
        .encode(),
        ProtocolId::Ping => Ping {
            metadata_seq: u64::from(argument),
        }
        .encode(),
        ProtocolId::Goodbye => Goodbye {
            reason: crate::types::GoodbyeReason::from_code(u64::from(argument)),
        }
        .encode(),
        ProtocolId::BlocksByRange => BlocksByRangeRequest {
            start_slot: u64::from(argument),
            count: u64::from(argument % 64) + 1,
        }
        .encode(),
        ProtocolId::BlocksByRoot => BlocksByRootRequest {
            roots: vec![Root([argument; 32]); usize::from(argument) % ROOTS_PER_REQUEST_MAX + 1],
        }
        .encode(),
        ProtocolId::FindNode => vec![argument; crate::reqresp::limits::FIND_NODE_REQUEST_BYTES],
        ProtocolId::Metadata | ProtocolId::PeerRecord | ProtocolId::Application(_) => Vec::new(),
    }
}

/// Our outbound tracker driven by a script of sends, transmits, peer chunks
/// and ends (well-formed, for real or made-up ids, or arbitrary bytes),
/// time steps, timeouts and disconnects. Invariants are checked after every step.
pub fn outbound_script(data: &[u8]) {
    let mut tracker = OutboundRequests::new(OutboundConfig::default());
    let mut script = Script::new(data);
    let mut now = Instant::ZERO;
    let mut sent: Vec<(PeerId, RequestId)> = Vec::new();
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        let peer = peer_of(argument);
        match op % 8 {
            0 => {
                let protocol = ProtocolId::BUILT_IN[usize::from(argument / 3) % 6];
                let body = valid_request_body(protocol, argument);
                let _ = tracker.send(now, peer, protocol, body);
            }
            1 => {
                while let Some((peer, request)) = tracker.poll_transmit(now) {
                    // What leaves must encode and decode.
                    let encoded = request.encode();
                    assert_eq!(Request::decode(&encoded).as_ref(), Ok(&request));
                    sent.push((peer, request.id));
                }
            }
            2 | 3 => {
                // A chunk for a request we sent (or a made-up id), from its peer or another.
                let id = pick_id(&sent, argument);
                let from = if argument & 0x80 == 0 {
                    owner(&sent, id).unwrap_or(peer)
                } else {
                    peer
                };
                let chunk = if op % 8 == 2 {
                    let length = usize::from(script.byte().unwrap_or(0));
                    ResponseChunk::success(id, script.bytes(length))
                } else {
                    let code =
                        ResultCode::from_byte(argument % 8).unwrap_or(ResultCode::ServerError);
                    if code.is_success() {
                        ResponseChunk::success(id, &[])
                    } else {
                        ResponseChunk::error(id, code, "error")
                    }
                };
                if let ChunkOutcome::Chunk {
                    payload, protocol, ..
                } = tracker.handle_chunk(now, from, chunk)
                {
                    assert!(payload.len() <= protocol.response_bytes_max());
                }
            }
            4 => {
                let id = pick_id(&sent, argument);
                let from = owner(&sent, id).unwrap_or(peer);
                if let EndOutcome::Completed { id: done, .. } =
                    tracker.handle_end(now, from, ResponseEnd { id })
                {
                    assert_eq!(done, id);
                }
            }
            5 => {
                // Arbitrary bytes as a response message.
                let length = usize::from(script.byte().unwrap_or(0));
                match ReqRespMessage::decode(script.bytes(length)) {
                    Ok(ReqRespMessage::Chunk(chunk)) => {
                        tracker.handle_chunk(now, peer, chunk);
                    }
                    Ok(ReqRespMessage::End(end)) => {
                        tracker.handle_end(now, peer, end);
                    }
                    _ => {}
                }
            }
            6 => {
                now = now + Duration::from_millis(u64::from(argument) * 100);
                tracker.handle_timeout(now);
                while tracker.poll_timed_out().is_some() {}
                // The run loop: after timeouts, drain transmits (a quota may have refilled).
                while let Some((peer, request)) = tracker.poll_transmit(now) {
                    sent.push((peer, request.id));
                }
                if let Some(deadline) = tracker.next_deadline() {
                    assert!(
                        deadline > now,
                        "an expired deadline survived handle_timeout"
                    );
                }
            }
            _ => {
                tracker.handle_peer_disconnected(&peer);
                assert_eq!(tracker.in_flight(&peer) + tracker.queued(&peer), 0);
            }
        }
        for n in 0..PEERS {
            let peer = peer_of(n);
            assert!(tracker.in_flight(&peer) <= super::limits::REQUESTS_IN_FLIGHT_PER_PEER_MAX);
            assert!(tracker.queued(&peer) <= super::limits::PENDING_REQUESTS_PER_PEER_MAX);
        }
        assert!(tracker.active_peers() <= usize::from(PEERS));
    }
}

fn pick_id(sent: &[(PeerId, RequestId)], argument: u8) -> RequestId {
    if sent.is_empty() || argument & 0x40 != 0 {
        return RequestId(u64::from(argument));
    }
    sent[usize::from(argument) % sent.len()].1
}

fn owner(sent: &[(PeerId, RequestId)], id: RequestId) -> Option<PeerId> {
    sent.iter()
        .find(|(_, sent_id)| *sent_id == id)
        .map(|(peer, _)| *peer)
}

/// The serving side fed arbitrary request bytes (or valid requests) from a
/// few peers, with answers, time steps, timeouts and disconnects. Checks the
/// open-request bound and that every refusal carries a decodable error chunk.
pub fn inbound_script(data: &[u8]) {
    let mut inbound = InboundRequests::new(InboundConfig::default());
    let mut script = Script::new(data);
    let mut now = Instant::ZERO;
    let mut served: Vec<(PeerId, RequestId)> = Vec::new();
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        let peer = peer_of(argument);
        match op % 6 {
            0 => {
                let length = usize::from(script.byte().unwrap_or(0));
                let bytes = script.bytes(length).to_vec();
                check_inbound(
                    inbound.handle_request_bytes(now, peer, &bytes),
                    &mut served,
                    peer,
                );
            }
            1 => {
                let protocol = ProtocolId::BUILT_IN[usize::from(argument / 3) % 6];
                let request = Request {
                    id: RequestId(u64::from(script.byte().unwrap_or(0))),
                    protocol,
                    body: valid_request_body(protocol, argument),
                };
                check_inbound(
                    inbound.handle_request_bytes(now, peer, &request.encode()),
                    &mut served,
                    peer,
                );
            }
            2 => {
                if !served.is_empty() {
                    let (peer, id) = served.swap_remove(usize::from(argument) % served.len());
                    let chunks = usize::from(script.byte().unwrap_or(0) % 4);
                    let answer = Answer::Chunks(vec![vec![argument; 8]; chunks]);
                    if let Ok(messages) = inbound.respond(now, peer, id, answer) {
                        for message in messages {
                            assert!(ReqRespMessage::decode(&message).is_ok());
                        }
                    }
                }
            }
            3 => {
                now = now + Duration::from_millis(u64::from(argument) * 100);
                inbound.handle_timeout(now);
                while inbound.poll_expired().is_some() {}
                if let Some(deadline) = inbound.next_deadline() {
                    assert!(
                        deadline > now,
                        "an expired deadline survived handle_timeout"
                    );
                }
            }
            4 => {
                if let Some(&(peer, id)) = served.get(usize::from(argument)) {
                    let _ = inbound.respond_error(now, peer, id, ResultCode::ServerError, "boom");
                }
            }
            _ => {
                inbound.handle_peer_disconnected(&peer);
                assert_eq!(inbound.open(&peer), 0);
            }
        }
        for n in 0..PEERS {
            assert!(inbound.open(&peer_of(n)) <= super::limits::INBOUND_REQUESTS_PER_PEER_MAX);
        }
    }
}

fn check_inbound(outcome: InboundOutcome, served: &mut Vec<(PeerId, RequestId)>, peer: PeerId) {
    match outcome {
        InboundOutcome::Serve { id, .. } => served.push((peer, id)),
        InboundOutcome::Refused {
            id,
            refusal,
            response,
        } => {
            let Ok(ReqRespMessage::Chunk(chunk)) = ReqRespMessage::decode(&response) else {
                panic!("a refusal must carry a decodable chunk");
            };
            assert_eq!((chunk.id, chunk.code), (id, refusal.code()));
            assert!(!chunk.code.is_success());
        }
        InboundOutcome::Goodbye { .. } | InboundOutcome::Dropped(_) => {}
    }
}

/// The rate limiter under arbitrary checks and time steps: over any run,
/// what it allows a peer for a protocol never exceeds the bucket plus the
/// refill, `n + n · t / P`.
pub fn rate_limiter_script(data: &[u8]) {
    let mut config = RateLimiterConfig::serving();
    config.peers_max = 2;
    let mut limiter = RateLimiter::new(config.clone());
    let mut script = Script::new(data);
    let mut now = Instant::ZERO;
    // Allowed cost per (peer, protocol index) since it was last forgotten, and since when.
    let mut allowed: Vec<(PeerId, usize, u64, Instant)> = Vec::new();
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        match op % 4 {
            0 | 1 => {
                let peer = peer_of(argument);
                let index = usize::from(argument / 3) % 6;
                let protocol = ProtocolId::BUILT_IN[index];
                let cost = u64::from(script.byte().unwrap_or(1));
                let evicted_before = limiter.counters().peers_evicted;
                let result = limiter.check(now, peer, protocol, cost);
                if limiter.counters().peers_evicted != evicted_before {
                    // Some peer's buckets were forgotten: restart every tally
                    // (a tally may start at any instant; the bound holds from there).
                    allowed.clear();
                }
                if let RateCheck::Limited { retry_after } | RateCheck::Busy { retry_after } = result
                {
                    assert!(!retry_after.is_zero());
                }
                if result == RateCheck::Allowed {
                    let quota = config.quotas[&protocol];
                    let entry = match allowed
                        .iter_mut()
                        .find(|(p, i, ..)| *p == peer && *i == index)
                    {
                        Some(entry) => entry,
                        None => {
                            allowed.push((peer, index, 0, now));
                            allowed.last_mut().expect("just pushed")
                        }
                    };
                    entry.2 += cost.max(1);
                    let elapsed = now.saturating_duration_since(entry.3).as_micros();
                    let refill = u128::from(quota.tokens_max) * elapsed / quota.period.as_micros();
                    assert!(
                        u128::from(entry.2) <= u128::from(quota.tokens_max) + refill,
                        "allowed {} of {protocol} in {elapsed} µs",
                        entry.2
                    );
                }
            }
            2 => now = now + Duration::from_millis(u64::from(argument) * 50),
            _ => {
                let peer = peer_of(argument);
                limiter.remove_peer(&peer);
                allowed.retain(|(p, ..)| *p != peer);
            }
        }
        assert!(limiter.tracked_peers() <= 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    /// Random inputs through every harness: a smoke test of the harnesses;
    /// `cargo fuzz` does the real search.
    #[test]
    fn random_inputs_do_not_panic() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for _ in 0..2_000 {
            let mut data = vec![0u8; (rng.next_u32() % 400) as usize];
            rng.fill_bytes(&mut data);
            message_decode(&data);
            body_decode(&data);
            snappy_decompress(&data);
            outbound_script(&data);
            inbound_script(&data);
            rate_limiter_script(&data);
        }
    }

    /// Valid messages with one byte flipped or cut: the decoders' edges.
    #[test]
    fn mutated_valid_messages_do_not_panic() {
        let messages = [
            Request {
                id: RequestId(5),
                protocol: ProtocolId::BlocksByRoot,
                body: BlocksByRootRequest {
                    roots: vec![Root([3; 32]); 3],
                }
                .encode(),
            }
            .encode(),
            ResponseChunk::success(RequestId(1), &[7; 300]).encode(),
            ResponseChunk::error(RequestId(1), ResultCode::InvalidRequest, "no").encode(),
            ResponseEnd { id: RequestId(9) }.encode(),
        ];
        for message in &messages {
            message_decode(message);
            for index in 0..message.len() {
                for bit in 0..8 {
                    let mut mutated = message.clone();
                    mutated[index] ^= 1 << bit;
                    message_decode(&mutated);
                }
                message_decode(&message[..index]);
            }
        }
    }
}
