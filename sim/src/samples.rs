//! What `--report` records while a world runs: every node's head slot and
//! peer count once per sampling interval, and the faults the world injected
//! (crashes, restarts, partitions), for [`crate::report`] to draw.
//!
//! # Design
//! Sampling only reads. The world ([`crate::Sim`]) asks [`Samples::due_before`]
//! before its clock moves to the next event's instant and records a row for
//! every sampling instant it passes; a row is the state after every event
//! due at or before that instant. Reading a node's head and peer count
//! changes nothing, draws no random number and hashes nothing, so a run's
//! trace hash is the same with sampling on or off (the report's tests check
//! it). Instants are virtual; no clock is read.
//!
//! # Limits
//! Rows hold one [`NodeSample`] per node that exists at the row's instant.
//! [`REPORT_SAMPLES_MAX`] bounds the node samples kept: a row that would
//! pass it first halves the rows kept (every other one goes) and doubles the
//! interval, so a long run keeps its whole span at a coarser step instead of
//! growing. [`FAULT_MARKS_MAX`] bounds the fault marks; later ones are
//! counted, not kept.

use meshsync_core::{Duration, Instant};

use crate::types::NodeIndex;

/// Node samples (one node at one instant) kept at most: 1,000 nodes
/// sampled every second for 10 min are 600,000, at 24 bytes each about
/// 14 MiB; this cap is four times that, 55 MiB at most.
pub const REPORT_SAMPLES_MAX: usize = 2_400_000;

/// The cap's arithmetic above assumes this size.
const _: () = assert!(std::mem::size_of::<NodeSample>() == 24);

/// Fault marks kept at most; every fault past it is counted in
/// [`Samples::faults_dropped`].
pub const FAULT_MARKS_MAX: usize = 100_000;

/// The sampling interval of `--report`, unless the cap doubled it.
pub const SAMPLE_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Gossip deliveries of a run, for the latency CDF: every delivery's
/// latency (publish command to notification) and how many deliveries
/// there would have been had every honest node received every message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deliveries {
    /// One latency per delivery, in the order they happened.
    pub latencies: Vec<Duration>,
    /// Published messages times the honest nodes each should reach.
    pub expected: u64,
}

/// One node at one sampling instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSample {
    /// Its head's slot (0: genesis); `None` while it is down.
    pub head_slot: Option<u64>,
    /// Its connected peers (0 while it is down).
    pub peers: u32,
}

/// What the world did to nodes from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The node was killed.
    Crash,
    /// The node started again from its disk.
    Restart,
    /// The network was split into groups (no node).
    Partition,
    /// The partition ended (no node).
    Heal,
}

/// A fault at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMark {
    /// When it happened.
    pub at: Instant,
    /// The node it happened to (`None` for the whole network).
    pub node: Option<NodeIndex>,
    /// What happened.
    pub kind: FaultKind,
}

/// The rows and fault marks of one run. See the module docs.
#[derive(Clone, Debug)]
pub struct Samples {
    interval: Duration,
    next_at: Instant,
    times: Vec<Instant>,
    /// Where each row starts in `values`; a row ends where the next starts.
    row_starts: Vec<usize>,
    values: Vec<NodeSample>,
    faults: Vec<FaultMark>,
    faults_dropped: u64,
    cap: usize,
}

impl Samples {
    /// Rows every `interval` from time zero, with the cap [`REPORT_SAMPLES_MAX`].
    ///
    /// # Panics
    /// If `interval` is zero or not a whole number of microseconds.
    pub fn new(interval: Duration) -> Samples {
        Samples::with_cap(interval, REPORT_SAMPLES_MAX)
    }

    /// Like [`Samples::new`], keeping at most `cap` node samples.
    pub fn with_cap(interval: Duration, cap: usize) -> Samples {
        assert!(
            interval.as_micros() > 0 && interval.subsec_nanos() % 1_000 == 0,
            "a sampling interval is a positive whole number of microseconds"
        );
        Samples {
            interval,
            next_at: Instant::ZERO,
            times: Vec::new(),
            row_starts: Vec::new(),
            values: Vec::new(),
            faults: Vec::new(),
            faults_dropped: 0,
            cap,
        }
    }

    /// The next sampling instant if it lies before `instant`: the world
    /// records that row now, before its clock moves to `instant`.
    pub fn due_before(&self, instant: Instant) -> Option<Instant> {
        (self.next_at < instant).then_some(self.next_at)
    }

    /// Records the row of instant `at` (the one [`Samples::due_before`] gave),
    /// one sample per node in node order, and moves to the next instant.
    pub fn record(&mut self, at: Instant, row: impl ExactSizeIterator<Item = NodeSample>) {
        debug_assert_eq!(at, self.next_at, "rows are recorded in order");
        if self.values.len() + row.len() > self.cap && self.times.len() > 1 {
            self.halve();
        }
        // The interval may have just doubled: an instant off the new grid is skipped.
        let interval_us = self.interval_us();
        if at.as_micros() % interval_us == 0 && self.values.len() + row.len() <= self.cap {
            self.times.push(at);
            self.row_starts.push(self.values.len());
            self.values.extend(row);
        }
        let next = (at.as_micros() / interval_us + 1).saturating_mul(interval_us);
        self.next_at = Instant::from_micros(next);
    }

    /// Keeps every other row, from the first, and doubles the interval.
    fn halve(&mut self) {
        let mut times = Vec::with_capacity(self.times.len() / 2 + 1);
        let mut row_starts = Vec::with_capacity(times.capacity());
        let mut values = Vec::with_capacity(self.values.len() / 2 + 1);
        for row in (0..self.times.len()).step_by(2) {
            times.push(self.times[row]);
            row_starts.push(values.len());
            values.extend_from_slice(self.row(row));
        }
        self.times = times;
        self.row_starts = row_starts;
        self.values = values;
        self.interval = self.interval.saturating_mul(2);
    }

    fn interval_us(&self) -> u64 {
        // Checked positive at construction; a doubled interval of 2^64 µs
        // would take longer than any run to reach.
        u64::try_from(self.interval.as_micros()).unwrap_or(u64::MAX)
    }

    /// Notes a fault at `at` (kept while fewer than [`FAULT_MARKS_MAX`] are).
    pub fn note_fault(&mut self, at: Instant, node: Option<NodeIndex>, kind: FaultKind) {
        if self.faults.len() < FAULT_MARKS_MAX {
            self.faults.push(FaultMark { at, node, kind });
        } else {
            self.faults_dropped += 1;
        }
    }

    /// The interval between rows now (the cap may have doubled it).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The rows' instants, in order.
    pub fn times(&self) -> &[Instant] {
        &self.times
    }

    /// Row `index`: one sample per node that existed then, in node order.
    pub fn row(&self, index: usize) -> &[NodeSample] {
        let start = self.row_starts[index];
        let end = self
            .row_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.values.len());
        &self.values[start..end]
    }

    /// Node samples kept, over all rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no row was recorded.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The fault marks, in the order they happened.
    pub fn faults(&self) -> &[FaultMark] {
        &self.faults
    }

    /// Faults not kept because [`FAULT_MARKS_MAX`] were.
    pub fn faults_dropped(&self) -> u64 {
        self.faults_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(peers: u32) -> NodeSample {
        NodeSample {
            head_slot: Some(u64::from(peers)),
            peers,
        }
    }

    fn record_until(samples: &mut Samples, end: Instant, nodes: usize) {
        while let Some(at) = samples.due_before(end) {
            let row: Vec<NodeSample> = (0..nodes).map(|n| sample(n as u32)).collect();
            samples.record(at, row.into_iter());
        }
    }

    #[test]
    fn rows_fall_on_the_interval_before_the_clock_passes_them() {
        let mut samples = Samples::new(Duration::from_secs(1));
        assert_eq!(
            samples.due_before(Instant::ZERO),
            None,
            "not before time zero has passed"
        );
        record_until(&mut samples, Instant::from_micros(3_000_000), 2);
        let seconds: Vec<u64> = samples
            .times()
            .iter()
            .map(|t| t.as_millis() / 1_000)
            .collect();
        assert_eq!(
            seconds,
            [0, 1, 2],
            "the row of 3 s waits for the clock to pass it"
        );
        assert_eq!(samples.row(1), [sample(0), sample(1)]);
        assert_eq!(samples.len(), 6);
    }

    #[test]
    fn rows_of_a_growing_world_grow_too() {
        let mut samples = Samples::new(Duration::from_secs(1));
        record_until(&mut samples, Instant::from_micros(1), 1);
        record_until(&mut samples, Instant::from_micros(1_000_001), 3);
        assert_eq!(samples.row(0).len(), 1);
        assert_eq!(samples.row(1).len(), 3);
    }

    #[test]
    fn the_cap_halves_the_rows_and_doubles_the_interval() {
        let mut samples = Samples::with_cap(Duration::from_secs(1), 10);
        record_until(&mut samples, Instant::from_micros(20_000_001), 2);
        assert!(samples.len() <= 10, "{} kept", samples.len());
        // Five rows fit; the sixth halves them (2 s), so do the rows of
        // 10 s (4 s) and of 20 s (8 s).
        assert_eq!(samples.interval(), Duration::from_secs(8));
        let seconds: Vec<u64> = samples
            .times()
            .iter()
            .map(|t| t.as_millis() / 1_000)
            .collect();
        assert_eq!(seconds, [0, 8, 16], "the whole span, coarser");
    }

    #[test]
    fn fault_marks_are_bounded_and_counted() {
        let mut samples = Samples::new(Duration::from_secs(1));
        for n in 0..FAULT_MARKS_MAX + 3 {
            samples.note_fault(Instant::ZERO, Some(NodeIndex(n)), FaultKind::Crash);
        }
        assert_eq!(samples.faults().len(), FAULT_MARKS_MAX);
        assert_eq!(samples.faults_dropped(), 3);
    }
}
