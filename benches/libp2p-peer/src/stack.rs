//! The rust-libp2p stack every benchmark runs: TCP (`TCP_NODELAY`, as
//! meshsync's driver sets it), Noise XX with an ed25519 identity, yamux,
//! each at its library defaults, on tokio; that is, the stock
//! `SwarmBuilder::with_tcp` path an application takes.
//!
//! Identities are drawn from SplitMix64, so that every run is the same run.

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, Swarm};

use crate::flags::Flags;

/// How long a connection without work stays open: longer than any run,
/// so that only a benchmark closes one (libp2p's default closes a
/// connection as soon as no behaviour keeps it alive).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3_600);
/// The longest wait for a listener's address.
const LISTEN_WAIT_MAX: Duration = Duration::from_secs(10);

/// Whether payloads are snappy-compressed on the wire (`--compression`).
///
/// meshsync compresses every request/response answer and every gossip
/// payload with snappy; an application on libp2p that wants the same wire
/// does it itself, in its codec or gossipsub's data transform. `none`
/// measures libp2p without that work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Snappy,
    None,
}

impl Compression {
    /// Takes `--compression snappy|none` (default snappy).
    pub fn take(flags: &mut Flags) -> Result<Compression, String> {
        match flags.take_choice("compression", &["snappy", "none"])? {
            "none" => Ok(Compression::None),
            _ => Ok(Compression::Snappy),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Snappy => "snappy",
            Compression::None => "none",
        }
    }
}

/// SplitMix64: the generator meshsync's benchmarks draw their graph,
/// identities and payloads from, so that one seed gives the same graph in both.
/// Not for keys that protect anything.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill_bytes(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A reproducible ed25519 identity.
pub fn identity(seed: u64) -> Keypair {
    let mut secret = [0u8; 32];
    SplitMix64(seed).fill_bytes(&mut secret);
    Keypair::ed25519_from_bytes(secret).expect("any 32 bytes are an ed25519 secret key")
}

/// A swarm of `behaviour` on the stock TCP + Noise + yamux stack.
pub fn swarm<B: NetworkBehaviour>(identity: Keypair, behaviour: B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("the TCP transport and its upgrades build from their defaults")
        .with_behaviour(|_| behaviour)
        .expect("the behaviour is built already")
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build()
}

/// Listens on an ephemeral port of 127.0.0.1 and returns the address.
pub async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Result<Multiaddr, String> {
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .expect("the constant is a valid address");
    swarm
        .listen_on(loopback)
        .map_err(|error| format!("listen: {error}"))?;
    let address = async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    };
    tokio::time::timeout(LISTEN_WAIT_MAX, address)
        .await
        .map_err(|_| format!("no listening address after {LISTEN_WAIT_MAX:?}"))
}

/// A percentile of `sorted` nanoseconds (nearest rank: the smallest value
/// with at least `percent` % of them at or below it), in ms; as meshsync's
/// benchmarks compute it.
pub fn percentile_ms(sorted: &[u64], percent: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6)
}
