//! What a driver is started with ([`DriverOptions`], [`ClockPolicy`],
//! [`DriverFaults`]) and what it counts ([`WorkStats`], [`PersistStats`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use crate::store::DiskFaults;

use super::{RecordOptions, STORE_FAILING_EXIT_AFTER_DEFAULT};

/// How a driver runs its node's work and storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Worker threads for `Action::Work` (1..=`WORKER_THREADS_MAX`).
    pub workers: usize,
    /// Where the block store lives; `None`: memory only, nothing survives a restart.
    pub data_dir: Option<PathBuf>,
    /// A damaged store is moved aside and what can be read of it kept
    /// ([`BlockStore::repair`](crate::store::BlockStore::repair)), instead of refusing to start.
    pub repair: bool,
    /// How long the store may refuse writes before the driver stops with an error.
    pub store_failing_exit_after: Duration,
    /// What to do when the wall clock jumps.
    pub clock: ClockPolicy,
    /// Start a proposer key whose signing watermark is missing from the
    /// store although the store holds blocks it signed (beyond genesis).
    /// Without it such a start is refused ([`super::StartError::Watermark`]):
    /// the key may have signed later slots on another machine.
    pub accept_fresh_watermark: bool,
    /// How often to log the status line (peers, head and finalized slots,
    /// sync); `None`: never.
    pub status_interval: Option<Duration>,
    /// Record every input the core is handed, with the node's seed,
    /// identity and configuration, for `meshsync-sim replay`; `None`: no
    /// recording. See [`RecordOptions`].
    pub record: Option<RecordOptions>,
    /// Faults injected into the disk and the clock (tests).
    pub faults: DriverFaults,
}

impl Default for DriverOptions {
    /// One worker per core, memory only.
    fn default() -> DriverOptions {
        DriverOptions {
            workers: crate::workers::default_threads(),
            data_dir: None,
            repair: false,
            store_failing_exit_after: STORE_FAILING_EXIT_AFTER_DEFAULT,
            clock: ClockPolicy::Rebase,
            accept_fresh_watermark: false,
            status_interval: None,
            record: None,
            faults: DriverFaults::default(),
        }
    }
}

/// What the driver does when the wall clock jumps beyond
/// [`CLOCK_JUMP_TOLERANCE`](super::CLOCK_JUMP_TOLERANCE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClockPolicy {
    /// Trust the new wall clock: re-base the slot clock on it.
    #[default]
    Rebase,
    /// Do not produce until the wall clock is back where the monotonic
    /// clock says it should be (the operator fixed it).
    Refuse,
}

/// Faults a test injects into a driver's disk, clock and workers.
#[derive(Clone, Debug, Default)]
pub struct DriverFaults {
    /// Faults in the block store's file.
    pub disk: Option<Arc<DiskFaults>>,
    /// Milliseconds added to every wall-clock reading (may be negative).
    pub clock_skew_ms: Option<Arc<AtomicI64>>,
    /// The next this-many jobs handed to the worker pool panic there, as a
    /// bug in our own code would (counted down as they are submitted).
    pub failing_jobs: Option<Arc<AtomicU64>>,
}

impl PartialEq for DriverFaults {
    fn eq(&self, other: &DriverFaults) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        same(&self.disk, &other.disk)
            && same(&self.clock_skew_ms, &other.clock_skew_ms)
            && same(&self.failing_jobs, &other.failing_jobs)
    }
}

impl Eq for DriverFaults {}

/// What the driver did with the core's work, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// Jobs handed to the worker pool.
    pub submitted: u64,
    /// Jobs run on the loop thread because the pool was full.
    pub inline: u64,
    /// Jobs that panicked (answered to the core as a failed verification).
    pub panicked: u64,
}

/// What the driver did with the core's persist batches, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistStats {
    /// Batches acknowledged to the core (written, or memory-only).
    pub batches: u64,
    /// Blocks written to the store.
    pub blocks: u64,
    /// Blocks deleted from the store.
    pub deleted: u64,
    /// Commits that failed (and were retried).
    pub failures: u64,
    /// Sum of commit latencies, microseconds.
    pub commit_micros_total: u64,
    /// Slowest commit, microseconds.
    pub commit_micros_max: u64,
    /// Blocks found in the store at start-up and handed to the core.
    pub loaded: u64,
    /// Stored blocks that did not decode at start-up (logged and skipped).
    pub skipped: u64,
    /// Reads of finalized history for the core (`Action::ReadBlocks`).
    pub reads: u64,
    /// Blocks those reads returned.
    pub blocks_read: u64,
    /// Times the store was reopened after a failure.
    pub reopened: u64,
    /// Peer store snapshots written (`Action::PersistPeers`).
    pub peer_snapshots: u64,
    /// Peer store snapshots that failed to write (each a WARN).
    pub peer_snapshot_failures: u64,
    /// Records in the last peer store snapshot written.
    pub peer_records: u64,
}
