//! The core's CPU work on the worker pool: `Action::Work` in, finished jobs
//! back as `Input::WorkDone` every turn; a full pool runs a job inline
//! rather than leave the core waiting.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::work::{Job, WorkId, WorkOutput};
use meshsync_core::Input;

use crate::workers::Full;

use super::Driver;

// The core's own bound on work in flight keeps the pool from filling up:
// `Full` (and an inline job) means a bug or several nodes on one pool.
const _: () =
    assert!(meshsync_core::node::WORK_IN_FLIGHT_MAX < crate::workers::WORK_QUEUE_JOBS_MAX);

/// A job on its way to a worker.
pub(super) struct PoolJob {
    job: Job,
    /// Injected fault ([`crate::DriverFaults::failing_jobs`]): panic instead.
    panics: bool,
}

/// Runs a pool job and says how long it took: the worker thread's own
/// timing, so the verification-batch histogram leaves out the queueing.
pub(super) fn run_pool_job(job: PoolJob) -> (WorkOutput, Duration) {
    assert!(!job.panics, "injected fault: a worker job panics");
    run_timed(job.job)
}

/// Runs `job` and says how long it took.
fn run_timed(job: Job) -> (WorkOutput, Duration) {
    let started = StdInstant::now();
    let output = job.run();
    (output, started.elapsed())
}

impl Driver {
    pub(super) fn submit_work(&mut self, id: WorkId, job: Job) {
        let panics = self.failing_jobs.as_ref().is_some_and(|left| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        });
        match self.workers.submit(id.0, PoolJob { job, panics }) {
            Ok(()) => self.work_stats.submitted += 1,
            Err(Full(PoolJob { job, .. })) => {
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

    /// Feeds every finished job back to the core: its output, or, for a job
    /// that panicked (our bug, never a peer's), `Input::WorkFailed`.
    pub(super) fn drain_work(&mut self) {
        while let Some((id, result)) = self.workers.try_recv_result() {
            match result {
                Ok((output, took)) => {
                    if let Some(metrics) = self.observer.metrics() {
                        metrics.observe_verification_batch(took);
                    }
                    self.feed(Input::WorkDone {
                        id: WorkId(id),
                        output,
                    });
                }
                Err(panicked) => {
                    // The pool logged the panic. The core frees the job's
                    // slot, blames no peer, and fetches or waits again.
                    log::error!(
                        "[{:?}] work {id} failed: {panicked}; the node fetches its blocks again",
                        self.peer_id
                    );
                    self.feed(Input::WorkFailed { id: WorkId(id) });
                }
            }
        }
    }
}
