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
    let config = CampaignConfig {
        run: RunConfig::new(scenario, nodes, 0, Duration::from_secs(seconds)),
        seeds: SeedRange {
            first: 1,
            last: seeds,
        },
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
