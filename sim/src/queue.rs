//! The event queue: what happens next, in (virtual time, sequence number) order.
//!
//! # Design
//! A min-heap keyed by `(at, seq)`. The sequence number is handed out by the
//! queue itself on every push and never reused, so two events due at the same
//! instant come out in the order they were scheduled. That makes the order a
//! pure function of the pushes, which is what lets one seed replay one run bit
//! for bit; it also keeps bytes sent on a connection in order when their
//! arrival instants tie.
//!
//! The heap holds only `(at, seq, slot)`; the events wait in a slab of
//! slots reused through a free list. A sift moves 24 bytes, not a whole
//! event (some carry a persist batch or a command), and no event is boxed.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use meshsync_core::Instant;

/// A min-queue of events ordered by (virtual time, sequence number).
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Scheduled>>,
    /// Each event's slot; `None` while the slot is free.
    slots: Vec<Option<E>>,
    /// Free slots, reused last-freed first.
    free: Vec<u32>,
    seq_next: u64,
}

/// One queued event's key and where it waits. Ordered by `(at, seq)` only.
#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq_next: 0,
        }
    }

    /// Schedules `event` at `at`, after every event already scheduled for the
    /// same instant. Returns its sequence number.
    ///
    /// # Panics
    /// With more than `u32::MAX` events waiting at once, far beyond any
    /// world's memory.
    pub fn push(&mut self, at: Instant, event: E) -> u64 {
        let seq = self.seq_next;
        // A u64 counter incremented once per event cannot wrap in any real run.
        self.seq_next += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 events waiting");
                self.slots.push(Some(event));
                slot
            }
        };
        self.heap.push(Reverse(Scheduled { at, seq, slot }));
        seq
    }

    /// Removes and returns the earliest event with its instant.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        let Reverse(scheduled) = self.heap.pop()?;
        let event = self.slots[scheduled.slot as usize]
            .take()
            .expect("a scheduled slot holds its event");
        self.free.push(scheduled.slot);
        Some((scheduled.at, event))
    }

    /// The instant of the earliest event, if any.
    pub fn peek_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(scheduled)| scheduled.at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    #[test]
    fn pops_in_time_order_then_in_push_order() {
        let mut queue = EventQueue::new();
        queue.push(at(30), "c");
        queue.push(at(10), "a1");
        queue.push(at(20), "b");
        queue.push(at(10), "a2");
        queue.push(at(10), "a3");
        assert_eq!(queue.peek_at(), Some(at(10)));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            order,
            vec![
                (at(10), "a1"),
                (at(10), "a2"),
                (at(10), "a3"),
                (at(20), "b"),
                (at(30), "c"),
            ]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn slots_are_reused_so_the_slab_holds_only_what_waits() {
        let mut queue = EventQueue::new();
        for round in 0..100u64 {
            queue.push(at(round + 2), round * 2);
            queue.push(at(round + 1), round * 2 + 1);
            assert_eq!(queue.pop(), Some((at(round + 1), round * 2 + 1)));
            assert_eq!(queue.pop(), Some((at(round + 2), round * 2)));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.slots.len(), 2, "two slots serve two events at a time");
    }

    #[test]
    fn sequence_numbers_are_never_reused() {
        let mut queue = EventQueue::new();
        let first = queue.push(at(5), ());
        queue.pop();
        let second = queue.push(at(5), ());
        assert!(second > first);
    }

    #[test]
    fn ties_at_one_instant_keep_push_order_across_interleaved_pops() {
        // Events pushed while others at the same instant are being popped
        // still come after the ones already waiting.
        let mut queue = EventQueue::new();
        queue.push(at(1), 1);
        queue.push(at(1), 2);
        assert_eq!(queue.pop(), Some((at(1), 1)));
        queue.push(at(1), 3);
        queue.push(at(0), 0);
        assert_eq!(queue.pop(), Some((at(0), 0)));
        assert_eq!(queue.pop(), Some((at(1), 2)));
        assert_eq!(queue.pop(), Some((at(1), 3)));
        assert_eq!(queue.len(), 0);
    }
}
