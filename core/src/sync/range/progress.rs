//! Progress reporting: the periodic [`SyncProgress`] with rates, ETA and why
//! the round waits for peers.

use super::actions::SyncAction;
use super::{Mode, RangeSync};
use crate::time::{Duration, Instant};

/// Sync progress, for the user and the metrics.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct SyncProgress {
    /// Our head's slot.
    pub head_slot: u64,
    /// The slot we are syncing to.
    pub target_slot: u64,
    /// Blocks imported per second, smoothed.
    pub blocks_per_second: f64,
    /// Time left at the current speed, if it is moving.
    pub eta: Option<Duration>,
    /// Set while the round waits for peers instead of fetching: why.
    pub waiting: Option<PeerWait>,
}

/// Why range sync is not fetching yet, for the operator: the peers it has
/// and needs, and when it starts with fewer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct PeerWait {
    /// Peers ahead of us whose Status is usable (see the module docs).
    pub suitable: usize,
    /// Peers needed to start now.
    pub needed: usize,
    /// Time until one suitable peer is enough, if that is still ahead.
    pub fewer_in: Option<Duration>,
    /// Time until a given-up round may start again, if that is still ahead.
    pub retry_in: Option<Duration>,
}

impl std::fmt::Display for PeerWait {
    /// One line for the operator, e.g. `1 suitable peer of 3 needed,
    /// starting with 1 in 25 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.suitable == 1 { "" } else { "s" };
        write!(
            f,
            "{} suitable peer{plural} of {} needed",
            self.suitable, self.needed
        )?;
        if let Some(fewer_in) = self.fewer_in {
            write!(
                f,
                ", starting with 1 in {} s",
                fewer_in.as_secs_f64().ceil()
            )?;
        }
        if let Some(retry_in) = self.retry_in {
            write!(
                f,
                ", retrying a given-up round in {} s",
                retry_in.as_secs_f64().ceil()
            )?;
        }
        if self.suitable == 0 {
            // What "suitable" asks, so the operator can tell what is missing.
            write!(
                f,
                " (a suitable peer is ahead of us, believed, and on our finalized chain)"
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ProgressState {
    pub(super) last_at: Option<Instant>,
    pub(super) blocks_since: u64,
    pub(super) head_at_last: u64,
    pub(super) blocks_per_second: f64,
    pub(super) slots_per_second: f64,
}

impl RangeSync {
    pub(super) fn poll_progress(&mut self, now: Instant) -> Option<SyncAction> {
        if self.mode == Mode::Idle {
            return None;
        }
        let Some(last_at) = self.progress.last_at else {
            self.progress.last_at = Some(now);
            self.progress.head_at_last = self.local.head_slot;
            self.progress.blocks_since = 0;
            return Some(self.progress_report());
        };
        let elapsed = now.saturating_duration_since(last_at);
        if elapsed < self.config.progress_interval {
            return None;
        }
        let seconds = elapsed.as_secs_f64();
        let blocks_rate = self.progress.blocks_since as f64 / seconds;
        let slots_rate = self
            .local
            .head_slot
            .saturating_sub(self.progress.head_at_last) as f64
            / seconds;
        // Smooth over two intervals: steady enough to read, quick to follow.
        self.progress.blocks_per_second = (self.progress.blocks_per_second + blocks_rate) / 2.0;
        self.progress.slots_per_second = (self.progress.slots_per_second + slots_rate) / 2.0;
        self.progress.last_at = Some(now);
        self.progress.head_at_last = self.local.head_slot;
        self.progress.blocks_since = 0;
        Some(self.progress_report())
    }

    fn progress_report(&self) -> SyncAction {
        let remaining = self.target_slot.saturating_sub(self.local.head_slot);
        let eta = (self.progress.slots_per_second > 0.0).then(|| {
            Duration::from_secs_f64((remaining as f64 / self.progress.slots_per_second).min(1e9))
        });
        SyncAction::Progress(SyncProgress {
            head_slot: self.local.head_slot,
            target_slot: self.target_slot,
            blocks_per_second: self.progress.blocks_per_second,
            eta,
            waiting: self.peer_wait(),
        })
    }

    /// Why the round waits, while it does.
    fn peer_wait(&self) -> Option<PeerWait> {
        let Mode::AwaitingPeers { since } = self.mode else {
            return None;
        };
        let now = self.last_now;
        let wait_end = since.saturating_add(self.config.peers_wait);
        let waited = now >= wait_end;
        let ahead = |at: Instant| (at > now).then(|| at.saturating_duration_since(now));
        Some(PeerWait {
            suitable: self
                .peers
                .values()
                .filter(|state| self.is_suitable(state))
                .count(),
            needed: if waited { 1 } else { self.config.peers_min },
            fewer_in: (self.config.peers_min > 1)
                .then(|| ahead(wait_end))
                .flatten(),
            retry_in: ahead(self.retry_not_before),
        })
    }
}
