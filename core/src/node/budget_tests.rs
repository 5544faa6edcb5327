//! Shared budgets under Sybil attack: a crowd of identities, each within its
//! own quotas, must neither starve an honest peer of its share of what we
//! serve nor get it punished for limits that are ours.

use super::*;
use crate::io::Notification;
use crate::reqresp::bodies::{BlocksByRangeRequest, Body};
use crate::reqresp::{OutboundConfig, ProtocolId};
use crate::testing::MemoryNet as Net;

const SERVER: usize = 0;

fn range_request(net: &mut Net, from: usize, start_slot: u64, count: u64, tag: u64) {
    let body = BlocksByRangeRequest { start_slot, count }.encode();
    let command = Command::Request {
        peer: net.nodes[SERVER].peer_id(),
        protocol: ProtocolId::BlocksByRange,
        body,
        tag,
    };
    net.handle(from, Input::Command(command));
    net.drain();
}

/// (answered, refused) requests of node `index`.
fn answers(net: &Net, index: usize) -> (usize, usize) {
    let notifications = &net.notifications[index];
    let answered = notifications
        .iter()
        .filter(|n| matches!(n, Notification::Response { .. }))
        .count();
    let refused = notifications
        .iter()
        .filter(|n| matches!(n, Notification::RequestFailed { .. }))
        .count();
    (answered, refused)
}

/// The attack: four Sybils, each pacing its BlocksByRange requests
/// by our per-peer quota (102.4 blocks/s, 409.6/s together: the whole global
/// budget), ask for slots past our head, so their answers are empty and cost
/// them nothing but tokens. An honest peer asks for 64 blocks a second.
/// Before fair shares, the honest peer was refused about a third of the time,
/// penalised Low for each refusal and disconnected within minutes.
#[test]
fn four_sybils_within_their_quotas_cannot_starve_or_score_out_an_honest_peer() {
    const SYBILS: usize = 4;
    const HONEST: usize = SYBILS + 1;
    let mut net = Net::with_nodes(SYBILS + 2);
    for sybil in 1..=SYBILS {
        // Sybils keep asking at their quota, whatever we answer.
        let config = OutboundConfig {
            back_off_when_busy: false,
            ..OutboundConfig::default()
        };
        net.nodes[sybil].rpc.set_outbound(config);
    }
    for node in 1..=HONEST {
        net.dial(node, SERVER, None);
        assert!(net.connected(node, SERVER));
    }
    let honest = net.nodes[HONEST].peer_id();
    let seconds = 200;
    let mut tag = 0;
    for second in 0..seconds {
        for quarter in 0..8 {
            // A Sybil's tracker holds requests back to its quota, so one
            // queued every 125 ms keeps it asking at the quota's full rate.
            for sybil in 1..=SYBILS {
                tag += 1;
                range_request(&mut net, sybil, 1_000_000 + tag, 64, tag);
            }
            if quarter == 0 {
                tag += 1;
                range_request(&mut net, HONEST, 1, 64, tag);
            }
            net.advance(Duration::from_millis(125));
        }
        assert!(
            net.connected(HONEST, SERVER),
            "honest peer disconnected at {second} s"
        );
        assert!(
            net.nodes[SERVER]
                .peer_manager()
                .score(net.now, &honest)
                .as_points()
                >= 0.0,
            "honest peer penalised by {second} s"
        );
    }
    let server = net.nodes[SERVER].counters().clone();
    assert_eq!(server.requests_limited_peer, 0, "{server:?}");
    assert!(server.requests_limited_global > 0, "{server:?}");
    let (honest_answered, honest_refused) = answers(&net, HONEST);
    assert!(
        honest_answered * 100 >= seconds * 95,
        "honest: {honest_answered} answered, {honest_refused} refused"
    );
    // The Sybils together got at most their four fifths of the 409.6
    // blocks/s budget (plus each one full share at the start and one
    // request's debt), however hard they asked.
    let elapsed_periods = net.now.as_micros() / 10_000_000 + 1;
    let share_blocks = 4096 / 5 * (elapsed_periods as usize) + 64;
    let sybil_blocks: usize = (1..=SYBILS).map(|sybil| answers(&net, sybil).0 * 64).sum();
    assert!(
        sybil_blocks <= SYBILS * share_blocks,
        "Sybils were served {sybil_blocks} blocks, {share_blocks} each at most"
    );
    assert!(
        sybil_blocks >= SYBILS * share_blocks * 9 / 10,
        "the Sybils were served their shares too ({sybil_blocks} blocks)"
    );
}

/// Sixteen Sybils asking at their quotas shrink an honest peer's share to a
/// seventeenth of the budget (4096 / 17 = 240 blocks deep), so the honest
/// peer's burst of four 64-block ranges at once (a sync window, 256 blocks)
/// puts its share in debt and its fourth range is told busy, though the
/// peer stays within its own quota and its steady 32-block ranges after
/// (16 blocks/s) are below its share's rate (24 blocks/s). That refusal used
/// to fail the application's request (and in the simulator, where range
/// sync made the burst, the application's ranges held back behind it went
/// out together with its retry and were refused in turn). A busy answer is
/// now waited out and the request sent again, and every one is answered.
#[test]
fn sixteen_sybils_cannot_make_an_honest_peers_sync_burst_fail_its_other_requests() {
    const SYBILS: usize = 16;
    const HONEST: usize = SYBILS + 1;
    let mut net = Net::with_nodes(SYBILS + 2);
    for sybil in 1..=SYBILS {
        let config = OutboundConfig {
            back_off_when_busy: false,
            ..OutboundConfig::default()
        };
        net.nodes[sybil].rpc.set_outbound(config);
    }
    for node in 1..=HONEST {
        net.dial(node, SERVER, None);
        assert!(net.connected(node, SERVER));
    }
    let honest = net.nodes[HONEST].peer_id();
    let mut tag = 0;
    let mut honest_asked = 0;
    for eighth in 0..8 * 40 {
        for sybil in 1..=SYBILS {
            tag += 1;
            range_request(&mut net, sybil, 1_000_000 + tag, 64, tag);
        }
        if eighth == 8 * 5 {
            // The sync burst: as many ranges as may be in flight.
            for batch in 0..4 {
                tag += 1;
                range_request(&mut net, HONEST, 1 + 64 * batch, 64, tag);
                honest_asked += 1;
            }
        }
        if eighth > 8 * 5 && eighth % 16 == 0 {
            tag += 1;
            range_request(&mut net, HONEST, 1, 32, tag);
            honest_asked += 1;
        }
        net.advance(Duration::from_millis(125));
    }
    // Room for the last retries to finish.
    net.advance(Duration::from_secs(20));
    let (honest_answered, honest_refused) = answers(&net, HONEST);
    assert_eq!(
        (honest_answered, honest_refused),
        (honest_asked, 0),
        "the honest peer's requests: answered and refused"
    );
    let server = net.nodes[SERVER].counters().clone();
    assert!(server.requests_limited_global > 0, "{server:?}");
    assert!(net.nodes[HONEST].counters().requests_retried_busy > 0);
    assert!(net.connected(HONEST, SERVER));
    assert!(
        net.nodes[SERVER]
            .peer_manager()
            .score(net.now, &honest)
            .as_points()
            >= 0.0
    );
}

/// Asking for slots past our head gets empty answers, which cost us little
/// but must still cost the asker its tokens: otherwise such requests would
/// be a free way to hold a share of the budget.
#[test]
fn empty_answers_past_our_head_still_cost_the_requester_its_tokens() {
    let mut hostile = Config::new(1);
    hostile.faults.ignore_peer_quotas = true;
    let mut net = Net::new(vec![Config::new(1), hostile]);
    net.dial(1, SERVER, None);
    // 1024 blocks per 10 s: sixteen empty answers of 64 slots spend it all.
    for tag in 0..20 {
        range_request(&mut net, 1, 1_000_000, 64, tag);
    }
    let (answered, refused) = answers(&net, 1);
    assert_eq!((answered, refused), (16, 4));
    assert!(net.notifications[1].iter().all(|n| match n {
        Notification::Response { chunks, .. } => chunks.is_empty(),
        _ => true,
    }));
    let server = net.nodes[SERVER].counters().clone();
    assert_eq!(server.requests_limited_peer, 4, "{server:?}");
    assert_eq!(server.requests_limited_global, 0, "{server:?}");
}

/// A peer that names a new Metadata sequence number in every Ping (and
/// answers with an old one) used to make us fetch its Metadata each time,
/// earning a reward for every answer: about 7 points a minute, enough to
/// absorb a steady stream of penalties. Now a fetch needs a number above the
/// last one we fetched, happens at most once per `METADATA_FETCH_INTERVAL`,
/// and only the first earns anything.
#[test]
fn pings_naming_ever_newer_metadata_cannot_farm_rewards() {
    const FARMER: usize = 1;
    const CONTROL: usize = 2;
    let mut net = Net::with_nodes(3);
    net.dial(FARMER, SERVER, None);
    net.dial(CONTROL, SERVER, None);
    let seconds = 300u64;
    for step in 0..seconds / 5 {
        // Within the Ping quota (2 per 10 s).
        let body = crate::reqresp::bodies::Ping {
            metadata_seq: step + 1,
        }
        .encode();
        let command = Command::Request {
            peer: net.nodes[SERVER].peer_id(),
            protocol: ProtocolId::Ping,
            body,
            tag: step,
        };
        net.handle(FARMER, Input::Command(command));
        net.advance(Duration::from_secs(5));
    }
    let fetches_from = |net: &Net, node: usize| {
        let peer = net.nodes[node].peer_id();
        net.notifications[SERVER]
            .iter()
            .filter(|n| matches!(n, Notification::PeerMetadata { peer: p, .. } if *p == peer))
            .count() as u64
    };
    let farmer_fetches = fetches_from(&net, FARMER);
    assert!(
        farmer_fetches <= seconds / crate::limits::METADATA_FETCH_INTERVAL.as_secs() + 1,
        "{farmer_fetches} Metadata fetches in {seconds} s"
    );
    assert!(
        farmer_fetches >= 2,
        "a new number is still fetched, in time"
    );
    assert_eq!(fetches_from(&net, CONTROL), 1);
    let manager = net.nodes[SERVER].peer_manager();
    let farmer = manager.score(net.now, &net.nodes[FARMER].peer_id());
    let control = manager.score(net.now, &net.nodes[CONTROL].peer_id());
    assert!(
        farmer <= control,
        "farmer {} points, control {} points",
        farmer.as_points(),
        control.as_points()
    );
}

/// 64 addresses opening about 51 connections a second and never finishing
/// their handshakes used to hold every one of the 512 handshake slots, and
/// our own dials (static peers among them) were refused with
/// `TooManyHandshakes`. Our dials now have their own slots (and a stranger
/// who finds the inbound ones full evicts the oldest; see
/// `node::tests::connections`).
#[test]
fn an_inbound_handshake_flood_cannot_refuse_our_own_dials() {
    let mut net = Net::with_nodes(2);
    for index in 0..crate::limits::HANDSHAKES_IN_PROGRESS_MAX as u64 {
        let [a, b] = (index as u16).to_be_bytes();
        let remote = std::net::SocketAddr::from(([198, 18, a, b], 40_000));
        net.handle(
            0,
            Input::ConnectionOpened {
                conn: ConnId(u64::MAX - index),
                remote,
                origin: Origin::Accepted,
            },
        );
    }
    // The inbound slots are full: one more stranger takes the oldest's...
    net.handle(
        0,
        Input::ConnectionOpened {
            conn: ConnId(u64::MAX - 10_000),
            remote: std::net::SocketAddr::from(([198, 19, 0, 1], 40_000)),
            origin: Origin::Accepted,
        },
    );
    assert!(net.notifications[0].iter().any(|n| matches!(
        n,
        Notification::ConnectionRefused {
            reason: crate::io::RefuseReason::HandshakeEvicted,
            ..
        }
    )));
    // ...but our own dial still gets through.
    net.dial(0, 1, None);
    assert!(net.connected(0, 1));
}
