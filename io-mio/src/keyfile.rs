//! Reading identity key files.
//!
//! # Design
//! The text format belongs to the core ([`Identity::to_key_file`]); this
//! module only does the file IO of reading one. Key files are written by the
//! `meshsync` binary (`meshsync keygen`), with mode [`KEY_FILE_MODE`] and
//! never silently overwritten. Reading a file that others may read still
//! works but logs a warning, like `ssh` does for loose permissions.
//!
//! # Security
//! Provided: a key file others may read is reported (a warning naming the
//! file and its mode). Not provided: encryption at rest; anyone who can
//! read the file is the node.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use meshsync_core::identity::KeyFileError;
use meshsync_core::Identity;

/// The mode a key file is created with: read and write for its owner only.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Longest identity key file read: the format is two short lines (96
/// bytes); anything much longer is the wrong file, and is refused without
/// reading it all.
pub const KEY_FILE_BYTES_MAX: usize = 4 * 1024;
/// Longest proposer key file read (`meshsync genesis` writes them): the
/// format is two short lines (92 bytes); anything much longer is the wrong
/// file. Beside [`KEY_FILE_BYTES_MAX`] so docs/files.md's check finds both.
pub const PROPOSER_KEY_FILE_BYTES_MAX: usize = 4 * 1024;

/// Why a key file could not be read or written.
#[derive(Debug)]
pub enum KeyFileIoError {
    /// There is no file at the path.
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A file exists where a new key file should go, and `--force` was not given.
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The file is longer than [`KEY_FILE_BYTES_MAX`].
    TooLong {
        /// The path.
        path: PathBuf,
    },
    /// The file's text is not a key file.
    Malformed {
        /// The path.
        path: PathBuf,
        /// What is wrong with the text.
        error: KeyFileError,
    },
    /// Any other IO error.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
}

impl fmt::Display for KeyFileIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileIoError::Missing { path } => write!(
                f,
                "key file {} does not exist (create one with `meshsync keygen --out {}`)",
                path.display(),
                path.display()
            ),
            KeyFileIoError::AlreadyExists { path } => write!(
                f,
                "{} already exists; refusing to overwrite a key (pass --force to replace it)",
                path.display()
            ),
            KeyFileIoError::TooLong { path } => write!(
                f,
                "key file {} is longer than {KEY_FILE_BYTES_MAX} bytes: not a meshsync key file",
                path.display()
            ),
            KeyFileIoError::Malformed { path, error } => {
                write!(f, "key file {}: {error}", path.display())
            }
            KeyFileIoError::Io { path, error } => write!(f, "key file {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for KeyFileIoError {}

/// Reads the identity in the key file at `path`. Logs a warning when group or
/// others may read the file.
pub fn read_key_file(path: &Path) -> Result<Identity, KeyFileIoError> {
    let io_error = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => KeyFileIoError::Missing {
            path: path.to_path_buf(),
        },
        _ => KeyFileIoError::Io {
            path: path.to_path_buf(),
            error,
        },
    };
    let mut bytes = Vec::new();
    // One byte more than allowed tells "too long" from "exactly the limit".
    fs::File::open(path)
        .and_then(|file| {
            file.take(KEY_FILE_BYTES_MAX as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(io_error)?;
    if bytes.len() > KEY_FILE_BYTES_MAX {
        return Err(KeyFileIoError::TooLong {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| KeyFileIoError::Malformed {
        path: path.to_path_buf(),
        error: KeyFileError::WrongHeader,
    })?;
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if is_too_open(mode) {
            log::warn!(
                "key file {} has mode {:o}: others may read the secret key (chmod 600 it)",
                path.display(),
                mode & 0o777
            );
        }
    }
    Identity::from_key_file(&text).map_err(|error| KeyFileIoError::Malformed {
        path: path.to_path_buf(),
        error,
    })
}

/// Whether a file mode lets group or others read or write the file.
pub fn is_too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = TempDir::new("keyfile");
        let path = dir.path().join("absent.key");
        let error = read_key_file(&path).unwrap_err();
        assert!(matches!(error, KeyFileIoError::Missing { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("absent.key"), "{text}");
    }

    #[test]
    fn malformed_file_names_the_path_and_the_problem() {
        let dir = TempDir::new("keyfile");
        let path = dir.path().join("bad.key");
        fs::write(&path, "hello\n").unwrap();
        let error = read_key_file(&path).unwrap_err();
        assert!(
            matches!(
                error,
                KeyFileIoError::Malformed {
                    error: KeyFileError::WrongHeader,
                    ..
                }
            ),
            "{error}"
        );
        let text = error.to_string();
        assert!(text.contains("bad.key"), "{text}");
        assert!(
            text.contains(&KeyFileError::WrongHeader.to_string()),
            "{text}"
        );

        let header = meshsync_core::identity::KEY_FILE_HEADER;
        fs::write(&path, format!("{header}\nabcd\n")).unwrap();
        let error = read_key_file(&path).unwrap_err();
        assert!(
            matches!(
                error,
                KeyFileIoError::Malformed {
                    error: KeyFileError::MalformedKey,
                    ..
                }
            ),
            "{error}"
        );

        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let error = read_key_file(&path).unwrap_err();
        assert!(matches!(error, KeyFileIoError::Malformed { .. }), "{error}");

        // A huge file is refused by its size, not read to the end.
        let identity = Identity::from_seed(3).to_key_file();
        let mut padded = identity.clone().into_bytes();
        padded.resize(KEY_FILE_BYTES_MAX, b'\n');
        fs::write(&path, &padded).unwrap();
        assert_eq!(
            read_key_file(&path).unwrap().peer_id(),
            Identity::from_seed(3).peer_id(),
            "blank lines up to the limit are fine"
        );
        padded.push(b'\n');
        fs::write(&path, &padded).unwrap();
        let error = read_key_file(&path).unwrap_err();
        assert!(matches!(error, KeyFileIoError::TooLong { .. }), "{error}");
        assert!(error.to_string().contains("bad.key"), "{error}");
    }

    #[test]
    fn loose_modes_are_detected() {
        assert!(!is_too_open(0o100600));
        assert!(!is_too_open(0o400));
        assert!(is_too_open(0o644));
        assert!(is_too_open(0o602));
    }
}
