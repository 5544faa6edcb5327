//! The `ADDR[@PEERID]` syntax of `--peer`.
//!
//! `ADDR` is `IP:PORT` (IPv6 in brackets, `[::1]:9000`) or `HOST:PORT`,
//! resolved once when parsed. `PEERID` is the base58 peer id `meshsync keygen`
//! prints; when given, the dial is refused unless the remote proves that identity.

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

/// Why a `--peer` value was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PeerAddressError {
    /// The address part is neither `IP:PORT` nor a resolvable `HOST:PORT`.
    BadAddress(String),
    /// The part after `@` is not a peer id.
    BadPeerId(String),
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
            PeerAddressError::BadPeerId(text) => write!(
                f,
                "`{text}` is not a peer id (expected the base58 id `meshsync keygen` prints)"
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
    }
}
