//! `report`: tables and figures from the runner's results (He et al. 2015, 2016 ablations).
//!
//! Reads `experiments/<exp>.toml` and `results/<exp>/<profile>/`, writes
//! `results/<exp>/<profile>/table.{csv,md}` and `plots/<exp>/<profile>/*.{svg,png}`.
//! Never touches tensors: it links neither tch nor libtorch.

pub mod experiment;
pub mod plots;
pub mod png;
pub mod results;
pub mod stats;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::experiment::ExperimentSpec;
use crate::plots::Caption;
use crate::table::Table;

/// Errors in what the user asked for (as opposed to damaged files).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no experiment file at {0}")]
    NoExperimentFile(PathBuf),
    #[error("{file} has no profile `{profile}` (it has: {known})")]
    UnknownProfile {
        profile: String,
        file: PathBuf,
        known: String,
    },
    #[error("no results folder at {0}: train first (`just ablate {1} {2}`)")]
    NoResults(PathBuf, String, String),
}

/// Where to read and write.
#[derive(Debug, Clone)]
pub struct Paths {
    pub experiments: PathBuf,
    pub results: PathBuf,
    pub plots: PathBuf,
}

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub table: Table,
    pub files: Vec<PathBuf>,
}

/// Renders the table and figures of `experiment` (a name in `paths.experiments`, or a path
/// to a `.toml` file) for `profile`.
pub fn render(experiment: &str, profile: &str, paths: &Paths) -> Result<Written> {
    let (file, name) = experiment::locate(experiment, &paths.experiments);
    let spec = ExperimentSpec::load(&file)?;
    let seeds = spec.profile(profile, &file)?.seeds.clone();
    let results_dir = paths.results.join(&name).join(profile);
    if !results_dir.is_dir() {
        return Err(ReportError::NoResults(results_dir, name, profile.to_string()).into());
    }
    let results = results::load(&results_dir, &spec, &seeds)?;
    let table = Table::new(&spec, profile, &seeds, &results);

    let mut files = Vec::new();
    let csv_path = results_dir.join("table.csv");
    write_atomic(&csv_path, table.to_csv()?.as_bytes())?;
    let md_path = results_dir.join("table.md");
    write_atomic(&md_path, table.to_markdown().as_bytes())?;
    files.extend([csv_path, md_path]);

    let plots_dir = paths.plots.join(&name).join(profile);
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let caption = Caption {
        title: spec.title.clone(),
        profile: profile.to_string(),
        data: table.provenance.data_label(),
    };
    files.extend(plots::write_training_figures(
        &plots_dir,
        &caption,
        &results,
        table.fail_above,
    )?);
    let norms = results::load_norms(&results_dir, &spec)?;
    let coloured = norms
        .into_iter()
        .map(|n| {
            let index = spec
                .variants
                .iter()
                .position(|v| v.name == n.name)
                .unwrap_or(0);
            (index, n)
        })
        .collect();
    files.extend(plots::write_norms_figure(&plots_dir, &caption, coloured)?);
    Ok(Written { table, files })
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .context("an output path names a file")?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
