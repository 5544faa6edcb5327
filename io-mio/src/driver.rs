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
//! possible. A connection that keeps delivering is read at most
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
//! [`BlockStore`] in [`DriverOptions::data_dir`], one durable transaction per
//! batch, written on the loop thread (why: see `Driver::persist`), and
//! is answered with `Input::Persisted` in batch order. At start-up the stored
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
//! - Outbound bytes queued per connection: [`PENDING_SEND_BYTES_MAX`]; past it
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
//!   by the core's `PERSIST_IN_FLIGHT_MAX`; retried after a reopen, with
//!   backoff from [`STORE_REOPEN_BACKOFF_MIN`] to [`STORE_REOPEN_BACKOFF_MAX`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use meshsync_core::chain::block::body_root;
use meshsync_core::chain::SignedBlock;
use meshsync_core::io::{CloseCause, Notification};
use meshsync_core::limits::{self, PENDING_SEND_BYTES_MAX};
use meshsync_core::peer::ip_key;
use meshsync_core::work::{Job, PersistBatch, WorkId, WorkOutput};
use meshsync_core::{
    Action, Command, Config, ConnId, DialId, Health, Identity, Input, Instant, Node, Origin, PeerId,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::store::{BlockStore, DiskFaults, StoreError, StoreNetwork, StoreOptions};
use crate::workers::{Full, WorkerPool};

/// The one read buffer of a driver: big enough that a burst of frames is
/// decoded from one read (design.md §7: small reads are expensive).
pub const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Bytes read from one connection in one turn before the others get a go.
pub const READ_BYTES_PER_TURN_MAX: usize = 4 * READ_BUFFER_BYTES;
/// How long a connection the core closed may take to flush its queue and see
/// the remote close, before it is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long a graceful shutdown waits for queues to drain.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Notifications queued per subscriber before further ones are dropped.
pub const NOTIFICATIONS_QUEUED_MAX: usize = 65_536;
/// Commands and queries queued for a driver before [`DriverHandle`] calls block.
pub const CONTROL_QUEUED_MAX: usize = 1_024;
/// Sockets a driver holds at once dialling or open. Past it new inbound
/// connections are closed on accept, before the core sees them: the core
/// refuses past its own caps anyway. Closing sockets do not count (they have
/// [`CLOSING_CONNECTIONS_MAX`]), so refused connections cannot keep others out.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Sockets lingering after the core closed them, to flush a last Goodbye.
/// Past it a closed connection is dropped at once (its last bytes may be
/// lost): more than the peers we keep, so a shutdown still says goodbye to all.
pub const CLOSING_CONNECTIONS_MAX: usize = 256;
/// Lingering sockets per remote address (IPv4 address, IPv6 /64), unless
/// the core exempts it (loopback): one address whose connections the core
/// keeps refusing must not hold the closing slots either.
pub const CLOSING_PER_IP_MAX: usize = 2;
const _: () = assert!(limits::PEERS_MAX < CLOSING_CONNECTIONS_MAX);
const _: () = assert!(
    limits::PEERS_MAX + limits::HANDSHAKES_IN_PROGRESS_MAX + limits::DIALS_IN_PROGRESS_MAX
        < CONNECTIONS_MAX
);
/// A commit slower than this is logged as a warning: it stalls every
/// connection of the node for that long (the store writes on the loop thread).
pub const PERSIST_COMMIT_SLOW: Duration = Duration::from_millis(100);
/// After a failed commit, how long before the store is first reopened and
/// the waiting batches are tried again; each further failure doubles it.
pub const STORE_REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two reopen attempts of a failing store (each
/// attempt re-verifies the whole file, and logs one WARN).
pub const STORE_REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a store may refuse writes before the node stops, by default.
pub const STORE_FAILING_EXIT_AFTER_DEFAULT: Duration = Duration::from_secs(300);
/// How often the store file's identity is checked (deleted or replaced?).
pub const STORE_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often the wall clock is compared with the monotonic clock.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How far the wall clock may move against the monotonic clock before it
/// counts as a jump: above NTP's slewing (at most 0.5 ms/s) and scheduling
/// noise, well below a slot.
pub const CLOCK_JUMP_TOLERANCE: Duration = Duration::from_millis(250);
// The core's own bound on work in flight keeps the pool from filling up:
// `Full` (and an inline job) means a bug or several nodes on one pool.
const _: () =
    assert!(meshsync_core::node::WORK_IN_FLIGHT_MAX < crate::workers::WORK_QUEUE_JOBS_MAX);
/// Readiness events taken from the kernel per poll.
const EVENTS_PER_POLL_MAX: usize = 1_024;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// Connection ids, and their tokens, start here; they are never reused.
const FIRST_CONN_ID: u64 = 16;

/// A query run on the driver's thread with the driver at rest.
type Query = Box<dyn FnOnce(&Driver) + Send>;

/// What other threads send to a running driver.
enum Control {
    Command(Command),
    Stop,
    Query(Query),
}

/// How a driver runs its node's work and storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Worker threads for `Action::Work` (1..=`WORKER_THREADS_MAX`).
    pub workers: usize,
    /// Where the block store lives; `None`: memory only, nothing survives a restart.
    pub data_dir: Option<PathBuf>,
    /// A damaged store is moved aside and what can be read of it kept
    /// ([`BlockStore::repair`]), instead of refusing to start.
    pub repair: bool,
    /// How long the store may refuse writes before the driver stops with an error.
    pub store_failing_exit_after: Duration,
    /// What to do when the wall clock jumps.
    pub clock: ClockPolicy,
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
            faults: DriverFaults::default(),
        }
    }
}

/// What the driver does when the wall clock jumps beyond [`CLOCK_JUMP_TOLERANCE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClockPolicy {
    /// Trust the new wall clock: re-base the slot clock on it.
    #[default]
    Rebase,
    /// Do not produce until the wall clock is back where the monotonic
    /// clock says it should be (the operator fixed it).
    Refuse,
}

/// Faults a test injects into a driver's disk and clock.
#[derive(Clone, Debug, Default)]
pub struct DriverFaults {
    /// Faults in the block store's file.
    pub disk: Option<Arc<DiskFaults>>,
    /// Milliseconds added to every wall-clock reading (may be negative).
    pub clock_skew_ms: Option<Arc<AtomicI64>>,
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
        same(&self.disk, &other.disk) && same(&self.clock_skew_ms, &other.clock_skew_ms)
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
    /// Times the store was reopened after a failure.
    pub reopened: u64,
}

/// The phase of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Our non-blocking connect for this dial is in progress.
    Dialing(DialId),
    /// Reported to the core with `Input::ConnectionOpened`.
    Open,
    /// The core closed it: flush the queue, shut down our side, discard what
    /// arrives until the remote closes or `deadline`. Nothing is reported.
    Closing {
        deadline: StdInstant,
        write_shut: bool,
    },
}

struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    phase: Phase,
    queue: crate::send_queue::SendQueue,
    /// Whether WRITABLE interest is registered (only while bytes wait, or while dialling).
    writable_registered: bool,
    /// Whether the connection is in `Driver::dirty`, waiting for the end-of-turn write.
    dirty: bool,
}

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
    workers: WorkerPool<Job, WorkOutput>,
    work_stats: WorkStats,
    /// Where the store lives and how it is reopened; `None`: memory only.
    store_dir: Option<(PathBuf, StoreOptions)>,
    /// The open store; `None` while memory-only, or closed after a failure.
    store: Option<BlockStore>,
    /// Batches not yet written, in the core's order (non-empty only after a failed commit).
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
}

#[derive(Clone, Copy, Debug)]
struct Readiness {
    token: Token,
    readable: bool,
    writable: bool,
}

struct Subscriber {
    sender: Sender<Notification>,
    dropped: u64,
}

/// Why a [`DriverHandle`] call did not get through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The driver has stopped (or its thread died).
    Stopped,
    /// The driver did not answer a query in time.
    Timeout,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Stopped => write!(f, "the driver has stopped"),
            HandleError::Timeout => write!(f, "the driver did not answer in time"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Why [`Driver::bind_with`] could not start a node, by cause, so that an
/// operator is sent to the right place: the listening address, the data
/// directory, or the machine.
#[derive(Debug)]
pub enum StartError {
    /// The listening socket could not be bound (the port is taken, the
    /// address is not this machine's, or binding it needs privileges).
    /// Checked before the store is read, so a busy port fails at once.
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// What the operating system said.
        error: io::Error,
    },
    /// The block store could not be opened, repaired or read; the error
    /// names the file and, where one helps, the option to use.
    Store(StoreError),
    /// The machine refused a resource the driver needs (the poll instance,
    /// its waker, the worker threads).
    Resource {
        /// What was being created.
        what: &'static str,
        /// What the operating system said.
        error: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Listen { address, error } => {
                write!(f, "network: cannot listen on {address}: {error}")?;
                match error.kind() {
                    io::ErrorKind::AddrInUse => write!(
                        f,
                        " (another process is listening there: stop it or give another --listen)"
                    ),
                    io::ErrorKind::AddrNotAvailable => {
                        write!(f, " (not an address of this machine)")
                    }
                    io::ErrorKind::PermissionDenied => {
                        write!(f, " (ports below 1024 need privileges)")
                    }
                    _ => Ok(()),
                }
            }
            StartError::Store(error) => write!(f, "store: {error}"),
            StartError::Resource { what, error } => {
                write!(f, "resources: cannot create {what}: {error}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen { error, .. } | StartError::Resource { error, .. } => Some(error),
            StartError::Store(error) => Some(error),
        }
    }
}

impl From<StoreError> for StartError {
    fn from(error: StoreError) -> StartError {
        StartError::Store(error)
    }
}

/// For callers that only pass the error on; the text keeps the cause.
impl From<StartError> for io::Error {
    fn from(error: StartError) -> io::Error {
        let kind = match &error {
            StartError::Listen { error, .. } | StartError::Resource { error, .. } => error.kind(),
            StartError::Store(StoreError::Io { error, .. }) => error.kind(),
            StartError::Store(StoreError::Locked { .. }) => io::ErrorKind::WouldBlock,
            StartError::Store(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}

/// Talks to a driver from another thread. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    sender: Sender<Control>,
    waker: Arc<Waker>,
}

impl DriverHandle {
    /// Hands `command` to the node (as `Input::Command`).
    pub fn command(&self, command: Command) -> Result<(), HandleError> {
        self.send(Control::Command(command))
    }

    /// Starts a graceful shutdown, like SIGTERM: `Command::Shutdown`, flush
    /// (at most [`SHUTDOWN_FLUSH_TIMEOUT`]), then [`Driver::run`] returns.
    pub fn stop(&self) -> Result<(), HandleError> {
        self.send(Control::Stop)
    }

    /// Runs `query` on the driver's thread between two turns and returns its
    /// answer, waiting at most `timeout`.
    pub fn query<R, F>(&self, query: F, timeout: Duration) -> Result<R, HandleError>
    where
        R: Send + 'static,
        F: FnOnce(&Driver) -> R + Send + 'static,
    {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.send(Control::Query(Box::new(move |driver: &Driver| {
            // The asker may have timed out and gone; then nobody needs the answer.
            let _ = sender.send(query(driver));
        })))?;
        receiver.recv_timeout(timeout).map_err(|error| match error {
            crossbeam_channel::RecvTimeoutError::Timeout => HandleError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => HandleError::Stopped,
        })
    }

    fn send(&self, control: Control) -> Result<(), HandleError> {
        self.sender
            .send(control)
            .map_err(|_| HandleError::Stopped)?;
        self.waker.wake().map_err(|_| HandleError::Stopped)
    }
}

/// A driver running on its own thread. Dropping it stops the driver and joins the thread.
pub struct RunningDriver {
    handle: DriverHandle,
    local_addr: SocketAddr,
    peer_id: PeerId,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningDriver {
    /// A handle to the driver.
    pub fn handle(&self) -> &DriverHandle {
        &self.handle
    }

    /// The address the driver listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stops the driver gracefully and waits for its thread.
    pub fn stop(mut self) -> io::Result<()> {
        // Sending fails only if the driver already stopped; joining tells how.
        let _ = self.handle.stop();
        self.join_thread()
    }

    /// Waits until the driver stops by itself (a signal, or a `stop` from a handle).
    pub fn join(mut self) -> io::Result<()> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> io::Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the driver thread panicked"))),
        }
    }
}

impl Drop for RunningDriver {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.handle.stop();
            let _ = self.join_thread();
        }
    }
}

impl Driver {
    /// Binds `listen` (port 0 picks a free port) and creates the node. When
    /// `config.listen_port` is 0 it is set to the bound port, which the node
    /// then advertises in its Hello. `seed` seeds all of the node's
    /// randomness; in production take it from [`crate::os_seed`].
    pub fn bind(
        listen: SocketAddr,
        config: Config,
        identity: Identity,
        seed: [u8; 32],
    ) -> Result<Driver, StartError> {
        Driver::bind_with(listen, config, identity, seed, &DriverOptions::default())
    }

    /// [`Driver::bind`] with a worker count and, if `options.data_dir` is
    /// given, a durable block store there: its blocks are loaded into
    /// `config.chain.stored` (a block that does not decode is logged and
    /// skipped). The port is bound first, so a busy port fails before a
    /// large store is read; the error says which of the two failed.
    pub fn bind_with(
        listen: SocketAddr,
        mut config: Config,
        identity: Identity,
        seed: [u8; 32],
        options: &DriverOptions,
    ) -> Result<Driver, StartError> {
        // The port first: a busy port should fail before a large store is
        // read, and say that it is the port.
        let poll = Poll::new().map_err(|error| StartError::Resource {
            what: "the poll instance",
            error,
        })?;
        let listen_error = |error| StartError::Listen {
            address: listen,
            error,
        };
        let mut listener = TcpListener::bind(listen).map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let mut persist_stats = PersistStats::default();
        let genesis = &config.chain.genesis;
        let store_options = StoreOptions {
            network: Some(StoreNetwork {
                network_id: genesis.network_id(),
                genesis_root: genesis.root(),
            }),
            must_exist: false,
            faults: options.faults.disk.clone(),
        };
        let mut stored_slot_max = 0;
        let store = match &options.data_dir {
            None => None,
            Some(dir) => {
                let slot_now = genesis.slot_at(wall_ms(&options.faults.clock_skew_ms));
                let store = open_store(dir, &store_options, options.repair, slot_now)?;
                let loaded = load_blocks(&store)?;
                persist_stats.loaded = loaded.blocks.len() as u64;
                persist_stats.skipped = loaded.skipped;
                stored_slot_max = loaded.slot_max;
                log::info!(
                    "block store {}: {} blocks loaded{}",
                    store.path().display(),
                    loaded.blocks.len(),
                    if loaded.skipped > 0 {
                        format!(", {} undecodable skipped", loaded.skipped)
                    } else {
                        String::new()
                    }
                );
                config.chain.stored = Arc::from(loaded.blocks);
                Some(store)
            }
        };
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(listen_error)?;
        let waker =
            Arc::new(
                Waker::new(poll.registry(), WAKER).map_err(|error| StartError::Resource {
                    what: "the poll waker",
                    error,
                })?,
            );
        // mio allows one waker per poll: the workers share the handles' waker.
        let workers =
            WorkerPool::new(options.workers, Job::run, Arc::clone(&waker)).map_err(|error| {
                StartError::Resource {
                    what: "the worker threads",
                    error,
                }
            })?;
        if config.listen_port == 0 {
            config.listen_port = local_addr.port();
        }
        // The two clocks are read together: the core's instants are
        // microseconds since `origin`, and slots are wall-clock slots.
        let origin = StdInstant::now();
        let clock_skew_ms = options.faults.clock_skew_ms.clone();
        config.unix_ms_at_origin = wall_ms(&clock_skew_ms);
        let unix_ms_at_origin = config.unix_ms_at_origin;
        let peer_id = identity.peer_id();
        let node = Node::new(config, identity, seed);
        let (control_sender, control_receiver) = crossbeam_channel::bounded(CONTROL_QUEUED_MAX);
        log::info!("[{peer_id:?}] node {peer_id} listening on {local_addr}");
        let head_slot = node.chain().head().slot;
        let mut driver = Driver {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL_MAX),
            ready: Vec::with_capacity(EVENTS_PER_POLL_MAX),
            listener: Some(listener),
            local_addr,
            node,
            peer_id,
            origin,
            connections: HashMap::new(),
            dials: HashMap::new(),
            next_conn_id: FIRST_CONN_ID,
            read_buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            pending: VecDeque::new(),
            feeding: false,
            dirty: Vec::new(),
            read_backlog: Vec::new(),
            control_sender,
            control_receiver,
            waker,
            signals: None,
            subscribers: Vec::new(),
            state: RunState::Running,
            workers,
            work_stats: WorkStats::default(),
            store_dir: options.data_dir.clone().map(|dir| {
                (
                    dir,
                    StoreOptions {
                        must_exist: true,
                        ..store_options
                    },
                )
            }),
            store,
            unwritten: VecDeque::new(),
            persist_retry_at: None,
            store_failing_since: None,
            store_backoff: STORE_REOPEN_BACKOFF_MIN,
            store_check_at: origin + STORE_FILE_CHECK_INTERVAL,
            store_failing_exit_after: options.store_failing_exit_after,
            persist_stats,
            warned_not_durable: false,
            refused_on_accept: 0,
            dropped_without_linger: 0,
            unix_ms_at_origin,
            clock_check_at: origin + CLOCK_CHECK_INTERVAL,
            clock_policy: options.clock,
            clock_untrusted: false,
            clock_skew_ms,
            exit_error: None,
        };
        if stored_slot_max > head_slot {
            log::error!(
                "[{peer_id:?}] the block store holds blocks up to slot {stored_slot_max} but the \
                 chain loaded from it ends at slot {head_slot} (damaged or orphaned blocks): not \
                 producing until peers have re-synced it"
            );
            driver.feed(Input::Health(Health::StoreIncomplete {
                slot: stored_slot_max,
            }));
        }
        Ok(driver)
    }

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

    /// Persist batches waiting to be written (after a failed commit).
    pub fn unwritten_batches(&self) -> usize {
        self.unwritten.len()
    }

    /// Why the driver stopped on its own (a store failing for too long), if it did.
    pub fn exit_error(&self) -> Option<&str> {
        self.exit_error.as_deref()
    }

    /// Transport connections the driver holds (dialling, open, or closing).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
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

    /// The core's clock: microseconds since this driver was created.
    pub fn now(&self) -> Instant {
        core_instant(self.origin, StdInstant::now())
    }

    // ---- Set-up ----

    /// A handle for other threads to command, query and stop this driver.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle {
            sender: self.control_sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// A channel that receives every notification from now on. At most
    /// [`NOTIFICATIONS_QUEUED_MAX`] wait unread; further ones are dropped.
    pub fn subscribe(&mut self) -> Receiver<Notification> {
        let (sender, receiver) = crossbeam_channel::bounded(NOTIFICATIONS_QUEUED_MAX);
        self.subscribers.push(Subscriber { sender, dropped: 0 });
        receiver
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown; a second one ends
    /// the driver at once. Every driver in a process that calls this reacts to
    /// every such signal.
    pub fn catch_signals(&mut self) -> io::Result<()> {
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    // ---- Mutators ----

    /// Hands `command` to the node at once.
    pub fn command(&mut self, command: Command) {
        self.feed(Input::Command(command));
        self.settle();
    }

    /// Starts a graceful shutdown: the node says Goodbye and closes every
    /// connection, the listener closes, and the driver finishes once every
    /// queue is written and every connection shut down on our side, or after
    /// [`SHUTDOWN_FLUSH_TIMEOUT`].
    pub fn shutdown(&mut self) {
        if self.state != RunState::Running {
            return;
        }
        log::info!("[{:?}] shutting down", self.peer_id);
        if let Some(mut listener) = self.listener.take() {
            // The listener is dropped right after; a failed deregistration changes nothing.
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.state = RunState::ShuttingDown {
            deadline: StdInstant::now() + SHUTDOWN_FLUSH_TIMEOUT,
        };
        self.command(Command::Shutdown);
        self.check_shutdown_done();
    }

    // ---- Running ----

    /// Runs until a shutdown (from a signal, [`DriverHandle::stop`] or
    /// [`Driver::shutdown`]) has completed.
    pub fn run(mut self) -> io::Result<()> {
        while !self.is_finished() {
            self.turn(None)?;
        }
        let stats = self.persist_stats;
        if self.is_durable() && stats.batches > 0 {
            log::info!(
                "[{:?}] stored {} blocks in {} commits: {} µs mean, {} µs at most",
                self.peer_id,
                stats.blocks,
                stats.batches,
                stats.commit_micros_total / stats.batches,
                stats.commit_micros_max
            );
        }
        let lost = self.report_unwritten();
        log::info!("[{:?}] stopped", self.peer_id);
        match (self.exit_error.take(), lost) {
            (Some(error), _) | (None, Some(error)) => Err(io::Error::other(error)),
            (None, None) => Ok(()),
        }
    }

    /// At exit: one last try to write what waits, then an ERROR line
    /// counting what could not be written (and its text, for `run`'s error).
    fn report_unwritten(&mut self) -> Option<String> {
        if !self.unwritten.is_empty() {
            self.write_unwritten();
        }
        if self.unwritten.is_empty() {
            return None;
        }
        let blocks: usize = self.unwritten.iter().map(|batch| batch.blocks.len()).sum();
        let text = format!(
            "{} persist batches ({blocks} blocks) were never written to the block store: \
             this node lost them (peers that got them still hold them)",
            self.unwritten.len()
        );
        log::error!("[{:?}] {text}", self.peer_id);
        Some(text)
    }

    /// Runs the driver on a new thread named `name`.
    pub fn spawn(self, name: &str) -> io::Result<RunningDriver> {
        let handle = self.handle();
        let local_addr = self.local_addr;
        let peer_id = self.peer_id;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || self.run())?;
        Ok(RunningDriver {
            handle,
            local_addr,
            peer_id,
            thread: Some(thread),
        })
    }

    /// Runs turns until `predicate` holds (then `Ok(true)`), or `deadline`
    /// passes or the driver finishes (then `Ok(false)`). The predicate is
    /// checked before the first turn and after every one.
    pub fn run_until<P>(&mut self, mut predicate: P, deadline: StdInstant) -> io::Result<bool>
    where
        P: FnMut(&Driver) -> bool,
    {
        loop {
            if predicate(self) {
                return Ok(true);
            }
            let now = StdInstant::now();
            if now >= deadline || self.is_finished() {
                return Ok(false);
            }
            self.turn(Some(deadline - now))?;
        }
    }

    /// One turn: wait for readiness (at most until the core's timer, and at
    /// most `wait_max`), handle it, fire the timer if due, write what was queued.
    pub fn turn(&mut self, wait_max: Option<Duration>) -> io::Result<()> {
        if self.is_finished() {
            return Ok(());
        }
        let wait = self.wait_duration(wait_max);
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|event| Readiness {
            token: event.token(),
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
        }));
        let backlog = std::mem::take(&mut self.read_backlog);
        for readiness in &ready {
            self.dispatch(*readiness);
            if self.is_finished() {
                return Ok(());
            }
        }
        self.ready = ready;
        for id in backlog {
            self.read(id);
        }
        // Every turn, not only on a waker event: cheap, and no result can
        // be stranded by a wake that raced with an earlier drain.
        self.drain_work();
        if self
            .persist_retry_at
            .is_some_and(|retry_at| retry_at <= StdInstant::now())
        {
            self.write_unwritten();
        }
        self.watch_store();
        self.watch_clock();
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|due| due <= now) {
            self.feed(Input::Timeout);
        }
        self.expire_closing();
        self.settle();
        self.check_shutdown_done();
        Ok(())
    }

    /// How long the next poll may wait.
    fn wait_duration(&self, wait_max: Option<Duration>) -> Option<Duration> {
        let now = StdInstant::now();
        let mut wait = wait_max;
        let mut at_most = |duration: Duration| {
            wait = Some(wait.map_or(duration, |wait| wait.min(duration)));
        };
        if !self.read_backlog.is_empty() {
            at_most(Duration::ZERO);
        }
        if let Some(due) = self.node.poll_timeout() {
            if due != Instant::MAX {
                let due = std_instant(self.origin, due);
                at_most(due.saturating_duration_since(now));
            }
        }
        for connection in self.connections.values() {
            if let Phase::Closing { deadline, .. } = connection.phase {
                at_most(deadline.saturating_duration_since(now));
            }
        }
        if let RunState::ShuttingDown { deadline } = self.state {
            at_most(deadline.saturating_duration_since(now));
        }
        if let Some(retry_at) = self.persist_retry_at {
            at_most(retry_at.saturating_duration_since(now));
        }
        at_most(self.clock_check_at.saturating_duration_since(now));
        if self.store.is_some() {
            at_most(self.store_check_at.saturating_duration_since(now));
        }
        wait
    }

    fn dispatch(&mut self, readiness: Readiness) {
        match readiness.token {
            LISTENER => self.accept_all(),
            WAKER => self.drain_control(),
            SIGNALS => self.drain_signals(),
            Token(token) => {
                let id = token as u64;
                let Some(connection) = self.connections.get(&id) else {
                    return; // Dropped earlier in this turn.
                };
                match connection.phase {
                    Phase::Dialing(dial) => self.finish_dial(id, dial),
                    Phase::Open | Phase::Closing { .. } => {
                        if readiness.readable {
                            self.read(id);
                        }
                        if readiness.writable {
                            self.flush(id);
                        }
                    }
                }
            }
        }
    }

    fn drain_control(&mut self) {
        while let Ok(control) = self.control_receiver.try_recv() {
            match control {
                Control::Command(command) => self.feed(Input::Command(command)),
                Control::Stop => self.shutdown(),
                Control::Query(query) => query(self),
            }
        }
    }

    fn drain_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        for signal in received {
            if self.state == RunState::Running {
                log::info!(
                    "[{:?}] signal {signal}: shutting down (again to quit at once)",
                    self.peer_id
                );
                self.shutdown();
            } else {
                log::warn!(
                    "[{:?}] signal {signal} during shutdown: quitting at once",
                    self.peer_id
                );
                self.state = RunState::Finished;
            }
        }
    }

    // ---- Connections ----

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, remote)) => self.accepted(stream, remote),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    // Out of file descriptors, most likely; the next connection retries.
                    log::warn!("[{:?}] accept failed: {error}", self.peer_id);
                    return;
                }
            }
        }
    }

    fn accepted(&mut self, mut stream: TcpStream, remote: SocketAddr) {
        if self.held_count(|_| true) >= CONNECTIONS_MAX {
            log::debug!(
                "[{:?}] {remote} closed on accept: {CONNECTIONS_MAX} connections held",
                self.peer_id
            );
            self.refused_on_accept += 1;
            return; // Dropping the stream closes it at once.
        }
        // The core's per-IP cap, before the connection takes a slot: the core
        // would refuse it anyway, after it had held a slot and lingered.
        let limits = &self.node.config().peer.limits;
        let (per_ip_max, exempt_loopback) = (limits.connections_per_ip_max, limits.exempt_loopback);
        let key = ip_key(remote.ip());
        if !(exempt_loopback && key.is_loopback())
            && self.held_count(|other| ip_key(other.ip()) == key) >= per_ip_max
        {
            log::debug!(
                "[{:?}] {remote} closed on accept: {per_ip_max} connections from its address",
                self.peer_id
            );
            self.refused_on_accept += 1;
            return;
        }
        let id = self.allocate_conn_id();
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut stream, Token(id as usize), Interest::READABLE)
        {
            log::warn!(
                "[{:?}] cannot register connection from {remote}: {error}",
                self.peer_id
            );
            return;
        }
        set_nodelay(&stream);
        log::debug!("[{:?}] accepted {remote} as conn {id}", self.peer_id);
        self.connections
            .insert(id, Connection::new(stream, remote, Phase::Open, false));
        self.feed(Input::ConnectionOpened {
            conn: ConnId(id),
            remote,
            origin: Origin::Accepted,
        });
        // Bytes that arrived before registration are read now.
        self.read(id);
    }

    fn dial(&mut self, dial: DialId, addr: SocketAddr) {
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(error) => {
                self.feed(Input::DialFailed {
                    dial,
                    error: error.to_string(),
                });
                return;
            }
        };
        let id = self.allocate_conn_id();
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.feed(Input::DialFailed {
                dial,
                error: error.to_string(),
            });
            return;
        }
        log::debug!(
            "[{:?}] dialling {addr} (dial {}, conn {id})",
            self.peer_id,
            dial.0
        );
        self.connections.insert(
            id,
            Connection::new(stream, addr, Phase::Dialing(dial), true),
        );
        self.dials.insert(dial, id);
    }

    /// A dialling connection became writable or failed: find out which.
    fn finish_dial(&mut self, id: u64, dial: DialId) {
        // Cannot fail: the caller found the connection in this phase.
        let connection = self
            .connections
            .get_mut(&id)
            .expect("dialling connection exists");
        let outcome = match connection.stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match connection.stream.peer_addr() {
                Ok(remote) => Ok(remote),
                // Not connected yet: a spurious wake-up, wait for the next one.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Err(error),
            },
        };
        match outcome {
            Err(error) => {
                log::debug!(
                    "[{:?}] dial {} to {} failed: {error}",
                    self.peer_id,
                    dial.0,
                    connection.remote
                );
                self.drop_connection(id);
                self.feed(Input::DialFailed {
                    dial,
                    error: error.to_string(),
                });
            }
            Ok(remote) => {
                self.dials.remove(&dial);
                connection.phase = Phase::Open;
                connection.remote = remote;
                set_nodelay(&connection.stream);
                if let Err(error) = self.poll.registry().reregister(
                    &mut connection.stream,
                    Token(id as usize),
                    Interest::READABLE,
                ) {
                    self.drop_connection(id);
                    self.feed(Input::DialFailed {
                        dial,
                        error: error.to_string(),
                    });
                    return;
                }
                connection.writable_registered = false;
                log::debug!(
                    "[{:?}] dial {} connected to {remote} as conn {id}",
                    self.peer_id,
                    dial.0
                );
                self.feed(Input::ConnectionOpened {
                    conn: ConnId(id),
                    remote,
                    origin: Origin::Dialed(dial),
                });
                self.read(id);
            }
        }
    }

    /// Reads until the socket would block, the connection ends, or this
    /// connection had its share of the turn.
    fn read(&mut self, id: u64) {
        let mut filled = 0;
        let mut total = 0;
        loop {
            let Some(connection) = self.connections.get_mut(&id) else {
                return;
            };
            match connection.stream.read(&mut self.read_buffer[filled..]) {
                Ok(0) => {
                    self.deliver(id, filled);
                    self.lost(id, CloseCause::RemoteClosed);
                    return;
                }
                Ok(count) => {
                    filled += count;
                    total += count;
                    if filled == self.read_buffer.len() {
                        self.deliver(id, filled);
                        filled = 0;
                        if total >= READ_BYTES_PER_TURN_MAX {
                            self.read_backlog.push(id);
                            return;
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.deliver(id, filled);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.deliver(id, filled);
                    self.lost(id, CloseCause::Io(error.to_string()));
                    return;
                }
            }
        }
    }

    /// Hands the first `count` bytes of the read buffer to the node, unless
    /// the core has closed the connection (then they are dropped, as promised).
    fn deliver(&mut self, id: u64, count: usize) {
        if count == 0 {
            return;
        }
        let is_open = self
            .connections
            .get(&id)
            .is_some_and(|connection| connection.phase == Phase::Open);
        if is_open {
            let bytes = self.read_buffer[..count].to_vec();
            self.feed(Input::BytesReceived {
                conn: ConnId(id),
                bytes,
            });
        }
    }

    /// The connection ended without the core asking: report it if the core
    /// still thinks it is open.
    fn lost(&mut self, id: u64, cause: CloseCause) {
        let Some(connection) = self.drop_connection(id) else {
            return;
        };
        if connection.phase == Phase::Open {
            log::debug!(
                "[{:?}] conn {id} ({}) ended: {cause}",
                self.peer_id,
                connection.remote
            );
            self.feed(Input::ConnectionClosed {
                conn: ConnId(id),
                cause,
            });
        }
    }

    /// Writes what is queued for the connection, and keeps WRITABLE interest
    /// registered exactly while something stays queued.
    fn flush(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.dirty = false;
        if matches!(connection.phase, Phase::Dialing(_)) {
            return;
        }
        let queued_before = connection.queue.len();
        let result = connection.queue.write_to(&mut connection.stream);
        let written = queued_before - connection.queue.len();
        if written > 0 && connection.phase == Phase::Open {
            // The core holds gossip back while too much is unwritten.
            self.feed(Input::BytesWritten {
                conn: ConnId(id),
                bytes: written,
            });
        }
        let progress = match result {
            Ok(progress) => progress,
            Err(error) => {
                self.lost(id, CloseCause::Io(error.to_string()));
                return;
            }
        };
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let want_writable = progress == crate::send_queue::WriteProgress::Blocked;
        if want_writable != connection.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(error) = self.poll.registry().reregister(
                &mut connection.stream,
                Token(id as usize),
                interest,
            ) {
                self.lost(id, CloseCause::Io(error.to_string()));
                return;
            }
            connection.writable_registered = want_writable;
        }
        if let Phase::Closing {
            deadline,
            write_shut: false,
        } = connection.phase
        {
            if connection.queue.is_empty() {
                // Our last bytes are out: send FIN, then wait for the remote's.
                let _ = connection.stream.shutdown(Shutdown::Write);
                connection.phase = Phase::Closing {
                    deadline,
                    write_shut: true,
                };
            }
        }
    }

    /// Removes a connection from the poll and the maps, returning it.
    fn drop_connection(&mut self, id: u64) -> Option<Connection> {
        let mut connection = self.connections.remove(&id)?;
        // Dropping the socket removes it from epoll anyway; this is for tidiness.
        let _ = self.poll.registry().deregister(&mut connection.stream);
        if let Phase::Dialing(dial) = connection.phase {
            self.dials.remove(&dial);
        }
        Some(connection)
    }

    /// Drops closing connections whose linger time is over.
    fn expire_closing(&mut self) {
        let now = StdInstant::now();
        let expired: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                matches!(connection.phase, Phase::Closing { deadline, .. } if deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::debug!("[{:?}] conn {id} dropped after lingering", self.peer_id);
            self.drop_connection(id);
        }
    }

    /// A shutdown is done once every connection the core closed has its
    /// queue written and our FIN sent (or at the deadline). Waiting for the
    /// remotes' FINs too would let one unresponsive peer hold up the exit.
    fn check_shutdown_done(&mut self) {
        let RunState::ShuttingDown { deadline } = self.state else {
            return;
        };
        let flushed = self
            .connections
            .values()
            .all(|connection| match connection.phase {
                Phase::Dialing(_) => true,
                Phase::Open => false,
                Phase::Closing { write_shut, .. } => write_shut,
            });
        if !flushed && StdInstant::now() < deadline {
            return;
        }
        if !flushed {
            log::info!(
                "[{:?}] shutdown flush timed out with {} connections left",
                self.peer_id,
                self.connections.len()
            );
        }
        // Closing a socket with unread input makes the kernel send RST, which
        // may discard our last bytes at the remote; read what is there first.
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        for id in ids {
            if let Some(mut connection) = self.drop_connection(id) {
                discard_input(&mut connection.stream, &mut self.read_buffer);
            }
        }
        self.state = RunState::Finished;
    }

    fn allocate_conn_id(&mut self) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        id
    }

    // ---- The core's run loop ----

    /// Feeds `input` and everything it leads to, draining actions after each
    /// `handle`. Called while actions are being executed (a dial that fails at
    /// once, a full send buffer), it only queues `input`: the outer call feeds
    /// it once the node's actions are drained, so `handle` is never called
    /// between two `poll_action`s.
    fn feed(&mut self, input: Input) {
        self.pending.push_back(input);
        if self.feeding {
            return;
        }
        self.feeding = true;
        while let Some(input) = self.pending.pop_front() {
            let now = self.now();
            self.node.handle(now, input);
            while let Some(action) = self.node.poll_action() {
                self.execute(action);
            }
        }
        self.feeding = false;
    }

    /// Writes every connection that got bytes this turn (and whatever that
    /// leads to) until nothing is left to write.
    fn settle(&mut self) {
        while !self.dirty.is_empty() {
            for id in std::mem::take(&mut self.dirty) {
                self.flush(id);
            }
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Dial { dial, addr } => self.dial(dial, addr),
            Action::CancelDial { dial } => {
                if let Some(id) = self.dials.get(&dial).copied() {
                    log::debug!("[{:?}] dial {} cancelled", self.peer_id, dial.0);
                    self.drop_connection(id);
                }
            }
            Action::Send { conn, bytes } => self.queue(conn.0, bytes),
            Action::Close { conn } => self.close(conn.0),
            Action::Work { id, job } => self.submit_work(id, job),
            Action::Persist(batch) => self.persist(batch),
            Action::Notify(notification) => self.notify(notification),
        }
    }

    // ---- Work and storage ----

    fn submit_work(&mut self, id: WorkId, job: Job) {
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
                let output = job.run();
                self.feed(Input::WorkDone { id, output });
            }
        }
    }

    /// Feeds every finished job back to the core.
    fn drain_work(&mut self) {
        while let Some((id, result)) = self.workers.try_recv_result() {
            let output = match result {
                Ok(output) => output,
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

    /// Writes `batch` durably (or, memory-only, does not) and tells the core.
    ///
    /// The commit runs on the loop thread: a batch is one block per slot,
    /// or one sync batch, and a redb commit with fsync takes milliseconds
    /// (measured in [`PersistStats`]; slower than [`PERSIST_COMMIT_SLOW`]
    /// is logged). A writer thread would keep the loop free during the
    /// fsync, at the cost of a second owner of the store; the batches'
    /// order would be kept by a FIFO channel either way.
    fn persist(&mut self, batch: PersistBatch) {
        if !self.is_durable() {
            if !self.warned_not_durable {
                self.warned_not_durable = true;
                log::warn!(
                    "[{:?}] no data directory: blocks are kept in memory only and lost on exit",
                    self.peer_id
                );
            }
            self.persist_stats.batches += 1;
            self.feed(Input::Persisted { id: batch.id });
            return;
        }
        self.unwritten.push_back(batch);
        if self.persist_retry_at.is_none() {
            self.write_unwritten();
        }
    }

    /// Writes waiting batches in order, each in one transaction, and
    /// acknowledges each as it lands. Stops at a failure and retries later
    /// (acknowledgements are cumulative, so no later batch may pass it).
    fn write_unwritten(&mut self) {
        self.persist_retry_at = None;
        if self.store.is_none() && !self.reopen_store() {
            return;
        }
        while let Some(batch) = self.unwritten.front() {
            let Some(store) = self.store.as_mut() else {
                unreachable!(
                    "the store was opened above and is closed only on a failure, which returns"
                );
            };
            let encoded: Vec<(meshsync_core::chain::Root, u64, Vec<u8>)> = batch
                .blocks
                .iter()
                .map(|(root, block)| (*root, block.slot(), block.encode()))
                .collect();
            let blocks: Vec<(meshsync_core::chain::Root, u64, &[u8])> = encoded
                .iter()
                .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
                .collect();
            let finalized = Some((batch.finalized.root, batch.finalized.slot));
            // A commit into a deleted (unlinked) file succeeds and is lost at
            // exit: check the file first (a stat, microseconds beside the fsync).
            if let Err(error) = store.check_file() {
                let context = format!("persist batch {}", batch.id);
                self.persist_stats.failures += 1;
                self.store_failed(&context, &error);
                return;
            }
            let started = StdInstant::now();
            match store.commit(&blocks, &batch.delete, finalized) {
                Ok(deleted) => {
                    let took = started.elapsed();
                    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    let stats = &mut self.persist_stats;
                    stats.batches += 1;
                    stats.blocks += blocks.len() as u64;
                    stats.deleted += deleted as u64;
                    stats.commit_micros_total = stats.commit_micros_total.saturating_add(micros);
                    stats.commit_micros_max = stats.commit_micros_max.max(micros);
                    if took > PERSIST_COMMIT_SLOW {
                        log::warn!(
                            "[{:?}] persist batch {} took {} ms",
                            self.peer_id,
                            batch.id,
                            took.as_millis()
                        );
                    } else {
                        log::debug!(
                            "[{:?}] persist batch {} ({} blocks, {deleted} deleted) in {micros} µs",
                            self.peer_id,
                            batch.id,
                            blocks.len()
                        );
                    }
                    let id = batch.id;
                    self.unwritten.pop_front();
                    self.feed(Input::Persisted { id });
                }
                Err(error) => {
                    let context = format!("persist batch {}", batch.id);
                    self.persist_stats.failures += 1;
                    self.store_failed(&context, &error);
                    return;
                }
            }
        }
        self.store_recovered();
    }

    /// The store refused: close it (redb refuses everything after an I/O
    /// error until reopened), tell the core, and schedule a reopen.
    fn store_failed(&mut self, context: &str, error: &StoreError) {
        // A write error may be a deleted file: say so if it is.
        let cause = match self.store.as_ref().map(BlockStore::check_file) {
            Some(Err(gone)) => format!("{error} ({gone})"),
            _ => error.to_string(),
        };
        self.store = None;
        let retry_in = self.store_backoff;
        self.persist_retry_at = Some(StdInstant::now() + retry_in);
        self.store_backoff = (self.store_backoff * 2).min(STORE_REOPEN_BACKOFF_MAX);
        match self.store_failing_since {
            None => {
                self.store_failing_since = Some(StdInstant::now());
                log::error!(
                    "[{:?}] store_failing: {context} failed: {cause}; not producing or \
                     forwarding blocks; {} batches wait; reopening the store in {retry_in:?}",
                    self.peer_id,
                    self.unwritten.len()
                );
                self.feed(Input::Health(Health::StoreFailing));
            }
            Some(since) => log::warn!(
                "[{:?}] store_failing for {} s: {context} failed: {cause}; {} batches wait; \
                 reopening in {retry_in:?}",
                self.peer_id,
                since.elapsed().as_secs(),
                self.unwritten.len()
            ),
        }
    }

    /// Reopens a store closed after a failure; whether it is open now.
    fn reopen_store(&mut self) -> bool {
        let Some((dir, options)) = &self.store_dir else {
            return false;
        };
        match BlockStore::open_with(dir, options) {
            Ok(store) => {
                log::info!(
                    "[{:?}] block store {} reopened",
                    self.peer_id,
                    store.path().display()
                );
                self.persist_stats.reopened += 1;
                self.store = Some(store);
                true
            }
            Err(error) => {
                self.store_failed("reopen", &error);
                false
            }
        }
    }

    /// Every waiting batch is written: leave `store_failing` if in it.
    fn store_recovered(&mut self) {
        let Some(since) = self.store_failing_since.take() else {
            return;
        };
        self.store_backoff = STORE_REOPEN_BACKOFF_MIN;
        log::info!(
            "[{:?}] the block store writes again after {} s of store_failing",
            self.peer_id,
            since.elapsed().as_secs()
        );
        self.feed(Input::Health(Health::StoreWriting));
    }

    /// Checks the store file now and then; stops the driver if the store
    /// has failed for too long.
    fn watch_store(&mut self) {
        let now = StdInstant::now();
        if let Some(since) = self.store_failing_since {
            if self.exit_error.is_none()
                && now.saturating_duration_since(since) >= self.store_failing_exit_after
            {
                let text = format!(
                    "the block store has refused writes for {} s (limit {} s): stopping",
                    now.saturating_duration_since(since).as_secs(),
                    self.store_failing_exit_after.as_secs()
                );
                log::error!("[{:?}] {text}", self.peer_id);
                self.exit_error = Some(text);
                self.shutdown();
            }
            return;
        }
        if now < self.store_check_at {
            return;
        }
        self.store_check_at = now + STORE_FILE_CHECK_INTERVAL;
        let checked = self.store.as_ref().map(BlockStore::check_file);
        if let Some(Err(error)) = checked {
            self.store_failed("file check", &error);
        }
    }

    /// Compares the wall clock with the monotonic one now and then (see the module docs).
    fn watch_clock(&mut self) {
        let now = StdInstant::now();
        if now < self.clock_check_at {
            return;
        }
        self.clock_check_at = now + CLOCK_CHECK_INTERVAL;
        let elapsed_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        let expected_ms = self.unix_ms_at_origin.saturating_add(elapsed_ms);
        let wall_ms = wall_ms(&self.clock_skew_ms);
        let jump_ms = i128::from(wall_ms) - i128::from(expected_ms);
        let tolerance_ms = CLOCK_JUMP_TOLERANCE.as_millis() as i128;
        if jump_ms.abs() <= tolerance_ms {
            if self.clock_untrusted {
                self.clock_untrusted = false;
                log::info!(
                    "[{:?}] the wall clock is back within {CLOCK_JUMP_TOLERANCE:?}: producing again",
                    self.peer_id
                );
                self.feed(Input::Health(Health::ClockTrusted));
            }
            return;
        }
        match self.clock_policy {
            ClockPolicy::Rebase => {
                log::warn!(
                    "[{:?}] the wall clock jumped by {jump_ms} ms against the monotonic clock \
                     (tolerance {} ms; set by hand, stepped by NTP, or a suspend): slots now \
                     follow it; slots already produced are not produced again",
                    self.peer_id,
                    tolerance_ms
                );
                self.unix_ms_at_origin = wall_ms.saturating_sub(elapsed_ms);
                self.feed(Input::Health(Health::ClockRebased {
                    unix_ms_at_origin: self.unix_ms_at_origin,
                }));
            }
            ClockPolicy::Refuse => {
                if !self.clock_untrusted {
                    self.clock_untrusted = true;
                    log::warn!(
                        "[{:?}] the wall clock jumped by {jump_ms} ms against the monotonic \
                         clock (tolerance {} ms): not producing until it is back",
                        self.peer_id,
                        tolerance_ms
                    );
                    self.feed(Input::Health(Health::ClockUntrusted));
                }
            }
        }
    }

    fn queue(&mut self, id: u64, bytes: Vec<u8>) {
        let Some(connection) = self.connections.get_mut(&id) else {
            log::trace!("[{:?}] send to gone conn {id} dropped", self.peer_id);
            return;
        };
        if connection.phase != Phase::Open {
            return;
        }
        connection.queue.push(bytes);
        if !connection.dirty {
            connection.dirty = true;
            self.dirty.push(id);
        }
        if connection.queue.len() > PENDING_SEND_BYTES_MAX {
            // The socket may take some now; only a peer that reads nothing overflows.
            self.flush(id);
            let still_full = self
                .connections
                .get(&id)
                .is_some_and(|connection| connection.queue.len() > PENDING_SEND_BYTES_MAX);
            if still_full {
                self.drop_connection(id);
                log::info!("[{:?}] conn {id} dropped: send buffer full", self.peer_id);
                self.feed(Input::ConnectionClosed {
                    conn: ConnId(id),
                    cause: CloseCause::SendBufferFull,
                });
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        if connection.phase != Phase::Open {
            return;
        }
        log::debug!(
            "[{:?}] closing conn {id} ({})",
            self.peer_id,
            connection.remote
        );
        connection.phase = Phase::Closing {
            deadline: StdInstant::now() + CLOSE_LINGER,
            write_shut: false,
        };
        let remote = connection.remote;
        self.flush(id);
        // Lingering is a courtesy (our Goodbye may still be in the queue),
        // bounded so that connections the core keeps refusing cannot pile up.
        let key = ip_key(remote.ip());
        let exempt = self.node.config().peer.limits.exempt_loopback && key.is_loopback();
        let closing = |phase: &Phase| matches!(phase, Phase::Closing { .. });
        let (mut all, mut same_ip) = (0, 0);
        for connection in self.connections.values() {
            if closing(&connection.phase) {
                all += 1;
                if ip_key(connection.remote.ip()) == key {
                    same_ip += 1;
                }
            }
        }
        if all > CLOSING_CONNECTIONS_MAX || (!exempt && same_ip > CLOSING_PER_IP_MAX) {
            log::debug!(
                "[{:?}] conn {id} ({remote}) dropped without lingering",
                self.peer_id
            );
            self.dropped_without_linger += 1;
            self.drop_connection(id);
        }
    }

    /// Connections dialling or open (closing ones excluded) whose remote
    /// address passes `filter`.
    fn held_count(&self, filter: impl Fn(&SocketAddr) -> bool) -> usize {
        self.connections
            .values()
            .filter(|connection| {
                !matches!(connection.phase, Phase::Closing { .. }) && filter(&connection.remote)
            })
            .count()
    }

    fn notify(&mut self, notification: Notification) {
        let me = self.peer_id;
        match &notification {
            Notification::PeerConnected {
                peer,
                addr,
                direction,
            } => log::info!("[{me:?}] peer {peer} connected ({direction:?}, {addr})"),
            Notification::PeerDisconnected { peer, reason } => {
                log::info!("[{me:?}] peer {peer} disconnected: {reason}")
            }
            Notification::ConnectionRefused { addr, peer, reason } => match peer {
                Some(peer) => log::info!("[{me:?}] refused {addr} (peer {peer}): {reason}"),
                None => log::info!("[{me:?}] refused {addr}: {reason}"),
            },
            Notification::DialFailed { addr, error } => {
                log::debug!("[{me:?}] dial to {addr} failed: {error}")
            }
            Notification::PeerBanned { peer, ip, until } => {
                log::info!("[{me:?}] peer {peer} banned until {until} (ip {ip:?})")
            }
            Notification::PeerUnbanned { peer } => log::info!("[{me:?}] peer {peer} unbanned"),
            Notification::IpUnbanned { ip } => log::info!("[{me:?}] ip {ip} unbanned"),
            Notification::ScoreRecovered { peer } => {
                log::debug!("[{me:?}] peer {peer} may connect again")
            }
            Notification::PeerStatus { peer, status } => log::debug!(
                "[{me:?}] peer {peer:?} status: head slot {}, finalized slot {}",
                status.head_slot,
                status.finalized_slot
            ),
            Notification::RequestFailed {
                peer,
                tag,
                protocol,
                error,
            } => log::debug!("[{me:?}] request {tag} ({protocol:?}) to {peer:?} failed: {error:?}"),
            Notification::GossipMessage {
                id, topic, from, ..
            } => log::debug!("[{me:?}] gossip message {id:?} on {topic} from {from:?}"),
            Notification::PublishFailed { topic, error } => {
                log::debug!("[{me:?}] publish on {topic} failed: {error}")
            }
            Notification::BlockImported { slot, root } => log::debug!(
                "[{me:?}] imported block {:02x}{:02x}{:02x}{:02x} at slot {slot}",
                root[0],
                root[1],
                root[2],
                root[3]
            ),
            Notification::SyncProgress {
                head_slot,
                waiting: Some(wait),
                ..
            } => log::info!("[{me:?}] sync at slot {head_slot} waits for peers: {wait}"),
            Notification::SyncProgress {
                head_slot,
                target_slot,
                blocks_per_second,
                eta,
                waiting: None,
            } => log::info!(
                "[{me:?}] syncing: slot {head_slot} of {target_slot}, {blocks_per_second} blocks/s, eta {eta:?}"
            ),
            Notification::Synced { head_slot } => {
                log::info!("[{me:?}] synced at slot {head_slot}")
            }
            Notification::BodyRefused { bytes } => {
                log::warn!("[{me:?}] block body of {bytes} bytes refused")
            }
            Notification::SubscribeFailed { topic, error } => {
                log::debug!("[{me:?}] subscribe to {topic} failed: {error:?}")
            }
            Notification::PeerMetadata { .. }
            | Notification::Response { .. }
            | Notification::InboundRequest { .. } => {}
        }
        self.subscribers.retain_mut(|subscriber| {
            match subscriber.sender.try_send(notification.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    if subscriber.dropped == 0 {
                        log::warn!("[{me:?}] a notification subscriber is not reading; dropping");
                    }
                    subscriber.dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

impl Connection {
    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        phase: Phase,
        writable_registered: bool,
    ) -> Connection {
        Connection {
            stream,
            remote,
            phase,
            queue: crate::send_queue::SendQueue::new(),
            writable_registered,
            dirty: false,
        }
    }
}

/// Reads and drops whatever input is waiting, without blocking (a bounded
/// number of reads: this is a courtesy before closing, not a drain).
fn discard_input(stream: &mut TcpStream, buffer: &mut [u8]) {
    for _ in 0..16 {
        match stream.read(buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Frames are coalesced by the driver, so Nagle's delay would only add latency.
fn set_nodelay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        log::debug!("cannot set TCP_NODELAY: {error}");
    }
}

/// Milliseconds since the Unix epoch at `time` (0 before it).
fn unix_ms(time: SystemTime) -> u64 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// The wall clock in Unix ms, plus a test's skew.
fn wall_ms(skew_ms: &Option<Arc<AtomicI64>>) -> u64 {
    let ms = unix_ms(SystemTime::now());
    match skew_ms {
        None => ms,
        Some(skew) => ms.saturating_add_signed(skew.load(Ordering::SeqCst)),
    }
}

/// Opens the store for [`Driver::bind_with`]; with `repair`, a damaged or
/// half-created file is moved aside and what can be read of it kept.
fn open_store(
    dir: &Path,
    options: &StoreOptions,
    repair: bool,
    slot_now: u64,
) -> Result<BlockStore, StoreError> {
    match BlockStore::open_with(dir, options) {
        Err(error @ (StoreError::Corrupt { .. } | StoreError::HalfCreated { .. })) if repair => {
            log::warn!("{error}: repairing");
            let report = BlockStore::repair(dir, options, slot_now)?;
            log::warn!(
                "block store repaired: the damaged file is now {}; {} blocks kept{}; the rest \
                 is re-synced from peers",
                report
                    .moved_to
                    .as_deref()
                    .map_or_else(|| "gone".to_string(), |path| path.display().to_string()),
                report.blocks_kept,
                report
                    .stopped
                    .map(|why| format!(" (reading stopped: {why})"))
                    .unwrap_or_default()
            );
            BlockStore::open_with(dir, options)
        }
        result => result,
    }
}

/// What [`load_blocks`] found.
struct LoadedBlocks {
    /// Every block that decodes under its own root, in (slot, root) order.
    blocks: Vec<SignedBlock>,
    /// Blocks skipped as undecodable or stored under the wrong root.
    skipped: u64,
    /// The highest slot of any stored block, skipped or not.
    slot_max: u64,
}

/// Every block in the store that decodes (and whose root is the one it is
/// stored under), in (slot, root) order, how many were skipped, and the
/// highest stored slot.
fn load_blocks(store: &BlockStore) -> Result<LoadedBlocks, StoreError> {
    let mut blocks = Vec::new();
    let mut skipped = 0;
    let mut slot_max = 0;
    store
        .for_each_block(|root, slot, bytes| {
            slot_max = slot_max.max(slot);
            match SignedBlock::decode(bytes) {
            // The root covers the header only: a body damaged on disk
            // (the core trusts stored blocks, it verified them once) is
            // caught by its hash.
            Ok(block) if block.root() == root && body_root(&block.body) != block.header.body_root => {
                skipped += 1;
                log::error!(
                    "block store {}: block {} at slot {slot} has a damaged body: skipped",
                    store.path().display(),
                    hex4(&root)
                );
            }
            Ok(block) if block.root() == root => blocks.push(block),
            Ok(block) => {
                skipped += 1;
                log::error!(
                    "block store {}: block at slot {slot} is stored under the wrong root ({}): skipped",
                    store.path().display(),
                    hex4(&block.root())
                );
            }
            Err(error) => {
                skipped += 1;
                log::error!(
                    "block store {}: block {} at slot {slot} does not decode ({error}): skipped",
                    store.path().display(),
                    hex4(&root)
                );
            }
        }})?;
    // A repaired store knows how far the damaged one reached.
    slot_max = slot_max.max(store.incomplete_to_slot()?);
    Ok(LoadedBlocks {
        blocks,
        skipped,
        slot_max,
    })
}

/// The first 4 bytes of a root in hex, for logs.
fn hex4(root: &meshsync_core::chain::Root) -> String {
    root[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `instant` on the core's clock that starts at `origin`.
fn core_instant(origin: StdInstant, instant: StdInstant) -> Instant {
    let micros = instant.saturating_duration_since(origin).as_micros();
    Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The std instant of a core instant on the clock that starts at `origin`.
fn std_instant(origin: StdInstant, instant: Instant) -> StdInstant {
    origin
        .checked_add(Duration::from_micros(instant.as_micros()))
        // Centuries away: treat as a day from now, which is never reached in practice.
        .unwrap_or_else(|| StdInstant::now() + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::io::RefuseReason;

    #[test]
    fn clocks_convert_both_ways() {
        let origin = StdInstant::now();
        let later = origin + Duration::from_micros(1_234_567);
        let core = core_instant(origin, later);
        assert_eq!(core, Instant::from_micros(1_234_567));
        assert_eq!(std_instant(origin, core), later);
        assert_eq!(
            core_instant(later, origin),
            Instant::ZERO,
            "never before the origin"
        );
    }

    /// A lone proposer with a data directory: its blocks are committed to
    /// the store (and only then acknowledged), and a driver bound again on
    /// the same directory starts at the same head. The genesis starts now,
    /// so blocks appear only if the core's clock is the wall clock
    /// (`unix_ms_at_origin`).
    #[test]
    fn a_durable_driver_comes_back_at_its_head() {
        use meshsync_core::chain::{devnet_keys, ChainConfig, ProposerKey};
        let dir = crate::testing::TempDir::new("driver-store");
        let genesis_time_ms = unix_ms(SystemTime::now());
        let chain = |proposer: bool| {
            let genesis = crate::testing::devnet_genesis(3, 1, 100, genesis_time_ms).unwrap();
            let mut config = Config::new(3);
            config.chain = ChainConfig {
                genesis: Arc::new(genesis),
                stored: Arc::from(Vec::new()),
                proposer_keys: if proposer {
                    vec![ProposerKey(Arc::new(devnet_keys(3, 1).remove(0)))]
                } else {
                    Vec::new()
                },
                body_bytes: 64,
                follow_gossip: true,
            };
            config
        };
        let options = DriverOptions {
            workers: 1,
            data_dir: Some(dir.path().to_path_buf()),
            ..DriverOptions::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut driver = Driver::bind_with(
            loopback,
            chain(true),
            Identity::from_seed(5),
            [5; 32],
            &options,
        )
        .unwrap();
        let deadline = StdInstant::now() + Duration::from_secs(20);
        // Three blocks written and the head durable. (Not "head slot 3": on
        // a loaded machine a 100 ms slot can pass with no block.)
        let reached = driver
            .run_until(
                |driver| {
                    driver.persist_stats().blocks >= 3
                        && driver.node().status().head_root == driver.node().chain().head().root
                },
                deadline,
            )
            .unwrap();
        assert!(reached, "{:?}", driver.node().chain().head());
        let head = driver.node().chain().head();
        assert_eq!(driver.node().status().head_root, head.root);
        let stats = driver.persist_stats();
        assert_eq!(stats.failures, 0);
        assert!(
            stats.batches >= 1 && stats.batches <= stats.blocks,
            "{stats:?}"
        );
        drop(driver);

        let again = Driver::bind_with(
            loopback,
            chain(false),
            Identity::from_seed(5),
            [5; 32],
            &options,
        )
        .unwrap();
        assert_eq!(again.node().chain().head(), head);
        assert_eq!(again.persist_stats().loaded, stats.blocks);
    }

    /// A peer that never reads gets its connection dropped once more than
    /// `PENDING_SEND_BYTES_MAX` bytes wait, and the core hears why.
    #[test]
    fn a_peer_that_does_not_read_is_dropped_with_send_buffer_full() {
        let deadline = StdInstant::now() + Duration::from_secs(20);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        // The kernel completes the TCP handshake from the backlog; nobody ever reads.
        let sink = std::net::TcpListener::bind(loopback).unwrap();
        let mut driver =
            Driver::bind(loopback, Config::new(1), Identity::from_seed(1), [1; 32]).unwrap();
        let notifications = driver.subscribe();
        driver.command(Command::Dial {
            addr: sink.local_addr().unwrap(),
            peer: None,
        });
        let open = driver
            .run_until(
                |driver| {
                    driver
                        .connections
                        .values()
                        .any(|connection| connection.phase == Phase::Open)
                },
                deadline,
            )
            .unwrap();
        assert!(open, "the dial did not connect");
        let id = *driver.connections.keys().next().unwrap();

        // Socket buffers absorb a few MiB; the queue limit is hit soon after.
        let chunk_bytes = 1024 * 1024;
        let chunks_max = 2 * PENDING_SEND_BYTES_MAX / chunk_bytes;
        for _ in 0..chunks_max {
            if !driver.connections.contains_key(&id) {
                break;
            }
            driver.queue(id, vec![0; chunk_bytes]);
        }
        assert!(
            !driver.connections.contains_key(&id),
            "the connection was not dropped"
        );
        let refused = notifications
            .try_iter()
            .find_map(|notification| match notification {
                Notification::ConnectionRefused { reason, .. } => Some(reason),
                _ => None,
            });
        assert_eq!(
            refused,
            Some(RefuseReason::ConnectionLost(CloseCause::SendBufferFull)),
            "the core was told why (the connection was still in its handshake)"
        );
    }

    /// One address opening connection after connection and never reading or
    /// closing them used to park every socket slot: each was refused by the
    /// core's per-IP cap only after taking a slot, then lingered for
    /// `CLOSE_LINGER` waiting for a FIN that never came. Now the cap applies
    /// on accept, refused sockets are closed at once, and closed ones linger
    /// only in a few slots of their own. Loopback stands in for one remote
    /// address (the core's loopback exemption is turned off).
    #[test]
    fn parked_sockets_from_one_address_cannot_hold_the_slots() {
        use std::io::Write;
        let deadline = StdInstant::now() + Duration::from_secs(20);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::new(1);
        config.peer.limits.exempt_loopback = false;
        let per_ip = config.peer.limits.connections_per_ip_max;
        let mut driver = Driver::bind(loopback, config, Identity::from_seed(1), [1; 32]).unwrap();
        let addr = driver.local_addr();
        let extra = 24;
        let mut parked: Vec<std::net::TcpStream> = (0..per_ip + extra)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let all_seen = driver
            .run_until(
                |driver| {
                    driver.connection_count() + driver.refused_on_accept() as usize
                        >= per_ip + extra
                },
                deadline,
            )
            .unwrap();
        assert!(all_seen);
        assert_eq!(driver.connection_count(), per_ip);
        assert_eq!(driver.refused_on_accept(), extra as u64);
        // The refused ones were closed at once, well before a linger would end.
        for stream in &mut parked[per_ip..] {
            stream.set_read_timeout(Some(CLOSE_LINGER / 2)).unwrap();
            match stream.read(&mut [0u8; 1]) {
                Ok(0) => {}
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("a refused socket was kept: {other:?}"),
            }
        }

        // The admitted ones break their handshakes and the core closes them;
        // they never read or close, so each would linger for CLOSE_LINGER.
        for stream in &mut parked[..per_ip] {
            stream.write_all(&[0xff; 64]).unwrap();
        }
        let all_closed = driver
            .run_until(|driver| driver.held_count(|_| true) == 0, deadline)
            .unwrap();
        assert!(all_closed);
        assert!(driver.closing_count() <= CLOSING_PER_IP_MAX);
        assert_eq!(
            driver.dropped_without_linger(),
            (per_ip - CLOSING_PER_IP_MAX) as u64
        );
        // Their slots are free at once: the address may connect again.
        let _newcomer = std::net::TcpStream::connect(addr).unwrap();
        let admitted = driver
            .run_until(|driver| driver.held_count(|_| true) == 1, deadline)
            .unwrap();
        assert!(admitted);
        assert_eq!(driver.refused_on_accept(), extra as u64);
    }
}
