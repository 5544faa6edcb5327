//! `chaos`: a producing network under a fault schedule drawn from the
//! seed, then healed; safety is checked throughout, liveness after.
//!
//! # The story
//! `nodes` honest nodes follow a genesis with `proposers` devnet keys and
//! a finality depth of [`ChaosParams::finality_depth_slots`] (16)
//! (node `i < proposers` holds key `i`) over a random connected topology,
//! and keep their links up as an operator's static peers would (lost links
//! are dialled again every 5 s). After `warmup`, the **safety phase**
//! (`--duration`): every 0.5–3 s the seed picks a fault ([`FaultKind`]) and
//! where it strikes, and most faults end by themselves 1–8 s later:
//!
//! - a partition of the honest nodes in two, or a one-way cut from some of
//!   them to the rest (one cut at a time);
//! - a stall of one link, or a reset of every connection of one pair;
//! - one node's bandwidth dropped to 64 kB/s each way;
//! - a crash, restarted from the node's disk (at most a third down at once);
//! - a node's clock skewed by up to ±1.5 s and drifting by up to ±5 %;
//! - a disk that refuses writes, or one ten to a hundred times slower;
//! - verification five to fifty times slower;
//! - a hostile peer (one of `sync-liars`' kinds) joining and dialling three
//!   honest nodes; it stays to the end.
//!
//! What must hold at every step of the run (safety): no honest node imports
//! an invalid block; no two honest nodes finalize different chains (their
//! finalized chains hold the same block, or the same empty slot, at every
//! slot both finalized: a fork finalized on each side of a cut may never
//! name a block at a common slot) and no node's finalized slot goes back
//! within one life (`finality_conflicts`, slots that differ;
//! `finality_reverts`); every block on a node's disk
//! when it crashed is in its chain after the restart (`durable_blocks_lost`);
//! no proposer signs two blocks for one slot, and every node stays within
//! its own store limits (blocks and bytes, `store_bytes_max`); the
//! simulator's invariants hold.
//!
//! Then the **liveness phase**: every fault heals at once (cuts end, nodes
//! restart, clocks are set right, disks and CPUs recover, links come back
//! up) and every honest node must reach one head within
//! [`ChaosParams::liveness_max`] (60 s) (`converge_seconds`), and keep
//! up: half a slot after the next block, none is more than
//! `HEAD_LAG_SLOTS_MAX` slots behind the best (`head_lag_slots_max`;
//! `heads_agree_at_end` says whether they shared one head then). The
//! outcome also counts the planned links still down at the end and the
//! honest nodes banned by honest nodes (`links_down_at_end`,
//! `honest_bans_at_end`): faults make honest peers look bad (a skewed
//! clock sends blocks from the future, a stalled link times requests
//! out), and what that costs the network is measured, not bounded.
//! Hostile peers stay: they are part of the network the nodes must live in.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::chain::{Checkpoint, Root};
use meshsync_core::{Duration, Instant, Notification};

use super::chain_faults::{
    invalid_bound, mid_slot_after, plan_links, producing_config, producing_genesis_at, redial_lost,
    CrashState, FaultWorld, ProducingParams,
};
use super::chain_watch::{heads_agree, heads_described, seconds, ChainWatch, STEPS_PER_SECOND_MAX};
use super::story::{Bounds, Scenario};
use super::sync_liars::LiarKind;
use super::workload::{split_token, token};
use crate::app::{self, AppEvent, Application};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// Wake-up kinds (above `chain_faults`' own, which [`FaultWorld`] may use).
const TOKEN_FAULT: u16 = 20;
const TOKEN_HEAL: u16 = 21;
const TOKEN_REDIAL: u16 = 22;
const TOKEN_SAMPLE: u16 = 23;

/// How often lost links are dialled again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(5);
/// How often each node's store is measured against its limits.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// The Unix time of genesis: room for a node's clock to run behind it.
const GENESIS_UNIX_MS: u64 = 1_000_000_000;
/// A node's bandwidth while its link is degraded, each way.
const DEGRADED_BYTES_PER_SECOND: u64 = 64_000;
/// Largest clock skew drawn, either way.
const SKEW_MS_MAX: u64 = 1_500;
/// Largest clock drift drawn, either way (5 %).
const DRIFT_PPM_MAX: u64 = 50_000;
/// Honest nodes a hostile peer dials.
const LIAR_DIALS: usize = 3;
/// At the end, every honest node's head is at most this many slots
/// behind the best: it keeps up after converging (a block may still be
/// on its way to a node whose links the faults cost it).
const HEAD_LAG_SLOTS_MAX: u64 = 2;
/// Faults are drawn no more often than this, whatever the gap says.
const FAULT_GAP_MIN: Duration = Duration::from_millis(100);

/// What the schedule can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The honest nodes split in two, both ways.
    Partition,
    /// What some honest nodes send the rest is lost.
    OneWayCut,
    /// One link holds its bytes, then releases them in order.
    Stall,
    /// Every connection of one pair is reset.
    Reset,
    /// One node's bandwidth drops.
    Bandwidth,
    /// One node crashes and restarts from its disk.
    Crash,
    /// One node's clock is skewed and drifts.
    Clock,
    /// One node's disk refuses writes.
    DiskFails,
    /// One node's disk is slow.
    DiskSlow,
    /// One node verifies slowly.
    SlowVerification,
    /// A hostile peer joins.
    HostilePeer,
}

impl FaultKind {
    /// Every kind, in the order the schedule draws from.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Partition,
        FaultKind::OneWayCut,
        FaultKind::Stall,
        FaultKind::Reset,
        FaultKind::Bandwidth,
        FaultKind::Crash,
        FaultKind::Clock,
        FaultKind::DiskFails,
        FaultKind::DiskSlow,
        FaultKind::SlowVerification,
        FaultKind::HostilePeer,
    ];
}

/// A fault in force, to heal when it ends (or when the safety phase does).
#[derive(Clone, Debug)]
enum Active {
    Cut,
    Bandwidth(NodeIndex),
    Crash(NodeIndex),
    Clock(NodeIndex),
    DiskSlow(NodeIndex),
    CpuSlow(NodeIndex),
}

/// The parameters of [`Chaos`]; the defaults are the command line's.
#[derive(Clone, Debug)]
pub struct ChaosParams {
    /// The network.
    pub producing: ProducingParams,
    /// Time before the first fault.
    pub warmup: Duration,
    /// Shortest and longest time between two faults.
    pub gap: (Duration, Duration),
    /// Shortest and longest time a fault lasts.
    pub fault_length: (Duration, Duration),
    /// Hostile peers that may join, at most.
    pub hostile_peers_max: usize,
    /// How long after the heal every honest node must share one head.
    pub liveness_max: Duration,
    /// Blocks are final this many slots below the head: short, so that
    /// finality moves all through the run and its checks bite, and longer
    /// than any cut (8 s of 1 s slots), so that no side of a cut finalizes
    /// a fork the other side will not take.
    pub finality_depth_slots: u64,
}

impl Default for ChaosParams {
    fn default() -> ChaosParams {
        ChaosParams {
            producing: ProducingParams {
                proposers: 4,
                slot_ms: 1_000,
                body_bytes: meshsync_core::chain::DEVNET_BODY_BYTES_DEFAULT,
            },
            warmup: Duration::from_secs(5),
            gap: (Duration::from_millis(500), Duration::from_secs(3)),
            fault_length: (Duration::from_secs(1), Duration::from_secs(8)),
            hostile_peers_max: 2,
            liveness_max: Duration::from_secs(60),
            finality_depth_slots: 16,
        }
    }
}

/// What the safety phase saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SafetyReport {
    /// Faults applied, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Slots at which two honest nodes' finalized chains differ (a
    /// different block, or a block where the other has none).
    pub finality_conflicts: u64,
    /// Times a node's finalized slot went back within one life.
    pub finality_reverts: u64,
    /// The most encoded bytes any honest node's store held at a sample.
    pub store_bytes_max: u64,
    /// Samples at which a node's store was beyond its own limits.
    pub store_over_limits: u64,
    /// Hostile peers that joined.
    pub hostile_peers: Vec<LiarKind>,
}

/// The world of a chaos run, and its application.
#[derive(Debug)]
pub struct ChaosWorld {
    /// The honest network, its links, what it imported, and crash
    /// bookkeeping (durable blocks at each crash).
    pub faults: FaultWorld,
    params: ChaosParams,
    /// No fault starts at or after this; every fault is healed then.
    safety_end: Instant,
    /// Faults in force, by the id their heal's wake-up carries.
    active: BTreeMap<usize, Active>,
    active_next: usize,
    /// Hostile peers, in the order they join.
    liars: Vec<NodeIndex>,
    liars_joined: usize,
    /// The finalized checkpoint each honest node last reported, with the
    /// life it reported it in.
    finalized: BTreeMap<NodeIndex, (u32, Checkpoint)>,
    /// The finalized chain as honest nodes hold it: at each slot its block,
    /// or `None` for a slot left empty, from whoever finalized it first.
    /// Whole chains are compared, not only the checkpoints: two sides of a
    /// cut that each finalize their own fork may never name a block at the
    /// same slot.
    finalized_chain: BTreeMap<u64, Option<Root>>,
    /// Slots at which two honest nodes' finalized chains differ.
    conflicting_slots: BTreeSet<u64>,
    report: SafetyReport,
}

impl ChaosWorld {
    fn honest(&self) -> &[NodeIndex] {
        &self.faults.nodes
    }

    fn random_honest(&self, sim: &mut Sim) -> NodeIndex {
        let nodes = self.honest();
        nodes[rng::index(sim.scenario_rng(), nodes.len())]
    }

    /// Remembers `active` and asks to heal it after `length` (capped at the
    /// end of the safety phase, when everything heals anyway).
    fn hold(&mut self, sim: &mut Sim, active: Active, length: Duration) {
        let id = self.active_next;
        self.active_next += 1;
        self.active.insert(id, active);
        let at = (sim.now() + length).min(self.safety_end);
        sim.wake_at(at, token(TOKEN_HEAL, id));
    }

    /// Draws one fault and applies it; plans the next.
    fn fault(&mut self, sim: &mut Sim) {
        if sim.now() >= self.safety_end {
            return;
        }
        let kind = FaultKind::ALL[rng::index(sim.scenario_rng(), FaultKind::ALL.len())];
        if self.apply(sim, kind) {
            *self.report.faults.entry(kind).or_default() += 1;
        }
        let gap = rng::duration_between(sim.scenario_rng(), self.params.gap).max(FAULT_GAP_MIN);
        let next = sim.now() + gap;
        if next < self.safety_end {
            sim.wake_at(next, token(TOKEN_FAULT, 0));
        }
    }

    /// Applies a fault of `kind`; false if none could be (a cut already in
    /// force, too many nodes down, no hostile peer left).
    fn apply(&mut self, sim: &mut Sim, kind: FaultKind) -> bool {
        let length = rng::duration_between(sim.scenario_rng(), self.params.fault_length);
        match kind {
            FaultKind::Partition | FaultKind::OneWayCut => {
                if self
                    .active
                    .values()
                    .any(|active| matches!(active, Active::Cut))
                {
                    return false;
                }
                let mut nodes = self.honest().to_vec();
                rng::shuffle(sim.scenario_rng(), &mut nodes);
                let split = 1 + rng::index(sim.scenario_rng(), nodes.len() - 1);
                let (side, rest) = nodes.split_at(split);
                if kind == FaultKind::Partition {
                    sim.partition_holding(&[side.to_vec(), rest.to_vec()]);
                } else {
                    sim.cut_one_way(side, rest);
                }
                self.hold(sim, Active::Cut, length);
            }
            FaultKind::Stall => {
                let Some((a, b)) = self.random_link(sim) else {
                    return false;
                };
                sim.stall_link(a, b, (sim.now() + length).min(self.safety_end));
            }
            FaultKind::Reset => {
                let Some((a, b)) = self.random_link(sim) else {
                    return false;
                };
                sim.reset_connections(a, b);
            }
            FaultKind::Bandwidth => {
                let node = self.random_honest(sim);
                sim.set_uplink(node, Some(DEGRADED_BYTES_PER_SECOND));
                sim.set_downlink(node, Some(DEGRADED_BYTES_PER_SECOND));
                self.hold(sim, Active::Bandwidth(node), length);
            }
            FaultKind::Crash => {
                let node = self.random_honest(sim);
                if !sim.is_up(node) || !self.faults.may_crash(sim) {
                    return false;
                }
                self.faults.crash_node(sim, node);
                self.hold(sim, Active::Crash(node), length);
            }
            FaultKind::Clock => {
                let node = self.random_honest(sim);
                let skew = rng::between(sim.scenario_rng(), 0, 2 * SKEW_MS_MAX) as i64
                    - SKEW_MS_MAX as i64;
                let drift = rng::between(sim.scenario_rng(), 0, 2 * DRIFT_PPM_MAX) as i64
                    - DRIFT_PPM_MAX as i64;
                sim.set_clock_drift(node, drift);
                sim.set_clock_skew(node, skew);
                self.hold(sim, Active::Clock(node), length);
            }
            FaultKind::DiskFails => {
                let node = self.random_honest(sim);
                sim.fail_disk(node, (sim.now() + length).min(self.safety_end));
            }
            FaultKind::DiskSlow => {
                let node = self.random_honest(sim);
                let factor = rng::between(sim.scenario_rng(), 10, 100) as u32;
                sim.set_disk_slowdown(node, factor);
                self.hold(sim, Active::DiskSlow(node), length);
            }
            FaultKind::SlowVerification => {
                let node = self.random_honest(sim);
                let factor = rng::between(sim.scenario_rng(), 5, 50) as u32;
                sim.set_cpu_slowdown(node, factor);
                self.hold(sim, Active::CpuSlow(node), length);
            }
            FaultKind::HostilePeer => {
                let Some(&liar) = self.liars.get(self.liars_joined) else {
                    return false;
                };
                self.liars_joined += 1;
                let mut targets = self.honest().to_vec();
                rng::shuffle(sim.scenario_rng(), &mut targets);
                for &target in targets.iter().take(LIAR_DIALS) {
                    sim.dial(liar, target);
                }
                log::info!("hostile peer {liar} joins at {}", sim.now());
            }
        }
        true
    }

    /// A planned link whose two ends are up, at random.
    fn random_link(&self, sim: &mut Sim) -> Option<(NodeIndex, NodeIndex)> {
        let links: Vec<(NodeIndex, NodeIndex)> = self
            .faults
            .links
            .iter()
            .copied()
            .filter(|&(a, b)| sim.is_up(a) && sim.is_up(b))
            .collect();
        (!links.is_empty()).then(|| links[rng::index(sim.scenario_rng(), links.len())])
    }

    fn heal(&mut self, sim: &mut Sim, id: usize) {
        let Some(active) = self.active.remove(&id) else {
            return; // Healed with the rest at the end of the safety phase.
        };
        match active {
            Active::Cut => {
                sim.heal();
            }
            Active::Bandwidth(node) => {
                let rate = sim.config().bandwidth_bytes_per_second;
                sim.set_uplink(node, rate);
                sim.set_downlink(node, rate);
            }
            Active::Crash(node) => self.faults.restart(sim, node),
            Active::Clock(node) => {
                // Set right, as NTP would: no drift, and a wall clock that
                // reads true time again whatever the drift ran up.
                sim.set_clock_drift(node, 0);
                let ahead_ms = sim.node_now(node).as_millis() as i64 - sim.now().as_millis() as i64;
                sim.set_clock_skew(node, -ahead_ms);
            }
            Active::DiskSlow(node) => sim.set_disk_slowdown(node, 1),
            Active::CpuSlow(node) => sim.set_cpu_slowdown(node, 1),
        }
    }

    /// Ends every fault: the liveness phase starts from a healed world.
    fn heal_all(&mut self, sim: &mut Sim) {
        let ids: Vec<usize> = self.active.keys().copied().collect();
        for id in ids {
            self.heal(sim, id);
        }
        sim.heal();
        redial_lost(sim, &self.faults.links);
    }

    /// Checks `node`'s finalized checkpoint against what it and every other
    /// honest node finalized before.
    fn check_finality(&mut self, sim: &Sim, node: NodeIndex) {
        if !sim.is_up(node) || !self.faults.nodes.contains(&node) {
            return;
        }
        let life = sim.incarnation(node);
        let finalized = sim.node(node).chain().finalized();
        let last = match self.finalized.get(&node) {
            Some(&(last_life, last)) if last_life == life => Some(last),
            _ => None,
        };
        if let Some(last) = last.filter(|last| finalized.slot < last.slot) {
            log::error!(
                "{node}'s finalized slot went back from {} to {}",
                last.slot,
                finalized.slot
            );
            self.report.finality_reverts += 1;
        }
        self.finalized.insert(node, (life, finalized));
        if finalized.slot == 0 {
            return;
        }
        let chain = sim.node(node).chain();
        let from_slot = last.map_or(0, |last| last.slot);
        let held = chain.canonical_checkpoints(from_slot, finalized.slot);
        // The store evicts its oldest history first: while it still holds
        // the block this node last finalized, every block above it is held
        // and a slot without one is an empty slot. Otherwise (history
        // evicted, or left on disk at a restart) that is known only from
        // the first block held on.
        // The finalized block itself is always checked: a node that
        // finalizes another block at the slot it reported last has no new
        // slot to look at, and must not slip through.
        let first_slot = match last {
            Some(last) if chain.contains(&last.root) => from_slot + 1,
            _ => held.first().map_or(finalized.slot, |first| first.slot),
        }
        .min(finalized.slot);
        let mut held = held.into_iter().peekable();
        for slot in first_slot..=finalized.slot {
            let block = match held.next_if(|checkpoint| checkpoint.slot == slot) {
                Some(checkpoint) => Some(checkpoint.root),
                None if slot == finalized.slot => Some(finalized.root),
                None => None,
            };
            self.check_finalized_block(node, slot, block);
        }
    }

    /// Checks that `node`'s finalized chain holds `block` at `slot` (`None`:
    /// nothing) as every honest node's before it did.
    fn check_finalized_block(&mut self, node: NodeIndex, slot: u64, block: Option<Root>) {
        match self.finalized_chain.get(&slot) {
            Some(first) if *first != block => {
                // Counted and told once per slot: every other node that
                // finalizes it disagrees the same way.
                if self.conflicting_slots.insert(slot) {
                    let describe = |block: &Option<Root>| match block {
                        Some(root) => format!("block {root}"),
                        None => "no block".to_owned(),
                    };
                    log::error!(
                        "{node} finalized {} at slot {slot}, another honest node {}",
                        describe(&block),
                        describe(first)
                    );
                    self.report.finality_conflicts += 1;
                }
            }
            Some(_) => {}
            None => {
                self.finalized_chain.insert(slot, block);
            }
        }
    }

    /// Measures every honest node's store against its own limits.
    fn sample(&mut self, sim: &Sim) {
        for &node in &self.faults.nodes {
            if !sim.is_up(node) {
                continue;
            }
            let chain = sim.node(node).chain();
            let limits = chain.limits();
            self.report.store_bytes_max = self.report.store_bytes_max.max(chain.bytes() as u64);
            if chain.len() > limits.blocks_max || chain.bytes() > limits.bytes_max {
                self.report.store_over_limits += 1;
            }
        }
    }
}

impl Application for ChaosWorld {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Notification { node, notification } => {
                self.faults.watch.on_notification(sim, node, &notification);
                if matches!(notification, Notification::BlockImported { .. }) {
                    self.check_finality(sim, node);
                }
            }
            AppEvent::Wake { token } => match split_token(token) {
                (TOKEN_FAULT, _) => self.fault(sim),
                (TOKEN_HEAL, id) => self.heal(sim, id),
                (TOKEN_REDIAL, _) => {
                    // Links with a cut between them fail to connect and are
                    // tried again next time.
                    redial_lost(sim, &self.faults.links);
                    let next = sim.now() + REDIAL_INTERVAL;
                    if next <= self.faults.redial_until {
                        sim.wake_at(next, token);
                    }
                }
                (TOKEN_SAMPLE, _) => {
                    self.sample(sim);
                    sim.wake_at(sim.now() + SAMPLE_INTERVAL, token);
                }
                _ => {}
            },
        }
    }
}

/// `chaos`; see the module docs.
#[derive(Debug, Default)]
pub struct Chaos {
    /// What to run.
    pub params: ChaosParams,
    world: Option<ChaosWorld>,
    converge_seconds: Option<f64>,
    converged_at_end: bool,
    final_head_slot: u64,
    head_lag_slots_max: u64,
    links_down_at_end: usize,
    honest_bans_at_end: usize,
}

impl Chaos {
    /// The scenario's name.
    pub const NAME: &'static str = "chaos";
    /// Honest nodes by default.
    pub const NODES_DEFAULT: usize = 12;
    /// The safety phase's length by default.
    pub const DURATION_DEFAULT: Duration = Duration::from_secs(60);

    /// The scenario with `params`.
    pub fn new(params: ChaosParams) -> Chaos {
        Chaos {
            params,
            ..Chaos::default()
        }
    }

    /// The world, once built.
    pub fn world(&self) -> &ChaosWorld {
        self.world.as_ref().expect("built before use")
    }

    /// Seconds from the heal until every honest node had one head.
    pub fn converge_seconds(&self) -> Option<f64> {
        self.converge_seconds
    }
}

impl Scenario for Chaos {
    fn name(&self) -> &'static str {
        Chaos::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = self.params.clone();
        let producing = &params.producing;
        let nodes = nodes.max(producing.proposers).max(3);
        let network_id = sim.config().network_id;
        let (genesis, keys) = producing_genesis_at(
            network_id,
            producing.proposers,
            producing.slot_ms,
            GENESIS_UNIX_MS,
            params.finality_depth_slots,
        );
        let config_for = |sim: &Sim, key| {
            let mut config = producing_config(sim, &genesis, key, producing.body_bytes);
            config.unix_ms_at_origin = GENESIS_UNIX_MS;
            config
        };
        let honest: Vec<NodeIndex> = (0..nodes)
            .map(|index| {
                let config = config_for(sim, keys.get(index).cloned());
                sim.add_node_with_config(config)
            })
            .collect();
        let links = plan_links(sim, &honest, &[]);
        for &(from, to) in &links {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
            sim.dial_at(at, from, to);
        }
        let hostile = rng::index(sim.scenario_rng(), params.hostile_peers_max + 1);
        let mut liars = Vec::new();
        let mut kinds = Vec::new();
        for _ in 0..hostile {
            let kind = LiarKind::ALL[rng::index(sim.scenario_rng(), LiarKind::ALL.len())];
            let key = (kind == LiarKind::FutureBlock)
                .then(|| keys.first().cloned())
                .flatten();
            let mut config = config_for(sim, key);
            config.faults = kind.faults();
            liars.push(sim.add_node_with_config(config));
            kinds.push(kind);
        }
        let watch = ChainWatch::new(genesis.clone(), honest.iter().copied().collect());
        self.world = Some(ChaosWorld {
            faults: FaultWorld {
                nodes: honest,
                links,
                groups: Vec::new(),
                redial_until: Instant::ZERO,
                joins_at: None,
                watch,
                crashes: CrashState {
                    slot_ms: producing.slot_ms,
                    proposers: producing.proposers,
                    ..CrashState::default()
                },
            },
            params,
            safety_end: Instant::ZERO,
            active: BTreeMap::new(),
            active_next: 0,
            liars,
            liars_joined: 0,
            finalized: BTreeMap::new(),
            finalized_chain: BTreeMap::new(),
            conflicting_slots: BTreeSet::new(),
            report: SafetyReport {
                hostile_peers: kinds,
                ..SafetyReport::default()
            },
        });
    }

    /// Warm-up, the safety phase for `duration`, the heal, then up to
    /// `liveness_max` for the heads to converge.
    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let params = self.params.clone();
        let world = self.world.as_mut().expect("built before use");
        let start = Instant::ZERO + params.warmup;
        world.safety_end = start + duration;
        world.faults.crashes.fault_end = world.safety_end;
        world.faults.redial_until = world.safety_end + params.liveness_max;
        sim.wake_at(start, token(TOKEN_FAULT, 0));
        sim.wake_at(start, token(TOKEN_REDIAL, 0));
        sim.wake_at(start, token(TOKEN_SAMPLE, 0));
        let safety_end = world.safety_end;
        app::run_for(sim, world, safety_end.saturating_duration_since(sim.now()));
        world.heal_all(sim);
        debug_assert!(world.faults.nodes.iter().all(|&node| sim.is_up(node)));
        let healed_at = sim.now();
        let deadline = healed_at + params.liveness_max;
        let steps_max = STEPS_PER_SECOND_MAX.saturating_mul(params.liveness_max.as_secs().max(1));
        let nodes = world.faults.nodes.clone();
        let converged = app::run_until(
            sim,
            world,
            |sim, _| heads_agree(sim, &nodes) || sim.now() >= deadline,
            steps_max,
        );
        if converged.is_ok() && heads_agree(sim, &nodes) {
            self.converge_seconds = Some(seconds(sim.now().saturating_duration_since(healed_at)));
        } else {
            log::warn!("heads did not converge within {:?}", params.liveness_max);
        }
        let slot = Duration::from_millis(params.producing.slot_ms);
        let end = mid_slot_after(sim.now() + slot, params.producing.slot_ms);
        app::run_for(sim, world, end.saturating_duration_since(sim.now()));
        self.converged_at_end = heads_agree(sim, &nodes);
        let best = nodes
            .iter()
            .map(|&node| sim.node(node).chain().head().slot)
            .max()
            .unwrap_or(0);
        self.head_lag_slots_max = nodes
            .iter()
            .map(|&node| best - sim.node(node).chain().head().slot)
            .max()
            .unwrap_or(0);
        self.links_down_at_end = world
            .faults
            .links
            .iter()
            .filter(|&&(a, b)| !sim.are_connected(a, b))
            .count();
        self.honest_bans_at_end = nodes
            .iter()
            .flat_map(|&a| nodes.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| {
                a != b
                    && sim
                        .node(a)
                        .peer_manager()
                        .is_banned(sim.node_now(a), &sim.peer_id(b))
            })
            .count();
        self.final_head_slot = sim.node(nodes[0]).chain().head().slot;
        for &node in &nodes {
            world.check_finality(sim, node);
        }
        world.sample(sim);
        world.faults.watch.verify_pending();
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let world = self.world();
        let faults = &world.faults;
        let imported_min = faults
            .nodes
            .iter()
            .map(|&node| faults.watch.imported(node))
            .min()
            .unwrap_or(0);
        Some(serde_json::json!({
            "safety": {
                "faults": world.report.faults,
                "faults_total": world.report.faults.values().sum::<u64>(),
                "hostile_peers": world.report.hostile_peers,
                "invalid_blocks_imported": faults.watch.invalid_blocks_imported(),
                "finality_conflicts": world.report.finality_conflicts,
                "finality_reverts": world.report.finality_reverts,
                "finalized_slot_max": world.finalized_chain.keys().next_back().copied(),
                "crashes": faults.crashes.crashes,
                "durable_blocks_checked": faults.crashes.durable_checked,
                "durable_blocks_lost": faults.crashes.durable_lost,
                "double_signed_slots": sim.double_signed_slots(),
                "store_bytes_max": world.report.store_bytes_max,
                "store_over_limits": world.report.store_over_limits,
                "resets": sim.network_counts().resets,
                "invariant_violations": sim.invariant_violations(),
            },
            "liveness": {
                "converge_seconds": self.converge_seconds,
                "heads_agree_at_end": self.converged_at_end,
                "head_lag_slots_max": self.head_lag_slots_max,
                "links_down_at_end": self.links_down_at_end,
                "honest_bans_at_end": self.honest_bans_at_end,
                "liveness_seconds_max": seconds(self.params.liveness_max),
                "final_head_slot": self.final_head_slot,
            },
            "blocks_produced": sim.counter_sum(|c| c.blocks_produced),
            "blocks_imported_min": imported_min,
            "blocks_checked": faults.watch.blocks_checked(),
            "honest_nodes": faults.nodes.len(),
            "proposers": self.params.producing.proposers,
            "slot_ms": self.params.producing.slot_ms,
        }))
    }

    /// Safety at every step, liveness after the heal; see the module docs.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let world = self.world();
        let report = &world.report;
        let mut bounds = Bounds::default();
        invalid_bound(&mut bounds, &world.faults.watch);
        bounds.require(report.finality_conflicts == 0, || {
            format!(
                "honest nodes finalized different chains: they differ at {} slots",
                report.finality_conflicts
            )
        });
        bounds.require(report.finality_reverts == 0, || {
            format!(
                "finalized slots went back {} times",
                report.finality_reverts
            )
        });
        let lost = world.faults.crashes.durable_lost;
        bounds.require(lost == 0, || {
            format!("{lost} durable blocks were missing after restarts")
        });
        bounds.require(report.store_over_limits == 0, || {
            format!(
                "a store was beyond its limits at {} samples",
                report.store_over_limits
            )
        });
        bounds.require(self.converge_seconds.is_some(), || {
            format!(
                "heads did not converge within {} s of the heal (at the end: {})",
                seconds(self.params.liveness_max),
                heads_described(sim, &world.faults.nodes)
            )
        });
        bounds.require(self.head_lag_slots_max <= HEAD_LAG_SLOTS_MAX, || {
            format!(
                "a node was {} slots behind at the end: {}",
                self.head_lag_slots_max,
                heads_described(sim, &world.faults.nodes)
            )
        });
        bounds.into_broken()
    }
}
