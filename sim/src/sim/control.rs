//! What scenarios do to the world: commands, dials and requests given to
//! nodes, and the faults they inject (blackholes, partitions, crashes,
//! restarts), now or at an instant; wake-ups and the hand-over of
//! application events.
//!
//! Crashes: [`Sim::crash`] stops a node as a killed process stops. Its
//! connections end (each remote sees `ConnectionClosed` once the bytes
//! already on their way have arrived), its dials in progress die with it,
//! whatever was on its way to it is dropped, and dials to it are refused,
//! both when they are made and when they would have connected.
//! [`Sim::restart`] starts a fresh [`Node`] with the same identity and
//! configuration and a new seed derived from the old one and the restart
//! count, and with the blocks and signing watermarks its modelled disk
//! holds (a persist batch is on
//! the disk once its modelled write completed; a crash loses the ones still
//! being written); nothing else survives. Each life of a
//! node is an *incarnation*; events addressed to an earlier one (a late dial
//! answer, a stale timer) are dropped.

use meshsync_core::chain::SigningWatermark;
use meshsync_core::io::CloseCause;
use meshsync_core::reqresp::ProtocolId;
use meshsync_core::{Command, ConnId, Identity, Input, Instant, Node};

use super::event::Event;
use super::host::incarnation_seed;
use super::world::Sim;
use crate::samples::FaultKind;
use crate::trace::Marker;
use crate::types::{AppEvent, NodeIndex};

impl Sim {
    /// Gives `node` an application command now. A node that is down ignores it.
    pub fn command(&mut self, node: NodeIndex, command: Command) {
        if !self.is_up(node) {
            log::debug!("{node} is down: {command:?} is lost");
            return;
        }
        self.deliver(node, Input::Command(command));
    }

    /// Gives `node` an application command at `at` (not before now).
    pub fn command_at(&mut self, at: Instant, node: NodeIndex, command: Command) {
        self.queue
            .push(at.max(self.now), Event::Command { node, command });
    }

    /// Makes `from` dial `to` now, expecting `to`'s identity; the dial is
    /// counted as planned for [`Sim::is_fully_connected`].
    pub fn dial(&mut self, from: NodeIndex, to: NodeIndex) {
        let command = self.dial_command(from, to);
        self.command(from, command);
    }

    /// Like [`Sim::dial`], at `at`.
    pub fn dial_at(&mut self, at: Instant, from: NodeIndex, to: NodeIndex) {
        let command = self.dial_command(from, to);
        self.command_at(at, from, command);
    }

    pub(super) fn dial_command(&mut self, from: NodeIndex, to: NodeIndex) -> Command {
        self.dials_planned.push((from, to));
        Command::Dial {
            addr: self.node_state(to).addr,
            peer: Some(self.node_state(to).peer_id),
        }
    }

    /// Makes `from` send `to` a request now, with a fresh tag, and returns the
    /// tag. Its outcome comes out of `from` as `Response` or `RequestFailed`
    /// with that tag, and its latency goes into [`Sim::request_log`].
    pub fn request(
        &mut self,
        from: NodeIndex,
        to: NodeIndex,
        protocol: ProtocolId,
        body: Vec<u8>,
    ) -> u64 {
        let state = self.node_state_mut(from);
        let tag = state.request_tag_next;
        // One tag per request: a u64 cannot run out.
        state.request_tag_next += 1;
        let peer = self.peer_id(to);
        self.command(
            from,
            Command::Request {
                peer,
                protocol,
                body,
                tag,
            },
        );
        tag
    }

    /// Starts (`true`) or stops dropping everything `node` sends; see [`crate::network`].
    pub fn set_blackholed(&mut self, node: NodeIndex, blackholed: bool) {
        log::debug!("{node} blackholed: {blackholed}");
        self.network.set_blackholed(node, blackholed);
    }

    /// Splits the network into `groups` (see [`crate::network::Network::partition`]): bytes,
    /// closes and dials between groups are lost from now on, so connections
    /// across the cut die of silence, as they would behind a cut cable.
    pub fn partition(&mut self, groups: &[Vec<NodeIndex>]) {
        log::debug!("partition into {groups:?}");
        self.network.partition(groups);
        self.note_fault(None, FaultKind::Partition);
    }

    /// Ends the partition; connections lost to it must be dialled again.
    /// What a holding cut kept ([`Sim::partition_holding`],
    /// [`Sim::cut_one_way`]) is delivered now, in order.
    pub fn heal(&mut self) {
        log::debug!("partition healed");
        let held = self.network.heal();
        self.note_fault(None, FaultKind::Heal);
        self.release_held(held);
    }

    /// Like [`Sim::partition`], but as TCP sees an outage shorter than its
    /// retransmission timeout: what crosses the cut is held, not lost, and
    /// arrives in order at the heal; connections that outlive the cut see
    /// no gap in their streams (those the nodes give up meanwhile close).
    pub fn partition_holding(&mut self, groups: &[Vec<NodeIndex>]) {
        log::debug!("holding partition into {groups:?}");
        self.network.partition_holding(groups);
        self.note_fault(None, FaultKind::Partition);
    }

    /// Kills `node` now; see the module's crash design.
    ///
    /// # Panics
    /// If it is already down (a bug in the scenario).
    pub fn crash(&mut self, node: NodeIndex) {
        assert!(self.is_up(node), "{node} crashed while down");
        log::debug!("{node} crashes at {}", self.now);
        self.network_counts.crashes += 1;
        let now = self.now;
        self.trace.record_marker(node, now, Marker::Crash);
        self.note_fault(Some(node), FaultKind::Crash);
        let state = self.node_state_mut(node);
        state.up = false;
        state.dials.clear();
        state.notified_peers.clear();
        state.uplink_free_at = now;
        state.downlink_free_at = now;
        state.cpu_free_at = now;
        state.disk_free_at = now;
        // Refused batches die with the process, as unwritten ones do.
        state.disk_unwritten.clear();
        if state.timer_at.take().is_some() {
            state.timer_generation += 1; // Invalidates the queued event.
        }
        self.requests.abandon(node);
        let conns: Vec<ConnId> = self
            .network
            .endpoints()
            .filter(|(_, endpoint)| endpoint.node == node)
            .map(|(conn, _)| conn)
            .collect();
        for conn in conns {
            // The kernel of the dead process closes its sockets: each remote
            // hears the end after whatever was already on its way.
            self.close_endpoint(
                node,
                conn,
                CloseCause::Io("connection reset by peer".into()),
            );
        }
    }

    /// Starts `node` again now: a fresh [`Node`], same identity and
    /// configuration, a seed derived from its first one and the restart count.
    ///
    /// # Panics
    /// If it is up (a bug in the scenario).
    pub fn restart(&mut self, node: NodeIndex) {
        assert!(!self.is_up(node), "{node} restarted while up");
        log::debug!("{node} restarts at {}", self.now);
        self.network_counts.restarts += 1;
        let now = self.now;
        self.trace.record_marker(node, now, Marker::Restart);
        self.note_fault(Some(node), FaultKind::Restart);
        let state = self.node_state_mut(node);
        state.incarnation += 1;
        let seed = incarnation_seed(&state.node_seed, state.incarnation);
        // What it had on disk, after what it was configured with at first.
        let mut config = state.config.clone();
        // It reads its (possibly skewed) wall clock at start.
        config.unix_ms_at_origin = state.skewed_unix_ms_at_origin();
        if !state.disk.is_empty() {
            let mut stored = config.chain.stored.to_vec();
            stored.extend(state.disk.values().cloned());
            config.chain.stored = stored.into();
        }
        if config.known_peers.is_some() {
            // A node that keeps a peer store starts from the one on its
            // disk (empty if it never wrote one).
            config.known_peers = Some(state.disk_known_peers.clone().unwrap_or_default());
        }
        config.chain.signed_slots.extend(
            state
                .disk_watermarks
                .iter()
                .map(|(&proposer, &slot)| SigningWatermark { proposer, slot }),
        );
        let fresh = Node::new(config, Identity::from_seed(state.identity_seed), seed);
        assert_eq!(
            fresh.peer_id(),
            state.peer_id,
            "a restart keeps the identity"
        );
        let old = std::mem::replace(&mut state.node, fresh);
        state.retired_counters.push(old.counters().clone());
        state.up = true;
        state.uplink_free_at = now;
        state.downlink_free_at = now;
        self.schedule_timer(node, false);
    }

    /// Kills `node` at `at` (it must be up then).
    pub fn crash_at(&mut self, at: Instant, node: NodeIndex) {
        self.queue.push(at.max(self.now), Event::Crash { node });
    }

    /// Starts `node` again at `at` (it must be down then).
    pub fn restart_at(&mut self, at: Instant, node: NodeIndex) {
        self.queue.push(at.max(self.now), Event::Restart { node });
    }

    /// Asks for an [`AppEvent::Wake`] carrying `token` at `at` (not before now).
    pub fn wake_at(&mut self, at: Instant, token: u64) {
        self.queue.push(at.max(self.now), Event::Wake { token });
    }

    /// Starts or stops handing notifications to applications (wake-ups always are).
    pub fn collect_app_events(&mut self, collect: bool) {
        self.collect_app_events = collect;
    }

    /// The oldest application event not yet taken.
    pub fn take_app_event(&mut self) -> Option<AppEvent> {
        self.app_events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::io::DisconnectReason;
    use meshsync_core::{Duration, Notification};

    use crate::sim::config::SimConfig;

    fn sim(seed: u64) -> Sim {
        Sim::new(SimConfig::new(seed))
    }

    #[test]
    fn a_half_open_connection_after_an_outage_is_not_an_asymmetry() {
        // Both ends go dark; the first to time out closes, but its close is
        // lost. When the network heals, the other end still lists its peer
        // until its own silence timeout: TCP's half-open connection.
        let mut sim = sim(7);
        let a = sim.add_node();
        let b = sim.add_node();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("a clean link connects");
        sim.set_blackholed(a, true);
        sim.set_blackholed(b, true);
        let one_gave_up = |sim: &Sim| !sim.has_peer(a, b) || !sim.has_peer(b, a);
        sim.run_until(one_gave_up, 10_000)
            .expect("silence is noticed");
        sim.set_blackholed(a, false);
        sim.set_blackholed(b, false);
        assert!(
            sim.has_peer(a, b) != sim.has_peer(b, a),
            "exactly one end gave up"
        );
        assert_eq!(sim.check_peer_symmetry(), 0);

        let both_gave_up = |sim: &Sim| !sim.has_peer(a, b) && !sim.has_peer(b, a);
        sim.run_until(both_gave_up, 10_000)
            .expect("the other end times out too");
        assert_eq!(sim.notification_counts().peer_disconnected_silent, 2);
        assert_eq!(sim.check_peer_symmetry(), 0);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn a_crashed_node_drops_its_connections_refuses_dials_and_restarts_as_itself() {
        let mut sim = sim(8);
        let a = sim.add_node();
        let b = sim.add_node();
        let c = sim.add_node();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("a clean link connects");
        let b_id = sim.peer_id(b);

        // c dials b just before b dies: the attempt is refused when it
        // would have connected, not when it was made.
        sim.dial(c, b);
        sim.crash(b);
        assert!(!sim.is_up(b) && sim.peers_of(b).is_empty());
        sim.run_until(|sim| !sim.has_peer(a, b), 1_000)
            .expect("a hears the connection end");
        let lost = sim.notifications(a).last().map(|(_, n)| n.clone());
        assert!(
            matches!(lost, Some(Notification::PeerDisconnected { peer, reason: DisconnectReason::ConnectionLost(_) }) if peer == b_id),
            "{lost:?}"
        );
        sim.run_until(|sim| sim.notification_counts().dial_failed == 1, 1_000)
            .expect("c's dial is refused");
        // A dial made while b is down is refused at once.
        sim.dial(a, b);
        sim.run_until(|sim| sim.notification_counts().dial_failed == 2, 1_000)
            .expect("a's dial is refused");
        assert_eq!(sim.network_counts().dials_refused, 2);

        sim.restart(b);
        assert_eq!(sim.incarnation(b), 1);
        assert_eq!(sim.node(b).peer_id(), b_id, "same identity");
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 1_000)
            .expect("the new b accepts a");
        assert_eq!(sim.network_counts().crashes, 1);
        assert_eq!(sim.network_counts().restarts, 1);
        assert_eq!(sim.check_peer_symmetry(), 0);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn events_for_an_earlier_life_do_not_reach_the_next() {
        // a's dial is on its way when a itself crashes and restarts: the
        // answer belongs to the dead process and is dropped, and b never
        // sees a connection from it.
        let mut sim = sim(9);
        let a = sim.add_node();
        let b = sim.add_node();
        sim.dial(a, b);
        sim.crash(a);
        sim.restart(a);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.network_counts().connections_established, 0);
        assert!(!sim.has_peer(a, b) && !sim.has_peer(b, a));
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    /// A node that keeps a peer store crashes; while it is down its only
    /// bootnode goes away for good. It restarts from the peer store on its
    /// modelled disk and finds the peers it knew, which the bootnode can
    /// no longer introduce.
    #[test]
    fn a_node_restarted_from_its_peer_store_finds_its_peers_without_the_bootnode() {
        use meshsync_core::node::DiscoveryConfig;
        use meshsync_core::peerstore::{KnownPeers, PEERSTORE_PERSIST_INTERVAL};

        let mut sim = sim(9);
        let base = sim.node_config();
        let port = base.listen_port;
        let config_for = |index: usize, bootnodes: Vec<_>| {
            let mut config = base.clone();
            config.discovery = Some(DiscoveryConfig {
                addresses: vec![crate::network::node_address(NodeIndex(index), port)],
                allow_private: true,
                subnet_limits: false,
                bootnodes,
                peers_target: 25,
                record_seq: 1,
                learn_address_port: None,
            });
            config
        };
        let boot = sim.add_node_with_config(config_for(0, Vec::new()));
        let bootnodes = vec![(sim.peer_id(boot), sim.addr(boot))];
        let a = sim.add_node_with_config(config_for(1, bootnodes.clone()));
        let b = sim.add_node_with_config(config_for(2, bootnodes.clone()));
        let mut keeper = config_for(3, bootnodes);
        keeper.known_peers = Some(KnownPeers::default());
        let keeper = sim.add_node_with_config(keeper);

        let met_all = |sim: &Sim| {
            [boot, a, b]
                .iter()
                .all(|&other| sim.are_connected(keeper, other))
        };
        sim.run_until(met_all, 100_000)
            .expect("the keeper meets everyone through the bootnode");
        sim.run_for(PEERSTORE_PERSIST_INTERVAL);
        let on_disk = sim.node_state(keeper).disk_known_peers.clone();
        assert_eq!(on_disk.map(|known| known.records.len()), Some(3));

        sim.crash(keeper);
        sim.crash(boot);
        sim.run_for(Duration::from_secs(5));
        sim.restart(keeper);
        let restarted = sim.now();
        sim.run_until(
            |sim| sim.are_connected(keeper, a) && sim.are_connected(keeper, b),
            100_000,
        )
        .expect("the keeper finds its peers again from its peer store");
        // At once, from its candidates; without the peer store (its disk
        // wiped) it never does within the step bound.
        assert!(sim.now().saturating_duration_since(restarted) < Duration::from_secs(5));
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }
}
