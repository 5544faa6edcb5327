//! What a measurement costs the machine: the CPU time of this whole process
//! (every thread, those that have exited included, user and system), read
//! with `getrusage(RUSAGE_SELF)`, the clock meshsync's benchmarks read
//! through `/proc/self/stat`; and the CPU other processes used meanwhile,
//! since the machine may be shared.
//!
//! # Limits
//! `getrusage` reports microseconds, but Linux accounts CPU time at the
//! scheduler's tick, so a difference of two readings is good to a few
//! milliseconds: measure a second of CPU or more for a figure to the percent.
//! Only on Linux: elsewhere the readings are `None` and the figures `null`.

use std::time::{Duration, Instant};

/// The resolution reported beside the figures: what `getrusage` counts in.
/// The kernel's accounting is coarser (see the module's limits).
pub const RESOLUTION: Duration = Duration::from_micros(1);

/// Clock ticks per second in `/proc/stat`: `USER_HZ`, 100 on every
/// architecture Linux runs this on (part of the user-space ABI).
const PROC_STAT_TICKS_PER_SECOND: u64 = 100;

fn resource_usage() -> Option<libc::rusage> {
    // SAFETY: `rusage` is plain data, for which all-zero bytes are a valid
    // value, and `getrusage` only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (result == 0).then_some(usage)
}

/// User plus system CPU time of the whole process so far.
pub fn process() -> Option<Duration> {
    let usage = resource_usage()?;
    let duration = |time: libc::timeval| {
        Duration::from_secs(u64::try_from(time.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(time.tv_usec).ok()?))
    };
    duration(usage.ru_utime)?.checked_add(duration(usage.ru_stime)?)
}

/// Peak resident memory of the process so far, MiB (`ru_maxrss` is KiB on Linux).
pub fn rss_peak_mib() -> Option<f64> {
    Some(resource_usage()?.ru_maxrss as f64 / 1024.0)
}

/// The machine's busy CPU time so far, every process and core (user, nice,
/// system, irq, softirq, steal), from the first line of `/proc/stat`.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let busy_ticks: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&index| fields.get(index).copied().unwrap_or(0))
        .sum();
    Some(Duration::from_millis(
        busy_ticks.checked_mul(1_000 / PROC_STAT_TICKS_PER_SECOND)?,
    ))
}

/// What one measurement took.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    /// Wall-clock time from start to stop.
    pub wall: Duration,
    /// CPU time of this process from start to stop.
    pub cpu: Option<Duration>,
    /// CPU time of every other process from start to stop: the machine's
    /// busy time less ours.
    pub other_cpu: Option<Duration>,
}

impl Spent {
    /// Cores this process kept busy on average.
    pub fn cpu_cores(&self) -> Option<f64> {
        Some(self.cpu?.as_secs_f64() / self.wall.as_secs_f64())
    }

    /// Cores other processes kept busy on average.
    pub fn other_cpu_cores(&self) -> Option<f64> {
        Some(self.other_cpu?.as_secs_f64() / self.wall.as_secs_f64())
    }
}

/// Reads the clocks at the start of a measurement.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Option<Duration>,
    machine: Option<Duration>,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            machine: machine_busy(),
            cpu: process(),
            wall: Instant::now(),
        }
    }

    /// What has been spent since [`Stopwatch::start`].
    pub fn stop(&self) -> Spent {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, process()) {
            (Some(start), Some(stop)) => stop.checked_sub(start),
            _ => None,
        };
        let other_cpu = match (self.machine, machine_busy(), cpu) {
            (Some(start), Some(stop), Some(ours)) => {
                Some(stop.saturating_sub(start).saturating_sub(ours))
            }
            _ => None,
        };
        Spent {
            wall,
            cpu,
            other_cpu,
        }
    }
}
