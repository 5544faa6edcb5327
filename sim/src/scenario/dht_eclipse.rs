//! `dht-eclipse`: 200 Sybils from one /16 try to fill a victim's routing
//! table and its peer set.
//!
//! # The story
//! Honest nodes form a network by discovery, as in `discovery`: three
//! bootnodes know each other, every other honest node knows only them and
//! starts within the first [`EclipseParams::starts_within`]. Each honest
//! node sits in its own IPv4 /16; all run the production anti-eclipse
//! policy (`subnet_limits` on, private addresses refused), so the world
//! uses public-looking addresses ([`honest_ip`], [`sybil_ip`]) instead of
//! the simulator's `10.0/16` plan.
//!
//! The victim is an ordinary honest node that starts at
//! [`EclipseParams::victim_start`]. The Sybils all sit in one /16, each in
//! a /24 of its own (the attacker's best spread against a per-/24 limit).
//! They run the production `Node`, complete real handshakes and give their
//! own signed records, but answer every FIND_NODE with the records of the
//! Sybils nearest its target (`Faults::find_node_records`), and from the
//! victim's start on each dials the victim again every
//! [`EclipseParams::redial_every`] while it is not connected to it.
//!
//! What must hold (the victim's table and peers, sampled every
//! [`DhtEclipse::SAMPLE_EVERY`] while it is up):
//! - the victim's table never holds more than
//!   `NETGROUP_ENTRIES_PER_TABLE_MAX` (10) Sybils: the /16-wide cap (a
//!   per-/24 cap alone would let all 200 in, 2 per bucket each);
//! - its peer set never holds more than `PEERS_PER_NETGROUP_MAX` (5)
//!   Sybils: the peer gate's cap per /16, either direction;
//! - at the end its table holds at least half the other honest nodes (up
//!   to [`DhtEclipse::TABLE_HONEST_MIN`], 48: a table holds only about
//!   16 × (1 + log2(n / 16)) of n nodes) and it has at least half its
//!   target in honest peers;
//! - once its table holds [`DhtEclipse::TABLE_HONEST_FOR_TENTH`] (90)
//!   honest entries, the Sybils hold at most a tenth of it from then on
//!   (`sybil_share_of_victim_table_settled_max`, with
//!   `seconds_to_table_settled`);
//! - among [`DhtEclipse::NODES_FOR_TENTH`] (500) honest nodes or more, the
//!   Sybils end with at most a tenth of its table.
//!
//! Together these bound the shares: with `e` honest entries, the Sybils'
//! share of the victim's table is at most 10 / (10 + e): 0.29 for the
//! default 50 honest nodes, whose tables cannot grow past about 25 other
//! entries, and at most 0.10 once `e` reaches 90. A table holds about
//! 16 × (1 + log2(n / 16)) of n nodes (95 of 500), and grows only by
//! handshakes: a victim at its target looks up every 5 min, so among 500
//! honest nodes (`--nodes 500 --duration 120s`, the full size) some seeds
//! reach 90 honest entries within the 2 minutes and some do not (80–90
//! over seeds 1–5), but the Sybils held at most 9 entries and ended with
//! 1–8, so their share still ended under a tenth at every seed. Its peers' share is at
//! most 5 / (5 + t / 2) for a target of `t` (0.28 for 25).
//! Also: every honest node held half its target at some point, and the
//! honest peer graph is one component.
//!
//! Reported: the Sybils' share of the victim's table and of its peers (max,
//! mean and final over the samples), the victim's peers by direction and
//! kind, and the usual discovery figures of the honest network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use meshsync_core::discovery::limits::NETGROUP_ENTRIES_PER_TABLE_MAX;
use meshsync_core::discovery::Record;
use meshsync_core::io::{Command, Direction};
use meshsync_core::node::DiscoveryConfig;
use meshsync_core::peer::PEERS_PER_NETGROUP_MAX;
use meshsync_core::{Duration, Instant};

use super::story::{Bounds, Scenario};
use super::topology::mutual_components;
use crate::requests::{millis, percentile};
use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// Honest nodes the address plan can place, each in a /16 of its own.
pub const HONEST_NODES_MAX: usize = 200 * 80;
/// Sybils the address plan can place, all in one /16.
pub const SYBILS_MAX: usize = 256 * 254;

/// Honest node `index`'s address: a /16 of its own, from `20.0/16` on
/// (made-up public space: only which addresses share a prefix matters).
pub fn honest_ip(index: usize) -> IpAddr {
    assert!(
        index < HONEST_NODES_MAX,
        "honest node {index} beyond the plan"
    );
    // Below 80 and 200 by the assert: both fit in a u8.
    let (high, low) = ((index / 200) as u8, (index % 200) as u8);
    IpAddr::V4(Ipv4Addr::new(20 + high, low, 1, 1))
}

/// Sybil `index`'s address: all in `45.33/16`, each in its own /24 for the
/// first 256, then sharing /24s two, three… at a time.
pub fn sybil_ip(index: usize) -> IpAddr {
    assert!(index < SYBILS_MAX, "Sybil {index} beyond the plan");
    // Below 256 and 254 by the assert: both fit in a u8.
    let (subnet, host) = ((index % 256) as u8, (index / 256) as u8);
    IpAddr::V4(Ipv4Addr::new(45, 33, subnet, 1 + host))
}

/// The scenario's parameters; the default is what the command line runs.
#[derive(Clone, Debug)]
pub struct EclipseParams {
    /// Bootnodes, the first honest nodes.
    pub bootnodes: usize,
    /// Sybils, all in one /16.
    pub sybils: usize,
    /// Peers each honest node aims for.
    pub peers_target: usize,
    /// Honest nodes other than the victim start within this.
    pub starts_within: Duration,
    /// When the victim starts, and the Sybils start dialling it.
    pub victim_start: Duration,
    /// How often a Sybil not connected to the victim dials it again.
    pub redial_every: Duration,
}

impl Default for EclipseParams {
    fn default() -> EclipseParams {
        EclipseParams {
            bootnodes: 3,
            sybils: DhtEclipse::SYBILS_DEFAULT,
            peers_target: meshsync_core::peer::PEERS_TARGET,
            starts_within: Duration::from_secs(60),
            victim_start: Duration::from_secs(30),
            redial_every: Duration::from_secs(5),
        }
    }
}

/// One look at the victim.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// When, after the victim's start.
    since_victim_start: Duration,
    table_entries: usize,
    table_sybils: usize,
    peers: usize,
    peer_sybils: usize,
}

impl Sample {
    fn table_share(&self) -> f64 {
        self.table_sybils as f64 / self.table_entries.max(1) as f64
    }

    fn peer_share(&self) -> f64 {
        self.peer_sybils as f64 / self.peers.max(1) as f64
    }

    fn table_honest(&self) -> usize {
        self.table_entries - self.table_sybils
    }
}

/// The scenario. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct DhtEclipse {
    /// Its parameters.
    pub params: EclipseParams,
    victim: Option<NodeIndex>,
    honest: Vec<NodeIndex>,
    sybils: BTreeSet<NodeIndex>,
    starts: BTreeMap<NodeIndex, Instant>,
    /// When each honest node first held half its target.
    reached: BTreeMap<NodeIndex, Instant>,
    /// When each Sybil next dials the victim (if not connected to it then).
    next_dial: BTreeMap<NodeIndex, Instant>,
    samples: Vec<Sample>,
}

impl DhtEclipse {
    /// The scenario's name.
    pub const NAME: &'static str = "dht-eclipse";
    /// Honest nodes by default (the victim and the bootnodes included).
    pub const NODES_DEFAULT: usize = 50;
    /// Sybils by default: the 200.
    pub const SYBILS_DEFAULT: usize = 200;
    /// How often the run looks at the victim.
    pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
    /// How long an honest node has to hold half its target: as in
    /// `discovery`. Nodes started later than this before the end are not
    /// judged on it.
    pub const TO_TARGET_BOUND: Duration = Duration::from_secs(90);
    /// Honest entries beside which the Sybils' cap in the table
    /// (`NETGROUP_ENTRIES_PER_TABLE_MAX`, 10) is at most a tenth of it.
    pub const TABLE_HONEST_FOR_TENTH: usize = 9 * NETGROUP_ENTRIES_PER_TABLE_MAX;
    /// The Sybils' share of the victim's table, at most, once its table
    /// holds [`DhtEclipse::TABLE_HONEST_FOR_TENTH`] honest entries.
    pub const TABLE_SHARE_SETTLED_MAX: f64 = 0.10;
    /// Honest nodes from which the Sybils' share of the victim's table
    /// must end at most [`DhtEclipse::TABLE_SHARE_SETTLED_MAX`]: a table
    /// holds about 16 × (1 + log2(n / 16)) of n nodes, 95 of 500, so
    /// smaller networks cannot dilute the cap's 10 to a tenth.
    pub const NODES_FOR_TENTH: usize = 500;
    /// Honest entries the victim's table ends with at least, when the
    /// network has twice as many: its three farthest buckets, which hold
    /// seven eighths of any network, full.
    pub const TABLE_HONEST_MIN: usize = 3 * meshsync_core::discovery::limits::BUCKET_ENTRIES_MAX;

    /// The scenario with `params`.
    pub fn new(params: EclipseParams) -> DhtEclipse {
        DhtEclipse {
            params,
            ..DhtEclipse::default()
        }
    }

    fn half_target(&self) -> usize {
        self.params.peers_target.div_ceil(2)
    }

    /// The victim, once built.
    pub fn victim(&self) -> NodeIndex {
        self.victim.expect("built before use")
    }

    /// When (after the victim's start) its table first held
    /// [`DhtEclipse::TABLE_HONEST_FOR_TENTH`] honest entries, and the
    /// Sybils' largest share of it from then on.
    fn settled(samples: &[Sample]) -> Option<(Duration, f64)> {
        let first = samples
            .iter()
            .position(|sample| sample.table_honest() >= Self::TABLE_HONEST_FOR_TENTH)?;
        let share = samples[first..]
            .iter()
            .map(Sample::table_share)
            .fold(0.0, f64::max);
        Some((samples[first].since_victim_start, share))
    }

    fn look_at_victim(&self, sim: &Sim) -> Option<Sample> {
        let victim = self.victim();
        if !sim.is_up(victim) {
            return None;
        }
        let is_sybil = |peer| sim.index_of(peer).is_some_and(|n| self.sybils.contains(&n));
        let mut sample = Sample {
            since_victim_start: sim
                .now()
                .saturating_duration_since(Instant::ZERO + self.params.victim_start),
            ..Sample::default()
        };
        if let Some(discovery) = sim.node(victim).discovery() {
            for entry in discovery.table().entries() {
                sample.table_entries += 1;
                sample.table_sybils += usize::from(is_sybil(entry.record.peer()));
            }
        }
        for info in sim.node(victim).peers() {
            sample.peers += 1;
            sample.peer_sybils += usize::from(is_sybil(info.peer));
        }
        Some(sample)
    }

    /// Connected components of the mutual peer graph among honest nodes
    /// that are up (Sybils are not counted as bridges).
    fn honest_components(&self, sim: &Sim) -> usize {
        let honest: BTreeSet<NodeIndex> = self
            .honest
            .iter()
            .copied()
            .filter(|&node| sim.is_up(node))
            .collect();
        mutual_components(sim, &honest)
    }

    fn measure(&self, sim: &Sim) -> EclipseOutcome {
        let victim = self.victim();
        let mut to_target: Vec<Duration> = self
            .reached
            .iter()
            .map(|(node, at)| at.saturating_duration_since(self.starts[node]))
            .collect();
        let seconds = |d: Option<Duration>| d.map(|d| millis(d) / 1000.0);
        let last = self.samples.last().copied().unwrap_or_default();
        let max_of = |f: fn(&Sample) -> f64| self.samples.iter().map(f).fold(0.0, f64::max);
        let mean_of = |f: fn(&Sample) -> f64| {
            self.samples.iter().map(f).sum::<f64>() / self.samples.len().max(1) as f64
        };
        let settled = Self::settled(&self.samples);
        let is_sybil = |peer| sim.index_of(peer).is_some_and(|n| self.sybils.contains(&n));
        let peers = sim.node(victim).peers();
        let count = |sybil: bool, direction: Direction| {
            peers
                .iter()
                .filter(|info| is_sybil(info.peer) == sybil && info.direction == direction)
                .count()
        };
        let honest_peers: Vec<usize> = self
            .honest
            .iter()
            .filter(|&&node| node != victim)
            .map(|&node| sim.peers_of(node).len())
            .collect();
        let (mut lookups, mut rounds) = (0u64, 0u64);
        for &node in self.honest.iter().filter(|&&n| sim.is_up(n)) {
            if let Some(discovery) = sim.node(node).discovery() {
                lookups += discovery.counters().lookups_finished;
                rounds += discovery.counters().lookup_rounds;
            }
        }
        EclipseOutcome {
            honest_nodes: self.honest.len(),
            sybils: self.sybils.len(),
            peers_target: self.params.peers_target,
            samples: self.samples.len(),
            sybil_share_of_victim_table_max: max_of(Sample::table_share),
            sybil_share_of_victim_table_mean: mean_of(Sample::table_share),
            sybil_share_of_victim_table_final: last.table_share(),
            sybil_share_of_victim_peers_max: max_of(Sample::peer_share),
            sybil_share_of_victim_peers_mean: mean_of(Sample::peer_share),
            sybil_share_of_victim_peers_final: last.peer_share(),
            victim_table_sybils_max: self
                .samples
                .iter()
                .map(|s| s.table_sybils)
                .max()
                .unwrap_or(0),
            victim_peer_sybils_max: self
                .samples
                .iter()
                .map(|s| s.peer_sybils)
                .max()
                .unwrap_or(0),
            seconds_to_table_settled: settled.map(|(at, _)| millis(at) / 1000.0),
            sybil_share_of_victim_table_settled_max: settled.map(|(_, share)| share),
            victim_table_entries_final: last.table_entries,
            victim_table_honest_final: last.table_honest(),
            victim_table_sybils_final: last.table_sybils,
            victim_peers_final: last.peers,
            victim_honest_outbound_final: count(false, Direction::Outbound),
            victim_honest_inbound_final: count(false, Direction::Inbound),
            victim_sybil_outbound_final: count(true, Direction::Outbound),
            victim_sybil_inbound_final: count(true, Direction::Inbound),
            honest_reached_half_target: self.reached.len(),
            honest_missed_half_target: self
                .starts
                .iter()
                .filter(|(node, start)| {
                    !self.reached.contains_key(node)
                        && sim.now() >= start.saturating_add(Self::TO_TARGET_BOUND)
                })
                .count(),
            seconds_to_target_p50: seconds(percentile(&mut to_target, 50)),
            seconds_to_target_max: seconds(to_target.iter().max().copied()),
            honest_peers_min: honest_peers.iter().copied().min().unwrap_or(0),
            honest_components: self.honest_components(sim),
            lookups_finished: lookups,
            lookup_hops_mean: rounds as f64 / lookups.max(1) as f64,
        }
    }
}

/// The outcome fields of `dht-eclipse` in the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
struct EclipseOutcome {
    honest_nodes: usize,
    sybils: usize,
    peers_target: usize,
    samples: usize,
    sybil_share_of_victim_table_max: f64,
    sybil_share_of_victim_table_mean: f64,
    sybil_share_of_victim_table_final: f64,
    sybil_share_of_victim_peers_max: f64,
    sybil_share_of_victim_peers_mean: f64,
    sybil_share_of_victim_peers_final: f64,
    victim_table_sybils_max: usize,
    victim_peer_sybils_max: usize,
    /// From the victim's start until its table first held
    /// [`DhtEclipse::TABLE_HONEST_FOR_TENTH`] honest entries.
    seconds_to_table_settled: Option<f64>,
    /// The Sybils' largest share of the victim's table from then on.
    sybil_share_of_victim_table_settled_max: Option<f64>,
    victim_table_entries_final: usize,
    victim_table_honest_final: usize,
    victim_table_sybils_final: usize,
    victim_peers_final: usize,
    victim_honest_outbound_final: usize,
    victim_honest_inbound_final: usize,
    victim_sybil_outbound_final: usize,
    victim_sybil_inbound_final: usize,
    honest_reached_half_target: usize,
    /// Honest nodes that never held half their target though they ran
    /// for [`DhtEclipse::TO_TARGET_BOUND`] (later starters are not judged).
    honest_missed_half_target: usize,
    seconds_to_target_p50: Option<f64>,
    seconds_to_target_max: Option<f64>,
    honest_peers_min: usize,
    honest_components: usize,
    lookups_finished: u64,
    lookup_hops_mean: f64,
}

impl Scenario for DhtEclipse {
    fn name(&self) -> &'static str {
        DhtEclipse::NAME
    }

    fn build(&mut self, sim: &mut Sim, nodes: usize) {
        let params = self.params.clone();
        assert!(
            nodes > params.bootnodes,
            "{} needs more than {} honest nodes",
            Self::NAME,
            params.bootnodes
        );
        let base = sim.node_config();
        let port = base.listen_port;
        let config_for = |ip: IpAddr, bootnodes: Vec<_>, target: usize| {
            let mut config = base.clone();
            config.discovery = Some(DiscoveryConfig {
                addresses: vec![std::net::SocketAddr::new(ip, port)],
                allow_private: false,
                subnet_limits: true,
                bootnodes,
                peers_target: target,
                record_seq: 1,
                learn_address_port: None,
            });
            config
        };
        let mut bootnodes = Vec::new();
        for index in 0..params.bootnodes {
            let ip = honest_ip(index);
            let node = sim.add_node_at(config_for(ip, bootnodes.clone(), params.peers_target), ip);
            bootnodes.push((sim.peer_id(node), sim.addr(node)));
            self.starts.insert(node, Instant::ZERO);
            self.honest.push(node);
        }
        let window_us = u64::try_from(params.starts_within.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for index in params.bootnodes..nodes {
            let ip = honest_ip(index);
            let node = sim.add_node_at(config_for(ip, bootnodes.clone(), params.peers_target), ip);
            let start = if index == params.bootnodes {
                self.victim = Some(node);
                Instant::ZERO + params.victim_start
            } else {
                Instant::from_micros(rng::below(sim.scenario_rng(), window_us))
            };
            // Not running until its start: down from the first instant.
            sim.crash_at(Instant::ZERO, node);
            sim.restart_at(start, node);
            self.starts.insert(node, start);
            self.honest.push(node);
        }
        // Every Sybil signs its own record; each hands out all of them.
        let identities = sim.next_identities(params.sybils);
        let records: Vec<Record> = identities
            .iter()
            .enumerate()
            .map(|(index, identity)| {
                let addr = std::net::SocketAddr::new(sybil_ip(index), port);
                Record::sign(identity, sim.config().network_id, 1, &[addr])
            })
            .collect();
        let victim_start = Instant::ZERO + params.victim_start;
        let redial_us = u64::try_from(params.redial_every.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for (index, identity) in identities.iter().enumerate() {
            let ip = sybil_ip(index);
            // One peer is all a Sybil wants: the victim. It meets nobody
            // else unless its own lookups dial them.
            let mut config = config_for(ip, Vec::new(), 1);
            config.faults.find_node_records = Some(records.clone());
            let sybil = sim.add_node_at(config, ip);
            assert_eq!(sim.peer_id(sybil), identity.peer_id(), "foreseen identity");
            let first =
                victim_start + Duration::from_micros(rng::below(sim.scenario_rng(), redial_us));
            self.next_dial.insert(sybil, first);
            self.sybils.insert(sybil);
        }
    }

    fn run(&mut self, sim: &mut Sim, duration: Duration) {
        let victim = self.victim();
        let end = Instant::ZERO + self.params.victim_start + duration;
        let half = self.half_target();
        while sim.now() < end {
            let next = (sim.now() + Self::SAMPLE_EVERY).min(end);
            sim.run_for(next.saturating_duration_since(sim.now()));
            let now = sim.now();
            for &node in &self.honest {
                if sim.is_up(node)
                    && now >= self.starts[&node]
                    && !self.reached.contains_key(&node)
                    && sim.node(node).peer_count() >= half
                {
                    self.reached.insert(node, now);
                }
            }
            if let Some(sample) = self.look_at_victim(sim) {
                self.samples.push(sample);
            }
            if !sim.is_up(victim) {
                continue;
            }
            let (addr, peer) = (sim.addr(victim), sim.peer_id(victim));
            for (&sybil, at) in &mut self.next_dial {
                if *at > now {
                    continue;
                }
                *at = now + self.params.redial_every;
                if !sim.has_peer(sybil, victim) {
                    let dial = Command::Dial {
                        addr,
                        peer: Some(peer),
                    };
                    sim.command(sybil, dial);
                }
            }
        }
    }

    fn outcome(&self, sim: &Sim) -> Option<serde_json::Value> {
        // A struct of numbers and options always serialises.
        Some(serde_json::to_value(self.measure(sim)).expect("outcome serialises"))
    }

    fn bounds_broken(&self, sim: &Sim) -> Vec<String> {
        let outcome = self.measure(sim);
        let mut bounds = Bounds::default();
        bounds.require(
            outcome.victim_table_sybils_max <= NETGROUP_ENTRIES_PER_TABLE_MAX,
            || {
                format!(
                    "the victim's table held {} Sybils from one /16, past the cap of {}",
                    outcome.victim_table_sybils_max, NETGROUP_ENTRIES_PER_TABLE_MAX
                )
            },
        );
        bounds.require(
            outcome.victim_peer_sybils_max <= PEERS_PER_NETGROUP_MAX,
            || {
                format!(
                    "the victim had {} Sybil peers from one /16, past the cap of {}",
                    outcome.victim_peer_sybils_max, PEERS_PER_NETGROUP_MAX
                )
            },
        );
        // Half the others, up to its three farthest buckets: the table
        // cannot hold half of a large network (see the module doc).
        let honest_entries = outcome.victim_table_honest_final;
        let others = outcome.honest_nodes - 1;
        let wanted = others.div_ceil(2).min(Self::TABLE_HONEST_MIN);
        bounds.require(honest_entries >= wanted, || {
            format!(
                "the victim's table ends with {honest_entries} honest entries, \
                 under {wanted} (half the {others} other honest nodes, at most {})",
                Self::TABLE_HONEST_MIN
            )
        });
        if let Some(share) = outcome.sybil_share_of_victim_table_settled_max {
            bounds.require(share <= Self::TABLE_SHARE_SETTLED_MAX, || {
                format!(
                    "the Sybils held {share:.3} of the victim's table once it held {} \
                     honest entries, past {}",
                    Self::TABLE_HONEST_FOR_TENTH,
                    Self::TABLE_SHARE_SETTLED_MAX
                )
            });
        }
        if outcome.honest_nodes >= Self::NODES_FOR_TENTH {
            let share = outcome.sybil_share_of_victim_table_final;
            bounds.require(share <= Self::TABLE_SHARE_SETTLED_MAX, || {
                format!(
                    "the Sybils end with {share:.3} of the victim's table among {} honest \
                     nodes, past {}",
                    outcome.honest_nodes,
                    Self::TABLE_SHARE_SETTLED_MAX
                )
            });
        }
        let honest_peers =
            outcome.victim_honest_outbound_final + outcome.victim_honest_inbound_final;
        bounds.require(honest_peers >= self.half_target(), || {
            format!(
                "the victim ends with {honest_peers} honest peers, under half its target of {}",
                outcome.peers_target
            )
        });
        bounds.require(outcome.honest_missed_half_target == 0, || {
            format!(
                "{} of {} honest nodes never held half their target within {} s",
                outcome.honest_missed_half_target,
                outcome.honest_nodes,
                Self::TO_TARGET_BOUND.as_secs()
            )
        });
        bounds.require(outcome.honest_components == 1, || {
            format!(
                "the honest peer graph is {} components, not one",
                outcome.honest_components
            )
        });
        bounds.into_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(second: u64, honest: usize, sybils: usize) -> Sample {
        Sample {
            since_victim_start: Duration::from_secs(second),
            table_entries: honest + sybils,
            table_sybils: sybils,
            ..Sample::default()
        }
    }

    #[test]
    fn the_share_counts_from_the_first_sample_with_enough_honest_entries() {
        let tenth = DhtEclipse::TABLE_HONEST_FOR_TENTH;
        // Early, the Sybils are a third of a small table: not counted.
        let samples = [
            sample(1, 20, 10),
            sample(2, tenth - 1, 10),
            sample(3, tenth, 10),
            sample(4, tenth + 30, 5),
            // Honest entries that leave again still count: the share rises.
            sample(5, tenth - 10, 10),
        ];
        let (at, share) = DhtEclipse::settled(&samples).expect("settled at 3 s");
        assert_eq!(at, Duration::from_secs(3));
        let worst = 10.0 / (tenth - 10 + 10) as f64;
        assert!((share - worst).abs() < 1e-12, "{share} against {worst}");
        assert!(share > DhtEclipse::TABLE_SHARE_SETTLED_MAX);
        assert_eq!(DhtEclipse::settled(&samples[..2]), None);
    }

    #[test]
    fn ten_sybils_beside_ninety_honest_entries_are_a_tenth() {
        let at_cap = sample(
            1,
            DhtEclipse::TABLE_HONEST_FOR_TENTH,
            NETGROUP_ENTRIES_PER_TABLE_MAX,
        );
        assert!(at_cap.table_share() <= DhtEclipse::TABLE_SHARE_SETTLED_MAX);
    }
}
