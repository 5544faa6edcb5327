//! The durable block store: where `Action::Persist` lands and where the
//! chain comes back from at start-up.
//!
//! # Design
//! One redb file, `DIR/blocks.redb`. To the store a block is opaque bytes
//! named by its 32-byte root and its slot; decoding and verifying them is the
//! core's job once they are fed back in. Three tables:
//!
//! | table | key | value | why |
//! | --- | --- | --- | --- |
//! | `blocks_v1` | (slot u64, root) | block bytes | iteration order is (slot, root): the core re-imports parents before children without a sort |
//! | `slot_by_root_v1` | root | slot u64 | find (and delete) a block by root alone |
//! | `meta_v1` | name | bytes | `finalized` (root ‖ slot BE, 40 bytes), `block_bytes` (u64 BE) |
//!
//! Every [`BlockStore::commit`] (one `Action::Persist` batch: blocks,
//! deletions and the finalized checkpoint together), [`BlockStore::persist`]
//! and [`BlockStore::delete`] is one redb write
//! transaction committed with `Durability::Immediate` (redb's default): when
//! the call returns, the data is on disk, so a block may then be announced as
//! imported (design.md §1). A crash mid-commit leaves the previous commit.
//!
//! # Security
//! *Provided*: stored values are checked when read ([`BLOCK_BYTES_MAX`], the
//! two tables agreeing, the checkpoint's length); a file damaged on disk is
//! reported as [`StoreError::Corrupt`] naming the path, never a panic. The
//! file is locked while open, so two nodes cannot share one directory.
//!
//! *Not provided*: blocks are not re-verified here (the core verifies what it
//! re-imports); no protection against someone who can write the file.
//!
//! # Limits
//! A block is at most [`BLOCK_BYTES_MAX`] bytes (the core's largest signed
//! block); redb's page cache is capped at [`STORE_CACHE_BYTES`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use meshsync_core::chain::block::SIGNED_BLOCK_BYTES_MAX;
use meshsync_core::chain::Root;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
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
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const META_FINALIZED: &str = "finalized";
const META_BLOCK_BYTES: &str = "block_bytes";

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
            StoreError::Corrupt { path, detail } => {
                write!(f, "block store {} is corrupt: {detail}", path.display())
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
                hex(root)
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
    /// if needed. Fails with the path and the reason when the file cannot be
    /// created or read, is not a store, or is open elsewhere.
    pub fn open(dir: &Path) -> Result<BlockStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
            path: dir.to_path_buf(),
            operation: "create directory",
            error,
        })?;
        let path = dir.join(STORE_FILE_NAME);
        let database = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)
            .map_err(|error| classify(&path, "open", error.into()))?;
        let store = BlockStore { database, path };
        // Create the tables, so readers never meet a missing one.
        store.write("create tables", |transaction| {
            transaction.open_table(BLOCKS)?;
            transaction.open_table(SLOT_BY_ROOT)?;
            transaction.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
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
        self.commit(blocks, &[], finalized).map(|_| ())
    }

    /// Removes the blocks with these roots (forks the core pruned), in one
    /// durable transaction. Unknown roots are ignored; returns how many were removed.
    pub fn delete(&mut self, roots: &[Root]) -> Result<usize, StoreError> {
        self.commit(&[], roots, None)
    }

    /// One `Action::Persist` batch as one durable transaction: stores
    /// `blocks`, then removes `delete` (a root in both ends up removed: the
    /// core forgot it), then records `finalized` if given. Nothing is written
    /// if any block is larger than [`BLOCK_BYTES_MAX`]. Returns how many
    /// blocks were removed.
    pub fn commit(
        &mut self,
        blocks: &[(Root, u64, &[u8])],
        delete: &[Root],
        finalized: Option<(Root, u64)>,
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
                if let Some(old_slot) = slots.insert(root, slot)?.map(|guard| guard.value()) {
                    // A root names one header and so one slot; a differing
                    // old slot is damage, and the new entry replaces it.
                    if let Some(old) = by_slot.remove((old_slot, *root))? {
                        block_bytes = block_bytes.saturating_sub(old.value().len() as u64);
                    }
                }
                by_slot.insert((*slot, *root), *bytes)?;
                block_bytes = block_bytes.saturating_add(bytes.len() as u64);
            }
            let mut removed = 0;
            for root in delete {
                let Some(slot) = slots.remove(root)?.map(|guard| guard.value()) else {
                    continue;
                };
                if let Some(old) = by_slot.remove((slot, *root))? {
                    block_bytes = block_bytes.saturating_sub(old.value().len() as u64);
                }
                removed += 1;
            }
            meta.insert(META_BLOCK_BYTES, block_bytes.to_be_bytes().as_slice())?;
            if let Some((root, slot)) = finalized {
                let mut checkpoint = [0u8; CHECKPOINT_BYTES];
                checkpoint[..32].copy_from_slice(&root);
                checkpoint[32..].copy_from_slice(&slot.to_be_bytes());
                meta.insert(META_FINALIZED, checkpoint.as_slice())?;
            }
            Ok(removed)
        })
    }

    /// The bytes of the block with root `root`, if stored.
    pub fn block(&self, root: &Root) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("read block", |transaction| {
            let slots = transaction.open_table(SLOT_BY_ROOT)?;
            let by_slot = transaction.open_table(BLOCKS)?;
            let Some(slot) = slots.get(root)?.map(|guard| guard.value()) else {
                return Ok(None);
            };
            let bytes = by_slot.get((slot, *root))?.ok_or_else(|| {
                corrupt(format!(
                    "block {} is indexed at slot {slot} but not stored",
                    hex(root)
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
            for entry in by_slot.iter()? {
                let (key, value) = entry?;
                let (slot, root) = key.value();
                let bytes = value.value();
                check_block_length(&root, slot, bytes)?;
                let indexed = slots.get(&root)?.map(|guard| guard.value());
                if indexed != Some(slot) {
                    return Err(corrupt(format!(
                        "block {} at slot {slot} is indexed at {indexed:?}",
                        hex(&root)
                    )));
                }
                visit(root, slot, bytes);
            }
            read_finalized(&meta)
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
        let run = || -> Result<T, Failure> {
            let mut transaction = self.database.begin_write()?;
            // redb's default, stated because the design depends on it: the
            // commit is on disk when `commit` returns.
            transaction.set_durability(Durability::Immediate)?;
            let value = body(&transaction)?;
            transaction.commit()?;
            Ok(value)
        };
        run().map_err(|failure| failure.into_store_error(&self.path, operation))
    }

    /// Runs `body` in a read transaction.
    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let run = || -> Result<T, Failure> {
            let transaction = self.database.begin_read()?;
            body(&transaction)
        };
        run().map_err(|failure| failure.into_store_error(&self.path, operation))
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
            hex(root),
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
    Ok(Some((root, u64::from_be_bytes(slot))))
}

/// The first 8 bytes of a root in hex, enough to name it in a message.
fn hex(root: &Root) -> String {
    root[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    fn root(tag: u64, index: u8) -> Root {
        let mut root = [index; 32];
        root[..8].copy_from_slice(&tag.to_be_bytes());
        root
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
            .commit(&new, &[root(1, 0), root(9, 9)], Some((root(2, 0), 2)))
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
                by_slot.insert((4, root(4, 0)), huge.as_slice()).unwrap();
                slots.insert(root(4, 0), 4).unwrap();
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
                    .insert((4, root(4, 0)), [1u8; 4].as_slice())
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
                slots.remove(root(4, 0)).unwrap();
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
}
