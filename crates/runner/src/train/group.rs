//! A group of seeds that start at the same iteration, trained as one stacked network: its
//! members' records, its clock and progress, and the epoch loop (the steps, the records,
//! the checkpoint; a stop request ends it with [`Interrupted`]).

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use spec::layout::Damaged;
use spec::{EpochRow, Stretch};

use super::claim::{earlier_revisions, Pending};
use super::records::EpochEnd;
use super::{log, stop_requested, Interrupted, Job, Sweep};
use crate::checkpoint::{self, Checkpoint, EpochSoFar, Slot};
use crate::step::Stack;
use crate::tensorboard::{self, EventFile};

/// Per-model state of a stack during training.
pub(super) struct Member {
    pub(super) pending: Pending,
    pub(super) rows: Vec<EpochRow>,
    /// This process's event file (`None` once writing it failed: the run goes on without).
    pub(super) events: Option<EventFile>,
    /// Set when this model's loss stopped being finite.
    pub(super) diverged_at: Option<i64>,
    /// The revisions that trained this run, oldest first; this binary's is the last.
    pub(super) trained_by: Vec<String>,
    /// Where earlier starts trained it (none on a fresh start).
    pub(super) trained_in: Vec<Stretch>,
    /// The iteration this start took it up at.
    pub(super) resumed_at: i64,
}

/// An epoch's training so far: per step the [K] losses, per model the error count.
pub(super) struct Tally {
    pub(super) so_far: EpochSoFar,
    /// Steps of these trained by this process (a resumed epoch's earlier ones are not timed),
    /// since `started`.
    pub(super) timed_steps: i64,
    pub(super) started: Instant,
}

/// A group of seeds in training: the stacked network, each seed's records, the clock and the
/// progress shown.
pub(super) struct Group {
    pub(super) stack: Stack,
    pub(super) members: Vec<Member>,
    pub(super) clock: Clock,
    pub(super) progress: Progress,
}

/// The progress bar of a group (hidden with `--quiet` or off a terminal: log lines instead).
pub(super) struct Progress {
    pub(super) bar: ProgressBar,
    label: String,
}

impl Progress {
    /// The epoch's summary: on the bar when there is one, else one log line.
    pub(super) fn report(&self, msg: &str) {
        if self.bar.is_hidden() {
            log(&format!("{}: {msg}", self.label));
        } else {
            self.bar.set_message(msg.to_string());
        }
    }

    /// A line of its own, above the bar.
    pub(super) fn say(&self, line: &str) {
        self.bar.suspend(|| log(line));
    }
}

/// How the steps of an epoch ended.
pub(super) enum Steps {
    /// Every step of the epoch trained; `stop` when a stop was requested in its last step.
    Done { stop: bool },
    /// A stop request inside the epoch, after this many steps in all.
    StoppedAt(i64),
}

/// Seconds of training across resumptions.
pub(super) struct Clock {
    before: f64,
    started: Instant,
}

impl Clock {
    pub(super) fn wall_s(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

impl Job<'_> {
    /// Trains a group of seeds that start at the same iteration, as one stacked network.
    pub(super) fn run(&self, group: Vec<Pending>, sweep: &mut Sweep) -> Result<()> {
        let protocol = self.protocol;
        let steps_per_epoch = self.steps_per_epoch();
        if steps_per_epoch < 1 {
            bail!(
                "the training set is smaller than one batch of {}",
                protocol.batch_size
            );
        }
        let seeds: Vec<u64> = group.iter().map(|p| p.seed).collect();
        let mut stack = self.build(&seeds)?;
        let start = group[0].start_iteration();
        let (group, misfits) = self.fitting(&stack, group);
        if !misfits.is_empty() {
            // left out (said and counted); the others train as a stack of their own
            sweep.damaged.extend(misfits);
            return if group.is_empty() {
                Ok(())
            } else {
                self.run(group, sweep)
            };
        }
        // asked while the network was built: nothing trained since the checkpoint
        super::stop_if_requested(start)?;
        let clock = Clock {
            before: group[0].checkpoint.as_ref().map_or(0.0, |c| c.wall_s),
            started: Instant::now(),
        };
        let mut partial = if start > 0 {
            self.restore(&mut stack, &group)?
        } else {
            None
        };
        let label = format!(
            "{}/{} seeds {:?}",
            self.profile.name, self.variant.name, seeds
        );
        let mut group = Group {
            stack,
            members: self.members(group, start)?,
            clock,
            progress: self.progress(label, protocol.iterations, start),
        };

        let total_epochs = (protocol.iterations + steps_per_epoch - 1) / steps_per_epoch;
        let mut budget = self.options.stop_after_steps;
        for epoch in start / steps_per_epoch..total_epochs {
            let (tally, steps) =
                self.train_epoch(&mut group, epoch, partial.take(), &mut budget)?;
            let stopped_at = match steps {
                Steps::StoppedAt(iteration) => {
                    self.checkpoint(&group, Some(&tally), iteration)?;
                    Some(iteration)
                }
                Steps::Done { stop } => {
                    let last = ((epoch + 1) * steps_per_epoch).min(protocol.iterations);
                    if let EpochEnd::Over = self.record_epoch(&mut group, epoch, tally, sweep)? {
                        break;
                    }
                    self.checkpoint(&group, None, last)?;
                    (stop || stop_requested()).then_some(last)
                }
            };
            if let Some(iteration) = stopped_at {
                group.progress.bar.finish_and_clear();
                return Err(Interrupted { iteration }.into());
            }
        }
        group.progress.bar.finish_and_clear();
        Ok(())
    }

    /// The stacked network and its optimizer, initialised from the seeds.
    fn build(&self, seeds: &[u64]) -> Result<Stack> {
        Stack::new(
            self.config,
            seeds,
            self.protocol,
            self.options.device,
            self.options.layout,
        )
    }

    /// The members whose checkpoint (if any) fits `stack` ([`checkpoint::check_fits`]), and
    /// the others as damaged runs (said): a checkpoint of a build with another network or
    /// optimizer state leaves its run out instead of stopping the sweep.
    fn fitting(&self, stack: &Stack, group: Vec<Pending>) -> (Vec<Pending>, Vec<Damaged>) {
        let mut misfits = Vec::new();
        let fitting = group
            .into_iter()
            .filter(|pending| {
                let Some(checkpoint) = &pending.checkpoint else {
                    return true;
                };
                let Err(err) = checkpoint::check_fits(stack, checkpoint) else {
                    return true;
                };
                let damaged = Damaged {
                    dir: pending.run.dir.clone(),
                    problem: format!(
                        "its checkpoint ({}) does not fit this network: {err:#} (resume it \
                         with the build that wrote it: {})",
                        pending.run.checkpoint_path().display(),
                        checkpoint
                            .trained_by
                            .as_ref()
                            .and_then(|by| by.last())
                            .map_or("revision not recorded", String::as_str)
                    ),
                };
                log(&format!(
                    "{}/seed-{}: {damaged}",
                    self.variant.name, pending.seed
                ));
                misfits.push(damaged);
                false
            })
            .collect();
        (fitting, misfits)
    }

    /// Loads each member's checkpoint into its slice of the stacked weights and momentum
    /// ([`checkpoint::restore`]), and returns the interrupted epoch's tally when the
    /// checkpoint fell inside an epoch.
    fn restore(&self, stack: &mut Stack, group: &[Pending]) -> Result<Option<EpochSoFar>> {
        let checkpoints: Vec<&Checkpoint> = group
            .iter()
            .map(|p| {
                p.checkpoint
                    .as_ref()
                    .expect("resumed members have checkpoints")
            })
            .collect();
        checkpoint::restore(
            stack,
            &checkpoints,
            self.options.device,
            self.steps_per_epoch(),
        )
    }

    /// Each member's records: the rows so far, `config.toml` on a fresh start, and this
    /// process's event file (events past `start` are dropped from earlier ones).
    fn members(&self, group: Vec<Pending>, start: i64) -> Result<Vec<Member>> {
        group
            .into_iter()
            .map(|pending| self.member(pending, start))
            .collect()
    }

    /// One member of [`Job::members`].
    fn member(&self, mut pending: Pending, start: i64) -> Result<Member> {
        if start == 0 {
            pending.run.write_config(&self.run_config(pending.seed))?;
        }
        let rows = std::mem::take(&mut pending.rows);
        let revision = &self.provenance.git_revision;
        let trained_by = match &pending.checkpoint {
            Some(c) => c.trained_by(revision),
            None => vec![revision.clone()],
        };
        let earlier = earlier_revisions(&trained_by);
        if !earlier.is_empty() {
            log(&format!(
                "{}/seed-{}: resumed by revision {revision}; trained so far by {}",
                self.variant.name,
                pending.seed,
                earlier.join(" → ")
            ));
        }
        let events = self.events(&pending, &rows, start);
        let trained_in = pending
            .checkpoint
            .as_ref()
            .map_or_else(Vec::new, Checkpoint::stretches);
        Ok(Member {
            pending,
            rows,
            events,
            diverged_at: None,
            trained_by,
            trained_in,
            resumed_at: start,
        })
    }

    /// Where `member` was trained up to `iteration`: the earlier starts' stretches, then
    /// this one's (on this device and libtorch, in a stack of `stacked_with`).
    pub(super) fn stretches(
        &self,
        member: &Member,
        stacked_with: usize,
        iteration: i64,
    ) -> Vec<Stretch> {
        Stretch::append(
            &member.trained_in,
            Stretch {
                from_iteration: member.resumed_at,
                to_iteration: iteration,
                device: self.provenance.device.clone(),
                libtorch: self.provenance.libtorch.clone(),
                stacked_with,
            },
        )
    }

    /// The member's event file for this process: earlier ones rebuilt from `rows` if they
    /// were lost, and their events past `start` dropped; `None` (said) when it cannot be
    /// written.
    fn events(&self, pending: &Pending, rows: &[EpochRow], start: i64) -> Option<EventFile> {
        let resume_from = if start == 0 { -1 } else { start };
        let written = tensorboard::written_unix_s(&pending.run.epochs_path());
        match tensorboard::repair(&pending.run.dir, rows, written) {
            Ok(r) if r.rebuilt() => {
                log(&format!("{}/seed-{}: {r}", self.variant.name, pending.seed))
            }
            Ok(_) => {}
            Err(err) => log(&format!(
                "{}/seed-{}: its TensorBoard events could not be rebuilt ({err:#})",
                self.variant.name, pending.seed
            )),
        }
        match EventFile::create(&pending.run.dir, resume_from) {
            Ok(events) => {
                let dropped = events.pruned().events_dropped;
                if dropped > 0 {
                    let again = if start == 0 {
                        "no checkpoint was kept: trained again from the start"
                    } else {
                        "trained again from the checkpoint"
                    };
                    log(&format!(
                        "{}/seed-{}: {dropped} TensorBoard events past iteration {start} \
                         dropped ({again})",
                        self.variant.name, pending.seed
                    ));
                }
                Some(events)
            }
            Err(err) => {
                log(&format!(
                    "{}/seed-{}: no TensorBoard events for this run ({err:#})",
                    self.variant.name, pending.seed
                ));
                None
            }
        }
    }

    /// Writes each live member's checkpoint: its slice of the weights, momentum and (inside
    /// an epoch) the epoch's tally so far, with the shared optimizer state and the progress
    /// ([`checkpoint::save`]).
    fn checkpoint(&self, group: &Group, partial: Option<&Tally>, iteration: i64) -> Result<()> {
        let wall_s = group.clock.wall_s();
        let slots = group
            .members
            .iter()
            .enumerate()
            .filter(|(_, member)| member.diverged_at.is_none())
            .map(|(index, member)| Slot {
                index,
                run: &member.pending.run,
                trained_with: self.trained_with(member.pending.seed),
                trained_by: &member.trained_by,
                trained_in: self.stretches(member, group.stack.k() as usize, iteration),
            });
        checkpoint::save(
            &group.stack,
            partial.map(|tally| &tally.so_far),
            slots,
            iteration,
            wall_s,
        )
    }

    /// The group's progress: a bar over `total` iterations from `done`, hidden with `--quiet`
    /// or off a terminal.
    fn progress(&self, label: String, total: i64, done: i64) -> Progress {
        let bar = if self.options.quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} it {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar.set_position(done as u64);
            bar
        };
        Progress { bar, label }
    }
}
