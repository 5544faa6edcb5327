//! What every chain scenario watches and shares: [`ChainWatch`] checks
//! every block honest nodes import and times their sync; [`heads_agree`]
//! tells whether nodes converged; [`STEPS_PER_SECOND_MAX`] bounds the runs.
//!
//! A leaf among the scenarios: the chain stories (`chain`, `chain_faults`,
//! `junk_blocks`, `sync_liars`) import it, and it imports none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshsync_core::chain::{find_invalid, verify_batch, Genesis, Root, SignedBlock};
use meshsync_core::{Duration, Instant, Notification};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::chains::is_block_of;
use crate::sim::{NodeIndex, Sim};

/// Blocks verified together by [`ChainWatch`] (a failing batch is searched block by block).
const WATCH_BATCH_BLOCKS: usize = 64;
/// Blocks [`ChainWatch`] collects before it verifies them.
const WATCH_PENDING_MAX: usize = 1_024;
/// Steps any chain scenario may take per simulated second, at most: a bound
/// far above what a run needs (a 10 000-block sync takes about 50 000 steps).
pub const STEPS_PER_SECOND_MAX: u64 = 200_000;

/// Watches what honest nodes import, checks it, and times sync.
///
/// Every `BlockImported` of a watched node is looked up in that node's
/// store at once (the notification comes out of the step that imported it)
/// and, once per distinct (root, signature), verified against the genesis
/// in batches, outside the simulated world (it costs wall time, not
/// virtual time, and touches no node). A block equal, bit for bit, to one
/// of the chain it was told to trust ([`ChainWatch::trusting`]) counts as
/// checked without a second signature check.
#[derive(Debug)]
pub struct ChainWatch {
    genesis: Arc<Genesis>,
    watched: BTreeSet<NodeIndex>,
    /// Blocks valid by construction, in slot order: see [`ChainWatch::trusting`].
    trusted: Arc<[SignedBlock]>,
    seen: BTreeSet<(Root, [u8; 96])>,
    pending: Vec<SignedBlock>,
    rng: ChaCha20Rng,
    imported: BTreeMap<NodeIndex, u64>,
    checked: u64,
    invalid: u64,
    unchecked: u64,
    first_connected: BTreeMap<NodeIndex, Instant>,
    synced: BTreeMap<NodeIndex, (Instant, u64)>,
    imported_when_synced: BTreeMap<NodeIndex, u64>,
}

impl ChainWatch {
    /// A watch of `watched`, whose blocks must verify against `genesis`.
    pub fn new(genesis: Arc<Genesis>, watched: BTreeSet<NodeIndex>) -> ChainWatch {
        ChainWatch {
            genesis,
            watched,
            trusted: Arc::from(Vec::new()),
            seen: BTreeSet::new(),
            pending: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(0x0063_6865_636b),
            imported: BTreeMap::new(),
            checked: 0,
            invalid: 0,
            unchecked: 0,
            first_connected: BTreeMap::new(),
            synced: BTreeMap::new(),
            imported_when_synced: BTreeMap::new(),
        }
    }

    /// This watch, taking the blocks of `chain` as valid without verifying
    /// them again: a pre-signed chain (one block per slot, in slot order),
    /// signed before the run by the genesis proposers' keys
    /// ([`crate::chains`]), so every block of it verifies (the chain cache's
    /// tests check it). An import equal to one of them in header, body and
    /// signature counts as checked; any other block, of a fork, a liar or
    /// the run's own producers, is verified as before. This saves the
    /// watch re-verifying, in wall time, every block of a long sync.
    pub fn trusting(mut self, chain: Arc<[SignedBlock]>) -> ChainWatch {
        debug_assert!(
            chain.windows(2).all(|pair| pair[0].slot() < pair[1].slot()),
            "a trusted chain has one block per slot, in slot order"
        );
        self.trusted = chain;
        self
    }

    /// Handles one notification of `node`'s, now.
    pub fn on_notification(&mut self, sim: &Sim, node: NodeIndex, notification: &Notification) {
        if !self.watched.contains(&node) {
            return;
        }
        match notification {
            Notification::BlockImported { root, .. } => {
                *self.imported.entry(node).or_default() += 1;
                let Some(block) = sim.node(node).chain().block_by_root(root) else {
                    // Imported and dropped within one step (a fork finality ruled out).
                    self.unchecked += 1;
                    return;
                };
                if !self.seen.insert((block.root(), block.signature)) {
                    return;
                }
                if is_block_of(&self.trusted, block) {
                    self.checked += 1;
                    return;
                }
                self.pending.push(block.clone());
                if self.pending.len() >= WATCH_PENDING_MAX {
                    self.verify_pending();
                }
            }
            Notification::PeerConnected { .. } => {
                self.first_connected.entry(node).or_insert(sim.now());
            }
            Notification::Synced { head_slot } => {
                let imported = self.imported(node);
                if let std::collections::btree_map::Entry::Vacant(entry) = self.synced.entry(node) {
                    entry.insert((sim.now(), *head_slot));
                    self.imported_when_synced.insert(node, imported);
                }
            }
            _ => {}
        }
    }

    /// Verifies what was collected; counts the invalid blocks.
    pub fn verify_pending(&mut self) {
        for chunk in self.pending.chunks(WATCH_BATCH_BLOCKS) {
            self.checked += chunk.len() as u64;
            if verify_batch(&self.genesis, chunk, &mut self.rng).is_err() {
                let invalid = find_invalid(&self.genesis, chunk);
                log::error!("{} invalid blocks imported by honest nodes", invalid.len());
                self.invalid += invalid.len() as u64;
            }
        }
        self.pending.clear();
    }

    /// Invalid blocks honest nodes imported (after [`ChainWatch::verify_pending`]).
    pub fn invalid_blocks_imported(&self) -> u64 {
        self.invalid
    }

    /// Distinct blocks verified so far.
    pub fn blocks_checked(&self) -> u64 {
        self.checked
    }

    /// Imports that could not be checked (the block was gone from the store at once).
    pub fn imports_unchecked(&self) -> u64 {
        self.unchecked
    }

    /// `BlockImported` notifications of `node`.
    pub fn imported(&self, node: NodeIndex) -> u64 {
        self.imported.get(&node).copied().unwrap_or(0)
    }

    /// When `node` first reported `Synced`, and at which head slot.
    pub fn synced(&self, node: NodeIndex) -> Option<(Instant, u64)> {
        self.synced.get(&node).copied()
    }

    /// Blocks `node` had imported when it first reported `Synced`, per
    /// second from its first connection: its sync speed.
    pub fn sync_blocks_per_second(&self, node: NodeIndex) -> Option<f64> {
        let seconds = self.sync_seconds(node).filter(|&seconds| seconds > 0.0)?;
        let imported = self.imported_when_synced.get(&node).copied()?;
        Some(imported as f64 / seconds)
    }

    /// When `node` first had a peer.
    pub fn first_connected(&self, node: NodeIndex) -> Option<Instant> {
        self.first_connected.get(&node).copied()
    }

    /// Seconds from `node`'s first connection to its first `Synced`.
    pub fn sync_seconds(&self, node: NodeIndex) -> Option<f64> {
        let (synced, _) = self.synced(node)?;
        let connected = self.first_connected(node)?;
        Some(synced.saturating_duration_since(connected).as_micros() as f64 / 1e6)
    }
}

/// Whether every node of `nodes` that is up has the same fork-choice head
/// (and at least one is up).
pub fn heads_agree(sim: &Sim, nodes: &[NodeIndex]) -> bool {
    let mut heads = nodes
        .iter()
        .filter(|&&node| sim.is_up(node))
        .map(|&node| sim.node(node).chain().head());
    match heads.next() {
        Some(first) => heads.all(|head| head == first),
        None => false,
    }
}

/// The distinct heads of the nodes of `nodes` that are up, each with the
/// nodes on it (`slot 41 (0a1b2c3d) on 0 1 2; slot 40 (...) on 7`), for a
/// bound that says heads disagree.
pub fn heads_described(sim: &Sim, nodes: &[NodeIndex]) -> String {
    let mut heads: BTreeMap<(u64, Root), Vec<usize>> = BTreeMap::new();
    for &node in nodes.iter().filter(|&&node| sim.is_up(node)) {
        let head = sim.node(node).chain().head();
        heads
            .entry((head.slot, head.root))
            .or_default()
            .push(node.0);
    }
    heads
        .iter()
        .rev()
        .map(|((slot, root), on)| {
            let on: Vec<String> = on.iter().map(ToString::to_string).collect();
            format!("slot {slot} ({}) on {}", root, on.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Seconds, as a float, for outcomes.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e6
}
