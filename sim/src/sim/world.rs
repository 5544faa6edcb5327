//! The world itself: [`Sim`]'s state, building it (nodes and the rates of
//! their links), and the accessors the other parts of the world share.
//!
//! Randomness comes from the world seed only. It is split at construction
//! into three independent ChaCha20 streams: one draws each node's seeds (so
//! node *i*'s identity depends only on the seed and *i*), one draws network
//! delays and slicing, and one is lent to scenarios for their plans.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use meshsync_core::{Config, Identity, Instant, Node, PeerId};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::clock::NodeClock;
use super::config::{node_config, SimConfig, LISTEN_PORT_DEFAULT};
use super::event::Event;
use super::host::SimNode;
use crate::counts::{NetworkCounts, NotificationCounts};
use crate::invariants::{Violation, Violations};
use crate::network::{self, Network};
use crate::queue::EventQueue;
use crate::requests::RequestLog;
use crate::rng;
use crate::trace::Trace;
use crate::types::{AppEvent, NodeIndex};

/// The simulated world. See the module docs.
pub struct Sim {
    pub(super) config: SimConfig,
    pub(super) now: Instant,
    pub(super) queue: EventQueue<Event>,
    pub(super) rng_nodes: ChaCha20Rng,
    pub(super) rng_network: ChaCha20Rng,
    pub(super) rng_scenario: ChaCha20Rng,
    pub(super) nodes: Vec<SimNode>,
    pub(super) by_peer_id: BTreeMap<PeerId, NodeIndex>,
    pub(super) network: Network,
    pub(super) trace: Trace,
    pub(super) violations: Violations,
    /// One root per (proposer, slot): see `signatures.rs`.
    pub(super) signed_slots: super::signatures::SignedSlots,
    pub(super) notification_counts: NotificationCounts,
    pub(super) network_counts: NetworkCounts,
    pub(super) requests: RequestLog,
    pub(super) app_events: VecDeque<AppEvent>,
    pub(super) collect_app_events: bool,
    pub(super) events: u64,
    pub(super) dials_planned: Vec<(NodeIndex, NodeIndex)>,
    pub(super) wall_started: std::time::Instant,
    /// Wall-clock time from `wall_started` to the end of the world's set-up.
    pub(super) setup_wall: Option<std::time::Duration>,
    /// `--report`'s rows and fault marks, while sampling is on (`sampling.rs`).
    pub(super) samples: Option<Box<crate::samples::Samples>>,
    /// Chain stores for nodes that start on a stored chain (`stores.rs`).
    pub(super) starting_stores: super::stores::StartingStores,
    /// What [`Sim::node_config`] hands out, built once: the defaults'
    /// devnet chain derives a BLS key and checks its public key, about
    /// 0.1 ms that every node of a world would otherwise pay again.
    node_config_default: Config,
}

impl Sim {
    /// An empty world at virtual time zero.
    pub fn new(config: SimConfig) -> Sim {
        let mut world = ChaCha20Rng::seed_from_u64(config.seed);
        let rng_nodes = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        let rng_network = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        let rng_scenario = ChaCha20Rng::from_seed(rng::seed_bytes(&mut world));
        let config_network_id = config.network_id;
        Sim {
            network: Network::new(config.link),
            config,
            now: Instant::ZERO,
            queue: EventQueue::new(),
            rng_nodes,
            rng_network,
            rng_scenario,
            nodes: Vec::new(),
            by_peer_id: BTreeMap::new(),
            trace: Trace::new(),
            violations: Violations::default(),
            signed_slots: Default::default(),
            notification_counts: NotificationCounts::default(),
            network_counts: NetworkCounts::default(),
            requests: RequestLog::new(),
            app_events: VecDeque::new(),
            collect_app_events: false,
            events: 0,
            dials_planned: Vec::new(),
            wall_started: std::time::Instant::now(),
            setup_wall: None,
            samples: None,
            starting_stores: Default::default(),
            node_config_default: node_config(config_network_id, LISTEN_PORT_DEFAULT),
        }
    }

    // ---- Building the world ----

    /// The configuration [`Sim::add_node`] uses: every default, on this
    /// world's network, listening on [`LISTEN_PORT_DEFAULT`]. Change what a
    /// scenario needs (faults, chain) and pass it to [`Sim::add_node_with_config`].
    pub fn node_config(&self) -> Config {
        self.node_config_default.clone()
    }

    /// Adds a node with the default configuration; it listens at once.
    pub fn add_node(&mut self) -> NodeIndex {
        let config = self.node_config();
        self.add_node_with_config(config)
    }

    /// Adds a node with `config`; it listens on `config.listen_port` at its
    /// address in the world's plan ([`network::node_address`]).
    /// A node whose `config.faults` are all off counts as honest.
    pub fn add_node_with_config(&mut self, config: Config) -> NodeIndex {
        let index = NodeIndex(self.nodes.len());
        let ip = network::node_address(index, config.listen_port).ip();
        self.add_node_at(config, ip)
    }

    /// Adds a node with `config` listening at `ip` instead of its address in
    /// the plan: for a scenario whose story is about where nodes sit (the
    /// Sybils of `dht-eclipse` share one /16, honest nodes do not). Nodes
    /// added by [`Sim::add_node_with_config`] keep their plan addresses, so
    /// a scenario that never calls this sees the world it always saw.
    ///
    /// # Panics
    /// If another node already listens at `ip` on that port.
    pub fn add_node_at(&mut self, config: Config, ip: IpAddr) -> NodeIndex {
        let index = NodeIndex(self.nodes.len());
        let addr = SocketAddr::new(ip, config.listen_port);
        let (node_seed, identity_seed) = draw_node_seeds(&mut self.rng_nodes);
        let identity = Identity::from_seed(identity_seed);
        let peer_id = identity.peer_id();
        let peers_max = config.peer.limits.peers_max;
        let node = if config.chain.stored.is_empty() {
            Node::new(config.clone(), identity, node_seed)
        } else {
            let store = self.starting_stores.store_for(&config.chain);
            Node::with_chain_store(config.clone(), identity, node_seed, store)
        };
        assert_eq!(
            node.peer_id(),
            peer_id,
            "the node must use the identity it was given"
        );
        let previous = self.by_peer_id.insert(peer_id, index);
        // Identities come from 64 random bits each: a repeat is a broken RNG.
        assert!(previous.is_none(), "two nodes share identity {peer_id}");
        self.network.listen(addr, index);
        self.nodes.push(SimNode {
            node,
            config,
            identity_seed,
            node_seed,
            incarnation: 0,
            up: true,
            peer_id,
            addr,
            peers_max,
            uplink_bytes_per_second: self.config.bandwidth_bytes_per_second,
            uplink_free_at: Instant::ZERO,
            downlink_bytes_per_second: self.config.bandwidth_bytes_per_second,
            downlink_free_at: Instant::ZERO,
            stopped_reading: false,
            mute: false,
            cpu_free_at: Instant::ZERO,
            disk_free_at: Instant::ZERO,
            disk: BTreeMap::new(),
            disk_finalized: meshsync_core::chain::Root([0; 32]),
            disk_fails_until: Instant::ZERO,
            disk_unwritten: VecDeque::new(),
            disk_watermarks: BTreeMap::new(),
            disk_known_peers: None,
            clock: NodeClock::default(),
            clock_skew_ms: 0,
            disk_slowdown: 1,
            cpu_slowdown: 1,
            timer_generation: 0,
            timer_at: None,
            dials: BTreeSet::new(),
            dial_log: VecDeque::new(),
            notifications: VecDeque::new(),
            notification_payload_bytes: 0,
            notified_peers: BTreeSet::new(),
            retired_counters: Vec::new(),
            request_tag_next: 0,
        });
        log::debug!("{index} is {peer_id} at {addr}");
        self.schedule_timer(index, false);
        index
    }

    /// The identities of the next `count` nodes to be added, in order,
    /// without adding them: a scenario can sign their records into the
    /// configuration of nodes it adds first (Sybils that hand out each
    /// other's records). Draws nothing from the world's streams.
    pub fn next_identities(&self, count: usize) -> Vec<Identity> {
        let mut rng = self.rng_nodes.clone();
        (0..count)
            .map(|_| Identity::from_seed(draw_node_seeds(&mut rng).1))
            .collect()
    }

    /// Adds `count` nodes with the default configuration.
    pub fn add_nodes(&mut self, count: usize) -> Vec<NodeIndex> {
        (0..count).map(|_| self.add_node()).collect()
    }

    /// Limits what `node` can receive to `bytes_per_second` (`None`: unlimited).
    ///
    /// # Panics
    /// If the rate is zero.
    pub fn set_downlink(&mut self, node: NodeIndex, bytes_per_second: Option<u64>) {
        assert!(
            bytes_per_second != Some(0),
            "a downlink of 0 bytes/s receives nothing"
        );
        self.node_state_mut(node).downlink_bytes_per_second = bytes_per_second;
    }

    /// Makes `node` stop reading (`true`): from now on, what others send it
    /// neither leaves their uplink nor arrives, and they never hear it
    /// written, as with a TCP peer whose receive window is closed; their
    /// send queues grow until [`meshsync_core::limits::PENDING_SEND_BYTES_MAX`]
    /// closes the connection. It keeps sending. `false` lets later sends through
    /// (what was held stays lost: a simplification).
    pub fn set_stops_reading(&mut self, node: NodeIndex, stopped: bool) {
        self.node_state_mut(node).stopped_reading = stopped;
    }

    /// Makes `node` mute (`true`): from now on nothing it sends leaves it,
    /// so the connections it opens stay silent, as a flood of half-open
    /// connections is. It still reads. `false` lets later sends through.
    pub fn set_mute(&mut self, node: NodeIndex, mute: bool) {
        self.node_state_mut(node).mute = mute;
    }

    /// Limits what `node` can send to `bytes_per_second` (`None`: unlimited;
    /// the default is [`SimConfig::bandwidth_bytes_per_second`]).
    ///
    /// # Panics
    /// If the rate is zero.
    pub fn set_uplink(&mut self, node: NodeIndex, bytes_per_second: Option<u64>) {
        assert!(
            bytes_per_second != Some(0),
            "an uplink of 0 bytes/s sends nothing"
        );
        self.node_state_mut(node).uplink_bytes_per_second = bytes_per_second;
    }

    // ---- Shared by the parts of the world ----

    pub(super) fn node_state(&self, index: NodeIndex) -> &SimNode {
        &self.nodes[index.0]
    }

    pub(super) fn node_state_mut(&mut self, index: NodeIndex) -> &mut SimNode {
        &mut self.nodes[index.0]
    }

    /// Whether `node` is up and still the incarnation `incarnation`.
    pub(super) fn is_incarnation(&self, node: NodeIndex, incarnation: u32) -> bool {
        let state = self.node_state(node);
        state.up && state.incarnation == incarnation
    }

    /// Counts and keeps a violation seen now.
    pub(super) fn violation(&mut self, node: Option<NodeIndex>, description: String) {
        let violation = Violation {
            at: self.now,
            node,
            description,
        };
        self.violations.record(self.config.seed, violation);
    }
}

/// A node's seeds, in the order every node draws them from the nodes'
/// stream: its node seed, then its identity seed. One function, so
/// [`Sim::next_identities`] can never disagree with [`Sim::add_node_at`].
fn draw_node_seeds(rng: &mut ChaCha20Rng) -> ([u8; 32], u64) {
    let node_seed = rng::seed_bytes(rng);
    let identity_seed = rng.next_u64();
    (node_seed, identity_seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::SimConfig;

    fn sim(seed: u64) -> Sim {
        Sim::new(SimConfig::new(seed))
    }

    #[test]
    fn nodes_get_addresses_and_identities_from_the_seed() {
        let mut first = sim(5);
        let mut again = sim(5);
        let mut other = sim(6);
        let nodes: Vec<_> = (0..3).map(|_| first.add_node()).collect();
        for _ in 0..3 {
            again.add_node();
            other.add_node();
        }
        assert_eq!(first.addr(nodes[2]).to_string(), "10.0.0.3:9000");
        for &node in &nodes {
            assert_eq!(first.peer_id(node), again.peer_id(node));
            assert_ne!(first.peer_id(node), other.peer_id(node));
            assert_eq!(first.index_of(first.peer_id(node)), Some(node));
        }
    }

    #[test]
    fn a_node_placed_elsewhere_keeps_the_identities_of_the_plan() {
        let mut planned = sim(5);
        let mut placed = sim(5);
        let foreseen = placed.next_identities(3);
        let ip: IpAddr = "45.33.7.1".parse().expect("literal address");
        let a = placed.add_node();
        let b = placed.add_node_at(placed.node_config(), ip);
        let c = placed.add_node();
        assert_eq!(placed.addr(b).to_string(), "45.33.7.1:9000");
        assert_eq!(
            placed.addr(c).to_string(),
            "10.0.0.3:9000",
            "the plan is by index"
        );
        for (n, node) in [a, b, c].into_iter().enumerate() {
            assert_eq!(planned.add_node(), node);
            assert_eq!(placed.peer_id(node), planned.peer_id(node));
            assert_eq!(placed.peer_id(node), foreseen[n].peer_id());
        }
    }
}
