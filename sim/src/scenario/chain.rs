//! Chain scenarios: a late joiner range-syncs, hostile servers fail to stop
//! it, and (in [`super::chain_faults`]) producing networks survive
//! partitions and crashes.
//!
//! # The stories
//! - `late-joiner` ([`LateJoiner::honest`]): `nodes - 1` peers hold the same
//!   signed devnet chain of `chain_blocks` blocks (signed once per process,
//!   [`devnet_chain`]); a fresh node dials them all at `join_at` and range
//!   syncs. What must hold: it imports the whole chain, every block it
//!   imported verifies, and it reports `Synced`. `sync_seconds` is virtual
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
//! checked with the BLS signature against the genesis: must be 0),
//! `sync_seconds` and `sync_blocks_per_second`.
//!
//! The command line's `--duration` bounds the virtual time the joiner may
//! take; the run stops soon after it reports `Synced`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshsync_core::chain::{find_invalid, verify_batch, ChainConfig, Genesis, Root, SignedBlock};
use meshsync_core::{Duration, Instant, Notification};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::workload::{clock_after_chain_ms, devnet_chain};
use super::Scenario;
use crate::app::{self, AppEvent, Application};
use crate::sim::{NodeIndex, Sim, Timeout};

/// Blocks verified together by [`ChainWatch`] (a failing batch is searched block by block).
const WATCH_BATCH_BLOCKS: usize = 64;
/// Blocks [`ChainWatch`] collects before it verifies them.
const WATCH_PENDING_MAX: usize = 1_024;
/// Steps any chain scenario may take per simulated second, at most: a bound
/// far above what a run needs (a 10 000-block sync takes about 50 000 steps).
pub const STEPS_PER_SECOND_MAX: u64 = 200_000;

/// Watches what honest nodes import, checks it, and times sync.
///
/// Every `BlockImported` of a watched node is looked up in that node's
/// store at once (the notification comes out of the step that imported it)
/// and, once per distinct (root, signature), verified against the genesis
/// in batches, outside the simulated world (it costs wall time, not
/// virtual time, and touches no node).
#[derive(Debug)]
pub struct ChainWatch {
    genesis: Arc<Genesis>,
    watched: BTreeSet<NodeIndex>,
    seen: BTreeSet<(Root, [u8; 96])>,
    pending: Vec<SignedBlock>,
    rng: ChaCha20Rng,
    imported: BTreeMap<NodeIndex, u64>,
    checked: u64,
    invalid: u64,
    unchecked: u64,
    first_connected: BTreeMap<NodeIndex, Instant>,
    synced: BTreeMap<NodeIndex, (Instant, u64)>,
    imported_when_synced: BTreeMap<NodeIndex, u64>,
}

impl ChainWatch {
    /// A watch of `watched`, whose blocks must verify against `genesis`.
    pub fn new(genesis: Arc<Genesis>, watched: BTreeSet<NodeIndex>) -> ChainWatch {
        ChainWatch {
            genesis,
            watched,
            seen: BTreeSet::new(),
            pending: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(0x0063_6865_636b),
            imported: BTreeMap::new(),
            checked: 0,
            invalid: 0,
            unchecked: 0,
            first_connected: BTreeMap::new(),
            synced: BTreeMap::new(),
            imported_when_synced: BTreeMap::new(),
        }
    }

    /// Handles one notification of `node`'s, now.
    pub fn on_notification(&mut self, sim: &Sim, node: NodeIndex, notification: &Notification) {
        if !self.watched.contains(&node) {
            return;
        }
        match notification {
            Notification::BlockImported { root, .. } => {
                *self.imported.entry(node).or_default() += 1;
                let Some(block) = sim.node(node).chain().block_by_root(root) else {
                    // Imported and dropped within one step (a fork finality ruled out).
                    self.unchecked += 1;
                    return;
                };
                if self.seen.insert((block.root(), block.signature)) {
                    self.pending.push(block.clone());
                    if self.pending.len() >= WATCH_PENDING_MAX {
                        self.verify_pending();
                    }
                }
            }
            Notification::PeerConnected { .. } => {
                self.first_connected.entry(node).or_insert(sim.now());
            }
            Notification::Synced { head_slot } => {
                let imported = self.imported(node);
                if let std::collections::btree_map::Entry::Vacant(entry) = self.synced.entry(node) {
                    entry.insert((sim.now(), *head_slot));
                    self.imported_when_synced.insert(node, imported);
                }
            }
            _ => {}
        }
    }

    /// Verifies what was collected; counts the invalid blocks.
    pub fn verify_pending(&mut self) {
        for chunk in self.pending.chunks(WATCH_BATCH_BLOCKS) {
            self.checked += chunk.len() as u64;
            if verify_batch(&self.genesis, chunk, &mut self.rng).is_err() {
                let invalid = find_invalid(&self.genesis, chunk);
                log::error!("{} invalid blocks imported by honest nodes", invalid.len());
                self.invalid += invalid.len() as u64;
            }
        }
        self.pending.clear();
    }

    /// Invalid blocks honest nodes imported (after [`ChainWatch::verify_pending`]).
    pub fn invalid_blocks_imported(&self) -> u64 {
        self.invalid
    }

    /// Distinct blocks verified so far.
    pub fn blocks_checked(&self) -> u64 {
        self.checked
    }

    /// Imports that could not be checked (the block was gone from the store at once).
    pub fn imports_unchecked(&self) -> u64 {
        self.unchecked
    }

    /// `BlockImported` notifications of `node`.
    pub fn imported(&self, node: NodeIndex) -> u64 {
        self.imported.get(&node).copied().unwrap_or(0)
    }

    /// When `node` first reported `Synced`, and at which head slot.
    pub fn synced(&self, node: NodeIndex) -> Option<(Instant, u64)> {
        self.synced.get(&node).copied()
    }

    /// Blocks `node` had imported when it first reported `Synced`, per
    /// second from its first connection: its sync speed.
    pub fn sync_blocks_per_second(&self, node: NodeIndex) -> Option<f64> {
        let seconds = self.sync_seconds(node).filter(|&seconds| seconds > 0.0)?;
        let imported = self.imported_when_synced.get(&node).copied()?;
        Some(imported as f64 / seconds)
    }

    /// When `node` first had a peer.
    pub fn first_connected(&self, node: NodeIndex) -> Option<Instant> {
        self.first_connected.get(&node).copied()
    }

    /// Seconds from `node`'s first connection to its first `Synced`.
    pub fn sync_seconds(&self, node: NodeIndex) -> Option<f64> {
        let (synced, _) = self.synced(node)?;
        let connected = self.first_connected(node)?;
        Some(synced.saturating_duration_since(connected).as_micros() as f64 / 1e6)
    }
}

/// Whether every node of `nodes` that is up has the same fork-choice head
/// (and at least one is up).
pub fn heads_agree(sim: &Sim, nodes: &[NodeIndex]) -> bool {
    let mut heads = nodes
        .iter()
        .filter(|&&node| sim.is_up(node))
        .map(|&node| sim.node(node).chain().head());
    match heads.next() {
        Some(first) => heads.all(|head| head == first),
        None => false,
    }
}

/// Seconds, as a float, for outcomes.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e6
}

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

    /// `hostile-servers` with `params` (its `hostile` is set).
    pub fn hostile(params: JoinerParams) -> LateJoiner {
        LateJoiner {
            params: JoinerParams {
                hostile: true,
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
        let network_id = sim.config().network_id;
        let chain = devnet_chain(network_id, params.chain_blocks, params.body_bytes);
        let peers = nodes.saturating_sub(1).max(1);
        let hostile_count = if params.hostile { peers / 3 } else { 0 };
        // Hostile ones are spread among the honest (every third peer), so a
        // joiner that takes peers in order meets both early.
        let is_hostile =
            |index: usize| params.hostile && index % 3 == 2 && index / 3 < hostile_count;
        let bad_signatures = with_bad_signatures(&chain);
        let wrong_parents = with_wrong_parents(&chain, chain.stored.len() / 2);
        let mut honest_peers = Vec::new();
        let mut hostile_peers = Vec::new();
        // Every node's clock is past the pre-signed chains (the garbled one
        // is a few slots longer, so its claim is plausible and sync, not
        // the clock, has to catch it).
        let longest = wrong_parents
            .stored
            .last()
            .map_or(params.chain_blocks, |block| block.slot());
        let clock_ms = clock_after_chain_ms(longest.max(params.chain_blocks));
        for index in 0..peers {
            let mut config = sim.node_config();
            config.unix_ms_at_origin = clock_ms;
            if is_hostile(index) {
                let kind = HostileKind::ALL[(index / 3) % HostileKind::ALL.len()];
                config.chain = match kind {
                    HostileKind::BadSignatures => bad_signatures.clone(),
                    HostileKind::WrongParents => wrong_parents.clone(),
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
        let watch = ChainWatch::new(chain.genesis.clone(), BTreeSet::from([joiner]));
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
}

/// The chain scenario `name` with `body_bytes`-byte block bodies
/// (`--body-bytes`); `None` if `name` is no chain scenario or no size is given.
pub fn scenario_with_body_bytes(
    name: &str,
    body_bytes: Option<usize>,
) -> Option<Box<dyn Scenario>> {
    use super::chain_faults::{CrashParams, CrashRestart, PartitionHeal, PartitionParams};
    let body_bytes = body_bytes?;
    let joiner = JoinerParams {
        body_bytes,
        ..JoinerParams::default()
    };
    match name {
        LateJoiner::NAME => Some(Box::new(LateJoiner::honest(joiner))),
        LateJoiner::NAME_HOSTILE => Some(Box::new(LateJoiner::hostile(joiner))),
        PartitionHeal::NAME => {
            let mut params = PartitionParams::default();
            params.producing.body_bytes = body_bytes;
            Some(Box::new(PartitionHeal::new(params)))
        }
        CrashRestart::NAME => {
            let mut params = CrashParams::default();
            params.producing.body_bytes = body_bytes;
            Some(Box::new(CrashRestart::new(params)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use meshsync_core::chain::{verify_block, ChainStore, StoreLimits};

    use super::*;

    #[test]
    fn hostile_chains_decode_and_link_in_a_store_but_do_not_verify() {
        let chain = devnet_chain(3, 20, 64);
        let bad = with_bad_signatures(&chain);
        let garbled = with_wrong_parents(&chain, 10);
        for hostile in [&bad, &garbled] {
            let (store, refused) = ChainStore::from_blocks(
                &hostile.genesis,
                StoreLimits::default(),
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
