//! `churn`: nodes keep leaving for good and fresh ones keep arriving, while
//! gossip runs; the network stays one piece and every message arrives.
//!
//! # The story
//! Three bootnodes know each other and never leave. The other nodes start
//! at moments drawn from the seed within the first
//! [`ChurnParams::starts_within`], each knowing only the bootnodes, and
//! form the network by Kademlia discovery exactly as in `discovery`
//! (private addresses allowed, the per-subnet caps off, the target of
//! `PEERS_TARGET` peers, trimming above it every 10 s).
//!
//! Then come the rounds: round *k* (from 1) begins at *k* ×
//! [`ChurnParams::round`] and replaces [`ChurnParams::replaced_pct`] of the
//! nodes that are not bootnodes. At its beginning the seed picks that many
//! of the non-bootnodes that are up (joiners of the round before are among
//! them); each leaves for good (a crash: it never comes back) at an instant
//! drawn within the round. As many *fresh* nodes, new identities added to
//! the world the instant they start, arrive at instants drawn within the
//! round, knowing only the bootnodes. So at any time the network holds
//! about `--nodes` nodes, and over the run far more identities take part
//! (30 min with 5 min rounds: 5 rounds of 149 at 500 nodes, 1,245 in all).
//!
//! All along, every node subscribes to one topic the instant it starts,
//! and from the end of the first start window a node picked by the seed
//! among the *settled* non-bootnodes (up, and have held half their target
//! for two gossip heartbeats, [`Churn::SETTLED_FOR`])
//! publishes a small message every [`ChurnParams::publish_interval`], until
//! [`ChurnParams::grace`] before the end. Every node accepts every message.
//!
//! # What is measured
//! - Every [`Churn::SAMPLE_EVERY`] once the first start window is over (the
//!   warm-up): the connected components of the mutual peer graph among the
//!   nodes that are up and have joined it, that is, were seen at an
//!   earlier sample or this one holding a peer that holds them too (a node
//!   that has not yet met anyone is not yet part of the network; a node
//!   that met some and lost them all is, and splits it; a dialler lists
//!   its peer half a round trip before the peer lists it, which is no
//!   split); the peers of each settled node (min per round and over the
//!   run, max, mean) and of each bootnode (max); and, at the end, how many
//!   peers the connection managers trimmed.
//! - Delivery: a message is expected at every node that was settled when
//!   it was published and stayed up until [`ChurnParams::grace`] after it,
//!   its publisher aside; nodes that left or joined in that window are left
//!   out. It is delivered there if the node's `GossipMessage` notification
//!   came within the grace. `delivery_ratio` is deliveries over expected,
//!   summed over messages.
//! - For every node but the bootnodes: the time from its start to holding
//!   half its target (rounded up), exact (from its `PeerConnected`
//!   notifications), reported for the fresh joiners and the first starters
//!   apart. A node is judged once it reached it, or once it stayed up
//!   [`Churn::TO_HALF_TARGET_BOUND`] without; one that left earlier, or was
//!   still within the bound at the end, is not judged.
//!
//! What must hold: the peer graph is one component at every sample after
//! the warm-up; `delivery_ratio` is at least [`Churn::DELIVERY_RATIO_MIN`];
//! every judged node holds half its target within
//! [`Churn::TO_HALF_TARGET_BOUND`] of its start; no bootnode is a hub (at
//! most twice the target at any sample); and at least one round ran.
//!
//! The command line runs 5 min rounds: `--duration 30m` (the default) is
//! the 30 min, five rounds after a first round's worth of
//! forming. A duration shorter than a round replaces nobody and breaks the
//! last bound.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::gossip::router::HEARTBEAT_INTERVAL;
use meshsync_core::gossip::{MessageId, Topic, Validation};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::{Command, Config, Duration, Instant, Notification};

use super::story::{Bounds, Scenario};
use super::topology::mutual_components;
use super::workload::{split_token, token};
use crate::app::{self, AppEvent, Application};
use crate::network;
use crate::requests::{millis, percentile};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// The topic every node subscribes to.
pub const TOPIC_NAME: &str = "meshsync/churn/1";

/// Bytes at the front of every payload that make it unique: the publish number.
const PAYLOAD_NUMBER_BYTES: usize = 8;

const TOKEN_JOIN: u16 = 1;
const TOKEN_LEAVE: u16 = 2;
const TOKEN_ROUND: u16 = 3;
const TOKEN_SAMPLE: u16 = 4;
const TOKEN_PUBLISH: u16 = 5;
const TOKEN_JUDGE: u16 = 6;

/// What a [`Churn`] run does; [`ChurnParams::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct ChurnParams {
    /// Bootnodes, the first nodes of the world; they never leave.
    pub bootnodes: usize,
    /// Peers each node aims for.
    pub peers_target: usize,
    /// The first nodes start within this of the beginning; it is also the
    /// warm-up before components are judged and messages published.
    pub starts_within: Duration,
    /// The length of a round; round *k* begins at *k* × this.
    pub round: Duration,
    /// Non-bootnodes replaced per round, in percent (rounded to the nearest node).
    pub replaced_pct: u32,
    /// Time between two publishes.
    pub publish_interval: Duration,
    /// Bytes of every payload.
    pub message_bytes: usize,
    /// How long after its publication a message must have arrived, and
    /// its receivers must have stayed up, to count.
    pub grace: Duration,
}

impl Default for ChurnParams {
    fn default() -> ChurnParams {
        ChurnParams {
            bootnodes: 3,
            peers_target: meshsync_core::peer::PEERS_TARGET,
            starts_within: Duration::from_secs(60),
            round: Duration::from_secs(5 * 60),
            replaced_pct: 30,
            // Two small messages a second: gossip is running all along,
            // and 30 min of it at 500 nodes stays affordable.
            publish_interval: Duration::from_millis(500),
            message_bytes: 128,
            // Gossip's slowest path, IHAVE at a 700 ms heartbeat and then
            // IWANT, takes a heartbeat or two; 5 s leaves room for slow
            // links and a message queued behind others.
            grace: Duration::from_secs(5),
        }
    }
}

impl ChurnParams {
    /// Half the target, rounded up: what a node must hold to be settled.
    pub fn half_target(&self) -> usize {
        self.peers_target.div_ceil(2)
    }

    /// Non-bootnodes replaced per round in a network of `nodes`.
    pub fn replaced_per_round(&self, nodes: usize) -> usize {
        let others = nodes.saturating_sub(self.bootnodes);
        (others * self.replaced_pct as usize + 50) / 100
    }
}

/// The scenario; [`Churn::default`] is what the command line runs.
#[derive(Clone, Debug)]
pub struct Churn {
    /// What to run.
    pub params: ChurnParams,
    app: Option<ChurnApp>,
}

impl Churn {
    /// The scenario's name.
    pub const NAME: &'static str = "churn";
    /// Nodes by default: the full size.
    pub const NODES_DEFAULT: usize = 500;
    /// Virtual time by default: the 30 min, the network forming in
    /// the first 5 min and five rounds after it.
    pub const DURATION_DEFAULT: Duration = Duration::from_secs(30 * 60);
    /// Every node must hold half its target within this of its start, as
    /// in `discovery`: two refreshes below target (30 s each) and their lookups.
    pub const TO_HALF_TARGET_BOUND: Duration = Duration::from_secs(90);
    /// Deliveries over expected, at least.
    pub const DELIVERY_RATIO_MIN: f64 = 0.999;
    /// How often the run samples the peer graph.
    pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
    /// How long a node must have held half its target before a message
    /// is expected of it (or published by it): two gossip heartbeats, its
    /// own and its peers', at which meshes graft. A message that went by a
    /// node's peers before they grafted it never reaches it: at the
    /// heartbeat that grafts it, IHAVE goes only to peers outside the mesh.
    /// Gossipsub promises nothing for it, so neither does this story.
    pub const SETTLED_FOR: Duration =
        Duration::from_millis(2 * HEARTBEAT_INTERVAL.as_millis() as u64);

    /// The scenario with `params`.
    pub fn new(params: ChurnParams) -> Churn {
        assert!(params.replaced_pct <= 100, "at most every node is replaced");
        assert!(
            params.starts_within < params.round,
            "the first nodes have all started before the first round"
        );
        assert!(
            !params.publish_interval.is_zero(),
            "messages are published at intervals"
        );
        Churn { params, app: None }
    }

    fn app(&self) -> &ChurnApp {
        self.app.as_ref().expect("built before use")
    }
}

impl Default for Churn {
    fn default() -> Churn {
        Churn::new(ChurnParams::default())
    }
}

/// Which part a node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Known to everyone, never leaves.
    Bootnode,
    /// Started in the first start window.
    First,
    /// A fresh identity that arrived in a round.
    Joiner,
}

/// One node's life, as the run saw it.
#[derive(Clone, Debug)]
struct Life {
    role: Role,
    started: Instant,
    left: Option<Instant>,
    /// The first sample at which it and a peer listed each other: from
    /// then on it is part of the network.
    joined_at: Option<Instant>,
    /// When it first held half its target: [`Churn::SETTLED_FOR`] later it
    /// is settled.
    half_at: Option<Instant>,
}

impl Life {
    /// Up, and has held half its target for [`Churn::SETTLED_FOR`] by `now`.
    fn is_settled(&self, now: Instant) -> bool {
        self.left.is_none()
            && self
                .half_at
                .is_some_and(|at| at + Churn::SETTLED_FOR <= now)
    }
}

/// A published message waiting for its grace to pass.
#[derive(Clone, Debug)]
struct Pending {
    id: MessageId,
    at: Instant,
    /// Settled nodes other than the publisher at publication, in index order.
    receivers: Vec<NodeIndex>,
    /// Nodes that received it, with when.
    deliveries: Vec<(NodeIndex, Instant)>,
}

/// What the samples of the peer graph saw.
#[derive(Clone, Debug, Default)]
struct Samples {
    count: u64,
    components_max: usize,
    /// Samples where the graph was more than one component.
    split: u64,
    /// When it first was.
    first_split_at: Option<Instant>,
    peers_min: Option<usize>,
    /// Fewest peers of a settled node, by round (0: before the first).
    peers_min_by_round: Vec<Option<usize>>,
    /// Most peers of a settled node.
    peers_max: usize,
    /// Sum over samples of the mean peers of settled nodes, and how many
    /// samples had any.
    peers_mean_sum: f64,
    peers_mean_samples: u64,
    bootnode_peers_max: usize,
    /// Sum over samples of the mean peers of the bootnodes.
    bootnode_peers_mean_sum: f64,
    /// Most nodes in the network (have held a peer) at one sample.
    network_max: usize,
    /// Fewest nodes in the network at one sample.
    network_min: Option<usize>,
}

/// The world's plan and what the run saw, built by [`Churn::build`].
#[derive(Clone, Debug)]
struct ChurnApp {
    params: ChurnParams,
    topic: Topic,
    /// Nodes in the network at any time (`--nodes`).
    nodes: usize,
    config: Config,
    bootnodes: Vec<(meshsync_core::PeerId, std::net::SocketAddr)>,
    lives: Vec<Life>,
    end: Instant,
    rounds: usize,
    leaves: usize,
    joins: usize,
    samples: Samples,
    publish_end: Instant,
    messages_published: u64,
    publish_failed: u64,
    /// Publishes that found no settled node to publish from.
    publish_skipped: u64,
    pending: BTreeMap<u64, Pending>,
    pending_ids: BTreeMap<MessageId, u64>,
    messages_judged: u64,
    deliveries_expected: u64,
    deliveries: u64,
    worst_message_ratio: Option<f64>,
    latencies: Vec<Duration>,
}

impl ChurnApp {
    fn half_target(&self) -> usize {
        self.params.half_target()
    }

    /// Adds a node that starts now, knowing only the bootnodes, and joins the topic.
    fn start_node(&mut self, sim: &mut Sim, role: Role) -> NodeIndex {
        let index = NodeIndex(sim.node_count());
        let mut config = self.config.clone();
        config.discovery = Some(DiscoveryConfig {
            addresses: vec![network::node_address(index, config.listen_port)],
            allow_private: true,
            subnet_limits: false,
            bootnodes: self.bootnodes.clone(),
            peers_target: self.params.peers_target,
            record_seq: 1,
            learn_address_port: None,
        });
        let node = sim.add_node_with_config(config);
        assert_eq!(node, index, "nodes are numbered in order");
        assert_eq!(self.lives.len(), index.0, "one life per node");
        self.lives.push(Life {
            role,
            started: sim.now(),
            left: None,
            joined_at: None,
            half_at: None,
        });
        sim.command(
            node,
            Command::Subscribe {
                topic: self.topic.clone(),
            },
        );
        if role == Role::Bootnode {
            self.bootnodes.push((sim.peer_id(node), sim.addr(node)));
        }
        node
    }

    /// Round `round` begins: the seed picks who leaves and when, and when
    /// the fresh nodes arrive, all within the round.
    fn begin_round(&mut self, sim: &mut Sim, round: usize) {
        self.rounds += 1;
        let mut up: Vec<NodeIndex> = (0..self.lives.len())
            .filter(|&i| self.lives[i].role != Role::Bootnode && self.lives[i].left.is_none())
            .map(NodeIndex)
            .collect();
        let replaced = self.params.replaced_per_round(self.nodes).min(up.len());
        rng::shuffle(sim.scenario_rng(), &mut up);
        let round_us = u64::try_from(self.params.round.as_micros()).unwrap_or(u64::MAX);
        let now = sim.now();
        for &node in &up[..replaced] {
            let at = now + Duration::from_micros(rng::below(sim.scenario_rng(), round_us));
            sim.wake_at(at, token(TOKEN_LEAVE, node.0));
        }
        for _ in 0..replaced {
            let at = now + Duration::from_micros(rng::below(sim.scenario_rng(), round_us));
            sim.wake_at(at, token(TOKEN_JOIN, round));
        }
    }

    fn leave(&mut self, sim: &mut Sim, node: NodeIndex) {
        let life = &mut self.lives[node.0];
        assert!(life.left.is_none(), "{node} leaves once");
        life.left = Some(sim.now());
        sim.crash(node);
        self.leaves += 1;
    }

    /// A settled non-bootnode, picked by the seed, publishes the next message.
    fn publish(&mut self, sim: &mut Sim, number: u64) {
        let now = sim.now();
        let settled: Vec<NodeIndex> = (0..self.lives.len())
            .filter(|&i| self.lives[i].is_settled(now))
            .map(NodeIndex)
            .collect();
        let publishers: Vec<NodeIndex> = settled
            .iter()
            .copied()
            .filter(|&n| self.lives[n.0].role != Role::Bootnode)
            .collect();
        if publishers.is_empty() {
            self.publish_skipped += 1;
            return;
        }
        let publisher = publishers[rng::index(sim.scenario_rng(), publishers.len())];
        let mut payload = vec![0u8; self.params.message_bytes.max(PAYLOAD_NUMBER_BYTES)];
        payload[..PAYLOAD_NUMBER_BYTES].copy_from_slice(&number.to_be_bytes());
        let id = MessageId::compute(&self.topic, &payload);
        self.pending.insert(
            number,
            Pending {
                id,
                at: now,
                receivers: settled.into_iter().filter(|&n| n != publisher).collect(),
                deliveries: Vec::new(),
            },
        );
        let previous = self.pending_ids.insert(id, number);
        assert!(previous.is_none(), "payloads are unique by their number");
        self.messages_published += 1;
        sim.wake_at(now + self.params.grace, token(TOKEN_JUDGE, number as usize));
        sim.command(
            publisher,
            Command::Publish {
                topic: self.topic.clone(),
                payload,
            },
        );
    }

    /// The grace of message `number` is over: count who got it in time
    /// among the receivers that stayed up.
    fn judge(&mut self, sim: &Sim, number: u64) {
        let pending = self
            .pending
            .remove(&number)
            .expect("each message is judged once");
        self.pending_ids.remove(&pending.id);
        let mut delivered: BTreeMap<NodeIndex, Instant> = BTreeMap::new();
        for &(node, at) in &pending.deliveries {
            delivered.entry(node).or_insert(at);
        }
        let (mut expected, mut got) = (0u64, 0u64);
        for &node in &pending.receivers {
            // Nobody comes back: up now means up all along.
            if !sim.is_up(node) {
                continue;
            }
            expected += 1;
            if let Some(&at) = delivered.get(&node) {
                got += 1;
                self.latencies
                    .push(at.saturating_duration_since(pending.at));
            }
        }
        self.messages_judged += 1;
        self.deliveries_expected += expected;
        self.deliveries += got;
        if expected > 0 {
            let ratio = got as f64 / expected as f64;
            let worst = self.worst_message_ratio.get_or_insert(ratio);
            *worst = worst.min(ratio);
        }
    }

    /// Looks at the peer graph.
    fn sample(&mut self, sim: &Sim) {
        let now = sim.now();
        for (index, life) in self.lives.iter_mut().enumerate() {
            let node = NodeIndex(index);
            if life.left.is_none()
                && life.joined_at.is_none()
                && sim
                    .peers_of(node)
                    .into_iter()
                    .any(|peer| sim.has_peer(peer, node))
            {
                life.joined_at = Some(now);
            }
        }
        if now < Instant::ZERO + self.params.starts_within {
            return;
        }
        let members: BTreeSet<NodeIndex> = (0..self.lives.len())
            .filter(|&i| self.lives[i].left.is_none() && self.lives[i].joined_at.is_some())
            .map(NodeIndex)
            .collect();
        let components = mutual_components(sim, &members);
        let settled_peers: Vec<usize> = (0..self.lives.len())
            .filter(|&i| self.lives[i].is_settled(now))
            .map(|i| sim.node(NodeIndex(i)).peer_count())
            .collect();
        let round = self.rounds;
        let samples = &mut self.samples;
        samples.count += 1;
        samples.components_max = samples.components_max.max(components);
        if components > 1 {
            samples.split += 1;
            samples.first_split_at.get_or_insert(now);
        }
        samples.network_max = samples.network_max.max(members.len());
        let network_min = samples.network_min.get_or_insert(members.len());
        *network_min = (*network_min).min(members.len());
        if let Some(&min) = settled_peers.iter().min() {
            let overall = samples.peers_min.get_or_insert(min);
            *overall = (*overall).min(min);
            if samples.peers_min_by_round.len() <= round {
                samples.peers_min_by_round.resize(round + 1, None);
            }
            let in_round = samples.peers_min_by_round[round].get_or_insert(min);
            *in_round = (*in_round).min(min);
            samples.peers_max = samples
                .peers_max
                .max(settled_peers.iter().copied().max().unwrap_or(0));
            samples.peers_mean_sum +=
                settled_peers.iter().sum::<usize>() as f64 / settled_peers.len() as f64;
            samples.peers_mean_samples += 1;
        }
        let bootnodes = self.params.bootnodes.min(self.lives.len());
        let bootnode_peers: Vec<usize> = (0..bootnodes)
            .map(|bootnode| sim.peers_of(NodeIndex(bootnode)).len())
            .collect();
        samples.bootnode_peers_max = samples
            .bootnode_peers_max
            .max(bootnode_peers.iter().copied().max().unwrap_or(0));
        samples.bootnode_peers_mean_sum +=
            bootnode_peers.iter().sum::<usize>() as f64 / bootnodes.max(1) as f64;
    }

    fn on_notification(&mut self, sim: &mut Sim, node: NodeIndex, notification: Notification) {
        match notification {
            Notification::GossipMessage { id, .. } => {
                sim.command(
                    node,
                    Command::ValidateGossip {
                        id,
                        verdict: Validation::Accept,
                    },
                );
                if let Some(number) = self.pending_ids.get(&id) {
                    let pending = self
                        .pending
                        .get_mut(number)
                        .expect("pending ids name pending messages");
                    pending.deliveries.push((node, sim.now()));
                }
            }
            Notification::PeerConnected { .. } => {
                let now = sim.now();
                let peers = sim.node(node).peer_count();
                let half = self.half_target();
                if peers >= half {
                    self.lives[node.0].half_at.get_or_insert(now);
                }
            }
            Notification::PublishFailed { .. } => self.publish_failed += 1,
            _ => {}
        }
    }

    /// Seconds to half the target for the nodes of `role` that were judged,
    /// and how many were judged and missed the bound.
    fn to_half_target(&self, role: Role) -> ToHalfTarget {
        let bound = Churn::TO_HALF_TARGET_BOUND;
        let mut result = ToHalfTarget::default();
        for life in self.lives.iter().filter(|life| life.role == role) {
            result.nodes += 1;
            match life.half_at {
                Some(at) => {
                    result.judged += 1;
                    let took = at.saturating_duration_since(life.started);
                    if took > bound {
                        result.missed += 1;
                    }
                    result.durations.push(took);
                }
                None => {
                    let last_up = life.left.unwrap_or(self.end);
                    if last_up.saturating_duration_since(life.started) >= bound {
                        result.judged += 1;
                        result.missed += 1;
                    }
                }
            }
        }
        result
    }

    fn measure(&self, sim: &Sim) -> ChurnOutcome {
        let seconds = |d: Option<Duration>| d.map(|d| millis(d) / 1000.0);
        let mut joiners = self.to_half_target(Role::Joiner);
        let mut first = self.to_half_target(Role::First);
        let mut latencies = self.latencies.clone();
        let samples = &self.samples;
        ChurnOutcome {
            nodes: self.nodes,
            bootnodes: self.params.bootnodes,
            peers_target: self.params.peers_target,
            identities: sim.node_count(),
            round_seconds: millis(self.params.round) / 1000.0,
            rounds: self.rounds,
            replaced_pct: self.params.replaced_pct,
            replaced_per_round: self.params.replaced_per_round(self.nodes),
            leaves: self.leaves,
            joins: self.joins,
            warmup_seconds: millis(self.params.starts_within) / 1000.0,
            samples: samples.count,
            components_max: samples.components_max,
            samples_split: samples.split,
            first_split_seconds: samples
                .first_split_at
                .map(|at| millis(at.saturating_duration_since(Instant::ZERO)) / 1000.0),
            network_min: samples.network_min.unwrap_or(0),
            network_max: samples.network_max,
            peers_min: samples.peers_min,
            peers_min_by_round: samples.peers_min_by_round.clone(),
            peers_max: samples.peers_max,
            peers_mean: samples.peers_mean_sum / samples.peers_mean_samples.max(1) as f64,
            bootnode_peers_max: samples.bootnode_peers_max,
            bootnode_peers_mean: samples.bootnode_peers_mean_sum / samples.count.max(1) as f64,
            peers_trimmed: sim.counter_sum(|counters| counters.peers_trimmed),
            joiners: joiners.nodes,
            joiners_judged: joiners.judged,
            joiners_missed: joiners.missed,
            seconds_to_half_target_p50: seconds(percentile(&mut joiners.durations, 50)),
            seconds_to_half_target_p99: seconds(percentile(&mut joiners.durations, 99)),
            seconds_to_half_target_max: seconds(joiners.durations.iter().max().copied()),
            first_judged: first.judged,
            first_missed: first.missed,
            first_seconds_to_half_target_p99: seconds(percentile(&mut first.durations, 99)),
            first_seconds_to_half_target_max: seconds(first.durations.iter().max().copied()),
            grace_seconds: millis(self.params.grace) / 1000.0,
            messages_published: self.messages_published,
            messages_judged: self.messages_judged,
            publish_failed: self.publish_failed,
            publish_skipped: self.publish_skipped,
            deliveries_expected: self.deliveries_expected,
            deliveries: self.deliveries,
            delivery_ratio: if self.deliveries_expected == 0 {
                1.0
            } else {
                self.deliveries as f64 / self.deliveries_expected as f64
            },
            worst_message_delivery_ratio: self.worst_message_ratio,
            latency_ms_p50: percentile(&mut latencies, 50).map(millis),
            latency_ms_p99: percentile(&mut latencies, 99).map(millis),
        }
    }
}

/// Time to half the target, over the nodes of one role.
#[derive(Debug, Default)]
struct ToHalfTarget {
    nodes: usize,
    judged: usize,
    missed: usize,
    durations: Vec<Duration>,
}

impl Application for ChurnApp {
    fn on_event(&mut self, sim: &mut Sim, event: AppEvent) {
        match event {
            AppEvent::Wake { token: wake } => match split_token(wake) {
                (TOKEN_JOIN, round) => {
                    let role = if round == 0 {
                        Role::First
                    } else {
                        Role::Joiner
                    };
                    self.start_node(sim, role);
                    self.joins += usize::from(role == Role::Joiner);
                }
                (TOKEN_LEAVE, node) => self.leave(sim, NodeIndex(node)),
                (TOKEN_ROUND, round) => self.begin_round(sim, round),
                (TOKEN_SAMPLE, _) => {
                    self.sample(sim);
                    let next = sim.now() + Churn::SAMPLE_EVERY;
                    if next <= self.end {
                        sim.wake_at(next, wake);
                    }
                }
                (TOKEN_PUBLISH, number) => {
                    let next = sim.now() + self.params.publish_interval;
                    if next < self.publish_end {
                        sim.wake_at(next, token(TOKEN_PUBLISH, number + 1));
                    }
                    self.publish(sim, number as u64);
                }
                (TOKEN_JUDGE, number) => self.judge(sim, number as u64),
                (kind, _) => panic!("no wake-up of kind {kind} was asked for"),
            },
            AppEvent::Notification { node, notification } => {
                self.on_notification(sim, node, notification)
            }
        }
    }
}

/// The outcome fields of `churn` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct ChurnOutcome {
    /// Nodes in the network at any time.
    nodes: usize,
    bootnodes: usize,
    peers_target: usize,
    /// Every node that ever took part.
    identities: usize,
    round_seconds: f64,
    rounds: usize,
    replaced_pct: u32,
    replaced_per_round: usize,
    leaves: usize,
    joins: usize,
    warmup_seconds: f64,
    samples: u64,
    components_max: usize,
    samples_split: u64,
    first_split_seconds: Option<f64>,
    /// Fewest and most nodes that had held a peer, over the samples.
    network_min: usize,
    network_max: usize,
    /// Fewest peers of a settled node, over the samples and by round.
    peers_min: Option<usize>,
    peers_min_by_round: Vec<Option<usize>>,
    peers_max: usize,
    peers_mean: f64,
    bootnode_peers_max: usize,
    bootnode_peers_mean: f64,
    /// Goodbye(too many peers) said by the connection manager, all nodes
    /// over the run: how much the network reshuffles to stay at its target.
    peers_trimmed: u64,
    joiners: usize,
    joiners_judged: usize,
    joiners_missed: usize,
    seconds_to_half_target_p50: Option<f64>,
    seconds_to_half_target_p99: Option<f64>,
    seconds_to_half_target_max: Option<f64>,
    first_judged: usize,
    first_missed: usize,
    first_seconds_to_half_target_p99: Option<f64>,
    first_seconds_to_half_target_max: Option<f64>,
    grace_seconds: f64,
    messages_published: u64,
    messages_judged: u64,
    publish_failed: u64,
    publish_skipped: u64,
    deliveries_expected: u64,
    deliveries: u64,
    delivery_ratio: f64,
    worst_message_delivery_ratio: Option<f64>,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
}

impl Scenario for Churn {
    fn name(&self) -> &'static str {
        Churn::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = self.params.clone();
        assert!(
            nodes > params.bootnodes,
            "{} needs more than {} nodes",
            Self::NAME,
            params.bootnodes
        );
        let mut app = ChurnApp {
            topic: Topic::new(TOPIC_NAME).expect("a valid topic name"),
            nodes,
            config: sim.node_config(),
            bootnodes: Vec::new(),
            lives: Vec::new(),
            // Set by `run`, which knows the duration.
            end: Instant::ZERO,
            rounds: 0,
            leaves: 0,
            joins: 0,
            samples: Samples::default(),
            publish_end: Instant::ZERO,
            messages_published: 0,
            publish_failed: 0,
            publish_skipped: 0,
            pending: BTreeMap::new(),
            pending_ids: BTreeMap::new(),
            messages_judged: 0,
            deliveries_expected: 0,
            deliveries: 0,
            worst_message_ratio: None,
            latencies: Vec::new(),
            params,
        };
        // Bootnodes know the ones before them, so they form one core.
        for _ in 0..app.params.bootnodes {
            app.start_node(sim, Role::Bootnode);
        }
        // The others are added the instant they start.
        let window_us = u64::try_from(app.params.starts_within.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for _ in app.params.bootnodes..nodes {
            let at = Instant::from_micros(rng::below(sim.scenario_rng(), window_us));
            sim.wake_at(at, token(TOKEN_JOIN, 0));
        }
        self.app = Some(app);
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let app = self.app.as_mut().expect("built before run");
        let start = sim.now();
        app.end = start + duration;
        app.publish_end = start + duration.saturating_sub(app.params.grace);
        let mut round: u32 = 1;
        while start + app.params.round * round < app.end {
            let at = start + app.params.round * round;
            sim.wake_at(at, token(TOKEN_ROUND, round as usize));
            round += 1;
        }
        sim.wake_at(start + Churn::SAMPLE_EVERY, token(TOKEN_SAMPLE, 0));
        let publish_start = start + app.params.starts_within;
        if publish_start < app.publish_end {
            sim.wake_at(publish_start, token(TOKEN_PUBLISH, 0));
        }
        app::run_for(sim, app, duration);
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        self.app.as_ref()?;
        // A struct of numbers, vectors and options always serialises.
        Some(serde_json::to_value(self.app().measure(sim)).expect("outcome serialises"))
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let outcome = self.app().measure(sim);
        let mut bounds = Bounds::default();
        bounds.require(outcome.rounds > 0, || {
            format!(
                "the run ended before the first round at {} s: nobody was replaced",
                outcome.round_seconds
            )
        });
        bounds.require(outcome.samples > 0 && outcome.components_max == 1, || {
            format!(
                "the peer graph was {} components at worst ({} of {} samples split, first at {:?} s)",
                outcome.components_max,
                outcome.samples_split,
                outcome.samples,
                outcome.first_split_seconds
            )
        });
        bounds.require(
            outcome.deliveries_expected > 0 && outcome.delivery_ratio >= Self::DELIVERY_RATIO_MIN,
            || {
                format!(
                    "delivery ratio {:.5} ({} of {} expected deliveries), below {}",
                    outcome.delivery_ratio,
                    outcome.deliveries,
                    outcome.deliveries_expected,
                    Self::DELIVERY_RATIO_MIN
                )
            },
        );
        let bound = millis(Self::TO_HALF_TARGET_BOUND) / 1000.0;
        bounds.require(outcome.joiners_missed == 0 && outcome.first_missed == 0, || {
            format!(
                "{} of {} judged joiners and {} of {} first nodes did not hold half their target of {} within {bound} s",
                outcome.joiners_missed,
                outcome.joiners_judged,
                outcome.first_missed,
                outcome.first_judged,
                outcome.peers_target
            )
        });
        bounds.require(
            outcome.bootnode_peers_max <= 2 * outcome.peers_target,
            || {
                format!(
                    "a bootnode held {} peers, past twice the target of {}",
                    outcome.bootnode_peers_max, outcome.peers_target
                )
            },
        );
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    #[test]
    fn a_round_replaces_its_share_of_the_non_bootnodes_rounded() {
        let params = ChurnParams::default();
        assert_eq!(params.replaced_per_round(500), 149, "30 % of 497 is 149.1");
        assert_eq!(params.replaced_per_round(100), 29, "30 % of 97 is 29.1");
        assert_eq!(params.replaced_per_round(20), 5, "30 % of 17 is 5.1");
        assert_eq!(params.replaced_per_round(4), 0, "30 % of 1 rounds to none");
        assert_eq!(params.replaced_per_round(2), 0, "no non-bootnode at all");
    }

    /// A run that ends before its first round has replaced nobody: the
    /// story was not told, and the bound says so.
    #[test]
    fn a_run_shorter_than_a_round_breaks_a_bound() {
        let mut scenario = Churn::new(ChurnParams {
            peers_target: 4,
            starts_within: Duration::from_secs(2),
            round: Duration::from_secs(60),
            ..ChurnParams::default()
        });
        let mut sim = Sim::new(SimConfig::new(1));
        scenario.build(&mut sim, 8);
        scenario.run(&mut sim, Duration::from_secs(10));
        let broken = scenario.bounds_broken(&sim);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].contains("before the first round"), "{broken:?}");
        let outcome = scenario.outcome(&sim).expect("an outcome");
        assert_eq!(outcome["rounds"], 0);
        assert_eq!(outcome["leaves"], 0);
        assert_eq!(outcome["components_max"], 1, "{outcome:#}");
    }
}
