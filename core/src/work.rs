//! CPU work the driver runs off the protocol loop, and what goes to disk.
//!
//! # Design
//! Verifying block signatures is the one heavy computation the core needs:
//! about a millisecond per BLS signature, so a 64-block sync batch would
//! stall every connection for tens of milliseconds if the core did it in
//! `handle`. Instead the core emits [`crate::Action::Work`] with a [`Job`];
//! the driver runs [`Job::run`] wherever it likes (the mio driver on a
//! crossbeam worker pool, the simulator inline, charging
//! [`Job::modelled_cost`] of virtual time) and hands the [`WorkOutput`] back
//! as [`crate::Input::WorkDone`]. A job carries everything it needs and gives
//! its blocks back, so nothing is copied and the core keeps no reference
//! into it.
//!
//! Durable storage is the other side effect the core cannot perform:
//! [`crate::Action::Persist`] carries a [`PersistBatch`]; the driver writes
//! it durably (or not at all) and answers [`crate::Input::Persisted`] with
//! the batch's id. Batches are answered in order. What the core evicted
//! from memory (finalized history, see `chain::store`) it reads back with
//! [`crate::Action::ReadBlocks`] to serve a range that starts below what
//! it holds; the driver answers [`crate::Input::BlocksRead`].
//!
//! ```text
//!  core ── Action::Work { id, job } ───► driver: job.run() on a worker
//!  core ◄── Input::WorkDone { id, output } ── (any order, any thread)
//!  core ── Action::Persist(batch) ──────► driver: one durable transaction
//!  core ◄── Input::Persisted { id } ──────── (in batch order)
//!  core ── Action::ReadBlocks(read) ────► driver: finalized blocks by slot
//!  core ◄── Input::BlocksRead { id, .. } ── (any order)
//! ```
//!
//! # Determinism
//! A verification job's randomness (the batch scalars) comes from a seed
//! the core draws from its own seeded RNG, so a job's output is a pure
//! function of the job, wherever and whenever it runs.

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::chain::{
    verify_batch_locating, Checkpoint, Genesis, Root, SignedBlock, SigningWatermark,
};
use crate::time::Duration;

/// Names a job in its [`crate::Input::WorkDone`].
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct WorkId(pub u64);

/// Modelled cost of checking one signature inside a batch, for the
/// simulator: blst's multi-pairing on one core of this project's 2-core CI
/// machine (`meshsync bench sync` measured 1 500–1 600 blocks/s on one
/// thread in batches of 64, including the per-batch cost below).
pub const MODELLED_BATCH_SIGNATURE_COST: Duration = Duration::from_micros(620);
/// Modelled fixed cost of one batch (the final exponentiation and setup).
pub const MODELLED_BATCH_BASE_COST: Duration = Duration::from_micros(600);

/// CPU work for the driver to run.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Job {
    /// Check every block's proposer, body root and signature, as one BLS
    /// batch; if the batch fails, one by one to locate the bad blocks.
    VerifyBlocks {
        /// The network the blocks claim to belong to.
        genesis: Arc<Genesis>,
        /// The blocks, handed back in the output.
        blocks: Vec<SignedBlock>,
        /// Seeds the batch scalars.
        seed: [u8; 32],
    },
}

/// What a [`Job`] produced.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum WorkOutput {
    /// The answer to [`Job::VerifyBlocks`].
    VerifiedBlocks {
        /// The job's blocks, in the job's order.
        blocks: Vec<SignedBlock>,
        /// `Ok` if all are valid, else the positions of the invalid ones
        /// (never empty).
        result: Result<(), Vec<usize>>,
    },
}

impl Job {
    /// Runs the job. Pure: the same job gives the same output anywhere.
    pub fn run(self) -> WorkOutput {
        match self {
            Job::VerifyBlocks {
                genesis,
                blocks,
                seed,
            } => {
                let mut rng = ChaCha20Rng::from_seed(seed);
                let result = verify_batch_locating(&genesis, &blocks, &mut rng);
                WorkOutput::VerifiedBlocks { blocks, result }
            }
        }
    }

    /// Virtual time the simulator charges for running the job.
    pub fn modelled_cost(&self) -> Duration {
        match self {
            Job::VerifyBlocks { blocks, .. } => {
                let signatures = u32::try_from(blocks.len()).unwrap_or(u32::MAX);
                MODELLED_BATCH_BASE_COST
                    .saturating_add(MODELLED_BATCH_SIGNATURE_COST.saturating_mul(signatures))
            }
        }
    }
}

/// Persist batches handed to the driver and not yet confirmed, at most:
/// past it the node defers what is to be stored (and skips a slot rather
/// than wait for a signing watermark) until the driver catches up.
pub const PERSIST_IN_FLIGHT_MAX: usize = 1_024;

/// Blocks to make durable, forks to forget and a signing watermark to
/// record, in one transaction.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct PersistBatch {
    /// Answered by [`crate::Input::Persisted`] with the same id; ids increase.
    pub id: u64,
    /// Blocks to store (already verified and imported), with their roots.
    pub blocks: Vec<(Root, SignedBlock)>,
    /// Blocks the fork choice dropped: the store may delete them.
    pub delete: Vec<Root>,
    /// The finalized block after this batch.
    pub finalized: Checkpoint,
    /// Canonical blocks that became finalized since the previous batch,
    /// lowest slot first (stored in this batch or an earlier one): they
    /// never change again, so the driver indexes them by slot and reads
    /// them back by slot for [`crate::Action::ReadBlocks`].
    pub finalized_chain: Vec<Checkpoint>,
    /// A proposer key's new signing watermark, to record in the same
    /// transaction; the store keeps the highest slot per key and never
    /// lowers it. The core signs that slot only once this batch is
    /// acknowledged, so the record must be as durable as the blocks.
    pub watermark: Option<SigningWatermark>,
}

/// A read of finalized history from the driver's store: the ancestors of
/// the finalized block of the last durable [`PersistBatch`] (and that block)
/// whose slots are in `start_slot..end_slot`, lowest slot first, as many as
/// fit `blocks_max` and `bytes_max` (encoded bytes), stopping at the first
/// that does not. Answered by [`crate::Input::BlocksRead`] with the same id;
/// every read must be answered (with no blocks if the store cannot), since
/// the core holds a bounded number open.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct BlockRead {
    /// Answered with this id.
    pub id: u64,
    /// The lowest slot wanted.
    pub start_slot: u64,
    /// One past the highest slot wanted.
    pub end_slot: u64,
    /// Most blocks to return.
    pub blocks_max: usize,
    /// Most encoded bytes of blocks to return.
    pub bytes_max: usize,
}

impl BlockRead {
    /// The answer from a disk modelled in memory (the simulator's, the test
    /// network's): `finalized` is the finalized root of the last durable
    /// batch, `genesis` the genesis root, and `block` finds a stored block
    /// by root. Walks down from `finalized`, so it costs the history above
    /// the range; the mio driver keeps an index instead. Returns the blocks
    /// and whether every block of the range was returned: a block missing
    /// above the range's start (the walk cannot get past it) returns
    /// nothing, since what lies above a hole is no prefix of the range.
    pub fn answer_from<'a>(
        &self,
        finalized: Root,
        genesis: Root,
        block: impl Fn(&Root) -> Option<&'a SignedBlock>,
    ) -> (Vec<SignedBlock>, bool) {
        let mut in_range = Vec::new();
        let mut cursor = finalized;
        loop {
            let Some(found) = block(&cursor) else {
                if cursor == genesis {
                    break;
                }
                return (Vec::new(), false);
            };
            if found.slot() < self.start_slot {
                break;
            }
            if found.slot() < self.end_slot {
                in_range.push(found);
            }
            if found.slot() == self.start_slot {
                break; // Nothing below is wanted.
            }
            cursor = found.parent_root();
        }
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let total = in_range.len();
        for found in in_range.into_iter().rev() {
            let len = found.encoded_len();
            if blocks.len() >= self.blocks_max || bytes.saturating_add(len) > self.bytes_max {
                break;
            }
            bytes += len;
            blocks.push(found.clone());
        }
        let complete = blocks.len() == total;
        (blocks, complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainConfig;

    #[test]
    fn a_verification_job_finds_the_bad_block_and_gives_the_blocks_back() {
        let chain = ChainConfig::devnet_with_chain(3, 6, 32);
        let mut blocks = chain.stored.to_vec();
        blocks[4].body[0] ^= 1; // The body root no longer matches.
        let job = Job::VerifyBlocks {
            genesis: chain.genesis.clone(),
            blocks: blocks.clone(),
            seed: [9; 32],
        };
        assert_eq!(
            job.modelled_cost(),
            MODELLED_BATCH_BASE_COST + MODELLED_BATCH_SIGNATURE_COST * 6
        );
        let WorkOutput::VerifiedBlocks {
            blocks: back,
            result,
        } = job.clone().run();
        assert_eq!(back, blocks);
        assert_eq!(result, Err(vec![4]));
        assert_eq!(job.run(), {
            let job = Job::VerifyBlocks {
                genesis: chain.genesis.clone(),
                blocks,
                seed: [9; 32],
            };
            job.run()
        });
        let good = Job::VerifyBlocks {
            genesis: chain.genesis.clone(),
            blocks: chain.stored.to_vec(),
            seed: [1; 32],
        };
        assert!(matches!(
            good.run(),
            WorkOutput::VerifiedBlocks { result: Ok(()), .. }
        ));
    }
}
