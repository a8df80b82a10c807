//! The table of an experiment's profile: one row per variant (in file order) with the final
//! test errors of its seeds against the paper's number, and a header that says where the
//! numbers come from (data, devices, revisions, runs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::comparisons::{self, Comparison};
use crate::gates::GateTable;
use crate::results::{notes_markdown, ProfileResults, VariantRuns};
use crate::stats::Summary;
use spec::{Experiment, Fingerprint, PaperNumber};

/// The verdict on a variant, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer seeds finished than the profile lists.
    Incomplete,
    /// At least one seed diverged.
    Diverged,
    /// Median final test error above the threshold (Identity Mappings: 20%).
    Fail,
    /// Every seed finished but none reported a test error.
    NoTestError,
    Ok,
}

impl Verdict {
    /// The single word written to `table.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Incomplete => "incomplete",
            Verdict::Diverged => "diverged",
            Verdict::Fail => "fail",
            Verdict::NoTestError => "no-test-error",
            Verdict::Ok => "ok",
        }
    }
}

/// Which statistic of ours a difference to the paper takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// Our median against the one number the paper prints (one run, or Identity Mappings'
    /// median of 5).
    Median,
    /// Our mean against the mean of the paper's runs (He 2015, Table 6: ResNet-110).
    Mean,
}

impl Compared {
    /// The word written to `table.csv` (`diff_of`) and beside the difference in `table.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compared::Median => "median",
            Compared::Mean => "mean",
        }
    }
}

/// Ours − paper, and which of our statistics it takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub value: f64,
    pub of: Compared,
}

/// One variant's line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub variant: String,
    pub paper: Option<PaperNumber>,
    /// Seeds the profile lists.
    pub expected: usize,
    /// Seeds with a `final.json`.
    pub finished: usize,
    /// Finished seeds that diverged.
    pub diverged: usize,
    /// Unfinished seeds a live process is training now.
    pub running: usize,
    /// Unfinished seeds with epochs that nothing is training (to be resumed).
    pub interrupted: usize,
    /// Seeds whose records are damaged (the table's notes say which and what to do).
    pub damaged: usize,
    /// Final test errors of the finished seeds that did not diverge.
    pub summary: Option<Summary>,
    pub fail_above: f64,
}

impl Row {
    fn new(runs: &VariantRuns, default_fail_above: f64) -> Self {
        let errors: Vec<f64> = runs
            .runs
            .iter()
            .filter_map(|r| r.final_test_error())
            .collect();
        Self {
            variant: runs.name.clone(),
            paper: runs.paper,
            expected: runs.expected_seeds,
            finished: runs.finished().count(),
            diverged: runs.finished().filter(|r| r.diverged()).count(),
            running: runs.running(),
            interrupted: runs.interrupted(),
            damaged: runs.damaged,
            summary: Summary::of(&errors),
            fail_above: runs
                .finished()
                .map(|r| r.fail_above_percent)
                .next()
                .unwrap_or(default_fail_above),
        }
    }

    /// Ours − paper, like with like: our mean against the paper's mean where it gives mean ±
    /// std over runs, our median against a single number (`None` for `"fail"` or when either
    /// side is missing).
    pub fn diff(&self) -> Option<Difference> {
        let summary = self.summary?;
        match self.paper? {
            PaperNumber::Error(e) => Some(Difference {
                value: summary.median - e,
                of: Compared::Median,
            }),
            PaperNumber::Runs(runs) => Some(Difference {
                value: summary.mean - runs.mean,
                of: Compared::Mean,
            }),
            PaperNumber::Fail(_) => None,
        }
    }

    /// True when the median final test error is above the threshold.
    pub fn above_threshold(&self) -> bool {
        self.summary.is_some_and(|s| s.median > self.fail_above)
    }

    /// Incomplete, then diverged, then fail (median above the threshold), then ok.
    pub fn status(&self) -> Verdict {
        if self.finished < self.expected {
            Verdict::Incomplete
        } else if self.diverged > 0 {
            Verdict::Diverged
        } else if self.above_threshold() {
            Verdict::Fail
        } else if self.summary.is_none() {
            Verdict::NoTestError
        } else {
            Verdict::Ok
        }
    }

    /// The status as written in `table.md`, with the counts behind it.
    pub fn status_text(&self) -> String {
        let mut text = match self.status() {
            Verdict::Incomplete => format!("incomplete {}/{}", self.finished, self.expected),
            Verdict::Diverged => format!("diverged {}/{}", self.diverged, self.finished),
            Verdict::Fail => "fail".to_string(),
            Verdict::NoTestError => "no test error".to_string(),
            Verdict::Ok => "ok".to_string(),
        };
        let mut extra = Vec::new();
        if self.status() == Verdict::Incomplete {
            if self.diverged > 0 {
                extra.push(format!("{} diverged", self.diverged));
            }
            if self.running > 0 {
                extra.push(format!("{} running", self.running));
            }
            if self.interrupted > 0 {
                extra.push(format!("{} interrupted", self.interrupted));
            }
            if self.damaged > 0 {
                extra.push(format!("{} damaged, see notes", self.damaged));
            }
        }
        if self.above_threshold() {
            match self.status() {
                Verdict::Incomplete => extra.push("fail so far".to_string()),
                Verdict::Diverged => extra.push("the others fail".to_string()),
                _ => {}
            }
        }
        if !extra.is_empty() {
            let _ = write!(text, " ({})", extra.join(", "));
        }
        text
    }
}

/// Counts of a string field over the finished runs, most frequent first.
#[derive(Debug, Clone, Default)]
pub struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, value: Option<&str>) {
        let value = value.filter(|v| !v.is_empty()).unwrap_or("unknown");
        *self.0.entry(value.to_string()).or_default() += 1;
    }

    /// (value, runs), most runs first, ties by name.
    pub fn entries(&self) -> Vec<(&str, usize)> {
        let mut entries: Vec<_> = self.0.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        entries
    }

    /// The only value, when all runs agree.
    pub fn single(&self) -> Option<&str> {
        match self.0.len() {
            1 => self.0.keys().next().map(String::as_str),
            _ => None,
        }
    }

    /// `a (3 runs); b (1 run)`, or `a` alone when every run agrees.
    pub fn describe(&self, quote: bool) -> String {
        let q = |s: &str| {
            if quote {
                format!("`{s}`")
            } else {
                s.to_string()
            }
        };
        if let Some(only) = self.single() {
            return q(only);
        }
        self.entries()
            .iter()
            .map(|(value, n)| format!("{} ({n} run{})", q(value), if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Where the numbers of a table come from, gathered from every `final.json`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub data_sources: Tally,
    pub data_digests: Tally,
    pub devices: Tally,
    pub revisions: Tally,
    pub libtorch: Tally,
    /// Depths of the finished runs that recorded one (in their `config.toml`); empty for
    /// gradients tables.
    pub depths: Tally,
    /// The precisions of the finished runs; empty for gradients tables.
    pub precisions: Tally,
    /// How BN–ReLU ran, over the finished runs that recorded it.
    pub bn_relu: Tally,
    /// Each finished run's training time (`wall_s`, seconds) and the models it was stacked
    /// with (which shared that time).
    pub wall_s: Vec<(f64, usize)>,
    pub finished: usize,
    pub expected: usize,
    pub running: usize,
    pub interrupted: usize,
    pub diverged: usize,
}

impl Sources {
    /// Tallies the `final.json` of every finished run of the profile.
    pub fn of(results: &ProfileResults) -> Self {
        let mut p = Self::default();
        for record in results.finished() {
            // a run resumed by another build counts as its chain of revisions, `a → b`
            p.add(
                &record.data,
                &record.provenance.device,
                &record.revisions(),
                &record.provenance.libtorch,
            );
            // a run resumed on another device or libtorch counts on each it trained on
            let mut devices = BTreeSet::from([record.provenance.device.as_str()]);
            let mut libtorch = BTreeSet::from([record.provenance.libtorch.as_str()]);
            for stretch in &record.stretches {
                if devices.insert(&stretch.device) {
                    p.devices.add(Some(&stretch.device));
                }
                if libtorch.insert(&stretch.libtorch) {
                    p.libtorch.add(Some(&stretch.libtorch));
                }
            }
            p.diverged += usize::from(record.diverged());
            p.precisions.add(Some(&said(&record.precision)));
            if let Some(bn_relu) = record.bn_relu {
                p.bn_relu.add(Some(&said(&bn_relu)));
            }
            p.wall_s.push((record.wall_s, record.stacked_with.max(1)));
        }
        let finished_runs = results.variants.iter().flat_map(|v| &v.runs);
        for run in finished_runs.filter(|run| run.final_record.is_some()) {
            if let Some(depth) = run.depth {
                p.depths.add(Some(&depth.to_string()));
            }
        }
        p.expected = results.variants.iter().map(|v| v.expected_seeds).sum();
        p.running = results.variants.iter().map(VariantRuns::running).sum();
        p.interrupted = results.variants.iter().map(VariantRuns::interrupted).sum();
        p
    }

    /// Counts one finished run (or one gradients measurement) with what it recorded.
    pub fn add(&mut self, data: &Fingerprint, device: &str, revision: &str, libtorch: &str) {
        self.data_sources.add(Some(&data.source));
        self.data_digests.add(Some(&data.digest));
        self.devices.add(Some(device));
        self.revisions.add(Some(revision));
        self.libtorch.add(Some(libtorch));
        self.finished += 1;
    }

    /// The depths the finished runs trained, ascending.
    pub fn trained_depths(&self) -> Vec<usize> {
        let mut depths: Vec<usize> = self
            .depths
            .0
            .keys()
            .filter_map(|d| d.parse().ok())
            .collect();
        depths.sort_unstable();
        depths
    }

    /// The data line of the table's header.
    pub fn data_description(&self) -> String {
        if self.finished == 0 {
            return "unknown (no finished run yet)".to_string();
        }
        match self.data_sources.single() {
            Some(source) => source.to_string(),
            None => format!("**runs disagree**: {}", self.data_sources.describe(false)),
        }
    }

    /// Seconds the finished runs trained, a stacked group's time once.
    pub fn training_seconds(&self) -> f64 {
        self.wall_s.iter().map(|&(w, k)| w / k as f64).sum()
    }

    /// How the runs were trained, in a few words for figure titles: `trained on cpu AMD EPYC
    /// (2 threads) · fp32 · 7.9 h of training in all`; `None` before any run finished.
    pub fn trained_label(&self) -> Option<String> {
        if self.finished == 0 {
            return None;
        }
        let see = |what: &str| format!("{what} (see table.md)");
        let mut parts = vec![match self.devices.single() {
            Some(device) => format!("trained on {device}"),
            None => see("trained on several devices"),
        }];
        match self.precisions.single() {
            Some(precision) => parts.push(precision.to_string()),
            None if !self.precisions.0.is_empty() => parts.push(see("mixed precisions")),
            None => {}
        }
        if !self.wall_s.is_empty() {
            parts.push(format!(
                "{} of training in all",
                spec::human_seconds(self.training_seconds())
            ));
        }
        if self.finished < self.expected {
            parts.push(format!(
                "{} of {} runs finished",
                self.finished, self.expected
            ));
        }
        Some(parts.join(" · "))
    }

    /// The data in a few words for figure titles: `CIFAR-10, JPEG-75 copy`.
    pub fn data_label(&self) -> String {
        if self.finished == 0 {
            return "data not recorded".to_string();
        }
        match self.data_sources.single() {
            Some(source) => short_source(source),
            None => "mixed data (see table.md)".to_string(),
        }
    }
}

/// A record's enum as its file spells it (`fp32`, `fused`).
fn said(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

/// A data source without its parenthesised remark: `CIFAR-10, JPEG-75 copy (not the original
/// pixels)` → `CIFAR-10, JPEG-75 copy`.
pub fn short_source(source: &str) -> String {
    source
        .split_once(" (")
        .map_or(source, |(head, _)| head)
        .trim()
        .to_string()
}

/// The rows and header of one profile of an experiment.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub source: String,
    pub profile: String,
    pub seeds: Vec<u64>,
    pub rows: Vec<Row>,
    pub provenance: Sources,
    pub fail_above: f64,
    pub notes: Vec<String>,
    /// The profile's results folder, where the table lies (left out of the paths the
    /// written notes name).
    pub dir: PathBuf,
    /// The gated variants' logged gates, when any run has them.
    pub gates: Option<GateTable>,
    /// The differences the experiment names, for this profile's variants.
    pub comparisons: Vec<Comparison>,
    /// The differences (a, b) the experiment names that this profile cannot make, and the
    /// variants they need that it does not train (in the file's order).
    pub comparisons_left_out: (Vec<(String, String)>, Vec<String>),
}

impl Table {
    /// One row per variant of the experiment file, in file order.
    pub fn new(
        experiment: &Experiment,
        profile: &str,
        seeds: &[u64],
        results: &ProfileResults,
    ) -> Self {
        let fail_above = results
            .finished()
            .map(|r| r.fail_above_percent)
            .next()
            .unwrap_or(spec::protocol::DEFAULT_FAIL_ABOVE_PERCENT);
        let rows: Vec<Row> = results
            .variants
            .iter()
            .map(|v| Row::new(v, fail_above))
            .collect();
        let named = experiment
            .profile(profile)
            .map(|p| experiment.comparisons(p))
            .unwrap_or_default();
        let comparisons = named
            .iter()
            .filter_map(|(a, b)| Comparison::of(&rows, a, b))
            .collect();
        let comparisons_left_out: Vec<(String, String)> = experiment
            .compare
            .iter()
            .filter(|pair| !named.contains(pair))
            .cloned()
            .collect();
        // the variants those need that this profile does not train, in the file's order
        let untrained = experiment
            .variants
            .iter()
            .map(|v| &v.name)
            .filter(|v| comparisons_left_out.iter().any(|(a, b)| a == *v || b == *v))
            .filter(|v| !rows.iter().any(|r| &r.variant == *v))
            .cloned()
            .collect();
        Self {
            title: experiment.title.clone(),
            source: experiment.source.clone(),
            profile: profile.to_string(),
            seeds: seeds.to_vec(),
            rows,
            provenance: Sources::of(results),
            fail_above,
            notes: results.notes.clone(),
            dir: results.dir.clone(),
            gates: GateTable::of(results),
            comparisons,
            comparisons_left_out: (comparisons_left_out, untrained),
        }
    }

    /// `table.csv`: one header row, one row per variant; numbers unformatted, empty if missing.
    /// `paper` is the paper's number, or the mean of its runs (then `paper_std` and
    /// `paper_best` hold the rest); `diff` is ours − paper, of the statistic `diff_of` names
    /// (`median` against a single number, `mean` against a mean).
    pub fn to_csv(&self) -> Result<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([
            "variant",
            "seeds_finished",
            "seeds_expected",
            "seeds_diverged",
            "seeds_running",
            "n_errors",
            "mean",
            "std",
            "median",
            "min",
            "max",
            "paper",
            "diff",
            "status",
            "fail_above_percent",
            "paper_std",
            "paper_best",
            "diff_of",
        ])?;
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for row in &self.rows {
            let s = row.summary;
            let paper_runs = row.paper.and_then(|p| p.runs());
            writer.write_record([
                row.variant.clone(),
                row.finished.to_string(),
                row.expected.to_string(),
                row.diverged.to_string(),
                row.running.to_string(),
                s.map_or(0, |s| s.n).to_string(),
                num(s.map(|s| s.mean)),
                num(s.and_then(|s| s.std)),
                num(s.map(|s| s.median)),
                num(s.map(|s| s.min)),
                num(s.map(|s| s.max)),
                match row.paper {
                    Some(PaperNumber::Error(e)) => e.to_string(),
                    Some(PaperNumber::Runs(runs)) => runs.mean.to_string(),
                    Some(PaperNumber::Fail(_)) => "fail".to_string(),
                    None => String::new(),
                },
                num(row.diff().map(|d| d.value)),
                row.status().as_str().to_string(),
                row.fail_above.to_string(),
                num(paper_runs.map(|r| r.std)),
                num(paper_runs.and_then(|r| r.best)),
                row.diff().map_or("", |d| d.of.as_str()).to_string(),
            ])?;
        }
        Ok(String::from_utf8(writer.into_inner()?)?)
    }

    /// `table.md`: the header (title, source, profile, data, devices, revisions, runs) and
    /// the table in GitHub Markdown.
    pub fn to_markdown(&self) -> String {
        let p = &self.provenance;
        let mut md = markdown_header(&self.title, &self.source, &self.profile, &self.seeds, p);
        let mut runs = format!(
            "- **Runs**: {} finished of {} expected ({} variants × {} seeds)",
            p.finished,
            p.expected,
            self.rows.len(),
            self.seeds.len()
        );
        if p.running > 0 {
            let _ = write!(runs, ", {} in progress", p.running);
        }
        if p.interrupted > 0 {
            let _ = write!(
                runs,
                ", {} interrupted (nothing is training them; `runner train` resumes them)",
                p.interrupted
            );
        }
        if p.diverged > 0 {
            let _ = write!(runs, ", {} diverged", p.diverged);
        }
        let _ = writeln!(md, "{runs}");
        let _ = writeln!(
            md,
            "- **Fail**: median final test error above {}%\n",
            self.fail_above
        );
        // Where the paper gives a mean for some variant, the differences are of two kinds and
        // each says which; otherwise all are medians, as the column's name says.
        let mixed = self
            .rows
            .iter()
            .any(|r| r.paper.is_some_and(|p| p.runs().is_some()));
        let diff_column = if mixed {
            "ours − paper"
        } else {
            "median − paper"
        };
        let _ = writeln!(
            md,
            "| variant | seeds | mean ± std | median | min–max | paper | {diff_column} | status |\n\
             |---|--:|--:|--:|--:|--:|--:|---|"
        );
        for row in &self.rows {
            let (mean, median, range) = match row.summary {
                Some(s) => (
                    match s.std {
                        Some(std) => format!("{:.2} ± {std:.2}", s.mean),
                        None => format!("{:.2}", s.mean),
                    },
                    format!("{:.2}", s.median),
                    format!("{:.2}–{:.2}", s.min, s.max),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let diff = match row.diff() {
                Some(d) if mixed => format!("{:+.2} ({})", d.value, d.of.as_str()),
                Some(d) => format!("{:+.2}", d.value),
                None => "–".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {}/{} | {mean} | {median} | {range} | {} | {diff} | {} |",
                row.variant,
                row.finished,
                row.expected,
                row.paper.map_or("–".to_string(), |p| p.to_string()),
                row.status_text(),
            );
        }
        md.push_str(
            "\nFinal test error in %, over the finished seeds that did not diverge; std is the \
             sample standard deviation (n − 1). `seeds` = finished / listed in the profile.\n",
        );
        if mixed {
            md.push_str(
                "\nours − paper compares like with like: our mean against the paper's mean where \
                 the paper gives mean ± std over its runs (mean), else our median against the \
                 paper's number (median).\n",
            );
        }
        if !self.comparisons.is_empty() || !self.comparisons_left_out.0.is_empty() {
            md.push_str("\n## Comparisons\n\n");
            md.push_str(&comparisons::to_markdown(&self.comparisons));
            md.push_str(&comparisons::left_out_markdown(&self.comparisons_left_out));
        }
        md.push_str(&notes_markdown(&self.notes, &self.dir));
        if let Some(gates) = &self.gates {
            md.push_str(&gates.to_markdown());
        }
        md
    }
}

/// The lines every `table.md` begins with: title, paper, profile and seeds, and where the
/// numbers come from (data, devices, revisions, libtorch) once any run has finished.
pub fn markdown_header(
    title: &str,
    source: &str,
    profile: &str,
    seeds: &[u64],
    p: &Sources,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(md, "Paper: {source}\n");
    let listed: Vec<String> = seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(
        md,
        "- **Profile**: `{profile}`, seeds {} ({} per variant)",
        listed.join(", "),
        seeds.len()
    );
    let mut data = format!("- **Data**: {}", p.data_description());
    if p.finished > 0 {
        let _ = write!(data, "; fingerprint {}", p.data_digests.describe(true));
    }
    let _ = writeln!(md, "{data}");
    if p.finished > 0 {
        let _ = writeln!(md, "- **Devices**: {}", p.devices.describe(false));
        let _ = writeln!(md, "- **Git revisions**: {}", p.revisions.describe(true));
        let _ = writeln!(md, "- **libtorch**: {}", p.libtorch.describe(false));
    }
    if !p.precisions.0.is_empty() {
        let _ = writeln!(md, "- **Precision**: {}", p.precisions.describe(false));
    }
    if !p.bn_relu.0.is_empty() {
        let recorded: usize = p.bn_relu.0.values().sum();
        let mut line = format!("- **BN–ReLU**: {}", p.bn_relu.describe(false));
        if recorded < p.finished {
            let n = p.finished - recorded;
            let _ = write!(
                line,
                "; not recorded ({n} run{})",
                if n == 1 { "" } else { "s" }
            );
        }
        let _ = writeln!(md, "{line}");
    }
    let walls = p.wall_s.iter().map(|&(w, _)| w);
    if let (Some(least), Some(most)) = (walls.clone().reduce(f64::min), walls.reduce(f64::max)) {
        let (least, most) = (spec::human_seconds(least), spec::human_seconds(most));
        let each = match p.wall_s.len() {
            1 => String::new(),
            _ if least == most => format!(", {least} a run"),
            _ => format!(", {least} to {most} a run"),
        };
        let stacked = if p.wall_s.iter().any(|&(_, k)| k > 1) {
            "; runs stacked into one network share its time"
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "- **Training time**: {} in all{each} (wall clock on the devices above, evaluation \
             included{stacked})",
            spec::human_seconds(p.training_seconds())
        );
    }
    if !p.depths.0.is_empty() {
        let _ = writeln!(md, "- **Depth trained**: {}", p.depths.describe(false));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::FailMarker;

    fn row(finished: usize, diverged: usize, errors: &[f64]) -> Row {
        Row {
            variant: "v".into(),
            paper: Some(PaperNumber::Error(6.61)),
            expected: 5,
            finished,
            diverged,
            running: 0,
            interrupted: 0,
            damaged: 0,
            summary: Summary::of(errors),
            fail_above: 20.0,
        }
    }

    #[test]
    fn status_precedence_incomplete_diverged_fail_ok() {
        assert_eq!(row(5, 0, &[6.5, 6.7, 6.6, 7.0, 6.2]).status(), Verdict::Ok);
        assert_eq!(
            row(5, 0, &[85.0, 90.0, 88.0, 91.0, 89.5]).status(),
            Verdict::Fail
        );
        let diverged = row(5, 2, &[30.0, 25.0, 40.0]);
        assert_eq!(diverged.status(), Verdict::Diverged);
        assert_eq!(diverged.status_text(), "diverged 2/5 (the others fail)");
        let incomplete = row(3, 1, &[6.0, 7.0]);
        assert_eq!(incomplete.status(), Verdict::Incomplete);
        assert_eq!(incomplete.status_text(), "incomplete 3/5 (1 diverged)");
        assert_eq!(row(0, 0, &[]).status_text(), "incomplete 0/5");
        assert_eq!(
            row(3, 0, &[50.0, 60.0, 70.0]).status_text(),
            "incomplete 3/5 (fail so far)"
        );
        assert_eq!(row(5, 0, &[]).status(), Verdict::NoTestError);
    }

    #[test]
    fn threshold_is_strictly_above() {
        assert_eq!(row(5, 0, &[20.0]).status(), Verdict::Ok);
        assert_eq!(row(5, 0, &[20.01]).status(), Verdict::Fail);
    }

    #[test]
    fn diff_needs_two_numbers() {
        // median 6.6 − paper 6.61 = −0.01
        let r = row(5, 0, &[6.5, 6.7, 6.6, 7.0, 6.2]);
        let d = r.diff().unwrap();
        assert!((d.value + 0.01).abs() < 1e-12);
        assert_eq!(d.of, Compared::Median);
        let mut fail = r.clone();
        fail.paper = Some(PaperNumber::Fail(FailMarker::Fail));
        assert_eq!(fail.diff(), None);
        assert_eq!(row(0, 0, &[]).diff(), None);
    }

    #[test]
    fn diff_against_a_paper_mean_takes_our_mean() {
        // 6.0 6.1 6.2 6.3 8.4: median 6.2, mean 33.0 / 5 = 6.6; paper mean 6.61 ± 0.16,
        // best 6.43: mean − mean = −0.01 (the median would give −0.41, the best −0.23)
        let mut r = row(5, 0, &[6.0, 6.1, 6.2, 6.3, 8.4]);
        r.paper = Some(PaperNumber::Runs(spec::experiment::PaperRuns {
            mean: 6.61,
            std: 0.16,
            best: Some(6.43),
        }));
        let d = r.diff().unwrap();
        assert_eq!(d.of, Compared::Mean);
        assert!((d.value + 0.01).abs() < 1e-12, "{}", d.value);
    }

    /// The header says the precision and BN–ReLU path of the runs (counting those that did
    /// not record it) and their training time, a stacked group's time once.
    #[test]
    fn the_header_says_precision_bn_relu_and_training_time() {
        let mut p = Sources::default();
        for (bn_relu, wall_s, stacked) in [
            (Some("fused"), 3600.0, 1),
            (Some("fused"), 1800.0, 2),
            (Some("fused"), 1800.0, 2),
            (None, 600.0, 1),
        ] {
            p.finished += 1;
            p.devices.add(Some("cpu X (2 threads)"));
            p.precisions.add(Some("fp32"));
            if let Some(b) = bn_relu {
                p.bn_relu.add(Some(b));
            }
            p.wall_s.push((wall_s, stacked));
        }
        let md = markdown_header("t", "s", "cpu", &[0, 1], &p);
        assert!(md.contains("- **Precision**: fp32\n"), "{md}");
        assert!(
            md.contains("- **BN–ReLU**: fused; not recorded (1 run)\n"),
            "{md}"
        );
        // 1 h + 30 min (two runs stacked) + 10 min
        assert!(
            md.contains("- **Training time**: 1.7 h in all, 10 min to 60 min a run"),
            "{md}"
        );
        assert!(md.contains("share its time"), "{md}");
        assert_eq!(
            p.trained_label().unwrap(),
            "trained on cpu X (2 threads) · fp32 · 1.7 h of training in all"
        );
        p.precisions.add(Some("bf16"));
        let md = markdown_header("t", "s", "cpu", &[0, 1], &p);
        assert!(
            md.contains("- **Precision**: fp32 (4 runs); bf16 (1 run)"),
            "{md}"
        );
        assert_eq!(
            p.trained_label().unwrap(),
            "trained on cpu X (2 threads) · mixed precisions (see table.md) · 1.7 h of training \
             in all"
        );
        // gradients tables record neither
        let md = markdown_header("t", "s", "cpu", &[0], &Sources::default());
        assert!(
            !md.contains("Precision") && !md.contains("Training time"),
            "{md}"
        );
    }

    #[test]
    fn short_source_drops_the_remark() {
        assert_eq!(
            short_source("CIFAR-10, JPEG-75 copy (not the original pixels)"),
            "CIFAR-10, JPEG-75 copy"
        );
        assert_eq!(
            short_source("original CIFAR-10 (archive MD5 verified)"),
            "original CIFAR-10"
        );
        assert_eq!(short_source("unverified copy"), "unverified copy");
    }
}
