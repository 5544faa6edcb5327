//! Starting a driver: the listening port first, then the block store and
//! its blocks, then the node; and why a start failed ([`StartError`]), by
//! cause, so an operator is sent to the right place.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use meshsync_core::chain::{ChainConfig, ProposerPublicKey, SignedBlock, SigningWatermark};
use meshsync_core::record::Header;
use meshsync_core::{Config, Health, Identity, Input, Node};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};

use crate::store::{StoreError, StoreNetwork, StoreOptions};
use crate::workers::WorkerPool;

use super::clock::wall_ms;
use super::observe::Observer;
use super::persistence::{load_from_finalized, open_store};
use super::record::Recorder;
use super::store_thread::StoreThread;
use super::work::run_pool_job;
use super::{
    Driver, DriverOptions, PersistStats, RunState, WorkStats, CLOCK_CHECK_INTERVAL,
    CONTROL_QUEUED_MAX, EVENTS_PER_POLL_MAX, FIRST_CONN_ID, LISTENER, READ_BUFFER_BYTES,
    STORE_FILE_CHECK_INTERVAL, STORE_REOPEN_BACKOFF_MIN, WAKER,
};

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
    /// A proposer key has no signing watermark in the store, although the
    /// store holds blocks it signed beyond genesis: the key may have signed
    /// later slots elsewhere (it was moved here without its watermarks).
    /// [`DriverOptions::accept_fresh_watermark`] starts it all the same.
    Watermark {
        /// The store file.
        path: std::path::PathBuf,
        /// The key's index in the genesis.
        proposer_index: u64,
        /// The key.
        proposer: ProposerPublicKey,
        /// The highest slot of a stored block it signed.
        slot: u64,
    },
    /// The recording (`--record`) could not be created.
    Record {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
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
            StartError::Watermark {
                path,
                proposer_index,
                proposer,
                slot,
            } => write!(
                f,
                "watermark: block store {} holds blocks proposer {proposer_index} (key \
                 {proposer:?}) signed up to slot {slot}, but no signing watermark for that key: \
                 it may have signed later slots elsewhere. Import the watermarks exported where \
                 it ran (meshsync watermark import), or, if it signed nothing but what is \
                 stored here, start with --accept-fresh-watermark",
                path.display()
            ),
            StartError::Record { path, error } => {
                write!(f, "record: cannot create {}: {error}", path.display())
            }
            StartError::Resource { what, error } => {
                write!(f, "resources: cannot create {what}: {error}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen { error, .. }
            | StartError::Resource { error, .. }
            | StartError::Record { error, .. } => Some(error),
            StartError::Store(error) => Some(error),
            StartError::Watermark { .. } => None,
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
            StartError::Listen { error, .. }
            | StartError::Resource { error, .. }
            | StartError::Record { error, .. } => error.kind(),
            StartError::Store(StoreError::Io { error, .. }) => error.kind(),
            StartError::Store(StoreError::Locked { .. }) => io::ErrorKind::WouldBlock,
            StartError::Store(_) => io::ErrorKind::InvalidData,
            StartError::Watermark { .. } => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, error)
    }
}

impl Driver {
    /// Binds `listen` (port 0 picks a free port) and creates the node. When
    /// `config.listen_port` is 0 it is set to the bound port, which the node
    /// then advertises in its Hello; so is the port of every address of
    /// `config.discovery` that has port 0, which the node then signs into
    /// its discovery record. `seed` seeds all of the node's
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
    /// skipped), its peer store into `config.known_peers`. The port is bound first, so a busy port fails before a
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
        let mut listener = bind_listener(listen).map_err(listen_error)?;
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
                let mut store = open_store(dir, &store_options, options.repair, slot_now)?;
                let (loaded, anchor) = load_from_finalized(&mut store)?;
                persist_stats.loaded = loaded.blocks.len() as u64;
                persist_stats.skipped = loaded.skipped;
                stored_slot_max = loaded.slot_max;
                log::info!(
                    "block store {}: {} blocks loaded{}{}",
                    store.path().display(),
                    loaded.blocks.len(),
                    match (anchor, loaded.blocks.first()) {
                        (Some(_), Some(first)) => format!(
                            " from the finalized block at slot {} up (history below it is \
                             read from disk when peers ask for it)",
                            first.slot()
                        ),
                        _ => String::new(),
                    },
                    if loaded.skipped > 0 {
                        format!(", {} undecodable skipped", loaded.skipped)
                    } else {
                        String::new()
                    }
                );
                config.chain.history_anchor = anchor;
                let watermarks = store.watermarks()?;
                check_watermarks(
                    &config.chain,
                    &loaded.blocks,
                    &watermarks,
                    options.accept_fresh_watermark,
                    store.path(),
                )?;
                config.chain.signed_slots.extend(watermarks);
                config.chain.stored = Arc::from(loaded.blocks);
                // The peer store is a head start, not the node's state: one
                // that cannot be read costs the known peers, not the start.
                let known = store.known_peers().unwrap_or_else(|error| {
                    log::warn!("peer store unreadable, starting without it: {error}");
                    Default::default()
                });
                log::info!(
                    "peer store: {} records, {} scores, {} bans read",
                    known.records.len(),
                    known.scores.len(),
                    known.peer_bans.len() + known.ip_bans.len()
                );
                config.known_peers = Some(known);
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
        let workers = WorkerPool::new(options.workers, run_pool_job, Arc::clone(&waker)).map_err(
            |error| StartError::Resource {
                what: "the worker threads",
                error,
            },
        )?;
        let store_open = store.is_some();
        let store = match (store, &options.data_dir) {
            (Some(store), Some(dir)) => {
                let reopen = StoreOptions {
                    must_exist: true,
                    ..store_options.clone()
                };
                Some(
                    StoreThread::spawn(store, dir.clone(), reopen, Arc::clone(&waker)).map_err(
                        |error| StartError::Resource {
                            what: "the store thread",
                            error,
                        },
                    )?,
                )
            }
            _ => None,
        };
        if config.listen_port == 0 {
            config.listen_port = local_addr.port();
        }
        // Discovery signs these into our record, which the core refuses
        // with port 0: a caller that listens on port 0 learns the port only
        // now, so it may leave it to us.
        if let Some(discovery) = config.discovery.as_mut() {
            for addr in discovery
                .addresses
                .iter_mut()
                .filter(|addr| addr.port() == 0)
            {
                addr.set_port(local_addr.port());
            }
            if discovery.learn_address_port == Some(0) {
                discovery.learn_address_port = Some(local_addr.port());
            }
        }
        // The two clocks are read together: the core's instants are
        // microseconds since `origin`, and slots are wall-clock slots.
        let origin = StdInstant::now();
        let clock_skew_ms = options.faults.clock_skew_ms.clone();
        config.unix_ms_at_origin = wall_ms(&clock_skew_ms);
        let unix_ms_at_origin = config.unix_ms_at_origin;
        let peer_id = identity.peer_id();
        // One batch verifying per worker thread: a fixed number would leave
        // the cores of a larger machine idle during sync.
        config.sync = config.sync.clone().for_workers(options.workers);
        // The recording's header is what goes into `Node::new`, exactly.
        let recorder = match &options.record {
            None => None,
            Some(record) => {
                let header = Header {
                    seed,
                    identity_key_file: identity.to_key_file(),
                    config: config.clone(),
                    hash_every_inputs: record.hash_every_inputs.max(1),
                    software: concat!("meshsync-mio ", env!("CARGO_PKG_VERSION")).to_owned(),
                };
                Some(
                    Recorder::create(record, &header, format!("[{peer_id:?}]")).map_err(
                        |error| StartError::Record {
                            path: record.path.clone(),
                            error,
                        },
                    )?,
                )
            }
        };
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
            store_open,
            store_reopening: false,
            commit_in_flight: false,
            store_check_pending: false,
            peers_saving: false,
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
            failing_jobs: options.faults.failing_jobs.clone(),
            exit_error: None,
            observer: Observer::new(origin, options.status_interval),
            recorder,
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
}

/// Refuses a proposer key whose signing watermark is missing while the
/// stored chain holds blocks it signed beyond genesis, unless `accept`;
/// logs each of our keys' watermark.
fn check_watermarks(
    chain: &ChainConfig,
    blocks: &[SignedBlock],
    watermarks: &[SigningWatermark],
    accept: bool,
    path: &std::path::Path,
) -> Result<(), StartError> {
    for key in &chain.proposer_keys {
        let public_key = key.0.sk_to_pk();
        let Some(index) = chain
            .genesis
            .proposer_keys()
            .iter()
            .position(|genesis_key| *genesis_key == public_key)
        else {
            continue; // Not a proposer here: the core says so and never signs.
        };
        let proposer_index = index as u64;
        let proposer = ProposerPublicKey::of(&key.0);
        let recorded = watermarks
            .iter()
            .filter(|watermark| watermark.proposer == proposer)
            .map(|watermark| watermark.slot)
            .max();
        let signed = blocks
            .iter()
            .filter(|block| block.header.proposer_index == proposer_index && block.slot() > 0)
            .map(SignedBlock::slot)
            .max();
        match (recorded, signed) {
            (Some(slot), _) => log::info!(
                "signing watermark of proposer {proposer_index} (key {proposer:?}): slot {slot}"
            ),
            (None, Some(slot)) if accept => log::warn!(
                "proposer {proposer_index} (key {proposer:?}) has no signing watermark but \
                 signed stored blocks up to slot {slot}: starting anyway \
                 (--accept-fresh-watermark); it will not sign at or below slot {slot}"
            ),
            (None, Some(slot)) => {
                return Err(StartError::Watermark {
                    path: path.to_path_buf(),
                    proposer_index,
                    proposer,
                    slot,
                })
            }
            (None, None) => log::info!(
                "signing watermark of proposer {proposer_index} (key {proposer:?}): none yet"
            ),
        }
    }
    Ok(())
}

/// Connections the kernel completes and queues for us to accept, at most
/// (capped by the system's `net.core.somaxconn`). std and mio fix 128: a
/// burst of connection attempts (a flood of half-open ones, say) filled it
/// while the poll loop caught up, the kernel dropped further SYNs, and an
/// honest peer arriving then waited a full second for its SYN to be sent
/// again.
pub const LISTEN_BACKLOG: i32 = 1_024;

/// A non-blocking listener on `address` with [`LISTEN_BACKLOG`] and
/// `SO_REUSEADDR` (as mio sets it: a restarted node rebinds its port at
/// once, whatever its previous connections left in TIME_WAIT).
fn bind_listener(address: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
