//! Hostile behaviour on the production code path, for the simulator and the
//! fuzzer: what a node with [`super::Faults`] set does instead of the honest
//! thing. An honest node (every fault off) never enters this module's
//! branches: each hook returns `None` or does nothing at once.
//!
//! # Design
//! Five hooks, each at the one place the honest behaviour is decided:
//! - [`Node::announced_status`], where our Status is built for a request or
//!   an answer: a Status liar ([`StatusClaim`]) or a future-block server
//!   claims a chain it does not have;
//! - [`Node::hostile_answer`], where BlocksByRange and BlocksByRoot are
//!   served: a future-block server slips its forged block into the range,
//!   an oversize server streams the largest blocks the request allows past
//!   every honest byte budget, a lookup squatter serves made-up ancestors;
//! - [`Node::hostile_tick`] and [`Node::hostile_deadline`], the squatter's
//!   timer: every [`SQUAT_INTERVAL`] it gossips an orphan whose made-up
//!   ancestors it alone can serve;
//! - [`Node::hostile_find_node_answer`], where FIND_NODE is answered: a
//!   Sybil answers from its fixed set of records, nearest the target first;
//! - `ChainState::new` (in `chain.rs`) keeps a future-block server's keys
//!   away from honest production: it signs only its forged block.
//!
//! # Limits
//! Made-up chains kept: [`SQUAT_CHAINS_MAX`] of [`SQUAT_CHAIN_BLOCKS`]
//! blocks each. Oversize answers stay below the driver's
//! `PENDING_SEND_BYTES_MAX` once compressed, so the liar keeps its
//! connection and the victim has to read them.

use std::collections::{BTreeMap, VecDeque};

use log::debug;

use super::Node;
use crate::chain::block::{body_root, BlockHeader, BLOCK_BODY_BYTES_MAX, SIGNATURE_BYTES};
use crate::chain::{BlockProducer, Root, SignedBlock};
use crate::discovery::limits::BUCKET_ENTRIES_MAX;
use crate::discovery::{Distance, FindNodeAnswer, FindNodeRequest, Key, Record};
use crate::identity::PeerId;
use crate::reqresp::bodies::{BlocksByRangeRequest, BlocksByRootRequest, Body, Status};
use crate::reqresp::{Answer, ProtocolId};
use crate::time::{Duration, Instant};

/// A lie about our chain, told in every Status we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StatusClaim {
    /// Head and finalized checkpoint at slot `u64::MAX`, on made-up roots:
    /// arithmetic on the claim overflows.
    MaxSlots,
    /// A head this many slots past the clock, finalized one slot below it,
    /// on made-up roots: a chain nobody can serve.
    FarFuture {
        /// Slots past the current one.
        slots_ahead: u64,
    },
    /// A head this many slots past the clock, and a finalized checkpoint at
    /// the current slot on a made-up root: finality on another chain.
    OtherFinalizedRoot {
        /// Slots past the current one.
        slots_ahead: u64,
    },
}

/// How often a lookup squatter gossips an orphan (one slot of the devnet).
pub const SQUAT_INTERVAL: Duration = Duration::from_secs(2);
/// Blocks in one made-up chain: deeper than a parent lookup goes
/// (`sync::lookup::PARENT_LOOKUP_DEPTH_MAX`), so every lookup runs to its end.
pub const SQUAT_CHAIN_BLOCKS: u64 = crate::sync::lookup::PARENT_LOOKUP_DEPTH_MAX as u64 + 6;
/// Made-up chains a squatter keeps to serve (the oldest is forgotten).
pub const SQUAT_CHAINS_MAX: usize = 8;
/// Body bytes of a made-up ancestor.
const SQUAT_BODY_BYTES: usize = 64;
/// Blocks of one oversize answer at most: a whole range request of the
/// largest blocks, 64 MiB before compression, against the 4 MiB an honest
/// server sends and the victim's per-request budget.
pub const OVERSIZE_BLOCKS_MAX: usize = 64;
/// A made-up root's filler byte; any value that is no real root works.
const MADE_UP_ROOT_BYTE: u8 = 0xee;

/// What a hostile node remembers between hooks. Empty for an honest node.
#[derive(Default)]
pub(super) struct HostileState {
    /// The future-block server's forged block, signed once.
    forged: Option<SignedBlock>,
    /// The oversize server's body (one, shared by every block) and its root.
    oversize_body: Option<(Vec<u8>, Root)>,
    /// The squatter's made-up chains (their roots), oldest first.
    squat_chains: VecDeque<Vec<Root>>,
    /// Every block of those chains, by root.
    squat_blocks: BTreeMap<Root, SignedBlock>,
    /// When the squatter next gossips an orphan.
    next_squat: Option<Instant>,
    /// Made-up chains so far (each starts from a root named after it).
    squats: u64,
}

impl Node {
    /// The slot the clock is in.
    fn clock_slot(&self, now: Instant) -> u64 {
        let unix_ms = self
            .config
            .unix_ms_at_origin
            .saturating_add(now.as_millis());
        self.chain.genesis().slot_at(unix_ms)
    }

    /// The Status we send in a request or an answer: ours, or the lie our
    /// faults tell.
    pub(super) fn announced_status(&mut self, now: Instant) -> Status {
        let mut status = self.our_status();
        let made_up = Root([MADE_UP_ROOT_BYTE; 32]);
        if let Some(forged) = self.forged_block(now) {
            status.head_slot = forged.slot();
            status.head_root = forged.root();
            return status;
        }
        let clock_slot = self.clock_slot(now);
        match self.config.faults.status_claim {
            None => {}
            Some(StatusClaim::MaxSlots) => {
                status.head_slot = u64::MAX;
                status.head_root = made_up;
                status.finalized_slot = u64::MAX;
                status.finalized_root = made_up;
            }
            Some(StatusClaim::FarFuture { slots_ahead }) => {
                status.head_slot = clock_slot.saturating_add(slots_ahead);
                status.head_root = made_up;
                status.finalized_slot = status.head_slot.saturating_sub(1);
                status.finalized_root = made_up;
            }
            Some(StatusClaim::OtherFinalizedRoot { slots_ahead }) => {
                status.head_slot = clock_slot.saturating_add(slots_ahead);
                status.head_root = made_up;
                status.finalized_slot = clock_slot;
                status.finalized_root = made_up;
            }
        }
        status
    }

    /// A future-block server's forged block: signed at the first call, at
    /// the first slot `future_block_slots_ahead` or more past the clock that
    /// one of our keys proposes, on our head of that moment.
    fn forged_block(&mut self, now: Instant) -> Option<&SignedBlock> {
        let slots_ahead = self.config.faults.future_block_slots_ahead?;
        if self.hostile.forged.is_none() {
            let genesis = self.chain.genesis().clone();
            let producers: Vec<BlockProducer> = self
                .config
                .chain
                .proposer_keys
                .iter()
                .filter_map(|key| BlockProducer::new((*key.0).clone(), &genesis))
                .collect();
            let first = self.clock_slot(now).saturating_add(slots_ahead);
            let keys = genesis.proposer_keys().len() as u64;
            let forged = (first..first.saturating_add(keys)).find_map(|slot| {
                let producer = producers.iter().find(|p| p.is_proposer_at(slot))?;
                Some(producer.produce(slot, self.chain.store().head().root, vec![0; 32]))
            });
            let Some(forged) = forged else {
                debug!("no proposer key of ours: nothing to forge");
                return None;
            };
            debug!("forged a block at slot {}", forged.slot());
            self.hostile.forged = Some(forged);
        }
        self.hostile.forged.as_ref()
    }

    /// The answer our faults give to a BlocksByRange or BlocksByRoot
    /// request instead of the honest one, if any.
    pub(super) fn hostile_answer(
        &mut self,
        now: Instant,
        protocol: ProtocolId,
        body: &[u8],
        chunks_max: u64,
    ) -> Option<Answer> {
        let oversize_answers = self.config.faults.oversize_answers;
        let lookup_squatting = self.config.faults.lookup_squatting;
        let chunks_max = usize::try_from(chunks_max).unwrap_or(usize::MAX);
        match protocol {
            ProtocolId::BlocksByRange => {
                let request = BlocksByRangeRequest::decode(body).ok()?;
                if oversize_answers {
                    let count = usize::try_from(request.count).unwrap_or(usize::MAX);
                    let blocks = count.min(chunks_max).min(OVERSIZE_BLOCKS_MAX);
                    return Some(self.oversize_answer(request.start_slot, blocks));
                }
                let forged = self.forged_block(now)?.clone();
                // Our blocks up to the forged one's parent, then the forged
                // one: nothing in between.
                let parent_slot = self
                    .chain
                    .store()
                    .block_by_root(&forged.parent_root())
                    .map_or(0, SignedBlock::slot);
                let mut chunks: Vec<Vec<u8>> = self
                    .chain
                    .store()
                    .canonical_range(request.start_slot, request.count)
                    .into_iter()
                    .filter(|block| block.slot() <= parent_slot)
                    .map(SignedBlock::encode)
                    .collect();
                let in_range = forged.slot() >= request.start_slot
                    && forged.slot() < request.end_slot()
                    && chunks.len() < chunks_max;
                if in_range {
                    chunks.push(forged.encode());
                }
                chunks.truncate(chunks_max);
                Some(Answer::Chunks(chunks))
            }
            ProtocolId::BlocksByRoot => {
                let request = BlocksByRootRequest::decode(body).ok()?;
                if oversize_answers {
                    let blocks = request.roots.len().min(chunks_max);
                    return Some(self.oversize_answer(1, blocks));
                }
                let forged = self.forged_block(now).cloned();
                if forged.is_none() && !lookup_squatting {
                    return None;
                }
                let chunks = request
                    .roots
                    .iter()
                    .filter_map(|root| {
                        self.chain
                            .store()
                            .block_by_root(root)
                            .or_else(|| forged.as_ref().filter(|block| block.root() == *root))
                            .or_else(|| self.hostile.squat_blocks.get(root))
                    })
                    .take(chunks_max)
                    .map(SignedBlock::encode)
                    .collect();
                Some(Answer::Chunks(chunks))
            }
            _ => None,
        }
    }

    /// `blocks` blocks of the largest size, from `start_slot` on, each the
    /// child of the one before, the first on a made-up parent, none signed.
    fn oversize_answer(&mut self, start_slot: u64, blocks: usize) -> Answer {
        let (body, root) = self.hostile.oversize_body.get_or_insert_with(|| {
            let body = vec![0x5a; BLOCK_BODY_BYTES_MAX];
            let root = body_root(&body);
            (body, root)
        });
        let genesis = self.chain.genesis();
        let mut parent_root = Root([MADE_UP_ROOT_BYTE; 32]);
        let mut chunks = Vec::with_capacity(blocks);
        for slot in (start_slot..).take(blocks) {
            let block = SignedBlock {
                header: BlockHeader {
                    slot,
                    proposer_index: genesis.proposer_index_at(slot),
                    parent_root,
                    body_root: *root,
                },
                body: body.clone(),
                signature: [MADE_UP_ROOT_BYTE; SIGNATURE_BYTES],
            };
            parent_root = block.root();
            chunks.push(block.encode());
        }
        Answer::Chunks(chunks)
    }

    /// A Sybil's FIND_NODE answer ([`super::Faults::find_node_records`]):
    /// the records of its set nearest `request`'s target, at most
    /// [`BUCKET_ENTRIES_MAX`], without `asker`'s own; `None` for an honest node.
    pub(super) fn hostile_find_node_answer(
        &self,
        asker: PeerId,
        request: &FindNodeRequest,
    ) -> Option<FindNodeAnswer> {
        let set = self.config.faults.find_node_records.as_ref()?;
        let mut nearest: Vec<(Distance, &Record)> = set
            .iter()
            .filter(|record| record.peer() != asker)
            .map(|record| {
                (
                    Key::of_peer(&record.peer()).distance(&request.target),
                    record,
                )
            })
            .collect();
        // Keys are hashes of distinct ids: no two distances are equal.
        nearest.sort_by_key(|(distance, _)| *distance);
        let records = nearest
            .into_iter()
            .take(BUCKET_ENTRIES_MAX)
            .map(|(_, record)| record.clone())
            .collect();
        Some(FindNodeAnswer { records })
    }

    /// When [`Node::hostile_tick`] must next run, if ever.
    pub(super) fn hostile_deadline(&self) -> Option<Instant> {
        if !self.config.faults.lookup_squatting {
            return None;
        }
        Some(self.hostile.next_squat.unwrap_or(Instant::ZERO))
    }

    /// The squatter's timer: gossip an orphan at the current slot on a
    /// made-up chain of [`SQUAT_CHAIN_BLOCKS`] unsigned ancestors, which we
    /// then serve by root so that every lookup of it runs its full depth.
    pub(super) fn hostile_tick(&mut self, now: Instant) {
        if !self.config.faults.lookup_squatting
            || self.hostile.next_squat.is_some_and(|at| at > now)
        {
            return;
        }
        self.hostile.next_squat = Some(now + SQUAT_INTERVAL);
        let top = self.clock_slot(now);
        if top < 2 {
            return;
        }
        self.hostile.squats += 1;
        let mut parent_root = Root([MADE_UP_ROOT_BYTE; 32]);
        parent_root.0[..8].copy_from_slice(&self.hostile.squats.to_be_bytes());
        let body = vec![0xa5; SQUAT_BODY_BYTES];
        let body_root = body_root(&body);
        let genesis = self.chain.genesis().clone();
        let bottom = top.saturating_sub(SQUAT_CHAIN_BLOCKS).max(1);
        let mut roots = Vec::new();
        let mut orphan = None;
        for slot in bottom..=top {
            let block = SignedBlock {
                header: BlockHeader {
                    slot,
                    proposer_index: genesis.proposer_index_at(slot),
                    parent_root,
                    body_root,
                },
                body: body.clone(),
                signature: [MADE_UP_ROOT_BYTE; SIGNATURE_BYTES],
            };
            parent_root = block.root();
            if slot == top {
                orphan = Some(block);
            } else {
                roots.push(parent_root);
                self.hostile.squat_blocks.insert(parent_root, block);
            }
        }
        self.hostile.squat_chains.push_back(roots);
        while self.hostile.squat_chains.len() > SQUAT_CHAINS_MAX {
            for root in self.hostile.squat_chains.pop_front().unwrap_or_default() {
                self.hostile.squat_blocks.remove(&root);
            }
        }
        let Some(orphan) = orphan else {
            return;
        };
        let topic = self.chain.blocks_topic().clone();
        if let Err(error) = self
            .gossip
            .router_mut()
            .publish(now, topic, &orphan.encode())
        {
            debug!("orphan at slot {top} not published: {error:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chain::block::SIGNED_BLOCK_BYTES_MAX;
    use crate::chain::{devnet_keys, ProposerKey};
    use crate::identity::Identity;
    use crate::node::{Config, Faults};

    fn node_with(faults: Faults, proposer: bool) -> Node {
        let mut config = Config::new(1);
        config.faults = faults;
        config.chain.follow_gossip = true;
        if proposer {
            let key = devnet_keys(1, 1).remove(0);
            config.chain.proposer_keys = vec![ProposerKey(Arc::new(key))];
        }
        Node::new(config, Identity::from_seed(7), [7; 32])
    }

    fn at_secs(seconds: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(seconds)
    }

    fn decoded(answer: Option<Answer>) -> Vec<SignedBlock> {
        match answer {
            Some(Answer::Chunks(chunks)) => chunks
                .iter()
                .map(|chunk| SignedBlock::decode(chunk).expect("a block"))
                .collect(),
            other => panic!("no block answer: {other:?}"),
        }
    }

    #[test]
    fn an_honest_node_announces_its_own_status_and_serves_honestly() {
        let mut node = node_with(Faults::default(), true);
        assert_eq!(node.announced_status(at_secs(100)), node.our_status());
        let range = BlocksByRangeRequest {
            start_slot: 1,
            count: 64,
        };
        let answer =
            node.hostile_answer(at_secs(100), ProtocolId::BlocksByRange, &range.encode(), 64);
        assert!(answer.is_none());
        assert_eq!(node.hostile_deadline(), None);
    }

    #[test]
    fn a_sybil_answers_find_node_from_its_set_nearest_first_never_the_asker() {
        let record = |seed: u64| {
            let addr = std::net::SocketAddr::from(([45, 33, seed as u8, 1], 9000));
            Record::sign(&Identity::from_seed(seed), 1, 1, &[addr])
        };
        let set: Vec<Record> = (100..100 + BUCKET_ENTRIES_MAX as u64 + 4)
            .map(record)
            .collect();
        let asker = set[3].peer();
        let request = FindNodeRequest {
            target: Key([0x5a; 32]),
        };
        let honest = node_with(Faults::default(), false);
        assert_eq!(honest.hostile_find_node_answer(asker, &request), None);

        let sybil = node_with(
            Faults {
                find_node_records: Some(set.clone()),
                ..Faults::default()
            },
            false,
        );
        let answer = sybil
            .hostile_find_node_answer(asker, &request)
            .expect("a Sybil answers from its set");
        let mut expected: Vec<&Record> = set.iter().filter(|r| r.peer() != asker).collect();
        expected.sort_by_key(|r| Key::of_peer(&r.peer()).distance(&request.target));
        let expected: Vec<Record> = expected
            .into_iter()
            .take(BUCKET_ENTRIES_MAX)
            .cloned()
            .collect();
        assert_eq!(answer.records, expected);
        assert_eq!(answer.records.len(), BUCKET_ENTRIES_MAX);
        // What a peer would decode: the answer is within the wire's bounds.
        let decoded = FindNodeAnswer::decode(&answer.encode(), 1).expect("a valid answer");
        assert_eq!(decoded, answer);
    }

    #[test]
    fn status_liars_claim_what_their_fault_says() {
        let now = at_secs(100); // slot 50 of the 2 s devnet
        let claim = |claim| {
            let faults = Faults {
                status_claim: Some(claim),
                ..Faults::default()
            };
            node_with(faults, false).announced_status(now)
        };
        let max = claim(StatusClaim::MaxSlots);
        assert_eq!((max.head_slot, max.finalized_slot), (u64::MAX, u64::MAX));
        let far = claim(StatusClaim::FarFuture { slots_ahead: 1_000 });
        assert_eq!((far.head_slot, far.finalized_slot), (1_050, 1_049));
        let other = claim(StatusClaim::OtherFinalizedRoot { slots_ahead: 40 });
        assert_eq!((other.head_slot, other.finalized_slot), (90, 50));
        assert_eq!(other.finalized_root, Root([MADE_UP_ROOT_BYTE; 32]));
    }

    #[test]
    fn a_future_block_server_claims_and_serves_its_forged_block_and_never_produces() {
        let faults = Faults {
            future_block_slots_ahead: Some(1_000),
            ..Faults::default()
        };
        let mut node = node_with(faults, true);
        let now = at_secs(100);
        node.handle(now, crate::io::Input::Timeout);
        assert_eq!(
            node.counters().blocks_produced,
            0,
            "it signs only its forged block"
        );
        let status = node.announced_status(now);
        assert_eq!(status.head_slot, 1_050);
        let range = BlocksByRangeRequest {
            start_slot: 1_000,
            count: 64,
        };
        let blocks =
            decoded(node.hostile_answer(now, ProtocolId::BlocksByRange, &range.encode(), 64));
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].root(), status.head_root);
        assert_eq!(blocks[0].parent_root(), node.chain().genesis_root());
        assert!(crate::chain::verify_block(node.chain.genesis(), &blocks[0]).is_ok());
        // Below it: nothing, as if the slots were empty.
        let below = BlocksByRangeRequest {
            start_slot: 1,
            count: 64,
        };
        assert!(
            decoded(node.hostile_answer(now, ProtocolId::BlocksByRange, &below.encode(), 64))
                .is_empty()
        );
    }

    #[test]
    fn an_oversize_server_streams_the_largest_blocks_the_request_allows() {
        let faults = Faults {
            oversize_answers: true,
            ..Faults::default()
        };
        let mut node = node_with(faults, false);
        let range = BlocksByRangeRequest {
            start_slot: 5,
            count: 64,
        };
        let blocks = decoded(node.hostile_answer(
            at_secs(100),
            ProtocolId::BlocksByRange,
            &range.encode(),
            64,
        ));
        assert_eq!(blocks.len(), OVERSIZE_BLOCKS_MAX);
        assert!(blocks
            .iter()
            .all(|block| block.encoded_len() == SIGNED_BLOCK_BYTES_MAX));
        assert!(blocks
            .windows(2)
            .all(|pair| pair[1].parent_root() == pair[0].root()));
        assert_eq!(blocks[0].slot(), 5);
    }

    #[test]
    fn a_lookup_squatter_gossips_orphans_and_serves_their_made_up_ancestors() {
        let faults = Faults {
            lookup_squatting: true,
            ..Faults::default()
        };
        let mut node = node_with(faults, false);
        let now = at_secs(200); // slot 100
        assert_eq!(node.hostile_deadline(), Some(Instant::ZERO));
        node.hostile_tick(now);
        assert_eq!(node.hostile_deadline(), Some(now + SQUAT_INTERVAL));
        assert_eq!(node.hostile.squat_blocks.len() as u64, SQUAT_CHAIN_BLOCKS);
        // The deepest made-up ancestor is served by its root, and so is its child.
        let (&root, block) = node
            .hostile
            .squat_blocks
            .iter()
            .find(|(_, block)| block.slot() == 100 - SQUAT_CHAIN_BLOCKS)
            .expect("the deepest ancestor");
        let child = node
            .hostile
            .squat_blocks
            .values()
            .find(|child| child.parent_root() == root)
            .expect("its child")
            .root();
        assert!(!node.chain().contains(&block.parent_root()));
        let request = BlocksByRootRequest {
            roots: vec![child, root],
        };
        let served =
            decoded(node.hostile_answer(now, ProtocolId::BlocksByRoot, &request.encode(), 2));
        assert_eq!(
            served.iter().map(SignedBlock::root).collect::<Vec<_>>(),
            vec![child, root]
        );
        // Old chains are forgotten.
        for tick in 1..=SQUAT_CHAINS_MAX as u64 + 3 {
            node.hostile_tick(now + Duration::from_secs(2 * tick));
        }
        assert_eq!(node.hostile.squat_chains.len(), SQUAT_CHAINS_MAX);
        assert!(
            node.hostile.squat_blocks.len() as u64 <= SQUAT_CHAINS_MAX as u64 * SQUAT_CHAIN_BLOCKS
        );
    }
}
