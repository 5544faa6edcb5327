//! What the node tells the application: every notification is logged at a
//! level that fits it and handed to each subscriber's bounded channel.
//!
//! Levels: WARN for what needs an operator's attention (a ban; the
//! observer adds a peer scored out and all peers lost), INFO for what
//! happens once in a node's life (synced); every per-peer event
//! (connected, disconnected, refused, unbanned) and sync's progress are
//! DEBUG: the periodic status line sums them up at INFO.

use crossbeam_channel::{Receiver, Sender};
use meshsync_core::io::Notification;

use super::Driver;

/// Notifications queued per subscriber before further ones are dropped.
pub const NOTIFICATIONS_QUEUED_MAX: usize = 65_536;

pub(super) struct Subscriber {
    sender: Sender<Notification>,
    dropped: u64,
}

/// What [`Subscriber::offer`] did with a notification.
#[derive(Debug, PartialEq, Eq)]
enum Offered {
    Queued,
    /// `queued_max` were waiting unread.
    Dropped,
    /// The receiver is gone.
    Gone,
}

impl Subscriber {
    /// A subscriber whose channel grows with what waits unread. A bounded
    /// channel of [`NOTIFICATIONS_QUEUED_MAX`] would allocate every slot up
    /// front: about 10 MiB per subscriber, read or not (30 drivers in one
    /// process held 330 MiB).
    fn new() -> (Subscriber, Receiver<Notification>) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        (Subscriber { sender, dropped: 0 }, receiver)
    }

    /// Queues `notification` unless `queued_max` already wait unread. We
    /// are the only sender, so the queue can only shrink between the
    /// check and the send: it never holds more than `queued_max`.
    fn offer(&mut self, notification: Notification, queued_max: usize) -> Offered {
        if self.sender.len() >= queued_max {
            self.dropped += 1;
            return Offered::Dropped;
        }
        match self.sender.send(notification) {
            Ok(()) => Offered::Queued,
            Err(_) => Offered::Gone,
        }
    }
}

impl Driver {
    /// A channel that receives every notification from now on. At most
    /// [`NOTIFICATIONS_QUEUED_MAX`] wait unread; further ones are dropped.
    pub fn subscribe(&mut self) -> Receiver<Notification> {
        let (subscriber, receiver) = Subscriber::new();
        self.subscribers.push(subscriber);
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
            match subscriber.offer(notification.clone(), NOTIFICATIONS_QUEUED_MAX) {
                Offered::Queued => true,
                Offered::Dropped => {
                    if subscriber.dropped == 1 {
                        log::warn!("[{me:?}] a notification subscriber is not reading; dropping");
                    }
                    true
                }
                Offered::Gone => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::PeerId;

    fn unbanned(n: u8) -> Notification {
        Notification::PeerUnbanned {
            peer: PeerId::from_bytes([n; 32]),
        }
    }

    #[test]
    fn a_subscriber_that_does_not_read_holds_at_most_the_cap() {
        let (mut subscriber, receiver) = Subscriber::new();
        assert_eq!(subscriber.offer(unbanned(1), 2), Offered::Queued);
        assert_eq!(subscriber.offer(unbanned(2), 2), Offered::Queued);
        assert_eq!(subscriber.offer(unbanned(3), 2), Offered::Dropped);
        assert_eq!(subscriber.offer(unbanned(4), 2), Offered::Dropped);
        assert_eq!((receiver.len(), subscriber.dropped), (2, 2));
        // Reading makes room again; what was dropped stays dropped.
        assert_eq!(receiver.recv().unwrap(), unbanned(1));
        assert_eq!(subscriber.offer(unbanned(5), 2), Offered::Queued);
        let rest: Vec<_> = receiver.try_iter().collect();
        assert_eq!(rest, vec![unbanned(2), unbanned(5)]);
        drop(receiver);
        assert_eq!(subscriber.offer(unbanned(6), 2), Offered::Gone);
    }
}
