//! What the driver tells an operator: the [`Snapshot`] it publishes for
//! metrics, the durations it measures itself (handshakes, application
//! requests), the periodic status line, and a WARN for each event that
//! needs attention (a ban, a peer scored out, all peers lost).
//!
//! Everything here reads the node and the driver's own counts; nothing
//! feeds the core.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::io::{DisconnectReason, Notification, RequestError};
use meshsync_core::reqresp::ProtocolId;
use meshsync_core::types::GoodbyeReason;
use meshsync_core::{Command, Direction, Input};

use crate::metrics::{
    DiscoveryFigures, NodeMetrics, Snapshot, SyncState, PUBLISH_INTERVAL, TIMED_REQUESTS_MAX,
};

use super::connections::Phase;
use super::Driver;

/// The driver's watch over its node, for metrics and status lines.
pub(super) struct Observer {
    /// Where snapshots go, once [`Driver::metrics`] was asked for.
    metrics: Option<NodeMetrics>,
    publish_at: StdInstant,
    status_interval: Option<Duration>,
    status_at: StdInstant,
    /// Bytes read from sockets.
    pub(super) bytes_received: u64,
    /// Bytes written to sockets.
    pub(super) bytes_sent: u64,
    /// When each open connection not yet a peer opened, by remote address
    /// (one entry per held connection at most: removed when it becomes a
    /// peer, is refused, or is dropped).
    handshakes: HashMap<SocketAddr, StdInstant>,
    sync_state: SyncState,
    sync_target_slot: u64,
    sync_blocks_per_second: u64,
    sync_eta: Option<Duration>,
    /// Application requests in flight, by tag: protocol and start.
    requests: HashMap<u64, (String, StdInstant)>,
    request_outcomes: BTreeMap<(String, &'static str), u64>,
    had_peers: bool,
}

impl Observer {
    pub(super) fn new(now: StdInstant, status_interval: Option<Duration>) -> Observer {
        Observer {
            metrics: None,
            publish_at: now,
            status_interval,
            status_at: now + status_interval.unwrap_or(Duration::ZERO),
            bytes_received: 0,
            bytes_sent: 0,
            handshakes: HashMap::new(),
            sync_state: SyncState::Synced,
            sync_target_slot: 0,
            sync_blocks_per_second: 0,
            sync_eta: None,
            requests: HashMap::new(),
            request_outcomes: BTreeMap::new(),
            had_peers: false,
        }
    }

    /// When the loop must wake next for a publication or a status line.
    pub(super) fn next_due(&self) -> Option<StdInstant> {
        let publish = self.metrics.as_ref().map(|_| self.publish_at);
        let status = self.status_interval.map(|_| self.status_at);
        match (publish, status) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The metrics, if they are published.
    pub(super) fn metrics(&self) -> Option<&NodeMetrics> {
        self.metrics.as_ref()
    }

    /// A connection was dropped: it is no longer in a handshake.
    pub(super) fn forget_connection(&mut self, remote: SocketAddr) {
        self.handshakes.remove(&remote);
    }
}

/// The label of a request protocol.
fn protocol_label(protocol: &ProtocolId) -> String {
    match protocol {
        ProtocolId::Application(name) => name.as_str().to_owned(),
        builtin => format!("{builtin:?}"),
    }
}

impl Driver {
    /// The node's metrics, published by this driver from now on (at most
    /// every [`PUBLISH_INTERVAL`]); serve them with
    /// [`MetricsServer`](crate::metrics::MetricsServer). Every call returns
    /// the same metrics.
    pub fn metrics(&mut self) -> NodeMetrics {
        let metrics = self
            .observer
            .metrics
            .get_or_insert_with(NodeMetrics::new)
            .clone();
        self.publish_metrics();
        metrics
    }

    /// Bytes read from and written to sockets so far.
    pub fn bytes_transferred(&self) -> (u64, u64) {
        (self.observer.bytes_received, self.observer.bytes_sent)
    }

    /// Notes what an input starts: a handshake, an application request.
    pub(super) fn observe_input(&mut self, input: &Input) {
        let now = StdInstant::now();
        match input {
            Input::ConnectionOpened { remote, .. } => {
                self.observer.handshakes.insert(*remote, now);
            }
            Input::Command(Command::Request { protocol, tag, .. }) => {
                let requests = &mut self.observer.requests;
                if requests.len() < TIMED_REQUESTS_MAX || requests.contains_key(tag) {
                    requests.insert(*tag, (protocol_label(protocol), now));
                }
            }
            _ => {}
        }
    }

    /// Measures and logs what a notification ends or reports.
    pub(super) fn observe_notification(&mut self, notification: &Notification) {
        let me = self.peer_id;
        let observer = &mut self.observer;
        match notification {
            Notification::PeerConnected { addr, .. } => {
                if let Some(started) = observer.handshakes.remove(addr) {
                    if let Some(metrics) = &observer.metrics {
                        metrics.observe_handshake(started.elapsed());
                    }
                }
                observer.had_peers = true;
            }
            Notification::ConnectionRefused { addr, .. } => {
                observer.handshakes.remove(addr);
            }
            Notification::PeerDisconnected { peer, reason } => {
                if let DisconnectReason::LocalGoodbye(
                    why @ (GoodbyeReason::BadScore | GoodbyeReason::Banned),
                ) = reason
                {
                    log::warn!("[{me:?}] peer {peer} scored out ({why:?}): disconnected");
                }
                let shutting_down = self.state != super::RunState::Running;
                if self.node.peer_count() == 0 && self.observer.had_peers && !shutting_down {
                    self.observer.had_peers = false;
                    log::warn!("[{me:?}] lost all peers: no peer connected now");
                }
            }
            Notification::SyncProgress {
                target_slot,
                blocks_per_second,
                eta,
                waiting,
                ..
            } => {
                observer.sync_state = if waiting.is_some() {
                    SyncState::Waiting
                } else {
                    SyncState::Syncing
                };
                observer.sync_target_slot = *target_slot;
                observer.sync_blocks_per_second = *blocks_per_second;
                observer.sync_eta = *eta;
            }
            Notification::Synced { .. } => {
                observer.sync_state = SyncState::Synced;
                observer.sync_blocks_per_second = 0;
                observer.sync_eta = None;
            }
            Notification::Response { tag, .. } => self.request_ended(*tag, "success"),
            Notification::RequestFailed { tag, error, .. } => {
                let result = match error {
                    RequestError::NotSent(_) => "not_sent",
                    RequestError::FirstChunkTimeout | RequestError::ResponseTimeout => "timeout",
                    RequestError::Refused { .. } => "refused",
                    RequestError::InvalidResponse(_) => "invalid_response",
                    RequestError::Disconnected => "disconnected",
                };
                self.request_ended(*tag, result);
            }
            _ => {}
        }
    }

    fn request_ended(&mut self, tag: u64, result: &'static str) {
        let Some((protocol, started)) = self.observer.requests.remove(&tag) else {
            return; // Not timed (over the cap), or a tag used twice.
        };
        if let Some(metrics) = &self.observer.metrics {
            metrics.observe_request(&protocol, started.elapsed());
        }
        *self
            .observer
            .request_outcomes
            .entry((protocol, result))
            .or_insert(0) += 1;
    }

    /// Publishes a snapshot and logs the status line when they are due.
    pub(super) fn observe_turn(&mut self) {
        let now = StdInstant::now();
        if self.observer.metrics.is_some() && now >= self.observer.publish_at {
            self.publish_metrics();
        }
        if let Some(interval) = self.observer.status_interval {
            if now >= self.observer.status_at {
                self.observer.status_at = now + interval;
                self.log_status();
            }
        }
    }

    /// Where sync is: the core says whether it syncs; the notifications say how.
    fn sync_view(&self) -> (SyncState, u64) {
        let head = self.node.chain().head().slot;
        if !self.node.is_syncing() {
            return (SyncState::Synced, head);
        }
        let state = match self.observer.sync_state {
            // Syncing, but no progress report yet since the last `Synced`.
            SyncState::Synced => SyncState::Syncing,
            state => state,
        };
        (state, self.observer.sync_target_slot.max(head))
    }

    fn publish_metrics(&mut self) {
        let Some(metrics) = &self.observer.metrics else {
            return;
        };
        let now = self.now();
        let mut snapshot = Snapshot {
            core: self.node.counters().clone(),
            gossip: self.node.gossip().counters().clone(),
            refused_on_accept: self.refused_on_accept,
            bans_peer: self.node.peer_manager().banned_peer_count() as u64,
            bans_ip: self.node.peer_manager().banned_ip_count() as u64,
            bytes_received: self.observer.bytes_received,
            bytes_sent: self.observer.bytes_sent,
            head_slot: self.node.chain().head().slot,
            handshakes_inbound: self.node.inbound_handshakes() as u64,
            finalized_slot: self.node.chain().finalized().slot,
            store_failing: self.store_failing_since.is_some(),
            persist: self.persist_stats,
            work: self.work_stats(),
            requests_by_protocol: self.observer.request_outcomes.clone(),
            request_stats: self.node.request_stats().clone(),
            served_stats: self.node.served_stats().clone(),
            ..Snapshot::default()
        };
        for info in self.node.peers() {
            match info.direction {
                Direction::Inbound => snapshot.peers_inbound += 1,
                Direction::Outbound => snapshot.peers_outbound += 1,
            }
            let score = self.node.peer_manager().score(now, &info.peer);
            snapshot.peer_scores.push(score.as_points());
        }
        for connection in self.connections.values() {
            snapshot.send_queued_bytes += connection.queue.len() as u64;
            match connection.phase {
                Phase::Dialing(_) => snapshot.connections_dialing += 1,
                Phase::Open => snapshot.connections_open += 1,
                Phase::Closing { .. } => snapshot.connections_closing += 1,
            }
        }
        let gossip = self.node.gossip();
        for topic in gossip.subscriptions() {
            let peers = gossip.mesh_peers(topic).len() as u64;
            snapshot.mesh_peers.push((topic.as_str().to_owned(), peers));
        }
        snapshot.discovery = self.node.discovery().map(|discovery| DiscoveryFigures {
            counters: discovery.counters(),
            table_entries: discovery.table().len() as u64,
            candidates: discovery.table().candidate_count() as u64,
            lookups_running: discovery.lookup_count() as u64,
        });
        let (state, target) = self.sync_view();
        snapshot.sync_state = state;
        snapshot.sync_target_slot = target;
        snapshot.sync_blocks_per_second = match state {
            SyncState::Synced => 0,
            _ => self.observer.sync_blocks_per_second,
        };
        metrics.publish(snapshot);
        self.observer.publish_at = StdInstant::now() + PUBLISH_INTERVAL;
    }

    /// One INFO line: peers, head slot and root, finalized slot, and sync
    /// with its speed and time left, or "synced". The root tells two nodes
    /// at the same slot on different forks apart.
    fn log_status(&self) {
        let (mut inbound, mut outbound) = (0, 0);
        for info in self.node.peers() {
            match info.direction {
                Direction::Inbound => inbound += 1,
                Direction::Outbound => outbound += 1,
            }
        }
        let chain = self.node.chain();
        let (state, target) = self.sync_view();
        let sync = match state {
            SyncState::Synced => "synced".to_owned(),
            // Before any peer's claim is believed the target is our own head.
            SyncState::Waiting if target > chain.head().slot => {
                format!("sync waiting for peers, target slot {target}")
            }
            SyncState::Waiting => "sync waiting for peers".to_owned(),
            SyncState::Syncing => {
                let eta = match self.observer.sync_eta {
                    Some(eta) => format!("{}s", eta.as_secs()),
                    None => "unknown".to_owned(),
                };
                format!(
                    "syncing to slot {target} at {} blocks/s, eta {eta}",
                    self.observer.sync_blocks_per_second
                )
            }
        };
        log::info!(
            "[{:?}] status: peers {} (in {inbound}, out {outbound}), head slot {} (root {}), finalized slot {}, {sync}",
            self.peer_id,
            inbound + outbound,
            chain.head().slot,
            chain.head().root,
            chain.finalized().slot,
        );
    }
}
