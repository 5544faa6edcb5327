//! Tests of range sync, driven through its inputs and `poll` as the node drives it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use blst::min_pk::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::batch::fingerprint;
use super::*;
use crate::chain::block::{body_root, BlockHeader};
use crate::chain::{devnet_keys, sign_block, verify_batch_locating, ChainStore, Genesis};
use crate::chain::{ImportOutcome, Imported, SignedBlock};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::peer::score::Score;
use crate::reqresp::limits::{BLOCKS_PER_RANGE_REQUEST_MAX, BLOCK_BYTES_MAX};
use crate::time::{Duration, Instant};

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
    /// Honest, but holds the chain only up to this slot (whatever it claims).
    HoldsUpTo(u64),
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
    Verified(BatchId, Vec<SignedBlock>, Result<(), Vec<usize>>),
    /// The driver failed running the verification (`Input::WorkFailed`).
    VerifyFailed(BatchId),
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
    /// The next this-many verifications fail on our side.
    verifications_failing: u32,
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
            verifications_failing: 0,
        }
    }

    fn add_peer(&mut self, index: u8, behaviour: Behaviour, head_slot: u64) {
        let peer = peer_id(index);
        self.behaviours.insert(peer, behaviour);
        self.sync
            .handle_peer_status(self.now, peer, status(head_slot), Score::ZERO);
        self.drain();
    }

    fn remove_peer(&mut self, index: u8) {
        let peer = peer_id(index);
        self.behaviours.remove(&peer);
        self.events
            .retain(|(_, _, event)| !matches!(event, Event::Response(p, ..) if *p == peer));
        self.sync.handle_peer_gone(self.now, peer);
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
            Behaviour::HoldsUpTo(slot) => blocks.retain(|block| block.slot() <= slot),
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
                SyncAction::Verify { batch, .. } if self.verifications_failing > 0 => {
                    self.verifications_failing -= 1;
                    self.schedule(self.verify_delay, Event::VerifyFailed(batch));
                }
                SyncAction::Verify { batch, blocks } => {
                    let result = verify_batch_locating(&fixture().genesis, &blocks, &mut self.rng);
                    self.schedule(self.verify_delay, Event::Verified(batch, blocks, result));
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
                    self.sync.handle_imported(self.now, batch, result);
                    let (head, finalized) = (self.store.head(), self.store.finalized());
                    self.sync.handle_local_chain(self.now, head, finalized);
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
                    self.sync.handle_response(self.now, batch, result)
                }
                Event::Verified(batch, blocks, result) => {
                    self.sync.handle_verified(self.now, batch, blocks, result)
                }
                Event::VerifyFailed(batch) => self.sync.handle_verify_failed(self.now, batch),
            }
        } else {
            self.sync.handle_timeout(self.now);
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
    other.finalized_root = Root([9; 32]);
    let (head, finalized) = (harness.store.head(), harness.store.finalized());
    harness
        .sync
        .handle_local_chain(harness.now, head, finalized);
    harness
        .sync
        .handle_peer_status(harness.now, peer_id(3), other, Score::ZERO);
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
fn a_stale_head_syncs_from_peers_within_the_sync_distance() {
    // Peers 10 slots ahead: too close for a round while our head is
    // recent, but once the clock is the stale threshold past our head, a
    // head that old may be a fork of our own, and a block on it would make
    // it final: we fetch what the peers hold, and a proposer waits for it.
    const STALE_SLOTS: u64 = 16;
    let mut harness = Harness::new(config(2), 23);
    harness.sync.set_stale_head_slots(STALE_SLOTS);
    harness.sync.handle_clock(harness.now, STALE_SLOTS - 1);
    harness.add_peer(1, Behaviour::Honest, 10);
    harness.add_peer(2, Behaviour::Honest, 10);
    assert!(
        !harness.sync.is_syncing(),
        "a head 15 slots old is not stale"
    );
    harness.sync.handle_clock(harness.now, STALE_SLOTS);
    harness.drain();
    assert!(harness.sync.is_syncing(), "a stale head behind two peers");
    assert!(harness.sync.is_catching_up(harness.now));
    harness.run_until(|h| h.synced.is_some());
    assert_eq!(harness.head(), 10);
    assert!(!harness.sync.is_syncing());
    // Level with its peers, a stale head stays put: nothing to fetch.
    harness.sync.handle_clock(harness.now, 40);
    harness.drain();
    assert!(!harness.sync.is_syncing());
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
fn verifications_that_fail_on_our_side_blame_nobody_and_are_fetched_again() {
    let mut harness = Harness::new(config(1), 4);
    harness.verifications_failing = 2;
    harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
    harness.run_until(|h| h.synced.is_some());
    assert_eq!(harness.head(), CHAIN_SLOTS);
    assert_eq!(harness.verifications_failing, 0, "both failures happened");
    assert!(harness.penalties.is_empty(), "{:?}", harness.penalties);
    let counters = harness.sync.counters();
    assert_eq!(counters.verifications_failed_locally, 2);
    assert_eq!(counters.batches_failed, 0);
}

#[test]
fn a_verification_that_always_fails_gives_up_the_round_not_the_peer() {
    let mut harness = Harness::new(config(1), 4);
    harness.verifications_failing = u32::MAX;
    harness.add_peer(1, Behaviour::Honest, CHAIN_SLOTS);
    harness.run_until(|h| h.sync.counters().rounds_abandoned >= 1);
    assert!(harness.penalties.is_empty(), "{:?}", harness.penalties);
    assert_eq!(harness.head(), 0, "nothing unverified was imported");
    // Once our verification works again, the same peer serves the chain.
    harness.verifications_failing = 0;
    harness.run_until(|h| h.synced.is_some());
    assert_eq!(harness.head(), CHAIN_SLOTS);
    assert!(harness.penalties.is_empty(), "{:?}", harness.penalties);
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

/// Verification is the slow part (2 s a batch here): with eight worker
/// threads, eight batches verify at once, not the default four; the blocks
/// go to the job and come back with its verdict, so the buffer bound holds
/// however many are out.
#[test]
fn verifications_in_flight_follow_the_worker_count() {
    assert_eq!(
        SyncConfig::default().verifications_max,
        VERIFICATIONS_DEFAULT
    );
    assert_eq!(
        SyncConfig::default().for_workers(1).verifications_max,
        VERIFICATIONS_DEFAULT,
        "fewer workers keep the pipeline's default"
    );
    assert_eq!(
        SyncConfig::default().for_workers(10_000).verifications_max,
        VERIFICATIONS_MAX
    );
    let run = |workers: usize| {
        let config = SyncConfig {
            peers_min: 1,
            batch_slots_max: 8,
            ..SyncConfig::default()
        }
        .for_workers(workers);
        let mut harness = Harness::new(config, 17);
        harness.verify_delay = Duration::from_secs(2);
        for peer in 1..=4 {
            harness.add_peer(peer, Behaviour::Honest, CHAIN_SLOTS);
        }
        harness.run_until(|h| h.synced.is_some());
        assert_eq!(harness.head(), CHAIN_SLOTS);
        let counters = harness.sync.counters();
        assert!(counters.buffered_bytes_max <= SYNC_BUFFER_BYTES_MAX);
        (counters.verifications_in_flight_max, harness.now)
    };
    let (four, slow) = run(2);
    let (eight, fast) = run(8);
    assert_eq!(four, VERIFICATIONS_DEFAULT);
    assert_eq!(eight, 8);
    assert!(
        fast < slow,
        "eight at once finish sooner: {fast:?} vs {slow:?}"
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
    // Claims far more than it has: it serves the blocks it holds, which
    // are peer 1's, honestly.
    harness
        .behaviours
        .insert(peer_id(2), Behaviour::HoldsUpTo(100));
    let mut claim = status(100);
    claim.head_slot = 10_000;
    harness
        .sync
        .handle_peer_status(harness.now, peer_id(2), claim, Score::ZERO);
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
fn a_round_whose_only_claimant_above_us_leaves_ends_at_the_head_the_others_share() {
    // Peers 1 and 2 hold slot 100; peer 3 proved a head far above it (a
    // gossiped block verified) and then never answers. When it leaves (a
    // ban, say), the batches asked of it are all that is left above our
    // head, and nobody we still hear claims more: the round must end and
    // say so, not wait for peers that would only confirm where we are.
    let mut harness = Harness::new(config(2), 31);
    harness.add_peer(1, Behaviour::Honest, 100);
    harness.add_peer(2, Behaviour::Honest, 100);
    harness.add_peer(3, Behaviour::Silent, CHAIN_SLOTS);
    harness
        .sync
        .handle_peer_block_verified(harness.now, peer_id(3), CHAIN_SLOTS);
    harness.drain();
    harness.run_until(|h| h.head() == 100);
    assert!(
        harness.sync.is_syncing(),
        "batches above 100 wait for peer 3"
    );
    assert_eq!(harness.synced, None);
    harness.remove_peer(3);
    let left_at = harness.now;
    harness.run_until(|h| h.synced.is_some());
    assert_eq!(harness.synced, Some(100));
    assert!(!harness.sync.is_syncing());
    assert!(
        harness.now < left_at + Duration::from_secs(1),
        "ended at once, not after a wait for peers ({:?})",
        harness.now
    );
}

#[test]
fn a_status_claiming_u64_max_slots_neither_panics_nor_requests_past_the_limits() {
    // No clock given: the machine alone must survive the claim. Slots
    // past SLOT_MAX are never believed, so nothing is asked; had it
    // been, the harness asserts `start + count` does not overflow.
    let mut harness = Harness::new(config(1), 21);
    harness.behaviours.insert(peer_id(1), Behaviour::Empty);
    let claim = PeerChain {
        head_slot: u64::MAX,
        head_root: Root([7; 32]),
        finalized_slot: u64::MAX,
        finalized_root: Root([8; 32]),
    };
    harness
        .sync
        .handle_peer_status(harness.now, peer_id(1), claim, Score::ZERO);
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
        head_root: Root([7; 32]),
        finalized_slot: SLOT_MAX - 1,
        finalized_root: Root([8; 32]),
    };
    near.sync
        .handle_peer_status(near.now, peer_id(1), claim, Score::ZERO);
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
    harness.sync.handle_clock(harness.now, 150);
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
        .handle_peer_status(harness.now, peer_id(1), status(180), Score::ZERO);
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
        .handle_peer_status(harness.now, peer_id(1), status(181), Score::ZERO);
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
        .handle_peer_block_verified(harness.now, peer_id(1), SYNC_DISTANCE_SLOTS);
    harness.drain();
    assert!(harness.sync.requests_in_flight() == 0);
    harness
        .sync
        .handle_peer_block_verified(harness.now, peer_id(1), CHAIN_SLOTS);
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
    sync.handle_peer_status(now, peer_id(1), status(150), Score::ZERO);
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
    sync.handle_response(
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
