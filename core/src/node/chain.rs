//! The node's chain glue: blocks in from gossip, out from production,
//! verified off the loop, imported into the fork choice, made durable, and
//! only then announced in our Status.
//!
//! # Design
//! ```text
//!  gossip "blocks" ─► decode ─► cheap checks ─► Action::Work(VerifyBlocks) ─┐
//!                     │ Reject   │ Ignore/Reject                              │
//!  slot timer ─► produce (our key) ─► sign ──────────────┐      WorkDone ◄───┘
//!                                                        ▼         │ Accept / Reject
//!                                          ChainStore::import ◄────┘ (router forwards)
//!                                                        │
//!                              Action::Persist(batch) ◄──┘──► Notification::BlockImported
//!                                                        │
//!                  Input::Persisted ─► durable: our Status may name it
//! ```
//! - Gossip validation answers the router only after the signature check,
//!   so an invalid block is never forwarded; the cheap checks (decode,
//!   proposer index, slot not in the future beyond
//!   [`CLOCK_DISPARITY`], not finalized, not known, not known invalid,
//!   parent known) come first so a flood of junk costs no BLS work.
//! - Work in flight is bounded ([`WORK_IN_FLIGHT_MAX`]); beyond it a
//!   gossiped block is ignored (a peer will offer it again, or sync finds it).
//! - Durability: each import leaves as one [`PersistBatch`]; the Status
//!   head is the fork-choice head once it is durable, else its newest
//!   durable ancestor.
//!
//! # Security
//! *Provided*: a block is imported only after its proposer, body root and
//! signature verified; a block whose check failed gets the gossip verdict
//! Reject (its sender pays score; the router's seen cache refuses the same
//! bytes again) but its root is not marked invalid, since the same header
//! with a good signature is a different, valid message; an undecodable block
//! is Reject at once.
//! *Not provided here*: fetching unknown parents and range sync (the sync
//! module's job).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use log::{debug, info, warn};
use rand_core::RngCore;

use super::Node;
use crate::chain::{BlockProducer, Checkpoint, Genesis, Root, SignedBlock};
use crate::gossip::{MessageId, Topic, Validation};
use crate::identity::PeerId;
use crate::io::Action;
use crate::reqresp::bodies::Status;
use crate::time::{Duration, Instant};
use crate::work::{Job, PersistBatch, WorkId, WorkOutput};

/// The gossip topic blocks travel on.
pub const BLOCKS_TOPIC: &str = "blocks";
/// How far ahead of our clock a gossiped block's slot may start (peers'
/// clocks differ): the Ethereum p2p spec's `MAXIMUM_GOSSIP_CLOCK_DISPARITY`.
pub const CLOCK_DISPARITY: Duration = Duration::from_millis(500);
/// How far ahead of our clock a peer's claimed head (in its Status) or a
/// block from range sync or a lookup may be. Wider than gossip's
/// [`CLOCK_DISPARITY`]: a Status is a round trip old and its sender's clock
/// may differ by a few hundred milliseconds either way, and a claim beyond
/// this is penalised, not just ignored.
pub const CLAIM_CLOCK_DISPARITY: Duration = Duration::from_secs(2);
/// Verification jobs in flight at once.
pub const WORK_IN_FLIGHT_MAX: usize = 64;
/// Persist batches handed to the driver and not yet confirmed.
pub const PERSIST_IN_FLIGHT_MAX: usize = 1_024;
/// Bytes of an application body queued for our next block.
pub const QUEUED_BODIES_MAX: usize = 4;

/// Why a job was started.
#[derive(Clone, Debug)]
pub(super) enum WorkPurpose {
    /// A gossiped block waiting for its verdict.
    Gossip { message: MessageId, from: PeerId },
    /// A range-sync batch.
    Range { batch: crate::sync::BatchId },
    /// A looked-up chain of ancestors; who sent each block.
    Lookup { senders: Vec<PeerId> },
    /// A gossiped block whose parent we lack: its own signature is checked
    /// before a lookup may hold it, so made-up orphans cost their sender a
    /// Reject instead of a lookup slot.
    Orphan { message: MessageId, from: PeerId },
}

/// Chain state beside the fork-choice store.
pub(super) struct ChainState {
    genesis: Arc<Genesis>,
    producers: Vec<BlockProducer>,
    body_bytes: usize,
    queued_bodies: VecDeque<Vec<u8>>,
    last_produced_slot: u64,
    /// Unix time (ms) at `Instant::ZERO`.
    unix_ms_at_origin: u64,
    work_next: u64,
    work: BTreeMap<WorkId, WorkPurpose>,
    persist_next: u64,
    /// Batches handed to the driver: (id, roots it stores).
    persisting: VecDeque<(u64, Vec<Root>)>,
    /// Imported blocks not yet durable.
    not_durable: BTreeSet<Root>,
    /// Imported blocks not yet handed to the driver (too many batches in flight).
    deferred: Vec<Root>,
    /// Deletions not yet handed to the driver.
    deferred_delete: Vec<Root>,
    blocks_topic: Topic,
    follow_gossip: bool,
}

impl ChainState {
    pub(super) fn new(config: &super::Config) -> ChainState {
        let genesis = config.chain.genesis.clone();
        // A future-block server (a fault for the simulator) signs only its
        // forged block: see `faults.rs`.
        let produces = config.faults.future_block_slots_ahead.is_none();
        let producers = config
            .chain
            .proposer_keys
            .iter()
            .filter(|_| produces)
            .filter_map(|key| {
                let producer = BlockProducer::new((*key.0).clone(), &genesis);
                if producer.is_none() {
                    warn!("a proposer key is not in the genesis: it will not produce");
                }
                producer
            })
            .collect();
        ChainState {
            genesis,
            producers,
            body_bytes: config.chain.body_bytes,
            queued_bodies: VecDeque::new(),
            last_produced_slot: 0,
            unix_ms_at_origin: config.unix_ms_at_origin,
            work_next: 0,
            work: BTreeMap::new(),
            persist_next: 0,
            persisting: VecDeque::new(),
            not_durable: BTreeSet::new(),
            deferred: Vec::new(),
            deferred_delete: Vec::new(),
            blocks_topic: Topic::new(BLOCKS_TOPIC).expect("a valid topic name"),
            follow_gossip: config.chain.follow_gossip,
        }
    }

    /// The highest slot a claim or a block may name at `now`: the current
    /// slot, [`CLAIM_CLOCK_DISPARITY`] ahead.
    pub(super) fn slot_max(&self, now: Instant) -> u64 {
        let disparity_ms = CLAIM_CLOCK_DISPARITY.as_millis() as u64;
        self.genesis
            .slot_at(self.unix_ms(now).saturating_add(disparity_ms))
    }

    /// Unix milliseconds at `now`.
    fn unix_ms(&self, now: Instant) -> u64 {
        self.unix_ms_at_origin.saturating_add(now.as_millis())
    }

    /// The instant `unix_ms` happens (the origin if it is before it).
    fn instant_of(&self, unix_ms: u64) -> Instant {
        let millis = unix_ms.saturating_sub(self.unix_ms_at_origin);
        Instant::from_micros(millis.saturating_mul(1_000))
    }

    pub(super) fn genesis(&self) -> &Arc<Genesis> {
        &self.genesis
    }

    pub(super) fn blocks_topic(&self) -> &Topic {
        &self.blocks_topic
    }

    pub(super) fn is_blocks_topic(&self, topic: &Topic) -> bool {
        self.follow_gossip && *topic == self.blocks_topic
    }

    /// When the next slot starts, if we produce blocks.
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.producers.is_empty() {
            return None;
        }
        let slot = self.genesis.slot_at(self.unix_ms(now));
        Some(self.instant_of(self.genesis.start_of(slot.saturating_add(1))))
    }
}

impl Node {
    /// The fork-choice store (what we serve and build on).
    pub fn chain(&self) -> &crate::chain::ChainStore {
        &self.chain
    }

    /// The Status we announce (durable head).
    pub fn status(&self) -> Status {
        self.our_status()
    }

    /// Whether range sync is under way (waiting for peers or fetching).
    pub fn is_syncing(&self) -> bool {
        self.range_sync.is_syncing()
    }

    /// Parent lookups under way (each holds gossiped orphans and their fetched ancestors).
    pub fn lookups_pending(&self) -> usize {
        self.lookups.len()
    }

    /// Work jobs handed to the driver and not yet answered (at most [`WORK_IN_FLIGHT_MAX`]).
    pub fn work_in_flight(&self) -> usize {
        self.chain_state.work.len()
    }

    /// Subscribes to the blocks topic if this node follows the chain by gossip.
    pub(super) fn start_chain(&mut self, now: Instant) {
        if self.chain_state.follow_gossip {
            let topic = self.chain_state.blocks_topic.clone();
            if let Err(error) = self.gossip.subscribe(now, topic) {
                warn!("cannot subscribe to the blocks topic: {error:?}");
            }
        }
    }

    /// Our Status: the fork-choice head once it is durable, else its newest
    /// durable ancestor; the finalized block if it is at or below that head.
    pub(super) fn our_status(&self) -> Status {
        let mut status = self.chain.status();
        if self.chain_state.not_durable.is_empty() {
            return status;
        }
        let mut head = self.chain.head();
        while self.chain_state.not_durable.contains(&head.root) {
            match self.chain.block_by_root(&head.root) {
                Some(block) => {
                    let parent = block.parent_root();
                    head = match self.chain.block_by_root(&parent) {
                        Some(parent_block) => Checkpoint {
                            root: parent,
                            slot: parent_block.slot(),
                        },
                        None => self.chain.finalized(),
                    };
                }
                None => break,
            }
        }
        status.head_root = head.root;
        status.head_slot = head.slot;
        if status.finalized_slot > head.slot {
            status.finalized_slot = 0;
            status.finalized_root = self.chain.genesis_root();
        }
        status
    }

    /// Slot timer: produce if one of our keys proposes this slot.
    pub(super) fn chain_tick(&mut self, now: Instant) {
        if self.chain_state.producers.is_empty() {
            return;
        }
        let slot = self
            .chain_state
            .genesis
            .slot_at(self.chain_state.unix_ms(now));
        if slot == 0 || slot <= self.chain_state.last_produced_slot {
            return;
        }
        let Some(producer) = self
            .chain_state
            .producers
            .iter()
            .position(|producer| producer.is_proposer_at(slot))
        else {
            return;
        };
        let head = self.chain.head();
        if head.slot >= slot {
            return;
        }
        if self.range_sync.is_catching_up(now) {
            // Our head is far behind what believed peers claim and their
            // blocks are arriving: a block on it would be a fork of its own,
            // and with fork choice by highest slot it would even win over
            // the chain we are fetching. Skip the slot. Only then: waiting
            // for peers, or peers that promise and deliver nothing, never
            // stop production (see `RangeSync::is_catching_up`).
            info!("slot {slot}: not producing while range sync catches up");
            self.counters.blocks_not_produced_syncing += 1;
            self.chain_state.last_produced_slot = slot;
            return;
        }
        self.chain_state.last_produced_slot = slot;
        let body = match self.chain_state.queued_bodies.pop_front() {
            Some(body) => body,
            None => {
                let mut body = vec![0u8; self.chain_state.body_bytes];
                self.rng.fill_bytes(&mut body);
                body
            }
        };
        let block = self.chain_state.producers[producer].produce(slot, head.root, body);
        info!(
            "produced block {} at slot {slot} on {}",
            short(&block.root()),
            short(&head.root)
        );
        self.counters.blocks_produced += 1;
        let payload = block.encode();
        if self.import_verified(now, block) && self.chain_state.follow_gossip {
            let topic = self.chain_state.blocks_topic.clone();
            if let Err(error) = self.gossip.publish(now, topic, &payload) {
                debug!("block for slot {slot} not published: {error:?}");
            }
        }
    }

    /// Queues `body` for the next block we produce.
    pub(super) fn queue_body(&mut self, body: Vec<u8>) -> bool {
        if self.chain_state.queued_bodies.len() >= QUEUED_BODIES_MAX
            || body.len() > crate::chain::block::BLOCK_BODY_BYTES_MAX
        {
            return false;
        }
        self.chain_state.queued_bodies.push_back(body);
        true
    }

    /// A message on the blocks topic from `from`: cheap checks, then a
    /// verification job; the router hears the verdict when the job is done.
    pub(super) fn on_gossip_block(
        &mut self,
        now: Instant,
        message: MessageId,
        payload: &[u8],
        from: PeerId,
    ) {
        let block = match SignedBlock::decode(payload) {
            Ok(block) => block,
            Err(error) => {
                debug!("{from:?}: gossiped block does not decode: {error}");
                self.judge_gossip_block(now, message, Validation::Reject);
                return;
            }
        };
        let verdict = self.gossip_block_precheck(now, &block);
        if let Some(verdict) = verdict {
            self.judge_gossip_block(now, message, verdict);
            return;
        }
        if self.chain_state.work.len() >= WORK_IN_FLIGHT_MAX {
            debug!("verification busy: gossiped block ignored");
            self.judge_gossip_block(now, message, Validation::Ignore);
            return;
        }
        // A block whose parent we lack is not forwarded (its ancestry is
        // unproven), but its own signature is checked first: only then may
        // a lookup hold it and fetch its ancestors, whose roots it pins.
        let purpose = if self.chain.contains(&block.parent_root()) {
            WorkPurpose::Gossip { message, from }
        } else {
            WorkPurpose::Orphan { message, from }
        };
        let seed = self.job_seed();
        self.start_work(
            Job::VerifyBlocks {
                genesis: self.chain_state.genesis.clone(),
                blocks: vec![block],
                seed,
            },
            purpose,
        );
    }

    /// What the cheap checks say: `None` if the block deserves a signature check.
    fn gossip_block_precheck(&self, now: Instant, block: &SignedBlock) -> Option<Validation> {
        let genesis = &self.chain_state.genesis;
        let slot = block.slot();
        let root = block.root();
        if slot == 0 || block.header.proposer_index != genesis.proposer_index_at(slot) {
            return Some(Validation::Reject);
        }
        let disparity_ms = CLOCK_DISPARITY.as_millis() as u64;
        let latest_start = self.chain_state.unix_ms(now).saturating_add(disparity_ms);
        if genesis.start_of(slot) > latest_start {
            debug!("gossiped block for slot {slot} is from the future");
            return Some(Validation::Ignore);
        }
        if self.chain.is_known_invalid(&root) || self.chain.is_known_invalid(&block.parent_root()) {
            return Some(Validation::Reject);
        }
        if slot <= self.chain.finalized().slot || self.chain.contains(&root) {
            return Some(Validation::Ignore);
        }
        None
    }

    fn judge_gossip_block(&mut self, now: Instant, id: MessageId, verdict: Validation) {
        self.gossip_validate(now, id, verdict);
    }

    pub(super) fn job_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    pub(super) fn start_work(&mut self, job: Job, purpose: WorkPurpose) {
        let id = WorkId(self.chain_state.work_next);
        self.chain_state.work_next += 1;
        self.chain_state.work.insert(id, purpose);
        self.counters.work_started += 1;
        self.actions.push_back(Action::Work { id, job });
    }

    /// A job came back.
    pub(super) fn on_work_done(&mut self, now: Instant, id: WorkId, output: WorkOutput) {
        let Some(purpose) = self.chain_state.work.remove(&id) else {
            warn!("work {id:?} finished but was not started");
            return;
        };
        self.counters.work_done += 1;
        match (purpose, output) {
            (
                WorkPurpose::Gossip { message, from },
                WorkOutput::VerifiedBlocks { mut blocks, result },
            ) => {
                let Some(block) = blocks.pop() else {
                    return;
                };
                match result {
                    Ok(()) => {
                        self.judge_gossip_block(now, message, Validation::Accept);
                        self.import_verified(now, block);
                    }
                    Err(_) => {
                        // Not `mark_invalid`: a root names only the header, so
                        // the same header with a good signature and body must
                        // still be accepted. The router's seen cache already
                        // refuses these exact bytes again.
                        info!(
                            "{from:?}: gossiped block {} at slot {} fails verification",
                            short(&block.root()),
                            block.slot()
                        );
                        self.judge_gossip_block(now, message, Validation::Reject);
                    }
                }
            }
            (WorkPurpose::Range { batch }, WorkOutput::VerifiedBlocks { result, .. }) => {
                self.sync_batch_verified(now, batch, result);
            }
            (WorkPurpose::Lookup { senders }, WorkOutput::VerifiedBlocks { blocks, result }) => {
                self.sync_lookup_verified(now, blocks, senders, result);
            }
            (
                WorkPurpose::Orphan { message, from },
                WorkOutput::VerifiedBlocks { mut blocks, result },
            ) => {
                let Some(block) = blocks.pop() else {
                    return;
                };
                match result {
                    Ok(()) => {
                        // Its parent may have arrived meanwhile.
                        if self.chain.contains(&block.parent_root()) {
                            self.judge_gossip_block(now, message, Validation::Accept);
                            self.import_verified(now, block);
                        } else {
                            self.judge_gossip_block(now, message, Validation::Ignore);
                            self.sync_orphan(now, block, from);
                        }
                    }
                    Err(_) => {
                        info!(
                            "{from:?}: gossiped orphan {} at slot {} fails verification",
                            short(&block.root()),
                            block.slot()
                        );
                        self.judge_gossip_block(now, message, Validation::Reject);
                    }
                }
            }
        }
    }

    /// Imports a block whose signature is known good; persists it and tells
    /// the application. Returns whether it was new.
    pub(super) fn import_verified(&mut self, now: Instant, block: SignedBlock) -> bool {
        let (slot, root) = (block.slot(), block.root());
        let known = self.chain.contains(&root);
        let result = self.import_blocks(now, vec![block]);
        self.sync_local_chain(now);
        match result {
            Ok(()) => !known,
            Err((_, error)) => {
                debug!(
                    "block {} at slot {slot} not imported: {error}",
                    short(&root)
                );
                false
            }
        }
    }

    pub(super) fn persist(
        &mut self,
        blocks: Vec<(Root, SignedBlock)>,
        delete: Vec<Root>,
        finalized: Checkpoint,
    ) {
        let state = &mut self.chain_state;
        for root in &delete {
            state.not_durable.remove(root);
            state.deferred.retain(|deferred| deferred != root);
        }
        state
            .not_durable
            .extend(blocks.iter().map(|(root, _)| *root));
        if state.persisting.len() >= PERSIST_IN_FLIGHT_MAX {
            // The driver is far behind: remember the roots (the blocks stay
            // in the store) and hand them over once it catches up.
            debug!(
                "{} persist batches unconfirmed: deferring",
                state.persisting.len()
            );
            state.deferred.extend(blocks.iter().map(|(root, _)| *root));
            state.deferred_delete.extend(delete);
            return;
        }
        self.emit_persist(blocks, delete, finalized);
    }

    fn emit_persist(
        &mut self,
        blocks: Vec<(Root, SignedBlock)>,
        delete: Vec<Root>,
        finalized: Checkpoint,
    ) {
        let state = &mut self.chain_state;
        let id = state.persist_next;
        state.persist_next += 1;
        let roots: Vec<Root> = blocks.iter().map(|(root, _)| *root).collect();
        state.persisting.push_back((id, roots));
        self.actions.push_back(Action::Persist(PersistBatch {
            id,
            blocks,
            delete,
            finalized,
        }));
    }

    /// Batch `id` and all before it are durable.
    pub(super) fn on_persisted(&mut self, id: u64) {
        let state = &mut self.chain_state;
        while let Some((front, _)) = state.persisting.front() {
            if *front > id {
                break;
            }
            let (_, roots) = state.persisting.pop_front().expect("front exists");
            for root in roots {
                state.not_durable.remove(&root);
            }
        }
        if state.persisting.is_empty() && !state.deferred.is_empty() {
            let roots = std::mem::take(&mut state.deferred);
            let delete = std::mem::take(&mut state.deferred_delete);
            let mut blocks = Vec::with_capacity(roots.len());
            for root in roots {
                match self.chain.block_by_root(&root) {
                    Some(block) => blocks.push((root, block.clone())),
                    // Pruned meanwhile: nothing to store, nothing to wait for.
                    None => {
                        self.chain_state.not_durable.remove(&root);
                    }
                }
            }
            let finalized = self.chain.finalized();
            self.emit_persist(blocks, delete, finalized);
        }
    }
}

/// The first 4 bytes of a root in hex, for logs.
fn short(root: &Root) -> String {
    crate::chain::genesis::hex_encode(&root[..4])
}
