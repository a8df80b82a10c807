//! How long a sweep would take here, said before it starts: the work left (from each run's
//! records), timed on this device with a few steps of the first network to train, scaled by
//! multiply-adds for the others. On a CPU, a sweep that would take days names the
//! experiment's `cpu` profile, a reduced-scale reproduction, as the way to see the comparison
//! on this machine; the sweep asked for still trains.

use anyhow::Result;
use models::{NetConfig, NetConfigExt};
use spec::layout::RunState;
use spec::{Experiment, Profile, Protocol, RunDir, Variant};
use tch::Device;

use crate::bench::{self, BenchCase};
use crate::optim::SgdLayout;

/// Images in the evaluation set of a protocol (the CIFAR-10 test set unless it says otherwise).
fn eval_images(protocol: &Protocol) -> i64 {
    let all = match protocol.split {
        spec::protocol::SplitKind::Full => 10_000,
        spec::protocol::SplitKind::Holdout5k => 5_000,
    };
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
/// last row; a finished run has none left).
fn work_left(
    experiment: &Experiment,
    profile: &Profile,
    variants: &[&Variant],
    seeds: &[u64],
    results: &std::path::Path,
) -> Result<Vec<Left>> {
    let mut left = Vec::new();
    for variant in variants {
        let protocol = experiment.protocol(variant, profile)?;
        let iterations = seeds
            .iter()
            .filter_map(|&seed| {
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

/// `1.5 h`, `3.2 days`, ...
pub fn human(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.0} min", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

/// What to train, where, and how much of it there is.
pub struct Sweep<'a> {
    pub experiment: &'a Experiment,
    pub profile: &'a Profile,
    pub variants: &'a [&'a Variant],
    pub seeds: &'a [u64],
    pub results: &'a std::path::Path,
    pub device: Device,
    pub replicas: usize,
    pub layout: SgdLayout,
    /// `--precision`, instead of the profile's.
    pub precision: Option<spec::Precision>,
}

/// Times a few steps of the first network with work left and says how long the sweep (and,
/// on a CPU, the experiment's `cpu` profile) would take here. Says nothing when nothing is
/// left to train.
pub fn announce(sweep: &Sweep) -> Result<()> {
    let left = work_left(
        sweep.experiment,
        sweep.profile,
        sweep.variants,
        sweep.seeds,
        sweep.results,
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
        human(total)
    );
    let cpu = sweep.experiment.profiles.get("cpu");
    if let Some(cpu) = cpu.filter(|c| c.name != sweep.profile.name) {
        if sweep.device == Device::Cpu && total > 86_400.0 {
            let variants = sweep.experiment.variants_of(cpu);
            let cpu_left = work_left(sweep.experiment, cpu, &variants, &cpu.seeds, sweep.results)?;
            eprintln!(
                "estimate: on this machine, profile `cpu` (a reduced-scale reproduction of the \
                 same comparison) takes about {}: just ablate {} cpu. Training profile `{}` \
                 as asked.",
                human(seconds(&cpu_left, per_mac_image_s)?),
                sweep.experiment.name,
                sweep.profile.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(human(42.0), "42 s");
        assert_eq!(human(600.0), "10 min");
        assert_eq!(human(3.0 * 3600.0), "3.0 h");
        assert_eq!(human(10.0 * 86_400.0), "10.0 days");
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
