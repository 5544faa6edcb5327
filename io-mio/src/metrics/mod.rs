//! Prometheus metrics of one driver: what its poll loop publishes, and the
//! OpenMetrics text a scrape gets (`docs/metrics.md` lists every metric).
//!
//! # Design
//! The poll loop never waits for a scraper. At most every
//! [`PUBLISH_INTERVAL`] it copies what it and the core count (counters,
//! peers, chain, sync) into a [`Snapshot`] and swaps it in behind a mutex
//! held only for the swap. Durations it measures itself (handshakes, store
//! commits, verification batches timed on the worker threads, application
//! requests) go straight into `prometheus-client` histograms, whose
//! `observe` takes one short lock. The server's thread ([`MetricsServer`])
//! builds a fresh registry from the last snapshot and those histograms on
//! each scrape and encodes it into a string; the socket is written with no
//! lock held, so a slow scraper slows only itself.
//!
//! Counters are the core's and the driver's own monotonic counts, copied;
//! gauges are read at publication; the peer-score histogram is rebuilt at
//! every scrape from the scores of the peers connected at publication (a
//! distribution at one moment, not accumulated observations).
//!
//! # Limits
//! - Publication: at most every [`PUBLISH_INTERVAL`] (the loop wakes for it).
//! - Application requests timed at once: [`TIMED_REQUESTS_MAX`]; past it
//!   requests are counted but not timed.
//! - The server: see [`server`].

pub mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshsync_core::discovery::DiscoveryCounters;
use meshsync_core::gossip::Counters as GossipCounters;
use meshsync_core::metrics::Counters;
use meshsync_core::reqresp::stats::{
    DurationHistogram, RequestResult, RequestStats, ServedResult, ServedStats,
    REQUEST_DURATION_BUCKET_BOUNDS_MICROS,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::driver::{PersistStats, WorkStats};

pub use server::{MetricsServer, REQUEST_BYTES_MAX, REQUEST_TIMEOUT};

/// How often the poll loop publishes a [`Snapshot`] at most.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// Application requests whose start the driver remembers to time them;
/// the core bounds the requests in flight far below this.
pub const TIMED_REQUESTS_MAX: usize = 4_096;

/// Where range sync is, as the driver last heard from the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncState {
    /// Following the head by gossip.
    #[default]
    Synced,
    /// Range sync is fetching towards a target.
    Syncing,
    /// Range sync waits for suitable peers.
    Waiting,
}

impl SyncState {
    /// The label value and the status line's word.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Syncing => "syncing",
            SyncState::Waiting => "waiting",
        }
    }
}

/// Discovery's figures, read from `Node::discovery()` at publication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryFigures {
    /// The machine's counters.
    pub counters: DiscoveryCounters,
    /// Verified peers in the routing table.
    pub table_entries: u64,
    /// Peers heard of and not yet dialled or verified.
    pub candidates: u64,
    /// Lookups running.
    pub lookups_running: u64,
}

/// What the poll loop publishes: a copy of its counts at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub core: Counters,
    /// The gossip router's counters.
    pub gossip: GossipCounters,
    /// Connected peers that dialled us.
    pub peers_inbound: u64,
    /// Connected peers we dialled.
    pub peers_outbound: u64,
    /// Sockets still connecting.
    pub connections_dialing: u64,
    /// Open sockets the core knows (in the handshake, or peers).
    pub connections_open: u64,
    /// Sockets the core closed, lingering to flush.
    pub connections_closing: u64,
    /// Inbound connections in their handshake (the slots a flood fills).
    pub handshakes_inbound: u64,
    /// Connections closed on accept, before the core saw them.
    pub refused_on_accept: u64,
    /// Peer bans held.
    pub bans_peer: u64,
    /// IP bans held.
    pub bans_ip: u64,
    /// Scores (points) of the connected peers.
    pub peer_scores: Vec<f64>,
    /// Our mesh peers per subscribed topic.
    pub mesh_peers: Vec<(String, u64)>,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Bytes queued for sockets and not yet written, over every connection.
    pub send_queued_bytes: u64,
    /// Our head's slot.
    pub head_slot: u64,
    /// Our finalized slot.
    pub finalized_slot: u64,
    /// Where range sync is.
    pub sync_state: SyncState,
    /// The slot range sync fetches towards (our head once synced).
    pub sync_target_slot: u64,
    /// Range sync's speed, blocks per second (0 once synced).
    pub sync_blocks_per_second: u64,
    /// Whether the store refuses writes.
    pub store_failing: bool,
    /// The driver's store counts.
    pub persist: PersistStats,
    /// The driver's work counts.
    pub work: WorkStats,
    /// Outcomes of application requests: (protocol, result) to count.
    pub requests_by_protocol: BTreeMap<(String, &'static str), u64>,
    /// Our requests by protocol and result, with their latencies (the core's).
    pub request_stats: RequestStats,
    /// Peers' requests by protocol and result (the core's).
    pub served_stats: ServedStats,
    /// Discovery's figures; `None` when the node does not run it.
    pub discovery: Option<DiscoveryFigures>,
}

/// The metrics of one driver, shared by its poll loop (which publishes and
/// observes), its workers and the server (which reads). Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    shared: Arc<Shared>,
}

/// Labels built at run time: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Shared {
    snapshot: Mutex<Snapshot>,
    handshake_seconds: Histogram,
    verification_batch_seconds: Histogram,
    store_commit_seconds: Histogram,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

/// 100 µs to about 26 s, doubling: handshakes, commits, batches, requests.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

/// Peer scores run from -100 to 100 points; the ban threshold sits below zero.
const SCORE_BUCKETS: [f64; 13] = [
    -100.0, -50.0, -20.0, -10.0, -5.0, -1.0, 0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    /// Empty metrics: an empty snapshot, empty histograms.
    pub fn new() -> NodeMetrics {
        NodeMetrics {
            shared: Arc::new(Shared {
                snapshot: Mutex::new(Snapshot::default()),
                handshake_seconds: duration_buckets(),
                verification_batch_seconds: duration_buckets(),
                store_commit_seconds: duration_buckets(),
                request_seconds: Family::new_with_constructor(duration_buckets),
            }),
        }
    }

    /// Replaces the published snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        // A panic while the lock was held left a whole snapshot (it is only
        // ever swapped), so a poisoned lock is still usable.
        let mut published = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *published = snapshot;
    }

    /// The last snapshot published.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A handshake took `took`, from the connection opening to the peer accepted.
    pub fn observe_handshake(&self, took: Duration) {
        self.shared.handshake_seconds.observe(took.as_secs_f64());
    }

    /// A verification batch took `took` on a worker thread.
    pub fn observe_verification_batch(&self, took: Duration) {
        self.shared
            .verification_batch_seconds
            .observe(took.as_secs_f64());
    }

    /// A store commit took `took`.
    pub fn observe_store_commit(&self, took: Duration) {
        self.shared.store_commit_seconds.observe(took.as_secs_f64());
    }

    /// An application request on `protocol` was answered (or failed) after `took`.
    pub fn observe_request(&self, protocol: &str, took: Duration) {
        self.shared
            .request_seconds
            .get_or_create(&vec![("protocol", protocol.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of the last snapshot and the histograms.
    pub fn encode(&self) -> String {
        let snapshot = self.snapshot();
        let registry = self.registry(&snapshot);
        let mut text = String::new();
        // Writing into a String cannot fail.
        encode(&mut text, &registry).expect("encoding into a String never fails");
        text
    }

    fn registry(&self, s: &Snapshot) -> Registry {
        let mut r = Registry::with_prefix("meshsync");
        let c = &s.core;
        let g = &s.gossip;

        // Peers and connections.
        gauge_family(
            &mut r,
            "peers",
            "Connected peers, by who dialled",
            "direction",
            &[("inbound", s.peers_inbound), ("outbound", s.peers_outbound)],
        );
        gauge_family(
            &mut r,
            "connections",
            "Sockets held, by state (open: in the handshake or a peer)",
            "state",
            &[
                ("dialing", s.connections_dialing),
                ("open", s.connections_open),
                ("closing", s.connections_closing),
            ],
        );
        gauge(
            &mut r,
            "handshakes_inbound",
            "Inbound connections in their handshake (a newcomer evicts the oldest once all slots are taken)",
            s.handshakes_inbound,
        );
        counter(&mut r, "dials", "Dials started", c.dials_started);
        counter(
            &mut r,
            "dials_failed",
            "Dials that failed or timed out",
            c.dials_failed,
        );
        counter(
            &mut r,
            "connections_opened",
            "Transport connections opened, both directions",
            c.connections_opened,
        );
        counter(
            &mut r,
            "handshakes_completed",
            "Handshakes that ended with an accepted peer",
            c.handshakes_completed,
        );
        counter(
            &mut r,
            "handshakes_under_pressure",
            "Inbound handshakes given the short deadline: half the slots or more were taken",
            c.handshakes_under_pressure,
        );
        let refusals = [
            ("handshake_error", c.refused_handshake_error),
            ("bad_signature", c.refused_bad_signature),
            ("wrong_network", c.refused_wrong_network),
            ("incompatible_version", c.refused_incompatible_version),
            ("unexpected_peer", c.refused_unexpected_peer),
            ("self_connection", c.refused_self_connection),
            ("duplicate", c.refused_duplicate),
            ("timeout", c.refused_timeout),
            ("no_room", c.refused_no_room),
            ("handshakes_from_ip", c.refused_handshakes_from_ip),
            ("handshake_evicted", c.handshakes_evicted),
        ];
        let named: u64 = refusals.iter().map(|(_, count)| count).sum();
        let mut refusals = refusals.to_vec();
        refusals.push(("other", c.handshakes_failed.saturating_sub(named)));
        refusals.push(("accept_limit", s.refused_on_accept));
        counter_family(
            &mut r,
            "connections_refused",
            "Connections refused before becoming peers, by reason",
            "reason",
            &refusals,
        );
        counter(
            &mut r,
            "peers_disconnected",
            "Peers that went away, for any reason",
            c.peers_disconnected,
        );
        counter(
            &mut r,
            "peers_silent",
            "Peers dropped for silence",
            c.peers_silent,
        );
        counter(
            &mut r,
            "protocol_violations",
            "Connections closed for a protocol violation",
            c.protocol_violations,
        );
        counter(
            &mut r,
            "connections_stalled",
            "Connections cut for taking nothing we wrote",
            c.connections_stalled,
        );
        counter_family(
            &mut r,
            "goodbyes",
            "Goodbye messages, by direction",
            "direction",
            &[("sent", c.goodbyes_sent), ("received", c.goodbyes_received)],
        );
        counter(
            &mut r,
            "peers_banned",
            "Peers banned for their score",
            c.peers_banned,
        );
        gauge_family(
            &mut r,
            "bans",
            "Bans held now, by what is banned",
            "kind",
            &[("peer", s.bans_peer), ("ip", s.bans_ip)],
        );
        r.register_with_unit(
            "handshake_duration",
            "From the connection opening to the peer accepted, measured by the driver",
            Unit::Seconds,
            self.shared.handshake_seconds.clone(),
        );
        let scores = Histogram::new(SCORE_BUCKETS);
        for score in &s.peer_scores {
            scores.observe(*score);
        }
        r.register(
            "peer_score",
            "Scores (points, -100 to 100) of the connected peers at the last publication",
            scores,
        );

        // Bytes and messages.
        counter_with_unit(
            &mut r,
            "network_received",
            "Bytes read from peers' sockets",
            s.bytes_received,
        );
        counter_with_unit(
            &mut r,
            "network_sent",
            "Bytes written to peers' sockets",
            s.bytes_sent,
        );
        let queued = Gauge::<i64>::default();
        queued.set(saturating_i64(s.send_queued_bytes));
        r.register_with_unit(
            "send_queued",
            "Bytes queued for peers' sockets and not yet written, over every connection",
            Unit::Bytes,
            queued,
        );
        counter_family(
            &mut r,
            "messages",
            "Logical messages exchanged with established peers",
            "direction",
            &[("in", c.messages_received), ("out", c.messages_sent)],
        );

        // Requests.
        let sent = Family::<Labels, Counter>::default();
        for (protocol, stats) in &s.request_stats.protocols {
            for result in RequestResult::ALL {
                sent.get_or_create(&vec![
                    ("protocol", protocol.to_string()),
                    ("result", result.as_str().to_owned()),
                ])
                .inc_by(stats.count(result));
            }
        }
        r.register(
            "requests_sent",
            "Our requests by protocol and how they ended, counted when they end",
            sent,
        );
        let durations = CoreHistograms(
            s.request_stats
                .protocols
                .iter()
                .map(|(protocol, stats)| (protocol.to_string(), stats.duration.clone()))
                .collect(),
        );
        r.register_with_unit(
            "request_duration",
            "Our answered requests, from sending to the message that ended them (the core's clock), by protocol",
            Unit::Seconds,
            durations,
        );
        counter_family(
            &mut r,
            "responses",
            "Outcomes of our requests, every protocol",
            "result",
            &[
                ("complete", c.responses_received),
                ("timed_out", c.requests_timed_out),
                ("unexpected", c.responses_unexpected),
            ],
        );
        let served = Family::<Labels, Counter>::default();
        for (protocol, counts) in &s.served_stats.protocols {
            for (result, count) in ServedResult::ALL.iter().zip(counts) {
                served
                    .get_or_create(&vec![
                        ("protocol", protocol.to_string()),
                        ("result", result.as_str().to_owned()),
                    ])
                    .inc_by(*count);
            }
        }
        r.register(
            "requests_served",
            "Peers' requests by protocol and how they ended: answered, expired, disconnected, or refused and why",
            served,
        );
        counter_family(
            &mut r,
            "requests_rate_limited",
            "Peers' requests refused by a quota: the peer's own or our shared serving budget",
            "scope",
            &[
                ("peer", c.requests_limited_peer),
                ("global", c.requests_limited_global),
            ],
        );
        counter(
            &mut r,
            "requests_retried_busy",
            "Our application requests sent again after a busy answer",
            c.requests_retried_busy,
        );
        let by_protocol = Family::<Labels, Counter>::default();
        for ((protocol, result), count) in &s.requests_by_protocol {
            by_protocol
                .get_or_create(&vec![
                    ("protocol", protocol.clone()),
                    ("result", (*result).to_owned()),
                ])
                .inc_by(*count);
        }
        r.register(
            "application_requests",
            "Outcomes of requests the application made (Command::Request), by protocol",
            by_protocol,
        );
        r.register_with_unit(
            "application_request_duration",
            "From an application request's command to its answer or failure, by protocol",
            Unit::Seconds,
            self.shared.request_seconds.clone(),
        );

        // Gossip.
        counter_family(
            &mut r,
            "gossip_messages",
            "Gossip messages by verdict: received new, accepted and forwarded, rejected",
            "verdict",
            &[
                ("received", c.gossip_messages_received),
                ("accepted", c.gossip_messages_forwarded),
                ("rejected", c.gossip_messages_rejected),
            ],
        );
        counter(
            &mut r,
            "gossip_published",
            "Gossip messages we published",
            c.gossip_messages_published,
        );
        counter(
            &mut r,
            "gossip_publish_failed",
            "Publishes refused (too large, duplicate, no peers)",
            c.gossip_publish_failed,
        );
        counter(
            &mut r,
            "gossip_duplicates",
            "Copies of gossip messages already seen",
            g.duplicates,
        );
        counter(
            &mut r,
            "gossip_idontwant_suppressed",
            "Gossip messages not sent because the peer had sent IDONTWANT",
            g.idontwant_suppressed,
        );
        counter(
            &mut r,
            "gossip_rpcs_graylisted",
            "Gossip RPCs dropped unread from graylisted peers",
            c.gossip_rpcs_graylisted,
        );
        counter(
            &mut r,
            "gossip_penalties",
            "Gossip misbehaviours penalised",
            c.gossip_penalties,
        );
        let by_topic = Family::<Labels, Counter>::default();
        for (topic, counts) in &g.topics {
            for (verdict, count) in [
                ("received", counts.received),
                ("duplicate", counts.duplicates),
                ("accepted", counts.accepted),
                ("rejected", counts.rejected),
                ("ignored", counts.ignored),
            ] {
                by_topic
                    .get_or_create(&vec![
                        ("topic", topic.as_str().to_owned()),
                        ("verdict", verdict.to_owned()),
                    ])
                    .inc_by(count);
            }
        }
        r.register(
            "gossip_topic_messages",
            "Gossip messages per subscribed topic: new, duplicate copies, and the verdicts",
            by_topic,
        );
        let mesh = Family::<Labels, Gauge>::default();
        for (topic, peers) in &s.mesh_peers {
            mesh.get_or_create(&vec![("topic", topic.clone())])
                .set(saturating_i64(*peers));
        }
        r.register(
            "gossip_mesh_peers",
            "Our mesh peers per subscribed topic",
            mesh,
        );

        // Discovery: only a node that runs it has these.
        if let Some(d) = &s.discovery {
            gauge(
                &mut r,
                "discovery_table_entries",
                "Verified peers in the discovery routing table",
                d.table_entries,
            );
            gauge(
                &mut r,
                "discovery_candidates",
                "Peers discovery heard of (bootnodes, answers) and has not yet dialled",
                d.candidates,
            );
            counter(
                &mut r,
                "discovery_lookups",
                "Discovery lookups started, refreshes included",
                d.counters.lookups_started,
            );
            gauge(
                &mut r,
                "discovery_lookups_running",
                "Discovery lookups running",
                d.lookups_running,
            );
            counter(
                &mut r,
                "discovery_queries",
                "FIND_NODE queries sent",
                d.counters.queries_sent,
            );
            counter_family(
                &mut r,
                "discovery_queries_failed",
                "FIND_NODE queries that failed, by reason",
                "reason",
                &[
                    ("invalid_answer", d.counters.answers_invalid),
                    (
                        "no_answer",
                        d.counters
                            .queries_failed
                            .saturating_sub(d.counters.answers_invalid),
                    ),
                ],
            );
            counter(
                &mut r,
                "discovery_dials",
                "Dials discovery asked for, to reach its target of peers",
                d.counters.dials,
            );
            counter(
                &mut r,
                "discovery_dials_failed",
                "Discovery dials that failed or timed out; their addresses back off",
                d.counters.dials_failed,
            );
            counter(
                &mut r,
                "discovery_addresses_learned",
                "Addresses signed into our record because peers in three networks saw us there",
                d.counters.addresses_learned,
            );
            counter(
                &mut r,
                "discovery_stranded_retries",
                "Refreshes brought forward because the node had no peer and nothing in flight",
                d.counters.stranded_retries,
            );
        }

        // Chain and sync.
        gauge(&mut r, "head_slot", "Slot of our head block", s.head_slot);
        gauge(
            &mut r,
            "finalized_slot",
            "Slot of our finalized block",
            s.finalized_slot,
        );
        gauge_family(
            &mut r,
            "sync_state",
            "1 for the state range sync is in, 0 for the others",
            "state",
            &[SyncState::Synced, SyncState::Syncing, SyncState::Waiting]
                .map(|state| (state.as_str(), u64::from(state == s.sync_state))),
        );
        gauge(
            &mut r,
            "sync_target_slot",
            "The slot range sync fetches towards (our head once synced)",
            s.sync_target_slot,
        );
        gauge(
            &mut r,
            "sync_blocks_per_second",
            "Blocks imported per second by range sync, as the core smooths it (0 when synced)",
            s.sync_blocks_per_second,
        );
        counter(
            &mut r,
            "blocks_imported",
            "Blocks imported into the fork choice (produced, gossiped or synced)",
            c.blocks_imported,
        );
        counter(
            &mut r,
            "blocks_produced",
            "Blocks we signed as a proposer",
            c.blocks_produced,
        );
        r.register_with_unit(
            "verification_batch_duration",
            "BLS verification of one batch of blocks, timed on the worker thread",
            Unit::Seconds,
            self.shared.verification_batch_seconds.clone(),
        );
        counter(
            &mut r,
            "work_jobs",
            "Verification jobs handed to the worker pool",
            s.work.submitted,
        );

        // Store.
        r.register_with_unit(
            "store_commit_duration",
            "One durable store transaction (a persist batch), fsync included",
            Unit::Seconds,
            self.shared.store_commit_seconds.clone(),
        );
        counter(
            &mut r,
            "store_blocks_written",
            "Blocks written to the store",
            s.persist.blocks,
        );
        counter(
            &mut r,
            "store_commit_failures",
            "Store commits that failed (and were retried)",
            s.persist.failures,
        );
        gauge(
            &mut r,
            "store_failing",
            "1 while the store refuses writes",
            u64::from(s.store_failing),
        );
        counter(
            &mut r,
            "store_peer_snapshots",
            "Peer store snapshots written",
            s.persist.peer_snapshots,
        );
        counter(
            &mut r,
            "store_peer_snapshot_failures",
            "Peer store snapshots that failed to write",
            s.persist.peer_snapshot_failures,
        );
        gauge(
            &mut r,
            "store_peer_records",
            "Peer records in the last peer store snapshot written",
            s.persist.peer_records,
        );
        r
    }
}

/// The core's fixed-bucket latency histograms, one per protocol label,
/// encoded as an OpenMetrics histogram family (the core counts, we only
/// convert microseconds to seconds).
#[derive(Debug)]
struct CoreHistograms(Vec<(String, DurationHistogram)>);

impl EncodeMetric for CoreHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (protocol, histogram) in &self.0 {
            let labels = [("protocol", protocol.as_str())];
            let buckets: Vec<(f64, u64)> = REQUEST_DURATION_BUCKET_BOUNDS_MICROS
                .iter()
                .map(|&micros| micros as f64 / 1e6)
                .zip(histogram.buckets)
                .chain([(f64::MAX, histogram.overflow)])
                .collect();
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_micros as f64 / 1e6,
                    histogram.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Counter::<u64>::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn counter_with_unit(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Counter::<u64>::default();
    metric.inc_by(value);
    registry.register_with_unit(name, help, Unit::Bytes, metric);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Gauge::<i64>::default();
    metric.set(saturating_i64(value));
    registry.register(name, help, metric);
}

fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) {
    let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (value, count) in values {
        family.get_or_create(&[(label, *value)]).inc_by(*count);
    }
    registry.register(name, help, family);
}

fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) {
    let family = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    for (value, count) in values {
        family
            .get_or_create(&[(label, *value)])
            .set(saturating_i64(*count));
    }
    registry.register(name, help, family);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_discovery_serves_no_discovery_metric() {
        let metrics = NodeMetrics::new();
        metrics.publish(Snapshot::default());
        let text = metrics.encode();
        assert!(!text.contains("meshsync_discovery_"), "{text}");
    }

    /// docs/metrics.md, which must name every metric.
    const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"));

    /// Metrics with every family populated, as a busy node's would be.
    fn populated() -> NodeMetrics {
        let metrics = NodeMetrics::new();
        let mut snapshot = Snapshot {
            peer_scores: vec![-3.0, 0.5],
            mesh_peers: vec![("blocks".to_owned(), 3)],
            head_slot: 7,
            discovery: Some(DiscoveryFigures {
                counters: DiscoveryCounters {
                    queries_sent: 9,
                    queries_failed: 4,
                    answers_invalid: 1,
                    addresses_learned: 1,
                    ..DiscoveryCounters::default()
                },
                table_entries: 3,
                ..DiscoveryFigures::default()
            }),
            ..Snapshot::default()
        };
        snapshot
            .requests_by_protocol
            .insert(("/chat/history".to_owned(), "success"), 2);
        let topic = meshsync_core::Topic::new("blocks").unwrap();
        snapshot
            .gossip
            .topics
            .insert(topic, meshsync_core::gossip::TopicCounters::default());
        let mut status = meshsync_core::reqresp::stats::ProtocolRequestStats::default();
        status.results[0] = 1;
        status.duration.buckets[0] = 1;
        status.duration.count = 1;
        status.duration.sum_micros = 4_000;
        snapshot
            .request_stats
            .protocols
            .insert(meshsync_core::reqresp::ProtocolId::Status, status);
        snapshot.served_stats.protocols.insert(
            meshsync_core::reqresp::ProtocolId::Status,
            [1, 0, 0, 2, 0, 0, 0],
        );
        metrics.publish(snapshot);
        metrics.observe_request("/chat/history", Duration::from_millis(3));
        metrics.observe_handshake(Duration::from_millis(2));
        metrics
    }

    #[test]
    fn every_metric_is_in_the_docs_and_named_by_the_rules() {
        let text = populated().encode();
        let mut names = Vec::new();
        for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            assert!(sample.starts_with("meshsync_"), "{sample}");
            assert!(
                DOC.contains(&format!("| `{sample}` | {kind} |")),
                "docs/metrics.md has no row for `{sample}` ({kind})"
            );
            names.push(sample);
        }
        // The docs name no metric the text lacks.
        for row in DOC.lines().filter(|line| line.starts_with("| `meshsync_")) {
            let name = row.split('`').nth(1).unwrap();
            assert!(
                names.iter().any(|n| n == name),
                "{name} is documented but not served"
            );
        }
        assert!(text.contains("\nmeshsync_head_slot 7\n"), "{text}");
        assert!(
            text.contains("\nmeshsync_discovery_table_entries 3\n"),
            "{text}"
        );
        // A failed query is counted once, by its reason.
        for sample in [
            "meshsync_discovery_queries_total 9\n",
            "meshsync_discovery_addresses_learned_total 1\n",
            "meshsync_discovery_queries_failed_total{reason=\"invalid_answer\"} 1\n",
            "meshsync_discovery_queries_failed_total{reason=\"no_answer\"} 3\n",
        ] {
            assert!(text.contains(sample), "no {sample} in {text}");
        }
        assert!(text.contains("meshsync_peer_score_count 2\n"), "{text}");
        // The core's request figures, by protocol and result.
        for sample in [
            "meshsync_requests_sent_total{protocol=\"status\",result=\"ok\"} 1\n",
            "meshsync_requests_sent_total{protocol=\"status\",result=\"timed_out\"} 0\n",
            "meshsync_request_duration_seconds_count{protocol=\"status\"} 1\n",
            "meshsync_request_duration_seconds_sum{protocol=\"status\"} 0.004\n",
            "meshsync_requests_served_total{protocol=\"status\",result=\"answered\"} 1\n",
            "meshsync_requests_served_total{protocol=\"status\",result=\"rate_limited\"} 2\n",
        ] {
            assert!(text.contains(sample), "no {sample} in {text}");
        }
    }
}
