//! What a run did, for people (`Display`) and machines (`serde::Serialize`).

use std::fmt;

use meshsync_core::Duration;

use crate::link::LinkModel;
use crate::sim::{NetworkCounts, NotificationCounts, Sim};

/// Violation descriptions carried in a summary; the count is always exact.
pub const SUMMARY_VIOLATIONS_MAX: usize = 20;

/// The outcome of a run. `trace_hash` is the run's fingerprint: the same
/// seed and scenario give the same hash on any machine. Wall-clock fields
/// are measurements and differ from run to run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The world seed that replays this run.
    pub seed: u64,
    /// Nodes in the world.
    pub nodes: usize,
    /// Virtual time simulated.
    pub virtual_seconds: f64,
    /// Wall-clock time since the world was built.
    pub wall_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Events processed per wall-clock second.
    pub events_per_second: f64,
    /// sha256 over every action of every node, in hex.
    pub trace_hash: String,
    /// Actions hashed into the trace.
    pub actions: u64,
    /// Transport connections set up.
    pub connections_established: u64,
    /// Handshakes that produced a peer, counted once per connection (at the dialling end).
    pub handshakes_completed: u64,
    /// `handshakes_completed` per wall-clock second.
    pub handshakes_per_second_wall: f64,
    /// Connections refused during or right after their handshake, summed over nodes.
    pub handshakes_failed: u64,
    /// Dials the scenario planned.
    pub dials_planned: usize,
    /// Whether every planned dial became a peer relation on both sides and
    /// the peer graph connects every node.
    pub fully_connected: bool,
    /// Fewest peers any node has at the end.
    pub peers_min: usize,
    /// Most peers any node has at the end.
    pub peers_max: usize,
    /// Mean peers per node at the end.
    pub peers_mean: f64,
    /// Pings sent, summed over nodes.
    pub pings_sent: u64,
    /// Pongs received, summed over nodes.
    pub pongs_received: u64,
    /// Peers dropped for any reason, summed over nodes.
    pub peers_disconnected: u64,
    /// Notifications by kind.
    pub notifications: NotificationCounts,
    /// What the network carried.
    pub network: NetworkCounts,
    /// The link model.
    pub link: LinkModel,
    /// Invariant violations seen.
    pub invariant_violations: u64,
    /// The first [`SUMMARY_VIOLATIONS_MAX`] violations, described.
    pub violations: Vec<String>,
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl Summary {
    /// The summary of `sim` after `wall` of real time.
    pub fn of(sim: &Sim, wall: Duration) -> Summary {
        let wall_seconds = wall.as_secs_f64();
        let peer_counts: Vec<usize> = sim
            .node_indices()
            .map(|index| sim.node(index).peer_count())
            .collect();
        let counters_sum = |field: fn(&meshsync_core::metrics::Counters) -> u64| -> u64 {
            sim.node_indices()
                .map(|index| field(sim.node(index).counters()))
                .sum()
        };
        let notifications = sim.notification_counts();
        let handshakes_completed = notifications.peer_connected_outbound;
        Summary {
            scenario: sim.config().label.clone(),
            seed: sim.seed(),
            nodes: sim.node_count(),
            virtual_seconds: sim.now().as_micros() as f64 / 1e6,
            wall_seconds,
            events: sim.events(),
            events_per_second: per_second(sim.events(), wall_seconds),
            trace_hash: sim.trace().hash_hex(),
            actions: sim.trace().actions(),
            connections_established: sim.network_counts().connections_established,
            handshakes_completed,
            handshakes_per_second_wall: per_second(handshakes_completed, wall_seconds),
            handshakes_failed: counters_sum(|counters| counters.handshakes_failed),
            dials_planned: sim.dials_planned().len(),
            fully_connected: sim.is_fully_connected(),
            peers_min: peer_counts.iter().copied().min().unwrap_or(0),
            peers_max: peer_counts.iter().copied().max().unwrap_or(0),
            peers_mean: if peer_counts.is_empty() {
                0.0
            } else {
                peer_counts.iter().sum::<usize>() as f64 / peer_counts.len() as f64
            },
            pings_sent: counters_sum(|counters| counters.pings_sent),
            pongs_received: counters_sum(|counters| counters.pongs_received),
            peers_disconnected: counters_sum(|counters| counters.peers_disconnected),
            notifications,
            network: sim.network_counts(),
            link: sim.config().link,
            invariant_violations: sim.invariant_violations(),
            violations: sim
                .violations()
                .iter()
                .take(SUMMARY_VIOLATIONS_MAX)
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} with {} nodes, seed {}",
            self.scenario, self.nodes, self.seed
        )?;
        writeln!(
            f,
            "  time        {:.3} s virtual in {:.3} s wall ({:.0} events, {:.0} events/s)",
            self.virtual_seconds, self.wall_seconds, self.events as f64, self.events_per_second
        )?;
        writeln!(
            f,
            "  links       {:.1} ms ± {} %, {} % of deliveries split",
            self.link.latency.as_secs_f64() * 1_000.0,
            self.link.jitter_pct,
            self.link.split_pct
        )?;
        writeln!(
            f,
            "  connections {} established, {} handshakes completed ({:.0}/s wall), {} failed",
            self.connections_established,
            self.handshakes_completed,
            self.handshakes_per_second_wall,
            self.handshakes_failed
        )?;
        writeln!(
            f,
            "  peers       {} to {} per node (mean {:.1}), {} dials planned, fully connected: {}",
            self.peers_min,
            self.peers_max,
            self.peers_mean,
            self.dials_planned,
            if self.fully_connected { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "  keepalive   {} pings sent, {} pongs received, {} peers disconnected",
            self.pings_sent, self.pongs_received, self.peers_disconnected
        )?;
        writeln!(
            f,
            "  network     {} bytes delivered, {} dropped",
            self.network.bytes_delivered, self.network.bytes_dropped
        )?;
        writeln!(
            f,
            "  trace       {} ({} actions)",
            self.trace_hash, self.actions
        )?;
        write!(f, "  invariants  {} violations", self.invariant_violations)?;
        for violation in &self.violations {
            write!(f, "\n    {violation}")?;
        }
        Ok(())
    }
}
