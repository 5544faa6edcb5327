//! What the simulator counts over the whole world, for summaries and
//! tests: notifications by kind ([`NotificationCounts`]) and what the
//! network carried ([`NetworkCounts`]).
//!
//! Plain counters: this module imports nothing from the crate. The world
//! (`crate::sim`) bumps them; `crate::summary` reads them.

use meshsync_core::io::DisconnectReason;
use meshsync_core::{Direction, Notification};

/// Counts of notifications, by kind, over all nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NotificationCounts {
    /// `PeerConnected`.
    pub peer_connected: u64,
    /// `PeerConnected` with `Direction::Outbound`: one per completed handshake.
    pub peer_connected_outbound: u64,
    /// `PeerDisconnected`.
    pub peer_disconnected: u64,
    /// `PeerDisconnected` for silence.
    pub peer_disconnected_silent: u64,
    /// `ConnectionRefused`.
    pub connection_refused: u64,
    /// `DialFailed`.
    pub dial_failed: u64,
    /// `Response`.
    pub response: u64,
    /// `RequestFailed`.
    pub request_failed: u64,
    /// `PeerBanned`.
    pub peer_banned: u64,
}

impl NotificationCounts {
    /// Counts `notification` under its kind (most kinds are not counted).
    pub fn count(&mut self, notification: &Notification) {
        match notification {
            Notification::PeerConnected { direction, .. } => {
                self.peer_connected += 1;
                if *direction == Direction::Outbound {
                    self.peer_connected_outbound += 1;
                }
            }
            Notification::PeerDisconnected { reason, .. } => {
                self.peer_disconnected += 1;
                if *reason == DisconnectReason::Silent {
                    self.peer_disconnected_silent += 1;
                }
            }
            Notification::ConnectionRefused { .. } => self.connection_refused += 1,
            Notification::DialFailed { .. } => self.dial_failed += 1,
            Notification::Response { .. } => self.response += 1,
            Notification::RequestFailed { .. } => self.request_failed += 1,
            Notification::PeerBanned { .. } => self.peer_banned += 1,
            Notification::PeerStatus { .. }
            | Notification::PeerMetadata { .. }
            | Notification::InboundRequest { .. }
            | Notification::PeerUnbanned { .. }
            | Notification::IpUnbanned { .. }
            | Notification::ScoreRecovered { .. }
            | Notification::GossipMessage { .. }
            | Notification::BlockImported { .. }
            | Notification::SyncProgress { .. }
            | Notification::Synced { .. }
            | Notification::BodyRefused { .. }
            | Notification::PublishFailed { .. }
            | Notification::SubscribeFailed { .. } => {}
        }
    }
}

/// What the network did, counted by the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkCounts {
    /// Transport connections set up (both ends told).
    pub connections_established: u64,
    /// Dials answered with a refusal (nobody listening there, or the node is down).
    pub dials_refused: u64,
    /// `Action::Send`s applied.
    pub sends: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Bytes delivered to a node.
    pub bytes_delivered: u64,
    /// Bytes lost: sent by a blackholed node, or arriving at a closed end.
    pub bytes_dropped: u64,
    /// Connections closed because too much waited to go out on them.
    pub send_buffer_overflows: u64,
    /// Connections reset by a fault (`Sim::reset_connections`), each counted once.
    pub resets: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
}
