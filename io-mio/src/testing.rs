//! Fixtures for running real drivers outside production: this crate's
//! tests, the workspace's integration tests and `meshsync devnet`.
//!
//! # Design
//! Two things every such run needs and that no production path does: a
//! throwaway directory ([`TempDir`]) and a chain anyone can sign for
//! ([`devnet_genesis`]: its proposer keys derive from the network id, so they
//! are public). Neither is used by the driver itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use meshsync_core::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT;
use meshsync_core::chain::{devnet_keys, Genesis};

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name starts with `meshsync-{label}-`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "meshsync-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir is writable");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The devnet's genesis: `proposers` keys from `devnet_keys(network_id, ..)`
/// (at least one, so a devnet without proposers still has a valid genesis),
/// slot 0 at `genesis_time_ms`.
pub fn devnet_genesis(
    network_id: u64,
    proposers: usize,
    slot_duration_ms: u64,
    genesis_time_ms: u64,
) -> io::Result<Genesis> {
    let keys = devnet_keys(network_id, proposers.max(1));
    Genesis::new(
        network_id,
        genesis_time_ms,
        slot_duration_ms,
        keys.iter().map(|key| key.sk_to_pk()).collect(),
        FINALITY_DEPTH_SLOTS_DEFAULT,
    )
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devnet_genesis_names_the_devnet_keys() {
        let genesis = devnet_genesis(5, 3, 250, 1_700_000_000_000).unwrap();
        assert_eq!(genesis.network_id(), 5);
        assert_eq!(genesis.slot_duration_ms(), 250);
        let keys: Vec<_> = devnet_keys(5, 3).iter().map(|key| key.sk_to_pk()).collect();
        assert_eq!(genesis.proposer_keys(), keys.as_slice());
        // No proposers still makes a valid genesis (one key nobody holds).
        assert_eq!(
            devnet_genesis(5, 0, 250, 0).unwrap().proposer_keys().len(),
            1
        );
        assert!(devnet_genesis(5, 1, 0, 0).is_err());
    }
}
