//! STUB: being written.
use crate::identity::{Identity, PeerId};
use crate::io::{Action, Direction, Input};
use crate::metrics::Counters;
use crate::time::{Duration, Instant};
use std::net::SocketAddr;

/// Protocol version spoken by this build; peers must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// Node configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Peers on another network are refused.
    pub network_id: u64,
    /// Advertised in the Hello.
    pub listen_port: u16,
    /// Capability bits advertised in the Hello.
    pub capabilities: u64,
    /// Established peers kept at most.
    pub peers_max: usize,
    /// See `limits::HANDSHAKE_TIMEOUT`.
    pub handshake_timeout: Duration,
    /// See `limits::DIAL_TIMEOUT`.
    pub dial_timeout: Duration,
    /// See `limits::PING_INTERVAL`.
    pub ping_interval: Duration,
    /// See `limits::PEER_SILENCE_TIMEOUT`.
    pub peer_silence_timeout: Duration,
}

/// A connected peer as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its identity.
    pub peer: PeerId,
    /// Its address.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
}

/// The node.
pub struct Node {}

impl Node {
    /// New node.
    pub fn new(_config: Config, _identity: Identity, _seed: [u8; 32]) -> Node {
        todo!()
    }
    /// Our id.
    pub fn peer_id(&self) -> PeerId {
        todo!()
    }
    /// Feed an input.
    pub fn handle(&mut self, _now: Instant, _input: Input) {
        todo!()
    }
    /// Next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }
    /// Next wake-up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Connected peers in PeerId order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        todo!()
    }
    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        todo!()
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        todo!()
    }
}
