//! Our requests' results and latencies by protocol, for metrics.
//!
//! # Design
//! Latency is kept as a fixed-bucket histogram here rather than as a stream
//! of samples for the driver to drain: it costs a fixed few hundred bytes per
//! protocol however many requests finish, needs no queue with an eviction
//! policy, and a driver that reads it late (or never) loses nothing.
//! Durations are virtual-time differences (`now` at the end minus `now` when
//! the request left `poll_transmit`), so the figures are deterministic.
//!
//! # Limits
//! One entry per protocol we sent a request of: the built-ins plus the
//! application protocols with a quota, at most
//! [`super::limits::APPLICATION_PROTOCOLS_MAX`] (a request of any other
//! protocol is refused at `send` and not counted).

use std::collections::BTreeMap;

use super::wire::{ProtocolId, ResultCode};
use crate::time::Duration;

/// Upper bounds (inclusive) of the latency buckets, in microseconds: 5 ms to
/// 10 s, about ×2–2.5 apart. A response cannot take longer than
/// `RESPONSE_TIMEOUT` (10 s), so the last bound holds every answered request.
pub const REQUEST_DURATION_BUCKET_BOUNDS_MICROS: [u64; 12] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    7_500_000, 10_000_000,
];

/// How one of our requests ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum RequestResult {
    /// Answered: the end marker arrived (after zero or more success chunks).
    Ok,
    /// Answered with an `InvalidRequest` error chunk.
    InvalidRequest,
    /// Answered with a `ServerError` error chunk.
    ServerError,
    /// Answered with a `ResourceUnavailable` error chunk (the peer was busy).
    ResourceUnavailable,
    /// Answered with an error chunk of a reserved code.
    OtherError,
    /// The answer broke the protocol (too many chunks, bad payload).
    Violation,
    /// Nothing, or not all of it, came back in time.
    TimedOut,
    /// The peer went away while the request was queued or in flight.
    Disconnected,
    /// Refused by our own limits before it left: the peer's queue was full,
    /// or the request costs more than our quota for that peer ever allows.
    NotSent,
}

impl RequestResult {
    /// Every result, in label order.
    pub const ALL: [RequestResult; 9] = [
        RequestResult::Ok,
        RequestResult::InvalidRequest,
        RequestResult::ServerError,
        RequestResult::ResourceUnavailable,
        RequestResult::OtherError,
        RequestResult::Violation,
        RequestResult::TimedOut,
        RequestResult::Disconnected,
        RequestResult::NotSent,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::InvalidRequest => "invalid_request",
            RequestResult::ServerError => "server_error",
            RequestResult::ResourceUnavailable => "resource_unavailable",
            RequestResult::OtherError => "other_error",
            RequestResult::Violation => "violation",
            RequestResult::TimedOut => "timed_out",
            RequestResult::Disconnected => "disconnected",
            RequestResult::NotSent => "not_sent",
        }
    }

    /// The result of an error chunk with `code`.
    pub fn of_error(code: ResultCode) -> RequestResult {
        match code {
            ResultCode::InvalidRequest => RequestResult::InvalidRequest,
            ResultCode::ServerError => RequestResult::ServerError,
            ResultCode::ResourceUnavailable => RequestResult::ResourceUnavailable,
            _ => RequestResult::OtherError,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A fixed-bucket histogram of durations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Observations at or below each bound of
    /// [`REQUEST_DURATION_BUCKET_BOUNDS_MICROS`] (not cumulative: each
    /// observation is in the first bucket that holds it).
    pub buckets: [u64; REQUEST_DURATION_BUCKET_BOUNDS_MICROS.len()],
    /// Observations above the last bound.
    pub overflow: u64,
    /// Observations.
    pub count: u64,
    /// Their sum, in microseconds (saturating).
    pub sum_micros: u64,
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        match REQUEST_DURATION_BUCKET_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
        {
            Some(index) => self.buckets[index] += 1,
            None => self.overflow += 1,
        }
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }
}

/// Our requests of one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolRequestStats {
    /// Requests ended, by [`RequestResult`] (index: its position in [`RequestResult::ALL`]).
    pub results: [u64; RequestResult::ALL.len()],
    /// From leaving `poll_transmit` to the message that ended the request,
    /// for every request that was answered (ok, an error chunk, or a
    /// violation); timed-out and disconnected ones are not in it.
    pub duration: DurationHistogram,
}

impl ProtocolRequestStats {
    /// Requests ended with `result`.
    pub fn count(&self, result: RequestResult) -> u64 {
        self.results[result.index()]
    }
}

/// Our requests by protocol. Goodbyes are one-way and not in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Per protocol, in protocol order.
    pub protocols: BTreeMap<ProtocolId, ProtocolRequestStats>,
}

impl RequestStats {
    /// A request of `protocol` ended with `result`; `took` for answered ones.
    pub(crate) fn record(
        &mut self,
        protocol: ProtocolId,
        result: RequestResult,
        took: Option<Duration>,
    ) {
        if protocol == ProtocolId::Goodbye {
            return;
        }
        let stats = self.protocols.entry(protocol).or_default();
        stats.results[result.index()] += 1;
        if let Some(took) = took {
            stats.duration.observe(took);
        }
    }

    /// The stats of `protocol`, if a request of it ended.
    pub fn protocol(&self, protocol: &ProtocolId) -> Option<&ProtocolRequestStats> {
        self.protocols.get(protocol)
    }
}

/// How a peer's request to us ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum ServedResult {
    /// Admitted and answered by its handler (chunks and an end, or an error chunk).
    Answered,
    /// Admitted, but its handler did not answer before the answer deadline.
    Expired,
    /// Admitted, but the peer went away before it was answered.
    Disconnected,
    /// Refused: over the peer's own quota, or more than it can ever allow.
    RateLimited,
    /// Refused: our shared serving budget, or the peer's fair share of it, was spent.
    OverBudget,
    /// Refused: the peer had too many requests open with us.
    TooManyOpen,
    /// Refused: its body does not fit the protocol.
    Invalid,
}

impl ServedResult {
    /// Every result, in label order.
    pub const ALL: [ServedResult; 7] = [
        ServedResult::Answered,
        ServedResult::Expired,
        ServedResult::Disconnected,
        ServedResult::RateLimited,
        ServedResult::OverBudget,
        ServedResult::TooManyOpen,
        ServedResult::Invalid,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServedResult::Answered => "answered",
            ServedResult::Expired => "expired",
            ServedResult::Disconnected => "disconnected",
            ServedResult::RateLimited => "rate_limited",
            ServedResult::OverBudget => "over_budget",
            ServedResult::TooManyOpen => "too_many_open",
            ServedResult::Invalid => "invalid",
        }
    }
}

/// Peers' requests to us by protocol and [`ServedResult`] (index: its
/// position in [`ServedResult::ALL`]). Only protocols we serve are keyed:
/// the built-ins and registered application protocols (at most
/// [`super::limits::APPLICATION_PROTOCOLS_MAX`]); requests of other
/// protocols, or whose protocol could not be read, are only in the totals.
/// Goodbyes are not requests here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedStats {
    /// Per protocol, in protocol order.
    pub protocols: BTreeMap<ProtocolId, [u64; ServedResult::ALL.len()]>,
}

impl ServedStats {
    /// A request of `protocol` ended with `result`.
    pub(crate) fn record(&mut self, protocol: ProtocolId, result: ServedResult) {
        self.protocols.entry(protocol).or_default()[result as usize] += 1;
    }

    /// Requests of `protocol` that ended with `result`.
    pub fn count(&self, protocol: &ProtocolId, result: ServedResult) -> u64 {
        self.protocols
            .get(protocol)
            .map_or(0, |counts| counts[result as usize])
    }
}
