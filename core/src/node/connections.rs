//! The connections part: every connection's state from open to close, the
//! Noise handshake, sealing and flushing, and what the transport has not yet
//! written.
//!
//! # Design
//! Each connection is a small state machine, `Handshaking` then `Established`,
//! keyed by the driver's [`ConnId`]; an established connection is mapped to the
//! [`PeerId`] its handshake proved. Outbound plaintext is buffered per
//! connection and sealed once per `handle` call (or before a close), so a burst
//! of small messages becomes one Noise message and one `Send`.
//!
//! This part decides nothing about peers: admission, scores and what a
//! message means belong to the node and its other parts. It answers
//! questions (who is on which connection, which timers are due, whether a
//! connection can take more gossip) and carries out sends, seals and closes,
//! writing its actions and counts to the [`Outbox`] it is handed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::outbox::Outbox;
use super::PeerInfo;
use crate::codec::{
    append_length_prefixed, keep_at_most, DecodeError, MessageReassembler, NoiseFrameDecoder,
};
use crate::identity::PeerId;
use crate::io::{Action, ConnId, DialId, Direction};
use crate::limits;
use crate::peer::ip_key;
use crate::secure::{
    Handshake, HandshakeStep, Hello, LocalKeys, RemoteIdentity, SecureError, Transport,
};
use crate::time::{Duration, Instant};

/// Connection state of the node.
pub(super) struct Connections {
    keys: LocalKeys,
    hello: Hello,
    by_conn: BTreeMap<ConnId, Connection>,
    peers: BTreeMap<PeerId, ConnId>,
    dials: BTreeMap<DialId, PendingDial>,
    next_dial_id: u64,
    /// Connections with plaintext waiting to be sealed.
    unflushed: BTreeSet<ConnId>,
    /// Buffers one read fills and the next reuses.
    scratch: ReadScratch,
    /// Each connection's timers as of its last change, so the next deadline
    /// is found in a small map instead of every connection's state.
    timers: BTreeMap<ConnId, ConnTimers>,
    /// Connections changed since `timers` was brought up to date (by
    /// [`Connections::index_timers`], after every input): while any is
    /// listed, [`Connections::next_deadline`] reads every connection.
    timers_stale: StaleTimers,
}

/// Connections whose timers may have moved, in the order they changed.
#[derive(Default)]
struct StaleTimers(Vec<ConnId>);

impl StaleTimers {
    /// Notes that `conn` changed. A connection that changes many times in
    /// a row (every message of one read) is listed once.
    fn mark(&mut self, conn: ConnId) {
        if self.0.last() != Some(&conn) {
            self.0.push(conn);
        }
    }
}

/// One connection's timers: what [`Connections::next_deadline`] needs of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ConnTimers {
    /// The handshake's deadline, or the earliest of keepalive, Status and
    /// silence.
    due: Instant,
    /// When its write state next changes, if it is slow (see
    /// [`Connections::write_deadline`]).
    write: Option<Instant>,
}

/// The buffers [`Connections::read`] fills, kept from read to read (one set
/// per node): a stream of large messages is read without allocating per
/// read, and no connection keeps a large buffer of its own.
#[derive(Default)]
struct ReadScratch {
    received: Vec<Received>,
    messages: Vec<u8>,
    /// One Noise message's plaintext at a time: at most
    /// [`limits::NOISE_PLAINTEXT_BYTES_MAX`] bytes.
    plaintext: Vec<u8>,
}

/// Items of one read whose list is kept for the next; a longer list (a
/// read of many small messages) is freed.
const RECEIVED_KEPT_MAX: usize = 1_024;

/// A dial the driver is carrying out.
pub(super) struct PendingDial {
    pub(super) addr: SocketAddr,
    pub(super) expected: Option<PeerId>,
    pub(super) deadline: Instant,
}

pub(super) struct Connection {
    pub(super) addr: SocketAddr,
    pub(super) direction: Direction,
    /// When the transport connection opened: a flood evicts the oldest handshake.
    opened_at: Instant,
    /// For a dial with a known identity: the peer that must answer.
    pub(super) expected: Option<PeerId>,
    frames: NoiseFrameDecoder,
    pub(super) state: ConnectionState,
    /// Bytes handed to the driver in `Action::Send` that it has not yet
    /// reported written (`Input::BytesWritten`): how backed up the transport is.
    pub(super) unwritten_bytes: usize,
    /// When the driver last reported bytes of this connection written, or
    /// when bytes began to wait after none did: since when it has taken nothing.
    write_progress_at: Instant,
    /// Since when `unwritten_bytes` has been at least
    /// [`limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX`] (`None` while below).
    share_full_since: Option<Instant>,
}

pub(super) enum ConnectionState {
    /// `None` only transiently while a message is being read.
    Handshaking {
        handshake: Option<Box<Handshake>>,
        deadline: Instant,
    },
    /// The channel is up. `accepted` turns true once the node's policy
    /// (network, version, duplicates, gater) has admitted the peer.
    Established(Box<Established>),
}

pub(super) struct Established {
    pub(super) peer: PeerId,
    pub(super) accepted: bool,
    transport: Transport,
    messages: MessageReassembler,
    /// Plaintext (length-prefixed messages) not yet sealed.
    outbound: Vec<u8>,
    pub(super) last_received: Instant,
    pub(super) next_ping: Instant,
    pub(super) next_status: Instant,
    /// The peer's Metadata sequence number we know, if any.
    pub(super) metadata_seq: Option<u64>,
    /// Whether a Metadata request to it is open.
    pub(super) metadata_requested: bool,
    /// The sequence number named by the Ping that made us ask for its
    /// Metadata last, and when: it counts as fetched once the answer comes,
    /// whatever the answer's own number, and the next fetch waits
    /// `METADATA_FETCH_INTERVAL`.
    pub(super) metadata_asked: Option<(u64, Instant)>,
    /// Metadata answers it completed; only the first earns a reward.
    pub(super) metadata_fetches: u32,
    /// Our requests to it that timed out in a row (a complete answer resets it).
    pub(super) timeouts_in_a_row: u32,
    /// Requests that expired while we heard nothing from it since asking:
    /// charged (Low each) when it next speaks on this connection, never if
    /// it does not (cut off or frozen until the silence timeout).
    pub(super) timeouts_uncharged: u32,
    /// When we last asked it for its Status because a gossiped orphan of
    /// its found no lookup place (see `Node::sync_orphan`).
    pub(super) orphan_status_asked_at: Option<Instant>,
}

/// What reading one connection's bytes produced, applied in order afterwards.
pub(super) enum Received {
    HandshakeDone(RemoteIdentity),
    /// A logical message: where it lies in [`Read::messages`].
    Message(std::ops::Range<usize>),
}

/// What [`Connections::read`] produced from one batch of bytes.
pub(super) struct Read {
    /// In order.
    pub(super) received: Vec<Received>,
    /// The logical messages' bytes, back to back: one buffer for the
    /// batch instead of a vector per message.
    pub(super) messages: Vec<u8>,
    /// What ended the reading, applied after `received`.
    pub(super) result: Result<(), ReadError>,
}

/// Why reading a connection's bytes failed.
pub(super) enum ReadError {
    Decode(DecodeError),
    Secure(SecureError),
}

impl From<DecodeError> for ReadError {
    fn from(error: DecodeError) -> ReadError {
        ReadError::Decode(error)
    }
}

impl From<SecureError> for ReadError {
    fn from(error: SecureError) -> ReadError {
        ReadError::Secure(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Decode(error) => error.fmt(f),
            ReadError::Secure(error) => error.fmt(f),
        }
    }
}

/// The connection timers that are due at one instant, in connection order.
#[derive(Default)]
pub(super) struct DueConnections {
    /// Handshakes past their deadline.
    pub(super) handshakes_expired: Vec<ConnId>,
    /// Established connections silent for the silence timeout.
    pub(super) silent: Vec<ConnId>,
    /// Accepted peers that stopped reading (see [`Connections::is_stalled`]).
    pub(super) stalled: Vec<PeerId>,
    /// Peers due a Ping or a Status.
    pub(super) keepalive: Vec<PeerId>,
}

impl Connections {
    pub(super) fn new(keys: LocalKeys, hello: Hello) -> Connections {
        Connections {
            keys,
            hello,
            by_conn: BTreeMap::new(),
            peers: BTreeMap::new(),
            dials: BTreeMap::new(),
            next_dial_id: 0,
            unflushed: BTreeSet::new(),
            scratch: ReadScratch::default(),
            timers: BTreeMap::new(),
            timers_stale: StaleTimers::default(),
        }
    }

    /// Our identity.
    pub(super) fn local_peer(&self) -> PeerId {
        self.keys.peer_id()
    }

    /// What we say of ourselves in the handshake.
    pub(super) fn hello(&self) -> &Hello {
        &self.hello
    }

    // ----- questions -----

    /// Connected peers, in `PeerId` order.
    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(&peer, conn)| {
                let connection = &self.by_conn[conn];
                PeerInfo {
                    peer,
                    addr: connection.addr,
                    direction: connection.direction,
                }
            })
            .collect()
    }

    /// Connected (accepted) peers, in `PeerId` order.
    pub(super) fn peer_ids(&self) -> Vec<PeerId> {
        self.connected_peers().copied().collect()
    }

    /// [`Connections::peer_ids`] without collecting them.
    pub(super) fn connected_peers(&self) -> impl ExactSizeIterator<Item = &PeerId> + '_ {
        self.peers.keys()
    }

    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    pub(super) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The connection `peer` is accepted on.
    pub(super) fn conn_of(&self, peer: &PeerId) -> Option<ConnId> {
        self.peers.get(peer).copied()
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<&Connection> {
        self.by_conn.get(&conn)
    }

    pub(super) fn contains(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// All connections, in `ConnId` order.
    pub(super) fn conn_ids(&self) -> Vec<ConnId> {
        self.by_conn.keys().copied().collect()
    }

    /// Handshakes in progress in `direction`.
    pub(super) fn handshaking(&self, direction: Direction) -> usize {
        self.by_conn
            .values()
            .filter(|connection| {
                connection.direction == direction
                    && matches!(connection.state, ConnectionState::Handshaking { .. })
            })
            .count()
    }

    /// Inbound handshakes in progress from IP key `key` (see [`ip_key`]).
    pub(super) fn inbound_handshakes_from(&self, key: IpAddr) -> usize {
        self.inbound_handshakes()
            .filter(|(_, connection)| ip_key(connection.addr.ip()) == key)
            .count()
    }

    /// The inbound handshake open the longest (of equals, the lowest id):
    /// the one a flood evicts for a newcomer.
    pub(super) fn oldest_inbound_handshake(&self) -> Option<ConnId> {
        self.inbound_handshakes()
            .min_by_key(|(conn, connection)| (connection.opened_at, **conn))
            .map(|(conn, _)| *conn)
    }

    fn inbound_handshakes(&self) -> impl Iterator<Item = (&ConnId, &Connection)> {
        self.by_conn.iter().filter(|(_, connection)| {
            connection.direction == Direction::Inbound
                && matches!(connection.state, ConnectionState::Handshaking { .. })
        })
    }

    /// The established connection state of `peer`, once accepted.
    pub(super) fn established_mut(&mut self, peer: &PeerId) -> Option<&mut Established> {
        let conn = *self.peers.get(peer)?;
        self.timers_stale.mark(conn);
        match &mut self.by_conn.get_mut(&conn)?.state {
            ConnectionState::Established(established) => Some(established),
            ConnectionState::Handshaking { .. } => None,
        }
    }

    /// The established state on `conn`, accepted or not yet.
    pub(super) fn established_on_mut(&mut self, conn: ConnId) -> Option<&mut Established> {
        self.timers_stale.mark(conn);
        match &mut self.by_conn.get_mut(&conn)?.state {
            ConnectionState::Established(established) => Some(established),
            ConnectionState::Handshaking { .. } => None,
        }
    }

    /// Bytes the driver holds, unwritten, for `peer`'s connection.
    pub(super) fn unwritten_bytes_of(&self, peer: &PeerId) -> usize {
        self.peers
            .get(peer)
            .and_then(|conn| self.by_conn.get(conn))
            .map_or(0, |connection| connection.unwritten_bytes)
    }

    // ----- dials -----

    pub(super) fn dials_in_progress(&self) -> usize {
        self.dials.len()
    }

    /// Records a dial the driver is to carry out, and names it.
    pub(super) fn start_dial(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        deadline: Instant,
    ) -> DialId {
        let dial = DialId(self.next_dial_id);
        self.next_dial_id += 1;
        self.dials.insert(
            dial,
            PendingDial {
                addr,
                expected,
                deadline,
            },
        );
        dial
    }

    /// Ends the dial's record: it connected, failed or was cancelled.
    pub(super) fn take_dial(&mut self, dial: DialId) -> Option<PendingDial> {
        self.dials.remove(&dial)
    }

    /// Dials past their deadline, in `DialId` order.
    pub(super) fn expired_dials(&self, now: Instant) -> Vec<DialId> {
        self.dials
            .iter()
            .filter(|(_, dial)| dial.deadline <= now)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Every dial in progress, in `DialId` order.
    pub(super) fn dial_ids(&self) -> Vec<DialId> {
        self.dials.keys().copied().collect()
    }

    // ----- life cycle -----

    /// Starts the handshake on a new connection; an outbound one sends its
    /// first message at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: SocketAddr,
        direction: Direction,
        expected: Option<PeerId>,
        ephemeral_seed: [u8; 32],
        deadline: Instant,
        out: &mut Outbox,
    ) {
        let mut first = Vec::new();
        let handshake = match direction {
            Direction::Outbound => {
                Handshake::initiate(&self.keys, ephemeral_seed, expected, &mut first)
            }
            Direction::Inbound => Handshake::respond(&self.keys, ephemeral_seed),
        }
        .expect("building a handshake from our own valid keys cannot fail");
        self.timers_stale.mark(conn);
        self.by_conn.insert(
            conn,
            Connection {
                addr,
                direction,
                expected,
                opened_at: now,
                frames: NoiseFrameDecoder::new(),
                unwritten_bytes: 0,
                write_progress_at: now,
                share_full_since: None,
                state: ConnectionState::Handshaking {
                    handshake: Some(Box::new(handshake)),
                    deadline,
                },
            },
        );
        if !first.is_empty() {
            self.emit_send(now, conn, first, out);
        }
    }

    /// Decrypts `bytes` of `conn`: the handshake's next steps (whose answers
    /// are sent at once) and the logical messages after it. What was read
    /// before an error is returned with it, to be applied first. `None` for
    /// a connection we closed already.
    pub(super) fn read(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        out: &mut Outbox,
    ) -> Option<Read> {
        let keys = &self.keys;
        let hello = &self.hello;
        self.timers_stale.mark(conn);
        let connection = self.by_conn.get_mut(&conn)?;
        let ReadScratch {
            received,
            messages,
            plaintext,
        } = &mut self.scratch;
        let mut received = std::mem::take(received);
        let mut messages = std::mem::take(messages);
        let mut handshake_out = Vec::new();
        let Connection { frames, state, .. } = connection;
        let result = frames.decode(bytes, |message| -> Result<(), ReadError> {
            match state {
                ConnectionState::Handshaking { handshake, .. } => {
                    let current = handshake.take().expect("present between messages");
                    match (*current).read_message(keys, hello, message, &mut handshake_out)? {
                        HandshakeStep::Continue(next) => *handshake = Some(Box::new(next)),
                        HandshakeStep::Done { transport, remote } => {
                            *state = ConnectionState::Established(Box::new(Established {
                                peer: remote.peer,
                                accepted: false,
                                transport,
                                messages: MessageReassembler::new(),
                                outbound: Vec::new(),
                                last_received: now,
                                next_ping: Instant::MAX,
                                next_status: Instant::MAX,
                                metadata_seq: None,
                                metadata_requested: false,
                                metadata_asked: None,
                                metadata_fetches: 0,
                                orphan_status_asked_at: None,
                                timeouts_in_a_row: 0,
                                timeouts_uncharged: 0,
                            }));
                            received.push(Received::HandshakeDone(remote));
                        }
                    }
                }
                ConnectionState::Established(established) => {
                    plaintext.clear();
                    established.transport.open(message, plaintext)?;
                    established.messages.push(
                        plaintext,
                        &mut messages,
                        |range| -> Result<(), ReadError> {
                            received.push(Received::Message(range));
                            Ok(())
                        },
                    )?;
                }
            }
            Ok(())
        });
        if matches!(state, ConnectionState::Established(_)) {
            frames.enter_transport_mode();
        }
        if !handshake_out.is_empty() {
            self.emit_send(now, conn, handshake_out, out);
        }
        Some(Read {
            received,
            messages,
            result,
        })
    }

    /// Takes back the buffers of a [`Read`] once its items are applied, so
    /// that the next read fills them again instead of allocating (up to
    /// [`limits::MESSAGE_BUFFER_KEPT_BYTES_MAX`] of messages).
    pub(super) fn recycle(&mut self, mut received: Vec<Received>, mut messages: Vec<u8>) {
        received.clear();
        if received.capacity() <= RECEIVED_KEPT_MAX {
            self.scratch.received = received;
        }
        keep_at_most(&mut messages, limits::MESSAGE_BUFFER_KEPT_BYTES_MAX);
        self.scratch.messages = messages;
    }

    /// Maps `peer` to `conn` and starts its keepalive timers.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: PeerId,
        ping_interval: Duration,
        status_interval: Duration,
    ) {
        self.peers.insert(peer, conn);
        if let Some(established) = self.established_on_mut(conn) {
            established.accepted = true;
            established.next_ping = now + ping_interval;
            established.next_status = now + status_interval;
        }
    }

    /// Flushes and drops `conn`, which another connection of its peer replaces, and closes it.
    pub(super) fn drop_replaced(&mut self, now: Instant, conn: ConnId, out: &mut Outbox) {
        self.flush(now, conn, out);
        self.unflushed.remove(&conn);
        self.timers_stale.mark(conn);
        self.by_conn.remove(&conn);
        out.push(Action::Close { conn });
    }

    /// Which of two connections to one peer both ends keep: the one dialled by
    /// the lower `PeerId`, or, when one side dialled both, the newer one
    /// (the dialler evidently no longer trusts the old one).
    pub(super) fn keep_new_connection(
        &self,
        existing: ConnId,
        new: ConnId,
        remote: PeerId,
    ) -> bool {
        let dialler = |conn: ConnId| match self.by_conn[&conn].direction {
            Direction::Outbound => self.local_peer(),
            Direction::Inbound => remote,
        };
        let (old_dialler, new_dialler) = (dialler(existing), dialler(new));
        if old_dialler == new_dialler {
            true
        } else {
            new_dialler < old_dialler
        }
    }

    /// Drops our state for `conn`; an accepted peer on it is no longer
    /// mapped (the caller reports it gone).
    pub(super) fn forget(&mut self, conn: ConnId) -> Option<Connection> {
        self.unflushed.remove(&conn);
        self.timers_stale.mark(conn);
        let connection = self.by_conn.remove(&conn)?;
        if let ConnectionState::Established(established) = &connection.state {
            if established.accepted && self.peers.get(&established.peer) == Some(&conn) {
                self.peers.remove(&established.peer);
            }
        }
        Some(connection)
    }

    // ----- timers -----

    /// The earliest instant a connection or dial timer fires, if any.
    pub(super) fn next_deadline(&self, now: Instant, silence_timeout: Duration) -> Option<Instant> {
        let dials = self.dials.values().map(|dial| dial.deadline).min();
        let connections = if self.timers_stale.0.is_empty() {
            let indexed = self
                .timers
                .values()
                .map(|timers| Connections::earliest(now, *timers))
                .min();
            debug_assert_eq!(
                indexed,
                self.connections_deadline(now, silence_timeout),
                "the timer index agrees with the connections"
            );
            indexed
        } else {
            self.connections_deadline(now, silence_timeout)
        };
        dials.into_iter().chain(connections).min()
    }

    /// The earliest connection timer, read from every connection.
    fn connections_deadline(&self, now: Instant, silence_timeout: Duration) -> Option<Instant> {
        self.by_conn
            .values()
            .map(|connection| {
                Connections::earliest(now, Connections::timers_of(connection, silence_timeout))
            })
            .min()
    }

    /// When a connection with `timers` next needs the node at `now`. A write
    /// deadline already past (a slow connection that stopped counting) is
    /// not a reason to wake again.
    fn earliest(now: Instant, timers: ConnTimers) -> Instant {
        timers
            .write
            .filter(|&deadline| deadline > now)
            .map_or(timers.due, |deadline| deadline.min(timers.due))
    }

    fn timers_of(connection: &Connection, silence_timeout: Duration) -> ConnTimers {
        match &connection.state {
            ConnectionState::Handshaking { deadline, .. } => ConnTimers {
                due: *deadline,
                write: None,
            },
            ConnectionState::Established(established) => ConnTimers {
                due: established
                    .next_ping
                    .min(established.next_status)
                    .min(established.last_received + silence_timeout),
                write: Connections::write_deadline(connection),
            },
        }
    }

    /// Brings the timer index up to date with the connections changed since
    /// the last call. The node calls it after every input.
    pub(super) fn index_timers(&mut self, silence_timeout: Duration) {
        for conn in self.timers_stale.0.drain(..) {
            match self.by_conn.get(&conn) {
                Some(connection) => {
                    self.timers
                        .insert(conn, Connections::timers_of(connection, silence_timeout));
                }
                None => {
                    self.timers.remove(&conn);
                }
            }
        }
    }

    /// The connection timers due at `now`. Each connection is in one list
    /// at most: silence before a stall before a keepalive.
    pub(super) fn due(&self, now: Instant, silence_timeout: Duration) -> DueConnections {
        let mut due = DueConnections::default();
        for (&conn, connection) in &self.by_conn {
            match &connection.state {
                ConnectionState::Handshaking { deadline, .. } => {
                    if *deadline <= now {
                        due.handshakes_expired.push(conn);
                    }
                }
                ConnectionState::Established(established) => {
                    if established.last_received + silence_timeout <= now {
                        due.silent.push(conn);
                    } else if established.accepted && Connections::is_stalled(now, connection) {
                        due.stalled.push(established.peer);
                    } else if established.next_ping <= now || established.next_status <= now {
                        due.keepalive.push(established.peer);
                    }
                }
            }
        }
        due
    }

    // ----- sending -----

    /// Queues one logical message for an established connection; sealed at the next flush.
    pub(super) fn send_raw(&mut self, conn: ConnId, message: &[u8], out: &mut Outbox) {
        let Some(established) = self.established_on_mut(conn) else {
            return;
        };
        append_length_prefixed(&mut established.outbound, message);
        out.counters.messages_sent += 1;
        self.unflushed.insert(conn);
    }

    /// Lets `write` append whole logical messages, each with its length
    /// prefix, straight to `conn`'s plaintext, sealed at the next flush:
    /// an answer of many chunks is written in place, not copied from a
    /// vector per message. `write` returns how many messages it appended,
    /// or an error after appending nothing. It runs even when `conn` is
    /// `None` or no longer established (a request must still be closed in
    /// its tracker); its bytes are then dropped.
    pub(super) fn send_with<E>(
        &mut self,
        conn: Option<ConnId>,
        out: &mut Outbox,
        write: impl FnOnce(&mut Vec<u8>) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if let Some(conn) = conn {
            self.timers_stale.mark(conn);
        }
        let established = conn.and_then(|conn| match &mut self.by_conn.get_mut(&conn)?.state {
            ConnectionState::Established(established) => Some((conn, established)),
            ConnectionState::Handshaking { .. } => None,
        });
        let Some((conn, established)) = established else {
            return write(&mut Vec::new());
        };
        let start = established.outbound.len();
        let result = write(&mut established.outbound);
        match &result {
            Ok(messages) => {
                out.counters.messages_sent += *messages as u64;
                if *messages > 0 {
                    self.unflushed.insert(conn);
                }
            }
            Err(_) => established.outbound.truncate(start),
        }
        result
    }

    /// Queues `plaintext` for `conn` as it is, without a length prefix: a
    /// test's way to send part of a logical message.
    #[cfg(test)]
    pub(super) fn send_plaintext(&mut self, conn: ConnId, plaintext: &[u8]) {
        if let Some(established) = self.established_on_mut(conn) {
            established.outbound.extend_from_slice(plaintext);
            self.unflushed.insert(conn);
        }
    }

    /// Queues one logical message for `peer`, if connected; says whether it was.
    pub(super) fn send_to(&mut self, peer: &PeerId, message: &[u8], out: &mut Outbox) -> bool {
        match self.conn_of(peer) {
            Some(conn) => {
                self.send_raw(conn, message, out);
                true
            }
            None => false,
        }
    }

    /// Seals a connection's queued plaintext into one `Send`.
    pub(super) fn flush(&mut self, now: Instant, conn: ConnId, out: &mut Outbox) {
        if !self.unflushed.remove(&conn) {
            return;
        }
        let Some(established) = self.established_on_mut(conn) else {
            return;
        };
        let mut bytes = Vec::new();
        established
            .transport
            .seal(&established.outbound, &mut bytes);
        keep_at_most(
            &mut established.outbound,
            limits::OUTBOUND_PLAINTEXT_KEPT_BYTES_MAX,
        );
        self.emit_send(now, conn, bytes, out);
    }

    /// Seals every connection's queued plaintext.
    pub(super) fn flush_all(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(&conn) = self.unflushed.first() {
            self.flush(now, conn, out);
        }
    }

    /// Hands `bytes` to the driver, counting them as unwritten until it says otherwise.
    fn emit_send(&mut self, now: Instant, conn: ConnId, bytes: Vec<u8>, out: &mut Outbox) {
        self.timers_stale.mark(conn);
        if let Some(connection) = self.by_conn.get_mut(&conn) {
            if connection.unwritten_bytes == 0 {
                connection.write_progress_at = now;
            }
            connection.unwritten_bytes = connection.unwritten_bytes.saturating_add(bytes.len());
            if connection.unwritten_bytes >= limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX {
                connection.share_full_since.get_or_insert(now);
            }
        }
        out.push(Action::Send { conn, bytes });
    }

    /// The driver wrote `bytes` of `conn`.
    pub(super) fn handle_bytes_written(&mut self, now: Instant, conn: ConnId, bytes: usize) {
        // Late reports for a connection we closed are expected and harmless;
        // a driver that wrote bytes of its own (a test's) may over-report,
        // which only opens the window early.
        self.timers_stale.mark(conn);
        if let Some(connection) = self.by_conn.get_mut(&conn) {
            connection.unwritten_bytes = connection.unwritten_bytes.saturating_sub(bytes);
            if bytes > 0 {
                connection.write_progress_at = now;
            }
            if connection.unwritten_bytes < limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX {
                connection.share_full_since = None;
            }
        }
    }

    // ----- write windows -----

    /// The capacity of every established connection's plaintext send buffer.
    #[cfg(test)]
    pub(super) fn outbound_capacities(&self) -> Vec<usize> {
        self.by_conn
            .values()
            .filter_map(|connection| match &connection.state {
                ConnectionState::Established(established) => Some(established.outbound.capacity()),
                ConnectionState::Handshaking { .. } => None,
            })
            .collect()
    }

    /// What the connections count toward the node-wide gossip window at
    /// `now`: each its unwritten bytes plus plaintext waiting to be sealed,
    /// capped at [`limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX`], and nothing
    /// from one that has held its full share for
    /// [`limits::GOSSIP_SLOW_CONNECTION_AFTER`] (its own link or reader is the
    /// bottleneck, not our uplink).
    pub(super) fn unwritten_total(&self, now: Instant) -> usize {
        self.by_conn
            .values()
            .map(|connection| Connections::node_window_share(now, connection))
            .fold(0usize, usize::saturating_add)
    }

    /// One connection's part of [`Connections::unwritten_total`].
    fn node_window_share(now: Instant, connection: &Connection) -> usize {
        if Connections::slow_since(connection).is_some_and(|since| since <= now) {
            return 0;
        }
        Connections::unsent_bytes(connection).min(limits::GOSSIP_NODE_WINDOW_SHARE_BYTES_MAX)
    }

    /// Bytes handed to the driver and not written, plus plaintext waiting to be sealed.
    fn unsent_bytes(connection: &Connection) -> usize {
        let pending = match &connection.state {
            ConnectionState::Established(established) => established.outbound.len(),
            ConnectionState::Handshaking { .. } => 0,
        };
        connection.unwritten_bytes.saturating_add(pending)
    }

    /// From when `connection` is slow (its own link or reader, not our
    /// uplink, holds it back): it has held its full share, or taken none of
    /// its waiting bytes, for [`limits::GOSSIP_SLOW_CONNECTION_AFTER`].
    /// `None` while nothing waits.
    fn slow_since(connection: &Connection) -> Option<Instant> {
        if connection.unwritten_bytes == 0 {
            return None;
        }
        let idle = connection.write_progress_at;
        let since = connection
            .share_full_since
            .map_or(idle, |full| full.min(idle));
        Some(since + limits::GOSSIP_SLOW_CONNECTION_AFTER)
    }

    /// Whether `connection` is over its own gossip window and has taken
    /// nothing for [`limits::WRITE_STALL_TIMEOUT`]: its peer stopped reading.
    fn is_stalled(now: Instant, connection: &Connection) -> bool {
        Connections::unsent_bytes(connection) >= limits::GOSSIP_SEND_WINDOW_BYTES
            && connection.write_progress_at + limits::WRITE_STALL_TIMEOUT <= now
    }

    /// When `connection` next changes state without an input: it stops
    /// counting toward the node window, or it is cut as stalled.
    fn write_deadline(connection: &Connection) -> Option<Instant> {
        let slow = Connections::slow_since(connection)?;
        if Connections::unsent_bytes(connection) < limits::GOSSIP_SEND_WINDOW_BYTES {
            return Some(slow);
        }
        Some(slow.min(connection.write_progress_at + limits::WRITE_STALL_TIMEOUT))
    }

    /// Whether `peer` can take more gossip now: what the driver has not
    /// written plus what waits to be sealed is below [`limits::GOSSIP_SEND_WINDOW_BYTES`].
    pub(super) fn gossip_window_open(&self, peer: &PeerId) -> bool {
        let Some(conn) = self.peers.get(peer) else {
            return false;
        };
        match self.by_conn.get(conn) {
            Some(Connection {
                state: ConnectionState::Established(established),
                unwritten_bytes,
                ..
            }) => {
                unwritten_bytes.saturating_add(established.outbound.len())
                    < limits::GOSSIP_SEND_WINDOW_BYTES
            }
            _ => false,
        }
    }
}
