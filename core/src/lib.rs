//! # meshsync-core: the protocol, without IO
//!
//! A pure state machine. It takes [`Input`]s (bytes in, bytes written,
//! connection opened or closed, timer fired, work done, batch persisted,
//! commands) at an instant the driver supplies, and emits [`Action`]s (bytes
//! out, dial, close, CPU work, persist, notify). It never reads a clock,
//! spawns a thread, touches a socket or file, or draws OS entropy: all its
//! randomness comes from the seed given to [`Node::new`]. Two drivers run it:
//! `meshsync-mio` (TCP, production) and `meshsync-sim` (virtual time, tests).
//!
//! ```text
//!  socket bytes ──► driver ──► Node::handle(now, Input::BytesReceived)
//!                                  │
//!                                  ├─ conn: NoiseFrameDecoder ─► Handshake / Transport::open
//!                                  ├─ MessageReassembler ─► Message::decode
//!                                  ├─ peers, keepalive, goodbyes, req/resp (reqresp)
//!                                  ├─ gossip router ─► blocks topic ─► chain checks
//!                                  └─ range sync, parent lookups (sync)
//!                                  ▼
//!  socket bytes ◄── driver ◄── Node::poll_action() -> Action::Send / Dial / Close / Notify
//!  worker pool  ◄── driver ◄──   Action::Work(job)     ──► Input::WorkDone (BLS batch checks)
//!  block store  ◄── driver ◄──   Action::Persist(batch) ─► Input::Persisted (then in our Status)
//!                  driver ◄── Node::poll_timeout() -> next Input::Timeout
//! ```
//!
//! A block's way in: gossip or a sync answer ─► decode and cheap checks ─►
//! `Action::Work` (signatures) ─► `ChainStore::import` (fork choice) ─►
//! `Action::Persist` ─► durable ─► named in our Status.
//!
//! The run-loop contract is on [`Node`]. Modules: [`io`] (the boundary
//! enums), [`node`] (the top-level state machine), [`secure`] (Noise XX with
//! Ed25519 identities), [`codec`] (framing and messages), [`identity`],
//! [`time`], [`limits`] (every bound, named with its unit), [`metrics`],
//! [`testing`] (an in-memory network), [`chain`] (blocks, genesis,
//! verification, fork choice), [`sync`] (range sync and parent lookups),
//! [`work`] (jobs and persist batches) and [`fuzzing`] (fuzz entry points).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
pub mod codec;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz_script;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gossip;
pub mod identity;
pub mod io;
pub mod limits;
pub mod machine;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod reqresp;
pub mod secure;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod types;
pub mod work;

pub use gossip::{MessageId, Topic, Validation};
pub use identity::{Identity, PeerId};
pub use io::{Action, Command, ConnId, DialId, Direction, Health, Input, Notification, Origin};
pub use machine::Machine;
pub use node::{Config, Faults, Node, PeerInfo, StatusClaim, PROTOCOL_VERSION};
pub use time::{Duration, Instant};
