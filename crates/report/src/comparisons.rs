//! Is a difference between two variants larger than seed noise? For each comparison the
//! experiment names (`compare`, or every variant against the first), Δ = mean(a) − mean(b)
//! of the final test errors, its 95% Welch interval, the paper's Δ, and where the interval
//! includes 0, the seeds per side that would resolve the observed Δ at the observed spread.

use std::fmt::Write as _;

use anyhow::Result;
use spec::PaperNumber;

use crate::stats::{seeds_needed, Summary, Welch};
use crate::table::Row;

/// The confidence level of the intervals.
pub const LEVEL: f64 = 0.95;
/// The test behind "seeds to resolve": two-sided, at this significance...
pub const ALPHA: f64 = 0.05;
/// ...with this power.
pub const POWER: f64 = 0.8;
/// The most seeds per side worth naming; beyond it, "more than".
pub const MAX_SEEDS: u64 = 1000;

/// What can be said of one comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A side has no finished seed that did not diverge: why, per side ("x: none finished
    /// yet", "x: every seed diverged", "x: every finished seed diverged" while others are to
    /// come or damaged).
    Missing(String),
    /// A side has one seed (or neither has a spread): no interval.
    NoInterval,
    /// The interval leaves out 0.
    Resolved(Welch),
    /// The interval includes 0; the seeds per side that would resolve the observed Δ at the
    /// observed spread (`None`: more than [`MAX_SEEDS`]).
    Unresolved(Welch, Option<u64>),
}

/// One line of the comparison table: a − b.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub summary_a: Option<Summary>,
    pub summary_b: Option<Summary>,
    /// The paper's a − b, where it gives a number for both (a mean where it gives mean ± std).
    pub paper_delta: Option<f64>,
    pub verdict: Verdict,
}

fn paper_value(paper: Option<PaperNumber>) -> Option<f64> {
    let paper = paper?;
    paper.error().or(paper.runs().map(|r| r.mean))
}

impl Comparison {
    /// a − b from the table's rows; `None` when either is not a row.
    pub fn of(rows: &[Row], a: &str, b: &str) -> Option<Self> {
        let row = |name: &str| rows.iter().find(|r| r.variant == name);
        let (ra, rb) = (row(a)?, row(b)?);
        let verdict = match (&ra.summary, &rb.summary) {
            (Some(sa), Some(sb)) => match Welch::of(sa, sb, LEVEL) {
                None => Verdict::NoInterval,
                Some(w) if w.excludes_zero() => Verdict::Resolved(w),
                Some(w) => {
                    let (sd_a, sd_b) = (sa.std.unwrap_or(0.0), sb.std.unwrap_or(0.0));
                    let n = seeds_needed(w.delta, sd_a, sd_b, ALPHA, POWER, MAX_SEEDS);
                    Verdict::Unresolved(w, n)
                }
            },
            _ => {
                let why: Vec<String> = [ra, rb]
                    .iter()
                    .filter(|r| r.summary.is_none())
                    .map(|r| {
                        let why = match (r.finished, r.diverged) {
                            (0, _) if r.damaged > 0 => "none finished",
                            (0, _) => "none finished yet",
                            (f, d) if f == d && (r.damaged > 0 || f < r.expected) => {
                                "every finished seed diverged"
                            }
                            (f, d) if f == d => "every seed diverged",
                            _ => "no finite test error",
                        };
                        let damaged = if r.damaged > 0 {
                            format!(" ({} damaged, see the table's notes)", r.damaged)
                        } else {
                            String::new()
                        };
                        format!("{}: {why}{damaged}", r.variant)
                    })
                    .collect();
                Verdict::Missing(why.join("; "))
            }
        };
        Some(Self {
            a: a.to_string(),
            b: b.to_string(),
            summary_a: ra.summary,
            summary_b: rb.summary,
            paper_delta: paper_value(ra.paper)
                .zip(paper_value(rb.paper))
                .map(|(x, y)| x - y),
            verdict,
        })
    }

    /// mean(a) − mean(b), when both sides have a mean.
    pub fn delta(&self) -> Option<f64> {
        Some(self.summary_a?.mean - self.summary_b?.mean)
    }

    fn welch(&self) -> Option<&Welch> {
        match &self.verdict {
            Verdict::Resolved(w) | Verdict::Unresolved(w, _) => Some(w),
            Verdict::Missing(_) | Verdict::NoInterval => None,
        }
    }

    fn n(summary: Option<Summary>) -> usize {
        summary.map_or(0, |s| s.n)
    }
}

/// `comparisons.csv`: one row per comparison; numbers unformatted, empty where missing.
pub fn to_csv(comparisons: &[Comparison]) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "a",
        "b",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "delta",
        "ci_low",
        "ci_high",
        "df",
        "p",
        "excludes_zero",
        "paper_delta",
        "seeds_per_side_to_resolve",
    ])?;
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for c in comparisons {
        let w = c.welch();
        let needed = match c.verdict {
            Verdict::Unresolved(_, Some(n)) => n.to_string(),
            Verdict::Unresolved(_, None) => format!(">{MAX_SEEDS}"),
            _ => String::new(),
        };
        writer.write_record([
            c.a.clone(),
            c.b.clone(),
            Comparison::n(c.summary_a).to_string(),
            Comparison::n(c.summary_b).to_string(),
            num(c.summary_a.map(|s| s.mean)),
            num(c.summary_b.map(|s| s.mean)),
            num(c.delta()),
            num(w.map(|w| w.low)),
            num(w.map(|w| w.high)),
            num(w.map(|w| w.df)),
            num(w.map(|w| w.p)),
            w.map(|w| w.excludes_zero().to_string()).unwrap_or_default(),
            num(c.paper_delta),
            needed,
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// The comparison table in GitHub Markdown, with a footer saying how it was computed; empty
/// when there are no comparisons.
pub fn to_markdown(comparisons: &[Comparison]) -> String {
    if comparisons.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "| a − b | seeds (a, b) | Δ | 95% interval | excludes 0 | paper Δ | seeds a side to resolve |\n\
         |---|--:|--:|--:|---|--:|--:|\n",
    );
    for c in comparisons {
        let (n_a, n_b) = (Comparison::n(c.summary_a), Comparison::n(c.summary_b));
        let delta = c.delta().map_or("–".to_string(), |d| format!("{d:+.2}"));
        let (interval, excludes, needed) = match c.verdict {
            Verdict::Missing(ref why) => (why.clone(), "–", "–".to_string()),
            Verdict::NoInterval if n_a < 2 || n_b < 2 => {
                ("n = 1: no interval".to_string(), "–", "–".to_string())
            }
            Verdict::NoInterval => ("no spread: no interval".to_string(), "–", "–".to_string()),
            Verdict::Resolved(w) => (interval_text(&w), "yes", "–".to_string()),
            Verdict::Unresolved(w, n) => (
                interval_text(&w),
                "no",
                n.map_or(format!("more than {MAX_SEEDS}"), |n| n.to_string()),
            ),
        };
        let paper = c
            .paper_delta
            .map_or("–".to_string(), |d| format!("{d:+.2}"));
        let _ = writeln!(
            md,
            "| {} − {} | {n_a}, {n_b} | {delta} | {interval} | {excludes} | {paper} | {needed} |",
            c.a, c.b
        );
    }
    md.push_str(
        "\nΔ = mean(a) − mean(b) of the final test errors in points, over each side's finished \
         seeds that did not diverge. The 95% interval is Welch's t interval (unequal variances, \
         Welch–Satterthwaite degrees of freedom); with one seed on a side there is none. Where \
         the interval includes 0, the last column is the seeds per side the same Welch test at \
         5% would need to detect the observed Δ with 80% power if each side kept its observed \
         standard deviation (a rough figure: it takes a few seeds' spread and Δ as the true \
         ones). paper Δ is the difference of the papers' numbers as they report them (their \
         mean where they give mean ± std): medians of 5 runs in Identity Mappings' tables, so \
         there it is a difference of medians where ours is of means.\n",
    );
    md
}

/// The line under the comparisons naming those the experiment asks for that the profile
/// cannot make, as it does not train `untrained`; empty when there are none.
pub fn left_out_markdown((left_out, untrained): &(Vec<(String, String)>, Vec<String>)) -> String {
    if left_out.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = left_out.iter().map(|(a, b)| format!("{a} − {b}")).collect();
    format!(
        "\nNot compared here, as this profile does not train {}: {}.\n",
        untrained.join(", "),
        pairs.join("; ")
    )
}

fn interval_text(w: &Welch) -> String {
    format!("[{:+.2}, {:+.2}]", w.low, w.high)
}
