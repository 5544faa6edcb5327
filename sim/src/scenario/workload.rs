//! Pieces the request scenarios share: nodes with a chain, checks of what
//! comes back, honest request traffic, and wake-up tokens.

use std::collections::{BTreeMap, BTreeSet};

use meshsync_core::chain::{ChainConfig, ChainStore, SignedBlock, StoreLimits};
use meshsync_core::io::RequestError;
use meshsync_core::reqresp::bodies::{BlocksByRangeRequest, Status};
use meshsync_core::reqresp::{Body, ProtocolId};
use meshsync_core::{Config, Duration, Instant, Notification};

use crate::rng;
use crate::sim::{NodeIndex, Sim};

/// Blocks in the chain every serving node has, unless a scenario says otherwise.
pub const CHAIN_HEAD_SLOT_DEFAULT: u64 = 256;
/// Body bytes per block: small, so a 32-block answer is about 20 KiB.
pub const BLOCK_BYTES_DEFAULT: usize = 512;

/// The devnet chain of `head_slot` blocks with `body_bytes`-byte bodies on
/// `sim`'s network, from the world's chain cache: signed once per cache and
/// shared (signing is the slow part; see [`crate::chains`]).
pub fn devnet_chain(sim: &Sim, head_slot: u64, body_bytes: usize) -> ChainConfig {
    let config = sim.config();
    config
        .chains
        .devnet_chain(config.network_id, head_slot, body_bytes)
}

/// Unix milliseconds at the simulator's time origin for nodes that hold a
/// pre-signed devnet chain of `head_slot` blocks: half a slot after that
/// slot starts, so the chain is in the past (nodes refuse claims and blocks
/// from beyond their clock's slot).
pub fn clock_after_chain_ms(head_slot: u64) -> u64 {
    let slot_ms = meshsync_core::chain::DEVNET_SLOT_DURATION_MS;
    head_slot
        .saturating_mul(slot_ms)
        .saturating_add(slot_ms / 2)
}

/// A node configuration for `sim` holding the devnet chain of `head_slot`
/// blocks with `body_bytes`-byte bodies (see [`devnet_chain`]), its clock
/// set after the chain ([`clock_after_chain_ms`]).
pub fn chain_config(sim: &Sim, head_slot: u64, body_bytes: usize) -> Config {
    let mut config = sim.node_config();
    config.chain = devnet_chain(sim, head_slot, body_bytes);
    config.unix_ms_at_origin = clock_after_chain_ms(head_slot);
    config
}

/// The Status a node configured by [`chain_config`] sends: requests carry it.
pub fn chain_status(sim: &Sim, head_slot: u64, body_bytes: usize) -> Status {
    let chain = devnet_chain(sim, head_slot, body_bytes);
    let (store, _) = ChainStore::from_blocks(
        &chain.genesis,
        StoreLimits::default(),
        None,
        chain.stored.iter().cloned(),
    );
    store.status()
}

/// Checks that `chunks` answer `request` from a chain of `head_slot`
/// blocks: one block per slot of the range that the chain has, in slot
/// order, each linked to the one before by its parent root.
pub fn check_range(
    chunks: &[Vec<u8>],
    request: BlocksByRangeRequest,
    head_slot: u64,
) -> Result<(), String> {
    let first = request.start_slot.max(1);
    let end = request.end_slot().min(head_slot + 1);
    let expected = end.saturating_sub(first);
    if chunks.len() as u64 != expected {
        return Err(format!(
            "{} blocks for slots {first}..{end}, expected {expected}",
            chunks.len()
        ));
    }
    let mut parent: Option<meshsync_core::types::Root> = None;
    for (offset, block) in chunks.iter().enumerate() {
        let Ok(block) = SignedBlock::decode(block) else {
            return Err(format!("chunk {offset} is not a block"));
        };
        let (slot, parent_root) = (block.slot(), block.parent_root());
        if slot != first + offset as u64 {
            return Err(format!("chunk {offset} is slot {slot}"));
        }
        if parent.is_some_and(|root| root != parent_root) {
            return Err(format!("slot {slot} does not link to slot {}", slot - 1));
        }
        parent = Some(block.root());
    }
    Ok(())
}

/// A wake-up token: what it is for (`kind`) and for which node or item (`index`).
pub fn token(kind: u16, index: usize) -> u64 {
    (u64::from(kind) << 48) | (index as u64 & ((1 << 48) - 1))
}

/// The kind and index of a [`token`].
pub fn split_token(token: u64) -> (u16, usize) {
    // The top 16 bits are the kind; the rest fit in usize on 64-bit targets.
    ((token >> 48) as u16, (token & ((1 << 48) - 1)) as usize)
}

/// A request the traffic is waiting on.
#[derive(Clone, Copy, Debug)]
enum Asked {
    Range(BlocksByRangeRequest),
    Status,
}

/// What honest traffic saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficCounts {
    /// Requests given to nodes.
    pub issued: u64,
    /// Answered with what was asked for.
    pub answered: u64,
    /// Answered with something that does not check out.
    pub invalid: u64,
    /// Failed (refused, timed out, disconnected, not sent).
    pub failed: u64,
    /// Ticks where the requester had no server connected to ask.
    pub no_server: u64,
}

/// Honest nodes asking each other for blocks and status at a steady rate:
/// every `interval` (each requester at its own random phase), a requester
/// asks one randomly chosen connected server for `range_slots` blocks at a
/// random place in the chain, or, one time in `status_one_in`, for its Status.
#[derive(Clone, Debug)]
pub struct HonestTraffic {
    /// The nodes that ask.
    pub requesters: Vec<NodeIndex>,
    /// The nodes they may ask.
    pub servers: BTreeSet<NodeIndex>,
    /// Time between one requester's requests.
    pub interval: Duration,
    /// No request before this...
    pub start_at: Instant,
    /// ... nor after this.
    pub stop_at: Instant,
    /// One request in this many is a Status; the rest are ranges.
    pub status_one_in: u64,
    /// Blocks per range request.
    pub range_slots: u64,
    /// The servers' chain length.
    pub head_slot: u64,
    /// The Status requesters send.
    pub status: Status,
    /// The wake-up kind this traffic owns.
    pub token_kind: u16,
    /// Requests not yet answered nor failed, and when each was issued.
    open: BTreeMap<(NodeIndex, u64), (Asked, Instant)>,
    counts: TrafficCounts,
}

impl HonestTraffic {
    /// Traffic with the given actors and timing; see the type's doc.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        requesters: Vec<NodeIndex>,
        servers: BTreeSet<NodeIndex>,
        interval: Duration,
        start_at: Instant,
        stop_at: Instant,
        head_slot: u64,
        status: Status,
        token_kind: u16,
    ) -> HonestTraffic {
        HonestTraffic {
            requesters,
            servers,
            interval,
            start_at,
            stop_at,
            status_one_in: 8,
            range_slots: 32,
            head_slot,
            status,
            token_kind,
            open: BTreeMap::new(),
            counts: TrafficCounts::default(),
        }
    }

    /// What it saw so far.
    pub fn counts(&self) -> TrafficCounts {
        self.counts
    }

    /// Requests still open (neither answered nor failed) at `now` that were
    /// issued less than `age` before it: a bound judged at the end of a run
    /// forgives those that have not had their lifetime yet.
    pub fn open_younger_than(&self, now: Instant, age: Duration) -> u64 {
        self.open
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < age)
            .count() as u64
    }

    /// Schedules each requester's first request at a random phase after `start_at`.
    pub fn schedule(&self, sim: &mut Sim) {
        let interval_us = u64::try_from(self.interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for &requester in &self.requesters {
            let phase = rng::below(sim.scenario_rng(), interval_us);
            sim.wake_at(
                self.start_at + Duration::from_micros(phase),
                token(self.token_kind, requester.0),
            );
        }
    }

    /// A requester's turn: one request, and the next turn scheduled.
    pub fn on_wake(&mut self, sim: &mut Sim, requester: NodeIndex) {
        if sim.now() > self.stop_at {
            return;
        }
        sim.wake_at(
            sim.now() + self.interval,
            token(self.token_kind, requester.0),
        );
        if !sim.is_up(requester) {
            return;
        }
        let servers: Vec<NodeIndex> = sim
            .peers_of(requester)
            .into_iter()
            .filter(|peer| self.servers.contains(peer))
            .collect();
        if servers.is_empty() {
            self.counts.no_server += 1;
            return;
        }
        let server = servers[rng::index(sim.scenario_rng(), servers.len())];
        let (asked, protocol, body) = if rng::below(sim.scenario_rng(), self.status_one_in) == 0 {
            (Asked::Status, ProtocolId::Status, self.status.encode())
        } else {
            let slots = self.range_slots.min(self.head_slot).max(1);
            let start_slot = 1 + rng::below(sim.scenario_rng(), self.head_slot - slots + 1);
            let range = BlocksByRangeRequest {
                start_slot,
                count: slots,
            };
            (
                Asked::Range(range),
                ProtocolId::BlocksByRange,
                range.encode(),
            )
        };
        let tag = sim.request(requester, server, protocol, body);
        self.counts.issued += 1;
        self.open.insert((requester, tag), (asked, sim.now()));
    }

    /// Handles an outcome of one of its requests; false if `notification` is not one.
    pub fn on_notification(&mut self, node: NodeIndex, notification: &Notification) -> bool {
        match notification {
            Notification::Response { tag, chunks, .. } => {
                let Some((asked, _)) = self.open.remove(&(node, *tag)) else {
                    return false;
                };
                let valid = match asked {
                    Asked::Range(range) => check_range(chunks, range, self.head_slot).is_ok(),
                    Asked::Status => {
                        chunks.len() == 1
                            && Status::decode(&chunks[0])
                                .is_ok_and(|status| status.head_slot == self.head_slot)
                    }
                };
                if valid {
                    self.counts.answered += 1;
                } else {
                    self.counts.invalid += 1;
                }
                true
            }
            Notification::RequestFailed { tag, error, .. } => {
                if self.open.remove(&(node, *tag)).is_none() {
                    return false;
                }
                log::debug!("{node}: honest request {tag} failed: {error:?}");
                self.counts.failed += 1;
                true
            }
            _ => false,
        }
    }
}

/// A short name for a request error, for counts in outcomes.
pub fn error_kind(error: &RequestError) -> &'static str {
    match error {
        RequestError::NotSent(_) => "not_sent",
        RequestError::FirstChunkTimeout => "first_chunk_timeout",
        RequestError::ResponseTimeout => "response_timeout",
        RequestError::Refused { .. } => "refused",
        RequestError::InvalidResponse(_) => "invalid_response",
        RequestError::Disconnected => "disconnected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_against_the_chain() {
        let chain = ChainConfig::devnet_with_chain(1, 10, 64);
        let block_at = |chain: &ChainConfig, slot: u64| chain.stored[slot as usize - 1].encode();
        let blocks = |slots: std::ops::Range<u64>| -> Vec<Vec<u8>> {
            slots.map(|slot| block_at(&chain, slot)).collect()
        };
        let range = |start_slot, count| BlocksByRangeRequest { start_slot, count };
        assert_eq!(check_range(&blocks(3..7), range(3, 4), 10), Ok(()));
        assert_eq!(check_range(&blocks(8..11), range(8, 8), 10), Ok(()));
        assert_eq!(check_range(&blocks(1..3), range(0, 3), 10), Ok(()));
        assert!(check_range(&blocks(3..6), range(3, 4), 10).is_err());
        let mut swapped = blocks(3..7);
        swapped.swap(1, 2);
        assert!(check_range(&swapped, range(3, 4), 10).is_err());
        let other = ChainConfig::devnet_with_chain(2, 10, 64);
        let mut foreign = blocks(3..7);
        foreign[2] = block_at(&other, 5);
        assert!(check_range(&foreign, range(3, 4), 10).is_err());
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(split_token(token(3, 17)), (3, 17));
        assert_eq!(split_token(token(u16::MAX, 0)), (u16::MAX, 0));
        assert_ne!(token(1, 2), token(2, 1));
    }
}
