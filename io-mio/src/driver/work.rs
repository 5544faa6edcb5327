//! The core's CPU work on the worker pool: `Action::Work` in, finished jobs
//! back as `Input::WorkDone` every turn; a full pool runs a job inline
//! rather than leave the core waiting.

use std::time::{Duration, Instant as StdInstant};

use meshsync_core::work::{Job, WorkId, WorkOutput};
use meshsync_core::Input;

use crate::workers::Full;

use super::Driver;

// The core's own bound on work in flight keeps the pool from filling up:
// `Full` (and an inline job) means a bug or several nodes on one pool.
const _: () =
    assert!(meshsync_core::node::WORK_IN_FLIGHT_MAX < crate::workers::WORK_QUEUE_JOBS_MAX);

/// Runs `job` and says how long it took: the worker thread's own timing,
/// so the verification-batch histogram leaves out the queueing.
pub(super) fn run_timed(job: Job) -> (WorkOutput, Duration) {
    let started = StdInstant::now();
    let output = job.run();
    (output, started.elapsed())
}

impl Driver {
    pub(super) fn submit_work(&mut self, id: WorkId, job: Job) {
        match self.workers.submit(id.0, job) {
            Ok(()) => self.work_stats.submitted += 1,
            Err(Full(job)) => {
                // The core bounds its work in flight far below the pool's
                // cap, so this is a flood or a bug. Running the job here
                // stalls the loop for its length, but dropping it would
                // leave the core waiting for an answer that never comes.
                log::warn!(
                    "[{:?}] worker pool full: running work {} inline",
                    self.peer_id,
                    id.0
                );
                self.work_stats.inline += 1;
                let (output, took) = run_timed(job);
                if let Some(metrics) = self.observer.metrics() {
                    metrics.observe_verification_batch(took);
                }
                self.feed(Input::WorkDone { id, output });
            }
        }
    }

    /// Feeds every finished job back to the core.
    pub(super) fn drain_work(&mut self) {
        while let Some((id, result)) = self.workers.try_recv_result() {
            let output = match result {
                Ok((output, took)) => {
                    if let Some(metrics) = self.observer.metrics() {
                        metrics.observe_verification_batch(took);
                    }
                    output
                }
                Err(panicked) => {
                    // The pool logged the panic. The job's blocks are gone
                    // with it, so the core gets a failed verification of no
                    // blocks: it frees the job's slot and imports nothing
                    // (a gossiped block gets no verdict and times out in the
                    // router). Range sync reads it as a bad batch and
                    // penalises the batch's peer, for our bug; a
                    // `WorkFailed` input in the core would avoid that.
                    log::error!(
                        "[{:?}] work {id} failed: {panicked}; answered as a failed verification",
                        self.peer_id
                    );
                    WorkOutput::VerifiedBlocks {
                        blocks: Vec::new(),
                        result: Err(Vec::new()),
                    }
                }
            };
            self.feed(Input::WorkDone {
                id: WorkId(id),
                output,
            });
        }
    }
}
