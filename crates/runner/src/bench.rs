//! `runner bench`: training throughput with synthetic data on the device.
//!
//! One training step is what `runner train` does per iteration, minus the data pipeline: a
//! stacked forward in train mode, the summed per-model loss, backward and the SGD update.

use std::time::Instant;

use anyhow::Result;
use models::{per_replica_loss, NetConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::optim::{LossScaler, Precision, Sgd, SgdLayout};

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub model: String,
    pub device: String,
    pub replicas: i64,
    pub batch_per_model: i64,
    pub layout: SgdLayout,
    pub precision: Precision,
    pub steps: usize,
    pub seconds: f64,
    /// Training images per second over all replicas.
    pub images_per_s: f64,
}

/// Untimed steps before the timed ones (allocator, kernel selection).
const WARMUP_STEPS: usize = 5;

/// What to measure, beyond the network.
#[derive(Debug, Clone, Copy)]
pub struct BenchCase {
    pub replicas: i64,
    pub batch: i64,
    pub layout: SgdLayout,
    pub precision: Precision,
}

/// Times `steps` training steps (after a few untimed ones) of `config`.
pub fn measure(
    name: &str,
    config: &NetConfig,
    case: BenchCase,
    device: Device,
    steps: usize,
) -> Result<BenchResult> {
    let BenchCase {
        replicas,
        batch,
        layout,
        precision,
    } = case;
    let fp16 = precision == Precision::Fp16;
    let mut scaler = fp16.then(|| LossScaler::new(device));
    let vs = VarStore::new(device);
    let net = config.with_replicas(replicas).build(&vs.root())?;
    let mut sgd = Sgd::new(&vs, 0.9, 1e-4, layout);
    let (h, w) = config.default_input_size();
    // [K, B, 3, H, W] and [K, B]
    let xs = Tensor::randn([replicas, batch, 3, h, w], (Kind::Float, device));
    let ys = Tensor::randint(config.num_classes, [replicas, batch], (Kind::Int64, device));
    let mut step = || -> Result<()> {
        let logits = tch::autocast(fp16, || net.forward_stacked(&xs, true))?.to_kind(Kind::Float);
        let loss = per_replica_loss(&logits, &ys)?.sum(Kind::Float);
        sgd.step_with(&loss, 0.1, scaler.as_mut());
        Ok(())
    };
    for _ in 0..WARMUP_STEPS {
        step()?;
    }
    sync(device);
    let start = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    sync(device);
    let seconds = start.elapsed().as_secs_f64();
    Ok(BenchResult {
        model: name.to_string(),
        device: format!("{device:?}"),
        replicas,
        batch_per_model: batch,
        layout,
        precision,
        steps,
        seconds,
        images_per_s: (replicas * batch) as f64 * steps as f64 / seconds,
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
