//! What each request we sent is for, and what its answer must look like.
//!
//! The vocabulary shared by the req/resp glue (`rpc.rs`), which sends
//! requests and collects their answers, and the sync glue (`sync.rs`), which
//! asks for blocks and takes them: a leaf of the node module, importing
//! neither, so that the two do not import each other.

use crate::chain::{BlockHeader, Root, SignedBlock};
use crate::reqresp::ProtocolId;
use crate::sync::{BatchId, LookupId};

/// Who asked for the blocks a request fetches.
#[derive(Clone, Copy, Debug)]
pub(super) enum BlockFetch {
    /// A range-sync batch.
    Range(BatchId),
    /// A parent lookup's request (see `LookupAction::RequestRoots`).
    Lookup(LookupId, u64),
}

/// Why we sent a request, so its answer goes to the right place.
pub(super) enum Purpose {
    /// Our periodic Status exchange.
    Status,
    /// Keepalive.
    Ping,
    /// The peer's Metadata sequence number went up.
    Metadata,
    /// Blocks for range sync or a parent lookup, checked chunk by chunk.
    Blocks {
        fetch: BlockFetch,
        blocks: Vec<SignedBlock>,
        /// What each chunk must be, checked as it arrives.
        check: BlockAnswerCheck,
        /// Encoded bytes of `blocks`.
        bytes: usize,
        /// Bytes set aside for this answer; range sync may grow it.
        budget_bytes: usize,
        /// Set when a chunk broke the checks (and was penalised) or the
        /// answer outgrew our room for it; further chunks are dropped unread
        /// and the fetch fails.
        invalid: Option<AnswerFault>,
    },
    /// Discovery: the peer's own signed record (`discovery.rs`).
    PeerRecord,
    /// Discovery: a FIND_NODE query of the machine's.
    FindNode(crate::discovery::discover::QueryId),
    /// The application's `Command::Request`.
    Application {
        tag: u64,
        protocol: ProtocolId,
        chunks: Vec<Vec<u8>>,
        /// For BlocksByRange: what the answer must look like.
        range: Option<RangeCheck>,
        /// Set when the answer broke the protocol; the request then fails.
        invalid: Option<String>,
        /// The request's body, kept to send it again after a busy answer.
        body: Vec<u8>,
        /// Times it was sent again after a busy answer.
        busy_retries: u32,
    },
}

/// Why an answer of blocks stopped being collected.
pub(super) enum AnswerFault {
    /// The peer broke the protocol (already penalised): the reason.
    Broken(String),
    /// The answer outgrew what we could set aside for it: our limit, not a
    /// fault. Bytes and slots received until then.
    TooLarge { bytes: usize, slots: u64 },
}

/// What the chunks of an answer of blocks must be, checked one by one as
/// they arrive, so a bad answer costs at most one chunk of memory.
pub(super) enum BlockAnswerCheck {
    /// BlocksByRange: see [`RangeCheck`].
    Range(RangeCheck),
    /// BlocksByRoot: each block one of the roots asked for, none twice.
    Roots(Vec<Root>),
}

impl BlockAnswerCheck {
    /// The check for BlocksByRange(`start_slot`, `count`).
    pub(super) fn range(start_slot: u64, count: u64) -> BlockAnswerCheck {
        BlockAnswerCheck::Range(RangeCheck::new(
            start_slot,
            start_slot.saturating_add(count),
        ))
    }

    pub(super) fn check(&mut self, block: &SignedBlock) -> Result<(), String> {
        match self {
            BlockAnswerCheck::Range(range) => range.check_block(block),
            BlockAnswerCheck::Roots(wanted) => {
                let root = block.root();
                match wanted.iter().position(|wanted| *wanted == root) {
                    Some(index) => {
                        // Asked for, and never again in this answer.
                        wanted.swap_remove(index);
                        Ok(())
                    }
                    None => Err(format!(
                        "block at slot {} was not asked for, or came twice",
                        block.slot()
                    )),
                }
            }
        }
    }

    /// [`BlockAnswerCheck::check`], for tests.
    #[cfg(test)]
    pub(super) fn check_for_tests(&mut self, block: &SignedBlock) -> Result<(), String> {
        self.check(block)
    }

    /// Slots the answer has covered so far (for the size estimate).
    pub(super) fn slots_covered(&self) -> u64 {
        match self {
            BlockAnswerCheck::Range(range) => range.previous.map_or(0, |previous| {
                previous
                    .slot
                    .saturating_sub(range.start_slot)
                    .saturating_add(1)
            }),
            BlockAnswerCheck::Roots(_) => 1,
        }
    }
}

/// BlocksByRange answers come in slot order, within the range, each block
/// the child of the previous one.
pub(super) struct RangeCheck {
    start_slot: u64,
    end_slot: u64,
    /// The header of the last block accepted: its root is hashed only when
    /// a next block must name it as parent, once per block.
    previous: Option<BlockHeader>,
}

impl RangeCheck {
    /// The check for blocks in `start_slot..end_slot`.
    pub(super) fn new(start_slot: u64, end_slot: u64) -> RangeCheck {
        RangeCheck {
            start_slot,
            end_slot,
            previous: None,
        }
    }

    /// Checks one encoded block of the answer. Only its header is read out
    /// (the whole layout is checked, as decoding would): the bytes go to the
    /// application as they came.
    pub(super) fn check(&mut self, block: &[u8]) -> Result<(), String> {
        let header = SignedBlock::decode_header(block)
            .map_err(|error| format!("undecodable block: {error}"))?;
        self.check_header(&header)
    }

    fn check_block(&mut self, block: &SignedBlock) -> Result<(), String> {
        self.check_header(&block.header)
    }

    fn check_header(&mut self, header: &BlockHeader) -> Result<(), String> {
        let (slot, parent) = (header.slot, header.parent_root);
        if slot < self.start_slot || slot >= self.end_slot {
            return Err(format!(
                "block at slot {slot} outside {}..{}",
                self.start_slot, self.end_slot
            ));
        }
        if let Some(previous) = &self.previous {
            if slot <= previous.slot {
                return Err(format!("slot {slot} after slot {}", previous.slot));
            }
            if parent != previous.root() {
                return Err(format!(
                    "block at slot {slot} is not the child of the previous one"
                ));
            }
        }
        self.previous = Some(*header);
        Ok(())
    }
}
