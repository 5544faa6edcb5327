//! Writing secret key files: the node identity of `meshsync keygen` and the
//! proposer keys of `meshsync genesis`.
//!
//! # Design
//! Reading a key file is the driver library's
//! ([`meshsync_mio::keyfile::read_key_file`]); only this binary writes them.
//! A key file is created with mode [`KEY_FILE_MODE`] (0600) and never
//! silently overwritten.
//!
//! # Security
//! Provided: a new key file is never readable by group or others (it is
//! created with mode 0600, and the umask can only remove bits). Not provided:
//! encryption at rest; anyone who can read the file is the node.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use meshsync_core::Identity;
use meshsync_mio::keyfile::{KeyFileIoError, KEY_FILE_MODE};

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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use meshsync_mio::keyfile::read_key_file;
    use meshsync_mio::testing::TempDir;

    use super::*;

    #[test]
    fn round_trips_with_mode_0600() {
        let dir = TempDir::new("secret-files");
        let path = dir.path().join("node.key");
        let identity = Identity::from_seed(11);
        write_key_file(&path, &identity, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = read_key_file(&path).unwrap();
        assert_eq!(back.peer_id(), identity.peer_id());
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = TempDir::new("secret-files");
        let path = dir.path().join("node.key");
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
}
