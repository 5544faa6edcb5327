//! `libp2p-peer`: rust-libp2p 0.57 running the workloads of `meshsync
//! bench`, so that each of meshsync's figures has libp2p's beside it,
//! measured the same way on the same machine.
//!
//! ```text
//! libp2p-peer throughput [--bytes B] [--compression snappy|none]
//! libp2p-peer handshakes [--count N]
//! libp2p-peer gossip [--nodes K] [--size B] [--rate R] [--messages M] [--degree D]
//!                    [--warmup-secs S] [--drain-secs S] [--seed S] [--compression snappy|none]
//! every subcommand: [--threads T]
//! ```
//!
//! Each prints one JSON object on stdout and nothing else; a figure that
//! is the same quantity as one of `meshsync bench ... --json` has the same
//! name (`mb_per_cpu_second`, `cpu_us_per_connection`,
//! `cpu_us_per_delivery`, `duplicates_per_delivery`, `latency_p50_ms`, ...).
//! Errors go to stderr with exit status 1; a wrong flag, with status 2.
//! Every module says what its workload runs and measures.
//!
//! # Threads
//! Everything runs on one tokio runtime of `--threads` worker threads
//! (default 1): the benchmark itself is a task on them, and so are the
//! swarms' connections, which libp2p spawns on the runtime. Beside them,
//! the main thread only waits for the result, and libp2p's own timers run
//! on the helper thread of the `futures-timer` crate. CPU is the whole
//! process's, every thread's, as meshsync's benchmarks count it.
//!
//! # Security
//! Not provided: this is a benchmark, not a node. Everything listens on
//! 127.0.0.1 only, identities are drawn from a seed, and every wait has a
//! deadline.

/// The allocator `meshsync`'s binary uses, built the same way (without
/// transparent huge pages; see its `main.rs`): the figures compare the
/// stacks, not two allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpu;
mod flags;
mod gossip;
mod handshakes;
mod stack;
mod throughput;

use flags::Flags;

/// Worker threads at most: far more than the benchmarks can use.
const THREADS_MAX: usize = 64;
/// Exit status of a command line this program does not take.
const EXIT_USAGE: i32 = 2;
const EXIT_FAILURE: i32 = 1;
const USAGE: &str = "usage: libp2p-peer throughput|handshakes|gossip [--flag value ...] \
                     (the flags: the crate's doc, src/main.rs)";

/// One subcommand with its options.
enum Benchmark {
    Throughput(throughput::Options),
    Handshakes(handshakes::Options),
    Gossip(gossip::Options),
}

impl Benchmark {
    /// The subcommand and every flag, or what is wrong with them.
    fn parse(words: &[String]) -> Result<(Benchmark, usize), String> {
        let (subcommand, rest) = words.split_first().ok_or("no subcommand")?;
        let mut flags = Flags::parse(rest)?;
        let threads = flags.take("threads", 1, 1..=THREADS_MAX)?;
        let benchmark = match subcommand.as_str() {
            "throughput" => Benchmark::Throughput(throughput::Options::take(&mut flags)?),
            "handshakes" => Benchmark::Handshakes(handshakes::Options::take(&mut flags)?),
            "gossip" => Benchmark::Gossip(gossip::Options::take(&mut flags)?),
            other => return Err(format!("unknown subcommand {other:?}")),
        };
        flags.finish()?;
        Ok((benchmark, threads))
    }

    async fn run(self) -> Result<serde_json::Value, String> {
        match self {
            Benchmark::Throughput(options) => throughput::run(options).await,
            Benchmark::Handshakes(options) => handshakes::run(options).await,
            Benchmark::Gossip(options) => gossip::run(options).await,
        }
    }
}

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let (benchmark, threads) = Benchmark::parse(&words).unwrap_or_else(|error| {
        eprintln!("libp2p-peer: {error}\n{USAGE}");
        std::process::exit(EXIT_USAGE);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&format!("tokio runtime: {error}")));
    // Spawned, so that the benchmark runs on the worker threads and not on
    // this one, which `block_on` would add to them.
    let result = runtime.block_on(async { tokio::spawn(benchmark.run()).await });
    let mut report = match result {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => fail(&error),
        Err(panic) => fail(&format!("the benchmark panicked: {panic}")),
    };
    report["threads"] = serde_json::json!(threads);
    println!("{report}");
    // Tasks the benchmark left behind are not waited for.
    runtime.shutdown_background();
}

fn fail(error: &str) -> ! {
    eprintln!("libp2p-peer: {error}");
    std::process::exit(EXIT_FAILURE);
}
