//! Peers that lie about their chain cannot stop a producing network.
//!
//! Five honest nodes produce blocks (four proposers, 2 s slots). Ten
//! seconds in, six liars dial every one of them: one claims head and
//! finality at `u64::MAX`, one a head a billion slots ahead, one finality
//! on a made-up root; one holds a proposer key and serves a block signed
//! 1,000 slots in the future; one answers block requests with 64 of the
//! largest unsigned blocks; one gossips orphans whose made-up ancestors
//! only it serves. No node panics, the proposers produce as many blocks
//! per slot as in the same seed's run without liars (at least 0.95 of
//! it), the honest nodes end on one head that is not in the future, import
//! nothing invalid, and every liar is penalised. The same seed gives the
//! same run.

use meshsync_core::Duration;
use meshsync_sim::scenario::{LiarsParams, Scenario, SyncLiars};
use meshsync_sim::{Sim, SimConfig};
use serde_json::Value;

fn run(seed: u64) -> (String, Value) {
    let mut scenario = SyncLiars::new(LiarsParams::default());
    let mut sim = Sim::new(SimConfig {
        label: scenario.name().to_owned(),
        ..SimConfig::new(seed)
    });
    scenario.build(&mut sim, 5);
    scenario.run(&mut sim, Duration::from_secs(60));
    scenario.finish(&mut sim);
    let outcome = scenario.outcome(&sim).expect("an outcome");
    assert_eq!(
        sim.invariant_violations(),
        0,
        "seed {seed}: {:#?}",
        sim.violations()
    );
    (sim.trace().hash_hex(), outcome)
}

#[test]
fn sync_liars_neither_crash_nor_stall_producers_and_are_penalised() {
    let seed = 31;
    let (hash, outcome) = run(seed);
    assert_eq!(outcome["no_panic"], true, "{outcome:#}");
    let ratio = outcome["blocks_per_slot_ratio"]
        .as_f64()
        .unwrap_or_else(|| panic!("a ratio: {outcome:#}"));
    assert!(ratio >= 0.95, "producers stalled: {outcome:#}");
    assert_eq!(outcome["heads_converged"], true, "{outcome:#}");
    assert_eq!(outcome["head_in_future"], false, "{outcome:#}");
    assert_eq!(outcome["invalid_blocks_imported"], 0, "{outcome:#}");
    let liars = outcome["liars"].as_array().expect("a list of liars");
    assert_eq!(liars.len(), 6, "{outcome:#}");
    for liar in liars {
        assert_eq!(liar["penalised"], true, "not penalised: {liar}");
    }
    assert_eq!(run(seed), (hash, outcome), "same seed, same run");
}
