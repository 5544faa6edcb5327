//! The event loop: take the next due event off the queue, move the clock
//! to it, and hand it to the node (or application) it is for; and the
//! bounded runs built on it ([`Sim::run_until`], [`Sim::run_for`]).
//!
//! Nodes never call each other: every effect on another node becomes an
//! event in the queue, due when the link model says, so one step is one
//! event and touches at most two nodes.

use meshsync_core::io::CloseCause;
use meshsync_core::{DialId, Duration, Input, Instant, Origin};

use super::event::Event;
use super::world::Sim;
use crate::network;
use crate::types::{AppEvent, NodeIndex, Timeout};

impl Sim {
    /// Processes the next event. Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.step_until(Instant::MAX)
    }

    /// Processes the next event due at or before `deadline`; false if there is none.
    pub fn step_until(&mut self, deadline: Instant) -> bool {
        while let Some(at) = self.queue.peek_at() {
            if at > deadline {
                return false;
            }
            // Just peeked: the queue is not empty.
            let (at, event) = self.queue.pop().expect("peeked event");
            if let Event::Timer { node, generation } = event {
                if generation != self.node_state(node).timer_generation {
                    continue; // Stale: a later wake-up replaced it.
                }
            }
            debug_assert!(at >= self.now, "the clock never goes backwards");
            // The first event ends the set-up, if the scenario did not say so first.
            self.mark_built();
            self.sample_before(at);
            self.now = at;
            self.events += 1;
            self.process(event);
            return true;
        }
        false
    }

    /// Steps until `predicate` holds, at most `steps_max` steps.
    pub fn run_until(
        &mut self,
        mut predicate: impl FnMut(&Sim) -> bool,
        steps_max: u64,
    ) -> Result<(), Timeout> {
        let mut steps = 0;
        loop {
            if predicate(self) {
                return Ok(());
            }
            if steps == steps_max {
                return Err(Timeout {
                    steps,
                    now: self.now,
                    idle: false,
                });
            }
            if !self.step() {
                return Err(Timeout {
                    steps,
                    now: self.now,
                    idle: true,
                });
            }
            steps += 1;
        }
    }

    /// Processes everything due within `duration` and leaves the clock at its end.
    ///
    /// Always ends: every network hop and every timer moves virtual time
    /// forward (see [`crate::link::DELAY_MIN`] and [`crate::sim::TIMER_STALL_BACKOFF`]).
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while self.step_until(deadline) {}
        self.sample_before(deadline);
        self.now = deadline;
    }

    pub(super) fn process(&mut self, event: Event) {
        match event {
            Event::Command { node, command } => self.command(node, command),
            Event::Connect {
                dialer,
                incarnation,
                dial,
                acceptor,
            } => {
                if self.is_incarnation(dialer, incarnation) {
                    self.connect(dialer, dial, acceptor);
                }
            }
            Event::DialRefused {
                node,
                incarnation,
                dial,
                error,
            } => {
                // A cancelled dial is forgotten: its late answer is not reported.
                if self.is_incarnation(node, incarnation)
                    && self.node_state_mut(node).dials.remove(&dial)
                {
                    self.deliver(node, Input::DialFailed { dial, error });
                }
            }
            Event::Bytes { node, conn, bytes } => {
                if self.network.arrive(conn) {
                    self.network_counts.bytes_delivered += bytes.len() as u64;
                    log::trace!("{node} receives {} bytes on {conn:?}", bytes.len());
                    self.deliver(node, Input::BytesReceived { conn, bytes });
                } else {
                    self.network_counts.bytes_dropped += bytes.len() as u64;
                }
            }
            Event::Closed { node, conn, cause } => {
                if self.network.arrive(conn) {
                    self.network.remove(conn);
                    log::debug!("{node} sees {conn:?} closed: {cause}");
                    self.deliver(node, Input::ConnectionClosed { conn, cause });
                }
            }
            Event::WorkDone {
                node,
                incarnation,
                id,
                output,
            } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    self.deliver(node, Input::WorkDone { id, output });
                }
            }
            Event::Persisted {
                node,
                incarnation,
                batch,
            } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    self.persisted(node, incarnation, batch);
                }
            }
            Event::BlocksRead {
                node,
                incarnation,
                id,
                blocks,
                complete,
            } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    let input = Input::BlocksRead {
                        id,
                        blocks,
                        complete,
                    };
                    self.deliver(node, input);
                }
            }
            Event::DiskRetry { node, incarnation } => {
                if self.is_up(node) && self.node_state(node).incarnation == incarnation {
                    self.retry_disk(node, incarnation);
                }
            }
            Event::Written { node, conn, bytes } => {
                if self.network.endpoint_of(node, conn).is_some() {
                    self.deliver(node, Input::BytesWritten { conn, bytes });
                }
            }
            Event::LocalClose { node, conn, cause } => {
                if self.network.endpoint_of(node, conn).is_some() {
                    log::debug!("{node} gives up {conn:?}: {cause}");
                    self.close_endpoint(node, conn, CloseCause::RemoteClosed);
                    self.deliver(node, Input::ConnectionClosed { conn, cause });
                }
            }
            Event::Timer { node, .. } => {
                self.node_state_mut(node).timer_at = None;
                self.deliver(node, Input::Timeout);
            }
            Event::Reset { node, conn } => self.reset_arrived(node, conn),
            Event::Crash { node } => self.crash(node),
            Event::Restart { node } => self.restart(node),
            Event::Wake { token } => self.push_app_event(AppEvent::Wake { token }),
        }
    }

    pub(super) fn connect(&mut self, dialer: NodeIndex, dial: DialId, acceptor: NodeIndex) {
        if !self.node_state_mut(dialer).dials.remove(&dial) {
            // Cancelled before it connected: the attempt is dropped unreported,
            // and the acceptor never sees it either.
            return;
        }
        if !self.is_up(acceptor) {
            // It went down while the connection was being set up: the
            // dialler gets the refusal the dead host's kernel sends.
            self.network_counts.dials_refused += 1;
            let error = format!("connection refused: {acceptor} is down");
            self.deliver(dialer, Input::DialFailed { dial, error });
            return;
        }
        let (dialer_conn, acceptor_conn) = self.network.open(dialer, acceptor);
        self.network_counts.connections_established += 1;
        log::debug!("{dialer} connected to {acceptor} ({dialer_conn:?}/{acceptor_conn:?})");
        let acceptor_addr = self.node_state(acceptor).addr;
        let dialer_addr = network::ephemeral_address(self.node_state(dialer).addr, acceptor_conn);
        self.deliver(
            dialer,
            Input::ConnectionOpened {
                conn: dialer_conn,
                remote: acceptor_addr,
                origin: Origin::Dialed(dial),
            },
        );
        self.deliver(
            acceptor,
            Input::ConnectionOpened {
                conn: acceptor_conn,
                remote: dialer_addr,
                origin: Origin::Accepted,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use meshsync_core::Command;

    use crate::sim::config::SimConfig;

    fn sim(seed: u64) -> Sim {
        Sim::new(SimConfig::new(seed))
    }

    #[test]
    fn run_until_is_bounded_and_reports_why_it_stopped() {
        let mut empty = sim(1);
        let idle = empty.run_until(|_| false, 10).unwrap_err();
        assert!(idle.idle && idle.steps == 0, "{idle}");
        assert_eq!(empty.run_until(|_| true, 0), Ok(()));

        let mut busy = sim(1);
        let a = busy.add_node();
        let b = busy.add_node();
        busy.dial(a, b);
        let bounded = busy.run_until(|_| false, 3).unwrap_err();
        assert!(!bounded.idle && bounded.steps == 3, "{bounded}");
        assert_eq!(busy.events(), 3);
    }

    #[test]
    fn a_dial_to_an_empty_address_fails_after_a_round_trip() {
        let mut sim = sim(2);
        let node = sim.add_node();
        let nowhere: SocketAddr = "10.9.9.9:9000".parse().expect("literal address");
        sim.command(
            node,
            Command::Dial {
                addr: nowhere,
                peer: None,
            },
        );
        let failed = |sim: &Sim| sim.notification_counts().dial_failed == 1;
        sim.run_until(failed, 100).expect("the refusal arrives");
        // Two one-way delays of 25 ms ± 10 %.
        assert!(sim.now() >= Instant::from_micros(45_000), "{}", sim.now());
        assert!(sim.now() <= Instant::from_micros(55_000), "{}", sim.now());
        assert_eq!(sim.network_counts().dials_refused, 1);
        assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
    }

    #[test]
    fn a_pair_connects_and_keeps_alive_the_same_way_from_the_same_seed() {
        let run = |seed: u64| {
            let mut sim = sim(seed);
            let a = sim.add_node();
            let b = sim.add_node();
            sim.dial(a, b);
            sim.run_until(|sim| sim.are_connected(a, b), 1_000)
                .expect("a clean link connects");
            sim.run_for(Duration::from_secs(100));
            assert_eq!(sim.invariant_violations(), 0, "{:?}", sim.violations());
            (sim.trace().hash_hex(), sim.events(), sim.trace().actions())
        };
        let first = run(3);
        assert_eq!(first, run(3));
        assert_ne!(first.0, run(4).0);
    }
}
