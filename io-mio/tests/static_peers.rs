//! A static peer comes back by itself: node B is started with only
//! `--static-peer A_ADDR@A_ID`; A is killed (SIGKILL, as a crash: no
//! Goodbye) and started again on the same port, key and data directory;
//! B dials A's new life on its own, within a deadline, with no help from
//! A (which is given no peer) nor from the test. A `--peer` would have
//! dialled once and never again.
//!
//! Both nodes are real `meshsync node` processes. Every wait polls a log
//! or a metrics scrape with a deadline; nothing sleeps for a result.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use meshsync_mio::testing::TempDir;

use super::operations::{meshsync, scrape, value, wait_within};

const NETWORK_ID: u64 = 95;
/// The longest a start-up or a first connection may take (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(30);
/// From A's second life listening to B connected to it. B's redials after
/// a drop come after 1, 2, 4, then 8 s (each up to a quarter shorter), and A
/// is back within a couple of seconds of the kill, so B's next dial is due
/// within 8 s of A listening; the rest is room for a loaded machine. With
/// `--peer` instead of `--static-peer` B never dials again, and this fails.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(15);

const OUTBOUND: &str = "meshsync_peers{direction=\"outbound\"}";
const INBOUND: &str = "meshsync_peers{direction=\"inbound\"}";
const HANDSHAKES: &str = "meshsync_handshake_duration_seconds_count";

/// A new key file at `path`; the peer id `meshsync keygen` prints for it.
pub(super) fn keygen(path: &Path) -> String {
    let output = meshsync()
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// One life of a `meshsync node`; killed if the test ends while it runs.
/// Shared with `discovery.rs`.
pub(super) struct Node {
    child: Child,
    log: PathBuf,
    /// Bytes of the log written by earlier lives.
    skip: usize,
}

impl Node {
    /// `meshsync node --network NETWORK_ID --metrics 127.0.0.1:0` with
    /// `arguments`; stderr appended to `log`, so every life stays readable.
    fn start(log: &Path, arguments: &[&str]) -> Node {
        Node::start_on(NETWORK_ID, log, arguments)
    }

    /// [`Node::start`] on network `network_id`.
    pub(super) fn start_on(network_id: u64, log: &Path, arguments: &[&str]) -> Node {
        let skip = std::fs::metadata(log).map_or(0, |meta| meta.len() as usize);
        let stderr = File::options().create(true).append(true).open(log).unwrap();
        let child = meshsync()
            .arg("node")
            .args(arguments)
            .args(["--network", &network_id.to_string()])
            .args(["--metrics", "127.0.0.1:0", "--status-interval-secs", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node {
            child,
            log: log.to_owned(),
            skip,
        }
    }

    /// This life's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.get(self.skip..).unwrap_or_default().to_owned()
    }

    /// The first line of this life's log containing `needle`, once there is one.
    fn wait_line(&mut self, needle: &str) -> String {
        let what = format!("`{needle}` in {}", self.log.display());
        wait_within(&what, DEADLINE, || {
            let log = self.log();
            let found = log.lines().find(|line| line.contains(needle));
            if found.is_none() {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("the node exited ({status}) before {what}: {log}");
                }
            }
            found.map(str::to_owned)
        })
    }

    /// The words after `prefix` in the first log line that has it.
    pub(super) fn words_after(&mut self, prefix: &str) -> Vec<String> {
        let line = self.wait_line(prefix);
        let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
        rest.split_whitespace().map(str::to_owned).collect()
    }

    /// Its peer id and listening address, from `node PEERID listening on ADDR`.
    pub(super) fn identity(&mut self) -> (String, SocketAddr) {
        let words = self.words_after("] node ");
        assert_eq!(words[1..3], ["listening", "on"], "{words:?}");
        (words[0].clone(), words[3].parse().unwrap())
    }

    pub(super) fn metrics_address(&mut self) -> SocketAddr {
        let words = self.words_after("serving metrics on http://");
        let addr = words[0].strip_suffix("/metrics").expect("a metrics URL");
        addr.parse().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits at most `deadline` until a scrape of `addr` satisfies `check`; that scrape.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    deadline: Duration,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    wait_within(what, deadline, || {
        Some(scrape(addr)).filter(|samples| check(samples))
    })
}

#[test]
fn a_static_peer_killed_and_restarted_is_redialled_by_itself() {
    let temp = TempDir::new("static-peer-restart");
    let dir = temp.path();
    let a_key = dir.join("a.key");
    let printed_id = keygen(&a_key);
    keygen(&dir.join("b.key"));
    let a_data = dir.join("a-data");
    let a_log = dir.join("a.log");
    let path = |path: &Path| path.to_str().unwrap().to_owned();
    let a_arguments = |listen: &str| {
        [
            "--listen".to_owned(),
            listen.to_owned(),
            "--key".to_owned(),
            path(&a_key),
            "--data-dir".to_owned(),
            path(&a_data),
        ]
    };

    let first = a_arguments("127.0.0.1:0");
    let mut a = Node::start(&a_log, &first.each_ref().map(String::as_str));
    let (a_id, a_addr) = a.identity();
    // What keygen printed is what the node logs: either can be copied.
    assert_eq!(a_id, printed_id);
    let static_peer = format!("{a_addr}@{a_id}");
    let mut b = Node::start(
        &dir.join("b.log"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--key",
            &path(&dir.join("b.key")),
            "--static-peer",
            &static_peer,
        ],
    );
    b.wait_line(&format!("static peer {static_peer}: kept connected"));
    let b_metrics = b.metrics_address();
    let a_metrics = a.metrics_address();
    scrape_until(a_metrics, "A to see B connect", DEADLINE, |s| {
        value(s, INBOUND) == 1.0
    });
    let connected = scrape_until(b_metrics, "B to be connected to A", DEADLINE, |s| {
        value(s, OUTBOUND) == 1.0
    });
    let handshakes_before = value(&connected, HANDSHAKES);
    assert!(handshakes_before >= 1.0, "{connected:?}");

    // A crashes: B sees its only connection go.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    scrape_until(b_metrics, "B to see A gone", DEADLINE, |s| {
        value(s, OUTBOUND) == 0.0
    });

    // A comes back on the same port, key and data directory, knowing nobody.
    let second = a_arguments(&a_addr.to_string());
    let mut a = Node::start(&a_log, &second.each_ref().map(String::as_str));
    assert_eq!(a.identity(), (a_id, a_addr));
    let a_metrics = a.metrics_address();
    let back = Instant::now();
    scrape_until(
        a_metrics,
        "A's second life to be dialled by B",
        RECONNECT_DEADLINE,
        |s| value(s, INBOUND) == 1.0 && value(s, OUTBOUND) == 0.0,
    );
    let reconnected = scrape_until(
        b_metrics,
        "B to count a new connection to A",
        RECONNECT_DEADLINE.saturating_sub(back.elapsed()),
        |s| value(s, OUTBOUND) == 1.0 && value(s, HANDSHAKES) > handshakes_before,
    );
    assert_eq!(value(&reconnected, INBOUND), 0.0, "{reconnected:?}");
}
