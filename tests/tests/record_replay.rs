//! Record and replay: two real nodes over loopback TCP, each started with a
//! recording (`DriverOptions::record`, the library side of `meshsync node
//! --record FILE`). One proposes a block every 200 ms; the other joins a
//! few blocks late, range-syncs what it missed, then follows by gossip.
//! Both stop; each recording is replayed in-process by the simulator's
//! replay (`meshsync-sim replay FILE`), which rebuilds the node from the
//! recorded seed, identity and configuration, feeds it every recorded
//! input at its instant, and must match every checkpoint of the action
//! hash, bit for bit. A recording with one input swapped for another is
//! reported as diverging at the first checkpoint after that input.
//!
//! Every wait is a deadline on real state, polled through the driver.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use meshsync_core::chain::{devnet_keys, ChainConfig, ProposerKey};
use meshsync_core::io::CloseCause;
use meshsync_core::record::{encode_frame, Entry, Reader};
use meshsync_core::{Command, Config, Identity, Input};
use meshsync_mio::driver::{Driver, DriverOptions, RecordOptions};
use meshsync_mio::testing::{devnet_genesis, TempDir};
use meshsync_sim::replay::{replay, ReplayError};

const NETWORK_ID: u64 = 78;
const SLOT_MS: u64 = 200;
/// The longest any wait lasts (never reached when the test passes).
const DEADLINE: Duration = Duration::from_secs(20);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Fewer inputs than this would not show much of a node's life.
const INPUTS_MIN: u64 = 40;
/// A short run's recording has a few hundred inputs: checkpoints closer
/// than the default's, so it has many, and the swapped input is placed
/// between two of them.
const HASH_EVERY_INPUTS: u64 = 8;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A recording node on a one-proposer devnet; the proposer if `proposer`.
fn bind(genesis_time_ms: u64, proposer: bool, seed: u64, record: &Path) -> Driver {
    let genesis = devnet_genesis(NETWORK_ID, 1, SLOT_MS, genesis_time_ms).expect("a genesis");
    let mut config = Config::new(NETWORK_ID);
    config.chain = ChainConfig {
        genesis: Arc::new(genesis),
        stored: Arc::from(Vec::new()),
        history_anchor: None,
        proposer_keys: if proposer {
            vec![ProposerKey(Arc::new(devnet_keys(NETWORK_ID, 1).remove(0)))]
        } else {
            Vec::new()
        },
        signed_slots: Vec::new(),
        body_bytes: 256,
        follow_gossip: true,
    };
    // A follower a few slots behind range-syncs with its one peer, rather
    // than wait an epoch for parent lookups or for more peers.
    config.sync.sync_distance_slots = 2;
    config.sync.peers_min = 1;
    let options = DriverOptions {
        workers: 2,
        record: Some(RecordOptions {
            hash_every_inputs: HASH_EVERY_INPUTS,
            ..RecordOptions::new(record.to_path_buf())
        }),
        ..DriverOptions::default()
    };
    Driver::bind_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        Identity::from_seed(seed),
        [seed as u8; 32],
        &options,
    )
    .expect("the node starts")
}

/// Polls `probe` on the running driver until `done` holds of its answer.
fn wait<T: Send + 'static>(
    driver: &meshsync_mio::driver::RunningDriver,
    probe: fn(&Driver) -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = StdInstant::now() + DEADLINE;
    loop {
        let state = driver
            .handle()
            .query(probe, QUERY_TIMEOUT)
            .expect("the driver answers");
        if done(&state) || StdInstant::now() >= deadline {
            return state;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Records both nodes of a short chain's life, in `dir`.
fn record_two_nodes(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let proposer_file = dir.join("proposer.rec");
    let follower_file = dir.join("follower.rec");
    // Slot 1 starts at once; the proposer produces alone for a while.
    let genesis_time_ms = now_ms() - SLOT_MS;
    let proposer = bind(genesis_time_ms, true, 1, &proposer_file)
        .spawn("proposer")
        .expect("a thread");
    let produced = wait(
        &proposer,
        |driver| driver.node().counters().blocks_produced,
        |produced| *produced >= 8,
    );
    assert!(produced >= 8, "the proposer produced {produced} blocks");
    let follower = bind(genesis_time_ms, false, 2, &follower_file)
        .spawn("follower")
        .expect("a thread");
    follower
        .handle()
        .command(Command::Dial {
            addr: proposer.local_addr(),
            peer: Some(proposer.peer_id()),
        })
        .expect("the follower runs");
    // It syncs the blocks it missed, then imports twelve more by gossip.
    let (imported, head) = wait(
        &follower,
        |driver| {
            let counters = driver.node().counters();
            (counters.blocks_imported, driver.node().chain().head().slot)
        },
        |(imported, _)| *imported >= produced + 12,
    );
    assert!(
        imported >= produced + 12,
        "the follower imported {imported} blocks, head at slot {head}"
    );
    follower.stop().expect("the follower stops");
    proposer.stop().expect("the proposer stops");
    let read = |path: &Path| std::fs::read(path).expect("the recording is there");
    (read(&proposer_file), read(&follower_file))
}

#[test]
fn two_recorded_nodes_replay_bit_for_bit_and_a_swapped_input_diverges() {
    let dir = TempDir::new("record-replay");
    let (proposer, follower) = record_two_nodes(dir.path());
    for (name, bytes) in [("proposer", &proposer), ("follower", &follower)] {
        let report = replay(bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        eprintln!(
            "{name}: {report}; {} bytes, {} per input",
            bytes.len(),
            bytes.len() as u64 / report.inputs.max(1)
        );
        assert!(report.inputs >= INPUTS_MIN, "{name}: {report}");
        assert_eq!(
            report.inputs_unchecked, 0,
            "{name}: the end marker covers all"
        );
        assert_eq!(
            report.checkpoints_matched,
            report.inputs / HASH_EVERY_INPUTS + 1,
            "{name}: every checkpoint and the end marker were compared"
        );
    }

    // Swap one input of the follower, well after its handshake, for the
    // loss of its connection: the node then acts differently at once.
    let (_, mut reader) = Reader::open(&follower).expect("a recording");
    let mut inputs = 0;
    let mut checkpoints = Vec::new();
    let mut swapped = None;
    let wanted = replay(&follower).expect("it replays").inputs / 2;
    loop {
        let offset = reader.offset();
        let Some(entry) = reader.next_entry() else {
            break;
        };
        match entry.expect("the recording reads back") {
            Entry::Input { at, input } => {
                if let (None, Input::BytesReceived { conn, .. }) = (&swapped, &input) {
                    if inputs >= wanted {
                        let closed = Input::ConnectionClosed {
                            conn: *conn,
                            cause: CloseCause::RemoteClosed,
                        };
                        swapped = Some((inputs, offset, reader.offset(), at, closed));
                    }
                }
                inputs += 1;
            }
            Entry::Checkpoint(checkpoint) | Entry::End { checkpoint, .. } => {
                checkpoints.push(checkpoint.inputs)
            }
        }
    }
    let (index, start, end, at, closed) = swapped.expect("a BytesReceived late enough");
    let mut tampered = follower[..start].to_vec();
    encode_frame(&Entry::Input { at, input: &closed }, &mut tampered);
    tampered.extend_from_slice(&follower[end..]);
    let first_after = *checkpoints
        .iter()
        .find(|inputs| **inputs > index)
        .expect("the end marker covers every input");
    let last_before = checkpoints
        .iter()
        .copied()
        .filter(|inputs| *inputs <= index)
        .max()
        .unwrap_or(0);
    let replayed = replay(&tampered);
    if let Err(error) = &replayed {
        eprintln!("swapped input {index}: {error}");
    }
    match replayed {
        Err(ReplayError::Diverged {
            matched_inputs,
            inputs,
            at: reported_at,
            ..
        }) => {
            assert_eq!(inputs, first_after, "input {index} was swapped");
            assert_eq!(matched_inputs, last_before);
            assert!(reported_at >= at);
        }
        other => panic!("input {index} swapped, yet the replay gave {other:?}"),
    }
}
