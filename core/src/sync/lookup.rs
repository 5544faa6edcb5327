//! Parent lookups: fetch the unknown ancestors of a gossiped block by root.
//!
//! # Design
//! A gossiped block whose parent the chain does not know is held in a
//! [`Lookups`] entry, and its missing parent is asked for with BlocksByRoot,
//! first from the peer that sent the block, then from the other peers. Each
//! answer that is the block asked for extends the entry by one ancestor and
//! names the next missing root, until an ancestor's parent is known: then
//! the whole chain comes out as [`LookupAction::Ready`], parent first, for
//! the caller to verify and import. After Lighthouse's parent lookups:
//!
//! ```text
//!  handle_unknown_parent(block) ──► Queued ──RequestRoots{peer, [wanted]}──► Requesting
//!        (parent known: Ready at once)  ▲                                    │
//!                                       │ empty / error / timeout:           │ the block asked for
//!                                       │ next peer (attempts bounded)       ▼
//!                                       └──────────── wanted = its parent ◄──┤
//!                                                                            ├─ parent known ──► Ready{blocks}
//!                                    depth > PARENT_LOOKUP_DEPTH_MAX ──► SwitchToRangeSync
//!                                    wrong block ──► Penalise, next peer
//!                                    on a known-invalid root ──► Dropped
//! ```
//!
//! The chain is consulted through [`KnownBlocks`] (implemented for
//! [`ChainStore`]): whether a root is stored, whether it is known invalid.
//!
//! # Security
//! *Provided*: bounded memory ([`PENDING_BLOCKS_MAX`] blocks and
//! [`PENDING_BLOCKS_BYTES_MAX`] bytes held across all lookups, at most
//! [`LOOKUPS_MAX`] lookups, each with [`LOOKUP_ATTEMPTS_MAX`] attempts and a
//! [`LOOKUP_TIMEOUT`]); a peer answering with a block we did not ask for is
//! penalised and never advances a lookup (the root is checked, and a root
//! names the header that names the parent); chains built on known-invalid
//! roots are dropped; no recursion.
//!
//! The caller hands over only orphans whose own signature verified: their
//! root then pins every ancestor's root, so an answer with a made-up header
//! is a wrong block (penalised), and holding a lookup takes a real block.
//! One peer's orphans hold at most [`ORPHANS_PER_PEER_MAX`] places.
//!
//! *Not provided*: signature checks of ancestors (the caller verifies the
//! `Ready` chain before importing it, and penalises exactly the sender of a
//! block that fails); fairness between lookups when the set is full (a
//! new lookup is refused, so a flood of orphans cannot evict honest
//! lookups, but can delay new ones until theirs time out).
//!
//! # Limits
//! [`LOOKUPS_MAX`], [`PENDING_BLOCKS_MAX`], [`PENDING_BLOCKS_BYTES_MAX`],
//! [`PARENT_LOOKUP_DEPTH_MAX`], [`LOOKUP_ATTEMPTS_MAX`], [`ORPHANS_PER_PEER_MAX`],
//! [`LOOKUP_REQUEST_TIMEOUT`], [`LOOKUP_TIMEOUT`], [`LOOKUP_TIPS_MAX`],
//! [`LOOKUP_PEERS_MAX`], [`LOOKUP_OUTPUTS_MAX`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::chain::{ChainStore, Root, SignedBlock};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::{Duration, Instant};

use super::range::FetchError;

/// Lookups at once (Lighthouse: 200 lookups; ours hold their blocks, so fewer).
pub const LOOKUPS_MAX: usize = 32;
/// Blocks held across all lookups (the gossiped ones and their fetched ancestors).
pub const PENDING_BLOCKS_MAX: usize = 512;
/// Encoded bytes held across all lookups: two deep lookups of full blocks.
pub const PENDING_BLOCKS_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Ancestors one lookup may fetch; a longer gap is range sync's job (Lighthouse: 64).
pub const PARENT_LOOKUP_DEPTH_MAX: usize = 64;
/// Failed requests before a lookup is dropped (Lighthouse: 4 per parent).
pub const LOOKUP_ATTEMPTS_MAX: u32 = 4;
/// Our deadline for one BlocksByRoot answer, behind the req/resp layer's 10 s.
pub const LOOKUP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A lookup still unresolved this long after it started is dropped.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Gossiped blocks with the same unknown parent joined to one lookup.
pub const LOOKUP_TIPS_MAX: usize = 8;
/// Gossiped orphans one peer may have held across all lookups: a peer that
/// sends orphans (even validly signed ones it replays) cannot occupy more
/// than this many of the [`LOOKUPS_MAX`] lookups.
pub const ORPHANS_PER_PEER_MAX: usize = 4;
/// Peers we may ask, besides the senders of the gossiped blocks.
pub const LOOKUP_PEERS_MAX: usize = crate::limits::PEERS_MAX;
/// Queued outputs; the caller drains after every input.
pub const LOOKUP_OUTPUTS_MAX: usize = 256;

const _: () = assert!(PARENT_LOOKUP_DEPTH_MAX + LOOKUP_TIPS_MAX <= PENDING_BLOCKS_MAX);
const _: () = assert!(
    (PARENT_LOOKUP_DEPTH_MAX + 1) * crate::reqresp::limits::BLOCK_BYTES_MAX
        <= PENDING_BLOCKS_BYTES_MAX
);
const _: () = assert!(1 <= crate::reqresp::limits::ROOTS_PER_REQUEST_MAX);

/// What the lookups ask of the chain.
pub trait KnownBlocks {
    /// Whether the block `root` is stored (or is the genesis).
    fn contains(&self, root: &Root) -> bool;
    /// Whether `root` is remembered as invalid.
    fn is_known_invalid(&self, root: &Root) -> bool;
}

impl KnownBlocks for ChainStore {
    fn contains(&self, root: &Root) -> bool {
        ChainStore::contains(self, root)
    }

    fn is_known_invalid(&self, root: &Root) -> bool {
        ChainStore::is_known_invalid(self, root)
    }
}

/// Names one lookup.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LookupId(pub u64);

/// What a peer did wrong in a lookup.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LookupPenalty {
    /// It answered with a block whose root we did not ask for.
    WrongBlock,
    /// It answered with more blocks than roots asked for.
    TooManyBlocks,
}

/// Why a lookup ended without a result.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DropReason {
    /// Every attempt failed or no peer was left to ask.
    AttemptsExhausted,
    /// It took longer than [`LOOKUP_TIMEOUT`].
    TimedOut,
    /// The chain builds on a block known to be invalid.
    KnownInvalid,
    /// Holding the next ancestor would pass the pending bytes bound.
    Full,
}

/// What the caller must do; see each variant.
#[derive(Clone, PartialEq, Debug)]
pub enum LookupAction {
    /// Send BlocksByRoot(`roots`) to `peer`, then call [`Lookups::handle_response`].
    RequestRoots {
        /// The lookup the answer belongs to.
        lookup: LookupId,
        /// Whom to ask.
        peer: PeerId,
        /// The roots, at most `ROOTS_PER_REQUEST_MAX`.
        roots: Vec<Root>,
        /// Names this request: its answer is handed back with it, so an
        /// answer that comes after the lookup moved on (its block came by
        /// gossip, or the request timed out) is told from the one awaited.
        request: u64,
    },
    /// Verify and import `blocks`, in order (each the parent of the next, or
    /// siblings at the end): the first one's parent is known.
    Ready {
        /// The lookup that ended; `LookupId(0)` if the parent was known
        /// by the time the block arrived, so no lookup was needed.
        lookup: LookupId,
        /// Parent first.
        blocks: Vec<SignedBlock>,
        /// Who sent each block (same positions): a block that fails
        /// verification penalises exactly its sender.
        senders: Vec<PeerId>,
    },
    /// The gap is deeper than [`PARENT_LOOKUP_DEPTH_MAX`]: start range sync
    /// towards `head_slot` (`peers` have that chain). The lookup is dropped.
    SwitchToRangeSync {
        /// The lookup that ended.
        lookup: LookupId,
        /// The slot of the gossiped block.
        head_slot: u64,
        /// Peers that served or sent blocks of this chain.
        peers: Vec<PeerId>,
    },
    /// Lower `peer`'s score.
    Penalise {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: LookupPenalty,
    },
    /// The lookup ended without a result; its blocks were let go.
    Dropped {
        /// The lookup.
        lookup: LookupId,
        /// Why.
        reason: DropReason,
    },
}

/// What happened so far, for metrics and tests.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LookupCounters {
    /// Lookups started.
    pub started: u64,
    /// Gossiped blocks refused because the pending set was full.
    pub refused: u64,
    /// Requests emitted.
    pub requests_sent: u64,
    /// Lookups that produced a `Ready` chain.
    pub resolved: u64,
    /// Lookups handed over to range sync.
    pub switched_to_range: u64,
    /// Lookups dropped.
    pub dropped: u64,
    /// Penalties emitted.
    pub penalties: u64,
    /// Late answers ignored.
    pub stale_inputs: u64,
}

#[derive(Clone, Debug)]
enum LookupState {
    Queued,
    Requesting {
        peer: PeerId,
        sent_at: Instant,
        request: u64,
    },
}

#[derive(Clone, Debug)]
struct Lookup {
    started_at: Instant,
    /// Gossiped blocks: children of `ancestors[0]` (or of `wanted` if none).
    tips: Vec<SignedBlock>,
    /// Who sent each tip (same positions).
    tip_senders: Vec<PeerId>,
    /// Fetched ancestors, child first: `ancestors[i + 1]` is the parent of `ancestors[i]`.
    ancestors: Vec<SignedBlock>,
    /// Who served each ancestor (same positions).
    ancestor_senders: Vec<PeerId>,
    /// The root we are missing: the parent of the last ancestor (or of the tips).
    wanted: Root,
    /// Peers that sent or served blocks of this chain, first asked.
    senders: Vec<PeerId>,
    /// Peers asked for the current `wanted` that failed it.
    tried: BTreeSet<PeerId>,
    attempts: u32,
    state: LookupState,
    bytes: usize,
}

impl Lookup {
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn block_count(&self) -> usize {
        self.tips.len() + self.ancestors.len()
    }
}

/// The parent-lookup state machine (see the module docs).
///
/// Inputs are `on_*`; after each, drain [`Lookups::poll`] until `None`, then
/// sleep until [`Lookups::next_deadline`] and call [`Machine::handle_timeout`].
#[derive(Debug)]
pub struct Lookups {
    lookups: BTreeMap<LookupId, Lookup>,
    peers: BTreeSet<PeerId>,
    next_id: u64,
    /// The number the next request gets.
    next_request: u64,
    blocks: usize,
    bytes: usize,
    outputs: VecDeque<LookupAction>,
    counters: LookupCounters,
    last_now: Instant,
}

impl Default for Lookups {
    fn default() -> Lookups {
        Lookups::new()
    }
}

impl Lookups {
    /// No lookups, no peers.
    pub fn new() -> Lookups {
        Lookups {
            lookups: BTreeMap::new(),
            peers: BTreeSet::new(),
            next_id: 1,
            next_request: 0,
            blocks: 0,
            bytes: 0,
            outputs: VecDeque::new(),
            counters: LookupCounters::default(),
            last_now: Instant::ZERO,
        }
    }

    // --- Getters ------------------------------------------------------------------

    /// What happened so far.
    pub fn counters(&self) -> LookupCounters {
        self.counters
    }

    /// Lookups under way.
    pub fn len(&self) -> usize {
        self.lookups.len()
    }

    /// Whether no lookup is under way.
    pub fn is_empty(&self) -> bool {
        self.lookups.is_empty()
    }

    /// Blocks held across all lookups.
    pub fn pending_blocks(&self) -> usize {
        self.blocks
    }

    /// Bytes held across all lookups.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Checks every bound and the bookkeeping; panics on a bug.
    pub fn assert_invariants(&self) {
        let blocks: usize = self.lookups.values().map(Lookup::block_count).sum();
        let bytes: usize = self.lookups.values().map(|lookup| lookup.bytes).sum();
        assert_eq!(blocks, self.blocks);
        assert_eq!(bytes, self.bytes);
        assert!(self.blocks <= PENDING_BLOCKS_MAX);
        assert!(self.bytes <= PENDING_BLOCKS_BYTES_MAX);
        assert!(self.lookups.len() <= LOOKUPS_MAX);
        assert!(self.peers.len() <= LOOKUP_PEERS_MAX);
        assert!(self.outputs.len() <= LOOKUP_OUTPUTS_MAX);
        for lookup in self.lookups.values() {
            assert!(!lookup.tips.is_empty() && lookup.tips.len() <= LOOKUP_TIPS_MAX);
            assert!(lookup.ancestors.len() <= PARENT_LOOKUP_DEPTH_MAX);
            assert_eq!(lookup.tips.len(), lookup.tip_senders.len());
            assert_eq!(lookup.ancestors.len(), lookup.ancestor_senders.len());
            assert!(lookup.attempts < LOOKUP_ATTEMPTS_MAX);
            let lowest = lookup.ancestors.last().unwrap_or(&lookup.tips[0]);
            assert_eq!(lowest.parent_root(), lookup.wanted);
        }
    }

    // --- Inputs -------------------------------------------------------------------

    /// A peer we may ask (connected, on our network).
    pub fn handle_peer_connected(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        if self.peers.len() < LOOKUP_PEERS_MAX {
            self.peers.insert(peer);
        }
    }

    /// A peer left: its requests fail and it is not asked again.
    pub fn handle_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        self.peers.remove(&peer);
        let asked: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, lookup)| matches!(lookup.state, LookupState::Requesting { peer: p, .. } if p == peer))
            .map(|(id, _)| *id)
            .collect();
        for id in asked {
            self.request_failed(id, peer);
        }
    }

    /// `block`, from `peer`, could not be imported because its parent is
    /// unknown. Starts (or joins) a lookup of its ancestors.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    pub fn handle_unknown_parent(
        &mut self,
        now: Instant,
        block: SignedBlock,
        peer: PeerId,
        chain: &impl KnownBlocks,
    ) {
        self.advance(now);
        let parent = block.parent_root();
        if chain.is_known_invalid(&parent) || chain.is_known_invalid(&block.root()) {
            return;
        }
        let bytes = block.encoded_len();
        if chain.contains(&parent) {
            // Raced with the parent's import: nothing to look up.
            self.push_output(LookupAction::Ready {
                lookup: LookupId(0),
                blocks: vec![block],
                senders: vec![peer],
            });
            return;
        }
        if self.lookups.values().any(|lookup| {
            lookup
                .tips
                .iter()
                .chain(&lookup.ancestors)
                .any(|held| held.root() == block.root())
        }) {
            return;
        }
        if self.blocks.saturating_add(1) > PENDING_BLOCKS_MAX
            || self.bytes.saturating_add(bytes) > PENDING_BLOCKS_BYTES_MAX
        {
            self.counters.refused = self.counters.refused.saturating_add(1);
            return;
        }
        let held_from_peer: usize = self
            .lookups
            .values()
            .map(|lookup| {
                lookup
                    .tip_senders
                    .iter()
                    .filter(|sender| **sender == peer)
                    .count()
            })
            .sum();
        if held_from_peer >= ORPHANS_PER_PEER_MAX {
            self.counters.refused = self.counters.refused.saturating_add(1);
            return;
        }
        // A sibling of a lookup's tips joins it.
        if let Some(lookup) = self.lookups.values_mut().find(|lookup| {
            lookup.ancestors.is_empty()
                && lookup.wanted == parent
                && lookup.tips.len() < LOOKUP_TIPS_MAX
        }) {
            lookup.tips.push(block);
            lookup.tip_senders.push(peer);
            lookup.bytes += bytes;
            if !lookup.senders.contains(&peer) {
                lookup.senders.push(peer);
            }
            self.blocks += 1;
            self.bytes += bytes;
            return;
        }
        // The missing block of a lookup arrived by gossip.
        if let Some(id) = self
            .lookups
            .iter()
            .find(|(_, lookup)| lookup.wanted == block.root())
            .map(|(id, _)| *id)
        {
            self.extend(now, id, block, peer, chain);
            return;
        }
        if self.lookups.len() >= LOOKUPS_MAX {
            self.counters.refused = self.counters.refused.saturating_add(1);
            return;
        }
        let id = LookupId(self.next_id);
        self.next_id += 1;
        self.counters.started = self.counters.started.saturating_add(1);
        self.blocks += 1;
        self.bytes += bytes;
        self.lookups.insert(
            id,
            Lookup {
                started_at: now,
                tips: vec![block],
                tip_senders: vec![peer],
                ancestors: Vec::new(),
                ancestor_senders: Vec::new(),
                wanted: parent,
                senders: vec![peer],
                tried: BTreeSet::new(),
                attempts: 0,
                state: LookupState::Queued,
                bytes,
            },
        );
    }

    /// The answer to [`LookupAction::RequestRoots`] `request` for `lookup`.
    /// An answer to an earlier request of the lookup (it moved on since) is
    /// stale: counted and ignored, its sender not judged.
    pub fn handle_response(
        &mut self,
        now: Instant,
        lookup: LookupId,
        request: u64,
        result: Result<Vec<SignedBlock>, FetchError>,
        chain: &impl KnownBlocks,
    ) {
        self.advance(now);
        let Some(peer) = self
            .lookups
            .get(&lookup)
            .and_then(|entry| match entry.state {
                LookupState::Requesting {
                    peer,
                    request: awaited,
                    ..
                } if awaited == request => Some(peer),
                LookupState::Requesting { .. } | LookupState::Queued => None,
            })
        else {
            self.counters.stale_inputs = self.counters.stale_inputs.saturating_add(1);
            return;
        };
        let mut blocks = match result {
            Ok(blocks) => blocks,
            Err(_) => {
                self.request_failed(lookup, peer);
                return;
            }
        };
        if blocks.len() > 1 {
            self.penalise(peer, LookupPenalty::TooManyBlocks);
            self.request_failed(lookup, peer);
            return;
        }
        let Some(block) = blocks.pop() else {
            // It does not have the block: not a fault, ask another peer.
            self.request_failed(lookup, peer);
            return;
        };
        if block.root() != self.lookups[&lookup].wanted {
            log::debug!(
                "{peer:?}: lookup {lookup:?} asked for {:?}, got {:?} (slot {})",
                self.lookups[&lookup].wanted,
                block.root(),
                block.slot()
            );
            self.penalise(peer, LookupPenalty::WrongBlock);
            self.request_failed(lookup, peer);
            return;
        }
        self.extend(now, lookup, block, peer, chain);
    }

    /// The next action, or `None`.
    pub fn poll(&mut self, now: Instant) -> Option<LookupAction> {
        self.advance(now);
        if let Some(action) = self.outputs.pop_front() {
            return Some(action);
        }
        let (&id, lookup) = self
            .lookups
            .iter_mut()
            .find(|(_, lookup)| matches!(lookup.state, LookupState::Queued))?;
        // The senders first (they had the child, so likely the parent), then
        // the others, never one that failed this root.
        let peer = lookup
            .senders
            .iter()
            .chain(self.peers.iter())
            .find(|peer| !lookup.tried.contains(*peer))
            .copied();
        let Some(peer) = peer else {
            self.drop_lookup(id, DropReason::AttemptsExhausted);
            return self.outputs.pop_front();
        };
        let request = self.next_request;
        // One per request: a u64 cannot run out.
        self.next_request = self.next_request.wrapping_add(1);
        lookup.state = LookupState::Requesting {
            peer,
            sent_at: now,
            request,
        };
        self.counters.requests_sent = self.counters.requests_sent.saturating_add(1);
        Some(LookupAction::RequestRoots {
            lookup: id,
            peer,
            roots: vec![lookup.wanted],
            request,
        })
    }

    // --- Internals ----------------------------------------------------------------

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    fn push_output(&mut self, action: LookupAction) {
        if self.outputs.len() < LOOKUP_OUTPUTS_MAX {
            self.outputs.push_back(action);
        }
    }

    fn penalise(&mut self, peer: PeerId, reason: LookupPenalty) {
        self.counters.penalties = self.counters.penalties.saturating_add(1);
        self.push_output(LookupAction::Penalise { peer, reason });
    }

    /// `peer` failed to give us `wanted`: try another, or give up.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn request_failed(&mut self, id: LookupId, peer: PeerId) {
        let lookup = self.lookups.get_mut(&id).expect("caller names a lookup");
        lookup.tried.insert(peer);
        lookup.attempts += 1;
        lookup.state = LookupState::Queued;
        if lookup.attempts >= LOOKUP_ATTEMPTS_MAX {
            self.drop_lookup(id, DropReason::AttemptsExhausted);
        }
    }

    /// `block` is the root lookup `id` wanted: hold it and move one level up.
    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn extend(
        &mut self,
        _now: Instant,
        id: LookupId,
        block: SignedBlock,
        peer: PeerId,
        chain: &impl KnownBlocks,
    ) {
        let parent = block.parent_root();
        if chain.is_known_invalid(&parent) || chain.is_known_invalid(&block.root()) {
            self.drop_lookup(id, DropReason::KnownInvalid);
            return;
        }
        let bytes = block.encoded_len();
        if self.blocks.saturating_add(1) > PENDING_BLOCKS_MAX
            || self.bytes.saturating_add(bytes) > PENDING_BLOCKS_BYTES_MAX
        {
            self.drop_lookup(id, DropReason::Full);
            return;
        }
        let lookup = self.lookups.get_mut(&id).expect("caller names a lookup");
        if lookup.ancestors.len() >= PARENT_LOOKUP_DEPTH_MAX {
            let head_slot = lookup.tips.iter().map(SignedBlock::slot).max().unwrap_or(0);
            let mut peers = lookup.senders.clone();
            if !peers.contains(&peer) {
                peers.push(peer);
            }
            self.remove(id);
            self.counters.switched_to_range = self.counters.switched_to_range.saturating_add(1);
            self.push_output(LookupAction::SwitchToRangeSync {
                lookup: id,
                head_slot,
                peers,
            });
            return;
        }
        lookup.ancestors.push(block);
        lookup.ancestor_senders.push(peer);
        lookup.bytes += bytes;
        lookup.wanted = parent;
        lookup.tried.clear();
        lookup.attempts = 0;
        lookup.state = LookupState::Queued;
        if !lookup.senders.contains(&peer) && lookup.senders.len() < LOOKUP_TIPS_MAX + 1 {
            lookup.senders.push(peer);
        }
        self.blocks += 1;
        self.bytes += bytes;
        if chain.contains(&parent) {
            let lookup = self.remove(id);
            let mut blocks = lookup.ancestors;
            blocks.reverse();
            blocks.extend(lookup.tips);
            let mut senders = lookup.ancestor_senders;
            senders.reverse();
            senders.extend(lookup.tip_senders);
            self.counters.resolved = self.counters.resolved.saturating_add(1);
            self.push_output(LookupAction::Ready {
                lookup: id,
                blocks,
                senders,
            });
        }
    }

    #[allow(clippy::arithmetic_side_effects)] // Our own bookkeeping: each sum is bounded by a limit checked before it (see `assert_invariants`), each difference undoes an earlier sum.
    fn remove(&mut self, id: LookupId) -> Lookup {
        let lookup = self.lookups.remove(&id).expect("caller names a lookup");
        self.blocks -= lookup.block_count();
        self.bytes -= lookup.bytes;
        lookup
    }

    fn drop_lookup(&mut self, id: LookupId, reason: DropReason) {
        self.remove(id);
        self.counters.dropped = self.counters.dropped.saturating_add(1);
        self.push_output(LookupAction::Dropped { lookup: id, reason });
    }
}

impl Machine for Lookups {
    /// Time passed: requests and lookups past their deadlines fail.
    fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let ids: Vec<LookupId> = self.lookups.keys().copied().collect();
        for id in ids {
            let Some(lookup) = self.lookups.get(&id) else {
                continue;
            };
            if now >= lookup.started_at.saturating_add(LOOKUP_TIMEOUT) {
                self.drop_lookup(id, DropReason::TimedOut);
                continue;
            }
            if let LookupState::Requesting { peer, sent_at, .. } = lookup.state {
                if now >= sent_at.saturating_add(LOOKUP_REQUEST_TIMEOUT) {
                    self.request_failed(id, peer);
                }
            }
        }
    }

    /// When [`Machine::handle_timeout`] must next be called.
    fn next_deadline(&self) -> Option<Instant> {
        self.lookups
            .values()
            .flat_map(|lookup| {
                let request = match lookup.state {
                    LookupState::Requesting { sent_at, .. } => {
                        Some(sent_at.saturating_add(LOOKUP_REQUEST_TIMEOUT))
                    }
                    LookupState::Queued => None,
                };
                request
                    .into_iter()
                    .chain(Some(lookup.started_at.saturating_add(LOOKUP_TIMEOUT)))
            })
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;
    use crate::chain::block::{body_root, BlockHeader, SIGNATURE_BYTES};
    use crate::chain::verify::signed_chain;
    use crate::chain::{devnet_keys, verify_batch_locating, Genesis};
    use blst::min_pk::SecretKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::OnceLock;

    const STEPS_MAX: usize = 1_000;

    struct Fixture {
        genesis: Genesis,
        blocks: Vec<SignedBlock>,
    }

    /// 90 signed blocks, one per slot from 1.
    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let keys = devnet_keys(9, 2);
            let public = keys.iter().map(SecretKey::sk_to_pk).collect();
            let genesis = Genesis::new(6, 0, 1_000, public, 64).unwrap();
            let blocks = signed_chain(&genesis, &keys, genesis.root(), 1, 90, 32);
            Fixture { genesis, blocks }
        })
    }

    fn block_at(slot: u64) -> SignedBlock {
        fixture().blocks[slot as usize - 1].clone()
    }

    fn peer(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    /// A store holding slots 1..=`head`.
    fn store_up_to(head: u64) -> ChainStore {
        let mut store = ChainStore::new(&fixture().genesis);
        for slot in 1..=head {
            store.import(block_at(slot)).unwrap();
        }
        store
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Behaviour {
        Honest,
        WrongBlock,
        Empty,
        Silent,
    }

    /// Drives the lookups: answers requests as each peer's behaviour says,
    /// lets time pass for silent ones; returns every other action.
    fn drive(
        lookups: &mut Lookups,
        store: &ChainStore,
        behaviours: &BTreeMap<PeerId, Behaviour>,
        now: &mut Instant,
    ) -> Vec<LookupAction> {
        let mut out = Vec::new();
        for _ in 0..STEPS_MAX {
            lookups.assert_invariants();
            let Some(action) = lookups.poll(*now) else {
                match lookups.next_deadline() {
                    Some(deadline) => {
                        *now = (*now).max(deadline);
                        lookups.handle_timeout(*now);
                        continue;
                    }
                    None => return out,
                }
            };
            let LookupAction::RequestRoots {
                lookup,
                peer,
                roots,
                request,
            } = action
            else {
                out.push(action);
                continue;
            };
            assert_eq!(roots.len(), 1);
            let wanted = fixture().blocks.iter().find(|b| b.root() == roots[0]);
            let answer = match behaviours[&peer] {
                Behaviour::Honest => Some(wanted.cloned().into_iter().collect()),
                Behaviour::WrongBlock => Some(vec![block_at(1)]),
                Behaviour::Empty => Some(Vec::new()),
                Behaviour::Silent => None,
            };
            *now = *now + Duration::from_millis(100);
            if let Some(blocks) = answer {
                lookups.handle_response(*now, lookup, request, Ok(blocks), store);
            }
        }
        panic!("lookups still running after {STEPS_MAX} steps");
    }

    fn setup(behaviours: &[(u8, Behaviour)]) -> (Lookups, BTreeMap<PeerId, Behaviour>, Instant) {
        let now = Instant::from_micros(1_000_000);
        let mut lookups = Lookups::new();
        let mut map = BTreeMap::new();
        for &(index, behaviour) in behaviours {
            lookups.handle_peer_connected(now, peer(index));
            map.insert(peer(index), behaviour);
        }
        (lookups, map, now)
    }

    #[test]
    fn finds_ancestors_up_to_the_depth_limit() {
        let mut store = store_up_to(10);
        let (mut lookups, behaviours, mut now) = setup(&[(1, Behaviour::Honest)]);
        // Slots 11..=74 are missing: 64 ancestors.
        lookups.handle_unknown_parent(now, block_at(75), peer(1), &store);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        assert_eq!(out.len(), 1, "{out:?}");
        let LookupAction::Ready {
            blocks, senders, ..
        } = &out[0]
        else {
            panic!("expected Ready, got {out:?}");
        };
        let slots: Vec<u64> = blocks.iter().map(SignedBlock::slot).collect();
        assert_eq!(slots, (11..=75).collect::<Vec<_>>(), "parent first");
        assert_eq!(senders, &vec![peer(1); 65]);
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        assert_eq!(
            verify_batch_locating(&fixture().genesis, blocks, &mut rng),
            Ok(())
        );
        for block in blocks.iter().cloned() {
            store.import(block).unwrap();
        }
        assert_eq!(store.head().slot, 75);
        assert_eq!(lookups.counters().requests_sent, 64);
        assert!(lookups.is_empty());
        assert_eq!((lookups.pending_blocks(), lookups.pending_bytes()), (0, 0));
    }

    #[test]
    fn a_deeper_gap_switches_to_range_sync() {
        let store = store_up_to(10);
        let (mut lookups, behaviours, mut now) = setup(&[(1, Behaviour::Honest)]);
        // Slots 11..=75 are missing: 65 ancestors.
        lookups.handle_unknown_parent(now, block_at(76), peer(1), &store);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        assert_eq!(
            out,
            vec![LookupAction::SwitchToRangeSync {
                lookup: LookupId(1),
                head_slot: 76,
                peers: vec![peer(1)],
            }]
        );
        assert_eq!(lookups.counters().switched_to_range, 1);
        assert_eq!(lookups.pending_blocks(), 0);
    }

    #[test]
    fn a_wrong_block_penalises_its_sender_and_another_peer_serves() {
        let store = store_up_to(10);
        let (mut lookups, behaviours, mut now) = setup(&[
            (1, Behaviour::WrongBlock),
            (2, Behaviour::Empty),
            (3, Behaviour::Honest),
        ]);
        lookups.handle_unknown_parent(now, block_at(13), peer(1), &store);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        let penalties: Vec<&LookupAction> = out
            .iter()
            .filter(|a| matches!(a, LookupAction::Penalise { .. }))
            .collect();
        assert!(!penalties.is_empty());
        assert!(penalties.iter().all(|a| **a
            == LookupAction::Penalise {
                peer: peer(1),
                reason: LookupPenalty::WrongBlock
            }));
        let ready: (Vec<u64>, Vec<PeerId>) = out
            .iter()
            .find_map(|a| match a {
                LookupAction::Ready {
                    blocks, senders, ..
                } => Some((
                    blocks.iter().map(SignedBlock::slot).collect(),
                    senders.clone(),
                )),
                _ => None,
            })
            .expect("resolved by peer 3");
        assert_eq!(ready, (vec![11, 12, 13], vec![peer(3), peer(3), peer(1)]));
    }

    /// The block a lookup is asking a peer for arrives by gossip first: the
    /// lookup moves on to its parent, and the peer's answer, when it comes,
    /// is to a request the lookup no longer awaits. It is stale: ignored,
    /// and the honest peer that sent it is not penalised (it used to be
    /// charged a wrong block, and a restarted node scored honest peers out).
    #[test]
    fn an_answer_overtaken_by_gossip_is_stale_not_wrong() {
        let store = store_up_to(10);
        let now = Instant::from_micros(1_000_000);
        let mut lookups = Lookups::new();
        lookups.handle_peer_connected(now, peer(1));
        lookups.handle_unknown_parent(now, block_at(13), peer(1), &store);
        let Some(LookupAction::RequestRoots {
            lookup, request, ..
        }) = lookups.poll(now)
        else {
            panic!("a lookup asks for the missing parent");
        };
        // Slot 12 arrives by gossip (its own parent unknown too).
        lookups.handle_unknown_parent(now, block_at(12), peer(1), &store);
        let Some(LookupAction::RequestRoots {
            roots,
            request: next,
            ..
        }) = lookups.poll(now)
        else {
            panic!("the lookup asks for slot 11 next");
        };
        assert_eq!(roots, vec![block_at(11).root()]);
        assert_ne!(next, request);
        // The first answer, slot 12, comes in late.
        lookups.handle_response(now, lookup, request, Ok(vec![block_at(12)]), &store);
        assert_eq!(lookups.counters().penalties, 0);
        assert_eq!(lookups.counters().stale_inputs, 1);
        assert_eq!(lookups.poll(now), None, "still awaiting slot 11");
        lookups.handle_response(now, lookup, next, Ok(vec![block_at(11)]), &store);
        let Some(LookupAction::Ready { blocks, .. }) = lookups.poll(now) else {
            panic!("resolved");
        };
        let slots: Vec<u64> = blocks.iter().map(SignedBlock::slot).collect();
        assert_eq!(slots, vec![11, 12, 13]);
    }

    #[test]
    fn silent_peers_exhaust_the_attempts() {
        let store = store_up_to(10);
        let (mut lookups, behaviours, mut now) =
            setup(&[(1, Behaviour::Silent), (2, Behaviour::Silent)]);
        let started = now;
        lookups.handle_unknown_parent(now, block_at(13), peer(1), &store);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        assert_eq!(
            out,
            vec![LookupAction::Dropped {
                lookup: LookupId(1),
                reason: DropReason::AttemptsExhausted
            }]
        );
        // Two peers, one request each, each timed out.
        assert_eq!(lookups.counters().requests_sent, 2);
        assert!(now >= started + LOOKUP_REQUEST_TIMEOUT * 2);
        assert!(lookups.is_empty());
    }

    #[test]
    fn a_chain_on_a_known_invalid_root_is_dropped() {
        let mut store = store_up_to(10);
        let (mut lookups, behaviours, mut now) = setup(&[(1, Behaviour::Honest)]);
        store.mark_invalid(block_at(12).root());
        lookups.handle_unknown_parent(now, block_at(14), peer(1), &store);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        assert_eq!(
            out,
            vec![LookupAction::Dropped {
                lookup: LookupId(1),
                reason: DropReason::KnownInvalid
            }]
        );
        // A block whose parent is known invalid starts nothing.
        lookups.handle_unknown_parent(now, block_at(13), peer(1), &store);
        assert!(lookups.is_empty());
        assert_eq!(lookups.poll(now), None);
    }

    #[test]
    fn siblings_join_and_a_known_parent_is_ready_at_once() {
        let store = store_up_to(10);
        let (mut lookups, behaviours, mut now) = setup(&[(1, Behaviour::Honest)]);
        let child = block_at(12);
        // A sibling: same parent (slot 11), another body.
        let body = b"sibling".to_vec();
        let sibling = SignedBlock {
            header: BlockHeader {
                slot: 13,
                body_root: body_root(&body),
                ..child.header
            },
            body,
            signature: [0; SIGNATURE_BYTES],
        };
        lookups.handle_unknown_parent(now, child, peer(1), &store);
        lookups.handle_unknown_parent(now, sibling, peer(2), &store);
        assert_eq!(lookups.len(), 1);
        assert_eq!(lookups.pending_blocks(), 2);
        let out = drive(&mut lookups, &store, &behaviours, &mut now);
        let LookupAction::Ready {
            blocks, senders, ..
        } = &out[0]
        else {
            panic!("expected Ready, got {out:?}");
        };
        let slots: Vec<u64> = blocks.iter().map(SignedBlock::slot).collect();
        assert_eq!(slots, vec![11, 12, 13]);
        assert_eq!(senders, &vec![peer(1), peer(1), peer(2)]);

        lookups.handle_unknown_parent(now, block_at(11), peer(1), &store);
        assert!(matches!(
            lookups.poll(now),
            Some(LookupAction::Ready {
                lookup: LookupId(0),
                ..
            })
        ));
    }

    #[test]
    fn one_peer_cannot_hold_more_than_its_share_of_lookups() {
        // A lookup squatter sends orphans on made-up parents: it gets
        // ORPHANS_PER_PEER_MAX places, and the rest stay free for others.
        let store = store_up_to(0);
        let (mut lookups, _, now) = setup(&[(1, Behaviour::Honest)]);
        let orphan = |index: u64| {
            let body = index.to_be_bytes().to_vec();
            SignedBlock {
                header: BlockHeader {
                    slot: 100 + index,
                    proposer_index: 0,
                    parent_root: Root([index as u8 + 1; 32]),
                    body_root: body_root(&body),
                },
                body,
                signature: [0; SIGNATURE_BYTES],
            }
        };
        for index in 0..20 {
            lookups.handle_unknown_parent(now, orphan(index), peer(9), &store);
            lookups.assert_invariants();
        }
        assert_eq!(lookups.len(), ORPHANS_PER_PEER_MAX);
        assert_eq!(lookups.counters().refused, 20 - ORPHANS_PER_PEER_MAX as u64);
        lookups.handle_unknown_parent(now, orphan(50), peer(8), &store);
        assert_eq!(
            lookups.len(),
            ORPHANS_PER_PEER_MAX + 1,
            "another peer still gets a place"
        );
    }

    #[test]
    fn the_pending_set_is_bounded() {
        let store = store_up_to(0);
        let (mut lookups, _, now) = setup(&[(1, Behaviour::Honest)]);
        for index in 0..(LOOKUPS_MAX as u64 + 10) {
            let body = index.to_be_bytes().to_vec();
            let orphan = SignedBlock {
                header: BlockHeader {
                    slot: 100 + index,
                    proposer_index: 0,
                    parent_root: Root([index as u8; 32]),
                    body_root: body_root(&body),
                },
                body,
                signature: [0; SIGNATURE_BYTES],
            };
            lookups.handle_unknown_parent(now, orphan, peer(1 + (index % 200) as u8), &store);
            lookups.assert_invariants();
        }
        assert_eq!(lookups.len(), LOOKUPS_MAX);
        assert_eq!(lookups.counters().refused, 10);
        // The bound on pending blocks would refuse an orphan on a full set too.
        assert!(lookups.pending_blocks() <= PENDING_BLOCKS_MAX);
    }
}
