//! Training: every (variant, seed) of an experiment's profile, seeds of one variant stacked as
//! replicas of one network, each run resumable and never redone once finished.
//!
//! The loop reads as the protocol does: for each epoch, the steps ([`Job::train_epoch`]),
//! then the epoch's accounting, evaluation and records ([`Job::record_epoch`]), then the
//! checkpoint. A stop request (a signal) finishes the step it lands in; inside an epoch it
//! writes a mid-epoch checkpoint, in an epoch's last step it lets the epoch end as usual first.
//! Either way the run resumes to the numbers an uninterrupted run would have given.
//!
//! The files, in the protocol's order:
//! - `mod.rs` (here): the options, the stop signals, and the sweep over variants and seeds;
//! - `claim.rs`: claiming a run: finished or damaged ones skipped, the others locked and
//!   resumed from their checkpoints;
//! - `group.rs`: a group of seeds stacked as one network, and its epoch loop;
//! - `epoch.rs`: the steps of an epoch, and the evaluation;
//! - `records.rs`: an epoch's records: rows, events, weights and `final.json`;
//! - `tests.rs`: the tests, and the synthetic data other modules' tests train on.
//!
//! The checkpoint's format (its save and restore) is [`crate::checkpoint`]'s; the stacked
//! network and its training step are [`crate::step`]'s.

mod claim;
mod epoch;
mod group;
mod records;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use anyhow::{bail, Context, Result};
use models::{NetConfig, NetConfigExt as _};
use spec::layout::Damaged;
use spec::{Experiment, FinalRecord, Profile, Protocol, Provenance, RunConfig, Status, Variant};
use tch::Device;

use crate::batches::DeviceData;
use crate::checkpoint::TrainedWith;
use crate::data::Cifar10;
use crate::optim::{Precision, SgdLayout};

use claim::Pending;

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

/// [`Interrupted`] at `iteration` when a stop was requested: for the points between steps
/// (loading, building, waiting on children) where nothing new needs a checkpoint.
pub fn stop_if_requested(iteration: i64) -> Result<()> {
    if stop_requested() {
        return Err(Interrupted { iteration }.into());
    }
    Ok(())
}

/// Training stopped on request after writing its checkpoint; running it again resumes.
#[derive(Debug, thiserror::Error)]
#[error("stopped on request at iteration {iteration}; checkpoints written, run again to resume")]
pub struct Interrupted {
    pub iteration: i64,
}

/// The exit status of an interrupted run (EX_TEMPFAIL): the Slurm script requeues on it.
pub const EXIT_INTERRUPTED: i32 = 75;

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
    /// Of those, `variant/seed-n` of runs whose network, by its recorded parameter count, is
    /// not the one this build makes of the same configuration.
    other_network: Vec<String>,
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
                record.diverged_at_iteration.unwrap_or(record.iterations)
            ));
        }
        for damaged in &self.damaged {
            log(&format!("  {damaged}"));
        }
        if !self.other_network.is_empty() {
            log(&format!(
                "  {} of the finished runs trained another network than this build makes of \
                 their configuration (see above): {}",
                self.other_network.len(),
                self.other_network.join(", ")
            ));
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
        let protocol = crate::step::protocol(
            experiment,
            variant,
            profile,
            options.precision,
            options.device,
        )?;
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

impl Job<'_> {
    /// Trainable parameters of one model of this network (not the stack), as `final.json`
    /// records them.
    fn parameters(&self) -> Result<i64> {
        Ok(self.config.with_replicas(1).summary()?.params_total)
    }

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
            bn_relu: Some(models::fused::bn_relu_on(self.options.device)),
        }
    }

    fn steps_per_epoch(&self) -> i64 {
        self.data.steps_per_epoch(self.protocol.batch_size)
    }
}

/// One line on stderr (with `--quiet`, or off a terminal, these lines replace the bars).
fn log(line: &str) {
    eprintln!("{line}");
}
