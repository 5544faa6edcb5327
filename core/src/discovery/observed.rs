//! What peers tell us about our own address: the observation book a node
//! without an address to advertise learns its dialable address from.
//!
//! # Design
//! Every record-exchange answer carries the address the answering peer's
//! connection sees us at (`wire.rs`, libp2p identify's `observedAddr`).
//! The book keeps, per observed IP, the peers that reported it, grouped so
//! that peers of one network count once: by [`NetGroup`] (IPv4 /16, IPv6
//! /56), or by host for observers the subnet limits leave to the operator
//! (private and link-local addresses, or every address when the limits are
//! off: a lab on one /16). An IP is confirmed once
//! [`OBSERVED_CONFIRMATIONS_MIN`] groups reported it; [`AddressBook::observe`]
//! then returns it once, joined with our listen port. The port the peers
//! saw is ignored: a peer we dialled sees our ephemeral port, not the one
//! we listen on.
//!
//! Each observer group counts towards one IP, the last it reported: a peer
//! that changes its story moves its vote instead of adding one, so Sybils
//! in one network group hold at most one entry of the book.
//!
//! # Security
//! *Provided*: the book is bounded ([`OBSERVED_IPS_MAX`] IPs of at most
//! [`OBSERVERS_PER_IP_MAX`] groups each); IPs the address policy refuses
//! never enter it; an attacker needs peers in
//! [`OBSERVED_CONFIRMATIONS_MIN`] network groups to confirm a false IP.
//! *Not provided*: that a confirmed IP reaches us (behind a NAT without a
//! port mapping, it does not); that enough honest peers outvote attackers
//! that hold three network groups.
//!
//! # Limits
//! [`OBSERVED_IPS_MAX`], [`OBSERVERS_PER_IP_MAX`], [`OBSERVED_CONFIRMATIONS_MIN`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::address::{check_address, is_exempt_from_subnet_limits, NetGroup};
use super::limits::{OBSERVED_CONFIRMATIONS_MIN, OBSERVED_IPS_MAX, OBSERVERS_PER_IP_MAX};

/// Whom one vote belongs to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Observer {
    /// A peer on the internet: its network group votes once.
    Group(NetGroup),
    /// A peer the subnet limits skip (private, or limits off): each host votes.
    Host(IpAddr),
}

impl Observer {
    /// The group a peer at `ip` votes as.
    pub fn of(ip: IpAddr, subnet_limits: bool) -> Observer {
        if !subnet_limits || is_exempt_from_subnet_limits(ip) {
            Observer::Host(ip.to_canonical())
        } else {
            Observer::Group(NetGroup::of(ip))
        }
    }
}

/// An address the book confirmed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Confirmed {
    /// The confirmed IP with our listen port.
    pub addr: SocketAddr,
    /// How many observer groups reported it.
    pub observers: usize,
}

/// One observed IP.
#[derive(Clone, Debug)]
struct Observation {
    observers: BTreeSet<Observer>,
    /// Order of arrival, for eviction among equals.
    first_heard: u64,
}

/// The observation book. See the module doc.
#[derive(Clone, Debug)]
pub struct AddressBook {
    listen_port: u16,
    allow_private: bool,
    subnet_limits: bool,
    ips: BTreeMap<IpAddr, Observation>,
    /// The IP each observer group voted for last (one vote each).
    votes: BTreeMap<Observer, IpAddr>,
    next_arrival: u64,
}

impl AddressBook {
    /// A book for a node listening on `listen_port`, accepting observed IPs
    /// as the discovery address policy does (`allow_private`) and grouping
    /// observers as the table does (`subnet_limits`).
    pub fn new(listen_port: u16, allow_private: bool, subnet_limits: bool) -> AddressBook {
        AddressBook {
            listen_port,
            allow_private,
            subnet_limits,
            ips: BTreeMap::new(),
            votes: BTreeMap::new(),
            next_arrival: 0,
        }
    }

    /// IPs remembered.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether no IP is remembered.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// Observer groups that reported `ip`.
    pub fn observers_of(&self, ip: IpAddr) -> usize {
        self.ips
            .get(&ip.to_canonical())
            .map_or(0, |observation| observation.observers.len())
    }

    /// The peer at `observer_ip` sees us at `observed`. Returns the
    /// confirmed address when this report is the one that confirms it.
    pub fn observe(&mut self, observer_ip: IpAddr, observed: SocketAddr) -> Option<Confirmed> {
        let ip = observed.ip().to_canonical();
        let addr = SocketAddr::new(ip, self.listen_port);
        if check_address(&addr, self.allow_private).is_err() {
            return None;
        }
        let observer = Observer::of(observer_ip, self.subnet_limits);
        if self.votes.get(&observer) == Some(&ip) {
            return None;
        }
        if let Some(previous) = self.votes.remove(&observer) {
            self.withdraw(observer, previous);
        }
        if !self.ips.contains_key(&ip) {
            if self.ips.len() >= OBSERVED_IPS_MAX {
                self.evict();
            }
            let first_heard = self.next_arrival;
            self.next_arrival = self.next_arrival.saturating_add(1);
            self.ips.insert(
                ip,
                Observation {
                    observers: BTreeSet::new(),
                    first_heard,
                },
            );
        }
        let observation = self.ips.get_mut(&ip)?;
        if observation.observers.len() >= OBSERVERS_PER_IP_MAX {
            return None;
        }
        observation.observers.insert(observer);
        self.votes.insert(observer, ip);
        let observers = observation.observers.len();
        self.assert_invariants();
        (observers == OBSERVED_CONFIRMATIONS_MIN).then_some(Confirmed { addr, observers })
    }

    /// Takes `observer`'s vote away from `ip`, forgetting `ip` with its last vote.
    fn withdraw(&mut self, observer: Observer, ip: IpAddr) {
        if let Some(observation) = self.ips.get_mut(&ip) {
            observation.observers.remove(&observer);
            if observation.observers.is_empty() {
                self.ips.remove(&ip);
            }
        }
    }

    /// Forgets the IP with the fewest observers, the earliest heard among equals.
    fn evict(&mut self) {
        let victim = self
            .ips
            .iter()
            .min_by_key(|(_, observation)| (observation.observers.len(), observation.first_heard))
            .map(|(ip, _)| *ip);
        if let Some(victim) = victim {
            if let Some(observation) = self.ips.remove(&victim) {
                for observer in observation.observers {
                    self.votes.remove(&observer);
                }
            }
        }
    }

    /// Bounds hold and every vote is counted once, where it was cast.
    pub fn assert_invariants(&self) {
        assert!(self.ips.len() <= OBSERVED_IPS_MAX);
        let counted: usize = self
            .ips
            .values()
            .map(|observation| {
                assert!(observation.observers.len() <= OBSERVERS_PER_IP_MAX);
                observation.observers.len()
            })
            .sum();
        assert_eq!(counted, self.votes.len(), "one vote per observer");
        for (observer, ip) in &self.votes {
            assert!(self.ips[ip].observers.contains(observer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 9000;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test IP")
    }

    /// The address a peer reports, at a port it might see (ephemeral).
    fn seen(text: &str) -> SocketAddr {
        SocketAddr::new(ip(text), 51_234)
    }

    fn public_book() -> AddressBook {
        AddressBook::new(PORT, false, true)
    }

    #[test]
    fn three_network_groups_confirm_an_ip_once_with_our_listen_port() {
        let mut book = public_book();
        assert_eq!(book.observe(ip("198.51.1.1"), seen("203.0.113.9")), None);
        assert_eq!(book.observe(ip("198.52.1.1"), seen("203.0.113.9")), None);
        let confirmed = book.observe(ip("198.53.1.1"), seen("203.0.113.9"));
        assert_eq!(
            confirmed,
            Some(Confirmed {
                addr: "203.0.113.9:9000".parse().unwrap(),
                observers: 3
            })
        );
        // A fourth group adds a vote but confirms nothing new.
        assert_eq!(book.observe(ip("198.54.1.1"), seen("203.0.113.9")), None);
        assert_eq!(book.observers_of(ip("203.0.113.9")), 4);
    }

    #[test]
    fn sybils_in_one_slash_16_count_once() {
        let mut book = public_book();
        for host in 1..=50u8 {
            let observer = IpAddr::from([198, 51, host, 1]);
            assert_eq!(book.observe(observer, seen("203.0.113.66")), None);
        }
        assert_eq!(book.observers_of(ip("203.0.113.66")), 1);
        // Two more groups are still one short of three... then three.
        assert_eq!(book.observe(ip("198.52.0.1"), seen("203.0.113.66")), None);
        assert!(book
            .observe(ip("198.53.0.1"), seen("203.0.113.66"))
            .is_some());
    }

    #[test]
    fn an_observer_that_changes_its_story_moves_its_vote() {
        let mut book = public_book();
        let liar = ip("198.51.0.1");
        for target in 1..=40u8 {
            book.observe(
                liar,
                SocketAddr::new(IpAddr::from([203, 0, 113, target]), 1),
            );
            assert_eq!(book.len(), 1, "one group holds one entry");
        }
        assert_eq!(book.observers_of(ip("203.0.113.40")), 1);
        assert_eq!(book.observers_of(ip("203.0.113.1")), 0);
        book.assert_invariants();
    }

    #[test]
    fn private_observers_vote_by_host_and_private_ips_need_allow_private() {
        // A devnet: every peer in 10.0.0.0/16.
        let mut lab = AddressBook::new(PORT, true, true);
        assert_eq!(lab.observe(ip("10.0.0.2"), seen("10.0.0.1")), None);
        assert_eq!(lab.observe(ip("10.0.0.3"), seen("10.0.0.1")), None);
        assert!(lab.observe(ip("10.0.0.4"), seen("10.0.0.1")).is_some());
        // Without allow_private a private IP never enters the book.
        let mut public = public_book();
        for observer in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "198.51.0.1"] {
            assert_eq!(public.observe(ip(observer), seen("10.0.0.1")), None);
        }
        assert!(public.is_empty());
        // Nor does what is never dialable, allowed or not.
        for junk in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::"] {
            assert_eq!(lab.observe(ip("10.0.0.9"), seen(junk)), None);
        }
        assert_eq!(lab.len(), 1);
    }

    #[test]
    fn a_mapped_ipv4_report_is_the_ipv4_address() {
        let mut book = public_book();
        book.observe(ip("198.51.0.1"), seen("::ffff:203.0.113.9"));
        book.observe(ip("::ffff:198.52.0.1"), seen("203.0.113.9"));
        let confirmed = book.observe(ip("198.53.0.1"), seen("203.0.113.9"));
        assert_eq!(
            confirmed.map(|confirmed| confirmed.addr),
            Some("203.0.113.9:9000".parse().unwrap())
        );
    }

    #[test]
    fn the_book_stays_bounded_and_evicts_the_least_observed_earliest_first() {
        let mut book = public_book();
        // The real address, seen by two groups.
        book.observe(ip("198.51.0.1"), seen("203.0.113.9"));
        book.observe(ip("198.52.0.1"), seen("203.0.113.9"));
        // Lies from many groups, one IP each.
        for group in 0..=200u8 {
            let observer = IpAddr::from([100, group, 0, 1]);
            let lie = IpAddr::from([192, 0, 2, group]);
            book.observe(observer, SocketAddr::new(lie, 1));
            assert!(book.len() <= OBSERVED_IPS_MAX);
            book.assert_invariants();
        }
        assert_eq!(book.len(), OBSERVED_IPS_MAX);
        // The twice-observed IP survived; the earliest lies went first.
        assert_eq!(book.observers_of(ip("203.0.113.9")), 2);
        assert_eq!(book.observers_of(ip("192.0.2.0")), 0);
        assert_eq!(book.observers_of(ip("192.0.2.200")), 1);
        // And it is confirmed by the next group.
        assert!(book
            .observe(ip("198.53.0.1"), seen("203.0.113.9"))
            .is_some());
    }

    #[test]
    fn observers_per_ip_are_capped() {
        let mut book = public_book();
        for group in 0..=(OBSERVERS_PER_IP_MAX as u8 + 5) {
            book.observe(IpAddr::from([100, group, 0, 1]), seen("203.0.113.9"));
        }
        assert_eq!(book.observers_of(ip("203.0.113.9")), OBSERVERS_PER_IP_MAX);
        book.assert_invariants();
    }
}
