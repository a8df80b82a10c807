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
use crate::optim::Sgd;
use crate::train::{build_stacked, Provenance, TrainOptions};
use spec::{write_atomic, Experiment, GradientRecord, Profile, Variant, VariantDir};

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
        let protocol = experiment.protocol(variant, profile)?;
        let device_data = DeviceData::new(&data.train, &data.test, &protocol, options.device);
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["seed", "iteration", "unit", "norm"])?;
        for &seed in seeds {
            let started = std::time::Instant::now();
            // A lone model, initialised as `train` initialises it.
            let (vs, net) = build_stacked(&config, &[seed], options.device)?;
            let mut sgd = Sgd::new(
                &vs,
                protocol.momentum,
                protocol.weight_decay,
                options.layout,
            );

            // The probe batch: the first batch of the run, fixed for both measurements.
            let order = device_data.epoch_order(seed, 0);
            let (probe_x, probe_y) =
                device_data.batch(&order.narrow(0, 0, protocol.batch_size), seed, 0);
            let mut record = |iteration: i64, net: &Net| -> Result<()> {
                let norms = unit_norms(net, &probe_x, &probe_y, seed, iteration)?;
                for (unit, norm) in norms.iter().enumerate() {
                    csv.write_record([
                        seed.to_string(),
                        iteration.to_string(),
                        (unit + 1).to_string(),
                        norm.to_string(),
                    ])?;
                }
                Ok(())
            };
            record(0, &net)?;
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
                let logits = seeded(
                    derived_seed(seed, Stream::Forward, iteration as u64),
                    || net.forward_stacked(&xs.unsqueeze(0), true),
                )?;
                let loss = per_replica_loss(&logits, &ys.unsqueeze(0))?.sum(Kind::Float);
                sgd.step(&loss, protocol.lr_at(iteration));
            }
            record(protocol.iterations, &net)?;
            eprintln!(
                "{}/seed-{seed}: {} units, measured at 0 and {} iterations ({:.1} s)",
                variant.name,
                net.num_units(),
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
            git_revision: provenance.git_revision.clone(),
            libtorch: provenance.libtorch.clone(),
            device: provenance.device.clone(),
            wall_s: variant_started.elapsed().as_secs_f64(),
        };
        write_atomic(
            &files.provenance_path(),
            &serde_json::to_vec_pretty(&record)?,
        )?;
        // norms.csv last: its presence marks the measurement done.
        write_atomic(&out, &csv.into_inner().context("csv buffer")?)?;
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
    let loss = per_replica_loss(&logits, &ys.unsqueeze(0))?.sum(Kind::Float);
    let norms = unit_grad_norms(&loss, &inputs, 1, false)?; // [L, 1]
    Ok(Vec::<f64>::try_from(
        norms.to_device(Device::Cpu).view([-1]),
    )?)
}
