//! Fuzz entry points for the gossip module, called by the fuzz targets and
//! replayed by ordinary tests.
//!
//! # Design
//! [`decode_rpc`] checks the codec: whatever decodes re-encodes to the same
//! bytes (the layout has exactly one encoding per value), and every payload
//! decompresses within its limit or fails cleanly. [`router_script`] drives
//! one [`Gossip`] with a script of peer events, RPCs (arbitrary bytes and
//! well-formed control messages aimed at its edges), verdicts, publishes and
//! heartbeats, and asserts its bounds after every step.

use std::net::{IpAddr, Ipv4Addr};

use super::router::{Config, Gossip, GossipEvent, Validation};
use super::wire::{
    Control, MessageId, Rpc, Subscription, Topic, WireMessage, GOSSIP_MESSAGE_BYTES_MAX,
};
use crate::identity::PeerId;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::machine::Machine;
use crate::time::{Duration, Instant};

/// Decodes `data` as an RPC; on success, re-encodes it and checks the round
/// trip, and decompresses every payload.
pub fn decode_rpc(data: &[u8]) {
    let Ok(rpc) = Rpc::decode(data) else {
        return;
    };
    let again = rpc.encode();
    assert_eq!(again, data, "one encoding per value");
    assert_eq!(Rpc::decode(&again).as_ref(), Ok(&rpc));
    for message in &rpc.messages {
        if let Ok(payload) = message.payload() {
            assert!(payload.len() <= GOSSIP_MESSAGE_BYTES_MAX);
            assert_eq!(payload.len(), message.payload_len());
        }
    }
}

use crate::fuzz_script::Script;

const PEERS: u8 = 6;
const TOPICS: u8 = 3;

/// The peer named by the low 7 bits of `byte` (the high bit is a flag).
fn peer_of(byte: u8) -> PeerId {
    PeerId::from_bytes([(byte & 0x7f) % PEERS; 32])
}

fn topic_of(byte: u8) -> Topic {
    Topic::new(&format!("/t/{}", byte % TOPICS)).expect("a valid name")
}

fn id_of(byte: u8) -> MessageId {
    MessageId([byte % 16; 20])
}

/// A well-formed RPC built from the script: one item of any kind, with
/// small id and topic spaces so they collide with real state.
fn structured_rpc(script: &mut Script<'_>, known: &[MessageId]) -> Rpc {
    let kind = script.byte().unwrap_or(0);
    let argument = script.byte().unwrap_or(0);
    let topic = topic_of(argument);
    let pick_id = |byte: u8| {
        if !known.is_empty() && byte & 1 == 0 {
            known[usize::from(byte) % known.len()]
        } else {
            id_of(byte)
        }
    };
    let ids: Vec<MessageId> = (0..argument % 4).map(|n| pick_id(argument ^ n)).collect();
    let mut rpc = Rpc::default();
    match kind % 8 {
        0 => rpc.subscriptions.push(Subscription {
            subscribe: argument & 0x80 == 0,
            topic,
        }),
        1 => {
            let length = usize::from(script.byte().unwrap_or(0) % 32);
            let payload = script.bytes(length).to_vec();
            rpc.messages.push(WireMessage::new(topic, &payload));
        }
        2 => rpc.control.push(Control::Graft { topic }),
        3 => rpc.control.push(Control::Prune {
            topic,
            backoff_secs: u32::from(script.byte().unwrap_or(0)) << (argument % 32),
        }),
        4 => rpc.control.push(Control::IHave { topic, ids }),
        5 => rpc.control.push(Control::IWant { ids }),
        6 => rpc.control.push(Control::IDontWant { ids }),
        _ => {
            // A large message, so IDONTWANT is triggered.
            rpc.messages.push(WireMessage::new(
                topic,
                &vec![argument; 1_500 + usize::from(argument)],
            ));
        }
    }
    rpc
}

/// A [`Gossip`] fed a script of connects, disconnects, RPCs (raw and
/// structured), verdicts, publishes, subscriptions, drains and heartbeats.
/// Its bounds are asserted after every step, and every RPC it sends must
/// decode and fit a logical message.
pub fn router_script(data: &[u8]) {
    let mut seed = [0u8; 32];
    seed[0] = data.first().copied().unwrap_or(0);
    let mut gossip = Gossip::new(Config::default(), seed);
    let mut script = Script::new(data);
    let mut now = Instant::ZERO;
    let mut pending: Vec<MessageId> = Vec::new();
    let mut known: Vec<MessageId> = Vec::new();
    gossip.subscribe(now, topic_of(0)).expect("room for topics");
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        let peer = peer_of(argument);
        let mut events = Vec::new();
        match op % 11 {
            0 => {
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, (argument & 0x7f) % 3));
                gossip.handle_peer_connected(now, peer, argument & 0x80 != 0, ip);
            }
            1 => gossip.handle_peer_disconnected(now, &peer),
            2 => {
                let length = usize::from(script.byte().unwrap_or(0));
                let bytes = script.bytes(length).to_vec();
                gossip.handle_rpc(now, peer, &bytes);
                events = std::iter::from_fn(|| gossip.poll_event()).collect();
            }
            3 | 4 => {
                let rpc = structured_rpc(&mut script, &known);
                gossip.handle_rpc(now, peer, &rpc.encode());
                events = std::iter::from_fn(|| gossip.poll_event()).collect();
            }
            5 if !pending.is_empty() => {
                let id = pending.swap_remove(usize::from(argument) % pending.len());
                let verdict = match argument % 3 {
                    0 => Validation::Accept,
                    1 => Validation::Ignore,
                    _ => Validation::Reject,
                };
                gossip.report_validation(now, id, verdict);
            }
            6 => {
                let length = usize::from(script.byte().unwrap_or(0) % 32);
                let payload = script.bytes(length).to_vec();
                if let Ok(id) = gossip.publish(now, topic_of(argument), &payload) {
                    known.push(id);
                }
            }
            7 => {
                if argument & 0x80 == 0 {
                    let _ = gossip.subscribe(now, topic_of(argument));
                } else {
                    gossip.unsubscribe(now, &topic_of(argument));
                }
            }
            8 => {
                now = now + Duration::from_millis(u64::from(argument) * 100);
                if gossip
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= now)
                {
                    gossip.handle_timeout(now);
                    assert!(gossip.meshes_within_high_bound());
                    assert!(gossip
                        .next_deadline()
                        .is_some_and(|deadline| deadline > now));
                }
            }
            9 => gossip.set_application_score(&peer, f64::from(argument as i8)),
            _ => {}
        }
        while let Some((_, bytes)) = gossip.poll_send() {
            assert!(bytes.len() <= MESSAGE_BYTES_MAX);
            assert!(Rpc::decode(&bytes).is_ok(), "we send only valid RPCs");
        }
        while let Some(event) = gossip.poll_event() {
            events.push(event);
        }
        for event in events {
            if let GossipEvent::Message {
                id, payload, topic, ..
            } = event
            {
                assert_eq!(MessageId::compute(&topic, &payload), id);
                assert!(gossip.is_subscribed(&topic));
                if pending.len() < 64 {
                    pending.push(id);
                }
                if known.len() < 64 {
                    known.push(id);
                }
            }
        }
        gossip.assert_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    /// Random inputs through both harnesses: a smoke test of the harnesses;
    /// `cargo fuzz` does the real search.
    #[test]
    fn random_inputs_do_not_panic() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for _ in 0..2_000 {
            let mut data = vec![0u8; (rng.next_u32() % 600) as usize];
            rng.fill_bytes(&mut data);
            decode_rpc(&data);
            router_script(&data);
        }
    }

    /// Well-formed scripts (every op with exactly its argument bytes) biased
    /// toward structured RPCs, verdicts and heartbeats, so meshes, gossip,
    /// promises and scores are actually exercised.
    #[test]
    fn biased_scripts_keep_the_bounds() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        for _ in 0..300 {
            let mut data = Vec::new();
            for n in 0..PEERS {
                // Connect (odd peers outbound) and subscribe to /t/0.
                data.extend_from_slice(&[0, n | ((n & 1) << 7), 3, n, 0, 0]);
            }
            for _ in 0..200 {
                let random = rng.next_u32().to_be_bytes();
                let n = random[1] % PEERS;
                match random[0] % 10 {
                    0 | 1 => {
                        data.extend_from_slice(&[3, n, 1, random[2] % 2, 4, 1, 2, 3, random[3]])
                    }
                    2 | 3 => {
                        let kind = 2 + random[2] % 6;
                        data.extend_from_slice(&[3, n, kind, random[3]]);
                        if kind == 3 {
                            data.push(1); // PRUNE's backoff byte.
                        }
                    }
                    4 | 5 => data.extend_from_slice(&[5, random[2]]),
                    6 => data.extend_from_slice(&[6, 0, 3, random[2], random[3], n]),
                    7 | 8 => data.extend_from_slice(&[8, 7]),
                    _ => data.extend_from_slice(&[random[2] % 11, random[3]]),
                }
            }
            router_script(&data);
        }
    }

    /// A valid RPC with one bit flipped or cut anywhere: the decoder's edges.
    #[test]
    fn mutated_valid_rpcs_do_not_panic() {
        let topic = topic_of(1);
        let rpc = Rpc {
            subscriptions: vec![Subscription {
                subscribe: true,
                topic: topic.clone(),
            }],
            messages: vec![WireMessage::new(topic.clone(), b"payload payload payload")],
            control: vec![
                Control::Graft {
                    topic: topic.clone(),
                },
                Control::IHave {
                    topic,
                    ids: vec![id_of(1), id_of(2)],
                },
                Control::IDontWant {
                    ids: vec![id_of(3)],
                },
            ],
        };
        let bytes = rpc.encode();
        decode_rpc(&bytes);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut mutated = bytes.clone();
                mutated[index] ^= 1 << bit;
                decode_rpc(&mutated);
            }
            decode_rpc(&bytes[..index]);
        }
    }
}
