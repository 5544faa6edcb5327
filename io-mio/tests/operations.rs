//! What an operator sees of running `meshsync node` processes: metrics
//! scraped over HTTP move as the nodes work, the status line and JSON logs
//! carry what they promise, and SIGTERM ends a busy node cleanly, in time,
//! with its blocks kept, while a second signal ends a stuck shutdown at once.
//!
//! Every node is a real process. Every wait polls a log file, a scrape or
//! the process with a deadline; nothing sleeps for a result.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use meshsync_mio::testing::TempDir;

const NETWORK_ID: u64 = 93;
/// The longest any wait lasts (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at a log, a scrape or a process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// What the operator is promised: SIGTERM to exit, even under load.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// The `meshsync` binary this test build made. Also used by `static_peers.rs`.
pub(super) fn meshsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshsync"))
}

/// Polls `check` until it gives a value or `DEADLINE` passes.
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_within(what, DEADLINE, check)
}

/// Polls `check` until it gives a value or `deadline` passes. Also used by
/// `static_peers.rs`.
pub(super) fn wait_within<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// A network of one proposer key, and the paths of its files.
struct Network {
    _temp: TempDir,
    dir: PathBuf,
}

impl Network {
    fn new(label: &str, slot_ms: u64) -> Network {
        let temp = TempDir::new(label);
        let dir = temp.path().to_path_buf();
        let written = meshsync()
            .args(["genesis", "--proposers", "1", "--out"])
            .arg(dir.join("net"))
            .args(["--slot-ms", &slot_ms.to_string()])
            .args(["--network-id", &NETWORK_ID.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(written.success());
        Network { _temp: temp, dir }
    }

    /// `meshsync node` with a fresh key named `name`, the genesis, and
    /// `extra` flags; stderr goes to `name.log` (appended, across restarts).
    fn start(&self, name: &str, extra: &[&str]) -> Node {
        let key = self.dir.join(format!("{name}.key"));
        if !key.exists() {
            let keygen = meshsync()
                .args(["keygen", "--out"])
                .arg(&key)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(keygen.success());
        }
        let log = self.dir.join(format!("{name}.log"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let skip = std::fs::metadata(&log).map_or(0, |meta| meta.len() as usize);
        let child = meshsync()
            .args(["node", "--listen", "127.0.0.1:0", "--key"])
            .arg(&key)
            .arg("--genesis")
            .arg(self.dir.join("net/genesis.toml"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node {
            child: Some(child),
            log,
            skip,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

/// A running `meshsync node`; killed if the test ends while it runs.
struct Node {
    child: Option<Child>,
    log: PathBuf,
    /// Bytes of the log written by earlier lives.
    skip: usize,
}

impl Node {
    fn child(&self) -> &Child {
        self.child.as_ref().expect("the node runs")
    }

    /// This life's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.get(self.skip..).unwrap_or_default().to_owned()
    }

    /// The first log line containing `needle`, once there is one.
    fn wait_line(&mut self, needle: &str) -> String {
        let what = format!("`{needle}` in {}", self.log.display());
        wait_for(&what, || {
            let log = self.log();
            let found = log.lines().find(|line| line.contains(needle));
            if found.is_none() {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("the node exited ({status}) before {what}: {log}");
                }
            }
            found.map(str::to_owned)
        })
    }

    /// The address in the log line `... PREFIX ADDR...`.
    fn address_after(&mut self, prefix: &str) -> SocketAddr {
        let line = self.wait_line(prefix);
        let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address in {line}"))
    }

    fn listen_address(&mut self) -> SocketAddr {
        self.address_after(" listening on ")
    }

    fn metrics_address(&mut self) -> SocketAddr {
        self.address_after("serving metrics on http://")
    }

    /// Waits for the process to exit, at most `bound`; how long it took.
    fn wait_exit(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("the node runs");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < bound + Duration::from_secs(5),
                "still running {:?} after the signal: {}",
                started.elapsed(),
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Our Status requests that were answered.
const STATUS_OK: &str = "meshsync_requests_sent_total{protocol=\"status\",result=\"ok\"}";

/// One scrape: `GET /metrics` over a plain TcpStream; the samples by
/// `name{labels}`. Also used by `static_peers.rs`.
pub(super) fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let mut samples = BTreeMap::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line}"));
        samples.insert(name.to_owned(), value);
    }
    samples
}

/// A sample's value (0 when absent, as a counter that never moved).
pub(super) fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// Waits until a scrape of `addr` satisfies `check`; that scrape.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    wait_for(what, || Some(scrape(addr)).filter(|samples| check(samples)))
}

/// The numbers of a status line: peers, in, out, head slot, finalized slot,
/// and the sync part. The head root is checked to be 8 hex digits.
fn parse_status(line: &str) -> (u64, u64, u64, u64, u64, String) {
    let rest = &line[line.find("status: peers ").expect("a status line") + 14..];
    let root_at = rest.find("(root ").expect("a head root") + 6;
    let root = &rest[root_at..root_at + 8];
    assert!(root.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    let without_root = format!("{}{}", &rest[..root_at], &rest[root_at + 8..]);
    let numbers: Vec<u64> = without_root
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .take(5)
        .map(|part| part.parse().unwrap())
        .collect();
    let shape = format!(
        "{} (in {}, out {}), head slot {} (root {root}), finalized slot {}, ",
        numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]
    );
    assert!(rest.starts_with(&shape), "{line}");
    let sync = rest[shape.len()..].trim_end_matches(['"', '}']).to_owned();
    (
        numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], sync,
    )
}

/// Two nodes: the proposer's metrics go from no peer to one, its head and
/// bytes in grow; the follower's show its outbound peer, imports, mesh and
/// verification batches; both log status lines with the right fields, and
/// the follower's JSON log is one object per line.
#[test]
fn metrics_status_lines_and_json_logs_follow_two_nodes() {
    let net = Network::new("ops-metrics", 250);
    let data = net.path("proposer-data");
    let key = net.path("net/proposer-0.key");
    let mut proposer = net.start(
        "proposer",
        &[
            "--proposer-key",
            &key,
            "--data-dir",
            &data,
            "--metrics",
            "127.0.0.1:0",
            "--status-interval-secs",
            "1",
        ],
    );
    let proposer_metrics = proposer.metrics_address();
    let first = scrape(proposer_metrics);
    for direction in ["inbound", "outbound"] {
        assert_eq!(
            value(
                &first,
                &format!("meshsync_peers{{direction=\"{direction}\"}}")
            ),
            0.0
        );
    }
    let head_before = value(&first, "meshsync_head_slot");
    let received_before = value(&first, "meshsync_network_received_bytes_total");

    let peer = format!("{}", proposer.listen_address());
    let mut follower = net.start(
        "follower",
        &[
            "--peer",
            &peer,
            "--metrics",
            "127.0.0.1:0",
            "--status-interval-secs",
            "1",
            "--log-format",
            "json",
        ],
    );
    let follower_metrics = follower.metrics_address();

    let seen = scrape_until(
        proposer_metrics,
        "the proposer to see its peer, produce and hear bytes",
        |s| {
            value(s, "meshsync_peers{direction=\"inbound\"}") == 1.0
                && value(s, "meshsync_head_slot") >= head_before + 3.0
                && value(s, "meshsync_network_received_bytes_total") > received_before
        },
    );
    assert!(value(&seen, "meshsync_handshake_duration_seconds_count") >= 1.0);
    assert!(value(&seen, "meshsync_blocks_produced_total") >= 3.0);
    assert!(value(&seen, "meshsync_store_blocks_written_total") >= 3.0);
    assert!(value(&seen, "meshsync_store_commit_duration_seconds_count") >= 3.0);
    assert!(value(&seen, "meshsync_network_sent_bytes_total") > 0.0);
    assert_eq!(value(&seen, "meshsync_sync_state{state=\"synced\"}"), 1.0);

    let followed = scrape_until(
        follower_metrics,
        "the follower to import gossiped blocks",
        |s| {
            value(s, "meshsync_peers{direction=\"outbound\"}") == 1.0
                && value(s, "meshsync_blocks_imported_total") >= 2.0
                && value(s, "meshsync_gossip_mesh_peers{topic=\"blocks\"}") == 1.0
                && value(s, "meshsync_verification_batch_duration_seconds_count") >= 1.0
                && value(s, STATUS_OK) >= 1.0
        },
    );
    // The Status it sent on connecting was answered, and timed by the core.
    assert!(
        value(
            &followed,
            "meshsync_request_duration_seconds_count{protocol=\"status\"}"
        ) >= value(&followed, STATUS_OK),
        "{followed:?}"
    );
    // The proposer answered it, and counts it by protocol.
    scrape_until(
        proposer_metrics,
        "the proposer to count a served Status",
        |s| {
            value(
                s,
                "meshsync_requests_served_total{protocol=\"status\",result=\"answered\"}",
            ) >= 1.0
        },
    );
    assert!(value(&followed, "meshsync_head_slot") >= 1.0);
    assert!(
        value(
            &followed,
            "meshsync_gossip_messages_total{verdict=\"accepted\"}"
        ) >= 1.0
    );
    let topic_accepted =
        "meshsync_gossip_topic_messages_total{topic=\"blocks\",verdict=\"accepted\"}";
    assert!(value(&followed, topic_accepted) >= 1.0, "{followed:?}");
    assert_eq!(value(&followed, "meshsync_peer_score_count"), 1.0);

    // The proposer's status lines: one, at least, says the head the scrape saw.
    let head_seen = value(&seen, "meshsync_head_slot") as u64;
    let line = wait_for("a status line at the scraped head", || {
        proposer
            .log()
            .lines()
            .filter(|line| line.contains("status: peers 1 "))
            .find(|line| parse_status(line).3 >= head_seen)
            .map(str::to_owned)
    });
    let (peers, inbound, outbound, head, finalized, sync) = parse_status(&line);
    assert_eq!((peers, inbound, outbound), (1, 1, 0), "{line}");
    assert!(head >= head_seen && finalized <= head, "{line}");
    assert_eq!(sync, "synced", "{line}");

    // The follower's log: JSON objects only, one of them its status line.
    let json_status = follower.wait_line("status: peers 1 ");
    let (_, inbound, outbound, _, _, _) = parse_status(&json_status);
    assert_eq!((inbound, outbound), (0, 1), "{json_status}");
    let log = follower.log();
    let mut statuses = 0;
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object[key].is_string(), "no {key} in {line}");
        }
        let level = object["level"].as_str().unwrap();
        assert!(
            ["ERROR", "WARN", "INFO"].contains(&level),
            "{level} at RUST_LOG=info: {line}"
        );
        if object["message"]
            .as_str()
            .unwrap()
            .contains("status: peers")
        {
            assert_eq!(object["target"], "meshsync_mio::driver::observe", "{line}");
            statuses += 1;
        }
    }
    assert!(statuses >= 1, "{log}");
}

/// A proposer busy producing, storing and gossiping 256 KiB blocks every
/// 100 ms gets SIGTERM: it says Goodbye to its peer and exits 0 within the
/// bound, and started again on its data directory it has every block it had.
#[test]
fn sigterm_under_load_exits_zero_in_time_and_keeps_the_blocks() {
    let net = Network::new("ops-sigterm", 100);
    let data = net.path("proposer-data");
    let key = net.path("net/proposer-0.key");
    let mut proposer = net.start(
        "proposer",
        &[
            "--proposer-key",
            &key,
            "--data-dir",
            &data,
            "--body-bytes",
            "262144",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let proposer_metrics = proposer.metrics_address();
    let peer = format!("{}", proposer.listen_address());
    let mut follower = net.start("follower", &["--peer", &peer, "--metrics", "127.0.0.1:0"]);
    let follower_metrics = follower.metrics_address();
    scrape_until(follower_metrics, "the follower to import blocks", |s| {
        value(s, "meshsync_blocks_imported_total") >= 10.0
    });
    let before = scrape_until(proposer_metrics, "the proposer to be busy", |s| {
        value(s, "meshsync_peers{direction=\"inbound\"}") == 1.0
            && value(s, "meshsync_head_slot") >= 20.0
    });
    let head = value(&before, "meshsync_head_slot");

    signal(proposer.child(), "TERM");
    let (status, took) = proposer.wait_exit(SHUTDOWN_BOUND);
    let log = proposer.log();
    assert!(status.success(), "{status:?}: {log}");
    assert!(took < SHUTDOWN_BOUND, "exit took {took:?}: {log}");
    assert!(log.contains("saying goodbye to 1 peers"), "{log}");
    assert!(log.contains("] stopped"), "{log}");
    scrape_until(follower_metrics, "the follower to hear the Goodbye", |s| {
        value(s, "meshsync_goodbyes_total{direction=\"received\"}") >= 1.0
            && value(s, "meshsync_peers{direction=\"outbound\"}") == 0.0
    });

    // Restarted on its data directory (no key: it only follows), it has
    // every block up to the head it had.
    let mut restarted = net.start(
        "proposer",
        &["--data-dir", &data, "--metrics", "127.0.0.1:0"],
    );
    let after = scrape(restarted.metrics_address());
    assert!(
        value(&after, "meshsync_head_slot") >= head,
        "head {} after the restart, {head} before: {}",
        value(&after, "meshsync_head_slot"),
        restarted.log()
    );
    let loaded = restarted.wait_line("blocks loaded");
    assert!(loaded.contains(&data), "{loaded}");
}

/// A proposer whose only peer stopped reading (SIGSTOP) cannot flush its
/// Goodbye: its graceful shutdown waits for the flush timeout. A second SIGTERM ends it at once,
/// with status 128 + 15, long before the flush would have given up.
#[test]
fn a_second_signal_ends_a_stuck_shutdown_at_once() {
    let net = Network::new("ops-second-signal", 100);
    let key = net.path("net/proposer-0.key");
    let mut proposer = net.start(
        "proposer",
        &[
            "--proposer-key",
            &key,
            "--body-bytes",
            "1000000",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let proposer_metrics = proposer.metrics_address();
    let peer = format!("{}", proposer.listen_address());
    let follower = net.start("follower", &["--peer", &peer]);
    scrape_until(proposer_metrics, "the follower to connect", |s| {
        value(s, "meshsync_peers{direction=\"inbound\"}") == 1.0
    });
    signal(follower.child(), "STOP");
    scrape_until(
        proposer_metrics,
        "the proposer's bytes for the stopped peer to pile up",
        |s| value(s, "meshsync_send_queued_bytes") >= 65_536.0,
    );

    signal(proposer.child(), "TERM");
    proposer.wait_line("saying goodbye to 1 peers");
    signal(proposer.child(), "TERM");
    let (status, took) = proposer.wait_exit(Duration::from_secs(1));
    let log = proposer.log();
    signal(follower.child(), "CONT");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "not ended by the second signal: {log}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the second signal took {took:?}: {log}"
    );
    assert!(!log.contains("] stopped"), "{log}");
}
