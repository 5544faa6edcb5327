//! `meshsync bench handshakes`: how close the driver gets to the core's limit.
//!
//! # Design
//! Both measurements run the same cycle, `count` times: A dials B (expecting
//! B's identity), the handshake completes (a handshake is done when *both*
//! sides have notified `PeerConnected`), then A says Goodbye and both sides
//! see `PeerDisconnected`, so the next cycle starts from scratch with a fresh
//! connection.
//! - In memory: two [`Node`]s on one thread, each one's `Action::Send` bytes
//!   handed straight to the other as `Input::BytesReceived`. No sockets, no
//!   syscalls, no threads: the limit set by the cryptography and the core.
//! - Over loopback TCP: one listening [`Driver`] and `parallel` dialling
//!   drivers, each on its own thread, coordinated through their notification
//!   channels. With `parallel > 1` several handshakes are in flight at once.
//!
//! The report is handshakes per second for each and the ratio TCP / memory.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Select};
use meshsync_core::io::{GoodbyeReason, Notification};
use meshsync_core::{
    Action, Command, Config, ConnId, Identity, Input, Instant, Node, Origin, PeerId,
};

use crate::driver::{Driver, RunningDriver};

/// How long one TCP cycle may take before the benchmark gives up.
pub const CYCLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The figures of one run.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeReport {
    /// Cycles run in each measurement.
    pub count: u64,
    /// Dialling drivers in the TCP measurement.
    pub parallel: usize,
    /// Time of the in-memory measurement.
    pub memory_elapsed: Duration,
    /// Time of the TCP measurement.
    pub tcp_elapsed: Duration,
}

impl HandshakeReport {
    /// Handshakes per second between two nodes wired in memory.
    pub fn memory_per_second(&self) -> f64 {
        self.count as f64 / self.memory_elapsed.as_secs_f64()
    }

    /// Handshakes per second over loopback TCP.
    pub fn tcp_per_second(&self) -> f64 {
        self.count as f64 / self.tcp_elapsed.as_secs_f64()
    }
}

impl fmt::Display for HandshakeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = self.memory_per_second();
        let tcp = self.tcp_per_second();
        writeln!(
            f,
            "handshakes (connect + goodbye cycles, {} each):",
            self.count
        )?;
        writeln!(
            f,
            "  (a) in memory, one thread:          {memory:>9.0} /s  ({:.1} µs each)",
            1e6 / memory
        )?;
        writeln!(
            f,
            "  (b) loopback TCP, {} dialler(s):     {tcp:>9.0} /s  ({:.1} µs each)",
            self.parallel,
            1e6 / tcp
        )?;
        write!(f, "  ratio (b)/(a): {:.2}", tcp / memory)
    }
}

/// Runs both measurements.
pub fn handshakes(count: u64, parallel: usize) -> io::Result<HandshakeReport> {
    assert!(
        count > 0 && parallel > 0,
        "count and parallel must be positive"
    );
    let memory_elapsed = memory_handshakes(count);
    let tcp_elapsed = tcp_handshakes(count, parallel)?;
    Ok(HandshakeReport {
        count,
        parallel,
        memory_elapsed,
        tcp_elapsed,
    })
}

/// Seeds for benchmark nodes: reproducible, and distinct per node.
fn bench_seed(index: u8) -> [u8; 32] {
    [index; 32]
}

/// Two nodes wired back to back in memory.
struct MemoryPair {
    nodes: [Node; 2],
    /// The connection id each node uses for the current link, if any.
    links: [Option<ConnId>; 2],
    next_conn: u64,
    origin: StdInstant,
    /// Inputs not yet delivered: (node, input).
    queue: VecDeque<(usize, Input)>,
    connected: [bool; 2],
    disconnected: [bool; 2],
}

const MEMORY_ADDRS: [SocketAddr; 2] = [
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9000),
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 9000),
];

impl MemoryPair {
    fn new() -> MemoryPair {
        let node = |index: u8| {
            let mut config = Config::new(1);
            config.listen_port = 9000;
            Node::new(
                config,
                Identity::from_seed(u64::from(index)),
                bench_seed(index),
            )
        };
        MemoryPair {
            nodes: [node(0), node(1)],
            links: [None, None],
            next_conn: 1,
            origin: StdInstant::now(),
            queue: VecDeque::new(),
            connected: [false; 2],
            disconnected: [false; 2],
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Feeds every queued input and what it leads to, until quiet.
    fn run(&mut self) {
        while let Some((index, input)) = self.queue.pop_front() {
            let now = self.now();
            self.nodes[index].handle(now, input);
            while let Some(action) = self.nodes[index].poll_action() {
                self.execute(index, action);
            }
        }
    }

    fn execute(&mut self, index: usize, action: Action) {
        let other = 1 - index;
        match action {
            Action::Dial { dial, .. } => {
                let dialler = ConnId(self.next_conn);
                let listener = ConnId(self.next_conn + 1);
                self.next_conn += 2;
                self.links[index] = Some(dialler);
                self.links[other] = Some(listener);
                self.queue.push_back((
                    index,
                    Input::ConnectionOpened {
                        conn: dialler,
                        remote: MEMORY_ADDRS[other],
                        origin: Origin::Dialed(dial),
                    },
                ));
                self.queue.push_back((
                    other,
                    Input::ConnectionOpened {
                        conn: listener,
                        remote: MEMORY_ADDRS[index],
                        origin: Origin::Accepted,
                    },
                ));
            }
            Action::CancelDial { .. } => {}
            Action::Send { conn, bytes } => {
                if self.links[index] == Some(conn) {
                    if let Some(remote) = self.links[other] {
                        self.queue.push_back((
                            other,
                            Input::BytesReceived {
                                conn: remote,
                                bytes,
                            },
                        ));
                    }
                }
            }
            Action::Close { conn } => {
                if self.links[index] == Some(conn) {
                    self.links[index] = None;
                    if let Some(remote) = self.links[other] {
                        self.queue.push_back((
                            other,
                            Input::ConnectionClosed {
                                conn: remote,
                                cause: meshsync_core::io::CloseCause::RemoteClosed,
                            },
                        ));
                    }
                }
            }
            Action::Notify(Notification::PeerConnected { .. }) => self.connected[index] = true,
            Action::Notify(Notification::PeerDisconnected { .. }) => {
                self.disconnected[index] = true
            }
            Action::Notify(other) => panic!("in-memory benchmark: unexpected {other:?}"),
        }
    }
}

/// Runs `count` in-memory cycles and returns how long they took.
fn memory_handshakes(count: u64) -> Duration {
    let mut pair = MemoryPair::new();
    let target = pair.nodes[1].peer_id();
    let source = pair.nodes[0].peer_id();
    let start = StdInstant::now();
    for _ in 0..count {
        pair.connected = [false; 2];
        pair.disconnected = [false; 2];
        pair.queue.push_back((
            0,
            Input::Command(Command::Dial {
                addr: MEMORY_ADDRS[1],
                peer: Some(target),
            }),
        ));
        pair.run();
        assert_eq!(pair.connected, [true; 2], "in-memory handshake completes");
        pair.queue.push_back((
            0,
            Input::Command(Command::Disconnect {
                peer: target,
                reason: GoodbyeReason::ClientShutdown,
            }),
        ));
        pair.run();
        assert_eq!(pair.disconnected, [true; 2], "in-memory goodbye completes");
        assert!(!pair.nodes[1].is_connected(&source));
    }
    start.elapsed()
}

/// Where one dialler is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cycle {
    Connecting {
        dialler_saw: bool,
        listener_saw: bool,
    },
    Disconnecting {
        dialler_saw: bool,
        listener_saw: bool,
    },
    Idle,
}

/// Runs `count` cycles over loopback TCP with `parallel` diallers and
/// returns how long they took.
fn tcp_handshakes(count: u64, parallel: usize) -> io::Result<Duration> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut listener = Driver::bind(
        loopback,
        Config::new(1),
        Identity::from_seed(100),
        bench_seed(100),
    )?;
    let listener_events = listener.subscribe();
    let listener = listener.spawn("bench-listener")?;
    let target = listener.peer_id();
    let target_addr = listener.local_addr();

    let mut diallers: Vec<(RunningDriver, Receiver<Notification>)> = Vec::new();
    for index in 0..parallel {
        let seed = 101 + index as u64;
        let mut driver = Driver::bind(
            loopback,
            Config::new(1),
            Identity::from_seed(seed),
            bench_seed(seed as u8),
        )?;
        let events = driver.subscribe();
        diallers.push((driver.spawn(&format!("bench-dialler-{index}"))?, events));
    }
    let dial = Command::Dial {
        addr: target_addr,
        peer: Some(target),
    };
    let goodbye = Command::Disconnect {
        peer: target,
        reason: GoodbyeReason::ClientShutdown,
    };
    let broken = |what: &str| io::Error::other(format!("TCP benchmark: {what}"));
    let mut states = vec![Cycle::Idle; parallel];
    let mut started = 0u64;
    let mut finished = 0u64;
    let start = StdInstant::now();
    for (index, (dialler, _)) in diallers.iter().enumerate() {
        if started < count {
            dialler
                .handle()
                .command(dial.clone())
                .map_err(|_| broken("dialler stopped"))?;
            states[index] = Cycle::Connecting {
                dialler_saw: false,
                listener_saw: false,
            };
            started += 1;
        }
    }
    let dialler_ids: Vec<PeerId> = diallers
        .iter()
        .map(|(driver, _)| driver.peer_id())
        .collect();
    while finished < count {
        let mut select = Select::new();
        select.recv(&listener_events);
        for (_, events) in &diallers {
            select.recv(events);
        }
        let operation = select
            .select_timeout(CYCLE_TIMEOUT)
            .map_err(|_| broken("a cycle timed out"))?;
        let source = operation.index();
        let notification = if source == 0 {
            operation.recv(&listener_events)
        } else {
            operation.recv(&diallers[source - 1].1)
        }
        .map_err(|_| broken("a driver stopped"))?;
        // Which dialler the notification is about, and whether the dialler side said it.
        let (index, from_dialler) = if source == 0 {
            let peer = match &notification {
                Notification::PeerConnected { peer, .. }
                | Notification::PeerDisconnected { peer, .. } => *peer,
                other => return Err(broken(&format!("listener: unexpected {other:?}"))),
            };
            let index = dialler_ids
                .iter()
                .position(|id| *id == peer)
                .ok_or_else(|| broken("listener heard of an unknown peer"))?;
            (index, false)
        } else {
            (source - 1, true)
        };
        let mark = |saw_dialler: &mut bool, saw_listener: &mut bool| {
            if from_dialler {
                *saw_dialler = true;
            } else {
                *saw_listener = true;
            }
        };
        match (&mut states[index], &notification) {
            (
                Cycle::Connecting {
                    dialler_saw,
                    listener_saw,
                },
                Notification::PeerConnected { .. },
            ) => {
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    states[index] = Cycle::Disconnecting {
                        dialler_saw: false,
                        listener_saw: false,
                    };
                    diallers[index]
                        .0
                        .handle()
                        .command(goodbye.clone())
                        .map_err(|_| broken("dialler stopped"))?;
                }
            }
            (
                Cycle::Disconnecting {
                    dialler_saw,
                    listener_saw,
                },
                Notification::PeerDisconnected { .. },
            ) => {
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    finished += 1;
                    if started < count {
                        started += 1;
                        states[index] = Cycle::Connecting {
                            dialler_saw: false,
                            listener_saw: false,
                        };
                        diallers[index]
                            .0
                            .handle()
                            .command(dial.clone())
                            .map_err(|_| broken("dialler stopped"))?;
                    } else {
                        states[index] = Cycle::Idle;
                    }
                }
            }
            (state, notification) => {
                return Err(broken(&format!(
                    "dialler {index} in {state:?}: unexpected {notification:?}"
                )))
            }
        }
    }
    let elapsed = start.elapsed();
    for (dialler, _) in diallers {
        dialler.stop()?;
    }
    listener.stop()?;
    Ok(elapsed)
}
