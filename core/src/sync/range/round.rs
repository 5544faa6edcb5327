//! Rounds: when sync starts, waits for peers, sets its target, ends, or is
//! abandoned and retried.

use super::actions::SyncAction;
use super::batch::BatchState;
use super::config::{ROUND_RETRY_DELAY, SLOT_MAX};
use super::{Mode, RangeSync};
use crate::time::Instant;

impl RangeSync {
    pub(super) fn update_mode(&mut self, now: Instant) {
        // One peer's word is tried only when it is the only peer we hear
        // (a small network), after the wait or if the operator asked for
        // one peer; never while another peer's claim disagrees.
        let heard = self
            .peers
            .values()
            .filter(|state| state.disproven_until <= now)
            .count();
        self.lone_claims_allowed = heard <= 1
            && (self.config.peers_min <= 1
                || matches!(self.mode, Mode::AwaitingPeers { since }
                    if now >= since.saturating_add(self.config.peers_wait))
                || (self.lone_claims_allowed && self.mode == Mode::Syncing));
        let best = self.best_head();
        let claimed = self.best_claimed_head();
        let suitable = self
            .peers
            .values()
            .filter(|state| self.is_suitable(state))
            .count();
        // A stale head (see `set_stale_head_slots`) is behind any peer ahead.
        let stale = self.slot_max < SLOT_MAX
            && self.slot_max >= self.local.head_slot.saturating_add(self.stale_head_slots);
        let far_behind = claimed.is_some_and(|head| {
            head > self
                .local
                .head_slot
                .saturating_add(self.config.sync_distance_slots)
                || (stale && head > self.local.head_slot)
        });
        loop {
            match self.mode {
                Mode::Idle => {
                    if !far_behind {
                        return;
                    }
                    if self.batches.is_empty() {
                        // Resume where the last round stopped if our chain
                        // still reaches there, never below finality.
                        let lowest = self.local.finalized_slot.saturating_add(1);
                        let highest = self.local.head_slot.saturating_add(1).max(lowest);
                        self.next_start = self.next_start.clamp(lowest, highest);
                    }
                    self.mode = Mode::AwaitingPeers { since: now };
                }
                Mode::AwaitingPeers { since } => {
                    let waited = now >= since.saturating_add(self.config.peers_wait);
                    let needed = if waited { 1 } else { self.config.peers_min };
                    if let (true, Some(best)) = (
                        suitable >= needed && suitable > 0 && now >= self.retry_not_before,
                        best,
                    ) {
                        self.mode = Mode::Syncing;
                        self.target_slot = best;
                        // A proposer pauses while the round imports: from
                        // its start, then after each import that made
                        // progress, for at most CATCH_UP_STALL_MAX each.
                        self.catch_up_since = Some(now);
                        if self.progress.last_at.is_none() {
                            self.progress.head_at_last = self.local.head_slot;
                        }
                        continue;
                    }
                    if suitable == 0 && waited {
                        // No peer to resume with for a whole wait: let the
                        // buffered batches go (imports keep what they had).
                        self.drop_round_work();
                    }
                    if !far_behind && self.batches.is_empty() {
                        self.mode = Mode::Idle;
                        self.progress.last_at = None;
                    }
                    return;
                }
                Mode::Syncing => {
                    let Some(best) = best else {
                        if self.caught_up_with_peers(now) {
                            // A peer we hear is at our head and none claims
                            // more: what is queued above was asked of a
                            // claimant that left (or was banned). End the
                            // round here; `check_round_end` says Synced once
                            // imports in progress are done.
                            self.target_slot = self.local.head_slot;
                            self.drop_batches_above_target();
                            if self.batches.is_empty() {
                                let above_head = self.local.head_slot.saturating_add(1);
                                self.next_start = self.next_start.max(above_head);
                            }
                            return;
                        }
                        // Every suitable peer left: keep the batches and
                        // wait for peers to come back.
                        if self.round_has_work() {
                            self.mode = Mode::AwaitingPeers { since: now };
                            self.catch_up_since = None;
                        }
                        return;
                    };
                    self.target_slot = best;
                    self.drop_batches_above_target();
                    return;
                }
            }
        }
    }

    /// Whether no peer we could sync from claims more than our head while
    /// one we believe is at it: the round has nothing left to reach.
    fn caught_up_with_peers(&self, now: Instant) -> bool {
        self.best_claimed_head().is_none()
            && self.peers.values().any(|state| {
                !state.stale
                    && state.disproven_until <= now
                    && state.chain.head_slot == self.local.head_slot
            })
    }

    /// Whether the round still has slots to fetch or batches to import.
    fn round_has_work(&self) -> bool {
        !self.batches.is_empty() || self.next_start <= self.target_slot
    }

    /// Queued batches above the target (its claimant left or went stale)
    /// would wait for a peer forever: forget them.
    fn drop_batches_above_target(&mut self) {
        while let Some((&start, batch)) = self.batches.last_key_value() {
            if start <= self.target_slot || !matches!(batch.state, BatchState::Queued) {
                break;
            }
            self.batches.remove(&start);
            self.next_start = start;
        }
        if self.batches.is_empty() {
            self.next_start = self.next_start.min(self.target_slot.saturating_add(1));
        }
    }

    /// Ends the round once every batch up to the target is imported. Only
    /// called from `poll`, after the caller has fed both the import result
    /// and our new head.
    pub(super) fn check_round_end(&mut self) {
        if self.mode != Mode::Syncing || self.round_has_work() {
            return;
        }
        let reach = self
            .local
            .head_slot
            .saturating_add(self.config.sync_distance_slots);
        let best = self.best_claimed_head();
        if best.is_some_and(|head| head > self.local.head_slot) {
            // Empty answers at the end of the round may have hidden the
            // rest: fetch them once more from other peers first.
            let next_start = self.next_start;
            let tail_empty = self
                .history
                .back()
                .is_some_and(|last| last.roots.is_empty() && !last.rechecked);
            if tail_empty && self.recheck_previous(next_start) {
                return;
            }
        }
        if best.is_some_and(|head| head > reach) {
            // The peers claiming more did not deliver it: ignore their
            // claims until they send a new Status.
            for state in self.peers.values_mut() {
                if state.chain.head_slot > reach {
                    state.stale = true;
                }
            }
        }
        self.finish_round();
    }

    fn finish_round(&mut self) {
        self.mode = Mode::Idle;
        self.catch_up_since = None;
        self.progress.last_at = None;
        self.history.clear();
        self.push_output(SyncAction::Synced {
            head_slot: self.local.head_slot,
        });
    }

    /// A batch failed too often: drop every batch not being imported and start over.
    ///
    /// The peers that failed it are not shut out: a timeout or a batch that
    /// did not link blames an honest peer as easily as a liar, and shutting
    /// out every peer would stall sync until their next Status. The next
    /// round waits [`ROUND_RETRY_DELAY`] instead, so a batch nobody can
    /// serve costs a few requests per delay, not a busy loop.
    pub(super) fn abandon_round(&mut self, now: Instant) {
        self.counters.rounds_abandoned = self.counters.rounds_abandoned.saturating_add(1);
        self.drop_round_work();
        self.retry_not_before = now.saturating_add(ROUND_RETRY_DELAY);
        self.mode = Mode::AwaitingPeers { since: now };
        self.catch_up_since = None;
    }

    /// Drops every batch but the one being imported; the next round starts
    /// above it or above finality.
    fn drop_round_work(&mut self) {
        let starts: Vec<u64> = self.batches.keys().copied().collect();
        let mut kept_end = self.local.finalized_slot.saturating_add(1);
        for start in starts {
            if matches!(self.batches[&start].state, BatchState::Importing { .. }) {
                kept_end = kept_end.max(start.saturating_add(self.batches[&start].count));
                continue;
            }
            self.requeue(start, None);
            self.batches.remove(&start);
        }
        self.history.clear();
        self.next_start = kept_end;
    }
}
