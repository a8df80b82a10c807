//! Experiment files (`experiments/*.toml`): the networks an ablation compares, the papers'
//! numbers, and the protocol of each profile.
//!
//! ```toml
//! title = "Identity Mappings, Table 1: shortcut variants on ResNet-110"
//! source = "He et al. 2016, Identity Mappings in Deep Residual Networks, Table 1"
//!
//! [model]                       # the base network (NetConfig fields)
//! depth = 110
//!
//! [[variants]]
//! name = "original"
//! paper = 6.61                  # the paper's test error in %, "fail", or the mean ± std of
//!                               # its runs: { mean = 6.61, std = 0.16, best = 6.43 }
//!
//! [[variants]]
//! name = "scaling-0.5-0.5"
//! paper = 12.35
//! model = { shortcut = { scaling = { lambda_s = 0.5, lambda_f = 0.5 } } }
//!
//! [profiles.paper]
//! seeds = [0, 1, 2, 3, 4]
//! model = {}                    # overrides for every variant, e.g. { units_per_stage = 3 }
//! protocol = { batch_size = 128, iterations = 64000, lr = 0.1, lr_drops = [32000, 48000] }
//! ```
//!
//! The model of a run is the base table, then the variant's `model`, then the profile's
//! `model`, merged key by key. `units_per_stage = n` sets the depth to 6n+2 (basic units) or
//! 9n+2 (bottleneck units), so one profile can shrink basic and bottleneck variants alike.
//! Everything is checked before anything trains; errors name the file, the line and the reason.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use serde::{Deserialize, Serialize};
use toml::{Spanned, Table, Value};

use crate::net::{BlockKind, NetConfig};
use crate::protocol::Protocol;

/// A paper's reference number for a variant: `paper = 6.61`, `paper = "fail"`, or the mean ±
/// std of several runs with the best of them, `paper = { mean = 6.61, std = 0.16, best = 6.43 }`
/// (He 2015, Table 6: "6.43 (6.61±0.16)" for ResNet-110; `best` is optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PaperNumber {
    /// Test error in percent: one number as the paper prints it (one run, or the median of
    /// several in Identity Mappings' tables).
    Error(f64),
    /// "fail": the paper reports a test error above 20% (Identity Mappings, Table 1).
    Fail(FailMarker),
    /// Mean and standard deviation of the paper's runs, and the best run where it gives one.
    Runs(PaperRuns),
}

/// The literal string `"fail"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMarker {
    Fail,
}

/// `{ mean = 6.61, std = 0.16, best = 6.43 }`: test errors in percent over a paper's runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PaperRuns {
    pub mean: f64,
    /// Standard deviation over the runs, as the paper states it.
    pub std: f64,
    /// The lowest test error of the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<f64>,
}

/// The accepted forms of `paper`, for error messages.
const PAPER_FORMS: &str =
    "a test error in percent (a number), \"fail\", or { mean = .., std = .., best = .. } (best optional)";

/// The keys of the `{ mean, std, best }` form.
const PAPER_RUNS_KEYS: [&str; 3] = ["mean", "std", "best"];

impl<'de> Deserialize<'de> for PaperNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PaperNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(PAPER_FORMS)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PaperNumber, E> {
                percent("paper", v).map(PaperNumber::Error)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PaperNumber, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PaperNumber, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PaperNumber, E> {
                match v {
                    "fail" => Ok(PaperNumber::Fail(FailMarker::Fail)),
                    other => Err(E::custom(format!(
                        "paper = \"{other}\": expected {PAPER_FORMS}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PaperNumber, A::Error> {
                use serde::de::Error;
                let (mut mean, mut std, mut best) = (None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "mean" => &mut mean,
                        "std" => &mut std,
                        "best" => &mut best,
                        other => {
                            return Err(A::Error::custom(format!(
                                "paper: unknown field `{other}`, expected one of {}",
                                PAPER_RUNS_KEYS.map(|k| format!("`{k}`")).join(", ")
                            )))
                        }
                    };
                    if slot.is_some() {
                        return Err(A::Error::custom(format!("paper: `{key}` given twice")));
                    }
                    let value = map
                        .next_value::<f64>()
                        .map_err(|err| A::Error::custom(format!("paper.{key}: {err}")))?;
                    *slot = Some(percent(&format!("paper.{key}"), value)?);
                }
                let missing = |key| {
                    A::Error::custom(format!("paper: `{key}` is missing; expected {PAPER_FORMS}"))
                };
                let runs = PaperRuns {
                    mean: mean.ok_or_else(|| missing("mean"))?,
                    std: std.ok_or_else(|| missing("std"))?,
                    best,
                };
                if let Some(best) = runs.best.filter(|&b| b > runs.mean) {
                    return Err(A::Error::custom(format!(
                        "paper: best = {best} is above mean = {}; the best run cannot have a \
                         higher error than the mean of the runs",
                        runs.mean
                    )));
                }
                Ok(PaperNumber::Runs(runs))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `v` when it is a test error (or a spread) in percent: finite, from 0 up.
fn percent<E: serde::de::Error>(what: &str, v: f64) -> Result<f64, E> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(E::custom(format!(
            "{what} = {v}: a test error in percent is a number from 0 up"
        )))
    }
}

impl PaperNumber {
    /// The paper's test error, when it gives one number (not `"fail"`, not mean ± std).
    pub fn error(&self) -> Option<f64> {
        match self {
            PaperNumber::Error(e) => Some(*e),
            PaperNumber::Fail(_) | PaperNumber::Runs(_) => None,
        }
    }

    /// The paper's mean ± std over runs, when it gives them.
    pub fn runs(&self) -> Option<PaperRuns> {
        match self {
            PaperNumber::Runs(runs) => Some(*runs),
            PaperNumber::Error(_) | PaperNumber::Fail(_) => None,
        }
    }

    /// True for the paper's `"fail"`.
    pub fn is_fail(&self) -> bool {
        matches!(self, PaperNumber::Fail(_))
    }
}

impl fmt::Display for PaperNumber {
    /// `6.61`, `fail`, `6.61 ± 0.16 (best 6.43)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaperNumber::Error(e) => write!(f, "{e:.2}"),
            PaperNumber::Fail(_) => write!(f, "fail"),
            PaperNumber::Runs(runs) => {
                write!(f, "{:.2} ± {:.2}", runs.mean, runs.std)?;
                if let Some(best) = runs.best {
                    write!(f, " (best {best:.2})")?;
                }
                Ok(())
            }
        }
    }
}

/// What `runner train` does with an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentKind {
    /// Train every (variant, seed) and record errors per epoch (the papers' tables).
    #[default]
    Training,
    /// Record ‖∂E/∂x_l‖ per residual unit at initialisation and after the protocol's
    /// iterations (Identity Mappings, eqs. 4–8 made visible).
    Gradients,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    #[serde(default)]
    kind: ExperimentKind,
    title: String,
    source: String,
    /// Pairs of variants whose difference the report tests, `[a, b]`: a − b.
    #[serde(default)]
    compare: Vec<Spanned<Vec<Spanned<String>>>>,
    model: Spanned<Table>,
    variants: Vec<VariantFile>,
    profiles: BTreeMap<Spanned<String>, Spanned<ProfileFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    name: Spanned<String>,
    #[serde(default)]
    paper: Option<PaperNumber>,
    #[serde(default)]
    model: Option<Spanned<Table>>,
    /// Protocol changes for this variant, per profile: `protocol.paper = { ... }`; each
    /// value is checked to be a table when the variant is read, so that a change given
    /// without its profile is named as such.
    #[serde(default)]
    protocol: BTreeMap<String, Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    seeds: Vec<u64>,
    /// The variants this profile trains, by name (all when absent).
    #[serde(default)]
    variants: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    model: Option<Spanned<Table>>,
    protocol: Spanned<Table>,
}

/// A checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The file stem: `shortcuts` for `experiments/shortcuts.toml`.
    pub name: String,
    pub kind: ExperimentKind,
    pub path: PathBuf,
    pub title: String,
    pub source: String,
    pub variants: Vec<Variant>,
    pub profiles: BTreeMap<String, Profile>,
    /// The comparisons the file names (`compare = [["a", "b"], ...]`: a − b), in file order;
    /// empty when it names none (see [`Experiment::comparisons`]).
    pub compare: Vec<(String, String)>,
    base_model: Table,
}

/// One row of the ablation.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub paper: Option<PaperNumber>,
    model: Table,
    /// The line of its `model` table, when it has one.
    model_line: Option<usize>,
    protocol: BTreeMap<String, Table>,
}

impl Profile {
    /// The seeds to train: `requested` (which must be the profile's), or all when empty.
    pub fn select_seeds(&self, requested: &[u64]) -> Result<Vec<u64>> {
        if let Some(seed) = requested.iter().find(|s| !self.seeds.contains(s)) {
            bail!(
                "seed {seed} is not one of profile `{}`'s seeds {:?}",
                self.name,
                self.seeds
            );
        }
        Ok(if requested.is_empty() {
            self.seeds.clone()
        } else {
            requested.to_vec()
        })
    }
}

/// A protocol and its seeds.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub seeds: Vec<u64>,
    /// The variants it trains, by name, in file order of the profile (all when `None`).
    pub variants: Option<Vec<String>>,
    /// The profile's protocol (a variant may change parts of it: [`Experiment::protocol`]).
    pub protocol: Protocol,
    protocol_table: Table,
    model: Table,
    /// The line of its `model` table, or of its header when it has none.
    model_line: usize,
}

fn protocol_from(table: Table) -> Result<Protocol> {
    Value::Table(table).try_into().context("invalid protocol")
}

/// Names used as folder names: letters, digits, `.`, `_`, `-`; not starting with `.` or `-`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl Experiment {
    /// Where the file of `experiment` lies: `experiment` itself when it is a path to a
    /// `.toml` file, else `<experiments_dir>/<experiment>.toml` (`shortcuts` names
    /// `experiments/shortcuts.toml`).
    pub fn locate(experiment: &str, experiments_dir: &Path) -> PathBuf {
        let as_path = Path::new(experiment);
        if as_path.extension().is_some_and(|ext| ext == "toml") {
            return as_path.to_path_buf();
        }
        experiments_dir.join(format!("{experiment}.toml"))
    }

    /// [`Experiment::locate`], refusing a file that is not there with what to do instead: the
    /// experiments that folder holds, or, where it has none (a command run outside the
    /// project), that names are looked up in it and a path to a `.toml` file works anywhere.
    pub fn find(experiment: &str, experiments_dir: &Path) -> Result<PathBuf> {
        let file = Self::locate(experiment, experiments_dir);
        if file.is_file() {
            return Ok(file);
        }
        let by_name = file != Path::new(experiment);
        let given = Path::new(experiment);
        // a folder spelled as a path (`experiments/`, `.`), not a bare name that happens to
        // match a folder here (`depth` run from results/): its .toml files are what to give
        let spelled_as_path = experiment.contains('/') || matches!(experiment, "." | "..");
        if spelled_as_path && given.is_dir() {
            let files = toml_files(given);
            let dir = given.display();
            bail!(
                "{dir} is a folder; give one experiment file in it{}",
                if files.is_empty() {
                    " (it has no .toml files)".to_string()
                } else {
                    let paths: Vec<String> = files
                        .iter()
                        .map(|stem| given.join(format!("{stem}.toml")).display().to_string())
                        .collect();
                    format!(": {}", paths.join(", "))
                }
            );
        }
        let names = toml_files(experiments_dir);
        let dir = experiments_dir.display();
        let hint = if !by_name {
            String::new()
        } else if names.is_empty() {
            format!(
                "; a name is looked up in {dir}/, which has no experiment files here \
                 (run from the project's folder, or give the path of a .toml file)"
            )
        } else {
            format!("; {dir}/ has {}", names.join(", "))
        };
        bail!("no experiment file at {}{hint}", file.display())
    }

    /// Reads and checks an experiment file. Every error names the file, the line and the reason.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let at = |offset: usize, reason: String| {
            anyhow::anyhow!("{}:{}: {reason}", path.display(), line_of(text, offset))
        };
        let file: ExperimentFile = toml::from_str(text).map_err(|err| {
            let line = err
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            anyhow::anyhow!("{}{line}: {}", path.display(), err.message())
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !is_safe_name(&name) {
            bail!(
                "{}: the file name `{name}` is not usable as a folder name",
                path.display()
            );
        }

        let mut seen = HashSet::new();
        let mut variants = Vec::new();
        for v in &file.variants {
            let vname = v.name.get_ref();
            if !is_safe_name(vname) {
                return Err(at(
                    v.name.span().start,
                    format!("variant name `{vname}` is not usable as a folder name (letters, digits, . _ -)"),
                ));
            }
            if !seen.insert(vname.clone()) {
                return Err(at(
                    v.name.span().start,
                    format!("duplicate variant name `{vname}`"),
                ));
            }
            variants.push(Variant {
                name: vname.clone(),
                paper: v.paper,
                model: v
                    .model
                    .as_ref()
                    .map(|m| m.get_ref().clone())
                    .unwrap_or_default(),
                model_line: v.model.as_ref().map(|m| line_of(text, m.span().start)),
                protocol: v
                    .protocol
                    .iter()
                    .map(|(k, t)| match t.get_ref() {
                        Value::Table(table) => Ok((k.clone(), table.clone())),
                        _ => Err(at(
                            t.span().start,
                            format!(
                                "variant `{vname}`: `protocol.{k}` is not a table; a variant \
                                 changes the protocol per profile, with a table of changes, \
                                 e.g. `protocol.paper = {{ lr = 0.05 }}`"
                            ),
                        )),
                    })
                    .collect::<Result<_>>()?,
            });
        }
        if variants.is_empty() {
            return Err(at(0, "no [[variants]]".into()));
        }

        let mut profiles = BTreeMap::new();
        for (pname, profile) in &file.profiles {
            if !is_safe_name(pname.get_ref()) {
                return Err(at(
                    pname.span().start,
                    format!(
                        "profile name `{}` is not usable as a folder name",
                        pname.get_ref()
                    ),
                ));
            }
            let p = profile.get_ref();
            let protocol = protocol_from(p.protocol.get_ref().clone()).map_err(|err| {
                at(
                    p.protocol.span().start,
                    format!("profile `{}`: {err:#}", pname.get_ref()),
                )
            })?;
            let problems = protocol.problems();
            if !problems.is_empty() {
                return Err(at(
                    p.protocol.span().start,
                    format!("profile `{}`: {}", pname.get_ref(), problems.join("; ")),
                ));
            }
            let unique: HashSet<_> = p.seeds.iter().collect();
            if p.seeds.is_empty() || unique.len() != p.seeds.len() {
                return Err(at(
                    profile.span().start,
                    format!(
                        "profile `{}`: seeds must be a non-empty list without repeats",
                        pname.get_ref()
                    ),
                ));
            }
            if let Some(names) = &p.variants {
                let mut listed = HashSet::new();
                for name in names {
                    if !seen.contains(name.get_ref()) {
                        return Err(at(
                            name.span().start,
                            format!(
                                "profile `{}`: no variant `{}` in this file",
                                pname.get_ref(),
                                name.get_ref()
                            ),
                        ));
                    }
                    if !listed.insert(name.get_ref().clone()) {
                        return Err(at(
                            name.span().start,
                            format!(
                                "profile `{}`: variant `{}` listed twice",
                                pname.get_ref(),
                                name.get_ref()
                            ),
                        ));
                    }
                }
                if names.is_empty() {
                    return Err(at(
                        profile.span().start,
                        format!("profile `{}`: variants must not be empty", pname.get_ref()),
                    ));
                }
            }
            profiles.insert(
                pname.get_ref().clone(),
                Profile {
                    name: pname.get_ref().clone(),
                    seeds: p.seeds.clone(),
                    variants: p
                        .variants
                        .as_ref()
                        .map(|names| names.iter().map(|n| n.get_ref().clone()).collect()),
                    protocol,
                    protocol_table: p.protocol.get_ref().clone(),
                    model: p
                        .model
                        .as_ref()
                        .map(|m| m.get_ref().clone())
                        .unwrap_or_default(),
                    model_line: line_of(
                        text,
                        p.model
                            .as_ref()
                            .map_or(profile.span().start, |m| m.span().start),
                    ),
                },
            );
        }
        if profiles.is_empty() {
            return Err(at(0, "no [profiles.*]".into()));
        }

        let mut compare = Vec::new();
        for pair in &file.compare {
            let names = pair.get_ref();
            let [a, b] = names.as_slice() else {
                return Err(at(
                    pair.span().start,
                    format!(
                        "compare: each comparison is two variant names, [\"a\", \"b\"] (a − b); \
                         this one has {}",
                        names.len()
                    ),
                ));
            };
            for name in [a, b] {
                if !seen.contains(name.get_ref()) {
                    return Err(at(
                        name.span().start,
                        format!("compare: no variant `{}` in this file", name.get_ref()),
                    ));
                }
            }
            if a.get_ref() == b.get_ref() {
                return Err(at(
                    pair.span().start,
                    format!("compare: `{}` compared with itself", a.get_ref()),
                ));
            }
            let names = (a.get_ref().clone(), b.get_ref().clone());
            if compare.contains(&names) {
                return Err(at(
                    pair.span().start,
                    format!("compare: [\"{}\", \"{}\"] listed twice", names.0, names.1),
                ));
            }
            compare.push(names);
        }

        let experiment = Self {
            name,
            kind: file.kind,
            path: path.to_path_buf(),
            title: file.title,
            source: file.source,
            variants,
            profiles,
            compare,
            base_model: file.model.get_ref().clone(),
        };
        // Every network of every profile must be one the papers define.
        let base_span = file.model.span().start;
        for (v, vfile) in experiment.variants.iter().zip(&file.variants) {
            let span = vfile
                .model
                .as_ref()
                .map(|m| m.span().start)
                .unwrap_or(base_span);
            for (pname, table) in &vfile.protocol {
                let Some(profile) = experiment.profiles.get(pname) else {
                    return Err(at(
                        table.span().start,
                        format!(
                            "variant `{}`: protocol for unknown profile `{pname}`",
                            v.name
                        ),
                    ));
                };
                experiment.protocol(v, profile).map_err(|err| {
                    at(
                        table.span().start,
                        format!("variant `{}`, profile `{pname}`: {err:#}", v.name),
                    )
                })?;
            }
            for profile in experiment.profiles.values() {
                experiment.net_config(v, profile).map_err(|err| {
                    let reason =
                        format!("variant `{}`, profile `{}`: {err:#}", v.name, profile.name);
                    // the profile's model table is at fault when the variant's net is
                    // sound without it
                    let bare = Profile {
                        model: Table::new(),
                        ..profile.clone()
                    };
                    if !profile.model.is_empty() && experiment.net_config(v, &bare).is_ok() {
                        anyhow::anyhow!("{}:{}: {reason}", path.display(), profile.model_line)
                    } else {
                        at(span, reason)
                    }
                })?;
            }
        }
        Ok(experiment)
    }

    /// The depths the file names for `variants` (a variant's own, else the experiment's),
    /// before any profile changes them, ascending; `None` when one of them names none.
    pub fn declared_depths(&self, variants: &[&Variant]) -> Option<Vec<usize>> {
        let mut depths = variants
            .iter()
            .map(|v| self.declared_depth(v))
            .collect::<Option<Vec<_>>>()?;
        depths.sort_unstable();
        depths.dedup();
        Some(depths)
    }

    /// The depth the file names for `variant` (its own, else the experiment's), before any
    /// profile changes it.
    pub fn declared_depth(&self, variant: &Variant) -> Option<usize> {
        let depth = variant
            .model
            .get("depth")
            .or(self.base_model.get("depth"))?;
        usize::try_from(depth.as_integer()?).ok()
    }

    /// The profile called `name`, or an error listing the profiles there are.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).with_context(|| {
            format!(
                "{} has no profile `{name}` (it has: {})",
                self.path.display(),
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The comparisons (a, b), a − b, of the variants `profile` trains: those of the file's
    /// `compare` whose two variants it trains, or, when the file names none, every variant
    /// against the profile's first.
    pub fn comparisons(&self, profile: &Profile) -> Vec<(String, String)> {
        let trained: Vec<&str> = self
            .variants_of(profile)
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        if self.compare.is_empty() {
            let Some((first, rest)) = trained.split_first() else {
                return Vec::new();
            };
            return rest
                .iter()
                .map(|v| (v.to_string(), first.to_string()))
                .collect();
        }
        self.compare
            .iter()
            .filter(|(a, b)| trained.contains(&a.as_str()) && trained.contains(&b.as_str()))
            .cloned()
            .collect()
    }

    /// The variants `profile` trains, in the order of the file.
    pub fn variants_of(&self, profile: &Profile) -> Vec<&Variant> {
        self.variants
            .iter()
            .filter(|v| {
                profile
                    .variants
                    .as_ref()
                    .is_none_or(|names| names.contains(&v.name))
            })
            .collect()
    }

    /// The variants called `names` (all of the profile's when empty), or an error naming an
    /// unknown one or one the profile does not train.
    pub fn select_variants(&self, profile: &Profile, names: &[String]) -> Result<Vec<&Variant>> {
        let trained = self.variants_of(profile);
        if names.is_empty() {
            return Ok(trained);
        }
        let listing = |variants: &[&Variant]| {
            variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        names
            .iter()
            .map(|n| {
                if let Some(v) = trained.iter().find(|v| &v.name == n) {
                    return Ok(*v);
                }
                if self.variants.iter().any(|v| &v.name == n) {
                    bail!(
                        "profile `{}` of {} does not train variant `{n}`; it trains: {}",
                        profile.name,
                        self.path.display(),
                        listing(&trained)
                    );
                }
                bail!(
                    "{} has no variant `{n}`; it has: {}",
                    self.path.display(),
                    listing(&self.variants.iter().collect::<Vec<_>>())
                )
            })
            .collect()
    }

    /// The protocol of `variant` under `profile`: the profile's, with the variant's changes.
    pub fn protocol(&self, variant: &Variant, profile: &Profile) -> Result<Protocol> {
        let Some(changes) = variant.protocol.get(&profile.name) else {
            return Ok(profile.protocol.clone());
        };
        let mut table = profile.protocol_table.clone();
        for (key, value) in changes {
            table.insert(key.clone(), value.clone());
        }
        let protocol = protocol_from(table)?;
        let problems = protocol.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(protocol)
    }

    /// The network of `variant` under `profile` (one replica), checked.
    /// `file:line` of where the network of `variant` in `profile` is set: the profile's
    /// `model` table when it has one, else the variant's, else the profile's header.
    pub fn model_location(&self, variant: &Variant, profile: &Profile) -> String {
        let line = if profile.model.is_empty() {
            variant.model_line.unwrap_or(profile.model_line)
        } else {
            profile.model_line
        };
        format!("{}:{line}", self.path.display())
    }

    pub fn net_config(&self, variant: &Variant, profile: &Profile) -> Result<NetConfig> {
        let mut table = self.base_model.clone();
        for (key, value) in variant.model.iter().chain(profile.model.iter()) {
            table.insert(key.clone(), value.clone());
        }
        if let Some(n) = table.remove("units_per_stage") {
            let n = n
                .as_integer()
                .filter(|&n| n >= 1)
                .context("units_per_stage must be a positive integer")?;
            let block: BlockKind = match table.get("block") {
                Some(b) => b
                    .clone()
                    .try_into()
                    .map_err(|err| model_error("invalid block", err))?,
                None => BlockKind::default(),
            };
            let depth = usize::try_from(n)
                .ok()
                .and_then(|n| i64::try_from(block.cifar_depth(n)).ok())
                .context("units_per_stage is too large")?;
            table.insert("depth".into(), Value::Integer(depth));
        }
        if table.contains_key("replicas") {
            bail!("`replicas` is chosen by the runner (--replicas), not by the experiment file");
        }
        let config: NetConfig = Value::Table(table)
            .try_into()
            .map_err(|err| model_error("invalid model", err))?;
        config.validate()?;
        Ok(config)
    }
}

/// A model table's error in the file's words: serde calls an enum's values its "variants",
/// which in an experiment file are networks, and does not list `units_per_stage` among the
/// model's fields (it is read before), so it is added where a field of the model's own list
/// (the one naming `family`; a nested table's does not) is unknown.
fn model_error(what: &str, err: toml::de::Error) -> anyhow::Error {
    let mut message = err.message().replace("unknown variant", "unknown value");
    if message.starts_with("unknown field") && message.contains("`family`") {
        message.push_str(", or `units_per_stage`");
    }
    anyhow::anyhow!("{what}: {message}")
}

/// The stems of the `.toml` files in `dir`, sorted (none when it cannot be read).
fn toml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .collect();
    names.sort();
    names
}
#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
title = "test"
source = "nowhere"

[model]
depth = 20

[[variants]]
name = "original"
paper = 8.75

[[variants]]
name = "half"
paper = "fail"
model = { shortcut = { scaling = { lambda_s = 0.5, lambda_f = 0.5 } } }

[[variants]]
name = "bottleneck"
model = { depth = 164, block = "bottleneck", downsample = "b", placement = "full_preactivation" }
protocol.paper = { warmup = { lr = 0.01, iterations = 400 } }

[profiles.smoke]
seeds = [0]
model = { units_per_stage = 1 }
protocol = { batch_size = 8, iterations = 10, lr = 0.1, lr_drops = [5] }

[profiles.paper]
seeds = [0, 1]
protocol = { batch_size = 128, iterations = 64000, lr = 0.1, lr_drops = [32000, 48000] }
"#;

    fn parse(text: &str) -> Result<Experiment> {
        Experiment::parse(Path::new("experiments/t.toml"), text)
    }

    /// Where a network is set, for errors about it (a network too big for memory): the
    /// profile's model table, else the variant's, else the profile's header.
    #[test]
    fn the_model_of_a_variant_in_a_profile_is_located_by_its_line() {
        let text = "title = \"t\"\nsource = \"s\"\n[model]\ndepth = 20\n\
                    [[variants]]\nname = \"a\"\n\
                    [[variants]]\nname = \"b\"\nmodel = { depth = 32 }\n\
                    [profiles.big]\nseeds = [0]\nmodel = { units_per_stage = 99 }\n\
                    protocol = { batch_size = 8, iterations = 10, lr = 0.1, lr_drops = [] }\n\
                    [profiles.small]\nseeds = [0]\n\
                    protocol = { batch_size = 8, iterations = 10, lr = 0.1, lr_drops = [] }\n";
        let e = parse(text).unwrap();
        let at = |v: usize, p: &str| e.model_location(&e.variants[v], e.profile(p).unwrap());
        assert_eq!(at(0, "big"), "experiments/t.toml:12");
        assert_eq!(at(1, "big"), "experiments/t.toml:12");
        assert_eq!(at(1, "small"), "experiments/t.toml:9");
        assert_eq!(at(0, "small"), "experiments/t.toml:14");
    }

    /// A net a profile's model table breaks is refused at that table's line; one the
    /// variant's own table breaks, at the variant's.
    #[test]
    fn a_broken_model_is_refused_at_the_table_that_breaks_it() {
        let text = "title = \"t\"\nsource = \"s\"\n[model]\ndepth = 20\n\
                    [[variants]]\nname = \"a\"\n\
                    [[variants]]\nname = \"b\"\nmodel = { block = \"triangle\" }\n\
                    [profiles.big]\nseeds = [0]\nmodel = { units_per_stage = 0 }\n\
                    protocol = { batch_size = 8, iterations = 10, lr = 0.1, lr_drops = [] }\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with("experiments/t.toml:12: variant `a`, profile `big`:")
                && err.contains("units_per_stage"),
            "{err}"
        );
        let sound = text.replace("units_per_stage = 0", "units_per_stage = 3");
        let err = parse(&sound).unwrap_err().to_string();
        assert!(
            err.starts_with("experiments/t.toml:9: variant `b`, profile `big`:"),
            "{err}"
        );
    }

    #[test]
    fn a_good_file_resolves_every_variant_and_profile() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.name, "t");
        assert_eq!(e.variants.len(), 3);
        assert_eq!(
            e.variants[1].paper,
            Some(PaperNumber::Fail(FailMarker::Fail))
        );
        assert_eq!(e.variants[0].paper, Some(PaperNumber::Error(8.75)));
        let smoke = e.profile("smoke").unwrap();
        let paper = e.profile("paper").unwrap();
        // units_per_stage = 1 gives 6n+2 = 8 for basic units and 9n+2 = 11 for bottlenecks.
        assert_eq!(e.net_config(&e.variants[0], smoke).unwrap().depth, 8);
        assert_eq!(e.net_config(&e.variants[2], smoke).unwrap().depth, 11);
        assert_eq!(e.net_config(&e.variants[2], paper).unwrap().depth, 164);
        // Only the bottleneck variant warms up, and only in the paper profile.
        assert_eq!(
            e.protocol(&e.variants[2], paper)
                .unwrap()
                .warmup
                .map(|w| w.iterations),
            Some(400)
        );
        assert_eq!(
            e.protocol(&e.variants[2], paper).unwrap().lr_drops,
            [32000, 48000]
        );
        assert_eq!(e.protocol(&e.variants[2], smoke).unwrap().warmup, None);
        assert_eq!(e.protocol(&e.variants[0], paper).unwrap().warmup, None);
        let half = e.net_config(&e.variants[1], paper).unwrap();
        assert_eq!(
            half.shortcut,
            crate::net::ShortcutKind::Scaling {
                lambda_s: 0.5,
                lambda_f: 0.5
            }
        );
        assert_eq!(half.depth, 20);
        assert!(e
            .profile("short")
            .unwrap_err()
            .to_string()
            .contains("smoke"));
        assert!(e
            .select_variants(smoke, &["nope".into()])
            .unwrap_err()
            .to_string()
            .contains("original"));
    }

    /// Without `compare`, every variant of a profile against its first; with it, the pairs
    /// named whose variants the profile trains, in file order; a bad pair is refused at its
    /// line.
    #[test]
    fn comparisons_are_the_files_pairs_or_every_variant_against_the_first() {
        let e = parse(GOOD).unwrap();
        let paper = e.profile("paper").unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            e.comparisons(paper),
            [pair("half", "original"), pair("bottleneck", "original")]
        );
        let with = GOOD.replace(
            "source = \"nowhere\"\n",
            "source = \"nowhere\"\ncompare = [[\"original\", \"half\"], [\"bottleneck\", \"half\"]]\n",
        );
        let e = parse(&with).unwrap();
        assert_eq!(
            e.comparisons(e.profile("paper").unwrap()),
            [pair("original", "half"), pair("bottleneck", "half")]
        );
        // a profile that does not train `bottleneck` keeps only the other pair
        let subset = with.replace(
            "[profiles.smoke]\nseeds = [0]\n",
            "[profiles.smoke]\nseeds = [0]\nvariants = [\"original\", \"half\"]\n",
        );
        let e = parse(&subset).unwrap();
        assert_eq!(
            e.comparisons(e.profile("smoke").unwrap()),
            [pair("original", "half")]
        );
        for (pairs, words) in [
            ("[[\"original\"]]", "two variant names"),
            ("[[\"original\", \"nope\"]]", "no variant `nope`"),
            ("[[\"half\", \"half\"]]", "`half` compared with itself"),
            (
                "[[\"half\", \"original\"], [\"half\", \"original\"]]",
                "listed twice",
            ),
        ] {
            let text = GOOD.replace(
                "source = \"nowhere\"\n",
                &format!("source = \"nowhere\"\ncompare = {pairs}\n"),
            );
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.starts_with("experiments/t.toml:4: "), "{err}");
            assert!(err.contains(words), "{err}");
        }
    }

    /// Replaces `from` by `to` in the good file and returns the error.
    fn error_after(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        format!("{:#}", parse(&GOOD.replacen(from, to, 1)).unwrap_err())
    }

    #[test]
    fn bad_files_are_refused_with_file_line_and_reason() {
        let cases = [
            // (change, expected line, words of the reason); model errors point at the table.
            (
                ("depth = 20\n", "depth = 20\nwidth = 3\n"),
                5,
                "unknown field `width`, expected one of `family`, `depth`",
            ),
            (
                ("depth = 20\n", "depth = 20\nwidth = 3\n"),
                5,
                ", or `units_per_stage`",
            ),
            (
                ("block = \"bottleneck\"", "block = \"bottlenek\""),
                19,
                "unknown value `bottlenek`, expected `basic` or `bottleneck`",
            ),
            (("paper = 8.75", "paper = 8.75\ncolour = 1"), 11, "colour"),
            (
                ("shortcut = { scaling", "shortcut = { sclaing"),
                15,
                "sclaing",
            ),
            (
                ("name = \"half\"", "name = \"original\""),
                13,
                "duplicate variant name `original`",
            ),
            (
                ("name = \"half\"", "name = \"../up\""),
                13,
                "not usable as a folder name",
            ),
            (("depth = 164, block", "depth = 165, block"), 19, "9n+2"),
            (("[model]\ndepth = 20", "[model]\ndepth = 21"), 5, "6n+2"),
            (("lr_drops = [5]", "lr_drops = [50]"), 25, "lr_drops"),
            (("seeds = [0, 1]", "seeds = [1, 1]"), 27, "seeds"),
            (
                ("[profiles.smoke]\nseeds = [0]\n", "[profiles.smoke]\n"),
                22,
                "seeds",
            ),
            (
                ("protocol.paper", "protocol.papr"),
                20,
                "unknown profile `papr`",
            ),
            (
                (
                    "protocol.paper = { warmup = { lr = 0.01, iterations = 400 } }",
                    "protocol = { lr = 0.05 }",
                ),
                20,
                "`protocol.lr` is not a table; a variant changes the protocol per profile",
            ),
            (("iterations = 400 }", "iterations = 70000 }"), 20, "warmup"),
            (
                ("{ lr = 0.01,", "{ momentom = 1, lr = 0.01,"),
                20,
                "momentom",
            ),
            (
                ("paper = 8.75", "paper = \"good\""),
                10,
                "expected a test error in percent (a number), \"fail\", or { mean = .., std = .., best = .. }",
            ),
            (("paper = 8.75", "paper = -1"), 10, "from 0 up"),
            (
                (
                    "lambda_s = 0.5, lambda_f = 0.5",
                    "lambda_s = -0.5, lambda_f = 0.5",
                ),
                15,
                "lambda_s = -0.5 must not be negative",
            ),
        ];
        for ((from, to), line, words) in cases {
            let err = error_after(from, to);
            assert!(
                err.starts_with(&format!("experiments/t.toml:{line}:")),
                "{from} -> {to}: {err}"
            );
            assert!(err.contains(words), "{from} -> {to}: {err}");
        }
        // a field unknown inside a model's nested table is not one units_per_stage stands for
        for nested in ["sclaing", "depth"] {
            let err = error_after("shortcut = { scaling", &format!("shortcut = {{ {nested}"));
            assert!(!err.contains("units_per_stage"), "{err}");
        }
    }

    #[test]
    fn a_paper_number_is_a_number_fail_or_mean_std_and_best() {
        let paper_of = |value: &str| {
            let e = parse(&GOOD.replacen("paper = 8.75", &format!("paper = {value}"), 1)).unwrap();
            e.variants[0].paper.unwrap()
        };
        assert_eq!(paper_of("8.75"), PaperNumber::Error(8.75));
        assert_eq!(paper_of("9"), PaperNumber::Error(9.0));
        assert_eq!(paper_of("\"fail\""), PaperNumber::Fail(FailMarker::Fail));
        // He 2015, Table 6: ResNet-110 "6.43 (6.61±0.16)", best of 5 runs (mean ± std)
        let he_110 = paper_of("{ mean = 6.61, std = 0.16, best = 6.43 }");
        let runs = PaperRuns {
            mean: 6.61,
            std: 0.16,
            best: Some(6.43),
        };
        assert_eq!(he_110, PaperNumber::Runs(runs));
        assert_eq!((he_110.runs(), he_110.error()), (Some(runs), None));
        assert!(!he_110.is_fail());
        assert_eq!(he_110.to_string(), "6.61 ± 0.16 (best 6.43)");
        // best is optional, the keys come in any order, integers are numbers
        let no_best = paper_of("{ std = 0, mean = 7 }");
        assert_eq!(
            no_best,
            PaperNumber::Runs(PaperRuns {
                mean: 7.0,
                std: 0.0,
                best: None
            })
        );
        assert_eq!(no_best.to_string(), "7.00 ± 0.00");
        assert_eq!(PaperNumber::Error(8.75).runs(), None);
        // and the sub-table form of TOML reads the same
        let table = GOOD.replacen(
            "paper = 8.75\n",
            "paper.mean = 6.61\npaper.std = 0.16\npaper.best = 6.43\n",
            1,
        );
        assert_eq!(parse(&table).unwrap().variants[0].paper, Some(he_110));
    }

    #[test]
    fn a_bad_paper_number_names_every_accepted_form() {
        let forms = "a test error in percent (a number), \"fail\", or { mean = .., std = .., best = .. } (best optional)";
        let cases = [
            // (the value, words of the reason); every error is on the line of `paper`, 10
            ("true", forms),
            ("[6.61, 0.16]", forms),
            ("\"6.61 ± 0.16\"", forms),
            (
                "{ mean = 6.61, std = 0.16, median = 6.5 }",
                "paper: unknown field `median`, expected one of `mean`, `std`, `best`",
            ),
            ("{ mean = 6.61 }", "`std` is missing; expected a test error"),
            ("{ std = 0.16, best = 6.43 }", "`mean` is missing"),
            ("{ mean = 6.61, std = -0.16 }", "paper.std = -0.16"),
            (
                "{ mean = 6.61, std = \"small\" }",
                "paper.std: invalid type: string",
            ),
            ("{ mean = nan, std = 0.16 }", "paper.mean = NaN"),
            (
                "{ mean = 6.61, std = 0.16, best = 6.8 }",
                "best = 6.8 is above mean = 6.61",
            ),
            ("{}", "`mean` is missing"),
        ];
        for (value, words) in cases {
            let err = error_after("paper = 8.75", &format!("paper = {value}"));
            assert!(err.starts_with("experiments/t.toml:10:"), "{value}: {err}");
            assert!(err.contains(words), "{value}: {err}");
        }
        // A key given twice (TOML itself refuses that; other formats may not).
        let err = serde_json::from_str::<PaperNumber>(r#"{"mean": 6.61, "std": 0.1, "mean": 6.5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mean` given twice"), "{err}");
    }

    #[test]
    fn a_profile_may_train_some_variants_only() {
        let text = GOOD.replace(
            "[profiles.smoke]\nseeds = [0]\n",
            "[profiles.smoke]\nseeds = [0]\nvariants = [\"half\", \"original\"]\n",
        );
        let e = parse(&text).unwrap();
        let smoke = e.profile("smoke").unwrap();
        let names = |vs: Vec<&Variant>| vs.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        // in the order of the file
        assert_eq!(
            names(e.select_variants(smoke, &[]).unwrap()),
            ["original", "half"]
        );
        let paper = e.profile("paper").unwrap();
        assert_eq!(e.select_variants(paper, &[]).unwrap().len(), 3);
        let err = e
            .select_variants(smoke, &["bottleneck".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not train") && err.contains("original, half"),
            "{err}"
        );
        let unknown = text.replace("[\"half\", \"original\"]", "[\"halve\"]");
        let err = format!("{:#}", parse(&unknown).unwrap_err());
        assert!(
            err.starts_with("experiments/t.toml:24:") && err.contains("no variant `halve`"),
            "{err}"
        );
    }

    #[test]
    fn replicas_are_not_an_experiment_setting() {
        let err = error_after("depth = 20\n", "depth = 20\nreplicas = 4\n");
        assert!(
            err.contains("replicas") && err.contains("--replicas"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_experiment_is_refused_with_what_there_is() {
        let dir = tempfile::tempdir().unwrap();
        let experiments = dir.path().join("experiments");
        std::fs::create_dir(&experiments).unwrap();
        let empty = format!("{:#}", Experiment::find("depth", &experiments).unwrap_err());
        assert!(empty.contains("depth.toml") && empty.contains("no experiment files here"));
        assert!(empty.contains("give the path of a .toml file"), "{empty}");

        for name in ["shortcuts", "depth"] {
            std::fs::write(experiments.join(format!("{name}.toml")), GOOD).unwrap();
        }
        std::fs::write(experiments.join("notes.md"), "").unwrap();
        let found = Experiment::find("depth", &experiments).unwrap();
        assert_eq!(found, experiments.join("depth.toml"));
        let typo = format!("{:#}", Experiment::find("dept", &experiments).unwrap_err());
        assert!(typo.contains("has depth, shortcuts"), "{typo}");
        // a path is not looked up: nothing to list
        let path = experiments.join("gone.toml");
        let gone = format!(
            "{:#}",
            Experiment::find(path.to_str().unwrap(), &experiments).unwrap_err()
        );
        assert_eq!(gone, format!("no experiment file at {}", path.display()));
        // the folder itself, given as the experiment
        let folder = format!(
            "{:#}",
            Experiment::find(experiments.to_str().unwrap(), &experiments).unwrap_err()
        );
        let listed = format!(
            "is a folder; give one experiment file in it: {}, {}",
            experiments.join("depth.toml").display(),
            experiments.join("shortcuts.toml").display()
        );
        assert!(folder.ends_with(&listed), "{folder}");
        // a bare name is a name even where a folder of that name is at hand
        let cwd_folder = format!("{:#}", Experiment::find("src", &experiments).unwrap_err());
        assert!(
            cwd_folder.contains("src.toml") && cwd_folder.contains("has depth, shortcuts"),
            "{cwd_folder}"
        );
    }
}

/// What the readers of a file (the report's tables and titles, the runner's sweep) get from
/// it: the variants in file order with the papers' numbers, the kind, the seeds and the
/// depths of the title.
#[cfg(test)]
mod reading {
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

    fn parse(text: &str) -> Result<Experiment> {
        Experiment::parse(Path::new("x.toml"), text)
    }

    #[test]
    fn reads_variants_in_file_order_and_the_depth_of_model_tables() {
        let e = parse(FILE).unwrap();
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
        let all = |e: &Experiment| e.declared_depths(&e.variants.iter().collect::<Vec<_>>());
        assert_eq!(all(&e), Some(vec![110]));
        let deeper = FILE.replace(
            "name = \"no-paper\"",
            "name = \"no-paper\"\nmodel = { depth = 164 }",
        );
        let deeper = parse(&deeper).unwrap();
        assert_eq!(all(&deeper), Some(vec![110, 164]));
        // of some variants only: their depths
        assert_eq!(
            deeper.declared_depths(&[&deeper.variants[0]]),
            Some(vec![110])
        );
        // A profile that sets the depth for every variant: the file itself names none.
        let unsaid = FILE
            .replace("depth = 110\n", "")
            .replace("model = {}", "model = { units_per_stage = 18 }")
            .replace(
                "[profiles.smoke]\nseeds = [0]\n",
                "[profiles.smoke]\nseeds = [0]\nmodel = { units_per_stage = 1 }\n",
            );
        assert_eq!(all(&parse(&unsaid).unwrap()), None);
    }

    #[test]
    fn reads_the_kind_and_refuses_an_unknown_one() {
        let gradients = format!("kind = \"gradients\"\n{FILE}");
        let e = parse(&gradients).unwrap();
        assert_eq!(e.kind, ExperimentKind::Gradients);
        let err = parse(&format!("kind = \"hessians\"\n{FILE}")).unwrap_err();
        assert!(err.to_string().contains("hessians"), "{err}");
    }

    #[test]
    fn the_shipped_gradients_file_parses_as_gradients() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/gradients.toml");
        let e = Experiment::load(&path).unwrap();
        assert_eq!(e.kind, ExperimentKind::Gradients);
        assert!(e.variants.iter().any(|v| v.name == "identity-1202"));
        assert!(e.variants.iter().all(|v| v.paper.is_none()));
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let e = parse(FILE).unwrap();
        let err = e.profile("short").unwrap_err().to_string();
        assert!(
            err.contains("short") && err.contains("paper, smoke"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// Every experiment file of the repository parses, and its networks are the papers'.
    #[test]
    fn every_experiment_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let e = Experiment::load(&path).unwrap_or_else(|err| panic!("{err:#}"));
                for profile in ["paper", "short", "smoke"] {
                    e.profile(profile).unwrap();
                }
                // the papers' precision unless a user asks otherwise
                let paper = e.profile("paper").unwrap();
                for v in e.variants_of(paper) {
                    let p = e.protocol(v, paper).unwrap();
                    assert_eq!(p.precision, crate::Precision::Fp32, "{}", e.name);
                }
                // the CPU-scale reproductions train whole epochs of 390 steps on all 50k images
                if e.kind == ExperimentKind::Training {
                    let cpu = e.profile("cpu").unwrap();
                    for v in e.variants_of(cpu) {
                        let p = e.protocol(v, cpu).unwrap();
                        assert_eq!(p.train_subset, None, "{}", e.name);
                        assert_eq!(p.iterations % (50_000 / p.batch_size), 0, "{}", e.name);
                    }
                }
                names.push(e.name);
            }
        }
        names.sort();
        assert_eq!(names, ["activations", "depth", "gradients", "shortcuts"]);
    }

    #[test]
    fn depth_file_gives_resnet_110_as_he_2015_table_6_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let e = Experiment::load(&dir.join("depth.toml")).unwrap();
        let paper = |name: &str| e.variants.iter().find(|v| v.name == name).unwrap().paper;
        // Table 6: "6.43 (6.61±0.16)", best (mean ± std) of 5 runs; the others one number
        assert_eq!(
            paper("resnet-110").and_then(|p| p.runs()),
            Some(PaperRuns {
                mean: 6.61,
                std: 0.16,
                best: Some(6.43)
            })
        );
        assert_eq!(paper("resnet-20").and_then(|p| p.error()), Some(8.75));
        assert_eq!(paper("plain-20"), None);
    }

    #[test]
    fn shortcuts_paper_profile_is_table_1_on_resnet_110() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let e = Experiment::load(&dir.join("shortcuts.toml")).unwrap();
        let paper = e.profile("paper").unwrap();
        assert_eq!(e.variants.len(), 11);
        assert_eq!(paper.seeds.len(), 5);
        let p = &paper.protocol;
        assert_eq!(
            (p.batch_size, p.iterations, p.lr, p.lr_drops.as_slice()),
            (128, 64_000, 0.1, &[32_000, 48_000][..])
        );
        assert_eq!((p.momentum, p.weight_decay), (0.9, 1e-4));
        for v in &e.variants {
            assert_eq!(e.net_config(v, paper).unwrap().depth, 110, "{}", v.name);
        }
        let smoke = e.profile("smoke").unwrap();
        assert_eq!(e.net_config(&e.variants[0], smoke).unwrap().depth, 8);
    }
}
