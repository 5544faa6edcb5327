//! The `ADDR[@PEERID]` syntax of `--peer`, and the `ADDR@PEERID` of
//! `--static-peer` and `--bootnode`.
//!
//! `ADDR` is `IP:PORT` (IPv6 in brackets, `[::1]:9000`) or `HOST:PORT`,
//! resolved once when parsed. `PEERID` is the base58 peer id `meshsync keygen`
//! prints (and `meshsync node` logs as `node PEERID listening on ADDR`); when
//! given, the dial is refused unless the remote proves that identity.
//!
//! A static peer must name its identity: it is redialled for as long as the
//! node runs, so without one whoever holds the address later would be kept
//! in its place, and the core could not recognise the peer when it is the
//! one that connects.
//!
//! A bootnode must name its identity too: discovery keeps its candidates by
//! identity, and only a remote that proves it enters the routing table as
//! that bootnode.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use meshsync_core::{Command, PeerId};

/// An address to dial and, optionally, the identity expected there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerAddress {
    /// Where to dial.
    pub addr: SocketAddr,
    /// Who must answer, if known.
    pub peer: Option<PeerId>,
}

impl PeerAddress {
    /// The command that dials this address.
    pub fn dial_command(&self) -> Command {
        Command::Dial {
            addr: self.addr,
            peer: self.peer,
        }
    }
}

impl fmt::Display for PeerAddress {
    /// `ADDR` or `ADDR@PEERID`, as parsed (a host name shows as the address it resolved to).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{}@{peer}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A peer to keep connected (`--static-peer ADDR@PEERID`): dialled at
/// start and redialled with backoff by the core whenever it drops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StaticPeerAddress {
    /// Where to dial.
    pub addr: SocketAddr,
    /// Who must answer there.
    pub peer: PeerId,
}

impl StaticPeerAddress {
    /// The command that makes the node keep this peer connected.
    pub fn command(&self) -> Command {
        Command::AddStaticPeer {
            addr: self.addr,
            peer: Some(self.peer),
        }
    }
}

impl fmt::Display for StaticPeerAddress {
    /// `ADDR@PEERID`, as parsed (a host name shows as the address it resolved to).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.peer)
    }
}

impl FromStr for StaticPeerAddress {
    type Err = PeerAddressError;

    fn from_str(text: &str) -> Result<StaticPeerAddress, PeerAddressError> {
        let (addr, peer) = parse_with_peer_id(text, PeerAddressError::MissingPeerId)?;
        Ok(StaticPeerAddress { addr, peer })
    }
}

/// A peer to start discovery from (`--bootnode ADDR@PEERID`): a candidate
/// the discovery machine dials and asks for others, and falls back to
/// whenever its routing table is empty. Not kept connected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BootnodeAddress {
    /// Where to dial.
    pub addr: SocketAddr,
    /// Who must answer there.
    pub peer: PeerId,
}

impl BootnodeAddress {
    /// The pair `meshsync_core::node::DiscoveryConfig::bootnodes` holds.
    pub fn as_pair(&self) -> (PeerId, SocketAddr) {
        (self.peer, self.addr)
    }
}

impl fmt::Display for BootnodeAddress {
    /// `ADDR@PEERID`, as parsed (a host name shows as the address it resolved to).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.peer)
    }
}

impl FromStr for BootnodeAddress {
    type Err = PeerAddressError;

    fn from_str(text: &str) -> Result<BootnodeAddress, PeerAddressError> {
        let (addr, peer) = parse_with_peer_id(text, PeerAddressError::BootnodeWithoutPeerId)?;
        Ok(BootnodeAddress { addr, peer })
    }
}

/// `ADDR@PEERID` with the id required; `missing` is the error for a value
/// without `@` (its text trimmed).
fn parse_with_peer_id(
    text: &str,
    missing: fn(String) -> PeerAddressError,
) -> Result<(SocketAddr, PeerId), PeerAddressError> {
    let text = text.trim();
    // Checked first: without the `@` nothing else is worth resolving.
    if !text.contains('@') {
        return Err(missing(text.to_string()));
    }
    let parsed: PeerAddress = text.parse()?;
    // `text` has an `@`, so `PeerAddress` parsed a peer id or refused;
    // no panic path even so.
    let peer = parsed.peer.ok_or_else(|| missing(text.to_string()))?;
    Ok((parsed.addr, peer))
}

/// Why a `--peer`, `--static-peer` or `--bootnode` value was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PeerAddressError {
    /// The address part is neither `IP:PORT` nor a resolvable `HOST:PORT`.
    BadAddress(String),
    /// The part after `@` is not a peer id.
    BadPeerId(String),
    /// A static peer without `@PEERID`.
    MissingPeerId(String),
    /// A bootnode without `@PEERID`.
    BootnodeWithoutPeerId(String),
}

impl fmt::Display for PeerAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddressError::BadAddress(text) => {
                write!(
                    f,
                    "`{text}` is not an address (expected IP:PORT or HOST:PORT)"
                )
            }
            PeerAddressError::BadPeerId(text) if text.is_empty() => write!(
                f,
                "nothing after `@` (expected the base58 peer id `meshsync keygen` prints)"
            ),
            PeerAddressError::BadPeerId(text) => write!(
                f,
                "`{text}` is not a peer id (expected the base58 id `meshsync keygen` prints)"
            ),
            PeerAddressError::MissingPeerId(text) => write!(
                f,
                "`{text}` has no `@PEERID`: a static peer is kept only with the identity \
                 it must prove (expected ADDR@PEERID, the base58 id `meshsync keygen` prints)"
            ),
            PeerAddressError::BootnodeWithoutPeerId(text) => write!(
                f,
                "`{text}` has no `@PEERID`: discovery starts from a bootnode only with the \
                 identity it must prove (expected ADDR@PEERID, the base58 id `meshsync keygen` \
                 prints, or the one in its `node PEERID listening on ADDR` log line)"
            ),
        }
    }
}

impl std::error::Error for PeerAddressError {}

impl FromStr for PeerAddress {
    type Err = PeerAddressError;

    fn from_str(text: &str) -> Result<PeerAddress, PeerAddressError> {
        let text = text.trim();
        let (addr_text, peer_text) = match text.split_once('@') {
            Some((addr, peer)) => (addr, Some(peer)),
            None => (text, None),
        };
        let peer = peer_text
            .map(|peer| {
                peer.parse::<PeerId>()
                    .map_err(|_| PeerAddressError::BadPeerId(peer.to_string()))
            })
            .transpose()?;
        Ok(PeerAddress {
            addr: parse_socket_addr(addr_text)?,
            peer,
        })
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved to its first address.
fn parse_socket_addr(text: &str) -> Result<SocketAddr, PeerAddressError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || PeerAddressError::BadAddress(text.to_string());
    // Only names with a port are worth a resolver call.
    if text.is_empty() || !text.contains(':') {
        return Err(bad());
    }
    text.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::Identity;

    #[test]
    fn address_alone() {
        let parsed: PeerAddress = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(parsed.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(parsed.peer, None);
        let parsed: PeerAddress = "[::1]:9001".parse().unwrap();
        assert_eq!(parsed.addr, "[::1]:9001".parse().unwrap());
    }

    #[test]
    fn address_with_peer_id() {
        let id = Identity::from_seed(5).peer_id();
        let parsed: PeerAddress = format!("10.0.0.7:30303@{id}").parse().unwrap();
        assert_eq!(parsed.addr, "10.0.0.7:30303".parse().unwrap());
        assert_eq!(parsed.peer, Some(id));
        assert_eq!(
            parsed.dial_command(),
            Command::Dial {
                addr: parsed.addr,
                peer: Some(id)
            }
        );
        let parsed: PeerAddress = format!("[::1]:1@{id}").parse().unwrap();
        assert_eq!(parsed.peer, Some(id));
        // Display writes what parses back to the same address.
        assert_eq!(parsed.to_string(), format!("[::1]:1@{id}"));
        assert_eq!(parsed.to_string().parse::<PeerAddress>(), Ok(parsed));
    }

    #[test]
    fn host_names_resolve() {
        let parsed: PeerAddress = "localhost:9000".parse().unwrap();
        assert!(parsed.addr.ip().is_loopback());
        assert_eq!(parsed.addr.port(), 9000);
    }

    #[test]
    fn bad_input_is_refused_with_the_offending_part() {
        let id = Identity::from_seed(5).peer_id();
        assert_eq!(
            "127.0.0.1".parse::<PeerAddress>(),
            Err(PeerAddressError::BadAddress("127.0.0.1".into()))
        );
        assert_eq!(
            "".parse::<PeerAddress>(),
            Err(PeerAddressError::BadAddress("".into()))
        );
        assert_eq!(
            "127.0.0.1:99999".parse::<PeerAddress>(),
            Err(PeerAddressError::BadAddress("127.0.0.1:99999".into()))
        );
        assert_eq!(
            "127.0.0.1:9000@nope".parse::<PeerAddress>(),
            Err(PeerAddressError::BadPeerId("nope".into()))
        );
        assert_eq!(
            "127.0.0.1:9000@".parse::<PeerAddress>(),
            Err(PeerAddressError::BadPeerId("".into()))
        );
        assert_eq!(
            format!("@{id}").parse::<PeerAddress>(),
            Err(PeerAddressError::BadAddress("".into()))
        );
        let error = "1.2.3.4:5@0OIl".parse::<PeerAddress>().unwrap_err();
        assert!(error.to_string().contains("0OIl"), "{error}");
        let error = "1.2.3.4:5@".parse::<PeerAddress>().unwrap_err();
        assert!(
            error.to_string().starts_with("nothing after `@`"),
            "{error}"
        );
    }

    #[test]
    fn static_peer_with_its_id() {
        let id = Identity::from_seed(6).peer_id();
        let parsed: StaticPeerAddress = format!(" 127.0.0.1:9001@{id} ").parse().unwrap();
        assert_eq!(parsed.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(parsed.peer, id);
        assert_eq!(
            parsed.command(),
            Command::AddStaticPeer {
                addr: parsed.addr,
                peer: Some(id)
            }
        );
        // Display writes what parses back to the same static peer.
        assert_eq!(parsed.to_string(), format!("127.0.0.1:9001@{id}"));
        assert_eq!(parsed.to_string().parse::<StaticPeerAddress>(), Ok(parsed));
        let parsed: StaticPeerAddress = format!("[::1]:1@{id}").parse().unwrap();
        assert_eq!(parsed.addr, "[::1]:1".parse().unwrap());
    }

    #[test]
    fn static_peer_without_its_id_or_with_a_bad_part_is_refused() {
        let id = Identity::from_seed(6).peer_id();
        assert_eq!(
            "127.0.0.1:9001".parse::<StaticPeerAddress>(),
            Err(PeerAddressError::MissingPeerId("127.0.0.1:9001".into()))
        );
        assert_eq!(
            "".parse::<StaticPeerAddress>(),
            Err(PeerAddressError::MissingPeerId("".into()))
        );
        assert_eq!(
            format!("127.0.0.1@{id}").parse::<StaticPeerAddress>(),
            Err(PeerAddressError::BadAddress("127.0.0.1".into()))
        );
        assert_eq!(
            format!("@{id}").parse::<StaticPeerAddress>(),
            Err(PeerAddressError::BadAddress("".into()))
        );
        assert_eq!(
            "127.0.0.1:9001@nope".parse::<StaticPeerAddress>(),
            Err(PeerAddressError::BadPeerId("nope".into()))
        );
        assert_eq!(
            "127.0.0.1:9001@".parse::<StaticPeerAddress>(),
            Err(PeerAddressError::BadPeerId("".into()))
        );
        // The message says what is missing and what is expected.
        let error = "10.0.0.1:9001".parse::<StaticPeerAddress>().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("`10.0.0.1:9001`"), "{message}");
        assert!(message.contains("ADDR@PEERID"), "{message}");
    }

    #[test]
    fn bootnode_parses_as_a_static_peer_and_names_itself_when_its_id_is_missing() {
        let id = Identity::from_seed(7).peer_id();
        let parsed: BootnodeAddress = format!(" 127.0.0.1:9001@{id} ").parse().unwrap();
        assert_eq!(parsed.as_pair(), (id, "127.0.0.1:9001".parse().unwrap()));
        assert_eq!(parsed.to_string(), format!("127.0.0.1:9001@{id}"));
        assert_eq!(parsed.to_string().parse::<BootnodeAddress>(), Ok(parsed));
        assert_eq!(
            "127.0.0.1:9001".parse::<BootnodeAddress>(),
            Err(PeerAddressError::BootnodeWithoutPeerId(
                "127.0.0.1:9001".into()
            ))
        );
        assert_eq!(
            format!("127.0.0.1@{id}").parse::<BootnodeAddress>(),
            Err(PeerAddressError::BadAddress("127.0.0.1".into()))
        );
        assert_eq!(
            "127.0.0.1:9001@nope".parse::<BootnodeAddress>(),
            Err(PeerAddressError::BadPeerId("nope".into()))
        );
        let message = "10.0.0.1:9001"
            .parse::<BootnodeAddress>()
            .unwrap_err()
            .to_string();
        assert!(message.contains("bootnode"), "{message}");
        assert!(!message.contains("static peer"), "{message}");
    }
}
