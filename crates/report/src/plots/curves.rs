//! The `curves` figure: training and test error against iterations, one panel or, with
//! plain nets, plain nets beside ResNets (He et al. 2015 Fig. 6).

use std::collections::BTreeMap;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::element::{DashedPathElement, DynElement, IntoDynElement};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use plotters_backend::BackendCoord;

use super::{
    colour, draw_legend, plot_err, plural, text_width, title_width, titled, Caption, Figure, FONT,
    GREY,
};
use crate::results::{ProfileResults, VariantRuns};

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
    /// Where the warm-ups end, and the legend's words for each (`warm-up ends (lr 0.01 →
    /// 0.1)`, `warm-up ends (resnet-110: lr 0.01 → 0.1)` where only some variants have it).
    pub warmup_ends: Vec<(i64, String)>,
}

/// Width of the chart of a one-panel figure, left of its legend column, pixels.
pub const CHART_WIDTH: u32 = 1100;

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
        warmup_ends: Vec<(i64, String)>,
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
                warmup_ends,
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
            warmup_ends,
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

    /// One panel's axes and curves, and its legend inside the axes at `legend` (`None`: the
    /// caller draws it).
    fn draw_panel<DB: DrawingBackend>(
        &self,
        panel: &CurvePanel,
        area: &DrawingArea<DB, Shift>,
        (x_max, y_max): (f64, f64),
        legend: Option<SeriesLabelPosition>,
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
        for (k, _) in self.warmups_inside(x_max) {
            let (dash, gap) = WARMUP_DASH;
            chart
                .draw_series(DashedLineSeries::new(
                    [(k, 0.0), (k, y_max)],
                    dash,
                    gap,
                    warmup_style(),
                ))
                .map_err(plot_err)?;
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
            for piece in clip_above(&series.test, y_max) {
                chart
                    .draw_series(lone_point(&piece, 4, c))
                    .map_err(plot_err)?;
                chart
                    .draw_series(LineSeries::new(piece, c.stroke_width(3)))
                    .map_err(plot_err)?;
            }
        }
        let Some(corner) = legend else {
            return Ok(());
        };
        for (words, mark) in self.legend_entries(panel, x_max) {
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(plot_err)?
                .label(words)
                .legend(move |at| mark.element(at));
        }
        draw_legend(&mut chart, corner)
    }

    /// The legend's entries for `panel`, in order: each variant's test-error stroke, the
    /// strokes of training and test error, the seeds' spread where drawn, the warm-ups' ends
    /// and the lr drops that fall inside the axes (which end at `x_max`).
    fn legend_entries(&self, panel: &CurvePanel, x_max: f64) -> Vec<(String, Mark)> {
        let mut entries: Vec<(String, Mark)> = panel
            .series
            .iter()
            .map(|s| {
                let words = format!("{} ({} seed{})", s.name, s.seeds, plural(s.seeds));
                (words, Mark::Line(colour(s.colour_index), 3))
            })
            .collect();
        entries.push(("training error".into(), Mark::Line(GREY, 1)));
        entries.push(("test error".into(), Mark::Line(GREY, 3)));
        if panel.series.iter().any(|s| s.test_band.len() >= 2) {
            entries.push((
                "test error, lowest to highest seed".into(),
                Mark::Band(GREY),
            ));
        }
        for (_, words) in self.warmups_inside(x_max) {
            entries.push((words.to_string(), Mark::Dashes(WARMUP_DASH, warmup_style())));
        }
        if self.lr_drops.iter().any(|&d| (d as f64 / 1000.0) < x_max) {
            entries.push((
                "learning rate divided".into(),
                Mark::Dashes(LR_DROP_DASH, lr_drop_style()),
            ));
        }
        entries
    }

    /// Where the warm-ups end inside the axes (which end at `x_max` thousand iterations), in
    /// thousands, with the legend's words for each.
    fn warmups_inside(&self, x_max: f64) -> impl Iterator<Item = (f64, &str)> {
        self.warmup_ends
            .iter()
            .map(|(at, words)| (*at as f64 / 1000.0, words.as_str()))
            .filter(move |&(k, _)| k > 0.0 && k < x_max)
    }

    /// The legend entries of a one-panel figure (its panel's, on its axes).
    fn column_entries(&self) -> Vec<(String, Mark)> {
        self.legend_entries(&self.panels[0], self.x_max())
    }
}

/// Width of a legend column of `entries`: the mark and the longest entry's words.
fn legend_column_width(entries: &[(String, Mark)]) -> u32 {
    let longest = entries
        .iter()
        .map(|(words, _)| text_width(words, LEGEND_SIZE, FontStyle::Normal, 8))
        .max()
        .unwrap_or(0);
    (longest + LEGEND_TEXT_X as u32 + 20).max(200)
}

/// The legend of a one-panel figure, in a column right of the chart (a legend inside the
/// axes would cover curves: with many variants it is tall, and the curves fill the chart
/// from the top left, where they start high, to the bottom right).
fn draw_legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Mark)],
) -> Result<()> {
    let text = (FONT, LEGEND_SIZE)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    // level with the top of the chart (its margin), a row per entry, closer where more
    // entries than fit at LEGEND_ROW would run off the bottom
    let (_, height) = area.dim_in_pixel();
    let room = height.saturating_sub(40) / (entries.len() as u32).max(1);
    let row = LEGEND_ROW.min(i32::try_from(room).unwrap_or(LEGEND_ROW));
    let mut y = 20 + row / 2;
    for (words, mark) in entries {
        area.draw(&mark.element((10, y))).map_err(plot_err)?;
        area.draw_text(words, &text, (LEGEND_TEXT_X, y))
            .map_err(plot_err)?;
        y += row;
    }
    Ok(())
}

/// What a legend entry draws beside its words.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// A curve's stroke: colour and width.
    Line(RGBColor, u32),
    /// The spread over seeds, filled in a colour.
    Band(RGBColor),
    /// A vertical dashed line (dash, gap): a warm-up's end or an lr drop.
    Dashes((u32, u32), ShapeStyle),
}

impl Mark {
    /// The mark, 24 pixels wide, its left end at `(x, y)` (its middle row at `y`), as both
    /// legends draw it.
    fn element<DB: DrawingBackend>(
        self,
        (x, y): BackendCoord,
    ) -> DynElement<'static, DB, BackendCoord> {
        match self {
            Mark::Line(c, width) => {
                PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(width)).into_dyn()
            }
            Mark::Band(c) => {
                Rectangle::new([(x, y - 5), (x + 24, y + 5)], band_style(c)).into_dyn()
            }
            Mark::Dashes((dash, gap), style) => {
                DashedPathElement::new(vec![(x + 12, y - 8), (x + 12, y + 8)], dash, gap, style)
                    .into_dyn()
            }
        }
    }
}

/// Font size of the legend column's words, pixels.
const LEGEND_SIZE: u32 = 14;
/// Height of a legend row, pixels.
const LEGEND_ROW: i32 = 24;
/// Where the legend column's words start, pixels from its left.
const LEGEND_TEXT_X: i32 = 44;

/// Dash and gap of the lines at the learning-rate drops, pixels (chart and legend).
const LR_DROP_DASH: (u32, u32) = (4, 4);

/// Dots of the warm-up's end: finer than the lr drops' dashes, and darker (it may fall on a
/// grid line).
const WARMUP_DASH: (u32, u32) = (1, 3);

fn warmup_style() -> ShapeStyle {
    GREY.mix(0.9).stroke_width(2)
}

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
            CHART_WIDTH + legend_column_width(&self.column_entries())
        };
        (width.max(title_width(&self.caption.title) + 40), 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let seeds = self.series().map(|s| s.seeds).max().unwrap_or(0);
        let seeds = if seeds > 1 {
            format!("mean over the seeds logged at each iteration (up to {seeds})")
        } else {
            "one seed each".to_string()
        };
        let mut subtitle = format!(
            "{} · profile {} · {seeds} · thin: training error, bold: test error",
            self.caption.data, self.caption.profile
        );
        if self.is_plain_vs_residual() {
            subtitle.push_str(" · one colour per depth");
        }
        let axes = (self.x_max(), self.y_max());
        if self
            .series()
            .any(|s| s.train.iter().chain(&s.test).any(|p| p.1 > axes.1))
        {
            subtitle += &format!(" · errors above {:.0}% run off the top", axes.1);
        }
        let body = titled(root, &self.caption, &subtitle)?;
        if self.is_plain_vs_residual() {
            // Few entries a panel, above curves that end low: inside, top right.
            let areas = body.split_evenly((1, self.panels.len()));
            for (panel, area) in self.panels.iter().zip(&areas) {
                self.draw_panel(panel, area, axes, Some(SeriesLabelPosition::UpperRight))?;
            }
            return Ok(());
        }
        let entries = self.column_entries();
        let (width, _) = body.dim_in_pixel();
        let (plot, column) =
            body.split_horizontally(width.saturating_sub(legend_column_width(&entries)));
        self.draw_panel(&self.panels[0], &plot, axes, None)?;
        draw_legend_column(&column, &entries)
    }
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

    /// 30 variants (more than the 24-pixel rows leave room for) and a long warm-up label:
    /// the legend column closes its rows to keep every entry inside the figure, and widens
    /// to the longest entry.
    #[test]
    fn a_legend_column_of_many_entries_stays_inside_the_figure() {
        let series = (0..30)
            .map(|i| CurveSeries {
                name: format!("variant-{i}"),
                colour_index: i,
                seeds: 1,
                train: vec![(0.4, 60.0), (0.8, 40.0)],
                test: vec![(0.4, 62.0), (0.8, 41.0)],
                test_band: vec![],
            })
            .collect();
        let long = "warm-up ends (a-long-variant, another-long-variant, a-third: lr 0.01 → 0.1)";
        let figure = CurvesFigure {
            caption: Caption {
                title: "many variants".into(),
                profile: "test".into(),
                data: "CIFAR-10".into(),
                trained: None,
            },
            panels: vec![CurvePanel {
                title: None,
                series,
            }],
            lr_drops: vec![600],
            warmup_ends: vec![(200, long.to_string())],
        };
        super::super::register_fonts().unwrap();
        let (width, height) = figure.size();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            figure.draw(&root).unwrap();
            root.present().unwrap();
        }
        // 30 variants, training and test error, the warm-up and the lr drop
        let ys: Vec<f64> = [
            "variant-0 (1 seed)",
            "variant-29 (1 seed)",
            "training error",
            long,
            "learning rate divided",
        ]
        .iter()
        .map(|words| {
            let end = svg.find(&format!(">\n{words}\n<")).expect(words);
            let tag = &svg[svg[..end].rfind("<text").unwrap()..end];
            let at = tag.find(" y=\"").unwrap() + 4;
            tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
        })
        .collect();
        assert!(ys.windows(2).all(|p| p[0] < p[1]), "{ys:?}");
        assert!(
            *ys.last().unwrap() < f64::from(height) - 10.0,
            "{ys:?} in {height} px"
        );
        let column = width - CHART_WIDTH;
        assert!(
            column >= text_width(long, LEGEND_SIZE, FontStyle::Normal, 8),
            "a column of {column} px for the warm-up's words"
        );
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
}
