//! Fuzz entry points for discovery: record and answer decoding, and a byte
//! script driving the [`Discovery`] machine (table, candidates, lookups,
//! liveness checks, dials, time), with every invariant checked after every
//! step.
//!
//! # Design
//! [`record_decode`] feeds the bytes to every discovery decoder; whatever
//! decodes must encode back to the same bytes. [`table_script`] reads one
//! opcode byte and its arguments at a time; a script that runs out of bytes
//! ends. Peers come from a small pool of identities whose records are
//! signed on first use, with addresses from a palette that mixes one /16,
//! distinct /16s, private and loopback addresses, so the subnet caps, the
//! address policy and full buckets are all reached.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::fuzz_script::Script;
use crate::identity::{Identity, PeerId};
use crate::machine::Machine;
use crate::time::{Duration, Instant};

use super::discover::{Config, Discovery, QueryId};
use super::key::Key;
use super::record::Record;
use super::table::TableConfig;
use super::wire::{decode_peer_record_request, FindNodeAnswer, FindNodeRequest, PeerRecordAnswer};

/// Operations one script may run: keeps each fuzz case fast.
pub const SCRIPT_OPERATIONS_MAX: usize = 1_000;
/// Identities a script plays.
const POOL_PEERS: u8 = 48;
/// The network every script's records are signed for.
const NETWORK: u64 = 1;

/// Every discovery decoder on the same bytes: never a panic, and what
/// decodes re-encodes to the same bytes.
pub fn record_decode(data: &[u8]) {
    if let Ok(record) = Record::decode(data, NETWORK) {
        assert_eq!(record.encode(), data, "records have one encoding");
        assert!(
            PeerRecordAnswer::decode(data, NETWORK, record.peer()).is_err(),
            "a record-exchange answer carries an observed address after the record"
        );
    }
    // The answer names its author in its record: decode for that peer
    // (read at the record's peer id offset, when the bytes are long enough).
    if let Some(peer) = data
        .get(1..33)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(PeerId::from_bytes)
    {
        if let Ok(answer) = PeerRecordAnswer::decode(data, NETWORK, peer) {
            assert_eq!(answer.encode(), data, "answers have one encoding");
            assert_eq!(answer.record.peer(), peer);
        }
    }
    if let Ok(answer) = FindNodeAnswer::decode(data, NETWORK) {
        assert_eq!(answer.encode(), data, "answers have one encoding");
    }
    if let Ok(request) = FindNodeRequest::decode(data) {
        assert_eq!(request.encode(), data);
    }
    if decode_peer_record_request(data).is_ok() {
        assert!(data.is_empty());
    }
}

/// The identities, records and addresses a script plays with.
struct Pool {
    records: BTreeMap<u8, Record>,
}

impl Pool {
    /// The address palette: index `n` picks one of several kinds.
    fn ip(n: u8) -> IpAddr {
        match n % 8 {
            // One /16, many /24s: the Sybil case.
            0..=2 => IpAddr::from([45, 33, n, 1]),
            // Distinct /16s.
            3..=5 => IpAddr::from([60 + n % 100, n, 1, 1]),
            // Private and loopback, refused unless allowed.
            6 => IpAddr::from([10, 0, 0, n]),
            _ => IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn record(&mut self, index: u8) -> Record {
        let index = index % POOL_PEERS;
        self.records
            .entry(index)
            .or_insert_with(|| {
                let identity = Identity::from_seed(1_000 + u64::from(index));
                let addr = SocketAddr::new(Pool::ip(index), 9000 + u16::from(index));
                Record::sign(&identity, NETWORK, 1, &[addr])
            })
            .clone()
    }

    fn peer(&mut self, index: u8) -> PeerId {
        self.record(index).peer()
    }
}

/// The discovery machine fed a script: peers verified (from palette
/// addresses), disconnects, dial failures, answers made of pool records or
/// raw bytes, failed queries, liveness verdicts, inbound requests, peer
/// counts, bootnodes, lookups and time steps.
pub fn table_script(data: &[u8]) {
    let mut script = Script::new(data);
    let Some(flags) = script.byte() else {
        return;
    };
    let local = Record::sign(
        &Identity::from_seed(1),
        NETWORK,
        1,
        &[SocketAddr::from(([198, 51, 100, 1], 9000))],
    );
    let config = Config {
        local,
        table: TableConfig {
            allow_private: flags & 1 != 0,
            subnet_limits: flags & 2 == 0,
        },
    };
    let mut now = Instant::ZERO;
    let mut discovery = Discovery::new(config, [flags; 32], now);
    let mut pool = Pool {
        records: BTreeMap::new(),
    };
    let mut queries: VecDeque<QueryId> = VecDeque::new();
    for _ in 0..SCRIPT_OPERATIONS_MAX {
        let Some(op) = script.byte() else {
            break;
        };
        let arg = script.byte().unwrap_or(0);
        match op % 12 {
            0 => {
                let record = pool.record(arg);
                let ip = Pool::ip(script.byte().unwrap_or(arg));
                discovery.handle_peer_verified(now, record.peer(), record, ip);
            }
            1 => discovery.handle_peer_disconnected(now, pool.peer(arg)),
            2 => discovery.handle_dial_failed(now, pool.peer(arg)),
            3 => {
                if let Some(id) = queries.pop_front() {
                    let count = usize::from(arg % 17);
                    let start = script.byte().unwrap_or(0);
                    let mut records: Vec<Record> = (0..count)
                        .map(|offset| pool.record(start.wrapping_add(offset as u8)))
                        .collect();
                    records.sort_by_key(Record::peer);
                    records.dedup_by_key(|record| record.peer());
                    discovery.apply_answer(now, id, FindNodeAnswer { records });
                }
            }
            4 => {
                if let Some(id) = queries.pop_front() {
                    let bytes = script.bytes(usize::from(arg));
                    let _ = discovery.handle_find_node_answer(now, id, bytes);
                }
            }
            5 => {
                if let Some(id) = queries.pop_front() {
                    discovery.handle_query_failed(now, id);
                }
            }
            6 => discovery.handle_liveness(now, pool.peer(arg), arg & 0x80 != 0),
            7 => {
                let target = Key([arg; 32]);
                let from = pool.peer(script.byte().unwrap_or(0));
                let answer =
                    discovery.handle_find_node_request(now, from, FindNodeRequest { target });
                assert!(answer.records.len() <= super::limits::BUCKET_ENTRIES_MAX);
                assert!(answer.records.iter().all(|record| record.peer() != from));
                let bytes = answer.encode();
                assert_eq!(FindNodeAnswer::decode(&bytes, NETWORK), Ok(answer));
            }
            8 => discovery.set_peer_count(now, usize::from(arg % 60), 25),
            9 => {
                let addr = SocketAddr::new(Pool::ip(arg), u16::from(arg));
                let _ = discovery.add_bootnode(now, pool.peer(arg), addr);
            }
            10 => {
                now = now + Duration::from_millis(u64::from(arg) * 500);
                discovery.handle_timeout(now);
            }
            _ => {
                discovery.start_lookup(now, Key([arg; 32]));
            }
        }
        // Drain every output, as the node would.
        while let Some(query) = discovery.poll_query() {
            queries.push_back(query.id);
        }
        while queries.len() > 64 {
            queries.pop_front();
        }
        while discovery.poll_dial().is_some() {}
        while discovery.poll_liveness_check().is_some() {}
        while discovery.poll_lookup_outcome().is_some() {}
        if let Some(deadline) = discovery.next_deadline() {
            if deadline <= now {
                discovery.handle_timeout(now);
            }
        }
        discovery.assert_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_take_any_bytes() {
        record_decode(&[]);
        record_decode(&[1; 190]);
        record_decode(&[0; 32]);
        record_decode(&[16, 0, 1]);
        let record = Pool {
            records: BTreeMap::new(),
        }
        .record(3);
        record_decode(&record.encode());
        let observed: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        record_decode(&PeerRecordAnswer::new(record.clone(), observed).encode());
        record_decode(
            &FindNodeAnswer {
                records: vec![record],
            }
            .encode(),
        );
    }

    #[test]
    fn scripts_of_every_opcode_keep_the_invariants() {
        // Fill a table from many addresses, answer, fail, check, time out.
        let mut script = vec![0u8];
        for index in 0..POOL_PEERS {
            script.extend_from_slice(&[0, index, index]);
        }
        script.extend_from_slice(&[8, 0, 11, 7, 3, 16, 5, 4, 3, 0, 5, 0, 6, 0x83, 10, 60]);
        script.extend_from_slice(&[7, 9, 2, 1, 4, 2, 2, 5, 9, 200, 10, 255, 10, 255]);
        table_script(&script);
        let mut private = script.clone();
        private[0] = 3;
        table_script(&private);
        let mut rng_bytes: Vec<u8> = (0..4_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        rng_bytes[0] = 1;
        table_script(&rng_bytes);
    }
}
