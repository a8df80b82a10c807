//! Parameter counts and multiply-adds against the papers, the counts of built networks
//! against the analytic ones, the layout, and the catalogue.

use models::{
    catalogue, summarize, ActivationPlacement, BlockKind, ConfigError, Downsample, ModelError,
    NetConfig, NetConfigExt, ShortcutKind,
};
use tch::nn;
use tch::Device;

/// One intra-op thread: the tests already run in parallel threads, and on a busy 2-core
/// machine libtorch's own pool oversubscribes the cores (5× slower here).
fn one_thread() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(1));
}

fn summary(name: &str) -> models::Summary {
    let config = NetConfig::from_name(name).expect("a catalogue name");
    config.summary().expect("catalogue configs are valid")
}

/// `value` rounded to `decimals` decimals, as the papers print it.
fn rounded(value: i64, scale: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value as f64 / scale * f).round() / f
}

/// 2015 Table 6 (CIFAR-10, option A, 10 classes) and 2016 Table 3.
#[test]
fn cifar_parameter_counts_match_the_papers() {
    one_thread();
    // (name, paper's figure in millions, decimals printed)
    let table = [
        ("resnet20", 0.27, 2),
        ("resnet32", 0.46, 2),
        ("resnet44", 0.66, 2),
        ("resnet56", 0.85, 2),
        ("resnet110", 1.7, 1),
        ("resnet1202", 19.4, 1),
        ("resnet164", 1.7, 1),
    ];
    for (name, paper, decimals) in table {
        let s = summary(name);
        assert_eq!(
            rounded(s.params, 1e6, decimals),
            paper,
            "{name}: {} params",
            s.params
        );
    }
    // Exact figures, as printed by akamaster/pytorch_resnet_cifar10 for the same layers.
    assert_eq!(summary("resnet20").params, 269_722);
    assert_eq!(summary("resnet1202").params, 19_421_274);
    // 2016's 10.2M for ResNet-1001 counts conv and fc weights only: 10.19M; with BN's γ, β
    // it is 10.33M. (2015's 19.4M for ResNet-1202 is the count with BN: 19.33M without.)
    let s = summary("resnet1001");
    assert_eq!(
        rounded(s.params_excluding_bn, 1e6, 1),
        10.2,
        "{}",
        s.params_excluding_bn
    );
    assert_eq!(rounded(s.params, 1e6, 2), 10.33);
    assert_eq!(
        rounded(summary("resnet1202").params_excluding_bn, 1e6, 2),
        19.33
    );
    // plain twins have the same layers (option A adds no parameters)
    for depth in [20, 32, 44, 56, 110] {
        assert_eq!(
            summary(&format!("plain{depth}")).params,
            summary(&format!("resnet{depth}")).params
        );
    }
}

/// 2015 Table 1 (last rows) and Table 3: parameters and FLOPs (multiply-adds) at 224×224.
#[test]
fn imagenet_counts_match_table_1() {
    one_thread();
    // (name, params in millions, 10^9 mult-adds)
    let table = [
        ("resnet18", 11.7, 1.8),
        ("resnet34", 21.8, 3.6),
        ("resnet50", 25.6, 3.8),
        ("resnet101", 44.5, 7.6),
        ("resnet152", 60.2, 11.3),
        ("plain18", 11.5, 1.8),
        ("plain34", 21.6, 3.6),
    ];
    for (name, params, gmacs) in table {
        let s = summary(name);
        assert_eq!(s.input_size, [224, 224]);
        assert_eq!(
            rounded(s.params, 1e6, 1),
            params,
            "{name}: {} params",
            s.params
        );
        // The table's FLOPs are rounded inconsistently (3.66 → "3.6", 7.57 → "7.6"), so
        // compare within 2%. ResNet-50 with the stride in the 3×3 (torchvision v1.5,
        // 4.09G) would fail this.
        let ratio = s.macs as f64 / 1e9 / gmacs;
        assert!(
            (ratio - 1.0).abs() < 0.02,
            "{name}: {} mult-adds vs paper {gmacs}G",
            s.macs
        );
    }
    // torchvision's exact parameter counts for the same layers
    assert_eq!(summary("resnet18").params, 11_689_512);
    assert_eq!(summary("resnet50").params, 25_557_032);
    // stride in the first 1×1 of a downsampling bottleneck (2015), not in the 3×3 (v1.5)
    assert!(summary("resnet50").macs < 3_900_000_000);
}

/// The analytic counts are what `build` creates: every catalogue net (the big ones too) and
/// every variant, counted from the var store.
#[test]
fn built_networks_have_the_analytic_counts_and_paper_like_names() {
    one_thread();
    let mut configs: Vec<NetConfig> = catalogue().into_iter().map(|e| e.config).collect();
    let shortcuts = [
        ShortcutKind::Scaling {
            lambda_s: 0.5,
            lambda_f: 0.5,
        },
        ShortcutKind::ExclusiveGating { gate_bias: -6.0 },
        ShortcutKind::ShortcutOnlyGating { gate_bias: -6.0 },
        ShortcutKind::Conv1x1,
        ShortcutKind::Dropout { ratio: 0.5 },
    ];
    configs.extend(
        shortcuts
            .iter()
            .map(|&s| NetConfig::cifar(20).with_shortcut(s)),
    );
    configs.extend(
        ActivationPlacement::ALL
            .iter()
            .map(|&p| NetConfig::cifar(20).with_placement(p)),
    );
    for downsample in [Downsample::B, Downsample::C] {
        configs.push(NetConfig {
            downsample,
            ..NetConfig::cifar(20)
        });
        configs.push(NetConfig {
            downsample,
            ..NetConfig::cifar(20).with_placement(ActivationPlacement::ReluOnlyPreactivation)
        });
    }
    configs.push(NetConfig {
        downsample: Downsample::A,
        ..NetConfig::imagenet(34)
    });
    configs.push(NetConfig::cifar(20).with_replicas(3));
    for config in configs {
        let s = config.summary().unwrap();
        assert_eq!(s.depth, config.depth, "{config:?}");
        let vs = nn::VarStore::new(Device::Cpu);
        let net = config.build(&vs.root()).unwrap();
        let built: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(built, s.params_total, "{config:?}");
        assert_eq!(net.num_units(), s.residual_units);
        let names = vs.variables();
        for name in [
            "stem.conv.weight",
            "stage2.unit1.conv1.weight",
            "stage2.unit1.conv2.weight",
            "head.fc.weight",
        ] {
            assert!(names.contains_key(name), "{name} missing in {config:?}");
        }
    }
}

#[test]
fn variant_weights_have_their_own_names_and_sizes() {
    one_thread();
    let names = |config: NetConfig| {
        let vs = nn::VarStore::new(Device::Cpu);
        config.build(&vs.root()).unwrap();
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        v.sort();
        v
    };
    let gating = names(
        NetConfig::cifar(20).with_shortcut(ShortcutKind::ExclusiveGating { gate_bias: -6.0 }),
    );
    let gate_w = gating
        .iter()
        .find(|(n, _)| n == "stage2.unit1.shortcut.gate.weight")
        .unwrap();
    assert_eq!(
        gate_w.1,
        [32, 16, 1, 1],
        "W_g maps C_in to C_out (a gate per channel)"
    );
    assert!(gating
        .iter()
        .any(|(n, s)| n == "stage3.unit3.shortcut.gate.bias" && s == &[64]));
    let preact = names(NetConfig::from_name("resnet164").unwrap());
    assert!(preact
        .iter()
        .any(|(n, s)| n == "stage1.unit1.shortcut.conv.weight" && s == &[64, 16, 1, 1]));
    assert!(preact
        .iter()
        .any(|(n, s)| n == "stage3.unit18.conv3.weight" && s == &[256, 64, 1, 1]));
    assert!(preact
        .iter()
        .any(|(n, s)| n == "head.bn.weight" && s == &[256]));
    assert!(
        !preact.iter().any(|(n, _)| n.starts_with("stem.bn")),
        "(e) has a bare stem conv"
    );
    // 2016 Fig. 2e: a 1×1 projection with its BN on every unit, not only where shapes change
    let conv1x1 = names(NetConfig::cifar(20).with_shortcut(ShortcutKind::Conv1x1));
    for unit in [
        "stage1.unit1",
        "stage1.unit3",
        "stage2.unit1",
        "stage3.unit2",
    ] {
        for name in ["conv.weight", "bn.weight", "bn.bias"] {
            let name = format!("{unit}.shortcut.{name}");
            assert!(conv1x1.iter().any(|(n, _)| n == &name), "{name}");
        }
    }
    let after = names(NetConfig::cifar(20).with_placement(ActivationPlacement::BnAfterAddition));
    assert!(after.iter().any(|(n, _)| n == "stage1.unit1.bn_out.weight"));
    assert!(!after.iter().any(|(n, _)| n == "stage1.unit1.bn2.weight"));
    // K replicas concatenate along dim 0
    let stacked = names(NetConfig::cifar(20).with_replicas(4));
    assert!(stacked
        .iter()
        .any(|(n, s)| n == "stage2.unit1.conv1.weight" && s == &[128, 16, 3, 3]));
    assert!(stacked
        .iter()
        .any(|(n, s)| n == "head.fc.weight" && s == &[40, 64]));
}

#[test]
fn layout_follows_table_1() {
    one_thread();
    let s = summary("resnet20");
    let rows: Vec<_> = s
        .layout
        .iter()
        .map(|r| (r.layer.as_str(), r.output_size, r.units))
        .collect();
    assert_eq!(
        rows,
        [
            ("stem", [32, 32], 1),
            ("stage1", [32, 32], 3),
            ("stage2", [16, 16], 3),
            ("stage3", [8, 8], 3),
            ("head", [1, 1], 1)
        ]
    );
    assert_eq!(s.layout[2].description, "3×3, 32; 3×3, 32");
    assert_eq!(s.layout[2].shortcuts, "zero_pad ×1, identity ×2");
    assert_eq!(s.residual_units, 9);

    let s = summary("resnet50");
    let sizes: Vec<_> = s.layout.iter().map(|r| r.output_size[0]).collect();
    assert_eq!(sizes, [112, 56, 56, 28, 14, 7, 1]);
    assert_eq!(s.layout[3].layer, "stage2 (conv3_x)");
    assert_eq!(s.layout[3].description, "1×1, 128; 3×3, 128; 1×1, 512");
    assert_eq!(s.layout.iter().map(|r| r.units).sum::<usize>() - 3, 16);

    // a CIFAR net summarised at 64×64 has 4× the conv mult-adds
    let c = NetConfig::cifar(20);
    let (small, big) = (
        summarize(&c, (32, 32)).unwrap(),
        summarize(&c, (64, 64)).unwrap(),
    );
    let fc = 64 * 10;
    assert_eq!(big.macs - fc, 4 * (small.macs - fc));

    // JSON for `runner models --json`, text for the terminal
    let json = serde_json::to_value(summary("resnet110")).unwrap();
    assert_eq!(json["name"], "resnet110");
    assert_eq!(json["params"], 1_727_962);
    assert_eq!(json["layout"][3]["output_size"], serde_json::json!([8, 8]));
    let text = summary("resnet110").to_string();
    assert!(
        text.starts_with("resnet110: cifar basic depth 110, 54 units"),
        "{text}"
    );
    assert!(text.contains("[3×3, 64; 3×3, 64] × 18"), "{text}");
}

#[test]
fn catalogue_names_resolve() {
    one_thread();
    let entries = catalogue();
    let mut names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), entries.len(), "names are unique");
    for wanted in [
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "resnet164",
        "resnet1001",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "plain18",
        "plain34",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing");
    }
    for entry in &entries {
        entry.config.validate().unwrap();
        assert_eq!(NetConfig::from_name(&entry.name).unwrap(), entry.config);
        assert_eq!(
            entry.config.summary().unwrap().name.as_deref(),
            Some(entry.name.as_str())
        );
    }
    assert_eq!(
        NetConfig::from_name("ResNet-110").unwrap(),
        NetConfig::cifar(110)
    );
    let r164 = NetConfig::from_name("resnet164").unwrap();
    assert_eq!(
        (r164.block, r164.placement, r164.downsample),
        (
            BlockKind::Bottleneck,
            ActivationPlacement::FullPreactivation,
            Downsample::B
        )
    );
    assert_eq!(NetConfig::from_name("resnet50").unwrap().num_classes, 1000);
    // any CIFAR depth 6n+2
    assert_eq!(
        NetConfig::from_name("resnet8").unwrap(),
        NetConfig::cifar(8)
    );
    assert_eq!(
        NetConfig::from_name("plain26").unwrap().shortcut,
        ShortcutKind::Plain
    );
    assert!(matches!(
        NetConfig::from_name("resnet21"),
        Err(ModelError::Config(ConfigError::InvalidDepth { .. }))
    ));
    let err = NetConfig::from_name("vgg16").unwrap_err();
    assert!(matches!(err, ModelError::UnknownName { .. }));
    assert!(err.to_string().contains("resnet1001"), "{err}");
}

/// He init with fan_out of one replica: std = sqrt(2 / (k²·C_out)); BN γ = 1, β = 0; fc
/// ~ U(±1/√fan_in).
#[test]
fn initialisation_is_the_papers() {
    one_thread();
    let config = NetConfig::cifar(20).with_replicas(2);
    let vs = nn::VarStore::new(Device::Cpu);
    config.build(&vs.root()).unwrap();
    let vars = vs.variables();
    // [2·64, 64, 3, 3]: 36,864 draws per replica, so the sample std is within ~1%
    let w = &vars["stage3.unit2.conv1.weight"];
    let expected = (2.0f64 / (3.0 * 3.0 * 64.0)).sqrt();
    for k in 0..2 {
        let std = w.narrow(0, 64 * k, 64).std(true).double_value(&[]);
        assert!(
            (std / expected - 1.0).abs() < 0.03,
            "replica {k}: std {std} vs {expected}"
        );
    }
    let stem = &vars["stem.conv.weight"]; // [2·16, 3, 3, 3]: fan_out = 9·16
    let std = stem.std(true).double_value(&[]);
    assert!(
        (std / (2.0f64 / 144.0).sqrt() - 1.0).abs() < 0.15,
        "stem std {std}"
    );
    let fc = &vars["head.fc.weight"];
    assert!(fc.abs().max().double_value(&[]) <= 1.0 / 8.0);
    assert!(
        fc.std(true).double_value(&[]) > 0.05,
        "U(±1/8) has std 0.072"
    );
    for name in ["stem.bn.weight", "stage2.unit1.bn2.weight"] {
        assert_eq!(vars[name].min().double_value(&[]), 1.0, "{name}");
        assert_eq!(vars[name].max().double_value(&[]), 1.0, "{name}");
    }
    assert_eq!(
        vars["stage2.unit1.bn2.bias"].abs().max().double_value(&[]),
        0.0
    );
}

/// The feature maps the memory estimate starts from, counted by hand: every convolution's
/// output for one 32×32 image (16×32×32 = 16,384 in stage 1, 8,192 in stage 2, 4,096 in
/// stage 3; two per basic unit, one for the stem).
#[test]
fn feature_elements_count_every_convolutions_output() {
    let per_unit = |n: i64| 2 * n * (16_384 + 8_192 + 4_096);
    assert_eq!(summary("resnet20").feature_elements, 16_384 + per_unit(3));
    assert_eq!(summary("resnet110").feature_elements, 16_384 + per_unit(18));
    // option B adds a 1×1 projection where the shape changes: 32×16×16 and 64×8×8
    let mut b = NetConfig::cifar(20);
    b.downsample = Downsample::B;
    assert_eq!(
        b.summary().unwrap().feature_elements,
        16_384 + per_unit(3) + 8_192 + 4_096
    );
}
