//! The boundary of the core: [`Input`] goes in, [`Action`] comes out.
//!
//! # Design
//! These enums are the whole contract between the core and a driver (`io-mio`
//! in production, `sim` in tests). Every variant's doc says what the driver
//! must do. Connections belong to the driver and are named by [`ConnId`];
//! identities belong to the core and are named by [`PeerId`], mapped from a
//! connection only once its handshake has proved the key.

use std::fmt;
use std::net::SocketAddr;

use crate::gossip::{MessageId, PublishError, SubscribeError, Topic, Validation};
use crate::identity::PeerId;
use crate::reqresp::bodies::{Metadata, Status};
use crate::reqresp::{Answer, ProtocolId, ProtocolName, Quota, RequestId, ResultCode};
use crate::time::Instant;
pub use crate::types::{ConnId, DialId, Direction, GoodbyeReason};
use std::net::IpAddr;

/// How a connection came to be, as the driver reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Origin {
    /// Accepted on our listening socket.
    Accepted,
    /// The connection asked for by [`Action::Dial`] with this id.
    Dialed(DialId),
}

/// Why the driver saw a connection end.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum CloseCause {
    /// The remote closed it (end of stream).
    RemoteClosed,
    /// A read or write failed.
    Io(String),
    /// More than [`crate::limits::PENDING_SEND_BYTES_MAX`] bytes were waiting
    /// to be written: the peer does not read fast enough.
    SendBufferFull,
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseCause::RemoteClosed => write!(f, "closed by remote"),
            CloseCause::Io(error) => write!(f, "io error: {error}"),
            CloseCause::SendBufferFull => write!(f, "send buffer full (peer too slow)"),
        }
    }
}

/// Something that happened, fed to [`crate::Node::handle`].
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// A transport connection is up and ready to carry bytes.
    ConnectionOpened {
        /// A fresh id the driver will use for this connection from now on.
        conn: ConnId,
        /// The remote address.
        remote: SocketAddr,
        /// Accepted, or the answer to one of our dials.
        origin: Origin,
    },
    /// Bytes arrived on a connection, in order, split anywhere.
    BytesReceived {
        /// The connection.
        conn: ConnId,
        /// The bytes, as read.
        bytes: Vec<u8>,
    },
    /// The driver saw a connection end. Not sent for connections the core
    /// closed itself with [`Action::Close`].
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// What the driver saw.
        cause: CloseCause,
    },
    /// A dial from [`Action::Dial`] could not connect.
    DialFailed {
        /// The dial.
        dial: DialId,
        /// What went wrong, for the log.
        error: String,
    },
    /// The driver has written `bytes` more bytes of what earlier
    /// [`Action::Send`]s gave it for `conn` to the transport (for TCP: into
    /// the socket). Drivers must report every byte they write, in any
    /// grouping; the core holds gossip back from a connection while too much
    /// is unwritten. Reports for closed connections are ignored.
    BytesWritten {
        /// The connection.
        conn: ConnId,
        /// Bytes written since the last report.
        bytes: usize,
    },
    /// A job from [`Action::Work`] finished (in any order).
    WorkDone {
        /// The job's id.
        id: crate::work::WorkId,
        /// What it produced.
        output: crate::work::WorkOutput,
    },
    /// A job from [`Action::Work`] produced nothing: the driver's code
    /// failed running it (a panic caught on a worker). That is our bug, not
    /// a peer's: the node frees the job's slot, blames no peer, and fetches
    /// or waits for the blocks again.
    WorkFailed {
        /// The job's id.
        id: crate::work::WorkId,
    },
    /// The [`Action::Persist`] batch `id`, and every batch before it, is durable.
    Persisted {
        /// The batch's id.
        id: u64,
    },
    /// The answer to [`Action::ReadBlocks`] with this id: the finalized
    /// blocks read, lowest slot first, each decoded and checked against the
    /// root it is stored under.
    BlocksRead {
        /// The read's id.
        id: u64,
        /// The blocks.
        blocks: Vec<crate::chain::SignedBlock>,
        /// Whether every block the read's range holds was returned (false
        /// when a limit of the read, or a damaged block, cut it short).
        complete: bool,
    },
    /// The instant from [`crate::Node::poll_timeout`] has come. Early or
    /// repeated timeouts are harmless no-ops.
    Timeout,
    /// Something the application asks for.
    Command(Command),
    /// The driver's report on its own disk and clock, where the node must
    /// act on it (see [`Health`]).
    Health(Health),
}

/// What a driver knows about its own resources that changes what the node
/// may announce. Each report replaces the previous one of its kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Health {
    /// The block store refuses writes: until [`Health::StoreWriting`] the
    /// node neither produces blocks nor forwards gossiped ones, since
    /// neither would be durable here (its Status already waits for
    /// `Input::Persisted`).
    StoreFailing,
    /// The block store writes again.
    StoreWriting,
    /// The store held blocks up to `slot` that did not come back into the
    /// chain (damaged, or orphaned by a damaged ancestor): the node does
    /// not produce until its head reaches `slot` again (re-synced from
    /// peers), so it never builds on a chain it knows to be incomplete.
    StoreIncomplete {
        /// The highest slot the store held.
        slot: u64,
    },
    /// The wall clock was read again and disagrees with the one read at
    /// start: Unix milliseconds at `Instant::ZERO` are now
    /// `unix_ms_at_origin`. Slots never go backwards: a slot already
    /// produced is not produced again.
    ClockRebased {
        /// The new Unix time (ms) of `Instant::ZERO`.
        unix_ms_at_origin: u64,
    },
    /// The wall clock jumped and the operator asked not to trust it: no
    /// blocks are produced until [`Health::ClockTrusted`].
    ClockUntrusted,
    /// The wall clock is trusted again.
    ClockTrusted,
}

/// What the application asks the node to do.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Connect to `addr`; when `peer` is given, refuse the connection unless
    /// the remote proves that identity in the handshake.
    Dial {
        /// The address to dial.
        addr: SocketAddr,
        /// The identity the remote must prove, if known.
        peer: Option<PeerId>,
    },
    /// Say Goodbye to `peer` with `reason` and close its connection.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Sent in the Goodbye.
        reason: GoodbyeReason,
    },
    /// Say Goodbye(client shutdown) to every peer, close every connection and
    /// refuse new ones. The driver drains actions, flushes, and exits.
    Shutdown,
    /// Keep a connection to `addr`: dial it now, and redial it with
    /// exponential backoff whenever it drops or a dial fails.
    AddStaticPeer {
        /// Where.
        addr: SocketAddr,
        /// The identity it must prove, if known.
        peer: Option<PeerId>,
    },
    /// Stop redialling `addr` (an open connection stays).
    RemoveStaticPeer {
        /// Where.
        addr: SocketAddr,
    },
    /// Serve an application protocol: its requests arrive as
    /// [`Notification::InboundRequest`], are answered with [`Command::Respond`],
    /// and are admitted within `quota` per peer. Requests we send on it
    /// respect the same quota.
    RegisterProtocol {
        /// The protocol's name.
        name: ProtocolName,
        /// Requests (cost 1 each) per peer per period.
        quota: Quota,
    },
    /// Send a request to a connected peer. The outcome comes back as
    /// [`Notification::Response`] or [`Notification::RequestFailed`] with `tag`.
    Request {
        /// The peer.
        peer: PeerId,
        /// Any built-in protocol but Goodbye, or a registered application protocol.
        protocol: ProtocolId,
        /// The uncompressed body, in the protocol's layout.
        body: Vec<u8>,
        /// The application's name for this request, echoed in the outcome.
        tag: u64,
    },
    /// Answer an application request from [`Notification::InboundRequest`].
    Respond {
        /// The peer that asked.
        peer: PeerId,
        /// The request.
        id: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// Join a gossip topic: announce it to every peer and build its mesh. Its
    /// messages arrive as [`Notification::GossipMessage`]. A refusal (too
    /// many topics) comes back as [`Notification::SubscribeFailed`].
    Subscribe {
        /// The topic.
        topic: Topic,
    },
    /// Leave a gossip topic (PRUNE its mesh, announce it). A no-op if we are not in it.
    Unsubscribe {
        /// The topic.
        topic: Topic,
    },
    /// The body of the next block we produce as a proposer (at most
    /// `BLOCK_BODY_BYTES_MAX`; a few may be queued). Without one, a proposer
    /// fills its block with random bytes of the configured size (a devnet).
    /// A refusal (too large, queue full) comes back as
    /// [`Notification::BodyRefused`].
    ProposeBody {
        /// Opaque application bytes.
        body: Vec<u8>,
    },
    /// Publish `payload` on `topic` (subscribed or not). A refusal comes back
    /// as [`Notification::PublishFailed`].
    Publish {
        /// The topic.
        topic: Topic,
        /// The uncompressed payload, at most `GOSSIP_MESSAGE_BYTES_MAX` bytes.
        payload: Vec<u8>,
    },
    /// The application's verdict on a [`Notification::GossipMessage`]: Accept
    /// forwards it to the mesh, Reject penalises every peer that sent it.
    /// Messages left unjudged for `VALIDATION_TIMEOUT` are dropped.
    ValidateGossip {
        /// The message.
        id: MessageId,
        /// The verdict.
        verdict: Validation,
    },
}

/// What the core asks the driver to do, from [`crate::Node::poll_action`].
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Open a TCP connection to `addr`, then report `Input::ConnectionOpened`
    /// with `Origin::Dialed(dial)`, or `Input::DialFailed { dial, .. }`.
    Dial {
        /// Names this dial in the answer.
        dial: DialId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Give up a dial that has not connected in time: drop the attempt and
    /// report nothing more about it (a late connection must be closed unreported).
    CancelDial {
        /// The dial.
        dial: DialId,
    },
    /// Write `bytes` to the connection, after everything sent before. If more
    /// than `PENDING_SEND_BYTES_MAX` bytes queue up, close the connection and
    /// report `CloseCause::SendBufferFull`.
    Send {
        /// The connection.
        conn: ConnId,
        /// Bytes ready for the wire (already encrypted and framed).
        bytes: Vec<u8>,
    },
    /// Write out what is queued for the connection, then close it. Report
    /// nothing more about it; drop any bytes that still arrive.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Run `job` (off the protocol loop if the driver can) and report
    /// `Input::WorkDone { id, .. }` with its output, or
    /// `Input::WorkFailed { id }` if running it failed.
    Work {
        /// Names the job in the answer.
        id: crate::work::WorkId,
        /// What to run.
        job: crate::work::Job,
    },
    /// Write `batch` durably in one transaction, then report
    /// `Input::Persisted { id: batch.id }`; batches in the order given.
    Persist(crate::work::PersistBatch),
    /// Read finalized blocks back from the store (history the core evicted
    /// from memory, to serve a range that starts below what it holds), then
    /// report `Input::BlocksRead { id: read.id, .. }`.
    ReadBlocks(crate::work::BlockRead),
    /// Replace the stored peer store with `known` in one transaction (see
    /// `crate::peerstore`). Nothing is reported back: a snapshot that is
    /// not written costs only what changed since the last one. Emitted
    /// only by a node whose `Config::known_peers` is set, every
    /// `PEERSTORE_PERSIST_INTERVAL`, `PEERSTORE_GROWTH_PERSIST_DELAY` after
    /// the routing table grows, and at shutdown.
    PersistPeers(crate::peerstore::KnownPeers),
    /// Tell the application (and the log) something.
    Notify(Notification),
}

/// What the application hears about.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Notification {
    /// A peer finished the handshake and is now connected.
    PeerConnected {
        /// Its proven identity.
        peer: PeerId,
        /// Its address.
        addr: SocketAddr,
        /// Who dialled.
        direction: Direction,
    },
    /// A connected peer is gone.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A connection was refused before it became a peer.
    ConnectionRefused {
        /// The remote address.
        addr: SocketAddr,
        /// The remote's identity, when the handshake got far enough to prove it.
        peer: Option<PeerId>,
        /// Why.
        reason: RefuseReason,
    },
    /// A dial failed or timed out.
    DialFailed {
        /// Where we dialled.
        addr: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// A peer's Status arrived (on connect, every `STATUS_INTERVAL`, or on request).
    PeerStatus {
        /// The peer.
        peer: PeerId,
        /// Its chain as it claims it.
        status: Status,
    },
    /// A peer's Metadata arrived (its sequence number went up).
    PeerMetadata {
        /// The peer.
        peer: PeerId,
        /// Its metadata.
        metadata: Metadata,
    },
    /// A request from [`Command::Request`] succeeded.
    Response {
        /// The peer that answered.
        peer: PeerId,
        /// The request's tag.
        tag: u64,
        /// Its protocol.
        protocol: ProtocolId,
        /// The success payloads, uncompressed, in order (possibly none).
        chunks: Vec<Vec<u8>>,
    },
    /// A request from [`Command::Request`] failed.
    RequestFailed {
        /// The peer it was for.
        peer: PeerId,
        /// The request's tag.
        tag: u64,
        /// Its protocol.
        protocol: ProtocolId,
        /// Why.
        error: RequestError,
    },
    /// A peer sent a request on a registered application protocol; answer it
    /// with [`Command::Respond`] within `INBOUND_ANSWER_TIMEOUT`.
    InboundRequest {
        /// The peer.
        peer: PeerId,
        /// Name it in the answer.
        id: RequestId,
        /// The application protocol.
        protocol: ProtocolName,
        /// The uncompressed body.
        body: Vec<u8>,
    },
    /// A peer was banned (its score fell to the ban threshold).
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// Its IP, when that was banned too.
        ip: Option<IpAddr>,
        /// When the ban ends.
        until: Instant,
    },
    /// A ban on a peer ended.
    PeerUnbanned {
        /// The peer.
        peer: PeerId,
    },
    /// A ban on an IP ended.
    IpUnbanned {
        /// The IP.
        ip: IpAddr,
    },
    /// A peer that was disconnected or banned for its score may be accepted again.
    ScoreRecovered {
        /// The peer.
        peer: PeerId,
    },
    /// A new gossip message on a topic we are subscribed to. Judge it with
    /// [`Command::ValidateGossip`]: it is forwarded only once accepted.
    GossipMessage {
        /// Name it in the verdict.
        id: MessageId,
        /// Its topic.
        topic: Topic,
        /// The uncompressed payload.
        payload: Vec<u8>,
        /// The peer that delivered it first.
        from: PeerId,
    },
    /// A [`Command::Publish`] was refused.
    PublishFailed {
        /// The topic.
        topic: Topic,
        /// Why.
        error: PublishError,
    },
    /// A [`Command::Subscribe`] was refused.
    SubscribeFailed {
        /// The topic.
        topic: Topic,
        /// Why.
        error: SubscribeError,
    },
    /// A block passed its checks and joined our chain (not yet durable:
    /// our Status names it once the driver confirms the write).
    BlockImported {
        /// Its slot.
        slot: u64,
        /// Its root.
        root: crate::chain::Root,
    },
    /// Range sync's progress, at least every 5 s while syncing.
    SyncProgress {
        /// Our head's slot.
        head_slot: u64,
        /// The slot we sync to.
        target_slot: u64,
        /// Blocks imported per second, smoothed and rounded.
        blocks_per_second: u64,
        /// Time left at that speed, if it is moving.
        eta: Option<crate::time::Duration>,
        /// Set while sync waits for peers instead of fetching: how many
        /// suitable peers it has and needs, and how long until it starts
        /// with fewer.
        waiting: Option<crate::sync::PeerWait>,
    },
    /// Range sync reached its target; gossip and lookups follow the head now.
    Synced {
        /// Our head's slot.
        head_slot: u64,
    },
    /// A [`Command::ProposeBody`] was refused (too large, or the queue is full).
    BodyRefused {
        /// Its length in bytes.
        bytes: usize,
    },
}

/// Why a request failed.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum RequestError {
    /// The peer is not connected, the queue for it is full, or the body is
    /// invalid for the protocol: the request was never sent.
    NotSent(String),
    /// No first chunk within `RESPONSE_FIRST_CHUNK_TIMEOUT`.
    FirstChunkTimeout,
    /// No end within `RESPONSE_TIMEOUT`.
    ResponseTimeout,
    /// The peer answered with an error code.
    Refused {
        /// The code (never success).
        code: ResultCode,
        /// The peer's message, sanitised.
        message: String,
    },
    /// The answer broke the protocol (too many chunks, undecodable payload).
    InvalidResponse(String),
    /// The peer disconnected before answering.
    Disconnected,
}

/// Why a connected peer went away.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum DisconnectReason {
    /// It said Goodbye.
    RemoteGoodbye(GoodbyeReason),
    /// We said Goodbye.
    LocalGoodbye(GoodbyeReason),
    /// The driver saw the connection end.
    ConnectionLost(CloseCause),
    /// Nothing arrived from it for `PEER_SILENCE_TIMEOUT`.
    Silent,
    /// It broke the protocol (undecryptable, oversize or undecodable frame).
    ProtocolViolation(String),
    /// Another connection to the same peer was kept instead of this one.
    Replaced,
    /// The peer's Status names another network.
    WrongNetwork {
        /// Ours.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
}

/// Why a connection was refused during or right after the handshake.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum RefuseReason {
    /// The Noise handshake failed (bad message, bad MAC) or its payload was malformed.
    Handshake(String),
    /// The identity signature over the Noise static key did not verify.
    BadSignature,
    /// The remote is on another network.
    WrongNetwork {
        /// Ours.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The remote speaks a protocol version we do not.
    IncompatibleVersion {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// We dialled a specific peer and another identity answered.
    UnexpectedPeer {
        /// The one we dialled.
        expected: PeerId,
    },
    /// We connected to ourselves.
    SelfConnection,
    /// The handshake did not finish within `HANDSHAKE_TIMEOUT`.
    Timeout,
    /// We already have a connection to this peer and kept that one.
    Duplicate,
    /// The peer manager's gater refused it (banned, banned IP, bad score,
    /// too many inbound or from one IP).
    Gated(crate::peer::Refusal),
    /// Our own dials: `OUTBOUND_HANDSHAKES_IN_PROGRESS_MAX` handshakes are
    /// already running.
    TooManyHandshakes,
    /// `HANDSHAKES_PER_IP_MAX` inbound handshakes from the remote's address
    /// are already running.
    TooManyHandshakesFromIp,
    /// All `HANDSHAKES_IN_PROGRESS_MAX` inbound handshake slots were taken;
    /// this one, open the longest, made room for a newcomer.
    HandshakeEvicted,
    /// The node is shutting down.
    ShuttingDown,
    /// The remote said Goodbye before becoming a peer.
    RemoteGoodbye(GoodbyeReason),
    /// The driver saw the connection end during the handshake.
    ConnectionLost(CloseCause),
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::Handshake(error) => write!(f, "handshake failed: {error}"),
            RefuseReason::BadSignature => write!(f, "identity signature does not verify"),
            RefuseReason::WrongNetwork { ours, theirs } => {
                write!(f, "wrong network id {theirs} (ours is {ours})")
            }
            RefuseReason::IncompatibleVersion { ours, theirs } => {
                write!(f, "incompatible protocol version {theirs} (ours is {ours})")
            }
            RefuseReason::UnexpectedPeer { expected } => {
                write!(f, "dialled {expected} but another identity answered")
            }
            RefuseReason::SelfConnection => write!(f, "connection to ourselves"),
            RefuseReason::Timeout => write!(f, "handshake timed out"),
            RefuseReason::Duplicate => write!(f, "already connected to this peer"),
            RefuseReason::Gated(refusal) => write!(f, "gated: {refusal:?}"),
            RefuseReason::TooManyHandshakes => write!(f, "too many handshakes in progress"),
            RefuseReason::TooManyHandshakesFromIp => {
                write!(f, "too many handshakes in progress from its address")
            }
            RefuseReason::HandshakeEvicted => {
                write!(f, "handshake evicted: all slots taken, this one the oldest")
            }
            RefuseReason::ShuttingDown => write!(f, "shutting down"),
            RefuseReason::RemoteGoodbye(reason) => {
                write!(f, "remote said goodbye {} ({reason:?})", reason.code())
            }
            RefuseReason::ConnectionLost(cause) => write!(f, "connection lost: {cause}"),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::RemoteGoodbye(reason) => {
                write!(f, "remote said goodbye {} ({reason:?})", reason.code())
            }
            DisconnectReason::LocalGoodbye(reason) => {
                write!(f, "we said goodbye {} ({reason:?})", reason.code())
            }
            DisconnectReason::ConnectionLost(cause) => write!(f, "connection lost: {cause}"),
            DisconnectReason::Silent => write!(f, "silent for too long"),
            DisconnectReason::ProtocolViolation(what) => write!(f, "protocol violation: {what}"),
            DisconnectReason::Replaced => write!(f, "replaced by another connection"),
            DisconnectReason::WrongNetwork { ours, theirs } => {
                write!(f, "status names network {theirs} (ours is {ours})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbye_codes_round_trip() {
        for code in [1, 2, 3, 128, 129, 250, 251, 252, 7, u64::MAX] {
            assert_eq!(GoodbyeReason::from_code(code).code(), code);
        }
        assert_eq!(
            GoodbyeReason::from_code(2),
            GoodbyeReason::IrrelevantNetwork
        );
    }
}
