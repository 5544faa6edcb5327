//! Sync: catching up with peers. [`range`] fetches long stretches of
//! missing slots in batches (initial sync); [`lookup`] fetches the unknown
//! ancestors of gossiped blocks (regular sync) and hands over to range sync
//! when there are too many. Both are pure state machines driven by the node
//! (`node/sync.rs`): inputs carry `now`, outputs come from `poll`. `fuzzing`
//! (feature `fuzzing`) drives them with arbitrary inputs.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[warn(clippy::arithmetic_side_effects)]
pub mod lookup;
#[warn(clippy::arithmetic_side_effects)]
pub mod range;

pub use lookup::{
    DropReason, KnownBlocks, LookupAction, LookupCounters, LookupId, LookupPenalty, Lookups,
};
pub use range::{
    BatchId, BatchImportError, FetchError, PeerChain, PeerWait, PenaltyReason, RangeSync,
    SyncAction, SyncConfig, SyncCounters, SyncProgress,
};
