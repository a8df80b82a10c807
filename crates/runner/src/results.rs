//! The results folder of a run: `results/<experiment>/<profile>/<variant>/seed-<n>/`.
//!
//! - `config.toml`: the resolved network and protocol of the run;
//! - `epochs.csv`: one row per evaluated epoch;
//! - `checkpoint.ot`: weights, momentum and progress after the last finished epoch;
//! - `final.json`: written once, last: status, final errors and provenance. Its presence marks
//!   the run finished, and a finished run is never trained again.
//!
//! Every file is written to a temporary name in the same folder and renamed into place, so a
//! crash leaves either the old or the new file, never half of one. A `lock` file (created
//! exclusively) keeps two processes off the same run.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::Fingerprint;

/// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path has a parent folder")?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp.");
    // as `File::create` would (0666 less the umask), not tempfile's private 0600: results
    // are read by colleagues and cluster jobs of other users
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
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
}

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

/// `final.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalRecord {
    pub status: Status,
    pub experiment: String,
    pub profile: String,
    pub variant: String,
    pub seed: u64,
    /// Steps trained (at divergence: the step whose loss was not finite).
    pub iterations: i64,
    pub diverged_at_iteration: Option<i64>,
    pub final_test_error: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_train_error: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub fail_above_percent: f64,
    pub wall_s: f64,
    pub data: Fingerprint,
    pub git_revision: String,
    pub libtorch: String,
    pub device: String,
    /// Models trained together as one stacked network (1: alone).
    pub stacked_with: usize,
    /// `fp32`, or `fp16` (CUDA autocast with dynamic loss scaling).
    pub precision: crate::optim::Precision,
    pub finished_at_unix_s: u64,
}

/// The folder of one (experiment, profile, variant, seed).
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(results: &Path, experiment: &str, profile: &str, variant: &str, seed: u64) -> Self {
        Self {
            dir: results
                .join(experiment)
                .join(profile)
                .join(variant)
                .join(format!("seed-{seed}")),
        }
    }

    pub fn final_path(&self) -> PathBuf {
        self.dir.join("final.json")
    }
    pub fn epochs_path(&self) -> PathBuf {
        self.dir.join("epochs.csv")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.ot")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The finished record, if the run is finished.
    pub fn finished(&self) -> Result<Option<FinalRecord>> {
        match fs::read(self.final_path()) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is damaged", self.final_path().display())
            })?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                Err(err).with_context(|| format!("cannot read {}", self.final_path().display()))
            }
        }
    }

    /// Takes the run's lock, creating the folder if needed; refuses if another process holds it.
    pub fn lock(&self) -> Result<RunLock> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join("lock");
        let me = format!("{} {}\n", hostname(), std::process::id());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(me.as_bytes())?;
                    file.sync_all()?;
                    return Ok(RunLock { path });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    if is_stale(&holder) {
                        // Its process is gone (same host, no such pid): take the run over.
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    bail!(
                        "{} is being trained by another process (host and pid: {}); if that \
                         process is gone, delete {}",
                        self.dir.display(),
                        holder.trim(),
                        path.display()
                    );
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("could not take the lock {}", path.display())
    }

    /// The rows of `epochs.csv` (none if it does not exist).
    pub fn read_epochs(&self) -> Result<Vec<EpochRow>> {
        let path = self.epochs_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let mut reader = csv::Reader::from_path(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        reader
            .deserialize()
            .collect::<Result<Vec<EpochRow>, _>>()
            .with_context(|| format!("{} is damaged", path.display()))
    }

    /// Rewrites `epochs.csv` with `rows`, atomically.
    pub fn write_epochs(&self, rows: &[EpochRow]) -> Result<()> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        if rows.is_empty() {
            writer.write_record([
                "epoch",
                "iteration",
                "lr",
                "train_loss",
                "train_error",
                "test_loss",
                "test_error",
                "wall_s",
                "images_per_s",
            ])?;
        }
        for row in rows {
            writer.serialize(row)?;
        }
        write_atomic(
            &self.epochs_path(),
            &writer.into_inner().context("csv buffer")?,
        )
    }

    pub fn write_final(&self, record: &FinalRecord) -> Result<()> {
        write_atomic(&self.final_path(), &serde_json::to_vec_pretty(record)?)
    }
}

/// Held while a process trains a run; removes the lock file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A lock is stale when it was taken on this host by a process that no longer exists.
fn is_stale(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let (Some(host), Some(pid)) = (
        parts.next(),
        parts.next().and_then(|p| p.parse::<u32>().ok()),
    ) else {
        return false;
    };
    host == hostname() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The source revision of this binary: `git describe` of the tree it was built from, with
/// `-dirty` when that tree had uncommitted changes; `unknown` where there is no git tree.
pub fn git_revision() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn atomic_writes_get_the_permissions_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let atomic = dir.path().join("final.json");
        write_atomic(&atomic, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
        assert_eq!(std::fs::read(&atomic).unwrap(), b"{}");
        // nothing else left in the folder
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    fn row(epoch: i64) -> EpochRow {
        EpochRow {
            epoch,
            iteration: epoch * 10,
            lr: 0.1,
            train_loss: 1.5,
            train_error: 50.0,
            test_loss: (epoch % 2 == 0).then_some(1.2),
            test_error: (epoch % 2 == 0).then_some(40.0),
            wall_s: 3.0,
            images_per_s: 100.0,
        }
    }

    #[test]
    fn epochs_round_trip_with_empty_cells_for_unevaluated_epochs() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 3);
        assert!(run.dir.ends_with("e/p/v/seed-3"));
        let _lock = run.lock().unwrap();
        let rows = vec![row(1), row(2)];
        run.write_epochs(&rows).unwrap();
        assert_eq!(run.read_epochs().unwrap(), rows);
        let text = fs::read_to_string(run.epochs_path()).unwrap();
        assert!(text.starts_with(
            "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,wall_s,images_per_s\n"
        ));
        assert!(text.contains("\n1,10,0.1,1.5,50.0,,,3.0,100.0\n"), "{text}");
        // No temporary files are left beside it.
        let names: Vec<_> = fs::read_dir(&run.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // epochs.csv and lock
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_released() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        let lock = run.lock().unwrap();
        let err = run.lock().unwrap_err().to_string();
        assert!(
            err.contains("another process") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(lock);
        assert!(run.lock().is_ok());
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        fs::create_dir_all(&run.dir).unwrap();
        // Pid 4194304 is above Linux's maximum pid: no such process.
        fs::write(run.dir.join("lock"), format!("{} 4194304\n", hostname())).unwrap();
        assert!(run.lock().is_ok());
        fs::write(run.dir.join("lock"), "otherhost 1\n").unwrap();
        assert!(run.lock().is_err());
    }
}
