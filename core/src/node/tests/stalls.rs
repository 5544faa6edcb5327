//! One slow or departing peer must not silence a node; fast chains and far-behind followers keep up.

use super::*;
use crate::types::Root;

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
        let orphan = producer.produce(1, Root([i + 1; 32]), vec![i; 8]);
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
        let block = producer.produce(far + u64::from(i), Root([i + 1; 32]), vec![i; 8]);
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
