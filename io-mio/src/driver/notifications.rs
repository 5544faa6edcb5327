//! What the node tells the application: every notification is logged at a
//! level that fits it and handed to each subscriber's bounded channel.
//!
//! Levels: WARN for what needs an operator's attention (a ban; the
//! observer adds a peer scored out and all peers lost), INFO for what
//! happens once in a node's life (synced); every per-peer event
//! (connected, disconnected, refused, unbanned) and sync's progress are
//! DEBUG: the periodic status line sums them up at INFO.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use meshsync_core::io::Notification;

use super::Driver;

/// Notifications queued per subscriber before further ones are dropped.
pub const NOTIFICATIONS_QUEUED_MAX: usize = 65_536;

pub(super) struct Subscriber {
    sender: Sender<Notification>,
    dropped: u64,
}

impl Driver {
    /// A channel that receives every notification from now on. At most
    /// [`NOTIFICATIONS_QUEUED_MAX`] wait unread; further ones are dropped.
    pub fn subscribe(&mut self) -> Receiver<Notification> {
        let (sender, receiver) = crossbeam_channel::bounded(NOTIFICATIONS_QUEUED_MAX);
        self.subscribers.push(Subscriber { sender, dropped: 0 });
        receiver
    }

    pub(super) fn notify(&mut self, notification: Notification) {
        self.observe_notification(&notification);
        let me = self.peer_id;
        match &notification {
            Notification::PeerConnected {
                peer,
                addr,
                direction,
            } => log::debug!("[{me:?}] peer {peer} connected ({direction:?}, {addr})"),
            Notification::PeerDisconnected { peer, reason } => {
                log::debug!("[{me:?}] peer {peer} disconnected: {reason}")
            }
            Notification::ConnectionRefused { addr, peer, reason } => match peer {
                Some(peer) => log::debug!("[{me:?}] refused {addr} (peer {peer}): {reason}"),
                None => log::debug!("[{me:?}] refused {addr}: {reason}"),
            },
            Notification::DialFailed { addr, error } => {
                log::debug!("[{me:?}] dial to {addr} failed: {error}")
            }
            Notification::PeerBanned { peer, ip, until } => {
                log::warn!("[{me:?}] peer {peer} banned until {until} (ip {ip:?})")
            }
            Notification::PeerUnbanned { peer } => log::debug!("[{me:?}] peer {peer} unbanned"),
            Notification::IpUnbanned { ip } => log::debug!("[{me:?}] ip {ip} unbanned"),
            Notification::ScoreRecovered { peer } => {
                log::debug!("[{me:?}] peer {peer} may connect again")
            }
            Notification::PeerStatus { peer, status } => log::debug!(
                "[{me:?}] peer {peer:?} status: head slot {}, finalized slot {}",
                status.head_slot,
                status.finalized_slot
            ),
            Notification::RequestFailed {
                peer,
                tag,
                protocol,
                error,
            } => log::debug!("[{me:?}] request {tag} ({protocol:?}) to {peer:?} failed: {error:?}"),
            Notification::GossipMessage {
                id, topic, from, ..
            } => log::debug!("[{me:?}] gossip message {id:?} on {topic} from {from:?}"),
            Notification::PublishFailed { topic, error } => {
                log::debug!("[{me:?}] publish on {topic} failed: {error}")
            }
            Notification::BlockImported { slot, root } => log::debug!(
                "[{me:?}] imported block {} at slot {slot}",
                root
            ),
            Notification::SyncProgress {
                head_slot,
                waiting: Some(wait),
                ..
            } => log::debug!("[{me:?}] sync at slot {head_slot} waits for peers: {wait}"),
            Notification::SyncProgress {
                head_slot,
                target_slot,
                blocks_per_second,
                eta,
                waiting: None,
            } => log::debug!(
                "[{me:?}] syncing: slot {head_slot} of {target_slot}, {blocks_per_second} blocks/s, eta {eta:?}"
            ),
            Notification::Synced { head_slot } => {
                log::info!("[{me:?}] synced at slot {head_slot}")
            }
            Notification::BodyRefused { bytes } => {
                log::warn!("[{me:?}] block body of {bytes} bytes refused")
            }
            Notification::SubscribeFailed { topic, error } => {
                log::debug!("[{me:?}] subscribe to {topic} failed: {error:?}")
            }
            Notification::PeerMetadata { .. }
            | Notification::Response { .. }
            | Notification::InboundRequest { .. } => {}
        }
        self.subscribers.retain_mut(|subscriber| {
            match subscriber.sender.try_send(notification.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    if subscriber.dropped == 0 {
                        log::warn!("[{me:?}] a notification subscriber is not reading; dropping");
                    }
                    subscriber.dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}
