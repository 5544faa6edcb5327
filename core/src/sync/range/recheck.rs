//! Re-checks of claims and proofs: which claimed head is believed, when an
//! answer disproves it, and fetching again the batches suspected of
//! withholding blocks.

use std::collections::BTreeSet;

use super::batch::{Batch, BatchState};
use super::config::{BATCHES_MAX, CLAIM_SUPPORT_PEERS_MIN};
use super::RangeSync;
use crate::chain::{Root, SignedBlock};
use crate::identity::PeerId;

/// A batch being fetched again because a later one did not link to it.
#[derive(Clone, Debug)]
pub(super) struct Recheck {
    pub(super) original_peer: PeerId,
    pub(super) original_roots: BTreeSet<Root>,
    pub(super) original_claimed_head: u64,
}

/// An imported batch, kept to re-check if the next one does not link.
#[derive(Clone, Debug)]
pub(super) struct ImportedBatch {
    pub(super) start: u64,
    pub(super) count: u64,
    pub(super) peer: PeerId,
    pub(super) roots: Vec<Root>,
    pub(super) claimed_head: u64,
    /// It was itself a second download: not re-checked again.
    pub(super) rechecked: bool,
}

impl RangeSync {
    /// The highest head any suitable peer claims: enough to start waiting
    /// for support.
    pub(super) fn best_claimed_head(&self) -> Option<u64> {
        self.peers
            .values()
            .filter(|state| self.is_suitable(state))
            .map(|state| state.chain.head_slot)
            .max()
    }

    /// The target: the highest head that a proven peer claims or that
    /// [`CLAIM_SUPPORT_PEERS_MIN`] suitable peers reach; when nothing is
    /// supported, the highest claim, but only while lone claims are
    /// allowed. Never one liar's word while others disagree.
    pub(super) fn best_head(&self) -> Option<u64> {
        self.supported_head().or_else(|| {
            if self.lone_claims_allowed {
                self.best_claimed_head()
            } else {
                None
            }
        })
    }

    /// The highest head backed by proof or by [`CLAIM_SUPPORT_PEERS_MIN`] peers.
    fn supported_head(&self) -> Option<u64> {
        let mut heads: Vec<(u64, bool)> = self
            .peers
            .values()
            .filter(|state| self.is_suitable(state))
            .map(|state| (state.chain.head_slot, state.proven))
            .collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        heads
            .iter()
            .enumerate()
            .find(|(index, (_, proven))| *proven || *index >= CLAIM_SUPPORT_PEERS_MIN - 1)
            .map(|(_, (head, _))| *head)
    }

    /// Whether the answer to the batch holding its sender's claimed head
    /// slot disproves that claim: it is empty. Its head block lies in the
    /// range if its Status was true, and an honest server cut short by its
    /// byte budget still sends the first block (or an error, not an empty
    /// answer); only a reorg onto a fork with no block in all those slots
    /// could make an honest answer empty.
    pub(super) fn disproves_its_head(
        &self,
        start: u64,
        count: u64,
        blocks: &[SignedBlock],
    ) -> bool {
        let claimed = self.batches[&start].claimed_head;
        let holds_claim = claimed >= start && claimed < start.saturating_add(count);
        holds_claim && blocks.is_empty()
    }

    /// The batch at `start` does not link to our chain: the last non-empty
    /// batch before it and the empty ones after that may have withheld
    /// blocks. Queue them again, to be fetched from other peers.
    /// Whether any batch was queued again.
    pub(super) fn recheck_previous(&mut self, start: u64) -> bool {
        let mut rechecked = false;
        let mut expected_end = start;
        while let Some(last) = self.history.back() {
            let last_end = last.start.saturating_add(last.count);
            if last_end != expected_end
                || last.rechecked
                || last_end <= self.local.finalized_slot.saturating_add(1)
                || self.batches.len() >= BATCHES_MAX
            {
                break;
            }
            let last = self.history.pop_back().expect("checked above");
            expected_end = last.start;
            let non_empty = !last.roots.is_empty();
            let mut excluded = BTreeSet::new();
            excluded.insert(last.peer);
            self.batches.insert(
                last.start,
                Batch {
                    start: last.start,
                    count: last.count,
                    state: BatchState::Queued,
                    attempts: 0,
                    excluded,
                    claimed_head: 0,
                    recheck: Some(Recheck {
                        original_peer: last.peer,
                        original_roots: last.roots.into_iter().collect(),
                        original_claimed_head: last.claimed_head,
                    }),
                },
            );
            rechecked = true;
            if non_empty {
                break;
            }
        }
        rechecked
    }
}
