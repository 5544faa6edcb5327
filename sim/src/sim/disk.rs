//! Each node's modelled disk: persist batches written one after another
//! at a modelled latency and throughput, acknowledged when done, and a
//! disk that fails on demand ([`Sim::fail_disk`]).
//!
//! A batch is on the disk once its modelled write completed; a crash loses
//! the ones still being written, and a restart starts from what is on the
//! disk (see [`Sim::restart`]): its blocks and its signing watermarks, and,
//! for a node whose config keeps a peer store (`Config::known_peers`), the
//! last peer store snapshot it handed over.

use meshsync_core::chain::{Root, SignedBlock};
use meshsync_core::peerstore::KnownPeers;
use meshsync_core::work::{BlockRead, PersistBatch};
use meshsync_core::{Duration, Health, Input, Instant};

use super::event::Event;
use super::host::SimNode;
use super::transport::transmit_time;
use super::world::Sim;
use crate::types::NodeIndex;

/// Fixed cost of one modelled disk write (a durable commit: an fsync).
pub const DISK_WRITE_LATENCY: Duration = Duration::from_millis(2);
/// Modelled disk write throughput.
pub const DISK_WRITE_BYTES_PER_SECOND: u64 = 200_000_000;
/// Fixed cost of one modelled read of stored history (a page-cache miss).
pub const DISK_READ_LATENCY: Duration = Duration::from_micros(200);
/// Modelled disk read throughput.
pub const DISK_READ_BYTES_PER_SECOND: u64 = 1_000_000_000;

impl Sim {
    /// `node`'s disk refuses every write that completes before `until` (a
    /// full disk, an I/O error): like the production driver, the node is
    /// told (`Health::StoreFailing`), the refused batches wait in order, and
    /// at `until` they are written, acknowledged, and the node hears
    /// `Health::StoreWriting`. A crash meanwhile loses them.
    pub fn fail_disk(&mut self, node: NodeIndex, until: Instant) {
        self.node_state_mut(node).disk_fails_until = until;
    }

    /// `node`'s disk is lost while it is down (a data directory wiped, or
    /// the node moved to a fresh machine): its blocks go, and its signing
    /// watermarks too unless `keep_watermarks` (they were exported and
    /// imported with the key).
    ///
    /// # Panics
    /// If the node is up (a bug in the scenario).
    pub fn wipe_disk(&mut self, node: NodeIndex, keep_watermarks: bool) {
        assert!(!self.is_up(node), "{node}'s disk wiped while it runs");
        let state = self.node_state_mut(node);
        state.disk.clear();
        state.disk_finalized = Root([0; 32]);
        state.disk_known_peers = None;
        if !keep_watermarks {
            state.disk_watermarks.clear();
        }
    }

    /// Applies `batch` to the node's disk: its deletions, then its blocks,
    /// then its signing watermark (never lowering the one kept).
    fn write_to_disk(state: &mut SimNode, batch: &PersistBatch) {
        for root in &batch.delete {
            state.disk.remove(root);
        }
        for (root, block) in &batch.blocks {
            state.disk.insert(*root, block.clone());
        }
        state.disk_finalized = batch.finalized.root;
        if let Some(watermark) = batch.watermark {
            let kept = state.disk_watermarks.entry(watermark.proposer).or_default();
            *kept = (*kept).max(watermark.slot);
        }
    }

    /// Reads finalized history from the node's disk, answered after
    /// [`DISK_READ_LATENCY`] plus its bytes over [`DISK_READ_BYTES_PER_SECOND`]
    /// (reads do not queue behind writes: a store reads from its last
    /// committed state while a write is in progress).
    pub(super) fn apply_read(&mut self, index: NodeIndex, read: BlockRead) {
        let now = self.now;
        let state = self.node_state(index);
        let genesis = state.node.config().chain.genesis.root();
        let (blocks, complete) =
            read.answer_from(state.disk_finalized, genesis, |root| state.disk.get(root));
        let bytes: usize = blocks.iter().map(SignedBlock::encoded_len).sum();
        let done = now + DISK_READ_LATENCY + transmit_time(bytes, DISK_READ_BYTES_PER_SECOND);
        let incarnation = state.incarnation;
        self.queue.push(
            done,
            Event::BlocksRead {
                node: index,
                incarnation,
                id: read.id,
                blocks,
                complete,
            },
        );
    }

    /// Replaces the peer store on the node's disk with `known`. Written at
    /// once, outside the block writes' queue: nothing waits on it (the core
    /// expects no acknowledgement), and a snapshot is small next to a
    /// block batch; a crash keeps the last one handed over.
    pub(super) fn apply_persist_peers(&mut self, index: NodeIndex, known: KnownPeers) {
        self.node_state_mut(index).disk_known_peers = Some(known);
    }

    /// Writes `batch` to the node's modelled disk after [`DISK_WRITE_LATENCY`]
    /// plus its bytes over [`DISK_WRITE_BYTES_PER_SECOND`], after the writes
    /// before it. A crash before then loses it, as a killed process loses
    /// an unfinished transaction.
    pub(super) fn apply_persist(&mut self, index: NodeIndex, batch: PersistBatch) {
        for (_, block) in &batch.blocks {
            self.check_signed_slot(index, block);
        }
        let now = self.now;
        let bytes: usize = batch
            .blocks
            .iter()
            .map(|(_, block)| block.encoded_len())
            .sum();
        let state = self.node_state_mut(index);
        let write = DISK_WRITE_LATENCY + transmit_time(bytes, DISK_WRITE_BYTES_PER_SECOND);
        let done = state.disk_free_at.max(now) + write * state.disk_slowdown;
        state.disk_free_at = done;
        let incarnation = state.incarnation;
        self.queue.push(
            done,
            Event::Persisted {
                node: index,
                incarnation,
                batch,
            },
        );
    }

    /// A batch's modelled write of `node`'s life `incarnation` completed:
    /// written and acknowledged, or, while the disk fails or earlier
    /// batches wait, refused and queued behind them for a retry.
    pub(super) fn persisted(&mut self, node: NodeIndex, incarnation: u32, batch: PersistBatch) {
        let now = self.now;
        let state = self.node_state_mut(node);
        if now < state.disk_fails_until || !state.disk_unwritten.is_empty() {
            // Refused; later batches wait behind it, in order.
            let first = state.disk_unwritten.is_empty();
            state.disk_unwritten.push_back(batch);
            if first {
                let retry_at = state.disk_fails_until.max(now);
                self.queue
                    .push(retry_at, Event::DiskRetry { node, incarnation });
                self.deliver(node, Input::Health(Health::StoreFailing));
            }
            return;
        }
        Self::write_to_disk(state, &batch);
        self.deliver(node, Input::Persisted { id: batch.id });
    }

    /// The failing disk of `node`'s life `incarnation` is tried again:
    /// once it works, every refused batch is written, in order.
    pub(super) fn retry_disk(&mut self, node: NodeIndex, incarnation: u32) {
        let now = self.now;
        let state = self.node_state_mut(node);
        if now < state.disk_fails_until {
            let retry_at = state.disk_fails_until;
            self.queue
                .push(retry_at, Event::DiskRetry { node, incarnation });
            return;
        }
        let batches = std::mem::take(&mut state.disk_unwritten);
        let mut last = None;
        for batch in &batches {
            Self::write_to_disk(state, batch);
            last = Some(batch.id);
        }
        if let Some(id) = last {
            // Acknowledgements are cumulative.
            self.deliver(node, Input::Persisted { id });
        }
        self.deliver(node, Input::Health(Health::StoreWriting));
    }
}
