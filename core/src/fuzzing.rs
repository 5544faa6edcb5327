//! Entry points for the fuzz targets in `fuzz/`, kept here so that ordinary
//! tests replay the same corpora through the same code on the stable toolchain.
//!
//! Each function takes arbitrary bytes and must never panic; a panic is a bug
//! (peer input reached an assertion or an unchecked operation).

use crate::chain::block::{body_root, BlockHeader, BLOCK_BODY_BYTES_MAX, SIGNATURE_BYTES};
use crate::chain::SignedBlock;
use crate::codec::{DecodeError, MessageReassembler, NoiseFrameDecoder};
use crate::fuzz_script::Script;
#[cfg(test)]
use crate::io::Notification;
use crate::io::{CloseCause, Command, ConnId, GoodbyeReason, Input, Origin};
use crate::limits::{MESSAGE_BYTES_MAX, RECEIVE_BUFFER_BYTES_MAX};
use crate::node::{Config, Node};
use crate::reqresp::bodies::{Body, Status};
use crate::reqresp::{
    ProtocolId, ReqRespDecodeError, ReqRespMessage, Request, RequestId, ResponseChunk, ResponseEnd,
};
use crate::secure::{Handshake, LocalKeys};
use crate::testing::{address_of, Delivery, MemoryNet};
use crate::time::Duration;
use crate::types::Root;
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
    let mut buffer = Vec::new();
    for chunk in wire.chunks(piece) {
        let mut ranges = Vec::new();
        let result = frames.decode(chunk, |frame| {
            reassembler.push(frame, &mut buffer, |range| {
                ranges.push(range);
                Ok::<(), DecodeError>(())
            })
        });
        for range in ranges {
            let message = &buffer[range];
            assert!(message.len() <= MESSAGE_BYTES_MAX);
            messages.push(ReqRespMessage::decode(message));
        }
        buffer.clear();
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

/// Nodes on an in-memory network (two of three running discovery) driven
/// by a script of arbitrary operations:
/// dials, deliveries, tampering, drops, replays, raw bytes, closes, time,
/// disconnects and shutdowns, and two that speak for a hostile peer over its
/// real authenticated channel: a Status whose claims the script builds from
/// a palette of extremes (`claimed_slot`: `u64::MAX`, far future, just
/// ahead of the clock, ...), and an answer to a request id made of blocks the
/// script builds (slots, links, body sizes up to the largest block, bad
/// signatures). Time steps reach minutes, so sync's timers (the 30 s wait
/// for peers, request deadlines) fire. Afterwards the nodes must still be
/// consistent. Returns the handshakes completed, so tests can see how deep a
/// script went.
pub fn node_inputs(data: &[u8]) -> u64 {
    run_node_inputs(data)
        .nodes
        .iter()
        .map(|node| node.counters().handshakes_completed)
        .sum()
}

/// [`node_inputs`], returning the network as the script left it.
fn run_node_inputs(data: &[u8]) -> MemoryNet {
    const NODES: usize = 3;
    // Nodes 1 and 2 run discovery (records, FIND_NODE, trimming), node 0
    // does not, so the script meets both and their mix.
    let configs = (0..NODES)
        .map(|index| {
            let mut config = Config::new(1);
            if index > 0 {
                config.discovery = Some(crate::node::DiscoveryConfig {
                    addresses: vec![address_of(index)],
                    allow_private: true,
                    subnet_limits: true,
                    bootnodes: Vec::new(),
                    peers_target: 1,
                    record_seq: 1,
                    learn_address_port: None,
                });
            }
            config
        })
        .collect();
    let mut net = MemoryNet::new(configs);
    let mut script = Script::new(data);
    let mut raw_conns: Vec<(usize, ConnId)> = Vec::new();
    // Ids of the requests the script sends: far above what the nodes' own
    // trackers issue, so they never collide with a node's own requests.
    let mut script_request_id = SCRIPT_REQUEST_ID_FIRST;
    while let Some(op) = script.byte() {
        let argument = script.byte().unwrap_or(0);
        let node = usize::from(argument) % NODES;
        let other = usize::from(argument / 3) % NODES;
        match op % 15 {
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
                let bytes = script.bytes(length).to_vec();
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
                    net.cut(at, conn, CloseCause::Io("reset".into()));
                }
            }
            8 => {
                let peer = net.nodes[other].peer_id();
                let reason = GoodbyeReason::from_code(u64::from(argument));
                net.handle(node, Input::Command(Command::Disconnect { peer, reason }));
            }
            9 => net.handle(node, Input::Command(Command::Shutdown)),
            10 => {
                // The network may replay bytes; a driver never reports a write twice.
                match net.in_flight.front().cloned() {
                    Some(Delivery::Written { .. }) | None => {}
                    Some(front) => net.in_flight.push_back(front),
                }
            }
            12 => {
                let status = claimed_status(&mut script, &net.nodes[other], net.now);
                let request = Request {
                    id: RequestId(script_request_id),
                    protocol: ProtocolId::Status,
                    body: status.encode(),
                };
                script_request_id = script_request_id.wrapping_add(1);
                speak(&mut net, node, other, &[request.encode()]);
            }
            13 => {
                // Request ids are issued from 0 up: a small one is likely open.
                let id = RequestId(u64::from(script.byte().unwrap_or(0)));
                let mut messages: Vec<Vec<u8>> =
                    scripted_blocks(&mut script, &net.nodes[other], net.now)
                        .iter()
                        .map(|block| ResponseChunk::success(id, &block.encode()).encode())
                        .collect();
                messages.push(ResponseEnd { id }.encode());
                speak(&mut net, node, other, &messages);
            }
            14 => {
                // A discovery answer to a small request id (likely the
                // listener's record exchange or a FIND_NODE query): raw
                // bytes, the speaker's own record, another node's (wrong
                // peer), one for another network, or a FIND_NODE answer.
                let id = RequestId(u64::from(script.byte().unwrap_or(0)));
                let payload = scripted_discovery_answer(&mut script, node, other);
                let messages = [
                    ResponseChunk::success(id, &payload).encode(),
                    ResponseEnd { id }.encode(),
                ];
                speak(&mut net, node, other, &messages);
            }
            _ => net.drain(),
        }
        check_consistency(&net);
    }
    net.drain();
    check_consistency(&net);
    net
}

/// A discovery answer node `speaker` gives `listener`, from the script.
fn scripted_discovery_answer(script: &mut Script, speaker: usize, listener: usize) -> Vec<u8> {
    use crate::discovery::record::Record;
    use crate::discovery::wire::FindNodeAnswer;
    let seq = u64::from(script.byte().unwrap_or(0));
    let record = |index: usize, network_id: u64| {
        let identity = Identity::from_seed(index as u64);
        Record::sign(&identity, network_id, seq, &[address_of(index)])
    };
    match script.byte().unwrap_or(0) % 5 {
        0 => {
            let length = usize::from(script.byte().unwrap_or(0));
            script.bytes(length).to_vec()
        }
        1 => record(speaker, 1).encode(),
        2 => record(listener, 1).encode(),
        3 => record(speaker, 2).encode(),
        _ => FindNodeAnswer {
            records: (0..3).map(|index| record(index, 1)).collect(),
        }
        .encode(),
    }
}

/// The first id of the requests a `node_inputs` script sends.
const SCRIPT_REQUEST_ID_FIRST: u64 = 1 << 48;
/// Blocks one scripted answer carries at most.
const SCRIPTED_BLOCKS_MAX: usize = 4;

/// Node `from` sends `messages` to node `to` over their authenticated
/// channel (nothing if they are not connected), as a hostile peer would.
fn speak(net: &mut MemoryNet, from: usize, to: usize, messages: &[Vec<u8>]) {
    let peer = net.nodes[to].peer_id();
    for message in messages {
        if !net.nodes[from].testing_send_message(&peer, message) {
            break;
        }
    }
    net.requeue(from, Vec::new());
}

/// A slot a hostile peer may claim, from one script byte: its low 3 bits
/// pick the kind (the extremes that break arithmetic, or values around the
/// listener's clock and head), its high 5 bits an offset.
fn claimed_slot(script: &mut Script, listener: &Node, now: crate::Instant) -> u64 {
    let byte = script.byte().unwrap_or(0);
    let offset = u64::from(byte >> 3);
    let genesis = &listener.config().chain.genesis;
    let clock_slot = genesis.slot_at(
        listener
            .config()
            .unix_ms_at_origin
            .saturating_add(now.as_millis()),
    );
    match byte & 7 {
        0 => offset,
        1 => listener.chain().head().slot.saturating_add(offset),
        2 => clock_slot.saturating_add(offset),
        3 => u64::MAX,
        4 => u64::MAX - offset,
        5 => clock_slot.saturating_add(offset << 24),
        6 => 1u64 << (offset % 64),
        _ => u64::from_be_bytes(script.bytes(8).try_into().unwrap_or([0xff; 8])),
    }
}

/// A root a hostile peer may name, from one script byte: the listener's
/// genesis, head or finalized root, or a made-up one.
fn claimed_root(script: &mut Script, listener: &Node) -> crate::chain::Root {
    match script.byte().unwrap_or(0) {
        0 => listener.chain().genesis_root(),
        1 => listener.chain().head().root,
        2 => listener.chain().finalized().root,
        other => Root([other; 32]),
    }
}

/// A Status built from the script: finalized slot and root, head slot and root.
fn claimed_status(script: &mut Script, listener: &Node, now: crate::Instant) -> Status {
    let finalized_slot = claimed_slot(script, listener, now);
    let finalized_root = claimed_root(script, listener);
    let head_slot = claimed_slot(script, listener, now);
    let head_root = claimed_root(script, listener);
    Status {
        network_id: listener.config().network_id,
        finalized_root,
        finalized_slot,
        head_root,
        head_slot,
    }
}

/// Up to [`SCRIPTED_BLOCKS_MAX`] blocks built from the script: the first
/// at a claimed slot on a claimed parent, each next one a few slots later
/// and linked to the previous one unless the script says otherwise; the
/// proposer index of the slot (so cheap checks pass), bodies from empty to
/// the largest a block may carry, and a signature that does not verify.
fn scripted_blocks(script: &mut Script, listener: &Node, now: crate::Instant) -> Vec<SignedBlock> {
    let shape = script.byte().unwrap_or(0);
    let count = usize::from(shape) % SCRIPTED_BLOCKS_MAX + 1;
    let genesis = listener.config().chain.genesis.clone();
    let mut slot = claimed_slot(script, listener, now);
    let mut parent_root = claimed_root(script, listener);
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        let step = script.byte().unwrap_or(0);
        let body_len = match script.byte().unwrap_or(0) {
            0xff => BLOCK_BODY_BYTES_MAX,
            size => usize::from(size) * 16,
        };
        let body = vec![step; body_len];
        let header = BlockHeader {
            slot,
            proposer_index: genesis.proposer_index_at(slot),
            parent_root,
            body_root: body_root(&body),
        };
        let block = SignedBlock {
            header,
            body,
            signature: [step; SIGNATURE_BYTES],
        };
        // Bit 7 of the step breaks the link to the previous block.
        parent_root = if step & 0x80 == 0 {
            block.root()
        } else {
            Root([step; 32])
        };
        slot = slot.saturating_add(u64::from(step & 0x7f));
        blocks.push(block);
    }
    blocks
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
        assert!(
            peers.iter().map(|info| &info.peer).eq(node.peer_ids()),
            "peer_ids() lists what peers() does, in its order"
        );
    }
}

/// The req/resp handler of node 0 fed arbitrary logical messages by node 1
/// over a real authenticated channel. The script is a sequence of
/// `length u16 ‖ message` records; a zero length advances time by 3 s
/// instead (so deadlines and quotas move). Node 0 serves a small chain and
/// an application protocol, so every built-in handler is reachable.
/// Returns how many messages were delivered while the peers were connected.
pub fn reqresp_handler(data: &[u8]) -> u64 {
    // Signed once per process: signing 64 blocks would dominate every run.
    static SERVED_CHAIN: std::sync::OnceLock<crate::chain::ChainConfig> =
        std::sync::OnceLock::new();
    let mut server = Config::new(1);
    server.chain = SERVED_CHAIN
        .get_or_init(|| crate::chain::ChainConfig::devnet_with_chain(1, 64, 64))
        .clone();
    let mut net = MemoryNet::new(vec![server, Config::new(1)]);
    let name = crate::reqresp::ProtocolName::new("fuzz/1").expect("a valid name");
    let quota = crate::reqresp::Quota::new(8, Duration::from_secs(10));
    net.handle(0, Input::Command(Command::RegisterProtocol { name, quota }));
    net.dial(1, 0, None);
    let server_id = net.nodes[0].peer_id();
    let mut script = Script::new(data);
    let mut delivered = 0;
    while let (Some(high), Some(low)) = (script.byte(), script.byte()) {
        let length = usize::from(u16::from_be_bytes([high, low]));
        if length == 0 {
            net.now = net.now + Duration::from_secs(3);
            net.handle(0, Input::Timeout);
            drain_dropping_bytes_to(&mut net, 1);
            continue;
        }
        let message = script.bytes(length);
        if net.nodes[1].testing_send_message(&server_id, message) {
            delivered += 1;
        }
        // Carry node 1's send and everything node 0 does about it. Bytes
        // for node 1 are dropped: node 1 is only the fuzzer's mouthpiece,
        // and answers to requests it never tracked would make it hang up.
        let mut actions = Vec::new();
        while let Some(action) = net.nodes[1].poll_action() {
            actions.push(action);
        }
        net.requeue(1, actions);
        drain_dropping_bytes_to(&mut net, 1);
        check_consistency(&net);
    }
    drain_dropping_bytes_to(&mut net, 1);
    check_consistency(&net);
    delivered
}

fn drain_dropping_bytes_to(net: &mut MemoryNet, node: usize) {
    loop {
        match net.in_flight.front() {
            None => return,
            Some(Delivery::Bytes { to, .. }) if *to == node => {
                net.in_flight.pop_front();
            }
            Some(_) => {
                net.step();
            }
        }
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
                reqresp_handler(&data);
            }
        }
    }

    #[test]
    fn reqresp_scripts_reach_the_handlers() {
        use crate::reqresp::bodies::{Body, Status};
        use crate::reqresp::{ProtocolId, Request, RequestId};
        let status = Request {
            id: RequestId(5),
            protocol: ProtocolId::Status,
            body: Status {
                network_id: 1,
                finalized_root: Root([0; 32]),
                finalized_slot: 0,
                head_root: Root([0; 32]),
                head_slot: 0,
            }
            .encode(),
        }
        .encode();
        let mut script = (status.len() as u16).to_be_bytes().to_vec();
        script.extend_from_slice(&status);
        script.extend_from_slice(&[0, 1, 99]); // an unknown kind: Goodbye(fault)
        assert_eq!(reqresp_handler(&script), 2);
    }

    #[test]
    fn node_inputs_scripts_reach_established_peers() {
        // Node 0 dials node 1 (argument 3), then the network drains.
        assert_eq!(node_inputs(&[0, 3, 11, 0]), 2);
        // The same dial with its first delivery dropped never completes.
        assert_eq!(node_inputs(&[0, 3, 4, 0, 11, 0]), 0);
    }

    /// The script speaks for node 1: a Status with the claims it built
    /// reaches node 0 (finalized at slot 0 on the genesis root, head at
    /// slot 5 on a made-up root, 20 s in: slot 10 of the 2 s devnet, so the
    /// claim is consistent with the clock).
    #[test]
    fn node_inputs_scripts_speak_status_claims() {
        let (finalized_slot, genesis_root, head_slot_5, made_up_root) = (0, 0, 5 << 3, 9);
        let script = [
            0,
            3, // node 0 dials node 1
            11,
            0,
            5,
            40, // 20 s pass
            12,
            1, // node 1 tells node 0:
            finalized_slot,
            genesis_root,
            head_slot_5,
            made_up_root,
            11,
            0,
        ];
        let net = run_node_inputs(&script);
        let claimed = net.notifications[0]
            .iter()
            .find_map(|notification| match notification {
                Notification::PeerStatus { peer, status } if *peer == net.nodes[1].peer_id() => {
                    Some(*status).filter(|status| status.head_root == Root([9; 32]))
                }
                _ => None,
            });
        let claimed = claimed.expect("node 0 heard the scripted Status");
        assert_eq!(claimed.head_slot, 5);
        assert_eq!(claimed.finalized_slot, 0);
        assert_eq!(claimed.finalized_root, net.nodes[0].chain().genesis_root());
    }

    /// Nodes 1 and 2 run discovery: once connected they exchange records
    /// and each enters the other in its table, so scripts reach the
    /// discovery handlers; node 0 runs none.
    #[test]
    fn node_inputs_scripts_reach_discovery() {
        let script = [
            0, 7, // node 1 dials node 2
            11, 0, // the network drains
            5, 4, // 2 s pass
        ];
        let net = run_node_inputs(&script);
        assert!(net.connected(1, 2));
        for (node, other) in [(1, 2), (2, 1)] {
            let discovery = net.nodes[node].discovery().expect("runs discovery");
            let peer = net.nodes[other].peer_id();
            assert!(
                discovery
                    .table()
                    .entries()
                    .any(|entry| entry.record.peer() == peer),
                "node {node} did not enter node {other}"
            );
        }
        assert!(net.nodes[0].discovery().is_none());
    }

    /// A scripted answer reaches node 0; one to a request it never sent
    /// costs node 1 score there.
    #[test]
    fn node_inputs_scripts_answer_requests_with_blocks() {
        let script = [
            0,
            3, // node 0 dials node 1
            11,
            0, // the network drains
            13,
            1,
            200,    // node 1 answers node 0's request 200 (never sent):
            0,      // one block
            1 << 3, // at slot 1
            0,      // on the genesis root
            0,
            0xff, // with the largest body
            11,
            0,
        ];
        let net = run_node_inputs(&script);
        let score = net.nodes[0]
            .peer_manager()
            .score(net.now, &net.nodes[1].peer_id());
        assert!(score.as_points() < 0.0, "node 1 paid nothing: {score:?}");
    }
}
