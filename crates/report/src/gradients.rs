//! The table of a `gradients` experiment (Identity Mappings, eqs. 4–8 made visible): one row
//! per variant with ‖∂E/∂x_l‖ at the input side (l = 1) and the output side (l = L) of the
//! residual units, their ratio and the decades the norms span, at initialisation and after
//! the profile's iterations; and a header that says where the numbers come from.
//!
//! With identity shortcuts ∂E/∂x_l = ∂E/∂x_L (1 + ∂/∂x_l Σ F) (eq. 5): every unit keeps a
//! term ∂E/∂x_L. With shortcuts scaled by λ that term carries ∏λ (eqs. 7–8), 0.5^(L−1) from
//! x_L down to x_1 for λ = 0.5. The table reports what was measured; the residual branches
//! add their own terms, so the ratio need not follow ∏λ.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::results::{GradientResults, VariantGradients, VariantNorms};
use crate::table::{markdown_header, Sources};
use spec::Experiment;

/// ‖∂E/∂x_l‖ over the units at one iteration (mean over seeds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// 0 = at initialisation.
    pub iteration: i64,
    /// ‖∂E/∂x_1‖: the unit nearest the input.
    pub input_side: f64,
    /// ‖∂E/∂x_L‖: the unit nearest the output.
    pub output_side: f64,
    /// log10(max / min) over the units with a positive norm; `None` without two of them.
    pub decades: Option<f64>,
    /// Units whose norm is 0 (below float32's range): the true span is then wider than
    /// `decades`, which is a lower bound.
    pub zero_units: usize,
    /// Units whose norm overflowed float32 (inf or NaN in every seed): (first, last, how
    /// many). Where unit 1 is among them, `input_side` is the first finite unit's norm, a
    /// lower bound, and so are the ratio and the span.
    pub overflowed: Option<(u32, u32, usize)>,
}

impl Measurement {
    /// The measurement of `units` ([(l, norm)], ascending l, finite norms) and the units that
    /// `overflowed` (ascending), `None` if `units` is empty.
    pub fn of(iteration: i64, units: &[(u32, f64)], overflowed: &[u32]) -> Option<Self> {
        let (&(_, input_side), &(_, output_side)) = (units.first()?, units.last()?);
        let positive = units.iter().map(|&(_, v)| v).filter(|&v| v > 0.0);
        let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let count = units.iter().filter(|&&(_, v)| v > 0.0).count();
        Some(Self {
            iteration,
            input_side,
            output_side,
            decades: (count >= 2).then(|| (hi / lo).log10()),
            zero_units: units.iter().filter(|&&(_, v)| v <= 0.0).count(),
            overflowed: match (overflowed.first(), overflowed.last()) {
                (Some(&first), Some(&last)) => Some((first, last, overflowed.len())),
                _ => None,
            },
        })
    }

    /// True when the input side overflowed: its norm, the ratio and the span are lower
    /// bounds.
    pub fn input_overflowed(&self) -> bool {
        self.overflowed.is_some_and(|(first, _, _)| first == 1)
    }

    /// ‖∂E/∂x_1‖ / ‖∂E/∂x_L‖ (input side over output side); `None` when ‖∂E/∂x_L‖ is 0.
    pub fn ratio(&self) -> Option<f64> {
        (self.output_side > 0.0).then(|| self.input_side / self.output_side)
    }
}

/// Whether a variant has been measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradientStatus {
    /// `norms.csv` is there.
    Measured,
    /// No (readable) `norms.csv` yet.
    NotMeasured,
}

impl GradientStatus {
    /// As written in `table.csv` and `table.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            GradientStatus::Measured => "measured",
            GradientStatus::NotMeasured => "not measured",
        }
    }
}

/// One variant's line of the table.
#[derive(Debug, Clone)]
pub struct GradientRow {
    pub variant: String,
    /// Weighted layers, from `provenance.json`.
    pub depth: Option<usize>,
    /// L: the number of residual units in `norms.csv` (its largest unit index).
    pub units: Option<u32>,
    /// Seeds in `norms.csv`.
    pub seeds_measured: usize,
    /// Seeds the profile lists.
    pub seeds_expected: usize,
    /// At iteration 0.
    pub init: Option<Measurement>,
    /// At the last iteration recorded, when it is not 0.
    pub trained: Option<Measurement>,
    /// A later iteration at which every unit's norm overflowed (so no measurement), and the
    /// units.
    pub all_overflowed: Option<(i64, usize)>,
    pub status: GradientStatus,
}

impl GradientRow {
    /// The row of `variant`; `seeds_expected` from the profile.
    pub fn new(variant: &VariantGradients, seeds_expected: usize) -> Self {
        let norms = variant.norms.as_ref();
        let (init, trained) = norms.map_or((None, None), ends);
        Self {
            variant: variant.name.clone(),
            depth: variant.record.as_ref().map(|r| r.model.depth),
            units: norms.and_then(|n| {
                n.by_iteration
                    .values()
                    .filter_map(|units| units.last().map(|&(l, _)| l))
                    .max()
            }),
            seeds_measured: norms.map_or(0, |n| n.seeds),
            seeds_expected,
            init,
            trained,
            all_overflowed: norms.and_then(|n| {
                n.overflowed
                    .iter()
                    .rfind(|(it, _)| !n.by_iteration.contains_key(it))
                    .map(|(&it, units)| (it, units.len()))
            }),
            status: if norms.is_some() {
                GradientStatus::Measured
            } else {
                GradientStatus::NotMeasured
            },
        }
    }

    /// The status with what is short of the profile: `measured (1/2 seeds)`.
    pub fn status_text(&self) -> String {
        let mut text = self.status.as_str().to_string();
        if self.status == GradientStatus::Measured {
            if self.seeds_measured < self.seeds_expected {
                let _ = write!(
                    text,
                    " ({}/{} seeds)",
                    self.seeds_measured, self.seeds_expected
                );
            }
            match (self.trained, self.all_overflowed) {
                (None, Some((it, units))) => {
                    let _ = write!(
                        text,
                        " (after {it} iterations all {units} units overflowed)"
                    );
                }
                (None, None) => text.push_str(" (at initialisation only)"),
                (Some(_), _) => {}
            }
        }
        text
    }
}

/// The measurement at iteration 0 and at the last iteration (when later than 0).
fn ends(norms: &VariantNorms) -> (Option<Measurement>, Option<Measurement>) {
    let measure = |it: i64, units: &[(u32, f64)]| {
        let overflowed = norms.overflowed.get(&it).map_or(&[][..], Vec::as_slice);
        Measurement::of(it, units, overflowed)
    };
    let init = norms
        .by_iteration
        .get(&0)
        .and_then(|units| measure(0, units));
    let trained = norms
        .by_iteration
        .iter()
        .next_back()
        .filter(|(&it, _)| it != 0)
        .and_then(|(&it, units)| measure(it, units));
    (init, trained)
}

/// The rows and header of one profile of a gradients experiment.
#[derive(Debug, Clone)]
pub struct GradientTable {
    pub title: String,
    pub source: String,
    pub profile: String,
    pub seeds: Vec<u64>,
    pub rows: Vec<GradientRow>,
    /// Tallied over the `provenance.json` of the measured variants.
    pub provenance: Sources,
    /// Wall time of the measured variants, seconds.
    pub wall_s: f64,
    pub notes: Vec<String>,
    /// The profile's results folder, where the table lies (left out of the paths the
    /// written notes name).
    pub dir: PathBuf,
}

impl GradientTable {
    /// One row per variant of the experiment file, in file order.
    pub fn new(
        experiment: &Experiment,
        profile: &str,
        seeds: &[u64],
        results: &GradientResults,
    ) -> Self {
        let mut provenance = Sources::default();
        let mut wall_s = 0.0;
        let mut notes = results.notes.clone();
        for variant in results.variants.iter().filter(|v| v.norms.is_some()) {
            let Some(record) = &variant.record else {
                continue;
            };
            provenance.add(
                &record.data,
                &record.provenance.device,
                &record.provenance.git_revision,
                &record.provenance.libtorch,
            );
            wall_s += record.wall_s;
            if record.profile != profile {
                notes.push(format!(
                    "{}: provenance.json names profile `{}`",
                    variant.name, record.profile
                ));
            }
        }
        provenance.expected = results.variants.len();
        Self {
            title: experiment.title.clone(),
            source: experiment.source.clone(),
            profile: profile.to_string(),
            seeds: seeds.to_vec(),
            rows: results
                .variants
                .iter()
                .map(|v| GradientRow::new(v, seeds.len()))
                .collect(),
            provenance,
            wall_s,
            notes,
            dir: results.dir.clone(),
        }
    }

    /// Variants with a `norms.csv`.
    pub fn measured(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.status == GradientStatus::Measured)
            .count()
    }

    /// `table.csv`: one header row, one row per variant; norms and ratios in exponent notation
    /// (`3.7885815287228645e-18`), other numbers plain, empty if missing.
    pub fn to_csv(&self) -> Result<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([
            "variant",
            "depth",
            "units",
            "seeds_measured",
            "seeds_expected",
            "x1_norm_init",
            "xL_norm_init",
            "ratio_init",
            "decades_init",
            "zero_units_init",
            "overflowed_units_init",
            "iterations",
            "x1_norm_trained",
            "xL_norm_trained",
            "ratio_trained",
            "decades_trained",
            "zero_units_trained",
            "overflowed_units_trained",
            "status",
        ])?;
        // Norms and ratios span dozens of decades: exponent notation, shortest round trip.
        let exp = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let int = |v: Option<String>| v.unwrap_or_default();
        let columns = |m: Option<Measurement>| {
            [
                exp(m.map(|m| m.input_side)),
                exp(m.map(|m| m.output_side)),
                exp(m.and_then(|m| m.ratio())),
                num(m.and_then(|m| m.decades)),
                int(m.map(|m| m.zero_units.to_string())),
                int(m.map(|m| m.overflowed.map_or(0, |o| o.2).to_string())),
            ]
        };
        for row in &self.rows {
            let mut record = vec![
                row.variant.clone(),
                int(row.depth.map(|d| d.to_string())),
                int(row.units.map(|u| u.to_string())),
                row.seeds_measured.to_string(),
                row.seeds_expected.to_string(),
            ];
            record.extend(columns(row.init));
            record.push(int(row.trained.map(|m| m.iteration.to_string())));
            record.extend(columns(row.trained));
            record.push(row.status.as_str().to_string());
            writer.write_record(&record)?;
        }
        Ok(String::from_utf8(writer.into_inner()?)?)
    }

    /// `table.md`: the header (title, source, profile, data, devices, revisions, measured
    /// variants), the table in GitHub Markdown, and what the columns mean.
    pub fn to_markdown(&self) -> String {
        let p = &self.provenance;
        let mut md = markdown_header(&self.title, &self.source, &self.profile, &self.seeds, p);
        let mut measured = format!(
            "- **Measured**: {} of {} variants",
            self.measured(),
            self.rows.len()
        );
        if self.wall_s > 0.0 {
            let _ = write!(measured, " ({:.0} s in all)", self.wall_s);
        }
        let _ = writeln!(md, "{measured}");
        let _ = writeln!(
            md,
            "- **Measurement**: ‖∂E/∂x_l‖ at the input x_l of each residual unit l (1 = input \
             side, L = output side), on one fixed training batch per seed, at initialisation \
             and after the iterations given; mean over the seeds\n"
        );
        md.push_str(
            "| variant | depth (L) | seeds \
             | init ‖∂E/∂x_1‖ | init ‖∂E/∂x_L‖ | init ratio | init decades \
             | iterations \
             | ‖∂E/∂x_1‖ | ‖∂E/∂x_L‖ | ratio | decades | status |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for row in &self.rows {
            let depth = match (row.depth, row.units) {
                (Some(d), Some(l)) => format!("{d} ({l})"),
                (None, Some(l)) => format!("– ({l})"),
                (Some(d), None) => d.to_string(),
                (None, None) => "–".to_string(),
            };
            let cells = |m: Option<Measurement>| match m {
                Some(m) => {
                    // a lower bound where the input side overflowed
                    let at_least = if m.input_overflowed() { "≥ " } else { "" };
                    let input = match m.overflowed {
                        Some((first, last, _)) if m.input_overflowed() => {
                            format!("≥ {} (units {first}–{last} overflowed)", sci(m.input_side))
                        }
                        _ => sci(m.input_side),
                    };
                    let mut decades = decades_text(&m);
                    if m.input_overflowed() && !decades.starts_with('≥') && decades != "–" {
                        decades = format!("≥ {decades}");
                    }
                    format!(
                        "{input} | {} | {} | {decades}",
                        sci(m.output_side),
                        m.ratio()
                            .map_or("–".to_string(), |r| format!("{at_least}{}", sci(r))),
                    )
                }
                None => "– | – | – | –".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {depth} | {}/{} | {} | {} | {} | {} |",
                row.variant,
                row.seeds_measured,
                row.seeds_expected,
                cells(row.init),
                row.trained
                    .map_or("–".to_string(), |m| m.iteration.to_string()),
                cells(row.trained),
                row.status_text(),
            );
        }
        md.push_str(
            "\nratio = ‖∂E/∂x_1‖ / ‖∂E/∂x_L‖, the gradient at the input side over the gradient \
             at the output side: 1 when it reaches the first unit undiminished, below 1 when it \
             shrinks on its way to the input, above 1 when it grows. Eq. 5 (identity shortcuts) \
             keeps a term ∂E/∂x_L at every unit; along λ-scaled shortcuts eqs. 7–8 give the \
             factor ∏λ, 0.5^(L−1) for λ = 0.5 (the residual branches add their own terms). \
             decades = log10(max / min) of ‖∂E/∂x_l‖ over the L units; `≥` when some units' \
             norms are 0 (below float32's range) and were left out, or overflowed float32 \
             (inf or NaN): then the first finite unit stands for the input side, and its norm, \
             the ratio and the span are lower bounds. `init` = at \
             initialisation; the columns after `iterations` are measured after that many SGD \
             steps.\n",
        );
        md.push_str(&crate::results::notes_markdown(&self.notes, &self.dir));
        md
    }
}

/// `1.23e-4`; `0` for zero.
pub fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// `16.2`, or `≥ 44.8 (450 at 0)` when units underflowed to 0.
fn decades_text(m: &Measurement) -> String {
    match (m.decades, m.zero_units) {
        (Some(d), 0) => format!("{d:.1}"),
        (Some(d), z) => format!("≥ {d:.1} ({z} at 0)"),
        (None, 0) => "–".to_string(),
        (None, z) => format!("– ({z} at 0)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_ratio_and_decades() {
        // Norms 1e-3, 1e-2, 0.5, 2: ratio 1e-3 / 2 = 5e-4; span log10(2 / 1e-3) = 3.30.
        let m = Measurement::of(0, &[(1, 1e-3), (2, 1e-2), (3, 0.5), (4, 2.0)], &[]).unwrap();
        assert_eq!((m.input_side, m.output_side), (1e-3, 2.0));
        assert!((m.ratio().unwrap() - 5e-4).abs() < 1e-15);
        assert!((m.decades.unwrap() - 2000f64.log10()).abs() < 1e-12);
        assert_eq!(m.zero_units, 0);
        assert_eq!(decades_text(&m), "3.3");
        assert!(Measurement::of(0, &[], &[]).is_none());
        assert!(!m.input_overflowed());
    }

    #[test]
    fn zero_norms_make_the_span_a_lower_bound() {
        // Units 1–2 underflowed: the ratio is 0, the span over 1e-30..1 is at least 30.
        let m = Measurement::of(7, &[(1, 0.0), (2, 0.0), (3, 1e-30), (4, 1.0)], &[]).unwrap();
        assert_eq!(m.ratio(), Some(0.0));
        assert_eq!(m.zero_units, 2);
        assert_eq!(decades_text(&m), "≥ 30.0 (2 at 0)");
        let flat_zero = Measurement::of(0, &[(1, 1.0), (2, 0.0)], &[]).unwrap();
        assert_eq!(flat_zero.ratio(), None);
        assert_eq!(decades_text(&flat_zero), "– (1 at 0)");
    }

    #[test]
    fn overflowed_input_units_make_norm_ratio_and_span_lower_bounds() {
        // units 1–3 of 5 overflowed: unit 4 stands for the input side
        let m = Measurement::of(0, &[(4, 7.15e38), (5, 1.0)], &[1, 2, 3]).unwrap();
        assert_eq!(m.overflowed, Some((1, 3, 3)));
        assert!(m.input_overflowed());
        // overflow elsewhere leaves the input side measured
        let inner = Measurement::of(0, &[(1, 2.0), (3, 1.0)], &[2]).unwrap();
        assert!(!inner.input_overflowed());
        let experiment = Experiment::parse(
            std::path::Path::new("g.toml"),
            "kind = \"gradients\"\ntitle = \"g\"\nsource = \"s\"\n[model]\ndepth = 8\n\
             [[variants]]\nname = \"v\"\n[profiles.p]\nseeds = [0]\n\
             protocol = { batch_size = 8, iterations = 1, lr = 0.1, lr_drops = [] }\n",
        )
        .unwrap();
        let rows: Vec<spec::NormRow> = [(1, f64::INFINITY), (2, f64::NAN), (3, 7.15e38), (4, 1.0)]
            .into_iter()
            .map(|(unit, norm)| spec::NormRow {
                seed: 0,
                iteration: 0,
                unit,
                norm,
            })
            .collect();
        let results = GradientResults {
            dir: "g".into(),
            variants: vec![VariantGradients {
                name: "v".into(),
                norms: Some(crate::results::average_norms("v", &rows)),
                record: None,
            }],
            notes: Vec::new(),
        };
        let md = GradientTable::new(&experiment, "p", &[0], &results).to_markdown();
        assert!(
            md.contains("| ≥ 7.15e38 (units 1–2 overflowed) | 1.00e0 | ≥ 7.15e38 | ≥ 38.9 |"),
            "{md}"
        );
    }

    #[test]
    fn scientific_numbers() {
        assert_eq!(sci(0.000123456), "1.23e-4");
        assert_eq!(sci(1.5), "1.50e0");
        assert_eq!(sci(0.0), "0");
    }
}
