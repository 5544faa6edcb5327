//! Entry points for the chain's fuzz targets, kept in the library so that
//! ordinary tests replay corpora through the same code on the stable toolchain.
//!
//! Each function takes arbitrary bytes and must never panic except on a
//! broken invariant (a bug).

use blst::min_pk::SecretKey;

use super::block::{
    body_root, BlockHeader, SignedBlock, SIGNATURE_BYTES, SIGNED_BLOCK_BYTES_MAX,
    SIGNED_BLOCK_OVERHEAD_BYTES,
};
use super::genesis::{devnet_keys, Genesis};
use super::store::{ChainStore, ImportError, ImportOutcome, StoreLimits};
use super::Root;

/// Most operations one [`store_script`] input runs.
const SCRIPT_OPERATIONS_MAX: usize = 512;
/// Roots a script remembers to build on or mark invalid.
const SCRIPT_ROOTS_MAX: usize = 64;

/// Block decoding: any input either fails to decode or decodes to a block
/// whose encoding is exactly the input.
pub fn decode_block(data: &[u8]) {
    if let Ok(block) = SignedBlock::decode(data) {
        assert!(data.len() <= SIGNED_BLOCK_BYTES_MAX);
        assert_eq!(block.encoded_len(), data.len());
        assert_eq!(block.encode(), data, "decode then encode changed the bytes");
    }
}

/// A [`ChainStore`] with small limits fed a script of structurally valid,
/// unsigned blocks (the store does not check signatures), invalid marks and
/// blocks with unknown parents; its invariants are checked after every step.
///
/// Layout: byte 0 sets the finality depth (1..=6), byte 1 the block cap,
/// byte 2 the invalid-root cap, byte 3 the byte cap; then 3-byte operations
/// `[op, a, b]`: op % 4 is 0 or 1 — import a child of a remembered root
/// (one of the 4 newest if `a >= 64`, else root `a`) at `1 + b % 4` slots above it; 2 — mark remembered root `a`, or a fresh
/// root, invalid; 3 — import a block on an unknown parent.
pub fn store_script(data: &[u8]) {
    let Some((config, script)) = data.split_first_chunk::<4>() else {
        return;
    };
    let keys: Vec<_> = devnet_keys(0, 2).iter().map(SecretKey::sk_to_pk).collect();
    let depth = 1 + u64::from(config[0] % 6);
    // Cannot fail: two fresh devnet keys, depth 1..=6, the other fields fixed.
    let genesis = Genesis::new(1, 0, 1_000, keys, depth).expect("valid genesis");
    let limits = StoreLimits {
        blocks_max: 4 + usize::from(config[1] % 28),
        invalid_roots_max: 1 + usize::from(config[2] % 8),
        bytes_max: (SIGNED_BLOCK_OVERHEAD_BYTES + 8) * (4 + usize::from(config[3] % 32)),
    };
    let mut store = ChainStore::with_limits(&genesis, limits);
    let mut roots: Vec<(Root, u64)> = vec![(genesis.root(), 0)];

    for (step, operation) in script
        .chunks_exact(3)
        .take(SCRIPT_OPERATIONS_MAX)
        .enumerate()
    {
        let (op, a, b) = (operation[0], usize::from(operation[1]), operation[2]);
        match op % 4 {
            0 | 1 => {
                // Mostly on one of the newest roots (the chain grows and
                // finalizes), sometimes on any (forks, finality conflicts).
                let index = if a & 0xc0 != 0 {
                    roots.len() - 1 - (a & 3).min(roots.len() - 1)
                } else {
                    a % roots.len()
                };
                let (parent, parent_slot) = roots[index];
                let slot = parent_slot + 1 + u64::from(b % 4);
                let block = unsigned_block(&genesis, parent, slot, step);
                let root = block.root();
                let before = store.head();
                let len_before = store.len();
                match store.import(block) {
                    Ok(ImportOutcome::Imported(imported)) => {
                        assert_eq!(imported.root, root);
                        match imported.head {
                            Some(head) => assert_eq!(head, store.head()),
                            None => assert_eq!(before, store.head()),
                        }
                        remember(&mut roots, (root, slot));
                    }
                    Ok(ImportOutcome::AlreadyKnown { .. }) => {
                        unreachable!("every block of a script differs (its body is its step)")
                    }
                    Err(ImportError::UnknownParent(missing)) => {
                        assert_eq!(missing, parent);
                        assert!(!store.contains(&parent));
                    }
                    Err(ImportError::InvalidParent(invalid)) => {
                        assert_eq!(invalid, parent);
                        assert!(store.is_known_invalid(&root), "its child is remembered");
                    }
                    Err(error @ ImportError::KnownInvalid(_)) => {
                        unreachable!("a fresh root cannot have been marked: {error:?}")
                    }
                    Err(ImportError::ConflictsWithFinalized { .. }) => {}
                    Err(ImportError::Full) => {
                        assert_eq!(store.len(), len_before, "a failed import changed nothing");
                    }
                    Err(
                        error @ (ImportError::SlotNotAfterParent { .. }
                        | ImportError::FutureSlot { .. }),
                    ) => {
                        unreachable!("scripted blocks are above their parent, and the store has no clock: {error:?}")
                    }
                }
            }
            2 => {
                let root = if b % 2 == 0 {
                    roots[a % roots.len()].0
                } else {
                    Root([operation[1]; 32])
                };
                let stored = store.contains(&root);
                store.mark_invalid(root);
                assert_eq!(store.is_known_invalid(&root), !stored);
            }
            _ => {
                let parent = Root([operation[1] ^ 0x5a; 32]);
                let slot = 1 + u64::from(b);
                let block = unsigned_block(&genesis, parent, slot, step);
                if let Ok(outcome) = store.import(block) {
                    panic!("a block on an unknown parent was imported: {outcome:?}");
                }
            }
        }
        store.assert_invariants();
        let range = store.canonical_range(0, u64::MAX);
        for pair in range.windows(2) {
            assert!(pair[0].slot() < pair[1].slot());
            assert_eq!(pair[1].parent_root(), pair[0].root());
        }
        if let Some(last) = range.last() {
            assert_eq!(last.root(), store.head().root);
        }
    }
}

fn remember(roots: &mut Vec<(Root, u64)>, entry: (Root, u64)) {
    if roots.len() >= SCRIPT_ROOTS_MAX {
        // Keep the genesis at index 0; forget the oldest block.
        roots.remove(1);
    }
    roots.push(entry);
}

/// A block with the right proposer and body root and a zero signature.
fn unsigned_block(genesis: &Genesis, parent_root: Root, slot: u64, step: usize) -> SignedBlock {
    let body = (step as u64).to_be_bytes().to_vec();
    SignedBlock {
        header: BlockHeader {
            slot,
            proposer_index: genesis.proposer_index_at(slot),
            parent_root,
            body_root: body_root(&body),
        },
        body,
        signature: [0; SIGNATURE_BYTES],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn decode_block_accepts_garbage_and_real_blocks() {
        decode_block(&[]);
        decode_block(&[0xff; 300]);
        let body = b"abc".to_vec();
        let block = SignedBlock {
            header: BlockHeader {
                slot: 1,
                proposer_index: 1,
                parent_root: Root([1; 32]),
                body_root: body_root(&body),
            },
            body,
            signature: [2; SIGNATURE_BYTES],
        };
        decode_block(&block.encode());
    }

    #[test]
    fn store_scripts_keep_the_invariants() {
        // Hand-written: a chain, a fork, invalid marks, unknown parents.
        store_script(&[
            2, 10, 3, 5, 0, 0, 0, 0, 1, 0, 0, 2, 1, 1, 1, 3, 2, 0, 0, 3, 9, 9, 0, 4, 0,
        ]);
        // Random scripts (a fixed seed: the same inputs every run).
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        for _ in 0..20 {
            let mut data = vec![0u8; 4 + 3 * 200];
            rng.fill_bytes(&mut data);
            store_script(&data);
        }
    }
}
