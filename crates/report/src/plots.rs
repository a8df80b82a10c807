//! Figures, each written as SVG and PNG:
//! - `curves`: training curves in the papers' style (He et al. 2015 Fig. 6; Identity
//!   Mappings Fig. 4): thin = training error, bold = test error, one colour per variant,
//!   error (%) against iterations;
//! - `final`: final test error per variant, mean ± std over seeds, each seed, and the paper's
//!   number (a `"fail"` is marked on the fail threshold);
//! - `norms`: ‖∂E/∂x_l‖ against the residual unit l on a log axis (the `gradients` study).
//!
//! Text is drawn with DejaVu Sans compiled into the binary, so PNGs render on a machine with
//! no fonts installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::FontRef;
use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

use crate::experiment::PaperNumber;
use crate::png::PngBackend;
use crate::results::{ProfileResults, VariantNorms, VariantRuns};
use crate::stats::Summary;

/// The family name every text style uses; the embedded fonts are registered under it.
const FONT: &str = "sans-serif";
static REGULAR: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../assets/DejaVuSans-Bold.ttf");

/// Registers the embedded DejaVu Sans (regular and bold) with plotters, once.
pub fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, REGULAR).is_ok()
            && register_font(FONT, FontStyle::Bold, BOLD).is_ok()
    });
    if !ok {
        bail!("the embedded DejaVu Sans font could not be loaded");
    }
    Ok(())
}

/// The embedded faces, for drawing PNG text ourselves (see `png`).
fn faces() -> Result<(FontRef<'static>, FontRef<'static>)> {
    let face = |bytes: &'static [u8]| {
        FontRef::try_from_slice(bytes).map_err(|e| anyhow!("embedded font: {e}"))
    };
    Ok((face(REGULAR)?, face(BOLD)?))
}

fn plot_err<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("drawing failed: {err}")
}

/// Tableau 10, then black and navy: one colour per variant, by its place in the file.
const COLOURS: [RGBColor; 12] = [
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
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
];

/// The colour of the variant at `index` in the experiment file.
pub fn colour(index: usize) -> RGBColor {
    match COLOURS.get(index) {
        Some(c) => *c,
        None => {
            let (r, g, b) = Palette99::pick(index).rgb();
            RGBColor(r, g, b)
        }
    }
}

const GREY: RGBColor = RGBColor(90, 90, 90);

/// A figure that can be drawn on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
fn write_figure(figure: &impl Figure, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_fonts()?;
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = SVGBackend::new(&svg, figure.size()).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let png = dir.join(format!("{stem}.png"));
    {
        let (regular, bold) = faces()?;
        let root = PngBackend::new(&png, figure.size(), regular, bold).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(vec![svg, png])
}

/// White background, a bold title and a grey subtitle; returns the area below them.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, body) = root.split_vertically(64);
    let bold = (FONT, 22).into_font().style(FontStyle::Bold).color(&BLACK);
    top.draw_text(title, &bold, (20, 10)).map_err(plot_err)?;
    let plain = (FONT, 15).into_font().color(&GREY);
    top.draw_text(subtitle, &plain, (20, 40))
        .map_err(plot_err)?;
    Ok(body)
}

/// What every figure's title says about its origin: profile and data.
#[derive(Debug, Clone)]
pub struct Caption {
    pub title: String,
    pub profile: String,
    /// `CIFAR-10, JPEG-75 copy`, `original CIFAR-10`, …
    pub data: String,
}

/// Splits a polyline where it leaves `y ≤ y_max`, adding the crossing points, so that a
/// curve that starts above the axis (early training error) is cut at the frame instead of
/// being drawn across the title.
pub fn clip_above(points: &[(f64, f64)], y_max: f64) -> Vec<Vec<(f64, f64)>> {
    let mut pieces = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        let inside = y <= y_max;
        if i > 0 {
            let (px, py) = points[i - 1];
            let was_inside = py <= y_max;
            if inside != was_inside {
                let t = (y_max - py) / (y - py);
                current.push((px + t * (x - px), y_max));
                if was_inside {
                    pieces.push(std::mem::take(&mut current));
                }
            }
        }
        if inside {
            current.push((x, y));
        }
    }
    if current.len() > 1 {
        pieces.push(current);
    }
    pieces.retain(|piece| piece.len() > 1);
    pieces
}

/// One variant's training curves, averaged over the seeds that reached each iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveSeries {
    pub name: String,
    pub colour_index: usize,
    /// Seeds with at least one epoch.
    pub seeds: usize,
    /// (iterations in thousands, training error %).
    pub train: Vec<(f64, f64)>,
    /// (iterations in thousands, test error %), evaluated epochs only.
    pub test: Vec<(f64, f64)>,
}

impl CurveSeries {
    /// Means over the seeds of `runs` at each iteration logged (running seeds included).
    pub fn of(runs: &VariantRuns, colour_index: usize) -> Option<Self> {
        let mut train: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        let mut test: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        let mut seeds = 0;
        for run in runs.runs.iter().filter(|r| !r.epochs.is_empty()) {
            seeds += 1;
            for row in &run.epochs {
                if let Some(e) = row.train_error.filter(|e| e.is_finite()) {
                    let t = train.entry(row.iteration).or_default();
                    t.0 += e;
                    t.1 += 1;
                }
                if let Some(e) = row.test_error.filter(|e| e.is_finite()) {
                    let t = test.entry(row.iteration).or_default();
                    t.0 += e;
                    t.1 += 1;
                }
            }
        }
        let mean = |m: BTreeMap<i64, (f64, usize)>| -> Vec<(f64, f64)> {
            m.into_iter()
                .map(|(it, (sum, n))| (it as f64 / 1000.0, sum / n as f64))
                .collect()
        };
        let series = Self {
            name: runs.name.clone(),
            colour_index,
            seeds,
            train: mean(train),
            test: mean(test),
        };
        (!series.train.is_empty() || !series.test.is_empty()).then_some(series)
    }

    fn last_error(&self) -> Option<f64> {
        self.test.last().or(self.train.last()).map(|p| p.1)
    }

    fn max_k(&self) -> f64 {
        self.train
            .iter()
            .chain(&self.test)
            .map(|p| p.0)
            .fold(0.0, f64::max)
    }
}

/// `plots/<exp>/<profile>/curves.{svg,png}`.
pub struct CurvesFigure {
    pub caption: Caption,
    pub series: Vec<CurveSeries>,
}

impl CurvesFigure {
    /// The variants with at least one logged epoch, in file order.
    pub fn new(caption: Caption, results: &ProfileResults) -> Self {
        let series = results
            .variants
            .iter()
            .enumerate()
            .filter_map(|(i, v)| CurveSeries::of(v, i))
            .collect();
        Self { caption, series }
    }

    /// The top of the error axis: 20% as in the papers' figures, higher when the curves end
    /// higher (small profiles), at most 100%.
    pub fn y_max(&self) -> f64 {
        let last = self
            .series
            .iter()
            .filter_map(CurveSeries::last_error)
            .fold(0.0, f64::max);
        ((last * 1.5 / 10.0).ceil() * 10.0).clamp(20.0, 100.0)
    }
}

impl Figure for CurvesFigure {
    fn size(&self) -> (u32, u32) {
        (1100, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let seeds = self.series.iter().map(|s| s.seeds).max().unwrap_or(0);
        let subtitle = format!(
            "{} · profile {} · mean over the seeds logged at each iteration (up to {seeds}) · \
             thin: training error, bold: test error",
            self.caption.data, self.caption.profile
        );
        let body = titled(root, &self.caption.title, &subtitle)?;
        let x_max = self
            .series
            .iter()
            .map(CurveSeries::max_k)
            .fold(0.0, f64::max);
        let x_max = if x_max > 0.0 { x_max * 1.02 } else { 1.0 };
        let y_max = self.y_max();
        let mut chart = ChartBuilder::on(&body)
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("iterations (k)")
            .y_desc("error (%)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for series in &self.series {
            let c = colour(series.colour_index);
            for piece in clip_above(&series.train, y_max) {
                chart
                    .draw_series(LineSeries::new(piece, c.stroke_width(1)))
                    .map_err(plot_err)?;
            }
            let label = format!(
                "{} ({} seed{})",
                series.name,
                series.seeds,
                plural(series.seeds)
            );
            let mut labelled = false;
            for piece in clip_above(&series.test, y_max) {
                let drawn = chart
                    .draw_series(LineSeries::new(piece, c.stroke_width(3)))
                    .map_err(plot_err)?;
                if !labelled {
                    drawn.label(label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                    });
                    labelled = true;
                }
            }
            if !labelled {
                // No evaluated epoch yet (or all clipped): the legend entry still names it.
                chart
                    .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                    .map_err(plot_err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                    });
            }
        }
        for (label, width) in [("training error", 1), ("test error", 3)] {
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], GREY.stroke_width(width))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One variant's final test errors.
#[derive(Debug, Clone)]
pub struct FinalEntry {
    pub name: String,
    pub colour_index: usize,
    pub errors: Vec<f64>,
    pub summary: Option<Summary>,
    pub paper: Option<PaperNumber>,
    pub diverged: usize,
}

/// `plots/<exp>/<profile>/final.{svg,png}`.
pub struct FinalFigure {
    pub caption: Caption,
    pub entries: Vec<FinalEntry>,
    pub fail_above: f64,
}

impl FinalFigure {
    /// Variants with at least one finished seed, in file order.
    pub fn new(caption: Caption, results: &ProfileResults, fail_above: f64) -> Self {
        let entries = results
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.finished().next().is_some())
            .map(|(i, v)| {
                let errors: Vec<f64> = v.runs.iter().filter_map(|r| r.final_test_error()).collect();
                FinalEntry {
                    name: v.name.clone(),
                    colour_index: i,
                    summary: Summary::of(&errors),
                    errors,
                    paper: v.paper,
                    diverged: v.finished().filter(|r| r.diverged()).count(),
                }
            })
            .collect();
        Self {
            caption,
            entries,
            fail_above,
        }
    }

    fn y_max(&self) -> f64 {
        let top = self
            .entries
            .iter()
            .flat_map(|e| {
                let paper = e.paper.and_then(|p| p.error());
                e.errors.iter().copied().chain(paper)
            })
            .fold(self.fail_above, f64::max);
        top * 1.15
    }

    fn label_room(&self) -> u32 {
        let longest = self
            .entries
            .iter()
            .map(|e| e.name.chars().count())
            .max()
            .unwrap_or(4);
        (longest as u32 * 7 + 25).clamp(60, 300)
    }
}

impl Figure for FinalFigure {
    fn size(&self) -> (u32, u32) {
        let width = (self.entries.len() as u32 * 80 + 300).max(900);
        (width, 600 + self.label_room())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let max_seeds = self
            .entries
            .iter()
            .map(|e| e.errors.len())
            .max()
            .unwrap_or(0);
        let subtitle = format!(
            "{} · profile {} · final test error, mean ± std over seeds (up to {max_seeds}) · \
             ▲ paper · dashed: fail above {}%",
            self.caption.data, self.caption.profile, self.fail_above
        );
        let body = titled(root, &self.caption.title, &subtitle)?;
        let n = self.entries.len();
        let y_max = self.y_max();
        let mut chart = ChartBuilder::on(&body)
            .margin(20)
            .x_label_area_size(self.label_room())
            .y_label_area_size(60)
            // plotters' integer ranges include their end: 0..n − 1 is n segments.
            .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            // Variant names are drawn below, rotated: plotters centres rotated axis labels on
            // their tick, across the axis.
            .x_label_formatter(&|_| String::new())
            .label_style((FONT, 15))
            .y_desc("final test error (%)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;

        let threshold = self.fail_above;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (SegmentValue::Exact(0), threshold),
                    (SegmentValue::Last, threshold),
                ],
                8,
                6,
                RED.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?
            .label(format!("fail above {threshold}%"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], RED.mix(0.6)));

        let note_style = (FONT, 13).into_font().color(&BLACK);
        for (i, entry) in self.entries.iter().enumerate() {
            let c = colour(entry.colour_index);
            let x = SegmentValue::CenterOf(i);
            chart
                .draw_series(
                    entry
                        .errors
                        .iter()
                        .map(|&e| Circle::new((x.clone(), e), 4, c.stroke_width(1))),
                )
                .map_err(plot_err)?;
            if let Some(s) = entry.summary {
                let std = s.std.unwrap_or(0.0);
                chart
                    .draw_series([ErrorBar::new_vertical(
                        x.clone(),
                        s.mean - std,
                        s.mean,
                        s.mean + std,
                        c.filled().stroke_width(2),
                        14,
                    )])
                    .map_err(plot_err)?;
            }
            match entry.paper {
                Some(PaperNumber::Error(p)) => {
                    chart
                        .draw_series([TriangleMarker::new((x.clone(), p), 8, BLACK.filled())])
                        .map_err(plot_err)?;
                }
                Some(PaperNumber::Fail(_)) => {
                    chart
                        .draw_series([EmptyElement::at((x.clone(), threshold))
                            + TriangleMarker::new((0, 0), 8, BLACK.filled())
                            + Text::new("paper: fail", (10, -8), note_style.clone())])
                        .map_err(plot_err)?;
                }
                None => {}
            }
            if entry.diverged > 0 {
                let text = format!("{} diverged", entry.diverged);
                chart
                    .draw_series([EmptyElement::at((x.clone(), 0.0))
                        + Text::new(text, (10, -16), note_style.clone())])
                    .map_err(plot_err)?;
            }
        }

        // Variant names, reading upward, each ending just under its tick.
        let name_style = (FONT, 15)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (i, entry) in self.entries.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(SegmentValue::CenterOf(i), 0.0));
            root.draw_text(&entry.name, &name_style, (px, py + 10))
                .map_err(plot_err)?;
        }

        // Legend entries for the marker kinds (grey stands for any variant's colour).
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<usize>, f64), i32>>())
            .map_err(plot_err)?
            .label("mean ± std")
            .legend(|(x, y)| Circle::new((x + 12, y), 6, GREY.filled()));
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<usize>, f64), i32>>())
            .map_err(plot_err)?
            .label("one seed")
            .legend(|(x, y)| Circle::new((x + 12, y), 4, GREY.stroke_width(1)));
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<usize>, f64), i32>>())
            .map_err(plot_err)?
            .label("paper")
            .legend(|(x, y)| TriangleMarker::new((x + 12, y), 8, BLACK.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// `plots/gradients/<profile>/norms.{svg,png}`.
pub struct NormsFigure {
    pub caption: Caption,
    /// (colour index, norms) per variant with a `norms.csv`.
    pub variants: Vec<(usize, VariantNorms)>,
}

impl NormsFigure {
    /// The first (initialisation) and last iteration of a variant, with their points (norms
    /// that are not positive cannot be drawn on a log axis and are left out).
    fn ends(norms: &VariantNorms) -> Vec<(i64, Vec<(f64, f64)>)> {
        let points = |units: &Vec<(u32, f64)>| -> Vec<(f64, f64)> {
            units
                .iter()
                .filter(|(_, v)| *v > 0.0 && v.is_finite())
                .map(|&(u, v)| (f64::from(u), v))
                .collect()
        };
        let mut ends = Vec::new();
        if let Some((&it, units)) = norms.by_iteration.first_key_value() {
            ends.push((it, points(units)));
        }
        if let Some((&it, units)) = norms.by_iteration.last_key_value() {
            if ends.first().is_none_or(|(first, _)| *first != it) {
                ends.push((it, points(units)));
            }
        }
        ends
    }
}

impl Figure for NormsFigure {
    fn size(&self) -> (u32, u32) {
        (1100, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let seeds = self
            .variants
            .iter()
            .map(|(_, v)| v.seeds)
            .max()
            .unwrap_or(0);
        let subtitle = format!(
            "{} · profile {} · ‖∂E/∂x_l‖ per residual unit, mean over {seeds} seed{} · \
             dashed: at initialisation, solid: after training",
            self.caption.data,
            self.caption.profile,
            plural(seeds)
        );
        let body = titled(root, &self.caption.title, &subtitle)?;
        let ends: Vec<_> = self
            .variants
            .iter()
            .map(|(c, v)| (*c, v, Self::ends(v)))
            .collect();
        let all = ends
            .iter()
            .flat_map(|(_, _, e)| e.iter().flat_map(|(_, points)| points.iter()));
        let (mut lo, mut hi, mut units) = (f64::INFINITY, 0.0f64, 1.0f64);
        for &(u, v) in all {
            lo = lo.min(v);
            hi = hi.max(v);
            units = units.max(u);
        }
        if !lo.is_finite() || hi <= 0.0 {
            lo = 0.1;
            hi = 10.0;
        }
        let mut chart = ChartBuilder::on(&body)
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.5..units + 0.5, (lo / 2.0..hi * 2.0).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("residual unit l (input side → output side)")
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-9 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_desc("‖∂E/∂x_l‖")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for (colour_index, norms, ends) in &ends {
            let c = colour(*colour_index);
            let last = ends.last().map_or(0, |(it, _)| *it);
            for (k, (iteration, points)) in ends.iter().enumerate() {
                let solid = ends.len() == 1 || k == ends.len() - 1;
                if solid && *iteration != 0 {
                    chart
                        .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                        .map_err(plot_err)?;
                } else {
                    chart
                        .draw_series(DashedLineSeries::new(
                            points.clone(),
                            6,
                            5,
                            c.stroke_width(2),
                        ))
                        .map_err(plot_err)?;
                }
            }
            let label = format!(
                "{} (after {last} it., {} seed{})",
                norms.name,
                norms.seeds,
                plural(norms.seeds)
            );
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// Writes the curves and final-error figures of a profile into `dir`, skipping those with
/// nothing to show. Returns the files written.
pub fn write_training_figures(
    dir: &Path,
    caption: &Caption,
    results: &ProfileResults,
    fail_above: f64,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let curves = CurvesFigure::new(caption.clone(), results);
    if !curves.series.is_empty() {
        written.extend(write_figure(&curves, dir, "curves")?);
    }
    let finals = FinalFigure::new(caption.clone(), results, fail_above);
    if !finals.entries.is_empty() {
        written.extend(write_figure(&finals, dir, "final")?);
    }
    Ok(written)
}

/// Writes `norms.{svg,png}` into `dir` when any variant has norms.
pub fn write_norms_figure(
    dir: &Path,
    caption: &Caption,
    norms: Vec<(usize, VariantNorms)>,
) -> Result<Vec<PathBuf>> {
    if norms.is_empty() {
        return Ok(Vec::new());
    }
    let figure = NormsFigure {
        caption: caption.clone(),
        variants: norms,
    };
    write_figure(&figure, dir, "norms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_cuts_at_the_ceiling_and_interpolates() {
        // (0, 90) → (1, 10) crosses y = 20 at x = 70/80 = 0.875.
        let pieces = clip_above(&[(0.0, 90.0), (1.0, 10.0), (2.0, 5.0)], 20.0);
        assert_eq!(pieces.len(), 1);
        assert!((pieces[0][0].0 - 0.875).abs() < 1e-12);
        assert_eq!(pieces[0][0].1, 20.0);
        assert_eq!(&pieces[0][1..], &[(1.0, 10.0), (2.0, 5.0)]);
        // Leaving and coming back gives two pieces.
        let pieces = clip_above(&[(0.0, 10.0), (1.0, 30.0), (2.0, 10.0)], 20.0);
        assert_eq!(
            pieces,
            vec![
                vec![(0.0, 10.0), (0.5, 20.0)],
                vec![(1.5, 20.0), (2.0, 10.0)]
            ]
        );
        assert!(clip_above(&[(0.0, 50.0), (1.0, 60.0)], 20.0).is_empty());
    }

    #[test]
    fn colours_are_distinct_for_a_table_of_twelve() {
        let colours: Vec<_> = (0..12).map(colour).collect();
        for (i, a) in colours.iter().enumerate() {
            assert!(colours[i + 1..].iter().all(|b| b != a));
        }
    }
}
