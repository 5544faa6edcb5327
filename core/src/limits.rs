//! The node-wide bounds (connections, handshakes, Noise and message sizes,
//! timeouts, send windows), each a named constant with its unit last.
//!
//! # Design
//! Peer input is hostile: every length, count and rate a peer can influence
//! is bounded by a named constant, and relations between bounds are checked
//! at compile time. This file holds only the bounds shared by the whole
//! node; each protocol keeps its own beside its code, for example
//! `reqresp::limits`, the gossip router's constants in `gossip`, a block's
//! bytes in `chain::block`, sync's in `sync`, the peer manager's in `peer`
//! and the node glue's in `node`.
//! Defaults follow `shared/design.md` §3 and the systems in `shared/reference.md`.

use crate::time::Duration;

/// Largest Noise message on the wire, ciphertext and tag included (Noise spec limit).
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// ChaCha20-Poly1305 tag appended to every transport message.
pub const NOISE_TAG_BYTES: usize = 16;
/// Largest plaintext carried by one transport message.
pub const NOISE_PLAINTEXT_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - NOISE_TAG_BYTES;
/// Largest logical message (a frame's declared length). 10 MiB as the Ethereum p2p spec's `MAX_PAYLOAD_SIZE`.
pub const MESSAGE_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Largest handshake payload we accept (identity + signature + hello is 116 bytes).
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 1_024;
/// Largest handshake message: the payload plus Noise's ephemeral key, encrypted
/// static key and two tags (96 bytes). A longer declared length is refused as
/// soon as its prefix arrives, so a handshake never buffers more than this.
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = HANDSHAKE_PAYLOAD_BYTES_MAX + 96;

/// Established peers we keep; a further one gets Goodbye(too many peers).
pub const PEERS_MAX: usize = 50;
/// Inbound connections still in their handshake (commonware uses 512).
/// When all are taken, a newcomer evicts the one open the longest: an
/// honest handshake takes one round trip, so a flood must open this many
/// connections within that round trip to cut it short, where a refusal of
/// newcomers would lock honest peers out for as long as the flood lasts.
pub const HANDSHAKES_IN_PROGRESS_MAX: usize = 512;
/// Inbound handshakes in progress from one IP key (an IPv4 address, an
/// IPv6 /64) at most; a further one is refused at once. A host behind NAT
/// dials once per node; one address cannot take a large share of the
/// slots, so a flood needs [`HANDSHAKES_IN_PROGRESS_MAX`] / 4 = 128
/// addresses before it evicts anyone.
pub const HANDSHAKES_PER_IP_MAX: usize = 4;
/// From this many inbound handshakes in progress on, a new one has
/// [`HANDSHAKE_TIMEOUT_UNDER_PRESSURE`] to finish: the slots are then worth
/// more than a slow peer's patience.
pub const HANDSHAKES_UNDER_PRESSURE_MIN: usize = HANDSHAKES_IN_PROGRESS_MAX / 2;
/// The handshake deadline of a connection accepted under pressure. Twenty
/// round trips of 100 ms; a flood must then open
/// [`HANDSHAKES_IN_PROGRESS_MAX`] connections every 2 s to keep the slots
/// full.
pub const HANDSHAKE_TIMEOUT_UNDER_PRESSURE: Duration = Duration::from_secs(2);
/// Dials we have asked the driver for that have not yet connected or failed.
pub const DIALS_IN_PROGRESS_MAX: usize = 64;
/// Our own dials still in their handshake. Counted apart from inbound ones,
/// so a flood of inbound handshakes cannot refuse the dials we chose (static
/// peers among them); as many as the dials we may have in progress.
pub const OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX: usize = DIALS_IN_PROGRESS_MAX;

/// A connection that has not finished the Noise handshake by then is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A dial the driver has not answered by then is cancelled.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often we ping an established peer.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// We fetch a peer's Metadata at most once per this long, however often its
/// Pings name a new sequence number: the peer decides when to ask, so the
/// fetches (and their rewards) must not be its to multiply.
pub const METADATA_FETCH_INTERVAL: Duration = PING_INTERVAL;
/// A peer we have had no complete logical message from for this long is
/// dropped. Bytes of a message still arriving do not count: a peer trickling
/// a message it never finishes must not hold the connection forever.
pub const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(90);

/// Outbound bytes a driver may queue for one connection before dropping it as too slow.
pub const PENDING_SEND_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Unwritten bytes (handed to the driver, not yet reported written, plus
/// plaintext waiting to be sealed) above which a connection gets no more
/// gossip, only control, until the driver catches up. Large enough for a
/// 1 MiB block with room to spare; small next to `PENDING_SEND_BYTES_MAX`,
/// so a slow reader costs the router's bounded queue, not the driver's.
pub const GOSSIP_SEND_WINDOW_BYTES: usize = 2 * 1024 * 1024;

/// The same over all connections together: while the node has this much
/// unwritten, no connection gets gossip (control still goes). A large message
/// then leaves for a couple of peers at a time and its other copies wait in
/// the router, where the IDONTWANTs of peers that got it elsewhere cancel
/// them (gossipsub v1.2's point). Counts everything written, requests and
/// answers included.
pub const GOSSIP_NODE_WINDOW_BYTES: usize = 2 * 1024 * 1024;

/// One connection's contribution to [`GOSSIP_NODE_WINDOW_BYTES`] at most:
/// half, so no single connection, however backed up, closes the window for
/// everyone (a large message still leaves for about two peers at a time).
pub const GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX: usize = GOSSIP_NODE_WINDOW_BYTES / 2;

/// A connection that has held its full share of the node window this long,
/// or taken none of its waiting bytes this long, is limited by its own link
/// or reader, not by our uplink: it stops counting toward the node window,
/// so a slow or stalled peer holds back only itself (its gossip waits in
/// the router, within its own window).
pub const GOSSIP_SLOW_CONNECTION_AFTER: Duration = Duration::from_secs(1);

/// A connection with more than its [`GOSSIP_SEND_WINDOW_BYTES`] waiting that
/// has taken none of them for this long is cut with Goodbye(fault) and a Mid
/// penalty: its peer stopped reading. Far above what an honest peer behind a
/// busy uplink waits between writes, far below the silence timeout that was
/// its only way out before. (A few unwritten bytes alone are no sign: a
/// real socket buffer takes them whether the peer reads or not.)
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes the frame decoder of one connection buffers: one Noise message and its length prefix.
pub const RECEIVE_BUFFER_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX + 2;

/// The buffer a node keeps from one read to the next for the messages it
/// completed holds at most this much capacity; a larger one is freed.
/// Room for the largest block or application answer (1 MiB) and its
/// framing: a stream of them is read without a buffer allocated, grown
/// and copied per message, while a node that once read a 10 MiB message
/// does not keep 10 MiB idle. One per node.
pub const MESSAGE_BUFFER_KEPT_BYTES_MAX: usize = 2 * 1024 * 1024;
/// A connection's reassembly buffer keeps at most this much capacity once
/// its message is complete: a small message's buffer serves the next, a
/// large message's goes (into the read, then the node's kept buffer). A
/// node with [`PEERS_MAX`] peers that all sent large messages holds
/// 3.2 MiB of idle reassembly buffers, not a large buffer per connection.
pub const REASSEMBLY_BUFFER_KEPT_BYTES_MAX: usize = 64 * 1024;
/// A connection's plaintext send buffer keeps at most this much capacity
/// once sealed: small messages reuse it, while a node that sent a 1 MiB
/// block to each of [`PEERS_MAX`] peers does not keep a megabyte idle per
/// connection (which a network of nodes forwarding blocks would otherwise
/// hold for good, one per peer).
pub const OUTBOUND_PLAINTEXT_KEPT_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(NOISE_PLAINTEXT_BYTES_MAX < MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BUFFER_KEPT_BYTES_MAX < MESSAGE_BYTES_MAX);
const _: () = assert!(REASSEMBLY_BUFFER_KEPT_BYTES_MAX < MESSAGE_BUFFER_KEPT_BYTES_MAX);
const _: () = assert!(OUTBOUND_PLAINTEXT_KEPT_BYTES_MAX < MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX < PENDING_SEND_BYTES_MAX);
const _: () = assert!(GOSSIP_SEND_WINDOW_BYTES < PENDING_SEND_BYTES_MAX / 4);
const _: () = assert!(GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX < GOSSIP_NODE_WINDOW_BYTES);
const _: () = assert!(WRITE_STALL_TIMEOUT.as_secs() < PEER_SILENCE_TIMEOUT.as_secs());
const _: () = assert!(HANDSHAKE_PAYLOAD_BYTES_MAX < NOISE_PLAINTEXT_BYTES_MAX);
const _: () = assert!(HANDSHAKES_PER_IP_MAX < HANDSHAKES_UNDER_PRESSURE_MIN);
const _: () = assert!(HANDSHAKES_UNDER_PRESSURE_MIN < HANDSHAKES_IN_PROGRESS_MAX);
const _: () = assert!(HANDSHAKE_TIMEOUT_UNDER_PRESSURE.as_secs() < HANDSHAKE_TIMEOUT.as_secs());
const _: () = assert!(PING_INTERVAL.as_secs() * 2 < PEER_SILENCE_TIMEOUT.as_secs());
