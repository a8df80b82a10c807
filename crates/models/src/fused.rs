//! Batch normalisation, residual addition and ReLU as one operation while training on the
//! CPU: the forward in two passes over the activation instead of five, the backward in two
//! instead of four (csrc/bn_relu.cpp, an autograd function of libtorch's, with the same
//! numbers as the unfused ops to within rounding). [`crate::layers::BatchNorm::forward_relu`]
//! is its one caller and chooses it when it applies.

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

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
    fn resnet_fused_isa() -> c_int;
    fn resnet_fused_cpu_has(isa: c_int) -> bool;
    fn resnet_fused_set_isa(isa: c_int) -> bool;
}

/// The instruction sets the fused kernels are compiled for. The best the CPU has runs, unless
/// the environment variable `RESNET_FUSED_ISA` (`avx512`, `avx2`, `baseline`) names a lower
/// one that it has, or [`FusedIsa::select`] does: so that each can be tested and timed on one
/// machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedIsa {
    /// x86-64 as every 64-bit x86 CPU has it (SSE2).
    Baseline = 0,
    /// x86-64-v3: AVX2 and FMA.
    Avx2 = 1,
    /// x86-64-v4: AVX-512.
    Avx512 = 2,
}

impl FusedIsa {
    /// All of them, lowest first.
    pub const ALL: [FusedIsa; 3] = [Self::Baseline, Self::Avx2, Self::Avx512];

    /// As `RESNET_FUSED_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The one `RESNET_FUSED_ISA` names, if it names one.
    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The one the kernels run with now.
    pub fn current() -> Self {
        apply_env_isa();
        // SAFETY: reads an atomic in the linked C++ code; no arguments.
        let isa = unsafe { resnet_fused_isa() };
        Self::ALL
            .into_iter()
            .find(|i| *i as c_int == isa)
            .unwrap_or(Self::Baseline)
    }

    /// The versions this CPU can run, best first.
    pub fn on_this_cpu() -> Vec<Self> {
        Self::ALL
            .into_iter()
            .rev()
            .filter(|i| i.available())
            .collect()
    }

    /// Whether this CPU can run this version.
    pub fn available(self) -> bool {
        // SAFETY: a query of the CPU's features; any integer is accepted.
        unsafe { resnet_fused_cpu_has(self as c_int) }
    }

    /// Runs the kernels with this version from now on, in this process; `false` (and no
    /// change) when the CPU lacks it.
    pub fn select(self) -> bool {
        apply_env_isa();
        // SAFETY: stores to an atomic in the linked C++ code when the CPU has `self`.
        unsafe { resnet_fused_set_isa(self as c_int) }
    }
}

/// Selects `RESNET_FUSED_ISA`'s version when the CPU has it, once per process, before the
/// kernels first run and before a [`FusedIsa::select`] (which then wins).
fn apply_env_isa() {
    static APPLIED: Once = Once::new();
    APPLIED.call_once(|| {
        let asked = std::env::var("RESNET_FUSED_ISA").ok();
        if let Some(isa) = asked.as_deref().and_then(FusedIsa::named) {
            // SAFETY: as in `select`; the C++ side leaves the best when the CPU lacks `isa`.
            unsafe { resnet_fused_set_isa(isa as c_int) };
        }
    });
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

/// When `RESNET_FUSED_ISA` is set to something the kernels do not run with (a name they do not
/// know, or an instruction set this CPU lacks), what to say: the variable is then ignored.
pub fn isa_warning() -> Option<String> {
    let asked = std::env::var("RESNET_FUSED_ISA").ok()?;
    let current = FusedIsa::current();
    if asked == current.name() {
        return None;
    }
    let available: Vec<&str> = FusedIsa::on_this_cpu()
        .into_iter()
        .map(FusedIsa::name)
        .collect();
    Some(format!(
        "RESNET_FUSED_ISA={asked} is not one this CPU runs ({}); the fused kernels run {}",
        available.join(", "),
        current.name()
    ))
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
    apply_env_isa();
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
