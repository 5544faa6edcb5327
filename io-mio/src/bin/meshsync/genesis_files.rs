//! `meshsync genesis`: a new network's genesis file and its proposers' secret
//! keys; and the loaders a node uses to read them back.
//!
//! # Design
//! The formats belong to the core ([`Genesis::to_toml`],
//! [`secret_key_to_text`]); this module generates fresh keys from OS entropy
//! and does the file IO. `DIR/genesis.toml` is public (every node needs the
//! same file); each `DIR/proposer-<i>.key` is created with mode 0600 like an
//! identity key file ([`secret_files::write_secret_file`]). Nothing is overwritten
//! without `force`, and every target is checked before the first file is
//! written, so a refused run leaves the directory as it was.
//!
//! # Security
//! *Provided*: proposer keys come from 32 bytes of OS entropy each (blst
//! `key_gen`, EIP-2333); key files are never readable by group or others when
//! created; reading a looser key file logs a warning. Reads are bounded
//! ([`GENESIS_TEXT_BYTES_MAX`], [`PROPOSER_KEY_FILE_BYTES_MAX`]).
//!
//! *Not provided*: encryption at rest, or proof of possession of each key
//! (see the core's genesis module: the genesis author is trusted).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use blst::min_pk::SecretKey;
use meshsync_core::chain::genesis::{
    secret_key_from_text, secret_key_to_text, BlsKeyFileError, GENESIS_TEXT_BYTES_MAX,
    PROPOSERS_MAX,
};
use meshsync_core::chain::{ChainConfig, Genesis, GenesisError, ProposerKey};
use meshsync_mio::keyfile::{self, KeyFileIoError, PROPOSER_KEY_FILE_BYTES_MAX};
use rand_core::{OsRng, RngCore};

use crate::secret_files;

/// The genesis file's name inside the output directory.
pub const GENESIS_FILE_NAME: &str = "genesis.toml";
/// Slot duration when `--slot-ms` is not given.
pub const SLOT_DURATION_MS_DEFAULT: u64 = 2_000;
/// Network id when `--network-id` is not given: the `node` and `devnet` default.
pub const NETWORK_ID_DEFAULT: u64 = 1;

/// The name of proposer `index`'s key file inside the output directory.
pub fn proposer_key_file_name(index: usize) -> String {
    format!("proposer-{index}.key")
}

/// What `meshsync genesis` should create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisOptions {
    /// Number of proposers, 1..=[`PROPOSERS_MAX`].
    pub proposers: usize,
    /// The network id.
    pub network_id: u64,
    /// Slot duration in milliseconds.
    pub slot_duration_ms: u64,
    /// Finality depth in slots.
    pub finality_depth_slots: u64,
    /// Start of slot 0 in milliseconds since the Unix epoch; `None`: the next whole second.
    pub genesis_time_ms: Option<u64>,
}

/// What [`write_genesis`] created.
#[derive(Debug)]
pub struct WrittenGenesis {
    /// The genesis, as written.
    pub genesis: Genesis,
    /// `DIR/genesis.toml`.
    pub genesis_path: PathBuf,
    /// `DIR/proposer-<i>.key`, in proposer order.
    pub key_paths: Vec<PathBuf>,
}

/// Why a genesis or proposer key file could not be written or read. Every
/// variant but [`GenesisFileError::Invalid`] names the file.
#[derive(Debug)]
pub enum GenesisFileError {
    /// The parameters do not make a valid genesis.
    Invalid(GenesisError),
    /// There is no file at the path.
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A file exists where a new one should go, and `--force` was not given.
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The genesis file's text is not a valid genesis.
    MalformedGenesis {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        error: GenesisError,
    },
    /// The proposer key file's text is not a proposer key.
    MalformedKey {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        error: BlsKeyFileError,
    },
    /// The file is longer than any valid one.
    TooLong {
        /// The path.
        path: PathBuf,
        /// The most bytes allowed.
        bytes_max: usize,
    },
    /// Any other IO error.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// A proposer key file holds a key that is not one of the genesis proposers.
    NotAProposer {
        /// The key file.
        path: PathBuf,
    },
    /// The genesis file names another network than the one asked for.
    NetworkMismatch {
        /// The genesis file.
        path: PathBuf,
        /// The genesis's network id.
        genesis: u64,
        /// The one asked for.
        asked: u64,
    },
}

impl GenesisFileError {
    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            GenesisFileError::Invalid(_) => None,
            GenesisFileError::Missing { path }
            | GenesisFileError::AlreadyExists { path }
            | GenesisFileError::MalformedGenesis { path, .. }
            | GenesisFileError::MalformedKey { path, .. }
            | GenesisFileError::TooLong { path, .. }
            | GenesisFileError::Io { path, .. }
            | GenesisFileError::NotAProposer { path }
            | GenesisFileError::NetworkMismatch { path, .. } => Some(path),
        }
    }
}

impl fmt::Display for GenesisFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenesisFileError::Invalid(error) => write!(f, "{error}"),
            GenesisFileError::Missing { path } => {
                write!(f, "{} does not exist", path.display())
            }
            GenesisFileError::AlreadyExists { path } => write!(
                f,
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                path.display()
            ),
            GenesisFileError::MalformedGenesis { path, error } => {
                write!(f, "genesis file {}: {error}", path.display())
            }
            GenesisFileError::MalformedKey { path, error } => {
                write!(f, "proposer key file {}: {error}", path.display())
            }
            GenesisFileError::TooLong { path, bytes_max } => write!(
                f,
                "{} is longer than {bytes_max} bytes: not a meshsync file",
                path.display()
            ),
            GenesisFileError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            GenesisFileError::NotAProposer { path } => write!(
                f,
                "proposer key file {}: the key is not one of the genesis proposers",
                path.display()
            ),
            GenesisFileError::NetworkMismatch {
                path,
                genesis,
                asked,
            } => write!(
                f,
                "genesis file {} is for network {genesis}, not {asked}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for GenesisFileError {}

impl From<KeyFileIoError> for GenesisFileError {
    fn from(error: KeyFileIoError) -> GenesisFileError {
        match error {
            KeyFileIoError::AlreadyExists { path } => GenesisFileError::AlreadyExists { path },
            KeyFileIoError::Missing { path } => GenesisFileError::Missing { path },
            KeyFileIoError::Io { path, error } => GenesisFileError::Io { path, error },
            // Cannot happen: writing never reads; kept total for the compiler.
            KeyFileIoError::TooLong { path } => GenesisFileError::TooLong {
                path,
                bytes_max: keyfile::KEY_FILE_BYTES_MAX,
            },
            KeyFileIoError::Malformed { path, error } => GenesisFileError::Io {
                path,
                error: io::Error::new(io::ErrorKind::InvalidData, error.to_string()),
            },
        }
    }
}

/// A fresh proposer secret key from 32 bytes of OS entropy.
pub fn generate_proposer_key() -> SecretKey {
    let mut ikm = [0u8; 32];
    OsRng.fill_bytes(&mut ikm);
    // Cannot fail: key_gen only refuses key material under 32 bytes.
    let key = SecretKey::key_gen(&ikm, &[]).expect("32 bytes of key material");
    ikm.fill(0);
    key
}

/// The start of the next whole second after `now`, in milliseconds since the
/// Unix epoch: the default genesis time (a clock before 1970 counts as 0).
pub fn next_second_ms(now: SystemTime) -> u64 {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    since_epoch
        .as_secs()
        .saturating_add(1)
        .saturating_mul(1_000)
}

/// Creates `dir` if needed and writes `dir/genesis.toml` and one
/// `dir/proposer-<i>.key` (mode 0600) per proposer, with fresh keys. Refuses
/// if any of those files exists, unless `force`.
pub fn write_genesis(
    dir: &Path,
    options: &GenesisOptions,
    force: bool,
) -> Result<WrittenGenesis, GenesisFileError> {
    if options.proposers > PROPOSERS_MAX {
        return Err(GenesisFileError::Invalid(GenesisError::TooManyProposers {
            count: options.proposers,
        }));
    }
    let secret_keys: Vec<SecretKey> = (0..options.proposers)
        .map(|_| generate_proposer_key())
        .collect();
    let genesis = Genesis::new(
        options.network_id,
        options
            .genesis_time_ms
            .unwrap_or_else(|| next_second_ms(SystemTime::now())),
        options.slot_duration_ms,
        secret_keys.iter().map(SecretKey::sk_to_pk).collect(),
        options.finality_depth_slots,
    )
    .map_err(GenesisFileError::Invalid)?;

    let genesis_path = dir.join(GENESIS_FILE_NAME);
    let key_paths: Vec<PathBuf> = (0..options.proposers)
        .map(|index| dir.join(proposer_key_file_name(index)))
        .collect();
    fs::create_dir_all(dir).map_err(|error| GenesisFileError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    if !force {
        if let Some(path) = std::iter::once(&genesis_path)
            .chain(&key_paths)
            .find(|path| path.symlink_metadata().is_ok())
        {
            return Err(GenesisFileError::AlreadyExists { path: path.clone() });
        }
    }
    for (path, key) in key_paths.iter().zip(&secret_keys) {
        write_proposer_key(path, key, force)?;
    }
    write_public_file(&genesis_path, genesis.to_toml().as_bytes(), force)?;
    Ok(WrittenGenesis {
        genesis,
        genesis_path,
        key_paths,
    })
}

/// Writes `key` to a new proposer key file at `path` with mode 0600.
pub fn write_proposer_key(
    path: &Path,
    key: &SecretKey,
    force: bool,
) -> Result<(), GenesisFileError> {
    secret_files::write_secret_file(path, secret_key_to_text(key).as_bytes(), force)?;
    Ok(())
}

/// Reads and validates the genesis file at `path`.
pub fn load_genesis(path: &Path) -> Result<Genesis, GenesisFileError> {
    let text = read_bounded(path, GENESIS_TEXT_BYTES_MAX)?;
    Genesis::from_toml(&text).map_err(|error| GenesisFileError::MalformedGenesis {
        path: path.to_path_buf(),
        error,
    })
}

/// Reads the proposer secret key in the file at `path`. Logs a warning when
/// group or others may read the file.
pub fn load_proposer_key(path: &Path) -> Result<SecretKey, GenesisFileError> {
    let text = read_bounded(path, PROPOSER_KEY_FILE_BYTES_MAX)?;
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if keyfile::is_too_open(mode) {
            log::warn!(
                "proposer key file {} has mode {:o}: others may read the secret key (chmod 600 it)",
                path.display(),
                mode & 0o777
            );
        }
    }
    secret_key_from_text(&text).map_err(|error| GenesisFileError::MalformedKey {
        path: path.to_path_buf(),
        error,
    })
}

/// A node's [`ChainConfig`] from its files: the genesis at `genesis` (or,
/// without one, the devnet genesis of `network_id`, or of
/// [`NETWORK_ID_DEFAULT`]) and one proposer key per file in `proposer_keys`,
/// each of which must be a genesis proposer. The node follows the chain by
/// gossip; nothing is stored yet (the driver loads its store).
pub fn load_chain_config(
    genesis: Option<&Path>,
    proposer_keys: &[PathBuf],
    network_id: Option<u64>,
) -> Result<ChainConfig, GenesisFileError> {
    let mut config = match genesis {
        None => ChainConfig::devnet(network_id.unwrap_or(NETWORK_ID_DEFAULT)),
        Some(path) => {
            let genesis = load_genesis(path)?;
            if let Some(asked) = network_id {
                if asked != genesis.network_id() {
                    return Err(GenesisFileError::NetworkMismatch {
                        path: path.to_path_buf(),
                        genesis: genesis.network_id(),
                        asked,
                    });
                }
            }
            ChainConfig {
                genesis: Arc::new(genesis),
                ..ChainConfig::devnet(NETWORK_ID_DEFAULT)
            }
        }
    };
    for path in proposer_keys {
        let key = load_proposer_key(path)?;
        if !config.genesis.proposer_keys().contains(&key.sk_to_pk()) {
            return Err(GenesisFileError::NotAProposer { path: path.clone() });
        }
        config.proposer_keys.push(ProposerKey(Arc::new(key)));
    }
    config.follow_gossip = true;
    Ok(config)
}

/// The text of the file at `path`, refused past `bytes_max` without reading more.
fn read_bounded(path: &Path, bytes_max: usize) -> Result<String, GenesisFileError> {
    let io_error = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => GenesisFileError::Missing {
            path: path.to_path_buf(),
        },
        _ => GenesisFileError::Io {
            path: path.to_path_buf(),
            error,
        },
    };
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells "too long" from "exactly the limit".
    file.take(bytes_max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > bytes_max {
        return Err(GenesisFileError::TooLong {
            path: path.to_path_buf(),
            bytes_max,
        });
    }
    String::from_utf8(bytes).map_err(|_| GenesisFileError::Io {
        path: path.to_path_buf(),
        error: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// Writes a new, world-readable file (the genesis), synced to disk.
fn write_public_file(path: &Path, contents: &[u8], force: bool) -> Result<(), GenesisFileError> {
    write_new_synced(path, contents, force).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => GenesisFileError::AlreadyExists {
            path: path.to_path_buf(),
        },
        _ => GenesisFileError::Io {
            path: path.to_path_buf(),
            error,
        },
    })
}

/// Writes `contents` to a new file at `path` (or over an existing one when
/// `force`) and syncs it to disk: the CLI's world-readable outputs (the
/// genesis, a watermark export). `AlreadyExists` when it exists and not `force`.
pub fn write_new_synced(path: &Path, contents: &[u8], force: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT;
    use meshsync_mio::testing::TempDir;
    use std::time::Duration;

    // Only tests build options by hand; the command line fills every field.
    impl GenesisOptions {
        /// `proposers` proposers and every other field at its default.
        fn new(proposers: usize) -> GenesisOptions {
            GenesisOptions {
                proposers,
                network_id: NETWORK_ID_DEFAULT,
                slot_duration_ms: SLOT_DURATION_MS_DEFAULT,
                finality_depth_slots: FINALITY_DEPTH_SLOTS_DEFAULT,
                genesis_time_ms: None,
            }
        }
    }

    fn options(proposers: usize) -> GenesisOptions {
        GenesisOptions {
            genesis_time_ms: Some(1_700_000_000_000),
            ..GenesisOptions::new(proposers)
        }
    }

    #[test]
    fn writes_a_genesis_and_0600_keys_that_match_it() {
        let dir = TempDir::new("genesis");
        let out = dir.path().join("net");
        let written = write_genesis(&out, &options(3), false).unwrap();
        assert_eq!(written.genesis_path, out.join("genesis.toml"));
        assert_eq!(written.key_paths.len(), 3);

        let genesis = load_genesis(&written.genesis_path).unwrap();
        assert_eq!(genesis, written.genesis);
        assert_eq!(genesis.network_id(), NETWORK_ID_DEFAULT);
        assert_eq!(genesis.slot_duration_ms(), SLOT_DURATION_MS_DEFAULT);
        assert_eq!(genesis.finality_depth_slots(), FINALITY_DEPTH_SLOTS_DEFAULT);
        assert_eq!(genesis.genesis_time_ms(), 1_700_000_000_000);
        for (index, path) in written.key_paths.iter().enumerate() {
            assert_eq!(path, &out.join(format!("proposer-{index}.key")));
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            let key = load_proposer_key(path).unwrap();
            assert_eq!(
                key.sk_to_pk().to_bytes(),
                genesis.proposer_keys()[index].to_bytes()
            );
        }
        // Fresh entropy: no two proposers share a key.
        let first = load_proposer_key(&written.key_paths[0]).unwrap();
        let second = load_proposer_key(&written.key_paths[1]).unwrap();
        assert_ne!(first.to_bytes(), second.to_bytes());
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = TempDir::new("genesis");
        let first = write_genesis(dir.path(), &options(2), false).unwrap();
        let key_before = fs::read(&first.key_paths[1]).unwrap();
        let error = write_genesis(dir.path(), &options(2), false).unwrap_err();
        assert!(
            matches!(error, GenesisFileError::AlreadyExists { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("--force"), "{error}");
        assert_eq!(fs::read(&first.key_paths[1]).unwrap(), key_before);
        assert_eq!(load_genesis(&first.genesis_path).unwrap(), first.genesis);

        // One leftover key file alone is enough to refuse, before writing anything.
        let dir = TempDir::new("genesis");
        fs::write(dir.path().join("proposer-1.key"), "old").unwrap();
        let error = write_genesis(dir.path(), &options(2), false).unwrap_err();
        assert!(error.to_string().contains("proposer-1.key"), "{error}");
        assert!(!dir.path().join("genesis.toml").exists());
        assert!(!dir.path().join("proposer-0.key").exists());

        let forced = write_genesis(dir.path(), &options(2), true).unwrap();
        let key = load_proposer_key(&forced.key_paths[1]).unwrap();
        assert_eq!(
            key.sk_to_pk().to_bytes(),
            load_genesis(&forced.genesis_path).unwrap().proposer_keys()[1].to_bytes()
        );
        let mode = fs::metadata(&forced.key_paths[1])
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn invalid_parameters_write_nothing() {
        let dir = TempDir::new("genesis");
        for bad in [
            options(0),
            options(PROPOSERS_MAX + 1),
            GenesisOptions {
                slot_duration_ms: 0,
                ..options(1)
            },
            GenesisOptions {
                finality_depth_slots: 0,
                ..options(1)
            },
        ] {
            let error = write_genesis(dir.path(), &bad, false).unwrap_err();
            assert!(matches!(error, GenesisFileError::Invalid(_)), "{error}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn loaders_name_the_path_and_the_problem() {
        let dir = TempDir::new("genesis");
        let missing = dir.path().join("absent.toml");
        let error = load_genesis(&missing).unwrap_err();
        assert!(matches!(error, GenesisFileError::Missing { .. }), "{error}");
        assert!(error.to_string().contains("absent.toml"), "{error}");

        let bad = dir.path().join("bad.toml");
        fs::write(&bad, "network_id = 1\n").unwrap();
        let error = load_genesis(&bad).unwrap_err();
        assert!(
            matches!(error, GenesisFileError::MalformedGenesis { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("bad.toml"), "{error}");

        let huge = dir.path().join("huge.toml");
        fs::write(&huge, vec![b'#'; GENESIS_TEXT_BYTES_MAX + 1]).unwrap();
        let error = load_genesis(&huge).unwrap_err();
        assert!(matches!(error, GenesisFileError::TooLong { .. }), "{error}");

        // An identity key file is not a proposer key file.
        let identity = dir.path().join("node.key");
        secret_files::write_key_file(&identity, &meshsync_core::Identity::from_seed(1), false)
            .unwrap();
        let error = load_proposer_key(&identity).unwrap_err();
        assert!(
            matches!(
                error,
                GenesisFileError::MalformedKey {
                    error: BlsKeyFileError::WrongHeader,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("node.key"), "{error}");
        let error = load_proposer_key(&dir.path().join("none.key")).unwrap_err();
        assert!(matches!(error, GenesisFileError::Missing { .. }), "{error}");
    }

    #[test]
    fn the_default_genesis_time_is_the_next_whole_second() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(next_second_ms(at(1_700_000_000_001)), 1_700_000_001_000);
        assert_eq!(next_second_ms(at(1_700_000_000_999)), 1_700_000_001_000);
        assert_eq!(next_second_ms(at(1_700_000_000_000)), 1_700_000_001_000);
        let written = write_genesis(
            TempDir::new("genesis").path(),
            &GenesisOptions::new(1),
            false,
        )
        .unwrap();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let time = written.genesis.genesis_time_ms();
        assert_eq!(time % 1_000, 0);
        assert!(
            time > now_ms - 1_000 && time <= now_ms + 1_000,
            "{time} {now_ms}"
        );
    }

    #[test]
    fn a_chain_config_comes_from_the_genesis_and_its_proposer_keys() {
        let dir = TempDir::new("genesis");
        let written = write_genesis(dir.path(), &options(2), false).unwrap();
        let config =
            load_chain_config(Some(&written.genesis_path), &written.key_paths[1..], None).unwrap();
        assert_eq!(*config.genesis, written.genesis);
        assert_eq!(config.proposer_keys.len(), 1);
        assert!(config.follow_gossip);
        assert!(config.stored.is_empty());

        // Without a genesis file: the devnet genesis of the network asked for.
        let devnet = load_chain_config(None, &[], Some(9)).unwrap();
        assert_eq!(devnet.genesis.network_id(), 9);

        let other = dir.path().join("other");
        let stranger = write_genesis(&other, &options(1), false).unwrap();
        let error =
            load_chain_config(Some(&written.genesis_path), &stranger.key_paths, None).unwrap_err();
        assert!(
            matches!(error, GenesisFileError::NotAProposer { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("proposer-0.key"), "{error}");

        let wrong_network = written.genesis.network_id() + 1;
        let error =
            load_chain_config(Some(&written.genesis_path), &[], Some(wrong_network)).unwrap_err();
        assert!(error.to_string().contains("genesis.toml"), "{error}");
        assert!(error.to_string().contains("is for network"), "{error}");

        let error = load_chain_config(Some(&dir.path().join("nope.toml")), &[], None).unwrap_err();
        assert!(error.to_string().contains("nope.toml"), "{error}");
    }
}
