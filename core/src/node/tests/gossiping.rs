//! Gossip through the node: publishing, verdicts, subscriptions, the heartbeat, slow readers.

use super::*;

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

/// The Metadata of a node is what peers believe it takes part in: the
/// chain's own blocks topic counts as much as the application's, and
/// leaving a topic takes it out (with a new sequence number).
#[test]
fn metadata_lists_every_subscription_the_chains_blocks_topic_included() {
    let mut net = Net::new(vec![Config::new(1), follower_config(false)]);
    net.dial(0, 1, None);
    let fetched = |net: &Net| {
        net.notifications[0]
            .iter()
            .rev()
            .find_map(|n| match n {
                Notification::PeerMetadata { metadata, .. } => Some(metadata.clone()),
                _ => None,
            })
            .expect("metadata fetched")
    };
    net.advance(Duration::from_secs(31));
    let metadata = fetched(&net);
    assert_eq!(metadata.topics, vec![crate::node::BLOCKS_TOPIC.to_string()]);
    assert!(metadata.seq >= 1, "subscribing raised the sequence number");
    // The application's topics join it, in order; leaving one drops it.
    for name in ["chat", "votes"] {
        let topic = Topic::new(name).unwrap();
        run(&mut net, 1, Input::Command(Command::Subscribe { topic }));
    }
    let topic = Topic::new("chat").unwrap();
    run(&mut net, 1, Input::Command(Command::Unsubscribe { topic }));
    net.advance(Duration::from_secs(61));
    let later = fetched(&net);
    assert_eq!(
        later.topics,
        vec!["blocks".to_string(), "votes".to_string()]
    );
    assert_eq!(later.seq, metadata.seq + 3);
    for topic in &later.topics {
        assert!(Topic::new(topic).is_ok(), "a gossip topic: {topic}");
    }
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
