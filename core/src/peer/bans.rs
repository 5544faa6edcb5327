//! Bans by peer identity and by IP address, each until an instant.
//!
//! # Design
//! Two tables, one keyed by [`PeerId`] and one by IP address, each with an
//! expiry index ordered by `(until, key)` so expiry and eviction take the
//! earliest entry in `O(log n)`. A ban is in force while `now < until`;
//! queries compare against `now` themselves, so a ban is never honoured past its
//! end even if [`Bans::expire`] has not been called yet. Banning again extends a
//! ban, never shortens it. IP addresses are keyed by [`super::ip_key`]: an
//! IPv4-mapped IPv6 address is its IPv4 address, and an IPv6 address stands
//! for its /64 (what one host is usually given).
//!
//! # Security
//! Provided: bounded tables; a peer banned with its IP recorded lets the
//! caller count how many banned identities came from one address.
//! Not provided: deciding what to ban (see [`super::PeerManager`]); keeping
//! bans across a restart is the node's peer store (`crate::peerstore`).
//!
//! # Limits
//! [`BANNED_PEERS_MAX`] peer bans and [`BANNED_IPS_MAX`] IP bans. When a table is
//! full, the ban that would expire first is lifted early to make room, and
//! returned as an [`Unban`] so the application hears of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::ip_key;
use crate::identity::PeerId;
use crate::time::{Duration, Instant};

/// How long a ban lasts (the 1 h; Lighthouse bans for 12 h, but our
/// scores decay, and a shorter ban forgives honest peers caught by a bug sooner).
pub const BAN_DURATION: Duration = Duration::from_secs(60 * 60);
/// Peer bans kept. A hostile peer can make new identities for free, so this
/// only has to hold the identities that actually misbehaved recently.
pub const BANNED_PEERS_MAX: usize = 1_024;
/// IP bans kept; addresses are far scarcer than identities for an attacker.
pub const BANNED_IPS_MAX: usize = 1_024;

/// A ban lifted, by expiry or to make room.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Unban {
    /// The peer may connect again.
    Peer(PeerId),
    /// The IP address (key) may connect again.
    Ip(IpAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerBan {
    until: Instant,
    /// The IP key it was connected from, if known.
    ip: Option<IpAddr>,
}

/// The ban tables.
#[derive(Clone, Debug)]
pub struct Bans {
    peers_max: usize,
    ips_max: usize,
    peers: BTreeMap<PeerId, PeerBan>,
    ips: BTreeMap<IpAddr, Instant>,
    peer_expiries: BTreeSet<(Instant, PeerId)>,
    ip_expiries: BTreeSet<(Instant, IpAddr)>,
}

impl Default for Bans {
    fn default() -> Bans {
        Bans::new(BANNED_PEERS_MAX, BANNED_IPS_MAX)
    }
}

impl Bans {
    /// Empty tables holding at most `peers_max` peer bans and `ips_max` IP bans.
    ///
    /// # Panics
    /// If either bound is zero.
    pub fn new(peers_max: usize, ips_max: usize) -> Bans {
        assert!(peers_max > 0 && ips_max > 0, "ban tables need room");
        Bans {
            peers_max,
            ips_max,
            peers: BTreeMap::new(),
            ips: BTreeMap::new(),
            peer_expiries: BTreeSet::new(),
            ip_expiries: BTreeSet::new(),
        }
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, now: Instant, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|ban| now < ban.until)
    }

    /// Whether `ip` (or its /64, for IPv6) is banned at `now`.
    pub fn is_ip_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.ips.get(&ip_key(ip)).is_some_and(|&until| now < until)
    }

    /// Until when `peer` is banned, if it is (expired bans not yet removed included).
    pub fn peer_banned_until(&self, peer: &PeerId) -> Option<Instant> {
        self.peers.get(peer).map(|ban| ban.until)
    }

    /// Until when `ip` is banned, if it is (expired bans not yet removed included).
    pub fn ip_banned_until(&self, ip: IpAddr) -> Option<Instant> {
        self.ips.get(&ip_key(ip)).copied()
    }

    /// Peer bans in force at `now` that were recorded with the IP key of `ip`.
    pub fn banned_peers_from(&self, now: Instant, ip: IpAddr) -> usize {
        let key = ip_key(ip);
        self.peers
            .values()
            .filter(|ban| ban.ip == Some(key) && now < ban.until)
            .count()
    }

    /// Number of peer bans held (some may have expired but not yet been removed).
    pub fn banned_peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Number of IP bans held (some may have expired but not yet been removed).
    pub fn banned_ip_count(&self) -> usize {
        self.ips.len()
    }

    /// Bans `peer` until `until` (or keeps a longer ban), recording the IP it
    /// came from. Returns the bans lifted early to make room.
    pub fn ban_peer(&mut self, peer: PeerId, ip: Option<IpAddr>, until: Instant) -> Vec<Unban> {
        let ip = ip.map(ip_key);
        let mut lifted = Vec::new();
        if let Some(ban) = self.peers.get_mut(&peer) {
            let old = ban.until;
            ban.until = old.max(until);
            ban.ip = ip.or(ban.ip);
            let new = ban.until;
            self.peer_expiries.remove(&(old, peer));
            self.peer_expiries.insert((new, peer));
            return lifted;
        }
        while self.peers.len() >= self.peers_max {
            let (_, evicted) = self
                .peer_expiries
                .pop_first()
                .expect("the expiry index mirrors a full table");
            self.peers.remove(&evicted);
            lifted.push(Unban::Peer(evicted));
        }
        self.peers.insert(peer, PeerBan { until, ip });
        self.peer_expiries.insert((until, peer));
        lifted
    }

    /// Bans `ip` (its key) until `until` (or keeps a longer ban). Returns the
    /// bans lifted early to make room.
    pub fn ban_ip(&mut self, ip: IpAddr, until: Instant) -> Vec<Unban> {
        let ip = ip_key(ip);
        let mut lifted = Vec::new();
        if let Some(existing) = self.ips.get_mut(&ip) {
            let old = *existing;
            *existing = old.max(until);
            let new = *existing;
            self.ip_expiries.remove(&(old, ip));
            self.ip_expiries.insert((new, ip));
            return lifted;
        }
        while self.ips.len() >= self.ips_max {
            let (_, evicted) = self
                .ip_expiries
                .pop_first()
                .expect("the expiry index mirrors a full table");
            self.ips.remove(&evicted);
            lifted.push(Unban::Ip(evicted));
        }
        self.ips.insert(ip, until);
        self.ip_expiries.insert((until, ip));
        lifted
    }

    /// Lifts the ban on `peer` at once; whether there was one.
    pub fn unban_peer(&mut self, peer: &PeerId) -> bool {
        match self.peers.remove(peer) {
            Some(ban) => {
                self.peer_expiries.remove(&(ban.until, *peer));
                true
            }
            None => false,
        }
    }

    /// Lifts the ban on `ip` (its key) at once; whether there was one.
    pub fn unban_ip(&mut self, ip: IpAddr) -> bool {
        let ip = ip_key(ip);
        match self.ips.remove(&ip) {
            Some(until) => {
                self.ip_expiries.remove(&(until, ip));
                true
            }
            None => false,
        }
    }

    /// Peer bans in force at `now`: (peer, IP key, end), in `PeerId` order.
    pub fn peer_bans(&self, now: Instant) -> Vec<(PeerId, Option<IpAddr>, Instant)> {
        self.peers
            .iter()
            .filter(|(_, ban)| now < ban.until)
            .map(|(peer, ban)| (*peer, ban.ip, ban.until))
            .collect()
    }

    /// IP bans in force at `now`: (IP key, end), in address order.
    pub fn ip_bans(&self, now: Instant) -> Vec<(IpAddr, Instant)> {
        self.ips
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(ip, until)| (*ip, *until))
            .collect()
    }

    /// Removes the bans that have ended by `now`: peers first, then IPs, each
    /// in `(until, key)` order.
    pub fn expire(&mut self, now: Instant) -> Vec<Unban> {
        let mut lifted = Vec::new();
        while let Some(&(until, peer)) = self.peer_expiries.first() {
            if until > now {
                break;
            }
            self.peer_expiries.pop_first();
            self.peers.remove(&peer);
            lifted.push(Unban::Peer(peer));
        }
        while let Some(&(until, ip)) = self.ip_expiries.first() {
            if until > now {
                break;
            }
            self.ip_expiries.pop_first();
            self.ips.remove(&ip);
            lifted.push(Unban::Ip(ip));
        }
        lifted
    }

    /// When the next ban ends, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        let peer = self.peer_expiries.first().map(|&(until, _)| until);
        let ip = self.ip_expiries.first().map(|&(until, _)| until);
        peer.into_iter().chain(ip).min()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn peer(index: u8) -> PeerId {
        PeerId::from_bytes([index; 32])
    }

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    #[test]
    fn peer_bans_expire() {
        let mut bans = Bans::default();
        assert!(bans.ban_peer(peer(1), None, at(3600)).is_empty());
        assert!(bans.is_banned(at(0), &peer(1)));
        assert!(bans.is_banned(at(3599), &peer(1)));
        assert!(
            !bans.is_banned(at(3600), &peer(1)),
            "ends at `until` even before expire()"
        );
        assert!(!bans.is_banned(at(0), &peer(2)));
        assert_eq!(bans.next_expiry(), Some(at(3600)));
        assert!(bans.expire(at(3599)).is_empty());
        assert_eq!(bans.expire(at(3600)), vec![Unban::Peer(peer(1))]);
        assert_eq!(bans.banned_peer_count(), 0);
        assert_eq!(bans.next_expiry(), None);
        assert!(bans.expire(at(9999)).is_empty(), "reported once");
    }

    #[test]
    fn ip_bans_expire_and_cover_mapped_and_prefix_addresses() {
        let mut bans = Bans::default();
        bans.ban_ip(v4(7), at(10));
        assert!(bans.is_ip_banned(at(0), v4(7)));
        assert!(!bans.is_ip_banned(at(0), v4(8)));
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        assert!(
            bans.is_ip_banned(at(0), mapped),
            "IPv4-mapped IPv6 is the same host"
        );
        let host: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let neighbour: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_net: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        bans.ban_ip(IpAddr::V6(host), at(20));
        assert!(bans.is_ip_banned(at(0), IpAddr::V6(neighbour)), "same /64");
        assert!(!bans.is_ip_banned(at(0), IpAddr::V6(other_net)));
        assert_eq!(bans.expire(at(10)), vec![Unban::Ip(v4(7))]);
        assert!(!bans.is_ip_banned(at(10), v4(7)));
        assert_eq!(bans.next_expiry(), Some(at(20)));
    }

    #[test]
    fn banning_again_extends_never_shortens() {
        let mut bans = Bans::default();
        bans.ban_peer(peer(1), Some(v4(1)), at(100));
        bans.ban_peer(peer(1), None, at(50));
        assert_eq!(bans.peer_banned_until(&peer(1)), Some(at(100)));
        assert_eq!(bans.banned_peers_from(at(0), v4(1)), 1, "the IP is kept");
        bans.ban_peer(peer(1), None, at(200));
        assert_eq!(bans.peer_banned_until(&peer(1)), Some(at(200)));
        assert!(bans.expire(at(150)).is_empty());
        bans.ban_ip(v4(2), at(100));
        bans.ban_ip(v4(2), at(10));
        assert_eq!(bans.ip_banned_until(v4(2)), Some(at(100)));
        assert_eq!(bans.peer_expiries.len(), 1);
        assert_eq!(bans.ip_expiries.len(), 1);
    }

    #[test]
    fn full_tables_lift_the_ban_that_ends_first() {
        let mut bans = Bans::new(3, 2);
        bans.ban_peer(peer(1), None, at(30));
        bans.ban_peer(peer(2), None, at(10));
        bans.ban_peer(peer(3), None, at(20));
        assert_eq!(
            bans.ban_peer(peer(4), None, at(40)),
            vec![Unban::Peer(peer(2))]
        );
        assert!(!bans.is_banned(at(0), &peer(2)));
        assert!(bans.is_banned(at(0), &peer(4)));
        assert_eq!(bans.banned_peer_count(), 3);
        bans.ban_ip(v4(1), at(5));
        bans.ban_ip(v4(2), at(6));
        assert_eq!(bans.ban_ip(v4(3), at(7)), vec![Unban::Ip(v4(1))]);
        assert_eq!(bans.banned_ip_count(), 2);
    }

    #[test]
    fn counts_banned_peers_per_ip() {
        let mut bans = Bans::default();
        bans.ban_peer(peer(1), Some(v4(1)), at(10));
        bans.ban_peer(peer(2), Some(v4(1)), at(20));
        bans.ban_peer(peer(3), Some(v4(2)), at(20));
        bans.ban_peer(peer(4), None, at(20));
        assert_eq!(bans.banned_peers_from(at(0), v4(1)), 2);
        assert_eq!(
            bans.banned_peers_from(at(10), v4(1)),
            1,
            "expired bans do not count"
        );
        assert_eq!(bans.banned_peers_from(at(0), v4(3)), 0);
    }

    #[test]
    fn manual_unban() {
        let mut bans = Bans::default();
        bans.ban_peer(peer(1), None, at(10));
        bans.ban_ip(v4(1), at(10));
        assert!(bans.unban_peer(&peer(1)));
        assert!(!bans.unban_peer(&peer(1)));
        assert!(bans.unban_ip(v4(1)));
        assert!(!bans.is_ip_banned(at(0), v4(1)));
        assert_eq!(bans.next_expiry(), None);
    }
}
