//! `report`: tables and figures from the runner's results (He et al. 2015, 2016 ablations).
//!
//! Reads `experiments/<exp>.toml` and `results/<exp>/<profile>/`, writes
//! `results/<exp>/<profile>/table.{csv,md}` and `plots/<exp>/<profile>/*.{svg,png}`: test
//! errors against the papers for training experiments, per-unit gradient norms for
//! `kind = "gradients"` (see [`gradients`]).
//! Never touches tensors: it links neither tch nor libtorch. What it reads (experiment files,
//! run records, the results layout) is defined in the `spec` crate, which the runner writes
//! through, so a file the runner refuses is refused here with the same message.

pub mod comparisons;
pub mod gates;
pub mod gradients;
pub mod plots;
pub mod png;
pub mod results;
pub mod stats;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use spec::{profile_dir, write_atomic, Experiment, ExperimentKind, ShortcutKind, Variant};

use crate::gradients::GradientTable;
use crate::plots::Caption;
use crate::table::Table;

/// Errors in what the user asked for (as opposed to damaged files).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No results yet; the command that trains them.
    #[error("no results folder at {0}: train first (`{1}`)")]
    NoResults(PathBuf, String),
}

/// Where to read and write.
#[derive(Debug, Clone)]
pub struct Paths {
    pub experiments: PathBuf,
    pub results: PathBuf,
    pub plots: PathBuf,
}

/// The table a report computed, by the kind of experiment.
#[derive(Debug, Clone)]
pub enum Tables {
    /// Test errors per variant against the papers (`kind = "training"`, the default).
    Training(Table),
    /// Gradient norms per variant (`kind = "gradients"`).
    Gradients(GradientTable),
}

impl Tables {
    /// The table of a training experiment.
    pub fn training(&self) -> Option<&Table> {
        match self {
            Tables::Training(table) => Some(table),
            Tables::Gradients(_) => None,
        }
    }

    /// The table of a gradients experiment.
    pub fn gradients(&self) -> Option<&GradientTable> {
        match self {
            Tables::Gradients(table) => Some(table),
            Tables::Training(_) => None,
        }
    }

    /// Lines worth printing after the files: unfinished variants and the table's notes.
    pub fn notes(&self) -> Vec<String> {
        let (pending, notes) = match self {
            Tables::Training(table) => {
                let incomplete = table
                    .rows
                    .iter()
                    .filter(|r| r.status() == table::Verdict::Incomplete)
                    .count();
                let pending = (incomplete > 0).then(|| {
                    format!(
                        "{incomplete} of {} variants are incomplete",
                        table.rows.len()
                    )
                });
                (pending, &table.notes)
            }
            Tables::Gradients(table) => {
                let missing = table.rows.len() - table.measured();
                let pending = (missing > 0).then(|| {
                    format!(
                        "{missing} of {} variants are not measured yet",
                        table.rows.len()
                    )
                });
                (pending, &table.notes)
            }
        };
        pending.into_iter().chain(notes.iter().cloned()).collect()
    }
}

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub table: Tables,
    pub files: Vec<PathBuf>,
    /// Figures of an earlier rendering removed because nothing is left to draw.
    pub removed: Vec<PathBuf>,
}

/// Renders the table and figures of `experiment` (a name in `paths.experiments`, or a path
/// to a `.toml` file) for `profile`: test-error tables and training figures for a training
/// experiment, the gradient-norm table and figure for `kind = "gradients"`.
pub fn render(experiment: &str, profile: &str, paths: &Paths) -> Result<Written> {
    let file = Experiment::find(experiment, &paths.experiments)?;
    let spec = Experiment::load(&file)?;
    let seeds = spec.profile(profile)?.seeds.clone();
    let variants = spec.select_variants(spec.profile(profile)?, &[])?;
    let name = spec.name.clone();
    let results_dir = profile_dir(&paths.results, &name, profile);
    if !results_dir.is_dir() {
        // `just ablate` knows only the project's own experiments/ folder
        let command = if file == Path::new("experiments").join(format!("{name}.toml")) {
            format!("just ablate {name} {profile}")
        } else {
            format!("runner train {} --profile {profile}", file.display())
        };
        return Err(ReportError::NoResults(results_dir, command).into());
    }
    let plots_dir = paths.plots.join(&name).join(profile);
    match spec.kind {
        ExperimentKind::Training => {
            render_training(&spec, &variants, profile, &seeds, &results_dir, &plots_dir)
        }
        ExperimentKind::Gradients => {
            render_gradients(&spec, &variants, profile, &seeds, &results_dir, &plots_dir)
        }
    }
}

/// `table.{csv,md}`, `curves` and `final` of a training experiment.
fn render_training(
    spec: &Experiment,
    variants: &[&Variant],
    profile: &str,
    seeds: &[u64],
    results_dir: &Path,
    plots_dir: &Path,
) -> Result<Written> {
    let results = results::load(results_dir, variants, seeds)?;
    let table = Table::new(spec, profile, seeds, &results);
    // the figures' folder first: a --plots that cannot hold them leaves the tables as they were
    create_dir(plots_dir)?;
    let mut files = write_tables(results_dir, &table.to_csv()?, &table.to_markdown())?;
    files.extend(write_comparisons(results_dir, &table)?);
    let profile_spec = spec.profile(profile)?;
    let nets = variants
        .iter()
        .map(|v| {
            let net = spec.net_config(v, profile_spec)?;
            Ok(plots::VariantNet {
                label: display_name(&v.name, spec.declared_depth(v), net.depth),
                plain: net.shortcut == ShortcutKind::Plain,
                depth: net.depth,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // the depths this profile trains (every run of it is checked against its configuration)
    let mut trained: Vec<usize> = nets.iter().map(|n| n.depth).collect();
    trained.sort_unstable();
    trained.dedup();
    let caption = Caption {
        title: figure_title(spec, variants, &trained),
        profile: format!("{profile} ({})", profile_scale(spec, profile)?),
        data: table.provenance.data_label(),
        trained: table.provenance.trained_label(),
    };
    let drawn = plots::write_training_figures(
        plots_dir,
        &caption,
        &results,
        &nets,
        table.fail_above,
        &profile_spec.protocol.lr_drops,
        warmup_ends(spec, variants, profile_spec, &nets)?,
    )?;
    files.extend(drawn.written);
    Ok(Written {
        table: Tables::Training(table),
        files,
        removed: drawn.removed,
    })
}

/// Where the variants' warm-ups end (a variant may set its own protocol), with the legend's
/// words: one marker for each distinct warm-up, naming its variants unless all have it.
fn warmup_ends(
    spec: &Experiment,
    variants: &[&Variant],
    profile: &spec::Profile,
    nets: &[plots::VariantNet],
) -> Result<Vec<(i64, String)>> {
    let mut ends: Vec<(i64, String, Vec<&str>)> = Vec::new();
    for (variant, net) in variants.iter().zip(nets) {
        let protocol = spec.protocol(variant, profile)?;
        let Some(warmup) = protocol.warmup.as_ref().filter(|w| w.iterations > 0) else {
            continue;
        };
        let lrs = format!("lr {} → {}", warmup.lr, protocol.lr_at(warmup.iterations));
        match ends
            .iter_mut()
            .find(|(at, words, _)| *at == warmup.iterations && *words == lrs)
        {
            Some((_, _, names)) => names.push(&net.label),
            None => ends.push((warmup.iterations, lrs, vec![&net.label])),
        }
    }
    Ok(ends
        .into_iter()
        .map(|(at, lrs, names)| {
            let words = if names.len() == variants.len() {
                format!("warm-up ends ({lrs})")
            } else {
                format!("warm-up ends ({}: {lrs})", names.join(", "))
            };
            (at, words)
        })
        .collect())
}

/// How long `profile` trains, for the figures (whose reader may not know the profile's
/// name): `15 epochs, 5,850 iterations; the paper's: 64,000` (the experiment's `paper`
/// profile, where it has one of another length), `3 epochs of 2,560 images, 60 iterations`.
fn profile_scale(spec: &Experiment, profile: &str) -> Result<String> {
    let protocol = &spec.profile(profile)?.protocol;
    let epochs = protocol.epochs();
    let epochs = if (epochs - epochs.round()).abs() < 0.05 {
        format!("{epochs:.0}")
    } else {
        format!("{epochs:.1}")
    };
    let of = match protocol.train_subset {
        Some(n) => format!(" of {} images", grouped(n)),
        None => String::new(),
    };
    let mut scale = format!(
        "{epochs} epochs{of}, {} iterations",
        grouped(protocol.iterations)
    );
    if let Ok(paper) = spec.profile("paper") {
        if profile != "paper" && paper.protocol.iterations != protocol.iterations {
            scale += &format!("; the paper's: {}", grouped(paper.protocol.iterations));
        }
    }
    Ok(scale)
}

/// `5,850`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// `depth 32`, `depths 20, 56`.
fn depths_text(depths: &[usize]) -> String {
    let listed: Vec<String> = depths.iter().map(usize::to_string).collect();
    let s = if depths.len() == 1 { "" } else { "s" };
    format!("depth{s} {}", listed.join(", "))
}

/// A figure's title: the experiment's, with the depths the papers trained `variants` at
/// and, where the profile trains others (`trained`), the depths trained here, so that a
/// reduced profile's figure never reads as the paper's networks.
fn figure_title(spec: &Experiment, variants: &[&Variant], trained: &[usize]) -> String {
    let title = &spec.title;
    match (spec.declared_depths(variants), trained) {
        (Some(paper), []) => format!("{title} (paper: {})", depths_text(&paper)),
        (Some(paper), trained) if paper == trained => format!("{title} ({})", depths_text(trained)),
        (Some(paper), trained) => format!(
            "{title} (paper: {}; trained here: {})",
            depths_text(&paper),
            depths_text(trained)
        ),
        (None, []) => title.clone(),
        (None, trained) => format!("{title} (trained here: {})", depths_text(trained)),
    }
}

/// A variant's name in the figures: `110-a-original` trained at depth 32 is `32-a-original`
/// (its depth prefix would name a network that was not trained; the depth trained keeps the
/// 110- and 164- variants apart where a profile shrinks both); other names as they are.
fn display_name(name: &str, declared: Option<usize>, trained: usize) -> String {
    match declared {
        Some(depth) if depth != trained => match name.strip_prefix(&format!("{depth}-")) {
            Some(rest) => format!("{trained}-{rest}"),
            None => name.to_string(),
        },
        _ => name.to_string(),
    }
}

/// `table.{csv,md}` and `norms` of a gradients experiment.
fn render_gradients(
    spec: &Experiment,
    variants: &[&Variant],
    profile: &str,
    seeds: &[u64],
    results_dir: &Path,
    plots_dir: &Path,
) -> Result<Written> {
    let results = results::load_gradients(results_dir, variants)?;
    let table = GradientTable::new(spec, profile, seeds, &results);
    create_dir(plots_dir)?;
    let mut files = write_tables(results_dir, &table.to_csv()?, &table.to_markdown())?;
    let caption = Caption {
        title: spec.title.clone(),
        profile: profile.to_string(),
        data: table.provenance.data_label(),
        // the figure's two lines say what was measured; table.md says where
        trained: None,
    };
    let drawn = plots::write_norms_figure(plots_dir, &caption, &results)?;
    files.extend(drawn.written);
    Ok(Written {
        table: Tables::Gradients(table),
        files,
        removed: drawn.removed,
    })
}

/// Writes `table.csv` and `table.md` into `dir`; returns their paths.
fn write_tables(dir: &Path, csv: &str, md: &str) -> Result<Vec<PathBuf>> {
    let csv_path = dir.join("table.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    let md_path = dir.join("table.md");
    write_atomic(&md_path, md.as_bytes())?;
    Ok(vec![csv_path, md_path])
}

/// `comparisons.csv` and `comparisons.md` beside the table (the same section as in
/// `table.md`, under the table's title); none when the profile has no comparisons.
fn write_comparisons(dir: &Path, table: &Table) -> Result<Vec<PathBuf>> {
    if table.comparisons.is_empty() && table.comparisons_left_out.0.is_empty() {
        return Ok(Vec::new());
    }
    let csv_path = dir.join("comparisons.csv");
    write_atomic(
        &csv_path,
        comparisons::to_csv(&table.comparisons)?.as_bytes(),
    )?;
    let md_path = dir.join("comparisons.md");
    let md = format!(
        "# {}: differences between variants\n\nProfile `{}`.\n\n{}{}",
        table.title,
        table.profile,
        comparisons::to_markdown(&table.comparisons),
        comparisons::left_out_markdown(&table.comparisons_left_out)
    );
    write_atomic(&md_path, md.as_bytes())?;
    Ok(vec![csv_path, md_path])
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_says_how_long_its_profile_trains_beside_the_paper() {
        let spec = Experiment::parse(
            Path::new("experiments/t.toml"),
            r#"
title = "t"
source = "t"
[model]
depth = 20
[[variants]]
name = "original"
[profiles.paper]
seeds = [0]
protocol = { batch_size = 128, iterations = 64000, lr = 0.1, lr_drops = [32000] }
[profiles.cpu-long]
seeds = [0]
protocol = { batch_size = 128, iterations = 5850, lr = 0.1, lr_drops = [2925] }
[profiles.smoke]
seeds = [0]
protocol = { batch_size = 128, iterations = 60, lr = 0.1, lr_drops = [40], train_subset = 2560 }
"#,
        )
        .unwrap();
        assert_eq!(
            profile_scale(&spec, "cpu-long").unwrap(),
            "15 epochs, 5,850 iterations; the paper's: 64,000"
        );
        assert_eq!(
            profile_scale(&spec, "paper").unwrap(),
            "164.1 epochs, 64,000 iterations"
        );
        assert_eq!(
            profile_scale(&spec, "smoke").unwrap(),
            "3 epochs of 2,560 images, 60 iterations; the paper's: 64,000"
        );
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(-1000), "-1,000");
    }

    #[test]
    fn a_depth_prefix_is_dropped_only_where_another_depth_was_trained() {
        assert_eq!(
            display_name("110-a-original", Some(110), 32),
            "32-a-original"
        );
        assert_eq!(
            display_name("164-a-original", Some(164), 11),
            "11-a-original"
        );
        assert_eq!(
            display_name("110-a-original", Some(110), 110),
            "110-a-original"
        );
        // a name without the prefix, or a file that names no depth: as it is
        assert_eq!(display_name("conv1x1", Some(110), 32), "conv1x1");
        assert_eq!(display_name("110-a-original", None, 32), "110-a-original");
        assert_eq!(depths_text(&[32]), "depth 32");
        assert_eq!(depths_text(&[20, 56]), "depths 20, 56");
    }
}
