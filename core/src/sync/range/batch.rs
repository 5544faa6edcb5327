//! Batch states: a batch's way from queued through downloading, verifying and
//! importing, the checks on an answer, the byte budget, and retries.

use std::collections::BTreeSet;

use super::actions::{BatchId, BatchImportError, FetchError, PenaltyReason, SyncAction};
use super::config::{
    BATCHES_MAX, BATCH_LATENCY_TARGET, BATCH_SLOTS_STEP, CLAIM_DISPROVED_COOLDOWN,
    FLIGHT_BYTES_INITIAL, FLIGHT_GROWTH_LATENCY_MAX, HISTORY_BATCHES_MAX, INVALID_BLOCKS_MAX,
    SLOT_BYTES_ESTIMATE_INITIAL,
};
use super::recheck::{ImportedBatch, Recheck};
use super::{Mode, RangeSync};
use crate::chain::{ImportError, Root, SignedBlock};
use crate::identity::PeerId;
use crate::reqresp::limits::ANSWER_BLOCK_BYTES_MAX;
use crate::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(super) enum BatchState {
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
    /// The blocks are with the verification job, which hands them back:
    /// they exist once, and still count as buffered.
    Verifying {
        id: BatchId,
        peer: PeerId,
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
    pub(super) fn id(&self) -> Option<BatchId> {
        match self {
            BatchState::Queued => None,
            BatchState::Downloading { id, .. }
            | BatchState::Downloaded { id, .. }
            | BatchState::Verifying { id, .. }
            | BatchState::Verified { id, .. }
            | BatchState::Importing { id, .. } => Some(*id),
        }
    }

    pub(super) fn buffered_bytes(&self) -> usize {
        match self {
            BatchState::Queued | BatchState::Downloading { .. } => 0,
            BatchState::Downloaded { bytes, .. }
            | BatchState::Verifying { bytes, .. }
            | BatchState::Verified { bytes, .. }
            | BatchState::Importing { bytes, .. } => *bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Batch {
    pub(super) start: u64,
    pub(super) count: u64,
    pub(super) state: BatchState,
    pub(super) attempts: u32,
    /// Peers that failed this batch: asked again only if no one else can.
    pub(super) excluded: BTreeSet<PeerId>,
    /// The head its current sender claimed when asked.
    pub(super) claimed_head: u64,
    pub(super) recheck: Option<Recheck>,
}

impl RangeSync {
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
    pub fn handle_response(
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
        let count = self.split_if_cut_off(start, count, &blocks, bytes);
        self.measured_bytes = self.measured_bytes.saturating_add(bytes as u64);
        self.measured_slots = self.measured_slots.saturating_add(count);
        self.adapt_after_answer(peer, now.saturating_duration_since(sent_at), bytes);
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

    /// The result of [`SyncAction::Verify`] `batch`, with the blocks it
    /// handed over: `Err` holds the positions of the invalid blocks
    /// (`chain::verify_batch_locating`).
    pub fn handle_verified(
        &mut self,
        now: Instant,
        batch: BatchId,
        blocks: Vec<SignedBlock>,
        result: Result<(), Vec<usize>>,
    ) {
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
        let BatchState::Verifying { id, peer, bytes } =
            std::mem::replace(&mut entry.state, BatchState::Queued)
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

    /// The verification of `batch` produced nothing (the driver failed
    /// running it): fetch it again, from anyone, blaming nobody. The attempt
    /// still counts, so a verification that always fails gives up the round
    /// after `batch_attempts_max` instead of looping.
    #[allow(clippy::arithmetic_side_effects)] // Bounded: the round is abandoned when attempts reach their maximum.
    pub fn handle_verify_failed(&mut self, now: Instant, batch: BatchId) {
        self.advance(now);
        self.verifying.remove(&batch);
        let Some(&start) = self.ids.get(&batch) else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        if !matches!(self.batches[&start].state, BatchState::Verifying { .. }) {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        }
        self.counters.verifications_failed_locally =
            self.counters.verifications_failed_locally.saturating_add(1);
        self.requeue(start, None);
        let entry = self.batches.get_mut(&start).expect("requeued above");
        entry.attempts += 1;
        if entry.attempts >= self.config.batch_attempts_max {
            self.abandon_round(now);
        }
    }

    /// The result of [`SyncAction::Import`] `batch`.
    pub fn handle_imported(
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

    pub(super) fn poll_import(&mut self) -> Option<SyncAction> {
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

    pub(super) fn poll_verify(&mut self) -> Option<SyncAction> {
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
        // The job takes the blocks and hands them back with its verdict:
        // no copy, so however many verify at once, the blocks are held once
        // and counted in the buffer.
        entry.state = BatchState::Verifying { id, peer, bytes };
        self.verifying.insert(id);
        self.counters.verifications_in_flight_max = self
            .counters
            .verifications_in_flight_max
            .max(self.verifying.len());
        Some(SyncAction::Verify { batch: id, blocks })
    }

    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub(super) fn poll_request(&mut self, now: Instant) -> Option<SyncAction> {
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
        if self.requests_in_flight > 0
            && self.reserved_bytes.saturating_add(reserve_bytes) > self.flight_bytes_cap
        {
            return None;
        }
        let peer = self.choose_peer(start, &excluded)?;
        let id = BatchId(self.next_id);
        self.next_id += 1;
        let state = self.peers.get_mut(&peer).expect("chosen from the table");
        state.in_flight += 1;
        state.asked = state.asked.saturating_add(1);
        let claimed_head = state.chain.head_slot;
        self.requests_in_flight += 1;
        self.reserved_bytes += reserve_bytes;
        self.counters.requests_sent = self.counters.requests_sent.saturating_add(1);
        self.counters.slots_requested = self.counters.slots_requested.saturating_add(count);
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

    /// The start, peer and send time of the batch downloading as `id`.
    pub(super) fn downloading(&self, id: BatchId) -> Option<(u64, PeerId, Instant)> {
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
    pub(super) fn requeue(&mut self, start: u64, failed_by: Option<PeerId>) {
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

    /// An answer of `bytes` that another block might not have fitted beside
    /// ([`ANSWER_BLOCK_BYTES_MAX`]) may be a prefix of the range: a server
    /// cuts its answer there, as the protocol allows. The batch then ends
    /// at its last block, and the slots after it become a batch of their
    /// own, queued; without this the missing tail is never asked for, the
    /// next batch does not link, and every honest server cuts the same
    /// answer again (64 blocks of 64 KiB stopped a sync at slot 63). The
    /// batch's count after the split.
    fn split_if_cut_off(
        &mut self,
        start: u64,
        count: u64,
        blocks: &[SignedBlock],
        bytes: usize,
    ) -> u64 {
        let Some(last) = blocks.last().map(SignedBlock::slot) else {
            return count;
        };
        let end = start.saturating_add(count);
        let may_be_cut = bytes.saturating_add(self.config.block_bytes_max) > ANSWER_BLOCK_BYTES_MAX;
        let entry = &self.batches[&start];
        if !may_be_cut
            || last.saturating_add(1) >= end
            || entry.recheck.is_some()
            || self.batches.len() >= BATCHES_MAX
        {
            return count;
        }
        let kept = last.saturating_add(1).saturating_sub(start);
        self.batches.get_mut(&start).expect("checked above").count = kept;
        // The rest goes in pieces of what one answer carried, and later
        // batches start no larger: a server charges a request by the slots
        // it names, so asking 60 slots to get 4 blocks, then 56 for the
        // next 4, cost eight times the quota of the blocks (a one-peer sync
        // of 1 MiB blocks ran at 16 blocks/s).
        let piece = kept.max(1);
        self.batch_slots = self.batch_slots.min(piece.max(self.config.batch_slots_min));
        let mut rest_start = last.saturating_add(1);
        while rest_start < end {
            let last_piece = self.batches.len().saturating_add(1) >= BATCHES_MAX;
            let count = if last_piece {
                end.saturating_sub(rest_start)
            } else {
                piece.min(end.saturating_sub(rest_start))
            };
            self.batches.insert(
                rest_start,
                Batch {
                    start: rest_start,
                    count,
                    state: BatchState::Queued,
                    attempts: 0,
                    excluded: BTreeSet::new(),
                    claimed_head: 0,
                    recheck: None,
                },
            );
            rest_start = rest_start.saturating_add(count);
        }
        self.counters.answers_split = self.counters.answers_split.saturating_add(1);
        kept
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

    pub(super) fn on_request_failed(&mut self, start: u64, peer: PeerId, error: FetchError) {
        let now = self.last_now;
        match error {
            FetchError::Timeout => {
                self.batch_slots = (self.batch_slots / 2).max(self.config.batch_slots_min);
                self.flight_bytes_cap = (self.flight_bytes_cap / 2).max(FLIGHT_BYTES_INITIAL);
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

    /// An answer of `bytes` grows the peer's window; the batch size grows
    /// if it came within [`BATCH_LATENCY_TARGET`] and shrinks if not; the
    /// bytes in flight grow if it came within [`FLIGHT_GROWTH_LATENCY_MAX`].
    fn adapt_after_answer(&mut self, peer: PeerId, latency: Duration, bytes: usize) {
        let max = self.config.requests_per_peer_max;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.window = state.window.saturating_add(1).min(max);
        }
        if latency <= FLIGHT_GROWTH_LATENCY_MAX {
            // Twice the bytes, as reserves count them; the buffer bounds it.
            self.flight_bytes_cap = self
                .flight_bytes_cap
                .saturating_add(bytes.saturating_mul(2))
                .min(self.config.buffer_bytes_max);
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
}

/// Names a block's exact bytes: header, signature and body. Blocks that
/// failed verification are remembered by this, never by root.
pub(super) fn fingerprint(block: &SignedBlock) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(block.header.encode());
    hasher.update(block.signature);
    hasher.update(&block.body);
    hasher.finalize().into()
}
