//! # meshsync-sim: a deterministic network simulator running the real core
//!
//! One thread, a virtual clock, one event queue, one seed. Every node is the
//! production [`meshsync_core::Node`]; the simulator plays the driver for all
//! of them, carrying bytes between them with modelled latency and jitter.
//!
//! ```text
//!            ┌──────────── EventQueue: (virtual time, seq) → Event ───────────┐
//!            │  Command · Connect · DialRefused · Bytes · Closed · Timer      │
//!            │  Crash · Restart · Wake                                        │
//!            └──────┬─────────────────────────────────────────────────▲───────┘
//!          pop next │                                                  │ push at now + delay
//!                   ▼                                                  │ (+ uplink queueing)
//!   Sim::step ──► Node::handle(now, Input) ──► drain Node::poll_action() ──► Network
//!                   │                              │                 (LinkModel, Pipe per
//!                   │                              ├─► Trace (sha256)  direction, blackholes)
//!                   │                              ├─► notifications ─► RequestLog (latency)
//!                   │                              │        │
//!                   │                              │        ▼
//!                   │                              │   Application (app::run_until/run_for):
//!                   │                              │   reacts with commands and wake-ups
//!                   └─► Node::poll_timeout() ──► one live Timer event per node
//!                   └─► invariants::check_node (after every step)
//! ```
//!
//! The same seed and scenario give the same [`Trace`] hash, bit for bit, on
//! any machine: iteration is over `BTreeMap`s and `Vec`s, randomness comes
//! from ChaCha20 streams derived from the seed, and the trace encodes every
//! action field by field.
//!
//! Faults the world can inject: blackholed nodes ([`Sim::set_blackholed`]),
//! crashes and restarts ([`Sim::crash`], [`Sim::restart`]), limited uplinks
//! ([`Sim::set_uplink`]), and hostile nodes running the production core with
//! `Config::faults` set ([`Sim::add_node_with_config`]).
//!
//! Named scenarios ([`scenario`]) build worlds from a seed: `connect`,
//! `request-flood`, `unresponsive-peer`, `static-peer-restart`, and the
//! gossip ones: `gossip-1k` and `gossip-blocks` (mesh, or floodsub with
//! `--floodsub`, measured by delivery ratio, latency, duplicates and bytes
//! per delivered byte) and the GossipSub v1.1 attacks `gossip-spam`,
//! `gossip-eclipse`, `gossip-withhold` and `cold-boot`
//! ([`scenario::gossip`], [`scenario::gossip_attacks`]).
//!
//! Modules, in layers: a module imports only from earlier layers, or from
//! an earlier module of its own layer; no two files import each other.
//! 1. [`types`] (node index, application events, `Timeout`), [`counts`],
//!    [`queue`] (the event queue), [`rng`], [`duration`] (command-line
//!    durations), [`chains`] (pre-signed chains, signed once per cache),
//!    [`replay`] (a recorded production node, replayed alone):
//!    they import nothing from the crate.
//! 2. [`link`] (latency, jitter, in-order pipes, slicing), [`network`]
//!    (listeners, connections, reachability), [`trace`] (the hash),
//!    [`requests`] (request latency), [`invariants`], [`samples`] (what
//!    `--report` records: head slot and peers per node over time, faults).
//! 3. [`sim`]: the world and its event loop, one concern per file.
//! 4. [`app`] (application logic beside the nodes), [`summary`].
//! 5. [`scenario`]: named runs, one file per story.
//! 6. [`campaign`]: one scenario over many seeds, in parallel, sharded;
//!    [`report`]: a sampled run's SVG plots (`run --report DIR`).
//! 7. The `meshsync-sim` binary (`main.rs`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod campaign;
pub mod chains;
pub mod counts;
pub mod duration;
pub mod invariants;
pub mod link;
pub mod network;
pub mod queue;
pub mod replay;
pub mod report;
pub mod requests;
pub mod rng;
pub mod samples;
pub mod scenario;
pub mod sim;
pub mod summary;
pub mod trace;
pub mod types;

pub use app::{AppEvent, Application};
pub use chains::ChainCache;
pub use duration::{format_duration, parse_duration};
pub use invariants::Violation;
pub use link::LinkModel;
pub use requests::{RequestLog, RequestOutcome, RequestRecord};
pub use scenario::{run, run_scenario, RunConfig, Scenario, UnknownScenario};
pub use sim::{NodeIndex, Sim, SimConfig, Timeout};
pub use summary::Summary;
pub use trace::Trace;
