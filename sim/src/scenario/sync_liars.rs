//! `sync-liars`: peers that lie about their chain join a producing network.
//!
//! # The story
//! `nodes` honest nodes follow a genesis with `proposers` devnet keys (node
//! `i < proposers` holds key `i`, 2 s slots) over a random connected
//! topology. At `liars_join_at` one hostile node of each [`LiarKind`] joins
//! and dials every honest node. Each runs the production [`meshsync_core::Node`]
//! with one of the sync faults of [`meshsync_core::Faults`]:
//! - three Status liars: head and finalized at `u64::MAX`
//!   ([`StatusClaim::MaxSlots`]); a head 10⁹ slots past the clock, finalized
//!   just below it ([`StatusClaim::FarFuture`]); a head 40 slots ahead and
//!   finalized at the current slot on a made-up root
//!   ([`StatusClaim::OtherFinalizedRoot`]);
//! - a future-block server: it holds a copy of proposer key 0, signs one
//!   block 1,000 slots (33 minutes) past the clock, claims it as its head
//!   and serves it by range, with nothing between genesis and it;
//! - an oversize server: it claims a head 64 slots ahead and answers every
//!   block request with up to 64 of the largest (1 MiB) unsigned blocks;
//! - a lookup squatter: every slot it gossips an orphan whose 70 made-up,
//!   unsigned ancestors only it serves.
//!
//! What must hold: no node panics; the honest producers' blocks per slot
//! after the liars join are at least 0.95 of the same seed's run without
//! liars (`blocks_per_slot_ratio`, the baseline runs first, inside the
//! same scenario); honest heads converge on one head that is not in the
//! future; no honest node imports an invalid block; and every liar is
//! penalised by the honest nodes: banned by at least one, or scored below
//! zero by at least one (`liars[].penalised`; `score_min`, `banned_by` and
//! `connected_honest` say by how many).
//!
//! The command line's `--duration` is the whole run (60 s unless given;
//! 120 s lets the 30 s wait for sync peers and its aftermath show); the
//! liars join 10 s in. The baseline doubles the run's cost.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use meshsync_core::chain::{Genesis, ProposerKey};
use meshsync_core::limits::PEERS_MAX;
use meshsync_core::{Duration, Faults, Instant, StatusClaim};

use super::chain_faults::{producing_config, producing_genesis, ProducingParams};
use super::chain_watch::{heads_agree, heads_described, ChainWatch, STEPS_PER_SECOND_MAX};
use super::story::{Bounds, Scenario};
use super::topology::plan_topology;
use crate::app::{self, AppEvent, Application};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// Honest blocks per slot after the liars joined, over the baseline's, at
/// least: the liars may cost a block now and then, not production.
pub const BLOCKS_PER_SLOT_RATIO_MIN: f64 = 0.95;

/// How a liar misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiarKind {
    /// Status with head and finalized at `u64::MAX`.
    StatusMaxSlots,
    /// Status with a head 10⁹ slots past the clock.
    StatusFarFuture,
    /// Status with finality at the current slot on a made-up root.
    StatusOtherFinalizedRoot,
    /// Serves a block signed 1,000 slots in the future.
    FutureBlock,
    /// Answers block requests with the largest unsigned blocks.
    OversizeAnswers,
    /// Gossips orphans with made-up ancestors it serves.
    LookupSquatter,
}

impl LiarKind {
    /// Every kind, in the order liars are added.
    pub const ALL: [LiarKind; 6] = [
        LiarKind::StatusMaxSlots,
        LiarKind::StatusFarFuture,
        LiarKind::StatusOtherFinalizedRoot,
        LiarKind::FutureBlock,
        LiarKind::OversizeAnswers,
        LiarKind::LookupSquatter,
    ];

    /// The faults that make a node this kind of liar.
    pub fn faults(self) -> Faults {
        let mut faults = Faults::default();
        match self {
            LiarKind::StatusMaxSlots => faults.status_claim = Some(StatusClaim::MaxSlots),
            LiarKind::StatusFarFuture => {
                faults.status_claim = Some(StatusClaim::FarFuture {
                    slots_ahead: 1_000_000_000,
                });
            }
            LiarKind::StatusOtherFinalizedRoot => {
                faults.status_claim = Some(StatusClaim::OtherFinalizedRoot { slots_ahead: 40 });
            }
            LiarKind::FutureBlock => faults.future_block_slots_ahead = Some(1_000),
            LiarKind::OversizeAnswers => {
                faults.oversize_answers = true;
                // Ahead by more than the sync distance, so victims ask it.
                faults.status_claim = Some(StatusClaim::OtherFinalizedRoot { slots_ahead: 64 });
            }
            LiarKind::LookupSquatter => faults.lookup_squatting = true,
        }
        faults
    }
}

/// The parameters of [`SyncLiars`]; the defaults are the command line's.
#[derive(Clone, Debug)]
pub struct LiarsParams {
    /// The honest network.
    pub producing: ProducingParams,
    /// When the liars dial in.
    pub liars_join_at: Duration,
    /// The liars, one node each.
    pub liars: Vec<LiarKind>,
    /// Whether to run the no-liar baseline of the same seed first.
    pub baseline: bool,
    /// How long heads may take to agree after the run (a block in flight).
    pub settle: Duration,
}

impl Default for LiarsParams {
    fn default() -> LiarsParams {
        LiarsParams {
            producing: ProducingParams {
                proposers: 4,
                slot_ms: 2_000,
                body_bytes: meshsync_core::chain::DEVNET_BODY_BYTES_DEFAULT,
            },
            liars_join_at: Duration::from_secs(10),
            liars: LiarKind::ALL.to_vec(),
            baseline: true,
            settle: Duration::from_secs(10),
        }
    }
}

/// What one run (baseline or attack) measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunReport {
    /// Blocks the honest nodes produced after the liars' join time.
    pub blocks_produced: u64,
    /// Slots from the liars' join time to the end.
    pub slots: u64,
    /// `blocks_produced / slots`.
    pub blocks_per_slot: f64,
    /// Slots honest proposers skipped because range sync was under way.
    pub slots_skipped_syncing: u64,
    /// A node panicked (the run stopped there); its message.
    pub panic: Option<String>,
    /// Every honest node ended on one head.
    pub heads_converged: bool,
    /// The highest honest head slot, and the clock's slot, at the end.
    pub head_slot_max: u64,
    /// The clock's slot at the end.
    pub clock_slot: u64,
    /// Invalid blocks honest nodes imported.
    pub invalid_blocks_imported: u64,
}

/// `sync-liars`; see the module docs.
#[derive(Default)]
pub struct SyncLiars {
    /// What to run.
    pub params: LiarsParams,
    world: Option<LiarsWorld>,
    baseline_sim: Option<(Sim, LiarsWorld)>,
    baseline: Option<RunReport>,
    attack: RunReport,
}

/// The world [`SyncLiars::build`] made, and its application.
#[derive(Debug)]
pub struct LiarsWorld {
    /// The honest nodes.
    pub honest: Vec<NodeIndex>,
    /// The liars and their kinds.
    pub liars: Vec<(NodeIndex, LiarKind)>,
    /// What honest nodes imported.
    pub watch: ChainWatch,
    genesis: Arc<Genesis>,
}

impl Application for LiarsWorld {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        if let AppEvent::Notification { node, notification } = event {
            self.watch.on_notification(sim, node, &notification);
        }
    }
}

impl SyncLiars {
    /// The scenario's name.
    pub const NAME: &'static str = "sync-liars";
    /// Honest nodes by default.
    pub const NODES_DEFAULT: usize = 8;

    /// The scenario with `params`.
    pub fn new(params: LiarsParams) -> SyncLiars {
        SyncLiars {
            params,
            ..SyncLiars::default()
        }
    }

    /// The world, once built.
    pub fn world(&self) -> &LiarsWorld {
        self.world.as_ref().expect("built before use")
    }

    /// Builds the honest network into `sim`, and the liars if `liars`.
    fn build_world(&self, sim: &mut Sim, nodes: usize, liars: bool) -> LiarsWorld {
        let producing = &self.params.producing;
        let nodes = nodes.max(producing.proposers).max(2);
        let network_id = sim.config().network_id;
        let (genesis, keys) = producing_genesis(network_id, producing.proposers, producing.slot_ms);
        let honest: Vec<NodeIndex> = (0..nodes)
            .map(|index| {
                let key = keys.get(index).cloned();
                let config = producing_config(sim, &genesis, key, producing.body_bytes);
                sim.add_node_with_config(config)
            })
            .collect();
        for (from, to) in plan_topology(sim.scenario_rng(), nodes, 2, PEERS_MAX / 2) {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
            sim.dial_at(at, honest[from], honest[to]);
        }
        let mut liar_nodes = Vec::new();
        if liars {
            for &kind in &self.params.liars {
                let key: Option<ProposerKey> = match kind {
                    LiarKind::FutureBlock => keys.first().cloned(),
                    _ => None,
                };
                let mut config = producing_config(sim, &genesis, key, producing.body_bytes);
                config.faults = kind.faults();
                let liar = sim.add_node_with_config(config);
                let join = Instant::ZERO + self.params.liars_join_at;
                for &target in &honest {
                    let jitter = Duration::from_micros(rng::below(sim.scenario_rng(), 500_000));
                    sim.dial_at(join + jitter, liar, target);
                }
                liar_nodes.push((liar, kind));
            }
        }
        let watch = ChainWatch::new(genesis.clone(), honest.iter().copied().collect());
        LiarsWorld {
            honest,
            liars: liar_nodes,
            watch,
            genesis,
        }
    }

    /// Runs `world` in `sim` for `duration` (a panic ends the run early and
    /// is reported), then lets heads settle; measures it.
    fn run_world(&self, sim: &mut Sim, world: &mut LiarsWorld, duration: Duration) -> RunReport {
        let join_at = self.params.liars_join_at.min(duration);
        let produced = |sim: &Sim, world: &LiarsWorld| -> (u64, u64) {
            world.honest.iter().fold((0, 0), |(made, skipped), &node| {
                (
                    made + sim.counter(node, |c| c.blocks_produced),
                    skipped + sim.counter(node, |c| c.blocks_not_produced_syncing),
                )
            })
        };
        let mut report = RunReport::default();
        let mut at_join = (0, 0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            app::run_for(sim, world, join_at);
            at_join = produced(sim, world);
            app::run_for(sim, world, duration.saturating_sub(join_at));
        }));
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            log::error!("seed {}: a node panicked: {message}", sim.seed());
            report.panic = Some(message);
        }
        let (made, skipped) = produced(sim, world);
        report.blocks_produced = made.saturating_sub(at_join.0);
        report.slots_skipped_syncing = skipped.saturating_sub(at_join.1);
        // Over the planned window even if a panic cut the run short: a
        // crashed network produces nothing for the rest of it.
        let slot_ms = world.genesis.slot_duration_ms().max(1);
        let window = duration.saturating_sub(join_at);
        report.slots = u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / slot_ms;
        report.blocks_per_slot = if report.slots == 0 {
            0.0
        } else {
            report.blocks_produced as f64 / report.slots as f64
        };
        if report.panic.is_none() {
            let honest = world.honest.clone();
            let steps_max =
                STEPS_PER_SECOND_MAX.saturating_mul(self.params.settle.as_secs().max(1));
            let deadline = sim.now() + self.params.settle;
            let _ = app::run_until(
                sim,
                world,
                |sim, _| heads_agree(sim, &honest) || sim.now() >= deadline,
                steps_max,
            );
            report.heads_converged = heads_agree(sim, &honest);
        }
        world.watch.verify_pending();
        report.invalid_blocks_imported = world.watch.invalid_blocks_imported();
        report.head_slot_max = world
            .honest
            .iter()
            .map(|&node| sim.node(node).chain().head().slot)
            .max()
            .unwrap_or(0);
        report.clock_slot = world.genesis.slot_at(sim.now().as_millis());
        report
    }

    /// Each liar: its lowest score at an honest node, how many honest nodes
    /// ban it, how many are still its peers, and whether it was penalised.
    pub fn liar_report(&self, sim: &Sim) -> Vec<LiarReport> {
        let world = self.world();
        world
            .liars
            .iter()
            .map(|&(node, kind)| {
                let peer = sim.peer_id(node);
                let mut score_min = f64::INFINITY;
                let mut banned_by = 0;
                let mut connected_honest = 0;
                for &honest in &world.honest {
                    let manager = sim.node(honest).peer_manager();
                    score_min = score_min.min(manager.score(sim.now(), &peer).as_points());
                    banned_by += u64::from(manager.is_banned(sim.now(), &peer));
                    connected_honest += u64::from(sim.has_peer(honest, node));
                }
                LiarReport {
                    node: node.0,
                    kind,
                    score_min,
                    banned_by,
                    connected_honest,
                    penalised: banned_by > 0 || score_min < 0.0,
                }
            })
            .collect()
    }
}

/// What the honest nodes did to one liar.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiarReport {
    /// Its node index.
    pub node: usize,
    /// What it does.
    pub kind: LiarKind,
    /// Its lowest score (points) at any honest node.
    pub score_min: f64,
    /// Honest nodes that ban it.
    pub banned_by: u64,
    /// Honest nodes it is still connected to.
    pub connected_honest: u64,
    /// Banned by an honest node, or scored below zero by one.
    pub penalised: bool,
}

impl Scenario for SyncLiars {
    fn name(&self) -> &'static str {
        SyncLiars::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        if self.params.baseline {
            // The same seed and honest world without liars, run first in `run`.
            let mut baseline = Sim::new(sim.config().clone());
            let world = self.build_world(&mut baseline, nodes, false);
            self.baseline_sim = Some((baseline, world));
        }
        let world = self.build_world(sim, nodes, true);
        self.world = Some(world);
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        if let Some((mut baseline, mut world)) = self.baseline_sim.take() {
            self.baseline = Some(self.run_world(&mut baseline, &mut world, duration));
        }
        let mut world = self.world.take().expect("built before run");
        self.attack = self.run_world(sim, &mut world, duration);
        self.world = Some(world);
    }

    fn finish(&mut self, sim: &mut Sim) {
        if self.attack.panic.is_none() {
            sim.check_peer_symmetry();
        }
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let liars = self.liar_report(sim);
        let ratio = self
            .baseline
            .as_ref()
            .filter(|baseline| baseline.blocks_per_slot > 0.0)
            .map(|baseline| self.attack.blocks_per_slot / baseline.blocks_per_slot);
        let attack = &self.attack;
        Some(serde_json::json!({
            "no_panic": attack.panic.is_none(),
            "panic": attack.panic,
            "blocks_per_slot": attack.blocks_per_slot,
            "baseline_blocks_per_slot": self.baseline.as_ref().map(|b| b.blocks_per_slot),
            "blocks_per_slot_ratio": ratio,
            "heads_converged": attack.heads_converged,
            "head_in_future": attack.head_slot_max > attack.clock_slot.saturating_add(1),
            "invalid_blocks_imported": attack.invalid_blocks_imported,
            "all_liars_penalised": liars.iter().all(|liar| liar.penalised),
            "liars": liars,
            "attack": attack,
            "baseline": self.baseline,
            "honest_nodes": self.world().honest.len(),
        }))
    }
    /// No panic; production after the liars joined at least
    /// [`BLOCKS_PER_SLOT_RATIO_MIN`] of the baseline's; honest heads on one
    /// head, not in the future; nothing invalid imported; every liar penalised.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let attack = &self.attack;
        let mut bounds = Bounds::default();
        bounds.require(attack.panic.is_none(), || {
            format!("a node panicked: {}", attack.panic.as_deref().unwrap_or(""))
        });
        if let Some(baseline) = self.baseline.as_ref().filter(|b| b.blocks_per_slot > 0.0) {
            let ratio = attack.blocks_per_slot / baseline.blocks_per_slot;
            bounds.require(ratio >= BLOCKS_PER_SLOT_RATIO_MIN, || {
                format!("blocks per slot fell to {ratio:.3} of the baseline's")
            });
        }
        bounds.require(attack.heads_converged, || {
            format!(
                "honest heads disagree at the end: {}",
                heads_described(sim, &self.world().honest)
            )
        });
        bounds.require(
            attack.head_slot_max <= attack.clock_slot.saturating_add(1),
            || {
                format!(
                    "an honest head is at slot {}, past the clock's {}",
                    attack.head_slot_max, attack.clock_slot
                )
            },
        );
        let invalid = attack.invalid_blocks_imported;
        bounds.require(invalid == 0, || {
            format!("honest nodes imported {invalid} invalid blocks")
        });
        for liar in self.liar_report(sim) {
            bounds.require(liar.penalised, || {
                format!("liar {} ({:?}) was not penalised", liar.node, liar.kind)
            });
        }
        bounds.into_broken()
    }
}
