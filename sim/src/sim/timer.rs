//! Each node's wake-up: at most one live timer event per node.
//!
//! After every input the node is asked `poll_timeout()`. A new wake-up
//! instant bumps the node's timer generation and queues an event carrying
//! it; events with an older generation are stale and skipped without
//! counting as steps. A node that asks to wake at or before the timeout it
//! just handled is a bug: it is counted as a violation and pushed forward
//! by [`TIMER_STALL_BACKOFF`], so the clock always moves.

use meshsync_core::Duration;

use super::event::Event;
use super::world::Sim;
use crate::types::NodeIndex;

/// How far a node that asks for a wake-up at or before the timeout it just
/// handled is pushed forward, so a buggy timer cannot stall the clock.
pub const TIMER_STALL_BACKOFF: Duration = Duration::from_millis(1);

impl Sim {
    pub(super) fn schedule_timer(&mut self, index: NodeIndex, after_timeout: bool) {
        let now = self.now;
        let clock = self.node_state(index).clock;
        let node_now = clock.node_instant(now);
        let wanted = self.node_state(index).node.poll_timeout();
        let at = match wanted {
            Some(at) if after_timeout && at <= node_now => {
                self.violation(
                    Some(index),
                    format!("asked to wake at {at} right after handling its timeout at {now}"),
                );
                now + TIMER_STALL_BACKOFF
            }
            // Its deadline is on its own clock: the world wakes it when
            // its clock reads it.
            Some(at) => clock.world_instant(at).max(now),
            None => {
                let state = self.node_state_mut(index);
                if state.timer_at.take().is_some() {
                    state.timer_generation += 1; // Invalidates the queued event.
                }
                return;
            }
        };
        let state = self.node_state_mut(index);
        if state.timer_at == Some(at) {
            return; // Already queued.
        }
        state.timer_generation += 1;
        state.timer_at = Some(at);
        let generation = state.timer_generation;
        self.queue.push(
            at,
            Event::Timer {
                node: index,
                generation,
            },
        );
    }
}
