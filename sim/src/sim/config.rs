//! How a world is built: [`SimConfig`], the defaults it starts from, and
//! the bounds on what the world keeps per node for inspection.

use meshsync_core::Config;

use crate::chains::ChainCache;
use crate::link::LinkModel;

/// Network id every simulated node is configured with, unless a test says otherwise.
pub const NETWORK_ID_DEFAULT: u64 = 0x6d65_7368; // "mesh"
/// Port every simulated node listens on by default.
pub const LISTEN_PORT_DEFAULT: u16 = 9000;
/// Notifications kept per node for inspection; older ones are dropped first.
pub const NOTIFICATIONS_KEPT_PER_NODE_MAX: usize = 4_096;
/// Payload bytes (gossip messages, responses, request bodies) of the
/// notifications kept per node; past it the oldest notifications that carry
/// a payload are dropped (the others stay, up to
/// [`NOTIFICATIONS_KEPT_PER_NODE_MAX`]). A node that takes in a 1 MiB block
/// every few seconds would otherwise keep thousands of them, in a world of
/// hundreds of nodes; at 4 MiB they were still a third of `gossip-blocks`'
/// memory.
pub const NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX: usize = 1024 * 1024;
/// Dials kept per node in its dial log; older ones are dropped first.
pub const DIALS_KEPT_PER_NODE_MAX: usize = 4_096;
/// Application events waiting to be taken. An application takes them after
/// every step, so only a world with collection on and nobody taking fills it.
pub const APP_EVENTS_PENDING_MAX: usize = 1 << 20;

/// How to build a world.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one seed everything random derives from.
    pub seed: u64,
    /// The model every link follows.
    pub link: LinkModel,
    /// The network id nodes added with [`crate::Sim::add_node`] use.
    pub network_id: u64,
    /// A label for summaries (the scenario's name).
    pub label: String,
    /// Every node's uplink and downlink rate, bytes per second (`None`:
    /// unlimited). [`crate::Sim::set_uplink`] and [`crate::Sim::set_downlink`]
    /// change one node's.
    pub bandwidth_bytes_per_second: Option<u64>,
    /// Where the world takes its pre-signed chains from: a fresh cache by
    /// default; a campaign gives every run one shared cache, so each chain
    /// is signed once ([`crate::chains`]).
    pub chains: ChainCache,
}

/// The default bandwidth of every node, each way: 50 Mbit/s.
pub const BANDWIDTH_BYTES_PER_SECOND_DEFAULT: u64 = 50_000_000 / 8;

impl SimConfig {
    /// Defaults for everything but the seed.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            link: LinkModel::default(),
            network_id: NETWORK_ID_DEFAULT,
            label: "custom".to_owned(),
            bandwidth_bytes_per_second: Some(BANDWIDTH_BYTES_PER_SECOND_DEFAULT),
            chains: ChainCache::new(),
        }
    }
}

/// A node configuration with every default, listening on `listen_port`.
pub fn node_config(network_id: u64, listen_port: u16) -> Config {
    let mut config = Config::new(network_id);
    config.listen_port = listen_port;
    config
}
