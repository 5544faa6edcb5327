//! The chain as the networking layer sees it.
//!
//! # Design
//! The real chain lives in `block` (BLS-signed blocks), `genesis`, `verify`
//! (single and batch signature checks) and `store` (fork choice); the node
//! does not use them yet. Until the chain-and-sync issue wires them in,
//! blocks come from a [`SyntheticChain`]:
//! a deterministic chain whose block at slot `s` is derived from the network
//! id and `s`, linked by parent roots. It answers the questions the req/resp
//! handlers ask (our Status, a block by slot, a block by root) with the same
//! shapes the real chain will, so the handlers, limits and codecs are final.
//!
//! # Limits
//! Synthetic blocks are at most [`SYNTHETIC_BLOCK_BYTES_MAX`], so a full
//! BlocksByRange answer (64 blocks) stays far below the driver's
//! `PENDING_SEND_BYTES_MAX`. Real 1 MiB blocks will need the serving side to
//! pace itself against the driver's send queue (chain-and-sync issue).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::reqresp::bodies::Status;
use crate::reqresp::limits::BLOCKS_PER_RANGE_REQUEST_MAX;

pub use crate::reqresp::bodies::Root;

pub mod block;
pub mod fuzzing;
pub mod genesis;
pub mod store;
pub mod verify;

pub use block::{BlockDecodeError, BlockHeader, SignedBlock};
pub use genesis::{devnet_keys, Genesis, GenesisError};
pub use store::{ChainStore, Checkpoint, ImportError, ImportOutcome, Imported, StoreLimits};
pub use verify::{
    find_invalid, sign_block, verify_batch, verify_batch_locating, verify_block, BatchError,
    BlockError, BlockProducer,
};

/// Largest synthetic block body.
pub const SYNTHETIC_BLOCK_BYTES_MAX: usize = 64 * 1024;
/// Blocks a synthetic chain may hold (its root index is kept in memory).
pub const SYNTHETIC_CHAIN_SLOTS_MAX: u64 = 1_000_000;
/// Slots below the head that count as finalized.
pub const SYNTHETIC_FINALITY_DEPTH_SLOTS: u64 = 64;

/// Bytes of a synthetic block's header: slot (8) and parent root (32).
const SYNTHETIC_HEADER_BYTES: usize = 40;

const _: () = assert!(
    SYNTHETIC_BLOCK_BYTES_MAX as u64 * BLOCKS_PER_RANGE_REQUEST_MAX
        < crate::limits::PENDING_SEND_BYTES_MAX as u64
);

/// A deterministic chain with a block at every slot from 1 to `head_slot`.
#[derive(Clone, Debug)]
pub struct SyntheticChain {
    network_id: u64,
    block_bytes: usize,
    /// Roots by slot, index 0 is slot 0 (genesis, no block).
    roots: Vec<Root>,
    slots_by_root: BTreeMap<Root, u64>,
}

impl SyntheticChain {
    /// A chain of `head_slot` blocks of `block_bytes` bytes each (both clamped to their limits).
    pub fn new(network_id: u64, head_slot: u64, block_bytes: usize) -> SyntheticChain {
        let head_slot = head_slot.min(SYNTHETIC_CHAIN_SLOTS_MAX);
        let block_bytes = block_bytes.clamp(SYNTHETIC_HEADER_BYTES, SYNTHETIC_BLOCK_BYTES_MAX);
        let mut chain = SyntheticChain {
            network_id,
            block_bytes,
            roots: vec![genesis_root(network_id)],
            slots_by_root: BTreeMap::new(),
        };
        for _ in 0..head_slot {
            chain.extend();
        }
        chain
    }

    /// Adds the block at the next slot.
    pub fn extend(&mut self) {
        if self.head_slot() >= SYNTHETIC_CHAIN_SLOTS_MAX {
            return;
        }
        let slot = self.head_slot() + 1;
        let block = self.build_block(slot);
        let root: Root = Sha256::digest(&block).into();
        self.roots.push(root);
        self.slots_by_root.insert(root, slot);
    }

    /// The highest slot with a block (0: only genesis).
    pub fn head_slot(&self) -> u64 {
        self.roots.len() as u64 - 1
    }

    /// Our Status.
    pub fn status(&self) -> Status {
        let head_slot = self.head_slot();
        let finalized_slot = head_slot.saturating_sub(SYNTHETIC_FINALITY_DEPTH_SLOTS);
        Status {
            network_id: self.network_id,
            finalized_root: self.roots[finalized_slot as usize],
            finalized_slot,
            head_root: self.roots[head_slot as usize],
            head_slot,
        }
    }

    /// The block at `slot`, if the chain has one.
    pub fn block_at_slot(&self, slot: u64) -> Option<Vec<u8>> {
        (slot >= 1 && slot <= self.head_slot()).then(|| self.build_block(slot))
    }

    /// The block whose root is `root`, if known.
    pub fn block_by_root(&self, root: &Root) -> Option<Vec<u8>> {
        self.slots_by_root
            .get(root)
            .and_then(|&slot| self.block_at_slot(slot))
    }

    /// The slot and parent root a synthetic block claims, if it is one.
    pub fn parse_block(block: &[u8]) -> Option<(u64, Root)> {
        let slot = u64::from_be_bytes(block.get(..8)?.try_into().ok()?);
        let parent: Root = block.get(8..SYNTHETIC_HEADER_BYTES)?.try_into().ok()?;
        Some((slot, parent))
    }

    fn build_block(&self, slot: u64) -> Vec<u8> {
        let mut block = Vec::with_capacity(self.block_bytes);
        block.extend_from_slice(&slot.to_be_bytes());
        block.extend_from_slice(&self.roots[(slot - 1) as usize]);
        let mut filler = (slot ^ self.network_id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        while block.len() < self.block_bytes {
            filler = filler.rotate_left(7) ^ 0xA5A5;
            block.push(filler as u8);
        }
        block
    }
}

fn genesis_root(network_id: u64) -> Root {
    let mut hasher = Sha256::new();
    hasher.update(b"meshsync-synthetic-genesis");
    hasher.update(network_id.to_be_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_link_to_their_parents_and_are_found_by_root() {
        let chain = SyntheticChain::new(1, 100, 200);
        assert_eq!(chain.head_slot(), 100);
        let block = chain.block_at_slot(50).unwrap();
        assert_eq!(block.len(), 200);
        let (slot, parent) = SyntheticChain::parse_block(&block).unwrap();
        assert_eq!(slot, 50);
        let parent_block = chain.block_by_root(&parent).unwrap();
        assert_eq!(SyntheticChain::parse_block(&parent_block).unwrap().0, 49);
        assert_eq!(chain.block_at_slot(0), None);
        assert_eq!(chain.block_at_slot(101), None);
        let status = chain.status();
        assert_eq!((status.head_slot, status.finalized_slot), (100, 36));
        let head: Root = Sha256::digest(chain.block_at_slot(100).unwrap()).into();
        assert_eq!(status.head_root, head);
    }

    #[test]
    fn chains_of_different_networks_differ() {
        let a = SyntheticChain::new(1, 3, 64);
        let b = SyntheticChain::new(2, 3, 64);
        assert_ne!(a.status().head_root, b.status().head_root);
        assert_eq!(
            a.status().head_root,
            SyntheticChain::new(1, 3, 64).status().head_root
        );
    }
}
