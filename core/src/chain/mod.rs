//! The chain: BLS-signed blocks, genesis, verification and fork choice.
//!
//! # Design
//! - `block`: the 80-byte header, the signed block and their codecs;
//! - `genesis`: the network's parameters (TOML) and proposer keys;
//! - `verify`: single and batch signature checks (blst, seeded scalars);
//! - `store`: [`ChainStore`], blocks by root, canonical blocks by slot,
//!   fork choice (highest slot, ties to the lower root), finality and pruning;
//! - `watermark`: each proposer key's highest signed slot, kept durable so
//!   that no key signs two blocks for one slot.
//!
//! A node's chain starts from a [`ChainConfig`]: the genesis and the blocks
//! its driver loaded from durable storage (verified before they were
//! stored, so they are imported without a second signature check).

use std::sync::Arc;

pub use crate::types::Root;

#[warn(clippy::arithmetic_side_effects)]
pub mod block;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod genesis;
pub mod store;
pub mod verify;
pub mod watermark;

pub use block::{
    BlockDecodeError, BlockHeader, SignedBlock, BLOCK_BYTES_MAX, SIGNED_BLOCK_BYTES_MAX,
};
pub use genesis::{devnet_keys, Genesis, GenesisError};
pub use store::{ChainStore, Checkpoint, ImportError, ImportOutcome, Imported, StoreLimits};
pub use verify::{
    find_invalid, sign_block, signed_chain, unsigned_chain, unsigned_chain_with_body_roots,
    verify_batch, verify_batch_locating, verify_block, BatchError, BlockError, BlockProducer,
    UnsignedBlock,
};
pub use watermark::{ProposerPublicKey, SigningWatermark, PROPOSER_PUBLIC_KEY_BYTES};

/// Slot duration of a devnet genesis made by [`ChainConfig::devnet`].
pub const DEVNET_SLOT_DURATION_MS: u64 = 2_000;

/// Body bytes of the blocks a devnet proposer makes when the application
/// gives none.
pub const DEVNET_BODY_BYTES_DEFAULT: usize = 1_024;

/// A proposer's BLS secret key, shared and never printed.
#[derive(Clone)]
pub struct ProposerKey(pub Arc<blst::min_pk::SecretKey>);

/// As its 32 secret bytes: a recording of a proposer holds its key.
impl serde::Serialize for ProposerKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::serial::encoded::serialize(&self.0.to_bytes(), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ProposerKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ProposerKey, D::Error> {
        crate::serial::encoded::deserialize(deserializer, "a BLS secret key", |bytes| {
            blst::min_pk::SecretKey::from_bytes(bytes).map(|key| ProposerKey(Arc::new(key)))
        })
    }
}

impl PartialEq for ProposerKey {
    fn eq(&self, other: &ProposerKey) -> bool {
        self.0.sk_to_pk() == other.0.sk_to_pk()
    }
}

impl Eq for ProposerKey {}

impl std::fmt::Debug for ProposerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProposerKey(..)")
    }
}

/// What a node's chain starts from, and how it takes part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainConfig {
    /// The network's genesis; its network id must be the node's.
    pub genesis: Arc<Genesis>,
    /// Blocks the driver loaded from its store at start-up, any order. The
    /// node builds its chain store from them and then drops them from its
    /// own copy of the config (`Node::config` shows none).
    pub stored: Arc<[SignedBlock]>,
    /// The stored finalized block the driver loaded from, when it left the
    /// history below it on disk: that block is taken as finalized without
    /// its ancestors, which are served from the store
    /// (`Action::ReadBlocks`). `None`: `stored` reaches back to the genesis.
    pub history_anchor: Option<Root>,
    /// Keys we propose with (each must be a genesis proposer).
    pub proposer_keys: Vec<ProposerKey>,
    /// Signing watermarks the driver loaded from its store at start-up:
    /// a key never signs at or below its watermark (see `watermark`).
    pub signed_slots: Vec<SigningWatermark>,
    /// Body bytes of our blocks when the application queued no body.
    pub body_bytes: usize,
    /// Follow the chain by gossip: subscribe to the blocks topic, validate
    /// and import what arrives there, publish what we produce. Off for a
    /// node used only for its networking (most unit tests).
    pub follow_gossip: bool,
}

impl ChainConfig {
    /// A devnet on `network_id` with one proposer whose key is
    /// `devnet_keys(network_id, 1)[0]`, genesis time 0, and no stored block.
    ///
    /// Derived afresh at each call (a few hundred microseconds: a key
    /// derivation and its validation); a caller that makes many nodes of one
    /// network derives it once and clones it.
    pub fn devnet(network_id: u64) -> ChainConfig {
        let key = devnet_keys(network_id, 1).remove(0);
        let genesis = Genesis::new(
            network_id,
            0,
            DEVNET_SLOT_DURATION_MS,
            vec![key.sk_to_pk()],
            genesis::FINALITY_DEPTH_SLOTS_DEFAULT,
        )
        .expect("devnet parameters are valid");
        ChainConfig {
            genesis: Arc::new(genesis),
            stored: Arc::from(Vec::new()),
            history_anchor: None,
            proposer_keys: Vec::new(),
            signed_slots: Vec::new(),
            body_bytes: DEVNET_BODY_BYTES_DEFAULT,
            follow_gossip: false,
        }
    }

    /// [`ChainConfig::devnet`] with a chain of `head_slot` blocks (one per
    /// slot) of `body_bytes`-byte bodies already stored: for tests, the
    /// simulator and benchmarks.
    pub fn devnet_with_chain(network_id: u64, head_slot: u64, body_bytes: usize) -> ChainConfig {
        ChainConfig::devnet_with_chain_signed_by(
            network_id,
            head_slot,
            body_bytes,
            |blocks, sign| blocks.into_iter().map(sign).collect(),
        )
    }

    /// [`ChainConfig::devnet_with_chain`], its blocks signed by `sign_all`:
    /// it gets the unsigned blocks in slot order and a function that signs
    /// one, and returns them signed, in the same order. Signing is most of
    /// the cost (about a quarter of a millisecond a block); the core never
    /// starts a thread, so a caller with cores to spare signs on them.
    ///
    /// # Panics
    /// If `sign_all` returns another number of blocks than it was given.
    pub fn devnet_with_chain_signed_by(
        network_id: u64,
        head_slot: u64,
        body_bytes: usize,
        sign_all: impl FnOnce(
            Vec<UnsignedBlock>,
            &(dyn Fn(UnsignedBlock) -> SignedBlock + Sync),
        ) -> Vec<SignedBlock>,
    ) -> ChainConfig {
        let count = usize::try_from(head_slot).expect("a chain that fits in memory");
        ChainConfig::devnet_with_blocks(network_id, |genesis, sign| {
            let unsigned = unsigned_chain(genesis, genesis.root(), 1, count, body_bytes);
            let blocks = sign_all(unsigned, sign);
            assert_eq!(blocks.len(), count, "every block signed");
            blocks
        })
    }

    /// [`ChainConfig::devnet`] with the blocks `build` makes stored: it gets
    /// the genesis and a function that signs a block as the devnet's one
    /// proposer, and returns the blocks in slot order (a `Vec`, or an
    /// `Arc` slice it built in place). For a caller that builds the chain
    /// its own way ([`verify::unsigned_chain_with_body_roots`]).
    pub fn devnet_with_blocks<Blocks: Into<Arc<[SignedBlock]>>>(
        network_id: u64,
        build: impl FnOnce(&Genesis, &(dyn Fn(UnsignedBlock) -> SignedBlock + Sync)) -> Blocks,
    ) -> ChainConfig {
        let mut config = ChainConfig::devnet(network_id);
        // The devnet has one proposer: every block is its.
        let key = devnet_keys(network_id, 1).remove(0);
        let network = config.genesis.network_id();
        let sign = |(header, body): UnsignedBlock| sign_block(&key, network, header, body);
        config.stored = build(&config.genesis, &sign).into();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devnet_chain_links_its_blocks_and_is_signed_by_its_proposer() {
        let config = ChainConfig::devnet_with_chain(7, 20, 100);
        assert_eq!(config.genesis.network_id(), 7);
        assert_eq!(config.stored.len(), 20);
        let (store, refused) = ChainStore::from_blocks(
            &config.genesis,
            StoreLimits::default(),
            None,
            config.stored.iter().cloned(),
        );
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(store.head().slot, 20);
        for block in config.stored.iter() {
            verify_block(&config.genesis, block).unwrap();
        }
        // Another network's devnet is another chain.
        let other = ChainConfig::devnet_with_chain(8, 20, 100);
        assert_ne!(other.stored[0].root(), config.stored[0].root());
    }
}
