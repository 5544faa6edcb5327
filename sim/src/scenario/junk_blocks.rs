//! `junk-blocks`: hit-and-run Sybils flood junk blocks and leave before
//! the verdicts.
//!
//! # The story
//! `nodes` honest nodes follow a producing chain by gossip (the first
//! `proposers` hold the genesis keys) in a random topology. `sybils` hostile
//! nodes, ordinary cores without a key, each dial `sybil_dials` random
//! honest nodes. From `warmup` on, [`JUNK_LEAD`] before every slot starts,
//! each Sybil with peers publishes `junk_per_slot` junk blocks for that slot:
//! the right proposer index, its own head as parent, a body of its own and
//! the signature of its head block (a valid curve point over the wrong
//! message), so each passes every cheap check and costs a BLS verification.
//! At once it says Goodbye to every peer, and `rejoin_after` later it dials
//! them all again: the verdicts on its blocks arrive after it left.
//!
//! What must hold: honest nodes import no invalid block and end on one head
//! with every block the proposers made (`blocks_missing` = 0); the Sybils
//! pay: a handful of verifications per visit (`junk_checks_per_visit`), their
//! late verdicts still charged, so the honest nodes it struck ban it
//! (`struck_and_banned` out of `sybil_relations`), and it cannot come back
//! (`rejoins_refused`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshsync_core::chain::block::body_root;
use meshsync_core::chain::{BlockHeader, Genesis, SignedBlock};
use meshsync_core::gossip::Topic;
use meshsync_core::io::GoodbyeReason;
use meshsync_core::{Command, Duration, Instant, Notification};

use super::chain_faults::{producing_config, producing_genesis};
use super::chain_watch::{heads_agree, heads_described, ChainWatch};
use super::story::{Bounds, Scenario};
use super::topology::plan_topology;
use super::workload::{split_token, token};
use crate::app::{self, AppEvent, Application};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

const TOKEN_JUNK: u16 = 1;
const TOKEN_REJOIN: u16 = 2;
/// How long before a slot starts the Sybils strike: within the clock
/// disparity honest nodes allow, and before the honest block exists.
pub const JUNK_LEAD: Duration = Duration::from_millis(200);
/// BLS verifications a Sybil may cost per visit and honest peer met, at
/// most: a handful, not the `junk_per_slot` blocks it sends.
pub const JUNK_CHECKS_PER_VISIT_AND_PEER_MAX: f64 = 8.0;

/// The parameters of [`JunkBlocks`]; the defaults are the command line's.
#[derive(Clone, Debug)]
pub struct JunkParams {
    /// Honest proposers (the first nodes).
    pub proposers: usize,
    /// Slot duration.
    pub slot_ms: u64,
    /// Hostile nodes, beyond the honest `--nodes`.
    pub sybils: usize,
    /// Honest nodes each Sybil dials.
    pub sybil_dials: usize,
    /// Junk blocks each Sybil publishes per slot.
    pub junk_per_slot: u32,
    /// How long a Sybil stays away after each strike.
    pub rejoin_after: Duration,
    /// Time before the first strike (meshes form, the chain starts).
    pub warmup: Duration,
}

impl Default for JunkParams {
    fn default() -> JunkParams {
        JunkParams {
            proposers: 4,
            slot_ms: 2_000,
            sybils: 4,
            sybil_dials: 6,
            junk_per_slot: 64,
            rejoin_after: Duration::from_millis(1_000),
            warmup: Duration::from_secs(10),
        }
    }
}

/// The world and what it counted.
#[derive(Debug)]
pub struct JunkWorld {
    genesis: Arc<Genesis>,
    topic: Topic,
    honest: Vec<NodeIndex>,
    sybils: Vec<NodeIndex>,
    targets: BTreeMap<NodeIndex, Vec<NodeIndex>>,
    junk_per_slot: u32,
    rejoin_after: Duration,
    junk_next: u64,
    junk_published: u64,
    visits: u64,
    /// (honest node, Sybil) bans.
    bans: BTreeSet<(NodeIndex, NodeIndex)>,
    /// (honest node, Sybil) pairs connected when the Sybil struck.
    struck: BTreeSet<(NodeIndex, NodeIndex)>,
    rejoins_refused: u64,
    watch: ChainWatch,
}

impl JunkWorld {
    fn is_sybil(&self, node: NodeIndex) -> bool {
        self.sybils.contains(&node)
    }

    fn strike(&mut self, sim: &mut Sim, slot: u64) {
        for &sybil in &self.sybils.clone() {
            let peers = sim.peers_of(sybil);
            if peers.is_empty() {
                continue;
            }
            let head = sim.node(sybil).chain().head();
            let Some(parent) = sim.node(sybil).chain().block_by_root(&head.root) else {
                continue; // Still at genesis: no signature to borrow.
            };
            let signature = parent.signature;
            self.visits += 1;
            for _ in 0..self.junk_per_slot {
                let body = self.junk_next.to_be_bytes().to_vec();
                self.junk_next += 1;
                let junk = SignedBlock {
                    header: BlockHeader {
                        slot,
                        proposer_index: self.genesis.proposer_index_at(slot),
                        parent_root: head.root,
                        body_root: body_root(&body),
                    },
                    body,
                    signature,
                };
                self.junk_published += 1;
                let command = Command::Publish {
                    topic: self.topic.clone(),
                    payload: junk.encode(),
                };
                sim.command(sybil, command);
            }
            for peer in peers {
                self.struck.insert((peer, sybil));
                let command = Command::Disconnect {
                    peer: sim.peer_id(peer),
                    reason: GoodbyeReason::ClientShutdown,
                };
                sim.command(sybil, command);
            }
            let index = self
                .sybils
                .iter()
                .position(|&s| s == sybil)
                .expect("one of ours");
            sim.wake_at(sim.now() + self.rejoin_after, token(TOKEN_REJOIN, index));
        }
    }

    fn rejoin(&mut self, sim: &mut Sim, sybil: NodeIndex) {
        for &target in &self.targets[&sybil] {
            if !sim.has_peer(sybil, target) {
                let command = Command::Dial {
                    addr: sim.addr(target),
                    peer: Some(sim.peer_id(target)),
                };
                sim.command(sybil, command);
            }
        }
    }
}

impl Application for JunkWorld {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token: wake } => match split_token(wake) {
                (TOKEN_JUNK, slot) => {
                    let slot = slot as u64;
                    let next = strike_instant(&self.genesis, slot + 1);
                    sim.wake_at(next, token(TOKEN_JUNK, (slot + 1) as usize));
                    self.strike(sim, slot);
                }
                (TOKEN_REJOIN, index) => {
                    let sybil = self.sybils[index];
                    self.rejoin(sim, sybil);
                }
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } => {
                self.watch.on_notification(sim, node, &notification);
                match notification {
                    Notification::PeerBanned { peer, .. } if !self.is_sybil(node) => {
                        if let Some(sybil) = sim.index_of(peer).filter(|s| self.is_sybil(*s)) {
                            self.bans.insert((node, sybil));
                        }
                    }
                    Notification::ConnectionRefused { .. } | Notification::DialFailed { .. }
                        if self.is_sybil(node) =>
                    {
                        self.rejoins_refused += 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// When the Sybils strike for `slot`: [`JUNK_LEAD`] before it starts (the
/// simulator's origin is the genesis time).
fn strike_instant(genesis: &Genesis, slot: u64) -> Instant {
    let start_us = genesis.start_of(slot).saturating_mul(1_000);
    Instant::from_micros(start_us.saturating_sub(JUNK_LEAD.as_micros() as u64))
}

/// `junk-blocks`. See the module docs.
#[derive(Debug)]
pub struct JunkBlocks {
    /// What to run.
    pub params: JunkParams,
    world: Option<JunkWorld>,
}

/// What a `junk-blocks` run showed: the summary's `outcome`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JunkOutcome {
    /// Honest nodes.
    pub honest_nodes: usize,
    /// Hostile nodes.
    pub sybils: usize,
    /// Blocks the proposers made.
    pub blocks_produced: u64,
    /// The head slot every honest node agrees on (if they agree).
    pub head_slot: Option<u64>,
    /// Whether every honest node has one head.
    pub heads_converged: bool,
    /// Honest nodes' blocks the head chain lacks: slots the proposers
    /// produced for that are not on the agreed chain.
    pub blocks_missing: u64,
    /// Invalid blocks honest nodes imported (must be 0).
    pub invalid_blocks_imported: u64,
    /// Junk blocks the Sybils published.
    pub junk_published: u64,
    /// Strikes: a Sybil with peers publishing its junk and leaving.
    pub visits: u64,
    /// Verification jobs honest nodes started beyond one per block produced:
    /// the BLS work the junk cost.
    pub junk_checks: u64,
    /// `junk_checks` per visit and honest peer met (about `sybil_dials`).
    pub junk_checks_per_visit_and_peer: f64,
    /// Gossiped blocks honest nodes dropped unjudged for lack of a slot or over a sender's rate.
    pub verifications_refused: u64,
    /// (honest node, Sybil) pairs where the honest node banned the Sybil.
    pub sybil_bans: usize,
    /// (honest node, Sybil) pairs connected when the Sybil struck.
    pub sybil_relations: usize,
    /// Of those, where the honest node banned the Sybil.
    pub struck_and_banned: usize,
    /// Sybil dials refused or failed after their first strike.
    pub rejoins_refused: u64,
}

impl JunkBlocks {
    /// The scenario's name.
    pub const NAME: &'static str = "junk-blocks";
    /// Honest nodes by default.
    pub const NODES_DEFAULT: usize = 30;

    /// The scenario with `params`.
    pub fn new(params: JunkParams) -> JunkBlocks {
        JunkBlocks {
            params,
            world: None,
        }
    }

    /// What the run showed.
    pub fn measure(&self, sim: &Sim) -> JunkOutcome {
        let world = self.world.as_ref().expect("built before use");
        let honest = &world.honest;
        let produced: u64 = honest
            .iter()
            .map(|&node| sim.counter(node, |c| c.blocks_produced))
            .sum();
        let heads_converged = heads_agree(sim, honest);
        let head = sim.node(honest[0]).chain().head();
        // Walk the agreed chain: every slot on it is one produced block.
        let mut on_chain = 0u64;
        let chain = sim.node(honest[0]).chain();
        let mut root = head.root;
        while let Some(block) = chain.block_by_root(&root) {
            on_chain += 1;
            root = block.parent_root();
        }
        let work: u64 = honest
            .iter()
            .map(|&node| sim.counter(node, |c| c.work_started))
            .sum();
        let expected_work = produced.saturating_mul(honest.len() as u64 - 1);
        let junk_checks = work.saturating_sub(expected_work);
        JunkOutcome {
            honest_nodes: honest.len(),
            sybils: world.sybils.len(),
            blocks_produced: produced,
            head_slot: heads_converged.then_some(head.slot),
            heads_converged,
            blocks_missing: produced.saturating_sub(on_chain),
            invalid_blocks_imported: world.watch.invalid_blocks_imported(),
            junk_published: world.junk_published,
            visits: world.visits,
            junk_checks,
            junk_checks_per_visit_and_peer: if world.visits == 0 {
                0.0
            } else {
                junk_checks as f64 / (world.visits as f64 * self.params.sybil_dials as f64)
            },
            verifications_refused: honest
                .iter()
                .map(|&node| {
                    sim.counter(node, |c| {
                        c.gossip_verifications_deferred + c.gossip_verifications_over_rate
                    })
                })
                .sum(),
            sybil_bans: world.bans.len(),
            sybil_relations: world.struck.len(),
            struck_and_banned: world.struck.intersection(&world.bans).count(),
            rejoins_refused: world.rejoins_refused,
        }
    }
}

impl Scenario for JunkBlocks {
    fn name(&self) -> &'static str {
        JunkBlocks::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = self.params.clone();
        let honest_count = nodes.max(params.proposers).max(2);
        let network_id = sim.config().network_id;
        let (genesis, keys) = producing_genesis(network_id, params.proposers, params.slot_ms);
        let honest: Vec<NodeIndex> = (0..honest_count)
            .map(|index| {
                let key = keys.get(index).cloned();
                let config = producing_config(sim, &genesis, key, 256);
                sim.add_node_with_config(config)
            })
            .collect();
        for (from, to) in plan_topology(sim.scenario_rng(), honest_count, 4, 20) {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
            sim.dial_at(at, NodeIndex(from), NodeIndex(to));
        }
        let mut targets = BTreeMap::new();
        let sybils: Vec<NodeIndex> = (0..params.sybils)
            .map(|_| {
                let config = producing_config(sim, &genesis, None, 256);
                sim.add_node_with_config(config)
            })
            .collect();
        for &sybil in &sybils {
            let mut chosen = BTreeSet::new();
            while chosen.len() < params.sybil_dials.min(honest_count) {
                chosen.insert(rng::index(sim.scenario_rng(), honest_count));
            }
            let chosen: Vec<NodeIndex> = chosen.into_iter().map(NodeIndex).collect();
            for &target in &chosen {
                let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
                sim.dial_at(at, sybil, target);
            }
            targets.insert(sybil, chosen);
        }
        // The first strike: the first slot that starts after the warm-up.
        let warm_ms = params.warmup.as_millis() as u64;
        let first_slot = genesis.slot_at(warm_ms) + 1;
        let first_at = strike_instant(&genesis, first_slot);
        sim.wake_at(first_at, token(TOKEN_JUNK, first_slot as usize));
        let watch = ChainWatch::new(genesis.clone(), honest.iter().copied().collect());
        self.world = Some(JunkWorld {
            genesis,
            topic: Topic::new(meshsync_core::node::BLOCKS_TOPIC).expect("a valid topic"),
            honest,
            sybils,
            targets,
            junk_per_slot: params.junk_per_slot,
            rejoin_after: params.rejoin_after,
            junk_next: 0,
            junk_published: 0,
            visits: 0,
            bans: BTreeSet::new(),
            struck: BTreeSet::new(),
            rejoins_refused: 0,
            watch,
        });
    }

    /// Warms up and strikes for `duration`, then lets the last slot settle.
    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let warmup = self.params.warmup;
        let slot = Duration::from_millis(self.params.slot_ms);
        let world = self.world.as_mut().expect("built before run");
        // Stop mid-slot, after the last strike's slot has been produced and gossiped.
        app::run_for(sim, world, warmup + duration + slot / 2);
        world.watch.verify_pending();
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        self.world.as_ref()?;
        Some(serde_json::to_value(self.measure(sim)).expect("outcome serialises"))
    }
    /// Every honest node on one head holding every block the proposers
    /// made; nothing invalid imported; at most
    /// [`JUNK_CHECKS_PER_VISIT_AND_PEER_MAX`] verifications per visit and
    /// peer; at least two in three struck honest nodes ban the Sybil.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let Some(world) = self.world.as_ref() else {
            return vec!["the world was never built".to_owned()];
        };
        let outcome = self.measure(sim);
        let mut bounds = Bounds::default();
        bounds.require(outcome.heads_converged, || {
            format!(
                "honest heads disagree at the end: {}",
                heads_described(sim, &world.honest)
            )
        });
        bounds.require(outcome.blocks_missing == 0, || {
            format!(
                "{} honest blocks missing from the head chain",
                outcome.blocks_missing
            )
        });
        bounds.require(outcome.invalid_blocks_imported == 0, || {
            format!(
                "honest nodes imported {} invalid blocks",
                outcome.invalid_blocks_imported
            )
        });
        let checks = outcome.junk_checks_per_visit_and_peer;
        bounds.require(checks <= JUNK_CHECKS_PER_VISIT_AND_PEER_MAX, || {
            format!("{checks:.2} junk verifications per visit and peer")
        });
        let (struck, banned) = (outcome.sybil_relations, outcome.struck_and_banned);
        bounds.require(banned * 3 >= struck * 2, || {
            format!("only {banned} of {struck} struck honest nodes banned the Sybil")
        });
        bounds.into_broken()
    }
}
