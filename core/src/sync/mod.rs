//! Sync: catching up with peers. [`range`] fetches long stretches of
//! missing slots in batches (initial sync). Pure state machines driven by
//! the node: inputs carry `now`, outputs come from `poll`.

pub mod range;

pub use range::{
    BatchId, BatchImportError, FetchError, PeerChain, PenaltyReason, RangeSync, SyncAction,
    SyncConfig, SyncCounters, SyncProgress,
};
