//! Our requests to peers: ids, queueing, in-flight limits, quotas, deadlines,
//! and the checking of what comes back.
//!
//! # Design
//! A pure state machine; time is a value. A request is, per peer:
//!
//! ```text
//!  send ─► Queued ──poll_transmit──► InFlight ──handle_end──────────────► Completed
//!            │   (slot free and         │ ├─handle_chunk(error code)──────► Failed
//!            │    within the quota)     │ ├─handle_chunk(too many/bad)────► Violation
//!            │                          │ └─handle_timeout─────────────────► TimedOut
//!            └───────── handle_peer_disconnected (either state) ──────────► Failed
//! ```
//!
//! At most `in_flight_per_peer_max` requests per peer are in flight, the rest
//! wait in that peer's queue, oldest first except that a request held back by
//! its protocol's quota does not hold back requests of other protocols.
//! A peer that answers `ResourceUnavailable` is busy (its shared budget, its
//! open-request cap, or our own quota guess was wrong): requests of that
//! protocol to it are held back for the "retry after N ms" its message names
//! (at most [`REFUSED_BACKOFF_MAX`], [`REFUSED_BACKOFF_DEFAULT`] when it names
//! none) instead of being retried into the same refusal.
//! Goodbye is one-way: it jumps the queue, needs no slot and is never tracked.
//!
//! The deadlines run from the moment a request leaves [`OutboundRequests::poll_transmit`]:
//! the first message of the response (a chunk, or the end of an empty
//! response) within `first_chunk_timeout`, the end within `response_timeout`.
//! A chunk or end that arrives at or after the deadline counts as late even
//! if [`Machine::handle_timeout`] has not run yet, so the outcome does
//! not depend on how promptly the driver delivers timeouts.
//!
//! # Security
//! Provided: a peer can make us hold at most `chunks_max` decompressed
//! payloads per request, each within its protocol's limit; chunks for ids
//! that are not open with that peer (never issued, finished, timed out, or
//! another peer's) are discarded and counted, never attributed to a request.
//! We never exceed the quotas of [`RateLimiterConfig::requesting`].
//! Not provided: checking what payloads mean (a Status or block is decoded
//! and judged by the caller).
//!
//! # Limits
//! [`REQUESTS_IN_FLIGHT_PER_PEER_MAX`] in flight and
//! [`PENDING_REQUESTS_PER_PEER_MAX`] queued per peer; the peer map only holds
//! peers the caller sends to, and forgets a peer once it has nothing queued
//! or in flight, or when it disconnects.

use std::collections::{BTreeMap, VecDeque};

use super::bodies::{request_cost, response_chunks_max};
use super::error::ReqRespDecodeError;
use super::limits::{
    PENDING_REQUESTS_PER_PEER_MAX, REFUSED_BACKOFF_DEFAULT, REFUSED_BACKOFF_MAX,
    REQUESTS_IN_FLIGHT_PER_PEER_MAX, RESPONSE_FIRST_CHUNK_TIMEOUT, RESPONSE_TIMEOUT,
};
use super::rate::{Quota, QuotaError, RateCheck, RateLimiter, RateLimiterConfig};
use super::stats::{RequestResult, RequestStats};
use super::wire::{
    ProtocolId, ProtocolName, Request, RequestId, ResponseChunk, ResponseChunkRef, ResponseEnd,
    ResultCode,
};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::{Duration, Instant};

/// What an [`OutboundRequests`] enforces.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OutboundConfig {
    /// Requests in flight per peer.
    pub in_flight_per_peer_max: usize,
    /// Requests queued per peer behind those in flight.
    pub pending_per_peer_max: usize,
    /// Deadline for the first message of a response.
    pub first_chunk_timeout: Duration,
    /// Deadline for the end of a response.
    pub response_timeout: Duration,
    /// The peer's quotas, which we respect.
    pub quotas: RateLimiterConfig,
    /// Whether a `ResourceUnavailable` answer holds back further requests of
    /// its protocol to that peer for a while (only hostile simulated nodes
    /// turn this off).
    pub back_off_when_busy: bool,
}

impl Default for OutboundConfig {
    fn default() -> OutboundConfig {
        OutboundConfig {
            in_flight_per_peer_max: REQUESTS_IN_FLIGHT_PER_PEER_MAX,
            pending_per_peer_max: PENDING_REQUESTS_PER_PEER_MAX,
            first_chunk_timeout: RESPONSE_FIRST_CHUNK_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            quotas: RateLimiterConfig::requesting(),
            back_off_when_busy: true,
        }
    }
}

/// Why [`OutboundRequests::send`] refused a request. All are the caller's doing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SendError {
    /// The body does not fit its protocol's layout or limit.
    InvalidBody(ReqRespDecodeError),
    /// The peer already has `pending_per_peer_max` requests queued.
    QueueFull,
    /// The request costs more than the peer's quota can ever allow, or its
    /// protocol has no quota (an application protocol never registered).
    OverQuota,
}

/// How a request ran out of time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimeoutKind {
    /// Nothing at all came back within `first_chunk_timeout`.
    FirstChunk,
    /// The response did not end within `response_timeout`.
    Response,
}

/// Why a response message matched no open request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unexpected {
    /// We issued the id, but it is not open with this peer: it finished, timed
    /// out (or its deadline has passed), was Goodbye, or went to another peer.
    Late,
    /// We never issued the id.
    Unknown,
}

/// How a response broke the protocol. The request fails; the peer is at fault.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResponseViolation {
    /// More success chunks than the request allows.
    TooManyChunks {
        /// The most allowed.
        chunks_max: u64,
    },
    /// A payload that does not decompress within its protocol's limit.
    Payload(ReqRespDecodeError),
}

/// What [`OutboundRequests::handle_chunk`] made of a chunk.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChunkOutcome {
    /// A success chunk: `payload` is the decompressed answer (decode it per
    /// `protocol`). The request stays open for more chunks and its end.
    Chunk {
        /// The request.
        id: RequestId,
        /// Its protocol.
        protocol: ProtocolId,
        /// The uncompressed payload, within `protocol.response_bytes_max()`.
        payload: Vec<u8>,
    },
    /// An error chunk: the request is over and failed with `code` (never
    /// `Success`; `Reserved` codes land here too).
    Error {
        /// The request.
        id: RequestId,
        /// Its protocol.
        protocol: ProtocolId,
        /// The code.
        code: ResultCode,
        /// The peer's message, sanitised for logs.
        message: String,
    },
    /// The chunk broke the protocol: the request is over and failed.
    Violation {
        /// The request.
        id: RequestId,
        /// Its protocol.
        protocol: ProtocolId,
        /// What was wrong.
        violation: ResponseViolation,
    },
    /// No open request matches: discarded and counted.
    Unexpected {
        /// The id the chunk carried.
        id: RequestId,
        /// Late or unknown.
        reason: Unexpected,
    },
}

/// What [`OutboundRequests::handle_end`] made of an end marker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EndOutcome {
    /// The request is over and succeeded with `chunks` chunks (possibly none).
    Completed {
        /// The request.
        id: RequestId,
        /// Its protocol.
        protocol: ProtocolId,
        /// Success chunks received.
        chunks: u64,
    },
    /// No open request matches: discarded and counted.
    Unexpected {
        /// The id the end carried.
        id: RequestId,
        /// Late or unknown.
        reason: Unexpected,
    },
}

/// Event counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundCounters {
    /// Requests accepted by `send`.
    pub requests_queued: u64,
    /// Requests handed out by `poll_transmit` (Goodbyes included).
    pub requests_sent: u64,
    /// Times a queued request was found held back by a quota or a peer's
    /// busy answer (once per scan).
    pub requests_held_by_quota: u64,
    /// `ResourceUnavailable` answers that made us back off a protocol with a peer.
    pub busy_backoffs: u64,
    /// Responses that ended with an end marker.
    pub responses_completed: u64,
    /// Responses that ended with an error chunk.
    pub responses_failed: u64,
    /// Responses that broke the protocol.
    pub responses_violating: u64,
    /// Requests that got nothing back in time.
    pub timeouts_first_chunk: u64,
    /// Requests whose response did not end in time.
    pub timeouts_response: u64,
    /// Requests failed because their peer disconnected.
    pub requests_disconnected: u64,
    /// Chunks and ends for ids issued but not open with their sender.
    pub responses_late: u64,
    /// Chunks and ends for ids never issued.
    pub responses_unknown: u64,
}

/// Our outbound requests to all peers.
///
/// # Methods
/// Getters: [`OutboundRequests::in_flight`], [`OutboundRequests::queued`],
/// [`OutboundRequests::counters`], [`Machine::next_deadline`].
/// Mutators: [`OutboundRequests::send`], [`OutboundRequests::register_application`].
/// Handlers: [`OutboundRequests::handle_chunk`], [`OutboundRequests::handle_end`],
/// [`Machine::handle_timeout`], [`OutboundRequests::handle_peer_disconnected`].
/// Polls: [`OutboundRequests::poll_transmit`].
///
/// After any mutation or handler, drain `poll_transmit(now)` until `None`
/// (a finished request frees a slot), then wake at `next_deadline()` to call
/// `handle_timeout(now)` and drain `poll_transmit(now)` again (a quota may have refilled).
#[derive(Debug)]
pub struct OutboundRequests {
    config: OutboundConfig,
    next_id: u64,
    peers: BTreeMap<PeerId, PeerRequests>,
    limiter: RateLimiter,
    /// Until when each (peer, protocol) that answered `ResourceUnavailable`
    /// is left alone. At most one entry per protocol per peer we send to;
    /// expired entries go at the next scan, a peer's with the peer.
    busy_until: BTreeMap<(PeerId, ProtocolId), Instant>,
    counters: OutboundCounters,
    /// Results and latencies by protocol.
    stats: RequestStats,
    last_now: Instant,
    /// What `handle_timeout` expired, for `poll_timed_out`; drained after each call.
    timed_out: VecDeque<TimedOut>,
}

/// A request that ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    /// Whom it was sent to.
    pub peer: PeerId,
    /// Its id.
    pub id: RequestId,
    /// Which deadline it missed.
    pub kind: TimeoutKind,
    /// When it was sent: whether the peer was heard from after it tells a
    /// peer that ignored it from one that went quiet.
    pub sent_at: Instant,
}

/// How long a `ResourceUnavailable` answer asks us to wait: the "retry after
/// N ms" in its message, at most [`REFUSED_BACKOFF_MAX`] (a peer cannot make
/// us shun it for long), or [`REFUSED_BACKOFF_DEFAULT`] if it names none.
pub fn busy_backoff(message: &str) -> Duration {
    const MARKER: &str = "retry after ";
    let named = message.rfind(MARKER).and_then(|start| {
        let rest = &message[start + MARKER.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let millis: u64 = rest[..digits].parse().ok()?;
        rest[digits..]
            .starts_with(" ms")
            .then(|| Duration::from_millis(millis.min(REFUSED_BACKOFF_MAX.as_millis() as u64)))
    });
    named
        .unwrap_or(REFUSED_BACKOFF_DEFAULT)
        .min(REFUSED_BACKOFF_MAX)
}

#[derive(Debug, Default)]
struct PeerRequests {
    queued: VecDeque<Queued>,
    in_flight: BTreeMap<RequestId, InFlight>,
    /// When the quota next lets a held-back request go, as of the last scan.
    quota_retry_at: Option<Instant>,
}

impl PeerRequests {
    fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_empty()
    }
}

#[derive(Debug)]
struct Queued {
    id: RequestId,
    protocol: ProtocolId,
    body: Vec<u8>,
    chunks_max: u64,
}

#[derive(Debug)]
struct InFlight {
    protocol: ProtocolId,
    /// When it left `poll_transmit`, for its latency.
    sent_at: Instant,
    chunks_max: u64,
    chunks_received: u64,
    first_chunk_deadline: Instant,
    response_deadline: Instant,
}

impl InFlight {
    /// The deadline that applies now: the first-chunk one until something arrives.
    fn deadline(&self) -> Instant {
        if self.chunks_received == 0 {
            self.first_chunk_deadline.min(self.response_deadline)
        } else {
            self.response_deadline
        }
    }
}

impl OutboundRequests {
    /// A tracker with `config`.
    ///
    /// # Panics
    /// If `config.in_flight_per_peer_max` is 0 (nothing could ever be sent).
    pub fn new(config: OutboundConfig) -> OutboundRequests {
        assert!(
            config.in_flight_per_peer_max > 0,
            "at least one request must fit in flight"
        );
        OutboundRequests {
            limiter: RateLimiter::new(config.quotas.clone()),
            config,
            next_id: 0,
            peers: BTreeMap::new(),
            busy_until: BTreeMap::new(),
            counters: OutboundCounters::default(),
            stats: RequestStats::default(),
            last_now: Instant::ZERO,
            timed_out: VecDeque::new(),
        }
    }

    /// Lets us send requests of application protocol `name`, within `quota` per peer.
    pub fn register_application(
        &mut self,
        name: ProtocolName,
        quota: Quota,
    ) -> Result<(), QuotaError> {
        self.limiter.set_quota(ProtocolId::Application(name), quota)
    }

    /// Queues a request to `peer`, returning its id. `body` is uncompressed and
    /// must fit its protocol (it is checked here, so a bad one never leaves).
    pub fn send(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: ProtocolId,
        body: Vec<u8>,
    ) -> Result<RequestId, SendError> {
        self.advance(now);
        let chunks_max = response_chunks_max(&protocol, &body).map_err(SendError::InvalidBody)?;
        if self
            .limiter
            .allowed_at(now, &peer, &protocol, request_cost(chunks_max))
            .is_none()
        {
            // Only known protocols are counted: an unregistered application
            // name must not grow the stats.
            if self.limiter.allowed_at(now, &peer, &protocol, 0).is_some() {
                self.stats.record(protocol, RequestResult::NotSent, None);
            }
            return Err(SendError::OverQuota);
        }
        let requests = self.peers.entry(peer).or_default();
        if requests.queued.len() >= self.config.pending_per_peer_max {
            if requests.is_idle() {
                self.peers.remove(&peer);
            }
            self.stats.record(protocol, RequestResult::NotSent, None);
            return Err(SendError::QueueFull);
        }
        let id = RequestId(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .expect("2^64 requests take millennia");
        let queued = Queued {
            id,
            protocol,
            body,
            chunks_max,
        };
        if protocol == ProtocolId::Goodbye {
            requests.queued.push_front(queued);
        } else {
            requests.queued.push_back(queued);
        }
        self.counters.requests_queued += 1;
        Ok(id)
    }

    /// The next request ready to go out, within the in-flight limit and the
    /// peer's quota; its deadlines start now. Encode it and send it to the peer.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(PeerId, Request)> {
        self.advance(now);
        let in_flight_max = self.config.in_flight_per_peer_max;
        let first_chunk_timeout = self.config.first_chunk_timeout;
        let response_timeout = self.config.response_timeout;
        self.busy_until.retain(|_, until| *until > now);
        let mut transmit = None;
        for (&peer, requests) in self.peers.iter_mut() {
            requests.quota_retry_at = None;
            // Protocols held back in this scan: later requests of the same
            // protocol wait their turn behind them.
            let mut held: Vec<ProtocolId> = Vec::new();
            let mut chosen = None;
            for (index, queued) in requests.queued.iter().enumerate() {
                if queued.protocol == ProtocolId::Goodbye {
                    // One-way and the last word: no slot, no quota.
                    chosen = Some(index);
                    break;
                }
                if requests.in_flight.len() >= in_flight_max {
                    break;
                }
                if held.contains(&queued.protocol) {
                    continue;
                }
                if let Some(&until) = self.busy_until.get(&(peer, queued.protocol)) {
                    self.counters.requests_held_by_quota += 1;
                    requests.quota_retry_at =
                        Some(requests.quota_retry_at.map_or(until, |at| at.min(until)));
                    held.push(queued.protocol);
                    continue;
                }
                let cost = request_cost(queued.chunks_max);
                match self.limiter.check(now, peer, queued.protocol, cost) {
                    RateCheck::Allowed => {
                        chosen = Some(index);
                        break;
                    }
                    RateCheck::Limited { retry_after } | RateCheck::Busy { retry_after } => {
                        self.counters.requests_held_by_quota += 1;
                        let retry_at = now + retry_after;
                        requests.quota_retry_at = Some(
                            requests
                                .quota_retry_at
                                .map_or(retry_at, |at| at.min(retry_at)),
                        );
                        held.push(queued.protocol);
                    }
                    RateCheck::OverCapacity | RateCheck::NoQuota => {
                        unreachable!("send refuses requests the quotas can never allow")
                    }
                }
            }
            let Some(index) = chosen else {
                continue;
            };
            let queued = requests
                .queued
                .remove(index)
                .expect("index found by iterating the queue");
            if queued.protocol.expects_response() {
                requests.in_flight.insert(
                    queued.id,
                    InFlight {
                        protocol: queued.protocol,
                        sent_at: now,
                        chunks_max: queued.chunks_max,
                        chunks_received: 0,
                        first_chunk_deadline: now + first_chunk_timeout,
                        response_deadline: now + response_timeout,
                    },
                );
            }
            let request = Request {
                id: queued.id,
                protocol: queued.protocol,
                body: queued.body,
            };
            transmit = Some((peer, request, requests.is_idle()));
            break;
        }
        let (peer, request, idle) = transmit?;
        if idle {
            self.peers.remove(&peer);
        }
        self.counters.requests_sent += 1;
        Some((peer, request))
    }

    /// A response chunk from `peer`.
    pub fn handle_chunk(
        &mut self,
        now: Instant,
        peer: PeerId,
        chunk: ResponseChunk,
    ) -> ChunkOutcome {
        self.handle_chunk_ref(now, peer, chunk.as_ref())
    }

    /// [`OutboundRequests::handle_chunk`] for a chunk still in the bytes
    /// it came in: its payload is decompressed from there.
    pub fn handle_chunk_ref(
        &mut self,
        now: Instant,
        peer: PeerId,
        chunk: ResponseChunkRef<'_>,
    ) -> ChunkOutcome {
        self.advance(now);
        let id = chunk.id;
        let Some(request) = self.open_request(now, &peer, id) else {
            let reason = self.count_unexpected(id);
            return ChunkOutcome::Unexpected { id, reason };
        };
        let protocol = request.protocol;
        let outcome = if chunk.code.is_success() {
            if request.chunks_received >= request.chunks_max {
                ChunkOutcome::Violation {
                    id,
                    protocol,
                    violation: ResponseViolation::TooManyChunks {
                        chunks_max: request.chunks_max,
                    },
                }
            } else {
                match chunk.payload(protocol.response_bytes_max()) {
                    Ok(payload) => {
                        request.chunks_received += 1;
                        return ChunkOutcome::Chunk {
                            id,
                            protocol,
                            payload,
                        };
                    }
                    Err(error) => ChunkOutcome::Violation {
                        id,
                        protocol,
                        violation: ResponseViolation::Payload(error),
                    },
                }
            }
        } else {
            match chunk.error_message() {
                Ok(message) => ChunkOutcome::Error {
                    id,
                    protocol,
                    code: chunk.code,
                    message,
                },
                Err(error) => ChunkOutcome::Violation {
                    id,
                    protocol,
                    violation: ResponseViolation::Payload(error),
                },
            }
        };
        let took = now.saturating_duration_since(request.sent_at);
        match &outcome {
            ChunkOutcome::Error { code, message, .. } => {
                self.stats
                    .record(protocol, RequestResult::of_error(*code), Some(took));
                self.counters.responses_failed += 1;
                if *code == ResultCode::ResourceUnavailable && self.config.back_off_when_busy {
                    self.counters.busy_backoffs += 1;
                    let until = now + busy_backoff(message);
                    let entry = self.busy_until.entry((peer, protocol)).or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
            _ => {
                self.stats
                    .record(protocol, RequestResult::Violation, Some(took));
                self.counters.responses_violating += 1;
            }
        }
        self.close(&peer, id);
        outcome
    }

    /// A response end from `peer`.
    pub fn handle_end(&mut self, now: Instant, peer: PeerId, end: ResponseEnd) -> EndOutcome {
        self.advance(now);
        let id = end.id;
        let Some(request) = self.open_request(now, &peer, id) else {
            let reason = self.count_unexpected(id);
            return EndOutcome::Unexpected { id, reason };
        };
        let protocol = request.protocol;
        let outcome = EndOutcome::Completed {
            id,
            protocol,
            chunks: request.chunks_received,
        };
        let took = now.saturating_duration_since(request.sent_at);
        self.counters.responses_completed += 1;
        self.stats.record(protocol, RequestResult::Ok, Some(took));
        self.close(&peer, id);
        outcome
    }

    /// The next request [`Machine::handle_timeout`] failed, in peer then id order, until `None`.
    pub fn poll_timed_out(&mut self) -> Option<TimedOut> {
        self.timed_out.pop_front()
    }

    /// Fails every request whose deadline is at or before `now`, in peer then id order.
    fn expire_due(&mut self, now: Instant) -> Vec<TimedOut> {
        self.advance(now);
        let mut expired = Vec::new();
        for (&peer, requests) in &self.peers {
            for (&id, request) in &requests.in_flight {
                if request.deadline() <= now {
                    let kind =
                        if request.chunks_received == 0 && request.first_chunk_deadline <= now {
                            TimeoutKind::FirstChunk
                        } else {
                            TimeoutKind::Response
                        };
                    expired.push((peer, id, kind, request.protocol, request.sent_at));
                }
            }
        }
        for &(peer, id, kind, protocol, _) in &expired {
            self.stats.record(protocol, RequestResult::TimedOut, None);
            match kind {
                TimeoutKind::FirstChunk => self.counters.timeouts_first_chunk += 1,
                TimeoutKind::Response => self.counters.timeouts_response += 1,
            }
            self.close(&peer, id);
        }
        expired
            .into_iter()
            .map(|(peer, id, kind, _, sent_at)| TimedOut {
                peer,
                id,
                kind,
                sent_at,
            })
            .collect()
    }

    /// The earliest instant at which [`Machine::handle_timeout`] has
    /// something to do or a quota-held request may go out.
    fn earliest_deadline(&self) -> Option<Instant> {
        let in_flight_max = self.config.in_flight_per_peer_max;
        self.peers
            .values()
            .flat_map(|requests| {
                let deadlines = requests.in_flight.values().map(InFlight::deadline);
                let retry = requests.quota_retry_at.filter(|_| {
                    !requests.queued.is_empty() && requests.in_flight.len() < in_flight_max
                });
                deadlines.chain(retry)
            })
            .min()
    }

    /// `peer` is gone: every request queued for it or in flight fails.
    /// Returns their ids in increasing order.
    pub fn handle_peer_disconnected(&mut self, peer: &PeerId) -> Vec<RequestId> {
        self.limiter.remove_peer(peer);
        self.busy_until.retain(|(busy, _), _| busy != peer);
        let Some(requests) = self.peers.remove(peer) else {
            return Vec::new();
        };
        let mut ids: Vec<RequestId> = requests
            .in_flight
            .keys()
            .copied()
            .chain(requests.queued.iter().map(|queued| queued.id))
            .collect();
        ids.sort_unstable();
        let protocols = requests.in_flight.values().map(|request| request.protocol);
        let protocols = protocols.chain(requests.queued.iter().map(|queued| queued.protocol));
        for protocol in protocols {
            self.stats
                .record(protocol, RequestResult::Disconnected, None);
        }
        self.counters.requests_disconnected += ids.len() as u64;
        ids
    }

    /// Requests in flight to `peer`.
    pub fn in_flight(&self, peer: &PeerId) -> usize {
        self.peers
            .get(peer)
            .map_or(0, |requests| requests.in_flight.len())
    }

    /// Requests queued for `peer`.
    pub fn queued(&self, peer: &PeerId) -> usize {
        self.peers
            .get(peer)
            .map_or(0, |requests| requests.queued.len())
    }

    /// Peers with requests queued or in flight.
    pub fn active_peers(&self) -> usize {
        self.peers.len()
    }

    /// Event counts.
    pub fn counters(&self) -> &OutboundCounters {
        &self.counters
    }

    /// Results and latencies by protocol.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    /// The request `id` open with `peer`, unless its deadline has passed.
    fn open_request(
        &mut self,
        now: Instant,
        peer: &PeerId,
        id: RequestId,
    ) -> Option<&mut InFlight> {
        self.peers
            .get_mut(peer)?
            .in_flight
            .get_mut(&id)
            .filter(|request| request.deadline() > now)
    }

    fn count_unexpected(&mut self, id: RequestId) -> Unexpected {
        if id.0 < self.next_id {
            self.counters.responses_late += 1;
            Unexpected::Late
        } else {
            self.counters.responses_unknown += 1;
            Unexpected::Unknown
        }
    }

    fn close(&mut self, peer: &PeerId, id: RequestId) {
        let requests = self
            .peers
            .get_mut(peer)
            .expect("closing a request of a known peer");
        requests
            .in_flight
            .remove(&id)
            .expect("closing an open request");
        if requests.is_idle() {
            self.peers.remove(peer);
        }
    }
}

impl Machine for OutboundRequests {
    fn handle_timeout(&mut self, now: Instant) {
        let expired = self.expire_due(now);
        self.timed_out.extend(expired);
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
    fn timeouts(
        machine: &mut OutboundRequests,
        now: Instant,
    ) -> Vec<(PeerId, RequestId, TimeoutKind)> {
        machine.handle_timeout(now);
        std::iter::from_fn(|| machine.poll_timed_out())
            .map(|timed_out| (timed_out.peer, timed_out.id, timed_out.kind))
            .collect()
    }
    use crate::reqresp::bodies::{
        BlocksByRangeRequest, BlocksByRootRequest, Body, Goodbye, Ping, Status,
    };
    use crate::types::GoodbyeReason;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn secs(seconds: u64) -> Instant {
        Instant::from_micros(seconds * 1_000_000)
    }

    fn millis(millis: u64) -> Instant {
        Instant::from_micros(millis * 1_000)
    }

    fn status_body() -> Vec<u8> {
        Status {
            network_id: 1,
            finalized_root: Root([0; 32]),
            finalized_slot: 0,
            head_root: Root([1; 32]),
            head_slot: 3,
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

    /// A tracker without quotas in the way, for tests of everything else.
    fn unlimited() -> OutboundRequests {
        let mut config = OutboundConfig::default();
        for quota in config.quotas.quotas.values_mut() {
            *quota = Quota::new(1_000_000, Duration::from_secs(1));
        }
        OutboundRequests::new(config)
    }

    fn drain(tracker: &mut OutboundRequests, now: Instant) -> Vec<(PeerId, Request)> {
        std::iter::from_fn(|| tracker.poll_transmit(now)).collect()
    }

    #[test]
    fn in_flight_is_capped_and_the_rest_queue_in_order() {
        let mut tracker = unlimited();
        let a = peer(1);
        let ids: Vec<RequestId> = (0..10)
            .map(|_| {
                tracker
                    .send(secs(0), a, ProtocolId::BlocksByRange, range(1))
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, (0..10).map(RequestId).collect::<Vec<_>>());
        let sent = drain(&mut tracker, secs(0));
        assert_eq!(
            sent.iter()
                .map(|(_, request)| request.id)
                .collect::<Vec<_>>(),
            ids[..4]
        );
        assert_eq!((tracker.in_flight(&a), tracker.queued(&a)), (4, 6));
        // Finishing one frees exactly one slot, taken by the oldest queued.
        assert!(matches!(
            tracker.handle_end(secs(1), a, ResponseEnd { id: ids[1] }),
            EndOutcome::Completed { chunks: 0, .. }
        ));
        let sent = drain(&mut tracker, secs(1));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.id, ids[4]);
        assert_eq!(sent[0].1.body, range(1));
    }

    #[test]
    fn queue_is_bounded_per_peer() {
        let mut tracker = unlimited();
        for _ in 0..PENDING_REQUESTS_PER_PEER_MAX {
            tracker
                .send(secs(0), peer(1), ProtocolId::Metadata, vec![])
                .unwrap();
        }
        assert_eq!(
            tracker.send(secs(0), peer(1), ProtocolId::Metadata, vec![]),
            Err(SendError::QueueFull)
        );
        // Another peer has its own queue.
        assert!(tracker
            .send(secs(0), peer(2), ProtocolId::Metadata, vec![])
            .is_ok());
        // Moving requests in flight makes room.
        drain(&mut tracker, secs(0));
        assert!(tracker
            .send(secs(0), peer(1), ProtocolId::Metadata, vec![])
            .is_ok());
    }

    #[test]
    fn invalid_bodies_and_impossible_quotas_are_refused_at_send() {
        let mut tracker = OutboundRequests::new(OutboundConfig::default());
        assert!(matches!(
            tracker.send(secs(0), peer(1), ProtocolId::Ping, vec![1, 2, 3]),
            Err(SendError::InvalidBody(_))
        ));
        assert!(matches!(
            tracker.send(secs(0), peer(1), ProtocolId::BlocksByRange, vec![0; 15]),
            Err(SendError::InvalidBody(_))
        ));
        let echo = ProtocolName::new("/app/echo/1").unwrap();
        assert_eq!(
            tracker.send(
                secs(0),
                peer(1),
                ProtocolId::Application(echo),
                b"hi".to_vec()
            ),
            Err(SendError::OverQuota)
        );
        tracker
            .register_application(echo, Quota::new(10, Duration::from_secs(1)))
            .unwrap();
        assert!(tracker
            .send(
                secs(0),
                peer(1),
                ProtocolId::Application(echo),
                b"hi".to_vec()
            )
            .is_ok());
        assert_eq!(tracker.counters().requests_queued, 1);
        assert_eq!(tracker.active_peers(), 1);
    }

    #[test]
    fn chunks_then_end_complete_a_request() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(secs(0), a, ProtocolId::BlocksByRange, range(2))
            .unwrap();
        drain(&mut tracker, secs(0));
        for block in [b"block one".as_slice(), b"block two"] {
            assert_eq!(
                tracker.handle_chunk(secs(1), a, ResponseChunk::success(id, block)),
                ChunkOutcome::Chunk {
                    id,
                    protocol: ProtocolId::BlocksByRange,
                    payload: block.to_vec()
                }
            );
        }
        assert_eq!(
            tracker.handle_end(secs(2), a, ResponseEnd { id }),
            EndOutcome::Completed {
                id,
                protocol: ProtocolId::BlocksByRange,
                chunks: 2
            }
        );
        assert_eq!(tracker.active_peers(), 0, "an idle peer is forgotten");
        assert_eq!(tracker.next_deadline(), None);
        // The end again: late.
        assert_eq!(
            tracker.handle_end(secs(2), a, ResponseEnd { id }),
            EndOutcome::Unexpected {
                id,
                reason: Unexpected::Late
            }
        );
        assert_eq!(tracker.counters().responses_completed, 1);
        assert_eq!(tracker.counters().responses_late, 1);
    }

    #[test]
    fn too_many_chunks_is_a_violation() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(secs(0), a, ProtocolId::Status, status_body())
            .unwrap();
        drain(&mut tracker, secs(0));
        assert!(matches!(
            tracker.handle_chunk(secs(0), a, ResponseChunk::success(id, &status_body())),
            ChunkOutcome::Chunk { .. }
        ));
        assert_eq!(
            tracker.handle_chunk(secs(0), a, ResponseChunk::success(id, &status_body())),
            ChunkOutcome::Violation {
                id,
                protocol: ProtocolId::Status,
                violation: ResponseViolation::TooManyChunks { chunks_max: 1 }
            }
        );
        assert_eq!(tracker.in_flight(&a), 0);
        assert_eq!(tracker.counters().responses_violating, 1);
        // BlocksByRoot allows one chunk per root.
        let roots = BlocksByRootRequest {
            roots: vec![Root([1; 32]), Root([2; 32])],
        }
        .encode();
        let id = tracker
            .send(secs(0), a, ProtocolId::BlocksByRoot, roots)
            .unwrap();
        drain(&mut tracker, secs(0));
        for _ in 0..2 {
            assert!(matches!(
                tracker.handle_chunk(secs(0), a, ResponseChunk::success(id, b"b")),
                ChunkOutcome::Chunk { .. }
            ));
        }
        assert!(matches!(
            tracker.handle_chunk(secs(0), a, ResponseChunk::success(id, b"b")),
            ChunkOutcome::Violation {
                violation: ResponseViolation::TooManyChunks { chunks_max: 2 },
                ..
            }
        ));
    }

    #[test]
    fn oversize_payload_for_the_protocol_is_a_violation() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(
                secs(0),
                a,
                ProtocolId::Ping,
                Ping { metadata_seq: 1 }.encode(),
            )
            .unwrap();
        drain(&mut tracker, secs(0));
        // Nine bytes where a Ping answer has eight: refused before decompressing.
        let outcome = tracker.handle_chunk(secs(0), a, ResponseChunk::success(id, &[0; 9]));
        assert!(matches!(
            outcome,
            ChunkOutcome::Violation {
                violation: ResponseViolation::Payload(ReqRespDecodeError::TooLarge {
                    length: 9,
                    ..
                }),
                ..
            }
        ));
    }

    #[test]
    fn error_chunks_end_the_request_with_their_code() {
        let mut tracker = unlimited();
        let a = peer(1);
        let first = tracker
            .send(secs(0), a, ProtocolId::Metadata, vec![])
            .unwrap();
        let second = tracker
            .send(secs(0), a, ProtocolId::Metadata, vec![])
            .unwrap();
        drain(&mut tracker, secs(0));
        let chunk = ResponseChunk::error(first, ResultCode::ResourceUnavailable, "rate limited");
        assert_eq!(
            tracker.handle_chunk(secs(0), a, chunk),
            ChunkOutcome::Error {
                id: first,
                protocol: ProtocolId::Metadata,
                code: ResultCode::ResourceUnavailable,
                message: "rate limited".into()
            }
        );
        // A reserved code is an error too.
        let chunk = ResponseChunk::error(second, ResultCode::Reserved(42), "");
        assert!(matches!(
            tracker.handle_chunk(secs(0), a, chunk),
            ChunkOutcome::Error {
                code: ResultCode::Reserved(42),
                ..
            }
        ));
        assert_eq!(tracker.counters().responses_failed, 2);
        assert_eq!(tracker.in_flight(&a), 0);
    }

    #[test]
    fn unknown_ids_and_other_peers_ids_are_discarded() {
        let mut tracker = unlimited();
        let (a, b) = (peer(1), peer(2));
        let id = tracker
            .send(secs(0), a, ProtocolId::Metadata, vec![])
            .unwrap();
        drain(&mut tracker, secs(0));
        // Peer b answers a's request: late (issued, but not open with b).
        assert_eq!(
            tracker.handle_chunk(secs(0), b, ResponseChunk::success(id, b"x")),
            ChunkOutcome::Unexpected {
                id,
                reason: Unexpected::Late
            }
        );
        let never = RequestId(77);
        assert_eq!(
            tracker.handle_end(secs(0), a, ResponseEnd { id: never }),
            EndOutcome::Unexpected {
                id: never,
                reason: Unexpected::Unknown
            }
        );
        assert_eq!(tracker.in_flight(&a), 1, "a's request is untouched");
        assert_eq!(tracker.counters().responses_late, 1);
        assert_eq!(tracker.counters().responses_unknown, 1);
    }

    #[test]
    fn first_chunk_deadline() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(secs(0), a, ProtocolId::Metadata, vec![])
            .unwrap();
        assert_eq!(
            tracker.next_deadline(),
            None,
            "queued requests have no deadline yet"
        );
        drain(&mut tracker, secs(1));
        assert_eq!(tracker.next_deadline(), Some(secs(6)));
        assert!(timeouts(&mut tracker, millis(5_999)).is_empty());
        assert_eq!(
            timeouts(&mut tracker, secs(6)),
            vec![(a, id, TimeoutKind::FirstChunk)]
        );
        assert!(
            timeouts(&mut tracker, secs(6)).is_empty(),
            "repeated timeouts are no-ops"
        );
        assert_eq!(tracker.counters().timeouts_first_chunk, 1);
        // The answer after the deadline is late.
        assert!(matches!(
            tracker.handle_chunk(secs(7), a, ResponseChunk::success(id, b"x")),
            ChunkOutcome::Unexpected {
                reason: Unexpected::Late,
                ..
            }
        ));
    }

    #[test]
    fn response_deadline_after_the_first_chunk() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(secs(0), a, ProtocolId::BlocksByRange, range(64))
            .unwrap();
        drain(&mut tracker, secs(0));
        assert!(matches!(
            tracker.handle_chunk(secs(4), a, ResponseChunk::success(id, b"x")),
            ChunkOutcome::Chunk { .. }
        ));
        assert_eq!(tracker.next_deadline(), Some(secs(10)));
        assert!(
            timeouts(&mut tracker, secs(6)).is_empty(),
            "the first chunk came in time"
        );
        assert_eq!(
            timeouts(&mut tracker, secs(10)),
            vec![(a, id, TimeoutKind::Response)]
        );
        assert_eq!(tracker.counters().timeouts_response, 1);
    }

    #[test]
    fn a_message_at_the_deadline_is_late_even_before_on_timeout() {
        let mut tracker = unlimited();
        let a = peer(1);
        let id = tracker
            .send(secs(0), a, ProtocolId::Metadata, vec![])
            .unwrap();
        drain(&mut tracker, secs(0));
        assert!(matches!(
            tracker.handle_end(secs(5), a, ResponseEnd { id }),
            EndOutcome::Unexpected {
                reason: Unexpected::Late,
                ..
            }
        ));
        assert_eq!(
            timeouts(&mut tracker, secs(5)),
            vec![(a, id, TimeoutKind::FirstChunk)]
        );
    }

    #[test]
    fn timeouts_free_slots_for_queued_requests() {
        let mut tracker = unlimited();
        let a = peer(1);
        for _ in 0..5 {
            tracker
                .send(secs(0), a, ProtocolId::Metadata, vec![])
                .unwrap();
        }
        assert_eq!(drain(&mut tracker, secs(0)).len(), 4);
        assert_eq!(timeouts(&mut tracker, secs(5)).len(), 4);
        let sent = drain(&mut tracker, secs(5));
        assert_eq!(sent.len(), 1);
        assert_eq!(tracker.next_deadline(), Some(secs(10)));
    }

    #[test]
    fn disconnect_fails_queued_and_in_flight_requests() {
        let mut tracker = unlimited();
        let (a, b) = (peer(1), peer(2));
        for _ in 0..6 {
            tracker
                .send(secs(0), a, ProtocolId::Metadata, vec![])
                .unwrap();
        }
        let other = tracker
            .send(secs(0), b, ProtocolId::Metadata, vec![])
            .unwrap();
        drain(&mut tracker, secs(0));
        assert_eq!(
            tracker.handle_peer_disconnected(&a),
            (0..6).map(RequestId).collect::<Vec<_>>()
        );
        assert_eq!(tracker.handle_peer_disconnected(&a), vec![]);
        assert_eq!((tracker.in_flight(&a), tracker.queued(&a)), (0, 0));
        assert_eq!(tracker.in_flight(&b), 1);
        assert_eq!(tracker.counters().requests_disconnected, 6);
        assert!(matches!(
            tracker.handle_chunk(secs(1), a, ResponseChunk::success(RequestId(0), b"x")),
            ChunkOutcome::Unexpected {
                reason: Unexpected::Late,
                ..
            }
        ));
        assert!(matches!(
            tracker.handle_end(secs(1), b, ResponseEnd { id: other }),
            EndOutcome::Completed { .. }
        ));
    }

    /// A requester that keeps retrying into a busy peer's shared budget
    /// only adds to the crowd: a `ResourceUnavailable` answer holds back that
    /// protocol to that peer for the time the answer names.
    #[test]
    fn a_busy_answer_holds_back_that_protocol_to_that_peer_for_the_time_it_names() {
        let mut tracker = unlimited();
        let (a, b) = (peer(1), peer(2));
        let by_range = ProtocolId::BlocksByRange;
        let first = tracker.send(secs(0), a, by_range, range(8)).unwrap();
        drain(&mut tracker, secs(0));
        let busy = ResponseChunk::error(
            first,
            ResultCode::ResourceUnavailable,
            "busy, retry after 1500 ms",
        );
        assert!(matches!(
            tracker.handle_chunk(secs(0), a, busy),
            ChunkOutcome::Error { .. }
        ));
        let again = tracker.send(secs(0), a, by_range, range(8)).unwrap();
        let status = tracker
            .send(secs(0), a, ProtocolId::Status, status_body())
            .unwrap();
        let other = tracker.send(secs(0), b, by_range, range(8)).unwrap();
        let sent: Vec<RequestId> = drain(&mut tracker, secs(0))
            .into_iter()
            .map(|(_, request)| request.id)
            .collect();
        assert_eq!(
            sent,
            vec![status, other],
            "only the busy protocol to the busy peer waits"
        );
        assert_eq!(tracker.next_deadline(), Some(millis(1_500)));
        assert!(drain(&mut tracker, millis(1_499)).is_empty());
        let sent = drain(&mut tracker, millis(1_500));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.id, again);
        assert_eq!(tracker.counters().busy_backoffs, 1);
    }

    #[test]
    fn a_busy_answer_names_a_bounded_wait() {
        assert_eq!(
            busy_backoff("busy, retry after 250 ms"),
            Duration::from_millis(250)
        );
        assert_eq!(
            busy_backoff("rate limited, retry after 5000 ms"),
            Duration::from_secs(5)
        );
        assert_eq!(
            busy_backoff("retry after 99999999999999 ms"),
            REFUSED_BACKOFF_MAX
        );
        assert_eq!(
            busy_backoff("retry after 184467440737095516150 ms"),
            REFUSED_BACKOFF_DEFAULT
        );
        assert_eq!(
            busy_backoff("too many open requests"),
            REFUSED_BACKOFF_DEFAULT
        );
        assert_eq!(busy_backoff("retry after 12 s"), REFUSED_BACKOFF_DEFAULT);
        assert_eq!(busy_backoff("retry after "), REFUSED_BACKOFF_DEFAULT);
    }

    #[test]
    fn goodbye_jumps_the_queue_and_is_not_tracked() {
        let mut tracker = unlimited();
        let a = peer(1);
        for _ in 0..6 {
            tracker
                .send(secs(0), a, ProtocolId::Metadata, vec![])
                .unwrap();
        }
        drain(&mut tracker, secs(0));
        let body = Goodbye {
            reason: GoodbyeReason::ClientShutdown,
        }
        .encode();
        let id = tracker.send(secs(0), a, ProtocolId::Goodbye, body).unwrap();
        let sent = drain(&mut tracker, secs(0));
        assert_eq!(sent.len(), 1, "no slot needed");
        assert_eq!(sent[0].1.id, id);
        assert_eq!(sent[0].1.protocol, ProtocolId::Goodbye);
        assert_eq!(tracker.in_flight(&a), 4);
        assert_eq!(tracker.queued(&a), 2);
    }

    #[test]
    fn quotas_hold_requests_back_until_they_refill() {
        let mut tracker = OutboundRequests::new(OutboundConfig::default());
        let a = peer(1);
        // Ping: 2 per 10 s. Three pings: two go now, one waits 5 s.
        for seq in 0..3 {
            tracker
                .send(
                    secs(0),
                    a,
                    ProtocolId::Ping,
                    Ping { metadata_seq: seq }.encode(),
                )
                .unwrap();
        }
        // And a status queued behind them is not held back by Ping's quota.
        let status = tracker
            .send(secs(0), a, ProtocolId::Status, status_body())
            .unwrap();
        let sent = drain(&mut tracker, secs(0));
        let ids: Vec<u64> = sent.iter().map(|(_, request)| request.id.0).collect();
        assert_eq!(ids, [0, 1, status.0]);
        assert!(tracker.counters().requests_held_by_quota >= 1);
        // The held ping's retry instant is the next deadline (before the 5 s first-chunk ones).
        for id in [0, 1, status.0] {
            tracker.handle_end(secs(1), a, ResponseEnd { id: RequestId(id) });
        }
        drain(&mut tracker, secs(1));
        assert_eq!(tracker.next_deadline(), Some(secs(5)));
        assert!(drain(&mut tracker, millis(4_999)).is_empty());
        let sent = drain(&mut tracker, secs(5));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.id, RequestId(2));
    }

    #[test]
    fn quota_keeps_order_within_a_protocol() {
        let mut tracker = OutboundRequests::new(OutboundConfig::default());
        let a = peer(1);
        let now = secs(0);
        // Spend the whole BlocksByRange bucket: 16 requests of 64 = 1024 blocks.
        for _ in 0..16 {
            tracker
                .send(now, a, ProtocolId::BlocksByRange, range(64))
                .unwrap();
        }
        let mut total = 0;
        loop {
            let batch = drain(&mut tracker, now);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= REQUESTS_IN_FLIGHT_PER_PEER_MAX);
            for (_, request) in &batch {
                tracker.handle_end(now, a, ResponseEnd { id: request.id });
            }
            total += batch.len();
        }
        assert_eq!(total, 16);
        // A big request is held back; a small one of the same protocol does not overtake it.
        let big = tracker
            .send(now, a, ProtocolId::BlocksByRange, range(64))
            .unwrap();
        let small = tracker
            .send(now, a, ProtocolId::BlocksByRange, range(1))
            .unwrap();
        assert!(drain(&mut tracker, now).is_empty());
        // 64 blocks refill in 625 ms; one more in 9.766 ms after that.
        assert_eq!(
            tracker.next_deadline(),
            Some(now + Duration::from_millis(625))
        );
        let sent = drain(&mut tracker, now + Duration::from_millis(625));
        assert_eq!(sent.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), [big]);
        assert!(drain(&mut tracker, now + Duration::from_millis(634)).is_empty());
        let sent = drain(&mut tracker, now + Duration::from_millis(635));
        assert_eq!(sent.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), [small]);
    }

    #[test]
    fn disconnect_forgets_quota_state_with_the_peer() {
        let mut tracker = OutboundRequests::new(OutboundConfig::default());
        let a = peer(1);
        let ping = || Ping { metadata_seq: 0 }.encode();
        for _ in 0..3 {
            tracker.send(secs(0), a, ProtocolId::Ping, ping()).unwrap();
        }
        assert_eq!(
            drain(&mut tracker, secs(0)).len(),
            2,
            "Ping allows 2 per 10 s"
        );
        assert_eq!(tracker.handle_peer_disconnected(&a).len(), 3);
        // A new connection of the same peer starts with a full bucket.
        for _ in 0..2 {
            tracker.send(secs(1), a, ProtocolId::Ping, ping()).unwrap();
        }
        assert_eq!(drain(&mut tracker, secs(1)).len(), 2);
    }
}
