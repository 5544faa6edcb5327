//! `meshsync-sim`: run a named scenario from a seed and print its summary.
//!
//! ```text
//! meshsync-sim run --nodes 50 --seed 1 --duration 60s [--scenario connect] [--json]
//!                  [--latency-ms 25] [--jitter-pct 10]
//! ```
//!
//! Scenarios: `connect` (the default), `request-flood`, `unresponsive-peer`,
//! `static-peer-restart`; see `meshsync_sim::scenario`. What a scenario set
//! out to show is in the summary's `outcome`.
//!
//! With `--json`, stdout carries exactly one JSON object; logs go to stderr
//! (`RUST_LOG` sets their level, `warn` by default). The exit code is 1 if
//! any invariant was violated, so a failing seed can be bisected in a loop.

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use meshsync_core::Duration;
use meshsync_sim::network::NODES_MAX;
use meshsync_sim::scenario::SCENARIO_NAMES;
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
    /// Nodes in the world.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    nodes: u64,
    /// The world seed: the same seed replays the same run, bit for bit.
    #[arg(long)]
    seed: u64,
    /// Virtual time to simulate, e.g. 500ms, 60s, 2m.
    #[arg(long, value_parser = parse_duration)]
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
    let config = RunConfig {
        scenario: args.scenario,
        // Bounded by NODES_MAX, far below usize::MAX.
        nodes: args.nodes as usize,
        seed: args.seed,
        duration: args.duration,
        link: LinkModel {
            latency: Duration::from_millis(args.latency_ms),
            jitter_pct: args.jitter_pct,
            ..LinkModel::default()
        },
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
