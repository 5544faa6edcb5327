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
        self.network.set_cuts_hold(true);
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
