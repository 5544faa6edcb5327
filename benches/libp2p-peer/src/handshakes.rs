//! `libp2p-peer handshakes`: process CPU per connection through two
//! rust-libp2p swarms over loopback TCP, the cycle of `meshsync bench
//! handshakes` over TCP.
//!
//! # What runs
//! A listening swarm and a dialling swarm in this process, both with the
//! dummy behaviour (no protocol beyond the connection), driven by this one
//! task. One cycle, `--count` times, one at a time: the dialler dials the
//! listener's address expecting its peer id; TCP connect, multistream-select,
//! Noise XX, multistream-select, yamux; once *both* swarms have reported
//! `ConnectionEstablished`, the dialler closes the connection; the cycle
//! ends once both have reported `ConnectionClosed`, so the next starts from
//! scratch. This is meshsync's cycle, where the dialler says Goodbye once
//! both sides are connected and a cycle ends when both saw the disconnect.
//!
//! A meshsync cycle does more on the way: the identity proof, admission,
//! and a Status and Metadata exchange; the libp2p cycle runs no protocol at
//! all, so the comparison leans libp2p's way.
//!
//! # What is measured
//! From the first dial to the last close seen by both sides: cycles per
//! second, and the process CPU (both swarms, their connection tasks, this
//! task) per cycle, the figure meshsync's `cpu_us_per_connection` is
//! compared with.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{dummy, ConnectionId, SwarmEvent};
use libp2p::Swarm;

use crate::cpu::{self, Stopwatch};
use crate::flags::Flags;
use crate::stack;

/// The most `--count` may be: a run of an hour at a thousand a second.
pub const COUNT_MAX: u64 = 3_600_000;
/// The default of `--count`, as meshsync's.
const COUNT_DEFAULT: u64 = 1_000;
/// The longest one cycle may take before the benchmark gives up.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Seeds the identities: distinct from every other benchmark's.
const LISTENER_SEED: u64 = 100;
const DIALLER_SEED: u64 = 101;

/// Where the one cycle in flight is: what each side has reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cycle {
    Connecting {
        dialler_saw: bool,
        listener_saw: bool,
    },
    Closing {
        dialler_saw: bool,
        listener_saw: bool,
    },
}

impl Cycle {
    const CONNECTING: Cycle = Cycle::Connecting {
        dialler_saw: false,
        listener_saw: false,
    };
    const CLOSING: Cycle = Cycle::Closing {
        dialler_saw: false,
        listener_saw: false,
    };
}

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    count: u64,
}

impl Options {
    /// Takes `--count`.
    pub fn take(flags: &mut Flags) -> Result<Options, String> {
        Ok(Options {
            count: flags.take("count", COUNT_DEFAULT, 1..=COUNT_MAX)?,
        })
    }
}

/// Runs the benchmark.
pub async fn run(options: Options) -> Result<serde_json::Value, String> {
    let Options { count } = options;

    let mut listener = stack::swarm(stack::identity(LISTENER_SEED), dummy::Behaviour);
    let mut dialler = stack::swarm(stack::identity(DIALLER_SEED), dummy::Behaviour);
    let address = stack::listen(&mut listener).await?;
    let target = *listener.local_peer_id();
    let dial = || {
        DialOpts::peer_id(target)
            .addresses(vec![address.clone()])
            // Dial even while the last connection's close is on its way.
            .condition(PeerCondition::Always)
            .build()
    };

    let stopwatch = Stopwatch::start();
    let mut finished = 0u64;
    let mut cycle = Cycle::CONNECTING;
    let mut connection: Option<ConnectionId> = None;
    dialler
        .dial(dial())
        .map_err(|error| format!("handshakes: dial: {error}"))?;
    while finished < count {
        let (from_dialler, event) = next(&mut listener, &mut dialler).await?;
        let mark = |dialler_saw: &mut bool, listener_saw: &mut bool| {
            if from_dialler {
                *dialler_saw = true;
            } else {
                *listener_saw = true;
            }
        };
        match (&mut cycle, event) {
            (
                Cycle::Connecting {
                    dialler_saw,
                    listener_saw,
                },
                SwarmEvent::ConnectionEstablished { connection_id, .. },
            ) => {
                if from_dialler {
                    connection = Some(connection_id);
                }
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    cycle = Cycle::CLOSING;
                    let id = connection
                        .take()
                        .expect("the dialler reported its connection");
                    if !dialler.close_connection(id) {
                        return Err(
                            "handshakes: the connection closed before the dialler did".to_owned()
                        );
                    }
                }
            }
            (
                Cycle::Closing {
                    dialler_saw,
                    listener_saw,
                },
                SwarmEvent::ConnectionClosed { .. },
            ) => {
                mark(dialler_saw, listener_saw);
                if *dialler_saw && *listener_saw {
                    finished += 1;
                    cycle = Cycle::CONNECTING;
                    if finished < count {
                        dialler
                            .dial(dial())
                            .map_err(|error| format!("handshakes: dial: {error}"))?;
                    }
                }
            }
            (_, SwarmEvent::OutgoingConnectionError { error, .. }) => {
                return Err(format!("handshakes: dial: {error}"))
            }
            (_, SwarmEvent::IncomingConnectionError { error, .. }) => {
                return Err(format!("handshakes: incoming connection: {error}"))
            }
            (_, SwarmEvent::ConnectionClosed { cause, .. }) => {
                return Err(format!(
                    "handshakes: a connection closed while connecting: {cause:?}"
                ))
            }
            _ => {}
        }
    }
    let spent = stopwatch.stop();

    let cpu_seconds = spent.cpu.map(|cpu| cpu.as_secs_f64());
    Ok(serde_json::json!({
        "bench": "handshakes",
        "count": count,
        "parallel": 1,
        "tcp_handshakes_per_second": count as f64 / spent.wall.as_secs_f64(),
        "cpu_us_per_connection": cpu_seconds.map(|cpu| cpu * 1e6 / count as f64),
        "tcp_seconds": spent.wall.as_secs_f64(),
        "cpu_seconds": cpu_seconds,
        "cpu_cores": spent.cpu_cores(),
        "other_cpu_cores": spent.other_cpu_cores(),
        "rss_peak_mib": cpu::rss_peak_mib(),
        "cpu_resolution_seconds": cpu::RESOLUTION.as_secs_f64(),
    }))
}

/// The next event of either swarm: (whether the dialler's, it).
async fn next(
    listener: &mut Swarm<dummy::Behaviour>,
    dialler: &mut Swarm<dummy::Behaviour>,
) -> Result<(bool, SwarmEvent<std::convert::Infallible>), String> {
    let either = async {
        tokio::select! {
            event = listener.select_next_some() => (false, event),
            event = dialler.select_next_some() => (true, event),
        }
    };
    tokio::time::timeout(CYCLE_TIMEOUT, either)
        .await
        .map_err(|_| format!("handshakes: a cycle took more than {CYCLE_TIMEOUT:?}"))
}
