//! A signed devnet chain's signatures, kept in a directory between
//! processes.
//!
//! # Design
//! A [`super::ChainCache`] signs each chain once per process; a story that
//! needs a 10,000-block chain then spends nearly all of one run signing it
//! (about a quarter of a millisecond a block) and a twentieth of a second
//! running. The chain depends only on (network id, length, body bytes), so
//! its signatures are kept in a file named by those, and the next process
//! takes them from there.
//!
//! Only the signatures and each block's body root are kept: the bodies
//! and headers are rebuilt (no signing, and no hashing of bodies: a
//! header takes its kept body root) and the file names the head root they
//! were made for. The head root commits to every header and body root: a
//! file made for another chain (another devnet key, another length's
//! worth of roots) is refused, never used. A file whose bytes changed (a
//! torn write, a flipped bit) fails its sha256 and is refused. A change to
//! how a body is made or a header signed would leave the kept roots alone,
//! so the head block's body is hashed and its header signed afresh, and
//! both compared with what was kept. A refused file is signed over and
//! replaced; a directory that cannot be read or written costs the signing,
//! never the run.
//!
//! The directory is trusted as a build cache is: a file whose framing,
//! digest and head all check out is believed for every other signature and
//! body root, which are not checked (that would cost as much as signing
//! and hashing). Whoever can write it could make a world hold blocks its
//! nodes would refuse; `--chain-cache off` builds afresh when in doubt.
//!
//! # File layout
//! `devnet-{network id}-{blocks}-{body bytes}.sigs`, little-endian:
//! [`MAGIC`], network id, blocks and body bytes (`u64` each), the head
//! root (32 bytes), then for each block in slot order its 96-byte
//! signature and 32-byte body root, then the sha256 of every byte before
//! it. A file is written whole under a temporary name and renamed into
//! place, so a reader sees a whole file or none.
//!
//! # Limits
//! A file is read only when its length is exactly what the chain asked for
//! needs ([`RECORD_BYTES`] a block and [`FILE_OVERHEAD_BYTES`]). At most
//! [`SAVED_CHAINS_MAX`] files stay in the directory: saving one more
//! removes the least recently written.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use meshsync_core::chain::block::{body_root, SIGNATURE_BYTES};
use meshsync_core::chain::{
    unsigned_chain_with_body_roots, Genesis, Root, SignedBlock, UnsignedBlock,
};
use sha2::{Digest, Sha256};

use super::ChainKey;

/// The first bytes of every file: what it is, and the layout's version.
pub const MAGIC: &[u8; 32] = b"meshsync-sim devnet signatures 2";

/// Bytes of a file besides its blocks' records: the magic, three `u64`s,
/// the head root and the sha256.
pub const FILE_OVERHEAD_BYTES: usize = MAGIC.len() + 3 * 8 + 32 + 32;

/// Bytes a block takes in a file: its signature and its body root.
pub const RECORD_BYTES: usize = SIGNATURE_BYTES + 32;

/// Chain files one directory keeps, at most (each 128 bytes a block: a
/// 10,000-block chain's is 1.3 MB).
pub const SAVED_CHAINS_MAX: usize = 16;

/// The file name's ending.
const EXTENSION: &str = "sigs";

/// Where chains' signatures are kept; see the module docs.
#[derive(Clone, Debug)]
pub struct SavedChains {
    dir: PathBuf,
}

/// What [`SavedChains::load`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// The chain, rebuilt on its kept body roots and signatures.
    Blocks(Arc<[SignedBlock]>),
    /// No file for this chain.
    Missing,
    /// A file that is not this chain's signatures, and why.
    Refused(String),
}

impl SavedChains {
    /// Chains kept in `dir` (created when the first is saved).
    pub fn in_dir(dir: impl Into<PathBuf>) -> SavedChains {
        SavedChains { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: ChainKey) -> PathBuf {
        let (network_id, blocks, body_bytes) = key;
        self.dir.join(format!(
            "devnet-{network_id}-{blocks}-{body_bytes}.{EXTENSION}"
        ))
    }

    /// The chain `key` names on `genesis` (one block a slot from slot 1),
    /// rebuilt on the body roots and signatures a file kept for exactly
    /// this chain; `sign` signs as its proposer, to check the head's.
    pub fn load(
        &self,
        key: ChainKey,
        genesis: &Genesis,
        sign: &dyn Fn(UnsignedBlock) -> SignedBlock,
    ) -> Loaded {
        let (_, blocks, body_bytes) = key;
        let path = self.path(key);
        let refuse = |why: &str| Loaded::Refused(format!("{}: {why}", path.display()));
        let Some((blocks, expected_len)) = usize::try_from(blocks)
            .ok()
            .and_then(|blocks| Some((blocks, file_len_checked(blocks)?)))
        else {
            return refuse("more blocks than a file can hold");
        };
        match fs::metadata(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(error) => return Loaded::Refused(format!("{}: {error}", path.display())),
            Ok(metadata) if metadata.len() != expected_len as u64 => {
                return Loaded::Refused(format!(
                    "{}: {} bytes, not the {expected_len} of {blocks} blocks",
                    path.display(),
                    metadata.len(),
                ));
            }
            Ok(_) => {}
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => return Loaded::Refused(format!("{}: {error}", path.display())),
        };
        if bytes.len() != expected_len {
            return refuse("changed while read");
        }
        let (content, digest) = bytes.split_at(expected_len - 32);
        if Sha256::digest(content).as_slice() != digest {
            return refuse("its sha256 does not match its bytes");
        }
        let (file_header, records) = content.split_at(FILE_OVERHEAD_BYTES - 32);
        let (parameters, kept_head_root) = file_header.split_at(FILE_OVERHEAD_BYTES - 64);
        if parameters != &encode_header(key, [0; 32])[..parameters.len()] {
            return refuse("made for other parameters");
        }
        let (signatures, body_roots): (Vec<[u8; SIGNATURE_BYTES]>, Vec<Root>) = records
            .chunks_exact(RECORD_BYTES)
            .map(|record| {
                let (signature, root) = record.split_at(SIGNATURE_BYTES);
                // Cannot fail: records of exactly RECORD_BYTES.
                let signature: [u8; SIGNATURE_BYTES] = signature.try_into().expect("a signature");
                (signature, Root(root.try_into().expect("a root")))
            })
            .unzip();
        let unsigned =
            unsigned_chain_with_body_roots(genesis, genesis.root(), 1, &body_roots, body_bytes);
        if head_root(&unsigned) != kept_head_root {
            return refuse("made for another chain (its head root differs)");
        }
        if let (Some((header, body)), Some(kept)) = (unsigned.last(), signatures.last()) {
            if body_root(body) != header.body_root {
                return refuse("its body roots are not what building the bodies gives now");
            }
            if sign((*header, body.clone())).signature != *kept {
                return refuse("its signatures are not what signing gives now");
            }
        }
        Loaded::Blocks(signed_with(unsigned, signatures))
    }

    /// Keeps `blocks`' signatures for the chain `key` names (see the module
    /// docs), then removes the oldest files past [`SAVED_CHAINS_MAX`].
    pub fn save(&self, key: ChainKey, blocks: &[SignedBlock]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let head_root = blocks.last().map_or([0; 32], |block| block.root().0);
        let mut bytes = encode_header(key, head_root);
        bytes.reserve(file_len(blocks.len()) - bytes.len());
        for block in blocks {
            bytes.extend_from_slice(&block.signature);
            bytes.extend_from_slice(block.header.body_root.as_bytes());
        }
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        let path = self.path(key);
        // Unique in this process too: two caches on one directory may save
        // the same chain at once.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temporary = path.with_extension(format!(
            "{EXTENSION}.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(error) = written.and_then(|()| fs::rename(&temporary, &path)) {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
        self.forget_oldest();
        Ok(())
    }

    /// Removes the least recently written chain files past [`SAVED_CHAINS_MAX`].
    fn forget_oldest(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_chain_file(path))
            .filter_map(|path| {
                let written = fs::metadata(&path).and_then(|meta| meta.modified()).ok()?;
                Some((written, path))
            })
            .collect();
        if files.len() <= SAVED_CHAINS_MAX {
            return;
        }
        files.sort();
        let excess = files.len() - SAVED_CHAINS_MAX;
        for (_, path) in files.into_iter().take(excess) {
            let _ = fs::remove_file(path);
        }
    }
}

/// `unsigned` with `signatures`, one each, in order (collected straight
/// into the shared slice a chain's config holds).
///
/// # Panics
/// If the counts differ.
pub fn signed_with(
    unsigned: Vec<UnsignedBlock>,
    signatures: Vec<[u8; SIGNATURE_BYTES]>,
) -> Arc<[SignedBlock]> {
    assert_eq!(unsigned.len(), signatures.len(), "a signature a block");
    unsigned
        .into_iter()
        .zip(signatures)
        .map(|((header, body), signature)| SignedBlock {
            header,
            body,
            signature,
        })
        .collect()
}

/// Whether `path` names a chain file (`devnet-….sigs`): the only files
/// [`SavedChains`] ever removes from its directory.
fn is_chain_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == EXTENSION)
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("devnet-"))
}

/// The head block's root, or zeros for an empty chain.
fn head_root(unsigned: &[UnsignedBlock]) -> [u8; 32] {
    unsigned
        .last()
        .map_or([0; 32], |(header, _)| header.root().0)
}

/// Bytes of the file for `blocks` blocks, if that many fit in a `usize`.
fn file_len_checked(blocks: usize) -> Option<usize> {
    blocks
        .checked_mul(RECORD_BYTES)?
        .checked_add(FILE_OVERHEAD_BYTES)
}

/// Bytes of the file for `blocks` blocks held in memory (whose records
/// fit, as the blocks themselves are larger).
fn file_len(blocks: usize) -> usize {
    file_len_checked(blocks).expect("blocks in memory fit in a file's length")
}

/// The file's bytes before its records.
fn encode_header((network_id, blocks, body_bytes): ChainKey, head_root: [u8; 32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FILE_OVERHEAD_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&network_id.to_le_bytes());
    bytes.extend_from_slice(&blocks.to_le_bytes());
    bytes.extend_from_slice(&(body_bytes as u64).to_le_bytes());
    bytes.extend_from_slice(&head_root);
    bytes
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicU32;

    use meshsync_core::chain::ChainConfig;

    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    pub(in crate::chains) struct TempDir(pub(in crate::chains) PathBuf);

    impl TempDir {
        pub(in crate::chains) fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "meshsync-sim-saved-chains-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Loads `key`'s chain from `saved`, as the chain cache does.
    fn load(saved: &SavedChains, key: ChainKey) -> Loaded {
        let mut loaded = None;
        ChainConfig::devnet_with_blocks(key.0, |genesis, sign| {
            loaded = Some(saved.load(key, genesis, sign));
            Vec::<SignedBlock>::new()
        });
        loaded.expect("the builder ran")
    }

    /// A fresh directory holding the signatures of `chain`'s blocks under
    /// `key` (the chain of `key` itself, or another to test refusals).
    fn saved_under(key: ChainKey, chain: &ChainConfig) -> (TempDir, SavedChains) {
        let dir = TempDir::new();
        let saved = SavedChains::in_dir(&dir.0);
        saved.save(key, &chain.stored).expect("saved");
        (dir, saved)
    }

    /// Sets the time `path` was last written.
    fn set_written(path: &Path, at: std::time::SystemTime) {
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(at))
            .expect("a time set");
    }

    #[test]
    fn a_saved_chain_loads_as_the_chain_signed_afresh() {
        let dir = TempDir::new();
        let saved = SavedChains::in_dir(&dir.0);
        let key = (3, 12, 40);
        assert_eq!(load(&saved, key), Loaded::Missing);
        let chain = ChainConfig::devnet_with_chain(3, 12, 40);
        saved.save(key, &chain.stored).expect("saved");
        assert_eq!(load(&saved, key), Loaded::Blocks(Arc::clone(&chain.stored)));
        let path = saved.path(key);
        assert_eq!(
            fs::metadata(&path).expect("a file").len(),
            file_len(12) as u64
        );
        // Nothing but the file is left behind.
        assert_eq!(fs::read_dir(&dir.0).expect("the dir").count(), 1);
    }

    #[test]
    fn a_file_with_any_byte_changed_is_refused() {
        let key = (3, 4, 8);
        let (_dir, saved) = saved_under(key, &ChainConfig::devnet_with_chain(3, 4, 8));
        let path = saved.path(key);
        let whole = fs::read(&path).expect("the file");
        for index in [0, MAGIC.len(), FILE_OVERHEAD_BYTES - 32, whole.len() - 1] {
            let mut changed = whole.clone();
            changed[index] ^= 1;
            fs::write(&path, &changed).expect("written");
            assert!(
                matches!(load(&saved, key), Loaded::Refused(why) if why.contains("sha256")),
                "byte {index}"
            );
        }
        fs::write(&path, &whole[..whole.len() - 1]).expect("written");
        assert!(matches!(load(&saved, key), Loaded::Refused(why) if why.contains("bytes, not")));
        // A length no file could have is refused before anything is read.
        let huge = (3, u64::MAX, 8);
        assert!(matches!(load(&saved, huge), Loaded::Refused(why) if why.contains("can hold")));
    }

    #[test]
    fn a_file_made_for_another_chain_or_signer_is_refused() {
        // Another network's chain of the same length, saved under this key:
        // whole, but for other blocks.
        let key = (5, 6, 16);
        let (_dir, saved) = saved_under(key, &ChainConfig::devnet_with_chain(6, 6, 16));
        assert!(matches!(
            load(&saved, key),
            Loaded::Refused(why) if why.contains("another chain")
        ));
        // The right blocks with the head's signature swapped for another
        // block's, as if signing had changed: whole, and refused.
        let mut blocks = ChainConfig::devnet_with_chain(5, 6, 16).stored.to_vec();
        blocks[5].signature = blocks[0].signature;
        saved.save(key, &blocks).expect("saved");
        assert!(matches!(
            load(&saved, key),
            Loaded::Refused(why) if why.contains("not what signing gives")
        ));
        // The head's body root made for another body, as if bodies were
        // made another way: its head root follows, so only hashing the
        // head's body again tells.
        let mut blocks = ChainConfig::devnet_with_chain(5, 6, 16).stored.to_vec();
        blocks[5].header.body_root = body_root(b"another body");
        saved.save(key, &blocks).expect("saved");
        assert!(matches!(
            load(&saved, key),
            Loaded::Refused(why) if why.contains("not what building the bodies gives")
        ));
        // Saved under other parameters' name.
        let other = (5, 6, 17);
        fs::rename(saved.path(key), saved.path(other)).expect("renamed");
        let mut stale = fs::read(saved.path(other)).expect("the file");
        stale.truncate(stale.len() - 6 * RECORD_BYTES - 32);
        let bytes = file_len(6);
        stale.resize(bytes - 32, 0);
        let digest = Sha256::digest(&stale);
        stale.extend_from_slice(&digest);
        fs::write(saved.path(other), &stale).expect("written");
        assert!(matches!(
            load(&saved, other),
            Loaded::Refused(why) if why.contains("other parameters")
        ));
    }

    #[test]
    fn the_directory_keeps_the_most_recent_chains() {
        let dir = TempDir::new();
        let saved = SavedChains::in_dir(&dir.0);
        let chain = ChainConfig::devnet_with_chain(1, 1, 0);
        for network_id in 0..=SAVED_CHAINS_MAX as u64 {
            saved
                .save((network_id, 1, 0), &chain.stored)
                .expect("saved");
            // Written in order, a second apart (the last one now).
            if network_id < SAVED_CHAINS_MAX as u64 {
                set_written(
                    &saved.path((network_id, 1, 0)),
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(network_id),
                );
            }
        }
        let kept = fs::read_dir(&dir.0)
            .expect("the dir")
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == EXTENSION))
            .count();
        assert_eq!(kept, SAVED_CHAINS_MAX);
        assert!(!saved.path((0, 1, 0)).exists(), "the oldest went first");
        // Files that are not chain files are never removed.
        let foreign = dir.0.join("mine.sigs");
        fs::write(&foreign, b"not a chain").expect("written");
        set_written(&foreign, std::time::UNIX_EPOCH);
        saved
            .save((SAVED_CHAINS_MAX as u64 + 1, 1, 0), &chain.stored)
            .expect("saved");
        assert!(foreign.exists());
        assert!(saved.path((SAVED_CHAINS_MAX as u64, 1, 0)).exists());
    }
}
