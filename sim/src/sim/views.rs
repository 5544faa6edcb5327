//! Looking at the world: virtual time, nodes and their peers, dials,
//! notifications, counters summed over every life of a node, request
//! latencies, the trace and the violations; and the peer-symmetry check
//! scenarios run once traffic has settled.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use meshsync_core::chain::{Root, SignedBlock};
use meshsync_core::metrics::Counters;
use meshsync_core::peerstore::KnownPeers;
use meshsync_core::{Duration, Faults, Instant, Node, Notification, PeerId};
use rand_chacha::ChaCha20Rng;

use super::config::SimConfig;
use super::world::Sim;
use crate::counts::{NetworkCounts, NotificationCounts};
use crate::invariants::Violation;
use crate::requests::{self, RequestLog};
use crate::trace::Trace;
use crate::types::NodeIndex;

impl Sim {
    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed this world was built from.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Nodes added so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's index, in order.
    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> {
        (0..self.nodes.len()).map(NodeIndex)
    }

    /// The node itself: its current incarnation, or the last one if it is down.
    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.node_state(index).node
    }

    /// The peer store on the node's modelled disk: the last snapshot
    /// (`Action::PersistPeers`) it handed over, which a restart loads; `None`
    /// if it keeps no store, never wrote one, or its disk was wiped.
    pub fn peer_store_on_disk(&self, index: NodeIndex) -> Option<&KnownPeers> {
        self.node_state(index).disk_known_peers.as_ref()
    }

    /// Whether the node is running (not crashed).
    pub fn is_up(&self, index: NodeIndex) -> bool {
        self.node_state(index).up
    }

    /// How many times the node was restarted.
    pub fn incarnation(&self, index: NodeIndex) -> u32 {
        self.node_state(index).incarnation
    }

    /// The node's modelled disk: every block whose persist batch completed
    /// (and was not deleted by a later one). A restart loads these.
    pub fn disk(&self, index: NodeIndex) -> &BTreeMap<Root, SignedBlock> {
        &self.node_state(index).disk
    }

    /// Whether the node runs without faults.
    pub fn is_honest(&self, index: NodeIndex) -> bool {
        self.node_state(index).config.faults == Faults::default()
    }

    /// The node's identity.
    pub fn peer_id(&self, index: NodeIndex) -> PeerId {
        self.node_state(index).peer_id
    }

    /// The node's listening address.
    pub fn addr(&self, index: NodeIndex) -> SocketAddr {
        self.node_state(index).addr
    }

    /// The node with identity `peer`, if it is in this world.
    pub fn index_of(&self, peer: PeerId) -> Option<NodeIndex> {
        self.by_peer_id.get(&peer).copied()
    }

    /// The peers `node` lists, as nodes of this world, in `PeerId` order
    /// (none while it is down).
    pub fn peers_of(&self, node: NodeIndex) -> Vec<NodeIndex> {
        if !self.is_up(node) {
            return Vec::new();
        }
        self.node(node)
            .peers()
            .iter()
            .filter_map(|info| self.index_of(info.peer))
            .collect()
    }

    /// Whether `a` is up and lists `b` as a peer.
    pub fn has_peer(&self, a: NodeIndex, b: NodeIndex) -> bool {
        let peer = self.peer_id(b);
        self.is_up(a) && self.node(a).is_connected(&peer)
    }

    /// Whether `a` and `b` list each other as peers.
    pub fn are_connected(&self, a: NodeIndex, b: NodeIndex) -> bool {
        self.has_peer(a, b) && self.has_peer(b, a)
    }

    /// The dials made through [`Sim::dial`] and [`Sim::dial_at`], as (from, to).
    pub fn dials_planned(&self) -> &[(NodeIndex, NodeIndex)] {
        &self.dials_planned
    }

    /// Every dial `node` asked its driver for (the last
    /// [`crate::sim::DIALS_KEPT_PER_NODE_MAX`]), with the instant, oldest first.
    pub fn dial_log(&self, node: NodeIndex) -> impl Iterator<Item = &(Instant, SocketAddr)> {
        self.node_state(node).dial_log.iter()
    }

    /// Whether every planned dial became a peer relation on both sides and
    /// the peer graph (edges where both sides agree) connects every node.
    pub fn is_fully_connected(&self) -> bool {
        let planned_up = self
            .dials_planned
            .iter()
            .all(|&(from, to)| self.are_connected(from, to));
        planned_up && self.is_peer_graph_connected()
    }

    /// Whether the graph of mutual peer relations connects every node.
    pub fn is_peer_graph_connected(&self) -> bool {
        let Some(first) = self.node_indices().next() else {
            return true;
        };
        let mut seen = BTreeSet::from([first]);
        let mut frontier = vec![first];
        while let Some(node) = frontier.pop() {
            for peer in self.peers_of(node) {
                if self.has_peer(peer, node) && seen.insert(peer) {
                    frontier.push(peer);
                }
            }
        }
        seen.len() == self.nodes.len()
    }

    /// The notifications `node` emitted, oldest first (the last
    /// [`crate::sim::NOTIFICATIONS_KEPT_PER_NODE_MAX`], carrying at most
    /// [`crate::sim::NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX`] of
    /// payload), with the instant of each.
    pub fn notifications(&self, node: NodeIndex) -> impl Iterator<Item = &(Instant, Notification)> {
        self.node_state(node).notifications.iter()
    }

    /// Counts of every notification of every node, by kind.
    pub fn notification_counts(&self) -> NotificationCounts {
        self.notification_counts
    }

    /// What the network carried.
    pub fn network_counts(&self) -> NetworkCounts {
        self.network_counts
    }

    /// `field` of the node's counters, summed over all its incarnations.
    pub fn counter(&self, node: NodeIndex, field: fn(&Counters) -> u64) -> u64 {
        let state = self.node_state(node);
        field(state.node.counters()) + state.retired_counters.iter().map(field).sum::<u64>()
    }

    /// `field` of the counters, summed over every node and incarnation.
    pub fn counter_sum(&self, field: fn(&Counters) -> u64) -> u64 {
        self.node_indices()
            .map(|node| self.counter(node, field))
            .sum()
    }

    /// Requests timed from command to outcome.
    pub fn request_log(&self) -> &RequestLog {
        &self.requests
    }

    /// Latencies of the finished requests honest nodes sent to honest nodes,
    /// whatever their outcome (a timeout counts with its full wait).
    pub fn honest_request_latencies(&self) -> Vec<Duration> {
        self.requests
            .records()
            .iter()
            .filter(|record| {
                self.is_honest(record.from)
                    && self
                        .index_of(record.peer)
                        .is_some_and(|peer| self.is_honest(peer))
            })
            .map(|record| record.latency())
            .collect()
    }

    /// The 99th percentile of [`Sim::honest_request_latencies`], if any finished.
    pub fn honest_request_p99(&self) -> Option<Duration> {
        requests::percentile(&mut self.honest_request_latencies(), 99)
    }

    /// Events processed so far (stale timers not counted).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events waiting in the queue (stale timers included).
    pub fn events_queued(&self) -> usize {
        self.queue.len()
    }

    /// The trace so far; its hash is the run's fingerprint.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Invariant violations seen so far.
    pub fn invariant_violations(&self) -> u64 {
        self.violations.count()
    }

    /// The first violations seen, with descriptions.
    pub fn violations(&self) -> &[Violation] {
        self.violations.kept()
    }

    /// The lender of the scenario's random stream (topologies, schedules).
    pub fn scenario_rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng_scenario
    }

    /// Wall-clock time since the world was built, for its summary.
    pub(crate) fn wall_elapsed(&self) -> std::time::Duration {
        self.wall_started.elapsed()
    }

    /// Marks the world built: the wall-clock time from its creation until
    /// now is its set-up ([`crate::Summary::setup_wall_seconds`]). Only the
    /// first call counts.
    pub fn mark_built(&mut self) {
        if self.setup_wall.is_none() {
            self.setup_wall = Some(self.wall_started.elapsed());
        }
    }

    /// The wall-clock time the world took to build: until
    /// [`Sim::mark_built`] or the first event, whichever came first (zero
    /// while neither has).
    pub fn setup_wall(&self) -> std::time::Duration {
        self.setup_wall.unwrap_or_default()
    }

    /// The configuration the world was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Checks that peer relations are symmetric between every two nodes with
    /// nothing in flight between them; counts a violation for each that is not.
    /// Returns how many violations it found.
    pub fn check_peer_symmetry(&mut self) -> u64 {
        let busy = self.network.busy_pairs();
        let mut problems = Vec::new();
        for a in self.node_indices() {
            if !self.is_up(a) {
                continue;
            }
            for info in self.node(a).peers() {
                let Some(b) = self.index_of(info.peer) else {
                    problems.push((
                        a,
                        format!("lists {:?}, which is no node of this world", info.peer),
                    ));
                    continue;
                };
                if !self.has_peer(b, a) && !busy.contains(&(a.min(b), a.max(b))) {
                    problems.push((
                        a,
                        format!("lists {b} as a peer, but {b} does not list it and nothing is in flight between them"),
                    ));
                }
            }
        }
        let found = problems.len() as u64;
        for (node, description) in problems {
            self.violation(Some(node), description);
        }
        found
    }
}
