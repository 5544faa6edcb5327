//! Node tests: several nodes wired together in memory, delivering bytes at once.
//!
//! Shared helpers live here; the tests are grouped by concern in the files below.

use super::*;
use crate::chain::{ProposerKey, SignedBlock};
use crate::gossip::{MessageId, Topic, Validation};
use crate::io::{DisconnectReason, GoodbyeReason, Notification, RefuseReason, RequestError};
use crate::peer::Refusal;
use crate::reqresp::bodies::{BlocksByRangeRequest, BlocksByRootRequest, Body, Status};
use crate::reqresp::{Answer, ProtocolId, ProtocolName, Quota, RequestId, ResultCode};
use crate::testing::{address_of as addr, Delivery, MemoryNet as Net};
use std::collections::BTreeSet;

mod claims;
mod connections;
mod discovering;
mod gossiping;
mod history;
mod peerstore;
mod producing;
mod request_stats;
mod requests;
mod signing;
mod stalls;
mod syncing;

/// Feeds an input and runs the network until quiet.
fn run(net: &mut Net, index: usize, input: Input) {
    net.handle(index, input);
    net.drain();
}

/// The notifications about connections (not statuses, requests, metadata).
fn connection_events(net: &Net, index: usize) -> Vec<Notification> {
    net.notifications[index]
        .iter()
        .filter(|n| {
            matches!(
                n,
                Notification::PeerConnected { .. }
                    | Notification::PeerDisconnected { .. }
                    | Notification::ConnectionRefused { .. }
                    | Notification::DialFailed { .. }
            )
        })
        .cloned()
        .collect()
}

fn refusals(net: &Net, index: usize) -> Vec<RefuseReason> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::ConnectionRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn disconnects(net: &Net, index: usize) -> Vec<DisconnectReason> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::PeerDisconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// A node config holding the first `head_slot` blocks (at most 300) of one
/// devnet chain, signed once for all tests.
/// Unix milliseconds at the origin of nodes that hold the pre-signed chain:
/// its 300 slots are then in the past (claims from the future are refused).
const CHAIN_CLOCK_MS: u64 = 300 * crate::chain::DEVNET_SLOT_DURATION_MS + 1_000;

/// Freezes node `frozen` as seen from everyone: nothing it sends arrives
/// any more, yet no connection closes (SIGSTOP, or a partition).
fn freeze(net: &mut Net, frozen: usize) {
    net.links
        .retain(|&(from, _), remote| from != frozen && remote.0 != frozen);
}

fn chain_config(head_slot: u64) -> Config {
    static CHAIN: std::sync::OnceLock<crate::chain::ChainConfig> = std::sync::OnceLock::new();
    let full = CHAIN.get_or_init(|| crate::chain::ChainConfig::devnet_with_chain(1, 300, 200));
    let mut config = Config::new(1);
    config.unix_ms_at_origin = CHAIN_CLOCK_MS;
    config.chain = crate::chain::ChainConfig {
        stored: full.stored[..head_slot as usize].into(),
        history_anchor: None,
        ..full.clone()
    };
    config
}

fn block_slot(bytes: &[u8]) -> u64 {
    crate::chain::SignedBlock::decode(bytes).unwrap().slot()
}

fn request(net: &mut Net, from: usize, to: usize, protocol: ProtocolId, body: Vec<u8>, tag: u64) {
    let peer = net.nodes[to].peer_id();
    let command = Command::Request {
        peer,
        protocol,
        body,
        tag,
    };
    run(net, from, Input::Command(command));
}

/// The outcome of the request tagged `tag` at node `index`.
fn outcome(net: &Net, index: usize, tag: u64) -> Option<Notification> {
    net.notifications[index]
        .iter()
        .find(|n| match n {
            Notification::Response { tag: t, .. } | Notification::RequestFailed { tag: t, .. } => {
                *t == tag
            }
            _ => false,
        })
        .cloned()
}

/// The application protocol of the example: answers with the body reversed.
fn echo() -> ProtocolName {
    ProtocolName::new("example/reverse/1").unwrap()
}

fn blocks_topic() -> Topic {
    Topic::new("blocks").expect("a valid topic name")
}

/// Five nodes in a line (0 − 1 − 2 − 3 − 4), all subscribed to "blocks",
/// with a heartbeat or two behind them so every mesh is built.
fn gossip_line() -> Net {
    gossip_line_with(|_| {})
}

/// [`gossip_line`], with `configure` applied to the net before anything runs.
fn gossip_line_with(configure: impl FnOnce(&mut Net)) -> Net {
    let mut net = Net::with_nodes(5);
    configure(&mut net);
    for i in 0..4 {
        net.dial(i, i + 1, None);
    }
    for i in 0..5 {
        let topic = blocks_topic();
        run(&mut net, i, Input::Command(Command::Subscribe { topic }));
    }
    net.advance(Duration::from_secs(2));
    for i in 0..5 {
        let neighbours = if i == 0 || i == 4 { 1 } else { 2 };
        assert_eq!(
            net.nodes[i].gossip().mesh_peers(&blocks_topic()).len(),
            neighbours,
            "node {i}'s mesh holds its neighbours"
        );
    }
    net
}

/// The gossip messages node `index` was handed, in order: (id, payload).
fn gossip_messages(net: &Net, index: usize) -> Vec<(MessageId, Vec<u8>)> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::GossipMessage { id, payload, .. } => Some((*id, payload.clone())),
            _ => None,
        })
        .collect()
}

/// Plays every node's application: answers each gossip message not yet
/// judged with `verdict(node)`, until no node has one left. `judged` carries
/// what was answered across calls.
fn judge_gossip(
    net: &mut Net,
    judged: &mut BTreeSet<(usize, MessageId)>,
    verdict: impl Fn(usize) -> Validation,
) {
    const ROUNDS_MAX: usize = 100;
    for _ in 0..ROUNDS_MAX {
        let mut answered = false;
        for index in 0..net.nodes.len() {
            for (id, _) in gossip_messages(net, index) {
                if judged.insert((index, id)) {
                    answered = true;
                    let verdict = verdict(index);
                    run(
                        net,
                        index,
                        Input::Command(Command::ValidateGossip { id, verdict }),
                    );
                }
            }
        }
        if !answered {
            return;
        }
    }
    panic!("gossip still arriving after {ROUNDS_MAX} rounds");
}

fn publish(net: &mut Net, index: usize, payload: &[u8]) {
    let command = Command::Publish {
        topic: blocks_topic(),
        payload: payload.to_vec(),
    };
    run(net, index, Input::Command(command));
}

/// A devnet node config on network 1 that follows the chain by gossip; with
/// `proposer`, it holds the devnet's one proposer key.
fn follower_config(proposer: bool) -> Config {
    let mut config = Config::new(1);
    config.chain.follow_gossip = true;
    config.chain.body_bytes = 64;
    if proposer {
        let key = crate::chain::devnet_keys(1, 1).remove(0);
        config.chain.proposer_keys = vec![ProposerKey(std::sync::Arc::new(key))];
    }
    config
}

fn imported_slots(net: &Net, index: usize) -> Vec<u64> {
    net.notifications[index]
        .iter()
        .filter_map(|n| match n {
            Notification::BlockImported { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

/// Producer 0 − follower 1 − follower 2, meshes built.
fn producing_line() -> Net {
    let mut net = Net::new(vec![
        follower_config(true),
        follower_config(false),
        follower_config(false),
    ]);
    net.dial(0, 1, None);
    net.dial(1, 2, None);
    net.advance(Duration::from_millis(1_500)); // Meshes, before slot 1 starts at 2 s.
    net
}

/// A fresh node that starts range sync with one suitable peer.
fn joiner_config() -> Config {
    let mut config = Config::new(1);
    config.unix_ms_at_origin = CHAIN_CLOCK_MS;
    config.sync.peers_min = 1;
    config
}

fn synced_at(net: &Net, index: usize) -> Option<u64> {
    net.notifications[index].iter().find_map(|n| match n {
        Notification::Synced { head_slot } => Some(*head_slot),
        _ => None,
    })
}

/// Node `from` tells node `to` that its chain is `status`, in a Status
/// request: well-formed, and whatever it likes.
fn claim_status(net: &mut Net, from: usize, to: usize, status: Status, tag: u64) {
    request(net, from, to, ProtocolId::Status, status.encode(), tag);
}

fn score_of(net: &Net, at: usize, peer: usize) -> f64 {
    let peer = net.nodes[peer].peer_id();
    net.nodes[at]
        .peer_manager()
        .score(net.now, &peer)
        .as_points()
}

/// A producer and a follower on a chain of 20 ms slots (50 blocks a second).
fn fast_chain_pair(slot_duration_ms: u64) -> Net {
    let key = crate::chain::devnet_keys(1, 1).remove(0);
    let genesis = crate::chain::Genesis::new(
        1,
        0,
        slot_duration_ms,
        vec![key.sk_to_pk()],
        crate::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT,
    )
    .unwrap();
    let configs = [true, false].map(|proposer| {
        let mut config = follower_config(proposer);
        config.chain.genesis = std::sync::Arc::new(genesis.clone());
        config
    });
    let mut net = Net::new(configs.to_vec());
    net.dial(1, 0, None);
    net
}
