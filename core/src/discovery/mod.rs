//! Discovery: how nodes find each other and keep a healthy set of peers.
//!
//! # Design
//! Kademlia over the req/resp layer, after the Kademlia paper, discv5 and
//! libp2p-kad: peers sit in a routing table by the XOR distance of their
//! keys (sha256 of the `PeerId`), lookups walk towards a target asking
//! three peers at a time, and a refresh lookup towards a random target runs
//! every 30 s while the node is below its peer target, every 5 min after.
//! Peers tell each other where they listen with signed records. One file
//! per concern:
//!
//! | file | concern |
//! | --- | --- |
//! | `limits.rs` | every bound and default, with its source |
//! | `address.rs` | which addresses are accepted; subnets and network groups |
//! | `key.rs` | the key space: sha256 of a `PeerId`, XOR distance, buckets |
//! | `record.rs` | signed peer records: encoding, signature, sequence numbers |
//! | `observed.rs` | the addresses peers see us at, and when they confirm one |
//! | `table.rs` | the routing table (entries met by handshake) and the candidates |
//! | `wire.rs` | the FIND_NODE and record-exchange bodies, tags and quotas |
//! | `lookup.rs` | one iterative lookup: α in flight, rounds, deadlines |
//! | `discover.rs` | the [`Discovery`] machine: inputs, outputs, refreshes, dials |
//!
//! The machine keeps the contract of `crate::machine` (inputs through
//! `handle_*(now, …)`, outputs drained from `poll_*`, `handle_timeout`,
//! `next_deadline`), takes its randomness from a seed and its time from
//! `now`, and iterates only `BTreeMap`s and `Vec`s.
//!
//! The node drives it when `node::Config::discovery` is set (the node's
//! `DiscoveryPart`, `core/src/node/discovery.rs`): it answers FIND_NODE and
//! record requests, asks each admitted peer for its record and reports it
//! with `handle_peer_verified`, and sends the queries, dials and liveness
//! checks the machine asks for, reporting their outcomes.
//!
//! # Security
//! *Provided*: only peers that completed a handshake and gave their own
//! signed record enter the table; relayed records are candidates at most;
//! subnet and network-group caps; a full bucket prefers its live entries;
//! every record verified for our network; every peer-grown set bounded.
//! *Not provided*: defence against an attacker with addresses in many
//! network groups beyond the caps; rate limits (the req/resp layer's).
//!
//! # Limits
//! All in [`limits`], each with its reason and source.

pub mod address;
pub mod discover;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod key;
pub mod limits;
pub mod lookup;
pub mod observed;
#[warn(clippy::arithmetic_side_effects)]
pub mod record;
pub mod table;
#[cfg(test)]
mod tests;
#[warn(clippy::arithmetic_side_effects)]
pub mod wire;

pub use address::{check_address, AddressRefusal, NetGroup, Subnet};
pub use discover::{
    Config, Dial, Discovery, DiscoveryCounters, LookupId, LookupOutcome, Query, QueryId,
};
pub use key::{Distance, Key};
pub use lookup::{Contact, Lookup};
pub use observed::{AddressBook, Confirmed};
pub use record::{Record, RecordError, RECORD_SIGNATURE_DOMAIN, RECORD_VERSION};
pub use table::{
    Candidate, Entry, Insert, InsertRefusal, LivenessCheck, RoutingTable, TableConfig,
};
pub use wire::{DiscoveryProtocol, FindNodeAnswer, FindNodeRequest, PeerRecordAnswer, WireError};
