//! `handshake-flood`: hosts that open connections and never send a byte
//! flood one node's handshake slots; honest peers that dial it during the
//! flood still become its peers within a second.
//!
//! # The story
//! Node 0 is the target. The first 100 *flooders* (each at an address of its
//! own) open 10 connections each to it, and the next 150 open 4 each; they
//! are mute (nothing they write leaves them), so every connection stays in
//! its handshake until someone gives up on it. The flood comes in waves,
//! one every [`HandshakeFlood::wave_interval`], from `flood_from` to the end
//! of the run: each wave, every flooder opens its connections again, so
//! slots freed by the target's deadlines fill again at once.
//!
//! Every [`HandshakeFlood::honest_interval`] from `honest_from` on, a fresh
//! honest node dials the target.
//!
//! What must hold: each address holds at most `HANDSHAKES_PER_IP_MAX`
//! handshakes (the rest of its connections are refused at once), the
//! second group fills the slots past `HANDSHAKES_IN_PROGRESS_MAX` (so each
//! newcomer evicts the handshake open the longest), and every honest node
//! is the target's peer within [`HONEST_HANDSHAKE_MAX`] of its dial.

use meshsync_core::limits::{HANDSHAKES_IN_PROGRESS_MAX, HANDSHAKES_PER_IP_MAX};
use meshsync_core::{Command, Duration, Instant, Notification};

use super::story::{Bounds, Scenario};
use crate::requests::millis;
use crate::sim::{NodeIndex, Sim};

/// How long an honest node may take, from its dial, to be the target's peer.
pub const HONEST_HANDSHAKE_MAX: Duration = Duration::from_secs(1);

/// How often the scenario looks at the target's handshakes in progress.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The scenario's parameters; [`HandshakeFlood::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct HandshakeFlood {
    /// Flooders that each open [`HandshakeFlood::connections_many`] connections.
    pub flooders_many: usize,
    /// Connections each of those opens per wave: more than its address may hold.
    pub connections_many: usize,
    /// Flooders that each open [`HandshakeFlood::connections_few`] connections.
    pub flooders_few: usize,
    /// Connections each of those opens per wave.
    pub connections_few: usize,
    /// When the first wave comes.
    pub flood_from: Duration,
    /// Time between waves.
    pub wave_interval: Duration,
    /// When the first honest node dials.
    pub honest_from: Duration,
    /// Time between honest nodes' dials.
    pub honest_interval: Duration,
    /// The flooders and the connections each opens per wave.
    flooders: Vec<(NodeIndex, usize)>,
    /// Honest nodes and when each dials.
    honest: Vec<(NodeIndex, Instant)>,
    /// Waves sent so far.
    waves: u64,
    /// The most inbound handshakes the target held at once (sampled).
    inbound_handshakes_max: usize,
}

impl HandshakeFlood {
    /// The scenario's name.
    pub const NAME: &'static str = "handshake-flood";
    /// The target.
    pub const TARGET: NodeIndex = NodeIndex(0);
    /// Honest nodes the scenario adds (one dial each); `--nodes` does not change it.
    pub const HONEST_NODES: usize = 6;

    /// The connections one wave opens.
    pub fn connections_per_wave(&self) -> usize {
        self.flooders_many * self.connections_many + self.flooders_few * self.connections_few
    }

    /// Each honest node, when it dialled, and when the target became its
    /// peer, if it did.
    pub fn honest_dials(&self, sim: &Sim) -> Vec<(Instant, Option<Instant>)> {
        let target = sim.peer_id(Self::TARGET);
        self.honest
            .iter()
            .map(|&(node, dialled)| {
                let connected = sim.notifications(node).find_map(|(at, notification)| {
                    matches!(notification, Notification::PeerConnected { peer, .. } if *peer == target)
                        .then_some(*at)
                });
                (dialled, connected)
            })
            .collect()
    }
}

impl Default for HandshakeFlood {
    fn default() -> HandshakeFlood {
        HandshakeFlood {
            flooders_many: 100,
            connections_many: 10,
            flooders_few: 150,
            connections_few: HANDSHAKES_PER_IP_MAX,
            flood_from: Duration::from_secs(1),
            wave_interval: Duration::from_secs(3),
            honest_from: Duration::from_millis(2_500),
            honest_interval: Duration::from_secs(3),
            flooders: Vec::new(),
            honest: Vec::new(),
            waves: 0,
            inbound_handshakes_max: 0,
        }
    }
}

/// The outcome fields of `handshake-flood` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct FloodOutcome {
    flooders: usize,
    connections_per_wave: usize,
    waves: u64,
    inbound_handshakes_max: usize,
    refused_for_address: u64,
    evicted: u64,
    under_pressure: u64,
    timed_out: u64,
    honest_dials: usize,
    honest_connected: usize,
    honest_handshake_ms: Vec<Option<f64>>,
    honest_handshake_ms_max: Option<f64>,
}

impl Scenario for HandshakeFlood {
    fn name(&self) -> &'static str {
        HandshakeFlood::NAME
    }

    /// `nodes` is ignored: the story is about the flood's shape.
    fn build(&mut self, sim: &mut Sim, _nodes: usize) {
        let target = sim.add_node();
        assert_eq!(target, Self::TARGET);
        // A flooder's own limits must not hold back its flood.
        let mut flooder_config = sim.node_config();
        flooder_config.peer.limits.connections_per_ip_max = self.connections_many.max(8);
        flooder_config.handshake_timeout = Duration::from_secs(3_600);
        let groups = [
            (self.flooders_many, self.connections_many),
            (self.flooders_few, self.connections_few),
        ];
        for (flooders, connections) in groups {
            for _ in 0..flooders {
                let flooder = sim.add_node_with_config(flooder_config.clone());
                sim.set_mute(flooder, true);
                self.flooders.push((flooder, connections));
            }
        }
        let mut at = Instant::ZERO + self.honest_from;
        for _ in 0..Self::HONEST_NODES {
            let honest = sim.add_node();
            sim.command_at(
                at,
                honest,
                Command::Dial {
                    addr: sim.addr(target),
                    peer: Some(sim.peer_id(target)),
                },
            );
            self.honest.push((honest, at));
            at = at + self.honest_interval;
        }
    }

    /// Runs in steps of `SAMPLE_INTERVAL`, sending each wave when it is due
    /// (planning every wave up front would queue them past any run's end).
    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let end = sim.now() + duration;
        let dial = Command::Dial {
            addr: sim.addr(Self::TARGET),
            peer: None,
        };
        let mut next_wave = Instant::ZERO + self.flood_from;
        while sim.now() < end {
            if sim.now() >= next_wave {
                for &(flooder, connections) in &self.flooders {
                    for _ in 0..connections {
                        sim.command(flooder, dial.clone());
                    }
                }
                self.waves += 1;
                next_wave = next_wave + self.wave_interval;
            }
            let step = SAMPLE_INTERVAL
                .min(end.saturating_duration_since(sim.now()))
                .min(next_wave.saturating_duration_since(sim.now()));
            sim.run_for(step);
            self.inbound_handshakes_max = self
                .inbound_handshakes_max
                .max(sim.node(Self::TARGET).inbound_handshakes());
        }
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        let counters = sim.node(Self::TARGET).counters();
        let dials = self.honest_dials(sim);
        let took: Vec<Option<f64>> = dials
            .iter()
            .map(|(dialled, connected)| {
                connected.map(|at| millis(at.saturating_duration_since(*dialled)))
            })
            .collect();
        let outcome = FloodOutcome {
            flooders: self.flooders_many + self.flooders_few,
            connections_per_wave: self.connections_per_wave(),
            waves: self.waves,
            inbound_handshakes_max: self.inbound_handshakes_max,
            refused_for_address: counters.refused_handshakes_from_ip,
            evicted: counters.handshakes_evicted,
            under_pressure: counters.handshakes_under_pressure,
            timed_out: counters.refused_timeout,
            honest_dials: dials.iter().filter(|(at, _)| *at <= sim.now()).count(),
            honest_connected: dials
                .iter()
                .filter(|(_, connected)| connected.is_some())
                .count(),
            honest_handshake_ms_max: took.iter().flatten().copied().reduce(f64::max),
            honest_handshake_ms: took,
        };
        // A struct of numbers, bools and options always serialises.
        Some(serde_json::to_value(outcome).expect("outcome serialises"))
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let mut bounds = Bounds::default();
        let counters = sim.node(Self::TARGET).counters();
        bounds.require(
            self.inbound_handshakes_max <= HANDSHAKES_IN_PROGRESS_MAX,
            || {
                format!(
                    "the target held {} handshakes, above {HANDSHAKES_IN_PROGRESS_MAX}",
                    self.inbound_handshakes_max
                )
            },
        );
        if self.waves > 0 {
            bounds.require(counters.refused_handshakes_from_ip > 0, || {
                "no connection was refused for its address's share".to_string()
            });
            bounds.require(counters.handshakes_evicted > 0, || {
                "the flood never filled the slots: nothing was evicted".to_string()
            });
        }
        for (index, (dialled, connected)) in self.honest_dials(sim).into_iter().enumerate() {
            // A dial too close to the end has not had its second yet.
            if dialled + HONEST_HANDSHAKE_MAX > sim.now() {
                continue;
            }
            bounds.require(
                connected.is_some_and(|at| at <= dialled + HONEST_HANDSHAKE_MAX),
                || {
                    format!(
                        "honest node {index} dialled at {:.0} ms and was {}",
                        millis(dialled.saturating_duration_since(Instant::ZERO)),
                        match connected {
                            Some(at) => format!(
                                "the target's peer only {:.0} ms later",
                                millis(at.saturating_duration_since(dialled))
                            ),
                            None => "never the target's peer".to_string(),
                        }
                    )
                },
            );
        }
        bounds.into_broken()
    }
}
