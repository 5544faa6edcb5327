//! Token-bucket rate limits per peer and protocol, plus an optional global
//! budget, used both to serve (refuse a peer over its quota) and to request
//! (never send a peer more than the same quotas allow).
//!
//! # Design
//! Each bucket is kept in the "virtual scheduling" form of a token bucket
//! (GCRA, as Lighthouse does): one number per bucket, the theoretical arrival
//! time `tat` at which the bucket will be full again. Spending `cost` tokens
//! moves `tat` forward by `cost` token intervals; a spend is allowed if
//! afterwards `tat` is at most one full period ahead of `now`. For a quota of
//! `n` tokens per period `P`, time is counted in units of `1/n` microsecond,
//! so a token interval is exactly `P` (in microseconds) units and no rounding
//! ever happens: `now_units = now_us · n`, spend allowed iff
//! `max(tat, now_units) + cost · P ≤ now_units + n · P`. All arithmetic is on
//! `u128` and saturates.
//!
//! # Security
//! Provided: a peer can never be served more than `n + n · t / P` cost units
//! of a protocol over any span `t`; state is bounded (one bucket per
//! configured protocol per peer, at most `peers_max` peers, the least recently
//! checked evicted first); a protocol without a quota is refused, so names a
//! peer makes up cannot create buckets.
//! Not provided: fairness between peers within the global budget (first come,
//! first served), or memory of a peer across eviction or `remove_peer`.
//!
//! # Limits
//! `peers_max` peers ([`RATE_LIMITED_PEERS_MAX`] by default), one bucket per
//! built-in protocol and at most [`APPLICATION_PROTOCOLS_MAX`] application
//! protocols each.

use std::collections::BTreeMap;

use super::limits::{
    APPLICATION_PROTOCOLS_MAX, BLOCKS_BY_RANGE_QUOTA, BLOCKS_BY_ROOT_QUOTA, GLOBAL_SERVING_QUOTA,
    GOODBYE_QUOTA, METADATA_QUOTA, PING_QUOTA, RATE_LIMITED_PEERS_MAX, STATUS_QUOTA,
};
use super::wire::ProtocolId;
use crate::identity::PeerId;
use crate::time::{Duration, Instant};

/// A bucket's shape: up to `tokens_max` tokens (the burst), refilled evenly
/// so that `tokens_max` tokens come back every `period`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Quota {
    /// Bucket size: the most that can be spent at once.
    pub tokens_max: u64,
    /// Time to refill an empty bucket.
    pub period: Duration,
}

impl Quota {
    /// `tokens_max` tokens per `period`.
    ///
    /// # Panics
    /// If `tokens_max` is 0 or `period` is shorter than a microsecond: such a
    /// quota allows nothing or everything, and is a configuration bug.
    pub const fn new(tokens_max: u64, period: Duration) -> Quota {
        assert!(tokens_max > 0, "a quota needs at least one token");
        assert!(period.as_micros() > 0, "a quota needs a period");
        Quota { tokens_max, period }
    }

    fn period_micros(&self) -> u128 {
        self.period.as_micros()
    }

    /// Spending `cost` from a bucket at `tat` at time `now`.
    fn spend(&self, tat: u128, now: Instant, cost: u64) -> Spend {
        if cost > self.tokens_max {
            return Spend::OverCapacity;
        }
        let tokens_max = u128::from(self.tokens_max);
        let now_units = u128::from(now.as_micros()).saturating_mul(tokens_max);
        let new_tat = tat
            .max(now_units)
            .saturating_add(u128::from(cost).saturating_mul(self.period_micros()));
        let horizon = now_units.saturating_add(tokens_max.saturating_mul(self.period_micros()));
        if new_tat <= horizon {
            return Spend::Allowed { tat: new_tat };
        }
        let wait_units = new_tat - horizon;
        let wait_micros = wait_units.div_ceil(tokens_max);
        Spend::Limited {
            retry_after: Duration::from_micros(u64::try_from(wait_micros).unwrap_or(u64::MAX)),
        }
    }

    /// Whole tokens in a bucket at `tat` at time `now`.
    fn tokens(&self, tat: u128, now: Instant) -> u64 {
        let tokens_max = u128::from(self.tokens_max);
        let now_units = u128::from(now.as_micros()).saturating_mul(tokens_max);
        let horizon = now_units.saturating_add(tokens_max.saturating_mul(self.period_micros()));
        let spent_until = tat.max(now_units);
        let tokens = horizon.saturating_sub(spent_until) / self.period_micros();
        u64::try_from(tokens)
            .unwrap_or(u64::MAX)
            .min(self.tokens_max)
    }
}

enum Spend {
    Allowed { tat: u128 },
    Limited { retry_after: Duration },
    OverCapacity,
}

/// The answer of [`RateLimiter::check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RateCheck {
    /// Within quota; the tokens are spent.
    Allowed,
    /// Over quota now; the same cost would be allowed after `retry_after`
    /// (if nothing else is spent meanwhile). Nothing is spent.
    Limited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The cost is larger than the bucket (or the global budget) can ever hold.
    OverCapacity,
    /// No quota is configured for the protocol: it is not served (or not
    /// requested) at all.
    NoQuota,
}

/// What a [`RateLimiter`] enforces.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RateLimiterConfig {
    /// The per-peer quota of each protocol; protocols missing here are refused.
    pub quotas: BTreeMap<ProtocolId, Quota>,
    /// Shared by all peers, for protocols whose
    /// [`ProtocolId::draws_on_global_quota`] is true.
    pub global: Option<Quota>,
    /// Peers with buckets at most; past it the least recently checked is forgotten.
    pub peers_max: usize,
}

impl RateLimiterConfig {
    /// The Lighthouse-like quotas for the built-in protocols, with no global budget.
    fn built_in() -> RateLimiterConfig {
        let quotas = [
            (ProtocolId::Status, STATUS_QUOTA),
            (ProtocolId::Ping, PING_QUOTA),
            (ProtocolId::Metadata, METADATA_QUOTA),
            (ProtocolId::Goodbye, GOODBYE_QUOTA),
            (ProtocolId::BlocksByRange, BLOCKS_BY_RANGE_QUOTA),
            (ProtocolId::BlocksByRoot, BLOCKS_BY_ROOT_QUOTA),
        ];
        RateLimiterConfig {
            quotas: quotas.into_iter().collect(),
            global: None,
            peers_max: RATE_LIMITED_PEERS_MAX,
        }
    }

    /// For serving: the built-in quotas and [`GLOBAL_SERVING_QUOTA`].
    pub fn serving() -> RateLimiterConfig {
        RateLimiterConfig {
            global: Some(GLOBAL_SERVING_QUOTA),
            ..RateLimiterConfig::built_in()
        }
    }

    /// For requesting: the same per-peer quotas a peer applies to us, and no
    /// global budget (the peer's global budget is its own business).
    pub fn requesting() -> RateLimiterConfig {
        RateLimiterConfig::built_in()
    }
}

/// Why a quota could not be set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuotaError {
    /// [`APPLICATION_PROTOCOLS_MAX`] application protocols have quotas already.
    TooManyApplicationProtocols,
}

/// Counts of [`RateLimiter::check`] answers and evictions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateCounters {
    /// Checks allowed.
    pub allowed: u64,
    /// Checks limited by a peer's bucket.
    pub limited_peer: u64,
    /// Checks limited by the global budget (the peer's bucket would have allowed).
    pub limited_global: u64,
    /// Checks refused as over capacity or without a quota.
    pub refused: u64,
    /// Peers forgotten to stay within `peers_max`.
    pub peers_evicted: u64,
}

/// Token buckets per peer and protocol, plus an optional global budget.
///
/// # Methods
/// Getters: [`RateLimiter::allowed_at`], [`RateLimiter::tokens`],
/// [`RateLimiter::tracked_peers`], [`RateLimiter::counters`]. Mutators:
/// [`RateLimiter::check`], [`RateLimiter::set_quota`], [`RateLimiter::remove_peer`].
#[derive(Clone, Debug)]
pub struct RateLimiter {
    config: RateLimiterConfig,
    peers: BTreeMap<PeerId, PeerBuckets>,
    /// The global budget's `tat`.
    global_tat: u128,
    counters: RateCounters,
    last_now: Instant,
}

#[derive(Clone, Debug)]
struct PeerBuckets {
    /// `tat` per protocol; a missing bucket is full.
    tats: BTreeMap<ProtocolId, u128>,
    last_checked: Instant,
}

impl RateLimiter {
    /// A limiter enforcing `config`.
    ///
    /// # Panics
    /// If `config.peers_max` is 0.
    pub fn new(config: RateLimiterConfig) -> RateLimiter {
        assert!(
            config.peers_max > 0,
            "the limiter must track at least one peer"
        );
        RateLimiter {
            config,
            peers: BTreeMap::new(),
            global_tat: 0,
            counters: RateCounters::default(),
            last_now: Instant::ZERO,
        }
    }

    /// Sets (or replaces) the per-peer quota of `protocol`. Replacing one
    /// refills every peer's bucket for it.
    pub fn set_quota(&mut self, protocol: ProtocolId, quota: Quota) -> Result<(), QuotaError> {
        let is_new_application = matches!(protocol, ProtocolId::Application(_))
            && !self.config.quotas.contains_key(&protocol);
        if is_new_application {
            let applications = self
                .config
                .quotas
                .keys()
                .filter(|protocol| matches!(protocol, ProtocolId::Application(_)))
                .count();
            if applications >= APPLICATION_PROTOCOLS_MAX {
                return Err(QuotaError::TooManyApplicationProtocols);
            }
        }
        self.config.quotas.insert(protocol, quota);
        for buckets in self.peers.values_mut() {
            buckets.tats.remove(&protocol);
        }
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &RateLimiterConfig {
        &self.config
    }

    /// Spends `cost` (at least 1) tokens of `peer`'s `protocol` bucket, and of
    /// the global budget when the protocol draws on it, if both allow;
    /// otherwise spends nothing and says when to retry.
    pub fn check(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: ProtocolId,
        cost: u64,
    ) -> RateCheck {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
        let cost = cost.max(1);
        let (peer_spend, global_spend) = match self.evaluate(now, &peer, &protocol, cost) {
            Ok(spends) => spends,
            Err(refusal) => {
                self.counters.refused += 1;
                return refusal;
            }
        };
        if let Some(buckets) = self.peers.get_mut(&peer) {
            buckets.last_checked = now;
        }
        let peer_tat = match peer_spend {
            Spend::Allowed { tat } => tat,
            Spend::Limited { retry_after } => {
                self.counters.limited_peer += 1;
                let retry_after = match global_spend {
                    Some(Spend::Limited {
                        retry_after: global,
                    }) => retry_after.max(global),
                    _ => retry_after,
                };
                return RateCheck::Limited { retry_after };
            }
            Spend::OverCapacity => unreachable!("evaluate refuses over-capacity spends"),
        };
        let global_tat = match global_spend {
            None => None,
            Some(Spend::Allowed { tat }) => Some(tat),
            Some(Spend::Limited { retry_after }) => {
                self.counters.limited_global += 1;
                return RateCheck::Limited { retry_after };
            }
            Some(Spend::OverCapacity) => unreachable!("evaluate refuses over-capacity spends"),
        };
        self.counters.allowed += 1;
        if let Some(tat) = global_tat {
            self.global_tat = tat;
        }
        self.buckets_mut(now, peer).tats.insert(protocol, peer_tat);
        RateCheck::Allowed
    }

    /// The earliest instant, `now` or later, at which [`RateLimiter::check`]
    /// would allow `cost`; `None` if it never would (over capacity or no quota).
    /// Spends nothing.
    pub fn allowed_at(
        &self,
        now: Instant,
        peer: &PeerId,
        protocol: &ProtocolId,
        cost: u64,
    ) -> Option<Instant> {
        let (peer_spend, global_spend) = self.evaluate(now, peer, protocol, cost.max(1)).ok()?;
        let wait = |spend: &Spend| match spend {
            Spend::Limited { retry_after } => *retry_after,
            _ => Duration::ZERO,
        };
        let global_wait = global_spend.as_ref().map(wait).unwrap_or(Duration::ZERO);
        Some(now + wait(&peer_spend).max(global_wait))
    }

    /// Whole tokens left in `peer`'s `protocol` bucket at `now` (`None`
    /// without a quota). For metrics and tests.
    pub fn tokens(&self, now: Instant, peer: &PeerId, protocol: &ProtocolId) -> Option<u64> {
        let quota = self.config.quotas.get(protocol)?;
        Some(quota.tokens(self.tat(peer, protocol), now))
    }

    /// Forgets `peer` (call when it disconnects).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Peers with buckets.
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }

    /// Event counts.
    pub fn counters(&self) -> &RateCounters {
        &self.counters
    }

    fn tat(&self, peer: &PeerId, protocol: &ProtocolId) -> u128 {
        self.peers
            .get(peer)
            .and_then(|buckets| buckets.tats.get(protocol))
            .copied()
            .unwrap_or(0)
    }

    /// The peer's spend and, if the protocol draws on it, the global one;
    /// `Err` when either can never allow the cost.
    fn evaluate(
        &self,
        now: Instant,
        peer: &PeerId,
        protocol: &ProtocolId,
        cost: u64,
    ) -> Result<(Spend, Option<Spend>), RateCheck> {
        let quota = self.config.quotas.get(protocol).ok_or(RateCheck::NoQuota)?;
        let peer_spend = quota.spend(self.tat(peer, protocol), now, cost);
        if matches!(peer_spend, Spend::OverCapacity) {
            return Err(RateCheck::OverCapacity);
        }
        let global_spend = match self.config.global {
            Some(global) if protocol.draws_on_global_quota() => {
                let spend = global.spend(self.global_tat, now, cost);
                if matches!(spend, Spend::OverCapacity) {
                    return Err(RateCheck::OverCapacity);
                }
                Some(spend)
            }
            _ => None,
        };
        Ok((peer_spend, global_spend))
    }

    /// The peer's buckets, created (evicting the least recently checked peer
    /// if at the cap) if it has none.
    fn buckets_mut(&mut self, now: Instant, peer: PeerId) -> &mut PeerBuckets {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.peers_max {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(id, buckets)| (buckets.last_checked, **id))
                .map(|(id, _)| *id)
                .expect("at the cap, which is at least 1, so not empty");
            self.peers.remove(&oldest);
            self.counters.peers_evicted += 1;
        }
        let buckets = self.peers.entry(peer).or_insert_with(|| PeerBuckets {
            tats: BTreeMap::new(),
            last_checked: now,
        });
        buckets.last_checked = now;
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reqresp::wire::ProtocolName;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn at_millis(millis: u64) -> Instant {
        Instant::from_micros(millis * 1_000)
    }

    #[test]
    fn burst_then_refill_over_time() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let (a, ping) = (peer(1), ProtocolId::Ping);
        let now = at_millis(1_000);
        assert_eq!(limiter.tokens(now, &a, &ping), Some(2));
        assert_eq!(limiter.check(now, a, ping, 1), RateCheck::Allowed);
        assert_eq!(limiter.check(now, a, ping, 1), RateCheck::Allowed);
        assert_eq!(limiter.tokens(now, &a, &ping), Some(0));
        // Ping is 2 per 10 s: one token every 5 s.
        assert_eq!(
            limiter.check(now, a, ping, 1),
            RateCheck::Limited {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(
            limiter.check(at_millis(5_999), a, ping, 1),
            RateCheck::Limited {
                retry_after: Duration::from_millis(1)
            }
        );
        assert_eq!(
            limiter.check(at_millis(6_000), a, ping, 1),
            RateCheck::Allowed
        );
        // Long idle refills to the burst, never beyond.
        let later = at_millis(1_000_000);
        assert_eq!(limiter.tokens(later, &a, &ping), Some(2));
        assert_eq!(limiter.check(later, a, ping, 2), RateCheck::Allowed);
        assert!(matches!(
            limiter.check(later, a, ping, 1),
            RateCheck::Limited { .. }
        ));
        let counters = limiter.counters();
        assert_eq!((counters.allowed, counters.limited_peer), (4, 3));
    }

    #[test]
    fn fractional_token_intervals_are_exact() {
        // 1024 blocks per 10 s: one block every 9765.625 µs.
        let mut limiter = RateLimiter::new(RateLimiterConfig::requesting());
        let (a, range) = (peer(1), ProtocolId::BlocksByRange);
        let now = at_millis(0);
        for _ in 0..16 {
            assert_eq!(limiter.check(now, a, range, 64), RateCheck::Allowed);
        }
        assert_eq!(
            limiter.check(now, a, range, 64),
            RateCheck::Limited {
                retry_after: Duration::from_micros(625_000)
            }
        );
        assert_eq!(
            limiter.check(now, a, range, 1),
            RateCheck::Limited {
                // ceil(9765.625)
                retry_after: Duration::from_micros(9_766)
            }
        );
        assert_eq!(
            limiter.check(Instant::from_micros(9_765), a, range, 1),
            RateCheck::Limited {
                retry_after: Duration::from_micros(1)
            }
        );
        assert_eq!(
            limiter.check(Instant::from_micros(9_766), a, range, 1),
            RateCheck::Allowed
        );
        // 100 s later exactly 1024 more, not 1023 from rounding.
        let later = Instant::from_micros(9_766 + 100_000_000);
        assert_eq!(limiter.tokens(later, &a, &range), Some(1024));
    }

    #[test]
    fn peers_and_protocols_have_separate_buckets() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::requesting());
        let now = at_millis(0);
        assert_eq!(
            limiter.check(now, peer(1), ProtocolId::Goodbye, 1),
            RateCheck::Allowed
        );
        assert!(matches!(
            limiter.check(now, peer(1), ProtocolId::Goodbye, 1),
            RateCheck::Limited { .. }
        ));
        assert_eq!(
            limiter.check(now, peer(2), ProtocolId::Goodbye, 1),
            RateCheck::Allowed
        );
        assert_eq!(
            limiter.check(now, peer(1), ProtocolId::Status, 1),
            RateCheck::Allowed
        );
    }

    #[test]
    fn global_budget_limits_costly_protocols_across_peers() {
        let mut config = RateLimiterConfig::serving();
        config.global = Some(Quota::new(100, Duration::from_secs(10)));
        let mut limiter = RateLimiter::new(config);
        let now = at_millis(0);
        assert_eq!(
            limiter.check(now, peer(1), ProtocolId::BlocksByRange, 64),
            RateCheck::Allowed
        );
        // Peer 2's own bucket is full, but only 36 global units are left.
        assert_eq!(
            limiter.check(now, peer(2), ProtocolId::BlocksByRange, 64),
            RateCheck::Limited {
                retry_after: Duration::from_millis(2_800)
            }
        );
        assert_eq!(limiter.counters().limited_global, 1);
        // Nothing was spent from peer 2's bucket by the refused check.
        assert_eq!(
            limiter.tokens(now, &peer(2), &ProtocolId::BlocksByRange),
            Some(1024)
        );
        assert_eq!(
            limiter.check(now, peer(2), ProtocolId::BlocksByRoot, 36),
            RateCheck::Allowed
        );
        // Control protocols do not draw on the global budget.
        assert_eq!(
            limiter.check(now, peer(3), ProtocolId::Status, 1),
            RateCheck::Allowed
        );
        assert_eq!(
            limiter.check(now, peer(3), ProtocolId::BlocksByRange, 101),
            RateCheck::OverCapacity
        );
    }

    #[test]
    fn refusals_for_capacity_and_unknown_protocols() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let now = at_millis(0);
        assert_eq!(
            limiter.check(now, peer(1), ProtocolId::BlocksByRoot, 129),
            RateCheck::OverCapacity
        );
        assert_eq!(
            limiter.allowed_at(now, &peer(1), &ProtocolId::BlocksByRoot, 129),
            None
        );
        let echo = ProtocolId::Application(ProtocolName::new("/app/echo/1").unwrap());
        assert_eq!(limiter.check(now, peer(1), echo, 1), RateCheck::NoQuota);
        assert_eq!(limiter.tracked_peers(), 0, "refusals create no state");
        limiter
            .set_quota(echo, Quota::new(1, Duration::from_secs(1)))
            .unwrap();
        assert_eq!(limiter.check(now, peer(1), echo, 1), RateCheck::Allowed);
        assert_eq!(limiter.counters().refused, 2);
    }

    #[test]
    fn application_quotas_are_capped() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        for index in 0..APPLICATION_PROTOCOLS_MAX {
            let name = ProtocolName::new(&format!("/app/{index}")).unwrap();
            limiter
                .set_quota(
                    ProtocolId::Application(name),
                    Quota::new(1, Duration::from_secs(1)),
                )
                .unwrap();
        }
        let one_more = ProtocolId::Application(ProtocolName::new("/app/x").unwrap());
        assert_eq!(
            limiter.set_quota(one_more, Quota::new(1, Duration::from_secs(1))),
            Err(QuotaError::TooManyApplicationProtocols)
        );
        // Replacing an existing one is fine, and refills its buckets.
        let first = ProtocolId::Application(ProtocolName::new("/app/0").unwrap());
        assert_eq!(
            limiter.check(Instant::ZERO, peer(1), first, 1),
            RateCheck::Allowed
        );
        limiter
            .set_quota(first, Quota::new(2, Duration::from_secs(1)))
            .unwrap();
        assert_eq!(limiter.tokens(Instant::ZERO, &peer(1), &first), Some(2));
    }

    #[test]
    fn allowed_at_peeks_without_spending() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::requesting());
        let (a, metadata) = (peer(1), ProtocolId::Metadata);
        let now = at_millis(100);
        assert_eq!(limiter.allowed_at(now, &a, &metadata, 2), Some(now));
        assert_eq!(limiter.check(now, a, metadata, 2), RateCheck::Allowed);
        // Metadata is 2 per 5 s: 2.5 s per token.
        assert_eq!(
            limiter.allowed_at(now, &a, &metadata, 1),
            Some(at_millis(2_600))
        );
        assert_eq!(
            limiter.allowed_at(now, &a, &metadata, 2),
            Some(at_millis(5_100))
        );
        assert_eq!(limiter.tokens(now, &a, &metadata), Some(0));
    }

    #[test]
    fn least_recently_checked_peer_is_evicted_at_the_cap() {
        let mut config = RateLimiterConfig::requesting();
        config.peers_max = 3;
        let mut limiter = RateLimiter::new(config);
        for n in 1..=3 {
            limiter.check(at_millis(u64::from(n)), peer(n), ProtocolId::Status, 1);
        }
        // Peer 1 is used again, so peer 2 is now the least recently checked.
        limiter.check(at_millis(10), peer(1), ProtocolId::Status, 1);
        limiter.check(at_millis(11), peer(4), ProtocolId::Status, 1);
        assert_eq!(limiter.tracked_peers(), 3);
        assert_eq!(limiter.counters().peers_evicted, 1);
        assert_eq!(
            limiter.tokens(at_millis(11), &peer(2), &ProtocolId::Status),
            Some(5)
        );
        assert_eq!(
            limiter.tokens(at_millis(11), &peer(1), &ProtocolId::Status),
            Some(3)
        );
        limiter.remove_peer(&peer(1));
        assert_eq!(limiter.tracked_peers(), 2);
    }

    #[test]
    fn extreme_times_and_costs_saturate() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::requesting());
        let late = Instant::MAX;
        assert_eq!(
            limiter.check(late, peer(1), ProtocolId::Status, 5),
            RateCheck::Allowed
        );
        assert!(matches!(
            limiter.check(late, peer(1), ProtocolId::Status, 1),
            RateCheck::Limited { .. }
        ));
        assert_eq!(
            limiter.check(late, peer(1), ProtocolId::Status, u64::MAX),
            RateCheck::OverCapacity
        );
        let mut huge = RateLimiterConfig::requesting();
        huge.quotas
            .insert(ProtocolId::Status, Quota::new(u64::MAX, Duration::MAX));
        let mut limiter = RateLimiter::new(huge);
        assert_eq!(
            limiter.check(late, peer(1), ProtocolId::Status, u64::MAX),
            RateCheck::Allowed
        );
        let _ = limiter.check(late, peer(1), ProtocolId::Status, u64::MAX);
        let _ = limiter.tokens(late, &peer(1), &ProtocolId::Status);
    }
}
