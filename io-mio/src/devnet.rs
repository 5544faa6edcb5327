//! `meshsync devnet`: N nodes on 127.0.0.1 in one process.
//!
//! # Design
//! Each node is a [`Driver`] on its own thread. Node `i` dials its
//! [`DIALS_PER_NODE_MAX`] nearest predecessors (`i-1`, `i-2`, ...), so for
//! small networks every node dials all earlier ones, and for any size the
//! network is connected (every node dials `i-1`). The main thread waits for
//! SIGINT/SIGTERM on its own `mio::Poll` and, once a second, asks every node
//! for its peer count and logs the line. On a signal, or after `--seconds`,
//! every node shuts down gracefully (Goodbye to every peer) in parallel.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::{Command, Config};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::driver::{Driver, RunningDriver};

/// Predecessors each node dials: all of them in a small devnet, a bounded
/// number in a large one (well under `PEERS_MAX`).
pub const DIALS_PER_NODE_MAX: usize = 8;
/// Nodes a devnet may have: each is a thread and a listening port.
pub const NODES_MAX: usize = 256;
/// How often peer counts are printed.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a status query may take before the node is reported as stuck.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a devnet should look like.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Node `i` listens on `base_port + i`; 0 picks free ports.
    pub base_port: u16,
    /// The network id every node uses.
    pub network_id: u64,
    /// Stop after this long; `None` runs until a signal.
    pub run_for: Option<Duration>,
}

/// The nodes that node `index` dials.
pub fn dial_targets(index: usize) -> std::ops::Range<usize> {
    index.saturating_sub(DIALS_PER_NODE_MAX)..index
}

/// Runs a devnet until a signal or `options.run_for`, then stops every node.
pub fn run(options: &DevnetOptions) -> io::Result<()> {
    if options.nodes == 0 || options.nodes > NODES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--nodes must be between 1 and {NODES_MAX}"),
        ));
    }
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)?;

    let mut nodes: Vec<RunningDriver> = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        let port = if options.base_port == 0 {
            0
        } else {
            u16::try_from(usize::from(options.base_port) + index).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--base-port + --nodes exceeds 65535",
                )
            })?
        };
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let driver = Driver::bind(
            listen,
            Config::new(options.network_id),
            crate::generate_identity(),
            crate::os_seed(),
        )
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("node {index}: bind {listen}: {error}"),
            )
        })?;
        let running = driver.spawn(&format!("node-{index}"))?;
        for target in dial_targets(index) {
            let command = Command::Dial {
                addr: nodes[target].local_addr(),
                peer: Some(nodes[target].peer_id()),
            };
            running
                .handle()
                .command(command)
                .map_err(|error| io::Error::other(format!("node {index}: {error}")))?;
        }
        nodes.push(running);
    }
    for (index, node) in nodes.iter().enumerate() {
        println!("node {index}: {} at {}", node.peer_id(), node.local_addr());
    }

    let start = StdInstant::now();
    let stop_at = options.run_for.map(|duration| start + duration);
    let mut next_report = start + REPORT_INTERVAL;
    let mut events = Events::with_capacity(8);
    'run: loop {
        let now = StdInstant::now();
        if stop_at.is_some_and(|stop_at| now >= stop_at) {
            break;
        }
        if now >= next_report {
            report(&nodes, now - start);
            next_report += REPORT_INTERVAL;
            continue;
        }
        let wake = stop_at.map_or(next_report, |stop_at| stop_at.min(next_report));
        match poll.poll(&mut events, Some(wake - now)) {
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
        let _ = node.handle().stop();
    }
    let mut first_error = None;
    for node in nodes {
        if let Err(error) = node.join() {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Prints one line with every node's peer count.
fn report(nodes: &[RunningDriver], elapsed: Duration) {
    let counts: Vec<String> = nodes
        .iter()
        .map(|node| {
            match node
                .handle()
                .query(|driver| driver.node().peer_count(), QUERY_TIMEOUT)
            {
                Ok(count) => count.to_string(),
                Err(_) => "?".to_string(),
            }
        })
        .collect();
    println!(
        "t={}s peers per node: [{}]",
        elapsed.as_secs(),
        counts.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_dials_its_predecessor_and_at_most_the_cap() {
        assert_eq!(dial_targets(0), 0..0);
        assert_eq!(dial_targets(1), 0..1);
        assert_eq!(dial_targets(5), 0..5);
        for index in 1..100 {
            let targets = dial_targets(index);
            assert!(targets.contains(&(index - 1)));
            assert!(targets.len() <= DIALS_PER_NODE_MAX);
        }
    }
}
