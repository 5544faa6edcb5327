//! How a link between two simulated nodes delays and slices bytes.
//!
//! # Design
//! A [`LinkModel`] samples a one-way delay: base latency ± a uniform jitter.
//! Each direction of a connection is a [`Pipe`] that remembers its latest
//! arrival, so a later send never overtakes an earlier one however the jitter
//! falls (arrival = max(previous arrival, now + delay)), exactly like TCP.
//! Delivered chunks may be cut into random pieces to exercise the core's
//! incremental decoders; the pieces keep their order.
//!
//! Bandwidth, loss and resets belong here too when they come: they are
//! properties of a link, sampled from the world's RNG.
//!
//! # Limits
//! Every delay is at least [`DELAY_MIN`], so each hop moves virtual time
//! forward and two nodes bouncing bytes cannot spin at one instant.

use meshsync_core::{Duration, Instant};
use rand_core::RngCore;

use crate::rng;

/// The shortest one-way delay; see the module's `# Limits`.
pub const DELAY_MIN: Duration = Duration::from_micros(1);
/// Default one-way latency: a continent-sized link.
pub const LATENCY_DEFAULT: Duration = Duration::from_millis(25);
/// Default jitter, in percent of the latency either way.
pub const JITTER_PCT_DEFAULT: u32 = 10;
/// Default share of deliveries cut into pieces, in percent.
pub const SPLIT_PCT_DEFAULT: u32 = 25;
/// Most pieces one delivery is cut into.
pub const SPLIT_PIECES_MAX: usize = 4;

/// The model of every link in the world (one model for now; per-link models later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkModel {
    /// One-way latency before jitter.
    #[serde(rename = "latency_ms", serialize_with = "serialize_millis")]
    pub latency: Duration,
    /// Uniform jitter of at most this percent of `latency`, either way. At most 100.
    pub jitter_pct: u32,
    /// Percent of deliveries whose bytes are cut into 2..=[`SPLIT_PIECES_MAX`] pieces.
    pub split_pct: u32,
}

impl Default for LinkModel {
    fn default() -> LinkModel {
        LinkModel {
            latency: LATENCY_DEFAULT,
            jitter_pct: JITTER_PCT_DEFAULT,
            split_pct: SPLIT_PCT_DEFAULT,
        }
    }
}

fn serialize_millis<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1_000.0)
}

impl LinkModel {
    /// Panics on a model no link can have (a bug in the caller).
    pub fn validate(&self) {
        assert!(self.jitter_pct <= 100, "jitter above 100 %");
        assert!(self.split_pct <= 100, "split share above 100 %");
    }

    /// One sampled one-way delay: latency ± jitter, never below [`DELAY_MIN`].
    pub fn sample_delay(&self, rng: &mut impl RngCore) -> Duration {
        // Durations of simulated links fit in u64 microseconds (half a million years).
        let latency_us = u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX);
        let jitter_us = latency_us / 100 * u64::from(self.jitter_pct)
            + latency_us % 100 * u64::from(self.jitter_pct) / 100;
        let delay_us = if jitter_us == 0 {
            latency_us
        } else {
            rng::between(
                rng,
                latency_us - jitter_us,
                latency_us.saturating_add(jitter_us),
            )
        };
        Duration::from_micros(delay_us).max(DELAY_MIN)
    }

    /// A round trip: two independent one-way delays (a TCP connect or refusal).
    pub fn sample_round_trip(&self, rng: &mut impl RngCore) -> Duration {
        self.sample_delay(rng) + self.sample_delay(rng)
    }

    /// `bytes` as the reader will see them: whole, or cut into pieces.
    pub fn slice(&self, rng: &mut impl RngCore, bytes: Vec<u8>) -> Vec<Vec<u8>> {
        if bytes.len() < 2 || !rng::chance_pct(rng, self.split_pct) {
            return vec![bytes];
        }
        let pieces_max = SPLIT_PIECES_MAX.min(bytes.len());
        // At least two pieces, at most one per byte.
        let pieces = 2 + rng::index(rng, pieces_max - 1);
        let mut cuts: Vec<usize> = Vec::with_capacity(pieces + 1);
        cuts.push(0);
        while cuts.len() < pieces {
            let cut = 1 + rng::index(rng, bytes.len() - 1);
            if !cuts.contains(&cut) {
                cuts.push(cut);
            }
        }
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.windows(2)
            .map(|window| bytes[window[0]..window[1]].to_vec())
            .collect()
    }
}

/// One direction of a connection: keeps arrivals in send order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pipe {
    arrival_last: Instant,
}

impl Pipe {
    /// The arrival instant of something sent at `now` that takes `delay`:
    /// never before anything sent earlier on this pipe.
    pub fn arrival(&mut self, now: Instant, delay: Duration) -> Instant {
        let arrival = self.arrival_last.max(now + delay);
        self.arrival_last = arrival;
        arrival
    }

    /// Holds later arrivals on this pipe until at least `arrival` (bytes
    /// that queued behind others at the receiving end).
    pub fn hold_until(&mut self, arrival: Instant) {
        self.arrival_last = self.arrival_last.max(arrival);
    }

    /// The latest arrival scheduled so far.
    pub fn arrival_last(&self) -> Instant {
        self.arrival_last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::EventQueue;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn delays_stay_within_the_jitter_band() {
        let model = LinkModel {
            latency: Duration::from_millis(25),
            jitter_pct: 10,
            split_pct: 0,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let delays: Vec<Duration> = (0..1_000).map(|_| model.sample_delay(&mut rng)).collect();
        let low = Duration::from_micros(22_500);
        let high = Duration::from_micros(27_500);
        assert!(delays.iter().all(|delay| (low..=high).contains(delay)));
        assert!(delays
            .iter()
            .any(|delay| *delay < Duration::from_millis(24)));
        assert!(delays
            .iter()
            .any(|delay| *delay > Duration::from_millis(26)));
        let flat = LinkModel {
            jitter_pct: 0,
            ..model
        };
        assert_eq!(flat.sample_delay(&mut rng), Duration::from_millis(25));
        let zero = LinkModel {
            latency: Duration::ZERO,
            ..model
        };
        assert_eq!(zero.sample_delay(&mut rng), DELAY_MIN);
    }

    #[test]
    fn one_direction_delivers_in_send_order_whatever_the_jitter() {
        // Sends 0.1 ms apart on a link whose jitter is ±100 % of 25 ms: many
        // raw samples would overtake each other, the pipe must not let them.
        let model = LinkModel {
            latency: Duration::from_millis(25),
            jitter_pct: 100,
            split_pct: 50,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut pipe = Pipe::default();
        let mut queue = EventQueue::new();
        let mut overtakes_avoided = 0;
        for message in 0u32..500 {
            let now = Instant::from_micros(u64::from(message) * 100);
            let delay = model.sample_delay(&mut rng);
            if now + delay < pipe.arrival_last() {
                overtakes_avoided += 1;
            }
            let arrival = pipe.arrival(now, delay);
            assert!(arrival >= now + delay);
            for piece in model.slice(&mut rng, message.to_be_bytes().to_vec()) {
                queue.push(arrival, piece);
            }
        }
        assert!(overtakes_avoided > 100, "the test must exercise reordering");
        let mut received = Vec::new();
        let mut previous = Instant::ZERO;
        while let Some((at, piece)) = queue.pop() {
            assert!(at >= previous);
            previous = at;
            received.extend(piece);
        }
        let sent: Vec<u8> = (0u32..500).flat_map(u32::to_be_bytes).collect();
        assert_eq!(received, sent);
    }

    #[test]
    fn slicing_keeps_every_byte_in_order() {
        let model = LinkModel {
            split_pct: 100,
            ..LinkModel::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for len in [2usize, 3, 10, 1_000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let pieces = model.slice(&mut rng, bytes.clone());
            assert!(pieces.len() >= 2 && pieces.len() <= SPLIT_PIECES_MAX);
            assert!(pieces.iter().all(|piece| !piece.is_empty()));
            assert_eq!(pieces.concat(), bytes);
        }
        assert_eq!(model.slice(&mut rng, vec![7]), vec![vec![7]]);
        let whole = LinkModel {
            split_pct: 0,
            ..model
        };
        assert_eq!(whole.slice(&mut rng, vec![1, 2, 3]), vec![vec![1, 2, 3]]);
    }
}
