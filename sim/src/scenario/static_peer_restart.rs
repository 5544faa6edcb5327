//! `static-peer-restart`: a static peer crashes, stays down, and comes back.
//!
//! # The story
//! Node 0 is the static peer. Every other node (up to the inbound peer cap)
//! is a *watcher* that keeps node 0 as a static peer (`AddStaticPeer`), so
//! it dials it at once. At `crash_at` node 0's process dies: the watchers
//! see their connections end, and their core redials with exponential
//! backoff (1 s, doubling, capped at 5 min, shortened by up to 25 % jitter);
//! each dial is refused, since nothing listens while node 0 is down. After
//! `down_for` node 0 starts again, a fresh process with the same identity.
//!
//! What must hold: the watchers' redials while node 0 is down come further
//! and further apart (the first watcher's dial times are reported, relative
//! to the crash), and every watcher is connected to node 0 again within one
//! backoff step of its restart (`reconnected_after_ms`: from the restart to
//! the last watcher's reconnection).

use meshsync_core::peer::PEERS_INBOUND_MAX;
use meshsync_core::{Command, Duration, Instant, Notification};

use super::story::Scenario;
use crate::requests::millis;
use crate::sim::{NodeIndex, Sim};

/// The scenario's parameters; [`StaticPeerRestart::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct StaticPeerRestart {
    /// When the static peer crashes. At least `STATIC_PEER_STABLE_DURATION`
    /// (30 s) after the watchers connect, so the backoff starts from its first step.
    pub crash_at: Duration,
    /// How long it stays down.
    pub down_for: Duration,
}

impl StaticPeerRestart {
    /// The scenario's name.
    pub const NAME: &'static str = "static-peer-restart";

    /// The static peer.
    pub const STATIC_PEER: NodeIndex = NodeIndex(0);

    /// When the static peer restarts.
    pub fn restart_at(&self) -> Instant {
        Instant::ZERO + self.crash_at + self.down_for
    }

    /// The watchers of a world built by this scenario.
    pub fn watchers(sim: &Sim) -> Vec<NodeIndex> {
        sim.node_indices()
            .filter(|&node| node != Self::STATIC_PEER)
            .collect()
    }

    /// Whether every watcher is connected to the static peer.
    pub fn all_connected(sim: &Sim) -> bool {
        Self::watchers(sim)
            .into_iter()
            .all(|watcher| sim.are_connected(watcher, Self::STATIC_PEER))
    }

    /// The instants at which `watcher` dialled the static peer, at or after `since`.
    pub fn dials_to_static_peer(sim: &Sim, watcher: NodeIndex, since: Instant) -> Vec<Instant> {
        let addr = sim.addr(Self::STATIC_PEER);
        sim.dial_log(watcher)
            .filter(|(at, to)| *to == addr && *at >= since)
            .map(|(at, _)| *at)
            .collect()
    }

    /// When `watcher` last announced the static peer connected at or after `since`.
    pub fn reconnected_at(sim: &Sim, watcher: NodeIndex, since: Instant) -> Option<Instant> {
        let peer = sim.peer_id(Self::STATIC_PEER);
        sim.notifications(watcher)
            .filter(|(at, notification)| {
                *at >= since
                    && matches!(notification, Notification::PeerConnected { peer: p, .. } if *p == peer)
            })
            .map(|(at, _)| *at)
            .next()
    }
}

impl Default for StaticPeerRestart {
    fn default() -> StaticPeerRestart {
        StaticPeerRestart {
            crash_at: Duration::from_secs(40),
            down_for: Duration::from_secs(60),
        }
    }
}

/// The outcome fields of `static-peer-restart` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct RestartOutcome {
    watchers: usize,
    crash_at_ms: f64,
    restart_at_ms: f64,
    first_watcher_dials_while_down: usize,
    first_watcher_dial_offsets_ms: Vec<f64>,
    first_watcher_dial_gaps_ms: Vec<f64>,
    reconnected_watchers: usize,
    reconnected: bool,
    reconnected_after_ms: Option<f64>,
    first_watcher_reconnected_after_ms: Option<f64>,
}

impl Scenario for StaticPeerRestart {
    fn name(&self) -> &'static str {
        StaticPeerRestart::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        assert!(nodes >= 2, "{} needs at least 2 nodes", Self::NAME);
        // The static peer accepts at most PEERS_INBOUND_MAX inbound peers.
        let nodes = nodes.min(PEERS_INBOUND_MAX + 1);
        let static_peer = sim.add_node();
        assert_eq!(static_peer, Self::STATIC_PEER);
        let command = Command::AddStaticPeer {
            addr: sim.addr(static_peer),
            peer: Some(sim.peer_id(static_peer)),
        };
        for _ in 1..nodes {
            let watcher = sim.add_node();
            sim.command(watcher, command.clone());
        }
        sim.crash_at(Instant::ZERO + self.crash_at, static_peer);
        sim.restart_at(self.restart_at(), static_peer);
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let crash_at = Instant::ZERO + self.crash_at;
        let restart_at = self.restart_at();
        let watchers = Self::watchers(sim);
        let first = *watchers.first()?;
        let dials = Self::dials_to_static_peer(sim, first, crash_at);
        let offsets: Vec<f64> = dials
            .iter()
            .map(|at| millis(at.saturating_duration_since(crash_at)))
            .collect();
        let gaps: Vec<f64> = dials
            .windows(2)
            .map(|pair| millis(pair[1].saturating_duration_since(pair[0])))
            .collect();
        let reconnections: Vec<Option<Instant>> = watchers
            .iter()
            .map(|&watcher| Self::reconnected_at(sim, watcher, restart_at))
            .collect();
        let reconnected_watchers = reconnections.iter().flatten().count();
        let reconnected = reconnected_watchers == watchers.len();
        let after = |at: Instant| millis(at.saturating_duration_since(restart_at));
        let outcome = RestartOutcome {
            watchers: watchers.len(),
            crash_at_ms: millis(self.crash_at),
            restart_at_ms: millis(self.crash_at + self.down_for),
            first_watcher_dials_while_down: dials.iter().filter(|&&at| at < restart_at).count(),
            first_watcher_dial_offsets_ms: offsets,
            first_watcher_dial_gaps_ms: gaps,
            reconnected_watchers,
            reconnected,
            reconnected_after_ms: reconnected
                .then(|| reconnections.iter().flatten().max().copied())
                .flatten()
                .map(after),
            first_watcher_reconnected_after_ms: reconnections[0].map(after),
        };
        // A struct of numbers, bools and options always serialises.
        Some(serde_json::to_value(outcome).expect("outcome serialises"))
    }
}
