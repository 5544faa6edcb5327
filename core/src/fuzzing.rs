//! Entry points for the fuzz targets in `fuzz/`, kept here so that ordinary
//! tests replay the same corpora through the same code on the stable toolchain.
//!
//! Each function takes arbitrary bytes and must never panic; a panic is a bug
//! (peer input reached an assertion or an unchecked operation).

use crate::codec::{DecodeError, MessageReassembler, NoiseFrameDecoder};
use crate::io::{CloseCause, Command, ConnId, GoodbyeReason, Input, Origin};
use crate::limits::{MESSAGE_BYTES_MAX, RECEIVE_BUFFER_BYTES_MAX};
use crate::node::{Config, Node};
use crate::reqresp::{ReqRespDecodeError, ReqRespMessage};
use crate::secure::{Handshake, LocalKeys};
use crate::testing::{address_of, Delivery, MemoryNet};
use crate::time::Duration;
use crate::Identity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Frame decoding: the wire bytes are split by the first byte's choice of
/// piece size, decoded as Noise frames whose contents are fed as plaintext to
/// the message reassembler and decoder. Splitting must not change the result.
pub fn frame_decode(data: &[u8]) {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    let whole = decode_all(wire, wire.len().max(1));
    let pieces = decode_all(wire, usize::from(split).max(1));
    assert_eq!(
        whole, pieces,
        "the split of incoming bytes changed the result"
    );
}

fn decode_all(
    wire: &[u8],
    piece: usize,
) -> (
    Vec<Result<ReqRespMessage, ReqRespDecodeError>>,
    Option<DecodeError>,
) {
    let mut frames = NoiseFrameDecoder::new();
    let mut reassembler = MessageReassembler::new();
    let mut messages = Vec::new();
    for chunk in wire.chunks(piece) {
        let result = frames.decode(chunk, |frame| {
            reassembler.push(frame, |message| {
                assert!(message.len() <= MESSAGE_BYTES_MAX);
                messages.push(ReqRespMessage::decode(message));
                Ok::<(), DecodeError>(())
            })
        });
        assert!(frames.buffered_bytes() <= RECEIVE_BUFFER_BYTES_MAX);
        assert!(reassembler.buffered_bytes() <= MESSAGE_BYTES_MAX + 4);
        if let Err(error) = result {
            return (messages, Some(error));
        }
    }
    (messages, None)
}

/// A node answering a handshake from arbitrary bytes. With the first byte odd,
/// a genuine message 1 is sent first so the fuzzer reaches message 3.
pub fn handshake_responder(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut node = Node::new(Config::new(1), Identity::from_seed(1), [1; 32]);
    let conn = ConnId(0);
    let remote = address_of(1);
    node.handle(
        crate::Instant::ZERO,
        Input::ConnectionOpened {
            conn,
            remote,
            origin: Origin::Accepted,
        },
    );
    if mode & 1 == 1 {
        let keys = LocalKeys::new(Identity::from_seed(2), &mut ChaCha20Rng::seed_from_u64(2));
        let mut message1 = Vec::new();
        Handshake::initiate(&keys, [2; 32], None, &mut message1).expect("valid keys");
        node.handle(
            crate::Instant::ZERO,
            Input::BytesReceived {
                conn,
                bytes: message1,
            },
        );
    }
    let piece = usize::from(mode >> 1).max(1);
    for chunk in rest.chunks(piece) {
        node.handle(
            crate::Instant::ZERO,
            Input::BytesReceived {
                conn,
                bytes: chunk.to_vec(),
            },
        );
        while node.poll_action().is_some() {}
    }
    assert!(node.peer_count() <= 1);
}

/// Reads the fuzzer's bytes as a script.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        let count = count.min(self.data.len());
        let (taken, rest) = self.data.split_at(count);
        self.data = rest;
        taken.to_vec()
    }
}

/// Nodes on an in-memory network driven by a script of arbitrary operations:
/// dials, deliveries, tampering, drops, replays, raw bytes, closes, time,
/// disconnects and shutdowns. Afterwards the nodes must still be consistent.
/// Returns the handshakes completed, so tests can see how deep a script went.
pub fn node_inputs(data: &[u8]) -> u64 {
    const NODES: usize = 3;
    let mut net = MemoryNet::with_nodes(NODES);
    let mut script = Script { data };
    let mut raw_conns: Vec<(usize, ConnId)> = Vec::new();
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        let node = usize::from(argument) % NODES;
        let other = usize::from(argument / 3) % NODES;
        match op % 12 {
            0 => {
                let expected = (argument & 0x80 != 0).then(|| net.nodes[other].peer_id());
                let addr = address_of(other);
                net.handle(
                    node,
                    Input::Command(Command::Dial {
                        addr,
                        peer: expected,
                    }),
                );
            }
            1 => {
                net.step();
            }
            2 => net.piece_bytes = (argument > 0).then_some(usize::from(argument)),
            3 => {
                if let Some(Delivery::Bytes { bytes, .. }) = net.in_flight.front_mut() {
                    if !bytes.is_empty() {
                        let at = usize::from(argument) % bytes.len();
                        bytes[at] ^= 1 << (argument % 8);
                    }
                }
            }
            4 => {
                net.in_flight.pop_front();
            }
            5 => net.advance(Duration::from_millis(u64::from(argument) * 500)),
            6 => {
                let length = usize::from(script.byte().unwrap_or(0));
                let bytes = script.bytes(length);
                let conn = match raw_conns.iter().find(|(n, _)| *n == node) {
                    Some(&(_, conn)) if argument & 1 == 0 => conn,
                    _ => {
                        let conn = net.raw_connection(node);
                        raw_conns.push((node, conn));
                        conn
                    }
                };
                net.handle(node, Input::BytesReceived { conn, bytes });
            }
            7 => {
                let link = net.links.keys().nth(usize::from(argument)).copied();
                if let Some((at, conn)) = link {
                    if let Some((remote, remote_conn)) = net.links.remove(&(at, conn)) {
                        net.links.remove(&(remote, remote_conn));
                        let cause = CloseCause::Io("reset".into());
                        net.handle(
                            at,
                            Input::ConnectionClosed {
                                conn,
                                cause: cause.clone(),
                            },
                        );
                        net.handle(
                            remote,
                            Input::ConnectionClosed {
                                conn: remote_conn,
                                cause,
                            },
                        );
                    }
                }
            }
            8 => {
                let peer = net.nodes[other].peer_id();
                let reason = GoodbyeReason::from_code(u64::from(argument));
                net.handle(node, Input::Command(Command::Disconnect { peer, reason }));
            }
            9 => net.handle(node, Input::Command(Command::Shutdown)),
            10 => {
                if let Some(front) = net.in_flight.front().cloned() {
                    net.in_flight.push_back(front);
                }
            }
            _ => net.drain(),
        }
        check_consistency(&net);
    }
    net.drain();
    check_consistency(&net);
    net.nodes
        .iter()
        .map(|node| node.counters().handshakes_completed)
        .sum()
}

fn check_consistency(net: &MemoryNet) {
    for node in &net.nodes {
        assert!(node.peer_count() <= node.config().peer.limits.peers_max);
        assert!(
            !node.is_connected(&node.peer_id()),
            "a node counts itself as a peer"
        );
        let peers = node.peers();
        assert_eq!(peers.len(), node.peer_count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    /// A few hundred random scripts per target: a smoke test of the harnesses
    /// themselves; `cargo fuzz` does the real search.
    #[test]
    fn random_inputs_do_not_panic() {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        for round in 0..300 {
            let mut data = vec![0u8; (rng.next_u32() % 600) as usize];
            rng.fill_bytes(&mut data);
            frame_decode(&data);
            handshake_responder(&data);
            if round % 3 == 0 {
                node_inputs(&data);
            }
        }
    }

    #[test]
    fn node_inputs_scripts_reach_established_peers() {
        // Node 0 dials node 1 (argument 3), then the network drains.
        assert_eq!(node_inputs(&[0, 3, 11, 0]), 2);
        // The same dial with its first delivery dropped never completes.
        assert_eq!(node_inputs(&[0, 3, 4, 0, 11, 0]), 0);
    }
}
