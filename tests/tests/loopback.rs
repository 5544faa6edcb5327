//! Real nodes over real loopback TCP, each driven by the mio driver.
//!
//! These tests show the production driver and the core working together on
//! actual sockets: two nodes find each other, prove their identities and keep
//! the link alive with pings; a node on another network is turned away with a
//! reason on both sides; and hostile bytes on raw sockets get those sockets
//! closed while an honest peer stays connected. Every test binds port 0, and
//! every wait is bounded by a deadline: tests block on notification channels
//! with a timeout or step a driver until a condition holds, never sleep.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use meshsync_core::io::{DisconnectReason, GoodbyeReason, Notification, RefuseReason};
use meshsync_core::{Command, Config, Direction, Identity, PeerId};
use meshsync_mio::crossbeam_channel::{Receiver, RecvTimeoutError};
use meshsync_mio::{Driver, DriverHandle, RunningDriver};

/// The longest any one test may take; a hang fails instead of blocking CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a query to a running driver may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Short, so a test sees several pings in well under a second.
const PING_INTERVAL: Duration = Duration::from_millis(200);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(network_id: u64) -> Config {
    let mut config = Config::new(network_id);
    config.ping_interval = PING_INTERVAL;
    config
}

/// A driver for node `seed` on a free loopback port, with its notifications.
fn bind(seed: u64, config: Config) -> (Driver, Receiver<Notification>) {
    let mut driver = Driver::bind(
        loopback(),
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
    )
    .expect("binding 127.0.0.1:0 works");
    let notifications = driver.subscribe();
    (driver, notifications)
}

/// Like [`bind`], running on its own thread.
fn spawn(seed: u64, config: Config) -> (RunningDriver, Receiver<Notification>) {
    let (driver, notifications) = bind(seed, config);
    let running = driver
        .spawn(&format!("node-{seed}"))
        .expect("spawning a thread works");
    (running, notifications)
}

/// Waits for the first notification that `wanted` accepts, and returns it
/// with every notification seen before it. Panics at `deadline`.
fn wait_for(
    notifications: &Receiver<Notification>,
    deadline: Instant,
    what: &str,
    mut wanted: impl FnMut(&Notification) -> bool,
) -> (Notification, Vec<Notification>) {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match notifications.recv_timeout(left) {
            Ok(notification) if wanted(&notification) => return (notification, seen),
            Ok(notification) => seen.push(notification),
            Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}; saw {seen:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("driver stopped while waiting for {what}; saw {seen:?}")
            }
        }
    }
}

fn is_connected_to(peer: PeerId) -> impl FnMut(&Notification) -> bool {
    move |notification| matches!(notification, Notification::PeerConnected { peer: p, .. } if *p == peer)
}

fn query<R: Send + 'static>(
    handle: &DriverHandle,
    question: impl FnOnce(&Driver) -> R + Send + 'static,
) -> R {
    handle
        .query(question, QUERY_TIMEOUT)
        .expect("the driver answers queries")
}

/// (i) Two nodes connect, prove their identities to each other, and ping.
#[test]
fn two_nodes_connect_authenticate_and_ping() {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let (mut alice, alice_events) = bind(1, config(7));
    let (bob, bob_events) = spawn(2, config(7));
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());

    alice.command(Command::Dial {
        addr: bob.local_addr(),
        peer: Some(bob_id),
    });
    let connected = alice
        .run_until(|alice| alice.node().is_connected(&bob_id), deadline)
        .unwrap();
    assert!(connected, "alice did not connect to bob in time");
    let (notification, _) = wait_for(&alice_events, deadline, "alice: bob connected", |_| true);
    assert_eq!(
        notification,
        Notification::PeerConnected {
            peer: bob_id,
            addr: bob.local_addr(),
            direction: Direction::Outbound,
        }
    );
    let (notification, _) = wait_for(
        &bob_events,
        deadline,
        "bob: alice connected",
        is_connected_to(alice_id),
    );
    assert!(matches!(
        notification,
        Notification::PeerConnected {
            direction: Direction::Inbound,
            ..
        }
    ));

    // Both sides ping every 200 ms; run alice until both have had two pongs
    // back. The Ping quota's burst is two: a third would wait 5 s for its
    // token (`PING_QUOTA`, 2 per 10 s).
    let bob_handle = bob.handle().clone();
    let pinged = alice
        .run_until(
            |alice| {
                alice.node().counters().pongs_received >= 2
                    && query(&bob_handle, |bob| bob.node().counters().pongs_received) >= 2
            },
            deadline,
        )
        .unwrap();
    assert!(
        pinged,
        "pongs did not arrive in time: alice {:?}",
        alice.node().counters()
    );
    assert_eq!(alice.node().peer_count(), 1);
    assert_eq!(query(&bob_handle, |bob| bob.node().peers().len()), 1);
    assert!(
        alice_events
            .try_iter()
            .all(|notification| !matches!(notification, Notification::PeerDisconnected { .. })),
        "the link stayed up"
    );

    // A graceful stop flushes bob's Goodbye before closing: alice hears the
    // reason, not just a lost connection.
    bob.stop().unwrap();
    let gone = alice
        .run_until(|alice| alice.node().peer_count() == 0, deadline)
        .unwrap();
    assert!(gone, "alice did not see bob leave");
    let (_, _) = wait_for(&alice_events, deadline, "alice: bob said goodbye", |n| {
        *n == Notification::PeerDisconnected {
            peer: bob_id,
            reason: DisconnectReason::RemoteGoodbye(GoodbyeReason::ClientShutdown),
        }
    });
}

/// A dial to a port nobody listens on fails, and the node says so.
#[test]
fn a_dial_to_a_closed_port_fails() {
    let deadline = Instant::now() + TEST_TIMEOUT;
    // A port that was free a moment ago and has nothing listening now.
    let closed = std::net::TcpListener::bind(loopback())
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let (mut alice, alice_events) = bind(8, config(1));
    alice.command(Command::Dial {
        addr: closed,
        peer: None,
    });
    let mut seen = Vec::new();
    let failed = alice
        .run_until(
            |_| {
                seen.extend(alice_events.try_iter());
                !seen.is_empty()
            },
            deadline,
        )
        .unwrap();
    assert!(failed, "no notification in time");
    assert!(
        matches!(&seen[0], Notification::DialFailed { addr, .. } if *addr == closed),
        "{seen:?}"
    );
    assert_eq!(alice.node().counters().dials_failed, 1);
    assert_eq!(alice.connection_count(), 0, "the failed socket is gone");
}

/// (ii) A node on another network is refused, with the reason on both sides.
#[test]
fn a_wrong_network_is_refused_on_both_sides() {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let (mut alice, alice_events) = bind(3, config(1));
    let (bob, bob_events) = spawn(4, config(2));

    alice.command(Command::Dial {
        addr: bob.local_addr(),
        peer: Some(bob.peer_id()),
    });
    let mut alice_seen = Vec::new();
    let refused = alice
        .run_until(
            |_| {
                alice_seen.extend(alice_events.try_iter());
                alice_seen.iter().any(|notification| {
                    matches!(notification, Notification::ConnectionRefused { .. })
                })
            },
            deadline,
        )
        .unwrap();
    assert!(
        refused,
        "alice did not refuse bob in time; saw {alice_seen:?}"
    );
    let wrong_network = |ours, theirs| {
        move |notification: &Notification| {
            matches!(
                notification,
                Notification::ConnectionRefused {
                    reason: RefuseReason::WrongNetwork { ours: o, theirs: t },
                    ..
                } if *o == ours && *t == theirs
            )
        }
    };
    assert!(
        alice_seen.iter().any(wrong_network(1, 2)),
        "alice refused for the wrong reason: {alice_seen:?}"
    );
    let (_, bob_seen) = wait_for(
        &bob_events,
        deadline,
        "bob: refused alice for her network",
        wrong_network(2, 1),
    );
    for seen in alice_seen.iter().chain(&bob_seen) {
        assert!(
            !matches!(seen, Notification::PeerConnected { .. }),
            "nobody may count the other as a peer: {seen:?}"
        );
    }

    let alice_counters = alice.node().counters().clone();
    let bob_counters = query(bob.handle(), |bob| bob.node().counters().clone());
    assert_eq!(alice_counters.refused_wrong_network, 1);
    assert_eq!(bob_counters.refused_wrong_network, 1);
    assert!(
        alice_counters.goodbyes_sent + bob_counters.goodbyes_sent >= 1,
        "someone says Goodbye(irrelevant network): alice {alice_counters:?}, bob {bob_counters:?}"
    );
    assert_eq!(alice.node().peer_count(), 0);
    assert_eq!(query(bob.handle(), |bob| bob.node().peer_count()), 0);
}

/// Deterministic pseudo-random bytes (xorshift64), so a failure replays.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Opens a raw socket to `addr`, writes `bytes`, and returns once the node
/// has closed the connection (end of stream or reset). Panics at `deadline`.
fn expect_closed_after(addr: SocketAddr, bytes: &[u8], deadline: Instant, what: &str) {
    let mut stream = TcpStream::connect(addr).expect("raw connect");
    stream
        .set_write_timeout(Some(deadline.saturating_duration_since(Instant::now())))
        .unwrap();
    match stream.write_all(bytes) {
        Ok(()) => {}
        // The node may close while we are still writing: that is the point.
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) => {}
        Err(error) => panic!("{what}: writing failed: {error}"),
    }
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: the node did not close the connection in time"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return,
            // A handshake reply may come before the refusal; keep reading.
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset) => return,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the node did not close the connection in time")
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => panic!("{what}: reading failed: {error}"),
        }
    }
}

/// (iii) Garbage and an oversize length prefix get their sockets closed,
/// while an honest peer stays connected and keeps exchanging pings.
#[test]
fn hostile_bytes_close_their_socket_and_spare_an_honest_peer() {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let (server, server_events) = spawn(5, config(1));
    let (mut honest, honest_events) = bind(6, config(1));
    let (server_id, honest_id) = (server.peer_id(), honest.peer_id());
    honest.command(Command::Dial {
        addr: server.local_addr(),
        peer: Some(server_id),
    });
    assert!(honest
        .run_until(|honest| honest.node().is_connected(&server_id), deadline)
        .unwrap());
    wait_for(
        &server_events,
        deadline,
        "server: honest peer connected",
        is_connected_to(honest_id),
    );

    // Each hostile connection gets a few seconds: the node must refuse at
    // once, not wait for its 10 s handshake timeout.
    let hostile_deadline = || deadline.min(Instant::now() + Duration::from_secs(5));

    // 70,000 random bytes: the first frame is complete (its length is at most
    // 65,535) and cannot be a valid message 1 unless it is exactly 32 bytes.
    let garbage = junk(0x5eed_1234_abcd_0001, 70_000);
    let declared = u16::from_be_bytes([garbage[0], garbage[1]]);
    assert_ne!(
        declared, 32,
        "pick another seed: this one could pass as message 1"
    );
    expect_closed_after(server.local_addr(), &garbage, hostile_deadline(), "garbage");

    // The largest length prefix, far beyond any handshake message, then junk.
    let mut oversize = vec![0xff, 0xff];
    oversize.extend(junk(7, 65_535 + 100));
    expect_closed_after(
        server.local_addr(),
        &oversize,
        hostile_deadline(),
        "oversize prefix",
    );

    // A message 1 too short to hold an ephemeral key.
    let short = [0x00, 0x05, 1, 2, 3, 4, 5];
    expect_closed_after(
        server.local_addr(),
        &short,
        hostile_deadline(),
        "short message 1",
    );

    // The honest peer is still there and the link still carries pings.
    let pongs_before = honest.node().counters().pongs_received;
    assert!(honest
        .run_until(
            |honest| honest.node().counters().pongs_received >= pongs_before + 2,
            deadline
        )
        .unwrap());
    assert!(honest.node().is_connected(&server_id));
    assert!(query(server.handle(), move |server| server
        .node()
        .is_connected(&honest_id)));
    let disconnections: Vec<Notification> = honest_events
        .try_iter()
        .filter(|notification| matches!(notification, Notification::PeerDisconnected { .. }))
        .collect();
    assert!(disconnections.is_empty(), "{disconnections:?}");

    let counters = query(server.handle(), |server| server.node().counters().clone());
    assert_eq!(counters.handshakes_failed, 3, "{counters:?}");
    assert_eq!(counters.handshakes_completed, 1, "{counters:?}");
    assert_eq!(
        query(server.handle(), |server| server.node().peer_count()),
        1
    );
}
