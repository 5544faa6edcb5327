//! Talking to a driver from other threads: a [`DriverHandle`] sends
//! commands, queries and stop over a bounded channel and wakes the poll
//! loop; a [`RunningDriver`] owns the driver's thread.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use meshsync_core::{Command, Input, PeerId};
use mio::Waker;

use super::Driver;

/// Commands and queries queued for a driver before [`DriverHandle`] calls block.
pub const CONTROL_QUEUED_MAX: usize = 1_024;

/// A query run on the driver's thread with the driver at rest.
pub(super) type Query = Box<dyn FnOnce(&Driver) + Send>;

/// What other threads send to a running driver.
pub(super) enum Control {
    Command(Command),
    Stop,
    Query(Query),
}

/// Why a [`DriverHandle`] call did not get through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The driver has stopped (or its thread died).
    Stopped,
    /// The driver did not answer a query in time.
    Timeout,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Stopped => write!(f, "the driver has stopped"),
            HandleError::Timeout => write!(f, "the driver did not answer in time"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Talks to a driver from another thread. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    sender: Sender<Control>,
    waker: Arc<Waker>,
}

impl DriverHandle {
    /// Hands `command` to the node (as `Input::Command`).
    pub fn command(&self, command: Command) -> Result<(), HandleError> {
        self.send(Control::Command(command))
    }

    /// Starts a graceful shutdown, like SIGTERM: `Command::Shutdown`, flush
    /// (at most [`SHUTDOWN_FLUSH_TIMEOUT`](super::SHUTDOWN_FLUSH_TIMEOUT)), then [`Driver::run`] returns.
    pub fn stop(&self) -> Result<(), HandleError> {
        self.send(Control::Stop)
    }

    /// Runs `query` on the driver's thread between two turns and returns its
    /// answer, waiting at most `timeout`.
    pub fn query<R, F>(&self, query: F, timeout: Duration) -> Result<R, HandleError>
    where
        R: Send + 'static,
        F: FnOnce(&Driver) -> R + Send + 'static,
    {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.send(Control::Query(Box::new(move |driver: &Driver| {
            // The asker may have timed out and gone; then nobody needs the answer.
            let _ = sender.send(query(driver));
        })))?;
        receiver.recv_timeout(timeout).map_err(|error| match error {
            crossbeam_channel::RecvTimeoutError::Timeout => HandleError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => HandleError::Stopped,
        })
    }

    fn send(&self, control: Control) -> Result<(), HandleError> {
        self.sender
            .send(control)
            .map_err(|_| HandleError::Stopped)?;
        self.waker.wake().map_err(|_| HandleError::Stopped)
    }
}

/// A driver running on its own thread. Dropping it stops the driver and joins the thread.
pub struct RunningDriver {
    handle: DriverHandle,
    local_addr: SocketAddr,
    peer_id: PeerId,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningDriver {
    /// A handle to the driver.
    pub fn handle(&self) -> &DriverHandle {
        &self.handle
    }

    /// The address the driver listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stops the driver gracefully and waits for its thread.
    pub fn stop(mut self) -> io::Result<()> {
        // Sending fails only if the driver already stopped; joining tells how.
        let _ = self.handle.stop();
        self.join_thread()
    }

    /// Waits until the driver stops by itself (a signal, or a `stop` from a handle).
    pub fn join(mut self) -> io::Result<()> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> io::Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the driver thread panicked"))),
        }
    }
}

impl Drop for RunningDriver {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.handle.stop();
            let _ = self.join_thread();
        }
    }
}

impl Driver {
    /// A handle for other threads to command, query and stop this driver.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle {
            sender: self.control_sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the driver on a new thread named `name`.
    pub fn spawn(self, name: &str) -> io::Result<RunningDriver> {
        let handle = self.handle();
        let local_addr = self.local_addr;
        let peer_id = self.peer_id;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || self.run())?;
        Ok(RunningDriver {
            handle,
            local_addr,
            peer_id,
            thread: Some(thread),
        })
    }

    pub(super) fn drain_control(&mut self) {
        while let Ok(control) = self.control_receiver.try_recv() {
            match control {
                Control::Command(command) => self.feed(Input::Command(command)),
                Control::Stop => self.shutdown(),
                Control::Query(query) => query(self),
            }
        }
    }
}
