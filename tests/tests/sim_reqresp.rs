//! Stories about requests and the peer manager, told by the simulator with
//! the production `Node` in every role.
//!
//! A hostile node floods five honest nodes with requests: each rate-limits
//! it, drops it when its score reaches the disconnect threshold and, when it
//! keeps coming back, bans it; meanwhile honest nodes asking each other for
//! blocks barely notice, their p99 latency within twice that of the same
//! world without the hostile node. A server that takes requests and never
//! answers costs its requester timeouts and nothing else: the requester
//! drops it for its score and gets every block range it wants from the
//! others. A static peer that crashes is redialled further and further
//! apart while it is down, and reconnected within one backoff step once it
//! is back. Hosts that keep opening connections and never send a byte fill
//! a node's handshake slots, and honest peers still get in within a second.
//! And each story, run twice from one seed, is the same run.
//!
//! Every story is bounded in steps, and every step is followed by the
//! simulator's invariant checks; a story passes only if none was violated.

use meshsync_core::peer::REDIAL_BACKOFF_INITIAL;
use meshsync_core::{Duration, Instant};
use meshsync_sim::scenario::{
    FetchParams, FloodParams, HandshakeFlood, RequestFlood, Scenario, StaticPeerRestart,
    UnresponsivePeer,
};
use meshsync_sim::{run_scenario, Sim, SimConfig};

/// Generous bound on steps for any story here: the largest takes about 20,000.
const STEPS_MAX: u64 = 1_000_000;

fn assert_no_violations(sim: &Sim) {
    assert_eq!(
        sim.invariant_violations(),
        0,
        "seed {}: {:#?}",
        sim.seed(),
        sim.violations()
    );
}

fn at_secs(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

/// Six honest nodes ask each other for blocks; from second 5 a seventh
/// floods three of them, 8 full range requests and 2 Status requests to
/// each every 100 ms, ignoring every quota. Each target serves what the
/// quota allows, refuses the rest with result code 3 (costing the hostile
/// node score), says Goodbye(bad score) when its score reaches -20, and
/// bans it once its redials have pushed the score to -50. Honest requests
/// meanwhile all succeed, at a p99 latency within 2x of the same world,
/// same seed, without the hostile node.
#[test]
fn a_request_flood_is_rate_limited_then_dropped_then_banned() {
    let seed = 11;
    let honest = 6;
    let params = FloodParams {
        hostile_targets: 3,
        ..FloodParams::default()
    };
    let mut flood = RequestFlood::new(params.clone());
    let mut sim = Sim::new(SimConfig::new(seed));
    flood.build(&mut sim, honest);

    let banned_by_all = |_: &Sim, app: &meshsync_sim::scenario::request_flood::FloodApp| {
        app.hostile()
            .is_some_and(|hostile| hostile.is_banned_by_all())
    };
    flood
        .run_until(&mut sim, banned_by_all, STEPS_MAX)
        .expect("every target bans the flooder");

    let hostile = flood.app().hostile().expect("built with a hostile node");
    let flood_at = hostile.flood_at;
    let rate_limited_at = hostile.first_rate_limited_at.expect("rate limited");
    assert!(
        hostile.rate_limited > 0 && hostile.responses > 0,
        "{hostile:?}"
    );
    for &target in &hostile.targets {
        let dropped_at = hostile.disconnected_at[&target];
        let banned_at = hostile.banned_at[&target];
        assert!(
            flood_at <= rate_limited_at && rate_limited_at <= dropped_at && dropped_at <= banned_at,
            "{target}: flood {flood_at}, rate limited {rate_limited_at}, dropped {dropped_at}, banned {banned_at}"
        );
        assert!(
            dropped_at <= flood_at + Duration::from_secs(2),
            "{target} dropped the flooder at {dropped_at}"
        );
        assert!(
            banned_at <= flood_at + Duration::from_secs(30),
            "{target} banned the flooder at {banned_at}"
        );
        assert!(!sim.has_peer(target, hostile.node));
    }
    assert!(sim.summary().peers_banned >= hostile.targets.len() as u64);

    // Honest traffic goes on to second 30, and is compared with a world
    // without the flooder.
    let until_30_s = |sim: &Sim, _: &_| sim.now() >= at_secs(30);
    flood
        .run_until(&mut sim, until_30_s, STEPS_MAX)
        .expect("time passes");
    let mut calm = RequestFlood::new(FloodParams {
        with_hostile: false,
        ..params
    });
    let mut calm_sim = Sim::new(SimConfig::new(seed));
    calm.build(&mut calm_sim, honest);
    calm.run_until(&mut calm_sim, until_30_s, STEPS_MAX)
        .expect("time passes");

    let traffic = flood.app().traffic();
    assert!(traffic.answered > 100, "{traffic:?}");
    assert_eq!((traffic.failed, traffic.invalid), (0, 0), "{traffic:?}");
    let p99 = sim.honest_request_p99().expect("honest requests finished");
    let calm_p99 = calm_sim
        .honest_request_p99()
        .expect("honest requests finished");
    assert!(
        p99 <= calm_p99 * 2,
        "p99 {p99:?} with the flood, {calm_p99:?} without"
    );
    assert_no_violations(&sim);
    assert_no_violations(&calm_sim);
}

/// A requester walks the chain in 16-block ranges, round-robin over three
/// servers, for a minute. One server admits every request and never
/// answers: its requests time out after 5 s (a point each, and from the
/// third stall in a row, while it still pings us, ten), and the requester
/// asks another server instead. Its score falls to the disconnect
/// threshold and the requester says Goodbye(bad score); every range it
/// asked for arrives from the others, block by block as asked.
#[test]
fn a_peer_that_never_answers_is_dropped_and_the_others_serve_everything() {
    let mut scenario = UnresponsivePeer::new(FetchParams {
        fetch_for: Duration::from_secs(60),
        ..FetchParams::default()
    });
    let mut sim = Sim::new(SimConfig::new(12));
    scenario.build(&mut sim, 4);

    let all_fetched = |sim: &Sim, app: &meshsync_sim::scenario::unresponsive_peer::Fetcher| {
        app.is_done_asking(sim) && app.is_complete()
    };
    scenario
        .run_until(&mut sim, all_fetched, STEPS_MAX)
        .expect("every range arrives");

    let app = scenario.app();
    assert!(app.ranges_total() >= 200, "{}", app.ranges_total());
    assert_eq!(app.invalid_responses, 0);
    assert_eq!(app.blocks_received, app.ranges_total() as u64 * 16);
    assert!(
        app.failures
            .get("first_chunk_timeout")
            .is_some_and(|&n| n >= 1),
        "{:?}",
        app.failures
    );
    assert!(
        app.retries >= app.requests_to_unresponsive,
        "every failure is retried"
    );
    assert!(
        app.dropped_for_score(),
        "the requester drops the silent server for its score, got {:?}",
        app.unresponsive_dropped
    );
    assert!(!sim.has_peer(app.requester, app.unresponsive));
    for &server in app
        .servers
        .iter()
        .filter(|&&server| server != app.unresponsive)
    {
        assert!(sim.are_connected(app.requester, server), "{server}");
    }
    assert_no_violations(&sim);
}

/// Two watchers keep node 0 as a static peer. Node 0 crashes at second 35
/// and stays down for 20 s: each redial is refused, and they come further
/// and further apart (about 1, 2, 4, 8 s, less up to a quarter of jitter).
/// Node 0 starts again, a new process with the same identity, and both
/// watchers are connected to it within the backoff step they were in.
#[test]
fn a_static_peer_that_restarts_is_redialled_with_backoff_and_reconnected() {
    let scenario = StaticPeerRestart {
        crash_at: Duration::from_secs(35),
        down_for: Duration::from_secs(20),
    };
    let crash_at = at_secs(35);
    let restart_at = scenario.restart_at();
    let mut sim = Sim::new(SimConfig::new(13));
    let mut scenario_mut = scenario.clone();
    scenario_mut.build(&mut sim, 3);
    let node = StaticPeerRestart::STATIC_PEER;

    sim.run_until(StaticPeerRestart::all_connected, STEPS_MAX)
        .expect("the watchers dial their static peer");
    sim.run_until(|sim| !sim.is_up(node), STEPS_MAX)
        .expect("the static peer crashes");
    sim.run_until(
        |sim| sim.now() >= restart_at && StaticPeerRestart::all_connected(sim),
        STEPS_MAX,
    )
    .expect("the watchers reconnect");

    assert_eq!(sim.incarnation(node), 1);
    for watcher in StaticPeerRestart::watchers(&sim) {
        let dials = StaticPeerRestart::dials_to_static_peer(&sim, watcher, crash_at);
        let while_down: Vec<Instant> = dials
            .iter()
            .copied()
            .filter(|&at| at < restart_at)
            .collect();
        assert!(while_down.len() >= 4, "{watcher}: {dials:?}");
        // The first redial comes within the initial backoff of the loss.
        assert!(
            while_down[0] <= crash_at + REDIAL_BACKOFF_INITIAL + Duration::from_millis(100),
            "{watcher}: {dials:?}"
        );
        // Each wait is 2x the one before, less up to 25 % jitter on either.
        let gaps: Vec<Duration> = dials
            .windows(2)
            .map(|pair| pair[1].saturating_duration_since(pair[0]))
            .collect();
        for pair in gaps.windows(2) {
            let ratio = pair[1].as_secs_f64() / pair[0].as_secs_f64();
            assert!((1.4..=2.8).contains(&ratio), "{watcher}: gaps {gaps:?}");
        }
        // Reconnected by the first dial after the restart, which comes
        // within the step after the last refused one: at most 2^(refusals) s.
        let reconnected_at =
            StaticPeerRestart::reconnected_at(&sim, watcher, restart_at).expect("reconnected");
        let step = REDIAL_BACKOFF_INITIAL * (1u32 << while_down.len());
        assert!(
            reconnected_at <= restart_at + step + Duration::from_secs(1),
            "{watcher}: reconnected at {reconnected_at}, restart at {restart_at}, dials {dials:?}"
        );
    }
    assert_eq!(sim.check_peer_symmetry(), 0);
    assert_no_violations(&sim);
}

/// Each of the three stories, run twice from one seed through the runner
/// the command line uses, is the same run: the same trace hash, bit for bit,
/// crashes and restarts included; another seed is another run.
#[test]
fn one_seed_replays_each_request_story_bit_for_bit() {
    for (scenario, nodes, secs) in [
        (RequestFlood::NAME, 4, 15),
        (UnresponsivePeer::NAME, 3, 15),
        (StaticPeerRestart::NAME, 3, 50),
    ] {
        let duration = Duration::from_secs(secs);
        let first = run_scenario(scenario, nodes, 21, duration).expect("scenario exists");
        let again = run_scenario(scenario, nodes, 21, duration).expect("scenario exists");
        let other = run_scenario(scenario, nodes, 22, duration).expect("scenario exists");
        assert_eq!(first.trace_hash, again.trace_hash, "{scenario}");
        assert_eq!(first.events, again.events, "{scenario}");
        assert_eq!(first.outcome, again.outcome, "{scenario}");
        assert_eq!(
            first.honest_request_p99_ms, again.honest_request_p99_ms,
            "{scenario}"
        );
        assert_ne!(first.trace_hash, other.trace_hash, "{scenario}");
        assert!(first.requests_served > 0, "{scenario}: {first}");
    }
}

/// 250 mute hosts open 1,600 connections every 3 s that never send a byte:
/// 100 of them 10 each, past their address's share of 4, and 150 of them 4
/// each, which fills the 512 slots. A fresh honest node dials every 3 s
/// from 2.5 s on. Each address's extra connections are refused at once,
/// each newcomer evicts the handshake open the longest, and every honest
/// node is the target's peer within a second of its dial. (Refusing
/// newcomers instead, as before, locked out five of six in this world.)
#[test]
fn a_half_open_flood_locks_out_no_honest_peer() {
    for seed in 1..=2 {
        let summary = run_scenario(HandshakeFlood::NAME, 0, seed, Duration::from_secs(10))
            .expect("handshake-flood exists");
        assert_eq!(
            summary.invariant_violations, 0,
            "seed {seed}: {:#?}",
            summary.violations
        );
        assert!(
            summary.bounds_broken.is_empty(),
            "seed {seed}: {:#?}",
            summary.bounds_broken
        );
        let outcome = summary.outcome.expect("handshake-flood reports an outcome");
        let count = |field: &str| outcome[field].as_u64().unwrap_or_else(|| panic!("{field}"));
        assert_eq!(count("waves"), 3, "seed {seed}: at 1 s, 4 s and 7 s");
        assert_eq!(count("honest_dials"), 3, "seed {seed}: {outcome}");
        assert_eq!(count("honest_connected"), 3, "seed {seed}: {outcome}");
        assert_eq!(
            count("inbound_handshakes_max"),
            meshsync_core::limits::HANDSHAKES_IN_PROGRESS_MAX as u64,
            "seed {seed}"
        );
        assert!(count("evicted") > 0, "seed {seed}: {outcome}");
        assert!(count("refused_for_address") > 0, "seed {seed}: {outcome}");
        let slowest = outcome["honest_handshake_ms_max"]
            .as_f64()
            .expect("a figure");
        assert!(slowest < 1_000.0, "seed {seed}: {slowest} ms");
    }
}
