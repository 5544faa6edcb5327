//! The durable block store: where `Action::Persist` lands and where the
//! chain comes back from at start-up.
//!
//! # Design
//! One redb file, `DIR/blocks.redb`. To the store a block is opaque bytes
//! named by its 32-byte root and its slot; decoding and verifying them is the
//! core's job once they are fed back in. The tables:
//!
//! | table | key | value | why |
//! | --- | --- | --- | --- |
//! | `blocks_v1` | (slot u64, root) | block bytes | iteration order is (slot, root): the core re-imports parents before children without a sort |
//! | `slot_by_root_v1` | root | slot u64 | find (and delete) a block by root alone |
//! | `finalized_chain_v1` | slot u64 | root | the finalized chain by slot (the finalized block's ancestors, which never change): ranges of history the core no longer holds in memory are read through it ([`BlockStore::read_finalized_chain`]) |
//! | `meta_v1` | name | bytes | `finalized` (root ‖ slot BE, 40 bytes), `block_bytes` (u64 BE), `network` (network id BE ‖ genesis root, 40 bytes) |
//! | `signing_watermarks_v1` | proposer public key (48 bytes, compressed BLS) | slot u64 | the highest slot each of our keys signed: the core signs a slot only once this is durable, and never at or below it again |
//! | `peer_records_v1` | peer id (32 bytes) | (last seen, Unix ms u64; signed record bytes) | the peer store: peers we met, dialled at the next start without bootnodes; the core verifies each record when it loads it |
//! | `peer_scores_v1` | peer id | (score in millionths i64; taken at, Unix ms u64; last IP: 0, 4 or 16 bytes) | scores keep decaying over the time the node is down |
//! | `peer_bans_v1` | peer id | (ends at, Unix ms u64; IP key: 0, 4 or 16 bytes) | a ban lasts until its end, not until the next restart |
//! | `ip_bans_v1` | IP key (4 or 16 bytes) | ends at, Unix ms u64 | the same for bans by address |
//!
//! The four peer tables are one snapshot (`Action::PersistPeers`), replaced
//! whole in one transaction by [`BlockStore::save_known_peers`]; a store
//! written before they existed gets them, empty, at open.
//!
//! The `network` record is written when the store is created and checked at
//! every open ([`StoreOptions::network`]): a data directory of another
//! network is refused, naming both, instead of piling a second chain into it.
//!
//! Every [`BlockStore::commit`] (one `Action::Persist` batch: blocks,
//! deletions, the finalized checkpoint and a signing watermark together), [`BlockStore::persist`]
//! and [`BlockStore::delete`] is one redb write
//! transaction committed with `Durability::Immediate` (redb's default): when
//! the call returns, the data is on disk, so a block may then be announced as
//! imported (design.md §1). A crash mid-commit leaves the previous commit.
//!
//! # Security
//! *Provided*: stored values are checked when read ([`BLOCK_BYTES_MAX`], the
//! two tables agreeing, the checkpoint's length); a file damaged on disk is
//! reported as [`StoreError::Corrupt`] naming the path and the operator's
//! options, never a panic. Every open runs redb's integrity check (every
//! page's checksum, the allocator state rebuilt) before anything is
//! written, because a plain open trusts the allocator state and panics
//! inside redb on a damaged one; and every call into redb is wrapped in
//! `catch_unwind`, so a panic that still happens in the library becomes
//! [`StoreError::Corrupt`] (the store then refuses every further call). A
//! zero-length or half-created file is reported as such
//! ([`StoreError::HalfCreated`]), not silently treated as new. The file's
//! identity (device, inode) is remembered at open, so a store deleted or
//! replaced under a running node is noticed ([`BlockStore::check_file`]).
//! The file is locked while open, so two nodes cannot share one directory.
//! [`BlockStore::repair`] moves a damaged file aside and keeps what can
//! still be read of it.
//!
//! *Not provided*: blocks are not re-verified here (the core verifies what it
//! re-imports); no protection against someone who can write the file.
//!
//! # Limits
//! A block is at most [`BLOCK_BYTES_MAX`] bytes (the core's largest signed
//! block); redb's page cache is capped at [`STORE_CACHE_BYTES`]. The
//! integrity check at open reads the whole file once.

use std::cell::Cell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use meshsync_core::chain::block::SIGNED_BLOCK_BYTES_MAX;
use meshsync_core::chain::{ProposerPublicKey, Root, SigningWatermark, PROPOSER_PUBLIC_KEY_BYTES};
use meshsync_core::peerstore::{
    KnownIpBan, KnownPeerBan, KnownPeers, KnownRecord, KnownScore, PEERSTORE_RECORDS_MAX,
};
use meshsync_core::PeerId;
use redb::backends::FileBackend;
use redb::{
    BackendError, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, TableDefinition,
};

/// The file name of the store inside its directory.
pub const STORE_FILE_NAME: &str = "blocks.redb";
/// Largest block the store accepts or returns: the core's largest signed
/// block. A stored value above it can only be damage, and is reported so.
pub const BLOCK_BYTES_MAX: usize = SIGNED_BLOCK_BYTES_MAX;
/// redb's page cache. Blocks are written once and read back once at start-up,
/// so a large cache buys little; redb's default (1 GiB) would be most of a
/// small machine.
pub const STORE_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of the stored finalized checkpoint: root, then slot (u64 BE).
const CHECKPOINT_BYTES: usize = 32 + 8;

const BLOCKS: TableDefinition<(u64, [u8; 32]), &[u8]> = TableDefinition::new("blocks_v1");
const SLOT_BY_ROOT: TableDefinition<[u8; 32], u64> = TableDefinition::new("slot_by_root_v1");
/// A stored block as read: (root, slot, encoded bytes).
pub type StoredRow = (Root, u64, Vec<u8>);
const FINALIZED_CHAIN: TableDefinition<u64, [u8; 32]> = TableDefinition::new("finalized_chain_v1");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const WATERMARKS: TableDefinition<[u8; PROPOSER_PUBLIC_KEY_BYTES], u64> =
    TableDefinition::new("signing_watermarks_v1");
/// Peer store (`Action::PersistPeers`): signed records of peers we met.
const PEER_RECORDS: TableDefinition<[u8; 32], (u64, &[u8])> =
    TableDefinition::new("peer_records_v1");
/// Peer store: scores, with when they were taken and the peer's last IP.
const PEER_SCORES: TableDefinition<[u8; 32], (i64, u64, &[u8])> =
    TableDefinition::new("peer_scores_v1");
/// Peer store: bans by identity, with their end and the IP banned from.
const PEER_BANS: TableDefinition<[u8; 32], (u64, &[u8])> = TableDefinition::new("peer_bans_v1");
/// Peer store: bans by IP (4 or 16 bytes), with their end.
const IP_BANS: TableDefinition<&[u8], u64> = TableDefinition::new("ip_bans_v1");
/// Rows read from one peer store table at most: the core writes at most
/// `PEERSTORE_RECORDS_MAX` records (and fewer scores and bans); a table
/// larger than this was not written by us, and its surplus is ignored.
pub const PEERSTORE_ROWS_READ_MAX: usize = 4 * PEERSTORE_RECORDS_MAX;
const META_FINALIZED: &str = "finalized";
const META_BLOCK_BYTES: &str = "block_bytes";
const META_NETWORK: &str = "network";
/// Written by [`BlockStore::repair`]: the highest slot the damaged file
/// named (u64 BE), so the node knows what it lacks until it has it again.
const META_INCOMPLETE_TO_SLOT: &str = "incomplete_to_slot";
/// Bytes of the network record: network id (u64 BE), then genesis root.
const NETWORK_RECORD_BYTES: usize = 8 + 32;
/// Blocks copied per transaction by [`BlockStore::repair`].
const REPAIR_BATCH_BLOCKS: usize = 256;
/// ENOSPC on Linux: what [`DiskFaults`] answers, as a full disk would.
const ENOSPC: i32 = 28;

/// The network a store belongs to: recorded when it is created, checked at
/// every open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreNetwork {
    /// The network id of the genesis.
    pub network_id: u64,
    /// The genesis root.
    pub genesis_root: Root,
}

impl fmt::Display for StoreNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} (genesis root {})",
            self.network_id, self.genesis_root
        )
    }
}

/// How [`BlockStore::open_with`] opens a store.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// The network this node runs: recorded in a new store, and a store of
    /// another network is refused with [`StoreError::WrongNetwork`].
    /// `None`: not checked (tools and tests).
    pub network: Option<StoreNetwork>,
    /// Never create the file: a reopen after a failure must not replace a
    /// deleted store with an empty one ([`StoreError::Gone`] instead).
    pub must_exist: bool,
    /// Faults to inject into the file (tests of full and failing disks).
    pub faults: Option<Arc<DiskFaults>>,
}

/// Faults injected into a store file through its storage backend: a disk
/// that fills up (writes past a size fail with ENOSPC, "No space left on
/// device") or that refuses writes outright. Shared with the test that
/// steers it; every fault can be lifted again, as freeing space would.
#[derive(Debug)]
pub struct DiskFaults {
    /// The file may not grow past this many bytes.
    file_bytes_max: AtomicU64,
    /// Further writes that fail, counted down (`u64::MAX`: all of them).
    failing_writes: AtomicU64,
    /// Writes refused so far.
    refused: AtomicU64,
    /// Whether syncs wait until released (a disk whose fsync hangs).
    syncs_held: std::sync::Mutex<bool>,
    syncs_released: std::sync::Condvar,
}

impl DiskFaults {
    /// No faults yet.
    pub fn new() -> Arc<DiskFaults> {
        Arc::new(DiskFaults {
            file_bytes_max: AtomicU64::new(u64::MAX),
            failing_writes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            syncs_held: std::sync::Mutex::new(false),
            syncs_released: std::sync::Condvar::new(),
        })
    }

    /// Every sync (the fsync that makes a commit durable) waits from now
    /// until [`DiskFaults::release_syncs`]: a disk that stalls.
    pub fn hold_syncs(&self) {
        *self.syncs_held.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Syncs go through again, the waiting ones first.
    pub fn release_syncs(&self) {
        *self.syncs_held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.syncs_released.notify_all();
    }

    fn wait_while_syncs_held(&self) {
        let mut held = self.syncs_held.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self
                .syncs_released
                .wait(held)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The disk is full once the file would grow past `bytes`.
    pub fn fill_at(&self, bytes: u64) {
        self.file_bytes_max.store(bytes, Ordering::SeqCst);
    }

    /// The next `writes` writes fail (`u64::MAX`: all until [`DiskFaults::heal`]).
    pub fn fail_writes(&self, writes: u64) {
        self.failing_writes.store(writes, Ordering::SeqCst);
    }

    /// Space is freed and writes work again.
    pub fn heal(&self) {
        self.file_bytes_max.store(u64::MAX, Ordering::SeqCst);
        self.failing_writes.store(0, Ordering::SeqCst);
    }

    /// Writes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Whether a write ending at byte `end` is refused.
    fn refuse(&self, end: u64) -> Result<(), io::Error> {
        let failing = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u64::MAX => Some(u64::MAX),
                left => Some(left - 1),
            })
            .is_ok();
        if failing || end > self.file_bytes_max.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}

/// redb's file backend, with [`DiskFaults`] in front of its writes.
#[derive(Debug)]
struct FaultyFile {
    file: FileBackend,
    faults: Option<Arc<DiskFaults>>,
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if let Some(faults) = &self.faults {
            if len > self.file.len()? {
                faults.refuse(len)?;
            }
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if let Some(faults) = &self.faults {
            faults.wait_while_syncs_held();
        }
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if let Some(faults) = &self.faults {
            faults.refuse(offset.saturating_add(data.len() as u64))?;
        }
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// What [`BlockStore::repair`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// Where the damaged file now is (`None`: there was no file).
    pub moved_to: Option<PathBuf>,
    /// Blocks read from it and written to the new store.
    pub blocks_kept: u64,
    /// Why reading it stopped early, if it did.
    pub stopped: Option<String>,
    /// The highest slot the damaged file named anywhere that could be read
    /// (recorded in the new store when above the blocks kept).
    pub slot_seen_max: u64,
}

/// Why the store could not do what was asked. Every variant but
/// [`StoreError::BlockTooLarge`] names the file.
#[derive(Debug)]
pub enum StoreError {
    /// Another process (or this one) has the store open.
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file is damaged, not a redb file, or holds values the store never writes.
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The operating system refused (permissions, disk full, ...).
    Io {
        /// The store file or directory.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The error.
        error: io::Error,
    },
    /// Any other redb error.
    Database {
        /// The store file.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The error (boxed: redb's error is large, and errors are rare).
        error: Box<redb::Error>,
    },
    /// The file is empty or shorter than any store: its creation never
    /// finished (a full disk at first start). It holds no blocks.
    HalfCreated {
        /// The store file.
        path: PathBuf,
        /// Its length.
        bytes: u64,
    },
    /// The store belongs to another network.
    WrongNetwork {
        /// The store file.
        path: PathBuf,
        /// The network it records.
        stored: StoreNetwork,
        /// The network this node runs.
        ours: StoreNetwork,
    },
    /// The file was deleted or replaced while the store was open, or is
    /// missing when it must exist.
    Gone {
        /// The store file.
        path: PathBuf,
        /// What happened to it.
        detail: &'static str,
    },
    /// Caller misuse: a block larger than [`BLOCK_BYTES_MAX`] was given to persist.
    BlockTooLarge {
        /// The block's root.
        root: Root,
        /// Its length.
        bytes: usize,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { path } => write!(
                f,
                "block store {} is locked: another meshsync process has it open",
                path.display()
            ),
            StoreError::Corrupt { path, detail } => write!(
                f,
                "block store {} is corrupt: {detail}. Start with --repair to keep what can \
                 still be read (the damaged file is moved aside) and re-sync the rest from \
                 peers, or move the file aside yourself",
                path.display()
            ),
            StoreError::HalfCreated { path, bytes } => write!(
                f,
                "block store {} is {bytes} bytes: its creation never finished (a full disk at \
                 first start?) and it holds no blocks. Remove it, or start with --repair",
                path.display()
            ),
            StoreError::WrongNetwork { path, stored, ours } => write!(
                f,
                "block store {} belongs to {stored}, not to this node's {ours}: give this \
                 network its own --data-dir",
                path.display()
            ),
            StoreError::Gone { path, detail } => {
                write!(f, "block store {} {detail}", path.display())
            }
            StoreError::Io {
                path,
                operation,
                error,
            } => write!(f, "block store {}: {operation}: {error}", path.display()),
            StoreError::Database {
                path,
                operation,
                error,
            } => write!(f, "block store {}: {operation}: {error}", path.display()),
            StoreError::BlockTooLarge { root, bytes } => write!(
                f,
                "block {} of {bytes} bytes exceeds {BLOCK_BYTES_MAX}",
                root
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// One stored block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    /// The block's root.
    pub root: Root,
    /// Its slot.
    pub slot: u64,
    /// Its encoding, at most [`BLOCK_BYTES_MAX`] bytes.
    pub bytes: Vec<u8>,
}

/// Everything the store holds, as [`BlockStore::load`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredChain {
    /// Every block, ordered by (slot, root).
    pub blocks: Vec<StoredBlock>,
    /// The last finalized checkpoint persisted: (root, slot).
    pub finalized: Option<(Root, u64)>,
}

/// What the store holds, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blocks stored.
    pub blocks: u64,
    /// Sum of their lengths.
    pub block_bytes: u64,
}

/// The durable block store of one node (see the module docs).
pub struct BlockStore {
    database: Database,
    path: PathBuf,
    /// (device, inode) of the file when it was opened.
    identity: Option<(u64, u64)>,
    /// Set once redb panicked: the database may be inconsistent in memory,
    /// so every further call fails.
    broken: Cell<bool>,
}

impl fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl BlockStore {
    /// Opens the store in `dir`, creating the directory and `dir/blocks.redb`
    /// if needed, without a network check. Fails with the path and the
    /// reason when the file cannot be created or read, is not a store, or
    /// is open elsewhere.
    pub fn open(dir: &Path) -> Result<BlockStore, StoreError> {
        BlockStore::open_with(dir, &StoreOptions::default())
    }

    /// Opens the store in `dir` as `options` say (see [`StoreOptions`]):
    /// verifies the whole file before anything is written, then records or
    /// checks the network.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<BlockStore, StoreError> {
        let path = dir.join(STORE_FILE_NAME);
        if options.must_exist {
            if !path.is_file() {
                return Err(StoreError::Gone {
                    path,
                    detail: "is missing (deleted while the node ran?)",
                });
            }
        } else {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
                path: dir.to_path_buf(),
                operation: "create directory",
                error,
            })?;
        }
        // redb would initialise an empty file as a new store: a file left
        // empty by a failed first start would then pass for a fresh one.
        if let Ok(metadata) = std::fs::metadata(&path) {
            if metadata.is_file() && metadata.len() == 0 {
                return Err(StoreError::HalfCreated { path, bytes: 0 });
            }
        }
        let existed = path.is_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!options.must_exist)
            .truncate(false)
            .open(&path)
            .map_err(|error| StoreError::Io {
                path: path.clone(),
                operation: "open",
                error,
            })?;
        let identity = file_identity(&file);
        let backend = FaultyFile {
            file: FileBackend::new(file).map_err(|error| classify(&path, "open", error.into()))?,
            faults: options.faults.clone(),
        };
        let opened = guard(&path, "open", || {
            Database::builder()
                .set_cache_size(STORE_CACHE_BYTES)
                // Verify every page and rebuild the allocator state before
                // the first write: a plain open trusts it, and a damaged one
                // made redb panic (index out of bounds) and rewrite the header.
                .set_check_integrity_on_open(true)
                .create_with_backend(backend)
                .map_err(|error| Failure::Redb(error.into()))
        });
        let database = match opened {
            Ok(database) => database,
            Err(StoreError::Corrupt { .. }) if existed && is_half_created(&path) => {
                let bytes = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
                return Err(StoreError::HalfCreated { path, bytes });
            }
            Err(error) => return Err(error),
        };
        let store = BlockStore {
            database,
            path,
            identity,
            broken: Cell::new(false),
        };
        // Create the tables, so readers never meet a missing one, and
        // record the network (or check it) in the same transaction.
        let network = options.network;
        let stored = store.write("create tables", |transaction| {
            let blocks = transaction.open_table(BLOCKS)?;
            transaction.open_table(SLOT_BY_ROOT)?;
            transaction.open_table(FINALIZED_CHAIN)?;
            transaction.open_table(WATERMARKS)?;
            transaction.open_table(PEER_RECORDS)?;
            transaction.open_table(PEER_SCORES)?;
            transaction.open_table(PEER_BANS)?;
            transaction.open_table(IP_BANS)?;
            let mut meta = transaction.open_table(META)?;
            let stored = read_network(&meta)?;
            if let (None, Some(ours)) = (stored, network) {
                if blocks.len()? > 0 {
                    log::warn!(
                        "block store predates network records: recording it as {ours}, unchecked"
                    );
                }
                meta.insert(META_NETWORK, network_record(&ours).as_slice())?;
            }
            Ok(stored)
        })?;
        if let (Some(stored), Some(ours)) = (stored, network) {
            if stored != ours {
                return Err(StoreError::WrongNetwork {
                    path: store.path.clone(),
                    stored,
                    ours,
                });
            }
        }
        Ok(store)
    }

    /// Moves a damaged store in `dir` aside (to `blocks.redb.damaged-N`)
    /// and copies every block that can still be read from it into a new
    /// store, which is then closed. The blocks are re-verified by the core
    /// when the node loads them; what is missing is re-synced from peers.
    /// The new store records the highest slot it is known to lack: the
    /// highest the damaged file still named, or, when reading it stopped
    /// early, `slot_now` (it cannot have held later blocks), so the node
    /// does not propose on what is left.
    pub fn repair(
        dir: &Path,
        options: &StoreOptions,
        slot_now: u64,
    ) -> Result<RepairReport, StoreError> {
        let path = dir.join(STORE_FILE_NAME);
        if !path.exists() {
            return Ok(RepairReport {
                moved_to: None,
                blocks_kept: 0,
                stopped: None,
                slot_seen_max: 0,
            });
        }
        let moved_to = (0u32..)
            .map(|index| dir.join(format!("{STORE_FILE_NAME}.damaged-{index}")))
            .find(|candidate| !candidate.exists())
            .expect("some index is free");
        std::fs::rename(&path, &moved_to).map_err(|error| StoreError::Io {
            path: path.clone(),
            operation: "move aside",
            error,
        })?;
        let mut fresh = BlockStore::open_with(
            dir,
            &StoreOptions {
                must_exist: false,
                ..options.clone()
            },
        )?;
        let mut kept = 0u64;
        let mut kept_slot_max = 0u64;
        let mut slot_seen_max = 0u64;
        let mut batch: Vec<(Root, u64, Vec<u8>)> = Vec::new();
        let mut watermarks: Vec<SigningWatermark> = Vec::new();
        let mut write_error = None;
        let mut flush = |batch: &mut Vec<(Root, u64, Vec<u8>)>, kept: &mut u64| {
            let blocks: Vec<(Root, u64, &[u8])> = batch
                .iter()
                .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
                .collect();
            let result = fresh.persist(&blocks, None);
            *kept += batch.len() as u64;
            batch.clear();
            result
        };
        // redb may panic on the damaged file; whatever was read before stays kept.
        let read = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let old = redb::Builder::new()
                .set_cache_size(STORE_CACHE_BYTES)
                .open_read_only(&moved_to)
                .map_err(|error| error.to_string())?;
            let transaction = old.begin_read().map_err(|error| error.to_string())?;
            let table = transaction
                .open_table(BLOCKS)
                .map_err(|error| error.to_string())?;
            // The highest slot the file names, from the index and the
            // last key, before the walk that may stop early.
            if let Ok(Ok(Some((key, _)))) = catch_unwind(AssertUnwindSafe(|| table.last())) {
                slot_seen_max = slot_seen_max.max(key.value().0);
            }
            if let Ok(index) = transaction.open_table(SLOT_BY_ROOT) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    for (_, slot) in index.iter().into_iter().flatten().map_while(Result::ok) {
                        slot_seen_max = slot_seen_max.max(slot.value());
                    }
                }));
            }
            // The signing watermarks first: a handful of entries, and
            // losing them would let a key sign its slots again.
            if let Ok(marks) = transaction.open_table(WATERMARKS) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    for (key, slot) in marks.iter().into_iter().flatten().map_while(Result::ok) {
                        watermarks.push(SigningWatermark {
                            proposer: ProposerPublicKey(key.value()),
                            slot: slot.value(),
                        });
                    }
                }));
            }
            for entry in table.iter().map_err(|error| error.to_string())? {
                let (key, value) = entry.map_err(|error| error.to_string())?;
                let (slot, root) = key.value();
                slot_seen_max = slot_seen_max.max(slot);
                if value.value().len() > BLOCK_BYTES_MAX {
                    continue;
                }
                kept_slot_max = kept_slot_max.max(slot);
                batch.push((Root(root), slot, value.value().to_vec()));
                if batch.len() >= REPAIR_BATCH_BLOCKS {
                    if let Err(error) = flush(&mut batch, &mut kept) {
                        write_error = Some(error);
                        return Ok(());
                    }
                }
            }
            Ok(())
        }));
        let stopped = match read {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(panic) => Some(format!(
                "the store library panicked: {}",
                panic_text(&panic)
            )),
        };
        if let Some(error) = write_error {
            return Err(error);
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut kept)?;
        }
        fresh.raise_watermarks(&watermarks)?;
        let missing_to_slot = if stopped.is_some() {
            slot_seen_max.max(slot_now)
        } else {
            slot_seen_max
        };
        if missing_to_slot > kept_slot_max {
            fresh.write("record what is missing", |transaction| {
                let mut meta = transaction.open_table(META)?;
                meta.insert(
                    META_INCOMPLETE_TO_SLOT,
                    missing_to_slot.to_be_bytes().as_slice(),
                )?;
                Ok(())
            })?;
        }
        Ok(RepairReport {
            moved_to: Some(moved_to),
            blocks_kept: kept,
            stopped,
            slot_seen_max,
        })
    }

    /// Whether the file is still the one opened: fails with
    /// [`StoreError::Gone`] if it was deleted or replaced (a running node
    /// would otherwise write into an unlinked file and lose everything at exit).
    pub fn check_file(&self) -> Result<(), StoreError> {
        let gone = |detail| StoreError::Gone {
            path: self.path.clone(),
            detail,
        };
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(gone("was deleted while the node ran"));
            }
            Err(error) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    operation: "check file",
                    error,
                })
            }
        };
        match (self.identity, metadata_identity(&metadata)) {
            (Some(opened), Some(now)) if opened != now => {
                Err(gone("was replaced by another file while the node ran"))
            }
            _ => Ok(()),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `blocks` (root, slot, bytes) and, if given, the finalized
    /// checkpoint (root, slot), in one transaction that is durable when this
    /// returns. Storing a block again is harmless.
    pub fn persist(
        &mut self,
        blocks: &[(Root, u64, &[u8])],
        finalized: Option<(Root, u64)>,
    ) -> Result<(), StoreError> {
        self.commit(blocks, &[], finalized, &[], None).map(|_| ())
    }

    /// Removes the blocks with these roots (forks the core pruned), in one
    /// durable transaction. Unknown roots are ignored; returns how many were removed.
    pub fn delete(&mut self, roots: &[Root]) -> Result<usize, StoreError> {
        self.commit(&[], roots, None, &[], None)
    }

    /// One `Action::Persist` batch as one durable transaction: stores
    /// `blocks`, then removes `delete` (a root in both ends up removed: the
    /// core forgot it), then records `finalized`, indexes
    /// `finalized_chain` (slot, root: blocks that became finalized) and
    /// raises the key's signing watermark to `watermark`'s slot (never
    /// lowering it), if given. Nothing is written if any block is larger
    /// than [`BLOCK_BYTES_MAX`]. Returns how many blocks were removed.
    pub fn commit(
        &mut self,
        blocks: &[(Root, u64, &[u8])],
        delete: &[Root],
        finalized: Option<(Root, u64)>,
        finalized_chain: &[(u64, Root)],
        watermark: Option<SigningWatermark>,
    ) -> Result<usize, StoreError> {
        if let Some((root, _, bytes)) = blocks
            .iter()
            .find(|(_, _, bytes)| bytes.len() > BLOCK_BYTES_MAX)
        {
            return Err(StoreError::BlockTooLarge {
                root: *root,
                bytes: bytes.len(),
            });
        }
        let operation = if delete.is_empty() {
            "persist"
        } else if blocks.is_empty() && finalized.is_none() {
            "delete"
        } else {
            "persist and delete"
        };
        self.write(operation, |transaction| {
            let mut by_slot = transaction.open_table(BLOCKS)?;
            let mut slots = transaction.open_table(SLOT_BY_ROOT)?;
            let mut meta = transaction.open_table(META)?;
            let mut block_bytes = read_block_bytes(&meta)?;
            for (root, slot, bytes) in blocks {
                if let Some(old_slot) = slots
                    .insert(root.as_bytes(), slot)?
                    .map(|guard| guard.value())
                {
                    // A root names one header and so one slot; a differing
                    // old slot is damage, and the new entry replaces it.
                    if let Some(old) = by_slot.remove((old_slot, root.0))? {
                        block_bytes = block_bytes.saturating_sub(old.value().len() as u64);
                    }
                }
                by_slot.insert((*slot, root.0), *bytes)?;
                block_bytes = block_bytes.saturating_add(bytes.len() as u64);
            }
            let mut removed = 0;
            for root in delete {
                let Some(slot) = slots.remove(root.as_bytes())?.map(|guard| guard.value()) else {
                    continue;
                };
                if let Some(old) = by_slot.remove((slot, root.0))? {
                    block_bytes = block_bytes.saturating_sub(old.value().len() as u64);
                }
                removed += 1;
            }
            meta.insert(META_BLOCK_BYTES, block_bytes.to_be_bytes().as_slice())?;
            if let Some((root, slot)) = finalized {
                let mut checkpoint = [0u8; CHECKPOINT_BYTES];
                checkpoint[..32].copy_from_slice(root.as_bytes());
                checkpoint[32..].copy_from_slice(&slot.to_be_bytes());
                meta.insert(META_FINALIZED, checkpoint.as_slice())?;
            }
            if !finalized_chain.is_empty() {
                let mut chain = transaction.open_table(FINALIZED_CHAIN)?;
                for (slot, root) in finalized_chain {
                    chain.insert(slot, root.0)?;
                }
            }
            if let Some(watermark) = watermark {
                raise_watermark(transaction, watermark)?;
            }
            Ok(removed)
        })
    }

    /// Every signing watermark recorded, in key order.
    pub fn watermarks(&self) -> Result<Vec<SigningWatermark>, StoreError> {
        self.read("read signing watermarks", |transaction| {
            let table = transaction.open_table(WATERMARKS)?;
            let mut watermarks = Vec::new();
            for entry in table.iter()? {
                let (key, slot) = entry?;
                watermarks.push(SigningWatermark {
                    proposer: ProposerPublicKey(key.value()),
                    slot: slot.value(),
                });
            }
            Ok(watermarks)
        })
    }

    /// Raises each key's signing watermark to the one given (a lower one
    /// leaves the record as it is), in one durable transaction: the import
    /// of watermarks exported on another machine.
    pub fn raise_watermarks(&mut self, watermarks: &[SigningWatermark]) -> Result<(), StoreError> {
        self.write("record signing watermarks", |transaction| {
            for watermark in watermarks {
                raise_watermark(transaction, *watermark)?;
            }
            Ok(())
        })
    }

    /// Replaces the peer store with `known` (one `Action::PersistPeers`),
    /// in one durable transaction: a crash leaves the previous snapshot or
    /// this one, never a mix.
    pub fn save_known_peers(&mut self, known: &KnownPeers) -> Result<(), StoreError> {
        self.write("save peer store", |transaction| {
            let mut records = transaction.open_table(PEER_RECORDS)?;
            records.retain(|_, _| false)?;
            for known in &known.records {
                // Keyed by the peer id the record names; the core verifies
                // the whole record when it is loaded.
                let Some(key) = record_key(&known.record) else {
                    continue;
                };
                records.insert(key, (known.last_seen_unix_ms, known.record.as_slice()))?;
            }
            let mut scores = transaction.open_table(PEER_SCORES)?;
            scores.retain(|_, _| false)?;
            for score in &known.scores {
                let ip = ip_bytes(score.last_ip);
                scores.insert(
                    *score.peer.as_bytes(),
                    (score.score_micropoints, score.at_unix_ms, ip.as_slice()),
                )?;
            }
            let mut bans = transaction.open_table(PEER_BANS)?;
            bans.retain(|_, _| false)?;
            for ban in &known.peer_bans {
                let ip = ip_bytes(ban.ip);
                bans.insert(*ban.peer.as_bytes(), (ban.until_unix_ms, ip.as_slice()))?;
            }
            let mut ip_bans = transaction.open_table(IP_BANS)?;
            ip_bans.retain(|_, _| false)?;
            for ban in &known.ip_bans {
                ip_bans.insert(ip_bytes(Some(ban.ip)).as_slice(), ban.until_unix_ms)?;
            }
            Ok(())
        })
    }

    /// The peer store as last saved (empty for a store that never saved
    /// one, such as a data directory from before the peer store). Rows the
    /// store cannot read as ours (an IP of the wrong length) are skipped
    /// with a WARN; records are checked by the core.
    pub fn known_peers(&self) -> Result<KnownPeers, StoreError> {
        self.read("read peer store", |transaction| {
            let mut known = KnownPeers::default();
            let mut skipped = 0usize;
            let records = transaction.open_table(PEER_RECORDS)?;
            for entry in records.iter()?.take(PEERSTORE_ROWS_READ_MAX) {
                let (_, value) = entry?;
                let (last_seen_unix_ms, record) = value.value();
                known.records.push(KnownRecord {
                    record: record.to_vec(),
                    last_seen_unix_ms,
                });
            }
            let scores = transaction.open_table(PEER_SCORES)?;
            for entry in scores.iter()?.take(PEERSTORE_ROWS_READ_MAX) {
                let (key, value) = entry?;
                let (score_micropoints, at_unix_ms, ip) = value.value();
                let Ok(last_ip) = ip_from_bytes(ip) else {
                    skipped += 1;
                    continue;
                };
                known.scores.push(KnownScore {
                    peer: PeerId::from_bytes(key.value()),
                    score_micropoints,
                    at_unix_ms,
                    last_ip,
                });
            }
            let bans = transaction.open_table(PEER_BANS)?;
            for entry in bans.iter()?.take(PEERSTORE_ROWS_READ_MAX) {
                let (key, value) = entry?;
                let (until_unix_ms, ip) = value.value();
                let Ok(ip) = ip_from_bytes(ip) else {
                    skipped += 1;
                    continue;
                };
                known.peer_bans.push(KnownPeerBan {
                    peer: PeerId::from_bytes(key.value()),
                    ip,
                    until_unix_ms,
                });
            }
            let ip_bans = transaction.open_table(IP_BANS)?;
            for entry in ip_bans.iter()?.take(PEERSTORE_ROWS_READ_MAX) {
                let (key, value) = entry?;
                let Ok(Some(ip)) = ip_from_bytes(key.value()) else {
                    skipped += 1;
                    continue;
                };
                known.ip_bans.push(KnownIpBan {
                    ip,
                    until_unix_ms: value.value(),
                });
            }
            if skipped > 0 {
                log::warn!("peer store: skipped {skipped} unreadable rows");
            }
            Ok(known)
        })
    }

    /// The network the store records, if it records one.
    pub fn network(&self) -> Result<Option<StoreNetwork>, StoreError> {
        self.read("read network", |transaction| {
            let meta = transaction.open_table(META)?;
            read_network(&meta)
        })
    }

    /// The finalized checkpoint (root, slot) last committed, if any.
    pub fn finalized(&self) -> Result<Option<(Root, u64)>, StoreError> {
        self.read("read the finalized checkpoint", |transaction| {
            let meta = transaction.open_table(META)?;
            read_finalized(&meta)
        })
    }

    /// The bytes of the block with root `root`, if stored.
    pub fn block(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("read block", |transaction| {
            let slots = transaction.open_table(SLOT_BY_ROOT)?;
            let by_slot = transaction.open_table(BLOCKS)?;
            let Some(slot) = slots.get(root.as_bytes())?.map(|guard| guard.value()) else {
                return Ok(None);
            };
            let bytes = by_slot.get((slot, root.0))?.ok_or_else(|| {
                corrupt(format!(
                    "block {} is indexed at slot {slot} but not stored",
                    root
                ))
            })?;
            check_block_length(root, slot, bytes.value())?;
            Ok(Some(bytes.value().to_vec()))
        })
    }

    /// Calls `visit(root, slot, bytes)` for every block in (slot, root) order,
    /// holding one block in memory at a time, then returns the finalized
    /// checkpoint. Stops at the first damaged value with [`StoreError::Corrupt`].
    pub fn for_each_block(
        &self,
        visit: impl FnMut(Root, u64, &[u8]),
    ) -> Result<Option<(Root, u64)>, StoreError> {
        self.for_each_block_from(0, visit)
    }

    /// [`BlockStore::for_each_block`] for the blocks at or above `from_slot`
    /// only: a start-up that loads from the finalized block up reads
    /// nothing of the history below it. The tables' sizes are checked
    /// against what was visited only on a whole scan (`from_slot` 0).
    pub fn for_each_block_from(
        &self,
        from_slot: u64,
        mut visit: impl FnMut(Root, u64, &[u8]),
    ) -> Result<Option<(Root, u64)>, StoreError> {
        self.read("load", |transaction| {
            let by_slot = transaction.open_table(BLOCKS)?;
            let slots = transaction.open_table(SLOT_BY_ROOT)?;
            let meta = transaction.open_table(META)?;
            if by_slot.len()? != slots.len()? {
                return Err(corrupt(format!(
                    "{} blocks but {} index entries",
                    by_slot.len()?,
                    slots.len()?
                )));
            }
            let mut visited = 0u64;
            for entry in by_slot.range((from_slot, [0u8; 32])..)? {
                let (key, value) = entry?;
                let (slot, root) = key.value();
                let root = Root(root);
                let bytes = value.value();
                check_block_length(&root, slot, bytes)?;
                let indexed = slots.get(root.as_bytes())?.map(|guard| guard.value());
                if indexed != Some(slot) {
                    return Err(corrupt(format!(
                        "block {} at slot {slot} is indexed at {indexed:?}",
                        root
                    )));
                }
                visit(root, slot, bytes);
                visited += 1;
            }
            // A damaged page can end the iteration early without an error.
            if from_slot == 0 && visited != by_slot.len()? {
                return Err(corrupt(format!(
                    "{} blocks recorded but {visited} found",
                    by_slot.len()?
                )));
            }
            read_finalized(&meta)
        })
    }

    /// The blocks of the finalized chain at slots `start_slot..end_slot`,
    /// lowest first, as (root, slot, bytes): as many as fit `blocks_max`
    /// and `bytes_max`, stopping at the first that does not. Also whether
    /// every indexed block of the range was returned (false when a limit
    /// stopped the read, or an indexed block is missing).
    pub fn read_finalized_chain(
        &self,
        start_slot: u64,
        end_slot: u64,
        blocks_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<StoredRow>, bool), StoreError> {
        self.read("read finalized blocks", |transaction| {
            let chain = transaction.open_table(FINALIZED_CHAIN)?;
            let by_slot = transaction.open_table(BLOCKS)?;
            let mut blocks = Vec::new();
            let mut bytes_read = 0usize;
            if start_slot >= end_slot {
                return Ok((blocks, true));
            }
            for entry in chain.range(start_slot..end_slot)? {
                let (slot, root) = entry?;
                let (slot, root) = (slot.value(), Root(root.value()));
                let Some(guard) = by_slot.get((slot, root.0))? else {
                    log::error!(
                        "block store {}: finalized block {root} at slot {slot} is indexed but \
                         not stored",
                        self.path.display()
                    );
                    return Ok((blocks, false));
                };
                let bytes = guard.value();
                check_block_length(&root, slot, bytes)?;
                if blocks.len() >= blocks_max || bytes_read.saturating_add(bytes.len()) > bytes_max
                {
                    return Ok((blocks, false));
                }
                bytes_read += bytes.len();
                blocks.push((root, slot, bytes.to_vec()));
            }
            Ok((blocks, true))
        })
    }

    /// Indexes the finalized chain of a store written before the index
    /// existed (or whose index stops short of its finalized block): walks
    /// down from the finalized block through each block's parent, as
    /// `parent_of(bytes)` reads it, until the index already has the block,
    /// a block is missing, or `parent_of` returns `None` (the genesis, or
    /// damage). One transaction; reads each block once. Returns how many
    /// blocks it indexed.
    pub fn index_finalized_chain(
        &mut self,
        parent_of: impl Fn(&[u8]) -> Option<Root>,
    ) -> Result<u64, StoreError> {
        self.write("index the finalized chain", |transaction| {
            let meta = transaction.open_table(META)?;
            let Some((mut cursor, _)) = read_finalized(&meta)? else {
                return Ok(0);
            };
            let slots = transaction.open_table(SLOT_BY_ROOT)?;
            let by_slot = transaction.open_table(BLOCKS)?;
            let mut chain = transaction.open_table(FINALIZED_CHAIN)?;
            let mut indexed = 0;
            loop {
                let Some(slot) = slots.get(cursor.as_bytes())?.map(|guard| guard.value()) else {
                    break;
                };
                if chain.get(slot)?.map(|guard| guard.value()) == Some(cursor.0) {
                    break;
                }
                let Some(parent) = by_slot
                    .get((slot, cursor.0))?
                    .and_then(|guard| parent_of(guard.value()))
                else {
                    break;
                };
                chain.insert(slot, cursor.0)?;
                indexed += 1;
                cursor = parent;
            }
            Ok(indexed)
        })
    }

    /// Every block, ordered by (slot, root), and the finalized checkpoint.
    /// Holds the whole chain in memory; [`BlockStore::for_each_block`] does not.
    pub fn load(&self) -> Result<StoredChain, StoreError> {
        let mut blocks = Vec::new();
        let finalized = self.for_each_block(|root, slot, bytes| {
            blocks.push(StoredBlock {
                root,
                slot,
                bytes: bytes.to_vec(),
            });
        })?;
        Ok(StoredChain { blocks, finalized })
    }

    /// The highest slot a repaired store is known to lack blocks up to
    /// (recorded by [`BlockStore::repair`]); 0 if none.
    pub fn incomplete_to_slot(&self) -> Result<u64, StoreError> {
        self.read("read repair record", |transaction| {
            let meta = transaction.open_table(META)?;
            let Some(guard) = meta.get(META_INCOMPLETE_TO_SLOT)? else {
                return Ok(0);
            };
            let bytes: [u8; 8] = guard.value().try_into().map_err(|_| {
                corrupt(format!(
                    "{META_INCOMPLETE_TO_SLOT} is {} bytes, not 8",
                    guard.value().len()
                ))
            })?;
            Ok(u64::from_be_bytes(bytes))
        })
    }

    /// How many blocks and bytes are stored.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read("read stats", |transaction| {
            let by_slot = transaction.open_table(BLOCKS)?;
            let meta = transaction.open_table(META)?;
            Ok(StoreStats {
                blocks: by_slot.len()?,
                block_bytes: read_block_bytes(&meta)?,
            })
        })
    }

    /// Runs `body` in a write transaction and commits it durably.
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.guarded(operation, || {
            let mut transaction = self.database.begin_write()?;
            // redb's default, stated because the design depends on it: the
            // commit is on disk when `commit` returns.
            transaction.set_durability(Durability::Immediate)?;
            let value = body(&transaction)?;
            transaction.commit()?;
            Ok(value)
        })
    }

    /// Runs `body` in a read transaction.
    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.guarded(operation, || {
            let transaction = self.database.begin_read()?;
            body(&transaction)
        })
    }

    /// Runs `run` unless redb panicked before, catching a panic in it.
    fn guarded<T>(
        &self,
        operation: &'static str,
        run: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        if self.broken.get() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("{operation}: refused after an earlier failure inside redb"),
            });
        }
        let result = guard(&self.path, operation, run);
        if let Err(StoreError::Corrupt { detail, .. }) = &result {
            if detail.starts_with(PANIC_PREFIX) {
                self.broken.set(true);
            }
        }
        result
    }
}

/// Raises `watermark`'s key to its slot inside `transaction` (never lowers it).
fn raise_watermark(
    transaction: &redb::WriteTransaction,
    watermark: SigningWatermark,
) -> Result<(), Failure> {
    let mut table = transaction.open_table(WATERMARKS)?;
    let key = watermark.proposer.0;
    let kept = table.get(&key)?.map(|guard| guard.value());
    if kept.is_none_or(|kept| kept < watermark.slot) {
        table.insert(&key, watermark.slot)?;
    }
    Ok(())
}

/// How a panic inside redb is reported.
const PANIC_PREFIX: &str = "the store library panicked";

/// Runs `run`, turning a panic inside redb into [`StoreError::Corrupt`]:
/// redb panics on some damaged files, and a node must refuse with a
/// message, not exit 101.
fn guard<T>(
    path: &Path,
    operation: &'static str,
    run: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|failure| failure.into_store_error(path, operation)),
        Err(panic) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{PANIC_PREFIX}: {}", panic_text(&panic)),
        }),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Whether a store that failed to open is shorter than any complete one:
/// then its creation was cut short.
fn is_half_created(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| metadata.len() < FRESH_STORE_BYTES_MIN)
}

/// redb's file is this long once created (header and first region); a
/// shorter file that does not open never finished being created.
const FRESH_STORE_BYTES_MIN: u64 = 4096;

#[cfg(unix)]
fn metadata_identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn metadata_identity(_metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

fn file_identity(file: &File) -> Option<(u64, u64)> {
    file.metadata()
        .ok()
        .and_then(|metadata| metadata_identity(&metadata))
}

fn network_record(network: &StoreNetwork) -> [u8; NETWORK_RECORD_BYTES] {
    let mut record = [0u8; NETWORK_RECORD_BYTES];
    record[..8].copy_from_slice(&network.network_id.to_be_bytes());
    record[8..].copy_from_slice(network.genesis_root.as_bytes());
    record
}

fn read_network(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<StoreNetwork>, Failure> {
    let Some(guard) = meta.get(META_NETWORK)? else {
        return Ok(None);
    };
    let value = guard.value();
    if value.len() != NETWORK_RECORD_BYTES {
        return Err(corrupt(format!(
            "the network record is {} bytes, not {NETWORK_RECORD_BYTES}",
            value.len()
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&value[..8]);
    let mut genesis_root = [0u8; 32];
    genesis_root.copy_from_slice(&value[8..]);
    Ok(Some(StoreNetwork {
        network_id: u64::from_be_bytes(id),
        genesis_root: Root(genesis_root),
    }))
}

/// The key a stored record is filed under: the peer id it names (bytes
/// 1..33 of the encoding, after the version byte), or `None` for bytes too
/// short to be a record (the core never hands those over).
fn record_key(record: &[u8]) -> Option<[u8; 32]> {
    record.get(1..33)?.try_into().ok()
}

/// An optional IP address as stored: empty, 4 or 16 bytes.
fn ip_bytes(ip: Option<std::net::IpAddr>) -> Vec<u8> {
    match ip {
        None => Vec::new(),
        Some(std::net::IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(std::net::IpAddr::V6(v6)) => v6.octets().to_vec(),
    }
}

/// The inverse of [`ip_bytes`]; `Err` for any other length.
fn ip_from_bytes(bytes: &[u8]) -> Result<Option<std::net::IpAddr>, ()> {
    match bytes.len() {
        0 => Ok(None),
        4 => Ok(Some(std::net::IpAddr::from(
            <[u8; 4]>::try_from(bytes).map_err(|_| ())?,
        ))),
        16 => Ok(Some(std::net::IpAddr::from(
            <[u8; 16]>::try_from(bytes).map_err(|_| ())?,
        ))),
        _ => Err(()),
    }
}

/// An error inside a transaction, before the path is attached.
enum Failure {
    Redb(redb::Error),
    Corrupt(String),
}

macro_rules! failure_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Failure {
                Failure::Redb(error.into())
            }
        }
    )*};
}

failure_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Failure {
    fn into_store_error(self, path: &Path, operation: &'static str) -> StoreError {
        match self {
            Failure::Redb(error) => classify(path, operation, error),
            Failure::Corrupt(detail) => StoreError::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
        }
    }
}

fn corrupt(detail: String) -> Failure {
    Failure::Corrupt(detail)
}

/// Sorts a redb error into the variants a user can act on.
fn classify(path: &Path, operation: &'static str, error: redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
        redb::Error::TableTypeMismatch { table, .. } => StoreError::Corrupt {
            path,
            detail: format!("table {table} has the wrong types: not a meshsync block store"),
        },
        // redb's word for a file that is not a redb database at all.
        redb::Error::Io(error) if error.kind() == io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path,
                detail: error.to_string(),
            }
        }
        redb::Error::Io(error) => StoreError::Io {
            path,
            operation,
            error,
        },
        error => StoreError::Database {
            path,
            operation,
            error: Box::new(error),
        },
    }
}

fn check_block_length(root: &Root, slot: u64, bytes: &[u8]) -> Result<(), Failure> {
    if bytes.len() > BLOCK_BYTES_MAX {
        return Err(corrupt(format!(
            "block {} at slot {slot} is {} bytes, more than {BLOCK_BYTES_MAX}",
            root,
            bytes.len()
        )));
    }
    Ok(())
}

fn read_block_bytes(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, Failure> {
    match meta.get(META_BLOCK_BYTES)? {
        None => Ok(0),
        Some(guard) => {
            let bytes: [u8; 8] = guard.value().try_into().map_err(|_| {
                corrupt(format!(
                    "{META_BLOCK_BYTES} is {} bytes, not 8",
                    guard.value().len()
                ))
            })?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

fn read_finalized(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<(Root, u64)>, Failure> {
    let Some(guard) = meta.get(META_FINALIZED)? else {
        return Ok(None);
    };
    let value = guard.value();
    if value.len() != CHECKPOINT_BYTES {
        return Err(corrupt(format!(
            "the finalized checkpoint is {} bytes, not {CHECKPOINT_BYTES}",
            value.len()
        )));
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&value[..32]);
    let mut slot = [0u8; 8];
    slot.copy_from_slice(&value[32..]);
    Ok(Some((Root(root), u64::from_be_bytes(slot))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    fn root(tag: u64, index: u8) -> Root {
        let mut root = [index; 32];
        root[..8].copy_from_slice(&tag.to_be_bytes());
        Root(root)
    }

    fn persist_owned(
        store: &mut BlockStore,
        blocks: &[(Root, u64, Vec<u8>)],
        finalized: Option<(Root, u64)>,
    ) -> Result<(), StoreError> {
        let borrowed: Vec<(Root, u64, &[u8])> = blocks
            .iter()
            .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
            .collect();
        store.persist(&borrowed, finalized)
    }

    /// Stored "blocks" whose bytes are their parent's root (and a fork at
    /// slot 3), for the finalized-chain index: `parent_of` reads them back.
    fn linked_chain(store: &mut BlockStore) -> Vec<(Root, u64, Vec<u8>)> {
        let mut parent = Root([0; 32]);
        let mut blocks = Vec::new();
        for slot in 1..=6u64 {
            let this = root(slot, 1);
            let mut bytes = parent.0.to_vec();
            bytes.resize(100 * slot as usize, 0xab);
            blocks.push((this, slot, bytes));
            parent = this;
        }
        blocks.push((root(3, 2), 3, root(2, 1).0.to_vec()));
        persist_owned(store, &blocks, Some((root(5, 1), 5))).unwrap();
        blocks
    }

    fn parent_of(bytes: &[u8]) -> Option<Root> {
        Some(Root(bytes.get(..32)?.try_into().ok()?))
    }

    #[test]
    fn the_finalized_chain_is_indexed_once_and_read_back_by_slot_within_limits() {
        let dir = TempDir::new("store-finalized-chain");
        let mut store = BlockStore::open(dir.path()).unwrap();
        let blocks = linked_chain(&mut store);
        // Nothing indexed yet: a read finds nothing, and says so honestly.
        assert_eq!(
            store.read_finalized_chain(1, 7, 100, usize::MAX).unwrap(),
            (Vec::new(), true)
        );
        // The walk from the finalized block (slot 5) down skips the fork.
        assert_eq!(store.index_finalized_chain(parent_of).unwrap(), 5);
        assert_eq!(store.index_finalized_chain(parent_of).unwrap(), 0, "once");
        let slots = |read: &[(Root, u64, Vec<u8>)]| -> Vec<(u64, Root)> {
            read.iter().map(|(root, slot, _)| (*slot, *root)).collect()
        };
        let (read, complete) = store.read_finalized_chain(1, 7, 100, usize::MAX).unwrap();
        assert!(complete);
        let canonical: Vec<(u64, Root)> = (1..=5).map(|slot| (slot, root(slot, 1))).collect();
        assert_eq!(slots(&read), canonical);
        assert_eq!(read[1].2, blocks[1].2, "the bytes as stored");
        // Limits stop the read at the first block that does not fit.
        let (read, complete) = store.read_finalized_chain(2, 6, 2, usize::MAX).unwrap();
        assert_eq!((slots(&read), complete), (canonical[1..3].to_vec(), false));
        let (read, complete) = store.read_finalized_chain(1, 6, 100, 100 + 200).unwrap();
        assert_eq!((slots(&read), complete), (canonical[..2].to_vec(), false));
        // Commits extend the index; a block missing under it ends a read.
        store
            .commit(&[], &[root(2, 1)], None, &[(6, root(6, 1))], None)
            .unwrap();
        let (read, complete) = store.read_finalized_chain(1, 7, 100, usize::MAX).unwrap();
        assert_eq!((slots(&read), complete), (canonical[..1].to_vec(), false));
        let (read, complete) = store.read_finalized_chain(3, 7, 100, usize::MAX).unwrap();
        assert!(complete);
        assert_eq!(read.last().map(|(_, slot, _)| *slot), Some(6));
    }

    #[test]
    fn round_trips_in_slot_then_root_order() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), StoredChain::default());
        let blocks = vec![
            (root(9, 0), 3, vec![3; 10]),
            (root(2, 1), 1, vec![1; 20]),
            (root(1, 2), 3, vec![4; 0]),
            (root(5, 3), 2, vec![2; BLOCK_BYTES_MAX]),
        ];
        persist_owned(&mut store, &blocks, Some((root(2, 1), 1))).unwrap();
        let chain = store.load().unwrap();
        let order: Vec<(u64, Root)> = chain.blocks.iter().map(|b| (b.slot, b.root)).collect();
        assert_eq!(
            order,
            vec![
                (1, root(2, 1)),
                (2, root(5, 3)),
                (3, root(1, 2)),
                (3, root(9, 0))
            ]
        );
        for (root, slot, bytes) in &blocks {
            let stored = chain.blocks.iter().find(|b| b.root == *root).unwrap();
            assert_eq!((&stored.slot, &stored.bytes), (slot, bytes));
            assert_eq!(store.block(root).unwrap().as_ref(), Some(bytes));
        }
        assert_eq!(chain.finalized, Some((root(2, 1), 1)));
        let total: u64 = blocks.iter().map(|(_, _, b)| b.len() as u64).sum();
        assert_eq!(
            store.stats().unwrap(),
            StoreStats {
                blocks: 4,
                block_bytes: total
            }
        );

        // Storing a block again changes nothing; no checkpoint keeps the old one.
        persist_owned(&mut store, &blocks[..1], None).unwrap();
        assert_eq!(store.load().unwrap(), chain);

        assert_eq!(store.delete(&[root(9, 0), root(7, 7)]).unwrap(), 1);
        assert_eq!(store.block(&root(9, 0)).unwrap(), None);
        assert_eq!(store.load().unwrap().blocks.len(), 3);
        assert_eq!(
            store.stats().unwrap(),
            StoreStats {
                blocks: 3,
                block_bytes: total - 10
            }
        );
    }

    #[test]
    fn one_commit_stores_deletes_and_records_finality_together() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        persist_owned(&mut store, &[(root(1, 0), 1, vec![1; 8])], None).unwrap();
        let new = [(root(2, 0), 2, [2u8; 5].as_slice())];
        let removed = store
            .commit(
                &new,
                &[root(1, 0), root(9, 9)],
                Some((root(2, 0), 2)),
                &[],
                None,
            )
            .unwrap();
        assert_eq!(removed, 1);
        let chain = store.load().unwrap();
        assert_eq!(chain.blocks.len(), 1);
        assert_eq!(chain.blocks[0].root, root(2, 0));
        assert_eq!(chain.finalized, Some((root(2, 0), 2)));
        assert_eq!(
            store.stats().unwrap(),
            StoreStats {
                blocks: 1,
                block_bytes: 5
            }
        );
    }

    #[test]
    fn oversized_blocks_are_refused_before_writing() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        let blocks = vec![
            (root(1, 0), 1, vec![0; 8]),
            (root(2, 0), 2, vec![0; BLOCK_BYTES_MAX + 1]),
        ];
        let error = persist_owned(&mut store, &blocks, None).unwrap_err();
        assert!(
            matches!(error, StoreError::BlockTooLarge { bytes, .. } if bytes == BLOCK_BYTES_MAX + 1),
            "{error}"
        );
        assert_eq!(store.stats().unwrap(), StoreStats::default());
    }

    #[test]
    fn survives_reopening() {
        let dir = TempDir::new("store");
        let blocks = vec![(root(1, 0), 1, vec![7; 100]), (root(2, 0), 2, vec![8; 200])];
        {
            let mut store = BlockStore::open(dir.path()).unwrap();
            persist_owned(&mut store, &blocks, Some((root(1, 0), 1))).unwrap();
        }
        let store = BlockStore::open(dir.path()).unwrap();
        let chain = store.load().unwrap();
        assert_eq!(chain.blocks.len(), 2);
        assert_eq!(chain.blocks[1].bytes, vec![8; 200]);
        assert_eq!(chain.finalized, Some((root(1, 0), 1)));
        assert_eq!(store.stats().unwrap().block_bytes, 300);
    }

    /// A signing watermark is committed with its batch, only ever raised,
    /// kept across a reopen, and carried over by a repair.
    #[test]
    fn signing_watermarks_only_rise_and_survive_reopening_and_repair() {
        let dir = TempDir::new("store");
        let key = |seed: u64| ProposerPublicKey::of(&meshsync_core::chain::devnet_keys(seed, 1)[0]);
        let mark = |seed: u64, slot: u64| SigningWatermark {
            proposer: key(seed),
            slot,
        };
        {
            let mut store = BlockStore::open(dir.path()).unwrap();
            assert_eq!(store.watermarks().unwrap(), vec![]);
            store.commit(&[], &[], None, &[], Some(mark(1, 5))).unwrap();
            store.commit(&[], &[], None, &[], Some(mark(1, 3))).unwrap();
            store.raise_watermarks(&[mark(1, 4), mark(2, 9)]).unwrap();
        }
        let expected = |mut marks: Vec<SigningWatermark>| {
            marks.sort_by_key(|mark| mark.proposer);
            marks
        };
        let store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(
            store.watermarks().unwrap(),
            expected(vec![mark(1, 5), mark(2, 9)])
        );
        drop(store);
        let report = BlockStore::repair(dir.path(), &StoreOptions::default(), 0).unwrap();
        assert!(report.moved_to.is_some());
        let store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(
            store.watermarks().unwrap(),
            expected(vec![mark(1, 5), mark(2, 9)])
        );
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_locked() {
        let dir = TempDir::new("store");
        let _store = BlockStore::open(dir.path()).unwrap();
        let error = BlockStore::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("locked"), "{text}");
        assert!(text.contains(STORE_FILE_NAME), "{text}");
    }

    #[test]
    fn damaged_values_are_reported_not_panicked_on() {
        let dir = TempDir::new("store");
        drop(BlockStore::open(dir.path()).unwrap());
        let path = dir.path().join(STORE_FILE_NAME);
        // Write what the store never would, straight through redb.
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut by_slot = transaction.open_table(BLOCKS).unwrap();
                let mut slots = transaction.open_table(SLOT_BY_ROOT).unwrap();
                let huge = vec![0u8; BLOCK_BYTES_MAX + 1];
                by_slot.insert((4, root(4, 0).0), huge.as_slice()).unwrap();
                slots.insert(root(4, 0).0, 4).unwrap();
            }
            transaction.commit().unwrap();
        }
        let store = BlockStore::open(dir.path()).unwrap();
        let error = store.load().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("more than"), "{text}");
        assert!(store.block(&root(4, 0)).is_err());
        drop(store);

        // A checkpoint of the wrong length.
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut by_slot = transaction.open_table(BLOCKS).unwrap();
                by_slot
                    .insert((4, root(4, 0).0), [1u8; 4].as_slice())
                    .unwrap();
                let mut meta = transaction.open_table(META).unwrap();
                meta.insert(META_FINALIZED, [0u8; 3].as_slice()).unwrap();
            }
            transaction.commit().unwrap();
        }
        let error = BlockStore::open(dir.path()).unwrap().load().unwrap_err();
        assert!(error.to_string().contains("checkpoint"), "{error}");

        // Tables that disagree: a block without its index entry.
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut slots = transaction.open_table(SLOT_BY_ROOT).unwrap();
                slots.remove(root(4, 0).0).unwrap();
                let mut meta = transaction.open_table(META).unwrap();
                meta.remove(META_FINALIZED).unwrap();
            }
            transaction.commit().unwrap();
        }
        let error = BlockStore::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_clear_error() {
        let dir = TempDir::new("store");
        let path = dir.path().join(STORE_FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let error = BlockStore::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains(STORE_FILE_NAME), "{error}");

        // A directory where the file should be.
        let dir = TempDir::new("store");
        std::fs::create_dir(dir.path().join(STORE_FILE_NAME)).unwrap();
        let error = BlockStore::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Io { .. }), "{error}");
    }

    /// Selects the child mode of [`crash_child`] and names its directory.
    const CRASH_CHILD_DIR_ENV: &str = "MESHSYNC_STORE_CRASH_CHILD_DIR";
    /// Commits the child makes at most, so it ends even if nobody kills it.
    const CRASH_CHILD_COMMITS_MAX: u64 = 10_000;
    /// Commits the parent hears about before it kills the child.
    const CRASH_KILL_AFTER_COMMITS: u64 = 12;

    /// The three blocks of commit `commit`: sizes vary so commits span pages.
    fn crash_blocks(commit: u64) -> Vec<(Root, u64, Vec<u8>)> {
        (0..3u8)
            .map(|index| {
                let bytes = 1 + (commit as usize * 7_919 + usize::from(index) * 104_729) % 150_000;
                let fill = (commit as u8) ^ index;
                (root(commit, index), commit + 1, vec![fill; bytes])
            })
            .collect()
    }

    /// The child side of [`blocks_reported_durable_survive_sigkill`]: a no-op
    /// unless the parent set [`CRASH_CHILD_DIR_ENV`].
    #[test]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_CHILD_DIR_ENV) else {
            return;
        };
        let mut store = BlockStore::open(Path::new(&dir)).unwrap();
        let mut stdout = io::stdout();
        for commit in 0..CRASH_CHILD_COMMITS_MAX {
            let blocks = crash_blocks(commit);
            persist_owned(&mut store, &blocks, Some((blocks[0].0, commit + 1))).unwrap();
            writeln!(stdout, "durable {commit}").unwrap();
            stdout.flush().unwrap();
        }
    }

    #[test]
    fn blocks_reported_durable_survive_sigkill() {
        let dir = TempDir::new("store-crash");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "store::tests::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut durable = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(commit) = line.strip_prefix("durable ") {
                let commit: u64 = commit.parse().unwrap();
                durable = Some(commit);
                if commit + 1 >= CRASH_KILL_AFTER_COMMITS {
                    break;
                }
            }
        }
        // SIGKILL on Unix: no destructor, no flush, possibly mid-commit.
        child.kill().unwrap();
        child.wait().unwrap();
        let durable = durable.expect("the child reported commits");
        assert_eq!(
            durable + 1,
            CRASH_KILL_AFTER_COMMITS,
            "the child stopped early"
        );

        let store = BlockStore::open(dir.path()).unwrap();
        let chain = store.load().unwrap();
        for commit in 0..=durable {
            for (root, slot, bytes) in crash_blocks(commit) {
                let stored = store.block(&root).unwrap();
                assert_eq!(stored.as_ref(), Some(&bytes), "commit {commit} lost");
                assert!(chain
                    .blocks
                    .iter()
                    .any(|b| b.root == root && b.slot == slot));
            }
        }
        // Commits after the last one reported may or may not have landed,
        // but whatever did is whole.
        let commits = chain.blocks.len() as u64 / 3;
        assert_eq!(chain.blocks.len() as u64 % 3, 0, "a commit landed in part");
        assert!(commits > durable);
        let (_, finalized_slot) = chain.finalized.unwrap();
        assert_eq!(finalized_slot, commits);
        for block in &chain.blocks {
            let commit = block.slot - 1;
            let expected = crash_blocks(commit);
            assert!(expected
                .iter()
                .any(|(root, _, bytes)| *root == block.root && *bytes == block.bytes));
        }
    }

    fn known_peers() -> KnownPeers {
        use meshsync_core::discovery::Record;
        use meshsync_core::Identity;
        let record = |seed: u64| {
            Record::sign(
                &Identity::from_seed(seed),
                1,
                seed,
                &["203.0.113.7:9000".parse().unwrap()],
            )
            .encode()
        };
        let peer = |seed: u64| Identity::from_seed(seed).peer_id();
        KnownPeers {
            records: vec![
                KnownRecord {
                    record: record(1),
                    last_seen_unix_ms: 1_700_000_000_000,
                },
                KnownRecord {
                    record: record(2),
                    last_seen_unix_ms: 1_600_000_000_000,
                },
            ],
            scores: vec![
                KnownScore {
                    peer: peer(1),
                    score_micropoints: -42_000_000,
                    at_unix_ms: 1_700_000_000_500,
                    last_ip: Some("203.0.113.7".parse().unwrap()),
                },
                KnownScore {
                    peer: peer(3),
                    score_micropoints: 7,
                    at_unix_ms: 1_700_000_000_500,
                    last_ip: None,
                },
            ],
            peer_bans: vec![KnownPeerBan {
                peer: peer(1),
                ip: Some("2001:db8::".parse().unwrap()),
                until_unix_ms: 1_700_003_600_000,
            }],
            ip_bans: vec![KnownIpBan {
                ip: "203.0.113.7".parse().unwrap(),
                until_unix_ms: 1_700_003_600_000,
            }],
        }
    }

    /// Sorted as the store reads them back (by key).
    fn sorted(mut known: KnownPeers) -> KnownPeers {
        known
            .records
            .sort_by(|a, b| a.record[1..33].cmp(&b.record[1..33]));
        known.scores.sort_by_key(|score| *score.peer.as_bytes());
        known.peer_bans.sort_by_key(|ban| *ban.peer.as_bytes());
        known
    }

    #[test]
    fn the_peer_store_round_trips_and_a_snapshot_replaces_the_last() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.known_peers().unwrap(), KnownPeers::default());
        let known = known_peers();
        store.save_known_peers(&known).unwrap();
        drop(store);
        let mut store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.known_peers().unwrap(), sorted(known.clone()));

        // A smaller snapshot leaves nothing of the bigger one behind.
        let mut smaller = known;
        smaller.records.truncate(1);
        smaller.scores.clear();
        smaller.ip_bans.clear();
        store.save_known_peers(&smaller).unwrap();
        assert_eq!(store.known_peers().unwrap(), smaller);
    }

    #[test]
    fn a_data_dir_from_before_the_peer_store_opens_with_an_empty_one() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        let blocks = vec![(root(1, 1), 1, vec![1; 10])];
        persist_owned(&mut store, &blocks, None).unwrap();
        store.save_known_peers(&known_peers()).unwrap();
        drop(store);
        // The peer tables removed, as in a file an older build wrote.
        let database = Database::open(dir.path().join(STORE_FILE_NAME)).unwrap();
        let transaction = database.begin_write().unwrap();
        assert!(transaction.delete_table(PEER_RECORDS).unwrap());
        assert!(transaction.delete_table(PEER_SCORES).unwrap());
        assert!(transaction.delete_table(PEER_BANS).unwrap());
        assert!(transaction.delete_table(IP_BANS).unwrap());
        transaction.commit().unwrap();
        drop(database);

        let mut store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.known_peers().unwrap(), KnownPeers::default());
        assert_eq!(store.load().unwrap().blocks.len(), 1);
        store.save_known_peers(&known_peers()).unwrap();
        assert_eq!(store.known_peers().unwrap(), sorted(known_peers()));
    }

    #[test]
    fn unreadable_peer_rows_are_skipped() {
        let dir = TempDir::new("store");
        let mut store = BlockStore::open(dir.path()).unwrap();
        store.save_known_peers(&known_peers()).unwrap();
        store
            .write("damage", |transaction| {
                let mut bans = transaction.open_table(IP_BANS)?;
                bans.insert([1u8, 2, 3].as_slice(), 5)?;
                let mut scores = transaction.open_table(PEER_SCORES)?;
                scores.insert([9u8; 32], (1i64, 2u64, [0u8; 7].as_slice()))?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.known_peers().unwrap(), sorted(known_peers()));
    }
}
