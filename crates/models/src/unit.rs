//! The residual unit: every body (basic, bottleneck), shortcut variant and activation
//! placement of the two papers, matched once when building and once in `forward_t`.

use std::fmt;

use serde::Serialize;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::error::Result;
use crate::layers::{is_channels_last, BatchNorm, BatchNormConfig, Conv, ConvConfig};
use spec::{ActivationPlacement, BlockKind, ShortcutKind};

/// What carries x to the addition, h(x) in 2016 eq. 1 (before any scaling, gating or
/// dropout of [`ShortcutKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortcutPath {
    /// Plain unit: no shortcut.
    None,
    /// h(x) = x.
    Identity,
    /// Option A (2015 sec. 3.3): x subsampled by the stride, extra channels zero
    /// (appended after the input's channels, per replica). Parameter-free.
    ZeroPad,
    /// A 1×1 convolution with the unit's stride (options B/C, and the `conv1x1` shortcut),
    /// followed by BN when `batch_norm` (post-activation nets with options B/C, as 2015's
    /// ImageNet models, and the 2016 Fig. 2e shortcut; pre-activation nets have none).
    Projection {
        /// BN after the projection.
        batch_norm: bool,
    },
}

/// One residual (or plain) unit, fully resolved: widths, stride, shortcut, placement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct UnitConfig {
    /// Basic (3×3, 3×3) or bottleneck (1×1, 3×3, 1×1).
    pub block: BlockKind,
    /// Input channels of one replica.
    pub in_channels: i64,
    /// Width of the bottleneck's 1×1/3×3 convs; equals `out_channels` for basic units.
    pub mid_channels: i64,
    /// Output channels of one replica.
    pub out_channels: i64,
    /// Stride of the first conv (3×3 in basic units, the first 1×1 in bottlenecks, as in
    /// 2015) and of the shortcut.
    pub stride: i64,
    /// The shortcut variant (scaling, gating, ...).
    pub shortcut: ShortcutKind,
    /// h(x) before the variant acts on it.
    pub path: ShortcutPath,
    /// Where BN and ReLU sit.
    pub placement: ActivationPlacement,
    /// Pre-activation units only: the first activation is applied to x before the split, so
    /// the shortcut carries the activated input. True for the first unit after the stem conv
    /// (2016 sec. 4.1: "we adopt the first activation right after conv1 and before splitting
    /// into two paths") and for units whose projection shortcut grows the dimensions (as in
    /// the authors' resnet-1k-layers code).
    pub preactivate_before_split: bool,
    /// K.
    pub replicas: i64,
}

impl UnitConfig {
    /// The branch's convolutions, in order: basic [3×3 /s, 3×3], bottleneck [1×1 /s, 3×3, 1×1].
    pub fn convs(&self) -> Vec<ConvConfig> {
        let k = self.replicas;
        let (i, m, o, s) = (
            self.in_channels,
            self.mid_channels,
            self.out_channels,
            self.stride,
        );
        match self.block {
            BlockKind::Basic => vec![
                ConvConfig::new(i, o, 3, s, k),
                ConvConfig::new(o, o, 3, 1, k),
            ],
            BlockKind::Bottleneck => vec![
                ConvConfig::new(i, m, 1, s, k),
                ConvConfig::new(m, m, 3, 1, k),
                ConvConfig::new(m, o, 1, 1, k),
            ],
        }
    }

    /// The branch's BNs (`bn1`, `bn2`, ...) in order: after each conv for (a), (c), (d); after
    /// each conv but the last for (b); before each conv for (e).
    pub fn branch_norms(&self) -> Vec<BatchNormConfig> {
        let convs = self.convs();
        let n = convs.len();
        let bn = |channels| BatchNormConfig {
            channels,
            replicas: self.replicas,
        };
        match self.placement {
            ActivationPlacement::Original
            | ActivationPlacement::ReluBeforeAddition
            | ActivationPlacement::ReluOnlyPreactivation => {
                convs.iter().map(|c| bn(c.out_channels)).collect()
            }
            ActivationPlacement::BnAfterAddition => convs
                .iter()
                .take(n - 1)
                .map(|c| bn(c.out_channels))
                .collect(),
            ActivationPlacement::FullPreactivation => {
                convs.iter().map(|c| bn(c.in_channels)).collect()
            }
        }
    }

    /// The BN after the addition, `bn_out`: placement (b) only.
    pub fn output_norm(&self) -> Option<BatchNormConfig> {
        (self.placement == ActivationPlacement::BnAfterAddition).then_some(BatchNormConfig {
            channels: self.out_channels,
            replicas: self.replicas,
        })
    }

    /// The shortcut's 1×1 projection, `shortcut/conv` (and `shortcut/bn`).
    pub fn projection(&self) -> Option<(ConvConfig, Option<BatchNormConfig>)> {
        match self.path {
            ShortcutPath::Projection { batch_norm } => Some((
                ConvConfig::new(
                    self.in_channels,
                    self.out_channels,
                    1,
                    self.stride,
                    self.replicas,
                ),
                batch_norm.then_some(BatchNormConfig {
                    channels: self.out_channels,
                    replicas: self.replicas,
                }),
            )),
            ShortcutPath::None | ShortcutPath::Identity | ShortcutPath::ZeroPad => None,
        }
    }

    /// The gate's 1×1 convolution W_g with bias b_g, `shortcut/gate` (2016 Fig. 2c/2d).
    pub fn gate(&self) -> Option<ConvConfig> {
        match self.shortcut {
            ShortcutKind::ExclusiveGating { gate_bias }
            | ShortcutKind::ShortcutOnlyGating { gate_bias } => Some(ConvConfig {
                bias_init: Some(gate_bias),
                ..ConvConfig::new(
                    self.in_channels,
                    self.out_channels,
                    1,
                    self.stride,
                    self.replicas,
                )
            }),
            _ => None,
        }
    }

    /// Trainable parameters of one replica.
    pub fn params(&self) -> i64 {
        let convs: i64 = self.convs().iter().map(ConvConfig::params).sum();
        let norms: i64 = self
            .branch_norms()
            .iter()
            .map(BatchNormConfig::params)
            .sum();
        let out_norm = self.output_norm().map_or(0, |n| n.params());
        let projection = self.projection().map_or(0, |(conv, bn)| {
            conv.params() + bn.map_or(0, |bn| bn.params())
        });
        let gate = self.gate().map_or(0, |g| g.params());
        convs + norms + out_norm + projection + gate
    }

    /// BN parameters (γ, β) of one replica, part of [`UnitConfig::params`].
    pub fn norm_params(&self) -> i64 {
        let branch: i64 = self
            .branch_norms()
            .iter()
            .map(BatchNormConfig::params)
            .sum();
        let out_norm = self.output_norm().map_or(0, |n| n.params());
        let projection = self
            .projection()
            .and_then(|(_, bn)| bn)
            .map_or(0, |bn| bn.params());
        branch + out_norm + projection
    }

    /// Multiply-adds of one replica (convolutions, projection, gate) for an input of
    /// `(h, w)`; returns them with the output size.
    pub fn macs(&self, hw: (i64, i64)) -> (i64, (i64, i64)) {
        let mut total = 0;
        let mut size = hw;
        for conv in self.convs() {
            let (m, out) = conv.macs(size);
            total += m;
            size = out;
        }
        if let Some((conv, _)) = self.projection() {
            total += conv.macs(hw).0;
        }
        if let Some(gate) = self.gate() {
            total += gate.macs(hw).0;
        }
        (total, size)
    }

    /// Elements of the feature maps the unit's convolutions (projection and gate included)
    /// produce for one input of `(h, w)` in one replica.
    pub fn feature_elements(&self, hw: (i64, i64)) -> i64 {
        let mut total = 0;
        let mut size = hw;
        for conv in self.convs() {
            total += conv.output_elements(size);
            size = (conv.output_side(size.0), conv.output_side(size.1));
        }
        total
            + self
                .projection()
                .map_or(0, |(conv, _)| conv.output_elements(hw))
            + self.gate().map_or(0, |gate| gate.output_elements(hw))
    }

    /// Creates the unit's weights under `p`: `conv1`, `bn1`, ..., `bn_out`, `shortcut/conv`,
    /// `shortcut/bn`, `shortcut/gate`.
    pub fn build(&self, p: &nn::Path) -> Result<ResidualUnit> {
        let convs = self
            .convs()
            .iter()
            .enumerate()
            .map(|(i, c)| c.build(&(p / format!("conv{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        let norms = self
            .branch_norms()
            .iter()
            .enumerate()
            .map(|(i, c)| c.build(&(p / format!("bn{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        let output_norm = self
            .output_norm()
            .map(|c| c.build(&(p / "bn_out")))
            .transpose()?;
        let sp = p / "shortcut";
        let shortcut = match self.projection() {
            Some((conv, bn)) => Shortcut::Projection {
                conv: conv.build(&(&sp / "conv"))?,
                bn: bn.map(|bn| bn.build(&(&sp / "bn"))).transpose()?,
            },
            None => match self.path {
                ShortcutPath::None => Shortcut::None,
                ShortcutPath::ZeroPad => Shortcut::ZeroPad {
                    in_channels: self.in_channels,
                    out_channels: self.out_channels,
                    stride: self.stride,
                    replicas: self.replicas,
                },
                ShortcutPath::Identity | ShortcutPath::Projection { .. } => Shortcut::Identity,
            },
        };
        let gate = self.gate().map(|g| g.build(&(&sp / "gate"))).transpose()?;
        Ok(ResidualUnit {
            config: *self,
            convs,
            norms,
            output_norm,
            shortcut,
            gate,
        })
    }
}

/// A built h(x).
enum Shortcut {
    None,
    Identity,
    ZeroPad {
        in_channels: i64,
        out_channels: i64,
        stride: i64,
        replicas: i64,
    },
    Projection {
        conv: Conv,
        bn: Option<BatchNorm>,
    },
}

impl Shortcut {
    /// `[B, K·C_in, H, W]` → `[B, K·C_out, H/s, W/s]`, or `None` for a plain unit.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Option<Tensor> {
        match self {
            Shortcut::None => None,
            Shortcut::Identity => Some(xs.shallow_clone()),
            &Shortcut::ZeroPad {
                in_channels,
                out_channels,
                stride,
                replicas,
            } => {
                // [B, K·C_in, H/s, W/s]
                let sub = xs.slice(2, None, None, stride).slice(3, None, None, stride);
                let size = sub.size();
                let (b, h, w) = (size[0], size[2], size[3]);
                let extra = out_channels - in_channels;
                // zeros after each replica's channels, in the input's layout (pad specs
                // run from the last dim)
                Some(if is_channels_last(xs) {
                    // [B, H/s, W/s, K, C_in] → [B, H/s, W/s, K·C_out] → [B, K·C_out, H/s, W/s]
                    sub.permute([0, 2, 3, 1])
                        .reshape([b, h, w, replicas, in_channels])
                        .constant_pad_nd([0, extra])
                        .reshape([b, h, w, replicas * out_channels])
                        .permute([0, 3, 1, 2])
                } else {
                    // [B, K, C_in, H/s, W/s] → [B, K, C_out, H/s, W/s] → [B, K·C_out, H/s, W/s]
                    sub.reshape([b, replicas, in_channels, h, w])
                        .constant_pad_nd([0, 0, 0, 0, 0, extra])
                        .reshape([b, replicas * out_channels, h, w])
                })
            }
            Shortcut::Projection { conv, bn } => {
                let hx = conv.forward_t(xs, train);
                Some(match bn {
                    Some(bn) => bn.forward_t(&hx, train),
                    None => hx,
                })
            }
        }
    }
}

impl fmt::Debug for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortcut::None => f.write_str("None"),
            Shortcut::Identity => f.write_str("Identity"),
            Shortcut::ZeroPad {
                in_channels,
                out_channels,
                stride,
                ..
            } => {
                write!(f, "ZeroPad({in_channels}→{out_channels}, stride {stride})")
            }
            Shortcut::Projection { conv, bn: Some(bn) } => write!(f, "[{conv:?}, {bn:?}]"),
            Shortcut::Projection { conv, bn: None } => write!(f, "{conv:?}"),
        }
    }
}

/// A built [`UnitConfig`]. `forward_t` maps `[B, K·C_in, H, W]` to
/// `[B, K·C_out, H/stride, W/stride]` (the stacked layout of [`crate::layers`]).
pub struct ResidualUnit {
    config: UnitConfig,
    convs: Vec<Conv>,
    norms: Vec<BatchNorm>,
    output_norm: Option<BatchNorm>,
    shortcut: Shortcut,
    gate: Option<Conv>,
}

impl ResidualUnit {
    /// The configuration it was built from.
    pub fn config(&self) -> &UnitConfig {
        &self.config
    }

    /// The first activation of a pre-activation unit: ReLU for (d), BN1–ReLU for (e).
    fn preactivate(&self, xs: &Tensor, train: bool) -> Tensor {
        match (self.config.placement, self.norms.first()) {
            (ActivationPlacement::FullPreactivation, Some(bn)) => bn.forward_relu(xs, None, train),
            _ => xs.relu(),
        }
    }

    /// F(x), the residual branch (2016 Fig. 4), `[B, K·C_in, H, W]` →
    /// `[B, K·C_out, H/s, W/s]`. `activated` says the first activation was applied before
    /// the split. With `without_last_norm` (placement (a) only), the last BN is left for the
    /// caller, who fuses it with the addition and the ReLU.
    ///
    /// BN–ReLU pairs run as one operation ([`BatchNorm::forward_relu`]); a lone ReLU runs in
    /// place (`relu_`) on a fresh sum only, never on x_l, which the shortcut also reads.
    fn residual(
        &self,
        xs: &Tensor,
        activated: bool,
        train: bool,
        without_last_norm: bool,
    ) -> Tensor {
        let n = self.convs.len();
        let mut fx = xs.shallow_clone();
        for (i, conv) in self.convs.iter().enumerate() {
            let last = i + 1 == n;
            let bn = self.norms.get(i);
            // [B, K·C_i, H_i, W_i] → [B, K·C_{i+1}, H_{i+1}, W_{i+1}]
            fx = match (self.config.placement, bn) {
                // (a) weight–BN(–ReLU, except after the last weight)
                (ActivationPlacement::Original, Some(bn)) => {
                    let y = conv.forward_t(&fx, train);
                    match (last, without_last_norm) {
                        (false, _) => bn.forward_relu(&y, None, train),
                        (true, false) => bn.forward_t(&y, train),
                        (true, true) => y,
                    }
                }
                // (b) weight–BN–ReLU, the last weight bare (its BN moved after the addition)
                (ActivationPlacement::BnAfterAddition, bn) => {
                    let y = conv.forward_t(&fx, train);
                    match bn {
                        Some(bn) if !last => bn.forward_relu(&y, None, train),
                        _ => y,
                    }
                }
                // (c) weight–BN–ReLU, the last ReLU too
                (ActivationPlacement::ReluBeforeAddition, Some(bn)) => {
                    bn.forward_relu(&conv.forward_t(&fx, train), None, train)
                }
                // (d) ReLU–weight–BN
                (ActivationPlacement::ReluOnlyPreactivation, Some(bn)) => {
                    let a = if i == 0 && activated { fx } else { fx.relu() };
                    bn.forward_t(&conv.forward_t(&a, train), train)
                }
                // (e) BN–ReLU–weight
                (ActivationPlacement::FullPreactivation, Some(bn)) => {
                    let a = if i == 0 && activated {
                        fx
                    } else {
                        bn.forward_relu(&fx, None, train)
                    };
                    conv.forward_t(&a, train)
                }
                (_, None) => unreachable!("UnitConfig::branch_norms gives one BN per conv"),
            };
        }
        fx
    }
}

impl ResidualUnit {
    /// True when the first activation is applied to x before the split (see
    /// [`UnitConfig::preactivate_before_split`]).
    fn activates_before_split(&self) -> bool {
        self.config.preactivate_before_split && self.config.placement.is_preactivation()
    }

    /// The input both paths (and the gate) see: x, or its first activation when it is
    /// applied before the split.
    fn split_input(&self, xs: &Tensor, train: bool) -> Tensor {
        if self.activates_before_split() {
            self.preactivate(xs, train)
        } else {
            xs.shallow_clone()
        }
    }

    /// The gate of a gated unit (2016 Fig. 2c, 2d), g(x) = σ(W_g x + b_g), averaged per
    /// replica over its input `xs` `[B, K·C_in, H, W]` (every image, channel and position),
    /// in inference mode: `[K]` in fp32. `None` for a unit without a gate. What a gated
    /// variant's result turns on: with b_g = −6, g starts near σ(−6) ≈ 0.0025 (1–2.2× it for
    /// exclusive gating, 2–17× for shortcut-only gating, from W_g x on random inputs: the test
    /// `initial_gates_stay_near_sigmoid_of_their_bias`), so exclusive gating starts with its
    /// residual branch nearly switched off.
    pub fn gate_means(&self, xs: &Tensor) -> Option<Tensor> {
        let gate = self.gate.as_ref()?;
        let k = self.config.replicas;
        let g = gate
            .forward_t(&self.split_input(xs, false), false)
            .sigmoid();
        let b = g.size()[0];
        // [B, K·C, H', W'] → [B, K, C·H'·W'] → [K]
        Some(g.to_kind(tch::Kind::Float).reshape([b, k, -1]).mean_dim(
            [0i64, 2].as_slice(),
            false,
            tch::Kind::Float,
        ))
    }
}

impl ModuleT for ResidualUnit {
    /// x_{l+1} = f(combine(h(x_l), F(x_l))): `[B, K·C_in, H, W]` → `[B, K·C_out, H/s, W/s]`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_seeded(xs, train, None)
    }
}

/// The dropout shortcut's multiplier for `hx` `[B, K·C, H, W]` while training: replica k's
/// part `[B, C, H, W]` drawn (keep with probability 1 − ratio, scaled by 1 / (1 − ratio), as
/// libtorch's dropout) from `seeds[k]`, in NCHW order whatever `hx`'s layout, so that it does
/// not depend on K or on the memory format. On the CPU from a counter-based generator filled
/// in parallel ([`crate::dropout`]; libtorch's one-element-at-a-time `bernoulli_` took more
/// time than the rest of the step), elsewhere from libtorch's generator seeded with `seeds[k]`.
fn dropout_mask(hx: &Tensor, ratio: f64, seeds: &[i64]) -> Tensor {
    let keep = 1.0 - ratio;
    if hx.device() == tch::Device::Cpu {
        return crate::dropout::cpu_mask(hx, keep, seeds, is_channels_last(hx));
    }
    let size = hx.size();
    let k = seeds.len() as i64;
    let (b, c, h, w) = (size[0], size[1] / k, size[2], size[3]);
    let parts: Vec<Tensor> = seeds
        .iter()
        .map(|&seed| {
            tch::manual_seed(seed);
            let mut mask = Tensor::empty([b, c, h, w], (hx.kind(), hx.device()));
            mask.bernoulli_float_(keep) / keep
        })
        .collect();
    Tensor::cat(&parts, 1)
}

impl ResidualUnit {
    /// [`ModuleT::forward_t`], with the dropout shortcut's masks drawn per replica from
    /// `seeds` (one per replica) when given; see [`crate::Net::forward_stacked_seeded`].
    pub fn forward_seeded(&self, xs: &Tensor, train: bool, seeds: Option<&[i64]>) -> Tensor {
        let c = &self.config;
        let activated = self.activates_before_split();
        // [B, K·C_in, H, W]: the input both paths see
        let xs = self.split_input(xs, train);
        // [B, K·C_out, H/s, W/s], None for a plain unit
        let hx = self.shortcut.forward_t(&xs, train);
        // F(x), [B, K·C_out, H/s, W/s], made first in every arm that needs it (the order
        // the graph is built in is the order autograd sums gradients in)
        let fx = || self.residual(&xs, activated, train, false);
        // g(x) = σ(W_g x + b_g): [B, K·C_out, H/s, W/s]
        let gate = |g: &Conv| g.forward_t(&xs, train).sigmoid();
        let mut sum = match (c.shortcut, hx, &self.gate) {
            // plain net (2015 sec. 4.1): no addition
            (_, None, _) => fx(),
            // 2016 eq. 1 with h = identity / zero-pad / projection (Fig. 2a, 2e)
            (ShortcutKind::Identity | ShortcutKind::Conv1x1 | ShortcutKind::Plain, Some(hx), _) => {
                match (c.placement, self.norms.last()) {
                    // (a), 2016 eq. 1–2: x_{l+1} = ReLU(h(x) + BN(conv(…))), the last BN, the
                    // addition and the ReLU as one operation
                    (ActivationPlacement::Original, Some(bn)) => {
                        // [B, K·C_out, H/s, W/s], before its last BN
                        let y = self.residual(&xs, activated, train, true);
                        return bn.forward_relu(&y, Some(&hx), train);
                    }
                    _ => {
                        let fx = fx();
                        hx + fx
                    }
                }
            }
            // Fig. 2b: λ_s·h(x) + λ_f·F(x)
            (ShortcutKind::Scaling { lambda_s, lambda_f }, Some(hx), _) => {
                let fx = fx();
                hx * lambda_s + fx * lambda_f
            }
            // Fig. 2c: (1 − g)·h(x) + g·F(x)
            (ShortcutKind::ExclusiveGating { .. }, Some(hx), Some(g)) => {
                let fx = fx();
                let g = gate(g);
                hx * (1.0 - &g) + fx * g
            }
            // Fig. 2d: (1 − g)·h(x) + F(x)
            (ShortcutKind::ShortcutOnlyGating { .. }, Some(hx), Some(g)) => {
                let fx = fx();
                hx * (1.0 - gate(g)) + fx
            }
            // Fig. 2f: dropout on h(x) while training
            (ShortcutKind::Dropout { ratio }, Some(hx), _) => {
                let dropped = |hx: Tensor| match seeds {
                    Some(seeds) if train && ratio > 0.0 => {
                        let mask = dropout_mask(&hx, ratio, seeds);
                        hx * mask
                    }
                    _ => hx.dropout(ratio, train),
                };
                match (c.placement, self.norms.last()) {
                    // (a): as the identity's, the last BN, the addition and the ReLU as one
                    // operation, on the dropped-out shortcut
                    (ActivationPlacement::Original, Some(bn)) => {
                        let y = self.residual(&xs, activated, train, true);
                        return bn.forward_relu(&y, Some(&dropped(hx)), train);
                    }
                    _ => {
                        let fx = fx();
                        dropped(hx) + fx
                    }
                }
            }
            (
                ShortcutKind::ExclusiveGating { .. } | ShortcutKind::ShortcutOnlyGating { .. },
                _,
                None,
            ) => {
                unreachable!("UnitConfig::build creates a gate for gating shortcuts")
            }
        };
        // after the addition: (a) ReLU, (b) BN–ReLU, (c)–(e) nothing
        match (c.placement, &self.output_norm) {
            (ActivationPlacement::Original, _) => sum.relu_(),
            (ActivationPlacement::BnAfterAddition, Some(bn)) => bn.forward_relu(&sum, None, train),
            _ => sum,
        }
    }
}

impl fmt::Debug for ResidualUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let mut d = f.debug_struct("ResidualUnit");
        d.field("block", &c.block)
            .field("placement", &c.placement)
            .field("shortcut", &format_args!("{}", c.shortcut));
        if c.placement.is_preactivation() {
            d.field("preactivate_before_split", &c.preactivate_before_split);
        }
        d.field("convs", &self.convs).field("norms", &self.norms);
        if let Some(bn) = &self.output_norm {
            d.field("bn_out", bn);
        }
        d.field("h", &self.shortcut);
        if let Some(g) = &self.gate {
            d.field("gate", g);
        }
        d.finish()
    }
}
