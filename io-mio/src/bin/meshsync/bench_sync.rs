//! `meshsync bench sync`: initial-sync throughput against the machine's own
//! BLS batch-verify limit, measured in the same run.
//!
//! # What is measured
//! - **The limit**: the chain's blocks verified with
//!   [`meshsync_core::chain::verify_batch`] in batches of 64 (what range sync
//!   hands a worker), spread over `threads` OS threads: blocks per second.
//!   Nothing the pipeline does can beat it, since every block must be
//!   verified.
//! - **The pipeline**: a fresh node range-syncs the same chain from
//!   [`SERVERS`] in-memory peers: Noise, snappy, BlocksByRange requests,
//!   answer checks, `Action::Work` on a real [`WorkerPool`] of `threads`
//!   workers woken through a `mio::Waker`, in-order import into the fork
//!   choice. Persist batches are confirmed at once (the disk is not what is
//!   measured; the library's `store.rs` tests time a commit). Time runs on
//!   the wall clock, so the nodes' deadlines are real.
//!
//! The figure that matters is the ratio pipeline / limit for the same
//! thread count: how much of the machine's verification capacity sync
//! turns into imported blocks. Both sides share the machine at the same
//! moment, so a noisy neighbour moves both.
//!
//! The nodes are joined by this module's own `World`, not the core's
//! `MemoryNet`: `MemoryNet` runs every `Action::Work` inline, on the
//! calling thread, as it collects a node's actions, and the work spread
//! over a real worker pool is what this benchmark measures; its clock is
//! virtual, where here the nodes' deadlines run on the wall clock.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::chain::{verify_batch, ChainConfig};
use meshsync_core::io::{Action, ConnId, Input, Origin};
use meshsync_core::sync::range::SYNC_DISTANCE_SLOTS;
use meshsync_core::work::{Job, WorkId, WorkOutput};
use meshsync_core::{Config, Identity, Instant, Node, Notification};
use meshsync_mio::workers::WorkerPool;
use mio::{Events, Poll, Token, Waker};
use rand_core::OsRng;

/// Peers serving the chain to the syncing node: enough that their request
/// quotas (each serves 1 024 blocks per 10 s to one peer, Lighthouse's
/// quota) are not what limits the sync: 32 peers serve about 3 300 blocks/s
/// after their first bursts, more than two cores verify.
pub const SERVERS: usize = 32;
/// Blocks per verification batch in the limit: one range-sync batch.
pub const LIMIT_BATCH_BLOCKS: usize = 64;
/// The benchmark gives up if sync takes longer than this.
pub const SYNC_WALL_TIMEOUT: Duration = Duration::from_secs(600);
const NETWORK_ID: u64 = 1;
const WAKER: Token = Token(0);

/// What `meshsync bench sync` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncBenchOptions {
    /// Blocks in the chain to sync.
    pub blocks: u64,
    /// Body bytes of each block.
    pub body_bytes: usize,
    /// Worker thread counts to measure, each a row.
    pub threads: Vec<usize>,
}

/// One thread count's figures.
#[derive(Clone, Copy, Debug)]
pub struct SyncBenchRow {
    /// Worker threads (and limit threads).
    pub threads: usize,
    /// Raw batch verification, blocks per second.
    pub verify_blocks_per_second: f64,
    /// End-to-end range sync, blocks per second.
    pub sync_blocks_per_second: f64,
}

/// The benchmark's result.
#[derive(Clone, Debug)]
pub struct SyncBenchReport {
    /// The options it ran with.
    pub options: SyncBenchOptions,
    /// One row per thread count.
    pub rows: Vec<SyncBenchRow>,
}

impl SyncBenchReport {
    /// The report as one JSON object (`meshsync bench sync --json`), a row
    /// per thread count.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "threads": row.threads,
                    "verify_blocks_per_second": row.verify_blocks_per_second,
                    "sync_blocks_per_second": row.sync_blocks_per_second,
                    "ratio_to_limit": row.sync_blocks_per_second / row.verify_blocks_per_second,
                })
            })
            .collect();
        serde_json::json!({
            "bench": "sync",
            "blocks": self.options.blocks,
            "body_bytes": self.options.body_bytes,
            "servers": SERVERS,
            "rows": rows,
        })
    }
}

impl fmt::Display for SyncBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sync bench: {} blocks of {} body bytes from {SERVERS} in-memory peers",
            self.options.blocks, self.options.body_bytes
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "  {:>2} thread(s): verify limit {:>8.0} blocks/s | sync {:>8.0} blocks/s | ratio {:.2}",
                row.threads,
                row.verify_blocks_per_second,
                row.sync_blocks_per_second,
                row.sync_blocks_per_second / row.verify_blocks_per_second
            )?;
        }
        Ok(())
    }
}

/// Runs the limit and the pipeline for each thread count.
pub fn sync(options: SyncBenchOptions) -> Result<SyncBenchReport, String> {
    if options.threads.contains(&0) {
        return Err("every --threads value must be at least 1".to_string());
    }
    // A chain within the sync distance is left to gossip and parent
    // lookups: range sync never starts, `Synced` never comes, and the
    // benchmark would wait out SYNC_WALL_TIMEOUT.
    if options.blocks <= SYNC_DISTANCE_SLOTS {
        return Err(format!(
            "--blocks must be more than {SYNC_DISTANCE_SLOTS}, the distance at which range sync starts"
        ));
    }
    let chain = ChainConfig::devnet_with_chain(NETWORK_ID, options.blocks, options.body_bytes);
    let mut rows = Vec::new();
    for &threads in &options.threads {
        let verify_blocks_per_second = verify_limit(&chain, threads);
        let sync_blocks_per_second = pipeline(&chain, threads)?;
        rows.push(SyncBenchRow {
            threads,
            verify_blocks_per_second,
            sync_blocks_per_second,
        });
    }
    Ok(SyncBenchReport { options, rows })
}

/// Blocks per second `threads` threads verify in batches of 64.
fn verify_limit(chain: &ChainConfig, threads: usize) -> f64 {
    let batches: Vec<_> = chain.stored.chunks(LIMIT_BATCH_BLOCKS).collect();
    let start = StdInstant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let batches = &batches;
            let genesis = &chain.genesis;
            scope.spawn(move || {
                let mut rng = OsRng;
                for batch in batches.iter().skip(thread).step_by(threads) {
                    verify_batch(genesis, batch, &mut rng).expect("the devnet chain is valid");
                }
            });
        }
    });
    chain.stored.len() as f64 / start.elapsed().as_secs_f64()
}

/// Blocks per second a fresh node range-syncs the chain with `threads` workers.
fn pipeline(chain: &ChainConfig, threads: usize) -> Result<f64, String> {
    let mut poll = Poll::new().map_err(|error| error.to_string())?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
    let pool = WorkerPool::new(threads, Job::run as fn(Job) -> WorkOutput, waker)
        .map_err(|error| error.to_string())?;
    let mut world = World::new(chain, pool);
    let start = StdInstant::now();
    world.origin = start;
    for server in 1..=SERVERS {
        world.connect(0, server);
    }
    let mut events = Events::with_capacity(16);
    loop {
        world.run_ready();
        if let Some(head_slot) = world.synced {
            if head_slot < chain.stored.len() as u64 {
                return Err(format!(
                    "synced at slot {head_slot} of {}",
                    chain.stored.len()
                ));
            }
            return Ok(head_slot as f64 / start.elapsed().as_secs_f64());
        }
        if start.elapsed() > SYNC_WALL_TIMEOUT {
            return Err(format!(
                "no sync after {SYNC_WALL_TIMEOUT:?}: head at slot {}",
                world.nodes[0].chain().head().slot
            ));
        }
        let wait = world.wait_duration();
        poll.poll(&mut events, Some(wait))
            .map_err(|error| error.to_string())?;
    }
}

/// The syncing node (index 0) and its servers, joined by in-memory links.
struct World {
    nodes: Vec<Node>,
    origin: StdInstant,
    queue: VecDeque<(usize, Input)>,
    /// (node, conn) → (remote node, remote conn).
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    next_conn: u64,
    pool: WorkerPool<Job, WorkOutput>,
    /// Pool job id → (node, its WorkId).
    jobs: BTreeMap<u64, (usize, WorkId)>,
    next_job: u64,
    synced: Option<u64>,
}

impl World {
    fn new(chain: &ChainConfig, pool: WorkerPool<Job, WorkOutput>) -> World {
        // Every node's clock starts after the pre-signed chain: nodes refuse
        // claims and blocks from beyond their clock's slot.
        let slot_ms = meshsync_core::chain::DEVNET_SLOT_DURATION_MS;
        let clock_ms = (chain.stored.len() as u64 + 1).saturating_mul(slot_ms);
        let mut joiner = Config::new(NETWORK_ID);
        joiner.unix_ms_at_origin = clock_ms;
        joiner.sync.peers_min = 1;
        // As the driver does: one batch verifying per worker thread.
        joiner.sync = joiner.sync.for_workers(pool.threads());
        let mut nodes = vec![Node::new(joiner, Identity::from_seed(0), [0; 32])];
        // The address scheme (10.0.0.i) and the seeds hold up to 254 nodes.
        const _: () = assert!(SERVERS < 254);
        for index in 1..=SERVERS {
            let mut server = Config::new(NETWORK_ID);
            server.unix_ms_at_origin = clock_ms;
            server.chain = chain.clone();
            let seed = [index as u8; 32];
            nodes.push(Node::new(server, Identity::from_seed(index as u64), seed));
        }
        World {
            nodes,
            origin: StdInstant::now(),
            queue: VecDeque::new(),
            links: BTreeMap::new(),
            next_conn: 0,
            pool,
            jobs: BTreeMap::new(),
            next_job: 0,
            synced: None,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The in-memory address of node `index`.
    fn addr(index: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([10, 0, 0, index as u8 + 1], 9000))
    }

    /// Node `from` dials node `to` (answered in `execute`).
    fn connect(&mut self, from: usize, to: usize) {
        let addr = World::addr(to);
        let dial = meshsync_core::Command::Dial { addr, peer: None };
        self.queue.push_back((from, Input::Command(dial)));
    }

    /// Feeds everything queued, finished jobs and due timers, until quiet.
    fn run_ready(&mut self) {
        loop {
            while let Some((id, result)) = self.pool.try_recv_result() {
                let (node, work) = self.jobs.remove(&id).expect("a job we submitted");
                let output = result.expect("verification jobs do not panic");
                self.queue
                    .push_back((node, Input::WorkDone { id: work, output }));
            }
            let now = self.now();
            for index in 0..self.nodes.len() {
                if self.nodes[index]
                    .poll_timeout()
                    .is_some_and(|due| due <= now)
                {
                    self.queue.push_back((index, Input::Timeout));
                }
            }
            let Some((index, input)) = self.queue.pop_front() else {
                return;
            };
            let now = self.now();
            self.nodes[index].handle(now, input);
            while let Some(action) = self.nodes[index].poll_action() {
                self.execute(index, action);
            }
        }
    }

    fn execute(&mut self, index: usize, action: Action) {
        match action {
            Action::Send { conn, bytes } => {
                if let Some(&(remote, theirs)) = self.links.get(&(index, conn)) {
                    let written = bytes.len();
                    self.queue.push_back((
                        remote,
                        Input::BytesReceived {
                            conn: theirs,
                            bytes,
                        },
                    ));
                    self.queue.push_back((
                        index,
                        Input::BytesWritten {
                            conn,
                            bytes: written,
                        },
                    ));
                }
            }
            Action::Close { conn } => {
                if let Some((remote, theirs)) = self.links.remove(&(index, conn)) {
                    self.links.remove(&(remote, theirs));
                    let cause = meshsync_core::io::CloseCause::RemoteClosed;
                    self.queue.push_back((
                        remote,
                        Input::ConnectionClosed {
                            conn: theirs,
                            cause,
                        },
                    ));
                }
            }
            Action::Work { id, job } => {
                let pool_id = self.next_job;
                self.next_job += 1;
                self.jobs.insert(pool_id, (index, id));
                if let Err(full) = self.pool.submit(pool_id, job) {
                    // Cannot happen with range sync's few verifications; run it here.
                    self.jobs.remove(&pool_id);
                    let output = full.0.run();
                    self.queue
                        .push_back((index, Input::WorkDone { id, output }));
                }
            }
            Action::Persist(batch) => {
                self.queue
                    .push_back((index, Input::Persisted { id: batch.id }));
            }
            Action::Notify(Notification::Synced { head_slot }) if index == 0 => {
                self.synced = Some(head_slot);
            }
            Action::Dial { dial, addr } => {
                let Some(to) = (0..self.nodes.len()).find(|&i| World::addr(i) == addr) else {
                    return;
                };
                let (ours, theirs) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
                self.next_conn += 2;
                self.links.insert((index, ours), (to, theirs));
                self.links.insert((to, theirs), (index, ours));
                self.queue.push_back((
                    to,
                    Input::ConnectionOpened {
                        conn: theirs,
                        remote: World::addr(index),
                        origin: Origin::Accepted,
                    },
                ));
                self.queue.push_back((
                    index,
                    Input::ConnectionOpened {
                        conn: ours,
                        remote: addr,
                        origin: Origin::Dialed(dial),
                    },
                ));
            }
            // Without a disk, nothing evicted can be read back: the
            // servers' chains fit in memory (see `World::new`).
            Action::ReadBlocks(read) => self.queue.push_back((
                index,
                Input::BlocksRead {
                    id: read.id,
                    blocks: Vec::new(),
                    complete: false,
                },
            )),
            Action::CancelDial { .. } | Action::Notify(_) | Action::PersistPeers(_) => {}
        }
    }

    /// How long to sleep in `poll` when nothing is queued: until the next
    /// timer, a job wakes us, or 5 ms (a bound, so a missed wake-up costs little).
    fn wait_duration(&self) -> Duration {
        if !self.queue.is_empty() {
            return Duration::ZERO;
        }
        let now = self.now();
        let next = self.nodes.iter().filter_map(Node::poll_timeout).min();
        let until_timer = next.map_or(Duration::from_millis(5), |due| {
            Duration::from_micros(due.as_micros().saturating_sub(now.as_micros()))
        });
        until_timer.min(Duration::from_millis(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_sync_completes_on_one_and_two_threads_and_reports_ratios() {
        let report = sync(SyncBenchOptions {
            blocks: 200,
            body_bytes: 64,
            threads: vec![1, 2],
        })
        .expect("the benchmark runs");
        assert_eq!(report.rows.len(), 2);
        for row in &report.rows {
            assert!(row.verify_blocks_per_second > 0.0);
            assert!(row.sync_blocks_per_second > 0.0);
        }
        let text = report.to_string();
        assert!(text.contains("ratio"), "{text}");
        for (blocks, threads) in [(0, vec![1]), (SYNC_DISTANCE_SLOTS, vec![1]), (200, vec![0])] {
            let options = SyncBenchOptions {
                blocks,
                body_bytes: 0,
                threads,
            };
            assert!(sync(options).is_err());
        }
    }
}
