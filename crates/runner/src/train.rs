//! Training: every (variant, seed) of an experiment's profile, seeds of one variant stacked as
//! replicas of one network, each run resumable and never redone once finished.
//!
//! The loop reads as the protocol does: for each epoch, the steps ([`Job::train_epoch`]),
//! then the epoch's accounting, evaluation and records ([`Job::record_epoch`]), then the
//! checkpoint. A stop request (a signal) finishes the step it lands in; inside an epoch it
//! writes a mid-epoch checkpoint, in an epoch's last step it lets the epoch end as usual first.
//! Either way the run resumes to the numbers an uninterrupted run would have given.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use models::{per_replica_loss, stacked_errors, Net, NetConfig, NetConfigExt};
use spec::layout::{Damaged, RunState};
use spec::{
    gate_units, EpochRow, Experiment, FinalRecord, Profile, Protocol, Provenance, RunConfig,
    RunDir, RunLock, Status, Variant,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::batches::{derived_seed, seeded, DeviceData, Stream};
use crate::checkpoint::{self, Checkpoint, TrainedWith};
use crate::data::Cifar10;
use crate::optim::{LossScaler, Precision, SgdLayout};
use crate::step::Stack;
use crate::tensorboard::{self, unix_now_s, EventFile};

/// How to train, beyond what the experiment file says.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub results: PathBuf,
    pub device: Device,
    /// At most this many seeds of one variant in one stacked network.
    pub max_replicas: usize,
    pub layout: SgdLayout,
    /// A precision instead of the profile's (fp16: CUDA autocast with loss scaling).
    pub precision: Option<Precision>,
    /// No progress bars: one log line per epoch instead.
    pub quiet: bool,
    /// Stop (as if signalled) after this many steps in this process; for tests.
    pub stop_after_steps: Option<i64>,
}

/// Set by SIGTERM, SIGUSR1 or SIGINT (see [`install_signal_handlers`]): finish the current
/// step, write the checkpoint, and stop with [`Interrupted`].
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Routes SIGTERM and SIGUSR1 (Slurm's warnings before a time limit or a preemption) and
/// SIGINT to a graceful stop; a second SIGINT ends the process at once.
pub fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, STOP.clone())?;
    for signal in [SIGTERM, SIGUSR1, SIGINT] {
        signal_hook::flag::register(signal, STOP.clone())?;
    }
    Ok(())
}

/// Whether a stop was requested (by a signal).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Training stopped on request after writing its checkpoint; running it again resumes.
#[derive(Debug, thiserror::Error)]
#[error("stopped on request at iteration {iteration}; checkpoints written, run again to resume")]
pub struct Interrupted {
    pub iteration: i64,
}

/// The exit status of an interrupted run (EX_TEMPFAIL): the Slurm script requeues on it.
pub const EXIT_INTERRUPTED: i32 = 75;

/// K lone models of `config`, each initialised from its own seed on the CPU (so the initial
/// weights are the same on every device), stacked into one network on `device`
/// ([`models::init_replicas_from_seeds`] with each run's init seed).
pub fn build_stacked(config: &NetConfig, seeds: &[u64], device: Device) -> Result<(VarStore, Net)> {
    let mut vs = VarStore::new(device);
    // Its random initial values are overwritten by the stack, but drawing them still uses the
    // global generator: under the lock, or they would shift another thread's seeded draws.
    let stacked = config.with_replicas(seeds.len() as i64);
    let net = seeded(derived_seed(seeds[0], Stream::Init, 1), || {
        stacked.build(&vs.root())
    })?;
    let init: Vec<i64> = seeds
        .iter()
        .map(|&seed| derived_seed(seed, Stream::Init, 0))
        .collect();
    seeded(init[0], || {
        models::init_replicas_from_seeds(&stacked, &init, &mut vs)
    })?;
    Ok((vs, net))
}

/// The source revision this binary was built from (`rev-parse --short=12`, with `-dirty` when
/// its code had uncommitted changes; `unknown` outside a git checkout), read by the build
/// script: a binary kept while its tree moves on still names its own code.
pub fn git_revision() -> String {
    env!("RUNNER_GIT_REVISION").to_string()
}

/// What a sweep did, run by run, for the summary at its end.
#[derive(Debug, Default)]
struct Sweep {
    /// `variant/seed-n` and how it ended, for runs finished by this sweep.
    finished: Vec<(String, FinalRecord)>,
    /// Runs found finished and skipped.
    skipped: usize,
    /// Runs left out because their records are damaged.
    damaged: Vec<Damaged>,
}

impl Sweep {
    /// The end-of-sweep summary; damaged runs make the sweep fail (after training the rest).
    fn conclude(self) -> Result<()> {
        let count = |status| {
            self.finished
                .iter()
                .filter(|(_, r)| r.status == status)
                .count()
        };
        log(&format!(
            "sweep: {} trained to the end ({} ok, {} fail, {} diverged), {} already finished, \
             {} damaged",
            self.finished.len(),
            count(Status::Ok),
            count(Status::Fail),
            count(Status::Diverged),
            self.skipped,
            self.damaged.len()
        ));
        for (name, record) in self.finished.iter().filter(|(_, r)| r.diverged()) {
            log(&format!(
                "  {name}: diverged at iteration {} (recorded as a result, not an error)",
                record.iterations
            ));
        }
        for damaged in &self.damaged {
            log(&format!("  {damaged}"));
        }
        if !self.damaged.is_empty() {
            bail!(
                "{} run(s) left out: their records are damaged (see above)",
                self.damaged.len()
            );
        }
        Ok(())
    }
}

/// Trains every selected (variant, seed) of `profile` that has not finished yet.
pub fn train_experiment(
    experiment: &Experiment,
    profile: &Profile,
    variants: &[&Variant],
    seeds: &[u64],
    data: &Cifar10,
    provenance: &Provenance,
    options: &TrainOptions,
) -> Result<()> {
    log(&format!(
        "{}: {} ({}), profile {}",
        experiment.name, experiment.title, experiment.source, profile.name
    ));
    let mut sweep = Sweep::default();
    for variant in variants {
        if let Some(paper) = variant.paper {
            log(&format!("{}: the paper reports {paper}", variant.name));
        }
        let config = experiment.net_config(variant, profile)?;
        let (protocol, warning) = crate::step::protocol(
            experiment,
            variant,
            profile,
            options.precision,
            options.device,
        )?;
        if let Some(warning) = warning {
            log(&format!("{}: {warning}", variant.name));
        }
        check_subsets(&protocol, data).with_context(|| {
            format!(
                "{}: variant `{}`, profile `{}`",
                experiment.path.display(),
                variant.name,
                profile.name
            )
        })?;
        let device_data = DeviceData::new(&data.train, &data.test, &protocol, options.device);
        let job = Job {
            experiment,
            profile,
            variant,
            config: &config,
            protocol: &protocol,
            data: &device_data,
            fingerprint: data,
            provenance,
            options,
        };
        let mut pending = Vec::new();
        for &seed in seeds {
            if let Some(p) = job.claim(seed, &mut sweep)? {
                pending.push(p);
            }
        }
        // Seeds resume together only from the same point; each group trains as one stack.
        // Interrupted runs first (the furthest along first): finish what was started.
        pending.sort_by_key(|p| (std::cmp::Reverse(p.start_iteration()), p.seed));
        while !pending.is_empty() {
            let start = pending[0].start_iteration();
            let take = pending
                .iter()
                .take(options.max_replicas.max(1))
                .take_while(|p| p.start_iteration() == start)
                .count();
            let group: Vec<Pending> = pending.drain(..take).collect();
            job.run(group, &mut sweep)?;
        }
    }
    sweep.conclude()
}

/// Refuses a `train_subset` or `test_subset` larger than the images there are: the run
/// would record a subset it did not use.
fn check_subsets(protocol: &Protocol, data: &Cifar10) -> Result<()> {
    let (train, eval) = protocol.split.sizes(data.train.len(), data.test.len());
    for (name, subset, available) in [
        ("train_subset", protocol.train_subset, train),
        ("test_subset", protocol.test_subset, eval),
    ] {
        if let Some(n) = subset.filter(|&n| n > available) {
            bail!("{name} = {n}, but the data has only {available} such images");
        }
    }
    Ok(())
}

/// A seed to train: its folder, its lock, where it left off and its rows so far.
struct Pending {
    seed: u64,
    run: RunDir,
    _lock: RunLock,
    checkpoint: Option<Checkpoint>,
    /// The rows of the epochs the checkpoint has passed (none on a fresh start).
    rows: Vec<EpochRow>,
}

impl Pending {
    fn start_iteration(&self) -> i64 {
        self.checkpoint.as_ref().map_or(0, |c| c.iteration)
    }
}

/// One variant of a sweep: its network, protocol and data.
struct Job<'a> {
    experiment: &'a Experiment,
    profile: &'a Profile,
    variant: &'a Variant,
    config: &'a NetConfig,
    protocol: &'a Protocol,
    data: &'a DeviceData,
    fingerprint: &'a Cifar10,
    provenance: &'a Provenance,
    options: &'a TrainOptions,
}

/// The stacked network of a group and what trains it.
/// Per-model state of a stack during training.
struct Member {
    pending: Pending,
    rows: Vec<EpochRow>,
    /// This process's event file (`None` once writing it failed: the run goes on without).
    events: Option<EventFile>,
    /// Set when this model's loss stopped being finite.
    diverged_at: Option<i64>,
    /// The revisions that trained this run, oldest first; this binary's is the last.
    trained_by: Vec<String>,
}

/// What one evaluation found for one model.
struct Evaluation {
    /// Mean loss over the evaluation images.
    loss: f64,
    /// Error in %.
    error: f64,
    /// Gated nets: the mean gate of the logged units ([`gate_units`]: first, middle, last).
    gates: Option<[f64; 3]>,
}

/// The revisions before this binary's in `trained_by` (oldest first; empty for a fresh run).
fn earlier_revisions(trained_by: &[String]) -> &[String] {
    trained_by.split_last().map_or(&[], |(_, earlier)| earlier)
}

/// An epoch's training so far: per step the [K] losses, per model the error count.
struct Tally {
    losses: Vec<Tensor>,
    errors: Tensor,
    /// Steps of these trained by this process (a resumed epoch's earlier ones are not timed),
    /// since `started`.
    timed_steps: i64,
    started: Instant,
}

/// A group of seeds in training: the stacked network, each seed's records, the clock and the
/// progress shown.
struct Group {
    stack: Stack,
    members: Vec<Member>,
    clock: Clock,
    progress: Progress,
}

/// The progress bar of a group (hidden with `--quiet` or off a terminal: log lines instead).
struct Progress {
    bar: ProgressBar,
    label: String,
}

impl Progress {
    /// The epoch's summary: on the bar when there is one, else one log line.
    fn report(&self, msg: &str) {
        if self.bar.is_hidden() {
            log(&format!("{}: {msg}", self.label));
        } else {
            self.bar.set_message(msg.to_string());
        }
    }

    /// A line of its own, above the bar.
    fn say(&self, line: &str) {
        self.bar.suspend(|| log(line));
    }
}

/// How the steps of an epoch ended.
enum Steps {
    /// Every step of the epoch trained; `stop` when a stop was requested in its last step.
    Done { stop: bool },
    /// A stop request inside the epoch, after this many steps in all.
    StoppedAt(i64),
}

/// Seconds of training across resumptions.
struct Clock {
    before: f64,
    started: Instant,
}

impl Clock {
    fn wall_s(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

impl Job<'_> {
    /// The run's configuration, as `config.toml` records it.
    fn run_config(&self, seed: u64) -> RunConfig {
        RunConfig {
            experiment: self.experiment.name.clone(),
            profile: self.profile.name.clone(),
            variant: self.variant.name.clone(),
            seed,
            model: self.config.clone(),
            protocol: self.protocol.clone(),
        }
    }

    /// What a checkpoint of this run must have been trained with to resume.
    fn trained_with(&self, seed: u64) -> TrainedWith {
        TrainedWith {
            run: self.run_config(seed),
            data: self.fingerprint.fingerprint.digest.clone(),
        }
    }

    fn steps_per_epoch(&self) -> i64 {
        self.data.steps_per_epoch(self.protocol.batch_size)
    }

    /// Takes the run of `seed` if it is to be trained: not finished, not damaged (both said
    /// and counted in `sweep`), locked by this process, and resumable from its checkpoint.
    fn claim(&self, seed: u64, sweep: &mut Sweep) -> Result<Option<Pending>> {
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
        if self.unfinished(&run, seed, sweep).is_none() {
            return Ok(None);
        }
        let lock = run.lock()?;
        let Some((epochs, config)) = self.unfinished(&run, seed, sweep) else {
            return Ok(None);
        };
        self.resumable(seed, run, lock, epochs, config.as_ref(), sweep)
    }

    /// The rows and config of an unfinished run; `None` for a finished or damaged one, said
    /// and counted in `sweep`.
    fn unfinished(
        &self,
        run: &RunDir,
        seed: u64,
        sweep: &mut Sweep,
    ) -> Option<(Vec<EpochRow>, Option<RunConfig>)> {
        let name = format!("{}/seed-{seed}", self.variant.name);
        match run.state() {
            Ok(RunState::Unfinished { epochs, config, .. }) => Some((epochs, config)),
            Ok(RunState::Finished { record, epochs }) => {
                let mut said = format!("{name}: finished ({:?}), skipped", record.status);
                // its events are derived from its rows: rebuild them if they were lost
                let repaired = run.lock().and_then(|_lock| {
                    tensorboard::repair(&run.dir, &epochs, record.finished_at_unix_s as f64)
                });
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

    /// Trains a group of seeds that start at the same iteration, as one stacked network.
    fn run(&self, group: Vec<Pending>, sweep: &mut Sweep) -> Result<()> {
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
        if stop_requested() {
            // asked while the network was built: nothing trained since the checkpoint
            return Err(Interrupted { iteration: start }.into());
        }
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
                    if self.record_epoch(&mut group, epoch, tally, sweep)? {
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

    /// Each member's records: the rows so far, `config.toml` on a fresh start, and this
    /// process's event file (events past `start` are dropped from earlier ones).
    fn members(&self, group: Vec<Pending>, start: i64) -> Result<Vec<Member>> {
        group
            .into_iter()
            .map(|mut pending| {
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
                let resume_from = if start == 0 { -1 } else { start };
                let written = modified_unix_s(&pending.run.epochs_path());
                match tensorboard::repair(&pending.run.dir, &rows, written) {
                    Ok(r) if r.rebuilt() => {
                        log(&format!("{}/seed-{}: {r}", self.variant.name, pending.seed))
                    }
                    Ok(_) => {}
                    Err(err) => log(&format!(
                        "{}/seed-{}: its TensorBoard events could not be rebuilt ({err:#})",
                        self.variant.name, pending.seed
                    )),
                }
                let events = match EventFile::create(&pending.run.dir, resume_from) {
                    Ok(events) => {
                        let dropped = events.pruned().events_dropped;
                        if dropped > 0 {
                            log(&format!(
                                "{}/seed-{}: {dropped} TensorBoard events past iteration {start} \
                                 dropped (trained again from the checkpoint)",
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
                };
                Ok(Member {
                    pending,
                    rows,
                    events,
                    diverged_at: None,
                    trained_by,
                })
            })
            .collect()
    }

    /// The steps of `epoch` from where `partial` left off (its start when `None`); stops
    /// early when a stop is requested (a signal, or the test budget running out).
    fn train_epoch(
        &self,
        group: &mut Group,
        epoch: i64,
        partial: Option<Tally>,
        budget: &mut Option<i64>,
    ) -> Result<(Tally, Steps)> {
        let stack = &mut group.stack;
        let protocol = self.protocol;
        let steps_per_epoch = self.steps_per_epoch();
        let device = self.options.device;
        let first = epoch * steps_per_epoch;
        let last = ((epoch + 1) * steps_per_epoch).min(protocol.iterations);
        let orders: Vec<Tensor> = stack
            .seeds
            .iter()
            .map(|&s| self.data.epoch_order(s, epoch))
            .collect();
        let mut tally = partial.unwrap_or_else(|| Tally {
            losses: Vec::new(),
            errors: Tensor::zeros([stack.k()], (Kind::Int64, device)),
            timed_steps: 0,
            started: Instant::now(),
        });
        tally.started = Instant::now();
        for iteration in first + tally.losses.len() as i64..last {
            let offset = (iteration - first) * protocol.batch_size;
            let (images, labels): (Vec<Tensor>, Vec<Tensor>) = stack
                .seeds
                .iter()
                .zip(&orders)
                .map(|(&seed, order)| {
                    self.data.batch(
                        &order.narrow(0, offset, protocol.batch_size),
                        seed,
                        iteration,
                    )
                })
                .unzip();
            let xs = Tensor::stack(&images, 0); // [K, B, 3, 32, 32]
            let ys = Tensor::stack(&labels, 0); // [K, B]
            let (logits, losses) = stack.step(&xs, &ys, iteration, protocol.lr_at(iteration))?;
            tally.losses.push(losses.detach());
            tally.errors += stacked_errors(&logits.detach(), &ys)?;
            tally.timed_steps += 1;
            group.progress.bar.inc(1);
            if let Some(left) = budget.as_mut() {
                *left -= 1;
            }
            if stop_requested() || budget.is_some_and(|left| left <= 0) {
                let steps = if iteration + 1 < last {
                    Steps::StoppedAt(iteration + 1)
                } else {
                    Steps::Done { stop: true }
                };
                return Ok((tally, steps));
            }
        }
        Ok((tally, Steps::Done { stop: false }))
    }

    /// The epoch's accounting, evaluation and records: one row per live member (its mean
    /// training loss and error, and the test loss and error when due), divergence noted and
    /// recorded, and every member finished after the last epoch. True when training is over.
    fn record_epoch(
        &self,
        group: &mut Group,
        epoch: i64,
        tally: Tally,
        sweep: &mut Sweep,
    ) -> Result<bool> {
        let Group {
            stack,
            members,
            clock,
            progress,
        } = group;
        let protocol = self.protocol;
        let k = stack.k() as usize;
        let steps_per_epoch = self.steps_per_epoch();
        let first = epoch * steps_per_epoch;
        let last = ((epoch + 1) * steps_per_epoch).min(protocol.iterations);
        let steps = tally.losses.len();
        let losses = Vec::<f64>::try_from(
            Tensor::stack(&tally.losses, 0)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu)
                .view([-1]),
        )?;
        let errors = Vec::<i64>::try_from(tally.errors.to_device(Device::Cpu))?;
        // the copies above waited for the device: training time only, before evaluation
        let images_per_s = (tally.timed_steps * protocol.batch_size) as f64
            / tally.started.elapsed().as_secs_f64();
        let evaluate = (epoch + 1) % protocol.eval_every_epochs == 0 || last == protocol.iterations;
        let test = if evaluate {
            Some(self.evaluate(&stack.net, k)?)
        } else {
            None
        };
        let wall_s = clock.wall_s();
        for (i, member) in members.iter_mut().enumerate() {
            if member.diverged_at.is_some() {
                continue;
            }
            let own: Vec<f64> = (0..steps).map(|s| losses[s * k + i]).collect();
            if let Some(bad) = own.iter().position(|l| !l.is_finite()) {
                member.diverged_at = Some(first + bad as i64 + 1);
            }
            let test = test.as_ref().map(|t| &t[i]);
            let gates = test.and_then(|t| t.gates);
            let row = EpochRow {
                epoch: epoch + 1,
                iteration: last,
                lr: protocol.lr_at(last - 1),
                train_loss: own.iter().sum::<f64>() / steps as f64,
                train_error: 100.0 * errors[i] as f64 / (steps as i64 * protocol.batch_size) as f64,
                test_loss: test.map(|t| t.loss),
                test_error: test.map(|t| t.error),
                wall_s,
                images_per_s,
                gate_first: gates.map(|g| g[0]),
                gate_middle: gates.map(|g| g[1]),
                gate_last: gates.map(|g| g[2]),
            };
            member.rows.push(row);
            member.pending.run.write_epochs(&member.rows)?;
            self.log_events(member);
            if let Some(at) = member.diverged_at {
                self.save_weights(stack, i, member)?;
                let line = format!(
                    "{}/seed-{}: diverged at iteration {at} (the loss is not finite); \
                     recorded as `diverged`",
                    self.variant.name, member.pending.seed
                );
                progress.say(&line);
                self.finish(member, Status::Diverged, at, wall_s, k, sweep)?;
            }
        }
        let live: Vec<&Member> = members.iter().filter(|m| m.diverged_at.is_none()).collect();
        if let Some(row) = live.first().and_then(|m| m.rows.last()) {
            let total_epochs = (protocol.iterations + steps_per_epoch - 1) / steps_per_epoch;
            let gates = row
                .gates()
                .map(|[a, b, c]| format!(" gates {a:.4}/{b:.4}/{c:.4}"))
                .unwrap_or_default();
            let msg = format!(
                "epoch {}/{total_epochs} loss {:.3} train {:.2}% test {}{gates} {:.0} img/s",
                epoch + 1,
                row.train_loss,
                row.train_error,
                row.test_error
                    .map(|e| format!("{e:.2}%"))
                    .unwrap_or_else(|| "-".into()),
                images_per_s * k as f64
            );
            progress.report(&msg);
        }
        if live.is_empty() {
            return Ok(true);
        }
        if last < protocol.iterations {
            return Ok(false);
        }
        for (i, member) in members.iter_mut().enumerate() {
            if member.diverged_at.is_some() {
                continue;
            }
            self.save_weights(stack, i, member)?;
            let error = member
                .rows
                .last()
                .and_then(|r| r.test_error)
                .unwrap_or(f64::NAN);
            let status = if error > protocol.fail_above_percent {
                Status::Fail
            } else {
                Status::Ok
            };
            self.finish(member, status, last, wall_s, k, sweep)?;
        }
        Ok(true)
    }

    /// The member's last row as TensorBoard scalars, at its iteration and the real time.
    fn log_events(&self, member: &mut Member) {
        let Some(events) = member.events.as_mut() else {
            return;
        };
        let Some(row) = member.rows.last() else {
            return;
        };
        let scalars = crate::tensorboard::row_scalars(row);
        if let Err(err) = events.append(row.iteration, unix_now_s(), &scalars) {
            log(&format!(
                "{}/seed-{}: TensorBoard events stop here ({err:#})",
                self.variant.name, member.pending.seed
            ));
            member.events = None;
        }
    }

    /// Loads each member's checkpoint into its slice of the stacked weights and momentum, and
    /// returns the interrupted epoch's tally when the checkpoint fell inside an epoch.
    fn restore(&self, stack: &mut Stack, group: &[Pending]) -> Result<Option<Tally>> {
        let parts: Vec<&HashMap<String, Tensor>> = group
            .iter()
            .map(|p| {
                &p.checkpoint
                    .as_ref()
                    .expect("resumed members have checkpoints")
                    .tensors
            })
            .collect();
        let joined = |name: &str| -> Result<Tensor> {
            let pieces = parts
                .iter()
                .map(|t| {
                    t.get(name)
                        .map(|x| x.to_device(self.options.device))
                        .with_context(|| format!("checkpoint lacks {name}"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&pieces, 0))
        };
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in stack.vs.variables() {
                let saved = joined(&format!("model/{name}"))?;
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
            let tensor = if name.starts_with("momentum/") {
                joined(&name)?
            } else {
                parts[0][&name].shallow_clone()
            };
            state.insert(name, tensor);
        }
        stack.sgd.load_state(&state)?;
        // each model's own loss scale (a run checkpointed in fp32 keeps the initial scales)
        if let Some(scaler) = stack.scaler.as_mut() {
            if parts.iter().all(|t| t.contains_key("amp/scale")) {
                let state: HashMap<String, Tensor> = ["amp/scale", "amp/growth_tracker"]
                    .into_iter()
                    .map(|name| Ok((name.to_string(), joined(name)?)))
                    .collect::<Result<_>>()?;
                scaler.load_state(&state)?;
            }
        }
        let start = group[0].start_iteration();
        let into_epoch = start % self.steps_per_epoch();
        if !parts[0].contains_key("partial/losses") {
            if into_epoch != 0 {
                bail!("the checkpoint at iteration {start} falls inside an epoch but holds no partial epoch");
            }
            return Ok(None);
        }
        let losses = joined("partial/losses")?; // [K, s]
        if losses.size()[1] != into_epoch {
            bail!(
                "the checkpoint at iteration {start} holds {} steps of its epoch, not {into_epoch}",
                losses.size()[1]
            );
        }
        Ok(Some(Tally {
            losses: losses.unbind(1),
            errors: joined("partial/errors")?, // [K]
            timed_steps: 0,
            started: Instant::now(),
        }))
    }

    /// Model `i`'s trained weights as `model.ot`, written before `final.json`.
    fn save_weights(&self, stack: &Stack, i: usize, member: &Member) -> Result<()> {
        let k = stack.k();
        let named: Vec<(String, Tensor)> = stack
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.chunk(k, 0)[i].to_device(Device::Cpu)))
            .collect();
        checkpoint::write_tensors(&member.pending.run.weights_path(), &named)
    }

    /// Writes each live member's checkpoint: its slice of the weights, momentum and (inside
    /// an epoch) the epoch's tally so far, with the shared optimizer state and the progress.
    fn checkpoint(&self, group: &Group, partial: Option<&Tally>, iteration: i64) -> Result<()> {
        let (stack, members) = (&group.stack, &group.members);
        let wall_s = group.clock.wall_s();
        let k = stack.k();
        let mut shared: Vec<(String, Tensor)> = Vec::new();
        let mut per_model: Vec<(String, Tensor)> = stack
            .vs
            .variables()
            .iter()
            .map(|(n, t)| (format!("model/{n}"), t.shallow_clone()))
            .collect();
        for (name, tensor) in stack
            .sgd
            .state()
            .into_iter()
            .chain(stack.scaler.iter().flat_map(LossScaler::state))
        {
            // Momentum and loss scales are per model like the weights; the step marker is shared.
            if name.starts_with("momentum/") || name.starts_with("amp/") {
                per_model.push((name, tensor));
            } else {
                shared.push((name, tensor));
            }
        }
        if let Some(tally) = partial {
            // [K, s] so that each model's slice is a row.
            per_model.push(("partial/losses".into(), Tensor::stack(&tally.losses, 1)));
            per_model.push(("partial/errors".into(), tally.errors.shallow_clone()));
        }
        for (i, member) in members.iter().enumerate() {
            if member.diverged_at.is_some() {
                continue;
            }
            let mut named: Vec<(String, Tensor)> = per_model
                .iter()
                .map(|(n, t)| (n.clone(), t.chunk(k, 0)[i].to_device(Device::Cpu)))
                .collect();
            named.extend(
                shared
                    .iter()
                    .map(|(n, t)| (n.clone(), t.to_device(Device::Cpu))),
            );
            checkpoint::save(
                &member.pending.run,
                &mut named,
                iteration,
                wall_s,
                &self.trained_with(member.pending.seed),
                &member.trained_by,
            )?;
        }
        Ok(())
    }

    /// Test loss, error (%) and, for gated nets, the logged gates of each replica on the
    /// evaluation images.
    fn evaluate(&self, net: &Net, k: usize) -> Result<Vec<Evaluation>> {
        let images = &self.data.eval_images;
        let labels = &self.data.eval_labels;
        let n = labels.size()[0];
        let device = self.options.device;
        let mut loss_sum = Tensor::zeros([k as i64], (Kind::Double, device));
        let mut error_sum = Tensor::zeros([k as i64], (Kind::Int64, device));
        // gated nets: [units, K], each unit's mean gate weighted by the images it saw
        let mut gate_sum = net
            .has_gates()
            .then(|| Tensor::zeros([net.num_units() as i64, k as i64], (Kind::Double, device)));
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(1000) {
                let len = (n - start).min(1000);
                let xs = images
                    .narrow(0, start, len)
                    .unsqueeze(0)
                    .expand([k as i64, len, 3, 32, 32], false);
                let ys = labels
                    .narrow(0, start, len)
                    .unsqueeze(0)
                    .expand([k as i64, len], false);
                let logits = match gate_sum.as_mut() {
                    Some(sum) => {
                        let (logits, gates) = net.forward_with_gate_means(&xs, false)?;
                        *sum += Tensor::stack(&gates, 0).to_kind(Kind::Double) * len as f64;
                        logits
                    }
                    None => net.forward_stacked(&xs, false)?,
                };
                loss_sum += per_replica_loss(&logits, &ys)?.to_kind(Kind::Double) * len as f64;
                error_sum += stacked_errors(&logits, &ys)?;
            }
            Ok(())
        })?;
        let losses = Vec::<f64>::try_from((loss_sum / n as f64).to_device(Device::Cpu))?;
        let errors = Vec::<i64>::try_from(error_sum.to_device(Device::Cpu))?;
        // [3, K]: the logged units' means
        let gates = gate_sum
            .map(|sum| {
                let units = gate_units(net.num_units()).map(|u| u as i64);
                let picked = sum.index_select(0, &Tensor::from_slice(&units).to_device(device));
                Vec::<Vec<f64>>::try_from((picked / n as f64).to_device(Device::Cpu))
            })
            .transpose()?;
        Ok((0..k)
            .map(|i| Evaluation {
                loss: losses[i],
                error: 100.0 * errors[i] as f64 / n as f64,
                gates: gates.as_ref().map(|g| [g[0][i], g[1][i], g[2][i]]),
            })
            .collect())
    }

    /// Writes `final.json`; the checkpoint is no longer needed once the run is finished.
    fn finish(
        &self,
        member: &Member,
        status: Status,
        iterations: i64,
        wall_s: f64,
        stacked_with: usize,
        sweep: &mut Sweep,
    ) -> Result<()> {
        let last = member.rows.last();
        let tested = member.rows.iter().rev().find(|r| r.test_error.is_some());
        let record = FinalRecord {
            status,
            experiment: self.experiment.name.clone(),
            profile: self.profile.name.clone(),
            variant: self.variant.name.clone(),
            seed: member.pending.seed,
            iterations,
            diverged_at_iteration: member.diverged_at,
            final_test_error: if status == Status::Diverged {
                None
            } else {
                tested.and_then(|r| r.test_error)
            },
            final_test_loss: if status == Status::Diverged {
                None
            } else {
                tested.and_then(|r| r.test_loss)
            },
            final_train_error: last.map(|r| r.train_error),
            final_train_loss: last.map(|r| r.train_loss),
            fail_above_percent: self.protocol.fail_above_percent,
            wall_s,
            data: self.fingerprint.fingerprint.clone(),
            provenance: self.provenance.clone(),
            earlier_revisions: earlier_revisions(&member.trained_by).to_vec(),
            stacked_with,
            precision: self.protocol.precision,
            finished_at_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            // written just before (save_weights), checked whenever the run is read
            weights: Some(spec::FileDigest::of(&member.pending.run.weights_path())?),
        };
        member.pending.run.write_final(&record)?;
        let _ = std::fs::remove_file(member.pending.run.checkpoint_path());
        let name = format!("{}/seed-{}", self.variant.name, member.pending.seed);
        sweep.finished.push((name, record));
        Ok(())
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

/// One line on stderr (with `--quiet`, or off a terminal, these lines replace the bars).
/// When `path` was last written, in seconds since the Unix epoch (now if it cannot be told).
fn modified_unix_s(path: &Path) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(unix_now_s, |d| d.as_secs_f64())
}

fn log(line: &str) {
    eprintln!("{line}");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::{Fingerprint, Split};
    use std::path::Path;

    const EXPERIMENT: &str = r#"
title = "test"
source = "test"
[model]
depth = 8
[[variants]]
name = "explode"
model = { shortcut = { scaling = { lambda_s = 1e30, lambda_f = 1.0 } } }
[[variants]]
name = "original"
[[variants]]
name = "dropout"
model = { shortcut = { dropout = { ratio = 0.5 } } }
[[variants]]
name = "gated"
model = { shortcut = { exclusive_gating = { gate_bias = -6.0 } } }
[profiles.tiny]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 24, lr = 0.1, lr_drops = [16], train_subset = 128, test_subset = 64 }
[profiles.gentle]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 16, lr = 0.01, lr_drops = [8], train_subset = 128, test_subset = 64 }
[profiles.steps]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64 }
[profiles.bf16]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 4, lr = 0.05, lr_drops = [2], train_subset = 128, test_subset = 32, precision = "bf16" }
[profiles.sparse]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64, eval_every_epochs = 2 }
"#;

    /// Random images whose class shifts the mean, so that there is something to learn.
    pub(crate) fn synthetic() -> Cifar10 {
        let split = |n: i64, seed: i64| {
            seeded(seed, || {
                let labels = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
                let noise = Tensor::randint(120, [n, 3, 32, 32], (Kind::Int64, Device::Cpu));
                let images = (noise + labels.view([n, 1, 1, 1]) * 12).to_kind(Kind::Uint8);
                Split { images, labels }
            })
        };
        let fingerprint = Fingerprint {
            digest: "synthetic".into(),
            files: Default::default(),
            source: "synthetic".into(),
            original: false,
        };
        Cifar10 {
            train: split(128, 1),
            test: split(64, 2),
            fingerprint,
        }
    }

    /// Trains the `original` variant; `Err` when stopped after `stop_after_steps` steps.
    fn train(
        results: &Path,
        profile: &str,
        max_replicas: usize,
        stop_after_steps: Option<i64>,
    ) -> Result<()> {
        train_variant(results, profile, "original", max_replicas, stop_after_steps)
    }

    fn train_variant(
        results: &Path,
        profile: &str,
        variant: &str,
        max_replicas: usize,
        stop_after_steps: Option<i64>,
    ) -> Result<()> {
        let run = Sweep1 {
            text: EXPERIMENT,
            data: &synthetic(),
            profile,
            variant,
            max_replicas,
            precision: None,
            revision: "test",
        };
        run.train(results, stop_after_steps)
    }

    /// One variant's seeds 0 and 1 from an experiment file's text, on given data.
    struct Sweep1<'a> {
        text: &'a str,
        data: &'a Cifar10,
        profile: &'a str,
        variant: &'a str,
        max_replicas: usize,
        /// `--precision`: instead of the profile's.
        precision: Option<Precision>,
        /// The revision the training binary records.
        revision: &'a str,
    }

    impl Sweep1<'_> {
        fn train(&self, results: &Path, stop_after_steps: Option<i64>) -> Result<()> {
            let Sweep1 {
                text,
                data,
                profile,
                variant,
                max_replicas,
                precision,
                revision,
            } = *self;
            let experiment = Experiment::parse(Path::new("experiments/test.toml"), text)?;
            let profile = experiment.profile(profile).unwrap();
            let variants = experiment
                .select_variants(profile, &[variant.to_string()])
                .unwrap();
            let options = TrainOptions {
                results: results.to_path_buf(),
                device: Device::Cpu,
                max_replicas,
                layout: SgdLayout::PerTensor,
                precision,
                quiet: true,
                stop_after_steps,
            };
            let provenance = Provenance {
                git_revision: revision.into(),
                libtorch: "test".into(),
                device: "cpu".into(),
            };
            train_experiment(
                &experiment,
                profile,
                &variants,
                &[0, 1],
                data,
                &provenance,
                &options,
            )
        }
    }

    fn run(results: &Path, variant: &str, seed: u64) -> RunDir {
        RunDir::new(results, "test", "tiny", variant, seed)
    }

    fn gentle(results: &Path, variant: &str, seed: u64) -> RunDir {
        RunDir::new(results, "test", "gentle", variant, seed)
    }

    /// The rows without their timings.
    type Numbers = (i64, i64, f64, f64, f64, Option<f64>, Option<f64>);

    fn numbers(rows: &[EpochRow]) -> Vec<Numbers> {
        rows.iter()
            .map(|r| {
                (
                    r.epoch,
                    r.iteration,
                    r.lr,
                    r.train_loss,
                    r.train_error,
                    r.test_loss,
                    r.test_error,
                )
            })
            .collect()
    }

    #[test]
    fn an_interrupted_run_resumes_to_the_numbers_of_an_uninterrupted_one() {
        let whole = tempfile::tempdir().unwrap();
        train(whole.path(), "tiny", 1, None).unwrap();
        // 8 steps per epoch, 24 in all. Stop inside epoch 2 (after step 11), then inside
        // epoch 3 (after step 19), then let it finish.
        let broken = tempfile::tempdir().unwrap();
        let err = train(broken.path(), "tiny", 1, Some(11)).unwrap_err();
        assert_eq!(
            err.downcast_ref::<Interrupted>().map(|i| i.iteration),
            Some(11),
            "{err:#}"
        );
        let interrupted = run(broken.path(), "original", 0);
        assert!(interrupted.checkpoint_path().exists());
        assert!(interrupted.finished().unwrap().is_none());
        assert_eq!(interrupted.read_epochs().unwrap().len(), 1);
        // The sweep stopped at the request: seed 1 never started, and no lock is left.
        let untouched = run(broken.path(), "original", 1);
        assert!(!untouched.epochs_path().exists());
        assert!(!untouched.dir.join("lock").exists() && !interrupted.dir.join("lock").exists());
        let err = train(broken.path(), "tiny", 1, Some(8)).unwrap_err();
        assert_eq!(
            err.downcast_ref::<Interrupted>().map(|i| i.iteration),
            Some(19)
        );
        assert_eq!(interrupted.read_epochs().unwrap().len(), 2);
        train(broken.path(), "tiny", 1, None).unwrap();
        for seed in [0, 1] {
            let a = run(whole.path(), "original", seed);
            let b = run(broken.path(), "original", seed);
            assert_eq!(
                numbers(&a.read_epochs().unwrap()),
                numbers(&b.read_epochs().unwrap())
            );
            assert_eq!(a.read_epochs().unwrap().len(), 3);
            let (fa, fb) = (
                a.finished().unwrap().unwrap(),
                b.finished().unwrap().unwrap(),
            );
            assert_eq!(fa.final_test_error, fb.final_test_error);
            assert_eq!(fa.final_test_loss, fb.final_test_loss);
            assert!(
                !b.checkpoint_path().exists(),
                "a finished run keeps no checkpoint"
            );
        }
    }

    #[test]
    fn two_stacked_seeds_match_two_lone_runs() {
        // with the dropout shortcut too: each model draws its masks from its own seed
        for variant in ["original", "dropout"] {
            let lone = tempfile::tempdir().unwrap();
            train_variant(lone.path(), "gentle", variant, 1, None).unwrap();
            let stacked = tempfile::tempdir().unwrap();
            train_variant(stacked.path(), "gentle", variant, 2, None).unwrap();
            for seed in [0, 1] {
                let a = gentle(lone.path(), variant, seed).read_epochs().unwrap();
                let b = gentle(stacked.path(), variant, seed).read_epochs().unwrap();
                assert_eq!(a.len(), 2);
                assert_eq!(a.len(), b.len());
                for (ra, rb) in a.iter().zip(&b) {
                    // Grouped and lone convolutions sum in different orders, so the numbers
                    // agree to float noise, not bit for bit; any real mismatch (other data,
                    // augmentation, init or dropout masks) would move them by percents.
                    let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1.0);
                    assert!(
                        close(ra.train_loss, rb.train_loss),
                        "{variant} seed {seed}: {ra:?} vs {rb:?}"
                    );
                    assert!(
                        close(ra.test_loss.unwrap(), rb.test_loss.unwrap()),
                        "{variant} seed {seed}: {ra:?} vs {rb:?}"
                    );
                    assert_eq!(ra.train_error, rb.train_error, "{variant} seed {seed}");
                }
                let record = gentle(stacked.path(), variant, seed)
                    .finished()
                    .unwrap()
                    .unwrap();
                assert_eq!(record.stacked_with, 2);
            }
            // The two seeds are different models.
            let s0 = gentle(lone.path(), variant, 0).read_epochs().unwrap();
            let s1 = gentle(lone.path(), variant, 1).read_epochs().unwrap();
            assert_ne!(s0[0].train_loss, s1[0].train_loss);
        }
    }

    #[test]
    fn divergence_is_recorded_and_the_sweep_goes_on_and_finished_runs_are_skipped() {
        let results = tempfile::tempdir().unwrap();
        let experiment = Experiment::parse(Path::new("experiments/test.toml"), EXPERIMENT).unwrap();
        let profile = experiment.profile("tiny").unwrap();
        let variants = experiment.select_variants(profile, &[]).unwrap();
        let options = TrainOptions {
            results: results.path().to_path_buf(),
            device: Device::Cpu,
            max_replicas: 2,
            layout: SgdLayout::Flat,
            precision: None,
            quiet: true,
            stop_after_steps: None,
        };
        let provenance = Provenance {
            git_revision: "test".into(),
            libtorch: "test".into(),
            device: "cpu".into(),
        };
        let data = synthetic();
        train_experiment(
            &experiment,
            profile,
            &variants,
            &[0, 1],
            &data,
            &provenance,
            &options,
        )
        .unwrap();
        for seed in [0, 1] {
            let exploded = run(results.path(), "explode", seed)
                .finished()
                .unwrap()
                .unwrap();
            assert_eq!(exploded.status, Status::Diverged);
            assert_eq!(exploded.diverged_at_iteration, Some(1));
            assert_eq!(exploded.final_test_error, None);
            let fine = run(results.path(), "original", seed)
                .finished()
                .unwrap()
                .unwrap();
            assert_ne!(fine.status, Status::Diverged);
            assert!(fine.final_test_error.unwrap() < 100.0);
            assert_eq!(fine.iterations, 24);
        }
        // A second sweep trains nothing: every final.json stays as it was.
        let before = std::fs::read(run(results.path(), "original", 1).final_path()).unwrap();
        let started = Instant::now();
        train_experiment(
            &experiment,
            profile,
            &variants,
            &[0, 1],
            &data,
            &provenance,
            &options,
        )
        .unwrap();
        assert_eq!(
            before,
            std::fs::read(run(results.path(), "original", 1).final_path()).unwrap()
        );
        assert!(started.elapsed().as_secs_f64() < 5.0);
    }

    /// The trained weights of a finished run, by name.
    fn weights(run: &RunDir) -> Vec<(String, Tensor)> {
        let mut named = Tensor::load_multi(run.weights_path()).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// Everything a run leaves that must not depend on interruptions: the numbers of
    /// epochs.csv, final.json without its timings, and the weights.
    fn outcome(run: &RunDir) -> (Vec<Numbers>, serde_json::Value, Vec<(String, Tensor)>) {
        let mut record = serde_json::to_value(run.finished().unwrap().unwrap()).unwrap();
        for timing in ["wall_s", "finished_at_unix_s"] {
            record.as_object_mut().unwrap().remove(timing);
        }
        (numbers(&run.read_epochs().unwrap()), record, weights(run))
    }

    fn assert_same_outcome(a: &RunDir, b: &RunDir, what: &str) {
        let (rows_a, record_a, weights_a) = outcome(a);
        let (rows_b, record_b, weights_b) = outcome(b);
        assert_eq!(rows_a, rows_b, "{what}: epochs.csv");
        assert_eq!(record_a, record_b, "{what}: final.json");
        assert_eq!(weights_a.len(), weights_b.len());
        for ((name, x), (_, y)) in weights_a.iter().zip(&weights_b) {
            assert!(x.equal(y), "{what}: weights {name} differ");
        }
    }

    /// Stops a run after every single step in turn (the stop request signals make), resumes
    /// it, and compares everything with the uninterrupted run: 4 steps per epoch, 11 in all
    /// (the last epoch is short), the lr drop inside epoch 2; evaluation every epoch and every
    /// second epoch; lone and stacked seeds.
    #[test]
    fn a_run_stopped_at_any_step_resumes_to_the_uninterrupted_numbers_and_weights() {
        for (profile, replicas) in [("steps", 1), ("sparse", 1), ("steps", 2)] {
            let whole = tempfile::tempdir().unwrap();
            train(whole.path(), profile, replicas, None).unwrap();
            let at = |results: &Path, seed| RunDir::new(results, "test", profile, "original", seed);
            assert_eq!(at(whole.path(), 0).read_epochs().unwrap().len(), 3);
            for stop in 1..11 {
                let what = format!("{profile}, {replicas} stacked, stopped after step {stop}");
                let broken = tempfile::tempdir().unwrap();
                let err = train(broken.path(), profile, replicas, Some(stop)).unwrap_err();
                assert_eq!(
                    err.downcast_ref::<Interrupted>().map(|i| i.iteration),
                    Some(stop),
                    "{what}: {err:#}"
                );
                let stopped = at(broken.path(), 0);
                let rows = stopped.read_epochs().unwrap();
                assert_eq!(
                    rows.len() as i64,
                    stop / 4,
                    "{what}: rows of whole epochs only"
                );
                train(broken.path(), profile, replicas, None).unwrap();
                for seed in [0, 1] {
                    assert_same_outcome(&at(whole.path(), seed), &at(broken.path(), seed), &what);
                    assert!(!at(broken.path(), seed).checkpoint_path().exists());
                }
            }
        }
    }

    #[test]
    fn a_run_resumed_by_another_build_records_every_revision_that_trained_it() {
        let data = synthetic();
        let by = |revision| Sweep1 {
            text: EXPERIMENT,
            data: &data,
            profile: "tiny",
            variant: "original",
            max_replicas: 1,
            precision: None,
            revision,
        };
        let trained_by = |run: &RunDir| -> Vec<String> {
            let checkpoint = Checkpoint::load(run).unwrap().expect("a checkpoint");
            checkpoint
                .trained_by
                .expect("the checkpoint records its revisions")
        };
        // 24 steps of 8 per epoch; seed 0 is stopped twice by build aaa and once by bbb,
        // then ccc finishes it and trains seed 1 from its start.
        let results = tempfile::tempdir().unwrap();
        let run0 = run(results.path(), "original", 0);
        by("aaa").train(results.path(), Some(5)).unwrap_err();
        by("aaa").train(results.path(), Some(6)).unwrap_err();
        assert_eq!(
            trained_by(&run0),
            ["aaa"],
            "a resume by the same build is no new entry"
        );
        by("bbb").train(results.path(), Some(8)).unwrap_err();
        assert_eq!(trained_by(&run0), ["aaa", "bbb"]);
        by("ccc").train(results.path(), None).unwrap();
        let record = run0.finished().unwrap().unwrap();
        assert_eq!(record.provenance.git_revision, "ccc");
        assert_eq!(record.earlier_revisions, ["aaa", "bbb"]);
        assert_eq!(record.revisions(), "aaa → bbb → ccc");
        let fresh = run(results.path(), "original", 1)
            .finished()
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                fresh.provenance.git_revision.as_str(),
                fresh.earlier_revisions.len()
            ),
            ("ccc", 0)
        );
        let json =
            std::fs::read_to_string(run(results.path(), "original", 1).final_path()).unwrap();
        assert!(!json.contains("earlier_revisions"), "{json}");

        // A checkpoint of a runner that did not record its revisions: what trained it before
        // is said to be unrecorded, not left out.
        let results = tempfile::tempdir().unwrap();
        let run0 = run(results.path(), "original", 0);
        by("aaa").train(results.path(), Some(5)).unwrap_err();
        let mut tensors = Tensor::load_multi(run0.checkpoint_path()).unwrap();
        tensors.retain(|(n, _)| n != "meta/trained_by");
        Tensor::save_multi(&tensors, run0.checkpoint_path()).unwrap();
        by("bbb").train(results.path(), None).unwrap();
        let record = run0.finished().unwrap().unwrap();
        assert_eq!(record.revisions(), "unrecorded → bbb");
    }

    #[test]
    fn a_resume_under_another_protocol_or_data_is_refused_naming_the_differences() {
        let data = synthetic();
        let sweep = |text, data| Sweep1 {
            text,
            data,
            profile: "steps",
            variant: "original",
            max_replicas: 1,
            precision: None,
            revision: "test",
        };
        let results = tempfile::tempdir().unwrap();
        sweep(EXPERIMENT, &data)
            .train(results.path(), Some(5))
            .unwrap_err();
        let stopped = RunDir::new(results.path(), "test", "steps", "original", 0);
        let config_before = std::fs::read(stopped.config_path()).unwrap();
        let changed = EXPERIMENT.replace(
            "iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64 }",
            "iterations = 11, lr = 0.07, lr_drops = [6], train_subset = 128, test_subset = 64 }",
        );
        assert_ne!(changed, EXPERIMENT);
        let err = format!(
            "{:#}",
            sweep(&changed, &data)
                .train(results.path(), None)
                .unwrap_err()
        );
        assert!(err.contains("protocol.lr: 0.05 → 0.07"), "{err}");
        assert!(
            err.contains(&format!("delete {}", stopped.dir.display())),
            "{err}"
        );
        assert!(
            !err.contains("protocol.iterations"),
            "only what differs: {err}"
        );
        // nothing was trained or rewritten
        assert_eq!(std::fs::read(stopped.config_path()).unwrap(), config_before);
        assert!(stopped.finished().unwrap().is_none());
        let mut other = synthetic();
        other.fingerprint.digest = "other".into();
        let err = format!(
            "{:#}",
            sweep(EXPERIMENT, &other)
                .train(results.path(), None)
                .unwrap_err()
        );
        assert!(err.contains("data: \"synthetic\" → \"other\""), "{err}");
        // the same setup resumes
        sweep(EXPERIMENT, &data)
            .train(results.path(), None)
            .unwrap();
        assert!(stopped.finished().unwrap().is_some());
    }

    #[test]
    fn a_checkpoint_without_its_rows_is_left_out_and_the_sweep_goes_on() {
        let results = tempfile::tempdir().unwrap();
        train(results.path(), "steps", 1, Some(6)).unwrap_err();
        let stopped = RunDir::new(results.path(), "test", "steps", "original", 0);
        std::fs::remove_file(stopped.epochs_path()).unwrap();
        let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
        assert!(err.contains("1 run(s) left out"), "{err}");
        // seed 0 is not finished (let alone `ok`), seed 1 trained regardless
        assert!(stopped.finished().unwrap().is_none());
        assert!(stopped.checkpoint_path().exists());
        let other = RunDir::new(results.path(), "test", "steps", "original", 1);
        assert!(other.finished().unwrap().is_some());
    }

    #[test]
    fn damaged_records_of_a_finished_run_are_left_out_not_retrained() {
        let results = tempfile::tempdir().unwrap();
        train(results.path(), "steps", 1, None).unwrap();
        let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
        let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
        let final0 = std::fs::read(seed0.final_path()).unwrap();
        std::fs::write(seed0.epochs_path(), "epoch,iteration\n1,oops\n").unwrap();
        std::fs::write(seed1.final_path(), "{ not json").unwrap();
        let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
        assert!(err.contains("2 run(s) left out"), "{err}");
        // neither was trained again: the damaged files are as they were
        assert_eq!(std::fs::read(seed0.final_path()).unwrap(), final0);
        assert_eq!(std::fs::read(seed1.final_path()).unwrap(), b"{ not json");
        assert!(!seed0.checkpoint_path().exists() && !seed1.checkpoint_path().exists());
    }

    /// final.json records model.ot's size and SHA-256; weights cut short afterwards make the
    /// run damaged (left out, not retrained, one line naming model.ot); absent weights (a
    /// fresh clone) leave it finished.
    #[test]
    fn weights_damaged_after_the_run_finished_are_caught_and_absent_ones_are_not_damage() {
        let results = tempfile::tempdir().unwrap();
        train(results.path(), "steps", 1, None).unwrap();
        let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
        let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
        let record = seed0.finished().unwrap().unwrap();
        let digest = record.weights.expect("final.json records the weights");
        assert_eq!(
            digest.bytes,
            std::fs::metadata(seed0.weights_path()).unwrap().len()
        );
        assert_eq!(digest.sha256.len(), 64);
        let bytes = std::fs::read(seed0.weights_path()).unwrap();
        std::fs::write(seed0.weights_path(), &bytes[..100]).unwrap();
        std::fs::remove_file(seed1.weights_path()).unwrap();
        let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
        assert!(err.contains("1 run(s) left out"), "{err}");
        // the line the sweep printed for it
        let damage = seed0.state().unwrap_err().to_string();
        assert!(
            damage.contains("model.ot is damaged: 100 bytes"),
            "{damage}"
        );
        // not trained again: the cut file is as it was
        assert_eq!(std::fs::read(seed0.weights_path()).unwrap().len(), 100);
        assert!(matches!(
            seed1.state().unwrap(),
            spec::layout::RunState::Finished { .. }
        ));
    }

    #[test]
    fn subsets_larger_than_the_data_are_refused() {
        let steps =
            "[profiles.steps]\nseeds = [0, 1]\nprotocol = { batch_size = 32, iterations = 11, \
                     lr = 0.05, lr_drops = [6], train_subset = 128,";
        let text = EXPERIMENT.replace(steps, &steps.replace("128", "129"));
        assert_ne!(text, EXPERIMENT);
        let data = synthetic();
        let sweep = Sweep1 {
            text: &text,
            data: &data,
            profile: "steps",
            variant: "original",
            max_replicas: 1,
            precision: None,
            revision: "test",
        };
        let results = tempfile::tempdir().unwrap();
        let err = format!("{:#}", sweep.train(results.path(), None).unwrap_err());
        assert!(
            err.contains("train_subset = 129, but the data has only 128"),
            "{err}"
        );
        assert!(err.contains("profile `steps`"), "{err}");
    }

    /// A gated variant logs its first, middle and last unit's mean gate at every evaluation,
    /// in `epochs.csv` and as TensorBoard scalars, the same stacked as alone; other variants
    /// log none.
    #[test]
    fn gated_variants_log_their_gates_at_every_evaluation() {
        let stacked = tempfile::tempdir().unwrap();
        let alone = tempfile::tempdir().unwrap();
        train_variant(stacked.path(), "sparse", "gated", 2, None).unwrap();
        train_variant(alone.path(), "sparse", "gated", 1, None).unwrap();
        train_variant(alone.path(), "sparse", "original", 1, None).unwrap();
        let sigma = 1.0 / (1.0 + 6f64.exp());
        for seed in [0, 1] {
            let run = |dir: &Path, variant| RunDir::new(dir, "test", "sparse", variant, seed);
            let rows = run(stacked.path(), "gated").read_epochs().unwrap();
            // 11 steps of 32 on 128 images: 3 epochs, evaluated after the 2nd and the last
            assert_eq!(rows.len(), 3);
            for row in &rows {
                assert_eq!(row.gates().is_some(), row.test_error.is_some(), "{row:?}");
            }
            let lone = run(alone.path(), "gated").read_epochs().unwrap();
            for (a, b) in rows.iter().zip(&lone) {
                match (a.gates(), b.gates()) {
                    (Some(a), Some(b)) => {
                        for (a, b) in a.iter().zip(b) {
                            // b_g = −6 starts the gates nearly closed (σ(−6) ≈ 0.0025, a
                            // little more on average with W_g x added), and 11 steps at
                            // lr ≤ 0.05 leave them so
                            assert!(*a > sigma / 2.0 && *a < 0.05, "{a}, σ(−6) = {sigma}");
                            assert!((a - b).abs() < 1e-4, "stacked {a}, alone {b}");
                        }
                    }
                    (None, None) => {}
                    other => panic!("stacked and alone differ: {other:?}"),
                }
            }
            // the event file holds the same values under gate/*
            let logged: Vec<(i64, f64)> = events(&run(stacked.path(), "gated").dir)
                .into_iter()
                .filter(|(_, tag, _)| tag == "gate/middle_unit")
                .map(|(step, _, value)| (step, value))
                .collect();
            let want: Vec<(i64, f64)> = rows
                .iter()
                .filter_map(|r| Some((r.iteration, r.gate_middle?)))
                .collect();
            assert_eq!(logged.len(), want.len());
            for ((s, v), (t, w)) in logged.iter().zip(&want) {
                assert_eq!(s, t);
                assert!((v - w).abs() < 1e-6, "event {v}, row {w}");
            }
            let plain = run(alone.path(), "original").read_epochs().unwrap();
            assert!(plain.iter().all(|r| r.gates().is_none()));
            assert!(plain.iter().any(|r| r.test_error.is_some()));
        }
    }

    /// (step, tag, value) of every scalar in `dir`'s event files, as the independent reader
    /// (scripts/read-tfevents.py, written from the format's description) finds them.
    fn events(dir: &Path) -> Vec<(i64, String, f64)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/read-tfevents.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["scalars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_i64().unwrap(),
                    s["tag"].as_str().unwrap().to_string(),
                    s["value"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    /// Every epoch's scalars, once each, at its iteration: after an uninterrupted run and
    /// after stops inside an epoch, at an epoch's end, and a crash that left an event past
    /// the checkpoint.
    #[test]
    fn tensorboard_events_hold_every_epoch_once_also_after_stops_and_resumes() {
        let expected = |run: &RunDir| {
            let mut want = Vec::new();
            for row in run.read_epochs().unwrap() {
                let mut scalars = vec![
                    ("train/loss", row.train_loss),
                    ("train/error", row.train_error),
                    ("train/lr", row.lr),
                ];
                if let (Some(l), Some(e)) = (row.test_loss, row.test_error) {
                    scalars.extend([("test/loss", l), ("test/error", e)]);
                }
                want.extend(
                    scalars
                        .into_iter()
                        .map(|(t, v)| (row.iteration, t.to_string(), v)),
                );
            }
            want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            want
        };
        let check = |run: &RunDir, what: &str| {
            // images/s is a timing: present once per epoch, its value not compared
            let found: Vec<_> = events(&run.dir)
                .into_iter()
                .filter(|(_, tag, _)| tag != "train/images_per_s")
                .collect();
            let want = expected(run);
            assert_eq!(found.len(), want.len(), "{what}: {found:?}");
            for (f, w) in found.iter().zip(&want) {
                assert_eq!((f.0, &f.1), (w.0, &w.1), "{what}");
                assert!(
                    (f.2 - w.2).abs() <= 1e-6 * w.2.abs().max(1.0),
                    "{what}: {f:?} vs {w:?}"
                );
            }
            let speeds = events(&run.dir)
                .iter()
                .filter(|(_, tag, _)| tag == "train/images_per_s")
                .count();
            assert_eq!(speeds, run.read_epochs().unwrap().len(), "{what}");
        };
        let whole = tempfile::tempdir().unwrap();
        train(whole.path(), "sparse", 1, None).unwrap();
        let at = |results: &Path| RunDir::new(results, "test", "sparse", "original", 0);
        check(&at(whole.path()), "uninterrupted");
        assert_eq!(
            expected(&at(whole.path())).len(),
            3 * 3 + 2 * 2,
            "3 epochs, 2 evaluated"
        );

        // stops inside epoch 2 (step 6) and at the end of epoch 2 (step 8)
        let broken = tempfile::tempdir().unwrap();
        train(broken.path(), "sparse", 1, Some(6)).unwrap_err();
        train(broken.path(), "sparse", 1, Some(2)).unwrap_err();
        train(broken.path(), "sparse", 1, None).unwrap();
        check(&at(broken.path()), "stopped twice");

        // a crash after epoch 2's row and event, before its checkpoint: the resume trains
        // epoch 2 again from the checkpoint of epoch 1 and must not log it twice
        let crashed = tempfile::tempdir().unwrap();
        train(crashed.path(), "sparse", 1, Some(4)).unwrap_err(); // checkpoint after epoch 1
        let run = at(crashed.path());
        let checkpoint = std::fs::read(run.checkpoint_path()).unwrap();
        train(crashed.path(), "sparse", 1, Some(4)).unwrap_err(); // epoch 2: row, event, checkpoint
        std::fs::write(run.checkpoint_path(), checkpoint).unwrap(); // as if killed before it
        train(crashed.path(), "sparse", 1, None).unwrap();
        check(&run, "crashed before a checkpoint");
        assert_eq!(
            numbers(&run.read_epochs().unwrap()),
            numbers(&at(whole.path()).read_epochs().unwrap())
        );

        // the event files are derived from epochs.csv: an interrupted run whose files were
        // deleted gets its earlier epochs back when it resumes
        let lost = tempfile::tempdir().unwrap();
        train(lost.path(), "sparse", 1, Some(6)).unwrap_err();
        let run = at(lost.path());
        let delete_events = |run: &RunDir| {
            for entry in std::fs::read_dir(&run.dir).unwrap() {
                let path = entry.unwrap().path();
                if path.to_string_lossy().contains("tfevents") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        };
        delete_events(&run);
        train(lost.path(), "sparse", 1, None).unwrap();
        check(&run, "resumed after its events were deleted");
        // and a finished run gets them back when a sweep skips it, deleted or cut short
        delete_events(&run);
        train(lost.path(), "sparse", 1, None).unwrap();
        check(&run, "finished, events deleted");
        for entry in std::fs::read_dir(&run.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("tfevents") {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
        train(lost.path(), "sparse", 1, None).unwrap();
        check(&run, "finished, events cut in half");
    }

    /// The precision trained with is in config.toml and final.json: the profile's, or the one
    /// `--precision` asked for instead.
    #[test]
    fn the_precision_of_a_run_is_in_its_records() {
        let data = synthetic();
        // (bf16 is slow on a CPU without bf16 units: one short epoch)
        for (profile, precision, expected) in [
            ("bf16", None, Precision::Bf16),
            ("bf16", Some(Precision::Fp32), Precision::Fp32),
        ] {
            let results = tempfile::tempdir().unwrap();
            let sweep = Sweep1 {
                text: EXPERIMENT,
                data: &data,
                profile,
                variant: "original",
                max_replicas: 2,
                precision,
                revision: "test",
            };
            sweep.train(results.path(), None).unwrap();
            for seed in [0, 1] {
                let run = RunDir::new(results.path(), "test", profile, "original", seed);
                let record = run.finished().unwrap().unwrap();
                assert_eq!(record.precision, expected, "{profile} {precision:?}");
                assert_ne!(record.status, Status::Diverged);
                let config = run.read_config().unwrap().unwrap();
                assert_eq!(config.protocol.precision, expected);
                let text = std::fs::read_to_string(run.config_path()).unwrap();
                let word = format!("precision = \"{}\"", format!("{expected:?}").to_lowercase());
                assert!(text.contains(&word), "{text}");
            }
        }
    }
}
