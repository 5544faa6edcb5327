//! The node's sync part and its glue: `SyncPart` owns [`RangeSync`] and
//! [`Lookups`]; peers' Status drives the first, gossiped orphans the second,
//! and what they ask for becomes requests, work and imports here.
//!
//! # Design
//! ```text
//!  Status (theirs) ──► RangeSync::on_peer_status      gossiped orphan ──► Lookups::on_unknown_parent
//!  peer gone ───────► on_peer_gone (both)
//!        poll ─► Request ─► BlocksByRange (Purpose::Blocks)      poll ─► RequestRoots ─► BlocksByRoot
//!             ◄─ on_response(Ok(blocks) | Err(FetchError))            ◄─ on_response
//!        poll ─► Verify ─► Action::Work ─► WorkDone ─► on_verified     Ready ─► Work ─► import, penalise senders
//!        poll ─► Import ─► ChainStore (one Persist batch) ─► on_imported, on_local_chain
//!        poll ─► Penalise / Progress / Synced ─► score, notifications
//! ```
//! The state machines are drained after every input, like the trackers
//! in `rpc.rs`; their deadlines join `poll_timeout`.
//!
//! # Security
//! Blocks from sync are verified (one BLS batch per batch or lookup chain)
//! before import; range sync checks order, range and linkage before that,
//! and penalises exactly the sender of what fails. What a sync fault costs:
//! - Fatal (a ban): a block that fails verification (signature, proposer or
//!   body root), or one built on such a block: proven, since the bytes came
//!   from that peer;
//! - High (−10): a BlocksByRange answer out of range, out of order or not
//!   linked, a block larger than any valid block, a lookup answer that is
//!   not the block asked for;
//! - High (−10) too: a block from beyond the clock's slot;
//! - Mid (−5): an empty or short answer a second peer disproved, an empty
//!   answer for the range holding its sender's claimed head, and a Status
//!   the clock or the genesis disproves (head beyond the current slot plus
//!   `CLAIM_CLOCK_DISPARITY`, finality above the head, slot 0 off genesis;
//!   such a Status never reaches range sync).
//!   Transport faults (timeouts, error codes, undecodable chunks) are scored
//!   by the req/resp layer that saw them; a chunk that breaks its request
//!   (out of range, out of order, unlinked, a root not asked for) is refused
//!   as it arrives (High) and the rest of the answer is dropped unread.
//!   Empty block answers complete a request but earn no reward.

use log::{debug, info, warn};

use super::purpose::{AnswerFault, BlockAnswerCheck, BlockFetch, Purpose};
use super::Node;
use crate::chain::{ChainStore, ImportError, ImportOutcome, Root, SignedBlock};
use crate::identity::PeerId;
use crate::io::{Notification, RequestError};
use crate::machine::Machine;
use crate::peer::{Penalty, Report, Score};
use crate::reqresp::bodies::{BlocksByRangeRequest, BlocksByRootRequest, Body, Status};
use crate::reqresp::limits::BLOCK_BYTES_MAX;
use crate::reqresp::{ProtocolId, ResultCode};
use crate::sync::{
    BatchId, BatchImportError, FetchError, LookupAction, LookupId, LookupPenalty, Lookups,
    PeerChain, PenaltyReason, RangeSync, SyncAction, SyncConfig,
};
use crate::time::Instant;
use crate::work::Job;

/// How often at most we ask one peer for its Status because its gossiped
/// blocks show a gap we cannot fill by lookups: its Status quota is 5 per
/// 15 s, so one every 3 s stays within it and follows a fast chain.
pub const ORPHAN_STATUS_INTERVAL: crate::time::Duration = crate::time::Duration::from_secs(3);

/// Range sync and parent lookups, the two machines that fetch blocks we
/// lack. The part owns them and nothing else: our chain, the clock's slot
/// and a peer's score come in as arguments, and what the machines ask for
/// comes out of [`SyncPart::poll`] for the node to carry out (requests,
/// work, imports, reports), so no other part's state is read here.
pub(super) struct SyncPart {
    range: RangeSync,
    lookups: Lookups,
    /// The current wait for peers was logged at INFO: the next progress
    /// reports of the same wait go to DEBUG, until sync fetches again.
    wait_logged: bool,
}

/// One thing a sync machine asks the node to do.
pub(super) enum SyncStep {
    Range(SyncAction),
    Lookup(LookupAction),
}

impl SyncPart {
    /// `finality_depth_slots`: a head that many slots behind the clock is
    /// stale (see [`RangeSync::set_stale_head_slots`]).
    pub(super) fn new(config: SyncConfig, seed: [u8; 32], finality_depth_slots: u64) -> SyncPart {
        let mut range = RangeSync::new(config, seed);
        range.set_stale_head_slots(finality_depth_slots);
        SyncPart {
            range,
            lookups: Lookups::new(),
            wait_logged: false,
        }
    }

    /// Both machines, for the node's list of [`Machine`]s.
    pub(super) fn machines(&self) -> [&dyn Machine; 2] {
        [&self.range, &self.lookups]
    }

    /// Whether range sync has requests in flight to `peer` (the connection
    /// manager never trims such a peer).
    pub(super) fn is_using(&self, peer: &PeerId) -> bool {
        self.range.requests_in_flight_to(peer) > 0
    }

    /// A peer's Status, checked against the clock and genesis already.
    pub(super) fn handle_peer_status(
        &mut self,
        now: Instant,
        peer: PeerId,
        status: &Status,
        score: Score,
        slot_max: u64,
    ) {
        let chain = PeerChain {
            head_slot: status.head_slot,
            head_root: status.head_root,
            finalized_slot: status.finalized_slot,
            finalized_root: status.finalized_root,
        };
        self.range.handle_clock(now, slot_max);
        self.range.handle_peer_status(now, peer, chain, score);
    }

    pub(super) fn handle_peer_connected(&mut self, now: Instant, peer: PeerId) {
        self.lookups.handle_peer_connected(now, peer);
    }

    /// Its batches and lookups move to other peers.
    pub(super) fn handle_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.range.handle_peer_gone(now, peer);
        self.lookups.handle_peer_gone(now, peer);
    }

    /// Our chain changed: range sync measures the distance from it.
    pub(super) fn handle_local_chain(&mut self, now: Instant, chain: &ChainStore) {
        self.range
            .handle_local_chain(now, chain.head(), chain.finalized());
    }

    /// A gossiped block whose parent we lack. Returns false if no lookup
    /// could take it (all taken, or its sender's share used).
    pub(super) fn handle_orphan(
        &mut self,
        now: Instant,
        block: SignedBlock,
        from: PeerId,
        chain: &ChainStore,
    ) -> bool {
        let refused_before = self.lookups.counters().refused;
        self.lookups.handle_unknown_parent(now, block, from, chain);
        self.lookups.counters().refused == refused_before
    }

    /// `peer`'s gossiped block at `slot` verified: a sign its chain is real.
    pub(super) fn handle_peer_block_verified(&mut self, now: Instant, peer: PeerId, slot: u64) {
        self.range.handle_peer_block_verified(now, peer, slot);
    }

    /// The timers of both machines.
    pub(super) fn handle_timeout(&mut self, now: Instant, slot_max: u64) {
        self.range.handle_clock(now, slot_max);
        self.range.handle_timeout(now);
        self.lookups.handle_timeout(now);
    }

    /// The next thing either machine asks for; range sync first.
    pub(super) fn poll(&mut self, now: Instant) -> Option<SyncStep> {
        if let Some(action) = self.range.poll(now) {
            return Some(SyncStep::Range(action));
        }
        self.lookups.poll(now).map(SyncStep::Lookup)
    }

    /// The blocks a sync request fetched, or why it failed.
    pub(super) fn handle_fetch(
        &mut self,
        now: Instant,
        fetch: BlockFetch,
        result: Result<Vec<SignedBlock>, FetchError>,
        slot_max: u64,
        chain: &ChainStore,
    ) {
        self.range.handle_clock(now, slot_max);
        match fetch {
            BlockFetch::Range(batch) => self.range.handle_response(now, batch, result),
            BlockFetch::Lookup(lookup, request) => {
                self.lookups
                    .handle_response(now, lookup, request, result, chain);
            }
        }
    }

    /// A request for `batch` could not be sent.
    pub(super) fn handle_range_not_sent(&mut self, now: Instant, batch: BatchId) {
        self.range
            .handle_response(now, batch, Err(FetchError::PeerGone));
    }

    /// A request for `lookup` could not be sent.
    pub(super) fn handle_lookup_not_sent(
        &mut self,
        now: Instant,
        lookup: LookupId,
        request: u64,
        chain: &ChainStore,
    ) {
        self.lookups
            .handle_response(now, lookup, request, Err(FetchError::PeerGone), chain);
    }

    pub(super) fn handle_verified(
        &mut self,
        now: Instant,
        batch: BatchId,
        blocks: Vec<SignedBlock>,
        result: Result<(), Vec<usize>>,
    ) {
        self.range.handle_verified(now, batch, blocks, result);
    }

    pub(super) fn handle_verify_failed(&mut self, now: Instant, batch: BatchId) {
        self.range.handle_verify_failed(now, batch);
    }

    pub(super) fn handle_imported(
        &mut self,
        now: Instant,
        batch: BatchId,
        result: Result<(), BatchImportError>,
    ) {
        self.range.handle_imported(now, batch, result);
    }

    /// Lets `batch`'s answer hold `bytes` in all, if the memory bound allows.
    pub(super) fn grow_reserve(&mut self, batch: BatchId, bytes: usize) -> bool {
        self.range.grow_reserve(batch, bytes)
    }

    pub(super) fn is_syncing(&self) -> bool {
        self.range.is_syncing()
    }

    pub(super) fn range_counters(&self) -> crate::sync::SyncCounters {
        self.range.counters()
    }

    pub(super) fn lookup_counters(&self) -> crate::sync::lookup::LookupCounters {
        self.lookups.counters()
    }

    pub(super) fn is_catching_up(&self, now: Instant) -> bool {
        self.range.is_catching_up(now)
    }

    pub(super) fn lookups_pending(&self) -> usize {
        self.lookups.len()
    }
}

/// What a finished block request means to sync.
fn fetch_result(
    blocks: Vec<SignedBlock>,
    result: Result<(), RequestError>,
    invalid: Option<AnswerFault>,
) -> Result<Vec<SignedBlock>, FetchError> {
    match (result, invalid) {
        (Ok(()), None) => Ok(blocks),
        (_, Some(AnswerFault::TooLarge { bytes, slots })) => {
            Err(FetchError::TooLarge { bytes, slots })
        }
        (Ok(()), Some(AnswerFault::Broken(what))) => {
            debug!("a block answer was refused as it arrived: {what}");
            Err(FetchError::Malformed)
        }
        (Err(error), _) => Err(match error {
            RequestError::FirstChunkTimeout | RequestError::ResponseTimeout => FetchError::Timeout,
            RequestError::Refused { code, .. } => FetchError::ErrorCode(match code {
                ResultCode::Reserved(byte) => byte,
                other => other.to_byte(),
            }),
            RequestError::InvalidResponse(_) => FetchError::Malformed,
            RequestError::NotSent(_) | RequestError::Disconnected => FetchError::PeerGone,
        }),
    }
}

impl Node {
    /// A peer's Status reached us: range sync weighs it.
    pub(super) fn sync_peer_status(&mut self, now: Instant, peer: PeerId, status: &Status) {
        let score = self.peer_manager.score(now, &peer);
        let slot_max = self.chain.slot_max(now);
        self.sync
            .handle_peer_status(now, peer, status, score, slot_max);
    }

    /// A peer was admitted.
    pub(super) fn sync_peer_connected(&mut self, now: Instant, peer: PeerId) {
        self.sync.handle_peer_connected(now, peer);
    }

    /// A peer is gone: its batches and lookups move to other peers.
    pub(super) fn sync_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.sync.handle_peer_gone(now, peer);
    }

    /// Our chain changed: range sync measures the distance from it.
    pub(super) fn sync_local_chain(&mut self, now: Instant) {
        self.sync.handle_local_chain(now, self.chain.store());
    }

    /// A gossiped block whose parent we lack: look its ancestors up. If no
    /// lookup can hold it (all taken, or its sender's share used), the gap
    /// is range sync's: ask the sender for its Status
    /// ([`Node::ask_status_for_gap`]).
    pub(super) fn sync_orphan(&mut self, now: Instant, block: SignedBlock, from: PeerId) {
        if !self
            .sync
            .handle_orphan(now, block, from, self.chain.store())
        {
            debug!("{from:?}: no lookup place for its orphan");
            self.ask_status_for_gap(now, from);
        }
    }

    /// A gossiped block from `from` shows a gap in our chain: its parent is
    /// unknown and its slot (already checked against the clock) is more than
    /// the sync distance above our head. Asked before its signature check,
    /// which a verifier busy with range sync may never get to: a follower
    /// that finished a round behind a fast chain learns of the next one only
    /// from a Status (otherwise sent every few minutes).
    pub(super) fn gossip_shows_gap(&self, block: &SignedBlock) -> bool {
        let distance = self.config.sync.sync_distance_slots;
        !self.chain.store().contains(&block.parent_root())
            && block.slot() > self.chain.store().head().slot.saturating_add(distance)
    }

    /// Asks `from` for its Status, at most once per
    /// [`ORPHAN_STATUS_INTERVAL`]: range sync learns heads only from Status.
    /// A liar gains one Status request of ours per interval, whose answer
    /// is checked like any other.
    pub(super) fn ask_status_for_gap(&mut self, now: Instant, from: PeerId) {
        let Some(established) = self.conns.established_mut(&from) else {
            return;
        };
        let due = established
            .orphan_status_asked_at
            .is_none_or(|at| now >= at.saturating_add(ORPHAN_STATUS_INTERVAL));
        if due {
            established.orphan_status_asked_at = Some(now);
            self.out.counters.orphan_status_requests =
                self.out.counters.orphan_status_requests.saturating_add(1);
            debug!("{from:?}: its blocks show a gap lookups cannot fill: asking its status");
            self.request_status(now, from);
        }
    }

    /// Timers of both machines.
    pub(super) fn sync_tick(&mut self, now: Instant) {
        let slot_max = self.chain.slot_max(now);
        self.sync.handle_timeout(now, slot_max);
    }

    /// Carries out everything both machines ask for, until neither has more.
    pub(super) fn drive_sync(&mut self, now: Instant) {
        // Each action is bounded work; the machines' outputs are bounded too,
        // and answering one never makes the other produce without end.
        const ROUNDS_MAX: usize = 10_000;
        for _ in 0..ROUNDS_MAX {
            match self.sync.poll(now) {
                Some(SyncStep::Range(action)) => self.on_sync_action(now, action),
                Some(SyncStep::Lookup(action)) => self.on_lookup_action(now, action),
                None => return,
            }
        }
        warn!("sync still busy after {ROUNDS_MAX} actions; continuing at the next input");
    }

    fn on_sync_action(&mut self, now: Instant, action: SyncAction) {
        match action {
            SyncAction::Request {
                batch,
                peer,
                start_slot,
                count,
                reserve_bytes,
            } => {
                let body = BlocksByRangeRequest { start_slot, count }.encode();
                let purpose = Purpose::Blocks {
                    fetch: BlockFetch::Range(batch),
                    blocks: Vec::new(),
                    check: BlockAnswerCheck::range(start_slot, count),
                    bytes: 0,
                    budget_bytes: reserve_bytes,
                    invalid: None,
                };
                if let Err(error) =
                    self.request(now, peer, ProtocolId::BlocksByRange, body, purpose)
                {
                    debug!("{peer:?}: sync request not sent: {error}");
                    self.sync.handle_range_not_sent(now, batch);
                }
            }
            SyncAction::Verify { batch, blocks } => {
                let seed = self.job_seed();
                let job = Job::VerifyBlocks {
                    genesis: self.chain.genesis().clone(),
                    blocks,
                    seed,
                };
                self.start_work(job, super::chain::WorkPurpose::Range { batch });
            }
            SyncAction::Import { batch, blocks } => {
                let result = self
                    .import_blocks(now, blocks)
                    .map_err(|(index, error)| BatchImportError { index, error });
                self.sync.handle_imported(now, batch, result);
                self.sync_local_chain(now);
            }
            SyncAction::Penalise { peer, reason } => {
                let penalty = match reason {
                    PenaltyReason::EmptyAnswerDisproved
                    | PenaltyReason::BlocksWithheld
                    | PenaltyReason::HeadNotServed => Penalty::Mid,
                    // Proven: it sent a block whose signature or body does
                    // not verify, or one built on such a block.
                    PenaltyReason::InvalidBlock
                    | PenaltyReason::KnownInvalidBlock
                    | PenaltyReason::InvalidAncestry => Penalty::Fatal,
                    PenaltyReason::WrongParentLinkage
                    | PenaltyReason::OutOfRange
                    | PenaltyReason::OutOfOrder
                    | PenaltyReason::OversizedBlock
                    | PenaltyReason::FutureSlot => Penalty::High,
                };
                if reason == PenaltyReason::FutureSlot {
                    self.warn_claim_from_future(now, peer, "a block for sync beyond our slot");
                }
                info!("{peer:?}: sync penalty: {reason:?}");
                self.out.counters.sync_penalties =
                    self.out.counters.sync_penalties.saturating_add(1);
                self.report(now, peer, Report::Penalty(penalty));
            }
            SyncAction::Progress(progress) => {
                match progress.waiting {
                    // Reported every few seconds while it lasts: INFO once per wait.
                    Some(wait) if !self.sync.wait_logged => {
                        self.sync.wait_logged = true;
                        info!(
                            "sync at slot {} waits for peers: {wait}",
                            progress.head_slot
                        )
                    }
                    Some(wait) => debug!(
                        "sync at slot {} waits for peers: {wait}",
                        progress.head_slot
                    ),
                    None => {
                        self.sync.wait_logged = false;
                        info!(
                            "syncing: slot {} of {} at {:.0} blocks/s",
                            progress.head_slot, progress.target_slot, progress.blocks_per_second
                        )
                    }
                }
                self.out.notify(Notification::SyncProgress {
                    head_slot: progress.head_slot,
                    target_slot: progress.target_slot,
                    blocks_per_second: progress.blocks_per_second.max(0.0).round() as u64,
                    eta: progress.eta,
                    waiting: progress.waiting,
                });
            }
            SyncAction::Synced { head_slot } => {
                self.sync.wait_logged = false;
                info!("synced at slot {head_slot}");
                self.out.notify(Notification::Synced { head_slot });
            }
        }
    }

    fn on_lookup_action(&mut self, now: Instant, action: LookupAction) {
        match action {
            LookupAction::RequestRoots {
                lookup,
                peer,
                roots,
                request,
            } => {
                // Each block at most the largest valid one, one per root.
                let budget_bytes = roots.len().saturating_mul(BLOCK_BYTES_MAX);
                let check = BlockAnswerCheck::Roots(roots.clone());
                let body = BlocksByRootRequest { roots }.encode();
                let purpose = Purpose::Blocks {
                    fetch: BlockFetch::Lookup(lookup, request),
                    blocks: Vec::new(),
                    check,
                    bytes: 0,
                    budget_bytes,
                    invalid: None,
                };
                if let Err(error) = self.request(now, peer, ProtocolId::BlocksByRoot, body, purpose)
                {
                    debug!("{peer:?}: lookup request not sent: {error}");
                    self.sync
                        .handle_lookup_not_sent(now, lookup, request, self.chain.store());
                }
            }
            LookupAction::Ready {
                blocks, senders, ..
            } => {
                let seed = self.job_seed();
                let job = Job::VerifyBlocks {
                    genesis: self.chain.genesis().clone(),
                    blocks,
                    seed,
                };
                self.start_work(job, super::chain::WorkPurpose::Lookup { senders });
            }
            LookupAction::SwitchToRangeSync {
                head_slot, peers, ..
            } => {
                // Range sync starts from Status: ask these peers for theirs now.
                // Once per gossiped block beyond a gap: DEBUG.
                debug!("a gap to slot {head_slot} is too deep for lookups: asking peers' status");
                for peer in peers {
                    if self.conns.is_connected(&peer) {
                        self.request_status(now, peer);
                    }
                }
            }
            LookupAction::Penalise { peer, reason } => {
                let penalty = match reason {
                    LookupPenalty::WrongBlock | LookupPenalty::TooManyBlocks => Penalty::High,
                };
                self.out.counters.sync_penalties =
                    self.out.counters.sync_penalties.saturating_add(1);
                self.report(now, peer, Report::Penalty(penalty));
            }
            LookupAction::Dropped { lookup, reason } => {
                debug!("lookup {lookup:?} dropped: {reason:?}");
            }
        }
    }

    /// A verified range batch came back from the worker, with its blocks.
    pub(super) fn sync_batch_verified(
        &mut self,
        now: Instant,
        batch: BatchId,
        blocks: Vec<SignedBlock>,
        result: Result<(), Vec<usize>>,
    ) {
        self.sync.handle_verified(now, batch, blocks, result);
    }

    /// A verified lookup chain came back: import what verified, in order,
    /// and penalise exactly the senders of what did not.
    pub(super) fn sync_lookup_verified(
        &mut self,
        now: Instant,
        blocks: Vec<SignedBlock>,
        senders: Vec<PeerId>,
        result: Result<(), Vec<usize>>,
    ) {
        let good = match &result {
            Ok(()) => blocks.len(),
            Err(invalid) => invalid.iter().copied().min().unwrap_or(0),
        };
        if let Err(invalid) = result {
            for index in invalid {
                if let Some(&peer) = senders.get(index) {
                    info!("{peer:?}: looked-up block fails verification");
                    self.out.counters.sync_penalties =
                        self.out.counters.sync_penalties.saturating_add(1);
                    self.report(now, peer, Report::Penalty(Penalty::Fatal));
                }
            }
        }
        let mut blocks = blocks;
        blocks.truncate(good);
        if let Err((index, error)) = self.import_blocks(now, blocks) {
            debug!("looked-up block {index} not imported: {error}");
        }
        self.sync_local_chain(now);
    }

    /// Imports verified `blocks` in order, stopping at the first the chain
    /// refuses (already known is fine); persists the new ones in one batch.
    pub(super) fn import_blocks(
        &mut self,
        now: Instant,
        blocks: Vec<SignedBlock>,
    ) -> Result<(), (usize, ImportError)> {
        let mut stored: Vec<(Root, SignedBlock)> = Vec::new();
        let mut pruned = Vec::new();
        let mut outcome = Ok(());
        let slot_max = self.chain.slot_max(now);
        for (index, block) in blocks.into_iter().enumerate() {
            let (slot, root) = (block.slot(), block.root());
            if slot > slot_max {
                // Fork choice takes the highest slot: a block from the
                // future would become our head and stop our proposer.
                outcome = Err((index, ImportError::FutureSlot { slot, slot_max }));
                break;
            }
            let copy = block.clone();
            match self.chain.import(block) {
                Ok(ImportOutcome::Imported(imported)) => {
                    self.out.counters.blocks_imported =
                        self.out.counters.blocks_imported.saturating_add(1);
                    pruned.extend(imported.pruned);
                    stored.push((root, copy));
                    self.out.notify(Notification::BlockImported { slot, root });
                }
                Ok(ImportOutcome::AlreadyKnown { .. }) => {}
                Err(error) => {
                    outcome = Err((index, error));
                    break;
                }
            }
        }
        if !stored.is_empty() || !pruned.is_empty() {
            let finalized = self.chain.store().finalized();
            self.persist(stored, pruned, finalized);
        }
        outcome
    }

    /// The blocks a sync request fetched, or why it failed.
    pub(super) fn sync_fetch_done(
        &mut self,
        fetch: BlockFetch,
        blocks: Vec<SignedBlock>,
        result: Result<(), RequestError>,
        invalid: Option<AnswerFault>,
    ) {
        let now = self.last_now;
        let slot_max = self.chain.slot_max(now);
        let result = fetch_result(blocks, result, invalid);
        self.sync
            .handle_fetch(now, fetch, result, slot_max, self.chain.store());
    }
}
