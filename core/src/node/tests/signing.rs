//! Signing watermarks: a lone proposer driven by hand, its disk and its
//! restarts played step by step (devnet slots of 2 s: slot 1 is 2–4 s).

use super::*;
use crate::chain::{ProposerPublicKey, SigningWatermark};
use crate::work::PersistBatch;

/// A lone proposer's life: the node, and the batches it handed over that
/// are not yet acknowledged, and what its disk holds.
struct Proposer {
    node: Node,
    unwritten: Vec<PersistBatch>,
    disk_blocks: Vec<SignedBlock>,
    disk_watermark: Option<u64>,
    seed: u8,
}

fn key() -> ProposerPublicKey {
    ProposerPublicKey::of(&crate::chain::devnet_keys(1, 1)[0])
}

impl Proposer {
    fn start(blocks: Vec<SignedBlock>, watermark: Option<u64>, seed: u8) -> Proposer {
        let mut config = follower_config(true);
        config.chain.stored = blocks.clone().into();
        config.chain.signed_slots = watermark
            .map(|slot| SigningWatermark {
                proposer: key(),
                slot,
            })
            .into_iter()
            .collect();
        Proposer {
            node: Node::new(config, Identity::from_seed(0), [seed; 32]),
            unwritten: Vec::new(),
            disk_blocks: blocks,
            disk_watermark: watermark,
            seed,
        }
    }

    /// A crash and a restart from the disk, with a fresh seed (so a second
    /// block would have another body, as a real restart's would).
    fn restart(self) -> Proposer {
        Proposer::start(self.disk_blocks, self.disk_watermark, self.seed + 1)
    }

    /// Feeds `input` at `at_ms` and collects the persist batches.
    fn handle(&mut self, at_ms: u64, input: Input) {
        self.node.handle(Instant::from_micros(at_ms * 1_000), input);
        while let Some(action) = self.node.poll_action() {
            if let Action::Persist(batch) = action {
                self.unwritten.push(batch);
            }
        }
    }

    fn tick(&mut self, at_ms: u64) {
        self.handle(at_ms, Input::Timeout);
    }

    /// Writes every batch handed over and acknowledges the last at `at_ms`.
    fn write_all(&mut self, at_ms: u64) {
        let batches = std::mem::take(&mut self.unwritten);
        let Some(last) = batches.last().map(|batch| batch.id) else {
            return;
        };
        for batch in batches {
            self.disk_blocks
                .extend(batch.blocks.into_iter().map(|(_, block)| block));
            if let Some(watermark) = batch.watermark {
                assert_eq!(watermark.proposer, key());
                let kept = self.disk_watermark.unwrap_or(0).max(watermark.slot);
                self.disk_watermark = Some(kept);
            }
        }
        self.handle(at_ms, Input::Persisted { id: last });
    }

    /// Blocks handed over to be written, not yet written.
    fn unwritten_blocks(&self) -> Vec<SignedBlock> {
        let batches = self.unwritten.iter();
        batches
            .flat_map(|batch| batch.blocks.iter().map(|(_, block)| block.clone()))
            .collect()
    }
}

#[test]
fn a_block_is_signed_only_once_its_slots_watermark_is_durable() {
    let mut proposer = Proposer::start(Vec::new(), None, 1);
    proposer.tick(2_500);
    assert_eq!(proposer.node.counters().blocks_produced, 0);
    assert_eq!(proposer.unwritten.len(), 1);
    let batch = &proposer.unwritten[0];
    assert!(batch.blocks.is_empty());
    let watermark = batch.watermark.expect("a watermark batch");
    assert_eq!((watermark.proposer, watermark.slot), (key(), 1));
    proposer.write_all(2_510);
    assert_eq!(proposer.disk_watermark, Some(1));
    assert_eq!(proposer.node.counters().blocks_produced, 1);
    let blocks = proposer.unwritten_blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].slot(), 1);
    assert_eq!(proposer.node.signing_watermark(&key()), Some(1));
}

/// The crash falls right after the block was written (and so published),
/// and the restart comes within the same slot: no second block, whether
/// the block survived or not (a data directory that lost it, or a key
/// moved with its exported watermark to a fresh one).
#[test]
fn a_fast_restart_within_the_slot_never_signs_it_again() {
    for keep_block in [true, false] {
        let mut proposer = Proposer::start(Vec::new(), None, 1);
        proposer.tick(2_500);
        proposer.write_all(2_505);
        proposer.write_all(2_510); // The block: durable, then published.
        let first = proposer.disk_blocks.clone();
        assert_eq!(first.len(), 1);
        if !keep_block {
            proposer.disk_blocks.clear();
        }
        let mut restarted = proposer.restart();
        assert_eq!(restarted.node.signing_watermark(&key()), Some(1));
        for at_ms in [2_600, 3_000, 3_999] {
            restarted.tick(at_ms);
            restarted.write_all(at_ms);
        }
        assert_eq!(restarted.node.counters().blocks_produced, 0, "{keep_block}");
        assert!(restarted
            .disk_blocks
            .iter()
            .all(|block| first.contains(block)));
        if !keep_block {
            // It says why it did not sign.
            assert_eq!(restarted.node.counters().blocks_not_produced_watermark, 1);
        }
        // The next slot is its own again.
        restarted.tick(4_100);
        restarted.write_all(4_105);
        let blocks = restarted.unwritten_blocks();
        assert_eq!(blocks.len(), 1, "{keep_block}");
        assert_eq!(blocks[0].slot(), 2);
    }
}

/// Restarting between the watermark and the block (its signature never
/// left the node): the slot is still not signed again.
#[test]
fn a_crash_between_the_watermark_and_the_block_skips_the_slot() {
    let mut proposer = Proposer::start(Vec::new(), None, 1);
    proposer.tick(2_500);
    proposer.write_all(2_505);
    assert_eq!(
        proposer.unwritten_blocks().len(),
        1,
        "signed, not yet written"
    );
    let mut restarted = proposer.restart();
    assert!(restarted.disk_blocks.is_empty());
    restarted.tick(2_600);
    restarted.write_all(2_600);
    assert_eq!(restarted.node.counters().blocks_produced, 0);
    assert_eq!(restarted.node.counters().blocks_not_produced_watermark, 1);
}

/// A data directory whose watermark record is missing but whose chain
/// holds our blocks: the highest of them is the watermark.
#[test]
fn our_stored_blocks_raise_the_watermark() {
    let chain = crate::chain::ChainConfig::devnet_with_chain(1, 3, 16);
    let mut proposer = Proposer::start(chain.stored.to_vec(), None, 1);
    assert_eq!(proposer.node.signing_watermark(&key()), Some(3));
    // A clock set back to slot 2 (4–6 s) with the head at 3: nothing.
    proposer.tick(4_500);
    assert!(proposer.unwritten.is_empty());
    // A loaded watermark above the stored chain wins.
    let proposer = Proposer::start(chain.stored.to_vec(), Some(7), 1);
    assert_eq!(proposer.node.signing_watermark(&key()), Some(7));
}

/// A watermark loaded at slot 5 (signed on another machine) with an
/// empty chain: slots up to 5 are refused, slot 6 is signed.
#[test]
fn a_loaded_watermark_refuses_every_slot_up_to_it() {
    let mut proposer = Proposer::start(Vec::new(), Some(5), 1);
    for slot in 1..=6u64 {
        let at_ms = slot * 2_000 + 100;
        proposer.tick(at_ms);
        proposer.write_all(at_ms + 5);
    }
    assert_eq!(proposer.node.counters().blocks_not_produced_watermark, 5);
    let blocks = proposer.unwritten_blocks();
    assert_eq!(
        blocks.iter().map(SignedBlock::slot).collect::<Vec<_>>(),
        vec![6]
    );
}

/// The watermark's acknowledgement comes only after the slot ended, or
/// the store fails meanwhile: the slot is skipped, never signed late.
#[test]
fn a_watermark_not_durable_within_its_slot_skips_the_slot() {
    // Late: acknowledged in slot 2, after slot 2's own watermark went out.
    let mut proposer = Proposer::start(Vec::new(), None, 1);
    proposer.tick(2_500);
    proposer.tick(4_100); // Slot 2: slot 1 given up.
    assert_eq!(proposer.node.counters().blocks_not_produced_watermark, 1);
    proposer.write_all(4_200);
    let blocks = proposer.unwritten_blocks();
    assert_eq!(
        blocks.iter().map(SignedBlock::slot).collect::<Vec<_>>(),
        vec![2]
    );

    // Acknowledged after the slot, before the next tick.
    let mut proposer = Proposer::start(Vec::new(), None, 1);
    proposer.tick(2_500);
    proposer.write_all(4_050);
    assert_eq!(proposer.node.counters().blocks_produced, 0);
    assert_eq!(proposer.node.counters().blocks_not_produced_watermark, 1);

    // The store fails while the watermark waits.
    let mut proposer = Proposer::start(Vec::new(), None, 1);
    proposer.tick(2_500);
    proposer.handle(2_600, Input::Health(crate::Health::StoreFailing));
    proposer.write_all(2_700);
    assert_eq!(proposer.node.counters().blocks_produced, 0);
    assert_eq!(proposer.node.counters().blocks_not_produced_watermark, 1);
}
