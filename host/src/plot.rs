//! SVG line plots of a compare report: each evaluation metric vs learner step and vs wall-clock
//! seconds, one line per arm (mean across seeds) over a min–max band, and the smoothed
//! pretraining loss, meta-step diagnostics and designer/task step metrics vs step.
//!
//! Seeds rarely share x values on the seconds axis, so each arm's seeds are linearly
//! interpolated onto a common grid: the union of their x values inside the range every seed
//! covers (never extrapolated), thinned to at most [`MAX_POINTS`] evenly spaced points.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::fileio::atomic_write;
use crate::records::{Record, TrainRecord, HOST_COUNTERS};
use crate::summary::{lower_is_better, metric_order, Report};

/// The most grid points one arm's line gets; longer grids are resampled evenly.
pub const MAX_POINTS: usize = 800;
/// Plot size in pixels.
const SIZE: (u32, u32) = (960, 600);
/// Lines with at most this many points also get a marker on each point (see `line_plot`).
const MARKER_MAX_POINTS: usize = 40;

/// Tableau 10: distinct, colour-blind-tolerant line colours, one per arm (cycled past ten).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The x axis of a plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Learner step.
    Step,
    /// Wall-clock seconds charged to the run.
    Seconds,
}

impl Axis {
    /// `step` or `seconds`, as used in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Step => "step",
            Axis::Seconds => "seconds",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Axis::Step => "learner step",
            Axis::Seconds => "wall-clock time charged to the run (s, meta steps included)",
        }
    }
    fn of(self, r: &Record) -> f64 {
        match self {
            Axis::Step => r.step() as f64,
            Axis::Seconds => r.seconds(),
        }
    }
}

/// A metric name made safe for a file name: `@` → `_at_`, anything else outside
/// `[A-Za-z0-9_-]` → `_`, runs of `_` collapsed (`pass@1` → `pass_at_1`).
pub fn sanitize_metric(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            '@' => out.push_str("_at_"),
            c if c.is_ascii_alphanumeric() || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    let mut collapsed = String::new();
    for c in out.chars() {
        if !(c == '_' && collapsed.ends_with('_')) {
            collapsed.push(c);
        }
    }
    let trimmed = collapsed.trim_matches('_');
    if trimmed.is_empty() {
        "metric".into()
    } else {
        trimmed.into()
    }
}

/// `plot_{metric}_vs_{step|seconds}.svg`.
pub fn plot_file_name(metric: &str, axis: Axis) -> String {
    format!("plot_{}_vs_{}.svg", sanitize_metric(metric), axis.as_str())
}

/// One arm's line: the grid and, at each grid point, the mean, min and max across seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Grid x values, ascending.
    pub x: Vec<f64>,
    /// Mean across seeds at each x.
    pub mean: Vec<f64>,
    /// Minimum across seeds at each x.
    pub min: Vec<f64>,
    /// Maximum across seeds at each x.
    pub max: Vec<f64>,
}

/// Linear interpolation of a series sorted by x; `None` outside its range.
pub fn interp(series: &[(f64, f64)], x: f64) -> Option<f64> {
    let (first, last) = (series.first()?, series.last()?);
    if x < first.0 || x > last.0 {
        return None;
    }
    let i = series.partition_point(|p| p.0 < x);
    let (x1, y1) = series[i];
    if i == 0 || x1 == x {
        return Some(y1);
    }
    let (x0, y0) = series[i - 1];
    Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
}

/// Mean and min–max of several seeds' series on a common grid.
///
/// Each series must be sorted by x with finite values. The grid is the union of the seeds'
/// x values within the range all seeds cover; when that range is empty (seeds that do not
/// overlap), the union of all x values, each point averaging the seeds that cover it. Grids
/// longer than [`MAX_POINTS`] are resampled evenly. `None` when no series has a point.
pub fn band(series: &[Vec<(f64, f64)>]) -> Option<Band> {
    let series: Vec<&Vec<(f64, f64)>> = series.iter().filter(|s| !s.is_empty()).collect();
    if series.is_empty() {
        return None;
    }
    let lo = series
        .iter()
        .map(|s| s[0].0)
        .fold(f64::NEG_INFINITY, f64::max);
    let hi = series
        .iter()
        .map(|s| s[s.len() - 1].0)
        .fold(f64::INFINITY, f64::min);
    let mut grid: Vec<f64> = series
        .iter()
        .flat_map(|s| s.iter().map(|p| p.0))
        .filter(|x| lo > hi || (lo..=hi).contains(x))
        .collect();
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    if grid.len() > MAX_POINTS {
        let (a, b) = (grid[0], grid[grid.len() - 1]);
        grid = (0..MAX_POINTS)
            .map(|i| a + (b - a) * i as f64 / (MAX_POINTS - 1) as f64)
            .collect();
    }
    let mut out = Band {
        x: Vec::new(),
        mean: Vec::new(),
        min: Vec::new(),
        max: Vec::new(),
    };
    for x in grid {
        let ys: Vec<f64> = series.iter().filter_map(|s| interp(s, x)).collect();
        if ys.is_empty() {
            continue;
        }
        out.x.push(x);
        out.mean.push(ys.iter().sum::<f64>() / ys.len() as f64);
        out.min
            .push(ys.iter().copied().fold(f64::INFINITY, f64::min));
        out.max
            .push(ys.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    }
    Some(out)
}

/// Exponential moving average with span `span` (α = 2/(span+1)), bias-corrected so the first
/// values are not pulled towards zero.
pub fn ema(values: &[f64], span: f64) -> Vec<f64> {
    let alpha = 2.0 / (span.max(1.0) + 1.0);
    let (mut acc, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|v| {
            acc = (1.0 - alpha) * acc + alpha * v;
            weight = (1.0 - alpha) * weight + alpha;
            acc / weight
        })
        .collect()
}

/// Sorted, finite (x, y) points, keeping the last y for a repeated x.
fn clean(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.retain(|p| p.0.is_finite() && p.1.is_finite());
    points.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: file order kept within one x
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for p in points {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// One series per seed of `metric` from the eval records, against `axis`.
fn eval_series(records: &[Record], metric: &str, axis: Axis) -> Vec<(f64, f64)> {
    clean(
        records
            .iter()
            .filter_map(|r| match r {
                Record::Eval(e) => e.metrics.get(metric).map(|y| (axis.of(r), *y)),
                Record::Train(_) => None,
            })
            .collect(),
    )
}

/// Writes every plot of `report` into `dir` and returns their paths: for each metric seen in
/// any eval record, `plot_{metric}_vs_step.svg` and `plot_{metric}_vs_seconds.svg`; then
/// `plot_pretrain_loss_vs_step.svg` when there are train records, and
/// `plot_meta_value_vs_step.svg`, `plot_meta_cos_vs_step.svg` and
/// `plot_meta_regularizer_vs_step.svg` when some arm took meta steps, and `plot_train_{name}_vs_step.svg` for each named scalar of the learner steps
/// ([`Report::step_metrics`]: designer metrics such as `alpha_mean`). Diagnostic arms are labelled so in legends. Each arm keeps one colour
/// ([`PALETTE`], by its place in the report) on every plot.
pub fn write_plots(dir: &Path, report: &Report) -> Result<Vec<PathBuf>> {
    let names: Vec<String> = report
        .arms
        .iter()
        .flat_map(|a| a.seeds.iter())
        .flat_map(|s| s.records.iter())
        .filter_map(|r| match r {
            Record::Eval(e) => Some(e.metrics.keys().cloned()),
            Record::Train(_) => None,
        })
        .flatten()
        .collect();
    let mut written = Vec::new();
    let shown = metric_order(&names)
        .into_iter()
        .filter(|m| !HOST_COUNTERS.contains(&m.as_str()) && !crate::intervals::is_interval_key(m));
    for metric in shown {
        for axis in [Axis::Step, Axis::Seconds] {
            let lines: Vec<Line> = report
                .arms
                .iter()
                .enumerate()
                .filter_map(|(i, arm)| {
                    let seeds: Vec<_> = arm
                        .seeds
                        .iter()
                        .map(|s| eval_series(&s.records, &metric, axis))
                        .collect();
                    line(i, &arm.label(), arm.seeds.len(), band(&seeds)?)
                })
                .collect();
            if lines.is_empty() {
                continue;
            }
            let path = dir.join(plot_file_name(&metric, axis));
            let title = format!("{metric} vs {}", axis.as_str());
            line_plot(
                &path,
                &title,
                axis,
                &metric,
                lower_is_better(&metric),
                &lines,
            )?;
            written.push(path);
        }
    }
    for (name, read) in TRAIN_SERIES {
        written.extend(train_plot(dir, report, name, &read)?);
    }
    // The learner steps' named scalars (designer and task metrics), as TensorBoard's `train/…`.
    for metric in report.step_metrics() {
        let read = |t: &TrainRecord| t.metrics.get(&metric).copied();
        written.extend(train_plot(dir, report, &format!("train/{metric}"), &read)?);
    }
    Ok(written)
}

/// A train-record series plotted vs step, smoothed: its name and how to read it.
type TrainSeries = (&'static str, fn(&TrainRecord) -> Option<f64>);

/// `pretrain_loss` of every step; of every meta step that was not skipped (arms without meta
/// steps have no line): `meta_value` = V, `meta_cos` = cos(g_down, g_pre) and
/// `meta_regularizer` = R(φ, c) (the LM designers' off-target mass on loss-bearing positions).
const TRAIN_SERIES: [TrainSeries; 4] = [
    ("pretrain_loss", |t| Some(t.pretrain_loss)),
    ("meta_value", |t| {
        t.meta.as_ref().filter(|m| !m.skipped).map(|m| m.value)
    }),
    ("meta_cos", |t| {
        t.meta.as_ref().filter(|m| !m.skipped).map(|m| m.cos)
    }),
    ("meta_regularizer", |t| {
        t.meta
            .as_ref()
            .filter(|m| !m.skipped)
            .map(|m| m.regularizer)
    }),
];

/// One train-record series of every arm vs step, EMA-smoothed; `None` when no arm has it.
fn train_plot(
    dir: &Path,
    report: &Report,
    name: &str,
    read: &dyn Fn(&TrainRecord) -> Option<f64>,
) -> Result<Option<PathBuf>> {
    let mut longest = 0;
    let raw: Vec<Vec<Vec<(f64, f64)>>> = report
        .arms
        .iter()
        .map(|arm| {
            arm.seeds
                .iter()
                .map(|s| {
                    let pts = clean(
                        s.records
                            .iter()
                            .filter_map(|r| match r {
                                Record::Train(t) => read(t).map(|y| (t.step as f64, y)),
                                Record::Eval(_) => None,
                            })
                            .collect(),
                    );
                    longest = longest.max(pts.len());
                    pts
                })
                .collect()
        })
        .collect();
    // One span for every arm, so lines are smoothed alike: about 1/25 of the run.
    let span = (longest as f64 / 25.0).round().max(1.0);
    let lines: Vec<Line> = report
        .arms
        .iter()
        .zip(raw)
        .enumerate()
        .filter_map(|(i, (arm, seeds))| {
            let smoothed: Vec<Vec<(f64, f64)>> = seeds
                .into_iter()
                .map(|pts| {
                    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
                    pts.iter().map(|p| p.0).zip(ema(&ys, span)).collect()
                })
                .collect();
            line(i, &arm.label(), arm.seeds.len(), band(&smoothed)?)
        })
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    let path = dir.join(plot_file_name(name, Axis::Step));
    let title = if span > 1.0 {
        format!("{name} vs step (EMA, span {span:.0} steps)")
    } else {
        format!("{name} vs step")
    };
    line_plot(
        &path,
        &title,
        Axis::Step,
        name,
        lower_is_better(name),
        &lines,
    )?;
    Ok(Some(path))
}

/// One arm's line on a plot.
struct Line {
    /// The arm's colour, fixed by its place in the report so it is the same on every plot.
    colour: RGBColor,
    label: String,
    seeds: usize,
    band: Band,
}

fn line(arm_index: usize, arm: &str, n_seeds: usize, band: Band) -> Option<Line> {
    if band.x.is_empty() {
        return None;
    }
    let seeds = if n_seeds == 1 {
        "1 seed".to_string()
    } else {
        format!("{n_seeds} seeds")
    };
    Some(Line {
        colour: PALETTE[arm_index % PALETTE.len()],
        label: format!("{arm} ({seeds})"),
        seeds: n_seeds,
        band,
    })
}

/// Tick labels with about four significant digits and no float noise.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let d = (3 - a.log10().floor() as i64).clamp(0, 6) as usize;
        let s = format!("{v:.d$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// A range padded by 5% on each side (or ±0.5·|v|, ±1 for a constant).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.5 * lo.abs() };
        (lo - pad, hi + pad)
    }
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("plot {}: {e}", path.display()))
}

/// Draws one SVG: each line's min–max band, its mean line (with markers on short lines), a
/// legend placed away from where the curves usually are, and writes it atomically.
fn line_plot(
    path: &Path,
    title: &str,
    axis: Axis,
    y_label: &str,
    lower_better: bool,
    lines: &[Line],
) -> Result<()> {
    let xs = lines.iter().flat_map(|l| l.band.x.iter().copied());
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let y_lo = lines
        .iter()
        .flat_map(|l| l.band.min.iter().copied())
        .fold(f64::INFINITY, f64::min);
    let y_hi = lines
        .iter()
        .flat_map(|l| l.band.max.iter().copied())
        .fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_hi > x_lo {
        (x_lo, x_hi)
    } else {
        padded(x_lo, x_hi)
    };
    let (y_lo, y_hi) = padded(y_lo, y_hi);
    let x_fmt = |v: &f64| match axis {
        Axis::Step => format!("{v:.0}"),
        Axis::Seconds => tick(*v),
    };
    let y_fmt = |v: &f64| tick(*v);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        // Title and a one-line key above the chart, centred.
        let (head, body) = root.split_vertically(76);
        let centre = |size: u32, grey: u8| {
            ("sans-serif", size)
                .into_font()
                .color(&RGBColor(grey, grey, grey))
                .pos(Pos::new(HPos::Center, VPos::Top))
        };
        let mid = SIZE.0 as i32 / 2;
        head.draw_text(title, &centre(24, 0), (mid, 16))
            .map_err(|e| plot_err(path, e))?;
        head.draw_text(
            "line: mean across seeds; band: min–max across seeds",
            &centre(15, 100),
            (mid, 50),
        )
        .map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&body)
            .margin(20)
            .margin_top(4)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(axis.label())
            .y_desc(y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .axis_desc_style(("sans-serif", 17))
            .label_style(("sans-serif", 14))
            .max_light_lines(4)
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| plot_err(path, e))?;

        // Bands first, so no band hides another arm's line.
        for l in lines {
            let c = l.colour;
            let b = &l.band;
            if b.x.len() > 1 && b.min.iter().zip(&b.max).any(|(lo, hi)| hi > lo) {
                let upper = b.x.iter().copied().zip(b.max.iter().copied());
                let lower = b.x.iter().copied().zip(b.min.iter().copied()).rev();
                let polygon: Vec<(f64, f64)> = upper.chain(lower).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(polygon, c.mix(0.18).filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        for l in lines {
            let c = l.colour;
            let pts: Vec<(f64, f64)> = l
                .band
                .x
                .iter()
                .copied()
                .zip(l.band.mean.iter().copied())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(l.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                });
            // Markers show where evaluations happened. On the seconds axis a multi-seed grid
            // merges every seed's times, so markers would not be evaluations: none there.
            let exact = axis == Axis::Step || l.seeds == 1;
            if pts.len() == 1 || (exact && pts.len() <= MARKER_MAX_POINTS) {
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(if lower_better {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            })
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    atomic_write(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{fake_compare, temp_dir};
    use crate::summary::summarize;

    #[test]
    fn sanitizes_metric_names() {
        assert_eq!(sanitize_metric("pass@1"), "pass_at_1");
        assert_eq!(sanitize_metric("feedback_loss"), "feedback_loss");
        assert_eq!(sanitize_metric("acc/top-5 (%)"), "acc_top-5");
        assert_eq!(sanitize_metric("../x"), "x");
        assert_eq!(sanitize_metric("@@"), "at_at");
        assert_eq!(sanitize_metric("//"), "metric");
        assert_eq!(
            plot_file_name("pass@1", Axis::Seconds),
            "plot_pass_at_1_vs_seconds.svg"
        );
    }

    #[test]
    fn interpolates_inside_the_range_only() {
        let s = [(0.0, 1.0), (2.0, 3.0), (4.0, 3.0)];
        assert_eq!(interp(&s, 1.0), Some(2.0));
        assert_eq!(interp(&s, 0.0), Some(1.0));
        assert_eq!(interp(&s, 4.0), Some(3.0));
        assert_eq!(interp(&s, 3.0), Some(3.0));
        assert_eq!(interp(&s, 4.5), None);
        assert_eq!(interp(&s, -0.1), None);
        assert_eq!(interp(&[], 0.0), None);
    }

    #[test]
    fn band_uses_the_overlap_of_seeds() {
        // Seed a covers [0, 10], seed b covers [1, 12]: the grid is their x values in [1, 10].
        let a = vec![(0.0, 0.0), (5.0, 5.0), (10.0, 10.0)];
        let b = vec![(1.0, 3.0), (6.0, 3.0), (12.0, 3.0)];
        let band = band(&[a, b]).unwrap();
        assert_eq!(band.x, [1.0, 5.0, 6.0, 10.0]);
        assert_eq!(band.mean, [2.0, 4.0, 4.5, 6.5]);
        assert_eq!(band.min, [1.0, 3.0, 3.0, 3.0]);
        assert_eq!(band.max, [3.0, 5.0, 6.0, 10.0]);
        // Disjoint seeds: every x, each averaging the seeds that cover it.
        let band2 = super::band(&[vec![(0.0, 1.0)], vec![(5.0, 3.0)]]).unwrap();
        assert_eq!((band2.x, band2.mean), (vec![0.0, 5.0], vec![1.0, 3.0]));
        assert!(super::band(&[vec![], vec![]]).is_none());
        // Long grids are resampled to MAX_POINTS, keeping both ends.
        let long: Vec<(f64, f64)> = (0..3000).map(|i| (i as f64, i as f64)).collect();
        let b3 = super::band(&[long]).unwrap();
        assert_eq!(b3.x.len(), MAX_POINTS);
        assert_eq!(
            (b3.x[0], b3.x[MAX_POINTS - 1], b3.mean[MAX_POINTS - 1]),
            (0.0, 2999.0, 2999.0)
        );
    }

    #[test]
    fn ema_is_bias_corrected() {
        let s = ema(&[2.0, 2.0, 2.0], 9.0);
        assert!(s.iter().all(|v| (v - 2.0).abs() < 1e-12), "{s:?}");
        let s = ema(&[0.0, 10.0], 3.0); // α = 0.5: (0.5·10)/(0.75)
        assert!((s[1] - 10.0 / 1.5).abs() < 1e-12, "{s:?}");
        assert_eq!(ema(&[1.0, 5.0], 1.0), [1.0, 5.0]);
    }

    /// `<polyline` elements with this colour and stroke width.
    fn polylines(svg: &str, c: RGBColor, width: u32) -> usize {
        let stroke = format!(
            r##"stroke="#{:02X}{:02X}{:02X}" stroke-width="{width}""##,
            c.0, c.1, c.2
        );
        svg.split("<polyline")
            .skip(1)
            .filter(|p| p.split("/>").next().unwrap().contains(&stroke))
            .count()
    }

    #[test]
    fn writes_one_line_per_arm_for_each_metric_and_axis() {
        let dir = temp_dir("plots");
        let report = summarize(&fake_compare(&dir)).unwrap();
        let written = write_plots(&dir, &report).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "plot_feedback_loss_vs_step.svg",
                "plot_feedback_loss_vs_seconds.svg",
                "plot_general_loss_vs_step.svg",
                "plot_general_loss_vs_seconds.svg",
                "plot_pass_at_1_vs_step.svg",
                "plot_pass_at_1_vs_seconds.svg",
                "plot_pretrain_loss_vs_step.svg",
                "plot_meta_value_vs_step.svg",
                "plot_meta_cos_vs_step.svg",
                "plot_meta_regularizer_vs_step.svg",
            ]
        );
        for path in &written[..7] {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{}",
                path.display()
            );
            for (i, arm) in ["baseline", "v"].iter().enumerate() {
                // One data line (width 2) and one legend swatch (width 3) per arm.
                assert_eq!(
                    polylines(&svg, PALETTE[i], 2),
                    1,
                    "{} {arm}",
                    path.display()
                );
                assert_eq!(
                    polylines(&svg, PALETTE[i], 3),
                    1,
                    "{} {arm}",
                    path.display()
                );
                assert!(
                    svg.contains(&format!(">\n{arm} (3 seeds)\n</text>")),
                    "{} {arm}",
                    path.display()
                );
            }
            assert_eq!(polylines(&svg, PALETTE[2], 2), 0);
            // One min–max band per arm: the seeds differ everywhere.
            assert_eq!(svg.matches("<polygon").count(), 2, "{}", path.display());
        }
        let step = std::fs::read_to_string(&written[0]).unwrap();
        assert!(
            step.contains(">\nlearner step\n</text>")
                && step.contains(">\nfeedback_loss vs step\n</text>")
        );
        let secs = std::fs::read_to_string(&written[1]).unwrap();
        assert!(
            secs.contains("wall-clock time charged to the run (s"),
            "seconds axis label"
        );
        let pre = std::fs::read_to_string(&written[6]).unwrap();
        assert!(pre.contains("pretrain_loss vs step"));
        // Only v takes meta steps: one orange line (v's colour everywhere), no blue one.
        let value = std::fs::read_to_string(&written[7]).unwrap();
        assert!(value.contains("meta_value vs step"));
        assert_eq!(polylines(&value, PALETTE[1], 2), 1);
        assert_eq!(polylines(&value, PALETTE[0], 2), 0);
        let meta = std::fs::read_to_string(&written[8]).unwrap();
        assert_eq!(polylines(&meta, PALETTE[1], 2), 1);
        assert_eq!(polylines(&meta, PALETTE[0], 2), 0);
        assert!(meta.contains("\nv (3 seeds)\n") && !meta.contains("baseline"));
        assert_eq!(
            meta.matches("<polygon").count(),
            1,
            "seeds' cos differ: one band"
        );
    }
}
