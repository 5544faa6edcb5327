//! `meshsync watermark export` and `import`: a data directory's signing
//! watermarks as a small JSON file, so a proposer key can move to another
//! machine without ever signing a slot twice.
//!
//! # Design
//! The file names the network (id and genesis root) and, per proposer key
//! (its compressed BLS public key in hex), the highest slot it signed:
//!
//! ```json
//! {
//!   "format": "meshsync-signing-watermarks/1",
//!   "network_id": 1,
//!   "genesis_root": "5f0c…(64 hex digits)",
//!   "watermarks": [{ "proposer_key": "a1b2…(96 hex digits)", "slot": 4211 }]
//! }
//! ```
//!
//! Export reads a stopped node's store (a running node holds its lock, and
//! could sign again after the export). Import raises each key's watermark
//! in the target store to the file's (a lower one changes nothing), in one
//! durable transaction, creating the store for the file's network if the
//! directory has none, and refusing a store of another network.
//!
//! # Limits
//! A file is read up to [`WATERMARK_FILE_BYTES_MAX`] and holds at most
//! [`WATERMARKS_PER_FILE_MAX`] keys.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use meshsync_core::chain::{ProposerPublicKey, SigningWatermark};
use meshsync_mio::store::{BlockStore, StoreNetwork, StoreOptions};
use serde::{Deserialize, Serialize};

/// The `format` of a watermark file this binary writes and reads.
pub const WATERMARK_FILE_FORMAT: &str = "meshsync-signing-watermarks/1";
/// Longest watermark file read: far above any real one (about 130 bytes a key).
pub const WATERMARK_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Keys one file may hold: a genesis has a handful of proposers.
pub const WATERMARKS_PER_FILE_MAX: usize = 4_096;

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WatermarkFile {
    format: String,
    network_id: u64,
    genesis_root: String,
    watermarks: Vec<WatermarkEntry>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WatermarkEntry {
    proposer_key: String,
    slot: u64,
}

/// Writes the watermarks of the store in `data_dir` to a new file `out`
/// (replaced only if `force`); returns how many keys it holds.
pub fn export(data_dir: &Path, out: &Path, force: bool) -> Result<usize, String> {
    let store = BlockStore::open_with(
        data_dir,
        &StoreOptions {
            must_exist: true,
            ..StoreOptions::default()
        },
    )
    .map_err(|error| error.to_string())?;
    let network = store
        .network()
        .map_err(|error| error.to_string())?
        .ok_or_else(|| {
            format!(
                "block store {} records no network: start a node on it once first",
                store.path().display()
            )
        })?;
    let watermarks = store.watermarks().map_err(|error| error.to_string())?;
    let file = WatermarkFile {
        format: WATERMARK_FILE_FORMAT.to_owned(),
        network_id: network.network_id,
        genesis_root: format!("{:x}", network.genesis_root),
        watermarks: watermarks
            .iter()
            .map(|watermark| WatermarkEntry {
                proposer_key: watermark.proposer.to_hex(),
                slot: watermark.slot,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).expect("plain data serialises");
    text.push('\n');
    crate::genesis_files::write_new_synced(out, text.as_bytes(), force).map_err(
        |error| match error.kind() {
            io::ErrorKind::AlreadyExists => {
                format!("{} exists: give --force to replace it", out.display())
            }
            _ => format!("cannot write {}: {error}", out.display()),
        },
    )?;
    Ok(watermarks.len())
}

/// Raises the watermarks of the store in `data_dir` to those of `file`;
/// returns them.
pub fn import(data_dir: &Path, file: &Path) -> Result<Vec<SigningWatermark>, String> {
    let (network, watermarks) = read_file(file)?;
    let mut store = BlockStore::open_with(
        data_dir,
        &StoreOptions {
            network: Some(network),
            ..StoreOptions::default()
        },
    )
    .map_err(|error| error.to_string())?;
    store
        .raise_watermarks(&watermarks)
        .map_err(|error| error.to_string())?;
    Ok(watermarks)
}

/// The network and the watermarks a file names, checked.
fn read_file(path: &Path) -> Result<(StoreNetwork, Vec<SigningWatermark>), String> {
    let bad = |detail: String| format!("watermark file {}: {detail}", path.display());
    let opened = File::open(path).map_err(|error| bad(error.to_string()))?;
    let mut text = String::new();
    opened
        .take(WATERMARK_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|error| bad(error.to_string()))?;
    if text.len() as u64 > WATERMARK_FILE_BYTES_MAX {
        return Err(bad(format!("longer than {WATERMARK_FILE_BYTES_MAX} bytes")));
    }
    let file: WatermarkFile =
        serde_json::from_str(&text).map_err(|error| bad(error.to_string()))?;
    if file.format != WATERMARK_FILE_FORMAT {
        return Err(bad(format!(
            "format {:?}, not {WATERMARK_FILE_FORMAT:?}",
            file.format
        )));
    }
    if file.watermarks.len() > WATERMARKS_PER_FILE_MAX {
        return Err(bad(format!(
            "{} keys, more than {WATERMARKS_PER_FILE_MAX}",
            file.watermarks.len()
        )));
    }
    let genesis_root = parse_root(&file.genesis_root).ok_or_else(|| {
        bad(format!(
            "genesis_root {:?} is not 64 hex digits",
            file.genesis_root
        ))
    })?;
    let mut watermarks = Vec::with_capacity(file.watermarks.len());
    for entry in &file.watermarks {
        let proposer = ProposerPublicKey::from_hex(&entry.proposer_key).ok_or_else(|| {
            bad(format!(
                "proposer_key {:?} is not 96 hex digits",
                entry.proposer_key
            ))
        })?;
        watermarks.push(SigningWatermark {
            proposer,
            slot: entry.slot,
        });
    }
    let network = StoreNetwork {
        network_id: file.network_id,
        genesis_root: genesis_root.into(),
    };
    Ok((network, watermarks))
}

fn parse_root(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut root = [0u8; 32];
    for (byte, pair) in root.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_mio::testing::TempDir;

    fn key(seed: u8) -> ProposerPublicKey {
        ProposerPublicKey::of(&meshsync_core::chain::devnet_keys(u64::from(seed), 1)[0])
    }

    fn network(id: u64) -> StoreNetwork {
        StoreNetwork {
            network_id: id,
            genesis_root: [id as u8; 32].into(),
        }
    }

    fn store_with(dir: &Path, network_id: u64, watermarks: &[SigningWatermark]) {
        let mut store = BlockStore::open_with(
            dir,
            &StoreOptions {
                network: Some(network(network_id)),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        store.raise_watermarks(watermarks).unwrap();
    }

    /// Export on one machine, import on a fresh one: the keys' watermarks
    /// arrive; a lower one never lowers a higher one; another network's
    /// store refuses the file.
    #[test]
    fn watermarks_move_between_data_directories() {
        let temp = TempDir::new("watermark-files");
        let (from, to, other) = (
            temp.path().join("from"),
            temp.path().join("to"),
            temp.path().join("other"),
        );
        let marks = [
            SigningWatermark {
                proposer: key(1),
                slot: 40,
            },
            SigningWatermark {
                proposer: key(2),
                slot: 7,
            },
        ];
        store_with(&from, 3, &marks);
        let file = temp.path().join("marks.json");
        assert_eq!(export(&from, &file, false).unwrap(), 2);
        let error = export(&from, &file, false).unwrap_err();
        assert!(error.contains("--force"), "{error}");
        export(&from, &file, true).unwrap();

        // The target already knows key 2 at a higher slot.
        store_with(
            &to,
            3,
            &[SigningWatermark {
                proposer: key(2),
                slot: 9,
            }],
        );
        let imported = import(&to, &file).unwrap();
        assert_eq!(imported.len(), 2);
        let store = BlockStore::open(&to).unwrap();
        let mut got = store.watermarks().unwrap();
        got.sort_by_key(|watermark| watermark.slot);
        let slots: Vec<(ProposerPublicKey, u64)> =
            got.iter().map(|mark| (mark.proposer, mark.slot)).collect();
        assert_eq!(slots, vec![(key(2), 9), (key(1), 40)]);
        drop(store);

        // A fresh directory gets a store of the file's network.
        let fresh = temp.path().join("fresh");
        import(&fresh, &file).unwrap();
        let store = BlockStore::open(&fresh).unwrap();
        assert_eq!(store.network().unwrap(), Some(network(3)));
        assert_eq!(store.watermarks().unwrap().len(), 2);
        drop(store);

        store_with(&other, 4, &[]);
        let error = import(&other, &file).unwrap_err();
        assert!(error.contains("belongs to"), "{error}");
    }

    #[test]
    fn a_bad_file_is_refused_naming_what_is_wrong() {
        let temp = TempDir::new("watermark-bad");
        let dir = temp.path().join("data");
        let cases = [
            ("{", "EOF"),
            (
                r#"{"format":"other/1","network_id":1,"genesis_root":"00","watermarks":[]}"#,
                "format",
            ),
            (
                &format!(
                    r#"{{"format":"{WATERMARK_FILE_FORMAT}","network_id":1,"genesis_root":"zz","watermarks":[]}}"#
                ),
                "genesis_root",
            ),
            (
                &format!(
                    r#"{{"format":"{WATERMARK_FILE_FORMAT}","network_id":1,"genesis_root":"{}","watermarks":[{{"proposer_key":"12","slot":3}}]}}"#,
                    "00".repeat(32)
                ),
                "proposer_key",
            ),
        ];
        for (index, (text, expected)) in cases.iter().enumerate() {
            let file = temp.path().join(format!("bad-{index}.json"));
            std::fs::write(&file, text).unwrap();
            let error = import(&dir, &file).unwrap_err();
            assert!(error.contains(expected), "{index}: {error}");
        }
        let long = temp.path().join("long.json");
        std::fs::write(&long, vec![b' '; WATERMARK_FILE_BYTES_MAX as usize + 1]).unwrap();
        let error = import(&dir, &long).unwrap_err();
        assert!(error.contains("longer than"), "{error}");
    }
}
