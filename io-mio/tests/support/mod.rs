//! What the test binaries that read the log share: a logger that keeps
//! every line, so tests can read what the operator reads, and a wait on a
//! running driver's state with a deadline (never a sleep).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant as StdInstant};

use meshsync_mio::driver::{Driver, RunningDriver};

/// The longest any test waits for a condition (never reached when it passes).
pub const DEADLINE: Duration = Duration::from_secs(40);
/// How long one query of a running driver may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            eprintln!("{} {line}", record.level());
            self.0.lock().unwrap().push((record.level(), line));
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per test binary).
pub fn capture() {
    captured();
}

fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
        capture
    })
}

/// Whether a line at `level` containing every one of `parts` was logged.
pub fn logged(level: log::Level, parts: &[&str]) -> bool {
    captured()
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(at, line)| *at == level && parts.iter().all(|part| line.contains(part)))
}

/// Lines logged (at any level) containing `part`.
#[allow(dead_code)] // Not every binary that shares this counts lines.
pub fn logged_count(part: &str) -> usize {
    captured()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, line)| line.contains(part))
        .count()
}

/// Queries `driver` until `done` holds of the answer or [`DEADLINE`] passes.
pub fn wait_for<R: Send + 'static>(
    driver: &RunningDriver,
    query: impl Fn(&Driver) -> R + Send + Clone + 'static,
    done: impl Fn(&R) -> bool,
) -> R {
    let deadline = StdInstant::now() + DEADLINE;
    loop {
        let answer = driver.handle().query(query.clone(), QUERY_TIMEOUT).unwrap();
        if done(&answer) || StdInstant::now() >= deadline {
            return answer;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}
