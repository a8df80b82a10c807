//! SGD with momentum and weight decay, as PyTorch's `torch.optim.SGD` computes it:
//! `d = g + wd·p;  b = m·b + d;  p = p − lr·b` (the first step takes `b = d`).
//!
//! Two layouts give the same numbers element for element:
//! - [`SgdLayout::PerTensor`]: a few ops per parameter tensor. Fewer copies; the CPU default.
//! - [`SgdLayout::Flat`]: every parameter becomes a view of one flat tensor and the update is a
//!   handful of ops over all of it. On a GPU, where a ResNet-110 step would otherwise launch
//!   over a thousand tiny kernels for the update, this is markedly faster.
//!
//! Gradients are taken with `Tensor::run_backward` for exactly the trainable parameters, so no
//! `.grad` fields accumulate. The momentum buffers are named after their parameters for
//! checkpoints, in either layout.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

use crate::checkpoint::names;

/// How the parameters and their momentum are laid out in memory.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SgdLayout {
    PerTensor,
    Flat,
}

impl SgdLayout {
    /// The faster layout on `device`, by measurement: flat on CUDA, per tensor on the CPU.
    pub fn for_device(device: tch::Device) -> Self {
        if device.is_cuda() {
            Self::Flat
        } else {
            Self::PerTensor
        }
    }
}

/// SGD state over the trainable variables of one `VarStore`.
pub struct Sgd {
    names: Vec<String>,
    params: Vec<Tensor>,
    momentum: Vec<Tensor>,
    flat: Option<Flat>,
    started: bool,
    pub momentum_factor: f64,
    pub weight_decay: f64,
}

/// The flat layout: all parameters (and all momentum buffers) as views of one tensor each.
struct Flat {
    params: Tensor,
    momentum: Tensor,
}

impl Sgd {
    /// Takes the trainable variables of `vs`, in name order (stable across runs).
    pub fn new(vs: &VarStore, momentum_factor: f64, weight_decay: f64, layout: SgdLayout) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, mut params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let (momentum, flat) = match layout {
            SgdLayout::PerTensor => (params.iter().map(Tensor::zeros_like).collect(), None),
            SgdLayout::Flat => {
                let flat = Flat::adopt(&mut params);
                (flat.views_of(&flat.momentum, &params), Some(flat))
            }
        };
        Self {
            names,
            params,
            momentum,
            flat,
            started: false,
            momentum_factor,
            weight_decay,
        }
    }

    /// Back-propagates `loss` to the parameters and takes one step at learning rate `lr`.
    pub fn step(&mut self, loss: &Tensor, lr: f64) {
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        self.apply(grads, lr);
    }

    /// Like [`Sgd::step`] for per-model losses `[K]` computed under fp16 autocast, with one
    /// loss scale per model as if each trained alone: back-propagates `Σ_k loss_k · scale_k`,
    /// unscales each model's gradients, and steps each model whose gradients are all finite
    /// (a model that overflowed keeps its weights and momentum); then updates each model's
    /// scale (halved after an overflow, doubled after `growth_interval` clean steps, as
    /// PyTorch's `GradScaler`). Every parameter holds the K models along dim 0, as a stacked
    /// network's do. Returns which models stepped. One host sync per step.
    pub fn step_scaled(
        &mut self,
        losses: &Tensor,
        lr: f64,
        scaler: &mut LossScaler,
    ) -> Result<Vec<bool>> {
        let k = scaler.replicas();
        if losses.size() != [k] {
            bail!("{k} loss scales for losses of shape {:?}", losses.size());
        }
        let scaled = (losses * &scaler.scale).sum(Kind::Float);
        let mut grads = Tensor::run_backward(&[scaled], &self.params, false, false);
        let found_inf = tch::no_grad(|| -> Result<Tensor> {
            let inverse = scaler.scale.reciprocal().view([k, 1]);
            let mut non_finite = Tensor::zeros([k], (Kind::Float, inverse.device()));
            for (g, name) in grads.iter_mut().zip(&self.names) {
                // [K, n]: model k's part in row k
                let rows = g
                    .f_view([k, -1])
                    .with_context(|| format!("{name} does not split into {k} models"))?;
                let _ = rows.shallow_clone().g_mul_(&inverse);
                non_finite += rows
                    .isfinite()
                    .logical_not()
                    .any_dim(1, false)
                    .to_kind(Kind::Float);
            }
            Ok(non_finite.clamp_max(1.0))
        })?;
        for m in 0..k {
            let _ = scaler.scale.narrow(0, m, 1).internal_amp_update_scale_(
                &scaler.growth_tracker.narrow(0, m, 1),
                &found_inf.narrow(0, m, 1),
                scaler.growth_factor,
                scaler.backoff_factor,
                scaler.growth_interval,
            );
        }
        let stepped: Vec<bool> = Vec::<f64>::try_from(found_inf.to_device(tch::Device::Cpu))?
            .into_iter()
            .map(|inf| inf == 0.0)
            .collect();
        let skipped: Vec<i64> = (0..k).filter(|&m| !stepped[m as usize]).collect();
        if skipped.len() == stepped.len() {
            return Ok(stepped);
        }
        if skipped.is_empty() {
            self.apply(grads, lr);
            return Ok(stepped);
        }
        // Some models overflowed: step all (updates are element-wise, so their non-finite
        // gradients touch only their own rows), then put their rows back.
        let index = Tensor::from_slice(&skipped).to_device(losses.device());
        let rows = |t: &Tensor| t.view([k, -1]).index_select(0, &index);
        let kept: Vec<(Tensor, Tensor)> = tch::no_grad(|| {
            self.params
                .iter()
                .zip(&self.momentum)
                .map(|(p, b)| (rows(p), rows(b)))
                .collect()
        });
        self.apply(grads, lr);
        tch::no_grad(|| {
            for ((p, b), (p_rows, b_rows)) in self.params.iter().zip(&self.momentum).zip(&kept) {
                let _ = p.view([k, -1]).index_copy_(0, &index, p_rows);
                let _ = b.view([k, -1]).index_copy_(0, &index, b_rows);
            }
        });
        Ok(stepped)
    }

    /// [`Sgd::step_scaled`] when training in fp16 (a scaler is given), else [`Sgd::step`] on
    /// the sum of the per-model losses `[K]`.
    pub fn step_with(
        &mut self,
        losses: &Tensor,
        lr: f64,
        scaler: Option<&mut LossScaler>,
    ) -> Result<()> {
        match scaler {
            Some(scaler) => {
                self.step_scaled(losses, lr, scaler)?;
            }
            None => self.step(&losses.sum(Kind::Float), lr),
        }
        Ok(())
    }

    fn apply(&mut self, grads: Vec<Tensor>, lr: f64) {
        let (m, wd) = (self.momentum_factor, self.weight_decay);
        tch::no_grad(|| match &self.flat {
            Some(flat) => {
                let flat_grads: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
                let d = Tensor::cat(&flat_grads, 0);
                update(&flat.params, &flat.momentum, d, m, wd, lr, self.started);
            }
            None => {
                for ((p, b), g) in self.params.iter().zip(&self.momentum).zip(grads) {
                    update(p, b, g, m, wd, lr, self.started);
                }
            }
        });
        self.started = true;
    }

    /// Momentum buffers by parameter name, for a checkpoint (plus a marker of the first step).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> = self
            .names
            .iter()
            .zip(&self.momentum)
            .map(|(n, b)| (names::momentum(n), b.shallow_clone()))
            .collect();
        state.push((
            names::MOMENTUM_STARTED.into(),
            Tensor::from(i64::from(self.started)),
        ));
        state
    }

    /// Restores what [`Sgd::state`] saved.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (name, buf) in self.names.iter().zip(&self.momentum) {
            let saved = state
                .get(&names::momentum(name))
                .with_context(|| format!("no momentum for {name}"))?;
            if saved.size() != buf.size() {
                bail!(
                    "momentum for {name} has shape {:?}, expected {:?}",
                    saved.size(),
                    buf.size()
                );
            }
            tch::no_grad(|| buf.shallow_clone().copy_(saved));
        }
        let started = state
            .get(names::MOMENTUM_STARTED)
            .context("no momentum_started marker")?;
        self.started = started.int64_value(&[]) != 0;
        Ok(())
    }
}

pub use spec::Precision;

/// Sets `net` up to run under `precision`: bf16 activations for bf16; fp32 for fp32 and fp16
/// (which is CUDA autocast around the forward pass, see [`autocast_fp16`]).
pub fn set_precision(net: &mut models::Net, precision: Precision) {
    net.set_activation_kind(match precision {
        Precision::Bf16 => tch::Kind::BFloat16,
        Precision::Fp32 | Precision::Fp16 => tch::Kind::Float,
    });
}

/// Whether `precision` can train on `device`: an error for fp16 off CUDA (autocast fp16 is
/// CUDA's), and for bf16 on a CPU without native bf16 the warning to say.
pub fn check_precision(
    precision: Precision,
    device: tch::Device,
) -> anyhow::Result<Option<String>> {
    match precision {
        Precision::Fp16 if !device.is_cuda() => {
            anyhow::bail!("precision fp16 uses CUDA autocast; it needs --device cuda")
        }
        Precision::Bf16 => Ok(crate::doctor::bf16_warning(device)),
        _ => Ok(None),
    }
}

/// Whether the forward pass runs under CUDA fp16 autocast.
pub fn autocast_fp16(precision: Precision) -> bool {
    precision == Precision::Fp16
}

/// The loss scales of fp16 training and their growth counters, one per model of a stack
/// (PyTorch's `GradScaler` defaults: initial scale 2^16, ×2 after 2000 clean steps, ×0.5 after
/// an overflow).
pub struct LossScaler {
    /// `[K]`.
    pub scale: Tensor,
    /// `[K]`, int32.
    pub growth_tracker: Tensor,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl LossScaler {
    /// Scales for `replicas` models.
    pub fn new(device: tch::Device, replicas: i64) -> Self {
        Self {
            scale: Tensor::full([replicas], 65536.0, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([replicas], (Kind::Int, device)),
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }

    /// K.
    pub fn replicas(&self) -> i64 {
        self.scale.size()[0]
    }

    /// The scale and the growth counter, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            (names::AMP_SCALE.into(), self.scale.shallow_clone()),
            (
                names::AMP_GROWTH_TRACKER.into(),
                self.growth_tracker.shallow_clone(),
            ),
        ]
    }

    /// Restores what [`LossScaler::state`] saved, `[K]` or one value for all (a checkpoint
    /// without it leaves the defaults).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if let (Some(scale), Some(tracker)) = (
            state.get(names::AMP_SCALE),
            state.get(names::AMP_GROWTH_TRACKER),
        ) {
            tch::no_grad(|| -> Result<()> {
                self.scale.f_copy_(scale)?;
                self.growth_tracker.f_copy_(tracker)?;
                Ok(())
            })
            .with_context(|| {
                format!(
                    "checkpoint loss scale of shape {:?} for {} models",
                    scale.size(),
                    self.replicas()
                )
            })?;
        }
        Ok(())
    }
}

/// One SGD update, in place, on matching tensors (single parameters or flat buffers).
fn update(p: &Tensor, b: &Tensor, mut d: Tensor, m: f64, wd: f64, lr: f64, started: bool) {
    if wd != 0.0 {
        d = d.g_add_(&(p * wd));
    }
    let mut b = b.shallow_clone();
    if started {
        let _ = b.g_mul_scalar_(m).g_add_(&d);
    } else {
        b.copy_(&d);
    }
    let _ = p.shallow_clone().g_add_(&(&b * -lr));
}

impl Flat {
    /// Moves every parameter into one flat tensor and makes it a view of it.
    fn adopt(params: &mut [Tensor]) -> Self {
        let total: i64 = params.iter().map(Tensor::numel).map(|n| n as i64).sum();
        let (kind, device) = params
            .first()
            .map(|p| (p.kind(), p.device()))
            .unwrap_or((Kind::Float, tch::Device::Cpu));
        let flat = Self {
            params: Tensor::zeros([total], (kind, device)),
            momentum: Tensor::zeros([total], (kind, device)),
        };
        let views = flat.views_of(&flat.params, params);
        tch::no_grad(|| {
            for (p, mut view) in params.iter_mut().zip(views) {
                view.copy_(p);
                p.set_data(&view);
            }
        });
        flat
    }

    /// Views of `buffer` shaped like each parameter, in order.
    fn views_of(&self, buffer: &Tensor, params: &[Tensor]) -> Vec<Tensor> {
        let mut offset = 0;
        params
            .iter()
            .map(|p| {
                let n = p.numel() as i64;
                let view = buffer.narrow(0, offset, n).view(p.size().as_slice());
                offset += n;
                view
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batches::seeded;
    use tch::nn::{self, Module, OptimizerConfig};

    fn model(vs: &VarStore) -> nn::Sequential {
        let p = vs.root();
        nn::seq()
            .add(nn::linear(&p / "a", 5, 7, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::linear(&p / "b", 7, 3, Default::default()))
    }

    fn train(layout: Option<SgdLayout>, steps: usize) -> Vec<f64> {
        let vs = VarStore::new(tch::Device::Cpu);
        let (net, xs, ys) = seeded(7, || {
            let net = model(&vs);
            let xs = Tensor::randn([16, 5], (Kind::Float, tch::Device::Cpu));
            let ys = Tensor::randint(3, [16], (Kind::Int64, tch::Device::Cpu));
            (net, xs, ys)
        });
        let mut ours = layout.map(|l| Sgd::new(&vs, 0.9, 1e-2, l));
        let mut reference = nn::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            wd: 1e-2,
            nesterov: false,
        }
        .build(&vs, 0.1)
        .unwrap();
        let mut losses = Vec::new();
        for step in 0..steps {
            let lr = if step < 3 { 0.1 } else { 0.01 };
            let loss = net.forward(&xs).cross_entropy_for_logits(&ys);
            losses.push(loss.double_value(&[]));
            match &mut ours {
                Some(sgd) => sgd.step(&loss, lr),
                None => {
                    reference.set_lr(lr);
                    reference.backward_step(&loss);
                }
            }
        }
        losses
    }

    #[test]
    fn both_layouts_follow_libtorch_sgd() {
        // libtorch's SGD (momentum 0.9, weight decay 1e-2) is the reference for the update rule.
        let reference = train(None, 6);
        for layout in [SgdLayout::PerTensor, SgdLayout::Flat] {
            let ours = train(Some(layout), 6);
            for (a, b) in ours.iter().zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{layout:?}: {ours:?} vs {reference:?}"
                );
            }
        }
        assert!(
            reference[5] < reference[0],
            "loss should fall: {reference:?}"
        );
    }

    #[test]
    fn scaled_steps_skip_overflows_and_adapt_the_scale() {
        let vs = VarStore::new(tch::Device::Cpu);
        let (net, xs) = seeded(5, || {
            (
                model(&vs),
                Tensor::randn([4, 5], (Kind::Float, tch::Device::Cpu)),
            )
        });
        let mut sgd = Sgd::new(&vs, 0.9, 0.0, SgdLayout::Flat);
        let mut scaler = LossScaler::new(tch::Device::Cpu, 1);
        scaler.growth_interval = 2;
        let weights = |vs: &VarStore| vs.variables()["a.weight"].copy();
        // An infinite loss: no step, scale halved.
        let before = weights(&vs);
        let loss = net.forward(&xs).sum(Kind::Float).view([1]) * f64::INFINITY;
        assert_eq!(sgd.step_scaled(&loss, 0.1, &mut scaler).unwrap(), [false]);
        assert!(weights(&vs).equal(&before));
        assert_eq!(scaler.scale.double_value(&[0]), 32768.0);
        // Two clean steps: both taken, then the scale doubles.
        for _ in 0..2 {
            let loss = net.forward(&xs).sum(Kind::Float).view([1]);
            assert_eq!(sgd.step_scaled(&loss, 0.1, &mut scaler).unwrap(), [true]);
        }
        assert!(!weights(&vs).equal(&before));
        assert_eq!(scaler.scale.double_value(&[0]), 65536.0);
    }

    #[test]
    fn an_overflow_in_one_model_leaves_the_others_stepping_as_alone() {
        // Two models stacked along dim 0 (rows of w); model 1's loss overflows.
        let xs = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
        let run = |layout: SgdLayout, overflow: f64| {
            let vs = VarStore::new(tch::Device::Cpu);
            let w = vs.root().var("w", &[2, 3], nn::Init::Const(0.25));
            let mut sgd = Sgd::new(&vs, 0.9, 1e-2, layout);
            let mut scaler = LossScaler::new(tch::Device::Cpu, 2);
            let mut stepped = Vec::new();
            for step in 0..3 {
                // [2]: loss_k = (Σ_j w_kj x_j)²; model 1's times `overflow` at step 1
                let factor = Tensor::from_slice(&[1.0, if step == 1 { overflow } else { 1.0 }]);
                let losses = (&w * &xs).sum_dim_intlist(1, false, Kind::Float).square() * factor;
                stepped.push(sgd.step_scaled(&losses, 0.1, &mut scaler).unwrap());
            }
            (w.copy(), scaler.scale.copy(), stepped)
        };
        for layout in [SgdLayout::PerTensor, SgdLayout::Flat] {
            let (clean, clean_scale, _) = run(layout, 1.0);
            let (w, scale, stepped) = run(layout, f64::INFINITY);
            assert_eq!(
                stepped,
                [vec![true, true], vec![true, false], vec![true, true]]
            );
            // model 0 never noticed
            assert!(w.get(0).equal(&clean.get(0)), "{layout:?}");
            assert_eq!(Vec::<f32>::try_from(scale).unwrap(), [65536.0, 32768.0]);
            assert_eq!(
                Vec::<f32>::try_from(clean_scale).unwrap(),
                [65536.0, 65536.0]
            );
            // model 1 took two steps, not three: it lags the clean run
            assert!(
                !w.get(1).allclose(&clean.get(1), 1e-6, 1e-6, false),
                "{layout:?}"
            );
            assert!(bool::try_from(w.isfinite().all()).unwrap());
        }
        // model 1 with the overflow is model 1 trained alone with its step 1 skipped
        let alone = {
            let vs = VarStore::new(tch::Device::Cpu);
            let w = vs.root().var("w", &[1, 3], nn::Init::Const(0.25));
            let mut sgd = Sgd::new(&vs, 0.9, 1e-2, SgdLayout::PerTensor);
            for step in 0..3 {
                if step != 1 {
                    let loss = (&w * &xs).sum(Kind::Float).square();
                    sgd.step(&loss, 0.1);
                }
            }
            w.copy()
        };
        let (w, _, _) = run(SgdLayout::PerTensor, f64::INFINITY);
        assert!(w.get(1).allclose(&alone.get(0), 1e-6, 1e-6, false));
    }

    #[test]
    fn loss_scales_restore_per_model_or_from_one_shared_value() {
        let saved = |scale: &[f32], tracker: &[i32]| -> HashMap<String, Tensor> {
            HashMap::from([
                (names::AMP_SCALE.to_string(), Tensor::from_slice(scale)),
                (
                    names::AMP_GROWTH_TRACKER.to_string(),
                    Tensor::from_slice(tracker),
                ),
            ])
        };
        let mut scaler = LossScaler::new(tch::Device::Cpu, 3);
        scaler
            .load_state(&saved(&[8.0, 16.0, 32.0], &[1, 2, 3]))
            .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&scaler.scale).unwrap(),
            [8.0, 16.0, 32.0]
        );
        assert_eq!(
            Vec::<i32>::try_from(&scaler.growth_tracker).unwrap(),
            [1, 2, 3]
        );
        // a checkpoint with one scale for all models
        scaler.load_state(&saved(&[4.0], &[7])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&scaler.scale).unwrap(), [4.0; 3]);
        // none saved: unchanged
        scaler.load_state(&HashMap::new()).unwrap();
        assert_eq!(Vec::<f32>::try_from(&scaler.scale).unwrap(), [4.0; 3]);
        let err = scaler.load_state(&saved(&[1.0, 2.0], &[0, 0])).unwrap_err();
        assert!(format!("{err:#}").contains("for 3 models"), "{err:#}");
    }

    #[test]
    fn a_scaled_step_equals_a_plain_step() {
        // Scaling by a power of two and unscaling is exact in float arithmetic.
        let run = |scaled: bool| {
            let vs = VarStore::new(tch::Device::Cpu);
            let (net, xs) = seeded(9, || {
                (
                    model(&vs),
                    Tensor::randn([4, 5], (Kind::Float, tch::Device::Cpu)),
                )
            });
            let mut sgd = Sgd::new(&vs, 0.9, 1e-4, SgdLayout::PerTensor);
            let mut scaler = LossScaler::new(tch::Device::Cpu, 1);
            for _ in 0..3 {
                let loss = net.forward(&xs).pow_tensor_scalar(2).mean(Kind::Float);
                if scaled {
                    let losses = loss.view([1]);
                    assert_eq!(sgd.step_scaled(&losses, 0.1, &mut scaler).unwrap(), [true]);
                } else {
                    sgd.step(&loss, 0.1);
                }
            }
            net.forward(&xs)
        };
        assert!(run(true).equal(&run(false)));
    }

    #[test]
    fn flat_parameters_stay_visible_to_the_model_and_state_round_trips() {
        let vs = VarStore::new(tch::Device::Cpu);
        let (net, xs) = seeded(3, || {
            (
                model(&vs),
                Tensor::randn([4, 5], (Kind::Float, tch::Device::Cpu)),
            )
        });
        let before = net.forward(&xs);
        let mut sgd = Sgd::new(&vs, 0.9, 0.0, SgdLayout::Flat);
        // Adopting the parameters must not change the model.
        assert!(net.forward(&xs).allclose(&before, 0.0, 0.0, false));
        sgd.step(&net.forward(&xs).sum(Kind::Float), 0.1);
        // The step changed the variables the model reads.
        assert!(!net.forward(&xs).allclose(&before, 1e-6, 1e-6, false));
        let state: HashMap<String, Tensor> = sgd
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        assert_eq!(state.len(), 5); // two weights, two biases, the marker
        let mut fresh = Sgd::new(&vs, 0.9, 0.0, SgdLayout::PerTensor);
        fresh.load_state(&state).unwrap();
        for (name, buf) in fresh.state() {
            assert!(buf.allclose(&state[&name], 0.0, 0.0, false), "{name}");
        }
    }
}
