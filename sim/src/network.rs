//! The simulated network: who listens where, open connections, and which
//! traffic gets through.
//!
//! # Design
//! A connection has two endpoints, one per node, each with its own [`ConnId`]
//! (ids come from one counter, so they are unique in the whole world and
//! never reused, as the core's contract asks of a driver). An endpoint owns
//! the [`Pipe`] of the bytes it sends, and counts the deliveries on their way
//! to it, so the simulator can tell a quiet connection from a busy one.
//!
//! An endpoint disappears when its node closes it (`Action::Close`) or when
//! the close of its remote is delivered to it; whatever still arrives for a
//! vanished endpoint is dropped, as a closed socket would.
//!
//! Reachability is one question, [`Network::delivers`]. Two faults answer
//! it: a *partition* ([`Network::partition`]: groups that cannot reach each
//! other, either way, until [`Network::heal`]) and a *blackhole*:
//! everything a blackholed node sends (bytes, closes, connection attempts)
//! vanishes, and nobody can connect to it, while what others send to it on
//! open connections still arrives. From outside it looks like a node that
//! went silent. Crashes are the simulator's (a crashed node's endpoints are
//! removed; see [`crate::sim`]).
//!
//! An endpoint also counts the bytes handed to it that have not yet left its
//! node's uplink, so the simulator can close a connection whose send queue
//! outgrows [`PENDING_SEND_BYTES_MAX`], as the driver contract says.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use meshsync_core::io::CloseCause;
use meshsync_core::limits::PENDING_SEND_BYTES_MAX;
use meshsync_core::{ConnId, Instant};

use crate::link::{LinkModel, Pipe};
use crate::types::NodeIndex;

/// Nodes the address plan can name: `10.0.0.1` to `10.255.255.254`.
pub const NODES_MAX: usize = (1 << 24) - 2;
/// First port of the range a dialler's side of a connection appears from.
pub const EPHEMERAL_PORT_FIRST: u16 = 49_152;

/// The address of node `index` listening on `port`: node 0 is `10.0.0.1`.
pub fn node_address(index: NodeIndex, port: u16) -> SocketAddr {
    assert!(
        index.0 < NODES_MAX,
        "node {index} is beyond the address plan"
    );
    // Below 2^24 by the assert, so it fits in the three low octets.
    let host = (index.0 + 1) as u32;
    let ip = Ipv4Addr::from(0x0a00_0000 | host);
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// The address an accepted connection appears to come from: the dialler's IP
/// and an ephemeral port, as a real accept() reports (not its listening port).
pub fn ephemeral_address(listening: SocketAddr, conn: ConnId) -> SocketAddr {
    let range = u64::from(u16::MAX - EPHEMERAL_PORT_FIRST) + 1;
    // Below `range`, so it fits in u16 after the offset.
    let port = EPHEMERAL_PORT_FIRST + (conn.0 % range) as u16;
    SocketAddr::new(listening.ip(), port)
}

/// One node's end of a connection.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The node that owns this end.
    pub node: NodeIndex,
    /// The node at the other end.
    pub remote: NodeIndex,
    /// The other end's id.
    pub remote_conn: ConnId,
    /// Bytes and the close this end sends, in order.
    pub outbound: Pipe,
    /// Deliveries (byte chunks or a close) scheduled towards this end and not yet arrived.
    pub deliveries_pending: u64,
    /// Sends still leaving the node's uplink: (when the last byte leaves, bytes).
    unsent: VecDeque<(Instant, usize)>,
    /// The sum of the bytes in `unsent`.
    unsent_bytes: usize,
    /// When the last send carried to the other end left this one.
    written_last: Instant,
}

impl Endpoint {
    fn new(node: NodeIndex, remote: NodeIndex, remote_conn: ConnId) -> Endpoint {
        Endpoint {
            node,
            remote,
            remote_conn,
            outbound: Pipe::default(),
            deliveries_pending: 0,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            written_last: Instant::ZERO,
        }
    }

    /// Notes `bytes` handed to this end at `now` that leave the uplink by
    /// `departure`. Returns whether more than [`PENDING_SEND_BYTES_MAX`] bytes
    /// are now waiting to leave (the connection must then be given up).
    pub fn queue_outbound(&mut self, now: Instant, departure: Instant, bytes: usize) -> bool {
        while let Some(&(left_at, sent)) = self.unsent.front() {
            if left_at > now {
                break;
            }
            self.unsent.pop_front();
            self.unsent_bytes -= sent;
        }
        if departure > now {
            self.unsent.push_back((departure, bytes));
            self.unsent_bytes += bytes;
        }
        self.unsent_bytes > PENDING_SEND_BYTES_MAX
    }

    /// Bytes handed to this end that have not left the uplink by the last send.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent_bytes
    }

    /// When a send carried to the other end, ready to leave at `ready`,
    /// leaves this end: never before the one carried before it.
    pub fn written_at(&mut self, ready: Instant) -> Instant {
        self.written_last = self.written_last.max(ready);
        self.written_last
    }
}

/// Listeners, connections and reachability.
#[derive(Debug)]
pub struct Network {
    link: LinkModel,
    listeners: BTreeMap<SocketAddr, NodeIndex>,
    endpoints: BTreeMap<ConnId, Endpoint>,
    conn_next: u64,
    blackholed: BTreeSet<NodeIndex>,
    /// While partitioned: each listed node's group. Traffic between two
    /// listed nodes of different groups is lost; unlisted nodes reach everyone.
    partition: BTreeMap<NodeIndex, usize>,
    /// One-way cuts: what a node of the first set sends a node of the
    /// second is lost (see [`Network::cut_one_way`]).
    one_way_cuts: Vec<(BTreeSet<NodeIndex>, BTreeSet<NodeIndex>)>,
    /// Stalled pairs (lower index first): bytes between them arrive no
    /// earlier than the instant (see [`Network::stall`]).
    stalls: BTreeMap<(NodeIndex, NodeIndex), Instant>,
    /// Whether the partition in force holds what crosses it for the heal
    /// instead of losing it (see [`Network::partition_holding`]). One-way
    /// cuts always hold.
    partition_holds: bool,
    /// What was sent across a holding cut, in send order, for the heal.
    held: Vec<Held>,
    held_bytes: usize,
}

/// Bytes or a close sent across a holding cut, waiting for the heal.
#[derive(Clone, Debug)]
pub struct Held {
    /// The sender and its end.
    pub from: NodeIndex,
    /// The sender's end of the connection.
    pub conn: ConnId,
    /// The receiver.
    pub to: NodeIndex,
    /// The receiver's end.
    pub remote_conn: ConnId,
    /// What was sent.
    pub what: HeldWhat,
}

/// What a holding cut kept.
#[derive(Clone, Debug)]
pub enum HeldWhat {
    /// Bytes.
    Bytes(Vec<u8>),
    /// The sender's close, and why.
    Close(CloseCause),
}

/// Bytes held across cuts at most; beyond, more are lost (a sender's
/// kernel would have given up on a connection holding this much).
pub const HELD_BYTES_MAX: usize = 64 * 1024 * 1024;

impl Network {
    /// Like [`Network::partition`], but the cut holds what crosses it, as
    /// TCP does across an outage shorter than its retransmission timeout:
    /// nothing is lost, everything arrives in order after the heal (unless
    /// an end closed meanwhile). A lossy cut (`partition`, what
    /// `partition-heal` models) loses it, and a connection that outlives
    /// the cut then sees a gap in its stream.
    pub fn partition_holding(&mut self, groups: &[Vec<NodeIndex>]) {
        self.partition(groups);
        self.partition_holds = true;
    }

    /// Whether what `from` sends `to` is stopped by a cut that holds it
    /// (not lost to a blackhole or a lossy partition).
    fn holds_across(&self, from: NodeIndex, to: NodeIndex) -> bool {
        if self.blackholed.contains(&from) {
            return false;
        }
        let one_way = self
            .one_way_cuts
            .iter()
            .any(|(senders, receivers)| senders.contains(&from) && receivers.contains(&to));
        one_way || (self.partition_holds && self.is_partitioned(from, to))
    }

    /// Keeps `held` for the heal if a holding cut stops it and there is
    /// room; returns whether it was kept.
    pub fn hold(&mut self, held: Held) -> bool {
        let bytes = match &held.what {
            HeldWhat::Bytes(bytes) => bytes.len(),
            HeldWhat::Close(_) => 0,
        };
        if !self.holds_across(held.from, held.to) || self.held_bytes + bytes > HELD_BYTES_MAX {
            return false;
        }
        self.held_bytes += bytes;
        self.held.push(held);
        true
    }
}

impl Network {
    /// An empty network whose every link follows `link`.
    pub fn new(link: LinkModel) -> Network {
        link.validate();
        Network {
            link,
            listeners: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            conn_next: 1,
            blackholed: BTreeSet::new(),
            partition: BTreeMap::new(),
            one_way_cuts: Vec::new(),
            stalls: BTreeMap::new(),
            partition_holds: false,
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// The model of the link from `from` to `to`.
    pub fn link(&self, _from: NodeIndex, _to: NodeIndex) -> &LinkModel {
        &self.link
    }

    /// Makes `node` accept connections at `addr`.
    pub fn listen(&mut self, addr: SocketAddr, node: NodeIndex) {
        let previous = self.listeners.insert(addr, node);
        assert!(previous.is_none(), "two nodes listen on {addr}");
    }

    /// The node listening at `addr`, if any.
    pub fn listener(&self, addr: SocketAddr) -> Option<NodeIndex> {
        self.listeners.get(&addr).copied()
    }

    /// Whether what `from` sends reaches `to`.
    pub fn delivers(&self, from: NodeIndex, to: NodeIndex) -> bool {
        !self.blackholed.contains(&from)
            && !self.is_partitioned(from, to)
            && !self
                .one_way_cuts
                .iter()
                .any(|(senders, receivers)| senders.contains(&from) && receivers.contains(&to))
    }

    /// From now on, what any node of `from` sends any node of `to` does not
    /// arrive: bytes and closes are held for the heal (see [`Network::hold`]),
    /// the dialler's half of a TCP handshake is lost; the other way still
    /// works. Adds to earlier cuts; [`Network::heal`] ends them.
    pub fn cut_one_way(&mut self, from: &[NodeIndex], to: &[NodeIndex]) {
        self.one_way_cuts
            .push((from.iter().copied().collect(), to.iter().copied().collect()));
    }

    /// Holds bytes between `a` and `b`, either way, until `until`
    /// (replacing an earlier stall of the pair).
    pub fn stall(&mut self, a: NodeIndex, b: NodeIndex, until: Instant) {
        self.stalls.insert((a.min(b), a.max(b)), until);
    }

    /// The earliest instant bytes between `a` and `b` may arrive (a stall's
    /// end), if stalled until after `now`; ended stalls are forgotten.
    pub fn stalled_until(&mut self, a: NodeIndex, b: NodeIndex, now: Instant) -> Option<Instant> {
        let key = (a.min(b), a.max(b));
        match self.stalls.get(&key) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                self.stalls.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether a partition separates `a` from `b` (both listed, different groups).
    pub fn is_partitioned(&self, a: NodeIndex, b: NodeIndex) -> bool {
        match (self.partition.get(&a), self.partition.get(&b)) {
            (Some(group_a), Some(group_b)) => group_a != group_b,
            _ => false,
        }
    }

    /// Splits the network into `groups`: from now on nothing passes between
    /// nodes of different groups, either way (bytes, closes, connection
    /// attempts), as a cut cable would have it. Nodes in no group reach
    /// everyone. Replaces any earlier partition.
    ///
    /// # Panics
    /// If a node is in two groups (a bug in the scenario).
    pub fn partition(&mut self, groups: &[Vec<NodeIndex>]) {
        self.partition.clear();
        self.partition_holds = false;
        for (group, nodes) in groups.iter().enumerate() {
            for &node in nodes {
                let previous = self.partition.insert(node, group);
                assert!(previous.is_none(), "{node} is in two partition groups");
            }
        }
    }

    /// Ends the partition and every one-way cut: every node reaches every
    /// other again. Returns what the cuts held, in send order.
    pub fn heal(&mut self) -> Vec<Held> {
        self.partition.clear();
        self.one_way_cuts.clear();
        self.partition_holds = false;
        self.held_bytes = 0;
        std::mem::take(&mut self.held)
    }

    /// Whether a TCP connection between the two can be set up (both ways must work).
    pub fn connects(&self, dialer: NodeIndex, acceptor: NodeIndex) -> bool {
        self.delivers(dialer, acceptor) && self.delivers(acceptor, dialer)
    }

    /// Starts or stops dropping everything `node` sends.
    pub fn set_blackholed(&mut self, node: NodeIndex, blackholed: bool) {
        if blackholed {
            self.blackholed.insert(node);
        } else {
            self.blackholed.remove(&node);
        }
    }

    /// Whether `node` is blackholed.
    pub fn is_blackholed(&self, node: NodeIndex) -> bool {
        self.blackholed.contains(&node)
    }

    /// Opens a connection; returns the dialler's and the acceptor's ids.
    pub fn open(&mut self, dialer: NodeIndex, acceptor: NodeIndex) -> (ConnId, ConnId) {
        let dialer_conn = self.fresh_conn();
        let acceptor_conn = self.fresh_conn();
        self.endpoints
            .insert(dialer_conn, Endpoint::new(dialer, acceptor, acceptor_conn));
        self.endpoints
            .insert(acceptor_conn, Endpoint::new(acceptor, dialer, dialer_conn));
        (dialer_conn, acceptor_conn)
    }

    fn fresh_conn(&mut self) -> ConnId {
        let conn = ConnId(self.conn_next);
        // One id per endpoint: a u64 cannot run out.
        self.conn_next += 1;
        conn
    }

    /// The endpoint `conn` if it is open and belongs to `node`.
    pub fn endpoint_of(&mut self, node: NodeIndex, conn: ConnId) -> Option<&mut Endpoint> {
        self.endpoints
            .get_mut(&conn)
            .filter(|endpoint| endpoint.node == node)
    }

    /// Whether `conn` is open (its owner has neither closed it nor been told it closed).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.endpoints.contains_key(&conn)
    }

    /// Notes one more delivery on its way to `conn`, if that end is still open.
    /// Returns whether it is (a delivery to a closed end is not worth scheduling).
    pub fn expect_delivery(&mut self, conn: ConnId) -> bool {
        match self.endpoints.get_mut(&conn) {
            Some(endpoint) => {
                endpoint.deliveries_pending += 1;
                true
            }
            None => false,
        }
    }

    /// Notes that a delivery to `conn` has arrived. Returns whether the end is
    /// still open to take it.
    pub fn arrive(&mut self, conn: ConnId) -> bool {
        match self.endpoints.get_mut(&conn) {
            Some(endpoint) => {
                // Every scheduled delivery was counted by `expect_delivery`.
                assert!(
                    endpoint.deliveries_pending > 0,
                    "uncounted delivery to {conn:?}"
                );
                endpoint.deliveries_pending -= 1;
                true
            }
            None => false,
        }
    }

    /// Forgets the endpoint `conn`; later deliveries to it are dropped.
    pub fn remove(&mut self, conn: ConnId) -> Option<Endpoint> {
        self.endpoints.remove(&conn)
    }

    /// Open endpoints, in id order.
    pub fn endpoints(&self) -> impl Iterator<Item = (ConnId, &Endpoint)> {
        self.endpoints
            .iter()
            .map(|(conn, endpoint)| (*conn, endpoint))
    }

    /// Open endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Pairs of nodes whose views of each other may still legitimately differ,
    /// as `(lower, higher)`: traffic is on its way between them, one of them
    /// is blackholed, or a connection between them is half-open (one end is
    /// gone and its close was lost, so the other end learns only by timing
    /// out, as with TCP after an outage).
    pub fn busy_pairs(&self) -> BTreeSet<(NodeIndex, NodeIndex)> {
        let mut busy = BTreeSet::new();
        for endpoint in self.endpoints.values() {
            let (node, remote) = (endpoint.node, endpoint.remote);
            let silenced = self.is_blackholed(node) || self.is_blackholed(remote);
            let half_open = !self.endpoints.contains_key(&endpoint.remote_conn);
            if endpoint.deliveries_pending > 0 || silenced || half_open {
                busy.insert((node.min(remote), node.max(remote)));
            }
        }
        busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_cuts_between_groups_both_ways_until_healed() {
        let mut network = Network::new(LinkModel::default());
        let (a, b, c, outside) = (NodeIndex(0), NodeIndex(1), NodeIndex(2), NodeIndex(3));
        network.partition(&[vec![a, b], vec![c]]);
        assert!(network.delivers(a, b) && network.delivers(b, a));
        assert!(!network.delivers(a, c) && !network.delivers(c, a));
        assert!(!network.connects(b, c));
        assert!(network.delivers(outside, c) && network.delivers(a, outside));
        network.heal();
        assert!(network.connects(a, c) && network.connects(c, b));
    }

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(
            node_address(NodeIndex(0), 9000).to_string(),
            "10.0.0.1:9000"
        );
        assert_eq!(
            node_address(NodeIndex(255), 9000).to_string(),
            "10.0.1.0:9000"
        );
        assert_eq!(
            node_address(NodeIndex(300), 9001).to_string(),
            "10.0.1.45:9001"
        );
        let inbound = ephemeral_address(node_address(NodeIndex(2), 9000), ConnId(7));
        assert_eq!(inbound.to_string(), "10.0.0.3:49159");
        let wrapped = ephemeral_address(inbound, ConnId(16_384));
        assert_eq!(wrapped.port(), EPHEMERAL_PORT_FIRST);
    }

    #[test]
    fn deliveries_to_a_closed_end_are_dropped() {
        let mut network = Network::new(LinkModel::default());
        let (a, b) = network.open(NodeIndex(0), NodeIndex(1));
        assert_ne!(a, b);
        assert!(network.endpoint_of(NodeIndex(0), a).is_some());
        assert!(
            network.endpoint_of(NodeIndex(1), a).is_none(),
            "not b's end"
        );
        assert!(network.expect_delivery(b));
        assert_eq!(network.busy_pairs().len(), 1);
        assert!(network.arrive(b));
        assert!(network.busy_pairs().is_empty());
        assert!(network.remove(b).is_some());
        assert_eq!(network.busy_pairs().len(), 1, "a is half-open");
        assert!(!network.expect_delivery(b));
        assert!(!network.arrive(b));
        let (c, _) = network.open(NodeIndex(0), NodeIndex(1));
        assert!(c.0 > b.0, "ids are never reused");
    }

    #[test]
    fn an_endpoint_counts_what_has_not_left_the_uplink() {
        let mut network = Network::new(LinkModel::default());
        let (a, _) = network.open(NodeIndex(0), NodeIndex(1));
        let at = Instant::from_micros;
        let endpoint = network.endpoint_of(NodeIndex(0), a).expect("open");
        assert!(!endpoint.queue_outbound(at(0), at(0), 100), "left at once");
        assert_eq!(endpoint.unsent_bytes(), 0);
        assert!(!endpoint.queue_outbound(at(0), at(10), 1_000));
        assert!(!endpoint.queue_outbound(at(5), at(20), PENDING_SEND_BYTES_MAX - 1_000));
        assert_eq!(endpoint.unsent_bytes(), PENDING_SEND_BYTES_MAX);
        assert!(
            endpoint.queue_outbound(at(5), at(30), 1),
            "one byte too many"
        );
        assert!(
            !endpoint.queue_outbound(at(10), at(40), 1),
            "the first send left"
        );
        assert!(!endpoint.queue_outbound(at(40), at(40), 0));
        assert_eq!(endpoint.unsent_bytes(), 0);
    }

    #[test]
    fn a_blackholed_node_reaches_nobody_and_cannot_connect() {
        let mut network = Network::new(LinkModel::default());
        network.set_blackholed(NodeIndex(1), true);
        assert!(!network.delivers(NodeIndex(1), NodeIndex(0)));
        assert!(network.delivers(NodeIndex(0), NodeIndex(1)));
        assert!(!network.connects(NodeIndex(0), NodeIndex(1)));
        network.set_blackholed(NodeIndex(1), false);
        assert!(network.connects(NodeIndex(0), NodeIndex(1)));
    }
}
