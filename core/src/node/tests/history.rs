//! History on disk: a chain longer than memory holds is served from the store.

use super::*;
use crate::chain::{ChainStore, Genesis, Root, StoreLimits};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Finality depth of these chains: small, so a few large blocks fill the
/// store's budget (`StoreLimits::for_finality_depth`: 10 MiB).
const DEPTH_SLOTS: u64 = 4;
/// Blocks of the stored chain.
const CHAIN_BLOCKS: u64 = 40;
/// Body bytes of each: 40 blocks are 36 MiB, more than three times the budget.
const BODY_BYTES: usize = 900 * 1024;

/// A genesis, its chain of large blocks, and the clock after them.
fn long_chain() -> &'static (Arc<Genesis>, Vec<SignedBlock>) {
    static CHAIN: std::sync::OnceLock<(Arc<Genesis>, Vec<SignedBlock>)> =
        std::sync::OnceLock::new();
    CHAIN.get_or_init(|| {
        let keys = crate::chain::devnet_keys(1, 1);
        let genesis = Genesis::new(
            1,
            0,
            crate::chain::DEVNET_SLOT_DURATION_MS,
            vec![keys[0].sk_to_pk()],
            DEPTH_SLOTS,
        )
        .unwrap();
        let root = genesis.root();
        let blocks =
            crate::chain::signed_chain(&genesis, &keys, root, 1, CHAIN_BLOCKS as usize, BODY_BYTES);
        (Arc::new(genesis), blocks)
    })
}

fn config(stored: Vec<SignedBlock>, anchor: Option<Root>) -> Config {
    let (genesis, _) = long_chain();
    let mut config = Config::new(1);
    config.unix_ms_at_origin = (CHAIN_BLOCKS + 1) * crate::chain::DEVNET_SLOT_DURATION_MS;
    config.sync.peers_min = 1;
    config.chain.genesis = genesis.clone();
    config.chain.stored = stored.into();
    config.chain.history_anchor = anchor;
    config
}

/// Node 0 a joiner with nothing; node 1 restarted on a store of the whole
/// chain, loading (as the driver does) only from its finalized block up.
fn joiner_and_server() -> Net {
    let (_, blocks) = long_chain();
    let finalized_slot = CHAIN_BLOCKS - DEPTH_SLOTS;
    let anchor = &blocks[finalized_slot as usize - 1];
    assert_eq!(anchor.slot(), finalized_slot);
    let tail = blocks[finalized_slot as usize - 1..].to_vec();
    let mut net = Net::new(vec![
        config(Vec::new(), None),
        config(tail, Some(anchor.root())),
    ]);
    let disk: BTreeMap<Root, SignedBlock> = blocks
        .iter()
        .map(|block| (block.root(), block.clone()))
        .collect();
    net.disks[1] = (disk, anchor.root());
    net
}

#[test]
fn a_store_loaded_from_its_finalized_block_holds_only_the_tail_and_knows_its_floor() {
    let net = joiner_and_server();
    let chain = net.nodes[1].chain();
    assert_eq!(chain.head().slot, CHAIN_BLOCKS);
    assert_eq!(chain.finalized().slot, CHAIN_BLOCKS - DEPTH_SLOTS);
    assert_eq!(chain.len() as u64, DEPTH_SLOTS + 1);
    assert_eq!(chain.history_floor(), Some(CHAIN_BLOCKS - DEPTH_SLOTS));
    chain.assert_invariants();
    // The joiner's chain reaches back to the genesis: no floor.
    assert_eq!(net.nodes[0].chain().history_floor(), None);
}

#[test]
fn a_joiner_syncs_a_chain_longer_than_memory_from_a_server_that_reads_it_from_disk() {
    let mut net = joiner_and_server();
    net.dial(0, 1, None);
    net.advance(Duration::from_secs(60));
    let (_, blocks) = long_chain();
    let server = &net.nodes[1];
    assert_eq!(net.nodes[0].chain().head(), server.chain().head());
    assert_eq!(synced_at(&net, 0), Some(CHAIN_BLOCKS));
    // Every block went through the joiner, in order, and is on its disk.
    let roots: Vec<Root> = blocks.iter().map(SignedBlock::root).collect();
    assert_eq!(net.persisted[0], roots);
    // Both stores kept to their budget; the joiner evicted its history too.
    let budget = StoreLimits::for_finality_depth(DEPTH_SLOTS).bytes_max;
    assert_eq!(budget, 10 * crate::chain::block::BLOCK_BYTES_MAX);
    for node in &net.nodes {
        assert!(node.chain().bytes() <= budget);
    }
    assert!(net.nodes[0].chain().history_floor().is_some());
    // The history came from the server's disk.
    let counters = server.counters();
    assert!(counters.history_reads > 0);
    assert!(
        counters.history_blocks_read >= CHAIN_BLOCKS - DEPTH_SLOTS - 1,
        "{} blocks read",
        counters.history_blocks_read
    );
    assert_eq!(counters.history_reads_refused, 0);
    // Four of these blocks fill an answer: after the first cut answer the
    // joiner asks for four slots at a time. Asking again for the whole
    // rest each time named about five times the chain's slots, which the
    // server's quota charges.
    let sync = net.nodes[0].range_sync_counters();
    assert!(sync.answers_split > 0);
    assert!(
        sync.slots_requested <= 2 * CHAIN_BLOCKS,
        "{} slots asked for {CHAIN_BLOCKS} blocks",
        sync.slots_requested
    );
    // The joiner's own disk now answers for the whole chain.
    let (disk, finalized) = &net.disks[0];
    let read = crate::work::BlockRead {
        id: 0,
        start_slot: 1,
        end_slot: CHAIN_BLOCKS + 1,
        blocks_max: usize::MAX,
        bytes_max: usize::MAX,
    };
    let genesis = net.nodes[0].config().chain.genesis.root();
    let (read_back, complete) = read.answer_from(*finalized, genesis, |root| disk.get(root));
    assert!(complete);
    assert_eq!(
        read_back.len() as u64,
        net.nodes[0].chain().finalized().slot
    );
}

#[test]
fn a_range_the_store_cannot_read_whole_is_refused_never_answered_with_a_gap() {
    let mut net = joiner_and_server();
    // Slot 10's block is lost from the server's disk.
    let (_, blocks) = long_chain();
    net.disks[1].0.remove(&blocks[9].root());
    net.dial(0, 1, None);
    net.advance(Duration::from_secs(1));
    let ask = |net: &mut Net, start_slot: u64, tag: u64| {
        let count = CHAIN_BLOCKS + 1 - start_slot;
        let body = BlocksByRangeRequest { start_slot, count };
        request(net, 0, 1, ProtocolId::BlocksByRange, body.encode(), tag);
        net.advance(Duration::from_secs(1));
        outcome(net, 0, tag)
    };
    // From slot 1 the range crosses the hole: refused, not answered from
    // slot 11 on (which would claim slots 1 to 10 empty).
    match ask(&mut net, 1, 7) {
        Some(Notification::RequestFailed {
            error: RequestError::Refused { code, .. },
            ..
        }) => assert_eq!(code, ResultCode::ResourceUnavailable),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Above the hole the store answers, as much as one answer carries
    // (4 MiB: four of these blocks)...
    let slots_from = |net: &mut Net, start_slot: u64, tag: u64| -> Vec<u64> {
        let Some(Notification::Response { chunks, .. }) = ask(net, start_slot, tag) else {
            panic!("no answer from slot {start_slot}");
        };
        chunks.iter().map(|chunk| block_slot(chunk)).collect()
    };
    assert_eq!(slots_from(&mut net, 11, 8), vec![11, 12, 13, 14]);
    // ...and across the floor, the store's blocks and memory's join.
    let floor = net.nodes[1].chain().history_floor().unwrap();
    assert_eq!(floor, CHAIN_BLOCKS - DEPTH_SLOTS);
    let slots = slots_from(&mut net, floor - 2, 9);
    assert_eq!(slots, (floor - 2..floor + 2).collect::<Vec<_>>());
    let server = net.nodes[1].counters();
    assert!(server.history_reads >= 3, "{} reads", server.history_reads);
}

#[test]
fn a_store_within_its_budget_evicts_history_and_reports_where_memory_starts() {
    let (genesis, blocks) = long_chain();
    let limits = StoreLimits::for_finality_depth(DEPTH_SLOTS);
    let (store, refused) = ChainStore::from_blocks(genesis, limits, None, blocks.iter().cloned());
    assert!(refused.is_empty(), "{refused:?}");
    store.assert_invariants();
    assert!(store.bytes() <= limits.bytes_max);
    let floor = store.history_floor().expect("history was evicted");
    assert!(store.canonical_block_at(floor - 1).is_none());
    assert!(store.canonical_block_at(floor).is_some());
    assert!(
        floor <= store.finalized().slot,
        "only finalized history goes"
    );
}
