//! The store's own thread: every call into the block store (commits with
//! their fsync, reads of history, peer store snapshots, file checks,
//! reopening) runs here, in the order the loop asked for it, so a commit
//! never stalls the connections. The loop keeps every decision: what to
//! write next, `store_failing`, backoff, health (`persistence.rs`).
//!
//! ```text
//!  poll loop ── StoreJob ──► bounded FIFO ──► store thread (owns BlockStore)
//!  poll loop ◄── StoreDone ◄── channel ◄────── (then wakes the loop)
//! ```
//!
//! The loop sends at most one commit at a time and waits for its answer
//! before the next, so batches land in order and `Input::Persisted` still
//! follows a durable commit. Reads of history, snapshots and file checks
//! queue behind it in the same FIFO.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Sender};
use meshsync_core::chain::{Root, SignedBlock};
use meshsync_core::peerstore::KnownPeers;
use meshsync_core::work::{BlockRead, PersistBatch};
use mio::Waker;

use crate::store::{BlockStore, StoreError, StoreOptions};

/// Jobs the store thread may hold at once: one commit, the core's open
/// history reads (`HISTORY_READS_MAX`), a snapshot, a file check and a
/// reopen, with room to spare. The loop sends a commit, a snapshot or a
/// check only when the one before it was answered, so while the disk hangs
/// nothing piles up; a send never waits either way (see
/// [`StoreThread::send`]).
pub const STORE_JOBS_MAX: usize = 32;

/// What a failed file check says it was doing (the loop clears its
/// one-check-at-a-time flag on it).
pub(super) const FILE_CHECK_CONTEXT: &str = "file check";

const _: () = assert!(STORE_JOBS_MAX >= 4 + meshsync_core::node::HISTORY_READS_MAX);

/// What the loop asks of the store.
pub(super) enum StoreJob {
    /// Write this batch in one durable transaction (after checking that the
    /// file is still the one opened).
    Commit(Box<PersistBatch>),
    /// Read finalized history for the core.
    Read(BlockRead),
    /// Replace the peer store.
    SavePeers(Box<KnownPeers>),
    /// Is the file still the one opened?
    CheckFile,
    /// Open the store again after a failure closed it.
    Reopen,
}

/// What the store thread reports back.
pub(super) enum StoreDone {
    /// The batch is durable.
    Committed {
        id: u64,
        blocks: usize,
        deleted: usize,
        took: Duration,
    },
    /// The store refused (`context` says what was tried); it is closed now.
    /// A batch that was not written comes back, to be written later.
    Failed {
        context: String,
        cause: String,
        batch: Option<Box<PersistBatch>>,
    },
    /// A read of history: the blocks that decoded, and whether that is all
    /// the range holds.
    Read {
        id: u64,
        blocks: Vec<SignedBlock>,
        complete: bool,
    },
    /// A peer store snapshot was written (or why not: a warning only).
    PeersSaved {
        records: usize,
        result: Result<(), String>,
    },
    /// The store is open again (with its path, for the log).
    Reopened(PathBuf),
    /// The file is still the one opened (or the store is closed already).
    FileChecked,
}

/// The loop's end of the store thread.
pub(super) struct StoreThread {
    jobs: Option<Sender<StoreJob>>,
    done: Receiver<StoreDone>,
    thread: Option<JoinHandle<()>>,
}

impl StoreThread {
    /// Starts the thread with `store`, reopening it from `dir` with
    /// `options` when asked; it wakes the loop through `waker` after each
    /// answer.
    pub(super) fn spawn(
        store: BlockStore,
        dir: PathBuf,
        options: StoreOptions,
        waker: Arc<Waker>,
    ) -> std::io::Result<StoreThread> {
        let (jobs, job_receiver) = crossbeam_channel::bounded(STORE_JOBS_MAX);
        let (done_sender, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("meshsync-store".to_string())
            .spawn(move || {
                let mut worker = Worker {
                    store: Some(store),
                    dir,
                    options,
                };
                for job in job_receiver {
                    let answer = worker.run(job);
                    if let Some(answer) = answer {
                        if done_sender.send(answer).is_err() {
                            return; // The loop is gone.
                        }
                        // A failed wake leaves the answer for the next turn.
                        let _ = waker.wake();
                    }
                }
            })?;
        Ok(StoreThread {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Queues `job`, never waiting; gives it back if the queue is full
    /// (not expected: see [`STORE_JOBS_MAX`]) or the thread is gone (joined
    /// at exit, or it panicked), so a batch stays unwritten and is reported.
    pub(super) fn send(&self, job: StoreJob) -> Result<(), StoreJob> {
        match &self.jobs {
            Some(jobs) => jobs.try_send(job).map_err(|error| error.into_inner()),
            None => Err(job),
        }
    }

    /// An answer, if one is ready.
    pub(super) fn try_recv(&self) -> Option<StoreDone> {
        self.done.try_recv().ok()
    }

    /// Waits for an answer until `deadline` (at exit only).
    pub(super) fn recv_until(&self, deadline: StdInstant) -> Option<StoreDone> {
        self.done.recv_deadline(deadline).ok()
    }

    /// Lets the thread finish its queue and waits for it.
    pub(super) fn join(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.join();
    }
}

/// The store thread's state: the store, closed after a failure until the
/// loop asks for a reopen.
struct Worker {
    store: Option<BlockStore>,
    dir: PathBuf,
    options: StoreOptions,
}

impl Worker {
    fn run(&mut self, job: StoreJob) -> Option<StoreDone> {
        match job {
            StoreJob::Commit(batch) => Some(match self.commit(&batch) {
                StoreDone::Failed { context, cause, .. } => StoreDone::Failed {
                    context,
                    cause,
                    batch: Some(batch),
                },
                done => done,
            }),
            StoreJob::Read(read) => Some(self.read(read)),
            StoreJob::SavePeers(known) => {
                let result = match self.store.as_mut() {
                    Some(store) => store.save_known_peers(&known).map_err(|e| e.to_string()),
                    None => Err("the store is closed".to_string()),
                };
                Some(StoreDone::PeersSaved {
                    records: known.records.len(),
                    result,
                })
            }
            StoreJob::CheckFile => match self.store.as_ref().map(BlockStore::check_file) {
                Some(Err(error)) => Some(self.fail(FILE_CHECK_CONTEXT.to_string(), &error)),
                _ => Some(StoreDone::FileChecked),
            },
            StoreJob::Reopen => match BlockStore::open_with(&self.dir, &self.options) {
                Ok(store) => {
                    let path = store.path().to_path_buf();
                    self.store = Some(store);
                    Some(StoreDone::Reopened(path))
                }
                Err(error) => Some(self.fail("reopen".to_string(), &error)),
            },
        }
    }

    fn commit(&mut self, batch: &PersistBatch) -> StoreDone {
        let context = format!("persist batch {}", batch.id);
        let Some(store) = self.store.as_mut() else {
            return StoreDone::Failed {
                context,
                cause: "the store is closed".to_string(),
                batch: None,
            };
        };
        // A commit into a deleted (unlinked) file succeeds and is lost at
        // exit: check the file first (a stat, microseconds beside the fsync).
        if let Err(error) = store.check_file() {
            return self.fail(context, &error);
        }
        let encoded: Vec<(Root, u64, Vec<u8>)> = batch
            .blocks
            .iter()
            .map(|(root, block)| (*root, block.slot(), block.encode()))
            .collect();
        let blocks: Vec<(Root, u64, &[u8])> = encoded
            .iter()
            .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
            .collect();
        let finalized = Some((batch.finalized.root, batch.finalized.slot));
        let finalized_chain: Vec<(u64, Root)> = batch
            .finalized_chain
            .iter()
            .map(|checkpoint| (checkpoint.slot, checkpoint.root))
            .collect();
        let started = StdInstant::now();
        match store.commit(
            &blocks,
            &batch.delete,
            finalized,
            &finalized_chain,
            batch.watermark,
        ) {
            Ok(deleted) => StoreDone::Committed {
                id: batch.id,
                blocks: blocks.len(),
                deleted,
                took: started.elapsed(),
            },
            Err(error) => self.fail(context, &error),
        }
    }

    fn read(&mut self, read: BlockRead) -> StoreDone {
        let mut blocks = Vec::new();
        let mut complete = false;
        if let Some(store) = self.store.as_ref() {
            match store.read_finalized_chain(
                read.start_slot,
                read.end_slot,
                read.blocks_max,
                read.bytes_max,
            ) {
                Ok((stored, whole)) => {
                    complete = whole;
                    for (root, slot, bytes) in stored {
                        let then = "the read stops before it";
                        let decoded =
                            super::persistence::decode_stored(store, root, slot, &bytes, then);
                        let Some(block) = decoded else {
                            complete = false;
                            break;
                        };
                        blocks.push(block);
                    }
                }
                Err(error) => log::error!(
                    "stored blocks at slots {}..{} not read: {error}",
                    read.start_slot,
                    read.end_slot
                ),
            }
        }
        StoreDone::Read {
            id: read.id,
            blocks,
            complete,
        }
    }

    /// Closes the store (redb refuses everything after an I/O error until
    /// reopened) and says why, naming a deleted file if that is the cause.
    fn fail(&mut self, context: String, error: &StoreError) -> StoreDone {
        let cause = match self.store.as_ref().map(BlockStore::check_file) {
            Some(Err(gone)) if gone.to_string() != error.to_string() => {
                format!("{error} ({gone})")
            }
            _ => error.to_string(),
        };
        self.store = None;
        StoreDone::Failed {
            context,
            cause,
            batch: None,
        }
    }
}
