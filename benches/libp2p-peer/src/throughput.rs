//! `libp2p-peer throughput`: application bytes per CPU-second through two
//! rust-libp2p swarms over one loopback TCP connection, the workload of
//! `meshsync bench throughput`.
//!
//! # What runs
//! Two swarms in this process, each with libp2p's request-response
//! behaviour on one protocol. The client asks for `--bytes` in answers of
//! [`MESSAGE_BYTES`] (the most a meshsync application response carries),
//! keeping [`REQUESTS_OUTSTANDING_MAX`] requests asked, as meshsync's
//! client does; this benchmark's task plays both applications: it answers
//! each inbound request with a copy of the asked-for part of one
//! pseudo-random payload, and checks every byte of every answer.
//!
//! Each request is a yamux stream of its own, opened with a
//! multistream-select round, as request-response does. The codec frames an
//! answer as its length (u32, big-endian) and its bytes, which with
//! `--compression snappy` (the default) are a raw snappy block, because
//! meshsync compresses every answer with snappy and an application on
//! libp2p that wants the same wire has to do it in its codec. The payload
//! is pseudo-random, so snappy does not shrink it, on either side.
//!
//! # What is measured
//! From the first request to the last answer checked: payload megabytes
//! (10^6 bytes) per wall-clock second, and per CPU-second of the whole
//! process (both swarms, their connection tasks, this task), the figure
//! meshsync's `mb_per_cpu_second` is compared with.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm};

use crate::cpu::{self, Spent, Stopwatch};
use crate::flags::Flags;
use crate::stack::{self, Compression, SplitMix64};

/// Payload bytes of one answer: meshsync's `APPLICATION_RESPONSE_BYTES_MAX`.
pub const MESSAGE_BYTES: usize = 1 << 20;
/// Requests the client keeps asked: meshsync's in-flight cap of 4 per peer
/// and as many queued behind them, so the server always has the next one.
pub const REQUESTS_OUTSTANDING_MAX: u64 = 8;
/// The most `--bytes` may ask for: meshsync's own bound (its server's
/// serving budget of 4096 answers), so both run the same range.
pub const BYTES_MAX: u64 = 4_096 * MESSAGE_BYTES as u64;
/// The default of `--bytes`: 1 GiB, as meshsync's.
const BYTES_DEFAULT: u64 = 1 << 30;
/// The longest the benchmark waits for any event before giving up.
const WAIT_MAX: Duration = Duration::from_secs(15);
/// Longer than any answer takes: the wait above gives up first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshsync-bench/bulk/1");
/// Seeds the payload (meshsync's benchmark seeds its own with the same).
const PAYLOAD_SEED: u64 = 300;
/// Seeds the identities: distinct from every other benchmark's.
const SERVER_SEED: u64 = 110;
const CLIENT_SEED: u64 = 111;

const _: () = assert!(BYTES_DEFAULT <= BYTES_MAX);

/// Requests are the length asked for (u64, big-endian); answers are a
/// length-prefixed body, snappy-compressed or not.
#[derive(Clone)]
struct BulkCodec {
    compression: Compression,
}

impl BulkCodec {
    /// The most an answer's body may take on the wire: more is a broken peer.
    fn wire_bytes_max(&self) -> usize {
        match self.compression {
            Compression::Snappy => snap::raw::max_compress_len(MESSAGE_BYTES),
            Compression::None => MESSAGE_BYTES,
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl request_response::Codec for BulkCodec {
    type Protocol = StreamProtocol;
    type Request = u64;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<u64>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut length = [0u8; 8];
        io.read_exact(&mut length).await?;
        Ok(u64::from_be_bytes(length))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut length = [0u8; 4];
        io.read_exact(&mut length).await?;
        let wire_bytes = u32::from_be_bytes(length) as usize;
        if wire_bytes > self.wire_bytes_max() {
            return Err(invalid("an answer longer than any this benchmark sends"));
        }
        let mut wire = vec![0u8; wire_bytes];
        io.read_exact(&mut wire).await?;
        match self.compression {
            Compression::None => Ok(wire),
            Compression::Snappy => {
                // The declared length is checked before anything is allocated for it.
                let declared = snap::raw::decompress_len(&wire).map_err(|_| invalid("snappy"))?;
                if declared > MESSAGE_BYTES {
                    return Err(invalid("an answer that would decompress too long"));
                }
                snap::raw::Decoder::new()
                    .decompress_vec(&wire)
                    .map_err(|_| invalid("snappy"))
            }
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        length: u64,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&length.to_be_bytes()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        answer: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let wire = match self.compression {
            Compression::None => answer,
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(&answer)
                .map_err(|_| invalid("snappy"))?,
        };
        // At most `wire_bytes_max`, far below u32::MAX.
        io.write_all(&(wire.len() as u32).to_be_bytes()).await?;
        io.write_all(&wire).await
    }
}

type Bulk = request_response::Behaviour<BulkCodec>;
type BulkEvent = SwarmEvent<request_response::Event<u64, Vec<u8>>>;

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    bytes: u64,
    compression: Compression,
}

impl Options {
    /// Takes `--bytes` and `--compression`.
    pub fn take(flags: &mut Flags) -> Result<Options, String> {
        Ok(Options {
            bytes: flags.take("bytes", BYTES_DEFAULT, 1..=BYTES_MAX)?,
            compression: Compression::take(flags)?,
        })
    }
}

/// Runs the benchmark.
pub async fn run(options: Options) -> Result<serde_json::Value, String> {
    let Options { bytes, compression } = options;
    let mut payload = vec![0u8; MESSAGE_BYTES];
    SplitMix64(PAYLOAD_SEED).fill_bytes(&mut payload);
    let messages = bytes.div_ceil(MESSAGE_BYTES as u64);
    let transfer = transfer(&payload, bytes, compression).await?;

    let megabytes = bytes as f64 / 1e6;
    let cpu_seconds = transfer.cpu.map(|cpu| cpu.as_secs_f64());
    Ok(serde_json::json!({
        "bench": "throughput",
        "bytes": bytes,
        "messages": messages,
        "message_bytes_max": MESSAGE_BYTES,
        "compression": compression.name(),
        "mb_per_second": megabytes / transfer.wall.as_secs_f64(),
        "mb_per_cpu_second": cpu_seconds.filter(|&cpu| cpu > 0.0).map(|cpu| megabytes / cpu),
        "seconds": transfer.wall.as_secs_f64(),
        "cpu_seconds": cpu_seconds,
        "cpu_cores": transfer.cpu_cores(),
        "other_cpu_cores": transfer.other_cpu_cores(),
        "rss_peak_mib": cpu::rss_peak_mib(),
        "cpu_resolution_seconds": cpu::RESOLUTION.as_secs_f64(),
    }))
}

fn bulk_swarm(seed: u64, compression: Compression) -> Swarm<Bulk> {
    let behaviour = request_response::Behaviour::with_codec(
        BulkCodec { compression },
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    stack::swarm(stack::identity(seed), behaviour)
}

/// The next event of either swarm: (whether the server's, it).
async fn next(
    server: &mut Swarm<Bulk>,
    client: &mut Swarm<Bulk>,
) -> Result<(bool, BulkEvent), String> {
    let either = async {
        tokio::select! {
            event = server.select_next_some() => (true, event),
            event = client.select_next_some() => (false, event),
        }
    };
    tokio::time::timeout(WAIT_MAX, either)
        .await
        .map_err(|_| format!("throughput: nothing happened for {WAIT_MAX:?}"))
}

/// Connects the two swarms, then moves `bytes` in answers; returns what
/// the moving took.
async fn transfer(payload: &[u8], bytes: u64, compression: Compression) -> Result<Spent, String> {
    let mut server = bulk_swarm(SERVER_SEED, compression);
    let mut client = bulk_swarm(CLIENT_SEED, compression);
    let server_id = *server.local_peer_id();
    let address = stack::listen(&mut server).await?;
    client
        .dial(address)
        .map_err(|error| format!("throughput: dial: {error}"))?;
    let mut connected = [false; 2];
    while connected != [true; 2] {
        match next(&mut server, &mut client).await? {
            (from_server, SwarmEvent::ConnectionEstablished { .. }) => {
                connected[usize::from(!from_server)] = true
            }
            (_, SwarmEvent::OutgoingConnectionError { error, .. }) => {
                return Err(format!("throughput: dial: {error}"))
            }
            _ => {}
        }
    }

    let messages = bytes.div_ceil(MESSAGE_BYTES as u64);
    // The last answer may be short.
    let length = |index: u64| (bytes - index * MESSAGE_BYTES as u64).min(MESSAGE_BYTES as u64);
    let mut asked: HashMap<OutboundRequestId, u64> = HashMap::new();
    let (mut next_index, mut answered) = (0u64, 0u64);
    let stopwatch = Stopwatch::start();
    while next_index < messages.min(REQUESTS_OUTSTANDING_MAX) {
        let id = client
            .behaviour_mut()
            .send_request(&server_id, length(next_index));
        asked.insert(id, next_index);
        next_index += 1;
    }
    while answered < messages {
        let (from_server, event) = next(&mut server, &mut client).await?;
        let SwarmEvent::Behaviour(event) = event else {
            if let SwarmEvent::ConnectionClosed { cause, .. } = event {
                return Err(format!("throughput: the connection closed: {cause:?}"));
            }
            continue;
        };
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } if from_server => {
                if request > MESSAGE_BYTES as u64 {
                    return Err("throughput: a request this benchmark did not send".to_owned());
                }
                let answer = payload[..request as usize].to_vec();
                server
                    .behaviour_mut()
                    .send_response(channel, answer)
                    .map_err(|_| "throughput: the request's stream closed before the answer")?;
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } if !from_server => {
                let index = asked
                    .remove(&request_id)
                    .ok_or("throughput: an answer to no request")?;
                if response != payload[..length(index) as usize] {
                    return Err(format!("throughput: answer {index} is not what was sent"));
                }
                answered += 1;
                if next_index < messages {
                    let id = client
                        .behaviour_mut()
                        .send_request(&server_id, length(next_index));
                    asked.insert(id, next_index);
                    next_index += 1;
                }
            }
            request_response::Event::OutboundFailure { error, .. } => {
                return Err(format!("throughput: a request failed: {error}"))
            }
            request_response::Event::InboundFailure { error, .. } => {
                return Err(format!("throughput: serving a request failed: {error}"))
            }
            _ => {}
        }
    }
    Ok(stopwatch.stop())
}
