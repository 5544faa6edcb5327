//! Sync: range sync, parent lookups, fast chains, proposers behind, failing stores and clocks.

use super::*;

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

/// A node started on a store built before it (`Node::with_chain_store`, as
/// the simulator starts many nodes on one chain) is the node `Node::new`
/// makes: a joiner syncing from it sees the same, notification for
/// notification, and the two servers end with the same counters.
#[test]
fn a_node_started_on_a_built_store_serves_as_one_that_built_its_own() {
    let sync = |prebuilt: bool| {
        let server = chain_config(120);
        let mut net = Net::new(vec![joiner_config(), server.clone()]);
        if prebuilt {
            let (store, refused) = ChainStore::for_config(&server.chain);
            assert!(refused.is_empty(), "{refused:?}");
            net.nodes[1] = Node::with_chain_store(server, Identity::from_seed(1), [1; 32], store);
        }
        net.dial(0, 1, None);
        net.advance(Duration::from_secs(30));
        (
            net.notifications.clone(),
            net.nodes[0].chain().head(),
            format!("{:?}", net.nodes[1].counters()),
        )
    };
    let built_by_new = sync(false);
    assert_eq!(built_by_new.1.slot, 120, "the joiner synced");
    assert_eq!(sync(true), built_by_new);
}

#[test]
#[should_panic(expected = "the chain store was built on another genesis")]
fn a_store_built_on_another_genesis_is_refused() {
    let other = crate::chain::ChainConfig::devnet_with_chain(2, 3, 10);
    let (store, _) = ChainStore::for_config(&other);
    Node::with_chain_store(chain_config(3), Identity::from_seed(1), [1; 32], store);
}

#[test]
fn blocks_gossiped_while_far_behind_are_left_to_range_sync_not_looked_up() {
    // A proposer 300 blocks ahead goes on producing while a fresh node
    // joins: each block it gossips is an orphan to the joiner, hundreds of
    // slots above its head, until range sync has caught up.
    let mut proposer = chain_config(300);
    proposer.chain.proposer_keys = vec![ProposerKey(std::sync::Arc::new(
        crate::chain::devnet_keys(1, 1).remove(0),
    ))];
    proposer.chain.follow_gossip = true;
    let mut joiner = joiner_config();
    joiner.chain.follow_gossip = true;
    // Range sync waits for a second peer before settling for one (30 s):
    // meanwhile the proposer's blocks arrive by gossip.
    joiner.sync.peers_min = 2;
    let mut net = Net::new(vec![joiner, proposer]);
    net.dial(0, 1, None);
    net.advance(Duration::from_secs(60));
    let head = net.nodes[1].chain().head();
    assert!(head.slot > 300, "the proposer went on producing");
    assert_eq!(net.nodes[0].chain().head(), head, "the joiner caught up");
    let joiner = &net.nodes[0];
    assert!(joiner.counters().orphans_left_to_range_sync > 0);
    // Without this, each such block started a lookup that walked back one
    // block per request, up to 64, before handing over to range sync.
    assert_eq!(joiner.lookup_counters().switched_to_range, 0);
    assert!(
        joiner.lookup_counters().requests_sent <= 4,
        "{:?}",
        joiner.lookup_counters()
    );
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
    net.advance(Duration::from_millis(1_000)); // 2.5 s: slot 1 started.
                                               // Nothing is signed before the slot's watermark is durable.
    assert_eq!(net.nodes[0].counters().blocks_produced, 0);
    assert_eq!(net.nodes[0].counters().watermarks_persisted, 1);
    // The watermark is written (its acknowledgement is on its way), and
    // the disk stalls again before the block's own batch.
    net.hold_persist(0, false);
    net.hold_persist(0, true);
    net.drain();
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
