//! The CPU time this process has used, all its threads together (live and
//! exited, user and system): what a benchmark divides by its count to say
//! what one operation costs the machine, whichever thread did the work.
//!
//! # Design
//! Read from `/proc/self/stat` (fields 14 and 15, `utime` and `stime`),
//! which is what `getrusage(RUSAGE_SELF)` reports, without `unsafe`: the
//! crate forbids it, and `std` has no process clock. The price is the
//! resolution: the kernel reports both fields in clock ticks.
//!
//! # Limits
//! [`RESOLUTION`] per reading, so a difference of two readings is good to
//! about twice that: measure long enough (a second of CPU or more) for a
//! figure to the percent. Only on Linux; elsewhere [`process`] is `None`.

use std::time::Duration;

/// Clock ticks per second in `/proc`: the kernel's `USER_HZ`, which is 100
/// on every architecture Linux builds this binary for (it is part of the
/// user-space ABI, apart from the kernel's own `HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// The granularity of one reading.
pub const RESOLUTION: Duration = Duration::from_millis(1_000 / TICKS_PER_SECOND);

/// User plus system CPU time of the whole process so far, or `None` where
/// `/proc/self/stat` cannot be read or parsed.
pub fn process() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// `utime + stime` from the text of a `/proc/PID/stat` file.
fn parse_stat(stat: &str) -> Option<Duration> {
    // Field 2, the command name, is in parentheses and may itself hold
    // spaces and parentheses: the fields that follow start after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Field 3 (state) is the first after the name; utime is field 14.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(
        ticks.checked_mul(RESOLUTION.as_millis() as u64)?,
    ))
}

/// Wall time and process CPU time of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    /// Wall-clock time from start to stop.
    pub wall: Duration,
    /// CPU time of the whole process from start to stop, `None` where it
    /// cannot be read.
    pub cpu: Option<Duration>,
}

/// Takes both clocks at the start of a measurement.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: std::time::Instant,
    cpu: Option<Duration>,
}

impl Stopwatch {
    /// Reads both clocks now.
    pub fn start() -> Stopwatch {
        Stopwatch {
            cpu: process(),
            wall: std::time::Instant::now(),
        }
    }

    /// What has been spent since [`Stopwatch::start`].
    pub fn stop(&self) -> Spent {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, process()) {
            (Some(start), Some(stop)) => stop.checked_sub(start),
            _ => None,
        };
        Spent { wall, cpu }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 17 0 0 20 0 3 0 1000 1000 100 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(2_670)));
        assert_eq!(parse_stat("4242 (short) R 1 2"), None);
        assert_eq!(parse_stat("no name at all"), None);
    }

    #[test]
    fn work_on_a_thread_that_has_exited_counts() {
        let before = process().expect("this test runs on Linux");
        let enough = before + 3 * RESOLUTION;
        // Spin on another thread until the reading shows the work, within a
        // bound so that a reading that never moves fails instead of hanging.
        let spinner = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while process().expect("readable") < enough {
                assert!(std::time::Instant::now() < deadline, "CPU time never moved");
            }
        });
        spinner
            .join()
            .expect("the spinning thread did not time out");
        assert!(process().expect("readable") >= enough);
    }
}
