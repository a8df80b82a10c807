//! Forward and backward passes on tiny inputs: shapes, the papers' equivalences, exact
//! stacking, gradients reaching the input, loss falling on one batch, per-unit gradient norms.

use models::{
    extract_replica, is_channels_last, probe_grad_norms, stack_var_stores, stacked_errors,
    stacked_loss, unit_grad_norms, ActivationPlacement, BlockKind, Downsample, MemoryFormat,
    NetConfig, NetConfigExt, ShortcutKind, ShortcutPath, UnitConfig,
};
use tch::nn::{self, ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// One intra-op thread: the tests already run in parallel threads, and on a busy 2-core
/// machine libtorch's own pool oversubscribes the cores (5× slower here).
fn one_thread() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(1));
}

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

fn build(config: &NetConfig, seed: i64) -> (VarStore, models::Net) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let net = config.build(&vs.root()).expect("test configs build");
    (vs, net)
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).norm().double_value(&[]);
    diff / b.norm().double_value(&[]).max(1e-30)
}

/// Copies every variable of `src` whose name also exists in `dst`.
fn copy_shared(src: &VarStore, dst: &VarStore) {
    let src = src.variables();
    tch::no_grad(|| {
        for (name, mut t) in dst.variables() {
            if let Some(s) = src.get(&name) {
                t.copy_(s);
            }
        }
    });
}

fn set_var(vs: &VarStore, name: &str, value: f64) {
    let mut t = vs
        .variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no {name}"));
    tch::no_grad(|| {
        let _ = t.fill_(value);
    });
}

#[test]
fn cifar_and_stacked_shapes() {
    one_thread();
    let (_vs, net) = build(&NetConfig::cifar(20), 0);
    let xs = Tensor::randn([2, 3, 32, 32], CPU);
    assert_eq!(net.forward_t(&xs, false).size(), [2, 10]);
    assert_eq!(net.forward_single(&xs, true).unwrap().size(), [2, 10]);
    assert_eq!(net.forward_t(&xs.unsqueeze(0), false).size(), [1, 2, 10]);

    let (_vs, net) = build(&NetConfig::cifar(8).with_replicas(3), 0);
    let xs = Tensor::randn([3, 2, 3, 32, 32], CPU);
    assert_eq!(net.forward_stacked(&xs, true).unwrap().size(), [3, 2, 10]);
    assert_eq!(net.forward_t(&xs, true).size(), [3, 2, 10]);
    assert!(
        net.forward_single(&xs.get(0), true).is_err(),
        "K = 3 has no single form"
    );
    assert!(
        net.forward_stacked(&xs.narrow(0, 0, 2), true).is_err(),
        "K must match"
    );
    assert!(format!("{net:?}").contains("Conv2d(16→32, 3×3, stride 2, ×3 replicas)"));
}

#[test]
fn imagenet_shape_and_gradient_to_input() {
    one_thread();
    let (_vs, net) = build(&NetConfig::imagenet(18), 0);
    let xs = Tensor::randn([1, 3, 224, 224], CPU).set_requires_grad(true);
    let logits = net.forward_t(&xs, false);
    assert_eq!(logits.size(), [1, 1000]);
    logits.sum(None).backward();
    let g = xs.grad();
    assert!(max_abs(&g) > 0.0 && bool::try_from(g.isfinite().all()).unwrap());
    let debug = format!("{net:?}");
    assert!(
        debug.contains("Conv2d(3→64, 7×7, stride 2)") && debug.contains("MaxPool"),
        "{debug}"
    );
}

/// 2016 Fig. 2b with λ_s = λ_f = 1 is the identity shortcut.
#[test]
fn scaling_by_one_equals_identity() {
    one_thread();
    let identity = NetConfig::cifar(14);
    let xs = Tensor::randn([1, 4, 3, 16, 16], CPU);
    let (vs_id, net_id) = build(&identity, 1);
    let expected = net_id.forward_stacked(&xs, true).unwrap();
    let run = |lambda_s, lambda_f| {
        let config = identity.with_shortcut(ShortcutKind::Scaling { lambda_s, lambda_f });
        let (vs, net) = build(&config, 2);
        copy_shared(&vs_id, &vs);
        net.forward_stacked(&xs, true).unwrap()
    };
    assert!(max_abs(&(run(1.0, 1.0) - &expected)) < 1e-6);
    // and the factors do act
    assert!(max_abs(&(run(0.5, 1.0) - &expected)) > 1e-3);
    assert!(max_abs(&(run(1.0, 0.5) - &expected)) > 1e-3);
}

fn unit(block: BlockKind, in_channels: i64, out_channels: i64, stride: i64) -> UnitConfig {
    let mid_channels = match block {
        BlockKind::Basic => out_channels,
        BlockKind::Bottleneck => out_channels / 4,
    };
    UnitConfig {
        block,
        in_channels,
        mid_channels,
        out_channels,
        stride,
        shortcut: ShortcutKind::Identity,
        path: ShortcutPath::Identity,
        placement: ActivationPlacement::Original,
        preactivate_before_split: false,
        replicas: 1,
    }
}

/// A residual branch whose last BN has γ = 0 (and β = 0, the init) outputs 0, so the unit
/// is the post-addition activation of its shortcut: (a) ReLU(h(x)); (c), (d) h(x).
#[test]
fn zero_gamma_in_last_bn_leaves_the_shortcut() {
    one_thread();
    tch::manual_seed(3);
    let xs = Tensor::randn([4, 16, 8, 8], CPU);
    let subsample_pad = |x: &Tensor| {
        // option A by hand: [4, 16, 4, 4] → [4, 32, 4, 4], zeros in channels 16..32
        let sub = x.slice(2, None, None, 2).slice(3, None, None, 2);
        Tensor::cat(&[&sub, &sub.zeros_like()], 1)
    };
    let basic = unit(BlockKind::Basic, 16, 16, 1);
    type Expected = Box<dyn Fn(&Tensor) -> Tensor>;
    let cases: Vec<(UnitConfig, &str, Expected)> = vec![
        (basic, "bn2", Box::new(|x: &Tensor| x.relu())),
        (
            UnitConfig {
                out_channels: 32,
                mid_channels: 32,
                stride: 2,
                path: ShortcutPath::ZeroPad,
                ..basic
            },
            "bn2",
            Box::new(move |x: &Tensor| subsample_pad(x).relu()),
        ),
        (
            UnitConfig {
                placement: ActivationPlacement::ReluBeforeAddition,
                ..basic
            },
            "bn2",
            Box::new(|x: &Tensor| x.shallow_clone()),
        ),
        (
            UnitConfig {
                placement: ActivationPlacement::ReluOnlyPreactivation,
                ..basic
            },
            "bn2",
            Box::new(|x: &Tensor| x.shallow_clone()),
        ),
        (
            unit(BlockKind::Bottleneck, 16, 16, 1),
            "bn3",
            Box::new(|x: &Tensor| x.relu()),
        ),
    ];
    for (config, last_bn, post_shortcut) in cases {
        let vs = VarStore::new(Device::Cpu);
        let u = config.build(&vs.root()).unwrap();
        let expected = post_shortcut(&xs);
        let before = u.forward_t(&xs, true);
        assert!(
            max_abs(&(&before - &expected)) > 1e-2,
            "the branch contributes: {config:?}"
        );
        set_var(&vs, &format!("{last_bn}.weight"), 0.0);
        for train in [true, false] {
            let out = u.forward_t(&xs, train);
            assert!(
                max_abs(&(&out - &expected)) < 1e-6,
                "{config:?} train={train}"
            );
        }
    }

    // Bottleneck with a BN'd projection (option B): ReLU(BN(W_s x)).
    let config = UnitConfig {
        path: ShortcutPath::Projection { batch_norm: true },
        ..unit(BlockKind::Bottleneck, 16, 64, 2)
    };
    let vs = VarStore::new(Device::Cpu);
    let u = config.build(&vs.root()).unwrap();
    set_var(&vs, "bn3.weight", 0.0);
    let vars = vs.variables();
    let projected = xs.conv2d(
        &vars["shortcut.conv.weight"],
        None::<Tensor>,
        [2],
        [0],
        [1],
        1,
    );
    let expected = projected
        .batch_norm(
            Some(&vars["shortcut.bn.weight"]),
            Some(&vars["shortcut.bn.bias"]),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            1e-5,
            false,
        )
        .relu();
    assert!(max_abs(&(u.forward_t(&xs, true) - expected)) < 1e-5);
}

/// 2016 Fig. 2c/2d: as b_g → −∞, g → 0, so exclusive gating tends to the bare shortcut
/// (ReLU(x)) and shortcut-only gating to the identity-shortcut unit (ReLU(x + F(x))).
#[test]
fn very_negative_gate_bias_reduces_gating_to_identity() {
    one_thread();
    tch::manual_seed(4);
    let xs = Tensor::randn([4, 16, 8, 8], CPU);
    let identity_unit = unit(BlockKind::Basic, 16, 16, 1);
    let vs_id = VarStore::new(Device::Cpu);
    let reference = identity_unit
        .build(&vs_id.root())
        .unwrap()
        .forward_t(&xs, true);
    for (make, expected) in [
        (
            (|b| ShortcutKind::ExclusiveGating { gate_bias: b }) as fn(f64) -> ShortcutKind,
            xs.relu(),
        ),
        (
            |b| ShortcutKind::ShortcutOnlyGating { gate_bias: b },
            reference,
        ),
    ] {
        let mut previous = f64::INFINITY;
        for b in [-1.0, -4.0, -8.0, -16.0, -100.0] {
            let config = UnitConfig {
                shortcut: make(b),
                ..identity_unit
            };
            let vs = VarStore::new(Device::Cpu);
            let u = config.build(&vs.root()).unwrap();
            copy_shared(&vs_id, &vs);
            let gap = max_abs(&(u.forward_t(&xs, true) - &expected));
            assert!(
                gap < previous,
                "{config:?}: gap {gap} should shrink (was {previous})"
            );
            previous = gap;
        }
        assert!(previous < 1e-6, "b_g = -100 gives the limit: {previous}");
    }

    // Whole net: shortcut-only gating with b_g = −100 is the identity ResNet.
    let config = NetConfig::cifar(14);
    let xs = Tensor::randn([1, 4, 3, 16, 16], CPU);
    let (vs_id, net_id) = build(&config, 5);
    let (vs_g, net_g) = build(
        &config.with_shortcut(ShortcutKind::ShortcutOnlyGating { gate_bias: -100.0 }),
        6,
    );
    copy_shared(&vs_id, &vs_g);
    let gap =
        net_g.forward_stacked(&xs, true).unwrap() - net_id.forward_stacked(&xs, true).unwrap();
    assert!(max_abs(&gap) < 1e-5);
}

/// Every variant of the ablations, on tiny nets.
fn variants() -> Vec<NetConfig> {
    let basic = NetConfig::cifar(8);
    let mut v = vec![
        basic.clone(),
        basic.with_shortcut(ShortcutKind::Plain),
        basic.with_shortcut(ShortcutKind::Scaling {
            lambda_s: 0.0,
            lambda_f: 1.0,
        }),
        basic.with_shortcut(ShortcutKind::Scaling {
            lambda_s: 0.5,
            lambda_f: 1.0,
        }),
        basic.with_shortcut(ShortcutKind::Scaling {
            lambda_s: 0.5,
            lambda_f: 0.5,
        }),
        basic.with_shortcut(ShortcutKind::ExclusiveGating { gate_bias: -6.0 }),
        basic.with_shortcut(ShortcutKind::ShortcutOnlyGating { gate_bias: 0.0 }),
        basic.with_shortcut(ShortcutKind::Conv1x1),
        basic.with_shortcut(ShortcutKind::Dropout { ratio: 0.5 }),
        NetConfig {
            downsample: Downsample::B,
            ..basic.clone()
        },
        NetConfig {
            downsample: Downsample::C,
            ..basic.clone()
        },
    ];
    for placement in ActivationPlacement::ALL.into_iter().skip(1) {
        v.push(basic.with_placement(placement));
    }
    for placement in [
        ActivationPlacement::Original,
        ActivationPlacement::FullPreactivation,
    ] {
        v.push(NetConfig {
            block: BlockKind::Bottleneck,
            downsample: Downsample::B,
            placement,
            ..NetConfig::cifar(11)
        });
    }
    v
}

/// Every variant passes gradient to its input, and fits one small batch: 40 SGD steps cut
/// the loss by at least a quarter (most variants reach < 0.05 from 2.3; exclusive gating
/// with b_g = −6, whose branches start almost shut, about 1.0).
#[test]
fn every_variant_reaches_the_input_and_fits_one_batch() {
    one_thread();
    tch::manual_seed(7);
    let xs = Tensor::randn([1, 16, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [1, 16], (Kind::Int64, Device::Cpu));
    for config in variants() {
        let (vs, net) = build(&config, 8);
        let input = xs.copy().set_requires_grad(true);
        let first = stacked_loss(&net.forward_stacked(&input, true).unwrap(), &labels).unwrap();
        first.backward();
        let g = input.grad();
        assert!(max_abs(&g) > 0.0, "no gradient at the input: {config:?}");
        assert!(bool::try_from(g.isfinite().all()).unwrap());

        let mut opt = nn::Sgd {
            momentum: 0.9,
            ..Default::default()
        }
        .build(&vs, 0.05)
        .unwrap();
        let mut last = 0.0;
        for _ in 0..40 {
            let loss = stacked_loss(&net.forward_stacked(&xs, true).unwrap(), &labels).unwrap();
            opt.backward_step(&loss);
            last = loss.double_value(&[]);
        }
        let first = first.double_value(&[]);
        assert!(
            last < 0.75 * first,
            "{config:?}: loss {first:.3} → {last:.3}"
        );
    }
}

/// Small nets that between them take every path through a unit: option A zero-padding,
/// both gatings, no shortcut, projections with and without BN, pre-activation, BN after the
/// addition, the bottleneck.
fn every_path() -> Vec<NetConfig> {
    vec![
        NetConfig::cifar(14),
        NetConfig::cifar(8).with_shortcut(ShortcutKind::ExclusiveGating { gate_bias: -2.0 }),
        NetConfig::cifar(8).with_shortcut(ShortcutKind::ShortcutOnlyGating { gate_bias: -1.0 }),
        NetConfig::cifar(8).with_shortcut(ShortcutKind::Plain),
        NetConfig::cifar(8).with_shortcut(ShortcutKind::Conv1x1),
        NetConfig {
            downsample: Downsample::B,
            ..NetConfig::cifar(8).with_placement(ActivationPlacement::FullPreactivation)
        },
        NetConfig::cifar(8).with_placement(ActivationPlacement::BnAfterAddition),
        NetConfig {
            block: BlockKind::Bottleneck,
            downsample: Downsample::B,
            ..NetConfig::cifar(11)
        },
    ]
}

/// K = 3 stacked with the weights of 3 single models: same logits, same loss terms, same
/// gradients and same BN running statistics as the 3 models run apart (to 1e-5 relative).
#[test]
fn stacking_is_exact() {
    one_thread();
    let configs = every_path();
    const K: i64 = 3;
    tch::manual_seed(9);
    let xs = Tensor::randn([K, 4, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [K, 4], (Kind::Int64, Device::Cpu));
    for config in configs {
        let singles: Vec<_> = (0..K).map(|k| build(&config, 100 + k)).collect();
        let (mut vs_stacked, stacked) = build(&config.with_replicas(K), 0);
        let stores: Vec<&VarStore> = singles.iter().map(|(vs, _)| vs).collect();
        stack_var_stores(&stores, &mut vs_stacked).unwrap();

        // extracting replica 1 gives single 1 back, bit for bit
        let (mut vs_one, _) = build(&config, 50);
        extract_replica(&vs_stacked, 1, &mut vs_one).unwrap();
        let single1 = singles[1].0.variables();
        for (name, t) in vs_one.variables() {
            assert!(t.equal(&single1[&name]), "{name}");
        }

        let logits = stacked.forward_stacked(&xs, true).unwrap();
        stacked_loss(&logits, &labels).unwrap().backward();
        let stacked_vars = vs_stacked.variables();
        for (k, (vs, net)) in singles.iter().enumerate() {
            let k64 = k as i64;
            let own = net.forward_single(&xs.get(k64), true).unwrap();
            assert!(
                rel_err(&logits.get(k64), &own) < 1e-5,
                "{config:?} logits of {k}"
            );
            stacked_loss(&own.unsqueeze(0), &labels.narrow(0, k64, 1))
                .unwrap()
                .backward();
            for (name, t) in vs.variables() {
                let n = t.size()[0];
                let whole = &stacked_vars[&name];
                let part = whole.narrow(0, k64 * n, n);
                if t.requires_grad() {
                    let (g, g_own) = (whole.grad().narrow(0, k64 * n, n), t.grad());
                    assert!(
                        rel_err(&g, &g_own) < 1e-5,
                        "{config:?} grad of {name} in {k}: {}",
                        rel_err(&g, &g_own)
                    );
                } else {
                    assert!(
                        rel_err(&part, &t) < 1e-5,
                        "{config:?} running stat {name} in {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn error_counts_are_per_replica() {
    one_thread();
    // logits [2, 3, 2]: replica 0 predicts class 0 everywhere, replica 1 class 1
    let logits =
        Tensor::from_slice(&[1f32, 0., 1., 0., 1., 0., 0., 1., 0., 1., 0., 1.]).view([2, 3, 2]);
    let labels = Tensor::from_slice(&[0i64, 1, 1, 0, 0, 1]).view([2, 3]);
    let errors = Vec::<i64>::try_from(stacked_errors(&logits, &labels).unwrap()).unwrap();
    assert_eq!(errors, [2, 2]);
    // loss = Σ_k mean_b CE; here each CE is log(1 + e^{±1})
    let loss = stacked_loss(&logits, &labels).unwrap().double_value(&[]);
    let (right, wrong) = ((1.0 + (-1f64).exp()).ln(), (1.0 + 1f64.exp()).ln());
    let expected = (right + 2.0 * wrong) / 3.0 + (2.0 * wrong + right) / 3.0;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    assert!(stacked_loss(&logits, &labels.narrow(0, 0, 1)).is_err());
}

/// ‖∂E/∂x_l‖ per unit and replica: `run_backward` on the unit inputs and the probes read
/// after `backward()` agree, and a stacked replica's norms are its single model's.
#[test]
fn unit_gradient_norms() {
    one_thread();
    let config = NetConfig::cifar(14).with_replicas(2);
    tch::manual_seed(11);
    let xs = Tensor::randn([2, 4, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [2, 4], (Kind::Int64, Device::Cpu));
    let (vs, net) = build(&config, 12);

    let (logits, inputs) = net.forward_with_unit_inputs(&xs, true).unwrap();
    assert_eq!(inputs.len(), 6);
    assert_eq!(inputs[0].size(), [4, 2 * 16, 12, 12]);
    assert_eq!(inputs[5].size(), [4, 2 * 64, 3, 3]);
    let loss = stacked_loss(&logits, &labels).unwrap();
    let norms = unit_grad_norms(&loss, &inputs, 2, false).unwrap();
    assert_eq!(norms.size(), [6, 2]);
    assert!(bool::try_from(norms.gt(0.0).all()).unwrap());

    let (logits, probes) = net.forward_with_unit_probes(&xs, true).unwrap();
    assert!(
        probe_grad_norms(&probes, 2).is_err(),
        "no gradient before backward"
    );
    stacked_loss(&logits, &labels).unwrap().backward();
    let from_probes = probe_grad_norms(&probes, 2).unwrap();
    assert!(rel_err(&from_probes, &norms) < 1e-5);
    // the same backward filled the parameters' gradients
    let w = &vs.variables()["stage1.unit1.conv1.weight"];
    assert!(w.grad().defined() && max_abs(&w.grad()) > 0.0);

    // replica 1 alone
    let (mut vs_one, one) = build(&config.with_replicas(1), 13);
    extract_replica(&vs, 1, &mut vs_one).unwrap();
    let (logits, inputs) = one
        .forward_with_unit_inputs(&xs.narrow(0, 1, 1), true)
        .unwrap();
    let loss = stacked_loss(&logits, &labels.narrow(0, 1, 1)).unwrap();
    let alone = unit_grad_norms(&loss, &inputs, 1, false).unwrap();
    assert!(rel_err(&norms.narrow(1, 1, 1), &alone) < 1e-5);
}

#[test]
fn memory_formats_give_the_same_numbers_and_keep_their_layout() {
    one_thread();
    let configs = every_path();
    const K: i64 = 2;
    tch::manual_seed(21);
    let xs = Tensor::randn([K, 4, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [K, 4], (Kind::Int64, Device::Cpu));
    for config in configs {
        let (vs, mut net) = build(&config.with_replicas(K), 22);
        let mut run = |format: MemoryFormat| {
            net.set_memory_format(format);
            for mut t in vs.trainable_variables() {
                t.zero_grad();
            }
            let (logits, inputs) = net.forward_with_unit_inputs(&xs, true).unwrap();
            // every unit's input x_l is in the chosen layout: no op along the way
            // (zero-padding shortcuts included) fell back to the other one
            for (l, x) in inputs.iter().enumerate() {
                assert_eq!(
                    is_channels_last(x),
                    format == MemoryFormat::ChannelsLast,
                    "{config:?} {format:?}: x_{l} has strides {:?}",
                    x.stride()
                );
            }
            stacked_loss(&logits, &labels).unwrap().backward();
            let mut grads: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(name, t)| (name, t.grad().copy()))
                .collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            (logits, grads)
        };
        let (logits_nchw, grads_nchw) = run(MemoryFormat::Contiguous);
        let (logits_nhwc, grads_nhwc) = run(MemoryFormat::ChannelsLast);
        assert!(
            rel_err(&logits_nhwc, &logits_nchw) < 1e-5,
            "{config:?} logits"
        );
        assert_eq!(grads_nhwc.len(), grads_nchw.len());
        for ((name, g), (name_nchw, g_nchw)) in grads_nhwc.iter().zip(&grads_nchw) {
            assert_eq!(name, name_nchw);
            assert!(
                rel_err(g, g_nchw) < 1e-4,
                "{config:?} grad of {name}: {}",
                rel_err(g, g_nchw)
            );
        }
    }
}

#[test]
fn channels_last_is_the_cpu_default() {
    let (_vs, net) = build(&NetConfig::cifar(8), 1);
    assert_eq!(net.memory_format(), MemoryFormat::ChannelsLast);
    assert_eq!(
        MemoryFormat::preferred(Device::Cuda(0)),
        MemoryFormat::Contiguous
    );
    let x = Tensor::randn([2, 3, 4, 5], CPU);
    assert!(!is_channels_last(&x));
    let y = MemoryFormat::ChannelsLast.apply(&x);
    assert!(is_channels_last(&y) && y.equal(&x));
    assert_eq!(y.stride(), [60, 1, 15, 3]);
    let z = MemoryFormat::Contiguous.apply(&y);
    assert!(!is_channels_last(&z) && z.is_contiguous() && z.equal(&x));
}

#[test]
fn seeded_dropout_masks_are_each_replicas_own() {
    one_thread();
    let config = NetConfig::cifar(8).with_shortcut(ShortcutKind::Dropout { ratio: 0.5 });
    const K: i64 = 2;
    let seeds = [17i64, 4242];
    tch::manual_seed(31);
    let xs = Tensor::randn([K, 4, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [K, 4], (Kind::Int64, Device::Cpu));
    let singles: Vec<_> = (0..K).map(|k| build(&config, 40 + k)).collect();
    let (mut vs_stacked, stacked) = build(&config.with_replicas(K), 0);
    let stores: Vec<&VarStore> = singles.iter().map(|(vs, _)| vs).collect();
    stack_var_stores(&stores, &mut vs_stacked).unwrap();

    let logits = stacked.forward_stacked_seeded(&xs, true, &seeds).unwrap();
    stacked_loss(&logits, &labels).unwrap().backward();
    let stacked_vars = vs_stacked.variables();
    for (k, (vs, net)) in singles.iter().enumerate() {
        let k64 = k as i64;
        let xk = xs.narrow(0, k64, 1);
        let own = net
            .forward_stacked_seeded(&xk, true, &seeds[k..=k])
            .unwrap();
        assert!(
            rel_err(&logits.narrow(0, k64, 1), &own) < 1e-5,
            "logits of {k}"
        );
        stacked_loss(&own, &labels.narrow(0, k64, 1))
            .unwrap()
            .backward();
        let w = "stage1.unit1.conv1.weight";
        let n = vs.variables()[w].size()[0];
        let g = stacked_vars[w].grad().narrow(0, k64 * n, n);
        assert!(rel_err(&g, &vs.variables()[w].grad()) < 1e-5, "grad of {k}");

        // the masks are random: another seed, other logits; the same seed, the same logits
        let again = net
            .forward_stacked_seeded(&xk, true, &seeds[k..=k])
            .unwrap();
        assert!(again.equal(&own.detach()));
        let other = net
            .forward_stacked_seeded(&xk, true, &[seeds[k] + 1])
            .unwrap();
        assert!(
            rel_err(&other, &own) > 1e-3,
            "replica {k}: dropout drew nothing"
        );
    }
    // eval: no dropout, seeds or not
    let eval = stacked.forward_stacked_seeded(&xs, false, &seeds).unwrap();
    assert!(eval.equal(&stacked.forward_stacked(&xs, false).unwrap()));
    assert!(stacked
        .forward_stacked_seeded(&xs, true, &seeds[..1])
        .is_err());
}

/// All gradients of `vs`, flattened into one fp32 vector (in name order).
fn all_grads(vs: &VarStore) -> Tensor {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::cat(
        &named
            .iter()
            .map(|(_, t)| t.grad().to_kind(Kind::Float).view([-1]))
            .collect::<Vec<_>>(),
        0,
    )
}

/// bf16 activations (autocast's semantics) give the fp32 numbers to bf16's precision, while
/// the weights, their gradients and BN's statistics stay fp32; on every unit path.
///
/// The logits agree to a few 0.1% (8 significant bits a rounding). The gradients are much
/// noisier at this size: batch norm's backward subtracts batch means of bf16-rounded values,
/// and with 8 images of 12×12 those cancel. PyTorch's own autocast is as noisy here:
/// fp32 against `torch.autocast("cpu", dtype=torch.bfloat16)` on the same ResNet-14,
/// batch 8, 12×12 (the net of scripts/bench-pytorch.py, PyTorch 2.11.0) differ by 18.0% in
/// relative norm, 10.6% at batch 32 of 32×32, 6.3% at batch 128.
#[test]
fn bf16_activations_agree_with_fp32_to_bf16_precision() {
    one_thread();
    tch::manual_seed(21);
    let xs = Tensor::randn([1, 8, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [1, 8], (Kind::Int64, Device::Cpu));
    for config in every_path() {
        let (vs32, net32) = build(&config, 7);
        let (vs16, mut net16) = build(&config, 8);
        // the same weights (tests share the global generator, so a seed alone is not enough)
        copy_shared(&vs32, &vs16);
        net16.set_activation_kind(Kind::BFloat16);
        let logits32 = net32.forward_stacked(&xs, true).unwrap();
        let logits16 = net16.forward_stacked(&xs, true).unwrap();
        assert_eq!(logits16.kind(), Kind::BFloat16, "{config:?}");
        let logits16 = logits16.to_kind(Kind::Float);
        assert!(
            rel_err(&logits16, &logits32) < 0.03,
            "{config:?}: logits differ by {}",
            rel_err(&logits16, &logits32)
        );
        stacked_loss(&logits32, &labels).unwrap().backward();
        stacked_loss(&logits16, &labels).unwrap().backward();
        let (g32, g16) = (all_grads(&vs32), all_grads(&vs16));
        assert!(
            rel_err(&g16, &g32) < 0.3,
            "{config:?}: gradients differ by {}",
            rel_err(&g16, &g32)
        );
        // and point the same way
        let cosine = (&g16 * &g32).sum(Kind::Float).double_value(&[])
            / (g16.norm().double_value(&[]) * g32.norm().double_value(&[]));
        assert!(cosine > 0.95, "{config:?}: cosine {cosine}");
        let vars32 = vs32.variables();
        for (name, t) in vs16.variables() {
            assert_eq!(t.kind(), Kind::Float, "{name} stays fp32");
            if t.requires_grad() {
                assert_eq!(t.grad().kind(), Kind::Float, "{name}'s gradient is fp32");
            } else {
                // BN's running statistics, updated from bf16 activations in fp32
                assert!(
                    rel_err(&t, &vars32[&name]) < 0.02,
                    "{config:?} {name}: {}",
                    rel_err(&t, &vars32[&name])
                );
            }
        }
    }
}

/// Stacking in bf16: K = 2 stacked models give each lone model's bf16 logits and gradients
/// (to bf16 rounding: grouped and lone convolutions may round their sums differently).
#[test]
fn stacked_bf16_equals_lone_bf16_per_replica() {
    one_thread();
    const K: i64 = 2;
    tch::manual_seed(5);
    let xs = Tensor::randn([K, 4, 3, 12, 12], CPU);
    let labels = Tensor::randint(10, [K, 4], (Kind::Int64, Device::Cpu));
    for config in every_path() {
        let mut singles: Vec<_> = (0..K).map(|k| build(&config, 200 + k)).collect();
        let (mut vs_stacked, mut stacked) = build(&config.with_replicas(K), 0);
        let stores: Vec<&VarStore> = singles.iter().map(|(vs, _)| vs).collect();
        stack_var_stores(&stores, &mut vs_stacked).unwrap();
        stacked.set_activation_kind(Kind::BFloat16);
        let logits = stacked
            .forward_stacked(&xs, true)
            .unwrap()
            .to_kind(Kind::Float);
        stacked_loss(&logits, &labels).unwrap().backward();
        let stacked_vars = vs_stacked.variables();
        for (k, (vs, net)) in singles.iter_mut().enumerate() {
            let k64 = k as i64;
            net.set_activation_kind(Kind::BFloat16);
            let own = net
                .forward_single(&xs.get(k64), true)
                .unwrap()
                .to_kind(Kind::Float);
            assert!(
                rel_err(&logits.get(k64), &own) < 1e-2,
                "{config:?} logits of {k}: {}",
                rel_err(&logits.get(k64), &own)
            );
            stacked_loss(&own.unsqueeze(0), &labels.narrow(0, k64, 1))
                .unwrap()
                .backward();
            for (name, t) in vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
            {
                let n = t.size()[0];
                let g = stacked_vars[&name].grad().narrow(0, k64 * n, n);
                assert!(
                    rel_err(&g, &t.grad()) < 2e-2,
                    "{config:?} grad of {name} in {k}: {}",
                    rel_err(&g, &t.grad())
                );
            }
        }
    }
}

/// The logged gate (what explains a gated variant's result): each gated unit's mean of
/// σ(W_g x + b_g) per replica, equal to σ(b_g) when W_g = 0, the same for a replica stacked
/// or alone and in either memory layout, and no change to the logits. Nets without gates log
/// none.
#[test]
fn gate_means_are_each_replicas_mean_gate_per_unit() {
    one_thread();
    const K: i64 = 2;
    tch::manual_seed(12);
    let xs = Tensor::randn([K, 4, 3, 12, 12], CPU);
    for shortcut in [
        ShortcutKind::ExclusiveGating { gate_bias: -6.0 },
        ShortcutKind::ShortcutOnlyGating { gate_bias: 0.5 },
    ] {
        let config = NetConfig::cifar(14).with_shortcut(shortcut);
        let singles: Vec<_> = (0..K).map(|k| build(&config, 30 + k)).collect();
        let (mut vs, mut stacked) = build(&config.with_replicas(K), 0);
        let stores: Vec<&VarStore> = singles.iter().map(|(vs, _)| vs).collect();
        stack_var_stores(&stores, &mut vs).unwrap();
        assert!(stacked.has_gates());

        let (logits, means) = stacked.forward_with_gate_means(&xs, false).unwrap();
        assert_eq!(means.len(), stacked.num_units());
        assert!(logits.equal(&stacked.forward_stacked(&xs, false).unwrap()));
        for (k, (_, single)) in singles.iter().enumerate() {
            let k64 = k as i64;
            let (_, own) = single
                .forward_with_gate_means(&xs.narrow(0, k64, 1), false)
                .unwrap();
            for (u, (m, o)) in means.iter().zip(&own).enumerate() {
                assert_eq!(m.size(), [K], "unit {u}");
                let (m, o) = (m.double_value(&[k64]), o.double_value(&[0]));
                assert!((m - o).abs() < 1e-5, "unit {u}, replica {k}: {m} vs {o}");
                assert!(m > 0.0 && m < 1.0);
            }
        }
        // channels-last gives the same means as NCHW
        for layout in [MemoryFormat::ChannelsLast, MemoryFormat::Contiguous] {
            stacked.set_memory_format(layout);
            let (_, other) = stacked.forward_with_gate_means(&xs, false).unwrap();
            for (m, o) in means.iter().zip(&other) {
                assert!(max_abs(&(m - o)) < 1e-5);
            }
        }
        // with W_g = 0 every gate is σ(b_g)
        let b_g = match shortcut {
            ShortcutKind::ExclusiveGating { gate_bias }
            | ShortcutKind::ShortcutOnlyGating { gate_bias } => gate_bias,
            _ => unreachable!(),
        };
        for (name, mut t) in vs.variables() {
            if name.ends_with("shortcut.gate.weight") {
                tch::no_grad(|| {
                    let _ = t.zero_();
                });
            }
        }
        let (_, flat) = stacked.forward_with_gate_means(&xs, false).unwrap();
        let expected = 1.0 / (1.0 + (-b_g).exp());
        for m in &flat {
            assert!(
                max_abs(&(m - expected)) < 1e-6,
                "{m} vs σ({b_g}) = {expected}"
            );
        }
    }
    let (_, plain) = build(&NetConfig::cifar(14), 1);
    assert!(!plain.has_gates());
    let (_, none) = plain
        .forward_with_gate_means(&xs.narrow(0, 0, 1), false)
        .unwrap();
    assert!(none.is_empty());
}

/// W_g is He-initialised, so W_g x adds noise to b_g from the first step: measured here on
/// ResNet-32 at initialisation (random normal inputs with the spread of CIFAR's pixels, std
/// 0.25, BN in training mode), each unit's mean gate is 1–2.2× σ(b_g) with exclusive gating
/// and 2–17× (b_g = −6) or 2–28× (−7) with shortcut-only gating, whose ungated branches make
/// x grow; b_g = 0 starts within 0.07 of one half. So b_g = −6 and −7 start with the residual
/// branch (exclusive) or the shortcut's loss (shortcut-only) nearly off.
#[test]
fn initial_gates_stay_near_sigmoid_of_their_bias() {
    one_thread();
    tch::manual_seed(3);
    let xs = Tensor::randn([1, 32, 3, 32, 32], CPU) * 0.25;
    let sigmoid = |b: f64| 1.0 / (1.0 + (-b).exp());
    for bias in [-6.0, -7.0, 0.0] {
        let most = if bias == -6.0 { 17.0 } else { 28.0 };
        for (shortcut, (least, most)) in [
            (
                ShortcutKind::ExclusiveGating { gate_bias: bias },
                (1.0, 2.2),
            ),
            (
                ShortcutKind::ShortcutOnlyGating { gate_bias: bias },
                (2.0, most),
            ),
        ] {
            let (_vs, net) = build(&NetConfig::cifar(32).with_shortcut(shortcut), 1);
            let (_, means) = net.forward_with_gate_means(&xs, true).unwrap();
            assert_eq!(means.len(), 15);
            for (unit, mean) in means.iter().enumerate() {
                let g = mean.double_value(&[0]);
                let s = sigmoid(bias);
                if bias == 0.0 {
                    assert!((g - 0.5).abs() < 0.07, "{shortcut:?} unit {unit}: {g}");
                } else {
                    assert!(
                        g > least * s && g < most * s,
                        "{shortcut:?} unit {unit}: {g} vs {s}"
                    );
                }
            }
        }
    }
}
