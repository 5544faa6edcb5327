//! The message cache (windows of ids for IHAVE, answers to IWANT) and the
//! seen-set that deduplicates messages until they expire.

use std::collections::{BTreeMap, VecDeque};

use super::config::{
    FRAME_KEY_EDGE_BYTES, FRAME_MATCH_BYTES_MIN, GOSSIP_WINDOWS, KNOWN_FRAMES_MAX,
    MCACHE_BYTES_MAX, MCACHE_MESSAGES_MAX, MCACHE_WINDOWS, SEEN_MESSAGES_MAX,
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

/// What a large frame is looked up by: its length and its two ends. Two
/// frames with one key are told apart by comparing them whole.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct FrameKey {
    len: usize,
    head: [u8; FRAME_KEY_EDGE_BYTES],
    tail: [u8; FRAME_KEY_EDGE_BYTES],
}

impl FrameKey {
    /// The key of `frame`, if it is large enough to be worth one.
    fn of(frame: &[u8]) -> Option<FrameKey> {
        if frame.len() < FRAME_MATCH_BYTES_MIN {
            return None;
        }
        let mut head = [0; FRAME_KEY_EDGE_BYTES];
        let mut tail = [0; FRAME_KEY_EDGE_BYTES];
        head.copy_from_slice(&frame[..FRAME_KEY_EDGE_BYTES]);
        tail.copy_from_slice(&frame[frame.len() - FRAME_KEY_EDGE_BYTES..]);
        Some(FrameKey {
            len: frame.len(),
            head,
            tail,
        })
    }
}

/// The ids of large frames we received or published, by [`FrameKey`]:
/// where to look for a held copy to compare a newly arrived frame with.
/// At most [`KNOWN_FRAMES_MAX`], oldest forgotten first; an entry whose
/// message we no longer hold simply finds nothing.
#[derive(Debug, Default)]
pub(super) struct KnownFrames {
    ids: BTreeMap<FrameKey, MessageId>,
    order: VecDeque<FrameKey>,
}

impl KnownFrames {
    /// Remembers that `frame` is message `id`, if `frame` is large. A key
    /// already taken keeps its first message: a frame made to share another's
    /// ends then costs its copies the full path, never a wrong id.
    pub(super) fn remember(&mut self, frame: &[u8], id: MessageId) {
        let Some(key) = FrameKey::of(frame) else {
            return;
        };
        if let std::collections::btree_map::Entry::Vacant(entry) = self.ids.entry(key) {
            entry.insert(id);
            self.order.push_back(key);
        }
        while self.ids.len() > KNOWN_FRAMES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.ids.remove(&oldest);
        }
    }

    /// The id a frame with `frame`'s key was remembered as (the caller
    /// compares the frames).
    pub(super) fn candidate(&self, frame: &[u8]) -> Option<MessageId> {
        self.ids.get(&FrameKey::of(frame)?).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
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
