//! A node that crashed finds its way back without its bootnodes: it
//! restarts from the peer store on its modelled disk, holds half its
//! target again within the bound, and still refuses the hostile node it
//! banned before the crash. Told by the simulator with the production
//! `Node` in every role, over several seeds, and replayed bit for bit
//! from one.

use meshsync_core::Duration;
use meshsync_sim::run_scenario;
use meshsync_sim::scenario::RestartRecall;

/// Small enough for the suite: 3 bootnodes, the keeper, the hostile node
/// and 15 others, watched for 20 s after the restart (the story before it
/// is 110 s). The full size is the command line's default, 60 nodes.
const NODES: usize = 20;
const WATCH: Duration = Duration::from_secs(20);

#[test]
fn a_restarted_node_recalls_its_peers_and_its_ban_without_the_bootnodes() {
    for seed in 1..=2 {
        let summary =
            run_scenario(RestartRecall::NAME, NODES, seed, WATCH).expect("scenario exists");
        assert_eq!(summary.invariant_violations, 0, "seed {seed}: {summary}");
        assert!(
            summary.bounds_broken.is_empty(),
            "seed {seed}: {:?}",
            summary.bounds_broken
        );
        let outcome = summary
            .outcome
            .as_ref()
            .expect("restart-recall reports an outcome");
        assert_eq!(
            outcome["bootnodes_up_after_restart"], 0,
            "seed {seed}: {outcome}"
        );
        assert_eq!(
            outcome["ban_on_disk_at_crash"], true,
            "seed {seed}: {outcome}"
        );
        assert_eq!(
            outcome["ban_in_force_at_restart"], true,
            "seed {seed}: {outcome}"
        );
        let half = outcome["half_target"].as_u64().expect("a number");
        assert!(
            outcome["records_loaded"].as_u64().unwrap_or(0) >= half,
            "seed {seed}: too few records to recall half the target: {outcome}"
        );
        let seconds = outcome["seconds_to_half_target_after_restart"]
            .as_f64()
            .unwrap_or(f64::INFINITY);
        assert!(
            seconds <= RestartRecall::REGAIN_BOUND.as_secs_f64(),
            "seed {seed}: {outcome}"
        );
        assert!(
            outcome["banned_peer_refusals_after_restart"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "seed {seed}: {outcome}"
        );
        assert_eq!(
            outcome["banned_peer_connected_after_restart"], false,
            "seed {seed}: {outcome}"
        );
    }
}

#[test]
fn one_seed_replays_the_restart_recall_story_bit_for_bit() {
    let first = run_scenario(RestartRecall::NAME, NODES, 7, WATCH).expect("scenario exists");
    let again = run_scenario(RestartRecall::NAME, NODES, 7, WATCH).expect("scenario exists");
    let other = run_scenario(RestartRecall::NAME, NODES, 8, WATCH).expect("scenario exists");
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.outcome, again.outcome);
    assert_ne!(first.trace_hash, other.trace_hash);
}
