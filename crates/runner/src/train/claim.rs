//! Claiming a run: a finished or damaged one is skipped (and said), an unfinished one is
//! locked by this process and taken up from its checkpoint, if that matches this setup.

use anyhow::Result;
use spec::layout::{Damaged, RunState};
use spec::{EpochRow, RunConfig, RunDir, RunLock};

use super::{log, Job, Sweep};
use crate::checkpoint::Checkpoint;
use crate::tensorboard;

/// A seed to train: its folder, its lock, where it left off and its rows so far.
pub(super) struct Pending {
    pub(super) seed: u64,
    pub(super) run: RunDir,
    _lock: RunLock,
    pub(super) checkpoint: Option<Checkpoint>,
    /// The rows of the epochs the checkpoint has passed (none on a fresh start).
    pub(super) rows: Vec<EpochRow>,
}

impl Pending {
    pub(super) fn start_iteration(&self) -> i64 {
        self.checkpoint.as_ref().map_or(0, |c| c.iteration)
    }
}

/// The revisions before this binary's in `trained_by` (oldest first; empty for a fresh run).
pub(super) fn earlier_revisions(trained_by: &[String]) -> &[String] {
    trained_by.split_last().map_or(&[], |(_, earlier)| earlier)
}

impl Job<'_> {
    /// Takes the run of `seed` if it is to be trained: not finished, not damaged (both said
    /// and counted in `sweep`), locked by this process, and resumable from its checkpoint.
    pub(super) fn claim(&self, seed: u64, sweep: &mut Sweep) -> Result<Option<Pending>> {
        let run = RunDir::new(
            &self.options.results,
            &self.experiment.name,
            &self.profile.name,
            &self.variant.name,
            seed,
        );
        // A look without the lock skips finished (and damaged) runs without touching them;
        // the same look again under the lock, since another process may have finished it
        // meanwhile.
        if self.unfinished(&run, seed, sweep, false).is_none() {
            return Ok(None);
        }
        let lock = run.lock()?;
        let Some((epochs, config)) = self.unfinished(&run, seed, sweep, true) else {
            return Ok(None);
        };
        self.resumable(seed, run, lock, epochs, config.as_ref(), sweep)
    }

    /// The rows and config of an unfinished run; `None` for a finished or damaged one, said
    /// and counted in `sweep`. `locked`: this process holds the run's lock already (a
    /// finished run's events are then checked under it, not under a second lock).
    fn unfinished(
        &self,
        run: &RunDir,
        seed: u64,
        sweep: &mut Sweep,
        locked: bool,
    ) -> Option<(Vec<EpochRow>, Option<RunConfig>)> {
        let name = format!("{}/seed-{seed}", self.variant.name);
        match run.state() {
            Ok(RunState::Unfinished { epochs, config, .. }) => Some((epochs, config)),
            Ok(RunState::Finished { record, epochs }) => {
                let mut said = format!("{name}: finished ({}), skipped", record.status);
                // a result of a network this build no longer makes is kept, but said
                if let (Some(then), Ok(now)) = (record.parameters, self.parameters()) {
                    if then != now {
                        said.push_str(&format!(
                            "; but its network had {then} trainable parameters and this \
                             build's has {now}: its result is of another network (delete {} \
                             to train it again)",
                            run.dir.display()
                        ));
                        sweep.other_network.push(name.clone());
                    }
                }
                // its events are derived from its rows: rebuild them if they were lost
                let repair =
                    || tensorboard::repair(&run.dir, &epochs, record.finished_at_unix_s as f64);
                let repaired = if locked {
                    repair()
                } else {
                    run.lock().and_then(|_lock| repair())
                };
                match repaired {
                    Ok(r) if r.rebuilt() => said.push_str(&format!("; {r}")),
                    Ok(_) => {}
                    Err(err) => said.push_str(&format!(
                        "; its TensorBoard events could not be checked ({err:#})"
                    )),
                }
                log(&said);
                sweep.skipped += 1;
                None
            }
            Err(damaged) => {
                log(&format!("{name}: {damaged}"));
                sweep.damaged.push(damaged);
                None
            }
        }
    }

    /// The pending run, from its checkpoint if it has one that matches this setup and its
    /// records.
    fn resumable(
        &self,
        seed: u64,
        run: RunDir,
        lock: RunLock,
        epochs: Vec<EpochRow>,
        config: Option<&RunConfig>,
        sweep: &mut Sweep,
    ) -> Result<Option<Pending>> {
        // a checkpoint that cannot be read, or whose rows are missing, leaves the run out
        let found = Checkpoint::load(&run).and_then(|checkpoint| {
            let rows = match &checkpoint {
                None => Vec::new(), // a fresh start: rows without a checkpoint are trained again
                Some(c) => c.rows_before(
                    epochs,
                    self.steps_per_epoch(),
                    self.protocol.iterations,
                    &run.epochs_path(),
                )?,
            };
            Ok((checkpoint, rows))
        });
        let (checkpoint, rows) = match found {
            Ok(found) => found,
            Err(err) => {
                let damaged = Damaged {
                    dir: run.dir.clone(),
                    problem: format!("{err:#}"),
                };
                log(&format!("{}/seed-{seed}: {damaged}", self.variant.name));
                sweep.damaged.push(damaged);
                return Ok(None);
            }
        };
        // another setup than the checkpoint's is refused outright: the fix is the user's
        if let Some(c) = &checkpoint {
            c.check_resumable(&run, config, &self.trained_with(seed))?;
        }
        Ok(Some(Pending {
            seed,
            run,
            _lock: lock,
            checkpoint,
            rows,
        }))
    }
}
