//! The peer store across restarts: a node that kept its peers finds them
//! again without bootnodes, a ban outlasts a restart until it ends, and a
//! loaded store is bounded and checked like any input.

use super::discovering::discovering;
use super::*;
use crate::discovery::record::Record;
use crate::peer::{Penalty, Report, BAN_DURATION};
use crate::peerstore::{
    KnownIpBan, KnownPeerBan, KnownPeers, KnownRecord, PEERSTORE_GROWTH_PERSIST_DELAY,
    PEERSTORE_PERSIST_INTERVAL, PEERSTORE_RECORDS_MAX,
};

/// `config` with an (empty) peer store kept by its driver.
fn with_store(mut config: Config) -> Config {
    config.known_peers = Some(KnownPeers::default());
    config
}

/// A signed record of `Identity::from_seed(seed)` at a public address.
fn record(seed: u64, network_id: u64) -> Vec<u8> {
    let ip = std::net::IpAddr::from([20 + (seed / 250) as u8, (seed % 250) as u8, 1, 1]);
    Record::sign(
        &Identity::from_seed(seed),
        network_id,
        1,
        &[SocketAddr::new(ip, 9000)],
    )
    .encode()
}

#[test]
fn a_restarted_node_dials_the_peers_it_knew_without_bootnodes() {
    // 0 is the bootnode; 3 keeps a peer store and meets 0, 1 and 2.
    let configs = vec![
        discovering(0, &[], 25),
        discovering(1, &[0], 25),
        discovering(2, &[0], 25),
        with_store(discovering(3, &[0], 25)),
    ];
    let mut net = Net::new(configs);
    net.advance(PEERSTORE_PERSIST_INTERVAL + Duration::from_secs(5));
    for other in 0..3 {
        assert!(net.connected(3, other), "3 never met {other}");
    }
    let known = net.known_peers[3]
        .clone()
        .expect("a snapshot was handed over");
    assert_eq!(known.records.len(), 3, "{known:?}");
    // No other node keeps a store, so none hands a snapshot over.
    assert!(net.known_peers[..3].iter().all(Option::is_none));

    // The bootnode goes away; 3 restarts without bootnodes, from its store.
    net.down.push(0);
    let mut config = discovering(3, &[], 25);
    config.known_peers = Some(known);
    net.restart(3, config, [33; 32]);
    // Every record became a candidate, and every candidate is dialled at once.
    assert_eq!(net.nodes[3].discovery().unwrap().counters().dials, 3);
    net.advance(Duration::from_secs(10));
    assert!(
        net.connected(3, 1) && net.connected(3, 2),
        "3 did not find 1 and 2 again"
    );
}

/// A node killed while it bootstraps must not have to wait a whole
/// interval for its first snapshot: the peers it met are handed over
/// [`PEERSTORE_GROWTH_PERSIST_DELAY`] after its table grew, and a table
/// that stops growing waits for the interval again.
#[test]
fn a_growing_table_is_saved_within_the_growth_delay() {
    let configs = vec![
        discovering(0, &[], 25),
        discovering(1, &[0], 25),
        discovering(2, &[0], 25),
        with_store(discovering(3, &[0], 25)),
    ];
    let mut net = Net::new(configs);
    net.advance(Duration::from_secs(2));
    assert!(
        net.known_peers[3].is_none(),
        "nothing yet: the table just grew"
    );
    net.advance(PEERSTORE_GROWTH_PERSIST_DELAY);
    let known = net.known_peers[3].take().expect("saved after the growth");
    assert_eq!(known.records.len(), 3, "{known:?}");
    // No growth since: the next snapshot waits for the interval.
    net.advance(PEERSTORE_PERSIST_INTERVAL - PEERSTORE_GROWTH_PERSIST_DELAY * 2);
    assert!(net.known_peers[3].is_none(), "saved again without growth");
    net.advance(PEERSTORE_GROWTH_PERSIST_DELAY * 2);
    assert!(net.known_peers[3].is_some(), "the interval's snapshot");
}

#[test]
fn a_ban_is_saved_within_the_growth_delay_not_the_interval() {
    let mut net = Net::new(vec![with_store(Config::new(1)), Config::new(1)]);
    net.dial(1, 0, None);
    net.drain();
    assert!(net.connected(0, 1));
    net.advance(Duration::from_secs(10));
    assert!(net.known_peers[0].is_none(), "nothing to save yet");
    let peer = net.nodes[1].peer_id();
    let now = net.now;
    net.nodes[0].report(now, peer, Report::Penalty(Penalty::Fatal));
    net.drain();
    assert!(net.nodes[0].peer_manager().is_banned(net.now, &peer));
    // Killed now, it would forget the ban: the interval is 50 s away.
    assert!(net.known_peers[0].is_none());
    net.advance(PEERSTORE_GROWTH_PERSIST_DELAY);
    let known = net.known_peers[0].take().expect("saved after the ban");
    assert_eq!(known.peer_bans.len(), 1, "{known:?}");
    assert_eq!(known.peer_bans[0].peer, peer);
    // Nothing new since: the next snapshot waits for the interval.
    net.advance(PEERSTORE_GROWTH_PERSIST_DELAY * 2);
    assert!(
        net.known_peers[0].is_none(),
        "saved again without a new ban"
    );
}

#[test]
fn a_ban_outlasts_a_restart_until_it_ends() {
    let mut net = Net::new(vec![with_store(Config::new(1)), Config::new(1)]);
    net.dial(1, 0, None);
    net.drain();
    assert!(net.connected(0, 1));
    let peer = net.nodes[1].peer_id();
    let now = net.now;
    net.nodes[0].report(now, peer, Report::Penalty(Penalty::Fatal));
    net.drain();
    assert!(net.nodes[0].peer_manager().is_banned(net.now, &peer));
    let banned_at = net.now;

    // A clean shutdown hands over the last snapshot, ban included.
    run(&mut net, 0, Input::Command(Command::Shutdown));
    let known = net.known_peers[0].clone().expect("shutdown persists");
    assert_eq!(known.peer_bans.len(), 1);
    assert_eq!(known.peer_bans[0].peer, peer);
    assert!(known.scores.iter().any(|score| score.peer == peer));

    let mut config = Config::new(1);
    config.known_peers = Some(known);
    net.restart(0, config, [7; 32]);
    net.advance(Duration::from_secs(1));
    assert!(net.nodes[0].peer_manager().is_banned(net.now, &peer));
    net.dial(1, 0, None);
    net.advance(Duration::from_secs(1));
    assert!(
        !net.connected(0, 1),
        "a banned peer was admitted after a restart"
    );

    // Once the ban has ended (and the score decayed), it is welcome again.
    net.advance_to(banned_at + BAN_DURATION + Duration::from_secs(1));
    assert!(!net.nodes[0].peer_manager().is_banned(net.now, &peer));
    net.dial(1, 0, None);
    net.advance(Duration::from_secs(1));
    assert!(net.connected(0, 1), "the ban outlived its end");
}

#[test]
fn a_loaded_store_is_bounded_checked_and_trimmed_oldest_first() {
    let mut config = Config::new(1);
    let mut records: Vec<KnownRecord> = (1..=100)
        .map(|seed| KnownRecord {
            record: record(seed, 1),
            last_seen_unix_ms: seed,
        })
        .collect();
    records.push(KnownRecord {
        record: vec![0xff; 40],
        last_seen_unix_ms: u64::MAX,
    });
    records.push(KnownRecord {
        record: record(99_999, 2),
        last_seen_unix_ms: u64::MAX,
    });
    let own = Identity::from_seed(0);
    records.push(KnownRecord {
        record: Record::sign(&own, 1, 1, &[addr(0)]).encode(),
        last_seen_unix_ms: u64::MAX,
    });
    config.unix_ms_at_origin = 10 * 60 * 60 * 1_000;
    let origin = config.unix_ms_at_origin;
    config.known_peers = Some(KnownPeers {
        records,
        scores: Vec::new(),
        peer_bans: vec![
            KnownPeerBan {
                peer: Identity::from_seed(1).peer_id(),
                ip: None,
                until_unix_ms: origin - 1,
            },
            KnownPeerBan {
                peer: Identity::from_seed(2).peer_id(),
                ip: None,
                until_unix_ms: origin + 60_000,
            },
        ],
        ip_bans: vec![KnownIpBan {
            ip: std::net::IpAddr::from([20, 0, 1, 1]),
            until_unix_ms: origin - 1,
        }],
    });
    let mut net = Net::new(vec![config]);
    let manager = net.nodes[0].peer_manager();
    assert!(!manager.is_banned(Instant::ZERO, &Identity::from_seed(1).peer_id()));
    assert!(manager.is_banned(Instant::ZERO, &Identity::from_seed(2).peer_id()));
    assert_eq!(manager.banned_ip_count(), 0, "an ended IP ban was loaded");

    // The undecodable record, the other network's and ours were skipped.
    let snapshot = net.nodes[0].known_peers(Instant::ZERO).unwrap();
    assert_eq!(snapshot.records.len(), 100);
    assert_eq!(snapshot.peer_bans.len(), 1);

    // Nothing loaded is lost by the next snapshot.
    net.advance(PEERSTORE_PERSIST_INTERVAL);
    let persisted = net.known_peers[0].clone().unwrap();
    assert_eq!(persisted.records, snapshot.records);
}

#[test]
fn a_store_that_is_too_large_keeps_the_peers_seen_last() {
    // Over the bound before loading: cut before any signature is checked.
    let mut config = Config::new(1);
    config.unix_ms_at_origin = 10 * 60 * 60 * 1_000;
    config.known_peers = Some(KnownPeers {
        records: (1..=PEERSTORE_RECORDS_MAX as u64 + 1)
            .map(|seed| KnownRecord {
                record: record(seed, 1),
                last_seen_unix_ms: PEERSTORE_RECORDS_MAX as u64 + 2 - seed,
            })
            .collect(),
        ..KnownPeers::default()
    });
    let mut net = Net::new(vec![config]);
    let snapshot = net.nodes[0].known_peers(Instant::ZERO).unwrap();
    assert_eq!(snapshot.records.len(), PEERSTORE_RECORDS_MAX);
    // The last seed was seen longest ago: it is the one dropped.
    let dropped = record(PEERSTORE_RECORDS_MAX as u64 + 1, 1);
    assert!(snapshot.records.iter().all(|known| known.record != dropped));
    assert_eq!(
        snapshot.records[0].last_seen_unix_ms,
        PEERSTORE_RECORDS_MAX as u64 + 1,
        "most recently seen first"
    );
}

#[test]
fn a_node_without_a_store_persists_nothing() {
    let mut net = Net::new(vec![Config::new(1), discovering(1, &[], 25)]);
    net.dial(0, 1, None);
    net.advance(PEERSTORE_PERSIST_INTERVAL * 3);
    run(&mut net, 0, Input::Command(Command::Shutdown));
    assert!(net.known_peers.iter().all(Option::is_none));
    assert!(net.nodes[0].known_peers(net.now).is_none());
}
