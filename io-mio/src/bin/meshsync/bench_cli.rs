//! The `meshsync bench` subcommands: their flags and how each runs. Built
//! with the `bench` feature (on by default), which the in-memory benches
//! need for the core's `testing` network.
//!
//! Every subcommand prints its report as text on stdout, or with `--json`
//! as exactly one JSON object and nothing else on stdout (figures named
//! with their unit last: `tcp_handshakes_per_second`, `ratio_to_limit`),
//! for a script to compare runs without parsing text. Logs stay on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use meshsync_core::sync::range::SYNC_DISTANCE_SLOTS;
use meshsync_mio::{workers, StaticPeerAddress};

use crate::bench_gossip::{
    self, GOSSIP_BENCH_MESSAGES_MAX, GOSSIP_BENCH_MESSAGE_BYTES_MAX, GOSSIP_BENCH_NODES_MAX,
};
use crate::bench_history::{
    self, BODY_BYTES_DEFAULT, HISTORY_BLOCKS_MAX, PRODUCTION_SECS_MAX, RSS_ABORT_MIB_DEFAULT,
    RSS_BOUND_MB_DEFAULT,
};
use crate::{bench, bench_soak, bench_sync, bench_throughput};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Handshakes per second: two nodes in memory, then over loopback TCP.
    Handshakes {
        /// Handshakes in each measurement.
        #[arg(long, default_value_t = 1_000)]
        count: u64,
        /// Dialling nodes working at once in the TCP measurement.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Request serving on one thread (BlocksByRange and small application
    /// requests between two nodes in memory) against the per-byte limit
    /// (snappy and Noise over the same blocks), measured in the same run.
    Requests {
        /// BlocksByRange requests of 64 blocks to serve (and put through the limit).
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        requests: u64,
        /// Small application requests to serve.
        #[arg(long, value_name = "N", default_value_t = 300_000)]
        small_requests: u64,
        /// Bytes of each encoded signed block (header, signature and body: 180 to 65536).
        #[arg(long, value_name = "B", default_value_t = 1024)]
        block_bytes: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Initial sync: a fresh node range-syncs a signed chain from 32
    /// in-memory peers with a real worker pool, against the raw BLS
    /// batch-verify limit measured in the same run, for each thread count.
    Sync {
        /// Blocks in the chain: more than 32, the distance at which range sync starts.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        blocks: u64,
        /// Body bytes of each block.
        #[arg(long, value_name = "B", default_value_t = 1024)]
        body_bytes: usize,
        /// Worker thread counts to measure (default: 1 and all cores).
        #[arg(long, value_name = "T", value_delimiter = ',')]
        threads: Vec<usize>,
        #[command(flatten)]
        output: Output,
    },
    /// Application bytes per second between two drivers over one loopback
    /// TCP connection, in 1 MiB answers of an application protocol,
    /// against Noise seal + open of the same bytes on one core, measured in
    /// the same run; also per CPU-second of the whole process.
    Throughput {
        /// Payload bytes to move (at most 4 GiB, the server's serving burst).
        #[arg(long, value_name = "B", default_value_t = 1 << 30)]
        bytes: u64,
        #[command(flatten)]
        output: Output,
    },
    /// One node under churn for a bounded time: client nodes connect,
    /// handshake, exchange requests, follow gossip and leave with Goodbye,
    /// bare sockets connect and drop; memory, file descriptors and the
    /// node's queues are sampled as it goes and printed as a table. The
    /// node runs in a process of its own, so its memory and file
    /// descriptors are told apart from the clients'.
    Soak {
        /// Client threads churning at once.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// How long the soak lasts, seconds.
        #[arg(long, value_name = "S", default_value_t = 600)]
        duration_secs: u64,
        /// Seconds between samples.
        #[arg(long, value_name = "S", default_value_t = 10)]
        sample_secs: u64,
        #[command(flatten)]
        output: Output,
    },
    /// One gossip topic among real drivers in this process over loopback
    /// TCP, each node's application validating every message: messages
    /// from rotating publishers at a fixed rate, then delivery ratio,
    /// latency, duplicates per delivery and process CPU per delivery.
    Gossip {
        /// Nodes, each a driver on its own thread.
        #[arg(long, default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(2..=GOSSIP_BENCH_NODES_MAX as u64))]
        nodes: u64,
        /// Payload bytes of each message, its 16-byte header included.
        #[arg(long, value_name = "B", default_value_t = 1024,
              value_parser = clap::value_parser!(u64)
                  .range(bench_gossip::Header::BYTES as u64..=GOSSIP_BENCH_MESSAGE_BYTES_MAX as u64))]
        size: u64,
        /// Messages published per second, open loop.
        #[arg(long, value_name = "R", default_value_t = 50.0, value_parser = parse_rate)]
        rate: f64,
        /// Messages to publish.
        #[arg(long, value_name = "N", default_value_t = 1_000,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(GOSSIP_BENCH_MESSAGES_MAX)))]
        messages: u32,
        /// Others each node dials (duplicate edges dropped, so each has at least this many peers).
        #[arg(long, default_value_t = 6,
              value_parser = clap::value_parser!(u64).range(1..GOSSIP_BENCH_NODES_MAX as u64))]
        degree: u64,
        /// Idle seconds after connecting, before the meshes are checked.
        #[arg(long, value_name = "S", default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(..=bench_gossip::WARMUP_SECS_MAX))]
        warmup_secs: u64,
        /// The longest wait for deliveries after the last publish, seconds.
        #[arg(long, value_name = "S", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(..=bench_gossip::DRAIN_SECS_MAX))]
        drain_secs: u64,
        /// Seeds the graph and every node's identity and randomness.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        output: Output,
    },
    /// Resident memory of a node whose store holds a long chain: a chain
    /// of --blocks blocks is generated into --dir (or found there from an
    /// earlier run), then the node (`meshsync node` of --meshsync, in a
    /// process of its own) is sampled every 100 ms through start-up, while
    /// it serves a full range sync to a fresh node, and while it produces
    /// for --production-secs; each phase's peak is checked against
    /// --bound-mb.
    History {
        /// Blocks in the stored chain, one per slot.
        #[arg(long, value_name = "N", default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(SYNC_DISTANCE_SLOTS + 1..=HISTORY_BLOCKS_MAX))]
        blocks: u64,
        /// Body bytes of each block (default: the largest, a 1 MiB encoded block).
        #[arg(long, value_name = "B", default_value_t = BODY_BYTES_DEFAULT as u64,
              value_parser = clap::value_parser!(u64).range(..=BODY_BYTES_DEFAULT as u64))]
        body_bytes: u64,
        /// The node binary to measure (default: this program).
        #[arg(long, value_name = "PATH")]
        meshsync: Option<PathBuf>,
        /// Where the chain is generated, or reused if an earlier run left
        /// it there; kept (default: a temporary directory, removed at the end).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// How long the production phase lasts, seconds.
        #[arg(long, value_name = "S", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..=PRODUCTION_SECS_MAX))]
        production_secs: u64,
        /// The bound on the node's peak resident memory in every phase, MB (10^6 bytes).
        #[arg(long, value_name = "MB", default_value_t = RSS_BOUND_MB_DEFAULT)]
        bound_mb: u64,
        /// Stop the run when the two nodes' resident memory together passes this, MiB.
        #[arg(long, value_name = "MIB", default_value_t = RSS_ABORT_MIB_DEFAULT)]
        rss_abort_mib: u64,
        /// Exit with an error when a phase fails (the report is printed first).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The node of `bench soak`, which starts it in a process of its own:
    /// prints one JSON line once listening, answers each `sample` line on
    /// stdin with one JSON line, and stops at the end of stdin.
    #[command(hide = true)]
    SoakNode {
        /// Where to listen (port 0: a free one, printed).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Start of slot 0 of the devnet chain, ms since the Unix epoch.
        #[arg(long, value_name = "T")]
        genesis_time_ms: u64,
        /// Clients of the soak: room for each as a peer.
        #[arg(long, value_name = "N")]
        clients: usize,
    },
    /// The fresh node of `bench history`, which starts it in a process of
    /// its own: keeps the server connected, range-syncs from it, serves
    /// its metrics, and stops at the end of its stdin.
    #[command(hide = true)]
    HistoryJoiner {
        /// The chain's genesis file.
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// The node to sync from.
        #[arg(long = "static-peer", value_name = "ADDR@PEERID")]
        server: StaticPeerAddress,
        /// Where to serve metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: SocketAddr,
    },
}

/// How a bench prints its report, the same for every subcommand.
#[derive(Args, Debug, Clone, Copy)]
pub struct Output {
    /// Print the figures as one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

impl Output {
    /// Prints `text` as it is, or `json` on one line.
    fn print(self, text: &dyn std::fmt::Display, json: serde_json::Value) {
        if self.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    }
}

/// `--rate`: a number of messages per second within the benchmark's bounds.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    bench_gossip::check_rate(rate)?;
    Ok(rate)
}

/// Runs one bench and prints its report.
pub fn run(command: BenchCommand) -> Result<(), String> {
    match command {
        BenchCommand::Handshakes {
            count,
            parallel,
            output,
        } => {
            if count == 0 || parallel == 0 {
                return Err("--count and --parallel must be at least 1".to_string());
            }
            let report = bench::handshakes(count, parallel).map_err(|error| error.to_string())?;
            output.print(&report, report.json());
            Ok(())
        }
        BenchCommand::Requests {
            requests,
            small_requests,
            block_bytes,
            output,
        } => {
            if requests == 0 || small_requests == 0 {
                return Err("--requests and --small-requests must be at least 1".to_string());
            }
            let options = bench::RequestOptions {
                requests,
                small_requests,
                block_bytes,
            };
            let report = bench::requests(options).map_err(|error| error.to_string())?;
            output.print(&report, report.json());
            Ok(())
        }
        BenchCommand::Sync {
            blocks,
            body_bytes,
            threads,
            output,
        } => {
            let threads = if threads.is_empty() {
                let all = workers::default_threads();
                if all > 1 {
                    vec![1, all]
                } else {
                    vec![1]
                }
            } else {
                threads
            };
            let options = bench_sync::SyncBenchOptions {
                blocks,
                body_bytes,
                threads,
            };
            let report = bench_sync::sync(options)?;
            // The text ends in a newline of its own.
            output.print(&report.to_string().trim_end(), report.json());
            Ok(())
        }
        BenchCommand::Throughput { bytes, output } => {
            let report = bench_throughput::throughput(bytes)?;
            output.print(&report, report.json());
            Ok(())
        }
        BenchCommand::Soak {
            clients,
            duration_secs,
            sample_secs,
            output,
        } => {
            let report = bench_soak::soak(bench_soak::SoakOptions {
                clients,
                duration: Duration::from_secs(duration_secs),
                sample: Duration::from_secs(sample_secs),
            })?;
            output.print(&report, report.json());
            Ok(())
        }
        BenchCommand::Gossip {
            nodes,
            size,
            rate,
            messages,
            degree,
            warmup_secs,
            drain_secs,
            seed,
            output,
        } => {
            // Each within its usize range: the parser bounded them far below.
            let options = bench_gossip::GossipOptions {
                nodes: nodes as usize,
                size_bytes: size as usize,
                rate_per_second: rate,
                messages,
                degree: degree as usize,
                warmup: Duration::from_secs(warmup_secs),
                drain: Duration::from_secs(drain_secs),
                seed,
            };
            let report = bench_gossip::gossip(options)?;
            output.print(&report, report.json());
            Ok(())
        }
        BenchCommand::History {
            blocks,
            body_bytes,
            meshsync,
            dir,
            production_secs,
            bound_mb,
            rss_abort_mib,
            check,
            output,
        } => {
            let report = bench_history::history(bench_history::HistoryOptions {
                blocks,
                // Within usize: the parser bounded it by a usize constant.
                body_bytes: body_bytes as usize,
                meshsync,
                dir,
                production: Duration::from_secs(production_secs),
                bound_mb,
                rss_abort_mib,
            })?;
            output.print(&report, report.json());
            if check && !report.passed() {
                return Err("a phase failed (--check)".to_string());
            }
            Ok(())
        }
        BenchCommand::HistoryJoiner {
            genesis,
            server,
            metrics,
        } => bench_history::joiner(&bench_history::JoinerOptions {
            genesis,
            server,
            metrics,
        }),
        BenchCommand::SoakNode {
            listen,
            genesis_time_ms,
            clients,
        } => bench_soak::soak_node(&bench_soak::NodeOptions {
            listen,
            genesis_time_ms,
            clients,
        }),
    }
}
