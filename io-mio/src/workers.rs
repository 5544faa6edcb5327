//! A pool of threads for the core's CPU work (`Action::Work`, e.g. BLS batch
//! verification), which wakes the driver's poll loop when a job is done.
//!
//! # Design
//! The driver thread owns the [`WorkerPool`]. [`WorkerPool::submit`] puts a
//! job on a bounded crossbeam channel; `threads` workers named
//! `meshsync-worker-N` take jobs from it, run them, send `(id, result)` back
//! on a second channel and call [`mio::Waker::wake`], so the poll loop
//! returns and drains [`WorkerPool::try_recv_result`]. The driver never
//! blocks on the pool: a full pool answers [`Full`] at once, with the job.
//!
//! A job that panics does not take its worker down and is never lost: the
//! panic is caught (`catch_unwind`), logged, counted
//! ([`WorkerPool::panicked_jobs`]) and returned as `Err(`[`JobPanicked`]`)`
//! under the job's id, so whoever waits for that id (the core tracks work in
//! flight like a request) hears an answer.
//!
//! Dropping the pool closes the job channel, makes workers skip jobs not yet
//! started, and joins every thread (waiting for jobs already running).
//!
//! # Limits
//! At most [`WORK_QUEUE_JOBS_MAX`] jobs are in flight (submitted, and their
//! results not yet received), so both channels are bounded and a worker's
//! send of a result never blocks.

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

/// Jobs in flight at most: queued, running, or done with the result not yet
/// received. The core must bound its own work in flight, tracked like a
/// request (design.md §1), well below this (a sync batch is one job), so
/// `Full` means a bug or a flood, never normal load.
pub const WORK_QUEUE_JOBS_MAX: usize = 1_024;
/// Most worker threads: each holds a stack, and there is no gain beyond the
/// cores of any machine we run on.
pub const WORKER_THREADS_MAX: usize = 256;

/// The pool has [`WORK_QUEUE_JOBS_MAX`] jobs in flight; the job is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<J>(pub J);

impl<J> fmt::Display for Full<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the worker pool has {WORK_QUEUE_JOBS_MAX} jobs in flight"
        )
    }
}

impl<J: fmt::Debug> std::error::Error for Full<J> {}

/// A job panicked; the result of its id is this instead of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPanicked {
    /// The panic message, when it was a string.
    pub message: String,
}

impl fmt::Display for JobPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job panicked: {}", self.message)
    }
}

impl std::error::Error for JobPanicked {}

/// What a job produced: its value, or the panic that ended it.
pub type JobResult<R> = Result<R, JobPanicked>;

/// Threads that run `run(job)` for submitted jobs (see the module docs).
pub struct WorkerPool<J, R> {
    /// `None` once dropping, which disconnects the workers.
    jobs: Option<Sender<(u64, J)>>,
    results: Receiver<(u64, JobResult<R>)>,
    threads: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    panicked_jobs: Arc<AtomicU64>,
    jobs_in_flight: usize,
}

impl<J, R> fmt::Debug for WorkerPool<J, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .field("jobs_in_flight", &self.jobs_in_flight)
            .finish_non_exhaustive()
    }
}

impl<J: Send + 'static, R: Send + 'static> WorkerPool<J, R> {
    /// Starts `threads` workers (1..=[`WORKER_THREADS_MAX`]; see
    /// [`default_threads`]) that run `run` on each job and wake `waker`
    /// after each one.
    pub fn new(
        threads: usize,
        run: fn(J) -> R,
        waker: Arc<mio::Waker>,
    ) -> io::Result<WorkerPool<J, R>> {
        if !(1..=WORKER_THREADS_MAX).contains(&threads) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("worker threads must be 1..={WORKER_THREADS_MAX}, not {threads}"),
            ));
        }
        let (job_sender, job_receiver) = crossbeam_channel::bounded(WORK_QUEUE_JOBS_MAX);
        let (result_sender, result_receiver) = crossbeam_channel::bounded(WORK_QUEUE_JOBS_MAX);
        let stopping = Arc::new(AtomicBool::new(false));
        let panicked_jobs = Arc::new(AtomicU64::new(0));
        let mut pool = WorkerPool {
            jobs: Some(job_sender),
            results: result_receiver,
            threads: Vec::with_capacity(threads),
            stopping: Arc::clone(&stopping),
            panicked_jobs: Arc::clone(&panicked_jobs),
            jobs_in_flight: 0,
        };
        for index in 0..threads {
            let worker = Worker {
                jobs: job_receiver.clone(),
                results: result_sender.clone(),
                run,
                waker: Arc::clone(&waker),
                stopping: Arc::clone(&stopping),
                panicked_jobs: Arc::clone(&panicked_jobs),
            };
            // On failure `pool` drops here, which joins the threads already started.
            let handle = thread::Builder::new()
                .name(format!("meshsync-worker-{index}"))
                .spawn(move || worker.run_until_disconnected())?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Queues `job` under `id` (ids are the caller's; the result comes back
    /// with it). Never blocks.
    pub fn submit(&mut self, id: u64, job: J) -> Result<(), Full<J>> {
        if self.jobs_in_flight >= WORK_QUEUE_JOBS_MAX {
            return Err(Full(job));
        }
        // Cannot be None: only Drop takes the sender.
        let jobs = self.jobs.as_ref().expect("the pool is not dropping");
        match jobs.try_send((id, job)) {
            Ok(()) => {
                self.jobs_in_flight += 1;
                Ok(())
            }
            // Cannot be full: fewer than WORK_QUEUE_JOBS_MAX jobs are in flight.
            // Cannot be disconnected: the workers hold the receiver until Drop.
            Err(error) => unreachable!(
                "the job channel refused a job with {} in flight: {error}",
                self.jobs_in_flight
            ),
        }
    }

    /// A finished job's id and result, if one is ready. Call it until `None`
    /// whenever the waker fires.
    pub fn try_recv_result(&mut self) -> Option<(u64, JobResult<R>)> {
        let result = self.results.try_recv().ok()?;
        debug_assert!(self.jobs_in_flight > 0);
        self.jobs_in_flight -= 1;
        Some(result)
    }

    /// Jobs submitted whose results have not been received yet.
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs_in_flight
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Jobs that panicked since the pool started.
    pub fn panicked_jobs(&self) -> u64 {
        self.panicked_jobs.load(Ordering::Relaxed)
    }
}

impl<J, R> Drop for WorkerPool<J, R> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Disconnects the job channel: each worker's `recv` fails once it is empty.
        self.jobs = None;
        for handle in self.threads.drain(..) {
            // A worker catches its jobs' panics, so a join error is a bug in the
            // worker loop itself; there is nothing left to clean up either way.
            if handle.join().is_err() {
                log::error!("a worker thread panicked outside a job");
            }
        }
    }
}

/// The number of threads a pool should have by default: one per core.
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map_or(1, |threads| threads.get())
        .min(WORKER_THREADS_MAX)
}

/// One worker thread's share of the pool.
struct Worker<J, R> {
    jobs: Receiver<(u64, J)>,
    results: Sender<(u64, JobResult<R>)>,
    run: fn(J) -> R,
    waker: Arc<mio::Waker>,
    stopping: Arc<AtomicBool>,
    panicked_jobs: Arc<AtomicU64>,
}

impl<J, R> Worker<J, R> {
    fn run_until_disconnected(self) {
        while let Ok((id, job)) = self.jobs.recv() {
            if self.stopping.load(Ordering::Relaxed) {
                // The pool is dropping: nobody will read the result.
                continue;
            }
            let run = self.run;
            let result = panic::catch_unwind(AssertUnwindSafe(|| run(job))).map_err(|payload| {
                self.panicked_jobs.fetch_add(1, Ordering::Relaxed);
                let message = panic_message(payload.as_ref());
                log::error!("work job {id} panicked: {message}");
                JobPanicked { message }
            });
            // Cannot block: at most WORK_QUEUE_JOBS_MAX results are outstanding.
            // Disconnected only while the pool drops, when results are unwanted.
            if self.results.try_send((id, result)).is_err() {
                debug_assert!(self.stopping.load(Ordering::Relaxed));
                continue;
            }
            if let Err(error) = self.waker.wake() {
                log::error!("worker cannot wake the poll loop: {error}");
            }
        }
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    const WAKER: Token = Token(7);
    /// How long a test waits for results before failing (never reached when it passes).
    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    fn square(value: u64) -> u64 {
        value * value
    }

    fn thread_name(_: ()) -> String {
        thread::current().name().unwrap_or("").to_string()
    }

    fn panic_on_odd(value: u64) -> u64 {
        assert!(value.is_multiple_of(2), "odd job {value}");
        value
    }

    /// Polls (waking only through the waker) until `count` results arrived.
    fn collect<J: Send + 'static, R: Send + 'static>(
        poll: &mut Poll,
        pool: &mut WorkerPool<J, R>,
        count: usize,
    ) -> BTreeMap<u64, JobResult<R>> {
        let mut results = BTreeMap::new();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + TEST_TIMEOUT;
        while results.len() < count {
            let now = Instant::now();
            assert!(now < deadline, "only {} of {count} results", results.len());
            poll.poll(&mut events, Some(deadline - now)).unwrap();
            if events.iter().any(|event| event.token() == WAKER) {
                while let Some((id, result)) = pool.try_recv_result() {
                    assert!(results.insert(id, result).is_none(), "id {id} twice");
                }
            }
        }
        results
    }

    fn poll_and_waker() -> (Poll, Arc<mio::Waker>) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        (poll, waker)
    }

    #[test]
    fn every_result_comes_back_with_its_id_on_one_or_many_threads() {
        for threads in [1, 4] {
            let (mut poll, waker) = poll_and_waker();
            let mut pool = WorkerPool::new(threads, square, waker).unwrap();
            assert_eq!(pool.threads(), threads);
            for id in 0..200 {
                pool.submit(id, id + 1).unwrap();
            }
            let results = collect(&mut poll, &mut pool, 200);
            for id in 0..200 {
                assert_eq!(results[&id], Ok((id + 1) * (id + 1)));
            }
            assert_eq!(pool.jobs_in_flight(), 0);
            assert!(pool.try_recv_result().is_none());
        }
    }

    #[test]
    fn the_waker_fires_for_a_finished_job() {
        let (mut poll, waker) = poll_and_waker();
        let mut pool = WorkerPool::new(2, square, waker).unwrap();
        pool.submit(42, 3).unwrap();
        let mut events = Events::with_capacity(8);
        // Without the waker this would sleep the whole timeout and fail below.
        poll.poll(&mut events, Some(TEST_TIMEOUT)).unwrap();
        assert!(events.iter().any(|event| event.token() == WAKER));
        // The result is sent before the wake, so it is there now.
        assert_eq!(pool.try_recv_result(), Some((42, Ok(9))));
    }

    #[test]
    fn workers_are_named() {
        let (mut poll, waker) = poll_and_waker();
        let mut pool = WorkerPool::new(3, thread_name, waker).unwrap();
        for id in 0..30 {
            pool.submit(id, ()).unwrap();
        }
        for (_, name) in collect(&mut poll, &mut pool, 30) {
            let name = name.unwrap();
            let index: usize = name
                .strip_prefix("meshsync-worker-")
                .unwrap()
                .parse()
                .unwrap();
            assert!(index < 3, "{name}");
        }
    }

    #[test]
    fn a_panicking_job_is_an_error_result_and_the_pool_goes_on() {
        let (mut poll, waker) = poll_and_waker();
        let mut pool = WorkerPool::new(2, panic_on_odd, waker).unwrap();
        for id in 0..10 {
            pool.submit(id, id).unwrap();
        }
        let results = collect(&mut poll, &mut pool, 10);
        for (id, result) in results {
            if id.is_multiple_of(2) {
                assert_eq!(result, Ok(id));
            } else {
                assert!(result.unwrap_err().message.contains("odd job"));
            }
        }
        assert_eq!(pool.panicked_jobs(), 5);
        pool.submit(100, 100).unwrap();
        assert_eq!(collect(&mut poll, &mut pool, 1)[&100], Ok(100));
    }

    #[test]
    fn a_full_pool_hands_the_job_back() {
        fn wait(gate: Receiver<()>) {
            let _ = gate.recv();
        }
        let (mut poll, waker) = poll_and_waker();
        let (open, gate) = crossbeam_channel::unbounded::<()>();
        let mut pool = WorkerPool::new(1, wait, waker).unwrap();
        for id in 0..WORK_QUEUE_JOBS_MAX as u64 {
            pool.submit(id, gate.clone()).unwrap();
        }
        let refused = pool.submit(u64::MAX, gate.clone()).unwrap_err();
        assert!(refused.to_string().contains("in flight"));
        drop(refused);
        // Disconnecting the gate releases every job.
        drop(open);
        drop(gate);
        collect(&mut poll, &mut pool, WORK_QUEUE_JOBS_MAX);
        pool.submit(0, crossbeam_channel::unbounded().1).unwrap();
    }

    #[test]
    fn dropping_the_pool_joins_running_jobs() {
        let (_poll, waker) = poll_and_waker();
        let finished = Arc::new(AtomicU64::new(0));
        let (open, gate) = crossbeam_channel::bounded::<()>(1);
        let (started_sender, started) = crossbeam_channel::bounded::<()>(1);
        // The job tells the test it is running, so drop finds it mid-job.
        fn announce(job: (Sender<()>, Receiver<()>, Arc<AtomicU64>)) {
            let (started, gate, finished) = job;
            started.send(()).unwrap();
            let _ = gate.recv();
            finished.fetch_add(1, Ordering::SeqCst);
        }
        let mut pool = WorkerPool::new(1, announce, waker).unwrap();
        pool.submit(1, (started_sender, gate, Arc::clone(&finished)))
            .unwrap();
        started.recv().unwrap();
        open.send(()).unwrap();
        drop(pool);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "drop waited for the job"
        );
        assert_eq!(Arc::strong_count(&finished), 1, "every worker is gone");
    }

    #[test]
    fn thread_counts_are_checked() {
        let (_poll, waker) = poll_and_waker();
        assert!(WorkerPool::new(0, square, Arc::clone(&waker)).is_err());
        assert!(WorkerPool::new(WORKER_THREADS_MAX + 1, square, waker).is_err());
        assert!((1..=WORKER_THREADS_MAX).contains(&default_threads()));
    }
}
