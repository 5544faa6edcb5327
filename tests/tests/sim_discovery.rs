//! A network that forms by itself: nodes that know only three bootnodes
//! find each other through Kademlia discovery, each reaching half its peer
//! target, the peer graph one component, no bootnode a hub. Told by the
//! simulator with the production `Node` in every role, over several seeds,
//! and replayed bit for bit from one.

use meshsync_core::Duration;
use meshsync_sim::run_scenario;
use meshsync_sim::scenario::Discovery;

/// Small enough for the suite: 24 nodes starting within the first 60 s,
/// run for 90 s (the full size is `--nodes 1000`).
const NODES: usize = 24;
const RUN: Duration = Duration::from_secs(90);

#[test]
fn nodes_that_know_only_the_bootnodes_form_one_network() {
    for seed in 1..=3 {
        let summary = run_scenario(Discovery::NAME, NODES, seed, RUN).expect("scenario exists");
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
    let first = run_scenario(Discovery::NAME, NODES, 7, RUN).expect("scenario exists");
    let again = run_scenario(Discovery::NAME, NODES, 7, RUN).expect("scenario exists");
    let other = run_scenario(Discovery::NAME, NODES, 8, RUN).expect("scenario exists");
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.outcome, again.outcome);
    assert_ne!(first.trace_hash, other.trace_hash);
}
