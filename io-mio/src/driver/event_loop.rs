//! The loop itself: one turn polls for readiness, dispatches it, feeds the
//! core and drains its actions (the run-loop contract), fires the core's
//! timer, and writes what the turn queued; plus signals and the graceful
//! shutdown.

use std::io;
use std::time::{Duration, Instant as StdInstant};

use meshsync_core::{Action, Command, ConnId, Input, Instant};
use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;

use super::clock::std_instant;
use super::connections::{discard_input, Phase};
use super::{Driver, RunState, LISTENER, SIGNALS, WAKER};

/// How long a graceful shutdown waits for queues to drain.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// One readiness event, copied out of `mio::Events` so that handling it can
/// borrow the driver mutably.
#[derive(Clone, Copy, Debug)]
pub(super) struct Readiness {
    token: Token,
    readable: bool,
    writable: bool,
}

impl Driver {
    /// Makes SIGINT and SIGTERM start a graceful shutdown; a second one ends
    /// the driver at once. Every driver in a process that calls this reacts to
    /// every such signal.
    pub fn catch_signals(&mut self) -> io::Result<()> {
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Hands `command` to the node at once.
    pub fn command(&mut self, command: Command) {
        self.feed(Input::Command(command));
        self.settle();
    }

    /// Starts a graceful shutdown: the node says Goodbye and closes every
    /// connection, the listener closes, and the driver finishes once every
    /// queue is written and every connection shut down on our side, or after
    /// [`SHUTDOWN_FLUSH_TIMEOUT`].
    pub fn shutdown(&mut self) {
        if self.state != RunState::Running {
            return;
        }
        log::info!("[{:?}] shutting down", self.peer_id);
        if let Some(mut listener) = self.listener.take() {
            // The listener is dropped right after; a failed deregistration changes nothing.
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.state = RunState::ShuttingDown {
            deadline: StdInstant::now() + SHUTDOWN_FLUSH_TIMEOUT,
        };
        self.command(Command::Shutdown);
        self.check_shutdown_done();
    }

    /// Runs until a shutdown (from a signal, [`DriverHandle::stop`](super::DriverHandle::stop) or
    /// [`Driver::shutdown`]) has completed.
    pub fn run(mut self) -> io::Result<()> {
        while !self.is_finished() {
            self.turn(None)?;
        }
        let stats = self.persist_stats;
        if self.is_durable() && stats.batches > 0 {
            log::info!(
                "[{:?}] stored {} blocks in {} commits: {} µs mean, {} µs at most",
                self.peer_id,
                stats.blocks,
                stats.batches,
                stats.commit_micros_total / stats.batches,
                stats.commit_micros_max
            );
        }
        let lost = self.report_unwritten();
        log::info!("[{:?}] stopped", self.peer_id);
        match (self.exit_error.take(), lost) {
            (Some(error), _) | (None, Some(error)) => Err(io::Error::other(error)),
            (None, None) => Ok(()),
        }
    }

    /// Runs turns until `predicate` holds (then `Ok(true)`), or `deadline`
    /// passes or the driver finishes (then `Ok(false)`). The predicate is
    /// checked before the first turn and after every one.
    pub fn run_until<P>(&mut self, mut predicate: P, deadline: StdInstant) -> io::Result<bool>
    where
        P: FnMut(&Driver) -> bool,
    {
        loop {
            if predicate(self) {
                return Ok(true);
            }
            let now = StdInstant::now();
            if now >= deadline || self.is_finished() {
                return Ok(false);
            }
            self.turn(Some(deadline - now))?;
        }
    }

    /// One turn: wait for readiness (at most until the core's timer, and at
    /// most `wait_max`), handle it, fire the timer if due, write what was queued.
    pub fn turn(&mut self, wait_max: Option<Duration>) -> io::Result<()> {
        if self.is_finished() {
            return Ok(());
        }
        let wait = self.wait_duration(wait_max);
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|event| Readiness {
            token: event.token(),
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
        }));
        let backlog = std::mem::take(&mut self.read_backlog);
        for readiness in &ready {
            self.dispatch(*readiness);
            if self.is_finished() {
                return Ok(());
            }
        }
        self.ready = ready;
        for id in backlog {
            self.read(id);
        }
        // Every turn, not only on a waker event: cheap, and no result can
        // be stranded by a wake that raced with an earlier drain.
        self.drain_work();
        self.drain_store();
        if self
            .persist_retry_at
            .is_some_and(|retry_at| retry_at <= StdInstant::now())
        {
            self.retry_store();
        }
        self.watch_store();
        self.watch_clock();
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|due| due <= now) {
            self.feed(Input::Timeout);
        }
        self.expire_closing();
        self.settle();
        self.observe_turn();
        self.check_shutdown_done();
        Ok(())
    }

    /// How long the next poll may wait.
    fn wait_duration(&self, wait_max: Option<Duration>) -> Option<Duration> {
        let now = StdInstant::now();
        let mut wait = wait_max;
        let mut at_most = |duration: Duration| {
            wait = Some(wait.map_or(duration, |wait| wait.min(duration)));
        };
        if !self.read_backlog.is_empty() {
            at_most(Duration::ZERO);
        }
        if let Some(due) = self.node.poll_timeout() {
            if due != Instant::MAX {
                let due = std_instant(self.origin, due);
                at_most(due.saturating_duration_since(now));
            }
        }
        for connection in self.connections.values() {
            if let Phase::Closing { deadline, .. } = connection.phase {
                at_most(deadline.saturating_duration_since(now));
            }
        }
        if let RunState::ShuttingDown { deadline } = self.state {
            at_most(deadline.saturating_duration_since(now));
        }
        if let Some(retry_at) = self.persist_retry_at {
            at_most(retry_at.saturating_duration_since(now));
        }
        at_most(self.clock_check_at.saturating_duration_since(now));
        if let Some(due) = self.observer.next_due() {
            at_most(due.saturating_duration_since(now));
        }
        if self.store.is_some() {
            at_most(self.store_check_at.saturating_duration_since(now));
        }
        wait
    }

    fn dispatch(&mut self, readiness: Readiness) {
        match readiness.token {
            LISTENER => self.accept_all(),
            WAKER => self.drain_control(),
            SIGNALS => self.drain_signals(),
            Token(token) => {
                let id = token as u64;
                let Some(connection) = self.connections.get(&id) else {
                    return; // Dropped earlier in this turn.
                };
                match connection.phase {
                    Phase::Dialing(dial) => self.finish_dial(id, dial),
                    Phase::Open | Phase::Closing { .. } => {
                        if readiness.readable {
                            self.read(id);
                        }
                        if readiness.writable {
                            self.flush(id);
                        }
                    }
                }
            }
        }
    }

    fn drain_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        for signal in received {
            if self.state == RunState::Running {
                log::info!(
                    "[{:?}] signal {signal}: shutting down (again to quit at once)",
                    self.peer_id
                );
                self.shutdown();
            } else {
                log::warn!(
                    "[{:?}] signal {signal} during shutdown: quitting at once",
                    self.peer_id
                );
                self.state = RunState::Finished;
            }
        }
    }

    /// A shutdown is done once every connection the core closed has its
    /// queue written and our FIN sent (or at the deadline). Waiting for the
    /// remotes' FINs too would let one unresponsive peer hold up the exit.
    fn check_shutdown_done(&mut self) {
        let RunState::ShuttingDown { deadline } = self.state else {
            return;
        };
        let flushed = self
            .connections
            .values()
            .all(|connection| match connection.phase {
                Phase::Dialing(_) => true,
                Phase::Open => false,
                Phase::Closing { write_shut, .. } => write_shut,
            });
        if !flushed && StdInstant::now() < deadline {
            return;
        }
        if !flushed {
            log::info!(
                "[{:?}] shutdown flush timed out with {} connections left",
                self.peer_id,
                self.connections.len()
            );
        }
        // Closing a socket with unread input makes the kernel send RST, which
        // may discard our last bytes at the remote; read what is there first.
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        for id in ids {
            if let Some(mut connection) = self.drop_connection(id) {
                discard_input(&mut connection.stream, &mut self.read_buffer);
            }
        }
        self.state = RunState::Finished;
    }

    /// Feeds `input` and everything it leads to, draining actions after each
    /// `handle`. Called while actions are being executed (a dial that fails at
    /// once, a full send buffer), it only queues `input`: the outer call feeds
    /// it once the node's actions are drained, so `handle` is never called
    /// between two `poll_action`s.
    pub(super) fn feed(&mut self, input: Input) {
        self.observe_input(&input);
        self.pending.push_back(input);
        if !self.feeding {
            self.feed_pending();
        }
    }

    /// Feeds the first `count` bytes of the read buffer, received on
    /// `conn`: what `feed(Input::BytesReceived { .. })` does, but the node
    /// reads them where they are instead of from a copy of their own. Only
    /// when nothing else is being fed (inputs keep their order) and no
    /// recording is made (a recording holds every input whole).
    pub(super) fn feed_read(&mut self, conn: ConnId, count: usize) {
        if self.feeding || self.recorder.is_some() {
            let bytes = self.read_buffer[..count].to_vec();
            self.feed(Input::BytesReceived { conn, bytes });
            return;
        }
        self.feeding = true;
        let now = self.now();
        self.node
            .handle_bytes_received(now, conn, &self.read_buffer[..count]);
        self.execute_actions();
        // What the actions fed meanwhile waits in `pending`, in order.
        self.feed_pending();
    }

    /// Feeds what waits in `pending`, and what that feeds in turn.
    fn feed_pending(&mut self) {
        self.feeding = true;
        while let Some(input) = self.pending.pop_front() {
            let now = self.now();
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.input(now, &input);
            }
            self.node.handle(now, input);
            self.execute_actions();
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.input_done();
            }
        }
        self.feeding = false;
    }

    /// Carries out every action the node has queued.
    fn execute_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.action(&action);
            }
            self.execute(action);
        }
    }

    /// Writes every connection that got bytes this turn (and whatever that
    /// leads to) until nothing is left to write.
    fn settle(&mut self) {
        while !self.dirty.is_empty() {
            for id in std::mem::take(&mut self.dirty) {
                self.flush(id);
            }
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Dial { dial, addr } => self.dial(dial, addr),
            Action::CancelDial { dial } => {
                if let Some(id) = self.dials.get(&dial).copied() {
                    log::debug!("[{:?}] dial {} cancelled", self.peer_id, dial.0);
                    self.drop_connection(id);
                }
            }
            Action::Send { conn, bytes } => self.queue(conn.0, bytes),
            Action::Close { conn } => self.close(conn.0),
            Action::Work { id, job } => self.submit_work(id, job),
            Action::Persist(batch) => self.persist(batch),
            Action::ReadBlocks(read) => self.read_blocks(read),
            Action::PersistPeers(known) => self.persist_peers(known),
            Action::Notify(notification) => self.notify(notification),
        }
    }
}
