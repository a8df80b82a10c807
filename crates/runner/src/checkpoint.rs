//! `checkpoint.ot`: what an unfinished run needs to resume exactly where it stopped.
//!
//! One file per model of a stack, written atomically after every epoch and on a stop request
//! (then mid-epoch): the model's weights, its momentum (and fp16 loss scale), the shared
//! optimizer step marker, the progress (`meta/iteration`, `meta/wall_s`), the interrupted
//! epoch's per-step losses and error count so far, and `meta/trained_with`: the run's
//! configuration, the data fingerprint and the precision it was trained with. A resume under
//! anything else is refused, naming the differences: a run is one protocol from its first
//! step to its last.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use spec::{EpochRow, RunConfig, RunDir};
use tch::{Kind, Tensor};

/// What a run is trained with (its precision is in the protocol); a checkpoint resumes only
/// under the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedWith {
    pub run: RunConfig,
    /// The data fingerprint's digest.
    pub data: String,
}

impl TrainedWith {
    /// `what: before → now` for every setting that differs, in a stable order.
    pub fn differences(&self, now: &TrainedWith) -> Vec<String> {
        let (before, after) = (flatten(self), flatten(now));
        let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        keys.into_iter()
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
                format!("{k}: {} → {}", show(before.get(k)), show(after.get(k)))
            })
            .collect()
    }
}

/// `a.b.c = value` for every leaf of `value`'s JSON form.
fn flatten(value: &impl Serialize) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(value).unwrap_or_default(),
        &mut out,
    );
    out
}

/// Weights, momentum and progress of one model.
pub struct Checkpoint {
    /// SGD steps done.
    pub iteration: i64,
    /// Training seconds so far (across resumptions).
    pub wall_s: f64,
    /// What it was trained with; `None` in checkpoints of runners that did not record it.
    pub trained_with: Option<TrainedWith>,
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// The run's checkpoint, if it has one; a file that cannot be read is an error of one
    /// line naming it (libtorch's own message carries its C++ stack, which is left out).
    pub fn load(run: &RunDir) -> Result<Option<Self>> {
        let path = run.checkpoint_path();
        if !path.exists() {
            return Ok(None);
        }
        let tensors: HashMap<String, Tensor> = Tensor::load_multi(&path)
            .map_err(|err| {
                let first = err.to_string();
                let first = first.lines().next().unwrap_or_default().trim().to_string();
                anyhow::anyhow!("{} cannot be read ({first})", path.display())
            })?
            .into_iter()
            .collect();
        let scalar = |name: &str| {
            tensors
                .get(name)
                .map(|t| t.double_value(&[]))
                .with_context(|| format!("{} lacks {name}", path.display()))
        };
        let trained_with =
            match tensors.get("meta/trained_with") {
                Some(bytes) => {
                    let bytes = Vec::<u8>::try_from(bytes)?;
                    Some(serde_json::from_slice(&bytes).with_context(|| {
                        format!("{}: meta/trained_with is damaged", path.display())
                    })?)
                }
                None => None,
            };
        Ok(Some(Self {
            iteration: scalar("meta/iteration")? as i64,
            wall_s: scalar("meta/wall_s")?,
            trained_with,
            tensors,
        }))
    }

    /// Refuses to resume under another setup than the checkpoint was trained with. A
    /// checkpoint that does not record it is compared with the run's `config.toml`.
    pub fn check_resumable(
        &self,
        run: &RunDir,
        config: Option<&RunConfig>,
        now: &TrainedWith,
    ) -> Result<()> {
        let differences = match (&self.trained_with, config) {
            (Some(before), _) => before.differences(now),
            (None, Some(config)) => TrainedWith {
                run: config.clone(),
                ..now.clone()
            }
            .differences(now),
            (None, None) => vec!["config.toml: missing, so unknown → this profile".into()],
        };
        if differences.is_empty() {
            return Ok(());
        }
        bail!(
            "{} was trained up to iteration {} with another setup than it would resume with \
             now:\n  {}\nA run is one protocol from its first step to its last, so it does not \
             resume. Put the experiment file (and data, precision) back as they were, or \
             delete {} to train this run afresh.",
            run.dir.display(),
            self.iteration,
            differences.join("\n  "),
            run.dir.display()
        )
    }

    /// The rows of `epochs.csv` that the checkpoint has passed: epochs 1..=E for a checkpoint
    /// in or at the end of epoch E (rows beyond it come from a crash after a row was written
    /// and before its checkpoint, and are trained again). They must all be there.
    pub fn rows_before(
        &self,
        mut rows: Vec<EpochRow>,
        steps_per_epoch: i64,
        iterations: i64,
        epochs_path: &Path,
    ) -> Result<Vec<EpochRow>> {
        let epochs_done = self.iteration / steps_per_epoch;
        rows.retain(|r| r.epoch <= epochs_done);
        let expected: Vec<(i64, i64)> = (1..=epochs_done)
            .map(|e| (e, (e * steps_per_epoch).min(iterations)))
            .collect();
        let found: Vec<(i64, i64)> = rows.iter().map(|r| (r.epoch, r.iteration)).collect();
        if found != expected {
            bail!(
                "the checkpoint is at iteration {} (after {epochs_done} epochs of \
                 {steps_per_epoch} steps), but {} holds {} for them: the records and the \
                 checkpoint disagree",
                self.iteration,
                epochs_path.display(),
                if found.is_empty() {
                    "no rows".to_string()
                } else {
                    format!(
                        "rows of epochs {:?}",
                        rows.iter().map(|r| r.epoch).collect::<Vec<_>>()
                    )
                }
            );
        }
        Ok(rows)
    }
}

/// Writes one model's checkpoint atomically (temporary file, then rename).
pub fn save(
    run: &RunDir,
    tensors: &mut Vec<(String, Tensor)>,
    iteration: i64,
    wall_s: f64,
    trained_with: &TrainedWith,
) -> Result<()> {
    tensors.push(("meta/iteration".into(), Tensor::from(iteration)));
    tensors.push(("meta/wall_s".into(), Tensor::from(wall_s)));
    let record = serde_json::to_vec(trained_with)?;
    tensors.push((
        "meta/trained_with".into(),
        Tensor::from_slice(&record).to_kind(Kind::Uint8),
    ));
    let path = run.checkpoint_path();
    let tmp = path.with_extension("ot.tmp");
    Tensor::save_multi(tensors, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
