//! `unresponsive-peer`: a requester fetches the chain from several peers,
//! one of which takes requests and never answers.
//!
//! # The story
//! Node 0, the requester, dials `nodes - 1` servers that all hold the same
//! devnet chain. Server 1 is faulty (`faults.never_answer_requests`): it
//! admits every request and never answers. From `start`, every `interval`,
//! the requester asks for the next range of `range_slots` blocks, going
//! round-robin over the servers it is connected to, walking the chain over
//! and over until `fetch_for` has passed. A request that fails (times out, is refused, its peer
//! goes away) is the application's to retry: it asks another connected
//! server at once, and counts the retry.
//!
//! What must hold: requests to the faulty server time out (5 s to the first
//! chunk), each costing it score, until its score reaches the disconnect
//! threshold and the requester drops it with Goodbye(bad score); and every
//! range the requester asked for arrives, checked block by block, from the
//! others. [`UnresponsivePeer::bounds_broken`] puts numbers on it: the
//! silent server is dropped by its [`UNRESPONSIVE_TIMEOUTS_MAX`]th timeout
//! and within [`UNRESPONSIVE_DROPPED_AFTER_ROUNDS_MAX`] rounds of the first
//! request to it, no range waits longer than [`RANGE_WAIT_MAX`], and the
//! requester keeps every other server.
//!
//! The world is small by default ([`UnresponsivePeer::NODES_DEFAULT`]: the
//! requester and three servers), so the silent server gets a third of the
//! requests and the story is told in seconds; with `--nodes 50` it gets one
//! request in 49 and is dropped after about a minute.
//!
//! How fast the score falls is bounded by the faulty server itself: it holds
//! at most 4 unanswered requests from one peer (until they expire there,
//! after 10 s) and refuses the rest at once with result code 3, which costs
//! it nothing, since an honest but busy server answers the same way. So it
//! collects at most about 4 timeouts per 10 s, and the 20 points to the
//! disconnect threshold take the better part of a minute of steady traffic:
//! `fetch_for` must be that long.

use std::collections::BTreeMap;

use meshsync_core::io::{DisconnectReason, GoodbyeReason, RequestError};
use meshsync_core::reqresp::bodies::BlocksByRangeRequest;
use meshsync_core::reqresp::limits::BLOCKS_PER_RANGE_REQUEST_MAX;
use meshsync_core::reqresp::{Body, ProtocolId};
use meshsync_core::{Duration, Instant, Notification};

use super::story::{Bounds, Scenario};
use super::workload::{
    chain_config, check_range, error_kind, split_token, token, BLOCK_BYTES_DEFAULT,
    CHAIN_HEAD_SLOT_DEFAULT,
};
use crate::app::{self, AppEvent, Application};
use crate::requests::millis;
use crate::sim::{NodeIndex, Sim, Timeout};

const TOKEN_NEXT_RANGE: u16 = 1;
const TOKEN_RETRY: u16 = 2;
/// How long the requester waits before retrying a range when no other server is connected.
pub const RETRY_WITHOUT_SERVER_DELAY: Duration = Duration::from_secs(1);

/// Requests to the silent server that may time out before the requester
/// drops it, at most: the waste a peer that never answers can cause. Its
/// first two stalls (requests expiring together) cost a point a request,
/// every later one ten (`TIMEOUTS_IN_A_ROW_TOLERATED`), so the fourth stall
/// takes a score of zero past the disconnect threshold (-20); with at most
/// 4 requests in flight to it, that is 16 timeouts at worst. These worlds
/// take 3 to 6.
pub const UNRESPONSIVE_TIMEOUTS_MAX: u64 = 16;
/// Rounds of the requester's round robin (one request every `interval`,
/// each to the next server: the silent one is asked once a round) within
/// which it drops the silent server, counted from the first request to it.
/// Dropping takes a few timeouts of 5 s each, and how often the silent
/// server is asked grows with the servers; in rounds it takes 12 with 2
/// servers, 8.7 with 3 and 9, 5.2 with 49 (6 s, 6.5 s, 19.5 s, 64 s). 16
/// leaves a third of slack at the smallest world.
pub const UNRESPONSIVE_DROPPED_AFTER_ROUNDS_MAX: u32 = 16;
/// The longest a range may wait for its blocks, from when it was first
/// asked for: one first-chunk timeout of the silent server (5 s), then an
/// answer from another (tens of ms); a range queued behind four requests
/// in flight to the silent server waits for them to expire too, and is
/// asked elsewhere when the server is dropped. 5.06 s at most over seeds;
/// a request's whole lifetime (10 s) is the bound.
pub const RANGE_WAIT_MAX: Duration = meshsync_core::reqresp::limits::RESPONSE_TIMEOUT;

/// The parameters of [`UnresponsivePeer`]; the defaults are what the command line runs.
#[derive(Clone, Debug)]
pub struct FetchParams {
    /// Blocks each server holds.
    pub chain_head_slot: u64,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Blocks per request.
    pub range_slots: u64,
    /// How long the requester keeps asking for new ranges.
    pub fetch_for: Duration,
    /// When the first request goes out (the connections are up by then).
    pub start: Duration,
    /// Time between new ranges.
    pub interval: Duration,
}

/// The scenario: its parameters and, once built, the requester's state.
#[derive(Clone, Debug, Default)]
pub struct UnresponsivePeer {
    /// What to run.
    pub params: FetchParams,
    app: Option<Fetcher>,
}

impl UnresponsivePeer {
    /// The scenario's name.
    pub const NAME: &'static str = "unresponsive-peer";
    /// Nodes by default: the requester and three servers, one of them silent.
    pub const NODES_DEFAULT: usize = 4;

    /// The scenario with `params`.
    pub fn new(params: FetchParams) -> UnresponsivePeer {
        UnresponsivePeer { params, app: None }
    }

    /// The requester's state, once built.
    pub fn app(&self) -> &Fetcher {
        self.app.as_ref().expect("built before use")
    }

    /// Steps until `predicate` holds, at most `steps_max` steps, with the
    /// requester's logic reacting after every step.
    pub fn run_until(
        &mut self,
        sim: &mut Sim,
        predicate: impl FnMut(&Sim, &Fetcher) -> bool,
        steps_max: u64,
    ) -> Result<(), Timeout> {
        let app = self.app.as_mut().expect("built before use");
        app::run_until(sim, app, predicate, steps_max)
    }
}

impl Default for FetchParams {
    fn default() -> FetchParams {
        FetchParams {
            chain_head_slot: CHAIN_HEAD_SLOT_DEFAULT,
            block_bytes: BLOCK_BYTES_DEFAULT,
            range_slots: 16,
            fetch_for: Duration::from_secs(90),
            start: Duration::from_secs(1),
            interval: Duration::from_millis(250),
        }
    }
}

/// The requester's application: which ranges it wants, which are done, and
/// what happened to the faulty server.
#[derive(Clone, Debug)]
pub struct Fetcher {
    /// The node that fetches.
    pub requester: NodeIndex,
    /// The servers it may ask, the faulty one included.
    pub servers: Vec<NodeIndex>,
    /// The faulty server.
    pub unresponsive: NodeIndex,
    head_slot: u64,
    interval: Duration,
    range_slots: u64,
    stop_at: Instant,
    /// Every range asked for so far, by index.
    ranges: Vec<BlocksByRangeRequest>,
    round_robin: usize,
    /// When each range was first asked for, by index.
    asked_at: Vec<Instant>,
    /// When each range arrived, checked, by index.
    arrived_at: Vec<Option<Instant>>,
    /// Tag → (range index, server asked).
    open: BTreeMap<u64, (usize, NodeIndex)>,
    /// Ranges waiting for a server to be connected.
    retry_queue: Vec<usize>,
    /// Ranges received and checked.
    pub ranges_completed: usize,
    /// Requests asked again of another server after a failure.
    pub retries: u64,
    /// Requests sent to the faulty server.
    pub requests_to_unresponsive: u64,
    /// Of those, timed out (the rest were refused at once, or failed when
    /// the requester dropped it).
    pub timeouts_from_unresponsive: u64,
    /// Failures by kind (see `error_kind`), over all servers.
    pub failures: BTreeMap<&'static str, u64>,
    /// Answers that did not check out.
    pub invalid_responses: u64,
    /// Blocks received in valid answers.
    pub blocks_received: u64,
    /// When the first request to the faulty server went out.
    pub first_request_to_unresponsive_at: Option<Instant>,
    /// When the requester dropped the faulty server, and why.
    pub unresponsive_dropped: Option<(Instant, DisconnectReason)>,
}

impl Fetcher {
    /// Ranges the requester has asked for so far.
    pub fn ranges_total(&self) -> usize {
        self.ranges.len()
    }

    /// Whether every range asked for has arrived.
    pub fn is_complete(&self) -> bool {
        self.ranges_completed == self.ranges.len()
    }

    /// Whether the requester is done asking for new ranges.
    pub fn is_done_asking(&self, sim: &Sim) -> bool {
        sim.now() > self.stop_at
    }

    /// The longest any range has waited so far: from when it was first
    /// asked for to when it arrived, or to `now` if it has not.
    pub fn range_wait_max(&self, now: Instant) -> Duration {
        self.asked_at
            .iter()
            .zip(&self.arrived_at)
            .map(|(&asked, &arrived)| arrived.unwrap_or(now).saturating_duration_since(asked))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The next range of the walk over the chain, first asked for `now`.
    fn next_range(&mut self, now: Instant) -> usize {
        let per_round = self.head_slot.div_ceil(self.range_slots);
        let index = self.ranges.len();
        let start_slot = 1 + (index as u64 % per_round) * self.range_slots;
        self.ranges.push(BlocksByRangeRequest {
            start_slot,
            count: self.range_slots,
        });
        self.asked_at.push(now);
        self.arrived_at.push(None);
        index
    }

    /// Whether the faulty server was dropped for its score.
    pub fn dropped_for_score(&self) -> bool {
        matches!(
            self.unresponsive_dropped,
            Some((_, DisconnectReason::LocalGoodbye(GoodbyeReason::BadScore)))
        )
    }

    fn connected_servers(&self, sim: &Sim) -> Vec<NodeIndex> {
        self.servers
            .iter()
            .copied()
            .filter(|&server| sim.has_peer(self.requester, server))
            .collect()
    }

    /// Asks for range `range`, of the next connected server other than
    /// `avoid` (or of `avoid` if it is the only one left).
    fn ask(&mut self, sim: &mut Sim, range: usize, avoid: Option<NodeIndex>) {
        let connected = self.connected_servers(sim);
        let others: Vec<NodeIndex> = connected
            .iter()
            .copied()
            .filter(|&server| Some(server) != avoid)
            .collect();
        let candidates = if others.is_empty() { connected } else { others };
        if candidates.is_empty() {
            self.retry_queue.push(range);
            if self.retry_queue.len() == 1 {
                sim.wake_at(
                    sim.now() + RETRY_WITHOUT_SERVER_DELAY,
                    token(TOKEN_RETRY, 0),
                );
            }
            return;
        }
        let server = candidates[self.round_robin % candidates.len()];
        self.round_robin += 1;
        if server == self.unresponsive {
            self.requests_to_unresponsive += 1;
            self.first_request_to_unresponsive_at
                .get_or_insert(sim.now());
        }
        let request = self.ranges[range];
        let tag = sim.request(
            self.requester,
            server,
            ProtocolId::BlocksByRange,
            request.encode(),
        );
        self.open.insert(tag, (range, server));
    }
}

impl Application for Fetcher {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token: woke } => match split_token(woke) {
                (TOKEN_NEXT_RANGE, _) => {
                    if !self.is_done_asking(sim) {
                        let range = self.next_range(sim.now());
                        self.ask(sim, range, None);
                        sim.wake_at(sim.now() + self.interval, woke);
                    }
                }
                (TOKEN_RETRY, _) => {
                    for range in std::mem::take(&mut self.retry_queue) {
                        self.ask(sim, range, None);
                    }
                }
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } if node == self.requester => {
                match notification {
                    Notification::Response { tag, chunks, .. } => {
                        let Some((range, server)) = self.open.remove(&tag) else {
                            return;
                        };
                        match check_range(&chunks, self.ranges[range], self.head_slot) {
                            Ok(()) => {
                                if self.arrived_at[range].is_none() {
                                    self.arrived_at[range] = Some(sim.now());
                                    self.ranges_completed += 1;
                                }
                                self.blocks_received += chunks.len() as u64;
                            }
                            Err(problem) => {
                                log::warn!("{server} answered range {range} wrongly: {problem}");
                                self.invalid_responses += 1;
                                self.retries += 1;
                                self.ask(sim, range, Some(server));
                            }
                        }
                    }
                    Notification::RequestFailed { tag, error, .. } => {
                        let Some((range, server)) = self.open.remove(&tag) else {
                            return;
                        };
                        *self.failures.entry(error_kind(&error)).or_insert(0) += 1;
                        if matches!(
                            error,
                            RequestError::FirstChunkTimeout | RequestError::ResponseTimeout
                        ) {
                            log::debug!("{server} timed out on range {range}");
                            if server == self.unresponsive {
                                self.timeouts_from_unresponsive += 1;
                            }
                        }
                        self.retries += 1;
                        self.ask(sim, range, Some(server));
                    }
                    Notification::PeerDisconnected { peer, reason }
                        if peer == sim.peer_id(self.unresponsive) =>
                    {
                        self.unresponsive_dropped.get_or_insert((sim.now(), reason));
                    }
                    _ => {}
                }
            }
            AppEvent::Notification { .. } => {}
        }
    }
}

/// The outcome fields of `unresponsive-peer` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct UnresponsiveOutcome {
    servers: usize,
    ranges_total: usize,
    ranges_completed: usize,
    all_ranges_received: bool,
    blocks_received: u64,
    invalid_responses: u64,
    retries: u64,
    failures: BTreeMap<&'static str, u64>,
    requests_to_unresponsive: u64,
    timeouts_from_unresponsive: u64,
    requester_timeouts: u64,
    unresponsive_dropped: bool,
    unresponsive_dropped_for_score: bool,
    unresponsive_drop_reason: Option<String>,
    unresponsive_dropped_after_ms: Option<f64>,
    range_wait_ms_max: f64,
}

impl Scenario for UnresponsivePeer {
    fn name(&self) -> &'static str {
        UnresponsivePeer::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        assert!(
            nodes >= 3,
            "{} needs a requester and at least 2 servers",
            Self::NAME
        );
        let config = chain_config(sim, self.params.chain_head_slot, self.params.block_bytes);
        let requester = sim.add_node_with_config(config.clone());
        let mut faulty = config.clone();
        faulty.faults.never_answer_requests = true;
        let unresponsive = sim.add_node_with_config(faulty);
        let mut servers = vec![unresponsive];
        servers.extend((2..nodes).map(|_| sim.add_node_with_config(config.clone())));
        for &server in &servers {
            sim.dial(requester, server);
        }
        assert!(self.params.chain_head_slot > 0, "the servers need a chain");
        let start_at = Instant::ZERO + self.params.start;
        sim.wake_at(start_at, token(TOKEN_NEXT_RANGE, 0));
        self.app = Some(Fetcher {
            requester,
            servers,
            unresponsive,
            head_slot: self.params.chain_head_slot,
            interval: self.params.interval,
            range_slots: self
                .params
                .range_slots
                .clamp(1, BLOCKS_PER_RANGE_REQUEST_MAX),
            stop_at: start_at + self.params.fetch_for,
            ranges: Vec::new(),
            asked_at: Vec::new(),
            arrived_at: Vec::new(),
            round_robin: 0,
            open: BTreeMap::new(),
            retry_queue: Vec::new(),
            ranges_completed: 0,
            retries: 0,
            requests_to_unresponsive: 0,
            timeouts_from_unresponsive: 0,
            failures: BTreeMap::new(),
            invalid_responses: 0,
            blocks_received: 0,
            first_request_to_unresponsive_at: None,
            unresponsive_dropped: None,
        });
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let app = self.app.as_mut().expect("built before run");
        app::run_for(sim, app, duration);
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let app = self.app.as_ref()?;
        let dropped_after = match (
            app.first_request_to_unresponsive_at,
            &app.unresponsive_dropped,
        ) {
            (Some(first), Some((at, _))) => Some(millis(at.saturating_duration_since(first))),
            _ => None,
        };
        let outcome = UnresponsiveOutcome {
            servers: app.servers.len(),
            ranges_total: app.ranges_total(),
            ranges_completed: app.ranges_completed,
            all_ranges_received: app.is_complete(),
            blocks_received: app.blocks_received,
            invalid_responses: app.invalid_responses,
            retries: app.retries,
            failures: app.failures.clone(),
            requests_to_unresponsive: app.requests_to_unresponsive,
            timeouts_from_unresponsive: app.timeouts_from_unresponsive,
            requester_timeouts: sim.counter(app.requester, |counters| counters.requests_timed_out),
            unresponsive_dropped: app.unresponsive_dropped.is_some(),
            unresponsive_dropped_for_score: app.dropped_for_score(),
            unresponsive_drop_reason: app
                .unresponsive_dropped
                .as_ref()
                .map(|(_, reason)| reason.to_string()),
            unresponsive_dropped_after_ms: dropped_after,
            range_wait_ms_max: millis(app.range_wait_max(sim.now())),
        };
        // A struct of numbers, strings and options always serialises.
        Some(serde_json::to_value(outcome).expect("outcome serialises"))
    }

    /// The silent server dropped for its score by its
    /// [`UNRESPONSIVE_TIMEOUTS_MAX`]th timeout and within
    /// [`UNRESPONSIVE_DROPPED_AFTER_ROUNDS_MAX`] rounds of the first request
    /// to it (judged once the run has reached that); no range waiting
    /// longer than [`RANGE_WAIT_MAX`]; no answer that does not check out;
    /// every other server still connected.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let Some(app) = self.app.as_ref() else {
            return vec!["the world was never built".to_owned()];
        };
        let mut bounds = Bounds::default();
        let timeouts = app.timeouts_from_unresponsive;
        bounds.require(timeouts <= UNRESPONSIVE_TIMEOUTS_MAX, || {
            format!(
                "{timeouts} requests to the silent server timed out, above \
                 {UNRESPONSIVE_TIMEOUTS_MAX}: it was not dropped in time"
            )
        });
        if let Some((_, reason)) = &app.unresponsive_dropped {
            bounds.require(app.dropped_for_score(), || {
                format!("the silent server was dropped for another reason: {reason}")
            });
        }
        if let Some(first) = app.first_request_to_unresponsive_at {
            let round = app.interval * app.servers.len() as u32;
            let bound = round * UNRESPONSIVE_DROPPED_AFTER_ROUNDS_MAX;
            let dropped_at = app.unresponsive_dropped.as_ref().map(|(at, _)| *at);
            let in_time = match dropped_at {
                Some(at) => at <= first + bound,
                None => sim.now() < first + bound,
            };
            bounds.require(in_time, || {
                format!(
                    "the silent server was {}, not within {UNRESPONSIVE_DROPPED_AFTER_ROUNDS_MAX} \
                     rounds ({:.0} ms with {} servers) of the first request to it",
                    match dropped_at {
                        Some(at) => format!(
                            "dropped only {:.0} ms after the first request to it",
                            millis(at.saturating_duration_since(first))
                        ),
                        None => "never dropped".to_owned(),
                    },
                    millis(bound),
                    app.servers.len(),
                )
            });
        }
        let wait = app.range_wait_max(sim.now());
        bounds.require(wait <= RANGE_WAIT_MAX, || {
            format!(
                "a range waited {:.0} ms for its blocks, above {:.0} ms",
                millis(wait),
                millis(RANGE_WAIT_MAX)
            )
        });
        bounds.require(app.invalid_responses == 0, || {
            format!("{} answers did not check out", app.invalid_responses)
        });
        for &server in app.servers.iter().filter(|&&s| s != app.unresponsive) {
            bounds.require(sim.has_peer(app.requester, server), || {
                format!("the requester lost {server}, which answers")
            });
        }
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::story::built;

    fn world() -> (UnresponsivePeer, Sim) {
        built(
            UnresponsivePeer::default(),
            4,
            UnresponsivePeer::NODES_DEFAULT,
        )
    }

    #[test]
    fn the_bound_holds_when_the_silent_server_is_dropped_and_breaks_when_it_is_not_charged() {
        let (mut scenario, mut sim) = world();
        scenario.run(&mut sim, Duration::from_secs(20));
        assert_eq!(scenario.bounds_broken(&sim), Vec::<String>::new());
        assert!(scenario.app().dropped_for_score());
        // A server that goes mute too, once connected, looks cut off: its
        // timeouts wait, uncharged, for it to speak again, and nothing
        // drops it in time. Ranges queued behind its requests in flight
        // wait out theirs and then their own.
        let (mut scenario, mut sim) = world();
        scenario.run(&mut sim, Duration::from_millis(500));
        assert!(sim.has_peer(scenario.app().requester, scenario.app().unresponsive));
        sim.set_mute(scenario.app().unresponsive, true);
        scenario.run(&mut sim, Duration::from_millis(19_500));
        let broken = scenario.bounds_broken(&sim);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].contains("never dropped"), "{broken:?}");
        assert!(broken[1].starts_with("a range waited"), "{broken:?}");
    }
}
