//! Sampling for `--report`: the world records every node's head slot and
//! peer count at each sampling instant its clock passes, and notes the
//! faults it injects, into [`crate::samples::Samples`].
//!
//! Off unless [`Sim::start_sampling`] is called. It only reads nodes, so
//! the trace hash is the same either way; the step loop pays one branch
//! per event while it is off.

use meshsync_core::{Duration, Instant};

use super::world::Sim;
use crate::samples::{FaultKind, NodeSample, Samples};
use crate::types::NodeIndex;

impl Sim {
    /// Starts recording a row every `interval` from time zero, and fault marks.
    pub fn start_sampling(&mut self, interval: Duration) {
        self.samples = Some(Box::new(Samples::new(interval)));
    }

    /// What was sampled so far, if sampling is on.
    pub fn samples(&self) -> Option<&Samples> {
        self.samples.as_deref()
    }

    /// Stops sampling and hands over what was sampled, the row of the
    /// current instant included if it falls on the interval.
    pub fn take_samples(&mut self) -> Option<Samples> {
        self.sample_before(self.now + Duration::from_micros(1));
        self.samples.take().map(|samples| *samples)
    }

    /// Records the rows of every sampling instant before `instant`: called
    /// before the clock moves there.
    pub(super) fn sample_before(&mut self, instant: Instant) {
        let Some(mut samples) = self.samples.take() else {
            return;
        };
        while let Some(at) = samples.due_before(instant) {
            let row = (0..self.nodes.len()).map(NodeIndex).map(|index| {
                let up = self.is_up(index);
                NodeSample {
                    head_slot: up.then(|| self.node(index).chain().head().slot),
                    // At most PEERS_MAX, far below u32::MAX.
                    peers: if up {
                        self.node(index).peer_count() as u32
                    } else {
                        0
                    },
                }
            });
            samples.record(at, row);
        }
        self.samples = Some(samples);
    }

    /// Notes a fault now, if sampling is on.
    pub(super) fn note_fault(&mut self, node: Option<NodeIndex>, kind: FaultKind) {
        let now = self.now;
        if let Some(samples) = self.samples.as_mut() {
            samples.note_fault(now, node, kind);
        }
    }
}
