//! The invariant that no proposer signs two blocks for one slot: across
//! every node's imported blocks and every block a node hands its disk, no
//! (proposer, slot) pair has two distinct roots.
//!
//! # Design
//! The world keeps the first root it saw for each (proposer index, slot)
//! and checks each later block against it: a second root for the pair is
//! a violation (counted, logged with the seed, in the summary) naming the
//! node that held it. Blocks are seen where the driver sees them: a
//! `BlockImported` notification (looked up in that node's chain at once,
//! in the step that imported it) and every block of a persist batch (which
//! also catches a block imported and pruned within one step). Invalid
//! blocks never get this far: only verified blocks are imported.
//!
//! # Limits
//! One entry per (proposer, slot) ever produced: a run is bounded in slots.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::chain::{Root, SignedBlock};

use super::world::Sim;
use crate::types::NodeIndex;

/// What the world saw signed: the first root per (proposer index, slot).
#[derive(Debug, Default)]
pub(super) struct SignedSlots {
    first_root: BTreeMap<(u64, u64), Root>,
    /// Roots seen for a pair that already had another: (proposer, slot, root).
    second_roots: BTreeSet<(u64, u64, Root)>,
    /// Blocks checked against the record (every sighting, not distinct).
    checked: u64,
}

impl Sim {
    /// Checks `block`, which `node` imported or is writing, against every
    /// block signed for its proposer and slot so far.
    pub(super) fn check_signed_slot(&mut self, node: NodeIndex, block: &SignedBlock) {
        let (proposer, slot, root) = (block.header.proposer_index, block.slot(), block.root());
        self.check_signed_root(node, proposer, slot, root);
    }

    /// [`Sim::check_signed_slot`] for the block of `proposer` at `slot`
    /// with root `root`.
    pub(super) fn check_signed_root(
        &mut self,
        node: NodeIndex,
        proposer: u64,
        slot: u64,
        root: Root,
    ) {
        let record = &mut self.signed_slots;
        record.checked += 1;
        let first = *record.first_root.entry((proposer, slot)).or_insert(root);
        // Each extra root is a violation once, however many nodes hold it.
        if first != root && record.second_roots.insert((proposer, slot, root)) {
            self.violation(
                Some(node),
                format!(
                    "proposer {proposer} signed two blocks for slot {slot}: {} and {}",
                    first, root
                ),
            );
        }
    }

    /// Roots seen for a (proposer, slot) pair beyond its first: 0 unless
    /// a proposer signed two blocks for one slot.
    pub fn double_signed_slots(&self) -> u64 {
        self.signed_slots.second_roots.len() as u64
    }

    /// Blocks checked against the one-root-per-slot record.
    pub fn signed_slots_checked(&self) -> u64 {
        self.signed_slots.checked
    }
}
