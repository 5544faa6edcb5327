//! The recording of a node: its seed, identity and configuration, then
//! every [`Input`] with its instant, and checkpoints of a running hash of
//! the [`Action`]s the node took.
//!
//! # Design
//! The core is deterministic: the same `Node::new(config, identity, seed)`
//! fed the same inputs at the same instants takes the same actions, bit for
//! bit. So a production node's run is fully described by what went into
//! `Node::new` and into `Node::handle`, and a replay rebuilds the node from
//! the recording and feeds it the same inputs. The actions are not stored
//! (they are most of the bytes: every block sent, every persist batch); a
//! running sha256 over them is, every [`RECORD_HASH_EVERY_INPUTS`] inputs,
//! so a replay knows within that many inputs where it first took another
//! action than the recorded node did.
//!
//! This module only encodes and decodes, to and from bytes in memory; the
//! mio driver writes the file (`meshsync node --record FILE`) and the
//! simulator reads it back (`meshsync-sim replay FILE`).
//!
//! # Format
//! A preamble, then frames. Every frame is a little-endian u32 length and
//! that many bytes of one value in `postcard`, serde's compact binary
//! format (integers as varints, byte strings length-prefixed):
//!
//! | part | bytes | why |
//! | --- | --- | --- |
//! | magic | 8: `MSHREC\r\n` | names the file; the line ending catches text-mode copies |
//! | format version | u32 LE, [`RECORD_FORMAT_VERSION`] | a reader refuses what it does not know |
//! | header frame | length, [`Header`] | seed, identity, configuration, checkpoint period |
//! | entry frames | length, [`Entry`] | each an input, a checkpoint, or the end |
//!
//! The action hash is sha256 over, for each input in order, the postcard
//! encoding of each action the node took after it (drained with
//! `poll_action` until `None`), then the count of those actions as a u64
//! LE: the count keeps the grouping of actions by input in the hash. A
//! checkpoint holds the number of inputs fed so far and the hash at that
//! point. A recording that ends without an [`Entry::End`] (the process was
//! killed) is still replayable up to its last whole frame.
//!
//! # Security
//! A recording holds the node's secret identity key (its key file text)
//! and any proposer keys of its configuration, and every byte peers sent
//! it: guard it as the key file. The decoder checks the framing and every
//! length against [`RECORD_FRAME_BYTES_MAX`] and the rest of the input
//! before it allocates, and values with a wire encoding of their own
//! (blocks, the genesis, peer records, keys) go through that encoding's
//! checks; otherwise the values are trusted as the node recorded them, so
//! replay only recordings you trust, as you would a configuration file.
//!
//! # Limits
//! - One frame: at most [`RECORD_FRAME_BYTES_MAX`] bytes (the header
//!   carries the blocks the node loaded from its store, which the core
//!   bounds at about 130 MiB at the default finality depth).

use sha2::{Digest, Sha256};

use crate::identity::{Identity, KeyFileError};
use crate::io::{Action, Input};
use crate::node::Config;
use crate::time::Instant;

/// The first bytes of every recording.
pub const RECORD_MAGIC: [u8; 8] = *b"MSHREC\r\n";

/// The format this code writes and reads; bumped on any change to
/// [`Header`], [`Entry`] or anything they hold (`Input`, `Config`, ...).
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// Bytes of the preamble: the magic and the format version.
pub const RECORD_PREAMBLE_BYTES: usize = RECORD_MAGIC.len() + 4;

/// Bytes of one frame's length prefix.
pub const RECORD_FRAME_LENGTH_BYTES: usize = 4;

/// Largest frame a reader accepts, and a writer writes: 1 GiB, above the
/// largest header (the blocks loaded from a store) and the largest input
/// (a verification answer of a sync batch, 64 blocks of at most 1 MiB).
pub const RECORD_FRAME_BYTES_MAX: usize = 1 << 30;

/// A checkpoint of the action hash is written after every this many inputs:
/// a divergence is found within this many inputs of where it happened, at
/// a cost of about 45 bytes per checkpoint.
pub const RECORD_HASH_EVERY_INPUTS: u64 = 256;

const _: () = assert!(RECORD_FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(RECORD_HASH_EVERY_INPUTS >= 1);

/// What went into `Node::new`, and how often the hash was checkpointed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// The node's seed: all of its randomness.
    pub seed: [u8; 32],
    /// The node's identity, as its key file's text (its secret key).
    pub identity_key_file: String,
    /// The configuration exactly as given to `Node::new`.
    pub config: Config,
    /// Inputs between two checkpoints ([`RECORD_HASH_EVERY_INPUTS`] when written).
    pub hash_every_inputs: u64,
    /// The recording program and its version, for a reader's messages.
    pub software: String,
}

impl Header {
    /// The identity the recorded node ran with.
    pub fn identity(&self) -> Result<Identity, KeyFileError> {
        Identity::from_key_file(&self.identity_key_file)
    }
}

/// One frame after the header. `I` is `&Input` when writing (nothing is
/// copied) and `Input` when reading.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Entry<I> {
    /// `input` was given to `Node::handle` at `at`.
    Input {
        /// The instant passed to `handle`.
        at: Instant,
        /// The input.
        input: I,
    },
    /// After `inputs` inputs (and the actions of the last one), the action
    /// hash was `hash`.
    Checkpoint(Checkpoint),
    /// The recording ends here: nothing follows, and `checkpoint` covers
    /// every input recorded.
    End {
        /// Why it ended.
        reason: EndReason,
        /// The hash after the last input.
        checkpoint: Checkpoint,
    },
}

/// The action hash after a number of inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Inputs fed so far.
    pub inputs: u64,
    /// sha256 over the actions so far (see the module docs).
    pub hash: [u8; 32],
}

/// Why a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    /// The node stopped (a shutdown, or the driver was dropped).
    Stopped,
    /// The recording reached its size bound; the node ran on unrecorded.
    BytesMax,
}

/// Why bytes are not a recording this code can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes do not start with [`RECORD_MAGIC`].
    NotARecording,
    /// Written by another version of the format.
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A frame's length is past [`RECORD_FRAME_BYTES_MAX`] or past the end
    /// of the bytes: the file was cut short (a node killed while writing),
    /// or damaged.
    Truncated {
        /// Where the frame starts.
        offset: usize,
    },
    /// A frame does not decode as what it must hold.
    Malformed {
        /// Where the frame starts.
        offset: usize,
        /// What postcard (or a type's own decoder) said.
        error: String,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::NotARecording => write!(f, "not a meshsync recording (wrong magic)"),
            RecordError::Version { found } => write!(
                f,
                "recording format version {found}, this build reads {RECORD_FORMAT_VERSION}"
            ),
            RecordError::Truncated { offset } => {
                write!(f, "frame at byte {offset} is cut short or too long")
            }
            RecordError::Malformed { offset, error } => {
                write!(f, "frame at byte {offset} does not decode: {error}")
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// The preamble every recording starts with.
pub fn preamble() -> [u8; RECORD_PREAMBLE_BYTES] {
    let mut bytes = [0; RECORD_PREAMBLE_BYTES];
    bytes[..RECORD_MAGIC.len()].copy_from_slice(&RECORD_MAGIC);
    bytes[RECORD_MAGIC.len()..].copy_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
    bytes
}

/// Appends `value` to `out` as one frame (length, then postcard) and
/// returns the frame's bytes.
///
/// # Panics
/// If the value does not serialize (every recorded type does: a bug) or
/// its encoding is over [`RECORD_FRAME_BYTES_MAX`] (the core bounds every
/// input far below it).
pub fn encode_frame<T: serde::Serialize>(value: &T, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_FRAME_LENGTH_BYTES]);
    postcard::serialize_with_flavor::<T, VecFlavor<'_>, ()>(value, VecFlavor(out))
        .expect("every recorded type serializes: they are plain data");
    let length = out.len() - start - RECORD_FRAME_LENGTH_BYTES;
    assert!(
        length <= RECORD_FRAME_BYTES_MAX,
        "a frame of {length} bytes is over {RECORD_FRAME_BYTES_MAX}"
    );
    // Cannot truncate: bounded just above, and the bound fits a u32.
    out[start..start + RECORD_FRAME_LENGTH_BYTES].copy_from_slice(&(length as u32).to_le_bytes());
    out.len() - start
}

/// Reads a recording from its bytes: the header first, then entries.
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// Checks the preamble and reads the header.
    pub fn open(bytes: &'a [u8]) -> Result<(Header, Reader<'a>), RecordError> {
        if bytes.len() < RECORD_PREAMBLE_BYTES || bytes[..RECORD_MAGIC.len()] != RECORD_MAGIC {
            return Err(RecordError::NotARecording);
        }
        let version = u32::from_le_bytes(
            bytes[RECORD_MAGIC.len()..RECORD_PREAMBLE_BYTES]
                .try_into()
                .expect("four bytes by the range"),
        );
        if version != RECORD_FORMAT_VERSION {
            return Err(RecordError::Version { found: version });
        }
        let mut reader = Reader {
            bytes,
            offset: RECORD_PREAMBLE_BYTES,
        };
        let header = reader
            .next_frame::<Header>()
            .unwrap_or(Err(RecordError::Truncated {
                offset: RECORD_PREAMBLE_BYTES,
            }))?;
        Ok((header, reader))
    }

    /// Where the next frame starts.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The next entry; `None` at the end of the bytes, and after an error
    /// (a cut or damaged frame ends what can be read).
    pub fn next_entry(&mut self) -> Option<Result<Entry<Input>, RecordError>> {
        self.next_frame()
    }

    fn next_frame<T: serde::de::DeserializeOwned>(&mut self) -> Option<Result<T, RecordError>> {
        let rest = &self.bytes[self.offset..];
        if rest.is_empty() {
            return None;
        }
        let offset = self.offset;
        // Whatever the frame holds, nothing is read after an error.
        self.offset = self.bytes.len();
        let Some((length, rest)) = rest.split_first_chunk::<RECORD_FRAME_LENGTH_BYTES>() else {
            return Some(Err(RecordError::Truncated { offset }));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if length > RECORD_FRAME_BYTES_MAX || length > rest.len() {
            return Some(Err(RecordError::Truncated { offset }));
        }
        let frame = &rest[..length];
        let next = offset + RECORD_FRAME_LENGTH_BYTES + length;
        Some(match postcard::take_from_bytes::<T>(frame) {
            Ok((value, [])) => {
                self.offset = next;
                Ok(value)
            }
            Ok((_, trailing)) => Err(RecordError::Malformed {
                offset,
                error: format!("{} bytes left over", trailing.len()),
            }),
            Err(error) => Err(RecordError::Malformed {
                offset,
                error: error.to_string(),
            }),
        })
    }
}

/// The running hash of a node's actions, grouped by input (see the module
/// docs). The recorder and the replay keep one each and compare.
#[derive(Clone, Debug, Default)]
pub struct ActionHasher {
    hasher: Sha256,
    inputs: u64,
    actions: u64,
}

impl ActionHasher {
    /// A hash over nothing yet.
    pub fn new() -> ActionHasher {
        ActionHasher::default()
    }

    /// Adds one action the node took after the current input.
    pub fn action(&mut self, action: &Action) {
        self.actions += 1;
        postcard::serialize_with_flavor::<Action, HashFlavor<'_>, ()>(
            action,
            HashFlavor(&mut self.hasher),
        )
        .expect("every action serializes: plain data, and hashing cannot fail");
    }

    /// Ends the current input (its actions are drained); returns the
    /// checkpoint due after it, if one is: every `every` inputs.
    pub fn end_input(&mut self, every: u64) -> Option<Checkpoint> {
        self.hasher.update(self.actions.to_le_bytes());
        self.actions = 0;
        self.inputs += 1;
        (self.inputs % every.max(1) == 0).then(|| self.checkpoint())
    }

    /// The hash after the inputs ended so far.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            inputs: self.inputs,
            hash: self.hasher.clone().finalize().into(),
        }
    }

    /// Inputs ended so far.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }
}

/// A postcard output that feeds a hasher instead of a buffer.
struct HashFlavor<'a>(&'a mut Sha256);

impl postcard::ser_flavors::Flavor for HashFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A postcard output that appends to a caller's vector.
struct VecFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Command, Origin};
    use crate::types::ConnId;

    fn header() -> Header {
        let mut config = Config::new(7);
        config.chain = crate::chain::ChainConfig::devnet_with_chain(7, 3, 100);
        Header {
            seed: [9; 32],
            identity_key_file: Identity::from_seed(3).to_key_file(),
            config,
            hash_every_inputs: RECORD_HASH_EVERY_INPUTS,
            software: "test".into(),
        }
    }

    #[test]
    fn a_recording_reads_back_as_written_and_a_cut_tail_is_reported() {
        let header = header();
        let inputs = [
            Input::ConnectionOpened {
                conn: ConnId(16),
                remote: "127.0.0.1:9000".parse().expect("an address"),
                origin: Origin::Accepted,
            },
            Input::BytesReceived {
                conn: ConnId(16),
                bytes: vec![1, 2, 3],
            },
            Input::Command(Command::Shutdown),
        ];
        let mut bytes = preamble().to_vec();
        encode_frame(&header, &mut bytes);
        for (index, input) in inputs.iter().enumerate() {
            let at = Instant::from_micros(index as u64 * 10);
            encode_frame(&Entry::Input { at, input }, &mut bytes);
        }
        let end = Entry::<&Input>::End {
            reason: EndReason::Stopped,
            checkpoint: ActionHasher::new().checkpoint(),
        };
        encode_frame(&end, &mut bytes);

        let (read, mut reader) = Reader::open(&bytes).expect("a recording");
        assert_eq!(read, header);
        assert_eq!(
            read.identity().expect("a key").peer_id(),
            Identity::from_seed(3).peer_id()
        );
        for (index, input) in inputs.iter().enumerate() {
            let entry = reader.next_entry().expect("an entry").expect("decodes");
            assert_eq!(
                entry,
                Entry::Input {
                    at: Instant::from_micros(index as u64 * 10),
                    input: input.clone()
                }
            );
        }
        let last = reader.offset();
        assert!(matches!(reader.next_entry(), Some(Ok(Entry::End { .. }))));
        assert!(reader.next_entry().is_none());

        let (_, mut cut) = Reader::open(&bytes[..bytes.len() - 1]).expect("the header is whole");
        let mut results = std::iter::from_fn(|| cut.next_entry()).collect::<Vec<_>>();
        assert_eq!(
            results.pop(),
            Some(Err(RecordError::Truncated { offset: last }))
        );
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            Reader::open(b"not one").err(),
            Some(RecordError::NotARecording)
        );
    }

    #[test]
    fn the_action_hash_counts_the_actions_of_each_input() {
        let close = Action::Close { conn: ConnId(1) };
        let mut one_each = ActionHasher::new();
        one_each.action(&close);
        one_each.end_input(2);
        one_each.action(&close);
        let checkpoint = one_each.end_input(2).expect("due after 2 inputs");
        let mut both_first = ActionHasher::new();
        both_first.action(&close);
        both_first.action(&close);
        both_first.end_input(2);
        assert_ne!(both_first.end_input(2), Some(checkpoint));
        assert_eq!(checkpoint.inputs, 2);
    }
}
