//! One training step, the same for a sweep's runs and for the gradient measurement: the
//! stacked network of a group of seeds, and the step that trains it on one batch per seed —
//! forward with each seed's own dropout stream (fp16 autocast where the precision asks),
//! per-replica cross-entropy, and the SGD update (with the loss scaler in fp16).

use anyhow::Result;
use models::{per_replica_loss, Net, NetConfig, NetConfigExt};
use spec::{Experiment, Profile, Protocol, Variant};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::batches::{derived_seed, seeded, Stream};
use crate::optim::{LossScaler, Precision, Sgd, SgdLayout};

/// The protocol `variant` trains with in `profile`: the file's, with `precision` (the
/// `--precision` flag) instead of its own, checked against `device`
/// ([`crate::optim::check_precision`]); a warning about it is said on stderr.
pub fn protocol(
    experiment: &Experiment,
    variant: &Variant,
    profile: &Profile,
    precision: Option<Precision>,
    device: Device,
) -> Result<Protocol> {
    let mut protocol = experiment.protocol(variant, profile)?;
    if let Some(precision) = precision {
        protocol.precision = precision;
    }
    if let Some(warning) = crate::optim::check_precision(protocol.precision, device)? {
        eprintln!("{}: {warning}", variant.name);
    }
    Ok(protocol)
}

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

/// K seeds' networks trained as one: the stacked weights, the optimizer and, in fp16, the
/// loss scales.
pub struct Stack {
    pub seeds: Vec<u64>,
    pub vs: VarStore,
    pub net: Net,
    pub sgd: Sgd,
    pub scaler: Option<LossScaler>,
    precision: Precision,
}

impl Stack {
    /// The stacked network of `seeds` (each replica initialised as a lone run of its seed),
    /// in the protocol's precision, and its optimizer.
    pub fn new(
        config: &NetConfig,
        seeds: &[u64],
        protocol: &Protocol,
        device: Device,
        layout: SgdLayout,
    ) -> Result<Stack> {
        let (vs, mut net) = build_stacked(config, seeds, device)?;
        crate::optim::set_precision(&mut net, protocol.precision);
        let sgd = Sgd::new(&vs, protocol.momentum, protocol.weight_decay, layout);
        let scaler = (protocol.precision == Precision::Fp16)
            .then(|| LossScaler::new(device, seeds.len() as i64));
        Ok(Stack {
            seeds: seeds.to_vec(),
            vs,
            net,
            sgd,
            scaler,
            precision: protocol.precision,
        })
    }

    /// The number of replicas.
    pub fn k(&self) -> i64 {
        self.seeds.len() as i64
    }

    /// One step at `iteration` and learning rate `lr` on `xs` `[K, B, 3, H, W]` with labels
    /// `ys` `[K, B]`; returns the logits `[K, B, classes]` (fp32) and the losses `[K]`.
    pub fn step(
        &mut self,
        xs: &Tensor,
        ys: &Tensor,
        iteration: i64,
        lr: f64,
    ) -> Result<(Tensor, Tensor)> {
        // each model's dropout masks from its own seed, as in a lone run
        let forward_seeds: Vec<i64> = self
            .seeds
            .iter()
            .map(|&s| derived_seed(s, Stream::Forward, iteration as u64))
            .collect();
        let fp16 = crate::optim::autocast_fp16(self.precision);
        let net = &self.net;
        let logits = seeded(forward_seeds[0], || {
            tch::autocast(fp16, || {
                net.forward_stacked_seeded(xs, true, &forward_seeds)
            })
        })?
        .to_kind(Kind::Float);
        let losses = per_replica_loss(&logits, ys)?;
        self.sgd.step_with(&losses, lr, self.scaler.as_mut())?;
        Ok((logits, losses))
    }
}
