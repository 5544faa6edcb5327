//! `meshsync-sim run --report DIR`: pictures of a run, as SVG files.
//!
//! # What is drawn
//! Every file is named after the scenario and the seed, so runs of several
//! scenarios can share one directory (`NAME` below is `SCENARIO-seedSEED`):
//!
//! | file | when | what |
//! | --- | --- | --- |
//! | `NAME-peers.svg` | every run | peers per node over time: one line per node while there are at most [`NODE_LINES_MAX`] nodes, else the min–max band of the nodes that are up, with their median |
//! | `NAME-heads.svg` | a run in which some node's head left genesis (the chain scenarios, and any other with a chain) | head slot per node over time, lines or band as above; partitions shaded from split to heal, crashes marked `×` and restarts `o` on the node's line |
//! | `NAME-latency.svg` | gossip scenarios (`gossip-1k`, `gossip-blocks`, `gossip-spam`, ...) | the delivery-latency CDF: x = latency in ms, y = deliveries within x over the deliveries expected (so the curve ends at the delivery ratio) |
//! | `NAME-latency-mesh.json`, `NAME-latency-floodsub.json` | beside the CDF | the CDF's points ([`LatencyCurve`]), one file per mode |
//!
//! The CDF of a `--floodsub` run is labelled `floodsub`, of any other run
//! `mesh`. Mesh and floodsub side by side: a run writes its own mode's
//! JSON, then draws every curve whose JSON is in `DIR` with the same
//! scenario and seed; so running both modes into one directory leaves a
//! `NAME-latency.svg` with both curves, whichever ran last. A curve from a
//! run with other `--nodes` or `--duration` is still drawn: its label says so.
//!
//! # Design
//! The world samples every node's head slot and peer count once per
//! [`SAMPLE_INTERVAL_DEFAULT`] of virtual time ([`crate::samples`]); a node
//! while down has no head and no peers, and its lines break there. Sampling
//! only reads, so the run's trace hash is the one it has without `--report`
//! (this module's tests check it). Drawing happens after the run, from what
//! was sampled; text is left to the SVG viewer's sans-serif font, so no
//! font is read or built in. The same run draws the same bytes.
//!
//! # Limits
//! Node samples are bounded by [`crate::samples::REPORT_SAMPLES_MAX`] (a
//! longer run is sampled more coarsely, never dropped); a CDF keeps
//! [`CDF_POINTS_MAX`] points; per-node lines stop at [`NODE_LINES_MAX`]
//! nodes, above which a band keeps a picture's size independent of the
//! world's.

use std::fmt;
use std::path::{Path, PathBuf};

use meshsync_core::{Duration, Instant};
use plotters::prelude::*;

use crate::samples::{Deliveries, FaultKind, NodeSample, Samples, SAMPLE_INTERVAL_DEFAULT};
use crate::scenario::{run_sampled, Recording, RunConfig, UnknownScenario};
use crate::summary::Summary;
use crate::types::NodeIndex;

/// Points a delivery-latency CDF keeps at most, evenly by rank: enough for
/// a smooth curve, small enough that its JSON and SVG stay a few KiB.
pub const CDF_POINTS_MAX: usize = 200;

/// Nodes drawn one line each at most; a larger world is drawn as a band.
pub const NODE_LINES_MAX: usize = 50;

/// Picture size in pixels.
const PLOT_WIDTH_PX: u32 = 800;
const PLOT_HEIGHT_PX: u32 = 480;
/// Axis, tick and legend text size in pixels (plotters scales it by 1/1.24).
const LABEL_FONT_PX: u32 = 16;

/// Colours of the two gossip modes' curves, and of the bands.
const MESH_COLOUR: RGBColor = RGBColor(31, 119, 180);
const FLOODSUB_COLOUR: RGBColor = RGBColor(214, 39, 40);
const BAND_COLOUR: RGBColor = RGBColor(31, 119, 180);
const PARTITION_COLOUR: RGBColor = RGBColor(255, 200, 120);

/// Why a report could not be written.
#[derive(Debug)]
pub enum ReportError {
    /// The run itself was refused.
    UnknownScenario(UnknownScenario),
    /// A file or the directory could not be written.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The plotting library refused a picture (a bug here).
    Plot(String),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::UnknownScenario(error) => write!(f, "{error}"),
            ReportError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ReportError::Plot(error) => write!(f, "drawing failed: {error}"),
        }
    }
}

impl std::error::Error for ReportError {}

fn plot_error(error: impl fmt::Display) -> ReportError {
    ReportError::Plot(error.to_string())
}

/// Runs `config` with sampling on and writes its pictures into `dir`
/// (created if missing); returns the summary and the files written.
pub fn run_with_report(
    config: &RunConfig,
    dir: &Path,
) -> Result<(Summary, Vec<PathBuf>), ReportError> {
    let (summary, recording) =
        run_sampled(config, Some(SAMPLE_INTERVAL_DEFAULT)).map_err(ReportError::UnknownScenario)?;
    // Sampling was asked for, so the run hands its recording back.
    let recording = recording.expect("a sampled run records");
    let files = write_report(dir, config, &recording)?;
    Ok((summary, files))
}

/// The file-name stem of a run's pictures: `SCENARIO-seedSEED`.
pub fn file_stem(config: &RunConfig) -> String {
    format!("{}-seed{}", config.scenario, config.seed)
}

/// Writes the pictures of a recorded run into `dir`; returns the files written.
pub fn write_report(
    dir: &Path,
    config: &RunConfig,
    recording: &Recording,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|error| ReportError::Io {
        path: dir.to_owned(),
        error,
    })?;
    let stem = file_stem(config);
    let title = format!("{}, seed {}", config.scenario, config.seed);
    let mut written = Vec::new();
    let mut write = |name: String, text: String| -> Result<(), ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|error| ReportError::Io {
            path: path.clone(),
            error,
        })?;
        written.push(path);
        Ok(())
    };

    let samples = &recording.samples;
    let peers = node_series(samples, |sample| {
        sample.head_slot.map(|_| u64::from(sample.peers))
    });
    write(
        format!("{stem}-peers.svg"),
        plot_over_time(&TimePlot {
            title: format!("{title}: peers per node"),
            y_description: "peers",
            series: &peers,
            samples,
            marks: false,
        })?,
    )?;

    let heads = node_series(samples, |sample| sample.head_slot);
    if heads.iter().flatten().any(|&(_, slot)| slot > 0) {
        write(
            format!("{stem}-heads.svg"),
            plot_over_time(&TimePlot {
                title: format!("{title}: head slot per node"),
                y_description: "head slot",
                series: &heads,
                samples,
                marks: true,
            })?,
        )?;
    }

    if let Some(deliveries) = &recording.deliveries {
        let curve = LatencyCurve::of(config, deliveries);
        // A struct of numbers and strings always serialises.
        let json = serde_json::to_string_pretty(&curve).expect("a curve serialises");
        write(format!("{stem}-latency-{}.json", curve.mode), json + "\n")?;
        let mut curves = vec![curve];
        for mode in [MODE_MESH, MODE_FLOODSUB] {
            if mode == curves[0].mode {
                continue;
            }
            let path = dir.join(format!("{stem}-latency-{mode}.json"));
            if let Some(other) = LatencyCurve::read(&path) {
                if other.scenario == config.scenario && other.seed == config.seed {
                    curves.push(other);
                }
            }
        }
        // Mesh first, whichever ran last: the picture depends on the runs only.
        curves.sort_by(|a, b| a.mode.cmp(&b.mode).reverse());
        write(
            format!("{stem}-latency.svg"),
            plot_latency(&format!("{title}: gossip delivery latency"), &curves)?,
        )?;
    }
    Ok(written)
}

/// One node's values over time: (row index, value), only where it has one.
type NodeSeries = Vec<(usize, u64)>;

/// Every node's series of `value`, in node order; a node added during the
/// run starts at the first row it is in.
fn node_series(samples: &Samples, value: impl Fn(&NodeSample) -> Option<u64>) -> Vec<NodeSeries> {
    let mut series: Vec<NodeSeries> = Vec::new();
    for row in 0..samples.times().len() {
        for (node, sample) in samples.row(row).iter().enumerate() {
            if series.len() <= node {
                series.resize_with(node + 1, Vec::new);
            }
            if let Some(value) = value(sample) {
                series[node].push((row, value));
            }
        }
    }
    series
}

/// Splits a series where rows are missing (the node was down): each part
/// is one unbroken line.
fn segments(series: &NodeSeries) -> Vec<&[(usize, u64)]> {
    let mut parts = Vec::new();
    let mut start = 0;
    for index in 1..=series.len() {
        if index == series.len() || series[index].0 != series[index - 1].0 + 1 {
            if start < index {
                parts.push(&series[start..index]);
            }
            start = index;
        }
    }
    parts
}

/// Per row, the fewest, the median and the most of the nodes that have a
/// value then; rows where none has one are left out.
fn band(series: &[NodeSeries], rows: usize) -> Vec<(usize, u64, u64, u64)> {
    let mut by_row: Vec<Vec<u64>> = vec![Vec::new(); rows];
    for node in series {
        for &(row, value) in node {
            by_row[row].push(value);
        }
    }
    by_row
        .into_iter()
        .enumerate()
        .filter(|(_, values)| !values.is_empty())
        .map(|(row, mut values)| {
            values.sort_unstable();
            let median = values[values.len() / 2];
            (row, values[0], median, values[values.len() - 1])
        })
        .collect()
}

fn seconds(at: Instant) -> f64 {
    at.as_micros() as f64 / 1e6
}

/// A picture of one value per node over time.
struct TimePlot<'a> {
    title: String,
    y_description: &'a str,
    series: &'a [NodeSeries],
    samples: &'a Samples,
    /// Whether to shade partitions and mark crashes and restarts.
    marks: bool,
}

fn plot_over_time(plot: &TimePlot<'_>) -> Result<String, ReportError> {
    let samples = plot.samples;
    let times: Vec<f64> = samples.times().iter().copied().map(seconds).collect();
    let x_max = times.last().copied().unwrap_or(0.0).max(1.0);
    let y_max = plot
        .series
        .iter()
        .flatten()
        .map(|&(_, value)| value)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.05;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&plot.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", LABEL_FONT_PX))
            .axis_desc_style(("sans-serif", LABEL_FONT_PX))
            .x_label_formatter(&|seconds| format!("{seconds:.0}"))
            .y_label_formatter(&|value| format!("{value:.0}"))
            .x_desc("virtual time (s)")
            .y_desc(plot.y_description)
            .draw()
            .map_err(plot_error)?;

        if plot.marks {
            let partitions = partition_spans(samples.faults(), x_max);
            chart
                .draw_series(partitions.iter().map(|&(from, to)| {
                    Rectangle::new(
                        [(from, 0.0), (to, y_max)],
                        PARTITION_COLOUR.mix(0.35).filled(),
                    )
                }))
                .map_err(plot_error)?;
            if !partitions.is_empty() {
                // The legend's entry for the shading (the last rectangle drawn).
                chart
                    .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                    .map_err(plot_error)?
                    .label("partitioned")
                    .legend(|(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 20, y + 5)], PARTITION_COLOUR.filled())
                    });
            }
        }

        let point = |&(row, value): &(usize, u64)| (times[row], value as f64);
        if plot.series.len() <= NODE_LINES_MAX {
            for (node, series) in plot.series.iter().enumerate() {
                let colour = Palette99::pick(node).stroke_width(1);
                for part in segments(series) {
                    chart
                        .draw_series(LineSeries::new(part.iter().map(point), colour))
                        .map_err(plot_error)?;
                }
            }
        } else {
            let band = band(plot.series, times.len());
            let mut outline: Vec<(f64, f64)> = band
                .iter()
                .map(|&(row, min, _, _)| (times[row], min as f64))
                .collect();
            outline.extend(
                band.iter()
                    .rev()
                    .map(|&(row, _, _, max)| (times[row], max as f64)),
            );
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    BAND_COLOUR.mix(0.25).filled(),
                )))
                .map_err(plot_error)?
                .label("fewest to most, of the nodes up")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 20, y + 5)],
                        BAND_COLOUR.mix(0.25).filled(),
                    )
                });
            chart
                .draw_series(LineSeries::new(
                    band.iter()
                        .map(|&(row, _, median, _)| (times[row], median as f64)),
                    BAND_COLOUR.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label("median")
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 1), (x + 20, y + 1)], BAND_COLOUR.filled())
                });
        }

        if plot.marks {
            let value_at = |node: NodeIndex, at: f64| -> f64 {
                // The node's value at the last row at or before `at`.
                plot.series
                    .get(node.0)
                    .and_then(|series| series.iter().rev().find(|&&(row, _)| times[row] <= at))
                    .map_or(0.0, |&(_, value)| value as f64)
            };
            let mut crashes = Vec::new();
            let mut restarts = Vec::new();
            for fault in samples.faults() {
                let (Some(node), at) = (fault.node, seconds(fault.at)) else {
                    continue;
                };
                match fault.kind {
                    FaultKind::Crash => crashes.push((at, value_at(node, at))),
                    FaultKind::Restart => restarts.push((at, value_at(node, at))),
                    FaultKind::Partition | FaultKind::Heal => {}
                }
            }
            if !crashes.is_empty() {
                chart
                    .draw_series(
                        crashes
                            .iter()
                            .map(|&at| Cross::new(at, 4, RED.stroke_width(2))),
                    )
                    .map_err(plot_error)?
                    .label("crash")
                    .legend(|(x, y)| Cross::new((x + 10, y), 4, RED.stroke_width(2)));
            }
            if !restarts.is_empty() {
                chart
                    .draw_series(
                        restarts
                            .iter()
                            .map(|&at| Circle::new(at, 4, GREEN.stroke_width(2))),
                    )
                    .map_err(plot_error)?
                    .label("restart")
                    .legend(|(x, y)| Circle::new((x + 10, y), 4, GREEN.stroke_width(2)));
            }
        }
        let has_legend =
            plot.series.len() > NODE_LINES_MAX || (plot.marks && !samples.faults().is_empty());
        if has_legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", LABEL_FONT_PX))
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Partitions as (from, to) in seconds; one never healed lasts to `end`.
fn partition_spans(faults: &[crate::samples::FaultMark], end: f64) -> Vec<(f64, f64)> {
    let mut spans = Vec::new();
    let mut open: Option<f64> = None;
    for fault in faults {
        match fault.kind {
            FaultKind::Partition => {
                // A new split while split: the first one's span goes on.
                open.get_or_insert(seconds(fault.at));
            }
            FaultKind::Heal => {
                if let Some(from) = open.take() {
                    spans.push((from, seconds(fault.at)));
                }
            }
            FaultKind::Crash | FaultKind::Restart => {}
        }
    }
    spans.extend(open.map(|from| (from, end)));
    spans
}

/// The label of runs without `--floodsub`.
pub const MODE_MESH: &str = "mesh";
/// The label of runs with `--floodsub`.
pub const MODE_FLOODSUB: &str = "floodsub";

/// A delivery-latency CDF, as `NAME-latency-MODE.json` keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyCurve {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// [`MODE_MESH`] or [`MODE_FLOODSUB`].
    pub mode: String,
    /// Nodes in the world.
    pub nodes: usize,
    /// The run's `--duration`, in seconds.
    pub duration_seconds: f64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Deliveries expected (every honest node, every message).
    pub expected: u64,
    /// (latency in ms, fraction of the expected deliveries within it),
    /// from (0, 0), at most [`CDF_POINTS_MAX`] more, evenly by rank, the
    /// last at the slowest delivery.
    pub points: Vec<(f64, f64)>,
}

impl LatencyCurve {
    /// The CDF of `deliveries` in the run `config`.
    pub fn of(config: &RunConfig, deliveries: &Deliveries) -> LatencyCurve {
        let mut latencies = deliveries.latencies.clone();
        latencies.sort_unstable();
        LatencyCurve {
            scenario: config.scenario.clone(),
            seed: config.seed,
            mode: if config.gossip.floodsub {
                MODE_FLOODSUB
            } else {
                MODE_MESH
            }
            .to_owned(),
            nodes: config.nodes,
            duration_seconds: config.duration.as_secs_f64(),
            delivered: latencies.len() as u64,
            expected: deliveries.expected,
            points: cdf_points(&latencies, deliveries.expected),
        }
    }

    /// The curve in `path`, if there is one that parses.
    fn read(path: &Path) -> Option<LatencyCurve> {
        let text = std::fs::read_to_string(path).ok()?;
        match serde_json::from_str(&text) {
            Ok(curve) => Some(curve),
            Err(error) => {
                log::warn!("{}: not a latency curve, left out: {error}", path.display());
                None
            }
        }
    }

    fn label(&self, first: &LatencyCurve) -> String {
        if self.nodes == first.nodes && self.duration_seconds == first.duration_seconds {
            self.mode.clone()
        } else {
            format!(
                "{} ({} nodes, {} s)",
                self.mode, self.nodes, self.duration_seconds
            )
        }
    }
}

/// The CDF points of `sorted` latencies over `expected` deliveries.
fn cdf_points(sorted: &[Duration], expected: u64) -> Vec<(f64, f64)> {
    let mut points = vec![(0.0, 0.0)];
    if expected == 0 || sorted.is_empty() {
        return points;
    }
    let count = sorted.len().min(CDF_POINTS_MAX);
    for k in 1..=count {
        // The rank of the k-th of `count` evenly spaced points, the last
        // one the slowest delivery.
        let rank = (k * sorted.len()).div_ceil(count);
        let latency_ms = sorted[rank - 1].as_secs_f64() * 1_000.0;
        points.push((latency_ms, rank as f64 / expected as f64));
    }
    points
}

fn plot_latency(title: &str, curves: &[LatencyCurve]) -> Result<String, ReportError> {
    let x_max = curves
        .iter()
        .flat_map(|curve| curve.points.iter().map(|&(ms, _)| ms))
        .fold(1.0, f64::max)
        * 1.05;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..1.02)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", LABEL_FONT_PX))
            .axis_desc_style(("sans-serif", LABEL_FONT_PX))
            .x_label_formatter(&|ms| format!("{ms:.0}"))
            .y_label_formatter(&|fraction| format!("{fraction:.1}"))
            .x_desc("latency (ms)")
            .y_desc("fraction delivered")
            .draw()
            .map_err(plot_error)?;
        for curve in curves {
            let colour = if curve.mode == MODE_FLOODSUB {
                FLOODSUB_COLOUR
            } else {
                MESH_COLOUR
            };
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(curve.label(&curves[0]))
                // A bar, not a path: the picture's only polylines are its curves.
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 1), (x + 20, y + 1)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", LABEL_FONT_PX))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scenario::run;

    /// A directory of its own for one test, empty.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("meshsync-sim-report-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|error| panic!("{name} was written: {error}"))
    }

    /// The point counts of every data `<polyline>` in `svg`, in order:
    /// the axes and their ticks, drawn black, are left out.
    fn polylines(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .map(|element| {
                element
                    .split_once("/>")
                    .map_or(element, |(inside, _)| inside)
            })
            .filter(|element| !element.contains("stroke=\"#000000\""))
            .map(|element| {
                let points = element
                    .split_once("points=\"")
                    .and_then(|(_, after)| after.split_once('"'))
                    .map_or("", |(points, _)| points);
                points.split_whitespace().count()
            })
            .collect()
    }

    /// Whether `svg` has a text element reading `text`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| element.split_once('>'))
            .filter_map(|(_, rest)| rest.split_once("</text>"))
            .any(|(inside, _)| inside.trim() == text)
    }

    fn assert_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_small_run_draws_one_line_per_node_with_a_point_per_second() {
        let dir = scratch("connect");
        let config = RunConfig::new("connect", 4, 1, Duration::from_secs(5));
        let (summary, files) = run_with_report(&config, &dir).expect("the report is written");
        assert_eq!(
            files,
            [dir.join("connect-seed1-peers.svg")],
            "no chain, no gossip"
        );
        let svg = read(&dir, "connect-seed1-peers.svg");
        assert_svg(&svg);
        // Rows at 0, 1, ..., 5 s: the clock stops at 5 s, whose row is taken at the end.
        assert_eq!(summary.virtual_seconds, 5.0);
        assert_eq!(polylines(&svg), [6; 4], "one 6-point line per node");
    }

    #[test]
    fn a_chain_run_draws_heads_with_its_crashes_and_the_same_trace() {
        let dir = scratch("crash-restart");
        let config = RunConfig::new("crash-restart", 20, 1, Duration::from_secs(20));
        let (summary, files) = run_with_report(&config, &dir).expect("the report is written");
        assert_eq!(files.len(), 2, "{files:?}");
        let svg = read(&dir, "crash-restart-seed1-heads.svg");
        assert_svg(&svg);
        let lines = polylines(&svg);
        assert!(lines.len() >= 20, "at least a line per node: {lines:?}");
        let rows = summary.virtual_seconds.floor() as usize + 1;
        assert!(lines.iter().all(|&points| (1..=rows).contains(&points)));
        assert!(
            has_text(&svg, "crash") && has_text(&svg, "restart"),
            "crashes and restarts are marked and named"
        );
        let unsampled = run(&config).expect("the same run");
        assert_eq!(summary.trace_hash, unsampled.trace_hash);
    }

    #[test]
    fn sampling_leaves_the_trace_hash_alone() {
        for (scenario, nodes, seconds) in [
            ("connect", 10, 5),
            ("partition-heal", 20, 5),
            ("gossip-blocks", 20, 4),
        ] {
            let config = RunConfig::new(scenario, nodes, 1, Duration::from_secs(seconds));
            let unsampled = run(&config).expect("a known scenario");
            let (sampled, recording) =
                run_sampled(&config, Some(SAMPLE_INTERVAL_DEFAULT)).expect("a known scenario");
            assert_eq!(sampled.trace_hash, unsampled.trace_hash, "{scenario}");
            assert_eq!(sampled.events, unsampled.events, "{scenario}");
            let samples = recording.expect("sampled").samples;
            assert_eq!(
                samples.times().len(),
                sampled.virtual_seconds.floor() as usize + 1,
                "{scenario}: a row per second"
            );
        }
    }

    #[test]
    fn partitions_are_shaded_from_split_to_heal() {
        let dir = scratch("partition-heal");
        let config = RunConfig::new("partition-heal", 20, 1, Duration::from_secs(5));
        run_with_report(&config, &dir).expect("the report is written");
        let svg = read(&dir, "partition-heal-seed1-heads.svg");
        assert_svg(&svg);
        assert!(has_text(&svg, "partitioned"), "the shading is named");
    }

    #[test]
    fn mesh_and_floodsub_runs_into_one_directory_share_a_cdf() {
        let dir = scratch("gossip");
        let mut config = RunConfig::new("gossip-1k", 20, 1, Duration::from_secs(3));
        config.gossip.publishers = Some(5);
        let (mesh, files) = run_with_report(&config, &dir).expect("the report is written");
        assert!(files.contains(&dir.join("gossip-1k-seed1-latency.svg")));
        let svg = read(&dir, "gossip-1k-seed1-latency.svg");
        assert_svg(&svg);
        assert_eq!(polylines(&svg).len(), 1, "one curve");
        let curve: LatencyCurve =
            serde_json::from_str(&read(&dir, "gossip-1k-seed1-latency-mesh.json"))
                .expect("the curve is JSON");
        let outcome = mesh.outcome.expect("a gossip outcome");
        assert_eq!(
            curve.delivered as f64 / curve.expected as f64,
            outcome["delivery_ratio"].as_f64().expect("a ratio")
        );
        assert_eq!(
            curve.points.len(),
            curve.delivered.min(CDF_POINTS_MAX as u64) as usize + 1
        );
        assert_eq!(polylines(&svg), [curve.points.len()]);

        config.gossip.floodsub = true;
        run_with_report(&config, &dir).expect("the report is written");
        let svg = read(&dir, "gossip-1k-seed1-latency.svg");
        assert_eq!(polylines(&svg).len(), 2, "mesh and floodsub");
        assert!(has_text(&svg, "mesh") && has_text(&svg, "floodsub"));

        // Another seed's curve is not drawn beside this one.
        config.seed = 2;
        run_with_report(&config, &dir).expect("the report is written");
        assert_eq!(
            polylines(&read(&dir, "gossip-1k-seed2-latency.svg")).len(),
            1
        );
    }

    #[test]
    fn cdf_points_are_evenly_ranked_and_end_at_the_delivery_ratio() {
        let latencies: Vec<Duration> = (1..=1_000).map(Duration::from_millis).collect();
        let points = cdf_points(&latencies, 2_000);
        assert_eq!(points.len(), CDF_POINTS_MAX + 1);
        assert_eq!(points[0], (0.0, 0.0));
        assert_eq!(points[1], (5.0, 5.0 / 2_000.0));
        assert_eq!(points[CDF_POINTS_MAX], (1_000.0, 0.5));
        assert_eq!(
            cdf_points(&latencies[..3], 3).len(),
            4,
            "few deliveries: all of them"
        );
        assert_eq!(cdf_points(&[], 0), [(0.0, 0.0)]);
    }

    #[test]
    fn lines_break_where_a_node_was_down_and_bands_take_the_nodes_up() {
        let series: NodeSeries = vec![(0, 1), (1, 1), (3, 2), (4, 2)];
        assert_eq!(segments(&series), [&series[..2], &series[2..]]);
        let nodes = vec![vec![(0, 1), (1, 5)], vec![(0, 3)], vec![(0, 2), (1, 7)]];
        assert_eq!(band(&nodes, 3), [(0, 1, 2, 3), (1, 5, 7, 7)]);
    }

    #[test]
    fn a_world_above_the_line_limit_is_drawn_as_a_band() {
        let dir = scratch("band");
        let config = RunConfig::new("connect", NODE_LINES_MAX + 1, 1, Duration::from_secs(3));
        run_with_report(&config, &dir).expect("the report is written");
        let svg = read(&dir, "connect-seed1-peers.svg");
        assert_svg(&svg);
        assert_eq!(polylines(&svg), [4], "one median line, a point per second");
        assert_eq!(svg.matches("<polygon").count(), 1, "one band");
    }
}
