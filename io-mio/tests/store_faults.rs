//! Disk, data-directory and clock faults, as an operator meets them, each
//! checked by what the operator sees: the error a start-up refuses with,
//! the log lines, whether the node goes on producing and announcing, and
//! what is in its store afterwards.
//!
//! - a full disk (a store file that may not grow: writes past it fail with
//!   ENOSPC, as on a full filesystem) and writes that fail outright;
//! - bit flips anywhere in a store file, over many seeds: never a panic;
//! - a damaged block: the node does not build on the incomplete chain;
//! - verification jobs that panic on a worker: nobody is blamed, sync goes on;
//! - a data directory of another network, a zero-length store;
//! - the store deleted under a running node;
//! - a peer store snapshot on a full disk: a WARN, and the next one lands;
//! - the wall clock jumping forwards and back;
//! - `meshsync node` refusing to start, by cause: a busy port (before the
//!   store is read) or a store it cannot use, each with its exit code and
//!   its one line on stderr.
//!
//! Every wait is a deadline on real state polled through the driver,
//! never a sleep.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use meshsync_core::chain::{
    devnet_keys, BlockProducer, ChainConfig, Genesis, ProposerKey, ProposerPublicKey, SignedBlock,
    SigningWatermark,
};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::{Command, Config, Identity, PeerId};
use meshsync_mio::driver::{
    ClockPolicy, Driver, DriverFaults, DriverOptions, RunningDriver, StartError,
};
use meshsync_mio::store::{BlockStore, DiskFaults, StoreNetwork, StoreOptions, STORE_FILE_NAME};
use meshsync_mio::testing::{devnet_genesis, TempDir};

const NETWORK_ID: u64 = 78;
const SLOT_MS: u64 = 200;
mod support;

use support::{capture, logged, logged_count, wait_for, DEADLINE, QUERY_TIMEOUT};

// ---- Set-up ----

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn genesis(network_id: u64, genesis_time_ms: u64) -> Genesis {
    devnet_genesis(network_id, 1, SLOT_MS, genesis_time_ms).unwrap()
}

fn chain(genesis: &Genesis, proposer: bool, stored: Vec<SignedBlock>) -> ChainConfig {
    ChainConfig {
        genesis: Arc::new(genesis.clone()),
        stored: Arc::from(stored),
        history_anchor: None,
        proposer_keys: if proposer {
            vec![ProposerKey(Arc::new(
                devnet_keys(genesis.network_id(), 1).remove(0),
            ))]
        } else {
            Vec::new()
        },
        signed_slots: Vec::new(),
        body_bytes: 4_096,
        follow_gossip: true,
    }
}

fn bind(chain: ChainConfig, seed: u64, options: &DriverOptions) -> Result<Driver, StartError> {
    capture();
    let mut config = Config::new(chain.genesis.network_id());
    config.chain = chain;
    config.sync.peers_min = 1;
    Driver::bind_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
        options,
    )
}

fn durable(dir: &Path) -> DriverOptions {
    DriverOptions {
        workers: 1,
        data_dir: Some(dir.to_path_buf()),
        ..DriverOptions::default()
    }
}

/// A signed chain of `slots` blocks on `genesis`, one per slot from slot 1.
fn signed_chain(genesis: &Genesis, slots: u64) -> Vec<SignedBlock> {
    let key = devnet_keys(genesis.network_id(), 1).remove(0);
    let producer = BlockProducer::new(key, genesis).unwrap();
    let mut parent = genesis.root();
    (1..=slots)
        .map(|slot| {
            let block = producer.produce(slot, parent, vec![slot as u8; 512]);
            parent = block.root();
            block
        })
        .collect()
}

fn store_blocks(dir: &Path, network: StoreNetwork, blocks: &[SignedBlock]) {
    let mut store = BlockStore::open_with(
        dir,
        &StoreOptions {
            network: Some(network),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let encoded: Vec<_> = blocks
        .iter()
        .map(|block| (block.root(), block.slot(), block.encode()))
        .collect();
    let borrowed: Vec<_> = encoded
        .iter()
        .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
        .collect();
    store.persist(&borrowed, None).unwrap();
    // The data directory of the proposer that signed them records its
    // signing watermark too (without it, that key would be refused here).
    if let Some(slot) = blocks.iter().map(SignedBlock::slot).max() {
        let proposer = ProposerPublicKey::of(&devnet_keys(network.network_id, 1)[0]);
        store
            .raise_watermarks(&[SigningWatermark { proposer, slot }])
            .unwrap();
    }
}

fn network_of(genesis: &Genesis) -> StoreNetwork {
    StoreNetwork {
        network_id: genesis.network_id(),
        genesis_root: genesis.root(),
    }
}

/// A deterministic generator for the bit-flip trials (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---- Full and failing disks ----

/// Body bytes of the full-disk proposer's blocks.
const FULL_DISK_BODY_BYTES: usize = 128 * 1024;

/// A proposer's disk fills up under it while a follower listens. From the
/// first refused write the proposer is `store_failing` (an ERROR line says
/// so): it produces nothing and the follower hears of no new block. Space
/// is freed; the driver reopens the store, writes the same batches, and
/// production resumes. Afterwards every block the follower got from the
/// proposer is in the proposer's store: nothing was announced that was not
/// kept.
#[test]
fn a_full_disk_stops_announcements_until_space_is_freed() {
    let dir = TempDir::new("full");
    let genesis = genesis(NETWORK_ID, now_ms() + 1_000 - SLOT_MS);
    let faults = DiskFaults::new();
    let options = DriverOptions {
        faults: DriverFaults {
            disk: Some(Arc::clone(&faults)),
            clock_skew_ms: None,
            ..DriverFaults::default()
        },
        ..durable(dir.path())
    };
    // Large blocks: redb first fills the free pages inside its file, and
    // the disk is full only once the file must grow; at 4 KiB a block
    // that took about 60 slots (12 s).
    let proposer_chain = ChainConfig {
        body_bytes: FULL_DISK_BODY_BYTES,
        ..chain(&genesis, true, Vec::new())
    };
    let proposer = bind(proposer_chain, 11, &options)
        .unwrap()
        .spawn("full-proposer")
        .unwrap();
    let proposer_id = format!("{:?}", proposer.peer_id());
    let follower = bind(
        chain(&genesis, false, Vec::new()),
        12,
        &DriverOptions::default(),
    )
    .unwrap()
    .spawn("full-follower")
    .unwrap();
    follower
        .handle()
        .command(Command::Dial {
            addr: proposer.local_addr(),
            peer: Some(proposer.peer_id()),
        })
        .unwrap();
    let head = |driver: &Driver| driver.node().chain().head().slot;
    assert!(wait_for(&follower, head, |slot| *slot >= 3) >= 3);

    // The disk is full: the file may not grow past its present length.
    let file = dir.path().join(STORE_FILE_NAME);
    faults.fill_at(std::fs::metadata(&file).unwrap().len());
    let failing = wait_for(
        &proposer,
        |driver| driver.store_failing_since().is_some(),
        |failing| *failing,
    );
    assert!(failing, "the store never failed");
    assert!(faults.refused() > 0);
    assert!(logged(
        log::Level::Error,
        &[&proposer_id, "store_failing", "No space left on device"]
    ));
    // redb may still place a small commit in free pages inside the file
    // after a reopen, as a real full disk allows; from here on the disk
    // takes no write at all, so the failing state holds still to be observed.
    faults.fail_writes(u64::MAX);
    // While failing: nothing produced, nothing new reaches the follower.
    let skipped_before = proposer
        .handle()
        .query(
            |d| d.node().counters().blocks_not_produced_unhealthy,
            QUERY_TIMEOUT,
        )
        .unwrap();
    let follower_head = follower.handle().query(head, QUERY_TIMEOUT).unwrap();
    let skipped = wait_for(
        &proposer,
        |d| d.node().counters().blocks_not_produced_unhealthy,
        |skipped| *skipped >= skipped_before + 5,
    );
    assert!(skipped >= skipped_before + 5, "the proposer kept producing");
    assert!(proposer
        .handle()
        .query(|d| d.node().is_store_failing(), QUERY_TIMEOUT)
        .unwrap());
    let follower_head_later = follower.handle().query(head, QUERY_TIMEOUT).unwrap();
    assert!(
        follower_head_later <= follower_head + 1,
        "the follower heard of blocks from {follower_head} to {follower_head_later} while the proposer's disk was full"
    );

    // Space is freed: the store is reopened and production resumes.
    faults.heal();
    let (recovered, reopened) = wait_for(
        &proposer,
        |d| {
            (
                d.store_failing_since().is_none(),
                d.persist_stats().reopened,
            )
        },
        |(recovered, _)| *recovered,
    );
    assert!(recovered && reopened >= 1, "reopened {reopened} times");
    assert!(logged(log::Level::Info, &[&proposer_id, "writes again"]));
    let resumed = wait_for(&follower, head, move |slot| {
        *slot >= follower_head_later + 3
    });
    assert!(
        resumed >= follower_head_later + 3,
        "production did not resume"
    );

    let follower_chain: Vec<_> = follower
        .handle()
        .query(
            |d| {
                let chain = d.node().chain();
                let mut roots = Vec::new();
                let mut at = chain.head().root;
                while let Some(block) = chain.block_by_root(&at) {
                    roots.push(at);
                    at = block.parent_root();
                }
                roots
            },
            QUERY_TIMEOUT,
        )
        .unwrap();
    follower.stop().unwrap();
    proposer.stop().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    for root in &follower_chain {
        assert!(
            store.block(root).unwrap().is_some(),
            "the follower holds a block the proposer never stored"
        );
    }
    eprintln!(
        "full disk: {} writes refused, {} blocks checked",
        faults.refused(),
        follower_chain.len()
    );
}

/// A disk whose fsync hangs stalls only the store's thread: while a
/// commit waits, the loop goes on answering (queries here, peers alike),
/// the batch is counted as not yet written, and the block is neither
/// acknowledged nor in the node's Status. Once the disk moves again, it is.
#[test]
fn a_hanging_fsync_stalls_the_store_thread_not_the_loop() {
    let dir = TempDir::new("hanging-fsync");
    let genesis = genesis(NETWORK_ID, now_ms() + 1_000 - SLOT_MS);
    let faults = DiskFaults::new();
    let options = DriverOptions {
        faults: DriverFaults {
            disk: Some(Arc::clone(&faults)),
            ..DriverFaults::default()
        },
        ..durable(dir.path())
    };
    let proposer = bind(chain(&genesis, true, Vec::new()), 19, &options)
        .unwrap()
        .spawn("hanging-fsync")
        .unwrap();
    let durable_head = |driver: &Driver| driver.node().status().head_slot;
    let before = wait_for(&proposer, durable_head, |slot| *slot >= 2);
    assert!(before >= 2, "the proposer never produced");

    faults.hold_syncs();
    // The next block's commit (or its signing watermark's) hangs in fsync;
    // every one of these queries is answered by the loop meanwhile.
    let stalled = wait_for(
        &proposer,
        |driver| {
            (
                driver.unwritten_batches(),
                driver.node().status().head_slot,
                driver.node().chain().head().slot,
            )
        },
        |(unwritten, ..)| *unwritten >= 1,
    );
    assert!(stalled.0 >= 1, "no commit was ever waiting: {stalled:?}");
    let answered = proposer
        .handle()
        .query(
            |driver| (driver.unwritten_batches(), driver.persist_stats().batches),
            QUERY_TIMEOUT,
        )
        .unwrap();
    assert!(answered.0 >= 1, "the commit still waits: {answered:?}");
    let durable_while_stalled = proposer
        .handle()
        .query(durable_head, QUERY_TIMEOUT)
        .unwrap();

    faults.release_syncs();
    let after = wait_for(&proposer, durable_head, |slot| {
        *slot > durable_while_stalled
    });
    assert!(
        after > durable_while_stalled,
        "nothing became durable after the release"
    );
    let unwritten = wait_for(&proposer, |d| d.unwritten_batches(), |left| *left == 0);
    assert_eq!(unwritten, 0);
    proposer.stop().unwrap();
}

/// Writes that keep failing: after the configured time the node stops on
/// its own, `run` returns an error that says why, and an ERROR line counts
/// the batches that were never written.
#[test]
fn a_store_failing_for_too_long_stops_the_node_with_an_error() {
    let dir = TempDir::new("zombie");
    let genesis = genesis(NETWORK_ID, now_ms() - SLOT_MS);
    let faults = DiskFaults::new();
    let options = DriverOptions {
        store_failing_exit_after: Duration::from_secs(2),
        faults: DriverFaults {
            disk: Some(Arc::clone(&faults)),
            clock_skew_ms: None,
            ..DriverFaults::default()
        },
        ..durable(dir.path())
    };
    let driver = bind(chain(&genesis, true, Vec::new()), 13, &options).unwrap();
    let peer = format!("{:?}", driver.peer_id());
    faults.fail_writes(u64::MAX);
    let started = StdInstant::now();
    let error = driver
        .spawn("zombie")
        .unwrap()
        .join()
        .expect_err("the node must stop with an error");
    let text = error.to_string();
    assert!(text.contains("refused writes for"), "{text}");
    assert!(started.elapsed() < DEADLINE);
    assert!(logged(
        log::Level::Error,
        &[&peer, "were never written to the block store"]
    ));
}

// ---- Damaged files ----

/// One bit flipped in a used page of a store file (redb preallocates, so
/// most of a fresh file is zeros nobody reads), over many seeds: the node
/// either starts on the whole chain or with the damaged blocks reported
/// and skipped, or refuses with a message naming the file and `--repair`.
/// With `--repair` it always starts. It never panics.
#[test]
fn bit_flips_in_the_store_never_panic() {
    const TRIALS: u64 = 200;
    const PAGE_BYTES: usize = 4096;
    let pristine = TempDir::new("flip-pristine");
    // A fixed genesis: the same file, so a seed names the same bit every run.
    let genesis = genesis(NETWORK_ID, 1_700_000_000_000);
    let blocks = signed_chain(&genesis, 40);
    store_blocks(pristine.path(), network_of(&genesis), &blocks);
    let bytes = std::fs::read(pristine.path().join(STORE_FILE_NAME)).unwrap();
    let used_pages: Vec<usize> = bytes
        .chunks(PAGE_BYTES)
        .enumerate()
        .filter(|(_, page)| page.iter().any(|byte| *byte != 0))
        .map(|(index, _)| index)
        .collect();
    let (mut whole, mut short, mut refused, mut repaired_short) = (0, 0, 0, 0);
    for seed in 1..=TRIALS {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut damaged = bytes.clone();
        let page = used_pages[(rng.next() % used_pages.len() as u64) as usize];
        let page_bits = (PAGE_BYTES.min(damaged.len() - page * PAGE_BYTES) * 8) as u64;
        let bit = (page * PAGE_BYTES * 8) as u64 + rng.next() % page_bits;
        damaged[(bit / 8) as usize] ^= 1 << (bit % 8);
        let dir = TempDir::new("flip");
        std::fs::write(dir.path().join(STORE_FILE_NAME), &damaged).unwrap();
        let open = std::panic::catch_unwind(|| {
            bind(chain(&genesis, false, Vec::new()), 14, &durable(dir.path())).map(|driver| {
                (
                    driver.node().chain().head().slot,
                    driver.node().resync_to_slot(),
                )
            })
        });
        match open {
            Err(_) => panic!("seed {seed}: bit {bit} made the node panic"),
            Ok(Ok((head, _))) if head == blocks.len() as u64 => whole += 1,
            Ok(Ok((head, hold))) => {
                // Started short of the stored head: it must know it.
                assert_eq!(hold, Some(blocks.len() as u64), "seed {seed}: head {head}");
                short += 1;
            }
            Ok(Err(error)) => {
                refused += 1;
                let text = error.to_string();
                assert!(
                    text.contains(STORE_FILE_NAME) && text.contains("--repair"),
                    "seed {seed}: {text}"
                );
                let repaired = std::panic::catch_unwind(|| {
                    let options = DriverOptions {
                        repair: true,
                        ..durable(dir.path())
                    };
                    bind(chain(&genesis, false, Vec::new()), 14, &options).map(|driver| {
                        (
                            driver.node().chain().head().slot,
                            driver.node().resync_to_slot(),
                        )
                    })
                });
                match repaired {
                    Err(_) => panic!("seed {seed}: repairing bit {bit} panicked"),
                    Ok(Err(error)) => panic!("seed {seed}: --repair refused: {error}"),
                    Ok(Ok((head, hold))) if head < blocks.len() as u64 => {
                        // It knows it lacks blocks above its head (as far
                        // as the damaged file still said).
                        assert!(
                            hold.is_some_and(|slot| slot > head),
                            "seed {seed}: head {head}, hold {hold:?}"
                        );
                        repaired_short += 1;
                    }
                    Ok(Ok(_)) => {}
                }
            }
        }
    }
    let caught = logged_count;
    eprintln!(
        "bit flips: {TRIALS} trials in {} used pages, no panic reached the node; {whole} \
         started whole, {short} started short (and knew it), {refused} refused (each then \
         started with --repair, {repaired_short} of them short and knowing it); redb panics \
         caught at the boundary: {} refusing to start, {} while repairing",
        used_pages.len(),
        caught("corrupt: the store library panicked"),
        caught("reading stopped: the store library panicked"),
    );
    assert_eq!(whole + short + refused, TRIALS);
    assert!(
        refused > 0,
        "no flip was detected: the check is not running"
    );
}

/// A block damaged on disk is reported and skipped; the node knows its
/// chain is incomplete and does not propose on it. Once a peer has given
/// it the missing range, it proposes again.
#[test]
fn a_node_does_not_propose_on_a_chain_it_knows_is_incomplete() {
    let dir = TempDir::new("incomplete");
    // Longer than the range-sync distance (32 slots), so peers' Status
    // alone starts the re-sync; within it, their next gossiped block would.
    let genesis = genesis(NETWORK_ID, now_ms() - 50 * SLOT_MS);
    let blocks = signed_chain(&genesis, 40);
    let mut damaged = blocks.clone();
    // Slot 3's block, stored with a byte of its body changed: its header
    // (and so its root) is intact, its body no longer matches it.
    damaged[2].body[0] ^= 0xff;
    store_blocks(dir.path(), network_of(&genesis), &damaged);

    let driver = bind(chain(&genesis, true, Vec::new()), 15, &durable(dir.path())).unwrap();
    let peer = format!("{:?}", driver.peer_id());
    assert_eq!(driver.node().chain().head().slot, 2);
    assert_eq!(driver.node().resync_to_slot(), Some(40));
    assert!(logged(
        log::Level::Error,
        &[&peer, "up to slot 40", "not producing"]
    ));
    assert!(logged(
        log::Level::Error,
        &["at slot 3 has a damaged body: skipped"]
    ));
    let node = driver.spawn("incomplete").unwrap();
    let held = wait_for(
        &node,
        |d| {
            let counters = d.node().counters();
            (
                counters.blocks_not_produced_unhealthy,
                counters.blocks_produced,
            )
        },
        |(held, _)| *held >= 3,
    );
    assert!(held.0 >= 3 && held.1 == 0, "{held:?}");

    // A peer with the whole chain: the node re-syncs, then proposes.
    let full = bind(
        chain(&genesis, false, blocks.clone()),
        16,
        &DriverOptions::default(),
    )
    .unwrap()
    .spawn("whole")
    .unwrap();
    node.handle()
        .command(Command::Dial {
            addr: full.local_addr(),
            peer: Some(full.peer_id()),
        })
        .unwrap();
    let produced = wait_for(
        &node,
        |d| {
            (
                d.node().resync_to_slot(),
                d.node().counters().blocks_produced,
                d.node().chain().head().slot,
            )
        },
        |(hold, produced, _)| hold.is_none() && *produced >= 1,
    );
    assert!(produced.0.is_none() && produced.1 >= 1, "{produced:?}");
    node.stop().unwrap();
    full.stop().unwrap();
}

/// Worker jobs that panic (a bug in our own verification code, injected
/// here) are not the peer's fault: the node blames nobody, fetches the
/// batches again and still syncs the whole chain from the one peer that
/// has it, which stays connected and unpenalised.
#[test]
fn a_worker_job_that_panics_blames_no_peer_and_sync_still_completes() {
    // Longer than the range-sync distance (32 slots): range sync, in batches.
    let genesis = genesis(NETWORK_ID, now_ms() - 50 * SLOT_MS);
    let blocks = signed_chain(&genesis, 40);
    let full = bind(
        chain(&genesis, false, blocks),
        17,
        &DriverOptions::default(),
    )
    .unwrap()
    .spawn("panics-server")
    .unwrap();
    let failing_jobs = Arc::new(AtomicU64::new(2));
    let options = DriverOptions {
        faults: DriverFaults {
            failing_jobs: Some(Arc::clone(&failing_jobs)),
            ..DriverFaults::default()
        },
        ..DriverOptions::default()
    };
    let node = bind(chain(&genesis, false, Vec::new()), 18, &options)
        .unwrap()
        .spawn("panics-syncer")
        .unwrap();
    let node_id = format!("{:?}", node.peer_id());
    node.handle()
        .command(Command::Dial {
            addr: full.local_addr(),
            peer: Some(full.peer_id()),
        })
        .unwrap();
    let server = full.peer_id();
    let (head, failed, penalties, connected) = wait_for(
        &node,
        move |d| {
            let node = d.node();
            (
                node.chain().head().slot,
                node.counters().work_failed,
                node.counters().sync_penalties,
                node.is_connected(&server),
            )
        },
        |(head, ..)| *head >= 40,
    );
    assert_eq!(head, 40);
    assert_eq!(failing_jobs.load(Ordering::Relaxed), 0, "both faults fired");
    assert_eq!(failed, 2, "each panicked job came back as failed work");
    assert_eq!(penalties, 0, "nobody is blamed for our own panic");
    assert!(connected, "the only peer with the chain is kept");
    assert!(logged(
        log::Level::Error,
        &[&node_id, "failed: job panicked", "fetches its blocks again"]
    ));
    node.stop().unwrap();
    full.stop().unwrap();
}

/// A node with discovery, its record naming its own (bound) port.
fn bind_discovering(
    genesis: &Genesis,
    seed: u64,
    options: &DriverOptions,
    bootnodes: Vec<(PeerId, SocketAddr)>,
) -> Driver {
    capture();
    let mut config = Config::new(NETWORK_ID);
    config.chain = chain(genesis, false, Vec::new());
    config.discovery = Some(DiscoveryConfig {
        // Port 0: the driver puts the bound port in its place.
        addresses: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        learn_address_port: None,
        allow_private: true,
        subnet_limits: true,
        bootnodes,
        peers_target: 4,
        record_seq: now_ms(),
    });
    Driver::bind_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
        options,
    )
    .unwrap()
}

fn table_len(driver: &RunningDriver) -> usize {
    wait_for(
        driver,
        |d| d.node().discovery().map_or(0, |found| found.table().len()),
        |len| *len >= 1,
    )
}

/// The peer store shares the blocks' file, so a full disk fails its
/// snapshot too: a WARN, never a store failure or a crash. The node stops
/// cleanly, the file still opens (holding no half-written snapshot), and
/// once there is room the next snapshot lands and reads back.
#[test]
fn a_peer_store_snapshot_on_a_full_disk_is_a_warning_and_the_next_one_lands() {
    let dir = TempDir::new("peerstore-full");
    let genesis = genesis(NETWORK_ID, now_ms());
    let known = bind_discovering(&genesis, 31, &DriverOptions::default(), Vec::new())
        .spawn("peerstore-known")
        .unwrap();
    let bootnode = vec![(known.peer_id(), known.local_addr())];
    let faults = DiskFaults::new();
    let options = DriverOptions {
        faults: DriverFaults {
            disk: Some(Arc::clone(&faults)),
            ..DriverFaults::default()
        },
        ..durable(dir.path())
    };
    let node = bind_discovering(&genesis, 32, &options, bootnode.clone())
        .spawn("peerstore-full")
        .unwrap();
    let node_id = format!("{:?}", node.peer_id());
    assert_eq!(table_len(&node), 1, "the bootnode is in the table");

    // Every write fails: the snapshot taken at shutdown is not saved.
    faults.fail_writes(u64::MAX);
    node.stop().unwrap();
    assert!(logged(
        log::Level::Warn,
        &[&node_id, "peer store not saved"]
    ));
    assert!(!logged(log::Level::Error, &[&node_id, "store_failing"]));
    faults.heal();
    let stored = BlockStore::open(dir.path()).unwrap().known_peers().unwrap();
    assert!(stored.records.is_empty(), "{stored:?}");

    // Room again: the next run's snapshot lands, with the peer's record.
    let node = bind_discovering(&genesis, 32, &options, bootnode)
        .spawn("peerstore-room")
        .unwrap();
    assert_eq!(table_len(&node), 1);
    node.stop().unwrap();
    let stored = BlockStore::open(dir.path()).unwrap().known_peers().unwrap();
    assert_eq!(stored.records.len(), 1, "{stored:?}");
    known.stop().unwrap();
}

// ---- The data directory ----

/// A data directory of another network is refused, naming both networks;
/// a zero-length store is reported as half-created, not taken as new.
#[test]
fn a_data_dir_knows_its_network_and_its_half_created_files() {
    let dir = TempDir::new("network");
    let ours = genesis(NETWORK_ID, now_ms());
    let other = genesis(NETWORK_ID + 1, now_ms());
    drop(bind(chain(&other, false, Vec::new()), 17, &durable(dir.path())).unwrap());
    let error = bind(chain(&ours, false, Vec::new()), 17, &durable(dir.path()))
        .err()
        .expect("another network's store is refused");
    let text = error.to_string();
    assert!(text.contains(&network_of(&other).to_string()), "{text}");
    assert!(text.contains(&network_of(&ours).to_string()), "{text}");
    assert!(text.contains("belongs to"), "{text}");
    // The same network opens.
    drop(bind(chain(&other, false, Vec::new()), 17, &durable(dir.path())).unwrap());

    let empty = TempDir::new("empty");
    std::fs::write(empty.path().join(STORE_FILE_NAME), b"").unwrap();
    let error = bind(chain(&ours, false, Vec::new()), 18, &durable(empty.path()))
        .err()
        .expect("a zero-length store is refused");
    let text = error.to_string();
    assert!(
        text.contains("0 bytes") && text.contains("never finished"),
        "{text}"
    );
    // --repair moves it aside and starts a new store.
    let options = DriverOptions {
        repair: true,
        ..durable(empty.path())
    };
    drop(bind(chain(&ours, false, Vec::new()), 18, &options).unwrap());
    assert!(empty
        .path()
        .join(format!("{STORE_FILE_NAME}.damaged-0"))
        .exists());
}

/// The store is deleted under a running proposer: within the file-check
/// interval it is `store_failing` (an ERROR line says the file was
/// deleted), stops producing, never recreates an empty store, and after
/// the configured time stops with an error.
#[test]
fn deleting_the_store_under_a_running_node_is_a_store_failure() {
    let dir = TempDir::new("deleted");
    let genesis = genesis(NETWORK_ID, now_ms() - SLOT_MS);
    let options = DriverOptions {
        store_failing_exit_after: Duration::from_secs(3),
        ..durable(dir.path())
    };
    let driver = bind(chain(&genesis, true, Vec::new()), 19, &options).unwrap();
    let peer = format!("{:?}", driver.peer_id());
    let node = driver.spawn("deleted").unwrap();
    let head = wait_for(&node, |d| d.node().status().head_slot, |slot| *slot >= 2);
    assert!(head >= 2);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let failing = wait_for(&node, |d| d.node().is_store_failing(), |failing| *failing);
    assert!(failing, "the deletion went unnoticed");
    assert!(logged(
        log::Level::Error,
        &[&peer, "store_failing", "was deleted"]
    ));
    let error = node.join().expect_err("the node stops with an error");
    assert!(error.to_string().contains("refused writes"), "{error}");
    assert!(
        !dir.path().join(STORE_FILE_NAME).exists(),
        "an empty store was created in place of the deleted one"
    );
}

// ---- The clock ----

/// The wall clock jumps a minute ahead under a running proposer, then is
/// set back: each jump is a WARN, the slot clock follows the wall clock,
/// and no slot is produced twice (the head's slot never goes backwards).
/// With `--clock-jump refuse` the node stops producing until the clock is back.
#[test]
fn a_clock_jump_is_warned_about_and_slots_never_go_backwards() {
    let genesis = genesis(NETWORK_ID, now_ms() - SLOT_MS);
    let skew = Arc::new(AtomicI64::new(0));
    let options = DriverOptions {
        workers: 1,
        faults: DriverFaults {
            disk: None,
            clock_skew_ms: Some(Arc::clone(&skew)),
            ..DriverFaults::default()
        },
        ..DriverOptions::default()
    };
    let driver = bind(chain(&genesis, true, Vec::new()), 20, &options).unwrap();
    let peer = format!("{:?}", driver.peer_id());
    let node = driver.spawn("clock").unwrap();
    let origin = |d: &Driver| (d.node().unix_ms_at_origin(), d.node().chain().head().slot);
    let (origin_before, head) = wait_for(&node, origin, |(_, slot)| *slot >= 2);
    assert!(head >= 2);

    skew.store(60_000, Ordering::SeqCst);
    let (origin_ahead, head_ahead) = wait_for(&node, origin, move |(at, slot)| {
        *at >= origin_before + 59_000 && *slot > head + 250
    });
    assert!(origin_ahead >= origin_before + 59_000, "not re-based");
    assert!(head_ahead > head + 250, "slots do not follow the new clock");
    assert!(logged(log::Level::Warn, &[&peer, "wall clock jumped by 6"]));

    // Set back: re-based again, and the slots already produced are not produced again.
    skew.store(0, Ordering::SeqCst);
    let (origin_back, _) = wait_for(&node, origin, move |(at, _)| *at + 59_000 <= origin_ahead);
    assert!(origin_back + 59_000 <= origin_ahead, "not re-based back");
    let produced = node
        .handle()
        .query(|d| d.node().counters().blocks_produced, QUERY_TIMEOUT)
        .unwrap();
    // Ten real slots pass (by the node's own monotonic clock): none is produced again.
    let start_micros = node
        .handle()
        .query(|d| d.now().as_micros(), QUERY_TIMEOUT)
        .unwrap();
    let (head_after, produced_later, at_micros) = wait_for(
        &node,
        |d| {
            (
                d.node().chain().head().slot,
                d.node().counters().blocks_produced,
                d.now().as_micros(),
            )
        },
        move |(_, _, at)| *at >= start_micros + 10 * SLOT_MS * 1_000,
    );
    assert!(at_micros >= start_micros + 10 * SLOT_MS * 1_000);
    assert!(head_after >= head_ahead, "the head went backwards");
    assert_eq!(produced_later, produced, "a slot was produced twice");
    node.stop().unwrap();
}

/// With `--clock-jump refuse`, a jump stops production (a WARN says why)
/// until the clock is back where it was.
#[test]
fn a_node_told_to_refuse_does_not_produce_on_a_jumped_clock() {
    let genesis = genesis(NETWORK_ID, now_ms() - SLOT_MS);
    let skew = Arc::new(AtomicI64::new(0));
    let options = DriverOptions {
        workers: 1,
        clock: ClockPolicy::Refuse,
        faults: DriverFaults {
            disk: None,
            clock_skew_ms: Some(Arc::clone(&skew)),
            ..DriverFaults::default()
        },
        ..DriverOptions::default()
    };
    let driver = bind(chain(&genesis, true, Vec::new()), 21, &options).unwrap();
    let peer = format!("{:?}", driver.peer_id());
    let node = driver.spawn("refuse").unwrap();
    let counters = |d: &Driver| {
        let counters = d.node().counters();
        (
            counters.blocks_produced,
            counters.blocks_not_produced_unhealthy,
        )
    };
    let (produced, _) = wait_for(&node, counters, |(produced, _)| *produced >= 2);
    assert!(produced >= 2);
    skew.store(-30_000, Ordering::SeqCst);
    let (_, held) = wait_for(&node, counters, |(_, held)| *held >= 3);
    assert!(held >= 3, "it went on producing");
    assert!(logged(
        log::Level::Warn,
        &[&peer, "not producing until it is back"]
    ));
    let (produced_held, _) = node.handle().query(counters, QUERY_TIMEOUT).unwrap();
    skew.store(0, Ordering::SeqCst);
    let (produced_again, _) = wait_for(&node, counters, move |(produced, _)| {
        *produced >= produced_held + 2
    });
    assert!(
        produced_again >= produced_held + 2,
        "it never produced again"
    );
    node.stop().unwrap();
}

/// A proposer whose clock runs a minute ahead: its follower drops its
/// blocks as from the future, counts them, and a WARN names the proposer.
#[test]
fn blocks_from_the_future_are_warned_about_naming_the_sender() {
    let genesis = genesis(NETWORK_ID, now_ms() + 1_000 - SLOT_MS);
    let skew = Arc::new(AtomicI64::new(60_000));
    let options = DriverOptions {
        workers: 1,
        faults: DriverFaults {
            disk: None,
            clock_skew_ms: Some(skew),
            ..DriverFaults::default()
        },
        ..DriverOptions::default()
    };
    let proposer = bind(chain(&genesis, true, Vec::new()), 22, &options)
        .unwrap()
        .spawn("ahead")
        .unwrap();
    let follower = bind(
        chain(&genesis, false, Vec::new()),
        23,
        &DriverOptions::default(),
    )
    .unwrap()
    .spawn("on-time")
    .unwrap();
    let follower_id = format!("{:?}", follower.peer_id());
    let proposer_id = format!("{:?}", proposer.peer_id());
    follower
        .handle()
        .command(Command::Dial {
            addr: proposer.local_addr(),
            peer: Some(proposer.peer_id()),
        })
        .unwrap();
    let future = wait_for(
        &follower,
        |d| d.node().counters().blocks_from_future,
        |count| *count >= 2,
    );
    assert!(future >= 2, "{future} blocks from the future counted");
    let _ = follower_id;
    assert!(logged(log::Level::Warn, &[&proposer_id, "from the future"]));
    follower.stop().unwrap();
    proposer.stop().unwrap();
}

// ---- Start-up, as the operator of `meshsync node` sees it ----

/// How `meshsync node` ended, and what it wrote to stderr.
struct Refusal {
    status: std::process::ExitStatus,
    stderr: String,
}

/// Runs `meshsync node` on the default devnet genesis of [`NETWORK_ID`]
/// with `extra` arguments, expecting it to refuse to start: it is killed,
/// and the test fails, if it is still running at the deadline.
fn node_refusal(dir: &Path, listen: SocketAddr, extra: &[&str]) -> Refusal {
    let key = dir.join("node.key");
    if !key.exists() {
        // Written as an operator writes it: key files are the binary's to write.
        let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_meshsync"))
            .args(["keygen", "--out"])
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(keygen.success(), "meshsync keygen failed: {keygen}");
    }
    // A file, not a pipe: nobody has to read it while the node runs.
    let stderr_path = dir.join("stderr.txt");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshsync"))
        .args(["node", "--listen", &listen.to_string(), "--network"])
        .arg(NETWORK_ID.to_string())
        .arg("--key")
        .arg(&key)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = StdInstant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if StdInstant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the node started instead of refusing: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    eprintln!("{stderr}");
    Refusal { status, stderr }
}

/// The default genesis of `meshsync node --network NETWORK_ID`.
fn binary_genesis() -> Genesis {
    ChainConfig::devnet(NETWORK_ID).genesis.as_ref().clone()
}

/// A busy port fails at once and says so, naming the address, before the
/// store is read: with a store of 64 blocks no "blocks loaded" line comes
/// first, and with a damaged store the error is still the port's (were the
/// store read first, it would be the store's) and the file is untouched.
#[test]
fn a_busy_port_fails_before_the_store_is_read_and_names_the_address() {
    let dir = TempDir::new("busy-port");
    let data_dir = dir.path().join("data");
    let genesis = binary_genesis();
    store_blocks(&data_dir, network_of(&genesis), &signed_chain(&genesis, 64));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();

    let refusal = node_refusal(
        dir.path(),
        address,
        &["--data-dir", data_dir.to_str().unwrap()],
    );
    assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
    let expected = format!("error: cannot start the node: network: cannot listen on {address}: ");
    assert!(refusal.stderr.contains(&expected), "{}", refusal.stderr);
    assert!(refusal.stderr.contains("--listen"), "{}", refusal.stderr);
    assert!(
        !refusal.stderr.contains("blocks loaded"),
        "{}",
        refusal.stderr
    );
    assert!(!refusal.stderr.contains("store:"), "{}", refusal.stderr);

    let damaged = TempDir::new("busy-port-damaged");
    let store_file = damaged.path().join(STORE_FILE_NAME);
    std::fs::write(&store_file, [0xa5; 1_000]).unwrap();
    let refusal = node_refusal(
        damaged.path(),
        address,
        &["--data-dir", damaged.path().to_str().unwrap(), "--repair"],
    );
    assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
    assert!(refusal.stderr.contains(&expected), "{}", refusal.stderr);
    assert!(
        !refusal.stderr.contains("block store"),
        "{}",
        refusal.stderr
    );
    // --repair was given, but nothing was moved aside: the store was never opened.
    assert_eq!(std::fs::read(&store_file).unwrap(), vec![0xa5; 1_000]);
    drop(taken);
}

/// A missing or foreign proposer key is reported as the key's, a missing
/// genesis as the genesis's: the operator is sent to the right file.
#[test]
fn a_key_or_genesis_error_at_start_names_its_own_file() {
    let free = SocketAddr::from(([127, 0, 0, 1], 0));
    let dir = TempDir::new("start-files");
    let missing_key = dir.path().join("proposer-missing.key");
    let missing_genesis = dir.path().join("genesis-missing.toml");
    let cases = [
        ("--proposer-key", &missing_key, "key", "genesis:"),
        ("--genesis", &missing_genesis, "genesis", "key:"),
    ];
    for (flag, missing, named, not_named) in cases {
        let refusal = node_refusal(dir.path(), free, &[flag, missing.to_str().unwrap()]);
        assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
        let expected = format!(
            "error: cannot start the node: {named}: {}",
            missing.display()
        );
        assert!(refusal.stderr.contains(&expected), "{}", refusal.stderr);
        assert!(!refusal.stderr.contains(not_named), "{}", refusal.stderr);
    }
}

/// A store the node cannot use is reported as the store's, naming the file
/// and what to do, never as a network problem: a half-created file (with
/// --repair as the way out), and another network's store.
#[test]
fn a_store_error_at_start_names_the_file_not_the_network() {
    let free = SocketAddr::from(([127, 0, 0, 1], 0));
    let half = TempDir::new("start-half");
    let store_file = half.path().join(STORE_FILE_NAME);
    std::fs::write(&store_file, b"").unwrap();
    let refusal = node_refusal(
        half.path(),
        free,
        &["--data-dir", half.path().to_str().unwrap()],
    );
    assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
    let expected = format!(
        "error: cannot start the node: store: block store {} is 0 bytes",
        store_file.display()
    );
    assert!(refusal.stderr.contains(&expected), "{}", refusal.stderr);
    assert!(refusal.stderr.contains("--repair"), "{}", refusal.stderr);
    assert!(!refusal.stderr.contains("network:"), "{}", refusal.stderr);
    assert!(!refusal.stderr.contains("listen"), "{}", refusal.stderr);

    let other = TempDir::new("start-other");
    let theirs = genesis(NETWORK_ID + 1, now_ms());
    store_blocks(other.path(), network_of(&theirs), &signed_chain(&theirs, 4));
    let refusal = node_refusal(
        other.path(),
        free,
        &["--data-dir", other.path().to_str().unwrap()],
    );
    assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
    let expected = format!(
        "error: cannot start the node: store: block store {} belongs to {}",
        other.path().join(STORE_FILE_NAME).display(),
        network_of(&theirs)
    );
    assert!(refusal.stderr.contains(&expected), "{}", refusal.stderr);
    assert!(refusal.stderr.contains("--data-dir"), "{}", refusal.stderr);
    assert!(!refusal.stderr.contains("listen"), "{}", refusal.stderr);
}
