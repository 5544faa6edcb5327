//! Discovery in the node: peers exchange signed records after the
//! handshake, answer FIND_NODE from their tables, and a node that knows one
//! bootnode finds and dials the rest of the network up to its target.

use super::*;
use crate::node::DiscoveryConfig;
use crate::reqresp::stats::ServedResult;

/// Node `index` of `count`, advertising its MemoryNet address, starting from
/// `bootnodes` (indices), aiming for `peers_target` peers.
fn discovering(index: usize, bootnodes: &[usize], peers_target: usize) -> Config {
    let mut config = Config::new(1);
    config.discovery = Some(DiscoveryConfig {
        addresses: vec![addr(index)],
        allow_private: true,
        bootnodes: bootnodes
            .iter()
            .map(|&boot| (Identity::from_seed(boot as u64).peer_id(), addr(boot)))
            .collect(),
        peers_target,
        record_seq: 1,
    });
    config
}

fn peer_counts(net: &Net) -> Vec<usize> {
    net.nodes.iter().map(Node::peer_count).collect()
}

#[test]
fn nodes_that_know_only_a_bootnode_find_and_connect_to_each_other() {
    const NODES: usize = 6;
    let configs = (0..NODES)
        .map(|i| match i {
            0 => discovering(0, &[], 25),
            _ => discovering(i, &[0], 25),
        })
        .collect();
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(5));
    // Everyone reached the bootnode.
    for node in 1..NODES {
        assert!(
            net.connected(node, 0),
            "node {node} did not reach the bootnode"
        );
    }
    net.advance(Duration::from_secs(120));
    for a in 0..NODES {
        for b in (a + 1)..NODES {
            assert!(
                net.connected(a, b),
                "{a} and {b} never met: peer counts {:?}",
                peer_counts(&net)
            );
        }
        let discovery = net.nodes[a].discovery().expect("discovery runs");
        assert!(discovery.counters().lookups_started >= 1);
        assert!(
            !discovery.table().is_empty(),
            "node {a}'s table is empty though it met its peers"
        );
    }
}

#[test]
fn a_node_stops_dialling_at_its_target() {
    const NODES: usize = 6;
    const TARGET: usize = 2;
    let configs = (0..NODES)
        .map(|i| match i {
            0 => discovering(0, &[], 25),
            1 => discovering(1, &[0], TARGET),
            _ => discovering(i, &[0], 1),
        })
        .collect();
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(120));
    // Lookups dial the peers they query, but a peer dialled only for its
    // queries leaves once they end while we are above target: node 1 keeps
    // its target, not everyone its lookups met.
    assert!(net.nodes[1].counters().dials_started > TARGET as u64);
    assert_eq!(net.nodes[1].peer_count(), TARGET);
}

#[test]
fn a_node_without_discovery_refuses_the_record_exchange_and_stays_connected() {
    let configs = vec![discovering(0, &[], 25), Config::new(1)];
    let mut net = Net::new(configs);
    net.dial(0, 1, None);
    net.advance(Duration::from_secs(30));
    assert!(net.connected(0, 1));
    assert!(net.nodes[1].discovery().is_none());
    // The record request was refused as unsupported: nobody entered node
    // 0's table, and node 0 keeps its peer.
    assert!(net.nodes[0].discovery().unwrap().table().is_empty());
    let answered = net.nodes[1]
        .served_stats()
        .count(&ProtocolId::PeerRecord, ServedResult::Answered);
    assert_eq!(answered, 0);
}

#[test]
fn peers_answer_find_node_from_their_tables() {
    // 1 and 2 met 0; 3 asks 0 and learns about 1 and 2 from its answer.
    let configs = vec![
        discovering(0, &[], 25),
        discovering(1, &[0], 1),
        discovering(2, &[0], 1),
        discovering(3, &[0], 25),
    ];
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(60));
    assert!(net.connected(3, 1) && net.connected(3, 2));
    let served = net.nodes[0]
        .served_stats()
        .count(&ProtocolId::FindNode, ServedResult::Answered);
    assert!(served >= 1, "node 0 answered no FIND_NODE");
}
