//! A command's working directory: the one the operator gave, kept; or a
//! fresh temporary one, removed when dropped (the devnet's data, a bench's
//! generated chain).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory, and whether it goes when dropped.
pub struct RunDir {
    path: PathBuf,
    remove_on_drop: bool,
}

impl RunDir {
    /// `given`, created if missing and kept; or, without one, a new
    /// directory under the system's temporary one named `prefix`-pid-nanos.
    pub fn new(given: Option<PathBuf>, prefix: &str) -> io::Result<RunDir> {
        let (path, remove_on_drop) = match given {
            Some(path) => (path, false),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos();
                let name = format!("{prefix}-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        fs::create_dir_all(&path).map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        })?;
        Ok(RunDir {
            path,
            remove_on_drop,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Best effort: a directory that cannot be removed is left behind.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
