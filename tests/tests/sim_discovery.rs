//! A network that forms by itself: nodes that know only three bootnodes
//! find each other through Kademlia discovery, each reaching half its peer
//! target, the peer graph one component, no bootnode a hub. Told by the
//! simulator with the production `Node` in every role, over several seeds,
//! and replayed bit for bit from one.
//!
//! Then the same network with a victim that Sybils from one /16, each in a
//! /24 of its own, dial and whose FIND_NODE queries they answer with each
//! other's records (`dht-eclipse`): the victim's routing table never holds
//! more than the /16 cap of Sybils, its peer set never more than the
//! peer-set cap per network group, and it keeps at least half its target
//! in honest peers.

use meshsync_core::discovery::limits::NETGROUP_ENTRIES_PER_TABLE_MAX;
use meshsync_core::peer::PEERS_PER_NETGROUP_MAX;
use meshsync_core::Duration;
use meshsync_sim::run_scenario;
use meshsync_sim::scenario::{DhtEclipse, Discovery, EclipseParams, Scenario};
use meshsync_sim::{Sim, SimConfig};
use serde_json::Value;

/// Small enough for the suite: 24 nodes starting within the first 60 s,
/// run for 90 s (the full size is `--nodes 1000`).
const NODES: usize = 24;
const RUN: Duration = Duration::from_secs(90);

/// Seeds 1 to 3, run once for both tests below.
fn discovery_runs() -> &'static [meshsync_sim::Summary] {
    static RUNS: std::sync::OnceLock<Vec<meshsync_sim::Summary>> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        (1..=3)
            .map(|seed| run_scenario(Discovery::NAME, NODES, seed, RUN).expect("scenario exists"))
            .collect()
    })
}

#[test]
fn nodes_that_know_only_the_bootnodes_form_one_network() {
    for (seed, summary) in (1u64..).zip(discovery_runs()) {
        assert_eq!(summary.invariant_violations, 0, "seed {seed}: {summary}");
        assert!(
            summary.bounds_broken.is_empty(),
            "seed {seed}: {:?}",
            summary.bounds_broken
        );
        let outcome = summary
            .outcome
            .as_ref()
            .expect("discovery reports an outcome");
        assert_eq!(outcome["components"], 1, "seed {seed}: {outcome}");
        assert_eq!(
            outcome["nodes_reached_half_target"], NODES,
            "seed {seed}: {outcome}"
        );
        assert!(
            outcome["lookups_finished"].as_u64().unwrap_or(0) > 0,
            "seed {seed}: no lookup finished: {outcome}"
        );
        assert!(
            outcome["table_entries"].as_u64().unwrap_or(0) >= NODES as u64,
            "seed {seed}: tables stayed nearly empty: {outcome}"
        );
    }
}

#[test]
fn one_seed_replays_the_discovery_story_bit_for_bit() {
    let runs = discovery_runs();
    let (first, other) = (&runs[1], &runs[2]);
    let again = run_scenario(Discovery::NAME, NODES, 2, RUN).expect("scenario exists");
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.outcome, again.outcome);
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// Small enough for the suite: 30 honest nodes starting within 20 s and 60
/// Sybils, the victim starting at 20 s and attacked for 50 s, so the last
/// honest node to start has a refresh (30 s) to spare (the full size is the
/// command line's: 50 honest nodes, 200 Sybils).
const ECLIPSE_HONEST_NODES: usize = 30;
const SYBILS: usize = 60;

fn run_eclipse(seed: u64) -> (String, Value, Vec<String>) {
    let mut scenario = DhtEclipse::new(EclipseParams {
        sybils: SYBILS,
        starts_within: Duration::from_secs(20),
        victim_start: Duration::from_secs(20),
        ..EclipseParams::default()
    });
    let mut sim = Sim::new(SimConfig {
        label: scenario.name().to_owned(),
        ..SimConfig::new(seed)
    });
    scenario.build(&mut sim, ECLIPSE_HONEST_NODES);
    scenario.run(&mut sim, Duration::from_secs(50));
    scenario.finish(&mut sim);
    assert_eq!(
        sim.invariant_violations(),
        0,
        "seed {seed}: {:#?}",
        sim.violations()
    );
    let outcome = scenario.outcome(&sim).expect("an outcome");
    (
        sim.trace().hash_hex(),
        outcome,
        scenario.bounds_broken(&sim),
    )
}

fn count(outcome: &Value, field: &str) -> u64 {
    outcome[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field}: {outcome:#}"))
}

/// Seeds 1 and 2, run once for both tests below (each run is seconds of
/// CPU; the command line's campaign covers more seeds).
fn eclipse_runs() -> &'static [(String, Value, Vec<String>)] {
    static RUNS: std::sync::OnceLock<Vec<(String, Value, Vec<String>)>> =
        std::sync::OnceLock::new();
    RUNS.get_or_init(|| (1..=2).map(run_eclipse).collect())
}

#[test]
fn sybils_from_one_slash_16_hold_a_capped_part_of_the_victim() {
    for (seed, (_, outcome, broken)) in (1u64..).zip(eclipse_runs()) {
        assert!(broken.is_empty(), "seed {seed}: {broken:?}\n{outcome:#}");
        assert_eq!(count(outcome, "sybils"), SYBILS as u64);
        let table_sybils = count(outcome, "victim_table_sybils_max");
        assert!(
            table_sybils <= NETGROUP_ENTRIES_PER_TABLE_MAX as u64,
            "seed {seed}: {outcome:#}"
        );
        let peer_sybils = count(outcome, "victim_peer_sybils_max");
        assert!(
            peer_sybils <= PEERS_PER_NETGROUP_MAX as u64,
            "seed {seed}: {outcome:#}"
        );
        // The Sybils did get in: the caps, not their absence, bound them.
        assert!(
            table_sybils > 0 && peer_sybils > 0,
            "seed {seed}: {outcome:#}"
        );
        let honest_peers = count(outcome, "victim_honest_outbound_final")
            + count(outcome, "victim_honest_inbound_final");
        assert!(
            honest_peers >= count(outcome, "peers_target").div_ceil(2),
            "seed {seed}: {outcome:#}"
        );
        assert_eq!(count(outcome, "honest_components"), 1, "seed {seed}");
    }
}

#[test]
fn one_seed_replays_the_eclipse_attempt_bit_for_bit() {
    let runs = eclipse_runs();
    assert_eq!(run_eclipse(2), runs[1], "same seed, same run");
    assert_ne!(runs[0].0, runs[1].0, "another seed, another run");
}
