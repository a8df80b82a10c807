//! What `report` needs from an experiment file (`experiments/<exp>.toml`): the title, the
//! source, the variants in file order with the papers' numbers, and each profile's seeds.
//!
//! The runner checks these files strictly before anything trains; here they are read
//! leniently (unknown keys ignored, of the model tables only `depth`), so the report never
//! disagrees with the runner about what a valid file is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::ReportError;

/// A paper's reference number for a variant, as written in the experiment file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PaperNumber {
    /// Test error in percent.
    Error(f64),
    /// `"fail"`: the paper reports a test error above 20% (Identity Mappings, Table 1).
    Fail(FailMarker),
}

/// The literal string `"fail"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMarker {
    Fail,
}

impl PaperNumber {
    /// The paper's test error, when it is a number.
    pub fn error(&self) -> Option<f64> {
        match self {
            PaperNumber::Error(e) => Some(*e),
            PaperNumber::Fail(_) => None,
        }
    }

    /// True for the paper's `"fail"`.
    pub fn is_fail(&self) -> bool {
        matches!(self, PaperNumber::Fail(_))
    }
}

impl fmt::Display for PaperNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaperNumber::Error(e) => write!(f, "{e:.2}"),
            PaperNumber::Fail(_) => write!(f, "fail"),
        }
    }
}

/// A `model` table (the experiment's or a variant's): only the depth it names, if any.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ModelSpec {
    #[serde(default)]
    pub depth: Option<usize>,
}

/// One row of the ablation.
#[derive(Debug, Clone, Deserialize)]
pub struct VariantSpec {
    pub name: String,
    #[serde(default)]
    pub paper: Option<PaperNumber>,
    #[serde(default)]
    pub model: ModelSpec,
}

/// A profile: only its seeds matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfileSpec {
    pub seeds: Vec<u64>,
}

/// What `runner train` does with an experiment (the file's top-level `kind`), and so what
/// the report renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentKind {
    /// Every (variant, seed) trained: test errors against the papers' tables.
    #[default]
    Training,
    /// ‖∂E/∂x_l‖ per residual unit at initialisation and after the profile's iterations
    /// (Identity Mappings, eqs. 4–8): `norms.csv` and `provenance.json` per variant.
    Gradients,
}

/// The parts of an experiment file the report uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ExperimentSpec {
    #[serde(default)]
    pub kind: ExperimentKind,
    pub title: String,
    pub source: String,
    pub variants: Vec<VariantSpec>,
    pub profiles: BTreeMap<String, ProfileSpec>,
    #[serde(default)]
    pub model: ModelSpec,
}

impl ExperimentSpec {
    /// Parses the text of an experiment file.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The depths the file names for its variants (a variant's own, else the experiment's),
    /// ascending; `None` when one of them names none.
    pub fn declared_depths(&self) -> Option<Vec<usize>> {
        let mut depths = self
            .variants
            .iter()
            .map(|v| v.model.depth.or(self.model.depth))
            .collect::<Option<Vec<_>>>()?;
        depths.sort_unstable();
        depths.dedup();
        Some(depths)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReportError::NoExperimentFile(path.to_path_buf()).into())
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        Self::parse(&text)
            .with_context(|| format!("{} is not a valid experiment file", path.display()))
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str, path: &Path) -> Result<&ProfileSpec, ReportError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ReportError::UnknownProfile {
                profile: name.to_string(),
                file: path.to_path_buf(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Where the experiment file of `experiment` lies: `experiment` itself when it names an
/// existing `.toml` file, else `<experiments>/<experiment>.toml`. Returns the path and the
/// experiment's name (the file stem).
pub fn locate(experiment: &str, experiments_dir: &Path) -> (PathBuf, String) {
    let as_path = Path::new(experiment);
    if as_path.extension().is_some_and(|ext| ext == "toml") && as_path.is_file() {
        let name = as_path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| experiment.to_string());
        return (as_path.to_path_buf(), name);
    }
    (
        experiments_dir.join(format!("{experiment}.toml")),
        experiment.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
title = "Identity Mappings, Table 1: shortcut variants on ResNet-110"
source = "He et al. 2016, Identity Mappings in Deep Residual Networks, Table 1"
[model]
depth = 110
[[variants]]
name = "original"
paper = 6.61
[[variants]]
name = "scaling-0-1"
paper = "fail"
model = { shortcut = { scaling = { lambda_s = 0.0, lambda_f = 1.0 } } }
[[variants]]
name = "integer-paper"
paper = 7
[[variants]]
name = "no-paper"
[profiles.paper]
seeds = [0, 1, 2, 3, 4]
model = {}
protocol = { batch_size = 128, iterations = 64000, lr = 0.1, lr_drops = [32000, 48000], warmup = { lr = 0.01, iterations = 400 } }
[profiles.smoke]
seeds = [0]
protocol = { batch_size = 32, iterations = 50, lr = 0.1, lr_drops = [] }
"#;

    #[test]
    fn reads_variants_in_file_order_and_only_the_depth_of_model_tables() {
        let e = ExperimentSpec::parse(FILE).unwrap();
        let names: Vec<_> = e.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["original", "scaling-0-1", "integer-paper", "no-paper"]
        );
        assert_eq!(e.variants[0].paper, Some(PaperNumber::Error(6.61)));
        assert!(e.variants[1].paper.unwrap().is_fail());
        assert_eq!(e.variants[2].paper.unwrap().error(), Some(7.0));
        assert_eq!(e.variants[3].paper, None);
        assert_eq!(e.profiles["paper"].seeds, [0, 1, 2, 3, 4]);
        assert_eq!(e.profiles["smoke"].seeds, [0]);
        assert_eq!(e.kind, ExperimentKind::Training);
        // the shortcut settings of the model tables are not read; the depth is
        assert_eq!(e.declared_depths(), Some(vec![110]));
        let deeper = FILE.replace(
            "name = \"no-paper\"",
            "name = \"no-paper\"\nmodel = { depth = 164 }",
        );
        assert_eq!(
            ExperimentSpec::parse(&deeper).unwrap().declared_depths(),
            Some(vec![110, 164])
        );
        let unsaid = FILE.replace("depth = 110\n", "");
        assert_eq!(
            ExperimentSpec::parse(&unsaid).unwrap().declared_depths(),
            None
        );
    }

    #[test]
    fn reads_the_kind_and_refuses_an_unknown_one() {
        let gradients = format!("kind = \"gradients\"\n{FILE}");
        let e = ExperimentSpec::parse(&gradients).unwrap();
        assert_eq!(e.kind, ExperimentKind::Gradients);
        let err = ExperimentSpec::parse(&format!("kind = \"hessians\"\n{FILE}")).unwrap_err();
        assert!(err.to_string().contains("hessians"), "{err}");
    }

    #[test]
    fn the_shipped_gradients_file_parses_as_gradients() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/gradients.toml");
        let e = ExperimentSpec::load(&path).unwrap();
        assert_eq!(e.kind, ExperimentKind::Gradients);
        assert!(e.variants.iter().any(|v| v.name == "identity-1202"));
        assert!(e.variants.iter().all(|v| v.paper.is_none()));
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let e = ExperimentSpec::parse(FILE).unwrap();
        let err = e
            .profile("short", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("short") && err.contains("paper, smoke"),
            "{err}"
        );
    }
}
