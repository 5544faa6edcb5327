//! Signed devnet chains, shared by the worlds that need the same one.
//!
//! # Design
//! Signing a chain is the slowest part of building a chain scenario's world
//! (about a quarter of a millisecond per block: a 10,000-block chain takes
//! seconds), and the chain depends only on (network id, length, body
//! bytes), never on the seed. A [`ChainCache`] signs each such chain once
//! and hands out clones that share its blocks (`ChainConfig::stored` is an
//! `Arc`). It is an explicit object owned by whoever runs worlds: one run
//! makes its own ([`crate::scenario::run`]), a campaign shares one across
//! all its seeds and worker threads ([`crate::campaign`]). There is no
//! process-wide cache: two callers with separate caches share nothing.
//!
//! Two threads asking for one chain at once wait for one signer (each entry
//! is a `OnceLock`); the cache's lock is held only to find the entry, never
//! while signing.
//!
//! # Limits
//! At most [`CHAIN_CACHE_ENTRIES_MAX`] chains are kept; past that the oldest
//! is forgotten (worlds still holding it keep their clone). A campaign runs
//! one scenario, which asks for one or two chains.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use meshsync_core::chain::{ChainConfig, SignedBlock};

/// Chains one [`ChainCache`] keeps, at most: a campaign's scenario asks for
/// one or two, a test binary's worlds for a few more.
pub const CHAIN_CACHE_ENTRIES_MAX: usize = 16;

/// What a devnet chain is built from: (network id, head slot, body bytes).
type ChainKey = (u64, u64, usize);

/// Signed devnet chains by (network id, length, body bytes); see the module docs.
///
/// Cloning the cache shares it.
#[derive(Clone, Default)]
pub struct ChainCache {
    shared: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    chains: BTreeMap<ChainKey, Arc<OnceLock<ChainConfig>>>,
    /// Keys in the order they were first asked for: the oldest goes first.
    order: VecDeque<ChainKey>,
}

impl ChainCache {
    /// An empty cache.
    pub fn new() -> ChainCache {
        ChainCache::default()
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
            .get_or_init(|| ChainConfig::devnet_with_chain(network_id, head_slot, body_bytes))
            .clone()
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
