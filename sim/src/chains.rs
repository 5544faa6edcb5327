//! Signed devnet chains, shared by the worlds that need the same one.
//!
//! # Design
//! Signing a chain is the slowest part of building a chain scenario's world
//! (about a quarter of a millisecond per block: a 10,000-block chain takes
//! seconds), and the chain depends only on (network id, length, body
//! bytes), never on the seed. A [`ChainCache`] signs each such chain once,
//! on every core ([`SIGNING_THREADS_MAX`] at most; the chain is the one a
//! single thread signs, bit for bit), and hands out clones that share its
//! blocks (`ChainConfig::stored` is an `Arc`). It is an explicit object
//! owned by whoever runs worlds: one run makes its own
//! ([`crate::scenario::run`]), a campaign shares one across all its seeds
//! and worker threads ([`crate::campaign`]). There is no process-wide
//! cache: two callers with separate caches share nothing.
//!
//! Two threads asking for one chain at once wait for one signer (each entry
//! is a `OnceLock`); the cache's lock is held only to find the entry, never
//! while signing.
//!
//! The cache also knows which blocks are valid ([`ChainCache::run_job`]):
//! a block the cache signed (one of its chains' blocks, bit for bit), or
//! one a node's verification job found valid or invalid, is not checked
//! again (a BLS check costs about as much as signing; in a world of N
//! nodes every block is checked N times, and a campaign's hostile servers
//! serve the same forged blocks at every seed). Validity is a pure
//! function of the block's bytes and its genesis, and a job's result is
//! exactly the positions of its invalid blocks, each judged alone, so the
//! job's output is what running it gives, bit for bit; only the wall time
//! changes (the virtual time a job takes is its modelled cost either way).
//! A block that differs in any byte (a forgery, a bit flipped) is a block
//! never seen, and is checked for real.
//!
//! A cache made with [`ChainCache::saved_in`] also keeps each chain's
//! signatures and body roots in a directory ([`saved`]), so the next
//! process rebuilds the chain in milliseconds instead of signing it again;
//! the chain is the one signing gives, bit for bit, either way.
//!
//! # Limits
//! At most [`CHAIN_CACHE_ENTRIES_MAX`] chains are kept; past that the oldest
//! is forgotten (worlds still holding it keep their clone). A campaign runs
//! one scenario, which asks for one or two chains. At most
//! [`VALID_BLOCKS_MAX`] blocks are known valid and [`INVALID_BLOCKS_MAX`]
//! invalid; past either, that set starts afresh.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use meshsync_core::chain::{unsigned_chain, ChainConfig, Genesis, SignedBlock, UnsignedBlock};
use meshsync_core::work::{Job, WorkOutput};
use sha2::{Digest, Sha256};

pub mod saved;

use saved::{Loaded, SavedChains};

/// Chains one [`ChainCache`] keeps, at most: a campaign's scenario asks for
/// one or two, a test binary's worlds for a few more.
pub const CHAIN_CACHE_ENTRIES_MAX: usize = 16;

/// Blocks one [`ChainCache`] knows valid, at most: about 12 MB.
pub const VALID_BLOCKS_MAX: usize = 262_144;

/// Blocks one [`ChainCache`] knows invalid, at most: about 3 MB.
pub const INVALID_BLOCKS_MAX: usize = 65_536;

/// What a devnet chain is built from: (network id, head slot, body bytes).
type ChainKey = (u64, u64, usize);

/// sha256 over a block's genesis root and every byte of the block.
type BlockKey = [u8; 32];

/// Signed devnet chains by (network id, length, body bytes); see the module docs.
///
/// Cloning the cache shares it.
#[derive(Clone, Default)]
pub struct ChainCache {
    shared: Arc<Mutex<Entries>>,
    /// Where signatures outlive the process, if anywhere.
    saved: Option<SavedChains>,
}

#[derive(Default)]
struct Entries {
    chains: BTreeMap<ChainKey, Arc<OnceLock<ChainConfig>>>,
    /// Keys in the order they were first asked for: the oldest goes first.
    order: VecDeque<ChainKey>,
    /// Blocks known valid (see the module docs).
    valid: BTreeSet<BlockKey>,
    /// Blocks known invalid.
    invalid: BTreeSet<BlockKey>,
    /// Verification jobs that ran (were not answered from what is known).
    jobs_run: u64,
}

impl Entries {
    fn remember_valid(&mut self, keys: impl IntoIterator<Item = BlockKey>) {
        for key in keys {
            if self.valid.len() >= VALID_BLOCKS_MAX {
                self.valid.clear();
            }
            self.valid.insert(key);
        }
    }

    fn remember_invalid(&mut self, keys: impl IntoIterator<Item = BlockKey>) {
        for key in keys {
            if self.invalid.len() >= INVALID_BLOCKS_MAX {
                self.invalid.clear();
            }
            self.invalid.insert(key);
        }
    }

    /// The positions of the invalid ones among `keys` if every one is known
    /// valid or invalid.
    fn judged(&self, keys: &[BlockKey]) -> Option<Vec<usize>> {
        let mut invalid = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            if self.invalid.contains(key) {
                invalid.push(index);
            } else if !self.valid.contains(key) {
                return None;
            }
        }
        Some(invalid)
    }
}

/// Threads that sign one chain, at most.
pub const SIGNING_THREADS_MAX: usize = 16;

/// Signs `blocks` with `sign`, in order, split into one run of consecutive
/// blocks per core (at most [`SIGNING_THREADS_MAX`]). Signing is the one
/// slow part of building a chain world and a BLS signature is
/// deterministic, so the chain is the one signing on one thread gives; it
/// is built before any world runs, and no world's run uses a thread.
fn sign_on_every_core(
    blocks: Vec<UnsignedBlock>,
    sign: &(dyn Fn(UnsignedBlock) -> SignedBlock + Sync),
) -> Vec<SignedBlock> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(SIGNING_THREADS_MAX);
    let per_thread = blocks.len().div_ceil(threads).max(1);
    let mut runs = Vec::with_capacity(threads);
    let mut rest = blocks;
    while rest.len() > per_thread {
        let tail = rest.split_off(per_thread);
        runs.push(rest);
        rest = tail;
    }
    runs.push(rest);
    std::thread::scope(|scope| {
        let signers: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(move || run.into_iter().map(sign).collect::<Vec<_>>()))
            .collect();
        signers
            .into_iter()
            .flat_map(|signer| signer.join().expect("signing a block does not panic"))
            .collect()
    })
}

/// Names `block` of `genesis`'s network by all its bytes. Field by field,
/// not through `SignedBlock::encode`, which refuses (panics on) a body
/// over the limit: a hostile peer's block is hashed, never judged, here.
fn block_key(genesis: &Genesis, block: &SignedBlock) -> BlockKey {
    let mut hasher = Sha256::new();
    hasher.update(genesis.root().as_bytes());
    hasher.update(block.header.encode());
    hasher.update(block.signature);
    hasher.update((block.body.len() as u64).to_le_bytes());
    hasher.update(&block.body);
    hasher.finalize().into()
}

impl ChainCache {
    /// An empty cache, kept in memory only.
    pub fn new() -> ChainCache {
        ChainCache::default()
    }

    /// An empty cache that takes signatures from `dir` and keeps the ones it
    /// signs there ([`saved`]).
    pub fn saved_in(dir: impl Into<std::path::PathBuf>) -> ChainCache {
        ChainCache {
            saved: Some(SavedChains::in_dir(dir)),
            ..ChainCache::default()
        }
    }

    /// The directory signatures are kept in, if any.
    pub fn saved_dir(&self) -> Option<&std::path::Path> {
        self.saved.as_ref().map(SavedChains::dir)
    }

    /// The chain `key` names on `genesis`, signed by `sign`: rebuilt from
    /// the directory when it kept this chain, else built and signed on
    /// every core (and then kept).
    fn build(
        &self,
        key: ChainKey,
        genesis: &Genesis,
        sign: &(dyn Fn(UnsignedBlock) -> SignedBlock + Sync),
    ) -> Arc<[SignedBlock]> {
        let (_, head_slot, body_bytes) = key;
        let count = usize::try_from(head_slot).expect("a chain that fits in memory");
        let unsigned = || unsigned_chain(genesis, genesis.root(), 1, count, body_bytes);
        let Some(saved) = &self.saved else {
            return sign_on_every_core(unsigned(), sign).into();
        };
        match saved.load(key, genesis, sign) {
            Loaded::Blocks(blocks) => return blocks,
            Loaded::Missing => {}
            Loaded::Refused(why) => log::warn!("signing the chain again: {why}"),
        }
        let blocks = sign_on_every_core(unsigned(), sign);
        match saved.save(key, &blocks) {
            Ok(()) => log::info!(
                "kept the signatures of {} blocks in {}",
                blocks.len(),
                saved.dir().display()
            ),
            Err(error) => log::warn!(
                "could not keep the chain's signatures in {}: {error}",
                saved.dir().display()
            ),
        }
        blocks.into()
    }

    /// The devnet chain of `head_slot` blocks with `body_bytes`-byte bodies
    /// on `network_id` ([`ChainConfig::devnet_with_chain`]): signed at the
    /// first call for these parameters, shared after that.
    pub fn devnet_chain(&self, network_id: u64, head_slot: u64, body_bytes: usize) -> ChainConfig {
        let key = (network_id, head_slot, body_bytes);
        let entry = {
            // A panic elsewhere while the lock was held left the map whole:
            // every change to it below is one insert or one removal.
            let mut entries = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            let entries = &mut *entries;
            let entry = entries.chains.entry(key).or_insert_with(|| {
                entries.order.push_back(key);
                Arc::default()
            });
            let entry = Arc::clone(entry);
            while entries.order.len() > CHAIN_CACHE_ENTRIES_MAX {
                // Cannot fail: the queue holds more than the maximum, at least one key.
                let oldest = entries.order.pop_front().expect("a key to forget");
                entries.chains.remove(&oldest);
            }
            entry
        };
        entry
            .get_or_init(|| {
                ChainConfig::devnet_with_blocks(network_id, |genesis, sign| {
                    self.build(key, genesis, sign)
                })
            })
            .clone()
    }

    /// Whether every one of `blocks` is a block of a chain this cache
    /// signed for `genesis`, bit for bit: valid by construction.
    fn all_signed_here(&self, genesis: &Genesis, blocks: &[SignedBlock]) -> bool {
        let chains: Vec<ChainConfig> = {
            let entries = self.lock();
            entries
                .chains
                .values()
                .filter_map(|entry| entry.get())
                .filter(|chain| chain.genesis.root() == genesis.root())
                .cloned()
                .collect()
        };
        !chains.is_empty()
            && blocks
                .iter()
                .all(|block| chains.iter().any(|chain| is_block_of(&chain.stored, block)))
    }

    /// What `job.run()` gives, without checking again the blocks already
    /// judged (see the module docs): a job whose blocks are all the cache's
    /// own, or all known valid or invalid, is answered at once; any other
    /// runs, and what it finds of each block is remembered.
    pub fn run_job(&self, job: Job) -> WorkOutput {
        let Job::VerifyBlocks {
            genesis, blocks, ..
        } = &job;
        if self.all_signed_here(genesis, blocks) {
            let Job::VerifyBlocks { blocks, .. } = job;
            return WorkOutput::VerifiedBlocks {
                blocks,
                result: Ok(()),
            };
        }
        let keys: Vec<BlockKey> = blocks
            .iter()
            .map(|block| block_key(genesis, block))
            .collect();
        let judged = self.lock().judged(&keys);
        if let Some(invalid) = judged {
            let Job::VerifyBlocks { blocks, .. } = job;
            return WorkOutput::VerifiedBlocks {
                blocks,
                result: if invalid.is_empty() {
                    Ok(())
                } else {
                    Err(invalid)
                },
            };
        }
        let output = job.run();
        let WorkOutput::VerifiedBlocks { result, .. } = &output;
        let invalid: &[usize] = match result {
            Ok(()) => &[],
            Err(invalid) => invalid,
        };
        let (bad, good): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .enumerate()
            .partition(|(index, _)| invalid.contains(index));
        let mut entries = self.lock();
        entries.jobs_run += 1;
        entries.remember_valid(good.into_iter().map(|(_, key)| key));
        entries.remember_invalid(bad.into_iter().map(|(_, key)| key));
        output
    }

    /// Blocks known valid.
    pub fn valid_blocks(&self) -> usize {
        self.lock().valid.len()
    }

    /// Blocks known invalid.
    pub fn invalid_blocks(&self) -> usize {
        self.lock().invalid.len()
    }

    /// Verification jobs [`ChainCache::run_job`] ran rather than answered.
    pub fn jobs_run(&self) -> u64 {
        self.lock().jobs_run
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic elsewhere while the lock was held left the sets whole:
        // every change to them is one insert, one removal or one clear.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chains kept (signed, or being signed).
    pub fn len(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .chains
            .len()
    }

    /// Whether no chain is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCache")
            .field("chains", &self.len())
            .field("saved_in", &self.saved_dir())
            .finish()
    }
}

/// Whether `block` is one of `chain`'s blocks, bit for bit (header, body and
/// signature). `chain` holds at most one block per slot, in slot order, as a
/// devnet chain does.
pub fn is_block_of(chain: &[SignedBlock], block: &SignedBlock) -> bool {
    chain
        .binary_search_by_key(&block.slot(), SignedBlock::slot)
        .is_ok_and(|index| chain[index] == *block)
}

#[cfg(test)]
mod tests {
    use meshsync_core::chain::verify_block;

    use super::*;

    #[test]
    fn a_cached_chain_is_the_chain_signed_afresh_and_it_verifies() {
        let cache = ChainCache::new();
        let cached = cache.devnet_chain(4, 12, 100);
        let fresh = ChainConfig::devnet_with_chain(4, 12, 100);
        assert_eq!(cached, fresh);
        for block in fresh.stored.iter() {
            verify_block(&fresh.genesis, block).expect("a devnet block verifies");
        }
        // Asked again: the same blocks, not signed again.
        let again = cache.devnet_chain(4, 12, 100);
        assert!(Arc::ptr_eq(&again.stored, &cached.stored));
        assert_eq!(cache.len(), 1);
        // Other parameters are other chains, each what signing would give.
        for (network_id, head_slot, body_bytes) in [(5, 12, 100), (4, 13, 100), (4, 12, 101)] {
            let other = cache.devnet_chain(network_id, head_slot, body_bytes);
            assert_eq!(
                other,
                ChainConfig::devnet_with_chain(network_id, head_slot, body_bytes)
            );
            assert_ne!(other.stored, cached.stored);
        }
        assert_eq!(cache.len(), 4);
        // A clone shares the chains; a new cache does not.
        assert!(Arc::ptr_eq(
            &cache.clone().devnet_chain(4, 12, 100).stored,
            &cached.stored
        ));
        assert!(!Arc::ptr_eq(
            &ChainCache::new().devnet_chain(4, 12, 100).stored,
            &cached.stored
        ));
    }

    #[test]
    fn the_cache_forgets_its_oldest_chain_first() {
        let cache = ChainCache::new();
        let first = cache.devnet_chain(1, 1, 0);
        for head_slot in 2..=CHAIN_CACHE_ENTRIES_MAX as u64 {
            cache.devnet_chain(1, head_slot, 0);
        }
        assert_eq!(cache.len(), CHAIN_CACHE_ENTRIES_MAX);
        assert!(Arc::ptr_eq(
            &cache.devnet_chain(1, 1, 0).stored,
            &first.stored
        ));
        cache.devnet_chain(1, 100, 0);
        assert_eq!(cache.len(), CHAIN_CACHE_ENTRIES_MAX);
        let signed_again = cache.devnet_chain(1, 1, 0);
        assert!(!Arc::ptr_eq(&signed_again.stored, &first.stored));
        assert_eq!(signed_again, first);
    }

    #[test]
    fn threads_sharing_a_cache_get_one_chain() {
        let cache = ChainCache::new();
        let chains: Vec<ChainConfig> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| cache.devnet_chain(6, 20, 64)))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("no panic"))
                .collect()
        });
        assert!(Arc::ptr_eq(&chains[0].stored, &chains[1].stored));
    }

    fn verify_job(chain: &ChainConfig, blocks: Vec<SignedBlock>, seed: u8) -> Job {
        Job::VerifyBlocks {
            genesis: Arc::clone(&chain.genesis),
            blocks,
            seed: [seed; 32],
        }
    }

    #[test]
    fn a_job_answered_from_known_blocks_is_what_running_it_gives() {
        let chain = ChainConfig::devnet_with_chain(9, 8, 32);
        let blocks = chain.stored.to_vec();
        let cache = ChainCache::new();
        // Nothing known: the job runs, and its valid blocks are remembered.
        let first = verify_job(&chain, blocks[..4].to_vec(), 1);
        assert_eq!(cache.run_job(first.clone()), first.run());
        assert_eq!((cache.valid_blocks(), cache.jobs_run()), (4, 1));
        // All known: answered without running, the same answer.
        let again = verify_job(&chain, blocks[1..3].to_vec(), 2);
        assert_eq!(cache.run_job(again.clone()), again.run());
        assert_eq!((cache.valid_blocks(), cache.jobs_run()), (4, 1));
        // A known block with one byte changed anywhere is a block never
        // seen: checked for real and found invalid; its neighbours are
        // remembered valid, it is remembered invalid.
        let mut body = blocks[1].clone();
        body.body[0] ^= 1;
        let mut signature = blocks[2].clone();
        signature.signature = blocks[3].signature;
        let forged_jobs: Vec<Job> = [body, signature]
            .into_iter()
            .map(|forged| {
                verify_job(
                    &chain,
                    vec![blocks[0].clone(), forged, blocks[5].clone()],
                    3,
                )
            })
            .collect();
        for job in &forged_jobs {
            let output = cache.run_job(job.clone());
            assert_eq!(output, job.clone().run());
            let WorkOutput::VerifiedBlocks { result, .. } = output;
            assert_eq!(result, Err(vec![1]));
        }
        assert_eq!(cache.valid_blocks(), 5);
        assert_eq!((cache.invalid_blocks(), cache.jobs_run()), (2, 3));
        // Judged blocks in another order and mix: answered without running,
        // as running would (both forgeries found, at their positions).
        let mixed = {
            let Job::VerifyBlocks { blocks: first, .. } = &forged_jobs[0];
            let Job::VerifyBlocks { blocks: second, .. } = &forged_jobs[1];
            verify_job(
                &chain,
                vec![
                    second[1].clone(),
                    blocks[5].clone(),
                    first[1].clone(),
                    blocks[0].clone(),
                ],
                7,
            )
        };
        let output = cache.run_job(mixed.clone());
        assert_eq!(output, mixed.run());
        let WorkOutput::VerifiedBlocks { result, .. } = output;
        assert_eq!(result, Err(vec![0, 2]));
        assert_eq!(cache.jobs_run(), 3);
        // One block never seen among judged ones: the job runs.
        let unseen = verify_job(&chain, vec![blocks[0].clone(), blocks[6].clone()], 8);
        assert_eq!(cache.run_job(unseen.clone()), unseen.run());
        assert_eq!(cache.jobs_run(), 4);
        // The same blocks on another network are other blocks.
        let other = ChainConfig::devnet_with_chain(10, 8, 32);
        let job = verify_job(&other, blocks[..1].to_vec(), 4);
        let output = cache.run_job(job.clone());
        assert!(matches!(
            output,
            WorkOutput::VerifiedBlocks { result: Err(_), .. }
        ));
        assert_eq!(output, job.run());
    }

    #[test]
    fn known_blocks_are_bounded() {
        let mut entries = Entries::default();
        let over = 3;
        let key = |index: usize| {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(index as u64).to_le_bytes());
            key
        };
        entries.remember_valid((0..VALID_BLOCKS_MAX + over).map(key));
        entries.remember_invalid((0..INVALID_BLOCKS_MAX + over).map(key));
        // Full, each started afresh: the last few are all it knows.
        assert_eq!(entries.valid.len(), over);
        assert_eq!(entries.invalid.len(), over);
    }

    #[test]
    fn blocks_the_cache_signed_are_known_valid() {
        let cache = ChainCache::new();
        let chain = cache.devnet_chain(11, 6, 16);
        let job = verify_job(&chain, chain.stored.to_vec(), 5);
        assert_eq!(cache.run_job(job.clone()), job.clone().run());
        // Answered from the chain: had the job run, its six valid blocks
        // would be remembered.
        assert_eq!(cache.valid_blocks(), 0);
        // A clone shares the chains.
        assert_eq!(cache.clone().run_job(job.clone()), job.run());
        assert_eq!(cache.valid_blocks(), 0);
        // One block changed: the job runs (and remembers the five others).
        let mut blocks = chain.stored.to_vec();
        blocks[2].body[0] ^= 1;
        let job = verify_job(&chain, blocks, 6);
        assert_eq!(cache.run_job(job.clone()), job.run());
        assert_eq!(cache.valid_blocks(), 5);
    }

    #[test]
    fn a_chain_kept_in_a_directory_is_taken_from_there_by_the_next_process() {
        let temp = saved::tests::TempDir::new();
        let dir = &temp.0;
        let signed = ChainCache::saved_in(dir).devnet_chain(8, 5, 24);
        assert_eq!(signed, ChainConfig::devnet_with_chain(8, 5, 24));
        assert_eq!(std::fs::read_dir(dir).expect("the dir").count(), 1);
        // Another cache (as in a later process) on the same directory takes
        // the signatures from the file: kept with all but the head's
        // swapped (whole, and the head checks), they come back swapped.
        let mut swapped = signed.stored.to_vec();
        swapped.swap(0, 1);
        let signatures: Vec<[u8; 96]> = swapped.iter().map(|block| block.signature).collect();
        let mut kept = signed.stored.to_vec();
        for (block, signature) in kept.iter_mut().zip(signatures) {
            block.signature = signature;
        }
        SavedChains::in_dir(dir)
            .save((8, 5, 24), &kept)
            .expect("saved");
        let loaded = ChainCache::saved_in(dir).devnet_chain(8, 5, 24);
        assert_eq!(loaded.stored.to_vec(), kept);
        // The honest file again: the chain signing gives.
        SavedChains::in_dir(dir)
            .save((8, 5, 24), &signed.stored)
            .expect("saved");
        assert_eq!(ChainCache::saved_in(dir).devnet_chain(8, 5, 24), signed);
        // A file that fails its checks is signed over and replaced.
        let path = std::fs::read_dir(dir)
            .expect("the dir")
            .next()
            .expect("a file")
            .expect("an entry")
            .path();
        let mut bytes = std::fs::read(&path).expect("the file");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("written");
        assert_eq!(ChainCache::saved_in(dir).devnet_chain(8, 5, 24), signed);
        bytes[last] ^= 1;
        assert_eq!(std::fs::read(&path).expect("the file"), bytes);
    }

    #[test]
    fn blocks_of_a_chain_are_recognised_bit_for_bit() {
        let chain = ChainConfig::devnet_with_chain(2, 8, 32);
        let blocks = &chain.stored;
        assert!(blocks.iter().all(|block| is_block_of(blocks, block)));
        let mut body = blocks[3].clone();
        body.body[0] ^= 1;
        let mut signature = blocks[3].clone();
        signature.signature = blocks[4].signature;
        let mut beyond = blocks[7].clone();
        beyond.header.slot = 9;
        for changed in [&body, &signature, &beyond] {
            assert!(!is_block_of(blocks, changed));
        }
        let other = ChainConfig::devnet_with_chain(3, 8, 32);
        assert!(!is_block_of(blocks, &other.stored[3]));
    }
}
