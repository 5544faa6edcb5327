//! Req/resp and the peer manager: Status, blocks by range and root, metadata, application protocols, quotas, timeouts, static peers.

use super::*;
use crate::types::Root;

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
    let head = net.nodes[1].chain().status().head_root;
    let body = BlocksByRootRequest {
        roots: vec![head, Root([9; 32])],
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
    let topics = vec!["example".to_string()];
    let topic = Topic::new("example").unwrap();
    run(&mut net, 1, Input::Command(Command::Subscribe { topic }));
    net.advance(Duration::from_secs(31));
    let metadata = net.notifications[0].iter().find_map(|n| match n {
        Notification::PeerMetadata { metadata, .. } => Some(metadata.clone()),
        _ => None,
    });
    let metadata = metadata.expect("metadata fetched");
    assert_eq!(metadata.seq, 1);
    assert_eq!(metadata.topics, topics);
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
    let status = net.nodes[0].chain().status().encode();
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
    // a row: dropped before the twenty-odd Low penalties would take. (A
    // request that expires with nothing heard from it since is charged
    // only when it next speaks, and those do not escalate: 18 timeouts
    // here, 15 when every one cost Low at once.)
    let timeouts = net.nodes[0].counters().requests_timed_out;
    assert!(
        (u64::from(rpc::TIMEOUTS_IN_A_ROW_TOLERATED)..=20).contains(&timeouts),
        "{timeouts} timeouts"
    );
}

/// A peer that freezes (or is cut off) right after its last message: the
/// requests we send it afterwards expire while it still counts as heard
/// lately. Nothing came from it since we asked, so they cost it nothing
/// unless it speaks again on this connection (before: Low each at once,
/// which kept an honest peer out of the gossip mesh after a partition
/// healed), never the High of a peer that ignores us
/// while it talks; the silence timeout drops it, not its score, so it can
/// come back (before that, three such moments in a row scored it out).
#[test]
fn a_frozen_peer_is_dropped_as_silent_not_scored_out() {
    let mut net = Net::new(vec![chain_config(0), chain_config(100)]);
    net.dial(0, 1, None);
    let peer = net.nodes[1].peer_id();
    // Pings both ways at 30 s: heard lately. Then 1 freezes: nothing more
    // reaches 0 from it.
    net.advance(Duration::from_secs(31));
    freeze(&mut net, 1);
    let body = BlocksByRangeRequest {
        start_slot: 1,
        count: 8,
    }
    .encode();
    // Each expires on its own, 5 s after it went out, while the last
    // message from 1 is under 10 s old.
    for tag in 1..=6 {
        request(&mut net, 0, 1, ProtocolId::BlocksByRange, body.clone(), tag);
        net.advance(Duration::from_millis(500));
    }
    net.advance(Duration::from_secs(10));
    assert!(
        net.nodes[0].is_connected(&peer),
        "not scored out: {:?}",
        disconnects(&net, 0)
    );
    let timeouts = net.nodes[0].counters().requests_timed_out;
    assert!(timeouts >= 6, "{timeouts} timeouts");
    let score = net.nodes[0]
        .peer_manager()
        .score(net.now, &peer)
        .as_points();
    assert!(
        score > -(timeouts as f64) - 0.5,
        "Low penalties only: {score} after {timeouts} timeouts"
    );
    net.advance(Duration::from_secs(90));
    assert!(!net.nodes[0].is_connected(&peer));
    assert_eq!(disconnects(&net, 0), vec![DisconnectReason::Silent]);
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
    let conn = net.nodes[0].conns.conn_of(&net.nodes[1].peer_id()).unwrap();
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
    let conn = net.nodes[0].conns.conn_of(&net.nodes[1].peer_id()).unwrap();
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
