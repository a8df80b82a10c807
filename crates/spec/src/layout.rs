//! Where the files of a sweep live, and how they are written:
//!
//! ```text
//! results/<experiment>/<profile>/
//!     <variant>/seed-<n>/         one run (RunDir): config.toml, epochs.csv, final.json,
//!                                 checkpoint.ot while it is unfinished, model.ot (its
//!                                 weights) once finished, lock while it trains,
//!                                 events.out.tfevents.* (TensorBoard)
//!     <variant>/norms.csv         gradients experiments (VariantDir), with provenance.json
//!     table.csv, table.md         written by `report`
//! ```
//!
//! `final.json` is written once, last: its presence marks the run finished, and a finished run
//! is never trained again. Every file is written to a temporary name in the same folder and
//! renamed into place, so a crash leaves either the old or the new file, never half of one. A
//! `lock` file (created exclusively) keeps two processes off the same run.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::records::{
    csv_bytes, read_csv, EpochRow, FinalRecord, NormRow, RunConfig, EPOCH_COLUMNS, NORM_COLUMNS,
};

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
    // an error here (a full disk) names the file; the temporary one is removed on drop
    let written = tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all());
    written.with_context(|| format!("cannot write {}", path.display()))?;
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

    /// Writes `norms.csv` with `rows`, atomically (last: it marks the measurement done).
    pub fn write_norms(&self, rows: &[NormRow]) -> Result<()> {
        write_atomic(&self.norms_path(), &csv_bytes(&NORM_COLUMNS, rows)?)
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
    /// The trained weights of a finished run (libtorch's format; not a record, not committed).
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.ot")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
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

    /// Where the run stands, by the one rule that `runner train` and `report` share:
    ///
    /// - no `final.json`: unfinished (or not started); its `epochs.csv` and `config.toml`,
    ///   where present, must parse;
    /// - `final.json`: finished, when it parses, names this run, and `epochs.csv` holds the
    ///   rows it summarises (through the iteration it records); a finished run is never
    ///   trained again;
    /// - anything else is [`Damaged`]: the run is left out (not re-trained, not tabled) and
    ///   the message says which file and what to do.
    pub fn state(&self) -> Result<RunState, Damaged> {
        let damaged = |err: anyhow::Error| Damaged {
            dir: self.dir.clone(),
            problem: format!("{err:#}"),
        };
        let record = self.finished().map_err(damaged)?;
        let epochs = self.read_epochs().map_err(damaged)?;
        let config = self.read_config().map_err(damaged)?;
        let Some(record) = record else {
            return Ok(RunState::Unfinished {
                epochs,
                config,
                holder: self.lock_holder(),
            });
        };
        let names = (
            record.experiment.as_str(),
            record.profile.as_str(),
            record.variant.as_str(),
            format!("seed-{}", record.seed),
        );
        let folder = self.dir.iter().rev().take(4).collect::<Vec<_>>();
        let expected = [names.3.as_str(), names.2, names.1, names.0];
        if folder.len() == 4 && folder.iter().zip(expected).any(|(f, e)| *f != e) {
            return Err(damaged(anyhow::anyhow!(
                "{} records experiment {}, profile {}, variant {}, {} but lies in another folder",
                self.final_path().display(),
                names.0,
                names.1,
                names.2,
                names.3
            )));
        }
        let last = epochs.last().map(|r| r.iteration).unwrap_or(0);
        let consistent = if record.diverged() {
            last >= record.iterations
        } else {
            last == record.iterations
        };
        if !consistent {
            return Err(damaged(anyhow::anyhow!(
                "{} records {} iterations, but {} ends at iteration {last}",
                self.final_path().display(),
                record.iterations,
                self.epochs_path().display()
            )));
        }
        // the weights as they were written, where they are here (a fresh clone has none)
        let weights = self.weights_path();
        if let (Some(digest), true) = (&record.weights, weights.exists()) {
            if let Some(problem) = digest.mismatch(&weights).map_err(damaged)? {
                return Err(damaged(anyhow::anyhow!(
                    "{} is damaged: {problem}",
                    weights.display()
                )));
            }
        }
        Ok(RunState::Finished { record, epochs })
    }

    /// Who holds the run's lock, if anyone does.
    pub fn lock_holder(&self) -> Option<LockHolder> {
        let path = self.lock_path();
        let text = fs::read_to_string(&path).ok()?;
        let age_s = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(0.0, |d| d.as_secs_f64());
        Some(LockHolder::parse(&text, age_s))
    }

    /// Takes the run's lock, creating the folder if needed; refuses if another process holds
    /// it.
    ///
    /// The lock file appears with its contents in one step (written under a private name,
    /// then hard-linked as `lock`, which fails if `lock` exists), so no reader ever sees it
    /// empty. A lock whose process is gone (same host, no such pid; or an empty lock file
    /// older than a minute, left by a crash of an older runner) is taken over under an
    /// `flock` on it, re-checked, and replaced by a rename: of several processes that find
    /// the same stale lock, exactly one takes it over.
    pub fn lock(&self) -> Result<RunLock> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.lock_path();
        let me = format!("{} {}\n", hostname(), std::process::id());
        let mut mine = tempfile::Builder::new()
            .prefix(".lock.")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))?;
        mine.write_all(me.as_bytes())?;
        mine.as_file().sync_all()?;
        for _ in 0..8 {
            match fs::hard_link(mine.path(), &path) {
                Ok(()) => return Ok(RunLock { path, contents: me }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot create {}", path.display()))
                }
            }
            let Ok(held) = OpenOptions::new().read(true).open(&path) else {
                continue; // released meanwhile: try again
            };
            // Takeovers of this lock file are serialised by an flock on it; whoever gets the
            // flock second finds that `lock` is no longer the file it opened, and starts over.
            flock_exclusive(&held)
                .with_context(|| format!("cannot lock {} to check it", path.display()))?;
            if !same_file(&held, &path) {
                continue;
            }
            let holder = self.lock_holder().unwrap_or(LockHolder::Gone);
            if !holder.is_gone() {
                return Err(LockHeld {
                    dir: self.dir.clone(),
                    holder,
                }
                .into());
            }
            // Its process is gone: replace its lock by ours, in one rename.
            let staged = self
                .dir
                .join(format!(".lock.takeover.{}", std::process::id()));
            fs::hard_link(mine.path(), &staged)
                .with_context(|| format!("cannot create {}", staged.display()))?;
            fs::rename(&staged, &path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
            return Ok(RunLock { path, contents: me });
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

/// Where a run stands (see [`RunDir::state`]).
#[derive(Debug, Clone)]
pub enum RunState {
    /// No `final.json`: not started, in progress or interrupted.
    Unfinished {
        /// The rows written so far.
        epochs: Vec<EpochRow>,
        /// `config.toml`, once the run has started.
        config: Option<RunConfig>,
        /// The process holding the run's lock, if any (see [`LockHolder::is_gone`]).
        holder: Option<LockHolder>,
    },
    /// Finished: never trained again.
    Finished {
        record: FinalRecord,
        epochs: Vec<EpochRow>,
    },
}

impl RunState {
    /// True for a run some live process is training now (as far as this host can tell).
    pub fn is_running(&self) -> bool {
        matches!(self, RunState::Unfinished { holder: Some(h), .. } if !h.is_gone())
    }
}

/// [`RunDir::lock`] refused: a live process (as far as this host can tell) holds the run.
/// Typed, so that a caller can tell "being trained" from a failure without looking again.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{} is being trained by another process ({holder}); if that process is gone, delete {}/lock",
    dir.display(),
    dir.display()
)]
pub struct LockHeld {
    pub dir: PathBuf,
    pub holder: LockHolder,
}

/// A run whose records cannot be trusted: which, why, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{problem}; the run is left out: delete {} to train it again", dir.display())]
pub struct Damaged {
    pub dir: PathBuf,
    pub problem: String,
}

/// What a `lock` file says about the process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockHolder {
    /// A process on this host that is alive.
    Here { pid: u32 },
    /// A process on another host: it cannot be checked from here, so it counts as alive.
    Elsewhere { host: String, pid: u32 },
    /// Nobody: the process is gone (this host, no such pid), or the file is empty or
    /// unreadable and older than a minute (a crash between creating and writing it).
    Gone,
    /// An empty or unreadable lock file younger than a minute: possibly being written.
    Unknown,
}

impl LockHolder {
    /// Reads the `host pid` line of a lock file `age_s` seconds old.
    pub fn parse(text: &str, age_s: f64) -> Self {
        let mut parts = text.split_whitespace();
        match (
            parts.next(),
            parts.next().and_then(|p| p.parse::<u32>().ok()),
        ) {
            (Some(host), Some(pid)) if host == hostname() => {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    LockHolder::Here { pid }
                } else {
                    LockHolder::Gone
                }
            }
            (Some(host), Some(pid)) => LockHolder::Elsewhere {
                host: host.to_string(),
                pid,
            },
            _ if age_s > 60.0 => LockHolder::Gone,
            _ => LockHolder::Unknown,
        }
    }

    /// True when no process holds the lock any more.
    pub fn is_gone(&self) -> bool {
        *self == LockHolder::Gone
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::Here { pid } => write!(f, "pid {pid} on this host"),
            LockHolder::Elsewhere { host, pid } => write!(f, "pid {pid} on host {host}"),
            LockHolder::Gone => f.write_str("nobody"),
            LockHolder::Unknown => f.write_str("a lock file still being written"),
        }
    }
}

/// Held while a process trains a run; removes the lock file when dropped (if it is still
/// this process's).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    contents: String,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// This host's name, as lock files and event files record it.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Blocks until this process holds an exclusive `flock` on `file` (released when it closes).
fn flock_exclusive(file: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor this function borrows for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// True when `path` still names the file `file` has open.
fn same_file(file: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::FileDigest;

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
            gate_first: None,
            gate_middle: None,
            gate_last: None,
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
            "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,wall_s,images_per_s,\
             gate_first,gate_middle,gate_last\n"
        ));
        assert!(
            text.contains("\n1,10,0.1,1.5,50.0,,,3.0,100.0,,,\n"),
            "{text}"
        );
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
        let err = run.lock().unwrap_err();
        let held = err.downcast_ref::<LockHeld>().expect("a typed refusal");
        assert_eq!(
            held.holder,
            LockHolder::Here {
                pid: std::process::id()
            }
        );
        let err = err.to_string();
        assert!(
            err.contains("another process") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("delete {}", run.lock_path().display())),
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

    #[test]
    fn an_empty_lock_is_stale_once_it_is_a_minute_old() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        fs::create_dir_all(&run.dir).unwrap();
        let empty = fs::File::create(run.lock_path()).unwrap();
        let err = run.lock().unwrap_err().to_string();
        assert!(err.contains("still being written"), "{err}");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        empty.set_modified(old).unwrap();
        let lock = run.lock().unwrap();
        let holder = run.lock_holder().unwrap();
        assert_eq!(
            holder,
            LockHolder::Here {
                pid: std::process::id()
            }
        );
        drop(lock);
        assert!(!run.lock_path().exists());
    }

    #[test]
    fn of_many_takers_of_a_stale_lock_exactly_one_wins() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
            fs::create_dir_all(&run.dir).unwrap();
            fs::write(run.lock_path(), format!("{} 4194304\n", hostname())).unwrap();
            let takers = 6;
            let barrier = std::sync::Barrier::new(takers);
            let won: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..takers)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            let lock = run.lock();
                            // hold it until every taker has tried
                            barrier.wait();
                            lock.is_ok()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{won:?}");
            // nothing but the lock's absence is left behind
            let left: Vec<_> = fs::read_dir(&run.dir).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    fn final_record(iterations: i64) -> FinalRecord {
        serde_json::from_value(serde_json::json!({
            "status": "ok", "experiment": "e", "profile": "p", "variant": "v", "seed": 0,
            "iterations": iterations, "diverged_at_iteration": null, "final_test_error": 9.0,
            "final_test_loss": 0.3, "final_train_error": 1.0, "final_train_loss": 0.1,
            "fail_above_percent": 20.0, "wall_s": 3.0,
            "data": {"digest": "d", "files": {}, "source": "s", "original": false},
            "git_revision": "r", "libtorch": "l", "device": "cpu", "stacked_with": 1,
            "finished_at_unix_s": 1
        }))
        .unwrap()
    }

    /// Weights cut short or changed after the run finished make it damaged, naming
    /// model.ot; weights that are absent (a fresh clone: they are not committed) do not.
    #[test]
    fn damaged_weights_make_a_damaged_run_and_absent_ones_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        fs::create_dir_all(&run.dir).unwrap();
        run.write_epochs(&[row(1), row(2)]).unwrap();
        fs::write(run.weights_path(), vec![7u8; 1000]).unwrap();
        let mut record = final_record(20);
        record.weights = Some(FileDigest::of(&run.weights_path()).unwrap());
        assert_eq!(record.weights.as_ref().unwrap().bytes, 1000);
        run.write_final(&record).unwrap();
        assert!(matches!(run.state().unwrap(), RunState::Finished { .. }));
        // cut to 100 bytes
        fs::write(run.weights_path(), vec![7u8; 100]).unwrap();
        let msg = run.state().unwrap_err().to_string();
        assert!(
            msg.contains("model.ot is damaged: 100 bytes, but final.json records 1000"),
            "{msg}"
        );
        // same size, other bytes
        fs::write(run.weights_path(), vec![8u8; 1000]).unwrap();
        let msg = run.state().unwrap_err().to_string();
        assert!(
            msg.contains("model.ot is damaged: its SHA-256 differs"),
            "{msg}"
        );
        // absent: the records still count
        fs::remove_file(run.weights_path()).unwrap();
        assert!(matches!(run.state().unwrap(), RunState::Finished { .. }));
        // a known digest: SHA-256 of "abc" (FIPS 180-2's example)
        fs::write(run.weights_path(), b"abc").unwrap();
        assert_eq!(
            FileDigest::of(&run.weights_path()).unwrap().sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_run_is_finished_only_when_its_records_agree_else_damaged_with_advice() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        assert!(matches!(
            run.state().unwrap(),
            RunState::Unfinished { ref epochs, holder: None, .. } if epochs.is_empty()
        ));
        fs::create_dir_all(&run.dir).unwrap();
        run.write_epochs(&[row(1), row(2)]).unwrap();
        run.write_final(&final_record(20)).unwrap();
        assert!(matches!(run.state().unwrap(), RunState::Finished { .. }));

        let advice = |err: Damaged| {
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("delete {}", run.dir.display())),
                "{msg}"
            );
            msg
        };
        // one epoch short of what final.json says
        run.write_epochs(&[row(1)]).unwrap();
        let msg = advice(run.state().unwrap_err());
        assert!(
            msg.contains("records 20 iterations") && msg.contains("10"),
            "{msg}"
        );
        // epochs.csv gone
        fs::remove_file(run.epochs_path()).unwrap();
        advice(run.state().unwrap_err());
        // a damaged epochs.csv
        fs::write(run.epochs_path(), "epoch,iteration\n1,x\n").unwrap();
        let msg = advice(run.state().unwrap_err());
        assert!(msg.contains("epochs.csv: row 2 is damaged"), "{msg}");
        // a damaged final.json
        run.write_epochs(&[row(1), row(2)]).unwrap();
        fs::write(run.final_path(), "{ not json").unwrap();
        let msg = advice(run.state().unwrap_err());
        assert!(msg.contains("final.json is damaged"), "{msg}");
        // a final.json of another run
        let mut other = final_record(20);
        other.seed = 3;
        run.write_final(&other).unwrap();
        let msg = advice(run.state().unwrap_err());
        assert!(msg.contains("another folder"), "{msg}");
    }

    #[test]
    fn an_unfinished_run_is_running_only_while_its_locker_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "e", "p", "v", 0);
        let lock = run.lock().unwrap();
        assert!(run.state().unwrap().is_running());
        drop(lock);
        assert!(!run.state().unwrap().is_running());
        fs::write(run.lock_path(), format!("{} 4194304\n", hostname())).unwrap();
        assert!(!run.state().unwrap().is_running(), "a dead locker");
        fs::write(run.lock_path(), "otherhost 12\n").unwrap();
        assert!(
            run.state().unwrap().is_running(),
            "another host cannot be checked"
        );
    }
}
