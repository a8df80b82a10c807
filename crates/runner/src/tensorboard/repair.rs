//! Rebuilding a run's event files from its `epochs.csv` (the record they are derived from),
//! when epochs are missing from them or there twice: on resume, when a sweep skips a
//! finished run, and by `runner tfevents repair`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};

use super::{
    create_unique_file, encode_event, files_starting_with, frame, read_events, unix_now_s, Payload,
    FILE_PREFIX, FILE_VERSION, REWRITE_PREFIX,
};

/// The scalars training logs for one epoch's row (tags as TensorBoard groups them).
pub fn row_scalars(row: &spec::EpochRow) -> Vec<(&'static str, f64)> {
    let mut scalars = vec![
        ("train/loss", row.train_loss),
        ("train/error", row.train_error),
        ("train/lr", row.lr),
        ("train/images_per_s", row.images_per_s),
    ];
    if let (Some(loss), Some(error)) = (row.test_loss, row.test_error) {
        scalars.extend([("test/loss", loss), ("test/error", error)]);
    }
    if let Some([first, middle, last]) = row.gates() {
        scalars.extend([
            ("gate/first_unit", first),
            ("gate/middle_unit", middle),
            ("gate/last_unit", last),
        ]);
    }
    scalars
}

/// What [`repair`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Rows whose epoch had no events.
    pub missing: usize,
    /// Rows whose epoch had events more than once.
    pub repeated: usize,
    /// Events files replaced by the rebuilt one.
    pub files_replaced: usize,
}

impl Repaired {
    /// Whether anything was rebuilt.
    pub fn rebuilt(&self) -> bool {
        self.missing + self.repeated > 0
    }
}

impl std::fmt::Display for Repaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorBoard events rebuilt from epochs.csv (")?;
        match (self.missing, self.repeated) {
            (m, 0) => write!(f, "{m} epoch(s) had none")?,
            (0, r) => write!(f, "{r} epoch(s) had them twice")?,
            (m, r) => write!(f, "{m} epoch(s) had none, {r} had them twice")?,
        }
        write!(f, "; {} old file(s) replaced)", self.files_replaced)
    }
}

/// Makes the run folder `dir` show every row of `rows` (its `epochs.csv`) exactly once in
/// TensorBoard. The event files are derived from the rows: when an epoch has no events (a
/// deleted or truncated file) or has them twice, they are all replaced by one file rebuilt
/// from the rows, with the same tags and steps as training writes. An epoch keeps the wall
/// time of its surviving event; the others are placed by their `wall_s` (training seconds)
/// from the nearest surviving epoch, or from `last_row_unix_s` (when the last row was
/// written) when none survives. The file starts with a `SessionLog` START at step 0, so that
/// a TensorBoard that had read the old files drops them. Events past the last row are left
/// alone when nothing is missing (a resume prunes them); only the run's writer may call this.
pub fn repair(dir: &Path, rows: &[spec::EpochRow], last_row_unix_s: f64) -> Result<Repaired> {
    let Some(last) = rows.last() else {
        return Ok(Repaired::default());
    };
    let files = files_starting_with(dir, FILE_PREFIX)?;
    // the wall times of each step's events, in file order
    let mut seen: std::collections::HashMap<i64, Vec<f64>> = Default::default();
    for path in &files {
        for record in read_events(path)?.records {
            let e = record.event;
            if e.scalars.iter().any(|(tag, _)| tag == "train/loss") {
                seen.entry(e.step).or_default().push(e.wall_time);
            }
        }
    }
    let count = |row: &spec::EpochRow| seen.get(&row.iteration).map_or(0, Vec::len);
    let repaired = Repaired {
        missing: rows.iter().filter(|r| count(r) == 0).count(),
        repeated: rows.iter().filter(|r| count(r) > 1).count(),
        files_replaced: files.len(),
    };
    if !repaired.rebuilt() {
        return Ok(Repaired::default());
    }
    // offsets (unix time − training seconds) of the surviving epochs
    let offsets: Vec<Option<f64>> = rows
        .iter()
        .map(|r| seen.get(&r.iteration).map(|t| t[0] - r.wall_s))
        .collect();
    let fallback = last_row_unix_s - last.wall_s;
    let wall_times: Vec<f64> = (0..rows.len())
        .map(|i| {
            let nearest = (0..rows.len())
                .filter_map(|j| offsets[j].map(|o| (i.abs_diff(j), o)))
                .min_by_key(|&(d, _)| d)
                .map_or(fallback, |(_, o)| o);
            match seen.get(&rows[i].iteration) {
                Some(times) => times[0],
                None => nearest + rows[i].wall_s,
            }
        })
        .collect();
    let start = wall_times[0].min(last_row_unix_s);
    let mut bytes = frame(&encode_event(start, 0, Payload::FileVersion(FILE_VERSION)));
    bytes.extend(frame(&encode_event(start, 0, Payload::SessionStart)));
    for (row, &wall_time) in rows.iter().zip(&wall_times) {
        let scalars = row_scalars(row);
        bytes.extend(frame(&encode_event(
            wall_time,
            row.iteration,
            Payload::Scalars(&scalars),
        )));
    }
    let context = || format!("rebuilding the TensorBoard events in {}", dir.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(REWRITE_PREFIX)
        .tempfile_in(dir)
        .with_context(context)?;
    tmp.write_all(&bytes).with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    // a fresh name, sorted after the old files: a running TensorBoard reads it next
    let (path, _) = create_unique_file(dir, unix_now_s() as u64)?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(context)?;
    for old in &files {
        fs::remove_file(old)
            .with_context(|| format!("deleting the events file {}", old.display()))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(context)?;
    Ok(repaired)
}

/// `runner tfevents repair`: [`repair`] for every run folder in or under `folders` (a
/// folder holding `epochs.csv`), under the run's lock, one line per run. A run being trained
/// (its lock held) is said and left alone without failing the command: its trainer repairs
/// the files when it next takes the run up; a damaged one is said, left alone, and fails the
/// command after every run was seen.
pub fn repair_folders(folders: &[PathBuf]) -> Result<()> {
    let mut runs = Vec::new();
    for folder in folders {
        if !folder.is_dir() {
            bail!("{} is not a folder", folder.display());
        }
        find_runs(folder, &mut runs)?;
    }
    if runs.is_empty() {
        bail!(
            "no run folders (with an epochs.csv) in {}",
            folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut failed = 0;
    for dir in runs {
        let run = spec::RunDir { dir };
        let said = run
            .lock()
            .and_then(|_lock| {
                let (rows, written) = match run.state().map_err(|d| anyhow::anyhow!("{d}"))? {
                    spec::layout::RunState::Finished { record, epochs } => {
                        (epochs, record.finished_at_unix_s as f64)
                    }
                    spec::layout::RunState::Unfinished { epochs, .. } => {
                        (epochs, written_unix_s(&run.epochs_path()))
                    }
                };
                let repaired = repair(&run.dir, &rows, written)?;
                Ok(if repaired.rebuilt() {
                    repaired.to_string()
                } else {
                    format!("every one of its {} epochs is in its events", rows.len())
                })
            })
            .unwrap_or_else(|err| {
                if err.downcast_ref::<spec::layout::LockHeld>().is_some() {
                    format!("left to its trainer: {err:#}")
                } else {
                    failed += 1;
                    format!("left alone: {err:#}")
                }
            });
        println!("{}: {said}", run.dir.display());
    }
    if failed > 0 {
        bail!("{failed} run(s) could not be repaired (said above)");
    }
    Ok(())
}

/// When `path` was last written, in seconds since the Unix epoch (now if it cannot be told):
/// when an unfinished run's last row was written, for [`repair`].
pub fn written_unix_s(path: &Path) -> f64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(unix_now_s, |d| d.as_secs_f64())
}

/// The run folders (holding `epochs.csv`) at or under `dir`, in name order.
fn find_runs(dir: &Path, runs: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("epochs.csv").is_file() {
        runs.push(dir.to_path_buf());
        return Ok(());
    }
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            children.push(entry.path());
        }
    }
    children.sort();
    for child in children {
        find_runs(&child, runs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::EventFile;

    fn row(iteration: i64, wall_s: f64) -> spec::EpochRow {
        spec::EpochRow {
            epoch: iteration / 10,
            iteration,
            lr: 0.1,
            train_loss: 2.0 / iteration as f64,
            train_error: 50.0,
            test_loss: (iteration % 20 == 0).then_some(1.5),
            test_error: (iteration % 20 == 0).then_some(40.0),
            wall_s,
            images_per_s: 100.0,
            gate_first: None,
            gate_middle: None,
            gate_last: None,
        }
    }

    /// (step, tag, wall time) of every scalar in `dir`'s files, in file order.
    fn scalars_in(dir: &Path) -> Vec<(i64, String, f64)> {
        let mut all = Vec::new();
        for path in files_starting_with(dir, FILE_PREFIX).unwrap() {
            for r in read_events(&path).unwrap().records {
                for (tag, _) in r.event.scalars {
                    all.push((r.event.step, tag, r.event.wall_time));
                }
            }
        }
        all
    }

    /// Epochs lost from the event files come back from the rows, each once, at the wall
    /// time of its surviving event or placed by its training seconds; an intact folder is
    /// left as it is.
    #[test]
    fn repair_rebuilds_missing_and_repeated_epochs_from_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<_> = (1..=4).map(|e| row(10 * e, 5.0 * e as f64)).collect();
        // epochs 1 and 2 were logged (started at unix 1000), 3 and 4 lost
        let mut events = EventFile::create(dir.path(), -1).unwrap();
        for r in &rows[..2] {
            events
                .append(r.iteration, 1000.0 + r.wall_s, &row_scalars(r))
                .unwrap();
        }
        let repaired = repair(dir.path(), &rows, 9e9).unwrap();
        assert_eq!(
            repaired,
            Repaired {
                missing: 2,
                repeated: 0,
                files_replaced: 1
            }
        );
        let found = scalars_in(dir.path());
        let losses: Vec<(i64, f64)> = found
            .iter()
            .filter(|(_, tag, _)| tag == "train/loss")
            .map(|&(step, _, wall)| (step, wall))
            .collect();
        assert_eq!(
            losses,
            [(10, 1005.0), (20, 1010.0), (30, 1015.0), (40, 1020.0)]
        );
        // 4 scalars a row, 2 more where evaluated (iterations 20, 40)
        assert_eq!(found.len(), 4 * 4 + 2 * 2);
        let files = files_starting_with(dir.path(), FILE_PREFIX).unwrap();
        assert_eq!(files.len(), 1);
        let bytes = fs::read(&files[0]).unwrap();
        assert_eq!(repair(dir.path(), &rows, 9e9).unwrap(), Repaired::default());
        assert_eq!(files_starting_with(dir.path(), FILE_PREFIX).unwrap(), files);
        assert_eq!(
            fs::read(&files[0]).unwrap(),
            bytes,
            "an intact folder is untouched"
        );

        // a copy of the file repeats every epoch: one file is left, each epoch once
        fs::copy(&files[0], dir.path().join(format!("{FILE_PREFIX}1.copy"))).unwrap();
        let repaired = repair(dir.path(), &rows, 9e9).unwrap();
        assert_eq!((repaired.missing, repaired.repeated), (0, 4));
        assert_eq!(scalars_in(dir.path()), found);

        // nothing left at all: placed back from when the last row was written
        for path in files_starting_with(dir.path(), FILE_PREFIX).unwrap() {
            fs::remove_file(path).unwrap();
        }
        assert_eq!(repair(dir.path(), &rows, 1020.0).unwrap().missing, 4);
        assert_eq!(scalars_in(dir.path()), found);
    }

    /// A run being trained (its lock held) is left to its trainer and does not fail the
    /// command; the others are repaired; a damaged run fails it.
    #[test]
    fn repair_folders_leaves_a_run_in_training_to_its_trainer() {
        let root = tempfile::tempdir().unwrap();
        let run_at = |name: &str| spec::RunDir {
            dir: root.path().join(name).join("seed-0"),
        };
        let rows: Vec<_> = (1..=2).map(|e| row(10 * e, 5.0 * e as f64)).collect();
        let (training, idle) = (run_at("training"), run_at("idle"));
        for run in [&training, &idle] {
            fs::create_dir_all(&run.dir).unwrap();
            run.write_epochs(&rows).unwrap();
        }
        let lock = training.lock().unwrap();
        repair_folders(&[root.path().to_path_buf()]).unwrap();
        // 4 scalars a row, 2 more at the evaluated iteration 20
        assert_eq!(scalars_in(&idle.dir).len(), 2 * 4 + 2);
        assert!(scalars_in(&training.dir).is_empty(), "left to its trainer");
        drop(lock);

        fs::write(idle.final_path(), "{").unwrap();
        let err = repair_folders(&[root.path().to_path_buf()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("1 run(s) could not be repaired"),
            "{err:#}"
        );
        assert_eq!(
            scalars_in(&training.dir).len(),
            2 * 4 + 2,
            "repaired once free"
        );
    }
}
