//! Fuzz entry points for the sync machines: arbitrary bytes become a
//! sequence of inputs (statuses, departures, answers, verification and
//! import results, time), and every bound is checked after every step.
//!
//! # Design
//! [`range_sync_script`] reads the bytes as operations, one byte of opcode
//! then its arguments; a script that runs out of bytes simply ends. Answers
//! are made up from the bytes (slots, links, sizes, errors), so the machine
//! sees well-formed and hostile answers alike; verification and import
//! results are made up too, including impossible ones (positions past the
//! batch), which the machine must tolerate. [`lookup_script`] does the same
//! for [`Lookups`].

use std::collections::BTreeMap;

use crate::chain::block::{body_root, BlockHeader, SIGNATURE_BYTES};
use crate::chain::{Checkpoint, ImportError, Root, SignedBlock};
use crate::identity::PeerId;
use crate::machine::Machine;
use crate::peer::score::Score;
use crate::time::{Duration, Instant};

use super::lookup::{KnownBlocks, LookupAction, LookupId, Lookups};
use super::range::{
    BatchId, BatchImportError, FetchError, PeerChain, RangeSync, SyncAction, SyncConfig,
    SyncCounters,
};

/// Operations one script may run: keeps each fuzz case fast.
pub const SCRIPT_OPERATIONS_MAX: usize = 2_000;
/// Peers a script plays.
const SCRIPT_PEERS: u8 = 6;

/// Reads arguments off the front of the fuzz input; zero once it runs out.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn peer(&mut self) -> PeerId {
        PeerId::from_bytes([self.u8() % SCRIPT_PEERS + 1; 32])
    }
}

/// A made-up block: unsigned, linked to `parent`.
fn made_up_block(slot: u64, parent: Root, body_bytes: usize) -> SignedBlock {
    let body = vec![slot as u8; body_bytes];
    SignedBlock {
        header: BlockHeader {
            slot,
            proposer_index: 0,
            parent_root: parent,
            body_root: body_root(&body),
        },
        body,
        signature: [0; SIGNATURE_BYTES],
    }
}

/// A made-up BlocksByRange answer for `[start, start + count)`: up to
/// `length` linked blocks, one per slot; `flags` makes it hostile (bit 0:
/// a gap in the links, bit 1: a block past the range, bit 2: two blocks of
/// one slot, bit 3: a skipped slot) and sets the body size (bits 4..8).
fn made_up_answer(start: u64, count: u64, length: u8, flags: u8) -> Vec<SignedBlock> {
    let length = u64::from(length % 70).min(count);
    let body_bytes = usize::from(flags >> 4) * 16;
    let mut blocks = Vec::new();
    let mut parent = Root([1; 32]);
    for slot in start..start + length {
        if flags & 8 != 0 && slot == start + 1 {
            continue;
        }
        let block = made_up_block(slot, parent, body_bytes);
        parent = block.root();
        blocks.push(block);
    }
    if flags & 1 != 0 && blocks.len() > 2 {
        blocks.remove(1);
    }
    if flags & 2 != 0 {
        blocks.push(made_up_block(start + count, parent, body_bytes));
    }
    if flags & 4 != 0 {
        if let Some(last) = blocks.last().cloned() {
            blocks.push(made_up_block(last.slot(), last.root(), body_bytes));
        }
    }
    blocks
}

/// Drives a [`RangeSync`] with the inputs `data` encodes and checks its
/// invariants after every step. Never panics unless the machine has a bug.
pub fn range_sync_script(data: &[u8]) {
    run_range_sync_script(data);
}

/// [`range_sync_script`], returning the counters so tests can check that a
/// script reaches deep into the machine.
fn run_range_sync_script(data: &[u8]) -> SyncCounters {
    let mut bytes = Bytes { data };
    let small = bytes.u8() % 2 == 0;
    let config = SyncConfig {
        peers_min: usize::from(bytes.u8() % 3) + 1,
        // A small buffer makes evictions and the reserve matter.
        block_bytes_max: if small {
            512
        } else {
            SyncConfig::default().block_bytes_max
        },
        buffer_bytes_max: if small {
            2 * 64 * 512
        } else {
            SyncConfig::default().buffer_bytes_max
        },
        ..SyncConfig::default()
    };
    let buffer_bytes_max = config.buffer_bytes_max;
    let mut sync = RangeSync::new(config, [bytes.u8(); 32]);
    let mut now = Instant::from_micros(1);
    let mut requests: BTreeMap<BatchId, (u64, u64)> = BTreeMap::new();
    let mut verifications: BTreeMap<BatchId, Vec<SignedBlock>> = BTreeMap::new();
    let mut imports: Vec<BatchId> = Vec::new();
    let mut operations = 0;
    while !bytes.is_empty() && operations < SCRIPT_OPERATIONS_MAX {
        operations += 1;
        match bytes.u8() % 8 {
            0 => {
                let peer = bytes.peer();
                let head_slot = u64::from(bytes.u16());
                let finalized_slot = head_slot.saturating_sub(u64::from(bytes.u8()));
                let score = Score::from_points(i64::from(bytes.u8() as i8));
                let chain = PeerChain {
                    head_slot,
                    head_root: Root([bytes.u8(); 32]),
                    finalized_slot,
                    finalized_root: Root([0; 32]),
                };
                sync.handle_peer_status(now, peer, chain, score);
            }
            1 => {
                let peer = bytes.peer();
                sync.handle_peer_gone(now, peer);
            }
            2 => {
                let head_slot = u64::from(bytes.u16());
                let finalized_slot = head_slot.saturating_sub(u64::from(bytes.u8()));
                let head = Checkpoint {
                    root: Root([1; 32]),
                    slot: head_slot,
                };
                let finalized = Checkpoint {
                    root: Root([bytes.u8() % 2; 32]),
                    slot: finalized_slot,
                };
                sync.handle_local_chain(now, head, finalized);
            }
            3 => {
                let Some((&batch, &(start, count))) = requests
                    .iter()
                    .nth(usize::from(bytes.u8()) % requests.len().max(1))
                else {
                    continue;
                };
                requests.remove(&batch);
                let result = match bytes.u8() % 6 {
                    0 => Err(FetchError::Timeout),
                    1 => Err(FetchError::ErrorCode(3)),
                    2 => Err(FetchError::PeerGone),
                    _ => Ok(made_up_answer(start, count, bytes.u8(), bytes.u8())),
                };
                sync.handle_response(now, batch, result);
            }
            4 => {
                let Some(&batch) = verifications
                    .keys()
                    .nth(usize::from(bytes.u8()) % verifications.len().max(1))
                else {
                    continue;
                };
                let blocks = verifications.remove(&batch).unwrap_or_default();
                let result = if bytes.u8() % 3 == 0 {
                    // Positions may even lie past the batch: tolerated.
                    Err(vec![usize::from(bytes.u8()) % (blocks.len() + 2)])
                } else {
                    Ok(())
                };
                sync.handle_verified(now, batch, blocks, result);
            }
            5 => {
                if imports.is_empty() {
                    continue;
                }
                let batch = imports.remove(0);
                let error = match bytes.u8() % 6 {
                    0 => Some(ImportError::UnknownParent(Root([2; 32]))),
                    1 => Some(ImportError::InvalidParent(Root([3; 32]))),
                    2 => Some(ImportError::Full),
                    _ => None,
                };
                let result = match error {
                    Some(error) => Err(BatchImportError {
                        index: usize::from(bytes.u8() % 4),
                        error,
                    }),
                    None => Ok(()),
                };
                sync.handle_imported(now, batch, result);
            }
            6 => {
                now = now + Duration::from_millis(u64::from(bytes.u16()) * 16);
                sync.handle_timeout(now);
            }
            _ => {
                if let Some(deadline) = sync.next_deadline() {
                    now = now.max(deadline);
                    sync.handle_timeout(now);
                }
            }
        }
        sync.assert_invariants();
        while let Some(action) = sync.poll(now) {
            sync.assert_invariants();
            match action {
                SyncAction::Request {
                    batch,
                    start_slot,
                    count,
                    ..
                } => {
                    assert!((1..=64).contains(&count));
                    requests.insert(batch, (start_slot, count));
                }
                SyncAction::Verify { batch, blocks } => {
                    verifications.insert(batch, blocks);
                }
                SyncAction::Import { batch, .. } => imports.push(batch),
                SyncAction::Penalise { .. }
                | SyncAction::Progress(_)
                | SyncAction::Synced { .. } => {}
            }
        }
        assert!(sync.buffered_bytes() <= buffer_bytes_max);
        assert!(sync.requests_in_flight() <= 64);
        // Requests the machine timed out stay here until answered: forget
        // the oldest so the script's own memory stays bounded.
        while requests.len() > 4 * 64 {
            requests.pop_first();
        }
    }
    sync.counters()
}

/// A chain view made of a few roots, for [`lookup_script`].
struct ScriptChain {
    known: Vec<Root>,
    invalid: Vec<Root>,
}

impl KnownBlocks for ScriptChain {
    fn contains(&self, root: &Root) -> bool {
        self.known.contains(root)
    }

    fn is_known_invalid(&self, root: &Root) -> bool {
        self.invalid.contains(root)
    }
}

/// Drives [`Lookups`] with the inputs `data` encodes (orphans, answers,
/// departures, time) and checks its invariants after every step.
pub fn lookup_script(data: &[u8]) {
    let mut bytes = Bytes { data };
    let chain = ScriptChain {
        known: vec![Root([0; 32]), Root([1; 32])],
        invalid: vec![Root([2; 32])],
    };
    let mut lookups = Lookups::new();
    let mut now = Instant::from_micros(1);
    let mut asked: BTreeMap<LookupId, (Root, u64)> = BTreeMap::new();
    let mut operations = 0;
    while !bytes.is_empty() && operations < SCRIPT_OPERATIONS_MAX {
        operations += 1;
        match bytes.u8() % 5 {
            0 => {
                let peer = bytes.peer();
                lookups.handle_peer_connected(now, peer);
            }
            1 => {
                let peer = bytes.peer();
                lookups.handle_peer_gone(now, peer);
            }
            2 => {
                let peer = bytes.peer();
                let parent = Root([bytes.u8() % 8; 32]);
                let block = made_up_block(u64::from(bytes.u16()), parent, 8);
                lookups.handle_unknown_parent(now, block, peer, &chain);
            }
            3 => {
                let Some((&lookup, &(wanted, request))) = asked
                    .iter()
                    .nth(usize::from(bytes.u8()) % asked.len().max(1))
                else {
                    continue;
                };
                asked.remove(&lookup);
                let result = match bytes.u8() % 4 {
                    0 => Err(FetchError::Timeout),
                    1 => Ok(Vec::new()),
                    _ => {
                        // The root asked for cannot be forged, so a made-up
                        // block is always the wrong one, unless it is asked for.
                        let parent = Root([bytes.u8() % 8; 32]);
                        let block = made_up_block(u64::from(bytes.u16()), parent, 8);
                        let _ = wanted;
                        Ok(vec![block])
                    }
                };
                lookups.handle_response(now, lookup, request, result, &chain);
            }
            _ => {
                now = now + Duration::from_millis(u64::from(bytes.u16()) * 64);
                lookups.handle_timeout(now);
            }
        }
        lookups.assert_invariants();
        while let Some(action) = lookups.poll(now) {
            lookups.assert_invariants();
            if let LookupAction::RequestRoots {
                lookup,
                roots,
                request,
                ..
            } = action
            {
                assert_eq!(roots.len(), 1);
                asked.insert(lookup, (roots[0], request));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few fixed scripts, including the empty one and long noise.
    fn corpus() -> Vec<Vec<u8>> {
        let mut noise = Vec::new();
        let mut state = 0x1234_5678_u32;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            noise.push(state as u8);
        }
        // Statuses from three peers far ahead, then many rounds of drains,
        // answers, verifications and imports.
        let mut scripted = vec![0, 1, 7];
        for peer in 0..3u8 {
            scripted.extend([0, peer, 0x02, 0x00, 10, 50, 9]);
        }
        for round in 0..200u8 {
            // A full, well-formed answer; every eighth a hostile one.
            let flags = if round % 8 == 7 { round % 16 } else { 0x30 };
            scripted.extend([3, round, 5, 64, flags]);
            scripted.extend([4, round, 1]);
            scripted.extend([5, 5]);
            scripted.extend([6, 0, round]);
        }
        vec![Vec::new(), vec![0], vec![0xff; 64], noise, scripted]
    }

    #[test]
    fn range_sync_scripts_keep_the_bounds() {
        let mut total = SyncCounters::default();
        for script in corpus() {
            let counters = run_range_sync_script(&script);
            total.requests_sent += counters.requests_sent;
            total.batches_verified += counters.batches_verified;
            total.batches_imported += counters.batches_imported;
            total.penalties += counters.penalties;
        }
        // The corpus reaches every stage, so the checks above mean something.
        assert!(total.requests_sent > 10, "{total:?}");
        assert!(total.batches_verified > 0, "{total:?}");
        assert!(total.batches_imported > 0, "{total:?}");
        assert!(total.penalties > 0, "{total:?}");
    }

    #[test]
    fn lookup_scripts_keep_the_bounds() {
        for script in corpus() {
            lookup_script(&script);
        }
    }

    /// Many seeded random scripts: a cheap stand-in for the fuzzer in CI.
    #[test]
    fn random_scripts_keep_the_bounds() {
        let mut state = 0x9E37_79B9_u32;
        for _ in 0..200 {
            let script: Vec<u8> = (0..4_096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            range_sync_script(&script);
            lookup_script(&script);
        }
    }

    #[test]
    fn scripted_statuses_start_requests() {
        // Guards the corpus itself: the scripted run must reach the request path.
        let mut sync = RangeSync::new(
            SyncConfig {
                peers_min: 1,
                ..SyncConfig::default()
            },
            [0; 32],
        );
        let chain = PeerChain {
            head_slot: 512,
            head_root: Root([9; 32]),
            finalized_slot: 502,
            finalized_root: Root([0; 32]),
        };
        sync.handle_peer_status(
            Instant::from_micros(1),
            PeerId::from_bytes([1; 32]),
            chain,
            Score::ZERO,
        );
        let mut requests = 0;
        while let Some(action) = sync.poll(Instant::from_micros(1)) {
            if matches!(action, SyncAction::Request { .. }) {
                requests += 1;
            }
        }
        // One 64-slot request's reserve at the first estimate fills the
        // bytes a round starts with: more follow as answers come in time.
        assert_eq!(requests, 1, "one request until an answer is measured");
    }
}
