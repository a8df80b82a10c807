//! The steps of an epoch (one batch per seed each, in each seed's own order) and the
//! evaluation of every model of the stack on the evaluation images.

use std::time::Instant;

use anyhow::Result;
use models::{per_replica_loss, stacked_errors, Net};
use spec::gate_units;
use tch::{Device, Kind, Tensor};

use super::group::{Group, Steps, Tally};
use super::{stop_requested, Job};
use crate::checkpoint::EpochSoFar;

/// What one evaluation found for one model.
pub(super) struct Evaluation {
    /// Mean loss over the evaluation images.
    pub(super) loss: f64,
    /// Error in %.
    pub(super) error: f64,
    /// Gated nets: the mean gate of the logged units ([`gate_units`]: first, middle, last).
    pub(super) gates: Option<[f64; 3]>,
}

impl Job<'_> {
    /// The steps of `epoch` from where `partial` left off (its start when `None`); stops
    /// early when a stop is requested (a signal, or the test budget running out).
    pub(super) fn train_epoch(
        &self,
        group: &mut Group,
        epoch: i64,
        partial: Option<EpochSoFar>,
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
        let so_far = partial.unwrap_or_else(|| EpochSoFar {
            losses: Vec::new(),
            errors: Tensor::zeros([stack.k()], (Kind::Int64, device)),
        });
        let mut tally = Tally {
            so_far,
            timed_steps: 0,
            started: Instant::now(),
        };
        for iteration in first + tally.so_far.losses.len() as i64..last {
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
            tally.so_far.losses.push(losses.detach());
            tally.so_far.errors += stacked_errors(&logits.detach(), &ys)?;
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

    /// Test loss, error (%) and, for gated nets, the logged gates of each replica on the
    /// evaluation images.
    pub(super) fn evaluate(&self, net: &Net, k: usize) -> Result<Vec<Evaluation>> {
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
}
