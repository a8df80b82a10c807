//! The `final` figure: final test error per variant, each seed and the mean with its
//! interval, beside the paper's number.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::element::{DashedPathElement, ErrorBarOrientV};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::{
    colour, plot_err, title_width, titled, variant_colours, Caption, Figure, VariantNet, FONT, GREY,
};
use crate::results::ProfileResults;
use crate::stats::Summary;
use spec::PaperNumber;

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

    /// Whether `entry` failed by our threshold: its median final error above it.
    fn failed(&self, entry: &FinalEntry) -> bool {
        entry.summary.is_some_and(|s| s.median > self.fail_above)
    }

    /// The highest of `entry`'s own marks: its seeds and the top of its mean's interval.
    fn highest_mark(entry: &FinalEntry) -> Option<f64> {
        let interval = entry.summary.and_then(|s| s.mean_interval(MEAN_LEVEL));
        entry
            .errors
            .iter()
            .copied()
            .chain(interval.map(|(_, high)| high))
            .reduce(f64::max)
    }

    /// The top of the error axis. It holds the marks of every variant that did not fail and
    /// the papers' numbers, with room above for the marks along the top edge (the paper's
    /// "fail", diverged seeds, failed variants). A variant that failed (90% for a net that
    /// never learned) does not stretch the axis: where it does not fit, it is one labelled
    /// mark at the top ([`Self::off_chart`]), and our threshold line is left out where it is
    /// above the top, so that the variants that trained are read at a useful scale.
    fn y_max(&self) -> f64 {
        let papers = self
            .entries
            .iter()
            .filter_map(|e| e.paper.and_then(paper_top));
        let trained: Vec<f64> = self
            .entries
            .iter()
            .filter(|e| !self.failed(e))
            .filter_map(Self::highest_mark)
            .collect();
        let top = if trained.is_empty() {
            // nothing but failures (a smoke run's few steps): all of them on the axis, with
            // our threshold
            let ours = self.entries.iter().filter_map(Self::highest_mark);
            ours.chain(papers).fold(self.fail_above, f64::max)
        } else {
            trained.into_iter().chain(papers).fold(0.0, f64::max)
        };
        // every mark at 0% (a net that learned everything, no paper number): up to our line
        let top = if top > 0.0 { top } else { self.fail_above };
        top * 1.35
    }

    /// Whether `entry` is drawn as one mark at the top edge (`y_max`: the axis' top): it
    /// failed and some mark of it lies above the axis.
    fn off_chart(&self, entry: &FinalEntry, y_max: f64) -> bool {
        self.failed(entry) && Self::highest_mark(entry).is_some_and(|h| h > y_max)
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
        if self.fail_above < y_max {
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
        }

        for (i, entry) in self.entries.iter().enumerate() {
            let c = colour(entry.colour_index);
            let x = SegmentValue::CenterOf(i);
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
            if self.off_chart(entry, y_max) {
                let summary = entry.summary.expect("a failed variant has finished seeds");
                let label = if summary.n == 1 {
                    format!("fail: {:.2}%", summary.median)
                } else {
                    format!("fail: median {:.2}% of {}", summary.median, summary.n)
                };
                // left of a diverged seeds' mark, which takes the column's centre
                let shift = if entry.diverged_at.is_empty() { 0 } else { 16 };
                draw_off_chart(root, (cx - shift, top), c, &label)?;
                continue;
            }
            let seed_style = seed_marker(means, c);
            let interval = entry
                .summary
                .and_then(|s| Some((s, s.mean_interval(MEAN_LEVEL)?)));
            let px = |error: f64| chart.backend_coord(&(x.clone(), error));
            if let Some((s, (low, high))) = interval {
                let (cx, mean) = px(s.mean);
                if low >= 0.0 {
                    root.draw(&mean_bar(cx, (px(low).1, mean, px(high).1), c))
                        .map_err(plot_err)?;
                } else {
                    // a wide interval of few seeds reaches below 0%: drawn to the axis, open
                    draw_open_mean_bar(root, cx, (px(0.0).1, mean, px(high).1), c)?;
                }
            }
            // beside a mean's bar, the seeds left of it, so that it hides none
            let shift = if interval.is_some() { SEED_OFFSET } else { 0 };
            for &e in &entry.errors {
                let (sx, sy) = px(e);
                root.draw(&Circle::new((sx - shift, sy), seed_style.0, seed_style.1))
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
        self.draw_legend(&legend, means, y_max)
    }
}

impl FinalFigure {
    /// The legend column: every kind of mark the chart draws, drawn by the same code (grey
    /// stands for any variant's colour).
    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        means: bool,
        y_max: f64,
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
        let off = (self.fail_above >= y_max).then_some("its line above the top of the chart");
        entry(&threshold, off, &|(x, y)| {
            area.draw(&DashedPathElement::new(
                vec![(x - 16, y), (x + 16, y)],
                dash,
                gap,
                threshold_style(),
            ))
            .map_err(plot_err)
        })?;
        if self.entries.iter().any(|e| self.off_chart(e, y_max)) {
            entry(
                "a variant that failed",
                Some("reaching above the chart: at the top, with its error"),
                &|(x, y)| draw_off_chart_mark(area, (x, y - 10), GREY),
            )?;
        }
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

/// [`mean_bar`] for an interval whose low end lies below the chart (below 0%, where no error
/// can be): the bar stops at the axis (`low`, pixels) in an arrowhead instead of a cap, so
/// that it neither crosses the variant's label nor seems to end there.
fn draw_open_mean_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x: i32,
    (low, mean, high): (i32, i32, i32),
    colour: RGBColor,
) -> Result<()> {
    let style = colour.filled().stroke_width(2);
    let r = MEAN_RADIUS as i32;
    for path in [
        vec![(x, high), (x, low)],
        vec![(x - r, high), (x + r, high)],
        vec![(x - r, low - r), (x, low), (x + r, low - r)],
    ] {
        root.draw(&PathElement::new(path, style))
            .map_err(plot_err)?;
    }
    root.draw(&Circle::new((x, mean), MEAN_RADIUS, style))
        .map_err(plot_err)?;
    Ok(())
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

/// The mark of a variant that failed above the chart (see [`FinalFigure::y_max`]), along
/// the top edge (`top`: that point in its column): an upward chevron over a filled circle in
/// its colour.
fn draw_off_chart_mark<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (x, top): (i32, i32),
    colour: RGBColor,
) -> Result<()> {
    let chevron = vec![(x - 6, top + 14), (x, top + 7), (x + 6, top + 14)];
    root.draw(&PathElement::new(chevron, colour.stroke_width(3)))
        .map_err(plot_err)?;
    root.draw(&Circle::new((x, top + 22), 5, colour.filled()))
        .map_err(plot_err)
}

/// [`draw_off_chart_mark`] and, reading downward under it, `label` (its error).
fn draw_off_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (x, top): (i32, i32),
    colour: RGBColor,
    label: &str,
) -> Result<()> {
    draw_off_chart_mark(root, (x, top), colour)?;
    let style = (FONT, 12)
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    root.draw_text(label, &style, (x, top + 34))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::register_fonts;

    fn caption(title: &str, profile: &str) -> Caption {
        Caption {
            title: title.into(),
            profile: profile.into(),
            data: "CIFAR-10".into(),
            trained: None,
        }
    }

    /// A variant of one seed ended at `error`, with the paper's number.
    fn one_seed(name: &str, colour_index: usize, error: f64, paper: Option<f64>) -> FinalEntry {
        FinalEntry {
            name: name.into(),
            colour_index,
            errors: vec![error],
            summary: Summary::of(&[error]),
            paper: paper.map(PaperNumber::Error),
            diverged_at: Vec::new(),
        }
    }

    /// `figure` as an SVG document.
    fn render(figure: &FinalFigure) -> String {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, figure.size()).into_drawing_area();
            figure.draw(&root).unwrap();
        }
        svg
    }

    /// The y axis, the longest vertical black line: (its top, at y_max; its bottom, at 0%).
    fn y_axis(svg: &str) -> (f64, f64) {
        svg.split("<polyline")
            .skip(1)
            .map(|p| &p[..p.find("/>").unwrap()])
            .filter(|p| p.contains("stroke=\"#000000\""))
            .map(number_list)
            .filter(|points| points.len() == 2 && points[0].0 == points[1].0)
            .map(|points| (points[0].1.min(points[1].1), points[0].1.max(points[1].1)))
            .fold((0.0, 0.0), |a, b| if b.1 - b.0 > a.1 - a.0 { b } else { a })
    }

    /// The red dashes of our threshold left of the legend column (whose own sample dash is
    /// red too).
    fn threshold_dashes_in_chart(figure: &FinalFigure, svg: &str) -> usize {
        let legend_x = f64::from(figure.size().0 - FINAL_LEGEND_WIDTH);
        svg.lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#FF0000\""))
            .filter(|l| number_list(l).iter().all(|p| p.0 < legend_x))
            .count()
    }

    #[test]
    fn a_final_figure_is_wide_enough_for_its_title() {
        register_fonts().unwrap();
        let figure = |title: &str| FinalFigure {
            caption: caption(title, "cpu"),
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

    /// Two seeds 3 points apart give a 95% interval reaching below 0%; its bar stops at the
    /// chart's bottom (0%) in an arrowhead, and does not run into the label below.
    #[test]
    fn an_interval_below_zero_is_drawn_open_to_the_axis() {
        register_fonts().unwrap();
        let errors = vec![13.80, 16.71];
        let summary = Summary::of(&errors).unwrap();
        assert!(summary.mean_interval(MEAN_LEVEL).unwrap().0 < -3.0);
        let figure = FinalFigure {
            caption: caption("t", "cpu-long"),
            entries: vec![FinalEntry {
                name: "resnet-56".into(),
                colour_index: 3,
                errors,
                summary: Some(summary),
                paper: None,
                diverged_at: Vec::new(),
            }],
            fail_above: 50.0,
        };
        let svg = render(&figure);
        let polylines: Vec<&str> = svg
            .split("<polyline")
            .skip(1)
            .map(|p| &p[..p.find("/>").unwrap()])
            .collect();
        // the bottom of the chart: the low end of the y axis
        let (_, bottom) = y_axis(&svg);
        assert!(bottom > 0.0, "no y axis in {svg}");
        let c = colour(3);
        let stroke = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        let mut lowest = f64::MIN;
        let mut arrowheads = 0;
        for element in polylines.iter().filter(|p| p.contains(&stroke)) {
            let points = number_list(element);
            if points.len() == 3 {
                arrowheads += 1;
            }
            lowest = points.iter().map(|p| p.1).fold(lowest, f64::max);
        }
        assert_eq!(arrowheads, 1, "{svg}");
        assert_eq!(lowest, bottom, "the bar ends at the axis");
    }

    /// The shortcuts `cpu-long` case: one variant never learned (90%, our "fail"), the
    /// others ended at 17–28% and the paper's numbers are below 13%. The failed variant is
    /// one labelled mark at the top edge instead of stretching the axis to 120%, so the
    /// others fill the chart; our 50% line, above the top, is left out and the legend says so.
    #[test]
    fn a_failed_variant_does_not_stretch_the_axis() {
        register_fonts().unwrap();
        let figure = FinalFigure {
            caption: caption("t", "cpu-long"),
            entries: vec![
                one_seed("original", 0, 17.36, Some(6.61)),
                one_seed("exclusive-gating-7", 1, 27.68, Some(9.81)),
                one_seed("dropout-0.5", 2, 90.0, Some(12.0)),
            ],
            fail_above: 50.0,
        };
        let svg = render(&figure);
        let (top, bottom) = y_axis(&svg);
        let circle_y = |colour_index: usize| {
            let c = colour(colour_index);
            let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
            let circle = svg
                .split("<circle")
                .skip(1)
                .find(|e| e[..e.find("/>").unwrap()].contains(&fill))
                .unwrap_or_else(|| panic!("no circle {fill} in {svg}"));
            let at = circle.find(" cy=\"").unwrap() + 5;
            circle[at..at + circle[at..].find('"').unwrap()]
                .parse::<f64>()
                .unwrap()
        };
        // 27.68% is the highest of the variants that trained: with the axis to 1.35 times
        // it, the point is 74% of the way up (at 120%, it was 23%)
        let height_of = |y: f64| (bottom - y) / (bottom - top);
        let up = height_of(circle_y(1));
        assert!(
            (0.70..0.78).contains(&up),
            "27.68% drawn {up:.2} of the way up"
        );
        assert!(height_of(circle_y(0)) > 0.4);
        // dropout-0.5: at the top edge, labelled with its error
        assert!(svg.contains(">\nfail: 90.00%\n<"), "{svg}");
        assert!(
            circle_y(2) < top + 30.0,
            "{} under the top {top}",
            circle_y(2)
        );
        // no red dash in the chart: the 50% line is above it
        assert_eq!(
            threshold_dashes_in_chart(&figure, &svg),
            0,
            "a threshold line in the chart"
        );
        assert!(svg.contains("its line above the top of the chart"));
        assert!(svg.contains("a variant that failed"));
    }

    /// A smoke run: every variant above our threshold, the paper's numbers far below. With
    /// nothing that trained to scale the axis by, all of ours stay on it, with our line.
    #[test]
    fn when_every_variant_failed_all_stay_on_the_axis() {
        register_fonts().unwrap();
        let figure = FinalFigure {
            caption: caption("t", "smoke"),
            entries: vec![
                one_seed("original", 0, 69.0, Some(6.61)),
                one_seed("conv1x1", 1, 82.0, Some(6.61)),
            ],
            fail_above: 20.0,
        };
        assert!(
            (figure.y_max() - 82.0 * 1.35).abs() < 1e-9,
            "{}",
            figure.y_max()
        );
        let svg = render(&figure);
        assert!(
            !svg.contains("fail: "),
            "a variant moved off the axis: {svg}"
        );
        assert!(!svg.contains("its line above the top"));
        let in_chart = threshold_dashes_in_chart(&figure, &svg);
        assert!(
            in_chart > 10,
            "no threshold line in the chart: {in_chart} dashes"
        );
        // nothing but zeros and no paper: the axis still runs up to our line
        let zeros = FinalFigure {
            entries: vec![one_seed("original", 0, 0.0, None)],
            ..figure
        };
        assert!(
            (zeros.y_max() - 20.0 * 1.35).abs() < 1e-9,
            "{}",
            zeros.y_max()
        );
    }

    /// The (x, y) pairs of an SVG element's `points` attribute.
    fn number_list(element: &str) -> Vec<(f64, f64)> {
        let from = element.find("points=\"").unwrap() + 8;
        let rest = &element[from..];
        rest[..rest.find('"').unwrap()]
            .split_whitespace()
            .map(|pair| {
                let (x, y) = pair.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }
}
