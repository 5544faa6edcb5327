//! The node's req/resp glue: the built-in protocols' handlers, the requests
//! the node sends on its own (Status, Ping, Metadata), application requests
//! and answers, and what each outcome costs the peer.
//!
//! # Design
//! Every logical message after the handshake is a req/resp message (kinds
//! 16, 17, 18). Requests we send carry a [`Purpose`] so the answer is routed:
//! to the node itself (Status, Ping, Metadata) or to the application (a
//! `Notification::Response` with the caller's tag). Answers to built-in
//! requests are computed at once from the chain and our metadata;
//! application requests go to the application and come back as a command.
//!
//! # Security
//! What a peer's behaviour costs it (see `crate::peer::Penalty`):
//! - Low (−1): a request of ours timed out; a late answer; it exceeded its
//!   own quota with us (exceeding the open-request cap costs nothing: the
//!   requester may have given up on a request we still hold open; nor does
//!   a refusal by our shared serving budget or the peer's fair share of it,
//!   which the peer cannot see);
//! - Mid (−5): an invalid request or unsupported protocol; an answer to an
//!   id we never issued; an inconsistent Status; a reserved result code;
//! - High (−10): an answer that breaks the protocol (too many chunks, an
//!   undecodable payload, blocks out of slot order or not linked to their
//!   parents); a duplicate request id; any malformed message, which also
//!   ends the connection with Goodbye(fault).
//!
//! A completed answer earns a small reward, except a Metadata answer after
//! the first on a connection: the peer decides when we fetch its Metadata
//! (by the sequence number in its Pings), so it must not be able to farm
//! rewards that way. We fetch at most once per `METADATA_FETCH_INTERVAL`,
//! and only for a sequence number above the last one we fetched.

use std::collections::BTreeMap;

use log::{debug, info, warn};

use super::connections::Connections;
use super::outbox::Outbox;
use super::purpose::{AnswerFault, BlockFetch, Purpose, RangeCheck};
use super::Node;
use crate::chain::SignedBlock;
use crate::identity::PeerId;
use crate::io::{ConnId, DisconnectReason, GoodbyeReason, Notification, RequestError};
use crate::machine::Machine;
use crate::peer::{ChainStatus, Penalty, Report};
use crate::reqresp::bodies::{
    BlocksByRangeRequest, BlocksByRootRequest, Body, Goodbye, Metadata, MetadataRequest, Ping,
    Status,
};
use crate::reqresp::inbound::{ChunkPayload, DropReason, Refusal, BUSY_MESSAGE_PREFIX};
use crate::reqresp::limits::BUSY_RETRIES_PER_REQUEST_MAX;
use crate::reqresp::outbound::{ResponseViolation, TimedOut, Unexpected};
use crate::reqresp::stats::{RequestStats, ServedStats};
use crate::reqresp::{
    Answer, ChunkOutcome, EndOutcome, InboundConfig, InboundOutcome, InboundRequests,
    OutboundConfig, OutboundRequests, ProtocolId, ProtocolName, Quota, RateLimiterConfig, Request,
    RequestId, ResponseChunkRef, ResponseEnd, ResultCode, REQUEST_KIND, RESPONSE_CHUNK_KIND,
    RESPONSE_END_KIND,
};
use crate::time::{Duration, Instant};

/// Stalls in a row (moments at which requests to a peer expired, with no
/// complete answer between) a peer gets away with at Low (−1) per expired
/// request; from this one on, each stall costs High (−10), so a peer that
/// answers nothing is dropped (−20) after a few more instead of holding its
/// slot forever.
pub const TIMEOUTS_IN_A_ROW_TOLERATED: u32 = 3;
/// A timeout counts towards [`TIMEOUTS_IN_A_ROW_TOLERATED`] only if the peer
/// sent us something after the request went out, and within this long,
/// about a request's lifetime: it was alive while it left us unanswered
/// (its own pings and requests keep coming). A peer cut off by a partition
/// or frozen goes quiet and is left to the silence timeout instead, so it
/// can come back unscathed.
pub const TIMEOUT_ESCALATION_HEARD_WITHIN: Duration = crate::reqresp::limits::RESPONSE_TIMEOUT;

pub use crate::reqresp::limits::ANSWER_BLOCK_BYTES_MAX;

const _: () = assert!(ANSWER_BLOCK_BYTES_MAX <= crate::limits::PENDING_SEND_BYTES_MAX / 2);

/// The longest prefix of `blocks` within `budget_bytes`; a busy connection
/// (no budget for even the first block) gets `ResourceUnavailable`.
pub(super) fn blocks_within<'b, 'a>(
    blocks: &'b [&'a SignedBlock],
    budget_bytes: usize,
) -> Result<&'b [&'a SignedBlock], Answer> {
    let mut used = 0usize;
    let mut fitting = 0usize;
    for block in blocks {
        let len = block.encoded_len();
        if used.saturating_add(len) > budget_bytes {
            break;
        }
        used += len;
        fitting += 1;
    }
    if fitting == 0 && !blocks.is_empty() {
        return Err(Answer::Error {
            code: ResultCode::ResourceUnavailable,
            message: "busy: answers to this peer are still being written".to_string(),
        });
    }
    Ok(&blocks[..fitting])
}

/// The outbound configuration of a node that ignores its peers' quotas:
/// for hostile nodes in the simulator only.
fn flooding_outbound_config(mut config: OutboundConfig) -> OutboundConfig {
    const FLOOD_REQUESTS_MAX: usize = 1_024;
    let unlimited = Quota::new(1 << 30, Duration::from_millis(1));
    let mut quotas = RateLimiterConfig::requesting();
    for quota in quotas.quotas.values_mut() {
        *quota = unlimited;
    }
    config.quotas = quotas;
    config.in_flight_per_peer_max = FLOOD_REQUESTS_MAX;
    config.pending_per_peer_max = FLOOD_REQUESTS_MAX;
    config.back_off_when_busy = false;
    config
}

/// A Goodbye, as a one-way request. Goodbyes are never tracked, so the id
/// only has to be well-formed.
pub(super) fn goodbye_request(reason: GoodbyeReason) -> Vec<u8> {
    Request {
        id: RequestId(u64::MAX),
        protocol: ProtocolId::Goodbye,
        body: Goodbye { reason }.encode(),
    }
    .encode()
}

/// The req/resp part: the trackers of our requests and of peers' requests,
/// what each of our open requests is for, and the Metadata we serve. Its
/// fields are private to this file: other parts reach it only through the
/// node's methods here.
pub(super) struct RpcPart {
    outbound: OutboundRequests,
    inbound: InboundRequests,
    /// Why we sent each request still open, by peer and request id.
    purposes: BTreeMap<(PeerId, RequestId), Purpose>,
    metadata: Metadata,
}

impl RpcPart {
    /// The part for a node on a chain whose slots last `slot_duration_ms`
    /// (both sides of a network derive the range quota from its genesis).
    pub(super) fn new(
        slot_duration_ms: u64,
        capabilities: u64,
        faults: &super::Faults,
        discovery: bool,
    ) -> RpcPart {
        let mut outbound_config = OutboundConfig::default();
        outbound_config.quotas = outbound_config.quotas.for_slot_duration(slot_duration_ms);
        let mut inbound_config = InboundConfig::default();
        inbound_config.quotas = inbound_config.quotas.for_slot_duration(slot_duration_ms);
        if discovery {
            // Without these quotas both trackers refuse tags 7 and 8.
            for (protocol, quota) in super::discovery::DiscoveryPart::quotas() {
                inbound_config.quotas.quotas.insert(protocol, quota);
                outbound_config.quotas.quotas.insert(protocol, quota);
            }
        }
        if faults.ignore_peer_quotas {
            outbound_config = flooding_outbound_config(outbound_config);
        }
        if faults.ignore_busy_answers {
            outbound_config.back_off_when_busy = false;
        }

        RpcPart {
            outbound: OutboundRequests::new(outbound_config),
            inbound: InboundRequests::new(inbound_config),
            purposes: BTreeMap::new(),
            metadata: Metadata {
                seq: 0,
                topics: Vec::new(),
                capabilities,
            },
        }
    }

    /// Replaces the tracker of our requests, for tests that make a node
    /// request differently (a Sybil that ignores busy answers).
    #[cfg(test)]
    pub(super) fn set_outbound(&mut self, config: OutboundConfig) {
        self.outbound = OutboundRequests::new(config);
    }

    /// The two trackers, as machines whose deadlines wake the node.
    pub(super) fn machines(&self) -> [&dyn Machine; 2] {
        [&self.outbound, &self.inbound]
    }

    /// Answers `peer`'s request `id` with `payloads`, then the end, written
    /// and compressed straight into its connection's plaintext: the blocks
    /// of a range are encoded one at a time into the tracker's scratch
    /// buffer, not into a vector each. A method of this part, not of the
    /// node, so that the payloads may be borrowed from the chain store.
    pub(super) fn send_chunks<P: ChunkPayload>(
        &mut self,
        conns: &mut Connections,
        out: &mut Outbox,
        now: Instant,
        (peer, id): (PeerId, RequestId),
        payloads: &[P],
    ) {
        let conn = conns.conn_of(&peer);
        let inbound = &mut self.inbound;
        let sent = conns.send_with(conn, out, |plaintext| {
            inbound.respond_into(now, peer, id, payloads, plaintext)
        });
        if let Err(error) = sent {
            debug!("{peer:?}: answer to {id:?} not sent: {error:?}");
        }
    }
}

impl Node {
    /// Our requests by protocol: how each ended, and the latency of the
    /// answered ones (virtual time from sending to the message that ended it).
    pub fn request_stats(&self) -> &RequestStats {
        self.rpc.outbound.stats()
    }

    /// Peers' requests to us by protocol and how each ended (answered,
    /// expired, or refused and why).
    pub fn served_stats(&self) -> &ServedStats {
        self.rpc.inbound.stats()
    }

    /// One logical message from an accepted peer: req/resp here, gossip in `gossip.rs`.
    pub(super) fn on_message(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(established) = self.conns.established_on_mut(conn) else {
            return;
        };
        established.last_received = now;
        if !established.accepted {
            return; // Refused after its handshake; what follows is ignored.
        }
        let peer = established.peer;
        // It was not cut off after all: it ignored what it let expire.
        let uncharged = std::mem::take(&mut established.timeouts_uncharged);
        if uncharged > 0 {
            for _ in 0..uncharged {
                self.report(now, peer, Report::Penalty(Penalty::Low));
            }
            if self.conns.established_on_mut(conn).is_none() {
                return; // Those charges scored it out.
            }
        }
        self.out.counters.messages_received += 1;
        match bytes.first().copied() {
            Some(crate::gossip::GOSSIP_KIND) => self.on_gossip_rpc(now, peer, bytes),
            Some(REQUEST_KIND) => self.on_request(now, conn, peer, bytes),
            Some(RESPONSE_CHUNK_KIND) => match ResponseChunkRef::decode(bytes) {
                Ok(chunk) => self.on_chunk(now, peer, chunk),
                Err(error) => self.protocol_violation(now, conn, error.to_string()),
            },
            Some(RESPONSE_END_KIND) => match ResponseEnd::decode(bytes) {
                Ok(end) => self.on_end(now, peer, end),
                Err(error) => self.protocol_violation(now, conn, error.to_string()),
            },
            other => self.protocol_violation(now, conn, format!("unknown message kind {other:?}")),
        }
    }

    fn on_request(&mut self, now: Instant, conn: ConnId, peer: PeerId, bytes: &[u8]) {
        match self.rpc.inbound.handle_request_bytes(now, peer, bytes) {
            InboundOutcome::Serve {
                id,
                protocol,
                body,
                chunks_max,
            } => {
                self.out.counters.requests_served += 1;
                self.serve(now, peer, id, protocol, &body, chunks_max);
            }
            InboundOutcome::Goodbye { reason } => {
                self.out.counters.goodbyes_received += 1;
                self.remove_established(now, conn, DisconnectReason::RemoteGoodbye(reason));
            }
            InboundOutcome::Refused {
                id,
                refusal,
                response,
            } => {
                debug!("{peer:?}: request {id:?} refused: {refusal:?}");
                self.conns.send_raw(conn, &response, &mut self.out);
                let penalty = match refusal {
                    Refusal::RateLimited { .. } | Refusal::OverCapacity => {
                        self.out.counters.requests_rate_limited += 1;
                        self.out.counters.requests_limited_peer += 1;
                        Penalty::Low
                    }
                    // Our own limit, which the peer cannot see or pace by:
                    // never its fault (a crowd of Sybils within their quotas
                    // must not get an honest peer scored out).
                    Refusal::Busy { .. } => {
                        self.out.counters.requests_rate_limited += 1;
                        self.out.counters.requests_limited_global += 1;
                        return;
                    }
                    // Not the requester's fault by itself: it may have given
                    // up on a request we still hold open (its first-chunk
                    // deadline is shorter than our answer deadline). A real
                    // flood is caught by the quotas.
                    Refusal::TooManyOpen => return,
                    Refusal::Invalid(_) | Refusal::UnsupportedProtocol(_) => Penalty::Mid,
                };
                self.report(now, peer, Report::Penalty(penalty));
            }
            InboundOutcome::Dropped(DropReason::DuplicateId(id)) => {
                debug!("{peer:?}: duplicate request id {id:?}");
                self.report(now, peer, Report::Penalty(Penalty::High));
            }
            InboundOutcome::Dropped(
                DropReason::Malformed(error) | DropReason::MalformedGoodbye(error),
            ) => self.protocol_violation(now, conn, error.to_string()),
        }
    }

    /// Answers an admitted request of a built-in protocol, or hands an
    /// application request to the application.
    fn serve(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        protocol: ProtocolId,
        body: &[u8],
        chunks_max: u64,
    ) {
        if self.config.faults.never_answer_requests {
            return;
        }
        if let Some(answer) = self.hostile_answer(now, protocol, body, chunks_max) {
            self.answer(now, peer, id, answer);
            return;
        }
        // The inbound tracker checked each body's layout before admitting it.
        let answer = match protocol {
            ProtocolId::Status => {
                let Ok(theirs) = Status::decode(body) else {
                    return;
                };
                if !self.on_peer_status(now, peer, theirs) {
                    return; // Disconnected for its network.
                }
                Answer::Chunks(vec![self.announced_status(now).encode()])
            }
            ProtocolId::Ping => {
                if let Ok(ping) = Ping::decode(body) {
                    self.on_peer_metadata_seq(now, peer, ping.metadata_seq);
                }
                let ours = Ping {
                    metadata_seq: self.rpc.metadata.seq,
                };
                Answer::Chunks(vec![ours.encode()])
            }
            ProtocolId::Metadata => Answer::Chunks(vec![self.rpc.metadata.encode()]),
            ProtocolId::BlocksByRange => {
                let Ok(request) = BlocksByRangeRequest::decode(body) else {
                    return;
                };
                let count = request.end_slot().saturating_sub(request.start_slot);
                let budget = self.answer_budget_bytes(peer);
                let chunks_max = usize::try_from(chunks_max).unwrap_or(usize::MAX);
                let floor = self.chain.store().history_floor();
                if let Some(floor) = floor.filter(|&floor| request.start_slot < floor) {
                    match self.serve_range_from_history(
                        peer,
                        id,
                        request.start_slot,
                        request.end_slot(),
                        floor,
                        chunks_max,
                        budget,
                    ) {
                        Some(answer) => answer,
                        None => return, // Answered when the blocks are read.
                    }
                } else {
                    let mut blocks = self
                        .chain
                        .store()
                        .canonical_range(request.start_slot, count);
                    blocks.truncate(chunks_max);
                    match blocks_within(&blocks, budget) {
                        Ok(blocks) => {
                            let (conns, out) = (&mut self.conns, &mut self.out);
                            self.rpc.send_chunks(conns, out, now, (peer, id), blocks);
                            return;
                        }
                        Err(busy) => busy,
                    }
                }
            }
            ProtocolId::BlocksByRoot => {
                let Ok(request) = BlocksByRootRequest::decode(body) else {
                    return;
                };
                let budget = self.answer_budget_bytes(peer);
                let store = self.chain.store();
                let blocks: Vec<&SignedBlock> = request
                    .roots
                    .iter()
                    .filter_map(|root| store.block_by_root(root))
                    .collect();
                match blocks_within(&blocks, budget) {
                    Ok(blocks) => {
                        let (conns, out) = (&mut self.conns, &mut self.out);
                        self.rpc.send_chunks(conns, out, now, (peer, id), blocks);
                        return;
                    }
                    Err(busy) => busy,
                }
            }
            ProtocolId::Application(name) => {
                self.out.notify(Notification::InboundRequest {
                    peer,
                    id,
                    protocol: name,
                    body: body.to_vec(),
                });
                return;
            }
            ProtocolId::FindNode | ProtocolId::PeerRecord => {
                self.serve_discovery(now, peer, protocol, body)
            }
            ProtocolId::Goodbye => return, // One-way; handled as InboundOutcome::Goodbye.
        };
        self.answer(now, peer, id, answer);
    }

    /// Block bytes an answer to `peer` may carry now: at most
    /// [`ANSWER_BLOCK_BYTES_MAX`], and never enough to push what the driver
    /// holds for the connection past half its `PENDING_SEND_BYTES_MAX`.
    fn answer_budget_bytes(&self, peer: PeerId) -> usize {
        let unwritten = self.conns.unwritten_bytes_of(&peer);
        (crate::limits::PENDING_SEND_BYTES_MAX / 2)
            .saturating_sub(unwritten)
            .min(ANSWER_BLOCK_BYTES_MAX)
    }

    pub(super) fn answer(&mut self, now: Instant, peer: PeerId, id: RequestId, answer: Answer) {
        match answer {
            Answer::Chunks(payloads) => {
                self.rpc
                    .send_chunks(&mut self.conns, &mut self.out, now, (peer, id), &payloads)
            }
            Answer::Error { code, message } => {
                let conn = self.conns.conn_of(&peer);
                let inbound = &mut self.rpc.inbound;
                let sent = self.conns.send_with(conn, &mut self.out, |plaintext| {
                    inbound.respond_error_into(now, peer, id, code, &message, plaintext)
                });
                if let Err(error) = sent {
                    debug!("{peer:?}: answer to {id:?} not sent: {error:?}");
                }
            }
        }
    }

    fn on_chunk(&mut self, now: Instant, peer: PeerId, chunk: ResponseChunkRef<'_>) {
        match self.rpc.outbound.handle_chunk_ref(now, peer, chunk) {
            ChunkOutcome::Chunk {
                id,
                protocol: _,
                payload,
            } => self.on_response_payload(now, peer, id, payload),
            ChunkOutcome::Error {
                id,
                protocol,
                code,
                message,
            } => {
                debug!("{peer:?}: request {id:?} ({protocol:?}) refused: {code:?} {message}");
                if code == ResultCode::ResourceUnavailable
                    && message.starts_with(BUSY_MESSAGE_PREFIX)
                    && self.retry_when_busy(now, peer, id)
                {
                    return;
                }
                // Finish before scoring: a report may disconnect the peer,
                // and the tracker has already let go of this request.
                let reserved = matches!(code, ResultCode::Reserved(_));
                self.finish_request(peer, id, Err(RequestError::Refused { code, message }));
                if reserved {
                    self.report(now, peer, Report::Penalty(Penalty::Mid));
                }
            }
            ChunkOutcome::Violation { id, violation, .. } => {
                let what = match violation {
                    ResponseViolation::TooManyChunks { chunks_max } => {
                        format!("more than {chunks_max} chunks")
                    }
                    ResponseViolation::Payload(error) => error.to_string(),
                };
                debug!("{peer:?}: answer to {id:?} broke the protocol: {what}");
                self.finish_request(peer, id, Err(RequestError::InvalidResponse(what)));
                self.report(now, peer, Report::Penalty(Penalty::High));
            }
            ChunkOutcome::Unexpected { id, reason } => self.on_unexpected(now, peer, id, reason),
        }
    }

    fn on_end(&mut self, now: Instant, peer: PeerId, end: ResponseEnd) {
        match self.rpc.outbound.handle_end(now, peer, end) {
            EndOutcome::Completed { id, .. } => {
                self.out.counters.responses_received += 1;
                // The peer triggers Metadata fetches itself (by its Pings):
                // only the first on a connection earns anything.
                let metadata =
                    matches!(self.rpc.purposes.get(&(peer, id)), Some(Purpose::Metadata));
                let mut rewarded = true;
                if let Some(established) = self.conns.established_mut(&peer) {
                    established.timeouts_in_a_row = 0;
                    if metadata {
                        rewarded = established.metadata_fetches == 0;
                        established.metadata_fetches =
                            established.metadata_fetches.saturating_add(1);
                    }
                }
                // An answer of no blocks is allowed (slots it lacks) but
                // earns nothing: a liar answering every batch empty would
                // otherwise farm rewards against its penalties.
                let useful = !matches!(
                    self.rpc.purposes.get(&(peer, id)),
                    Some(Purpose::Blocks { blocks, .. }) if blocks.is_empty()
                );
                self.finish_request(peer, id, Ok(()));
                if rewarded && useful {
                    self.report(now, peer, Report::Reward);
                }
            }
            EndOutcome::Unexpected { id, reason } => self.on_unexpected(now, peer, id, reason),
        }
    }

    fn on_unexpected(&mut self, now: Instant, peer: PeerId, id: RequestId, reason: Unexpected) {
        self.out.counters.responses_unexpected += 1;
        debug!("{peer:?}: {reason:?} answer to {id:?} discarded");
        let penalty = match reason {
            Unexpected::Late => Penalty::Low,
            Unexpected::Unknown => Penalty::Mid,
        };
        self.report(now, peer, Report::Penalty(penalty));
    }

    /// A success chunk for one of our requests.
    fn on_response_payload(&mut self, now: Instant, peer: PeerId, id: RequestId, payload: Vec<u8>) {
        let Some(purpose) = self.rpc.purposes.get_mut(&(peer, id)) else {
            return;
        };
        match purpose {
            Purpose::Status => match Status::decode(&payload) {
                Ok(status) => {
                    self.on_peer_status(now, peer, status);
                }
                Err(error) => {
                    debug!("{peer:?}: undecodable Status answer: {error}");
                    self.report(now, peer, Report::Penalty(Penalty::High));
                }
            },
            Purpose::Ping => match Ping::decode(&payload) {
                Ok(ping) => {
                    self.out.counters.pongs_received += 1;
                    self.on_peer_metadata_seq(now, peer, ping.metadata_seq);
                }
                Err(error) => {
                    debug!("{peer:?}: undecodable Ping answer: {error}");
                    self.report(now, peer, Report::Penalty(Penalty::High));
                }
            },
            Purpose::Metadata => match Metadata::decode(&payload) {
                Ok(metadata) => {
                    if let Some(established) = self.conns.established_mut(&peer) {
                        let asked = established.metadata_asked.map(|(seq, _)| seq);
                        established.metadata_seq = Some(metadata.seq).max(asked);
                    }
                    self.out
                        .notify(Notification::PeerMetadata { peer, metadata });
                }
                Err(_) => self.report(now, peer, Report::Penalty(Penalty::High)),
            },
            Purpose::Blocks { .. } => self.on_block_chunk(now, peer, id, &payload),
            Purpose::PeerRecord => self.on_peer_record(now, peer, &payload),
            Purpose::FindNode(query) => {
                let query = *query;
                self.on_find_node_answer(now, peer, query, &payload);
            }
            Purpose::Application {
                chunks,
                range,
                invalid,
                ..
            } => {
                if invalid.is_none() {
                    if let Some(check) = range {
                        if let Err(what) = check.check(&payload) {
                            *invalid = Some(what);
                            self.report(now, peer, Report::Penalty(Penalty::High));
                            return;
                        }
                    }
                    chunks.push(payload);
                }
            }
        }
    }

    /// One chunk of an answer of blocks: checked against the request (range,
    /// order, links, or the roots asked for) and against the bytes set aside
    /// for the answer before it is kept. A chunk that breaks the request
    /// costs its sender and ends the collection; one that does not fit our
    /// room ends it without blame.
    fn on_block_chunk(&mut self, now: Instant, peer: PeerId, id: RequestId, payload: &[u8]) {
        let Some(Purpose::Blocks {
            fetch,
            blocks,
            check,
            bytes,
            budget_bytes,
            invalid,
        }) = self.rpc.purposes.get_mut(&(peer, id))
        else {
            return;
        };
        if invalid.is_some() {
            return;
        }
        let block = match SignedBlock::decode(payload) {
            Ok(block) => block,
            Err(error) => {
                *invalid = Some(AnswerFault::Broken(format!("undecodable block: {error}")));
                blocks.clear();
                self.report(now, peer, Report::Penalty(Penalty::High));
                return;
            }
        };
        if let Err(what) = check.check(&block) {
            debug!("{peer:?}: answer to {id:?} refused: {what}");
            *invalid = Some(AnswerFault::Broken(what));
            blocks.clear();
            self.report(now, peer, Report::Penalty(Penalty::High));
            return;
        }
        let needed = bytes.saturating_add(block.encoded_len());
        let (over, fetch) = (needed > *budget_bytes, *fetch);
        // Past the room set aside: range sync may grow it; a lookup's budget
        // already holds the largest block of its one root.
        let fits = !over
            || match fetch {
                BlockFetch::Range(batch) => self.sync.grow_reserve(batch, needed),
                BlockFetch::Lookup(..) => false,
            };
        let Some(Purpose::Blocks {
            blocks,
            check,
            bytes,
            budget_bytes,
            invalid,
            ..
        }) = self.rpc.purposes.get_mut(&(peer, id))
        else {
            return;
        };
        if !fits {
            debug!("{peer:?}: answer to {id:?} outgrew its {budget_bytes} bytes: cut off");
            *invalid = Some(AnswerFault::TooLarge {
                bytes: needed,
                slots: check.slots_covered(),
            });
            blocks.clear();
            return;
        }
        *budget_bytes = (*budget_bytes).max(needed);
        *bytes = needed;
        blocks.push(block);
    }

    /// Closes our record of a request and tells the application, if it asked.
    fn finish_request(&mut self, peer: PeerId, id: RequestId, result: Result<(), RequestError>) {
        let Some(purpose) = self.rpc.purposes.remove(&(peer, id)) else {
            return;
        };
        match purpose {
            Purpose::Metadata => {
                if let Some(established) = self.conns.established_mut(&peer) {
                    established.metadata_requested = false;
                }
            }
            Purpose::Status | Purpose::Ping | Purpose::PeerRecord => {}
            // A no-op when its answer was applied; a failure otherwise.
            Purpose::FindNode(query) => self.on_find_node_done(self.last_now, peer, query),
            Purpose::Blocks {
                fetch,
                blocks,
                invalid,
                ..
            } => self.sync_fetch_done(fetch, blocks, result, invalid),
            Purpose::Application {
                tag,
                protocol,
                chunks,
                invalid,
                ..
            } => {
                let result = match (result, invalid) {
                    (Ok(()), Some(what)) => Err(RequestError::InvalidResponse(what)),
                    (result, _) => result,
                };
                self.out.notify(match result {
                    Ok(()) => Notification::Response {
                        peer,
                        tag,
                        protocol,
                        chunks,
                    },
                    Err(error) => Notification::RequestFailed {
                        peer,
                        tag,
                        protocol,
                        error,
                    },
                });
            }
        }
    }

    /// A peer's Status, from its request or its answer. Returns whether the
    /// peer is still connected.
    fn on_peer_status(&mut self, now: Instant, peer: PeerId, status: Status) -> bool {
        if status.network_id != self.config.network_id {
            let ours = self.config.network_id;
            if let Some(conn) = self.conns.conn_of(&peer) {
                self.conns.send_raw(
                    conn,
                    &goodbye_request(GoodbyeReason::IrrelevantNetwork),
                    &mut self.out,
                );
                self.out.counters.goodbyes_sent += 1;
                let reason = DisconnectReason::WrongNetwork {
                    ours,
                    theirs: status.network_id,
                };
                self.remove_established(now, conn, reason);
            }
            return false;
        }
        if let Err(why) = self.check_status_claims(now, &status) {
            // Well-formed, but a lie the clock or the genesis disproves: it
            // costs the peer, and sync never hears of it.
            if status.head_slot > self.chain.slot_max(now) {
                let what = format!("a Status with head slot {}", status.head_slot);
                self.warn_claim_from_future(now, peer, &what);
            }
            info!("{peer:?}: status not believed: {why}");
            self.out.counters.statuses_not_believed += 1;
            self.report(now, peer, Report::Penalty(Penalty::Mid));
            return self.conns.is_connected(&peer);
        }
        let chain = ChainStatus {
            head_slot: status.head_slot,
            finalized_slot: status.finalized_slot,
        };
        if let Err(error) = self.peer_manager.update_status(&peer, chain) {
            debug!("{peer:?}: inconsistent status: {error:?}");
            self.report(now, peer, Report::Penalty(Penalty::Mid));
            return self.conns.is_connected(&peer);
        }
        self.out.notify(Notification::PeerStatus { peer, status });
        self.sync_peer_status(now, peer, &status);
        true
    }

    /// The claims of a Status that the clock and the genesis can disprove:
    /// a head beyond the current slot (plus [`super::chain::CLAIM_CLOCK_DISPARITY`]),
    /// finality above the head, or slot 0 on a root that is not the genesis.
    fn check_status_claims(&self, now: Instant, status: &Status) -> Result<(), String> {
        let slot_max = self.chain.slot_max(now);
        let genesis_root = self.chain.store().genesis_root();
        if status.head_slot > slot_max {
            return Err(format!(
                "head slot {} is beyond the clock's slot {slot_max}",
                status.head_slot
            ));
        }
        if status.finalized_slot > status.head_slot {
            return Err(format!(
                "finalized slot {} is above its head slot {}",
                status.finalized_slot, status.head_slot
            ));
        }
        if (status.finalized_slot == 0 && status.finalized_root != genesis_root)
            || (status.head_slot == 0 && status.head_root != genesis_root)
        {
            return Err("a checkpoint at slot 0 is not our genesis".to_string());
        }
        Ok(())
    }

    /// A peer told us its Metadata sequence number; fetch its Metadata if it is new.
    fn on_peer_metadata_seq(&mut self, now: Instant, peer: PeerId, seq: u64) {
        let Some(established) = self.conns.established_mut(&peer) else {
            return;
        };
        let known = established.metadata_seq;
        let asked_lately = established.metadata_asked.is_some_and(|(_, at)| {
            now.saturating_duration_since(at) < crate::limits::METADATA_FETCH_INTERVAL
        });
        if established.metadata_requested || asked_lately || known.is_some_and(|known| known >= seq)
        {
            return;
        }
        let body = MetadataRequest.encode();
        let sent = self.request(now, peer, ProtocolId::Metadata, body, Purpose::Metadata);
        if let (Ok(_), Some(established)) = (sent, self.conns.established_mut(&peer)) {
            established.metadata_requested = true;
            established.metadata_asked = Some((seq, now));
        }
        let in_table = self
            .discovery()
            .map(|discovery| discovery.table().entry(&peer).is_some());
        if in_table.is_some_and(|in_table| known.is_some() || !in_table) {
            // A peer's sequence number moves when its record does too (it
            // learned its address): its record, asked for at admission, is
            // asked for again when the number moved since we fetched it or
            // when its first record did not enter our table (it may have
            // had no address then), no more often than its Metadata.
            let _ = self.request(
                now,
                peer,
                ProtocolId::PeerRecord,
                Vec::new(),
                Purpose::PeerRecord,
            );
        }
    }

    /// Sends our Status to `peer` (its answer carries its own).
    pub(super) fn request_status(&mut self, now: Instant, peer: PeerId) {
        let body = self.announced_status(now).encode();
        // A refusal (queue full) is logged by `request`; the next interval retries.
        let _ = self.request(now, peer, ProtocolId::Status, body, Purpose::Status);
    }

    /// Pings `peer` and re-sends our Status when each is due.
    pub(super) fn keepalive(&mut self, now: Instant, peer: PeerId) {
        let (ping_interval, status_interval) =
            (self.config.ping_interval, self.config.status_interval);
        let seq = self.rpc.metadata.seq;
        let Some(established) = self.conns.established_mut(&peer) else {
            return;
        };
        let ping_due = established.next_ping <= now;
        let status_due = established.next_status <= now;
        if ping_due {
            established.next_ping = now + ping_interval;
        }
        if status_due {
            established.next_status = now + status_interval;
        }
        if ping_due {
            self.out.counters.pings_sent += 1;
            let body = Ping { metadata_seq: seq }.encode();
            let _ = self.request(now, peer, ProtocolId::Ping, body, Purpose::Ping);
        }
        if status_due {
            self.request_status(now, peer);
        }
    }

    /// Our requests to `peer` still open whose purpose matches.
    pub(super) fn rpc_requests_open_for(
        &self,
        peer: PeerId,
        matches: impl Fn(&Purpose) -> bool,
    ) -> usize {
        self.rpc
            .purposes
            .range((peer, RequestId(0))..=(peer, RequestId(u64::MAX)))
            .filter(|(_, purpose)| matches(purpose))
            .count()
    }

    /// Queues a request; the tracker releases it within quotas and in-flight caps.
    pub(super) fn request(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: ProtocolId,
        body: Vec<u8>,
        purpose: Purpose,
    ) -> Result<RequestId, String> {
        match self.rpc.outbound.send(now, peer, protocol, body) {
            Ok(id) => {
                self.rpc.purposes.insert((peer, id), purpose);
                Ok(id)
            }
            Err(error) => {
                debug!("{peer:?}: {protocol:?} request not sent: {error:?}");
                Err(format!("{error:?}"))
            }
        }
    }

    /// Sends an application request again after `peer` answered it busy:
    /// its shared budget or our share of it, which we cannot see, was spent
    /// for the moment it named (the tracker holds the protocol back until
    /// then). At most [`BUSY_RETRIES_PER_REQUEST_MAX`] times, and only if no
    /// chunk came yet. Returns whether the request lives on under a new id.
    fn retry_when_busy(&mut self, now: Instant, peer: PeerId, id: RequestId) -> bool {
        if self.config.faults.ignore_busy_answers {
            // Such a node does not hold back, so a retry would go at once.
            return false;
        }
        let retry = matches!(
            self.rpc.purposes.get(&(peer, id)),
            Some(Purpose::Application { chunks, busy_retries, .. })
                if chunks.is_empty() && *busy_retries < BUSY_RETRIES_PER_REQUEST_MAX
        );
        if !retry {
            return false;
        }
        let Some(Purpose::Application {
            tag,
            protocol,
            chunks,
            range,
            invalid,
            body,
            busy_retries,
        }) = self.rpc.purposes.remove(&(peer, id))
        else {
            unreachable!("matched as an application request just above")
        };
        let purpose = Purpose::Application {
            tag,
            protocol,
            chunks,
            range,
            invalid,
            body: body.clone(),
            busy_retries: busy_retries.saturating_add(1),
        };
        match self.request(now, peer, protocol, body, purpose) {
            Ok(_) => {
                self.out.counters.requests_retried_busy += 1;
                true
            }
            Err(error) => {
                // Queue full: the busy answer goes to the application.
                debug!("{peer:?}: busy request {id:?} not retried: {error}");
                self.rpc.purposes.insert(
                    (peer, id),
                    Purpose::Application {
                        tag,
                        protocol,
                        chunks: Vec::new(),
                        range: None,
                        invalid: None,
                        body: Vec::new(),
                        busy_retries,
                    },
                );
                false
            }
        }
    }

    /// Writes the requests the tracker releases now.
    pub(super) fn transmit_requests(&mut self, now: Instant) {
        while let Some((peer, request)) = self.rpc.outbound.poll_transmit(now) {
            if let Some(conn) = self.conns.conn_of(&peer) {
                self.out.counters.requests_sent += 1;
                self.conns.send_raw(conn, &request.encode(), &mut self.out);
            }
        }
    }

    /// Expires our requests and peers' requests that ran out of time.
    pub(super) fn on_request_timeouts(&mut self, now: Instant) {
        // Finish every expired request before scoring any: a report may
        // disconnect a peer whose other expired requests the tracker has
        // already let go of.
        self.rpc.outbound.handle_timeout(now);
        let expired: Vec<_> = std::iter::from_fn(|| self.rpc.outbound.poll_timed_out()).collect();
        for &TimedOut { peer, id, kind, .. } in &expired {
            self.out.counters.requests_timed_out += 1;
            debug!("{peer:?}: request {id:?} timed out ({kind:?})");
            let error = match kind {
                crate::reqresp::TimeoutKind::FirstChunk => RequestError::FirstChunkTimeout,
                crate::reqresp::TimeoutKind::Response => RequestError::ResponseTimeout,
            };
            self.finish_request(peer, id, Err(error));
        }
        // Requests sent together expire together: one stall is one event,
        // however many requests it caught.
        // Per peer: how many expired, and the earliest sent among them.
        let mut expired_per_peer: BTreeMap<PeerId, (u32, Instant)> = BTreeMap::new();
        for timed_out in expired {
            let entry = expired_per_peer
                .entry(timed_out.peer)
                .or_insert((0, timed_out.sent_at));
            entry.0 += 1;
            entry.1 = entry.1.min(timed_out.sent_at);
        }
        for (peer, (count, first_sent_at)) in expired_per_peer {
            // One stall can happen to anyone; a peer that lets request
            // after request expire while it keeps talking to us is of no use
            // and holds a slot. One we have heard nothing from since we
            // asked may be frozen or cut off (a partition, a stalled link):
            // the silence timeout deals with it, and it must not come back
            // scored out, nor with a score below zero that keeps it out of
            // our gossip mesh after the network heals. Its timeouts are
            // charged only if it speaks again on this connection (then it
            // was there and did not answer); a cut that outlives the
            // connection takes them with it.
            // (Heard lately alone is not enough: a peer frozen right after
            // its last message is still "heard lately" when our requests
            // to it expire.)
            let in_a_row = match self.conns.established_mut(&peer) {
                Some(established) => {
                    let heard_since_asked = established.last_received >= first_sent_at
                        && now.saturating_duration_since(established.last_received)
                            < TIMEOUT_ESCALATION_HEARD_WITHIN;
                    if !heard_since_asked {
                        debug!(
                            "{peer:?}: silent since we asked: its timeouts wait until it speaks"
                        );
                        established.timeouts_uncharged =
                            established.timeouts_uncharged.saturating_add(count);
                        continue;
                    }
                    established.timeouts_in_a_row = established.timeouts_in_a_row.saturating_add(1);
                    established.timeouts_in_a_row
                }
                None => continue,
            };
            if in_a_row >= TIMEOUTS_IN_A_ROW_TOLERATED {
                self.report(now, peer, Report::Penalty(Penalty::High));
            } else {
                for _ in 0..count {
                    self.report(now, peer, Report::Penalty(Penalty::Low));
                }
            }
        }
        self.rpc.inbound.handle_timeout(now);
        while let Some((peer, id)) = self.rpc.inbound.poll_expired() {
            debug!("{peer:?}: its request {id:?} expired unanswered");
        }
    }

    /// A peer is gone: its open requests fail, its requests to us are dropped.
    pub(super) fn on_peer_gone(&mut self, peer: PeerId) {
        // The tracker names every request queued or in flight, so no purpose
        // of this peer outlives it.
        for id in self.rpc.outbound.handle_peer_disconnected(&peer) {
            self.finish_request(peer, id, Err(RequestError::Disconnected));
        }
        debug_assert!(self
            .rpc
            .purposes
            .range((peer, RequestId(0))..=(peer, RequestId(u64::MAX)))
            .next()
            .is_none());
        self.rpc.inbound.handle_peer_disconnected(&peer);
    }

    pub(super) fn register_protocol(&mut self, name: ProtocolName, quota: Quota) {
        let inbound = self.rpc.inbound.register_application(name, quota);
        let outbound = self.rpc.outbound.register_application(name, quota);
        if inbound.is_err() || outbound.is_err() {
            warn!(
                "protocol {}: not registered: too many application protocols",
                name.as_str()
            );
        }
    }

    pub(super) fn application_request(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: ProtocolId,
        body: Vec<u8>,
        tag: u64,
    ) {
        let refusal = if !self.conns.is_connected(&peer) {
            Some("not connected".to_string())
        } else if protocol == ProtocolId::Goodbye {
            Some("use Command::Disconnect to say goodbye".to_string())
        } else {
            None
        };
        let range = match protocol {
            ProtocolId::BlocksByRange => BlocksByRangeRequest::decode(&body)
                .ok()
                .map(|request| RangeCheck::new(request.start_slot, request.end_slot())),
            _ => None,
        };
        let purpose = Purpose::Application {
            tag,
            protocol,
            chunks: Vec::new(),
            range,
            invalid: None,
            body: body.clone(),
            busy_retries: 0,
        };
        let result = match refusal {
            Some(refusal) => Err(refusal),
            None => self.request(now, peer, protocol, body, purpose),
        };
        if let Err(error) = result {
            self.out.notify(Notification::RequestFailed {
                peer,
                tag,
                protocol,
                error: RequestError::NotSent(error),
            });
        }
    }

    pub(super) fn application_respond(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: RequestId,
        answer: Answer,
    ) {
        self.answer(now, peer, id, answer);
    }

    /// Our Metadata is unchanged but something peers fetch after a new
    /// sequence number is not (our discovery record): a new number makes
    /// them ask again at their next Ping.
    pub(super) fn bump_metadata_seq(&mut self) {
        self.rpc.metadata.seq = self.rpc.metadata.seq.saturating_add(1);
    }

    /// Our Metadata lists `topics` (our subscriptions) from now on, with a
    /// new sequence number. They always fit: the router subscribes to at
    /// most `METADATA_TOPICS_MAX` topics, each a valid topic name.
    pub(super) fn set_topics(&mut self, topics: Vec<String>) {
        let metadata = Metadata {
            seq: self.rpc.metadata.seq.saturating_add(1),
            topics,
            capabilities: self.rpc.metadata.capabilities,
        };
        assert!(
            metadata.is_valid(),
            "subscriptions beyond the Metadata limits"
        );
        self.rpc.metadata = metadata;
    }
}
