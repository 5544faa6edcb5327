//! `meshsync-sim`: run a named scenario from a seed and print its summary.
//!
//! ```text
//! meshsync-sim run --seed 1 [--nodes 50] [--duration 60s] [--scenario connect] [--json]
//!                  [--latency-ms 25] [--jitter-pct 10]
//!                  [--floodsub] [--publishers 100] [--messages-per-second 10] [--sybils 20]
//!                  [--body-bytes 1024]
//! ```
//!
//! Scenarios: `connect` (the default), `request-flood`, `unresponsive-peer`,
//! `static-peer-restart`, `budget-sybils` (13 nodes: a target, 4 honest
//! requesters and 8 Sybils; `--sybils PCT` sets the Sybils' share of
//! `--nodes`), and the gossip ones: `gossip-1k`, `gossip-blocks`,
//! `gossip-spam`, `gossip-eclipse`, `gossip-withhold`, `cold-boot`,
//! `slow-readers`, `prune-flood`; see
//! `meshsync_sim::scenario`. What a scenario set out to show is in the
//! summary's `outcome`. `--nodes` defaults to the scenario's own (1,000 for
//! `gossip-1k`, 200 for `gossip-blocks`, 50 for most), `--duration` to 60 s
//! (for gossip scenarios: the publishing time, between a warm-up and a drain).
//! The gossip flags change the gossip scenarios only.
//!
//! Chain scenarios: `late-joiner` and `hostile-servers` (21 nodes: a joiner
//! and 20 peers holding 10,000 blocks; `--duration` bounds the sync),
//! `partition-heal` (20 nodes; `--duration` bounds convergence after the
//! heal), `crash-restart` (20 nodes; crashes until `--duration`) and
//! `sync-liars` (8 producing nodes and 6 liars; `--duration` is the whole
//! run, after a baseline run without liars); `--body-bytes` sets their block
//! bodies (default 1024).
//!
//! With `--json`, stdout carries exactly one JSON object; logs go to stderr
//! (`RUST_LOG` sets their level, `warn` by default). The exit code is 1 if
//! any invariant was violated, so a failing seed can be bisected in a loop.

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use meshsync_core::Duration;
use meshsync_sim::network::NODES_MAX;
use meshsync_sim::scenario::{nodes_default, GossipOptions, SCENARIO_NAMES};
use meshsync_sim::{parse_duration, LinkModel, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "meshsync-sim",
    version,
    about = "Deterministic meshsync network simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand, Debug)]
enum CliCommand {
    /// Run one scenario and print its summary.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Nodes in the world (default: the scenario's own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    nodes: Option<u64>,
    /// The world seed: the same seed replays the same run, bit for bit.
    #[arg(long)]
    seed: u64,
    /// Virtual time to simulate, e.g. 500ms, 60s, 2m (gossip scenarios:
    /// time spent publishing, after their warm-up and before their drain).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    duration: Duration,
    /// The scenario to run.
    #[arg(long, default_value = "connect", value_parser = PossibleValuesParser::new(SCENARIO_NAMES))]
    scenario: String,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
    /// One-way link latency in milliseconds, before jitter.
    #[arg(long, default_value_t = LinkModel::default().latency.as_millis() as u64)]
    latency_ms: u64,
    /// Jitter in percent of the latency, either way.
    #[arg(long, default_value_t = LinkModel::default().jitter_pct,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    jitter_pct: u32,
    /// Gossip scenarios: every node runs the floodsub baseline instead of the mesh.
    #[arg(long)]
    floodsub: bool,
    /// Gossip scenarios: honest nodes that publish, taking turns.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    publishers: Option<u64>,
    /// Gossip scenarios: messages per second over all publishers (gossip-1k:
    /// 10 means 100 publishers each every 10 s; 1000 means each 10 per second).
    #[arg(long)]
    messages_per_second: Option<f64>,
    /// Gossip attack scenarios and budget-sybils: Sybils, in percent of --nodes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=90))]
    sybils: Option<u32>,
    /// Chain scenarios: body bytes per block (default 1024).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    body_bytes: Option<u64>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    if let Some(rate) = args.messages_per_second {
        if !(rate > 0.0 && rate <= 1_000_000.0) {
            eprintln!("error: --messages-per-second must be in (0, 1000000]");
            return ExitCode::from(2);
        }
    }
    let nodes = args
        .nodes
        // Bounded by NODES_MAX, far below usize::MAX.
        .map_or_else(|| nodes_default(&args.scenario), |nodes| nodes as usize);
    let config = RunConfig {
        scenario: args.scenario,
        nodes,
        seed: args.seed,
        duration: args.duration,
        link: LinkModel {
            latency: Duration::from_millis(args.latency_ms),
            jitter_pct: args.jitter_pct,
            ..LinkModel::default()
        },
        gossip: GossipOptions {
            floodsub: args.floodsub,
            // Bounded by NODES_MAX.
            publishers: args.publishers.map(|publishers| publishers as usize),
            messages_per_second: args.messages_per_second,
            sybils_pct: args.sybils,
        },
        // Bounded by 1,000,000 above.
        body_bytes: args.body_bytes.map(|bytes| bytes as usize),
    };
    let summary = match meshsync_sim::run(&config) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        // A struct of numbers, strings and bools always serialises.
        let json = serde_json::to_string(&summary).expect("summary serialises");
        println!("{json}");
    } else {
        println!("{summary}");
    }
    if summary.invariant_violations > 0 {
        eprintln!(
            "{} invariant violations; replay with --seed {}",
            summary.invariant_violations, summary.seed
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
