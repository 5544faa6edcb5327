//! The routing table: peers we completed a handshake with, in 256 buckets
//! of 16 by XOR distance from our key, and the candidates we have heard of
//! but not met.
//!
//! # Design
//! An entry enters only through [`RoutingTable::insert_verified`], which the
//! node calls after a handshake proved the peer's key and the peer gave us
//! its own signed record. Records that other peers relay (FIND_NODE
//! answers) and bootnodes become [`Candidate`]s: dialled, never answered to
//! others, never counted as entries, until a handshake makes them entries.
//!
//! A full bucket does not evict (Kademlia, discv5): its least-recently-seen
//! entry is named in a [`LivenessCheck`] and the newcomer waits as the
//! bucket's one pending entry. A failed check evicts the old entry and lets
//! the newcomer in; a successful one, or no verdict within
//! [`LIVENESS_CHECK_TIMEOUT`], keeps the old entry and drops the newcomer.
//! Long-lived entries are preferred: an attacker cannot push out a live
//! honest peer by arriving.
//!
//! ```text
//!  insert_verified ─► present? ─► Updated (newer record kept, seen now)
//!        │ room, limits hold ─► Added
//!        │ bucket full, no pending ─► Pending{check: least recently seen}
//!        ▼                                 │ handle_liveness(alive) ─► newcomer dropped
//!      Refused(reason)                     │ handle_liveness(dead)  ─► old out, newcomer in
//!                                          └ LIVENESS_CHECK_TIMEOUT ─► newcomer dropped
//! ```
//!
//! # Security
//! *Provided*: at most [`SUBNET_ENTRIES_PER_BUCKET_MAX`] entries per IPv4
//! /24 or IPv6 /56 in one bucket and [`NETGROUP_ENTRIES_PER_TABLE_MAX`] per
//! IPv4 /16 or IPv6 /56 in the table, counted by the address the peer
//! connected from (which it cannot choose freely), loopback exempt; no
//! entry without a handshake; candidates bounded in all and per network
//! group, oldest evicted; addresses filtered by `address.rs`'s policy.
//! *Not provided*: protection against an attacker with addresses in many
//! network groups beyond these caps; liveness itself (the node's Ping).
//!
//! # Limits
//! [`BUCKETS`] × [`BUCKET_ENTRIES_MAX`] entries, one pending per bucket,
//! [`CANDIDATES_MAX`] candidates, [`CANDIDATES_PER_NETGROUP_MAX`] per group.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::identity::PeerId;
use crate::time::Instant;

use super::address::{
    check_address, first_dialable, is_exempt_from_subnet_limits, AddressRefusal, NetGroup, Subnet,
};
use super::key::{Distance, Key};
use super::limits::{
    BUCKETS, BUCKET_ENTRIES_MAX, CANDIDATES_MAX, CANDIDATES_PER_NETGROUP_MAX,
    LIVENESS_CHECK_TIMEOUT, NETGROUP_ENTRIES_PER_TABLE_MAX, SUBNET_ENTRIES_PER_BUCKET_MAX,
};
use super::record::Record;

/// The table's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Accept loopback, private and link-local addresses (local devnets).
    pub allow_private: bool,
    /// Apply the per-subnet and per-network-group limits. Off only where
    /// every peer shares one private network on purpose (a lab).
    pub subnet_limits: bool,
}

impl Default for TableConfig {
    fn default() -> TableConfig {
        TableConfig {
            allow_private: false,
            subnet_limits: true,
        }
    }
}

/// A peer in the table: met through a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its newest record.
    pub record: Record,
    /// The record's first address the policy accepts: where to dial it.
    pub addr: SocketAddr,
    /// The address it connected from when it entered, by which the subnet
    /// limits count it.
    pub ip: IpAddr,
    /// When it last proved alive (entered, answered, passed a check).
    pub last_seen: Instant,
    key: Key,
}

/// A peer heard of but not met: dialled before it can become an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Who.
    pub peer: PeerId,
    /// Where to dial it.
    pub addr: SocketAddr,
    /// Its record, if it came from one (bootnodes come without).
    pub record: Option<Record>,
    order: u64,
}

/// Check that the entry `peer` is alive (the node sends it a Ping, dialling
/// it first if it is not connected) and report with
/// [`RoutingTable::handle_liveness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessCheck {
    /// The least-recently-seen entry of a full bucket.
    pub peer: PeerId,
    /// Its address.
    pub addr: SocketAddr,
}

/// What [`RoutingTable::insert_verified`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A new entry.
    Added,
    /// Already an entry: seen now, its record replaced if the new one is newer.
    Updated,
    /// The bucket is full: the newcomer waits on a liveness check of `check`.
    Pending {
        /// The entry being checked.
        check: PeerId,
    },
    /// Not entered.
    Refused(InsertRefusal),
}

/// Why a verified peer did not enter the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertRefusal {
    /// It is us.
    Ourselves,
    /// The record is not the verified peer's.
    WrongPeer,
    /// None of its record's addresses is acceptable.
    NoDialableAddress,
    /// Its bucket holds [`SUBNET_ENTRIES_PER_BUCKET_MAX`] from its /24 (/56).
    SubnetFullInBucket,
    /// The table holds [`NETGROUP_ENTRIES_PER_TABLE_MAX`] from its /16 (/56).
    NetGroupFullInTable,
    /// Its bucket is full and already has a newcomer waiting.
    BucketBusy,
}

#[derive(Clone, Debug)]
struct Pending {
    newcomer: Entry,
    check: PeerId,
    deadline: Instant,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    entries: Vec<Entry>,
    pending: Option<Pending>,
}

/// The routing table and the candidate set. See the module doc.
#[derive(Debug)]
pub struct RoutingTable {
    local: PeerId,
    local_key: Key,
    config: TableConfig,
    buckets: Vec<Bucket>,
    /// Which bucket each entry is in.
    bucket_of: BTreeMap<PeerId, usize>,
    /// Entries per network group (exempt addresses not counted).
    netgroups: BTreeMap<NetGroup, usize>,
    candidates: BTreeMap<PeerId, Candidate>,
    /// Candidates by arrival, oldest first, for eviction.
    candidates_by_age: BTreeMap<u64, PeerId>,
    candidate_netgroups: BTreeMap<NetGroup, usize>,
    next_candidate_order: u64,
    checks: VecDeque<LivenessCheck>,
}

impl RoutingTable {
    /// An empty table around `local`, our own id.
    pub fn new(local: PeerId, config: TableConfig) -> RoutingTable {
        RoutingTable {
            local,
            local_key: Key::of_peer(&local),
            config,
            buckets: vec![Bucket::default(); BUCKETS],
            bucket_of: BTreeMap::new(),
            netgroups: BTreeMap::new(),
            candidates: BTreeMap::new(),
            candidates_by_age: BTreeMap::new(),
            candidate_netgroups: BTreeMap::new(),
            next_candidate_order: 0,
            checks: VecDeque::new(),
        }
    }

    /// The policy.
    pub fn config(&self) -> TableConfig {
        self.config
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.bucket_of.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.bucket_of.is_empty()
    }

    /// The entry `peer`, if it is one.
    pub fn entry(&self, peer: &PeerId) -> Option<&Entry> {
        let bucket = *self.bucket_of.get(peer)?;
        self.buckets[bucket]
            .entries
            .iter()
            .find(|entry| entry.record.peer() == *peer)
    }

    /// Every entry, bucket by bucket (nearest bucket first).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|bucket| bucket.entries.iter())
    }

    /// Entries in bucket `index` (0..256).
    pub fn bucket_len(&self, index: usize) -> usize {
        self.buckets[index].entries.len()
    }

    /// The newcomer waiting in bucket `index`, if any.
    pub fn pending_in_bucket(&self, index: usize) -> Option<PeerId> {
        self.buckets[index]
            .pending
            .as_ref()
            .map(|pending| pending.newcomer.record.peer())
    }

    /// The bucket `peer` belongs to, or `None` for ourselves.
    pub fn bucket_index(&self, peer: &PeerId) -> Option<usize> {
        self.local_key.distance(&Key::of_peer(peer)).bucket()
    }

    /// The candidate `peer`, if it is one.
    pub fn candidate(&self, peer: &PeerId) -> Option<&Candidate> {
        self.candidates.get(peer)
    }

    /// The candidates waiting, in peer order.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.values()
    }

    /// Candidates waiting.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Up to `count` entries closest to `target`, nearest first; equal
    /// distances (only possible for equal keys) by id bytes. Never a candidate.
    pub fn closest(&self, target: &Key, count: usize) -> Vec<&Entry> {
        let mut sorted: Vec<(Distance, PeerId, &Entry)> = self
            .entries()
            .map(|entry| (entry.key.distance(target), entry.record.peer(), entry))
            .collect();
        sorted.sort_by_key(|(distance, peer, _)| (*distance, *peer));
        sorted
            .into_iter()
            .take(count)
            .map(|(_, _, entry)| entry)
            .collect()
    }

    /// A peer completed a handshake from `ip` and gave `record` as its own
    /// over that authenticated channel; `peer` is the id the handshake proved.
    pub fn insert_verified(
        &mut self,
        now: Instant,
        peer: PeerId,
        record: Record,
        ip: IpAddr,
    ) -> Insert {
        if record.peer() != peer {
            return Insert::Refused(InsertRefusal::WrongPeer);
        }
        let Some(bucket_index) = self.bucket_index(&peer) else {
            return Insert::Refused(InsertRefusal::Ourselves);
        };
        let allow_private = self.config.allow_private;
        self.remove_candidate(&peer);
        if let Some(entry) = self.entry_mut(&peer) {
            entry.last_seen = now;
            if record.supersedes(&entry.record) {
                if let Some(addr) = first_dialable(record.addresses(), allow_private) {
                    entry.addr = addr;
                    entry.record = record;
                }
            }
            return Insert::Updated;
        }
        let Some(addr) = first_dialable(record.addresses(), allow_private) else {
            return Insert::Refused(InsertRefusal::NoDialableAddress);
        };
        let newcomer = Entry {
            key: Key::of_peer(&peer),
            record,
            addr,
            ip,
            last_seen: now,
        };
        if let Err(refusal) = self.check_limits(bucket_index, ip) {
            return Insert::Refused(refusal);
        }
        let bucket = &mut self.buckets[bucket_index];
        if bucket.entries.len() < BUCKET_ENTRIES_MAX {
            self.add_entry(bucket_index, newcomer);
            return Insert::Added;
        }
        if bucket.pending.is_some() {
            return Insert::Refused(InsertRefusal::BucketBusy);
        }
        let oldest = bucket
            .entries
            .iter()
            .min_by_key(|entry| (entry.last_seen, entry.record.peer()))
            .expect("a full bucket has entries");
        let check = LivenessCheck {
            peer: oldest.record.peer(),
            addr: oldest.addr,
        };
        bucket.pending = Some(Pending {
            newcomer,
            check: check.peer,
            deadline: now + LIVENESS_CHECK_TIMEOUT,
        });
        self.checks.push_back(check);
        Insert::Pending { check: check.peer }
    }

    /// The verdict on a [`LivenessCheck`]. Alive: the entry stays, seen now,
    /// and the newcomer is dropped. Dead: the entry is evicted and the
    /// newcomer takes its place if the limits still allow. A verdict on a
    /// peer no check is pending for only refreshes an alive entry.
    pub fn handle_liveness(&mut self, now: Instant, peer: PeerId, alive: bool) {
        let Some(&bucket_index) = self.bucket_of.get(&peer) else {
            return;
        };
        let checked = self.buckets[bucket_index]
            .pending
            .as_ref()
            .is_some_and(|pending| pending.check == peer);
        if alive {
            if let Some(entry) = self.entry_mut(&peer) {
                entry.last_seen = now;
            }
            if checked {
                self.buckets[bucket_index].pending = None;
            }
            return;
        }
        if checked {
            // Evicts the entry and lets the waiting newcomer in.
            self.remove(&peer);
        }
    }

    /// `peer` answered us: it is alive now.
    pub fn handle_seen(&mut self, now: Instant, peer: &PeerId) {
        if let Some(entry) = self.entry_mut(peer) {
            entry.last_seen = now;
        }
    }

    /// Removes the entry `peer` (a failed liveness check, a ban, a proven
    /// liar). If its bucket's newcomer waits on a check of `peer`, the
    /// newcomer takes the place, if the limits still allow.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Entry> {
        let bucket_index = self.bucket_of.remove(peer)?;
        let bucket = &mut self.buckets[bucket_index];
        let position = bucket
            .entries
            .iter()
            .position(|entry| entry.record.peer() == *peer)
            .expect("bucket_of names the bucket holding the entry");
        let entry = bucket.entries.swap_remove(position);
        if self.config.subnet_limits && !is_exempt_from_subnet_limits(entry.ip) {
            let group = NetGroup::of(entry.ip);
            let count = self
                .netgroups
                .get_mut(&group)
                .expect("every counted entry has a group count");
            *count -= 1;
            if *count == 0 {
                self.netgroups.remove(&group);
            }
        }
        let bucket = &mut self.buckets[bucket_index];
        if bucket
            .pending
            .as_ref()
            .is_some_and(|pending| pending.check == *peer)
        {
            let pending = bucket.pending.take().expect("checked just above");
            if self.check_limits(bucket_index, pending.newcomer.ip).is_ok() {
                self.add_entry(bucket_index, pending.newcomer);
            }
        }
        Some(entry)
    }

    /// Drops the newcomers whose liveness check got no verdict in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        for bucket in &mut self.buckets {
            if bucket
                .pending
                .as_ref()
                .is_some_and(|pending| pending.deadline <= now)
            {
                bucket.pending = None;
            }
        }
    }

    /// The earliest deadline of a pending check.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.buckets
            .iter()
            .filter_map(|bucket| bucket.pending.as_ref().map(|pending| pending.deadline))
            .min()
    }

    /// The next liveness check to make.
    pub fn poll_liveness_check(&mut self) -> Option<LivenessCheck> {
        self.checks.pop_front()
    }

    /// Remembers `record`, relayed by someone, as a candidate to dial; an
    /// entry's record is replaced instead if this one is newer. Returns
    /// whether it is a new candidate.
    pub fn add_candidate(&mut self, record: Record) -> bool {
        let peer = record.peer();
        if peer == self.local {
            return false;
        }
        let allow_private = self.config.allow_private;
        if let Some(entry) = self.entry_mut(&peer) {
            if record.supersedes(&entry.record) {
                if let Some(addr) = first_dialable(record.addresses(), allow_private) {
                    entry.addr = addr;
                    entry.record = record;
                }
            }
            return false;
        }
        let Some(addr) = first_dialable(record.addresses(), allow_private) else {
            return false;
        };
        if let Some(candidate) = self.candidates.get_mut(&peer) {
            let newer = candidate
                .record
                .as_ref()
                .is_none_or(|old| record.supersedes(old));
            if newer && NetGroup::of(candidate.addr.ip()) == NetGroup::of(addr.ip()) {
                candidate.addr = addr;
                candidate.record = Some(record);
            }
            return false;
        }
        self.insert_candidate(peer, addr, Some(record))
    }

    /// Remembers a bootnode (no record: an operator named it) as a candidate.
    /// Only port 0 and non-unicast addresses are refused: the operator chose it.
    pub fn add_bootnode(&mut self, peer: PeerId, addr: SocketAddr) -> Result<bool, AddressRefusal> {
        check_address(&addr, true)?;
        if peer == self.local
            || self.bucket_of.contains_key(&peer)
            || self.candidates.contains_key(&peer)
        {
            return Ok(false);
        }
        Ok(self.insert_candidate(peer, addr, None))
    }

    /// Takes the candidate `peer` out (to dial it, or because it failed).
    pub fn remove_candidate(&mut self, peer: &PeerId) -> Option<Candidate> {
        let candidate = self.candidates.remove(peer)?;
        self.candidates_by_age.remove(&candidate.order);
        let group = NetGroup::of(candidate.addr.ip());
        let count = self
            .candidate_netgroups
            .get_mut(&group)
            .expect("every candidate has a group count");
        *count -= 1;
        if *count == 0 {
            self.candidate_netgroups.remove(&group);
        }
        Some(candidate)
    }

    /// The `index`-th candidate in id order (for a seeded random pick).
    pub fn nth_candidate(&self, index: usize) -> Option<&Candidate> {
        self.candidates.values().nth(index)
    }

    /// Up to `count` candidates closest to `target` (to seed a lookup when
    /// the table has too few entries).
    pub fn closest_candidates(&self, target: &Key, count: usize) -> Vec<&Candidate> {
        let mut sorted: Vec<(Distance, &Candidate)> = self
            .candidates
            .values()
            .map(|candidate| (Key::of_peer(&candidate.peer).distance(target), candidate))
            .collect();
        sorted.sort_by_key(|(distance, candidate)| (*distance, candidate.peer));
        sorted
            .into_iter()
            .take(count)
            .map(|(_, candidate)| candidate)
            .collect()
    }

    fn insert_candidate(&mut self, peer: PeerId, addr: SocketAddr, record: Option<Record>) -> bool {
        let group = NetGroup::of(addr.ip());
        let group_count = self.candidate_netgroups.get(&group).copied().unwrap_or(0);
        if self.config.subnet_limits
            && !is_exempt_from_subnet_limits(addr.ip())
            && group_count >= CANDIDATES_PER_NETGROUP_MAX
        {
            return false;
        }
        if self.candidates.len() >= CANDIDATES_MAX {
            let (_, oldest) = self
                .candidates_by_age
                .first_key_value()
                .expect("a full candidate set has an oldest");
            let oldest = *oldest;
            self.remove_candidate(&oldest);
        }
        let order = self.next_candidate_order;
        self.next_candidate_order += 1;
        self.candidates_by_age.insert(order, peer);
        *self.candidate_netgroups.entry(group).or_insert(0) += 1;
        self.candidates.insert(
            peer,
            Candidate {
                peer,
                addr,
                record,
                order,
            },
        );
        true
    }

    fn entry_mut(&mut self, peer: &PeerId) -> Option<&mut Entry> {
        let bucket = *self.bucket_of.get(peer)?;
        self.buckets[bucket]
            .entries
            .iter_mut()
            .find(|entry| entry.record.peer() == *peer)
    }

    fn check_limits(&self, bucket_index: usize, ip: IpAddr) -> Result<(), InsertRefusal> {
        if !self.config.subnet_limits || is_exempt_from_subnet_limits(ip) {
            return Ok(());
        }
        let subnet = Subnet::of(ip);
        let in_bucket = self.buckets[bucket_index]
            .entries
            .iter()
            .filter(|entry| Subnet::of(entry.ip) == subnet)
            .count();
        if in_bucket >= SUBNET_ENTRIES_PER_BUCKET_MAX {
            return Err(InsertRefusal::SubnetFullInBucket);
        }
        let in_table = self.netgroups.get(&NetGroup::of(ip)).copied().unwrap_or(0);
        if in_table >= NETGROUP_ENTRIES_PER_TABLE_MAX {
            return Err(InsertRefusal::NetGroupFullInTable);
        }
        Ok(())
    }

    fn add_entry(&mut self, bucket_index: usize, entry: Entry) {
        self.remove_candidate(&entry.record.peer());
        let bucket = &mut self.buckets[bucket_index];
        assert!(
            bucket.entries.len() < BUCKET_ENTRIES_MAX,
            "bucket overfilled"
        );
        if self.config.subnet_limits && !is_exempt_from_subnet_limits(entry.ip) {
            *self.netgroups.entry(NetGroup::of(entry.ip)).or_insert(0) += 1;
        }
        let previous = self.bucket_of.insert(entry.record.peer(), bucket_index);
        assert!(previous.is_none(), "an entry is added once");
        bucket.entries.push(entry);
    }

    /// Checks every invariant; for tests and fuzzing.
    pub fn assert_invariants(&self) {
        let mut groups: BTreeMap<NetGroup, usize> = BTreeMap::new();
        let mut count = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            assert!(bucket.entries.len() <= BUCKET_ENTRIES_MAX);
            if bucket.pending.is_some() {
                assert_eq!(
                    bucket.entries.len(),
                    BUCKET_ENTRIES_MAX,
                    "pending only when full"
                );
            }
            let mut subnets: BTreeMap<Subnet, usize> = BTreeMap::new();
            for entry in &bucket.entries {
                count += 1;
                let peer = entry.record.peer();
                assert_eq!(self.bucket_of.get(&peer), Some(&index));
                assert_eq!(self.bucket_index(&peer), Some(index));
                assert!(!self.candidates.contains_key(&peer), "entry and candidate");
                if self.config.subnet_limits && !is_exempt_from_subnet_limits(entry.ip) {
                    *subnets.entry(Subnet::of(entry.ip)).or_insert(0) += 1;
                    *groups.entry(NetGroup::of(entry.ip)).or_insert(0) += 1;
                }
            }
            assert!(subnets
                .values()
                .all(|&n| n <= SUBNET_ENTRIES_PER_BUCKET_MAX));
        }
        assert_eq!(count, self.bucket_of.len());
        assert_eq!(groups, self.netgroups);
        assert!(groups
            .values()
            .all(|&n| n <= NETGROUP_ENTRIES_PER_TABLE_MAX));
        assert!(self.candidates.len() <= CANDIDATES_MAX);
        assert_eq!(self.candidates.len(), self.candidates_by_age.len());
        let candidate_total: usize = self.candidate_netgroups.values().sum();
        assert_eq!(candidate_total, self.candidates.len());
        assert!(self.checks.len() <= BUCKETS);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::Identity;

    const NETWORK: u64 = 1;

    fn local() -> PeerId {
        Identity::from_seed(0).peer_id()
    }

    fn table() -> RoutingTable {
        RoutingTable::new(local(), TableConfig::default())
    }

    fn record(seed: u64, ip: IpAddr) -> Record {
        Record::sign(
            &Identity::from_seed(seed),
            NETWORK,
            1,
            &[SocketAddr::new(ip, 9000)],
        )
    }

    /// A public IPv4 address unique to `n`, each in its own /16.
    fn unique_ip(n: u64) -> IpAddr {
        IpAddr::from([20 + (n / 250) as u8, (n % 250) as u8, 1, 1])
    }

    /// Seeds (from 1 up) whose ids fall in `bucket` of `table`.
    fn seeds_in_bucket(table: &RoutingTable, bucket: usize, count: usize) -> Vec<u64> {
        (1..)
            .filter(|&seed| {
                table.bucket_index(&Identity::from_seed(seed).peer_id()) == Some(bucket)
            })
            .take(count)
            .collect()
    }

    fn insert(table: &mut RoutingTable, now: Instant, seed: u64, ip: IpAddr) -> Insert {
        let record = record(seed, ip);
        table.insert_verified(now, record.peer(), record, ip)
    }

    #[test]
    fn a_bucket_holds_at_most_k_and_a_full_one_asks_for_a_check() {
        let mut table = table();
        let seeds = seeds_in_bucket(&table, 255, BUCKET_ENTRIES_MAX + 2);
        for (n, &seed) in seeds.iter().take(BUCKET_ENTRIES_MAX).enumerate() {
            let now = Instant::from_micros(n as u64);
            assert_eq!(
                insert(&mut table, now, seed, unique_ip(seed)),
                Insert::Added
            );
        }
        assert_eq!(table.bucket_len(255), BUCKET_ENTRIES_MAX);
        let oldest = Identity::from_seed(seeds[0]).peer_id();
        let newcomer = seeds[BUCKET_ENTRIES_MAX];
        let now = Instant::from_micros(100);
        assert_eq!(
            insert(&mut table, now, newcomer, unique_ip(newcomer)),
            Insert::Pending { check: oldest }
        );
        assert_eq!(table.bucket_len(255), BUCKET_ENTRIES_MAX, "no eviction yet");
        assert!(table.entry(&oldest).is_some());
        let check = table.poll_liveness_check().expect("a check is asked for");
        assert_eq!(check.peer, oldest);
        assert_eq!(table.poll_liveness_check(), None);
        // A second newcomer while one waits is refused, not queued.
        let second = seeds[BUCKET_ENTRIES_MAX + 1];
        assert_eq!(
            insert(&mut table, now, second, unique_ip(second)),
            Insert::Refused(InsertRefusal::BucketBusy)
        );
        table.assert_invariants();
    }

    #[test]
    fn eviction_happens_only_after_a_failed_check() {
        let mut table = table();
        let seeds = seeds_in_bucket(&table, 255, BUCKET_ENTRIES_MAX + 3);
        for (n, &seed) in seeds.iter().take(BUCKET_ENTRIES_MAX).enumerate() {
            insert(
                &mut table,
                Instant::from_micros(n as u64),
                seed,
                unique_ip(seed),
            );
        }
        let oldest = Identity::from_seed(seeds[0]).peer_id();
        let first = Identity::from_seed(seeds[BUCKET_ENTRIES_MAX]).peer_id();
        let now = Instant::from_micros(1_000);
        insert(
            &mut table,
            now,
            seeds[BUCKET_ENTRIES_MAX],
            unique_ip(seeds[BUCKET_ENTRIES_MAX]),
        );

        // Alive: the old entry stays, the newcomer is dropped.
        table.handle_liveness(now, oldest, true);
        assert!(table.entry(&oldest).is_some());
        assert!(table.entry(&first).is_none());
        assert_eq!(table.pending_in_bucket(255), None);

        // The next least-recently-seen entry is checked and fails: evicted,
        // and the newcomer takes its place.
        let second_oldest = Identity::from_seed(seeds[1]).peer_id();
        let newcomer_seed = seeds[BUCKET_ENTRIES_MAX + 1];
        let newcomer = Identity::from_seed(newcomer_seed).peer_id();
        assert_eq!(
            insert(&mut table, now, newcomer_seed, unique_ip(newcomer_seed)),
            Insert::Pending {
                check: second_oldest
            }
        );
        // A verdict on another peer changes nothing.
        table.handle_liveness(now, oldest, false);
        assert!(table.entry(&oldest).is_some(), "no check was pending on it");
        table.handle_liveness(now, second_oldest, false);
        assert!(table.entry(&second_oldest).is_none());
        assert!(table.entry(&newcomer).is_some());
        assert_eq!(table.bucket_len(255), BUCKET_ENTRIES_MAX);
        table.assert_invariants();

        // No verdict in time: the old entry stays and the newcomer is dropped.
        let late_seed = seeds[BUCKET_ENTRIES_MAX + 2];
        let late = Identity::from_seed(late_seed).peer_id();
        let Insert::Pending { check } = insert(&mut table, now, late_seed, unique_ip(late_seed))
        else {
            panic!("the bucket is full");
        };
        assert_eq!(table.next_deadline(), Some(now + LIVENESS_CHECK_TIMEOUT));
        table.handle_timeout(now + (LIVENESS_CHECK_TIMEOUT - Duration::from_micros(1)));
        assert_eq!(table.pending_in_bucket(255), Some(late));
        table.handle_timeout(now + LIVENESS_CHECK_TIMEOUT);
        assert_eq!(table.pending_in_bucket(255), None);
        table.handle_liveness(now + LIVENESS_CHECK_TIMEOUT, check, false);
        assert!(
            table.entry(&check).is_some(),
            "a late verdict evicts nothing"
        );
        assert!(table.entry(&late).is_none());
        table.assert_invariants();
    }

    #[test]
    fn at_most_two_per_subnet_in_a_bucket() {
        let mut table = table();
        let seeds = seeds_in_bucket(&table, 255, 4);
        let now = Instant::ZERO;
        let ip = |last: u8| IpAddr::from([198, 51, 100, last]);
        assert_eq!(insert(&mut table, now, seeds[0], ip(1)), Insert::Added);
        assert_eq!(insert(&mut table, now, seeds[1], ip(2)), Insert::Added);
        assert_eq!(
            insert(&mut table, now, seeds[2], ip(3)),
            Insert::Refused(InsertRefusal::SubnetFullInBucket)
        );
        // Another /24 in the same /16 is another subnet.
        assert_eq!(
            insert(&mut table, now, seeds[3], IpAddr::from([198, 51, 101, 1])),
            Insert::Added
        );
        // Counted by the address it connected from, not what its record says.
        let other = seeds_in_bucket(&table, 254, 1)[0];
        let record = record(other, unique_ip(other));
        assert_eq!(
            table.insert_verified(now, record.peer(), record, ip(4)),
            Insert::Added,
            "another bucket has its own count"
        );
        table.assert_invariants();
    }

    #[test]
    fn at_most_ten_per_network_group_in_the_table() {
        let mut table = table();
        let now = Instant::ZERO;
        let mut added = 0;
        let mut refused = 0;
        // Each peer in its own /24 of one /16, so only the table-wide limit bites.
        for seed in 1..200u64 {
            let ip = IpAddr::from([45, 33, seed as u8, 7]);
            match insert(&mut table, now, seed, ip) {
                Insert::Added => added += 1,
                Insert::Refused(InsertRefusal::NetGroupFullInTable) => refused += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert_eq!(added, NETGROUP_ENTRIES_PER_TABLE_MAX);
        assert_eq!(refused, 199 - NETGROUP_ENTRIES_PER_TABLE_MAX);
        // Another group still gets in, and a departure frees a place.
        assert_eq!(insert(&mut table, now, 500, unique_ip(500)), Insert::Added);
        let member = table
            .entries()
            .find(|entry| NetGroup::of(entry.ip) == NetGroup::V4([45, 33]))
            .map(|entry| entry.record.peer())
            .expect("ten members");
        table.remove(&member);
        assert_eq!(
            insert(&mut table, now, 501, IpAddr::from([45, 33, 250, 1])),
            Insert::Added
        );
        table.assert_invariants();
    }

    #[test]
    fn loopback_is_exempt_and_limits_can_be_turned_off() {
        let config = TableConfig {
            allow_private: true,
            subnet_limits: true,
        };
        let mut table = RoutingTable::new(local(), config);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        for seed in 1..40u64 {
            assert!(matches!(
                insert(&mut table, Instant::ZERO, seed, loopback),
                Insert::Added | Insert::Pending { .. }
            ));
        }
        assert!(table.len() > NETGROUP_ENTRIES_PER_TABLE_MAX);
        let mut open = RoutingTable::new(
            local(),
            TableConfig {
                allow_private: false,
                subnet_limits: false,
            },
        );
        for seed in 1..40u64 {
            let ip = IpAddr::from([45, 33, 1, seed as u8]);
            assert!(matches!(
                insert(&mut open, Instant::ZERO, seed, ip),
                Insert::Added | Insert::Pending { .. }
            ));
        }
        assert!(open.len() > NETGROUP_ENTRIES_PER_TABLE_MAX);
        table.assert_invariants();
        open.assert_invariants();
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let private = IpAddr::from([192, 168, 1, 1]);
        let mut strict = table();
        assert_eq!(
            insert(&mut strict, Instant::ZERO, 1, private),
            Insert::Refused(InsertRefusal::NoDialableAddress)
        );
        assert!(!strict.add_candidate(record(2, private)));
        assert_eq!(strict.candidate_count(), 0);
        // A record with a public address after a private one is dialled there.
        let public: SocketAddr = "203.0.113.9:9000".parse().unwrap();
        let mixed = Record::sign(
            &Identity::from_seed(3),
            NETWORK,
            1,
            &[SocketAddr::new(private, 9000), public],
        );
        assert!(strict.add_candidate(mixed.clone()));
        assert_eq!(
            strict.candidate(&mixed.peer()).map(|c| c.addr),
            Some(public)
        );

        let mut lab = RoutingTable::new(
            local(),
            TableConfig {
                allow_private: true,
                subnet_limits: true,
            },
        );
        assert_eq!(insert(&mut lab, Instant::ZERO, 1, private), Insert::Added);
        assert!(lab.add_candidate(record(2, private)));
    }

    #[test]
    fn candidates_are_never_entries_before_a_handshake() {
        let mut table = table();
        let target = Key::of_peer(&local());
        for seed in 1..50u64 {
            assert!(table.add_candidate(record(seed, unique_ip(seed))));
        }
        assert_eq!(table.candidate_count(), 49);
        assert!(table.is_empty());
        assert!(table.closest(&target, 16).is_empty());
        assert_eq!(table.closest_candidates(&target, 16).len(), 16);
        // The handshake makes one an entry and no longer a candidate.
        let met = record(7, unique_ip(7));
        assert_eq!(
            table.insert_verified(Instant::ZERO, met.peer(), met.clone(), unique_ip(7)),
            Insert::Added
        );
        assert!(table.candidate(&met.peer()).is_none());
        let closest: Vec<PeerId> = table
            .closest(&target, 16)
            .iter()
            .map(|entry| entry.record.peer())
            .collect();
        assert_eq!(closest, vec![met.peer()]);
        // A relayed record of an entry does not make it a candidate again.
        assert!(!table.add_candidate(met));
        table.assert_invariants();
    }

    #[test]
    fn a_record_for_another_peer_or_ourselves_is_refused() {
        let mut table = table();
        let record = record(1, unique_ip(1));
        let other = Identity::from_seed(2).peer_id();
        assert_eq!(
            table.insert_verified(Instant::ZERO, other, record, unique_ip(1)),
            Insert::Refused(InsertRefusal::WrongPeer)
        );
        let ours = Record::sign(
            &Identity::from_seed(0),
            NETWORK,
            1,
            &[SocketAddr::new(unique_ip(0), 1)],
        );
        assert_eq!(
            table.insert_verified(Instant::ZERO, local(), ours.clone(), unique_ip(0)),
            Insert::Refused(InsertRefusal::Ourselves)
        );
        assert!(!table.add_candidate(ours));
    }

    #[test]
    fn a_newer_record_replaces_an_entry_s_an_older_one_does_not() {
        let mut table = table();
        let identity = Identity::from_seed(1);
        let first: SocketAddr = "203.0.113.1:1".parse().unwrap();
        let moved: SocketAddr = "203.0.113.1:2".parse().unwrap();
        let v5 = Record::sign(&identity, NETWORK, 5, &[first]);
        let v6 = Record::sign(&identity, NETWORK, 6, &[moved]);
        let v4 = Record::sign(&identity, NETWORK, 4, &[moved]);
        let peer = identity.peer_id();
        table.insert_verified(Instant::ZERO, peer, v5, first.ip());
        table.add_candidate(v4);
        assert_eq!(table.entry(&peer).map(|e| e.record.seq()), Some(5));
        table.add_candidate(v6);
        assert_eq!(
            table.entry(&peer).map(|e| (e.record.seq(), e.addr)),
            Some((6, moved))
        );
    }

    #[test]
    fn candidates_are_bounded_oldest_first_and_per_group() {
        let mut table = table();
        for seed in 1..=(CANDIDATES_MAX as u64 + 10) {
            table.add_candidate(record(seed, unique_ip(seed)));
        }
        assert_eq!(table.candidate_count(), CANDIDATES_MAX);
        assert!(
            table.candidate(&Identity::from_seed(1).peer_id()).is_none(),
            "oldest evicted"
        );
        assert!(table
            .candidate(&Identity::from_seed(CANDIDATES_MAX as u64 + 10).peer_id())
            .is_some());
        let mut grouped = RoutingTable::new(local(), TableConfig::default());
        let added = (1..100u64)
            .filter(|&seed| {
                grouped.add_candidate(record(seed, IpAddr::from([45, 33, seed as u8, 1])))
            })
            .count();
        assert_eq!(added, CANDIDATES_PER_NETGROUP_MAX);
        table.assert_invariants();
        grouped.assert_invariants();
    }

    #[test]
    fn closest_is_sorted_by_distance_and_deterministic() {
        let mut table = table();
        for seed in 1..300u64 {
            insert(&mut table, Instant::ZERO, seed, unique_ip(seed));
        }
        let target = Key([0x5a; 32]);
        let closest = table.closest(&target, BUCKET_ENTRIES_MAX);
        assert_eq!(closest.len(), BUCKET_ENTRIES_MAX);
        let mut all: Vec<(Distance, PeerId)> = table
            .entries()
            .map(|entry| {
                (
                    Key::of_peer(&entry.record.peer()).distance(&target),
                    entry.record.peer(),
                )
            })
            .collect();
        all.sort();
        let expected: Vec<PeerId> = all
            .iter()
            .take(BUCKET_ENTRIES_MAX)
            .map(|(_, p)| *p)
            .collect();
        let got: Vec<PeerId> = closest.iter().map(|entry| entry.record.peer()).collect();
        assert_eq!(got, expected);
        table.assert_invariants();
    }
}
