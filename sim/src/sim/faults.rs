//! Faults beyond blackholes, partitions and crashes (those are in
//! `control.rs`): connection resets, link stalls, one-way cuts, a node's
//! clock skew and drift, a slow disk and slow verification. Each is set
//! on the world now and lasts until undone; [`crate::scenario::chaos`]
//! draws them from the seed.
//!
//! - **Reset** ([`Sim::reset_connections`]): every connection between two
//!   nodes dies at once, as a middlebox's RST kills it: both ends see
//!   `ConnectionClosed` now, and bytes still on their way are lost.
//! - **Stall** ([`Sim::stall_link`]): bytes between two nodes are held
//!   until an instant and then released in the order they were sent, as a
//!   link that stops forwarding for a while and then catches up. Closes
//!   wait behind them (TCP's FIN follows the data).
//! - **One-way cut** ([`Sim::cut_one_way`]): what some nodes send others is
//!   held while the reverse direction works, and arrives in order at the
//!   heal (TCP retransmits; nothing is lost, nothing comes out of order);
//!   TCP needs both directions, so no new connection forms across it.
//! - **Clock** ([`Sim::set_clock_skew`], [`Sim::set_clock_drift`]): a node's
//!   wall clock is off by a number of milliseconds (it hears
//!   `Health::ClockRebased`, as the driver's clock check reports a jump),
//!   and its clock, monotonic and wall alike, may run fast or slow
//!   ([`super::clock::NodeClock`]); slots are computed from what it reads.
//! - **Slow disk** ([`Sim::set_disk_slowdown`]): each write takes k× its
//!   modelled time. (A disk that refuses writes is [`Sim::fail_disk`].)
//! - **Slow verification** ([`Sim::set_cpu_slowdown`]): each job takes k×
//!   its modelled cost on the node's one modelled CPU.

use meshsync_core::io::CloseCause;
use meshsync_core::{ConnId, Health, Input, Instant};

use super::event::Event;
use super::world::Sim;
use crate::samples::FaultKind;
use crate::types::NodeIndex;

/// The largest slow-down factor of a disk or a CPU: beyond it a node is
/// better modelled as crashed.
pub const SLOWDOWN_FACTOR_MAX: u32 = 1_000;

impl Sim {
    /// Resets every connection between `a` and `b` now: both ends hear
    /// `ConnectionClosed` (connection reset by peer) in this instant, and
    /// whatever was on its way either way is lost. Returns how many
    /// connections it reset.
    pub fn reset_connections(&mut self, a: NodeIndex, b: NodeIndex) -> usize {
        let ends: Vec<(NodeIndex, ConnId)> = self
            .network
            .endpoints()
            .filter(|(_, end)| (end.node, end.remote) == (a, b) || (end.node, end.remote) == (b, a))
            .map(|(conn, end)| (end.node, conn))
            .collect();
        for &(node, conn) in &ends {
            self.queue.push(self.now, Event::Reset { node, conn });
        }
        self.network_counts.resets += (ends.len() / 2) as u64;
        log::debug!("{a} and {b}: {} connection ends reset", ends.len());
        ends.len() / 2
    }

    /// The reset of `conn` reaches `node` (if that end is still open).
    pub(super) fn reset_arrived(&mut self, node: NodeIndex, conn: ConnId) {
        if self.network.endpoint_of(node, conn).is_none() {
            return;
        }
        self.network.remove(conn);
        let cause = CloseCause::Io("connection reset by peer".into());
        self.deliver(node, Input::ConnectionClosed { conn, cause });
    }

    /// Holds everything sent between `a` and `b`, either way, until
    /// `until`; it then arrives in the order it was sent. A later stall of
    /// the same pair replaces this one.
    pub fn stall_link(&mut self, a: NodeIndex, b: NodeIndex, until: Instant) {
        log::debug!("{a} and {b} stall until {until}");
        self.network.stall(a, b, until);
    }

    /// Holds what any node of `from` sends any node of `to` from now on,
    /// until [`Sim::heal`] delivers it in order (as
    /// [`Sim::partition_holding`] does); the other direction still works,
    /// and no new connection forms across the cut.
    pub fn cut_one_way(&mut self, from: &[NodeIndex], to: &[NodeIndex]) {
        log::debug!("one-way cut from {from:?} to {to:?}");
        self.network.cut_one_way(from, to);
        // Plots shade it as a partition: part of the network is cut off.
        self.note_fault(None, FaultKind::Partition);
    }

    /// Sets `node`'s wall clock `skew_ms` off true time (negative: behind).
    /// A running node hears `Health::ClockRebased` now; a restart reads the
    /// skewed clock too.
    pub fn set_clock_skew(&mut self, node: NodeIndex, skew_ms: i64) {
        log::debug!("{node}'s clock is {skew_ms} ms off");
        let state = self.node_state_mut(node);
        state.clock_skew_ms = skew_ms;
        let unix_ms_at_origin = state.skewed_unix_ms_at_origin();
        if self.is_up(node) {
            let health = Health::ClockRebased { unix_ms_at_origin };
            self.deliver(node, Input::Health(health));
        }
    }

    /// Makes `node`'s clock run `drift_ppm` parts per million fast
    /// (negative: slow) from now on; see [`super::clock::NodeClock`].
    ///
    /// # Panics
    /// If the drift is beyond ±[`super::clock::DRIFT_PPM_MAX`].
    pub fn set_clock_drift(&mut self, node: NodeIndex, drift_ppm: i64) {
        log::debug!("{node}'s clock drifts {drift_ppm} ppm");
        let now = self.now;
        self.node_state_mut(node).clock.set_drift(now, drift_ppm);
        if self.is_up(node) {
            // Its wake-up, in the world's time, moved with its rate.
            self.schedule_timer(node, false);
        }
    }

    /// What `node`'s clock reads now.
    pub fn node_now(&self, node: NodeIndex) -> Instant {
        self.node_state(node).clock.node_instant(self.now)
    }

    /// Makes each of `node`'s disk writes from now on take `factor`× its
    /// modelled time (1: normal).
    ///
    /// # Panics
    /// If `factor` is 0 or above [`SLOWDOWN_FACTOR_MAX`].
    pub fn set_disk_slowdown(&mut self, node: NodeIndex, factor: u32) {
        assert!(
            (1..=SLOWDOWN_FACTOR_MAX).contains(&factor),
            "a disk slow-down of {factor} is outside 1..={SLOWDOWN_FACTOR_MAX}"
        );
        self.node_state_mut(node).disk_slowdown = factor;
    }

    /// Makes each job `node` starts from now on take `factor`× its
    /// modelled cost (1: normal).
    ///
    /// # Panics
    /// If `factor` is 0 or above [`SLOWDOWN_FACTOR_MAX`].
    pub fn set_cpu_slowdown(&mut self, node: NodeIndex, factor: u32) {
        assert!(
            (1..=SLOWDOWN_FACTOR_MAX).contains(&factor),
            "a CPU slow-down of {factor} is outside 1..={SLOWDOWN_FACTOR_MAX}"
        );
        self.node_state_mut(node).cpu_slowdown = factor;
    }
}

#[cfg(test)]
mod tests {
    use meshsync_core::io::DisconnectReason;
    use meshsync_core::reqresp::ProtocolId;
    use meshsync_core::{Duration, Notification};

    use super::*;
    use crate::requests::RequestOutcome;
    use crate::scenario::chain_faults::{producing_config, producing_genesis};
    use crate::sim::config::SimConfig;

    fn connected_pair(seed: u64) -> (Sim, NodeIndex, NodeIndex) {
        let mut sim = Sim::new(SimConfig::new(seed));
        let a = sim.add_node();
        let b = sim.add_node();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 10_000)
            .expect("a clean link connects");
        (sim, a, b)
    }

    fn disconnects(sim: &Sim, node: NodeIndex) -> Vec<DisconnectReason> {
        sim.notifications(node)
            .filter_map(|(_, notification)| match notification {
                Notification::PeerDisconnected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// Sends a Metadata request from `a` to `b` and runs until it ends;
    /// its outcome and latency.
    fn metadata_round_trip(sim: &mut Sim, a: NodeIndex, b: NodeIndex) -> (bool, Duration) {
        let finished = sim.request_log().records().len();
        sim.request(a, b, ProtocolId::Metadata, Vec::new());
        sim.run_until(|sim| sim.request_log().records().len() > finished, 100_000)
            .expect("the request ends");
        let record = &sim.request_log().records()[finished];
        (
            matches!(record.outcome, RequestOutcome::Response { .. }),
            record.latency(),
        )
    }

    #[test]
    fn a_reset_closes_both_ends_at_once() {
        let (mut sim, a, b) = connected_pair(1);
        let now = sim.now();
        assert_eq!(sim.reset_connections(a, b), 1);
        sim.run_until(|sim| !sim.has_peer(a, b) && !sim.has_peer(b, a), 100)
            .expect("both ends hear the reset");
        assert_eq!(sim.now(), now, "a reset takes no time to arrive");
        for node in [a, b] {
            assert!(
                matches!(disconnects(&sim, node).as_slice(),
                    [DisconnectReason::ConnectionLost(CloseCause::Io(text))] if text.contains("reset")),
                "{:?}",
                disconnects(&sim, node)
            );
        }
        assert_eq!(sim.network_counts().resets, 1);
        assert_eq!(sim.invariant_violations(), 0);
    }

    #[test]
    fn a_stalled_link_delivers_everything_late_and_in_order() {
        let (mut sim, a, b) = connected_pair(2);
        let (answered, quick) = metadata_round_trip(&mut sim, a, b);
        assert!(answered && quick < Duration::from_millis(200), "{quick:?}");
        sim.stall_link(a, b, sim.now() + Duration::from_secs(3));
        let (answered, stalled) = metadata_round_trip(&mut sim, a, b);
        assert!(answered, "the stream survived the stall");
        assert!(stalled >= Duration::from_millis(2_900), "{stalled:?}");
        assert!(sim.are_connected(a, b));
        assert!(disconnects(&sim, a).is_empty() && disconnects(&sim, b).is_empty());
    }

    /// A lossy cut that a connection outlives leaves a gap in its stream:
    /// the next message fails to decrypt. A holding cut (TCP across a
    /// short outage) delivers what it held at the heal, and the
    /// connection carries on.
    #[test]
    fn a_holding_cut_keeps_the_stream_whole_and_a_lossy_one_does_not() {
        for holding in [false, true] {
            let (mut sim, a, b) = connected_pair(3);
            let groups = [vec![a], vec![b]];
            if holding {
                sim.partition_holding(&groups);
            } else {
                sim.partition(&groups);
            }
            sim.request(a, b, ProtocolId::Metadata, Vec::new());
            sim.run_for(Duration::from_secs(2));
            sim.heal();
            sim.run_for(Duration::from_secs(3));
            let reasons = disconnects(&sim, b);
            if holding {
                assert!(reasons.is_empty(), "{reasons:?}");
                assert!(sim.are_connected(a, b));
                let record = &sim.request_log().records()[0];
                assert!(matches!(record.outcome, RequestOutcome::Response { .. }));
                assert!(record.latency() >= Duration::from_secs(2));
            } else {
                let (answered, _) = metadata_round_trip(&mut sim, a, b);
                assert!(!answered, "a stream with a gap in it cannot carry on");
                let reasons = disconnects(&sim, b);
                assert!(
                    reasons
                        .iter()
                        .any(|reason| matches!(reason, DisconnectReason::ProtocolViolation(_))),
                    "{reasons:?}"
                );
            }
        }
    }

    #[test]
    fn no_connection_forms_across_a_one_way_cut_until_it_heals() {
        let mut sim = Sim::new(SimConfig::new(4));
        let a = sim.add_node();
        let b = sim.add_node();
        sim.cut_one_way(&[b], &[a]);
        sim.dial(a, b);
        sim.run_for(Duration::from_secs(5));
        assert!(!sim.are_connected(a, b));
        sim.heal();
        sim.dial(a, b);
        sim.run_until(|sim| sim.are_connected(a, b), 10_000)
            .expect("it connects once healed");
    }

    #[test]
    fn a_skewed_clock_is_rebased_and_read_again_at_a_restart() {
        let (mut sim, a, _) = connected_pair(5);
        let base = sim.node(a).unix_ms_at_origin();
        sim.set_clock_skew(a, 1_500);
        assert_eq!(sim.node(a).unix_ms_at_origin(), base + 1_500);
        sim.crash(a);
        sim.restart(a);
        assert_eq!(sim.node(a).unix_ms_at_origin(), base + 1_500);
        sim.set_clock_skew(a, 0);
        assert_eq!(sim.node(a).unix_ms_at_origin(), base);
    }

    #[test]
    fn a_drifting_node_reads_its_own_clock_and_wakes_by_it() {
        let (mut sim, a, b) = connected_pair(6);
        let start = sim.now();
        sim.set_clock_drift(a, 100_000);
        sim.run_for(Duration::from_secs(10));
        let ran = sim.node_now(a).saturating_duration_since(start);
        assert!(
            ran >= Duration::from_millis(10_990) && ran <= Duration::from_millis(11_010),
            "{ran:?}"
        );
        assert_eq!(sim.node_now(b), sim.now(), "the other clock is true");
        // Its one wake-up is queued for when its own clock reads its deadline.
        let state = sim.node_state(a);
        let deadline = state
            .node
            .poll_timeout()
            .expect("a node with a peer has timers");
        assert_eq!(
            state.timer_at,
            Some(state.clock.world_instant(deadline).max(sim.now()))
        );
        assert!(sim.are_connected(a, b));
        assert_eq!(sim.invariant_violations(), 0);
    }

    /// When the follower imports each of the proposer's blocks, in
    /// milliseconds after its slot starts (500 ms slots).
    fn import_delays_ms(slow_disk: u32, slow_cpu: u32) -> Vec<u64> {
        let mut sim = Sim::new(SimConfig::new(7));
        let network_id = sim.config().network_id;
        let (genesis, mut keys) = producing_genesis(network_id, 1, 500);
        let config = producing_config(&sim, &genesis, Some(keys.remove(0)), 256);
        let proposer = sim.add_node_with_config(config);
        let config = producing_config(&sim, &genesis, None, 256);
        let follower = sim.add_node_with_config(config);
        sim.set_disk_slowdown(proposer, slow_disk);
        sim.set_cpu_slowdown(follower, slow_cpu);
        sim.dial(follower, proposer);
        sim.run_for(Duration::from_secs(10));
        sim.notifications(follower)
            .filter_map(|(at, notification)| match notification {
                Notification::BlockImported { slot, .. } if *slot >= 4 => {
                    Some(at.as_millis() - slot * 500)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_slow_disk_delays_publishing_and_slow_verification_delays_imports() {
        let normal = import_delays_ms(1, 1);
        assert!(normal.len() >= 10, "{normal:?}");
        assert!(normal.iter().all(|&ms| ms < 100), "{normal:?}");
        // 2 ms commits at 100×: the block is published (once durable) 200 ms late.
        let slow_disk = import_delays_ms(100, 1);
        assert!(!slow_disk.is_empty(), "{slow_disk:?}");
        assert!(slow_disk.iter().all(|&ms| ms >= 200), "{slow_disk:?}");
        // A 1.2 ms verification at 200×: imported 240 ms late at least.
        let slow_cpu = import_delays_ms(1, 200);
        assert!(!slow_cpu.is_empty(), "{slow_cpu:?}");
        assert!(slow_cpu.iter().all(|&ms| ms >= 240), "{slow_cpu:?}");
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_slow_down_of_zero_is_refused() {
        let mut sim = Sim::new(SimConfig::new(8));
        let a = sim.add_node();
        sim.set_cpu_slowdown(a, 0);
    }
}
