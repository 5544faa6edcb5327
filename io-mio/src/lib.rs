//! meshsync-mio: the production driver of the meshsync core.
//!
//! ```text
//!   socket bytes ──► Driver (mio poll loop) ──► Node::handle(now, Input)
//!                        ▲                           │
//!                        │                           ▼
//!   socket writes ◄── write queues ◄── execute ◄── Node::poll_action() until None
//!                                                    │
//!   poll timeout  ◄──────────────────────────── Node::poll_timeout()
//! ```
//!
//! # Embedding a node
//! `examples/chat.rs` is a whole application on this API: a gossip topic
//! published and read, and a request protocol of its own served and asked.
//! Its core, compiled as a doc test:
//!
//! ```no_run
//! use meshsync_core::io::Notification;
//! use meshsync_core::{Command, Config, Topic, Validation};
//! use meshsync_mio::{generate_identity, os_seed, Driver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listen = "127.0.0.1:9101".parse()?;
//! let mut driver = Driver::bind(listen, Config::new(1), generate_identity(), os_seed())?;
//! // Subscribed before the node runs, so no notification is missed.
//! let notifications = driver.subscribe();
//! let topic = Topic::new("chat")?;
//! driver.command(Command::Subscribe { topic: topic.clone() });
//! let node = driver.spawn("node")?;
//! let payload = b"hello".to_vec();
//! node.handle().command(Command::Publish { topic, payload })?;
//! for notification in notifications {
//!     if let Notification::GossipMessage { id, payload, from, .. } = notification {
//!         println!("{from:?}: {}", String::from_utf8_lossy(&payload));
//!         // The application judges what the router forwards.
//!         let verdict = Validation::Accept;
//!         node.handle().command(Command::ValidateGossip { id, verdict })?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//! The core is a pure state machine; this crate gives it real sockets, a real
//! clock and OS entropy. One [`Driver`] runs one node on one thread (one
//! `mio::Poll`). Applications and tests talk to it through a
//! [`DriverHandle`] (commands, queries, stop) and hear from it through
//! [`Driver::subscribe`] (notifications). [`store`] is the durable block
//! store (redb), [`workers`] the thread pool for the core's CPU work,
//! [`metrics`] the Prometheus endpoint, [`send_queue`] a connection's outbound bytes, [`address`] the
//! `ADDR[@PEERID]` peer syntax and [`keyfile`] reads a node's identity.
//! [`testing`] holds what tests and devnets need that production does not.
//!
//! The `meshsync` binary (`src/bin/meshsync/`) is a clap front end over this
//! library; the command line, genesis files, key-file writing, the devnet
//! and the benchmarks are its modules, not this crate's API.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod driver;
pub mod keyfile;
pub mod metrics;
pub mod send_queue;
pub mod store;
pub mod testing;
pub mod workers;

pub use address::{BootnodeAddress, PeerAddress, PeerAddressError, StaticPeerAddress};
pub use crossbeam_channel;
pub use driver::{Driver, DriverHandle, HandleError, RunningDriver, StartError};
pub use keyfile::{read_key_file, KeyFileIoError};

use meshsync_core::Identity;
use rand_core::{OsRng, RngCore};

/// 32 bytes of OS entropy: the seed of a production node's randomness.
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    seed
}

/// A fresh identity from OS entropy.
pub fn generate_identity() -> Identity {
    Identity::generate(&mut OsRng)
}
