//! Layers that hold K replicas side by side: convolution, batch normalisation, linear head.
//!
//! Every layer works on the stacked layout: activations are `[B, K·C, H, W]`, replica k owns
//! channels `k·C .. (k+1)·C`, and every parameter is the K replicas' tensors concatenated
//! along dim 0 (so a K = 1 layer has the usual single-model shapes, and
//! [`crate::stack_var_stores`] / [`crate::extract_replica`] only cut or join dim 0).

use std::fmt;

use serde::Serialize;
use tch::nn::{self, Init, ModuleT};
use tch::{Device, Tensor};

use crate::error::Result;

/// How activations `[B, K·C, H, W]` lie in memory. Only the input's layout is chosen:
/// convolutions, BN and element-wise ops keep the layout they are given, and so does every
/// shortcut. The numbers are the same either way (to rounding); the speed is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum MemoryFormat {
    /// NCHW, row-major: what cuDNN is fastest with at these sizes.
    Contiguous,
    /// NHWC strides on NCHW shapes (PyTorch's `channels_last`): oneDNN's native layout,
    /// measured faster on the CPU (`runner bench --memory-format`).
    ChannelsLast,
}

impl MemoryFormat {
    /// The measured-faster layout on `device`: channels-last on the CPU, NCHW on CUDA.
    pub fn preferred(device: Device) -> Self {
        match device {
            Device::Cpu => MemoryFormat::ChannelsLast,
            _ => MemoryFormat::Contiguous,
        }
    }

    /// `xs` (4-d) copied into this layout, or itself when it already is.
    pub fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            MemoryFormat::Contiguous => xs.contiguous(),
            MemoryFormat::ChannelsLast if is_channels_last(xs) => xs.shallow_clone(),
            // [B, C, H, W] → [B, H, W, C] dense → viewed back as [B, C, H, W]
            MemoryFormat::ChannelsLast => {
                xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
            }
        }
    }
}

/// Whether a 4-d `[B, C, H, W]` tensor is laid out densely as `[B, H, W, C]`.
pub fn is_channels_last(xs: &Tensor) -> bool {
    if xs.dim() != 4 {
        return false;
    }
    let (size, stride) = (xs.size(), xs.stride());
    let (c, w) = (size[1], size[3]);
    stride[1] == 1 && stride[3] == c && stride[2] == c * w && c > 1
}

/// `t` in the element type of the activations `xs` (itself when it already is). Weights stay
/// fp32 in the store; under bf16 activations a convolution or the fc casts them per use, as
/// autocast does, so their gradients arrive in fp32.
fn in_kind_of(t: &Tensor, xs: &Tensor) -> Tensor {
    let kind = xs.kind();
    if t.kind() == kind {
        t.shallow_clone()
    } else {
        t.to_kind(kind)
    }
}

/// A square convolution of K replicas (`groups = K`), padding `kernel / 2`, He init.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ConvConfig {
    /// Input channels of one replica.
    pub in_channels: i64,
    /// Output channels of one replica.
    pub out_channels: i64,
    /// Kernel size (1, 3 or 7 here).
    pub kernel: i64,
    /// Stride.
    pub stride: i64,
    /// `Some(b)`: a bias initialised to the constant b (the gates' b_g); `None`: no bias.
    pub bias_init: Option<f64>,
    /// K.
    pub replicas: i64,
}

impl ConvConfig {
    /// A bias-free K-replica convolution.
    pub fn new(
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        replicas: i64,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            bias_init: None,
            replicas,
        }
    }

    /// Output size of one spatial side.
    pub fn output_side(&self, side: i64) -> i64 {
        (side + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }

    /// Elements of one replica's output for one input of `(h, w)`.
    pub fn output_elements(&self, (h, w): (i64, i64)) -> i64 {
        self.out_channels * self.output_side(h) * self.output_side(w)
    }

    /// Trainable parameters of one replica.
    pub fn params(&self) -> i64 {
        let bias = if self.bias_init.is_some() {
            self.out_channels
        } else {
            0
        };
        self.out_channels * self.in_channels * self.kernel * self.kernel + bias
    }

    /// Multiply-adds of one replica for an input of `(h, w)`; returns them with the output
    /// size.
    pub fn macs(&self, (h, w): (i64, i64)) -> (i64, (i64, i64)) {
        let (oh, ow) = (self.output_side(h), self.output_side(w));
        let per_position = self.out_channels * self.in_channels * self.kernel * self.kernel;
        (per_position * oh * ow, (oh, ow))
    }

    /// Creates `weight` `[K·C_out, C_in, k, k]` (Kaiming normal, fan_out of one replica:
    /// std = sqrt(2 / (k·k·C_out)); 2015 sec. 3.4 cites He et al. 2015b, which gives a fan-in
    /// and a fan-out form; fan_out is what the authors' Torch code uses) and, if asked,
    /// `bias` `[K·C_out]`.
    pub fn build(&self, p: &nn::Path) -> Result<Conv> {
        let fan_out = (self.kernel * self.kernel * self.out_channels) as f64;
        let weight = p.f_var(
            "weight",
            &[
                self.replicas * self.out_channels,
                self.in_channels,
                self.kernel,
                self.kernel,
            ],
            Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_out).sqrt(),
            },
        )?;
        let bias = match self.bias_init {
            Some(b) => {
                Some(p.f_var("bias", &[self.replicas * self.out_channels], Init::Const(b))?)
            }
            None => None,
        };
        Ok(Conv {
            config: *self,
            weight,
            bias,
        })
    }
}

/// A built [`ConvConfig`].
pub struct Conv {
    config: ConvConfig,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Conv {
    /// The configuration it was built from.
    pub fn config(&self) -> &ConvConfig {
        &self.config
    }
}

impl ModuleT for Conv {
    /// `[B, K·C_in, H, W]` → `[B, K·C_out, H/stride, W/stride]`.
    /// In the element type of `xs` (fp32, or bf16 with the weights cast per use).
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let c = &self.config;
        let bias = self.bias.as_ref().map(|b| in_kind_of(b, xs));
        xs.conv2d(
            &in_kind_of(&self.weight, xs),
            bias.as_ref(),
            [c.stride],
            [c.kernel / 2],
            [1],
            c.replicas,
        )
    }
}

impl fmt::Debug for Conv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "Conv2d({}→{}, {k}×{k}",
            c.in_channels,
            c.out_channels,
            k = c.kernel
        )?;
        if c.stride != 1 {
            write!(f, ", stride {}", c.stride)?;
        }
        if let Some(b) = c.bias_init {
            write!(f, ", bias init {b}")?;
        }
        if c.replicas != 1 {
            write!(f, ", ×{} replicas", c.replicas)?;
        }
        f.write_str(")")
    }
}

/// Batch normalisation over K·C channels: each replica's channels are normalised over that
/// replica's own batch, so it is per model by construction. γ = 1, β = 0 (not tch's
/// default γ ~ U[0, 1)); momentum 0.1, ε = 1e-5 (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BatchNormConfig {
    /// Channels of one replica.
    pub channels: i64,
    /// K.
    pub replicas: i64,
}

impl BatchNormConfig {
    /// Trainable parameters of one replica (γ and β).
    pub fn params(&self) -> i64 {
        2 * self.channels
    }

    /// Creates `weight` (γ = 1), `bias` (β = 0), `running_mean` (0), `running_var` (1),
    /// each `[K·C]`.
    pub fn build(&self, p: &nn::Path) -> Result<BatchNorm> {
        let n = self.replicas * self.channels;
        Ok(BatchNorm {
            config: *self,
            weight: p.f_var("weight", &[n], Init::Const(1.0))?,
            bias: p.f_var("bias", &[n], Init::Const(0.0))?,
            running_mean: p.f_zeros_no_train("running_mean", &[n])?,
            running_var: p.f_ones_no_train("running_var", &[n])?,
        })
    }
}

/// A built [`BatchNormConfig`].
pub struct BatchNorm {
    config: BatchNormConfig,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// PyTorch's defaults, the papers' implementations' too.
const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

impl BatchNorm {
    /// max(0, BN(xs) + residual), or max(0, BN(xs)) without one: `[B, K·C, H, W]` → same
    /// shape. While training on the CPU in channels-last fp32 or bf16 this is one fused
    /// operation ([`crate::fused`]); otherwise libtorch's BN, addition and ReLU, with the
    /// same numbers to within rounding.
    pub fn forward_relu(&self, xs: &Tensor, residual: Option<&Tensor>, train: bool) -> Tensor {
        if train && crate::fused::applies(xs) {
            let norm = crate::fused::NormState {
                weight: &self.weight,
                bias: &self.bias,
                running_mean: &self.running_mean,
                running_var: &self.running_var,
                momentum: MOMENTUM,
                eps: EPS,
            };
            match crate::fused::bn_add_relu_train(xs, residual, &norm) {
                Ok(ys) => return ys,
                // as tch's own operations do on a libtorch error
                Err(message) => panic!("fused batch norm: {message}"),
            }
        }
        self.forward_relu_unfused(xs, residual, train)
    }

    /// [`BatchNorm::forward_relu`] as libtorch's separate BN, addition and ReLU, always: the
    /// reference the fused operation is tested against.
    pub fn forward_relu_unfused(
        &self,
        xs: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mut ys = self.forward_t(xs, train);
        match residual {
            Some(r) => (ys + r).relu_(),
            None => ys.relu_(),
        }
    }
}

impl ModuleT for BatchNorm {
    /// `[B, K·C, H, W]` → same shape; batch statistics when `train` (and the running
    /// averages updated), running averages otherwise. On fp32 or bf16 activations; γ, β and
    /// the running statistics stay fp32 either way (libtorch's mixed-type batch norm
    /// accumulates its statistics in fp32).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            MOMENTUM,
            EPS,
            true,
        )
    }
}

impl fmt::Debug for BatchNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchNorm({}", self.config.channels)?;
        if self.config.replicas != 1 {
            write!(f, ", ×{} replicas", self.config.replicas)?;
        }
        f.write_str(")")
    }
}

/// The fully connected classifier of K replicas, applied as one batched matmul.
/// Init as PyTorch's `nn.Linear`: weight and bias ~ U(−1/√in, 1/√in).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinearConfig {
    /// Input features of one replica.
    pub in_features: i64,
    /// Output features (classes) of one replica.
    pub out_features: i64,
    /// K.
    pub replicas: i64,
}

impl LinearConfig {
    /// Trainable parameters of one replica.
    pub fn params(&self) -> i64 {
        self.out_features * self.in_features + self.out_features
    }

    /// Multiply-adds of one replica for one example.
    pub fn macs(&self) -> i64 {
        self.out_features * self.in_features
    }

    /// Creates `weight` `[K·out, in]` and `bias` `[K·out]`.
    pub fn build(&self, p: &nn::Path) -> Result<Linear> {
        let bound = 1.0 / (self.in_features as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let n = self.replicas * self.out_features;
        Ok(Linear {
            config: *self,
            weight: p.f_var("weight", &[n, self.in_features], init)?,
            bias: p.f_var("bias", &[n], init)?,
        })
    }
}

/// A built [`LinearConfig`].
pub struct Linear {
    config: LinearConfig,
    weight: Tensor,
    bias: Tensor,
}

impl ModuleT for Linear {
    /// `[K, B, in]` → `[K, B, out]`: out_k = x_k W_kᵀ + b_k for each replica k.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let c = &self.config;
        // [K, out, in] → [K, in, out]
        let weight = in_kind_of(&self.weight, xs)
            .view([c.replicas, c.out_features, c.in_features])
            .transpose(1, 2);
        // [K, 1, out] broadcast over the batch
        let bias = in_kind_of(&self.bias, xs).view([c.replicas, 1, c.out_features]);
        bias.baddbmm(xs, &weight, 1.0, 1.0)
    }
}

impl fmt::Debug for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(f, "Linear({}→{}", c.in_features, c.out_features)?;
        if c.replicas != 1 {
            write!(f, ", ×{} replicas", c.replicas)?;
        }
        f.write_str(")")
    }
}
