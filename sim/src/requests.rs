//! Request latency, measured from outside the nodes.
//!
//! # Design
//! The simulator sees every `Command::Request` it delivers and every
//! `Response` or `RequestFailed` notification a node emits, each at an exact
//! virtual instant. [`RequestLog`] pairs them by `(node, tag)` and keeps, for
//! each finished request, who asked whom, how long it took and how it ended.
//! Latency is the application's view: from the command to the outcome,
//! including any time the request waited in the requester's own queue
//! (in-flight cap, outbound quotas) and any timeout.
//!
//! Percentiles are nearest-rank over exact microsecond latencies, so the same
//! run gives the same figure on every machine.
//!
//! # Limits
//! At most [`REQUESTS_OPEN_MAX`] open requests and [`REQUEST_RECORDS_MAX`]
//! finished ones are kept; past either, requests are counted in
//! [`RequestLog::dropped`] and left out of the figures (a scenario that hits
//! the bound is far larger than any we run).

use std::collections::BTreeMap;

use meshsync_core::io::RequestError;
use meshsync_core::reqresp::ProtocolId;
use meshsync_core::{Duration, Instant, PeerId};

use crate::types::NodeIndex;

/// Requests issued and not yet finished, over all nodes.
pub const REQUESTS_OPEN_MAX: usize = 1 << 20;
/// Finished requests kept for the figures.
pub const REQUEST_RECORDS_MAX: usize = 1 << 22;

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A `Response` with this many chunks.
    Response {
        /// Success chunks received.
        chunks: usize,
    },
    /// A `RequestFailed`.
    Failed(RequestError),
}

impl RequestOutcome {
    /// Whether it ended in a response.
    pub fn is_response(&self) -> bool {
        matches!(self, RequestOutcome::Response { .. })
    }
}

/// One finished request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The node that asked.
    pub from: NodeIndex,
    /// The peer asked.
    pub peer: PeerId,
    /// The protocol.
    pub protocol: ProtocolId,
    /// The requester's tag.
    pub tag: u64,
    /// When the command reached the requester.
    pub issued_at: Instant,
    /// When the outcome came out of the requester.
    pub finished_at: Instant,
    /// How it ended.
    pub outcome: RequestOutcome,
}

impl RequestRecord {
    /// From command to outcome.
    pub fn latency(&self) -> Duration {
        self.finished_at.saturating_duration_since(self.issued_at)
    }
}

#[derive(Clone, Copy, Debug)]
struct Open {
    peer: PeerId,
    protocol: ProtocolId,
    issued_at: Instant,
}

/// Requests issued through the simulator, paired with their outcomes.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    open: BTreeMap<(NodeIndex, u64), Open>,
    finished: Vec<RequestRecord>,
    dropped: u64,
}

impl RequestLog {
    /// An empty log.
    pub fn new() -> RequestLog {
        RequestLog::default()
    }

    /// `from` was given a request tagged `tag` at `at`. Returns false if
    /// that tag was already open at `from` (the earlier one is forgotten).
    pub fn issued(
        &mut self,
        from: NodeIndex,
        tag: u64,
        peer: PeerId,
        protocol: ProtocolId,
        at: Instant,
    ) -> bool {
        let open = Open {
            peer,
            protocol,
            issued_at: at,
        };
        if self.open.len() >= REQUESTS_OPEN_MAX && !self.open.contains_key(&(from, tag)) {
            self.dropped += 1;
            return true;
        }
        self.open.insert((from, tag), open).is_none()
    }

    /// `from` reported the outcome of request `tag` at `at`. Returns the
    /// finished record, or `None` if no such request was open (a tag the
    /// simulator never saw, or one dropped by the bounds).
    pub fn finished(
        &mut self,
        from: NodeIndex,
        tag: u64,
        at: Instant,
        outcome: RequestOutcome,
    ) -> Option<&RequestRecord> {
        let open = self.open.remove(&(from, tag))?;
        if self.finished.len() >= REQUEST_RECORDS_MAX {
            self.dropped += 1;
            return None;
        }
        self.finished.push(RequestRecord {
            from,
            peer: open.peer,
            protocol: open.protocol,
            tag,
            issued_at: open.issued_at,
            finished_at: at,
            outcome,
        });
        self.finished.last()
    }

    /// Forgets the open requests of `node` (it crashed: no outcome will come).
    /// Returns how many there were.
    pub fn abandon(&mut self, node: NodeIndex) -> usize {
        let before = self.open.len();
        self.open.retain(|(from, _), _| *from != node);
        before - self.open.len()
    }

    /// Finished requests, in the order they finished.
    pub fn records(&self) -> &[RequestRecord] {
        &self.finished
    }

    /// Requests still waiting for an outcome.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Requests left out because a bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The nearest-rank `percentile` (0 to 100) of `latencies`, or `None` if empty.
pub fn percentile(latencies: &mut [Duration], percentile: u32) -> Option<Duration> {
    assert!(percentile <= 100, "percentile {percentile} above 100");
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    // ceil(p · n / 100), at least 1: the smallest value with p % at or below it.
    let rank = (percentile as usize * latencies.len()).div_ceil(100).max(1);
    Some(latencies[rank - 1])
}

/// A duration in milliseconds, as a float for summaries.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::Identity;

    fn peer() -> PeerId {
        Identity::from_seed(1).peer_id()
    }

    #[test]
    fn pairs_outcomes_with_their_commands() {
        let mut log = RequestLog::new();
        let node = NodeIndex(3);
        let at = Instant::from_micros;
        assert!(log.issued(node, 7, peer(), ProtocolId::Status, at(100)));
        assert!(log.issued(NodeIndex(4), 7, peer(), ProtocolId::Status, at(150)));
        assert!(!log.issued(node, 7, peer(), ProtocolId::Status, at(200)));
        let record = log
            .finished(node, 7, at(1_200), RequestOutcome::Response { chunks: 2 })
            .expect("open")
            .clone();
        assert_eq!(record.latency(), Duration::from_micros(1_000));
        assert!(log
            .finished(node, 7, at(1_300), RequestOutcome::Response { chunks: 0 })
            .is_none());
        assert!(log
            .finished(node, 8, at(1_300), RequestOutcome::Response { chunks: 0 })
            .is_none());
        assert_eq!(log.open_count(), 1);
        assert_eq!(log.abandon(NodeIndex(4)), 1);
        assert_eq!(log.open_count(), 0);
        assert_eq!(log.records().len(), 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = Duration::from_millis;
        let mut values: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&mut values, 99), Some(ms(99)));
        assert_eq!(percentile(&mut values, 50), Some(ms(50)));
        assert_eq!(percentile(&mut values, 100), Some(ms(100)));
        assert_eq!(percentile(&mut values, 0), Some(ms(1)));
        let mut few = vec![ms(5), ms(1), ms(3)];
        assert_eq!(percentile(&mut few, 99), Some(ms(5)));
        assert_eq!(percentile(&mut [], 99), None);
    }
}
