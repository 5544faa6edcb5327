//! Scenarios: named stories the binary and the tests can run from a seed.
//!
//! # Design
//! A [`Scenario`] builds a world (nodes, links, planned dials, later faults
//! and hostile nodes), runs it, and checks what must hold at the end. The
//! runner around it is the same for all: seed a [`Sim`], build, run, finish,
//! summarise. New scenarios implement the trait and add a line to
//! [`scenario_by_name`].
//!
//! Scenarios with application logic (requests, retries, a hostile node's
//! flood) keep it in an [`crate::app::Application`] and run the world
//! through [`crate::app::run_for`]; what they set out to show goes into the
//! summary's `outcome` ([`Scenario::outcome`]).
//! What must hold, checked on what it measured, is
//! [`Scenario::bounds_broken`]: every story states its own; a broken
//! bound fails `meshsync-sim run` and a campaign ([`crate::campaign`]).
//!
//! | name | story |
//! | --- | --- |
//! | `connect` | [`Connect`]: strangers join a random connected topology |
//! | `request-flood` | [`RequestFlood`]: a hostile node floods requests; it is rate-limited, dropped and banned |
//! | `unresponsive-peer` | [`UnresponsivePeer`]: a peer never answers; it is dropped and others serve |
//! | `static-peer-restart` | [`StaticPeerRestart`]: a static peer crashes and comes back |
//! | `discovery` | [`Discovery`]: a network forms by itself from three bootnodes (Kademlia discovery, target peers, trimming) |
//! | `restart-recall` | [`RestartRecall`]: a node crashes, the bootnodes go away, it restarts from its peer store and regains half its target; a peer it banned before the crash is still refused |
//! | `churn` | [`Churn`]: 30 % of the nodes leave for good every 5 min and as many fresh ones join knowing only the bootnodes, while gossip runs; the peer graph stays one component at every sample, gossip delivery ≥ 0.999, joiners reach half their target (500 nodes, 30 min by default) |
//! | `handshake-flood` | [`HandshakeFlood`]: 250 mute hosts keep opening connections that never send a byte; each address holds 4 handshakes at most, newcomers evict the oldest, and honest peers still connect within 1 s |
//! | `dht-eclipse` | [`DhtEclipse`]: 200 Sybils from one /16 dial a victim and answer FIND_NODE with each other; the /16 caps of its table (10) and its peer set (5) bound their share |
//! | `gossip-1k` | [`GossipScenario::gossip_1k`]: 1,000 nodes, 100 publishers take turns publishing 1 KiB, 10/s in all |
//! | `gossip-blocks` | [`GossipScenario::gossip_blocks`]: 200 nodes, a rotating publisher sends 1 MiB every 2 s |
//! | `gossip-spam` | [`gossip_attacks::spam`]: Sybils publish invalid messages; they are graylisted and dropped |
//! | `gossip-eclipse` | [`gossip_attacks::eclipse`]: withholding Sybils all dial one node; it still receives |
//! | `gossip-withhold` | [`gossip_attacks::withhold`]: a quarter of the nodes never forward; delivery and p99 hold |
//! | `cold-boot` | [`gossip_attacks::cold_boot`]: everyone, Sybils too, connects at once with no score history |
//! | `slow-readers` | [`gossip_attacks::slow_readers`]: a tenth of the nodes stop reading; the rest still get every block in time |
//! | `prune-flood` | [`gossip_attacks::prune_flood`]: throwaway identities GRAFT and PRUNE honest nodes with the longest backoff and leave; no honest backoff is lost, nobody honest is graylisted |
//! | `junk-blocks` | [`JunkBlocks`]: hit-and-run Sybils flood junk blocks each slot and leave before the verdicts; they are charged, banned, and every honest block is imported |
//! | `late-joiner` | [`LateJoiner::honest`]: a fresh node range-syncs 10,000 blocks from 20 peers |
//! | `hostile-servers` | [`LateJoiner::hostile`]: the same with a third of the peers hostile; they are penalised, nothing invalid is imported |
//! | `partition-heal` | [`PartitionHeal`]: producing nodes split in two, fork, heal and converge on one head |
//! | `crash-restart` | [`CrashRestart`]: producing nodes crash (half of the time right after publishing their own block, back within the slot) and restart from their disks while one syncs; no durable block is lost, no slot signed twice |
//! | `budget-sybils` | [`BudgetSybils`]: Sybils within their quotas ask one node for all it serves; honest requesters keep their share |
//! | `chaos` | [`Chaos`]: a producing network under faults drawn from the seed (partitions both ways and one way, stalls, resets, bandwidth drops, crashes, clock skew and drift, disk faults, slow verification, hostile peers); safety at every step, then everything heals and every node reaches one head within 60 s |
//! | `sync-liars` | [`SyncLiars`]: peers lying about their chain (Status, future blocks, oversize answers, made-up ancestors) join producers; production holds, liars are penalised |
//!
//! The gossip scenarios take `--floodsub` (every node runs the floodsub
//! baseline), `--publishers`, `--messages-per-second` and `--sybils`
//! ([`GossipOptions`]); their `--duration` is the publishing time, after a
//! warm-up for meshes to form and before a drain (see [`gossip`]).
//! `budget-sybils` takes `--sybils` too (percent of `--nodes`, default 8 Sybils).
//! `churn` takes `--nodes` as the network's size at any time (default 500;
//! each 5 min round replaces 30 % of them with fresh identities) and
//! `--duration` as the whole run (default 30 min: five rounds).
//! `dht-eclipse` takes `--nodes` as its honest nodes (default 50, beside
//! its 200 Sybils) and `--duration` as the attack's time after the victim
//! starts at 30 s.
//!
//! # Files
//! This file only registers the stories and runs them. What they share is
//! in leaf modules that import no story: [`story`] (the trait),
//! [`topology`] (dial plans), [`workload`] (nodes with a chain, request
//! traffic, wake-up tokens) and [`chain_watch`] (what the chain stories
//! check and bound).
//! Each story has its own file and imports only those, or a story it
//! builds on (`gossip_attacks` on `gossip`; `junk_blocks` and
//! `sync_liars` on `chain_faults`' producing networks).

pub mod budget_sybils;
pub mod chain;
pub mod chain_faults;
pub mod chain_watch;
pub mod chaos;
pub mod churn;
pub mod connect;
pub mod dht_eclipse;
pub mod discovery;
pub mod gossip;
pub mod gossip_attacks;
pub mod handshake_flood;
pub mod junk_blocks;
pub mod request_flood;
pub mod restart_recall;
pub mod static_peer_restart;
pub mod story;
pub mod sync_liars;
pub mod topology;
pub mod unresponsive_peer;
pub mod workload;

pub use budget_sybils::{BudgetParams, BudgetSybils};
pub use chain::{JoinerParams, LateJoiner};
pub use chain_faults::{CrashParams, CrashRestart, PartitionHeal, PartitionParams};
pub use chaos::{Chaos, ChaosParams, FaultKind};
pub use churn::{Churn, ChurnParams};
pub use connect::Connect;
pub use dht_eclipse::{DhtEclipse, EclipseParams};
pub use discovery::Discovery;
pub use gossip::{Attack, GossipOutcome, GossipParams, GossipScenario, PruneFloodOutcome};
pub use handshake_flood::HandshakeFlood;
pub use junk_blocks::{JunkBlocks, JunkOutcome, JunkParams};
pub use request_flood::{FloodParams, RequestFlood};
pub use restart_recall::RestartRecall;
pub use static_peer_restart::StaticPeerRestart;
pub use story::Scenario;
pub use sync_liars::{LiarKind, LiarsParams, SyncLiars};
pub use topology::{plan_topology, plan_topology_min_degree};
pub use unresponsive_peer::{FetchParams, UnresponsivePeer};

use std::fmt;

use meshsync_core::Duration;

use crate::chains::ChainCache;
use crate::link::LinkModel;
use crate::samples::{Deliveries, Samples};
use crate::sim::{Sim, SimConfig};
use crate::summary::Summary;

/// Every scenario name, for `--help` and error messages.
pub const SCENARIO_NAMES: &[&str] = &[
    Connect::NAME,
    RequestFlood::NAME,
    UnresponsivePeer::NAME,
    StaticPeerRestart::NAME,
    GossipScenario::NAME_1K,
    GossipScenario::NAME_BLOCKS,
    gossip_attacks::SPAM,
    gossip_attacks::ECLIPSE,
    gossip_attacks::WITHHOLD,
    gossip_attacks::COLD_BOOT,
    gossip_attacks::SLOW_READERS,
    gossip_attacks::PRUNE_FLOOD,
    LateJoiner::NAME,
    LateJoiner::NAME_HOSTILE,
    PartitionHeal::NAME,
    CrashRestart::NAME,
    JunkBlocks::NAME,
    BudgetSybils::NAME,
    SyncLiars::NAME,
    Chaos::NAME,
    Discovery::NAME,
    RestartRecall::NAME,
    Churn::NAME,
    DhtEclipse::NAME,
    HandshakeFlood::NAME,
];

/// Nodes a scenario runs with when the command line does not say.
pub const NODES_DEFAULT: usize = 50;

/// The gossip scenario called `name`, with its default parameters.
pub fn gossip_scenario_by_name(name: &str) -> Option<GossipScenario> {
    match name {
        GossipScenario::NAME_1K => Some(GossipScenario::gossip_1k()),
        GossipScenario::NAME_BLOCKS => Some(GossipScenario::gossip_blocks()),
        gossip_attacks::SPAM => Some(gossip_attacks::spam()),
        gossip_attacks::ECLIPSE => Some(gossip_attacks::eclipse()),
        gossip_attacks::WITHHOLD => Some(gossip_attacks::withhold()),
        gossip_attacks::COLD_BOOT => Some(gossip_attacks::cold_boot()),
        gossip_attacks::SLOW_READERS => Some(gossip_attacks::slow_readers()),
        gossip_attacks::PRUNE_FLOOD => Some(gossip_attacks::prune_flood()),
        _ => None,
    }
}

/// The nodes the scenario `name` runs with by default: 1,000 for
/// `gossip-1k`, its own default for the other gossip scenarios,
/// [`NODES_DEFAULT`] otherwise.
pub fn nodes_default(name: &str) -> usize {
    match name {
        LateJoiner::NAME | LateJoiner::NAME_HOSTILE => return LateJoiner::NODES_DEFAULT,
        PartitionHeal::NAME => return PartitionHeal::NODES_DEFAULT,
        CrashRestart::NAME => return CrashRestart::NODES_DEFAULT,
        JunkBlocks::NAME => return JunkBlocks::NODES_DEFAULT,
        BudgetSybils::NAME => return BudgetSybils::NODES_DEFAULT,
        UnresponsivePeer::NAME => return UnresponsivePeer::NODES_DEFAULT,
        SyncLiars::NAME => return SyncLiars::NODES_DEFAULT,
        Chaos::NAME => return Chaos::NODES_DEFAULT,
        Discovery::NAME => return Discovery::NODES_DEFAULT,
        RestartRecall::NAME => return RestartRecall::NODES_DEFAULT,
        Churn::NAME => return Churn::NODES_DEFAULT,
        DhtEclipse::NAME => return DhtEclipse::NODES_DEFAULT,
        _ => {}
    }
    gossip_scenario_by_name(name).map_or(NODES_DEFAULT, |scenario| scenario.nodes_default)
}

/// Virtual time a run lasts when the command line does not say.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(60);

/// The time the scenario `name` runs by default: long enough for its story
/// to be told and its bounds judged. [`DURATION_DEFAULT`] for most;
/// `discovery` starts its nodes over its first minute and gives each
/// [`Discovery::TO_TARGET_BOUND`] (90 s) to reach half its target, so it
/// runs 120 s (at 60 s its last nodes are judged a few seconds after their
/// start); `churn` runs the 30 min (five 5 min rounds after the
/// network forms); `handshake-flood` runs until its sixth honest node's
/// dial is judged; `static-peer-restart` runs 3 min, past its restart at
/// 100 s by the longest backoff step in force then.
pub fn duration_default(name: &str) -> Duration {
    match name {
        Discovery::NAME => Duration::from_secs(120),
        Churn::NAME => Churn::DURATION_DEFAULT,
        HandshakeFlood::NAME => Duration::from_secs(20),
        StaticPeerRestart::NAME => StaticPeerRestart::DURATION_DEFAULT,
        _ => DURATION_DEFAULT,
    }
}

/// The scenario called `name`, with its default parameters.
pub fn scenario_by_name(name: &str) -> Option<Box<dyn Scenario>> {
    match name {
        Connect::NAME => Some(Box::new(Connect::default())),
        RequestFlood::NAME => Some(Box::new(RequestFlood::default())),
        UnresponsivePeer::NAME => Some(Box::new(UnresponsivePeer::default())),
        StaticPeerRestart::NAME => Some(Box::new(StaticPeerRestart::default())),
        LateJoiner::NAME => Some(Box::new(LateJoiner::honest(JoinerParams::default()))),
        LateJoiner::NAME_HOSTILE => Some(Box::new(LateJoiner::hostile(JoinerParams::default()))),
        PartitionHeal::NAME => Some(Box::new(PartitionHeal::default())),
        CrashRestart::NAME => Some(Box::new(CrashRestart::default())),
        JunkBlocks::NAME => Some(Box::new(JunkBlocks::new(JunkParams::default()))),
        BudgetSybils::NAME => Some(Box::new(BudgetSybils::default())),
        SyncLiars::NAME => Some(Box::new(SyncLiars::default())),
        Chaos::NAME => Some(Box::new(Chaos::default())),
        Discovery::NAME => Some(Box::new(Discovery::default())),
        RestartRecall::NAME => Some(Box::new(RestartRecall::default())),
        Churn::NAME => Some(Box::new(Churn::default())),
        DhtEclipse::NAME => Some(Box::new(DhtEclipse::default())),
        HandshakeFlood::NAME => Some(Box::new(HandshakeFlood::default())),
        _ => gossip_scenario_by_name(name).map(|scenario| Box::new(scenario) as Box<dyn Scenario>),
    }
}

/// No scenario has that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scenario `{}` (known: {})",
            self.0,
            SCENARIO_NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownScenario {}

/// Everything one run depends on.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The scenario's name.
    pub scenario: String,
    /// Nodes in the world.
    pub nodes: usize,
    /// The world seed.
    pub seed: u64,
    /// Virtual time to run.
    pub duration: Duration,
    /// The model of every link.
    pub link: LinkModel,
    /// What the gossip scenarios change from their defaults.
    pub gossip: GossipOptions,
    /// Chain scenarios: body bytes per block (`None`: their default, 1 KiB).
    pub body_bytes: Option<usize>,
    /// Where the run takes its pre-signed chains from. Clones of this
    /// configuration share the cache: the runs of a campaign, all cloned
    /// from one, sign each chain once ([`crate::chains`]).
    pub chains: ChainCache,
}

/// Command-line changes to a gossip scenario's defaults (`None`: keep it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GossipOptions {
    /// Every node runs the floodsub baseline.
    pub floodsub: bool,
    /// Publishers taking turns.
    pub publishers: Option<usize>,
    /// Messages per second over all publishers.
    pub messages_per_second: Option<f64>,
    /// Sybils, in percent of the nodes (attack scenarios).
    pub sybils_pct: Option<u32>,
}

impl GossipOptions {
    /// `params` with these changes.
    pub fn apply(&self, params: &mut GossipParams) {
        params.floodsub |= self.floodsub;
        if let Some(publishers) = self.publishers {
            params.publishers = publishers;
        }
        if let Some(rate) = self.messages_per_second {
            params.messages_per_second = rate;
        }
        if let Some(pct) = self.sybils_pct {
            params.sybils_pct = pct;
        }
    }
}

impl RunConfig {
    /// A run with the default link model.
    pub fn new(scenario: &str, nodes: usize, seed: u64, duration: Duration) -> RunConfig {
        RunConfig {
            scenario: scenario.to_owned(),
            nodes,
            seed,
            duration,
            link: LinkModel::default(),
            gossip: GossipOptions::default(),
            body_bytes: None,
            chains: ChainCache::new(),
        }
    }
}

/// Runs the scenario `name` with the default link model.
pub fn run_scenario(
    name: &str,
    nodes: usize,
    seed: u64,
    duration: Duration,
) -> Result<Summary, UnknownScenario> {
    run(&RunConfig::new(name, nodes, seed, duration))
}

/// Builds, runs and finishes a scenario; returns its summary.
pub fn run(config: &RunConfig) -> Result<Summary, UnknownScenario> {
    run_sampled(config, None).map(|(summary, _)| summary)
}

/// What a sampled run recorded beside its summary, for [`crate::report`].
#[derive(Clone, Debug)]
pub struct Recording {
    /// Head slots and peers per node over time, and the faults injected.
    pub samples: Samples,
    /// Gossip scenarios: their deliveries' latencies.
    pub deliveries: Option<Deliveries>,
}

/// Like [`run`], and with `interval` also samples the world that often
/// ([`crate::samples`]). Sampling only reads nodes: the summary, its trace
/// hash included, is the one [`run`] gives.
pub fn run_sampled(
    config: &RunConfig,
    interval: Option<Duration>,
) -> Result<(Summary, Option<Recording>), UnknownScenario> {
    let mut scenario = match gossip_scenario_by_name(&config.scenario) {
        Some(mut gossip) => {
            config.gossip.apply(&mut gossip.params);
            Box::new(gossip) as Box<dyn Scenario>
        }
        None if config.scenario == BudgetSybils::NAME => Box::new(BudgetSybils::with_sybils_pct(
            config.nodes,
            config.gossip.sybils_pct,
        )),
        None => scenario_with_body_bytes(&config.scenario, config.body_bytes)
            .or_else(|| scenario_by_name(&config.scenario))
            .ok_or_else(|| UnknownScenario(config.scenario.clone()))?,
    };
    let mut sim = Sim::new(SimConfig {
        link: config.link,
        label: scenario.name().to_owned(),
        chains: config.chains.clone(),
        ..SimConfig::new(config.seed)
    });
    if let Some(interval) = interval {
        sim.start_sampling(interval);
    }
    scenario.build(&mut sim, config.nodes);
    sim.mark_built();
    scenario.run(&mut sim, config.duration);
    scenario.finish(&mut sim);
    let mut summary = sim.summary();
    summary.outcome = scenario.outcome(&sim);
    summary.bounds_broken = scenario.bounds_broken(&sim);
    let recording = sim.take_samples().map(|samples| Recording {
        samples,
        deliveries: scenario.deliveries(),
    });
    Ok((summary, recording))
}

/// The chain scenario `name` with `body_bytes`-byte block bodies
/// (`--body-bytes`); `None` if `name` is no chain scenario or no size is given.
pub fn scenario_with_body_bytes(
    name: &str,
    body_bytes: Option<usize>,
) -> Option<Box<dyn Scenario>> {
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
        Chaos::NAME => {
            let mut params = ChaosParams::default();
            params.producing.body_bytes = body_bytes;
            Some(Box::new(Chaos::new(params)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scenarios_are_named_in_the_error() {
        let error = run_scenario("nope", 2, 1, Duration::from_secs(1)).unwrap_err();
        assert_eq!(error, UnknownScenario("nope".to_owned()));
        assert!(error.to_string().contains("connect"));
    }
}
