//! `meshsync bench SUBCOMMAND --json`, for a script that compares runs:
//! each subcommand, run with arguments small enough for a couple of
//! seconds, prints exactly one JSON object on stdout and nothing else, and
//! every figure it promises is a positive number.
//!
//! The benchmark is a real process; the wait for it polls the process
//! with a deadline, so a hung benchmark fails the test instead of stalling it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The longest one benchmark may run (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(120);
/// Pause between two looks at the process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `meshsync bench ARGS --json` and returns the one object it printed.
fn bench_json(args: &[&str]) -> Map<String, Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshsync"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshsync starts");
    // Read both pipes on threads of their own, so a full pipe never stalls it.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the process can be waited for") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().expect("a running child can be killed");
            child.wait().expect("the killed child is reaped");
            panic!("meshsync bench {args:?} --json ran past {DEADLINE:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let stdout = stdout.join().expect("reader").expect("stdout is UTF-8");
    let stderr = stderr.join().expect("reader").expect("stderr is UTF-8");
    assert!(
        status.success(),
        "meshsync bench {args:?} --json: {status}\n{stderr}"
    );
    // `from_str` refuses anything after the first value but whitespace: a
    // second object or a line of text fails here.
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("stdout of bench {args:?} is not one JSON value ({error}):\n{stdout}")
    });
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    match value {
        Value::Object(object) => object,
        other => panic!("bench {args:?} printed {other}, not an object"),
    }
}

/// Panics naming every field of `fields` that is missing, not a number, or not above 0.
fn assert_positive(object: &Map<String, Value>, fields: &[&str]) {
    let wrong: Vec<String> = fields
        .iter()
        .filter(|field| {
            !object
                .get(**field)
                .and_then(Value::as_f64)
                .is_some_and(|x| x > 0.0)
        })
        .map(|field| format!("{field}: {:?}", object.get(*field)))
        .collect();
    assert!(
        wrong.is_empty(),
        "not positive numbers: {wrong:?} in {object:?}"
    );
}

#[test]
fn bench_handshakes_json_has_rates_the_ratio_and_cpu_per_connection() {
    // 50 cycles: enough process CPU (tens of ms) for the 10 ms clock to show.
    let report = bench_json(&["handshakes", "--count", "50", "--parallel", "2"]);
    assert_eq!(report["bench"], "handshakes");
    assert_eq!(report["count"], 50);
    assert_eq!(report["parallel"], 2);
    assert_positive(
        &report,
        &[
            "memory_handshakes_per_second",
            "tcp_handshakes_per_second",
            "ratio_to_limit",
            "cpu_us_per_connection",
            "memory_cpu_us_per_connection",
            "cpu_us_per_connection_goal",
            "memory_seconds",
            "tcp_seconds",
        ],
    );
}

#[test]
fn bench_requests_json_has_serving_the_limit_and_their_ratio() {
    let report = bench_json(&[
        "requests",
        "--requests",
        "20",
        "--small-requests",
        "300",
        "--block-bytes",
        "300",
    ]);
    assert_eq!(report["bench"], "requests");
    assert_eq!(report["blocks"], 20 * 64);
    assert_positive(
        &report,
        &[
            "serving_requests_per_second",
            "serving_blocks_per_second",
            "serving_mb_per_second",
            "limit_blocks_per_second",
            "limit_mb_per_second",
            "ratio_to_limit",
            "small_requests_per_second",
            "compressed_fraction",
        ],
    );
}

#[test]
fn bench_sync_json_has_a_row_per_thread_count() {
    let report = bench_json(&[
        "sync",
        "--blocks",
        "200",
        "--body-bytes",
        "64",
        "--threads",
        "1,2",
    ]);
    assert_eq!(report["bench"], "sync");
    assert_eq!(report["blocks"], 200);
    let rows = report["rows"].as_array().expect("rows is an array");
    let threads: Vec<&Value> = rows.iter().map(|row| &row["threads"]).collect();
    assert_eq!(threads, [1, 2]);
    for row in rows {
        let row = row.as_object().expect("each row is an object");
        assert_positive(
            row,
            &[
                "verify_blocks_per_second",
                "sync_blocks_per_second",
                "ratio_to_limit",
            ],
        );
    }
}

#[test]
fn bench_throughput_json_has_rates_per_second_per_cpu_second_and_the_limit() {
    // 128 MiB: 128 answers in a fraction of a second, yet well over one
    // tick of the 10 ms process clock (about 0.15 s of CPU here; 8 MiB once
    // read as 0 ticks, cpu_seconds 0, after reading stopped copying).
    let report = bench_json(&["throughput", "--bytes", "134217728"]);
    assert_eq!(report["bench"], "throughput");
    assert_eq!(report["bytes"], 128 << 20);
    assert_eq!(report["messages"], 128);
    assert_positive(
        &report,
        &[
            "mb_per_second",
            "mb_per_cpu_second",
            "limit_mb_per_second",
            "ratio_to_limit",
            "cpu_ratio_to_limit",
            "seconds",
            "cpu_seconds",
        ],
    );
}

/// The largest resident memory a node with four clients could plausibly
/// have, MiB: far above what it holds (tens of MiB), far below a leak.
const SOAK_NODE_RSS_MIB_MAX: f64 = 1024.0;

/// A small soak: four clients churning for 6 s, a sample every 2 s. The
/// node had peers, sessions kept coming, what it holds stayed within its
/// caps, its own process's memory and file descriptors were sampled apart
/// from the clients', and that process is gone once the soak has returned.
#[test]
fn bench_soak_json_has_a_sample_per_interval_and_bounded_figures() {
    let report = bench_json(&[
        "soak",
        "--clients",
        "4",
        "--duration-secs",
        "6",
        "--sample-secs",
        "2",
    ]);
    assert_eq!(report["clients"], 4);
    let node_pid = report["node_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("node_pid in {report:?}"));
    assert!(node_pid > 0);
    // `bench_json` has reaped the soak: a node process it had not reaped
    // (or not killed) would still be in /proc, if only as a zombie.
    assert!(
        !std::path::Path::new(&format!("/proc/{node_pid}")).exists(),
        "the node process {node_pid} outlived the soak"
    );
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3, "{report:?}");
    let figure = |sample: &Value, name: &str| {
        sample[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} in {sample}"))
    };
    let sessions: Vec<f64> = samples.iter().map(|s| figure(s, "sessions")).collect();
    assert!(
        sessions.windows(2).all(|pair| pair[0] < pair[1]),
        "{sessions:?}"
    );
    assert!(
        samples.iter().any(|s| figure(s, "connected") > 0.0),
        "{report:?}"
    );
    assert!(
        figure(&samples[2], "head_slot") > 0.0,
        "the node produced blocks"
    );
    for sample in samples {
        let node_rss_mib = figure(sample, "node_rss_mib");
        assert!(
            node_rss_mib > 0.0 && node_rss_mib < SOAK_NODE_RSS_MIB_MAX,
            "{sample}"
        );
        // At least stdin, stdout, stderr, the poll and the listener.
        assert!(figure(sample, "node_fds") >= 5.0, "{sample}");
        assert!(figure(sample, "clients_rss_mib") > 0.0, "{sample}");
        assert!(figure(sample, "clients_fds") > 0.0, "{sample}");
        assert!(
            figure(sample, "scores") <= meshsync_core::peer::SCORES_MAX as f64,
            "{sample}"
        );
        // Four clients, one session each at a time; a session just ended
        // may still be counted while its next one connects.
        assert!(figure(sample, "peers") <= 8.0, "{sample}");
    }
    assert_positive(
        &report,
        &[
            "node_rss_growth_ratio",
            "clients_rss_growth_ratio",
            "node_rss_mib_max",
            "node_fds_max",
            "clients_rss_mib_max",
            "clients_fds_max",
        ],
    );
}

/// A small gossip run: 6 nodes each dialling 3 others, 40 messages at
/// 50/s after a 1 s warm-up, every one validated by every node's
/// application. On loopback every message reaches every other node long
/// before the drain runs out, and the figures hang together.
#[test]
fn bench_gossip_json_delivers_every_message_and_has_cpu_per_delivery() {
    let report = bench_json(&[
        "gossip",
        "--nodes",
        "6",
        "--degree",
        "3",
        "--messages",
        "40",
        "--rate",
        "50",
        "--warmup-secs",
        "1",
    ]);
    assert_eq!(report["bench"], "gossip");
    assert_eq!(report["nodes"], 6);
    assert_eq!(report["deliveries_expected"], 40 * 5);
    assert_eq!(report["deliveries"], 40 * 5, "{report:?}");
    assert_eq!(report["delivery_ratio"].as_f64(), Some(1.0), "{report:?}");
    assert_eq!(report["rejected"], 0);
    assert_positive(
        &report,
        &[
            "cpu_us_per_delivery",
            "cpu_seconds",
            "latency_p50_ms",
            "latency_p90_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "full_propagation_p99_ms",
            "received_unique",
            "mesh_min",
            "seconds",
            "rss_peak_mib",
        ],
    );
    let figure = |name: &str| {
        report[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} in {report:?}"))
    };
    assert!(figure("duplicates_per_delivery") >= 0.0, "{report:?}");
    assert!(figure("idle_cpu_cores") >= 0.0, "{report:?}");
    assert!(
        figure("latency_p50_ms") <= figure("latency_p99_ms")
            && figure("latency_p99_ms") <= figure("latency_max_ms"),
        "{report:?}"
    );
    // Everything arrived: the timed phase ended with the last delivery,
    // not with the 10 s drain.
    assert!(
        figure("seconds") < figure("publish_seconds") + 10.0,
        "{report:?}"
    );
}

/// A small history run: 200 blocks of 4 KiB made into a temporary
/// directory, the node started on them, a fresh node range-synced from it,
/// then 2 s of production. Every phase completes within the bound (`--check`
/// fails the run otherwise), the joiner reached the server's head, and
/// neither node process outlives the bench.
#[test]
fn bench_history_json_starts_serves_a_full_sync_and_produces() {
    let report = bench_json(&[
        "history",
        "--blocks",
        "200",
        "--body-bytes",
        "4096",
        "--production-secs",
        "2",
        "--check",
    ]);
    assert_eq!(report["bench"], "history");
    assert_eq!(report["blocks"], 200);
    assert_eq!(report["reused"], false);
    assert_eq!(report["passed"], true, "{report:?}");
    for pid in ["server_pid", "joiner_pid"] {
        let pid = report[pid]
            .as_u64()
            .unwrap_or_else(|| panic!("{pid} in {report:?}"));
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the bench"
        );
    }
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&Value> = phases.iter().map(|phase| &phase["phase"]).collect();
    assert_eq!(names, ["start-up", "sync", "production"]);
    for phase in phases {
        assert_eq!(phase["completed"], true, "{phase}");
        assert!(phase["server_rss_peak_mib"].as_f64() > Some(0.0), "{phase}");
    }
    let figure = |phase: usize, name: &str| {
        phases[phase][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {}", phases[phase]))
    };
    assert!(figure(0, "server_head_end") >= 200);
    assert!(figure(1, "joiner_head_end") >= figure(1, "target_slot"));
    assert!(figure(1, "target_slot") >= 200);
    assert!(phases[1]["joiner_rss_peak_mib"].as_f64() > Some(0.0));
    assert!(phases[1]["mb_per_second"].as_f64() > Some(0.0));
    assert!(figure(2, "server_head_end") >= figure(2, "server_head_start"));
    assert_positive(&report, &["block_bytes", "chain_mib", "generation_seconds"]);
}
