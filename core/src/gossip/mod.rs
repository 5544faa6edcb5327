//! Gossip: a gossipsub v1.1/v1.2-style mesh with validation, scoring and
//! IDONTWANT, as pure building blocks; `node/gossip.rs` drives them.
//!
//! # Design
//! [`wire`] is the RPC codec (logical message kind [`GOSSIP_KIND`] = 32),
//! [`router`] the state machine ([`Gossip`]), [`score`] the v1.1 peer score,
//! `fuzzing` the fuzz entry points (feature `fuzzing`). Nothing here reads a clock or draws OS
//! entropy: time is a value, randomness a seeded `ChaCha20Rng`, and every map
//! whose order can reach an output is a `BTreeMap`.
//!
//! ```text
//!  node: logical message kind 32 ─► Gossip::handle_rpc ─► GossipEvent::Message ─► application
//!                                                                    │ verdict
//!  node ◄─ poll_send: (peer, RPC) ◄─ queues ◄─ report_validation ◄───┘
//!  node: timer at next_deadline ─► heartbeat (mesh, gossip, expiry)
//! ```
//!
//! # Security
//! See [`wire`] (decoding: caps before allocation, snappy lengths checked
//! before decompressing) and [`router`] (bounded state, graylisting,
//! saturating backoffs, send queues that drop gossip first).
//!
//! # Limits
//! Every bound is a named constant in [`wire`], [`router`] or [`score`],
//! with its reason and eviction policy.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod router;
pub mod score;
#[warn(clippy::arithmetic_side_effects)]
pub mod wire;

pub use router::{
    Config, Counters, Gossip, GossipEvent, Misbehaviour, PublishError, SendReadiness,
    SubscribeError, TopicCounters, Validation,
};
pub use wire::{
    Control, GossipDecodeError, MessageId, Rpc, Subscription, Topic, WireMessage, GOSSIP_KIND,
    GOSSIP_MESSAGE_BYTES_MAX,
};
