//! How long a sweep would take here, said before it starts: the work left (from each run's
//! records), timed on this device with a few steps of the first network to train, scaled by
//! multiply-adds for the others. On a CPU, a sweep that would take days names the
//! experiment's reduced-scale reproductions (its `cpu…` profiles) as the way to see the
//! comparison on this machine, each with its whole cost here and what of it is already
//! trained; the sweep asked for still trains.

use std::path::Path;

use anyhow::Result;
use models::{NetConfig, NetConfigExt};
use spec::layout::RunState;
use spec::{Experiment, Profile, Protocol, RunDir, Variant};
use tch::Device;

use crate::bench::{self, BenchCase};
use crate::optim::SgdLayout;

/// Images in the evaluation set of a protocol (the CIFAR-10 test set unless it says otherwise).
fn eval_images(protocol: &Protocol) -> i64 {
    let (_, all) = protocol.split.sizes(50_000, 10_000);
    protocol.test_subset.map_or(all, |n| n.min(all))
}

/// The work left in one variant: its network, protocol, and per unfinished run the
/// iterations still to train.
struct Left {
    config: NetConfig,
    protocol: Protocol,
    iterations: Vec<i64>,
}

/// The work left of `variants` × `seeds` of `profile` in `results` (a run's progress is its
/// last row; a finished run has none left), or all of it when `results` is `None`.
fn work_left(
    experiment: &Experiment,
    profile: &Profile,
    variants: &[&Variant],
    seeds: &[u64],
    results: Option<&Path>,
) -> Result<Vec<Left>> {
    let mut left = Vec::new();
    for variant in variants {
        let protocol = experiment.protocol(variant, profile)?;
        let iterations = seeds
            .iter()
            .filter_map(|&seed| {
                let Some(results) = results else {
                    return Some(protocol.iterations);
                };
                let run = RunDir::new(
                    results,
                    &experiment.name,
                    &profile.name,
                    &variant.name,
                    seed,
                );
                match run.state() {
                    Ok(RunState::Unfinished { epochs, .. }) => {
                        let done = epochs.last().map_or(0, |r| r.iteration);
                        Some(protocol.iterations - done)
                    }
                    _ => None,
                }
            })
            .collect::<Vec<_>>();
        if !iterations.is_empty() {
            left.push(Left {
                config: experiment.net_config(variant, profile)?,
                protocol,
                iterations,
            });
        }
    }
    Ok(left)
}

/// Seconds to train `left` at `per_mac_image_s` seconds per image and multiply-add, with an
/// evaluation (a forward pass, about a third of a step's cost) each evaluated epoch.
fn seconds(left: &[Left], per_mac_image_s: f64) -> Result<f64> {
    let mut total = 0.0;
    for l in left {
        let macs = l.config.summary()?.macs as f64;
        let epoch = 50_000 / l.protocol.batch_size;
        for &iterations in &l.iterations {
            let images = (iterations * l.protocol.batch_size) as f64;
            let epochs = (iterations + epoch - 1) / epoch;
            let every = l.protocol.eval_every_epochs;
            let evaluations = ((epochs + every - 1) / every) as f64;
            let evaluated = evaluations * eval_images(&l.protocol) as f64 / 3.0;
            total += (images + evaluated) * macs * per_mac_image_s;
        }
    }
    Ok(total)
}

/// What to train, where, and how much of it there is.
pub struct Sweep<'a> {
    pub experiment: &'a Experiment,
    pub profile: &'a Profile,
    pub variants: &'a [&'a Variant],
    pub seeds: &'a [u64],
    pub results: &'a Path,
    pub device: Device,
    pub replicas: usize,
    pub layout: SgdLayout,
    /// `--precision`, instead of the profile's.
    pub precision: Option<spec::Precision>,
    /// The memory estimate, said after the time estimate.
    pub memory: &'a str,
}

/// Times a few steps of the first network with work left and says how long the sweep (and,
/// on a CPU, the experiment's reduced-scale profiles) would take here. Says nothing when nothing is
/// left to train.
pub fn announce(sweep: &Sweep) -> Result<()> {
    let left = work_left(
        sweep.experiment,
        sweep.profile,
        sweep.variants,
        sweep.seeds,
        Some(sweep.results),
    )?;
    let Some(first) = left.first() else {
        return Ok(());
    };
    let case = BenchCase {
        replicas: sweep.replicas.min(first.iterations.len()).max(1) as i64,
        batch: first.protocol.batch_size,
        layout: sweep.layout,
        memory_format: models::MemoryFormat::preferred(sweep.device),
        precision: sweep.precision.unwrap_or(first.protocol.precision),
        bn_relu: models::fused::bn_relu(),
    };
    let cases = [(sweep.variants[0].name.clone(), first.config.clone(), case)];
    let timed = bench::measure(&cases, sweep.device, 2, 1)?;
    let per_image_s = 1.0 / timed[0].images_per_s;
    let per_mac_image_s = per_image_s / first.config.summary()?.macs as f64;
    let runs: usize = left.iter().map(|l| l.iterations.len()).sum();
    let iterations: i64 = left.iter().flat_map(|l| &l.iterations).sum();
    let total = seconds(&left, per_mac_image_s)?;
    eprintln!(
        "estimate: {runs} run(s) to train, {iterations} iterations; {} depth-{} steps timed \
         here at {:.0} img/s → about {} on this machine",
        first.protocol.batch_size,
        first.config.depth,
        timed[0].images_per_s,
        spec::human_seconds(total)
    );
    if !sweep.memory.is_empty() {
        eprintln!("estimate: {}", sweep.memory);
    }
    if sweep.device == Device::Cpu && total > 86_400.0 {
        let reduced = reduced_profiles(
            sweep.experiment,
            &sweep.profile.name,
            sweep.results,
            per_mac_image_s,
        )?;
        if !reduced.is_empty() {
            eprintln!(
                "estimate: on this machine, the reduced-scale reproductions of the same \
                 comparison:"
            );
            for line in reduced {
                eprintln!("estimate:   {line}");
            }
            eprintln!(
                "estimate: training profile `{}` as asked.",
                sweep.profile.name
            );
        }
    }
    Ok(())
}

/// The experiment's reduced-scale CPU profiles (those named `cpu…`: `cpu`, `cpu-long`) other
/// than `asked`, one line each: its whole cost at `per_mac_image_s` seconds per image and
/// multiply-add, and what of it `results` already holds, with the command that trains the
/// rest or shows what is there.
fn reduced_profiles(
    experiment: &Experiment,
    asked: &str,
    results: &Path,
    per_mac_image_s: f64,
) -> Result<Vec<String>> {
    let name = &experiment.name;
    let mut lines = Vec::new();
    for profile in experiment.profiles.values() {
        if !profile.name.starts_with("cpu") || profile.name == asked {
            continue;
        }
        let p = &profile.name;
        let variants = experiment.variants_of(profile);
        let whole = work_left(experiment, profile, &variants, &profile.seeds, None)?;
        let left = work_left(
            experiment,
            profile,
            &variants,
            &profile.seeds,
            Some(results),
        )?;
        let runs: usize = whole.iter().map(|l| l.iterations.len()).sum();
        let finished = variants
            .iter()
            .flat_map(|v| {
                profile
                    .seeds
                    .iter()
                    .map(move |&seed| RunDir::new(results, name, p, &v.name, seed))
            })
            .filter(|run| matches!(run.state(), Ok(RunState::Finished { .. })))
            .count();
        let cost = format!(
            "profile `{p}` ({runs} runs, about {} here)",
            spec::human_seconds(seconds(&whole, per_mac_image_s)?)
        );
        lines.push(if finished == runs {
            format!(
                "{cost}: all finished, in {}; `just report {name} {p}` shows them",
                spec::profile_dir(results, name, p).display()
            )
        } else if finished > 0 {
            format!(
                "{cost}: {finished} finished, about {} left: just ablate {name} {p}",
                spec::human_seconds(seconds(&left, per_mac_image_s)?)
            )
        } else {
            format!("{cost}: just ablate {name} {p}")
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPERIMENT: &str = r#"
title = "t"
source = "t"
[model]
depth = 8
[[variants]]
name = "a"
[[variants]]
name = "b"
[profiles.paper]
seeds = [0, 1]
protocol = { batch_size = 100, iterations = 100000, lr = 0.1, lr_drops = [] }
[profiles.cpu]
seeds = [0]
protocol = { batch_size = 100, iterations = 500, lr = 0.1, lr_drops = [] }
[profiles.cpu-long]
seeds = [0, 1]
protocol = { batch_size = 100, iterations = 1000, lr = 0.1, lr_drops = [] }
[profiles.smoke]
seeds = [0]
protocol = { batch_size = 100, iterations = 10, lr = 0.1, lr_drops = [] }
"#;

    /// A finished run of `profile`, `variant`, `seed` in `results` (as `RunDir::state` reads it).
    fn finish(results: &Path, profile: &str, variant: &str, seed: u64, iterations: i64) {
        let run = RunDir::new(results, "t", profile, variant, seed);
        std::fs::create_dir_all(&run.dir).unwrap();
        let row = spec::EpochRow {
            epoch: 1,
            iteration: iterations,
            lr: 0.1,
            train_loss: 1.0,
            train_error: 30.0,
            test_loss: Some(1.0),
            test_error: Some(30.0),
            wall_s: 1.0,
            images_per_s: 1.0,
            gate_first: None,
            gate_middle: None,
            gate_last: None,
        };
        run.write_epochs(&[row]).unwrap();
        let record = serde_json::json!({"status": "ok", "experiment": "t", "profile": profile,
            "variant": variant, "seed": seed, "iterations": iterations,
            "diverged_at_iteration": null, "final_test_error": 30.0, "final_test_loss": 1.0,
            "final_train_error": 30.0, "final_train_loss": 1.0, "fail_above_percent": 20.0,
            "wall_s": 1.0, "data": {"digest": "d", "files": {}, "source": "s", "original": false},
            "git_revision": "r", "libtorch": "l", "device": "cpu", "stacked_with": 1,
            "finished_at_unix_s": 0});
        run.write_final(&serde_json::from_value(record).unwrap())
            .unwrap();
    }

    /// Before a sweep of days, each reduced profile with its whole cost here, and whether its
    /// results are there already: today's, not "0 s" for a profile with nothing left.
    #[test]
    fn a_long_sweep_names_every_reduced_profile_its_whole_cost_and_what_is_there() {
        let experiment = Experiment::parse(Path::new("experiments/t.toml"), EXPERIMENT).unwrap();
        let results = tempfile::tempdir().unwrap();
        let macs = NetConfig::cifar(8).summary().unwrap().macs as f64;
        // one image through depth 8 in 1 ms: cpu (2 runs of 500 steps of 100 images, 1
        // evaluation each) takes 2 × (50,000 + 10,000 / 3) images = 106.7 s ≈ 2 min,
        // cpu-long (4 runs of 1000 steps, 2 evaluations each) 4 × 106,667 images = 7.1 min
        let per_mac = 1e-3 / macs;
        let lines = reduced_profiles(&experiment, "paper", results.path(), per_mac).unwrap();
        assert_eq!(
            lines,
            [
                "profile `cpu` (2 runs, about 2 min here): just ablate t cpu",
                "profile `cpu-long` (4 runs, about 7 min here): just ablate t cpu-long",
            ]
        );
        for variant in ["a", "b"] {
            finish(results.path(), "cpu", variant, 0, 500);
        }
        finish(results.path(), "cpu-long", "a", 1, 1000);
        let lines = reduced_profiles(&experiment, "paper", results.path(), per_mac).unwrap();
        let cpu_dir = results.path().join("t/cpu");
        assert_eq!(
            lines,
            [
                format!(
                    "profile `cpu` (2 runs, about 2 min here): all finished, in {}; \
                     `just report t cpu` shows them",
                    cpu_dir.display()
                ),
                "profile `cpu-long` (4 runs, about 7 min here): 1 finished, about 5 min left: \
                 just ablate t cpu-long"
                    .to_string(),
            ]
        );
        // the profile asked for is not offered as its own alternative
        let lines = reduced_profiles(&experiment, "cpu", results.path(), per_mac).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("profile `cpu-long`"), "{lines:?}");
    }

    /// The estimate's arithmetic: images trained plus a third of each evaluation, times the
    /// multiply-adds of each network.
    #[test]
    fn seconds_count_training_and_evaluation_per_multiply_add() {
        let protocol: Protocol =
            toml::from_str("batch_size = 100\niterations = 1000\nlr = 0.1\nlr_drops = [500]")
                .unwrap();
        let config = NetConfig::cifar(20);
        let macs = config.summary().unwrap().macs as f64;
        let left = [Left {
            config,
            protocol,
            iterations: vec![1000, 500],
        }];
        // 1000 iterations: 100k images, 2 epochs of 500 steps → 2 evaluations of 10k images
        // (a third of a step each); 500 iterations: 50k images, 1 evaluation
        let images = 100_000.0 + 2.0 * 10_000.0 / 3.0 + 50_000.0 + 10_000.0 / 3.0;
        let s = seconds(&left, 1e-9).unwrap();
        assert!((s - images * macs * 1e-9).abs() < 1e-6 * s, "{s}");
    }
}
