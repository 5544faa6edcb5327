//! Small seed campaigns of the fault stories, run by the suite: every seed
//! must pass. The full-size campaigns (`meshsync-sim campaign --scenario
//! chaos --seeds 1..1000`) are run by hand; these catch a regression in a
//! few seconds.

use meshsync_core::Duration;
use meshsync_sim::campaign::{run_campaign, CampaignConfig, SeedRange, Shard};
use meshsync_sim::scenario::RunConfig;

/// Runs `scenario` with `nodes` nodes for `seconds` over seeds 1..=`seeds`
/// on two workers and fails with every failing seed's replay line.
fn campaign(scenario: &str, nodes: usize, seconds: u64, seeds: u64) {
    campaign_over(scenario, nodes, seconds, 1, seeds);
}

/// [`campaign`] over seeds `first..=last`.
fn campaign_over(scenario: &str, nodes: usize, seconds: u64, first: u64, last: u64) {
    let seeds = last - first + 1;
    let config = CampaignConfig {
        run: RunConfig::new(scenario, nodes, 0, Duration::from_secs(seconds)),
        seeds: SeedRange { first, last },
        shard: Shard::WHOLE,
        jobs: 2,
        flags: vec![
            "--nodes".to_owned(),
            nodes.to_string(),
            "--duration".to_owned(),
            format!("{seconds}s"),
        ],
    };
    let summary = run_campaign(&config, |_| {}).expect("a known scenario");
    let failures: Vec<String> = summary.failure_lines().collect();
    assert_eq!(summary.runs, seeds);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Chaos at a small size: 8 honest nodes, 20 s of faults, then the heal.
#[test]
fn chaos_holds_over_ten_seeds() {
    campaign("chaos", 8, 20, 10);
}

/// Chaos seed 400 at its full size (12 nodes, 60 s): a proposer back from
/// a crash, its disk then refusing writes, held a block of its own the
/// others never saw, 18 slots old when its turn came. Built on, it made
/// that block final (finality is 16 slots below the head) and forked the
/// node off for good. A head a finality depth old now syncs from the
/// peers ahead first, however close they are.
#[test]
fn chaos_seed_400_a_stale_proposer_syncs_before_it_builds() {
    campaign_over("chaos", 12, 60, 400, 400);
}
