//! meshsync-core (being written).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod fuzzing;
pub mod identity;
pub mod io;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod reqresp;
pub mod secure;
pub mod testing;
pub mod time;

pub use identity::{Identity, PeerId};
pub use io::{Action, Command, ConnId, DialId, Direction, Input, Notification, Origin};
pub use node::{Config, Node, PeerInfo, PROTOCOL_VERSION};
pub use time::{Duration, Instant};
