//! Initial (range) sync: fetch the missing slots in batches from several
//! peers, check them, have them verified off-thread, import them in order.
//!
//! # Design
//! [`RangeSync`] knows nothing of connections or wire formats: the caller
//! feeds it peers' Status ([`RangeSync::on_peer_status`]), our own chain
//! ([`RangeSync::on_local_chain`]), and the results of what it asked for
//! (responses, verifications, imports), then drains [`RangeSync::poll`]
//! until `None` and sleeps until [`RangeSync::next_deadline`]
//! (then [`RangeSync::on_timer`]). After Prysm's blocks fetcher and
//! Lighthouse's range sync:
//!
//! ```text
//!   Idle ──a suitable peer's head > ours + SYNC_DISTANCE_SLOTS──► AwaitingPeers
//!    ▲                                                             │ SYNC_PEERS_MIN suitable peers
//!    │ Synced{head}                                                │ (1 after SYNC_PEERS_WAIT)
//!    │                                                             ▼
//!    └──── every batch up to the target imported ◄──────────── Syncing
//!                                                  no suitable peer left: back to
//!                                                  AwaitingPeers, batches kept;
//!                                                  none for SYNC_PEERS_WAIT: batches
//!                                                  dropped (imports kept), Idle
//!
//!  one batch [start, start + count):
//!   Queued ─Request─► Downloading ─on_response: checked─► Downloaded ─Verify─► Verifying
//!     ▲  ▲                │ timeout, error, bad order/range/link: penalise, other peer    │
//!     │  └────────────────┘                                                              │
//!     │◄── on_verified Err: penalise the sender only, remember the bad blocks ◄──────────┤
//!     │                                                                           Ok     ▼
//!     │◄── on_imported Err(unknown parent): previous batches re-checked ◄─ Importing ◄─ Verified
//!                                                                  │ Ok      (lowest batch only,
//!                                                                  ▼          one at a time)
//!                                                   removed, remembered in a short history
//! ```
//!
//! A round starts at our finalized slot + 1 (blocks we already have import
//! as already known; a head on a minority fork above finality is replaced)
//! and the target is the highest head that is *believed*, re-evaluated as
//! statuses arrive: claimed by a peer that proved itself (blocks it served
//! imported), or reached by [`CLAIM_SUPPORT_PEERS_MIN`] peers. One peer's
//! word alone is tried only when it is the only peer we hear, after
//! [`SYNC_PEERS_WAIT`] (or at once with `peers_min` 1), and then only as
//! far as its answers prove it. Batches go to the least loaded of the best
//! peers (score, then proven before unproven, then a seeded tie-break), at
//! most the per-peer window in flight (adaptive, at most 4) and 64 overall.
//! A peer counts as suitable when its claims are consistent (finality not
//! above its head), allowed by the clock ([`RangeSync::on_clock`]), not
//! disproven, ahead of us, and finalized on our finalized checkpoint (same
//! slot and root) or further along. A finalized checkpoint ahead of ours
//! only lets a peer serve batches, whose answers are checked and can
//! disprove it: it never ranks the peer or sets the target.
//! Batch size and per-peer windows adapt: a fast answer grows them, a
//! timeout halves them. Blocks are checked (slots strictly increasing and
//! inside the range, each linked to the previous) before verification;
//! a batch is imported only after every lower batch was.
//!
//! When a batch's first block does not link to our chain, the batches just
//! before it (the last non-empty one and the empty ones after it, from a
//! short history) are suspect: they are downloaded again from other peers,
//! and their first sender is penalised only if the second answer has blocks
//! the first one withheld. A batch that fails [`BATCH_ATTEMPTS_MAX`] times
//! ends the round: batches not imported are dropped (the chain keeps what
//! was imported) and a new round starts from our chain after
//! [`ROUND_RETRY_DELAY`]. A batch that does not link while earlier batches
//! are being re-checked waits for them without blaming its sender.
//!
//! # Security
//! *Provided*: a peer's answer never makes us hold more than
//! [`SYNC_BUFFER_BYTES_MAX`] of blocks (each request reserves its room
//! before it is sent, the caller collects at most that much, growing it with
//! [`RangeSync::grow_reserve`] or cutting the answer off as
//! [`FetchError::TooLarge`]; buffered batches above a lower one are evicted
//! and fetched again); no claim or block beyond the clock's slot is used;
//! a peer whose own answer for the range holding its claimed head is empty is penalised
//! ([`PenaltyReason::HeadNotServed`]) and not believed for
//! [`CLAIM_DISPROVED_COOLDOWN`], whatever Status it sends; a proposer is
//! asked to pause ([`RangeSync::is_catching_up`]) only while a believed
//! round imports, at most [`CATCH_UP_STALL_MAX`] without progress;
//! arithmetic on claimed slots saturates; a bad block penalises exactly its sender and is never
//! imported (verification happens before import, and the same bytes are
//! refused from then on); a peer claiming a head it cannot back up stalls nothing
//! (its claim is ignored once a round fails to reach it); every state has a
//! timer or a pending answer as its way out; same seed and inputs, same
//! actions.
//!
//! *Not provided*: fork choice among peers that disagree above our
//! finalized checkpoint (we follow the highest claimed head; the chain store
//! decides); transport faults (timeouts, error codes, malformed chunks)
//! are not penalised here, the req/resp layer that saw them scores them; a
//! withheld block is only proven when a later batch needs it. Blocks that
//! fail verification are remembered by their exact bytes, not reported to
//! the chain as invalid roots: a root names only the header, so a peer
//! could get a valid block refused everywhere by sending it with a bad
//! signature or body.
//!
//! # Limits
//! Requests: [`REQUESTS_PER_PEER_MAX`] per peer, [`REQUESTS_MAX`] overall, of
//! at most [`BATCH_SLOTS`] slots each. Batches: [`BATCHES_MAX`]. Peers:
//! [`SYNC_PEERS_MAX`]. Buffer: [`SYNC_BUFFER_BYTES_MAX`], counted in encoded
//! bytes; a request is sent only if twice the measured bytes per slot fits
//! besides what is buffered and reserved, and an answer that still does not
//! fit evicts buffered batches above it (the worker's copy of a batch being
//! verified is not counted: at most [`VERIFICATIONS_MAX`] such copies, each
//! one batch). Verifications in flight: [`VERIFICATIONS_MAX`]. History: [`HISTORY_BATCHES_MAX`]. Invalid
//! blocks remembered: [`INVALID_BLOCKS_MAX`]. Queued outputs: [`OUTPUTS_MAX`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::chain::{Checkpoint, ImportError, Root, SignedBlock};
use crate::identity::PeerId;
use crate::peer::score::Score;
use crate::reqresp::limits::{BLOCKS_PER_RANGE_REQUEST_MAX, BLOCK_BYTES_MAX};
use crate::time::{Duration, Instant};

// --- Limits -------------------------------------------------------------------

/// A peer whose head is more than this ahead of ours starts a range sync;
/// closer than that, gossip and parent lookups catch up (one epoch).
pub const SYNC_DISTANCE_SLOTS: u64 = 32;
/// Slots per batch at most, and where the adaptive size starts: one full
/// BlocksByRange request.
pub const BATCH_SLOTS: u64 = 64;
/// Slots per batch at least: below this the request overhead dominates.
pub const BATCH_SLOTS_MIN: u64 = 8;
/// Slots the batch size grows or shrinks by after a fast or slow answer.
pub const BATCH_SLOTS_STEP: u64 = 8;
/// An answer slower than this shrinks the batch size, a faster one grows it.
pub const BATCH_LATENCY_TARGET: Duration = Duration::from_secs(2);
/// Requests in flight to one peer (design.md §3); the adaptive window starts here.
pub const REQUESTS_PER_PEER_MAX: usize = 4;
/// Requests in flight overall (design.md §3).
pub const REQUESTS_MAX: usize = 64;
/// Bytes of fetched blocks not yet imported (design.md §3: 256 MiB).
pub const SYNC_BUFFER_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Suitable peers to wait for before starting, so one liar cannot pick our target.
pub const SYNC_PEERS_MIN: usize = 3;
/// After waiting this long for [`SYNC_PEERS_MIN`] peers, one is enough: a
/// small network must still sync.
pub const SYNC_PEERS_WAIT: Duration = Duration::from_secs(30);
/// Progress is reported at least this often while syncing.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Failed downloads or processings of one batch before the round is given
/// up (Lighthouse: 5 downloads, 3 processings).
pub const BATCH_ATTEMPTS_MAX: u32 = 5;
/// After a round is given up, the next starts no sooner than this.
pub const ROUND_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Our own deadline for a request, a backstop behind the req/resp layer's
/// 10 s response timeout, which normally reports first.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Batches verifying at once: enough to keep a worker pool of a few cores busy.
pub const VERIFICATIONS_MAX: usize = 4;
/// Batches existing at once (queued, in flight or buffered): twice the
/// request limit, so buffered batches never block new requests.
pub const BATCHES_MAX: usize = 2 * REQUESTS_MAX;
/// Peers whose Status we keep: as many as we may be connected to.
pub const SYNC_PEERS_MAX: usize = crate::limits::PEERS_MAX;
/// Imported batches remembered to re-check when a later batch does not link.
pub const HISTORY_BATCHES_MAX: usize = 8;
/// Blocks that failed verification, remembered (32 bytes each) to refuse
/// them before verifying again.
pub const INVALID_BLOCKS_MAX: usize = 1_024;
/// Queued outputs (penalties, progress); the caller drains after every input.
pub const OUTPUTS_MAX: usize = 256;
/// The initial guess of encoded bytes per requested slot, before any answer
/// was measured; the request reserve is twice the estimate.
pub const SLOT_BYTES_ESTIMATE_INITIAL: usize = 16 * 1024;
/// No claim or block beyond this slot is believed, even before the caller
/// tells the clock: far beyond any real chain (at one slot per millisecond,
/// 292 million years), and far enough below `u64::MAX` that no range near it
/// can overflow.
pub const SLOT_MAX: u64 = u64::MAX / 2;
/// Peers whose claims must agree before a head is believed without proof:
/// a head is a target when this many peers reach it (or one that proved
/// itself claims it). One peer's word alone is tried only when it is the
/// only peer we hear, after [`SYNC_PEERS_WAIT`] (or when the operator set
/// `peers_min` to 1).
pub const CLAIM_SUPPORT_PEERS_MIN: usize = 2;
/// A peer whose own answer disproved its claimed head (the batch holding that
/// slot came back without a block there) is not believed for this long,
/// whatever Status it sends meanwhile: a liar re-sending its Status every
/// minute cannot start a new round each time.
pub const CLAIM_DISPROVED_COOLDOWN: Duration = Duration::from_secs(600);
/// While a round downloads from believed peers, a proposer pauses (a block on
/// a stale head would fork); but never longer than this without an import, so
/// peers that promise blocks and deliver none cannot stop production.
pub const CATCH_UP_STALL_MAX: Duration = Duration::from_secs(10);

const _: () = assert!(BATCH_SLOTS <= BLOCKS_PER_RANGE_REQUEST_MAX);
const _: () = assert!(BATCH_SLOTS_MIN >= 1 && BATCH_SLOTS_MIN <= BATCH_SLOTS);
const _: () =
    assert!(REQUESTS_PER_PEER_MAX <= crate::reqresp::limits::REQUESTS_IN_FLIGHT_PER_PEER_MAX);
const _: () = assert!(REQUESTS_MAX <= BATCHES_MAX);
// The batch being imported and the lowest one fit together, so the lowest
// can always evict the others and sync never deadlocks on its buffer.
const _: () = assert!(2 * BATCH_SLOTS as usize * BLOCK_BYTES_MAX <= SYNC_BUFFER_BYTES_MAX);

/// The tunables of a [`RangeSync`]; [`SyncConfig::default`] uses the named constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// [`SYNC_DISTANCE_SLOTS`].
    pub sync_distance_slots: u64,
    /// [`BATCH_SLOTS`]; at most [`BLOCKS_PER_RANGE_REQUEST_MAX`].
    pub batch_slots_max: u64,
    /// [`BATCH_SLOTS_MIN`].
    pub batch_slots_min: u64,
    /// [`REQUESTS_PER_PEER_MAX`].
    pub requests_per_peer_max: usize,
    /// [`REQUESTS_MAX`].
    pub requests_max: usize,
    /// [`SYNC_BUFFER_BYTES_MAX`]; at least twice a batch of the largest blocks.
    pub buffer_bytes_max: usize,
    /// The largest block accepted, encoded ([`BLOCK_BYTES_MAX`]).
    pub block_bytes_max: usize,
    /// [`SYNC_PEERS_MIN`] (the devnet uses 1).
    pub peers_min: usize,
    /// [`SYNC_PEERS_WAIT`].
    pub peers_wait: Duration,
    /// [`PROGRESS_INTERVAL`].
    pub progress_interval: Duration,
    /// [`BATCH_ATTEMPTS_MAX`].
    pub batch_attempts_max: u32,
    /// [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// [`VERIFICATIONS_MAX`].
    pub verifications_max: usize,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            sync_distance_slots: SYNC_DISTANCE_SLOTS,
            batch_slots_max: BATCH_SLOTS,
            batch_slots_min: BATCH_SLOTS_MIN,
            requests_per_peer_max: REQUESTS_PER_PEER_MAX,
            requests_max: REQUESTS_MAX,
            buffer_bytes_max: SYNC_BUFFER_BYTES_MAX,
            block_bytes_max: BLOCK_BYTES_MAX,
            peers_min: SYNC_PEERS_MIN,
            peers_wait: SYNC_PEERS_WAIT,
            progress_interval: PROGRESS_INTERVAL,
            batch_attempts_max: BATCH_ATTEMPTS_MAX,
            request_timeout: REQUEST_TIMEOUT,
            verifications_max: VERIFICATIONS_MAX,
        }
    }
}

impl SyncConfig {
    /// Panics if the config breaks a bound (a bug of whoever built it).
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn assert_valid(&self) {
        assert!(self.batch_slots_min >= 1 && self.batch_slots_min <= self.batch_slots_max);
        assert!(self.batch_slots_max <= BLOCKS_PER_RANGE_REQUEST_MAX);
        assert!((1..=REQUESTS_PER_PEER_MAX).contains(&self.requests_per_peer_max));
        assert!((1..=REQUESTS_MAX).contains(&self.requests_max));
        assert!(self.block_bytes_max >= 1 && self.block_bytes_max <= BLOCK_BYTES_MAX);
        assert!(
            self.buffer_bytes_max >= 2 * self.batch_slots_max as usize * self.block_bytes_max,
            "the buffer must hold two full batches"
        );
        assert!(self.peers_min >= 1);
        assert!(!self.progress_interval.is_zero() && !self.request_timeout.is_zero());
        assert!(self.batch_attempts_max >= 1);
        assert!((1..=VERIFICATIONS_MAX).contains(&self.verifications_max));
    }
}

// --- Boundary types -----------------------------------------------------------

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

/// Sync progress, for the user and the metrics.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct SyncProgress {
    /// Our head's slot.
    pub head_slot: u64,
    /// The slot we are syncing to.
    pub target_slot: u64,
    /// Blocks imported per second, smoothed.
    pub blocks_per_second: f64,
    /// Time left at the current speed, if it is moving.
    pub eta: Option<Duration>,
    /// Set while the round waits for peers instead of fetching: why.
    pub waiting: Option<PeerWait>,
}

/// Why range sync is not fetching yet, for the operator: the peers it has
/// and needs, and when it starts with fewer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerWait {
    /// Peers ahead of us whose Status is usable (see the module docs).
    pub suitable: usize,
    /// Peers needed to start now.
    pub needed: usize,
    /// Time until one suitable peer is enough, if that is still ahead.
    pub fewer_in: Option<Duration>,
    /// Time until a given-up round may start again, if that is still ahead.
    pub retry_in: Option<Duration>,
}

impl std::fmt::Display for PeerWait {
    /// One line for the operator, e.g. `1 suitable peer of 3 needed,
    /// starting with 1 in 25 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.suitable == 1 { "" } else { "s" };
        write!(
            f,
            "{} suitable peer{plural} of {} needed",
            self.suitable, self.needed
        )?;
        if let Some(fewer_in) = self.fewer_in {
            write!(
                f,
                ", starting with 1 in {} s",
                fewer_in.as_secs_f64().ceil()
            )?;
        }
        if let Some(retry_in) = self.retry_in {
            write!(
                f,
                ", retrying a given-up round in {} s",
                retry_in.as_secs_f64().ceil()
            )?;
        }
        if self.suitable == 0 {
            // What "suitable" asks, so the operator can tell what is missing.
            write!(
                f,
                " (a suitable peer is ahead of us, believed, and on our finalized chain)"
            )?;
        }
        Ok(())
    }
}

/// What the caller must do; see each variant.
#[derive(Clone, PartialEq, Debug)]
pub enum SyncAction {
    /// Send BlocksByRange(`start_slot`, `count`) to `peer`, then call
    /// [`RangeSync::on_response`] with `batch` and the outcome.
    Request {
        /// The download this answers.
        batch: BatchId,
        /// Whom to ask.
        peer: PeerId,
        /// First slot.
        start_slot: u64,
        /// Slots, at most [`BLOCKS_PER_RANGE_REQUEST_MAX`].
        count: u64,
        /// Bytes set aside in the sync buffer for the answer: collect at
        /// most this much, or [`RangeSync::grow_reserve`] first.
        reserve_bytes: usize,
    },
    /// Verify `blocks` off-thread with `chain::verify_batch_locating`, then
    /// call [`RangeSync::on_verified`].
    Verify {
        /// The download the blocks came from.
        batch: BatchId,
        /// The blocks, in slot order.
        blocks: Vec<SignedBlock>,
    },
    /// Import `blocks` (verified) into the chain in order, stopping at the
    /// first refusal, then call [`RangeSync::on_imported`] and
    /// [`RangeSync::on_local_chain`]. Batches come strictly in slot order.
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
    /// Batches that passed verification.
    pub batches_verified: u64,
    /// Batches that failed verification.
    pub batches_failed: u64,
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
}

// --- Internal state -------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Idle,
    AwaitingPeers { since: Instant },
    Syncing,
}

#[derive(Clone, Debug)]
struct PeerState {
    chain: PeerChain,
    score: Score,
    /// Seeded tie-break between peers of equal rank.
    tiebreak: u64,
    in_flight: usize,
    /// The adaptive window, 1..=requests_per_peer_max.
    window: usize,
    /// Its claims failed to carry a round: ignored until it sends a new Status.
    stale: bool,
    /// It served blocks that imported: its claims are backed by proof.
    proven: bool,
    /// Its own answer disproved its claimed head: ignored until then.
    disproven_until: Instant,
}

#[derive(Clone, Debug)]
enum BatchState {
    Queued,
    Downloading {
        id: BatchId,
        peer: PeerId,
        sent_at: Instant,
        reserve_bytes: usize,
    },
    Downloaded {
        id: BatchId,
        peer: PeerId,
        blocks: Vec<SignedBlock>,
        bytes: usize,
    },
    Verifying {
        id: BatchId,
        peer: PeerId,
        blocks: Vec<SignedBlock>,
        bytes: usize,
    },
    Verified {
        id: BatchId,
        peer: PeerId,
        blocks: Vec<SignedBlock>,
        bytes: usize,
    },
    Importing {
        id: BatchId,
        peer: PeerId,
        roots: Vec<Root>,
        bytes: usize,
    },
}

impl BatchState {
    fn id(&self) -> Option<BatchId> {
        match self {
            BatchState::Queued => None,
            BatchState::Downloading { id, .. }
            | BatchState::Downloaded { id, .. }
            | BatchState::Verifying { id, .. }
            | BatchState::Verified { id, .. }
            | BatchState::Importing { id, .. } => Some(*id),
        }
    }

    fn buffered_bytes(&self) -> usize {
        match self {
            BatchState::Queued | BatchState::Downloading { .. } => 0,
            BatchState::Downloaded { bytes, .. }
            | BatchState::Verifying { bytes, .. }
            | BatchState::Verified { bytes, .. }
            | BatchState::Importing { bytes, .. } => *bytes,
        }
    }
}

/// A batch being fetched again because a later one did not link to it.
#[derive(Clone, Debug)]
struct Recheck {
    original_peer: PeerId,
    original_roots: BTreeSet<Root>,
    original_claimed_head: u64,
}

#[derive(Clone, Debug)]
struct Batch {
    start: u64,
    count: u64,
    state: BatchState,
    attempts: u32,
    /// Peers that failed this batch: asked again only if no one else can.
    excluded: BTreeSet<PeerId>,
    /// The head its current sender claimed when asked.
    claimed_head: u64,
    recheck: Option<Recheck>,
}

/// An imported batch, kept to re-check if the next one does not link.
#[derive(Clone, Debug)]
struct ImportedBatch {
    start: u64,
    count: u64,
    peer: PeerId,
    roots: Vec<Root>,
    claimed_head: u64,
    /// It was itself a second download: not re-checked again.
    rechecked: bool,
}

#[derive(Clone, Copy, Debug)]
struct LocalChain {
    head_slot: u64,
    finalized_slot: u64,
    /// Unknown until the first `on_local_chain`: peers are then compared by slot only.
    finalized_root: Option<Root>,
}

#[derive(Clone, Copy, Debug)]
struct ProgressState {
    last_at: Option<Instant>,
    blocks_since: u64,
    head_at_last: u64,
    blocks_per_second: f64,
    slots_per_second: f64,
}

/// The range sync state machine (see the module docs).
///
/// Methods: getters ([`RangeSync::counters`], [`RangeSync::target_slot`],
/// ...), `on_*` inputs, and [`RangeSync::poll`] /
/// [`RangeSync::next_deadline`]. After every input, drain `poll` until
/// `None`, then sleep until `next_deadline` and call `on_timer`.
#[derive(Debug)]
pub struct RangeSync {
    config: SyncConfig,
    rng: ChaCha20Rng,
    mode: Mode,
    local: LocalChain,
    peers: BTreeMap<PeerId, PeerState>,
    /// Batches by start slot; they never overlap.
    batches: BTreeMap<u64, Batch>,
    /// The current download id of each batch that has one → its start slot.
    ids: BTreeMap<BatchId, u64>,
    next_id: u64,
    /// The first slot no batch covers yet.
    next_start: u64,
    /// A round given up is not restarted before this.
    retry_not_before: Instant,
    target_slot: u64,
    batch_slots: u64,
    buffered_bytes: usize,
    reserved_bytes: usize,
    requests_in_flight: usize,
    /// Verify jobs handed out and not answered (even if their batch moved on).
    verifying: BTreeSet<BatchId>,
    importing: Option<BatchId>,
    /// Bytes and slots of every answer, for the per-slot size estimate.
    measured_bytes: u64,
    measured_slots: u64,
    history: VecDeque<ImportedBatch>,
    /// Fingerprints ([`fingerprint`]) of blocks that failed verification.
    invalid_blocks: BTreeSet<[u8; 32]>,
    invalid_order: VecDeque<[u8; 32]>,
    outputs: VecDeque<SyncAction>,
    progress: ProgressState,
    counters: SyncCounters,
    last_now: Instant,
    /// The highest slot the clock allows a claim or a block to have
    /// ([`RangeSync::on_clock`]); [`SLOT_MAX`] until the caller tells.
    slot_max: u64,
    /// One peer's word is tried: the wait for support ran out, or the
    /// operator asked for one peer.
    lone_claims_allowed: bool,
    /// The round is catching up from believed peers since this instant, or
    /// the last import that made progress: a proposer pauses meanwhile.
    catch_up_since: Option<Instant>,
}

impl RangeSync {
    /// An idle sync. `seed` drives the tie-breaks between equal peers.
    ///
    /// # Panics
    /// If `config` breaks a bound (see [`SyncConfig`]).
    pub fn new(config: SyncConfig, seed: [u8; 32]) -> RangeSync {
        config.assert_valid();
        let batch_slots = config.batch_slots_max;
        RangeSync {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            mode: Mode::Idle,
            local: LocalChain {
                head_slot: 0,
                finalized_slot: 0,
                finalized_root: None,
            },
            peers: BTreeMap::new(),
            batches: BTreeMap::new(),
            ids: BTreeMap::new(),
            next_id: 1,
            next_start: 1,
            retry_not_before: Instant::ZERO,
            target_slot: 0,
            batch_slots,
            buffered_bytes: 0,
            reserved_bytes: 0,
            requests_in_flight: 0,
            verifying: BTreeSet::new(),
            importing: None,
            measured_bytes: 0,
            measured_slots: 0,
            history: VecDeque::new(),
            invalid_blocks: BTreeSet::new(),
            invalid_order: VecDeque::new(),
            outputs: VecDeque::new(),
            progress: ProgressState {
                last_at: None,
                blocks_since: 0,
                head_at_last: 0,
                blocks_per_second: 0.0,
                slots_per_second: 0.0,
            },
            counters: SyncCounters::default(),
            last_now: Instant::ZERO,
            slot_max: SLOT_MAX,
            lone_claims_allowed: false,
            catch_up_since: None,
        }
    }

    // --- Getters ------------------------------------------------------------------

    /// What happened so far.
    pub fn counters(&self) -> SyncCounters {
        self.counters
    }

    /// Whether a round is under way (waiting for peers or fetching).
    pub fn is_syncing(&self) -> bool {
        self.mode != Mode::Idle
    }

    /// Whether a round is downloading from peers whose claims are believed
    /// (supported by several peers or proven by imports) and made progress
    /// within [`CATCH_UP_STALL_MAX`]: the only time a proposer should pause.
    /// Waiting for peers, or a round whose peers deliver nothing, is not.
    pub fn is_catching_up(&self, now: Instant) -> bool {
        self.mode == Mode::Syncing
            && self
                .catch_up_since
                .is_some_and(|since| now < since.saturating_add(CATCH_UP_STALL_MAX))
    }

    /// The slot the current round syncs to.
    pub fn target_slot(&self) -> u64 {
        self.target_slot
    }

    /// Bytes of blocks fetched and not yet imported.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Requests in flight overall.
    pub fn requests_in_flight(&self) -> usize {
        self.requests_in_flight
    }

    /// Requests in flight to `peer`.
    pub fn requests_in_flight_to(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |state| state.in_flight)
    }

    /// The current adaptive batch size, in slots.
    pub fn batch_slots(&self) -> u64 {
        self.batch_slots
    }

    /// Checks every bound and bookkeeping invariant; panics on a bug. Cheap
    /// enough for tests and fuzzing to call after every step.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub fn assert_invariants(&self) {
        let mut in_flight: BTreeMap<PeerId, usize> = BTreeMap::new();
        let (mut buffered, mut reserved, mut ids) = (0, 0, 0);
        let mut previous_end = 0;
        for (&start, batch) in &self.batches {
            assert_eq!(start, batch.start);
            assert!(batch.count >= 1 && batch.count <= BLOCKS_PER_RANGE_REQUEST_MAX);
            assert!(start >= previous_end, "batches overlap");
            previous_end = start.saturating_add(batch.count);
            assert!(batch.excluded.len() <= self.config.batch_attempts_max as usize + 1);
            buffered += batch.state.buffered_bytes();
            if let Some(id) = batch.state.id() {
                assert_eq!(self.ids.get(&id), Some(&start));
                ids += 1;
            }
            if let BatchState::Downloading {
                peer,
                reserve_bytes,
                ..
            } = &batch.state
            {
                *in_flight.entry(*peer).or_default() += 1;
                reserved += reserve_bytes;
            }
        }
        assert!(self.next_start >= previous_end || self.batches.is_empty());
        assert_eq!(ids, self.ids.len());
        assert_eq!(buffered, self.buffered_bytes);
        assert_eq!(reserved, self.reserved_bytes);
        assert!(self.buffered_bytes <= self.config.buffer_bytes_max);
        assert!(self.batches.len() <= BATCHES_MAX);
        assert!(self.peers.len() <= SYNC_PEERS_MAX);
        assert!(self.verifying.len() <= self.config.verifications_max);
        assert!(self.history.len() <= HISTORY_BATCHES_MAX);
        assert!(self.invalid_blocks.len() <= INVALID_BLOCKS_MAX);
        assert!(self.outputs.len() <= OUTPUTS_MAX);
        let total: usize = in_flight.values().sum();
        assert_eq!(total, self.requests_in_flight);
        assert!(self.requests_in_flight <= self.config.requests_max);
        for (peer, state) in &self.peers {
            assert_eq!(state.in_flight, in_flight.get(peer).copied().unwrap_or(0));
            assert!(state.in_flight <= self.config.requests_per_peer_max);
            assert!(state.window >= 1 && state.window <= self.config.requests_per_peer_max);
        }
        for peer in in_flight.keys() {
            assert!(self.peers.contains_key(peer), "request to a forgotten peer");
        }
        assert!(
            self.batch_slots >= self.config.batch_slots_min
                && self.batch_slots <= self.config.batch_slots_max
        );
        assert!(self.mode != Mode::Syncing || self.target_slot <= self.slot_max);
    }

    // --- Inputs -------------------------------------------------------------------

    /// A peer's Status (on connect and whenever it sends a new one), with its
    /// current score.
    pub fn on_peer_status(&mut self, now: Instant, peer: PeerId, chain: PeerChain, score: Score) {
        self.advance(now);
        if let Some(state) = self.peers.get_mut(&peer) {
            if state.chain != chain {
                state.stale = false;
            }
            state.chain = chain;
            state.score = score;
        } else {
            if self.peers.len() >= SYNC_PEERS_MAX && !self.evict_peer_for(score) {
                return;
            }
            let tiebreak = self.rng.next_u64();
            self.peers.insert(
                peer,
                PeerState {
                    chain,
                    score,
                    tiebreak,
                    in_flight: 0,
                    window: self.config.requests_per_peer_max,
                    stale: false,
                    proven: false,
                    disproven_until: Instant::ZERO,
                },
            );
        }
        self.update_mode(now);
    }

    /// A block that `peer` gossiped verified (a proposer's signature over
    /// it) at `slot`, above our head by more than the sync distance: a chain
    /// beyond our reach exists, and `peer` holds it. Its claim is then
    /// believed like one proven by imports. Without this, a follower behind
    /// a proposer whose other peers are behind too never believes the only
    /// peer ahead (a lone claim is tried only when it is the only peer we
    /// hear). A forger without a proposer key cannot make such a block; a
    /// claim it then fails to serve is disproved as any other.
    pub fn on_peer_block_verified(&mut self, now: Instant, peer: PeerId, slot: u64) {
        self.advance(now);
        let beyond_reach = slot
            > self
                .local
                .head_slot
                .saturating_add(self.config.sync_distance_slots);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if !beyond_reach || state.proven || state.disproven_until > now {
            return;
        }
        state.proven = true;
        self.update_mode(now);
    }

    /// A peer disconnected: its requests are queued again (not its fault,
    /// no attempt counted).
    pub fn on_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        if self.peers.remove(&peer).is_none() {
            return;
        }
        let lost: Vec<u64> = self
            .batches
            .values()
            .filter(
                |batch| matches!(batch.state, BatchState::Downloading { peer: p, .. } if p == peer),
            )
            .map(|batch| batch.start)
            .collect();
        for start in lost {
            self.requeue(start, None);
        }
        self.update_mode(now);
    }

    /// Our chain after an import (from sync or gossip): the chain store's
    /// head and finalized checkpoints.
    pub fn on_local_chain(&mut self, now: Instant, head: Checkpoint, finalized: Checkpoint) {
        self.advance(now);
        self.local = LocalChain {
            head_slot: head.slot,
            finalized_slot: finalized.slot,
            finalized_root: Some(finalized.root),
        };
        self.update_mode(now);
    }

    /// The clock: no claim or block may name a slot above `slot_max` (the
    /// current slot plus the caller's tolerance for skew). Claims above it
    /// are ignored; blocks above it are refused as [`PenaltyReason::FutureSlot`].
    pub fn on_clock(&mut self, now: Instant, slot_max: u64) {
        self.advance(now);
        self.slot_max = slot_max.min(SLOT_MAX);
        self.update_mode(now);
    }

    /// Room for a longer answer to `batch` than was reserved: `true` if its
    /// reserve grew to `bytes` within the buffer bound, `false` if the
    /// answer must be cut off (then report [`FetchError::TooLarge`]).
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub fn grow_reserve(&mut self, batch: BatchId, bytes: usize) -> bool {
        let Some((start, _, _)) = self.downloading(batch) else {
            return false;
        };
        let entry = self
            .batches
            .get_mut(&start)
            .expect("downloading names a batch");
        let BatchState::Downloading { reserve_bytes, .. } = &mut entry.state else {
            unreachable!("downloading checked the state")
        };
        let extra = bytes.saturating_sub(*reserve_bytes);
        let total = self
            .buffered_bytes
            .saturating_add(self.reserved_bytes)
            .saturating_add(extra);
        if total > self.config.buffer_bytes_max {
            return false;
        }
        *reserve_bytes += extra;
        self.reserved_bytes += extra;
        true
    }

    /// The answer to [`SyncAction::Request`] `batch`.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub fn on_response(
        &mut self,
        now: Instant,
        batch: BatchId,
        result: Result<Vec<SignedBlock>, FetchError>,
    ) {
        self.advance(now);
        let Some((start, peer, sent_at)) = self.downloading(batch) else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        let blocks = match result {
            Ok(blocks) => blocks,
            Err(error) => {
                self.counters.requests_failed = self.counters.requests_failed.saturating_add(1);
                self.on_request_failed(start, peer, error);
                self.update_mode(now);
                return;
            }
        };
        // Back to queued until the answer is accepted: every failure below
        // then only has to count the attempt.
        self.requeue(start, None);
        let count = self.batches[&start].count;
        if let Err(reason) = self.check_response(start, count, &blocks) {
            self.counters.responses_refused = self.counters.responses_refused.saturating_add(1);
            self.penalise(peer, reason);
            self.fail_batch(now, start, peer);
            return;
        }
        // Measure before the buffer decision, so the estimate learns even
        // from answers we cannot keep.
        let bytes: usize = blocks.iter().map(SignedBlock::encoded_len).sum();
        if self.disproves_its_head(start, count, &blocks) {
            self.counters.responses_refused = self.counters.responses_refused.saturating_add(1);
            self.penalise(peer, PenaltyReason::HeadNotServed);
            if let Some(state) = self.peers.get_mut(&peer) {
                state.proven = false;
                state.disproven_until = now.saturating_add(CLAIM_DISPROVED_COOLDOWN);
            }
            self.fail_batch(now, start, peer);
            self.update_mode(now);
            return;
        }
        self.measured_bytes = self.measured_bytes.saturating_add(bytes as u64);
        self.measured_slots = self.measured_slots.saturating_add(count);
        self.adapt_after_answer(peer, now.saturating_duration_since(sent_at));
        if !self.make_room(start, bytes) {
            // Only batches below this one are buffered: fetch it again later.
            return;
        }
        self.ids.insert(batch, start);
        let entry = self.batches.get_mut(&start).expect("checked above");
        entry.state = if blocks.is_empty() {
            // Nothing to verify: no need for a round trip to a worker.
            BatchState::Verified {
                id: batch,
                peer,
                blocks,
                bytes,
            }
        } else {
            BatchState::Downloaded {
                id: batch,
                peer,
                blocks,
                bytes,
            }
        };
        self.buffered_bytes += bytes;
        self.counters.buffered_bytes_max =
            self.counters.buffered_bytes_max.max(self.buffered_bytes);
    }

    /// The result of [`SyncAction::Verify`] `batch`: `Err` holds the
    /// positions of the invalid blocks (`chain::verify_batch_locating`).
    pub fn on_verified(&mut self, now: Instant, batch: BatchId, result: Result<(), Vec<usize>>) {
        self.advance(now);
        self.verifying.remove(&batch);
        let Some(&start) = self.ids.get(&batch) else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        let entry = self.batches.get_mut(&start).expect("ids point at batches");
        let BatchState::Verifying { .. } = entry.state else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        let BatchState::Verifying {
            id,
            peer,
            blocks,
            bytes,
        } = std::mem::replace(&mut entry.state, BatchState::Queued)
        else {
            unreachable!("matched above")
        };
        match result {
            Ok(()) => {
                self.counters.batches_verified = self.counters.batches_verified.saturating_add(1);
                entry.state = BatchState::Verified {
                    id,
                    peer,
                    blocks,
                    bytes,
                };
            }
            Err(positions) => {
                self.counters.batches_failed = self.counters.batches_failed.saturating_add(1);
                entry.state = BatchState::Verified {
                    id,
                    peer,
                    blocks: Vec::new(),
                    bytes,
                };
                // Remember the exact blocks, not their roots: a root names
                // only the header, so a peer could otherwise get a valid
                // block refused by sending it with a bad signature or body.
                for block in positions.iter().filter_map(|&index| blocks.get(index)) {
                    self.remember_invalid(fingerprint(block));
                }
                self.penalise(peer, PenaltyReason::InvalidBlock);
                self.fail_batch(now, start, peer);
            }
        }
    }

    /// The result of [`SyncAction::Import`] `batch`.
    pub fn on_imported(
        &mut self,
        now: Instant,
        batch: BatchId,
        result: Result<(), BatchImportError>,
    ) {
        self.advance(now);
        if self.importing == Some(batch) {
            self.importing = None;
        }
        let Some(&start) = self.ids.get(&batch) else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        let BatchState::Importing { peer, .. } = self.batches[&start].state else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        match result {
            Ok(()) => self.batch_imported(start),
            Err(failure) => {
                self.counters.imports_failed = self.counters.imports_failed.saturating_add(1);
                match failure.error {
                    ImportError::UnknownParent(_) => {
                        if self.recheck_previous(start) {
                            // The suspects are the batches before it: this
                            // one waits for them, its sender not blamed.
                            self.requeue(start, None);
                        } else {
                            self.fail_batch(now, start, peer);
                        }
                    }
                    ImportError::InvalidParent(_) | ImportError::KnownInvalid(_) => {
                        self.penalise(peer, PenaltyReason::InvalidAncestry);
                        self.fail_batch(now, start, peer);
                    }
                    ImportError::FutureSlot { .. } => {
                        self.penalise(peer, PenaltyReason::FutureSlot);
                        self.fail_batch(now, start, peer);
                    }
                    ImportError::SlotNotAfterParent { .. }
                    | ImportError::ConflictsWithFinalized { .. }
                    | ImportError::Full => self.fail_batch(now, start, peer),
                }
            }
        }
        self.update_mode(now);
    }

    /// Time passed: requests past their deadline fail as timeouts, a wait
    /// for peers may end.
    pub fn on_timer(&mut self, now: Instant) {
        self.advance(now);
        let expired: Vec<(BatchId, u64, PeerId)> = self
            .batches
            .values()
            .filter_map(|batch| match batch.state {
                BatchState::Downloading {
                    id, peer, sent_at, ..
                } if now >= sent_at.saturating_add(self.config.request_timeout) => {
                    Some((id, batch.start, peer))
                }
                _ => None,
            })
            .collect();
        for (id, _, _) in expired {
            // An earlier timeout may have ended the round and its batches.
            let Some((start, peer, _)) = self.downloading(id) else {
                continue;
            };
            self.counters.requests_failed = self.counters.requests_failed.saturating_add(1);
            self.on_request_failed(start, peer, FetchError::Timeout);
        }
        self.update_mode(now);
    }

    /// When [`RangeSync::on_timer`] (or `poll`, for progress) must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        let requests = self.batches.values().filter_map(|batch| match batch.state {
            BatchState::Downloading { sent_at, .. } => {
                Some(sent_at.saturating_add(self.config.request_timeout))
            }
            _ => None,
        });
        let wait = match self.mode {
            // Only instants still ahead: once the wait is over (and no
            // peer's claim is believed yet) nothing changes with time, and
            // a past deadline would wake the caller again at once, forever.
            Mode::AwaitingPeers { since } => [
                since.saturating_add(self.config.peers_wait),
                self.retry_not_before,
            ]
            .into_iter()
            .filter(|at| *at > self.last_now)
            .min(),
            _ => None,
        };
        let progress = match self.mode {
            Mode::Idle => None,
            _ => Some(self.progress.last_at.map_or(self.last_now, |at| {
                at.saturating_add(self.config.progress_interval)
            })),
        };
        requests.chain(wait).chain(progress).min()
    }

    /// The next action, or `None` when there is nothing to do now.
    pub fn poll(&mut self, now: Instant) -> Option<SyncAction> {
        self.advance(now);
        self.check_round_end();
        if let Some(action) = self.outputs.pop_front() {
            return Some(action);
        }
        if let Some(action) = self.poll_progress(now) {
            return Some(action);
        }
        if let Some(action) = self.poll_import() {
            return Some(action);
        }
        if let Some(action) = self.poll_verify() {
            return Some(action);
        }
        self.poll_request(now)
    }

    // --- Mode ---------------------------------------------------------------------

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    /// Whether `state` can serve a round from our chain: its claims are
    /// consistent and allowed by the clock, not disproven, ahead of us, and
    /// finalized on our checkpoint or further along. A finalized checkpoint
    /// ahead of ours only lets a peer serve batches (each answer is checked
    /// and can disprove it); it never ranks the peer or sets a target.
    fn is_suitable(&self, state: &PeerState) -> bool {
        let chain = &state.chain;
        let same_finality = chain.finalized_slot == self.local.finalized_slot
            && self
                .local
                .finalized_root
                .is_none_or(|root| root == chain.finalized_root);
        !state.stale
            && state.disproven_until <= self.last_now
            && chain.head_slot <= self.slot_max
            && chain.finalized_slot <= chain.head_slot
            && chain.head_slot > self.local.head_slot
            && (same_finality || chain.finalized_slot > self.local.finalized_slot)
    }

    /// The highest head any suitable peer claims: enough to start waiting
    /// for support.
    fn best_claimed_head(&self) -> Option<u64> {
        self.peers
            .values()
            .filter(|state| self.is_suitable(state))
            .map(|state| state.chain.head_slot)
            .max()
    }

    /// The target: the highest head that a proven peer claims or that
    /// [`CLAIM_SUPPORT_PEERS_MIN`] suitable peers reach; when nothing is
    /// supported, the highest claim, but only while lone claims are
    /// allowed. Never one liar's word while others disagree.
    fn best_head(&self) -> Option<u64> {
        self.supported_head().or_else(|| {
            if self.lone_claims_allowed {
                self.best_claimed_head()
            } else {
                None
            }
        })
    }

    /// The highest head backed by proof or by [`CLAIM_SUPPORT_PEERS_MIN`] peers.
    fn supported_head(&self) -> Option<u64> {
        let mut heads: Vec<(u64, bool)> = self
            .peers
            .values()
            .filter(|state| self.is_suitable(state))
            .map(|state| (state.chain.head_slot, state.proven))
            .collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        heads
            .iter()
            .enumerate()
            .find(|(index, (_, proven))| *proven || *index >= CLAIM_SUPPORT_PEERS_MIN - 1)
            .map(|(_, (head, _))| *head)
    }

    fn update_mode(&mut self, now: Instant) {
        // One peer's word is tried only when it is the only peer we hear
        // (a small network), after the wait or if the operator asked for
        // one peer; never while another peer's claim disagrees.
        let heard = self
            .peers
            .values()
            .filter(|state| state.disproven_until <= now)
            .count();
        self.lone_claims_allowed = heard <= 1
            && (self.config.peers_min <= 1
                || matches!(self.mode, Mode::AwaitingPeers { since }
                    if now >= since.saturating_add(self.config.peers_wait))
                || (self.lone_claims_allowed && self.mode == Mode::Syncing));
        let best = self.best_head();
        let claimed = self.best_claimed_head();
        let suitable = self
            .peers
            .values()
            .filter(|state| self.is_suitable(state))
            .count();
        let far_behind = claimed.is_some_and(|head| {
            head > self
                .local
                .head_slot
                .saturating_add(self.config.sync_distance_slots)
        });
        loop {
            match self.mode {
                Mode::Idle => {
                    if !far_behind {
                        return;
                    }
                    if self.batches.is_empty() {
                        // Resume where the last round stopped if our chain
                        // still reaches there, never below finality.
                        let lowest = self.local.finalized_slot.saturating_add(1);
                        let highest = self.local.head_slot.saturating_add(1).max(lowest);
                        self.next_start = self.next_start.clamp(lowest, highest);
                    }
                    self.mode = Mode::AwaitingPeers { since: now };
                }
                Mode::AwaitingPeers { since } => {
                    let waited = now >= since.saturating_add(self.config.peers_wait);
                    let needed = if waited { 1 } else { self.config.peers_min };
                    if let (true, Some(best)) = (
                        suitable >= needed && suitable > 0 && now >= self.retry_not_before,
                        best,
                    ) {
                        self.mode = Mode::Syncing;
                        self.target_slot = best;
                        // A proposer pauses while the round imports: from
                        // its start, then after each import that made
                        // progress, for at most CATCH_UP_STALL_MAX each.
                        self.catch_up_since = Some(now);
                        if self.progress.last_at.is_none() {
                            self.progress.head_at_last = self.local.head_slot;
                        }
                        continue;
                    }
                    if suitable == 0 && waited {
                        // No peer to resume with for a whole wait: let the
                        // buffered batches go (imports keep what they had).
                        self.drop_round_work();
                    }
                    if !far_behind && self.batches.is_empty() {
                        self.mode = Mode::Idle;
                        self.progress.last_at = None;
                    }
                    return;
                }
                Mode::Syncing => {
                    let Some(best) = best else {
                        // Done, or every suitable peer left: keep the
                        // batches and wait for peers to come back.
                        if self.round_has_work() {
                            self.mode = Mode::AwaitingPeers { since: now };
                            self.catch_up_since = None;
                        }
                        return;
                    };
                    self.target_slot = best;
                    self.drop_batches_above_target();
                    return;
                }
            }
        }
    }

    /// Whether the round still has slots to fetch or batches to import.
    fn round_has_work(&self) -> bool {
        !self.batches.is_empty() || self.next_start <= self.target_slot
    }

    /// Queued batches above the target (its claimant left or went stale)
    /// would wait for a peer forever: forget them.
    fn drop_batches_above_target(&mut self) {
        while let Some((&start, batch)) = self.batches.last_key_value() {
            if start <= self.target_slot || !matches!(batch.state, BatchState::Queued) {
                break;
            }
            self.batches.remove(&start);
            self.next_start = start;
        }
        if self.batches.is_empty() {
            self.next_start = self.next_start.min(self.target_slot.saturating_add(1));
        }
    }

    /// Ends the round once every batch up to the target is imported. Only
    /// called from `poll`, after the caller has fed both the import result
    /// and our new head.
    fn check_round_end(&mut self) {
        if self.mode != Mode::Syncing || self.round_has_work() {
            return;
        }
        let reach = self
            .local
            .head_slot
            .saturating_add(self.config.sync_distance_slots);
        let best = self.best_claimed_head();
        if best.is_some_and(|head| head > self.local.head_slot) {
            // Empty answers at the end of the round may have hidden the
            // rest: fetch them once more from other peers first.
            let next_start = self.next_start;
            let tail_empty = self
                .history
                .back()
                .is_some_and(|last| last.roots.is_empty() && !last.rechecked);
            if tail_empty && self.recheck_previous(next_start) {
                return;
            }
        }
        if best.is_some_and(|head| head > reach) {
            // The peers claiming more did not deliver it: ignore their
            // claims until they send a new Status.
            for state in self.peers.values_mut() {
                if state.chain.head_slot > reach {
                    state.stale = true;
                }
            }
        }
        self.finish_round();
    }

    fn finish_round(&mut self) {
        self.mode = Mode::Idle;
        self.catch_up_since = None;
        self.progress.last_at = None;
        self.history.clear();
        self.push_output(SyncAction::Synced {
            head_slot: self.local.head_slot,
        });
    }

    /// A batch failed too often: drop every batch not being imported and start over.
    ///
    /// The peers that failed it are not shut out: a timeout or a batch that
    /// did not link blames an honest peer as easily as a liar, and shutting
    /// out every peer would stall sync until their next Status. The next
    /// round waits [`ROUND_RETRY_DELAY`] instead, so a batch nobody can
    /// serve costs a few requests per delay, not a busy loop.
    fn abandon_round(&mut self, now: Instant) {
        self.counters.rounds_abandoned = self.counters.rounds_abandoned.saturating_add(1);
        self.drop_round_work();
        self.retry_not_before = now.saturating_add(ROUND_RETRY_DELAY);
        self.mode = Mode::AwaitingPeers { since: now };
        self.catch_up_since = None;
    }

    /// Drops every batch but the one being imported; the next round starts
    /// above it or above finality.
    fn drop_round_work(&mut self) {
        let starts: Vec<u64> = self.batches.keys().copied().collect();
        let mut kept_end = self.local.finalized_slot.saturating_add(1);
        for start in starts {
            if matches!(self.batches[&start].state, BatchState::Importing { .. }) {
                kept_end = kept_end.max(start.saturating_add(self.batches[&start].count));
                continue;
            }
            self.requeue(start, None);
            self.batches.remove(&start);
        }
        self.history.clear();
        self.next_start = kept_end;
    }

    // --- Outputs ------------------------------------------------------------------

    fn push_output(&mut self, action: SyncAction) {
        if self.outputs.len() >= OUTPUTS_MAX {
            self.counters.outputs_dropped = self.counters.outputs_dropped.saturating_add(1);
            return;
        }
        self.outputs.push_back(action);
    }

    fn penalise(&mut self, peer: PeerId, reason: PenaltyReason) {
        self.counters.penalties = self.counters.penalties.saturating_add(1);
        self.push_output(SyncAction::Penalise { peer, reason });
    }

    fn poll_progress(&mut self, now: Instant) -> Option<SyncAction> {
        if self.mode == Mode::Idle {
            return None;
        }
        let Some(last_at) = self.progress.last_at else {
            self.progress.last_at = Some(now);
            self.progress.head_at_last = self.local.head_slot;
            self.progress.blocks_since = 0;
            return Some(self.progress_report());
        };
        let elapsed = now.saturating_duration_since(last_at);
        if elapsed < self.config.progress_interval {
            return None;
        }
        let seconds = elapsed.as_secs_f64();
        let blocks_rate = self.progress.blocks_since as f64 / seconds;
        let slots_rate = self
            .local
            .head_slot
            .saturating_sub(self.progress.head_at_last) as f64
            / seconds;
        // Smooth over two intervals: steady enough to read, quick to follow.
        self.progress.blocks_per_second = (self.progress.blocks_per_second + blocks_rate) / 2.0;
        self.progress.slots_per_second = (self.progress.slots_per_second + slots_rate) / 2.0;
        self.progress.last_at = Some(now);
        self.progress.head_at_last = self.local.head_slot;
        self.progress.blocks_since = 0;
        Some(self.progress_report())
    }

    fn progress_report(&self) -> SyncAction {
        let remaining = self.target_slot.saturating_sub(self.local.head_slot);
        let eta = (self.progress.slots_per_second > 0.0).then(|| {
            Duration::from_secs_f64((remaining as f64 / self.progress.slots_per_second).min(1e9))
        });
        SyncAction::Progress(SyncProgress {
            head_slot: self.local.head_slot,
            target_slot: self.target_slot,
            blocks_per_second: self.progress.blocks_per_second,
            eta,
            waiting: self.peer_wait(),
        })
    }

    /// Why the round waits, while it does.
    fn peer_wait(&self) -> Option<PeerWait> {
        let Mode::AwaitingPeers { since } = self.mode else {
            return None;
        };
        let now = self.last_now;
        let wait_end = since.saturating_add(self.config.peers_wait);
        let waited = now >= wait_end;
        let ahead = |at: Instant| (at > now).then(|| at.saturating_duration_since(now));
        Some(PeerWait {
            suitable: self
                .peers
                .values()
                .filter(|state| self.is_suitable(state))
                .count(),
            needed: if waited { 1 } else { self.config.peers_min },
            fewer_in: (self.config.peers_min > 1)
                .then(|| ahead(wait_end))
                .flatten(),
            retry_in: ahead(self.retry_not_before),
        })
    }

    fn poll_import(&mut self) -> Option<SyncAction> {
        if self.importing.is_some() {
            return None;
        }
        // Strictly in order: only the lowest batch, once verified.
        let entry = self.batches.values_mut().next()?;
        let BatchState::Verified { .. } = entry.state else {
            return None;
        };
        let BatchState::Verified {
            id,
            peer,
            blocks,
            bytes,
        } = std::mem::replace(&mut entry.state, BatchState::Queued)
        else {
            unreachable!("matched above")
        };
        let roots = blocks.iter().map(SignedBlock::root).collect();
        entry.state = BatchState::Importing {
            id,
            peer,
            roots,
            bytes,
        };
        self.importing = Some(id);
        Some(SyncAction::Import { batch: id, blocks })
    }

    fn poll_verify(&mut self) -> Option<SyncAction> {
        if self.verifying.len() >= self.config.verifications_max {
            return None;
        }
        // Lowest first: it is the one the import waits for.
        let entry = self
            .batches
            .values_mut()
            .find(|batch| matches!(batch.state, BatchState::Downloaded { .. }))?;
        let BatchState::Downloaded {
            id,
            peer,
            blocks,
            bytes,
        } = std::mem::replace(&mut entry.state, BatchState::Queued)
        else {
            unreachable!("found above")
        };
        // The worker gets a copy: we keep ours to import, and the copy lives
        // only as long as the job.
        let copy = blocks.clone();
        entry.state = BatchState::Verifying {
            id,
            peer,
            blocks,
            bytes,
        };
        self.verifying.insert(id);
        Some(SyncAction::Verify {
            batch: id,
            blocks: copy,
        })
    }

    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn poll_request(&mut self, now: Instant) -> Option<SyncAction> {
        if self.mode != Mode::Syncing || self.requests_in_flight >= self.config.requests_max {
            return None;
        }
        let start = match self
            .batches
            .values()
            .find(|batch| matches!(batch.state, BatchState::Queued))
        {
            Some(batch) => batch.start,
            None => self.create_batch()?,
        };
        let (count, excluded) = {
            let batch = &self.batches[&start];
            (batch.count, batch.excluded.clone())
        };
        let reserve_bytes = self.reserve_for(count);
        if self
            .buffered_bytes
            .saturating_add(self.reserved_bytes)
            .saturating_add(reserve_bytes)
            > self.config.buffer_bytes_max
        {
            return None;
        }
        let peer = self.choose_peer(start, &excluded)?;
        let id = BatchId(self.next_id);
        self.next_id += 1;
        let state = self.peers.get_mut(&peer).expect("chosen from the table");
        state.in_flight += 1;
        let claimed_head = state.chain.head_slot;
        self.requests_in_flight += 1;
        self.reserved_bytes += reserve_bytes;
        self.counters.requests_sent = self.counters.requests_sent.saturating_add(1);
        self.counters.requests_in_flight_max = self
            .counters
            .requests_in_flight_max
            .max(self.requests_in_flight);
        self.ids.insert(id, start);
        let batch = self.batches.get_mut(&start).expect("found above");
        batch.claimed_head = claimed_head;
        batch.state = BatchState::Downloading {
            id,
            peer,
            sent_at: now,
            reserve_bytes,
        };
        Some(SyncAction::Request {
            batch: id,
            peer,
            start_slot: start,
            count,
            reserve_bytes,
        })
    }

    // --- Batches ------------------------------------------------------------------

    fn create_batch(&mut self) -> Option<u64> {
        if self.batches.len() >= BATCHES_MAX || self.next_start > self.target_slot {
            return None;
        }
        let start = self.next_start;
        // `start <= target_slot` (checked above), so this is at least 1.
        let count = self
            .batch_slots
            .min(self.target_slot.saturating_sub(start).saturating_add(1));
        self.batches.insert(
            start,
            Batch {
                start,
                count,
                state: BatchState::Queued,
                attempts: 0,
                excluded: BTreeSet::new(),
                claimed_head: 0,
                recheck: None,
            },
        );
        self.next_start = start.saturating_add(count);
        Some(start)
    }

    /// Bytes to set aside for an answer of `count` slots: twice the measured
    /// bytes per slot, never more than `count` of the largest blocks.
    fn reserve_for(&self, count: u64) -> usize {
        let per_slot = self
            .measured_bytes
            .checked_div(self.measured_slots)
            .unwrap_or(SLOT_BYTES_ESTIMATE_INITIAL as u64);
        let reserve = per_slot.saturating_mul(2).saturating_mul(count);
        reserve.min(count.saturating_mul(self.config.block_bytes_max as u64)) as usize
    }

    /// The least loaded of the best peers that can serve `start`, preferring
    /// those that have not failed this batch.
    fn choose_peer(&self, start: u64, excluded: &BTreeSet<PeerId>) -> Option<PeerId> {
        self.peers
            .iter()
            .filter(|(_, state)| {
                self.is_suitable(state)
                    && state.chain.head_slot >= start
                    && state.in_flight < state.window
            })
            .min_by_key(|(peer, state)| {
                (
                    excluded.contains(*peer),
                    state.in_flight,
                    std::cmp::Reverse(state.score),
                    // Proof, not a claimed finality, ranks equal peers.
                    !state.proven,
                    state.tiebreak,
                )
            })
            .map(|(peer, _)| *peer)
    }

    /// The start, peer and send time of the batch downloading as `id`.
    fn downloading(&self, id: BatchId) -> Option<(u64, PeerId, Instant)> {
        let start = *self.ids.get(&id)?;
        match self.batches[&start].state {
            BatchState::Downloading { peer, sent_at, .. } => Some((start, peer, sent_at)),
            _ => None,
        }
    }

    /// Releases a request's slot and reserve; the batch stays as it is.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn finish_request(&mut self, start: u64, peer: PeerId) {
        let BatchState::Downloading { reserve_bytes, .. } = self.batches[&start].state else {
            unreachable!("only downloading batches finish a request")
        };
        self.reserved_bytes -= reserve_bytes;
        self.requests_in_flight -= 1;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.in_flight -= 1;
        }
    }

    /// Puts a batch back in the queue, releasing whatever it held. With a
    /// peer, that peer failed it: asked again only if no one else can.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn requeue(&mut self, start: u64, failed_by: Option<PeerId>) {
        let state = &self.batches[&start].state;
        if let BatchState::Downloading { peer, .. } = *state {
            self.finish_request(start, peer);
        }
        let entry = self.batches.get_mut(&start).expect("caller names a batch");
        if let Some(id) = entry.state.id() {
            self.ids.remove(&id);
        }
        self.buffered_bytes -= entry.state.buffered_bytes();
        entry.state = BatchState::Queued;
        if let Some(peer) = failed_by {
            entry.excluded.insert(peer);
        }
    }

    /// A batch failed because of `peer`: queue it for another, or give up
    /// the round when it failed too often.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn fail_batch(&mut self, now: Instant, start: u64, peer: PeerId) {
        self.counters.retries = self.counters.retries.saturating_add(1);
        self.requeue(start, Some(peer));
        let entry = self.batches.get_mut(&start).expect("requeued above");
        entry.attempts += 1;
        if entry.attempts >= self.config.batch_attempts_max {
            self.abandon_round(now);
        }
    }

    fn on_request_failed(&mut self, start: u64, peer: PeerId, error: FetchError) {
        let now = self.last_now;
        match error {
            FetchError::Timeout => {
                self.batch_slots = (self.batch_slots / 2).max(self.config.batch_slots_min);
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.window = (state.window / 2).max(1);
                }
                self.fail_batch(now, start, peer);
            }
            // Not the batch's fault, and the peer is leaving anyway.
            FetchError::PeerGone => self.requeue(start, Some(peer)),
            // Our buffer could not hold the answer: learn its size (the next
            // reserve for this batch is larger, and waits for room), ask
            // again, blame nobody.
            FetchError::TooLarge { bytes, slots } => {
                self.measured_bytes = self.measured_bytes.saturating_add(bytes as u64);
                self.measured_slots = self.measured_slots.saturating_add(slots.max(1));
                self.batch_slots = (self.batch_slots / 2).max(self.config.batch_slots_min);
                self.requeue(start, None);
            }
            FetchError::ErrorCode(_) | FetchError::Malformed => self.fail_batch(now, start, peer),
        }
    }

    fn adapt_after_answer(&mut self, peer: PeerId, latency: Duration) {
        let max = self.config.requests_per_peer_max;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.window = state.window.saturating_add(1).min(max);
        }
        self.batch_slots = if latency <= BATCH_LATENCY_TARGET {
            self.batch_slots
                .saturating_add(BATCH_SLOTS_STEP)
                .min(self.config.batch_slots_max)
        } else {
            self.batch_slots
                .saturating_sub(BATCH_SLOTS_STEP)
                .max(self.config.batch_slots_min)
        };
    }

    /// The cheap checks before verification: in range, strictly increasing,
    /// linked, not too large, not known invalid.
    fn check_response(
        &self,
        start: u64,
        count: u64,
        blocks: &[SignedBlock],
    ) -> Result<(), PenaltyReason> {
        let end = start.saturating_add(count);
        let mut previous: Option<(u64, Root)> = None;
        for block in blocks {
            let slot = block.slot();
            if slot < start || slot >= end {
                return Err(PenaltyReason::OutOfRange);
            }
            if slot > self.slot_max {
                return Err(PenaltyReason::FutureSlot);
            }
            if block.encoded_len() > self.config.block_bytes_max {
                return Err(PenaltyReason::OversizedBlock);
            }
            let root = block.root();
            if let Some((previous_slot, previous_root)) = previous {
                if slot <= previous_slot {
                    return Err(PenaltyReason::OutOfOrder);
                }
                if block.parent_root() != previous_root {
                    return Err(PenaltyReason::WrongParentLinkage);
                }
            }
            if !self.invalid_blocks.is_empty() && self.invalid_blocks.contains(&fingerprint(block))
            {
                return Err(PenaltyReason::KnownInvalidBlock);
            }
            previous = Some((slot, root));
        }
        Ok(())
    }

    /// Whether the answer to the batch holding its sender's claimed head
    /// slot disproves that claim: it is empty. Its head block lies in the
    /// range if its Status was true, and an honest server cut short by its
    /// byte budget still sends the first block (or an error, not an empty
    /// answer); only a reorg onto a fork with no block in all those slots
    /// could make an honest answer empty.
    fn disproves_its_head(&self, start: u64, count: u64, blocks: &[SignedBlock]) -> bool {
        let claimed = self.batches[&start].claimed_head;
        let holds_claim = claimed >= start && claimed < start.saturating_add(count);
        holds_claim && blocks.is_empty()
    }

    /// Makes room for `bytes` of batch `start` by evicting buffered batches
    /// above it, farthest first. `false` if even that is not enough.
    fn make_room(&mut self, start: u64, bytes: usize) -> bool {
        while self.buffered_bytes.saturating_add(bytes) > self.config.buffer_bytes_max {
            let victim = self
                .batches
                .range(start.saturating_add(1)..)
                .rev()
                .find(|(_, batch)| {
                    matches!(
                        batch.state,
                        BatchState::Downloaded { .. }
                            | BatchState::Verifying { .. }
                            | BatchState::Verified { .. }
                    )
                })
                .map(|(&victim, _)| victim);
            let Some(victim) = victim else {
                return false;
            };
            self.counters.evictions = self.counters.evictions.saturating_add(1);
            self.requeue(victim, None);
        }
        true
    }

    fn remember_invalid(&mut self, fingerprint: [u8; 32]) {
        if !self.invalid_blocks.insert(fingerprint) {
            return;
        }
        self.invalid_order.push_back(fingerprint);
        if self.invalid_order.len() > INVALID_BLOCKS_MAX {
            // Cannot fail: the queue is longer than the max.
            let oldest = self.invalid_order.pop_front().expect("longer than the max");
            self.invalid_blocks.remove(&oldest);
        }
    }

    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn batch_imported(&mut self, start: u64) {
        let batch = self.batches.remove(&start).expect("caller checked");
        let BatchState::Importing {
            id,
            peer,
            roots,
            bytes,
            ..
        } = batch.state
        else {
            unreachable!("caller checked")
        };
        self.ids.remove(&id);
        self.buffered_bytes -= bytes;
        self.counters.batches_imported = self.counters.batches_imported.saturating_add(1);
        self.counters.blocks_imported = self
            .counters
            .blocks_imported
            .saturating_add(roots.len() as u64);
        self.progress.blocks_since = self
            .progress
            .blocks_since
            .saturating_add(roots.len() as u64);
        if !roots.is_empty() {
            // Its blocks extend our chain: its claims are backed by proof,
            // and the round is making progress.
            if let Some(state) = self.peers.get_mut(&peer) {
                state.proven = true;
            }
            if self.mode == Mode::Syncing {
                self.catch_up_since = Some(self.last_now);
            }
        }
        if let Some(recheck) = &batch.recheck {
            // The first answer left out blocks this one has: if its sender
            // claimed to have them, it withheld them.
            let withheld = roots
                .iter()
                .any(|root| !recheck.original_roots.contains(root));
            let claimed = recheck.original_claimed_head >= batch.start;
            if withheld && claimed && recheck.original_peer != peer {
                let reason = if recheck.original_roots.is_empty() {
                    PenaltyReason::EmptyAnswerDisproved
                } else {
                    PenaltyReason::BlocksWithheld
                };
                self.penalise(recheck.original_peer, reason);
            }
        }
        if self.history.len() >= HISTORY_BATCHES_MAX {
            self.history.pop_front();
        }
        self.history.push_back(ImportedBatch {
            start,
            count: batch.count,
            peer,
            roots,
            claimed_head: batch.claimed_head,
            rechecked: batch.recheck.is_some(),
        });
    }

    /// The batch at `start` does not link to our chain: the last non-empty
    /// batch before it and the empty ones after that may have withheld
    /// blocks. Queue them again, to be fetched from other peers.
    /// Whether any batch was queued again.
    fn recheck_previous(&mut self, start: u64) -> bool {
        let mut rechecked = false;
        let mut expected_end = start;
        while let Some(last) = self.history.back() {
            let last_end = last.start.saturating_add(last.count);
            if last_end != expected_end
                || last.rechecked
                || last_end <= self.local.finalized_slot.saturating_add(1)
                || self.batches.len() >= BATCHES_MAX
            {
                break;
            }
            let last = self.history.pop_back().expect("checked above");
            expected_end = last.start;
            let non_empty = !last.roots.is_empty();
            let mut excluded = BTreeSet::new();
            excluded.insert(last.peer);
            self.batches.insert(
                last.start,
                Batch {
                    start: last.start,
                    count: last.count,
                    state: BatchState::Queued,
                    attempts: 0,
                    excluded,
                    claimed_head: 0,
                    recheck: Some(Recheck {
                        original_peer: last.peer,
                        original_roots: last.roots.into_iter().collect(),
                        original_claimed_head: last.claimed_head,
                    }),
                },
            );
            rechecked = true;
            if non_empty {
                break;
            }
        }
        rechecked
    }

    /// Room for a new peer when the table is full: drops the lowest-ranked
    /// idle peer if it ranks below `score`.
    fn evict_peer_for(&mut self, score: Score) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(_, state)| state.in_flight == 0 && state.score < score)
            .min_by_key(|(_, state)| (state.score, state.chain.head_slot, state.tiebreak))
            .map(|(peer, _)| *peer);
        match victim {
            Some(peer) => {
                self.peers.remove(&peer);
                true
            }
            None => false,
        }
    }
}

/// Names a block's exact bytes: header, signature and body. Blocks that
/// failed verification are remembered by this, never by root.
fn fingerprint(block: &SignedBlock) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(block.header.encode());
    hasher.update(block.signature);
    hasher.update(&block.body);
    hasher.finalize().into()
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;
    use crate::chain::block::{body_root, BlockHeader};
    use crate::chain::{devnet_keys, sign_block, verify_batch_locating, ChainStore, Genesis};
    use crate::chain::{ImportOutcome, Imported};
    use blst::min_pk::SecretKey;
    use std::sync::OnceLock;

    /// Blocks on the shared test chain: one per slot from 1.
    const CHAIN_SLOTS: u64 = 200;
    const LATENCY: Duration = Duration::from_millis(300);
    const STEPS_MAX: usize = 20_000;

    struct Fixture {
        genesis: Genesis,
        keys: Vec<SecretKey>,
        blocks: Vec<SignedBlock>,
    }

    /// One signed chain shared by every test: signing costs about a millisecond a block.
    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let keys = devnet_keys(7, 2);
            let public = keys.iter().map(SecretKey::sk_to_pk).collect();
            let genesis = Genesis::new(5, 0, 1_000, public, 64).unwrap();
            let blocks = crate::chain::verify::signed_chain(
                &genesis,
                &keys,
                genesis.root(),
                1,
                CHAIN_SLOTS as usize,
                64,
            );
            Fixture {
                genesis,
                keys,
                blocks,
            }
        })
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Behaviour {
        Honest,
        /// Serves the first block of each answer with another block's signature.
        BadSignature,
        /// Leaves out the second block of each answer (breaks the links).
        WrongParent,
        /// Adds a block from past the requested range.
        OutOfRange,
        /// Answers every request with no blocks.
        Empty,
        /// Leaves out the second half of every answer.
        Withhold,
        /// Never answers.
        Silent,
    }

    fn peer_id(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    fn status(head_slot: u64) -> PeerChain {
        let fixture = fixture();
        let finalized_slot = head_slot.saturating_sub(64);
        let root_at = |slot: u64| match slot {
            0 => fixture.genesis.root(),
            slot => fixture.blocks[slot as usize - 1].root(),
        };
        PeerChain {
            head_slot,
            head_root: root_at(head_slot),
            finalized_slot,
            finalized_root: root_at(finalized_slot),
        }
    }

    enum Event {
        Response(PeerId, BatchId, Result<Vec<SignedBlock>, FetchError>),
        Verified(BatchId, Result<(), Vec<usize>>),
    }

    struct Harness {
        sync: RangeSync,
        store: ChainStore,
        behaviours: BTreeMap<PeerId, Behaviour>,
        now: Instant,
        events: Vec<(Instant, u64, Event)>,
        sequence: u64,
        verify_delay: Duration,
        latency: Duration,
        progress: Vec<SyncProgress>,
        actions: Vec<String>,
        penalties: Vec<(PeerId, PenaltyReason)>,
        requests: Vec<(Instant, PeerId, u64, u64)>,
        synced: Option<u64>,
        last_new_slot: u64,
        last_progress: Option<Instant>,
        rng: ChaCha20Rng,
    }

    impl Harness {
        fn new(config: SyncConfig, seed: u8) -> Harness {
            Harness {
                sync: RangeSync::new(config, [seed; 32]),
                store: ChainStore::new(&fixture().genesis),
                behaviours: BTreeMap::new(),
                now: Instant::from_micros(1_000_000),
                events: Vec::new(),
                sequence: 0,
                verify_delay: Duration::ZERO,
                latency: LATENCY,
                progress: Vec::new(),
                actions: Vec::new(),
                penalties: Vec::new(),
                requests: Vec::new(),
                synced: None,
                last_new_slot: 0,
                last_progress: None,
                rng: ChaCha20Rng::from_seed([seed; 32]),
            }
        }

        fn add_peer(&mut self, index: u8, behaviour: Behaviour, head_slot: u64) {
            let peer = peer_id(index);
            self.behaviours.insert(peer, behaviour);
            self.sync
                .on_peer_status(self.now, peer, status(head_slot), Score::ZERO);
            self.drain();
        }

        fn remove_peer(&mut self, index: u8) {
            let peer = peer_id(index);
            self.behaviours.remove(&peer);
            self.events
                .retain(|(_, _, event)| !matches!(event, Event::Response(p, ..) if *p == peer));
            self.sync.on_peer_gone(self.now, peer);
            self.drain();
        }

        fn schedule(&mut self, delay: Duration, event: Event) {
            self.sequence += 1;
            self.events.push((self.now + delay, self.sequence, event));
        }

        fn head(&self) -> u64 {
            self.store.head().slot
        }

        /// Answers a request as the peer's behaviour says.
        fn answer(&self, peer: PeerId, start: u64, count: u64) -> Option<Vec<SignedBlock>> {
            let chain = &fixture().blocks;
            let mut blocks: Vec<SignedBlock> = chain
                .iter()
                .filter(|block| block.slot() >= start && block.slot() < start + count)
                .cloned()
                .collect();
            match self.behaviours[&peer] {
                Behaviour::Honest => {}
                Behaviour::BadSignature => {
                    if let Some(first) = blocks.first_mut() {
                        let other = &chain[(first.slot() as usize) % chain.len()];
                        first.signature = other.signature;
                    }
                }
                Behaviour::WrongParent => {
                    if blocks.len() >= 3 {
                        blocks.remove(1);
                    }
                }
                Behaviour::OutOfRange => {
                    if let Some(next) = chain.get((start + count) as usize - 1) {
                        blocks.push(next.clone());
                    }
                }
                Behaviour::Empty => blocks.clear(),
                Behaviour::Withhold => blocks.truncate(blocks.len() / 2),
                Behaviour::Silent => return None,
            }
            Some(blocks)
        }

        /// Drains the sync's actions, carrying each out; checks the bounds after each.
        fn drain(&mut self) {
            while let Some(action) = self.sync.poll(self.now) {
                self.sync.assert_invariants();
                self.actions
                    .push(format!("{:?} {}", self.now, describe(&action)));
                match action {
                    SyncAction::Request {
                        batch,
                        peer,
                        start_slot,
                        count,
                        reserve_bytes,
                    } => {
                        assert!((1..=BLOCKS_PER_RANGE_REQUEST_MAX).contains(&count));
                        assert!(start_slot.checked_add(count).is_some());
                        assert!(reserve_bytes <= SYNC_BUFFER_BYTES_MAX);
                        assert!(self.sync.requests_in_flight_to(&peer) <= REQUESTS_PER_PEER_MAX);
                        assert!(self.sync.requests_in_flight() <= REQUESTS_MAX);
                        self.requests.push((self.now, peer, start_slot, count));
                        if let Some(blocks) = self.answer(peer, start_slot, count) {
                            let latency = self.latency;
                            self.schedule(latency, Event::Response(peer, batch, Ok(blocks)));
                        } else {
                            // The req/resp layer reports the timeout after 10 s.
                            let timeout = Duration::from_secs(10);
                            let failure = Err(FetchError::Timeout);
                            self.schedule(timeout, Event::Response(peer, batch, failure));
                        }
                    }
                    SyncAction::Verify { batch, blocks } => {
                        let result =
                            verify_batch_locating(&fixture().genesis, &blocks, &mut self.rng);
                        self.schedule(self.verify_delay, Event::Verified(batch, result));
                    }
                    SyncAction::Import { batch, blocks } => {
                        let mut result = Ok(());
                        for (index, block) in blocks.into_iter().enumerate() {
                            let slot = block.slot();
                            match self.store.import(block) {
                                Ok(ImportOutcome::Imported(Imported { .. })) => {
                                    assert!(slot > self.last_new_slot, "imports out of order");
                                    self.last_new_slot = slot;
                                }
                                Ok(ImportOutcome::AlreadyKnown { .. }) => {}
                                Err(error) => {
                                    result = Err(BatchImportError { index, error });
                                    break;
                                }
                            }
                        }
                        self.sync.on_imported(self.now, batch, result);
                        let (head, finalized) = (self.store.head(), self.store.finalized());
                        self.sync.on_local_chain(self.now, head, finalized);
                    }
                    SyncAction::Penalise { peer, reason } => self.penalties.push((peer, reason)),
                    SyncAction::Progress(progress) => {
                        assert_eq!(progress.head_slot, self.head());
                        self.last_progress = Some(self.now);
                        self.progress.push(progress);
                    }
                    SyncAction::Synced { head_slot } => {
                        self.synced = Some(head_slot);
                        self.last_progress = None;
                    }
                }
                self.sync.assert_invariants();
            }
            if self.sync.is_syncing() {
                let last = self.last_progress.expect("progress is reported at once");
                assert!(
                    self.now.saturating_duration_since(last) <= PROGRESS_INTERVAL,
                    "no progress since {last:?} at {:?}",
                    self.now
                );
            }
        }

        /// Moves to the next event or deadline and handles it.
        fn step(&mut self) -> bool {
            let next_event = self.events.iter().map(|(at, seq, _)| (*at, *seq)).min();
            let deadline = self.sync.next_deadline();
            let at = match (next_event, deadline) {
                (None, None) => return false,
                (Some((at, _)), None) => at,
                (None, Some(deadline)) => deadline,
                (Some((at, _)), Some(deadline)) => at.min(deadline),
            };
            self.now = self.now.max(at);
            if let Some((_, seq)) = next_event.filter(|(event_at, _)| *event_at <= self.now) {
                let index = self.events.iter().position(|e| e.1 == seq).unwrap();
                let (_, _, event) = self.events.remove(index);
                match event {
                    Event::Response(_, batch, result) => {
                        self.sync.on_response(self.now, batch, result)
                    }
                    Event::Verified(batch, result) => {
                        self.sync.on_verified(self.now, batch, result)
                    }
                }
            } else {
                self.sync.on_timer(self.now);
            }
            self.sync.assert_invariants();
            self.drain();
            true
        }

        fn run_until(&mut self, done: impl Fn(&Harness) -> bool) {
            for _ in 0..STEPS_MAX {
                if done(self) {
                    return;
                }
                assert!(
                    self.step(),
                    "stalled at head {} ({:?} next {} target {} batches {}): {:#?}",
                    self.head(),
                    self.sync.mode,
                    self.sync.next_start,
                    self.sync.target_slot,
                    self.sync.batches.len(),
                    &self.actions[self.actions.len().saturating_sub(12)..]
                );
            }
            panic!(
                "not done after {STEPS_MAX} steps, head {} ({:?} next {} target {}): {:#?}",
                self.head(),
                self.sync.mode,
                self.sync.next_start,
                self.sync.target_slot,
                &self.actions[self.actions.len().saturating_sub(12)..]
            );
        }
    }

    /// One line per action, blocks as their slots (a block's Debug is long).
    fn describe(action: &SyncAction) -> String {
        let slots = |blocks: &[SignedBlock]| -> String {
            match (blocks.first(), blocks.last()) {
                (Some(first), Some(last)) => {
                    format!("{} blocks {}..={}", blocks.len(), first.slot(), last.slot())
                }
                _ => "no blocks".to_string(),
            }
        };
        match action {
            SyncAction::Verify { batch, blocks } => format!("Verify {batch:?} {}", slots(blocks)),
            SyncAction::Import { batch, blocks } => format!("Import {batch:?} {}", slots(blocks)),
            other => format!("{other:?}"),
        }
    }

    fn config(peers_min: usize) -> SyncConfig {
        SyncConfig {
            peers_min,
            ..SyncConfig::default()
        }
    }

    fn penalised(harness: &Harness, index: u8) -> Vec<PenaltyReason> {
        harness
            .penalties
            .iter()
            .filter(|(peer, _)| *peer == peer_id(index))
            .map(|(_, reason)| *reason)
            .collect()
    }

    #[test]
    fn syncs_to_the_target_in_slot_order_within_bounds() {
        let mut harness = Harness::new(config(3), 1);
        for index in 1..=3 {
            harness.add_peer(index, Behaviour::Honest, CHAIN_SLOTS);
        }
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        assert_eq!(harness.synced, Some(CHAIN_SLOTS));
        assert!(harness.penalties.is_empty());
        let counters = harness.sync.counters();
        assert_eq!(counters.blocks_imported, CHAIN_SLOTS);
        assert!(
            counters.requests_in_flight_max > 1,
            "requests run in parallel"
        );
        assert!(counters.requests_in_flight_max <= 3 * REQUESTS_PER_PEER_MAX);
        // Every peer served.
        for index in 1..=3 {
            assert!(harness.requests.iter().any(|r| r.1 == peer_id(index)));
        }
        assert!(!harness.sync.is_syncing());
        assert_eq!(harness.sync.buffered_bytes(), 0);
    }

    #[test]
    fn stays_idle_within_sync_distance() {
        let mut harness = Harness::new(config(1), 2);
        harness.add_peer(1, Behaviour::Honest, SYNC_DISTANCE_SLOTS);
        assert!(!harness.sync.is_syncing());
        assert!(harness.requests.is_empty());
        // Far ahead, but finalized on another block of our finalized slot.
        let mut other = status(CHAIN_SLOTS);
        other.finalized_slot = 0;
        other.finalized_root = [9; 32];
        let (head, finalized) = (harness.store.head(), harness.store.finalized());
        harness.sync.on_local_chain(harness.now, head, finalized);
        harness
            .sync
            .on_peer_status(harness.now, peer_id(3), other, Score::ZERO);
        harness.drain();
        assert!(
            !harness.sync.is_syncing(),
            "another chain is not ours to sync"
        );
        harness.add_peer(2, Behaviour::Honest, SYNC_DISTANCE_SLOTS + 1);
        assert!(harness.sync.is_syncing());
        assert_eq!(harness.requests.len(), 1);
    }

    #[test]
    fn waits_for_peers_then_settles_for_one() {
        let mut harness = Harness::new(config(3), 3);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        assert!(harness.sync.is_syncing());
        assert!(harness.requests.is_empty());
        let started = harness.now;
        harness.run_until(|h| !h.requests.is_empty());
        assert_eq!(
            harness.requests[0].0,
            started + SYNC_PEERS_WAIT,
            "one peer is enough after the wait"
        );
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
    }

    #[test]
    fn a_waiting_round_says_how_many_peers_it_has_and_needs_and_for_how_long() {
        let mut harness = Harness::new(config(3), 3);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        let started = harness.now;
        let wait = harness.progress.last().and_then(|p| p.waiting);
        let expected = PeerWait {
            suitable: 1,
            needed: 3,
            fewer_in: Some(SYNC_PEERS_WAIT),
            retry_in: None,
        };
        assert_eq!(wait, Some(expected));
        assert_eq!(
            expected.to_string(),
            "1 suitable peer of 3 needed, starting with 1 in 30 s"
        );
        // Reported again while it waits, the time left shrinking.
        harness.run_until(|h| h.now >= started + PROGRESS_INTERVAL);
        let wait = harness.progress.last().and_then(|p| p.waiting).unwrap();
        assert_eq!((wait.suitable, wait.needed), (1, 3));
        assert!(wait.fewer_in.unwrap() <= SYNC_PEERS_WAIT - PROGRESS_INTERVAL);
        // Once it fetches, the reports say so.
        harness.run_until(|h| !h.requests.is_empty());
        harness.run_until(|h| h.progress.last().is_some_and(|p| p.waiting.is_none()));
        harness.run_until(|h| h.synced.is_some());
        let none = PeerWait {
            suitable: 0,
            needed: 1,
            fewer_in: None,
            retry_in: Some(ROUND_RETRY_DELAY),
        };
        assert!(none.to_string().starts_with(
            "0 suitable peers of 1 needed, retrying a given-up round in 5 s (a suitable peer is"
        ));
    }

    #[test]
    fn bad_signature_penalises_only_its_sender_and_is_never_imported() {
        let mut harness = Harness::new(config(2), 4);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::BadSignature, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        assert!(penalised(&harness, 1).is_empty());
        let bad = penalised(&harness, 2);
        assert!(!bad.is_empty());
        assert!(bad
            .iter()
            .all(|reason| *reason == PenaltyReason::InvalidBlock));
        assert!(harness.sync.counters().batches_failed >= 1);
        // Every stored block is the genuine one.
        for block in &fixture().blocks {
            let stored = harness.store.block_by_root(&block.root()).unwrap();
            assert_eq!(stored.signature, block.signature);
        }
    }

    #[test]
    fn broken_answers_are_refused_before_verification() {
        let mut harness = Harness::new(config(3), 5);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::WrongParent, CHAIN_SLOTS);
        harness.add_peer(3, Behaviour::OutOfRange, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        assert!(penalised(&harness, 1).is_empty());
        let wrong = penalised(&harness, 2);
        assert!(!wrong.is_empty());
        assert!(wrong
            .iter()
            .all(|r| *r == PenaltyReason::WrongParentLinkage));
        let outside = penalised(&harness, 3);
        assert!(!outside.is_empty());
        assert!(outside.iter().all(|r| *r == PenaltyReason::OutOfRange));
        let counters = harness.sync.counters();
        assert_eq!(counters.batches_failed, 0, "refused before verification");
        assert!(counters.responses_refused >= 2);
    }

    #[test]
    fn empty_answers_are_disproved_by_a_second_download() {
        let mut harness = Harness::new(config(2), 6);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::Empty, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(
            harness.head(),
            CHAIN_SLOTS,
            "the withheld blocks were found"
        );
        assert!(penalised(&harness, 1).is_empty());
        let liar = penalised(&harness, 2);
        assert!(liar.contains(&PenaltyReason::EmptyAnswerDisproved));
    }

    #[test]
    fn withheld_blocks_are_found_and_only_the_withholder_penalised() {
        let mut harness = Harness::new(config(2), 12);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::Withhold, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert!(harness.head() + SYNC_DISTANCE_SLOTS >= CHAIN_SLOTS);
        assert!(penalised(&harness, 1).is_empty());
        assert!(penalised(&harness, 2).contains(&PenaltyReason::BlocksWithheld));
        assert!(
            harness.sync.counters().imports_failed >= 1,
            "a batch did not link"
        );
    }

    #[test]
    fn requests_stay_within_the_per_peer_and_overall_caps() {
        // Small batches, so there are more batches than request slots.
        let small = SyncConfig {
            peers_min: 1,
            batch_slots_max: 8,
            batch_slots_min: 8,
            ..SyncConfig::default()
        };
        let mut one = Harness::new(small.clone(), 13);
        one.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        one.run_until(|h| h.synced.is_some());
        assert_eq!(
            one.sync.counters().requests_in_flight_max,
            REQUESTS_PER_PEER_MAX
        );

        let capped = SyncConfig {
            requests_max: 6,
            ..small
        };
        let mut three = Harness::new(capped, 14);
        for index in 1..=3 {
            three.add_peer(index, Behaviour::Honest, CHAIN_SLOTS);
        }
        three.run_until(|h| h.synced.is_some());
        assert_eq!(three.head(), CHAIN_SLOTS);
        assert_eq!(three.sync.counters().requests_in_flight_max, 6);
    }

    #[test]
    fn timeouts_move_the_batch_to_another_peer() {
        let mut harness = Harness::new(config(2), 7);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::Silent, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        assert!(
            harness.penalties.is_empty(),
            "timeouts are the req/resp layer's to score"
        );
        assert!(harness.sync.counters().requests_failed >= 1);
        // The silent peer's window shrank: after its first timeouts it is
        // asked for at most one batch at a time.
        let silent = harness
            .requests
            .iter()
            .filter(|r| r.1 == peer_id(2))
            .count();
        assert!(
            silent <= REQUESTS_PER_PEER_MAX + 4,
            "{silent} requests to a silent peer"
        );
    }

    #[test]
    fn peers_gone_keeps_progress_and_resumes() {
        // One small request at a time, so the round is still going at slot 64.
        let config = SyncConfig {
            peers_min: 1,
            batch_slots_max: 16,
            batch_slots_min: 8,
            requests_per_peer_max: 1,
            ..SyncConfig::default()
        };
        let mut harness = Harness::new(config, 8);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.run_until(|h| h.head() >= 64);
        harness.remove_peer(1);
        let head = harness.head();
        let requests = harness.requests.len();
        // Less than SYNC_PEERS_WAIT: the round waits with its batches.
        while harness.now < Instant::from_micros(20_000_000) {
            harness.step();
        }
        assert_eq!(harness.requests.len(), requests, "no peer, no request");
        assert!(harness.sync.is_syncing());
        assert!(harness.head() >= head, "nothing lost");
        let resumed_from = harness.head();
        harness.add_peer(2, Behaviour::Honest, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        assert!(
            harness.requests[requests..]
                .iter()
                .all(|r| r.2 > resumed_from),
            "imported slots are not fetched again"
        );
    }

    #[test]
    fn buffer_stays_bounded_when_verification_is_slow() {
        // Four batches of about 15 KiB, room for two.
        let block_bytes_max = 256;
        let buffer_bytes_max = 2 * BATCH_SLOTS as usize * block_bytes_max;
        let config = SyncConfig {
            peers_min: 1,
            block_bytes_max,
            buffer_bytes_max,
            verifications_max: 1,
            ..SyncConfig::default()
        };
        let mut harness = Harness::new(config, 9);
        harness.verify_delay = Duration::from_secs(2);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.add_peer(2, Behaviour::Honest, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        let counters = harness.sync.counters();
        assert!(counters.buffered_bytes_max <= buffer_bytes_max);
        assert!(
            counters.buffered_bytes_max > buffer_bytes_max / 2,
            "the buffer was used: {counters:?}"
        );
    }

    #[test]
    fn a_slow_sync_reports_its_speed_and_eta() {
        let config = SyncConfig {
            peers_min: 1,
            batch_slots_max: 16,
            requests_per_peer_max: 1,
            ..SyncConfig::default()
        };
        let mut harness = Harness::new(config, 15);
        // Slow answers: the batch size shrinks towards the minimum.
        harness.latency = Duration::from_secs(3);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        // The harness checked the spacing (at most 5 s) after every step.
        assert!(harness.progress.len() >= 5, "{:?}", harness.progress);
        assert!(harness
            .progress
            .iter()
            .all(|p| p.target_slot == CHAIN_SLOTS));
        let moving = harness
            .progress
            .iter()
            .find(|p| p.blocks_per_second > 0.0)
            .expect("a report with a speed");
        assert!(moving.eta.is_some());
        assert_eq!(harness.sync.batch_slots(), BATCH_SLOTS_MIN);
    }

    #[test]
    fn one_honest_peer_among_hostile_and_flapping_ones_is_enough() {
        let hostile = [
            Behaviour::BadSignature,
            Behaviour::WrongParent,
            Behaviour::OutOfRange,
            Behaviour::Empty,
            Behaviour::Withhold,
            Behaviour::Silent,
        ];
        for seed in 1..3u8 {
            let mut harness = Harness::new(config(3), 20 + seed);
            let mut rng = ChaCha20Rng::from_seed([seed; 32]);
            harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
            let pick = |rng: &mut ChaCha20Rng| hostile[rng.next_u32() as usize % hostile.len()];
            for index in 2..=4 {
                let behaviour = pick(&mut rng);
                harness.add_peer(index, behaviour, CHAIN_SLOTS);
            }
            for _ in 0..STEPS_MAX {
                if harness.synced.is_some() {
                    break;
                }
                // Now and then a hostile peer leaves, or comes back as another.
                if rng.next_u32() % 16 == 0 {
                    let index = 2 + (rng.next_u32() % 3) as u8;
                    if harness.behaviours.contains_key(&peer_id(index)) {
                        harness.remove_peer(index);
                    } else {
                        let behaviour = pick(&mut rng);
                        harness.add_peer(index, behaviour, CHAIN_SLOTS);
                    }
                }
                assert!(
                    harness.step(),
                    "seed {seed}: stalled at {} {:?} {:?} {:?} {:#?}",
                    harness.head(),
                    harness.sync.mode,
                    harness.sync.counters(),
                    harness.sync.peers,
                    &harness.actions[harness.actions.len().saturating_sub(20)..]
                );
            }
            // Synced, at worst within the sync distance (a withheld tail
            // is left to gossip and parent lookups).
            let synced = harness.synced.expect("synced");
            assert_eq!(synced, harness.head());
            assert!(
                synced + SYNC_DISTANCE_SLOTS >= CHAIN_SLOTS,
                "seed {seed}: {synced}"
            );
            assert!(
                penalised(&harness, 1).is_empty(),
                "seed {seed}: honest peer penalised"
            );
            for block in &fixture().blocks[..synced as usize] {
                let stored = harness.store.block_by_root(&block.root()).unwrap();
                assert_eq!(stored.signature, block.signature);
            }
        }
    }

    #[test]
    fn same_seed_same_actions() {
        let run = |seed: u8| {
            let mut harness = Harness::new(config(3), seed);
            harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
            harness.add_peer(2, Behaviour::Empty, CHAIN_SLOTS);
            harness.add_peer(3, Behaviour::WrongParent, CHAIN_SLOTS);
            harness.run_until(|h| h.synced.is_some());
            harness.actions
        };
        let first = run(10);
        assert_eq!(first, run(10));
        assert!(first.len() > 10);
    }

    #[test]
    fn a_head_nobody_can_serve_ends_the_round() {
        let mut harness = Harness::new(config(1), 11);
        harness.add_peer(1, Behaviour::Honest, 100);
        // Claims far more than the chain has.
        harness.behaviours.insert(peer_id(2), Behaviour::Honest);
        let mut claim = status(100);
        claim.head_slot = 10_000;
        harness
            .sync
            .on_peer_status(harness.now, peer_id(2), claim, Score::ZERO);
        harness.drain();
        // Peer 2's word alone is never the target while peer 1 disagrees:
        // the round syncs to the head both reach, and ends.
        harness.run_until(|h| h.head() >= 100 && !h.sync.is_syncing());
        assert!(harness.head() < 200, "fetched only what was supported");
        assert!(harness.now < Instant::from_micros(60_000_000));
        assert!(harness.sync.counters().requests_sent < 200);
        assert_eq!(harness.sync.next_deadline(), None, "nothing left to do");
    }

    // --- Lies in well-formed claims (each named after its attack) -------------

    #[test]
    fn a_status_claiming_u64_max_slots_neither_panics_nor_requests_past_the_limits() {
        // No clock given: the machine alone must survive the claim. Slots
        // past SLOT_MAX are never believed, so nothing is asked; had it
        // been, the harness asserts `start + count` does not overflow.
        let mut harness = Harness::new(config(1), 21);
        harness.behaviours.insert(peer_id(1), Behaviour::Empty);
        let claim = PeerChain {
            head_slot: u64::MAX,
            head_root: [7; 32],
            finalized_slot: u64::MAX,
            finalized_root: [8; 32],
        };
        harness
            .sync
            .on_peer_status(harness.now, peer_id(1), claim, Score::ZERO);
        harness.drain();
        for _ in 0..2_000 {
            if !harness.step() {
                break;
            }
        }
        harness.sync.assert_invariants();
        assert_eq!(harness.sync.counters().requests_sent, 0);
        assert!(!harness.sync.is_syncing());
        // Just below the bound, it is tried batch by batch without overflow,
        // and as it imports nothing it stops no proposer.
        let mut near = Harness::new(config(1), 29);
        near.behaviours.insert(peer_id(1), Behaviour::Empty);
        let claim = PeerChain {
            head_slot: SLOT_MAX,
            head_root: [7; 32],
            finalized_slot: SLOT_MAX - 1,
            finalized_root: [8; 32],
        };
        near.sync
            .on_peer_status(near.now, peer_id(1), claim, Score::ZERO);
        near.drain();
        for _ in 0..500 {
            if !near.step() {
                break;
            }
        }
        assert!(near.sync.counters().requests_sent > 0, "it was tried");
        assert!(!near.sync.is_catching_up(near.now));
    }

    #[test]
    fn claims_beyond_the_clock_are_never_a_target() {
        let mut harness = Harness::new(config(1), 22);
        harness.sync.on_clock(harness.now, 150);
        harness.add_peer(1, Behaviour::Honest, 120);
        harness.add_peer(2, Behaviour::Honest, 190); // 40 slots in the future.
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.synced, Some(120));
        assert!(harness
            .requests
            .iter()
            .all(|(_, _, start, count)| start + count <= 121));
    }

    #[test]
    fn a_liar_answering_its_own_head_empty_is_penalised_and_not_believed_again() {
        // Peer 1 claims slot 150 and answers every request empty (the
        // issue's liar, who earned rewards and restarted rounds forever).
        let mut harness = Harness::new(config(1), 23);
        harness.add_peer(1, Behaviour::Empty, 150);
        harness.run_until(|h| !h.sync.is_syncing());
        assert!(harness
            .penalties
            .contains(&(peer_id(1), PenaltyReason::HeadNotServed)));
        assert_eq!(harness.head(), 0);
        let requests = harness.sync.counters().requests_sent;
        assert!(requests <= 8, "{requests} requests to disprove it");
        // A new Status a minute later (a higher head) starts nothing.
        harness.now = harness.now + Duration::from_secs(60);
        harness
            .sync
            .on_peer_status(harness.now, peer_id(1), status(180), Score::ZERO);
        harness.drain();
        assert!(
            !harness.sync.is_syncing(),
            "believed again within the cooldown"
        );
        assert_eq!(harness.sync.counters().requests_sent, requests);
        // Its cooldown over, it is heard again.
        harness.now = harness.now + CLAIM_DISPROVED_COOLDOWN;
        harness
            .sync
            .on_peer_status(harness.now, peer_id(1), status(181), Score::ZERO);
        harness.drain();
        assert!(harness.sync.is_syncing());
    }

    #[test]
    fn one_peer_claiming_more_than_the_others_does_not_set_the_target() {
        // Two honest peers at 120; a liar claims 190 (within the clock).
        let mut harness = Harness::new(config(3), 24);
        harness.add_peer(1, Behaviour::Honest, 120);
        harness.add_peer(2, Behaviour::Honest, 120);
        harness.add_peer(3, Behaviour::Empty, 190);
        harness.run_until(|h| h.synced.is_some());
        // The honest answers run to the end of their batch (128).
        assert!(harness.head() >= 120 && harness.head() < 190);
        // Its word alone never became the target.
        assert!(harness
            .requests
            .iter()
            .all(|(_, _, start, count)| start + count <= 121));
    }

    #[test]
    fn a_proven_peer_raises_the_target_to_its_own_claim() {
        // One honest peer ahead of another: its first imported batch proves
        // it, and the round follows it to its head.
        let mut harness = Harness::new(config(2), 25);
        harness.add_peer(1, Behaviour::Honest, 100);
        harness.add_peer(2, Behaviour::Honest, CHAIN_SLOTS);
        harness.run_until(|h| h.head() == CHAIN_SLOTS && !h.sync.is_syncing());
        assert_eq!(harness.synced, Some(CHAIN_SLOTS));
    }

    #[test]
    fn a_peer_whose_gossiped_block_verified_beyond_our_reach_is_believed_alone() {
        // The proposer is the only peer ahead; the other peer is behind us.
        // Its lone claim is not believed (another peer is heard) until a
        // block it gossiped verifies far above our head.
        let mut harness = Harness::new(config(3), 29);
        harness.add_peer(2, Behaviour::Honest, 0);
        harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        let waited = harness.now + SYNC_PEERS_WAIT + Duration::from_secs(5);
        harness.run_until(|h| h.now >= waited);
        assert_eq!(harness.head(), 0, "one peer's word while another is heard");
        assert!(
            harness
                .sync
                .next_deadline()
                .is_none_or(|at| at > harness.now),
            "a wait that is over is no deadline (the caller would spin)"
        );
        // A block near our head proves nothing about a gap.
        harness
            .sync
            .on_peer_block_verified(harness.now, peer_id(1), SYNC_DISTANCE_SLOTS);
        harness.drain();
        assert!(harness.sync.requests_in_flight() == 0);
        harness
            .sync
            .on_peer_block_verified(harness.now, peer_id(1), CHAIN_SLOTS);
        harness.drain();
        harness.run_until(|h| h.head() == CHAIN_SLOTS && !h.sync.is_syncing());
        assert_eq!(harness.synced, Some(CHAIN_SLOTS));
    }

    #[test]
    fn a_proposer_pauses_only_while_the_round_makes_progress() {
        let mut harness = Harness::new(config(1), 26);
        harness.add_peer(1, Behaviour::Silent, 150);
        assert!(harness.sync.is_syncing());
        assert!(
            harness.sync.is_catching_up(harness.now),
            "a round just started"
        );
        // Nothing arrives: after the stall bound, production resumes though
        // the round still waits for its answers.
        let stalled_at = harness.now + CATCH_UP_STALL_MAX;
        harness.run_until(|h| h.now >= stalled_at);
        assert!(harness.sync.is_syncing());
        assert!(!harness.sync.is_catching_up(harness.now));
        // An honest peer's imports make it pause again, while they flow.
        let mut honest = Harness::new(config(1), 27);
        honest.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
        honest.run_until(|h| h.head() >= 64);
        assert!(honest.sync.is_catching_up(honest.now));
        honest.run_until(|h| !h.sync.is_syncing());
        assert!(!honest.sync.is_catching_up(honest.now));
    }

    #[test]
    fn answers_are_held_only_within_their_reserve_and_an_overflow_blames_nobody() {
        let small = SyncConfig {
            peers_min: 1,
            buffer_bytes_max: 2 * BATCH_SLOTS as usize * BLOCK_BYTES_MAX,
            ..SyncConfig::default()
        };
        let mut sync = RangeSync::new(small, [28; 32]);
        let now = Instant::from_micros(1_000_000);
        sync.on_peer_status(now, peer_id(1), status(150), Score::ZERO);
        let mut requests = Vec::new();
        while let Some(action) = sync.poll(now) {
            if let SyncAction::Request {
                batch,
                reserve_bytes,
                ..
            } = action
            {
                requests.push((batch, reserve_bytes));
            }
        }
        let (batch, reserve) = requests[0];
        // Every reserve fits the buffer together.
        let reserved: usize = requests.iter().map(|(_, bytes)| bytes).sum();
        assert!(reserved <= 2 * BATCH_SLOTS as usize * BLOCK_BYTES_MAX);
        assert!(sync.grow_reserve(batch, reserve + 1024), "room to grow");
        assert!(
            !sync.grow_reserve(batch, usize::MAX),
            "never past the buffer"
        );
        sync.assert_invariants();
        // The caller cuts the answer off: no penalty, the batch is asked again.
        sync.on_response(
            now,
            batch,
            Err(FetchError::TooLarge {
                bytes: reserve,
                slots: 3,
            }),
        );
        sync.assert_invariants();
        let mut penalised = false;
        let mut asked_again = false;
        while let Some(action) = sync.poll(now) {
            penalised |= matches!(action, SyncAction::Penalise { .. });
            asked_again |= matches!(action, SyncAction::Request { start_slot: 1, .. });
        }
        assert!(!penalised);
        assert!(asked_again || sync.requests_in_flight() > 0);
    }

    #[test]
    fn header_fields_of_a_forged_block_do_not_block_the_real_one() {
        // The bad copy of block 1 has its root but not its signature.
        let fixture = fixture();
        let real = fixture.blocks[0].clone();
        let forged = SignedBlock {
            signature: fixture.blocks[1].signature,
            ..real.clone()
        };
        assert_eq!(forged.root(), real.root());
        assert_ne!(fingerprint(&forged), fingerprint(&real));
        let header = BlockHeader {
            body_root: body_root(b"x"),
            ..real.header
        };
        let other = sign_block(&fixture.keys[1], 5, header, b"x".to_vec());
        assert_ne!(fingerprint(&other), fingerprint(&real));
    }
}
