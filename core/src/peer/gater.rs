//! The connection gater: which connections to accept, and the counts it decides by.
//!
//! # Design
//! A connection is judged three times, each time with what is known by then:
//! 1. [`Gater::check_accept`], when the transport connection opens, by IP
//!    address only (bans, per-IP cap) and before any handshake work is spent on it;
//! 2. [`Gater::check_dial`], before we dial, by address and expected identity;
//! 3. [`Gater::check_established`], after the handshake has proved the
//!    identity, by identity, direction and score.
//!
//! The gater also tracks every connection from the first check until it
//! closes (by the driver's [`ConnId`]), so the per-IP count includes
//! connections still in their handshake. Refusals are a [`Refusal`], whose
//! [`Refusal::goodbye_reason`] is what to tell the peer when a channel exists.
//!
//! # Security
//! Provided: at most [`ConnectionLimits::peers_max`] peers; inbound peers
//! never take more than [`ConnectionLimits::inbound_peers_max`] slots, so a
//! flood of inbound connections cannot crowd out the peers we choose to dial;
//! at most [`ConnectionLimits::connections_per_ip_max`] connections per IPv4
//! address or IPv6 /64, counted from accept, handshakes included; when
//! [`ConnectionLimits::peers_per_netgroup_max`] is set (the node sets it
//! when discovery applies its subnet limits), at most that many
//! established peers per IPv4 /16 or IPv6 /56, either direction, static
//! peers exempt ([`Gater::check_netgroup`], which the peer manager applies
//! after the other checks); banned
//! peers and IPs and peers scored below the gate threshold are refused at
//! every step where they can be recognised.
//! Not provided: handshake concurrency and timeouts (the node bounds those);
//! attackers with many addresses (only scores and bans per identity help).
//! Loopback addresses are exempt from the per-IP cap and IP bans when
//! [`ConnectionLimits::exempt_loopback`] is set (the default): local test
//! networks run every node on 127.0.0.1, and whoever can connect from
//! loopback already runs code on this machine.
//!
//! # Limits
//! The tracked connections are bounded by the caller's own bounds (the
//! node's handshake and peer limits): the gater refuses, it never queues.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::bans::Bans;
use super::ip_key;
use super::score::{Score, SCORE_GATE_THRESHOLD};
use crate::identity::PeerId;
use crate::limits;
use crate::netgroup::{is_exempt_from_subnet_limits, NetGroup};
use crate::time::Instant;
use crate::types::{ConnId, Direction, GoodbyeReason};

/// Peers we try to keep: below it we dial more, between it and
/// [`limits::PEERS_MAX`] we only accept (the 25 of 50, leaving room for
/// newcomers to find us).
pub const PEERS_TARGET: usize = 25;
/// Inbound peers allowed: 60 % of [`limits::PEERS_MAX`], so at least 20 slots
/// always remain for peers we dial ourselves (go-libp2p allows 64 of 128).
pub const PEERS_INBOUND_MAX: usize = limits::PEERS_MAX * 3 / 5;
/// Connections from one IPv4 address or IPv6 /64, handshakes included
/// (go-libp2p's resource manager allows 8 per IPv4 /32).
pub const CONNECTIONS_PER_IP_MAX: usize = 8;
/// Established peers from one network group (IPv4 /16, IPv6 /56), either
/// direction, when the node applies discovery's subnet limits: a tenth of
/// [`limits::PEERS_MAX`], as the routing table keeps one group to 10
/// entries. Without it, Sybils in one /16, each in its own /24, that all
/// dial one node fill its peer set past its target and keep it there (the
/// simulator's `dht-eclipse`: 20 of the victim's 25 peers).
pub const PEERS_PER_NETGROUP_MAX: usize = limits::PEERS_MAX / 10;

const _: () = assert!(PEERS_TARGET <= limits::PEERS_MAX);
const _: () = assert!(PEERS_INBOUND_MAX < limits::PEERS_MAX);
const _: () = assert!(CONNECTIONS_PER_IP_MAX <= PEERS_INBOUND_MAX);
const _: () = assert!(PEERS_PER_NETGROUP_MAX > 0 && PEERS_PER_NETGROUP_MAX < PEERS_TARGET);

/// The bounds the gater enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionLimits {
    /// Established peers at most, both directions.
    pub peers_max: usize,
    /// Established inbound peers at most.
    pub inbound_peers_max: usize,
    /// Connections (handshaking or established) per IP key at most.
    pub connections_per_ip_max: usize,
    /// Whether loopback addresses skip the per-IP cap and IP bans.
    pub exempt_loopback: bool,
    /// Established peers per network group (IPv4 /16, IPv6 /56) at most,
    /// static peers exempt; `None`: no such cap (the default: the node sets
    /// [`PEERS_PER_NETGROUP_MAX`] when discovery applies its subnet limits).
    pub peers_per_netgroup_max: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            peers_max: limits::PEERS_MAX,
            inbound_peers_max: PEERS_INBOUND_MAX,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX,
            exempt_loopback: true,
            peers_per_netgroup_max: None,
        }
    }
}

impl ConnectionLimits {
    /// The default limits for a node that keeps at most `peers_max` peers
    /// (an operator's `--max-peers`): inbound peers keep their 60 % share of
    /// it, at least one, so dialled peers always have room too.
    pub fn for_peers_max(peers_max: usize) -> ConnectionLimits {
        ConnectionLimits {
            peers_max,
            inbound_peers_max: (peers_max * 3 / 5).max(1).min(peers_max),
            ..ConnectionLimits::default()
        }
    }
}

/// What the gater decided.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Decision {
    /// Go ahead.
    Accept,
    /// Refuse, for this reason.
    Refuse(Refusal),
}

impl Decision {
    /// Whether this is [`Decision::Accept`].
    pub fn is_accept(self) -> bool {
        self == Decision::Accept
    }
}

/// Why the gater refused a connection.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum Refusal {
    /// All peer slots are taken.
    TooManyPeers,
    /// All inbound slots are taken; the rest are kept for peers we dial.
    TooManyInbound,
    /// The IP address has as many connections as one address may have.
    TooManyFromIp,
    /// The network group (IPv4 /16, IPv6 /56) has as many peers as one group may have.
    TooManyFromNetGroup,
    /// The peer is banned.
    Banned,
    /// The IP address is banned.
    BannedIp,
    /// The peer's score is below the gate threshold.
    BadScore,
}

impl Refusal {
    /// The Goodbye reason to send when the refusal happens on an open channel.
    pub const fn goodbye_reason(self) -> GoodbyeReason {
        match self {
            Refusal::TooManyPeers
            | Refusal::TooManyInbound
            | Refusal::TooManyFromIp
            | Refusal::TooManyFromNetGroup => GoodbyeReason::TooManyPeers,
            Refusal::Banned => GoodbyeReason::Banned,
            Refusal::BannedIp => GoodbyeReason::BannedIp,
            Refusal::BadScore => GoodbyeReason::BadScore,
        }
    }
}

/// A connection the gater admitted and still tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedConnection {
    /// The remote address.
    pub addr: SocketAddr,
    /// The key of its IP address (see [`super::ip_key`]).
    pub ip: IpAddr,
    /// Who opened it.
    pub direction: Direction,
    /// Its peer, once the handshake is done and the peer admitted.
    pub peer: Option<PeerId>,
}

/// The gater and its connection counts.
#[derive(Clone, Debug)]
pub struct Gater {
    limits: ConnectionLimits,
    connections: BTreeMap<ConnId, TrackedConnection>,
    /// Tracked connections per IP key; no zero counts are kept.
    per_ip: BTreeMap<IpAddr, usize>,
    /// Established peers per network group; no zero counts are kept.
    per_netgroup: BTreeMap<NetGroup, usize>,
    peers: usize,
    inbound_peers: usize,
    outbound_pending: usize,
}

impl Gater {
    /// A gater enforcing `limits`, tracking nothing yet.
    ///
    /// # Panics
    /// If the limits are inconsistent (a configuration bug).
    pub fn new(limits: ConnectionLimits) -> Gater {
        assert!(limits.peers_max > 0, "peers_max must be positive");
        assert!(
            limits.inbound_peers_max <= limits.peers_max,
            "inbound_peers_max must not exceed peers_max"
        );
        assert!(
            limits.connections_per_ip_max > 0,
            "connections_per_ip_max must be positive"
        );
        assert!(
            limits.peers_per_netgroup_max != Some(0),
            "peers_per_netgroup_max must be positive"
        );
        Gater {
            limits,
            connections: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            per_netgroup: BTreeMap::new(),
            peers: 0,
            inbound_peers: 0,
            outbound_pending: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// A tracked connection.
    pub fn connection(&self, conn: ConnId) -> Option<&TrackedConnection> {
        self.connections.get(&conn)
    }

    /// Tracked connections, handshaking or established.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Established peers.
    pub fn peer_count(&self) -> usize {
        self.peers
    }

    /// Established inbound peers.
    pub fn inbound_peer_count(&self) -> usize {
        self.inbound_peers
    }

    /// Outbound connections still in their handshake.
    pub fn outbound_pending_count(&self) -> usize {
        self.outbound_pending
    }

    /// Tracked connections from the key of `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip_key(ip)).copied().unwrap_or(0)
    }

    /// Established peers from the network group of `ip`.
    pub fn peers_from_netgroup(&self, ip: IpAddr) -> usize {
        self.per_netgroup
            .get(&NetGroup::of(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Judges one more peer from `ip` against
    /// [`ConnectionLimits::peers_per_netgroup_max`] (loopback, private and
    /// link-local addresses exempt, as in discovery's table). The caller skips it for static peers and for a
    /// peer that replaces its own connection (see [`super::PeerManager`]).
    pub fn check_netgroup(&self, ip: IpAddr) -> Decision {
        let full = self.limits.peers_per_netgroup_max.is_some_and(|max| {
            !is_exempt_from_subnet_limits(ip) && self.peers_from_netgroup(ip) >= max
        });
        if full {
            Decision::Refuse(Refusal::TooManyFromNetGroup)
        } else {
            Decision::Accept
        }
    }

    /// Whether per-IP rules (the cap and IP bans) apply to `ip`.
    pub fn is_ip_limited(&self, ip: IpAddr) -> bool {
        !(self.limits.exempt_loopback && ip_key(ip).is_loopback())
    }

    /// Judges a transport connection that just opened, before its handshake.
    pub fn check_accept(
        &self,
        now: Instant,
        ip: IpAddr,
        direction: Direction,
        bans: &Bans,
    ) -> Decision {
        let limited = self.is_ip_limited(ip);
        let refusal = if limited && bans.is_ip_banned(now, ip) {
            Some(Refusal::BannedIp)
        } else if limited && self.connections_from(ip) >= self.limits.connections_per_ip_max {
            Some(Refusal::TooManyFromIp)
        } else {
            // Peer counts are judged after the handshake instead, so the
            // remote hears Goodbye(too many peers) rather than a bare close;
            // the node's handshake cap bounds the work that costs.
            let _ = direction;
            None
        };
        refusal.map_or(Decision::Accept, Decision::Refuse)
    }

    /// Judges a dial to `addr` before it is made; `expected` is the identity
    /// the remote must prove, if known, and `score` its current score.
    pub fn check_dial(
        &self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<PeerId>,
        bans: &Bans,
        score: Score,
    ) -> Decision {
        let ip = addr.ip();
        let limited = self.is_ip_limited(ip);
        let refusal = if expected.is_some_and(|peer| bans.is_banned(now, &peer)) {
            Some(Refusal::Banned)
        } else if limited && bans.is_ip_banned(now, ip) {
            Some(Refusal::BannedIp)
        } else if score < SCORE_GATE_THRESHOLD {
            Some(Refusal::BadScore)
        } else if limited && self.connections_from(ip) >= self.limits.connections_per_ip_max {
            Some(Refusal::TooManyFromIp)
        } else if self.peers + self.outbound_pending >= self.limits.peers_max {
            Some(Refusal::TooManyPeers)
        } else {
            None
        };
        refusal.map_or(Decision::Accept, Decision::Refuse)
    }

    /// Judges tracked connection `conn` whose handshake proved `peer`, with
    /// `score`. `replacing` says the peer is already established on another
    /// connection that this one replaces, so it takes no new slot.
    ///
    /// # Panics
    /// If `conn` is not tracked (the caller skipped [`Gater::insert`]).
    pub fn check_established(
        &self,
        now: Instant,
        conn: ConnId,
        peer: PeerId,
        replacing: bool,
        bans: &Bans,
        score: Score,
    ) -> Decision {
        let connection = self
            .connections
            .get(&conn)
            .expect("a connection is tracked from its accept check on");
        let limited = self.is_ip_limited(connection.ip);
        let refusal = if bans.is_banned(now, &peer) {
            Some(Refusal::Banned)
        } else if limited && bans.is_ip_banned(now, connection.ip) {
            Some(Refusal::BannedIp)
        } else if score < SCORE_GATE_THRESHOLD {
            Some(Refusal::BadScore)
        } else if replacing {
            // The replaced connection's slot is reused, but an inbound one
            // replacing one we dialled takes an inbound slot it did not have:
            // otherwise a peer we dialled could turn its outbound slot into
            // an inbound one past the inbound cap.
            let becomes_inbound = connection.direction == Direction::Inbound
                && self.connections.iter().any(|(&other, tracked)| {
                    other != conn
                        && tracked.peer == Some(peer)
                        && tracked.direction == Direction::Outbound
                });
            (becomes_inbound && self.inbound_peers >= self.limits.inbound_peers_max)
                .then_some(Refusal::TooManyInbound)
        } else if self.peers >= self.limits.peers_max {
            Some(Refusal::TooManyPeers)
        } else if connection.direction == Direction::Inbound
            && self.inbound_peers >= self.limits.inbound_peers_max
        {
            Some(Refusal::TooManyInbound)
        } else {
            None
        };
        refusal.map_or(Decision::Accept, Decision::Refuse)
    }

    /// Starts tracking `conn`, which [`Gater::check_accept`] accepted.
    ///
    /// # Panics
    /// If `conn` is already tracked (the driver must never reuse an id).
    pub fn insert(&mut self, conn: ConnId, addr: SocketAddr, direction: Direction) {
        let ip = ip_key(addr.ip());
        let previous = self.connections.insert(
            conn,
            TrackedConnection {
                addr,
                ip,
                direction,
                peer: None,
            },
        );
        assert!(previous.is_none(), "connection {conn:?} tracked twice");
        *self.per_ip.entry(ip).or_insert(0) += 1;
        if direction == Direction::Outbound {
            self.outbound_pending += 1;
        }
    }

    /// Marks tracked `conn` established as `peer`, taking a peer slot.
    ///
    /// # Panics
    /// If `conn` is not tracked or already established.
    pub fn establish(&mut self, conn: ConnId, peer: PeerId) {
        let connection = self
            .connections
            .get_mut(&conn)
            .expect("only tracked connections become established");
        assert!(connection.peer.is_none(), "{conn:?} established twice");
        connection.peer = Some(peer);
        *self
            .per_netgroup
            .entry(NetGroup::of(connection.ip))
            .or_insert(0) += 1;
        self.peers += 1;
        match connection.direction {
            Direction::Inbound => self.inbound_peers += 1,
            Direction::Outbound => self.outbound_pending -= 1,
        }
        debug_assert!(
            self.peers <= self.limits.peers_max,
            "establish follows an accepting check"
        );
    }

    /// Stops tracking `conn`; returns what was tracked, or `None` if it was not.
    pub fn remove(&mut self, conn: ConnId) -> Option<TrackedConnection> {
        let connection = self.connections.remove(&conn)?;
        let count = self
            .per_ip
            .get_mut(&connection.ip)
            .expect("every tracked connection is counted");
        *count -= 1;
        if *count == 0 {
            self.per_ip.remove(&connection.ip);
        }
        if connection.peer.is_some() {
            let group = NetGroup::of(connection.ip);
            let count = self
                .per_netgroup
                .get_mut(&group)
                .expect("every established connection is counted in its group");
            *count -= 1;
            if *count == 0 {
                self.per_netgroup.remove(&group);
            }
        }
        match (connection.peer, connection.direction) {
            (Some(_), Direction::Inbound) => {
                self.peers -= 1;
                self.inbound_peers -= 1;
            }
            (Some(_), Direction::Outbound) => self.peers -= 1,
            (None, Direction::Outbound) => self.outbound_pending -= 1,
            (None, Direction::Inbound) => {}
        }
        Some(connection)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::peer::score::Score;

    fn peer(index: u16) -> PeerId {
        let mut bytes = [0u8; 32];
        bytes[..2].copy_from_slice(&index.to_be_bytes());
        PeerId::from_bytes(bytes)
    }

    /// A distinct IPv4 address per index (so per-IP caps do not interfere).
    fn addr(index: u16) -> SocketAddr {
        let [high, low] = index.to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, high, low)), 9000)
    }

    const NOW: Instant = Instant::ZERO;

    /// Accepts, tracks and establishes a connection; panics if refused.
    fn connect(gater: &mut Gater, bans: &Bans, index: u16, direction: Direction) {
        let conn = ConnId(u64::from(index));
        let address = addr(index);
        assert_eq!(
            gater.check_accept(NOW, address.ip(), direction, bans),
            Decision::Accept
        );
        gater.insert(conn, address, direction);
        assert_eq!(
            gater.check_established(NOW, conn, peer(index), false, bans, Score::ZERO),
            Decision::Accept
        );
        gater.establish(conn, peer(index));
    }

    #[test]
    fn a_smaller_peer_limit_keeps_the_inbound_share_and_room_to_dial() {
        assert_eq!(
            ConnectionLimits::for_peers_max(limits::PEERS_MAX),
            ConnectionLimits::default()
        );
        let limits = ConnectionLimits::for_peers_max(10);
        assert_eq!((limits.peers_max, limits.inbound_peers_max), (10, 6));
        // One peer at most: it may come either way, so the share rounds up.
        let one = ConnectionLimits::for_peers_max(1);
        assert_eq!((one.peers_max, one.inbound_peers_max), (1, 1));

        let mut gater = Gater::new(limits);
        let bans = Bans::default();
        for index in 0..6 {
            connect(&mut gater, &bans, index, Direction::Inbound);
        }
        gater.insert(ConnId(5_000), addr(5_000), Direction::Inbound);
        assert_eq!(
            gater.check_established(NOW, ConnId(5_000), peer(5_000), false, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyInbound)
        );
        gater.remove(ConnId(5_000));
        for index in 100..104 {
            connect(&mut gater, &bans, index, Direction::Outbound);
        }
        assert_eq!(
            gater.check_dial(NOW, addr(2_000), None, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyPeers)
        );
    }

    #[test]
    fn inbound_cap_leaves_room_for_outbound() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let bans = Bans::default();
        for index in 0..PEERS_INBOUND_MAX as u16 {
            connect(&mut gater, &bans, index, Direction::Inbound);
        }
        let next = addr(1_000).ip();
        // The transport connection is let in, so its handshake can end in a
        // Goodbye(too many peers) rather than a bare close...
        assert!(gater
            .check_accept(NOW, next, Direction::Inbound, &bans)
            .is_accept());
        // ...and refused once the handshake has proved who it is.
        gater.insert(ConnId(5_000), addr(5_000), Direction::Inbound);
        assert_eq!(
            gater.check_established(NOW, ConnId(5_000), peer(5_000), false, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyInbound)
        );
        gater.remove(ConnId(5_000));
        for index in 100..100 + (limits::PEERS_MAX - PEERS_INBOUND_MAX) as u16 {
            connect(&mut gater, &bans, index, Direction::Outbound);
        }
        assert_eq!(gater.peer_count(), limits::PEERS_MAX);
        assert_eq!(gater.inbound_peer_count(), PEERS_INBOUND_MAX);
        gater.insert(ConnId(5_001), addr(5_001), Direction::Outbound);
        assert_eq!(
            gater.check_established(NOW, ConnId(5_001), peer(5_001), false, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyPeers)
        );
        gater.remove(ConnId(5_001));
        assert_eq!(
            gater.check_dial(NOW, addr(2_000), None, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyPeers)
        );
        // An inbound peer leaving frees an inbound slot.
        gater.remove(ConnId(0));
        assert_eq!(gater.inbound_peer_count(), PEERS_INBOUND_MAX - 1);
        gater.insert(ConnId(5_002), addr(5_002), Direction::Inbound);
        assert!(gater
            .check_established(NOW, ConnId(5_002), peer(5_002), false, &bans, Score::ZERO)
            .is_accept());
        assert_eq!(
            Refusal::TooManyInbound.goodbye_reason(),
            GoodbyeReason::TooManyPeers
        );
    }

    #[test]
    fn network_groups_count_established_peers_only_and_free_on_close() {
        let limits = ConnectionLimits {
            peers_per_netgroup_max: Some(2),
            ..ConnectionLimits::default()
        };
        let mut gater = Gater::new(limits);
        // One public /16; addr() is private (10.1/16), which is exempt.
        let addr = |index: u8| SocketAddr::from(([45, 33, index, 1], 9000));
        let group_ip = addr(1).ip();
        assert!(gater.check_netgroup(group_ip).is_accept());
        gater.insert(ConnId(1), addr(1), Direction::Inbound);
        gater.insert(ConnId(2), addr(2), Direction::Outbound);
        gater.insert(ConnId(3), addr(3), Direction::Inbound);
        assert_eq!(
            gater.peers_from_netgroup(group_ip),
            0,
            "handshakes do not count"
        );
        gater.establish(ConnId(1), peer(1));
        gater.establish(ConnId(2), peer(2));
        assert_eq!(gater.peers_from_netgroup(group_ip), 2);
        assert_eq!(
            gater.check_netgroup(addr(3).ip()),
            Decision::Refuse(Refusal::TooManyFromNetGroup)
        );
        let v6a: IpAddr = "2001:db8:1:2300::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2400::1".parse().unwrap();
        gater.insert(ConnId(4), SocketAddr::new(v6a, 1), Direction::Inbound);
        gater.establish(ConnId(4), peer(4));
        gater.insert(ConnId(5), SocketAddr::new(v6a, 2), Direction::Inbound);
        gater.establish(ConnId(5), peer(5));
        assert!(!gater.check_netgroup(v6a).is_accept(), "one /56");
        assert!(gater.check_netgroup(v6b).is_accept(), "another /56");
        assert!(gater
            .check_netgroup(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .is_accept());
        // A private /16 with more peers than the cap: an operator's own network.
        for index in 10..13u16 {
            gater.insert(
                ConnId(u64::from(index)),
                super::tests::addr(index),
                Direction::Inbound,
            );
            gater.establish(ConnId(u64::from(index)), peer(index));
        }
        assert_eq!(gater.peers_from_netgroup(super::tests::addr(10).ip()), 3);
        assert!(gater
            .check_netgroup(super::tests::addr(13).ip())
            .is_accept());
        for index in 10..13u64 {
            gater.remove(ConnId(index));
        }
        gater.remove(ConnId(3));
        assert_eq!(gater.peers_from_netgroup(group_ip), 2);
        gater.remove(ConnId(1));
        assert!(gater.check_netgroup(group_ip).is_accept());
        gater.remove(ConnId(2));
        gater.remove(ConnId(4));
        gater.remove(ConnId(5));
        assert!(gater.per_netgroup.is_empty());
    }

    #[test]
    fn a_dialled_peer_cannot_turn_its_slot_into_an_inbound_one_past_the_cap() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let bans = Bans::default();
        connect(&mut gater, &bans, 0, Direction::Outbound);
        for index in 1..=PEERS_INBOUND_MAX as u16 {
            connect(&mut gater, &bans, index, Direction::Inbound);
        }
        // The peer we dialled connects to us, to replace our connection.
        gater.insert(ConnId(5_000), addr(5_000), Direction::Inbound);
        assert_eq!(
            gater.check_established(NOW, ConnId(5_000), peer(0), true, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyInbound)
        );
        gater.remove(ConnId(5_000));
        // Replacing with another dial of ours, or an inbound peer's own
        // reconnection, takes no new inbound slot and is let through.
        gater.insert(ConnId(5_001), addr(5_001), Direction::Outbound);
        assert!(gater
            .check_established(NOW, ConnId(5_001), peer(0), true, &bans, Score::ZERO)
            .is_accept());
        gater.remove(ConnId(5_001));
        gater.insert(ConnId(5_002), addr(5_002), Direction::Inbound);
        assert!(gater
            .check_established(NOW, ConnId(5_002), peer(1), true, &bans, Score::ZERO)
            .is_accept());
    }

    #[test]
    fn per_ip_cap_counts_handshakes_and_frees_on_close() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let bans = Bans::default();
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        for index in 0..CONNECTIONS_PER_IP_MAX as u64 {
            assert!(gater
                .check_accept(NOW, ip, Direction::Inbound, &bans)
                .is_accept());
            gater.insert(
                ConnId(index),
                SocketAddr::new(ip, 1000 + index as u16),
                Direction::Inbound,
            );
        }
        assert_eq!(gater.connections_from(ip), CONNECTIONS_PER_IP_MAX);
        assert_eq!(
            gater.check_accept(NOW, ip, Direction::Inbound, &bans),
            Decision::Refuse(Refusal::TooManyFromIp)
        );
        assert_eq!(
            gater.check_dial(NOW, SocketAddr::new(ip, 9), None, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyFromIp)
        );
        let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
        assert!(gater
            .check_accept(NOW, other, Direction::Inbound, &bans)
            .is_accept());
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped());
        assert_eq!(
            gater.check_accept(NOW, mapped, Direction::Inbound, &bans),
            Decision::Refuse(Refusal::TooManyFromIp),
            "the mapped form is the same address"
        );
        gater.remove(ConnId(3));
        assert!(gater
            .check_accept(NOW, ip, Direction::Inbound, &bans)
            .is_accept());
        assert_eq!(gater.peer_count(), 0);
    }

    #[test]
    fn ipv6_hosts_are_capped_per_64() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let bans = Bans::default();
        for index in 0..CONNECTIONS_PER_IP_MAX as u16 {
            let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, index, 0, 0, 1);
            gater.insert(
                ConnId(u64::from(index)),
                SocketAddr::new(IpAddr::V6(ip), 1),
                Direction::Inbound,
            );
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 1));
        let next_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert_eq!(
            gater.check_accept(NOW, same_64, Direction::Inbound, &bans),
            Decision::Refuse(Refusal::TooManyFromIp)
        );
        assert!(gater
            .check_accept(NOW, next_64, Direction::Inbound, &bans)
            .is_accept());
    }

    #[test]
    fn loopback_is_exempt_only_when_configured() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut bans = Bans::default();
        bans.ban_ip(loopback, Instant::MAX);
        for exempt in [true, false] {
            let mut gater = Gater::new(ConnectionLimits {
                exempt_loopback: exempt,
                ..ConnectionLimits::default()
            });
            for index in 0..20u16 {
                gater.insert(
                    ConnId(u64::from(index)),
                    SocketAddr::new(loopback, index),
                    Direction::Inbound,
                );
            }
            let decision = gater.check_accept(NOW, loopback, Direction::Inbound, &bans);
            if exempt {
                assert_eq!(decision, Decision::Accept);
            } else {
                assert_eq!(decision, Decision::Refuse(Refusal::BannedIp));
            }
        }
    }

    #[test]
    fn banned_peers_and_ips_are_refused_at_every_step() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let mut bans = Bans::default();
        bans.ban_peer(peer(1), None, Instant::from_micros(100));
        bans.ban_ip(addr(2).ip(), Instant::from_micros(100));
        assert_eq!(
            gater.check_accept(NOW, addr(2).ip(), Direction::Inbound, &bans),
            Decision::Refuse(Refusal::BannedIp)
        );
        assert_eq!(
            gater.check_dial(NOW, addr(2), None, &bans, Score::ZERO),
            Decision::Refuse(Refusal::BannedIp)
        );
        assert_eq!(
            gater.check_dial(NOW, addr(3), Some(peer(1)), &bans, Score::ZERO),
            Decision::Refuse(Refusal::Banned)
        );
        // A banned identity on a clean address passes the accept check but
        // not the one after the handshake, even when it replaces a connection.
        assert!(gater
            .check_accept(NOW, addr(3).ip(), Direction::Inbound, &bans)
            .is_accept());
        gater.insert(ConnId(3), addr(3), Direction::Inbound);
        for replacing in [false, true] {
            let decision =
                gater.check_established(NOW, ConnId(3), peer(1), replacing, &bans, Score::ZERO);
            assert_eq!(decision, Decision::Refuse(Refusal::Banned));
        }
        assert_eq!(Refusal::Banned.goodbye_reason(), GoodbyeReason::Banned);
        assert_eq!(Refusal::BannedIp.goodbye_reason(), GoodbyeReason::BannedIp);
        // Bans end.
        let later = Instant::from_micros(100);
        assert!(gater
            .check_established(later, ConnId(3), peer(1), false, &bans, Score::ZERO)
            .is_accept());
        assert!(gater
            .check_dial(later, addr(2), None, &bans, Score::ZERO)
            .is_accept());
    }

    #[test]
    fn peers_below_the_gate_threshold_are_refused() {
        let mut gater = Gater::new(ConnectionLimits::default());
        let bans = Bans::default();
        gater.insert(ConnId(1), addr(1), Direction::Inbound);
        let below = Score::from_micropoints(SCORE_GATE_THRESHOLD.as_micropoints() - 1);
        assert_eq!(
            gater.check_established(NOW, ConnId(1), peer(1), false, &bans, below),
            Decision::Refuse(Refusal::BadScore)
        );
        assert_eq!(Refusal::BadScore.goodbye_reason(), GoodbyeReason::BadScore);
        assert!(gater
            .check_established(NOW, ConnId(1), peer(1), false, &bans, SCORE_GATE_THRESHOLD)
            .is_accept());
        assert_eq!(
            gater.check_dial(NOW, addr(1), Some(peer(1)), &bans, below),
            Decision::Refuse(Refusal::BadScore)
        );
    }

    #[test]
    fn a_replacement_takes_no_new_slot() {
        let limits = ConnectionLimits {
            peers_max: 2,
            inbound_peers_max: 1,
            ..ConnectionLimits::default()
        };
        let mut gater = Gater::new(limits);
        let bans = Bans::default();
        connect(&mut gater, &bans, 1, Direction::Inbound);
        connect(&mut gater, &bans, 2, Direction::Outbound);
        gater.insert(ConnId(9), addr(9), Direction::Inbound);
        assert_eq!(
            gater.check_established(NOW, ConnId(9), peer(1), false, &bans, Score::ZERO),
            Decision::Refuse(Refusal::TooManyPeers)
        );
        assert!(gater
            .check_established(NOW, ConnId(9), peer(1), true, &bans, Score::ZERO)
            .is_accept());
    }

    #[test]
    fn counts_follow_the_connection_lifecycle() {
        let mut gater = Gater::new(ConnectionLimits::default());
        gater.insert(ConnId(1), addr(1), Direction::Outbound);
        gater.insert(ConnId(2), addr(2), Direction::Inbound);
        assert_eq!(gater.outbound_pending_count(), 1);
        assert_eq!(gater.connection_count(), 2);
        gater.establish(ConnId(1), peer(1));
        assert_eq!(gater.outbound_pending_count(), 0);
        assert_eq!(gater.peer_count(), 1);
        assert_eq!(gater.inbound_peer_count(), 0);
        gater.establish(ConnId(2), peer(2));
        assert_eq!(gater.inbound_peer_count(), 1);
        assert_eq!(gater.connection(ConnId(2)).unwrap().peer, Some(peer(2)));
        assert!(gater.remove(ConnId(1)).is_some());
        assert!(
            gater.remove(ConnId(1)).is_none(),
            "removing twice is harmless"
        );
        assert!(gater.remove(ConnId(2)).is_some());
        assert_eq!(
            (
                gater.peer_count(),
                gater.inbound_peer_count(),
                gater.connection_count()
            ),
            (0, 0, 0)
        );
        assert!(gater.per_ip.is_empty());
    }
}
