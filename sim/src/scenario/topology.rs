//! Random connected topologies for scenarios to dial ([`plan_topology`],
//! and [`plan_topology_min_degree`] for worlds whose nodes must each hold
//! a given number of peers), and how many pieces a world's peer graph is in
//! ([`mutual_components`]).

use std::collections::{BTreeSet, VecDeque};

use rand_core::RngCore;

use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// Connected components of the mutual peer graph among `members`: an edge
/// where both ends list each other as peers, and only between members.
pub fn mutual_components(sim: &Sim, members: &BTreeSet<NodeIndex>) -> usize {
    let mut seen: BTreeSet<NodeIndex> = BTreeSet::new();
    let mut components = 0;
    for &start in members {
        if !seen.insert(start) {
            continue;
        }
        components += 1;
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for peer in sim.peers_of(node) {
                if members.contains(&peer) && sim.has_peer(peer, node) && seen.insert(peer) {
                    queue.push_back(peer);
                }
            }
        }
    }
    components
}

/// Plans dials `(from, to)` over `nodes` nodes: a random spanning path plus
/// up to `extra_per_node` random dials per node. No self dials, at most one
/// dial per pair (either way), no node in more than `degree_max` dials.
pub fn plan_topology(
    rng: &mut impl RngCore,
    nodes: usize,
    extra_per_node: usize,
    degree_max: usize,
) -> Vec<(usize, usize)> {
    assert!(
        degree_max >= 2 || nodes <= 2,
        "a spanning path needs degree 2"
    );
    let mut order: Vec<usize> = (0..nodes).collect();
    rng::shuffle(rng, &mut order);
    let mut dials = Vec::new();
    let mut pairs = BTreeSet::new();
    let mut degree = vec![0usize; nodes];
    let mut plan = |from: usize, to: usize, dials: &mut Vec<(usize, usize)>| {
        let pair = (from.min(to), from.max(to));
        if from == to
            || degree[from] >= degree_max
            || degree[to] >= degree_max
            || !pairs.insert(pair)
        {
            return;
        }
        degree[from] += 1;
        degree[to] += 1;
        dials.push((from, to));
    };
    for window in order.windows(2) {
        plan(window[1], window[0], &mut dials);
    }
    if nodes > 1 {
        for from in 0..nodes {
            for _ in 0..extra_per_node {
                let to = rng::index(rng, nodes);
                plan(from, to, &mut dials);
            }
        }
    }
    dials
}

/// Plans dials `(from, to)` over `nodes` nodes so that every node has at
/// least `min(degree_min, nodes - 1)` peers, as nodes that each keep
/// `degree_min` peers would: a random spanning path, then, node by node in
/// a random order, dials to random nodes it has none with yet, until it
/// has its minimum. No self dials, at most one dial per pair (either way),
/// no node in more than `degree_max` dials (a node short of its minimum
/// when every other node is full keeps what it has; with `degree_max` at
/// least twice `degree_min` that does not happen in practice). With
/// `nodes` at most `degree_min + 1` the plan links every pair.
pub fn plan_topology_min_degree(
    rng: &mut impl RngCore,
    nodes: usize,
    degree_min: usize,
    degree_max: usize,
) -> Vec<(usize, usize)> {
    assert!(
        degree_max >= degree_min.max(2),
        "degree_max must leave room for the minimum and a spanning path"
    );
    let mut dials = plan_topology(rng, nodes, 0, degree_max);
    let mut pairs: BTreeSet<(usize, usize)> = dials
        .iter()
        .map(|&(from, to)| (from.min(to), from.max(to)))
        .collect();
    let mut degree = vec![0usize; nodes];
    for &(from, to) in &dials {
        degree[from] += 1;
        degree[to] += 1;
    }
    let wanted = degree_min.min(nodes.saturating_sub(1));
    let mut order: Vec<usize> = (0..nodes).collect();
    rng::shuffle(rng, &mut order);
    for from in order {
        if degree[from] >= wanted {
            continue;
        }
        let mut candidates: Vec<usize> = (0..nodes)
            .filter(|&to| {
                to != from
                    && degree[to] < degree_max
                    && !pairs.contains(&(from.min(to), from.max(to)))
            })
            .collect();
        rng::shuffle(rng, &mut candidates);
        for to in candidates {
            if degree[from] >= wanted {
                break;
            }
            pairs.insert((from.min(to), from.max(to)));
            degree[from] += 1;
            degree[to] += 1;
            dials.push((from, to));
        }
    }
    dials
}

#[cfg(test)]
mod tests {
    use meshsync_core::limits::PEERS_MAX;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    /// Each node's number of planned dials, either way; panics on a self
    /// dial or a second dial between one pair.
    fn degrees(dials: &[(usize, usize)], nodes: usize) -> Vec<usize> {
        let mut degree = vec![0; nodes];
        let mut pairs = BTreeSet::new();
        for &(from, to) in dials {
            assert_ne!(from, to);
            assert!(
                pairs.insert((from.min(to), from.max(to))),
                "one dial per pair"
            );
            degree[from] += 1;
            degree[to] += 1;
        }
        degree
    }

    #[test]
    fn planned_topology_is_connected_and_within_limits() {
        for (nodes, degree_max) in [(0, 50), (1, 50), (2, 50), (50, 50), (200, 5)] {
            let mut rng = ChaCha20Rng::seed_from_u64(nodes as u64);
            let dials = plan_topology(&mut rng, nodes, 3, degree_max);
            let degree = degrees(&dials, nodes);
            assert!(degree.iter().all(|&d| d <= degree_max));
            // Connected: a union-find over the planned dials leaves one set.
            let mut parent: Vec<usize> = (0..nodes).collect();
            fn root(parent: &mut [usize], mut node: usize) -> usize {
                while parent[node] != node {
                    parent[node] = parent[parent[node]];
                    node = parent[node];
                }
                node
            }
            for &(from, to) in &dials {
                let (a, b) = (root(&mut parent, from), root(&mut parent, to));
                parent[a] = b;
            }
            let roots: BTreeSet<usize> = (0..nodes).map(|node| root(&mut parent, node)).collect();
            assert!(
                roots.len() <= 1,
                "{nodes} nodes: {} components",
                roots.len()
            );
            if nodes >= 50 && degree_max == PEERS_MAX {
                assert!(dials.len() > nodes * 3, "extra dials are planned");
            }
        }
    }

    #[test]
    fn a_minimum_degree_plan_gives_every_node_its_peers() {
        for (nodes, degree_min, degree_max) in [
            (0, 25, 50),
            (1, 25, 50),
            (2, 25, 50),
            (7, 25, 50),
            (26, 25, 50),
            (27, 25, 50),
            (100, 25, 50),
            (200, 6, 12),
        ] {
            let mut rng = ChaCha20Rng::seed_from_u64(nodes as u64);
            let dials = plan_topology_min_degree(&mut rng, nodes, degree_min, degree_max);
            let degree = degrees(&dials, nodes);
            let wanted = degree_min.min(nodes.saturating_sub(1));
            for (node, &d) in degree.iter().enumerate() {
                assert!(
                    (wanted..=degree_max).contains(&d),
                    "{nodes} nodes: node {node} has {d} peers"
                );
            }
            if nodes <= degree_min + 1 {
                assert_eq!(
                    dials.len(),
                    nodes * nodes.saturating_sub(1) / 2,
                    "every pair"
                );
            }
        }
    }
}
