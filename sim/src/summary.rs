//! What a run did, for people (`Display`) and machines (`serde::Serialize`).

use std::fmt;

use meshsync_core::metrics::Counters;
use meshsync_core::Duration;

use crate::counts::{NetworkCounts, NotificationCounts};
use crate::link::LinkModel;
use crate::requests::{self, millis};
use crate::sim::Sim;

/// Violation descriptions carried in a summary; the count is always exact.
pub const SUMMARY_VIOLATIONS_MAX: usize = 20;

impl Sim {
    /// The summary of the run so far.
    pub fn summary(&self) -> Summary {
        Summary::of(self, self.wall_elapsed())
    }
}

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
    /// Wall-clock time since the world was created (its set-up included).
    pub wall_seconds: f64,
    /// Of `wall_seconds`, the time spent building the world before its
    /// first event: nodes, their stored chains, the scenario's plans.
    pub setup_wall_seconds: f64,
    /// Virtual seconds simulated per wall-clock second (above 1: faster
    /// than real time).
    pub virtual_per_wall: f64,
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
    /// Requests nodes wrote to peers.
    pub requests_sent: u64,
    /// Peers' requests nodes admitted and answered.
    pub requests_served: u64,
    /// Peers' requests refused by a quota (result code 3).
    pub requests_rate_limited: u64,
    /// Requests that got no (complete) answer in time.
    pub requests_timed_out: u64,
    /// Requests answered completely.
    pub responses_received: u64,
    /// Peers banned, summed over the nodes that banned them.
    pub peers_banned: u64,
    /// Requests honest nodes sent honest nodes that finished (response or failure).
    pub honest_requests: usize,
    /// Of those, the ones that failed.
    pub honest_requests_failed: usize,
    /// Median latency of those, command to outcome, in milliseconds.
    pub honest_request_p50_ms: Option<f64>,
    /// 99th percentile (nearest rank) of the same.
    pub honest_request_p99_ms: Option<f64>,
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
    /// What the scenario set out to show, in its own fields (see each scenario).
    pub outcome: Option<serde_json::Value>,
    /// The scenario's bounds this run broke, one sentence each
    /// ([`crate::Scenario::bounds_broken`]).
    pub bounds_broken: Vec<String>,
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
        let virtual_seconds = sim.now().as_micros() as f64 / 1e6;
        let peer_counts: Vec<usize> = sim
            .node_indices()
            .filter(|&index| sim.is_up(index))
            .map(|index| sim.node(index).peer_count())
            .collect();
        let counters_sum = |field: fn(&Counters) -> u64| sim.counter_sum(field);
        let mut latencies = sim.honest_request_latencies();
        let honest_requests = latencies.len();
        let honest_requests_failed = sim
            .request_log()
            .records()
            .iter()
            .filter(|record| {
                !record.outcome.is_response()
                    && sim.is_honest(record.from)
                    && sim
                        .index_of(record.peer)
                        .is_some_and(|peer| sim.is_honest(peer))
            })
            .count();
        let honest_request_p50_ms = requests::percentile(&mut latencies, 50).map(millis);
        let honest_request_p99_ms = requests::percentile(&mut latencies, 99).map(millis);
        let notifications = sim.notification_counts();
        let handshakes_completed = notifications.peer_connected_outbound;
        Summary {
            scenario: sim.config().label.clone(),
            seed: sim.seed(),
            nodes: sim.node_count(),
            virtual_seconds,
            wall_seconds,
            setup_wall_seconds: sim.setup_wall().as_secs_f64(),
            virtual_per_wall: if wall_seconds > 0.0 {
                virtual_seconds / wall_seconds
            } else {
                0.0
            },
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
            requests_sent: counters_sum(|counters| counters.requests_sent),
            requests_served: counters_sum(|counters| counters.requests_served),
            requests_rate_limited: counters_sum(|counters| counters.requests_rate_limited),
            requests_timed_out: counters_sum(|counters| counters.requests_timed_out),
            responses_received: counters_sum(|counters| counters.responses_received),
            peers_banned: counters_sum(|counters| counters.peers_banned),
            honest_requests,
            honest_requests_failed,
            honest_request_p50_ms,
            honest_request_p99_ms,
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
            outcome: None,
            bounds_broken: Vec::new(),
        }
    }

    /// Whether the run held: no invariant violated and no bound broken.
    pub fn passed(&self) -> bool {
        self.invariant_violations == 0 && self.bounds_broken.is_empty()
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
            "  time        {:.3} s virtual in {:.3} s wall ({:.1}× real time; set-up {:.3} s), {:.0} events, {:.0} events/s",
            self.virtual_seconds,
            self.wall_seconds,
            self.virtual_per_wall,
            self.setup_wall_seconds,
            self.events as f64,
            self.events_per_second
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
        if self.requests_sent > 0 || self.requests_served > 0 {
            writeln!(
                f,
                "  requests    {} sent, {} served, {} rate limited, {} timed out, {} answered, {} peers banned",
                self.requests_sent,
                self.requests_served,
                self.requests_rate_limited,
                self.requests_timed_out,
                self.responses_received,
                self.peers_banned
            )?;
            if let (Some(p50), Some(p99)) = (self.honest_request_p50_ms, self.honest_request_p99_ms)
            {
                writeln!(
                    f,
                    "  latency     honest requests: {} ({} failed), p50 {p50:.1} ms, p99 {p99:.1} ms",
                    self.honest_requests, self.honest_requests_failed
                )?;
            }
        }
        writeln!(
            f,
            "  network     {} bytes delivered, {} dropped",
            self.network.bytes_delivered, self.network.bytes_dropped
        )?;
        if self.network.crashes > 0 {
            writeln!(
                f,
                "  faults      {} crashes, {} restarts",
                self.network.crashes, self.network.restarts
            )?;
        }
        if let Some(outcome) = &self.outcome {
            writeln!(f, "  outcome     {outcome}")?;
        }
        writeln!(
            f,
            "  trace       {} ({} actions)",
            self.trace_hash, self.actions
        )?;
        write!(f, "  invariants  {} violations", self.invariant_violations)?;
        for violation in &self.violations {
            write!(f, "\n    {violation}")?;
        }
        if !self.bounds_broken.is_empty() {
            write!(f, "\n  bounds      {} broken", self.bounds_broken.len())?;
            for bound in &self.bounds_broken {
                write!(f, "\n    {bound}")?;
            }
        }
        Ok(())
    }
}
