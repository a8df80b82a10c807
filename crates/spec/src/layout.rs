//! Where the files of a sweep live, and how they are written:
//!
//! ```text
//! results/<experiment>/<profile>/
//!     <variant>/seed-<n>/         one run (RunDir): config.toml, epochs.csv, final.json,
//!                                 checkpoint.ot while it is unfinished, lock while it trains
//!     <variant>/norms.csv         gradients experiments (VariantDir), with provenance.json
//!     table.csv, table.md         written by `report`
//! ```
//!
//! `final.json` is written once, last: its presence marks the run finished, and a finished run
//! is never trained again. Every file is written to a temporary name in the same folder and
//! renamed into place, so a crash leaves either the old or the new file, never half of one. A
//! `lock` file (created exclusively) keeps two processes off the same run.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::records::{csv_bytes, read_csv, EpochRow, FinalRecord, RunConfig, EPOCH_COLUMNS};

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

/// `results/<experiment>/<profile>`: the runs of one sweep and its table.
pub fn profile_dir(results: &Path, experiment: &str, profile: &str) -> PathBuf {
    results.join(experiment).join(profile)
}

/// The files of one variant of a gradients experiment: `norms.csv` (written last: its
/// presence marks the measurement done) and `provenance.json`.
#[derive(Debug, Clone)]
pub struct VariantDir {
    pub dir: PathBuf,
}

impl VariantDir {
    pub fn new(results: &Path, experiment: &str, profile: &str, variant: &str) -> Self {
        Self {
            dir: profile_dir(results, experiment, profile).join(variant),
        }
    }
    pub fn norms_path(&self) -> PathBuf {
        self.dir.join("norms.csv")
    }
    pub fn provenance_path(&self) -> PathBuf {
        self.dir.join("provenance.json")
    }
}

/// The folder of one (experiment, profile, variant, seed).
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(results: &Path, experiment: &str, profile: &str, variant: &str, seed: u64) -> Self {
        Self::in_variant(
            &profile_dir(results, experiment, profile).join(variant),
            seed,
        )
    }

    /// The run of `seed` in the folder of its variant.
    pub fn in_variant(variant_dir: &Path, seed: u64) -> Self {
        Self {
            dir: variant_dir.join(format!("seed-{seed}")),
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
        read_csv(&path)
    }

    /// Rewrites `epochs.csv` with `rows`, atomically.
    pub fn write_epochs(&self, rows: &[EpochRow]) -> Result<()> {
        write_atomic(&self.epochs_path(), &csv_bytes(&EPOCH_COLUMNS, rows)?)
    }

    /// The run's `config.toml`, if it has one.
    pub fn read_config(&self) -> Result<Option<RunConfig>> {
        let path = self.config_path();
        match fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(toml::from_str(&text).with_context(|| {
                    format!("{} is damaged", path.display())
                })?))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes `config.toml`, atomically.
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        write_atomic(&self.config_path(), toml::to_string(config)?.as_bytes())
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
