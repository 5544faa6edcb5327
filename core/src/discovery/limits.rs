//! The bounds and defaults of discovery, each a named constant with its unit
//! last and where its value comes from.
//!
//! Kept apart from `reqresp/limits.rs` while discovery is not yet spoken by
//! the node: the two protocols' tags and quotas join the req/resp tables
//! when the node wires them in.

use crate::reqresp::rate::Quota;
use crate::time::Duration;

// --- Records ------------------------------------------------------------------

/// Addresses one record may name: enough for an IPv4 and an IPv6 address on
/// two ports each, few enough that a record stays small.
pub const ADDRESSES_PER_RECORD_MAX: usize = 4;
/// Bytes of one encoded address: family (1), IPv6 address (16), port (2).
pub const ADDRESS_BYTES_MAX: usize = 1 + 16 + 2;
/// Bytes of a record before its addresses: version (1), peer id (32),
/// network id (8), sequence number (8), address count (1).
pub const RECORD_HEADER_BYTES: usize = 1 + 32 + 8 + 8 + 1;
/// Bytes of the Ed25519 signature that ends a record.
pub const RECORD_SIGNATURE_BYTES: usize = 64;
/// Longest encoded record (190 bytes); checked before anything is read.
/// discv5 bounds its records (ENRs) at 300 bytes.
pub const RECORD_BYTES_MAX: usize =
    RECORD_HEADER_BYTES + ADDRESSES_PER_RECORD_MAX * ADDRESS_BYTES_MAX + RECORD_SIGNATURE_BYTES;

// --- Observed addresses -------------------------------------------------------

/// Distinct observer groups that must report an IP before it is ours: one
/// liar, or two in one /16, cannot make us advertise a wrong address
/// (go-libp2p's observed-address manager also waits for several observers).
pub const OBSERVED_CONFIRMATIONS_MIN: usize = 3;
/// Observed IPs the book remembers. A host has a handful of addresses; the
/// rest is noise or lies. When full, a new IP evicts the one with the
/// fewest observers, the earliest heard first among equals.
pub const OBSERVED_IPS_MAX: usize = 16;
/// Observer groups kept per IP: past the confirmation more add nothing but
/// slack for observers that move their vote away.
pub const OBSERVERS_PER_IP_MAX: usize = 8;

const _: () = assert!(OBSERVED_CONFIRMATIONS_MIN >= 2);
const _: () = assert!(OBSERVED_CONFIRMATIONS_MIN <= OBSERVERS_PER_IP_MAX);

// --- Routing table ------------------------------------------------------------

/// Buckets of the routing table: one per bit of the 256-bit key space
/// (Kademlia; discv5 and libp2p-kad have 256 too).
pub const BUCKETS: usize = 256;
/// Entries per bucket, and the number of records a FIND_NODE answer carries
/// and a lookup converges on (discv5: 16; libp2p-kad: 20).
pub const BUCKET_ENTRIES_MAX: usize = 16;
/// Entries one bucket may hold from one IPv4 /24 or IPv6 /56 (discv5: 2 per
/// /24 per bucket).
pub const SUBNET_ENTRIES_PER_BUCKET_MAX: usize = 2;
/// Entries the whole table may hold from one IPv4 /16 or IPv6 /56. discv5
/// counts 10 per /24; an IPv4 /16 holds 256 /24s, which a Sybil with a
/// rented /16 could otherwise fill at 10 each, so the table-wide count is
/// by /16 (the "network group" of Bitcoin's address manager, after Heilman
/// et al.), which also keeps every /24 at 10 or fewer.
pub const NETGROUP_ENTRIES_PER_TABLE_MAX: usize = 10;
/// Records learned from answers or bootnodes that wait to be dialled. The
/// oldest is evicted when a new one arrives.
pub const CANDIDATES_MAX: usize = 512;
/// Candidates from one IPv4 /16 or IPv6 /56: Sybils in one network group
/// cannot evict the whole candidate set with their own records.
pub const CANDIDATES_PER_NETGROUP_MAX: usize = 32;
/// How long a full bucket waits for the liveness check of its
/// least-recently-seen entry before it keeps that entry and drops the
/// newcomer: three Ping round trips behind the req/resp deadline.
pub const LIVENESS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bootnodes remembered to seed the candidates whenever the table is empty.
pub const BOOTNODES_MAX: usize = 16;

// --- Lookups --------------------------------------------------------------------

/// Queries one lookup keeps in flight (Kademlia's α; discv5 and libp2p-kad: 3).
pub const LOOKUP_PARALLELISM: usize = 3;
/// Rounds a lookup may go: a contact first heard of in the answer to a
/// round-r query is at round r + 1 (the lookup's seeds are at round 0), and
/// contacts past this round are not asked. A lookup over n nodes needs
/// about log2(n / 16) rounds; 8 covers 4 000 nodes with room for detours.
pub const LOOKUP_ROUNDS_MAX: u32 = 8;
/// Queries one lookup sends at most, answered or not.
pub const LOOKUP_QUERIES_MAX: usize = 64;
/// A query unanswered this long has failed: behind the req/resp layer's
/// 10 s response deadline, so that layer's verdict normally comes first.
pub const LOOKUP_QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// A lookup still running this long after it started ends with what it has
/// (libp2p-kad and discv5: 60 s).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lookups at once.
pub const LOOKUPS_MAX: usize = 4;
/// Contacts one lookup remembers: the seeds and every record its answers
/// carry, at most [`LOOKUP_QUERIES_MAX`] answers of [`BUCKET_ENTRIES_MAX`].
pub const LOOKUP_CONTACTS_MAX: usize = (LOOKUP_QUERIES_MAX + 1) * BUCKET_ENTRIES_MAX;

// --- The machine ----------------------------------------------------------------

/// Between random-target refresh lookups while we have fewer peers than
/// the node's target.
pub const REFRESH_INTERVAL_BELOW_TARGET: Duration = Duration::from_secs(30);
/// Between random-target refresh lookups once the node has its target
/// (libp2p-kad's bootstrap interval: 5 min).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A node left with no peer, no dial and no lookup in flight (a newcomer
/// whose bootnodes were full, or one trimmed before it learned anyone)
/// tries again after this rather than at its next refresh, plus a random
/// jitter of up to as much again, so newcomers refused together do not
/// return together. Each further try doubles it up to
/// [`STRANDED_RETRY_MAX`] until the node holds half its target again.
/// Measured in the simulator's `discovery` scenario at 1,000 nodes (16
/// newcomers a second at three bootnodes): see docs/protocol.md §5d.6.
pub const STRANDED_RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest wait of a stranded node before it tries again, before
/// jitter: at most twice this (16 s) between tries, still sooner than a
/// refresh, and a full bootnode hears a stranded node at most every 8 s
/// once it keeps refusing.
pub const STRANDED_RETRY_MAX: Duration = Duration::from_secs(8);
/// Dials we ask for at once.
pub const DIALS_IN_FLIGHT_MAX: usize = 8;
/// A dial we asked for that has neither completed a handshake nor failed
/// this long after is forgotten: dial and handshake timeouts are 10 s each.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed discovery dial, its address is not dialled again for this
/// long; each further failure doubles the wait up to [`DIAL_BACKOFF_MAX`].
/// A success forgets the failures. Below the 30 s refresh while below
/// target, so one lost dial to a bootnode costs nothing.
pub const DIAL_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest wait before redialling an address (go-libp2p's dial backoff
/// stops at 5 min too).
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Addresses whose failures are remembered; when full, the one whose wait
/// ends first is forgotten (addresses come from peers' answers, so this
/// must be bounded).
pub const DIAL_BACKOFF_ADDRESSES_MAX: usize = 1_024;

// --- Wire -----------------------------------------------------------------------

/// Request tag of FIND_NODE, next to the built-in req/resp tags 1..=6.
pub const FIND_NODE_TAG: u8 = 7;
/// Request tag of the record exchange (ask a peer for its own record).
pub const PEER_RECORD_TAG: u8 = 8;
/// FIND_NODE requests per peer: 8 per 10 s. One lookup asks a peer once,
/// and at most [`LOOKUPS_MAX`] run at once (discv5: 8 per second per node,
/// over UDP, where each lookup step is a request).
pub const FIND_NODE_QUOTA: Quota = Quota::new(8, Duration::from_secs(10));
/// Record requests per peer: 2 per 10 s. A node asks once per connection
/// and again when a Ping shows its metadata changed.
pub const PEER_RECORD_QUOTA: Quota = Quota::new(2, Duration::from_secs(10));

const _: () = assert!(RECORD_BYTES_MAX == 190);
const _: () = assert!(RECORD_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(ADDRESSES_PER_RECORD_MAX <= u8::MAX as usize);
const _: () = assert!(BUCKET_ENTRIES_MAX <= u8::MAX as usize);
const _: () = assert!(SUBNET_ENTRIES_PER_BUCKET_MAX <= BUCKET_ENTRIES_MAX);
const _: () = assert!(SUBNET_ENTRIES_PER_BUCKET_MAX <= NETGROUP_ENTRIES_PER_TABLE_MAX);
const _: () = assert!(CANDIDATES_PER_NETGROUP_MAX <= CANDIDATES_MAX);
const _: () = assert!(LOOKUP_PARALLELISM <= LOOKUP_QUERIES_MAX);
const _: () = assert!(BOOTNODES_MAX <= CANDIDATES_MAX);
const _: () = assert!(
    LOOKUP_QUERY_TIMEOUT.as_micros() > crate::reqresp::limits::RESPONSE_TIMEOUT.as_micros()
);
const _: () = assert!(LOOKUP_QUERY_TIMEOUT.as_micros() < LOOKUP_TIMEOUT.as_micros());
const _: () = assert!(REFRESH_INTERVAL_BELOW_TARGET.as_micros() < REFRESH_INTERVAL.as_micros());
const _: () = assert!(DIAL_BACKOFF_BASE.as_micros() < REFRESH_INTERVAL_BELOW_TARGET.as_micros());
const _: () = assert!(DIAL_BACKOFF_BASE.as_micros() <= DIAL_BACKOFF_MAX.as_micros());
const _: () = assert!(STRANDED_RETRY_BASE.as_micros() > 0);
const _: () = assert!(STRANDED_RETRY_BASE.as_micros() <= STRANDED_RETRY_MAX.as_micros());
// With its jitter, a stranded node's longest wait is still below a refresh.
const _: () =
    assert!(2 * STRANDED_RETRY_MAX.as_micros() < REFRESH_INTERVAL_BELOW_TARGET.as_micros());
const _: () = assert!(CANDIDATES_MAX <= DIAL_BACKOFF_ADDRESSES_MAX);
