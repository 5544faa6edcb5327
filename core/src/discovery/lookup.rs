//! One iterative Kademlia lookup: ask the nearest peers we know about a
//! target, learn nearer ones from their answers, and stop once the nearest
//! that answered are the nearest we know.
//!
//! # Design
//! A [`Lookup`] keeps its contacts ordered by (XOR distance to the target,
//! id). It keeps up to [`LOOKUP_PARALLELISM`] queries in flight, each to the
//! nearest contact not yet asked among the [`BUCKET_ENTRIES_MAX`] nearest
//! that have not failed (Kademlia's α of k). A contact heard of in the
//! answer to a round-r query is at round r + 1 (the seeds are round 0), and
//! contacts past [`LOOKUP_ROUNDS_MAX`] are never asked. The lookup is done
//! when nothing is in flight and no contact in that window can be asked:
//! the k nearest live contacts have all answered (converged), or the
//! rounds, the [`LOOKUP_QUERIES_MAX`] queries or the [`LOOKUP_TIMEOUT`] ran
//! out. Its result is the k nearest contacts that answered.
//!
//! ```text
//!  new(seeds) ─► next_query ─► (peer asked) ─► handle_answer(records) ─► new contacts, round + 1
//!                    ▲                    └──► handle_failure / deadline ─► Failed
//!                    └───────── until is_done(now) ─► closest_answered()
//! ```
//!
//! # Security
//! *Provided*: bounded state ([`LOOKUP_CONTACTS_MAX`] contacts, beyond
//! which an answer's further records are ignored), bounded work (queries,
//! rounds, a per-query deadline and an overall one); no contact is asked
//! twice; a peer's answer only adds contacts, it never removes or reorders
//! what others said, and distances are computed by us from ids.
//! *Not provided*: resistance to answers made only of Sybils (they become
//! contacts like any other; what keeps them out of the table is
//! `table.rs`); disjoint paths (S/Kademlia).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::identity::PeerId;
use crate::time::Instant;

use super::key::{Distance, Key};
use super::limits::{
    BUCKET_ENTRIES_MAX, LOOKUP_CONTACTS_MAX, LOOKUP_PARALLELISM, LOOKUP_QUERIES_MAX,
    LOOKUP_QUERY_TIMEOUT, LOOKUP_ROUNDS_MAX, LOOKUP_TIMEOUT,
};
use super::record::Record;

/// A peer a lookup may ask: who, where, and its record if we have one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Its id.
    pub peer: PeerId,
    /// Where to reach it.
    pub addr: SocketAddr,
    /// Its record (seeds from bootnodes have none).
    pub record: Option<Record>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotAsked,
    InFlight { deadline: Instant },
    Answered,
    Failed,
}

#[derive(Clone, Debug)]
struct Known {
    contact: Contact,
    round: u32,
    state: State,
}

/// One lookup. See the module doc.
#[derive(Clone, Debug)]
pub struct Lookup {
    target: Key,
    deadline: Instant,
    contacts: BTreeMap<(Distance, PeerId), Known>,
    /// The position of each contact, to find it by id.
    distance_of: BTreeMap<PeerId, Distance>,
    queries_sent: usize,
    in_flight: usize,
    round_max_asked: u32,
}

impl Lookup {
    /// A lookup towards `target` starting from `seeds` (round 0).
    pub fn new(now: Instant, target: Key, seeds: Vec<Contact>) -> Lookup {
        let mut lookup = Lookup {
            target,
            deadline: now + LOOKUP_TIMEOUT,
            contacts: BTreeMap::new(),
            distance_of: BTreeMap::new(),
            queries_sent: 0,
            in_flight: 0,
            round_max_asked: 0,
        };
        for seed in seeds {
            lookup.add_contact(seed, 0);
        }
        lookup
    }

    /// The target.
    pub fn target(&self) -> Key {
        self.target
    }

    /// Queries sent so far.
    pub fn queries_sent(&self) -> usize {
        self.queries_sent
    }

    /// The highest round a query went to.
    pub fn rounds(&self) -> u32 {
        self.round_max_asked
    }

    /// Contacts known.
    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// The next contact to ask, if one may be asked now; it is then in flight
    /// until [`Lookup::handle_answer`], [`Lookup::handle_failure`] or its deadline.
    pub fn next_query(&mut self, now: Instant) -> Option<Contact> {
        if self.in_flight >= LOOKUP_PARALLELISM
            || self.queries_sent >= LOOKUP_QUERIES_MAX
            || now >= self.deadline
        {
            return None;
        }
        let known = self
            .contacts
            .values_mut()
            .filter(|known| known.state != State::Failed)
            .take(BUCKET_ENTRIES_MAX)
            .find(|known| known.state == State::NotAsked && known.round <= LOOKUP_ROUNDS_MAX)?;
        known.state = State::InFlight {
            deadline: now + LOOKUP_QUERY_TIMEOUT,
        };
        self.round_max_asked = self.round_max_asked.max(known.round);
        self.in_flight += 1;
        self.queries_sent += 1;
        Some(known.contact.clone())
    }

    /// `peer` answered with `contacts` (already verified and filtered by
    /// the caller). Returns false if no query to `peer` was in flight.
    pub fn handle_answer(&mut self, peer: &PeerId, contacts: Vec<Contact>) -> bool {
        let Some(known) = self.known_mut(peer) else {
            return false;
        };
        if !matches!(known.state, State::InFlight { .. }) {
            return false;
        }
        known.state = State::Answered;
        let round = known.round.saturating_add(1);
        self.in_flight -= 1;
        for contact in contacts {
            self.add_contact(contact, round);
        }
        true
    }

    /// The query to `peer` failed. Returns false if none was in flight.
    pub fn handle_failure(&mut self, peer: &PeerId) -> bool {
        let Some(known) = self.known_mut(peer) else {
            return false;
        };
        if !matches!(known.state, State::InFlight { .. }) {
            return false;
        }
        known.state = State::Failed;
        self.in_flight -= 1;
        true
    }

    /// Fails the queries whose deadline passed; returns their peers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PeerId> {
        let mut expired = Vec::new();
        for known in self.contacts.values_mut() {
            if let State::InFlight { deadline } = known.state {
                if deadline <= now {
                    known.state = State::Failed;
                    expired.push(known.contact.peer);
                }
            }
        }
        self.in_flight -= expired.len();
        expired
    }

    /// The earliest instant something is due: a query's deadline or the lookup's.
    pub fn next_deadline(&self) -> Instant {
        self.contacts
            .values()
            .filter_map(|known| match known.state {
                State::InFlight { deadline } => Some(deadline),
                _ => None,
            })
            .fold(self.deadline, Instant::min)
    }

    /// Whether the lookup is over: its deadline passed, or nothing is in
    /// flight and nothing more may be asked.
    pub fn is_done(&self, now: Instant) -> bool {
        if now >= self.deadline {
            return true;
        }
        if self.in_flight > 0 {
            return false;
        }
        let askable = self.queries_sent < LOOKUP_QUERIES_MAX
            && self
                .contacts
                .values()
                .filter(|known| known.state != State::Failed)
                .take(BUCKET_ENTRIES_MAX)
                .any(|known| known.state == State::NotAsked && known.round <= LOOKUP_ROUNDS_MAX);
        !askable
    }

    /// The peers a query is in flight to.
    pub fn in_flight(&self) -> Vec<PeerId> {
        self.contacts
            .values()
            .filter(|known| matches!(known.state, State::InFlight { .. }))
            .map(|known| known.contact.peer)
            .collect()
    }

    /// The [`BUCKET_ENTRIES_MAX`] nearest contacts that answered, nearest first.
    pub fn closest_answered(&self) -> Vec<Contact> {
        self.contacts
            .values()
            .filter(|known| known.state == State::Answered)
            .take(BUCKET_ENTRIES_MAX)
            .map(|known| known.contact.clone())
            .collect()
    }

    fn known_mut(&mut self, peer: &PeerId) -> Option<&mut Known> {
        let distance = *self.distance_of.get(peer)?;
        self.contacts.get_mut(&(distance, *peer))
    }

    fn add_contact(&mut self, contact: Contact, round: u32) {
        if self.distance_of.contains_key(&contact.peer)
            || self.contacts.len() >= LOOKUP_CONTACTS_MAX
        {
            return;
        }
        let distance = Key::of_peer(&contact.peer).distance(&self.target);
        self.distance_of.insert(contact.peer, distance);
        self.contacts.insert(
            (distance, contact.peer),
            Known {
                contact,
                round,
                state: State::NotAsked,
            },
        );
    }

    /// Checks the bookkeeping; for tests and fuzzing.
    pub fn assert_invariants(&self) {
        let in_flight = self
            .contacts
            .values()
            .filter(|known| matches!(known.state, State::InFlight { .. }))
            .count();
        assert_eq!(in_flight, self.in_flight);
        assert!(self.in_flight <= LOOKUP_PARALLELISM);
        assert!(self.queries_sent <= LOOKUP_QUERIES_MAX);
        assert!(self.contacts.len() <= LOOKUP_CONTACTS_MAX);
        assert_eq!(self.contacts.len(), self.distance_of.len());
        assert!(self.round_max_asked <= LOOKUP_ROUNDS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(n: u8) -> Contact {
        Contact {
            peer: PeerId::from_bytes([n; 32]),
            addr: SocketAddr::from(([203, 0, 113, n], 9000)),
            record: None,
        }
    }

    #[test]
    fn at_most_alpha_in_flight_and_no_one_asked_twice() {
        let now = Instant::ZERO;
        let mut lookup = Lookup::new(now, Key([0; 32]), (1..=10).map(contact).collect());
        let asked: Vec<PeerId> = std::iter::from_fn(|| lookup.next_query(now))
            .map(|contact| contact.peer)
            .collect();
        assert_eq!(asked.len(), LOOKUP_PARALLELISM);
        assert!(!lookup.is_done(now));
        assert!(lookup.handle_answer(&asked[0], vec![contact(1), contact(11)]));
        assert!(!lookup.handle_answer(&asked[0], vec![]), "answered once");
        assert!(lookup.handle_failure(&asked[1]));
        let next = lookup.next_query(now).expect("room again");
        assert!(!asked.contains(&next.peer));
        lookup.assert_invariants();
    }

    #[test]
    fn queries_expire_and_the_lookup_ends() {
        let now = Instant::ZERO;
        let mut lookup = Lookup::new(now, Key([0; 32]), vec![contact(1), contact(2)]);
        while lookup.next_query(now).is_some() {}
        assert_eq!(lookup.next_deadline(), now + LOOKUP_QUERY_TIMEOUT);
        let later = now + LOOKUP_QUERY_TIMEOUT;
        assert_eq!(lookup.handle_timeout(later).len(), 2);
        assert!(lookup.is_done(later));
        assert!(lookup.closest_answered().is_empty());
        lookup.assert_invariants();
    }

    #[test]
    fn an_empty_lookup_is_done_at_once_and_the_deadline_ends_any() {
        let now = Instant::ZERO;
        assert!(Lookup::new(now, Key([0; 32]), vec![]).is_done(now));
        let mut lookup = Lookup::new(now, Key([0; 32]), vec![contact(1)]);
        assert!(lookup.next_query(now).is_some());
        assert!(!lookup.is_done(now));
        assert!(lookup.is_done(now + LOOKUP_TIMEOUT));
    }
}
