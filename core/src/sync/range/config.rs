//! Range sync's limits and tunables: every named constant with its reason,
//! their compile-time relations, and [`SyncConfig`] with its defaults.

use crate::reqresp::limits::{BLOCKS_PER_RANGE_REQUEST_MAX, BLOCK_BYTES_MAX};
use crate::time::Duration;

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
/// Bytes (counted as request reserves) that may be in flight at once when a
/// round starts, and the least the adaptive cap falls to: one request's
/// worth before any answer was measured. Every answer, from every peer,
/// crosses our own downlink: requests sized per peer alone (5 peers × 4
/// requests × 64 slots of 64 KiB blocks is 80 MiB) outlast the response
/// timeout on any link under about 64 Mbit/s, and every peer is then
/// penalised for our link. The cap grows by each answer's reserve when it
/// came within `FLIGHT_GROWTH_LATENCY_MAX` (a slow start) and halves on a
/// timeout; one request is always allowed.
pub const FLIGHT_BYTES_INITIAL: usize = 2 * 1024 * 1024;
/// An answer slower than this does not grow the bytes in flight: answers
/// that share our downlink take longer the more are in flight, and at half
/// the response timeout there is still room before one times out.
pub const FLIGHT_GROWTH_LATENCY_MAX: Duration = Duration::from_secs(5);
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
/// Batches verifying at once by default: enough to keep a worker pool of a
/// few cores busy ([`SyncConfig::for_workers`] raises it to the pool's size).
pub const VERIFICATIONS_DEFAULT: usize = 4;
/// Batches verifying at once at most, whatever the worker count. Each job
/// holds its batch's blocks, which stay counted in the buffer
/// ([`SYNC_BUFFER_BYTES_MAX`]) while it runs, so this bounds ids, not bytes.
pub const VERIFICATIONS_MAX: usize = 64;
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
const _: () = assert!(
    FLIGHT_GROWTH_LATENCY_MAX.as_secs() < crate::reqresp::limits::RESPONSE_TIMEOUT.as_secs()
);
const _: () = assert!(FLIGHT_BYTES_INITIAL <= SYNC_BUFFER_BYTES_MAX);
const _: () = assert!(BATCH_SLOTS_MIN >= 1 && BATCH_SLOTS_MIN <= BATCH_SLOTS);
const _: () =
    assert!(REQUESTS_PER_PEER_MAX <= crate::reqresp::limits::REQUESTS_IN_FLIGHT_PER_PEER_MAX);
const _: () = assert!(REQUESTS_MAX <= BATCHES_MAX);
// The batch being imported and the lowest one fit together, so the lowest
// can always evict the others and sync never deadlocks on its buffer.
const _: () = assert!(2 * BATCH_SLOTS as usize * BLOCK_BYTES_MAX <= SYNC_BUFFER_BYTES_MAX);

/// The tunables of a [`RangeSync`](super::RangeSync); [`SyncConfig::default`] uses the named constants.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// [`VERIFICATIONS_DEFAULT`], at most [`VERIFICATIONS_MAX`].
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
            verifications_max: VERIFICATIONS_DEFAULT,
        }
    }
}

impl SyncConfig {
    /// As many batches verifying at once as `workers` threads verify them
    /// (never fewer than configured, at most [`VERIFICATIONS_MAX`]): a
    /// fixed four would leave the cores of a larger machine idle.
    pub fn for_workers(mut self, workers: usize) -> SyncConfig {
        self.verifications_max = self.verifications_max.max(workers.min(VERIFICATIONS_MAX));
        self
    }

    /// Panics if the config breaks a bound (a bug of whoever built it).
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub(super) fn assert_valid(&self) {
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
