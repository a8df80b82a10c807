//! Reading what `runner train` wrote: `results/<exp>/<profile>/<variant>/seed-<n>/` with
//! `epochs.csv` (one row per epoch, possibly of a run still in progress) and `final.json`
//! (present once the run is finished), and `results/gradients/<profile>/<variant>/norms.csv`.
//!
//! Reading is tolerant: extra fields in `final.json` and extra columns in the CSV files are
//! ignored, so the runner can add fields without breaking old reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::experiment::{ExperimentSpec, PaperNumber};

/// How a run ended (`final.json`'s `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Trained to the end, final test error at or below the fail threshold.
    Ok,
    /// Trained to the end, final test error above the threshold.
    Fail,
    /// The loss became NaN or infinite.
    Diverged,
    /// A status this version of `report` does not know.
    #[serde(other)]
    Other,
}

/// `final.json`'s `data`: the fingerprint of the CIFAR-10 files a run read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DataInfo {
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub original: Option<bool>,
}

/// `final.json`, the fields the report uses (all but `status` optional).
#[derive(Debug, Clone, Deserialize)]
pub struct FinalRecord {
    pub status: RunStatus,
    #[serde(default)]
    pub iterations: Option<i64>,
    #[serde(default)]
    pub diverged_at_iteration: Option<i64>,
    #[serde(default)]
    pub final_test_error: Option<f64>,
    #[serde(default)]
    pub final_train_error: Option<f64>,
    #[serde(default)]
    pub fail_above_percent: Option<f64>,
    #[serde(default)]
    pub wall_s: Option<f64>,
    #[serde(default)]
    pub data: Option<DataInfo>,
    #[serde(default)]
    pub git_revision: Option<String>,
    #[serde(default)]
    pub libtorch: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub stacked_with: Option<usize>,
}

impl FinalRecord {
    /// True when the run diverged.
    pub fn diverged(&self) -> bool {
        self.status == RunStatus::Diverged || self.diverged_at_iteration.is_some()
    }
}

/// One row of `epochs.csv` (errors in %).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EpochRow {
    pub iteration: i64,
    pub train_error: Option<f64>,
    /// Empty on epochs that were not evaluated.
    #[serde(default)]
    pub test_error: Option<f64>,
}

/// One seed's folder.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub seed: u64,
    /// `None` while the run is in progress (or was interrupted).
    pub final_record: Option<FinalRecord>,
    pub epochs: Vec<EpochRow>,
    /// The depth the run trained, from its `config.toml` (`None` if that does not say).
    pub depth: Option<usize>,
}

impl SeedRun {
    /// The final test error of a finished run that did not diverge.
    pub fn final_test_error(&self) -> Option<f64> {
        let record = self.final_record.as_ref()?;
        if record.diverged() {
            return None;
        }
        record.final_test_error.filter(|e| e.is_finite())
    }
}

/// A variant of the experiment with the seeds found on disk (in the profile's seed order).
#[derive(Debug, Clone)]
pub struct VariantRuns {
    pub name: String,
    pub paper: Option<PaperNumber>,
    /// Seeds the profile lists.
    pub expected_seeds: usize,
    /// Seeds of the profile with a folder (finished or not).
    pub runs: Vec<SeedRun>,
}

impl VariantRuns {
    /// Runs with a `final.json`.
    pub fn finished(&self) -> impl Iterator<Item = &FinalRecord> {
        self.runs.iter().filter_map(|run| run.final_record.as_ref())
    }

    /// Runs with epochs but no `final.json` yet.
    pub fn running(&self) -> usize {
        self.runs
            .iter()
            .filter(|run| run.final_record.is_none() && !run.epochs.is_empty())
            .count()
    }
}

/// Everything under `results/<exp>/<profile>/` for the variants of the experiment file.
#[derive(Debug, Clone)]
pub struct ProfileResults {
    pub dir: PathBuf,
    pub variants: Vec<VariantRuns>,
    /// Things worth saying in the table's notes (unreadable files, seeds outside the profile).
    pub notes: Vec<String>,
}

impl ProfileResults {
    /// Every `final.json` of the profile.
    pub fn finished(&self) -> impl Iterator<Item = &FinalRecord> {
        self.variants.iter().flat_map(|v| v.finished())
    }
}

/// Reads `dir` (= `results/<exp>/<profile>`) for every variant and seed of the profile.
/// A damaged file is reported in `notes` and its run counted as not there, so that one bad
/// file does not hide the rest of a sweep.
pub fn load(dir: &Path, experiment: &ExperimentSpec, seeds: &[u64]) -> Result<ProfileResults> {
    let mut notes = Vec::new();
    let mut variants = Vec::new();
    for spec in &experiment.variants {
        let variant_dir = dir.join(&spec.name);
        let mut runs = Vec::new();
        for &seed in seeds {
            let seed_dir = variant_dir.join(format!("seed-{seed}"));
            if !seed_dir.is_dir() {
                continue;
            }
            match load_seed(&seed_dir, seed) {
                Ok(run) => runs.push(run),
                Err(err) => notes.push(format!("{}: skipped ({err:#})", seed_dir.display())),
            }
        }
        notes.extend(extra_seed_folders(&variant_dir, seeds)?);
        variants.push(VariantRuns {
            name: spec.name.clone(),
            paper: spec.paper,
            expected_seeds: seeds.len(),
            runs,
        });
    }
    Ok(ProfileResults {
        dir: dir.to_path_buf(),
        variants,
        notes,
    })
}

fn load_seed(dir: &Path, seed: u64) -> Result<SeedRun> {
    let final_path = dir.join("final.json");
    let final_record = match std::fs::read(&final_path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<FinalRecord>(&bytes)
                .with_context(|| format!("{} is damaged", final_path.display()))?,
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", final_path.display()))
        }
    };
    let epochs_path = dir.join("epochs.csv");
    let epochs = if epochs_path.is_file() {
        read_csv::<EpochRow>(&epochs_path)?
    } else {
        Vec::new()
    };
    Ok(SeedRun {
        seed,
        final_record,
        epochs,
        depth: trained_depth(dir),
    })
}

/// `[model] depth` of the run's `config.toml` (written by the runner before training), read
/// leniently: the depth is a caption, not a reason to skip a run.
fn trained_depth(dir: &Path) -> Option<usize> {
    #[derive(Deserialize)]
    struct RunConfig {
        #[serde(default)]
        model: ModelInfo,
    }
    let text = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    toml::from_str::<RunConfig>(&text).ok()?.model.depth
}

/// Notes for `seed-<n>` folders of seeds the profile does not list (ignored in the table).
fn extra_seed_folders(variant_dir: &Path, seeds: &[u64]) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(variant_dir) else {
        return Ok(Vec::new());
    };
    let mut extra = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(seed) = name
            .strip_prefix("seed-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if !seeds.contains(&seed) {
                extra.push(format!(
                    "{}: seed {seed} is not in the profile; ignored",
                    variant_dir.join(&name).display()
                ));
            }
        }
    }
    extra.sort();
    Ok(extra)
}

/// Reads every row of a CSV file with a header; unknown columns are ignored.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| {
            row.with_context(|| format!("{}: row {} is damaged", path.display(), i + 2))
        })
        .collect()
}

/// One row of `norms.csv`: ‖∂E/∂x_l‖ of residual unit `unit` (l, from 1) at `iteration`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NormRow {
    pub seed: u64,
    pub iteration: i64,
    pub unit: u32,
    pub norm: f64,
}

/// The per-unit gradient norms of one variant, averaged over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantNorms {
    pub name: String,
    /// Seeds found in the file.
    pub seeds: usize,
    /// iteration → [(unit, mean norm over seeds)], units ascending.
    pub by_iteration: BTreeMap<i64, Vec<(u32, f64)>>,
    /// Rows whose norm is NaN or infinite, left out of the means.
    pub non_finite: usize,
}

/// `model` in a gradients `provenance.json` or a run's `config.toml`: the fields the report
/// uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelInfo {
    /// Weighted layers (110, 1202, …).
    #[serde(default)]
    pub depth: Option<usize>,
}

/// `protocol` in a gradients `provenance.json`: the fields the report uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProtocolInfo {
    /// SGD steps before the second measurement.
    #[serde(default)]
    pub iterations: Option<i64>,
}

/// `provenance.json` beside a `norms.csv` (written by `runner train` for `kind =
/// "gradients"`), the fields the report uses; all optional, extra fields ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GradientRecord {
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    #[serde(default)]
    pub model: Option<ModelInfo>,
    #[serde(default)]
    pub protocol: Option<ProtocolInfo>,
    #[serde(default)]
    pub data: Option<DataInfo>,
    #[serde(default)]
    pub git_revision: Option<String>,
    #[serde(default)]
    pub libtorch: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub wall_s: Option<f64>,
}

impl GradientRecord {
    /// The network's depth, when recorded.
    pub fn depth(&self) -> Option<usize> {
        self.model.as_ref()?.depth
    }

    /// The training length of the second measurement, when recorded.
    pub fn iterations(&self) -> Option<i64> {
        self.protocol.as_ref()?.iterations
    }
}

/// One variant of a gradients experiment as found on disk.
#[derive(Debug, Clone)]
pub struct VariantGradients {
    pub name: String,
    /// `None` while the variant has no (readable) `norms.csv`: not measured yet.
    pub norms: Option<VariantNorms>,
    /// `provenance.json`, when present and readable.
    pub record: Option<GradientRecord>,
}

/// Everything under `results/<gradients exp>/<profile>/` for the variants of the file.
#[derive(Debug, Clone)]
pub struct GradientResults {
    pub dir: PathBuf,
    pub variants: Vec<VariantGradients>,
    /// Damaged or missing files, non-finite norms, disagreements with the profile.
    pub notes: Vec<String>,
}

/// Reads `<dir>/<variant>/{norms.csv, provenance.json}` for every variant of the file (in
/// file order). A variant without `norms.csv` is not measured yet (the runner writes it
/// last); a damaged file is reported in `notes` and the variant counted as not measured.
pub fn load_gradients(dir: &Path, experiment: &ExperimentSpec) -> Result<GradientResults> {
    let mut notes = Vec::new();
    let mut variants = Vec::new();
    for spec in &experiment.variants {
        let variant_dir = dir.join(&spec.name);
        let norms_path = variant_dir.join("norms.csv");
        let norms = if norms_path.is_file() {
            match read_csv::<NormRow>(&norms_path) {
                Ok(rows) => Some(average_norms(&spec.name, &rows)),
                Err(err) => {
                    notes.push(format!("{}: skipped ({err:#})", norms_path.display()));
                    None
                }
            }
        } else {
            None
        };
        let record_path = variant_dir.join("provenance.json");
        let record = match std::fs::read(&record_path) {
            Ok(bytes) => match serde_json::from_slice::<GradientRecord>(&bytes) {
                Ok(record) => Some(record),
                Err(err) => {
                    notes.push(format!("{} is damaged ({err})", record_path.display()));
                    None
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if norms.is_some() {
                    notes.push(format!(
                        "{}: no provenance.json beside norms.csv (data, device and revision \
                         unknown)",
                        variant_dir.display()
                    ));
                }
                None
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", record_path.display()))
            }
        };
        if let Some(n) = norms.as_ref().filter(|n| n.non_finite > 0) {
            notes.push(format!(
                "{}: {} non-finite norm{} (NaN or inf) left out",
                norms_path.display(),
                n.non_finite,
                if n.non_finite == 1 { "" } else { "s" }
            ));
        }
        if let (Some(n), Some(expected)) = (&norms, record.as_ref().and_then(|r| r.iterations())) {
            let last = n.by_iteration.keys().next_back().copied().unwrap_or(0);
            if last != 0 && last != expected {
                notes.push(format!(
                    "{}: last iteration in norms.csv is {last}, provenance.json says {expected}",
                    variant_dir.display()
                ));
            }
        }
        variants.push(VariantGradients {
            name: spec.name.clone(),
            norms,
            record,
        });
    }
    Ok(GradientResults {
        dir: dir.to_path_buf(),
        variants,
        notes,
    })
}

/// Mean norm over seeds for each (iteration, unit); non-finite norms are counted and left out.
pub fn average_norms(name: &str, rows: &[NormRow]) -> VariantNorms {
    let mut sums: BTreeMap<(i64, u32), (f64, usize)> = BTreeMap::new();
    let mut seeds: Vec<u64> = Vec::new();
    let mut non_finite = 0;
    for row in rows {
        if !seeds.contains(&row.seed) {
            seeds.push(row.seed);
        }
        if !row.norm.is_finite() {
            non_finite += 1;
            continue;
        }
        let entry = sums.entry((row.iteration, row.unit)).or_default();
        entry.0 += row.norm;
        entry.1 += 1;
    }
    let mut by_iteration: BTreeMap<i64, Vec<(u32, f64)>> = BTreeMap::new();
    for ((iteration, unit), (sum, n)) in sums {
        by_iteration
            .entry(iteration)
            .or_default()
            .push((unit, sum / n as f64));
    }
    VariantNorms {
        name: name.to_string(),
        seeds: seeds.len(),
        by_iteration,
        non_finite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_json_with_extra_and_missing_fields_parses() {
        let json = r#"{"status": "diverged", "seed": 3, "diverged_at_iteration": 812,
            "final_test_error": null, "a_field_added_later": [1, 2], "device": "cpu x"}"#;
        let record: FinalRecord = serde_json::from_str(json).unwrap();
        assert!(record.diverged());
        assert_eq!(record.device.as_deref(), Some("cpu x"));
        assert!(record.data.is_none());
        let later: FinalRecord = serde_json::from_str(r#"{"status": "stopped"}"#).unwrap();
        assert_eq!(later.status, RunStatus::Other);
    }

    #[test]
    fn norms_average_over_seeds_per_iteration_and_unit() {
        let row = |seed, iteration, unit, norm| NormRow {
            seed,
            iteration,
            unit,
            norm,
        };
        let rows = [
            row(0, 0, 1, 1.0),
            row(1, 0, 1, 3.0),
            row(0, 0, 2, 4.0),
            row(1, 0, 2, 8.0),
            row(0, 300, 1, 0.5),
            row(1, 300, 1, f64::NAN),
        ];
        let norms = average_norms("identity", &rows);
        assert_eq!(norms.seeds, 2);
        // (1 + 3) / 2 = 2, (4 + 8) / 2 = 6; the NaN row is left out.
        assert_eq!(norms.by_iteration[&0], [(1, 2.0), (2, 6.0)]);
        assert_eq!(norms.by_iteration[&300], [(1, 0.5)]);
        assert_eq!(norms.non_finite, 1);
    }

    #[test]
    fn gradient_provenance_reads_depth_iterations_and_data() {
        let json = r#"{"experiment": "gradients", "profile": "paper", "variant": "scaling-0.5-110",
            "seeds": [0], "model": {"family": "cifar", "depth": 110, "block": "basic",
            "shortcut": {"scaling": {"lambda_s": 0.5, "lambda_f": 1.0}}, "replicas": 1},
            "protocol": {"batch_size": 16, "iterations": 200, "lr": 0.1, "lr_drops": []},
            "data": {"digest": "ab", "files": {}, "source": "CIFAR-10, JPEG-75 copy", "original": false},
            "git_revision": "abc", "libtorch": "2.11.0", "device": "cpu", "wall_s": 12.3}"#;
        let record: GradientRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.depth(), Some(110));
        assert_eq!(record.iterations(), Some(200));
        let data = record.data.unwrap();
        assert_eq!(data.source.as_deref(), Some("CIFAR-10, JPEG-75 copy"));
        let bare: GradientRecord = serde_json::from_str("{}").unwrap();
        assert_eq!((bare.depth(), bare.iterations()), (None, None));
    }
}
