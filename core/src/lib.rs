//! # meshsync-core: the protocol, without IO
//!
//! A pure state machine. It takes [`Input`]s (bytes in, bytes written,
//! connection opened or closed, timer fired, work done, batch persisted,
//! commands, the driver's health) at an instant the driver supplies, and
//! emits [`Action`]s (bytes out, dial, cancel a dial, close, CPU work,
//! persist, notify). It never reads a clock, spawns a thread, touches a
//! socket or file, or draws OS entropy: all its randomness comes from the
//! seed given to [`Node::new`]. Two drivers run it: `meshsync-mio` (TCP,
//! production) and `meshsync-sim` (virtual time, tests).
//!
//! README.md shows the same diagram; a test in `tests/tests/docs.rs` keeps
//! the two equal, so change it here and copy it there.
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
//!  socket bytes ◄── driver ◄── Node::poll_action() -> Action::Send / Close
//!  bytes written ─► driver ──►   Input::BytesWritten  (gossip waits while too much is unwritten)
//!  connections  ◄── driver ◄──   Action::Dial / CancelDial ──► Input::ConnectionOpened /
//!                                  ConnectionClosed / DialFailed
//!  worker pool  ◄── driver ◄──   Action::Work(job)     ──► Input::WorkDone / WorkFailed (BLS batch checks)
//!  block store  ◄── driver ◄──   Action::Persist(batch) ─► Input::Persisted (then in our Status)
//!               ◄── driver ◄──   Action::ReadBlocks(read) ─► Input::BlocksRead (history served from disk)
//!  peer store   ◄── driver ◄──   Action::PersistPeers(snapshot) (loaded back as Config::known_peers)
//!  disk, clock  ──► driver ──►   Input::Health (store failing, clock jumped)
//!  application  ◄── driver ◄──   Action::Notify(event)
//!  application  ──► driver ──►   Input::Command (publish, request, dial, shutdown, ...)
//!                   driver ◄── Node::poll_timeout() -> next Input::Timeout
//! ```
//!
//! A block's way in: gossip or a sync answer ─► decode and cheap checks ─►
//! `Action::Work` (signatures) ─► `ChainStore::import` (fork choice) ─►
//! `Action::Persist` ─► durable ─► named in our Status.
//!
//! The run-loop contract is on [`Node`]. Modules, from the bottom layer up
//! (`core/tests/module_layers.rs` keeps imports pointing down):
//! - vocabulary: [`types`] (connection and dial ids, directions, roots,
//!   Status, Goodbye reasons), [`time`], [`identity`] (Ed25519 keys and
//!   `PeerId`s), [`metrics`] (counters), [`machine`] (the one contract of
//!   every sub-machine: `handle_timeout`, `next_deadline`, outputs polled),
//!   [`netgroup`] (the /24, /16 and /56 groupings the anti-eclipse limits
//!   count by);
//! - bounds: [`limits`] (the node-wide bounds; each protocol keeps its own
//!   in its module);
//! - codecs and crypto: [`codec`] (framing, messages, snappy), [`secure`]
//!   (Noise XX with Ed25519 identities), [`chain`] (blocks, genesis,
//!   verification, fork choice);
//! - jobs: [`work`] (CPU jobs and persist batches);
//! - sub-machines: [`peer`] (scores, bans, the connection gater, static
//!   peers), [`reqresp`] (request/response codecs, quotas, deadlines, rate
//!   limits), [`gossip`] (the gossipsub router, its wire codec and scores),
//!   [`sync`] (range sync and parent lookups), [`discovery`] (Kademlia
//!   records, table and lookups; not yet wired into the node), each keeping
//!   the [`Machine`] contract;
//! - boundary: [`io`] (the enums a driver speaks);
//! - node: [`node`] (the top-level state machine);
//! - harnesses: `testing` (an in-memory network; cargo feature `testing`)
//!   and `fuzzing` (fuzz entry points; cargo feature `fuzzing`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
pub mod codec;
pub mod discovery;
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
pub mod netgroup;
pub mod node;
pub mod peer;
pub mod peerstore;
pub mod record;
pub mod reqresp;
pub mod secure;
mod serial;
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
