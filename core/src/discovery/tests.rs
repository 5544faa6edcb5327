//! Discovery as a whole, against in-memory networks built here: lookups
//! converge on the true nearest peers over many seeds, Sybil answers do not
//! fill the table, refreshes follow the peer count, bootnodes are only a
//! start, and the same seed gives the same outputs.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::identity::{Identity, PeerId};
use crate::machine::Machine;
use crate::time::{Duration, Instant};
use limits::{
    BUCKET_ENTRIES_MAX, LOOKUP_QUERIES_MAX, LOOKUP_ROUNDS_MAX, NETGROUP_ENTRIES_PER_TABLE_MAX,
    REFRESH_INTERVAL, REFRESH_INTERVAL_BELOW_TARGET,
};

const NETWORK: u64 = 9;

/// A simulated peer: its identity's record and the address it connects from.
struct SimPeer {
    record: Record,
    ip: IpAddr,
    /// Its own routing table, as ids: at most K per bucket of its key.
    known: Vec<PeerId>,
}

/// A network of `size` honest peers, each in its own /16, each knowing up
/// to K peers per bucket of its own key, chosen at random by `rng`.
fn honest_network(size: u64, rng: &mut ChaCha20Rng) -> BTreeMap<PeerId, SimPeer> {
    let mut peers: BTreeMap<PeerId, SimPeer> = (0..size)
        .map(|n| {
            let ip = IpAddr::from([20 + (n / 200) as u8, (n % 200) as u8, 7, 1]);
            let record = Record::sign(
                &Identity::from_seed(10_000 + n),
                NETWORK,
                1,
                &[SocketAddr::new(ip, 9000)],
            );
            (
                record.peer(),
                SimPeer {
                    record,
                    ip,
                    known: Vec::new(),
                },
            )
        })
        .collect();
    let ids: Vec<PeerId> = peers.keys().copied().collect();
    for id in &ids {
        let key = Key::of_peer(id);
        let mut order = ids.clone();
        // A seeded shuffle, so which K of a crowded bucket it knows varies.
        for index in (1..order.len()).rev() {
            let other = (rng.next_u64() % (index as u64 + 1)) as usize;
            order.swap(index, other);
        }
        let mut per_bucket: BTreeMap<usize, usize> = BTreeMap::new();
        let mut known = Vec::new();
        for other in order {
            let Some(bucket) = key.distance(&Key::of_peer(&other)).bucket() else {
                continue;
            };
            let count = per_bucket.entry(bucket).or_insert(0);
            if *count < BUCKET_ENTRIES_MAX {
                *count += 1;
                known.push(other);
            }
        }
        peers.get_mut(id).expect("listed").known = known;
    }
    peers
}

/// The K nearest of `ids` to `target`.
fn nearest(ids: impl Iterator<Item = PeerId>, target: &Key) -> Vec<PeerId> {
    let mut sorted: Vec<(Distance, PeerId)> = ids
        .map(|id| (Key::of_peer(&id).distance(target), id))
        .collect();
    sorted.sort();
    sorted
        .into_iter()
        .take(BUCKET_ENTRIES_MAX)
        .map(|(_, id)| id)
        .collect()
}

fn discovery(seed: u64) -> Discovery {
    let local = Record::sign(
        &Identity::from_seed(seed),
        NETWORK,
        1,
        &[SocketAddr::from(([198, 51, 100, 1], 9000))],
    );
    let config = Config {
        local,
        table: TableConfig::default(),
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    Discovery::new(config, seed_bytes, Instant::ZERO)
}

/// Answers every query with `answer(peer, target)` until the lookup ends;
/// returns its outcome.
fn run_lookup(
    discovery: &mut Discovery,
    now: Instant,
    target: Key,
    mut answer: impl FnMut(PeerId, &Key) -> Vec<Record>,
) -> LookupOutcome {
    let id = discovery
        .start_lookup(now, target)
        .expect("room for a lookup");
    for _ in 0..10 * LOOKUP_QUERIES_MAX {
        let queries: Vec<Query> = std::iter::from_fn(|| discovery.poll_query()).collect();
        for query in queries {
            let records = answer(query.peer, &query.request.target);
            let bytes = FindNodeAnswer { records }.encode();
            discovery
                .handle_find_node_answer(now, query.id, &bytes)
                .expect("honestly encoded");
            discovery.assert_invariants();
        }
        while let Some(outcome) = discovery.poll_lookup_outcome() {
            if outcome.id == id {
                return outcome;
            }
        }
    }
    panic!("the lookup did not end");
}

fn median(values: &mut [usize]) -> usize {
    values.sort_unstable();
    values[values.len() / 2]
}

#[test]
fn lookups_converge_on_the_true_nearest_over_seeds() {
    let mut rounds = Vec::new();
    let mut queries = Vec::new();
    for seed in 1..=20u64 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let network = honest_network(200, &mut rng);
        let ids: Vec<PeerId> = network.keys().copied().collect();
        let mut discovery = discovery(seed);
        discovery.set_peer_count(Instant::ZERO, 25, 25);
        // We start knowing three peers at random.
        for _ in 0..3 {
            let peer = &network[&ids[(rng.next_u64() % ids.len() as u64) as usize]];
            discovery.handle_peer_verified(
                Instant::ZERO,
                peer.record.peer(),
                peer.record.clone(),
                peer.ip,
            );
        }
        let mut target = [0u8; 32];
        rng.fill_bytes(&mut target);
        let target = Key(target);
        let outcome = run_lookup(&mut discovery, Instant::ZERO, target, |peer, target| {
            nearest(network[&peer].known.iter().copied(), target)
                .into_iter()
                .map(|id| network[&id].record.clone())
                .collect()
        });
        let found: Vec<PeerId> = outcome.closest.iter().map(|contact| contact.peer).collect();
        assert_eq!(
            found,
            nearest(ids.iter().copied(), &target),
            "seed {seed}: the lookup missed some of the true nearest"
        );
        assert!(outcome.rounds <= LOOKUP_ROUNDS_MAX, "seed {seed}");
        assert!(outcome.queries <= LOOKUP_QUERIES_MAX, "seed {seed}");
        rounds.push(outcome.rounds as usize);
        queries.push(outcome.queries);
    }
    let worst_rounds = *rounds.iter().max().expect("20 seeds");
    let worst_queries = *queries.iter().max().expect("20 seeds");
    eprintln!(
        "200 peers, seeds 1..=20: rounds median {} worst {worst_rounds}; queries median {} worst {worst_queries}",
        median(&mut rounds),
        median(&mut queries),
    );
    // The bound the lookup must keep with room: a 200-peer network needs
    // about log2(200 / 16) ≈ 4 rounds.
    assert!(worst_rounds <= 6, "rounds {rounds:?}");
    assert!(worst_queries <= 48, "queries {queries:?}");
}

/// A fifth of the peers never answer (their queries time out). The lookup
/// still ends within its bounds, and finds most of the true nearest live
/// peers; the figures over seeds are printed.
#[test]
fn lookups_with_silent_peers_end_and_find_the_nearest_live_ones() {
    let mut found_counts = Vec::new();
    let mut queries = Vec::new();
    for seed in 1..=20u64 {
        let mut rng = ChaCha20Rng::seed_from_u64(100 + seed);
        let network = honest_network(200, &mut rng);
        let ids: Vec<PeerId> = network.keys().copied().collect();
        let silent: Vec<PeerId> = ids
            .iter()
            .copied()
            .filter(|_| rng.next_u64() % 5 == 0)
            .collect();
        let live = ids.iter().copied().filter(|id| !silent.contains(id));
        let mut discovery = discovery(seed);
        discovery.set_peer_count(Instant::ZERO, 25, 25);
        // We start knowing three live peers.
        let mut known = 0;
        for id in &ids {
            if known < 3 && !silent.contains(id) && rng.next_u64() % 4 == 0 {
                let peer = &network[id];
                discovery.handle_peer_verified(Instant::ZERO, *id, peer.record.clone(), peer.ip);
                known += 1;
            }
        }
        let mut target = [0u8; 32];
        rng.fill_bytes(&mut target);
        let target = Key(target);
        let id = discovery.start_lookup(Instant::ZERO, target).expect("room");
        let mut now = Instant::ZERO;
        let outcome = loop {
            while let Some(query) = discovery.poll_query() {
                if silent.contains(&query.peer) {
                    continue;
                }
                let records = nearest(
                    network[&query.peer].known.iter().copied(),
                    &query.request.target,
                )
                .into_iter()
                .map(|id| network[&id].record.clone())
                .collect();
                discovery.apply_answer(now, query.id, FindNodeAnswer { records });
            }
            // Refresh lookups run too; only ours is judged.
            if let Some(outcome) =
                std::iter::from_fn(|| discovery.poll_lookup_outcome()).find(|o| o.id == id)
            {
                break outcome;
            }
            now = discovery.next_deadline().expect("queries in flight");
            assert!(
                now <= Instant::ZERO + limits::LOOKUP_TIMEOUT,
                "seed {seed}: past the lookup deadline"
            );
            discovery.handle_timeout(now);
            discovery.assert_invariants();
        };
        let truth = nearest(live, &target);
        let found = outcome
            .closest
            .iter()
            .filter(|contact| truth.contains(&contact.peer))
            .count();
        assert!(outcome
            .closest
            .iter()
            .all(|contact| !silent.contains(&contact.peer)));
        assert!(outcome.queries <= LOOKUP_QUERIES_MAX);
        found_counts.push(found);
        queries.push(outcome.queries);
    }
    let worst_found = *found_counts.iter().min().expect("20 seeds");
    eprintln!(
        "200 peers, a fifth silent, seeds 1..=20: true nearest live found median {} worst {worst_found} of 16; queries median {} worst {}",
        median(&mut found_counts.clone()),
        median(&mut queries.clone()),
        queries.iter().max().expect("20 seeds"),
    );
    // Over seeds 1..=200 (by hand): median 15, worst 13 of 16.
    assert!(worst_found >= 12, "found {found_counts:?}");
}

/// Sybils in one /16 answer every query with each other; the node dials
/// whatever it is offered and every Sybil completes its handshake. At most
/// `NETGROUP_ENTRIES_PER_TABLE_MAX` of them may end in the table, and the
/// honest entries stay.
#[test]
fn sybil_answers_from_one_slash_16_leave_at_most_ten_in_the_table() {
    let mut worst = 0;
    for seed in 1..=20u64 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let honest = honest_network(8, &mut rng);
        let sybils: BTreeMap<PeerId, (Record, IpAddr)> = (0..300u64)
            .map(|n| {
                let ip = IpAddr::from([45, 33, (n % 256) as u8, (n / 256) as u8 + 1]);
                let record = Record::sign(
                    &Identity::from_seed(50_000 + seed * 1_000 + n),
                    NETWORK,
                    1,
                    &[SocketAddr::new(ip, 9000)],
                );
                (record.peer(), (record, ip))
            })
            .collect();
        let mut discovery = discovery(seed);
        let mut now = Instant::ZERO;
        for peer in honest.values() {
            discovery.handle_peer_verified(now, peer.record.peer(), peer.record.clone(), peer.ip);
        }
        discovery.set_peer_count(now, 0, 25);
        for _ in 0..40 {
            // Every query, to anyone, is answered with the nearest Sybils.
            while let Some(query) = discovery.poll_query() {
                let records = nearest(sybils.keys().copied(), &query.request.target)
                    .into_iter()
                    .map(|id| sybils[&id].0.clone())
                    .collect();
                discovery.apply_answer(now, query.id, FindNodeAnswer { records });
            }
            // Every dial succeeds and every Sybil hands over its record.
            while let Some(dial) = discovery.poll_dial() {
                if let Some((record, ip)) = sybils.get(&dial.peer) {
                    discovery.handle_peer_verified(now, dial.peer, record.clone(), *ip);
                } else {
                    discovery.handle_dial_failed(now, dial.peer);
                }
            }
            while let Some(check) = discovery.poll_liveness_check() {
                // Honest entries are alive; a Sybil being checked is too.
                discovery.handle_liveness(now, check.peer, true);
            }
            discovery.assert_invariants();
            now = now + REFRESH_INTERVAL_BELOW_TARGET;
            discovery.handle_timeout(now);
        }
        assert!(
            discovery.counters().dials > 0,
            "seed {seed}: nothing was dialled"
        );
        let in_table = discovery
            .table()
            .entries()
            .filter(|entry| sybils.contains_key(&entry.record.peer()))
            .count();
        assert!(
            in_table <= NETGROUP_ENTRIES_PER_TABLE_MAX,
            "seed {seed}: {in_table} Sybils in the table"
        );
        for peer in honest.keys() {
            assert!(
                discovery.table().entry(peer).is_some(),
                "seed {seed}: honest peer lost"
            );
        }
        worst = worst.max(in_table);
    }
    eprintln!("Sybils in the table over seeds 1..=20: worst {worst}");
}

#[test]
fn refresh_runs_every_30_s_below_the_target_and_every_5_min_at_it() {
    let mut discovery = discovery(1);
    let now = Instant::ZERO;
    discovery.set_peer_count(now, 3, 25);
    assert_eq!(
        discovery.next_deadline(),
        Some(now),
        "the first refresh is due at once"
    );
    discovery.handle_timeout(now);
    assert_eq!(discovery.counters().lookups_started, 1);
    assert_eq!(
        discovery.next_refresh(),
        now + REFRESH_INTERVAL_BELOW_TARGET
    );
    let later = now + REFRESH_INTERVAL_BELOW_TARGET;
    discovery.set_peer_count(later, 25, 25);
    discovery.handle_timeout(later);
    assert_eq!(discovery.counters().lookups_started, 2);
    assert_eq!(discovery.next_refresh(), later + REFRESH_INTERVAL);
    // Losing peers brings the next refresh forward to 30 s after the last.
    let lost = later + Duration::from_secs(10);
    discovery.set_peer_count(lost, 5, 25);
    assert_eq!(
        discovery.next_refresh(),
        later + REFRESH_INTERVAL_BELOW_TARGET
    );
    // An early timeout does nothing.
    discovery.handle_timeout(lost);
    assert_eq!(discovery.counters().lookups_started, 2);
}

#[test]
fn bootnodes_start_an_empty_node_and_are_not_needed_once_it_has_peers() {
    let mut discovery = discovery(2);
    let now = Instant::ZERO;
    let boot = Identity::from_seed(77).peer_id();
    let boot_addr = SocketAddr::from(([192, 0, 2, 10], 9000));
    discovery
        .add_bootnode(now, boot, boot_addr)
        .expect("a public address");
    assert_eq!(
        discovery.add_bootnode(now, boot, SocketAddr::from(([192, 0, 2, 10], 0))),
        Err(AddressRefusal::PortZero)
    );
    discovery.set_peer_count(now, 0, 25);
    assert_eq!(
        discovery.poll_dial(),
        Some(Dial {
            peer: boot,
            addr: boot_addr
        })
    );
    discovery.handle_timeout(now);
    let query = discovery.poll_query();
    assert!(
        query.is_none(),
        "the bootnode is being dialled, not a table entry"
    );
    // The dial fails; the table is empty, so the next refresh seeds it
    // again, brought forward because the node has nobody else.
    discovery.handle_dial_failed(now, boot);
    let next = discovery.next_refresh();
    assert_eq!(
        next,
        now + limits::DIAL_BACKOFF_BASE,
        "stranded, it retries as soon as the bootnode's dial backoff ends"
    );
    discovery.handle_timeout(next);
    assert_eq!(discovery.poll_dial().map(|dial| dial.peer), Some(boot));
    // With a peer in the table, a refresh no longer brings the bootnode back.
    discovery.handle_dial_failed(next, boot);
    let peer = Identity::from_seed(78);
    let addr = SocketAddr::from(([203, 0, 113, 78], 9000));
    let record = Record::sign(&peer, NETWORK, 1, &[addr]);
    discovery.handle_peer_verified(next, peer.peer_id(), record, addr.ip());
    while discovery.poll_query().is_some() {}
    let after = discovery.next_refresh();
    discovery.handle_timeout(after);
    assert!(discovery.table().candidate(&boot).is_none());
    assert_eq!(discovery.poll_dial(), None);
    let queries: Vec<Query> = std::iter::from_fn(|| discovery.poll_query()).collect();
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert_eq!(
        queries[0].peer,
        peer.peer_id(),
        "the refresh asks the table's peer"
    );
    assert_eq!(
        queries[0].request.target,
        Key::of_peer(&discovery.local_record().peer()),
        "the first refresh with peers looks up our own key"
    );
}

#[test]
fn inbound_find_node_answers_from_the_table_without_the_requester() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let network = honest_network(40, &mut rng);
    let mut discovery = discovery(3);
    for peer in network.values() {
        discovery.handle_peer_verified(
            Instant::ZERO,
            peer.record.peer(),
            peer.record.clone(),
            peer.ip,
        );
    }
    let requester = *network.keys().next().expect("40 peers");
    let target = Key::of_peer(&requester);
    let answer =
        discovery.handle_find_node_request(Instant::ZERO, requester, FindNodeRequest { target });
    assert_eq!(answer.records.len(), BUCKET_ENTRIES_MAX);
    assert!(answer
        .records
        .iter()
        .all(|record| record.peer() != requester));
    let in_table = discovery.table().entries().map(|entry| entry.record.peer());
    let expected: Vec<PeerId> = nearest(in_table.filter(|id| *id != requester), &target);
    let got: Vec<PeerId> = answer.records.iter().map(Record::peer).collect();
    assert_eq!(got, expected);
    let bytes = answer.encode();
    assert_eq!(FindNodeAnswer::decode(&bytes, NETWORK), Ok(answer));
}

#[test]
fn a_refused_answer_fails_its_query_and_names_a_penalty() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let network = honest_network(4, &mut rng);
    let mut discovery = discovery(4);
    for peer in network.values() {
        discovery.handle_peer_verified(
            Instant::ZERO,
            peer.record.peer(),
            peer.record.clone(),
            peer.ip,
        );
    }
    discovery.start_lookup(Instant::ZERO, Key([1; 32]));
    let query = discovery.poll_query().expect("a query");
    let error = discovery
        .handle_find_node_answer(Instant::ZERO, query.id, &[200])
        .expect_err("a count over 16");
    assert_eq!(error.penalty(), crate::peer::Penalty::High);
    assert_eq!(discovery.counters().queries_failed, 1);
    assert_eq!(discovery.counters().answers_invalid, 1);
    discovery.assert_invariants();
    // Records of another network are refused too.
    let query = discovery
        .poll_query()
        .expect("another peer is asked instead");
    let foreign = Record::sign(
        &Identity::from_seed(5),
        NETWORK + 1,
        1,
        &[SocketAddr::from(([203, 0, 113, 5], 1))],
    );
    let bytes = FindNodeAnswer {
        records: vec![foreign],
    }
    .encode();
    let error = discovery
        .handle_find_node_answer(Instant::ZERO, query.id, &bytes)
        .expect_err("another network");
    assert_eq!(error.penalty(), crate::peer::Penalty::Mid);
}

#[test]
fn an_unanswered_query_times_out_and_the_lookup_ends() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let network = honest_network(3, &mut rng);
    let mut discovery = discovery(5);
    for peer in network.values() {
        discovery.handle_peer_verified(
            Instant::ZERO,
            peer.record.peer(),
            peer.record.clone(),
            peer.ip,
        );
    }
    discovery.set_peer_count(Instant::ZERO, 25, 25);
    // The first refresh asks all three.
    discovery.handle_timeout(Instant::ZERO);
    let sent = std::iter::from_fn(|| discovery.poll_query()).count();
    assert_eq!(sent, 3);
    let deadline = discovery.next_deadline().expect("queries in flight");
    assert_eq!(deadline, Instant::ZERO + limits::LOOKUP_QUERY_TIMEOUT);
    discovery.handle_timeout(deadline);
    let outcome = discovery
        .poll_lookup_outcome()
        .expect("nothing left to ask");
    assert!(outcome.closest.is_empty());
    assert_eq!(discovery.counters().queries_failed, 3);
    discovery.assert_invariants();
}

/// The same seed and inputs give the same outputs.
#[test]
fn the_same_seed_gives_the_same_outputs() {
    let run = || {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let network = honest_network(60, &mut rng);
        let mut discovery = discovery(6);
        let mut trace = Vec::new();
        let first = network.values().next().expect("60 peers");
        discovery.handle_peer_verified(
            Instant::ZERO,
            first.record.peer(),
            first.record.clone(),
            first.ip,
        );
        discovery.set_peer_count(Instant::ZERO, 0, 25);
        let mut now = Instant::ZERO;
        for _ in 0..5 {
            discovery.handle_timeout(now);
            while let Some(query) = discovery.poll_query() {
                trace.push(format!("query {:?} {:?}", query.peer, query.request.target));
                let records = nearest(
                    network[&query.peer].known.iter().copied(),
                    &query.request.target,
                )
                .into_iter()
                .map(|id| network[&id].record.clone())
                .collect();
                discovery.apply_answer(now, query.id, FindNodeAnswer { records });
            }
            while let Some(dial) = discovery.poll_dial() {
                trace.push(format!("dial {:?}", dial.peer));
            }
            now = now + REFRESH_INTERVAL_BELOW_TARGET;
        }
        trace
    };
    let first = run();
    assert!(first.len() > 10, "{first:?}");
    assert_eq!(first, run());
}

#[test]
fn a_failing_address_backs_off_doubling_and_a_success_forgets_it() {
    use limits::{DIAL_BACKOFF_BASE, DIAL_BACKOFF_MAX, DIAL_TIMEOUT};
    let mut discovery = discovery(5);
    let peer = Identity::from_seed(90);
    let addr = SocketAddr::from(([203, 0, 113, 90], 9000));
    let record = Record::sign(&peer, NETWORK, 1, &[addr]);
    let mut now = Instant::ZERO;
    discovery.set_peer_count(now, 0, 25);
    // Each failure doubles the wait: 10 s, 20 s, 40 s, … up to 5 min.
    let mut expected_wait = DIAL_BACKOFF_BASE;
    for failure in 1..=7u32 {
        assert_eq!(discovery.add_known(now, vec![record.clone()]), 1);
        assert_eq!(
            discovery.poll_dial(),
            Some(Dial {
                peer: peer.peer_id(),
                addr
            }),
            "failure {failure}: the address is dialled once its wait is over"
        );
        discovery.handle_dial_failed(now, peer.peer_id());
        assert_eq!(
            discovery.dial_backoff_until(now, &addr),
            Some(now + expected_wait),
            "failure {failure}"
        );
        // Learned again, the candidate waits in the table, not in a dial...
        assert_eq!(discovery.add_known(now, vec![record.clone()]), 1);
        let almost = now + (expected_wait - Duration::from_millis(1));
        discovery.handle_timeout(almost);
        assert_eq!(
            discovery.poll_dial(),
            None,
            "failure {failure}: dialled early"
        );
        assert!(discovery.table().candidate(&peer.peer_id()).is_some());
        // ...and the machine wakes when the wait ends, then dials it.
        now = now + expected_wait;
        assert!(discovery.next_deadline().is_some_and(|at| at <= now));
        discovery.handle_timeout(now);
        assert_eq!(discovery.poll_dial().map(|dial| dial.addr), Some(addr));
        discovery.handle_dial_failed(now, peer.peer_id());
        // (That dial failed too: the wait grows twice per round here.)
        expected_wait = (expected_wait * 4).min(DIAL_BACKOFF_MAX);
        while discovery.poll_query().is_some() {}
        now = discovery
            .dial_backoff_until(now, &addr)
            .expect("backing off");
    }
    assert_eq!(expected_wait, DIAL_BACKOFF_MAX);
    assert_eq!(discovery.counters().dials_failed, 14);

    // A dial that never reports counts as failed once its time is up.
    assert_eq!(discovery.add_known(now, vec![record.clone()]), 1);
    assert_eq!(discovery.poll_dial().map(|dial| dial.addr), Some(addr));
    now = now + DIAL_TIMEOUT;
    discovery.handle_timeout(now);
    assert_eq!(discovery.counters().dials_failed, 15);
    assert_eq!(
        discovery.dial_backoff_until(now, &addr),
        Some(now + DIAL_BACKOFF_MAX)
    );

    // A completed handshake from a dial forgets the address's failures.
    now = now + DIAL_BACKOFF_MAX;
    assert_eq!(discovery.add_known(now, vec![record.clone()]), 1);
    assert_eq!(discovery.poll_dial().map(|dial| dial.addr), Some(addr));
    discovery.handle_peer_verified(now, peer.peer_id(), record.clone(), addr.ip());
    discovery.handle_peer_disconnected(now, peer.peer_id());
    assert_eq!(discovery.dial_backoff_until(now, &addr), None);
    discovery.assert_invariants();
}

#[test]
fn a_stranded_node_retries_soon_with_jittered_doubling_waits() {
    use limits::{STRANDED_RETRY_BASE, STRANDED_RETRY_MAX};
    let mut discovery = discovery(6);
    let boot = Identity::from_seed(91);
    let boot_addr = SocketAddr::from(([192, 0, 2, 91], 9000));
    let mut now = Instant::ZERO;
    discovery
        .add_bootnode(now, boot.peer_id(), boot_addr)
        .expect("a public address");
    discovery.set_peer_count(now, 0, 25);
    discovery.handle_timeout(now);
    while discovery.poll_query().is_some() {}
    // Each round: the bootnode is dialled, admits us, and sends us away
    // (full) before its record reached us: no peer, no dial, no lookup.
    let mut wait = STRANDED_RETRY_BASE;
    for round in 1..=6 {
        assert_eq!(
            discovery.poll_dial().map(|dial| dial.peer),
            Some(boot.peer_id()),
            "round {round}: the bootnode is dialled"
        );
        discovery.set_peer_count(now, 1, 25);
        discovery.handle_peer_disconnected(now, boot.peer_id());
        discovery.set_peer_count(now, 0, 25);
        discovery.assert_invariants();
        let retry = discovery.next_refresh();
        assert!(
            retry >= now + wait && retry <= now + wait * 2,
            "round {round}: retry after {:?}, not within [{wait:?}, {:?}]",
            retry.saturating_duration_since(now),
            wait * 2
        );
        assert!(retry < now + REFRESH_INTERVAL_BELOW_TARGET);
        // Nothing happens before it is due, however often we are woken.
        let early = now + (retry.saturating_duration_since(now) - Duration::from_millis(1));
        discovery.handle_timeout(early);
        discovery.set_peer_count(early, 0, 25);
        assert_eq!(discovery.poll_dial(), None, "round {round}: dialled early");
        assert_eq!(discovery.next_refresh(), retry, "round {round}: re-armed");
        now = retry;
        discovery.handle_timeout(now);
        while discovery.poll_query().is_some() {}
        wait = (wait * 2).min(STRANDED_RETRY_MAX);
    }
    assert_eq!(discovery.counters().stranded_retries, 6);
    // Met at last, the bootnode answers our lookup and then trims us: an
    // answer alone does not make us part of the network, so the wait
    // stays at its longest (a node that every peer trims does not come
    // back every few seconds).
    assert!(discovery.poll_dial().is_some());
    discovery.set_peer_count(now, 1, 25);
    let record = Record::sign(&boot, NETWORK, 1, &[boot_addr]);
    discovery.handle_peer_verified(now, boot.peer_id(), record, boot_addr.ip());
    discovery.handle_timeout(now);
    let query = discovery
        .poll_query()
        .expect("the self lookup asks the bootnode");
    let empty = FindNodeAnswer { records: vec![] }.encode();
    discovery
        .handle_find_node_answer(now, query.id, &empty)
        .expect("well formed");
    discovery.handle_peer_disconnected(now, boot.peer_id());
    discovery.set_peer_count(now, 0, 25);
    let retry = discovery.next_refresh();
    assert!(
        retry >= now + STRANDED_RETRY_MAX && retry <= now + STRANDED_RETRY_MAX * 2,
        "after an answer alone: {:?}",
        retry.saturating_duration_since(now)
    );
    // Once it held half its target, being stranded again starts over.
    now = retry;
    discovery.handle_timeout(now);
    discovery.set_peer_count(now, 13, 25);
    discovery.set_peer_count(now, 0, 25);
    let queries: Vec<Query> = std::iter::from_fn(|| discovery.poll_query()).collect();
    assert!(
        !queries.is_empty(),
        "the retry's lookup asks the table's entry"
    );
    for query in queries {
        discovery.handle_query_failed(now, query.id);
    }
    assert_eq!(discovery.lookup_count(), 0);
    let retry = discovery.next_refresh();
    assert!(
        retry >= now + STRANDED_RETRY_BASE && retry <= now + STRANDED_RETRY_BASE * 2,
        "after holding half the target: {:?}",
        retry.saturating_duration_since(now)
    );
    discovery.assert_invariants();
}

#[test]
fn a_node_with_peers_or_no_one_to_try_is_not_stranded() {
    // No bootnode, no table, no candidate: nothing to try sooner.
    let mut lonely = discovery(7);
    let now = Instant::ZERO;
    lonely.set_peer_count(now, 0, 25);
    lonely.handle_timeout(now);
    assert_eq!(lonely.next_refresh(), now + REFRESH_INTERVAL_BELOW_TARGET);
    assert_eq!(lonely.counters().stranded_retries, 0);
    // A peer connected: the refresh keeps its interval.
    let mut connected = discovery(8);
    let boot = Identity::from_seed(92);
    let boot_addr = SocketAddr::from(([192, 0, 2, 92], 9000));
    connected
        .add_bootnode(now, boot.peer_id(), boot_addr)
        .expect("a public address");
    connected.set_peer_count(now, 0, 25);
    connected.handle_timeout(now);
    assert!(connected.poll_dial().is_some());
    connected.set_peer_count(now, 1, 25);
    connected.handle_dial_failed(now, boot.peer_id());
    assert_eq!(
        connected.next_refresh(),
        now + REFRESH_INTERVAL_BELOW_TARGET
    );
    assert_eq!(connected.counters().stranded_retries, 0);
}
