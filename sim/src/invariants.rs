//! Invariants the simulator checks while the world runs.
//!
//! # Design
//! Checks are cheap enough to run after every step: each step changes one or
//! two nodes, and only those are checked ([`check_node`]). Relations between
//! nodes that hold only once traffic has settled (symmetric peer relations)
//! are checked on demand, skipping pairs with bytes still in flight
//! ([`crate::Sim::check_peer_symmetry`]). The driver's side of the contract is
//! checked where the actions are applied (a send on a connection that is not
//! open, a dial id used twice, a timer that does not move forward).
//!
//! A violation never stops the run: it is counted, logged with the seed that
//! replays it, and kept (the first [`VIOLATIONS_KEPT_MAX`]) for the summary.
//!
//! # Limits
//! At most [`VIOLATIONS_KEPT_MAX`] descriptions are kept; the count goes on.

use std::collections::BTreeSet;
use std::fmt;

use meshsync_core::{Instant, Node, PeerId};

use crate::types::NodeIndex;

/// Violation descriptions kept for the summary; a broken run can produce millions.
pub const VIOLATIONS_KEPT_MAX: usize = 1_000;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// When it was seen.
    pub at: Instant,
    /// The node it concerns, if one.
    pub node: Option<NodeIndex>,
    /// What was wrong.
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(f, "[{}] {node}: {}", self.at, self.description),
            None => write!(f, "[{}] {}", self.at, self.description),
        }
    }
}

/// Counts and keeps violations.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    count: u64,
    kept: Vec<Violation>,
}

impl Violations {
    /// Records one violation and logs it with the seed that replays the run.
    pub fn record(&mut self, seed: u64, violation: Violation) {
        log::error!("invariant violated (seed {seed}): {violation}");
        self.count += 1;
        if self.kept.len() < VIOLATIONS_KEPT_MAX {
            self.kept.push(violation);
        }
    }

    /// Violations seen, including those not kept.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The first [`VIOLATIONS_KEPT_MAX`] violations.
    pub fn kept(&self) -> &[Violation] {
        &self.kept
    }
}

/// What the simulator knows about a node, to check the node against.
pub struct NodeView<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its own identity.
    pub peer_id: PeerId,
    /// Its configured peer limit.
    pub peers_max: usize,
    /// The peers its `PeerConnected`/`PeerDisconnected` notifications say it has.
    pub notified_peers: &'a BTreeSet<PeerId>,
}

/// Checks one node's peer table on its own; returns what is wrong.
///
/// - it holds at most `peers_max` (and [`meshsync_core::limits::PEERS_MAX`]) peers;
/// - it never counts itself as a peer;
/// - it lists each peer once, in `PeerId` order, and `peer_count` agrees;
/// - its notifications told the application the truth: the peers announced
///   connected and not since disconnected are exactly the peers it has.
pub fn check_node(view: &NodeView<'_>) -> Vec<String> {
    // Run after every step of every node: one pass over the table, no
    // allocation unless something is wrong.
    let mut problems = Vec::new();
    let peers = view.node.peer_ids();
    let listed = peers.len();
    let peer_count = view.node.peer_count();
    if peer_count != listed {
        problems.push(format!(
            "peer_count() is {peer_count} but peers() lists {listed}"
        ));
    }
    let peers_max = view.peers_max.min(meshsync_core::limits::PEERS_MAX);
    if listed > peers_max {
        problems.push(format!(
            "has {listed} peers, more than the limit of {peers_max}"
        ));
    }
    let mut previous: Option<&PeerId> = None;
    let mut ordered = true;
    let mut itself = false;
    let mut as_notified = listed == view.notified_peers.len();
    let mut notified = view.notified_peers.iter();
    for peer in peers {
        ordered &= previous.is_none_or(|previous| previous < peer);
        itself |= *peer == view.peer_id;
        as_notified &= notified.next() == Some(peer);
        previous = Some(peer);
    }
    if itself {
        problems.push("counts itself as a peer".to_owned());
    }
    if !ordered {
        problems.push("peers() is not in strictly increasing PeerId order".to_owned());
    }
    if !as_notified {
        let listed: BTreeSet<PeerId> = view.node.peer_ids().copied().collect();
        let unannounced: Vec<_> = listed.difference(view.notified_peers).collect();
        let phantom: Vec<_> = view.notified_peers.difference(&listed).collect();
        problems.push(format!(
            "notifications disagree with the peer table: connected but never announced {unannounced:?}, announced but not connected {phantom:?}"
        ));
    }
    problems
}
