//! The records of a run, as `runner train` writes them and `report` reads them:
//!
//! - `config.toml` ([`RunConfig`]): the resolved network and protocol of the run;
//! - `epochs.csv` ([`EpochRow`]): one row per epoch;
//! - `final.json` ([`FinalRecord`]): written once, last: status, final errors and provenance;
//! - for experiments of kind `gradients`, per variant: `norms.csv` ([`NormRow`]) and
//!   `provenance.json` ([`GradientRecord`]).
//!
//! One definition of each, read with the same strictness by every reader: a field the
//! record needs and cannot default is required; fields a later version adds are ignored.
//! Where the files live is [`crate::layout`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::net::NetConfig;
use crate::protocol::{BnRelu, Precision, Protocol};

/// What the data of a run was: the MD5 of each file, one digest over them, and where it came
/// from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fingerprint {
    /// MD5 over the `MD5SUMS`-style listing of the six files (`<md5>  <name>\n` each, in order).
    pub digest: String,
    pub files: BTreeMap<String, String>,
    /// `original CIFAR-10 (archive MD5 verified)`, the name of a known copy, or `unverified copy`.
    pub source: String,
    /// True only for files unpacked from the official archive whose MD5 was checked.
    pub original: bool,
}

/// `config.toml`: the resolved configuration of a run, written before it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub experiment: String,
    pub profile: String,
    pub variant: String,
    pub seed: u64,
    /// One replica's network (stacking is a choice of the runner, not of the run).
    pub model: NetConfig,
    pub protocol: Protocol,
}

/// One row of `epochs.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: i64,
    /// SGD steps done when the row was written.
    pub iteration: i64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean loss and error (%) over the epoch's training batches, as trained (augmented).
    pub train_loss: f64,
    pub train_error: f64,
    /// Loss and error (%) on the evaluation images; empty on epochs not evaluated.
    pub test_loss: Option<f64>,
    pub test_error: Option<f64>,
    /// Seconds since the run started (across resumptions).
    pub wall_s: f64,
    /// Training images per second over the epoch, for this model alone.
    pub images_per_s: f64,
    /// Gated shortcuts only (Identity Mappings Fig. 2c, 2d): the mean gate
    /// g(x) = σ(W_g x + b_g) over the evaluation images at the first, the middle and the last
    /// residual unit ([`gate_units`]). Empty for nets without gates, on epochs not evaluated,
    /// and in files written before gates were logged.
    #[serde(default)]
    pub gate_first: Option<f64>,
    #[serde(default)]
    pub gate_middle: Option<f64>,
    #[serde(default)]
    pub gate_last: Option<f64>,
}

impl EpochRow {
    /// The logged gates, first, middle and last unit, when the row has all three.
    pub fn gates(&self) -> Option<[f64; 3]> {
        Some([self.gate_first?, self.gate_middle?, self.gate_last?])
    }
}

/// The residual units (0-based, of `units` in all) whose gates [`EpochRow`] logs: the first,
/// the middle (the lower of two) and the last.
pub fn gate_units(units: usize) -> [usize; 3] {
    let last = units.saturating_sub(1);
    [0, last / 2, last]
}

/// The columns of `epochs.csv`, in order (the header of a file with no rows yet).
pub const EPOCH_COLUMNS: [&str; 12] = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "wall_s",
    "images_per_s",
    "gate_first",
    "gate_middle",
    "gate_last",
];

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Trained to the end with a final test error at or below the fail threshold.
    Ok,
    /// Trained to the end, final test error above the threshold (Identity Mappings: 20%).
    Fail,
    /// The loss became NaN or infinite; training of this model stopped there.
    Diverged,
}

impl std::fmt::Display for Status {
    /// As `final.json` spells it: `ok`, `fail`, `diverged`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Diverged => "diverged",
        })
    }
}

/// `final.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalRecord {
    pub status: Status,
    pub experiment: String,
    pub profile: String,
    pub variant: String,
    pub seed: u64,
    /// Steps trained. A run whose loss stops being finite trains on to the end of that
    /// epoch (the loss is read once an epoch), so this is at or past `diverged_at_iteration`;
    /// older records gave the diverging step here (their `epochs.csv` ends after it).
    pub iterations: i64,
    /// The first step whose loss was not finite.
    pub diverged_at_iteration: Option<i64>,
    pub final_test_error: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_train_error: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub fail_above_percent: f64,
    pub wall_s: f64,
    pub data: Fingerprint,
    /// The binary that finished the run (its `git_revision`), its libtorch and the device:
    /// fields of the record itself.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// The revisions of the binaries that trained the run before the one that finished it,
    /// oldest first, when it was resumed by another build ([`UNRECORDED_REVISION`] for a
    /// stretch trained by a runner whose checkpoints did not record theirs). Empty, and left
    /// out of the file, when one binary trained the whole run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_revisions: Vec<String>,
    /// Models trained together as one stacked network (1: alone) in the stretch that
    /// finished the run.
    pub stacked_with: usize,
    /// Trainable parameters of the run's network (one model, not the stack), as the build
    /// that trained it counted them: a later build whose network for the same `config.toml`
    /// differs (a layer added or removed) tells the run apart by it. Absent from records of
    /// runners that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<i64>,
    /// Every stretch of training (one a start of the runner), oldest first, when the run was
    /// trained in more than one setup: a resume on another device, libtorch or stack size.
    /// Empty, and left out of the file, when one setup trained it all (the fields above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stretches: Vec<Stretch>,
    /// The numeric precision of training (records written before it was recorded: fp32,
    /// the only precision there was).
    #[serde(default)]
    pub precision: Precision,
    /// How BN–(add–)ReLU ran while training: `fused` (the CPU's one operation) or `separate`
    /// (libtorch's ops; always so on CUDA). A run is trained one way throughout: a checkpoint
    /// that recorded the other refuses to resume. Absent from records of runners that did not
    /// record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_relu: Option<BnRelu>,
    pub finished_at_unix_s: u64,
    /// `model.ot` as it was written (records written before weights were checked have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<FileDigest>,
}

/// Where a result was made, recorded in every `final.json` and gradients `provenance.json`:
/// the revision of the binary, the libtorch it ran on (version and source, no machine path)
/// and the device (`cpu AMD EPYC (2 threads, AVX-512, AVX512-BF16)`, `cuda:0 NVIDIA H200`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub git_revision: String,
    pub libtorch: String,
    pub device: String,
}

/// A file's size and SHA-256: a finished run's `model.ot` is checked against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

impl FileDigest {
    /// The digest of the file at `path`.
    pub fn of(path: &Path) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            bytes: bytes.len() as u64,
            sha256,
        })
    }

    /// `None` when the file at `path` matches, else what differs (a missing file is not
    /// checked here: weights are not committed, so a fresh clone has none).
    pub fn mismatch(&self, path: &Path) -> Result<Option<String>> {
        let found = Self::of(path)?;
        Ok(if found.bytes != self.bytes {
            Some(format!(
                "{} bytes, but final.json records {}",
                found.bytes, self.bytes
            ))
        } else if found.sha256 != self.sha256 {
            Some("its SHA-256 differs from the one final.json records".to_string())
        } else {
            None
        })
    }
}

/// The iterations one start of the runner trained of a run, and where: a checkpoint keeps
/// the list so far and a resumed run's `final.json` lists them when they differ
/// ([`FinalRecord::stretches`]). Exact resumption is promised for an unchanged setup; a
/// stretch on another device, libtorch or stack size (the grouped convolutions of another
/// stack sum in another order) is trained to float noise of it, and said here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stretch {
    pub from_iteration: i64,
    /// Where the next start took over (the last stretch: where the run ended).
    pub to_iteration: i64,
    /// As [`Provenance::device`]; [`UNRECORDED_REVISION`] for iterations trained by a runner
    /// whose checkpoints did not record it.
    pub device: String,
    pub libtorch: String,
    /// Models in the stack (0: not recorded).
    pub stacked_with: usize,
}

impl Stretch {
    /// What trained a run before checkpoints recorded their stretches.
    pub fn unrecorded(to_iteration: i64) -> Self {
        Self {
            from_iteration: 0,
            to_iteration,
            device: UNRECORDED_REVISION.into(),
            libtorch: UNRECORDED_REVISION.into(),
            stacked_with: 0,
        }
    }

    fn same_setup(&self, other: &Stretch) -> bool {
        (&self.device, &self.libtorch, self.stacked_with)
            == (&other.device, &other.libtorch, other.stacked_with)
    }

    /// `earlier` followed by `current`, which extends the last of them when it continues it
    /// in the same setup.
    pub fn append(earlier: &[Stretch], current: Stretch) -> Vec<Stretch> {
        let mut all = earlier.to_vec();
        match all.last_mut() {
            Some(last)
                if last.same_setup(&current) && last.to_iteration == current.from_iteration =>
            {
                last.to_iteration = current.to_iteration;
            }
            _ => all.push(current),
        }
        all
    }

    /// What a `final.json` keeps of `stretches`: all of them when their setups differ,
    /// none when one setup trained the whole run.
    pub fn worth_recording(stretches: Vec<Stretch>) -> Vec<Stretch> {
        let one_setup = stretches.windows(2).all(|w| w[0].same_setup(&w[1]));
        if one_setup {
            Vec::new()
        } else {
            stretches
        }
    }
}

/// What [`FinalRecord::earlier_revisions`] says for training done by a runner whose
/// checkpoints did not record its revision.
pub const UNRECORDED_REVISION: &str = "unrecorded";

impl FinalRecord {
    /// Every revision that trained the run, oldest first: `a → b` when a build `b` resumed
    /// what `a` had trained, the one revision otherwise.
    pub fn revisions(&self) -> String {
        self.earlier_revisions
            .iter()
            .chain(std::iter::once(&self.provenance.git_revision))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// True when the run diverged.
    pub fn diverged(&self) -> bool {
        self.status == Status::Diverged || self.diverged_at_iteration.is_some()
    }

    /// The final test error of a run that did not diverge, when finite.
    pub fn test_error(&self) -> Option<f64> {
        if self.diverged() {
            return None;
        }
        self.final_test_error.filter(|e| e.is_finite())
    }
}

/// One row of a gradients experiment's `norms.csv`: ‖∂E/∂x_l‖ of residual unit `unit`
/// (l, from 1 at the input side) at `iteration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormRow {
    pub seed: u64,
    pub iteration: i64,
    pub unit: u32,
    pub norm: f64,
}

/// The columns of `norms.csv`, in [`NormRow`]'s order.
pub const NORM_COLUMNS: [&str; 4] = ["seed", "iteration", "unit", "norm"];

/// `provenance.json` beside a gradients experiment's `norms.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientRecord {
    pub experiment: String,
    pub profile: String,
    pub variant: String,
    pub seeds: Vec<u64>,
    pub model: NetConfig,
    pub protocol: Protocol,
    pub data: Fingerprint,
    /// `git_revision`, `libtorch` and `device`, as fields of the record itself.
    #[serde(flatten)]
    pub provenance: Provenance,
    pub wall_s: f64,
}

/// Reads every row of a CSV file with a header; a row that does not parse is an error naming
/// the file and the row.
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

/// A duration as a reader takes it in: `42 s`, `10 min`, `1.5 h`, `3.2 days`.
pub fn human_seconds(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.0} min", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

/// The bytes of a CSV file holding `rows` under `header` (written even when there are none).
pub fn csv_bytes<T: Serialize>(header: &[&str], rows: &[T]) -> Result<Vec<u8>> {
    // serde writes the header before the first row; with no rows, write it here
    let mut writer = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        writer.write_record(header)?;
    }
    for row in rows {
        writer.serialize(row)?;
    }
    writer.into_inner().context("csv buffer")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINAL: &str = r#"{"status": "diverged", "experiment": "shortcuts", "profile": "paper",
        "variant": "dropout-0.5", "seed": 3, "iterations": 812, "diverged_at_iteration": 812,
        "final_test_error": null, "final_test_loss": null, "final_train_error": 51.0,
        "final_train_loss": 1.5, "fail_above_percent": 20.0, "wall_s": 30.0,
        "data": {"digest": "ab", "files": {}, "source": "CIFAR-10, JPEG-75 copy", "original": false},
        "git_revision": "5f672cc", "libtorch": "2.11.0", "device": "cpu x", "stacked_with": 1,
        "finished_at_unix_s": 1700000000, "a_field_added_later": [1, 2]}"#;

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(human_seconds(42.0), "42 s");
        assert_eq!(human_seconds(600.0), "10 min");
        assert_eq!(human_seconds(3.0 * 3600.0), "3.0 h");
        assert_eq!(human_seconds(10.0 * 86_400.0), "10.0 days");
    }

    #[test]
    fn a_status_is_said_as_the_file_spells_it() {
        for status in [Status::Ok, Status::Fail, Status::Diverged] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
    }

    #[test]
    fn final_json_ignores_fields_added_later_and_needs_the_rest() {
        let record: FinalRecord = serde_json::from_str(FINAL).unwrap();
        assert!(record.diverged());
        assert_eq!(record.test_error(), None);
        assert_eq!(record.provenance.device, "cpu x");
        // the provenance stays three fields of the record itself, as every file has them
        let written = serde_json::to_value(&record).unwrap();
        assert_eq!(written["git_revision"], "5f672cc");
        assert_eq!(written["libtorch"], "2.11.0");
        assert!(written.get("provenance").is_none(), "{written}");
        // written before precision was recorded: fp32, the only precision there was
        assert_eq!(record.precision, Precision::Fp32);
        // written before the BN–ReLU path was recorded: not recorded, and not written back
        assert_eq!(record.bn_relu, None);
        assert!(!serde_json::to_string(&record).unwrap().contains("bn_relu"));
        let fused = FINAL.replace(
            r#""stacked_with": 1,"#,
            r#""stacked_with": 1, "bn_relu": "fused","#,
        );
        let fused: FinalRecord = serde_json::from_str(&fused).unwrap();
        assert_eq!(fused.bn_relu, Some(BnRelu::Fused));
        assert!(serde_json::to_string(&fused)
            .unwrap()
            .contains(r#""bn_relu":"fused""#));
        // written before earlier revisions were recorded: the one revision
        assert!(record.earlier_revisions.is_empty());
        assert_eq!(record.revisions(), "5f672cc");
        let without_status = FINAL.replace(r#""status": "diverged", "#, "");
        let err = serde_json::from_str::<FinalRecord>(&without_status).unwrap_err();
        assert!(err.to_string().contains("status"), "{err}");
        let unknown = FINAL.replace(r#""status": "diverged""#, r#""status": "stopped""#);
        assert!(serde_json::from_str::<FinalRecord>(&unknown).is_err());
    }

    #[test]
    fn earlier_revisions_are_written_only_when_another_build_trained_part_of_the_run() {
        let mut record: FinalRecord = serde_json::from_str(FINAL).unwrap();
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("earlier_revisions"), "{json}");
        record.earlier_revisions = vec![UNRECORDED_REVISION.into(), "1a2b3c".into()];
        let json = serde_json::to_string(&record).unwrap();
        let back: FinalRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.earlier_revisions, ["unrecorded", "1a2b3c"]);
        assert_eq!(back.revisions(), "unrecorded → 1a2b3c → 5f672cc");
    }

    #[test]
    fn epochs_written_before_gates_were_logged_read_with_no_gates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.csv");
        std::fs::write(
            &path,
            "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,wall_s,images_per_s\n\
             1,390,0.1,1.6,60.2,1.4,50.7,49.0,853.0\n",
        )
        .unwrap();
        let rows: Vec<EpochRow> = read_csv(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].test_error, Some(50.7));
        assert_eq!(rows[0].gates(), None);
        // a row with gates gives all three, in unit order
        let gated = EpochRow {
            gate_first: Some(0.1),
            gate_middle: Some(0.2),
            gate_last: Some(0.3),
            ..rows[0].clone()
        };
        assert_eq!(gated.gates(), Some([0.1, 0.2, 0.3]));
        assert_eq!(
            EpochRow {
                gate_last: None,
                ..gated
            }
            .gates(),
            None
        );
    }

    #[test]
    fn gate_units_are_first_middle_and_last() {
        // ResNet-32: 15 units, the 1st, 8th and 15th; ResNet-110: 54, the 1st, 27th, 54th
        assert_eq!(gate_units(15), [0, 7, 14]);
        assert_eq!(gate_units(54), [0, 26, 53]);
        assert_eq!(gate_units(1), [0, 0, 0]);
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
        assert_eq!(record.model.depth, 110);
        assert_eq!(record.protocol.iterations, 200);
        assert_eq!(record.data.source, "CIFAR-10, JPEG-75 copy");
        assert!(serde_json::from_str::<GradientRecord>("{}").is_err());
    }
}
