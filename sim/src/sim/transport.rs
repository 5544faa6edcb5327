//! Bytes on the wire: dials, sends and closes, carried through the
//! [`crate::network::Network`] with the link model's delays, and the
//! bandwidth each node's uplink and downlink give them.
//!
//! Bandwidth: every node has an uplink and a downlink rate, 50 Mbit/s each
//! by default ([`crate::SimConfig::bandwidth_bytes_per_second`],
//! [`Sim::set_uplink`], [`Sim::set_downlink`]). Its sends leave one after
//! another, each taking its size over the rate, so a burst of responses to
//! one peer delays what it sends to the others; when the last byte has
//! left, the node hears `Input::BytesWritten`. Arrivals then queue for the
//! receiver's downlink, booked in the order they were sent. As TCP's flow
//! control would, a send that must wait for the receiver's downlink waits
//! in the sender's queue: the sender hears `BytesWritten` only once the
//! downlink starts on it. A node that sends faster than its peers take in
//! keeps the backlog itself, within its own windows, and the network holds
//! what is actually on the wire (a receiver's queue was unbounded, and a
//! world of nodes forwarding 1 MiB blocks held gigabytes there). Only the
//! wait for other senders' bytes counts: bytes behind their own
//! connection's earlier bytes are on the wire, as TCP keeps a window in
//! flight, and a send never leaves before the one before it.
//! Bytes queued on one connection beyond
//! [`meshsync_core::limits::PENDING_SEND_BYTES_MAX`] close it with
//! `CloseCause::SendBufferFull`, as the `Action::Send` contract says.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meshsync_core::io::CloseCause;
use meshsync_core::{ConnId, DialId, Duration, Instant};

use super::config::DIALS_KEPT_PER_NODE_MAX;
use super::event::Event;
use super::world::Sim;
use crate::network::{Held, HeldWhat};
use crate::types::NodeIndex;

/// even one byte takes time on a limited link.
pub(super) fn transmit_time(bytes: usize, rate: u64) -> Duration {
    let micros = (bytes as u128 * 1_000_000).div_ceil(u128::from(rate));
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// Where a send's bytes stand once booked on the wire.
struct OnWire {
    /// When the receiver has taken them all.
    arrival: Instant,
    /// How long they wait for the receiver's downlink to take the bytes
    /// before them: the time our send queue holds them beyond our uplink.
    queued_for_downlink: Duration,
}

impl Sim {
    pub(super) fn apply_dial(&mut self, index: NodeIndex, dial: DialId, addr: SocketAddr) {
        let now = self.now;
        let state = self.node_state_mut(index);
        if state.dial_log.len() == DIALS_KEPT_PER_NODE_MAX {
            state.dial_log.pop_front();
        }
        state.dial_log.push_back((now, addr));
        if !state.dials.insert(dial) {
            self.violation(
                Some(index),
                format!("reused {dial:?} while it is in progress"),
            );
            return;
        }
        let incarnation = self.node_state(index).incarnation;
        let round_trip = self
            .network
            .link(index, index)
            .sample_round_trip(&mut self.rng_network);
        let at = self.now + round_trip;
        match self.network.listener(addr) {
            Some(acceptor) if !self.is_up(acceptor) => {
                self.network_counts.dials_refused += 1;
                self.queue.push(
                    at,
                    Event::DialRefused {
                        node: index,
                        incarnation,
                        dial,
                        error: format!("connection refused: {acceptor} is down"),
                    },
                );
            }
            None => {
                self.network_counts.dials_refused += 1;
                self.queue.push(
                    at,
                    Event::DialRefused {
                        node: index,
                        incarnation,
                        dial,
                        error: format!("connection refused: nothing listens on {addr}"),
                    },
                );
            }
            Some(acceptor) if self.network.connects(index, acceptor) => {
                self.queue.push(
                    at,
                    Event::Connect {
                        dialer: index,
                        incarnation,
                        dial,
                        acceptor,
                    },
                );
            }
            // Packets are lost one way or the other: no answer ever comes,
            // and the core's dial timeout must give up.
            Some(_) => {}
        }
    }

    /// When bytes handed to `index`'s uplink now finish leaving it.
    pub(super) fn uplink_departure(&mut self, index: NodeIndex, bytes: usize) -> Instant {
        let now = self.now;
        let state = self.node_state_mut(index);
        let Some(rate) = state.uplink_bytes_per_second else {
            return now;
        };
        let departure = state.uplink_free_at.max(now) + transmit_time(bytes, rate);
        state.uplink_free_at = departure;
        departure
    }

    /// When bytes reaching `index` at `arrival` have all come through its
    /// downlink, and how long they waited there for the bytes before them.
    /// The downlink is booked in the order bytes are sent, not the order
    /// they arrive: a simplification that keeps one pass per send.
    pub(super) fn downlink_arrival(
        &mut self,
        index: NodeIndex,
        arrival: Instant,
        bytes: usize,
    ) -> (Instant, Duration) {
        let state = self.node_state_mut(index);
        let Some(rate) = state.downlink_bytes_per_second else {
            return (arrival, Duration::ZERO);
        };
        let start = state.downlink_free_at.max(arrival);
        let done = start + transmit_time(bytes, rate);
        state.downlink_free_at = done;
        (done, start.saturating_duration_since(arrival))
    }

    pub(super) fn apply_send(&mut self, index: NodeIndex, conn: ConnId, bytes: Vec<u8>) {
        let now = self.now;
        let len = bytes.len();
        let Some(endpoint) = self.network.endpoint_of(index, conn) else {
            self.violation(Some(index), format!("sent on {conn:?}, which is not open"));
            return;
        };
        let (remote, remote_conn) = (endpoint.remote, endpoint.remote_conn);
        self.network_counts.sends += 1;
        self.network_counts.bytes_sent += bytes.len() as u64;
        if bytes.is_empty() || self.node_state(index).mute {
            // A zero-length write puts nothing on the wire; a mute node's
            // writes never reach it.
            return;
        }
        if self.node_state(remote).stopped_reading {
            // Its receive window is closed: the bytes wait in our send queue
            // for ever, never written, never delivered.
            let endpoint = self
                .network
                .endpoint_of(index, conn)
                .expect("looked up above");
            if endpoint.queue_outbound(now, Instant::MAX, bytes.len()) {
                self.network_counts.send_buffer_overflows += 1;
                self.queue.push(
                    now,
                    Event::LocalClose {
                        node: index,
                        conn,
                        cause: CloseCause::SendBufferFull,
                    },
                );
            }
            return;
        }
        let departure = self.uplink_departure(index, bytes.len());
        let reaches = self.network.delivers(index, remote) && self.network.is_open(remote_conn);
        // On the wire: placed before the write completes, so the rng and the
        // pipes are drawn in the order they always were; the events go in
        // after, in the order they always did.
        let carried = reaches.then(|| self.place_on_wire(index, conn, bytes.len(), departure));
        // Flow control: bytes waiting for the receiver's downlink wait in
        // our send queue, not in the network, so they count against our
        // windows for as long as the receiver takes to start on them.
        // In order: a later send never leaves before an earlier one, whatever
        // the jitter of their delays.
        let written = match &carried {
            Some(wire) => self
                .network
                .endpoint_of(index, conn)
                .expect("open endpoint")
                .written_at(departure + wire.queued_for_downlink),
            None => departure,
        };
        self.queue.push(
            written,
            Event::Written {
                node: index,
                conn,
                bytes: bytes.len(),
            },
        );
        // Looked up above, and nothing closed it since.
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        if endpoint.queue_outbound(now, written, bytes.len()) {
            // More than the driver may queue: give the connection up, as
            // `Action::Send`'s contract says, once this step is over.
            self.network_counts.send_buffer_overflows += 1;
            self.queue.push(
                now,
                Event::LocalClose {
                    node: index,
                    conn,
                    cause: CloseCause::SendBufferFull,
                },
            );
        }
        let Some(wire) = carried else {
            let held = self.network.is_open(remote_conn)
                && self.network.hold(Held {
                    from: index,
                    conn,
                    to: remote,
                    remote_conn,
                    what: HeldWhat::Bytes(bytes),
                });
            if !held {
                // Lost, or on its way to an end that already closed: it
                // would be dropped there.
                self.network_counts.bytes_dropped += len as u64;
            }
            return;
        };
        self.deliver_placed(index, conn, bytes, &wire);
    }

    /// Puts `bytes` that leave `index`'s uplink at `departure` on the wire
    /// of its open end `conn`, towards the open remote end.
    fn carry(&mut self, index: NodeIndex, conn: ConnId, bytes: Vec<u8>, departure: Instant) {
        let wire = self.place_on_wire(index, conn, bytes.len(), departure);
        self.deliver_placed(index, conn, bytes, &wire);
    }

    /// Schedules the arrival of `bytes`, booked by [`Sim::place_on_wire`],
    /// in the pieces the link slices them into.
    fn deliver_placed(&mut self, index: NodeIndex, conn: ConnId, bytes: Vec<u8>, wire: &OnWire) {
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        let (remote, remote_conn) = (endpoint.remote, endpoint.remote_conn);
        let link = *self.network.link(index, remote);
        for piece in link.slice(&mut self.rng_network, bytes) {
            self.network.expect_delivery(remote_conn);
            self.queue.push(
                wire.arrival,
                Event::Bytes {
                    node: remote,
                    conn: remote_conn,
                    bytes: piece,
                },
            );
        }
    }

    /// Books `bytes_len` bytes that leave `index`'s uplink at `departure`
    /// through the pipe of its open end `conn` and the remote's downlink.
    fn place_on_wire(
        &mut self,
        index: NodeIndex,
        conn: ConnId,
        bytes_len: usize,
        departure: Instant,
    ) -> OnWire {
        let now = self.now;
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        let remote = endpoint.remote;
        let link = *self.network.link(index, remote);
        let delay = link.sample_delay(&mut self.rng_network);
        let endpoint = self
            .network
            .endpoint_of(index, conn)
            .expect("open endpoint");
        let reached = endpoint.outbound.arrival(departure, delay);
        let (arrival, queued_for_downlink) = self.downlink_arrival(remote, reached, bytes_len);
        // A stalled link releases what it held, in order, when the stall
        // ends (after the receiver's downlink took it: a stall delays this
        // pair only, not the receiver's other peers).
        let arrival = match self.network.stalled_until(index, remote, now) {
            Some(until) => arrival.max(until),
            None => arrival,
        };
        // Later sends and the close on this pipe come after these bytes.
        self.network
            .endpoint_of(index, conn)
            .expect("open endpoint")
            .outbound
            .hold_until(arrival);
        OnWire {
            arrival,
            queued_for_downlink,
        }
    }

    pub(super) fn apply_close(&mut self, index: NodeIndex, conn: ConnId) {
        if self.network.endpoint_of(index, conn).is_none() {
            self.violation(Some(index), format!("closed {conn:?}, which is not open"));
            return;
        }
        self.close_endpoint(index, conn, CloseCause::RemoteClosed);
    }

    /// Removes `index`'s open endpoint `conn` and tells the remote end, with
    /// `cause`, after every byte already on its way (TCP's FIN follows the data).
    pub(super) fn close_endpoint(&mut self, index: NodeIndex, conn: ConnId, cause: CloseCause) {
        // Callers check that it is open and belongs to `index`.
        let mut endpoint = self.network.remove(conn).expect("open endpoint");
        debug_assert_eq!(endpoint.node, index);
        let remote = endpoint.remote;
        if !self.network.delivers(index, remote) || !self.network.is_open(endpoint.remote_conn) {
            if self.network.is_open(endpoint.remote_conn) {
                self.network.hold(Held {
                    from: index,
                    conn,
                    to: remote,
                    remote_conn: endpoint.remote_conn,
                    what: HeldWhat::Close(cause),
                });
            }
            return;
        }
        let delay = self
            .network
            .link(index, remote)
            .sample_delay(&mut self.rng_network);
        let departure = self.node_state(index).uplink_free_at.max(self.now);
        let arrival = endpoint.outbound.arrival(departure, delay);
        let arrival = match self.network.stalled_until(index, remote, self.now) {
            Some(until) => arrival.max(until),
            None => arrival,
        };
        self.network.expect_delivery(endpoint.remote_conn);
        self.queue.push(
            arrival,
            Event::Closed {
                node: remote,
                conn: endpoint.remote_conn,
                cause,
            },
        );
    }
}

impl Sim {
    /// Delivers what holding cuts kept, in the order it was sent, now that
    /// they healed: bytes whose two ends are still open, and closes whose
    /// receiving end is.
    pub(super) fn release_held(&mut self, held: Vec<Held>) {
        let now = self.now;
        // A released close comes after the bytes released before it.
        let mut last_arrival: BTreeMap<ConnId, Instant> = BTreeMap::new();
        for Held {
            from,
            conn,
            to,
            remote_conn,
            what,
        } in held
        {
            if !self.network.is_open(remote_conn) {
                continue;
            }
            match what {
                HeldWhat::Bytes(bytes) => {
                    if self.network.endpoint_of(from, conn).is_none() {
                        self.network_counts.bytes_dropped += bytes.len() as u64;
                        continue;
                    }
                    self.carry(from, conn, bytes, now);
                    let endpoint = self.network.endpoint_of(from, conn).expect("open");
                    last_arrival.insert(remote_conn, endpoint.outbound.arrival_last());
                }
                HeldWhat::Close(cause) => {
                    let delay = self
                        .network
                        .link(from, to)
                        .sample_delay(&mut self.rng_network);
                    let after = last_arrival.get(&remote_conn).copied().unwrap_or(now);
                    let arrival = after.max(now + delay);
                    self.network.expect_delivery(remote_conn);
                    self.queue.push(
                        arrival,
                        Event::Closed {
                            node: to,
                            conn: remote_conn,
                            cause,
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::{SimConfig, BANDWIDTH_BYTES_PER_SECOND_DEFAULT};

    fn sim(seed: u64) -> Sim {
        Sim::new(SimConfig::new(seed))
    }

    #[test]
    fn a_limited_uplink_sends_one_thing_after_another() {
        let mut sim = sim(10);
        let a = sim.add_node();
        sim.set_uplink(a, Some(1_000)); // 1 kB/s: every byte is a millisecond.
        assert_eq!(sim.uplink_departure(a, 500), Instant::from_micros(500_000));
        assert_eq!(sim.uplink_departure(a, 1), Instant::from_micros(501_000));
        sim.set_uplink(a, None);
        assert_eq!(sim.uplink_departure(a, 1_000_000), Instant::ZERO);
    }

    #[test]
    fn a_limited_downlink_takes_in_one_thing_after_another() {
        let mut sim = sim(10);
        let a = sim.add_node();
        sim.set_downlink(a, Some(1_000));
        let at = Instant::from_micros(100_000);
        assert_eq!(
            sim.downlink_arrival(a, at, 500),
            (Instant::from_micros(600_000), Duration::ZERO)
        );
        // Arriving earlier than the downlink is free: it waits its turn.
        assert_eq!(
            sim.downlink_arrival(a, Instant::ZERO, 100),
            (
                Instant::from_micros(700_000),
                Duration::from_micros(600_000)
            )
        );
        sim.set_downlink(a, None);
        assert_eq!(sim.downlink_arrival(a, at, 1_000_000), (at, Duration::ZERO));
    }

    #[test]
    fn bytes_waiting_for_a_busy_downlink_wait_in_the_senders_queue() {
        // Flow control: what the receiver cannot take yet, because another
        // sender's bytes fill its downlink, stays counted in the sender's
        // queue (and its window), not piled up on the wire.
        let mut sim = sim(10);
        let (a, b, c) = (sim.add_node(), sim.add_node(), sim.add_node());
        sim.set_uplink(a, None);
        sim.set_uplink(c, None);
        sim.set_downlink(b, Some(1_000)); // 1 kB/s: every byte is a millisecond.
        let (a_to_b, _) = sim.network.open(a, b);
        let (c_to_b, _) = sim.network.open(c, b);
        let unsent = |sim: &mut Sim, node: NodeIndex, conn: ConnId| {
            sim.network
                .endpoint_of(node, conn)
                .expect("open")
                .unsent_bytes()
        };
        sim.apply_send(a, a_to_b, vec![0; 500]);
        assert_eq!(unsent(&mut sim, a, a_to_b), 0, "b's downlink was free");
        sim.apply_send(c, c_to_b, vec![0; 300]);
        assert_eq!(
            unsent(&mut sim, c, c_to_b),
            300,
            "behind half a second of a's bytes: still c's"
        );
        sim.set_downlink(b, None);
        sim.apply_send(a, a_to_b, vec![0; 200]);
        assert_eq!(
            unsent(&mut sim, a, a_to_b),
            0,
            "an unlimited downlink holds nothing back"
        );
        sim.apply_send(c, c_to_b, vec![0; 200]);
        assert_eq!(
            unsent(&mut sim, c, c_to_b),
            500,
            "a later send on c's connection leaves after its earlier one"
        );
    }

    #[test]
    fn bandwidth_defaults_to_fifty_megabits_each_way() {
        let mut sim = sim(10);
        let a = sim.add_node();
        // 6.25 MB at 6.25 MB/s: one second out, one second in.
        let bytes = BANDWIDTH_BYTES_PER_SECOND_DEFAULT as usize;
        assert_eq!(
            sim.uplink_departure(a, bytes),
            Instant::from_micros(1_000_000)
        );
        assert_eq!(
            sim.downlink_arrival(a, Instant::ZERO, bytes),
            (Instant::from_micros(1_000_000), Duration::ZERO)
        );
    }
}
