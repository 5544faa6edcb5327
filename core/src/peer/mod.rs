//! The peer manager: scores, bans, connection gating, static peers and the
//! table of connected peers, brought together in [`PeerManager`].
//!
//! # Design
//! Pure state machines with no IO and no clock, like the rest of the core:
//! every entry point takes `now`, randomness (backoff jitter) comes from a
//! seed given at construction, and every map is a `BTreeMap`, so the same
//! calls give the same answers on every machine. One file per concern:
//!
//! | file | concern |
//! | --- | --- |
//! | `score.rs` | [`Score`], decaying with a half-life; penalties, rewards, threshold events |
//! | `bans.rs` | [`Bans`] by identity and by IP, expiring, bounded |
//! | `gater.rs` | [`Gater`]: accept / dial / post-handshake decisions and the counts behind them |
//! | `static_peers.rs` | [`StaticPeers`]: kept connected, redialled with capped, jittered backoff |
//! | `table.rs` | [`PeerTable`]: connected peers, their chain status, best-peer selection |
//! | `manager.rs` | [`PeerManager`]: the above behind the small API the node calls |
//!
//! The node owns one [`PeerManager`]. It asks the manager before it admits a
//! connection, tells it about connections and what peers do, and carries
//! out the [`PeerEvent`]s it returns (Goodbyes, dials, notifications). The
//! manager decides; the node acts.
//!
//! # Security
//! Provided: bounded inbound share, per-IP caps, bans by identity and IP,
//! score gating, and a memory of scores across reconnects; see each file's
//! `# Security` for details.
//! Not provided: rate limiting of requests (the req/resp layer), and defence
//! against an attacker with many IP addresses beyond what scores and bans
//! catch one identity at a time.
//!
//! # Limits
//! Every table is bounded: scores [`SCORES_MAX`], bans [`BANNED_PEERS_MAX`] and
//! [`BANNED_IPS_MAX`], static peers [`STATIC_PEERS_MAX`]; connections and peers
//! by the gater's [`ConnectionLimits`].

use std::net::{IpAddr, Ipv6Addr};

pub mod bans;
pub mod gater;
pub mod manager;
pub mod score;
pub mod static_peers;
pub mod table;

pub use bans::{Bans, Unban, BANNED_IPS_MAX, BANNED_PEERS_MAX, BAN_DURATION};
pub use gater::{
    ConnectionLimits, Decision, Gater, Refusal, CONNECTIONS_PER_IP_MAX, PEERS_INBOUND_MAX,
    PEERS_PER_NETGROUP_MAX, PEERS_TARGET,
};
pub use manager::{Config, PeerEvent, PeerManager, PeerManagerError, IP_BAN_PEER_BANS_MIN};
pub use score::{
    Penalty, Report, Score, ScoreEvent, Scores, SCORES_MAX, SCORE_BAN_THRESHOLD,
    SCORE_DISCONNECT_THRESHOLD, SCORE_GATE_THRESHOLD, SCORE_HALF_LIFE, SCORE_REWARD,
    SCORE_REWARD_CEILING,
};
pub use static_peers::{
    StaticPeers, StaticPeersFull, REDIAL_BACKOFF_INITIAL, REDIAL_BACKOFF_MAX, STATIC_PEERS_MAX,
};
pub use table::{ChainStatus, FinalizedTarget, PeerRecord, PeerTable};

/// The key under which per-IP rules (caps, bans) count an address: an
/// IPv4-mapped IPv6 address counts as its IPv4 address (dual-stack sockets
/// report those), and an IPv6 address as its /64, the block one host is
/// usually given, so a host cannot dodge a cap by rotating addresses in it.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        // `::1` is one host; its /64 would be `::`, which is not loopback.
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(v6),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn ip_keys_fold_mapped_addresses_and_ipv6_hosts() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ip_key(v4), v4);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(ip_key(mapped), v4);
        let host: IpAddr = "2001:db8:a:b:1:2:3:4".parse().unwrap();
        let expected: IpAddr = "2001:db8:a:b::".parse().unwrap();
        assert_eq!(ip_key(host), expected);
        let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(ip_key(loopback), loopback);
        assert!(ip_key(loopback).is_loopback());
    }
}
