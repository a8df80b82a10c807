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
//!
//! Each figure has its own file (`curves.rs`, `final_errors.rs`, `norms.rs`); this one holds
//! what they share: fonts, colours, titles, the legend box and the writing of the files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::FontRef;
use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::png::PngBackend;
use crate::results::{GradientResults, ProfileResults};

mod curves;
mod final_errors;
mod norms;

pub use curves::{clip_above, variant_colours, CurvePanel, CurveSeries, CurvesFigure, VariantNet};
pub use final_errors::{FinalEntry, FinalFigure};
pub use norms::{decade_label, DecadeAxis, NormCurve, NormPanel, NormsFigure};

/// The family name every text style uses; the embedded fonts are registered under it.
const FONT: &str = "sans-serif";
static REGULAR: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/DejaVuSans-Bold.ttf");

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

/// White background, the caption's bold title, a grey subtitle and, under it, how the runs
/// were trained; returns the area below them.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    caption: &Caption,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>> {
    let width = root.dim_in_pixel().0.saturating_sub(40);
    let lines: Vec<String> = std::iter::once(subtitle)
        .chain(caption.trained.as_deref())
        .flat_map(|line| wrap_at_dots(line, width))
        .collect();
    titled_lines(root, &caption.title, &lines)
}

/// `line` broken before its ` · ` separators into lines no wider than `width` pixels in the
/// subtitle font (a part wider than that alone stays whole).
fn wrap_at_dots(line: &str, width: u32) -> Vec<String> {
    let fits = |text: &str| subtitle_width(text) <= width;
    let mut lines: Vec<String> = Vec::new();
    for part in line.split(" · ") {
        match lines.last_mut() {
            Some(last) if fits(&format!("{last} · {part}")) => {
                last.push_str(" · ");
                last.push_str(part);
            }
            _ => lines.push(part.to_string()),
        }
    }
    lines
}

/// Width of `text` in the subtitle font, pixels (see [`text_width`]).
fn subtitle_width(text: &str) -> u32 {
    text_width(text, SUBTITLE_SIZE, FontStyle::Normal, 8)
}

/// The subtitle's font size, pixels.
const SUBTITLE_SIZE: u32 = 15;

/// Width of `title` in the bold title font, pixels (fonts registered); 13 px a character
/// where the font cannot measure it.
fn title_width(title: &str) -> u32 {
    text_width(title, TITLE_SIZE, FontStyle::Bold, 13)
}

/// Width of `text` in FONT at `size` and `style`, pixels; `fallback` px a character where
/// the font cannot measure it. plotters' measure falls short of the text as drawn in the SVG
/// and the PNG rendered from it (seen: the activations title measured 782 px and ran past
/// 880), so it is scaled by 1.17.
fn text_width(text: &str, size: u32, style: FontStyle, fallback: u32) -> u32 {
    (FONT, size)
        .into_font()
        .style(style)
        .box_size(text)
        .map_or(fallback * text.chars().count() as u32, |(w, _)| {
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
    let plain = (FONT, SUBTITLE_SIZE).into_font().color(&GREY);
    for (i, line) in subtitle.iter().enumerate() {
        top.draw_text(line.as_ref(), &plain, (20, 40 + 22 * i as i32))
            .map_err(plot_err)?;
    }
    Ok(body)
}

/// What every figure's title says about its origin: profile and data, and for training
/// figures the machine, precision and training time.
#[derive(Debug, Clone)]
pub struct Caption {
    pub title: String,
    pub profile: String,
    /// `CIFAR-10, JPEG-75 copy`, `original CIFAR-10`, …
    pub data: String,
    /// `trained on cpu AMD EPYC (2 threads) · fp32 · 7.9 h of training in all`: a second
    /// subtitle line under [`titled`]; `None` before any run has finished.
    pub trained: Option<String>,
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

/// What drawing a profile's figures did to its folder.
#[derive(Debug, Default)]
pub struct Drawn {
    pub written: Vec<PathBuf>,
    /// Earlier drawings of figures with nothing left to show, removed (they would show runs
    /// no longer there beside a table without them).
    pub removed: Vec<PathBuf>,
}

impl Drawn {
    /// Draws `figure` as `<stem>.{svg,png}` in `dir`, or, when `empty`, removes those files.
    fn figure(&mut self, figure: &impl Figure, empty: bool, dir: &Path, stem: &str) -> Result<()> {
        if !empty {
            self.written.extend(write_figure(figure, dir, stem)?);
            return Ok(());
        }
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{stem}.{ext}"));
            match std::fs::remove_file(&path) {
                Ok(()) => self.removed.push(path),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(anyhow::Error::new(err)
                        .context(format!("cannot remove the stale figure {}", path.display())));
                }
            }
        }
        Ok(())
    }
}

/// Draws the curves and final-error figures of a profile into `dir`; one with nothing to
/// show is not drawn, and an earlier drawing of it removed. `nets` holds the network of each
/// variant of `results` (see [`CurvesFigure::new`]).
pub fn write_training_figures(
    dir: &Path,
    caption: &Caption,
    results: &ProfileResults,
    nets: &[VariantNet],
    fail_above: f64,
    lr_drops: &[i64],
    warmup_ends: Vec<(i64, String)>,
) -> Result<Drawn> {
    let mut drawn = Drawn::default();
    let curves = CurvesFigure::new(caption.clone(), results, nets, lr_drops, warmup_ends);
    drawn.figure(&curves, curves.is_empty(), dir, "curves")?;
    let finals = FinalFigure::new(caption.clone(), results, nets, fail_above);
    drawn.figure(&finals, finals.entries.is_empty(), dir, "final")?;
    Ok(drawn)
}

/// Draws `norms.{svg,png}` into `dir` when any variant has been measured (else removes an
/// earlier drawing). Variants are coloured by their place in the experiment file.
pub fn write_norms_figure(
    dir: &Path,
    caption: &Caption,
    results: &GradientResults,
) -> Result<Drawn> {
    let curves: Vec<NormCurve> = results
        .variants
        .iter()
        .enumerate()
        .filter_map(|(i, v)| NormCurve::of(v, i))
        .collect();
    let empty = curves.is_empty();
    let mut drawn = Drawn::default();
    drawn.figure(
        &NormsFigure::new(caption.clone(), curves),
        empty,
        dir,
        "norms",
    )?;
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitles_wrap_at_their_separators_to_the_width() {
        let line = "CIFAR-10, JPEG-75 copy · profile cpu-long (15 epochs, 5,850 iterations; \
                    the paper's: 64,000) · one seed each · thin: training error, bold: test \
                    error · errors above 40% run off the top";
        let wide = wrap_at_dots(line, 10_000);
        assert_eq!(wide, vec![line.to_string()]);
        let narrow = wrap_at_dots(line, 600);
        assert!(narrow.len() > 1, "{narrow:?}");
        assert!(
            narrow.iter().all(|l| subtitle_width(l) <= 600),
            "{narrow:?}"
        );
        assert_eq!(narrow.join(" · "), line);
        // a part wider than the width alone stays whole, on its own line
        let tiny = wrap_at_dots("a · bb", 1);
        assert_eq!(tiny, vec!["a", "bb"]);
    }

    #[test]
    fn colours_are_distinct_for_a_table_of_twelve() {
        let colours: Vec<_> = (0..12).map(colour).collect();
        for (i, a) in colours.iter().enumerate() {
            assert!(colours[i + 1..].iter().all(|b| b != a));
        }
    }
}
