//! Reading what `runner train` wrote: `results/<exp>/<profile>/<variant>/seed-<n>/` with
//! `epochs.csv` (one row per epoch, possibly of a run still in progress) and `final.json`
//! (present once the run is finished), and `results/gradients/<profile>/<variant>/norms.csv`.
//!
//! The files are read through `spec`, as the runner reads them: fields and columns a later
//! runner adds are ignored; a file that does not parse is noted and its run left out, so that
//! one bad file does not hide the rest of a sweep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use spec::layout::{Damaged, RunState};
use spec::records::read_csv;
use spec::{
    EpochRow, FinalRecord, GradientRecord, NormRow, PaperNumber, RunDir, Variant, VariantDir,
};

/// One seed's folder.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub seed: u64,
    /// `None` while the run is in progress (or was interrupted).
    pub final_record: Option<FinalRecord>,
    pub epochs: Vec<EpochRow>,
    /// The depth the run trained, from its `config.toml` (`None` if that does not say).
    pub depth: Option<usize>,
    /// Its residual units, from the same `config.toml`.
    pub units: Option<usize>,
    /// Unfinished and held by a live process (its lock): being trained now.
    pub running: bool,
}

impl SeedRun {
    /// The final test error of a finished run that did not diverge.
    pub fn final_test_error(&self) -> Option<f64> {
        self.final_record.as_ref()?.test_error()
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
    /// Seeds whose records are damaged (left out of `runs`; the notes say which).
    pub damaged: usize,
}

impl VariantRuns {
    /// Runs with a `final.json`.
    pub fn finished(&self) -> impl Iterator<Item = &FinalRecord> {
        self.runs.iter().filter_map(|run| run.final_record.as_ref())
    }

    /// Unfinished runs that a live process is training now.
    pub fn running(&self) -> usize {
        self.runs.iter().filter(|run| run.running).count()
    }

    /// Unfinished runs with epochs that nothing is training: stopped or crashed, waiting
    /// for `runner train` to resume them.
    pub fn interrupted(&self) -> usize {
        self.runs
            .iter()
            .filter(|run| run.final_record.is_none() && !run.running && !run.epochs.is_empty())
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
pub fn load(dir: &Path, of: &[&Variant], seeds: &[u64]) -> Result<ProfileResults> {
    let mut notes = Vec::new();
    let mut variants = Vec::new();
    for spec in of {
        let variant_dir = dir.join(&spec.name);
        let mut runs = Vec::new();
        let mut damaged = 0;
        for &seed in seeds {
            let seed_dir = RunDir::in_variant(&variant_dir, seed).dir;
            if !seed_dir.is_dir() {
                continue;
            }
            match load_seed(&variant_dir, seed) {
                Ok(run) => runs.push(run),
                Err(fault) => {
                    damaged += 1;
                    notes.push(fault.to_string());
                }
            }
        }
        notes.extend(extra_seed_folders(&variant_dir, seeds)?);
        variants.push(VariantRuns {
            name: spec.name.clone(),
            paper: spec.paper,
            expected_seeds: seeds.len(),
            runs,
            damaged,
        });
    }
    Ok(ProfileResults {
        dir: dir.to_path_buf(),
        variants,
        notes,
    })
}

/// One run by the rule `runner train` applies too ([`RunDir::state`]): a run whose records
/// are damaged is left out, with the same message and advice.
fn load_seed(variant_dir: &Path, seed: u64) -> Result<SeedRun, Damaged> {
    let run = RunDir::in_variant(variant_dir, seed);
    let state = run.state()?;
    let running = state.is_running();
    let (final_record, epochs) = match state {
        RunState::Finished { record, epochs } => (Some(record), epochs),
        RunState::Unfinished { epochs, .. } => (None, epochs),
    };
    // captions only: a config.toml that does not say leaves them unsaid
    let model = run.read_config().ok().flatten().map(|c| c.model);
    Ok(SeedRun {
        seed,
        final_record,
        epochs,
        depth: model.as_ref().map(|m| m.depth),
        units: model
            .and_then(|m| m.units_per_stage().ok())
            .map(|stages| stages.iter().sum()),
        running,
    })
}

/// The `Notes:` section of a written table: `notes`, with the profile's folder `dir` (where
/// the table lies) left out of the paths they name, so that they read the same on any machine
/// (`conv1x1/seed-4/final.json`, not this machine's absolute path to it).
pub fn notes_markdown(notes: &[String], dir: &Path) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let full = dir.display().to_string();
    let mut md = String::from("\nNotes (paths from this table's folder):\n");
    for note in notes {
        let note = note.replace(&format!("{full}/"), "");
        md.push_str(&format!("- {note}\n"));
    }
    md
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
    /// iteration → the units whose norm no seed had finite (overflowed to inf or NaN),
    /// ascending: absent from `by_iteration`.
    pub overflowed: BTreeMap<i64, Vec<u32>>,
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
pub fn load_gradients(dir: &Path, of: &[&Variant]) -> Result<GradientResults> {
    let mut notes = Vec::new();
    let mut variants = Vec::new();
    for spec in of {
        let files = VariantDir {
            dir: dir.join(&spec.name),
        };
        let (variant_dir, norms_path) = (&files.dir, files.norms_path());
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
        let record_path = files.provenance_path();
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
        if let (Some(n), Some(expected)) = (&norms, record.as_ref().map(|r| r.protocol.iterations))
        {
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
    let mut bad: std::collections::BTreeSet<(i64, u32)> = Default::default();
    for row in rows {
        if !seeds.contains(&row.seed) {
            seeds.push(row.seed);
        }
        if !row.norm.is_finite() {
            non_finite += 1;
            bad.insert((row.iteration, row.unit));
            continue;
        }
        let entry = sums.entry((row.iteration, row.unit)).or_default();
        entry.0 += row.norm;
        entry.1 += 1;
    }
    let mut overflowed: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for &(iteration, unit) in bad.iter().filter(|key| !sums.contains_key(key)) {
        overflowed.entry(iteration).or_default().push(unit);
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
        overflowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // unit 1 at 300 has seed 0's finite norm: not overflowed
        assert!(norms.overflowed.is_empty());
        let more = [
            row(0, 300, 2, f64::INFINITY),
            row(1, 300, 2, f64::NAN),
            row(0, 300, 3, f64::NAN),
            row(0, 300, 4, 1e38),
        ];
        let norms = average_norms("scaled", &[&rows[..], &more[..]].concat());
        assert_eq!(
            norms.overflowed.get(&300).map(Vec::as_slice),
            Some(&[2, 3][..])
        );
        assert_eq!(norms.overflowed.get(&0), None);
    }
}
