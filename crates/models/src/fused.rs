//! Batch normalisation, residual addition and ReLU as one operation while training on the
//! CPU: the forward in two passes over the activation instead of five, the backward in two
//! instead of four (csrc/bn_relu.cpp, an autograd function of libtorch's, with the same
//! numbers as the unfused ops to within rounding). [`crate::layers::BatchNorm::forward_relu`]
//! is its one caller and chooses it when it applies.

use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::layers::is_channels_last;

extern "C" {
    fn resnet_fused_bn_add_relu(
        out: *mut *mut C_tensor,
        x: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        residual: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
    ) -> *mut c_char;
    fn resnet_fused_free_error(message: *mut c_char);
}

pub use spec::BnRelu;

static SEPARATE: AtomicBool = AtomicBool::new(false);

/// Sets how BN–(add–)ReLU runs from now on in this process (`runner bench --bn-relu` measures
/// one against the other).
pub fn set_bn_relu(mode: BnRelu) {
    SEPARATE.store(mode == BnRelu::Separate, Ordering::Relaxed);
}

/// See [`set_bn_relu`].
pub fn bn_relu() -> BnRelu {
    if SEPARATE.load(Ordering::Relaxed) {
        BnRelu::Separate
    } else {
        BnRelu::Fused
    }
}

/// How BN–ReLU runs while training on `device` (in its preferred layout): as set on the CPU,
/// libtorch's ops one after the other elsewhere. What a run records.
pub fn bn_relu_on(device: Device) -> BnRelu {
    if device == Device::Cpu {
        bn_relu()
    } else {
        BnRelu::Separate
    }
}

/// Whether the fused operation takes `xs` while training: a CPU tensor in fp32 or bf16,
/// channels-last (the CPU's layout here), with the switch on.
pub(crate) fn applies(xs: &Tensor) -> bool {
    bn_relu() == BnRelu::Fused
        && xs.device() == Device::Cpu
        && matches!(xs.kind(), Kind::Float | Kind::BFloat16)
        && is_channels_last(xs)
}

/// The parameters and running statistics of one BN, in fp32, `[C]` each.
pub(crate) struct NormState<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub momentum: f64,
    pub eps: f64,
}

/// max(0, BN(xs) + residual) with batch statistics (the running ones updated in place), with
/// autograd; `xs` `[B, C, H, W]` channels-last, `residual` shaped as `xs`. The result is
/// channels-last, in `xs`'s element type.
pub(crate) fn bn_add_relu_train(
    xs: &Tensor,
    residual: Option<&Tensor>,
    norm: &NormState<'_>,
) -> Result<Tensor, String> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: every pointer is a live tensor handle (or null for no residual) for the length
    // of the call; on success `out` is a new handle whose ownership passes to the Tensor.
    unsafe {
        let error = resnet_fused_bn_add_relu(
            &mut out,
            xs.as_ptr(),
            norm.weight.as_ptr(),
            norm.bias.as_ptr(),
            residual.map_or(std::ptr::null(), |r| r.as_ptr()),
            norm.running_mean.as_ptr(),
            norm.running_var.as_ptr(),
            norm.momentum,
            norm.eps,
        );
        if !error.is_null() {
            let message = CStr::from_ptr(error).to_string_lossy().into_owned();
            resnet_fused_free_error(error);
            return Err(message);
        }
        Ok(Tensor::from_ptr(out))
    }
}
