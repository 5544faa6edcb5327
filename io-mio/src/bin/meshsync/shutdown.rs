//! What SIGINT and SIGTERM do to the process, beside the graceful shutdown
//! the driver (or the devnet) starts on the first one: a second signal
//! exits at once, with status 128 + its number, and a shutdown still
//! running [`SHUTDOWN_EXIT_DEADLINE`] after the first signal is cut short
//! with status 1 and an ERROR line.
//!
//! # Design
//! The second signal is handled inside the signal handler
//! (`signal_hook::flag::register_conditional_shutdown`), so it works even
//! while the poll loop is stuck in a slow disk write. The deadline is a
//! thread that waits for the first signal and then for the deadline.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

/// How long a graceful shutdown may take in all, from the first signal:
/// the driver's flush ([`meshsync_mio::driver::SHUTDOWN_FLUSH_TIMEOUT`])
/// and the last store commits fit well inside it.
pub const SHUTDOWN_EXIT_DEADLINE: Duration = Duration::from_secs(4);

const _: () = assert!(
    meshsync_mio::driver::SHUTDOWN_FLUSH_TIMEOUT.as_millis() < SHUTDOWN_EXIT_DEADLINE.as_millis()
);

/// Arms the second-signal exit and the shutdown deadline. Call it before
/// the driver's own signal handling, once per process.
pub fn watch_signals() -> io::Result<()> {
    let signalled = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left
        // it: false at the first signal, true from the second on.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&signalled),
        )?;
        signal_hook::flag::register(signal, Arc::clone(&signalled))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("meshsync-shutdown-deadline".to_owned())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Not a synchronisation: the deadline itself.
                std::thread::sleep(SHUTDOWN_EXIT_DEADLINE);
                log::error!(
                    "shutdown still running {} s after signal {signal}: exiting without it",
                    SHUTDOWN_EXIT_DEADLINE.as_secs()
                );
                std::process::exit(1);
            }
        })?;
    Ok(())
}
