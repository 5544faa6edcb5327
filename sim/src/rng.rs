//! Small, exact helpers over the world's seeded RNG.
//!
//! # Design
//! Only `rand_core` is a dependency, so the few distributions the simulator
//! needs live here. They are unbiased (rejection sampling), and each consumes
//! a number of RNG words that depends only on the RNG's output, never on the
//! platform, so a seed means the same run on every machine.

use meshsync_core::Duration;
use rand_core::RngCore;

/// A uniform integer in `0..bound`. `bound` must not be zero.
pub fn below(rng: &mut impl RngCore, bound: u64) -> u64 {
    assert!(bound > 0, "empty range");
    // Reject the top partial copy of `0..bound` so every value is equally likely.
    let zone = u64::MAX - (u64::MAX % bound + 1) % bound;
    loop {
        let word = rng.next_u64();
        if word <= zone {
            return word % bound;
        }
    }
}

/// A uniform integer in `low..=high`.
pub fn between(rng: &mut impl RngCore, low: u64, high: u64) -> u64 {
    assert!(low <= high, "empty range {low}..={high}");
    if high - low == u64::MAX {
        return rng.next_u64();
    }
    low + below(rng, high - low + 1)
}

/// A uniform duration in `low..=high`, to the microsecond.
pub fn duration_between(rng: &mut impl RngCore, (low, high): (Duration, Duration)) -> Duration {
    // Simulated spans are far below 2^64 microseconds (584,000 years).
    let micros = between(rng, low.as_micros() as u64, high.as_micros() as u64);
    Duration::from_micros(micros)
}

/// A uniform index into a slice of `len` elements.
pub fn index(rng: &mut impl RngCore, len: usize) -> usize {
    // usize fits in u64 on every supported platform, and the result is below `len`.
    below(rng, len as u64) as usize
}

/// True with probability `percent / 100`.
pub fn chance_pct(rng: &mut impl RngCore, percent: u32) -> bool {
    below(rng, 100) < u64::from(percent)
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for last in (1..items.len()).rev() {
        let pick = index(rng, last + 1);
        items.swap(last, pick);
    }
}

/// 32 bytes of seed for a child RNG.
pub fn seed_bytes(rng: &mut impl RngCore) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut seen = [false; 7];
        for _ in 0..1_000 {
            let value = below(&mut rng, 7);
            seen[value as usize] = true;
        }
        assert!(seen.iter().all(|&hit| hit));
        assert_eq!(between(&mut rng, 5, 5), 5);
        // The full range takes the shortcut; two draws agree with probability 2^-64.
        assert_ne!(
            between(&mut rng, 0, u64::MAX),
            between(&mut rng, 0, u64::MAX)
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut items: Vec<u32> = (0..50).collect();
        shuffle(&mut ChaCha20Rng::seed_from_u64(9), &mut items);
        let mut again: Vec<u32> = (0..50).collect();
        shuffle(&mut ChaCha20Rng::seed_from_u64(9), &mut again);
        assert_eq!(items, again, "same seed, same order");
        assert_ne!(items, (0..50).collect::<Vec<_>>());
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
