//! `meshsync bench history`: the resident memory of a node whose store
//! holds a long chain of large blocks, through start-up, while it serves a
//! full range sync to a fresh peer, and while it keeps producing, against
//! a stated bound.
//!
//! # What runs
//! - **The chain**, generated once per directory and reused by later runs
//!   on the same `--dir`: a genesis with one proposer, the default
//!   finality depth and slots of [`SLOT_MS`], whose slot 0 lies far enough
//!   back that every stored slot is in the past; then `--blocks` blocks,
//!   one per slot, each signed by the core's [`BlockProducer`] with a
//!   random (incompressible) body of `--body-bytes`, written with the
//!   driver's [`BlockStore`] in transactions of [`STORE_BATCH_BLOCKS`].
//!   Each transaction also records what the node's own commits would: the
//!   finalized checkpoint (the block at the head minus the finality depth)
//!   and the proposer's signing watermark (the head), so the node may
//!   start with that key. At most one transaction's blocks are in memory.
//!   A file written last ([`MARKER_FILE_NAME`]) marks the directory
//!   complete. A reused directory also holds the blocks earlier runs'
//!   servers produced, about one per second of each run.
//! - **The server**: `meshsync node` of `--meshsync` (default: this
//!   program) in a process of its own, on that data directory, proposing
//!   with the key, listening and serving metrics on loopback. This is the
//!   process measured: another binary given as `--meshsync` is measured on
//!   the same chain and under the same load.
//! - **The joiner**: this program again, running the hidden bench
//!   subcommand `history-joiner`: a node without a data directory that
//!   keeps the server connected and serves its metrics. It is this
//!   program's own node, whatever `--meshsync` names, so the load stays the
//!   same between binaries; and not `meshsync node`, which waits 30 s for
//!   three peers before it range-syncs from one.
//!
//! # Phases
//! 1. **Start-up**: from the server's spawn until its metrics answer with
//!    a head at or above the stored head: its store is open, its chain
//!    loaded (all of it or only the unfinalized part, as the binary does),
//!    and its loop running.
//! 2. **Serving a full range sync**: from the joiner's spawn until its head
//!    reaches the server's head as it was when the phase began (the server
//!    keeps producing meanwhile). The joiner making no progress for
//!    [`SYNC_STALL_MAX`] fails the phase.
//! 3. **Steady production**: `--production-secs` of the server producing
//!    a block every slot, the joiner following it.
//!
//! # What is sampled
//! Every [`SAMPLE_INTERVAL`]: each process's resident memory (`VmRSS` of
//! `/proc/PID/status`) and each node's head slot (its metrics). A phase's
//! peak is the larger of its highest sample and the kernel's own peak
//! (`VmHWM`), which is reset to the current figure when the phase begins
//! (`5` written to `/proc/PID/clear_refs`), so a spike between two samples
//! still counts. A phase passes when it completed and the server's peak
//! stayed within the bound (`--bound-mb`).
//!
//! # No process left behind
//! Both processes are killed and reaped on every way out (a guard's
//! `Drop`: an error, a panic, the end of the run). Should the bench die
//! without unwinding (a signal), the joiner reads the end of its stdin and
//! stops; the server stops with the bench only on a signal sent to the
//! whole process group, such as Ctrl-C. A node that ends early, or whose
//! memory together with the other's passes `--rss-abort-mib`, ends the run
//! there: the phase fails, naming why (with the end of the node's log for
//! an exit), and the phases after it are not run.
//!
//! # Limits
//! `--blocks` at most [`HISTORY_BLOCKS_MAX`], `--production-secs` at most
//! [`PRODUCTION_SECS_MAX`]; every wait has a deadline ([`startup_wait_max`],
//! [`SYNC_STALL_MAX`], [`SCRAPE_TIMEOUT`]); every read of a node's answer
//! or file is capped ([`METRICS_ANSWER_BYTES_MAX`], [`MARKER_BYTES_MAX`],
//! [`LOG_TAIL_BYTES_MAX`]).

use crate::run_dir::RunDir;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::chain::block::{BLOCK_BODY_BYTES_MAX, SIGNED_BLOCK_OVERHEAD_BYTES};
use meshsync_core::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT;
use meshsync_core::chain::{BlockProducer, Root, SigningWatermark};
use meshsync_core::sync::range::SYNC_DISTANCE_SLOTS;
use meshsync_core::Config;
use meshsync_mio::driver::{Driver, DriverOptions};
use meshsync_mio::metrics::MetricsServer;
use meshsync_mio::store::{BlockStore, StoreNetwork, StoreOptions};
use meshsync_mio::{workers, StaticPeerAddress};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::bench::SplitMix64;
use crate::genesis_files::{self, GenesisOptions, GENESIS_FILE_NAME};
use crate::secret_files;

/// The chain's network: apart from the devnet's 1, so that no devnet node
/// on the machine takes it for its own.
const NETWORK_ID: u64 = 0x6869;
/// One block a second: the server produces 1 MiB blocks at a rate any
/// disk and loopback keep up with, and a production phase of 30 s makes 30.
pub const SLOT_MS: u64 = 1_000;
/// Slots between the stored head and the clock when the chain is made:
/// every stored slot must lie in the past, or the node would refuse it as
/// a block from the future.
const GENESIS_LEAD_SLOTS: u64 = 10;
/// Blocks per store transaction while generating: 64 MiB of 1 MiB blocks
/// in memory at most, and few enough commits (each one synced to disk)
/// that generation is bound by signing and writing, not by syncs.
pub const STORE_BATCH_BLOCKS: usize = 64;
/// The longest chain the bench makes: 100 GiB of 1 MiB blocks.
pub const HISTORY_BLOCKS_MAX: u64 = 100_000;
/// The longest production phase: a day.
pub const PRODUCTION_SECS_MAX: u64 = 86_400;
/// The bound the issue states for the server's resident memory in every
/// phase, MB (10^6 bytes).
pub const RSS_BOUND_MB_DEFAULT: u64 = 300;
/// Where the run stops by default: the two nodes' resident memory together,
/// MiB. A node that holds its whole store in memory would otherwise drive
/// the machine into the OOM killer, which may pick another process.
pub const RSS_ABORT_MIB_DEFAULT: u64 = 14 * 1024;
/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// The longest start-up of a node with an empty store: a program start,
/// a bind and opening a store, on a shared machine.
const STARTUP_WAIT_BASE: Duration = Duration::from_secs(60);
/// What start-up may take per GiB of stored blocks on top of
/// [`STARTUP_WAIT_BASE`]: the store's integrity check reads the whole file
/// once, and a disk that reads 10 MB/s is slow but not broken.
const STARTUP_WAIT_PER_GIB: Duration = Duration::from_secs(120);
/// The longest the joiner's head may stay where it is before the sync
/// phase fails: a batch of 64 full blocks is 64 MiB, fetched and verified
/// in seconds on loopback.
pub const SYNC_STALL_MAX: Duration = Duration::from_secs(60);
/// The longest one metrics scrape may take (connect, ask, read).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest metrics answer read: a node's is a few KiB.
pub const METRICS_ANSWER_BYTES_MAX: u64 = 256 * 1024;
/// The longest the joiner may take to exit once its stdin is closed.
const JOINER_EXIT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Time between two looks at whether the joiner has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The file that marks a directory as holding a complete chain, written
/// once the last block is durable.
pub const MARKER_FILE_NAME: &str = "history-chain.json";
/// The longest marker file read: it is about 100 bytes.
const MARKER_BYTES_MAX: u64 = 4 * 1024;
/// The end of a node's log quoted when it ends early, bytes.
const LOG_TAIL_BYTES_MAX: u64 = 4 * 1024;
/// The server's identity key file in the directory.
const SERVER_KEY_FILE: &str = "server.key";
/// The server's data directory inside the directory.
const SERVER_DATA_DIR: &str = "server-data";
/// The nodes' logs (stderr) in the directory, replaced at every run.
const SERVER_LOG_FILE: &str = "server.log";
const JOINER_LOG_FILE: &str = "joiner.log";
/// Seconds between the server's status lines in its log.
const SERVER_STATUS_INTERVAL_SECS: u64 = 5;
/// Bytes in a MiB and in an MB, for the figures.
const MIB_BYTES: f64 = 1024.0 * 1024.0;
const MB_BYTES: f64 = 1_000_000.0;

/// What `meshsync bench history` runs.
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Blocks in the stored chain, one per slot from slot 1.
    pub blocks: u64,
    /// Body bytes of each block (at most `BLOCK_BODY_BYTES_MAX`).
    pub body_bytes: usize,
    /// The node binary measured; `None`: this program.
    pub meshsync: Option<PathBuf>,
    /// Where the chain is made or found; `None`: a temporary directory,
    /// removed at the end.
    pub dir: Option<PathBuf>,
    /// How long the production phase lasts.
    pub production: Duration,
    /// The bound on the server's peak resident memory in every phase, MB.
    pub bound_mb: u64,
    /// The run stops when the two nodes' resident memory together passes
    /// this, MiB.
    pub rss_abort_mib: u64,
}

/// The default `--body-bytes`: the largest body, whose encoded block is
/// exactly the core's largest block (1 MiB).
pub const BODY_BYTES_DEFAULT: usize = BLOCK_BODY_BYTES_MAX;

/// What the marker file records of the chain in its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChainMarker {
    blocks: u64,
    body_bytes: usize,
    network_id: u64,
    slot_ms: u64,
}

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// `start-up`, `sync` or `production`.
    pub phase: &'static str,
    /// Whether it was run at all (a run stops at a node's early end).
    pub run: bool,
    /// Whether it reached its end: the node started, the joiner reached the
    /// head, the production time passed.
    pub completed: bool,
    /// Completed, and the server's peak within the bound.
    pub passed: bool,
    /// What happened, in a few words.
    pub note: String,
    /// How long it lasted.
    pub seconds: f64,
    /// The server's resident memory at the first sample, MiB.
    pub server_rss_start_mib: f64,
    /// The server's resident memory at the last sample, MiB.
    pub server_rss_end_mib: f64,
    /// The server's peak resident memory in the phase, MiB.
    pub server_rss_peak_mib: f64,
    /// The joiner's peak, MiB (`None` before it runs).
    pub joiner_rss_peak_mib: Option<f64>,
    /// The server's head at the start of the phase.
    pub server_head_start: Option<u64>,
    /// The server's head at the end of the phase.
    pub server_head_end: Option<u64>,
    /// The joiner's head at the end of the phase.
    pub joiner_head_end: Option<u64>,
    /// Blocks the server signed during the phase.
    pub server_blocks_produced: Option<u64>,
    /// Blocks the joiner imported during the phase (synced or gossiped).
    pub joiner_blocks_imported: Option<u64>,
    /// The slot the joiner had to reach (sync only).
    pub target_slot: Option<u64>,
    /// Encoded bytes of the blocks the joiner imported, per second (sync
    /// only), MB/s.
    pub mb_per_second: Option<f64>,
}

/// What `meshsync bench history` measured.
#[derive(Clone, Debug)]
pub struct HistoryReport {
    /// The options it ran with.
    pub options: HistoryOptions,
    /// The binary measured.
    pub meshsync: PathBuf,
    /// Where the chain was.
    pub dir: PathBuf,
    /// How long making the chain took; `None`: it was there already.
    pub generation: Option<Duration>,
    /// The server's process id (gone by the time the report exists).
    pub server_pid: Option<u32>,
    /// The joiner's process id (gone too).
    pub joiner_pid: Option<u32>,
    /// Start-up, sync and production, in that order.
    pub phases: [Phase; 3],
}

impl HistoryReport {
    /// Bytes of one encoded block.
    pub fn block_bytes(&self) -> usize {
        self.options.body_bytes + SIGNED_BLOCK_OVERHEAD_BYTES
    }

    /// The bound in MiB, as the figures are given.
    fn bound_mib(&self) -> f64 {
        self.options.bound_mb as f64 * MB_BYTES / MIB_BYTES
    }

    /// The line the two nodes' memory together must stay under, MiB.
    fn abort_mib(&self) -> f64 {
        self.options.rss_abort_mib as f64
    }

    /// Whether every phase passed.
    pub fn passed(&self) -> bool {
        self.phases.iter().all(|phase| phase.passed)
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bench": "history",
            "blocks": self.options.blocks,
            "body_bytes": self.options.body_bytes,
            "block_bytes": self.block_bytes(),
            "chain_mib": self.options.blocks as f64 * self.block_bytes() as f64 / MIB_BYTES,
            "meshsync": self.meshsync.display().to_string(),
            "dir": self.dir.display().to_string(),
            "dir_kept": self.options.dir.is_some(),
            "reused": self.generation.is_none(),
            "generation_seconds": self.generation.map(|time| time.as_secs_f64()),
            "production_seconds": self.options.production.as_secs_f64(),
            "bound_mb": self.options.bound_mb,
            "bound_mib": self.bound_mib(),
            "rss_abort_mib": self.options.rss_abort_mib,
            "server_pid": self.server_pid,
            "joiner_pid": self.joiner_pid,
            "phases": self.phases,
            "passed": self.passed(),
        })
    }
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain_mib = self.options.blocks as f64 * self.block_bytes() as f64 / MIB_BYTES;
        writeln!(
            f,
            "history: {} blocks of {} B encoded ({chain_mib:.1} MiB) in {} ({})",
            self.options.blocks,
            self.block_bytes(),
            self.dir.display(),
            match self.generation {
                Some(time) => format!("generated in {:.1} s", time.as_secs_f64()),
                None => "reused".to_string(),
            }
        )?;
        let pid = |pid: Option<u32>| {
            pid.map_or_else(|| "not started".to_string(), |pid| format!("pid {pid}"))
        };
        writeln!(
            f,
            "server: {} node ({}); joiner: this program ({})",
            self.meshsync.display(),
            pid(self.server_pid),
            pid(self.joiner_pid)
        )?;
        writeln!(
            f,
            "{:<12} {:>15} {:>10} {:>6}  note",
            "phase", "server peak MiB", "seconds", "result"
        )?;
        for phase in &self.phases {
            let result = match (phase.run, phase.passed) {
                (false, _) => "-",
                (true, true) => "PASS",
                (true, false) => "FAIL",
            };
            writeln!(
                f,
                "{:<12} {:>15.1} {:>10.1} {:>6}  {}",
                phase.phase, phase.server_rss_peak_mib, phase.seconds, result, phase.note
            )?;
        }
        let [_, sync, production] = &self.phases;
        if sync.run {
            writeln!(
                f,
                "sync: joiner imported {} blocks, peak {:.1} MiB; server {:.1} -> {:.1} MiB",
                slot_text(sync.joiner_blocks_imported),
                sync.joiner_rss_peak_mib.unwrap_or(0.0),
                sync.server_rss_start_mib,
                sync.server_rss_end_mib
            )?;
        }
        if production.run {
            writeln!(
                f,
                "production: server {:.1} -> {:.1} MiB (peak {:.1}), head {} -> {}, {} blocks \
                 produced; joiner head {}, peak {:.1} MiB",
                production.server_rss_start_mib,
                production.server_rss_end_mib,
                production.server_rss_peak_mib,
                slot_text(production.server_head_start),
                slot_text(production.server_head_end),
                slot_text(production.server_blocks_produced),
                slot_text(production.joiner_head_end),
                production.joiner_rss_peak_mib.unwrap_or(0.0)
            )?;
        }
        write!(
            f,
            "bound: the server's peak under {} MB ({:.1} MiB) in every phase: {}",
            self.options.bound_mb,
            self.bound_mib(),
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

fn slot_text(slot: Option<u64>) -> String {
    slot.map_or_else(|| "?".to_string(), |slot| slot.to_string())
}

/// Runs the three phases against the chain in `options.dir` (made first
/// if it is not there) and returns their figures. An error is a run that
/// could not be set up; a node that fails is a failed phase.
pub fn history(options: HistoryOptions) -> Result<HistoryReport, String> {
    if options.blocks <= SYNC_DISTANCE_SLOTS
        || options.blocks > HISTORY_BLOCKS_MAX
        || options.body_bytes > BLOCK_BODY_BYTES_MAX
    {
        return Err(format!(
            "--blocks must be more than {SYNC_DISTANCE_SLOTS} (the distance at which range sync \
             starts) and at most {HISTORY_BLOCKS_MAX}, --body-bytes at most {BLOCK_BODY_BYTES_MAX}"
        ));
    }
    let meshsync = match &options.meshsync {
        Some(path) => path.clone(),
        None => {
            std::env::current_exe().map_err(|error| format!("cannot find this program: {error}"))?
        }
    };
    if !meshsync.is_file() {
        return Err(format!("--meshsync {}: no such file", meshsync.display()));
    }
    let dir =
        RunDir::new(options.dir.clone(), "meshsync-history").map_err(|error| error.to_string())?;
    let generation = prepare_chain(dir.path(), options.blocks, options.body_bytes)?;
    let mut report = HistoryReport {
        options,
        meshsync,
        dir: dir.path().to_path_buf(),
        generation,
        server_pid: None,
        joiner_pid: None,
        phases: [
            Phase::named("start-up"),
            Phase::named("sync"),
            Phase::named("production"),
        ],
    };
    run_phases(&mut report)?;
    Ok(report)
}

impl Phase {
    fn named(phase: &'static str) -> Phase {
        Phase {
            phase,
            note: "not run".to_string(),
            ..Phase::default()
        }
    }

    /// Passes a phase that completed with the server's peak within
    /// `bound_mib`, and says so when only the bound failed it.
    fn judge(&mut self, bound_mib: f64) {
        self.passed = self.completed && self.server_rss_peak_mib <= bound_mib;
        if self.completed && !self.passed {
            self.note.push_str("; the peak is above the bound");
        }
    }
}

/// Starts the server and the joiner in turn and fills in each phase,
/// stopping at the first that ends the run. Both processes are killed by
/// their guards when this returns, whichever way.
fn run_phases(report: &mut HistoryReport) -> Result<(), String> {
    let Some((mut server, server_addr)) = start_up(report)? else {
        return Ok(());
    };
    let Some(mut joiner) = serve_sync(report, &mut server, &server_addr)? else {
        return Ok(());
    };
    produce(report, &mut server, &mut joiner);
    joiner.finish();
    Ok(())
}

/// Phase 1: starts the server and samples it until it serves the whole
/// stored chain. Returns it with where peers dial it, or `None` if the
/// phase ended the run.
fn start_up(report: &mut HistoryReport) -> Result<Option<(NodeProcess, String)>, String> {
    let stored_head = report.options.blocks;
    eprintln!("history: starting the server on {stored_head} blocks");
    let started = StdInstant::now();
    let (mut server, server_addr) =
        NodeProcess::spawn_server(&report.meshsync, &report.dir, report.options.body_bytes)?;
    report.server_pid = Some(server.pid());
    let mut sampler = Sampler::new(started);
    let deadline = started + startup_wait_max(stored_head, report.block_bytes());
    let outcome = loop {
        if let Err(why) = sampler.take(&mut server, None, report.abort_mib()) {
            break Err(why);
        }
        let head = server.figures().head_slot;
        match head {
            Some(head) if head >= stored_head => break Ok(head),
            _ if StdInstant::now() >= deadline => {
                break Err(format!(
                    "not serving within {:?} (head {})",
                    deadline - started,
                    slot_text(head)
                ))
            }
            _ => std::thread::sleep(SAMPLE_INTERVAL),
        }
    };
    let bound_mib = report.bound_mib();
    let phase = &mut report.phases[0];
    // The kernel's peak of a process started in this phase is the phase's.
    sampler.fill(phase, (&server, true), None);
    phase.run = true;
    match outcome {
        Ok(head) => {
            phase.completed = true;
            phase.note = format!("serving at head {head}");
            phase.judge(bound_mib);
            Ok(Some((server, server_addr)))
        }
        Err(why) => {
            phase.note = why;
            Ok(None)
        }
    }
}

/// Phase 2: starts the joiner and samples both nodes until the joiner
/// reaches the server's head, or stalls. Returns the joiner, or `None` if
/// the phase ended the run (a node ended, or memory passed the abort line;
/// a stalled sync leaves both running, and production is still measured).
fn serve_sync(
    report: &mut HistoryReport,
    server: &mut NodeProcess,
    server_addr: &str,
) -> Result<Option<NodeProcess>, String> {
    let before = server.figures();
    let Some(target) = before.head_slot else {
        report.phases[1].run = true;
        report.phases[1].note = "the server's metrics stopped answering".to_string();
        return Ok(None);
    };
    eprintln!("history: a fresh node range-syncs {target} slots from the server");
    let server_reset = server.reset_peak();
    let started = StdInstant::now();
    let mut joiner = NodeProcess::spawn_joiner(&report.dir, server_addr)?;
    report.joiner_pid = Some(joiner.pid());
    let mut sampler = Sampler::new(started);
    let mut progress = (0, started);
    let outcome = loop {
        if let Err(why) = sampler.take(server, Some(&mut joiner), report.abort_mib()) {
            break Err(why);
        }
        let head = joiner.figures().head_slot.unwrap_or(0);
        if head >= target {
            break Ok(());
        }
        let now = StdInstant::now();
        if head > progress.0 {
            progress = (head, now);
        } else if now.duration_since(progress.1) > SYNC_STALL_MAX {
            break Err(format!(
                "the joiner stayed at slot {head} of {target} for {SYNC_STALL_MAX:?}"
            ));
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    };
    let (bound_mib, block_bytes) = (report.bound_mib(), report.block_bytes() as f64);
    let phase = &mut report.phases[1];
    // The joiner started in this phase: its kernel peak is the phase's.
    sampler.fill(phase, (server, server_reset), Some((&joiner, true)));
    phase.run = true;
    phase.server_head_start = Some(target);
    phase.target_slot = Some(target);
    let (server_after, joiner_after) = (server.figures(), joiner.figures());
    phase.server_blocks_produced = counted(before.blocks_produced, server_after.blocks_produced);
    // The joiner started with no block: all it imported came in this phase.
    phase.joiner_blocks_imported = joiner_after.blocks_imported;
    phase.mb_per_second = phase
        .joiner_blocks_imported
        .filter(|_| phase.seconds > 0.0)
        .map(|blocks| blocks as f64 * block_bytes / MB_BYTES / phase.seconds);
    match outcome {
        Ok(()) => {
            phase.completed = true;
            phase.note = format!(
                "joiner at the head ({target}) in {:.1} s, {:.1} MB/s",
                phase.seconds,
                phase.mb_per_second.unwrap_or(0.0)
            );
            phase.judge(bound_mib);
            Ok(Some(joiner))
        }
        Err(why) => {
            phase.note = why;
            let running = server.is_running() && joiner.is_running();
            Ok((running && !sampler.aborted).then_some(joiner))
        }
    }
}

/// Phase 3: samples both nodes while the server produces for
/// `--production-secs`, the joiner following.
fn produce(report: &mut HistoryReport, server: &mut NodeProcess, joiner: &mut NodeProcess) {
    let production = report.options.production;
    eprintln!("history: the server produces for {production:?}");
    let server_reset = server.reset_peak();
    let joiner_reset = joiner.reset_peak();
    let started = StdInstant::now();
    let (server_before, joiner_before) = (server.figures(), joiner.figures());
    let mut sampler = Sampler::new(started);
    let outcome = loop {
        if let Err(why) = sampler.take(server, Some(joiner), report.abort_mib()) {
            break Err(why);
        }
        let left = production.saturating_sub(started.elapsed());
        if left.is_zero() {
            break Ok(());
        }
        std::thread::sleep(SAMPLE_INTERVAL.min(left));
    };
    let bound_mib = report.bound_mib();
    let phase = &mut report.phases[2];
    sampler.fill(phase, (server, server_reset), Some((joiner, joiner_reset)));
    phase.run = true;
    phase.server_head_start = server_before.head_slot;
    let (server_after, joiner_after) = (server.figures(), joiner.figures());
    phase.server_blocks_produced =
        counted(server_before.blocks_produced, server_after.blocks_produced);
    phase.joiner_blocks_imported =
        counted(joiner_before.blocks_imported, joiner_after.blocks_imported);
    match outcome {
        Ok(()) => {
            phase.completed = true;
            phase.note = format!(
                "{} blocks produced, {} imported by the joiner",
                slot_text(phase.server_blocks_produced),
                slot_text(phase.joiner_blocks_imported)
            );
            phase.judge(bound_mib);
        }
        Err(why) => phase.note = why,
    }
}

/// How far a counter went from `before` to `after`, if both were read.
fn counted(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// How long start-up may take with `blocks` stored blocks of `block_bytes`.
pub fn startup_wait_max(blocks: u64, block_bytes: usize) -> Duration {
    let gib = blocks as f64 * block_bytes as f64 / (1024.0 * MIB_BYTES);
    STARTUP_WAIT_BASE + STARTUP_WAIT_PER_GIB.mul_f64(gib)
}

/// One phase's samples: resident memory of each node as it goes.
struct Sampler {
    started: StdInstant,
    server_first_mib: Option<f64>,
    server_last_mib: f64,
    server_max_mib: f64,
    joiner_max_mib: f64,
    /// Set once the two nodes together passed the abort line.
    aborted: bool,
}

impl Sampler {
    fn new(started: StdInstant) -> Sampler {
        Sampler {
            started,
            server_first_mib: None,
            server_last_mib: 0.0,
            server_max_mib: 0.0,
            joiner_max_mib: 0.0,
            aborted: false,
        }
    }

    /// Samples both nodes' memory; an error says why the run must stop:
    /// a node has ended, or the two hold more than `abort_mib` together.
    fn take(
        &mut self,
        server: &mut NodeProcess,
        joiner: Option<&mut NodeProcess>,
        abort_mib: f64,
    ) -> Result<(), String> {
        server.check_running()?;
        let server_mib = server.memory().map_or(0.0, |memory| memory.rss_mib);
        self.server_first_mib.get_or_insert(server_mib);
        self.server_last_mib = server_mib;
        self.server_max_mib = self.server_max_mib.max(server_mib);
        let mut joiner_mib = 0.0;
        if let Some(joiner) = joiner {
            joiner.check_running()?;
            joiner_mib = joiner.memory().map_or(0.0, |memory| memory.rss_mib);
            self.joiner_max_mib = self.joiner_max_mib.max(joiner_mib);
        }
        if server_mib + joiner_mib > abort_mib {
            self.aborted = true;
            return Err(format!(
                "stopped: the nodes held {:.0} MiB together, above --rss-abort-mib {abort_mib:.0}",
                server_mib + joiner_mib
            ));
        }
        Ok(())
    }

    /// Writes the phase's time, memory and heads into `phase`. Each node
    /// comes with whether the kernel's peak is the phase's (reset when the
    /// phase began, or the process started in it); if not, only the
    /// samples count.
    fn fill(
        &self,
        phase: &mut Phase,
        (server, server_peak): (&NodeProcess, bool),
        joiner: Option<(&NodeProcess, bool)>,
    ) {
        let kernel_peak = |node: &NodeProcess, valid: bool| {
            node.memory()
                .filter(|_| valid)
                .map_or(0.0, |memory| memory.hwm_mib)
        };
        phase.seconds = self.started.elapsed().as_secs_f64();
        phase.server_rss_start_mib = self.server_first_mib.unwrap_or(0.0);
        phase.server_rss_end_mib = self.server_last_mib;
        phase.server_rss_peak_mib = self.server_max_mib.max(kernel_peak(server, server_peak));
        phase.server_head_end = server.figures().head_slot;
        if let Some((joiner, joiner_peak)) = joiner {
            phase.joiner_rss_peak_mib =
                Some(self.joiner_max_mib.max(kernel_peak(joiner, joiner_peak)));
            phase.joiner_head_end = joiner.figures().head_slot;
        }
    }
}

/// A process's resident memory now and at its peak, MiB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_mib: f64,
    hwm_mib: f64,
}

/// `VmRSS` and `VmHWM` of `/proc/PID/status` (`None` where there is no
/// `/proc`, or once the process is gone).
fn memory_of(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(Memory {
        rss_mib: field("VmRSS:")?,
        hwm_mib: field("VmHWM:")?,
    })
}

/// A node in a process of its own, killed and reaped when dropped.
struct NodeProcess {
    /// `server` or `joiner`, for messages.
    name: &'static str,
    child: Child,
    /// The joiner's stdin, whose end stops it (`None` for the server).
    stdin: Option<ChildStdin>,
    /// Where it serves metrics.
    metrics: SocketAddr,
    /// Its stderr.
    log: PathBuf,
}

impl NodeProcess {
    /// Starts `meshsync node` of `meshsync` on the chain in `dir`, as its
    /// proposer; returns it with where peers dial it (`ADDR@PEERID`).
    fn spawn_server(
        meshsync: &Path,
        dir: &Path,
        body_bytes: usize,
    ) -> Result<(Self, String), String> {
        let key = dir.join(SERVER_KEY_FILE);
        let identity = meshsync_mio::keyfile::read_key_file(&key)
            .map_err(|error| format!("the server's key: {error}"))?;
        let (listen, metrics) = (free_loopback_addr()?, free_loopback_addr()?);
        let log = dir.join(SERVER_LOG_FILE);
        let mut command = Command::new(meshsync);
        command
            .arg("node")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--key")
            .arg(&key)
            .arg("--genesis")
            .arg(dir.join(GENESIS_FILE_NAME))
            .arg("--proposer-key")
            .arg(dir.join(genesis_files::proposer_key_file_name(0)))
            .arg("--data-dir")
            .arg(dir.join(SERVER_DATA_DIR))
            .arg("--body-bytes")
            .arg(body_bytes.to_string())
            .arg("--metrics")
            .arg(metrics.to_string())
            .arg("--no-discovery")
            .arg("--status-interval-secs")
            .arg(SERVER_STATUS_INTERVAL_SECS.to_string())
            .stdin(Stdio::null());
        let server = NodeProcess::spawn("server", command, metrics, log)?;
        Ok((server, format!("{listen}@{}", identity.peer_id())))
    }

    /// Starts this program's `bench history-joiner`, keeping the server at
    /// `server` (`ADDR@PEERID`) connected.
    fn spawn_joiner(dir: &Path, server: &str) -> Result<Self, String> {
        let program = std::env::current_exe()
            .map_err(|error| format!("cannot find this program: {error}"))?;
        let metrics = free_loopback_addr()?;
        let log = dir.join(JOINER_LOG_FILE);
        let mut command = Command::new(program);
        command
            .args(["bench", "history-joiner", "--genesis"])
            .arg(dir.join(GENESIS_FILE_NAME))
            .arg("--static-peer")
            .arg(server)
            .arg("--metrics")
            .arg(metrics.to_string())
            .stdin(Stdio::piped());
        let mut joiner = NodeProcess::spawn("joiner", command, metrics, log)?;
        joiner.stdin = joiner.child.stdin.take();
        Ok(joiner)
    }

    fn spawn(
        name: &'static str,
        mut command: Command,
        metrics: SocketAddr,
        log: PathBuf,
    ) -> Result<Self, String> {
        let file = File::create(&log)
            .map_err(|error| format!("the {name}'s log {}: {error}", log.display()))?;
        let stdout = file
            .try_clone()
            .map_err(|error| format!("the {name}'s log {}: {error}", log.display()))?;
        let child = command
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .map_err(|error| format!("cannot start the {name}: {error}"))?;
        Ok(NodeProcess {
            name,
            child,
            stdin: None,
            metrics,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn memory(&self) -> Option<Memory> {
        memory_of(self.pid())
    }

    /// Resets the kernel's peak to the current figure; false if it cannot.
    fn reset_peak(&self) -> bool {
        fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// What its metrics say now (nothing if they do not answer).
    fn figures(&self) -> NodeFigures {
        let text = scrape_metrics(self.metrics).unwrap_or_default();
        NodeFigures {
            head_slot: metric_value(&text, "meshsync_head_slot"),
            blocks_produced: metric_value(&text, "meshsync_blocks_produced_total"),
            blocks_imported: metric_value(&text, "meshsync_blocks_imported_total"),
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An error naming how it ended and the end of its log, if it has.
    fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the {} ended ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            )),
            Err(error) => Err(format!("the {} cannot be waited for: {error}", self.name)),
        }
    }

    /// Stops the joiner by the end of its stdin, killing it past
    /// [`JOINER_EXIT_WAIT_MAX`]. (The server is killed by the guard: its
    /// store is written crash-safe, and nothing else needs a clean stop.)
    fn finish(mut self) {
        self.stdin = None;
        let deadline = StdInstant::now() + JOINER_EXIT_WAIT_MAX;
        while StdInstant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
    }
}

impl Drop for NodeProcess {
    /// Whichever way the run ends, no node outlives it. A process already
    /// reaped makes both calls do nothing.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port free now: bound and released, for a
/// node to bind a moment later. Another process could take the port in
/// between; the node then fails to start, naming it.
fn free_loopback_addr() -> Result<SocketAddr, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("cannot find a free loopback port: {error}"))
}

/// What a node's metrics say, of what the bench reads.
#[derive(Clone, Copy, Debug, Default)]
struct NodeFigures {
    head_slot: Option<u64>,
    blocks_produced: Option<u64>,
    blocks_imported: Option<u64>,
}

/// The metrics text at `addr`, if it answers within [`SCRAPE_TIMEOUT`]
/// (per step).
fn scrape_metrics(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream
        .take(METRICS_ANSWER_BYTES_MAX)
        .read_to_string(&mut answer)
        .ok()?;
    Some(answer)
}

/// The value of `name` in an OpenMetrics text: the line `name VALUE`.
fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The last [`LOG_TAIL_BYTES_MAX`] bytes of a log, as text.
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES_MAX)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES_MAX).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|error| format!("(unreadable: {error})"))
}

/// Makes the chain in `dir` unless it holds it already. Returns how long
/// making it took, `None` if it was there. Refuses a directory that holds
/// another chain, or anything but a complete one.
fn prepare_chain(dir: &Path, blocks: u64, body_bytes: usize) -> Result<Option<Duration>, String> {
    let wanted = ChainMarker {
        blocks,
        body_bytes,
        network_id: NETWORK_ID,
        slot_ms: SLOT_MS,
    };
    let marker_path = dir.join(MARKER_FILE_NAME);
    if marker_path.exists() {
        let mut text = String::new();
        File::open(&marker_path)
            .and_then(|file| file.take(MARKER_BYTES_MAX).read_to_string(&mut text))
            .map_err(|error| format!("{}: {error}", marker_path.display()))?;
        let found: ChainMarker = serde_json::from_str(&text)
            .map_err(|error| format!("{}: {error}", marker_path.display()))?;
        if found != wanted {
            return Err(format!(
                "{} holds a chain of {} blocks of {} body bytes, not {blocks} of {body_bytes}: \
                 name another --dir, or remove it",
                dir.display(),
                found.blocks,
                found.body_bytes
            ));
        }
        eprintln!("history: reusing the chain in {}", dir.display());
        return Ok(None);
    }
    let is_empty = fs::read_dir(dir)
        .map_err(|error| format!("{}: {error}", dir.display()))?
        .next()
        .is_none();
    if !is_empty {
        return Err(format!(
            "{} is not empty and holds no complete chain (an interrupted generation?): \
             remove it, or name another --dir",
            dir.display()
        ));
    }
    let started = StdInstant::now();
    generate_chain(dir, blocks, body_bytes)?;
    let marker = serde_json::to_string(&wanted).map_err(|error| error.to_string())?;
    genesis_files::write_new_synced(&marker_path, marker.as_bytes(), false)
        .map_err(|error| format!("{}: {error}", marker_path.display()))?;
    let time = started.elapsed();
    eprintln!(
        "history: generated {blocks} blocks in {:.1} s",
        time.as_secs_f64()
    );
    Ok(Some(time))
}

/// Writes the genesis, the proposer's and the server's keys, and the
/// signed chain into `dir` (see the module docs).
fn generate_chain(dir: &Path, blocks: u64, body_bytes: usize) -> Result<(), String> {
    let lead_ms = blocks
        .saturating_add(GENESIS_LEAD_SLOTS)
        .saturating_mul(SLOT_MS);
    let genesis_time_ms = crate::unix_ms_now()
        .checked_sub(lead_ms)
        .ok_or("the clock is too early for the chain to lie in the past")?;
    let written = genesis_files::write_genesis(
        dir,
        &GenesisOptions {
            proposers: 1,
            network_id: NETWORK_ID,
            slot_duration_ms: SLOT_MS,
            finality_depth_slots: FINALITY_DEPTH_SLOTS_DEFAULT,
            genesis_time_ms: Some(genesis_time_ms),
        },
        false,
    )
    .map_err(|error| format!("genesis: {error}"))?;
    let genesis = Arc::new(written.genesis);
    let key = genesis_files::load_proposer_key(&written.key_paths[0])
        .map_err(|error| format!("proposer key: {error}"))?;
    secret_files::write_key_file(
        &dir.join(SERVER_KEY_FILE),
        &meshsync_mio::generate_identity(),
        false,
    )
    .map_err(|error| format!("server key: {error}"))?;
    // The genesis was made from this key: it is its one proposer.
    let producer = BlockProducer::new(key, &genesis).expect("the key is the genesis's proposer");
    let mut store = BlockStore::open_with(
        &dir.join(SERVER_DATA_DIR),
        &StoreOptions {
            network: Some(StoreNetwork {
                network_id: NETWORK_ID,
                genesis_root: genesis.root(),
            }),
            ..StoreOptions::default()
        },
    )
    .map_err(|error| format!("store: {error}"))?;
    let depth = genesis.finality_depth_slots();
    // The roots of the last `depth + 1` slots: the oldest is the block
    // finalized once the newest is the head (one block every slot).
    let mut recent: VecDeque<Root> = VecDeque::with_capacity(depth as usize + 1);
    let mut batch: Vec<(Root, u64, Vec<u8>)> = Vec::with_capacity(STORE_BATCH_BLOCKS);
    // Blocks not yet finalized: each commit indexes those it finalizes, as
    // the node's own commits do.
    let mut unfinalized: VecDeque<(u64, Root)> = VecDeque::new();
    let mut rng = SplitMix64(0x4869_7374);
    let mut parent = genesis.root();
    let started = StdInstant::now();
    let progress_every = (blocks / 10).max(1);
    for slot in 1..=blocks {
        let mut body = vec![0; body_bytes];
        rng.fill_bytes(&mut body);
        let block = producer.produce(slot, parent, body);
        parent = block.root();
        batch.push((parent, slot, block.encode()));
        unfinalized.push_back((slot, parent));
        if recent.len() > depth as usize {
            recent.pop_front();
        }
        recent.push_back(parent);
        if batch.len() < STORE_BATCH_BLOCKS && slot < blocks {
            continue;
        }
        let finalized = (slot > depth).then(|| (recent[0], slot - depth));
        let finalized_slot = finalized.map_or(0, |(_, slot)| slot);
        let mut finalized_chain = Vec::new();
        while let Some(&(slot, root)) = unfinalized.front().filter(|(s, _)| *s <= finalized_slot) {
            finalized_chain.push((slot, root));
            unfinalized.pop_front();
        }
        let rows: Vec<(Root, u64, &[u8])> = batch
            .iter()
            .map(|(root, slot, bytes)| (*root, *slot, bytes.as_slice()))
            .collect();
        let watermark = SigningWatermark {
            proposer: producer.public_key(),
            slot,
        };
        store
            .commit(&rows, &[], finalized, &finalized_chain, Some(watermark))
            .map_err(|error| format!("store: {error}"))?;
        batch.clear();
        if slot % progress_every < STORE_BATCH_BLOCKS as u64 {
            eprintln!(
                "history: {slot} of {blocks} blocks written ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// What the joiner process (`meshsync bench history-joiner`) runs.
#[derive(Clone, Debug)]
pub struct JoinerOptions {
    /// The chain's genesis file.
    pub genesis: PathBuf,
    /// The server, kept connected.
    pub server: StaticPeerAddress,
    /// Where its metrics are served.
    pub metrics: SocketAddr,
}

/// `meshsync bench history-joiner`: a node without a data directory that
/// keeps the server connected, range-syncs from it alone at once, serves
/// its metrics, and stops at the end of its stdin.
pub fn joiner(options: &JoinerOptions) -> Result<(), String> {
    let chain = genesis_files::load_chain_config(Some(&options.genesis), &[], None)
        .map_err(|error| format!("the joiner: genesis: {error}"))?;
    let mut config = Config::new(chain.genesis.network_id());
    config.chain = chain;
    // One peer is the whole network here: sync from it without waiting
    // for more.
    config.sync.peers_min = 1;
    let mut driver = Driver::bind_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        config,
        meshsync_mio::generate_identity(),
        meshsync_mio::os_seed(),
        &DriverOptions {
            workers: workers::default_threads(),
            ..DriverOptions::default()
        },
    )
    .map_err(|error| format!("the joiner: {error}"))?;
    let _metrics = MetricsServer::start(options.metrics, driver.metrics())
        .map_err(|error| format!("the joiner: metrics on {}: {error}", options.metrics))?;
    driver.command(options.server.command());
    let node = driver
        .spawn("history-joiner")
        .map_err(|error| format!("the joiner: {error}"))?;
    // Whatever comes on stdin is ignored; its end (the bench closing it,
    // or ending) stops the node.
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while matches!(stdin.read(&mut sink), Ok(read) if read > 0) {}
    node.stop().map_err(|error| format!("the joiner: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_from_its_own_line_only() {
        let text =
            "# TYPE meshsync_head_slot gauge\nmeshsync_head_slot_x 9\nmeshsync_head_slot 42\n";
        assert_eq!(metric_value(text, "meshsync_head_slot"), Some(42));
        assert_eq!(
            metric_value("meshsync_head_slots 3\n", "meshsync_head_slot"),
            None
        );
    }

    #[test]
    fn startup_may_take_longer_the_longer_the_chain() {
        assert_eq!(startup_wait_max(0, 1), STARTUP_WAIT_BASE);
        let ten_gib = startup_wait_max(10 * 1024, 1024 * 1024);
        assert_eq!(ten_gib, STARTUP_WAIT_BASE + STARTUP_WAIT_PER_GIB * 10);
    }

    #[test]
    fn a_directory_with_another_chain_or_a_half_made_one_is_refused() {
        let dir = meshsync_mio::testing::TempDir::new("history-marker");
        let marker = ChainMarker {
            blocks: 50,
            body_bytes: 10,
            network_id: NETWORK_ID,
            slot_ms: SLOT_MS,
        };
        fs::write(
            dir.path().join(MARKER_FILE_NAME),
            serde_json::to_string(&marker).unwrap(),
        )
        .unwrap();
        assert_eq!(prepare_chain(dir.path(), 50, 10), Ok(None));
        let error = prepare_chain(dir.path(), 60, 10).unwrap_err();
        assert!(error.contains("50 blocks"), "{error}");
        let half = meshsync_mio::testing::TempDir::new("history-half");
        fs::write(half.path().join(GENESIS_FILE_NAME), "").unwrap();
        let error = prepare_chain(half.path(), 50, 10).unwrap_err();
        assert!(error.contains("not empty"), "{error}");
    }
}
