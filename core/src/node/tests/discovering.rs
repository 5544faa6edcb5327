//! Discovery in the node: peers exchange signed records after the
//! handshake, answer FIND_NODE from their tables, and a node that knows one
//! bootnode finds and dials the rest of the network up to its target.

use super::*;
use crate::io::Direction;
use crate::node::DiscoveryConfig;
use crate::reqresp::stats::ServedResult;
use std::net::SocketAddr;

/// Node `index` of `count`, advertising its MemoryNet address, starting from
/// `bootnodes` (indices), aiming for `peers_target` peers.
pub(super) fn discovering(index: usize, bootnodes: &[usize], peers_target: usize) -> Config {
    let mut config = Config::new(1);
    config.discovery = Some(DiscoveryConfig {
        addresses: vec![addr(index)],
        allow_private: true,
        subnet_limits: true,
        bootnodes: bootnodes
            .iter()
            .map(|&boot| (Identity::from_seed(boot as u64).peer_id(), addr(boot)))
            .collect(),
        peers_target,
        record_seq: 1,
        learn_address_port: None,
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
fn nodes_settle_at_their_target_and_stay_connected() {
    const NODES: usize = 8;
    const TARGET: usize = 3;
    let configs = (0..NODES)
        .map(|i| match i {
            0 => discovering(0, &[], TARGET),
            _ => discovering(i, &[0], TARGET),
        })
        .collect();
    let mut net = Net::new(configs);
    let mut samples = Vec::new();
    for _ in 0..10 {
        net.advance(Duration::from_secs(60));
        samples.push(peer_counts(&net));
    }
    // Trimming moves peers around a network this small (a trimmed peer
    // drops below its own target and dials someone else; two neighbours
    // may trim one node in the same round), so a node may dip below its
    // target between trims; it is never cut off, nor far above it, and on
    // average the network sits at the target.
    for sample in &samples {
        assert!(sample.iter().all(|&count| count >= 1), "{samples:?}");
        assert!(
            sample.iter().all(|&count| count <= 2 * TARGET),
            "{samples:?}"
        );
    }
    let mean = |sample: &Vec<usize>| sample.iter().sum::<usize>() as f64 / NODES as f64;
    assert!(
        samples
            .iter()
            .all(|sample| mean(sample) >= TARGET as f64 - 0.5),
        "{samples:?}"
    );
    // One component: everyone reaches everyone through peers.
    let mut reached = BTreeSet::from([0]);
    let mut frontier = vec![0];
    while let Some(node) = frontier.pop() {
        for other in 0..NODES {
            if net.connected(node, other) && reached.insert(other) {
                frontier.push(other);
            }
        }
    }
    assert_eq!(reached.len(), NODES, "the peer graph split: {samples:?}");
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

/// Node 0 aims for `target` peers; nodes 1.. (no discovery) dial it.
fn crowded(target: usize, dialers: usize) -> Net {
    let mut configs = vec![discovering(0, &[], target)];
    configs.extend((0..dialers).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    for node in 1..=dialers {
        net.dial(node, 0, None);
    }
    net
}

#[test]
fn the_connection_manager_trims_to_the_target_without_penalty() {
    const TARGET: usize = 2;
    let mut net = crowded(TARGET, 5);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.nodes[0].peer_count(), 5, "all five were admitted");
    net.advance(crate::node::discovery::TRIM_INTERVAL);
    assert_eq!(net.nodes[0].peer_count(), TARGET);
    assert_eq!(net.nodes[0].counters().peers_trimmed, 3);
    let trimmed: Vec<usize> = (1..=5).filter(|&i| !net.connected(0, i)).collect();
    for node in trimmed {
        let goodbyes = disconnects(&net, node);
        assert!(
            goodbyes.contains(&DisconnectReason::RemoteGoodbye(
                GoodbyeReason::TooManyPeers
            )),
            "node {node} heard {goodbyes:?}"
        );
        let peer = net.nodes[node].peer_id();
        let score = net.nodes[0].peer_manager().score(net.now, &peer);
        assert!(
            score >= crate::peer::Score::ZERO,
            "trimmed node {node} was penalised"
        );
    }
    // Never below the target: the next rounds leave it alone.
    net.advance(crate::node::discovery::TRIM_INTERVAL * 3);
    assert_eq!(net.nodes[0].peer_count(), TARGET);
}

#[test]
fn the_connection_manager_trims_the_lowest_score_first_and_spares_static_peers() {
    const TARGET: usize = 3;
    let mut net = crowded(TARGET, 5);
    net.advance(Duration::from_secs(1));
    // Node 1 misbehaved a little; node 2 is a static peer of node 0's.
    let (bad, kept) = (net.nodes[1].peer_id(), net.nodes[2].peer_id());
    let now = net.now;
    net.nodes[0].handle(
        now,
        Input::Command(Command::AddStaticPeer {
            addr: addr(2),
            peer: Some(kept),
        }),
    );
    net.drain();
    net.nodes[0].report(
        now,
        bad,
        crate::peer::Report::Penalty(crate::peer::Penalty::Low),
    );
    net.drain();
    net.advance(crate::node::discovery::TRIM_INTERVAL);
    assert_eq!(net.nodes[0].peer_count(), TARGET);
    assert!(!net.connected(0, 1), "the penalised peer went first");
    assert!(net.connected(0, 2), "the static peer was trimmed");
}

#[test]
fn the_connection_manager_spares_a_newcomer_within_its_grace() {
    // Node 0 keeps one peer of five. Four arrive at once; the fifth, the
    // one node 0's own order trims first, a moment before the first trim.
    const TARGET: usize = 1;
    let mut configs = vec![discovering(0, &[], TARGET)];
    configs.extend((1..=5).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    let local = net.nodes[0].peer_id();
    let newcomer = (1..=5)
        .min_by_key(|&node| crate::node::discovery::trim_rank(&local, &net.nodes[node].peer_id()))
        .expect("five candidates");
    for node in (1..=5).filter(|&node| node != newcomer) {
        net.dial(node, 0, None);
    }
    net.advance(crate::node::discovery::TRIM_INTERVAL - Duration::from_millis(10));
    net.dial(newcomer, 0, None);
    net.advance(Duration::from_millis(5));
    assert_eq!(net.nodes[0].peer_count(), 5, "all five were admitted");
    net.advance(Duration::from_millis(10));
    assert_eq!(net.nodes[0].peer_count(), TARGET);
    assert!(
        net.connected(0, newcomer),
        "the newcomer was trimmed within its grace"
    );
}

/// Every full node a newcomer dials trims one peer at its next tick. By
/// score, that one is the newcomer everywhere: the others have been
/// answering for a minute and earned rewards, it has not. Each node's own
/// order leaves it somewhere to stay.
#[test]
fn full_nodes_do_not_all_trim_the_same_newcomer() {
    const FULL: usize = 4;
    const TARGET: usize = 3;
    let mut configs: Vec<Config> = (0..FULL).map(|i| discovering(i, &[], TARGET)).collect();
    configs.extend((0..=TARGET).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    let newcomer = FULL + TARGET;
    for incumbent in FULL..newcomer {
        for full in 0..FULL {
            net.dial(incumbent, full, None);
        }
    }
    net.advance(Duration::from_secs(60));
    for full in 0..FULL {
        assert_eq!(net.nodes[full].peer_count(), TARGET);
        net.dial(newcomer, full, None);
    }
    net.advance(crate::node::discovery::EVICTION_GRACE + crate::node::discovery::TRIM_INTERVAL);
    let kept: Vec<usize> = (0..FULL)
        .filter(|&full| net.connected(full, newcomer))
        .collect();
    for full in 0..FULL {
        assert_eq!(net.nodes[full].peer_count(), TARGET, "node {full} trimmed");
    }
    assert!(
        !kept.is_empty(),
        "every full node trimmed the newcomer: it was left with no peer"
    );
    assert!(kept.len() < FULL, "nobody trimmed the newcomer: {kept:?}");
}

/// Peers the full node of [`full_node_past_grace`] holds at most.
const FULL_PEERS_MAX: usize = 3;

/// Node 0, discovering with room for [`FULL_PEERS_MAX`] peers (target 2),
/// holds that many inbound peers (nodes 1 to 3), each past its eviction
/// grace; node 4 is a stranger that has not dialled yet.
fn full_node_past_grace() -> Net {
    let mut full = discovering(0, &[], 2);
    full.peer.limits.peers_max = FULL_PEERS_MAX;
    full.peer.limits.inbound_peers_max = FULL_PEERS_MAX;
    full.peer.peers_target = 2;
    let mut configs = vec![full];
    configs.extend((0..FULL_PEERS_MAX + 1).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    for node in 1..=FULL_PEERS_MAX {
        net.dial(node, 0, None);
    }
    net.advance(crate::node::discovery::EVICTION_GRACE);
    net
}

#[test]
fn a_full_node_makes_room_for_a_newcomer_instead_of_refusing_it() {
    let mut net = full_node_past_grace();
    assert_eq!(net.nodes[0].peer_count(), FULL_PEERS_MAX);
    // A newcomer arrives at a full node: admitted, and one inbound peer
    // past its grace leaves with Goodbye(too many peers).
    net.dial(FULL_PEERS_MAX + 1, 0, None);
    net.advance(Duration::from_millis(100));
    assert!(
        net.connected(0, FULL_PEERS_MAX + 1),
        "the newcomer was refused"
    );
    assert_eq!(net.nodes[0].peer_count(), FULL_PEERS_MAX);
    let evicted: Vec<usize> = (1..=FULL_PEERS_MAX)
        .filter(|&i| !net.connected(0, i))
        .collect();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(
        disconnects(&net, evicted[0]).contains(&DisconnectReason::RemoteGoodbye(
            GoodbyeReason::TooManyPeers
        ))
    );
    // The evicted peer comes straight back: one of the two old peers makes
    // room, never the newcomer still within its grace.
    net.dial(evicted[0], 0, None);
    net.advance(Duration::from_millis(100));
    assert!(
        net.connected(0, FULL_PEERS_MAX + 1),
        "a peer within its grace was evicted"
    );
}

#[test]
fn a_newcomer_a_full_node_has_answered_may_make_room_within_its_grace() {
    const PEERS_MAX: usize = 3;
    let mut full = discovering(0, &[], 2);
    full.peer.limits.peers_max = PEERS_MAX;
    full.peer.limits.inbound_peers_max = PEERS_MAX;
    full.peer.peers_target = 2;
    let mut configs = vec![full];
    // Three newcomers that know only node 0: each looks itself up through it.
    configs.extend((1..=PEERS_MAX).map(|i| discovering(i, &[0], 25)));
    configs.push(Config::new(1));
    let newcomer = PEERS_MAX + 1;
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(1));
    assert!(Duration::from_secs(1) < crate::node::discovery::EVICTION_GRACE);
    assert_eq!(net.nodes[0].peer_count(), PEERS_MAX);
    let answered = net.nodes[0]
        .served_stats()
        .count(&ProtocolId::FindNode, ServedResult::Answered);
    assert!(answered >= PEERS_MAX as u64, "answered {answered}");
    // All within their grace, but all answered: one makes room.
    net.dial(newcomer, 0, None);
    net.advance(Duration::from_millis(100));
    assert!(
        net.connected(0, newcomer),
        "refused, though every peer had had its answer"
    );
    let evicted: Vec<usize> = (1..=PEERS_MAX).filter(|&i| !net.connected(0, i)).collect();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(
        disconnects(&net, evicted[0]).contains(&DisconnectReason::RemoteGoodbye(
            GoodbyeReason::TooManyPeers
        ))
    );
    // The newcomer never asked anything: it keeps its grace against the
    // next arrival, which makes one of the answered peers leave instead.
    let again = evicted[0];
    net.dial(again, 0, None);
    net.advance(Duration::from_millis(100));
    assert!(
        net.connected(0, newcomer),
        "an unanswered newcomer was evicted"
    );
}

#[test]
fn a_full_node_whose_peers_all_arrived_within_the_grace_still_admits_a_newcomer() {
    use crate::node::discovery::{EVICTION_GRACE, GRACE_PROTECTED_MAX};
    let arrival = Duration::from_millis(100);
    // Every inbound peer arrives within one grace: room for two more
    // than the grace protects.
    let peers_max = GRACE_PROTECTED_MAX + 2;
    assert!(arrival * (peers_max as u32 + 1) < EVICTION_GRACE);
    let mut full = discovering(0, &[], 2);
    full.peer.limits.peers_max = peers_max;
    full.peer.limits.inbound_peers_max = peers_max;
    full.peer.peers_target = 2;
    let mut configs = vec![full];
    configs.extend((0..peers_max + 2).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    for node in 1..=peers_max {
        net.dial(node, 0, None);
        net.advance(arrival);
    }
    assert_eq!(net.nodes[0].peer_count(), peers_max);
    // A newcomer: the peer that has had its grace longest (node 1) leaves.
    let newcomer = peers_max + 1;
    net.dial(newcomer, 0, None);
    net.advance(arrival);
    assert!(net.connected(0, newcomer), "the newcomer was refused");
    let gone: Vec<usize> = (1..=peers_max).filter(|&i| !net.connected(0, i)).collect();
    assert_eq!(gone, vec![1], "the oldest within its grace makes room");
    assert!(
        disconnects(&net, 1).contains(&DisconnectReason::RemoteGoodbye(
            GoodbyeReason::TooManyPeers
        ))
    );
    // The next one: node 2, the oldest left. The newest GRACE_PROTECTED_MAX,
    // the two newcomers among them, are never the ones to go.
    net.dial(newcomer + 1, 0, None);
    net.advance(arrival);
    assert!(net.connected(0, newcomer + 1));
    let gone: Vec<usize> = (1..=newcomer).filter(|&i| !net.connected(0, i)).collect();
    assert_eq!(gone, vec![1, 2]);
}

#[test]
fn a_full_node_within_the_grace_of_every_peer_it_protects_refuses_a_newcomer() {
    use crate::node::discovery::GRACE_PROTECTED_MAX;
    let mut full = discovering(0, &[], 2);
    full.peer.limits.peers_max = GRACE_PROTECTED_MAX;
    full.peer.limits.inbound_peers_max = GRACE_PROTECTED_MAX;
    full.peer.peers_target = 2;
    let mut configs = vec![full];
    configs.extend((0..GRACE_PROTECTED_MAX + 1).map(|_| Config::new(1)));
    let mut net = Net::new(configs);
    for node in 1..=GRACE_PROTECTED_MAX {
        net.dial(node, 0, None);
    }
    net.advance(Duration::from_millis(100));
    let newcomer = GRACE_PROTECTED_MAX + 1;
    net.dial(newcomer, 0, None);
    net.advance(Duration::from_millis(100));
    assert!(!net.connected(0, newcomer), "a protected peer was evicted");
    assert!((1..=GRACE_PROTECTED_MAX).all(|i| net.connected(0, i)));
}

#[test]
fn a_dial_cut_during_its_handshake_is_tried_again() {
    // Node 1 knows only node 0; its first dial is cut before the handshake
    // ends. Forgetting that dial would leave node 1 believing it is still
    // dialling node 0, and it would never try again.
    let mut net = Net::new(vec![discovering(0, &[], 25), discovering(1, &[0], 25)]);
    net.handle(1, Input::Timeout);
    let (&(at, conn), _) = net
        .links
        .iter()
        .find(|((node, _), _)| *node == 1)
        .expect("node 1 dialled its bootnode");
    net.cut(at, conn, CloseCause::RemoteClosed);
    net.in_flight.clear();
    assert!(!net.connected(0, 1));
    net.advance(crate::discovery::limits::REFRESH_INTERVAL_BELOW_TARGET * 2);
    assert!(
        net.connected(0, 1),
        "node 1 never dialled its bootnode again"
    );
}

#[test]
fn a_scored_out_newcomer_does_not_cost_a_full_node_a_peer() {
    let mut net = full_node_past_grace();
    // Node 0 scored the newcomer out before it arrives.
    let newcomer = net.nodes[FULL_PEERS_MAX + 1].peer_id();
    let now = net.now;
    for _ in 0..3 {
        net.nodes[0].report(
            now,
            newcomer,
            crate::peer::Report::Penalty(crate::peer::Penalty::High),
        );
    }
    net.drain();
    net.dial(FULL_PEERS_MAX + 1, 0, None);
    net.advance(Duration::from_millis(100));
    assert!(!net.connected(0, FULL_PEERS_MAX + 1));
    for node in 1..=FULL_PEERS_MAX {
        assert!(
            net.connected(0, node),
            "node {node} was evicted for a refused newcomer"
        );
    }
}

/// Node `index` with no address to advertise: it learns one from what its
/// peers see, at the MemoryNet port.
fn learning(index: usize, bootnodes: &[usize], peers_target: usize) -> Config {
    let mut config = discovering(index, bootnodes, peers_target);
    let discovery = config
        .discovery
        .as_mut()
        .expect("discovering configures it");
    discovery.addresses.clear();
    discovery.learn_address_port = Some(addr(index).port());
    config
}

#[test]
fn a_node_without_an_address_learns_it_from_its_peers_and_is_then_dialled() {
    // Node 0 starts with no address; it reaches 1, 2 and 3 (its target)
    // through bootnode 1. Node 4 starts without discovery and joins later
    // through the same bootnode, so it can meet 0 only by a record of 0's
    // carried by the others.
    let mut configs = vec![learning(0, &[1], 3)];
    configs.extend((1..=3).map(|i| discovering(i, &[1], 3)));
    configs.push(Config::new(1));
    let mut net = Net::new(configs);
    let start = net.nodes[0].discovery().unwrap().local_record().clone();
    assert!(start.addresses().is_empty(), "{start:?}");
    // Its first lookup may reach bootnode 1 before 2 and 3 do; the
    // refresh 30 s later finds them.
    net.advance(Duration::from_secs(45));
    for peer in 1..=3 {
        assert!(net.connected(0, peer), "0 did not reach {peer}");
    }
    let learned = net.nodes[0].discovery().unwrap().local_record().clone();
    assert_eq!(learned.addresses(), &[addr(0)]);
    assert_eq!(learned.seq(), start.seq() + 1);
    assert_eq!(
        net.nodes[0]
            .discovery()
            .unwrap()
            .counters()
            .addresses_learned,
        1
    );
    // What node 0 now answers a record request with: the new record, and
    // where it sees the requester.
    let one = net.nodes[1].peer_id();
    let Answer::Chunks(chunks) =
        net.nodes[0].serve_discovery(net.now, one, ProtocolId::PeerRecord, &[])
    else {
        panic!("node 0 refused a record request");
    };
    let answer = crate::discovery::PeerRecordAnswer::decode(&chunks[0], 1, net.nodes[0].peer_id())
        .expect("node 0's answer decodes");
    assert_eq!(answer.record, learned);
    assert_eq!(answer.observed, addr(1));
    // The Pings that follow carry node 0's new metadata number; its peers
    // ask for its record again and enter it in their tables.
    net.advance(Duration::from_secs(90));
    let zero = net.nodes[0].peer_id();
    for peer in 1..=3 {
        let table = net.nodes[peer].discovery().unwrap().table();
        let entry = table.entry(&zero);
        assert_eq!(
            entry.map(|entry| entry.record.seq()),
            Some(learned.seq()),
            "node {peer} does not hold node 0's new record"
        );
    }
    // Node 4 comes up with discovery and only bootnode 1: it finds 0
    // through the others' answers and dials it.
    net.restart(4, discovering(4, &[1], 25), [4; 32]);
    net.advance(Duration::from_secs(60));
    // Node 4 (target 25) is above every other node's target of 3, so each
    // trims it now and then and it comes back; which of the two dialled
    // the connection that stands at the end varies. What matters is that
    // node 4 dialled node 0 once: only its learned address allowed that.
    let four = net.nodes[4].peer_id();
    let dialled_by_four = net.notifications[0].iter().any(|n| {
        matches!(
            n,
            Notification::PeerConnected {
                peer,
                direction: Direction::Inbound,
                ..
            } if *peer == four
        )
    });
    assert!(dialled_by_four, "node 4 never dialled node 0");
    // Learning once is enough: the record did not change again.
    assert_eq!(net.nodes[0].discovery().unwrap().local_record(), &learned);
}

#[test]
fn a_node_that_advertises_an_address_never_adds_what_peers_see() {
    // Node 0 advertises a fixed address and does not learn; its peers see
    // it at 10.0.0.1, which must not enter its record.
    let mut configs = vec![discovering(0, &[1], 3)];
    let advertised: SocketAddr = "10.9.9.9:9000".parse().unwrap();
    configs[0].discovery.as_mut().unwrap().addresses = vec![advertised];
    configs.extend((1..=3).map(|i| discovering(i, &[1], 3)));
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(30));
    for peer in 1..=3 {
        assert!(net.connected(0, peer), "0 did not reach {peer}");
    }
    let discovery = net.nodes[0].discovery().unwrap();
    assert_eq!(discovery.local_record().addresses(), &[advertised]);
    assert_eq!(discovery.local_record().seq(), 1);
    assert_eq!(discovery.counters().addresses_learned, 0);
}
