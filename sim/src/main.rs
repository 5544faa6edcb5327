//! `meshsync-sim`: run a named scenario from a seed and print its summary.
//!
//! ```text
//! meshsync-sim run --seed 1 [--nodes 50] [--duration 60s] [--scenario connect] [--json]
//!                  [--latency-ms 25] [--jitter-pct 10]
//!                  [--floodsub] [--publishers 100] [--messages-per-second 10] [--sybils 20]
//!                  [--body-bytes 1024] [--report DIR]
//! ```
//!
//! Scenarios: `connect` (the default), `request-flood`, `unresponsive-peer`,
//! `static-peer-restart`, `budget-sybils` (13 nodes: a target, 4 honest
//! requesters and 8 Sybils; `--sybils PCT` sets the Sybils' share of
//! `--nodes`), `discovery`, `dht-eclipse` (`--nodes` honest nodes, 50 by
//! default, and 200 Sybils from one /16; `--duration` runs after the
//! victim's start at 30 s), `handshake-flood` (250 mute hosts and 6 honest
//! dialers; `--nodes` is ignored), and the gossip ones: `gossip-1k`, `gossip-blocks`,
//! `gossip-spam`, `gossip-eclipse`, `gossip-withhold`, `cold-boot`,
//! `slow-readers`, `prune-flood`; `discovery` and `restart-recall` (60
//! nodes each; for `restart-recall`, `--duration` is the watch after the
//! restart, 110 s into the run); `churn` (500 nodes for 30 min by
//! default, 30 % of them replaced every 5 min while gossip runs; a
//! shorter `--duration` has fewer rounds); see `meshsync_sim::scenario`. What a
//! scenario set out to show is in the summary's `outcome`. `--nodes` defaults to the scenario's own (1,000 for
//! `gossip-1k`, 500 for `churn`, 200 for `gossip-blocks`, 50 for most),
//! `--duration` to 60 s (120 s for `discovery`, 30 min for `churn`, 20 s
//! for `handshake-flood`; for gossip scenarios: the publishing time,
//! between a warm-up and a drain).
//! The gossip flags change the gossip scenarios only.
//!
//! Chain scenarios: `late-joiner` and `hostile-servers` (21 nodes: a joiner
//! and 20 peers holding 10,000 blocks; `--duration` bounds the sync),
//! `partition-heal` (20 nodes; `--duration` bounds convergence after the
//! heal), `crash-restart` (20 nodes; crashes until `--duration`) and
//! `sync-liars` (8 producing nodes and 6 liars; `--duration` is the whole
//! run, after a baseline run without liars); `--body-bytes` sets their block
//! bodies (default 1024). The 10,000-block chain is signed once and its
//! signatures kept in `--chain-cache DIR` (default
//! `$XDG_CACHE_HOME/meshsync-sim`, else `~/.cache/meshsync-sim`; `off` keeps
//! none), so later runs rebuild it in milliseconds; the run is the same
//! either way (see `meshsync_sim::chains::saved`).
//!
//! With `--report DIR`, the run is sampled once per virtual second (head
//! slot and peers of every node, crashes, restarts, partitions; sampling
//! only reads, so the trace hash is unchanged) and SVG plots go into `DIR`:
//! peers per node for every scenario, head slot per node when the run has
//! a chain, and the delivery-latency CDF for the gossip scenarios, which
//! draws the mesh and floodsub curves side by side once both modes ran
//! into `DIR` with the same scenario and seed; e.g.
//! `meshsync-sim run --scenario crash-restart --seed 1 --report docs/images`
//! (see `meshsync_sim::report`).
//!
//! With `--json`, stdout carries exactly one JSON object; logs go to stderr
//! (`RUST_LOG` sets their level, `warn` by default). The exit code is 1 if
//! any invariant was violated or the scenario broke one of its bounds (the
//! summary's `bounds_broken`; the chain scenarios state theirs).
//!
//! ```text
//! meshsync-sim campaign --scenario NAME --seeds 1..40 [--jobs 2] [--shard 0/4]
//!                       [--json FILE] [any `run` flag but --seed and --json]
//! meshsync-sim campaign merge FILE... [--json FILE]
//! ```
//!
//! A campaign runs every seed of the range (both ends included) on `--jobs`
//! worker threads (default 1), each run single-threaded and deterministic;
//! prints a line per failing seed (invariant, bound or panic) ending with
//! the `meshsync-sim run ...` command that replays it, then a one-line
//! summary; writes every seed's outcome to `--json FILE`; and exits 1 if
//! any run failed. `--shard I/N` runs only the seeds whose index in the
//! range is `I` modulo `N`; `campaign merge` joins the shards' files (see
//! `meshsync_sim::campaign`).
//!
//! ```text
//! meshsync-sim replay FILE
//! ```
//!
//! Replays a recording of a production node (`meshsync node --record
//! FILE`): rebuilds the node from its seed, identity and configuration,
//! feeds it every recorded input at its instant, and checks the hash of its
//! actions at each checkpoint the recording logged. Prints the inputs
//! replayed, the checkpoints matched and the final hash, and exits 0; at
//! the first checkpoint that differs, names it (the inputs it covers and
//! the instant of the last) and exits 1; exits 2 if the file cannot be
//! read (see `meshsync_sim::replay`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use meshsync_core::Duration;
use meshsync_sim::campaign::{
    failure_line, run_campaign, CampaignConfig, CampaignSummary, SeedRange, Shard,
    CAMPAIGN_JOBS_MAX,
};
use meshsync_sim::network::NODES_MAX;
use meshsync_sim::scenario::{duration_default, nodes_default, GossipOptions, SCENARIO_NAMES};
use meshsync_sim::{format_duration, parse_duration, ChainCache, LinkModel, RunConfig};

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
    /// Run one scenario over a range of seeds and report the failing ones.
    Campaign(CampaignArgs),
    /// Replay a recording of a production node (`meshsync node --record
    /// FILE`) and check its actions against the recorded hashes.
    Replay {
        /// The recording.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The world seed: the same seed replays the same run, bit for bit.
    #[arg(long)]
    seed: u64,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Sample the run once per virtual second and write SVG plots into DIR
    /// (see `meshsync_sim::report`).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct CampaignArgs {
    #[command(subcommand)]
    command: Option<CampaignCommand>,
    /// Seeds to run, both ends included: 1..40 is forty runs.
    #[arg(long, required = true)]
    seeds: Option<SeedRange>,
    /// Worker threads; each run is one thread and deterministic.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=CAMPAIGN_JOBS_MAX as u64))]
    jobs: u64,
    /// Run only the seeds whose index in the range is I modulo N.
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    shard: Shard,
    /// Write the campaign's summary (every seed's outcome) to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Subcommand, Debug)]
enum CampaignCommand {
    /// Join shard summaries of one campaign into one; exit 1 if any run failed.
    Merge(MergeArgs),
}

#[derive(clap::Args, Debug)]
struct MergeArgs {
    /// Summaries written by `campaign --shard I/N --json FILE`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Write the merged summary to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The world a run builds: everything but its seed.
#[derive(clap::Args, Debug)]
struct WorldArgs {
    /// Nodes in the world (default: the scenario's own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    nodes: Option<u64>,
    /// Virtual time to simulate, e.g. 500ms, 60s, 2m (gossip scenarios:
    /// time spent publishing, after their warm-up and before their drain);
    /// default 60s, 120s for discovery, 20s for handshake-flood, 3m for
    /// static-peer-restart.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The scenario to run.
    #[arg(long, default_value = "connect", value_parser = PossibleValuesParser::new(SCENARIO_NAMES))]
    scenario: String,
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
    /// Chain scenarios: keep the signatures of pre-signed chains in DIR, so
    /// a later run rebuilds the chain instead of signing it ("off": sign
    /// afresh in every process). Runs are the same either way. Default:
    /// $XDG_CACHE_HOME/meshsync-sim, else ~/.cache/meshsync-sim.
    #[arg(long, value_name = "DIR")]
    chain_cache: Option<PathBuf>,
}

impl WorldArgs {
    /// `--duration`, or the scenario's own default.
    fn duration(&self) -> Duration {
        self.duration
            .unwrap_or_else(|| duration_default(&self.scenario))
    }

    /// The run of `seed` in this world, or why the arguments are refused.
    fn config(&self, seed: u64) -> Result<RunConfig, String> {
        if let Some(rate) = self.messages_per_second {
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                return Err("--messages-per-second must be in (0, 1000000]".to_owned());
            }
        }
        let nodes = self
            .nodes
            // Bounded by NODES_MAX, far below usize::MAX.
            .map_or_else(|| nodes_default(&self.scenario), |nodes| nodes as usize);
        Ok(RunConfig {
            scenario: self.scenario.clone(),
            nodes,
            seed,
            duration: self.duration(),
            link: LinkModel {
                latency: Duration::from_millis(self.latency_ms),
                jitter_pct: self.jitter_pct,
                ..LinkModel::default()
            },
            gossip: GossipOptions {
                floodsub: self.floodsub,
                // Bounded by NODES_MAX.
                publishers: self.publishers.map(|publishers| publishers as usize),
                messages_per_second: self.messages_per_second,
                sybils_pct: self.sybils,
            },
            // Bounded by 1,000,000 above.
            body_bytes: self.body_bytes.map(|bytes| bytes as usize),
            // A campaign clones this configuration for every seed: they
            // share the cache, so each chain is signed once.
            chains: self.chain_cache(),
        })
    }

    /// The chain cache `--chain-cache` asks for.
    fn chain_cache(&self) -> ChainCache {
        let dir = match &self.chain_cache {
            Some(dir) if dir.as_os_str() == "off" => None,
            Some(dir) => Some(dir.clone()),
            None => default_chain_cache_dir(),
        };
        dir.map_or_else(ChainCache::new, ChainCache::saved_in)
    }

    /// The `run` flags that rebuild this world, scenario apart: those given
    /// or not at their default, and always `--duration`.
    fn flags(&self) -> Vec<String> {
        let link = LinkModel::default();
        let mut flags = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            flags.push(format!("--{name}"));
            flags.extend(value);
        };
        if let Some(nodes) = self.nodes {
            flag("nodes", Some(nodes.to_string()));
        }
        flag("duration", Some(format_duration(self.duration())));
        if self.latency_ms != link.latency.as_millis() as u64 {
            flag("latency-ms", Some(self.latency_ms.to_string()));
        }
        if self.jitter_pct != link.jitter_pct {
            flag("jitter-pct", Some(self.jitter_pct.to_string()));
        }
        if self.floodsub {
            flag("floodsub", None);
        }
        if let Some(publishers) = self.publishers {
            flag("publishers", Some(publishers.to_string()));
        }
        if let Some(rate) = self.messages_per_second {
            flag("messages-per-second", Some(rate.to_string()));
        }
        if let Some(sybils) = self.sybils {
            flag("sybils", Some(sybils.to_string()));
        }
        if let Some(bytes) = self.body_bytes {
            flag("body-bytes", Some(bytes.to_string()));
        }
        flags
    }
}

/// `$XDG_CACHE_HOME/meshsync-sim`, else `$HOME/.cache/meshsync-sim`; none
/// when neither is set to an absolute path.
fn default_chain_cache_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("meshsync-sim"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Run(args) => run(args),
        CliCommand::Campaign(args) => match args.command {
            Some(CampaignCommand::Merge(merge_args)) => merge(merge_args),
            None => campaign(args),
        },
        CliCommand::Replay { file } => replay(&file),
    }
}

fn replay(file: &Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("error: {}: {error}", file.display());
            return ExitCode::from(2);
        }
    };
    match meshsync_sim::replay::replay(&bytes) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error @ meshsync_sim::replay::ReplayError::Diverged { .. }) => {
            println!("{}: {error}", file.display());
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {}: {error}", file.display());
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.world.config(args.seed) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let summary = match &args.report {
        None => meshsync_sim::run(&config).map_err(|error| error.to_string()),
        Some(dir) => report(&config, dir),
    };
    let summary = match summary {
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
    if !summary.passed() {
        eprintln!(
            "{} invariant violations, {} bounds broken; replay with --seed {}",
            summary.invariant_violations,
            summary.bounds_broken.len(),
            summary.seed
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Runs `config` with sampling on and writes its plots into `dir`; names
/// the files on stderr, so `--json` keeps stdout to one object.
fn report(config: &RunConfig, dir: &Path) -> Result<meshsync_sim::Summary, String> {
    let (summary, files) =
        meshsync_sim::report::run_with_report(config, dir).map_err(|error| error.to_string())?;
    for file in files {
        eprintln!("wrote {}", file.display());
    }
    Ok(summary)
}

fn campaign(args: CampaignArgs) -> ExitCode {
    let (config, seeds) = match (args.world.config(0), args.seeds) {
        (Ok(config), Some(seeds)) => (config, seeds),
        (Err(error), _) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
        (_, None) => {
            eprintln!("error: --seeds is required");
            return ExitCode::from(2);
        }
    };
    let config = CampaignConfig {
        run: config,
        seeds,
        shard: args.shard,
        // Bounded by CAMPAIGN_JOBS_MAX.
        jobs: args.jobs as usize,
        flags: args.world.flags(),
    };
    let summary = run_campaign(&config, |outcome| {
        if !outcome.passed {
            println!("{}", failure_line(outcome));
        }
    });
    let summary = match summary {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    finish_campaign(&summary, args.json.as_deref())
}

fn merge(args: MergeArgs) -> ExitCode {
    let mut parts = Vec::new();
    for file in &args.files {
        let part = std::fs::read(file)
            .map_err(|error| error.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()));
        match part {
            Ok(part) => parts.push(part),
            Err(error) => {
                eprintln!("error: {}: {error}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let summary = match CampaignSummary::merge(parts) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    for line in summary.failure_lines() {
        println!("{line}");
    }
    finish_campaign(&summary, args.json.as_deref())
}

/// Prints the campaign's one-line summary, writes its JSON if asked, and
/// exits 1 if a run failed.
fn finish_campaign(summary: &CampaignSummary, json: Option<&Path>) -> ExitCode {
    println!("{summary}");
    if let Some(path) = json {
        // Numbers, strings, bools and JSON values always serialise.
        let text = serde_json::to_string_pretty(summary).expect("the summary serialises");
        if let Err(error) = std::fs::write(path, text + "\n") {
            eprintln!("error: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    if summary.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
