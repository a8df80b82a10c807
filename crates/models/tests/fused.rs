//! The fused BN–(add–)ReLU against libtorch's separate ops: the same outputs, running
//! statistics and gradients (input, γ, β, shortcut) to within fp32 or bf16 rounding, on a
//! stacked layer of two replicas, with every version of the kernels this CPU can run
//! (AVX-512, AVX2, baseline x86-64).

use models::fused::FusedIsa;
use models::layers::{BatchNorm, BatchNormConfig};
use models::{is_channels_last, MemoryFormat};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Two intra-op threads, so that the per-thread partial sums are combined as in training.
fn two_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(2));
}

/// Held while drawing: the tests run in parallel threads and libtorch has one global
/// generator.
static DRAWS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A BN of `channels` × `replicas` with γ, β and running statistics drawn from `seed`.
fn norm(channels: i64, replicas: i64, seed: i64) -> (VarStore, BatchNorm) {
    let vs = VarStore::new(Device::Cpu);
    let bn = BatchNormConfig { channels, replicas }
        .build(&vs.root())
        .expect("a BN builds");
    tch::manual_seed(seed);
    tch::no_grad(|| {
        // in name order: a HashMap's order would change the draws from run to run
        let vars: std::collections::BTreeMap<_, _> = vs.variables().into_iter().collect();
        for (name, mut t) in vars {
            let n = t.size()[0];
            let value = match name.as_str() {
                "weight" => Tensor::rand([n], (Kind::Float, Device::Cpu)) + 0.5,
                "bias" => Tensor::randn([n], (Kind::Float, Device::Cpu)) * 0.5,
                "running_mean" => Tensor::randn([n], (Kind::Float, Device::Cpu)),
                _ => Tensor::rand([n], (Kind::Float, Device::Cpu)) + 0.5,
            };
            t.copy_(&value);
        }
    });
    (vs, bn)
}

/// `t` as a leaf that requires grad, in `kind`, channels-last.
fn leaf(t: &Tensor, kind: Kind) -> Tensor {
    MemoryFormat::ChannelsLast
        .apply(&t.to_kind(kind))
        .detach()
        .set_requires_grad(true)
}

struct Outcome {
    ys: Tensor,
    dx: Tensor,
    dr: Option<Tensor>,
    dgamma: Tensor,
    dbeta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// One training forward and backward of the loss Σ y·w through the fused kernels of `fused`'s
/// instruction set, or the unfused ops.
fn run(kind: Kind, with_residual: bool, fused: Option<FusedIsa>) -> Outcome {
    two_threads();
    // held throughout: the instruction set chosen is the process's
    let _draws = DRAWS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(isa) = fused {
        assert!(isa.select(), "{isa:?} is available");
        assert_eq!(FusedIsa::current(), isa);
    }
    // 26 channels: whole vectors of each version's width (16, 8, 4) and one-channel rest
    let (k, c, shape) = (2, 13, [16i64, 26, 9, 7]);
    tch::manual_seed(7);
    let bf16_values = |t: Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
    let x0 = bf16_values(Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 3.0 + 1.0);
    let r0 = bf16_values(Tensor::randn(shape, (Kind::Float, Device::Cpu)));
    let w = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let (vs, bn) = norm(c, k, 11);
    let x = leaf(&x0, kind);
    let r = leaf(&r0, kind);
    let residual = with_residual.then_some(&r);
    let ys = if fused.is_some() {
        bn.forward_relu(&x, residual, true)
    } else {
        bn.forward_relu_unfused(&x, residual, true)
    };
    assert!(is_channels_last(&ys) && ys.kind() == kind);
    (ys.to_kind(Kind::Float) * &w).sum(Kind::Float).backward();
    let vars = vs.variables();
    Outcome {
        ys: ys.to_kind(Kind::Float),
        dx: x.grad().to_kind(Kind::Float),
        dr: with_residual.then(|| r.grad().to_kind(Kind::Float)),
        dgamma: vars["weight"].grad(),
        dbeta: vars["bias"].grad(),
        running_mean: vars["running_mean"].detach(),
        running_var: vars["running_var"].detach(),
    }
}

/// max |a − b| / max |b|.
fn err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1e-30)
}

/// Fused and unfused (libtorch's separate ops) in `kind`, each against fp32 separate ops on
/// the same inputs (bf16 values, so that every precision starts from the same numbers): the
/// fused result is within `tolerance` (relative to the largest value), or at most 1.25 times
/// as far as libtorch's own result in `kind`. In fp32 that is plainly "within `tolerance` of
/// libtorch". In bf16 with a shortcut the separate ops round BN's output and then the sum, the
/// fused op the sum only; where BN(x) + r is within a rounding of 0 the ReLUs of the two
/// decide differently, so neither equals the other, and what is asked is that the fused one
/// is no further from exact than libtorch's.
fn compare(kind: Kind, with_residual: bool, tolerance: f64) {
    let isas = FusedIsa::on_this_cpu();
    assert!(
        isas.contains(&FusedIsa::Baseline),
        "every x86-64 CPU runs the baseline"
    );
    for isa in isas {
        compare_with(isa, kind, with_residual, tolerance);
    }
}

fn compare_with(isa: FusedIsa, kind: Kind, with_residual: bool, tolerance: f64) {
    let fused = run(kind, with_residual, Some(isa));
    let plain = run(kind, with_residual, None);
    let exact = run(Kind::Float, with_residual, None);
    let none = Tensor::zeros([1], (Kind::Float, Device::Cpu));
    let pick = |o: &Outcome, what: &str| -> Tensor {
        match what {
            "output" => o.ys.shallow_clone(),
            "∂/∂x" => o.dx.shallow_clone(),
            "∂/∂residual" => o.dr.as_ref().unwrap_or(&none).shallow_clone(),
            "∂/∂γ" => o.dgamma.shallow_clone(),
            "∂/∂β" => o.dbeta.shallow_clone(),
            "running mean" => o.running_mean.shallow_clone(),
            _ => o.running_var.shallow_clone(),
        }
    };
    let quantities = [
        "output",
        "∂/∂x",
        "∂/∂residual",
        "∂/∂γ",
        "∂/∂β",
        "running mean",
        "running var",
    ];
    for what in quantities {
        let reference = pick(&exact, what);
        let (e_fused, e_plain) = (
            err(&pick(&fused, what), &reference),
            err(&pick(&plain, what), &reference),
        );
        assert!(
            e_fused <= tolerance.max(1.25 * e_plain),
            "{isa:?}, {kind:?}, residual {with_residual}: {what} is {e_fused:e} from fp32, \
             libtorch's {e_plain:e} (tolerance {tolerance:e})"
        );
    }
    // the running statistics moved: the comparison is not between two untouched buffers
    let (before, _) = {
        let _draws = DRAWS.lock().unwrap_or_else(|e| e.into_inner());
        norm(13, 2, 11)
    };
    let before = before.variables();
    assert!(err(&before["running_mean"], &fused.running_mean) > 1e-3);
    assert!(err(&before["running_var"], &fused.running_var) > 1e-3);
}

#[test]
fn fused_bn_relu_equals_the_separate_ops_in_fp32() {
    compare(Kind::Float, false, 2e-6);
}

#[test]
fn fused_bn_add_relu_equals_the_separate_ops_in_fp32() {
    compare(Kind::Float, true, 2e-6);
}

#[test]
fn fused_bn_relu_equals_the_separate_ops_in_bf16() {
    compare(Kind::BFloat16, false, 2e-6);
}

#[test]
fn fused_bn_add_relu_equals_the_separate_ops_in_bf16() {
    compare(Kind::BFloat16, true, 2e-6);
}
