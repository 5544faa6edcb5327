//! A chain longer than memory holds, on real sockets and a real store: the
//! node starts from its finalized block up (so start-up reads only the
//! unfinalized part), and a joiner still range-syncs the whole chain from
//! it, the history below read back from disk by slot.
//!
//! Every wait is a deadline on real state polled through the driver,
//! never a sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meshsync_core::chain::{
    devnet_keys, BlockProducer, ChainConfig, Genesis, SignedBlock, StoreLimits,
};
use meshsync_core::{Command, Config, Identity};
use meshsync_mio::driver::{Driver, DriverOptions, RunningDriver};
use meshsync_mio::store::{BlockStore, StoreNetwork, StoreOptions};
use meshsync_mio::testing::TempDir;

const NETWORK_ID: u64 = 79;
const SLOT_MS: u64 = 200;
/// Finality trails the head by this many slots: with 900 KiB blocks the
/// store's memory budget is 10 blocks, a quarter of the chain.
const DEPTH_SLOTS: u64 = 4;
const CHAIN_BLOCKS: u64 = 40;
const BODY_BYTES: usize = 900 * 1024;
mod support;

use support::{capture, logged, wait_for, QUERY_TIMEOUT};

fn bind(genesis: &Genesis, seed: u64, options: &DriverOptions) -> RunningDriver {
    capture();
    let mut config = Config::new(NETWORK_ID);
    config.chain = ChainConfig {
        genesis: Arc::new(genesis.clone()),
        ..ChainConfig::devnet(NETWORK_ID)
    };
    config.sync.peers_min = 1;
    Driver::bind_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
        options,
    )
    .unwrap()
    .spawn(&format!("history-{seed}"))
    .unwrap()
}

/// A store written as a node of an earlier version left it: every block
/// and the finalized checkpoint, but no index of the finalized chain.
fn store_chain(dir: &std::path::Path, genesis: &Genesis) -> Vec<SignedBlock> {
    let key = devnet_keys(NETWORK_ID, 1).remove(0);
    let producer = BlockProducer::new(key, genesis).unwrap();
    let mut parent = genesis.root();
    let blocks: Vec<SignedBlock> = (1..=CHAIN_BLOCKS)
        .map(|slot| {
            let block = producer.produce(slot, parent, vec![slot as u8; BODY_BYTES]);
            parent = block.root();
            block
        })
        .collect();
    let network = StoreNetwork {
        network_id: NETWORK_ID,
        genesis_root: genesis.root(),
    };
    let options = StoreOptions {
        network: Some(network),
        ..StoreOptions::default()
    };
    let mut store = BlockStore::open_with(dir, &options).unwrap();
    let encoded: Vec<_> = blocks
        .iter()
        .map(|block| (block.root(), block.slot(), block.encode()))
        .collect();
    let borrowed: Vec<_> = encoded
        .iter()
        .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
        .collect();
    let finalized = &blocks[(CHAIN_BLOCKS - DEPTH_SLOTS) as usize - 1];
    store
        .persist(&borrowed, Some((finalized.root(), finalized.slot())))
        .unwrap();
    blocks
}

#[test]
fn a_node_starts_from_its_finalized_block_and_serves_older_history_from_disk() {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = devnet_keys(NETWORK_ID, 1).remove(0);
    let genesis = Genesis::new(
        NETWORK_ID,
        now_ms - 60 * SLOT_MS,
        SLOT_MS,
        vec![key.sk_to_pk()],
        DEPTH_SLOTS,
    )
    .unwrap();
    let dir = TempDir::new("history-store");
    let blocks = store_chain(dir.path(), &genesis);
    let finalized_slot = CHAIN_BLOCKS - DEPTH_SLOTS;

    let server = bind(
        &genesis,
        31,
        &DriverOptions {
            workers: 1,
            data_dir: Some(dir.path().to_path_buf()),
            ..DriverOptions::default()
        },
    );
    // Start-up: the old store was indexed once, and only the finalized
    // block and what is above it came into memory.
    let (loaded, held, floor, head) = server
        .handle()
        .query(
            |driver: &Driver| {
                let chain = driver.node().chain();
                (
                    driver.persist_stats().loaded,
                    chain.len() as u64,
                    chain.history_floor(),
                    chain.head().slot,
                )
            },
            QUERY_TIMEOUT,
        )
        .unwrap();
    assert_eq!(loaded, DEPTH_SLOTS + 1);
    assert_eq!(held, DEPTH_SLOTS + 1);
    assert_eq!(floor, Some(finalized_slot));
    assert_eq!(head, CHAIN_BLOCKS);
    assert!(logged(
        log::Level::Info,
        &[&format!("indexed {finalized_slot} finalized blocks")]
    ));
    assert!(logged(
        log::Level::Info,
        &[&format!(
            "from the finalized block at slot {finalized_slot} up"
        )]
    ));

    // A joiner with no data directory syncs the whole chain from it.
    let joiner = bind(&genesis, 32, &DriverOptions::default());
    joiner
        .handle()
        .command(Command::Dial {
            addr: server.local_addr(),
            peer: Some(server.peer_id()),
        })
        .unwrap();
    let (joined_head, joined_bytes, imported) = wait_for(
        &joiner,
        |driver: &Driver| {
            let node = driver.node();
            (
                node.chain().head(),
                node.chain().bytes(),
                node.counters().blocks_imported,
            )
        },
        |(head, ..)| head.slot >= CHAIN_BLOCKS,
    );
    assert_eq!(joined_head.root, blocks.last().unwrap().root());
    assert_eq!(imported, CHAIN_BLOCKS, "every block, once");
    let budget = StoreLimits::for_finality_depth(DEPTH_SLOTS).bytes_max;
    assert!(joined_bytes <= budget, "{joined_bytes} > {budget}");

    let (reads, blocks_read, held_bytes) = server
        .handle()
        .query(
            |driver: &Driver| {
                (
                    driver.persist_stats().reads,
                    driver.persist_stats().blocks_read,
                    driver.node().chain().bytes(),
                )
            },
            QUERY_TIMEOUT,
        )
        .unwrap();
    assert!(reads > 0);
    assert!(
        blocks_read >= finalized_slot - 1,
        "{blocks_read} blocks read from disk"
    );
    assert!(held_bytes <= budget);
    joiner.stop().unwrap();
    server.stop().unwrap();
}
