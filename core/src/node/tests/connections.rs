//! Connections: handshakes, identities, keepalive, refusals, dials and goodbyes.

use super::*;

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
    freeze(&mut net, 1);
    net.advance_to(Instant::ZERO + Duration::from_secs(89));
    assert!(net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    net.advance_to(Instant::ZERO + Duration::from_secs(91));
    assert!(!net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    assert_eq!(disconnects(&net, 0), vec![DisconnectReason::Silent]);
    assert_eq!(net.nodes[0].counters().peers_silent, 1);
}

/// `--peer-silence-secs 20`: a cut-off peer goes after 20 s, not 90, and
/// an idle honest one stays, because pings come every 20/3 s instead of 30.
#[test]
fn a_shorter_silence_timeout_drops_a_silent_peer_sooner_and_keeps_an_idle_one() {
    let short = || Config::new(1).with_peer_silence_timeout(Duration::from_secs(20));
    assert_eq!(short().ping_interval, Duration::from_nanos(6_666_666_666));
    // Longer than the default: the ping interval stays at the default.
    let long = Config::new(1).with_peer_silence_timeout(Duration::from_secs(600));
    assert_eq!(long.ping_interval, limits::PING_INTERVAL);

    let mut net = Net::new(vec![short(), short()]);
    net.dial(0, 1, None);
    net.advance_to(Instant::ZERO + Duration::from_secs(120));
    assert!(net.connected(0, 1), "an idle peer answering Pings is kept");
    assert!(net.nodes[0].counters().pongs_received >= 15);
    assert_eq!(net.nodes[0].counters().peers_silent, 0);

    freeze(&mut net, 1);
    let cut = net.now;
    net.advance_to(cut + Duration::from_secs(13));
    assert!(net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    net.advance_to(cut + Duration::from_secs(21));
    assert!(!net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    assert_eq!(disconnects(&net, 0), vec![DisconnectReason::Silent]);
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
        net.nodes[a].conns.conn_of(&net.nodes[b].peer_id()),
        Some(conn_a)
    );
    assert_eq!(
        net.nodes[b].conns.conn_of(&net.nodes[a].peer_id()),
        Some(conn_b)
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
    let conn_at_1 = net.nodes[1].conns.conn_of(&net.nodes[0].peer_id()).unwrap();
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

#[test]
fn a_peer_that_saw_the_old_connection_close_first_learns_our_subscriptions_again() {
    // Node 0 redials node 1 while connected (a redial timer and a planned
    // dial at one instant). Node 1 sees the old connection close before the
    // new handshake ends, so for it the new connection is a new session that
    // knows none of node 0's subscriptions. Node 0, which moved the peer
    // silently, must start a fresh session too, or node 1 never sends it a
    // block again.
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    for i in 0..2 {
        let topic = blocks_topic();
        run(&mut net, i, Input::Command(Command::Subscribe { topic }));
    }
    let id_0 = net.nodes[0].peer_id();
    assert_eq!(
        net.nodes[1].gossip().peer_topics(&id_0),
        vec![blocks_topic()]
    );

    let addr = addr(1);
    net.handle(0, Input::Command(Command::Dial { addr, peer: None }));
    loop {
        // Node 1 learns of every close before anything else in flight.
        let close = net
            .in_flight
            .iter()
            .position(|delivery| matches!(delivery, Delivery::Closed { to: 1, .. }));
        if let Some(close) = close.and_then(|at| net.in_flight.remove(at)) {
            net.in_flight.push_front(close);
        }
        if !net.step() {
            break;
        }
    }
    assert!(net.connected(0, 1));
    let sessions = connection_events(&net, 1);
    assert!(
        matches!(
            sessions.as_slice(),
            [
                Notification::PeerConnected { .. },
                Notification::PeerDisconnected { .. },
                Notification::PeerConnected { .. }
            ]
        ),
        "node 1 saw the old session end and a new one begin: {sessions:?}"
    );
    assert_eq!(
        net.nodes[1].gossip().peer_topics(&id_0),
        vec![blocks_topic()],
        "node 1 knows node 0's subscriptions on the new session"
    );
}

#[test]
fn a_peer_trickling_bytes_of_a_message_it_never_completes_is_dropped_as_silent() {
    // No pings or Status rounds: the only traffic after the handshake is
    // the trickle, so only complete messages could keep the peer alive.
    let quiet = || {
        let mut config = Config::new(1);
        config.ping_interval = Duration::from_secs(3_600);
        config.status_interval = Duration::from_secs(3_600);
        config
    };
    let mut net = Net::new(vec![quiet(), quiet()]);
    net.dial(0, 1, None);
    let start = net.now;
    let conn_at_1 = net.nodes[1].conns.conn_of(&net.nodes[0].peer_id()).unwrap();
    // A frame declaring 1 000 bytes, then a byte every 20 s: well within
    // every receive bound, and never a whole message.
    let mut pieces = vec![vec![0, 0, 3, 0xe8, 16]];
    pieces.extend(std::iter::repeat_n(vec![0], 5));
    for piece in pieces {
        net.advance(Duration::from_secs(20));
        let node = &mut net.nodes[1];
        node.conns.send_plaintext(conn_at_1, &piece);
        node.conns.flush_all(net.now, &mut node.out);
        net.requeue(1, Vec::new());
        net.drain();
        if net.now < start + Duration::from_secs(89) {
            assert!(net.connected(0, 1), "still within the silence timeout");
        }
    }
    assert!(net.now >= start + Duration::from_secs(120));
    assert!(!net.nodes[0].is_connected(&net.nodes[1].peer_id()));
    assert_eq!(disconnects(&net, 0), vec![DisconnectReason::Silent]);
    assert_eq!(net.nodes[0].counters().peers_silent, 1);
    assert_eq!(net.nodes[0].counters().protocol_violations, 0);
}

#[test]
fn a_malformed_goodbye_gets_no_answer_and_ends_the_connection() {
    let mut net = Net::with_nodes(2);
    net.dial(0, 1, None);
    // A Goodbye whose body frame declares 9 bytes, one more than its layout.
    let mut goodbye = vec![crate::reqresp::REQUEST_KIND, 0, 0, 0, 0, 0, 0, 0, 7, 4];
    crate::codec::snappy::compress_into(&[0; 9], &mut goodbye);
    let peer = net.nodes[1].peer_id();
    assert!(net.nodes[0].testing_send_message(&peer, &goodbye));
    net.requeue(0, Vec::new());
    net.drain();
    assert!(!net.connected(0, 1));
    assert!(matches!(
        disconnects(&net, 1).as_slice(),
        [DisconnectReason::ProtocolViolation(_)]
    ));
    assert_eq!(net.nodes[1].counters().protocol_violations, 1);
    // The sender heard Goodbye(fault), not an InvalidRequest answer.
    assert_eq!(
        disconnects(&net, 0),
        vec![DisconnectReason::RemoteGoodbye(GoodbyeReason::Fault)]
    );
    assert_eq!(net.nodes[0].counters().responses_unexpected, 0);
    assert_eq!(net.nodes[1].counters().goodbyes_received, 0);
}

#[test]
fn a_peer_speaking_another_protocol_version_is_refused_with_the_reason() {
    use crate::secure::{Handshake, HandshakeStep, Hello, LocalKeys};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    let mut node = Node::new(Config::new(1), Identity::from_seed(1), [1; 32]);
    let conn = ConnId(0);
    let actions = |node: &mut Node| std::iter::from_fn(|| node.poll_action()).collect::<Vec<_>>();
    node.handle(
        Instant::ZERO,
        Input::ConnectionOpened {
            conn,
            remote: addr(1),
            origin: Origin::Accepted,
        },
    );
    actions(&mut node);
    // The dialler speaks version 2 on our network, with a valid identity.
    let keys = LocalKeys::new(Identity::from_seed(2), &mut ChaCha20Rng::seed_from_u64(2));
    let mut message1 = Vec::new();
    let dialler = Handshake::initiate(&keys, [2; 32], None, &mut message1).unwrap();
    node.handle(
        Instant::ZERO,
        Input::BytesReceived {
            conn,
            bytes: message1,
        },
    );
    let message2 = actions(&mut node)
        .into_iter()
        .find_map(|action| match action {
            Action::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .expect("message 2");
    let hello = Hello {
        version: PROTOCOL_VERSION + 1,
        network_id: 1,
        listen_port: 0,
        capabilities: 0,
    };
    let mut message3 = Vec::new();
    let HandshakeStep::Done { mut transport, .. } = dialler
        .read_message(&keys, &hello, &message2[2..], &mut message3)
        .unwrap()
    else {
        panic!("the dialler is done after message 2");
    };
    node.handle(
        Instant::ZERO,
        Input::BytesReceived {
            conn,
            bytes: message3,
        },
    );
    let after = actions(&mut node);
    let reason = RefuseReason::IncompatibleVersion {
        ours: PROTOCOL_VERSION,
        theirs: PROTOCOL_VERSION + 1,
    };
    assert!(
        after.contains(&Action::Notify(Notification::ConnectionRefused {
            addr: addr(1),
            peer: Some(keys.peer_id()),
            reason: reason.clone(),
        })),
        "{after:?}"
    );
    assert_eq!(
        reason.to_string(),
        format!(
            "incompatible protocol version {} (ours is {PROTOCOL_VERSION})",
            PROTOCOL_VERSION + 1
        )
    );
    assert!(after.contains(&Action::Close { conn }));
    assert_eq!(node.counters().refused_incompatible_version, 1);
    assert_eq!(node.peer_count(), 0);
    // The dialler is told why: Goodbye(irrelevant network), the code §5.8
    // gives an incompatible version.
    let sent: Vec<u8> = after
        .iter()
        .filter_map(|action| match action {
            Action::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut plaintext = Vec::new();
    transport.open(&sent[2..], &mut plaintext).unwrap();
    let request = crate::reqresp::Request::decode(&plaintext[4..]).unwrap();
    assert_eq!(request.protocol, ProtocolId::Goodbye);
    assert_eq!(
        crate::reqresp::bodies::Goodbye::decode(&request.body)
            .unwrap()
            .reason,
        GoodbyeReason::IrrelevantNetwork
    );
}

/// The address of the `index`th flooding host: a distinct IPv4 address
/// (so a distinct IP key) for each index below 65,536.
fn flooder(index: usize) -> std::net::SocketAddr {
    let [a, b] = u16::try_from(index).unwrap().to_be_bytes();
    std::net::SocketAddr::from(([198, 18, a, b], 40_000))
}

fn inbound_handshaking(net: &Net, index: usize) -> usize {
    net.nodes[index].conns.handshaking(Direction::Inbound)
}

/// A thousand half-open connections from a thousand addresses (cheap in
/// IPv6) used to fill every handshake slot, and honest peers that came next
/// were refused for as long as the flood lasted. Now each newcomer evicts
/// the handshake open the longest, so the honest peer gets in.
#[test]
fn a_half_open_flood_from_many_addresses_cannot_lock_out_an_honest_peer() {
    let mut net = Net::with_nodes(2);
    let flood = 1_000;
    for index in 0..flood {
        net.raw_connection_from(0, flooder(index));
    }
    let slots = limits::HANDSHAKES_IN_PROGRESS_MAX;
    assert_eq!(inbound_handshaking(&net, 0), slots);
    let counters = net.nodes[0].counters();
    assert_eq!(counters.handshakes_evicted, (flood - slots) as u64);
    assert_eq!(counters.refused_no_room, 0, "no newcomer was refused");
    assert_eq!(
        counters.handshakes_under_pressure,
        (flood - limits::HANDSHAKES_UNDER_PRESSURE_MIN) as u64
    );
    // The first connections were the ones evicted, in the order they came.
    let evicted: Vec<std::net::SocketAddr> = net.notifications[0]
        .iter()
        .filter_map(|notification| match notification {
            Notification::ConnectionRefused {
                addr,
                reason: RefuseReason::HandshakeEvicted,
                ..
            } => Some(*addr),
            _ => None,
        })
        .collect();
    let first: Vec<std::net::SocketAddr> = (0..flood - slots).map(flooder).collect();
    assert_eq!(evicted, first);
    assert_eq!(refusals(&net, 0).len(), flood - slots);

    net.dial(1, 0, Some(net.nodes[0].peer_id()));
    assert!(
        net.connected(1, 0),
        "the honest peer completed its handshake"
    );
    assert_eq!(
        net.nodes[0].counters().handshakes_evicted,
        (flood - slots + 1) as u64,
        "it took the slot of the oldest half-open connection"
    );
}

/// Ten half-open connections from each of 100 addresses: each address gets
/// `HANDSHAKES_PER_IP_MAX` slots and its further connections are refused at
/// once, so the flood never fills the slots and evicts nobody.
#[test]
fn one_address_holds_at_most_its_share_of_the_handshake_slots() {
    let mut net = Net::with_nodes(2);
    let (addresses, per_address) = (100, 10);
    for round in 0..per_address {
        for index in 0..addresses {
            let mut remote = flooder(index);
            remote.set_port(40_000 + round as u16);
            net.raw_connection_from(0, remote);
        }
    }
    let admitted = addresses * limits::HANDSHAKES_PER_IP_MAX;
    assert_eq!(inbound_handshaking(&net, 0), admitted);
    let counters = net.nodes[0].counters();
    assert_eq!(
        counters.refused_handshakes_from_ip,
        (addresses * per_address - admitted) as u64
    );
    assert_eq!(counters.handshakes_evicted, 0);
    assert!(refusals(&net, 0)
        .iter()
        .all(|reason| *reason == RefuseReason::TooManyHandshakesFromIp));

    net.dial(1, 0, Some(net.nodes[0].peer_id()));
    assert!(net.connected(1, 0));
}

/// Past half the slots, a newcomer has `HANDSHAKE_TIMEOUT_UNDER_PRESSURE`
/// to finish; those that came before keep their full deadline.
#[test]
fn under_pressure_a_new_handshake_gets_the_short_deadline() {
    let mut net = Net::with_nodes(1);
    let calm = limits::HANDSHAKES_UNDER_PRESSURE_MIN;
    for index in 0..calm + 1 {
        net.raw_connection_from(0, flooder(index));
    }
    assert_eq!(net.nodes[0].counters().handshakes_under_pressure, 1);
    net.advance_to(Instant::ZERO + limits::HANDSHAKE_TIMEOUT_UNDER_PRESSURE);
    assert_eq!(refusals(&net, 0), vec![RefuseReason::Timeout]);
    assert_eq!(inbound_handshaking(&net, 0), calm);
    net.advance_to(Instant::ZERO + limits::HANDSHAKE_TIMEOUT);
    assert_eq!(inbound_handshaking(&net, 0), 0);
    assert_eq!(net.nodes[0].counters().refused_timeout, calm as u64 + 1);
}

/// Loopback is exempt from the per-address cap unless the limits say
/// otherwise (a devnet runs every node on 127.0.0.1).
#[test]
fn loopback_handshakes_are_capped_only_when_configured() {
    let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut net = Net::with_nodes(1);
    for port in 0..limits::HANDSHAKES_PER_IP_MAX as u16 + 2 {
        net.raw_connection_from(0, local(40_000 + port));
    }
    assert_eq!(
        inbound_handshaking(&net, 0),
        limits::HANDSHAKES_PER_IP_MAX + 2
    );

    let mut config = Config::new(1);
    config.peer.limits.exempt_loopback = false;
    let mut net = Net::new(vec![config]);
    for port in 0..limits::HANDSHAKES_PER_IP_MAX as u16 + 2 {
        net.raw_connection_from(0, local(40_000 + port));
    }
    assert_eq!(inbound_handshaking(&net, 0), limits::HANDSHAKES_PER_IP_MAX);
    assert_eq!(net.nodes[0].counters().refused_handshakes_from_ip, 2);
}

#[test]
fn bytes_fed_in_place_do_what_an_input_of_them_does() {
    // The same story twice: a line of five nodes connects and forms its
    // meshes, one publishes to its neighbour, everything in pieces of 7
    // bytes (so that messages span reads); once with every read an input of its
    // own, once with the bytes fed where they are.
    let story = |borrowed_reads: bool| {
        let mut net = gossip_line_with(|net| {
            net.borrowed_reads = borrowed_reads;
            net.piece_bytes = Some(7);
        });
        publish(&mut net, 0, b"one message across the line");
        net.advance(Duration::from_secs(2));
        let heard: Vec<String> = (0..5)
            .map(|i| format!("{:?}", net.notifications[i]))
            .collect();
        (heard, gossip_messages(&net, 1))
    };
    let (as_inputs, reached_the_neighbour) = story(false);
    assert_eq!(reached_the_neighbour.len(), 1);
    assert_eq!(story(true), (as_inputs, reached_the_neighbour));
}

#[test]
fn a_large_message_sent_leaves_no_large_send_buffer_behind() {
    // Node 1 of the line forwards a 512 KiB message (random, so snappy
    // cannot shrink it) to both its neighbours, then holds only small
    // plaintext buffers: a node forwarding blocks to many peers does not
    // keep a block-sized buffer per connection.
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    let mut net = gossip_line();
    let mut payload = vec![0u8; 512 * 1024];
    ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut payload);
    publish(&mut net, 1, &payload);
    net.advance(Duration::from_secs(2));
    for neighbour in [0, 2] {
        let heard = gossip_messages(&net, neighbour);
        assert_eq!(heard.len(), 1, "node {neighbour} got the message");
        assert_eq!(heard[0].1, payload);
    }
    let capacities = net.nodes[1].conns.outbound_capacities();
    assert_eq!(capacities.len(), 2);
    assert!(
        capacities
            .iter()
            .all(|&capacity| capacity <= crate::limits::OUTBOUND_PLAINTEXT_KEPT_BYTES_MAX),
        "{capacities:?}"
    );
}
