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
//! The global budget is shared fairly: besides the global bucket, each peer
//! has a *share* bucket that refills at `G / n` of the global rate, where `n`
//! is the number of peers that asked for global-budget protocols within the
//! last global period (the requester included), and holds `G / m`, where `m`
//! is the number of peers we keep buckets for (every connected peer that has
//! sent a request). A peer alone may use the whole rate; `n` peers asking at
//! once get `1/n` each, so `k` Sybils get at most `k` shares however fast
//! they ask, and an honest peer always has its own; and Sybils that all start
//! asking at once cannot burst past the whole bucket together (each holds
//! only `G / m`). A share bucket that is full admits one request even if it costs
//! more than the share (a 128-root request when 50 peers share), then the
//! peer waits until the debt is repaid, so the long-run rate stays `G / n`.
//!
//! A refusal says whose limit it was: [`RateCheck::Limited`] for the peer's
//! own quota (its fault: it can see and pace by that quota), and
//! [`RateCheck::Busy`] for the shared budget or the peer's fair share of it,
//! which depend on what other peers ask and which the peer cannot see.
//!
//! # Security
//! Provided: a peer can never be served more than `n + n · t / P` cost units
//! of a protocol over any span `t`; among peers that keep asking, none is
//! served more than its fair share of the global budget; state is bounded
//! (one bucket per configured protocol per peer plus a share bucket, at most
//! `peers_max` peers, the least recently checked evicted first); a protocol
//! without a quota is refused, so names a peer makes up cannot create buckets.
//! Not provided: memory of a peer across eviction or `remove_peer` (a peer
//! that reconnects starts with a full share, bounded by the per-IP cap on
//! connections); a newcomer may be told `Busy` for a moment while the global
//! bucket refills from peers that had been using the idle share.
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
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
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

    /// Spending `cost` from one peer's share of this (global) quota at
    /// `now`, from a share that held `share` at its last update. The share
    /// drains its debt at `tokens_max / sharers.asking` per period and holds
    /// at most `tokens_max / sharers.known`: a peer alone may use the whole
    /// rate, but a crowd that starts asking at once cannot burst past the
    /// whole bucket, since each holds only its part of it. The debt is kept
    /// in tokens, so what a peer took while few others asked still counts in
    /// full once more do. A share without debt admits any one request,
    /// whatever its cost, and the peer then repays it at the share's rate.
    fn share_spend(&self, share: ShareLevel, now: Instant, cost: u64, sharers: Sharers) -> Spend {
        let tokens_max = u128::from(self.tokens_max);
        let period = self.period_micros();
        let asking = u128::from(sharers.asking.max(1));
        let known = u128::from(sharers.known.max(sharers.asking).max(1));
        // In token-microseconds: a token is `period` units, and the debt
        // drains `tokens_max / asking` units per microsecond.
        let elapsed = now.saturating_duration_since(share.updated).as_micros();
        let drained = elapsed.saturating_mul(tokens_max) / asking;
        let debt = share.debt_units.saturating_sub(drained);
        let cost_units = u128::from(cost).saturating_mul(period);
        let depth_units = tokens_max.saturating_mul(period) / known;
        if debt == 0 || debt.saturating_add(cost_units) <= depth_units {
            return Spend::Allowed {
                tat: debt.saturating_add(cost_units),
            };
        }
        // Until the cost fits within the share again, or the share is clear.
        let wait_units = debt - depth_units.saturating_sub(cost_units).min(debt);
        let wait_micros = wait_units.saturating_mul(asking).div_ceil(tokens_max);
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

/// A peer's share of the global budget: its debt, in token-microseconds
/// (a token is one global period's worth of microseconds), as of `updated`.
#[derive(Clone, Copy, Debug, Default)]
struct ShareLevel {
    debt_units: u128,
    updated: Instant,
}

/// Among how many peers the global budget is divided at one moment.
#[derive(Clone, Copy, Debug)]
struct Sharers {
    /// Peers that asked for it within the last global period, the requester included.
    asking: u64,
    /// Peers with buckets (each connected peer, once it sent any request),
    /// the requester included.
    known: u64,
}

enum Spend {
    /// For a share, `tat` is the new debt (see [`ShareLevel`]).
    Allowed {
        tat: u128,
    },
    Limited {
        retry_after: Duration,
    },
    OverCapacity,
}

impl Spend {
    /// How long until it would be allowed (zero if it is).
    fn wait(&self) -> Duration {
        match self {
            Spend::Limited { retry_after } => *retry_after,
            Spend::Allowed { .. } | Spend::OverCapacity => Duration::ZERO,
        }
    }
}

/// A spend from the global budget: the global bucket and the peer's fair share.
struct SharedSpend {
    global: Spend,
    share: Spend,
}

impl SharedSpend {
    fn wait(&self) -> Duration {
        self.global.wait().max(self.share.wait())
    }
}

/// The answer of [`RateLimiter::check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RateCheck {
    /// Within quota; the tokens are spent.
    Allowed,
    /// Over the peer's own quota now; the same cost would be allowed after
    /// `retry_after` (if nothing else is spent meanwhile). Nothing is spent.
    Limited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Within the peer's own quota, but the shared global budget, or the
    /// peer's fair share of it, is spent for now: not the peer's fault.
    /// Nothing is spent.
    Busy {
        /// How long to wait, as things stand.
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

    /// These quotas for a chain of `slot_duration_ms` slots: the BlocksByRange
    /// quota and the global budget (if any) scaled as
    /// [`super::limits::blocks_by_range_quota`] and
    /// [`super::limits::global_serving_quota`] say. Unchanged for slots of
    /// about 80 ms or longer.
    pub fn for_slot_duration(mut self, slot_duration_ms: u64) -> RateLimiterConfig {
        self.quotas.insert(
            ProtocolId::BlocksByRange,
            super::limits::blocks_by_range_quota(slot_duration_ms),
        );
        if self.global.is_some() {
            self.global = Some(super::limits::global_serving_quota(slot_duration_ms));
        }
        self
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
    /// Checks limited by the global budget or the peer's fair share of it
    /// (the peer's bucket would have allowed).
    pub limited_global: u64,
    /// Of those: limited by the peer's fair share (the global bucket had room).
    pub limited_share: u64,
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
    /// The peer's share of the global budget.
    share: ShareLevel,
    /// When the peer last asked for a global-budget protocol within its own
    /// quota: it counts as sharing the budget for one global period after.
    last_global_request: Option<Instant>,
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
        let (peer_spend, shared) = match self.evaluate(now, &peer, &protocol, cost) {
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
                let retry_after = shared
                    .as_ref()
                    .map_or(retry_after, |shared| retry_after.max(shared.wait()));
                return RateCheck::Limited { retry_after };
            }
            Spend::OverCapacity => unreachable!("evaluate refuses over-capacity spends"),
        };
        let Some(shared) = shared else {
            self.counters.allowed += 1;
            self.buckets_mut(now, peer).tats.insert(protocol, peer_tat);
            return RateCheck::Allowed;
        };
        // Within its own quota, the peer is asking for a share of the budget
        // from now on, whether or not it gets one this time.
        self.buckets_mut(now, peer).last_global_request = Some(now);
        match (shared.global, shared.share) {
            (Spend::Allowed { tat: global_tat }, Spend::Allowed { tat: debt_units }) => {
                self.counters.allowed += 1;
                self.global_tat = global_tat;
                let buckets = self.buckets_mut(now, peer);
                buckets.tats.insert(protocol, peer_tat);
                buckets.share = ShareLevel {
                    debt_units,
                    updated: now,
                };
                RateCheck::Allowed
            }
            (global, share) => {
                self.counters.limited_global += 1;
                if matches!(global, Spend::Allowed { .. }) {
                    self.counters.limited_share += 1;
                }
                RateCheck::Busy {
                    retry_after: global.wait().max(share.wait()),
                }
            }
        }
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
        let (peer_spend, shared) = self.evaluate(now, peer, protocol, cost.max(1)).ok()?;
        let shared_wait = shared.as_ref().map_or(Duration::ZERO, SharedSpend::wait);
        Some(now + peer_spend.wait().max(shared_wait))
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

    /// The peer's spend and, if the protocol draws on it, the global and fair
    /// share ones; `Err` when either can never allow the cost.
    fn evaluate(
        &self,
        now: Instant,
        peer: &PeerId,
        protocol: &ProtocolId,
        cost: u64,
    ) -> Result<(Spend, Option<SharedSpend>), RateCheck> {
        let quota = self.config.quotas.get(protocol).ok_or(RateCheck::NoQuota)?;
        let peer_spend = quota.spend(self.tat(peer, protocol), now, cost);
        if matches!(peer_spend, Spend::OverCapacity) {
            return Err(RateCheck::OverCapacity);
        }
        let shared = match self.config.global {
            Some(global) if protocol.draws_on_global_quota() => {
                let spend = global.spend(self.global_tat, now, cost);
                if matches!(spend, Spend::OverCapacity) {
                    return Err(RateCheck::OverCapacity);
                }
                let share = self
                    .peers
                    .get(peer)
                    .map_or(ShareLevel::default(), |buckets| buckets.share);
                let sharers = self.sharing_peers(now, peer, global.period);
                Some(SharedSpend {
                    global: spend,
                    share: global.share_spend(share, now, cost, sharers),
                })
            }
            _ => None,
        };
        Ok((peer_spend, shared))
    }

    /// Peers the global budget is divided among at `now`: those that asked
    /// for it within the last `period`, and those we know, `peer` included.
    fn sharing_peers(&self, now: Instant, peer: &PeerId, period: Duration) -> Sharers {
        let others = self
            .peers
            .iter()
            .filter(|(id, buckets)| {
                *id != peer
                    && buckets
                        .last_global_request
                        .is_some_and(|asked| now.saturating_duration_since(asked) < period)
            })
            .count();
        let known = self.peers.len() + usize::from(!self.peers.contains_key(peer));
        Sharers {
            asking: u64::try_from(others).unwrap_or(u64::MAX).saturating_add(1),
            known: u64::try_from(known).unwrap_or(u64::MAX),
        }
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
            share: ShareLevel::default(),
            last_global_request: None,
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
        // Peer 2's own bucket is full, but only 36 global units are left:
        // busy, which is not peer 2's doing.
        assert_eq!(
            limiter.check(now, peer(2), ProtocolId::BlocksByRange, 64),
            RateCheck::Busy {
                retry_after: Duration::from_millis(2_800)
            }
        );
        assert_eq!(limiter.counters().limited_global, 1);
        assert_eq!(limiter.counters().limited_peer, 0);
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

    /// The attack at the limiter: four Sybils, each within its own
    /// BlocksByRange quota (64 blocks every 625 ms), want the whole global
    /// budget; an honest peer asks for 64 blocks a second. Each gets at most
    /// a fifth, the honest peer all it asks, and nobody is told it broke its
    /// own quota.
    #[test]
    fn four_sybils_get_at_most_four_shares_and_the_honest_peer_its_own() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let range = ProtocolId::BlocksByRange;
        let honest = peer(100);
        let mut sybil_allowed = [0u64; 4];
        let mut honest_allowed = 0;
        let seconds = 100;
        for step in 0..seconds * 8 {
            let now = at_millis(step * 125);
            if step % 5 == 0 {
                for (index, allowed) in sybil_allowed.iter_mut().enumerate() {
                    let check = limiter.check(now, peer(index as u8), range, 64);
                    assert!(!matches!(check, RateCheck::Limited { .. }), "{check:?}");
                    *allowed += u64::from(check == RateCheck::Allowed) * 64;
                }
            }
            if step % 8 == 0 {
                assert_eq!(limiter.check(now, honest, range, 64), RateCheck::Allowed);
                honest_allowed += 64;
            }
        }
        assert_eq!(honest_allowed, seconds * 64);
        // A fifth of 4096 per 10 s, plus one full share at the start.
        let share = 4096 / 5 * (seconds / 10 + 1) + 64;
        for allowed in sybil_allowed {
            assert!(allowed <= share, "a Sybil got {allowed} of {share}");
            assert!(allowed >= share * 9 / 10, "a Sybil got only {allowed}");
        }
        let counters = limiter.counters();
        assert_eq!(counters.limited_peer, 0);
        assert!(counters.limited_share > 0);
    }

    /// Shares divide the budget's rate only among peers that ask for it: a
    /// peer alone may use all of it, while another peer it knows stays quiet.
    #[test]
    fn a_peer_alone_may_use_the_whole_budget() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let bulk = ProtocolId::Application(ProtocolName::new("/app/bulk/1").unwrap());
        limiter
            .set_quota(bulk, Quota::new(4096, Duration::from_secs(10)))
            .unwrap();
        assert_eq!(
            limiter.check(at_millis(0), peer(2), bulk, 1),
            RateCheck::Allowed
        );
        // Peer 2 asked 10 s ago: it no longer shares the rate, so peer 1
        // gets the whole budget's rate (4096 in 5 s after a full share of
        // half the bucket, peer 2 holding the other half).
        assert_eq!(
            limiter.check(at_millis(10_000), peer(1), bulk, 2048),
            RateCheck::Allowed
        );
        assert!(matches!(
            limiter.check(at_millis(10_000), peer(1), bulk, 1),
            RateCheck::Busy { .. }
        ));
        assert_eq!(
            limiter.check(at_millis(15_000), peer(1), bulk, 2048),
            RateCheck::Allowed
        );
        assert_eq!(limiter.counters().limited_share, 1);
    }

    /// Sybils that all start asking at once, each while few others ask,
    /// would each get a large share: the share's depth is the peer's part of
    /// the bucket among all the peers we know, so together they cannot take
    /// more than the bucket, and a quiet honest peer still has its part.
    #[test]
    fn sybils_starting_at_once_cannot_burst_past_the_bucket() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let now = at_millis(0);
        // Twenty connected peers, known by their Status requests.
        for n in 0..20 {
            limiter.check(now, peer(n), ProtocolId::Status, 1);
        }
        let mut sybils_allowed = 0;
        for n in 0..16 {
            while limiter.check(now, peer(n), ProtocolId::BlocksByRange, 64) == RateCheck::Allowed {
                sybils_allowed += 64;
            }
        }
        assert!(sybils_allowed <= 16 * (4096 / 20 + 64), "{sybils_allowed}");
        assert_eq!(
            limiter.check(now, peer(19), ProtocolId::BlocksByRange, 64),
            RateCheck::Allowed
        );
    }

    /// When many peers share, a share can be smaller than one request; a full
    /// share still admits it, and the peer then waits out the debt.
    #[test]
    fn a_full_share_admits_one_request_larger_than_the_share() {
        let mut limiter = RateLimiter::new(RateLimiterConfig::serving());
        let roots = ProtocolId::BlocksByRoot;
        let now = at_millis(0);
        for n in 1..=40 {
            assert_eq!(limiter.check(now, peer(n), roots, 1), RateCheck::Allowed);
        }
        // 41 peers share: 99.9 tokens each per 10 s, less than 128 roots.
        assert_eq!(limiter.check(now, peer(41), roots, 128), RateCheck::Allowed);
        // The share is one for all the global protocols.
        let range = ProtocolId::BlocksByRange;
        let RateCheck::Busy { retry_after } = limiter.check(now, peer(41), range, 1) else {
            panic!("the share is in debt");
        };
        // The debt of 128 tokens must drain (at 4096 / 41 per 10 s) until
        // one more token fits within the share of 4096 / 41.
        let token_units = 10_000_000u64;
        let depth_units = 4096 * token_units / 41;
        let wait_units = 128 * token_units - (depth_units - token_units);
        assert_eq!(
            retry_after,
            Duration::from_micros((wait_units * 41).div_ceil(4096))
        );
        assert_eq!(limiter.counters().limited_share, 1);
    }

    #[test]
    fn the_range_quota_follows_the_slot_rate_within_its_bounds() {
        use crate::reqresp::limits::{
            BLOCKS_BY_RANGE_GROWTH_MULTIPLE, BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX,
        };
        for slot_ms in [1, 5, 10, 20, 50, 100, 2_000, 12_000] {
            let serving = RateLimiterConfig::serving().for_slot_duration(slot_ms);
            let requesting = RateLimiterConfig::requesting().for_slot_duration(slot_ms);
            let range = serving.quotas[&ProtocolId::BlocksByRange];
            // Both ends of a network agree on what a peer may ask.
            assert_eq!(requesting.quotas, serving.quotas, "{slot_ms} ms");
            assert_eq!(requesting.global, None);
            let growth = range.period.as_millis() as u64 / slot_ms;
            assert!(
                range.tokens_max
                    >= (growth * BLOCKS_BY_RANGE_GROWTH_MULTIPLE)
                        .min(BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX),
                "{slot_ms} ms: {range:?} against {growth} slots of growth"
            );
            assert!(range.tokens_max >= BLOCKS_BY_RANGE_QUOTA.tokens_max);
            assert!(range.tokens_max <= BLOCKS_BY_RANGE_QUOTA_TOKENS_MAX);
            // The shared budget still holds four peers' range quotas.
            let global = serving.global.unwrap();
            assert_eq!(global.tokens_max, 4 * range.tokens_max, "{slot_ms} ms");
            // Other protocols are untouched.
            assert_eq!(
                serving.quotas[&ProtocolId::BlocksByRoot],
                BLOCKS_BY_ROOT_QUOTA
            );
        }
        // Multi-second slots keep the Lighthouse-like defaults.
        assert_eq!(
            RateLimiterConfig::serving().for_slot_duration(2_000),
            RateLimiterConfig::serving()
        );
    }
}
