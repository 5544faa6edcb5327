//! `restart-recall`: a node crashes, the bootnodes go away, and it finds
//! its way back from its peer store, still refusing the peer it banned.
//!
//! # The story
//! Three bootnodes know each other; every other node knows only them and
//! forms the network by Kademlia discovery (as in `discovery`). One node,
//! the *keeper*, keeps a peer store on its modelled disk
//! (`Config::known_peers`): its core hands over a snapshot
//! (`Action::PersistPeers`) every `PEERSTORE_PERSIST_INTERVAL` (60 s) from
//! its start and 5 s after its routing table grows, and the simulator keeps the last one handed over. One more
//! node is *hostile*: its core ignores its peers' request quotas. It dials
//! the keeper and, from [`RestartRecall::flood_at`] on, fires bursts of
//! Status requests at it while connected; whenever it is not connected it
//! dials the keeper again every [`RestartRecall::redial_interval`], forever.
//! The keeper answers the excess with result code 3 and a Low penalty
//! each, says Goodbye(bad score) at -20, and each return while scored out
//! costs a Mid penalty, so the hostile node walks itself into a ban at -50:
//! a ban earned by misbehaving, not set by the story.
//!
//! At [`RestartRecall::crash_at`] the keeper's process dies (a crash, not a
//! clean stop: no snapshot at shutdown, only the last one on the disk
//! survives) and every bootnode goes away for good. After
//! [`RestartRecall::down_for`] the keeper starts again, a fresh process
//! with the same identity, from the snapshot on its disk and nothing else.
//!
//! What must hold:
//! - the ban was on the disk at the crash and is in force after the restart;
//! - the keeper holds at least half its target (rounded up) within
//!   [`RestartRecall::REGAIN_BOUND`] of its restart, with no bootnode up;
//! - after the restart, while the ban lasts (`BAN_DURATION`, 1 h from the
//!   ban), the hostile node is refused at least once and never connected,
//!   and the keeper's own dials to it never reach the network (its gate
//!   refuses them).
//!
//! The control, with the keeper's disk wiped before the restart, is a test
//! below: the keeper then dials no one but its gone bootnodes until a peer
//! dials it, and the hostile node, its ban gone with the disk, is let back
//! in. (Peers do find a wiped keeper again: nodes below their target dial
//! the records they hold, so the control compares who dialled.)
//!
//! `--duration` is the time watched after the restart; the story before it
//! (network, ban, snapshot, crash, downtime) is fixed, 110 s by default.

use std::collections::BTreeMap;

use meshsync_core::io::{Direction, RefuseReason};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::peer::{Refusal, BAN_DURATION};
use meshsync_core::peerstore::{KnownPeers, PEERSTORE_PERSIST_INTERVAL};
use meshsync_core::reqresp::{Body, ProtocolId};
use meshsync_core::{Command, Duration, Instant, Notification, PeerId};
use rand_core::RngCore;

use super::story::{Bounds, Scenario};
use crate::network;
use crate::requests::millis;
use crate::sim::{NodeIndex, Sim};

/// The scenario's parameters and, once run, what it saw;
/// [`RestartRecall::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct RestartRecall {
    /// Bootnodes, the first nodes of the world.
    pub bootnodes: usize,
    /// Peers each node aims for.
    pub peers_target: usize,
    /// Nodes other than the bootnodes, the keeper and the hostile node
    /// start within this of the beginning.
    pub starts_within: Duration,
    /// When the hostile node starts its bursts.
    pub flood_at: Duration,
    /// Status requests per burst; each beyond the keeper's quota (5 per
    /// 15 s) costs the hostile node a Low penalty.
    pub flood_requests_per_burst: usize,
    /// Time between bursts while the hostile node is connected.
    pub flood_interval: Duration,
    /// How often the hostile node dials the keeper again while not connected.
    pub redial_interval: Duration,
    /// When the keeper crashes and the bootnodes go away.
    pub crash_at: Duration,
    /// How long the keeper stays down.
    pub down_for: Duration,
    /// The control: the keeper's disk is wiped before it restarts.
    pub wipe_disk: bool,
    seen: Seen,
}

/// What the run saw, filled in as it goes.
#[derive(Clone, Debug, Default)]
struct Seen {
    keeper: Option<NodeIndex>,
    hostile: Option<NodeIndex>,
    hostile_last_dial: Option<Instant>,
    hostile_last_burst: Option<Instant>,
    flood_requests: u64,
    /// When the keeper banned the hostile node, and until when.
    banned: Option<(Instant, Instant)>,
    crashed: bool,
    ban_on_disk_at_crash: bool,
    peer_store_at_crash: Option<KnownPeers>,
    restarted_at: Option<Instant>,
    records_loaded: usize,
    ban_in_force_at_restart: bool,
}

impl RestartRecall {
    /// The scenario's name.
    pub const NAME: &'static str = "restart-recall";
    /// Nodes by default: 3 bootnodes, the keeper, the hostile node and 55 others.
    pub const NODES_DEFAULT: usize = 60;
    /// The keeper must hold half its target within this of its restart: it
    /// dials the peers of its store at once, and a handshake is two round
    /// trips (0.10 s median, 0.15 s worst over seeds 1 to 20 at the default
    /// 25 ms links). The margin covers slower links and a second round of
    /// candidates if many of the first are gone.
    pub const REGAIN_BOUND: Duration = Duration::from_secs(2);
    /// How often the run looks at the world (peer counts, the hostile node's plan).
    const SAMPLE_EVERY: Duration = Duration::from_millis(500);

    /// The scenario with its defaults and, if `wipe_disk`, the keeper's disk
    /// wiped before its restart (the control).
    pub fn new(wipe_disk: bool) -> RestartRecall {
        RestartRecall {
            wipe_disk,
            ..RestartRecall::default()
        }
    }

    /// Half the target, rounded up: what the keeper must hold again.
    pub fn half_target(&self) -> usize {
        self.peers_target.div_ceil(2)
    }

    /// When the keeper restarts.
    pub fn restart_at(&self) -> Instant {
        Instant::ZERO + self.crash_at + self.down_for
    }

    /// The keeper, once built.
    pub fn keeper(&self) -> NodeIndex {
        self.seen.keeper.expect("built before use")
    }

    /// The hostile node, once built.
    pub fn hostile(&self) -> NodeIndex {
        self.seen.hostile.expect("built before use")
    }

    /// When the keeper first held half its target after its restart.
    pub fn reached_half_at(&self, sim: &Sim) -> Option<Instant> {
        self.regained(sim).half_at
    }

    /// The keeper's peers now, as its notifications since the restart tell it.
    pub fn peers_replayed(&self, sim: &Sim) -> usize {
        self.regained(sim).peers_now
    }

    /// The hostile node's part, at every sample: a burst while connected
    /// and not yet banned, a dial while not connected.
    fn drive_hostile(&mut self, sim: &mut Sim) {
        let (keeper, hostile) = (self.keeper(), self.hostile());
        let now = sim.now();
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|at| now >= at + every);
        if sim.has_peer(hostile, keeper) {
            let flooding = now >= Instant::ZERO + self.flood_at && self.seen.banned.is_none();
            if flooding && due(self.seen.hostile_last_burst, self.flood_interval) {
                self.seen.hostile_last_burst = Some(now);
                let status = sim.node(hostile).status().encode();
                for _ in 0..self.flood_requests_per_burst {
                    sim.request(hostile, keeper, ProtocolId::Status, status.clone());
                    self.seen.flood_requests += 1;
                }
            }
        } else if due(self.seen.hostile_last_dial, self.redial_interval) {
            self.seen.hostile_last_dial = Some(now);
            let command = Command::Dial {
                addr: sim.addr(keeper),
                peer: Some(sim.peer_id(keeper)),
            };
            sim.command(hostile, command);
        }
    }

    /// Looks at the world after a sample: has the keeper banned the hostile node yet?
    fn observe(&mut self, sim: &Sim) {
        let (keeper, hostile) = (self.keeper(), sim.peer_id(self.hostile()));
        if self.seen.banned.is_none() {
            self.seen.banned =
                sim.notifications(keeper)
                    .find_map(|(at, notification)| match notification {
                        Notification::PeerBanned { peer, until, .. } if *peer == hostile => {
                            Some((*at, *until))
                        }
                        _ => None,
                    });
        }
    }

    /// The keeper's peers after its restart, replayed from its notifications.
    fn regained(&self, sim: &Sim) -> Regained {
        let mut regained = Regained::default();
        let Some(restarted_at) = self.seen.restarted_at else {
            return regained;
        };
        let half = self.half_target();
        let mut peers: BTreeMap<PeerId, Direction> = BTreeMap::new();
        for (at, notification) in sim.notifications(self.keeper()) {
            if *at < restarted_at {
                continue;
            }
            match notification {
                Notification::PeerConnected {
                    peer, direction, ..
                } => {
                    peers.insert(*peer, *direction);
                    if *direction == Direction::Inbound {
                        regained.first_inbound_at.get_or_insert(*at);
                    }
                }
                Notification::PeerDisconnected { peer, .. } => {
                    peers.remove(peer);
                }
                _ => continue,
            }
            let outbound = peers
                .values()
                .filter(|&&direction| direction == Direction::Outbound)
                .count();
            regained.peers_max = regained.peers_max.max(peers.len());
            if peers.len() >= half {
                regained.half_at.get_or_insert(*at);
            }
            if outbound >= half {
                regained.half_outbound_at.get_or_insert(*at);
            }
        }
        regained.peers_now = peers.len();
        regained
    }

    /// The keeper crashes; the bootnodes go away for good.
    fn crash(&mut self, sim: &mut Sim) {
        let keeper = self.keeper();
        let hostile = sim.peer_id(self.hostile());
        let on_disk = sim.peer_store_on_disk(keeper).cloned();
        self.seen.ban_on_disk_at_crash = on_disk
            .as_ref()
            .is_some_and(|known| known.peer_bans.iter().any(|ban| ban.peer == hostile));
        self.seen.peer_store_at_crash = on_disk;
        sim.crash(keeper);
        for bootnode in 0..self.bootnodes {
            sim.crash(NodeIndex(bootnode));
        }
        self.seen.crashed = true;
    }

    /// The keeper starts again from what its disk holds (nothing, for the control).
    fn restart(&mut self, sim: &mut Sim) {
        let keeper = self.keeper();
        if self.wipe_disk {
            sim.wipe_disk(keeper, true);
        }
        sim.restart(keeper);
        let now = sim.now();
        self.seen.restarted_at = Some(now);
        let node = sim.node(keeper);
        self.seen.records_loaded = node
            .config()
            .known_peers
            .as_ref()
            .map_or(0, |known| known.records.len());
        self.seen.ban_in_force_at_restart = node
            .peer_manager()
            .is_banned(now, &sim.peer_id(self.hostile()));
    }
}

/// The keeper's peers after its restart, from its notifications.
#[derive(Clone, Copy, Debug, Default)]
struct Regained {
    /// When it first held half its target.
    half_at: Option<Instant>,
    /// When the peers it dialled itself first made half its target.
    half_outbound_at: Option<Instant>,
    /// When a peer first dialled it.
    first_inbound_at: Option<Instant>,
    /// The most it held.
    peers_max: usize,
    /// What it holds now.
    peers_now: usize,
}

impl Default for RestartRecall {
    fn default() -> RestartRecall {
        RestartRecall {
            bootnodes: 3,
            peers_target: meshsync_core::peer::PEERS_TARGET,
            starts_within: Duration::from_secs(30),
            flood_at: Duration::from_secs(20),
            flood_requests_per_burst: 30,
            flood_interval: Duration::from_secs(1),
            redial_interval: Duration::from_secs(2),
            // Between the keeper's first snapshot (60 s) and its second: the
            // 30 s since the last one are lost, as a crash loses them.
            crash_at: Duration::from_secs(90),
            down_for: Duration::from_secs(20),
            wipe_disk: false,
            seen: Seen::default(),
        }
    }
}

/// The outcome fields of `restart-recall` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct RecallOutcome {
    nodes: usize,
    bootnodes: usize,
    peers_target: usize,
    half_target: usize,
    disk_wiped: bool,
    flood_requests: u64,
    banned_after_flood_s: Option<f64>,
    ban_on_disk_at_crash: bool,
    peer_store_age_at_crash_s: Option<f64>,
    records_on_disk_at_crash: usize,
    records_loaded: usize,
    ban_in_force_at_restart: bool,
    bootnodes_up_after_restart: usize,
    seconds_to_half_target_after_restart: Option<f64>,
    seconds_to_half_target_dialled_after_restart: Option<f64>,
    seconds_to_first_inbound_after_restart: Option<f64>,
    keeper_dials_beyond_bootnodes_before_first_inbound: usize,
    peers_after_restart: usize,
    outbound_peers_after_restart: usize,
    peers_max_after_restart: usize,
    keeper_dials_after_restart: usize,
    banned_peer_dials_after_restart: usize,
    /// The hostile node's connections the keeper refused for its ban.
    banned_peer_refusals_after_restart: usize,
    /// The keeper's dials to the hostile node that its gate refused.
    keeper_dials_to_banned_peer_refused: usize,
    /// The keeper's dials to the hostile node that reached the network while the ban lasted.
    keeper_dials_to_banned_peer_sent: usize,
    /// Whether the hostile node connected while the ban lasted.
    banned_peer_connected_after_restart: bool,
    ban_in_force_at_end: bool,
    notifications_cover_restart: bool,
}

impl RestartRecall {
    fn measure(&self, sim: &Sim) -> RecallOutcome {
        let (keeper, hostile) = (self.keeper(), self.hostile());
        let hostile_id: PeerId = sim.peer_id(hostile);
        let hostile_addr = sim.addr(hostile);
        let restarted_at = self.seen.restarted_at.unwrap_or(Instant::MAX);
        let after_restart = |at: &Instant| *at >= restarted_at;
        let seconds = |d: Duration| millis(d) / 1000.0;

        let mut refusals = 0;
        let mut dials_refused = 0;
        let mut connected = false;
        let ban_ends_at = self.seen.banned.map_or(Instant::ZERO, |(_, until)| until);
        for (at, notification) in sim
            .notifications(keeper)
            .filter(|(at, _)| after_restart(at))
        {
            match notification {
                Notification::ConnectionRefused {
                    peer,
                    addr,
                    reason: RefuseReason::Gated(Refusal::Banned | Refusal::BannedIp),
                } if *peer == Some(hostile_id) || addr.ip() == hostile_addr.ip() => refusals += 1,
                Notification::DialFailed { addr, .. } if *addr == hostile_addr => {
                    dials_refused += 1
                }
                Notification::PeerConnected { peer, .. } if *peer == hostile_id => {
                    connected |= *at < ban_ends_at
                }
                _ => {}
            }
        }
        let regained = self.regained(sim);
        let since_restart = |at: Instant| seconds(at.saturating_duration_since(restarted_at));
        let keeper_dials: Vec<_> = sim
            .dial_log(keeper)
            .filter(|(at, _)| after_restart(at))
            .collect();
        let up = sim.is_up(keeper);
        let peers = if up {
            sim.node(keeper).peers()
        } else {
            Vec::new()
        };
        let on_disk = self.seen.peer_store_at_crash.as_ref();
        let snapshot_at_ms =
            on_disk.and_then(|known| known.scores.iter().map(|score| score.at_unix_ms).max());
        let crash_at_ms =
            (Instant::ZERO + self.crash_at).as_millis() + sim.node(keeper).unix_ms_at_origin();
        RecallOutcome {
            nodes: sim.node_count(),
            bootnodes: self.bootnodes,
            peers_target: self.peers_target,
            half_target: self.half_target(),
            disk_wiped: self.wipe_disk,
            flood_requests: self.seen.flood_requests,
            banned_after_flood_s: self.seen.banned.map(|(at, _)| {
                seconds(at.saturating_duration_since(Instant::ZERO + self.flood_at))
            }),
            ban_on_disk_at_crash: self.seen.ban_on_disk_at_crash,
            peer_store_age_at_crash_s: snapshot_at_ms
                .map(|at_ms| crash_at_ms.saturating_sub(at_ms) as f64 / 1000.0),
            records_on_disk_at_crash: on_disk.map_or(0, |known| known.records.len()),
            records_loaded: self.seen.records_loaded,
            ban_in_force_at_restart: self.seen.ban_in_force_at_restart,
            bootnodes_up_after_restart: (0..self.bootnodes)
                .filter(|&index| sim.is_up(NodeIndex(index)))
                .count(),
            seconds_to_half_target_after_restart: regained.half_at.map(since_restart),
            seconds_to_half_target_dialled_after_restart: regained
                .half_outbound_at
                .map(since_restart),
            seconds_to_first_inbound_after_restart: regained.first_inbound_at.map(since_restart),
            // Its dials to the bootnodes it is configured with are refused:
            // they went away for good.
            keeper_dials_beyond_bootnodes_before_first_inbound: keeper_dials
                .iter()
                .filter(|(at, to)| {
                    regained.first_inbound_at.is_none_or(|first| *at < first)
                        && (0..self.bootnodes).all(|index| *to != sim.addr(NodeIndex(index)))
                })
                .count(),
            peers_after_restart: peers.len(),
            outbound_peers_after_restart: peers
                .iter()
                .filter(|peer| peer.direction == Direction::Outbound)
                .count(),
            peers_max_after_restart: regained.peers_max,
            keeper_dials_after_restart: keeper_dials.len(),
            banned_peer_dials_after_restart: sim
                .dial_log(hostile)
                .filter(|(at, to)| after_restart(at) && *to == sim.addr(keeper))
                .count(),
            banned_peer_refusals_after_restart: refusals,
            keeper_dials_to_banned_peer_refused: dials_refused,
            keeper_dials_to_banned_peer_sent: keeper_dials
                .iter()
                .filter(|(at, to)| *to == hostile_addr && *at < ban_ends_at)
                .count(),
            banned_peer_connected_after_restart: connected,
            ban_in_force_at_end: up
                && sim
                    .node(keeper)
                    .peer_manager()
                    .is_banned(sim.now(), &hostile_id),
            notifications_cover_restart: sim
                .notifications(keeper)
                .next()
                .is_none_or(|(at, _)| *at <= restarted_at),
        }
    }
}

impl Scenario for RestartRecall {
    fn name(&self) -> &'static str {
        RestartRecall::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let others_min = self.bootnodes + 2 + self.half_target();
        assert!(
            nodes >= others_min,
            "{} needs at least {others_min} nodes: {} bootnodes, the keeper, the hostile node and {} more for the keeper to find",
            Self::NAME,
            self.bootnodes,
            self.half_target()
        );
        // The ban must be earned before a snapshot that precedes the crash,
        // and still be in force when the keeper restarts.
        assert!(
            self.flood_at + PEERSTORE_PERSIST_INTERVAL <= self.crash_at,
            "the ban comes a snapshot before the crash"
        );
        assert!(
            self.crash_at + self.down_for < self.flood_at + BAN_DURATION,
            "the ban outlasts the downtime"
        );
        let base = sim.node_config();
        let port = base.listen_port;
        let config_for = |index: usize, bootnodes: Vec<_>, target: usize| {
            let mut config = base.clone();
            config.discovery = Some(DiscoveryConfig {
                addresses: vec![network::node_address(NodeIndex(index), port)],
                allow_private: true,
                subnet_limits: false,
                bootnodes,
                peers_target: target,
                record_seq: 1,
                learn_address_port: None,
            });
            config
        };
        let mut bootnodes = Vec::new();
        for index in 0..self.bootnodes {
            let config = config_for(index, bootnodes.clone(), self.peers_target);
            let node = sim.add_node_with_config(config);
            bootnodes.push((sim.peer_id(node), sim.addr(node)));
        }
        // The keeper and the hostile node start at once: the keeper's
        // snapshots then fall at 60 s, 120 s, ... of the run.
        let mut keeper = config_for(self.bootnodes, bootnodes.clone(), self.peers_target);
        keeper.known_peers = Some(KnownPeers::default());
        self.seen.keeper = Some(sim.add_node_with_config(keeper));
        let mut hostile = config_for(self.bootnodes + 1, bootnodes.clone(), self.peers_target);
        hostile.faults.ignore_peer_quotas = true;
        self.seen.hostile = Some(sim.add_node_with_config(hostile));

        // A start window is seconds to minutes: far within u64 milliseconds.
        let window_ms = (self.starts_within.as_millis() as u64).max(1);
        for index in self.bootnodes + 2..nodes {
            let config = config_for(index, bootnodes.clone(), self.peers_target);
            let node = sim.add_node_with_config(config);
            let start =
                Instant::ZERO + Duration::from_millis(sim.scenario_rng().next_u64() % window_ms);
            // Not running until its start: down from the first instant.
            sim.crash_at(Instant::ZERO, node);
            sim.restart_at(start, node);
        }
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let crash_at = Instant::ZERO + self.crash_at;
        let restart_at = self.restart_at();
        let end = restart_at + duration;
        loop {
            let now = sim.now();
            if !self.seen.crashed && now >= crash_at {
                self.crash(sim);
            }
            if self.seen.crashed && self.seen.restarted_at.is_none() && now >= restart_at {
                self.restart(sim);
            }
            self.observe(sim);
            if now >= end {
                break;
            }
            self.drive_hostile(sim);
            // Step to the next sample, and land on the crash and the
            // restart exactly.
            let next = [crash_at, restart_at]
                .into_iter()
                .filter(|&at| at > now)
                .fold((now + Self::SAMPLE_EVERY).min(end), Instant::min);
            sim.run_for(next.saturating_duration_since(now));
        }
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        // A struct of numbers, bools and options always serialises.
        Some(serde_json::to_value(self.measure(sim)).expect("outcome serialises"))
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let outcome = self.measure(sim);
        let mut bounds = Bounds::default();
        bounds.require(self.seen.restarted_at.is_some(), || {
            "the run ended before the keeper restarted".to_owned()
        });
        bounds.require(outcome.banned_after_flood_s.is_some(), || {
            "the keeper never banned the hostile node".to_owned()
        });
        bounds.require(outcome.bootnodes_up_after_restart == 0, || {
            format!(
                "{} bootnodes were up after the restart",
                outcome.bootnodes_up_after_restart
            )
        });
        bounds.require(outcome.notifications_cover_restart, || {
            "the keeper's notification log lost entries from after its restart".to_owned()
        });
        if self.wipe_disk {
            // The control states no bound of its own: its test says what it shows.
            return bounds.into_broken();
        }
        bounds.require(outcome.ban_on_disk_at_crash, || {
            "the hostile node's ban was not in the peer store on disk at the crash".to_owned()
        });
        bounds.require(outcome.ban_in_force_at_restart, || {
            "the ban was not in force after the restart".to_owned()
        });
        let bound = millis(Self::REGAIN_BOUND) / 1000.0;
        bounds.require(
            outcome
                .seconds_to_half_target_after_restart
                .is_some_and(|seconds| seconds <= bound),
            || {
                format!(
                    "the keeper held half its target of {} after {:?} s (bound {bound} s)",
                    outcome.peers_target, outcome.seconds_to_half_target_after_restart
                )
            },
        );
        bounds.require(outcome.banned_peer_refusals_after_restart > 0, || {
            format!(
                "the hostile node was never refused after the restart ({} dials)",
                outcome.banned_peer_dials_after_restart
            )
        });
        bounds.require(!outcome.banned_peer_connected_after_restart, || {
            "the banned hostile node connected to the keeper after its restart".to_owned()
        });
        bounds.require(outcome.keeper_dials_to_banned_peer_sent == 0, || {
            format!(
                "the keeper dialled the banned node {} times after its restart",
                outcome.keeper_dials_to_banned_peer_sent
            )
        });
        let ban_lasts = self.seen.banned.is_some_and(|(_, until)| sim.now() < until);
        bounds.require(!ban_lasts || outcome.ban_in_force_at_end, || {
            "the ban was not in force at the end".to_owned()
        });
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    const NODES: usize = 20;
    const WATCH: Duration = Duration::from_secs(20);

    fn run(seed: u64, wipe_disk: bool) -> (RestartRecall, Sim) {
        let mut scenario = RestartRecall::new(wipe_disk);
        let mut sim = Sim::new(SimConfig::new(seed));
        scenario.build(&mut sim, NODES);
        sim.mark_built();
        scenario.run(&mut sim, WATCH);
        scenario.finish(&mut sim);
        (scenario, sim)
    }

    /// The control: the same story with the keeper's disk wiped while it is
    /// down. With no bootnode and no store it knows no one: it dials nobody
    /// but its gone bootnodes until a peer dials it, and the hostile node, whose ban went with the
    /// disk, is let back in. The same seed with the disk kept dials half
    /// its target at once and keeps the hostile node out.
    ///
    /// Peers do find the wiped keeper again: nodes below their target dial
    /// the records they hold, the hostile node among them, and the keeper
    /// looks itself up through the first that arrives. So the control
    /// compares who dialled, not whether peers came back.
    #[test]
    fn a_keeper_whose_disk_was_wiped_dials_no_one_and_lets_the_banned_node_in() {
        for seed in 1..=2 {
            let (wiped, wiped_sim) = run(seed, true);
            let outcome = wiped.measure(&wiped_sim);
            assert_eq!(outcome.records_loaded, 0, "seed {seed}: {outcome:?}");
            assert!(!outcome.ban_in_force_at_restart, "seed {seed}: {outcome:?}");
            assert_eq!(
                outcome.keeper_dials_beyond_bootnodes_before_first_inbound, 0,
                "seed {seed}: {outcome:?}"
            );
            assert!(
                outcome.keeper_dials_after_restart > 0,
                "seed {seed}: {outcome:?}"
            );
            assert_eq!(
                outcome.seconds_to_half_target_dialled_after_restart, None,
                "seed {seed}: {outcome:?}"
            );
            assert!(
                outcome.banned_peer_connected_after_restart,
                "seed {seed}: {outcome:?}"
            );
            assert_eq!(
                wiped_sim.invariant_violations(),
                0,
                "{:?}",
                wiped_sim.violations()
            );

            let (kept, kept_sim) = run(seed, false);
            let outcome = kept.measure(&kept_sim);
            assert!(
                outcome.records_loaded >= kept.half_target(),
                "seed {seed}: {outcome:?}"
            );
            assert!(
                outcome.keeper_dials_beyond_bootnodes_before_first_inbound >= kept.half_target(),
                "seed {seed}: {outcome:?}"
            );
            assert!(
                outcome
                    .seconds_to_half_target_dialled_after_restart
                    .is_some_and(|seconds| seconds <= RestartRecall::REGAIN_BOUND.as_secs_f64()),
                "seed {seed}: {outcome:?}"
            );
            assert!(
                !outcome.banned_peer_connected_after_restart,
                "seed {seed}: {outcome:?}"
            );
            assert!(
                kept.bounds_broken(&kept_sim).is_empty(),
                "seed {seed}: {outcome:?}"
            );

            // The replay of its notifications is the peer count the node keeps.
            for (scenario, sim) in [(&wiped, &wiped_sim), (&kept, &kept_sim)] {
                assert_eq!(
                    scenario.peers_replayed(sim),
                    sim.node(scenario.keeper()).peer_count()
                );
            }
        }
    }
}
