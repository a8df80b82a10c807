//! Whether the gates of gated shortcuts (Identity Mappings Fig. 2c, 2d) opened: the mean gate
//! g(x) = σ(W_g x + b_g) the runner logs at each evaluation for the first, middle and last
//! residual unit (`gate_first`, `gate_middle`, `gate_last` in `epochs.csv`), shown at three
//! moments of each run: its first evaluation, its last at the highest learning rate (before
//! the first drop) and its last.

use std::fmt::Write as _;

use spec::{gate_units, EpochRow};

use crate::results::ProfileResults;

/// The logged gates of one evaluated epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSnapshot {
    pub epoch: i64,
    /// First, middle and last unit.
    pub gates: [f64; 3],
}

impl GateSnapshot {
    fn of(row: &EpochRow) -> Option<Self> {
        Some(Self {
            epoch: row.epoch,
            gates: row.gates()?,
        })
    }
}

/// One seed of a gated variant.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRow {
    pub variant: String,
    pub seed: u64,
    /// Residual units of its net, when its `config.toml` says.
    pub units: Option<usize>,
    pub first: GateSnapshot,
    /// The last evaluation at the run's highest learning rate: what the gates reached before
    /// the first lr drop.
    pub before_drop: GateSnapshot,
    pub last: GateSnapshot,
}

/// Every seed, of every variant, whose rows hold gates (file order, then seed order).
#[derive(Debug, Clone, PartialEq)]
pub struct GateTable {
    pub rows: Vec<GateRow>,
}

impl GateTable {
    /// `None` when no run logged gates (no gated variant, or runs from before gates were
    /// logged).
    pub fn of(results: &ProfileResults) -> Option<Self> {
        let rows: Vec<GateRow> = results
            .variants
            .iter()
            .flat_map(|v| v.runs.iter().map(move |run| (v, run)))
            .filter_map(|(variant, run)| {
                let logged: Vec<&EpochRow> =
                    run.epochs.iter().filter(|r| r.gates().is_some()).collect();
                let top_lr = logged
                    .iter()
                    .map(|r| r.lr)
                    .fold(f64::NEG_INFINITY, f64::max);
                let before_drop = logged.iter().rev().find(|r| r.lr == top_lr)?;
                Some(GateRow {
                    variant: variant.name.clone(),
                    seed: run.seed,
                    units: run.units,
                    first: GateSnapshot::of(logged.first()?)?,
                    before_drop: GateSnapshot::of(before_drop)?,
                    last: GateSnapshot::of(logged.last()?)?,
                })
            })
            .collect();
        (!rows.is_empty()).then_some(Self { rows })
    }

    /// A `## Gates` section for `table.md`.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("\n## Gates\n\n");
        let units: Vec<Option<usize>> = self.rows.iter().map(|r| r.units).collect();
        let which = match units.first() {
            Some(&Some(n)) if units.iter().all(|&u| u == Some(n)) => {
                let [a, b, c] = gate_units(n).map(|u| u + 1);
                format!("units {a} / {b} / {c} of {n}")
            }
            _ => "first / middle / last unit".to_string(),
        };
        let _ = writeln!(
            md,
            "Mean gate g(x) = σ(W_g x + b_g) over the test images at residual {which}, \
             as logged at each evaluation (`gate_first`, `gate_middle`, `gate_last` in \
             `epochs.csv`). Exclusive gating weighs the residual branch by g and the shortcut \
             by 1 − g; shortcut-only gating weighs the shortcut by 1 − g and keeps the \
             residual branch whole. A gate starts near σ(b_g) (σ(−6) ≈ 0.0025), moved by W_g x: \
             measured on ResNet-32 at initialisation (random inputs), each unit's mean gate at \
             b_g = −6 and −7 is 1–2.2× σ(b_g) with exclusive gating and 2–17× (−6) or 2–28× \
             (−7) with shortcut-only gating; at b_g = 0, within 0.07 of ½ \
             (`experiments/shortcuts.toml`). The first evaluation follows the first epoch.\n"
        );
        md.push_str(
            "| variant | seed | first evaluation | last before the first lr drop | last |\n\
             |---|--:|--:|--:|--:|\n",
        );
        let cell = |s: &GateSnapshot| {
            let [a, b, c] = s.gates;
            format!("epoch {}: {a:.4} / {b:.4} / {c:.4}", s.epoch)
        };
        for row in &self.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                row.variant,
                row.seed,
                cell(&row.first),
                cell(&row.before_drop),
                cell(&row.last)
            );
        }
        md
    }
}
