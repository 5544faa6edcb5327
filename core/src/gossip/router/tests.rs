//! Tests of the router, driven through its public calls as the node drives it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::queue::Item;
use super::*;
use crate::gossip::score::GRAYLIST_THRESHOLD;
use crate::gossip::wire::{
    Control, MessageId, Rpc, Subscription, Topic, WireMessage, CONTROL_IDS_PER_RPC_MAX,
    GOSSIP_MESSAGE_BYTES_MAX,
};
use crate::identity::PeerId;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::machine::Machine;
use crate::time::{Duration, Instant};

/// Hands `bytes` to `gossip` as an RPC from `peer` and takes every event
/// now pending, in order.
fn rpc_events(gossip: &mut Gossip, now: Instant, peer: PeerId, bytes: &[u8]) -> Vec<GossipEvent> {
    gossip.handle_rpc(now, peer, bytes);
    std::iter::from_fn(|| gossip.poll_event()).collect()
}

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 32])
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn topic() -> Topic {
    Topic::new("/meshsync/test/1").unwrap()
}

fn at(millis: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(millis)
}

fn rpc_bytes(rpc: Rpc) -> Vec<u8> {
    rpc.encode()
}

fn subscribe_rpc(topic: &Topic) -> Vec<u8> {
    rpc_bytes(Rpc {
        subscriptions: vec![Subscription {
            subscribe: true,
            topic: topic.clone(),
        }],
        ..Rpc::default()
    })
}

fn control_rpc(control: Control) -> Vec<u8> {
    rpc_bytes(Rpc {
        control: vec![control],
        ..Rpc::default()
    })
}

fn message_rpc(topic: &Topic, payload: &[u8]) -> Vec<u8> {
    rpc_bytes(Rpc {
        messages: vec![WireMessage::new(topic.clone(), payload)],
        ..Rpc::default()
    })
}

fn drain(gossip: &mut Gossip) -> Vec<(PeerId, Rpc)> {
    let mut sent = Vec::new();
    while let Some((peer, bytes)) = gossip.poll_send() {
        assert!(bytes.len() <= MESSAGE_BYTES_MAX);
        sent.push((peer, Rpc::decode(&bytes).expect("we send valid RPCs")));
    }
    sent
}

fn controls_to(sent: &[(PeerId, Rpc)], to: PeerId) -> Vec<Control> {
    sent.iter()
        .filter(|(p, _)| *p == to)
        .flat_map(|(_, rpc)| rpc.control.clone())
        .collect()
}

fn messages_to(sent: &[(PeerId, Rpc)], to: PeerId) -> usize {
    sent.iter()
        .filter(|(p, _)| *p == to)
        .map(|(_, rpc)| rpc.messages.len())
        .sum()
}

/// A router subscribed to `topic()` with `count` peers (1..=count) that
/// are subscribed too; odd peers are outbound.
fn router_with_peers(count: u8) -> Gossip {
    let mut gossip = Gossip::new(Config::default(), [7; 32]);
    gossip.subscribe(at(0), topic()).unwrap();
    for n in 1..=count {
        gossip.handle_peer_connected(at(0), peer(n), n % 2 == 1, ip(n));
        rpc_events(&mut gossip, at(0), peer(n), &subscribe_rpc(&topic()));
    }
    drain(&mut gossip);
    gossip
}

fn heartbeats(gossip: &mut Gossip, from_millis: u64, count: u64) -> u64 {
    let mut now = from_millis;
    for _ in 0..count {
        now += 700;
        gossip.handle_timeout(at(now));
    }
    now
}

#[test]
fn subscriptions_are_announced_and_recorded() {
    let mut gossip = Gossip::new(Config::default(), [1; 32]);
    gossip.subscribe(at(0), topic()).unwrap();
    assert_eq!(gossip.subscribe(at(0), topic()), Ok(false));
    gossip.handle_peer_connected(at(0), peer(1), true, ip(1));
    let sent = drain(&mut gossip);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.subscriptions[0].topic, topic());
    rpc_events(&mut gossip, at(0), peer(1), &subscribe_rpc(&topic()));
    assert_eq!(gossip.peer_topics(&peer(1)), vec![topic()]);
    // A peer announcing too many topics gets no state beyond the cap.
    for n in 0..PEER_TOPICS_MAX + 5 {
        let events = rpc_events(
            &mut gossip,
            at(0),
            peer(1),
            &subscribe_rpc(&Topic::new(&format!("/t/{n}")).unwrap()),
        );
        if n + 1 >= PEER_TOPICS_MAX {
            assert!(matches!(
                events[..],
                [GossipEvent::Penalty {
                    reason: Misbehaviour::TooManyTopics,
                    ..
                }]
            ));
        }
    }
    assert_eq!(gossip.peer_topics(&peer(1)).len(), PEER_TOPICS_MAX);
    assert!(gossip.unsubscribe(at(0), &topic()));
    assert!(!gossip.is_subscribed(&topic()));
}

#[test]
fn mesh_stays_within_bounds_after_heartbeats() {
    let mut gossip = router_with_peers(30);
    let now = heartbeats(&mut gossip, 0, 1);
    assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
    // Twenty peers graft us: inbound ones are refused past D_hi (and
    // backed off); ten stay untouched to refill the mesh later.
    for n in 1..=20 {
        rpc_events(
            &mut gossip,
            at(now),
            peer(n),
            &control_rpc(Control::Graft { topic: topic() }),
        );
    }
    assert!(gossip.mesh_peers(&topic()).len() > MESH_N_HIGH);
    let now = heartbeats(&mut gossip, now, 1);
    let mesh = gossip.mesh_peers(&topic());
    assert_eq!(mesh.len(), MESH_N);
    let outbound = mesh.iter().filter(|p| p.as_bytes()[0] % 2 == 1).count();
    assert!(outbound >= MESH_OUTBOUND_MIN);
    // Mesh peers leave: the heartbeat fills the mesh back up to D.
    for peer in mesh.iter().take(4) {
        rpc_events(
            &mut gossip,
            at(now),
            *peer,
            &control_rpc(Control::Prune {
                topic: topic(),
                backoff_secs: 60,
            }),
        );
    }
    assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N - 4);
    let mut now = now;
    for _ in 0..20 {
        now = heartbeats(&mut gossip, now, 1);
        let size = gossip.mesh_peers(&topic()).len();
        assert!((MESH_N_LOW..=MESH_N_HIGH).contains(&size), "mesh of {size}");
    }
    drain(&mut gossip);
}

#[test]
fn backoff_is_respected_on_both_sides() {
    let mut gossip = router_with_peers(10);
    let now = heartbeats(&mut gossip, 0, 1);
    let victim = gossip.mesh_peers(&topic())[0];
    // The peer prunes us: we must not graft it for the backoff.
    rpc_events(
        &mut gossip,
        at(now),
        victim,
        &control_rpc(Control::Prune {
            topic: topic(),
            backoff_secs: 60,
        }),
    );
    assert!(gossip.in_backoff(at(now), &topic(), &victim));
    for n in 1..=10 {
        if peer(n) != victim && gossip.mesh_peers(&topic()).contains(&peer(n)) {
            rpc_events(
                &mut gossip,
                at(now),
                peer(n),
                &control_rpc(Control::Prune {
                    topic: topic(),
                    backoff_secs: 1,
                }),
            );
        }
    }
    drain(&mut gossip);
    // Everyone pruned us; after our own minimum backoff the others return, the victim not sooner.
    let mut now = now;
    while now < 59_000 {
        now = heartbeats(&mut gossip, now, 1);
        let sent = drain(&mut gossip);
        assert!(!controls_to(&sent, victim)
            .iter()
            .any(|c| matches!(c, Control::Graft { .. })));
    }
    // It grafts us during the backoff: refused with a PRUNE, penalised.
    let events = rpc_events(
        &mut gossip,
        at(now),
        victim,
        &control_rpc(Control::Graft { topic: topic() }),
    );
    assert!(events.iter().any(|e| matches!(
        e,
        GossipEvent::Penalty {
            reason: Misbehaviour::GraftDuringBackoff(_),
            ..
        }
    )));
    assert!(!gossip.mesh_peers(&topic()).contains(&victim));
    assert_eq!(gossip.grafts_refused_in_backoff(&victim), Some(1));
    assert_eq!(gossip.counters().grafts_refused_in_backoff, 1);
    let sent = drain(&mut gossip);
    assert!(controls_to(&sent, victim).iter().any(|c| matches!(
        c,
        Control::Prune {
            backoff_secs: 60,
            ..
        }
    )));
    // After the (refreshed) backoff it may join again.
    let now = heartbeats(&mut gossip, now, 100);
    assert!(!gossip.in_backoff(at(now), &topic(), &victim));
}

#[test]
fn huge_backoffs_saturate_and_are_capped() {
    let mut gossip = router_with_peers(2);
    let late = Instant::from_micros(u64::MAX - 5);
    rpc_events(
        &mut gossip,
        late,
        peer(1),
        &control_rpc(Control::Prune {
            topic: topic(),
            backoff_secs: u32::MAX,
        }),
    );
    assert!(gossip.in_backoff(late, &topic(), &peer(1)));
    let mut gossip = router_with_peers(2);
    rpc_events(
        &mut gossip,
        at(0),
        peer(1),
        &control_rpc(Control::Prune {
            topic: topic(),
            backoff_secs: u32::MAX,
        }),
    );
    let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
    assert!(gossip.in_backoff(at(cap - 1), &topic(), &peer(1)));
    assert!(!gossip.in_backoff(at(cap), &topic(), &peer(1)));
    // PRUNE and GRAFT for topics we are not in create no state.
    rpc_events(
        &mut gossip,
        at(0),
        peer(2),
        &control_rpc(Control::Graft {
            topic: Topic::new("/other").unwrap(),
        }),
    );
    rpc_events(
        &mut gossip,
        at(0),
        peer(2),
        &control_rpc(Control::Prune {
            topic: Topic::new("/other").unwrap(),
            backoff_secs: 5,
        }),
    );
    assert_eq!(gossip.backoffs_len(), 1);
}

#[test]
fn fanout_is_used_then_expires() {
    let mut gossip = Gossip::new(
        Config {
            flood_publish: false,
            ..Config::default()
        },
        [3; 32],
    );
    for n in 1..=12 {
        gossip.handle_peer_connected(at(0), peer(n), true, ip(n));
        rpc_events(&mut gossip, at(0), peer(n), &subscribe_rpc(&topic()));
    }
    assert_eq!(
        gossip.publish(at(0), Topic::new("/nobody").unwrap(), b"x"),
        Err(PublishError::NoPeers)
    );
    gossip.publish(at(0), topic(), b"hello").unwrap();
    assert_eq!(gossip.fanout_peers(&topic()).len(), MESH_N);
    let sent = drain(&mut gossip);
    assert_eq!(
        sent.iter()
            .map(|(_, rpc)| rpc.messages.len())
            .sum::<usize>(),
        MESH_N
    );
    assert_eq!(
        gossip.publish(at(10), topic(), b"hello"),
        Err(PublishError::Duplicate)
    );
    let now = heartbeats(&mut gossip, 0, 80);
    assert!(now < 60_000);
    assert_eq!(gossip.fanout_peers(&topic()).len(), MESH_N);
    heartbeats(&mut gossip, now, 10);
    assert!(gossip.fanout_peers(&topic()).is_empty());
    // Subscribing after publishing starts the mesh from the fanout.
    gossip.publish(at(70_000), topic(), b"again").unwrap();
    let fanout = gossip.fanout_peers(&topic());
    gossip.subscribe(at(70_000), topic()).unwrap();
    assert_eq!(gossip.mesh_peers(&topic()), fanout);
    assert!(gossip.fanout_peers(&topic()).is_empty());
}

#[test]
fn flood_publish_reaches_every_subscriber() {
    let mut gossip = router_with_peers(20);
    gossip.publish(at(0), topic(), b"flood").unwrap();
    let sent = drain(&mut gossip);
    for n in 1..=20 {
        assert_eq!(messages_to(&sent, peer(n)), 1);
    }
    assert_eq!(
        gossip.publish(at(0), topic(), &vec![0; GOSSIP_MESSAGE_BYTES_MAX + 1]),
        Err(PublishError::TooLarge)
    );
}

#[test]
fn an_iwant_is_answered_even_after_the_peer_said_idontwant() {
    // A peer that said IDONTWANT and then dropped its copy unjudged (its
    // verifier was busy) asks again when we announce the id: it holds a
    // promise on us, so we must deliver, not cancel by the old IDONTWANT.
    let mut gossip = router_with_peers(10);
    let id = gossip.publish(at(0), topic(), b"cached").unwrap();
    drain(&mut gossip);
    let now = heartbeats(&mut gossip, 0, 1);
    let sent = drain(&mut gossip);
    let asker = sent
        .iter()
        .find(|(_, rpc)| {
            rpc.control
                .iter()
                .any(|c| matches!(c, Control::IHave { ids, .. } if ids == &vec![id]))
        })
        .map(|(p, _)| *p)
        .expect("announced to a non-mesh peer");
    rpc_events(
        &mut gossip,
        at(now),
        asker,
        &control_rpc(Control::IDontWant { ids: vec![id] }),
    );
    rpc_events(
        &mut gossip,
        at(now),
        asker,
        &control_rpc(Control::IWant { ids: vec![id] }),
    );
    let sent = drain(&mut gossip);
    assert_eq!(messages_to(&sent, asker), 1, "the IWANT is the later word");
    gossip.assert_invariants();
}

#[test]
fn ihave_iwant_flow_with_promises_and_retransmission_cap() {
    let mut gossip = router_with_peers(10);
    // A message we cache, announced by IHAVE to some non-mesh peers at the heartbeat.
    let id = gossip.publish(at(0), topic(), b"cached").unwrap();
    drain(&mut gossip);
    let now = heartbeats(&mut gossip, 0, 1);
    let sent = drain(&mut gossip);
    let announced: Vec<PeerId> = sent
        .iter()
        .filter(|(_, rpc)| {
            rpc.control
                .iter()
                .any(|c| matches!(c, Control::IHave { ids, .. } if ids == &vec![id]))
        })
        .map(|(p, _)| *p)
        .collect();
    assert!(!announced.is_empty());
    for p in &announced {
        assert!(!gossip.mesh_peers(&topic()).contains(p));
    }
    // IWANT answered from the cache, at most GOSSIP_RETRANSMISSIONS_MAX
    // times per peer, and only to a peer we announced it to.
    let asker = announced[0];
    for _ in 0..5 {
        rpc_events(
            &mut gossip,
            at(now),
            asker,
            &control_rpc(Control::IWant { ids: vec![id] }),
        );
    }
    let sent = drain(&mut gossip);
    assert_eq!(
        messages_to(&sent, asker),
        usize::from(GOSSIP_RETRANSMISSIONS_MAX)
    );
    assert_eq!(gossip.counters().iwant_over_cap, 2);
    // An IHAVE for an unknown id: we ask with IWANT and hold a promise.
    let unknown = MessageId([9; 20]);
    while gossip.poll_event().is_some() {}
    rpc_events(
        &mut gossip,
        at(now),
        peer(2),
        &control_rpc(Control::IHave {
            topic: topic(),
            ids: vec![unknown, id],
        }),
    );
    let sent = drain(&mut gossip);
    assert_eq!(
        controls_to(&sent, peer(2)),
        vec![Control::IWant { ids: vec![unknown] }]
    );
    assert_eq!(gossip.promises_len(), 1);
    // Not delivered within 3 s: a broken promise, penalised.
    let before = gossip.score(at(now), &peer(2)).unwrap();
    heartbeats(&mut gossip, now, 5);
    assert_eq!(gossip.promises_len(), 0);
    assert_eq!(gossip.counters().promises_broken, 1);
    let mut broken = false;
    while let Some(event) = gossip.poll_event() {
        broken |= matches!(
            event,
            GossipEvent::Penalty {
                reason: Misbehaviour::BrokenPromise,
                ..
            }
        );
    }
    assert!(broken);
    let stats = &gossip.peers[&peer(2)].stats;
    assert!(stats.behaviour_penalty > 0.9);
    assert!(gossip.score(at(now), &peer(2)).unwrap() <= before);
    // The message leaves the cache after 6 windows: IWANT gets nothing.
    heartbeats(&mut gossip, now + 5 * 700, 6);
    rpc_events(
        &mut gossip,
        at(now + 20_000),
        asker,
        &control_rpc(Control::IWant { ids: vec![id] }),
    );
    assert_eq!(messages_to(&drain(&mut gossip), asker), 0);
}

#[test]
fn fulfilled_promise_is_not_penalised() {
    let mut gossip = router_with_peers(4);
    let payload = b"promised".to_vec();
    let id = MessageId::compute(&topic(), &payload);
    rpc_events(
        &mut gossip,
        at(0),
        peer(2),
        &control_rpc(Control::IHave {
            topic: topic(),
            ids: vec![id],
        }),
    );
    assert_eq!(gossip.promises_len(), 1);
    rpc_events(
        &mut gossip,
        at(100),
        peer(2),
        &message_rpc(&topic(), &payload),
    );
    assert_eq!(gossip.promises_len(), 0);
    heartbeats(&mut gossip, 100, 10);
    assert_eq!(gossip.counters().promises_broken, 0);
}

/// The peers penalised for `reason` in `events` and in what is left to poll.
fn penalties_in(
    gossip: &mut Gossip,
    events: Vec<GossipEvent>,
    reason: &Misbehaviour,
) -> Vec<PeerId> {
    let polled: Vec<GossipEvent> = std::iter::from_fn(|| gossip.poll_event()).collect();
    events
        .into_iter()
        .chain(polled)
        .filter_map(|event| match event {
            GossipEvent::Penalty { peer, reason: r } if r == *reason => Some(peer),
            _ => None,
        })
        .collect()
}

fn penalties(gossip: &mut Gossip, reason: &Misbehaviour) -> Vec<PeerId> {
    penalties_in(gossip, Vec::new(), reason)
}

/// Hit and run: a peer sends junk and leaves before the verdict. The
/// Reject is still reported against it, so its identity pays.
#[test]
fn a_reject_is_charged_to_a_sender_that_already_left() {
    let mut gossip = router_with_peers(3);
    let events = rpc_events(&mut gossip, at(0), peer(1), &message_rpc(&topic(), b"junk"));
    let id = MessageId::compute(&topic(), b"junk");
    assert!(matches!(events[..], [GossipEvent::Message { .. }]));
    gossip.handle_peer_disconnected(at(10), &peer(1));
    assert!(gossip.report_validation(at(20), id, Validation::Reject));
    assert_eq!(
        penalties(&mut gossip, &Misbehaviour::InvalidMessage(id)),
        vec![peer(1)]
    );
}

/// A peer that announces an id and leaves without delivering it broke
/// its promise: charged at the deadline like a connected one.
#[test]
fn a_promise_broken_by_leaving_is_still_charged() {
    let mut gossip = router_with_peers(3);
    let unknown = MessageId([9; 20]);
    let ihave = Control::IHave {
        topic: topic(),
        ids: vec![unknown],
    };
    rpc_events(&mut gossip, at(0), peer(2), &control_rpc(ihave));
    assert_eq!(gossip.promises_len(), 1);
    gossip.handle_peer_disconnected(at(10), &peer(2));
    heartbeats(&mut gossip, 0, 6);
    assert_eq!(gossip.counters().promises_broken, 1);
    assert_eq!(
        penalties(&mut gossip, &Misbehaviour::BrokenPromise),
        vec![peer(2)]
    );
}

/// A message the application could not judge (no verification slot) is
/// not left marked as seen: the next copy, or an IHAVE naming it, is new.
#[test]
fn an_abandoned_message_is_handled_as_new_when_it_comes_again() {
    let mut gossip = router_with_peers(3);
    let payload = b"honest block".to_vec();
    let id = MessageId::compute(&topic(), &payload);
    rpc_events(
        &mut gossip,
        at(0),
        peer(1),
        &message_rpc(&topic(), &payload),
    );
    assert!(gossip.abandon_validation(at(1), id));
    assert!(!gossip.abandon_validation(at(1), id), "no longer pending");
    let ihave = Control::IHave {
        topic: topic(),
        ids: vec![id],
    };
    rpc_events(&mut gossip, at(2), peer(3), &control_rpc(ihave));
    assert_eq!(gossip.promises_len(), 1, "asked for again");
    let events = rpc_events(
        &mut gossip,
        at(3),
        peer(2),
        &message_rpc(&topic(), &payload),
    );
    assert!(
        matches!(&events[..], [GossipEvent::Message { id: got, from, .. }] if *got == id && *from == peer(2)),
        "{events:?}"
    );
    assert!(gossip.report_validation(at(4), id, Validation::Accept));
    // Judged now: a further copy is a duplicate.
    let events = rpc_events(
        &mut gossip,
        at(5),
        peer(3),
        &message_rpc(&topic(), &payload),
    );
    assert!(events.is_empty());
    gossip.assert_invariants();
}

/// The attack: throwaway identities PRUNE every topic with the largest
/// backoff and leave, to fill the backoff table until an honest peer's
/// backoff is evicted and we GRAFT it inside it. Their entries die with
/// their connections, backoffs are clamped, and the honest one stays.
#[test]
fn a_prune_flood_from_departing_identities_evicts_no_honest_backoff() {
    let mut gossip = router_with_peers(12);
    let now = heartbeats(&mut gossip, 0, 3);
    let honest = peer(1);
    if !gossip.mesh_peers(&topic()).contains(&honest) {
        rpc_events(
            &mut gossip,
            at(now),
            honest,
            &control_rpc(Control::Graft { topic: topic() }),
        );
    }
    assert!(gossip.mesh_peers(&topic()).contains(&honest));
    let prune = |backoff_secs| {
        control_rpc(Control::Prune {
            topic: topic(),
            backoff_secs,
        })
    };
    rpc_events(&mut gossip, at(now), honest, &prune(60));
    drain(&mut gossip);
    for n in 0..20_000u32 {
        let mut bytes = [0xee; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        let sybil = PeerId::from_bytes(bytes);
        gossip.handle_peer_connected(at(now), sybil, false, ip(200));
        rpc_events(&mut gossip, at(now), sybil, &subscribe_rpc(&topic()));
        rpc_events(&mut gossip, at(now), sybil, &prune(u32::MAX));
        gossip.handle_peer_disconnected(at(now), &sybil);
    }
    assert!(gossip.backoffs_len() <= 12, "{}", gossip.backoffs_len());
    assert!(gossip.in_backoff(at(now), &topic(), &honest));
    // No GRAFT to it inside the 60 s it asked for, whatever the mesh needs.
    let mut later = now;
    let mut grafted_at = None;
    while later < now + 70_000 {
        later = heartbeats(&mut gossip, later, 1);
        let sent = drain(&mut gossip);
        let grafted = controls_to(&sent, honest)
            .iter()
            .any(|c| matches!(c, Control::Graft { .. }));
        if grafted && grafted_at.is_none() {
            grafted_at = Some(later);
        }
    }
    if let Some(at_millis) = grafted_at {
        assert!(at_millis >= now + 60_000, "grafted at {at_millis} ms");
    }
    // A connected peer's backoff request is clamped.
    rpc_events(&mut gossip, at(later), peer(2), &prune(u32::MAX));
    let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
    assert!(gossip.in_backoff(at(later + cap - 1), &topic(), &peer(2)));
    assert!(!gossip.in_backoff(at(later + cap), &topic(), &peer(2)));
    gossip.assert_invariants();
}

/// The attack: IWANT as a free pull of any cached message. Only ids we
/// announced to the asker are answered; asking for others is a penalty.
#[test]
fn iwant_is_answered_only_for_ids_announced_to_the_asker() {
    let mut gossip = router_with_peers(12);
    let id = gossip.publish(at(0), topic(), b"cached").unwrap();
    drain(&mut gossip);
    let now = heartbeats(&mut gossip, 0, 1);
    let sent = drain(&mut gossip);
    let announced_to = |p: PeerId| {
        controls_to(&sent, p)
            .iter()
            .any(|c| matches!(c, Control::IHave { ids, .. } if ids.contains(&id)))
    };
    let stranger = (1..=12)
        .map(peer)
        .find(|p| !announced_to(*p))
        .expect("IHAVE goes to a few peers, not all");
    while gossip.poll_event().is_some() {}
    let iwant = control_rpc(Control::IWant { ids: vec![id] });
    let events = rpc_events(&mut gossip, at(now), stranger, &iwant);
    assert_eq!(messages_to(&drain(&mut gossip), stranger), 0);
    assert_eq!(gossip.counters().iwant_unannounced, 1);
    assert_eq!(
        penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
        vec![stranger]
    );
}

/// The attack: control sized to cost us more than it costs the sender.
/// Every id list is handled in linear time, the excess over the
/// per-heartbeat allowance is ignored, and the sender pays once per heartbeat.
#[test]
fn control_over_its_allowance_is_ignored_and_penalised_once_per_heartbeat() {
    let mut gossip = router_with_peers(4);
    let flooder = peer(3);
    let ids = |from: u32, count: usize| -> Vec<MessageId> {
        (from..from + count as u32)
            .map(|n| {
                let mut id = [0u8; 20];
                id[..4].copy_from_slice(&n.to_le_bytes());
                MessageId(id)
            })
            .collect()
    };
    // IHAVE: asks stop at the allowance; more IHAVEs than allowed are not read.
    let mut asked = 0;
    let mut events = Vec::new();
    for round in 0..(2 * IHAVE_MESSAGES_PER_PEER_PER_HEARTBEAT_MAX + 1) as u32 {
        let ihave = Control::IHave {
            topic: topic(),
            ids: ids(100_000 + round * 1_000, 1_000),
        };
        events.extend(rpc_events(
            &mut gossip,
            at(20),
            flooder,
            &control_rpc(ihave),
        ));
        for control in controls_to(&drain(&mut gossip), flooder) {
            if let Control::IWant { ids } = control {
                asked += ids.len();
            }
        }
    }
    assert_eq!(asked, IWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX);
    assert_eq!(
        penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
        vec![flooder],
        "over twice the allowance: once per heartbeat"
    );
    // IDONTWANT, the next heartbeat: at most the allowance is remembered.
    let now = heartbeats(&mut gossip, 0, 1);
    let mut events = Vec::new();
    for round in 0..3u32 {
        let batch = ids(round * 1_000, 1_000);
        let rpc = control_rpc(Control::IDontWant { ids: batch });
        events.extend(rpc_events(&mut gossip, at(now), flooder, &rpc));
    }
    assert_eq!(
        gossip.dont_want_len(&flooder),
        IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX
    );
    assert_eq!(
        penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
        vec![flooder]
    );
    // IWANT, the heartbeat after: the same.
    let now = heartbeats(&mut gossip, now, 1);
    let mut events = Vec::new();
    for round in 0..3u32 {
        let batch = ids(500_000 + round * 4_000, 4_000);
        let rpc = control_rpc(Control::IWant { ids: batch });
        events.extend(rpc_events(&mut gossip, at(now), flooder, &rpc));
    }
    assert_eq!(
        penalties_in(&mut gossip, events, &Misbehaviour::ControlFlood),
        vec![flooder]
    );
    gossip.assert_invariants();
}

fn router_with_config(config: Config, count: u8) -> Gossip {
    let mut gossip = Gossip::new(config, [7; 32]);
    gossip.subscribe(at(0), topic()).unwrap();
    for n in 1..=count {
        gossip.handle_peer_connected(at(0), peer(n), n % 2 == 1, ip(n));
        rpc_events(&mut gossip, at(0), peer(n), &subscribe_rpc(&topic()));
    }
    drain(&mut gossip);
    gossip
}

#[test]
fn floodsub_sends_every_message_to_every_subscriber_and_no_control() {
    let config = Config {
        floodsub: true,
        ..Config::default()
    };
    let mut gossip = router_with_config(config, 15);
    let now = heartbeats(&mut gossip, 0, 3);
    // No mesh, no GRAFT, no IHAVE: nothing but messages ever leaves.
    assert!(gossip.mesh_peers(&topic()).is_empty());
    assert!(drain(&mut gossip).is_empty());
    gossip.publish(at(now), topic(), b"own").unwrap();
    let sent = drain(&mut gossip);
    assert_eq!(sent.len(), 15);
    for n in 1..=15 {
        assert_eq!(messages_to(&sent, peer(n)), 1);
    }
    // A large message from a peer: no IDONTWANT; accepted, it goes to
    // every other subscriber.
    let large = vec![9u8; IDONTWANT_BYTES_MIN + 1];
    let events = rpc_events(
        &mut gossip,
        at(now),
        peer(1),
        &message_rpc(&topic(), &large),
    );
    assert!(drain(&mut gossip).is_empty());
    let GossipEvent::Message { id, .. } = events[0] else {
        panic!("expected a message, got {events:?}");
    };
    gossip.report_validation(at(now), id, Validation::Accept);
    let sent = drain(&mut gossip);
    assert_eq!(messages_to(&sent, peer(1)), 0);
    for n in 2..=15 {
        assert_eq!(messages_to(&sent, peer(n)), 1);
        assert!(controls_to(&sent, peer(n)).is_empty());
    }
    // A GRAFT builds no mesh.
    rpc_events(
        &mut gossip,
        at(now),
        peer(2),
        &control_rpc(Control::Graft { topic: topic() }),
    );
    assert!(gossip.mesh_peers(&topic()).is_empty());
}

#[test]
fn a_withholding_router_grafts_but_never_forwards_or_answers_iwant() {
    let config = Config {
        fault_withhold: true,
        ..Config::default()
    };
    let mut gossip = router_with_config(config, 10);
    heartbeats(&mut gossip, 0, 1);
    drain(&mut gossip);
    let mesh = gossip.mesh_peers(&topic());
    assert!(mesh.len() >= MESH_N_LOW, "it joins the mesh like anyone");
    let events = rpc_events(
        &mut gossip,
        at(800),
        mesh[0],
        &message_rpc(&topic(), b"payload"),
    );
    let GossipEvent::Message { id, .. } = events[0] else {
        panic!("expected a message, got {events:?}");
    };
    gossip.report_validation(at(800), id, Validation::Accept);
    let sent = drain(&mut gossip);
    assert!(sent.iter().all(|(_, rpc)| rpc.messages.is_empty()));
    rpc_events(
        &mut gossip,
        at(900),
        mesh[1],
        &control_rpc(Control::IWant { ids: vec![id] }),
    );
    let sent = drain(&mut gossip);
    assert_eq!(messages_to(&sent, mesh[1]), 0);
}

/// The hostile side of a PRUNE flood: once per connection, a GRAFT on
/// each topic the peer announced, and a heartbeat later a PRUNE with the
/// longest backoff; never a GRAFT inside the backoff (which would cost
/// it a penalty).
/// The honest side clamps the backoff and keeps it for that peer only.
#[test]
fn a_prune_flooding_router_grafts_and_prunes_each_peer_once() {
    let config = Config {
        fault_prune_flood: true,
        ..Config::default()
    };
    let mut sybil = router_with_config(config, 3);
    let mut honest = router_with_peers(3);
    let sybil_id = peer(3);
    let mut now = 0;
    let mut flooded_at = None;
    for round in 0..4 {
        now = heartbeats(&mut sybil, now, 1);
        let sent = drain(&mut sybil);
        for n in 1..=3 {
            let controls = controls_to(&sent, peer(n));
            let expected = match round {
                0 => vec![Control::Graft { topic: topic() }],
                1 => vec![Control::Prune {
                    topic: topic(),
                    backoff_secs: u32::MAX,
                }],
                _ => vec![],
            };
            assert_eq!(controls, expected, "round {round}");
        }
        if round == 1 {
            flooded_at = Some(now);
        }
        // `honest` plays peer 1, and knows the Sybil as its peer 3.
        for (_, rpc) in sent.into_iter().filter(|(to, _)| *to == peer(1)) {
            rpc_events(&mut honest, at(now), sybil_id, &rpc_bytes(rpc));
        }
        if round == 0 {
            // The honest router takes the GRAFT: a mesh slot, for a heartbeat.
            assert!(honest.mesh_peers(&topic()).contains(&sybil_id));
        }
    }
    assert!(sybil.mesh_peers(&topic()).is_empty(), "it keeps no mesh");
    assert_eq!(honest.counters().prunes_received, 1);
    assert_eq!(honest.counters().grafts_refused_in_backoff, 0);
    assert_eq!(honest.grafts_refused_in_backoff(&sybil_id), Some(0));
    assert!(!honest.mesh_peers(&topic()).contains(&sybil_id));
    let cap = u64::from(PRUNE_BACKOFF_SECS_MAX) * 1_000;
    let flooded_at = flooded_at.expect("the second round ran");
    assert!(honest.in_backoff(at(flooded_at + cap - 1), &topic(), &sybil_id));
    assert!(!honest.in_backoff(at(flooded_at + cap), &topic(), &sybil_id));
    honest.handle_peer_disconnected(at(now), &sybil_id);
    assert!(!honest.in_backoff(at(now), &topic(), &sybil_id));
    honest.assert_invariants();
}

#[test]
fn idontwant_is_sent_for_large_messages_and_suppresses_forwarding() {
    let mut gossip = router_with_peers(10);
    heartbeats(&mut gossip, 0, 1);
    drain(&mut gossip);
    let mesh = gossip.mesh_peers(&topic());
    let (from, asked, others) = (mesh[0], mesh[1], &mesh[2..]);
    let large = vec![5u8; IDONTWANT_BYTES_MIN + 1];
    let id = MessageId::compute(&topic(), &large);
    rpc_events(
        &mut gossip,
        at(800),
        asked,
        &control_rpc(Control::IDontWant { ids: vec![id] }),
    );
    let events = rpc_events(&mut gossip, at(800), from, &message_rpc(&topic(), &large));
    assert!(matches!(events[..], [GossipEvent::Message { from: f, .. }] if f == from));
    // IDONTWANT went to the other mesh peers at once, before validation.
    let sent = drain(&mut gossip);
    for p in others.iter().chain([&asked]) {
        assert_eq!(
            controls_to(&sent, *p),
            vec![Control::IDontWant { ids: vec![id] }]
        );
    }
    assert!(controls_to(&sent, from).is_empty());
    // Accepted: forwarded to the mesh except its sender and the peer that asked not to.
    assert!(gossip.report_validation(at(900), id, Validation::Accept));
    let sent = drain(&mut gossip);
    assert_eq!(messages_to(&sent, from), 0);
    assert_eq!(messages_to(&sent, asked), 0);
    for p in others {
        assert_eq!(messages_to(&sent, *p), 1);
    }
    assert_eq!(gossip.counters().idontwant_suppressed, 1);
    // A small message triggers no IDONTWANT.
    rpc_events(
        &mut gossip,
        at(1_000),
        from,
        &message_rpc(&topic(), b"small"),
    );
    assert!(drain(&mut gossip).is_empty());
    // IDONTWANT sets are bounded (per heartbeat and in all) and expire.
    let mut now = 1_000;
    for round in 0..5u32 {
        let ids: Vec<MessageId> = (0..IDONTWANT_IDS_PER_PEER_PER_HEARTBEAT_MAX as u32)
            .map(|n| {
                let mut id = [0u8; 20];
                id[..4].copy_from_slice(&(round * 100_000 + n).to_be_bytes());
                MessageId(id)
            })
            .collect();
        rpc_events(
            &mut gossip,
            at(now),
            from,
            &control_rpc(Control::IDontWant { ids }),
        );
        now = heartbeats(&mut gossip, now, 1);
    }
    assert_eq!(gossip.dont_want_len(&from), IDONTWANT_IDS_PER_PEER_MAX);
    heartbeats(&mut gossip, now, 20);
    assert_eq!(gossip.dont_want_len(&from), 0);
}

#[test]
fn seen_cache_deduplicates_then_expires() {
    let mut gossip = router_with_peers(3);
    let bytes = message_rpc(&topic(), b"once");
    let events = rpc_events(&mut gossip, at(0), peer(1), &bytes);
    assert_eq!(events.len(), 1);
    let GossipEvent::Message {
        id, ref payload, ..
    } = events[0]
    else {
        panic!("a message event");
    };
    assert_eq!(payload, b"once");
    assert!(rpc_events(&mut gossip, at(10), peer(2), &bytes).is_empty());
    assert_eq!(gossip.counters().duplicates, 1);
    assert!(gossip.report_validation(at(20), id, Validation::Ignore));
    assert!(!gossip.report_validation(at(20), id, Validation::Accept));
    let now = heartbeats(&mut gossip, 0, 150);
    assert!(now < 120_000);
    assert!(rpc_events(&mut gossip, at(now), peer(2), &bytes).is_empty());
    let now = heartbeats(&mut gossip, now, 30);
    assert!(now > 120_000);
    assert_eq!(rpc_events(&mut gossip, at(now), peer(2), &bytes).len(), 1);
    // Messages on topics we are not in are dropped.
    assert!(rpc_events(
        &mut gossip,
        at(now),
        peer(2),
        &message_rpc(&Topic::new("/x").unwrap(), b"x")
    )
    .is_empty());
    assert_eq!(gossip.counters().messages_unsubscribed, 1);
}

/// Copies of a large message are known by their bytes and counted as the
/// full path counts them; a frame with the same length and ends but other
/// bytes between is not taken for a copy.
#[test]
fn copies_of_a_large_message_are_known_by_their_bytes() {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    let mut gossip = router_with_peers(3);
    let mut payload = vec![0u8; 200 * 1024];
    ChaCha20Rng::seed_from_u64(5).fill_bytes(&mut payload);
    let message = WireMessage::new(topic(), &payload);
    assert!(message.frame.len() >= FRAME_MATCH_BYTES_MIN);
    let rpc = |message: &WireMessage| {
        rpc_bytes(Rpc {
            messages: vec![message.clone()],
            ..Rpc::default()
        })
    };
    let events = rpc_events(&mut gossip, at(0), peer(1), &rpc(&message));
    let [GossipEvent::Message { id, .. }] = events[..] else {
        panic!("one message event: {events:?}");
    };
    assert_eq!(gossip.held_copy_of(&message), Some(id));

    assert!(rpc_events(&mut gossip, at(10), peer(2), &rpc(&message)).is_empty());
    assert_eq!(gossip.counters().duplicates, 1);
    assert!(gossip.seen[&id].deliverers.contains(&peer(2)));

    let mut frame = message.frame.to_vec();
    let middle = frame.len() / 2;
    frame[middle] ^= 1;
    let forged = WireMessage {
        topic: topic(),
        frame: frame.into(),
    };
    assert_eq!(gossip.held_copy_of(&forged), None);
    rpc_events(&mut gossip, at(20), peer(3), &rpc(&forged));
    assert_eq!(gossip.counters().duplicates, 1, "not counted as a copy");
    assert_eq!(
        gossip.held_copy_of(&message),
        Some(id),
        "nor does it take the first one's key"
    );

    let elsewhere = WireMessage {
        topic: Topic::new("/other").unwrap(),
        frame: message.frame.clone(),
    };
    assert_eq!(gossip.held_copy_of(&elsewhere), None);

    // Accepted, it is still known from the message cache.
    assert!(gossip.report_validation(at(30), id, Validation::Accept));
    assert_eq!(gossip.held_copy_of(&message), Some(id));
    assert!(rpc_events(&mut gossip, at(40), peer(3), &rpc(&message)).is_empty());
    assert_eq!(gossip.counters().duplicates, 2);
    gossip.assert_invariants();
}

/// Each subscribed topic counts its new messages, copies and verdicts;
/// leaving the topic drops its counts.
#[test]
fn topic_counters_follow_messages_and_verdicts() {
    let mut gossip = router_with_peers(3);
    let mut ids = Vec::new();
    for (n, body) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
        let bytes = message_rpc(&topic(), body);
        let t = 2 * n as u64;
        assert_eq!(rpc_events(&mut gossip, at(t), peer(1), &bytes).len(), 1);
        assert!(rpc_events(&mut gossip, at(t + 1), peer(2), &bytes).is_empty());
        ids.push(MessageId::compute(&topic(), body));
    }
    assert!(gossip.report_validation(at(10), ids[0], Validation::Accept));
    assert!(gossip.report_validation(at(10), ids[1], Validation::Reject));
    assert!(gossip.report_validation(at(10), ids[2], Validation::Ignore));
    let counts = gossip.counters().topics[&topic()];
    assert_eq!(
        counts,
        TopicCounters {
            received: 3,
            duplicates: 3,
            accepted: 1,
            rejected: 1,
            ignored: 1,
        }
    );
    assert_eq!(gossip.counters().topics.len(), 1);
    assert!(gossip.unsubscribe(at(11), &topic()));
    assert!(gossip.counters().topics.is_empty());
}

#[test]
fn pending_validations_are_bounded_and_time_out() {
    let mut gossip = router_with_peers(2);
    for n in 0..VALIDATION_PENDING_MAX + 10 {
        rpc_events(
            &mut gossip,
            at(0),
            peer(1),
            &message_rpc(&topic(), format!("m{n}").as_bytes()),
        );
    }
    assert_eq!(gossip.pending_len(), VALIDATION_PENDING_MAX);
    assert_eq!(gossip.counters().validations_dropped, 10);
    heartbeats(&mut gossip, 0, 50);
    assert_eq!(gossip.pending_len(), 0);
}

#[test]
fn invalid_messages_lead_to_graylisting() {
    let mut gossip = router_with_peers(3);
    let liar = peer(1);
    for n in 0..3u8 {
        let events = rpc_events(&mut gossip, at(0), liar, &message_rpc(&topic(), &[b'x', n]));
        let GossipEvent::Message { id, .. } = events[0] else {
            panic!("a message event");
        };
        gossip.report_validation(at(0), id, Validation::Reject);
        let event = gossip.poll_event();
        assert!(matches!(
            event,
            Some(GossipEvent::Penalty {
                reason: Misbehaviour::InvalidMessage(_),
                ..
            })
        ));
    }
    assert!(gossip.score(at(0), &liar).unwrap() < GRAYLIST_THRESHOLD);
    let events = rpc_events(
        &mut gossip,
        at(0),
        liar,
        &message_rpc(&topic(), b"valid now"),
    );
    assert_eq!(events, vec![GossipEvent::Graylisted { peer: liar }]);
    assert_eq!(gossip.counters().rpcs_graylisted, 1);
    // It is pruned from the mesh and not grafted back.
    heartbeats(&mut gossip, 0, 3);
    assert!(!gossip.mesh_peers(&topic()).contains(&liar));
    // Reconnecting does not shed the score.
    gossip.handle_peer_disconnected(at(3_000), &liar);
    gossip.handle_peer_connected(at(3_000), liar, false, ip(1));
    assert!(gossip.score(at(3_000), &liar).unwrap() < GRAYLIST_THRESHOLD);
    // The honest peers are unaffected.
    assert!(gossip.score(at(3_000), &peer(2)).unwrap() >= 0.0);
}

#[test]
fn accepted_messages_credit_their_first_sender() {
    let mut gossip = router_with_peers(3);
    let events = rpc_events(&mut gossip, at(0), peer(2), &message_rpc(&topic(), b"good"));
    let GossipEvent::Message { id, .. } = events[0] else {
        panic!("a message event");
    };
    gossip.report_validation(at(0), id, Validation::Accept);
    assert!(gossip.score(at(0), &peer(2)).unwrap() >= 1.0);
    assert_eq!(gossip.mcache_len(), 1);
}

#[test]
fn ip_colocation_is_penalised_except_when_exempt() {
    let mut gossip = Gossip::new(Config::default(), [0; 32]);
    for n in 1..=5 {
        gossip.handle_peer_connected(at(0), peer(n), false, ip(200));
    }
    assert_eq!(gossip.score(at(0), &peer(1)), Some(-40.0));
    let mut exempt = Config::default();
    exempt.ip_colocation_exempt.insert(ip(200));
    let mut gossip = Gossip::new(exempt, [0; 32]);
    for n in 1..=5 {
        gossip.handle_peer_connected(at(0), peer(n), false, ip(200));
    }
    assert_eq!(gossip.score(at(0), &peer(1)), Some(0.0));
    gossip.set_application_score(&peer(1), -15.0);
    assert_eq!(gossip.score(at(0), &peer(1)), Some(-15.0));
}

#[test]
fn full_queue_drops_gossip_before_control_and_reports_the_peer() {
    let mut gossip = router_with_peers(1);
    // Incompressible payloads, so each message is about 1 MiB on the wire.
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let mut published = 0;
    for n in 0..20 {
        let mut payload = vec![0u8; 1024 * 1024];
        rng.fill_bytes(&mut payload);
        payload[0] = n;
        gossip.publish(at(0), topic(), &payload).unwrap();
        published += 1;
    }
    assert!(gossip.queued_bytes(&peer(1)) <= SEND_QUEUE_BYTES_PER_PEER_MAX);
    assert!(gossip.counters().gossip_dropped > 0);
    assert!(gossip.queued_items(&peer(1)) < published + 1);
    assert_eq!(
        gossip.poll_event(),
        None,
        "a few drops are not yet too slow"
    );
    // Control items still get in (here 2 MB of IWANT), evicting the oldest gossip.
    let queued_gossip = gossip.peers[&peer(1)].gossip_queue.len();
    let dropped = gossip.counters().gossip_dropped;
    for _ in 0..20 {
        let ids = vec![MessageId([1; 20]); CONTROL_IDS_PER_RPC_MAX];
        gossip.enqueue(peer(1), Item::Control(Control::IWant { ids }));
    }
    assert_eq!(gossip.counters().control_dropped, 0);
    assert!(gossip.peers[&peer(1)].gossip_queue.len() < queued_gossip);
    assert!(gossip.counters().gossip_dropped > dropped);
    assert!(gossip.queued_bytes(&peer(1)) <= SEND_QUEUE_BYTES_PER_PEER_MAX);
    assert_eq!(gossip.poll_event(), None);
    // Control that cannot fit even without gossip: the peer is too slow.
    for _ in 0..200 {
        let ids = vec![MessageId([1; 20]); CONTROL_IDS_PER_RPC_MAX];
        gossip.enqueue(peer(1), Item::Control(Control::IWant { ids }));
    }
    assert!(gossip.counters().control_dropped > 0);
    assert!(gossip.peers[&peer(1)].gossip_queue.is_empty());
    assert_eq!(
        gossip.poll_event(),
        Some(GossipEvent::SlowPeer { peer: peer(1) })
    );
    assert_eq!(gossip.poll_event(), None, "reported once");
    // Control leaves first.
    let (to, bytes) = gossip.poll_send().unwrap();
    assert_eq!(to, peer(1));
    let rpc = Rpc::decode(&bytes).unwrap();
    assert!(!rpc.subscriptions.is_empty() || !rpc.control.is_empty());
    drain(&mut gossip);
    assert_eq!(gossip.queued_items(&peer(1)), 0);
}

#[test]
fn a_peer_that_keeps_dropping_gossip_is_reported_slow() {
    let mut gossip = router_with_peers(1);
    let drops_to_report = SLOW_PEER_GOSSIP_DROPS_MAX as usize + 1;
    let total = SEND_QUEUE_ITEMS_PER_PEER_MAX + drops_to_report;
    for n in 0..total as u32 {
        gossip.publish(at(0), topic(), &n.to_be_bytes()).unwrap();
        if n as usize + 1 < total {
            assert_eq!(gossip.poll_event(), None, "after {n} messages");
        }
    }
    assert_eq!(
        gossip.poll_event(),
        Some(GossipEvent::SlowPeer { peer: peer(1) })
    );
    // Drained, its slate is clean.
    drain(&mut gossip);
    assert_eq!(gossip.peers[&peer(1)].gossip_drops, 0);
}

#[test]
fn backed_up_peers_get_control_only_and_idontwant_cancels_what_waits() {
    let mut gossip = router_with_peers(2);
    let now = heartbeats(&mut gossip, 0, 1);
    drain(&mut gossip);
    let large = vec![3u8; IDONTWANT_BYTES_MIN + 1];
    let id = gossip.publish(at(now), topic(), &large).unwrap();
    gossip.publish(at(now), topic(), b"small").unwrap();
    gossip.enqueue(peer(1), Item::Control(Control::Graft { topic: topic() }));
    let busy = peer(1);
    let readiness = |p: &PeerId| {
        if *p == busy {
            SendReadiness::ControlOnly
        } else {
            SendReadiness::Everything
        }
    };
    let mut sent = Vec::new();
    while let Some((to, bytes)) = gossip.poll_send_ready(readiness) {
        sent.push((to, Rpc::decode(&bytes).unwrap()));
    }
    assert_eq!(messages_to(&sent, peer(2)), 2);
    assert_eq!(messages_to(&sent, busy), 0, "gossip waits");
    assert_eq!(
        controls_to(&sent, busy),
        vec![Control::Graft { topic: topic() }]
    );
    assert_eq!(gossip.peers[&busy].gossip_queue.len(), 2);
    // The busy peer got the large message elsewhere: it is cancelled here.
    let suppressed = gossip.counters().idontwant_suppressed;
    rpc_events(
        &mut gossip,
        at(now),
        busy,
        &control_rpc(Control::IDontWant { ids: vec![id] }),
    );
    let sent = drain(&mut gossip);
    assert_eq!(messages_to(&sent, busy), 1, "only the small one is left");
    assert_eq!(gossip.counters().idontwant_suppressed, suppressed + 1);
    assert_eq!(gossip.queued_items(&busy), 0);
    gossip.assert_invariants();
}

#[test]
fn malformed_rpcs_are_reported() {
    let mut gossip = router_with_peers(1);
    let events = rpc_events(&mut gossip, at(0), peer(1), &[32, 0]);
    assert!(matches!(
        events[..],
        [GossipEvent::Penalty {
            reason: Misbehaviour::Malformed(_),
            ..
        }]
    ));
    // Unknown peers are ignored.
    assert!(rpc_events(&mut gossip, at(0), peer(99), &subscribe_rpc(&topic())).is_empty());
    assert_eq!(gossip.counters().rpcs_malformed, 1);
}

#[test]
fn heartbeat_is_scheduled_and_early_calls_are_no_ops() {
    let mut gossip = router_with_peers(10);
    assert_eq!(gossip.next_deadline(), Some(at(700)));
    // Peers came after we subscribed: the first heartbeat builds the mesh.
    gossip.handle_timeout(at(699));
    assert!(gossip.mesh_peers(&topic()).is_empty());
    gossip.handle_timeout(at(700));
    assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
    assert_eq!(gossip.next_deadline(), Some(at(1_400)));
}

#[test]
fn grafts_from_negative_peers_are_refused_and_unsubscribe_prunes() {
    let mut gossip = router_with_peers(10);
    heartbeats(&mut gossip, 0, 1);
    drain(&mut gossip);
    let outsider = (1..=10)
        .map(peer)
        .find(|p| !gossip.mesh_peers(&topic()).contains(p))
        .unwrap();
    gossip.set_application_score(&outsider, -5.0);
    rpc_events(
        &mut gossip,
        at(800),
        outsider,
        &control_rpc(Control::Graft { topic: topic() }),
    );
    assert!(!gossip.mesh_peers(&topic()).contains(&outsider));
    let sent = drain(&mut gossip);
    assert!(matches!(
        controls_to(&sent, outsider)[..],
        [Control::Prune {
            backoff_secs: 60,
            ..
        }]
    ));
    // Leaving the topic PRUNEs the whole mesh, with backoff.
    let mesh = gossip.mesh_peers(&topic());
    assert!(gossip.unsubscribe(at(900), &topic()));
    let sent = drain(&mut gossip);
    for p in mesh {
        assert!(controls_to(&sent, p).iter().any(|c| matches!(
            c,
            Control::Prune {
                backoff_secs: 60,
                ..
            }
        )));
    }
    assert_eq!(
        gossip.backoffs_len(),
        0,
        "no state is kept for a topic we left"
    );
    gossip.assert_invariants();
}

#[test]
fn outbound_peers_are_topped_up() {
    let mut gossip = Gossip::new(Config::default(), [4; 32]);
    gossip.subscribe(at(0), topic()).unwrap();
    for n in 1..=10 {
        gossip.handle_peer_connected(at(0), peer(n), false, ip(n));
        rpc_events(&mut gossip, at(0), peer(n), &subscribe_rpc(&topic()));
    }
    let now = heartbeats(&mut gossip, 0, 1);
    assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
    for n in 11..=13 {
        gossip.handle_peer_connected(at(now), peer(n), true, ip(n));
        rpc_events(&mut gossip, at(now), peer(n), &subscribe_rpc(&topic()));
    }
    heartbeats(&mut gossip, now, 1);
    let mesh = gossip.mesh_peers(&topic());
    let outbound = mesh.iter().filter(|p| p.as_bytes()[0] > 10).count();
    assert_eq!(outbound, MESH_OUTBOUND_MIN);
    assert_eq!(mesh.len(), MESH_N + MESH_OUTBOUND_MIN);
}

#[test]
fn opportunistic_grafting_brings_in_better_peers() {
    let mut gossip = router_with_peers(10);
    let now = heartbeats(&mut gossip, 0, 1);
    let outsiders: Vec<PeerId> = (1..=10)
        .map(peer)
        .filter(|p| !gossip.mesh_peers(&topic()).contains(p))
        .collect();
    assert_eq!(outsiders.len(), 2);
    for p in &outsiders {
        gossip.set_application_score(p, 50.0);
    }
    // Before the round (every 60 heartbeats) the mesh is left alone.
    let now = heartbeats(&mut gossip, now, OPPORTUNISTIC_GRAFT_HEARTBEATS - 2);
    assert_eq!(gossip.mesh_peers(&topic()).len(), MESH_N);
    heartbeats(&mut gossip, now, 1);
    let mesh = gossip.mesh_peers(&topic());
    assert_eq!(mesh.len(), MESH_N + OPPORTUNISTIC_GRAFT_PEERS);
    for p in &outsiders {
        assert!(mesh.contains(p));
    }
}

/// Mesh peers that never forward build a delivery deficit once active
/// and are pruned; the peer that delivers keeps its place.
#[test]
fn withholding_mesh_peers_are_pruned_for_their_deficit() {
    let mut gossip = router_with_peers(12);
    let mut now = heartbeats(&mut gossip, 0, 1);
    drain(&mut gossip);
    let good = gossip.mesh_peers(&topic())[0];
    let withholders: Vec<PeerId> = gossip.mesh_peers(&topic())[1..].to_vec();
    for round in 0..30u32 {
        let events = rpc_events(
            &mut gossip,
            at(now),
            good,
            &message_rpc(&topic(), &round.to_be_bytes()),
        );
        for event in events {
            if let GossipEvent::Message { id, .. } = event {
                gossip.report_validation(at(now), id, Validation::Accept);
            }
        }
        now = heartbeats(&mut gossip, now, 1);
        drain(&mut gossip);
    }
    let mesh = gossip.mesh_peers(&topic());
    assert!(mesh.contains(&good));
    assert!(gossip.score(at(now), &good).unwrap() > 0.0);
    let pruned = withholders.iter().filter(|p| !mesh.contains(p)).count();
    assert!(pruned > 0, "withholders were pruned");
    for p in &withholders {
        assert!(!mesh.contains(p) || gossip.score(at(now), p).unwrap() >= 0.0);
    }
}

#[test]
fn caches_stay_bounded() {
    let mut gossip = router_with_peers(1);
    for n in 0..(MCACHE_MESSAGES_MAX + 10) as u32 {
        gossip.publish(at(0), topic(), &n.to_be_bytes()).unwrap();
        if n % 512 == 0 {
            drain(&mut gossip);
        }
    }
    assert_eq!(gossip.mcache_len(), MCACHE_MESSAGES_MAX);
    assert_eq!(gossip.seen_len(), MCACHE_MESSAGES_MAX + 10);
    gossip.assert_invariants();
    drain(&mut gossip);
    // Retained scores are capped: the earliest to expire goes first.
    let mut gossip = Gossip::new(Config::default(), [5; 32]);
    for n in 0..(RETAINED_SCORES_MAX + 4) as u32 {
        let id = PeerId::from_bytes({
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            bytes
        });
        gossip.handle_peer_connected(at(u64::from(n)), id, false, ip(1));
        gossip.peers.get_mut(&id).unwrap().stats.behaviour_penalty = 3.0;
        gossip.handle_peer_disconnected(at(u64::from(n)), &id);
    }
    assert_eq!(gossip.retained.len(), RETAINED_SCORES_MAX);
    assert!(!gossip.retained.contains_key(&PeerId::from_bytes([0; 32])));
    gossip.assert_invariants();
}

/// Nodes joined in memory: every RPC is delivered at once and every
/// message accepted.
struct Net {
    nodes: Vec<Gossip>,
    received: Vec<BTreeSet<MessageId>>,
    now: Instant,
}

impl Net {
    fn new(count: u8, degree: u8, seed: u8) -> Net {
        let mut nodes: Vec<Gossip> = (0..count)
            .map(|n| Gossip::new(Config::default(), [seed.wrapping_add(n); 32]))
            .collect();
        for (n, node) in nodes.iter_mut().enumerate() {
            node.subscribe(Instant::ZERO, topic()).unwrap();
            let _ = n;
        }
        for a in 0..count {
            for step in 1..=degree / 2 {
                let b = (a + step) % count;
                nodes[usize::from(a)].handle_peer_connected(Instant::ZERO, peer(b), true, ip(b));
                nodes[usize::from(b)].handle_peer_connected(Instant::ZERO, peer(a), false, ip(a));
            }
        }
        let received = vec![BTreeSet::new(); usize::from(count)];
        let mut net = Net {
            nodes,
            received,
            now: Instant::ZERO,
        };
        net.deliver();
        net
    }

    fn deliver(&mut self) -> Vec<(usize, PeerId, Vec<u8>)> {
        let mut log = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            for from in 0..self.nodes.len() {
                while let Some((to, bytes)) = self.nodes[from].poll_send() {
                    moved = true;
                    log.push((from, to, bytes.clone()));
                    let to = usize::from(to.as_bytes()[0]);
                    let events =
                        rpc_events(&mut self.nodes[to], self.now, peer(from as u8), &bytes);
                    for event in events {
                        if let GossipEvent::Message { id, .. } = event {
                            self.received[to].insert(id);
                            self.nodes[to].report_validation(self.now, id, Validation::Accept);
                        }
                    }
                }
            }
            if !moved {
                return log;
            }
        }
        panic!("delivery did not settle");
    }

    fn heartbeat(&mut self) -> Vec<(usize, PeerId, Vec<u8>)> {
        self.now = self.now + HEARTBEAT_INTERVAL;
        for node in &mut self.nodes {
            node.handle_timeout(self.now);
        }
        self.deliver()
    }
}

#[test]
fn a_published_message_reaches_every_node_through_the_mesh() {
    let mut net = Net::new(30, 10, 1);
    for _ in 0..3 {
        net.heartbeat();
    }
    for node in &net.nodes {
        let size = node.mesh_peers(&topic()).len();
        assert!(
            size >= MESH_N_LOW.min(10) && size <= MESH_N_HIGH,
            "mesh of {size}"
        );
    }
    let now = net.now;
    let id = net.nodes[0].publish(now, topic(), b"to all").unwrap();
    net.deliver();
    net.heartbeat();
    for (n, received) in net.received.iter().enumerate().skip(1) {
        assert!(received.contains(&id), "node {n} missed the message");
    }
}

#[test]
fn same_seed_gives_the_same_sends() {
    let run = |seed: u8| {
        let mut net = Net::new(16, 8, seed);
        let mut log = Vec::new();
        for round in 0..5u8 {
            log.extend(net.heartbeat());
            let now = net.now;
            let origin = usize::from(round) % 16;
            net.nodes[origin]
                .publish(now, topic(), &[round; 2000])
                .unwrap();
            log.extend(net.deliver());
        }
        log
    };
    let first = run(9);
    assert!(!first.is_empty());
    assert_eq!(first, run(9));
}
