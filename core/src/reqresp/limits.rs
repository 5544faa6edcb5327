//! The bounds of the req/resp layer, each a named constant with its unit last
//! and the reason for its value.
//!
//! The chain's own bounds (a block's bytes) live in `crate::chain` and are
//! re-exported here where the req/resp layer uses them.

use crate::reqresp::rate::Quota;
use crate::time::Duration;

// --- Wire -------------------------------------------------------------------

/// Longest application protocol name. Names are printable ASCII chosen by
/// applications ("/myapp/echo/1"); 64 bytes leaves room for a versioned path
/// while keeping every request header small and every rate-limit key cheap.
pub const PROTOCOL_NAME_BYTES_MAX: usize = 64;
/// Blocks one BlocksByRange request may ask for (design.md §3: 64). Also the
/// most chunks its response may carry.
pub const BLOCKS_PER_RANGE_REQUEST_MAX: u64 = 64;
/// Roots one BlocksByRoot request may name (design.md §3: 128). Also the most
/// chunks its response may carry.
pub const ROOTS_PER_REQUEST_MAX: usize = 128;
/// Largest block payload in a response chunk, uncompressed: a whole signed
/// block, whose bound belongs to the chain.
pub use crate::chain::BLOCK_BYTES_MAX;
/// Block bytes one BlocksByRange or BlocksByRoot answer carries at most.
/// Sixty-four 1 MiB blocks would be 64 MiB, four times what a driver queues
/// for a connection; the answer is cut to a prefix instead (the protocol
/// allows fewer blocks than asked, and range sync asks again from the last
/// slot it got).
pub const ANSWER_BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Topics one Metadata may list. A node subscribes to a handful; 64 bounds
/// what a peer can make us store per peer.
pub const METADATA_TOPICS_MAX: usize = 64;
/// Longest error message in an error chunk (the Ethereum p2p spec's `ErrorMessage`).
pub const ERROR_MESSAGE_BYTES_MAX: usize = 256;
/// Largest application request body, uncompressed. Requests are questions,
/// not payloads; 64 KiB is generous and keeps queued requests cheap.
pub const APPLICATION_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a FIND_NODE request body (tag 7): the 32-byte target key.
/// Discovery owns the layout (`crate::discovery::wire`), which checks that
/// its own bound equals this one.
pub const FIND_NODE_REQUEST_BYTES: usize = 32;
/// Longest FIND_NODE answer: a count and 16 records of at most 190 bytes,
/// each with a u16 length (3,073 bytes).
pub const FIND_NODE_ANSWER_BYTES_MAX: usize = 1 + 16 * (2 + 190);
/// Longest PEER_RECORD answer (tag 8): one record of at most 190 bytes and
/// the requester's observed address of at most 19 (209 bytes).
pub const PEER_RECORD_ANSWER_BYTES_MAX: usize = 190 + 19;
/// Largest application response chunk payload, uncompressed: the size of a
/// block, so an application answer costs no more than serving one block.
pub const APPLICATION_RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Largest uncompressed response chunk payload of any protocol: the bound the
/// wire decoder applies before the tracker applies the protocol's own.
pub const RESPONSE_PAYLOAD_BYTES_MAX: usize = max(BLOCK_BYTES_MAX, APPLICATION_RESPONSE_BYTES_MAX);

// --- Outbound requests --------------------------------------------------------

/// Our requests awaiting a response from one peer (design.md §3: 4). More are queued.
pub const REQUESTS_IN_FLIGHT_PER_PEER_MAX: usize = 4;
/// Our requests queued for one peer behind those in flight (design.md §3's
/// "pending requests: 64", counted per peer so one slow peer cannot starve
/// requests to the others). Past it, `send` fails.
pub const PENDING_REQUESTS_PER_PEER_MAX: usize = 64;
/// A request whose first response message (a chunk, or the end of an empty
/// response) has not arrived this long after it was sent has failed (design.md §3: 5 s).
pub const RESPONSE_FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(5);
/// A request whose response has not ended this long after it was sent has
/// failed, however many chunks arrived (design.md §3: 10 s).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we hold back requests of a protocol to a peer that answered
/// `ResourceUnavailable` without naming a time: long enough not to retry
/// into the same refusal, short next to a request's lifetime.
pub const REFUSED_BACKOFF_DEFAULT: Duration = Duration::from_secs(1);
/// The longest a peer's "retry after" can hold back our requests to it: one
/// global quota period, after which any budget has refilled.
pub const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Times one application request is sent again after the peer answered it
/// "busy" (its shared budget, not our quota) before the refusal reaches the
/// application: a share that Sybils made small can be in debt for a moment
/// from our own sync's burst, and a refusal the server calls transient and
/// names a time for should not cost the application its request. Each try
/// waits out the named time (at most [`REFUSED_BACKOFF_MAX`]), so one
/// request lives at most this many times that plus [`RESPONSE_TIMEOUT`] longer.
pub const BUSY_RETRIES_PER_REQUEST_MAX: u32 = 3;

// --- Inbound requests ---------------------------------------------------------

/// Requests one peer may have open with us. A conforming peer has at most
/// [`REQUESTS_IN_FLIGHT_PER_PEER_MAX`] in flight and we close a request before
/// the peer can see it closed, so a further one is refused with
/// `ResourceUnavailable`.
pub const INBOUND_REQUESTS_PER_PEER_MAX: usize = REQUESTS_IN_FLIGHT_PER_PEER_MAX;
/// An inbound request the handler has not answered this long after it
/// arrived is dropped: the requester has given up on it by then.
pub const INBOUND_ANSWER_TIMEOUT: Duration = RESPONSE_TIMEOUT;
/// Application protocols one node may register. Each adds a rate-limit bucket
/// per peer, so the count bounds the limiter's per-peer state.
pub const APPLICATION_PROTOCOLS_MAX: usize = 32;

// --- Rate limits (Lighthouse `rpc/config.rs` defaults) --------------------------

/// Status requests per peer: 5 per 15 s (one per connection and one per 5 min is the norm).
pub const STATUS_QUOTA: Quota = Quota::new(5, Duration::from_secs(15));
/// Ping requests per peer: 2 per 10 s (one per `PING_INTERVAL` is the norm).
pub const PING_QUOTA: Quota = Quota::new(2, Duration::from_secs(10));
/// Metadata requests per peer: 2 per 5 s (only after a Ping shows a new sequence number).
pub const METADATA_QUOTA: Quota = Quota::new(2, Duration::from_secs(5));
/// Goodbye requests per peer: 1 per 10 s (one per connection). Kept for parity
/// with Lighthouse; since a Goodbye ends the connection, neither side consults
/// it today (a Goodbye needs no slot and is never held back).
pub const GOODBYE_QUOTA: Quota = Quota::new(1, Duration::from_secs(10));
/// Blocks requested by range per peer: 1024 per 10 s (16 full requests).
pub const BLOCKS_BY_RANGE_QUOTA: Quota = Quota::new(1024, Duration::from_secs(10));
/// How many times a chain's own growth one peer may fetch by range in a
/// quota period. [`BLOCKS_BY_RANGE_QUOTA`] is sized for multi-second slots;
/// on a chain of 10 ms slots it serves 102.4 slots a second against 100 of
/// growth, so a follower that fell behind with one or two peers would take
/// many minutes to catch up. See [`blocks_by_range_quota`].
pub const BLOCKS_BY_RANGE_GROWTH_MULTIPLE: u64 = 8;
/// Slots one peer may request by range per quota period on the fastest
/// chain (1 ms slots would otherwise allow 80,000): a bound on what one peer
/// can make us read, whatever the genesis says.
pub const BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX: u64 = 32_768;
/// Roots requested by root per peer: 128 per 10 s (one full request).
pub const BLOCKS_BY_ROOT_QUOTA: Quota = Quota::new(128, Duration::from_secs(10));
/// The quota to register an application protocol with when the application
/// names none (`register_application(name, APPLICATION_QUOTA)`): 32 requests
/// per peer per 10 s, modest because an application answer may cost as much
/// as a block.
pub const APPLICATION_QUOTA: Quota = Quota::new(32, Duration::from_secs(10));
/// What we serve to all peers together of the costly protocols (blocks by
/// range and by root, application requests), in cost units (blocks or
/// requests): 4096 per 10 s, four peers' full range-sync quota, so a crowd of
/// syncing peers cannot take the whole uplink. Control protocols (Status,
/// Ping, Metadata, Goodbye) are exempt: they are cheap and keep connections alive.
pub const GLOBAL_SERVING_QUOTA: Quota = Quota::new(4096, Duration::from_secs(10));
/// Peers' full range-sync quotas that [`GLOBAL_SERVING_QUOTA`] holds, kept
/// when a fast chain scales the range quota up (see [`global_serving_quota`]).
const GLOBAL_SERVING_RANGE_QUOTAS: u64 =
    GLOBAL_SERVING_QUOTA.tokens_max / BLOCKS_BY_RANGE_QUOTA.tokens_max;

/// The per-peer BlocksByRange quota on a chain of `slot_duration_ms` slots:
/// [`BLOCKS_BY_RANGE_QUOTA`], or [`BLOCKS_BY_RANGE_GROWTH_MULTIPLE`] times
/// the slots the chain makes in the quota period if that is more (at most
/// [`BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX`]). Requester and server derive it from
/// the same genesis, so a requester never runs into a quota it did not expect.
pub fn blocks_by_range_quota(slot_duration_ms: u64) -> Quota {
    let period = BLOCKS_BY_RANGE_QUOTA.period;
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    let growth_slots = period_ms / slot_duration_ms.max(1);
    let tokens = growth_slots
        .saturating_mul(BLOCKS_BY_RANGE_GROWTH_MULTIPLE)
        .clamp(
            BLOCKS_BY_RANGE_QUOTA.tokens_max,
            BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX,
        );
    Quota::new(tokens, period)
}

/// The shared serving budget on a chain of `slot_duration_ms` slots: as many
/// full range quotas as [`GLOBAL_SERVING_QUOTA`] holds at the default.
pub fn global_serving_quota(slot_duration_ms: u64) -> Quota {
    let range = blocks_by_range_quota(slot_duration_ms);
    let tokens =
        (range.tokens_max * GLOBAL_SERVING_RANGE_QUOTAS).max(GLOBAL_SERVING_QUOTA.tokens_max);
    Quota::new(tokens, GLOBAL_SERVING_QUOTA.period)
}
/// Peers the rate limiter keeps buckets for. Above the peer cap so connected
/// peers are never evicted; eviction (least recently checked first) only
/// bounds the state if a caller forgets `remove_peer`.
pub const RATE_LIMITED_PEERS_MAX: usize = 2 * crate::limits::PEERS_MAX;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

const _: () = assert!(PROTOCOL_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(METADATA_TOPICS_MAX <= u16::MAX as usize);
const _: () = assert!(crate::types::TOPIC_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(ROOTS_PER_REQUEST_MAX <= u16::MAX as usize);
const _: () = assert!(RESPONSE_FIRST_CHUNK_TIMEOUT.as_micros() < RESPONSE_TIMEOUT.as_micros());
const _: () = assert!(INBOUND_REQUESTS_PER_PEER_MAX >= REQUESTS_IN_FLIGHT_PER_PEER_MAX);
const _: () = assert!(REFUSED_BACKOFF_DEFAULT.as_micros() <= REFUSED_BACKOFF_MAX.as_micros());
const _: () = assert!(RATE_LIMITED_PEERS_MAX >= crate::limits::PEERS_MAX);
// Every request we may send fits the quota we apply to ourselves and to others.
const _: () = assert!(BLOCKS_PER_RANGE_REQUEST_MAX <= BLOCKS_BY_RANGE_QUOTA.tokens_max);
const _: () = assert!(ROOTS_PER_REQUEST_MAX as u64 <= BLOCKS_BY_ROOT_QUOTA.tokens_max);
const _: () = assert!(BLOCKS_PER_RANGE_REQUEST_MAX <= GLOBAL_SERVING_QUOTA.tokens_max);
const _: () = assert!(ROOTS_PER_REQUEST_MAX as u64 <= GLOBAL_SERVING_QUOTA.tokens_max);
const _: () = assert!(BLOCKS_BY_RANGE_QUOTA.tokens_max <= BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX);
const _: () =
    assert!(GLOBAL_SERVING_QUOTA.period.as_micros() == BLOCKS_BY_RANGE_QUOTA.period.as_micros());
// A whole signed block fits a response chunk.
const _: () = assert!(crate::chain::SIGNED_BLOCK_BYTES_MAX <= RESPONSE_PAYLOAD_BYTES_MAX);
// A whole response chunk, compressed and with its header, fits one logical message.
const _: () = assert!(
    crate::reqresp::wire::RESPONSE_CHUNK_HEADER_BYTES
        + crate::codec::snappy::LENGTH_PREFIX_BYTES
        + crate::codec::snappy::max_compressed_len(RESPONSE_PAYLOAD_BYTES_MAX)
        <= crate::limits::MESSAGE_BYTES_MAX
);
const _: () = assert!(RESPONSE_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
