//! `meshsync devnet`: N nodes on 127.0.0.1 in one process, on a fresh chain.
//!
//! # Design
//! Each node is a [`Driver`] on its own thread, and the network forms by
//! discovery, as `meshsync node --bootnode` does it: node 0 is the
//! bootnode, and every other node knows only it ([`bootnodes_of`]), dials
//! it, asks it for the nodes it knows, and dials those until it has its
//! target of peers (25). Private addresses are allowed: every node
//! advertises its 127.0.0.1 address. A node that loses peers dials
//! candidates again, and one that knows nobody goes back to node 0.
//!
//! A node's first lookup runs as it starts, so the nodes start one by one:
//! each once a bootnode holds the one before it in its routing table (at
//! most [`JOIN_WAIT_MAX`] later), so that the next one hears of it at
//! once rather than at its next refresh, 30 s on. Node 0 takes at most
//! `PEERS_INBOUND_MAX` (30) peers that dial it; nodes past that many
//! also know their predecessor as a bootnode, which has room.
//!
//! The chain: a genesis with P proposer keys from
//! `meshsync_core::chain::devnet_keys(network_id, P)` (public: never for a
//! real network), starting at the next whole second, with the slot duration
//! asked for. Nodes `0..P` hold one key each; every node follows the chain by
//! gossip and keeps it in a block store under the data directory
//! (`node-<i>`). `--late-node-at` starts one more node (no key) later; it
//! dials the others and follows from the next block it hears (catching up
//! on the blocks before it is range sync's job).
//!
//! The main thread waits for SIGINT/SIGTERM on its own `mio::Poll` and, once
//! a second, asks every node for its head slot and peer count and prints one
//! line: `t=12s heads=[6,6,6,5] peers=[3,3,3,3]`. On a signal, or after
//! `--seconds`, every node shuts down gracefully (Goodbye to every peer) in
//! parallel; a second signal exits at once, and a shutdown still running
//! after `SHUTDOWN_EXIT_DEADLINE` is cut short (`shutdown.rs`). With
//! `--metrics-base-port P`, node `i` serves its metrics on 127.0.0.1:P+i.

use crate::run_dir::RunDir;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use meshsync_core::chain::{devnet_keys, ChainConfig, Genesis, ProposerKey};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::peer::{PEERS_INBOUND_MAX, PEERS_TARGET};
use meshsync_core::Config;
use meshsync_mio::driver::{Driver, DriverOptions, RunningDriver};
use meshsync_mio::metrics::MetricsServer;
use meshsync_mio::testing::devnet_genesis;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::genesis_files::next_second_ms;

/// Nodes that know only node 0 as their bootnode: as many as node 0
/// accepts dialling it (`PEERS_INBOUND_MAX`); later ones know their
/// predecessor too.
pub const BOOTNODE_ALONE_NODES_MAX: usize = PEERS_INBOUND_MAX;
/// How long a starting node waits for a bootnode to hold it in its routing
/// table before the next one starts: a handshake and a record exchange on
/// loopback take milliseconds; a bootnode whose table has no room for it
/// never does.
pub const JOIN_WAIT_MAX: Duration = Duration::from_secs(1);
/// Between two looks at the bootnodes' tables while a node joins.
const JOIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Nodes a devnet may have: each is a thread and a listening port.
pub const NODES_MAX: usize = 256;
/// How often heads and peer counts are printed.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Slot duration when `--slot-ms` is not given.
pub const SLOT_DURATION_MS_DEFAULT: u64 = 1_000;
/// Verification threads per node: the nodes share the machine's cores.
pub const WORKERS_PER_NODE: usize = 1;
/// How long a status query may take before the node is reported as stuck.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a devnet should look like.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Node `i` listens on `base_port + i`; 0 picks free ports.
    pub base_port: u16,
    /// The network id every node uses (and the seed of the proposer keys).
    pub network_id: u64,
    /// Stop after this long; `None` runs until a signal.
    pub run_for: Option<Duration>,
    /// Nodes holding a proposer key (at most `nodes`); 0: no blocks.
    pub proposers: usize,
    /// Slot duration in milliseconds.
    pub slot_duration_ms: u64,
    /// Body bytes of each produced block.
    pub body_bytes: usize,
    /// Start one more node (no key) this long after the start.
    pub late_node_at: Option<Duration>,
    /// Parent of the nodes' data directories; `None`: a temporary directory removed at exit.
    pub data_dir: Option<PathBuf>,
    /// Node `i` serves its metrics on `metrics_base_port + i` (0: free ports); `None`: no metrics.
    pub metrics_base_port: Option<u16>,
}

/// A node of the devnet: its driver's thread, and its metrics endpoint if any.
struct DevnetNode {
    driver: RunningDriver,
    /// Kept for its thread: dropping it stops the endpoint.
    metrics: Option<MetricsServer>,
}

/// The bootnodes of node `index`: none for node 0, node 0 for the next
/// [`BOOTNODE_ALONE_NODES_MAX`], node 0 and the predecessor after them.
pub fn bootnodes_of(index: usize) -> Vec<usize> {
    match index {
        0 => Vec::new(),
        _ if index <= BOOTNODE_ALONE_NODES_MAX => vec![0],
        _ => vec![0, index - 1],
    }
}

/// Runs a devnet until a signal or `options.run_for`, then stops every node.
pub fn run(options: &DevnetOptions) -> io::Result<()> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    if options.nodes == 0 || options.nodes >= NODES_MAX {
        return Err(invalid(format!(
            "--nodes must be between 1 and {}",
            NODES_MAX - 1
        )));
    }
    if options.proposers > options.nodes {
        return Err(invalid(format!(
            "--proposers {} is more than --nodes {}",
            options.proposers, options.nodes
        )));
    }
    if options.body_bytes > meshsync_core::chain::block::BLOCK_BODY_BYTES_MAX {
        return Err(invalid(format!(
            "--body-bytes must be at most {}",
            meshsync_core::chain::block::BLOCK_BODY_BYTES_MAX
        )));
    }
    let genesis = Arc::new(devnet_genesis(
        options.network_id,
        options.proposers,
        options.slot_duration_ms,
        next_second_ms(SystemTime::now()),
    )?);
    let keys = devnet_keys(options.network_id, options.proposers);
    let data_dir = RunDir::new(options.data_dir.clone(), "meshsync-devnet")?;
    println!(
        "devnet: {} nodes, {} proposers, slots of {} ms from {} ms, data in {}",
        options.nodes,
        options.proposers,
        genesis.slot_duration_ms(),
        genesis.genesis_time_ms(),
        data_dir.path().display()
    );

    crate::shutdown::watch_signals()?;
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)?;

    let mut nodes: Vec<DevnetNode> = Vec::with_capacity(options.nodes + 1);
    for index in 0..options.nodes {
        let key = keys.get(index).cloned();
        let node = start_node(options, &genesis, key, data_dir.path(), index, &nodes)?;
        nodes.push(node);
    }
    for (index, node) in nodes.iter().enumerate() {
        let role = match (index < options.proposers, index == 0) {
            (true, true) => " (proposer, bootnode)",
            (true, false) => " (proposer)",
            (false, true) => " (bootnode)",
            (false, false) => "",
        };
        println!(
            "node {index}: {} at {}{role}{}",
            node.driver.peer_id(),
            node.driver.local_addr(),
            metrics_text(node)
        );
    }

    let start = StdInstant::now();
    let stop_at = options.run_for.map(|duration| start + duration);
    let mut late_at = options.late_node_at.map(|after| start + after);
    let mut next_report = start + REPORT_INTERVAL;
    let mut events = Events::with_capacity(8);
    'run: loop {
        let now = StdInstant::now();
        if stop_at.is_some_and(|stop_at| now >= stop_at) {
            break;
        }
        if late_at.is_some_and(|late_at| now >= late_at) {
            late_at = None;
            let index = nodes.len();
            let node = start_node(options, &genesis, None, data_dir.path(), index, &nodes)?;
            println!(
                "t={}s late node {index} joins: {} at {}{}",
                (now - start).as_secs(),
                node.driver.peer_id(),
                node.driver.local_addr(),
                metrics_text(&node)
            );
            nodes.push(node);
            continue;
        }
        if now >= next_report {
            report(&nodes, now - start);
            next_report += REPORT_INTERVAL;
            continue;
        }
        let mut wake = next_report;
        for at in [stop_at, late_at].into_iter().flatten() {
            wake = wake.min(at);
        }
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in &events {
            if event.token() == Token(0) && signals.pending().next().is_some() {
                println!("signal received: stopping {} nodes", nodes.len());
                break 'run;
            }
        }
    }
    report(&nodes, start.elapsed());
    // Ask every node to stop first, so they shut down in parallel.
    for node in &nodes {
        let _ = node.driver.handle().stop();
    }
    let mut first_error = None;
    for node in nodes {
        if let Err(error) = node.driver.join() {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts node `index` (with `key` if it proposes), running discovery
/// from its bootnodes among `running`, and returns once one of them holds
/// it in its table (or after [`JOIN_WAIT_MAX`]).
fn start_node(
    options: &DevnetOptions,
    genesis: &Arc<Genesis>,
    key: Option<blst::min_pk::SecretKey>,
    data_dir: &Path,
    index: usize,
    running: &[DevnetNode],
) -> io::Result<DevnetNode> {
    let port = port_of(options.base_port, index, "--base-port")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut config = Config::new(options.network_id);
    config.chain = ChainConfig {
        genesis: Arc::clone(genesis),
        stored: Arc::from(Vec::new()),
        history_anchor: None,
        proposer_keys: key
            .map(|key| ProposerKey(Arc::new(key)))
            .into_iter()
            .collect(),
        signed_slots: Vec::new(),
        body_bytes: options.body_bytes,
        follow_gossip: true,
    };
    // A devnet is small and trusted: one peer is enough to start range sync.
    config.sync.peers_min = 1;
    let bootnodes: Vec<&RunningDriver> = bootnodes_of(index)
        .into_iter()
        .map(|boot| &running[boot].driver)
        .collect();
    config.discovery = Some(DiscoveryConfig {
        // Port 0: the driver puts the bound port in its place.
        addresses: vec![listen],
        allow_private: true,
        // Loopback is exempt from the subnet caps anyway.
        subnet_limits: true,
        bootnodes: bootnodes
            .iter()
            .map(|boot| (boot.peer_id(), boot.local_addr()))
            .collect(),
        peers_target: PEERS_TARGET,
        // Newer than any record of an earlier devnet: the core reads no clock.
        record_seq: crate::unix_ms_now(),
        learn_address_port: None,
    });
    let driver_options = DriverOptions {
        workers: WORKERS_PER_NODE,
        data_dir: Some(data_dir.join(format!("node-{index}"))),
        ..DriverOptions::default()
    };
    let mut driver = Driver::bind_with(
        listen,
        config,
        meshsync_mio::generate_identity(),
        meshsync_mio::os_seed(),
        &driver_options,
    )
    // The error names its cause and, for the network, the address.
    .map_err(|error| {
        let error = io::Error::from(error);
        io::Error::new(error.kind(), format!("node {index}: {error}"))
    })?;
    let metrics = match options.metrics_base_port {
        None => None,
        Some(base) => {
            let addr = SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port_of(base, index, "--metrics-base-port")?,
            ));
            let server = MetricsServer::start(addr, driver.metrics()).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("node {index}: metrics: cannot listen on {addr}: {error}"),
                )
            })?;
            Some(server)
        }
    };
    let peer = driver.peer_id();
    let node = driver.spawn(&format!("node-{index}"))?;
    // Polled, with a deadline: the next node's first lookup should find
    // this one in a bootnode's answer.
    let joined_by = StdInstant::now() + JOIN_WAIT_MAX;
    while !bootnodes.is_empty() && StdInstant::now() < joined_by {
        let known = bootnodes.iter().any(|boot| {
            boot.handle()
                .query(
                    move |driver| {
                        driver
                            .node()
                            .discovery()
                            .is_some_and(|discovery| discovery.table().entry(&peer).is_some())
                    },
                    QUERY_TIMEOUT,
                )
                .unwrap_or(false)
        });
        if known {
            break;
        }
        std::thread::sleep(JOIN_POLL_INTERVAL);
    }
    Ok(DevnetNode {
        driver: node,
        metrics,
    })
}

/// Port `base + index`, or 0 (a free port) when `base` is 0.
fn port_of(base: u16, index: usize, flag: &str) -> io::Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    u16::try_from(usize::from(base) + index).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{flag} + --nodes exceeds 65535"),
        )
    })
}

/// Where a node's metrics are served, for its line in the listing.
fn metrics_text(node: &DevnetNode) -> String {
    match &node.metrics {
        Some(server) => format!(", metrics http://{}/metrics", server.local_addr()),
        None => String::new(),
    }
}

/// Prints one line with every node's head slot and peer count.
fn report(nodes: &[DevnetNode], elapsed: Duration) {
    let (heads, peers): (Vec<String>, Vec<String>) = nodes
        .iter()
        .map(|node| {
            match node.driver.handle().query(
                |driver| {
                    (
                        driver.node().chain().head().slot,
                        driver.node().peer_count(),
                    )
                },
                QUERY_TIMEOUT,
            ) {
                Ok((head, peers)) => (head.to_string(), peers.to_string()),
                Err(_) => ("?".to_string(), "?".to_string()),
            }
        })
        .unzip();
    println!(
        "t={}s heads=[{}] peers=[{}]",
        elapsed.as_secs(),
        heads.join(","),
        peers.join(",")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_zero_is_every_nodes_bootnode_and_late_ones_know_their_predecessor() {
        assert!(bootnodes_of(0).is_empty());
        assert_eq!(bootnodes_of(1), [0]);
        assert_eq!(bootnodes_of(3), [0]);
        assert_eq!(bootnodes_of(BOOTNODE_ALONE_NODES_MAX), [0]);
        assert_eq!(
            bootnodes_of(BOOTNODE_ALONE_NODES_MAX + 1),
            [0, BOOTNODE_ALONE_NODES_MAX]
        );
        for index in 1..NODES_MAX {
            let bootnodes = bootnodes_of(index);
            assert!(bootnodes.contains(&0));
            assert!(bootnodes.iter().all(|&boot| boot < index));
            assert!(bootnodes.len() <= meshsync_core::discovery::limits::BOOTNODES_MAX);
        }
    }
}
