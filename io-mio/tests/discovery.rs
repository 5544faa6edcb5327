//! Four nodes that know only a bootnode find each other: node 0 is
//! started with no peer at all, nodes 1, 2 and 3 with only
//! `--bootnode NODE0_ADDR@NODE0_ID` (and `--allow-private`, since they
//! advertise 127.0.0.1). Each dials node 0, gives it its signed record,
//! asks it for the nodes it knows, and dials those; in the end every node
//! has the other three as peers, though nobody named them.
//!
//! Then the peer store: a node with `--data-dir` is stopped, the bootnode
//! goes away for good, and the node starts again on the same data
//! directory with no bootnode at all; it dials the peers its store names.
//!
//! Every node is a real `meshsync node` process. Every wait polls a log
//! or a metrics scrape with a deadline; nothing sleeps for a result.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use meshsync_mio::testing::TempDir;

use super::operations::{scrape, value, wait_within};
use super::static_peers::{keygen, Node};

const NETWORK_ID: u64 = 96;
const NODES: usize = 4;
/// The longest a start-up, a log line or a bootnode's table entry may take
/// (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(30);
/// From the last node's start to every node having the other three as
/// peers. A node looks itself up as soon as it has met its bootnode, so
/// this takes about a second; the bound is room for a loaded machine, well
/// under the 30 s refresh interval that a missed first lookup would cost.
const MESH_DEADLINE: Duration = Duration::from_secs(15);

const INBOUND: &str = "meshsync_peers{direction=\"inbound\"}";
const OUTBOUND: &str = "meshsync_peers{direction=\"outbound\"}";
const TABLE: &str = "meshsync_discovery_table_entries";
/// Peer records in the last peer store snapshot written.
const STORED: &str = "meshsync_store_peer_records";

/// `meshsync node` on 127.0.0.1 with the key at `dir/NAME.key` (made
/// on its first start), metrics on a free port, discovery with private
/// addresses allowed, and `extra`; stderr to `dir/NAME.log`.
fn start(dir: &Path, name: &str, extra: &[&str]) -> Node {
    let key = dir.join(format!("{name}.key"));
    if !key.exists() {
        keygen(&key);
    }
    let key = key.to_str().expect("a UTF-8 temporary path");
    let mut arguments = vec!["--listen", "127.0.0.1:0", "--key", key, "--allow-private"];
    arguments.extend_from_slice(extra);
    Node::start_on(NETWORK_ID, &dir.join(format!("{name}.log")), &arguments)
}

fn peers(samples: &BTreeMap<String, f64>) -> f64 {
    value(samples, INBOUND) + value(samples, OUTBOUND)
}

#[test]
fn nodes_that_know_only_a_bootnode_find_each_other() {
    let temp = TempDir::new("discovery-bootnode");
    let dir = temp.path();
    let mut nodes = vec![start(dir, "node-0", &[])];
    let (boot_id, boot_addr) = nodes[0].identity();
    // It listens on port 0: the bound port is the one it signed.
    let advertised = nodes[0].words_after("discovery on: advertising ");
    assert_eq!(advertised[0], format!("{boot_addr},"), "{advertised:?}");
    let boot_metrics = nodes[0].metrics_address();
    let bootnode = format!("{boot_addr}@{boot_id}");

    let started = Instant::now();
    let mut metrics = vec![boot_metrics];
    for index in 1..NODES {
        let mut node = start(dir, &format!("node-{index}"), &["--bootnode", &bootnode]);
        metrics.push(node.metrics_address());
        nodes.push(node);
        // The bootnode holds this one's record before the next starts, so
        // that node's lookups can hear of it from the bootnode.
        wait_within(
            &format!("node 0's table to hold node {index}"),
            DEADLINE,
            || (value(&scrape(boot_metrics), TABLE) >= index as f64).then_some(()),
        );
    }
    let last_started = Instant::now();

    let counts = wait_within(
        "every node to have the other three as peers",
        MESH_DEADLINE,
        || {
            let counts: Vec<f64> = metrics.iter().map(|addr| peers(&scrape(*addr))).collect();
            counts
                .iter()
                .all(|&count| count == (NODES - 1) as f64)
                .then_some(counts)
        },
    );
    eprintln!(
        "{NODES} nodes meshed by discovery {:.1} s after the last start ({:.1} s after the first \
         joined), peer counts {counts:?}",
        last_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Nobody was given a --peer or --static-peer: the links to nodes other
    // than node 0 were dialled by discovery, and each node's table holds
    // what it verified.
    for (index, addr) in metrics.iter().enumerate() {
        let samples = scrape(*addr);
        assert!(value(&samples, TABLE) >= 1.0, "node {index}: {samples:?}");
        assert!(
            value(&samples, "meshsync_discovery_lookups_total") >= 1.0,
            "node {index}: {samples:?}"
        );
        if index > 0 {
            assert!(
                value(&samples, OUTBOUND) >= 1.0,
                "node {index}: {samples:?}"
            );
        }
    }
    let boot = scrape(boot_metrics);
    assert_eq!(value(&boot, INBOUND), (NODES - 1) as f64, "{boot:?}");
    assert_eq!(value(&boot, TABLE), (NODES - 1) as f64, "{boot:?}");
    let dialled_by_discovery: f64 = metrics[1..]
        .iter()
        .map(|addr| value(&scrape(*addr), "meshsync_discovery_dials_total"))
        .sum();
    assert!(
        dialled_by_discovery >= 1.0,
        "no discovery dial among nodes 1-3"
    );
}

/// Node 3 keeps a peer store. Once the four are meshed and its store holds
/// the three (written 5 s after its routing table grew, long before the
/// 60 s interval), it is killed with SIGKILL, so nothing is written on the
/// way out; the bootnode is killed for good, and node 3 starts again on the same data
/// directory and key with no `--bootnode`: it reads the records of the
/// three peers it knew and dials the two still up. Nodes 1 and 2 cannot
/// dial it back (its new port is in no record they hold), so its two
/// outbound peers came from the store. With the data directory wiped, it
/// would know nobody and this fails.
#[test]
fn a_restarted_node_finds_its_peers_from_its_peer_store_without_the_bootnode() {
    let temp = TempDir::new("discovery-peer-store");
    let dir = temp.path();
    let data = dir.join("node-3-data");
    let data = data.to_str().expect("a UTF-8 temporary path");
    let mut boot = start(dir, "node-0", &[]);
    let (boot_id, boot_addr) = boot.identity();
    let boot_metrics = boot.metrics_address();
    let bootnode = format!("{boot_addr}@{boot_id}");
    let mut others = Vec::new();
    for index in 1..=2 {
        let mut node = start(dir, &format!("node-{index}"), &["--bootnode", &bootnode]);
        node.metrics_address();
        others.push(node);
        wait_within(
            &format!("node 0's table to hold node {index}"),
            DEADLINE,
            || (value(&scrape(boot_metrics), TABLE) >= index as f64).then_some(()),
        );
    }
    let mut keeper = start(
        dir,
        "node-3",
        &["--bootnode", &bootnode, "--data-dir", data],
    );
    let keeper_metrics = keeper.metrics_address();
    wait_within(
        "node 3 to have the other three as peers",
        MESH_DEADLINE,
        || (peers(&scrape(keeper_metrics)) == (NODES - 1) as f64).then_some(()),
    );
    let saved = Instant::now();
    wait_within(
        "node 3's peer store to hold the other three",
        MESH_DEADLINE,
        || (value(&scrape(keeper_metrics), STORED) >= (NODES - 1) as f64).then_some(()),
    );
    let saved = saved.elapsed();
    // SIGKILL: no shutdown snapshot; the store holds what was saved before.
    drop(keeper);
    drop(boot);

    let mut keeper = start(dir, "node-3", &["--data-dir", data]);
    let read = keeper.words_after("peer store: ");
    let records: usize = read[0].parse().expect("a record count");
    assert!(records >= NODES - 1, "read {read:?}");
    let keeper_metrics = keeper.metrics_address();
    let restarted = Instant::now();
    let samples = wait_within(
        "the restarted node 3 to dial nodes 1 and 2 from its peer store",
        MESH_DEADLINE,
        || {
            let samples = scrape(keeper_metrics);
            (value(&samples, OUTBOUND) == 2.0).then_some(samples)
        },
    );
    eprintln!(
        "node 3 (its store saved {:.1} s after it met all three, then killed with SIGKILL) \
         restarted without a bootnode: {records} records read, both live peers dialled \
         {:.1} s after its metrics came up",
        saved.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(value(&samples, INBOUND), 0.0, "{samples:?}");
    drop(others);
}
