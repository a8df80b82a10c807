//! Figures, each written as SVG and PNG:
//! - `curves`: training curves in the papers' style (He et al. 2015 Fig. 6; Identity
//!   Mappings Fig. 4): thin = training error, bold = test error, error (%) against
//!   iterations; one colour per variant, or, where the experiment has plain nets, two panels
//!   as in He 2015 Fig. 6 (plain nets left, ResNets right, one colour per depth);
//! - `final`: final test error per variant, each seed and the mean with its 95% interval,
//!   and beside them the paper's number (its `"fail"` marked at the top edge; a paper's mean
//!   ± std as a bar, with its best run and the numbers written out), diverged seeds marked
//!   with their iteration along the top, in the curves' colours, with a legend column;
//! - `norms`: ‖∂E/∂x_l‖ against the residual unit l on a log axis (the `gradients` study),
//!   one panel per depth, dashed at initialisation and solid after training.
//!
//! Text is drawn with DejaVu Sans compiled into the binary, so PNGs render on a machine with
//! no fonts installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::FontRef;
use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::element::{DashedPathElement, ErrorBarOrientV};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

use crate::png::PngBackend;
use crate::results::{GradientResults, ProfileResults, VariantGradients, VariantRuns};
use crate::stats::Summary;
use spec::PaperNumber;

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

/// White background, the caption's bold title and a grey subtitle; returns the area below
/// them.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    caption: &Caption,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>> {
    titled_lines(root, &caption.title, &[subtitle])
}

/// Width of `title` in the bold title font, pixels (fonts registered); 13 px a character
/// where the font cannot measure it.
fn title_width(title: &str) -> u32 {
    // plotters' measure falls short of the text as drawn in the SVG and the PNG rendered
    // from it (seen: the activations title measured 782 px and ran past 880), so it is
    // scaled by 1.17.
    (FONT, TITLE_SIZE)
        .into_font()
        .style(FontStyle::Bold)
        .box_size(title)
        .map_or(13 * title.chars().count() as u32, |(w, _)| {
            (f64::from(w) * 1.17).ceil() as u32
        })
}

/// The title's font size, pixels.
const TITLE_SIZE: u32 = 22;

/// Height of the title band with a two-line subtitle, pixels.
const TITLE_HEIGHT_TWO_LINES: u32 = 42 + 2 * 22;

/// White background, a bold title and grey subtitle lines (22 px apart); returns the area
/// below them (64 px down for one line).
fn titled_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &[impl AsRef<str>],
) -> Result<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, body) = root.split_vertically(42 + 22 * subtitle.len() as u32);
    let bold = (FONT, TITLE_SIZE)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK);
    top.draw_text(title, &bold, (20, 10)).map_err(plot_err)?;
    let plain = (FONT, 15).into_font().color(&GREY);
    for (i, line) in subtitle.iter().enumerate() {
        top.draw_text(line.as_ref(), &plain, (20, 40 + 22 * i as i32))
            .map_err(plot_err)?;
    }
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

/// A dot for a curve of one point (a run with one epoch so far), which a line cannot show.
fn lone_point(piece: &[(f64, f64)], radius: i32, c: RGBColor) -> Option<Circle<(f64, f64), i32>> {
    match piece {
        [point] => Some(Circle::new(*point, radius, c.filled())),
        _ => None,
    }
}

/// Splits a polyline where it leaves `y ≤ y_max`, adding the crossing points, so that a
/// curve that starts above the axis (early training error) is cut at the frame instead of
/// being drawn across the title. A curve of one point inside the axes is one piece of one
/// point.
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
    if !current.is_empty() {
        pieces.push(current);
    }
    // A piece of one point is a whole curve of one point (any other piece inside the axes
    // has a neighbour or a crossing): kept, and drawn as a dot.
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
    /// (iterations in thousands, lowest, highest test error %) over the seeds, where two or
    /// more logged one.
    pub test_band: Vec<(f64, f64, f64)>,
}

impl CurveSeries {
    /// Means over the seeds of `runs` at each iteration logged (running seeds included),
    /// named `label`.
    pub fn of(runs: &VariantRuns, label: &str, colour_index: usize) -> Option<Self> {
        let mut train: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        let mut test: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        let mut band: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
        let mut seeds = 0;
        for run in runs.runs.iter().filter(|r| !r.epochs.is_empty()) {
            seeds += 1;
            for row in &run.epochs {
                if let Some(e) = Some(row.train_error).filter(|e| e.is_finite()) {
                    let t = train.entry(row.iteration).or_default();
                    t.0 += e;
                    t.1 += 1;
                }
                if let Some(e) = row.test_error.filter(|e| e.is_finite()) {
                    let t = test.entry(row.iteration).or_default();
                    t.0 += e;
                    t.1 += 1;
                    let b = band.entry(row.iteration).or_insert((e, e));
                    *b = (b.0.min(e), b.1.max(e));
                }
            }
        }
        let mean = |m: BTreeMap<i64, (f64, usize)>| -> Vec<(f64, f64)> {
            m.into_iter()
                .map(|(it, (sum, n))| (it as f64 / 1000.0, sum / n as f64))
                .collect()
        };
        let test_band = band
            .into_iter()
            .filter(|(it, _)| test.get(it).is_some_and(|t| t.1 >= 2))
            .map(|(it, (low, high))| (it as f64 / 1000.0, low, high))
            .collect();
        let series = Self {
            name: label.to_string(),
            colour_index,
            seeds,
            train: mean(train),
            test: mean(test),
            test_band,
        };
        (!series.train.is_empty() || !series.test.is_empty()).then_some(series)
    }

    /// The errors plotted past the first epoch and past `after_k` thousand iterations (the
    /// last point when none is).
    fn settled(&self, after_k: f64) -> Vec<f64> {
        let first = self
            .train
            .iter()
            .chain(&self.test)
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min);
        let later: Vec<f64> = self
            .train
            .iter()
            .chain(&self.test)
            .filter(|p| p.0 > first && p.0 > after_k)
            .map(|p| p.1)
            .collect();
        if later.is_empty() {
            self.last_error().into_iter().collect()
        } else {
            later
        }
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

/// What the figures need to know of a variant's network for their layout and colours (from
/// the experiment file, as the profile resolves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantNet {
    /// What the figures call the variant: its name, less a depth prefix (`110-`) that is not
    /// the depth the profile trains.
    pub label: String,
    /// `shortcut = "plain"`: no shortcuts at all.
    pub plain: bool,
    /// Weighted layers.
    pub depth: usize,
}

/// Curves drawn on one pair of axes.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePanel {
    /// `plain networks`, `ResNets`; `None` for the one panel of a figure without plain nets.
    pub title: Option<String>,
    pub series: Vec<CurveSeries>,
}

/// `plots/<exp>/<profile>/curves.{svg,png}`: one panel with every variant, or, for an
/// experiment with plain nets, He et al. 2015 Fig. 6's layout: plain nets left, ResNets right
/// on the same axes, one colour per depth in both.
pub struct CurvesFigure {
    pub caption: Caption,
    pub panels: Vec<CurvePanel>,
    /// The iterations at which the profile's learning rate drops.
    pub lr_drops: Vec<i64>,
}

/// Width of one panel of the plain-vs-ResNet figure, pixels.
const CURVE_PANEL_WIDTH: u32 = 700;

impl CurvesFigure {
    /// The variants with at least one logged epoch, in file order. `nets` (one per variant
    /// of `results`, in its order) decides the layout: with any plain net among them, two
    /// panels; without, one.
    pub fn new(
        caption: Caption,
        results: &ProfileResults,
        nets: &[VariantNet],
        lr_drops: &[i64],
    ) -> Self {
        let lr_drops = lr_drops.to_vec();
        let plain = |i: usize| nets.get(i).is_some_and(|n| n.plain);
        let label =
            |i: usize, v: &VariantRuns| nets.get(i).map_or(v.name.clone(), |n| n.label.clone());
        if !has_plain(nets) {
            let series = results
                .variants
                .iter()
                .enumerate()
                .filter_map(|(i, v)| CurveSeries::of(v, &label(i, v), i))
                .collect();
            let panels = vec![CurvePanel {
                title: None,
                series,
            }];
            return Self {
                caption,
                panels,
                lr_drops,
            };
        }
        let colours = variant_colours(nets);
        let panel = |title: &str, want_plain: bool| CurvePanel {
            title: Some(title.to_string()),
            series: results
                .variants
                .iter()
                .enumerate()
                .filter(|&(i, _)| plain(i) == want_plain)
                .filter_map(|(i, v)| CurveSeries::of(v, &label(i, v), colours[i]))
                .collect(),
        };
        let panels = vec![panel("plain networks", true), panel("ResNets", false)];
        Self {
            caption,
            panels,
            lr_drops,
        }
    }

    fn series(&self) -> impl Iterator<Item = &CurveSeries> {
        self.panels.iter().flat_map(|p| p.series.iter())
    }

    /// True when nothing has been logged yet.
    pub fn is_empty(&self) -> bool {
        self.series().next().is_none()
    }

    /// True for He 2015 Fig. 6's layout, plain nets beside ResNets.
    pub fn is_plain_vs_residual(&self) -> bool {
        self.panels.len() > 1
    }

    /// The end of the iteration axis (thousands), shared by the panels.
    fn x_max(&self) -> f64 {
        let x_max = self.series().map(CurveSeries::max_k).fold(0.0, f64::max);
        if x_max > 0.0 {
            x_max * 1.02
        } else {
            1.0
        }
    }

    /// The top of the error axis, shared by the panels. One panel: 20% as in the papers'
    /// figures, higher when the curves end higher (small profiles), at most 100%. Plain nets
    /// beside ResNets: the next multiple of 10% above every error plotted after the first
    /// epoch and the first tenth of training (where the curves start high and fall fast;
    /// they enter from above the frame, as in He 2015 Fig. 6), from 20% to 100%.
    pub fn y_max(&self) -> f64 {
        if self.is_plain_vs_residual() {
            let x_max = self.series().map(CurveSeries::max_k).fold(0.0, f64::max);
            let top = self
                .series()
                .flat_map(|s| s.settled(x_max / 10.0))
                .fold(0.0, f64::max);
            return (((top + 1.0) / 10.0).ceil() * 10.0).clamp(20.0, 100.0);
        }
        let last = self
            .series()
            .filter_map(CurveSeries::last_error)
            .fold(0.0, f64::max);
        ((last * 1.5 / 10.0).ceil() * 10.0).clamp(20.0, 100.0)
    }

    /// One panel's axes, curves and legend.
    fn draw_panel<DB: DrawingBackend>(
        &self,
        panel: &CurvePanel,
        area: &DrawingArea<DB, Shift>,
        (x_max, y_max): (f64, f64),
    ) -> Result<()> {
        let mut builder = ChartBuilder::on(area);
        if let Some(title) = &panel.title {
            builder.caption(title, (FONT, 18).into_font().style(FontStyle::Bold));
        }
        let mut chart = builder
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
        if panel.series.is_empty() {
            // none of this panel's nets has an epoch yet (the sweep trains the other first)
            let style = (FONT, 16)
                .into_font()
                .color(&GREY)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series([Text::new(
                    "no run has logged an epoch yet",
                    (x_max / 2.0, y_max / 2.0),
                    style,
                )])
                .map_err(plot_err)?;
        }
        let (dash, gap) = LR_DROP_DASH;
        for &drop in &self.lr_drops {
            let k = drop as f64 / 1000.0;
            if k < x_max {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(k, 0.0), (k, y_max)],
                        dash,
                        gap,
                        lr_drop_style(),
                    ))
                    .map_err(plot_err)?;
            }
        }
        // the spread over seeds under the curves
        for series in &panel.series {
            if series.test_band.len() < 2 {
                continue;
            }
            let c = colour(series.colour_index);
            let upper = series
                .test_band
                .iter()
                .map(|&(k, _, high)| (k, high.min(y_max)));
            let lower = series
                .test_band
                .iter()
                .rev()
                .map(|&(k, low, _)| (k, low.min(y_max)));
            chart
                .draw_series([Polygon::new(
                    upper.chain(lower).collect::<Vec<_>>(),
                    band_style(c),
                )])
                .map_err(plot_err)?;
        }
        for series in &panel.series {
            let c = colour(series.colour_index);
            for piece in clip_above(&series.train, y_max) {
                chart
                    .draw_series(lone_point(&piece, 2, c))
                    .map_err(plot_err)?;
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
                chart
                    .draw_series(lone_point(&piece, 4, c))
                    .map_err(plot_err)?;
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
        if panel.series.iter().any(|s| s.test_band.len() >= 2) {
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(plot_err)?
                .label("test error, lowest to highest seed")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 24, y + 5)], band_style(GREY)));
        }
        if self.lr_drops.iter().any(|&d| (d as f64 / 1000.0) < x_max) {
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(plot_err)?
                .label("learning rate divided")
                .legend(move |(x, y)| {
                    DashedPathElement::new(
                        vec![(x + 12, y - 8), (x + 12, y + 8)],
                        dash,
                        gap,
                        lr_drop_style(),
                    )
                });
        }
        // One panel of many variants (shortcuts, activations): their legend is tall, and in
        // the upper right it would cover the ends of the worst curves. Error falls as training
        // goes on, so the lower left (early and low) is where no curve goes. Plain nets beside
        // ResNets list few entries, above curves that end low.
        let corner = if self.is_plain_vs_residual() {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerLeft
        };
        draw_legend(&mut chart, corner)
    }
}

/// Dash and gap of the lines at the learning-rate drops, pixels (chart and legend).
const LR_DROP_DASH: (u32, u32) = (4, 4);

fn lr_drop_style() -> ShapeStyle {
    GREY.mix(0.7).stroke_width(1)
}

/// The fill of a curve's spread over seeds, in its colour.
fn band_style(c: RGBColor) -> ShapeStyle {
    c.mix(0.18).filled()
}

/// True when the variants include a plain net: He 2015 Fig. 6's comparison.
fn has_plain(nets: &[VariantNet]) -> bool {
    nets.iter().any(|n| n.plain)
}

/// The colour index of each variant (`nets` in file order): with plain nets among them, by
/// depth (the shallowest first), so that plain-20 and ResNet-20 share one, unless plain nets
/// or ResNets hold two nets of one depth; else by the variant's place in the file.
pub fn variant_colours(nets: &[VariantNet]) -> Vec<usize> {
    if !has_plain(nets) {
        return (0..nets.len()).collect();
    }
    let mut depths: Vec<usize> = nets.iter().map(|n| n.depth).collect();
    depths.sort_unstable();
    depths.dedup();
    let mut seen = std::collections::HashSet::new();
    let unique = nets.iter().all(|n| seen.insert((n.plain, n.depth)));
    nets.iter()
        .enumerate()
        .map(|(i, n)| match depths.binary_search(&n.depth) {
            Ok(rank) if unique => rank,
            _ => i,
        })
        .collect()
}

impl Figure for CurvesFigure {
    fn size(&self) -> (u32, u32) {
        let width = if self.is_plain_vs_residual() {
            CURVE_PANEL_WIDTH * self.panels.len() as u32
        } else {
            1100
        };
        (width.max(title_width(&self.caption.title) + 40), 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let seeds = self.series().map(|s| s.seeds).max().unwrap_or(0);
        let mut subtitle = format!(
            "{} · profile {} · mean over the seeds logged at each iteration (up to {seeds}) · \
             thin: training error, bold: test error",
            self.caption.data, self.caption.profile
        );
        if self.is_plain_vs_residual() {
            subtitle.push_str(" · one colour per depth");
        }
        let body = titled(root, &self.caption, &subtitle)?;
        let axes = (self.x_max(), self.y_max());
        let areas = body.split_evenly((1, self.panels.len().max(1)));
        for (panel, area) in self.panels.iter().zip(&areas) {
            self.draw_panel(panel, area, axes)?;
        }
        Ok(())
    }
}

/// The series' legend, boxed on a translucent white, as every figure draws it.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .label_font((FONT, 14))
        .draw()
        .map_err(plot_err)
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
    /// The iteration at which each diverged seed's loss stopped being finite, ascending.
    pub diverged_at: Vec<i64>,
}

/// `plots/<exp>/<profile>/final.{svg,png}`.
pub struct FinalFigure {
    pub caption: Caption,
    pub entries: Vec<FinalEntry>,
    pub fail_above: f64,
}

impl FinalFigure {
    /// Variants with at least one finished seed, in file order, coloured as in the curves
    /// figure (`nets`: see [`variant_colours`]).
    pub fn new(
        caption: Caption,
        results: &ProfileResults,
        nets: &[VariantNet],
        fail_above: f64,
    ) -> Self {
        let colours = variant_colours(nets);
        let entries = results
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.finished().next().is_some())
            .map(|(i, v)| {
                let errors: Vec<f64> = v.runs.iter().filter_map(|r| r.final_test_error()).collect();
                let mut diverged_at: Vec<i64> = v
                    .finished()
                    .filter(|r| r.diverged())
                    .map(|r| r.diverged_at_iteration.unwrap_or(r.iterations))
                    .collect();
                diverged_at.sort_unstable();
                FinalEntry {
                    name: nets.get(i).map_or(v.name.clone(), |n| n.label.clone()),
                    colour_index: colours.get(i).copied().unwrap_or(i),
                    summary: Summary::of(&errors),
                    errors,
                    paper: v.paper,
                    diverged_at,
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
                let paper = e.paper.map(paper_top);
                let interval = e.summary.and_then(|s| s.mean_interval(MEAN_LEVEL));
                e.errors
                    .iter()
                    .copied()
                    .chain(paper.flatten())
                    .chain(interval.map(|(_, high)| high))
            })
            .fold(self.fail_above, f64::max);
        // room above the highest point for the marks along the top edge (the paper's "fail",
        // diverged seeds and their iterations)
        top * 1.35
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

/// The confidence level of the final-error chart's bars.
const MEAN_LEVEL: f64 = 0.95;
/// Width of the final-error chart's legend column, right of the chart.
const FINAL_LEGEND_WIDTH: u32 = 270;
/// Dash and gap of our fail threshold's line, pixels (the chart and its legend).
const THRESHOLD_DASH: (u32, u32) = (8, 6);

fn threshold_style() -> ShapeStyle {
    RED.mix(0.6).stroke_width(1)
}

impl Figure for FinalFigure {
    fn size(&self) -> (u32, u32) {
        let width = (self.entries.len() as u32 * 80 + 300 + FINAL_LEGEND_WIDTH)
            .max(900)
            .max(title_width(&self.caption.title) + 40);
        (width, 600 + self.label_room())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let max_seeds = self
            .entries
            .iter()
            .map(|e| e.errors.len())
            .max()
            .unwrap_or(0);
        // Where no variant has two seeds yet, each variant's one error is the filled marker
        // and nothing claims a mean; otherwise hollow circles are seeds, filled ones means.
        let means = max_seeds >= 2;
        let what = if means {
            format!("each seed, and the mean with its 95% interval (up to {max_seeds} seeds)")
        } else {
            "one seed each".to_string()
        };
        let subtitle = format!(
            "{} · profile {} · final test error, {what}",
            self.caption.data, self.caption.profile
        );
        let body = titled(root, &self.caption, &subtitle)?;
        let (width, _) = body.dim_in_pixel();
        let (plot, legend) = body.split_horizontally(width.saturating_sub(FINAL_LEGEND_WIDTH));
        let n = self.entries.len();
        let y_max = self.y_max();
        let mut chart = ChartBuilder::on(&plot)
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

        let (dash, gap) = THRESHOLD_DASH;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (SegmentValue::Exact(0), self.fail_above),
                    (SegmentValue::Last, self.fail_above),
                ],
                dash,
                gap,
                threshold_style(),
            ))
            .map_err(plot_err)?;

        for (i, entry) in self.entries.iter().enumerate() {
            let c = colour(entry.colour_index);
            let x = SegmentValue::CenterOf(i);
            let seed_style = seed_marker(means, c);
            let interval = entry
                .summary
                .and_then(|s| Some((s, s.mean_interval(MEAN_LEVEL)?)));
            let px = |error: f64| chart.backend_coord(&(x.clone(), error));
            if let Some((s, (low, high))) = interval {
                let (cx, mean) = px(s.mean);
                root.draw(&mean_bar(cx, (px(low).1, mean, px(high).1), c))
                    .map_err(plot_err)?;
            }
            // beside a mean's bar, the seeds left of it, so that it hides none
            let shift = if interval.is_some() { SEED_OFFSET } else { 0 };
            for &e in &entry.errors {
                let (sx, sy) = px(e);
                root.draw(&Circle::new((sx - shift, sy), seed_style.0, seed_style.1))
                    .map_err(plot_err)?;
            }
            // the top edge of the chart in this column
            let (cx, top) = chart.backend_coord(&(x.clone(), y_max));
            if let Some(paper) = entry.paper {
                // beside ours, so that neither hides the other
                let at = |error: f64| {
                    let (px, py) = chart.backend_coord(&(x.clone(), error));
                    (px + PAPER_OFFSET, py)
                };
                draw_paper(root, paper, y_max, at)?;
            }
            if !entry.diverged_at.is_empty() {
                draw_diverged(root, (cx, top), c, &entry.diverged_at)?;
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
        self.draw_legend(&legend, means)
    }
}

impl FinalFigure {
    /// The legend column: every kind of mark the chart draws, drawn by the same code (grey
    /// stands for any variant's colour).
    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        means: bool,
    ) -> Result<()> {
        let text = (FONT, 14).into_font().color(&BLACK);
        let note = (FONT, 12).into_font().color(&GREY);
        let mark_x = 22;
        let mut y = 70;
        let mut entry =
            |label: &str, detail: Option<&str>, draw: &dyn Fn((i32, i32)) -> Result<()>| {
                draw((mark_x, y))?;
                area.draw_text(
                    label,
                    &text.clone().pos(Pos::new(HPos::Left, VPos::Center)),
                    (48, y),
                )
                .map_err(plot_err)?;
                if let Some(detail) = detail {
                    area.draw_text(detail, &note, (48, y + 10))
                        .map_err(plot_err)?;
                    y += 14;
                }
                y += 30;
                Ok::<(), anyhow::Error>(())
            };
        let seed = seed_marker(means, GREY);
        entry("one seed", None, &|at| {
            area.draw(&Circle::new(at, seed.0, seed.1))
                .map_err(plot_err)
        })?;
        if means {
            entry(
                "mean, 95% interval",
                Some("Student's t, n ≥ 2 seeds"),
                &|(x, y)| {
                    area.draw(&mean_bar(x, (y + 12, y, y - 12), GREY))
                        .map_err(plot_err)
                },
            )?;
        }
        let (dash, gap) = THRESHOLD_DASH;
        let threshold = format!("ours: fail above {}%", self.fail_above);
        entry(&threshold, None, &|(x, y)| {
            area.draw(&DashedPathElement::new(
                vec![(x - 16, y), (x + 16, y)],
                dash,
                gap,
                threshold_style(),
            ))
            .map_err(plot_err)
        })?;
        if self.entries.iter().any(|e| !e.diverged_at.is_empty()) {
            entry(
                "a seed that diverged",
                Some("along the top, with its iteration"),
                &|at| draw_cross(area, at, GREY),
            )?;
        }
        let papers: Vec<PaperNumber> = self.entries.iter().filter_map(|e| e.paper).collect();
        if papers.iter().any(|p| p.error().is_some()) {
            entry("paper", None, &|at| {
                area.draw(&TriangleMarker::new(at, 8, BLACK.filled()))
                    .map_err(plot_err)
            })?;
        }
        if papers.iter().any(PaperNumber::is_fail) {
            entry(
                "paper: fail",
                Some("above 20% after full training; at the top"),
                &|at| draw_paper_fail(area, at),
            )?;
        }
        if papers.iter().any(|p| p.runs().is_some()) {
            entry("paper: mean ± std of its runs", None, &|(x, y)| {
                for path in [
                    vec![(x, y - 7), (x, y + 7)],
                    vec![(x - 6, y - 7), (x + 6, y - 7)],
                    vec![(x - 6, y + 7), (x + 6, y + 7)],
                ] {
                    area.draw(&PathElement::new(path, BLACK.stroke_width(2)))
                        .map_err(plot_err)?;
                }
                area.draw(&TriangleMarker::new((x, y), 5, BLACK.filled()))
                    .map_err(plot_err)
            })?;
        }
        if papers
            .iter()
            .any(|p| p.runs().is_some_and(|r| r.best.is_some()))
        {
            entry("paper: its best run", None, &|(x, y)| {
                area.draw(&open_triangle((x, y + 1), 6)).map_err(plot_err)
            })?;
        }
        Ok(())
    }
}

/// A mean (filled circle at `mean`) with its interval from `low` to `high` (pixels), in
/// `colour`.
fn mean_bar(
    x: i32,
    (low, mean, high): (i32, i32, i32),
    colour: RGBColor,
) -> ErrorBar<i32, i32, ErrorBarOrientV<i32, i32>> {
    ErrorBar::new_vertical(
        x,
        low,
        mean,
        high,
        colour.filled().stroke_width(2),
        2 * MEAN_RADIUS,
    )
}

/// An ✕ of diverged seeds centred at `at`, in `colour`.
fn draw_cross<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    colour: RGBColor,
) -> Result<()> {
    let r = 6;
    for path in [
        vec![(x - r, y - r), (x + r, y + r)],
        vec![(x - r, y + r), (x + r, y - r)],
    ] {
        area.draw(&PathElement::new(path, colour.stroke_width(3)))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A variant's diverged seeds, in its column along the top edge (`top`: that point): an ✕
/// and, reading downward, where they diverged ("diverged at it. 838").
fn draw_diverged<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (x, top): (i32, i32),
    colour: RGBColor,
    at: &[i64],
) -> Result<()> {
    draw_cross(root, (x, top + 10), colour)?;
    let iterations: Vec<String> = at.iter().map(i64::to_string).collect();
    let text = if at.len() == 1 {
        format!("diverged at it. {}", iterations[0])
    } else {
        format!("{} diverged, at it. {}", at.len(), iterations.join(", "))
    };
    let style = (FONT, 12)
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    root.draw_text(&text, &style, (x, top + 22))
        .map_err(plot_err)
}

/// The paper's "fail" (a test error above 20% after full training, a number it does not
/// give): a triangle with "fail" under it, at `at` (the top edge of the chart, never on our
/// own threshold).
fn draw_paper_fail<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
) -> Result<()> {
    area.draw(&TriangleMarker::new((x, y), 8, BLACK.filled()))
        .map_err(plot_err)?;
    let style = (FONT, 12)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text("fail", &style, (x, y + 8)).map_err(plot_err)
}

/// Radius of the filled marker on the final-error chart: a mean, or the one error of each
/// variant where none has two seeds.
const MEAN_RADIUS: u32 = 7;
/// Radius of a hollow circle at one seed's error beside a mean.
const SEED_RADIUS: u32 = 4;

/// Radius and style of one seed's marker in `colour`: a hollow circle beside means, the
/// filled marker where no variant has two seeds (`means` false).
fn seed_marker(means: bool, colour: RGBColor) -> (u32, ShapeStyle) {
    if means {
        (SEED_RADIUS, colour.stroke_width(1))
    } else {
        (MEAN_RADIUS, colour.filled())
    }
}

/// Pixels left of a mean's bar where its seeds are drawn.
const SEED_OFFSET: i32 = 14;

/// Pixels right of a variant's own markers where the paper's are drawn.
const PAPER_OFFSET: i32 = 18;

/// The highest error a paper number puts on the final-error axis.
fn paper_top(paper: PaperNumber) -> Option<f64> {
    match paper {
        PaperNumber::Error(e) => Some(e),
        PaperNumber::Runs(runs) => Some(runs.mean + runs.std),
        PaperNumber::Fail(_) => None,
    }
}

/// The paper's number of one variant in black, at the pixels `at` gives for an error: a
/// triangle at its test error; for `"fail"`, a labelled triangle at the top edge (`y_max`:
/// the top of the axis); for mean ± std, a bar from mean − std to mean + std with a small
/// triangle at the mean, an open triangle at the best run beside it, and the numbers.
fn draw_paper<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    paper: PaperNumber,
    y_max: f64,
    at: impl Fn(f64) -> (i32, i32),
) -> Result<()> {
    match paper {
        PaperNumber::Error(e) => root
            .draw(&TriangleMarker::new(at(e), 8, BLACK.filled()))
            .map_err(plot_err),
        PaperNumber::Fail(_) => {
            let (px, top) = at(y_max);
            draw_paper_fail(root, (px, top + 10))
        }
        PaperNumber::Runs(runs) => {
            let (px, low) = at(runs.mean - runs.std);
            let (_, high) = at(runs.mean + runs.std);
            let line = BLACK.stroke_width(2);
            for path in [
                vec![(px, low), (px, high)],
                vec![(px - 6, low), (px + 6, low)],
                vec![(px - 6, high), (px + 6, high)],
            ] {
                root.draw(&PathElement::new(path, line)).map_err(plot_err)?;
            }
            root.draw(&TriangleMarker::new(at(runs.mean), 5, BLACK.filled()))
                .map_err(plot_err)?;
            if let Some(best) = runs.best {
                let (_, py) = at(best);
                root.draw(&open_triangle((px + BEST_OFFSET, py), 6))
                    .map_err(plot_err)?;
            }
            // The numbers, reading upward from above the bar (a spread of a few tenths of a
            // percent is a few pixels), or downward from below it where the top is too near.
            let mut label = format!("paper {:.2} ± {:.2}", runs.mean, runs.std);
            if let Some(best) = runs.best {
                label.push_str(&format!(", best {best:.2}"));
            }
            let (_, top) = at(y_max);
            let style = (FONT, 12)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&BLACK);
            let (length, _) = root.estimate_text_size(&label, &style).map_err(plot_err)?;
            let above = high - 10 - top >= length as i32;
            let (anchor, y) = if above {
                (HPos::Left, high - 10)
            } else {
                (HPos::Right, low + 10)
            };
            root.draw_text(&label, &style.pos(Pos::new(anchor, VPos::Center)), (px, y))
                .map_err(plot_err)
        }
    }
}

/// Pixels right of the paper's bar where its best run is marked.
const BEST_OFFSET: i32 = 12;

/// An upward triangle's outline of `size` (centre to corner), pixels.
fn open_triangle((x, y): (i32, i32), size: i32) -> PathElement<(i32, i32)> {
    // corners at 90°, 210° and 330°: the top, then bottom left and bottom right
    let half = (f64::from(size) * 0.866).round() as i32;
    let low = size / 2;
    PathElement::new(
        vec![
            (x, y - size),
            (x - half, y + low),
            (x + half, y + low),
            (x, y - size),
        ],
        BLACK.stroke_width(1),
    )
}

/// One variant's ‖∂E/∂x_l‖ against l, as drawn: positive norms only (a log axis cannot show
/// 0; float32 gradients of λ-scaled nets underflow to 0 near the input of deep nets).
#[derive(Debug, Clone, PartialEq)]
pub struct NormCurve {
    pub name: String,
    pub colour_index: usize,
    pub seeds: usize,
    /// Weighted layers, from `provenance.json`.
    pub depth: Option<usize>,
    /// L, the number of residual units.
    pub units: u32,
    /// (l, ‖∂E/∂x_l‖) at initialisation.
    pub init: Vec<(f64, f64)>,
    /// The iteration of the second measurement and its points.
    pub trained: Option<(i64, Vec<(f64, f64)>)>,
    /// Units left out because their norm is 0, at either measurement (the larger count).
    pub zero_units: usize,
    /// Units left out because their norm overflowed float32 (inf or NaN), at initialisation
    /// and at the second measurement: marked along the top edge.
    pub overflowed: (Vec<u32>, Vec<u32>),
}

impl NormCurve {
    /// The curve of a measured variant; `None` when it has no norms.
    pub fn of(variant: &VariantGradients, colour_index: usize) -> Option<Self> {
        let norms = variant.norms.as_ref()?;
        let units = norms
            .by_iteration
            .values()
            .filter_map(|u| u.last().map(|&(l, _)| l))
            .max()?;
        let mut zero_units = 0;
        let mut points = |units: &Vec<(u32, f64)>| -> Vec<(f64, f64)> {
            zero_units = zero_units.max(units.iter().filter(|(_, v)| *v <= 0.0).count());
            units
                .iter()
                .filter(|(_, v)| *v > 0.0 && v.is_finite())
                .map(|&(l, v)| (f64::from(l), v))
                .collect()
        };
        let init = norms
            .by_iteration
            .get(&0)
            .map(&mut points)
            .unwrap_or_default();
        let trained = norms
            .by_iteration
            .iter()
            .next_back()
            .filter(|(&it, _)| it != 0)
            .map(|(&it, u)| (it, points(u)));
        let overflowed_at = |it: Option<i64>| {
            it.and_then(|it| norms.overflowed.get(&it))
                .cloned()
                .unwrap_or_default()
        };
        let overflowed = (
            overflowed_at(Some(0)),
            overflowed_at(trained.as_ref().map(|(it, _)| *it)),
        );
        Some(Self {
            name: norms.name.clone(),
            colour_index,
            seeds: norms.seeds,
            depth: variant.record.as_ref().map(|r| r.model.depth),
            units,
            init,
            trained,
            zero_units,
            overflowed,
        })
    }

    /// log10(max / min) of its norms, both measurements.
    fn decades(&self) -> f64 {
        let (lo, hi) = self
            .points()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        if hi > 0.0 && lo.is_finite() {
            (hi / lo).log10()
        } else {
            0.0
        }
    }

    /// Units (ascending) as runs of consecutive units, (first, last).
    fn runs(units: &[u32]) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &u in units {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == u => *last = u,
                _ => runs.push((u, u)),
            }
        }
        runs
    }

    fn iterations(&self) -> Option<i64> {
        self.trained.as_ref().map(|(it, _)| *it)
    }

    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.init
            .iter()
            .chain(self.trained.iter().flat_map(|(_, p)| p.iter()))
    }
}

/// The one value all items share, if they share one.
fn common<T: PartialEq + Copy>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.all(|x| x == first).then_some(first)
}

/// Curves of nets with the same number of units L, drawn in one panel.
#[derive(Debug, Clone)]
pub struct NormPanel {
    pub units: u32,
    pub curves: Vec<NormCurve>,
    /// A second panel of the same nets: the curves that span few decades, on their own axis,
    /// where the others' dozens of decades would flatten them.
    pub zoomed: bool,
}

impl NormPanel {
    /// `ResNet-110: L = 54 residual units · solid after 200 iterations`.
    pub fn heading(&self) -> String {
        let mut heading = match common(self.curves.iter().map(|c| c.depth)).flatten() {
            Some(depth) => format!("ResNet-{depth}: L = {} residual units", self.units),
            None => format!("L = {} residual units", self.units),
        };
        if let Some(it) = common(self.curves.iter().map(NormCurve::iterations)).flatten() {
            heading.push_str(&format!(" · solid after {it} iterations"));
        }
        if self.zoomed {
            heading.push_str(" · the flatter curves on their own scale");
        }
        heading
    }

    /// The log axis covering the positive norms of the panel.
    pub fn axis(&self) -> DecadeAxis {
        let (lo, hi) = self
            .curves
            .iter()
            .flat_map(NormCurve::points)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        if !lo.is_finite() || hi <= 0.0 {
            DecadeAxis::covering(0.1, 10.0)
        } else {
            DecadeAxis::covering(lo, hi)
        }
    }
}

/// A log axis drawn as log10 on a linear one, so that every panel is labelled at whole
/// decades (10⁻⁸, 10⁻⁴, 10⁰) however many decades it spans (plotters' own log axis leaves
/// the lower decades of a 40-decade range unlabelled).
#[derive(Debug, Clone, PartialEq)]
pub struct DecadeAxis {
    /// log10 of the axis ends.
    pub range: (f64, f64),
    /// Labelled decades (log10), every 1, 2, 5, 10, … decades: at most eight.
    pub labels: Vec<f64>,
    /// Grid lines without labels: 2–9 × 10ᵏ on short axes, whole decades (or every fifth of
    /// the label step) on long ones.
    pub minor: Vec<f64>,
}

impl DecadeAxis {
    /// The axis from `lo` to `hi` (both > 0) with a little room, holding a whole decade.
    pub fn covering(lo: f64, hi: f64) -> Self {
        let (a, b) = (lo.log10(), hi.log10());
        let pad = ((b - a) * 0.04).max(0.15);
        let (mut start, mut end) = (a - pad, b + pad);
        if start.ceil() > end.floor() {
            (start, end) = (start.floor(), end.ceil());
        }
        let (first, last) = (start.ceil() as i64, end.floor() as i64);
        let step = [1, 2, 5, 10, 20, 50, 100, 200, 500]
            .into_iter()
            .find(|s| last.div_euclid(*s) - (first + s - 1).div_euclid(*s) < 8)
            .unwrap_or(1000);
        let labels: Vec<f64> = (first..=last)
            .filter(|k| k % step == 0)
            .map(|k| k as f64)
            .collect();
        let minor = if step == 1 && end - start <= 8.0 {
            (first - 1..=last)
                .flat_map(|k| (2..10).map(move |m| k as f64 + f64::from(m).log10()))
                .filter(|y| (start..=end).contains(y))
                .collect()
        } else {
            // Every decade between labels 1–5 decades apart, every fifth of a step beyond.
            let minor_step = if step <= 5 { 1 } else { step / 5 };
            (first..=last)
                .filter(|k| k % minor_step == 0 && k % step != 0)
                .map(|k| k as f64)
                .collect()
        };
        Self {
            range: (start, end),
            labels,
            minor,
        }
    }
}

impl Ranged for DecadeAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    /// Linear in log10: `value` is log10 of the norm.
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = self.range;
        let t = (value - lo) / (hi - lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.labels.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.0..self.range.1
    }
}

/// `10⁻⁸` for -8: the label of a whole decade; empty between decades.
pub fn decade_label(log10: f64) -> String {
    if (log10 - log10.round()).abs() > 1e-9 {
        return String::new();
    }
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let k = log10.round() as i64;
    let mut label = String::from("10");
    if k < 0 {
        label.push('⁻');
    }
    for digit in k.unsigned_abs().to_string().chars() {
        label.push(DIGITS[digit.to_digit(10).unwrap_or(0) as usize]);
    }
    label
}

/// `plots/gradients/<profile>/norms.{svg,png}`: ‖∂E/∂x_l‖ against the residual unit l on a
/// log axis, one panel per depth (ResNet-110: 54 units, ResNet-1202: 600 units), so that the
/// per-unit slope of ∏λ (log10 2 ≈ 0.3 decades per unit for λ = 0.5) reads the same in each
/// and each panel's axis spans its own decades. Dashed: at initialisation; solid: after the
/// training iterations.
pub struct NormsFigure {
    pub caption: Caption,
    /// Panels by ascending L.
    pub panels: Vec<NormPanel>,
}

/// Height of one panel, pixels.
const PANEL_HEIGHT: u32 = 520;
/// In a panel spanning more decades than this, a curve spanning less than 1 / `ZOOM_RATIO`
/// of them is drawn again in a panel of its own scale.
const ZOOM_MIN_DECADES: f64 = 12.0;
const ZOOM_RATIO: f64 = 4.0;

/// Width of the legend column right of each panel, pixels.
const LEGEND_WIDTH: u32 = 320;

impl NormsFigure {
    /// Groups the measured variants' curves by their number of units.
    pub fn new(caption: Caption, curves: Vec<NormCurve>) -> Self {
        let mut by_units: BTreeMap<u32, Vec<NormCurve>> = BTreeMap::new();
        for curve in curves {
            by_units.entry(curve.units).or_default().push(curve);
        }
        let mut panels = Vec::new();
        for (units, curves) in by_units {
            let panel = NormPanel {
                units,
                curves,
                zoomed: false,
            };
            // Curves that span a few decades beside one that spans dozens are flat lines on
            // the shared axis: a second panel shows them on their own.
            let axis = panel.axis();
            let span = axis.range.1 - axis.range.0;
            let narrow: Vec<NormCurve> = panel
                .curves
                .iter()
                .filter(|c| c.decades() < span / ZOOM_RATIO)
                .cloned()
                .collect();
            let zoom = (span > ZOOM_MIN_DECADES && !narrow.is_empty()).then_some(NormPanel {
                units,
                curves: narrow,
                zoomed: true,
            });
            panels.push(panel);
            panels.extend(zoom);
        }
        Self { caption, panels }
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        panel: &NormPanel,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<()> {
        let (width, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
        let axis = panel.axis();
        // just under the top edge: where overflowed units are marked
        let top = axis.range.1 - (axis.range.1 - axis.range.0) * 0.015;
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                panel.heading(),
                (FONT, 17).into_font().style(FontStyle::Bold),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(0.5..f64::from(panel.units) + 0.5, axis)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("residual unit l (1 = input side, L = output side)")
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-9 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_desc("‖∂E/∂x_l‖ (log scale)")
            .y_label_formatter(&|v| decade_label(*v))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for curve in &panel.curves {
            let c = colour(curve.colour_index);
            let log = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
                points.iter().map(|&(l, v)| (l, v.log10())).collect()
            };
            chart
                .draw_series(DashedLineSeries::new(
                    log(&curve.init),
                    6,
                    5,
                    c.stroke_width(2),
                ))
                .map_err(plot_err)?;
            if let Some((_, points)) = &curve.trained {
                chart
                    .draw_series(LineSeries::new(log(points), c.stroke_width(2)))
                    .map_err(plot_err)?;
            }
            // overflowed units along the top edge, in the style of their measurement
            let span = |(first, last): (u32, u32)| {
                [(f64::from(first) - 0.5, top), (f64::from(last) + 0.5, top)]
            };
            for run in NormCurve::runs(&curve.overflowed.0) {
                chart
                    .draw_series(DashedLineSeries::new(span(run), 6, 5, c.stroke_width(5)))
                    .map_err(plot_err)?;
            }
            for run in NormCurve::runs(&curve.overflowed.1) {
                chart
                    .draw_series(LineSeries::new(span(run), c.stroke_width(5)))
                    .map_err(plot_err)?;
            }
        }
        draw_norms_legend(panel, &legend)
    }
}

/// The legend column of a panel: each variant's colour, name, seeds and iterations, then
/// the two line styles.
fn draw_norms_legend<DB: DrawingBackend>(
    panel: &NormPanel,
    area: &DrawingArea<DB, Shift>,
) -> Result<()> {
    let name_style = (FONT, 14).into_font().color(&BLACK);
    let note_style = (FONT, 12).into_font().color(&GREY);
    let segment = |y: i32| vec![(4, y), (34, y)];
    let mut y = 45;
    for curve in &panel.curves {
        let c = colour(curve.colour_index);
        area.draw(&PathElement::new(segment(y + 8), c.stroke_width(3)))
            .map_err(plot_err)?;
        area.draw_text(&curve.name, &name_style, (42, y))
            .map_err(plot_err)?;
        let mut note = format!("{} seed{}", curve.seeds, plural(curve.seeds));
        match curve.iterations() {
            Some(it) => note.push_str(&format!(", after {it} it.")),
            None => note.push_str(", initialisation only"),
        }
        if curve.zero_units > 0 {
            let units = if curve.zero_units == 1 {
                "unit"
            } else {
                "units"
            };
            note.push_str(&format!(", {} {units} at 0 not drawn", curve.zero_units));
        }
        let (at_init, trained) = &curve.overflowed;
        let overflowed = if trained.len() > at_init.len() {
            trained
        } else {
            at_init
        };
        area.draw_text(&note, &note_style, (42, y + 18))
            .map_err(plot_err)?;
        if let (Some(first), Some(last)) = (overflowed.first(), overflowed.last()) {
            let line = format!("units {first}–{last} overflowed: marked along the top");
            area.draw_text(&line, &note_style, (42, y + 32))
                .map_err(plot_err)?;
            y += 14;
        }
        y += 42;
    }
    y += 10;
    area.draw(&DashedPathElement::new(
        segment(y + 8),
        6,
        5,
        GREY.stroke_width(2),
    ))
    .map_err(plot_err)?;
    area.draw_text("at initialisation", &name_style, (42, y))
        .map_err(plot_err)?;
    y += 26;
    area.draw(&PathElement::new(segment(y + 8), GREY.stroke_width(2)))
        .map_err(plot_err)?;
    let after = match common(panel.curves.iter().map(NormCurve::iterations)).flatten() {
        Some(it) => format!("after {it} iterations"),
        None => "after training".to_string(),
    };
    area.draw_text(&after, &name_style, (42, y))
        .map_err(plot_err)?;
    Ok(())
}

impl Figure for NormsFigure {
    fn size(&self) -> (u32, u32) {
        let panels = self.panels.len().max(1) as u32;
        (1100, TITLE_HEIGHT_TWO_LINES + panels * PANEL_HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let curves = || self.panels.iter().flat_map(|p| p.curves.iter());
        let seeds = curves().map(|c| c.seeds).max().unwrap_or(0);
        let after = match common(curves().map(NormCurve::iterations)).flatten() {
            Some(it) => format!("solid: after {it} iterations"),
            None => "solid: after training (iterations per panel and in the legend)".to_string(),
        };
        let lines = [
            format!(
                "{} · profile {} · ‖∂E/∂x_l‖ per residual unit on one fixed batch, mean over \
                 {seeds} seed{}",
                self.caption.data,
                self.caption.profile,
                plural(seeds)
            ),
            format!(
                "One panel per depth; x: residual unit l (1 = input side), log y · dashed: at \
                 initialisation, {after}"
            ),
        ];
        let body = titled_lines(root, &self.caption.title, &lines)?;
        let n = self.panels.len().max(1);
        for (panel, area) in self.panels.iter().zip(body.split_evenly((n, 1))) {
            self.draw_panel(panel, &area)?;
        }
        Ok(())
    }
}

/// Writes the curves and final-error figures of a profile into `dir`, skipping those with
/// nothing to show; `nets` holds the network of each variant of `results` (see
/// [`CurvesFigure::new`]). Returns the files written.
pub fn write_training_figures(
    dir: &Path,
    caption: &Caption,
    results: &ProfileResults,
    nets: &[VariantNet],
    fail_above: f64,
    lr_drops: &[i64],
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let curves = CurvesFigure::new(caption.clone(), results, nets, lr_drops);
    if !curves.is_empty() {
        written.extend(write_figure(&curves, dir, "curves")?);
    }
    let finals = FinalFigure::new(caption.clone(), results, nets, fail_above);
    if !finals.entries.is_empty() {
        written.extend(write_figure(&finals, dir, "final")?);
    }
    Ok(written)
}

/// Writes `norms.{svg,png}` into `dir` when any variant has been measured. Variants are
/// coloured by their place in the experiment file.
pub fn write_norms_figure(
    dir: &Path,
    caption: &Caption,
    results: &GradientResults,
) -> Result<Vec<PathBuf>> {
    let curves: Vec<NormCurve> = results
        .variants
        .iter()
        .enumerate()
        .filter_map(|(i, v)| NormCurve::of(v, i))
        .collect();
    if curves.is_empty() {
        return Ok(Vec::new());
    }
    write_figure(&NormsFigure::new(caption.clone(), curves), dir, "norms")
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
        // A curve of one point: kept inside the axes, gone above them.
        assert_eq!(clip_above(&[(1.0, 10.0)], 20.0), vec![vec![(1.0, 10.0)]]);
        assert!(clip_above(&[(1.0, 30.0)], 20.0).is_empty());
    }

    #[test]
    fn a_final_figure_is_wide_enough_for_its_title() {
        register_fonts().unwrap();
        let figure = |title: &str| FinalFigure {
            caption: Caption {
                title: title.into(),
                profile: "cpu".into(),
                data: "CIFAR-10".into(),
            },
            entries: Vec::new(),
            fail_above: 50.0,
        };
        assert_eq!(figure("Short").size().0, 900);
        // The title is drawn from x = 20: the figure leaves at least as much on the right.
        let long =
            "Activation placements on ResNet-110 and ResNet-164 (Identity Mappings, Table 2)";
        let width = title_width(long);
        assert!(width > 860, "{long:?} measures {width} px");
        assert!(figure(long).size().0 >= width + 40);
    }

    #[test]
    fn decade_axis_labels_whole_decades_at_most_eight() {
        // 0.01 .. 2: log10 −2 .. 0.301, padded by 0.15: labels 10⁻², 10⁻¹, 10⁰, and the
        // minor lines 2–9 × 10ᵏ inside.
        let short = DecadeAxis::covering(0.01, 2.0);
        assert!((short.range.0 + 2.15).abs() < 1e-12);
        assert!((short.range.1 - (2f64.log10() + 0.15)).abs() < 1e-12);
        assert_eq!(short.labels, [-2.0, -1.0, 0.0]);
        assert!(short.minor.contains(&(-2.0 + 2f64.log10())));
        // 8, 9 × 10⁻³ (above −2.15); 2–9 × 10⁻² and 10⁻¹; 2 × 10⁰ (log 0.301 < 0.451).
        assert_eq!(short.minor.len(), 2 + 8 + 8 + 1);
        // 1e-45 .. 0.1 (a float32 underflow floor): 44 decades, padded 1.76 each side, labelled
        // every 10 decades (every 5 would make nine labels: −45 … −5, 0).
        let long = DecadeAxis::covering(1e-45, 0.1);
        assert_eq!(long.labels, [-40.0, -30.0, -20.0, -10.0, 0.0]);
        // Minor lines every 2 decades between them.
        assert!(long.minor.contains(&-46.0) && long.minor.contains(&-2.0));
        assert!(!long.minor.contains(&-45.0) && !long.minor.contains(&-40.0));
        assert_eq!(long.minor.len(), 24 - 5); // even decades −46 … 0, less the labelled
                                              // A flat curve (log10 0.5 = −0.301 ± 0.15 holds no whole decade) is widened to the
                                              // decades around it.
        let flat = DecadeAxis::covering(0.5, 0.5);
        assert_eq!(flat.labels, [-1.0, 0.0]);
        assert_eq!(flat.range, (-1.0, 0.0));
    }

    #[test]
    fn decade_labels_are_superscript_powers_of_ten() {
        assert_eq!(decade_label(-8.0), "10⁻⁸");
        assert_eq!(decade_label(0.0), "10⁰");
        assert_eq!(decade_label(12.0), "10¹²");
        assert_eq!(decade_label(-1.5), "");
    }

    #[test]
    fn plain_nets_and_resnets_share_a_colour_per_depth() {
        let net = |plain, depth| VariantNet {
            label: String::new(),
            plain,
            depth,
        };
        // He 2015 Fig. 6: plain-20/56, ResNet-20/56/110 → 20, 56, 110 ranked 0, 1, 2
        let depth = [
            net(true, 20),
            net(true, 56),
            net(false, 20),
            net(false, 56),
            net(false, 110),
        ];
        assert_eq!(variant_colours(&depth), [0, 1, 0, 1, 2]);
        // two plain nets of one depth (a profile that shrinks every net): by file place
        let shrunk = [net(true, 8), net(true, 8), net(false, 8)];
        assert_eq!(variant_colours(&shrunk), [0, 1, 2]);
        // no plain net: by file place, whatever the depths
        let resnets = [net(false, 56), net(false, 20), net(false, 56)];
        assert_eq!(variant_colours(&resnets), [0, 1, 2]);
    }

    #[test]
    fn colours_are_distinct_for_a_table_of_twelve() {
        let colours: Vec<_> = (0..12).map(colour).collect();
        for (i, a) in colours.iter().enumerate() {
            assert!(colours[i + 1..].iter().all(|b| b != a));
        }
    }
}
