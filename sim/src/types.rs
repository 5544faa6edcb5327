//! The small types every layer of the simulator shares: which node
//! ([`NodeIndex`]), what an application hears ([`AppEvent`]), and why a
//! bounded run stopped ([`Timeout`]).
//!
//! # Design
//! This module imports nothing from the crate, so the network model, the
//! trace, the request log and the invariant checkers can name a node without
//! depending on the world that hosts it. The modules form layers: these
//! types; then `network`, `trace`, `requests`, `invariants`; then `sim`;
//! then `app` and `summary`; then `scenario`; then the binary.

use std::fmt;

use meshsync_core::{Instant, Notification};

/// A node's place in the simulation, in the order nodes were added.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeIndex(pub usize);

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// Something an application hears about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppEvent {
    /// `node` emitted `notification` (now).
    Notification {
        /// The node.
        node: NodeIndex,
        /// What it said.
        notification: Notification,
    },
    /// A wake-up asked for with [`crate::Sim::wake_at`] is due (now).
    Wake {
        /// The token given to `wake_at`.
        token: u64,
    },
}

/// `run_until` gave up: the predicate did not hold within its bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// Steps taken before giving up.
    pub steps: u64,
    /// Virtual time when it gave up.
    pub now: Instant,
    /// True if it stopped because nothing was left to happen, not because of the bound.
    pub idle: bool,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.idle {
            write!(
                f,
                "predicate still false after {} steps at {}: nothing left to happen",
                self.steps, self.now
            )
        } else {
            write!(
                f,
                "predicate still false after the bound of {} steps, at {}",
                self.steps, self.now
            )
        }
    }
}

impl std::error::Error for Timeout {}
