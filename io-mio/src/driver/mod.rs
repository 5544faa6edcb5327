//! The mio poll loop that runs one [`Node`].
//!
//! # Design
//! One [`Driver`] is one node: one `mio::Poll`, one listening socket, the
//! node's connections, and one thread when it runs. Every turn of the loop
//! polls for readiness with the timeout the core asked for
//! ([`Node::poll_timeout`]), turns what happened into [`Input`]s, and after
//! every [`Node::handle`] drains [`Node::poll_action`] until `None`: that is
//! the core's run-loop contract. Inputs the driver itself produces while
//! executing actions (a dial that fails at once, a connection dropped for a
//! full send buffer) go to a small queue that is drained in the same turn, so
//! `handle` is never re-entered.
//!
//! Writes are deferred to the end of a turn: every `Action::Send` of the turn
//! is queued first, then each touched connection is written once, with its
//! chunks coalesced into one `writev`. Reads go into one reusable
//! [`READ_BUFFER_BYTES`] buffer and are handed over in as few inputs as
//! possible, read by the node where they lie
//! (`Node::handle_bytes_received`) unless the input must be kept whole (a
//! recording, or an input fed while another is being handled). A connection that keeps delivering is read at most
//! [`READ_BYTES_PER_TURN_MAX`] per turn, so one fast peer cannot starve the others.
//!
//! Time: `meshsync_core::Instant` is microseconds since the driver was
//! created, and `Config::unix_ms_at_origin` is set from the wall clock at that
//! same moment, so the core's slots are the wall clock's slots. The wall
//! clock is read again every [`CLOCK_CHECK_INTERVAL`]: when it disagrees with
//! the monotonic clock by more than [`CLOCK_JUMP_TOLERANCE`] (someone set
//! it, NTP stepped it, or the monotonic clock stood still while the machine
//! was suspended) the driver logs a WARN and, as [`DriverOptions::clock`]
//! says, re-bases the core's slot clock (`Health::ClockRebased`) or stops
//! it producing until the clock is back (`Health::ClockUntrusted`). The core
//! never produces a slot twice, so slots never go backwards.
//!
//! CPU work (`Action::Work`) goes to a [`WorkerPool`] of
//! [`DriverOptions::workers`] threads, which wakes the poll loop through the
//! same `mio::Waker` as the [`DriverHandle`]s; every turn drains finished
//! jobs into `Input::WorkDone`. Storage (`Action::Persist`) goes to the redb
//! [`BlockStore`](crate::store::BlockStore) in [`DriverOptions::data_dir`], one durable transaction per
//! batch, written on the store's own thread (`store_thread.rs`: one batch
//! at a time, in the core's order, so a commit's fsync never stalls a
//! connection), and is answered with `Input::Persisted` in batch order once
//! durable. Reads of history (`Action::ReadBlocks`) and peer store
//! snapshots run on that thread too. At start-up the stored
//! blocks are decoded and handed to the core as `config.chain.stored`; if
//! the chain that comes back ends below the highest stored slot (a damaged
//! block orphaned its descendants), the core is told
//! (`Health::StoreIncomplete`) and does not produce until re-synced.
//! Without a data directory the node is memory-only: batches are
//! acknowledged at once, and a warning says so once.
//!
//! A failing store (a full disk, an I/O error, the file deleted or
//! replaced, which is checked before every commit and every
//! [`STORE_FILE_CHECK_INTERVAL`]) puts the
//! driver in `store_failing`: it tells the core (`Health::StoreFailing`: no
//! production, no forwarding of blocks that could not be kept), closes the
//! database (redb refuses everything after an I/O error until reopened), and
//! reopens it with backoff ([`STORE_REOPEN_BACKOFF_MIN`] doubling to
//! [`STORE_REOPEN_BACKOFF_MAX`]) to write the same batches again; a deleted
//! file is never recreated empty. After
//! [`DriverOptions::store_failing_exit_after`] of failure the driver shuts
//! down and [`Driver::run`] returns an error; batches never written are
//! counted in an ERROR line at exit.
//!
//! What an operator watches: [`Driver::metrics`] makes the loop publish a
//! snapshot of its and the core's counts at most every
//! [`PUBLISH_INTERVAL`](crate::metrics::PUBLISH_INTERVAL) for a
//! [`MetricsServer`](crate::metrics::MetricsServer) on another thread, and
//! time handshakes, store commits, verification jobs (on the workers) and
//! application requests; [`DriverOptions::status_interval`] makes it log
//! one status line per interval.
//!
//! Other threads talk to a running driver through a [`DriverHandle`]: commands,
//! stop, and queries of the node's state, over a channel plus a `mio::Waker`.
//! Notifications reach the application through [`Driver::subscribe`].
//!
//! # Security
//! Provided: every per-connection resource is bounded (sockets by
//! [`CONNECTIONS_MAX`], outbound bytes by `PENDING_SEND_BYTES_MAX`, inbound
//! bytes by the core's decoders, time by the core's timers and
//! [`CLOSE_LINGER`]); one connection cannot monopolise the loop
//! ([`READ_BYTES_PER_TURN_MAX`]); the core's per-IP cap (per IPv4 address,
//! per IPv6 /64) is applied again on accept, before a slot is taken, so one
//! address cannot fill the slots with connections the core would refuse; a
//! connection the core closed lingers outside [`CONNECTIONS_MAX`], at most
//! [`CLOSING_CONNECTIONS_MAX`] of them and [`CLOSING_PER_IP_MAX`] per address,
//! past which it is dropped at once. Not provided: limits on the rate of new
//! connections (the kernel backlog is the only queue).
//!
//! # Limits
//! - Sockets held: [`CONNECTIONS_MAX`].
//! - Outbound bytes queued per connection: [`PENDING_SEND_BYTES_MAX`](meshsync_core::limits::PENDING_SEND_BYTES_MAX); past it
//!   the connection is dropped and reported as `CloseCause::SendBufferFull`.
//! - A connection the core closed lingers at most [`CLOSE_LINGER`] to flush,
//!   in one of [`CLOSING_CONNECTIONS_MAX`] slots of its own
//!   ([`CLOSING_PER_IP_MAX`] per address).
//! - A graceful shutdown flushes for at most [`SHUTDOWN_FLUSH_TIMEOUT`].
//! - Notifications waiting for a subscriber: [`NOTIFICATIONS_QUEUED_MAX`];
//!   past it they are dropped for that subscriber (and a warning is logged).
//! - Jobs in the worker pool: `WORK_QUEUE_JOBS_MAX`; past it a job runs
//!   inline (the core bounds its work in flight far below that).
//! - Persist batches waiting to be written after a failed commit: bounded
//!   by the core's `work::PERSIST_IN_FLIGHT_MAX`; retried after a reopen, with
//!   backoff from [`STORE_REOPEN_BACKOFF_MIN`] to [`STORE_REOPEN_BACKOFF_MAX`].
//!
//! # Layout
//! One file per concern, each an `impl Driver` block over the one struct
//! defined here: `start.rs` (binding, opening the store, [`StartError`]),
//! `event_loop.rs` (turns, dispatch, feeding the core, shutdown),
//! `connections.rs` (sockets: accept, dial, read, write queues, lingering),
//! `work.rs` (the worker pool), `persistence.rs` (the block store and its
//! health), `store_thread.rs` (the thread that owns the store), `clock.rs` (the core's clock and the wall-clock watch),
//! `notifications.rs` (logging and subscribers), `observe.rs` (metrics
//! snapshots, measured durations, the status line), `handle.rs`
//! ([`DriverHandle`], [`RunningDriver`]), `options.rs` (what a driver is
//! started with and what it counts) and `record.rs` (the recording of every
//! input for a replay, [`DriverOptions::record`]).

mod clock;
mod connections;
mod event_loop;
mod handle;
mod notifications;
mod observe;
mod options;
mod persistence;
mod record;
mod start;
mod store_thread;
mod work;

pub use clock::{CLOCK_CHECK_INTERVAL, CLOCK_JUMP_TOLERANCE};
pub use connections::{
    CLOSE_LINGER, CLOSING_CONNECTIONS_MAX, CLOSING_PER_IP_MAX, CONNECTIONS_MAX, READ_BUFFER_BYTES,
    READ_BYTES_PER_TURN_MAX,
};
pub use event_loop::SHUTDOWN_FLUSH_TIMEOUT;
pub use handle::{DriverHandle, HandleError, RunningDriver, CONTROL_QUEUED_MAX};
pub use notifications::NOTIFICATIONS_QUEUED_MAX;
pub use options::{ClockPolicy, DriverFaults, DriverOptions, PersistStats, WorkStats};
pub use persistence::{
    PERSIST_COMMIT_SLOW, STORE_FAILING_EXIT_AFTER_DEFAULT, STORE_FILE_CHECK_INTERVAL,
    STORE_REOPEN_BACKOFF_MAX, STORE_REOPEN_BACKOFF_MIN,
};
pub use record::{
    rotated_path, RecordOptions, RECORD_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX_MIN, RECORD_FILE_MODE,
    RECORD_FLUSH_INTERVAL,
};
pub use start::StartError;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Sender};
use meshsync_core::work::{PersistBatch, WorkOutput};
use meshsync_core::{DialId, Input, Node, PeerId};
use mio::net::TcpListener;
use mio::{Events, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::store::StoreOptions;
use crate::workers::WorkerPool;

use self::connections::Connection;
use self::event_loop::Readiness;
use self::handle::Control;
use self::notifications::Subscriber;
use self::observe::Observer;

/// Readiness events taken from the kernel per poll.
const EVENTS_PER_POLL_MAX: usize = 1_024;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// Connection ids, and their tokens, start here; they are never reused.
const FIRST_CONN_ID: u64 = 16;

/// Where a driver is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    /// `Command::Shutdown` was given; flushing until every queue is written or `deadline`.
    ShuttingDown {
        deadline: StdInstant,
    },
    Finished,
}

/// One node's event loop: a `mio::Poll`, a listener, the node and its connections.
///
/// Use it in one of three ways: [`Driver::run`] on the current thread until
/// stopped; [`Driver::spawn`] onto its own thread and control it through a
/// [`DriverHandle`]; or step it with [`Driver::turn`] / [`Driver::run_until`]
/// (tests). Call [`Driver::subscribe`] first to hear its notifications.
pub struct Driver {
    poll: Poll,
    events: Events,
    /// Readiness copied out of `events`, so handling can borrow `self` mutably.
    ready: Vec<Readiness>,
    /// `None` once a shutdown began: new connections are then refused by the kernel.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    node: Node,
    peer_id: PeerId,
    origin: StdInstant,
    connections: HashMap<u64, Connection>,
    dials: HashMap<DialId, u64>,
    next_conn_id: u64,
    read_buffer: Box<[u8]>,
    /// Inputs produced while executing actions, fed right after the drain.
    pending: VecDeque<Input>,
    /// Whether `feed` is running (the guard that keeps `handle` from nesting).
    feeding: bool,
    /// Connections with bytes queued this turn, written at its end.
    dirty: Vec<u64>,
    /// Connections that hit `READ_BYTES_PER_TURN_MAX` and may have more to read.
    read_backlog: Vec<u64>,
    control_sender: Sender<Control>,
    control_receiver: Receiver<Control>,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    subscribers: Vec<Subscriber>,
    state: RunState,
    workers: WorkerPool<self::work::PoolJob, (WorkOutput, Duration)>,
    /// Injected fault: the next this-many pool jobs panic.
    failing_jobs: Option<Arc<AtomicU64>>,
    work_stats: WorkStats,
    /// Where the store lives and how it is reopened; `None`: memory only.
    store_dir: Option<(PathBuf, StoreOptions)>,
    /// The store's thread (it owns the store); `None`: memory only.
    store: Option<self::store_thread::StoreThread>,
    /// Whether the thread's store is open (false after a failure until reopened).
    store_open: bool,
    /// Whether a reopen was asked for and not yet answered.
    store_reopening: bool,
    /// Whether the store thread is writing a batch (taken from `unwritten`).
    commit_in_flight: bool,
    /// Whether a file check was sent and not yet answered.
    store_check_pending: bool,
    /// Whether a peer store snapshot was sent and not yet answered.
    peers_saving: bool,
    /// Batches not yet handed to the store thread, in the core's order.
    unwritten: VecDeque<PersistBatch>,
    /// When to reopen the store and try `unwritten` again after a failure.
    persist_retry_at: Option<StdInstant>,
    /// Since when the store refuses writes (`store_failing`), if it does.
    store_failing_since: Option<StdInstant>,
    /// The wait before the next reopen attempt.
    store_backoff: Duration,
    /// When the store file's identity is next checked.
    store_check_at: StdInstant,
    store_failing_exit_after: Duration,
    persist_stats: PersistStats,
    /// Whether the memory-only warning was logged.
    warned_not_durable: bool,
    /// See [`Driver::refused_on_accept`].
    refused_on_accept: u64,
    /// See [`Driver::dropped_without_linger`].
    dropped_without_linger: u64,
    /// Unix ms at `origin`, as last told to the core.
    unix_ms_at_origin: u64,
    /// When the wall clock is next compared with the monotonic clock.
    clock_check_at: StdInstant,
    clock_policy: ClockPolicy,
    /// Whether the core was told the clock is untrusted.
    clock_untrusted: bool,
    clock_skew_ms: Option<Arc<AtomicI64>>,
    /// Why the driver stopped on its own, if it did: `run` returns it.
    exit_error: Option<String>,
    /// Metrics, status lines and the durations the driver measures.
    observer: Observer,
    /// Every input and a hash of the actions, with `--record`.
    recorder: Option<self::record::Recorder>,
}

impl Driver {
    // ---- Getters ----

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node, to read its peers and counters.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// What happened to the core's work so far.
    pub fn work_stats(&self) -> WorkStats {
        WorkStats {
            panicked: self.workers.panicked_jobs(),
            ..self.work_stats
        }
    }

    /// What happened to the core's persist batches so far.
    pub fn persist_stats(&self) -> PersistStats {
        self.persist_stats
    }

    /// Whether blocks are written to a store (else the node is memory-only).
    pub fn is_durable(&self) -> bool {
        self.store_dir.is_some()
    }

    /// Whether the store refuses writes (`store_failing`): since when.
    pub fn store_failing_since(&self) -> Option<StdInstant> {
        self.store_failing_since
    }

    /// Persist batches not yet durable: the one the store thread writes and
    /// those waiting behind it (many only after a failed commit).
    pub fn unwritten_batches(&self) -> usize {
        self.unwritten.len() + usize::from(self.commit_in_flight)
    }

    /// Why the driver stopped on its own (a store failing for too long), if it did.
    pub fn exit_error(&self) -> Option<&str> {
        self.exit_error.as_deref()
    }

    /// Transport connections the driver holds (dialling, open, or closing).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Bytes queued for sockets and not yet written, over every connection
    /// (each connection's queue is capped at `PENDING_SEND_BYTES_MAX`).
    pub fn send_queued_bytes(&self) -> usize {
        self.connections
            .values()
            .map(|connection| connection.queue.len())
            .sum()
    }

    /// Of [`Driver::connection_count`]: those lingering after the core closed them.
    pub fn closing_count(&self) -> usize {
        self.connections.len() - self.held_count(|_| true)
    }

    /// Inbound connections closed on accept, before the core saw them (all
    /// slots held, or the remote address at the core's per-IP cap).
    pub fn refused_on_accept(&self) -> u64 {
        self.refused_on_accept
    }

    /// Connections the core closed that were dropped at once instead of
    /// lingering, the closing slots (all, or their address's) being full.
    pub fn dropped_without_linger(&self) -> u64 {
        self.dropped_without_linger
    }

    /// Whether a shutdown has completed: [`Driver::run`] would return.
    pub fn is_finished(&self) -> bool {
        self.state == RunState::Finished
    }
}
