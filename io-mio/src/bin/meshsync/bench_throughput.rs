//! `meshsync bench throughput`: application bytes per second through two
//! real drivers over one loopback TCP connection, against the Noise limit
//! measured in the same run.
//!
//! # What is measured
//! - **Through the drivers**: a listening [`Driver`] serves an application
//!   protocol whose every answer is one chunk of up to [`MESSAGE_BYTES`]
//!   (the largest an application response may be); a dialling driver asks
//!   for `bytes` in such answers, [`REQUESTS_OUTSTANDING_MAX`] at a time,
//!   with `Command::Request`, and checks every byte of every answer. This
//!   benchmark's thread plays both applications: it answers each
//!   `Notification::InboundRequest` with `Command::Respond` on the
//!   server's behalf. On the way: snappy on both ends (the payload is
//!   pseudo-random, so it does not shrink), Noise seal and open, framing,
//!   the sockets, the notification channels, and every copy in between.
//! - **The limit**: a Noise seal and open of the same bytes in messages of
//!   the same sizes, the two ends of a real handshake on one thread.
//!
//! Reported: megabytes (10^6 bytes) of payload per wall-clock second and
//! per CPU-second of the whole process (both drivers, the benchmark's
//! thread), the limit in megabytes per second of one core, and two ratios:
//! wall (the drivers may use two cores where the limit uses one) and CPU
//! (what the machine pays per byte, against the cryptography's own cost).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Select};
use meshsync_core::codec::NoiseFrameDecoder;
use meshsync_core::io::Notification;
use meshsync_core::reqresp::limits::{
    APPLICATION_RESPONSE_BYTES_MAX, GLOBAL_SERVING_QUOTA, REQUESTS_IN_FLIGHT_PER_PEER_MAX,
};
use meshsync_core::reqresp::{Answer, ProtocolId, ProtocolName, Quota};
use meshsync_core::{Command, Config, Identity};
use meshsync_mio::{Driver, RunningDriver};
use rand_core::RngCore;

use crate::bench::{noise_pair, RequestBenchError, SplitMix64};
use crate::cpu_time::{self, Spent, Stopwatch};

/// Payload bytes of one answer: the most one application response may carry.
pub const MESSAGE_BYTES: usize = APPLICATION_RESPONSE_BYTES_MAX;
/// Requests the client keeps asked: its in-flight cap of 4 and as many
/// queued behind them, so the server always has the next one to answer.
pub const REQUESTS_OUTSTANDING_MAX: u64 = 2 * REQUESTS_IN_FLIGHT_PER_PEER_MAX as u64;
/// The most `--bytes` may ask for: every answer draws one token from the
/// server's global serving budget, and past its burst the quota, not the
/// driver, would set the pace.
pub const BYTES_MAX: u64 = GLOBAL_SERVING_QUOTA.tokens_max * MESSAGE_BYTES as u64;
/// The longest the benchmark waits for any notification before giving up.
pub const WAIT_MAX: Duration = Duration::from_secs(15);
/// The application protocol of the transfer.
const PROTOCOL: &str = "bench-bulk";
/// Its per-peer quota: far more than any run asks, so only the global
/// serving budget applies (see [`BYTES_MAX`]).
const QUOTA: Quota = Quota::new(1 << 20, GLOBAL_SERVING_QUOTA.period);
const NETWORK_ID: u64 = 1;

const _: () = assert!(QUOTA.tokens_max >= GLOBAL_SERVING_QUOTA.tokens_max);

/// The figures of one `meshsync bench throughput` run.
#[derive(Clone, Copy, Debug)]
pub struct ThroughputReport {
    /// Payload bytes moved, and put through the limit.
    pub bytes: u64,
    /// Answers they were moved in.
    pub messages: u64,
    /// The transfer through the drivers, from the first request to the last answer checked.
    pub transfer: Spent,
    /// Wall time of the limit (one thread: its CPU time too).
    pub limit_elapsed: Duration,
}

impl ThroughputReport {
    /// Payload megabytes per wall-clock second through the drivers.
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.transfer.wall.as_secs_f64()
    }

    /// Payload megabytes per CPU-second of the whole process.
    pub fn megabytes_per_cpu_second(&self) -> Option<f64> {
        let cpu = self.transfer.cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.bytes as f64 / 1e6 / cpu)
    }

    /// Megabytes per second of a Noise seal and open on one core.
    pub fn limit_megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.limit_elapsed.as_secs_f64()
    }

    /// The report as one JSON object (`meshsync bench throughput --json`).
    pub fn json(&self) -> serde_json::Value {
        let limit = self.limit_megabytes_per_second();
        let per_cpu = self.megabytes_per_cpu_second();
        serde_json::json!({
            "bench": "throughput",
            "bytes": self.bytes,
            "messages": self.messages,
            "message_bytes_max": MESSAGE_BYTES,
            "mb_per_second": self.megabytes_per_second(),
            "mb_per_cpu_second": per_cpu,
            "limit_mb_per_second": limit,
            "ratio_to_limit": self.megabytes_per_second() / limit,
            "cpu_ratio_to_limit": per_cpu.map(|per_cpu| per_cpu / limit),
            "seconds": self.transfer.wall.as_secs_f64(),
            "cpu_seconds": self.transfer.cpu.map(|cpu| cpu.as_secs_f64()),
            "limit_seconds": self.limit_elapsed.as_secs_f64(),
            "cpu_resolution_seconds": cpu_time::RESOLUTION.as_secs_f64(),
        })
    }
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = self.megabytes_per_second();
        let limit = self.limit_megabytes_per_second();
        writeln!(
            f,
            "throughput ({} bytes in {} answers of up to {MESSAGE_BYTES} B, one connection):",
            self.bytes, self.messages
        )?;
        writeln!(f, "  (a) two drivers, loopback TCP:   {wall:>8.1} MB/s")?;
        match self.megabytes_per_cpu_second() {
            Some(per_cpu) => writeln!(
                f,
                "      per CPU-second (process):    {per_cpu:>8.1} MB  ratio to (b): {:.2}",
                per_cpu / limit
            )?,
            None => writeln!(f, "      per CPU-second (process):    unknown")?,
        }
        writeln!(
            f,
            "  (b) limit, Noise seal + open, one core: {limit:>8.1} MB/s"
        )?;
        write!(
            f,
            "  ratio (a)/(b): {:.2} (wall; (a) may use two cores)",
            wall / limit
        )
    }
}

/// Moves `bytes` through two drivers, then through the limit.
pub fn throughput(bytes: u64) -> Result<ThroughputReport, String> {
    if bytes == 0 || bytes > BYTES_MAX {
        return Err(format!("--bytes must be from 1 to {BYTES_MAX}"));
    }
    let mut payload = vec![0; MESSAGE_BYTES];
    SplitMix64(300).fill_bytes(&mut payload);
    let messages = bytes.div_ceil(MESSAGE_BYTES as u64);
    let lengths = move |index: u64| {
        let rest = bytes - index * MESSAGE_BYTES as u64;
        rest.min(MESSAGE_BYTES as u64) as usize
    };
    let transfer = transfer(&payload, messages, lengths).map_err(|error| error.to_string())?;
    let limit_elapsed = limit(&payload, messages, lengths)?;
    Ok(ThroughputReport {
        bytes,
        messages,
        transfer,
        limit_elapsed,
    })
}

/// A listening and a dialling driver, connected; the client's answers
/// come back as requests of `payload[..length]`.
fn transfer(payload: &[u8], messages: u64, lengths: impl Fn(u64) -> usize) -> io::Result<Spent> {
    let broken = |what: &str| io::Error::other(format!("throughput benchmark: {what}"));
    let protocol = ProtocolName::new(PROTOCOL).expect("the constant is a valid protocol name");
    let register = Command::RegisterProtocol {
        name: protocol,
        quota: QUOTA,
    };
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let start = |seed: u64, name: &str| -> io::Result<(RunningDriver, Receiver<Notification>)> {
        let mut driver = Driver::bind(
            loopback,
            Config::new(NETWORK_ID),
            Identity::from_seed(seed),
            [seed as u8; 32],
        )?;
        let events = driver.subscribe();
        let driver = driver.spawn(name)?;
        // Commands run in order, so the protocol is served before anything
        // this driver does after.
        driver
            .handle()
            .command(register.clone())
            .map_err(|_| broken("a driver stopped"))?;
        Ok((driver, events))
    };
    let (server, server_events) = start(110, "bench-server")?;
    let (client, client_events) = start(111, "bench-client")?;
    let server_id = server.peer_id();
    let command = |driver: &RunningDriver, command: Command| {
        driver
            .handle()
            .command(command)
            .map_err(|_| broken("a driver stopped"))
    };
    command(
        &client,
        Command::Dial {
            addr: server.local_addr(),
            peer: Some(server_id),
        },
    )?;
    let mut connected = [false; 2];
    while connected != [true; 2] {
        let (from_server, notification) = next(&server_events, &client_events)?;
        match notification {
            Notification::PeerConnected { .. } => connected[usize::from(!from_server)] = true,
            Notification::DialFailed { error, .. } => {
                return Err(broken(&format!("dial failed: {error:?}")))
            }
            _ => {}
        }
    }

    let request = |index: u64| Command::Request {
        peer: server_id,
        protocol: ProtocolId::Application(protocol),
        body: (lengths(index) as u64).to_be_bytes().to_vec(),
        tag: index,
    };
    let stopwatch = Stopwatch::start();
    let (mut asked, mut answered) = (0u64, 0u64);
    while asked < messages.min(REQUESTS_OUTSTANDING_MAX) {
        command(&client, request(asked))?;
        asked += 1;
    }
    while answered < messages {
        let (from_server, notification) = next(&server_events, &client_events)?;
        match notification {
            Notification::InboundRequest { peer, id, body, .. } if from_server => {
                let length = <[u8; 8]>::try_from(body.as_slice())
                    .map(u64::from_be_bytes)
                    .ok()
                    .filter(|&length| length <= MESSAGE_BYTES as u64)
                    .ok_or_else(|| broken("a request that this benchmark did not send"))?;
                let answer = Answer::Chunks(vec![payload[..length as usize].to_vec()]);
                command(&server, Command::Respond { peer, id, answer })?;
            }
            Notification::Response { tag, chunks, .. } if !from_server => {
                let intact =
                    tag < messages && chunks.len() == 1 && chunks[0] == payload[..lengths(tag)];
                if !intact {
                    return Err(broken(&format!("answer {tag} is not what was sent")));
                }
                answered += 1;
                if asked < messages {
                    command(&client, request(asked))?;
                    asked += 1;
                }
            }
            Notification::RequestFailed { tag, error, .. } => {
                return Err(broken(&format!("request {tag} failed: {error:?}")))
            }
            Notification::PeerDisconnected { reason, .. } => {
                return Err(broken(&format!("disconnected: {reason}")))
            }
            _ => {}
        }
    }
    let spent = stopwatch.stop();
    client.stop()?;
    server.stop()?;
    Ok(spent)
}

/// The next notification of either driver: (whether the server's, it).
fn next(
    server: &Receiver<Notification>,
    client: &Receiver<Notification>,
) -> io::Result<(bool, Notification)> {
    let mut select = Select::new();
    select.recv(server);
    select.recv(client);
    let operation = select
        .select_timeout(WAIT_MAX)
        .map_err(|_| io::Error::other(format!("throughput benchmark: nothing for {WAIT_MAX:?}")))?;
    let from_server = operation.index() == 0;
    let notification = operation
        .recv(if from_server { server } else { client })
        .map_err(|_| io::Error::other("throughput benchmark: a driver stopped"))?;
    Ok((from_server, notification))
}

/// Wall time of sealing and opening the same messages on this one thread.
fn limit(
    payload: &[u8],
    messages: u64,
    lengths: impl Fn(u64) -> usize,
) -> Result<Duration, String> {
    let (mut sender, mut receiver) = noise_pair().map_err(|error| error.to_string())?;
    let mut frames = NoiseFrameDecoder::new();
    frames.enter_transport_mode();
    let mut wire = Vec::new();
    let mut opened = Vec::new();
    let start = StdInstant::now();
    for index in 0..messages {
        wire.clear();
        sender.seal(&payload[..lengths(index)], &mut wire);
        opened.clear();
        frames
            .decode(&wire, |noise| -> Result<(), RequestBenchError> {
                receiver.open(noise, &mut opened)?;
                Ok(())
            })
            .map_err(|error| format!("limit: {error}"))?;
    }
    let elapsed = start.elapsed();
    // Outside the timing: comparing is not the cryptography's cost.
    if opened.as_slice() != &payload[..lengths(messages - 1)] {
        return Err("limit: the bytes changed on the way".to_string());
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three answers, the last one short: every byte arrives intact through
    /// the drivers and the limit, and the figures are reported.
    #[test]
    fn a_small_transfer_arrives_whole_and_is_reported() {
        let bytes = 2 * MESSAGE_BYTES as u64 + 1000;
        let report = throughput(bytes).expect("the benchmark runs");
        assert_eq!((report.bytes, report.messages), (bytes, 3));
        assert!(report.megabytes_per_second() > 0.0);
        assert!(report.limit_megabytes_per_second() > 0.0);
        let text = report.to_string();
        assert!(text.contains("MB/s") && text.contains("ratio"), "{text}");
        assert!(throughput(0).is_err() && throughput(BYTES_MAX + 1).is_err());
    }
}
