//! Seed campaigns: one scenario over a range of seeds, each run on its own
//! and judged, with a summary a batch scheduler's shards can be merged from.
//!
//! # Design
//! A campaign is [`crate::run`] once per seed of a [`SeedRange`], the
//! runs spread over `jobs` worker threads. Each run is still one thread and
//! deterministic: a worker takes the next seed, builds its own world and
//! drops it, so the seed alone replays the run, whatever the jobs or the
//! order. A run fails on an invariant violation, a broken bound of its
//! scenario ([`crate::Scenario::bounds_broken`]) or a panic, caught per run
//! with its message and location; its [`SeedOutcome`] carries the
//! `meshsync-sim run` command that replays it.
//!
//! What is deterministic and slow to build is shared: every run's
//! configuration is a clone of the campaign's [`RunConfig`], so all runs
//! (on every worker) take their pre-signed chains from its one
//! [`crate::ChainCache`], and each chain is signed once per campaign rather
//! than once per seed. A chain depends on no seed, so the runs are what
//! they would be on their own (a test compares their trace hashes).
//!
//! A [`Shard`] `I/N` runs only the seeds whose index in the range is `I`
//! modulo `N`, so `N` jobs of a scheduler cover the range between them;
//! [`CampaignSummary::merge`] joins their summaries into the one the whole
//! range would have given (wall-clock figures apart).
//!
//! # Limits
//! A campaign holds at most [`CAMPAIGN_SEEDS_MAX`] seeds and
//! [`CAMPAIGN_JOBS_MAX`] workers; each failure's detail is cut at
//! [`FAILURE_DETAIL_BYTES_MAX`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Once};
use std::time::Instant as WallInstant;

use crate::scenario::{self, scenario_by_name, RunConfig, UnknownScenario};

/// Seeds one campaign runs, at most: its outcomes are kept in memory.
pub const CAMPAIGN_SEEDS_MAX: u64 = 1_000_000;
/// Worker threads, at most.
pub const CAMPAIGN_JOBS_MAX: usize = 256;
/// Bytes of one failure's detail kept (a panic message, a broken bound).
pub const FAILURE_DETAIL_BYTES_MAX: usize = 2_000;
/// Stack of each worker: as large as a main thread's, so a run that
/// passes under `meshsync-sim run` does not overflow in a campaign.
const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;
/// The binary a replay command names.
const BINARY: &str = "meshsync-sim";

/// Seeds `first..last`, both included (`1..40` is forty seeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedRange {
    /// The first seed.
    pub first: u64,
    /// The last seed, included.
    pub last: u64,
}

impl SeedRange {
    /// Seeds in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never: a range holds its first seed.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for SeedRange {
    type Err = String;

    fn from_str(text: &str) -> Result<SeedRange, String> {
        let error =
            || format!("invalid seed range `{text}`: expected A..B (both included), e.g. 1..40");
        let (first, last) = text.split_once("..").ok_or_else(error)?;
        let first: u64 = first.parse().map_err(|_| error())?;
        let last: u64 = last.parse().map_err(|_| error())?;
        if last < first {
            return Err(format!("seed range `{text}` ends before it starts"));
        }
        let range = SeedRange { first, last };
        if range.len() > CAMPAIGN_SEEDS_MAX {
            return Err(format!(
                "seed range `{text}` holds more than {CAMPAIGN_SEEDS_MAX} seeds"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

/// The part `index` of `count` of a campaign: the seeds whose index in the
/// range (seed minus the first seed) is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This part, below `count`.
    pub index: u64,
    /// Parts in all, at least one.
    pub count: u64,
}

impl Shard {
    /// The whole campaign: `0/1`.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The seeds of `range` in this shard, in order.
    pub fn seeds(&self, range: SeedRange) -> Vec<u64> {
        (range.first..=range.last)
            .filter(|seed| (seed - range.first) % self.count == self.index)
            .collect()
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let error = || format!("invalid shard `{text}`: expected I/N with I < N, e.g. 0/4");
        let (index, count) = text.split_once('/').ok_or_else(error)?;
        let index: u64 = index.parse().map_err(|_| error())?;
        let count: u64 = count.parse().map_err(|_| error())?;
        if index >= count {
            return Err(error());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a run failed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The simulator saw an invariant violated.
    Invariant,
    /// The scenario's outcome broke one of its bounds.
    Bound,
    /// The run panicked.
    Panic,
}

impl FailureKind {
    fn name(self) -> &'static str {
        match self {
            FailureKind::Invariant => "invariant",
            FailureKind::Bound => "bound",
            FailureKind::Panic => "panic",
        }
    }
}

/// One reason a run failed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The violation, the broken bound or the panic message, in one sentence.
    pub detail: String,
}

/// What one seed's run gave.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// No failure.
    pub passed: bool,
    /// Why it failed (empty if it passed).
    pub failures: Vec<Failure>,
    /// Events the run processed (0 if it panicked).
    pub events: u64,
    /// Its wall-clock time.
    pub wall_seconds: f64,
    /// Its trace hash (none if it panicked).
    pub trace_hash: Option<String>,
    /// The scenario's outcome (none if it panicked).
    pub outcome: Option<serde_json::Value>,
    /// The command that replays it.
    pub replay: String,
}

/// What a campaign runs.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// Every run's configuration but its seed.
    pub run: RunConfig,
    /// The seeds.
    pub seeds: SeedRange,
    /// The part of them this process runs.
    pub shard: Shard,
    /// Worker threads.
    pub jobs: usize,
    /// The `meshsync-sim run` flags that give `run` (scenario and seed
    /// apart), for the replay commands.
    pub flags: Vec<String>,
}

/// A campaign's result, as `--json` writes it and `campaign merge` reads it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CampaignSummary {
    /// The scenario.
    pub scenario: String,
    /// The whole range of seeds.
    pub seeds: SeedRange,
    /// The `meshsync-sim run` flags every run had, besides scenario and seed.
    pub flags: Vec<String>,
    /// Shards of the range (1: unsharded).
    pub shard_count: u64,
    /// The shards this summary holds.
    pub shards: Vec<u64>,
    /// Whether it holds every shard: the whole range.
    pub complete: bool,
    /// Runs.
    pub runs: u64,
    /// Runs that passed.
    pub passed: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Failed runs by kind of failure (a run can have several kinds).
    pub failures_by_kind: BTreeMap<FailureKind, u64>,
    /// The failing seeds, in order.
    pub failing_seeds: Vec<u64>,
    /// Events over all runs.
    pub events: u64,
    /// Wall-clock seconds of all runs, added up (CPU time, near enough).
    pub run_wall_seconds: f64,
    /// `events / run_wall_seconds`: one worker's speed.
    pub events_per_second: f64,
    /// Median wall-clock seconds of one run.
    pub run_wall_seconds_median: f64,
    /// Longest run, in wall-clock seconds.
    pub run_wall_seconds_max: f64,
    /// Wall-clock seconds of the campaign (added up over merged shards).
    pub wall_seconds: f64,
    /// Every run, by seed.
    pub outcomes: Vec<SeedOutcome>,
}

/// Why shard summaries do not merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeError(pub String);

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MergeError {}

impl CampaignSummary {
    /// The summary of `outcomes` (any order) of a campaign over `seeds`.
    fn of(
        scenario: &str,
        seeds: SeedRange,
        flags: Vec<String>,
        shard_count: u64,
        shards: Vec<u64>,
        mut outcomes: Vec<SeedOutcome>,
        wall_seconds: f64,
    ) -> CampaignSummary {
        outcomes.sort_by_key(|outcome| outcome.seed);
        let mut failures_by_kind = BTreeMap::new();
        for outcome in &outcomes {
            let kinds: BTreeSet<FailureKind> = outcome.failures.iter().map(|f| f.kind).collect();
            for kind in kinds {
                *failures_by_kind.entry(kind).or_insert(0) += 1;
            }
        }
        let failing_seeds: Vec<u64> = outcomes
            .iter()
            .filter(|outcome| !outcome.passed)
            .map(|outcome| outcome.seed)
            .collect();
        let events = outcomes.iter().map(|outcome| outcome.events).sum();
        let mut walls: Vec<f64> = outcomes.iter().map(|o| o.wall_seconds).collect();
        walls.sort_by(f64::total_cmp);
        let run_wall_seconds: f64 = walls.iter().sum();
        let runs = outcomes.len() as u64;
        let failed = failing_seeds.len() as u64;
        CampaignSummary {
            scenario: scenario.to_owned(),
            seeds,
            flags,
            shard_count,
            complete: shards.len() as u64 == shard_count,
            shards,
            runs,
            passed: runs - failed,
            failed,
            failures_by_kind,
            failing_seeds,
            events,
            run_wall_seconds,
            events_per_second: if run_wall_seconds > 0.0 {
                events as f64 / run_wall_seconds
            } else {
                0.0
            },
            run_wall_seconds_median: walls.get(walls.len() / 2).copied().unwrap_or(0.0),
            run_wall_seconds_max: walls.last().copied().unwrap_or(0.0),
            wall_seconds,
            outcomes,
        }
    }

    /// Joins the summaries of shards of one campaign (same scenario, seeds,
    /// flags and shard count; no shard twice) into one.
    pub fn merge(parts: Vec<CampaignSummary>) -> Result<CampaignSummary, MergeError> {
        let Some(first) = parts.first() else {
            return Err(MergeError("nothing to merge".to_owned()));
        };
        let (scenario, seeds, flags, shard_count) = (
            first.scenario.clone(),
            first.seeds,
            first.flags.clone(),
            first.shard_count,
        );
        let mut shards = BTreeSet::new();
        let mut outcomes = Vec::new();
        let mut wall_seconds = 0.0;
        for part in parts {
            if (&part.scenario, part.seeds, &part.flags, part.shard_count)
                != (&scenario, seeds, &flags, shard_count)
            {
                return Err(MergeError(format!(
                    "not shards of one campaign: {} {} {} ({} shards) and {} {} {} ({} shards)",
                    scenario,
                    seeds,
                    flags.join(" "),
                    shard_count,
                    part.scenario,
                    part.seeds,
                    part.flags.join(" "),
                    part.shard_count
                )));
            }
            for shard in part.shards {
                if !shards.insert(shard) {
                    return Err(MergeError(format!(
                        "shard {shard}/{shard_count} given twice"
                    )));
                }
            }
            wall_seconds += part.wall_seconds;
            outcomes.extend(part.outcomes);
        }
        Ok(CampaignSummary::of(
            &scenario,
            seeds,
            flags,
            shard_count,
            shards.into_iter().collect(),
            outcomes,
            wall_seconds,
        ))
    }

    /// The line printed for each failing seed: why, and how to replay it.
    pub fn failure_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.outcomes
            .iter()
            .filter(|outcome| !outcome.passed)
            .map(failure_line)
    }
}

impl fmt::Display for CampaignSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> = self
            .failures_by_kind
            .iter()
            .map(|(kind, runs)| format!("{} {runs}", kind.name()))
            .collect();
        let shards: Vec<String> = self.shards.iter().map(u64::to_string).collect();
        write!(
            f,
            "campaign {} seeds {} (shards {} of {}{}): {} runs, {} passed, {} failed{}; \
             {} events at {:.0} events/s per worker, runs {:.2} s median, {:.2} s longest",
            self.scenario,
            self.seeds,
            shards.join(","),
            self.shard_count,
            if self.complete { "" } else { ", incomplete" },
            self.runs,
            self.passed,
            self.failed,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            self.events,
            self.events_per_second,
            self.run_wall_seconds_median,
            self.run_wall_seconds_max,
        )?;
        if !self.failing_seeds.is_empty() {
            let seeds: Vec<String> = self.failing_seeds.iter().map(u64::to_string).collect();
            write!(f, "\nfailing seeds: {}", seeds.join(" "))?;
        }
        Ok(())
    }
}

/// `seed 9 failed (bound: ...): meshsync-sim run --scenario ... --seed 9 ...`
pub fn failure_line(outcome: &SeedOutcome) -> String {
    let reasons: Vec<String> = outcome
        .failures
        .iter()
        .map(|failure| format!("{}: {}", failure.kind.name(), failure.detail))
        .collect();
    format!(
        "seed {} failed ({}): {}",
        outcome.seed,
        reasons.join("; "),
        outcome.replay
    )
}

/// The command that replays `seed` of a campaign of `scenario` with `flags`.
pub fn replay_command(scenario: &str, seed: u64, flags: &[String]) -> String {
    let mut words = vec![
        BINARY.to_owned(),
        "run".to_owned(),
        "--scenario".to_owned(),
        scenario.to_owned(),
        "--seed".to_owned(),
        seed.to_string(),
    ];
    words.extend(flags.iter().cloned());
    words.join(" ")
}

/// Runs the campaign; calls `on_outcome` with each run's outcome as it
/// finishes (in no set order), and returns the summary.
pub fn run_campaign(
    config: &CampaignConfig,
    mut on_outcome: impl FnMut(&SeedOutcome),
) -> Result<CampaignSummary, UnknownScenario> {
    if scenario_by_name(&config.run.scenario).is_none() {
        return Err(UnknownScenario(config.run.scenario.clone()));
    }
    install_panic_recorder();
    let started = WallInstant::now();
    let seeds = config.shard.seeds(config.seeds);
    let jobs = config
        .jobs
        .clamp(1, CAMPAIGN_JOBS_MAX)
        .min(seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let mut outcomes = Vec::with_capacity(seeds.len());
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel();
        for worker in 0..jobs {
            let sender = sender.clone();
            let (seeds, next) = (&seeds, &next);
            std::thread::Builder::new()
                .name(format!("campaign-{worker}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(scope, move || {
                    while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let outcome = run_seed(config, seed);
                        if sender.send(outcome).is_err() {
                            return;
                        }
                    }
                })
                .expect("a worker thread starts");
        }
        drop(sender);
        for outcome in receiver {
            on_outcome(&outcome);
            outcomes.push(outcome);
        }
    });
    Ok(CampaignSummary::of(
        &config.run.scenario,
        config.seeds,
        config.flags.clone(),
        config.shard.count,
        vec![config.shard.index],
        outcomes,
        started.elapsed().as_secs_f64(),
    ))
}

/// Runs one seed, catching a panic.
pub fn run_seed(config: &CampaignConfig, seed: u64) -> SeedOutcome {
    let run = RunConfig {
        seed,
        ..config.run.clone()
    };
    let replay = replay_command(&run.scenario, seed, &config.flags);
    let started = WallInstant::now();
    RECORDING.with(|recording| *recording.borrow_mut() = Some(String::new()));
    let result = panic::catch_unwind(AssertUnwindSafe(|| scenario::run(&run)));
    let recorded = RECORDING.with(|recording| recording.borrow_mut().take());
    let wall_seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(summary)) => {
            let mut failures: Vec<Failure> = summary
                .violations
                .iter()
                .map(|violation| failure(FailureKind::Invariant, violation))
                .collect();
            let described = summary.violations.len() as u64;
            if summary.invariant_violations > described {
                failures.push(failure(
                    FailureKind::Invariant,
                    &format!(
                        "{} more violations",
                        summary.invariant_violations - described
                    ),
                ));
            }
            failures.extend(
                summary
                    .bounds_broken
                    .iter()
                    .map(|bound| failure(FailureKind::Bound, bound)),
            );
            SeedOutcome {
                seed,
                passed: failures.is_empty(),
                failures,
                events: summary.events,
                wall_seconds,
                trace_hash: Some(summary.trace_hash),
                outcome: summary.outcome,
                replay,
            }
        }
        Ok(Err(unknown)) => SeedOutcome {
            seed,
            passed: false,
            failures: vec![failure(FailureKind::Panic, &unknown.to_string())],
            events: 0,
            wall_seconds,
            trace_hash: None,
            outcome: None,
            replay,
        },
        Err(payload) => {
            let message = recorded
                .filter(|message| !message.is_empty())
                .unwrap_or_else(|| panic_message(payload.as_ref()));
            SeedOutcome {
                seed,
                passed: false,
                failures: vec![failure(FailureKind::Panic, &message)],
                events: 0,
                wall_seconds,
                trace_hash: None,
                outcome: None,
                replay,
            }
        }
    }
}

fn failure(kind: FailureKind, detail: &str) -> Failure {
    let mut detail = detail.replace('\n', " ");
    if detail.len() > FAILURE_DETAIL_BYTES_MAX {
        let mut end = FAILURE_DETAIL_BYTES_MAX;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    Failure { kind, detail }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

thread_local! {
    /// `Some` while this thread runs a campaign's seed: the panic hook
    /// writes the message and location there instead of printing them.
    static RECORDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that records the panics of
/// campaign runs (message and location) and hands every other panic to
/// the hook that was there before.
fn install_panic_recorder() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let recorded = RECORDING.with(|recording| {
                let mut recording = recording.borrow_mut();
                match recording.as_mut() {
                    Some(message) => {
                        let text = panic_message(info.payload());
                        *message = match info.location() {
                            Some(at) => format!("panicked at {at}: {text}"),
                            None => format!("panicked: {text}"),
                        };
                        true
                    }
                    None => false,
                }
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_include_both_ends_and_refuse_the_malformed() {
        assert_eq!("1..40".parse::<SeedRange>().map(|r| r.len()), Ok(40));
        assert_eq!("7..7".parse::<SeedRange>().map(|r| r.len()), Ok(1));
        for text in ["", "1", "1..", "..4", "4..1", "a..b", "1..=4", "0..1000000"] {
            assert!(
                text.parse::<SeedRange>().is_err(),
                "{text:?} must be refused"
            );
        }
    }

    #[test]
    fn shards_split_a_range_between_them_without_overlap() {
        let range = SeedRange { first: 5, last: 14 };
        let shards: Vec<Vec<u64>> = (0..3)
            .map(|index| Shard { index, count: 3 }.seeds(range))
            .collect();
        assert_eq!(shards[0], vec![5, 8, 11, 14]);
        assert_eq!(shards[1], vec![6, 9, 12]);
        assert_eq!(shards[2], vec![7, 10, 13]);
        assert_eq!(Shard::WHOLE.seeds(range), (5..=14).collect::<Vec<_>>());
        for text in ["2/2", "0/0", "1", "a/2", "-1/2"] {
            assert!(text.parse::<Shard>().is_err(), "{text:?} must be refused");
        }
        assert_eq!("1/2".parse(), Ok(Shard { index: 1, count: 2 }));
    }

    #[test]
    fn unknown_scenarios_are_refused_and_panics_are_recorded_where_they_happened() {
        let config = CampaignConfig {
            run: RunConfig::new(
                "no-such-scenario",
                2,
                1,
                meshsync_core::Duration::from_secs(1),
            ),
            seeds: SeedRange { first: 1, last: 2 },
            shard: Shard::WHOLE,
            jobs: 2,
            flags: Vec::new(),
        };
        assert!(run_campaign(&config, |_| {}).is_err());

        install_panic_recorder();
        RECORDING.with(|recording| *recording.borrow_mut() = Some(String::new()));
        let result = panic::catch_unwind(|| panic!("boom {}", 7));
        let recorded = RECORDING.with(|recording| recording.borrow_mut().take());
        assert!(result.is_err());
        let recorded = recorded.expect("recording");
        assert!(
            recorded.contains("boom 7") && recorded.contains("campaign.rs"),
            "{recorded}"
        );
    }

    #[test]
    fn a_campaign_signs_its_chain_once_and_its_runs_hash_as_runs_on_their_own() {
        let name = crate::scenario::UnresponsivePeer::NAME;
        let chains = crate::ChainCache::new();
        let mut run = RunConfig::new(
            name,
            crate::scenario::nodes_default(name),
            0,
            meshsync_core::Duration::from_secs(60),
        );
        run.chains = chains.clone();
        let config = CampaignConfig {
            run,
            seeds: SeedRange { first: 1, last: 3 },
            shard: Shard::WHOLE,
            jobs: 2,
            flags: Vec::new(),
        };
        let summary = run_campaign(&config, |_| {}).expect("a known scenario");
        assert_eq!(summary.passed, 3, "{:?}", summary.failing_seeds);
        assert_eq!(chains.len(), 1, "one chain, signed once for every seed");
        for outcome in &summary.outcomes {
            let alone = scenario::run(&RunConfig {
                seed: outcome.seed,
                chains: crate::ChainCache::new(),
                ..config.run.clone()
            })
            .expect("a known scenario");
            assert_eq!(
                outcome.trace_hash.as_deref(),
                Some(alone.trace_hash.as_str()),
                "seed {}",
                outcome.seed
            );
        }
    }

    #[test]
    fn merged_shards_are_the_whole_campaign() {
        let outcome = |seed: u64, passed: bool| SeedOutcome {
            seed,
            passed,
            failures: if passed {
                Vec::new()
            } else {
                vec![failure(FailureKind::Bound, "heads disagree")]
            },
            events: 10,
            wall_seconds: 1.0,
            trace_hash: Some(format!("{seed}")),
            outcome: None,
            replay: replay_command("connect", seed, &[]),
        };
        let seeds = SeedRange { first: 1, last: 4 };
        let part = |index: u64, outcomes| {
            CampaignSummary::of("connect", seeds, Vec::new(), 2, vec![index], outcomes, 1.0)
        };
        let even = part(0, vec![outcome(3, true), outcome(1, false)]);
        let odd = part(1, vec![outcome(2, true), outcome(4, true)]);
        assert!(!even.complete);
        let merged = CampaignSummary::merge(vec![odd.clone(), even.clone()]).expect("merges");
        assert!(merged.complete);
        assert_eq!(merged.runs, 4);
        assert_eq!(merged.failing_seeds, vec![1]);
        assert_eq!(merged.failures_by_kind.get(&FailureKind::Bound), Some(&1));
        let seeds: Vec<u64> = merged.outcomes.iter().map(|o| o.seed).collect();
        assert_eq!(seeds, vec![1, 2, 3, 4]);
        let lines: Vec<String> = merged.failure_lines().collect();
        assert_eq!(
            lines,
            vec!["seed 1 failed (bound: heads disagree): meshsync-sim run --scenario connect --seed 1"]
        );

        assert!(CampaignSummary::merge(vec![even.clone(), even.clone()]).is_err());
        let mut other = odd;
        other.scenario = "request-flood".to_owned();
        assert!(CampaignSummary::merge(vec![even, other]).is_err());
        assert!(CampaignSummary::merge(Vec::new()).is_err());
    }
}
