//! Chain scenarios: a late joiner range-syncs, hostile servers fail to stop
//! it, and (in [`super::chain_faults`]) producing networks survive
//! partitions and crashes.
//!
//! # The stories
//! - `late-joiner` ([`LateJoiner::honest`]): `nodes - 1` peers hold the same
//!   signed devnet chain of `chain_blocks` blocks (signed once per chain
//!   cache, [`devnet_chain`]: a campaign signs it once for all its seeds);
//!   a fresh node dials them all at `join_at` and range syncs. What must
//!   hold: it imports the whole chain, every block it imported verifies,
//!   and it reports `Synced`. `sync_seconds` is virtual
//!   time from its first connection to its `Synced` notification.
//! - `hostile-servers` ([`LateJoiner::hostile`]): the same, but a third of the
//!   peers are hostile, taking turns among three kinds:
//!   [`HostileKind::BadSignatures`] stores the chain with every block's
//!   signature replaced by the next block's (a valid curve point over the
//!   wrong message), [`HostileKind::WrongParents`] stores a garbled chain
//!   (from `chain_blocks / 2` on, every block re-linked one slot further
//!   back and the chain extended 1 % past the honest head, so the store
//!   holds a linked fork whose headers no longer match their signatures and
//!   whose Status claims the best chain), and
//!   [`HostileKind::NeverAnswers`] holds the honest chain but
//!   (`faults.never_answer_requests`) takes requests and never answers.
//!   What must hold, besides the late-joiner's: zero invalid blocks imported,
//!   and every hostile peer banned or heavily penalised by the joiner
//!   (`hostile` in the outcome lists each one's score and ban).
//!
//! Every scenario's `outcome` carries `blocks_produced` (here: the blocks of
//! the chain signed before the run), `blocks_imported_min` (the fewest blocks
//! any node that had to import imported), `heads_converged` (every honest
//! node has one head), `invalid_blocks_imported` (every block an honest
//! node reported imported, looked up in its store at that instant and
//! checked with the BLS signature against the genesis, unless it is, bit
//! for bit, a block of the honest pre-signed chain, valid by construction:
//! must be 0),
//! `sync_seconds` and `sync_blocks_per_second`.
//!
//! The command line's `--duration` bounds the virtual time the joiner may
//! take; the run stops soon after it reports `Synced` (5 s; `hostile-servers`
//! after [`HOSTILE_LINGER`], so that a peer that never answers has spoken
//! since it was asked and been charged its timeouts).

use std::collections::BTreeSet;
use std::sync::Arc;

use meshsync_core::chain::{ChainConfig, Root};
use meshsync_core::limits::PING_INTERVAL;
use meshsync_core::{Duration, Instant};

use super::chain_watch::{heads_agree, ChainWatch, STEPS_PER_SECOND_MAX};
use super::story::{Bounds, Scenario};
use super::workload::{clock_after_chain_ms, devnet_chain};
use crate::app::{self, AppEvent, Application};
use crate::sim::{NodeIndex, Sim, Timeout};

/// How a hostile server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostileKind {
    /// Serves the chain with every signature replaced by the next block's.
    BadSignatures,
    /// Serves a garbled chain: blocks re-linked to wrong parents.
    WrongParents,
    /// Takes requests and never answers.
    NeverAnswers,
}

impl HostileKind {
    const ALL: [HostileKind; 3] = [
        HostileKind::BadSignatures,
        HostileKind::WrongParents,
        HostileKind::NeverAnswers,
    ];
}

/// `chain` with every block's signature replaced by the next one's (the
/// last takes the first's): valid points, wrong messages.
pub fn with_bad_signatures(chain: &ChainConfig) -> ChainConfig {
    let mut blocks = chain.stored.to_vec();
    let signatures: Vec<[u8; 96]> = blocks.iter().map(|block| block.signature).collect();
    let count = blocks.len();
    for (index, block) in blocks.iter_mut().enumerate() {
        block.signature = signatures[(index + 1) % count];
    }
    let mut chain = chain.clone();
    chain.stored = blocks.into();
    chain
}

/// `chain` garbled from the block at `from_index` on: that block names its
/// grandparent as parent, and every later one is re-linked to the garbled
/// block before it. The blocks still decode and link (a store holds and
/// serves them) but their headers no longer match their signatures; the
/// chain runs `len / 100 + 2` slots past the honest head, so its Status
/// claims the best chain.
pub fn with_wrong_parents(chain: &ChainConfig, from_index: usize) -> ChainConfig {
    let mut blocks = chain.stored.to_vec();
    let from_index = from_index.clamp(1, blocks.len().saturating_sub(1).max(1));
    if blocks.len() >= 2 {
        let grandparent = if from_index >= 2 {
            blocks[from_index - 2].root()
        } else {
            chain.genesis.root()
        };
        blocks[from_index].header.parent_root = grandparent;
        for index in from_index + 1..blocks.len() {
            blocks[index].header.parent_root = blocks[index - 1].root();
        }
        // A few more slots than the honest chain: its Status claims the
        // highest head, so a joiner wants its blocks.
        let extra = blocks.len() / 100 + 2;
        for _ in 0..extra {
            // Not empty: at least two blocks here.
            let mut block = blocks.last().expect("blocks").clone();
            block.header.slot += 1;
            block.header.proposer_index = chain.genesis.proposer_index_at(block.header.slot);
            block.header.parent_root = blocks.last().expect("blocks").root();
            blocks.push(block);
        }
    }
    let mut chain = chain.clone();
    chain.stored = blocks.into();
    chain
}

/// The parameters of [`LateJoiner`]; the defaults are the command line's.
#[derive(Clone, Debug)]
pub struct JoinerParams {
    /// Blocks in the peers' chain.
    pub chain_blocks: u64,
    /// Body bytes per block.
    pub body_bytes: usize,
    /// The joiner's `config.sync.peers_min` (capped at the peers it has).
    pub peers_min: usize,
    /// When the joiner dials its peers.
    pub join_at: Duration,
    /// Whether a third of the peers are hostile.
    pub hostile: bool,
    /// How long to keep running after `Synced` (scores settle, late answers land).
    pub linger: Duration,
}

impl Default for JoinerParams {
    fn default() -> JoinerParams {
        JoinerParams {
            chain_blocks: 10_000,
            body_bytes: meshsync_core::chain::DEVNET_BODY_BYTES_DEFAULT,
            peers_min: meshsync_core::sync::range::SYNC_PEERS_MIN,
            join_at: Duration::from_secs(1),
            hostile: false,
            linger: Duration::from_secs(5),
        }
    }
}

/// How long `hostile-servers` runs on after `Synced`, at least: one
/// keepalive interval and a little. A joiner does not charge the timeouts
/// of a peer silent since it was asked (it may be cut off) until that peer
/// speaks again on the connection, and a `NeverAnswers` peer's next word is
/// its own ping, at most [`PING_INTERVAL`] after its last: judged sooner,
/// its timeouts could still be waiting.
pub const HOSTILE_LINGER: Duration = PING_INTERVAL.saturating_add(Duration::from_secs(5));

/// `late-joiner` and `hostile-servers`; see the module docs.
#[derive(Debug, Default)]
pub struct LateJoiner {
    /// What to run.
    pub params: JoinerParams,
    built: Option<JoinerWorld>,
}

/// The world [`LateJoiner::build`] made.
#[derive(Debug)]
pub struct JoinerWorld {
    /// The node that syncs.
    pub joiner: NodeIndex,
    /// Peers holding the honest chain.
    pub honest_peers: Vec<NodeIndex>,
    /// Hostile peers and what each does.
    pub hostile_peers: Vec<(NodeIndex, HostileKind)>,
    /// The honest chain's head.
    pub head: (u64, Root),
    /// What the joiner imported.
    pub watch: ChainWatch,
}

impl Application for JoinerWorld {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        if let AppEvent::Notification { node, notification } = event {
            self.watch.on_notification(sim, node, &notification);
        }
    }
}

impl LateJoiner {
    /// The honest scenario's name.
    pub const NAME: &'static str = "late-joiner";
    /// The hostile scenario's name.
    pub const NAME_HOSTILE: &'static str = "hostile-servers";
    /// Nodes by default (the joiner and its peers).
    pub const NODES_DEFAULT: usize = 21;

    /// `late-joiner` with `params` (its `hostile` is cleared).
    pub fn honest(params: JoinerParams) -> LateJoiner {
        LateJoiner {
            params: JoinerParams {
                hostile: false,
                ..params
            },
            built: None,
        }
    }

    /// `hostile-servers` with `params` (its `hostile` is set, and it
    /// lingers at least [`HOSTILE_LINGER`]).
    pub fn hostile(params: JoinerParams) -> LateJoiner {
        LateJoiner {
            params: JoinerParams {
                hostile: true,
                linger: params.linger.max(HOSTILE_LINGER),
                ..params
            },
            built: None,
        }
    }

    /// The world, once built.
    pub fn world(&self) -> &JoinerWorld {
        self.built.as_ref().expect("built before use")
    }

    /// Steps until the joiner reported `Synced` (and then `linger` more),
    /// within `bound` of virtual time.
    pub fn run_to_sync(&mut self, sim: &mut Sim, bound: Duration) -> Result<(), Timeout> {
        let world = self.built.as_mut().expect("built before use");
        let joiner = world.joiner;
        let deadline = sim.now() + bound;
        let steps_max = STEPS_PER_SECOND_MAX.saturating_mul(bound.as_secs().max(1));
        let synced = app::run_until(
            sim,
            world,
            |sim, world| world.watch.synced(joiner).is_some() || sim.now() >= deadline,
            steps_max,
        );
        let linger = self.params.linger;
        app::run_for(sim, world, linger);
        world.watch.verify_pending();
        synced
    }

    /// Each hostile peer's score at the joiner, whether it banned it, and its kind.
    pub fn hostile_report(&self, sim: &Sim) -> Vec<(NodeIndex, HostileKind, f64, bool)> {
        let world = self.world();
        let manager = sim.node(world.joiner).peer_manager();
        world
            .hostile_peers
            .iter()
            .map(|&(node, kind)| {
                let peer = sim.peer_id(node);
                (
                    node,
                    kind,
                    manager.score(sim.now(), &peer).as_points(),
                    manager.is_banned(sim.now(), &peer),
                )
            })
            .collect()
    }
}

impl Scenario for LateJoiner {
    fn name(&self) -> &'static str {
        if self.params.hostile {
            LateJoiner::NAME_HOSTILE
        } else {
            LateJoiner::NAME
        }
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = self.params.clone();
        let chain = devnet_chain(sim, params.chain_blocks, params.body_bytes);
        let peers = nodes.saturating_sub(1).max(1);
        let hostile_count = if params.hostile { peers / 3 } else { 0 };
        // Hostile ones are spread among the honest (every third peer), so a
        // joiner that takes peers in order meets both early.
        let is_hostile =
            |index: usize| params.hostile && index % 3 == 2 && index / 3 < hostile_count;
        // Built only when hostile peers hold them: each is a copy of the
        // whole chain.
        let bad_signatures = params.hostile.then(|| with_bad_signatures(&chain));
        let wrong_parents = params
            .hostile
            .then(|| with_wrong_parents(&chain, chain.stored.len() / 2));
        let mut honest_peers = Vec::new();
        let mut hostile_peers = Vec::new();
        // Every node's clock is past the pre-signed chains (the garbled one
        // is a few slots longer, so its claim is plausible and sync, not
        // the clock, has to catch it).
        let longest = wrong_parents
            .as_ref()
            .and_then(|wrong| wrong.stored.last())
            .map_or(params.chain_blocks, |block| block.slot());
        let clock_ms = clock_after_chain_ms(longest.max(params.chain_blocks));
        for index in 0..peers {
            let mut config = sim.node_config();
            config.unix_ms_at_origin = clock_ms;
            if is_hostile(index) {
                let kind = HostileKind::ALL[(index / 3) % HostileKind::ALL.len()];
                // Built above: this peer is hostile.
                config.chain = match kind {
                    HostileKind::BadSignatures => bad_signatures.clone().expect("hostile chains"),
                    HostileKind::WrongParents => wrong_parents.clone().expect("hostile chains"),
                    HostileKind::NeverAnswers => chain.clone(),
                };
                config.faults.never_answer_requests = kind == HostileKind::NeverAnswers;
                hostile_peers.push((sim.add_node_with_config(config), kind));
            } else {
                config.chain = chain.clone();
                honest_peers.push(sim.add_node_with_config(config));
            }
        }
        let mut config = sim.node_config();
        config.unix_ms_at_origin = clock_ms;
        config.sync.peers_min = params.peers_min.clamp(1, peers);
        let joiner = sim.add_node_with_config(config);
        let join_at = Instant::ZERO + params.join_at;
        for index in 0..peers {
            sim.dial_at(join_at, joiner, NodeIndex(index));
        }
        let head = chain
            .stored
            .last()
            .map_or((0, chain.genesis.root()), |block| {
                (block.slot(), block.root())
            });
        // The honest chain was signed by the genesis proposer: the watch
        // need not verify its blocks again, only anything else the joiner
        // imports (which would be a hostile peer's, and a violation).
        let watch = ChainWatch::new(chain.genesis.clone(), BTreeSet::from([joiner]))
            .trusting(Arc::clone(&chain.stored));
        self.built = Some(JoinerWorld {
            joiner,
            honest_peers,
            hostile_peers,
            head,
            watch,
        });
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        if let Err(timeout) = self.run_to_sync(sim, duration) {
            log::warn!("the joiner did not sync: {timeout}");
        }
    }

    fn finish(&mut self, sim: &mut Sim) {
        sim.check_peer_symmetry();
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let world = self.world();
        let joiner = world.joiner;
        let mut honest = world.honest_peers.clone();
        honest.push(joiner);
        let imported = world.watch.imported(joiner);
        let sync_seconds = world.watch.sync_seconds(joiner);
        let hostile: Vec<serde_json::Value> = self
            .hostile_report(sim)
            .into_iter()
            .map(|(node, kind, score, banned)| {
                serde_json::json!({
                    "node": node.0,
                    "kind": kind,
                    "score": score,
                    "banned": banned,
                    "requests_served": sim.counter(node, |c| c.requests_served),
                    "requests_received": sim.counter(node, |c| c.messages_received),
                })
            })
            .collect();
        let joiner_head = sim.node(joiner).chain().head();
        Some(serde_json::json!({
            "blocks_produced": self.params.chain_blocks,
            "blocks_imported_min": imported,
            "heads_converged": heads_agree(sim, &honest),
            "invalid_blocks_imported": world.watch.invalid_blocks_imported(),
            "sync_seconds": sync_seconds,
            "sync_blocks_per_second": world.watch.sync_blocks_per_second(joiner),
            "synced_head_slot": world.watch.synced(joiner).map(|(_, slot)| slot),
            "joiner_head_slot": joiner_head.slot,
            "joiner_has_honest_head": joiner_head.root == world.head.1,
            "blocks_checked": world.watch.blocks_checked(),
            "imports_unchecked": world.watch.imports_unchecked(),
            "peers": world.honest_peers.len() + world.hostile_peers.len(),
            "peers_min": sim.node(joiner).config().sync.peers_min,
            "body_bytes": self.params.body_bytes,
            "joiner_sync_penalties": sim.counter(joiner, |c| c.sync_penalties),
            "joiner_requests_sent": sim.counter(joiner, |c| c.requests_sent),
            "joiner_requests_timed_out": sim.counter(joiner, |c| c.requests_timed_out),
            "hostile": hostile,
        }))
    }
    /// The joiner reported `Synced` and holds the honest head; nothing
    /// invalid imported; each hostile peer paid for what it could be caught
    /// doing: bad signatures are proof (banned), a garbled chain costs High
    /// per batch it serves (banned, at most -20, or asked at most twice),
    /// silence costs per timeout (banned or at most -2).
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let world = self.world();
        let joiner = world.joiner;
        let mut bounds = Bounds::default();
        bounds.require(world.watch.synced(joiner).is_some(), || {
            format!("the joiner ({joiner}) never reported Synced")
        });
        let head = sim.node(joiner).chain().head();
        bounds.require(head.root == world.head.1, || {
            format!(
                "the joiner's head is slot {}, not the honest head at slot {}",
                head.slot, world.head.0
            )
        });
        let invalid = world.watch.invalid_blocks_imported();
        bounds.require(invalid == 0, || {
            format!("the joiner imported {invalid} invalid blocks")
        });
        for (node, kind, score, banned) in self.hostile_report(sim) {
            let served = sim.counter(node, |c| c.requests_served);
            let paid = banned
                || match kind {
                    HostileKind::BadSignatures => false,
                    HostileKind::WrongParents => score <= -20.0 || served <= 2,
                    HostileKind::NeverAnswers => score <= -2.0,
                };
            bounds.require(paid, || {
                format!("hostile {node} ({kind:?}) not penalised enough: score {score:.1}, served {served}")
            });
        }
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use meshsync_core::chain::{verify_block, ChainStore, SignedBlock, StoreLimits};

    use super::*;

    #[test]
    fn hostile_chains_decode_and_link_in_a_store_but_do_not_verify() {
        let chain = ChainConfig::devnet_with_chain(3, 20, 64);
        let bad = with_bad_signatures(&chain);
        let garbled = with_wrong_parents(&chain, 10);
        for hostile in [&bad, &garbled] {
            let (store, refused) = ChainStore::from_blocks(
                &hostile.genesis,
                StoreLimits::default(),
                None,
                hostile.stored.iter().cloned(),
            );
            assert!(refused.is_empty(), "{refused:?}");
            assert_eq!(store.len(), hostile.stored.len());
            for block in hostile.stored.iter() {
                assert_eq!(SignedBlock::decode(&block.encode()).as_ref(), Ok(block));
            }
        }
        assert!(bad
            .stored
            .iter()
            .all(|block| verify_block(&bad.genesis, block).is_err()));
        // The first ten are the honest blocks; from the eleventh on, none verifies.
        assert_eq!(garbled.stored.len(), 22, "two slots past the honest head");
        for (index, block) in garbled.stored.iter().enumerate() {
            let valid = verify_block(&garbled.genesis, block).is_ok();
            assert_eq!(valid, index < 10, "block {index}");
        }
        assert_eq!(garbled.stored[10].parent_root(), chain.stored[8].root());
    }
}
