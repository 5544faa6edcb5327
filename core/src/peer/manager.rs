//! [`PeerManager`]: scores, bans, gating, static peers and the peer table
//! behind the small API the node calls.
//!
//! # Design
//! The node tells the manager what happens to connections and what peers
//! do; the manager decides and returns [`Decision`]s and [`PeerEvent`]s that
//! the node carries out. Connections are named by the driver's [`ConnId`] from
//! the moment they open, so that connections still in their handshake count
//! toward the per-IP cap and a failed handshake releases its slot exactly.
//!
//! The calls, in a connection's life:
//!
//! ```text
//! dial wanted ── check_dial ──► (node dials) ─┐         (handle_dial_failed if it fails)
//! transport up ─────────────── handle_connection_attempt(conn, addr, direction)
//! handshake done ──────────── handle_connected(conn, peer)  ─► Refuse: Goodbye(reason), close
//! peer behaves / misbehaves ── update_status, report    ─► events
//! connection ends ─────────── handle_connection_closed(conn)
//! timer ───────────────────── handle_timeout                ─► events; next_deadline
//! ```
//!
//! Every call that takes `now` requires it never to go backwards. Events come
//! back in a deterministic order and must be carried out in that order.
//!
//! # Security
//! Provided: what [`super::gater`], [`super::score`] and [`super::bans`]
//! provide, tied together: a ban found by score bans the identity and,
//! once [`Config::ip_ban_peer_bans_min`] identities from one IP are banned,
//! the IP, disconnecting every peer there; a disconnected peer's score is
//! remembered, so reconnecting sheds nothing, and so is the address it last
//! came from, so a ban its score reaches after it left (late verdicts on
//! what it sent) still bans that IP.
//! Persistence across restarts is the node's peer store
//! (`crate::peerstore`): [`PeerManager::snapshot`] gives what it keeps,
//! `restore_*` take it back.
//!
//! # Limits
//! Those of the parts; the manager adds no table of its own.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use log::{debug, info};

use super::bans::{Bans, Unban, BANNED_IPS_MAX, BANNED_PEERS_MAX, BAN_DURATION};
use super::gater::{ConnectionLimits, Decision, Gater, PEERS_TARGET};
use super::ip_key;
use super::score::{Report, Score, ScoreEvent, Scores, SCORES_MAX, SCORE_HALF_LIFE};
use super::static_peers::StaticPeers;
use super::table::{ChainStatus, FinalizedTarget, PeerRecord, PeerTable, StatusError};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::{Duration, Instant};
use crate::types::{ConnId, Direction, GoodbyeReason};

/// Banned identities from one IP address before the address itself is
/// banned. 1, as the issue asks: one proven-bad peer bans its address.
/// Lighthouse waits for 5, sparing honest peers behind the same NAT; raise it
/// in [`Config`] where that matters more than Sybils on one address.
pub const IP_BAN_PEER_BANS_MIN: usize = 1;

/// Peer manager configuration. [`Config::default`] gives the module constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Connection limits enforced by the gater.
    pub limits: ConnectionLimits,
    /// Peers we try to keep; below it [`PeerManager::peers_wanted`] asks for more.
    pub peers_target: usize,
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Scores halve toward 0 in this time.
    pub score_half_life: Duration,
    /// Banned identities from one IP before the IP is banned too (`usize::MAX`: never).
    pub ip_ban_peer_bans_min: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: ConnectionLimits::default(),
            peers_target: PEERS_TARGET,
            ban_duration: BAN_DURATION,
            score_half_life: SCORE_HALF_LIFE,
            ip_ban_peer_bans_min: IP_BAN_PEER_BANS_MIN,
        }
    }
}

/// Something the node must do or tell the application, from the peer manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Say Goodbye(`reason`) to the connected `peer` and close its connection
    /// (then call [`PeerManager::handle_connection_closed`]). The reason is bad
    /// score, banned, or banned IP (another peer from its address was banned).
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// For the Goodbye.
        reason: GoodbyeReason,
    },
    /// `peer` is banned until `until`, and with it IP key `ip` when that was
    /// banned too. For the application; connections are refused from now on.
    Banned {
        /// The peer.
        peer: PeerId,
        /// The IP key banned along with it, if any.
        ip: Option<IpAddr>,
        /// When the ban ends.
        until: Instant,
    },
    /// The ban on `peer` ended (expired, or lifted early to make room).
    Unbanned {
        /// The peer.
        peer: PeerId,
    },
    /// The ban on IP key `ip` ended (expired, or lifted early to make room).
    IpUnbanned {
        /// The IP key.
        ip: IpAddr,
    },
    /// `peer`'s score, after a disconnect or ban, has recovered enough for it
    /// to be accepted again (its bans, if any, still apply).
    ScoreRecovered {
        /// The peer.
        peer: PeerId,
    },
    /// Dial static peer `addr`, requiring identity `peer` if given. Already
    /// gated; report the outcome with [`PeerManager::handle_dial_failed`] or
    /// [`PeerManager::handle_connection_attempt`].
    Dial {
        /// Where.
        addr: SocketAddr,
        /// The identity that must answer, if known.
        peer: Option<PeerId>,
    },
}

/// Why a peer manager call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerManagerError {
    /// Caused by the peer: its status cannot be true. Worth a penalty.
    InconsistentStatus(StatusError),
    /// Caller misuse: the peer is not connected.
    NotConnected(PeerId),
    /// Caller misuse: no room for another static peer.
    StaticPeersFull,
}

impl std::fmt::Display for PeerManagerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerManagerError::InconsistentStatus(error) => {
                write!(f, "inconsistent status: {error}")
            }
            PeerManagerError::NotConnected(peer) => write!(f, "{peer:?} is not connected"),
            PeerManagerError::StaticPeersFull => write!(
                f,
                "at most {} static peers",
                super::static_peers::STATIC_PEERS_MAX
            ),
        }
    }
}

impl std::error::Error for PeerManagerError {}

/// The peer manager.
///
/// # Methods
/// Getters: [`PeerManager::config`], [`PeerManager::peer`],
/// [`PeerManager::peers`], [`PeerManager::peer_count`],
/// [`PeerManager::inbound_peer_count`], [`PeerManager::peers_wanted`],
/// [`PeerManager::banned_peer_count`], [`PeerManager::banned_ip_count`],
/// [`PeerManager::score`], [`PeerManager::is_banned`],
/// [`PeerManager::is_ip_banned`], [`PeerManager::is_static_peer`],
/// [`PeerManager::best_peers`], [`PeerManager::best_finalized`],
/// [`PeerManager::check_dial`].
/// Handlers: [`PeerManager::handle_connection_attempt`],
/// [`PeerManager::handle_connected`], [`PeerManager::handle_connection_closed`],
/// [`PeerManager::handle_dial_failed`], [`PeerManager::handle_timeout`].
/// Mutators: [`PeerManager::report`], [`PeerManager::update_status`],
/// [`PeerManager::add_static_peer`], [`PeerManager::remove_static_peer`].
/// Poll: [`PeerManager::next_deadline`], when [`PeerManager::handle_timeout`] is next due.
#[derive(Clone, Debug)]
pub struct PeerManager {
    config: Config,
    scores: Scores,
    bans: Bans,
    gater: Gater,
    table: PeerTable,
    statics: StaticPeers,
    last_now: Instant,
    /// What `handle_timeout` decided, for `poll_event`; drained after each call.
    events: VecDeque<PeerEvent>,
}

impl PeerManager {
    /// A manager with `config`, drawing its randomness (redial jitter) from `seed`.
    ///
    /// # Panics
    /// If the configuration is inconsistent (a bug in the caller).
    pub fn new(config: Config, seed: [u8; 32]) -> PeerManager {
        assert!(
            config.peers_target <= config.limits.peers_max,
            "peers_target must not exceed peers_max"
        );
        assert!(
            config.limits.peers_max < SCORES_MAX,
            "connected peers' scores must fit in the score table"
        );
        assert!(
            config.ip_ban_peer_bans_min > 0,
            "ip_ban_peer_bans_min must be positive"
        );
        PeerManager {
            config,
            scores: Scores::new(config.score_half_life, SCORES_MAX),
            bans: Bans::new(BANNED_PEERS_MAX, BANNED_IPS_MAX),
            gater: Gater::new(config.limits),
            table: PeerTable::new(),
            statics: StaticPeers::new(seed),
            last_now: Instant::ZERO,
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The record of connected `peer`.
    pub fn peer(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.table.get(peer)
    }

    /// Connected peers, in identity order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerRecord> {
        self.table.iter()
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.table.len()
    }

    /// Connected inbound peers.
    pub fn inbound_peer_count(&self) -> usize {
        self.gater.inbound_peer_count()
    }

    /// How many more peers to dial to reach the target (outbound handshakes
    /// in progress count as peers already).
    pub fn peers_wanted(&self) -> usize {
        self.config
            .peers_target
            .saturating_sub(self.table.len() + self.gater.outbound_pending_count())
    }

    /// Peers whose score is remembered, connected or not (at most
    /// `SCORES_MAX`).
    pub fn remembered_scores(&self) -> usize {
        self.scores.len()
    }

    /// Peer bans held (those past their end go at the next timeout).
    pub fn banned_peer_count(&self) -> usize {
        self.bans.banned_peer_count()
    }

    /// IP bans held (those past their end go at the next timeout).
    pub fn banned_ip_count(&self) -> usize {
        self.bans.banned_ip_count()
    }

    /// `peer`'s score at `now` (0 if we do not remember it).
    pub fn score(&self, now: Instant, peer: &PeerId) -> Score {
        self.scores.score(now, peer)
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, now: Instant, peer: &PeerId) -> bool {
        self.bans.is_banned(now, peer)
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_ip_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.gater.is_ip_limited(ip) && self.bans.is_ip_banned(now, ip)
    }

    /// Whether `peer` is one of the static peers.
    pub fn is_static_peer(&self, peer: &PeerId) -> bool {
        self.statics.contains_peer(peer)
    }

    /// Up to `count` connected peers with a non-negative score whose head is
    /// ahead of `our_head_slot`, best first (see [`PeerTable::best_peers`]).
    pub fn best_peers(&self, now: Instant, our_head_slot: u64, count: usize) -> Vec<PeerId> {
        self.table
            .best_peers(our_head_slot, count, |peer| self.scores.score(now, peer))
    }

    /// The finalized slot most healthy peers ahead of `our_finalized_slot`
    /// claim, and up to `count` peers to sync it from (see [`PeerTable::best_finalized`]).
    pub fn best_finalized(
        &self,
        now: Instant,
        our_finalized_slot: u64,
        count: usize,
    ) -> Option<FinalizedTarget> {
        self.table
            .best_finalized(our_finalized_slot, count, |peer| {
                self.scores.score(now, peer)
            })
    }

    /// Whether to dial `addr`, expecting identity `expected` if given. A
    /// refused static-peer dial should be reported with [`PeerManager::handle_dial_failed`].
    pub fn check_dial(&self, now: Instant, addr: SocketAddr, expected: Option<PeerId>) -> Decision {
        debug_assert!(now >= self.last_now, "time went backwards");
        let score = expected.map_or(Score::ZERO, |peer| self.scores.score(now, &peer));
        let decision = self
            .gater
            .check_dial(now, addr, expected, &self.bans, score);
        let is_static = expected.is_some_and(|peer| self.is_static_peer(&peer));
        if decision.is_accept() && !is_static {
            return self.gater.check_netgroup(addr.ip());
        }
        decision
    }

    /// The gater's verdict on `peer` from `conn`, and then the network-group
    /// cap, which static peers and a peer replacing its own connection skip.
    fn check_established(&self, now: Instant, conn: ConnId, peer: PeerId) -> Decision {
        let replacing = self.table.get(&peer).is_some();
        let score = self.scores.score(now, &peer);
        let decision = self
            .gater
            .check_established(now, conn, peer, replacing, &self.bans, score);
        match self.gater.connection(conn) {
            Some(tracked) if decision.is_accept() && !replacing && !self.is_static_peer(&peer) => {
                self.gater.check_netgroup(tracked.ip)
            }
            _ => decision,
        }
    }

    /// A transport connection opened (accepted, or one of our dials
    /// connected), before any handshake. On [`Decision::Accept`] the
    /// connection is tracked until [`PeerManager::handle_connection_closed`];
    /// on a refusal, close it at once (no channel exists for a Goodbye).
    ///
    /// # Panics
    /// If `conn` is already tracked (the driver must never reuse an id).
    pub fn handle_connection_attempt(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: SocketAddr,
        direction: Direction,
    ) -> Decision {
        let now = self.advance(now);
        let decision = self
            .gater
            .check_accept(now, addr.ip(), direction, &self.bans);
        match decision {
            Decision::Accept => self.gater.insert(conn, addr, direction),
            Decision::Refuse(refusal) => {
                debug!("{addr}: connection refused before the handshake: {refusal:?}");
                if direction == Direction::Outbound {
                    self.statics.handle_dial_failed(now, addr);
                }
            }
        }
        decision
    }

    /// What [`PeerManager::handle_connected`] would decide for `peer` on
    /// `conn` now, without deciding it: so the node can tell a refusal for
    /// room, which it may make room for, from one for a ban or a score.
    pub fn check_connected(&self, now: Instant, conn: ConnId, peer: PeerId) -> Decision {
        if self.gater.connection(conn).is_none() {
            return Decision::Accept; // Not tracked: handle_connected's own check applies.
        }
        self.check_established(now, conn, peer)
    }

    /// The handshake on `conn` proved `peer`. On [`Decision::Accept`] it is a
    /// connected peer; if it was already connected on another connection,
    /// this one replaces it (close the old one; its close needs no report).
    /// On a refusal, say Goodbye([`super::Refusal::goodbye_reason`]) and close
    /// `conn`; the manager has already stopped tracking it.
    ///
    /// # Panics
    /// If `conn` was not accepted by [`PeerManager::handle_connection_attempt`],
    /// or is already connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId, peer: PeerId) -> Decision {
        let now = self.advance(now);
        let tracked = *self
            .gater
            .connection(conn)
            .expect("on_connected follows an accepted on_connection_attempt");
        assert!(tracked.peer.is_none(), "on_connected twice for {conn:?}");
        let existing = self.table.get(&peer).cloned();
        let decision = self.check_established(now, conn, peer);
        if let Decision::Refuse(refusal) = decision {
            debug!(
                "{peer:?} at {}: refused after the handshake: {refusal:?}",
                tracked.addr
            );
            self.gater.remove(conn);
            if tracked.direction == Direction::Outbound {
                self.statics.handle_dial_failed(now, tracked.addr);
            }
            return decision;
        }
        let (connected_at, status) = match existing {
            Some(old) => {
                debug!("{peer:?}: connection {conn:?} replaces {:?}", old.conn);
                self.gater.remove(old.conn);
                (old.connected_at, old.status)
            }
            None => (now, None),
        };
        self.gater.establish(conn, peer);
        self.table.insert(PeerRecord {
            peer,
            conn,
            addr: tracked.addr,
            direction: tracked.direction,
            connected_at,
            status,
        });
        self.scores.set_connected_from(now, peer, tracked.addr.ip());
        self.statics.handle_connected(now, tracked.addr, peer);
        decision
    }

    /// Connection `conn` ended, for any reason (refused, failed handshake,
    /// closed by either side). Unknown or already-released connections are ignored.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnId) {
        let now = self.advance(now);
        let Some(tracked) = self.gater.remove(conn) else {
            return;
        };
        match tracked.peer {
            Some(peer) => {
                if self
                    .table
                    .get(&peer)
                    .is_some_and(|record| record.conn == conn)
                {
                    self.table.remove(&peer);
                    self.scores.set_connected(now, peer, false);
                    self.statics.handle_disconnected(now, peer);
                }
            }
            None => {
                if tracked.direction == Direction::Outbound {
                    self.statics.handle_dial_failed(now, tracked.addr);
                }
            }
        }
    }

    /// A dial to `addr` failed, timed out, or was refused before it was made.
    pub fn handle_dial_failed(&mut self, now: Instant, addr: SocketAddr) {
        let now = self.advance(now);
        self.statics.handle_dial_failed(now, addr);
    }

    /// Records what connected `peer` last said about its chain.
    pub fn update_status(
        &mut self,
        peer: &PeerId,
        status: ChainStatus,
    ) -> Result<(), PeerManagerError> {
        let status = status
            .check()
            .map_err(PeerManagerError::InconsistentStatus)?;
        if self.table.set_status(peer, status) {
            Ok(())
        } else {
            Err(PeerManagerError::NotConnected(*peer))
        }
    }

    /// Applies `report` to `peer`'s score (connected or not) and returns what
    /// the crossing of a threshold requires, if anything.
    pub fn report(&mut self, now: Instant, peer: PeerId, report: Report) -> Vec<PeerEvent> {
        let now = self.advance(now);
        let mut events = Vec::new();
        log::trace!("{peer:?}: {report:?}");
        for event in self.scores.apply(now, peer, report) {
            match event {
                ScoreEvent::Recovered => events.push(PeerEvent::ScoreRecovered { peer }),
                ScoreEvent::Disconnect => {
                    info!(
                        "{peer:?}: score {} at or below the disconnect threshold",
                        self.scores.score(now, &peer)
                    );
                    if self.table.contains(&peer) {
                        events.push(PeerEvent::Disconnect {
                            peer,
                            reason: GoodbyeReason::BadScore,
                        });
                    }
                }
                ScoreEvent::Ban => self.ban(now, peer, &mut events),
            }
        }
        events
    }

    /// Keeps `addr` connected, expecting identity `peer` there if given; it is
    /// dialled at the next [`PeerManager::handle_timeout`] unless already connected.
    pub fn add_static_peer(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        peer: Option<PeerId>,
    ) -> Result<(), PeerManagerError> {
        let now = self.advance(now);
        self.statics
            .add(now, addr, peer)
            .map_err(|_| PeerManagerError::StaticPeersFull)?;
        for record in self.table.iter() {
            if record.addr == addr || Some(record.peer) == peer {
                self.statics.handle_connected(now, record.addr, record.peer);
            }
        }
        Ok(())
    }

    /// Stops keeping `addr` connected (does not disconnect it). Whether it was static.
    pub fn remove_static_peer(&mut self, addr: SocketAddr) -> bool {
        self.statics.remove(addr)
    }

    /// The non-zero scores at `now` with their peers' last IPs, and the
    /// peer and IP bans in force: what the peer store keeps.
    #[allow(clippy::type_complexity)]
    pub fn snapshot(
        &self,
        now: Instant,
    ) -> (
        Vec<(PeerId, Score, Option<IpAddr>)>,
        Vec<(PeerId, Option<IpAddr>, Instant)>,
        Vec<(IpAddr, Instant)>,
    ) {
        (
            self.scores.snapshot(now),
            self.bans.peer_bans(now),
            self.bans.ip_bans(now),
        )
    }

    /// A score the peer store kept: `peer` has `score` at `now` (already
    /// decayed over the time the node was down). See [`Scores::restore`].
    pub fn restore_score(&mut self, now: Instant, peer: PeerId, score: Score, ip: Option<IpAddr>) {
        let now = self.advance(now);
        self.scores.restore(now, peer, score, ip);
    }

    /// A ban the peer store kept: `peer` (from IP key `ip`) is banned
    /// until `until`. Bans already past are ignored. Returns bans lifted to
    /// make room (none while the store holds no more than the table).
    pub fn restore_peer_ban(
        &mut self,
        now: Instant,
        peer: PeerId,
        ip: Option<IpAddr>,
        until: Instant,
    ) -> Vec<PeerEvent> {
        let now = self.advance(now);
        if until <= now {
            return Vec::new();
        }
        let ip = ip.filter(|&ip| self.gater.is_ip_limited(ip));
        let lifted = self.bans.ban_peer(peer, ip, until);
        lifted.into_iter().map(unban_event).collect()
    }

    /// A ban by IP the peer store kept; see [`PeerManager::restore_peer_ban`].
    pub fn restore_ip_ban(&mut self, now: Instant, ip: IpAddr, until: Instant) -> Vec<PeerEvent> {
        let now = self.advance(now);
        if until <= now || !self.gater.is_ip_limited(ip) {
            return Vec::new();
        }
        let lifted = self.bans.ban_ip(ip, until);
        lifted.into_iter().map(unban_event).collect()
    }

    /// The next thing [`Machine::handle_timeout`] decided, until `None`.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Bans `peer` (and its IP, once enough identities from it are banned),
    /// asking for the disconnections that follow.
    fn ban(&mut self, now: Instant, peer: PeerId, events: &mut Vec<PeerEvent>) {
        let until = now + self.config.ban_duration;
        // A peer walked down step by step was disconnected at the disconnect
        // threshold and left the table long before the ban: its remembered
        // address is what the ban reaches.
        let ip = self
            .table
            .get(&peer)
            .map(|record| record.addr.ip())
            .or_else(|| self.scores.last_ip(&peer))
            .filter(|&ip| self.gater.is_ip_limited(ip))
            .map(ip_key);
        if self.table.contains(&peer) {
            events.push(PeerEvent::Disconnect {
                peer,
                reason: GoodbyeReason::Banned,
            });
        }
        let mut lifted = self.bans.ban_peer(peer, ip, until);
        let banned_ip = ip
            .filter(|&ip| self.bans.banned_peers_from(now, ip) >= self.config.ip_ban_peer_bans_min);
        if let Some(ip) = banned_ip {
            lifted.extend(self.bans.ban_ip(ip, until));
        }
        let until = self.bans.peer_banned_until(&peer).unwrap_or(until);
        info!("{peer:?}: banned until {until} (IP: {banned_ip:?})");
        events.push(PeerEvent::Banned {
            peer,
            ip: banned_ip,
            until,
        });
        if let Some(ip) = banned_ip {
            for record in self.table.iter() {
                if record.peer != peer && ip_key(record.addr.ip()) == ip {
                    events.push(PeerEvent::Disconnect {
                        peer: record.peer,
                        reason: GoodbyeReason::BannedIp,
                    });
                }
            }
        }
        events.extend(lifted.into_iter().map(unban_event));
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.last_now.advance_to(now)
    }
}

fn unban_event(unban: Unban) -> PeerEvent {
    match unban {
        Unban::Peer(peer) => PeerEvent::Unbanned { peer },
        Unban::Ip(ip) => PeerEvent::IpUnbanned { ip },
    }
}

impl Machine for PeerManager {
    /// Does what is due at `now`: ends bans, reports recovered scores, and
    /// asks for the static-peer dials that are due and pass the gater.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let mut events: Vec<PeerEvent> =
            self.bans.expire(now).into_iter().map(unban_event).collect();
        events.extend(
            self.scores
                .poll_recoveries(now)
                .into_iter()
                .map(|peer| PeerEvent::ScoreRecovered { peer }),
        );
        for (addr, peer) in self.statics.poll_dials(now) {
            match self.check_dial(now, addr, peer) {
                Decision::Accept => events.push(PeerEvent::Dial { addr, peer }),
                Decision::Refuse(refusal) => {
                    debug!("static peer {addr}: not dialling: {refusal:?}");
                    self.statics.handle_dial_failed(now, addr);
                }
            }
        }
        self.events.extend(events);
    }

    /// When [`Machine::handle_timeout`] next has something to do, if ever.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.bans.next_expiry(),
            self.scores.next_recovery(),
            self.statics.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::peer::gater::{Refusal, PEERS_PER_NETGROUP_MAX};
    use crate::peer::score::{Penalty, SCORE_GATE_THRESHOLD};
    use crate::peer::static_peers::{StaticState, REDIAL_BACKOFF_INITIAL};

    /// What one `handle_timeout` at `now` decided, drained.
    fn timeouts(manager: &mut PeerManager, now: Instant) -> Vec<PeerEvent> {
        manager.handle_timeout(now);
        std::iter::from_fn(|| manager.poll_event()).collect()
    }

    fn peer(index: u16) -> PeerId {
        let mut bytes = [0u8; 32];
        bytes[..2].copy_from_slice(&index.to_be_bytes());
        PeerId::from_bytes(bytes)
    }

    /// Address `index` on IP `10.0.x.y`: one host per index.
    fn addr(index: u16) -> SocketAddr {
        let [high, low] = index.to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, high, low)), 9000)
    }

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    /// Opens, handshakes and admits connection `index` as peer `index` from `address`.
    fn connect_from(
        manager: &mut PeerManager,
        now: Instant,
        index: u16,
        address: SocketAddr,
        direction: Direction,
    ) -> Decision {
        let conn = ConnId(u64::from(index));
        match manager.handle_connection_attempt(now, conn, address, direction) {
            Decision::Accept => manager.handle_connected(now, conn, peer(index)),
            refused => refused,
        }
    }

    fn connect(
        manager: &mut PeerManager,
        now: Instant,
        index: u16,
        direction: Direction,
    ) -> Decision {
        connect_from(manager, now, index, addr(index), direction)
    }

    fn penalise(
        manager: &mut PeerManager,
        now: Instant,
        index: u16,
        penalty: Penalty,
        times: usize,
    ) -> Vec<PeerEvent> {
        (0..times)
            .flat_map(|_| manager.report(now, peer(index), penalty.into()))
            .collect()
    }

    #[test]
    fn connections_become_peers_and_release_their_slots() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        assert_eq!(
            connect(&mut manager, at(0), 1, Direction::Inbound),
            Decision::Accept
        );
        assert_eq!(
            connect(&mut manager, at(0), 2, Direction::Outbound),
            Decision::Accept
        );
        assert_eq!(manager.peer_count(), 2);
        assert_eq!(manager.inbound_peer_count(), 1);
        assert_eq!(manager.peers_wanted(), PEERS_TARGET - 2);
        let record = manager.peer(&peer(1)).unwrap();
        assert_eq!(
            (record.conn, record.addr, record.direction),
            (ConnId(1), addr(1), Direction::Inbound)
        );
        manager.handle_connection_closed(at(1), ConnId(1));
        manager.handle_connection_closed(at(1), ConnId(1));
        assert_eq!(manager.peer_count(), 1);
        assert_eq!(manager.inbound_peer_count(), 0);
        // A connection that fails its handshake frees its per-IP count too.
        manager.handle_connection_attempt(at(1), ConnId(3), addr(3), Direction::Inbound);
        manager.handle_connection_closed(at(1), ConnId(3));
        assert_eq!(manager.gater.connection_count(), 1);
        assert_eq!(
            manager
                .peers()
                .map(|record| record.peer)
                .collect::<Vec<_>>(),
            vec![peer(2)]
        );
    }

    #[test]
    fn inbound_floods_leave_room_for_outbound_peers() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        let limits = manager.config().limits;
        let mut refused = 0;
        for index in 0..200 {
            if !connect(&mut manager, at(0), index, Direction::Inbound).is_accept() {
                refused += 1;
            }
        }
        assert_eq!(manager.inbound_peer_count(), limits.inbound_peers_max);
        assert_eq!(refused, 200 - limits.inbound_peers_max);
        for index in 1_000..1_000 + (limits.peers_max - limits.inbound_peers_max) as u16 {
            assert!(manager.check_dial(at(0), addr(index), None).is_accept());
            assert_eq!(
                connect(&mut manager, at(0), index, Direction::Outbound),
                Decision::Accept
            );
        }
        assert_eq!(manager.peer_count(), limits.peers_max);
        assert_eq!(
            manager.check_dial(at(0), addr(2_000), None),
            Decision::Refuse(Refusal::TooManyPeers)
        );
        assert_eq!(manager.peers_wanted(), 0);
    }

    #[test]
    fn per_ip_cap_applies_across_identities() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        let shared = addr(7);
        for index in 0..crate::peer::CONNECTIONS_PER_IP_MAX as u16 {
            let address = SocketAddr::new(shared.ip(), 1_000 + index);
            assert_eq!(
                connect_from(&mut manager, at(0), index, address, Direction::Inbound),
                Decision::Accept
            );
        }
        let address = SocketAddr::new(shared.ip(), 5_000);
        assert_eq!(
            connect_from(&mut manager, at(0), 99, address, Direction::Inbound),
            Decision::Refuse(Refusal::TooManyFromIp)
        );
    }

    #[test]
    fn a_falling_score_disconnects_once_then_bans_by_identity_and_ip() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        connect(&mut manager, at(0), 1, Direction::Inbound);
        // Another identity on the same IP, and a bystander elsewhere.
        connect_from(
            &mut manager,
            at(0),
            2,
            SocketAddr::new(addr(1).ip(), 7),
            Direction::Inbound,
        );
        connect(&mut manager, at(0), 3, Direction::Inbound);

        assert!(penalise(&mut manager, at(1), 1, Penalty::High, 1).is_empty());
        assert_eq!(
            penalise(&mut manager, at(1), 1, Penalty::High, 1),
            vec![PeerEvent::Disconnect {
                peer: peer(1),
                reason: GoodbyeReason::BadScore
            }]
        );
        assert!(
            penalise(&mut manager, at(1), 1, Penalty::High, 2).is_empty(),
            "once per crossing"
        );
        let until = at(1) + BAN_DURATION;
        assert_eq!(
            penalise(&mut manager, at(1), 1, Penalty::High, 1),
            vec![
                PeerEvent::Disconnect {
                    peer: peer(1),
                    reason: GoodbyeReason::Banned
                },
                PeerEvent::Banned {
                    peer: peer(1),
                    ip: Some(addr(1).ip()),
                    until
                },
                PeerEvent::Disconnect {
                    peer: peer(2),
                    reason: GoodbyeReason::BannedIp
                },
            ]
        );
        assert!(manager.is_banned(at(1), &peer(1)));
        assert!(manager.is_ip_banned(at(1), addr(1).ip()));
        for conn in [1, 2] {
            manager.handle_connection_closed(at(2), ConnId(conn));
        }
        // A third identity from the banned IP is refused before its handshake.
        let again = SocketAddr::new(addr(1).ip(), 8);
        assert_eq!(
            manager.handle_connection_attempt(at(3), ConnId(10), again, Direction::Inbound),
            Decision::Refuse(Refusal::BannedIp)
        );
        // The banned identity from a fresh IP gets through accept but not the handshake check.
        assert!(manager
            .handle_connection_attempt(at(3), ConnId(11), addr(50), Direction::Inbound)
            .is_accept());
        assert_eq!(
            manager.handle_connected(at(3), ConnId(11), peer(1)),
            Decision::Refuse(Refusal::Banned)
        );
        assert_eq!(
            manager.gater.connection_count(),
            1,
            "the refused connection is released"
        );
        assert_eq!(
            manager.check_dial(at(3), addr(60), Some(peer(1))),
            Decision::Refuse(Refusal::Banned)
        );
        assert_eq!(manager.peer_count(), 1);

        // Score recovery comes first (-50 to -10 takes about 2.3 half-lives), then the bans end.
        let mut events = Vec::new();
        while let Some(deadline) = manager.next_deadline() {
            events.extend(
                timeouts(&mut manager, deadline)
                    .into_iter()
                    .map(|event| (deadline, event)),
            );
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].1, PeerEvent::ScoreRecovered { peer: peer(1) });
        assert!(
            events[0].0 > at(1_300) && events[0].0 < at(1_500),
            "{:?}",
            events[0].0
        );
        assert_eq!(events[1], (until, PeerEvent::Unbanned { peer: peer(1) }));
        assert_eq!(
            events[2],
            (until, PeerEvent::IpUnbanned { ip: addr(1).ip() })
        );
        assert!(!manager.is_banned(until, &peer(1)));
        assert!(connect_from(&mut manager, until, 12, again, Direction::Inbound).is_accept());
    }

    /// The attack: a peer is walked down by Mid penalties, disconnected at
    /// -20 (it leaves the table), and charged the rest after it left (late
    /// verdicts on what it sent). The ban at -50 must still reach its IP, so
    /// a fresh identity from the same address is refused.
    #[test]
    fn a_ban_reached_after_disconnect_still_bans_the_ip() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        connect(&mut manager, at(0), 1, Direction::Inbound);
        let disconnect = vec![PeerEvent::Disconnect {
            peer: peer(1),
            reason: GoodbyeReason::BadScore,
        }];
        assert!(penalise(&mut manager, at(1), 1, Penalty::Mid, 3).is_empty());
        assert_eq!(
            penalise(&mut manager, at(1), 1, Penalty::Mid, 1),
            disconnect
        );
        manager.handle_connection_closed(at(1), ConnId(1));
        assert!(manager.peer(&peer(1)).is_none(), "it left the table");

        // Late verdicts, the same instant (no decay in between).
        assert!(penalise(&mut manager, at(1), 1, Penalty::Mid, 5).is_empty());
        assert_eq!(
            penalise(&mut manager, at(1), 1, Penalty::Mid, 1),
            vec![PeerEvent::Banned {
                peer: peer(1),
                ip: Some(addr(1).ip()),
                until: at(1) + BAN_DURATION,
            }]
        );
        assert!(manager.is_ip_banned(at(3), addr(1).ip()));
        let same_address = SocketAddr::new(addr(1).ip(), 40_000);
        assert_eq!(
            connect_from(&mut manager, at(3), 2, same_address, Direction::Inbound),
            Decision::Refuse(Refusal::BannedIp)
        );
        assert!(connect(&mut manager, at(3), 3, Direction::Inbound).is_accept());
    }

    #[test]
    fn a_disconnected_peer_is_gated_until_its_score_recovers() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        connect(&mut manager, at(0), 1, Direction::Outbound);
        let events = penalise(&mut manager, at(0), 1, Penalty::High, 2);
        assert_eq!(
            events,
            vec![PeerEvent::Disconnect {
                peer: peer(1),
                reason: GoodbyeReason::BadScore
            }]
        );
        manager.handle_connection_closed(at(0), ConnId(1));
        assert!(
            manager.score(at(0), &peer(1)) < SCORE_GATE_THRESHOLD,
            "remembered after disconnect"
        );
        // Reconnecting a minute later is refused by score, at dial and after the handshake.
        assert_eq!(
            manager.check_dial(at(60), addr(1), Some(peer(1))),
            Decision::Refuse(Refusal::BadScore)
        );
        assert_eq!(
            connect_from(&mut manager, at(60), 1, addr(1), Direction::Inbound),
            Decision::Refuse(Refusal::BadScore)
        );
        let recovery = manager.next_deadline().expect("recovery scheduled");
        assert!(
            recovery.saturating_duration_since(at(0)) <= SCORE_HALF_LIFE + Duration::from_millis(1)
        );
        assert_eq!(
            timeouts(&mut manager, recovery),
            vec![PeerEvent::ScoreRecovered { peer: peer(1) }]
        );
        assert!(timeouts(&mut manager, recovery).is_empty(), "reported once");
        assert!(manager
            .check_dial(recovery, addr(1), Some(peer(1)))
            .is_accept());
        assert!(connect_from(&mut manager, recovery, 1, addr(1), Direction::Outbound).is_accept());
    }

    #[test]
    fn bans_of_loopback_peers_do_not_ban_loopback() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        connect_from(&mut manager, at(0), 1, local, Direction::Inbound);
        let events = penalise(&mut manager, at(0), 1, Penalty::Fatal, 1);
        assert!(events.contains(&PeerEvent::Banned {
            peer: peer(1),
            ip: None,
            until: at(0) + BAN_DURATION
        }));
        assert!(!manager.is_ip_banned(at(0), local.ip()));
    }

    #[test]
    fn ip_bans_wait_for_the_configured_number_of_banned_identities() {
        let config = Config {
            ip_ban_peer_bans_min: 2,
            ..Config::default()
        };
        let mut manager = PeerManager::new(config, [0; 32]);
        let ip = addr(1).ip();
        connect_from(
            &mut manager,
            at(0),
            1,
            SocketAddr::new(ip, 1),
            Direction::Inbound,
        );
        connect_from(
            &mut manager,
            at(0),
            2,
            SocketAddr::new(ip, 2),
            Direction::Inbound,
        );
        let first = penalise(&mut manager, at(0), 1, Penalty::Fatal, 1);
        assert!(first.contains(&PeerEvent::Banned {
            peer: peer(1),
            ip: None,
            until: at(0) + BAN_DURATION
        }));
        assert!(!manager.is_ip_banned(at(0), ip));
        let second = penalise(&mut manager, at(0), 2, Penalty::Fatal, 1);
        assert!(second.contains(&PeerEvent::Banned {
            peer: peer(2),
            ip: Some(ip),
            until: at(0) + BAN_DURATION
        }));
        assert!(manager.is_ip_banned(at(0), ip));
    }

    #[test]
    fn a_second_connection_of_a_peer_replaces_the_first() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        connect(&mut manager, at(0), 1, Direction::Inbound);
        manager
            .update_status(
                &peer(1),
                ChainStatus {
                    head_slot: 9,
                    finalized_slot: 1,
                },
            )
            .unwrap();
        assert!(manager
            .handle_connection_attempt(at(5), ConnId(77), addr(1), Direction::Outbound)
            .is_accept());
        assert!(manager
            .handle_connected(at(5), ConnId(77), peer(1))
            .is_accept());
        manager.handle_connection_closed(at(5), ConnId(1)); // The replaced one: ignored.
        assert_eq!(manager.peer_count(), 1);
        assert_eq!(manager.inbound_peer_count(), 0);
        let record = manager.peer(&peer(1)).unwrap();
        assert_eq!(
            (record.conn, record.direction, record.connected_at),
            (ConnId(77), Direction::Outbound, at(0))
        );
        assert_eq!(
            record.status.map(|status| status.head_slot),
            Some(9),
            "status carried over"
        );
        assert_eq!(manager.gater.connection_count(), 1);
    }

    #[test]
    fn one_network_group_gets_a_tenth_of_the_slots_when_capped() {
        let capped = |cap| {
            let mut config = Config::default();
            config.limits.peers_per_netgroup_max = cap;
            PeerManager::new(config, [9; 32])
        };
        // Every index in its own host of one public /16 (`addr` is a
        // private /16, which the cap leaves to its operator: checked last).
        let addr = |index: u16| {
            let [high, low] = index.to_be_bytes();
            SocketAddr::from(([45, 33, high, low], 9000))
        };
        let connect = |manager: &mut PeerManager, now, index: u16, direction| {
            connect_from(manager, now, index, addr(index), direction)
        };
        let mut manager = capped(Some(PEERS_PER_NETGROUP_MAX));
        for index in 1..=PEERS_PER_NETGROUP_MAX as u16 {
            assert!(connect(&mut manager, at(0), index, Direction::Inbound).is_accept());
        }
        let over = PEERS_PER_NETGROUP_MAX as u16 + 1;
        assert_eq!(
            connect(&mut manager, at(0), over, Direction::Inbound),
            Decision::Refuse(Refusal::TooManyFromNetGroup)
        );
        assert_eq!(
            manager.check_dial(at(0), addr(over), Some(peer(over))),
            Decision::Refuse(Refusal::TooManyFromNetGroup),
            "our own dials count too"
        );
        assert_eq!(
            Refusal::TooManyFromNetGroup.goodbye_reason(),
            GoodbyeReason::TooManyPeers
        );
        // Another /16 is another group.
        let elsewhere = SocketAddr::from(([45, 34, 0, 1], 9000));
        assert!(connect_from(&mut manager, at(0), 100, elsewhere, Direction::Inbound).is_accept());
        // A peer reconnecting replaces its own slot; a departure frees one.
        let again = ConnId(1_001);
        assert!(manager
            .handle_connection_attempt(at(0), again, addr(1), Direction::Inbound)
            .is_accept());
        assert!(manager.handle_connected(at(0), again, peer(1)).is_accept());
        manager.handle_connection_closed(at(1), ConnId(2));
        assert!(connect(&mut manager, at(1), over, Direction::Inbound).is_accept());
        // Static peers are the operator's choice: never refused for their group.
        let static_index = over + 1;
        manager
            .add_static_peer(at(1), addr(static_index), Some(peer(static_index)))
            .unwrap();
        assert!(manager
            .check_dial(at(1), addr(static_index), Some(peer(static_index)))
            .is_accept());
        assert!(connect(&mut manager, at(1), static_index, Direction::Outbound).is_accept());
        // Loopback is one host, exempt as from the per-IP cap.
        for index in 200..200 + PEERS_PER_NETGROUP_MAX as u16 + 2 {
            let loopback = SocketAddr::from(([127, 0, 0, 1], index));
            assert!(
                connect_from(&mut manager, at(1), index, loopback, Direction::Inbound).is_accept()
            );
        }

        // A private /16 (an operator's own network) is not capped.
        let mut private = capped(Some(PEERS_PER_NETGROUP_MAX));
        for index in 1..=2 * PEERS_PER_NETGROUP_MAX as u16 {
            assert!(
                super::tests::connect(&mut private, at(0), index, Direction::Inbound).is_accept()
            );
        }

        // Without the cap (the default), one group may take any slot.
        let mut open = capped(None);
        for index in 1..=2 * PEERS_PER_NETGROUP_MAX as u16 {
            assert!(connect(&mut open, at(0), index, Direction::Inbound).is_accept());
        }
    }

    #[test]
    fn static_peers_are_dialled_redialled_and_reset() {
        let mut manager = PeerManager::new(Config::default(), [9; 32]);
        manager
            .add_static_peer(at(0), addr(1), Some(peer(1)))
            .unwrap();
        assert!(manager.is_static_peer(&peer(1)));
        assert_eq!(manager.next_deadline(), Some(at(0)));
        assert_eq!(
            timeouts(&mut manager, at(0)),
            vec![PeerEvent::Dial {
                addr: addr(1),
                peer: Some(peer(1))
            }]
        );
        // The dial fails: a redial about a second later.
        manager.handle_dial_failed(at(0), addr(1));
        let redial = manager.next_deadline().unwrap();
        assert!(
            redial <= at(0) + REDIAL_BACKOFF_INITIAL
                && redial >= at(0) + REDIAL_BACKOFF_INITIAL * 3 / 4
        );
        assert!(timeouts(&mut manager, Instant::from_micros(redial.as_micros() - 1)).is_empty());
        assert_eq!(timeouts(&mut manager, redial).len(), 1);
        // It fails its handshake: the backoff doubles.
        manager.handle_connection_attempt(redial, ConnId(1), addr(1), Direction::Outbound);
        manager.handle_connection_closed(redial, ConnId(1));
        let second = manager.next_deadline().unwrap();
        let delay = second.saturating_duration_since(redial);
        assert!(
            delay > Duration::from_millis(1_400) && delay <= Duration::from_secs(2),
            "{delay:?}"
        );
        timeouts(&mut manager, second);
        // Connected for ten minutes, then lost: the backoff starts over.
        assert!(connect(&mut manager, second, 1, Direction::Outbound).is_accept());
        assert_eq!(manager.next_deadline(), None);
        let lost = second + Duration::from_secs(600);
        manager.handle_connection_closed(lost, ConnId(1));
        let third = manager.next_deadline().unwrap();
        assert!(third.saturating_duration_since(lost) <= REDIAL_BACKOFF_INITIAL);
        assert_eq!(
            timeouts(&mut manager, third),
            vec![PeerEvent::Dial {
                addr: addr(1),
                peer: Some(peer(1))
            }]
        );
        assert!(manager.remove_static_peer(addr(1)));
        assert!(!manager.is_static_peer(&peer(1)));
    }

    #[test]
    fn banned_static_peers_are_not_dialled_but_retried_later() {
        let mut manager = PeerManager::new(Config::default(), [9; 32]);
        manager.report(at(0), peer(1), Penalty::Fatal.into());
        manager
            .add_static_peer(at(0), addr(1), Some(peer(1)))
            .unwrap();
        assert!(timeouts(&mut manager, at(0)).is_empty());
        assert!(matches!(
            manager.statics.state(addr(1)),
            Some(StaticState::Waiting { .. })
        ));
        // Once the ban and the bad score are over, the dial goes out.
        let mut dialled = None;
        for _ in 0..100 {
            let deadline = manager.next_deadline().unwrap();
            if timeouts(&mut manager, deadline).contains(&PeerEvent::Dial {
                addr: addr(1),
                peer: Some(peer(1)),
            }) {
                dialled = Some(deadline);
                break;
            }
        }
        let dialled = dialled.expect("dialled eventually");
        assert!(dialled >= at(0) + BAN_DURATION);
        assert!(dialled <= at(0) + BAN_DURATION + Duration::from_secs(300));
    }

    #[test]
    fn a_static_peer_already_connected_is_not_dialled() {
        let mut manager = PeerManager::new(Config::default(), [9; 32]);
        connect(&mut manager, at(0), 1, Direction::Inbound);
        manager
            .add_static_peer(at(0), addr(99), Some(peer(1)))
            .unwrap();
        assert!(timeouts(&mut manager, at(0)).is_empty());
        assert_eq!(manager.next_deadline(), None);
    }

    #[test]
    fn best_peers_use_current_scores_and_status() {
        let mut manager = PeerManager::new(Config::default(), [0; 32]);
        for index in 1..=4 {
            connect(&mut manager, at(0), index, Direction::Outbound);
            let head_slot = 100 + u64::from(index);
            manager
                .update_status(
                    &peer(index),
                    ChainStatus {
                        head_slot,
                        finalized_slot: 64,
                    },
                )
                .unwrap();
        }
        manager.report(at(0), peer(1), Report::Reward);
        manager.report(at(0), peer(2), Penalty::Low.into());
        assert_eq!(
            manager.best_peers(at(0), 100, 10),
            vec![peer(1), peer(4), peer(3)]
        );
        // The penalty decays but never quite back to 0: still skipped.
        assert_eq!(
            manager.best_peers(at(3_600), 100, 10),
            vec![peer(1), peer(4), peer(3)]
        );
        assert_eq!(
            manager.best_peers(at(86_400), 100, 10),
            vec![peer(4), peer(3), peer(2), peer(1)]
        );
        let target = manager.best_finalized(at(0), 32, 2).unwrap();
        assert_eq!(
            (target.slot, target.votes, target.peers),
            (64, 3, vec![peer(1), peer(3)])
        );
        assert_eq!(
            manager.update_status(
                &peer(1),
                ChainStatus {
                    head_slot: 1,
                    finalized_slot: 2
                }
            ),
            Err(PeerManagerError::InconsistentStatus(StatusError {
                status: ChainStatus {
                    head_slot: 1,
                    finalized_slot: 2
                }
            }))
        );
        assert_eq!(
            manager.update_status(
                &peer(9),
                ChainStatus {
                    head_slot: 1,
                    finalized_slot: 0
                }
            ),
            Err(PeerManagerError::NotConnected(peer(9)))
        );
    }

    /// A scripted run touching every part; the same seed must give the same trace.
    fn scripted_run(seed: [u8; 32]) -> Vec<(Instant, PeerEvent)> {
        let mut manager = PeerManager::new(Config::default(), seed);
        let mut trace = Vec::new();
        for index in 0..6 {
            manager
                .add_static_peer(at(0), addr(500 + index), None)
                .unwrap();
        }
        let mut now = at(0);
        for step in 0..1_500u64 {
            now = now + Duration::from_secs(5);
            // Timers first, in order, as a driver would run them.
            while let Some(deadline) = manager.next_deadline().filter(|&deadline| deadline <= now) {
                for event in timeouts(&mut manager, deadline) {
                    if let PeerEvent::Dial { addr, .. } = event {
                        manager.handle_dial_failed(deadline, addr);
                    }
                    trace.push((deadline, event));
                }
            }
            // Groups of five steps act on one of ten peers, each on its own address.
            let group = ((step / 5) % 10) as u16;
            let subject = peer(group);
            // Misbehaviour stops halfway, so that bans expire and scores recover.
            let misbehaving = step < 600 && group % 3 == 0;
            let events = match step % 5 {
                0 => {
                    // Every connection gets a fresh id.
                    let conn = ConnId(step);
                    if manager
                        .handle_connection_attempt(now, conn, addr(group), Direction::Inbound)
                        .is_accept()
                    {
                        manager.handle_connected(now, conn, subject);
                    }
                    Vec::new()
                }
                1 if misbehaving => manager.report(now, subject, Penalty::High.into()),
                2 if misbehaving => manager.report(now, subject, Penalty::Mid.into()),
                3 => manager.report(now, subject, Report::Reward),
                4 if step % 2 == 0 => {
                    manager.handle_connection_closed(now, ConnId(step - 4));
                    Vec::new()
                }
                _ => Vec::new(),
            };
            trace.extend(events.into_iter().map(|event| (now, event)));
        }
        trace
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let first = scripted_run([7; 32]);
        assert!(first.len() > 50, "{}", first.len());
        let seen = |wanted: fn(&PeerEvent) -> bool| first.iter().any(|(_, event)| wanted(event));
        assert!(seen(|event| matches!(event, PeerEvent::Disconnect { .. })));
        assert!(seen(|event| matches!(event, PeerEvent::Banned { .. })));
        assert!(seen(|event| matches!(event, PeerEvent::Unbanned { .. })));
        assert!(seen(|event| matches!(
            event,
            PeerEvent::ScoreRecovered { .. }
        )));
        assert!(seen(|event| matches!(event, PeerEvent::Dial { .. })));
        assert_eq!(first, scripted_run([7; 32]));
        assert_ne!(first, scripted_run([8; 32]), "jitter depends on the seed");
    }
}
