//! Block verification, one at a time and in batches, and block signing.
//!
//! # Design
//! Verification is a set of plain functions over borrowed data with no node
//! state, so the node can hand them to a driver as `Action::Work` jobs (the
//! mio driver runs them on worker threads, the simulator inline):
//!
//! - [`check_block`]: the cheap checks (slot not 0, the right proposer for the
//!   slot, body size and root, a well-formed signature in the subgroup);
//! - [`verify_block`]: those plus the signature;
//! - [`verify_batch`]: the cheap checks on every block, then one
//!   multi-signature batch check (random linear combination, one final
//!   exponentiation for the whole batch);
//! - [`find_invalid`]: after a failed batch, one by one, to find the bad
//!   blocks (and so the peer that sent them).
//!
//! The pairing arithmetic uses blst's `Pairing` accumulator directly, the
//! same steps as blst's `verify_multiple_aggregate_signatures` without its
//! global thread pool: the core must not start threads, and parallelism
//! belongs to the driver's worker pool (one job per batch).
//!
//! # Security
//! *Provided*: a block passes only if signed, over
//! [`signing_message`] for this network, by
//! the key of proposer `slot mod n`, with a signature that decompresses to a
//! G2 point in the subgroup and not at infinity (blst `sig_validate`), and
//! if its body hashes to its body root. Public keys were validated when the
//! genesis was built, so they are not checked again. A batch of blocks, any
//! of them invalid, passes with probability at most about 2^-64: each
//! signature is weighted by a fresh non-zero 64-bit scalar from the caller's
//! cryptographic RNG, which the sender cannot predict.
//!
//! *Not provided*: anything about the chain (known parent, slot in the past,
//! not finalized away); that is the [`ChainStore`](super::store::ChainStore)'s job.
//!
//! # Limits
//! A batch is as long as the caller makes it; the cost is linear (about
//! 0.7 ms per block on one core here). The node bounds batches by its sync
//! batch size.

use std::fmt;

use blst::min_pk::{PublicKey, SecretKey, Signature};
use blst::{blst_p1_affine, blst_p2_affine, Pairing, BLST_ERROR};
use rand_core::{CryptoRng, RngCore};

use super::block::{
    body_root, signing_message, BlockHeader, SignedBlock, BLOCK_BODY_BYTES_MAX, BLS_DST,
};
use super::genesis::Genesis;
use super::Root;

/// Bits of each random scalar in a batch check (as Lighthouse and Prysm).
pub const BATCH_SCALAR_BITS: usize = 64;

/// Why a block failed verification. Every variant is the fault of whoever
/// made or sent the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Slot 0 belongs to genesis; no block may claim it.
    GenesisSlot,
    /// The proposer index is not `slot mod n`.
    WrongProposer {
        /// The block's slot.
        slot: u64,
        /// The proposer of that slot.
        expected: u64,
        /// The index the block claims.
        actual: u64,
    },
    /// The body is longer than [`BLOCK_BODY_BYTES_MAX`].
    BodyTooLong {
        /// Its length.
        length: usize,
    },
    /// `sha256(body)` is not the header's body root.
    BodyRootMismatch,
    /// The signature bytes are not a compressed G2 point in the subgroup
    /// (or are the point at infinity).
    MalformedSignature,
    /// The signature does not verify against the proposer's key.
    BadSignature,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::GenesisSlot => write!(f, "block claims the genesis slot 0"),
            BlockError::WrongProposer {
                slot,
                expected,
                actual,
            } => write!(
                f,
                "block at slot {slot} names proposer {actual}, the slot's proposer is {expected}"
            ),
            BlockError::BodyTooLong { length } => {
                write!(f, "body of {length} bytes exceeds {BLOCK_BODY_BYTES_MAX}")
            }
            BlockError::BodyRootMismatch => write!(f, "body does not match the body root"),
            BlockError::MalformedSignature => write!(f, "malformed signature"),
            BlockError::BadSignature => write!(f, "signature does not verify"),
        }
    }
}

impl std::error::Error for BlockError {}

/// Why a batch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The block at `index` failed a cheap check; the signatures were not checked.
    Block {
        /// Its position in the batch.
        index: usize,
        /// What was wrong.
        error: BlockError,
    },
    /// The batch signature check failed: at least one signature is bad.
    /// [`find_invalid`] says which.
    Signatures,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Block { index, error } => write!(f, "block {index} of the batch: {error}"),
            BatchError::Signatures => write!(f, "batch signature check failed"),
        }
    }
}

impl std::error::Error for BatchError {}

/// The cheap checks of one block (no pairing): not slot 0, the proposer of
/// its slot, body within its limit and matching its root, and a signature
/// that is a valid subgroup point. Returns the proposer's key and the
/// decompressed signature for the pairing check.
pub fn check_block<'g>(
    genesis: &'g Genesis,
    block: &SignedBlock,
) -> Result<(&'g PublicKey, Signature), BlockError> {
    let header = &block.header;
    if header.slot == 0 {
        return Err(BlockError::GenesisSlot);
    }
    let expected = genesis.proposer_index_at(header.slot);
    if header.proposer_index != expected {
        return Err(BlockError::WrongProposer {
            slot: header.slot,
            expected,
            actual: header.proposer_index,
        });
    }
    if block.body.len() > BLOCK_BODY_BYTES_MAX {
        return Err(BlockError::BodyTooLong {
            length: block.body.len(),
        });
    }
    if body_root(&block.body) != header.body_root {
        return Err(BlockError::BodyRootMismatch);
    }
    let signature = Signature::sig_validate(&block.signature, true)
        .map_err(|_| BlockError::MalformedSignature)?;
    // Cannot fail: `expected` is `slot mod n`, an index into the key list.
    let key = genesis
        .proposer_key(expected)
        .expect("slot mod n indexes the key list");
    Ok((key, signature))
}

/// Verifies one block completely: [`check_block`], then its signature.
pub fn verify_block(genesis: &Genesis, block: &SignedBlock) -> Result<(), BlockError> {
    let (key, signature) = check_block(genesis, block)?;
    let message = signing_message(genesis.network_id(), &block.root());
    let mut pairing = Pairing::new(true, BLS_DST);
    let key: &blst_p1_affine = key.into();
    let point: &blst_p2_affine = (&signature).into();
    // Both points were validated already (genesis keys when the genesis was
    // built, the signature by `check_block`), so blst need not check them again.
    if pairing.aggregate(key, false, point, false, &message, &[]) != BLST_ERROR::BLST_SUCCESS {
        return Err(BlockError::BadSignature);
    }
    pairing.commit();
    if pairing.finalverify(None) {
        Ok(())
    } else {
        Err(BlockError::BadSignature)
    }
}

/// Verifies a batch of blocks: [`check_block`] on each (the first failure
/// is returned with its index), then all signatures in one randomised
/// multi-signature check. An empty batch passes. `rng` must be unpredictable
/// to whoever made the blocks (the node's seeded ChaCha20, or a per-job RNG
/// seeded from it).
///
/// This is also the benchmark's measure of raw batch-verify throughput.
pub fn verify_batch<R: RngCore + CryptoRng>(
    genesis: &Genesis,
    blocks: &[SignedBlock],
    rng: &mut R,
) -> Result<(), BatchError> {
    let mut checked = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let (key, signature) =
            check_block(genesis, block).map_err(|error| BatchError::Block { index, error })?;
        let message = signing_message(genesis.network_id(), &block.root());
        checked.push((key, signature, message));
    }
    if checked.is_empty() {
        return Ok(());
    }
    let mut pairing = Pairing::new(true, BLS_DST);
    for (key, signature, message) in &checked {
        let scalar = nonzero_scalar(rng).to_le_bytes();
        let key: &blst_p1_affine = (*key).into();
        let point: &blst_p2_affine = signature.into();
        let result = pairing.mul_n_aggregate(
            key,
            false,
            point,
            false,
            &scalar,
            BATCH_SCALAR_BITS,
            message,
            &[],
        );
        if result != BLST_ERROR::BLST_SUCCESS {
            return Err(BatchError::Signatures);
        }
    }
    pairing.commit();
    if pairing.finalverify(None) {
        Ok(())
    } else {
        Err(BatchError::Signatures)
    }
}

/// The positions of the blocks in `blocks` that fail [`verify_block`], in
/// order; empty if all are valid. Costs one full verification per block:
/// call it only after [`verify_batch`] failed.
pub fn find_invalid(genesis: &Genesis, blocks: &[SignedBlock]) -> Vec<usize> {
    blocks
        .iter()
        .enumerate()
        .filter(|(_, block)| verify_block(genesis, block).is_err())
        .map(|(index, _)| index)
        .collect()
}

/// What a sync batch's verification job runs: [`verify_batch`], and only if
/// it fails, [`find_invalid`]. `Ok` if every block is valid, else the
/// positions of the invalid ones (never empty), so the worker answers in one
/// round trip and the node can penalise exactly the senders of bad blocks.
pub fn verify_batch_locating<R: RngCore + CryptoRng>(
    genesis: &Genesis,
    blocks: &[SignedBlock],
    rng: &mut R,
) -> Result<(), Vec<usize>> {
    if verify_batch(genesis, blocks, rng).is_ok() {
        return Ok(());
    }
    // One by one is authoritative: if every block verifies on its own (the
    // batch check fails for a valid batch with negligible probability), the
    // batch is valid.
    let invalid = find_invalid(genesis, blocks);
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(invalid)
    }
}

/// A random scalar for the batch check: 64 bits, never zero (a zero weight
/// would drop that signature from the check).
fn nonzero_scalar<R: RngCore>(rng: &mut R) -> u64 {
    loop {
        let scalar = rng.next_u64();
        if scalar != 0 {
            return scalar;
        }
    }
}

/// Signs a block: `header` must carry `body`'s root.
///
/// # Panics
/// If the body is longer than [`BLOCK_BODY_BYTES_MAX`], or (debug builds)
/// if the header's body root is not `sha256(body)`: both are bugs of the caller.
pub fn sign_block(
    secret_key: &SecretKey,
    network_id: u64,
    header: BlockHeader,
    body: Vec<u8>,
) -> SignedBlock {
    assert!(
        body.len() <= BLOCK_BODY_BYTES_MAX,
        "block body of {} bytes exceeds {BLOCK_BODY_BYTES_MAX}",
        body.len()
    );
    debug_assert_eq!(header.body_root, body_root(&body), "header body root");
    let message = signing_message(network_id, &header.root());
    let signature = secret_key.sign(&message, BLS_DST, &[]).compress();
    SignedBlock {
        header,
        body,
        signature,
    }
}

/// A proposer's signing key with its place in the genesis: makes the blocks
/// of its slots.
pub struct BlockProducer {
    secret_key: SecretKey,
    network_id: u64,
    proposer_index: u64,
    proposer_count: u64,
}

impl fmt::Debug for BlockProducer {
    /// Leaves out the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockProducer")
            .field("network_id", &self.network_id)
            .field("proposer_index", &self.proposer_index)
            .finish_non_exhaustive()
    }
}

impl BlockProducer {
    /// The producer for `secret_key`, if its public key is one of the
    /// genesis proposers.
    pub fn new(secret_key: SecretKey, genesis: &Genesis) -> Option<BlockProducer> {
        let public_key = secret_key.sk_to_pk();
        let index = genesis
            .proposer_keys()
            .iter()
            .position(|key| *key == public_key)?;
        Some(BlockProducer {
            secret_key,
            network_id: genesis.network_id(),
            proposer_index: index as u64,
            proposer_count: genesis.proposer_keys().len() as u64,
        })
    }

    /// Our public key, as signing watermarks name it.
    pub fn public_key(&self) -> crate::chain::ProposerPublicKey {
        crate::chain::ProposerPublicKey::of(&self.secret_key)
    }

    /// Our index in the genesis key list.
    pub fn proposer_index(&self) -> u64 {
        self.proposer_index
    }

    /// Whether we propose at `slot` (never at slot 0).
    pub fn is_proposer_at(&self, slot: u64) -> bool {
        slot != 0 && slot % self.proposer_count == self.proposer_index
    }

    /// The signed block for `slot` on top of `parent_root`.
    ///
    /// # Panics
    /// If we are not the proposer of `slot` ([`BlockProducer::is_proposer_at`])
    /// or the body is longer than [`BLOCK_BODY_BYTES_MAX`]: bugs of the caller.
    pub fn produce(&self, slot: u64, parent_root: Root, body: Vec<u8>) -> SignedBlock {
        assert!(
            self.is_proposer_at(slot),
            "proposer {} asked to produce slot {slot}",
            self.proposer_index
        );
        let header = BlockHeader {
            slot,
            proposer_index: self.proposer_index,
            parent_root,
            body_root: body_root(&body),
        };
        sign_block(&self.secret_key, self.network_id, header, body)
    }
}

/// A chain of `count` signed blocks, one per slot from `first_slot`, the
/// first on top of `parent_root`, each with a `body_bytes`-byte body derived
/// from its slot, signed by the right key of `secret_keys` (the genesis
/// proposers' secret keys, in genesis order). For tests, the simulator and
/// the batch-verify benchmark.
///
/// # Panics
/// If `secret_keys` does not match the genesis proposer count, `first_slot`
/// is 0 or `body_bytes` is above [`BLOCK_BODY_BYTES_MAX`].
pub fn signed_chain(
    genesis: &Genesis,
    secret_keys: &[SecretKey],
    parent_root: Root,
    first_slot: u64,
    count: usize,
    body_bytes: usize,
) -> Vec<SignedBlock> {
    assert_eq!(secret_keys.len(), genesis.proposer_keys().len());
    unsigned_chain(genesis, parent_root, first_slot, count, body_bytes)
        .into_iter()
        .map(|(header, body)| {
            // Cannot truncate: proposer_index_at is below the key count, a usize.
            let key = &secret_keys[header.proposer_index as usize];
            sign_block(key, genesis.network_id(), header, body)
        })
        .collect()
}

/// A block's header, linked to the block before it, and its body: a block
/// of [`unsigned_chain`] before its signature.
pub type UnsignedBlock = (BlockHeader, Vec<u8>);

/// [`signed_chain`]'s blocks before they are signed. A block's root is its
/// header's, so the links do not wait for the signatures: a caller may sign
/// the blocks in any order, or on several threads.
///
/// # Panics
/// If `first_slot` is 0.
pub fn unsigned_chain(
    genesis: &Genesis,
    parent_root: Root,
    first_slot: u64,
    count: usize,
    body_bytes: usize,
) -> Vec<UnsignedBlock> {
    linked_chain(
        genesis,
        parent_root,
        first_slot,
        count,
        body_bytes,
        |_, body| body_root(body),
    )
}

/// [`unsigned_chain`] of `body_roots.len()` blocks, each header taking its
/// body root from `body_roots` instead of hashing its body: for a caller
/// that kept them from an earlier build (hashing the bodies is most of
/// building a chain once it is not signed). A root that is not its body's
/// gives a block every verification refuses.
///
/// # Panics
/// If `first_slot` is 0.
pub fn unsigned_chain_with_body_roots(
    genesis: &Genesis,
    parent_root: Root,
    first_slot: u64,
    body_roots: &[Root],
    body_bytes: usize,
) -> Vec<UnsignedBlock> {
    linked_chain(
        genesis,
        parent_root,
        first_slot,
        body_roots.len(),
        body_bytes,
        |index, _| body_roots[index],
    )
}

/// `count` devnet blocks from `first_slot` on `parent_root`, each body's
/// root given by `body_root_of(index, body)`.
fn linked_chain(
    genesis: &Genesis,
    parent_root: Root,
    first_slot: u64,
    count: usize,
    body_bytes: usize,
    mut body_root_of: impl FnMut(usize, &[u8]) -> Root,
) -> Vec<UnsignedBlock> {
    assert!(first_slot > 0, "slot 0 is genesis");
    let mut parent_root = parent_root;
    let mut blocks = Vec::with_capacity(count);
    for (index, slot) in (first_slot..).take(count).enumerate() {
        let body = devnet_body(slot, body_bytes);
        let header = BlockHeader {
            slot,
            proposer_index: genesis.proposer_index_at(slot),
            parent_root,
            body_root: body_root_of(index, &body),
        };
        parent_root = header.root();
        blocks.push((header, body));
    }
    blocks
}

/// Bytes of [`devnet_body`]'s repeating pattern.
const DEVNET_BODY_PERIOD_BYTES: usize = 64;

/// The body of the devnet block at `slot`: `body_bytes` filler bytes, the
/// low byte of each step of `filler = filler.rotl(7) ^ 0xA5A5` from
/// `slot × 0x9E3779B97F4A7C15`.
///
/// A rotation by 7 of 64 bits is the identity after 64 steps, and the 64
/// constants that sequence XORs in are 0xA5A5 rotated to every bit
/// position, each bit set an even number of times: after 64 steps the
/// filler is back where it started. So the body is its first 64 bytes
/// repeated, copied rather than stepped byte by byte (a 10,000-block chain
/// of 1 KiB bodies is built in a few milliseconds instead of tens).
fn devnet_body(slot: u64, body_bytes: usize) -> Vec<u8> {
    let mut filler = slot.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut period = [0u8; DEVNET_BODY_PERIOD_BYTES];
    for byte in &mut period {
        filler = filler.rotate_left(7) ^ 0xA5A5;
        *byte = filler as u8;
    }
    let mut body = Vec::with_capacity(body_bytes);
    while body.len() < body_bytes {
        let take = (body_bytes - body.len()).min(DEVNET_BODY_PERIOD_BYTES);
        body.extend_from_slice(&period[..take]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::genesis::devnet_keys;

    #[test]
    fn a_chain_built_on_kept_body_roots_is_the_chain_built_by_hashing() {
        let (genesis, _) = setup(2);
        let hashed = unsigned_chain(&genesis, genesis.root(), 1, 9, 100);
        let roots: Vec<Root> = hashed.iter().map(|(header, _)| header.body_root).collect();
        let kept = unsigned_chain_with_body_roots(&genesis, genesis.root(), 1, &roots, 100);
        assert_eq!(kept, hashed);
        // A wrong kept root changes its block and every link after it.
        let mut wrong = roots.clone();
        wrong[4] = Root([1; 32]);
        let built = unsigned_chain_with_body_roots(&genesis, genesis.root(), 1, &wrong, 100);
        assert_eq!(built[..4], hashed[..4]);
        for (built, hashed) in built[4..].iter().zip(&hashed[4..]) {
            assert_ne!(built.0.root(), hashed.0.root());
            assert_eq!(built.1, hashed.1, "the bodies are the same");
        }
        assert_ne!(body_root(&built[4].1), built[4].0.body_root);
    }

    #[test]
    fn a_devnet_body_is_every_step_of_its_filler() {
        for slot in [1, 2, 7, 1_000, u64::MAX] {
            for body_bytes in [0, 1, 63, 64, 65, 1_024, 4_099] {
                let mut filler = slot.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let stepped: Vec<u8> = (0..body_bytes)
                    .map(|_| {
                        filler = filler.rotate_left(7) ^ 0xA5A5;
                        filler as u8
                    })
                    .collect();
                assert_eq!(
                    devnet_body(slot, body_bytes),
                    stepped,
                    "slot {slot}, {body_bytes} bytes"
                );
            }
        }
    }
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn setup(proposers: usize) -> (Genesis, Vec<SecretKey>) {
        let keys = devnet_keys(5, proposers);
        let public = keys.iter().map(SecretKey::sk_to_pk).collect();
        (Genesis::new(11, 0, 1_000, public, 64).unwrap(), keys)
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([3; 32])
    }

    #[test]
    fn signed_blocks_verify() {
        let (genesis, keys) = setup(3);
        let blocks = signed_chain(&genesis, &keys, genesis.root(), 1, 4, 100);
        for block in &blocks {
            assert_eq!(verify_block(&genesis, block), Ok(()));
            // The same answer as blst's own (threaded) verification.
            let key = genesis.proposer_key(block.header.proposer_index).unwrap();
            let signature = Signature::from_bytes(&block.signature).unwrap();
            let message = signing_message(genesis.network_id(), &block.root());
            assert_eq!(
                signature.verify(true, &message, BLS_DST, &[], key, true),
                BLST_ERROR::BLST_SUCCESS
            );
        }
        assert_eq!(blocks[1].parent_root(), blocks[0].root());
        assert_eq!(blocks[0].parent_root(), genesis.root());
    }

    /// docs/protocol.md §5.6 says what is signed, byte for byte: the
    /// 32-byte digest of the domain, the network id and the root, under
    /// the POP ciphersuite's DST with no augmentation. Built here from the
    /// spec's literals, not from the module's constants.
    #[test]
    fn the_bls_message_is_the_32_byte_digest_the_spec_names() {
        let (genesis, keys) = setup(1);
        let block = &signed_chain(&genesis, &keys, genesis.root(), 1, 1, 10)[0];
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"meshsync-block-v1");
        hasher.update(11u64.to_be_bytes());
        hasher.update(block.root().as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let expected = keys[0]
            .sign(&digest, b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_", &[])
            .compress();
        assert_eq!(block.signature, expected);
        // Signing the root itself, or the digest with an augmentation, is not it.
        let root = block.root();
        assert_ne!(
            keys[0].sign(root.as_bytes(), BLS_DST, &[]).compress(),
            expected
        );
        assert_ne!(keys[0].sign(&digest, BLS_DST, b"x").compress(), expected);
    }

    #[test]
    fn producer_signs_only_its_slots() {
        let (genesis, keys) = setup(3);
        let producer = BlockProducer::new(keys[1].clone(), &genesis).unwrap();
        assert_eq!(producer.proposer_index(), 1);
        assert!(producer.is_proposer_at(4));
        assert!(!producer.is_proposer_at(5));
        let block = producer.produce(4, genesis.root(), b"body".to_vec());
        assert_eq!(verify_block(&genesis, &block), Ok(()));
        assert!(!format!("{producer:?}").contains("secret"));
        let stranger = devnet_keys(99, 1).remove(0);
        assert!(BlockProducer::new(stranger, &genesis).is_none());
    }

    #[test]
    #[should_panic(expected = "asked to produce slot 5")]
    fn producing_another_proposers_slot_is_a_bug() {
        let (genesis, keys) = setup(3);
        let producer = BlockProducer::new(keys[1].clone(), &genesis).unwrap();
        producer.produce(5, genesis.root(), Vec::new());
    }

    #[test]
    fn wrong_proposer_is_refused() {
        let (genesis, keys) = setup(3);
        let block = signed_chain(&genesis, &keys, genesis.root(), 1, 1, 10).remove(0);
        // Claims the slot's proposer index but is signed by another key.
        let forged = sign_block(&keys[2], 11, block.header, block.body.clone());
        assert_eq!(
            verify_block(&genesis, &forged),
            Err(BlockError::BadSignature)
        );
        // Signed by key 2 and honest about it, but slot 1 is proposer 1's.
        let header = BlockHeader {
            proposer_index: 2,
            ..block.header
        };
        let claimed = sign_block(&keys[2], 11, header, block.body.clone());
        assert_eq!(
            verify_block(&genesis, &claimed),
            Err(BlockError::WrongProposer {
                slot: 1,
                expected: 1,
                actual: 2
            })
        );
        let mut genesis_slot = block.clone();
        genesis_slot.header.slot = 0;
        assert_eq!(
            verify_block(&genesis, &genesis_slot),
            Err(BlockError::GenesisSlot)
        );
    }

    #[test]
    fn wrong_network_is_refused() {
        let (genesis, keys) = setup(2);
        let block = signed_chain(&genesis, &keys, genesis.root(), 1, 1, 10).remove(0);
        let other_network = sign_block(&keys[1], 12, block.header, block.body.clone());
        assert_eq!(
            verify_block(&genesis, &other_network),
            Err(BlockError::BadSignature)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let (genesis, keys) = setup(2);
        let block = signed_chain(&genesis, &keys, genesis.root(), 1, 1, 10).remove(0);

        let mut body = block.clone();
        body.body[0] ^= 1;
        assert_eq!(
            verify_block(&genesis, &body),
            Err(BlockError::BodyRootMismatch)
        );

        // A consistent new body and root: the root, and so the message, changed.
        let mut rebodied = block.clone();
        rebodied.body = b"other".to_vec();
        rebodied.header.body_root = body_root(&rebodied.body);
        assert_eq!(
            verify_block(&genesis, &rebodied),
            Err(BlockError::BadSignature)
        );

        let mut parent = block.clone();
        parent.header.parent_root.0[0] ^= 1;
        assert_eq!(
            verify_block(&genesis, &parent),
            Err(BlockError::BadSignature)
        );

        let mut garbage = block.clone();
        garbage.signature = [0xff; 96];
        assert_eq!(
            verify_block(&genesis, &garbage),
            Err(BlockError::MalformedSignature)
        );
        let mut infinity = block.clone();
        infinity.signature = [0; 96];
        infinity.signature[0] = 0xc0;
        assert_eq!(
            verify_block(&genesis, &infinity),
            Err(BlockError::MalformedSignature)
        );
        let mut long = block;
        long.body = vec![0; BLOCK_BODY_BYTES_MAX + 1];
        assert!(matches!(
            verify_block(&genesis, &long),
            Err(BlockError::BodyTooLong { .. })
        ));
    }

    #[test]
    fn batches_verify_and_failures_are_located() {
        let (genesis, keys) = setup(3);
        let blocks = signed_chain(&genesis, &keys, genesis.root(), 1, 6, 32);
        assert_eq!(verify_batch(&genesis, &blocks, &mut rng()), Ok(()));
        assert_eq!(verify_batch(&genesis, &[], &mut rng()), Ok(()));
        assert!(find_invalid(&genesis, &blocks).is_empty());

        // Two blocks with valid-looking but wrong signatures (swapped).
        let mut bad = blocks.clone();
        let first = bad[1].signature;
        bad[1].signature = bad[4].signature;
        bad[4].signature = first;
        assert_eq!(
            verify_batch(&genesis, &bad, &mut rng()),
            Err(BatchError::Signatures)
        );
        assert_eq!(find_invalid(&genesis, &bad), vec![1, 4]);

        // A cheap failure is reported with its index, before any pairing.
        let mut tampered = blocks.clone();
        tampered[2].body.push(0);
        assert_eq!(
            verify_batch(&genesis, &tampered, &mut rng()),
            Err(BatchError::Block {
                index: 2,
                error: BlockError::BodyRootMismatch
            })
        );
        assert_eq!(find_invalid(&genesis, &tampered), vec![2]);
        assert_eq!(
            verify_batch_locating(&genesis, &tampered, &mut rng()),
            Err(vec![2])
        );
        assert_eq!(
            verify_batch_locating(&genesis, &bad, &mut rng()),
            Err(vec![1, 4])
        );
        assert_eq!(verify_batch_locating(&genesis, &blocks, &mut rng()), Ok(()));

        // A batch of one with another block's (valid) signature.
        let mut single = blocks[..1].to_vec();
        single[0].signature = blocks[1].signature;
        assert_eq!(
            verify_batch(&genesis, &single, &mut rng()),
            Err(BatchError::Signatures)
        );
    }
}
