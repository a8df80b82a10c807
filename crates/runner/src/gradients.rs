//! Experiments of kind `gradients`: ‖∂E/∂x_l‖ for every residual unit l, at initialisation and
//! after the profile's iterations of training (Identity Mappings, eqs. 4–8: with identity
//! shortcuts the gradient reaches every unit undiminished; with λ-scaled shortcuts it carries
//! a product of λ's and falls geometrically toward the input).
//!
//! Writes `results/<experiment>/<profile>/<variant>/norms.csv` with columns
//! `seed,iteration,unit,norm` (unit l counts from 1 at the input side), and beside it
//! `provenance.json`: the network, protocol, data fingerprint, revision, libtorch and device.

use anyhow::{Context, Result};
use models::{per_replica_loss, unit_grad_norms, Net};
use tch::{Device, Kind, Tensor};

use crate::batches::{derived_seed, seeded, DeviceData, Stream};
use crate::data::Cifar10;
use crate::step::Stack;
use crate::train::TrainOptions;
use spec::{
    write_atomic, Experiment, GradientRecord, NormRow, Profile, Provenance, Variant, VariantDir,
};

/// Measures every selected variant that has no `norms.csv` yet.
pub fn run(
    experiment: &Experiment,
    profile: &Profile,
    variants: &[&Variant],
    seeds: &[u64],
    data: &Cifar10,
    provenance: &Provenance,
    options: &TrainOptions,
) -> Result<()> {
    for variant in variants {
        let variant_started = std::time::Instant::now();
        let files = VariantDir::new(
            &options.results,
            &experiment.name,
            &profile.name,
            &variant.name,
        );
        let (dir, out) = (&files.dir, files.norms_path());
        if out.exists() {
            eprintln!("{}: {} exists, skipped", variant.name, out.display());
            continue;
        }
        let config = experiment.net_config(variant, profile)?;
        let protocol = crate::step::protocol(
            experiment,
            variant,
            profile,
            options.precision,
            options.device,
        )?;
        let device_data = DeviceData::new(&data.train, &data.test, &protocol, options.device);
        let mut rows = Vec::new();
        for &seed in seeds {
            let started = std::time::Instant::now();
            // A lone model, initialised and trained as `train` trains it.
            let mut stack =
                Stack::new(&config, &[seed], &protocol, options.device, options.layout)?;

            // The probe batch: the first batch of the run, fixed for both measurements.
            let order = device_data.epoch_order(seed, 0);
            let (probe_x, probe_y) =
                device_data.batch(&order.narrow(0, 0, protocol.batch_size), seed, 0);
            let mut record = |iteration: i64, net: &Net| -> Result<()> {
                let norms = unit_norms(net, &probe_x, &probe_y, seed, iteration)?;
                rows.extend(norms.iter().zip(1..).map(|(&norm, unit)| NormRow {
                    seed,
                    iteration,
                    unit,
                    norm,
                }));
                Ok(())
            };
            record(0, &stack.net)?;
            let steps_per_epoch = device_data.steps_per_epoch(protocol.batch_size);
            let mut order = order;
            for iteration in 0..protocol.iterations {
                let epoch = iteration / steps_per_epoch;
                if iteration > 0 && iteration % steps_per_epoch == 0 {
                    order = device_data.epoch_order(seed, epoch);
                }
                let offset = (iteration % steps_per_epoch) * protocol.batch_size;
                let (xs, ys) = device_data.batch(
                    &order.narrow(0, offset, protocol.batch_size),
                    seed,
                    iteration,
                );
                let _trained = stack.step(
                    &xs.unsqueeze(0),
                    &ys.unsqueeze(0),
                    iteration,
                    protocol.lr_at(iteration),
                )?;
            }
            record(protocol.iterations, &stack.net)?;
            eprintln!(
                "{}/seed-{seed}: {} units, measured at 0 and {} iterations ({:.1} s)",
                variant.name,
                stack.net.num_units(),
                protocol.iterations,
                started.elapsed().as_secs_f64()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let record = GradientRecord {
            experiment: experiment.name.clone(),
            profile: profile.name.clone(),
            variant: variant.name.clone(),
            seeds: seeds.to_vec(),
            model: config.clone(),
            protocol: protocol.clone(),
            data: data.fingerprint.clone(),
            provenance: provenance.clone(),
            wall_s: variant_started.elapsed().as_secs_f64(),
        };
        write_atomic(
            &files.provenance_path(),
            &serde_json::to_vec_pretty(&record)?,
        )?;
        // norms.csv last: its presence marks the measurement done.
        files.write_norms(&rows)?;
    }
    Ok(())
}

/// ‖∂E/∂x_l‖ per unit for one batch, E the batch's mean cross-entropy (BN in training mode,
/// as during training).
fn unit_norms(net: &Net, xs: &Tensor, ys: &Tensor, seed: u64, iteration: i64) -> Result<Vec<f64>> {
    let (logits, inputs) = seeded(
        derived_seed(seed, Stream::Forward, iteration as u64),
        || net.forward_with_unit_inputs(&xs.unsqueeze(0), true),
    )?;
    let loss = per_replica_loss(&logits.to_kind(Kind::Float), &ys.unsqueeze(0))?.sum(Kind::Float);
    let norms = unit_grad_norms(&loss, &inputs, 1, false)?; // [L, 1]
    Ok(Vec::<f64>::try_from(
        norms.to_device(Device::Cpu).view([-1]),
    )?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::optim::{Precision, SgdLayout};

    const EXPERIMENT: &str = r#"
kind = "gradients"
title = "t"
source = "t"
[model]
depth = 8
[[variants]]
name = "identity"
[profiles.tiny]
seeds = [0]
protocol = { batch_size = 16, iterations = 3, lr = 0.1, lr_drops = [], train_subset = 64, test_subset = 16 }
"#;

    /// The norms a measurement writes, and the precision its provenance records.
    fn measure(results: &Path, precision: Option<Precision>) -> (String, String) {
        let experiment = Experiment::parse(Path::new("experiments/t.toml"), EXPERIMENT).unwrap();
        let profile = experiment.profile("tiny").unwrap();
        let variants = experiment.select_variants(profile, &[]).unwrap();
        let options = TrainOptions {
            results: results.to_path_buf(),
            device: Device::Cpu,
            max_replicas: 1,
            layout: SgdLayout::PerTensor,
            precision,
            quiet: true,
            stop_after_steps: None,
        };
        let provenance = Provenance {
            git_revision: "test".into(),
            libtorch: "test".into(),
            device: "cpu".into(),
        };
        let data = crate::train::tests::synthetic();
        run(
            &experiment,
            profile,
            &variants,
            &[0],
            &data,
            &provenance,
            &options,
        )
        .unwrap();
        let files = VariantDir::new(results, "t", "tiny", "identity");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(files.provenance_path()).unwrap()).unwrap();
        (
            std::fs::read_to_string(files.norms_path()).unwrap(),
            record["protocol"]["precision"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// The gradient measurement trains with the step of `train`, so `--precision` is honoured
    /// there too: bf16 gives other norms than fp32 and is what the provenance records.
    #[test]
    fn gradients_are_measured_in_the_precision_asked_for() {
        let (fp32, bf16) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (fp32_norms, fp32_precision) = measure(fp32.path(), None);
        let (bf16_norms, bf16_precision) = measure(bf16.path(), Some(Precision::Bf16));
        assert_eq!(fp32_precision, "fp32");
        assert_eq!(bf16_precision, "bf16");
        // seed, iteration, unit, norm: 3 units at iterations 0 and 3
        assert_eq!(fp32_norms.lines().count(), 1 + 2 * 3, "{fp32_norms}");
        assert_eq!(bf16_norms.lines().count(), fp32_norms.lines().count());
        assert_ne!(bf16_norms, fp32_norms);
    }
}
