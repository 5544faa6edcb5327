//! The trace hash: sha256 over every action of every node, in order, and
//! over what the simulator did to nodes from outside (crashes, restarts).
//!
//! # Design
//! Each action is encoded explicitly, field by field, with fixed-width
//! little-endian integers and length-prefixed variable parts, so the hash
//! depends on nothing but the run: not on `Debug` layouts of std types, not on
//! pointer width, not on the platform. Notifications are hashed through their
//! `Debug` text, which the core derives from plain data (peer ids print as
//! base58 prefixes, addresses as text).
//!
//! | field | bytes |
//! | --- | --- |
//! | node index | u64 LE |
//! | virtual time, microseconds | u64 LE |
//! | tag: 1 Dial, 2 CancelDial, 3 Send, 4 Close, 5 Notify, 6 Crash, 7 Restart | u8 |
//! | Dial: dial id, address | u64 LE, address (below) |
//! | CancelDial: dial id | u64 LE |
//! | Send: connection id, length, bytes | u64 LE, u64 LE, bytes |
//! | Close: connection id | u64 LE |
//! | Notify: length, `Debug` text | u64 LE, UTF-8 |
//! | Crash, Restart: nothing more | |
//!
//! An address is a family byte (4 or 6), the IP octets, and the port (u16 LE).

use std::io::Write as _;
use std::net::SocketAddr;

use meshsync_core::{Action, Instant, Notification};
use sha2::{Digest, Sha256};

use crate::types::NodeIndex;

/// Running sha256 over every action of every node.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    hasher: Sha256,
    actions: u64,
    /// The last notification's text: one buffer, reused.
    text: Vec<u8>,
}

const TAG_DIAL: u8 = 1;
const TAG_CANCEL_DIAL: u8 = 2;
const TAG_SEND: u8 = 3;
const TAG_CLOSE: u8 = 4;
const TAG_NOTIFY: u8 = 5;
const TAG_CRASH: u8 = 6;
const TAG_RESTART: u8 = 7;
const TAG_WORK: u8 = 8;
const TAG_PERSIST: u8 = 9;
const TAG_PERSIST_PEERS: u8 = 10;
const TAG_READ_BLOCKS: u8 = 11;

/// Something the simulator did to a node from outside, hashed with the actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// The node crashed.
    Crash,
    /// The node restarted.
    Restart,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Trace {
        Trace::default()
    }

    /// Adds one action of `node`, taken at `at`.
    pub fn record(&mut self, node: NodeIndex, at: Instant, action: &Action) {
        self.actions += 1;
        self.u64(node.0 as u64);
        self.u64(at.as_micros());
        match action {
            Action::Dial { dial, addr } => {
                self.tag(TAG_DIAL);
                self.u64(dial.0);
                self.addr(addr);
            }
            Action::CancelDial { dial } => {
                self.tag(TAG_CANCEL_DIAL);
                self.u64(dial.0);
            }
            Action::Send { conn, bytes } => {
                self.tag(TAG_SEND);
                self.u64(conn.0);
                self.bytes(bytes);
            }
            Action::Close { conn } => {
                self.tag(TAG_CLOSE);
                self.u64(conn.0);
            }
            Action::Work { id, job } => {
                self.tag(TAG_WORK);
                self.u64(id.0);
                match job {
                    meshsync_core::work::Job::VerifyBlocks { blocks, seed, .. } => {
                        self.u64(blocks.len() as u64);
                        for block in blocks {
                            self.bytes(block.root().as_bytes());
                        }
                        self.bytes(seed);
                    }
                }
            }
            Action::Persist(batch) => {
                self.tag(TAG_PERSIST);
                self.u64(batch.id);
                self.u64(batch.blocks.len() as u64);
                for (root, _) in &batch.blocks {
                    self.bytes(root.as_bytes());
                }
                self.u64(batch.delete.len() as u64);
                for root in &batch.delete {
                    self.bytes(root.as_bytes());
                }
                self.bytes(batch.finalized.root.as_bytes());
                self.u64(batch.finalized.slot);
            }
            Action::ReadBlocks(read) => {
                self.tag(TAG_READ_BLOCKS);
                self.u64(read.id);
                self.u64(read.start_slot);
                self.u64(read.end_slot);
                self.u64(read.blocks_max as u64);
                self.u64(read.bytes_max as u64);
            }
            Action::PersistPeers(known) => {
                self.tag(TAG_PERSIST_PEERS);
                self.u64(known.records.len() as u64);
                for record in &known.records {
                    self.bytes(&record.record);
                    self.u64(record.last_seen_unix_ms);
                }
                self.u64(known.scores.len() as u64);
                for score in &known.scores {
                    self.bytes(score.peer.as_bytes());
                    self.u64(score.score_micropoints as u64);
                }
                self.u64(known.peer_bans.len() as u64);
                for ban in &known.peer_bans {
                    self.bytes(ban.peer.as_bytes());
                    self.u64(ban.until_unix_ms);
                }
                self.u64(known.ip_bans.len() as u64);
                for ban in &known.ip_bans {
                    self.bytes(ban.ip.to_string().as_bytes());
                    self.u64(ban.until_unix_ms);
                }
            }
            Action::Notify(notification) => {
                self.tag(TAG_NOTIFY);
                let mut text = std::mem::take(&mut self.text);
                text.clear();
                write_notification(&mut text, notification);
                self.bytes(&text);
                self.text = text;
            }
        }
    }

    /// Adds `marker` for `node` at `at`. Counted with the actions.
    pub fn record_marker(&mut self, node: NodeIndex, at: Instant, marker: Marker) {
        self.actions += 1;
        self.u64(node.0 as u64);
        self.u64(at.as_micros());
        self.tag(match marker {
            Marker::Crash => TAG_CRASH,
            Marker::Restart => TAG_RESTART,
        });
    }

    /// Actions (and markers) recorded so far.
    pub fn actions(&self) -> u64 {
        self.actions
    }

    /// The hash of everything recorded so far (the trace keeps running).
    pub fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// [`Trace::hash`] in lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    fn tag(&mut self, tag: u8) {
        self.hasher.update([tag]);
    }

    fn u64(&mut self, value: u64) {
        self.hasher.update(value.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.hasher.update(bytes);
    }

    fn addr(&mut self, addr: &SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => {
                self.tag(4);
                self.hasher.update(v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                self.tag(6);
                self.hasher.update(v6.ip().octets());
            }
        }
        self.hasher.update(addr.port().to_le_bytes());
    }
}

/// Writes `notification`'s `Debug` text, `format!("{notification:?}")`, to
/// `out`: the variants with byte vectors field by field (see the module
/// docs), the others through `Debug`.
fn write_notification(out: &mut Vec<u8>, notification: &Notification) {
    // Writing to a Vec<u8> never fails.
    const INFALLIBLE: &str = "writing to a Vec<u8> never fails";
    match notification {
        Notification::Response {
            peer,
            tag,
            protocol,
            chunks,
        } => {
            write!(
                out,
                "Response {{ peer: {peer:?}, tag: {tag:?}, protocol: {protocol:?}, chunks: ["
            )
            .expect(INFALLIBLE);
            for (index, chunk) in chunks.iter().enumerate() {
                if index > 0 {
                    out.extend_from_slice(b", ");
                }
                write_byte_list(out, chunk);
            }
            out.extend_from_slice(b"] }");
        }
        Notification::InboundRequest {
            peer,
            id,
            protocol,
            body,
        } => {
            write!(
                out,
                "InboundRequest {{ peer: {peer:?}, id: {id:?}, protocol: {protocol:?}, body: "
            )
            .expect(INFALLIBLE);
            write_byte_list(out, body);
            out.extend_from_slice(b" }");
        }
        Notification::GossipMessage {
            id,
            topic,
            payload,
            from,
        } => {
            write!(
                out,
                "GossipMessage {{ id: {id:?}, topic: {topic:?}, payload: "
            )
            .expect(INFALLIBLE);
            write_byte_list(out, payload);
            write!(out, ", from: {from:?} }}").expect(INFALLIBLE);
        }
        other => write!(out, "{other:?}").expect(INFALLIBLE),
    }
}

/// Each byte's decimal digits behind `", "`, padded to 8 bytes so that one
/// fixed-size copy writes any of them, and how many of those bytes count
/// (the separator and 1 to 3 digits).
const SEPARATED: [([u8; 8], u8); 256] = separated_table();
/// Bytes of the separator in front of every byte but the first.
const SEPARATOR_BYTES: usize = 2;

const fn separated_table() -> [([u8; 8], u8); 256] {
    let mut table = [([0; 8], 0); 256];
    let mut byte = 0;
    while byte < 256 {
        let (entry, length) = &mut table[byte];
        entry[0] = b',';
        entry[1] = b' ';
        let mut at = SEPARATOR_BYTES;
        if byte >= 100 {
            entry[at] = b'0' + (byte / 100) as u8;
            at += 1;
        }
        if byte >= 10 {
            entry[at] = b'0' + (byte / 10 % 10) as u8;
            at += 1;
        }
        entry[at] = b'0' + (byte % 10) as u8;
        *length = (at + 1) as u8;
        byte += 1;
    }
    table
}

/// Writes `bytes` as `Debug` does, `[0, 17, 255]`: decimal, comma and space.
///
/// A table lookup and one 8-byte copy per byte: the simulator hashes every
/// payload a node hands its application in this form (1 MiB blocks become
/// about 4.6 MB of text), and a digit at a time was a fifth of a gossip
/// run's CPU.
#[allow(clippy::arithmetic_side_effects)] // `at` stays below the room reserved: 5 bytes per input byte plus 8.
fn write_byte_list(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    // Every entry is at most 5 bytes that count; the last copy writes 8.
    out.resize(start + 1 + bytes.len() * 5 + 8, 0);
    let room = &mut out[start..];
    room[0] = b'[';
    let mut at = 1;
    for (index, &byte) in bytes.iter().enumerate() {
        let (entry, length) = &SEPARATED[usize::from(byte)];
        let length = usize::from(*length);
        if index == 0 {
            // No separator in front of the first.
            room[at..at + 8 - SEPARATOR_BYTES].copy_from_slice(&entry[SEPARATOR_BYTES..]);
            at += length - SEPARATOR_BYTES;
        } else {
            room[at..at + 8].copy_from_slice(entry);
            at += length;
        }
    }
    room[at] = b']';
    out.truncate(start + at + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::{ConnId, DialId};

    fn hash_of(actions: &[(usize, u64, Action)]) -> String {
        let mut trace = Trace::new();
        for (node, micros, action) in actions {
            trace.record(NodeIndex(*node), Instant::from_micros(*micros), action);
        }
        trace.hash_hex()
    }

    fn send(bytes: &[u8]) -> Action {
        Action::Send {
            conn: ConnId(1),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn notifications_are_hashed_through_their_debug_text() {
        use meshsync_core::reqresp::{ProtocolId, ProtocolName, RequestId};
        use meshsync_core::{Identity, MessageId, Topic};

        let peer = Identity::from_seed(7).peer_id();
        let other = Identity::from_seed(8).peer_id();
        let every_byte: Vec<u8> = (0..=255).collect();
        let name = ProtocolName::new("app/echo").expect("a valid name");
        let topic = Topic::new("blocks").expect("a valid topic");
        let notifications = [
            Notification::Response {
                peer,
                tag: 12,
                protocol: ProtocolId::BlocksByRange,
                chunks: vec![every_byte.clone(), Vec::new(), vec![9, 10, 99, 100]],
            },
            Notification::Response {
                peer,
                tag: u64::MAX,
                protocol: ProtocolId::Application(name),
                chunks: Vec::new(),
            },
            Notification::Response {
                peer: other,
                tag: 0,
                protocol: ProtocolId::Status,
                chunks: vec![Vec::new()],
            },
            Notification::InboundRequest {
                peer,
                id: RequestId(3),
                protocol: name,
                body: every_byte.clone(),
            },
            Notification::InboundRequest {
                peer: other,
                id: RequestId(0),
                protocol: name,
                body: Vec::new(),
            },
            Notification::GossipMessage {
                id: MessageId([0xab; 20]),
                topic: topic.clone(),
                payload: every_byte.iter().rev().copied().collect(),
                from: other,
            },
            Notification::GossipMessage {
                id: MessageId([0; 20]),
                topic,
                payload: Vec::new(),
                from: peer,
            },
            Notification::BlockImported {
                slot: 5,
                root: meshsync_core::chain::Root([1; 32]),
            },
            Notification::PeerUnbanned { peer },
        ];
        for notification in &notifications {
            let mut text = Vec::new();
            write_notification(&mut text, notification);
            assert_eq!(
                String::from_utf8(text).expect("text"),
                format!("{notification:?}")
            );
        }
        // What the trace hashes is that text, length first.
        let mut trace = Trace::new();
        let mut expected = Sha256::new();
        for notification in &notifications {
            trace.record(
                NodeIndex(2),
                Instant::from_micros(5),
                &Action::Notify(notification.clone()),
            );
            let text = format!("{notification:?}");
            expected.update(2u64.to_le_bytes());
            expected.update(5u64.to_le_bytes());
            expected.update([TAG_NOTIFY]);
            expected.update((text.len() as u64).to_le_bytes());
            expected.update(text.as_bytes());
        }
        assert_eq!(trace.hash(), <[u8; 32]>::from(expected.finalize()));
    }

    #[test]
    fn byte_lists_are_written_as_debug_writes_them() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let mut lists = vec![
            Vec::new(),
            vec![0],
            vec![9],
            vec![10],
            vec![99],
            vec![100],
            vec![255],
        ];
        lists.push(every_byte.clone());
        lists.push(every_byte.iter().rev().copied().collect());
        // A pseudo-random megabyte, as a block payload is.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        lists.push(
            (0..1 << 20)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect(),
        );
        for list in &lists {
            let mut out = b"prefix".to_vec();
            write_byte_list(&mut out, list);
            assert_eq!(
                String::from_utf8(out).expect("text"),
                format!("prefix{list:?}"),
                "a list of {} bytes",
                list.len()
            );
        }
    }

    #[test]
    fn same_actions_same_hash_and_every_field_counts() {
        let base = hash_of(&[(0, 10, send(b"ab")), (1, 10, send(b"c"))]);
        assert_eq!(base, hash_of(&[(0, 10, send(b"ab")), (1, 10, send(b"c"))]));
        // Node, time, bytes, order and message boundaries all change the hash.
        assert_ne!(base, hash_of(&[(1, 10, send(b"ab")), (1, 10, send(b"c"))]));
        assert_ne!(base, hash_of(&[(0, 11, send(b"ab")), (1, 10, send(b"c"))]));
        assert_ne!(base, hash_of(&[(0, 10, send(b"ax")), (1, 10, send(b"c"))]));
        assert_ne!(base, hash_of(&[(1, 10, send(b"c")), (0, 10, send(b"ab"))]));
        assert_ne!(base, hash_of(&[(0, 10, send(b"a")), (1, 10, send(b"bc"))]));
        let dial = Action::Dial {
            dial: DialId(1),
            addr: "10.0.0.1:9000".parse().expect("literal address"),
        };
        let other_port = Action::Dial {
            dial: DialId(1),
            addr: "10.0.0.1:9001".parse().expect("literal address"),
        };
        assert_ne!(hash_of(&[(0, 0, dial)]), hash_of(&[(0, 0, other_port)]));
        // Variants with the same fields differ by their tag.
        let cancel = Action::CancelDial { dial: DialId(1) };
        let close = Action::Close { conn: ConnId(1) };
        assert_ne!(hash_of(&[(0, 0, cancel)]), hash_of(&[(0, 0, close)]));
    }
}
