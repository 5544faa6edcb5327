//! Peer choice: the peers we hear, which are suitable, which one serves the
//! next batch, and which is evicted when the table is full.

use std::collections::BTreeSet;

use rand_core::RngCore;

use super::actions::PeerChain;
use super::batch::BatchState;
use super::config::SYNC_PEERS_MAX;
use super::RangeSync;
use crate::identity::PeerId;
use crate::peer::score::Score;
use crate::time::Instant;

#[derive(Clone, Debug)]
pub(super) struct PeerState {
    pub(super) chain: PeerChain,
    pub(super) score: Score,
    /// Seeded tie-break between peers of equal rank.
    pub(super) tiebreak: u64,
    pub(super) in_flight: usize,
    /// Requests it was sent: among equals, the one asked least goes next,
    /// so batches spread over peers even when few are in flight at once.
    pub(super) asked: u64,
    /// The adaptive window, 1..=requests_per_peer_max.
    pub(super) window: usize,
    /// Its claims failed to carry a round: ignored until it sends a new Status.
    pub(super) stale: bool,
    /// It served blocks that imported: its claims are backed by proof.
    pub(super) proven: bool,
    /// Its own answer disproved its claimed head: ignored until then.
    pub(super) disproven_until: Instant,
}

impl RangeSync {
    /// A peer's Status (on connect and whenever it sends a new one), with its
    /// current score.
    pub fn handle_peer_status(
        &mut self,
        now: Instant,
        peer: PeerId,
        chain: PeerChain,
        score: Score,
    ) {
        self.advance(now);
        if let Some(state) = self.peers.get_mut(&peer) {
            if state.chain != chain {
                state.stale = false;
            }
            state.chain = chain;
            state.score = score;
        } else {
            if self.peers.len() >= SYNC_PEERS_MAX && !self.evict_peer_for(score) {
                return;
            }
            let tiebreak = self.rng.next_u64();
            self.peers.insert(
                peer,
                PeerState {
                    chain,
                    score,
                    tiebreak,
                    in_flight: 0,
                    asked: 0,
                    window: self.config.requests_per_peer_max,
                    stale: false,
                    proven: false,
                    disproven_until: Instant::ZERO,
                },
            );
        }
        self.update_mode(now);
    }

    /// A block that `peer` gossiped verified (a proposer's signature over
    /// it) at `slot`, above our head by more than the sync distance: a chain
    /// beyond our reach exists, and `peer` holds it. Its claim is then
    /// believed like one proven by imports. Without this, a follower behind
    /// a proposer whose other peers are behind too never believes the only
    /// peer ahead (a lone claim is tried only when it is the only peer we
    /// hear). A forger without a proposer key cannot make such a block; a
    /// claim it then fails to serve is disproved as any other.
    pub fn handle_peer_block_verified(&mut self, now: Instant, peer: PeerId, slot: u64) {
        self.advance(now);
        let beyond_reach = slot
            > self
                .local
                .head_slot
                .saturating_add(self.config.sync_distance_slots);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if !beyond_reach || state.proven || state.disproven_until > now {
            return;
        }
        state.proven = true;
        self.update_mode(now);
    }

    /// A peer disconnected: its requests are queued again (not its fault,
    /// no attempt counted).
    pub fn handle_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        if self.peers.remove(&peer).is_none() {
            return;
        }
        let lost: Vec<u64> = self
            .batches
            .values()
            .filter(
                |batch| matches!(batch.state, BatchState::Downloading { peer: p, .. } if p == peer),
            )
            .map(|batch| batch.start)
            .collect();
        for start in lost {
            self.requeue(start, None);
        }
        self.update_mode(now);
    }

    /// Whether `state` can serve a round from our chain: its claims are
    /// consistent and allowed by the clock, not disproven, ahead of us, and
    /// finalized on our checkpoint or further along. A finalized checkpoint
    /// ahead of ours only lets a peer serve batches (each answer is checked
    /// and can disprove it); it never ranks the peer or sets a target.
    pub(super) fn is_suitable(&self, state: &PeerState) -> bool {
        let chain = &state.chain;
        let same_finality = chain.finalized_slot == self.local.finalized_slot
            && self
                .local
                .finalized_root
                .is_none_or(|root| root == chain.finalized_root);
        !state.stale
            && state.disproven_until <= self.last_now
            && chain.head_slot <= self.slot_max
            && chain.finalized_slot <= chain.head_slot
            && chain.head_slot > self.local.head_slot
            && (same_finality || chain.finalized_slot > self.local.finalized_slot)
    }

    /// The least loaded of the best peers that can serve `start`, preferring
    /// those that have not failed this batch.
    pub(super) fn choose_peer(&self, start: u64, excluded: &BTreeSet<PeerId>) -> Option<PeerId> {
        self.peers
            .iter()
            .filter(|(_, state)| {
                self.is_suitable(state)
                    && state.chain.head_slot >= start
                    && state.in_flight < state.window
            })
            .min_by_key(|(peer, state)| {
                (
                    excluded.contains(*peer),
                    state.in_flight,
                    std::cmp::Reverse(state.score),
                    // Proof, not a claimed finality, ranks equal peers.
                    !state.proven,
                    state.asked,
                    state.tiebreak,
                )
            })
            .map(|(peer, _)| *peer)
    }

    /// Room for a new peer when the table is full: drops the lowest-ranked
    /// idle peer if it ranks below `score`.
    fn evict_peer_for(&mut self, score: Score) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(_, state)| state.in_flight == 0 && state.score < score)
            .min_by_key(|(_, state)| (state.score, state.chain.head_slot, state.tiebreak))
            .map(|(peer, _)| *peer);
        match victim {
            Some(peer) => {
                self.peers.remove(&peer);
                true
            }
            None => false,
        }
    }
}
