//! Real-TCP chain tests of the mio driver: blocks produced by one node
//! reach another through gossip, verified on the worker pool; a node with a
//! data directory comes back, after a restart, at the head it had stored.
//!
//! Every wait is a deadline on real state (a head slot, a counter), polled
//! through the driver, never a sleep.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use meshsync_core::chain::{devnet_keys, ChainConfig, Checkpoint, ProposerKey};
use meshsync_core::{Command, Config, Identity};
use meshsync_mio::driver::{Driver, DriverOptions};
use meshsync_mio::testing::{devnet_genesis, TempDir};

const NETWORK_ID: u64 = 77;
/// Short slots keep the tests fast; BLS signing and verifying take about a
/// millisecond each, far below this.
const SLOT_MS: u64 = 200;
/// The longest any test waits for a condition (never reached when it passes).
const DEADLINE: Duration = Duration::from_secs(30);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory, removed on drop.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A chain config on a one-proposer devnet genesis starting at
/// `genesis_time_ms`; with the key if `proposer`.
fn chain(genesis_time_ms: u64, proposer: bool) -> ChainConfig {
    let genesis = devnet_genesis(NETWORK_ID, 1, SLOT_MS, genesis_time_ms).unwrap();
    let mut keys = devnet_keys(NETWORK_ID, 1);
    ChainConfig {
        genesis: Arc::new(genesis),
        stored: Arc::from(Vec::new()),
        history_anchor: None,
        proposer_keys: if proposer {
            vec![ProposerKey(Arc::new(keys.remove(0)))]
        } else {
            Vec::new()
        },
        signed_slots: Vec::new(),
        body_bytes: 256,
        follow_gossip: true,
    }
}

fn bind(chain: ChainConfig, seed: u64, data_dir: Option<&Path>) -> Driver {
    let mut config = Config::new(NETWORK_ID);
    config.chain = chain;
    let options = DriverOptions {
        workers: 2,
        data_dir: data_dir.map(Path::to_path_buf),
        ..DriverOptions::default()
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Driver::bind_with(
        loopback,
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
        &options,
    )
    .unwrap()
}

/// One node proposes every 200 ms; the other, connected over loopback TCP,
/// imports at least three of its blocks through gossip, each verified on the
/// worker pool, and its chain is the proposer's.
#[test]
fn a_follower_imports_the_proposers_blocks_through_gossip() {
    // Slot 1 starts a second from now: time to connect and subscribe first.
    let genesis_time_ms = now_ms() + 1_000 - SLOT_MS;
    let proposer = bind(chain(genesis_time_ms, true), 1, None)
        .spawn("proposer")
        .unwrap();
    let follower = bind(chain(genesis_time_ms, false), 2, None)
        .spawn("follower")
        .unwrap();
    follower
        .handle()
        .command(Command::Dial {
            addr: proposer.local_addr(),
            peer: Some(proposer.peer_id()),
        })
        .unwrap();

    let deadline = StdInstant::now() + DEADLINE;
    let (imported, work_done, submitted, head) = loop {
        let state = follower
            .handle()
            .query(
                |driver| {
                    let node = driver.node();
                    (
                        node.counters().blocks_imported,
                        node.counters().work_done,
                        driver.work_stats().submitted,
                        node.chain().head(),
                    )
                },
                QUERY_TIMEOUT,
            )
            .unwrap();
        if state.0 >= 3 || StdInstant::now() >= deadline {
            break state;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    assert!(imported >= 3, "the follower imported {imported} blocks");
    assert!(
        work_done >= 3,
        "verified on the pool: {work_done} jobs done"
    );
    assert!(submitted >= 3, "{submitted} jobs went to the worker pool");
    let (produced, proposer_has_head) = proposer
        .handle()
        .query(
            move |driver| {
                let node = driver.node();
                (
                    node.counters().blocks_produced,
                    node.chain().block_by_root(&head.root).is_some(),
                )
            },
            QUERY_TIMEOUT,
        )
        .unwrap();
    assert!(produced >= 3, "{produced}");
    assert!(proposer_has_head, "the follower's head is a proposer block");
    follower.stop().unwrap();
    proposer.stop().unwrap();
}

/// A proposer with a data directory stores its blocks; after it is dropped
/// and bound again on the same directory (without its key, so the chain
/// stands still), its head is the head it had, and its status names it.
#[test]
fn a_restarted_node_comes_back_at_its_stored_head() {
    let dir = TempDir::new("durable");
    let genesis_time_ms = now_ms();
    let mut driver = bind(chain(genesis_time_ms, true), 3, Some(dir.path()));
    assert!(driver.is_durable());
    let deadline = StdInstant::now() + DEADLINE;
    // Four blocks written and the head durable. (Not "head slot 4": on a
    // loaded machine a slot can pass with no block.)
    let reached = driver
        .run_until(
            |driver| {
                driver.persist_stats().blocks >= 4
                    && driver.node().status().head_root == driver.node().chain().head().root
            },
            deadline,
        )
        .unwrap();
    assert!(reached, "head {:?}", driver.node().chain().head());
    let head: Checkpoint = driver.node().chain().head();
    let status = driver.node().status();
    assert_eq!(
        (status.head_root, status.head_slot),
        (head.root, head.slot),
        "every block is durable once the turn is over"
    );
    let stats = driver.persist_stats();
    assert!(stats.blocks >= 4, "{stats:?}");
    // Each block's batch follows its signing watermark's own batch (and
    // one watermark may still wait for its block).
    assert!(
        stats.batches >= 2 && stats.batches <= 2 * stats.blocks + 1,
        "{stats:?}"
    );
    eprintln!(
        "commit latency: mean {} µs, max {} µs over {} batches",
        stats.commit_micros_total / stats.batches,
        stats.commit_micros_max,
        stats.batches
    );
    drop(driver);

    let restarted = bind(chain(genesis_time_ms, false), 3, Some(dir.path()));
    assert_eq!(restarted.node().chain().head(), head);
    let status = restarted.node().status();
    assert_eq!((status.head_root, status.head_slot), (head.root, head.slot));
    assert_eq!(restarted.persist_stats().loaded, stats.blocks);
    assert_eq!(restarted.persist_stats().skipped, 0);

    // Without the data directory the same node starts from genesis.
    drop(restarted);
    let forgetful = bind(chain(genesis_time_ms, false), 3, None);
    assert_eq!(forgetful.node().chain().head().slot, 0);
}

/// A block in the store that does not decode is skipped, not fatal.
#[test]
fn an_undecodable_stored_block_is_skipped() {
    let dir = TempDir::new("damaged");
    {
        let mut store = meshsync_mio::store::BlockStore::open(dir.path()).unwrap();
        store
            .persist(&[([7; 32].into(), 1, b"not a block".as_slice())], None)
            .unwrap();
    }
    let driver = bind(chain(now_ms(), false), 4, Some(dir.path()));
    assert_eq!(driver.persist_stats().skipped, 1);
    assert_eq!(driver.persist_stats().loaded, 0);
    assert_eq!(driver.node().chain().head().slot, 0);
}
