//! Serving finalized history that the chain store keeps on disk only.
//!
//! # Design
//! The chain store holds the unfinalized chain and a bounded tail of
//! finalized history (`ChainStore::history_floor` is where it starts); a
//! node started on a long stored chain loads only from its finalized block
//! up. A BlocksByRange request that starts below the floor is answered
//! from the driver's store: the node asks for the part below the floor
//! (`Action::ReadBlocks`, limited to the request's chunks and the peer's
//! answer budget), and when the blocks come back (`Input::BlocksRead`)
//! appends what it holds in memory from the floor up and answers.
//!
//! ```text
//!  BlocksByRange [start, end), start < floor
//!     ├─ Action::ReadBlocks [start, min(end, floor)) ──► driver's store
//!     │                                                        │
//!     ◄──────────────────── Input::BlocksRead { blocks } ◄──────┘
//!     └─ answer: read blocks ++ memory [floor, end), within the budget
//! ```
//!
//! # Security
//! At most [`HISTORY_READS_MAX`] reads are open at once, each at most
//! `ANSWER_BLOCK_BYTES_MAX` of blocks, so peers asking for old history
//! cost bounded memory; a request over the cap gets a busy answer (the
//! requester retries later), and the per-peer BlocksByRange quota already
//! charged it. The node trusts its own store no further than its linkage:
//! read blocks out of slot order or not linked to their parents, or to the
//! first block held in memory, cut the answer short (and are logged as a
//! damaged store), so a peer is never sent a chain with a gap.

use std::collections::BTreeMap;

use log::{debug, error};

use super::Node;
use crate::chain::block::BLOCK_BYTES_MAX;
use crate::chain::SignedBlock;
use crate::identity::PeerId;
use crate::io::Action;
use crate::reqresp::{Answer, RequestId, ResultCode};
use crate::time::Instant;
use crate::work::BlockRead;

/// Reads of history open at once: 8, each at most `ANSWER_BLOCK_BYTES_MAX`
/// (4 MiB) of blocks, 32 MiB in all. Enough to serve several syncing peers
/// from disk while the store's page cache does the heavy lifting.
pub const HISTORY_READS_MAX: usize = 8;

/// What the node asked its driver to read, and for whom.
pub(super) struct HistoryPart {
    next_id: u64,
    open: BTreeMap<u64, OpenRead>,
}

/// One BlocksByRange answer waiting for its blocks from the store.
struct OpenRead {
    peer: PeerId,
    request: RequestId,
    start_slot: u64,
    end_slot: u64,
    /// The history floor when the read was asked for.
    floor: u64,
    chunks_max: usize,
    budget_bytes: usize,
}

impl HistoryPart {
    pub(super) fn new() -> HistoryPart {
        HistoryPart {
            next_id: 0,
            open: BTreeMap::new(),
        }
    }
}

/// The busy answer: the requester retries later (see `BUSY_MESSAGE_PREFIX`).
fn busy(why: &str) -> Answer {
    Answer::Error {
        code: ResultCode::ResourceUnavailable,
        message: format!("{}: {why}", crate::reqresp::inbound::BUSY_MESSAGE_PREFIX),
    }
}

impl Node {
    /// Answers BlocksByRange `[start_slot, end_slot)` from `floor` (the
    /// chain store's history floor, above `start_slot`) by reading the part
    /// below it from the store first. Returns the answer to give now, if it
    /// cannot wait for a read.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve_range_from_history(
        &mut self,
        peer: PeerId,
        request: RequestId,
        start_slot: u64,
        end_slot: u64,
        floor: u64,
        chunks_max: usize,
        budget_bytes: usize,
    ) -> Option<Answer> {
        if budget_bytes < BLOCK_BYTES_MAX {
            // Not a read for nothing: an answer from disk waits for room
            // for one full block in what the peer has yet to take.
            return Some(busy("answers to this peer are still being written"));
        }
        if self.history.open.len() >= HISTORY_READS_MAX {
            self.out.counters.history_reads_refused += 1;
            return Some(busy("every read of stored history is taken"));
        }
        let id = self.history.next_id;
        self.history.next_id += 1;
        self.history.open.insert(
            id,
            OpenRead {
                peer,
                request,
                start_slot,
                end_slot,
                floor,
                chunks_max,
                budget_bytes,
            },
        );
        self.out.counters.history_reads += 1;
        self.out.push(Action::ReadBlocks(BlockRead {
            id,
            start_slot,
            end_slot: end_slot.min(floor),
            blocks_max: chunks_max,
            bytes_max: budget_bytes,
        }));
        None
    }

    /// The driver read the blocks of read `id`: answer the request with
    /// them and what memory holds above them.
    pub(super) fn on_blocks_read(
        &mut self,
        now: Instant,
        id: u64,
        blocks: Vec<SignedBlock>,
        complete: bool,
    ) {
        let Some(read) = self.history.open.remove(&id) else {
            debug!("blocks read for unknown read {id}: ignored");
            return;
        };
        self.out.counters.history_blocks_read += blocks.len() as u64;
        let read_end = read.end_slot.min(read.floor);
        let mut linked: Vec<SignedBlock> = Vec::with_capacity(blocks.len());
        let mut whole = complete;
        for block in blocks {
            let slot = block.slot();
            let in_order = slot >= read.start_slot
                && slot < read_end
                && linked
                    .last()
                    .is_none_or(|last| slot > last.slot() && block.parent_root() == last.root());
            if !in_order {
                error!(
                    "the block store answered a read of slots {}..{read_end} with block {} at \
                     slot {slot}, out of order or not linked: answering with the blocks before it",
                    read.start_slot,
                    block.root()
                );
                whole = false;
                break;
            }
            linked.push(block);
        }
        if linked.is_empty() && !whole {
            // Nothing that starts the range can be vouched for: an empty
            // answer would claim the slots are empty.
            let answer = Answer::Error {
                code: ResultCode::ResourceUnavailable,
                message: format!("stored history below slot {} cannot be read", read.floor),
            };
            self.answer(now, read.peer, read.request, answer);
            return;
        }
        let mut memory = Vec::new();
        if whole && read.end_slot > read.floor {
            let store = self.chain.store();
            if store.history_floor() != Some(read.floor) {
                // Evicted meanwhile: the memory part would leave a gap.
                let answer = busy("stored history moved while it was read");
                self.answer(now, read.peer, read.request, answer);
                return;
            }
            memory = store.canonical_range(read.floor, read.end_slot - read.floor);
            let joins = match (linked.last(), memory.first()) {
                (Some(last), Some(first)) => first.parent_root() == last.root(),
                _ => true,
            };
            if !joins {
                error!(
                    "the block store's history below slot {} does not join the chain held in \
                     memory: answering with the stored part only",
                    read.floor
                );
                memory.clear();
            }
        }
        let blocks: Vec<&SignedBlock> = linked.iter().chain(memory).take(read.chunks_max).collect();
        match super::rpc::blocks_within(&blocks, read.budget_bytes) {
            Ok(blocks) => {
                let (conns, out) = (&mut self.conns, &mut self.out);
                let request = (read.peer, read.request);
                self.rpc.send_chunks(conns, out, now, request, blocks);
            }
            Err(busy) => self.answer(now, read.peer, read.request, busy),
        }
    }
}
