//! A flood of half-open connections on real sockets: many source addresses
//! (127.0.0.0/8 is all loopback on Linux, so each 127.x address is a host of
//! its own to the node once its loopback exemption is off) connect and never
//! send a byte. An honest peer that dials during the flood must still
//! complete its handshake within a second.
//!
//! First 1,000 connections from 100 addresses: each address gets
//! `HANDSHAKES_PER_IP_MAX` slots, the rest are refused at once. Then 4 more
//! from each of 150 other addresses, which fill every slot: each newcomer
//! evicts the handshake open the longest, so the honest peer is never
//! refused for room.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshsync_core::limits::{HANDSHAKES_IN_PROGRESS_MAX, HANDSHAKES_PER_IP_MAX};
use meshsync_core::{Command, Config, Identity, PeerId};
use meshsync_mio::{Driver, RunningDriver};
use socket2::{Domain, Socket, Type};

const NETWORK_ID: u64 = 1;
/// How long the honest peer may take to become a peer during the flood.
const HONEST_HANDSHAKE_MAX: Duration = Duration::from_secs(1);
/// The longest any wait may take; a hang fails instead of blocking CI.
const DEADLINE: Duration = Duration::from_secs(30);
/// Sockets the test holds at once, both ends, with room to spare.
const OPEN_FILES_NEEDED: u64 = 8_192;

/// What the flooded node has seen, read on its own thread.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// Connections the core was told of.
    opened: u64,
    /// Connections the driver closed before the core saw them.
    refused_on_accept: u64,
    /// Inbound handshakes in progress now.
    in_progress: u64,
    refused_from_ip: u64,
    evicted: u64,
    timed_out: u64,
}

impl Seen {
    /// Every inbound connection the core saw is in its handshake, or was
    /// refused for its address, evicted, or timed out (no other way to end
    /// is open to a connection that never sends a byte).
    fn accounts_for_every_connection(&self, honest: u64) {
        let ended = self.refused_from_ip + self.evicted + self.timed_out;
        assert_eq!(self.in_progress + ended + honest, self.opened, "{self:?}");
    }
}

fn seen(node: &RunningDriver) -> Seen {
    node.handle()
        .query(
            |driver: &Driver| {
                let node = driver.node();
                let counters = node.counters();
                Seen {
                    opened: counters.connections_opened,
                    refused_on_accept: driver.refused_on_accept(),
                    in_progress: node.inbound_handshakes() as u64,
                    refused_from_ip: counters.refused_handshakes_from_ip,
                    evicted: counters.handshakes_evicted,
                    timed_out: counters.refused_timeout,
                }
            },
            DEADLINE,
        )
        .expect("the flooded node answers")
}

/// Polls `node` until `done` holds; panics at the deadline with what it saw.
fn wait_until(node: &RunningDriver, what: &str, done: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = seen(node);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {now:?}"
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// A TCP connection to `target` from `source` that will never send a byte.
fn half_open(source: Ipv4Addr, target: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|error| panic!("binding {source}: {error}"));
    socket
        .connect(&target.into())
        .unwrap_or_else(|error| panic!("connecting from {source}: {error}"));
    socket
}

/// Starts a fresh node (seed `seed`) that dials `target`, and returns how
/// long it took to become `target`'s peer.
fn honest_dial(seed: u64, target: SocketAddr, target_id: PeerId) -> Duration {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let honest = Driver::bind(
        loopback,
        Config::new(NETWORK_ID),
        Identity::from_seed(seed),
        [seed as u8; 32],
    )
    .expect("the honest node binds")
    .spawn("honest")
    .expect("the honest node starts");
    let started = Instant::now();
    honest
        .handle()
        .command(Command::Dial {
            addr: target,
            peer: Some(target_id),
        })
        .expect("the honest node takes the dial");
    loop {
        let connected = honest
            .handle()
            .query(
                move |driver: &Driver| driver.node().is_connected(&target_id),
                DEADLINE,
            )
            .expect("the honest node answers");
        if connected {
            let took = started.elapsed();
            honest.stop().expect("the honest node stops");
            return took;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the honest peer never connected"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_half_open_flood_from_many_addresses_leaves_an_honest_peer_its_handshake() {
    rlimit::increase_nofile_limit(OPEN_FILES_NEEDED).expect("the open-files limit can be read");
    let mut config = Config::new(NETWORK_ID);
    // Every 127.x source is then a host of its own, as on a real network.
    config.peer.limits.exempt_loopback = false;
    let victim = Driver::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        Identity::from_seed(1),
        [1; 32],
    )
    .expect("the node binds")
    .spawn("flooded")
    .expect("the node starts");
    let (target, target_id) = (victim.local_addr(), victim.peer_id());

    // 1,000 connections from 100 addresses, ten each.
    let (addresses, per_address) = (100u8, 10);
    let mut flood = Vec::new();
    for _ in 0..per_address {
        for host in 0..addresses {
            flood.push(half_open(Ipv4Addr::new(127, 0, 1, host + 1), target));
        }
    }
    let total = flood.len() as u64;
    let first = wait_until(&victim, "the node to see every connection", |seen| {
        seen.opened + seen.refused_on_accept >= total
    });
    assert_eq!(first.refused_on_accept, 0, "{first:?}");
    first.accounts_for_every_connection(0);
    // Each address holds its share of the slots at most; past it, its
    // connections are refused, except where a handshake of its own had
    // timed out (under pressure, in 2 s) and left room.
    let share = u64::from(addresses) * HANDSHAKES_PER_IP_MAX as u64;
    assert!(first.in_progress <= share, "{first:?}");
    assert!(
        first.refused_from_ip + first.timed_out >= total - share,
        "{first:?}"
    );
    assert_eq!(first.evicted, 0, "{share} handshakes fit the slots");
    let took_first = honest_dial(2, target, target_id);

    // 4 more from each of 150 other addresses: more than the free slots.
    let (more_addresses, more_per_address) = (150u8, HANDSHAKES_PER_IP_MAX);
    for _ in 0..more_per_address {
        for host in 0..more_addresses {
            flood.push(half_open(Ipv4Addr::new(127, 0, 2, host + 1), target));
        }
    }
    let more = u64::from(more_addresses) * more_per_address as u64;
    let second = wait_until(&victim, "the node to see the second wave", |seen| {
        seen.opened + seen.refused_on_accept > total + more
    });
    second.accounts_for_every_connection(1);
    assert!(second.evicted > 0, "the slots filled: {second:?}");
    assert!(
        second.in_progress <= HANDSHAKES_IN_PROGRESS_MAX as u64,
        "{second:?}"
    );
    let took_second = honest_dial(3, target, target_id);

    println!(
        "{total} half-open connections from {addresses} addresses: {} refused for their \
         address, {} in their handshake; an honest handshake took {took_first:.1?}. \
         {more} more from {more_addresses} addresses: {} evicted, {} in their handshake; \
         an honest handshake took {took_second:.1?}",
        first.refused_from_ip, first.in_progress, second.evicted, second.in_progress,
    );
    assert!(took_first < HONEST_HANDSHAKE_MAX, "took {took_first:?}");
    assert!(took_second < HONEST_HANDSHAKE_MAX, "took {took_second:?}");
    drop(flood);
    victim.stop().expect("the flooded node stops");
}
