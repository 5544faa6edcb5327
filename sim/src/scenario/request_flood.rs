//! `request-flood`: one hostile node floods its honest peers with requests.
//!
//! # The story
//! `nodes` honest nodes, each serving the same devnet chain, join a
//! random connected topology (as in `connect`) and ask each other for block
//! ranges and Status at a modest, steady rate ([`HonestTraffic`]). One more
//! node, hostile (`faults.ignore_peer_quotas`: its core sends whatever it is
//! told, with no quota and no in-flight cap), dials up to `hostile_targets`
//! of them and, from `flood_start` on, every `flood_interval` fires
//! `ranges_per_burst` full BlocksByRange requests and `statuses_per_burst`
//! Status requests at each target it is connected to. When a target drops
//! it, it dials again every `redial_interval`, forever: it never gives up.
//!
//! What must hold: every target rate-limits the flood (result code 3), then
//! disconnects and bans the hostile node, within a bounded virtual time
//! reported as `hostile_banned_after_ms` (from the start of the flood to the
//! last target's ban); and honest request latency p99 stays within 2x of the
//! same run without the hostile node. That baseline is run inside the same
//! invocation, from the same seed: the honest nodes, their identities, the
//! topology and the traffic plan are drawn first, so both runs share them.
//!
//! Every node's uplink is limited (`uplink_bytes_per_second`), so bytes the
//! flood makes a target send delay what it sends to honest peers: the
//! latency comparison then measures something. CPU cost of serving is not
//! modelled.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::io::{DisconnectReason, GoodbyeReason, RequestError};
use meshsync_core::limits::PEERS_MAX;
use meshsync_core::reqresp::bodies::{BlocksByRangeRequest, Status};
use meshsync_core::reqresp::limits::BLOCKS_PER_RANGE_REQUEST_MAX;
use meshsync_core::reqresp::{Body, ProtocolId, ResultCode};
use meshsync_core::{Command, Duration, Instant, Notification};

use super::story::Scenario;
use super::topology::plan_topology;
use super::workload::{
    chain_config, chain_status, split_token, token, HonestTraffic, TrafficCounts,
    BLOCK_BYTES_DEFAULT, CHAIN_HEAD_SLOT_DEFAULT,
};
use crate::app::{self, AppEvent, Application};
use crate::requests::millis;
use crate::rng;
use crate::sim::{NodeIndex, Sim, Timeout};

const TOKEN_HONEST: u16 = 1;
const TOKEN_FLOOD: u16 = 2;

/// The parameters of [`RequestFlood`]; the defaults are what the command line runs.
#[derive(Clone, Debug)]
pub struct FloodParams {
    /// Whether to add the hostile node (false: the baseline).
    pub with_hostile: bool,
    /// Honest nodes the hostile node dials and floods, at most.
    pub hostile_targets: usize,
    /// Random dials per honest node beyond the spanning path.
    pub extra_dials_per_node: usize,
    /// Blocks each honest node serves.
    pub chain_head_slot: u64,
    /// Bytes per block.
    pub block_bytes: usize,
    /// What every node can send per second.
    pub uplink_bytes_per_second: u64,
    /// Time between one honest node's requests.
    pub honest_interval: Duration,
    /// When honest requests start (the topology is up by then).
    pub honest_start: Duration,
    /// When the flood starts.
    pub flood_start: Duration,
    /// Time between the hostile node's bursts.
    pub flood_interval: Duration,
    /// Full-size BlocksByRange requests per target per burst.
    pub ranges_per_burst: usize,
    /// Status requests per target per burst.
    pub statuses_per_burst: usize,
    /// How often the hostile node redials a target that dropped it.
    pub redial_interval: Duration,
    /// Whether to run the baseline (without the hostile node) too, for the ratio.
    pub compare_with_baseline: bool,
}

/// The scenario: its parameters and, once built, its application state.
#[derive(Clone, Debug, Default)]
pub struct RequestFlood {
    /// What to run.
    pub params: FloodParams,
    app: Option<FloodApp>,
    baseline: Option<Baseline>,
}

impl RequestFlood {
    /// The scenario's name.
    pub const NAME: &'static str = "request-flood";

    /// The scenario with `params`.
    pub fn new(params: FloodParams) -> RequestFlood {
        RequestFlood {
            params,
            app: None,
            baseline: None,
        }
    }

    /// The application state, once built.
    pub fn app(&self) -> &FloodApp {
        self.app.as_ref().expect("built before use")
    }

    /// Steps until `predicate` holds, at most `steps_max` steps, with the
    /// honest and hostile logic reacting after every step.
    pub fn run_until(
        &mut self,
        sim: &mut Sim,
        predicate: impl FnMut(&Sim, &FloodApp) -> bool,
        steps_max: u64,
    ) -> Result<(), Timeout> {
        let app = self.app.as_mut().expect("built before use");
        app::run_until(sim, app, predicate, steps_max)
    }

    /// Runs the same scenario without the hostile node, from `seed`, for `duration`.
    fn run_baseline(&self, sim: &Sim, nodes: usize, duration: Duration) -> Baseline {
        let mut baseline = RequestFlood::new(FloodParams {
            with_hostile: false,
            compare_with_baseline: false,
            ..self.params.clone()
        });
        let mut world = Sim::new(sim.config().clone());
        baseline.build(&mut world, nodes);
        baseline.run(&mut world, duration);
        Baseline {
            honest_request_p99: world.honest_request_p99(),
            honest_requests: world.honest_request_latencies().len(),
            trace_hash: world.trace().hash_hex(),
        }
    }
}

impl Default for FloodParams {
    fn default() -> FloodParams {
        FloodParams {
            with_hostile: true,
            hostile_targets: 5,
            extra_dials_per_node: 3,
            chain_head_slot: CHAIN_HEAD_SLOT_DEFAULT,
            block_bytes: BLOCK_BYTES_DEFAULT,
            // 10 Mbit/s: a 64-block answer (32 KiB) takes about 26 ms to send.
            uplink_bytes_per_second: 1_250_000,
            honest_interval: Duration::from_secs(1),
            honest_start: Duration::from_secs(2),
            flood_start: Duration::from_secs(5),
            flood_interval: Duration::from_millis(100),
            ranges_per_burst: 8,
            statuses_per_burst: 2,
            redial_interval: Duration::from_secs(2),
            compare_with_baseline: true,
        }
    }
}

#[derive(Clone, Debug)]
struct Baseline {
    honest_request_p99: Option<Duration>,
    honest_requests: usize,
    trace_hash: String,
}

/// The honest traffic and the hostile node's flood.
#[derive(Clone, Debug)]
pub struct FloodApp {
    traffic: HonestTraffic,
    hostile: Option<Hostile>,
}

impl FloodApp {
    /// The honest traffic's counts.
    pub fn traffic(&self) -> TrafficCounts {
        self.traffic.counts()
    }

    /// The hostile node, if there is one.
    pub fn hostile(&self) -> Option<&Hostile> {
        self.hostile.as_ref()
    }
}

/// The hostile node's plan and what happened to it.
#[derive(Clone, Debug)]
pub struct Hostile {
    /// The hostile node.
    pub node: NodeIndex,
    /// The honest nodes it floods.
    pub targets: Vec<NodeIndex>,
    /// When the flood starts.
    pub flood_at: Instant,
    interval: Duration,
    ranges_per_burst: usize,
    statuses_per_burst: usize,
    redial_interval: Duration,
    status: Status,
    last_dial: BTreeMap<NodeIndex, Instant>,
    /// Requests it was told to send.
    pub requests_issued: u64,
    /// Of those, answered.
    pub responses: u64,
    /// Of those, refused with result code 3 (rate limited).
    pub rate_limited: u64,
    /// Of those, failed otherwise (not sent, disconnected, ...).
    pub failed_otherwise: u64,
    /// When it was first refused with result code 3.
    pub first_rate_limited_at: Option<Instant>,
    /// When each target first said Goodbye(bad score) to it.
    pub disconnected_at: BTreeMap<NodeIndex, Instant>,
    /// When each target banned it.
    pub banned_at: BTreeMap<NodeIndex, Instant>,
    /// Its reconnection attempts.
    pub redials: u64,
}

impl Hostile {
    /// Whether every target has banned it.
    pub fn is_banned_by_all(&self) -> bool {
        self.targets
            .iter()
            .all(|target| self.banned_at.contains_key(target))
    }

    /// Whether every target has disconnected it for its score.
    pub fn is_disconnected_by_all(&self) -> bool {
        self.targets
            .iter()
            .all(|target| self.disconnected_at.contains_key(target))
    }

    fn burst(&mut self, sim: &mut Sim) {
        let now = sim.now();
        for &target in &self.targets {
            if sim.has_peer(self.node, target) {
                for burst in 0..self.ranges_per_burst + self.statuses_per_burst {
                    let (protocol, body) = if burst < self.ranges_per_burst {
                        let range = BlocksByRangeRequest {
                            start_slot: 1,
                            count: BLOCKS_PER_RANGE_REQUEST_MAX,
                        };
                        (ProtocolId::BlocksByRange, range.encode())
                    } else {
                        (ProtocolId::Status, self.status.encode())
                    };
                    sim.request(self.node, target, protocol, body);
                    self.requests_issued += 1;
                }
            } else if self
                .last_dial
                .get(&target)
                .is_none_or(|&at| now >= at + self.redial_interval)
            {
                self.last_dial.insert(target, now);
                self.redials += 1;
                let command = Command::Dial {
                    addr: sim.addr(target),
                    peer: Some(sim.peer_id(target)),
                };
                sim.command(self.node, command);
            }
        }
    }

    fn on_notification(&mut self, sim: &Sim, node: NodeIndex, notification: &Notification) {
        let now = sim.now();
        let hostile_id = sim.peer_id(self.node);
        match notification {
            Notification::Response { .. } if node == self.node => self.responses += 1,
            Notification::RequestFailed { error, .. } if node == self.node => match error {
                RequestError::Refused {
                    code: ResultCode::ResourceUnavailable,
                    ..
                } => {
                    self.rate_limited += 1;
                    self.first_rate_limited_at.get_or_insert(now);
                }
                _ => self.failed_otherwise += 1,
            },
            Notification::PeerDisconnected {
                peer,
                reason: DisconnectReason::LocalGoodbye(GoodbyeReason::BadScore),
            } if *peer == hostile_id => {
                self.disconnected_at.entry(node).or_insert(now);
            }
            Notification::PeerBanned { peer, .. } if *peer == hostile_id => {
                self.banned_at.entry(node).or_insert(now);
            }
            _ => {}
        }
    }
}

impl Application for FloodApp {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token } => match split_token(token) {
                (TOKEN_HONEST, index) => self.traffic.on_wake(sim, NodeIndex(index)),
                (TOKEN_FLOOD, _) => {
                    if let Some(hostile) = &mut self.hostile {
                        sim.wake_at(sim.now() + hostile.interval, token);
                        hostile.burst(sim);
                    }
                }
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } => {
                self.traffic.on_notification(node, &notification);
                if let Some(hostile) = &mut self.hostile {
                    hostile.on_notification(sim, node, &notification);
                }
            }
        }
    }
}

/// The outcome fields of `request-flood` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct FloodOutcome {
    honest_nodes: usize,
    honest_traffic: TrafficCounts,
    hostile_targets: usize,
    hostile_requests_issued: u64,
    hostile_responses: u64,
    hostile_rate_limited: u64,
    hostile_failed_otherwise: u64,
    hostile_redials: u64,
    hostile_first_rate_limited_after_ms: Option<f64>,
    hostile_disconnected_by: usize,
    hostile_disconnected_after_ms: Option<f64>,
    hostile_banned_by: usize,
    hostile_banned: bool,
    hostile_banned_after_ms: Option<f64>,
    honest_request_p99_ms: Option<f64>,
    baseline_p99_ms: Option<f64>,
    baseline_honest_requests: Option<usize>,
    baseline_trace_hash: Option<String>,
    p99_ratio: Option<f64>,
}

impl Scenario for RequestFlood {
    fn name(&self) -> &'static str {
        RequestFlood::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        assert!(nodes >= 2, "{} needs at least 2 honest nodes", Self::NAME);
        let config = chain_config(sim, self.params.chain_head_slot, self.params.block_bytes);
        let honest: Vec<NodeIndex> = (0..nodes)
            .map(|_| sim.add_node_with_config(config.clone()))
            .collect();
        let dials = plan_topology(
            sim.scenario_rng(),
            nodes,
            self.params.extra_dials_per_node,
            PEERS_MAX - self.params.hostile_targets.min(PEERS_MAX / 2),
        );
        for (from, to) in dials {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
            sim.dial_at(at, NodeIndex(from), NodeIndex(to));
        }
        let status = chain_status(sim, self.params.chain_head_slot, self.params.block_bytes);
        let start_at = Instant::ZERO + self.params.honest_start;
        let traffic = HonestTraffic::new(
            honest.clone(),
            honest.iter().copied().collect::<BTreeSet<_>>(),
            self.params.honest_interval,
            start_at,
            Instant::MAX,
            self.params.chain_head_slot,
            status,
            TOKEN_HONEST,
        );
        traffic.schedule(sim);

        // Everything above is drawn the same way with or without the hostile node.
        let hostile = self.params.with_hostile.then(|| {
            let mut hostile_config =
                chain_config(sim, self.params.chain_head_slot, self.params.block_bytes);
            hostile_config.faults.ignore_peer_quotas = true;
            let node = sim.add_node_with_config(hostile_config);
            let mut targets = honest.clone();
            rng::shuffle(sim.scenario_rng(), &mut targets);
            targets.truncate(self.params.hostile_targets.max(1));
            targets.sort_unstable();
            for &target in &targets {
                sim.dial(node, target);
            }
            let flood_at = Instant::ZERO + self.params.flood_start;
            sim.wake_at(flood_at, token(TOKEN_FLOOD, node.0));
            Hostile {
                node,
                targets,
                flood_at,
                interval: self.params.flood_interval,
                ranges_per_burst: self.params.ranges_per_burst,
                statuses_per_burst: self.params.statuses_per_burst,
                redial_interval: self.params.redial_interval,
                status,
                last_dial: BTreeMap::new(),
                requests_issued: 0,
                responses: 0,
                rate_limited: 0,
                failed_otherwise: 0,
                first_rate_limited_at: None,
                disconnected_at: BTreeMap::new(),
                banned_at: BTreeMap::new(),
                redials: 0,
            }
        });
        for node in sim.node_indices().collect::<Vec<_>>() {
            sim.set_uplink(node, Some(self.params.uplink_bytes_per_second));
        }
        self.app = Some(FloodApp { traffic, hostile });
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        if self.params.compare_with_baseline {
            let honest = self.app().traffic.requesters.len();
            self.baseline = Some(self.run_baseline(sim, honest, duration));
        }
        let app = self.app.as_mut().expect("built before run");
        app::run_for(sim, app, duration);
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let app = self.app.as_ref()?;
        let since_flood =
            |at: Instant, hostile: &Hostile| millis(at.saturating_duration_since(hostile.flood_at));
        let hostile = app.hostile.as_ref();
        let last_of = |times: &BTreeMap<NodeIndex, Instant>, hostile: &Hostile| {
            let all = hostile
                .targets
                .iter()
                .all(|target| times.contains_key(target));
            let last = times.values().max().copied();
            all.then_some(last)
                .flatten()
                .map(|at| since_flood(at, hostile))
        };
        let p99 = sim.honest_request_p99();
        let baseline_p99 = self
            .baseline
            .as_ref()
            .and_then(|baseline| baseline.honest_request_p99);
        let p99_ratio = match (p99, baseline_p99) {
            (Some(p99), Some(baseline)) if !baseline.is_zero() => {
                Some(p99.as_secs_f64() / baseline.as_secs_f64())
            }
            _ => None,
        };
        let outcome = FloodOutcome {
            honest_nodes: app.traffic.requesters.len(),
            honest_traffic: app.traffic.counts(),
            hostile_targets: hostile.map_or(0, |hostile| hostile.targets.len()),
            hostile_requests_issued: hostile.map_or(0, |hostile| hostile.requests_issued),
            hostile_responses: hostile.map_or(0, |hostile| hostile.responses),
            hostile_rate_limited: hostile.map_or(0, |hostile| hostile.rate_limited),
            hostile_failed_otherwise: hostile.map_or(0, |hostile| hostile.failed_otherwise),
            hostile_redials: hostile.map_or(0, |hostile| hostile.redials),
            hostile_first_rate_limited_after_ms: hostile.and_then(|hostile| {
                hostile
                    .first_rate_limited_at
                    .map(|at| since_flood(at, hostile))
            }),
            hostile_disconnected_by: hostile.map_or(0, |hostile| hostile.disconnected_at.len()),
            hostile_disconnected_after_ms: hostile
                .and_then(|hostile| last_of(&hostile.disconnected_at, hostile)),
            hostile_banned_by: hostile.map_or(0, |hostile| hostile.banned_at.len()),
            hostile_banned: hostile.is_some_and(Hostile::is_banned_by_all),
            hostile_banned_after_ms: hostile
                .and_then(|hostile| last_of(&hostile.banned_at, hostile)),
            honest_request_p99_ms: p99.map(millis),
            baseline_p99_ms: baseline_p99.map(millis),
            baseline_honest_requests: self.baseline.as_ref().map(|b| b.honest_requests),
            baseline_trace_hash: self.baseline.as_ref().map(|b| b.trace_hash.clone()),
            p99_ratio,
        };
        // A struct of numbers, strings and options always serialises.
        Some(serde_json::to_value(outcome).expect("outcome serialises"))
    }
}
