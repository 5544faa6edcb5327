//! The chain store: verified blocks, fork choice, finality and pruning.
//!
//! # Design
//! [`ChainStore`] holds verified blocks by root, the parent → child links
//! between them, and the canonical chain by slot. The genesis is an anchor at
//! slot 0 (its root, no block). Every import keeps four rules:
//!
//! - **Fork choice**: the head is the block with the highest slot; between
//!   blocks of one slot, the one with the lower root.
//! - **Canonical chain**: the head and its ancestors, indexed by slot (slots
//!   without a block are absent). A head on another fork rewrites the index
//!   from the common ancestor up.
//! - **Finality**: the finalized block is the head's ancestor with the highest
//!   slot at least `finality_depth_slots` below the head (genesis while the
//!   head is lower). It only moves forward: a block at or below the finalized
//!   slot, or on a fork from below it, is refused.
//! - **Pruning**: when the finalized block moves, every block that neither
//!   descends from it nor is one of its ancestors is dropped (forks that
//!   finality ruled out), and reported so the driver can delete them.
//!
//! Blocks must be verified before [`ChainStore::import`]
//! ([`verify_block`](super::verify::verify_block) or
//! [`verify_batch`](super::verify::verify_batch)); the store checks only how
//! a block fits the chain. Roots that failed verification are remembered in a
//! bounded set, so they are never fetched or verified twice, and a block
//! whose parent is known invalid is itself remembered as invalid.
//!
//! Every map is a `BTreeMap`/`BTreeSet`: iteration order never depends on a
//! random hasher. The maps sit behind `Arc`s and are copied on their first
//! change (`Arc::make_mut`), so a clone of a store costs a few reference
//! counts until it diverges ([`ChainStore::for_config`]). Blocks stored
//! at start-up that form one chain on the head are loaded in one sorted
//! pass per index, as importing them one by one would store them; a store
//! built with [`ChainStore::sharing_stored`] reads them where its config
//! holds them instead of copying them.
//!
//! # Security
//! *Provided*: bounded memory whatever blocks arrive (see Limits); no
//! recursion (ancestry walks are loops over at most the stored blocks); a
//! block far below the head cannot rewrite finalized history.
//!
//! *Not provided*: signature checks (done before import) and slashing of
//! proposers that sign two blocks for one slot (both are kept as forks).
//!
//! # Limits
//! At most [`StoreLimits::blocks_max`] blocks and
//! [`StoreLimits::bytes_max`] encoded bytes (a node takes
//! [`StoreLimits::for_finality_depth`]: memory independent of the chain's
//! length). When an import would pass
//! either, the oldest finalized history (the ancestors of the finalized
//! block, lowest slot first) is evicted from memory; it stays durable in the
//! driver's store, which serves it from there (below
//! [`ChainStore::history_floor`]; the node's `history.rs`). A store rebuilt
//! at start-up from its finalized block up holds no history at all until
//! more is finalized. Then whole forks are dropped,
//! the one branching off lowest first (a proposer that signs many blocks
//! for its slots cannot stall the chain by filling the store). Only if the
//! canonical chain above finality and the new block's own ancestors fill the
//! store does the import fail with [`ImportError::Full`], changing nothing.
//! At most [`StoreLimits::invalid_roots_max`] invalid roots are remembered;
//! the oldest is forgotten first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use super::block::SignedBlock;
use super::block::BLOCK_BYTES_MAX;
use super::genesis::{Genesis, FINALITY_DEPTH_SLOTS_MAX};
use super::Root;
use crate::types::Status;

/// Blocks the store holds by default: 65 536 slots of history (36 hours at
/// 2 s slots) for serving range requests from memory.
pub const STORE_BLOCKS_MAX: usize = 65_536;
/// Encoded bytes the store holds by default: 512 MiB, twice the largest
/// unfinalized window of full blocks, so history can always make room.
pub const STORE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Invalid roots remembered by default: 8 192 (256 KiB), several sync
/// batches' worth of a hostile peer's blocks.
pub const INVALID_ROOTS_MAX: usize = 8_192;

const _: () =
    assert!(STORE_BYTES_MAX as u64 >= 2 * FINALITY_DEPTH_SLOTS_MAX * BLOCK_BYTES_MAX as u64);
const _: () = assert!(STORE_BLOCKS_MAX as u64 >= 2 * FINALITY_DEPTH_SLOTS_MAX);

/// The bounds of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most blocks held.
    pub blocks_max: usize,
    /// Most encoded bytes of blocks held.
    pub bytes_max: usize,
    /// Most invalid roots remembered.
    pub invalid_roots_max: usize,
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits {
            blocks_max: STORE_BLOCKS_MAX,
            bytes_max: STORE_BYTES_MAX,
            invalid_roots_max: INVALID_ROOTS_MAX,
        }
    }
}

impl StoreLimits {
    /// The default limits for a chain whose finality trails its head by
    /// `finality_depth_slots`: bytes for twice the unfinalized window of
    /// the largest blocks, plus two (the window from the finalized block up,
    /// and forks of it), so a chain of full blocks never fills the store
    /// above finality; everything older is evicted to disk first. 130 MiB
    /// at the default depth of 64 slots, whatever the chain's length.
    pub fn for_finality_depth(finality_depth_slots: u64) -> StoreLimits {
        let window_blocks = finality_depth_slots
            .min(FINALITY_DEPTH_SLOTS_MAX)
            .saturating_mul(2)
            .saturating_add(2);
        StoreLimits {
            bytes_max: usize::try_from(window_blocks)
                .unwrap_or(usize::MAX)
                .saturating_mul(BLOCK_BYTES_MAX),
            ..StoreLimits::default()
        }
    }
}

/// A block named by root and slot (the genesis: its root and slot 0).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct Checkpoint {
    /// The block's root.
    pub root: Root,
    /// Its slot.
    pub slot: u64,
}

/// What an import changed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ImportOutcome {
    /// The block was stored.
    Imported(Imported),
    /// The block was stored already; nothing changed.
    AlreadyKnown {
        /// Its root.
        root: Root,
    },
}

/// The effects of storing one block.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Imported {
    /// The block's root.
    pub root: Root,
    /// The new head, if the head changed (to this block).
    pub head: Option<Checkpoint>,
    /// The new finalized block, if finality moved.
    pub finalized: Option<Checkpoint>,
    /// Blocks dropped that are not finalized history: forks that finality
    /// ruled out, or forks dropped to make room. The driver may delete them
    /// from durable storage.
    pub pruned: Vec<Root>,
    /// Finalized history evicted from memory to make room: still durable,
    /// no longer served from memory.
    pub evicted: Vec<Root>,
}

/// Why a block was not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The block's root is remembered as invalid.
    KnownInvalid(Root),
    /// The parent is remembered as invalid; the block now is too.
    InvalidParent(Root),
    /// The parent is not stored: fetch it (a parent lookup) and retry.
    UnknownParent(Root),
    /// The block's slot is not above its parent's.
    SlotNotAfterParent {
        /// The block's slot.
        slot: u64,
        /// The parent's slot.
        parent_slot: u64,
    },
    /// The block is at or below the finalized slot, or builds on a block
    /// finality ruled out: it can never be canonical.
    ConflictsWithFinalized {
        /// The block's slot.
        slot: u64,
        /// The finalized slot.
        finalized_slot: u64,
    },
    /// The canonical chain above finality and the block's ancestors fill the
    /// store; nothing was changed.
    Full,
    /// The block's slot is beyond what the clock allows: fork choice by
    /// highest slot would otherwise take a head from the future (checked by
    /// the node, which knows the clock, before the store sees the block).
    FutureSlot {
        /// The block's slot.
        slot: u64,
        /// The highest slot the clock allowed.
        slot_max: u64,
    },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::KnownInvalid(root) => {
                write!(f, "block {} is known invalid", root)
            }
            ImportError::InvalidParent(root) => {
                write!(f, "parent {} is known invalid", root)
            }
            ImportError::UnknownParent(root) => write!(f, "parent {} is unknown", root),
            ImportError::SlotNotAfterParent { slot, parent_slot } => {
                write!(
                    f,
                    "block at slot {slot} is not after its parent's slot {parent_slot}"
                )
            }
            ImportError::ConflictsWithFinalized {
                slot,
                finalized_slot,
            } => write!(
                f,
                "block at slot {slot} conflicts with the finalized slot {finalized_slot}"
            ),
            ImportError::Full => write!(f, "chain store is full above finality"),
            ImportError::FutureSlot { slot, slot_max } => {
                write!(
                    f,
                    "block at slot {slot} is beyond the clock's slot {slot_max}"
                )
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// Verified blocks, fork choice and finality (see the module docs).
#[derive(Clone, Debug)]
pub struct ChainStore {
    network_id: u64,
    finality_depth_slots: u64,
    genesis_root: Root,
    limits: StoreLimits,
    /// Every stored block by root, each allocated once and shared with the
    /// canonical index (the map's nodes hold roots and pointers, not
    /// 200-byte blocks).
    ///
    /// This map and the three indexes below are shared between clones of
    /// the store until one of them changes (`Arc::make_mut`): a clone costs
    /// four reference counts, so a driver that starts many nodes on one
    /// stored chain builds the store once ([`ChainStore::for_config`]).
    blocks: Arc<BTreeMap<Root, HeldBlock>>,
    /// Every stored block by (slot, root): eviction order and slot scans.
    by_slot: Arc<BTreeSet<(u64, Root)>>,
    /// (parent, child) for every stored child.
    children: Arc<BTreeSet<(Root, Root)>>,
    /// The canonical chain: slot → its block, for retained slots up to the head.
    canonical: Arc<BTreeMap<u64, CanonicalEntry>>,
    head: Checkpoint,
    finalized: Checkpoint,
    bytes: usize,
    invalid: InvalidRoots,
    /// The history anchor the store was built on, if any: finalized by the
    /// driver that loaded it, not by depth (for `assert_invariants`).
    anchor: Option<Checkpoint>,
}

/// A slot of the canonical chain: its block's root, and the block itself,
/// shared with [`ChainStore`]'s map by root, so that a range (a BlocksByRange
/// answer) is read off this index without searching that map once per slot.
#[derive(Clone, Debug)]
struct CanonicalEntry {
    root: Root,
    block: HeldBlock,
}

/// Where a stored block's bytes live: allocated by the store at import, or
/// in place in a slice of blocks the store was built from and shares with
/// whoever else holds it ([`ChainStore::sharing_stored`]). Either way it
/// reads as the block, and cloning it costs a reference count.
#[derive(Clone)]
enum HeldBlock {
    Own(Arc<SignedBlock>),
    Shared {
        blocks: Arc<[SignedBlock]>,
        index: usize,
    },
}

impl std::ops::Deref for HeldBlock {
    type Target = SignedBlock;

    fn deref(&self) -> &SignedBlock {
        match self {
            HeldBlock::Own(block) => block,
            HeldBlock::Shared { blocks, index } => &blocks[*index],
        }
    }
}

impl fmt::Debug for HeldBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl ChainStore {
    /// An empty store (only genesis) with the default limits.
    pub fn new(genesis: &Genesis) -> ChainStore {
        ChainStore::with_limits(genesis, StoreLimits::default())
    }

    /// An empty store with these limits.
    ///
    /// # Panics
    /// If a limit is zero.
    pub fn with_limits(genesis: &Genesis, limits: StoreLimits) -> ChainStore {
        assert!(limits.blocks_max > 0 && limits.bytes_max > 0 && limits.invalid_roots_max > 0);
        let anchor = Checkpoint {
            root: genesis.root(),
            slot: 0,
        };
        ChainStore {
            network_id: genesis.network_id(),
            finality_depth_slots: genesis.finality_depth_slots(),
            genesis_root: genesis.root(),
            limits,
            blocks: Arc::default(),
            by_slot: Arc::default(),
            children: Arc::default(),
            canonical: Arc::default(),
            head: anchor,
            finalized: anchor,
            bytes: 0,
            invalid: InvalidRoots::new(limits.invalid_roots_max),
            anchor: None,
        }
    }

    /// Rebuilds a store at start-up from blocks the driver persisted (any
    /// order; they were verified before they were persisted). Blocks that do
    /// not fit (unknown parent, ruled out by finality) are returned with the
    /// reason, and are not stored. All of `blocks` is collected and sorted
    /// by slot first, so the driver should feed what it wants held (the
    /// store then evicts down to its limits, oldest history first).
    ///
    /// `anchor` names the finalized block the driver loaded from (its
    /// history below stays on disk, see [`ChainStore::history_floor`]):
    /// that block is taken as finalized without its parent, and the others
    /// build on it. `None`, or an anchor that is not among `blocks`: every
    /// block must reach back to the genesis.
    pub fn from_blocks(
        genesis: &Genesis,
        limits: StoreLimits,
        anchor: Option<Root>,
        blocks: impl IntoIterator<Item = SignedBlock>,
    ) -> (ChainStore, Vec<(Root, ImportError)>) {
        let held = blocks
            .into_iter()
            .map(|block| (block.root(), HeldBlock::Own(Arc::new(block))));
        ChainStore::from_held(genesis, limits, anchor, held)
    }

    /// The store a node builds from `chain` at start-up: its stored blocks
    /// under the limits of its genesis's finality depth, from its history
    /// anchor up ([`ChainStore::from_blocks`]). A clone of the result is a
    /// node's store as much as a second call's (and costs four reference
    /// counts): see [`crate::node::Node::with_chain_store`].
    pub fn for_config(chain: &super::ChainConfig) -> (ChainStore, Vec<(Root, ImportError)>) {
        ChainStore::from_blocks(
            &chain.genesis,
            StoreLimits::for_finality_depth(chain.genesis.finality_depth_slots()),
            chain.history_anchor,
            chain.stored.iter().cloned(),
        )
    }

    /// The store [`ChainStore::for_config`] builds, holding `chain.stored`'s
    /// blocks in place instead of copying each one: the same blocks, head,
    /// finality and answers, without a second copy of every body.
    ///
    /// The price is memory: the whole slice stays allocated while any one
    /// of its blocks is stored, even after the store evicted the others, so
    /// the store can pin up to one slice beyond its own limits. That suits a
    /// driver that keeps the slice anyway, such as a simulator starting many
    /// nodes on one chain; a node that drops its stored blocks after
    /// start-up should take [`ChainStore::for_config`], which copies.
    pub fn sharing_stored(chain: &super::ChainConfig) -> (ChainStore, Vec<(Root, ImportError)>) {
        let held = chain.stored.iter().enumerate().map(|(index, block)| {
            let held = HeldBlock::Shared {
                blocks: Arc::clone(&chain.stored),
                index,
            };
            (block.root(), held)
        });
        ChainStore::from_held(
            &chain.genesis,
            StoreLimits::for_finality_depth(chain.genesis.finality_depth_slots()),
            chain.history_anchor,
            held,
        )
    }

    /// [`ChainStore::from_blocks`] over blocks already held, each with its
    /// root (computed once, for the order and the import).
    fn from_held(
        genesis: &Genesis,
        limits: StoreLimits,
        anchor: Option<Root>,
        blocks: impl IntoIterator<Item = (Root, HeldBlock)>,
    ) -> (ChainStore, Vec<(Root, ImportError)>) {
        let mut store = ChainStore::with_limits(genesis, limits);
        let mut sorted: BTreeMap<(u64, Root), HeldBlock> = blocks
            .into_iter()
            .map(|(root, block)| ((block.slot(), root), block))
            .collect();
        let anchor_key = sorted
            .keys()
            .find(|(_, root)| Some(*root) == anchor)
            .copied();
        if let Some(key) = anchor_key {
            let block = sorted.remove(&key).expect("the anchor was found");
            store.set_anchor(key.1, block);
        }
        let sorted: Vec<(Root, HeldBlock)> = sorted
            .into_iter()
            .map(|((_, root), block)| (root, block))
            .collect();
        if store.takes_whole_chain(&sorted) {
            store.load_chain(sorted);
            return (store, Vec::new());
        }
        let mut refused = Vec::new();
        for (root, block) in sorted {
            if let Err(error) = store.import_held(root, block) {
                refused.push((root, error));
            }
        }
        (store, refused)
    }

    /// Whether importing `blocks` one by one, in order, would store them
    /// all and make each the head in turn: they are one chain on the head
    /// (each the parent of the next, at a higher slot), none known invalid,
    /// and all of them fit in the limits (nothing refused, evicted or
    /// pruned). What a driver stored of one chain usually is.
    fn takes_whole_chain(&self, blocks: &[(Root, HeldBlock)]) -> bool {
        let mut parent = self.head;
        let mut bytes = self.bytes;
        for (root, block) in blocks {
            if block.parent_root() != parent.root
                || block.slot() <= parent.slot
                || self.invalid.contains(root)
            {
                return false;
            }
            bytes = bytes.saturating_add(block.encoded_len());
            parent = Checkpoint {
                root: *root,
                slot: block.slot(),
            };
        }
        self.blocks.len().saturating_add(blocks.len()) <= self.limits.blocks_max
            && bytes <= self.limits.bytes_max
    }

    /// Stores `blocks`, which [`ChainStore::takes_whole_chain`] accepted,
    /// as importing them one by one would, but fills each index in one
    /// sorted pass rather than one search per block: the last block is the
    /// head, every block is canonical, and finality moves to where the last
    /// import would have left it (no fork, so nothing to prune).
    fn load_chain(&mut self, blocks: Vec<(Root, HeldBlock)>) {
        let Some((head_root, head_block)) = blocks.last() else {
            return;
        };
        let head = Checkpoint {
            root: *head_root,
            slot: head_block.slot(),
        };
        self.bytes += blocks
            .iter()
            .map(|(_, block)| block.encoded_len())
            .sum::<usize>();
        let by_slot = blocks.iter().map(|(root, block)| (block.slot(), *root));
        self.by_slot = Arc::new(self.by_slot.iter().copied().chain(by_slot).collect());
        let children = blocks
            .iter()
            .map(|(root, block)| (block.parent_root(), *root));
        self.children = Arc::new(self.children.iter().copied().chain(children).collect());
        let canonical = blocks.iter().map(|(root, block)| {
            let entry = CanonicalEntry {
                root: *root,
                block: block.clone(),
            };
            (block.slot(), entry)
        });
        let canonical = self
            .canonical
            .iter()
            .map(|(&slot, entry)| (slot, entry.clone()))
            .chain(canonical)
            .collect();
        self.canonical = Arc::new(canonical);
        let stored = self
            .blocks
            .iter()
            .map(|(&root, block)| (root, block.clone()))
            .chain(blocks)
            .collect();
        self.blocks = Arc::new(stored);
        self.head = head;
        let moved = self.advance_finality();
        debug_assert!(
            moved.is_none_or(|(_, pruned)| pruned.is_empty()),
            "one chain has no fork to prune"
        );
    }

    /// Makes `block` the store's only block, its head and its finalized
    /// block: the top of finalized history held on disk.
    fn set_anchor(&mut self, root: Root, block: HeldBlock) {
        debug_assert!(self.blocks.is_empty(), "the anchor comes first");
        let checkpoint = Checkpoint {
            root,
            slot: block.slot(),
        };
        if checkpoint.slot == 0 {
            return; // Not a block: the genesis is the anchor already.
        }
        self.bytes += block.encoded_len();
        Arc::make_mut(&mut self.by_slot).insert((checkpoint.slot, checkpoint.root));
        if block.parent_root() == self.genesis_root {
            // The one parent an anchor can have in the store: the link is
            // kept as an import keeps it.
            Arc::make_mut(&mut self.children).insert((block.parent_root(), checkpoint.root));
        }
        let entry = CanonicalEntry {
            root: checkpoint.root,
            block: block.clone(),
        };
        Arc::make_mut(&mut self.canonical).insert(checkpoint.slot, entry);
        Arc::make_mut(&mut self.blocks).insert(checkpoint.root, block);
        self.head = checkpoint;
        self.finalized = checkpoint;
        self.anchor = Some(checkpoint);
    }

    // --- Queries --------------------------------------------------------------

    /// The head: highest slot, ties to the lower root (genesis if no block).
    pub fn head(&self) -> Checkpoint {
        self.head
    }

    /// The finalized block (genesis until the head is deep enough).
    pub fn finalized(&self) -> Checkpoint {
        self.finalized
    }

    /// The genesis root.
    pub fn genesis_root(&self) -> Root {
        self.genesis_root
    }

    /// Our Status for the req/resp layer.
    pub fn status(&self) -> Status {
        Status {
            network_id: self.network_id,
            finalized_root: self.finalized.root,
            finalized_slot: self.finalized.slot,
            head_root: self.head.root,
            head_slot: self.head.slot,
        }
    }

    /// The stored block with this root.
    pub fn block_by_root(&self, root: &Root) -> Option<&SignedBlock> {
        self.blocks.get(root).map(|block| &**block)
    }

    /// Whether `root` is stored or is the genesis.
    pub fn contains(&self, root: &Root) -> bool {
        *root == self.genesis_root || self.blocks.contains_key(root)
    }

    /// The canonical block at `slot`, if the canonical chain has one there
    /// (and it was not evicted).
    pub fn canonical_block_at(&self, slot: u64) -> Option<&SignedBlock> {
        self.canonical.get(&slot).map(|entry| &*entry.block)
    }

    /// The canonical blocks at slots `above_slot + 1 ..= to_slot` held in
    /// memory, lowest first, as checkpoints.
    pub fn canonical_checkpoints(&self, above_slot: u64, to_slot: u64) -> Vec<Checkpoint> {
        if to_slot <= above_slot {
            return Vec::new();
        }
        self.canonical
            .range(above_slot + 1..=to_slot)
            .map(|(&slot, entry)| Checkpoint {
                root: entry.root,
                slot,
            })
            .collect()
    }

    /// The canonical blocks at slots `start_slot .. start_slot + count`
    /// (saturating), in slot order: one chain, each block the parent of the
    /// next, as a BlocksByRange answer needs.
    pub fn canonical_range(&self, start_slot: u64, count: u64) -> Vec<&SignedBlock> {
        if count == 0 {
            return Vec::new();
        }
        let last_slot = start_slot.saturating_add(count - 1);
        // Room for the whole range at once (a range iterator gives no size
        // hint), never more than the index holds.
        let capacity = usize::try_from(count).unwrap_or(usize::MAX);
        let mut blocks = Vec::with_capacity(capacity.min(self.canonical.len()));
        blocks.extend(
            self.canonical
                .range(start_slot..=last_slot)
                .map(|(_, entry)| &*entry.block),
        );
        blocks
    }

    /// The lowest canonical slot held in memory, when the finalized history
    /// below it was evicted (or left on disk at start-up): a range that
    /// starts below it is served from the driver's store
    /// (`Action::ReadBlocks`). `None` while the canonical chain reaches
    /// back to the genesis.
    pub fn history_floor(&self) -> Option<u64> {
        let (&slot, entry) = self.canonical.first_key_value()?;
        let parent = entry.block.parent_root();
        (parent != self.genesis_root).then_some(slot)
    }

    /// Blocks stored.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is stored (only genesis).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Encoded bytes of the stored blocks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The limits this store keeps.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Whether `root` is remembered as invalid.
    pub fn is_known_invalid(&self, root: &Root) -> bool {
        self.invalid.contains(root)
    }

    /// Invalid roots remembered.
    pub fn known_invalid_len(&self) -> usize {
        self.invalid.len()
    }

    // --- Mutators ---------------------------------------------------------------

    /// Remembers that the block `root` failed verification, forgetting the
    /// oldest remembered root if the set is full. Has no effect on a stored
    /// block (those were verified).
    pub fn mark_invalid(&mut self, root: Root) {
        if !self.contains(&root) {
            self.invalid.insert(root);
        }
    }

    /// Stores a verified block and updates the head, the canonical chain and
    /// finality, pruning forks that finality rules out.
    pub fn import(&mut self, block: SignedBlock) -> Result<ImportOutcome, ImportError> {
        self.import_held(block.root(), HeldBlock::Own(Arc::new(block)))
    }

    /// [`ChainStore::import`] of a block already held, whose root is `root`.
    fn import_held(&mut self, root: Root, block: HeldBlock) -> Result<ImportOutcome, ImportError> {
        if self.invalid.contains(&root) {
            return Err(ImportError::KnownInvalid(root));
        }
        if self.blocks.contains_key(&root) {
            return Ok(ImportOutcome::AlreadyKnown { root });
        }
        let slot = block.slot();
        let conflict = ImportError::ConflictsWithFinalized {
            slot,
            finalized_slot: self.finalized.slot,
        };
        if slot <= self.finalized.slot {
            return Err(conflict);
        }
        let parent = block.parent_root();
        if self.invalid.contains(&parent) {
            self.invalid.insert(root);
            return Err(ImportError::InvalidParent(parent));
        }
        let parent_slot = self
            .slot_of(&parent)
            .ok_or(ImportError::UnknownParent(parent))?;
        // Every stored block at or above the finalized slot descends from the
        // finalized block, so the parent must be it or above it.
        if parent_slot < self.finalized.slot
            || (parent_slot == self.finalized.slot && parent != self.finalized.root)
        {
            return Err(conflict);
        }
        if slot <= parent_slot {
            return Err(ImportError::SlotNotAfterParent { slot, parent_slot });
        }
        let (evicted, dropped) = self.make_room(parent, block.encoded_len())?;

        self.bytes += block.encoded_len();
        Arc::make_mut(&mut self.by_slot).insert((slot, root));
        Arc::make_mut(&mut self.children).insert((parent, root));
        Arc::make_mut(&mut self.blocks).insert(root, block);

        let candidate = Checkpoint { root, slot };
        let mut outcome = Imported {
            root,
            head: None,
            finalized: None,
            pruned: dropped,
            evicted,
        };
        if is_better_head(candidate, self.head) {
            self.set_head(candidate);
            outcome.head = Some(candidate);
            if let Some(finalized) = self.advance_finality() {
                outcome.finalized = Some(finalized.0);
                outcome.pruned.extend(finalized.1);
            }
        }
        Ok(ImportOutcome::Imported(outcome))
    }

    // --- Internals --------------------------------------------------------------

    /// The root of the canonical block at `slot`, if there is one.
    fn canonical_root(&self, slot: u64) -> Option<&Root> {
        self.canonical.get(&slot).map(|entry| &entry.root)
    }

    fn slot_of(&self, root: &Root) -> Option<u64> {
        if *root == self.genesis_root {
            Some(0)
        } else {
            self.blocks.get(root).map(|block| block.slot())
        }
    }

    /// Makes room for one more block of `bytes` whose parent is `parent`:
    /// first evicts the oldest finalized history, then drops whole forks,
    /// the one branching off lowest first. Never touches the canonical chain
    /// from the finalized block up, nor the new block's ancestors; if those
    /// alone leave no room, changes nothing and fails. Returns the evicted
    /// and the dropped roots.
    fn make_room(
        &mut self,
        parent: Root,
        bytes: usize,
    ) -> Result<(Vec<Root>, Vec<Root>), ImportError> {
        let limits = self.limits;
        let fits = |blocks: usize, stored: usize| {
            blocks < limits.blocks_max && stored.saturating_add(bytes) <= limits.bytes_max
        };
        if fits(self.blocks.len(), self.bytes) {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut protected: BTreeSet<Root> = self
            .canonical
            .range(self.finalized.slot..)
            .map(|(_, entry)| entry.root)
            .collect();
        let mut cursor = parent;
        while let Some(block) = self.blocks.get(&cursor) {
            if !protected.insert(cursor) {
                break;
            }
            cursor = block.parent_root();
        }
        let protected_bytes: usize = protected
            .iter()
            .filter_map(|root| self.blocks.get(root))
            .map(|block| block.encoded_len())
            .sum();
        if !fits(protected.len(), protected_bytes) {
            return Err(ImportError::Full);
        }
        let mut evicted = Vec::new();
        let mut dropped = Vec::new();
        while !fits(self.blocks.len(), self.bytes) {
            // Cannot fail: every block outside `protected` can go, and the
            // protected ones alone leave room (checked above).
            let &(slot, root) = self
                .by_slot
                .iter()
                .find(|(_, root)| !protected.contains(root))
                .expect("an unprotected block is left");
            if slot < self.finalized.slot {
                self.remove_block(&root);
                evicted.push(root);
            } else {
                // The lowest unprotected block above finality is the base of
                // a fork none of whose blocks is protected.
                for root in self.subtree(root) {
                    self.remove_block(&root);
                    dropped.push(root);
                }
            }
        }
        Ok((evicted, dropped))
    }

    /// `root` and every stored block descending from it.
    fn subtree(&self, root: Root) -> Vec<Root> {
        let mut found = Vec::new();
        let mut stack = vec![root];
        while let Some(root) = stack.pop() {
            found.push(root);
            stack.extend(
                self.children
                    .range((root, Root([0; 32]))..=(root, Root([0xff; 32])))
                    .map(|&(_, child)| child),
            );
        }
        found
    }

    fn remove_block(&mut self, root: &Root) {
        // Cannot fail: callers pass roots taken from `by_slot` or found by a walk.
        let block = Arc::make_mut(&mut self.blocks)
            .remove(root)
            .expect("removing a stored block");
        let slot = block.slot();
        self.bytes -= block.encoded_len();
        Arc::make_mut(&mut self.by_slot).remove(&(slot, *root));
        Arc::make_mut(&mut self.children).remove(&(block.parent_root(), *root));
        let orphans: Vec<(Root, Root)> = self
            .children
            .range((*root, Root([0; 32]))..=(*root, Root([0xff; 32])))
            .copied()
            .collect();
        let children = Arc::make_mut(&mut self.children);
        for edge in orphans {
            children.remove(&edge);
        }
        if self.canonical_root(slot) == Some(root) {
            Arc::make_mut(&mut self.canonical).remove(&slot);
        }
    }

    /// Makes `head` the head and rewrites the canonical index from the
    /// common ancestor with the old canonical chain up.
    fn set_head(&mut self, head: Checkpoint) {
        // Cannot fail: a head is a stored block.
        let block = self.blocks.get(&head.root).expect("the head is stored");
        if block.parent_root() == self.head.root && head.slot > self.head.slot {
            // The new head extends the old one (every import of a linear
            // chain): the old head tops the canonical index, so nothing
            // above it is stale and the walk would stop at it.
            let entry = CanonicalEntry {
                root: head.root,
                block: block.clone(),
            };
            Arc::make_mut(&mut self.canonical).insert(head.slot, entry);
            self.head = head;
            return;
        }
        let mut new_entries = Vec::new();
        let mut cursor = head.root;
        let ancestor_slot = loop {
            if cursor == self.genesis_root {
                break 0;
            }
            // Cannot fail: every block above finality has its parent stored,
            // and the walk stops at the finalized block, which is canonical.
            let block = self
                .blocks
                .get(&cursor)
                .expect("ancestor of the head stored");
            let slot = block.slot();
            if self.canonical_root(slot) == Some(&cursor) {
                break slot;
            }
            let entry = CanonicalEntry {
                root: cursor,
                block: block.clone(),
            };
            cursor = block.parent_root();
            new_entries.push((slot, entry));
        };
        let stale: Vec<u64> = self
            .canonical
            .range(ancestor_slot + 1..)
            .map(|(&slot, _)| slot)
            .collect();
        let canonical = Arc::make_mut(&mut self.canonical);
        for slot in stale {
            canonical.remove(&slot);
        }
        canonical.extend(new_entries);
        self.head = head;
    }

    /// Moves the finalized block up to the head's deepest ancestor at least
    /// `finality_depth_slots` below it; returns it and the pruned roots if it moved.
    fn advance_finality(&mut self) -> Option<(Checkpoint, Vec<Root>)> {
        let target_slot = self.head.slot.checked_sub(self.finality_depth_slots)?;
        if target_slot <= self.finalized.slot {
            return None;
        }
        let (&slot, entry) = self
            .canonical
            .range(self.finalized.slot + 1..=target_slot)
            .next_back()?;
        let root = entry.root;
        let old = self.finalized;
        self.finalized = Checkpoint { root, slot };
        Some((self.finalized, self.prune(old)))
    }

    /// Drops every block above `old_finalized` that neither descends from
    /// the new finalized block nor is one of its ancestors.
    ///
    /// Canonical blocks always stay (below the new finalized slot they are
    /// its ancestors, from it up they descend from it), and every stored
    /// block is canonical unless it is on a fork. So a store without forks
    /// (one chain: every import of a store rebuilt at start-up, and of a
    /// sync) has nothing to prune, and the walk of the finalized block's
    /// subtree, a set of `finality_depth_slots` roots, is skipped.
    fn prune(&mut self, old_finalized: Checkpoint) -> Vec<Root> {
        debug_assert!(
            self.canonical.len() <= self.blocks.len(),
            "the canonical index names stored blocks only"
        );
        if self.canonical.len() == self.blocks.len() {
            return Vec::new();
        }
        let keep: BTreeSet<Root> = self.subtree(self.finalized.root).into_iter().collect();
        let doomed: Vec<Root> = self
            .by_slot
            .range((old_finalized.slot + 1, Root([0; 32]))..)
            .filter(|&&(slot, root)| {
                let ancestor =
                    slot < self.finalized.slot && self.canonical_root(slot) == Some(&root);
                !ancestor && !keep.contains(&root)
            })
            .map(|&(_, root)| root)
            .collect();
        for root in &doomed {
            self.remove_block(root);
        }
        doomed
    }

    /// Panics if an invariant is broken. For tests and fuzzing; costs a walk
    /// over every stored block.
    pub fn assert_invariants(&self) {
        assert!(
            self.blocks.len() <= self.limits.blocks_max,
            "too many blocks"
        );
        assert!(self.bytes <= self.limits.bytes_max, "too many bytes");
        assert!(self.invalid.len() <= self.limits.invalid_roots_max);
        let bytes: usize = self.blocks.values().map(|block| block.encoded_len()).sum();
        assert_eq!(bytes, self.bytes, "byte count");
        assert_eq!(self.by_slot.len(), self.blocks.len(), "slot index size");
        for (slot, root) in self.by_slot.iter() {
            assert_eq!(self.blocks.get(root).map(|block| block.slot()), Some(*slot));
        }
        assert_eq!(
            self.children.len(),
            self.blocks
                .values()
                .filter(|b| self.contains(&b.parent_root()))
                .count()
        );

        // The head is the best block, and the genesis only if there is none.
        let best = self
            .by_slot
            .iter()
            .map(|&(slot, root)| Checkpoint { root, slot })
            .fold(None, |best: Option<Checkpoint>, block| match best {
                Some(best) if !is_better_head(block, best) => Some(best),
                _ => Some(block),
            });
        let genesis = Checkpoint {
            root: self.genesis_root,
            slot: 0,
        };
        assert_eq!(
            self.head,
            best.unwrap_or(genesis),
            "head is not the best block"
        );

        // The canonical index is exactly the head's retained ancestry.
        let mut cursor = self.head.root;
        let mut walked = BTreeMap::new();
        while let Some(block) = self.blocks.get(&cursor) {
            walked.insert(block.slot(), cursor);
            cursor = block.parent_root();
        }
        let indexed: BTreeMap<u64, Root> = self
            .canonical
            .iter()
            .map(|(&slot, entry)| (slot, entry.root))
            .collect();
        assert_eq!(walked, indexed, "canonical chain");
        for entry in self.canonical.values() {
            let stored = self
                .blocks
                .get(&entry.root)
                .expect("canonical blocks are stored");
            assert!(
                std::ptr::eq::<SignedBlock>(&**stored, &*entry.block),
                "canonical entry not the stored block"
            );
        }
        // The walk ends at the genesis or below the finalized block (evicted history).
        assert!(cursor == self.genesis_root || self.slot_of(&cursor).is_none());

        // Finality: canonical, deep enough, and the deepest such block.
        if self.finalized.slot == 0 {
            assert_eq!(self.finalized, genesis);
        } else {
            assert_eq!(
                self.canonical_root(self.finalized.slot),
                Some(&self.finalized.root)
            );
            // An anchor is finalized by the driver that loaded it: the
            // head above it may still be less than the depth away.
            if self.anchor != Some(self.finalized) {
                assert!(self.finalized.slot + self.finality_depth_slots <= self.head.slot);
            }
        }
        if let Some(target) = self
            .head
            .slot
            .checked_sub(self.finality_depth_slots)
            .filter(|&target| target > self.finalized.slot)
        {
            assert!(
                self.canonical
                    .range(self.finalized.slot + 1..=target)
                    .next()
                    .is_none(),
                "finality lags"
            );
        }

        // Every block above finality descends from the finalized block.
        for &(slot, root) in self.by_slot.iter() {
            if slot <= self.finalized.slot {
                assert_eq!(
                    self.canonical_root(slot),
                    Some(&root),
                    "fork below finality"
                );
                continue;
            }
            let mut cursor = root;
            while let Some(block) = self.blocks.get(&cursor) {
                if block.slot() <= self.finalized.slot {
                    break;
                }
                cursor = block.parent_root();
            }
            assert_eq!(
                cursor, self.finalized.root,
                "block does not descend from finality"
            );
        }
    }
}

/// Fork choice: a higher slot wins, then the lower root.
fn is_better_head(candidate: Checkpoint, current: Checkpoint) -> bool {
    candidate.slot > current.slot
        || (candidate.slot == current.slot && candidate.root < current.root)
}

/// A bounded set of roots, forgetting the oldest first.
#[derive(Clone, Debug)]
struct InvalidRoots {
    order: VecDeque<Root>,
    set: BTreeSet<Root>,
    max: usize,
}

impl InvalidRoots {
    fn new(max: usize) -> InvalidRoots {
        InvalidRoots {
            order: VecDeque::new(),
            set: BTreeSet::new(),
            max,
        }
    }

    fn contains(&self, root: &Root) -> bool {
        self.set.contains(root)
    }

    fn len(&self) -> usize {
        self.set.len()
    }

    fn insert(&mut self, root: Root) {
        if !self.set.insert(root) {
            return;
        }
        self.order.push_back(root);
        if self.order.len() > self.max {
            // Cannot fail: the queue holds more than max >= 1 roots.
            let oldest = self.order.pop_front().expect("queue is not empty");
            self.set.remove(&oldest);
        }
        debug_assert_eq!(self.order.len(), self.set.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::block::{body_root, BlockHeader, SIGNATURE_BYTES};
    use crate::chain::genesis::devnet_keys;
    use blst::min_pk::SecretKey;

    /// A genesis with 2 proposers and the given finality depth.
    fn genesis(depth: u64) -> Genesis {
        let keys = devnet_keys(1, 2).iter().map(SecretKey::sk_to_pk).collect();
        Genesis::new(1, 0, 1_000, keys, depth).unwrap()
    }

    /// An unsigned block (the store does not check signatures); `tag` makes forks differ.
    fn block(parent: Root, slot: u64, tag: u8) -> SignedBlock {
        let body = vec![tag; 8];
        SignedBlock {
            header: BlockHeader {
                slot,
                proposer_index: slot % 2,
                parent_root: parent,
                body_root: body_root(&body),
            },
            body,
            signature: [0; SIGNATURE_BYTES],
        }
    }

    fn imported(outcome: Result<ImportOutcome, ImportError>) -> Imported {
        match outcome {
            Ok(ImportOutcome::Imported(imported)) => imported,
            other => panic!("expected an import, got {other:?}"),
        }
    }

    /// Imports a linear chain at the given slots on top of `parent`; returns the roots.
    fn extend(store: &mut ChainStore, parent: Root, slots: &[u64], tag: u8) -> Vec<Root> {
        let mut parent = parent;
        let mut roots = Vec::new();
        for &slot in slots {
            let root = imported(store.import(block(parent, slot, tag))).root;
            store.assert_invariants();
            roots.push(root);
            parent = root;
        }
        roots
    }

    #[test]
    fn head_is_the_highest_slot() {
        let genesis = genesis(64);
        let mut store = ChainStore::new(&genesis);
        assert_eq!(
            store.head(),
            Checkpoint {
                root: genesis.root(),
                slot: 0
            }
        );
        assert!(store.is_empty());
        let main = extend(&mut store, genesis.root(), &[1, 2, 3], 0);
        assert_eq!(
            store.head(),
            Checkpoint {
                root: main[2],
                slot: 3
            }
        );
        // A fork from slot 1 that reaches slot 5 takes over.
        let fork = extend(&mut store, main[0], &[4, 5], 1);
        assert_eq!(
            store.head(),
            Checkpoint {
                root: fork[1],
                slot: 5
            }
        );
        assert_eq!(
            store.canonical_block_at(2),
            None,
            "slot 2 is off the new chain"
        );
        assert_eq!(store.canonical_block_at(4).unwrap().root(), fork[0]);
        // A fork that stays lower does not.
        let low = imported(store.import(block(main[2], 4, 2)));
        assert_eq!(low.head, None);
        assert_eq!(store.head().root, fork[1]);
        assert_eq!(store.len(), 6);
        assert_eq!(
            store.import(block(main[0], 4, 1)),
            Ok(ImportOutcome::AlreadyKnown { root: fork[0] })
        );
        store.assert_invariants();
    }

    #[test]
    fn ties_go_to_the_lower_root() {
        let genesis = genesis(64);
        let mut store = ChainStore::new(&genesis);
        let a = block(genesis.root(), 1, 1);
        let b = block(genesis.root(), 1, 2);
        let (low, high) = if a.root() < b.root() { (a, b) } else { (b, a) };
        let low_root = low.root();
        let first = imported(store.import(high));
        assert!(first.head.is_some());
        let second = imported(store.import(low));
        assert_eq!(
            second.head,
            Some(Checkpoint {
                root: low_root,
                slot: 1
            })
        );
        assert_eq!(store.canonical_block_at(1).unwrap().root(), low_root);
        store.assert_invariants();
        // Importing in the other order gives the same head.
        let mut other = ChainStore::new(&genesis);
        imported(other.import(block(genesis.root(), 1, 1)));
        imported(other.import(block(genesis.root(), 1, 2)));
        assert_eq!(other.head(), store.head());
    }

    #[test]
    fn finality_follows_the_head_and_prunes_forks() {
        let genesis = genesis(4);
        let mut store = ChainStore::new(&genesis);
        let main = extend(&mut store, genesis.root(), &[1, 2, 3], 0);
        // A fork from slot 1 that stays behind.
        let fork = extend(&mut store, main[0], &[3], 7);
        assert_eq!(store.finalized().slot, 0);
        let more = extend(&mut store, main[2], &[4], 0);
        // Head 4, depth 4: still only genesis is at least 4 below.
        assert_eq!(store.finalized().slot, 0);
        let outcome = imported(store.import(block(more[0], 6, 0)));
        // Head 6: slot 2 is the deepest block at least 4 below.
        assert_eq!(
            outcome.finalized,
            Some(Checkpoint {
                root: main[1],
                slot: 2
            })
        );
        assert_eq!(outcome.pruned, fork, "the fork from slot 1 is ruled out");
        assert!(store.block_by_root(&fork[0]).is_none());
        assert_eq!(store.status().finalized_slot, 2);
        store.assert_invariants();

        // Blocks at or below finality, or on a fork from below it, are refused.
        assert_eq!(
            store.import(block(main[0], 2, 9)),
            Err(ImportError::ConflictsWithFinalized {
                slot: 2,
                finalized_slot: 2
            })
        );
        assert_eq!(
            store.import(block(main[0], 5, 9)),
            Err(ImportError::ConflictsWithFinalized {
                slot: 5,
                finalized_slot: 2
            })
        );
        assert_eq!(
            store.import(block(genesis.root(), 7, 9)),
            Err(ImportError::ConflictsWithFinalized {
                slot: 7,
                finalized_slot: 2
            })
        );
        // A fork from the finalized block itself is fine.
        imported(store.import(block(main[1], 5, 9)));
        store.assert_invariants();
        let status = store.status();
        assert_eq!(status.network_id, 1);
        assert_eq!((status.head_slot, status.head_root), (6, store.head().root));
    }

    #[test]
    fn forks_are_pruned_whenever_finality_passes_them_and_one_chain_never_is() {
        let genesis = genesis(3);
        let mut store = ChainStore::new(&genesis);
        let main = extend(&mut store, genesis.root(), &[1, 2, 3, 4], 0);
        assert_eq!(store.finalized().root, main[0]);
        // Two forks from the finalized block, below the head.
        let short = extend(&mut store, main[0], &[2], 5);
        let long = extend(&mut store, main[0], &[2, 3], 6);
        let outcome = imported(store.import(block(main[3], 5, 0)));
        assert_eq!(
            outcome.finalized.map(|finalized| finalized.root),
            Some(main[1])
        );
        let pruned: BTreeSet<Root> = outcome.pruned.iter().copied().collect();
        let forks: BTreeSet<Root> = short.iter().chain(&long).copied().collect();
        assert_eq!(pruned, forks, "both forks are ruled out at once");
        assert_eq!(outcome.pruned.len(), 3);
        // One chain again: finality moves on and prunes nothing.
        let main = extend(&mut store, outcome.root, &[6, 7, 8], 0);
        assert_eq!(store.len(), 8);
        assert_eq!(store.finalized().slot, 5);
        // A fork above finality stays until finality passes its base.
        let fork = extend(&mut store, main[0], &[7], 9);
        let outcome = imported(store.import(block(main[2], 9, 0)));
        assert_eq!(
            outcome.finalized.map(|finalized| finalized.root),
            Some(main[0])
        );
        assert!(outcome.pruned.is_empty(), "the fork descends from slot 6");
        let outcome = imported(store.import(block(outcome.root, 10, 0)));
        assert_eq!(
            outcome.finalized.map(|finalized| finalized.root),
            Some(main[1])
        );
        assert_eq!(outcome.pruned, fork);
        store.assert_invariants();
    }

    #[test]
    fn unknown_and_invalid_parents_are_refused() {
        let genesis = genesis(64);
        let mut store = ChainStore::new(&genesis);
        let unknown = Root([9; 32]);
        assert_eq!(
            store.import(block(unknown, 3, 0)),
            Err(ImportError::UnknownParent(unknown))
        );
        let main = extend(&mut store, genesis.root(), &[2], 0);
        assert_eq!(
            store.import(block(main[0], 2, 1)),
            Err(ImportError::SlotNotAfterParent {
                slot: 2,
                parent_slot: 2
            })
        );
        let bad = Root([7; 32]);
        store.mark_invalid(bad);
        assert!(store.is_known_invalid(&bad));
        let child = block(bad, 5, 0);
        let child_root = child.root();
        assert_eq!(
            store.import(child.clone()),
            Err(ImportError::InvalidParent(bad))
        );
        assert!(
            store.is_known_invalid(&child_root),
            "a child of an invalid block is invalid"
        );
        assert_eq!(
            store.import(child),
            Err(ImportError::KnownInvalid(child_root))
        );
        // Marking a stored block has no effect.
        store.mark_invalid(main[0]);
        assert!(!store.is_known_invalid(&main[0]));
        store.assert_invariants();
        assert!(ImportError::UnknownParent(unknown)
            .to_string()
            .contains("09090909"));
    }

    #[test]
    fn invalid_memory_is_bounded_oldest_first() {
        let genesis = genesis(64);
        let limits = StoreLimits {
            invalid_roots_max: 3,
            ..StoreLimits::default()
        };
        let mut store = ChainStore::with_limits(&genesis, limits);
        for byte in 1..=5u8 {
            store.mark_invalid(Root([byte; 32]));
            store.mark_invalid(Root([byte; 32]));
        }
        assert_eq!(store.known_invalid_len(), 3);
        assert!(!store.is_known_invalid(&Root([1; 32])));
        assert!(!store.is_known_invalid(&Root([2; 32])));
        assert!(store.is_known_invalid(&Root([3; 32])));
        assert!(store.is_known_invalid(&Root([5; 32])));
        store.assert_invariants();
    }

    #[test]
    fn canonical_range_is_one_chain_in_slot_order() {
        let genesis = genesis(64);
        let mut store = ChainStore::new(&genesis);
        let main = extend(&mut store, genesis.root(), &[1, 2, 4, 5, 8], 0);
        extend(&mut store, main[1], &[3], 5);
        let slots = |start, count| -> Vec<u64> {
            store
                .canonical_range(start, count)
                .iter()
                .map(|block| block.slot())
                .collect()
        };
        assert_eq!(slots(0, 64), vec![1, 2, 4, 5, 8]);
        assert_eq!(slots(2, 3), vec![2, 4]);
        assert_eq!(
            slots(3, 1),
            Vec::<u64>::new(),
            "slot 3 holds only a fork block"
        );
        assert_eq!(slots(9, 10), Vec::<u64>::new());
        assert_eq!(slots(0, 0), Vec::<u64>::new());
        assert_eq!(slots(u64::MAX, u64::MAX), Vec::<u64>::new());
        let range = store.canonical_range(0, 64);
        for pair in range.windows(2) {
            assert_eq!(pair[1].parent_root(), pair[0].root());
        }
    }

    #[test]
    fn full_store_evicts_history_then_drops_forks() {
        let genesis = genesis(2);
        let limits = StoreLimits {
            blocks_max: 4,
            ..StoreLimits::default()
        };
        let mut store = ChainStore::with_limits(&genesis, limits);
        let main = extend(&mut store, genesis.root(), &[1, 2, 3, 4], 0);
        assert_eq!(store.finalized().slot, 2);
        let outcome = imported(store.import(block(main[3], 5, 0)));
        assert_eq!(
            outcome.evicted,
            vec![main[0]],
            "the oldest history goes first"
        );
        assert_eq!(
            store.finalized(),
            Checkpoint {
                root: main[2],
                slot: 3
            }
        );
        assert_eq!(store.len(), 4);
        assert_eq!(store.canonical_range(0, 10).len(), 4);
        store.assert_invariants();

        // A fork from the finalized block that does not win the tie at slot 5.
        let head = store.head();
        let fork = (1..=u8::MAX)
            .map(|tag| block(main[2], 5, tag))
            .find(|fork| fork.root() > head.root)
            .unwrap();
        let fork_root = fork.root();
        let outcome = imported(store.import(fork));
        assert_eq!(outcome.evicted, vec![main[1]]);
        assert_eq!(outcome.head, None);
        store.assert_invariants();

        // History is gone; extending the head drops the fork instead.
        let outcome = imported(store.import(block(head.root, 6, 0)));
        assert_eq!(outcome.evicted, Vec::<Root>::new());
        assert_eq!(outcome.pruned, vec![fork_root]);
        assert_eq!(outcome.finalized.map(|finalized| finalized.slot), Some(4));
        assert_eq!(store.len(), 4);
        store.assert_invariants();
    }

    #[test]
    fn full_store_refuses_when_the_unfinalized_chain_fills_it() {
        let genesis = genesis(3);
        let limits = StoreLimits {
            blocks_max: 2,
            ..StoreLimits::default()
        };
        let mut store = ChainStore::with_limits(&genesis, limits);
        let main = extend(&mut store, genesis.root(), &[1, 2], 0);
        assert_eq!(store.import(block(main[1], 3, 0)), Err(ImportError::Full));
        assert_eq!(store.import(block(main[0], 3, 1)), Err(ImportError::Full));
        assert_eq!(store.len(), 2);
        assert_eq!(store.head().root, main[1]);
        store.assert_invariants();
    }

    #[test]
    fn rebuilds_from_persisted_blocks_in_any_order() {
        let genesis = genesis(3);
        let mut store = ChainStore::new(&genesis);
        let main = extend(&mut store, genesis.root(), &[1, 2, 3, 4, 5, 6], 0);
        extend(&mut store, main[3], &[6], 4);
        let mut persisted: Vec<SignedBlock> =
            store.canonical_range(0, 100).into_iter().cloned().collect();
        persisted.reverse();
        persisted.push(block(Root([3; 32]), 9, 0));
        let (rebuilt, refused) =
            ChainStore::from_blocks(&genesis, StoreLimits::default(), None, persisted);
        assert_eq!(rebuilt.head(), store.head());
        assert_eq!(rebuilt.finalized(), store.finalized());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].1, ImportError::UnknownParent(Root([3; 32])));
        rebuilt.assert_invariants();
    }

    /// What a store answers, for comparing two: head, finality, size,
    /// history floor, every canonical block and every stored block.
    fn answers(
        store: &ChainStore,
    ) -> (
        Status,
        usize,
        Option<u64>,
        Vec<SignedBlock>,
        Vec<SignedBlock>,
    ) {
        let canonical = store
            .canonical_range(0, u64::MAX)
            .into_iter()
            .cloned()
            .collect();
        let stored = store
            .blocks
            .values()
            .map(|block| (**block).clone())
            .collect();
        (
            store.status(),
            store.len(),
            store.history_floor(),
            canonical,
            stored,
        )
    }

    #[test]
    fn a_store_sharing_its_stored_blocks_answers_as_one_that_copies_them() {
        let genesis = genesis(3);
        let mut source = ChainStore::new(&genesis);
        let main = extend(&mut source, genesis.root(), &[1, 2, 3, 4, 5, 6, 7, 8], 0);
        let fork = extend(&mut source, main[5], &[8], 4);
        let mut stored: Vec<SignedBlock> = source.blocks.values().map(|b| (**b).clone()).collect();
        stored.reverse();
        stored.push(block(Root([3; 32]), 9, 0));
        let mut config = crate::chain::ChainConfig::devnet(1);
        config.genesis = Arc::new(genesis.clone());
        config.stored = Arc::from(stored);
        for anchor in [None, Some(main[2])] {
            config.history_anchor = anchor;
            let (mut copied, refused_copied) = ChainStore::for_config(&config);
            let (mut shared, refused_shared) = ChainStore::sharing_stored(&config);
            assert_eq!(refused_shared, refused_copied);
            // The orphan, and with the anchor the two blocks below it.
            let refused_expected = if anchor.is_some() { 3 } else { 1 };
            assert_eq!(refused_shared.len(), refused_expected);
            assert_eq!(answers(&shared), answers(&copied));
            assert_eq!(shared.head().root, fork[0].min(main[7]));
            // Every block the shared store holds is read in place.
            let mut in_place = 0;
            for block in config.stored.iter() {
                if let Some(held) = shared.block_by_root(&block.root()) {
                    assert!(
                        std::ptr::eq(held, block),
                        "slot {} was copied",
                        block.slot()
                    );
                    in_place += 1;
                }
            }
            assert_eq!(in_place, shared.len());
            // Both go on the same way, finality pruning a shared fork.
            let head = shared.head().root;
            for store in [&mut copied, &mut shared] {
                extend(store, head, &[9, 10, 11, 12], 0);
                store.assert_invariants();
            }
            assert_eq!(answers(&shared), answers(&copied));
            assert!(
                !shared.contains(&fork[0].max(main[7])),
                "the losing fork is pruned"
            );
        }
    }

    #[test]
    fn shared_blocks_are_evicted_as_owned_ones_are() {
        let genesis = genesis(2);
        let limits = StoreLimits {
            blocks_max: 4,
            ..StoreLimits::default()
        };
        let mut source = ChainStore::new(&genesis);
        let main = extend(&mut source, genesis.root(), &[1, 2, 3, 4], 0);
        let blocks: Arc<[SignedBlock]> = main
            .iter()
            .map(|root| source.block_by_root(root).unwrap().clone())
            .collect();
        let held = (0..blocks.len()).map(|index| {
            let block = HeldBlock::Shared {
                blocks: Arc::clone(&blocks),
                index,
            };
            (block.root(), block)
        });
        let (mut shared, refused) = ChainStore::from_held(&genesis, limits, None, held);
        assert!(refused.is_empty());
        let (mut copied, _) =
            ChainStore::from_blocks(&genesis, limits, None, blocks.iter().cloned());
        for store in [&mut copied, &mut shared] {
            let outcome = imported(store.import(block(main[3], 5, 0)));
            assert_eq!(outcome.evicted, vec![main[0]]);
            extend(store, outcome.root, &[6, 7], 0);
            store.assert_invariants();
        }
        assert_eq!(answers(&shared), answers(&copied));
        assert_eq!(shared.history_floor(), Some(4));
        // The test's own handle, and the one shared block still stored (in
        // the map and in the canonical index): the others let go of it.
        assert_eq!(Arc::strong_count(&blocks), 3);
    }

    /// Everything a store holds, indexes included, for comparing two built
    /// different ways.
    fn state(store: &ChainStore) -> impl PartialEq + fmt::Debug {
        let canonical: Vec<(u64, Root)> = store
            .canonical
            .iter()
            .map(|(&slot, entry)| (slot, entry.root))
            .collect();
        (
            answers(store),
            store.finalized(),
            store.bytes,
            (*store.by_slot).clone(),
            (*store.children).clone(),
            canonical,
        )
    }

    /// What building from `blocks` did before it loaded whole chains at
    /// once: sort by (slot, root), take the anchor, import one by one.
    fn imported_one_by_one(
        genesis: &Genesis,
        limits: StoreLimits,
        anchor: Option<Root>,
        blocks: &[SignedBlock],
    ) -> (ChainStore, Vec<(Root, ImportError)>) {
        let mut store = ChainStore::with_limits(genesis, limits);
        let mut sorted: Vec<SignedBlock> = blocks.to_vec();
        sorted.sort_by_key(|block| (block.slot(), block.root()));
        sorted.dedup_by_key(|block| block.root());
        if let Some(at) = sorted.iter().position(|block| Some(block.root()) == anchor) {
            let block = sorted.remove(at);
            store.set_anchor(block.root(), HeldBlock::Own(Arc::new(block)));
        }
        let refused = sorted
            .into_iter()
            .filter_map(|block| {
                let root = block.root();
                store.import(block).err().map(|error| (root, error))
            })
            .collect();
        (store, refused)
    }

    #[test]
    fn a_whole_chain_loads_as_importing_it_block_by_block_would() {
        use rand_chacha::ChaCha20Rng;
        use rand_core::{RngCore, SeedableRng};
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let mut loaded_whole = 0;
        for case in 0..300 {
            let depth = 1 + rng.next_u64() % 6;
            let genesis = genesis(depth);
            // One chain with gaps between slots.
            let mut blocks = Vec::new();
            let (mut parent, mut slot) = (genesis.root(), 0);
            for _ in 0..rng.next_u64() % 24 {
                slot += 1 + rng.next_u64() % 3;
                let next = block(parent, slot, 0);
                parent = next.root();
                blocks.push(next);
            }
            // Sometimes a fork, an orphan, a duplicate, an anchor, tight limits.
            let roll = rng.next_u64();
            if roll % 5 == 0 && blocks.len() > 2 {
                let base = &blocks[blocks.len() / 2];
                blocks.push(block(base.root(), base.slot() + 1, 7));
            }
            if roll % 7 == 0 {
                blocks.push(block(Root([5; 32]), slot + 1, 0));
            }
            if roll % 11 == 0 && !blocks.is_empty() {
                blocks.push(blocks[0].clone());
            }
            let anchor = (roll % 3 == 0 && !blocks.is_empty())
                .then(|| blocks[(rng.next_u64() as usize) % blocks.len()].root());
            let limits = StoreLimits {
                blocks_max: if roll % 4 == 0 {
                    1 + (rng.next_u64() % 20) as usize
                } else {
                    1_000
                },
                ..StoreLimits::default()
            };
            // Any order.
            for at in (1..blocks.len()).rev() {
                blocks.swap(at, (rng.next_u64() as usize) % (at + 1));
            }
            let (one_by_one, refused_one_by_one) =
                imported_one_by_one(&genesis, limits, anchor, &blocks);
            let (built, refused) =
                ChainStore::from_blocks(&genesis, limits, anchor, blocks.iter().cloned());
            built.assert_invariants();
            assert_eq!(state(&built), state(&one_by_one), "case {case}");
            assert_eq!(refused, refused_one_by_one, "case {case}");
            let one_chain = blocks.len() == one_by_one.len() + usize::from(anchor.is_some())
                && one_by_one.canonical.len() == one_by_one.len();
            loaded_whole += usize::from(one_chain && refused.is_empty());
        }
        assert!(
            loaded_whole > 100,
            "the cases load whole chains too: {loaded_whole}"
        );
    }

    #[test]
    fn only_one_fitting_chain_on_the_head_is_taken_whole() {
        let genesis = genesis(3);
        let store = ChainStore::new(&genesis);
        let mut chain = Vec::new();
        let mut parent = genesis.root();
        for slot in [1, 2, 4, 5] {
            let block = block(parent, slot, 0);
            parent = block.root();
            chain.push((parent, HeldBlock::Own(Arc::new(block))));
        }
        assert!(store.takes_whole_chain(&chain));
        assert!(store.takes_whole_chain(&[]));
        let mut gap = chain.clone();
        gap.remove(1);
        assert!(!store.takes_whole_chain(&gap), "a missing parent");
        assert!(!store.takes_whole_chain(&chain[1..]), "not on the head");
        let mut fork = chain.clone();
        let forked = block(chain[1].0, 3, 9);
        fork.insert(2, (forked.root(), HeldBlock::Own(Arc::new(forked))));
        assert!(!store.takes_whole_chain(&fork), "a fork");
        let small = ChainStore::with_limits(
            &genesis,
            StoreLimits {
                blocks_max: 3,
                ..StoreLimits::default()
            },
        );
        assert!(!small.takes_whole_chain(&chain), "more than fits");
        assert!(small.takes_whole_chain(&chain[..3]));
        let mut marked = ChainStore::new(&genesis);
        marked.mark_invalid(chain[2].0);
        assert!(!marked.takes_whole_chain(&chain), "a known invalid block");
    }
}
