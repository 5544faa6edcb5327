//! The node's chain part and its glue: blocks in from gossip, out from
//! production, verified off the loop, imported into the fork choice, made
//! durable, and only then announced in our Status. `ChainPart` owns the
//! fork-choice store and all chain state; other files use its methods.
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
//! - Work in flight is bounded ([`WORK_IN_FLIGHT_MAX`]), and shared: one
//!   peer holds at most [`GOSSIP_VERIFICATIONS_PER_PEER_MAX`] gossip checks
//!   and causes at most [`GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX`] a
//!   second, or [`GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX`] a slot on
//!   a fast chain (blocks beyond that rate cost a Low penalty each, and so
//!   do blocks beyond its share for a slot it already holds a check for; a
//!   full queue otherwise is our slowness and costs nothing). A gossiped block that
//!   finds no slot is dropped unjudged and not left marked as seen
//!   ([`crate::gossip::Gossip::abandon_validation`]), so the next copy, the
//!   honest one among junk, gets its check.
//! - Durability: each import leaves as one [`PersistBatch`]; the Status
//!   head is the fork-choice head once it is durable, else its newest
//!   durable ancestor. A block we produce is published on gossip only once
//!   durable too ([`UNANNOUNCED_BLOCKS_MAX`] wait at most): a block peers
//!   build on and we then lose would be orphaned by our own restart.
//! - Health (`Input::Health` from the driver): while the store refuses
//!   writes we neither produce nor forward gossiped blocks; while the
//!   stored chain is known to be incomplete, or the clock untrusted, we do
//!   not produce; a re-based clock moves the slot clock, but a slot already
//!   produced is never produced again. A gossiped block from the future is
//!   counted and warned about (at most every [`FUTURE_BLOCK_WARN_INTERVAL`]),
//!   naming its sender.
//!
//! # Security
//! *Provided*: a block is imported only after its proposer, body root and
//! signature verified; a block whose check failed gets the gossip verdict
//! Reject (the peer whose copy failed is banned, any other sender of the
//! same bytes pays the Reject's Mid; the router's seen cache refuses the
//! same bytes again) but its root is not marked invalid, since the same
//! header with a good signature is a different, valid message; an
//! undecodable block is Reject at once.
//! *Not provided here*: fetching unknown parents and range sync (the sync
//! module's job).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use log::{debug, info, warn};
use rand_core::RngCore;

use super::signing::Signing;
use super::Node;
use crate::chain::{
    BlockProducer, ChainStore, Checkpoint, Genesis, ImportError, ImportOutcome, Root, SignedBlock,
    SigningWatermark,
};
use crate::gossip::{MessageId, Topic, Validation};
use crate::identity::PeerId;
use crate::io::{Action, Health};
use crate::peer::{Penalty, Report};
use crate::reqresp::bodies::Status;
use crate::time::{Duration, Instant};
use crate::work::{Job, PersistBatch, WorkId, WorkOutput, PERSIST_IN_FLIGHT_MAX};

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
/// Of those, gossip verifications started for blocks one peer sent first.
/// An honest peer forwards about one block per slot; a handful keeps a
/// peer from holding the slots every other peer's blocks need. A block
/// beyond it is dropped unjudged; its sender pays a Low penalty only if it
/// already holds a check for the same slot (a flood of competing blocks).
pub const GOSSIP_VERIFICATIONS_PER_PEER_MAX: usize = 4;
/// Gossip verifications (BLS checks) one peer may cause per second at
/// least; each one beyond its allowance costs it a Low penalty and is not
/// checked. On fast chains the allowance grows with the slot rate
/// ([`GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX`]).
pub const GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX: u32 = 8;
/// Gossip verifications one peer may cause per slot of the chain: an honest
/// peer forwards about one block per slot (the one it saw first), and a
/// competing block now and then. A chain of 20 ms slots makes 50 blocks a
/// second, so a fixed per-second allowance would score its proposer out
/// within a second.
pub const GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX: u32 = 2;
/// The window of [`GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX`].
const GOSSIP_VERIFICATION_WINDOW: Duration = Duration::from_secs(1);
/// Peers whose verification rate is tracked; windows older than
/// [`GOSSIP_VERIFICATION_WINDOW`] are dropped first, then the oldest.
const GOSSIP_VERIFICATION_RATES_MAX: usize = 4 * crate::limits::PEERS_MAX;

const _: () = assert!(GOSSIP_VERIFICATIONS_PER_PEER_MAX * 8 <= WORK_IN_FLIGHT_MAX);

/// Gossip verifications one peer may cause per [`GOSSIP_VERIFICATION_WINDOW`]
/// on a chain of `slot_duration_ms` slots: [`GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX`]
/// for each slot the window spans (a part slot counts whole), at least
/// [`GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX`].
pub fn gossip_verifications_per_window(slot_duration_ms: u64) -> u32 {
    let window_ms = u64::try_from(GOSSIP_VERIFICATION_WINDOW.as_millis()).unwrap_or(u64::MAX);
    let slots = window_ms.div_ceil(slot_duration_ms.max(1));
    let allowed = slots.saturating_mul(u64::from(GOSSIP_VERIFICATIONS_PER_PEER_PER_SLOT_MAX));
    u32::try_from(allowed)
        .unwrap_or(u32::MAX)
        .max(GOSSIP_VERIFICATIONS_PER_PEER_PER_SECOND_MAX)
}
/// Application bodies queued (by `Command::ProposeBody`) for the blocks we
/// produce next: a count of bodies, not bytes. A further one is refused with
/// `Notification::BodyRefused` until production takes one.
pub const QUEUED_BODIES_MAX: usize = 4;
/// Blocks we produced that wait to be durable before we publish them. One
/// is produced per slot and production stops while the store fails, so
/// more means a driver that never answers; the oldest is then dropped unannounced.
pub const UNANNOUNCED_BLOCKS_MAX: usize = 16;
/// At most one WARN per this interval about gossiped blocks from the
/// future (the counter counts every one): a peer could send many.
pub const FUTURE_BLOCK_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a job was started.
#[derive(Clone, Debug)]
pub(super) enum WorkPurpose {
    /// A gossiped block waiting for its verdict. Its own signature is
    /// checked even when its parent is unknown: only then may a lookup hold
    /// it (made-up orphans cost their sender a Reject, not a lookup slot).
    Gossip {
        message: MessageId,
        from: PeerId,
        /// The block's slot: a second check held for one slot is a flood.
        slot: u64,
    },
    /// A range-sync batch.
    Range { batch: crate::sync::BatchId },
    /// A looked-up chain of ancestors; who sent each block.
    Lookup { senders: Vec<PeerId> },
}

/// The chain part: the fork-choice store and everything around it
/// (production, verification work, durability, health). Its fields are
/// private to this file; other parts use its methods.
pub(super) struct ChainPart {
    /// The fork-choice store: every block we hold, the head, finality.
    store: ChainStore,
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
    /// Blocks that became finalized, not yet handed to the driver (the
    /// next batch carries them, see `PersistBatch::finalized_chain`).
    finalizing: Vec<Checkpoint>,
    /// The highest slot of the finalized chain handed over or queued in
    /// `finalizing`.
    finalizing_to_slot: u64,
    blocks_topic: Topic,
    follow_gossip: bool,
    /// Per peer: when its current one-second window began and the gossip
    /// verifications it caused in it (bounded by `GOSSIP_VERIFICATION_RATES_MAX`).
    verification_rates: BTreeMap<PeerId, (Instant, u32)>,
    /// Gossip verifications one peer may cause per
    /// [`GOSSIP_VERIFICATION_WINDOW`], from the slot duration.
    gossip_verifications_per_window: u32,
    /// The driver reported that the store refuses writes (`Health::StoreFailing`).
    store_failing: bool,
    /// The driver reported an untrusted wall clock (`Health::ClockUntrusted`).
    clock_untrusted: bool,
    /// No production until the head reaches this slot (0: none): the
    /// stored chain came back incomplete (`Health::StoreIncomplete`).
    resync_to_slot: u64,
    /// Why production was last held, so the reason is logged once at INFO.
    hold_logged: Option<&'static str>,
    /// Blocks we produced, published once durable: (root, encoding).
    unannounced: VecDeque<(Root, Vec<u8>)>,
    /// When we last warned about a block from the future.
    future_warned_at: Option<Instant>,
    /// Our keys' signing watermarks (`signing.rs`).
    signing: Signing,
}

impl ChainPart {
    /// The chain of `config`: its genesis and `store`, built from the
    /// blocks the driver loaded ([`ChainStore::for_config`]; those that
    /// failed to load were logged and left out).
    pub(super) fn new(config: &super::Config, store: ChainStore) -> ChainPart {
        // What was loaded was finalized (and indexed) before the restart.
        let store_finalized_slot = store.finalized().slot;
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
            .collect::<Vec<_>>();
        let signing = Signing::new(&producers, &config.chain.signed_slots, &config.chain.stored);
        ChainPart {
            store,
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
            finalizing: Vec::new(),
            finalizing_to_slot: store_finalized_slot,
            blocks_topic: Topic::new(BLOCKS_TOPIC).expect("a valid topic name"),
            follow_gossip: config.chain.follow_gossip,
            verification_rates: BTreeMap::new(),
            gossip_verifications_per_window: gossip_verifications_per_window(
                config.chain.genesis.slot_duration_ms(),
            ),
            store_failing: false,
            clock_untrusted: false,
            resync_to_slot: 0,
            hold_logged: None,
            unannounced: VecDeque::new(),
            future_warned_at: None,
            signing,
        }
    }

    /// The fork-choice store, for reading.
    pub(super) fn store(&self) -> &ChainStore {
        &self.store
    }

    /// Imports one verified block into the fork choice (durability is the
    /// caller's: see [`Node::persist`]).
    pub(super) fn import(&mut self, block: SignedBlock) -> Result<ImportOutcome, ImportError> {
        self.store.import(block)
    }

    pub(super) fn signing(&self) -> &Signing {
        &self.signing
    }

    pub(super) fn signing_mut(&mut self) -> &mut Signing {
        &mut self.signing
    }

    /// Our producer `index`.
    pub(super) fn producer(&self, index: usize) -> &BlockProducer {
        &self.producers[index]
    }

    /// Persist batches handed to the driver and not yet confirmed.
    pub(super) fn persist_batches_in_flight(&self) -> usize {
        self.persisting.len()
    }

    /// The slot our clock is in at `now`.
    pub(super) fn slot_now(&self, now: Instant) -> u64 {
        self.genesis.slot_at(self.unix_ms(now))
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
        &self.chain.store
    }

    /// The Status we announce (durable head).
    pub fn status(&self) -> Status {
        self.our_status()
    }

    /// Whether range sync is under way (waiting for peers or fetching).
    pub fn is_syncing(&self) -> bool {
        self.sync.is_syncing()
    }

    /// Range sync's own counts (requests, slots asked for, splits, ...).
    pub fn range_sync_counters(&self) -> crate::sync::SyncCounters {
        self.sync.range_counters()
    }

    /// Parent lookups' own counts (started, requests, switched to range sync, ...).
    pub fn lookup_counters(&self) -> crate::sync::lookup::LookupCounters {
        self.sync.lookup_counters()
    }

    /// Whether the driver reported a failing store (`Health::StoreFailing`):
    /// the node then neither produces nor forwards blocks.
    pub fn is_store_failing(&self) -> bool {
        self.chain.store_failing
    }

    /// The slot our head must reach before we produce again, if the stored
    /// chain came back incomplete (`Health::StoreIncomplete`).
    pub fn resync_to_slot(&self) -> Option<u64> {
        (self.chain.resync_to_slot > 0).then_some(self.chain.resync_to_slot)
    }

    /// Unix time (ms) of `Instant::ZERO`, as last set by the config or `Health::ClockRebased`.
    pub fn unix_ms_at_origin(&self) -> u64 {
        self.chain.unix_ms_at_origin
    }

    /// Parent lookups under way (each holds gossiped orphans and their fetched ancestors).
    pub fn lookups_pending(&self) -> usize {
        self.sync.lookups_pending()
    }

    /// Work jobs handed to the driver and not yet answered (at most [`WORK_IN_FLIGHT_MAX`]).
    pub fn work_in_flight(&self) -> usize {
        self.chain.work.len()
    }

    /// Subscribes to the blocks topic if this node follows the chain by gossip.
    pub(super) fn start_chain(&mut self, now: Instant) {
        // Range sync measures its distance from the chain we start with
        // (loaded from the store), not from genesis.
        self.sync_local_chain(now);
        if self.chain.follow_gossip {
            let topic = self.chain.blocks_topic.clone();
            match self.gossip.router_mut().subscribe(now, topic) {
                Ok(_) => self.announce_topics(),
                Err(error) => warn!("cannot subscribe to the blocks topic: {error:?}"),
            }
        }
    }

    /// Our Status: the fork-choice head once it is durable, else its newest
    /// durable ancestor; the finalized block if it is at or below that head.
    pub(super) fn our_status(&self) -> Status {
        let mut status = self.chain.store.status();
        if self.chain.not_durable.is_empty() {
            return status;
        }
        let mut head = self.chain.store.head();
        while self.chain.not_durable.contains(&head.root) {
            match self.chain.store.block_by_root(&head.root) {
                Some(block) => {
                    let parent = block.parent_root();
                    head = match self.chain.store.block_by_root(&parent) {
                        Some(parent_block) => Checkpoint {
                            root: parent,
                            slot: parent_block.slot(),
                        },
                        None => self.chain.store.finalized(),
                    };
                }
                None => break,
            }
        }
        status.head_root = head.root;
        status.head_slot = head.slot;
        if status.finalized_slot > head.slot {
            status.finalized_slot = 0;
            status.finalized_root = self.chain.store.genesis_root();
        }
        status
    }

    /// Slot timer: produce if one of our keys proposes this slot.
    pub(super) fn chain_tick(&mut self, now: Instant) {
        if self.chain.producers.is_empty() {
            return;
        }
        self.expire_signature(now);
        let slot = self.chain.genesis.slot_at(self.chain.unix_ms(now));
        if slot == 0 || slot <= self.chain.last_produced_slot {
            return;
        }
        let Some(producer) = self
            .chain
            .producers
            .iter()
            .position(|producer| producer.is_proposer_at(slot))
        else {
            return;
        };
        let head = self.chain.store.head();
        if head.slot >= slot {
            return;
        }
        if self.sync.is_catching_up(now) {
            // Our head is far behind what believed peers claim and their
            // blocks are arriving: a block on it would be a fork of its own,
            // and with fork choice by highest slot it would even win over
            // the chain we are fetching. Skip the slot. Only then: waiting
            // for peers, or peers that promise and deliver nothing, never
            // stop production (see `RangeSync::is_catching_up`).
            info!("slot {slot}: not producing while range sync catches up");
            self.out.counters.blocks_not_produced_syncing += 1;
            self.chain.last_produced_slot = slot;
            return;
        }
        if let Some(reason) = self.production_hold(head.slot) {
            if self.chain.hold_logged != Some(reason) {
                info!("slot {slot}: not producing: {reason}");
                self.chain.hold_logged = Some(reason);
            } else {
                debug!("slot {slot}: not producing: {reason}");
            }
            self.out.counters.blocks_not_produced_unhealthy += 1;
            self.chain.last_produced_slot = slot;
            return;
        }
        self.chain.hold_logged = None;
        self.chain.last_produced_slot = slot;
        // Signed only once the key's watermark for this slot is durable.
        self.request_signature(slot, producer);
    }

    /// Signs our block for `slot` with producer `producer` on our head,
    /// imports it and publishes it once durable. Called only once the
    /// key's watermark for `slot` is durable (`signing.rs`).
    pub(super) fn produce_block(&mut self, now: Instant, slot: u64, producer: usize) {
        let head = self.chain.store.head();
        let body = match self.chain.queued_bodies.pop_front() {
            Some(body) => body,
            None => {
                let mut body = vec![0u8; self.chain.body_bytes];
                self.rng.fill_bytes(&mut body);
                body
            }
        };
        let block = self.chain.producers[producer].produce(slot, head.root, body);
        // Once per slot of ours: DEBUG, or a proposer's log is all blocks.
        debug!(
            "produced block {} at slot {slot} on {}",
            block.root(),
            head.root
        );
        self.out.counters.blocks_produced += 1;
        let payload = block.encode();
        let root = block.root();
        if self.import_verified(now, block) && self.chain.follow_gossip {
            // Announced only once durable: a block we tell peers about and
            // then lose would be built on by them and orphaned by our restart.
            let unannounced = &mut self.chain.unannounced;
            if unannounced.len() >= UNANNOUNCED_BLOCKS_MAX {
                if let Some((dropped, _)) = unannounced.pop_front() {
                    warn!("block {} never became durable: not announced", dropped);
                }
            }
            unannounced.push_back((root, payload));
            self.announce_durable(now);
        }
    }

    /// Why we must not produce now, if we must not: the driver's health
    /// reports. Clears the re-sync hold once the head has reached it.
    fn production_hold(&mut self, head_slot: u64) -> Option<&'static str> {
        let state = &mut self.chain;
        if state.resync_to_slot > 0 && head_slot >= state.resync_to_slot {
            info!(
                "head at slot {head_slot}: the stored chain is whole again up to slot {}",
                state.resync_to_slot
            );
            state.resync_to_slot = 0;
        }
        if state.store_failing {
            Some("the block store refuses writes (store_failing)")
        } else if state.resync_to_slot > 0 {
            Some("the stored chain is incomplete: re-syncing the damaged range from peers first")
        } else if state.clock_untrusted {
            Some("the wall clock jumped and is not trusted until the operator fixes it")
        } else {
            None
        }
    }

    /// Publishes the blocks we produced that have become durable, in order.
    fn announce_durable(&mut self, now: Instant) {
        while let Some((root, _)) = self.chain.unannounced.front() {
            if self.chain.not_durable.contains(root) {
                return;
            }
            let (root, payload) = self.chain.unannounced.pop_front().expect("front exists");
            if !self.chain.store.contains(&root) {
                continue; // Pruned before it was written: nothing to announce.
            }
            let topic = self.chain.blocks_topic.clone();
            if let Err(error) = self.gossip.router_mut().publish(now, topic, &payload) {
                debug!("block {} not published: {error:?}", root);
            }
        }
    }

    /// The driver's report on its disk and clock.
    pub(super) fn on_health(&mut self, health: Health) {
        if health == Health::StoreFailing {
            self.abandon_signature();
        }
        let state = &mut self.chain;
        match health {
            Health::StoreFailing => {
                if !state.store_failing {
                    warn!("store_failing: not producing or forwarding blocks until the store writes again");
                }
                state.store_failing = true;
            }
            Health::StoreWriting => {
                if state.store_failing {
                    info!("the block store writes again: producing and forwarding blocks");
                }
                state.store_failing = false;
            }
            Health::StoreIncomplete { slot } => {
                warn!(
                    "the stored chain is incomplete below slot {slot}: not producing until it is re-synced from peers"
                );
                state.resync_to_slot = state.resync_to_slot.max(slot);
            }
            Health::ClockRebased { unix_ms_at_origin } => {
                state.unix_ms_at_origin = unix_ms_at_origin;
            }
            Health::ClockUntrusted => state.clock_untrusted = true,
            Health::ClockTrusted => state.clock_untrusted = false,
        }
    }

    /// Whether `slot` has not started by our clock (beyond [`CLOCK_DISPARITY`]).
    fn is_from_future(&self, now: Instant, slot: u64) -> bool {
        let disparity_ms = CLOCK_DISPARITY.as_millis() as u64;
        let latest_start = self.chain.unix_ms(now).saturating_add(disparity_ms);
        self.chain.genesis.start_of(slot) > latest_start
    }

    /// A Status or a synced block from `from` names a slot beyond our clock:
    /// counted, and warned about naming the sender (at most every
    /// [`FUTURE_BLOCK_WARN_INTERVAL`], shared with gossiped blocks).
    pub(super) fn warn_claim_from_future(&mut self, now: Instant, from: PeerId, what: &str) {
        self.out.counters.claims_from_future += 1;
        if let Some(our_slot) = self.future_warning_due(now) {
            warn!(
                "{from:?} sent {what} while our clock is at slot {our_slot}: not believed ({} claims from the future so far; is its clock or ours wrong?)",
                self.out.counters.claims_from_future
            );
        }
    }

    /// Whether a warning about the future is due (at most one per
    /// [`FUTURE_BLOCK_WARN_INTERVAL`] for claims and blocks together): if
    /// so, our clock's slot, for the message.
    fn future_warning_due(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .chain
            .future_warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= FUTURE_BLOCK_WARN_INTERVAL);
        if !due {
            return None;
        }
        self.chain.future_warned_at = Some(now);
        Some(self.chain.genesis.slot_at(self.chain.unix_ms(now)))
    }

    /// A gossiped block from the future: its sender's clock (or ours) is
    /// wrong, which the operator of either should hear about.
    fn warn_future_block(&mut self, now: Instant, block: &SignedBlock, from: PeerId) {
        self.out.counters.blocks_from_future += 1;
        if let Some(our_slot) = self.future_warning_due(now) {
            warn!(
                "{from:?} sent block {} for slot {} while our clock is at slot {our_slot}: dropped as from the future ({} so far; is its clock or ours wrong?)",
                block.root(),
                block.slot(),
                self.out.counters.blocks_from_future
            );
        }
    }

    /// Queues `body` for the next block we produce.
    pub(super) fn queue_body(&mut self, body: Vec<u8>) -> bool {
        if self.chain.queued_bodies.len() >= QUEUED_BODIES_MAX
            || body.len() > crate::chain::block::BLOCK_BODY_BYTES_MAX
        {
            return false;
        }
        self.chain.queued_bodies.push_back(body);
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
        if self.chain.store_failing {
            // Forwarding tells peers we hold it; we could not keep it.
            self.out.counters.blocks_ignored_store_failing += 1;
            self.judge_gossip_block(now, message, Validation::Ignore);
            return;
        }
        let verdict = self.gossip_block_precheck(now, &block);
        if let Some(verdict) = verdict {
            if verdict == Validation::Ignore && self.is_from_future(now, block.slot()) {
                self.warn_future_block(now, &block, from);
            }
            self.judge_gossip_block(now, message, verdict);
            return;
        }
        if self.gossip_shows_gap(&block) {
            self.ask_status_for_gap(now, from);
        }
        if !self.admit_gossip_verification(now, message, from, block.slot()) {
            return;
        }
        // A block whose parent we lack is checked too: only a verified one
        // may hold a lookup and fetch its ancestors, whose roots it pins.
        let purpose = WorkPurpose::Gossip {
            message,
            from,
            slot: block.slot(),
        };
        let seed = self.job_seed();
        self.start_work(
            Job::VerifyBlocks {
                genesis: self.chain.genesis.clone(),
                blocks: vec![block],
                seed,
            },
            purpose,
        );
    }

    /// Whether a gossiped block from `from` may take a verification slot now.
    /// If not, it is dropped unjudged and not left marked as seen (so the
    /// next copy, perhaps the honest one, gets its check).
    ///
    /// Who pays: a full queue (the peer's share or everyone's) is our
    /// verifier's slowness when the peer's held checks are for other slots
    /// (an honest peer forwards about one block per slot, and a fast chain
    /// outruns a verifier busy with range sync): dropped without penalty.
    /// When the peer already holds a check for this block's slot, the block
    /// is one of a flood of competing blocks: a Low penalty. Beyond its rate
    /// allowance ([`gossip_verifications_per_window`]), a Low penalty too.
    fn admit_gossip_verification(
        &mut self,
        now: Instant,
        message: MessageId,
        from: PeerId,
        slot: u64,
    ) -> bool {
        let state = &mut self.chain;
        let (mut held, mut held_for_slot) = (0usize, false);
        for purpose in state.work.values() {
            if let WorkPurpose::Gossip {
                from: sender,
                slot: held_slot,
                ..
            } = purpose
            {
                if *sender == from {
                    held = held.saturating_add(1);
                    held_for_slot |= *held_slot == slot;
                }
            }
        }
        if state.work.len() >= WORK_IN_FLIGHT_MAX || held >= GOSSIP_VERIFICATIONS_PER_PEER_MAX {
            debug!(
                "{from:?}: verification busy ({held} of its own): gossiped block dropped unjudged"
            );
            self.out.counters.gossip_verifications_deferred += 1;
            self.gossip.router_mut().abandon_validation(now, message);
            if held >= GOSSIP_VERIFICATIONS_PER_PEER_MAX && held_for_slot {
                // Its own excess: more blocks for one slot than one proposer signs.
                self.report(now, from, Report::Penalty(Penalty::Low));
            }
            return false;
        }
        if !state.verification_rates.contains_key(&from)
            && state.verification_rates.len() >= GOSSIP_VERIFICATION_RATES_MAX
        {
            state.verification_rates.retain(|_, (since, _)| {
                now.saturating_duration_since(*since) < GOSSIP_VERIFICATION_WINDOW
            });
            if state.verification_rates.len() >= GOSSIP_VERIFICATION_RATES_MAX {
                let oldest = state
                    .verification_rates
                    .iter()
                    .min_by_key(|(peer, (since, _))| (*since, **peer))
                    .map(|(peer, _)| *peer)
                    .expect("full, so not empty");
                state.verification_rates.remove(&oldest);
            }
        }
        let (since, count) = state.verification_rates.entry(from).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= GOSSIP_VERIFICATION_WINDOW {
            (*since, *count) = (now, 0);
        }
        if *count >= state.gossip_verifications_per_window {
            debug!("{from:?}: over its gossip verification rate: block dropped unjudged");
            self.out.counters.gossip_verifications_over_rate += 1;
            self.gossip.router_mut().abandon_validation(now, message);
            self.report(now, from, Report::Penalty(Penalty::Low));
            return false;
        }
        *count = count.saturating_add(1);
        true
    }

    /// What the cheap checks say: `None` if the block deserves a signature check.
    fn gossip_block_precheck(&self, now: Instant, block: &SignedBlock) -> Option<Validation> {
        let genesis = &self.chain.genesis;
        let slot = block.slot();
        let root = block.root();
        if slot == 0 || block.header.proposer_index != genesis.proposer_index_at(slot) {
            return Some(Validation::Reject);
        }
        let disparity_ms = CLOCK_DISPARITY.as_millis() as u64;
        let latest_start = self.chain.unix_ms(now).saturating_add(disparity_ms);
        if genesis.start_of(slot) > latest_start {
            debug!("gossiped block for slot {slot} is from the future");
            return Some(Validation::Ignore);
        }
        if self.chain.store.is_known_invalid(&root)
            || self.chain.store.is_known_invalid(&block.parent_root())
        {
            return Some(Validation::Reject);
        }
        if slot <= self.chain.store.finalized().slot || self.chain.store.contains(&root) {
            return Some(Validation::Ignore);
        }
        None
    }

    fn judge_gossip_block(&mut self, now: Instant, id: MessageId, verdict: Validation) {
        self.gossip.validate(now, id, verdict, &mut self.out);
    }

    pub(super) fn job_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    pub(super) fn start_work(&mut self, job: Job, purpose: WorkPurpose) {
        let id = WorkId(self.chain.work_next);
        self.chain.work_next += 1;
        self.chain.work.insert(id, purpose);
        self.out.counters.work_started += 1;
        self.out.push(Action::Work { id, job });
    }

    /// A job came back.
    pub(super) fn on_work_done(&mut self, now: Instant, id: WorkId, output: WorkOutput) {
        let Some(purpose) = self.chain.work.remove(&id) else {
            warn!("work {id:?} finished but was not started");
            return;
        };
        self.out.counters.work_done += 1;
        match (purpose, output) {
            (
                WorkPurpose::Gossip { message, from, .. },
                WorkOutput::VerifiedBlocks { mut blocks, result },
            ) => {
                let Some(block) = blocks.pop() else {
                    return;
                };
                match result {
                    Ok(()) if self.chain.store.contains(&block.parent_root()) => {
                        self.judge_gossip_block(now, message, Validation::Accept);
                        self.import_verified(now, block);
                    }
                    Ok(()) => {
                        // Not forwarded (its ancestry is unproven); the lookup
                        // fetches the missing ancestors and imports the block
                        // once they verify.
                        self.judge_gossip_block(now, message, Validation::Ignore);
                        self.sync
                            .handle_peer_block_verified(now, from, block.slot());
                        if self.gossip_shows_gap(&block) {
                            // Beyond the sync distance the gap is range
                            // sync's (its sender was asked for its Status):
                            // a lookup would walk back one block per request,
                            // up to PARENT_LOOKUP_DEPTH_MAX of them for each
                            // block gossiped while we sync.
                            self.out.counters.orphans_left_to_range_sync += 1;
                            return;
                        }
                        self.sync_orphan(now, block, from);
                    }
                    Err(_) => {
                        // Not `mark_invalid`: a root names only the header, so
                        // the same header with a good signature and body must
                        // still be accepted. The router's seen cache already
                        // refuses these exact bytes again.
                        info!(
                            "{from:?}: gossiped block {} at slot {} fails verification",
                            block.root(),
                            block.slot()
                        );
                        self.judge_gossip_block(now, message, Validation::Reject);
                        // Besides the Mid every sender pays for the Reject,
                        // the peer whose copy failed the check is banned
                        // (charged even if it already left): an honest node
                        // forwards only blocks it verified, and whether a
                        // block verifies depends on nothing but the genesis
                        // (the proposer of a slot is fixed by it), so no
                        // honest peer can send one that fails. The same
                        // forgery fetched by range sync or a lookup is Fatal
                        // too. A High besides the Mid made four failed
                        // checks a ban, which a forger could outrun: at -20
                        // we hang up on it and the rest of its flood goes
                        // unread, so a node that had started three checks
                        // kept it at -45 (junk-blocks, seed 110).
                        self.report(now, from, Report::Penalty(Penalty::Fatal));
                    }
                }
            }
            (WorkPurpose::Range { batch }, WorkOutput::VerifiedBlocks { blocks, result }) => {
                self.sync_batch_verified(now, batch, blocks, result);
            }
            (WorkPurpose::Lookup { senders }, WorkOutput::VerifiedBlocks { blocks, result }) => {
                self.sync_lookup_verified(now, blocks, senders, result);
            }
        }
    }

    /// A job produced nothing (the driver failed running it): our fault, so
    /// no sender is blamed. A gossiped block gets no verdict (it is neither
    /// forwarded nor penalised), a range batch is fetched again (its
    /// attempts still count, so a job that always fails ends the round
    /// instead of looping), and looked-up blocks are dropped until a peer
    /// shows them again.
    pub(super) fn on_work_failed(&mut self, now: Instant, id: WorkId) {
        let Some(purpose) = self.chain.work.remove(&id) else {
            warn!("work {id:?} failed but was not started");
            return;
        };
        self.out.counters.work_failed = self.out.counters.work_failed.saturating_add(1);
        match purpose {
            WorkPurpose::Gossip {
                message,
                from,
                slot,
            } => {
                warn!("verification of {from:?}'s gossiped block at slot {slot} failed on our side; ignored, not judged");
                self.judge_gossip_block(now, message, Validation::Ignore);
            }
            WorkPurpose::Range { batch } => {
                warn!(
                    "verification of range-sync batch {batch:?} failed on our side; fetched again"
                );
                self.sync.handle_verify_failed(now, batch);
            }
            WorkPurpose::Lookup { senders } => {
                warn!(
                    "verification of {} looked-up blocks failed on our side; dropped",
                    senders.len()
                );
            }
        }
    }

    /// Imports a block whose signature is known good; persists it and tells
    /// the application. Returns whether it was new.
    pub(super) fn import_verified(&mut self, now: Instant, block: SignedBlock) -> bool {
        let (slot, root) = (block.slot(), block.root());
        let known = self.chain.store.contains(&root);
        let result = self.import_blocks(now, vec![block]);
        self.sync_local_chain(now);
        match result {
            Ok(()) => !known,
            Err((_, error)) => {
                debug!("block {} at slot {slot} not imported: {error}", root);
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
        let state = &mut self.chain;
        if finalized.slot > state.finalizing_to_slot {
            // Taken now, while the blocks are certainly in memory: history
            // is evicted from the bottom as later blocks arrive.
            let newly = state
                .store
                .canonical_checkpoints(state.finalizing_to_slot, finalized.slot);
            state.finalizing.extend(newly);
            state.finalizing_to_slot = finalized.slot;
        }
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
        self.emit_persist(blocks, delete, finalized, None);
    }

    /// Hands `watermark` to the driver in a batch of its own; returns the
    /// batch's id (signing waits for its acknowledgement).
    pub(super) fn persist_watermark(&mut self, watermark: SigningWatermark) -> u64 {
        self.out.counters.watermarks_persisted += 1;
        let finalized = self.chain.store.finalized();
        self.emit_persist(Vec::new(), Vec::new(), finalized, Some(watermark))
    }

    fn emit_persist(
        &mut self,
        blocks: Vec<(Root, SignedBlock)>,
        delete: Vec<Root>,
        finalized: Checkpoint,
        watermark: Option<SigningWatermark>,
    ) -> u64 {
        let state = &mut self.chain;
        let id = state.persist_next;
        state.persist_next += 1;
        let roots: Vec<Root> = blocks.iter().map(|(root, _)| *root).collect();
        state.persisting.push_back((id, roots));
        self.out.push(Action::Persist(PersistBatch {
            id,
            blocks,
            delete,
            finalized,
            finalized_chain: std::mem::take(&mut state.finalizing),
            watermark,
        }));
        id
    }

    /// Batch `id` and all before it are durable.
    pub(super) fn on_persisted(&mut self, now: Instant, id: u64) {
        let state = &mut self.chain;
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
                match self.chain.store.block_by_root(&root) {
                    Some(block) => blocks.push((root, block.clone())),
                    // Pruned meanwhile: nothing to store, nothing to wait for.
                    None => {
                        self.chain.not_durable.remove(&root);
                    }
                }
            }
            let finalized = self.chain.store.finalized();
            self.emit_persist(blocks, delete, finalized, None);
        }
        self.announce_durable(now);
        self.on_watermark_persisted(now, id);
    }
}
