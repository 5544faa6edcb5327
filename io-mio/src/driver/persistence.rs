//! The block store: opening (and repairing) it and loading its blocks at
//! start-up, writing the core's persist batches in order, and its health:
//! `store_failing`, reopening with backoff, the periodic file check, and
//! stopping after a store has failed too long.

use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::chain::block::body_root;
use meshsync_core::chain::{Root, SignedBlock};
use meshsync_core::peerstore::KnownPeers;
use meshsync_core::work::{BlockRead, PersistBatch};
use meshsync_core::{Health, Input};

use crate::store::{BlockStore, StoreError, StoreOptions};

use super::store_thread::{StoreDone, StoreJob, StoreThread, FILE_CHECK_CONTEXT};
use super::Driver;

/// A commit slower than this is logged as a warning: the blocks wait that
/// long to be announced (the commit itself runs on the store thread).
pub const PERSIST_COMMIT_SLOW: Duration = Duration::from_millis(100);
/// After a failed commit, how long before the store is first reopened and
/// the waiting batches are tried again; each further failure doubles it.
pub const STORE_REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two reopen attempts of a failing store (each
/// attempt re-verifies the whole file, and logs one WARN).
pub const STORE_REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a store may refuse writes before the node stops, by default.
pub const STORE_FAILING_EXIT_AFTER_DEFAULT: Duration = Duration::from_secs(300);
/// How often the store file's identity is checked (deleted or replaced?).
pub const STORE_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// At exit, how long the driver waits for the store thread to write what
/// waits (a commit takes milliseconds; a stuck disk is given up on).
pub const STORE_EXIT_WAIT: Duration = Duration::from_secs(10);

impl Driver {
    /// At exit: waits for what the store thread is writing, then tries the
    /// rest once more, each in turn, and says (ERROR line, and its text for
    /// `run`'s error) what could not be written.
    pub(super) fn report_unwritten(&mut self) -> Option<String> {
        let deadline = StdInstant::now() + STORE_EXIT_WAIT;
        if self.store.is_some() {
            if !self.unwritten.is_empty() && !self.store_open && !self.store_reopening {
                self.persist_retry_at = None;
                self.reopen_store();
            }
            self.write_next();
            while self.commit_in_flight || self.store_reopening {
                let Some(done) = self.store.as_ref().and_then(|s| s.recv_until(deadline)) else {
                    break;
                };
                // A failure now schedules a retry that never comes: the
                // loop below ends and the rest is reported.
                self.on_store_done(done);
            }
            if let Some(store) = self.store.as_mut() {
                store.join();
            }
            // What the thread finished meanwhile (a last peer store
            // snapshot, say) is logged and counted like any answer.
            self.drain_store();
        }
        if self.unwritten.is_empty() && !self.commit_in_flight {
            return None;
        }
        let blocks: usize = self.unwritten.iter().map(|batch| batch.blocks.len()).sum();
        let text = format!(
            "{} persist batches ({blocks} blocks) were never written to the block store: \
             this node lost them (peers that got them still hold them)",
            self.unwritten_batches()
        );
        log::error!("[{:?}] {text}", self.peer_id);
        Some(text)
    }

    /// Replaces the peer store with `known`, in one transaction on the
    /// store thread. Nothing is acknowledged, and a failure is a WARN
    /// without `store_failing`: the next snapshot (60 s later, or at
    /// shutdown) tries again, and the block batches' own writes decide the
    /// store's health.
    pub(super) fn persist_peers(&mut self, known: KnownPeers) {
        if let (Some(store), true, false) =
            (self.store.as_ref(), self.store_open, self.peers_saving)
        {
            // A snapshot the thread cannot take (or one sent while the last
            // still waits on a hanging disk) is the next one's to make.
            self.peers_saving = store.send(StoreJob::SavePeers(Box::new(known))).is_ok();
        }
    }

    /// Writes `batch` durably (or, memory-only, does not) and tells the core.
    ///
    /// The commit runs on the store thread, one batch at a time in the
    /// core's order; `Input::Persisted` follows its answer. Its latency is
    /// measured ([`PersistStats`]; slower than [`PERSIST_COMMIT_SLOW`] is
    /// logged) but no longer stalls the loop.
    pub(super) fn persist(&mut self, batch: PersistBatch) {
        if !self.is_durable() {
            if !self.warned_not_durable {
                self.warned_not_durable = true;
                log::warn!(
                    "[{:?}] no data directory: blocks are kept in memory only and lost on exit",
                    self.peer_id
                );
            }
            self.persist_stats.batches += 1;
            self.feed(Input::Persisted { id: batch.id });
            return;
        }
        self.unwritten.push_back(batch);
        self.write_next();
    }

    /// Reads finalized history back for the core (`Action::ReadBlocks`) on
    /// the store thread; its answer becomes `Input::BlocksRead`. Without an
    /// open store nothing is read and the read is reported incomplete.
    pub(super) fn read_blocks(&mut self, read: BlockRead) {
        let job = match (self.store.as_ref(), self.store_open) {
            (Some(store), true) => store.send(StoreJob::Read(read)),
            _ => Err(StoreJob::Read(read)),
        };
        if let Err(StoreJob::Read(read)) = job {
            self.feed(Input::BlocksRead {
                id: read.id,
                blocks: Vec::new(),
                complete: false,
            });
        }
    }

    /// Hands the next waiting batch to the store thread, unless one is
    /// being written, the store is closed, or a retry is scheduled.
    fn write_next(&mut self) {
        if self.commit_in_flight || !self.store_open || self.persist_retry_at.is_some() {
            return;
        }
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let Some(batch) = self.unwritten.pop_front() else {
            return;
        };
        match store.send(StoreJob::Commit(Box::new(batch))) {
            Ok(()) => self.commit_in_flight = true,
            Err(StoreJob::Commit(batch)) => {
                // The thread is gone (reported at exit) or, unexpectedly,
                // its queue is full: try again in a moment.
                self.unwritten.push_front(*batch);
                self.persist_retry_at = Some(StdInstant::now() + STORE_REOPEN_BACKOFF_MIN);
            }
            Err(_) => unreachable!("send gives back the job it was given"),
        }
    }

    /// Takes every answer the store thread has ready.
    pub(super) fn drain_store(&mut self) {
        while let Some(done) = self.store.as_ref().and_then(StoreThread::try_recv) {
            self.on_store_done(done);
        }
    }

    fn on_store_done(&mut self, done: StoreDone) {
        match done {
            StoreDone::Committed {
                id,
                blocks,
                deleted,
                took,
            } => {
                self.commit_in_flight = false;
                if let Some(metrics) = self.observer.metrics() {
                    metrics.observe_store_commit(took);
                }
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                let stats = &mut self.persist_stats;
                stats.batches += 1;
                stats.blocks += blocks as u64;
                stats.deleted += deleted as u64;
                stats.commit_micros_total = stats.commit_micros_total.saturating_add(micros);
                stats.commit_micros_max = stats.commit_micros_max.max(micros);
                if took > PERSIST_COMMIT_SLOW {
                    log::warn!(
                        "[{:?}] persist batch {id} took {} ms",
                        self.peer_id,
                        took.as_millis()
                    );
                } else {
                    log::debug!(
                        "[{:?}] persist batch {id} ({blocks} blocks, {deleted} deleted) in {micros} µs",
                        self.peer_id,
                    );
                }
                self.feed(Input::Persisted { id });
                if self.unwritten.is_empty() {
                    self.store_recovered();
                }
                self.write_next();
            }
            StoreDone::Failed {
                context,
                cause,
                batch,
            } => {
                if let Some(batch) = batch {
                    self.commit_in_flight = false;
                    self.persist_stats.failures += 1;
                    self.unwritten.push_front(*batch);
                }
                if context == FILE_CHECK_CONTEXT {
                    self.store_check_pending = false;
                }
                self.store_reopening = false;
                self.store_failed(&context, &cause);
            }
            StoreDone::Read {
                id,
                blocks,
                complete,
            } => {
                self.persist_stats.reads += 1;
                self.persist_stats.blocks_read += blocks.len() as u64;
                self.feed(Input::BlocksRead {
                    id,
                    blocks,
                    complete,
                });
            }
            StoreDone::FileChecked => self.store_check_pending = false,
            StoreDone::PeersSaved { records, result } => {
                self.peers_saving = false;
                match result {
                    Ok(()) => {
                        self.persist_stats.peer_snapshots += 1;
                        self.persist_stats.peer_records = records as u64;
                    }
                    Err(error) => {
                        self.persist_stats.peer_snapshot_failures += 1;
                        log::warn!("[{:?}] peer store not saved: {error}", self.peer_id);
                    }
                }
            }
            StoreDone::Reopened(path) => {
                log::info!(
                    "[{:?}] block store {} reopened",
                    self.peer_id,
                    path.display()
                );
                self.persist_stats.reopened += 1;
                self.store_open = true;
                self.store_reopening = false;
                if self.unwritten.is_empty() && !self.commit_in_flight {
                    self.store_recovered();
                }
                self.write_next();
            }
        }
    }

    /// The retry time after a failure has come: reopen the store (the
    /// waiting batches follow once it is open).
    pub(super) fn retry_store(&mut self) {
        self.persist_retry_at = None;
        if !self.store_open && !self.store_reopening {
            self.reopen_store();
        } else {
            self.write_next();
        }
    }

    fn reopen_store(&mut self) {
        if let Some(store) = self.store.as_ref() {
            self.store_reopening = store.send(StoreJob::Reopen).is_ok();
        }
    }

    /// The store refused and its thread closed it: tell the core, and
    /// schedule a reopen.
    fn store_failed(&mut self, context: &str, cause: &str) {
        self.store_open = false;
        let retry_in = self.store_backoff;
        self.persist_retry_at = Some(StdInstant::now() + retry_in);
        self.store_backoff = (self.store_backoff * 2).min(STORE_REOPEN_BACKOFF_MAX);
        let waiting = self.unwritten_batches();
        match self.store_failing_since {
            None => {
                self.store_failing_since = Some(StdInstant::now());
                log::error!(
                    "[{:?}] store_failing: {context} failed: {cause}; not producing or \
                     forwarding blocks; {waiting} batches wait; reopening the store in {retry_in:?}",
                    self.peer_id,
                );
                self.feed(Input::Health(Health::StoreFailing));
            }
            Some(since) => log::warn!(
                "[{:?}] store_failing for {} s: {context} failed: {cause}; {waiting} batches \
                 wait; reopening in {retry_in:?}",
                self.peer_id,
                since.elapsed().as_secs(),
            ),
        }
    }

    /// Every waiting batch is written: leave `store_failing` if in it.
    fn store_recovered(&mut self) {
        let Some(since) = self.store_failing_since.take() else {
            return;
        };
        self.store_backoff = STORE_REOPEN_BACKOFF_MIN;
        log::info!(
            "[{:?}] the block store writes again after {} s of store_failing",
            self.peer_id,
            since.elapsed().as_secs()
        );
        self.feed(Input::Health(Health::StoreWriting));
    }

    /// Checks the store file now and then; stops the driver if the store
    /// has failed for too long.
    pub(super) fn watch_store(&mut self) {
        let now = StdInstant::now();
        if let Some(since) = self.store_failing_since {
            if self.exit_error.is_none()
                && now.saturating_duration_since(since) >= self.store_failing_exit_after
            {
                let text = format!(
                    "the block store has refused writes for {} s (limit {} s): stopping",
                    now.saturating_duration_since(since).as_secs(),
                    self.store_failing_exit_after.as_secs()
                );
                log::error!("[{:?}] {text}", self.peer_id);
                self.exit_error = Some(text);
                self.shutdown();
            }
            return;
        }
        if now < self.store_check_at {
            return;
        }
        self.store_check_at = now + STORE_FILE_CHECK_INTERVAL;
        if let (Some(store), true, false) = (
            self.store.as_ref(),
            self.store_open,
            self.store_check_pending,
        ) {
            // One check at a time: a hanging disk must not pile them up.
            self.store_check_pending = store.send(StoreJob::CheckFile).is_ok();
        }
    }
}

/// Opens the store for [`Driver::bind_with`]; with `repair`, a damaged or
/// half-created file is moved aside and what can be read of it kept.
pub(super) fn open_store(
    dir: &Path,
    options: &StoreOptions,
    repair: bool,
    slot_now: u64,
) -> Result<BlockStore, StoreError> {
    match BlockStore::open_with(dir, options) {
        Err(error @ (StoreError::Corrupt { .. } | StoreError::HalfCreated { .. })) if repair => {
            log::warn!("{error}: repairing");
            let report = BlockStore::repair(dir, options, slot_now)?;
            log::warn!(
                "block store repaired: the damaged file is now {}; {} blocks kept{}; the rest \
                 is re-synced from peers",
                report
                    .moved_to
                    .as_deref()
                    .map_or_else(|| "gone".to_string(), |path| path.display().to_string()),
                report.blocks_kept,
                report
                    .stopped
                    .map(|why| format!(" (reading stopped: {why})"))
                    .unwrap_or_default()
            );
            BlockStore::open_with(dir, options)
        }
        result => result,
    }
}

/// What [`load_blocks`] found.
pub(super) struct LoadedBlocks {
    /// Every block that decodes under its own root, in (slot, root) order.
    pub(super) blocks: Vec<SignedBlock>,
    /// Blocks skipped as undecodable or stored under the wrong root.
    pub(super) skipped: u64,
    /// The highest slot of any stored block, skipped or not.
    pub(super) slot_max: u64,
}

/// Loads the stored chain from its finalized block up, so start-up reads
/// and holds the unfinalized part only, whatever the chain's length, and
/// returns it with that block's root (the core's history anchor). First
/// indexes the finalized chain if the store predates the index (a walk
/// over the stored history, once). Falls back to loading every block
/// (and no anchor) when there is no finalized block yet, or it does not
/// load: the core then rebuilds what it can from the genesis up.
pub(super) fn load_from_finalized(
    store: &mut BlockStore,
) -> Result<(LoadedBlocks, Option<Root>), StoreError> {
    let indexed = store.index_finalized_chain(|bytes| {
        SignedBlock::decode(bytes)
            .ok()
            .map(|block| block.parent_root())
    })?;
    if indexed > 1 {
        log::info!(
            "block store {}: indexed {indexed} finalized blocks by slot",
            store.path().display()
        );
    }
    let Some((anchor, slot)) = store.finalized()?.filter(|&(_, slot)| slot > 0) else {
        return Ok((load_blocks(store, 0)?, None));
    };
    let loaded = load_blocks(store, slot)?;
    if loaded.blocks.iter().any(|block| block.root() == anchor) {
        return Ok((loaded, Some(anchor)));
    }
    log::warn!(
        "block store {}: the finalized block {anchor} at slot {slot} did not load: loading \
         every stored block",
        store.path().display()
    );
    Ok((load_blocks(store, 0)?, None))
}

/// The stored block `bytes` under `root` at `slot`, decoded, if it decodes
/// to a block with that root and an intact body; the damage is logged if not.
/// `then` says what the caller does about damage, for the log line.
pub(super) fn decode_stored(
    store: &BlockStore,
    root: Root,
    slot: u64,
    bytes: &[u8],
    then: &str,
) -> Option<SignedBlock> {
    let path = store.path().display();
    match SignedBlock::decode(bytes) {
        // The root covers the header only: a body damaged on disk (the core
        // trusts stored blocks, it verified them once) is caught by its hash.
        Ok(block) if block.root() == root && body_root(&block.body) != block.header.body_root => {
            log::error!(
                "block store {path}: block {root} at slot {slot} has a damaged body: {then}"
            );
            None
        }
        Ok(block) if block.root() == root => Some(block),
        Ok(block) => {
            log::error!(
                "block store {path}: block at slot {slot} is stored under the wrong root ({}): {then}",
                block.root()
            );
            None
        }
        Err(error) => {
            log::error!(
                "block store {path}: block {root} at slot {slot} does not decode ({error})"
            );
            None
        }
    }
}

/// Every block in the store from `from_slot` up that decodes (and whose
/// root is the one it is stored under), in (slot, root) order, how many
/// were skipped, and the highest stored slot.
pub(super) fn load_blocks(store: &BlockStore, from_slot: u64) -> Result<LoadedBlocks, StoreError> {
    let mut blocks = Vec::new();
    let mut skipped = 0;
    let mut slot_max = 0;
    store.for_each_block_from(from_slot, |root, slot, bytes| {
        slot_max = slot_max.max(slot);
        match decode_stored(store, root, slot, bytes, "skipped") {
            Some(block) => blocks.push(block),
            None => skipped += 1,
        }
    })?;
    // A repaired store knows how far the damaged one reached.
    slot_max = slot_max.max(store.incomplete_to_slot()?);
    Ok(LoadedBlocks {
        blocks,
        skipped,
        slot_max,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use meshsync_core::chain::{ProposerPublicKey, Root, SigningWatermark};
    use meshsync_core::{Config, Identity};

    use super::super::clock::unix_ms;
    use super::*;
    use crate::driver::{DriverOptions, StartError};
    use crate::store::StoreNetwork;

    /// A lone proposer with a data directory: its blocks are committed to
    /// the store (and only then acknowledged), and a driver bound again on
    /// the same directory starts at the same head. The genesis starts now,
    /// so blocks appear only if the core's clock is the wall clock
    /// (`unix_ms_at_origin`).
    #[test]
    fn a_durable_driver_comes_back_at_its_head() {
        use meshsync_core::chain::{devnet_keys, ChainConfig, ProposerKey};
        let dir = crate::testing::TempDir::new("driver-store");
        let genesis_time_ms = unix_ms(SystemTime::now());
        let chain = |proposer: bool| {
            let genesis = crate::testing::devnet_genesis(3, 1, 100, genesis_time_ms).unwrap();
            let mut config = Config::new(3);
            config.chain = ChainConfig {
                genesis: Arc::new(genesis),
                stored: Arc::from(Vec::new()),
                history_anchor: None,
                proposer_keys: if proposer {
                    vec![ProposerKey(Arc::new(devnet_keys(3, 1).remove(0)))]
                } else {
                    Vec::new()
                },
                signed_slots: Vec::new(),
                body_bytes: 64,
                follow_gossip: true,
            };
            config
        };
        let options = DriverOptions {
            workers: 1,
            data_dir: Some(dir.path().to_path_buf()),
            ..DriverOptions::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut driver = Driver::bind_with(
            loopback,
            chain(true),
            Identity::from_seed(5),
            [5; 32],
            &options,
        )
        .unwrap();
        let deadline = StdInstant::now() + Duration::from_secs(20);
        // Three blocks written and the head durable. (Not "head slot 3": on
        // a loaded machine a 100 ms slot can pass with no block.)
        let reached = driver
            .run_until(
                |driver| {
                    driver.persist_stats().blocks >= 3
                        && driver.node().status().head_root == driver.node().chain().head().root
                },
                deadline,
            )
            .unwrap();
        assert!(reached, "{:?}", driver.node().chain().head());
        let head = driver.node().chain().head();
        assert_eq!(driver.node().status().head_root, head.root);
        let stats = driver.persist_stats();
        assert_eq!(stats.failures, 0);
        // Each block's batch follows its own signing watermark's batch (and
        // one watermark may still wait for its block).
        assert!(
            stats.batches >= 2 && stats.batches <= 2 * stats.blocks + 1,
            "{stats:?}"
        );
        drop(driver);

        let again = Driver::bind_with(
            loopback,
            chain(false),
            Identity::from_seed(5),
            [5; 32],
            &options,
        )
        .unwrap();
        assert_eq!(again.node().chain().head(), head);
        assert_eq!(again.persist_stats().loaded, stats.blocks);
        drop(again);

        // The proposer's watermark came back from the store, at or above
        // its head (a watermark may be ahead of a block it never wrote).
        let proposer = Driver::bind_with(
            loopback,
            chain(true),
            Identity::from_seed(5),
            [5; 32],
            &options,
        )
        .unwrap();
        let key = ProposerPublicKey::of(&devnet_keys(3, 1)[0]);
        let watermark = proposer.node().signing_watermark(&key).unwrap();
        assert!(watermark >= head.slot, "{watermark} below {head:?}");
    }

    /// A store holding blocks a proposer key signed, but no watermark for
    /// it (the key moved here without one): refused, naming the key's
    /// index and slot and the way out; started with the flag, the key
    /// still never signs at or below its stored blocks.
    #[test]
    fn a_key_without_its_watermark_is_refused_where_it_signed_blocks() {
        use meshsync_core::chain::{devnet_keys, signed_chain, ChainConfig, ProposerKey};
        let dir = crate::testing::TempDir::new("driver-watermark");
        let genesis = Arc::new(crate::testing::devnet_genesis(3, 1, 100, 0).unwrap());
        let keys = devnet_keys(3, 1);
        let blocks = signed_chain(&genesis, &keys, genesis.root(), 1, 4, 32);
        {
            let mut store = BlockStore::open_with(
                dir.path(),
                &StoreOptions {
                    network: Some(StoreNetwork {
                        network_id: 3,
                        genesis_root: genesis.root(),
                    }),
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let encoded: Vec<(Root, u64, Vec<u8>)> = blocks
                .iter()
                .map(|block| (block.root(), block.slot(), block.encode()))
                .collect();
            let rows: Vec<(Root, u64, &[u8])> = encoded
                .iter()
                .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
                .collect();
            store.persist(&rows, None).unwrap();
        }
        let config = |proposer: bool| {
            let mut config = Config::new(3);
            config.chain = ChainConfig {
                genesis: genesis.clone(),
                stored: Arc::from(Vec::new()),
                history_anchor: None,
                proposer_keys: if proposer {
                    vec![ProposerKey(Arc::new(keys[0].clone()))]
                } else {
                    Vec::new()
                },
                signed_slots: Vec::new(),
                body_bytes: 64,
                follow_gossip: true,
            };
            config
        };
        let mut options = DriverOptions {
            workers: 1,
            data_dir: Some(dir.path().to_path_buf()),
            ..DriverOptions::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = |proposer: bool, options: &DriverOptions| {
            Driver::bind_with(
                loopback,
                config(proposer),
                Identity::from_seed(6),
                [6; 32],
                options,
            )
        };
        // A follower has nothing to sign: no refusal.
        drop(bind(false, &options).unwrap());
        let Err(error) = bind(true, &options) else {
            panic!("a key without its watermark started");
        };
        let text = error.to_string();
        assert!(
            matches!(
                error,
                StartError::Watermark {
                    proposer_index: 0,
                    slot: 4,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.starts_with("watermark: "), "{text}");
        assert!(text.contains("--accept-fresh-watermark"), "{text}");
        assert!(text.contains("meshsync watermark import"), "{text}");

        options.accept_fresh_watermark = true;
        let driver = bind(true, &options).unwrap();
        let key = ProposerPublicKey::of(&keys[0]);
        assert_eq!(driver.node().signing_watermark(&key), Some(4));
        drop(driver);

        // Once the key has a watermark in the store, it starts without the flag.
        let mut store = BlockStore::open(dir.path()).unwrap();
        store
            .raise_watermarks(&[SigningWatermark {
                proposer: key,
                slot: 4,
            }])
            .unwrap();
        drop(store);
        options.accept_fresh_watermark = false;
        drop(bind(true, &options).unwrap());
    }
}
