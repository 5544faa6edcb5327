//! A proposer killed with SIGKILL right after its block reached a peer,
//! and restarted at once (within the same slot, as a fast service restart
//! would), never signs a second block for that slot.
//!
//! The proposer is the `meshsync` binary (so it can be killed as a real
//! process is); the peer is a driver in this process whose notifications
//! say every block it imports. Every wait is a deadline on those
//! notifications or on the proposer's log, never a sleep.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use meshsync_core::chain::{ChainConfig, Genesis, Root};
use meshsync_core::io::Notification;
use meshsync_core::{Config, Identity};
use meshsync_mio::driver::{Driver, DriverOptions};
use meshsync_mio::testing::TempDir;

const NETWORK_ID: u64 = 91;
/// Long slots, so a restart fits in the slot of the block it follows.
const SLOT_MS: u64 = 4_000;
/// The longest any wait lasts (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(60);

fn meshsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshsync"))
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Starts the proposer: `meshsync node` with the genesis's one key, a data
/// directory, and the peer to dial; its log goes to `log` (appended, so
/// both lives stay readable).
fn start_proposer(dir: &Path, net: &Path, peer: &str, log: &Path) -> Child {
    let stderr = File::options().create(true).append(true).open(log).unwrap();
    meshsync()
        .args(["node", "--listen", "127.0.0.1:0", "--key"])
        .arg(dir.join("proposer-node.key"))
        .arg("--genesis")
        .arg(net.join("genesis.toml"))
        .arg("--proposer-key")
        .arg(net.join("proposer-0.key"))
        .arg("--data-dir")
        .arg(dir.join("proposer-data"))
        .args(["--peer", peer])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Every block the peer imported, by slot: the roots seen for each.
#[derive(Default)]
struct Seen {
    roots_by_slot: BTreeMap<u64, Vec<Root>>,
}

impl Seen {
    /// Takes what arrived; returns the slots newly imported.
    fn take(&mut self, notifications: &Receiver<Notification>) -> Vec<u64> {
        let mut slots = Vec::new();
        while let Ok(notification) = notifications.try_recv() {
            if let Notification::BlockImported { slot, root } = notification {
                let roots = self.roots_by_slot.entry(slot).or_default();
                if !roots.contains(&root) {
                    roots.push(root);
                }
                slots.push(slot);
            }
        }
        slots
    }

    fn double_signed(&self) -> Vec<(u64, usize)> {
        self.roots_by_slot
            .iter()
            .filter(|(_, roots)| roots.len() > 1)
            .map(|(slot, roots)| (*slot, roots.len()))
            .collect()
    }
}

#[test]
fn a_proposer_killed_after_publishing_and_restarted_in_the_slot_never_signs_it_again() {
    let temp = TempDir::new("watermark-restart");
    let dir = temp.path();
    let net: PathBuf = dir.join("net");
    let genesis_written = meshsync()
        .args(["genesis", "--proposers", "1", "--out"])
        .arg(&net)
        .args(["--slot-ms", &SLOT_MS.to_string()])
        .args(["--network-id", &NETWORK_ID.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(genesis_written.success());
    let keygen = meshsync()
        .args(["keygen", "--out"])
        .arg(dir.join("proposer-node.key"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(keygen.success());
    let genesis =
        Genesis::from_toml(&std::fs::read_to_string(net.join("genesis.toml")).unwrap()).unwrap();

    // The peer: follows the chain by gossip, proposes nothing.
    let mut config = Config::new(NETWORK_ID);
    config.chain = ChainConfig {
        genesis: Arc::new(genesis.clone()),
        follow_gossip: true,
        ..ChainConfig::devnet(NETWORK_ID)
    };
    let options = DriverOptions {
        workers: 1,
        ..DriverOptions::default()
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut peer = Driver::bind_with(
        loopback,
        config,
        Identity::from_seed(17),
        [17; 32],
        &options,
    )
    .unwrap();
    let imports = peer.subscribe();
    let peer_address = format!("{}@{}", peer.local_addr(), peer.peer_id());

    let log = dir.join("proposer.log");
    let mut proposer = start_proposer(dir, &net, &peer_address, &log);
    let deadline = StdInstant::now() + DEADLINE;
    let mut seen = Seen::default();

    // The first block of the slot the wall clock is in reaches the peer.
    let mut published = None;
    let reached = peer
        .run_until(
            |_| {
                let slot_now = genesis.slot_at(now_ms());
                if let Some(&slot) = seen.take(&imports).iter().find(|&&slot| slot == slot_now) {
                    published = Some(slot);
                }
                published.is_some()
            },
            deadline,
        )
        .unwrap();
    let Some(slot) = published.filter(|_| reached) else {
        let _ = proposer.kill();
        panic!(
            "no block reached the peer: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    };

    // Killed at once (SIGKILL), and started again at once, in that slot.
    proposer.kill().unwrap();
    proposer.wait().unwrap();
    let mut restarted = start_proposer(dir, &net, &peer_address, &log);
    assert_eq!(
        genesis.slot_at(now_ms()),
        slot,
        "the restart came after slot {slot} ended: the machine is too slow for this test"
    );

    // The restarted proposer loaded its watermark for that slot, and goes
    // on to publish a later block: had it signed a second block for the
    // slot, the peer would have imported it before that one.
    let watermark_line = "signing watermark of proposer 0";
    let mut later = false;
    let done = peer
        .run_until(
            |_| {
                later |= seen
                    .take(&imports)
                    .iter()
                    .any(|&seen_slot| seen_slot > slot);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                later && text.matches(watermark_line).count() >= 2
            },
            deadline,
        )
        .unwrap();
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        done,
        "the restarted proposer published nothing later: {text}"
    );
    let restart_log = &text[text.rfind(watermark_line).unwrap()..];
    let loaded: u64 = restart_log
        .split("slot ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no watermark slot in {restart_log}"));
    assert!(
        loaded >= slot,
        "the restart loaded watermark {loaded}, below the published slot {slot}"
    );
    assert_eq!(
        seen.double_signed(),
        vec![],
        "slots with two blocks (slot, roots): {text}"
    );
    assert_eq!(seen.roots_by_slot[&slot].len(), 1);
}
