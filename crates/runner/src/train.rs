//! Training: every (variant, seed) of an experiment's profile, seeds of one variant stacked as
//! replicas of one network, each run resumable and never redone once finished.
//!
//! The loop is plain: epoch → batches → step → evaluate → append a CSV row → checkpoint.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use models::{per_replica_loss, stack_var_stores, stacked_errors, Net, NetConfig, NetConfigExt};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::batches::{derived_seed, seeded, DeviceData, Stream};
use crate::data::Cifar10;
use crate::optim::{LossScaler, Precision, Sgd, SgdLayout};
use spec::{
    write_atomic, EpochRow, Experiment, FinalRecord, Profile, Protocol, RunConfig, RunDir, RunLock,
    Status, Variant,
};

/// How to train, beyond what the experiment file says.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub results: PathBuf,
    pub device: Device,
    /// At most this many seeds of one variant in one stacked network.
    pub max_replicas: usize,
    pub layout: SgdLayout,
    /// fp32, or fp16 autocast with loss scaling (CUDA only).
    pub precision: Precision,
    /// No progress bars: one log line per epoch instead.
    pub quiet: bool,
    /// No progress bars: one log line per epoch instead.    /// Stop (as if signalled) after this many steps in this process; for tests.
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
/// weights are the same on every device), stacked into one network on `device`.
pub fn build_stacked(config: &NetConfig, seeds: &[u64], device: Device) -> Result<(VarStore, Net)> {
    let singles: Vec<VarStore> = seeds
        .iter()
        .map(|&seed| {
            let vs = VarStore::new(Device::Cpu);
            seeded(derived_seed(seed, Stream::Init, 0), || {
                config.build(&vs.root())
            })?;
            Ok(vs)
        })
        .collect::<Result<_>>()?;
    let mut vs = VarStore::new(device);
    // Its random initial values are overwritten by the stack, but drawing them still uses the
    // global generator: under the lock, or they would shift another thread's seeded draws.
    let stacked = config.with_replicas(seeds.len() as i64);
    let net = seeded(derived_seed(seeds[0], Stream::Init, 1), || {
        stacked.build(&vs.root())
    })?;
    stack_var_stores(&singles.iter().collect::<Vec<_>>(), &mut vs)?;
    Ok((vs, net))
}

/// What a run records about where it ran.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub git_revision: String,
    pub libtorch: String,
    pub device: String,
}

/// The source revision of this binary: `git describe` of the tree it was built from, with
/// `-dirty` when that tree had uncommitted changes; `unknown` where there is no git tree.
pub fn git_revision() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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

/// Trains every selected (variant, seed) of `profile` that has no `final.json` yet.
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
    for variant in variants {
        if let Some(paper) = variant.paper {
            log(&format!("{}: the paper reports {paper}", variant.name));
        }
        let config = experiment.net_config(variant, profile)?;
        let protocol = experiment.protocol(variant, profile)?;
        let device_data = DeviceData::new(&data.train, &data.test, &protocol, options.device);
        let mut pending = Vec::new();
        for &seed in seeds {
            let run = RunDir::new(
                &options.results,
                &experiment.name,
                &profile.name,
                &variant.name,
                seed,
            );
            if let Some(done) = run.finished()? {
                log(&format!(
                    "{}/seed-{seed}: finished ({:?}), skipped",
                    variant.name, done.status
                ));
                continue;
            }
            let lock = run.lock()?;
            let checkpoint = Checkpoint::load(&run)?;
            pending.push(Pending {
                seed,
                run,
                _lock: lock,
                checkpoint,
            });
        }
        // Seeds resume together only from the same point; each group trains as one stack.
        // Interrupted runs first (the furthest along first): finish what was started.
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(p.checkpoint.as_ref().map(|c| c.iteration)),
                p.seed,
            )
        });
        while !pending.is_empty() {
            let start = pending[0].checkpoint.as_ref().map(|c| c.iteration);
            let take = pending
                .iter()
                .take(options.max_replicas.max(1))
                .take_while(|p| p.checkpoint.as_ref().map(|c| c.iteration) == start)
                .count();
            let group: Vec<Pending> = pending.drain(..take).collect();
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
            job.run(group)?;
        }
    }
    Ok(())
}

/// A seed to train: its folder, its lock, and where it left off.
struct Pending {
    seed: u64,
    run: RunDir,
    _lock: RunLock,
    checkpoint: Option<Checkpoint>,
}

/// Weights, momentum and progress of one model after an epoch.
struct Checkpoint {
    iteration: i64,
    wall_s: f64,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    fn load(run: &RunDir) -> Result<Option<Self>> {
        let path = run.checkpoint_path();
        if !path.exists() {
            return Ok(None);
        }
        let tensors: HashMap<String, Tensor> = Tensor::load_multi(&path)
            .with_context(|| format!("cannot read the checkpoint {}", path.display()))?
            .into_iter()
            .collect();
        let scalar = |name: &str| {
            tensors
                .get(name)
                .map(|t| t.double_value(&[]))
                .with_context(|| format!("{} lacks {name}", path.display()))
        };
        Ok(Some(Self {
            iteration: scalar("meta/iteration")? as i64,
            wall_s: scalar("meta/wall_s")?,
            tensors,
        }))
    }
}

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

/// Per-model state of a stack during training.
struct Member {
    pending: Pending,
    rows: Vec<EpochRow>,
    /// Set when this model's loss stopped being finite.
    diverged_at: Option<i64>,
}

impl Job<'_> {
    fn run(&self, group: Vec<Pending>) -> Result<()> {
        let protocol = self.protocol;
        let k = group.len();
        let device = self.options.device;
        let seeds: Vec<u64> = group.iter().map(|p| p.seed).collect();
        let (vs, net) = build_stacked(self.config, &seeds, device)?;
        let mut sgd = Sgd::new(
            &vs,
            protocol.momentum,
            protocol.weight_decay,
            self.options.layout,
        );
        let fp16 = self.options.precision == Precision::Fp16;
        let mut scaler = fp16.then(|| LossScaler::new(device, k as i64));

        let steps_per_epoch = self.data.steps_per_epoch(protocol.batch_size);
        if steps_per_epoch < 1 {
            bail!(
                "the training set is smaller than one batch of {}",
                protocol.batch_size
            );
        }
        // Where the group starts: all members share the checkpoint iteration (or none). A
        // checkpoint may fall inside an epoch (written on a stop request); it then carries
        // that epoch's per-step losses and error counts so far.
        let (start_iteration, prior_wall) = match &group[0].checkpoint {
            Some(c) => (c.iteration, c.wall_s),
            None => (0, 0.0),
        };
        let start_epoch = start_iteration / steps_per_epoch;
        let mut partial = None;
        if start_iteration > 0 {
            partial = self.restore(&vs, &mut sgd, scaler.as_mut(), &group)?;
        }
        let mut members = Vec::with_capacity(k);
        for pending in group {
            let mut rows = pending.run.read_epochs()?;
            rows.retain(|r| r.epoch <= start_epoch);
            let run_config = RunConfig {
                experiment: self.experiment.name.clone(),
                profile: self.profile.name.clone(),
                variant: self.variant.name.clone(),
                seed: pending.seed,
                model: self.config.clone(),
                protocol: protocol.clone(),
            };
            write_atomic(
                &pending.run.config_path(),
                toml::to_string(&run_config)?.as_bytes(),
            )?;
            members.push(Member {
                pending,
                rows,
                diverged_at: None,
            });
        }

        let total_epochs = (protocol.iterations + steps_per_epoch - 1) / steps_per_epoch;
        let label = format!(
            "{}/{} seeds {:?}",
            self.profile.name, self.variant.name, seeds
        );
        let bar = self.progress_bar(&label, protocol.iterations, start_iteration);
        let started = Instant::now();
        let mut steps_here = 0;
        for epoch in start_epoch..total_epochs {
            let epoch_start = Instant::now();
            let first = epoch * steps_per_epoch;
            let last = ((epoch + 1) * steps_per_epoch).min(protocol.iterations);
            let orders: Vec<Tensor> = seeds
                .iter()
                .map(|&s| self.data.epoch_order(s, epoch))
                .collect();
            // Per step [K] losses and per model error counts of this epoch (so far).
            let (mut step_losses, mut errors): (Vec<Tensor>, Tensor) = match partial.take() {
                Some((losses, errors)) => (losses, errors),
                None => (Vec::new(), Tensor::zeros([k as i64], (Kind::Int64, device))),
            };
            let resume_at = first + step_losses.len() as i64;
            for iteration in resume_at..last {
                let offset = (iteration - first) * protocol.batch_size;
                let (images, labels): (Vec<Tensor>, Vec<Tensor>) = seeds
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
                                                    // each model's dropout masks from its own seed, as in a lone run
                let forward_seeds: Vec<i64> = seeds
                    .iter()
                    .map(|&s| derived_seed(s, Stream::Forward, iteration as u64))
                    .collect();
                let logits = seeded(forward_seeds[0], || {
                    tch::autocast(fp16, || {
                        net.forward_stacked_seeded(&xs, true, &forward_seeds)
                    })
                })?
                .to_kind(Kind::Float); // [K, B, 10]
                let losses = per_replica_loss(&logits, &ys)?; // [K]
                sgd.step_with(&losses, protocol.lr_at(iteration), scaler.as_mut())?;
                step_losses.push(losses.detach());
                errors += stacked_errors(&logits.detach(), &ys)?;
                bar.inc(1);
                steps_here += 1;
                let stop = STOP.load(Ordering::Relaxed)
                    || self
                        .options
                        .stop_after_steps
                        .is_some_and(|n| steps_here >= n);
                if stop && iteration + 1 < protocol.iterations {
                    let wall_s = prior_wall + started.elapsed().as_secs_f64();
                    // [K, s] so that each model's slice is a row.
                    let partial = [
                        ("partial/losses".to_string(), Tensor::stack(&step_losses, 1)),
                        ("partial/errors".to_string(), errors.shallow_clone()),
                    ];
                    self.checkpoint(
                        &vs,
                        &sgd,
                        scaler.as_ref(),
                        &partial,
                        &members,
                        iteration + 1,
                        wall_s,
                    )?;
                    bar.finish_and_clear();
                    return Err(Interrupted {
                        iteration: iteration + 1,
                    }
                    .into());
                }
            }

            // Per model: mean training loss and error, and the first non-finite loss if any.
            let steps = step_losses.len();
            let losses = Vec::<f64>::try_from(
                Tensor::stack(&step_losses, 0)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu)
                    .view([-1]),
            )?;
            let errors = Vec::<i64>::try_from(errors.to_device(Device::Cpu))?;
            // the copies above waited for the device: training time only, before evaluation
            let images_per_s = ((last - resume_at) * protocol.batch_size) as f64
                / epoch_start.elapsed().as_secs_f64();
            let evaluate =
                (epoch + 1) % protocol.eval_every_epochs == 0 || last == protocol.iterations;
            let test = if evaluate {
                Some(self.evaluate(&net, k)?)
            } else {
                None
            };
            let wall_s = prior_wall + started.elapsed().as_secs_f64();
            for (i, member) in members.iter_mut().enumerate() {
                if member.diverged_at.is_some() {
                    continue;
                }
                let own: Vec<f64> = (0..steps).map(|s| losses[s * k + i]).collect();
                if let Some(bad) = own.iter().position(|l| !l.is_finite()) {
                    member.diverged_at = Some(first + bad as i64 + 1);
                }
                let (test_loss, test_error) = match &test {
                    Some(t) => (Some(t[i].0), Some(t[i].1)),
                    None => (None, None),
                };
                member.rows.push(EpochRow {
                    epoch: epoch + 1,
                    iteration: last,
                    lr: protocol.lr_at(last - 1),
                    train_loss: own.iter().sum::<f64>() / steps as f64,
                    train_error: 100.0 * errors[i] as f64
                        / (steps as i64 * protocol.batch_size) as f64,
                    test_loss,
                    test_error,
                    wall_s,
                    images_per_s,
                });
                member.pending.run.write_epochs(&member.rows)?;
                if let Some(at) = member.diverged_at {
                    self.finish(member, Status::Diverged, at, wall_s, k)?;
                }
            }
            let live: Vec<&Member> = members.iter().filter(|m| m.diverged_at.is_none()).collect();
            if let Some(row) = live.first().and_then(|m| m.rows.last()) {
                let msg = format!(
                    "epoch {}/{total_epochs} loss {:.3} train {:.2}% test {} {:.0} img/s",
                    epoch + 1,
                    row.train_loss,
                    row.train_error,
                    row.test_error
                        .map(|e| format!("{e:.2}%"))
                        .unwrap_or_else(|| "-".into()),
                    images_per_s * k as f64
                );
                self.report(&bar, &label, &msg);
            }
            if live.is_empty() {
                break;
            }
            if last == protocol.iterations {
                for member in members.iter_mut().filter(|m| m.diverged_at.is_none()) {
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
                    self.finish(member, status, last, wall_s, k)?;
                }
                break;
            }
            self.checkpoint(&vs, &sgd, scaler.as_ref(), &[], &members, last, wall_s)?;
            if STOP.load(Ordering::Relaxed) {
                bar.finish_and_clear();
                return Err(Interrupted { iteration: last }.into());
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Loads each member's checkpoint into its slice of the stacked weights and momentum, and
    /// returns the interrupted epoch's per-step losses ([K] each) and error counts ([K]) when
    /// the checkpoint fell inside an epoch.
    fn restore(
        &self,
        vs: &VarStore,
        sgd: &mut Sgd,
        scaler: Option<&mut LossScaler>,
        group: &[Pending],
    ) -> Result<Option<(Vec<Tensor>, Tensor)>> {
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
            for (name, mut var) in vs.variables() {
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
        for (name, _) in sgd.state() {
            let tensor = if name.starts_with("momentum/") {
                joined(&name)?
            } else {
                parts[0][&name].shallow_clone()
            };
            state.insert(name, tensor);
        }
        sgd.load_state(&state)?;
        // each model's own loss scale (a run checkpointed in fp32 keeps the initial scales)
        if let Some(scaler) = scaler {
            if parts.iter().all(|t| t.contains_key("amp/scale")) {
                let state: HashMap<String, Tensor> = ["amp/scale", "amp/growth_tracker"]
                    .into_iter()
                    .map(|name| Ok((name.to_string(), joined(name)?)))
                    .collect::<Result<_>>()?;
                scaler.load_state(&state)?;
            }
        }
        if !parts[0].contains_key("partial/losses") {
            return Ok(None);
        }
        let losses = joined("partial/losses")?; // [K, s]
        let errors = joined("partial/errors")?; // [K]
        Ok(Some((losses.unbind(1), errors)))
    }

    /// Writes each live member's slice of the weights, momentum and `partial` (tensors with the
    /// models along dim 0), with the shared optimizer state and the progress.
    #[allow(clippy::too_many_arguments)]
    fn checkpoint(
        &self,
        vs: &VarStore,
        sgd: &Sgd,
        scaler: Option<&LossScaler>,
        partial: &[(String, Tensor)],
        members: &[Member],
        iteration: i64,
        wall_s: f64,
    ) -> Result<()> {
        let k = members.len() as i64;
        let variables = vs.variables();
        let mut shared: Vec<(String, Tensor)> = Vec::new();
        let mut per_model: Vec<(String, Tensor)> = variables
            .iter()
            .map(|(n, t)| (format!("model/{n}"), t.shallow_clone()))
            .collect();
        for (name, tensor) in sgd
            .state()
            .into_iter()
            .chain(scaler.into_iter().flat_map(LossScaler::state))
        {
            // Momentum and loss scales are per model like the weights; the step marker is shared.
            if name.starts_with("momentum/") || name.starts_with("amp/") {
                per_model.push((name, tensor));
            } else {
                shared.push((name, tensor));
            }
        }
        per_model.extend(partial.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
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
            named.push(("meta/iteration".into(), Tensor::from(iteration)));
            named.push(("meta/wall_s".into(), Tensor::from(wall_s)));
            let path = member.pending.run.checkpoint_path();
            let tmp = path.with_extension("ot.tmp");
            Tensor::save_multi(&named, &tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Test loss and error (%) of each replica on the evaluation images.
    fn evaluate(&self, net: &Net, k: usize) -> Result<Vec<(f64, f64)>> {
        let images = &self.data.eval_images;
        let labels = &self.data.eval_labels;
        let n = labels.size()[0];
        let device = self.options.device;
        let mut loss_sum = Tensor::zeros([k as i64], (Kind::Double, device));
        let mut error_sum = Tensor::zeros([k as i64], (Kind::Int64, device));
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
                let logits = net.forward_stacked(&xs, false)?;
                loss_sum += per_replica_loss(&logits, &ys)?.to_kind(Kind::Double) * len as f64;
                error_sum += stacked_errors(&logits, &ys)?;
            }
            Ok(())
        })?;
        let losses = Vec::<f64>::try_from((loss_sum / n as f64).to_device(Device::Cpu))?;
        let errors = Vec::<i64>::try_from(error_sum.to_device(Device::Cpu))?;
        Ok(losses
            .into_iter()
            .zip(errors)
            .map(|(l, e)| (l, 100.0 * e as f64 / n as f64))
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
            git_revision: self.provenance.git_revision.clone(),
            libtorch: self.provenance.libtorch.clone(),
            device: self.provenance.device.clone(),
            stacked_with,
            precision: self.options.precision,
            finished_at_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        member.pending.run.write_final(&record)?;
        let _ = std::fs::remove_file(member.pending.run.checkpoint_path());
        Ok(())
    }

    fn progress_bar(&self, label: &str, total: i64, done: i64) -> ProgressBar {
        if self.options.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} it {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.set_position(done as u64);
        bar
    }

    /// The epoch's summary: on the bar when there is one, else one log line.
    fn report(&self, bar: &ProgressBar, label: &str, msg: &str) {
        if bar.is_hidden() {
            log(&format!("{label}: {msg}"));
        } else {
            bar.set_message(msg.to_string());
        }
    }
}

/// One line on stderr (with `--quiet`, or off a terminal, these lines replace the bars).
fn log(line: &str) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
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
[profiles.tiny]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 24, lr = 0.1, lr_drops = [16], train_subset = 128, test_subset = 64 }
[profiles.gentle]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 16, lr = 0.01, lr_drops = [8], train_subset = 128, test_subset = 64 }
"#;

    /// Random images whose class shifts the mean, so that there is something to learn.
    fn synthetic() -> Cifar10 {
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
        let experiment = Experiment::parse(Path::new("experiments/test.toml"), EXPERIMENT).unwrap();
        let profile = experiment.profile(profile).unwrap();
        let variants = experiment.select_variants(&[variant.to_string()]).unwrap();
        let options = TrainOptions {
            results: results.to_path_buf(),
            device: Device::Cpu,
            max_replicas,
            layout: SgdLayout::PerTensor,
            precision: Precision::Fp32,
            quiet: true,
            stop_after_steps,
        };
        let provenance = Provenance {
            git_revision: "test".into(),
            libtorch: "test".into(),
            device: "cpu".into(),
        };
        train_experiment(
            &experiment,
            profile,
            &variants,
            &[0, 1],
            &synthetic(),
            &provenance,
            &options,
        )
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
        let variants = experiment.select_variants(&[]).unwrap();
        let options = TrainOptions {
            results: results.path().to_path_buf(),
            device: Device::Cpu,
            max_replicas: 2,
            layout: SgdLayout::Flat,
            precision: Precision::Fp32,
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
}
