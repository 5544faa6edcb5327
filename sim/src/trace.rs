//! The trace hash: sha256 over every action of every node, in order, and
//! over what the simulator did to nodes from outside (crashes, restarts).
//!
//! # Design
//! Each action is encoded explicitly, field by field, with fixed-width
//! little-endian integers and length-prefixed variable parts, so the hash
//! depends on nothing but the run: not on `Debug` layouts of std types, not on
//! pointer width, not on the platform. The notifications that carry peer
//! bytes (responses, inbound requests, gossip messages) are encoded the same
//! way, their bytes hashed as they are; the others, small and rare, through
//! their `Debug` text, which the core derives from plain data (peer ids print
//! as base58 prefixes, addresses as text).
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
//! | Notify: kind, then by kind (below) | u8 |
//! | Response: peer, tag, protocol's `Debug` text, chunks, each chunk | 32 bytes, u64 LE, text, u64 LE, bytes |
//! | InboundRequest: peer, request id, protocol's `Debug` text, body | 32 bytes, u64 LE, text, bytes |
//! | GossipMessage: message id, topic, payload, from | 20 bytes, text, bytes, 32 bytes |
//! | any other notification: its `Debug` text | text |
//! | Crash, Restart: nothing more | |
//!
//! Bytes and text are a u64 LE length, then the bytes (text as UTF-8); bytes
//! of [`DIGESTED_BYTES_MIN`] or more, then their BLAKE3 digest (32 bytes)
//! instead. An address is a family byte (4 or 6), the IP octets, and the
//! port (u16 LE).
//!
//! Why the digest: a world of nodes forwarding 1 MiB blocks hands the trace
//! tens of gigabytes, and sha256 (2 GB/s here, with the CPU's SHA
//! extensions) was a quarter of such a run's CPU, as much as its Noise.
//! BLAKE3 hashes a long string four to five times faster, but a short one
//! at a third of sha256's speed, so short strings, most of a gossip run's,
//! stay in the sha256 stream. The trace still depends on every byte.

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
    /// The last `Debug` text hashed: one buffer, reused.
    text: Vec<u8>,
}

/// Byte strings this long or longer enter the trace as their BLAKE3 digest
/// (see the module docs): where BLAKE3's parallel chunks make it faster
/// than sha256 here (at 16 KiB the two are level, at 64 KiB BLAKE3 is
/// 2.5× faster, at 1 MiB 4.6×).
pub const DIGESTED_BYTES_MIN: usize = 64 * 1024;

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

/// Kinds of notification, after [`TAG_NOTIFY`].
const NOTIFY_RESPONSE: u8 = 1;
const NOTIFY_INBOUND_REQUEST: u8 = 2;
const NOTIFY_GOSSIP_MESSAGE: u8 = 3;
const NOTIFY_OTHER: u8 = 4;

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
                self.notification(notification);
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

    /// A notification: payloads as they are, since a gossip run hands its
    /// application every message (hashing them as `Debug` text, five bytes
    /// of text per byte, was a tenth of such a run).
    fn notification(&mut self, notification: &Notification) {
        match notification {
            Notification::Response {
                peer,
                tag,
                protocol,
                chunks,
            } => {
                self.tag(NOTIFY_RESPONSE);
                self.hasher.update(peer.as_bytes());
                self.u64(*tag);
                self.debug_text(protocol);
                self.u64(chunks.len() as u64);
                for chunk in chunks {
                    self.bytes(chunk);
                }
            }
            Notification::InboundRequest {
                peer,
                id,
                protocol,
                body,
            } => {
                self.tag(NOTIFY_INBOUND_REQUEST);
                self.hasher.update(peer.as_bytes());
                self.u64(id.0);
                self.debug_text(protocol);
                self.bytes(body);
            }
            Notification::GossipMessage {
                id,
                topic,
                payload,
                from,
            } => {
                self.tag(NOTIFY_GOSSIP_MESSAGE);
                self.hasher.update(id.0);
                self.bytes(topic.as_str().as_bytes());
                self.bytes(payload);
                self.hasher.update(from.as_bytes());
            }
            other => {
                self.tag(NOTIFY_OTHER);
                self.debug_text(other);
            }
        }
    }

    /// `value`'s `Debug` text, as bytes.
    fn debug_text(&mut self, value: &impl std::fmt::Debug) {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        write!(text, "{value:?}").expect("writing to a Vec<u8> never fails");
        self.bytes(&text);
        self.text = text;
    }

    fn tag(&mut self, tag: u8) {
        self.hasher.update([tag]);
    }

    fn u64(&mut self, value: u64) {
        self.hasher.update(value.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        if bytes.len() >= DIGESTED_BYTES_MIN {
            self.hasher.update(blake3::hash(bytes).as_bytes());
        } else {
            self.hasher.update(bytes);
        }
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

    /// sha256 over one notification of node 2 at 5 µs, encoded by hand as
    /// the module docs say: `parts` after the notify tag.
    fn expected_notify(parts: &[&[u8]]) -> [u8; 32] {
        let mut expected = Sha256::new();
        expected.update(2u64.to_le_bytes());
        expected.update(5u64.to_le_bytes());
        expected.update([TAG_NOTIFY]);
        for part in parts {
            expected.update(part);
        }
        expected.finalize().into()
    }

    fn notify_hash(notification: Notification) -> [u8; 32] {
        let mut trace = Trace::new();
        trace.record(
            NodeIndex(2),
            Instant::from_micros(5),
            &Action::Notify(notification),
        );
        trace.hash()
    }

    fn len(bytes: &[u8]) -> [u8; 8] {
        (bytes.len() as u64).to_le_bytes()
    }

    #[test]
    fn notifications_are_hashed_as_the_docs_lay_them_out() {
        use meshsync_core::reqresp::{ProtocolId, ProtocolName, RequestId};
        use meshsync_core::{Identity, MessageId, Topic};

        let peer = Identity::from_seed(7).peer_id();
        let other = Identity::from_seed(8).peer_id();
        let name = ProtocolName::new("app/echo").expect("a valid name");
        let topic = Topic::new("blocks").expect("a valid topic");

        let protocol = format!("{:?}", ProtocolId::BlocksByRange);
        assert_eq!(
            notify_hash(Notification::Response {
                peer,
                tag: 12,
                protocol: ProtocolId::BlocksByRange,
                chunks: vec![vec![1, 2, 3], Vec::new()],
            }),
            expected_notify(&[
                &[NOTIFY_RESPONSE],
                peer.as_bytes(),
                &12u64.to_le_bytes(),
                &len(protocol.as_bytes()),
                protocol.as_bytes(),
                &2u64.to_le_bytes(),
                &len(&[1, 2, 3]),
                &[1, 2, 3],
                &len(&[]),
            ])
        );

        let protocol = format!("{name:?}");
        assert_eq!(
            notify_hash(Notification::InboundRequest {
                peer,
                id: RequestId(3),
                protocol: name,
                body: vec![9; 300],
            }),
            expected_notify(&[
                &[NOTIFY_INBOUND_REQUEST],
                peer.as_bytes(),
                &3u64.to_le_bytes(),
                &len(protocol.as_bytes()),
                protocol.as_bytes(),
                &len(&[9; 300]),
                &[9; 300],
            ])
        );

        assert_eq!(
            notify_hash(Notification::GossipMessage {
                id: MessageId([0xab; 20]),
                topic: topic.clone(),
                payload: vec![0, 255],
                from: other,
            }),
            expected_notify(&[
                &[NOTIFY_GOSSIP_MESSAGE],
                &[0xab; 20],
                &len(b"blocks"),
                b"blocks",
                &len(&[0, 255]),
                &[0, 255],
                other.as_bytes(),
            ])
        );

        let unbanned = Notification::PeerUnbanned { peer };
        let text = format!("{unbanned:?}");
        assert_eq!(
            notify_hash(unbanned),
            expected_notify(&[&[NOTIFY_OTHER], &len(text.as_bytes()), text.as_bytes()])
        );
    }

    #[test]
    fn long_bytes_are_hashed_as_their_digest_and_every_byte_still_counts() {
        let long = vec![5u8; DIGESTED_BYTES_MIN];
        let mut expected = Sha256::new();
        expected.update(0u64.to_le_bytes());
        expected.update(10u64.to_le_bytes());
        expected.update([TAG_SEND]);
        expected.update(1u64.to_le_bytes());
        expected.update((long.len() as u64).to_le_bytes());
        expected.update(blake3::hash(&long).as_bytes());
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(hash_of(&[(0, 10, send(&long))]), hex::encode(expected));

        let short = &long[..DIGESTED_BYTES_MIN - 1];
        let mut expected = Sha256::new();
        expected.update(0u64.to_le_bytes());
        expected.update(10u64.to_le_bytes());
        expected.update([TAG_SEND]);
        expected.update(1u64.to_le_bytes());
        expected.update(len(short));
        expected.update(short);
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(hash_of(&[(0, 10, send(short))]), hex::encode(expected));

        let mut flipped = long.clone();
        flipped[DIGESTED_BYTES_MIN / 2] ^= 1;
        assert_ne!(
            hash_of(&[(0, 10, send(&long))]),
            hash_of(&[(0, 10, send(&flipped))])
        );
    }

    #[test]
    fn every_field_of_a_notification_counts() {
        use meshsync_core::{Identity, MessageId, Topic};

        let message = |id: u8, topic: &str, payload: &[u8], from: u64| {
            notify_hash(Notification::GossipMessage {
                id: MessageId([id; 20]),
                topic: Topic::new(topic).expect("a valid topic"),
                payload: payload.to_vec(),
                from: Identity::from_seed(from).peer_id(),
            })
        };
        let base = message(1, "blocks", b"abc", 7);
        assert_eq!(base, message(1, "blocks", b"abc", 7));
        assert_ne!(base, message(2, "blocks", b"abc", 7));
        assert_ne!(base, message(1, "blockz", b"abc", 7));
        assert_ne!(base, message(1, "blocks", b"abd", 7));
        assert_ne!(base, message(1, "blocks", b"abc", 8));
        // Lengths come first, so moving a byte across a boundary counts.
        assert_ne!(message(1, "a", b"bc", 7), message(1, "ab", b"c", 7));
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
