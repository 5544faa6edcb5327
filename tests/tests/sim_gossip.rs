//! Stories about gossip, told by the simulator with the production `Node` in
//! every role: the small versions of `gossip-1k`, `gossip-blocks` and the
//! GossipSub v1.1 attack scenarios that `meshsync-sim run` plays at scale.
//!
//! Honest nodes in a random topology of about twenty connections each all
//! subscribe to one topic and, once their meshes have formed, take turns
//! publishing. Every honest node receives every message, whether the world
//! runs the mesh or the floodsub baseline, but the mesh gets there with
//! fewer copies and fewer bytes on the wire. Under attack the mesh holds:
//! Sybils that publish invalid messages fall below the graylist threshold
//! at every honest node they reach within a second, and honest messages
//! still all arrive; Sybils that all dial one node and never forward do not
//! cut it off; a quarter of the nodes withholding everything neither loses
//! messages nor doubles the p99 latency; and a world where everyone, Sybils
//! included, connects at the same instant with no score history still
//! delivers; a flood of PRUNEs from throwaway identities costs no honest
//! node a backoff nor a peer. Each story, run twice from one seed, is the
//! same run.
//!
//! Every story is bounded (a fixed virtual duration), and every step is
//! followed by the simulator's invariant checks; a story passes only if
//! none was violated.

use meshsync_core::gossip::router::MESH_N_LOW;
use meshsync_core::Duration;
use meshsync_sim::scenario::{gossip_attacks, GossipOutcome, GossipParams, GossipScenario};
use meshsync_sim::{NodeIndex, Scenario, Sim, SimConfig};

fn assert_no_violations(sim: &Sim) {
    assert_eq!(
        sim.invariant_violations(),
        0,
        "seed {}: {:#?}",
        sim.seed(),
        sim.violations()
    );
}

/// Builds, runs for `publish` of publishing (plus the scenario's warm-up
/// and drain), finishes and measures.
fn play(
    mut scenario: GossipScenario,
    nodes: usize,
    seed: u64,
    publish: Duration,
) -> (Sim, GossipOutcome) {
    let mut sim = Sim::new(SimConfig::new(seed));
    scenario.build(&mut sim, nodes);
    scenario.run(&mut sim, publish);
    scenario.finish(&mut sim);
    assert_no_violations(&sim);
    let outcome = scenario.measure(&sim);
    (sim, outcome)
}

fn with(scenario: GossipScenario, change: impl FnOnce(&mut GossipParams)) -> GossipScenario {
    let mut scenario = scenario;
    change(&mut scenario.params);
    scenario
}

fn assert_everything_delivered(outcome: &GossipOutcome) {
    assert!(outcome.messages_published > 0, "{outcome:#?}");
    assert_eq!(outcome.publish_failed, 0, "{outcome:#?}");
    assert_eq!(outcome.delivery_ratio, 1.0, "{outcome:#?}");
    let topology = outcome.topology.as_ref().expect("checked at publish start");
    assert!(topology.connected, "{topology:#?}");
}

/// The delivery bound is judged on what arrived: with no drain after the
/// last publish, the messages still on their way count as lost and the
/// run breaks its bound; with the usual drain the same world keeps it.
#[test]
fn a_gossip_run_that_does_not_deliver_breaks_its_bound() {
    let play_bounds = |drain: Duration| {
        // 200 messages a second: the last ones leave a few milliseconds
        // before the end, and a hop takes 25 ms.
        let mut scenario = with(GossipScenario::gossip_1k(), |params| {
            params.publishers = 10;
            params.messages_per_second = 200.0;
            params.drain = drain;
        });
        let mut sim = Sim::new(SimConfig::new(9));
        scenario.build(&mut sim, 20);
        scenario.run(&mut sim, Duration::from_secs(1));
        scenario.finish(&mut sim);
        (
            scenario.measure(&sim).delivery_ratio,
            scenario.bounds_broken(&sim),
        )
    };
    let (ratio, broken) = play_bounds(Duration::ZERO);
    assert!(ratio < 0.999, "delivery {ratio}");
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].starts_with("honest delivery"), "{broken:?}");
    let drain = GossipScenario::gossip_1k().params.drain;
    let (ratio, broken) = play_bounds(drain);
    assert_eq!(ratio, 1.0);
    assert!(broken.is_empty(), "{broken:?}");
}

/// 40 nodes, 10 publishers taking turns, 1 KiB at 10 per second for 5 s:
/// mesh and floodsub both deliver everything; the mesh does it with
/// clearly fewer copies per delivery and fewer bytes per delivered byte.
#[test]
fn the_mesh_delivers_small_messages_with_fewer_bytes_than_floodsub() {
    let params = |floodsub| {
        with(GossipScenario::gossip_1k(), |params| {
            params.publishers = 10;
            params.floodsub = floodsub;
        })
    };
    let (_, mesh) = play(params(false), 40, 21, Duration::from_secs(5));
    let (_, flood) = play(params(true), 40, 21, Duration::from_secs(5));
    assert_everything_delivered(&mesh);
    assert_everything_delivered(&flood);
    assert_eq!(mesh.messages_published, 50);
    let topology = mesh.topology.as_ref().expect("checked");
    assert!(topology.honest_mesh_min >= MESH_N_LOW, "{topology:#?}");
    assert!(topology.honest_peers_mean >= 15.0, "{topology:#?}");
    let mesh_bytes = mesh.bytes_sent_per_delivered_byte.expect("delivered");
    let flood_bytes = flood.bytes_sent_per_delivered_byte.expect("delivered");
    assert!(
        mesh_bytes < 0.8 * flood_bytes,
        "mesh {mesh_bytes:.2} vs floodsub {flood_bytes:.2} bytes per delivered byte"
    );
    assert!(
        mesh.duplicates_per_delivery < 0.8 * flood.duplicates_per_delivery,
        "mesh {:.2} vs floodsub {:.2} copies per delivery",
        mesh.duplicates_per_delivery,
        flood.duplicates_per_delivery
    );
}

/// 24 nodes with about 18 connections each, a 1 MiB message every 2 s from
/// a rotating publisher, three messages: both deliver everything; the mesh
/// sends clearly fewer bytes per delivered byte and receives fewer copies.
#[test]
fn the_mesh_delivers_blocks_with_fewer_bytes_than_floodsub() {
    let params = |floodsub| {
        with(GossipScenario::gossip_blocks(), |params| {
            params.floodsub = floodsub;
        })
    };
    let (_, mesh) = play(params(false), 24, 22, Duration::from_secs(6));
    let (_, flood) = play(params(true), 24, 22, Duration::from_secs(6));
    assert_everything_delivered(&mesh);
    assert_everything_delivered(&flood);
    assert_eq!(mesh.messages_published, 3);
    let mesh_bytes = mesh.bytes_sent_per_delivered_byte.expect("delivered");
    let flood_bytes = flood.bytes_sent_per_delivered_byte.expect("delivered");
    assert!(
        mesh_bytes < 0.8 * flood_bytes,
        "mesh {mesh_bytes:.2} vs floodsub {flood_bytes:.2} bytes per delivered byte"
    );
    assert!(
        mesh.duplicates_per_delivery < flood.duplicates_per_delivery,
        "mesh {:.2} vs floodsub {:.2} copies per delivery",
        mesh.duplicates_per_delivery,
        flood.duplicates_per_delivery
    );
}

/// 50 nodes, 10 of them Sybils publishing invalid messages, 100 per second
/// in all, while 20 honest publishers publish valid ones: every honest node
/// that meets a Sybil graylists it (or drops it) within 2 s of the spam
/// starting, and honest delivery stays at or above 99.9 %.
#[test]
fn spamming_sybils_are_graylisted_and_honest_messages_still_arrive() {
    let (_, outcome) = play(gossip_attacks::spam(), 50, 23, Duration::from_secs(8));
    let spam = outcome.spam.as_ref().expect("a spam outcome");
    assert_eq!(outcome.sybils, 10);
    assert!(spam.spam_received_by_honest > 0, "{spam:#?}");
    assert!(spam.honest_sybil_relations >= 10, "{spam:#?}");
    assert_eq!(
        spam.relations_graylisted_or_disconnected, spam.honest_sybil_relations,
        "{spam:#?}"
    );
    assert_eq!(spam.relations_still_open, 0, "{spam:#?}");
    let ended_ms = spam.ended_after_ms_max.expect("every relation ended");
    assert!(ended_ms <= 2_000.0, "{spam:#?}");
    assert!(outcome.delivery_ratio >= 0.999, "{outcome:#?}");
}

/// 50 nodes, 10 of them withholding Sybils that all dial one honest node
/// before anyone else dials, to fill its mesh: the target still receives
/// at least 99 % of the honest messages.
#[test]
fn an_eclipse_attempt_does_not_cut_the_target_off() {
    let (_, outcome) = play(gossip_attacks::eclipse(), 50, 24, Duration::from_secs(8));
    let eclipse = outcome.eclipse.as_ref().expect("an eclipse outcome");
    assert_eq!(outcome.sybils, 10);
    assert_eq!(eclipse.target_sybil_peers, 10, "{eclipse:#?}");
    assert!(eclipse.target_expected > 0, "{eclipse:#?}");
    assert!(eclipse.target_delivery_ratio >= 0.99, "{outcome:#?}");
    assert!(outcome.delivery_ratio >= 0.99, "{outcome:#?}");
}

/// 60 nodes, a quarter of them withholding Sybils mixed into the topology:
/// honest delivery stays at or above 99.9 %, and the p99 latency within 2×
/// of the same world, same seed, without the Sybils (run by the scenario).
#[test]
fn withholding_sybils_neither_lose_messages_nor_double_the_p99() {
    let (_, outcome) = play(gossip_attacks::withhold(), 60, 25, Duration::from_secs(8));
    assert_eq!(outcome.sybils, 15);
    let without = outcome.without_sybils.as_ref().expect("the baseline ran");
    assert_eq!(without.sybils, 0);
    assert_eq!(without.messages_published, outcome.messages_published);
    assert!(outcome.delivery_ratio >= 0.999, "{outcome:#?}");
    let p99 = outcome.latency_ms_p99.expect("deliveries");
    let baseline_p99 = without.latency_ms_p99.expect("deliveries");
    assert!(
        p99 <= 2.0 * baseline_p99,
        "p99 {p99:.1} ms with Sybils, {baseline_p99:.1} ms without"
    );
}

/// 60 nodes, 30 % of them withholding Sybils, everyone dialling at t = 0
/// with no score history; publishing starts 3 s in: honest delivery is at
/// least 99 %.
#[test]
fn a_cold_boot_with_withholding_sybils_still_delivers() {
    let (_, outcome) = play(gossip_attacks::cold_boot(), 60, 26, Duration::from_secs(8));
    assert_eq!(outcome.sybils, 18);
    assert!(outcome.delivery_ratio >= 0.99, "{outcome:#?}");
}

/// The same seed gives the same run, bit for bit; another seed another.
#[test]
fn a_gossip_run_replays_from_its_seed() {
    let scenario = || {
        with(gossip_attacks::withhold(), |params| {
            params.compare_without_sybils = false;
        })
    };
    let (first, _) = play(scenario(), 30, 27, Duration::from_secs(3));
    let (again, _) = play(scenario(), 30, 27, Duration::from_secs(3));
    let (other, _) = play(scenario(), 30, 28, Duration::from_secs(3));
    assert_eq!(first.trace().hash_hex(), again.trace().hash_hex());
    assert_ne!(first.trace().hash_hex(), other.trace().hash_hex());
}

/// 20 nodes, a tenth of them stop reading the moment publishing starts,
/// under block-sized traffic (1 MiB every 2 s). Their peers keep gossiping
/// to everyone else: delivery to the rest is at least 99.9 % and the p99
/// latency within 1.2× of the same world without them; each slow connection
/// ends, cut as stalled or given up as too slow, instead of waiting for the
/// silence timeout.
#[test]
fn peers_that_stop_reading_silence_nobody() {
    // Long enough for the stalled connections to be cut (30 s without progress).
    let publish = Duration::from_secs(34);
    let (sim, outcome) = play(gossip_attacks::slow_readers(), 20, 29, publish);
    assert_eq!(outcome.sybils, 2);
    let without = outcome.without_sybils.as_ref().expect("the baseline ran");
    assert!(outcome.delivery_ratio >= 0.999, "{outcome:#?}");
    let p99 = outcome.latency_ms_p99.expect("deliveries");
    let baseline_p99 = without.latency_ms_p99.expect("deliveries");
    assert!(
        p99 <= 1.2 * baseline_p99,
        "p99 {p99:.1} ms with slow readers, {baseline_p99:.1} ms without"
    );
    assert!(outcome.connections_stalled > 0, "{outcome:#?}");
    // No honest node still holds a slow reader (they are the last two).
    for honest in (0..18).map(NodeIndex) {
        let held: Vec<NodeIndex> = sim
            .peers_of(honest)
            .into_iter()
            .filter(|peer| peer.0 >= 18)
            .collect();
        assert!(held.is_empty(), "{honest} still holds {held:?}");
    }
}

/// 50 nodes, 30 % of them at any time throwaway identities that GRAFT every
/// honest node they reach and a heartbeat later PRUNE it with a `u32::MAX`
/// s backoff, then leave after 2 s for a fresh identity: a flood of PRUNEs meant to push
/// honest backoffs out of the table, so that honest nodes GRAFT honest
/// peers inside the backoff they asked for and are scored down by them.
/// Only half the honest nodes are flooded: the other half keep their own
/// records and count any such GRAFT; honest meshes trim above D + 1, so
/// honest backoffs come and go all through the run. No honest node GRAFTs
/// inside one; none is graylisted or lost by another; no backoff table
/// holds more than its node's peers; honest delivery stays at or above
/// 99.9 %. (With backoffs that outlive their connections and the
/// earliest-expiring evicted from a full table, this test fails.)
#[test]
fn a_prune_flood_from_throwaway_identities_costs_no_honest_backoff() {
    let (_, outcome) = play(
        gossip_attacks::prune_flood(),
        50,
        31,
        Duration::from_secs(8),
    );
    let flood = outcome.prune_flood.as_ref().expect("a prune-flood outcome");
    assert_eq!(outcome.sybils, 15);
    assert_eq!(
        flood.flooded_honest_nodes, 17,
        "half of the 35 honest nodes"
    );
    // The flood happened: fresh identities kept coming and their PRUNEs arrived.
    assert!(flood.sybil_identities >= 50, "{flood:#?}");
    assert!(
        flood.prunes_received_by_honest >= flood.sybil_identities,
        "{flood:#?}"
    );
    assert!(flood.watch_samples >= 20, "{flood:#?}");
    assert_eq!(flood.honest_grafts_in_backoff, 0, "{flood:#?}");
    assert_eq!(flood.honest_pairs_graylisted, 0, "{flood:#?}");
    assert_eq!(flood.honest_pairs_disconnected, 0, "{flood:#?}");
    assert!(flood.backoffs_max <= flood.backoffs_bound, "{flood:#?}");
    assert!(outcome.delivery_ratio >= 0.999, "{outcome:#?}");
}
