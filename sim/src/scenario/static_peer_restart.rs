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
//! the last watcher's reconnection). [`StaticPeerRestart::bounds_broken`]
//! checks each watcher: connected within [`WATCHER_CONNECTED_AFTER_MAX`] of
//! the start, first redial within [`FIRST_REDIAL_AFTER_CRASH_MAX`] of the
//! crash, each wait at least [`REDIAL_GAP_GROWTH_MIN`] times the one before,
//! and reconnected within the backoff step in force at the restart plus
//! [`RECONNECT_HANDSHAKE_MAX`]. The default run lasts
//! [`StaticPeerRestart::DURATION_DEFAULT`], long enough for that step; a
//! shorter run is judged on what it reached.

use meshsync_core::peer::{PEERS_INBOUND_MAX, REDIAL_BACKOFF_INITIAL, REDIAL_BACKOFF_MAX};
use meshsync_core::{Command, Duration, Instant, Notification};

use super::story::{Bounds, Scenario};
use crate::requests::millis;
use crate::sim::{NodeIndex, Sim};

/// How long after the start each watcher may take to be connected to the
/// static peer: it dials at once, and a handshake takes a few link round
/// trips (tens of ms); a second is room for any link the simulator models.
pub const WATCHER_CONNECTED_AFTER_MAX: Duration = Duration::from_secs(1);
/// How long after the crash each watcher may take to redial: the first
/// backoff step ([`REDIAL_BACKOFF_INITIAL`], less jitter) after it hears the
/// connection reset, one link latency later.
pub const FIRST_REDIAL_AFTER_CRASH_MAX: Duration =
    Duration::from_millis(REDIAL_BACKOFF_INITIAL.as_millis() as u64 + 200);
/// Each wait between redials over the wait before, at least, while the
/// backoff is below its cap: it doubles, and each wait is shortened by up
/// to a quarter (`REDIAL_JITTER_PERCENT`), so 2 × 0.75 = 1.5 less the link
/// latency of the refusal, which both waits include.
pub const REDIAL_GAP_GROWTH_MIN: f64 = 1.4;
/// How long after the backoff step in force at the restart each watcher may
/// take to be connected again: its next dial comes within that step of its
/// last refused one, and then a handshake (tens of ms); a second is room
/// for any link the simulator models.
pub const RECONNECT_HANDSHAKE_MAX: Duration = Duration::from_secs(1);

/// What one watcher did, for the bounds.
#[derive(Clone, Debug)]
struct WatcherRecord {
    node: NodeIndex,
    /// When it first announced the static peer connected.
    first_connected_at: Option<Instant>,
    /// Its dials to the static peer from the crash to the restart.
    dials_while_down: Vec<Instant>,
    /// Its dials to the static peer from the crash on.
    dials_since_crash: Vec<Instant>,
    /// When it announced the static peer connected after the restart.
    reconnected_at: Option<Instant>,
}

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

    /// How long the command line runs it: past the restart at 100 s by the
    /// longest backoff step a 60 s outage can leave in force (64 s, after
    /// six refused dials), and a few seconds more.
    pub const DURATION_DEFAULT: Duration = Duration::from_secs(180);

    /// The backoff step in force after `refused` refused dials: the wait
    /// before the next one, before its jitter (which only shortens it).
    pub fn backoff_step(refused: usize) -> Duration {
        let doublings = u32::try_from(refused).unwrap_or(u32::MAX).min(20);
        (REDIAL_BACKOFF_INITIAL * (1u32 << doublings)).min(REDIAL_BACKOFF_MAX)
    }

    fn records(&self, sim: &Sim) -> Vec<WatcherRecord> {
        let crash_at = Instant::ZERO + self.crash_at;
        let restart_at = self.restart_at();
        let peer = sim.peer_id(Self::STATIC_PEER);
        Self::watchers(sim)
            .into_iter()
            .map(|node| {
                let dials_since_crash = Self::dials_to_static_peer(sim, node, crash_at);
                WatcherRecord {
                    node,
                    first_connected_at: sim.notifications(node).find_map(|(at, notification)| {
                        matches!(notification, Notification::PeerConnected { peer: p, .. } if *p == peer)
                            .then_some(*at)
                    }),
                    dials_while_down: dials_since_crash
                        .iter()
                        .copied()
                        .filter(|&at| at < restart_at)
                        .collect(),
                    dials_since_crash,
                    reconnected_at: Self::reconnected_at(sim, node, restart_at),
                }
            })
            .collect()
    }

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

    /// Each watcher connected at the start, redialling soon after the crash
    /// and then further and further apart, and reconnected within the
    /// backoff step in force at the restart; each part judged once the run
    /// has reached it.
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let crash_at = Instant::ZERO + self.crash_at;
        let restart_at = self.restart_at();
        let now = sim.now();
        let mut bounds = Bounds::default();
        for record in self.records(sim) {
            let watcher = record.node;
            let connected_by = Instant::ZERO + WATCHER_CONNECTED_AFTER_MAX;
            if now >= connected_by.min(crash_at) {
                bounds.require(
                    record
                        .first_connected_at
                        .is_some_and(|at| at <= connected_by),
                    || match record.first_connected_at {
                        Some(at) => format!("{watcher} connected to its static peer only at {at}"),
                        None => format!("{watcher} never connected to its static peer"),
                    },
                );
            }
            let first_redial_by = crash_at + FIRST_REDIAL_AFTER_CRASH_MAX;
            if now >= first_redial_by.min(restart_at) {
                let first = record.dials_since_crash.first().copied();
                bounds.require(
                    first.is_some_and(|at| at <= first_redial_by),
                    || match first {
                        Some(at) => format!(
                            "{watcher} first redialled its static peer {:.0} ms after the crash, \
                         not within {FIRST_REDIAL_AFTER_CRASH_MAX:?}",
                            millis(at.saturating_duration_since(crash_at))
                        ),
                        None => {
                            format!("{watcher} never redialled its static peer after the crash")
                        }
                    },
                );
            }
            // The waits up to the reconnection (or the end), while the backoff is below its cap.
            let gaps: Vec<Duration> = record
                .dials_since_crash
                .iter()
                .take_while(|&&at| record.reconnected_at.is_none_or(|done| at <= done))
                .collect::<Vec<_>>()
                .windows(2)
                .map(|pair| pair[1].saturating_duration_since(*pair[0]))
                .collect();
            for pair in gaps.windows(2) {
                if pair[0] * 8 > REDIAL_BACKOFF_MAX * 3 {
                    break; // The next step may be capped.
                }
                let growth = pair[1].as_secs_f64() / pair[0].as_secs_f64().max(f64::MIN_POSITIVE);
                bounds.require(growth >= REDIAL_GAP_GROWTH_MIN, || {
                    format!(
                        "{watcher} waited {:?} between redials after a wait of {:?}: \
                         {growth:.2} times, below {REDIAL_GAP_GROWTH_MIN}",
                        pair[1], pair[0]
                    )
                });
            }
            let step = Self::backoff_step(record.dials_while_down.len());
            let reconnect_by = restart_at + step + RECONNECT_HANDSHAKE_MAX;
            if now >= reconnect_by || record.reconnected_at.is_some() {
                bounds.require(
                    record.reconnected_at.is_some_and(|at| at <= reconnect_by),
                    || {
                        format!(
                            "{watcher} was {} after the restart, not within the backoff step \
                             of {step:?} after {} refused dials, plus {RECONNECT_HANDSHAKE_MAX:?}",
                            match record.reconnected_at {
                                Some(at) => format!(
                                    "reconnected {:.0} ms",
                                    millis(at.saturating_duration_since(restart_at))
                                ),
                                None => "not reconnected".to_owned(),
                            },
                            record.dials_while_down.len()
                        )
                    },
                );
            }
        }
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::story::built;

    /// Two watchers; the static peer is down from 35 s to 45 s, so each
    /// watcher has redialled three or four times and waits a step of 8 or
    /// 16 s when it comes back: 70 s covers every bound.
    fn world() -> (StaticPeerRestart, Sim) {
        let scenario = StaticPeerRestart {
            crash_at: Duration::from_secs(35),
            down_for: Duration::from_secs(10),
        };
        built(scenario, 3, 3)
    }

    #[test]
    fn the_bound_holds_when_the_watchers_back_off_and_reconnect_and_breaks_when_one_gives_up() {
        let (mut scenario, mut sim) = world();
        scenario.run(&mut sim, Duration::from_secs(70));
        assert_eq!(scenario.bounds_broken(&sim), Vec::<String>::new());
        // A watcher that stops redialling at the crash never comes back.
        let (mut scenario, mut sim) = world();
        scenario.run(&mut sim, Duration::from_secs(35));
        let quitter = NodeIndex(1);
        let addr = sim.addr(StaticPeerRestart::STATIC_PEER);
        sim.command(quitter, Command::RemoveStaticPeer { addr });
        scenario.run(&mut sim, Duration::from_secs(35));
        let broken = scenario.bounds_broken(&sim);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].contains("node 1 never redialled"), "{broken:?}");
        assert!(
            broken[1].contains("node 1 was not reconnected"),
            "{broken:?}"
        );
    }

    #[test]
    fn the_backoff_step_doubles_from_the_first_and_stops_at_the_cap() {
        assert_eq!(StaticPeerRestart::backoff_step(0), REDIAL_BACKOFF_INITIAL);
        assert_eq!(StaticPeerRestart::backoff_step(6), Duration::from_secs(64));
        assert_eq!(StaticPeerRestart::backoff_step(9), REDIAL_BACKOFF_MAX);
        assert_eq!(
            StaticPeerRestart::backoff_step(usize::MAX),
            REDIAL_BACKOFF_MAX
        );
    }
}
