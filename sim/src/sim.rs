//! The simulated world: nodes, the network between them, one clock, one queue.
//!
//! # Design
//! [`Sim`] is the driver of every node at once. It owns the virtual clock,
//! the [`crate::queue::EventQueue`], the [`crate::network::Network`] and the
//! nodes, and does for each node what `io-mio` does for one, following the
//! core's run-loop contract: `handle(now, input)`, drain `poll_action()` into
//! effects, ask `poll_timeout()` for the next wake-up. Nodes never call each
//! other: every effect on another node becomes an event in the queue, due
//! when the link model says, so one step is one event and touches at most
//! two nodes.
//!
//! One type, one concern per file; each file's own docs say more:
//!
//! | file | concern |
//! | --- | --- |
//! | `config.rs` | [`SimConfig`], defaults, what is kept per node |
//! | `event.rs` | what can be due in the queue |
//! | `host.rs` | one hosted node and its driver state; incarnation seeds |
//! | `world.rs` | [`Sim`]'s state, building it, accessors the parts share |
//! | `stores.rs` | chain stores built once per stored chain, cloned for each node that starts on it |
//! | `control.rs` | commands, dials, requests, faults (blackholes, partitions, crashes, restarts) |
//! | `run.rs` | the event loop: `step`, `run_until`, `run_for`, dispatch of events |
//! | `drive.rs` | the run-loop contract for one node, routing its actions, notifications |
//! | `timer.rs` | each node's one live timer |
//! | `transport.rs` | dials, sends and closes on the wire; uplink and downlink bandwidth |
//! | `faults.rs` | more faults: resets, link stalls, one-way cuts, clock skew and drift, a slow disk, slow verification |
//! | `clock.rs` | each node's clock against the world's (drift) |
//! | `disk.rs` | the modelled disk: persist batches and signing watermarks, a failing disk, a wiped one |
//! | `signatures.rs` | the invariant that no (proposer, slot) has two roots across every node's imports and writes |
//! | `views.rs` | looking at the world: peers, counters, latencies, trace, violations |
//! | `sampling.rs` | `--report`'s rows (head slot and peers per node, once per interval) and fault marks; reads only |
//!
//! The files below `world.rs` only add methods to [`Sim`]; none of them
//! names another's items except `disk.rs`, which times writes with
//! `transport.rs`'s transmit time and checks their blocks with
//! `signatures.rs`, as `drive.rs` checks imported ones. The types every layer shares
//! ([`NodeIndex`], [`Timeout`]) live in [`crate::types`], the counters in
//! [`crate::counts`], so nothing below the world imports it.

mod clock;
mod config;
mod control;
mod disk;
mod drive;
mod event;
mod faults;
mod host;
mod run;
mod sampling;
mod signatures;
mod stores;
mod timer;
mod transport;
mod views;
mod world;

pub use clock::{NodeClock, DRIFT_PPM_MAX};
pub use config::{
    node_config, SimConfig, APP_EVENTS_PENDING_MAX, BANDWIDTH_BYTES_PER_SECOND_DEFAULT,
    DIALS_KEPT_PER_NODE_MAX, LISTEN_PORT_DEFAULT, NETWORK_ID_DEFAULT,
    NOTIFICATIONS_KEPT_PER_NODE_MAX, NOTIFICATION_PAYLOAD_BYTES_KEPT_PER_NODE_MAX,
};
pub use disk::{DISK_WRITE_BYTES_PER_SECOND, DISK_WRITE_LATENCY};
pub use faults::SLOWDOWN_FACTOR_MAX;
pub use timer::TIMER_STALL_BACKOFF;
pub use world::Sim;

pub use crate::counts::{NetworkCounts, NotificationCounts};
pub use crate::types::{NodeIndex, Timeout};
