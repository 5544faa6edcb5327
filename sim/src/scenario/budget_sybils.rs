//! `budget-sybils`: Sybils within their quotas try to take a node's whole
//! serving budget while honest peers fetch blocks from it.
//!
//! # The story
//! One target node serves a devnet chain. `honest` requesters (the nodes
//! besides the target and the Sybils) dial it and fetch block ranges and its
//! Status at a steady rate ([`HonestTraffic`], all from the target). From
//! the same start, `sybils` more nodes dial it too and keep
//! [`SYBIL_REQUESTS_OUTSTANDING`] BlocksByRange requests of 64 slots past its
//! head queued each from `sybil_start` on: their cores hold the requests back to the target's
//! per-peer quota (1024 blocks per 10 s each), so they never break a quota
//! of theirs, and they ignore its `ResourceUnavailable` answers rather than
//! back off (`faults.ignore_busy_answers`). Together they ask for far more
//! than the target's global budget (4096 blocks per 10 s), for answers that
//! are empty and cost them nothing but tokens.
//!
//! What must hold: honest requests answered are at least 0.95 of those
//! answered in the same world without the Sybils (run inside the same
//! invocation from the same seed, honest plan drawn first); no honest peer is
//! penalised or disconnected by the target; and the Sybils are served at most
//! their share of peers of the target's budget. The outcome reports these
//! numbers and [`BudgetSybils::bounds_broken`] checks them (the constants
//! below say why each value).

use std::collections::BTreeSet;

use meshsync_core::reqresp::bodies::BlocksByRangeRequest;
use meshsync_core::reqresp::limits::{
    BLOCKS_PER_RANGE_REQUEST_MAX, GLOBAL_SERVING_QUOTA, RESPONSE_TIMEOUT,
};
use meshsync_core::reqresp::{Body, ProtocolId};
use meshsync_core::{Duration, Instant, Notification};

use super::story::{Bounds, Scenario};
use super::workload::{
    chain_config, chain_status, split_token, token, HonestTraffic, TrafficCounts,
    BLOCK_BYTES_DEFAULT, CHAIN_HEAD_SLOT_DEFAULT,
};
use crate::app::{self, AppEvent, Application};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

const TOKEN_HONEST: u16 = 1;
const TOKEN_SYBILS: u16 = 2;

/// Honest requests answered, over those answered in the same world without
/// the Sybils, at least. The Sybils may cost an honest requester a busy
/// answer and its retry now and then (each waits out the time the answer
/// names), not a twentieth of its requests. Requests still open at the end
/// and issued less than [`HONEST_REQUEST_LIFETIME`] before it count as
/// answered: they have not had their time yet, and one that the baseline
/// answered just before its end would otherwise count against the attack
/// (with about 36 honest requests in a 20 s run, one is 2.8 %).
pub const HONEST_SERVED_RATIO_MIN: f64 = 0.95;
/// How long an honest request may stay open before it is judged: a
/// request's whole lifetime ([`RESPONSE_TIMEOUT`]).
pub const HONEST_REQUEST_LIFETIME: Duration = RESPONSE_TIMEOUT;

/// Requests each Sybil keeps queued with the target: enough that its core
/// always has one ready when the quota allows.
pub const SYBIL_REQUESTS_OUTSTANDING: usize = 8;

/// The parameters of [`BudgetSybils`]; the defaults are what the command line runs.
#[derive(Clone, Debug)]
pub struct BudgetParams {
    /// Sybils (0: the baseline).
    pub sybils: usize,
    /// Blocks the target serves.
    pub chain_head_slot: u64,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Time between one honest requester's requests (32-block ranges, and
    /// one in eight a Status): 2 s is about 14 blocks/s each, below a fair
    /// share of the budget (20.5 blocks/s) among 20 peers.
    pub honest_interval: Duration,
    /// When honest requests start (the dials are up by then).
    pub start: Duration,
    /// When the Sybils start asking: once every honest requester has asked,
    /// so the budget is already shared. (Before that, a budget nobody else
    /// wants is theirs to use: shares go to the peers that ask.)
    pub sybil_start: Duration,
    /// How often each Sybil tops up its queue of requests.
    pub sybil_interval: Duration,
    /// Whether to run the world without Sybils too, for the ratio.
    pub compare_with_baseline: bool,
}

impl Default for BudgetParams {
    fn default() -> BudgetParams {
        BudgetParams {
            sybils: BudgetSybils::SYBILS_DEFAULT,
            chain_head_slot: CHAIN_HEAD_SLOT_DEFAULT,
            block_bytes: BLOCK_BYTES_DEFAULT,
            honest_interval: Duration::from_secs(2),
            start: Duration::from_secs(2),
            sybil_start: Duration::from_secs(5),
            sybil_interval: Duration::from_millis(100),
            compare_with_baseline: true,
        }
    }
}

/// The scenario: its parameters and, once built, its application state.
#[derive(Clone, Debug, Default)]
pub struct BudgetSybils {
    /// What to run.
    pub params: BudgetParams,
    app: Option<BudgetApp>,
    baseline_answered: Option<u64>,
}

impl BudgetSybils {
    /// The scenario's name.
    pub const NAME: &'static str = "budget-sybils";
    /// Nodes by default: the target, 4 honest requesters and the Sybils.
    pub const NODES_DEFAULT: usize = 1 + 4 + BudgetSybils::SYBILS_DEFAULT;
    /// Sybils by default.
    pub const SYBILS_DEFAULT: usize = 8;

    /// The scenario with `params`.
    pub fn new(params: BudgetParams) -> BudgetSybils {
        BudgetSybils {
            params,
            app: None,
            baseline_answered: None,
        }
    }

    /// The scenario with `sybils_pct` percent of the nodes as Sybils (the
    /// command line's `--sybils`), or its default count (fewer if `nodes`
    /// leaves no room for a target and an honest requester).
    pub fn with_sybils_pct(nodes: usize, sybils_pct: Option<u32>) -> BudgetSybils {
        let sybils = sybils_pct
            .map_or(BudgetSybils::SYBILS_DEFAULT, |pct| {
                nodes.saturating_mul(pct as usize) / 100
            })
            .min(nodes.saturating_sub(2));
        BudgetSybils::new(BudgetParams {
            sybils,
            ..BudgetParams::default()
        })
    }

    /// The application state, once built.
    pub fn app(&self) -> &BudgetApp {
        self.app.as_ref().expect("built before use")
    }
}

/// The honest traffic, the Sybils, and what each was served.
#[derive(Clone, Debug)]
pub struct BudgetApp {
    target: NodeIndex,
    honest: Vec<NodeIndex>,
    traffic: HonestTraffic,
    sybils: Vec<NodeIndex>,
    sybil_interval: Duration,
    head_slot: u64,
    /// Requests each Sybil has outstanding, by its position in `sybils`.
    outstanding: Vec<usize>,
    /// Sybil requests answered (each cost 64 tokens of the budget).
    pub sybil_answered: u64,
    /// Sybil requests refused with `ResourceUnavailable`.
    pub sybil_refused: u64,
    /// Honest peers the target disconnected.
    pub honest_disconnected: u64,
    /// Honest requests refused as busy (the target's shared budget: no penalty).
    pub honest_refused_busy: u64,
    /// Honest requests refused by their own quota (a penalty each).
    pub honest_refused_over_quota: u64,
}

impl BudgetApp {
    /// The honest traffic's counts.
    pub fn traffic(&self) -> TrafficCounts {
        self.traffic.counts()
    }

    fn top_up(&mut self, sim: &mut Sim) {
        for (position, &sybil) in self.sybils.iter().enumerate() {
            if !sim.has_peer(sybil, self.target) {
                continue;
            }
            while self.outstanding[position] < SYBIL_REQUESTS_OUTSTANDING {
                let start_slot = self.head_slot + 1 + rng::below(sim.scenario_rng(), 1 << 20);
                let range = BlocksByRangeRequest {
                    start_slot,
                    count: BLOCKS_PER_RANGE_REQUEST_MAX,
                };
                sim.request(
                    sybil,
                    self.target,
                    ProtocolId::BlocksByRange,
                    range.encode(),
                );
                self.outstanding[position] += 1;
            }
        }
    }

    fn on_notification(&mut self, sim: &Sim, node: NodeIndex, notification: &Notification) {
        if let Some(position) = self.sybils.iter().position(|&sybil| sybil == node) {
            match notification {
                Notification::Response { .. } => {
                    self.sybil_answered += 1;
                    self.outstanding[position] -= 1;
                }
                Notification::RequestFailed { error, .. } => {
                    if matches!(error, meshsync_core::io::RequestError::Refused { .. }) {
                        self.sybil_refused += 1;
                    }
                    self.outstanding[position] -= 1;
                }
                _ => {}
            }
            return;
        }
        if self.honest.contains(&node) {
            if let Notification::RequestFailed {
                error: meshsync_core::io::RequestError::Refused { message, .. },
                ..
            } = notification
            {
                if message.starts_with("busy") {
                    self.honest_refused_busy += 1;
                } else if message.starts_with("rate limited") {
                    self.honest_refused_over_quota += 1;
                }
            }
            return;
        }
        if node == self.target {
            if let Notification::PeerDisconnected { peer, .. } = notification {
                if sim
                    .index_of(*peer)
                    .is_some_and(|index| self.honest.contains(&index))
                {
                    self.honest_disconnected += 1;
                }
            }
        }
    }
}

impl Application for BudgetApp {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token } => match split_token(token) {
                (TOKEN_HONEST, index) => self.traffic.on_wake(sim, NodeIndex(index)),
                (TOKEN_SYBILS, _) => {
                    sim.wake_at(sim.now() + self.sybil_interval, token);
                    self.top_up(sim);
                }
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } => {
                self.traffic.on_notification(node, &notification);
                self.on_notification(sim, node, &notification);
            }
        }
    }
}

/// The outcome fields of `budget-sybils` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct BudgetOutcome {
    honest_nodes: usize,
    sybils: usize,
    honest_traffic: TrafficCounts,
    baseline_honest_answered: Option<u64>,
    honest_served_ratio: Option<f64>,
    honest_open_young: u64,
    honest_served_ratio_judged: Option<f64>,
    honest_min_score_at_target: f64,
    honest_disconnected: u64,
    honest_refused_busy: u64,
    honest_refused_over_quota: u64,
    honest_retried_busy: u64,
    target_limited_global: u64,
    target_limited_peer: u64,
    sybil_answered: u64,
    sybil_refused: u64,
    budget_tokens: u64,
    sybil_tokens_served: u64,
    honest_tokens_served: u64,
    sybil_budget_share: f64,
    sybil_served_share: f64,
    sybil_peer_share: f64,
}

impl BudgetSybils {
    /// The outcome as numbers, for the tests.
    pub fn figures(&self, sim: &Sim) -> BudgetFigures {
        let app = self.app();
        let target = app.target;
        let now = sim.now();
        let honest_min_score = app
            .honest
            .iter()
            .map(|&honest| {
                sim.node(target)
                    .peer_manager()
                    .score(now, &sim.peer_id(honest))
                    .as_points()
            })
            .fold(f64::INFINITY, f64::min);
        // The whole bucket once, then its refill from the first request on.
        let period_micros = GLOBAL_SERVING_QUOTA.period.as_micros() as u64;
        let asking_micros = now
            .saturating_duration_since(Instant::ZERO + self.params.start)
            .as_micros() as u64;
        let budget_tokens = GLOBAL_SERVING_QUOTA.tokens_max
            + GLOBAL_SERVING_QUOTA.tokens_max * asking_micros / period_micros;
        let sybil_tokens = app.sybil_answered * BLOCKS_PER_RANGE_REQUEST_MAX;
        let honest_tokens = app.traffic.counts().answered * app.traffic.range_slots;
        let peers = app.honest.len() + app.sybils.len();
        BudgetFigures {
            honest_answered: app.traffic.counts().answered,
            honest_open_young: app.traffic.open_younger_than(now, HONEST_REQUEST_LIFETIME),
            baseline_honest_answered: self.baseline_answered,
            honest_min_score_at_target: honest_min_score,
            honest_disconnected: app.honest_disconnected,
            honest_refused_busy: app.honest_refused_busy,
            honest_refused_over_quota: app.honest_refused_over_quota,
            honest_retried_busy: app
                .honest
                .iter()
                .map(|&honest| sim.counter(honest, |c| c.requests_retried_busy))
                .sum(),
            target_limited_global: sim.counter(target, |c| c.requests_limited_global),
            target_limited_peer: sim.counter(target, |c| c.requests_limited_peer),
            budget_tokens,
            sybil_tokens_served: sybil_tokens,
            honest_tokens_served: honest_tokens,
            sybil_peer_share: app.sybils.len() as f64 / peers.max(1) as f64,
        }
    }
}

/// What a run of [`BudgetSybils`] measured.
#[derive(Clone, Copy, Debug)]
pub struct BudgetFigures {
    /// Honest requests answered with what they asked for.
    pub honest_answered: u64,
    /// Honest requests still open at the end, issued less than
    /// [`HONEST_REQUEST_LIFETIME`] before it.
    pub honest_open_young: u64,
    /// The same in the world without Sybils, if it was run.
    pub baseline_honest_answered: Option<u64>,
    /// The lowest score the target gives an honest requester, in points.
    pub honest_min_score_at_target: f64,
    /// Honest requesters the target disconnected.
    pub honest_disconnected: u64,
    /// Honest requests refused as busy (no penalty).
    pub honest_refused_busy: u64,
    /// Honest requests refused by their own quota (a penalty each).
    pub honest_refused_over_quota: u64,
    /// Honest requests sent again after a busy answer (each waits out the
    /// time the answer names; a request that stays busy after a few tries
    /// fails and counts in `honest_refused_busy`).
    pub honest_retried_busy: u64,
    /// The target's refusals by its shared budget (no penalty).
    pub target_limited_global: u64,
    /// The target's refusals by a requester's own quota (a penalty each):
    /// Sybils asking at the very edge of their quota, whose requests jitter
    /// brings closer together than their cores sent them.
    pub target_limited_peer: u64,
    /// The target's global budget over the run, in tokens.
    pub budget_tokens: u64,
    /// Tokens the Sybils' answered requests cost.
    pub sybil_tokens_served: u64,
    /// Tokens the honest requesters' answered ranges cost.
    pub honest_tokens_served: u64,
    /// Sybils among the target's requesting peers.
    pub sybil_peer_share: f64,
}

impl BudgetFigures {
    /// Honest requests answered, relative to the world without Sybils.
    pub fn honest_served_ratio(&self) -> Option<f64> {
        self.baseline_honest_answered
            .filter(|&baseline| baseline > 0)
            .map(|baseline| self.honest_answered as f64 / baseline as f64)
    }

    /// Honest requests answered, and those open too young to judge,
    /// relative to the world without Sybils: what
    /// [`HONEST_SERVED_RATIO_MIN`] bounds.
    pub fn honest_served_ratio_judged(&self) -> Option<f64> {
        self.baseline_honest_answered
            .filter(|&baseline| baseline > 0)
            .map(|baseline| {
                (self.honest_answered + self.honest_open_young) as f64 / baseline as f64
            })
    }

    /// The Sybils' part of the target's budget over the run.
    pub fn sybil_budget_share(&self) -> f64 {
        self.sybil_tokens_served as f64 / self.budget_tokens.max(1) as f64
    }

    /// The Sybils' part of what the target served.
    pub fn sybil_served_share(&self) -> f64 {
        let served = self.sybil_tokens_served + self.honest_tokens_served;
        self.sybil_tokens_served as f64 / served.max(1) as f64
    }
}

impl Scenario for BudgetSybils {
    fn name(&self) -> &'static str {
        BudgetSybils::NAME
    }

    /// `nodes` is the whole world: the target, the Sybils, and the rest honest.
    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let sybils = self.params.sybils;
        assert!(
            nodes >= sybils + 2,
            "{} needs a target and an honest requester besides {sybils} Sybils",
            Self::NAME
        );
        let head_slot = self.params.chain_head_slot;
        let config = chain_config(sim, head_slot, self.params.block_bytes);
        let target = sim.add_node_with_config(config.clone());
        let honest: Vec<NodeIndex> = (0..nodes - 1 - sybils)
            .map(|_| sim.add_node_with_config(config.clone()))
            .collect();
        for &requester in &honest {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
            sim.dial_at(at, requester, target);
        }
        let status = chain_status(sim, head_slot, self.params.block_bytes);
        let start_at = Instant::ZERO + self.params.start;
        let traffic = HonestTraffic::new(
            honest.clone(),
            BTreeSet::from([target]),
            self.params.honest_interval,
            start_at,
            Instant::MAX,
            head_slot,
            status,
            TOKEN_HONEST,
        );
        traffic.schedule(sim);

        // Everything above is drawn the same way with or without the Sybils.
        let sybil_nodes: Vec<NodeIndex> = (0..sybils)
            .map(|_| {
                let mut sybil_config = chain_config(sim, head_slot, self.params.block_bytes);
                sybil_config.faults.ignore_busy_answers = true;
                let sybil = sim.add_node_with_config(sybil_config);
                let at = Instant::from_micros(rng::below(sim.scenario_rng(), 1_000_000));
                sim.dial_at(at, sybil, target);
                sybil
            })
            .collect();
        if !sybil_nodes.is_empty() {
            sim.wake_at(
                Instant::ZERO + self.params.sybil_start,
                token(TOKEN_SYBILS, 0),
            );
        }
        self.app = Some(BudgetApp {
            target,
            honest,
            traffic,
            outstanding: vec![0; sybil_nodes.len()],
            sybils: sybil_nodes,
            sybil_interval: self.params.sybil_interval,
            head_slot,
            sybil_answered: 0,
            sybil_refused: 0,
            honest_disconnected: 0,
            honest_refused_busy: 0,
            honest_refused_over_quota: 0,
        });
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        if self.params.compare_with_baseline && self.params.sybils > 0 {
            let mut baseline = BudgetSybils::new(BudgetParams {
                sybils: 0,
                compare_with_baseline: false,
                ..self.params.clone()
            });
            let mut world = Sim::new(sim.config().clone());
            let nodes = 1 + self.app().honest.len();
            baseline.build(&mut world, nodes);
            baseline.run(&mut world, duration);
            self.baseline_answered = Some(baseline.app().traffic().answered);
        }
        let app = self.app.as_mut().expect("built before run");
        app::run_for(sim, app, duration);
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let app = self.app.as_ref()?;
        let figures = self.figures(sim);
        let outcome = BudgetOutcome {
            honest_nodes: app.honest.len(),
            sybils: app.sybils.len(),
            honest_traffic: app.traffic.counts(),
            baseline_honest_answered: figures.baseline_honest_answered,
            honest_served_ratio: figures.honest_served_ratio(),
            honest_open_young: figures.honest_open_young,
            honest_served_ratio_judged: figures.honest_served_ratio_judged(),
            honest_min_score_at_target: figures.honest_min_score_at_target,
            honest_disconnected: figures.honest_disconnected,
            honest_refused_busy: figures.honest_refused_busy,
            honest_refused_over_quota: figures.honest_refused_over_quota,
            honest_retried_busy: figures.honest_retried_busy,
            target_limited_global: figures.target_limited_global,
            target_limited_peer: figures.target_limited_peer,
            sybil_answered: app.sybil_answered,
            sybil_refused: app.sybil_refused,
            budget_tokens: figures.budget_tokens,
            sybil_tokens_served: figures.sybil_tokens_served,
            honest_tokens_served: figures.honest_tokens_served,
            sybil_budget_share: figures.sybil_budget_share(),
            sybil_served_share: figures.sybil_served_share(),
            sybil_peer_share: figures.sybil_peer_share,
        };
        // A struct of numbers always serialises.
        Some(serde_json::to_value(outcome).expect("outcome serialises"))
    }

    /// Honest requesters served at least [`HONEST_SERVED_RATIO_MIN`] of the
    /// baseline, none of them penalised or disconnected by the target, the
    /// Sybils served at most their share of peers of its budget, and (once
    /// the Sybils have asked for a quota period) the budget under pressure,
    /// so the rest means something.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let Some(app) = self.app.as_ref() else {
            return vec!["the world was never built".to_owned()];
        };
        let figures = self.figures(sim);
        let mut bounds = Bounds::default();
        if let Some(ratio) = figures.honest_served_ratio_judged() {
            bounds.require(ratio >= HONEST_SERVED_RATIO_MIN, || {
                format!(
                    "honest requests answered (with {} still open) are {ratio:.3} of the \
                     {} answered without Sybils, below {HONEST_SERVED_RATIO_MIN}",
                    figures.honest_open_young,
                    figures.baseline_honest_answered.unwrap_or(0),
                )
            });
        }
        bounds.require(figures.honest_disconnected == 0, || {
            format!(
                "the target disconnected honest requesters {} times",
                figures.honest_disconnected
            )
        });
        bounds.require(figures.honest_refused_over_quota == 0, || {
            format!(
                "{} honest requests were refused by their own quota (a penalty each)",
                figures.honest_refused_over_quota
            )
        });
        bounds.require(figures.honest_min_score_at_target >= 0.0, || {
            format!(
                "the target scores an honest requester {:.2}, below 0",
                figures.honest_min_score_at_target
            )
        });
        let (share, peer_share) = (figures.sybil_budget_share(), figures.sybil_peer_share);
        bounds.require(share <= peer_share, || {
            format!(
                "the Sybils took {share:.3} of the target's budget, above their {peer_share:.3} \
                 share of its peers"
            )
        });
        let pressed_from = Instant::ZERO + self.params.sybil_start + GLOBAL_SERVING_QUOTA.period;
        if !app.sybils.is_empty() && sim.now() >= pressed_from {
            bounds.require(figures.target_limited_global > 0, || {
                "the Sybils never exhausted the target's budget: nothing was shown".to_owned()
            });
        }
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::story::built;

    /// A target, two honest requesters and four Sybils.
    fn world() -> (BudgetSybils, Sim) {
        let scenario = BudgetSybils::new(BudgetParams {
            sybils: 4,
            ..BudgetParams::default()
        });
        built(scenario, 7, 7)
    }

    #[test]
    fn the_bound_holds_when_honest_requesters_keep_their_share_and_breaks_when_they_lose_it() {
        let (mut scenario, mut sim) = world();
        scenario.run(&mut sim, Duration::from_secs(20));
        assert_eq!(scenario.bounds_broken(&sim), Vec::<String>::new());
        // An honest requester cut off from the target from the start gets
        // nothing; the baseline, run inside `run`, got its share. The
        // Sybils, sharing the budget with one requester fewer than the peers
        // the bound counts, take more than their share of those too.
        let (mut scenario, mut sim) = world();
        let honest = scenario.app().honest[0];
        sim.set_blackholed(honest, true);
        scenario.run(&mut sim, Duration::from_secs(20));
        let broken = scenario.bounds_broken(&sim);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[0].starts_with("honest requests answered"),
            "{broken:?}"
        );
        assert!(broken[1].starts_with("the Sybils took"), "{broken:?}");
    }
}
