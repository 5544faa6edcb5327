//! Peer scores: a number in [-100, 100] per peer that decays toward 0.
//!
//! # Design
//! A [`Score`] is kept in fixed point (micro-points in an `i64`) and decays
//! exponentially toward 0 with a half-life ([`SCORE_HALF_LIFE`] by default).
//! Decay is lazy: an entry stores its value and the instant it was last
//! changed, and [`decay`] computes the value at any later instant. The decay
//! factor `2^(-t/h)` is computed with integer arithmetic only (whole halvings
//! as shifts, the fraction of a half-life bit by bit from a table of
//! `2^(-2^-k)` built at compile time with integer square roots), so it gives
//! the same result on every machine and every libm: a simulation's trace hash
//! cannot depend on how a platform rounds `exp2`.
//!
//! Reports move the score: [`Penalty`] values lower it (the named Lighthouse
//! magnitudes, `Fatal` straight to the minimum), [`Report::Reward`] raises it a
//! little, never past [`SCORE_REWARD_CEILING`]. Crossing a threshold downward
//! yields a [`ScoreEvent`] once per crossing: [`ScoreEvent::Disconnect`] at or
//! below [`SCORE_DISCONNECT_THRESHOLD`], [`ScoreEvent::Ban`] at or below
//! [`SCORE_BAN_THRESHOLD`]. After either, the table schedules the instant at
//! which decay brings the score back to [`SCORE_GATE_THRESHOLD`] and reports
//! [`ScoreEvent::Recovered`] then (or at once, if a reward gets there first).
//!
//! # Security
//! Provided: a peer cannot shed a bad score by reconnecting, because entries
//! outlive the connection (up to [`SCORES_MAX`] entries). Rewards are small and
//! capped, so a peer cannot bank a large credit with cheap valid answers and
//! then misbehave for long: from the ceiling, four `High` penalties at one
//! instant reach the disconnect threshold, and five do when they come within
//! 7 minutes of each other (decay lifts a negative score between them, so
//! four spread over time fall just short). The gate threshold is above the
//! disconnect threshold, so a disconnected peer stays out for at least about
//! one half-life before it may connect again.
//! Not provided: a peer with many identities gets a fresh score for each; that
//! is the connection gater's and the IP bans' concern.
//!
//! # Limits
//! [`SCORES_MAX`] entries; when full, the entry that carries the least
//! information is evicted: never a connected peer's, entries not awaiting
//! recovery first, then the score closest to 0, then the longest unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use crate::identity::PeerId;
use crate::limits;
use crate::time::{Duration, Instant};

/// How long a score takes to decay to half its distance from 0 (Lighthouse's 600 s).
pub const SCORE_HALF_LIFE: Duration = Duration::from_secs(10 * 60);
/// At or below this, a connected peer is disconnected with Goodbye(bad score) (Lighthouse: -20).
pub const SCORE_DISCONNECT_THRESHOLD: Score = Score::from_points(-20);
/// At or below this, a peer is banned (Lighthouse: -50).
pub const SCORE_BAN_THRESHOLD: Score = Score::from_points(-50);
/// Below this, a new connection from the peer is refused. Above the disconnect
/// threshold on purpose: a peer dropped at -20 must wait for decay to reach
/// -10 (one half-life, 10 min) before it is welcome again, instead of
/// reconnecting the moment it drifts above -20.
pub const SCORE_GATE_THRESHOLD: Score = Score::from_points(-10);
/// Rewards never lift a score above this: good behaviour earns forgiveness
/// for a few mistakes, not immunity (+20 is 40 points above the disconnect threshold).
pub const SCORE_REWARD_CEILING: Score = Score::from_points(20);
/// What one valid response earns: 40 of them take a neutral peer to the ceiling.
pub const SCORE_REWARD: Score = Score::from_micropoints(500_000);
/// Peers whose score is remembered, connected or not. Far more than
/// [`limits::PEERS_MAX`], so connected peers (never evicted) always fit and a
/// peer that reconnects soon still finds its score.
pub const SCORES_MAX: usize = 1_024;

const _: () =
    assert!(SCORE_BAN_THRESHOLD.as_micropoints() < SCORE_DISCONNECT_THRESHOLD.as_micropoints());
const _: () =
    assert!(SCORE_DISCONNECT_THRESHOLD.as_micropoints() < SCORE_GATE_THRESHOLD.as_micropoints());
const _: () = assert!(SCORE_GATE_THRESHOLD.as_micropoints() < 0);
const _: () = assert!(SCORE_REWARD_CEILING.as_micropoints() <= Score::MAX.as_micropoints());
const _: () = assert!(SCORE_REWARD.as_micropoints() > 0);
const _: () = assert!(SCORES_MAX > 2 * limits::PEERS_MAX);

/// A peer's score, in fixed point: micro-points, always within [`Score::MIN`, `Score::MAX`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Score(i64);

/// Micro-points per point.
const MICROPOINTS_PER_POINT: i64 = 1_000_000;

impl Score {
    /// Neutral: a peer we know nothing about.
    pub const ZERO: Score = Score(0);
    /// The highest score, 100 points.
    pub const MAX: Score = Score(100 * MICROPOINTS_PER_POINT);
    /// The lowest score, -100 points.
    pub const MIN: Score = Score(-100 * MICROPOINTS_PER_POINT);

    /// `points` whole points, clamped to the range.
    pub const fn from_points(points: i64) -> Score {
        Score::from_micropoints(points.saturating_mul(MICROPOINTS_PER_POINT))
    }

    /// `micropoints` millionths of a point, clamped to the range.
    pub const fn from_micropoints(micropoints: i64) -> Score {
        if micropoints > Score::MAX.0 {
            Score::MAX
        } else if micropoints < Score::MIN.0 {
            Score::MIN
        } else {
            Score(micropoints)
        }
    }

    /// The score in millionths of a point.
    pub const fn as_micropoints(self) -> i64 {
        self.0
    }

    /// The score in points, for logs and metrics only (decisions use the fixed-point value).
    pub fn as_points(self) -> f64 {
        self.0 as f64 / MICROPOINTS_PER_POINT as f64
    }

    /// `self + other`, clamped to the range.
    pub const fn saturating_add(self, other: Score) -> Score {
        Score::from_micropoints(self.0.saturating_add(other.0))
    }
}

impl fmt::Debug for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.as_points())
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How bad a peer's misbehaviour was. Named by severity; Lighthouse names the
/// same magnitudes by how much of it it tolerates (`Low` here is its
/// `HighToleranceError`, `High` its `LowToleranceError`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Penalty {
    /// -1: an error that can happen to an honest peer now and then (a timeout,
    /// a rate-limited request); about 50 bring a ban.
    Low,
    /// -5: an error an honest peer rarely makes (an unanswered status, a
    /// useless response); about 10 bring a ban.
    Mid,
    /// -10: an error only a faulty or hostile peer makes (invalid data, a
    /// protocol violation); about 5 bring a ban.
    High,
    /// Straight to the minimum, -100, and so a ban: proven malice (an invalid
    /// signature, a block from the wrong chain).
    Fatal,
}

impl Penalty {
    /// The change this penalty makes (`Fatal`: the whole range, so any score ends at the minimum).
    pub const fn delta(self) -> Score {
        match self {
            Penalty::Low => Score::from_points(-1),
            Penalty::Mid => Score::from_points(-5),
            Penalty::High => Score::from_points(-10),
            Penalty::Fatal => Score::MIN,
        }
    }
}

/// Something a peer did that moves its score.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Report {
    /// It misbehaved.
    Penalty(Penalty),
    /// It answered a request validly: [`SCORE_REWARD`], up to [`SCORE_REWARD_CEILING`].
    Reward,
}

impl From<Penalty> for Report {
    fn from(penalty: Penalty) -> Report {
        Report::Penalty(penalty)
    }
}

/// A threshold a peer's score crossed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ScoreEvent {
    /// Fell to or below [`SCORE_DISCONNECT_THRESHOLD`] (but not to the ban threshold):
    /// disconnect it with Goodbye(bad score).
    Disconnect,
    /// Fell to or below [`SCORE_BAN_THRESHOLD`]: ban it.
    Ban,
    /// After a `Disconnect` or `Ban`, rose back to [`SCORE_GATE_THRESHOLD`]:
    /// its score no longer keeps it out.
    Recovered,
}

/// `score` after `elapsed` of decay with `half_life`: `score · 2^(-elapsed/half_life)`,
/// rounded toward 0, computed with integers only so every machine agrees.
///
/// # Panics
/// If `half_life` is zero (a configuration bug).
pub fn decay(score: Score, elapsed: Duration, half_life: Duration) -> Score {
    assert!(!half_life.is_zero(), "the score half-life must be positive");
    let half_life_micros = half_life.as_micros();
    let elapsed_micros = elapsed.as_micros();
    let halvings = elapsed_micros / half_life_micros;
    if halvings >= 64 {
        return Score::ZERO;
    }
    // The fraction of a half-life left over, in Q32; below 2^32 because remainder < half-life.
    let fraction = ((elapsed_micros % half_life_micros) << 32) / half_life_micros;
    let mut factor = ONE_Q62;
    for (bit, bit_factor) in FRACTION_FACTORS_Q62.iter().enumerate() {
        if fraction & (1 << (31 - bit)) != 0 {
            factor = (factor * bit_factor) >> 62;
        }
    }
    // |score| < 2^27 and factor <= 2^62, so the product fits in 89 bits.
    let magnitude = (u128::from(score.0.unsigned_abs()) * factor) >> (62 + halvings);
    let magnitude = i64::try_from(magnitude).expect("decay never grows a magnitude");
    Score(magnitude * score.0.signum())
}

/// 1.0 in Q62 fixed point.
const ONE_Q62: u128 = 1 << 62;

/// `2^(-2^-(k+1))` in Q62 for k in 0..32: the decay factor of each bit of a
/// fraction of a half-life (0.5 half-life, 0.25, ...), built from 2^-1 by
/// repeated integer square roots so no float is involved.
const FRACTION_FACTORS_Q62: [u128; 32] = fraction_factors();

const fn fraction_factors() -> [u128; 32] {
    let mut table = [0u128; 32];
    let mut previous = ONE_Q62 >> 1;
    let mut index = 0;
    while index < 32 {
        // sqrt(x) in Q62 is isqrt(x · 2^62); x < 2^62 so the shift fits in 124 bits.
        previous = (previous << 62).isqrt();
        table[index] = previous;
        index += 1;
    }
    table
}

/// One peer's remembered score.
#[derive(Clone, Debug)]
struct Entry {
    /// The score at `updated`.
    value: Score,
    updated: Instant,
    /// Connected peers' entries are never evicted.
    connected: bool,
    /// Set after a `Disconnect` or `Ban` event: when decay alone brings the score
    /// back to the gate threshold. Mirrored in [`Scores::recoveries`].
    recovery_at: Option<Instant>,
    /// The IP the peer last connected from: a ban reached after it left
    /// still bans its address (see [`super::manager`]).
    last_ip: Option<IpAddr>,
}

/// The scores of connected and recently seen peers.
#[derive(Clone, Debug)]
pub struct Scores {
    half_life: Duration,
    capacity: usize,
    entries: BTreeMap<PeerId, Entry>,
    /// `(recovery_at, peer)` for every entry awaiting recovery.
    recoveries: BTreeSet<(Instant, PeerId)>,
}

impl Scores {
    /// An empty table decaying with `half_life`, remembering at most `capacity` peers.
    ///
    /// # Panics
    /// If `half_life` is zero or `capacity` is zero.
    pub fn new(half_life: Duration, capacity: usize) -> Scores {
        assert!(!half_life.is_zero(), "the score half-life must be positive");
        assert!(capacity > 0, "the score table needs room");
        Scores {
            half_life,
            capacity,
            entries: BTreeMap::new(),
            recoveries: BTreeSet::new(),
        }
    }

    /// The score of `peer` at `now` (0 for a peer we do not remember).
    pub fn score(&self, now: Instant, peer: &PeerId) -> Score {
        self.entries
            .get(peer)
            .map_or(Score::ZERO, |entry| self.value_at(entry, now))
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `peer` has crossed a threshold downward and not yet recovered.
    pub fn is_awaiting_recovery(&self, peer: &PeerId) -> bool {
        self.entries
            .get(peer)
            .is_some_and(|entry| entry.recovery_at.is_some())
    }

    /// The IP `peer` last connected from, while its score is remembered.
    pub fn last_ip(&self, peer: &PeerId) -> Option<IpAddr> {
        self.entries.get(peer).and_then(|entry| entry.last_ip)
    }

    /// Marks `peer` connected from `ip`: its entry is then never evicted, and
    /// remembers the address after it leaves.
    pub fn set_connected_from(&mut self, now: Instant, peer: PeerId, ip: IpAddr) {
        let entry = self.entry_mut(now, peer);
        entry.connected = true;
        entry.last_ip = Some(ip);
    }

    /// Marks `peer` connected (its entry is then never evicted) or not. A
    /// disconnected peer whose score has decayed to exactly 0 is forgotten.
    pub fn set_connected(&mut self, now: Instant, peer: PeerId, connected: bool) {
        if connected {
            self.entry_mut(now, peer).connected = true;
        } else if let Some(entry) = self.entries.get_mut(&peer) {
            entry.connected = false;
            let elapsed = now.saturating_duration_since(entry.updated);
            if entry.recovery_at.is_none()
                && decay(entry.value, elapsed, self.half_life) == Score::ZERO
            {
                self.entries.remove(&peer);
            }
        }
    }

    /// Applies `report` to `peer` at `now`; returns the thresholds crossed, in order
    /// (at most a `Recovered` that was already due, then a `Disconnect` or `Ban`,
    /// or a `Recovered` a reward caused).
    pub fn apply(&mut self, now: Instant, peer: PeerId, report: Report) -> Vec<ScoreEvent> {
        let mut events = Vec::new();
        let half_life = self.half_life;
        let entry = self.entry_mut(now, peer);
        let before = decay(
            entry.value,
            now.saturating_duration_since(entry.updated),
            half_life,
        );
        let previous_recovery = entry.recovery_at;
        if previous_recovery.is_some() && before >= SCORE_GATE_THRESHOLD {
            entry.recovery_at = None;
            events.push(ScoreEvent::Recovered);
        }
        let after = match report {
            Report::Penalty(Penalty::Fatal) => Score::MIN,
            Report::Penalty(penalty) => before.saturating_add(penalty.delta()),
            Report::Reward => before
                .saturating_add(SCORE_REWARD)
                .min(SCORE_REWARD_CEILING.max(before)),
        };
        entry.value = after;
        entry.updated = now;
        let crossing = if before > SCORE_BAN_THRESHOLD && after <= SCORE_BAN_THRESHOLD {
            Some(ScoreEvent::Ban)
        } else if before > SCORE_DISCONNECT_THRESHOLD && after <= SCORE_DISCONNECT_THRESHOLD {
            Some(ScoreEvent::Disconnect)
        } else {
            None
        };
        if let Some(crossing) = crossing {
            events.push(crossing);
            entry.recovery_at = Some(Instant::MAX); // Rescheduled below.
        } else if entry.recovery_at.is_some() && after >= SCORE_GATE_THRESHOLD {
            entry.recovery_at = None;
            events.push(ScoreEvent::Recovered);
        }
        let awaiting = entry.recovery_at.is_some();
        if let Some(at) = previous_recovery {
            self.recoveries.remove(&(at, peer));
        }
        if awaiting {
            let at = recovery_instant(after, now, half_life);
            self.entries
                .get_mut(&peer)
                .expect("entry_mut inserted it")
                .recovery_at = Some(at);
            self.recoveries.insert((at, peer));
        }
        events
    }

    /// Every remembered non-zero score at `now`, with the IP its peer last
    /// connected from, in `PeerId` order: what the peer store keeps.
    pub fn snapshot(&self, now: Instant) -> Vec<(PeerId, Score, Option<IpAddr>)> {
        self.entries
            .iter()
            .map(|(peer, entry)| (*peer, self.value_at(entry, now), entry.last_ip))
            .filter(|(_, score, _)| *score != Score::ZERO)
            .collect()
    }

    /// Sets `peer`'s score to `value` at `now`, as a peer store loaded it
    /// (a peer already remembered keeps its own). A value below the gate
    /// awaits recovery as after a disconnect, so the peer is refused until
    /// decay brings it back and its recovery is reported then.
    pub fn restore(&mut self, now: Instant, peer: PeerId, value: Score, last_ip: Option<IpAddr>) {
        if self.entries.contains_key(&peer) || value == Score::ZERO {
            return;
        }
        let half_life = self.half_life;
        let entry = self.entry_mut(now, peer);
        entry.value = value;
        entry.updated = now;
        entry.last_ip = last_ip;
        if value < SCORE_GATE_THRESHOLD {
            let at = recovery_instant(value, now, half_life);
            entry.recovery_at = Some(at);
            self.recoveries.insert((at, peer));
        }
    }

    /// Peers whose score has recovered to the gate threshold by `now`, in
    /// `(instant, PeerId)` order; each is reported once per downward crossing.
    pub fn poll_recoveries(&mut self, now: Instant) -> Vec<PeerId> {
        let mut recovered = Vec::new();
        while let Some(&(at, peer)) = self.recoveries.first() {
            if at > now {
                break;
            }
            self.recoveries.remove(&(at, peer));
            let entry = self
                .entries
                .get_mut(&peer)
                .expect("recoveries mirror entries");
            debug_assert_eq!(entry.recovery_at, Some(at));
            entry.recovery_at = None;
            recovered.push(peer);
        }
        recovered
    }

    /// When the next recovery is due, if any.
    pub fn next_recovery(&self) -> Option<Instant> {
        self.recoveries.first().map(|&(at, _)| at)
    }

    fn value_at(&self, entry: &Entry, now: Instant) -> Score {
        decay(
            entry.value,
            now.saturating_duration_since(entry.updated),
            self.half_life,
        )
    }

    /// The entry of `peer`, created at 0 if absent (evicting one if full).
    fn entry_mut(&mut self, now: Instant, peer: PeerId) -> &mut Entry {
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            self.evict_one(now);
        }
        self.entries.entry(peer).or_insert(Entry {
            value: Score::ZERO,
            updated: now,
            connected: false,
            recovery_at: None,
            last_ip: None,
        })
    }

    /// Forgets the entry carrying the least information (see the module's `# Limits`).
    fn evict_one(&mut self, now: Instant) {
        let victim = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.connected)
            .min_by_key(|(peer, entry)| {
                (
                    entry.recovery_at.is_some(),
                    self.value_at(entry, now).as_micropoints().unsigned_abs(),
                    entry.updated,
                    **peer,
                )
            })
            .map(|(peer, entry)| (*peer, entry.recovery_at));
        let (peer, recovery_at) =
            victim.expect("the score table's capacity exceeds the number of connected peers");
        if let Some(at) = recovery_at {
            self.recoveries.remove(&(at, peer));
        }
        self.entries.remove(&peer);
    }
}

/// The first instant at which `value`, set at `updated`, has decayed to at least
/// [`SCORE_GATE_THRESHOLD`]. Binary search over the integer decay, so it agrees
/// exactly with what [`decay`] will say then.
fn recovery_instant(value: Score, updated: Instant, half_life: Duration) -> Instant {
    let recovered = |micros: u64| {
        decay(value, Duration::from_micros(micros), half_life) >= SCORE_GATE_THRESHOLD
    };
    if recovered(0) {
        return updated;
    }
    let half_life_micros = u64::try_from(half_life.as_micros()).unwrap_or(u64::MAX);
    // After 64 half-lives every score has decayed to 0, which is above the gate.
    let mut high = half_life_micros.saturating_mul(64);
    let mut low = 0;
    debug_assert!(recovered(high));
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if recovered(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    updated + Duration::from_micros(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    fn points(score: Score) -> f64 {
        score.as_points()
    }

    #[test]
    fn fraction_factors_match_powers_of_two() {
        for (index, factor) in FRACTION_FACTORS_Q62.iter().enumerate() {
            let expected = 2f64.powf(-(0.5f64.powi(index as i32 + 1)));
            let actual = *factor as f64 / ONE_Q62 as f64;
            assert!(
                (actual - expected).abs() < 1e-15,
                "{index}: {actual} vs {expected}"
            );
        }
    }

    #[test]
    fn score_halves_after_one_half_life() {
        for start in [-100, -50, -7, 3, 100] {
            let score = Score::from_points(start);
            let half = decay(score, SCORE_HALF_LIFE, SCORE_HALF_LIFE);
            assert!(
                (points(half) - start as f64 / 2.0).abs() < 1e-5,
                "{start}: {half}"
            );
            let quarter = decay(score, SCORE_HALF_LIFE * 2, SCORE_HALF_LIFE);
            assert!((points(quarter) - start as f64 / 4.0).abs() < 1e-5);
        }
    }

    #[test]
    fn decay_matches_floating_point_within_tolerance() {
        let half_life = Duration::from_secs(600);
        for millis in [
            0u64, 1, 999, 123_456, 300_000, 599_999, 600_000, 1_000_000, 7_777_777,
        ] {
            let elapsed = Duration::from_millis(millis);
            let actual = points(decay(Score::from_points(-80), elapsed, half_life));
            let expected = -80.0 * 2f64.powf(-(millis as f64) / 600_000.0);
            assert!(
                (actual - expected).abs() < 1e-5,
                "{millis} ms: {actual} vs {expected}"
            );
        }
    }

    #[test]
    fn decay_is_monotone_and_reaches_zero() {
        let score = Score::MIN;
        let mut previous = score;
        for step in 0..2_000u64 {
            let now = decay(score, Duration::from_millis(step * 12_345), SCORE_HALF_LIFE);
            assert!(now >= previous, "magnitude never grows");
            assert!(now <= Score::ZERO);
            previous = now;
        }
        assert_eq!(
            decay(score, SCORE_HALF_LIFE * 64, SCORE_HALF_LIFE),
            Score::ZERO
        );
        assert_eq!(decay(score, Duration::MAX, SCORE_HALF_LIFE), Score::ZERO);
        assert_eq!(
            decay(Score::MAX, Duration::from_secs(3600 * 24), SCORE_HALF_LIFE),
            Score::ZERO
        );
        assert_eq!(decay(score, Duration::ZERO, SCORE_HALF_LIFE), score);
    }

    #[test]
    fn scores_stay_in_range() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        for step in 0..300 {
            scores.apply(at(step), peer(1), Penalty::High.into());
            let score = scores.score(at(step), &peer(1));
            assert!(score >= Score::MIN && score <= Score::MAX);
        }
        assert_eq!(scores.score(at(299), &peer(1)), Score::MIN);
        for step in 0..1_000 {
            scores.apply(at(300 + step), peer(2), Report::Reward);
        }
        let score = scores.score(at(1_299), &peer(2));
        assert!(
            score <= SCORE_REWARD_CEILING && score > Score::from_points(19),
            "{score}"
        );
        assert_eq!(Score::from_points(1_000), Score::MAX);
        assert_eq!(Score::from_points(i64::MIN), Score::MIN);
        assert_eq!(Score::MAX.saturating_add(Score::MAX), Score::MAX);
    }

    #[test]
    fn penalties_have_lighthouse_magnitudes() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        scores.apply(at(0), peer(1), Penalty::Low.into());
        assert_eq!(scores.score(at(0), &peer(1)), Score::from_points(-1));
        scores.apply(at(0), peer(1), Penalty::Mid.into());
        assert_eq!(scores.score(at(0), &peer(1)), Score::from_points(-6));
        scores.apply(at(0), peer(1), Penalty::High.into());
        assert_eq!(scores.score(at(0), &peer(1)), Score::from_points(-16));
        let events = scores.apply(at(0), peer(2), Penalty::Fatal.into());
        assert_eq!(scores.score(at(0), &peer(2)), Score::MIN);
        assert_eq!(events, vec![ScoreEvent::Ban]);
    }

    /// How many `High` penalties, `gap` apart, take a peer from the reward
    /// ceiling to a disconnect; `None` if 100 do not.
    fn high_penalties_to_disconnect(gap: Duration) -> Option<usize> {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        let p = peer(1);
        let mut now = at(0);
        while scores.score(now, &p) < SCORE_REWARD_CEILING {
            scores.apply(now, p, Report::Reward);
        }
        assert_eq!(scores.score(now, &p), SCORE_REWARD_CEILING);
        for count in 1..=100 {
            if scores
                .apply(now, p, Penalty::High.into())
                .contains(&ScoreEvent::Disconnect)
            {
                return Some(count);
            }
            now = now + gap;
        }
        None
    }

    /// docs/protocol.md §7.3 states these counts; they follow from the
    /// ceiling, the High penalty, the disconnect threshold and the half-life.
    #[test]
    fn from_the_ceiling_four_high_penalties_disconnect_at_once_and_five_over_time() {
        let ceiling = SCORE_REWARD_CEILING.as_micropoints();
        let high = -Penalty::High.delta().as_micropoints();
        let threshold = SCORE_DISCONNECT_THRESHOLD.as_micropoints();
        // Without decay: exactly enough to land on the threshold.
        assert_eq!((ceiling - threshold) / high, 4);
        assert_eq!((ceiling - threshold) % high, 0);
        assert_eq!(high_penalties_to_disconnect(Duration::ZERO), Some(4));
        // With any decay between them, four fall short and five are needed,
        // up to a gap of about 7.8 minutes.
        for gap in [
            Duration::from_millis(1),
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(7 * 60),
        ] {
            assert_eq!(high_penalties_to_disconnect(gap), Some(5), "{gap:?}");
        }
        assert_eq!(
            high_penalties_to_disconnect(Duration::from_secs(8 * 60)),
            Some(6)
        );
        // One half-life apart or more, they never accumulate to the threshold.
        assert_eq!(high_penalties_to_disconnect(SCORE_HALF_LIFE), None);
    }

    #[test]
    fn thresholds_fire_once_per_crossing() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        let p = peer(1);
        assert!(scores.apply(at(0), p, Penalty::High.into()).is_empty()); // -10
        assert_eq!(
            scores.apply(at(0), p, Penalty::High.into()),
            vec![ScoreEvent::Disconnect]
        ); // -20
        assert!(scores.apply(at(0), p, Penalty::High.into()).is_empty()); // -30
        assert!(scores.apply(at(0), p, Penalty::High.into()).is_empty()); // -40
        assert_eq!(
            scores.apply(at(0), p, Penalty::High.into()),
            vec![ScoreEvent::Ban]
        ); // -50
        assert!(scores.apply(at(0), p, Penalty::Fatal.into()).is_empty());
        assert!(scores.is_awaiting_recovery(&p));
        // Straight past both thresholds: only the ban.
        assert_eq!(
            scores.apply(at(0), peer(2), Penalty::Fatal.into()),
            vec![ScoreEvent::Ban]
        );
    }

    #[test]
    fn recovery_is_scheduled_when_decay_reaches_the_gate() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        let p = peer(1);
        scores.apply(at(0), p, Penalty::High.into());
        assert_eq!(
            scores.apply(at(0), p, Penalty::High.into()),
            vec![ScoreEvent::Disconnect]
        );
        // -20 reaches -10 after exactly one half-life.
        let due = scores.next_recovery().expect("scheduled");
        let error = due.as_micros().abs_diff(SCORE_HALF_LIFE.as_micros() as u64);
        // Micro-point resolution: at -10 a micro-point is about 86 µs of decay.
        assert!(error < 1_000, "{due}");
        assert!(scores.score(due, &p) >= SCORE_GATE_THRESHOLD);
        let just_before = Instant::from_micros(due.as_micros() - 1);
        assert!(scores.score(just_before, &p) < SCORE_GATE_THRESHOLD);
        assert!(scores.poll_recoveries(just_before).is_empty());
        assert_eq!(scores.poll_recoveries(due), vec![p]);
        assert!(scores.poll_recoveries(at(10_000)).is_empty(), "once");
        assert_eq!(scores.next_recovery(), None);
        assert!(!scores.is_awaiting_recovery(&p));
    }

    #[test]
    fn further_penalties_postpone_recovery_and_rewards_can_bring_it() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        let p = peer(1);
        scores.apply(at(0), p, Penalty::High.into());
        scores.apply(at(0), p, Penalty::High.into());
        let first = scores.next_recovery().unwrap();
        scores.apply(at(1), p, Penalty::Mid.into());
        let second = scores.next_recovery().unwrap();
        assert!(second > first);
        assert_eq!(scores.recoveries.len(), 1);
        // Rewards after decay has nearly done the job.
        let near = Instant::from_micros(second.as_micros() - 1_000_000);
        let mut events = Vec::new();
        for _ in 0..3 {
            events.extend(scores.apply(near, p, Report::Reward));
        }
        assert_eq!(events, vec![ScoreEvent::Recovered]);
        assert_eq!(scores.next_recovery(), None);
    }

    #[test]
    fn a_due_recovery_is_reported_before_a_new_crossing() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        let p = peer(1);
        scores.apply(at(0), p, Penalty::High.into());
        scores.apply(at(0), p, Penalty::High.into());
        // Long after recovery, without polling: -20 has decayed to about -0.6.
        let later = at(3_000);
        assert_eq!(
            scores.apply(later, p, Penalty::High.into()),
            vec![ScoreEvent::Recovered]
        );
        assert_eq!(
            scores.apply(later, p, Penalty::High.into()),
            vec![ScoreEvent::Disconnect],
            "a second crossing after recovering fires again"
        );
    }

    #[test]
    fn disconnected_peers_keep_their_score_and_neutral_ones_are_forgotten() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 8);
        scores.set_connected(at(0), peer(1), true);
        scores.apply(at(0), peer(1), Penalty::Mid.into());
        scores.set_connected(at(1), peer(1), false);
        assert!(scores.score(at(1), &peer(1)) < Score::ZERO);
        scores.set_connected(at(2), peer(2), true);
        scores.set_connected(at(3), peer(2), false);
        assert_eq!(scores.len(), 1, "a neutral peer leaves no trace");
    }

    #[test]
    fn eviction_keeps_connected_and_informative_entries() {
        let mut scores = Scores::new(SCORE_HALF_LIFE, 4);
        scores.set_connected(at(0), peer(1), true);
        scores.apply(at(0), peer(2), Penalty::High.into());
        scores.apply(at(0), peer(2), Penalty::High.into()); // Awaiting recovery.
        scores.apply(at(0), peer(3), Penalty::Low.into());
        scores.apply(at(0), peer(4), Penalty::High.into());
        scores.apply(at(1), peer(5), Penalty::Mid.into()); // Evicts peer 3: closest to 0.
        assert_eq!(scores.len(), 4);
        assert_eq!(scores.score(at(1), &peer(3)), Score::ZERO);
        assert!(scores.score(at(1), &peer(4)) < Score::from_points(-9));
        scores.apply(at(2), peer(6), Penalty::Low.into()); // Evicts peer 5 (-5 beats -10).
        scores.apply(at(3), peer(7), Penalty::Low.into()); // Evicts peer 6 (-1 beats -10).
        assert!(scores.entries.contains_key(&peer(1)));
        assert!(scores.is_awaiting_recovery(&peer(2)));
        assert!(scores.entries.contains_key(&peer(4)));
        assert!(scores.entries.contains_key(&peer(7)));
        assert_eq!(scores.recoveries.len(), 1);
    }

    #[test]
    fn scoring_is_deterministic() {
        let run = || {
            let mut scores = Scores::new(Duration::from_secs(77), 16);
            let mut trace = Vec::new();
            for step in 0..500u64 {
                let p = peer((step % 5) as u8);
                let report = match step % 7 {
                    0 | 3 => Report::Reward,
                    1 => Penalty::Low.into(),
                    2 | 5 => Penalty::Mid.into(),
                    _ => Penalty::High.into(),
                };
                let now = Instant::from_micros(step * 3_333_333);
                trace.push((scores.apply(now, p, report), scores.score(now, &p)));
                trace.extend(
                    scores
                        .poll_recoveries(now)
                        .into_iter()
                        .map(|p| (vec![ScoreEvent::Recovered], scores.score(now, &p))),
                );
            }
            trace
        };
        assert_eq!(run(), run());
    }
}
