//! The HTTP endpoint of `--metrics ADDR`: `GET /metrics` answers the
//! OpenMetrics text of a [`NodeMetrics`]; anything else is 404 (400 if it
//! is not an HTTP request line at all).
//!
//! # Design
//! One thread, one connection at a time: a scrape is a few kilobytes built
//! from a snapshot, so a second scraper waits in the kernel's accept
//! backlog for the milliseconds the first takes. Each connection gets one
//! request and one answer (`Connection: close`). Plain `std::net`: the
//! HTTP crates at hand start a thread per connection without a bound and
//! set no read timeout, which is what this server must not do.
//!
//! # Security
//! Provided: a request is read for at most [`REQUEST_TIMEOUT`] in all (not
//! per read: a peer sending a byte at a time is cut at the deadline) and at
//! most [`REQUEST_BYTES_MAX`] bytes; the answer is written with the same
//! timeout; the loop thread and the node never wait for it. Not provided:
//! authentication or TLS; bind it to an address only your scraper reaches.
//!
//! # Limits
//! - Connections served at once: 1; others wait in the kernel backlog.
//! - Request head: [`REQUEST_BYTES_MAX`] bytes, [`REQUEST_TIMEOUT`] to arrive.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::NodeMetrics;

/// The longest request head read (request line and headers); a scrape's is
/// a few hundred bytes.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a connection has to deliver its request head, and then to
/// take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the unread rest of a request is drained after the answer, so
/// that closing does not reset the connection before the answer is read.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(100);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics endpoint. Dropping it stops its thread.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `metrics` on its
    /// own thread.
    pub fn start(addr: SocketAddr, metrics: NodeMetrics) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread_stopping = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("meshsync-metrics".to_owned())
            .spawn(move || serve(&listener, &metrics, &thread_stopping))?;
        Ok(MetricsServer {
            local_addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if the connect fails the thread is
        // already gone (or the port unreachable), and joining tells.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, metrics: &NodeMetrics, stopping: &AtomicBool) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(stream, metrics) {
                    log::debug!("metrics request failed: {error}");
                }
            }
            // Out of descriptors, or a connection reset before accept: the
            // next accept may work; nothing is held meanwhile.
            Err(error) => log::debug!("metrics accept failed: {error}"),
        }
    }
}

/// Reads one request head within the deadline and answers it.
fn answer(mut stream: TcpStream, metrics: &NodeMetrics) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        stream.set_read_timeout(Some(left))?;
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            return Ok(()); // Closed before a whole head: nothing to answer.
        }
        head.extend_from_slice(&buffer[..count]);
        if head.windows(4).any(|window| window == b"\r\n\r\n")
            || head.windows(2).any(|window| window == b"\n\n")
        {
            break;
        }
        if head.len() >= REQUEST_BYTES_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "");
        }
    }
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let line = head
        .split(|byte| *byte == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let is_http = version.is_some_and(|version| version.starts_with("HTTP/1."));
    if !is_http || parts.next().is_some() {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        );
    }
    let path = target.unwrap_or("").split('?').next().unwrap_or("");
    match (method, path) {
        (Some("GET"), "/metrics") => {
            let text = metrics.encode();
            respond(&mut stream, "200 OK", CONTENT_TYPE, &text)
        }
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served\n",
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        response.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    // Closing with unread request bytes would send RST and may discard the
    // answer at the scraper: send FIN, read what is left (bounded), then drop.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DRAIN_TIMEOUT));
    let mut rest = [0u8; 1024];
    let mut drained = 0;
    while drained < REQUEST_BYTES_MAX {
        match stream.read(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(count) => drained += count,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_get_metrics_and_refuses_the_rest() {
        let metrics = NodeMetrics::new();
        metrics.publish(super::super::Snapshot {
            head_slot: 42,
            ..Default::default()
        });
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
        let addr = server.local_addr();

        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.contains("\nmeshsync_head_slot 42\n"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");

        for request in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"POST /metrics HTTP/1.1\r\n\r\n",
            b"GET /metricsx HTTP/1.0\r\n\r\n",
        ] {
            let answer = ask(addr, request);
            assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        }
        let bad = ask(addr, b"hello\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', REQUEST_BYTES_MAX));
        let answer = ask(addr, &huge);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    /// A connection that sends nothing holds the server at most
    /// REQUEST_TIMEOUT; the scrape behind it is answered after it.
    #[test]
    fn a_silent_connection_is_cut_at_the_deadline() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), NodeMetrics::new()).unwrap();
        let addr = server.local_addr();
        let _silent = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let answer = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
