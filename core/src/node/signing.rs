//! Signing watermarks: a proposer key signs a block for a slot only once a
//! record that it did is durable, so no restart signs a slot twice.
//!
//! # Design
//! ```text
//!  slot timer ─► our key proposes, production allowed (chain.rs)
//!      │ slot ≤ the key's watermark ─► skip (WARN)
//!      ▼
//!  Action::Persist(batch { watermark: (key, slot) }) ─► Input::Persisted
//!      │ still in that slot, store writing, head below the slot
//!      ▼
//!  sign ─► import ─► Persist(block) ─► durable ─► publish (chain.rs)
//! ```
//! - The watermark is per key (its compressed BLS public key), loaded from
//!   the driver at start (`ChainConfig::signed_slots`) and raised to the
//!   highest block of ours in the stored chain, which is durable as well.
//! - It is raised in memory when its batch is handed over: we never ask
//!   for a slot twice, and we sign only once that very batch is
//!   acknowledged (acknowledgements are cumulative, in order).
//! - The slot is skipped, with a WARN naming it and the reason, when the
//!   acknowledgement does not come within the slot, when the driver
//!   reports a failing store meanwhile, or when too many batches wait
//!   ([`PERSIST_IN_FLIGHT_MAX`]). A skipped slot costs one
//!   block; a second signature would cost the network a fork.
//!
//! # Security
//! *Provided*: across crashes and restarts of one data directory, a key
//! signs at most one block per slot, and nothing it signed leaves the node
//! before the watermark covering it is durable.
//! *Not provided*: the same key running on two machines at once, or on a
//! data directory whose watermark was lost (the driver refuses to start
//! with a key whose watermark is missing while its blocks are stored).

use std::collections::BTreeMap;

use log::warn;

use super::Node;
use crate::chain::{BlockProducer, ProposerPublicKey, SignedBlock, SigningWatermark};
use crate::time::Instant;
use crate::work::PERSIST_IN_FLIGHT_MAX;

/// A signature waiting for its watermark to be durable.
#[derive(Clone, Copy, Debug)]
struct PendingSignature {
    slot: u64,
    /// Index into the chain state's producers.
    producer: usize,
    /// The persist batch carrying the watermark.
    batch: u64,
}

/// Our keys' watermarks and the signature waiting for one.
#[derive(Debug, Default)]
pub(super) struct Signing {
    /// Per key, the highest slot handed to the driver as a watermark (or
    /// loaded): never signed at or below again.
    watermarks: BTreeMap<ProposerPublicKey, u64>,
    pending: Option<PendingSignature>,
}

impl Signing {
    /// The watermarks of `producers` from the driver's records and from
    /// the blocks of theirs in the stored chain.
    pub(super) fn new(
        producers: &[BlockProducer],
        loaded: &[SigningWatermark],
        stored: &[SignedBlock],
    ) -> Signing {
        let mut watermarks = BTreeMap::new();
        for producer in producers {
            let key = producer.public_key();
            let recorded = loaded
                .iter()
                .filter(|watermark| watermark.proposer == key)
                .map(|watermark| watermark.slot);
            let signed = stored
                .iter()
                .filter(|block| block.header.proposer_index == producer.proposer_index())
                .map(SignedBlock::slot);
            if let Some(slot) = recorded.chain(signed).max() {
                watermarks.insert(key, slot);
            }
        }
        Signing {
            watermarks,
            pending: None,
        }
    }
}

impl Node {
    /// The highest slot `key` may have signed: it never signs at or below it.
    pub fn signing_watermark(&self, key: &ProposerPublicKey) -> Option<u64> {
        self.chain.signing().watermarks.get(key).copied()
    }

    /// Our producer `producer` proposes `slot` and may: records the
    /// watermark first; the block is signed once it is durable.
    pub(super) fn request_signature(&mut self, slot: u64, producer: usize) {
        let key = self.chain.producer(producer).public_key();
        let persisting = self.chain.persist_batches_in_flight();
        let signing = self.chain.signing_mut();
        if let Some(&watermark) = signing.watermarks.get(&key) {
            if slot <= watermark {
                warn!(
                    "slot {slot}: not signing: proposer key {key:?} has signed up to slot {watermark} (its signing watermark)"
                );
                self.out.counters.blocks_not_produced_watermark += 1;
                return;
            }
        }
        if persisting >= PERSIST_IN_FLIGHT_MAX {
            warn!(
                "slot {slot}: not signing: the signing watermark cannot be made durable ({persisting} persist batches unconfirmed)"
            );
            self.out.counters.blocks_not_produced_watermark += 1;
            return;
        }
        if let Some(stale) = signing.pending.take() {
            self.skip_pending(stale, "its signing watermark was still not durable");
        }
        self.chain.signing_mut().watermarks.insert(key, slot);
        let batch = self.persist_watermark(SigningWatermark {
            proposer: key,
            slot,
        });
        self.chain.signing_mut().pending = Some(PendingSignature {
            slot,
            producer,
            batch,
        });
    }

    /// Persist batches up to `id` are durable: signs the pending block if
    /// its watermark was among them and its slot is still on.
    pub(super) fn on_watermark_persisted(&mut self, now: Instant, id: u64) {
        let Some(pending) = self.chain.signing().pending else {
            return;
        };
        if pending.batch > id {
            return;
        }
        self.chain.signing_mut().pending = None;
        if self.chain.slot_now(now) != pending.slot {
            self.skip_pending(
                pending,
                "its signing watermark became durable after the slot",
            );
            return;
        }
        if self.is_store_failing() {
            self.skip_pending(pending, "the block store refuses writes");
            return;
        }
        if self.chain().head().slot >= pending.slot {
            // A block for the slot, or a later one, arrived meanwhile.
            return;
        }
        self.produce_block(now, pending.slot, pending.producer);
    }

    /// The slot timer fired: a signature still waiting from an earlier
    /// slot is given up.
    pub(super) fn expire_signature(&mut self, now: Instant) {
        let Some(pending) = self.chain.signing().pending else {
            return;
        };
        if self.chain.slot_now(now) != pending.slot {
            self.chain.signing_mut().pending = None;
            self.skip_pending(
                pending,
                "its signing watermark was not durable within the slot",
            );
        }
    }

    /// The store refuses writes: a signature waiting for its watermark is
    /// given up (the watermark may never become durable).
    pub(super) fn abandon_signature(&mut self) {
        if let Some(pending) = self.chain.signing_mut().pending.take() {
            self.skip_pending(pending, "the block store refuses writes");
        }
    }

    fn skip_pending(&mut self, pending: PendingSignature, reason: &str) {
        warn!(
            "slot {}: not signing: {reason}; the slot is skipped",
            pending.slot
        );
        self.out.counters.blocks_not_produced_watermark += 1;
    }
}
