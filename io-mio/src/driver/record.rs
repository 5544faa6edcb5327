//! Recording the node (`meshsync node --record FILE`): every input the
//! driver hands the core, with its instant, after a header with the seed,
//! the identity and the configuration the node was built from; and every
//! [`RECORD_HASH_EVERY_INPUTS`] inputs a checkpoint of the hash of the
//! actions the node took. `meshsync-sim replay FILE` rebuilds the node from
//! it and checks that it takes the same actions. The format is the core's
//! (`meshsync_core::record`).
//!
//! # Design
//! The core cannot be snapshotted, so a replay needs every input from the
//! node's start: a recording is one file per start of the node, never
//! split. Its bound, [`RecordOptions::bytes_max`], therefore keeps the
//! *first* bytes: once the next input would take the file past it, the
//! recorder writes an end marker ([`EndReason::BytesMax`]) with the hash
//! after the last input it kept, logs a WARN, and records nothing more
//! while the node runs on. What is kept replays and checks in full. The
//! one rotation is per start: a file already at the path (the previous
//! run's recording) is renamed to `FILE.1`, replacing an older `FILE.1`,
//! so a restart keeps the run before it.
//!
//! Writes go through a buffer, flushed at each checkpoint, at least every
//! [`RECORD_FLUSH_INTERVAL`] while inputs come, and at the end (when the
//! driver is dropped). A node killed with SIGKILL loses at most the
//! buffer's tail; the rest replays (without the end marker). A failed
//! write stops the recording with a WARN; the node is never stopped for it.
//!
//! # Security
//! The file holds the node's secret identity key, its proposer keys, and
//! every byte its peers sent: it is created with mode 0600, and must be
//! guarded as the key file.
//!
//! # Limits
//! - File size: [`RecordOptions::bytes_max`] ([`RECORD_BYTES_MAX_DEFAULT`]),
//!   the header always included (it carries the blocks loaded from the store).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::record::{
    encode_frame, preamble, ActionHasher, EndReason, Entry, Header, RECORD_HASH_EVERY_INPUTS,
};
use meshsync_core::{Action, Input, Instant};

/// Default bound of a recording: 1 GiB. A node at the head of a chain of
/// 1 KiB blocks each second records a few MB an hour; a sync of a long
/// chain records each block about twice (as bytes received and as the
/// verified batch), so a bound keeps a forgotten `--record` from filling
/// the disk.
pub const RECORD_BYTES_MAX_DEFAULT: u64 = 1 << 30;

/// Smallest bound accepted: the header of a fresh node and some inputs.
pub const RECORD_BYTES_MAX_MIN: u64 = 64 << 10;

/// Buffered recording is written out at least this often while inputs come.
pub const RECORD_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes kept free under the bound for the end marker (a frame of about 45).
const END_FRAME_BYTES_MAX: u64 = 128;

/// The write buffer: large enough that a read of a full socket buffer is
/// one write.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Mode of a new recording: it holds the node's secret key.
pub const RECORD_FILE_MODE: u32 = 0o600;

/// Where and how much to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// The recording; an existing file there is renamed to `FILE.1` first.
    pub path: PathBuf,
    /// Inputs past this many bytes of file are not recorded (see the module docs).
    pub bytes_max: u64,
    /// A checkpoint of the action hash every this many inputs
    /// ([`RECORD_HASH_EVERY_INPUTS`]; at least 1): fewer find a divergence
    /// closer to its input, at about 45 bytes a checkpoint.
    pub hash_every_inputs: u64,
}

impl RecordOptions {
    /// Recording to `path` with the default bound.
    pub fn new(path: PathBuf) -> RecordOptions {
        RecordOptions {
            path,
            bytes_max: RECORD_BYTES_MAX_DEFAULT,
            hash_every_inputs: RECORD_HASH_EVERY_INPUTS,
        }
    }
}

/// The path a previous recording is moved to: `FILE.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    PathBuf::from(rotated)
}

/// An open recording; inactive once it ended (bound, or a failed write).
pub(super) struct Recorder {
    path: PathBuf,
    /// `None` once the recording ended.
    file: Option<BufWriter<File>>,
    bytes_written: u64,
    bytes_max: u64,
    hash_every_inputs: u64,
    hasher: ActionHasher,
    /// One frame, encoded before it is known to fit.
    frame: Vec<u8>,
    flushed_at: StdInstant,
    /// Label for log lines.
    label: String,
}

impl Recorder {
    /// Creates the file (moving an existing one to `FILE.1`) and writes the
    /// preamble and `header`, whose checkpoint period it keeps.
    pub(super) fn create(
        options: &RecordOptions,
        header: &Header,
        label: String,
    ) -> io::Result<Recorder> {
        let path = &options.path;
        match fs::rename(path, rotated_path(path)) {
            Ok(()) => log::info!(
                "{label} previous recording moved to {}",
                rotated_path(path).display()
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(RECORD_FILE_MODE)
            .open(path)?;
        let mut file = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let mut frame = preamble().to_vec();
        encode_frame(header, &mut frame);
        file.write_all(&frame)?;
        file.flush()?;
        log::info!(
            "{label} recording every input to {} (header {} bytes, at most {} bytes; it holds \
             the node's secret key)",
            path.display(),
            frame.len(),
            options.bytes_max
        );
        Ok(Recorder {
            path: path.clone(),
            file: Some(file),
            bytes_written: frame.len() as u64,
            bytes_max: options.bytes_max,
            hash_every_inputs: header.hash_every_inputs,
            hasher: ActionHasher::new(),
            frame,
            flushed_at: StdInstant::now(),
            label,
        })
    }

    /// Records `input`, about to be handed to the core at `at`; ends the
    /// recording instead if it would take the file past its bound.
    pub(super) fn input(&mut self, at: Instant, input: &Input) {
        if self.file.is_none() {
            return;
        }
        self.frame.clear();
        encode_frame(&Entry::Input { at, input }, &mut self.frame);
        if self.bytes_written + self.frame.len() as u64 + END_FRAME_BYTES_MAX > self.bytes_max {
            log::warn!(
                "{} recording {} reached its bound of {} bytes after {} inputs: the node runs \
                 on unrecorded",
                self.label,
                self.path.display(),
                self.bytes_max,
                self.hasher.inputs()
            );
            self.end(EndReason::BytesMax);
            return;
        }
        self.write_frame();
    }

    /// Adds an action the core took after the current input to the hash.
    pub(super) fn action(&mut self, action: &Action) {
        if self.file.is_some() {
            self.hasher.action(action);
        }
    }

    /// The core's actions after the current input are drained: writes a
    /// checkpoint if one is due, and flushes if it is time.
    pub(super) fn input_done(&mut self) {
        if self.file.is_none() {
            return;
        }
        if let Some(checkpoint) = self.hasher.end_input(self.hash_every_inputs) {
            self.frame.clear();
            encode_frame(&Entry::<&Input>::Checkpoint(checkpoint), &mut self.frame);
            self.write_frame();
            self.flush();
        } else if self.flushed_at.elapsed() >= RECORD_FLUSH_INTERVAL {
            self.flush();
        }
    }

    /// Writes the end marker and closes the file; later calls do nothing.
    pub(super) fn end(&mut self, reason: EndReason) {
        if self.file.is_none() {
            return;
        }
        self.frame.clear();
        let checkpoint = self.hasher.checkpoint();
        encode_frame(
            &Entry::<&Input>::End { reason, checkpoint },
            &mut self.frame,
        );
        self.write_frame();
        self.flush();
        if self.file.take().is_some() {
            log::info!(
                "{} recording {} ended ({reason:?}): {} inputs, {} bytes",
                self.label,
                self.path.display(),
                checkpoint.inputs,
                self.bytes_written
            );
        }
    }

    fn write_frame(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(&self.frame) {
            Ok(()) => self.bytes_written += self.frame.len() as u64,
            Err(error) => self.fail(error),
        }
    }

    fn flush(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        self.flushed_at = StdInstant::now();
        if let Err(error) = file.flush() {
            self.fail(error);
        }
    }

    fn fail(&mut self, error: io::Error) {
        log::warn!(
            "{} recording {} stopped: cannot write: {error}",
            self.label,
            self.path.display()
        );
        self.file = None;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.end(EndReason::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use meshsync_core::record::Reader;
    use meshsync_core::{Config, ConnId, Identity};

    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn the_bound_keeps_the_start_and_ends_with_a_marker() {
        let dir = TempDir::new("record-bound");
        let path = dir.path().join("node.rec");
        std::fs::write(&path, b"the previous run").expect("a file");
        let options = RecordOptions {
            bytes_max: RECORD_BYTES_MAX_MIN,
            ..RecordOptions::new(path.clone())
        };
        let header = Header {
            seed: [1; 32],
            identity_key_file: Identity::from_seed(1).to_key_file(),
            config: Config::new(1),
            hash_every_inputs: 4,
            software: "test".to_owned(),
        };
        let mut recorder =
            Recorder::create(&options, &header, "[test]".to_owned()).expect("created");
        let input = Input::BytesReceived {
            conn: ConnId(16),
            bytes: vec![7; 10_000],
        };
        for micros in 0..10 {
            recorder.input(Instant::from_micros(micros), &input);
            recorder.input_done();
        }
        drop(recorder);

        assert_eq!(
            std::fs::read(rotated_path(&path)).expect("rotated"),
            b"the previous run"
        );
        let mode = std::fs::metadata(&path)
            .expect("there")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, RECORD_FILE_MODE);
        let bytes = std::fs::read(&path).expect("written");
        assert!(
            bytes.len() as u64 <= RECORD_BYTES_MAX_MIN,
            "{}",
            bytes.len()
        );
        let (read, mut reader) = Reader::open(&bytes).expect("a recording");
        assert_eq!(read, header);
        let entries: Vec<_> = std::iter::from_fn(|| reader.next_entry())
            .map(|entry| entry.expect("whole frames"))
            .collect();
        let inputs = entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Input { .. }))
            .count();
        assert_eq!(inputs, 6, "64 KiB hold six inputs of 10,000 bytes");
        match entries.last() {
            Some(Entry::End { reason, checkpoint }) => {
                assert_eq!(*reason, EndReason::BytesMax);
                assert_eq!(checkpoint.inputs, 6);
            }
            other => panic!("the last entry is {other:?}"),
        }
    }
}
