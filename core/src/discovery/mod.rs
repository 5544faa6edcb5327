//! Discovery: how nodes find each other and keep a healthy set of peers.
//!
//! # Design
//! Kademlia over the req/resp layer, after discv5 and libp2p-kad. One file
//! per concern:
//!
//! | file | concern |
//! | --- | --- |
//! | `limits.rs` | every bound and default, with its source |
//! | `address.rs` | which addresses are accepted; subnets and network groups |
//! | `key.rs` | the key space: sha256 of a `PeerId`, XOR distance, buckets |
//! | `record.rs` | signed peer records: encoding, signature, sequence numbers |
//! | `table.rs` | the routing table (entries met by handshake) and the candidates |
//! | `wire.rs` | the FIND_NODE and record-exchange bodies, tags and quotas |
//!
//! The node does not use this module yet: its protocols' tags (7 and 8) are
//! still unknown to the req/resp layer, which refuses them.

pub mod address;
pub mod key;
pub mod limits;
#[warn(clippy::arithmetic_side_effects)]
pub mod record;
pub mod table;
#[warn(clippy::arithmetic_side_effects)]
pub mod wire;
