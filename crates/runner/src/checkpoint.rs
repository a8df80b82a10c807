//! `checkpoint.ot`: what an unfinished run needs to resume exactly where it stopped.
//!
//! One file per model of a stack, written atomically after every epoch and on a stop request
//! (then mid-epoch): the model's weights, its momentum (and fp16 loss scale), the shared
//! optimizer step marker, the progress (`meta/iteration`, `meta/wall_s`), the interrupted
//! epoch's per-step losses and error count so far, `meta/trained_with`: the run's
//! configuration, the data fingerprint and the precision it was trained with, and
//! `meta/trained_by`: the revisions of the binaries that trained it so far, oldest first. A
//! resume under another setup is refused, naming the differences: a run is one protocol from
//! its first step to its last. A resume by another build is allowed (the code may change, the
//! protocol may not) and recorded.
//!
//! This module owns the format: every tensor's name ([`names`]), the save of a stack's models
//! ([`save`]) and their restore into a stack ([`restore`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use spec::{EpochRow, RunConfig, RunDir, Stretch};
use tch::{Device, Kind, Tensor};

use crate::optim::LossScaler;
use crate::step::Stack;

/// The names of a checkpoint's tensors, each defined here once.
pub mod names {
    /// Prefix of a model's weights: `model/<variable>`.
    pub const MODEL: &str = "model/";
    /// Prefix of a parameter's momentum buffer: `momentum/<parameter>`.
    pub const MOMENTUM: &str = "momentum/";
    /// Whether the optimizer has taken its first step (shared by the models of a stack).
    pub const MOMENTUM_STARTED: &str = "momentum_started";
    /// fp16: the model's loss scale.
    pub const AMP_SCALE: &str = "amp/scale";
    /// fp16: the clean steps since the loss scale last changed.
    pub const AMP_GROWTH_TRACKER: &str = "amp/growth_tracker";
    /// The loss scaler's state, both of the above.
    pub const AMP: [&str; 2] = [AMP_SCALE, AMP_GROWTH_TRACKER];
    /// The interrupted epoch's losses so far, one per step.
    pub const PARTIAL_LOSSES: &str = "partial/losses";
    /// The interrupted epoch's error count so far.
    pub const PARTIAL_ERRORS: &str = "partial/errors";
    /// SGD steps done.
    pub const META_ITERATION: &str = "meta/iteration";
    /// Training seconds so far.
    pub const META_WALL_S: &str = "meta/wall_s";
    /// What the run is trained with (JSON bytes).
    pub const META_TRAINED_WITH: &str = "meta/trained_with";
    /// The revisions that trained it, oldest first (JSON bytes).
    pub const META_TRAINED_BY: &str = "meta/trained_by";
    /// Each start's iterations, device, libtorch and stack size, oldest first (JSON bytes).
    pub const META_TRAINED_IN: &str = "meta/trained_in";

    /// The name of a model's weights `variable`.
    pub fn model(variable: &str) -> String {
        format!("{MODEL}{variable}")
    }

    /// The name of the momentum buffer of `parameter`.
    pub fn momentum(parameter: &str) -> String {
        format!("{MOMENTUM}{parameter}")
    }
}

/// What a run is trained with (its precision is in the protocol); a checkpoint resumes only
/// under the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedWith {
    pub run: RunConfig,
    /// The data fingerprint's digest.
    pub data: String,
    /// How BN–ReLU ran: the two ways round differently, so a run keeps one. `None` in
    /// checkpoints of runners that did not record it, which resume either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_relu: Option<spec::BnRelu>,
}

impl TrainedWith {
    /// `what: before → now` for every setting that differs, in a stable order.
    pub fn differences(&self, now: &TrainedWith) -> Vec<String> {
        let recorded = TrainedWith {
            bn_relu: self.bn_relu.or(now.bn_relu),
            ..self.clone()
        };
        let (before, after) = (flatten(&recorded), flatten(now));
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
    /// The revisions that trained it so far, oldest first; `None` in checkpoints of runners
    /// that did not record them.
    pub trained_by: Option<Vec<String>>,
    /// Where each start of the runner trained it so far; `None` in checkpoints of runners
    /// that did not record it.
    pub trained_in: Option<Vec<Stretch>>,
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
        Ok(Some(Self {
            iteration: scalar(names::META_ITERATION)? as i64,
            wall_s: scalar(names::META_WALL_S)?,
            trained_with: json(&tensors, names::META_TRAINED_WITH, &path)?,
            trained_by: json(&tensors, names::META_TRAINED_BY, &path)?,
            trained_in: json(&tensors, names::META_TRAINED_IN, &path)?,
            tensors,
        }))
    }

    /// The revisions that have trained the run once `revision` resumes it: the checkpoint's,
    /// then `revision` unless it is the last of them. A checkpoint that did not record its
    /// revisions starts the list with [`spec::UNRECORDED_REVISION`].
    pub fn trained_by(&self, revision: &str) -> Vec<String> {
        let mut revisions = self
            .trained_by
            .clone()
            .unwrap_or_else(|| vec![spec::UNRECORDED_REVISION.to_string()]);
        if revisions.last().map(String::as_str) != Some(revision) {
            revisions.push(revision.to_string());
        }
        revisions
    }

    /// The stretches that trained the run up to this checkpoint; one unrecorded stretch for a
    /// checkpoint that did not record them.
    pub fn stretches(&self) -> Vec<Stretch> {
        self.trained_in
            .clone()
            .unwrap_or_else(|| vec![Stretch::unrecorded(self.iteration)])
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
             resume. Put the experiment file (and data, precision, --bn-relu) back as they \
             were, or delete {} to train this run afresh.",
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

/// A JSON value stored as bytes under `name`, if the checkpoint has one.
fn json<T: serde::de::DeserializeOwned>(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    path: &Path,
) -> Result<Option<T>> {
    let Some(bytes) = tensors.get(name) else {
        return Ok(None);
    };
    let bytes = Vec::<u8>::try_from(bytes)?;
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: {name} is damaged", path.display()))?;
    Ok(Some(value))
}

/// An epoch trained partway, as a mid-epoch checkpoint holds it.
pub struct EpochSoFar {
    /// Per step, the `[K]` losses.
    pub losses: Vec<Tensor>,
    /// Per model, the error count: `[K]`.
    pub errors: Tensor,
}

/// One model of a stack to checkpoint: its place in the stack, its run, and what it is
/// trained with and by.
pub struct Slot<'a> {
    pub index: usize,
    pub run: &'a RunDir,
    pub trained_with: TrainedWith,
    pub trained_by: &'a [String],
    pub trained_in: Vec<Stretch>,
}

/// Writes the checkpoint of each model of `slots`: its slice of the weights, momentum and
/// (inside an epoch) the epoch's tally so far (`partial`), with the shared optimizer state
/// and the progress.
pub fn save<'a>(
    stack: &Stack,
    partial: Option<&EpochSoFar>,
    slots: impl IntoIterator<Item = Slot<'a>>,
    iteration: i64,
    wall_s: f64,
) -> Result<()> {
    let k = stack.k();
    let mut shared: Vec<(String, Tensor)> = Vec::new();
    let mut per_model: Vec<(String, Tensor)> = stack
        .vs
        .variables()
        .iter()
        .map(|(n, t)| (names::model(n), t.shallow_clone()))
        .collect();
    for (name, tensor) in stack
        .sgd
        .state()
        .into_iter()
        .chain(stack.scaler.iter().flat_map(LossScaler::state))
    {
        // Momentum and loss scales are per model like the weights; the step marker is shared.
        if name.starts_with(names::MOMENTUM) || names::AMP.contains(&name.as_str()) {
            per_model.push((name, tensor));
        } else {
            shared.push((name, tensor));
        }
    }
    if let Some(tally) = partial {
        // [K, s] so that each model's slice is a row.
        per_model.push((
            names::PARTIAL_LOSSES.into(),
            Tensor::stack(&tally.losses, 1),
        ));
        per_model.push((names::PARTIAL_ERRORS.into(), tally.errors.shallow_clone()));
    }
    for slot in slots {
        let mut named: Vec<(String, Tensor)> = per_model
            .iter()
            .map(|(n, t)| (n.clone(), t.chunk(k, 0)[slot.index].to_device(Device::Cpu)))
            .collect();
        named.extend(
            shared
                .iter()
                .map(|(n, t)| (n.clone(), t.to_device(Device::Cpu))),
        );
        save_model(
            slot.run,
            &mut named,
            iteration,
            wall_s,
            &slot.trained_with,
            slot.trained_by,
            &slot.trained_in,
        )?;
    }
    Ok(())
}

/// Whether `checkpoint` holds every tensor a model of `stack` needs, each of one model's
/// shape (the stack's, its first dimension divided by the number of models): a checkpoint of
/// a build whose network or optimizer state differs is refused here, naming what is missing
/// or misshapen, before any of it is loaded.
pub fn check_fits(stack: &Stack, checkpoint: &Checkpoint) -> Result<()> {
    let k = stack.k();
    let one_model = |size: Vec<i64>| -> Vec<i64> {
        let mut size = size;
        if let Some(first) = size.first_mut() {
            *first /= k;
        }
        size
    };
    let mut wanted: Vec<(String, Vec<i64>)> = stack
        .vs
        .variables()
        .into_iter()
        .map(|(name, var)| (names::model(&name), one_model(var.size())))
        .collect();
    for (name, tensor) in stack.sgd.state() {
        let size = if name.starts_with(names::MOMENTUM) {
            one_model(tensor.size())
        } else {
            tensor.size()
        };
        wanted.push((name, size));
    }
    wanted.sort();
    for (name, size) in wanted {
        match checkpoint.tensors.get(&name) {
            None => bail!("it lacks {name}"),
            Some(saved) if saved.size() != size => bail!(
                "its {name} has shape {:?} where this network's has {size:?}",
                saved.size()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Loads each model's checkpoint (`checkpoints`, in the stack's order) into its slice of the
/// stacked weights and momentum, and returns the interrupted epoch's tally when the
/// checkpoint fell inside an epoch.
pub fn restore(
    stack: &mut Stack,
    checkpoints: &[&Checkpoint],
    device: Device,
    steps_per_epoch: i64,
) -> Result<Option<EpochSoFar>> {
    let parts: Vec<&HashMap<String, Tensor>> = checkpoints.iter().map(|c| &c.tensors).collect();
    let joined = |name: &str| -> Result<Tensor> {
        let pieces = parts
            .iter()
            .map(|t| {
                t.get(name)
                    .map(|x| x.to_device(device))
                    .with_context(|| format!("checkpoint lacks {name}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&pieces, 0))
    };
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in stack.vs.variables() {
            let saved = joined(&names::model(&name))?;
            if saved.size() != var.size() {
                bail!(
                    "checkpoint of {name} has shape {:?}, the network {:?}",
                    saved.size(),
                    var.size()
                );
            }
            var.copy_(&saved);
        }
        Ok(())
    })?;
    let mut state = HashMap::new();
    for (name, _) in stack.sgd.state() {
        let tensor = if name.starts_with(names::MOMENTUM) {
            joined(&name)?
        } else {
            parts[0]
                .get(&name)
                .with_context(|| format!("checkpoint lacks {name}"))?
                .shallow_clone()
        };
        state.insert(name, tensor);
    }
    stack.sgd.load_state(&state)?;
    // each model's own loss scale (a run checkpointed in fp32 keeps the initial scales)
    if let Some(scaler) = stack.scaler.as_mut() {
        if parts.iter().all(|t| t.contains_key(names::AMP_SCALE)) {
            let state: HashMap<String, Tensor> = names::AMP
                .into_iter()
                .map(|name| Ok((name.to_string(), joined(name)?)))
                .collect::<Result<_>>()?;
            scaler.load_state(&state)?;
        }
    }
    let start = checkpoints[0].iteration;
    let into_epoch = start % steps_per_epoch;
    if !parts[0].contains_key(names::PARTIAL_LOSSES) {
        if into_epoch != 0 {
            bail!("the checkpoint at iteration {start} falls inside an epoch but holds no partial epoch");
        }
        return Ok(None);
    }
    let losses = joined(names::PARTIAL_LOSSES)?; // [K, s]
    if losses.size()[1] != into_epoch {
        bail!(
            "the checkpoint at iteration {start} holds {} steps of its epoch, not {into_epoch}",
            losses.size()[1]
        );
    }
    Ok(Some(EpochSoFar {
        losses: losses.unbind(1),
        errors: joined(names::PARTIAL_ERRORS)?, // [K]
    }))
}

/// Writes one model's checkpoint atomically (temporary file, then rename).
fn save_model(
    run: &RunDir,
    tensors: &mut Vec<(String, Tensor)>,
    iteration: i64,
    wall_s: f64,
    trained_with: &TrainedWith,
    trained_by: &[String],
    trained_in: &[Stretch],
) -> Result<()> {
    tensors.push((names::META_ITERATION.into(), Tensor::from(iteration)));
    tensors.push((names::META_WALL_S.into(), Tensor::from(wall_s)));
    for (name, record) in [
        (names::META_TRAINED_WITH, serde_json::to_vec(trained_with)?),
        (names::META_TRAINED_BY, serde_json::to_vec(trained_by)?),
        (names::META_TRAINED_IN, serde_json::to_vec(trained_in)?),
    ] {
        tensors.push((
            name.into(),
            Tensor::from_slice(&record).to_kind(Kind::Uint8),
        ));
    }
    write_tensors(&run.checkpoint_path(), tensors)
}

/// Writes named tensors to `path` in libtorch's archive format (what `Tensor::load_multi`
/// reads): serialized in memory, then written with the atomic, fsynced write of every other
/// record, so that a full disk is an error naming the file and its cause (not an abort
/// inside libtorch), no temporary file is left, and the previous file stays whole. The
/// tensors are written in name order, so that equal tensors make equal files (and equal
/// checksums in final.json) whatever order the caller's map gave them.
pub fn write_tensors<S: AsRef<str>, T: AsRef<Tensor>>(
    path: &Path,
    tensors: &[(S, T)],
) -> Result<()> {
    let mut sorted: Vec<(&str, &Tensor)> = tensors
        .iter()
        .map(|(name, tensor)| (name.as_ref(), tensor.as_ref()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let buffer = SharedBuffer::default();
    Tensor::save_multi_to_stream(&sorted, buffer.clone())
        .with_context(|| format!("cannot serialize {}", path.display()))?;
    let bytes = buffer.take()?;
    spec::write_atomic(path, &bytes)
}

/// An in-memory stream libtorch writes into while the caller keeps a handle to the bytes
/// (libtorch takes ownership of the stream it is given).
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Result<Vec<u8>> {
        let mut bytes = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("a serialization buffer was poisoned"))?;
        Ok(std::mem::take(&mut *bytes))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("a serialization buffer was poisoned"))?;
        bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tmpfs of `kib` KiB mounted on a fresh folder (root only), unmounted on drop.
    pub(crate) struct TinyDisk {
        pub(crate) dir: tempfile::TempDir,
    }

    impl TinyDisk {
        pub(crate) fn mount(kib: u32) -> std::result::Result<Self, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
                .arg(dir.path())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(Self { dir })
        }
    }

    impl Drop for TinyDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    #[test]
    fn tensors_round_trip_through_the_in_memory_write_and_make_one_file_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.ot");
        let a = Tensor::arange(10, (Kind::Float, tch::Device::Cpu));
        let b = Tensor::from(7i64);
        write_tensors(&path, &[("model/a", &a), ("meta/b", &b)]).unwrap();
        let back: HashMap<String, Tensor> =
            Tensor::load_multi(&path).unwrap().into_iter().collect();
        assert!(back["model/a"].equal(&a));
        assert_eq!(back["meta/b"].int64_value(&[]), 7);
        let first = std::fs::read(&path).unwrap();
        write_tensors(&path, &[("meta/b", &b), ("model/a", &a)]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    /// A full disk while a checkpoint is written: an error naming the file and the cause, no
    /// temporary file left, the previous checkpoint whole. Needs a tmpfs (CI runs as root).
    #[test]
    fn a_full_disk_is_an_error_naming_the_file_and_the_previous_checkpoint_stays() {
        let disk = match TinyDisk::mount(256) {
            Ok(disk) => disk,
            Err(why) => {
                eprintln!("skipped: cannot mount a tmpfs here ({})", why.trim());
                return;
            }
        };
        let path = disk.dir.path().join("checkpoint.ot");
        let small = Tensor::ones([100], (Kind::Float, tch::Device::Cpu));
        write_tensors(&path, &[("model/w", &small)]).unwrap();
        let before = std::fs::read(&path).unwrap();
        // 1 MB of weights on a 256 KiB disk
        let big = Tensor::ones([250_000], (Kind::Float, tch::Device::Cpu));
        let err = format!(
            "{:#}",
            write_tensors(&path, &[("model/w", &big)]).unwrap_err()
        );
        assert!(
            err.contains(&format!("cannot write {}", path.display())),
            "{err}"
        );
        assert!(err.contains("No space left on device"), "{err}");
        let names: Vec<String> = std::fs::read_dir(disk.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["checkpoint.ot"], "a temporary file was left");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let back = Tensor::load_multi(&path).unwrap();
        assert!(back[0].1.equal(&small));
    }
}
