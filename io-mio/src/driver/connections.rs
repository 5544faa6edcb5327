//! Sockets: accepting (with the core's per-IP cap applied before a slot is
//! taken), dialling, reading in bounded shares, per-connection write queues
//! flushed once per turn, and connections the core closed lingering in slots
//! of their own.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::io::CloseCause;
use meshsync_core::limits::{self, PENDING_SEND_BYTES_MAX};
use meshsync_core::peer::ip_key;
use meshsync_core::{ConnId, DialId, Input, Origin};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::send_queue::{SendQueue, WriteProgress};

use super::Driver;

/// The one read buffer of a driver: big enough that a burst of frames is
/// decoded from one read (design.md §7: small reads are expensive).
pub const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Bytes read from one connection in one turn before the others get a go.
pub const READ_BYTES_PER_TURN_MAX: usize = 4 * READ_BUFFER_BYTES;
/// How long a connection the core closed may take to flush its queue and see
/// the remote close, before it is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Sockets a driver holds at once dialling or open. Past it new inbound
/// connections are closed on accept, before the core sees them: the core
/// refuses past its own caps anyway. Closing sockets do not count (they have
/// [`CLOSING_CONNECTIONS_MAX`]), so refused connections cannot keep others out.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Sockets lingering after the core closed them, to flush a last Goodbye.
/// Past it a closed connection is dropped at once (its last bytes may be
/// lost): more than the peers we keep, so a shutdown still says goodbye to all.
pub const CLOSING_CONNECTIONS_MAX: usize = 256;
/// Lingering sockets per remote address (IPv4 address, IPv6 /64), unless
/// the core exempts it (loopback): one address whose connections the core
/// keeps refusing must not hold the closing slots either.
pub const CLOSING_PER_IP_MAX: usize = 2;
const _: () = assert!(limits::PEERS_MAX < CLOSING_CONNECTIONS_MAX);
const _: () = assert!(
    limits::PEERS_MAX + limits::HANDSHAKES_IN_PROGRESS_MAX + limits::DIALS_IN_PROGRESS_MAX
        < CONNECTIONS_MAX
);

/// The phase of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Our non-blocking connect for this dial is in progress.
    Dialing(DialId),
    /// Reported to the core with `Input::ConnectionOpened`.
    Open,
    /// The core closed it: flush the queue, shut down our side, discard what
    /// arrives until the remote closes or `deadline`. Nothing is reported.
    Closing {
        deadline: StdInstant,
        write_shut: bool,
    },
}

pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) remote: SocketAddr,
    pub(super) phase: Phase,
    pub(super) queue: SendQueue,
    /// Whether WRITABLE interest is registered (only while bytes wait, or while dialling).
    pub(super) writable_registered: bool,
    /// Whether the connection is in `Driver::dirty`, waiting for the end-of-turn write.
    pub(super) dirty: bool,
}

impl Connection {
    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        phase: Phase,
        writable_registered: bool,
    ) -> Connection {
        Connection {
            stream,
            remote,
            phase,
            queue: SendQueue::new(),
            writable_registered,
            dirty: false,
        }
    }
}

impl Driver {
    pub(super) fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, remote)) => self.accepted(stream, remote),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    // Out of file descriptors, most likely; the next connection retries.
                    log::warn!("[{:?}] accept failed: {error}", self.peer_id);
                    return;
                }
            }
        }
    }

    fn accepted(&mut self, mut stream: TcpStream, remote: SocketAddr) {
        if self.held_count(|_| true) >= CONNECTIONS_MAX {
            log::debug!(
                "[{:?}] {remote} closed on accept: {CONNECTIONS_MAX} connections held",
                self.peer_id
            );
            self.refused_on_accept += 1;
            return; // Dropping the stream closes it at once.
        }
        // The core's per-IP cap, before the connection takes a slot: the core
        // would refuse it anyway, after it had held a slot and lingered.
        let limits = &self.node.config().peer.limits;
        let (per_ip_max, exempt_loopback) = (limits.connections_per_ip_max, limits.exempt_loopback);
        let key = ip_key(remote.ip());
        if !(exempt_loopback && key.is_loopback())
            && self.held_count(|other| ip_key(other.ip()) == key) >= per_ip_max
        {
            log::debug!(
                "[{:?}] {remote} closed on accept: {per_ip_max} connections from its address",
                self.peer_id
            );
            self.refused_on_accept += 1;
            return;
        }
        let id = self.allocate_conn_id();
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut stream, Token(id as usize), Interest::READABLE)
        {
            log::warn!(
                "[{:?}] cannot register connection from {remote}: {error}",
                self.peer_id
            );
            return;
        }
        set_nodelay(&stream);
        log::debug!("[{:?}] accepted {remote} as conn {id}", self.peer_id);
        self.connections
            .insert(id, Connection::new(stream, remote, Phase::Open, false));
        self.feed(Input::ConnectionOpened {
            conn: ConnId(id),
            remote,
            origin: Origin::Accepted,
        });
        // Bytes that arrived before registration are read now.
        self.read(id);
    }

    pub(super) fn dial(&mut self, dial: DialId, addr: SocketAddr) {
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(error) => {
                self.feed(Input::DialFailed {
                    dial,
                    error: error.to_string(),
                });
                return;
            }
        };
        let id = self.allocate_conn_id();
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.feed(Input::DialFailed {
                dial,
                error: error.to_string(),
            });
            return;
        }
        log::debug!(
            "[{:?}] dialling {addr} (dial {}, conn {id})",
            self.peer_id,
            dial.0
        );
        self.connections.insert(
            id,
            Connection::new(stream, addr, Phase::Dialing(dial), true),
        );
        self.dials.insert(dial, id);
    }

    /// A dialling connection became writable or failed: find out which.
    pub(super) fn finish_dial(&mut self, id: u64, dial: DialId) {
        // Cannot fail: the caller found the connection in this phase.
        let connection = self
            .connections
            .get_mut(&id)
            .expect("dialling connection exists");
        let outcome = match connection.stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match connection.stream.peer_addr() {
                Ok(remote) => Ok(remote),
                // Not connected yet: a spurious wake-up, wait for the next one.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Err(error),
            },
        };
        match outcome {
            Err(error) => {
                log::debug!(
                    "[{:?}] dial {} to {} failed: {error}",
                    self.peer_id,
                    dial.0,
                    connection.remote
                );
                self.drop_connection(id);
                self.feed(Input::DialFailed {
                    dial,
                    error: error.to_string(),
                });
            }
            Ok(remote) => {
                self.dials.remove(&dial);
                connection.phase = Phase::Open;
                connection.remote = remote;
                set_nodelay(&connection.stream);
                if let Err(error) = self.poll.registry().reregister(
                    &mut connection.stream,
                    Token(id as usize),
                    Interest::READABLE,
                ) {
                    self.drop_connection(id);
                    self.feed(Input::DialFailed {
                        dial,
                        error: error.to_string(),
                    });
                    return;
                }
                connection.writable_registered = false;
                log::debug!(
                    "[{:?}] dial {} connected to {remote} as conn {id}",
                    self.peer_id,
                    dial.0
                );
                self.feed(Input::ConnectionOpened {
                    conn: ConnId(id),
                    remote,
                    origin: Origin::Dialed(dial),
                });
                self.read(id);
            }
        }
    }

    /// Reads until the socket would block, the connection ends, or this
    /// connection had its share of the turn.
    pub(super) fn read(&mut self, id: u64) {
        let mut filled = 0;
        let mut total = 0;
        loop {
            let Some(connection) = self.connections.get_mut(&id) else {
                return;
            };
            match connection.stream.read(&mut self.read_buffer[filled..]) {
                Ok(0) => {
                    self.deliver(id, filled);
                    self.lost(id, CloseCause::RemoteClosed);
                    return;
                }
                Ok(count) => {
                    self.observer.bytes_received += count as u64;
                    filled += count;
                    total += count;
                    if filled == self.read_buffer.len() {
                        self.deliver(id, filled);
                        filled = 0;
                        if total >= READ_BYTES_PER_TURN_MAX {
                            self.read_backlog.push(id);
                            return;
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.deliver(id, filled);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.deliver(id, filled);
                    self.lost(id, CloseCause::Io(error.to_string()));
                    return;
                }
            }
        }
    }

    /// Hands the first `count` bytes of the read buffer to the node, unless
    /// the core has closed the connection (then they are dropped, as promised).
    fn deliver(&mut self, id: u64, count: usize) {
        if count == 0 {
            return;
        }
        let is_open = self
            .connections
            .get(&id)
            .is_some_and(|connection| connection.phase == Phase::Open);
        if is_open {
            self.feed_read(ConnId(id), count);
        }
    }

    /// The connection ended without the core asking: report it if the core
    /// still thinks it is open.
    fn lost(&mut self, id: u64, cause: CloseCause) {
        let Some(connection) = self.drop_connection(id) else {
            return;
        };
        if connection.phase == Phase::Open {
            log::debug!(
                "[{:?}] conn {id} ({}) ended: {cause}",
                self.peer_id,
                connection.remote
            );
            self.feed(Input::ConnectionClosed {
                conn: ConnId(id),
                cause,
            });
        }
    }

    /// Writes what is queued for the connection, and keeps WRITABLE interest
    /// registered exactly while something stays queued.
    pub(super) fn flush(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.dirty = false;
        if matches!(connection.phase, Phase::Dialing(_)) {
            return;
        }
        let queued_before = connection.queue.len();
        let result = connection.queue.write_to(&mut connection.stream);
        let written = queued_before - connection.queue.len();
        self.observer.bytes_sent += written as u64;
        if written > 0 && connection.phase == Phase::Open {
            // The core holds gossip back while too much is unwritten.
            self.feed(Input::BytesWritten {
                conn: ConnId(id),
                bytes: written,
            });
        }
        let progress = match result {
            Ok(progress) => progress,
            Err(error) => {
                self.lost(id, CloseCause::Io(error.to_string()));
                return;
            }
        };
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let want_writable = progress == WriteProgress::Blocked;
        if want_writable != connection.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(error) = self.poll.registry().reregister(
                &mut connection.stream,
                Token(id as usize),
                interest,
            ) {
                self.lost(id, CloseCause::Io(error.to_string()));
                return;
            }
            connection.writable_registered = want_writable;
        }
        if let Phase::Closing {
            deadline,
            write_shut: false,
        } = connection.phase
        {
            if connection.queue.is_empty() {
                // Our last bytes are out: send FIN, then wait for the remote's.
                let _ = connection.stream.shutdown(Shutdown::Write);
                connection.phase = Phase::Closing {
                    deadline,
                    write_shut: true,
                };
            }
        }
    }

    /// Removes a connection from the poll and the maps, returning it.
    pub(super) fn drop_connection(&mut self, id: u64) -> Option<Connection> {
        let mut connection = self.connections.remove(&id)?;
        self.observer.forget_connection(connection.remote);
        // Dropping the socket removes it from epoll anyway; this is for tidiness.
        let _ = self.poll.registry().deregister(&mut connection.stream);
        if let Phase::Dialing(dial) = connection.phase {
            self.dials.remove(&dial);
        }
        Some(connection)
    }

    /// Drops closing connections whose linger time is over.
    pub(super) fn expire_closing(&mut self) {
        let now = StdInstant::now();
        let expired: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                matches!(connection.phase, Phase::Closing { deadline, .. } if deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::debug!("[{:?}] conn {id} dropped after lingering", self.peer_id);
            self.drop_connection(id);
        }
    }

    fn allocate_conn_id(&mut self) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        id
    }

    pub(super) fn queue(&mut self, id: u64, bytes: Vec<u8>) {
        let Some(connection) = self.connections.get_mut(&id) else {
            log::trace!("[{:?}] send to gone conn {id} dropped", self.peer_id);
            return;
        };
        if connection.phase != Phase::Open {
            return;
        }
        connection.queue.push(bytes);
        if !connection.dirty {
            connection.dirty = true;
            self.dirty.push(id);
        }
        if connection.queue.len() > PENDING_SEND_BYTES_MAX {
            // The socket may take some now; only a peer that reads nothing overflows.
            self.flush(id);
            let still_full = self
                .connections
                .get(&id)
                .is_some_and(|connection| connection.queue.len() > PENDING_SEND_BYTES_MAX);
            if still_full {
                self.drop_connection(id);
                log::info!("[{:?}] conn {id} dropped: send buffer full", self.peer_id);
                self.feed(Input::ConnectionClosed {
                    conn: ConnId(id),
                    cause: CloseCause::SendBufferFull,
                });
            }
        }
    }

    pub(super) fn close(&mut self, id: u64) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        if connection.phase != Phase::Open {
            return;
        }
        log::debug!(
            "[{:?}] closing conn {id} ({})",
            self.peer_id,
            connection.remote
        );
        connection.phase = Phase::Closing {
            deadline: StdInstant::now() + CLOSE_LINGER,
            write_shut: false,
        };
        let remote = connection.remote;
        self.flush(id);
        // Lingering is a courtesy (our Goodbye may still be in the queue),
        // bounded so that connections the core keeps refusing cannot pile up.
        let key = ip_key(remote.ip());
        let exempt = self.node.config().peer.limits.exempt_loopback && key.is_loopback();
        let closing = |phase: &Phase| matches!(phase, Phase::Closing { .. });
        let (mut all, mut same_ip) = (0, 0);
        for connection in self.connections.values() {
            if closing(&connection.phase) {
                all += 1;
                if ip_key(connection.remote.ip()) == key {
                    same_ip += 1;
                }
            }
        }
        if all > CLOSING_CONNECTIONS_MAX || (!exempt && same_ip > CLOSING_PER_IP_MAX) {
            log::debug!(
                "[{:?}] conn {id} ({remote}) dropped without lingering",
                self.peer_id
            );
            self.dropped_without_linger += 1;
            self.drop_connection(id);
        }
    }

    /// Connections dialling or open (closing ones excluded) whose remote
    /// address passes `filter`.
    pub(super) fn held_count(&self, filter: impl Fn(&SocketAddr) -> bool) -> usize {
        self.connections
            .values()
            .filter(|connection| {
                !matches!(connection.phase, Phase::Closing { .. }) && filter(&connection.remote)
            })
            .count()
    }
}

/// Reads and drops whatever input is waiting, without blocking (a bounded
/// number of reads: this is a courtesy before closing, not a drain).
pub(super) fn discard_input(stream: &mut TcpStream, buffer: &mut [u8]) {
    for _ in 0..16 {
        match stream.read(buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Frames are coalesced by the driver, so Nagle's delay would only add latency.
pub(super) fn set_nodelay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        log::debug!("cannot set TCP_NODELAY: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsync_core::io::{Notification, RefuseReason};
    use meshsync_core::{Command, Config, Identity};

    /// A peer that never reads gets its connection dropped once more than
    /// `PENDING_SEND_BYTES_MAX` bytes wait, and the core hears why.
    #[test]
    fn a_peer_that_does_not_read_is_dropped_with_send_buffer_full() {
        let deadline = StdInstant::now() + Duration::from_secs(20);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        // The kernel completes the TCP handshake from the backlog; nobody ever reads.
        let sink = std::net::TcpListener::bind(loopback).unwrap();
        let mut driver =
            Driver::bind(loopback, Config::new(1), Identity::from_seed(1), [1; 32]).unwrap();
        let notifications = driver.subscribe();
        driver.command(Command::Dial {
            addr: sink.local_addr().unwrap(),
            peer: None,
        });
        let open = driver
            .run_until(
                |driver| {
                    driver
                        .connections
                        .values()
                        .any(|connection| connection.phase == Phase::Open)
                },
                deadline,
            )
            .unwrap();
        assert!(open, "the dial did not connect");
        let id = *driver.connections.keys().next().unwrap();

        // Socket buffers absorb a few MiB; the queue limit is hit soon after.
        let chunk_bytes = 1024 * 1024;
        let chunks_max = 2 * PENDING_SEND_BYTES_MAX / chunk_bytes;
        for _ in 0..chunks_max {
            if !driver.connections.contains_key(&id) {
                break;
            }
            driver.queue(id, vec![0; chunk_bytes]);
        }
        assert!(
            !driver.connections.contains_key(&id),
            "the connection was not dropped"
        );
        let refused = notifications
            .try_iter()
            .find_map(|notification| match notification {
                Notification::ConnectionRefused { reason, .. } => Some(reason),
                _ => None,
            });
        assert_eq!(
            refused,
            Some(RefuseReason::ConnectionLost(CloseCause::SendBufferFull)),
            "the core was told why (the connection was still in its handshake)"
        );
    }

    /// One address opening connection after connection and never reading or
    /// closing them used to park every socket slot: each was refused by the
    /// core's per-IP cap only after taking a slot, then lingered for
    /// `CLOSE_LINGER` waiting for a FIN that never came. Now the cap applies
    /// on accept, refused sockets are closed at once, and closed ones linger
    /// only in a few slots of their own. Loopback stands in for one remote
    /// address (the core's loopback exemption is turned off), and the
    /// per-IP cap is set to the core's cap on one address's handshakes, so
    /// that the driver's cap on accept, not the core's refusal, is what
    /// stops the extra sockets.
    #[test]
    fn parked_sockets_from_one_address_cannot_hold_the_slots() {
        use std::io::Write;
        let deadline = StdInstant::now() + Duration::from_secs(20);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::new(1);
        config.peer.limits.exempt_loopback = false;
        config.peer.limits.connections_per_ip_max = meshsync_core::limits::HANDSHAKES_PER_IP_MAX;
        let per_ip = config.peer.limits.connections_per_ip_max;
        let mut driver = Driver::bind(loopback, config, Identity::from_seed(1), [1; 32]).unwrap();
        let addr = driver.local_addr();
        let extra = 24;
        let mut parked: Vec<std::net::TcpStream> = (0..per_ip + extra)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let all_seen = driver
            .run_until(
                |driver| {
                    driver.connection_count() + driver.refused_on_accept() as usize
                        >= per_ip + extra
                },
                deadline,
            )
            .unwrap();
        assert!(all_seen);
        assert_eq!(driver.connection_count(), per_ip);
        assert_eq!(driver.refused_on_accept(), extra as u64);
        // The refused ones were closed at once, well before a linger would end.
        for stream in &mut parked[per_ip..] {
            stream.set_read_timeout(Some(CLOSE_LINGER / 2)).unwrap();
            match stream.read(&mut [0u8; 1]) {
                Ok(0) => {}
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("a refused socket was kept: {other:?}"),
            }
        }

        // The admitted ones break their handshakes and the core closes them;
        // they never read or close, so each would linger for CLOSE_LINGER.
        for stream in &mut parked[..per_ip] {
            stream.write_all(&[0xff; 64]).unwrap();
        }
        let all_closed = driver
            .run_until(|driver| driver.held_count(|_| true) == 0, deadline)
            .unwrap();
        assert!(all_closed);
        assert!(driver.closing_count() <= CLOSING_PER_IP_MAX);
        assert_eq!(
            driver.dropped_without_linger(),
            (per_ip - CLOSING_PER_IP_MAX) as u64
        );
        // Their slots are free at once: the address may connect again.
        let _newcomer = std::net::TcpStream::connect(addr).unwrap();
        let admitted = driver
            .run_until(|driver| driver.held_count(|_| true) == 1, deadline)
            .unwrap();
        assert!(admitted);
        assert_eq!(driver.refused_on_accept(), extra as u64);
    }
}
