//! The `norms` figure: ‖∂E/∂x_l‖ against the residual unit l on a log axis (the `gradients`
//! study), one panel per depth.

use std::collections::BTreeMap;

use anyhow::Result;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{
    colour, plot_err, plural, titled_lines, Caption, Figure, FONT, GREY, TITLE_HEIGHT_TWO_LINES,
};
use crate::results::VariantGradients;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
