//! The `meshsync` binary: key generation, a node, a local devnet, benchmarks.
//!
//! # Design
//! A thin clap front end over the driver library (`meshsync_mio`). What only
//! the command line needs lives here, one module per concern: writing key
//! files ([`secret_files`]), genesis and proposer-key files
//! ([`genesis_files`]), signing-watermark files ([`watermark_files`]), the
//! node's flags and configuration file ([`node_config`]), text or JSON logs
//! ([`logging`]), what a second signal does ([`shutdown`]), the
//! in-process devnet ([`devnet`]), and the benchmarks ([`mod@bench`],
//! [`bench_sync`], [`bench_throughput`], [`bench_history`], timed by
//! [`cpu_time`]).

#![forbid(unsafe_code)]

/// The binary's allocator. A node moves messages of up to a few MiB through
/// buffers that live for one message; glibc's malloc maps such buffers
/// fresh and unmaps them when freed, so every one costs a page fault per
/// 4 KiB, which in `meshsync bench throughput` took a third of the CPU.
/// mimalloc keeps freed pages for reuse. It is built with its `no_thp`
/// feature: by default it asks the kernel for transparent huge pages on its
/// regions, and then every region it took fresh from the system faulted in
/// 2 MiB pages the kernel zeroed whole (a sixth of the CPU of a 30-node
/// gossip run, up to a fifth of a bulk transfer's). The library leaves the
/// choice of allocator to the application that embeds the driver.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_cli;
#[cfg(feature = "bench")]
mod bench_gossip;
#[cfg(feature = "bench")]
mod bench_history;
#[cfg(feature = "bench")]
mod bench_soak;
#[cfg(feature = "bench")]
mod bench_sync;
#[cfg(feature = "bench")]
mod bench_throughput;
#[cfg(feature = "bench")]
mod cpu_time;
mod devnet;
mod genesis_files;
mod logging;
mod node_config;
mod run_dir;
mod secret_files;
mod shutdown;
mod watermark_files;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use meshsync_core::chain::genesis::FINALITY_DEPTH_SLOTS_DEFAULT;
use meshsync_core::chain::DEVNET_BODY_BYTES_DEFAULT;
use meshsync_core::peer::ConnectionLimits;
use meshsync_core::Config;
use meshsync_mio::driver::DriverOptions;
use meshsync_mio::metrics::MetricsServer;
use meshsync_mio::{keyfile, workers, Driver};

use crate::genesis_files::GenesisOptions;
use crate::node_config::{DiscoveryPlan, LogFormat, NodeConfig, NodeFlags};

/// meshsync: a peer-to-peer block sync engine.
#[derive(Parser, Debug)]
#[command(name = "meshsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand, Debug)]
enum CliCommand {
    /// Create a new identity and write its secret key to a file (mode 0600).
    Keygen {
        /// Where to write the key file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Create a new network: DIR/genesis.toml and one proposer key file
    /// (DIR/proposer-0.key, proposer-1.key, ..., mode 0600) per proposer, with fresh keys.
    Genesis {
        /// Number of proposers (block signers).
        #[arg(long, value_name = "N")]
        proposers: usize,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Slot duration in milliseconds.
        #[arg(long = "slot-ms", value_name = "MS", default_value_t = genesis_files::SLOT_DURATION_MS_DEFAULT)]
        slot_duration_ms: u64,
        /// Network id; nodes must be started with the same one.
        #[arg(long = "network-id", value_name = "ID", default_value_t = genesis_files::NETWORK_ID_DEFAULT)]
        network_id: u64,
        /// Slots below the head at which a block is final.
        #[arg(long = "finality-depth", value_name = "SLOTS", default_value_t = FINALITY_DEPTH_SLOTS_DEFAULT)]
        finality_depth_slots: u64,
        /// Start of slot 0, in milliseconds since the Unix epoch (default: the next whole second).
        #[arg(long = "genesis-time-ms", value_name = "T")]
        genesis_time_ms: Option<u64>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run one node until SIGINT or SIGTERM. Options come from the flags
    /// and, for those not given, from the --config file.
    // Boxed: the flags are many, and every other command would carry their size.
    Node(Box<NodeFlags>),
    /// Move proposer keys between machines safely: export or import the
    /// signing watermarks (each key's highest signed slot) of a data directory.
    Watermark {
        #[command(subcommand)]
        command: WatermarkCommand,
    },
    /// Run N connected nodes on 127.0.0.1 in this process, P of them
    /// proposing blocks on a fresh devnet genesis, and print every node's
    /// head slot and peer count once a second.
    Devnet {
        /// Number of nodes.
        #[arg(long, value_name = "N")]
        nodes: usize,
        /// Node i listens on P+i; 0 picks free ports.
        #[arg(long, value_name = "P", default_value_t = 0)]
        base_port: u16,
        /// Network id of every node.
        #[arg(long = "network", value_name = "ID", default_value_t = 1)]
        network_id: u64,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "S")]
        seconds: Option<u64>,
        /// Proposers: nodes 0..P hold one devnet proposer key each (0: no blocks).
        #[arg(long, value_name = "P", default_value_t = 1)]
        proposers: usize,
        /// Slot duration in milliseconds.
        #[arg(long = "slot-ms", value_name = "MS", default_value_t = devnet::SLOT_DURATION_MS_DEFAULT)]
        slot_duration_ms: u64,
        /// Body bytes of each produced block.
        #[arg(long = "body-bytes", value_name = "B", default_value_t = DEVNET_BODY_BYTES_DEFAULT)]
        body_bytes: usize,
        /// Add one more node (no key) this many seconds after the start.
        #[arg(long = "late-node-at", value_name = "SECONDS")]
        late_node_at: Option<u64>,
        /// Parent of the nodes' data directories (node-0, node-1, ...);
        /// default: a fresh temporary directory, removed at exit.
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve each node's metrics on http://127.0.0.1:P+i/metrics (node i);
        /// 0 picks free ports.
        #[arg(long = "metrics-base-port", value_name = "P")]
        metrics_base_port: Option<u16>,
    },
    /// Measure the driver against the core's limit.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        bench: bench_cli::BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum WatermarkCommand {
    /// Write the signing watermarks of a stopped node's data directory to a
    /// JSON file.
    Export {
        /// The node's data directory (its node must be stopped).
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: PathBuf,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Raise the signing watermarks of a data directory (created if missing)
    /// to those of a file written by `export`; lower ones change nothing.
    Import {
        /// The data directory the keys will run on.
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: PathBuf,
        /// The file `meshsync watermark export` wrote.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The node's log format may come from its configuration file.
        CliCommand::Node(flags) => run_node(*flags),
        command => {
            // A benchmark would otherwise log two lines per handshake and measure the logger.
            let default_level = match command {
                #[cfg(feature = "bench")]
                CliCommand::Bench { .. } => "warn",
                _ => "info",
            };
            logging::init(default_level, LogFormat::Text);
            run(command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_node(flags: NodeFlags) -> Result<(), String> {
    let print_config = flags.print_config;
    let config = flags.resolve()?;
    if print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    logging::init("info", config.log_format);
    node(config)
}

fn run(command: CliCommand) -> Result<(), String> {
    match command {
        CliCommand::Keygen { out, force } => keygen(&out, force),
        CliCommand::Genesis {
            proposers,
            out,
            slot_duration_ms,
            network_id,
            finality_depth_slots,
            genesis_time_ms,
            force,
        } => genesis(
            &out,
            &GenesisOptions {
                proposers,
                network_id,
                slot_duration_ms,
                finality_depth_slots,
                genesis_time_ms,
            },
            force,
        ),
        CliCommand::Node(flags) => run_node(*flags),
        CliCommand::Watermark { command } => watermark(command),
        CliCommand::Devnet {
            nodes,
            base_port,
            network_id,
            seconds,
            proposers,
            slot_duration_ms,
            body_bytes,
            late_node_at,
            data_dir,
            metrics_base_port,
        } => devnet::run(&devnet::DevnetOptions {
            nodes,
            base_port,
            network_id,
            run_for: seconds.map(Duration::from_secs),
            proposers,
            slot_duration_ms,
            body_bytes,
            late_node_at: late_node_at.map(Duration::from_secs),
            data_dir,
            metrics_base_port,
        })
        .map_err(|error| format!("devnet: {error}")),
        #[cfg(feature = "bench")]
        CliCommand::Bench { bench } => bench_cli::run(bench),
    }
}

fn watermark(command: WatermarkCommand) -> Result<(), String> {
    match command {
        WatermarkCommand::Export {
            data_dir,
            out,
            force,
        } => {
            let count = watermark_files::export(&data_dir, &out, force)
                .map_err(|error| format!("watermark export: {error}"))?;
            println!("{count} signing watermarks written to {}", out.display());
        }
        WatermarkCommand::Import { data_dir, input } => {
            let watermarks = watermark_files::import(&data_dir, &input)
                .map_err(|error| format!("watermark import: {error}"))?;
            for watermark in &watermarks {
                println!(
                    "proposer key {}: signed up to slot {}",
                    watermark.proposer.to_hex(),
                    watermark.slot
                );
            }
            println!(
                "{} signing watermarks recorded in {}",
                watermarks.len(),
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it: a
/// clock that far wrong breaks more than record numbers).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn keygen(out: &Path, force: bool) -> Result<(), String> {
    let identity = meshsync_mio::generate_identity();
    secret_files::write_key_file(out, &identity, force).map_err(|error| error.to_string())?;
    println!("{}", identity.peer_id());
    Ok(())
}

fn genesis(out: &Path, options: &GenesisOptions, force: bool) -> Result<(), String> {
    let written =
        genesis_files::write_genesis(out, options, force).map_err(|error| error.to_string())?;
    let root = format!("{:x}", written.genesis.root());
    println!("genesis {}", written.genesis_path.display());
    println!("genesis root {root}");
    println!(
        "network {} starts at {} ms, slots of {} ms",
        written.genesis.network_id(),
        written.genesis.genesis_time_ms(),
        written.genesis.slot_duration_ms()
    );
    for path in &written.key_paths {
        println!("proposer key {}", path.display());
    }
    Ok(())
}

fn node(options: NodeConfig) -> Result<(), String> {
    let identity = keyfile::read_key_file(&options.key)
        .map_err(|error| format!("cannot start the node: key: {error}"))?;
    // `resolve` checked the body size against BLOCK_BODY_BYTES_MAX.
    let mut chain = genesis_files::load_chain_config(
        options.genesis.as_deref(),
        &options.proposer_keys,
        options.network_id,
    )
    .map_err(|error| {
        // A proposer key file's error is the key's, not the genesis's.
        let is_key = error
            .path()
            .is_some_and(|path| options.proposer_keys.iter().any(|key| key == path));
        let cause = if is_key { "key" } else { "genesis" };
        format!("cannot start the node: {cause}: {error}")
    })?;
    chain.body_bytes = options.body_bytes;
    let mut config = Config::new(chain.genesis.network_id())
        .with_peer_silence_timeout(Duration::from_secs(options.peer_silence_secs));
    config.chain = chain;
    config.peer.peers_target = options.target_peers;
    config.peer.limits = ConnectionLimits::for_peers_max(options.max_peers);
    // Our record must outnumber every record an earlier run signed, and
    // the core reads no clock: the wall clock at start, in milliseconds.
    // Its warning waits for the node to start: a node refused for its
    // store or its port has more to say than why discovery is off.
    let discovery_warning = match options.discovery(unix_ms_now()) {
        DiscoveryPlan::On(discovery) => {
            config.discovery = Some(discovery);
            None
        }
        DiscoveryPlan::Off { warning } => warning,
    };
    let discovery = config.discovery.clone();
    let driver_options = DriverOptions {
        workers: options.workers.unwrap_or_else(workers::default_threads),
        data_dir: options.data_dir,
        repair: options.repair,
        store_failing_exit_after: Duration::from_secs(options.store_failing_exit_secs),
        clock: options.clock_jump,
        accept_fresh_watermark: options.accept_fresh_watermark,
        status_interval: (options.status_interval_secs > 0)
            .then(|| Duration::from_secs(options.status_interval_secs)),
        record: options.record,
        faults: Default::default(),
    };
    let mut driver = Driver::bind_with(
        options.listen,
        config,
        identity,
        meshsync_mio::os_seed(),
        &driver_options,
    )
    // The error starts with its cause: "network: cannot listen on ADDR",
    // "store: block store PATH ...", "watermark: ...", or "resources: ...".
    .map_err(|error| format!("cannot start the node: {error}"))?;
    let _metrics_server = match options.metrics {
        None => None,
        Some(addr) => {
            let server = MetricsServer::start(addr, driver.metrics()).map_err(|error| {
                format!("cannot start the node: metrics: cannot listen on {addr}: {error}")
            })?;
            log::info!(
                "[{:?}] serving metrics on http://{}/metrics",
                driver.peer_id(),
                server.local_addr()
            );
            Some(server)
        }
    };
    shutdown::watch_signals()
        .and_then(|()| driver.catch_signals())
        .map_err(|error| format!("cannot install signal handlers: {error}"))?;
    if let Some(warning) = discovery_warning {
        log::warn!("[{:?}] {warning}", driver.peer_id());
    }
    // What the node signed, read back: the core may still have refused
    // the configuration (it logs why), and the bound port is in it now.
    match (&discovery, driver.node().discovery()) {
        (Some(discovery), Some(machine)) => log::info!(
            "[{:?}] discovery on: {}, {} bootnodes, aiming for {} peers{}",
            driver.peer_id(),
            match discovery.learn_address_port {
                Some(port) => format!(
                    "no address to advertise yet: learning it from what peers see \
                     (port {port}); --advertise ADDR names it instead"
                ),
                None => format!(
                    "advertising {}",
                    machine
                        .local_record()
                        .addresses()
                        .iter()
                        .map(|addr| addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            discovery.bootnodes.len(),
            discovery.peers_target,
            if discovery.allow_private {
                ", private addresses allowed"
            } else {
                ""
            }
        ),
        _ => log::info!("[{:?}] discovery off", driver.peer_id()),
    }
    // `--peer`: one dial each, never repeated.
    for peer in &options.peers {
        driver.command(peer.dial_command());
    }
    // `--static-peer`: dialled now and redialled by the core whenever it
    // drops; `resolve` kept the list within the core's STATIC_PEERS_MAX.
    for peer in &options.static_peers {
        log::info!(
            "[{:?}] static peer {peer}: kept connected, redialled with backoff",
            driver.peer_id()
        );
        driver.command(peer.command());
    }
    driver
        .run()
        .map_err(|error| format!("node stopped: {error}"))
}
