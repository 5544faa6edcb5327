//! Chain stores built once per stored chain, for the nodes that start on it.
//!
//! A chain scenario starts many nodes on one pre-signed chain (`late-joiner`:
//! 20 peers holding 10,000 blocks), and building a node's chain store from
//! its stored blocks (a copy of every block, its root hashed, four indexes
//! filled) was most of building that world once the chain's signatures came
//! from disk. The core builds the same store from the same chain every time,
//! and a clone of a store shares its maps until one of them changes, so the
//! world builds each chain's store once and hands every node that starts on
//! it a clone ([`meshsync_core::Node::with_chain_store`]). That store holds
//! the chain's blocks in place ([`ChainStore::sharing_stored`]: the world
//! keeps the chain anyway) instead of copying them as
//! [`ChainStore::for_config`] does. The nodes are the ones `Node::new`
//! would make, bit for bit: runs keep their traces.
//!
//! A chain is recognised by its blocks' allocation (`ChainConfig::stored` is
//! an `Arc`, shared by every clone of one chain), its genesis root and its
//! history anchor: a world that hands nodes clones of one `ChainConfig`
//! builds one store; one that builds each node's chain afresh (a restart
//! from the modelled disk) builds one each, as before.
//!
//! # Limits
//! At most [`STARTING_STORES_MAX`] stores are kept (a scenario starts nodes
//! on one to three chains); past that the oldest is forgotten.

use std::sync::Arc;

use meshsync_core::chain::{ChainConfig, ChainStore, Root, SignedBlock};

/// Stores one world keeps for nodes still to start, at most.
pub const STARTING_STORES_MAX: usize = 4;

/// See the module docs.
#[derive(Default)]
pub(super) struct StartingStores {
    /// Oldest first.
    built: Vec<Built>,
}

struct Built {
    /// Held, so the allocation it is recognised by is never reused.
    stored: Arc<[SignedBlock]>,
    genesis_root: Root,
    anchor: Option<Root>,
    store: ChainStore,
}

impl StartingStores {
    /// The store a node starting on `chain` builds: built at the first call
    /// for this chain, a clone after that. Blocks the store refused are
    /// logged once, at that first call.
    pub(super) fn store_for(&mut self, chain: &ChainConfig) -> ChainStore {
        let genesis_root = chain.genesis.root();
        let known = self.built.iter().find(|built| {
            Arc::ptr_eq(&built.stored, &chain.stored)
                && built.genesis_root == genesis_root
                && built.anchor == chain.history_anchor
        });
        if let Some(built) = known {
            return built.store.clone();
        }
        let (store, refused) = ChainStore::sharing_stored(chain);
        for (root, error) in &refused {
            log::warn!("stored block {root} not loaded: {error}");
        }
        if self.built.len() >= STARTING_STORES_MAX {
            self.built.remove(0);
        }
        self.built.push(Built {
            stored: Arc::clone(&chain.stored),
            genesis_root,
            anchor: chain.history_anchor,
            store: store.clone(),
        });
        store
    }

    /// Stores kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.built.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chain_is_built_once_and_each_node_gets_the_store_it_would_build() {
        let chain = ChainConfig::devnet_with_chain(3, 40, 16);
        let mut stores = StartingStores::default();
        let first = stores.store_for(&chain);
        let second = stores.store_for(&chain.clone());
        assert_eq!(stores.len(), 1);
        let (built, _) = ChainStore::for_config(&chain);
        for store in [&first, &second] {
            assert_eq!(store.head(), built.head());
            assert_eq!(store.finalized(), built.finalized());
            assert_eq!(store.len(), built.len());
            assert_eq!(store.status(), built.status());
        }
        // The same blocks in another allocation, or from another anchor,
        // are another chain: built again.
        let mut copied = chain.clone();
        copied.stored = chain.stored.to_vec().into();
        stores.store_for(&copied);
        assert_eq!(stores.len(), 2);
        let mut anchored = chain.clone();
        anchored.history_anchor = Some(chain.stored[30].root());
        let from_anchor = stores.store_for(&anchored);
        assert_eq!(stores.len(), 3);
        assert_eq!(from_anchor.finalized().slot, chain.stored[30].slot());
        assert_eq!(from_anchor.len(), 10);
    }

    #[test]
    fn a_node_changing_its_store_leaves_the_next_nodes_store_alone() {
        let chain = ChainConfig::devnet_with_chain(3, 8, 16);
        let mut stores = StartingStores::default();
        let mut first = stores.store_for(&chain);
        let next_block = meshsync_core::chain::signed_chain(
            &chain.genesis,
            &meshsync_core::chain::devnet_keys(3, 1),
            first.head().root,
            9,
            1,
            16,
        )
        .remove(0);
        first.import(next_block).expect("the next block fits");
        assert_eq!(first.head().slot, 9);
        assert_eq!(stores.store_for(&chain).head().slot, 8);
    }

    #[test]
    fn the_oldest_store_goes_first() {
        let mut stores = StartingStores::default();
        let chains: Vec<ChainConfig> = (0..=STARTING_STORES_MAX)
            .map(|blocks| ChainConfig::devnet_with_chain(3, blocks as u64 + 1, 0))
            .collect();
        for chain in &chains {
            stores.store_for(chain);
        }
        assert_eq!(stores.len(), STARTING_STORES_MAX);
        assert!(!stores
            .built
            .iter()
            .any(|built| Arc::ptr_eq(&built.stored, &chains[0].stored)));
    }
}
