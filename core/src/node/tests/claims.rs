//! Lies in well-formed claims: Status heads, served chains and orphans are believed only as far as the clock and proof allow.

use super::*;
use crate::types::Root;

#[test]
fn a_status_claiming_u64_max_slots_costs_its_sender_and_never_crashes_the_node() {
    // The remote crash: finalized = head = u64::MAX on no chain made
    // range sync overflow 30 s later. Now the clock disproves the claim.
    let mut net = Net::new(vec![joiner_config(), Config::new(1)]);
    net.dial(0, 1, None);
    let lie = Status {
        network_id: 1,
        finalized_root: Root([0xee; 32]),
        finalized_slot: u64::MAX,
        head_root: Root([0xff; 32]),
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
        finalized_root: Root([0xee; 32]),
        finalized_slot: slot - 64,
        head_root: Root([0xff; 32]),
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
                parent_root: Root([i + 1; 32]),
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
    use super::purpose::BlockAnswerCheck;
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
