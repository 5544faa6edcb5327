//! Time: the core's clock (microseconds since the driver's origin) and the
//! wall-clock watch that notices the wall clock jumping against the
//! monotonic one and, as [`ClockPolicy`](super::ClockPolicy) says, re-bases
//! the core's slot clock or stops it producing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use meshsync_core::{Health, Input, Instant};

use super::{ClockPolicy, Driver};

/// How often the wall clock is compared with the monotonic clock.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How far the wall clock may move against the monotonic clock before it
/// counts as a jump: above NTP's slewing (at most 0.5 ms/s) and scheduling
/// noise, well below a slot.
pub const CLOCK_JUMP_TOLERANCE: Duration = Duration::from_millis(250);

impl Driver {
    /// The core's clock: microseconds since this driver was created.
    pub fn now(&self) -> Instant {
        core_instant(self.origin, StdInstant::now())
    }

    /// Compares the wall clock with the monotonic one now and then (see the module docs).
    pub(super) fn watch_clock(&mut self) {
        let now = StdInstant::now();
        if now < self.clock_check_at {
            return;
        }
        self.clock_check_at = now + CLOCK_CHECK_INTERVAL;
        let elapsed_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        let expected_ms = self.unix_ms_at_origin.saturating_add(elapsed_ms);
        let wall_ms = wall_ms(&self.clock_skew_ms);
        let jump_ms = i128::from(wall_ms) - i128::from(expected_ms);
        let tolerance_ms = CLOCK_JUMP_TOLERANCE.as_millis() as i128;
        if jump_ms.abs() <= tolerance_ms {
            if self.clock_untrusted {
                self.clock_untrusted = false;
                log::info!(
                    "[{:?}] the wall clock is back within {CLOCK_JUMP_TOLERANCE:?}: producing again",
                    self.peer_id
                );
                self.feed(Input::Health(Health::ClockTrusted));
            }
            return;
        }
        match self.clock_policy {
            ClockPolicy::Rebase => {
                log::warn!(
                    "[{:?}] the wall clock jumped by {jump_ms} ms against the monotonic clock \
                     (tolerance {} ms; set by hand, stepped by NTP, or a suspend): slots now \
                     follow it; slots already produced are not produced again",
                    self.peer_id,
                    tolerance_ms
                );
                self.unix_ms_at_origin = wall_ms.saturating_sub(elapsed_ms);
                self.feed(Input::Health(Health::ClockRebased {
                    unix_ms_at_origin: self.unix_ms_at_origin,
                }));
            }
            ClockPolicy::Refuse => {
                if !self.clock_untrusted {
                    self.clock_untrusted = true;
                    log::warn!(
                        "[{:?}] the wall clock jumped by {jump_ms} ms against the monotonic \
                         clock (tolerance {} ms): not producing until it is back",
                        self.peer_id,
                        tolerance_ms
                    );
                    self.feed(Input::Health(Health::ClockUntrusted));
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch at `time` (0 before it).
pub(super) fn unix_ms(time: SystemTime) -> u64 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// The wall clock in Unix ms, plus a test's skew.
pub(super) fn wall_ms(skew_ms: &Option<Arc<AtomicI64>>) -> u64 {
    let ms = unix_ms(SystemTime::now());
    match skew_ms {
        None => ms,
        Some(skew) => ms.saturating_add_signed(skew.load(Ordering::SeqCst)),
    }
}

/// `instant` on the core's clock that starts at `origin`.
pub(super) fn core_instant(origin: StdInstant, instant: StdInstant) -> Instant {
    let micros = instant.saturating_duration_since(origin).as_micros();
    Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The std instant of a core instant on the clock that starts at `origin`.
pub(super) fn std_instant(origin: StdInstant, instant: Instant) -> StdInstant {
    origin
        .checked_add(Duration::from_micros(instant.as_micros()))
        // Centuries away: treat as a day from now, which is never reached in practice.
        .unwrap_or_else(|| StdInstant::now() + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_convert_both_ways() {
        let origin = StdInstant::now();
        let later = origin + Duration::from_micros(1_234_567);
        let core = core_instant(origin, later);
        assert_eq!(core, Instant::from_micros(1_234_567));
        assert_eq!(std_instant(origin, core), later);
        assert_eq!(
            core_instant(later, origin),
            Instant::ZERO,
            "never before the origin"
        );
    }
}
