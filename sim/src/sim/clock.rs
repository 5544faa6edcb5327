//! Each node's own clock: the instants the world hands a node and the
//! wake-ups it asks for, read through a clock that may run fast or slow
//! (drift), and the Unix time it believes (skew).
//!
//! A real host's monotonic clock and wall clock both tick from one
//! oscillator, so a drifting host sees its timers fire late or early and
//! its slots start early or late. [`NodeClock`] maps the world's instants
//! to the node's, piecewise linearly: a change of rate starts a new piece
//! at the node's current reading, so the node's instants never go back.
//! With no drift the node's instants are the world's, bit for bit, so
//! scenarios that never set a clock trace exactly as before.

use meshsync_core::Instant;

/// Parts per million: a drift of `DRIFT_PPM_MAX` runs a clock at 1.5×
/// or 0.5× the world's. A rate of zero or below would stop time.
pub const DRIFT_PPM_MAX: i64 = 500_000;
const PPM: i128 = 1_000_000;

/// A node's clock: its reading at `anchor_world` was `anchor_node`, and it
/// has run at `1 + drift_ppm / 10⁶` of the world's rate since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    anchor_world: Instant,
    anchor_node: Instant,
    drift_ppm: i64,
}

impl NodeClock {
    /// The node's reading at the world's instant `world` (not before the anchor).
    pub fn node_instant(&self, world: Instant) -> Instant {
        if self.drift_ppm == 0 && self.anchor_world == self.anchor_node {
            return world;
        }
        let elapsed = i128::from(
            world
                .as_micros()
                .saturating_sub(self.anchor_world.as_micros()),
        );
        let scaled = elapsed * (PPM + i128::from(self.drift_ppm)) / PPM;
        let micros = i128::from(self.anchor_node.as_micros()) + scaled;
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The first world instant at which the node reads `node` or later
    /// (the anchor if it already did).
    pub fn world_instant(&self, node: Instant) -> Instant {
        if self.drift_ppm == 0 && self.anchor_world == self.anchor_node {
            return node;
        }
        if node <= self.anchor_node {
            return self.anchor_world;
        }
        let ahead = i128::from(node.as_micros() - self.anchor_node.as_micros());
        let rate = PPM + i128::from(self.drift_ppm);
        // Rounded up: the node must not wake before its deadline.
        let world = (ahead * PPM + rate - 1) / rate;
        let micros = i128::from(self.anchor_world.as_micros()) + world;
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// From the world's instant `now` on, runs at `1 + drift_ppm / 10⁶`
    /// of the world's rate, continuing from the reading it has now.
    ///
    /// # Panics
    /// If `drift_ppm` is beyond ±[`DRIFT_PPM_MAX`] (a bug in the scenario).
    pub fn set_drift(&mut self, now: Instant, drift_ppm: i64) {
        assert!(
            drift_ppm.abs() <= DRIFT_PPM_MAX,
            "a drift of {drift_ppm} ppm is beyond ±{DRIFT_PPM_MAX}"
        );
        self.anchor_node = self.node_instant(now);
        self.anchor_world = now;
        self.drift_ppm = drift_ppm;
    }

    /// The rate it runs at now, in parts per million off the world's.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Instant {
        Instant::from_micros(millis * 1_000)
    }

    #[test]
    fn an_undrifted_clock_reads_the_world() {
        let clock = NodeClock::default();
        assert_eq!(clock.node_instant(at(1_234)), at(1_234));
        assert_eq!(clock.world_instant(at(1_234)), at(1_234));
    }

    #[test]
    fn a_fast_clock_reads_ahead_and_wakes_early_in_world_time() {
        let mut clock = NodeClock::default();
        clock.set_drift(at(1_000), 100_000); // 10 % fast from 1 s on.
        assert_eq!(clock.node_instant(at(1_000)), at(1_000));
        assert_eq!(clock.node_instant(at(2_000)), at(2_100));
        // A deadline 1.1 s ahead on its clock is 1 s ahead in the world's.
        assert_eq!(clock.world_instant(at(2_100)), at(2_000));
        assert_eq!(clock.world_instant(at(500)), at(1_000));
    }

    #[test]
    fn changing_the_rate_never_takes_the_reading_back() {
        let mut clock = NodeClock::default();
        clock.set_drift(at(0), 200_000);
        let before = clock.node_instant(at(10_000));
        clock.set_drift(at(10_000), -200_000);
        assert_eq!(clock.node_instant(at(10_000)), before);
        assert_eq!(clock.node_instant(at(20_000)), at(12_000 + 8_000));
        clock.set_drift(at(20_000), 0);
        assert_eq!(clock.node_instant(at(21_000)), at(21_000));
    }

    #[test]
    fn a_wake_up_mapped_to_the_world_is_never_early() {
        let mut clock = NodeClock::default();
        clock.set_drift(at(0), -333_333);
        for micros in [1u64, 7, 999, 1_000_001, 123_456_789] {
            let deadline = Instant::from_micros(micros);
            let world = clock.world_instant(deadline);
            assert!(clock.node_instant(world) >= deadline, "{micros}");
            let earlier = Instant::from_micros(world.as_micros() - 1);
            assert!(clock.node_instant(earlier) < deadline, "{micros}");
        }
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn a_clock_that_would_stop_is_refused() {
        NodeClock::default().set_drift(at(0), -1_000_000);
    }
}
