//! Counters the node keeps about itself, read by drivers for logs, metrics and
//! simulator summaries.

/// Monotonic event counts. Plain fields: reading them never changes behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Dials the core asked the driver for.
    pub dials_started: u64,
    /// Dials that failed or timed out.
    pub dials_failed: u64,
    /// Transport connections the driver reported opened.
    pub connections_opened: u64,
    /// Handshakes that ended with an accepted peer.
    pub handshakes_completed: u64,
    /// Connections refused during or right after the handshake, for any reason.
    pub handshakes_failed: u64,
    /// Of those: Noise errors and malformed payloads.
    pub refused_handshake_error: u64,
    /// Of those: identity signatures that did not verify.
    pub refused_bad_signature: u64,
    /// Of those: a different network id.
    pub refused_wrong_network: u64,
    /// Of those: an incompatible protocol version.
    pub refused_incompatible_version: u64,
    /// Of those: a dialled peer whose key was not the expected one.
    pub refused_unexpected_peer: u64,
    /// Of those: connections to ourselves.
    pub refused_self_connection: u64,
    /// Of those: second connections to a connected peer.
    pub refused_duplicate: u64,
    /// Of those: handshakes that did not finish in time.
    pub refused_timeout: u64,
    /// Of those: refused for lack of room (peers or handshakes at their cap, or shutting down).
    pub refused_no_room: u64,
    /// Of those: inbound handshakes refused because their address had
    /// `HANDSHAKES_PER_IP_MAX` in progress.
    pub refused_handshakes_from_ip: u64,
    /// Of those: inbound handshakes evicted, the oldest, for a newcomer
    /// when every slot was taken.
    pub handshakes_evicted: u64,
    /// Inbound handshakes given the short deadline because at least
    /// `HANDSHAKES_UNDER_PRESSURE_MIN` were in progress.
    pub handshakes_under_pressure: u64,
    /// Peers that went away, for any reason.
    pub peers_disconnected: u64,
    /// Of those: dropped for silence.
    pub peers_silent: u64,
    /// Of those: trimmed by the connection manager (we were above our target).
    pub peers_trimmed: u64,
    /// Connections closed for a protocol violation (bad MAC, oversize or undecodable frame).
    pub protocol_violations: u64,
    /// Logical messages received from established peers.
    pub messages_received: u64,
    /// Logical messages sent to established peers.
    pub messages_sent: u64,
    /// Pings sent.
    pub pings_sent: u64,
    /// Pongs received.
    pub pongs_received: u64,
    /// Goodbyes sent.
    pub goodbyes_sent: u64,
    /// Goodbyes received.
    pub goodbyes_received: u64,
    /// Requests we wrote to peers.
    pub requests_sent: u64,
    /// Peers' requests admitted and handled.
    pub requests_served: u64,
    /// Verified gossiped blocks whose parent we lack, left to range sync
    /// (more than the sync distance above our head) rather than looked up.
    pub orphans_left_to_range_sync: u64,
    /// Reads of finalized history asked of the driver's store, to serve a
    /// range that starts below what the chain store holds in memory.
    pub history_reads: u64,
    /// Blocks those reads brought back.
    pub history_blocks_read: u64,
    /// Ranges answered busy because `HISTORY_READS_MAX` reads were open.
    pub history_reads_refused: u64,
    /// Peers' requests refused by a quota (answered with result code 3):
    /// `requests_limited_peer + requests_limited_global`.
    pub requests_rate_limited: u64,
    /// Of those: over the peer's own quota, which it knows; a Low penalty each.
    pub requests_limited_peer: u64,
    /// Of those: over our shared serving budget or the peer's fair share of
    /// it, which the peer cannot see; answered `ResourceUnavailable` without
    /// any penalty.
    pub requests_limited_global: u64,
    /// Our application requests sent again after a peer answered them busy
    /// (at most `BUSY_RETRIES_PER_REQUEST_MAX` times each).
    pub requests_retried_busy: u64,
    /// Our requests that ran out of time.
    pub requests_timed_out: u64,
    /// Our requests answered completely.
    pub responses_received: u64,
    /// Answers discarded as late or for ids we never issued.
    pub responses_unexpected: u64,
    /// Peers banned for their score.
    pub peers_banned: u64,
    /// Gossip RPCs (logical messages of kind 32) received from accepted peers.
    pub gossip_rpcs_received: u64,
    /// New gossip messages handed to the application for validation.
    pub gossip_messages_received: u64,
    /// Gossip messages we published.
    pub gossip_messages_published: u64,
    /// Publishes refused (too large, duplicate, no peers).
    pub gossip_publish_failed: u64,
    /// Gossip messages the application accepted, and so forwarded to the mesh.
    pub gossip_messages_forwarded: u64,
    /// Gossip messages the application rejected (their senders are penalised).
    pub gossip_messages_rejected: u64,
    /// Gossip misbehaviours reported by the router (each also a score penalty).
    pub gossip_penalties: u64,
    /// Gossip RPCs dropped unread because their sender's gossip score is below the graylist threshold.
    pub gossip_rpcs_graylisted: u64,
    /// Peers disconnected because their gossip send queue overflowed.
    pub gossip_slow_peers: u64,
    /// Connections cut because they took nothing we wrote for `WRITE_STALL_TIMEOUT`.
    pub connections_stalled: u64,
    /// Gossiped blocks dropped unjudged: every verification slot, or the
    /// sender's share of them, was taken (not left marked as seen).
    pub gossip_verifications_deferred: u64,
    /// Gossiped blocks dropped unjudged because their sender was over its
    /// verification rate (each a Low penalty).
    pub gossip_verifications_over_rate: u64,
    /// Blocks we produced (signed as a proposer).
    pub blocks_produced: u64,
    /// Our proposer slots skipped because range sync was catching up.
    pub blocks_not_produced_syncing: u64,
    /// Our proposer slots skipped because the driver reported a failing
    /// store, an incomplete stored chain or an untrusted clock (`Input::Health`).
    pub blocks_not_produced_unhealthy: u64,
    /// Our proposer slots skipped for the signing watermark: the slot was
    /// at or below the key's watermark, or the watermark could not be made
    /// durable within the slot (each one a WARN naming the slot).
    pub blocks_not_produced_watermark: u64,
    /// Signing watermarks handed to the driver to make durable.
    pub watermarks_persisted: u64,
    /// Gossiped blocks not forwarded because our store was failing.
    pub blocks_ignored_store_failing: u64,
    /// Gossiped blocks dropped because their slot had not started by our
    /// clock (beyond `CLOCK_DISPARITY`): their sender's clock, or ours, is wrong.
    pub blocks_from_future: u64,
    /// Blocks imported into the fork choice (produced, gossiped or synced).
    pub blocks_imported: u64,
    /// Jobs handed to the driver (`Action::Work`).
    pub work_started: u64,
    /// Jobs whose output came back.
    pub work_done: u64,
    /// Jobs the driver failed to run (`Input::WorkFailed`): no peer was
    /// blamed for them.
    pub work_failed: u64,
    /// Penalties for what peers sent to sync (bad blocks, disproved answers).
    pub sync_penalties: u64,
    /// Status requests sent because a peer's gossiped blocks showed a gap lookups cannot fill.
    pub orphan_status_requests: u64,
    /// Statuses whose claims the clock or the genesis disproved (penalised, not used for sync).
    pub statuses_not_believed: u64,
    /// Claims from the future: Statuses whose head is beyond our clock's
    /// slot (also counted in `statuses_not_believed`) and blocks served to
    /// sync beyond it. Their sender's clock, or ours, is wrong; gossiped
    /// ones are `blocks_from_future`.
    pub claims_from_future: u64,
}
