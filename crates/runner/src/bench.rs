//! `runner bench`: training throughput with synthetic data on the device.
//!
//! One training step is what `runner train` does per iteration, minus the data pipeline: a
//! stacked forward in train mode, the summed per-model loss, backward and the SGD update.
//!
//! Cases are measured side by side: every case is built first, then timed in rounds, each
//! round running every case for the same number of steps in turn. A machine whose speed
//! drifts (a shared host, turbo, thermal limits) then shifts all cases alike, and the median
//! over rounds ignores the odd disturbed round.

use std::time::Instant;

use anyhow::Result;
use models::fused::BnRelu;
use models::{per_replica_loss, MemoryFormat, Net, NetConfig, NetConfigExt};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::optim::{LossScaler, Precision, Sgd, SgdLayout};

/// One case's measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub model: String,
    pub device: String,
    pub replicas: i64,
    pub batch_per_model: i64,
    pub layout: SgdLayout,
    pub memory_format: MemoryFormat,
    pub precision: Precision,
    pub bn_relu: BnRelu,
    /// Timed steps per round.
    pub steps: usize,
    /// Seconds of each round.
    pub round_seconds: Vec<f64>,
    /// Training images per second over all replicas: the median round.
    pub images_per_s: f64,
    /// The slowest and the fastest round.
    pub images_per_s_min: f64,
    pub images_per_s_max: f64,
}

/// Untimed steps before the timed ones (allocator, kernel selection).
const WARMUP_STEPS: usize = 5;

/// What to measure, beyond the network.
#[derive(Debug, Clone, Copy)]
pub struct BenchCase {
    pub replicas: i64,
    pub batch: i64,
    pub layout: SgdLayout,
    pub memory_format: MemoryFormat,
    pub precision: Precision,
    /// BN–ReLU fused or as separate ops (on the CPU while training; else always separate).
    pub bn_relu: BnRelu,
}

/// A case ready to step: its own network, optimizer and batch.
struct Trial {
    name: String,
    case: BenchCase,
    // keeps the variables alive
    _vs: VarStore,
    net: Net,
    sgd: Sgd,
    scaler: Option<LossScaler>,
    xs: Tensor,
    ys: Tensor,
}

impl Trial {
    fn new(name: &str, config: &NetConfig, case: BenchCase, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let mut net = config.with_replicas(case.replicas).build(&vs.root())?;
        net.set_memory_format(case.memory_format);
        crate::optim::set_precision(&mut net, case.precision);
        let sgd = Sgd::new(&vs, 0.9, 1e-4, case.layout);
        let (h, w) = config.default_input_size();
        Ok(Self {
            name: name.to_string(),
            case,
            scaler: (case.precision == Precision::Fp16)
                .then(|| LossScaler::new(device, case.replicas)),
            // [K, B, 3, H, W] and [K, B]
            xs: Tensor::randn([case.replicas, case.batch, 3, h, w], (Kind::Float, device)),
            ys: Tensor::randint(
                config.num_classes,
                [case.replicas, case.batch],
                (Kind::Int64, device),
            ),
            _vs: vs,
            net,
            sgd,
        })
    }

    fn step(&mut self) -> Result<()> {
        models::fused::set_bn_relu(self.case.bn_relu);
        let fp16 = crate::optim::autocast_fp16(self.case.precision);
        let logits =
            tch::autocast(fp16, || self.net.forward_stacked(&self.xs, true))?.to_kind(Kind::Float);
        let losses = per_replica_loss(&logits, &self.ys)?;
        self.sgd.step_with(&losses, 0.1, self.scaler.as_mut())
    }
}

/// Times `cases` (name, network, case) side by side on `device`: `rounds` rounds of `steps`
/// steps each, after a few untimed steps per case. Results in the order given.
pub fn measure(
    cases: &[(String, NetConfig, BenchCase)],
    device: Device,
    steps: usize,
    rounds: usize,
) -> Result<Vec<BenchResult>> {
    anyhow::ensure!(
        steps > 0 && rounds > 0,
        "bench needs at least one step and one round"
    );
    let mut trials = cases
        .iter()
        .map(|(name, config, case)| Trial::new(name, config, *case, device))
        .collect::<Result<Vec<_>>>()?;
    for trial in &mut trials {
        for _ in 0..WARMUP_STEPS {
            trial.step()?;
        }
    }
    let mut seconds = vec![Vec::with_capacity(rounds); trials.len()];
    for _ in 0..rounds {
        for (trial, times) in trials.iter_mut().zip(&mut seconds) {
            sync(device);
            let start = Instant::now();
            for _ in 0..steps {
                trial.step()?;
            }
            sync(device);
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(trials
        .iter()
        .zip(seconds)
        .map(|(trial, round_seconds)| {
            let c = trial.case;
            let images = (c.replicas * c.batch) as f64 * steps as f64;
            let mut rates: Vec<f64> = round_seconds.iter().map(|s| images / s).collect();
            rates.sort_by(f64::total_cmp);
            BenchResult {
                model: trial.name.clone(),
                device: crate::device::device_name(device),
                replicas: c.replicas,
                batch_per_model: c.batch,
                layout: c.layout,
                memory_format: c.memory_format,
                precision: c.precision,
                bn_relu: c.bn_relu,
                steps,
                round_seconds,
                images_per_s: median(&rates),
                images_per_s_min: rates[0],
                images_per_s_max: rates[rates.len() - 1],
            }
        })
        .collect())
}

/// The middle value of a sorted, non-empty slice (the mean of the two middle ones for an
/// even length).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&[1.0]), 1.0);
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
    }

    #[test]
    fn every_case_is_timed_every_round() {
        let config = NetConfig::from_name("resnet8").expect("resnet8 is in the catalogue");
        let case = |memory_format| BenchCase {
            replicas: 2,
            batch: 4,
            layout: SgdLayout::PerTensor,
            memory_format,
            precision: Precision::Fp32,
            bn_relu: BnRelu::Fused,
        };
        let cases = vec![
            (
                "a".to_string(),
                config.clone(),
                case(MemoryFormat::Contiguous),
            ),
            ("b".to_string(), config, case(MemoryFormat::ChannelsLast)),
        ];
        let results = measure(&cases, Device::Cpu, 2, 3).unwrap();
        assert_eq!(results.len(), 2);
        for (r, name) in results.iter().zip(["a", "b"]) {
            assert_eq!(r.model, name);
            assert_eq!(r.round_seconds.len(), 3);
            assert!(r.round_seconds.iter().all(|&s| s > 0.0));
            assert!(r.images_per_s_min <= r.images_per_s && r.images_per_s <= r.images_per_s_max);
        }
        assert_eq!(results[1].memory_format, MemoryFormat::ChannelsLast);
    }
}
