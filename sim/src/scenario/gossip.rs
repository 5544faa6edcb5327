//! Gossip at scale: a mesh of honest nodes publishing on one topic, measured
//! against the floodsub baseline; the same world hosts the attacks of
//! [`super::gossip_attacks`].
//!
//! # The story
//! `nodes` nodes join a random connected topology: a random spanning path
//! plus `extra_dials_per_node` dials from every node to random others, so a
//! node has about twice that many connections (≈ 22 with the default 10).
//! Every node subscribes to one topic at time zero; dials start at random
//! instants in the first `dial_spread`. After `warmup` (dials, handshakes and
//! a few 700 ms heartbeats, so meshes have formed) the publishers take turns:
//! publish number *k* is made by `publishers[k mod P]` at `warmup + k /
//! messages_per_second`, for the run's duration. `messages_per_second` is the
//! total over all publishers: `gossip-1k` reads "100 publishers, 1 KiB
//! messages at 10 per second" as 10 messages per second in all (each
//! publisher every 10 s); `--messages-per-second 1000` is the other reading,
//! 10 per second per publisher. After publishing stops, `drain` more virtual
//! time lets the last messages arrive before anything is measured.
//!
//! Payloads are seeded random bytes (incompressible, so snappy saves
//! nothing) with the publish number in front, so each is unique. Honest
//! applications judge every message the instant it arrives: Accept, unless
//! its first byte is [`INVALID_MARKER`] (the Sybils' spam), then Reject.
//!
//! With `floodsub` every node runs the floodsub baseline
//! (`gossip::Config::floodsub`): every message to every subscribed peer.
//!
//! # What is measured (the summary's `outcome`)
//! - `delivery_ratio`: deliveries (a `GossipMessage` notification for a
//!   published message at an honest node other than its publisher) over
//!   expected (published messages × such nodes);
//! - `latency_ms_p50`, `latency_ms_p99`: publish command → notification, in
//!   virtual time, over all deliveries;
//! - `duplicates_per_delivery`: copies received per message per node,
//!   (router `messages_received` + `duplicates`) / deliveries, over honest nodes;
//! - `bytes_sent_per_delivered_byte`: every byte every node put on the wire
//!   from the first publish to the end of the drain (handshakes before it
//!   are left out) over deliveries × payload bytes.
//!
//! # What must hold (the run's bounds)
//! Honest delivery at least [`DELIVERY_RATIO_MIN`] (0.999): without Sybils,
//! and against spam, withholding, slow readers and PRUNE floods; at least
//! [`DELIVERY_RATIO_COLD_BOOT_MIN`] (0.99) for `cold-boot`, whose honest
//! nodes start among Sybils; the eclipse target's own delivery at least
//! [`DELIVERY_RATIO_COLD_BOOT_MIN`]. `prune-flood` also: no honest GRAFT
//! inside a backoff an honest peer asked for, and no honest pair
//! graylisted, lost or banned. The comparisons with the same world without
//! Sybils (latency, traffic) are measured, not bounded.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::gossip::score::GRAYLIST_THRESHOLD;
use meshsync_core::gossip::{MessageId, Topic, Validation};
use meshsync_core::limits::PEERS_MAX;
use meshsync_core::{Command, Config, Duration, Instant, Notification};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::story::{Bounds, Scenario};
use super::topology::plan_topology;
use super::workload::{split_token, token};
use crate::app::{self, AppEvent, Application};
use crate::requests::{millis, percentile};
use crate::rng;
use crate::samples::Deliveries;
use crate::sim::{NodeIndex, Sim};

/// The topic every node subscribes to.
pub const TOPIC_NAME: &str = "meshsync/gossip/1";
/// First payload byte of a message honest validators reject (the Sybils' spam).
pub const INVALID_MARKER: u8 = 0xff;
/// First payload byte of a valid message.
pub const VALID_MARKER: u8 = 0x00;
/// Bytes at the front of every payload that make it unique: the marker and
/// the publish number.
const PAYLOAD_HEADER_BYTES: usize = 9;

/// How often honest nodes' scores of the Sybils are looked at (spam).
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

const TOKEN_PUBLISH: u16 = 1;
const TOKEN_SPAM: u16 = 2;
const TOKEN_SAMPLE: u16 = 3;
const TOKEN_CHURN: u16 = 4;
const TOKEN_WATCH: u16 = 5;

/// How often honest nodes' views of each other are looked at (PRUNE flood):
/// scores, backoff tables, GRAFTs refused.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Hostile nodes mixed into the world, all running the production core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// No Sybils.
    None,
    /// Sybils join the topology like honest nodes and publish invalid
    /// messages (first byte [`INVALID_MARKER`]), `messages_per_second` in
    /// all, taking turns, from the first honest publish on.
    Spam {
        /// Invalid messages per second, over all Sybils.
        messages_per_second: u32,
    },
    /// Sybils (`fault_withhold`: in meshes, never forwarding, never
    /// answering IWANT) each dial `extra_dials_per_node` random honest nodes.
    Withhold,
    /// Sybils (`fault_withhold`) all dial one honest target, before the
    /// honest nodes dial anyone, and nobody else: they try to fill its mesh.
    Eclipse,
    /// Sybils are ordinary nodes that join like [`Attack::Withhold`]'s and
    /// stop reading when publishing starts ([`Sim::set_stops_reading`]):
    /// whatever their peers send them stays in those peers' send queues.
    SlowReaders,
    /// Throwaway identities (`fault_prune_flood`): each Sybil dials
    /// `extra_dials_per_node` random honest nodes among the flooded ones,
    /// GRAFTs each on every topic and a heartbeat later PRUNEs it with a
    /// `u32::MAX` s backoff, and after `visit` is gone for good (crashed),
    /// replaced at once by a fresh identity that dials fresh targets; until
    /// publishing stops. The other honest nodes are never flooded: they
    /// keep their own record of every backoff they asked for, so they see
    /// a flooded node that lost its record GRAFT them inside it.
    PruneFlood {
        /// How long one identity stays.
        visit: Duration,
        /// Honest nodes the Sybils dial, in percent of them (at least one).
        flooded_pct: u32,
    },
}

/// Honest delivery a gossip world must reach (see the module docs).
pub const DELIVERY_RATIO_MIN: f64 = 0.999;
/// Delivery `cold-boot`'s honest nodes, and the eclipse target, must reach.
pub const DELIVERY_RATIO_COLD_BOOT_MIN: f64 = 0.99;

/// The parameters of a [`GossipScenario`].
#[derive(Clone, Debug)]
pub struct GossipParams {
    /// Every node runs floodsub (the baseline) instead of the mesh.
    pub floodsub: bool,
    /// Random dials per node beyond the spanning path.
    pub extra_dials_per_node: usize,
    /// Dials start at uniformly random instants within this (zero: all at once).
    pub dial_spread: Duration,
    /// Honest nodes that publish, taking turns (capped at the honest nodes).
    pub publishers: usize,
    /// Messages per second over all publishers.
    pub messages_per_second: f64,
    /// Bytes of every payload.
    pub message_bytes: usize,
    /// Time from the start to the first publish, for meshes to form.
    pub warmup: Duration,
    /// Time after the last publish before measuring.
    pub drain: Duration,
    /// The hostile nodes' plan.
    pub attack: Attack,
    /// Sybils, in percent of the world's nodes (rounded down; 0 with [`Attack::None`]).
    pub sybils_pct: u32,
    /// Also run the same world without Sybils, from the same seed, and
    /// report its figures beside these (for the latency bound).
    pub compare_without_sybils: bool,
    /// The most mesh peers a node keeps before trimming to D (`None`: the
    /// core's default, `MESH_N_HIGH`).
    pub mesh_n_high: Option<usize>,
    /// Honest delivery the run must reach (its bound; see the module docs).
    pub delivery_ratio_min: f64,
}

impl GossipParams {
    /// `gossip-1k`: 100 publishers, 1 KiB messages, 10 per second in all.
    pub fn small_messages() -> GossipParams {
        GossipParams {
            floodsub: false,
            extra_dials_per_node: 10,
            dial_spread: Duration::from_secs(1),
            publishers: 100,
            messages_per_second: 10.0,
            message_bytes: 1024,
            warmup: Duration::from_secs(5),
            drain: Duration::from_secs(5),
            attack: Attack::None,
            sybils_pct: 0,
            compare_without_sybils: false,
            mesh_n_high: None,
            delivery_ratio_min: DELIVERY_RATIO_MIN,
        }
    }

    /// `gossip-blocks`: one publisher at a time (rotating), a 1 MiB message every 2 s.
    pub fn blocks() -> GossipParams {
        GossipParams {
            publishers: usize::MAX,
            messages_per_second: 0.5,
            message_bytes: 1024 * 1024,
            drain: Duration::from_secs(10),
            ..GossipParams::small_messages()
        }
    }

    /// Sybils among the nodes.
    fn sybil_count(&self, nodes: usize) -> usize {
        if self.attack == Attack::None {
            return 0;
        }
        (nodes * self.sybils_pct as usize / 100).min(nodes.saturating_sub(2))
    }

    fn interval_us(&self) -> u64 {
        assert!(
            self.messages_per_second > 0.0 && self.messages_per_second.is_finite(),
            "messages per second must be positive"
        );
        // At least one microsecond between publishes; a rate above a million is not one.
        ((1_000_000.0 / self.messages_per_second).round() as u64).max(1)
    }
}

impl Default for GossipParams {
    fn default() -> GossipParams {
        GossipParams::small_messages()
    }
}

/// A gossip world, honest or under attack. See the module docs.
#[derive(Clone, Debug)]
pub struct GossipScenario {
    name: &'static str,
    /// What to run.
    pub params: GossipParams,
    /// The nodes `meshsync-sim` runs when `--nodes` is not given.
    pub nodes_default: usize,
    app: Option<GossipApp>,
    without_sybils: Option<Box<GossipOutcome>>,
}

impl GossipScenario {
    /// `gossip-1k`.
    pub const NAME_1K: &'static str = "gossip-1k";
    /// `gossip-blocks`.
    pub const NAME_BLOCKS: &'static str = "gossip-blocks";

    /// A scenario called `name` with `params`.
    pub fn new(name: &'static str, params: GossipParams, nodes_default: usize) -> GossipScenario {
        GossipScenario {
            name,
            params,
            nodes_default,
            app: None,
            without_sybils: None,
        }
    }

    /// `gossip-1k`: 1,000 nodes, 100 publishers, 1 KiB at 10 per second in all.
    pub fn gossip_1k() -> GossipScenario {
        GossipScenario::new(Self::NAME_1K, GossipParams::small_messages(), 1_000)
    }

    /// `gossip-blocks`: 200 nodes, a 1 MiB message every 2 s from a rotating publisher.
    pub fn gossip_blocks() -> GossipScenario {
        GossipScenario::new(Self::NAME_BLOCKS, GossipParams::blocks(), 200)
    }

    /// The application state, once built.
    pub fn app(&self) -> &GossipApp {
        self.app.as_ref().expect("built before use")
    }

    /// What the run showed so far.
    pub fn measure(&self, sim: &Sim) -> GossipOutcome {
        let mut outcome = self.app().measure(sim, &self.params);
        outcome.without_sybils = self.without_sybils.clone();
        outcome
    }

    /// The same world without Sybils, run from `sim`'s seed for `duration`.
    fn run_without_sybils(&self, sim: &Sim, nodes: usize, duration: Duration) -> GossipOutcome {
        let mut baseline = GossipScenario::new(
            self.name,
            GossipParams {
                attack: Attack::None,
                compare_without_sybils: false,
                ..self.params.clone()
            },
            self.nodes_default,
        );
        let mut world = Sim::new(sim.config().clone());
        baseline.build(&mut world, nodes);
        baseline.run(&mut world, duration);
        let mut outcome = baseline.measure(&world);
        outcome.trace_hash = Some(world.trace().hash_hex());
        outcome
    }
}

/// A message an honest publisher was told to publish.
#[derive(Clone, Debug)]
struct Published {
    at: Instant,
    publisher: NodeIndex,
    deliveries: u32,
}

/// How one honest node's relation with one Sybil ended (spam).
#[derive(Clone, Copy, Debug, Default)]
struct Relation {
    graylisted_at: Option<Instant>,
    disconnected_at: Option<Instant>,
}

/// The publishers, the Sybils and what every node received.
#[derive(Clone, Debug)]
pub struct GossipApp {
    topic: Topic,
    sybil: Vec<bool>,
    honest_count: usize,
    publishers: Vec<NodeIndex>,
    sybils: Vec<NodeIndex>,
    eclipse_target: Option<NodeIndex>,
    publish_start: Instant,
    publish_end: Instant,
    interval_us: u64,
    spam_interval_us: u64,
    message_bytes: usize,
    payloads: ChaCha20Rng,
    published: BTreeMap<MessageId, Published>,
    publish_failed: u64,
    latencies: Vec<Duration>,
    target_deliveries: u64,
    spam_published: u64,
    spam_received_by_honest: u64,
    track_relations: bool,
    relations: BTreeMap<(NodeIndex, NodeIndex), Relation>,
    bytes_sent_at_start: u64,
    topology: Option<TopologyCheck>,
    churn: Option<Churn>,
    watch: Option<FloodWatch>,
}

/// How PRUNE-flooding Sybils come and go.
#[derive(Clone, Debug)]
struct Churn {
    config: Config,
    visit: Duration,
    dials: usize,
    /// Honest nodes the Sybils dial: the first this many.
    flooded: usize,
    identities: u64,
}

/// What honest nodes did to each other under a PRUNE flood.
#[derive(Clone, Debug, Default)]
struct FloodWatch {
    sybil_connections: u64,
    /// (honest node, honest peer) pairs that came apart or were banned.
    honest_pairs_disconnected: BTreeSet<(NodeIndex, NodeIndex)>,
    /// (honest node, honest peer) pairs seen below the graylist threshold.
    honest_pairs_graylisted: BTreeSet<(NodeIndex, NodeIndex)>,
    /// (honest node, honest peer) → GRAFTs the node refused from the peer
    /// because they came inside a backoff (the most seen at once).
    grafts_refused: BTreeMap<(NodeIndex, NodeIndex), u32>,
    honest_score_min: Option<f64>,
    backoffs_max: usize,
    samples: u64,
}

/// The topology and meshes, as they were when publishing started.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopologyCheck {
    /// Whether the graph of mutual peer relations connected every node.
    pub connected: bool,
    /// Fewest peers of an honest node.
    pub honest_peers_min: usize,
    /// Mean peers of an honest node.
    pub honest_peers_mean: f64,
    /// Most peers of an honest node.
    pub honest_peers_max: usize,
    /// Sybils in the eclipse target's mesh.
    pub target_sybils_in_mesh: Option<usize>,
    /// The eclipse target's mesh.
    pub target_mesh: Option<usize>,
    /// Fewest mesh peers of an honest node (0 with floodsub).
    pub honest_mesh_min: usize,
    /// Mean mesh peers of an honest node.
    pub honest_mesh_mean: f64,
}

impl GossipApp {
    /// Whether `node` is one of the Sybils.
    pub fn is_sybil(&self, node: NodeIndex) -> bool {
        self.sybil[node.0]
    }

    /// The honest nodes.
    pub fn honest(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        (0..self.sybil.len())
            .filter(|&i| !self.sybil[i])
            .map(NodeIndex)
    }

    /// The Sybils.
    pub fn sybils(&self) -> &[NodeIndex] {
        &self.sybils
    }

    /// The eclipse target, if any.
    pub fn eclipse_target(&self) -> Option<NodeIndex> {
        self.eclipse_target
    }

    fn publish(&mut self, sim: &mut Sim, number: u64) {
        let publisher = self.publishers[(number % self.publishers.len() as u64) as usize];
        let payload = self.payload(VALID_MARKER, number);
        let id = MessageId::compute(&self.topic, &payload);
        let previous = self.published.insert(
            id,
            Published {
                at: sim.now(),
                publisher,
                deliveries: 0,
            },
        );
        assert!(previous.is_none(), "payloads are unique by construction");
        sim.command(
            publisher,
            Command::Publish {
                topic: self.topic.clone(),
                payload,
            },
        );
    }

    fn spam(&mut self, sim: &mut Sim, number: u64) {
        let sybil = self.sybils[(number % self.sybils.len() as u64) as usize];
        let payload = self.payload(INVALID_MARKER, number);
        self.spam_published += 1;
        sim.command(
            sybil,
            Command::Publish {
                topic: self.topic.clone(),
                payload,
            },
        );
    }

    fn payload(&mut self, marker: u8, number: u64) -> Vec<u8> {
        let mut payload = vec![0u8; self.message_bytes.max(PAYLOAD_HEADER_BYTES)];
        self.payloads
            .fill_bytes(&mut payload[PAYLOAD_HEADER_BYTES..]);
        payload[0] = marker;
        payload[1..PAYLOAD_HEADER_BYTES].copy_from_slice(&number.to_be_bytes());
        payload
    }

    /// Which honest nodes gave up on which Sybils, and when (spam only).
    fn sample_relations(&mut self, sim: &Sim) {
        let now = sim.now();
        for (&(node, sybil), relation) in &mut self.relations {
            if relation.graylisted_at.is_some() {
                continue;
            }
            let peer = sim.peer_id(sybil);
            if let Some(score) = sim.node(node).gossip().score(now, &peer) {
                if score < GRAYLIST_THRESHOLD {
                    relation.graylisted_at = Some(now);
                }
            }
        }
    }

    /// The Sybil in `slot` leaves for good; a fresh identity takes its place
    /// and dials fresh honest targets.
    fn churn(&mut self, sim: &mut Sim, slot: usize) {
        let churn = self
            .churn
            .as_mut()
            .expect("churn is planned with its state");
        let old = self.sybils[slot];
        if sim.is_up(old) {
            sim.crash(old);
        }
        let fresh = sim.add_node_with_config(churn.config.clone());
        churn.identities += 1;
        assert_eq!(fresh.0, self.sybil.len(), "nodes are numbered in order");
        self.sybil.push(true);
        self.sybils[slot] = fresh;
        sim.command(
            fresh,
            Command::Subscribe {
                topic: self.topic.clone(),
            },
        );
        let mut targets: BTreeSet<usize> = BTreeSet::new();
        for _ in 0..churn.dials {
            targets.insert(rng::index(sim.scenario_rng(), churn.flooded));
        }
        for target in targets {
            let command = Command::Dial {
                addr: sim.addr(NodeIndex(target)),
                peer: Some(sim.peer_id(NodeIndex(target))),
            };
            sim.command(fresh, command);
        }
        let next = sim.now() + churn.visit;
        if next < self.publish_end {
            sim.wake_at(next, token(TOKEN_CHURN, slot));
        }
    }

    /// How honest nodes see each other: scores, GRAFTs refused inside a
    /// backoff, backoff tables.
    fn watch_honest(&mut self, sim: &Sim) {
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        let now = sim.now();
        watch.samples += 1;
        for node in (0..self.honest_count).map(NodeIndex) {
            let gossip = sim.node(node).gossip();
            watch.backoffs_max = watch.backoffs_max.max(gossip.backoffs_len());
            for peer in sim.peers_of(node) {
                if self.sybil[peer.0] {
                    continue;
                }
                let id = sim.peer_id(peer);
                if let Some(score) = gossip.score(now, &id) {
                    let min = watch.honest_score_min.get_or_insert(score);
                    *min = min.min(score);
                    if score < GRAYLIST_THRESHOLD {
                        watch.honest_pairs_graylisted.insert((node, peer));
                    }
                }
                let refused = gossip.grafts_refused_in_backoff(&id).unwrap_or(0);
                if refused > 0 {
                    let seen = watch.grafts_refused.entry((node, peer)).or_default();
                    *seen = (*seen).max(refused);
                }
            }
        }
    }

    fn on_notification(&mut self, sim: &mut Sim, node: NodeIndex, notification: Notification) {
        if let Some(watch) = self.watch.as_mut() {
            let honest_node = !self.sybil[node.0];
            match &notification {
                Notification::PeerDisconnected { peer, .. }
                | Notification::PeerBanned { peer, .. }
                    if honest_node =>
                {
                    if let Some(other) = sim.index_of(*peer).filter(|n| !self.sybil[n.0]) {
                        watch.honest_pairs_disconnected.insert((node, other));
                    }
                }
                Notification::PeerConnected { peer, .. }
                    if honest_node && sim.index_of(*peer).is_some_and(|n| self.sybil[n.0]) =>
                {
                    watch.sybil_connections += 1;
                }
                _ => {}
            }
        }
        match notification {
            Notification::GossipMessage { id, payload, .. } => {
                let invalid = payload.first() == Some(&INVALID_MARKER);
                let honest = !self.sybil[node.0];
                // Sybils accept everything, their fellows' spam included.
                let verdict = if invalid && honest {
                    Validation::Reject
                } else {
                    Validation::Accept
                };
                sim.command(node, Command::ValidateGossip { id, verdict });
                if !honest {
                    return;
                }
                if invalid {
                    self.spam_received_by_honest += 1;
                } else if let Some(published) = self.published.get_mut(&id) {
                    if published.publisher != node {
                        published.deliveries += 1;
                        self.latencies
                            .push(sim.now().saturating_duration_since(published.at));
                        if Some(node) == self.eclipse_target {
                            self.target_deliveries += 1;
                        }
                    }
                }
            }
            Notification::PublishFailed { .. } if !self.sybil[node.0] => {
                self.publish_failed += 1;
            }
            Notification::PeerDisconnected { peer, .. } if !self.sybil[node.0] => {
                if let Some(sybil) = sim.index_of(peer).filter(|s| self.sybil[s.0]) {
                    if self.track_relations {
                        let relation = self.relations.entry((node, sybil)).or_default();
                        relation.disconnected_at.get_or_insert(sim.now());
                    }
                }
            }
            Notification::PeerConnected { peer, .. } if !self.sybil[node.0] => {
                if let Some(sybil) = sim.index_of(peer).filter(|s| self.sybil[s.0]) {
                    if self.track_relations {
                        self.relations.entry((node, sybil)).or_default();
                    }
                }
            }
            _ => {}
        }
    }

    fn check_topology(&mut self, sim: &Sim) {
        let honest: Vec<NodeIndex> = self.honest().collect();
        let peers: Vec<usize> = honest.iter().map(|&n| sim.peers_of(n).len()).collect();
        let meshes: Vec<usize> = honest
            .iter()
            .map(|&n| sim.node(n).gossip().mesh_peers(&self.topic).len())
            .collect();
        let target_mesh = self
            .eclipse_target
            .map(|target| sim.node(target).gossip().mesh_peers(&self.topic));
        let sybils_in = |mesh: &Vec<meshsync_core::PeerId>| {
            mesh.iter()
                .filter(|peer| sim.index_of(**peer).is_some_and(|n| self.sybil[n.0]))
                .count()
        };
        let mean = |values: &[usize]| values.iter().sum::<usize>() as f64 / values.len() as f64;
        self.topology = Some(TopologyCheck {
            connected: sim.is_peer_graph_connected(),
            honest_peers_min: peers.iter().copied().min().unwrap_or(0),
            honest_peers_mean: mean(&peers),
            honest_peers_max: peers.iter().copied().max().unwrap_or(0),
            target_sybils_in_mesh: target_mesh.as_ref().map(sybils_in),
            target_mesh: target_mesh.as_ref().map(Vec::len),
            honest_mesh_min: meshes.iter().copied().min().unwrap_or(0),
            honest_mesh_mean: mean(&meshes),
        });
    }

    fn measure(&self, sim: &Sim, params: &GossipParams) -> GossipOutcome {
        let honest: Vec<NodeIndex> = self.honest().collect();
        let receivers_per_message = self.honest_count.saturating_sub(1) as u64;
        let messages = self.published.len() as u64;
        let expected = messages * receivers_per_message;
        let deliveries: u64 = self
            .published
            .values()
            .map(|p| u64::from(p.deliveries))
            .sum();
        let ratio = |got: u64, of: u64| if of == 0 { 1.0 } else { got as f64 / of as f64 };
        let mut latencies = self.latencies.clone();
        let p50 = percentile(&mut latencies, 50).map(millis);
        let p99 = percentile(&mut latencies, 99).map(millis);
        let latency_max = latencies.last().copied().map(millis);
        let copies: u64 = honest
            .iter()
            .map(|&n| {
                let counters = sim.node(n).gossip().counters();
                counters.messages_received + counters.duplicates
            })
            .sum();
        let router_sum = |field: fn(&meshsync_core::gossip::Counters) -> u64| -> u64 {
            sim.node_indices()
                .map(|n| field(sim.node(n).gossip().counters()))
                .sum()
        };
        let bytes_sent = sim.network_counts().bytes_sent - self.bytes_sent_at_start;
        let delivered_bytes = deliveries * params.message_bytes as u64;
        let worst_message = self
            .published
            .values()
            .map(|p| u64::from(p.deliveries))
            .min();
        let since_spam = |at: Instant| millis(at.saturating_duration_since(self.publish_start));
        let spam = (self.spam_interval_us > 0).then(|| {
            let mut graylisted: Vec<Instant> = Vec::new();
            let mut disconnected: Vec<Instant> = Vec::new();
            let mut ended = 0;
            for relation in self.relations.values() {
                graylisted.extend(relation.graylisted_at);
                disconnected.extend(relation.disconnected_at);
                if relation.graylisted_at.is_some() || relation.disconnected_at.is_some() {
                    ended += 1;
                }
            }
            let first_graylist_or_disconnect: Vec<Instant> = self
                .relations
                .values()
                .filter_map(|r| match (r.graylisted_at, r.disconnected_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
                .collect();
            SpamOutcome {
                spam_published: self.spam_published,
                spam_received_by_honest: self.spam_received_by_honest,
                honest_sybil_relations: self.relations.len(),
                relations_graylisted: graylisted.len(),
                relations_disconnected: disconnected.len(),
                relations_graylisted_or_disconnected: ended,
                relations_still_open: self
                    .relations
                    .iter()
                    .filter(|((h, s), r)| {
                        r.graylisted_at.is_none()
                            && r.disconnected_at.is_none()
                            && sim.has_peer(*h, *s)
                    })
                    .count(),
                graylisted_after_ms_max: graylisted.iter().max().map(|&at| since_spam(at)),
                disconnected_after_ms_max: disconnected.iter().max().map(|&at| since_spam(at)),
                ended_after_ms_max: first_graylist_or_disconnect
                    .iter()
                    .max()
                    .map(|&at| since_spam(at)),
                sybil_invalid_penalties: sim.counter_sum(|c| c.gossip_messages_rejected),
                rpcs_graylisted: sim.counter_sum(|c| c.gossip_rpcs_graylisted),
                sybils_banned: sim.notification_counts().peer_banned,
            }
        });
        let target = self.eclipse_target.map(|target| {
            let from_others = self
                .published
                .values()
                .filter(|p| p.publisher != target)
                .count() as u64;
            let mesh = sim.node(target).gossip().mesh_peers(&self.topic);
            let sybils_in_mesh = mesh
                .iter()
                .filter(|peer| sim.index_of(**peer).is_some_and(|n| self.sybil[n.0]))
                .count();
            let peers = sim.peers_of(target);
            EclipseOutcome {
                target: target.0,
                target_delivery_ratio: ratio(self.target_deliveries, from_others),
                target_deliveries: self.target_deliveries,
                target_expected: from_others,
                target_peers: peers.len(),
                target_sybil_peers: peers.iter().filter(|n| self.sybil[n.0]).count(),
                target_mesh_at_end: mesh.len(),
                target_sybils_in_mesh_at_end: sybils_in_mesh,
            }
        });
        let prune_flood = self.watch.as_ref().map(|watch| {
            let honest_router_sum = |field: fn(&meshsync_core::gossip::Counters) -> u64| -> u64 {
                honest
                    .iter()
                    .map(|&n| field(sim.node(n).gossip().counters()))
                    .sum()
            };
            PruneFloodOutcome {
                flooded_honest_nodes: self.churn.as_ref().map_or(0, |c| c.flooded),
                sybil_identities: self.churn.as_ref().map_or(0, |c| c.identities),
                sybil_connections: watch.sybil_connections,
                prunes_received_by_honest: honest_router_sum(|c| c.prunes_received),
                grafts_refused_in_backoff_by_honest: honest_router_sum(|c| {
                    c.grafts_refused_in_backoff
                }),
                honest_grafts_in_backoff: watch
                    .grafts_refused
                    .values()
                    .map(|&n| u64::from(n))
                    .sum(),
                honest_pairs_grafted_in_backoff: watch.grafts_refused.len(),
                honest_pairs_graylisted: watch.honest_pairs_graylisted.len(),
                honest_pairs_disconnected: watch.honest_pairs_disconnected.len(),
                honest_score_min: watch.honest_score_min,
                backoffs_max: watch.backoffs_max,
                backoffs_bound: PEERS_MAX,
                watch_samples: watch.samples,
            }
        });
        GossipOutcome {
            floodsub: params.floodsub,
            attack: format!("{:?}", params.attack),
            honest_nodes: self.honest_count,
            sybils: self.sybils.len(),
            publishers: self.publishers.len(),
            messages_per_second: params.messages_per_second,
            message_bytes: params.message_bytes,
            publish_seconds: millis(
                self.publish_end
                    .saturating_duration_since(self.publish_start),
            ) / 1_000.0,
            messages_published: messages,
            publish_failed: self.publish_failed,
            deliveries,
            expected_deliveries: expected,
            delivery_ratio: ratio(deliveries, expected),
            worst_message_delivery_ratio: worst_message
                .map(|got| ratio(got, receivers_per_message)),
            latency_ms_p50: p50,
            latency_ms_p99: p99,
            latency_ms_max: latency_max,
            duplicates_per_delivery: ratio(copies, deliveries),
            bytes_sent,
            bytes_sent_per_delivered_byte: if delivered_bytes == 0 {
                None
            } else {
                Some(bytes_sent as f64 / delivered_bytes as f64)
            },
            idontwant_suppressed: router_sum(|c| c.idontwant_suppressed),
            gossip_dropped: router_sum(|c| c.gossip_dropped),
            slow_peers_disconnected: sim.counter_sum(|c| c.gossip_slow_peers),
            promises_broken: router_sum(|c| c.promises_broken),
            send_buffer_overflows: sim.network_counts().send_buffer_overflows,
            connections_stalled: sim.counter_sum(|c| c.connections_stalled),
            topology: self.topology.clone(),
            spam,
            eclipse: target,
            prune_flood,
            without_sybils: None,
            trace_hash: None,
        }
    }
}

impl Application for GossipApp {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token: wake } => match split_token(wake) {
                (TOKEN_PUBLISH, _) | (TOKEN_SPAM, _) if sim.now() >= self.publish_end => {}
                (TOKEN_PUBLISH, number) => {
                    let next = self.publish_start
                        + Duration::from_micros(self.interval_us * (number as u64 + 1));
                    if next < self.publish_end {
                        sim.wake_at(next, token(TOKEN_PUBLISH, number + 1));
                    }
                    self.publish(sim, number as u64);
                }
                (TOKEN_SPAM, number) => {
                    let next = self.publish_start
                        + Duration::from_micros(self.spam_interval_us * (number as u64 + 1));
                    if next < self.publish_end {
                        sim.wake_at(next, token(TOKEN_SPAM, number + 1));
                    }
                    self.spam(sim, number as u64);
                }
                (TOKEN_CHURN, _) if sim.now() >= self.publish_end => {}
                (TOKEN_CHURN, slot) => self.churn(sim, slot),
                (TOKEN_WATCH, _) => {
                    sim.wake_at(sim.now() + WATCH_INTERVAL, wake);
                    self.watch_honest(sim);
                }
                (TOKEN_SAMPLE, _) => {
                    // Until the run ends: the world stops at its deadline anyway.
                    sim.wake_at(sim.now() + SAMPLE_INTERVAL, wake);
                    self.sample_relations(sim);
                }
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } => {
                self.on_notification(sim, node, notification)
            }
        }
    }
}

/// What a gossip run showed: the summary's `outcome`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GossipOutcome {
    /// Every node ran floodsub.
    pub floodsub: bool,
    /// The Sybils' plan.
    pub attack: String,
    /// Honest nodes.
    pub honest_nodes: usize,
    /// Sybils.
    pub sybils: usize,
    /// Honest publishers taking turns.
    pub publishers: usize,
    /// Messages per second, over all publishers.
    pub messages_per_second: f64,
    /// Bytes per payload.
    pub message_bytes: usize,
    /// Seconds of publishing.
    pub publish_seconds: f64,
    /// Messages honest publishers were told to publish.
    pub messages_published: u64,
    /// Of those, refused by the publisher's core.
    pub publish_failed: u64,
    /// Messages received by honest nodes other than their publisher.
    pub deliveries: u64,
    /// Messages published × (honest nodes − 1).
    pub expected_deliveries: u64,
    /// `deliveries / expected_deliveries`.
    pub delivery_ratio: f64,
    /// The delivery ratio of the message that reached the fewest nodes.
    pub worst_message_delivery_ratio: Option<f64>,
    /// Publish → notification, median, ms.
    pub latency_ms_p50: Option<f64>,
    /// Publish → notification, 99th percentile, ms.
    pub latency_ms_p99: Option<f64>,
    /// Publish → notification, slowest, ms.
    pub latency_ms_max: Option<f64>,
    /// (Router messages received + duplicates) over deliveries, honest nodes.
    pub duplicates_per_delivery: f64,
    /// Bytes every node sent from the first publish to the end.
    pub bytes_sent: u64,
    /// `bytes_sent / (deliveries × message_bytes)`.
    pub bytes_sent_per_delivered_byte: Option<f64>,
    /// Messages not sent (or cancelled while queued) because of IDONTWANT, all nodes.
    pub idontwant_suppressed: u64,
    /// Gossip items dropped from full send queues, all nodes.
    pub gossip_dropped: u64,
    /// Peers disconnected because their gossip send queue overflowed, all nodes.
    pub slow_peers_disconnected: u64,
    /// IHAVE promises broken (IWANT not answered in time), all nodes.
    pub promises_broken: u64,
    /// Connections the driver gave up because their send buffer was full.
    pub send_buffer_overflows: u64,
    /// Connections cut because their peer took nothing for
    /// `WRITE_STALL_TIMEOUT` (Goodbye and a Mid penalty), all nodes.
    pub connections_stalled: u64,
    /// Topology and meshes when publishing started.
    pub topology: Option<TopologyCheck>,
    /// `gossip-spam`: what became of the Sybils.
    pub spam: Option<SpamOutcome>,
    /// `gossip-eclipse`: what the target received.
    pub eclipse: Option<EclipseOutcome>,
    /// `prune-flood`: what the Sybils did and what honest nodes did to each other.
    pub prune_flood: Option<PruneFloodOutcome>,
    /// The same world without Sybils, same seed (when asked for).
    pub without_sybils: Option<Box<GossipOutcome>>,
    /// The trace hash of that world (set on the world without Sybils only).
    pub trace_hash: Option<String>,
}

/// `gossip-spam`'s own fields: honest → Sybil relations and how they ended.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpamOutcome {
    /// Invalid messages the Sybils were told to publish.
    pub spam_published: u64,
    /// Invalid messages honest nodes received (and rejected).
    pub spam_received_by_honest: u64,
    /// (honest node, Sybil) pairs that were ever peers.
    pub honest_sybil_relations: usize,
    /// Of those, where the Sybil's gossip score fell below the graylist threshold.
    pub relations_graylisted: usize,
    /// Of those, where the honest node disconnected (or lost) the Sybil.
    pub relations_disconnected: usize,
    /// Of those, either.
    pub relations_graylisted_or_disconnected: usize,
    /// Still connected at the end and neither graylisted nor disconnected.
    pub relations_still_open: usize,
    /// The last relation to be graylisted, ms after the spam started.
    pub graylisted_after_ms_max: Option<f64>,
    /// The last relation to be disconnected, ms after the spam started.
    pub disconnected_after_ms_max: Option<f64>,
    /// The last relation to end either way, ms after the spam started.
    pub ended_after_ms_max: Option<f64>,
    /// Messages rejected by applications, all nodes.
    pub sybil_invalid_penalties: u64,
    /// Gossip RPCs dropped unread (graylisted sender), all nodes.
    pub rpcs_graylisted: u64,
    /// `PeerBanned` notifications, all nodes.
    pub sybils_banned: u64,
}

/// `prune-flood`'s own fields. Honest pairs are (honest node, honest peer),
/// looked at every 500 ms and at every disconnect.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneFloodOutcome {
    /// Honest nodes the Sybils dial (the rest are never flooded).
    pub flooded_honest_nodes: usize,
    /// Sybil identities that took part, first ones included.
    pub sybil_identities: u64,
    /// Connections honest nodes made with Sybils.
    pub sybil_connections: u64,
    /// PRUNEs honest nodes received on the topic (the Sybils' and honest ones).
    pub prunes_received_by_honest: u64,
    /// GRAFTs honest nodes refused inside a backoff, from anyone.
    pub grafts_refused_in_backoff_by_honest: u64,
    /// GRAFTs honest nodes refused from honest peers inside a backoff
    /// (an honest GRAFT inside a backoff its peer asked for). Must be 0.
    pub honest_grafts_in_backoff: u64,
    /// Honest pairs with such a GRAFT. Must be 0.
    pub honest_pairs_grafted_in_backoff: usize,
    /// Honest pairs where the node's gossip score of the peer fell below the
    /// graylist threshold. Must be 0.
    pub honest_pairs_graylisted: usize,
    /// Honest pairs where the node lost or banned the peer. Must be 0.
    pub honest_pairs_disconnected: usize,
    /// The lowest gossip score an honest node gave an honest peer.
    pub honest_score_min: Option<f64>,
    /// The most backoffs one honest node held at once.
    pub backoffs_max: usize,
    /// What that must stay within: one per connected peer on our one topic.
    pub backoffs_bound: usize,
    /// Times honest nodes were looked at.
    pub watch_samples: u64,
}

/// `gossip-eclipse`'s own fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EclipseOutcome {
    /// The target's node index.
    pub target: usize,
    /// Messages from other publishers the target received, over those published.
    pub target_delivery_ratio: f64,
    /// Messages from other publishers the target received.
    pub target_deliveries: u64,
    /// Messages published by others.
    pub target_expected: u64,
    /// The target's peers at the end.
    pub target_peers: usize,
    /// Of those, Sybils.
    pub target_sybil_peers: usize,
    /// The target's mesh at the end.
    pub target_mesh_at_end: usize,
    /// Of those, Sybils.
    pub target_sybils_in_mesh_at_end: usize,
}

impl Scenario for GossipScenario {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = &self.params;
        let sybil_count = params.sybil_count(nodes);
        let honest_count = nodes - sybil_count;
        assert!(
            honest_count >= 2,
            "{} needs at least 2 honest nodes",
            self.name
        );
        let topic = Topic::new(TOPIC_NAME).expect("a valid topic name");
        let mut config = sim.node_config();
        config.gossip.floodsub = params.floodsub;
        if let Some(mesh_n_high) = params.mesh_n_high {
            config.gossip.mesh_n_high = mesh_n_high;
        }

        // Honest nodes, their topology, publishers and payloads first: a
        // world without Sybils from the same seed draws the same.
        let honest: Vec<NodeIndex> = (0..honest_count)
            .map(|_| sim.add_node_with_config(config.clone()))
            .collect();
        let sybil_room = match params.attack {
            Attack::Eclipse => sybil_count.min(PEERS_MAX / 2),
            Attack::None => 0,
            _ => params.extra_dials_per_node * 2,
        };
        let dials = plan_topology(
            sim.scenario_rng(),
            honest_count,
            params.extra_dials_per_node,
            PEERS_MAX.saturating_sub(sybil_room).max(2),
        );
        let spread_us = u64::try_from(params.dial_spread.as_micros()).unwrap_or(u64::MAX);
        // Eclipse: the Sybils dial first; honest dials wait a little.
        let honest_dial_offset_us = if params.attack == Attack::Eclipse {
            200_000
        } else {
            0
        };
        for (from, to) in dials {
            let at = Instant::from_micros(
                honest_dial_offset_us + rng::below(sim.scenario_rng(), spread_us.max(1)),
            );
            sim.dial_at(at, NodeIndex(from), NodeIndex(to));
        }
        let mut publishers = honest.clone();
        rng::shuffle(sim.scenario_rng(), &mut publishers);
        publishers.truncate(params.publishers.clamp(1, honest_count));
        let payloads = ChaCha20Rng::from_seed(rng::seed_bytes(sim.scenario_rng()));
        let eclipse_target = (params.attack == Attack::Eclipse).then(|| {
            // Not a publisher, so every honest message is one it must receive.
            let candidates: Vec<NodeIndex> = honest
                .iter()
                .copied()
                .filter(|n| !publishers.contains(n))
                .collect();
            candidates.first().copied().unwrap_or(honest[0])
        });

        // Then the Sybils.
        let mut sybil_config = config.clone();
        if matches!(params.attack, Attack::Withhold | Attack::Eclipse) {
            sybil_config.gossip.fault_withhold = true;
        }
        if matches!(params.attack, Attack::PruneFlood { .. }) {
            sybil_config.gossip.fault_prune_flood = true;
        }
        let sybils: Vec<NodeIndex> = (0..sybil_count)
            .map(|_| sim.add_node_with_config(sybil_config.clone()))
            .collect();
        // The honest nodes Sybils dial: the first `flooded` (the topology
        // is drawn at random, so these are as good as any).
        let flooded = match params.attack {
            Attack::PruneFlood { flooded_pct, .. } => {
                (honest_count * flooded_pct as usize / 100).clamp(1, honest_count)
            }
            _ => honest_count,
        };
        for &sybil in &sybils {
            match eclipse_target {
                Some(target) => sim.dial_at(Instant::ZERO, sybil, target),
                None => {
                    let mut targets: BTreeSet<usize> = BTreeSet::new();
                    for _ in 0..params.extra_dials_per_node {
                        targets.insert(rng::index(sim.scenario_rng(), flooded));
                    }
                    for target in targets {
                        let at =
                            Instant::from_micros(rng::below(sim.scenario_rng(), spread_us.max(1)));
                        sim.dial_at(at, sybil, NodeIndex(target));
                    }
                }
            }
        }

        for node in sim.node_indices().collect::<Vec<_>>() {
            sim.command_at(
                Instant::ZERO,
                node,
                Command::Subscribe {
                    topic: topic.clone(),
                },
            );
        }
        let mut sybil_flags = vec![false; honest_count];
        sybil_flags.resize(nodes, true);
        let publish_start = Instant::ZERO + params.warmup;
        sim.wake_at(publish_start, token(TOKEN_PUBLISH, 0));
        let spam_interval_us = match params.attack {
            Attack::Spam {
                messages_per_second,
            } if sybil_count > 0 && messages_per_second > 0 => {
                sim.wake_at(publish_start, token(TOKEN_SPAM, 0));
                sim.wake_at(publish_start, token(TOKEN_SAMPLE, 0));
                (1_000_000 / u64::from(messages_per_second)).max(1)
            }
            _ => 0,
        };
        let churn = match params.attack {
            Attack::PruneFlood { visit, .. } => {
                assert!(!visit.is_zero(), "an identity stays a while");
                let visit_us = u64::try_from(visit.as_micros()).unwrap_or(u64::MAX);
                // Staggered: each slot's first identity leaves at a random
                // instant within its first visit, after its dials.
                for slot in 0..sybils.len() {
                    let stay = visit_us + rng::below(sim.scenario_rng(), visit_us);
                    sim.wake_at(Instant::from_micros(stay), token(TOKEN_CHURN, slot));
                }
                sim.wake_at(Instant::ZERO + WATCH_INTERVAL, token(TOKEN_WATCH, 0));
                Some(Churn {
                    config: sybil_config.clone(),
                    visit,
                    dials: params.extra_dials_per_node,
                    flooded,
                    identities: sybils.len() as u64,
                })
            }
            _ => None,
        };
        let watch = churn.as_ref().map(|_| FloodWatch::default());
        self.app = Some(GossipApp {
            topic,
            sybil: sybil_flags,
            honest_count,
            publishers,
            sybils,
            eclipse_target,
            publish_start,
            // Set by `run`, which knows the duration.
            publish_end: publish_start,
            interval_us: params.interval_us(),
            spam_interval_us,
            message_bytes: params.message_bytes,
            payloads,
            published: BTreeMap::new(),
            publish_failed: 0,
            latencies: Vec::new(),
            target_deliveries: 0,
            spam_published: 0,
            spam_received_by_honest: 0,
            track_relations: spam_interval_us > 0,
            relations: BTreeMap::new(),
            bytes_sent_at_start: 0,
            topology: None,
            churn,
            watch,
        });
    }

    /// Warms up, publishes for `duration`, drains.
    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        if self.params.compare_without_sybils && self.params.sybil_count(sim.node_count()) > 0 {
            let honest = self.app().honest_count;
            self.without_sybils = Some(Box::new(self.run_without_sybils(sim, honest, duration)));
        }
        let drain = self.params.drain;
        let app = self.app.as_mut().expect("built before run");
        app.publish_end = app.publish_start + duration;
        let until_start = app.publish_start.saturating_duration_since(sim.now());
        // Publishing starts at the first wake-up, at `publish_start`: stop just before.
        app::run_for(
            sim,
            app,
            until_start.saturating_sub(Duration::from_micros(1)),
        );
        app.check_topology(sim);
        app.bytes_sent_at_start = sim.network_counts().bytes_sent;
        if self.params.attack == Attack::SlowReaders {
            for &sybil in &app.sybils {
                sim.set_stops_reading(sybil, true);
            }
        }
        app::run_for(
            sim,
            app,
            app.publish_end.saturating_duration_since(sim.now()) + drain,
        );
    }

    fn deliveries(&self) -> Option<Deliveries> {
        let app = self.app.as_ref()?;
        let receivers_per_message = app.honest_count.saturating_sub(1) as u64;
        Some(Deliveries {
            latencies: app.latencies.clone(),
            expected: app.published.len() as u64 * receivers_per_message,
        })
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        self.app.as_ref()?;
        // A struct of numbers, strings and options always serialises.
        Some(serde_json::to_value(self.measure(sim)).expect("outcome serialises"))
    }

    /// See the module docs' "What must hold".
    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let mut bounds = Bounds::default();
        if self.app.is_none() {
            return bounds.into_broken();
        }
        let outcome = self.measure(sim);
        let delivery_min = self.params.delivery_ratio_min;
        bounds.require(outcome.delivery_ratio >= delivery_min, || {
            format!(
                "honest delivery {:.6} is below {delivery_min} ({} of {})",
                outcome.delivery_ratio, outcome.deliveries, outcome.expected_deliveries
            )
        });
        if let Some(eclipse) = &outcome.eclipse {
            bounds.require(
                eclipse.target_delivery_ratio >= DELIVERY_RATIO_COLD_BOOT_MIN,
                || {
                    format!(
                        "the eclipse target received {} of {} messages",
                        eclipse.target_deliveries, eclipse.target_expected
                    )
                },
            );
        }
        if let Some(flood) = &outcome.prune_flood {
            bounds.require(flood.honest_grafts_in_backoff == 0, || {
                format!(
                    "{} honest GRAFTs inside a backoff an honest peer asked for",
                    flood.honest_grafts_in_backoff
                )
            });
            bounds.require(
                flood.honest_pairs_graylisted == 0 && flood.honest_pairs_disconnected == 0,
                || {
                    format!(
                        "honest pairs graylisted {}, lost or banned {}",
                        flood.honest_pairs_graylisted, flood.honest_pairs_disconnected
                    )
                },
            );
        }
        bounds.into_broken()
    }
}
