//! Node tests: several nodes wired together in memory, delivering bytes at once.

use super::*;
use crate::io::{DisconnectReason, GoodbyeReason, Notification, RefuseReason, RequestError};

use crate::testing::{address_of as addr, MemoryNet as Net};

/// Feeds an input and runs the network until quiet.
fn run(net: &mut Net, index: usize, input: Input) {
    net.handle(index, input);
    net.drain();
}

/// The notifications about connections (not statuses, requests, metadata).
fn connection_events(net: &Net, index: usize) -> Vec<Notification> {
    net.notifications[index]
        .iter()
        .filter(|n| {
            matches!(
                n,
                Notification::PeerConnected { .. }
                    | Notification::PeerDisconnected { .. }
                    | Notification::ConnectionRefused { .. }
                    | Notification::DialFailed { .. }
            )
        })
        .cloned()
        .collect()
}

fn refusals(net: &Net, index: usize) -> Vec<RefuseReason> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::ConnectionRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn disconnects(net: &Net, index: usize) -> Vec<DisconnectReason> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::PeerDisconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_nodes_connect_and_learn_each_others_identity() {
    let mut net = Net::with_nodes(2);
    let expected = net.nodes[1].peer_id();
    net.dial(0, 1, Some(expected));
    assert!(net.connected(0, 1));
    assert_eq!(
        connection_events(&net, 0),
        vec![Notification::PeerConnected {
            peer: expected,
            addr: addr(1),
            direction: Direction::Outbound
        }]
    );
    assert_eq!(
        connection_events(&net, 1),
        vec![Notification::PeerConnected {
            peer: net.nodes[0].peer_id(),
            addr: addr(0),
            direction: Direction::Inbound
        }]
    );
    assert_eq!(net.nodes[0].counters().handshakes_completed, 1);
    assert_eq!(net.nodes[1].counters().handshakes_completed, 1);
}

#[test]
fn handshake_completes_when_bytes_arrive_one_at_a_time() {
    let mut net = Net::with_nodes(2);
    net.piece_bytes = Some(1);
    net.dial(0, 1, None);
    assert!(net.connected(0, 1));
    // Pings also survive one-byte delivery.
    net.advance_to(Instant::ZERO + Duration::from_secs(31));
    assert!(net.nodes[0].counters().pongs_received >= 1);
}

#[test]
fn keepalive_pings_hold_a_quiet_connection_open() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    net.advance_to(Instant::ZERO + Duration::from_secs(600));
    assert!(net.connected(0, 1));
    let pings = net.nodes[0].counters().pings_sent;
    assert!(
        (19..=21).contains(&pings),
        "about one ping per 30 s, got {pings}"
    );
    assert_eq!(net.nodes[0].counters().pongs_received, pings);
}

#[test]
fn a_silent_peer_is_dropped_after_the_silence_timeout() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    // Cut the link from 1 to 0 without closing: 0 hears nothing more.
    let (&(_, conn_at_1), _) = net.links.iter().find(|((node, _), _)| *node == 1).unwrap();
    net.links.remove(&(1, conn_at_1));
    net.links.retain(|_, remote| remote.0 != 1);
    net.advance_to(Instant::ZERO + Duration::from_secs(89));
    assert!(net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    net.advance_to(Instant::ZERO + Duration::from_secs(91));
    assert!(!net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    assert_eq!(disconnects(&net, 0), vec![DisconnectReason::Silent]);
    assert_eq!(net.nodes[0].counters().peers_silent, 1);
}

#[test]
fn a_peer_on_another_network_is_refused_with_goodbye_irrelevant_network() {
    let mut net = Net::new(vec![Config::new(1), Config::new(2)]);
    net.dial(0, 1, None);
    assert!(!net.connected(0, 1));
    // The dialler learns the network in message 2 and says Goodbye after message 3.
    assert_eq!(
        refusals(&net, 0),
        vec![RefuseReason::WrongNetwork { ours: 1, theirs: 2 }]
    );
    assert_eq!(net.nodes[0].counters().goodbyes_sent, 1);
    // The listener refuses on message 3 too; it decided before reading the Goodbye.
    assert_eq!(
        refusals(&net, 1),
        vec![RefuseReason::WrongNetwork { ours: 2, theirs: 1 }]
    );
    assert_eq!(net.nodes[1].counters().refused_wrong_network, 1);
    assert_eq!(net.nodes[0].peer_count() + net.nodes[1].peer_count(), 0);
}

#[test]
fn a_dialled_peer_with_another_identity_is_refused() {
    let mut net = Net::with_nodes(3);
    let wrong = net.nodes[2].peer_id();
    net.dial(0, 1, Some(wrong));
    assert!(!net.connected(0, 1));
    assert_eq!(
        refusals(&net, 0),
        vec![RefuseReason::UnexpectedPeer { expected: wrong }]
    );
    assert_eq!(net.nodes[0].counters().refused_unexpected_peer, 1);
    // The listener never learnt the dialler's identity: message 3 was not sent.
    assert!(matches!(
        refusals(&net, 1).as_slice(),
        [RefuseReason::ConnectionLost(_)]
    ));
}

#[test]
fn a_node_refuses_a_connection_to_itself() {
    let mut net = Net::with_nodes(1);
    // Dialling our own address with no expected id: the handshake shows the same key.
    net.dial(0, 0, None);
    assert_eq!(net.nodes[0].peer_count(), 0);
    assert!(refusals(&net, 0).contains(&RefuseReason::SelfConnection));
    // Dialling our own id is refused before any connection.
    let own = net.nodes[0].peer_id();
    net.dial(0, 0, Some(own));
    assert_eq!(net.nodes[0].counters().dials_started, 1);
}

#[test]
fn simultaneous_dials_keep_exactly_one_connection_on_both_sides() {
    let mut net = Net::with_nodes(2);
    // Both dial before either handshake finishes: deliver nothing until both dials exist.
    net.handle(
        0,
        Input::Command(Command::Dial {
            addr: addr(1),
            peer: None,
        }),
    );
    net.handle(
        1,
        Input::Command(Command::Dial {
            addr: addr(0),
            peer: None,
        }),
    );
    assert_eq!(net.links.len(), 4, "two connections, seen from both ends");
    net.drain();
    assert!(net.connected(0, 1));
    // Exactly one link survives, the same one on both sides.
    assert_eq!(net.links.len(), 2, "one connection, seen from both ends");
    let (&(a, conn_a), &(b, conn_b)) = net.links.iter().next().unwrap();
    assert_eq!(
        net.nodes[a].peers.get(&net.nodes[b].peer_id()),
        Some(&conn_a)
    );
    assert_eq!(
        net.nodes[b].peers.get(&net.nodes[a].peer_id()),
        Some(&conn_b)
    );
    // Pings flow on the survivor.
    net.advance_to(Instant::ZERO + Duration::from_secs(35));
    assert!(net.connected(0, 1));
    assert!(net.nodes[0].counters().pongs_received >= 1);
}

#[test]
fn a_redial_to_a_connected_peer_replaces_the_old_connection() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    net.dial(0, 1, None);
    assert!(net.connected(0, 1));
    assert_eq!(net.links.len(), 2);
    // The application saw one connection only.
    assert_eq!(connection_events(&net, 1).len(), 1);
}

#[test]
fn garbage_on_one_connection_closes_only_that_one() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let raw = net.raw_connection(1);
    let actions_before = net.nodes[1].counters().clone();
    net.nodes[1].handle(
        net.now,
        Input::BytesReceived {
            conn: raw,
            bytes: vec![0x00, 0x05, 1, 2, 3, 4, 5, 9, 9],
        },
    );
    let mut closed = false;
    while let Some(action) = net.nodes[1].poll_action() {
        closed |= action == Action::Close { conn: raw };
    }
    assert!(closed);
    assert_eq!(
        net.nodes[1].counters().handshakes_failed,
        actions_before.handshakes_failed + 1
    );
    assert!(net.connected(0, 1));
    net.advance_to(Instant::ZERO + Duration::from_secs(31));
    assert!(net.connected(0, 1));
}

#[test]
fn a_tampered_transport_message_ends_the_connection_with_goodbye_fault() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let conn_at_1 = net.nodes[1].peers[&net.nodes[0].peer_id()];
    // A well-framed transport message that does not decrypt.
    let mut forged = vec![0, 20];
    forged.extend_from_slice(&[0xAB; 20]);
    run(
        &mut net,
        1,
        Input::BytesReceived {
            conn: conn_at_1,
            bytes: forged,
        },
    );
    assert!(!net.connected(0, 1));
    assert!(matches!(
        disconnects(&net, 1).as_slice(),
        [DisconnectReason::ProtocolViolation(_)]
    ));
    assert_eq!(net.nodes[1].counters().protocol_violations, 1);
    // Node 0 decrypted our Goodbye(fault) before the close.
    assert_eq!(
        disconnects(&net, 0),
        vec![DisconnectReason::RemoteGoodbye(GoodbyeReason::Fault)]
    );
}

#[test]
fn handshake_timeout_closes_a_connection_that_never_speaks() {
    let mut net = Net::with_nodes(1);
    let raw = net.raw_connection(0);
    assert_eq!(
        net.nodes[0].poll_timeout(),
        Some(Instant::ZERO + Duration::from_secs(10))
    );
    net.advance_to(Instant::ZERO + Duration::from_secs(10));
    assert_eq!(refusals(&net, 0), vec![RefuseReason::Timeout]);
    assert_eq!(net.nodes[0].counters().refused_timeout, 1);
    // Late bytes on the closed connection are ignored.
    run(
        &mut net,
        0,
        Input::BytesReceived {
            conn: raw,
            bytes: vec![1, 2, 3],
        },
    );
    assert_eq!(net.nodes[0].poll_timeout(), None);
}

#[test]
fn dial_failures_and_timeouts_are_reported() {
    let mut net = Net::with_nodes(2);
    net.down.push(1);
    net.dial(0, 1, None);
    assert!(matches!(
        connection_events(&net, 0).as_slice(),
        [Notification::DialFailed { .. }]
    ));
    // A dial the driver never answers is cancelled after the dial timeout.
    let mut node = Node::new(Config::new(1), Identity::from_seed(9), [9; 32]);
    node.handle(
        Instant::ZERO,
        Input::Command(Command::Dial {
            addr: addr(5),
            peer: None,
        }),
    );
    assert!(matches!(node.poll_action(), Some(Action::Dial { .. })));
    node.handle(Instant::ZERO + Duration::from_secs(10), Input::Timeout);
    assert!(matches!(
        node.poll_action(),
        Some(Action::CancelDial { .. })
    ));
    assert!(matches!(
        node.poll_action(),
        Some(Action::Notify(Notification::DialFailed { .. }))
    ));
    assert_eq!(node.counters().dials_failed, 1);
}

#[test]
fn too_many_peers_are_refused_with_goodbye() {
    let mut config = Config::new(1);
    config.peer.limits.peers_max = 2;
    config.peer.limits.inbound_peers_max = 2;
    config.peer.peers_target = 2;
    let mut net = Net::new(vec![config, Config::new(1), Config::new(1), Config::new(1)]);
    for dialler in 1..4 {
        net.dial(dialler, 0, None);
    }
    assert_eq!(net.nodes[0].peer_count(), 2);
    assert_eq!(
        refusals(&net, 0),
        vec![RefuseReason::Gated(crate::peer::Refusal::TooManyPeers)]
    );
    assert_eq!(
        disconnects(&net, 3),
        vec![DisconnectReason::RemoteGoodbye(GoodbyeReason::TooManyPeers)]
    );
}

#[test]
fn shutdown_says_goodbye_to_every_peer() {
    let mut net = Net::with_nodes(3);
    net.dial(0, 1, None);
    net.dial(0, 2, None);
    run(&mut net, 0, Input::Command(Command::Shutdown));
    assert_eq!(net.nodes[0].peer_count(), 0);
    for other in [1, 2] {
        assert_eq!(
            disconnects(&net, other),
            vec![DisconnectReason::RemoteGoodbye(
                GoodbyeReason::ClientShutdown
            )]
        );
    }
    // New connections are refused.
    net.dial(1, 0, None);
    assert_eq!(net.nodes[0].peer_count(), 0);
    assert!(refusals(&net, 0).contains(&RefuseReason::ShuttingDown));
}

#[test]
fn disconnect_command_says_goodbye_with_the_reason() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let peer = net.nodes[1].peer_id();
    run(
        &mut net,
        0,
        Input::Command(Command::Disconnect {
            peer,
            reason: GoodbyeReason::BadScore,
        }),
    );
    assert_eq!(
        disconnects(&net, 0),
        vec![DisconnectReason::LocalGoodbye(GoodbyeReason::BadScore)]
    );
    assert_eq!(
        disconnects(&net, 1),
        vec![DisconnectReason::RemoteGoodbye(GoodbyeReason::BadScore)]
    );
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut net = Net::with_nodes(2);
        let mut wire = Vec::new();
        net.nodes[0].handle(
            Instant::ZERO,
            Input::Command(Command::Dial {
                addr: addr(1),
                peer: None,
            }),
        );
        while let Some(action) = net.nodes[0].poll_action() {
            wire.push(action);
        }
        wire
    };
    assert_eq!(run(), run());
}

// ---- req/resp and the peer manager ----

use crate::peer::Refusal;
use crate::reqresp::bodies::{BlocksByRangeRequest, BlocksByRootRequest, Body, Status};
use crate::reqresp::{Answer, ProtocolId, ProtocolName, Quota, RequestId, ResultCode};

/// A node config holding the first `head_slot` blocks (at most 300) of one
/// devnet chain, signed once for all tests.
/// Unix milliseconds at the origin of nodes that hold the pre-signed chain:
/// its 300 slots are then in the past (claims from the future are refused).
const CHAIN_CLOCK_MS: u64 = 300 * crate::chain::DEVNET_SLOT_DURATION_MS + 1_000;

fn chain_config(head_slot: u64) -> Config {
    static CHAIN: std::sync::OnceLock<crate::chain::ChainConfig> = std::sync::OnceLock::new();
    let full = CHAIN.get_or_init(|| crate::chain::ChainConfig::devnet_with_chain(1, 300, 200));
    let mut config = Config::new(1);
    config.unix_ms_at_origin = CHAIN_CLOCK_MS;
    config.chain = crate::chain::ChainConfig {
        stored: full.stored[..head_slot as usize].into(),
        ..full.clone()
    };
    config
}

fn block_slot(bytes: &[u8]) -> u64 {
    crate::chain::SignedBlock::decode(bytes).unwrap().slot()
}

fn request(net: &mut Net, from: usize, to: usize, protocol: ProtocolId, body: Vec<u8>, tag: u64) {
    let peer = net.nodes[to].peer_id();
    let command = Command::Request {
        peer,
        protocol,
        body,
        tag,
    };
    run(net, from, Input::Command(command));
}

/// The outcome of the request tagged `tag` at node `index`.
fn outcome(net: &Net, index: usize, tag: u64) -> Option<Notification> {
    net.notifications[index]
        .iter()
        .find(|n| match n {
            Notification::Response { tag: t, .. } | Notification::RequestFailed { tag: t, .. } => {
                *t == tag
            }
            _ => false,
        })
        .cloned()
}

#[test]
fn peers_exchange_status_on_connect() {
    let mut net = Net::new(vec![chain_config(10), chain_config(300)]);
    net.dial(0, 1, None);
    let statuses: Vec<Status> = net.notifications[0]
        .iter()
        .filter_map(|n| match n {
            Notification::PeerStatus { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|status| status.head_slot == 300));
    let peer = net.nodes[1].peer_id();
    let record = net.nodes[0].peer_manager().peer(&peer).unwrap();
    assert_eq!(record.status.map(|s| s.head_slot), Some(300));
    // Every 5 minutes again.
    let before = statuses.len();
    net.advance(Duration::from_secs(301));
    let after = net.notifications[0]
        .iter()
        .filter(|n| matches!(n, Notification::PeerStatus { .. }))
        .count();
    assert!(after > before);
}

#[test]
fn blocks_by_range_answers_in_slot_order_from_one_chain() {
    let mut net = Net::new(vec![chain_config(0), chain_config(100)]);
    net.dial(0, 1, None);
    let body = BlocksByRangeRequest {
        start_slot: 90,
        count: 20,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body, 7);
    let Some(Notification::Response { chunks, .. }) = outcome(&net, 0, 7) else {
        panic!("no response: {:?}", outcome(&net, 0, 7));
    };
    // Slots 90..=100 exist; 101..110 do not.
    let slots: Vec<u64> = chunks.iter().map(|block| block_slot(block)).collect();
    assert_eq!(slots, (90..=100).collect::<Vec<u64>>());
    assert_eq!(net.nodes[1].counters().requests_served, 1 + 1); // + node 0's Status
}

#[test]
fn blocks_by_root_answers_the_blocks_it_has() {
    let mut net = Net::new(vec![chain_config(0), chain_config(50)]);
    net.dial(0, 1, None);
    let head = net.nodes[1].chain.status().head_root;
    let body = BlocksByRootRequest {
        roots: vec![head, [9; 32]],
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRoot, body, 1);
    let Some(Notification::Response { chunks, .. }) = outcome(&net, 0, 1) else {
        panic!("no response");
    };
    assert_eq!(chunks.len(), 1);
    assert_eq!(block_slot(&chunks[0]), 50);
}

#[test]
fn a_new_metadata_sequence_number_is_fetched_after_a_ping() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let topics = vec!["blocks".to_string()];
    run(
        &mut net,
        1,
        Input::Command(Command::SetTopics {
            topics: topics.clone(),
        }),
    );
    net.advance(Duration::from_secs(31));
    let metadata = net.notifications[0].iter().find_map(|n| match n {
        Notification::PeerMetadata { metadata, .. } => Some(metadata.clone()),
        _ => None,
    });
    let metadata = metadata.expect("metadata fetched");
    assert_eq!(metadata.seq, 1);
    assert_eq!(metadata.topics, topics);
}

/// The application protocol of the example: answers with the body reversed.
fn echo() -> ProtocolName {
    ProtocolName::new("example/reverse/1").unwrap()
}

#[test]
fn an_application_protocol_round_trips_through_the_application() {
    let mut net = Net::with_nodes(2);
    for index in 0..2 {
        let command = Command::RegisterProtocol {
            name: echo(),
            quota: Quota::new(10, Duration::from_secs(10)),
        };
        run(&mut net, index, Input::Command(command));
    }
    net.dial(0, 1, None);
    request(
        &mut net,
        0,
        1,
        ProtocolId::Application(echo()),
        b"hello".to_vec(),
        42,
    );
    // Node 1's application sees the request and answers it.
    let (peer, id, body) = net.notifications[1]
        .iter()
        .find_map(|n| match n {
            Notification::InboundRequest {
                peer,
                id,
                protocol,
                body,
            } if *protocol == echo() => Some((*peer, *id, body.clone())),
            _ => None,
        })
        .expect("inbound request");
    assert_eq!(body, b"hello");
    let reversed: Vec<u8> = body.iter().rev().copied().collect();
    let answer = Answer::Chunks(vec![reversed]);
    run(
        &mut net,
        1,
        Input::Command(Command::Respond { peer, id, answer }),
    );
    assert_eq!(
        outcome(&net, 0, 42),
        Some(Notification::Response {
            peer: net.nodes[1].peer_id(),
            tag: 42,
            protocol: ProtocolId::Application(echo()),
            chunks: vec![b"olleh".to_vec()],
        })
    );
}

#[test]
fn an_unregistered_application_protocol_is_refused_as_invalid() {
    let mut net = Net::with_nodes(2);
    let command = Command::RegisterProtocol {
        name: echo(),
        quota: Quota::new(10, Duration::from_secs(10)),
    };
    run(&mut net, 0, Input::Command(command));
    net.dial(0, 1, None);
    request(
        &mut net,
        0,
        1,
        ProtocolId::Application(echo()),
        b"x".to_vec(),
        3,
    );
    assert!(matches!(
        outcome(&net, 0, 3),
        Some(Notification::RequestFailed {
            error: RequestError::Refused {
                code: ResultCode::InvalidRequest,
                ..
            },
            ..
        })
    ));
    // A request to a peer we are not connected to is never sent.
    let stranger = Identity::from_seed(99).peer_id();
    let command = Command::Request {
        peer: stranger,
        protocol: ProtocolId::Status,
        body: Vec::new(),
        tag: 4,
    };
    run(&mut net, 0, Input::Command(command));
    assert!(matches!(
        outcome(&net, 0, 4),
        Some(Notification::RequestFailed {
            error: RequestError::NotSent(_),
            ..
        })
    ));
}

#[test]
fn our_own_requests_respect_the_peers_quota() {
    let mut net = Net::new(vec![chain_config(0), chain_config(100)]);
    net.dial(0, 1, None);
    // Status: 5 per 15 s, and the connection already used some.
    let status = net.nodes[0].chain.status().encode();
    for tag in 0..10 {
        request(&mut net, 0, 1, ProtocolId::Status, status.clone(), tag);
    }
    assert_eq!(net.nodes[1].counters().requests_rate_limited, 0);
    net.advance(Duration::from_secs(40));
    for tag in 0..10 {
        assert!(
            matches!(outcome(&net, 0, tag), Some(Notification::Response { .. })),
            "request {tag} answered once the quota allowed it"
        );
    }
}

#[test]
fn a_flooding_peer_is_rate_limited_disconnected_and_banned() {
    let mut hostile = chain_config(0);
    hostile.faults.ignore_peer_quotas = true;
    let mut net = Net::new(vec![chain_config(100), hostile]);
    net.dial(1, 0, None);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 64,
    }
    .encode();
    for tag in 0..200 {
        request(&mut net, 1, 0, ProtocolId::BlocksByRange, body.clone(), tag);
    }
    let victim = net.nodes[0].counters().clone();
    assert!(victim.requests_rate_limited >= 10, "{victim:?}");
    assert!(!net.connected(0, 1));
    assert!(
        disconnects(&net, 1).contains(&DisconnectReason::RemoteGoodbye(GoodbyeReason::BadScore))
    );
    // It keeps coming back while scored out: refused each time, and banned.
    let hostile_peer = net.nodes[1].peer_id();
    for _ in 0..10 {
        net.dial(1, 0, None);
        assert!(!net.connected(0, 1));
    }
    assert!(refusals(&net, 0).contains(&RefuseReason::Gated(Refusal::BadScore)));
    assert_eq!(net.nodes[0].counters().peers_banned, 1);
    assert!(net.nodes[0]
        .peer_manager()
        .is_banned(net.now, &hostile_peer));
    // Its address is remembered with its score, so the ban reached its IP
    // too, although it was no longer connected: later tries are refused
    // before the handshake.
    assert!(refusals(&net, 0).contains(&RefuseReason::Gated(Refusal::BannedIp)));
    assert!(net.nodes[0]
        .peer_manager()
        .is_ip_banned(net.now, addr(1).ip()));
    assert!(net.notifications[0]
        .iter()
        .any(|n| matches!(n, Notification::PeerBanned { peer, .. } if *peer == hostile_peer)));
}

#[test]
fn an_unresponsive_peer_times_out_loses_score_and_is_dropped() {
    let mut silent = chain_config(100);
    silent.faults.never_answer_requests = true;
    let mut net = Net::new(vec![chain_config(0), silent]);
    net.dial(0, 1, None);
    let peer = net.nodes[1].peer_id();
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 8,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body.clone(), 1);
    net.advance(Duration::from_secs(6));
    assert_eq!(
        outcome(&net, 0, 1).map(|n| match n {
            Notification::RequestFailed { error, .. } => error,
            other => panic!("{other:?}"),
        }),
        Some(RequestError::FirstChunkTimeout)
    );
    let score = net.nodes[0].peer_manager().score(net.now, &peer);
    assert!(score.as_points() < 0.0, "score fell: {score:?}");
    // Keep asking: each timeout costs it more, until it is dropped.
    for tag in 2..40 {
        if !net.connected(0, 1) {
            break;
        }
        request(&mut net, 0, 1, ProtocolId::BlocksByRange, body.clone(), tag);
        net.advance(Duration::from_secs(6));
    }
    assert!(!net.connected(0, 1));
    assert!(disconnects(&net, 0).contains(&DisconnectReason::LocalGoodbye(GoodbyeReason::BadScore)));
    // Timeouts while it keeps pinging us escalate to −10 from the third in
    // a row: dropped well before the twenty-odd Low penalties would take.
    let timeouts = net.nodes[0].counters().requests_timed_out;
    assert!(
        (u64::from(rpc::TIMEOUTS_IN_A_ROW_TOLERATED)..=15).contains(&timeouts),
        "{timeouts} timeouts"
    );
}

#[test]
fn a_static_peer_is_redialled_with_backoff_until_it_returns() {
    let mut net = Net::with_nodes(2);
    net.down.push(1);
    let addr1 = addr(1);
    let command = Command::AddStaticPeer {
        addr: addr1,
        peer: Some(net.nodes[1].peer_id()),
    };
    run(&mut net, 0, Input::Command(command));
    net.advance(Duration::from_secs(60));
    let failures = net.nodes[0].counters().dials_failed;
    // 1 s doubling: about 6 attempts in a minute, not 60.
    assert!((4..=8).contains(&failures), "dial failures: {failures}");
    net.down.clear();
    net.advance(Duration::from_secs(120));
    assert!(net.connected(0, 1));
    // Dropped again: redialled promptly after a stable connection.
    let conn = net.nodes[0].peers[&net.nodes[1].peer_id()];
    net.handle(
        0,
        Input::ConnectionClosed {
            conn,
            cause: crate::io::CloseCause::RemoteClosed,
        },
    );
    net.links.retain(|&(node, c), _| !(node == 0 && c == conn));
    net.advance(Duration::from_secs(5));
    assert!(net.nodes[0].is_connected(&net.nodes[1].peer_id()));
}

#[test]
fn request_ids_are_never_confused_between_peers() {
    // An answer for an id we issued to another peer is discarded.
    let mut net = Net::new(vec![chain_config(0), chain_config(10), chain_config(10)]);
    net.dial(0, 1, None);
    net.dial(0, 2, None);
    let _ = RequestId(0);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 4,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body.clone(), 1);
    request(&mut net, 0, 2, ProtocolId::BlocksByRange, body, 2);
    for tag in [1, 2] {
        let Some(Notification::Response { chunks, .. }) = outcome(&net, 0, tag) else {
            panic!("tag {tag}");
        };
        assert_eq!(chunks.len(), 4);
    }
    assert_eq!(net.nodes[0].counters().responses_unexpected, 0);
}

#[test]
fn a_connection_the_driver_closed_is_not_closed_again() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let conn = net.nodes[0].peers[&net.nodes[1].peer_id()];
    net.nodes[0].handle(
        net.now,
        Input::ConnectionClosed {
            conn,
            cause: crate::io::CloseCause::RemoteClosed,
        },
    );
    let mut actions = Vec::new();
    while let Some(action) = net.nodes[0].poll_action() {
        actions.push(action);
    }
    assert!(
        actions
            .iter()
            .all(|action| !matches!(action, Action::Close { .. } | Action::Send { .. })),
        "{actions:?}"
    );
    assert!(actions.iter().any(|action| matches!(
        action,
        Action::Notify(Notification::PeerDisconnected {
            reason: DisconnectReason::ConnectionLost(_),
            ..
        })
    )));
}

// --- Gossip ----------------------------------------------------------------------

use crate::gossip::{MessageId, Topic, Validation};

fn blocks_topic() -> Topic {
    Topic::new("blocks").expect("a valid topic name")
}

/// Five nodes in a line (0 − 1 − 2 − 3 − 4), all subscribed to "blocks",
/// with a heartbeat or two behind them so every mesh is built.
fn gossip_line() -> Net {
    let mut net = Net::with_nodes(5);
    for i in 0..4 {
        net.dial(i, i + 1, None);
    }
    for i in 0..5 {
        let topic = blocks_topic();
        run(&mut net, i, Input::Command(Command::Subscribe { topic }));
    }
    net.advance(Duration::from_secs(2));
    for i in 0..5 {
        let neighbours = if i == 0 || i == 4 { 1 } else { 2 };
        assert_eq!(
            net.nodes[i].gossip().mesh_peers(&blocks_topic()).len(),
            neighbours,
            "node {i}'s mesh holds its neighbours"
        );
    }
    net
}

/// The gossip messages node `index` was handed, in order: (id, payload).
fn gossip_messages(net: &Net, index: usize) -> Vec<(MessageId, Vec<u8>)> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::GossipMessage { id, payload, .. } => Some((*id, payload.clone())),
            _ => None,
        })
        .collect()
}

/// Plays every node's application: answers each gossip message not yet
/// judged with `verdict(node)`, until no node has one left. `judged` carries
/// what was answered across calls.
fn judge_gossip(
    net: &mut Net,
    judged: &mut BTreeSet<(usize, MessageId)>,
    verdict: impl Fn(usize) -> Validation,
) {
    const ROUNDS_MAX: usize = 100;
    for _ in 0..ROUNDS_MAX {
        let mut answered = false;
        for index in 0..net.nodes.len() {
            for (id, _) in gossip_messages(net, index) {
                if judged.insert((index, id)) {
                    answered = true;
                    let verdict = verdict(index);
                    run(
                        net,
                        index,
                        Input::Command(Command::ValidateGossip { id, verdict }),
                    );
                }
            }
        }
        if !answered {
            return;
        }
    }
    panic!("gossip still arriving after {ROUNDS_MAX} rounds");
}

fn publish(net: &mut Net, index: usize, payload: &[u8]) {
    let command = Command::Publish {
        topic: blocks_topic(),
        payload: payload.to_vec(),
    };
    run(net, index, Input::Command(command));
}

#[test]
fn a_published_message_crosses_a_line_of_nodes_as_each_accepts_it() {
    let mut net = gossip_line();
    publish(&mut net, 0, b"block one");
    // Node 1 has it; nobody further does until node 1 accepts it.
    assert_eq!(gossip_messages(&net, 1).len(), 1);
    assert!(gossip_messages(&net, 2).is_empty());
    let mut judged = BTreeSet::new();
    judge_gossip(&mut net, &mut judged, |_| Validation::Accept);
    assert!(gossip_messages(&net, 0).is_empty(), "not to the publisher");
    for i in 1..5 {
        let messages = gossip_messages(&net, i);
        assert_eq!(messages.len(), 1, "node {i} hears it once");
        assert_eq!(messages[0].1, b"block one".to_vec());
    }
    assert_eq!(net.nodes[0].counters().gossip_messages_published, 1);
    assert_eq!(net.nodes[2].counters().gossip_messages_received, 1);
    assert_eq!(net.nodes[2].counters().gossip_messages_forwarded, 1);
    // Heartbeats (IHAVE gossip, cache expiry) deliver no second copy.
    net.advance(Duration::from_secs(10));
    judge_gossip(&mut net, &mut judged, |_| Validation::Accept);
    for i in 1..5 {
        assert_eq!(gossip_messages(&net, i).len(), 1, "node {i}");
    }
}

#[test]
fn a_rejected_message_costs_its_sender_score_and_goes_no_further() {
    let mut net = gossip_line();
    let publisher = net.nodes[0].peer_id();
    let before = net.nodes[1].peer_manager().score(net.now, &publisher);
    publish(&mut net, 0, b"an invalid block");
    let mut judged = BTreeSet::new();
    judge_gossip(&mut net, &mut judged, |_| Validation::Reject);
    let after = net.nodes[1].peer_manager().score(net.now, &publisher);
    assert!(
        after.as_points() <= before.as_points() - 4.0,
        "score {before} then {after}"
    );
    let gossip_score = net.nodes[1].gossip().score(net.now, &publisher);
    assert!(
        gossip_score.is_some_and(|score| score < 0.0),
        "{gossip_score:?}"
    );
    assert_eq!(net.nodes[1].counters().gossip_messages_rejected, 1);
    assert!(gossip_messages(&net, 2).is_empty());
}

#[test]
fn an_unsubscribed_node_hears_no_more_messages() {
    let mut net = gossip_line();
    let topic = blocks_topic();
    run(&mut net, 4, Input::Command(Command::Unsubscribe { topic }));
    net.advance(Duration::from_secs(1));
    assert!(net.nodes[3].gossip().mesh_peers(&blocks_topic()).len() == 1);
    publish(&mut net, 0, b"block two");
    let mut judged = BTreeSet::new();
    judge_gossip(&mut net, &mut judged, |_| Validation::Accept);
    for i in 1..4 {
        assert_eq!(gossip_messages(&net, i).len(), 1, "node {i}");
    }
    assert!(gossip_messages(&net, 4).is_empty());
}

#[test]
fn publishing_without_peers_on_the_topic_is_refused() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    publish(&mut net, 0, b"nobody listens");
    assert!(net.notifications[0].contains(&Notification::PublishFailed {
        topic: blocks_topic(),
        error: crate::gossip::PublishError::NoPeers,
    }));
    assert_eq!(net.nodes[0].counters().gossip_publish_failed, 1);
}

#[test]
fn an_undecodable_gossip_rpc_is_a_protocol_violation() {
    let mut net = gossip_line();
    let victim = net.nodes[1].peer_id();
    assert!(net.nodes[0].testing_send_message(&victim, &[crate::gossip::GOSSIP_KIND, 0xff, 0xff]));
    let actions: Vec<Action> = std::iter::from_fn(|| net.nodes[0].poll_action()).collect();
    net.requeue(0, actions);
    net.drain();
    assert!(!net.connected(0, 1));
    assert!(matches!(
        disconnects(&net, 1).as_slice(),
        [DisconnectReason::ProtocolViolation(_)]
    ));
    assert_eq!(net.nodes[1].counters().gossip_penalties, 1);
}

#[test]
fn the_gossip_heartbeat_wakes_a_node_only_while_it_gossips() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let quiet = net.nodes[0].poll_timeout().expect("keepalive is scheduled");
    assert!(
        quiet >= net.now + Duration::from_secs(1),
        "no heartbeat timer"
    );
    let topic = blocks_topic();
    run(&mut net, 0, Input::Command(Command::Subscribe { topic }));
    let gossiping = net.nodes[0].poll_timeout().expect("heartbeat is scheduled");
    assert!(gossiping <= net.now + crate::gossip::router::HEARTBEAT_INTERVAL);
}

#[test]
fn gossip_runs_are_deterministic() {
    fn scenario() -> Vec<Vec<Notification>> {
        let mut net = gossip_line();
        let mut judged = BTreeSet::new();
        for round in 0..3u8 {
            publish(&mut net, usize::from(round) * 2, &[round; 2_000]);
            judge_gossip(&mut net, &mut judged, |node| {
                if node == 3 && round == 1 {
                    Validation::Reject
                } else {
                    Validation::Accept
                }
            });
            net.advance(Duration::from_secs(1));
        }
        net.notifications
    }
    let first = scenario();
    assert!(first.iter().any(|notifications| notifications
        .iter()
        .any(|n| matches!(n, Notification::GossipMessage { .. }))));
    assert_eq!(first, scenario());
}

#[test]
fn announcing_too_many_topics_costs_a_low_penalty() {
    use crate::gossip::{Rpc, Subscription};
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let sender = net.nodes[0].peer_id();
    let receiver = net.nodes[1].peer_id();
    let before = net.nodes[1].peer_manager().score(net.now, &sender);
    let announce = |from: usize, count: usize| Rpc {
        subscriptions: (from..from + count)
            .map(|i| Subscription {
                subscribe: true,
                topic: Topic::new(&format!("topic-{i}")).expect("a valid topic name"),
            })
            .collect(),
        ..Rpc::default()
    };
    let limit = crate::gossip::router::PEER_TOPICS_MAX;
    for rpc in [announce(0, limit), announce(limit, 1)] {
        assert!(net.nodes[0].testing_send_message(&receiver, &rpc.encode()));
        let actions: Vec<Action> = std::iter::from_fn(|| net.nodes[0].poll_action()).collect();
        net.requeue(0, actions);
        net.drain();
    }
    assert!(net.connected(0, 1), "a low penalty, not a disconnect");
    assert_eq!(net.nodes[1].counters().gossip_penalties, 1);
    let after = net.nodes[1].peer_manager().score(net.now, &sender);
    let lost = before.as_points() - after.as_points();
    assert!((0.9..=1.1).contains(&lost), "score {before} then {after}");
    assert_eq!(net.nodes[1].gossip().peer_topics(&sender).len(), limit);
}

#[test]
fn subscribing_announces_the_topic_in_our_metadata() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    let topic = crate::gossip::Topic::new("blocks").unwrap();
    run(&mut net, 1, Input::Command(Command::Subscribe { topic }));
    net.advance(Duration::from_secs(31));
    let metadata = net.notifications[0].iter().find_map(|n| match n {
        Notification::PeerMetadata { metadata, .. } => Some(metadata.clone()),
        _ => None,
    });
    assert_eq!(metadata.map(|m| m.topics), Some(vec!["blocks".to_string()]));
}

#[test]
fn a_slow_reader_gets_control_while_its_gossip_waits_then_drops_then_it_is_disconnected() {
    // 0 − 1 − 2 in a line; node 2 stops reading.
    let mut net = Net::with_nodes(3);
    net.dial(0, 1, None);
    net.dial(1, 2, None);
    for i in 0..3 {
        let topic = blocks_topic();
        run(&mut net, i, Input::Command(Command::Subscribe { topic }));
    }
    net.advance(Duration::from_secs(2));
    let slow = net.nodes[2].peer_id();
    assert!(net.nodes[1]
        .gossip()
        .mesh_peers(&blocks_topic())
        .contains(&slow));
    net.set_slow_reader(2, true);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    // 256 KiB incompressible messages: the 2 MiB window holds about eight,
    // the router's 16 MiB queue about 64 more.
    let mut sent_messages = 0;
    while net.nodes[1].peers().iter().any(|info| info.peer == slow) && sent_messages < 400 {
        let mut payload = vec![0u8; 256 * 1024];
        rng.fill_bytes(&mut payload);
        publish(&mut net, 0, &payload);
        // Node 1 accepts it (judged here directly: `judge_gossip` rescans
        // every notification, too slow for hundreds of large messages).
        let id = MessageId::compute(&blocks_topic(), &payload);
        let verdict = Validation::Accept;
        run(
            &mut net,
            1,
            Input::Command(Command::ValidateGossip { id, verdict }),
        );
        net.notifications[1].clear();
        sent_messages += 1;
        if sent_messages == 20 {
            // Held back, not handed to the driver: the driver holds at
            // most the window (plus one RPC) for the slow reader.
            let held = net.held_bytes();
            assert!(
                held <= limits::GOSSIP_SEND_WINDOW_BYTES + 300 * 1024,
                "{held} bytes handed to the driver"
            );
            assert!(net.nodes[1].gossip().queued_items(&slow) > 5);
        }
    }
    assert!(
        net.nodes[1].counters().gossip_slow_peers == 1,
        "after {sent_messages} messages: {:?}",
        net.nodes[1].counters()
    );
    assert!(net.nodes[1].gossip().counters().gossip_dropped > 0);
    assert!(!net.nodes[1].peers().iter().any(|info| info.peer == slow));
    // Node 0 kept getting served throughout: its link to 1 is still up.
    assert!(net.nodes[1]
        .peers()
        .iter()
        .any(|info| info.peer == net.nodes[0].peer_id()));
}

#[test]
fn a_range_of_large_blocks_is_answered_with_a_prefix_the_driver_can_hold() {
    let body_bytes = crate::chain::block::BLOCK_BODY_BYTES_MAX;
    let mut server = Config::new(1);
    server.chain = crate::chain::ChainConfig::devnet_with_chain(1, 10, body_bytes);
    let mut net = Net::new(vec![Config::new(1), server]);
    net.dial(0, 1, None);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 10,
    }
    .encode();
    request(&mut net, 0, 1, ProtocolId::BlocksByRange, body, 3);
    let Some(Notification::Response { chunks, .. }) = outcome(&net, 0, 3) else {
        panic!("no response: {:?}", outcome(&net, 0, 3));
    };
    // 1 MiB blocks: four fill the 4 MiB answer budget.
    let per_answer = rpc::ANSWER_BLOCK_BYTES_MAX / crate::chain::block::SIGNED_BLOCK_BYTES_MAX;
    let slots: Vec<u64> = chunks.iter().map(|block| block_slot(block)).collect();
    assert_eq!(slots, (1..=per_answer as u64).collect::<Vec<u64>>());
}

// --- Chain: production, gossiped blocks, durability -----------------------------

use crate::chain::{ProposerKey, SignedBlock};

/// A devnet node config on network 1 that follows the chain by gossip; with
/// `proposer`, it holds the devnet's one proposer key.
fn follower_config(proposer: bool) -> Config {
    let mut config = Config::new(1);
    config.chain.follow_gossip = true;
    config.chain.body_bytes = 64;
    if proposer {
        let key = crate::chain::devnet_keys(1, 1).remove(0);
        config.chain.proposer_keys = vec![ProposerKey(std::sync::Arc::new(key))];
    }
    config
}

fn imported_slots(net: &Net, index: usize) -> Vec<u64> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::BlockImported { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

/// Producer 0 − follower 1 − follower 2, meshes built.
fn producing_line() -> Net {
    let mut net = Net::new(vec![
        follower_config(true),
        follower_config(false),
        follower_config(false),
    ]);
    net.dial(0, 1, None);
    net.dial(1, 2, None);
    net.advance(Duration::from_millis(1_500)); // Meshes, before slot 1 starts at 2 s.
    net
}

#[test]
fn a_proposer_produces_each_slot_and_followers_import_through_gossip() {
    let mut net = producing_line();
    let slot = Duration::from_millis(crate::chain::DEVNET_SLOT_DURATION_MS);
    net.advance(slot * 5);
    // 1.5 s + 10 s: slots 1..=5 started at 2, 4, 6, 8, 10 s; each produced once.
    assert_eq!(imported_slots(&net, 0), vec![1, 2, 3, 4, 5]);
    assert_eq!(net.nodes[0].counters().blocks_produced, 5);
    for i in 1..3 {
        assert_eq!(imported_slots(&net, i), vec![1, 2, 3, 4, 5], "node {i}");
        assert_eq!(net.nodes[i].chain().head(), net.nodes[0].chain().head());
        assert_eq!(net.nodes[i].status().head_slot, 5);
        assert_eq!(net.nodes[i].counters().work_done, 5, "one check per block");
    }
    // Persisted everywhere, in order.
    for i in 0..3 {
        assert_eq!(net.persisted[i].len(), 5, "node {i}");
        assert_eq!(net.nodes[i].work_in_flight(), 0);
    }
}

#[test]
fn the_status_names_a_block_only_once_it_is_durable() {
    let mut net = producing_line();
    net.hold_persist(1, true);
    net.advance(Duration::from_millis(1_000)); // 2.5 s: slot 1.
    assert_eq!(net.nodes[1].chain().head().slot, 1, "imported");
    assert_eq!(net.nodes[1].status().head_slot, 0, "but not yet durable");
    net.hold_persist(1, false);
    net.drain();
    assert_eq!(net.nodes[1].status().head_slot, 1);
}

#[test]
fn a_gossiped_block_with_a_bad_signature_is_rejected_and_never_imported() {
    let mut net = producing_line();
    net.advance(Duration::from_millis(1_000)); // 2.5 s: slot 1 everywhere.
    let head = net.nodes[0].chain().head();
    let good = net.nodes[0]
        .chain()
        .block_by_root(&head.root)
        .unwrap()
        .clone();
    // Slot 2 on top of slot 1, signed by nobody: the signature of slot 1's block.
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let producer =
        crate::chain::BlockProducer::new(key, &net.nodes[0].config().chain.genesis).unwrap();
    let honest: SignedBlock = producer.produce(2, good.root(), b"honest".to_vec());
    let mut forged = honest.clone();
    forged.signature = good.signature;
    let sender = net.nodes[2].peer_id();
    let before = net.nodes[1]
        .peer_manager()
        .score(net.now, &sender)
        .as_points();
    // Slot 2 starts at 4 s: within the clock disparity, not yet produced.
    net.now = Instant::from_micros(3_900_000);
    let command = Command::Publish {
        topic: Topic::new(BLOCKS_TOPIC).unwrap(),
        payload: forged.encode(),
    };
    run(&mut net, 2, Input::Command(command));
    net.drain();
    assert!(!net.nodes[1].chain().contains(&forged.root()));
    assert!(
        !net.nodes[0].chain().contains(&forged.root()),
        "not forwarded"
    );
    let after = net.nodes[1]
        .peer_manager()
        .score(net.now, &sender)
        .as_points();
    assert!(after <= before - 4.0, "score {before} then {after}");
    // The same header, honestly signed, is still welcome: a forgery cannot
    // get a valid block refused.
    assert_eq!(forged.root(), honest.root());
    let command = Command::Publish {
        topic: Topic::new(BLOCKS_TOPIC).unwrap(),
        payload: honest.encode(),
    };
    run(&mut net, 2, Input::Command(command));
    net.drain();
    for i in 0..2 {
        assert_eq!(net.nodes[i].chain().head().root, honest.root(), "node {i}");
    }
}

#[test]
fn gossiped_blocks_from_the_future_or_with_the_wrong_proposer_are_not_verified() {
    let mut net = producing_line();
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = net.nodes[0].config().chain.genesis.clone();
    let producer = crate::chain::BlockProducer::new(key, &genesis).unwrap();
    // Slot 10 starts at 20 s; it is 1.5 s now.
    let future = producer.produce(10, genesis.root(), b"early".to_vec());
    let mut wrong_proposer = producer.produce(1, genesis.root(), b"who".to_vec());
    wrong_proposer.header.proposer_index = 7;
    for block in [future, wrong_proposer] {
        let command = Command::Publish {
            topic: Topic::new(BLOCKS_TOPIC).unwrap(),
            payload: block.encode(),
        };
        run(&mut net, 0, Input::Command(command));
        net.drain();
        assert!(!net.nodes[1].chain().contains(&block.root()));
    }
    assert_eq!(net.nodes[1].counters().work_started, 0, "no BLS work spent");
    assert_eq!(net.nodes[1].counters().gossip_messages_rejected, 1);
}

#[test]
fn an_application_body_goes_into_the_next_block() {
    let mut net = producing_line();
    let body = b"application payload".to_vec();
    run(
        &mut net,
        0,
        Input::Command(Command::ProposeBody { body: body.clone() }),
    );
    net.advance(Duration::from_millis(1_000));
    let head = net.nodes[2].chain().head();
    assert_eq!(head.slot, 1);
    assert_eq!(
        net.nodes[2].chain().block_by_root(&head.root).unwrap().body,
        body
    );
    let too_large = vec![0u8; crate::chain::block::BLOCK_BODY_BYTES_MAX + 1];
    run(
        &mut net,
        0,
        Input::Command(Command::ProposeBody { body: too_large }),
    );
    assert!(net.notifications[0].contains(&Notification::BodyRefused {
        bytes: crate::chain::block::BLOCK_BODY_BYTES_MAX + 1
    }));
}

// --- Sync ------------------------------------------------------------------------

/// A fresh node that starts range sync with one suitable peer.
fn joiner_config() -> Config {
    let mut config = Config::new(1);
    config.unix_ms_at_origin = CHAIN_CLOCK_MS;
    config.sync.peers_min = 1;
    config
}

fn synced_at(net: &Net, index: usize) -> Option<u64> {
    net.notifications[index].iter().find_map(|n| match n {
        Notification::Synced { head_slot } => Some(*head_slot),
        _ => None,
    })
}

#[test]
fn a_late_joiner_range_syncs_from_its_peers_and_verifies_every_block() {
    let mut net = Net::new(vec![joiner_config(), chain_config(300), chain_config(300)]);
    net.dial(0, 1, None);
    net.dial(0, 2, None);
    net.advance(Duration::from_secs(30));
    let head = net.nodes[1].chain().head();
    assert_eq!(net.nodes[0].chain().head(), head);
    assert_eq!(synced_at(&net, 0), Some(300));
    assert_eq!(net.nodes[0].status().head_slot, 300, "durable");
    assert_eq!(net.persisted[0].len(), 300);
    assert!(
        net.nodes[0].counters().work_done >= 5,
        "verified in batches"
    );
    // Both servers were used.
    assert!(net.nodes[1].counters().requests_served > 2);
    assert!(net.nodes[2].counters().requests_served > 2);
}

#[test]
fn a_server_of_bad_signatures_is_penalised_and_its_blocks_never_imported() {
    let mut hostile = chain_config(300);
    let mut blocks = hostile.chain.stored.to_vec();
    for block in blocks.iter_mut().skip(100).step_by(7) {
        block.signature = [0x11; crate::chain::block::SIGNATURE_BYTES];
    }
    hostile.chain.stored = blocks.into();
    let mut net = Net::new(vec![joiner_config(), hostile, chain_config(300)]);
    net.dial(0, 1, None);
    net.dial(0, 2, None);
    net.advance(Duration::from_secs(60));
    assert_eq!(net.nodes[0].chain().head().slot, 300);
    let genesis = net.nodes[0].config().chain.genesis.clone();
    for slot in 1..=300 {
        let block = net.nodes[0].chain().canonical_block_at(slot).unwrap();
        crate::chain::verify_block(&genesis, block).expect("only valid blocks imported");
    }
    assert!(net.nodes[0].counters().sync_penalties > 0);
    let hostile_id = net.nodes[1].peer_id();
    let score = net.nodes[0].peer_manager().score(net.now, &hostile_id);
    assert!(score.as_points() < -5.0, "hostile score {score}");
}

#[test]
fn a_follower_that_missed_blocks_looks_up_their_parents() {
    let mut net = producing_line();
    net.advance(Duration::from_millis(1_000)); // Slot 1 everywhere (2.5 s).
                                               // Node 2 drops off; slots 2 and 3 pass without it.
    let peer = net.nodes[2].peer_id();
    let reason = GoodbyeReason::ClientShutdown;
    run(
        &mut net,
        1,
        Input::Command(Command::Disconnect { peer, reason }),
    );
    net.advance(Duration::from_millis(4_000)); // 6.5 s: slots 2, 3.
    assert_eq!(net.nodes[2].chain().head().slot, 1);
    net.dial(2, 1, None);
    net.advance(Duration::from_millis(2_000)); // Slot 4 arrives by gossip.
    assert_eq!(net.nodes[2].chain().head(), net.nodes[0].chain().head());
    assert_eq!(net.nodes[2].chain().head().slot, 4);
}

#[test]
fn a_large_message_leaves_for_a_few_peers_at_a_time_while_the_uplink_is_busy() {
    // Node 0 and four subscribers that read nothing for now.
    let mut net = Net::with_nodes(5);
    for i in 1..5 {
        net.dial(0, i, None);
    }
    for i in 0..5 {
        let topic = blocks_topic();
        run(&mut net, i, Input::Command(Command::Subscribe { topic }));
    }
    net.advance(Duration::from_secs(2));
    for i in 1..5 {
        net.set_slow_reader(i, true);
    }
    let mut payload = vec![0u8; 1024 * 1024];
    rand_chacha::ChaCha20Rng::from_seed([3; 32]).fill_bytes(&mut payload);
    publish(&mut net, 0, &payload);
    net.drain();
    // Two copies fill the node's window; the other two wait in the router.
    let held = net.held_bytes();
    assert!(
        (2 * 1024 * 1024..3 * 1024 * 1024).contains(&held),
        "{held} bytes handed over"
    );
    let queued: usize = (1..5)
        .map(|i| net.nodes[0].gossip().queued_items(&net.nodes[i].peer_id()))
        .sum();
    assert_eq!(queued, 2);
    for i in 1..5 {
        net.set_slow_reader(i, false);
    }
    net.drain();
    for i in 1..5 {
        assert_eq!(gossip_messages(&net, i).len(), 1, "node {i}");
    }
}

#[test]
fn timeouts_from_a_peer_we_hear_nothing_from_do_not_escalate() {
    // Node 0 hears nothing (a partition on its side): its requests expire,
    // but the peer may be honest and cut off, so each costs only Low.
    let mut net = Net::new(vec![chain_config(0), chain_config(100)]);
    net.dial(0, 1, None);
    let peer = net.nodes[1].peer_id();
    net.advance(Duration::from_secs(40)); // Nothing heard for a while.
    net.set_slow_reader(0, true);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 8,
    }
    .encode();
    for tag in 1..=5 {
        request(&mut net, 0, 1, ProtocolId::BlocksByRange, body.clone(), tag);
        net.advance(Duration::from_secs(6));
    }
    assert!(net.nodes[0].counters().requests_timed_out >= 5);
    let score = net.nodes[0]
        .peer_manager()
        .score(net.now, &peer)
        .as_points();
    assert!(score > -10.0, "escalated to {score}");
    assert!(net.connected(0, 1), "not dropped for its score");
}

#[test]
fn a_proposer_that_is_far_behind_syncs_before_it_produces() {
    // Node 1 holds slots 1..=300; node 0 holds the proposer key but no
    // block, and it is already slot 400 (800 s). A block of node 0's on
    // genesis at slot 400 would win fork choice over the real chain.
    let mut proposer = follower_config(true);
    proposer.sync.peers_min = 1;
    let mut net = Net::new(vec![proposer, chain_config(300)]);
    net.now = Instant::from_micros(800_500_000);
    let addr = addr(1);
    net.handle(0, Input::Command(Command::Dial { addr, peer: None }));
    // Deliver until node 0 has the server's Status and starts syncing; then
    // the server stops reading, so the sync hangs across a slot boundary.
    while !net.nodes[0].is_syncing() {
        assert!(net.step(), "node 0 never started syncing");
    }
    net.set_slow_reader(1, true);
    net.advance(Duration::from_secs(3)); // Slot 401 starts at 802 s.
    assert!(net.nodes[0].is_syncing());
    assert_eq!(net.nodes[0].counters().blocks_produced, 0);
    net.set_slow_reader(1, false);
    net.advance(Duration::from_secs(60));
    let head = net.nodes[0].chain().head();
    assert!(head.slot >= 300, "synced: {head:?}");
    let at_300 = net.nodes[0]
        .chain()
        .canonical_block_at(300)
        .map(|b| b.root());
    assert_eq!(
        at_300,
        net.nodes[1]
            .chain()
            .canonical_block_at(300)
            .map(|b| b.root())
    );
    // Whatever it produced since sits on the synced chain, not on genesis.
    for slot in 301..=head.slot {
        if let Some(block) = net.nodes[0].chain().canonical_block_at(slot) {
            assert!(net.nodes[0].chain().contains(&block.parent_root()));
            assert_ne!(block.parent_root(), net.nodes[0].chain().genesis_root());
        }
    }
    assert!(net.nodes[0].counters().blocks_not_produced_syncing >= 1);
}

#[test]
fn a_produced_block_is_published_only_once_durable() {
    let mut net = producing_line();
    net.hold_persist(0, true);
    net.advance(Duration::from_millis(1_000)); // 2.5 s: slot 1 produced.
    assert_eq!(net.nodes[0].counters().blocks_produced, 1);
    assert_eq!(
        net.nodes[1].chain().head().slot,
        0,
        "announced before it was durable"
    );
    net.hold_persist(0, false);
    net.drain();
    assert_eq!(net.nodes[1].chain().head().slot, 1);
}

#[test]
fn a_failing_store_stops_production_and_forwarding_until_it_writes_again() {
    let mut net = producing_line();
    let slot = Duration::from_millis(crate::chain::DEVNET_SLOT_DURATION_MS);
    net.advance(slot); // 3.5 s: slot 1 everywhere.
    assert_eq!(net.nodes[2].chain().head().slot, 1);
    // The middle node's store fails: it forwards nothing it could not keep.
    net.handle(1, Input::Health(crate::Health::StoreFailing));
    assert!(net.nodes[1].is_store_failing());
    net.advance(slot * 2);
    assert!(net.nodes[1].counters().blocks_ignored_store_failing >= 2);
    assert_eq!(net.nodes[2].chain().head().slot, 1, "node 1 forwarded");
    // The proposer's store fails: it produces nothing.
    net.handle(0, Input::Health(crate::Health::StoreFailing));
    let produced = net.nodes[0].counters().blocks_produced;
    net.advance(slot * 2);
    assert_eq!(net.nodes[0].counters().blocks_produced, produced);
    assert!(net.nodes[0].counters().blocks_not_produced_unhealthy >= 2);
    // Both write again: production and forwarding resume.
    net.handle(0, Input::Health(crate::Health::StoreWriting));
    net.handle(1, Input::Health(crate::Health::StoreWriting));
    net.advance(slot * 2);
    assert!(net.nodes[0].counters().blocks_produced > produced);
    assert!(net.nodes[1].chain().head().slot > 3);
}

#[test]
fn a_clock_set_back_never_produces_a_slot_twice() {
    let mut net = producing_line();
    let slot_ms = crate::chain::DEVNET_SLOT_DURATION_MS;
    let slot = Duration::from_millis(slot_ms);
    net.advance(slot * 2); // 5.5 s: slots 1 and 2.
    let origin = net.nodes[0].unix_ms_at_origin();
    // The wall clock jumps 5 slots ahead, and the driver re-bases.
    let ahead = origin + 5 * slot_ms;
    net.handle(
        0,
        Input::Health(crate::Health::ClockRebased {
            unix_ms_at_origin: ahead,
        }),
    );
    net.advance(slot);
    let head = net.nodes[0].chain().head().slot;
    assert!(head >= 7, "slots follow the new clock: head {head}");
    let produced = net.nodes[0].counters().blocks_produced;
    // Set back: the slots from 3 up to the head come again, and are not produced again.
    net.handle(
        0,
        Input::Health(crate::Health::ClockRebased {
            unix_ms_at_origin: origin,
        }),
    );
    let slot_now = |net: &Net| (origin + net.now.as_millis()) / slot_ms;
    while slot_now(&net) < head {
        net.advance(slot);
        assert_eq!(net.nodes[0].counters().blocks_produced, produced);
        assert_eq!(net.nodes[0].chain().head().slot, head, "the head moved");
    }
    net.advance(slot * 2);
    assert!(net.nodes[0].counters().blocks_produced > produced);
    assert!(net.nodes[0].chain().head().slot > head);
}

// --- Lies in well-formed claims (issue: claims bounded by clock and proof) ---

/// Node `from` tells node `to` that its chain is `status`, in a Status
/// request: well-formed, and whatever it likes.
fn claim_status(net: &mut Net, from: usize, to: usize, status: Status, tag: u64) {
    request(net, from, to, ProtocolId::Status, status.encode(), tag);
}

fn score_of(net: &Net, at: usize, peer: usize) -> f64 {
    let peer = net.nodes[peer].peer_id();
    net.nodes[at]
        .peer_manager()
        .score(net.now, &peer)
        .as_points()
}

#[test]
fn a_status_claiming_u64_max_slots_costs_its_sender_and_never_crashes_the_node() {
    // The remote crash: finalized = head = u64::MAX on no chain made
    // range sync overflow 30 s later. Now the clock disproves the claim.
    let mut net = Net::new(vec![joiner_config(), Config::new(1)]);
    net.dial(0, 1, None);
    let lie = Status {
        network_id: 1,
        finalized_root: [0xee; 32],
        finalized_slot: u64::MAX,
        head_root: [0xff; 32],
        head_slot: u64::MAX,
    };
    claim_status(&mut net, 1, 0, lie, 1);
    net.advance(Duration::from_secs(90));
    assert!(!net.nodes[0].is_syncing());
    assert!(net.nodes[0].counters().statuses_not_believed >= 1);
    assert!(score_of(&net, 0, 1) < 0.0, "the liar paid");
    assert!(net.connected(0, 1), "one lie is a penalty, not a ban");
}

#[test]
fn a_chain_served_from_the_future_is_never_imported() {
    // It is slot 100 (200.5 s). Node 1 holds 300 blocks, 200 of them "from
    // the future" (a proposer-key holder signed ahead); node 2 holds the
    // real 100. The joiner follows node 2, and node 1 pays for its claim.
    let clock_ms = 200_500;
    let mut joiner = joiner_config();
    joiner.unix_ms_at_origin = clock_ms;
    let mut future = chain_config(300);
    future.unix_ms_at_origin = clock_ms;
    let mut honest = chain_config(100);
    honest.unix_ms_at_origin = clock_ms;
    let mut net = Net::new(vec![joiner, future, honest]);
    net.dial(0, 1, None);
    net.dial(0, 2, None);
    net.advance(Duration::from_secs(60));
    let head = net.nodes[0].chain().head();
    assert_eq!(head.slot, 100, "synced to the present, not the future");
    assert_eq!(head, net.nodes[2].chain().head());
    assert!(net.nodes[0].counters().statuses_not_believed >= 1);
    assert!(net.nodes[0].counters().claims_from_future >= 1, "counted");
    assert_eq!(net.nodes[2].counters().claims_from_future, 0);
    assert!(score_of(&net, 0, 1) < 0.0);
}

#[test]
fn a_proposer_keeps_producing_while_a_liar_claims_a_head_it_cannot_serve() {
    // The halted proposer: a peer claims a head far ahead (within
    // the clock now) on a finalized root of no chain, answers every batch
    // empty and repeats its claim every minute. The proposer has no chain
    // yet, so it really is behind; it tries the claim, the liar's own empty
    // answer for its head disproves it, and production goes on.
    let mut proposer = follower_config(true);
    proposer.sync.peers_min = 1;
    let mut net = Net::new(vec![proposer, Config::new(1)]);
    net.now = Instant::from_micros(800_500_000); // Slot 400.
    net.dial(0, 1, None);
    let liar_status = |slot: u64| Status {
        network_id: 1,
        finalized_root: [0xee; 32],
        finalized_slot: slot - 64,
        head_root: [0xff; 32],
        head_slot: slot,
    };
    let start = net.now;
    for minute in 0..10u64 {
        claim_status(&mut net, 1, 0, liar_status(400 + 30 * minute), minute);
        net.advance(Duration::from_secs(60));
        if minute == 0 {
            // Its empty answer for its own head cost it (Mid), and earned
            // nothing: empty answers are not rewarded.
            assert!(score_of(&net, 0, 1) < 0.0, "{}", score_of(&net, 0, 1));
        }
    }
    let slots = (net.now.saturating_duration_since(start).as_millis() / 2_000) as u64;
    let produced = net.nodes[0].counters().blocks_produced;
    assert!(
        produced * 100 >= slots * 95,
        "{produced} blocks in {slots} slots"
    );
    assert!(net.nodes[0].counters().sync_penalties >= 1, "HeadNotServed");
}

#[test]
fn made_up_orphans_cost_their_sender_and_hold_no_lookup() {
    // Node 2 gossips blocks of the right slot and proposer on parents of no
    // chain, signed by nobody: each would have held a lookup for free.
    let mut net = producing_line();
    let before = score_of(&net, 1, 2);
    let genesis = net.nodes[0].config().chain.genesis.clone();
    for i in 0..8u8 {
        let body = vec![i; 16];
        let orphan = SignedBlock {
            header: crate::chain::block::BlockHeader {
                slot: 1,
                proposer_index: genesis.proposer_index_at(1),
                parent_root: [i + 1; 32],
                body_root: crate::chain::block::body_root(&body),
            },
            body,
            signature: [0x22; crate::chain::block::SIGNATURE_BYTES],
        };
        net.now = Instant::from_micros(1_600_000 + u64::from(i) * 10);
        let command = Command::Publish {
            topic: Topic::new(BLOCKS_TOPIC).unwrap(),
            payload: orphan.encode(),
        };
        run(&mut net, 2, Input::Command(command));
    }
    net.drain();
    assert_eq!(net.nodes[1].lookups_pending(), 0, "no lookup held");
    assert!(net.nodes[1].counters().gossip_messages_rejected >= 1);
    assert!(score_of(&net, 1, 2) < before, "the sender paid");
}

#[test]
fn answers_of_blocks_are_checked_chunk_by_chunk() {
    use super::rpc::BlockAnswerCheck;
    let chain = chain_config(10).chain;
    let blocks = &chain.stored;
    // A range of 1..5: in order and linked is fine, then a gap is fine,
    // but out of range, backwards or unlinked is refused at once.
    let mut range = BlockAnswerCheck::range(1, 4);
    assert!(range.check_for_tests(&blocks[0]).is_ok());
    assert!(range.check_for_tests(&blocks[1]).is_ok());
    assert!(range.check_for_tests(&blocks[0]).is_err(), "backwards");
    let mut range = BlockAnswerCheck::range(1, 4);
    assert!(range.check_for_tests(&blocks[5]).is_err(), "out of range");
    let mut range = BlockAnswerCheck::range(1, 4);
    assert!(range.check_for_tests(&blocks[0]).is_ok());
    assert!(range.check_for_tests(&blocks[2]).is_err(), "not linked");
    // Roots: only those asked for, each once.
    let mut roots = BlockAnswerCheck::Roots(vec![blocks[3].root()]);
    assert!(roots.check_for_tests(&blocks[4]).is_err(), "not asked for");
    assert!(roots.check_for_tests(&blocks[3]).is_ok());
    assert!(roots.check_for_tests(&blocks[3]).is_err(), "twice");
}

// --- One slow or departing peer must not silence a node --------------------------

/// The attack: a peer asks the proposer for a range of 1 MiB blocks and
/// never reads the answer (4 MiB handed to its connection). Before, those
/// bytes alone closed the node-wide gossip window, and the followers stopped
/// hearing blocks. Now the connection counts for at most its share, then
/// (slow) for nothing; the followers keep up, and after
/// `WRITE_STALL_TIMEOUT` the reader is cut with a Mid penalty.
#[test]
fn a_peer_that_stops_reading_holds_back_only_itself_and_is_cut() {
    // Ten 1 MiB blocks of random bytes: snappy saves nothing on them.
    let genesis = crate::chain::ChainConfig::devnet(1).genesis;
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let producer = crate::chain::BlockProducer::new(key, &genesis).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
    let mut parent = genesis.root();
    let mut blocks = Vec::new();
    for slot in 1..=10 {
        let mut body = vec![0u8; crate::chain::block::BLOCK_BODY_BYTES_MAX];
        rng.fill_bytes(&mut body);
        let block = producer.produce(slot, parent, body);
        parent = block.root();
        blocks.push(block);
    }
    let stored: std::sync::Arc<[SignedBlock]> = blocks.into();
    let with_chain = |mut config: Config| {
        config.chain.stored = stored.clone();
        config
    };
    let mut net = Net::new(vec![
        with_chain(follower_config(true)),
        with_chain(follower_config(false)),
        with_chain(follower_config(false)),
        with_chain(Config::new(1)),
    ]);
    for i in 1..4 {
        net.dial(i, 0, None);
    }
    // Slot 11 starts at 22 s; the meshes are built long before.
    net.advance_to(Instant::from_micros(21_000_000));
    let reader = net.nodes[3].peer_id();
    net.set_slow_reader(3, true);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 10,
    }
    .encode();
    request(&mut net, 3, 0, ProtocolId::BlocksByRange, body, 1);
    let handed = net.held_bytes();
    assert!(
        handed >= limits::GOSSIP_NODE_WINDOW_BYTES,
        "{handed} bytes handed to the reader"
    );
    let slot = Duration::from_millis(crate::chain::DEVNET_SLOT_DURATION_MS);
    net.advance(slot * 5); // Slots 11 to 15.
    for i in 1..3 {
        let slots = imported_slots(&net, i);
        assert_eq!(slots, vec![11, 12, 13, 14, 15], "follower {i}");
    }
    assert!(
        net.nodes[0].is_connected(&reader),
        "not yet past the deadline"
    );
    net.advance(limits::WRITE_STALL_TIMEOUT);
    assert!(!net.nodes[0].is_connected(&reader));
    assert_eq!(net.nodes[0].counters().connections_stalled, 1);
    let score = net.nodes[0].peer_manager().score(net.now, &reader);
    assert!(score.as_points() <= -4.9, "score {score}");
    for i in 1..3 {
        assert!(net.connected(0, i), "follower {i} kept its place");
        let last = imported_slots(&net, i).last().copied();
        assert_eq!(last, Some(net.nodes[0].chain().head().slot), "follower {i}");
    }
}

/// The attack: a keyless peer floods 64 junk blocks (right slot, proposer
/// and parent, a signature that does not verify) and leaves before the
/// verdicts. Before, that cost 64 BLS checks, the verdicts found no one to
/// charge, and the identity could come straight back. Now it holds at most
/// `GOSSIP_VERIFICATIONS_PER_PEER_MAX` checks, the rest are dropped unjudged
/// at a Low penalty each (it holds checks for their slot already), the late
/// Rejects still reach its identity, and the honest block for the slot is
/// imported.
#[test]
fn junk_blocks_from_a_peer_that_leaves_cost_it_a_ban_and_little_work() {
    let mut net = producing_line();
    net.advance(Duration::from_millis(1_000)); // 2.5 s: slot 1 everywhere.
    let head = net.nodes[0].chain().head();
    let good = net.nodes[0]
        .chain()
        .block_by_root(&head.root)
        .unwrap()
        .clone();
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let producer =
        crate::chain::BlockProducer::new(key, &net.nodes[0].config().chain.genesis).unwrap();
    let attacker = net.nodes[2].peer_id();
    let victim = net.nodes[1].peer_id();
    let work_before = net.nodes[1].counters().work_started;
    // Slot 2 starts at 4 s: within the clock disparity, not yet produced.
    net.now = Instant::from_micros(3_900_000);
    for i in 0..64u32 {
        let mut junk = producer.produce(2, good.root(), i.to_le_bytes().to_vec());
        junk.signature = good.signature;
        let command = Command::Publish {
            topic: Topic::new(BLOCKS_TOPIC).unwrap(),
            payload: junk.encode(),
        };
        net.handle(2, Input::Command(command)); // Not delivered yet.
    }
    let reason = GoodbyeReason::ClientShutdown;
    let command = Command::Disconnect {
        peer: victim,
        reason,
    };
    net.handle(2, Input::Command(command));
    net.drain();
    assert!(!net.nodes[1].is_connected(&attacker));
    let checks = net.nodes[1].counters().work_started - work_before;
    assert!(
        checks <= chain::GOSSIP_VERIFICATIONS_PER_PEER_MAX as u64,
        "{checks} checks for one peer"
    );
    let score = net.nodes[1].peer_manager().score(net.now, &attacker);
    assert!(score.as_points() <= -50.0, "score {score}");
    assert!(net.nodes[1].peer_manager().is_banned(net.now, &attacker));
    // The honest block for slot 2 is imported all the same.
    net.advance(Duration::from_millis(500));
    assert_eq!(imported_slots(&net, 1), vec![1, 2]);
    // And the same identity cannot come back.
    net.dial(2, 1, None);
    assert!(!net.connected(1, 2));
}

#[test]
fn orphans_that_find_no_lookup_place_make_us_ask_their_sender_for_its_status() {
    // Node 2 gossips validly signed blocks on parents node 1 lacks: one peer
    // holds at most ORPHANS_PER_PEER_MAX lookups, and then node 1 asks node 2
    // for its Status, so a gap lookups cannot fill reaches range sync.
    let mut net = producing_line();
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = net.nodes[0].config().chain.genesis.clone();
    let producer = crate::chain::BlockProducer::new(key, &genesis).unwrap();
    // Node 2 reads nothing for now: the lookups it is asked for stay open.
    net.set_slow_reader(2, true);
    let orphans = crate::sync::lookup::ORPHANS_PER_PEER_MAX as u8 + 1;
    for i in 0..orphans {
        let orphan = producer.produce(1, [i + 1; 32], vec![i; 8]);
        let command = Command::Publish {
            topic: Topic::new(BLOCKS_TOPIC).unwrap(),
            payload: orphan.encode(),
        };
        run(&mut net, 2, Input::Command(command));
    }
    net.drain();
    assert!(net.nodes[1].lookups_pending() <= crate::sync::lookup::ORPHANS_PER_PEER_MAX);
    assert_eq!(
        net.nodes[1].counters().orphan_status_requests,
        1,
        "asked once, not per orphan"
    );
}

#[test]
fn a_crash_looping_follower_is_welcome_back_every_time() {
    // A follower killed (no Goodbye) and restarted with the same identity
    // eight times in a row, on a slow and a fast chain: honest reconnects
    // cost it nothing at the producer, which never gates it.
    for slot_duration_ms in [2_000, 20] {
        let mut net = fast_chain_pair(slot_duration_ms);
        net.advance(Duration::from_secs(5));
        let follower = net.nodes[1].peer_id();
        let config = net.nodes[1].config().clone();
        for round in 0..8u8 {
            net.restart(1, config.clone(), [100 + round; 32]);
            net.advance(Duration::from_millis(300));
            assert!(!net.nodes[0].is_connected(&follower), "the kill was seen");
            net.dial(1, 0, None);
            net.advance(Duration::from_secs(3));
            assert!(
                net.connected(0, 1),
                "{slot_duration_ms} ms slots, round {round}"
            );
            let score = net.nodes[0].peer_manager().score(net.now, &follower);
            assert!(score.as_points() >= 0.0, "round {round}: score {score}");
        }
        assert!(refusals(&net, 0).is_empty());
        assert_eq!(net.nodes[0].counters().peers_disconnected, 8);
    }
}

/// A producer and a follower on a chain of 20 ms slots (50 blocks a second).
fn fast_chain_pair(slot_duration_ms: u64) -> Net {
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = crate::chain::Genesis::new(
        1,
        0,
        slot_duration_ms,
        vec![key.sk_to_pk()],
        crate::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT,
    )
    .unwrap();
    let configs = [true, false].map(|proposer| {
        let mut config = follower_config(proposer);
        config.chain.genesis = std::sync::Arc::new(genesis.clone());
        config
    });
    let mut net = Net::new(configs.to_vec());
    net.dial(1, 0, None);
    net
}

#[test]
fn a_proposer_of_fast_slots_is_not_scored_out_by_its_followers() {
    // Every gossiped block is a BLS check at its first receiver; an honest
    // proposer of 20 ms slots causes 50 a second, which a fixed per-second
    // allowance of 8 charged as 42 Low penalties a second: disconnected
    // within the first second.
    let mut net = fast_chain_pair(20);
    net.advance(Duration::from_secs(5));
    assert!(net.connected(0, 1));
    let proposer = net.nodes[0].peer_id();
    let score = net.nodes[1].peer_manager().score(net.now, &proposer);
    assert!(score.as_points() >= 0.0, "proposer's score {score}");
    assert_eq!(net.nodes[1].counters().gossip_verifications_over_rate, 0);
    // It follows the head (a block or two may still be on its way).
    let (ours, theirs) = (
        net.nodes[1].status().head_slot,
        net.nodes[0].status().head_slot,
    );
    assert!(
        theirs >= 200 && ours + 2 >= theirs,
        "follower {ours}, proposer {theirs}"
    );
}

#[test]
fn the_gossip_verification_allowance_follows_the_slot_rate() {
    use chain::gossip_verifications_per_window as allowance;
    assert_eq!(
        allowance(2_000),
        chain::GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX
    );
    assert_eq!(
        allowance(1_000),
        chain::GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX
    );
    assert_eq!(
        allowance(20),
        50 * chain::GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX
    );
    assert_eq!(
        allowance(30),
        34 * chain::GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX
    );
    assert_eq!(
        allowance(0),
        1_000 * chain::GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX
    );
}

#[test]
fn a_node_started_from_its_stored_chain_does_not_download_it_again() {
    // Both hold the same 200 blocks. Range sync must measure its distance
    // from the stored head, not from genesis: otherwise every restart
    // downloads the whole chain again from whoever it meets.
    let mut net = Net::new(vec![chain_config(200), chain_config(200)]);
    net.dial(0, 1, None);
    let requests_after_handshake = net.nodes[0].counters().requests_sent;
    net.advance(crate::sync::range::SYNC_PEERS_WAIT + Duration::from_secs(10));
    assert!(!net.nodes[0].is_syncing(), "nothing to sync");
    assert_eq!(net.nodes[0].chain().head().slot, 200);
    // Keepalive and Status exchanges only (2 here); fetching the chain again
    // adds a BlocksByRange per 64 slots (4 more).
    let requests = net.nodes[0].counters().requests_sent - requests_after_handshake;
    assert!(
        requests <= 4,
        "{requests} requests: the stored chain was fetched again"
    );
}

#[test]
fn a_gossiped_block_far_ahead_of_our_head_makes_us_ask_its_sender_for_its_status() {
    // A follower that finished a sync round behind a fast chain hears the
    // chain's new blocks on gossip, parents unknown. Its verifier may be too
    // busy to check them (and lookups cannot fill such a gap), so the gap
    // itself, seen before any check, makes it ask the sender's Status,
    // which starts the next round.
    let mut configs = vec![chain_config(10), chain_config(10)];
    for config in &mut configs {
        config.chain.follow_gossip = true;
    }
    let mut net = Net::new(configs);
    net.dial(0, 1, None);
    net.advance(Duration::from_millis(1_500)); // Meshes.
    let asked_before = net.nodes[0].counters().orphan_status_requests;
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = net.nodes[0].config().chain.genesis.clone();
    let producer = crate::chain::BlockProducer::new(key, &genesis).unwrap();
    let far = 10 + crate::sync::range::SYNC_DISTANCE_SLOTS + 1;
    for i in 0..3u8 {
        let block = producer.produce(far + u64::from(i), [i + 1; 32], vec![i; 8]);
        let command = Command::Publish {
            topic: Topic::new(BLOCKS_TOPIC).unwrap(),
            payload: block.encode(),
        };
        run(&mut net, 1, Input::Command(command));
        net.drain();
    }
    assert_eq!(
        net.nodes[0].counters().orphan_status_requests - asked_before,
        1,
        "asked once for the gap, not once per block"
    );
}

#[test]
fn a_follower_far_behind_a_fast_chain_catches_up_from_one_peer() {
    // A chain of 10 ms slots makes 100 slots a second; a fixed range quota
    // of 1,024 slots per 10 s serves one follower 102.4, so a follower 3,000
    // slots behind with one peer (empty slots cost quota too) needs about
    // 20 s to close the gap, and minutes if the chain grows meanwhile. The
    // quota follows the slot rate instead.
    const SLOT_MS: u64 = 10;
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = crate::chain::Genesis::new(
        1,
        0,
        SLOT_MS,
        vec![key.sk_to_pk()],
        crate::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT,
    )
    .unwrap();
    let producer = crate::chain::BlockProducer::new(key, &genesis).unwrap();
    // The proposer made slots 1..=100, was off, made 2,900..=3,000, was off
    // again, and comes back at slot 6,000. Its new blocks link only to slot
    // 3,000, so the follower must fetch the first 3,000 slots by range.
    let mut stored = Vec::new();
    let mut parent = genesis.root();
    for slot in (1..=100u64).chain(2_900..=3_000) {
        let block = producer.produce(slot, parent, vec![slot as u8; 8]);
        parent = block.root();
        stored.push(block);
    }
    let configs = [true, false].map(|proposer| {
        let mut config = follower_config(proposer);
        config.unix_ms_at_origin = 6_000 * SLOT_MS;
        config.chain.genesis = std::sync::Arc::new(genesis.clone());
        config.sync.peers_min = 1;
        if proposer {
            config.chain.stored = stored.clone().into();
        }
        config
    });
    let mut net = Net::new(configs.to_vec());
    net.dial(1, 0, None);
    net.advance(Duration::from_secs(5));
    let (ours, theirs) = (
        net.nodes[1].status().head_slot,
        net.nodes[0].status().head_slot,
    );
    assert!(theirs >= 6_400, "the proposer kept producing: {theirs}");
    assert!(
        ours + 2 >= theirs,
        "follower at {ours}, proposer at {theirs}"
    );
    assert_eq!(net.nodes[0].counters().requests_rate_limited, 0);
}
