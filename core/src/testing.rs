//! An in-memory network of [`Node`]s, for tests, benchmarks and fuzzing.
//!
//! # Design
//! Nodes are joined by perfect links: no latency, no loss. Everything a node
//! emits goes into one FIFO of deliveries, so a test can run the network until
//! it is quiet ([`MemoryNet::drain`]) or step it one delivery at a time and
//! tamper with what is in flight (the `node_inputs` fuzz target does). Node `i`
//! has address `10.0.0.(i+1):9000`. This is not the simulator: `meshsync-sim`
//! models latency, bandwidth and faults; this is the smallest harness that
//! carries bytes between real nodes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use crate::identity::Identity;
use crate::io::{Action, CloseCause, Command, ConnId, Input, Notification, Origin};
use crate::node::{Config, Node};
use crate::time::{Duration, Instant};

/// Something in flight between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Bytes for `conn` at node `to`.
    Bytes {
        /// Receiving node.
        to: usize,
        /// Its connection id.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The remote end of `conn` at node `to` closed.
    Closed {
        /// Receiving node.
        to: usize,
        /// Its connection id.
        conn: ConnId,
    },
    /// A job node `to` asked for is done (`Input::WorkDone`).
    WorkDone {
        /// The node.
        to: usize,
        /// The job.
        id: crate::work::WorkId,
        /// Its output.
        output: crate::work::WorkOutput,
    },
    /// A job node `to` asked for failed to run (`Input::WorkFailed`).
    WorkFailed {
        /// The node.
        to: usize,
        /// The job.
        id: crate::work::WorkId,
    },
    /// Node `to`'s persist batch is durable (`Input::Persisted`).
    Persisted {
        /// The node.
        to: usize,
        /// The batch.
        id: u64,
    },
    /// Node `to`'s read of stored history is done (`Input::BlocksRead`).
    BlocksRead {
        /// The node.
        to: usize,
        /// The read.
        id: u64,
        /// What it found.
        blocks: Vec<crate::chain::SignedBlock>,
        /// Whether that is all the range holds.
        complete: bool,
    },
    /// Node `to`'s bytes sent on `conn` were written (`Input::BytesWritten`).
    Written {
        /// The node that sent them.
        to: usize,
        /// Its connection id.
        conn: ConnId,
        /// How many.
        bytes: usize,
    },
}

/// Bytes a slow reader has not taken yet: (sender, its conn, receiver, its conn, bytes).
type HeldSend = (usize, ConnId, usize, ConnId, Vec<u8>);

/// Nodes joined by in-memory links.
pub struct MemoryNet {
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    /// The current time.
    pub now: Instant,
    /// Everything each node notified, in order.
    pub notifications: Vec<Vec<Notification>>,
    /// When set, bytes are delivered in pieces of at most this size.
    pub piece_bytes: Option<usize>,
    /// Nodes whose address refuses connections.
    pub down: Vec<usize>,
    /// Deliveries not yet made, oldest first.
    pub in_flight: VecDeque<Delivery>,
    /// (node, conn) to (remote node, remote conn), for open connections.
    pub links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Nodes that read nothing: bytes sent to them are neither delivered
    /// nor reported written until [`MemoryNet::set_slow_reader`] releases them.
    slow_readers: BTreeSet<usize>,
    held: Vec<HeldSend>,
    /// Roots each node's persist batches stored, in order.
    pub persisted: Vec<Vec<crate::chain::Root>>,
    /// Each node's disk as its persist batches left it: blocks by root,
    /// and the finalized root of the last batch (what `Action::ReadBlocks`
    /// reads from).
    pub disks: Vec<(
        BTreeMap<crate::chain::Root, crate::chain::SignedBlock>,
        crate::chain::Root,
    )>,
    /// Nodes whose persist batches wait (a slow disk) until released.
    persist_held: BTreeSet<usize>,
    persist_waiting: Vec<(usize, crate::work::PersistBatch)>,
    /// Each node's last peer store snapshot (`Action::PersistPeers`), as
    /// a driver's store would hold it.
    pub known_peers: Vec<Option<crate::peerstore::KnownPeers>>,
    /// For each node, how many of its next jobs fail to run, as a bug in a
    /// driver's worker would (`Input::WorkFailed`).
    pub work_failing: Vec<u32>,
    /// Bytes are fed with [`Node::handle_bytes_received`] instead of
    /// `handle(.., Input::BytesReceived { .. })`, as a driver that reads
    /// into a buffer of its own does.
    pub borrowed_reads: bool,
    next_conn: u64,
}

/// The address of node `index`.
pub fn address_of(index: usize) -> SocketAddr {
    let index = u8::try_from(index + 1).expect("at most 254 nodes in a MemoryNet");
    SocketAddr::from(([10, 0, 0, index], 9000))
}

fn index_of(address: SocketAddr) -> Option<usize> {
    match address {
        SocketAddr::V4(v4) if v4.port() == 9000 => (v4.ip().octets()[3] as usize).checked_sub(1),
        _ => None,
    }
}

impl MemoryNet {
    /// Nodes with these configs; node `i` has `Identity::from_seed(i)` and seed `[i; 32]`.
    pub fn new(configs: Vec<Config>) -> MemoryNet {
        let nodes: Vec<Node> = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| Node::new(config, Identity::from_seed(i as u64), [i as u8; 32]))
            .collect();
        let count = nodes.len();
        MemoryNet {
            nodes,
            now: Instant::ZERO,
            notifications: vec![Vec::new(); count],
            piece_bytes: None,
            down: Vec::new(),
            in_flight: VecDeque::new(),
            links: BTreeMap::new(),
            slow_readers: BTreeSet::new(),
            held: Vec::new(),
            persisted: vec![Vec::new(); count],
            disks: vec![(BTreeMap::new(), crate::chain::Root([0; 32])); count],
            persist_held: BTreeSet::new(),
            persist_waiting: Vec::new(),
            known_peers: vec![None; count],
            work_failing: vec![0; count],
            borrowed_reads: false,
            next_conn: 0,
        }
    }

    /// `count` nodes with default configs on network 1.
    pub fn with_nodes(count: usize) -> MemoryNet {
        // One devnet derivation for all of them.
        MemoryNet::new(vec![Config::new(1); count])
    }

    /// Node `from` dials node `to`, expecting `peer` if given; runs until quiet.
    pub fn dial(&mut self, from: usize, to: usize, peer: Option<crate::identity::PeerId>) {
        let addr = address_of(to);
        self.handle(from, Input::Command(Command::Dial { addr, peer }));
        self.drain();
    }

    /// Feeds `input` to node `index` and collects its actions (without delivering them).
    pub fn handle(&mut self, index: usize, input: Input) {
        self.nodes[index].handle(self.now, input);
        self.collect(index);
    }

    /// Carries out deliveries until nothing is in flight. Panics after
    /// `DELIVERIES_MAX` steps: a network that never goes quiet is a bug.
    pub fn drain(&mut self) {
        const DELIVERIES_MAX: usize = 1_000_000;
        for _ in 0..DELIVERIES_MAX {
            if !self.step() {
                return;
            }
        }
        panic!("network did not go quiet after {DELIVERIES_MAX} deliveries");
    }

    /// Makes node `node` a reader that takes nothing (`slow`), or lets it
    /// read again and delivers what was held for it, in order.
    pub fn set_slow_reader(&mut self, node: usize, slow: bool) {
        if slow {
            self.slow_readers.insert(node);
            return;
        }
        self.slow_readers.remove(&node);
        let (released, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, _, to, _, _)| *to == node);
        self.held = kept;
        for (from, conn, to, theirs, bytes) in released {
            if self.links.contains_key(&(from, conn)) {
                self.send(from, conn, to, theirs, bytes);
            }
        }
    }

    /// Holds node `node`'s persist batches (`hold`), or completes every
    /// batch held so far, in order, and stops holding.
    pub fn hold_persist(&mut self, node: usize, hold: bool) {
        if hold {
            self.persist_held.insert(node);
            return;
        }
        self.persist_held.remove(&node);
        let (released, kept) = std::mem::take(&mut self.persist_waiting)
            .into_iter()
            .partition(|(index, _)| *index == node);
        self.persist_waiting = kept;
        for (index, batch) in released {
            self.complete_persist(index, batch);
        }
    }

    fn complete_persist(&mut self, index: usize, batch: crate::work::PersistBatch) {
        self.persisted[index].extend(batch.blocks.iter().map(|(root, _)| *root));
        let (disk, finalized) = &mut self.disks[index];
        for root in &batch.delete {
            disk.remove(root);
        }
        disk.extend(batch.blocks.iter().cloned());
        *finalized = batch.finalized.root;
        self.in_flight.push_back(Delivery::Persisted {
            to: index,
            id: batch.id,
        });
    }

    /// Bytes held for slow readers.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().map(|(.., bytes)| bytes.len()).sum()
    }

    fn send(&mut self, from: usize, conn: ConnId, to: usize, theirs: ConnId, bytes: Vec<u8>) {
        let written = bytes.len();
        self.in_flight.push_back(Delivery::Bytes {
            to,
            conn: theirs,
            bytes,
        });
        self.in_flight.push_back(Delivery::Written {
            to: from,
            conn,
            bytes: written,
        });
    }

    /// Makes the oldest delivery; false if nothing was in flight.
    pub fn step(&mut self) -> bool {
        let Some(delivery) = self.in_flight.pop_front() else {
            return false;
        };
        match delivery {
            Delivery::Bytes { to, conn, bytes } => {
                if self.links.contains_key(&(to, conn)) {
                    let piece = self.piece_bytes.unwrap_or(bytes.len()).max(1);
                    for chunk in bytes.chunks(piece) {
                        if self.borrowed_reads {
                            self.nodes[to].handle_bytes_received(self.now, conn, chunk);
                            self.collect(to);
                        } else {
                            self.handle(
                                to,
                                Input::BytesReceived {
                                    conn,
                                    bytes: chunk.to_vec(),
                                },
                            );
                        }
                    }
                }
            }
            Delivery::WorkDone { to, id, output } => {
                self.handle(to, Input::WorkDone { id, output });
            }
            Delivery::WorkFailed { to, id } => self.handle(to, Input::WorkFailed { id }),
            Delivery::Persisted { to, id } => {
                self.handle(to, Input::Persisted { id });
            }
            Delivery::BlocksRead {
                to,
                id,
                blocks,
                complete,
            } => self.handle(
                to,
                Input::BlocksRead {
                    id,
                    blocks,
                    complete,
                },
            ),
            Delivery::Written { to, conn, bytes } => {
                if self.links.contains_key(&(to, conn)) {
                    self.handle(to, Input::BytesWritten { conn, bytes });
                }
            }
            Delivery::Closed { to, conn } => {
                if self.links.remove(&(to, conn)).is_some() {
                    let cause = CloseCause::RemoteClosed;
                    self.handle(to, Input::ConnectionClosed { conn, cause });
                }
            }
        }
        true
    }

    /// Advances time to `until`, firing every node's timers on the way and
    /// delivering what they send.
    pub fn advance_to(&mut self, until: Instant) {
        loop {
            self.drain();
            let next = (0..self.nodes.len())
                .filter_map(|i| self.nodes[i].poll_timeout().map(|at| (at, i)))
                .min();
            match next {
                Some((at, index)) if at <= until => {
                    self.now = self.now.max(at);
                    self.handle(index, Input::Timeout);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Advances time by `duration`; see [`MemoryNet::advance_to`].
    pub fn advance(&mut self, duration: Duration) {
        self.advance_to(self.now + duration);
    }

    /// Carries out `actions` as if node `index` had just produced them (for
    /// harnesses that poll a node directly).
    pub fn requeue(&mut self, index: usize, actions: Vec<Action>) {
        for action in actions {
            self.apply(index, action);
        }
        self.collect(index);
    }

    /// Opens an inbound connection at node `index` from an address that is
    /// no node, for a test to write raw bytes into.
    pub fn raw_connection(&mut self, index: usize) -> ConnId {
        self.raw_connection_from(index, SocketAddr::from(([192, 0, 2, 1], 40_000)))
    }

    /// Opens an inbound connection at node `index` from `remote`, which is
    /// no node, for a test to write raw bytes into (or never write at all).
    pub fn raw_connection_from(&mut self, index: usize, remote: SocketAddr) -> ConnId {
        let conn = self.fresh_conn();
        self.handle(
            index,
            Input::ConnectionOpened {
                conn,
                remote,
                origin: Origin::Accepted,
            },
        );
        conn
    }

    /// Kills node `index` as a killed process dies (no Goodbye; its peers
    /// see its connections close) and starts it again from `config` with
    /// the same identity and a new `seed`. Bytes in flight to it are lost.
    pub fn restart(&mut self, index: usize, config: Config, seed: [u8; 32]) {
        // Its ends go at once; each peer's end closes when the news arrives.
        let ends: Vec<((usize, ConnId), (usize, ConnId))> = self
            .links
            .iter()
            .filter(|((from, _), _)| *from == index)
            .map(|(ours, theirs)| (*ours, *theirs))
            .collect();
        for (ours, (to, theirs)) in ends {
            self.links.remove(&ours);
            self.in_flight
                .push_back(Delivery::Closed { to, conn: theirs });
        }
        self.held
            .retain(|(from, _, to, _, _)| *from != index && *to != index);
        self.persist_waiting.retain(|(node, _)| *node != index);
        self.in_flight.retain(|delivery| match delivery {
            Delivery::Bytes { to, .. }
            | Delivery::WorkDone { to, .. }
            | Delivery::WorkFailed { to, .. }
            | Delivery::Persisted { to, .. }
            | Delivery::BlocksRead { to, .. }
            | Delivery::Written { to, .. }
            | Delivery::Closed { to, .. } => *to != index,
        });
        self.nodes[index] = Node::new(config, Identity::from_seed(index as u64), seed);
        self.collect(index);
    }

    /// Cuts the link of node `at`'s connection `conn`, if open: both ends
    /// see `ConnectionClosed` with `cause` (a reset or a remote close).
    pub fn cut(&mut self, at: usize, conn: ConnId, cause: CloseCause) {
        let Some((remote, remote_conn)) = self.links.remove(&(at, conn)) else {
            return;
        };
        self.links.remove(&(remote, remote_conn));
        let closed = |conn| Input::ConnectionClosed {
            conn,
            cause: cause.clone(),
        };
        self.handle(at, closed(conn));
        self.handle(remote, closed(remote_conn));
    }

    /// Whether nodes `a` and `b` both count each other as peers.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.nodes[a].is_connected(&self.nodes[b].peer_id())
            && self.nodes[b].is_connected(&self.nodes[a].peer_id())
    }

    fn fresh_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        conn
    }

    fn collect(&mut self, index: usize) {
        while let Some(action) = self.nodes[index].poll_action() {
            self.apply(index, action);
        }
    }

    fn apply(&mut self, index: usize, action: Action) {
        match action {
            Action::Dial { dial, addr } => {
                let target =
                    index_of(addr).filter(|t| *t < self.nodes.len() && !self.down.contains(t));
                let Some(target) = target else {
                    let error = "connection refused".to_string();
                    self.nodes[index].handle(self.now, Input::DialFailed { dial, error });
                    return;
                };
                let (ours, theirs) = (self.fresh_conn(), self.fresh_conn());
                self.links.insert((index, ours), (target, theirs));
                self.links.insert((target, theirs), (index, ours));
                let remote = address_of(index);
                self.handle(
                    target,
                    Input::ConnectionOpened {
                        conn: theirs,
                        remote,
                        origin: Origin::Accepted,
                    },
                );
                let origin = Origin::Dialed(dial);
                self.nodes[index].handle(
                    self.now,
                    Input::ConnectionOpened {
                        conn: ours,
                        remote: addr,
                        origin,
                    },
                );
            }
            Action::Send { conn, bytes } => {
                if let Some(&(to, theirs)) = self.links.get(&(index, conn)) {
                    if self.slow_readers.contains(&to) {
                        self.held.push((index, conn, to, theirs, bytes));
                    } else {
                        self.send(index, conn, to, theirs, bytes);
                    }
                }
            }
            Action::Close { conn } => {
                if let Some((to, theirs)) = self.links.remove(&(index, conn)) {
                    self.in_flight
                        .push_back(Delivery::Closed { to, conn: theirs });
                }
            }
            Action::CancelDial { .. } => {}
            Action::Work { id, .. } if self.work_failing[index] > 0 => {
                self.work_failing[index] -= 1;
                self.in_flight
                    .push_back(Delivery::WorkFailed { to: index, id });
            }
            Action::Work { id, job } => {
                // Run at once; the answer queues behind what is in flight.
                let output = job.run();
                self.in_flight.push_back(Delivery::WorkDone {
                    to: index,
                    id,
                    output,
                });
            }
            Action::Persist(batch) => {
                if self.persist_held.contains(&index) {
                    self.persist_waiting.push((index, batch));
                } else {
                    self.complete_persist(index, batch);
                }
            }
            Action::ReadBlocks(read) => {
                let (disk, finalized) = &self.disks[index];
                let genesis = self.nodes[index].config().chain.genesis.root();
                let (blocks, complete) =
                    read.answer_from(*finalized, genesis, |root| disk.get(root));
                self.in_flight.push_back(Delivery::BlocksRead {
                    to: index,
                    id: read.id,
                    blocks,
                    complete,
                });
            }
            Action::PersistPeers(known) => self.known_peers[index] = Some(known),
            Action::Notify(notification) => self.notifications[index].push(notification),
        }
    }
}
