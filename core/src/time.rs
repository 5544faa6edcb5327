//! Time as a value.
//!
//! # Design
//! The core never reads a clock. Every entry point takes `now: Instant`, where
//! [`Instant`] counts microseconds from an origin the driver picks (process
//! start in `io-mio`, zero in the simulator). There is deliberately no
//! `Instant::now()`. All arithmetic saturates: a time derived from a value a
//! peer sent can never overflow or panic (gossipsub's backoff overflow lesson).

use std::fmt;
use std::ops::Add;
pub use std::time::Duration;

/// A point in time, in microseconds since the driver's origin.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant { micros: 0 };
    /// Later than any real time; used as "never".
    pub const MAX: Instant = Instant { micros: u64::MAX };

    /// The instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the origin, rounded down.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }

    /// `self + duration`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, duration: Duration) -> Instant {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(micros),
        }
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }

    /// Moves a machine's clock (`self`, the last instant it was given) to
    /// `now` and returns it: never backwards. Debug builds check the
    /// driver's contract that the instants it passes do not go back.
    pub(crate) fn advance_to(&mut self, now: Instant) -> Instant {
        debug_assert!(now >= *self, "time went backwards: {now} < {self}");
        *self = (*self).max(now);
        *self
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating, like [`Instant::saturating_add`].
    fn add(self, duration: Duration) -> Instant {
        self.saturating_add(duration)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let late = Instant::from_micros(u64::MAX - 1);
        assert_eq!(late + Duration::from_secs(10), Instant::MAX);
        assert_eq!(late + Duration::MAX, Instant::MAX);
        let early = Instant::from_micros(5);
        assert_eq!(early.saturating_duration_since(late), Duration::ZERO);
        assert_eq!(
            late.saturating_duration_since(early),
            Duration::from_micros(u64::MAX - 6)
        );
    }

    #[test]
    fn formats_as_seconds() {
        assert_eq!(format!("{}", Instant::from_micros(1_500_000)), "1.500000s");
    }
}
