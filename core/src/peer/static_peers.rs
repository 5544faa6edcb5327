//! Static peers: addresses the operator wants kept connected, redialled with backoff.
//!
//! # Design
//! Each static peer is an address and, optionally, the identity that must
//! answer there, in one of three states:
//!
//! ```text
//!   add ──► Waiting(due) ──poll_dials(now ≥ due)──► Dialing(deadline)
//!              ▲    ▲                                 │   │
//!              │    └──dial failed, or deadline passed─┘   │ connected
//!              │         (backoff, failures + 1)          ▼
//!              └──────── disconnected (backoff) ──── Connected(peer, since)
//! ```
//!
//! The redial delay after `n` consecutive failures is
//! `min(REDIAL_BACKOFF_INITIAL · 2^n, REDIAL_BACKOFF_MAX)`, shortened by a
//! random part of up to [`REDIAL_JITTER_PERCENT`] % so that nodes restarted
//! together do not redial in lockstep; the randomness comes from a seeded RNG
//! owned by [`StaticPeers`]. A connection that lasts at least
//! [`STATIC_PEER_STABLE_DURATION`] resets the failure count, so the next redial
//! comes after the initial delay; one that drops sooner counts as a failure,
//! so a peer that accepts and at once refuses us is not redialled every second.
//! A dial that is neither reported connected nor failed within
//! [`STATIC_DIAL_ATTEMPT_TIMEOUT`] counts as failed: no state waits forever.
//!
//! A static peer counts as connected when a connection to its address
//! completes, or when its expected identity connects in either direction.
//!
//! # Security
//! Provided: redials are paced, so an unreachable or hostile static peer
//! costs at most one dial per [`REDIAL_BACKOFF_MAX`] once backed off.
//! Not provided: static peers are not exempt from bans, scores or limits;
//! the caller gates each dial like any other.
//!
//! # Limits
//! At most [`STATIC_PEERS_MAX`] static peers (configuration, not peer input).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::identity::PeerId;
use crate::limits;
use crate::time::{Duration, Instant};

/// Static peers at most: more than anyone keeps by hand, bounded all the same.
pub const STATIC_PEERS_MAX: usize = 64;
/// The first redial delay.
pub const REDIAL_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest redial delay: an unreachable static peer is tried every 5 min.
pub const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Each delay is shortened by a random amount of up to this share of it.
pub const REDIAL_JITTER_PERCENT: u64 = 25;
/// A connection that lasts this long counts as a success and resets the backoff.
pub const STATIC_PEER_STABLE_DURATION: Duration = Duration::from_secs(30);
/// A dial not reported connected or failed by then counts as failed: the
/// node's dial timeout plus its handshake timeout, the longest an honest attempt takes.
pub const STATIC_DIAL_ATTEMPT_TIMEOUT: Duration =
    Duration::from_secs(limits::DIAL_TIMEOUT.as_secs() + limits::HANDSHAKE_TIMEOUT.as_secs());

const _: () = assert!(REDIAL_BACKOFF_INITIAL.as_micros() < REDIAL_BACKOFF_MAX.as_micros());
const _: () = assert!(REDIAL_JITTER_PERCENT < 100);
const _: () = assert!(STATIC_PEER_STABLE_DURATION.as_secs() > REDIAL_BACKOFF_INITIAL.as_secs());

/// The static peer table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticPeersFull;

impl std::fmt::Display for StaticPeersFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at most {STATIC_PEERS_MAX} static peers")
    }
}

impl std::error::Error for StaticPeersFull {}

/// Where a static peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticState {
    /// To be dialled at `due`.
    Waiting {
        /// When.
        due: Instant,
    },
    /// Dialled; counts as failed if nothing is heard by `deadline`.
    Dialing {
        /// When.
        deadline: Instant,
    },
    /// Connected as `peer` since `since`.
    Connected {
        /// The identity connected.
        peer: PeerId,
        /// Since when.
        since: Instant,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    expected: Option<PeerId>,
    state: StaticState,
    /// Consecutive failures since the last stable connection.
    failures: u32,
}

/// The static peers and their redial schedule.
#[derive(Clone, Debug)]
pub struct StaticPeers {
    entries: BTreeMap<SocketAddr, Entry>,
    rng: ChaCha20Rng,
}

impl StaticPeers {
    /// No static peers; jitter drawn from `seed`.
    pub fn new(seed: [u8; 32]) -> StaticPeers {
        StaticPeers {
            entries: BTreeMap::new(),
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    /// Number of static peers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of the static peer at `addr`.
    pub fn state(&self, addr: SocketAddr) -> Option<StaticState> {
        self.entries.get(&addr).map(|entry| entry.state)
    }

    /// Whether `peer` is a static peer (expected there, or connected from there).
    pub fn contains_peer(&self, peer: &PeerId) -> bool {
        self.entries.values().any(|entry| {
            entry.expected == Some(*peer)
                || matches!(entry.state, StaticState::Connected { peer: connected, .. } if connected == *peer)
        })
    }

    /// Adds a static peer at `addr` (expecting `peer` there, if given), to be
    /// dialled at once. Adding a known address only updates the expected identity.
    pub fn add(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        peer: Option<PeerId>,
    ) -> Result<(), StaticPeersFull> {
        if let Some(entry) = self.entries.get_mut(&addr) {
            entry.expected = peer;
            return Ok(());
        }
        if self.entries.len() >= STATIC_PEERS_MAX {
            return Err(StaticPeersFull);
        }
        self.entries.insert(
            addr,
            Entry {
                expected: peer,
                state: StaticState::Waiting { due: now },
                failures: 0,
            },
        );
        Ok(())
    }

    /// Stops keeping `addr` connected (an existing connection is left alone).
    /// Whether it was a static peer.
    pub fn remove(&mut self, addr: SocketAddr) -> bool {
        self.entries.remove(&addr).is_some()
    }

    /// The dials due at `now`, in address order, each with the identity
    /// expected there; they move to `Dialing`. Attempts past their deadline
    /// are first counted as failed.
    pub fn poll_dials(&mut self, now: Instant) -> Vec<(SocketAddr, Option<PeerId>)> {
        let mut dials = Vec::new();
        let rng = &mut self.rng;
        for (&addr, entry) in &mut self.entries {
            if let StaticState::Dialing { deadline } = entry.state {
                if deadline <= now {
                    log::debug!("static peer {addr}: dial attempt timed out");
                    schedule_redial(entry, now, rng);
                }
            }
            if let StaticState::Waiting { due } = entry.state {
                if due <= now {
                    entry.state = StaticState::Dialing {
                        deadline: now + STATIC_DIAL_ATTEMPT_TIMEOUT,
                    };
                    dials.push((addr, entry.expected));
                }
            }
        }
        dials
    }

    /// The dial to `addr` failed (or was refused before it was made).
    /// Ignored unless that static peer is being dialled.
    pub fn handle_dial_failed(&mut self, now: Instant, addr: SocketAddr) {
        if let Some(entry) = self.entries.get_mut(&addr) {
            if matches!(entry.state, StaticState::Dialing { .. }) {
                schedule_redial(entry, now, &mut self.rng);
            }
        }
    }

    /// `peer` connected at `addr`: the static peer at that address (when
    /// `addr` is the dialled one and the identity fits) and every static peer
    /// expecting `peer` are now connected.
    pub fn handle_connected(&mut self, now: Instant, addr: SocketAddr, peer: PeerId) {
        for (&entry_addr, entry) in &mut self.entries {
            let at_address = entry_addr == addr && entry.expected.is_none_or(|e| e == peer);
            if at_address || entry.expected == Some(peer) {
                entry.state = StaticState::Connected { peer, since: now };
            }
        }
    }

    /// `peer` disconnected: every static peer connected as `peer` is scheduled
    /// for a redial.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerId) {
        for entry in self.entries.values_mut() {
            if let StaticState::Connected {
                peer: connected,
                since,
            } = entry.state
            {
                if connected == peer {
                    if now.saturating_duration_since(since) >= STATIC_PEER_STABLE_DURATION {
                        entry.failures = 0;
                    }
                    schedule_redial(entry, now, &mut self.rng);
                }
            }
        }
    }

    /// The next instant [`StaticPeers::poll_dials`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|entry| match entry.state {
                StaticState::Waiting { due } => Some(due),
                StaticState::Dialing { deadline } => Some(deadline),
                StaticState::Connected { .. } => None,
            })
            .min()
    }
}

/// Moves `entry` to `Waiting` after the backoff for its failures, and counts one more.
fn schedule_redial(entry: &mut Entry, now: Instant, rng: &mut impl RngCore) {
    let delay = redial_delay(entry.failures, rng);
    entry.failures = entry.failures.saturating_add(1);
    entry.state = StaticState::Waiting { due: now + delay };
}

/// The delay before the redial after `failures` consecutive failures:
/// `min(initial · 2^failures, max)`, less a random part of up to
/// [`REDIAL_JITTER_PERCENT`] % of it.
pub fn redial_delay(failures: u32, rng: &mut impl RngCore) -> Duration {
    let initial = REDIAL_BACKOFF_INITIAL.as_micros() as u64;
    let max = REDIAL_BACKOFF_MAX.as_micros() as u64;
    let backoff = 1u64
        .checked_shl(failures)
        .and_then(|factor| initial.checked_mul(factor))
        .map_or(max, |delay| delay.min(max));
    let jitter_max = backoff * REDIAL_JITTER_PERCENT / 100;
    let jitter = rng.next_u64() % (jitter_max + 1);
    Duration::from_micros(backoff - jitter)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), 9000)
    }

    fn peer(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    fn due(peers: &StaticPeers, address: SocketAddr) -> Instant {
        match peers.state(address) {
            Some(StaticState::Waiting { due }) => due,
            other => panic!("not waiting: {other:?}"),
        }
    }

    /// Whether `delay` is the backoff `nominal`, less at most the jitter share.
    fn within_jitter(delay: Duration, nominal: Duration) -> bool {
        delay <= nominal && delay >= nominal * (100 - REDIAL_JITTER_PERCENT as u32) / 100
    }

    #[test]
    fn new_static_peers_are_dialled_at_once() {
        let mut peers = StaticPeers::new([1; 32]);
        let now = Instant::from_micros(5);
        peers.add(now, addr(2), Some(peer(2))).unwrap();
        peers.add(now, addr(1), None).unwrap();
        assert_eq!(peers.next_deadline(), Some(now));
        assert_eq!(
            peers.poll_dials(now),
            vec![(addr(1), None), (addr(2), Some(peer(2)))]
        );
        assert!(peers.poll_dials(now).is_empty(), "dialled once");
        assert_eq!(
            peers.next_deadline(),
            Some(now + STATIC_DIAL_ATTEMPT_TIMEOUT)
        );
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let mut peers = StaticPeers::new([2; 32]);
        let mut now = Instant::ZERO;
        peers.add(now, addr(1), None).unwrap();
        let mut delays = Vec::new();
        for _ in 0..14 {
            assert_eq!(peers.poll_dials(now).len(), 1);
            peers.handle_dial_failed(now, addr(1));
            let next = due(&peers, addr(1));
            delays.push(next.saturating_duration_since(now));
            assert!(peers
                .poll_dials(Instant::from_micros(next.as_micros() - 1))
                .is_empty());
            now = next;
        }
        for (failures, delay) in delays.iter().enumerate() {
            let nominal = (REDIAL_BACKOFF_INITIAL * (1 << failures)).min(REDIAL_BACKOFF_MAX);
            assert!(
                within_jitter(*delay, nominal),
                "{failures}: {delay:?} vs {nominal:?}"
            );
        }
        assert!(
            delays[13] > Duration::from_secs(200),
            "capped at 5 min, less jitter"
        );
    }

    #[test]
    fn a_stable_connection_resets_the_backoff_and_a_brief_one_does_not() {
        let mut peers = StaticPeers::new([3; 32]);
        let mut now = Instant::ZERO;
        peers.add(now, addr(1), Some(peer(1))).unwrap();
        for _ in 0..5 {
            peers.poll_dials(now);
            peers.handle_dial_failed(now, addr(1));
            now = due(&peers, addr(1));
        }
        // Connects, but drops after 2 s: still backing off (the 6th delay, 32 s nominal).
        peers.poll_dials(now);
        peers.handle_connected(now, addr(1), peer(1));
        assert_eq!(peers.next_deadline(), None);
        now = now + Duration::from_secs(2);
        peers.handle_disconnected(now, peer(1));
        let delay = due(&peers, addr(1)).saturating_duration_since(now);
        assert!(within_jitter(delay, Duration::from_secs(32)), "{delay:?}");
        // Connects for a minute: the next redial comes after the initial delay.
        now = due(&peers, addr(1));
        peers.poll_dials(now);
        peers.handle_connected(now, addr(1), peer(1));
        now = now + Duration::from_secs(60);
        peers.handle_disconnected(now, peer(1));
        let delay = due(&peers, addr(1)).saturating_duration_since(now);
        assert!(within_jitter(delay, REDIAL_BACKOFF_INITIAL), "{delay:?}");
    }

    #[test]
    fn matching_by_identity_and_by_address() {
        let mut peers = StaticPeers::new([4; 32]);
        let now = Instant::ZERO;
        peers.add(now, addr(1), Some(peer(1))).unwrap();
        peers.add(now, addr(2), None).unwrap();
        peers.poll_dials(now);
        // Peer 1 dials us from another port: it is connected all the same.
        let elsewhere = SocketAddr::new(addr(1).ip(), 40_000);
        peers.handle_connected(now, elsewhere, peer(1));
        assert!(matches!(
            peers.state(addr(1)),
            Some(StaticState::Connected { .. })
        ));
        // The wrong identity at a static address with an expected identity does not count.
        peers.handle_connected(now, addr(1), peer(9));
        assert_eq!(
            peers.state(addr(1)),
            Some(StaticState::Connected {
                peer: peer(1),
                since: now
            })
        );
        // Whoever answers at an address without an expected identity does; it is learnt.
        peers.handle_connected(now, addr(2), peer(7));
        assert!(peers.contains_peer(&peer(7)));
        peers.handle_disconnected(now, peer(7));
        assert!(matches!(
            peers.state(addr(2)),
            Some(StaticState::Waiting { .. })
        ));
        assert!(matches!(
            peers.state(addr(1)),
            Some(StaticState::Connected { .. })
        ));
        // Failures of dials we did not make for a static peer are ignored.
        peers.handle_dial_failed(now, addr(1));
        peers.handle_dial_failed(now, addr(3));
        assert!(matches!(
            peers.state(addr(1)),
            Some(StaticState::Connected { .. })
        ));
    }

    #[test]
    fn an_unanswered_dial_times_out_into_a_redial() {
        let mut peers = StaticPeers::new([5; 32]);
        peers.add(Instant::ZERO, addr(1), None).unwrap();
        assert_eq!(peers.poll_dials(Instant::ZERO).len(), 1);
        let deadline = Instant::ZERO + STATIC_DIAL_ATTEMPT_TIMEOUT;
        assert!(peers.poll_dials(deadline).is_empty(), "backs off first");
        let next = due(&peers, addr(1));
        assert!(next > deadline);
        assert_eq!(peers.poll_dials(next), vec![(addr(1), None)]);
    }

    #[test]
    fn the_table_is_bounded_and_removal_stops_redials() {
        let mut peers = StaticPeers::new([6; 32]);
        for index in 0..STATIC_PEERS_MAX {
            let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), index as u16);
            peers.add(Instant::ZERO, address, None).unwrap();
        }
        assert_eq!(
            peers.add(Instant::ZERO, addr(1), None),
            Err(StaticPeersFull)
        );
        let first = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 0);
        assert!(
            peers.add(Instant::ZERO, first, Some(peer(1))).is_ok(),
            "update"
        );
        assert!(peers.remove(first));
        assert!(!peers.remove(first));
        assert_eq!(peers.poll_dials(Instant::ZERO).len(), STATIC_PEERS_MAX - 1);
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        let run = |seed: u8| {
            let mut rng = ChaCha20Rng::from_seed([seed; 32]);
            (0..20)
                .map(|failures| redial_delay(failures, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        assert!(within_jitter(
            redial_delay(u32::MAX, &mut rng),
            REDIAL_BACKOFF_MAX
        ));
    }
}
