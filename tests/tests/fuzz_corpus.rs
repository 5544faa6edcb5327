//! Replays every file of the fuzz corpora (`fuzz/corpus/TARGET/*`) through the
//! same functions the fuzz targets call, so a crash once found and added to a
//! corpus stays fixed on the stable toolchain.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("corpus {}: {error}", directory.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {target} is empty");
    for file in &files {
        let data = std::fs::read(file).expect("readable corpus file");
        run(&data);
    }
    eprintln!("{target}: replayed {} inputs", files.len());
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", meshsync_core::fuzzing::frame_decode);
}

#[test]
fn handshake_responder_corpus() {
    replay(
        "handshake_responder",
        meshsync_core::fuzzing::handshake_responder,
    );
}

#[test]
fn node_inputs_corpus() {
    replay("node_inputs", |data| {
        meshsync_core::fuzzing::node_inputs(data);
    });
}

#[test]
fn reqresp_handler_corpus() {
    replay("reqresp_handler", |data| {
        meshsync_core::fuzzing::reqresp_handler(data);
    });
}

#[test]
fn reqresp_message_decode_corpus() {
    replay(
        "reqresp_message_decode",
        meshsync_core::reqresp::fuzzing::message_decode,
    );
}

#[test]
fn reqresp_body_decode_corpus() {
    replay(
        "reqresp_body_decode",
        meshsync_core::reqresp::fuzzing::body_decode,
    );
}

#[test]
fn reqresp_snappy_decompress_corpus() {
    replay(
        "reqresp_snappy_decompress",
        meshsync_core::reqresp::fuzzing::snappy_decompress,
    );
}

#[test]
fn reqresp_outbound_script_corpus() {
    replay(
        "reqresp_outbound_script",
        meshsync_core::reqresp::fuzzing::outbound_script,
    );
}

#[test]
fn reqresp_inbound_script_corpus() {
    replay(
        "reqresp_inbound_script",
        meshsync_core::reqresp::fuzzing::inbound_script,
    );
}

#[test]
fn reqresp_rate_limiter_script_corpus() {
    replay(
        "reqresp_rate_limiter_script",
        meshsync_core::reqresp::fuzzing::rate_limiter_script,
    );
}

#[test]
fn chain_decode_block_corpus() {
    replay(
        "chain_decode_block",
        meshsync_core::chain::fuzzing::decode_block,
    );
}

#[test]
fn chain_store_script_corpus() {
    replay(
        "chain_store_script",
        meshsync_core::chain::fuzzing::store_script,
    );
}

#[test]
fn sync_range_script_corpus() {
    replay(
        "sync_range_script",
        meshsync_core::sync::fuzzing::range_sync_script,
    );
}

#[test]
fn sync_lookup_script_corpus() {
    replay(
        "sync_lookup_script",
        meshsync_core::sync::fuzzing::lookup_script,
    );
}

#[test]
fn gossip_decode_rpc_corpus() {
    replay(
        "gossip_decode_rpc",
        meshsync_core::gossip::fuzzing::decode_rpc,
    );
}

#[test]
fn gossip_router_script_corpus() {
    replay(
        "gossip_router_script",
        meshsync_core::gossip::fuzzing::router_script,
    );
}

#[test]
fn discovery_record_decode_corpus() {
    replay(
        "discovery_record_decode",
        meshsync_core::discovery::fuzzing::record_decode,
    );
}

/// The record-exchange answer seeds decode, so the fuzzer starts from the
/// success path of the record-then-observed-address layout.
#[test]
fn discovery_record_decode_corpus_holds_valid_record_exchange_answers() {
    use meshsync_core::discovery::PeerRecordAnswer;
    let directory =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/discovery_record_decode");
    let mut answers = 0;
    for name in [
        "peer-record-answer-observed-ipv4",
        "peer-record-answer-largest",
    ] {
        let data = std::fs::read(directory.join(name)).expect("the seed exists");
        let peer = meshsync_core::PeerId::from_bytes(data[1..33].try_into().unwrap());
        let answer = PeerRecordAnswer::decode(&data, 1, peer)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(answer.encode(), data, "{name}");
        answers += 1;
    }
    assert_eq!(answers, 2);
}

#[test]
fn discovery_table_script_corpus() {
    replay(
        "discovery_table_script",
        meshsync_core::discovery::fuzzing::table_script,
    );
}
