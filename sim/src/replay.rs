//! Replaying a recorded production node (`meshsync-sim replay FILE`, from
//! `meshsync node --record FILE`): the node is rebuilt from the recording's
//! seed, identity and configuration, fed every recorded input at its
//! recorded instant, and the hash of the actions it takes is compared with
//! each checkpoint the recording logged.
//!
//! # Design
//! No world, no network, no clock: the replayed node is the only node, and
//! its actions go nowhere but into the hash (the recorded inputs already
//! hold every answer the real driver gave: bytes, connections, verified
//! batches, durable writes). The core is deterministic, so a replay of a
//! recording made by the same core matches every checkpoint; the first that
//! does not is reported with the inputs it covers and the instant of its
//! last input. A recording cut short (the node was killed while writing)
//! replays up to its last whole frame; the inputs after its last checkpoint
//! are then fed but cannot be checked, and the report says how many.

use std::fmt;

use meshsync_core::identity::KeyFileError;
use meshsync_core::record::{ActionHasher, Checkpoint, EndReason, Entry, Reader, RecordError};
use meshsync_core::{Instant, Node, PeerId};

/// What a replay that matched every checkpoint found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// The node replayed.
    pub peer: PeerId,
    /// The program that recorded it.
    pub software: String,
    /// Inputs fed to the node.
    pub inputs: u64,
    /// Checkpoints compared, the end marker's included; all matched.
    pub checkpoints_matched: u64,
    /// Inputs after the last checkpoint (none when the recording has its
    /// end marker, whose checkpoint covers every input).
    pub inputs_unchecked: u64,
    /// The action hash after the last input.
    pub final_hash: [u8; 32],
    /// Why the recording ended, if it says (`None`: it was cut short).
    pub end: Option<EndReason>,
    /// Where the recording was cut, if its last frame is not whole.
    pub cut_at: Option<usize>,
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed node {} (recorded by {}): {} inputs, {} checkpoints matched, final hash {}",
            self.peer,
            self.software,
            self.inputs,
            self.checkpoints_matched,
            hex::encode(self.final_hash)
        )?;
        match (self.end, self.cut_at) {
            (Some(EndReason::Stopped), _) => {
                write!(f, "; the recording ends where the node stopped")
            }
            (Some(EndReason::BytesMax), _) => write!(
                f,
                "; the recording reached its size bound (the node ran on, unrecorded)"
            ),
            (None, cut) => write!(
                f,
                "; the recording has no end marker ({}): the last {} inputs are unchecked",
                match cut {
                    Some(offset) => format!("cut at byte {offset}"),
                    None => "the node did not stop".to_owned(),
                },
                self.inputs_unchecked
            ),
        }
    }
}

/// Why a replay failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The bytes are not a readable recording (or a frame inside is damaged).
    Record(RecordError),
    /// The recorded identity does not parse as a key file.
    Identity(KeyFileError),
    /// The replayed node took other actions than the recorded one.
    Diverged {
        /// The last checkpoint that matched, in inputs (0: none did).
        matched_inputs: u64,
        /// The checkpoint that differs: inputs fed when it was taken.
        inputs: u64,
        /// The instant of the last input it covers.
        at: Instant,
        /// The hash the recording logged.
        recorded: [u8; 32],
        /// The hash the replay computed.
        replayed: [u8; 32],
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Record(error) => write!(f, "unreadable recording: {error}"),
            ReplayError::Identity(error) => write!(f, "the recorded identity: {error}"),
            ReplayError::Diverged {
                matched_inputs,
                inputs,
                at,
                recorded,
                replayed,
            } => write!(
                f,
                "diverged at the checkpoint after input {inputs} (at {at}): the actions of \
                 inputs {} to {inputs} hash to {} in the replay, {} in the recording (every \
                 checkpoint up to input {matched_inputs} matched)",
                matched_inputs + 1,
                hex::encode(replayed),
                hex::encode(recorded)
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Replays the recording in `bytes` (see the module docs).
pub fn replay(bytes: &[u8]) -> Result<ReplayReport, ReplayError> {
    let (header, mut reader) = Reader::open(bytes).map_err(ReplayError::Record)?;
    let identity = header.identity().map_err(ReplayError::Identity)?;
    let peer = identity.peer_id();
    let mut node = Node::new(header.config, identity, header.seed);
    let mut hasher = ActionHasher::new();
    let mut last_at = Instant::ZERO;
    let mut matched = Checkpoint {
        inputs: 0,
        hash: [0; 32],
    };
    let mut checkpoints_matched = 0;
    let mut end = None;
    let mut cut_at = None;
    let mut check = |recorded: Checkpoint, replayed: Checkpoint, at: Instant| {
        if recorded == replayed {
            matched = recorded;
            checkpoints_matched += 1;
            Ok(())
        } else {
            Err(ReplayError::Diverged {
                matched_inputs: matched.inputs,
                inputs: recorded.inputs,
                at,
                recorded: recorded.hash,
                replayed: replayed.hash,
            })
        }
    };
    while let Some(entry) = reader.next_entry() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(RecordError::Truncated { offset }) => {
                cut_at = Some(offset);
                break;
            }
            Err(error) => return Err(ReplayError::Record(error)),
        };
        match entry {
            Entry::Input { at, input } => {
                node.handle(at, input);
                while let Some(action) = node.poll_action() {
                    hasher.action(&action);
                }
                // Checkpoints are compared where the recording has them.
                hasher.end_input(u64::MAX);
                last_at = at;
            }
            Entry::Checkpoint(recorded) => check(recorded, hasher.checkpoint(), last_at)?,
            Entry::End { reason, checkpoint } => {
                check(checkpoint, hasher.checkpoint(), last_at)?;
                end = Some(reason);
                break;
            }
        }
    }
    let last = hasher.checkpoint();
    Ok(ReplayReport {
        peer,
        software: header.software,
        inputs: last.inputs,
        checkpoints_matched,
        inputs_unchecked: last.inputs - matched.inputs,
        final_hash: last.hash,
        end,
        cut_at,
    })
}
