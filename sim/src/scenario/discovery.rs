//! `discovery`: a network forms by itself from three bootnodes.
//!
//! # The story
//! Three bootnodes know each other. Every other node starts at a moment
//! drawn from the seed within the first [`Discovery::STARTS_WITHIN`] and
//! knows only the bootnodes. Each runs the node's Kademlia discovery: it
//! meets a bootnode, exchanges signed records, looks itself up, and dials
//! the candidates its lookups turn up until it holds its target of peers;
//! the connection manager trims whoever is above the target every 30 s.
//! The simulator's address plan puts every node in one /16, so the table's
//! per-subnet caps are off here (`dht-eclipse` places its nodes in many
//! /16s and tests them).
//!
//! What must hold: the peer graph is one component; every node holds at
//! least half its target within [`Discovery::TO_TARGET_BOUND`] of its start;
//! no bootnode ends as a hub (at most twice the target).
//!
//! Reported: seconds to half the target (p50, p99, from each node's start),
//! peers per node at the end (min, mean), connected components, the
//! diameter of the peer graph, mean hops (rounds) per lookup, the share of
//! table entries whose node is up, and the most peers a bootnode holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use meshsync_core::node::DiscoveryConfig;
use meshsync_core::{Duration, Instant};
use rand_core::RngCore;

use super::story::{Bounds, Scenario};
use crate::network;
use crate::requests::{millis, percentile};
use crate::sim::{NodeIndex, Sim};

/// The scenario's parameters; [`Discovery::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// Bootnodes, the first nodes of the world.
    pub bootnodes: usize,
    /// Peers each node aims for.
    pub peers_target: usize,
    /// When each node first held half its target, by node.
    reached: BTreeMap<NodeIndex, Instant>,
    /// When each node started.
    starts: BTreeMap<NodeIndex, Instant>,
}

impl Discovery {
    /// The scenario's name.
    pub const NAME: &'static str = "discovery";
    /// Nodes by default (the full size is 1,000: `--nodes 1000`).
    pub const NODES_DEFAULT: usize = 60;
    /// Nodes start within this of the beginning.
    pub const STARTS_WITHIN: Duration = Duration::from_secs(60);
    /// Every node must hold half its target within this of its start: two
    /// refreshes below target (30 s each) and their lookups.
    pub const TO_TARGET_BOUND: Duration = Duration::from_secs(90);
    /// How often the run samples peer counts.
    const SAMPLE_EVERY: Duration = Duration::from_millis(500);

    fn half_target(&self) -> usize {
        self.peers_target.div_ceil(2)
    }

    /// Connected components of the mutual peer graph among up nodes, and
    /// the graph's diameter in hops (when it is one component).
    fn components_and_diameter(sim: &Sim) -> (usize, Option<usize>) {
        let up: Vec<NodeIndex> = sim.node_indices().filter(|&n| sim.is_up(n)).collect();
        let neighbours: BTreeMap<NodeIndex, Vec<NodeIndex>> = up
            .iter()
            .map(|&node| {
                let peers = sim
                    .peers_of(node)
                    .into_iter()
                    .filter(|&peer| sim.has_peer(peer, node))
                    .collect();
                (node, peers)
            })
            .collect();
        let distances_from = |start: NodeIndex| {
            let mut distance = BTreeMap::from([(start, 0usize)]);
            let mut queue = VecDeque::from([start]);
            while let Some(node) = queue.pop_front() {
                let next = distance[&node] + 1;
                for &peer in neighbours.get(&node).into_iter().flatten() {
                    if let std::collections::btree_map::Entry::Vacant(slot) = distance.entry(peer) {
                        slot.insert(next);
                        queue.push_back(peer);
                    }
                }
            }
            distance
        };
        let mut seen = BTreeSet::new();
        let mut components = 0;
        for &node in &up {
            if seen.insert(node) {
                components += 1;
                seen.extend(distances_from(node).into_keys());
            }
        }
        let diameter = (components == 1).then(|| {
            up.iter()
                .map(|&node| distances_from(node).into_values().max().unwrap_or(0))
                .max()
                .unwrap_or(0)
        });
        (components, diameter)
    }
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            bootnodes: 3,
            peers_target: meshsync_core::peer::PEERS_TARGET,
            reached: BTreeMap::new(),
            starts: BTreeMap::new(),
        }
    }
}

/// The outcome fields of `discovery` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct DiscoveryOutcome {
    nodes: usize,
    bootnodes: usize,
    peers_target: usize,
    nodes_reached_half_target: usize,
    /// Nodes that never held half their target though they ran for
    /// [`Discovery::TO_TARGET_BOUND`] (the ones started later are not
    /// judged: a short run ends before their time is up).
    nodes_missed_half_target: usize,
    seconds_to_target_p50: Option<f64>,
    seconds_to_target_p99: Option<f64>,
    seconds_to_target_max: Option<f64>,
    peers_min: usize,
    peers_mean: f64,
    components: usize,
    diameter: Option<usize>,
    lookups_finished: u64,
    lookup_hops_mean: f64,
    table_entries: usize,
    table_entries_alive_ratio: f64,
    bootnode_peers_max: usize,
}

impl Discovery {
    fn measure(&self, sim: &Sim) -> DiscoveryOutcome {
        let mut to_target: Vec<Duration> = self
            .reached
            .iter()
            .map(|(node, at)| at.saturating_duration_since(self.starts[node]))
            .collect();
        let seconds = |d: Option<Duration>| d.map(|d| millis(d) / 1000.0);
        let peers: Vec<usize> = sim
            .node_indices()
            .map(|node| sim.peers_of(node).len())
            .collect();
        let (components, diameter) = Self::components_and_diameter(sim);
        let (mut lookups, mut rounds, mut entries, mut alive) = (0u64, 0u64, 0usize, 0usize);
        for node in sim.node_indices().filter(|&n| sim.is_up(n)) {
            let Some(discovery) = sim.node(node).discovery() else {
                continue;
            };
            let counters = discovery.counters();
            lookups += counters.lookups_finished;
            rounds += counters.lookup_rounds;
            for entry in discovery.table().entries() {
                entries += 1;
                if sim
                    .index_of(entry.record.peer())
                    .is_some_and(|peer| sim.is_up(peer))
                {
                    alive += 1;
                }
            }
        }
        DiscoveryOutcome {
            nodes: sim.node_count(),
            bootnodes: self.bootnodes,
            peers_target: self.peers_target,
            nodes_reached_half_target: self.reached.len(),
            nodes_missed_half_target: self
                .starts
                .iter()
                .filter(|(node, start)| {
                    !self.reached.contains_key(node)
                        && sim.now() >= start.saturating_add(Self::TO_TARGET_BOUND)
                })
                .count(),
            seconds_to_target_p50: seconds(percentile(&mut to_target, 50)),
            seconds_to_target_p99: seconds(percentile(&mut to_target, 99)),
            seconds_to_target_max: seconds(to_target.iter().max().copied()),
            peers_min: peers.iter().copied().min().unwrap_or(0),
            peers_mean: peers.iter().sum::<usize>() as f64 / peers.len().max(1) as f64,
            components,
            diameter,
            lookups_finished: lookups,
            lookup_hops_mean: rounds as f64 / lookups.max(1) as f64,
            table_entries: entries,
            table_entries_alive_ratio: alive as f64 / entries.max(1) as f64,
            bootnode_peers_max: (0..self.bootnodes)
                .map(|i| sim.peers_of(NodeIndex(i)).len())
                .max()
                .unwrap_or(0),
        }
    }
}

impl Scenario for Discovery {
    fn name(&self) -> &'static str {
        Discovery::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        assert!(
            nodes > self.bootnodes,
            "{} needs more than {} nodes",
            Self::NAME,
            self.bootnodes
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
        // Bootnodes know the ones before them, so they form one core.
        let mut bootnodes = Vec::new();
        for index in 0..self.bootnodes {
            let config = config_for(index, bootnodes.clone(), self.peers_target);
            let node = sim.add_node_with_config(config);
            bootnodes.push((sim.peer_id(node), sim.addr(node)));
            self.starts.insert(node, Instant::ZERO);
        }
        let window_ms = Self::STARTS_WITHIN.as_millis() as u64;
        for index in self.bootnodes..nodes {
            let config = config_for(index, bootnodes.clone(), self.peers_target);
            let node = sim.add_node_with_config(config);
            let start =
                Instant::ZERO + Duration::from_millis(sim.scenario_rng().next_u64() % window_ms);
            // Not running until its start: down from the first instant.
            sim.crash_at(Instant::ZERO, node);
            sim.restart_at(start, node);
            self.starts.insert(node, start);
        }
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let end = sim.now() + duration;
        let half = self.half_target();
        while sim.now() < end {
            let next = (sim.now() + Self::SAMPLE_EVERY).min(end);
            sim.run_for(next.saturating_duration_since(sim.now()));
            let now = sim.now();
            for node in sim.node_indices() {
                if sim.is_up(node)
                    && now >= self.starts[&node]
                    && !self.reached.contains_key(&node)
                    && sim.node(node).peer_count() >= half
                {
                    self.reached.insert(node, now);
                }
            }
        }
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        // A struct of numbers and options always serialises.
        Some(serde_json::to_value(self.measure(sim)).expect("outcome serialises"))
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let outcome = self.measure(sim);
        let mut bounds = Bounds::default();
        bounds.require(outcome.components == 1, || {
            format!(
                "the peer graph is {} components, not one",
                outcome.components
            )
        });
        bounds.require(outcome.nodes_missed_half_target == 0, || {
            format!(
                "{} of {} nodes never held half their target of {} within {} s",
                outcome.nodes_missed_half_target,
                outcome.nodes,
                outcome.peers_target,
                Self::TO_TARGET_BOUND.as_secs()
            )
        });
        let bound = millis(Self::TO_TARGET_BOUND) / 1000.0;
        bounds.require(
            outcome.seconds_to_target_max.is_none_or(|max| max <= bound),
            || {
                format!(
                    "a node took {:?} s to hold half its target (bound {bound} s)",
                    outcome.seconds_to_target_max
                )
            },
        );
        bounds.require(
            outcome.bootnode_peers_max <= 2 * outcome.peers_target,
            || {
                format!(
                    "a bootnode holds {} peers, past twice the target of {}",
                    outcome.bootnode_peers_max, outcome.peers_target
                )
            },
        );
        bounds.into_broken()
    }
}
