//! The message cache (windows of ids for IHAVE, answers to IWANT) and the
//! seen-set that deduplicates messages until they expire.

use std::collections::{BTreeMap, VecDeque};

use super::config::{
    GOSSIP_WINDOWS, MCACHE_BYTES_MAX, MCACHE_MESSAGES_MAX, MCACHE_WINDOWS, SEEN_MESSAGES_MAX,
};
use super::Gossip;
use crate::gossip::wire::{MessageId, Topic, WireMessage};
use crate::identity::PeerId;
use crate::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SeenState {
    Pending,
    Accepted,
    Rejected,
    Ignored,
    Own,
    /// The application could not judge it (no capacity): the next copy, or
    /// an IHAVE for it, is treated as new.
    Abandoned,
}

#[derive(Debug)]
pub(super) struct Seen {
    pub(super) first_seen: Instant,
    pub(super) deliverers: Vec<PeerId>,
    pub(super) state: SeenState,
}

#[derive(Debug)]
pub(super) struct CacheEntry {
    pub(super) message: WireMessage,
    pub(super) iwant_counts: BTreeMap<PeerId, u8>,
}

/// The message cache: windows of ids, newest first, and the messages.
#[derive(Debug, Default)]
pub(super) struct MessageCache {
    pub(super) entries: BTreeMap<MessageId, CacheEntry>,
    pub(super) windows: VecDeque<Vec<MessageId>>,
    pub(super) bytes: usize,
}

impl MessageCache {
    pub(super) fn new() -> MessageCache {
        let mut windows = VecDeque::with_capacity(MCACHE_WINDOWS + 1);
        windows.push_front(Vec::new());
        MessageCache {
            entries: BTreeMap::new(),
            windows,
            bytes: 0,
        }
    }

    pub(super) fn put(&mut self, id: MessageId, message: WireMessage) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.bytes += message.frame.len();
        self.entries.insert(
            id,
            CacheEntry {
                message,
                iwant_counts: BTreeMap::new(),
            },
        );
        self.windows
            .front_mut()
            .expect("there is always a current window")
            .push(id);
        while self.entries.len() > MCACHE_MESSAGES_MAX || self.bytes > MCACHE_BYTES_MAX {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        for window in self.windows.iter_mut().rev() {
            if !window.is_empty() {
                let id = window.remove(0);
                self.forget(&id);
                return;
            }
        }
    }

    fn forget(&mut self, id: &MessageId) {
        if let Some(entry) = self.entries.remove(id) {
            self.bytes -= entry.message.frame.len();
        }
    }

    pub(super) fn shift(&mut self) {
        self.windows.push_front(Vec::new());
        while self.windows.len() > MCACHE_WINDOWS {
            let oldest = self.windows.pop_back().expect("more than zero windows");
            for id in oldest {
                self.forget(&id);
            }
        }
    }

    pub(super) fn gossip_ids(&self, topic: &Topic) -> Vec<MessageId> {
        self.windows
            .iter()
            .take(GOSSIP_WINDOWS)
            .flatten()
            .filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|entry| entry.message.topic == *topic)
            })
            .copied()
            .collect()
    }
}

impl Gossip {
    pub(super) fn remember_seen(&mut self, id: MessageId, seen: Seen) {
        self.seen.insert(id, seen);
        self.seen_order.push_back(id);
        while self.seen.len() > SEEN_MESSAGES_MAX {
            let Some(oldest) = self.seen_order.pop_front() else {
                break;
            };
            self.seen.remove(&oldest);
        }
    }
}
