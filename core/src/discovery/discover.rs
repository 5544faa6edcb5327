//! The [`Discovery`] machine: the routing table, the lookups, refreshes,
//! bootnodes and dials, behind the one contract of `crate::machine`.
//!
//! # Design
//! Inputs are `handle_*(now, …)` calls, outputs are drained from `poll_*`
//! after every call, and [`Machine::handle_timeout`] runs what is due at
//! [`Machine::next_deadline`]:
//!
//! ```text
//!  handle_peer_verified(peer, record, ip) ─► table entry (or a liveness check)
//!  handle_peer_disconnected / handle_dial_failed ─► queries failed, dial slot freed
//!  handle_find_node_answer(query, bytes) ─► records: lookup contacts and candidates
//!  handle_query_failed(query) ─► the lookup asks someone else
//!  handle_liveness(peer, alive) ─► table: keep or evict
//!  handle_find_node_request(from, request) ─► the answer, returned at once
//!  set_peer_count(connected, target) ─► refresh every 30 s below target, else 5 min
//!  add_bootnode(peer, addr) ─► a candidate while the table is empty
//!  add_known(records) ─► candidates (a peer store's records)
//!                   poll_query()            ─► (peer, addr, FIND_NODE request) to send
//!                   poll_dial()             ─► (peer, addr) to dial
//!                   poll_liveness_check()   ─► (peer, addr) to Ping
//!                   poll_lookup_outcome()   ─► a finished lookup's nearest peers
//! ```
//!
//! A refresh is a lookup towards a random target (the first one with
//! entries, towards our own key, to fill the nearest buckets): its answers
//! feed the candidates, and while the node has fewer peers than its target
//! the machine asks it to dial candidates, at most [`DIALS_IN_FLIGHT_MAX`]
//! at once. Dialled peers that complete a handshake enter the table
//! through `handle_peer_verified`. Bootnodes are candidates only while the
//! table is empty: a node with peers does not depend on them.
//!
//! A node left stranded (no peer, no dial and no lookup in flight, but
//! someone to try: a newcomer its full bootnodes sent away) does not wait
//! for its next refresh: the refresh is brought forward to
//! [`STRANDED_RETRY_BASE`] plus a seeded jitter of up to as much again,
//! doubling per try up to [`STRANDED_RETRY_MAX`], never before a failed
//! bootnode's dial backoff ends while the table is empty; holding half the
//! target again starts the doubling over.
//!
//! # Security
//! *Provided*: every map bounded (see `limits.rs`), answers decoded with
//! their limits and verified before use, outputs bounded by the lookups and
//! dials they serve; randomness only from the seed; time only from `now`.
//! *Not provided*: rate limiting of inbound requests (the req/resp layer's
//! quotas, `FIND_NODE_QUOTA` and `PEER_RECORD_QUOTA`, once wired).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::identity::PeerId;
use crate::machine::Machine;
use crate::time::Instant;

use super::address::{first_dialable, AddressRefusal};
use super::key::Key;
use super::limits::{
    BOOTNODES_MAX, BUCKET_ENTRIES_MAX, DIALS_IN_FLIGHT_MAX, DIAL_BACKOFF_ADDRESSES_MAX,
    DIAL_BACKOFF_BASE, DIAL_BACKOFF_MAX, DIAL_TIMEOUT, LOOKUPS_MAX, REFRESH_INTERVAL,
    REFRESH_INTERVAL_BELOW_TARGET, STRANDED_RETRY_BASE, STRANDED_RETRY_MAX,
};
use super::lookup::{Contact, Lookup};
use super::record::Record;
use super::table::{Insert, LivenessCheck, RoutingTable, TableConfig};
use super::wire::{FindNodeAnswer, FindNodeRequest, WireError};

/// How discovery is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our own signed record: its peer is us, its network id the network's.
    pub local: Record,
    /// The table's address and subnet policy.
    pub table: TableConfig,
}

/// Names one query we sent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QueryId(pub u64);

/// Names one lookup.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LookupId(pub u64);

/// Send `request` to `peer` (dialling `addr` first if not connected) as a
/// FIND_NODE request, and report with [`Discovery::handle_find_node_answer`]
/// or [`Discovery::handle_query_failed`] under `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Names the query in the report.
    pub id: QueryId,
    /// Whom to ask.
    pub peer: PeerId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What to ask.
    pub request: FindNodeRequest,
}

/// Dial `addr` expecting `peer`; a completed handshake is reported with
/// [`Discovery::handle_peer_verified`], a failure with [`Discovery::handle_dial_failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dial {
    /// Whom we expect.
    pub peer: PeerId,
    /// Where.
    pub addr: SocketAddr,
}

/// A finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOutcome {
    /// Which.
    pub id: LookupId,
    /// Its target.
    pub target: Key,
    /// The nearest peers that answered, nearest first, at most [`BUCKET_ENTRIES_MAX`].
    pub closest: Vec<Contact>,
    /// Queries it sent.
    pub queries: usize,
    /// The highest round it asked.
    pub rounds: u32,
}

/// What discovery counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryCounters {
    /// Lookups started (refreshes included).
    pub lookups_started: u64,
    /// Lookups finished.
    pub lookups_finished: u64,
    /// FIND_NODE queries sent.
    pub queries_sent: u64,
    /// Queries that failed or expired.
    pub queries_failed: u64,
    /// Answers refused by the decoder.
    pub answers_invalid: u64,
    /// Dials asked for.
    pub dials: u64,
    /// Rounds (hops) of the finished lookups, summed: over
    /// `lookups_finished`, the mean hops a lookup took.
    pub lookup_rounds: u64,
    /// Dials that failed or timed out; their addresses back off.
    pub dials_failed: u64,
    /// Addresses added to our record because peers confirmed them
    /// ([`Discovery::handle_address_learned`]).
    pub addresses_learned: u64,
    /// Refreshes brought forward because the node was stranded: no peer,
    /// no dial and no lookup in flight.
    pub stranded_retries: u64,
}

/// An address whose dials failed: not dialled again before `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DialBackoff {
    failures: u32,
    until: Instant,
}

/// The discovery machine. See the module doc.
#[derive(Debug)]
pub struct Discovery {
    local: Record,
    local_key: Key,
    table: RoutingTable,
    bootnodes: BTreeMap<PeerId, SocketAddr>,
    rng: ChaCha20Rng,
    lookups: BTreeMap<LookupId, Lookup>,
    /// Every query in flight: its lookup and peer.
    queries: BTreeMap<QueryId, (LookupId, PeerId)>,
    next_lookup: u64,
    next_query: u64,
    queries_out: VecDeque<Query>,
    dials_out: VecDeque<Dial>,
    outcomes: VecDeque<LookupOutcome>,
    /// Dials asked for and not yet reported: where, and until when.
    dialing: BTreeMap<PeerId, (SocketAddr, Instant)>,
    /// Addresses whose dials failed, at most [`DIAL_BACKOFF_ADDRESSES_MAX`].
    backoff: BTreeMap<SocketAddr, DialBackoff>,
    peers_connected: usize,
    peers_target: usize,
    next_refresh: Instant,
    last_refresh: Option<Instant>,
    self_lookup_done: bool,
    /// Stranded retries since we last held half our target: the exponent
    /// of the next wait, which stops doubling at [`STRANDED_RETRY_MAX`].
    stranded_retries: u32,
    /// Draws the stranded retries' jitter: a stream of its own, so that
    /// retries do not shift the refresh targets and dial choices `rng` draws.
    retry_rng: ChaCha20Rng,
    /// A stranded retry is due at `next_refresh` and not yet run: one at a
    /// time, whatever else happens meanwhile.
    stranded_retry_armed: bool,
    last_now: Instant,
    counters: DiscoveryCounters,
}

impl Discovery {
    /// A machine with an empty table; its first refresh is due at `now`.
    pub fn new(config: Config, seed: [u8; 32], now: Instant) -> Discovery {
        let local_peer = config.local.peer();
        Discovery {
            local_key: Key::of_peer(&local_peer),
            table: RoutingTable::new(local_peer, config.table),
            local: config.local,
            bootnodes: BTreeMap::new(),
            rng: ChaCha20Rng::from_seed(seed),
            retry_rng: {
                let mut rng = ChaCha20Rng::from_seed(seed);
                rng.set_stream(1);
                rng
            },
            lookups: BTreeMap::new(),
            queries: BTreeMap::new(),
            next_lookup: 0,
            next_query: 0,
            queries_out: VecDeque::new(),
            dials_out: VecDeque::new(),
            outcomes: VecDeque::new(),
            dialing: BTreeMap::new(),
            backoff: BTreeMap::new(),
            peers_connected: 0,
            peers_target: crate::peer::PEERS_TARGET,
            next_refresh: now,
            last_refresh: None,
            self_lookup_done: false,
            stranded_retries: 0,
            stranded_retry_armed: false,
            last_now: now,
            counters: DiscoveryCounters::default(),
        }
    }

    // --- Getters ---------------------------------------------------------------

    /// Our record: the answer to a record-exchange request.
    pub fn local_record(&self) -> &Record {
        &self.local
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// What was counted.
    pub fn counters(&self) -> DiscoveryCounters {
        self.counters
    }

    /// Lookups running.
    pub fn lookup_count(&self) -> usize {
        self.lookups.len()
    }

    /// When the next refresh lookup is due.
    pub fn next_refresh(&self) -> Instant {
        self.next_refresh
    }

    /// Until when dials to `addr` wait after earlier failures, if they do at `now`.
    pub fn dial_backoff_until(&self, now: Instant, addr: &SocketAddr) -> Option<Instant> {
        self.backoff
            .get(addr)
            .map(|backoff| backoff.until)
            .filter(|until| *until > now)
    }

    // --- Inputs ------------------------------------------------------------------

    /// Replaces our record (new addresses), which must be ours and newer.
    ///
    /// # Panics
    /// If `record` is another peer's or not newer: a caller bug.
    pub fn set_local_record(&mut self, record: Record) {
        assert!(
            record.supersedes(&self.local),
            "our new record must be ours and newer"
        );
        self.local = record;
    }

    /// Replaces our record with one that adds an address our peers
    /// confirmed (`observed.rs`), and counts it.
    ///
    /// # Panics
    /// As [`Discovery::set_local_record`], or if the new record does not
    /// name more addresses than the old: a caller bug.
    pub fn handle_address_learned(&mut self, record: Record) {
        assert!(
            record.addresses().len() > self.local.addresses().len(),
            "a learned address adds to our record"
        );
        self.set_local_record(record);
        self.counters.addresses_learned += 1;
    }

    /// The node has `connected` peers and wants `target`: below it, refresh
    /// every [`REFRESH_INTERVAL_BELOW_TARGET`] and dial candidates.
    pub fn set_peer_count(&mut self, now: Instant, connected: usize, target: usize) {
        self.observe(now);
        self.peers_connected = connected;
        self.peers_target = target;
        if connected >= target.div_ceil(2) {
            // Part of the network again: if it ever strands us, that is a
            // new episode, retried quickly again. Not sooner: a node that
            // every peer trims (all at their target) would otherwise come
            // back every few seconds.
            self.stranded_retries = 0;
        }
        if connected < target {
            let sooner = match self.last_refresh {
                Some(last) => last + REFRESH_INTERVAL_BELOW_TARGET,
                None => now,
            };
            self.next_refresh = self.next_refresh.min(sooner.max(now));
        }
        self.drive(now);
    }

    /// An operator-named peer to start from. It seeds the candidates now
    /// and whenever the table is empty at a refresh.
    pub fn add_bootnode(
        &mut self,
        now: Instant,
        peer: PeerId,
        addr: SocketAddr,
    ) -> Result<(), AddressRefusal> {
        self.observe(now);
        self.table.add_bootnode(peer, addr)?;
        if self.bootnodes.len() < BOOTNODES_MAX || self.bootnodes.contains_key(&peer) {
            self.bootnodes.insert(peer, addr);
        }
        self.drive(now);
        Ok(())
    }

    /// Records a peer store kept from an earlier run, least recently seen
    /// first: candidates to dial, like relayed records (they prove nothing
    /// about the peer being alive now), so a node restarted without
    /// bootnodes finds its way back. Candidates are bounded and evict the
    /// oldest arrival, so the most recently seen are kept. Returns how many
    /// became new candidates.
    pub fn add_known(&mut self, now: Instant, records: Vec<Record>) -> usize {
        self.observe(now);
        let network_id = self.local.network_id();
        let added = records
            .into_iter()
            .filter(|record| record.network_id() == network_id)
            .filter(|record| self.table.add_candidate(record.clone()))
            .count();
        self.drive(now);
        added
    }

    /// A handshake with `peer` from `ip` completed and the peer gave
    /// `record` as its own over that channel (the record exchange).
    pub fn handle_peer_verified(
        &mut self,
        now: Instant,
        peer: PeerId,
        record: Record,
        ip: IpAddr,
    ) -> Insert {
        self.observe(now);
        if let Some((addr, _)) = self.dialing.remove(&peer) {
            self.backoff.remove(&addr);
        }
        let was_empty = self.table.is_empty();
        let insert = self.table.insert_verified(now, peer, record, ip);
        if was_empty && !self.table.is_empty() {
            // The first peer met (a bootnode, most often): look ourselves up
            // through it now, not at the next refresh. The refresh that ran
            // before it was met had no one to ask.
            self.next_refresh = self.next_refresh.min(now);
        }
        self.drive(now);
        insert
    }

    /// `peer` disconnected: queries to it will not be answered.
    pub fn handle_peer_disconnected(&mut self, now: Instant, peer: PeerId) {
        self.observe(now);
        let failed: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, (_, to))| *to == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.fail_query(id);
        }
        self.dialing.remove(&peer);
        self.drive(now);
    }

    /// Our dial of `peer` failed (or its handshake did).
    pub fn handle_dial_failed(&mut self, now: Instant, peer: PeerId) {
        self.observe(now);
        if let Some((addr, _)) = self.dialing.remove(&peer) {
            self.note_dial_failure(now, addr);
        }
        self.table.remove_candidate(&peer);
        self.drive(now);
    }

    /// The answer to query `id`, as the body bytes of its success chunk.
    /// A refused answer fails the query, and its error says what the peer
    /// is penalised with ([`WireError::penalty`]).
    pub fn handle_find_node_answer(
        &mut self,
        now: Instant,
        id: QueryId,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        self.observe(now);
        match FindNodeAnswer::decode(bytes, self.local.network_id()) {
            Ok(answer) => {
                self.apply_answer(now, id, answer);
                Ok(())
            }
            Err(error) => {
                self.counters.answers_invalid += 1;
                self.fail_query(id);
                self.drive(now);
                Err(error)
            }
        }
    }

    /// The decoded answer to query `id`.
    pub fn apply_answer(&mut self, now: Instant, id: QueryId, answer: FindNodeAnswer) {
        self.observe(now);
        let Some((lookup_id, peer)) = self.queries.remove(&id) else {
            return;
        };
        self.table.handle_seen(now, &peer);
        let allow_private = self.table.config().allow_private;
        let local_peer = self.local.peer();
        let mut contacts = Vec::with_capacity(answer.records.len());
        for record in answer.records {
            if record.peer() == local_peer {
                continue;
            }
            let Some(addr) = first_dialable(record.addresses(), allow_private) else {
                continue;
            };
            if !self.dialing.contains_key(&record.peer()) {
                self.table.add_candidate(record.clone());
            }
            contacts.push(Contact {
                peer: record.peer(),
                addr,
                record: Some(record),
            });
        }
        if let Some(lookup) = self.lookups.get_mut(&lookup_id) {
            lookup.handle_answer(&peer, contacts);
        }
        self.drive(now);
    }

    /// Query `id` failed (an error chunk, a timeout, no connection).
    pub fn handle_query_failed(&mut self, now: Instant, id: QueryId) {
        self.observe(now);
        self.fail_query(id);
        self.drive(now);
    }

    /// The verdict on a [`LivenessCheck`].
    pub fn handle_liveness(&mut self, now: Instant, peer: PeerId, alive: bool) {
        self.observe(now);
        self.table.handle_liveness(now, peer, alive);
        self.drive(now);
    }

    /// A FIND_NODE request from `from`: the answer to send, the nearest
    /// entries to the target other than the requester.
    pub fn handle_find_node_request(
        &mut self,
        now: Instant,
        from: PeerId,
        request: FindNodeRequest,
    ) -> FindNodeAnswer {
        self.observe(now);
        let records = self
            .table
            .closest(&request.target, BUCKET_ENTRIES_MAX + 1)
            .into_iter()
            .filter(|entry| entry.record.peer() != from)
            .take(BUCKET_ENTRIES_MAX)
            .map(|entry| entry.record.clone())
            .collect();
        FindNodeAnswer { records }
    }

    /// Starts a lookup towards `target`, unless [`LOOKUPS_MAX`] are running.
    pub fn start_lookup(&mut self, now: Instant, target: Key) -> Option<LookupId> {
        self.observe(now);
        let id = self.begin_lookup(now, target)?;
        self.drive(now);
        Some(id)
    }

    // --- Outputs -------------------------------------------------------------------

    /// The next FIND_NODE query to send.
    pub fn poll_query(&mut self) -> Option<Query> {
        self.queries_out.pop_front()
    }

    /// The next candidate to dial.
    pub fn poll_dial(&mut self) -> Option<Dial> {
        self.dials_out.pop_front()
    }

    /// The next liveness check to make.
    pub fn poll_liveness_check(&mut self) -> Option<LivenessCheck> {
        self.table.poll_liveness_check()
    }

    /// The next finished lookup.
    pub fn poll_lookup_outcome(&mut self) -> Option<LookupOutcome> {
        self.outcomes.pop_front()
    }

    // --- Inside --------------------------------------------------------------------

    fn observe(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    fn begin_lookup(&mut self, now: Instant, target: Key) -> Option<LookupId> {
        if self.lookups.len() >= LOOKUPS_MAX {
            return None;
        }
        let mut seeds: Vec<Contact> = self
            .table
            .closest(&target, BUCKET_ENTRIES_MAX)
            .into_iter()
            .map(|entry| Contact {
                peer: entry.record.peer(),
                addr: entry.addr,
                record: Some(entry.record.clone()),
            })
            .collect();
        if seeds.len() < BUCKET_ENTRIES_MAX {
            let missing = BUCKET_ENTRIES_MAX - seeds.len();
            seeds.extend(
                self.table
                    .closest_candidates(&target, missing)
                    .into_iter()
                    .map(|candidate| Contact {
                        peer: candidate.peer,
                        addr: candidate.addr,
                        record: candidate.record.clone(),
                    }),
            );
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        self.lookups.insert(id, Lookup::new(now, target, seeds));
        self.counters.lookups_started += 1;
        Some(id)
    }

    /// A dial to `addr` failed: it waits [`DIAL_BACKOFF_BASE`], doubled for
    /// every earlier failure up to [`DIAL_BACKOFF_MAX`].
    fn note_dial_failure(&mut self, now: Instant, addr: SocketAddr) {
        self.counters.dials_failed += 1;
        let failures = self.backoff.get(&addr).map_or(0, |b| b.failures) + 1;
        // 2^5 × 10 s is past the cap already; the shift never overflows.
        let doublings = (failures - 1).min(5);
        let wait = (DIAL_BACKOFF_BASE * (1u32 << doublings)).min(DIAL_BACKOFF_MAX);
        if !self.backoff.contains_key(&addr) && self.backoff.len() >= DIAL_BACKOFF_ADDRESSES_MAX {
            // Forget the address whose wait ends first: expired ones first.
            let soonest = self
                .backoff
                .iter()
                .min_by_key(|(addr, backoff)| (backoff.until, **addr))
                .map(|(addr, _)| *addr)
                .expect("the map is full");
            self.backoff.remove(&soonest);
        }
        self.backoff.insert(
            addr,
            DialBackoff {
                failures,
                until: now + wait,
            },
        );
    }

    /// When a candidate waiting out a backoff may be dialled, if the node
    /// wants one.
    fn backoff_deadline(&self) -> Option<Instant> {
        if self.dialing.len() >= DIALS_IN_FLIGHT_MAX
            || self.peers_connected.saturating_add(self.dialing.len()) >= self.peers_target
        {
            return None;
        }
        self.table
            .candidates()
            .filter_map(|candidate| self.backoff.get(&candidate.addr))
            .map(|backoff| backoff.until)
            .filter(|until| *until > self.last_now)
            .min()
    }

    fn fail_query(&mut self, id: QueryId) {
        let Some((lookup_id, peer)) = self.queries.remove(&id) else {
            return;
        };
        self.counters.queries_failed += 1;
        if let Some(lookup) = self.lookups.get_mut(&lookup_id) {
            lookup.handle_failure(&peer);
        }
    }

    fn refresh(&mut self, now: Instant) {
        self.stranded_retry_armed = false;
        if self.table.is_empty() {
            for (peer, addr) in &self.bootnodes {
                if !self.dialing.contains_key(peer) {
                    // Never refused: add_bootnode accepted the address.
                    let _ = self.table.add_bootnode(*peer, *addr);
                }
            }
        }
        let target = if !self.self_lookup_done && !self.table.is_empty() {
            self.self_lookup_done = true;
            self.local_key
        } else {
            let mut bytes = [0u8; 32];
            self.rng.fill_bytes(&mut bytes);
            Key(bytes)
        };
        self.begin_lookup(now, target);
        self.last_refresh = Some(now);
        let interval = if self.peers_connected < self.peers_target {
            REFRESH_INTERVAL_BELOW_TARGET
        } else {
            REFRESH_INTERVAL
        };
        self.next_refresh = now + interval;
    }

    /// Sends what the lookups may send, finishes what is done, and asks for
    /// dials while below the target.
    fn drive(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for (&lookup_id, lookup) in &mut self.lookups {
            while let Some(contact) = lookup.next_query(now) {
                let id = QueryId(self.next_query);
                self.next_query += 1;
                self.queries.insert(id, (lookup_id, contact.peer));
                self.counters.queries_sent += 1;
                self.queries_out.push_back(Query {
                    id,
                    peer: contact.peer,
                    addr: contact.addr,
                    request: FindNodeRequest {
                        target: lookup.target(),
                    },
                });
            }
            if lookup.is_done(now) {
                finished.push(lookup_id);
            }
        }
        for lookup_id in finished {
            let lookup = self.lookups.remove(&lookup_id).expect("listed above");
            self.queries.retain(|_, (owner, _)| *owner != lookup_id);
            self.counters.lookups_finished += 1;
            self.counters.lookup_rounds += u64::from(lookup.rounds());
            self.outcomes.push_back(LookupOutcome {
                id: lookup_id,
                target: lookup.target(),
                closest: lookup.closest_answered(),
                queries: lookup.queries_sent(),
                rounds: lookup.rounds(),
            });
        }
        while self.outcomes.len() > LOOKUPS_MAX {
            // Outcomes nobody drains are informational: keep the newest.
            self.outcomes.pop_front();
        }
        // Candidates whose address is backing off wait in the table; the
        // others are drawn at random.
        let backoff = &self.backoff;
        let dialable = |candidate: &&super::table::Candidate| {
            backoff
                .get(&candidate.addr)
                .is_none_or(|backoff| backoff.until <= now)
        };
        let mut count = self.table.candidates().filter(dialable).count();
        while self.dialing.len() < DIALS_IN_FLIGHT_MAX
            && self.peers_connected.saturating_add(self.dialing.len()) < self.peers_target
            && count > 0
        {
            // Cannot truncate: count is at most CANDIDATES_MAX.
            let index = (self.rng.next_u64() % count as u64) as usize;
            let peer = self
                .table
                .candidates()
                .filter(dialable)
                .nth(index)
                .expect("index below the count")
                .peer;
            count -= 1;
            let candidate = self.table.remove_candidate(&peer).expect("just found");
            self.dialing
                .insert(peer, (candidate.addr, now + DIAL_TIMEOUT));
            self.counters.dials += 1;
            self.dials_out.push_back(Dial {
                peer,
                addr: candidate.addr,
            });
        }
        self.arm_stranded_retry(now);
    }

    /// Whether the node has no peer and nothing in flight that could bring
    /// one, yet knows someone to try: bootnodes, table entries (peers it
    /// met before) or candidates.
    fn is_stranded(&self) -> bool {
        self.peers_connected == 0
            && self.dialing.is_empty()
            && self.lookups.is_empty()
            && (!self.bootnodes.is_empty()
                || !self.table.is_empty()
                || self.table.candidate_count() > 0)
    }

    /// A stranded node would otherwise wait for its next refresh (30 s
    /// below target) to try its bootnodes again, and a newcomer refused
    /// by full bootnodes has nobody else: bring that refresh forward to
    /// [`STRANDED_RETRY_BASE`] doubled per try in a row (up to
    /// [`STRANDED_RETRY_MAX`]), plus a seeded jitter of up to as much
    /// again so that newcomers refused together spread out.
    fn arm_stranded_retry(&mut self, now: Instant) {
        if self.stranded_retry_armed || !self.is_stranded() {
            return;
        }
        let mut wait = STRANDED_RETRY_BASE;
        for _ in 0..self.stranded_retries {
            if wait >= STRANDED_RETRY_MAX {
                break;
            }
            wait *= 2;
        }
        let wait = wait.min(STRANDED_RETRY_MAX);
        // Cannot truncate: the wait is at most STRANDED_RETRY_MAX (8 s).
        let wait_micros = wait.as_micros() as u64;
        let jitter =
            crate::time::Duration::from_micros(self.retry_rng.next_u64() % (wait_micros + 1));
        // Bootnodes whose dials failed are not hammered: with an empty
        // table the retry waits until one of them may be dialled again.
        let bootnodes_free = self
            .bootnodes
            .values()
            .map(|addr| self.dial_backoff_until(now, addr).unwrap_or(now))
            .min();
        let mut at = now + wait + jitter;
        if self.table.is_empty() && self.table.candidate_count() == 0 {
            at = at.max(bootnodes_free.unwrap_or(now));
        }
        if at < self.next_refresh {
            self.next_refresh = at;
            self.stranded_retries = self.stranded_retries.saturating_add(1);
            self.counters.stranded_retries += 1;
        }
        // Armed even when the refresh is due sooner anyway: that refresh is
        // the retry, and it disarms.
        self.stranded_retry_armed = true;
    }

    /// Checks every invariant; for tests and fuzzing.
    pub fn assert_invariants(&self) {
        self.table.assert_invariants();
        assert!(self.lookups.len() <= LOOKUPS_MAX);
        assert!(self.dialing.len() <= DIALS_IN_FLIGHT_MAX);
        assert!(self.backoff.len() <= DIAL_BACKOFF_ADDRESSES_MAX);
        for lookup in self.lookups.values() {
            lookup.assert_invariants();
        }
        for (lookup_id, peer) in self.queries.values() {
            let lookup = self.lookups.get(lookup_id).expect("a query's lookup runs");
            assert!(lookup.in_flight().contains(peer));
        }
        let in_flight: usize = self.lookups.values().map(|l| l.in_flight().len()).sum();
        assert_eq!(in_flight, self.queries.len());
        assert!(self.bootnodes.len() <= BOOTNODES_MAX);
    }
}

impl Machine for Discovery {
    fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.table.handle_timeout(now);
        let expired: Vec<SocketAddr> = self
            .dialing
            .values()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(addr, _)| *addr)
            .collect();
        self.dialing.retain(|_, (_, deadline)| *deadline > now);
        for addr in expired {
            self.note_dial_failure(now, addr);
        }
        let mut expired = Vec::new();
        for (&lookup_id, lookup) in &mut self.lookups {
            for peer in lookup.handle_timeout(now) {
                expired.push((lookup_id, peer));
            }
        }
        for (lookup_id, peer) in expired {
            self.queries
                .retain(|_, (owner, to)| !(*owner == lookup_id && *to == peer));
            self.counters.queries_failed += 1;
        }
        if now >= self.next_refresh {
            self.refresh(now);
        }
        self.drive(now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let lookups = self.lookups.values().map(Lookup::next_deadline);
        let dials = self.dialing.values().map(|(_, deadline)| *deadline);
        let table = self.table.next_deadline();
        lookups
            .chain(dials)
            .chain(table)
            .chain(self.backoff_deadline())
            .chain(std::iter::once(self.next_refresh))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::time::Duration;

    #[test]
    fn remembered_failures_stay_bounded_and_forget_the_soonest_first() {
        let local = Record::sign(
            &Identity::from_seed(1),
            9,
            1,
            &[SocketAddr::from(([198, 51, 100, 1], 9000))],
        );
        let config = Config {
            local,
            table: TableConfig::default(),
        };
        let mut discovery = Discovery::new(config, [0; 32], Instant::ZERO);
        let addr = |index: usize| {
            SocketAddr::from(([203, 0, (index / 250) as u8, 1], 9000 + index as u16 % 250))
        };
        for index in 0..DIAL_BACKOFF_ADDRESSES_MAX + 100 {
            // Later failures wait until later: the first ones go first.
            let now = Instant::ZERO + Duration::from_millis(index as u64);
            discovery.note_dial_failure(now, addr(index));
            discovery.assert_invariants();
        }
        let now = Instant::ZERO + Duration::from_secs(1);
        assert_eq!(discovery.backoff.len(), DIAL_BACKOFF_ADDRESSES_MAX);
        assert_eq!(discovery.dial_backoff_until(now, &addr(99)), None);
        assert!(discovery.dial_backoff_until(now, &addr(100)).is_some());
        assert!(discovery
            .dial_backoff_until(now, &addr(DIAL_BACKOFF_ADDRESSES_MAX + 99))
            .is_some());
    }
}
