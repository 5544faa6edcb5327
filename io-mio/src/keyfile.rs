//! Reading and writing identity key files.
//!
//! # Design
//! The text format belongs to the core ([`Identity::to_key_file`]); this
//! module only does the file IO around it. A key file is created with mode
//! 0600 and never silently overwritten. Reading a file that others may read
//! still works but logs a warning, like `ssh` does for loose permissions.
//!
//! # Security
//! Provided: a new key file is never readable by group or others (it is
//! created with mode 0600, and the umask can only remove bits). Not provided:
//! encryption at rest; anyone who can read the file is the node.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use meshsync_core::identity::KeyFileError;
use meshsync_core::Identity;

/// The mode a key file is created with: read and write for its owner only.
pub const KEY_FILE_MODE: u32 = 0o600;

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
            KeyFileIoError::Malformed { path, error } => {
                write!(f, "key file {}: {error}", path.display())
            }
            KeyFileIoError::Io { path, error } => write!(f, "key file {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for KeyFileIoError {}

/// Writes `identity` to a new file at `path` with mode 0600. An existing file
/// is an error unless `force`, in which case it is replaced (by a new file, so
/// the old file's looser permissions do not carry over).
pub fn write_key_file(path: &Path, identity: &Identity, force: bool) -> Result<(), KeyFileIoError> {
    write_secret_file(path, identity.to_key_file().as_bytes(), force)
}

/// Writes `contents` to a new file at `path` with mode 0600, synced to disk:
/// the file IO of every secret key file (identity and proposer keys). An
/// existing file is an error unless `force`, in which case it is replaced by
/// a new file, so the old file's looser permissions do not carry over.
pub fn write_secret_file(path: &Path, contents: &[u8], force: bool) -> Result<(), KeyFileIoError> {
    let io_error = |error: io::Error| KeyFileIoError::Io {
        path: path.to_path_buf(),
        error,
    };
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => KeyFileIoError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => io_error(error),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error)
}

/// Reads the identity in the key file at `path`. Logs a warning when group or
/// others may read the file.
pub fn read_key_file(path: &Path) -> Result<Identity, KeyFileIoError> {
    let text = fs::read_to_string(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => KeyFileIoError::Missing {
            path: path.to_path_buf(),
        },
        io::ErrorKind::InvalidData => KeyFileIoError::Malformed {
            path: path.to_path_buf(),
            error: KeyFileError::WrongHeader,
        },
        _ => KeyFileIoError::Io {
            path: path.to_path_buf(),
            error,
        },
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
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "meshsync-keyfile-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("temp dir is writable");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn round_trips_with_mode_0600() {
        let dir = TempDir::new();
        let path = dir.0.join("node.key");
        let identity = Identity::from_seed(11);
        write_key_file(&path, &identity, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = read_key_file(&path).unwrap();
        assert_eq!(back.peer_id(), identity.peer_id());
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = TempDir::new();
        let path = dir.0.join("node.key");
        write_key_file(&path, &Identity::from_seed(1), false).unwrap();
        let error = write_key_file(&path, &Identity::from_seed(2), false).unwrap_err();
        assert!(
            matches!(error, KeyFileIoError::AlreadyExists { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("--force"), "{error}");
        assert_eq!(
            read_key_file(&path).unwrap().peer_id(),
            Identity::from_seed(1).peer_id(),
            "the old key is untouched"
        );

        // A forced overwrite of a loose file also tightens its mode.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_key_file(&path, &Identity::from_seed(2), true).unwrap();
        assert_eq!(
            read_key_file(&path).unwrap().peer_id(),
            Identity::from_seed(2).peer_id()
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = TempDir::new();
        let path = dir.0.join("absent.key");
        let error = read_key_file(&path).unwrap_err();
        assert!(matches!(error, KeyFileIoError::Missing { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("absent.key"), "{text}");
    }

    #[test]
    fn malformed_file_names_the_path_and_the_problem() {
        let dir = TempDir::new();
        let path = dir.0.join("bad.key");
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
    }

    #[test]
    fn loose_modes_are_detected() {
        assert!(!is_too_open(0o100600));
        assert!(!is_too_open(0o400));
        assert!(is_too_open(0o644));
        assert!(is_too_open(0o602));
    }
}
