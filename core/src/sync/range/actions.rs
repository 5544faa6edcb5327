//! The boundary: what the caller feeds in (peer chains, fetch errors, import
//! errors) and what range sync asks of it ([`SyncAction`]), with penalty
//! reasons and counters.

use super::progress::SyncProgress;
use crate::chain::{ImportError, Root, SignedBlock};
use crate::identity::PeerId;

/// Names one download of a batch: every retry gets a new id, so a late answer
/// to an old attempt is recognised and ignored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct BatchId(pub u64);

/// The chain a peer claims in its Status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerChain {
    /// Its head's slot.
    pub head_slot: u64,
    /// Its head's root.
    pub head_root: Root,
    /// Its finalized block's slot.
    pub finalized_slot: u64,
    /// Its finalized block's root.
    pub finalized_root: Root,
}

/// Why a request returned no blocks. Not penalised here: the req/resp layer
/// that saw the fault scores it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FetchError {
    /// No complete answer in time.
    Timeout,
    /// The connection closed first.
    PeerGone,
    /// The peer answered with this non-zero result code.
    ErrorCode(u8),
    /// The answer could not be decoded, or broke the request's checks
    /// (the req/resp layer penalised it).
    Malformed,
    /// The answer outgrew the room we could reserve for it in the sync
    /// buffer: our limit, not the peer's fault. `bytes` arrived for `slots`
    /// slots before it was cut off; the estimate learns from them.
    TooLarge {
        /// Encoded bytes received.
        bytes: usize,
        /// Slots those bytes covered.
        slots: u64,
    },
}

/// Why importing a batch stopped: the position of the block the chain
/// refused, and why.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchImportError {
    /// The block's position in the batch (the blocks before it were imported).
    pub index: usize,
    /// The chain store's reason.
    pub error: ImportError,
}

/// What a peer did to deserve a penalty.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PenaltyReason {
    /// A block failed verification (signature, proposer or body root).
    InvalidBlock,
    /// A block's parent root is not the previous block of the answer.
    WrongParentLinkage,
    /// A block's slot is outside the requested range.
    OutOfRange,
    /// Slots are not strictly increasing.
    OutOfOrder,
    /// A block is larger than any valid block.
    OversizedBlock,
    /// A block is one that already failed verification (the same bytes).
    KnownInvalidBlock,
    /// The blocks build on a block known to be invalid.
    InvalidAncestry,
    /// An empty answer for a range another peer then served blocks for, up
    /// to the head this peer claimed.
    EmptyAnswerDisproved,
    /// An answer that left out blocks another peer then served.
    BlocksWithheld,
    /// The batch holding the slot of the head it claims came back empty: its
    /// own answer disproves its Status.
    HeadNotServed,
    /// A block from beyond the slot the clock allows (plus a tolerance).
    FutureSlot,
}

/// What the caller must do; see each variant.
#[derive(Clone, PartialEq, Debug)]
pub enum SyncAction {
    /// Send BlocksByRange(`start_slot`, `count`) to `peer`, then call
    /// [`RangeSync::handle_response`](super::RangeSync::handle_response) with `batch` and the outcome.
    Request {
        /// The download this answers.
        batch: BatchId,
        /// Whom to ask.
        peer: PeerId,
        /// First slot.
        start_slot: u64,
        /// Slots, at most [`BLOCKS_PER_RANGE_REQUEST_MAX`](crate::reqresp::limits::BLOCKS_PER_RANGE_REQUEST_MAX).
        count: u64,
        /// Bytes set aside in the sync buffer for the answer: collect at
        /// most this much, or [`RangeSync::grow_reserve`](super::RangeSync::grow_reserve) first.
        reserve_bytes: usize,
    },
    /// Verify `blocks` off-thread with `chain::verify_batch_locating`, then
    /// call [`RangeSync::handle_verified`](super::RangeSync::handle_verified).
    Verify {
        /// The download the blocks came from.
        batch: BatchId,
        /// The blocks, in slot order.
        blocks: Vec<SignedBlock>,
    },
    /// Import `blocks` (verified) into the chain in order, stopping at the
    /// first refusal, then call [`RangeSync::handle_imported`](super::RangeSync::handle_imported) and
    /// [`RangeSync::handle_local_chain`](super::RangeSync::handle_local_chain). Batches come strictly in slot order.
    Import {
        /// The download the blocks came from.
        batch: BatchId,
        /// The blocks, in slot order.
        blocks: Vec<SignedBlock>,
    },
    /// Lower `peer`'s score for `reason`.
    Penalise {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: PenaltyReason,
    },
    /// Tell the user how far sync is.
    Progress(SyncProgress),
    /// Range sync reached its target: gossip and parent lookups take over.
    Synced {
        /// Our head's slot.
        head_slot: u64,
    },
}

/// What happened so far, for metrics and tests.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SyncCounters {
    /// Requests emitted.
    pub requests_sent: u64,
    /// Requests that failed (timeout, error, peer gone).
    pub requests_failed: u64,
    /// Answers refused before verification (order, range, linkage, size).
    pub responses_refused: u64,
    /// Slots named by the requests sent: what the servers' quotas charged.
    pub slots_requested: u64,
    /// Answers that filled a server's byte budget short of their range: the
    /// rest of the range was queued in batches of what one answer carried.
    pub answers_split: u64,
    /// Batches that passed verification.
    pub batches_verified: u64,
    /// Batches that failed verification.
    pub batches_failed: u64,
    /// Batch verifications that produced nothing (the driver failed running
    /// them): fetched again, nobody penalised.
    pub verifications_failed_locally: u64,
    /// Batches imported.
    pub batches_imported: u64,
    /// Blocks in imported batches.
    pub blocks_imported: u64,
    /// Batch imports the chain refused.
    pub imports_failed: u64,
    /// Batches queued again after a failure.
    pub retries: u64,
    /// Penalties emitted.
    pub penalties: u64,
    /// Buffered batches evicted to make room for lower ones.
    pub evictions: u64,
    /// Late or unknown answers ignored.
    pub stale_inputs: u64,
    /// Rounds given up after a batch failed too often.
    pub rounds_abandoned: u64,
    /// Outputs dropped because the caller did not drain.
    pub outputs_dropped: u64,
    /// The most bytes ever buffered.
    pub buffered_bytes_max: usize,
    /// The most requests ever in flight at once.
    pub requests_in_flight_max: usize,
    /// The most batches verifying at once so far.
    pub verifications_in_flight_max: usize,
}
