//! Stories told by the simulator, with the production `Node` in every role.
//!
//! Fifty nodes that have never met dial a random connected topology and, a
//! few virtual seconds later, every one of those dials is a peer relation
//! that both ends agree on; run it again from the same seed and every byte
//! every node sent is the same, run it from another seed and the trace
//! differs. Two peers left alone for ten virtual minutes keep each other alive
//! with pings. And when one of them goes silent (its traffic vanishes into a
//! blackhole) the other waits out the silence timeout and drops it as silent.
//! Every story is bounded in steps, and every step is followed by the
//! simulator's invariant checks; a story passes only if none was violated.

use meshsync_core::io::DisconnectReason;
use meshsync_core::limits::{PEERS_MAX, PEER_SILENCE_TIMEOUT, PING_INTERVAL};
use meshsync_core::{Duration, Instant, Notification};
use meshsync_sim::scenario::Connect;
use meshsync_sim::{run_scenario, LinkModel, NodeIndex, Scenario, Sim, SimConfig};

/// Generous bound on steps for any story here: each takes a few thousand.
const STEPS_MAX: u64 = 500_000;

fn assert_no_violations(sim: &Sim) {
    assert_eq!(
        sim.invariant_violations(),
        0,
        "seed {}: {:#?}",
        sim.seed(),
        sim.violations()
    );
}

/// Whether every planned dial is a peer relation on both ends and the graph
/// is connected, with a cheap count first so the full check runs rarely.
fn fully_connected(sim: &Sim) -> bool {
    sim.notification_counts().peer_connected_outbound >= sim.dials_planned().len() as u64
        && sim.is_fully_connected()
}

/// Two nodes, the first dialling the second, run until both count each other as peers.
fn connected_pair(seed: u64) -> (Sim, NodeIndex, NodeIndex) {
    let mut sim = Sim::new(SimConfig::new(seed));
    let alice = sim.add_node();
    let bob = sim.add_node();
    sim.dial(alice, bob);
    sim.run_until(|sim| sim.are_connected(alice, bob), STEPS_MAX)
        .expect("two nodes on a clean link connect");
    (sim, alice, bob)
}

/// Fifty nodes each dial the one before them in a random order, plus a few
/// random others, all within the first second. Handshakes cross on 25 ms
/// links, a quarter of the deliveries cut into pieces; soon every planned
/// dial is a mutual peer relation and the whole network is one component.
#[test]
fn fifty_strangers_become_one_connected_network() {
    let mut sim = Sim::new(SimConfig::new(50));
    Connect::default().build(&mut sim, 50);
    assert!(sim.dials_planned().len() >= 49, "a spanning path at least");

    sim.run_until(fully_connected, STEPS_MAX)
        .expect("the planned topology comes up");

    assert!(
        sim.now() < Instant::from_micros(5_000_000),
        "took until {}",
        sim.now()
    );
    assert_eq!(sim.check_peer_symmetry(), 0);
    for node in sim.node_indices() {
        let peers = sim.node(node).peer_count();
        assert!((1..=PEERS_MAX).contains(&peers), "{node} has {peers} peers");
        assert_eq!(sim.node(node).counters().handshakes_failed, 0, "{node}");
    }
    assert_no_violations(&sim);
}

/// The same fifty-node run, from the same seed, is the same run: every action
/// of every node, at every virtual microsecond, hashes to the same trace.
/// Another seed draws other identities, topology and delays: another trace.
#[test]
fn one_seed_replays_one_run_bit_for_bit() {
    let duration = Duration::from_secs(5);
    let first = run_scenario("connect", 50, 7, duration).expect("connect exists");
    let again = run_scenario("connect", 50, 7, duration).expect("connect exists");
    let other = run_scenario("connect", 50, 8, duration).expect("connect exists");

    for summary in [&first, &again, &other] {
        assert!(summary.fully_connected, "{summary}");
        assert_eq!(summary.invariant_violations, 0, "{summary}");
        assert_eq!(summary.handshakes_completed as usize, summary.dials_planned);
    }
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.actions, again.actions);
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// Alice and Bob connect and then have nothing to say for ten virtual
/// minutes. Far longer than the silence timeout, yet neither drops the
/// other: each pings every `PING_INTERVAL`, and every pong proves the peer alive.
#[test]
fn an_idle_pair_stays_connected_for_ten_minutes_thanks_to_pings() {
    let (mut sim, alice, bob) = connected_pair(1);

    sim.run_for(Duration::from_secs(600));

    assert!(sim.are_connected(alice, bob));
    let pings_expected = 600 / PING_INTERVAL.as_secs() - 1;
    for node in [alice, bob] {
        let counters = sim.node(node).counters();
        assert!(
            counters.pings_sent >= pings_expected,
            "{node}: {counters:?}"
        );
        assert!(
            counters.pongs_received >= pings_expected,
            "{node}: {counters:?}"
        );
        assert_eq!(counters.peers_disconnected, 0, "{node}: {counters:?}");
    }
    assert_eq!(sim.notification_counts().peer_disconnected, 0);
    assert_eq!(sim.check_peer_symmetry(), 0);
    assert_no_violations(&sim);
}

/// Alice and Bob are connected when everything Bob sends starts vanishing.
/// Alice keeps pinging; no pong comes back. Once nothing has arrived from Bob
/// for `PEER_SILENCE_TIMEOUT`, Alice drops him as silent and closes the
/// connection; Bob, who still hears her, sees the connection end.
#[test]
fn a_peer_that_goes_silent_is_dropped_after_the_silence_timeout() {
    let (mut sim, alice, bob) = connected_pair(2);
    sim.run_for(Duration::from_secs(45)); // Some pings each way first.
    let silenced_at = sim.now();
    sim.set_blackholed(bob, true);

    let bob_id = sim.peer_id(bob);
    let dropped_silent = |sim: &Sim| {
        sim.notifications(alice).any(|(_, notification)| {
            *notification
                == Notification::PeerDisconnected {
                    peer: bob_id,
                    reason: DisconnectReason::Silent,
                }
        })
    };
    sim.run_until(dropped_silent, STEPS_MAX)
        .expect("alice drops bob for silence");

    // Bob's last word reached Alice at most one ping interval before the
    // blackhole, so the drop comes within the last ping interval of the timeout.
    let silent_for = sim.now().saturating_duration_since(silenced_at);
    assert!(
        silent_for > PEER_SILENCE_TIMEOUT - PING_INTERVAL && silent_for <= PEER_SILENCE_TIMEOUT,
        "dropped {silent_for:?} after the blackhole"
    );
    assert!(!sim.has_peer(alice, bob));
    assert_eq!(sim.node(alice).counters().peers_silent, 1);

    let alice_id = sim.peer_id(alice);
    sim.run_until(|sim| !sim.has_peer(bob, alice), STEPS_MAX)
        .expect("bob sees the connection closed");
    let bob_saw = sim.notifications(bob).last().map(|(_, n)| n.clone());
    assert!(
        matches!(
            bob_saw,
            Some(Notification::PeerDisconnected {
                peer,
                reason: DisconnectReason::ConnectionLost(_),
            }) if peer == alice_id
        ),
        "{bob_saw:?}"
    );
    assert_no_violations(&sim);
}

/// Every delivery on every link is cut into pieces at random offsets, and the
/// jitter is as large as the latency. The core's decoders reassemble what
/// the network sliced, and ten nodes still come together.
#[test]
fn bytes_cut_anywhere_still_make_a_network() {
    let link = LinkModel {
        latency: Duration::from_millis(5),
        jitter_pct: 100,
        split_pct: 100,
    };
    let mut sim = Sim::new(SimConfig {
        link,
        ..SimConfig::new(3)
    });
    Connect::default().build(&mut sim, 10);

    sim.run_until(fully_connected, STEPS_MAX)
        .expect("the planned topology comes up over sliced links");

    assert!(sim.network_counts().bytes_delivered > 0);
    assert_eq!(sim.check_peer_symmetry(), 0);
    assert_no_violations(&sim);
}
