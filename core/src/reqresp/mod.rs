//! Request/response protocols: the wire messages and typed bodies, snappy
//! payloads, our outbound requests, the requests peers make of us, and the
//! rate limits on both.
//!
//! # Design
//! Everything here is a pure, synchronous building block that takes `now` as
//! a value; nothing reads a clock or does IO, and every map is a `BTreeMap`.
//! The node wires it in (not yet): a logical message whose kind byte is
//! [`REQUEST_KIND`], [`RESPONSE_CHUNK_KIND`] or [`RESPONSE_END_KIND`] goes to
//! [`InboundRequests`] (requests) or [`OutboundRequests`] (chunks and ends).
//!
//! ```text
//!  requester                                         responder
//!  OutboundRequests::send ─► queue (per peer)
//!  poll_transmit ─► Request{id, protocol, body} ───► InboundRequests::handle_request_bytes
//!                                                     ├─ Refused ─► error chunk ──┐
//!                                                     └─ Serve ─► handler          │
//!  handle_chunk  ◄──── ResponseChunk{id, 0, payload} ◄─── respond_chunk (0..chunks_max)│
//!  handle_chunk  ◄──── ResponseChunk{id, code≠0, msg} ◄── respond_error  ◄─────────────┘
//!  handle_end    ◄──── ResponseEnd{id} ◄──────────────── respond_end
//!  handle_timeout: first chunk 5 s, whole response 10 s   handle_timeout: answer within 10 s
//! ```
//!
//! A response is zero or more success chunks followed by exactly one
//! terminator: a [`ResponseEnd`] after success, or a single error chunk
//! (result code ≠ 0), which ends the response by itself. A separate end
//! message (rather than a flag on the last chunk) lets an empty response
//! (a range with no blocks) be told apart from a one-chunk one, and lets the
//! responder stream chunks without knowing in advance which is last.
//! Goodbye is one-way and never answered.
//!
//! Request bodies and success payloads are snappy frames ([`snappy`]): the
//! uncompressed length first, checked before anything is allocated. Request
//! bodies are decompressed as the request is decoded (the protocol, and so
//! the limit, is in the request); response payloads only once the tracker
//! has matched the chunk to a request, whose protocol gives the tighter limit.
//!
//! # Security
//! Provided: every decoder returns a [`ReqRespDecodeError`] and never panics;
//! counts and lengths are checked against their limits before allocating and
//! all arithmetic on wire values is checked or saturating; compressed data is
//! bounded by `max_compressed_len` and its declared length before it is
//! decompressed; response chunks are only accepted for ids open with the
//! sender, up to the number the request allows; inbound requests are bounded
//! per peer, rate limited per peer and protocol and globally, and expire.
//! Not provided: the meaning of payloads (a block's validity, a Status's
//! truth), peer scoring and bans (the peer manager acts on the outcomes and
//! counters here), and confidentiality or authenticity (the Noise channel's job).
//!
//! # Limits
//! All in [`limits`]: [`limits::BLOCKS_PER_RANGE_REQUEST_MAX`],
//! [`limits::ROOTS_PER_REQUEST_MAX`], [`limits::BLOCK_BYTES_MAX`],
//! [`limits::REQUESTS_IN_FLIGHT_PER_PEER_MAX`],
//! [`limits::PENDING_REQUESTS_PER_PEER_MAX`],
//! [`limits::RESPONSE_FIRST_CHUNK_TIMEOUT`], [`limits::RESPONSE_TIMEOUT`],
//! the quotas, and the rest, each with its reason.

#[warn(clippy::arithmetic_side_effects)]
pub mod bodies;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod inbound;
pub mod limits;
pub mod outbound;
pub mod rate;
pub mod stats;
pub use crate::codec::snappy;
#[warn(clippy::arithmetic_side_effects)]
pub mod wire;

pub use bodies::Body;
pub use error::ReqRespDecodeError;
pub use inbound::{Answer, InboundConfig, InboundOutcome, InboundRequests};
pub use outbound::{ChunkOutcome, EndOutcome, OutboundConfig, OutboundRequests, TimeoutKind};
pub use rate::{Quota, RateCheck, RateLimiter, RateLimiterConfig};
pub use wire::{
    ProtocolId, ProtocolName, ReqRespMessage, Request, RequestId, ResponseChunk, ResponseChunkRef,
    ResponseEnd, ResultCode, REQUEST_KIND, RESPONSE_CHUNK_KIND, RESPONSE_END_KIND,
};
