//! The node's discovery part, and the glue that connects the
//! [`crate::discovery::Discovery`] machine to the connections, the req/resp
//! part and the peer manager.
//!
//! # Design
//! `DiscoveryPart` owns the machine and what the node remembers on its
//! behalf: the queries waiting for a connection to their peer and the
//! liveness checks waiting for a dial. It reads no other part's state; the
//! `impl Node` block below is the mediation:
//! - every admitted peer is asked for its own signed record (PEER_RECORD,
//!   tag 8); a valid answer enters it in the routing table
//!   (`handle_peer_verified`), an invalid one costs what
//!   [`crate::discovery::wire::WireError::penalty`] says;
//! - peers' FIND_NODE (tag 7) and PEER_RECORD requests are answered from
//!   the table and our record;
//! - after every `handle`, the machine's queries go out as FIND_NODE
//!   requests (a query to a peer we are not connected to dials it first and
//!   waits, bounded by [`QUERIES_WAITING_MAX`]), its dials become dials
//!   (the peer manager still gates them), a liveness check is answered at
//!   once for a connected peer and by a dial otherwise;
//! - the connected count goes to the machine after each admission and
//!   departure, so it dials candidates while below the target and refreshes
//!   every 30 s until then, every 5 min after.
//!
//! The connection manager rides on it. With discovery on, the gater's
//! inbound cap is lifted to the peer cap: inbound peers are kept to their
//! share by trimming instead, so a bootnode full of inbound peers still
//! admits a newcomer long enough for its first lookup. Every
//! [`TRIM_INTERVAL`], a node
//! above its target says Goodbye(too many peers) to the excess, without
//! penalty, never going below the target and never to a static peer, one
//! range sync has requests with, or a newcomer within its
//! [`EVICTION_GRACE`]: first peers with a negative score, lowest first,
//! then inbound peers beyond [`INBOUND_SHARE_PERCENT`] of the target, then
//! the rest, inbound first. Peers in good standing (score at or above
//! zero) are taken in an order of the node's own (`trim_rank`), not by
//! score: positive scores grow with time connected, and trimming the
//! newest first left joiners of a full network with no peer at all (the
//! simulator's `churn` scenario).
//!
//! A node at `PEERS_MAX` makes room for an inbound newcomer by saying
//! Goodbye to one inbound peer past its [`EVICTION_GRACE`], or already
//! answered a FIND_NODE, or within its grace but not among the
//! [`GRACE_PROTECTED_MAX`] most recently admitted (`make_room_for_inbound`),
//! so bootnodes turn over instead of refusing, however many dial them.
//!
//! Off unless [`super::Config::discovery`] is set: a node without it refuses
//! tags 7 and 8 as unsupported and sends neither.
//!
//! # Security
//! Only peers that completed a handshake and gave their own record over
//! that channel enter the table; records relayed in FIND_NODE answers are
//! candidates. Every request rides the req/resp layer with its own quotas
//! ([`crate::discovery::limits::FIND_NODE_QUOTA`],
//! [`crate::discovery::limits::PEER_RECORD_QUOTA`]); answers are bounded by
//! the wire decoders before anything is allocated. Dials the machine asks
//! for pass the peer manager's gate and the node's dial limits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use log::{debug, info, warn};
use sha2::{Digest, Sha256};

use super::purpose::Purpose;
use super::Node;
use crate::discovery::discover::{Config as MachineConfig, QueryId};
use crate::discovery::limits::{
    FIND_NODE_QUOTA, LOOKUPS_MAX, LOOKUP_PARALLELISM, PEER_RECORD_QUOTA,
};
use crate::discovery::observed::{AddressBook, Confirmed};
use crate::discovery::record::Record;
use crate::discovery::table::TableConfig;
use crate::discovery::wire::{FindNodeRequest, PeerRecordAnswer};
use crate::discovery::Discovery;
use crate::identity::{Identity, PeerId};
use crate::io::{Direction, GoodbyeReason};
use crate::machine::Machine;
use crate::peer::{Decision, Refusal, Report, Score};
use crate::reqresp::{Answer, ProtocolId, Quota, ResultCode};
use crate::time::{Duration, Instant};

/// Queries waiting for a dial to their peer, at most: every query the
/// machine can have in flight at once.
pub const QUERIES_WAITING_MAX: usize = LOOKUPS_MAX * LOOKUP_PARALLELISM;
/// Liveness checks waiting for a dial, at most (one per full bucket is
/// pending at a time; more than this wait for the machine's retry).
pub const LIVENESS_DIALS_MAX: usize = 16;

/// How often the connection manager trims peers above the target: go-libp2p's
/// connection manager's silence period (10 s). Lighthouse's 30 s heartbeat
/// was measured too: in the simulator's `discovery` scenario (60 nodes, 3
/// bootnodes) a newcomer then waits a median 9-20 s for a full bootnode to
/// make room, against under 1 s at 10 s. It trims only above the target,
/// so a settled node is not churned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);
/// Inbound peers kept when trimming, as a share of the target: 60 %, the
/// gater's inbound share of `PEERS_MAX`, so dials of our own keep room.
pub const INBOUND_SHARE_PERCENT: usize = 60;

/// A peer admitted this recently is never evicted to make room for a
/// newcomer, unless we have answered one of its FIND_NODE requests: long
/// enough for its record exchange and its first lookup's answers (a few
/// round trips). The answer ends the grace because it is what a newcomer
/// at a full bootnode came for; keeping it 5 s more caps the bootnode's
/// turnover at its inbound slots per 5 s. Measured in the simulator's
/// `discovery` scenario: a full bootnode that refused a newcomer held
/// about 25 outbound peers (never evicted) and 25 inbound ones, every one
/// within its grace; at 1,000 nodes each bootnode refused about 2,750
/// handshakes. A peer that never asks keeps the full grace, no longer
/// than before.
pub const EVICTION_GRACE: Duration = Duration::from_secs(5);

/// At most this many inbound peers, the most recently admitted, are kept
/// by their [`EVICTION_GRACE`] from making room for a newcomer; an older
/// one within its grace may go. Without the cap a node that many dial at
/// once holds only peers within their grace and refuses everyone: in the
/// simulator's `discovery` at 1,000 nodes (seed 2), each bootnode drew
/// about 15 handshakes a second (lookups, candidate dials, liveness checks)
/// into 38 inbound slots all within their grace, and refused two late
/// newcomers at every try for a minute, so they never met anyone. Eight
/// arrivals take about half a second even then, several round trips: time
/// for a newcomer's record exchange and its first FIND_NODE.
pub const GRACE_PROTECTED_MAX: usize = 8;

/// How a node runs discovery.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveryConfig {
    /// Where peers can dial us, signed into our record (0 to
    /// [`crate::discovery::limits::ADDRESSES_PER_RECORD_MAX`]): the listen
    /// address when it is routable, or the operator's `--advertise`. Never
    /// an address we were not told. With none, nobody dials us until we
    /// learn one (`learn_address_port`); we still look up and dial others.
    pub addresses: Vec<SocketAddr>,
    /// Learn our address from what peers observe, and advertise it at this
    /// port (our listen port): `Some` only when the operator named no
    /// address to advertise, whose list is then authoritative. An IP
    /// [`crate::discovery::limits::OBSERVED_CONFIRMATIONS_MIN`] network
    /// groups report is added to our record while it has room.
    pub learn_address_port: Option<u16>,
    /// Accept loopback and private addresses in records and the table
    /// (devnets and tests).
    pub allow_private: bool,
    /// Apply the table's per-subnet and per-network-group limits and the
    /// gater's cap of peers per network group
    /// ([`crate::peer::PEERS_PER_NETGROUP_MAX`]): the anti-eclipse caps.
    /// Off only in a lab where every peer shares one network on purpose,
    /// such as the simulator's single /16.
    pub subnet_limits: bool,
    /// Operator-named peers to start from (`--bootnode ADDR@PEERID`).
    pub bootnodes: Vec<(PeerId, SocketAddr)>,
    /// Connected peers the node aims for: below it, it dials candidates.
    pub peers_target: usize,
    /// Our record's sequence number: larger than any earlier run's (the
    /// driver passes the unix time in milliseconds at start).
    pub record_seq: u64,
}

/// The discovery part: the machine and what waits on dials for it.
pub(super) struct DiscoveryPart {
    machine: Discovery,
    peers_target: usize,
    /// What peers told us about our address, when we learn it.
    observed: Option<AddressBook>,
    /// Signs our record again when we learn an address.
    identity: Identity,
    /// Peers we are dialling for the machine (a query, a candidate, a
    /// liveness check): one dial each, however many reasons.
    dialling: BTreeSet<PeerId>,
    /// Queries to peers we are dialling, sent once they are admitted.
    waiting: BTreeMap<PeerId, Vec<(QueryId, FindNodeRequest)>>,
    /// Entries whose liveness a dial decides.
    liveness_dials: BTreeSet<PeerId>,
    /// Peers we dialled only to query them: once their queries end while
    /// we are above our target, they leave with Goodbye(too many peers), so
    /// lookups do not grow the peer set past the target.
    query_dials: BTreeSet<PeerId>,
    /// When the connection manager next trims.
    next_trim: Instant,
    /// When each connected peer was admitted, and whether we have answered
    /// its FIND_NODE since (one entry per connected peer).
    admitted: BTreeMap<PeerId, Admitted>,
}

/// What the connection manager knows of a connected peer's stay.
#[derive(Clone, Copy, Debug)]
struct Admitted {
    /// When it was admitted.
    at: Instant,
    /// We answered one of its FIND_NODE requests: it has had what a
    /// newcomer comes for, so its eviction grace is over.
    answered: bool,
}

impl Admitted {
    /// Whether it may be evicted for a newcomer at `now`: past its
    /// [`EVICTION_GRACE`], or answered.
    fn evictable(&self, now: Instant) -> bool {
        self.answered || self.at + EVICTION_GRACE <= now
    }
}

/// Where `peer` stands in `local`'s trimming order among peers in good
/// standing: the first 8 bytes of sha256 over both identities. A score
/// above zero only says how long a peer has been answering us (rewards
/// accrue per answer), so ranking by it trims the newest peer first, and
/// every node a newcomer dialled trims that same newcomer at its next tick:
/// in a network at its target, a joiner is cut off from all at once. This
/// order is as good as random, different at every node, and stable, so a
/// node keeps trimming the same peers rather than reshuffling.
pub(super) fn trim_rank(local: &PeerId, peer: &PeerId) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(b"meshsync-trim")
        .chain_update(local.as_bytes())
        .chain_update(peer.as_bytes())
        .finalize();
    let mut rank = [0u8; 8];
    rank.copy_from_slice(&digest[..8]);
    rank
}

impl DiscoveryPart {
    /// The part for `identity` on `network_id`, or why it cannot run.
    pub(super) fn new(
        config: &DiscoveryConfig,
        identity: &Identity,
        network_id: u64,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<DiscoveryPart, String> {
        let max = crate::discovery::limits::ADDRESSES_PER_RECORD_MAX;
        if config.addresses.len() > max {
            return Err(format!(
                "discovery advertises 0 to {max} addresses, got {}",
                config.addresses.len()
            ));
        }
        for addr in &config.addresses {
            crate::discovery::address::check_address(addr, config.allow_private)
                .map_err(|refusal| format!("cannot advertise {addr}: {refusal:?}"))?;
        }
        let local = Record::sign(identity, network_id, config.record_seq, &config.addresses);
        let table = TableConfig {
            allow_private: config.allow_private,
            subnet_limits: config.subnet_limits,
        };
        let mut machine = Discovery::new(MachineConfig { local, table }, seed, now);
        machine.set_peer_count(now, 0, config.peers_target);
        for (peer, addr) in &config.bootnodes {
            if let Err(refusal) = machine.add_bootnode(now, *peer, *addr) {
                warn!("bootnode {addr}: refused: {refusal:?}");
            }
        }
        let observed = config
            .learn_address_port
            .map(|port| AddressBook::new(port, config.allow_private, config.subnet_limits));
        Ok(DiscoveryPart {
            machine,
            peers_target: config.peers_target,
            observed,
            identity: identity.clone(),
            dialling: BTreeSet::new(),
            waiting: BTreeMap::new(),
            liveness_dials: BTreeSet::new(),
            query_dials: BTreeSet::new(),
            next_trim: now + TRIM_INTERVAL,
            admitted: BTreeMap::new(),
        })
    }

    /// Records a peer store kept: candidates, least recently seen first.
    pub(super) fn add_known(&mut self, now: Instant, records: Vec<Record>) -> usize {
        self.machine.add_known(now, records)
    }

    /// The machine, for reading.
    pub(super) fn machine(&self) -> &Discovery {
        &self.machine
    }

    /// The machine, whose deadlines wake the node.
    pub(super) fn as_machine(&self) -> &dyn Machine {
        &self.machine
    }

    /// The quotas both sides apply to discovery's protocols.
    pub(super) fn quotas() -> [(ProtocolId, Quota); 2] {
        [
            (ProtocolId::FindNode, FIND_NODE_QUOTA),
            (ProtocolId::PeerRecord, PEER_RECORD_QUOTA),
        ]
    }

    fn waiting_count(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }
}

impl Node {
    /// The discovery machine, if this node runs discovery.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref().map(DiscoveryPart::machine)
    }

    /// A peer was admitted: ask for its record, send what waited on it.
    pub(super) fn discovery_peer_connected(&mut self, now: Instant, peer: PeerId) {
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        part.dialling.remove(&peer);
        part.admitted.insert(
            peer,
            Admitted {
                at: now,
                answered: false,
            },
        );
        let waiting = part.waiting.remove(&peer).unwrap_or_default();
        if part.liveness_dials.remove(&peer) {
            part.machine.handle_liveness(now, peer, true);
        }
        let _ = self.request(
            now,
            peer,
            ProtocolId::PeerRecord,
            Vec::new(),
            Purpose::PeerRecord,
        );
        for (id, request) in waiting {
            self.send_query(now, peer, id, request);
        }
        self.discovery_peer_count(now);
    }

    /// `peer` left.
    pub(super) fn discovery_peer_gone(&mut self, now: Instant, peer: PeerId) {
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        part.machine.handle_peer_disconnected(now, peer);
        part.query_dials.remove(&peer);
        part.admitted.remove(&peer);
        self.discovery_peer_count(now);
    }

    /// A dial to `peer` failed, or its connection was refused before it
    /// became a peer: its waiting queries fail, its liveness check too.
    pub(super) fn discovery_connect_failed(&mut self, now: Instant, peer: PeerId) {
        if self.conns.is_connected(&peer) {
            // A second connection lost a race (a duplicate): the peer is
            // here, and what waited on it was sent at its admission.
            return;
        }
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        part.dialling.remove(&peer);
        part.query_dials.remove(&peer);
        for (id, _) in part.waiting.remove(&peer).unwrap_or_default() {
            part.machine.handle_query_failed(now, id);
        }
        if part.liveness_dials.remove(&peer) {
            part.machine.handle_liveness(now, peer, false);
        }
        part.machine.handle_dial_failed(now, peer);
    }

    fn discovery_peer_count(&mut self, now: Instant) {
        let connected = self.conns.peer_count();
        if let Some(part) = self.discovery.as_mut() {
            let target = part.peers_target;
            part.machine.set_peer_count(now, connected, target);
        }
    }

    /// The machine's timers, and the connection manager's.
    pub(super) fn discovery_tick(&mut self, now: Instant) {
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        part.machine.handle_timeout(now);
        if now >= part.next_trim {
            part.next_trim = now + TRIM_INTERVAL;
            self.trim_peers(now);
        }
    }

    /// When the connection manager next trims (the machine's own deadlines
    /// are in [`Node::machines`]).
    pub(super) fn trim_deadline(&self) -> Option<Instant> {
        self.discovery.as_ref().map(|part| part.next_trim)
    }

    /// Inbound connection `conn` finished its handshake as `newcomer`, whom
    /// the gate would refuse only for lack of room: say Goodbye(too many
    /// peers) to one inbound peer
    /// to make room, so a full node (a bootnode above all) still admits a
    /// newcomer long enough for its first lookup instead of refusing it
    /// unheard. The victim is never a static peer, one range sync is using,
    /// one we dialled, or one of the [`GRACE_PROTECTED_MAX`] most recently
    /// admitted within [`EVICTION_GRACE`] whose FIND_NODE we have not
    /// answered yet; the lowest score goes first, then the most recently
    /// admitted past its grace (a newcomer that has had its lookup before a
    /// long-standing peer), then the oldest within it.
    pub(super) fn make_room_for_inbound(
        &mut self,
        now: Instant,
        conn: crate::io::ConnId,
        newcomer: PeerId,
    ) {
        let Some(part) = self.discovery.as_ref() else {
            return;
        };
        let inbound = self
            .conns
            .get(conn)
            .is_some_and(|connection| connection.direction == Direction::Inbound);
        // Only a newcomer refused for room alone: a banned or scored-out
        // identity must not cost us a peer each time it comes back.
        let for_room_only = matches!(
            self.peer_manager.check_connected(now, conn, newcomer),
            Decision::Refuse(Refusal::TooManyPeers | Refusal::TooManyInbound)
        );
        if !inbound || !for_room_only {
            return;
        }
        let inbound: Vec<(PeerId, Admitted)> = self
            .conns
            .peer_infos()
            .into_iter()
            .filter(|info| info.direction == Direction::Inbound)
            .filter(|info| {
                !self.peer_manager.is_static_peer(&info.peer) && !self.sync.is_using(&info.peer)
            })
            .filter_map(|info| Some((info.peer, *part.admitted.get(&info.peer)?)))
            .collect();
        // Within their grace: the newest GRACE_PROTECTED_MAX are kept.
        let mut in_grace: Vec<(Instant, PeerId)> = inbound
            .iter()
            .filter(|(_, admitted)| !admitted.evictable(now))
            .map(|(peer, admitted)| (admitted.at, *peer))
            .collect();
        in_grace.sort_by(|a, b| b.cmp(a));
        let protected: BTreeSet<PeerId> = in_grace
            .iter()
            .take(GRACE_PROTECTED_MAX)
            .map(|(_, peer)| *peer)
            .collect();
        // The lowest score goes first; then a peer past its grace (the most
        // recently admitted of those: a newcomer that has had its lookup
        // before a long-standing peer); then the one that has had its grace
        // longest.
        let victim = inbound
            .iter()
            .filter(|(peer, _)| !protected.contains(peer))
            .map(|(peer, admitted)| {
                let order = if admitted.evictable(now) {
                    (false, std::cmp::Reverse(admitted.at), Instant::ZERO)
                } else {
                    (true, std::cmp::Reverse(Instant::ZERO), admitted.at)
                };
                (self.peer_manager.score(now, peer), order, *peer)
            })
            .min();
        let Some((_, _, victim)) = victim else {
            return;
        };
        if let Some(victim_conn) = self.conns.conn_of(&victim) {
            debug!("{victim:?}: making room for a newcomer: goodbye");
            self.out.counters.peers_trimmed += 1;
            self.say_goodbye(now, victim_conn, GoodbyeReason::TooManyPeers);
        }
    }

    /// Says Goodbye(too many peers) to the peers above our target; see the
    /// module doc for whom.
    fn trim_peers(&mut self, now: Instant) {
        let Some(part) = self.discovery.as_ref() else {
            return;
        };
        let target = part.peers_target;
        let peers = self.conns.peer_infos();
        let Some(mut excess) = peers.len().checked_sub(target).filter(|&n| n > 0) else {
            return;
        };
        let local = self.peer_id();
        let mut candidates: Vec<(Score, bool, [u8; 8], PeerId)> = peers
            .iter()
            .filter(|info| {
                !self.peer_manager.is_static_peer(&info.peer) && !self.sync.is_using(&info.peer)
            })
            // A newcomer keeps its grace here too: every peer it met may
            // trim at the same tick (bootnodes start together), and it
            // would be left with none before its first lookup's answers.
            .filter(|info| {
                part.admitted
                    .get(&info.peer)
                    .is_none_or(|admitted| admitted.evictable(now))
            })
            .map(|info| {
                let score = self.peer_manager.score(now, &info.peer);
                // `false` sorts first: inbound before outbound on equal standing.
                (
                    score.min(Score::ZERO),
                    info.direction == Direction::Outbound,
                    trim_rank(&local, &info.peer),
                    info.peer,
                )
            })
            .collect();
        candidates.sort();
        let inbound_share = target * INBOUND_SHARE_PERCENT / 100;
        let mut inbound = peers
            .iter()
            .filter(|info| info.direction == Direction::Inbound)
            .count();
        let mut chosen: Vec<PeerId> = Vec::new();
        let mut take =
            |peer: PeerId, was_inbound: bool, excess: &mut usize, inbound: &mut usize| {
                chosen.push(peer);
                *excess -= 1;
                if was_inbound {
                    *inbound -= 1;
                }
            };
        // 1. Peers that misbehaved more than they helped.
        for (score, outbound, _, peer) in &candidates {
            if excess > 0 && *score < Score::ZERO {
                take(*peer, !outbound, &mut excess, &mut inbound);
            }
        }
        let mut rest: Vec<_> = candidates
            .iter()
            .filter(|(score, _, _, _)| *score >= Score::ZERO)
            .collect();
        // 2. Inbound peers beyond their share of the target.
        rest.retain(|(_, outbound, _, peer)| {
            if excess > 0 && !outbound && inbound > inbound_share {
                take(*peer, true, &mut excess, &mut inbound);
                return false;
            }
            true
        });
        // 3. The rest, inbound first, in our own order.
        for (_, outbound, _, peer) in rest {
            if excess == 0 {
                break;
            }
            take(*peer, !outbound, &mut excess, &mut inbound);
        }
        for peer in chosen {
            if let Some(conn) = self.conns.conn_of(&peer) {
                info!("{peer:?}: above our target of {target} peers: goodbye");
                self.out.counters.peers_trimmed += 1;
                self.say_goodbye(now, conn, GoodbyeReason::TooManyPeers);
            }
        }
    }

    /// A peer's FIND_NODE or PEER_RECORD request; `None` when this node
    /// does not run discovery (the request is then unsupported).
    pub(super) fn serve_discovery(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: ProtocolId,
        body: &[u8],
    ) -> Answer {
        // Only a Sybil of the simulator has a fixed answer; an honest node
        // decodes the request once, below.
        let hostile = self.config.faults.find_node_records.is_some();
        if protocol == ProtocolId::FindNode && hostile && self.discovery.is_some() {
            if let Some(answer) = FindNodeRequest::decode(body)
                .ok()
                .and_then(|request| self.hostile_find_node_answer(peer, &request))
            {
                return Answer::Chunks(vec![answer.encode()]);
            }
        }
        let Some(part) = self.discovery.as_mut() else {
            return Answer::Error {
                code: ResultCode::InvalidRequest,
                message: "discovery is not running".to_string(),
            };
        };
        match protocol {
            ProtocolId::FindNode => match FindNodeRequest::decode(body) {
                Ok(request) => {
                    if let Some(admitted) = part.admitted.get_mut(&peer) {
                        admitted.answered = true;
                    }
                    let answer = part.machine.handle_find_node_request(now, peer, request);
                    Answer::Chunks(vec![answer.encode()])
                }
                Err(error) => Answer::Error {
                    code: ResultCode::InvalidRequest,
                    message: error.to_string(),
                },
            },
            _ => {
                let Some(observed) = self
                    .conns
                    .conn_of(&peer)
                    .and_then(|conn| self.conns.get(conn))
                    .map(|connection| connection.addr)
                else {
                    return Answer::Error {
                        code: ResultCode::ServerError,
                        message: "no connection".to_string(),
                    };
                };
                let Some(part) = self.discovery.as_ref() else {
                    return Answer::Error {
                        code: ResultCode::InvalidRequest,
                        message: "discovery is not running".to_string(),
                    };
                };
                let answer = PeerRecordAnswer::new(part.machine.local_record().clone(), observed);
                Answer::Chunks(vec![answer.encode()])
            }
        }
    }

    /// The success chunk of our PEER_RECORD request to `peer`.
    pub(super) fn on_peer_record(&mut self, now: Instant, peer: PeerId, payload: &[u8]) {
        let network_id = self.config.network_id;
        let Some(ip) = self
            .conns
            .conn_of(&peer)
            .and_then(|conn| self.conns.get(conn))
            .map(|connection| connection.addr.ip())
        else {
            return;
        };
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        match PeerRecordAnswer::decode(payload, network_id, peer) {
            Ok(answer) => {
                let insert = part
                    .machine
                    .handle_peer_verified(now, peer, answer.record, ip);
                debug!("{peer:?}: record: {insert:?}");
                let confirmed = part
                    .observed
                    .as_mut()
                    .and_then(|book| book.observe(ip, answer.observed));
                if let Some(confirmed) = confirmed {
                    self.learn_address(confirmed);
                }
            }
            Err(error) => {
                info!("{peer:?}: refused its record: {error}");
                self.report(now, peer, Report::Penalty(error.penalty()));
            }
        }
    }

    /// Peers confirmed that they see us at `confirmed.addr`: sign it into
    /// our record (sequence number + 1) if it is new and the record has
    /// room, and tell our peers our metadata changed so they ask for the
    /// record again.
    fn learn_address(&mut self, confirmed: Confirmed) {
        let network_id = self.config.network_id;
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        let local = part.machine.local_record();
        let mut addresses = local.addresses().to_vec();
        if addresses.contains(&confirmed.addr) {
            return;
        }
        if addresses.len() >= crate::discovery::limits::ADDRESSES_PER_RECORD_MAX {
            debug!("peers see us at {}, but our record is full", confirmed.addr);
            return;
        }
        addresses.push(confirmed.addr);
        let seq = local.seq().saturating_add(1);
        let record = Record::sign(&part.identity, network_id, seq, &addresses);
        part.machine.handle_address_learned(record);
        info!(
            "learned our address {} from {} peers in distinct networks; advertising it",
            confirmed.addr, confirmed.observers
        );
        self.bump_metadata_seq();
    }

    /// The success chunk of FIND_NODE query `id` to `peer`.
    pub(super) fn on_find_node_answer(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: QueryId,
        payload: &[u8],
    ) {
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        if let Err(error) = part.machine.handle_find_node_answer(now, id, payload) {
            info!("{peer:?}: refused its FIND_NODE answer: {error}");
            self.report(now, peer, Report::Penalty(error.penalty()));
        }
    }

    /// FIND_NODE query `id` to `peer` ended (a no-op for the machine if
    /// its answer was applied). A peer dialled only for its queries leaves
    /// once they are all done, if we are above our target.
    pub(super) fn on_find_node_done(&mut self, now: Instant, peer: PeerId, id: QueryId) {
        let connected = self.conns.peer_count();
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        part.machine.handle_query_failed(now, id);
        let open =
            self.rpc_requests_open_for(peer, |purpose| matches!(purpose, Purpose::FindNode(_)));
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        let waiting = part.waiting.contains_key(&peer);
        if open > 0 || waiting || connected <= part.peers_target || !part.query_dials.remove(&peer)
        {
            return;
        }
        if let Some(conn) = self.conns.conn_of(&peer) {
            debug!("{peer:?}: queried and above our target: goodbye");
            self.say_goodbye(now, conn, GoodbyeReason::TooManyPeers);
        }
    }

    /// Carries out what the machine asks for: queries, dials, liveness checks.
    pub(super) fn drive_discovery(&mut self, now: Instant) {
        let Some(part) = self.discovery.as_mut() else {
            return;
        };
        let queries: Vec<_> = std::iter::from_fn(|| part.machine.poll_query()).collect();
        let dials: Vec<_> = std::iter::from_fn(|| part.machine.poll_dial()).collect();
        let checks: Vec<_> = std::iter::from_fn(|| part.machine.poll_liveness_check()).collect();
        while let Some(outcome) = part.machine.poll_lookup_outcome() {
            debug!(
                "lookup {:?} done: {} closest, {} queries, {} rounds",
                outcome.id,
                outcome.closest.len(),
                outcome.queries,
                outcome.rounds
            );
        }
        for query in queries {
            if self.conns.is_connected(&query.peer) {
                self.send_query(now, query.peer, query.id, query.request);
                continue;
            }
            let Some(part) = self.discovery.as_mut() else {
                return;
            };
            let room = part.waiting_count() < QUERIES_WAITING_MAX;
            let dialling = part.dialling.contains(&query.peer);
            if !room || (!dialling && !self.discovery_dial(now, query.addr, query.peer)) {
                if let Some(part) = self.discovery.as_mut() {
                    part.machine.handle_query_failed(now, query.id);
                }
                continue;
            }
            if let Some(part) = self.discovery.as_mut() {
                part.query_dials.insert(query.peer);
                part.waiting
                    .entry(query.peer)
                    .or_default()
                    .push((query.id, query.request));
            }
        }
        for dial in dials {
            let dialling = self
                .discovery
                .as_ref()
                .is_some_and(|part| part.dialling.contains(&dial.peer));
            if !self.conns.is_connected(&dial.peer)
                && !dialling
                && !self.discovery_dial(now, dial.addr, dial.peer)
            {
                if let Some(part) = self.discovery.as_mut() {
                    part.machine.handle_dial_failed(now, dial.peer);
                }
            }
        }
        for check in checks {
            let connected = self.conns.is_connected(&check.peer);
            let Some(part) = self.discovery.as_mut() else {
                return;
            };
            if connected {
                part.machine.handle_liveness(now, check.peer, true);
                continue;
            }
            let room = part.liveness_dials.len() < LIVENESS_DIALS_MAX;
            let dialling = part.dialling.contains(&check.peer);
            if room && (dialling || self.discovery_dial(now, check.addr, check.peer)) {
                if let Some(part) = self.discovery.as_mut() {
                    part.liveness_dials.insert(check.peer);
                }
            } else if let Some(part) = self.discovery.as_mut() {
                part.machine.handle_liveness(now, check.peer, false);
            }
        }
    }

    /// Dials `peer` at `addr` for the machine; whether the dial started.
    fn discovery_dial(&mut self, now: Instant, addr: SocketAddr, peer: PeerId) -> bool {
        let room = self
            .discovery
            .as_ref()
            .is_some_and(|part| part.dialling.len() < crate::limits::DIALS_IN_PROGRESS_MAX);
        if !room || !self.dial(now, addr, Some(peer)) {
            return false;
        }
        if let Some(part) = self.discovery.as_mut() {
            part.dialling.insert(peer);
        }
        true
    }

    fn send_query(&mut self, now: Instant, peer: PeerId, id: QueryId, request: FindNodeRequest) {
        let body = request.encode();
        if self
            .request(now, peer, ProtocolId::FindNode, body, Purpose::FindNode(id))
            .is_err()
        {
            self.on_find_node_done(now, peer, id);
        }
    }
}
