//! The chain: production, gossiped blocks, durability before announcement.

use super::*;

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
fn a_gossiped_block_whose_check_fails_on_our_side_costs_its_sender_nothing() {
    let mut net = producing_line();
    net.work_failing[1] = 1;
    let slot = Duration::from_millis(crate::chain::DEVNET_SLOT_DURATION_MS);
    net.advance(slot * 5);
    let node = &net.nodes[1];
    assert_eq!(net.work_failing[1], 0, "the fault fired");
    assert_eq!(node.counters().work_failed, 1);
    assert_eq!(node.counters().gossip_messages_rejected, 0);
    assert_eq!(node.counters().gossip_penalties, 0);
    assert_eq!(node.counters().sync_penalties, 0);
    assert!(node.is_connected(&net.nodes[0].peer_id()));
    assert_eq!(node.work_in_flight(), 0, "the failed job's slot is free");
    // The block whose check failed still arrives, by lookup, at both
    // followers (node 2 hears of it only through node 1).
    for i in 1..3 {
        assert_eq!(net.nodes[i].chain().head(), net.nodes[0].chain().head());
        assert_eq!(imported_slots(&net, i), vec![1, 2, 3, 4, 5], "node {i}");
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

/// A forged block (slot 2 on slot 1, with slot 1's signature) gossiped by
/// node 2: node 1 checks it, imports nothing, forwards nothing, and bans
/// node 2 at once, since no honest node forwards a block that fails its
/// check. The forgery does not get the honest block of the same header
/// refused: node 0 then gossips it and node 1 imports it.
#[test]
fn a_gossiped_block_with_a_bad_signature_bans_its_sender_and_is_never_imported() {
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
    let forger = net.nodes[2].peer_id();
    assert!(!net.nodes[1].peer_manager().is_banned(net.now, &forger));
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
    assert_eq!(
        net.nodes[1].counters().work_started,
        2,
        "slot 1, then the forgery"
    );
    assert!(
        net.nodes[1].peer_manager().is_banned(net.now, &forger),
        "score {}",
        net.nodes[1]
            .peer_manager()
            .score(net.now, &forger)
            .as_points()
    );
    assert!(!net.connected(1, 2));
    assert!(net.connected(0, 1), "only the forger pays");
    // The same header, honestly signed, is still welcome: a forgery cannot
    // get a valid block refused.
    assert_eq!(forged.root(), honest.root());
    let command = Command::Publish {
        topic: Topic::new(BLOCKS_TOPIC).unwrap(),
        payload: honest.encode(),
    };
    run(&mut net, 0, Input::Command(command));
    net.drain();
    assert_eq!(net.nodes[1].chain().head().root, honest.root());
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
