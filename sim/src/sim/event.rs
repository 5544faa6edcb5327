//! What can be due at an instant in the world's queue: one [`Event`] per
//! kind of thing that happens to a node (bytes, closes, dial answers, work
//! and disk completions, timers, crashes) or to an application (wake-ups).
//!
//! Events addressed to one life of a node carry its incarnation; the event
//! loop drops them if that life is over.

use meshsync_core::io::CloseCause;
use meshsync_core::work::{PersistBatch, WorkId, WorkOutput};
use meshsync_core::{Command, ConnId, DialId};

use crate::types::NodeIndex;

#[derive(Debug)]
pub(super) enum Event {
    /// An application command for a node.
    Command { node: NodeIndex, command: Command },
    /// A dial's TCP handshake completed: both ends learn of the connection.
    Connect {
        dialer: NodeIndex,
        incarnation: u32,
        dial: DialId,
        acceptor: NodeIndex,
    },
    /// A dial reached an address nobody listens on.
    DialRefused {
        node: NodeIndex,
        incarnation: u32,
        dial: DialId,
        error: String,
    },
    /// Bytes arrive at one end of a connection.
    Bytes {
        node: NodeIndex,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// The remote's close arrives at one end of a connection.
    Closed {
        node: NodeIndex,
        conn: ConnId,
        cause: CloseCause,
    },
    /// A job of `node`'s is done (if that life of the node still runs).
    WorkDone {
        node: NodeIndex,
        incarnation: u32,
        id: WorkId,
        output: WorkOutput,
    },
    /// A persist batch of `node`'s reached its disk (if that life still runs).
    Persisted {
        node: NodeIndex,
        incarnation: u32,
        batch: PersistBatch,
    },
    /// A read of `node`'s stored history is done (if that life still runs).
    BlocksRead {
        node: NodeIndex,
        incarnation: u32,
        id: u64,
        blocks: Vec<meshsync_core::chain::SignedBlock>,
        complete: bool,
    },
    /// `node`'s failing disk is tried again (see [`crate::Sim::fail_disk`]).
    DiskRetry { node: NodeIndex, incarnation: u32 },
    /// `node`'s driver wrote `bytes` of its sends on `conn` (they left its uplink).
    Written {
        node: NodeIndex,
        conn: ConnId,
        bytes: usize,
    },
    /// The driver of `node` gives up a connection of its own (send buffer full).
    LocalClose {
        node: NodeIndex,
        conn: ConnId,
        cause: CloseCause,
    },
    /// A node's wake-up, valid only while its generation is current.
    Timer { node: NodeIndex, generation: u64 },
    /// A reset reaches one end of a connection (see `Sim::reset_connections`).
    Reset { node: NodeIndex, conn: ConnId },
    /// The node's process dies.
    Crash { node: NodeIndex },
    /// The node's process starts again.
    Restart { node: NodeIndex },
    /// An application's wake-up.
    Wake { token: u64 },
}
