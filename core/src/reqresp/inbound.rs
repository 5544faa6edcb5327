//! Requests peers make of us: admission (decoding, duplicate ids, the open
//! request cap, rate limits), tracking until answered, and the building of
//! response frames from a handler's answer.
//!
//! # Design
//! ```text
//!  bytes ─► handle_request_bytes ─┬─► Dropped   (no readable id, or an id already open: nothing is sent)
//!                             ├─► Goodbye   (one-way: close the connection)
//!                             ├─► Refused   (send the error chunk it carries)
//!                             └─► Serve ─► handler ─► respond_chunk* + respond_end
//!                                    │                 or respond_error ─► Answered
//!                                    └─ handle_timeout / handle_peer_disconnected ─► dropped
//! ```
//! Admission runs in this order, so a refused request costs the peer no
//! tokens unless it reached the rate limiter: decode → Goodbye → duplicate id
//! → registered protocol → body layout → open-request cap → rate limit.
//! Every `respond_*` returns one encoded logical message for the caller to
//! frame and send; streaming chunk by chunk lets the caller pace a large
//! response to the connection's send buffer. [`InboundRequests::respond_into`]
//! writes a whole answer at once, already framed, into the caller's buffer
//! (the node's: the connection's plaintext), each payload compressed in
//! place by the tracker's one snappy encoder; the answers of blocks are
//! encoded into a scratch buffer it keeps, one block at a time, so no
//! vector is made per block, chunk or message.
//!
//! # Security
//! Provided: at most `open_per_peer_max` requests open per peer (more get
//! `ResourceUnavailable` at once), the per-peer and global quotas of
//! [`RateLimiterConfig::serving`], a deadline on every open request so a
//! handler that never answers cannot hold a slot forever, and never more
//! chunks or larger payloads than the request allows. Unregistered
//! application protocols are refused before they reach the limiter.
//! Not provided: penalties (the outcome says what happened; the peer manager
//! scores it), or any check that a handler's payloads are true.
//!
//! # Limits
//! [`INBOUND_REQUESTS_PER_PEER_MAX`] open requests per peer, each for at most
//! [`INBOUND_ANSWER_TIMEOUT`]; [`APPLICATION_PROTOCOLS_MAX`] registered
//! application protocols. The open-request map holds only peers with open
//! requests.

use std::collections::{BTreeMap, VecDeque};

use super::bodies::{request_cost, response_chunks_max, Body, Goodbye};
use super::error::ReqRespDecodeError;
use super::limits::{
    APPLICATION_PROTOCOLS_MAX, INBOUND_ANSWER_TIMEOUT, INBOUND_REQUESTS_PER_PEER_MAX,
};
use super::rate::{Quota, QuotaError, RateCheck, RateLimiter, RateLimiterConfig};
use super::stats::{ServedResult, ServedStats};
use super::wire::{
    ProtocolId, ProtocolName, Request, RequestId, ResponseChunk, ResponseEnd, ResultCode,
};
use crate::chain::SignedBlock;
use crate::codec::{
    append_length_prefixed, append_length_prefixed_with, snappy, MESSAGE_LENGTH_PREFIX_BYTES,
};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::{Duration, Instant};
use crate::types::GoodbyeReason;

/// What an [`InboundRequests`] enforces.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InboundConfig {
    /// Requests one peer may have open with us.
    pub open_per_peer_max: usize,
    /// How long the handler has to finish an answer.
    pub answer_timeout: Duration,
    /// The quotas we serve within.
    pub quotas: RateLimiterConfig,
}

impl Default for InboundConfig {
    fn default() -> InboundConfig {
        InboundConfig {
            open_per_peer_max: INBOUND_REQUESTS_PER_PEER_MAX,
            answer_timeout: INBOUND_ANSWER_TIMEOUT,
            quotas: RateLimiterConfig::serving(),
        }
    }
}

/// How the message of a [`Refusal::Busy`] answer starts: a requester tells
/// our shared budget's refusals (transient, never its fault) from its own
/// quota's ("rate limited") by it.
pub const BUSY_MESSAGE_PREFIX: &str = "busy";

/// Why a request was refused with an error chunk.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// The protocol or body is malformed (answered `InvalidRequest`).
    Invalid(ReqRespDecodeError),
    /// An application protocol we have not registered (answered `InvalidRequest`).
    UnsupportedProtocol(ProtocolName),
    /// The peer already has `open_per_peer_max` requests open (answered `ResourceUnavailable`).
    TooManyOpen,
    /// Over the peer's own quota (answered `ResourceUnavailable`): the
    /// peer's doing, since it knows our per-peer quotas.
    RateLimited {
        /// When the same request would be allowed.
        retry_after: Duration,
    },
    /// Within the peer's quota, but our shared serving budget, or the peer's
    /// fair share of it, is spent for now (answered `ResourceUnavailable`):
    /// our limit, not the peer's fault.
    Busy {
        /// When the same request would be allowed, as things stand.
        retry_after: Duration,
    },
    /// The request costs more than the quota can ever allow (answered `ResourceUnavailable`).
    OverCapacity,
}

impl Refusal {
    /// The result code the peer gets.
    pub fn code(&self) -> ResultCode {
        match self {
            Refusal::Invalid(_) | Refusal::UnsupportedProtocol(_) => ResultCode::InvalidRequest,
            Refusal::TooManyOpen
            | Refusal::RateLimited { .. }
            | Refusal::Busy { .. }
            | Refusal::OverCapacity => ResultCode::ResourceUnavailable,
        }
    }

    /// The coarse message the peer gets (details stay in our log).
    fn message(&self) -> String {
        match self {
            Refusal::Invalid(_) => "invalid request".to_owned(),
            Refusal::UnsupportedProtocol(_) => "unsupported protocol".to_owned(),
            Refusal::TooManyOpen => "too many open requests".to_owned(),
            Refusal::RateLimited { retry_after } => {
                format!(
                    "rate limited, retry after {} ms",
                    millis_rounded_up(*retry_after)
                )
            }
            Refusal::Busy { retry_after } => {
                format!(
                    "{BUSY_MESSAGE_PREFIX}, retry after {} ms",
                    millis_rounded_up(*retry_after)
                )
            }
            Refusal::OverCapacity => "request exceeds quota".to_owned(),
        }
    }
}

/// Whole milliseconds, rounded up: a wait of 0.4 ms named "0 ms" would have
/// the requester retry at once into the same refusal.
fn millis_rounded_up(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// Why a request got no answer at all.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DropReason {
    /// Not even the id could be read.
    Malformed(ReqRespDecodeError),
    /// The id is already open with this peer; answering would corrupt that response.
    DuplicateId(RequestId),
    /// A Goodbye whose body is malformed.
    MalformedGoodbye(ReqRespDecodeError),
}

/// What [`InboundRequests::handle_request`] decided.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum InboundOutcome {
    /// Admitted: hand to the protocol's handler, which must answer with
    /// `respond_*` within the answer timeout.
    Serve {
        /// The request.
        id: RequestId,
        /// Its protocol.
        protocol: ProtocolId,
        /// The uncompressed body, valid for the protocol's layout.
        body: Vec<u8>,
        /// The most success chunks the answer may carry.
        chunks_max: u64,
    },
    /// The peer says Goodbye: note the reason and close the connection. Nothing is sent.
    Goodbye {
        /// Why the peer is leaving.
        reason: GoodbyeReason,
    },
    /// Refused: send `response` (one encoded error chunk) to the peer.
    Refused {
        /// The request.
        id: RequestId,
        /// Why.
        refusal: Refusal,
        /// The error chunk, encoded as a logical message.
        response: Vec<u8>,
    },
    /// Nothing can be answered; send nothing.
    Dropped(DropReason),
}

/// Why a `respond_*` call was refused. `NotOpen` is a normal race (the
/// request expired or the peer left); the others are handler bugs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RespondError {
    /// No such request is open with the peer (answered, expired, or disconnected).
    NotOpen,
    /// The answer already has `chunks_max` chunks.
    TooManyChunks,
    /// The payload exceeds the protocol's response limit.
    PayloadTooLarge,
}

/// Event counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundCounters {
    /// Requests admitted to a handler.
    pub requests_served: u64,
    /// Requests answered with an end.
    pub responses_completed: u64,
    /// Requests answered with an error chunk by the handler.
    pub responses_failed: u64,
    /// Requests refused as invalid or for an unsupported protocol.
    pub refused_invalid: u64,
    /// Requests refused because the peer had too many open.
    pub refused_too_many_open: u64,
    /// Requests refused by the peer's own quota.
    pub refused_rate_limited: u64,
    /// Requests refused by the shared serving budget or the peer's fair share of it.
    pub refused_busy: u64,
    /// Requests dropped unanswered (no id, duplicate id, bad Goodbye).
    pub dropped: u64,
    /// Goodbyes received.
    pub goodbyes: u64,
    /// Open requests that expired before the handler answered.
    pub expired: u64,
}

/// Requests peers have open with us.
///
/// # Methods
/// Getters: [`InboundRequests::open`], [`InboundRequests::counters`],
/// [`Machine::next_deadline`], [`InboundRequests::is_registered`].
/// Mutators: [`InboundRequests::register_application`].
/// Handlers: [`InboundRequests::handle_request_bytes`], [`InboundRequests::handle_request`],
/// [`Machine::handle_timeout`], [`InboundRequests::handle_peer_disconnected`].
/// Answers: [`InboundRequests::respond_chunk`], [`InboundRequests::respond_end`],
/// [`InboundRequests::respond_error`], [`InboundRequests::respond`].
#[derive(Debug)]
pub struct InboundRequests {
    config: InboundConfig,
    open: BTreeMap<PeerId, BTreeMap<RequestId, OpenRequest>>,
    applications: Vec<ProtocolName>,
    limiter: RateLimiter,
    counters: InboundCounters,
    /// Results by protocol.
    stats: ServedStats,
    last_now: Instant,
    /// What `handle_timeout` expired, for `poll_expired`; drained after each call.
    expired: VecDeque<(PeerId, RequestId)>,
    /// Compresses every success payload: one encoder for all chunks.
    compressor: snappy::Compressor,
    /// Where a payload that is not at hand as bytes (a stored block) is
    /// encoded before it is compressed; its room is kept between chunks,
    /// up to [`PAYLOAD_SCRATCH_RETAINED_BYTES_MAX`] between answers.
    scratch: Vec<u8>,
}

/// Room of the payload scratch buffer kept from one answer to the next:
/// enough for the blocks of a busy chain (64 KiB each), while one answer of
/// 1 MiB blocks does not hold a megabyte for the node's life.
pub const PAYLOAD_SCRATCH_RETAINED_BYTES_MAX: usize = 64 * 1024;

/// A success chunk's payload for [`InboundRequests::respond_into`]: bytes
/// at hand, or a stored block, whose encoding is written into the tracker's
/// scratch buffer instead of a vector of its own per block.
pub trait ChunkPayload {
    /// Bytes of the uncompressed payload.
    fn payload_len(&self) -> usize;
    /// The uncompressed payload: borrowed when at hand, else written into
    /// `scratch` (whatever it held is dropped).
    fn payload_bytes<'a>(&'a self, scratch: &'a mut Vec<u8>) -> &'a [u8];
}

impl ChunkPayload for Vec<u8> {
    fn payload_len(&self) -> usize {
        self.len()
    }

    fn payload_bytes<'a>(&'a self, _scratch: &'a mut Vec<u8>) -> &'a [u8] {
        self
    }
}

impl ChunkPayload for SignedBlock {
    fn payload_len(&self) -> usize {
        self.encoded_len()
    }

    fn payload_bytes<'a>(&'a self, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        scratch.clear();
        self.encode_into(scratch);
        scratch
    }
}

impl<T: ChunkPayload + ?Sized> ChunkPayload for &T {
    fn payload_len(&self) -> usize {
        (**self).payload_len()
    }

    fn payload_bytes<'a>(&'a self, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        (**self).payload_bytes(scratch)
    }
}

#[derive(Debug)]
struct OpenRequest {
    protocol: ProtocolId,
    chunks_max: u64,
    chunks_sent: u64,
    deadline: Instant,
}

/// A handler's whole answer, for [`InboundRequests::respond`].
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    /// Success: these payloads (uncompressed), possibly none, then the end.
    Chunks(Vec<Vec<u8>>),
    /// Failure: one error chunk.
    Error {
        /// Not `Success`.
        code: ResultCode,
        /// Cut to `ERROR_MESSAGE_BYTES_MAX`.
        message: String,
    },
}

impl InboundRequests {
    /// A tracker with `config`.
    pub fn new(config: InboundConfig) -> InboundRequests {
        InboundRequests {
            limiter: RateLimiter::new(config.quotas.clone()),
            config,
            open: BTreeMap::new(),
            applications: Vec::new(),
            counters: InboundCounters::default(),
            stats: ServedStats::default(),
            last_now: Instant::ZERO,
            expired: VecDeque::new(),
            compressor: snappy::Compressor::new(),
            scratch: Vec::new(),
        }
    }

    /// Serves application protocol `name` from now on, within `quota` per peer.
    pub fn register_application(
        &mut self,
        name: ProtocolName,
        quota: Quota,
    ) -> Result<(), QuotaError> {
        if !self.applications.contains(&name) {
            if self.applications.len() >= APPLICATION_PROTOCOLS_MAX {
                return Err(QuotaError::TooManyApplicationProtocols);
            }
            self.applications.push(name);
        }
        self.limiter.set_quota(ProtocolId::Application(name), quota)
    }

    /// Whether application protocol `name` is served.
    pub fn is_registered(&self, name: &ProtocolName) -> bool {
        self.applications.contains(name)
    }

    /// A request message (kind byte included) from `peer`.
    pub fn handle_request_bytes(
        &mut self,
        now: Instant,
        peer: PeerId,
        bytes: &[u8],
    ) -> InboundOutcome {
        match Request::decode(bytes) {
            Ok(request) => self.handle_request(now, peer, request),
            Err(error) => {
                self.advance(now);
                // A Goodbye is never answered, not even a malformed one: its
                // sender is closing, and an error chunk would be the one
                // answer a Goodbye ever got.
                if Request::peek_protocol(bytes) == Some(ProtocolId::Goodbye) {
                    return self.drop_request(DropReason::MalformedGoodbye(error));
                }
                match Request::peek_id(bytes) {
                    Some(id) if !self.is_open(&peer, id) => {
                        self.refuse(id, Refusal::Invalid(error))
                    }
                    Some(id) => self.drop_request(DropReason::DuplicateId(id)),
                    None => self.drop_request(DropReason::Malformed(error)),
                }
            }
        }
    }

    /// A decoded request from `peer`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: PeerId,
        request: Request,
    ) -> InboundOutcome {
        self.advance(now);
        let Request { id, protocol, body } = request;
        if protocol == ProtocolId::Goodbye {
            return match Goodbye::decode(&body) {
                Ok(goodbye) => {
                    self.counters.goodbyes += 1;
                    InboundOutcome::Goodbye {
                        reason: goodbye.reason,
                    }
                }
                Err(error) => self.drop_request(DropReason::MalformedGoodbye(error)),
            };
        }
        if self.is_open(&peer, id) {
            return self.drop_request(DropReason::DuplicateId(id));
        }
        if let ProtocolId::Application(name) = protocol {
            if !self.is_registered(&name) {
                return self.refuse(id, Refusal::UnsupportedProtocol(name));
            }
        }
        let chunks_max = match response_chunks_max(&protocol, &body) {
            Ok(chunks_max) => chunks_max,
            Err(error) => return self.refuse_known(id, protocol, Refusal::Invalid(error)),
        };
        if self.open_count(&peer) >= self.config.open_per_peer_max {
            return self.refuse_known(id, protocol, Refusal::TooManyOpen);
        }
        match self
            .limiter
            .check(now, peer, protocol, request_cost(chunks_max))
        {
            RateCheck::Allowed => {}
            RateCheck::Limited { retry_after } => {
                return self.refuse_known(id, protocol, Refusal::RateLimited { retry_after })
            }
            RateCheck::Busy { retry_after } => {
                return self.refuse_known(id, protocol, Refusal::Busy { retry_after })
            }
            RateCheck::OverCapacity => {
                return self.refuse_known(id, protocol, Refusal::OverCapacity)
            }
            RateCheck::NoQuota => {
                // Registered protocols all have quotas; a built-in one without
                // is a configuration that serves nothing of it.
                return self.refuse_known(id, protocol, Refusal::OverCapacity);
            }
        }
        self.open.entry(peer).or_default().insert(
            id,
            OpenRequest {
                protocol,
                chunks_max,
                chunks_sent: 0,
                deadline: now + self.config.answer_timeout,
            },
        );
        self.counters.requests_served += 1;
        InboundOutcome::Serve {
            id,
            protocol,
            body,
            chunks_max,
        }
    }

    /// One success chunk of the answer to `id`, encoded; the request stays open.
    pub fn respond_chunk(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        payload: &[u8],
    ) -> Result<Vec<u8>, RespondError> {
        self.advance(now);
        let request = self.open_request(now, &peer, id)?;
        if request.chunks_sent >= request.chunks_max {
            return Err(RespondError::TooManyChunks);
        }
        if payload.len() > request.protocol.response_bytes_max() {
            return Err(RespondError::PayloadTooLarge);
        }
        request.chunks_sent += 1;
        Ok(ResponseChunk::success(id, payload).encode())
    }

    /// The end of a successful answer to `id`, encoded; the request is closed.
    pub fn respond_end(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
    ) -> Result<Vec<u8>, RespondError> {
        self.advance(now);
        self.open_request(now, &peer, id)?;
        self.close_answered(&peer, id);
        self.counters.responses_completed += 1;
        Ok(ResponseEnd { id }.encode())
    }

    /// An error answer to `id` (after any chunks already sent), encoded; the
    /// request is closed.
    ///
    /// # Panics
    /// If `code` is `Success`.
    pub fn respond_error(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        code: ResultCode,
        message: &str,
    ) -> Result<Vec<u8>, RespondError> {
        self.advance(now);
        assert!(!code.is_success(), "an error answer needs an error code");
        self.open_request(now, &peer, id)?;
        self.close_answered(&peer, id);
        self.counters.responses_failed += 1;
        Ok(ResponseChunk::error(id, code, message).encode())
    }

    /// A whole answer at once: the encoded messages to send, in order. Checks
    /// every payload before producing anything, so on error nothing is sent
    /// and the request stays open. The messages are [`respond_into`]'s.
    ///
    /// [`respond_into`]: InboundRequests::respond_into
    pub fn respond(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        answer: Answer,
    ) -> Result<Vec<Vec<u8>>, RespondError> {
        let mut framed = Vec::new();
        match answer {
            Answer::Chunks(payloads) => self.respond_into(now, peer, id, &payloads, &mut framed)?,
            Answer::Error { code, message } => {
                self.respond_error_into(now, peer, id, code, &message, &mut framed)?
            }
        };
        let mut messages = Vec::new();
        let mut rest = &framed[..];
        while let Some((prefix, after)) = rest.split_first_chunk::<MESSAGE_LENGTH_PREFIX_BYTES>() {
            let (message, after) = after.split_at(u32::from_be_bytes(*prefix) as usize);
            messages.push(message.to_vec());
            rest = after;
        }
        Ok(messages)
    }

    /// A whole successful answer at once: a chunk per payload, then the
    /// end, appended to `out` as logical messages, each with its `u32`
    /// length prefix (a connection's plaintext framing), every payload
    /// compressed straight into place. Checks every payload before writing
    /// anything, so on error `out` is unchanged and the request stays open.
    /// Returns how many messages were appended.
    pub fn respond_into<P: ChunkPayload>(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        payloads: &[P],
        out: &mut Vec<u8>,
    ) -> Result<usize, RespondError> {
        self.advance(now);
        let request = self.open_request(now, &peer, id)?;
        let chunks_after = request.chunks_sent.saturating_add(payloads.len() as u64);
        if chunks_after > request.chunks_max {
            return Err(RespondError::TooManyChunks);
        }
        let limit = request.protocol.response_bytes_max();
        if payloads.iter().any(|payload| payload.payload_len() > limit) {
            return Err(RespondError::PayloadTooLarge);
        }
        request.chunks_sent = chunks_after;
        let (compressor, scratch) = (&mut self.compressor, &mut self.scratch);
        for payload in payloads {
            let bytes = payload.payload_bytes(scratch);
            append_length_prefixed_with(out, |out| {
                ResponseChunk::encode_success_into(id, bytes, compressor, out)
            });
        }
        if scratch.capacity() > PAYLOAD_SCRATCH_RETAINED_BYTES_MAX {
            *scratch = Vec::new();
        }
        self.close_answered(&peer, id);
        self.counters.responses_completed += 1;
        append_length_prefixed_with(out, |out| ResponseEnd { id }.encode_into(out));
        Ok(payloads.len().saturating_add(1))
    }

    /// [`InboundRequests::respond_error`], appended to `out` with its
    /// length prefix as [`InboundRequests::respond_into`] does. Returns how
    /// many messages were appended: one.
    pub fn respond_error_into(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        code: ResultCode,
        message: &str,
        out: &mut Vec<u8>,
    ) -> Result<usize, RespondError> {
        let message = self.respond_error(now, peer, id, code, message)?;
        append_length_prefixed(out, &message);
        Ok(1)
    }

    /// The next open request [`Machine::handle_timeout`] dropped, in peer then id order, until `None`: send nothing for it.
    pub fn poll_expired(&mut self) -> Option<(PeerId, RequestId)> {
        self.expired.pop_front()
    }

    /// Drops every open request whose answer deadline is at or before `now`,
    /// returning them in peer then id order. The requester has given up on
    /// them: send nothing, and drop any handler work for them.
    fn expire_due(&mut self, now: Instant) -> Vec<(PeerId, RequestId)> {
        self.advance(now);
        let expired: Vec<(PeerId, RequestId)> = self
            .open
            .iter()
            .flat_map(|(&peer, requests)| {
                requests
                    .iter()
                    .filter(|(_, request)| request.deadline <= now)
                    .map(move |(&id, _)| (peer, id))
            })
            .collect();
        for (peer, id) in &expired {
            let protocol = self.close(peer, *id);
            self.stats.record(protocol, ServedResult::Expired);
        }
        self.counters.expired += expired.len() as u64;
        expired
    }

    /// The earliest answer deadline, if any request is open.
    fn earliest_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .flat_map(|requests| requests.values().map(|request| request.deadline))
            .min()
    }

    /// `peer` is gone: forgets its open requests (returned in id order) and its buckets.
    pub fn handle_peer_disconnected(&mut self, peer: &PeerId) -> Vec<RequestId> {
        self.limiter.remove_peer(peer);
        let requests = self.open.remove(peer).unwrap_or_default();
        for request in requests.values() {
            self.stats
                .record(request.protocol, ServedResult::Disconnected);
        }
        requests.into_keys().collect()
    }

    /// Requests `peer` has open with us.
    pub fn open(&self, peer: &PeerId) -> usize {
        self.open_count(peer)
    }

    /// Event counts.
    pub fn counters(&self) -> &InboundCounters {
        &self.counters
    }

    /// Results by protocol.
    pub fn stats(&self) -> &ServedStats {
        &self.stats
    }

    /// The serving rate limiter, for its counters.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    fn open_count(&self, peer: &PeerId) -> usize {
        self.open.get(peer).map_or(0, BTreeMap::len)
    }

    fn is_open(&self, peer: &PeerId, id: RequestId) -> bool {
        self.open
            .get(peer)
            .is_some_and(|requests| requests.contains_key(&id))
    }

    /// The open request, unless its deadline has passed.
    fn open_request(
        &mut self,
        now: Instant,
        peer: &PeerId,
        id: RequestId,
    ) -> Result<&mut OpenRequest, RespondError> {
        self.open
            .get_mut(peer)
            .and_then(|requests| requests.get_mut(&id))
            .filter(|request| request.deadline > now)
            .ok_or(RespondError::NotOpen)
    }

    /// Closes an open request, returning its protocol.
    fn close(&mut self, peer: &PeerId, id: RequestId) -> ProtocolId {
        let requests = self
            .open
            .get_mut(peer)
            .expect("closing a request of a known peer");
        let request = requests.remove(&id).expect("closing an open request");
        if requests.is_empty() {
            self.open.remove(peer);
        }
        request.protocol
    }

    fn close_answered(&mut self, peer: &PeerId, id: RequestId) {
        let protocol = self.close(peer, id);
        self.stats.record(protocol, ServedResult::Answered);
    }

    /// Refuses a request of a protocol we serve, counting it by protocol.
    fn refuse_known(
        &mut self,
        id: RequestId,
        protocol: ProtocolId,
        refusal: Refusal,
    ) -> InboundOutcome {
        let result = match refusal {
            Refusal::Invalid(_) | Refusal::UnsupportedProtocol(_) => ServedResult::Invalid,
            Refusal::TooManyOpen => ServedResult::TooManyOpen,
            Refusal::RateLimited { .. } | Refusal::OverCapacity => ServedResult::RateLimited,
            Refusal::Busy { .. } => ServedResult::OverBudget,
        };
        self.stats.record(protocol, result);
        self.refuse(id, refusal)
    }

    fn refuse(&mut self, id: RequestId, refusal: Refusal) -> InboundOutcome {
        match refusal {
            Refusal::Invalid(_) | Refusal::UnsupportedProtocol(_) => {
                self.counters.refused_invalid += 1
            }
            Refusal::TooManyOpen => self.counters.refused_too_many_open += 1,
            Refusal::RateLimited { .. } | Refusal::OverCapacity => {
                self.counters.refused_rate_limited += 1
            }
            Refusal::Busy { .. } => self.counters.refused_busy += 1,
        }
        let response = ResponseChunk::error(id, refusal.code(), &refusal.message()).encode();
        InboundOutcome::Refused {
            id,
            refusal,
            response,
        }
    }

    fn drop_request(&mut self, reason: DropReason) -> InboundOutcome {
        self.counters.dropped += 1;
        InboundOutcome::Dropped(reason)
    }
}

impl Machine for InboundRequests {
    fn handle_timeout(&mut self, now: Instant) {
        let expired = self.expire_due(now);
        self.expired.extend(expired);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.earliest_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Root;

    /// What one `handle_timeout` at `now` expired, drained.
    fn timeouts(machine: &mut InboundRequests, now: Instant) -> Vec<(PeerId, RequestId)> {
        machine.handle_timeout(now);
        std::iter::from_fn(|| machine.poll_expired()).collect()
    }
    use crate::reqresp::bodies::{BlocksByRangeRequest, Ping, Status};
    use crate::reqresp::wire::{ReqRespMessage, REQUEST_KIND};

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn secs(seconds: u64) -> Instant {
        Instant::from_micros(seconds * 1_000_000)
    }

    fn request(id: u64, protocol: ProtocolId, body: Vec<u8>) -> Vec<u8> {
        Request {
            id: RequestId(id),
            protocol,
            body,
        }
        .encode()
    }

    fn range(count: u64) -> Vec<u8> {
        BlocksByRangeRequest {
            start_slot: 0,
            count,
        }
        .encode()
    }

    fn status() -> Vec<u8> {
        Status {
            network_id: 1,
            finalized_root: Root([0; 32]),
            finalized_slot: 0,
            head_root: Root([0; 32]),
            head_slot: 0,
        }
        .encode()
    }

    fn decode_chunk(bytes: &[u8]) -> ResponseChunk {
        match ReqRespMessage::decode(bytes).unwrap() {
            ReqRespMessage::Chunk(chunk) => chunk,
            other => panic!("expected a chunk, got {other:?}"),
        }
    }

    fn refused_code(outcome: &InboundOutcome) -> ResultCode {
        match outcome {
            InboundOutcome::Refused {
                response,
                refusal,
                id,
            } => {
                let chunk = decode_chunk(response);
                assert_eq!(chunk.id, *id);
                assert_eq!(chunk.code, refusal.code());
                chunk.code
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_served_request_is_answered_in_chunks_then_an_end() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        let outcome = inbound.handle_request_bytes(
            secs(0),
            a,
            &request(7, ProtocolId::BlocksByRange, range(3)),
        );
        assert_eq!(
            outcome,
            InboundOutcome::Serve {
                id: RequestId(7),
                protocol: ProtocolId::BlocksByRange,
                body: range(3),
                chunks_max: 3
            }
        );
        let messages = inbound
            .respond(
                secs(1),
                a,
                RequestId(7),
                Answer::Chunks(vec![b"b1".to_vec(), b"b2".to_vec()]),
            )
            .unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(decode_chunk(&messages[0]).payload(10).unwrap(), b"b1");
        assert_eq!(
            ReqRespMessage::decode(&messages[2]),
            Ok(ReqRespMessage::End(ResponseEnd { id: RequestId(7) }))
        );
        assert_eq!(inbound.open(&a), 0);
        assert_eq!(
            inbound.respond_end(secs(1), a, RequestId(7)),
            Err(RespondError::NotOpen)
        );
        assert_eq!(inbound.counters().requests_served, 1);
        assert_eq!(inbound.counters().responses_completed, 1);
    }

    #[test]
    fn handlers_cannot_exceed_the_chunks_or_payload_allowed() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        inbound.handle_request_bytes(secs(0), a, &request(1, ProtocolId::Status, status()));
        assert_eq!(
            inbound.respond(
                secs(0),
                a,
                RequestId(1),
                Answer::Chunks(vec![status(), status()])
            ),
            Err(RespondError::TooManyChunks)
        );
        assert_eq!(
            inbound.respond_chunk(secs(0), a, RequestId(1), &[0; 89]),
            Err(RespondError::PayloadTooLarge)
        );
        assert!(inbound
            .respond_chunk(secs(0), a, RequestId(1), &status())
            .is_ok());
        assert_eq!(
            inbound.respond_chunk(secs(0), a, RequestId(1), &status()),
            Err(RespondError::TooManyChunks)
        );
        assert!(inbound.respond_end(secs(0), a, RequestId(1)).is_ok());
    }

    #[test]
    fn error_answers_close_the_request() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        inbound.handle_request_bytes(secs(0), a, &request(1, ProtocolId::BlocksByRange, range(4)));
        let messages = inbound
            .respond(
                secs(0),
                a,
                RequestId(1),
                Answer::Error {
                    code: ResultCode::ResourceUnavailable,
                    message: "pruned".into(),
                },
            )
            .unwrap();
        let chunk = decode_chunk(&messages[0]);
        assert_eq!(chunk.code, ResultCode::ResourceUnavailable);
        assert_eq!(chunk.error_message().unwrap(), "pruned");
        assert_eq!(inbound.open(&a), 0);
        assert_eq!(inbound.counters().responses_failed, 1);
    }

    #[test]
    fn malformed_requests_are_answered_invalid_when_the_id_is_readable() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        // Unknown protocol tag: the id is readable, so the peer hears why.
        let mut bytes = request(3, ProtocolId::Ping, Ping { metadata_seq: 0 }.encode());
        bytes[9] = 99;
        let outcome = inbound.handle_request_bytes(secs(0), a, &bytes);
        assert_eq!(refused_code(&outcome), ResultCode::InvalidRequest);
        // A body that decompresses but does not fit the protocol's layout.
        let outcome =
            inbound.handle_request_bytes(secs(0), a, &request(4, ProtocolId::Status, vec![0; 10]));
        assert!(matches!(
            outcome,
            InboundOutcome::Refused {
                refusal: Refusal::Invalid(ReqRespDecodeError::Truncated { .. }),
                ..
            }
        ));
        // A range over 64 blocks.
        let mut body = 0u64.to_be_bytes().to_vec();
        body.extend_from_slice(&65u64.to_be_bytes());
        let outcome =
            inbound.handle_request_bytes(secs(0), a, &request(5, ProtocolId::BlocksByRange, body));
        assert_eq!(refused_code(&outcome), ResultCode::InvalidRequest);
        // No readable id: nothing can be answered.
        assert!(matches!(
            inbound.handle_request_bytes(secs(0), a, &[16, 0, 0]),
            InboundOutcome::Dropped(DropReason::Malformed(_))
        ));
        assert_eq!(inbound.counters().refused_invalid, 3);
        assert_eq!(inbound.counters().dropped, 1);
        assert_eq!(inbound.open(&a), 0);
        assert_eq!(
            inbound.limiter().counters().allowed,
            0,
            "invalid requests spend no tokens"
        );
    }

    #[test]
    fn duplicate_open_ids_are_dropped_unanswered() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let (a, b) = (peer(1), peer(2));
        let bytes = request(9, ProtocolId::Status, status());
        assert!(matches!(
            inbound.handle_request_bytes(secs(0), a, &bytes),
            InboundOutcome::Serve { .. }
        ));
        assert_eq!(
            inbound.handle_request_bytes(secs(0), a, &bytes),
            InboundOutcome::Dropped(DropReason::DuplicateId(RequestId(9)))
        );
        // Even a malformed request reusing the id gets no answer that would end the open one.
        let mut malformed = bytes.clone();
        malformed.truncate(12);
        assert_eq!(
            inbound.handle_request_bytes(secs(0), a, &malformed),
            InboundOutcome::Dropped(DropReason::DuplicateId(RequestId(9)))
        );
        // Ids are per peer.
        assert!(matches!(
            inbound.handle_request_bytes(secs(0), b, &bytes),
            InboundOutcome::Serve { .. }
        ));
    }

    #[test]
    fn a_peer_over_its_open_requests_gets_resource_unavailable() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        for id in 0..INBOUND_REQUESTS_PER_PEER_MAX as u64 {
            assert!(matches!(
                inbound.handle_request_bytes(
                    secs(0),
                    a,
                    &request(id, ProtocolId::Status, status())
                ),
                InboundOutcome::Serve { .. }
            ));
        }
        let outcome =
            inbound.handle_request_bytes(secs(0), a, &request(100, ProtocolId::Status, status()));
        assert_eq!(refused_code(&outcome), ResultCode::ResourceUnavailable);
        assert!(matches!(
            outcome,
            InboundOutcome::Refused {
                refusal: Refusal::TooManyOpen,
                ..
            }
        ));
        assert_eq!(inbound.counters().refused_too_many_open, 1);
        // Status allows 5 per 15 s; the refusal spent none of them.
        assert_eq!(
            inbound.limiter().tokens(secs(0), &a, &ProtocolId::Status),
            Some(1)
        );
    }

    #[test]
    fn rate_limited_requests_get_resource_unavailable_with_a_retry_time() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        for id in 0..2 {
            let bytes = request(id, ProtocolId::Ping, Ping { metadata_seq: 0 }.encode());
            assert!(matches!(
                inbound.handle_request_bytes(secs(0), a, &bytes),
                InboundOutcome::Serve { .. }
            ));
            inbound
                .respond(secs(0), a, RequestId(id), Answer::Chunks(vec![vec![0; 8]]))
                .unwrap();
        }
        let bytes = request(2, ProtocolId::Ping, Ping { metadata_seq: 0 }.encode());
        let outcome = inbound.handle_request_bytes(secs(0), a, &bytes);
        assert_eq!(refused_code(&outcome), ResultCode::ResourceUnavailable);
        let InboundOutcome::Refused {
            refusal, response, ..
        } = outcome
        else {
            unreachable!("checked above")
        };
        assert_eq!(
            refusal,
            Refusal::RateLimited {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(
            decode_chunk(&response).error_message().unwrap(),
            "rate limited, retry after 5000 ms"
        );
        assert_eq!(inbound.counters().refused_rate_limited, 1);
        assert!(matches!(
            inbound.handle_request_bytes(secs(5), a, &bytes),
            InboundOutcome::Serve { .. }
        ));
    }

    #[test]
    fn application_protocols_must_be_registered() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        let name = ProtocolName::new("/app/echo/1").unwrap();
        let bytes = request(1, ProtocolId::Application(name), b"hello".to_vec());
        let outcome = inbound.handle_request_bytes(secs(0), a, &bytes);
        assert_eq!(refused_code(&outcome), ResultCode::InvalidRequest);
        assert!(matches!(
            outcome,
            InboundOutcome::Refused {
                refusal: Refusal::UnsupportedProtocol(_),
                ..
            }
        ));
        inbound
            .register_application(name, Quota::new(4, Duration::from_secs(1)))
            .unwrap();
        assert!(inbound.is_registered(&name));
        let InboundOutcome::Serve {
            body, chunks_max, ..
        } = inbound.handle_request_bytes(secs(0), a, &bytes)
        else {
            panic!("a registered protocol is served")
        };
        assert_eq!((body.as_slice(), chunks_max), (&b"hello"[..], 1));
        let messages = inbound
            .respond(
                secs(0),
                a,
                RequestId(1),
                Answer::Chunks(vec![b"HELLO".to_vec()]),
            )
            .unwrap();
        assert_eq!(decode_chunk(&messages[0]).payload(5).unwrap(), b"HELLO");
    }

    #[test]
    fn goodbye_is_one_way() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        let body = Goodbye {
            reason: GoodbyeReason::TooManyPeers,
        }
        .encode();
        assert_eq!(
            inbound.handle_request_bytes(secs(0), a, &request(1, ProtocolId::Goodbye, body)),
            InboundOutcome::Goodbye {
                reason: GoodbyeReason::TooManyPeers
            }
        );
        assert_eq!(inbound.open(&a), 0);
        assert!(matches!(
            inbound.handle_request(
                secs(0),
                a,
                Request {
                    id: RequestId(2),
                    protocol: ProtocolId::Goodbye,
                    body: vec![1]
                }
            ),
            InboundOutcome::Dropped(DropReason::MalformedGoodbye(_))
        ));
    }

    #[test]
    fn a_malformed_goodbye_is_never_answered() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        // A request header for protocol 4 with a body frame the decoder refuses:
        // 9 declared bytes (one over the Goodbye's 8), a truncated frame, none.
        let header = |id: u8| vec![REQUEST_KIND, 0, 0, 0, 0, 0, 0, 0, id, 4];
        let mut nine = header(1);
        crate::codec::snappy::compress_into(&[0; 9], &mut nine);
        let mut truncated = header(2);
        truncated.extend_from_slice(&[0, 0, 0, 8, 8]);
        let bodiless = header(3);
        for bytes in [nine, truncated, bodiless] {
            assert!(
                Request::decode(&bytes).is_err(),
                "the decoder refuses {bytes:?}"
            );
            assert!(
                matches!(
                    inbound.handle_request_bytes(secs(0), a, &bytes),
                    InboundOutcome::Dropped(DropReason::MalformedGoodbye(_))
                ),
                "{bytes:?} is dropped unanswered"
            );
        }
        assert_eq!(inbound.counters().refused_invalid, 0);
        assert_eq!(inbound.counters().dropped, 3);
        // The same body under another protocol is refused with an answer.
        let mut status = vec![REQUEST_KIND, 0, 0, 0, 0, 0, 0, 0, 4, 1];
        crate::codec::snappy::compress_into(&[0; 89], &mut status);
        assert!(matches!(
            inbound.handle_request_bytes(secs(0), a, &status),
            InboundOutcome::Refused { .. }
        ));
    }

    #[test]
    fn unanswered_requests_expire_and_free_their_slot() {
        let mut inbound = InboundRequests::new(InboundConfig::default());
        let a = peer(1);
        inbound.handle_request_bytes(secs(0), a, &request(1, ProtocolId::Status, status()));
        inbound.handle_request_bytes(secs(2), a, &request(2, ProtocolId::Status, status()));
        assert_eq!(inbound.next_deadline(), Some(secs(10)));
        assert!(timeouts(&mut inbound, secs(9)).is_empty());
        // At the deadline the answer is refused even before handle_timeout runs.
        assert_eq!(
            inbound.respond_chunk(secs(10), a, RequestId(1), &status()),
            Err(RespondError::NotOpen)
        );
        assert_eq!(timeouts(&mut inbound, secs(10)), vec![(a, RequestId(1))]);
        assert_eq!(inbound.next_deadline(), Some(secs(12)));
        assert_eq!(inbound.open(&a), 1);
        assert_eq!(inbound.counters().expired, 1);
        assert_eq!(inbound.handle_peer_disconnected(&a), vec![RequestId(2)]);
        assert_eq!(inbound.next_deadline(), None);
        assert_eq!(inbound.limiter().tracked_peers(), 0);
    }
}
