//! Configuration: TOML round trips, unknown fields refused, depth rules, and the matrix of
//! shortcut variants × activation placements (built, or refused with a clear error).

use models::{
    catalogue, ActivationPlacement, BlockKind, ConfigError, Downsample, ModelError, NetConfig,
    NetConfigExt, ShortcutKind,
};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// One intra-op thread: the tests already run in parallel threads, and on a busy 2-core
/// machine libtorch's own pool oversubscribes the cores (5× slower here).
fn one_thread() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(1));
}

#[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Experiment {
    net: NetConfig,
}

fn parse(text: &str) -> Result<NetConfig, toml::de::Error> {
    toml::from_str::<Experiment>(text).map(|e| e.net)
}

/// One of each shortcut variant, with the paper's parameters.
fn all_shortcuts() -> Vec<ShortcutKind> {
    vec![
        ShortcutKind::Identity,
        ShortcutKind::Plain,
        ShortcutKind::Scaling {
            lambda_s: 0.5,
            lambda_f: 1.0,
        },
        ShortcutKind::ExclusiveGating { gate_bias: -6.0 },
        ShortcutKind::ShortcutOnlyGating { gate_bias: 0.0 },
        ShortcutKind::Conv1x1,
        ShortcutKind::Dropout { ratio: 0.5 },
    ]
}

#[test]
fn minimal_file_gets_the_cifar_defaults() {
    one_thread();
    let config = parse("[net]\ndepth = 110\n").unwrap();
    assert_eq!(config, NetConfig::cifar(110));
    assert_eq!(config.downsample, Downsample::A);
    assert_eq!(config.num_classes, 10);
    assert_eq!(config.replicas, 1);
}

#[test]
fn every_variant_is_written_as_documented() {
    one_thread();
    let text = r#"
        [net]
        depth = 110
        shortcut = { exclusive_gating = { gate_bias = -6.0 } }
        replicas = 8
    "#;
    let config = parse(text).unwrap();
    assert_eq!(
        config.shortcut,
        ShortcutKind::ExclusiveGating { gate_bias: -6.0 }
    );
    assert_eq!(config.replicas, 8);

    let text = r#"
        [net]
        family = "cifar"
        depth = 164
        block = "bottleneck"
        placement = "full_preactivation"
        downsample = "b"
        shortcut = "identity"
    "#;
    assert_eq!(
        parse(text).unwrap(),
        NetConfig::from_name("resnet164").unwrap()
    );

    let cases = [
        (r#"shortcut = "plain""#, ShortcutKind::Plain),
        (r#"shortcut = "none""#, ShortcutKind::Plain),
        (r#"shortcut = "conv1x1""#, ShortcutKind::Conv1x1),
        (
            "shortcut = { scaling = { lambda_s = 0.5, lambda_f = 0.5 } }",
            ShortcutKind::Scaling {
                lambda_s: 0.5,
                lambda_f: 0.5,
            },
        ),
        (
            "shortcut = { shortcut_only_gating = { gate_bias = -2.0 } }",
            ShortcutKind::ShortcutOnlyGating { gate_bias: -2.0 },
        ),
        (
            "shortcut = { dropout = { ratio = 0.5 } }",
            ShortcutKind::Dropout { ratio: 0.5 },
        ),
    ];
    for (line, expected) in cases {
        let config = parse(&format!("[net]\ndepth = 20\n{line}\n")).unwrap();
        assert_eq!(config.shortcut, expected, "{line}");
    }
    for (name, placement) in [
        ("original", ActivationPlacement::Original),
        ("bn_after_addition", ActivationPlacement::BnAfterAddition),
        (
            "relu_before_addition",
            ActivationPlacement::ReluBeforeAddition,
        ),
        (
            "relu_only_preactivation",
            ActivationPlacement::ReluOnlyPreactivation,
        ),
        ("full_preactivation", ActivationPlacement::FullPreactivation),
    ] {
        let config = parse(&format!("[net]\ndepth = 20\nplacement = \"{name}\"\n")).unwrap();
        assert_eq!(config.placement, placement);
        assert_eq!(placement.to_string(), name, "Display uses the serde name");
    }
}

#[test]
fn toml_round_trips_every_catalogue_entry_and_variant() {
    one_thread();
    let mut configs: Vec<NetConfig> = catalogue().into_iter().map(|e| e.config).collect();
    configs.extend(
        all_shortcuts()
            .into_iter()
            .map(|s| NetConfig::cifar(32).with_shortcut(s)),
    );
    for config in configs {
        let text = toml::to_string(&Experiment {
            net: config.clone(),
        })
        .unwrap();
        assert_eq!(parse(&text).unwrap(), config, "{text}");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<NetConfig>(&json).unwrap(), config);
    }
}

#[test]
fn unknown_fields_and_variants_are_refused() {
    one_thread();
    let bad = [
        ("[net]\ndepth = 20\nwidth = 2\n", "width"),
        ("[net]\ndepth = 20\nshortcut = { scaling = { lambda_s = 1.0, lambda_f = 1.0, gamma = 1.0 } }\n", "gamma"),
        ("[net]\ndepth = 20\nshortcut = { dropout = { rate = 0.5 } }\n", "rate"),
        ("[net]\ndepth = 20\nshortcut = \"highway\"\n", "highway"),
        ("[net]\ndepth = 20\nplacement = \"preact\"\n", "preact"),
        ("[net]\ndepth = 20\ndownsample = \"d\"\n", "`d`"),
        ("[net]\nblock = \"basic\"\n", "depth"),
    ];
    for (text, word) in bad {
        let err = parse(text).expect_err(text).to_string();
        assert!(
            err.contains(word),
            "error for {text:?} should mention {word}: {err}"
        );
    }
}

#[test]
fn depth_rules_name_the_valid_depths() {
    one_thread();
    for depth in [8, 14, 20, 32, 44, 56, 110, 1202] {
        NetConfig::cifar(depth).validate().unwrap();
    }
    let err = NetConfig::cifar(21).validate().unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidDepth { depth: 21, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("6n+2") && err.to_string().contains("20 or 26"),
        "{err}"
    );
    assert!(NetConfig::cifar(2).validate().is_err());
    assert!(NetConfig::cifar(5).validate().is_err());

    let bottleneck = |depth| NetConfig {
        block: BlockKind::Bottleneck,
        downsample: Downsample::B,
        ..NetConfig::cifar(depth)
    };
    bottleneck(164).validate().unwrap();
    bottleneck(1001).validate().unwrap();
    let err = bottleneck(112).validate().unwrap_err().to_string();
    assert!(err.contains("9n+2"), "{err}");

    for depth in [18, 34, 50, 101, 152] {
        NetConfig::imagenet(depth).validate().unwrap();
    }
    let err = NetConfig::imagenet(20).validate().unwrap_err().to_string();
    assert!(err.contains("18, 34, 50, 101 or 152"), "{err}");
    let basic50 = NetConfig {
        block: BlockKind::Basic,
        ..NetConfig::imagenet(50)
    };
    let err = basic50.validate().unwrap_err().to_string();
    assert!(
        err.contains("bottleneck") && err.contains("Table 1"),
        "{err}"
    );
}

#[test]
fn numeric_settings_are_checked() {
    one_thread();
    let bad = [
        NetConfig::cifar(20).with_shortcut(ShortcutKind::Dropout { ratio: 1.0 }),
        NetConfig::cifar(20).with_shortcut(ShortcutKind::Dropout { ratio: -0.1 }),
        NetConfig::cifar(20).with_shortcut(ShortcutKind::Scaling {
            lambda_s: f64::NAN,
            lambda_f: 1.0,
        }),
        NetConfig::cifar(20).with_shortcut(ShortcutKind::ExclusiveGating {
            gate_bias: f64::NEG_INFINITY,
        }),
        NetConfig::cifar(20).with_replicas(0),
        NetConfig {
            num_classes: 0,
            ..NetConfig::cifar(20)
        },
    ];
    for config in bad {
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidSetting(_)),
            "{config:?}: {err}"
        );
    }
}

#[test]
fn combinations_outside_the_papers_are_refused() {
    one_thread();
    let cases = [
        // bottleneck with zero-padding shortcuts: the papers project where dimensions grow
        (
            NetConfig {
                block: BlockKind::Bottleneck,
                ..NetConfig::cifar(164)
            },
            "downsample = \"b\"",
        ),
        // plain nets have basic units and the original order
        (
            NetConfig {
                block: BlockKind::Bottleneck,
                downsample: Downsample::B,
                ..NetConfig::cifar(164).with_shortcut(ShortcutKind::Plain)
            },
            "basic units only",
        ),
        (
            NetConfig::cifar(20)
                .with_shortcut(ShortcutKind::Plain)
                .with_placement(ActivationPlacement::FullPreactivation),
            "original",
        ),
        // shortcut variants are CIFAR basic-unit experiments
        (
            NetConfig::imagenet(34).with_shortcut(ShortcutKind::Conv1x1),
            "CIFAR nets with basic units",
        ),
        (
            NetConfig {
                block: BlockKind::Bottleneck,
                downsample: Downsample::B,
                ..NetConfig::cifar(164)
                    .with_shortcut(ShortcutKind::ExclusiveGating { gate_bias: -6.0 })
            },
            "CIFAR nets with basic units",
        ),
        // placements on ImageNet
        (
            NetConfig::imagenet(50).with_placement(ActivationPlacement::FullPreactivation),
            "ImageNet",
        ),
    ];
    for (config, phrase) in cases {
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::Unsupported(_)),
            "{config:?}: {err}"
        );
        assert!(
            err.to_string().contains(phrase),
            "{err} should contain {phrase}"
        );
        // build refuses the same way
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(config.build(&vs.root()).is_err());
        assert_eq!(vs.len(), 0, "nothing is created for a refused config");
    }
}

/// Every shortcut variant × every activation placement, on a basic-unit CIFAR net: the
/// accepted set is exactly what the papers define (2016 Table 1 rows use the original unit;
/// 2016 Table 2 rows use identity shortcuts), the rest is refused naming the tables, and
/// every accepted one builds and runs.
#[test]
fn every_shortcut_times_placement_builds_or_is_refused() {
    one_thread();
    tch::manual_seed(0);
    let xs = Tensor::randn([1, 2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let mut built = 0;
    for shortcut in all_shortcuts() {
        for placement in ActivationPlacement::ALL {
            let config = NetConfig::cifar(8)
                .with_shortcut(shortcut)
                .with_placement(placement);
            let defined =
                placement == ActivationPlacement::Original || shortcut == ShortcutKind::Identity;
            let vs = nn::VarStore::new(Device::Cpu);
            match config.build(&vs.root()) {
                Ok(net) => {
                    assert!(defined, "{shortcut} × {placement} should be refused");
                    let logits = net.forward_t(&xs, true);
                    assert_eq!(logits.size(), [1, 2, 10], "{shortcut} × {placement}");
                    assert!(bool::try_from(logits.isfinite().all()).unwrap());
                    built += 1;
                }
                Err(err) => {
                    assert!(!defined, "{shortcut} × {placement} refused: {err}");
                    assert!(
                        matches!(err, ModelError::Config(ConfigError::Unsupported(_))),
                        "{err}"
                    );
                    let msg = err.to_string();
                    assert!(
                        msg.contains(shortcut.name()) && msg.contains(&placement.to_string()),
                        "the error names both variants: {msg}"
                    );
                    assert!(msg.contains("2016 Table"), "{msg}");
                }
            }
        }
    }
    // 7 shortcuts with the original unit + 4 more placements with identity shortcuts
    assert_eq!(built, 7 + 4);
}

#[test]
fn bottleneck_units_take_every_placement_and_options_b_c() {
    one_thread();
    let xs = Tensor::randn([1, 2, 3, 8, 8], (Kind::Float, Device::Cpu));
    for placement in ActivationPlacement::ALL {
        for downsample in [Downsample::B, Downsample::C] {
            let config = NetConfig {
                block: BlockKind::Bottleneck,
                downsample,
                placement,
                ..NetConfig::cifar(11)
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let net = config.build(&vs.root()).unwrap();
            assert_eq!(
                net.forward_t(&xs, true).size(),
                [1, 2, 10],
                "{placement} {downsample}"
            );
        }
    }
}
