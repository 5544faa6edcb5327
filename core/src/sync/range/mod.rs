//! Initial (range) sync: fetch the missing slots in batches from several
//! peers, check them, have them verified off-thread, import them in order.
//!
//! # Design
//! [`RangeSync`] knows nothing of connections or wire formats: the caller
//! feeds it peers' Status ([`RangeSync::handle_peer_status`]), our own chain
//! ([`RangeSync::handle_local_chain`]), and the results of what it asked for
//! (responses, verifications, imports), then drains [`RangeSync::poll`]
//! until `None` and sleeps until [`Machine::next_deadline`]
//! (then [`Machine::handle_timeout`]). After Prysm's blocks fetcher and
//! Lighthouse's range sync:
//!
//! ```text
//!   Idle ──a suitable peer's head > ours + SYNC_DISTANCE_SLOTS──► AwaitingPeers
//!    ▲     (or > ours at all while ours is stale)                  │ SYNC_PEERS_MIN suitable peers
//!    │ Synced{head}                                                │ (1 after SYNC_PEERS_WAIT)
//!    │                                                             ▼
//!    └──── every batch up to the target imported ◄──────────── Syncing
//!                                                  no suitable peer left: back to
//!                                                  AwaitingPeers, batches kept;
//!                                                  none for SYNC_PEERS_WAIT: batches
//!                                                  dropped (imports kept), Idle
//!
//!  one batch [start, start + count):
//!   Queued ─Request─► Downloading ─handle_response: checked─► Downloaded ─Verify─► Verifying
//!     ▲  ▲                │ timeout, error, bad order/range/link: penalise, other peer    │
//!     │  └────────────────┘                                                              │
//!     │◄── handle_verified Err: penalise the sender only, remember the bad blocks ◄──────────┤
//!     │                                                                           Ok     ▼
//!     │◄── handle_imported Err(unknown parent): previous batches re-checked ◄─ Importing ◄─ Verified
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
//! above its head), allowed by the clock ([`RangeSync::handle_clock`]), not
//! disproven, ahead of us, and finalized on our finalized checkpoint (same
//! slot and root) or further along. A finalized checkpoint ahead of ours
//! only lets a peer serve batches, whose answers are checked and can
//! disprove it: it never ranks the peer or sets the target.
//! Batch size, per-peer windows and the bytes in flight over all peers
//! adapt: a fast answer grows them, a timeout halves them. The last is
//! what keeps a node behind a slow downlink syncing: its peers' answers
//! share that link, so it asks for what the link carries within the
//! response timeout ([`FLIGHT_BYTES_INITIAL`]). Blocks are checked (slots strictly increasing and
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
//! The code is split by concern: `config.rs` (the limits and
//! [`SyncConfig`]), `actions.rs` (what crosses the boundary), `round.rs`
//! (starting, ending and abandoning rounds), `peers.rs` (peer choice),
//! `batch.rs` (batch states and the checks on answers), `recheck.rs`
//! (believed claims, proofs and re-fetches), `progress.rs` (progress
//! reports); this file holds [`RangeSync`] itself, its getters, its
//! invariants, the clock and chain inputs, and `poll`.
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
//! fit evicts buffered batches above it (a batch being verified is with its
//! job, not copied, and stays counted). Verifications in flight:
//! [`VERIFICATIONS_DEFAULT`], or one per worker thread
//! ([`SyncConfig::for_workers`]), at most [`VERIFICATIONS_MAX`]. History: [`HISTORY_BATCHES_MAX`]. Invalid
//! blocks remembered: [`INVALID_BLOCKS_MAX`]. Queued outputs: [`OUTPUTS_MAX`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::chain::{Checkpoint, Root};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::reqresp::limits::BLOCKS_PER_RANGE_REQUEST_MAX;
use crate::time::Instant;

mod actions;
mod batch;
mod config;
mod peers;
mod progress;
mod recheck;
mod round;

pub use actions::{
    BatchId, BatchImportError, FetchError, PeerChain, PenaltyReason, SyncAction, SyncCounters,
};
pub use config::{
    SyncConfig, BATCHES_MAX, BATCH_ATTEMPTS_MAX, BATCH_LATENCY_TARGET, BATCH_SLOTS,
    BATCH_SLOTS_MIN, BATCH_SLOTS_STEP, CATCH_UP_STALL_MAX, CLAIM_DISPROVED_COOLDOWN,
    CLAIM_SUPPORT_PEERS_MIN, FLIGHT_BYTES_INITIAL, HISTORY_BATCHES_MAX, INVALID_BLOCKS_MAX,
    OUTPUTS_MAX, PROGRESS_INTERVAL, REQUESTS_MAX, REQUESTS_PER_PEER_MAX, REQUEST_TIMEOUT,
    ROUND_RETRY_DELAY, SLOT_BYTES_ESTIMATE_INITIAL, SLOT_MAX, SYNC_BUFFER_BYTES_MAX,
    SYNC_DISTANCE_SLOTS, SYNC_PEERS_MAX, SYNC_PEERS_MIN, SYNC_PEERS_WAIT, VERIFICATIONS_DEFAULT,
    VERIFICATIONS_MAX,
};
pub use progress::{PeerWait, SyncProgress};

use batch::{Batch, BatchState};
use peers::PeerState;
use progress::ProgressState;
use recheck::ImportedBatch;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Idle,
    AwaitingPeers { since: Instant },
    Syncing,
}

#[derive(Clone, Copy, Debug)]
struct LocalChain {
    head_slot: u64,
    finalized_slot: u64,
    /// Unknown until the first `handle_local_chain`: peers are then compared by slot only.
    finalized_root: Option<Root>,
}

/// The range sync state machine (see the module docs).
///
/// Methods: getters ([`RangeSync::counters`], [`RangeSync::target_slot`],
/// ...), `on_*` inputs, and [`RangeSync::poll`] /
/// [`Machine::next_deadline`]. After every input, drain `poll` until
/// `None`, then sleep until `next_deadline` and call `handle_timer`.
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
    /// What `reserved_bytes` may reach before a new request waits (one
    /// request always goes): see [`FLIGHT_BYTES_INITIAL`].
    flight_bytes_cap: usize,
    requests_in_flight: usize,
    /// Verify jobs handed out and not answered (even if their batch moved on).
    verifying: BTreeSet<BatchId>,
    importing: Option<BatchId>,
    /// Bytes and slots of every answer, for the per-slot size estimate.
    measured_bytes: u64,
    measured_slots: u64,
    history: VecDeque<ImportedBatch>,
    /// Fingerprints ([`fingerprint`](batch::fingerprint)) of blocks that failed verification.
    invalid_blocks: BTreeSet<[u8; 32]>,
    invalid_order: VecDeque<[u8; 32]>,
    outputs: VecDeque<SyncAction>,
    progress: ProgressState,
    counters: SyncCounters,
    last_now: Instant,
    /// The highest slot the clock allows a claim or a block to have
    /// ([`RangeSync::handle_clock`]); [`SLOT_MAX`] until the caller tells.
    slot_max: u64,
    /// One peer's word is tried: the wait for support ran out, or the
    /// operator asked for one peer.
    lone_claims_allowed: bool,
    /// The round is catching up from believed peers since this instant, or
    /// the last import that made progress: a proposer pauses meanwhile.
    catch_up_since: Option<Instant>,
    /// Our head is stale once the clock is this many slots past it; then
    /// any suitable peer ahead starts a round, however close
    /// ([`RangeSync::set_stale_head_slots`]).
    stale_head_slots: u64,
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
            flight_bytes_cap: FLIGHT_BYTES_INITIAL,
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
            stale_head_slots: u64::MAX,
        }
    }

    /// Our head counts as stale once the clock is `slots` past it: from
    /// then on a suitable peer ahead of us by any distance, not only by
    /// the sync distance, starts a round, and a proposer pauses while it
    /// catches up ([`RangeSync::is_catching_up`]). A node sets it to its
    /// finality depth: a block built on a head that old would by itself
    /// make that head final, and a node back from a crash (or from a disk
    /// that refused writes) may hold a head of its own the network never
    /// saw. Off ([`u64::MAX`]) unless set.
    pub fn set_stale_head_slots(&mut self, slots: u64) {
        self.stale_head_slots = slots;
    }

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

    /// Our chain after an import (from sync or gossip): the chain store's
    /// head and finalized checkpoints.
    pub fn handle_local_chain(&mut self, now: Instant, head: Checkpoint, finalized: Checkpoint) {
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
    pub fn handle_clock(&mut self, now: Instant, slot_max: u64) {
        self.advance(now);
        self.slot_max = slot_max.min(SLOT_MAX);
        self.update_mode(now);
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

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

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
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests;

impl Machine for RangeSync {
    /// Time passed: requests past their deadline fail as timeouts, a wait
    /// for peers may end.
    fn handle_timeout(&mut self, now: Instant) {
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

    /// When [`Machine::handle_timeout`] (or `poll`, for progress) must next be called.
    fn next_deadline(&self) -> Option<Instant> {
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
}
