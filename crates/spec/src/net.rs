//! The network as data: one enum per ablation axis, and [`NetConfig`], which names a whole
//! network. The `models` crate builds modules from these; nothing here touches tensors.
//!
//! Everything here is plain data (serde, `deny_unknown_fields`), so an experiment file can
//! name any network of the two papers. In TOML:
//!
//! ```toml
//! [model]
//! depth = 110
//! shortcut = { exclusive_gating = { gate_bias = -6.0 } }
//! # family = "cifar", block = "basic", placement = "original", downsample = "a",
//! # num_classes = 10 are the defaults; `units_per_stage = n` may stand for the depth
//! ```
//!
//! References: "2015" is He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition*
//! (arXiv:1512.03385); "2016" is He, Zhang, Ren, Sun, *Identity Mappings in Deep Residual
//! Networks* (arXiv:1603.05027).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a network description is not one the papers define.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The depth is not one the papers define for this family and unit type.
    #[error("invalid depth {depth}: {reason}")]
    InvalidDepth {
        /// The depth asked for.
        depth: usize,
        /// Which depths are valid, and where the papers define them.
        reason: String,
    },
    /// A combination of variants that neither paper defines.
    #[error("unsupported combination: {0}")]
    Unsupported(String),
    /// A numeric setting out of its range (λ not finite, dropout ratio ≥ 1, replicas 0, ...).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Which input the network is built for: it fixes the stem, the stage widths and the valid
/// depths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// CIFAR-10 networks of 2015 sec. 4.2: a 3×3 conv with 16 filters, three stages of
    /// 16/32/64 filters on 32/16/8 maps, global average pooling, a fully connected layer.
    /// Depth 6n+2 with basic units, 9n+2 with bottleneck units (2016 appendix).
    #[default]
    Cifar,
    /// ImageNet networks of 2015 Table 1: 7×7/2 conv with 64 filters, 3×3/2 max pool, four
    /// stages (conv2_x … conv5_x) of 64/128/256/512 filters; depths 18, 34, 50, 101, 152.
    Imagenet,
}

/// The residual unit's body (2015 Fig. 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3×3 convolutions (2015 Fig. 5 left).
    #[default]
    Basic,
    /// 1×1 (reduce) → 3×3 → 1×1 (expand ×4) (2015 Fig. 5 right). As in the paper, a
    /// downsampling unit strides in its first 1×1 convolution.
    Bottleneck,
}

impl BlockKind {
    /// Weighted layers a CIFAR network gains per unit in each of its three stages: depth
    /// 6n+2 with basic units (2015 sec. 4.2), 9n+2 with bottleneck units (2016 appendix).
    pub fn cifar_layers_per_unit(self) -> usize {
        match self {
            BlockKind::Basic => 6,
            BlockKind::Bottleneck => 9,
        }
    }

    /// The depth of a CIFAR network with `n` units per stage: 6n+2 or 9n+2.
    pub fn cifar_depth(self, n: usize) -> usize {
        self.cifar_layers_per_unit() * n + 2
    }
}

/// How a shortcut crosses a change of shape (2015 sec. 3.3 and Table 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// Option A: identity on a strided subsample, extra channels zero-padded; parameter-free.
    /// The CIFAR default (2015 sec. 4.2).
    #[default]
    A,
    /// Option B: 1×1 projection shortcuts where the shape changes, identity elsewhere.
    B,
    /// Option C: 1×1 projection shortcuts on every unit.
    C,
}

/// What the shortcut does (2016 Table 1 and Fig. 2), and the plain network that has none.
///
/// In TOML: `shortcut = "identity"`, `shortcut = "plain"`, `shortcut = "conv1x1"`,
/// `shortcut = { scaling = { lambda_s = 0.5, lambda_f = 1.0 } }`,
/// `shortcut = { exclusive_gating = { gate_bias = -6.0 } }`,
/// `shortcut = { shortcut_only_gating = { gate_bias = 0.0 } }`,
/// `shortcut = { dropout = { ratio = 0.5 } }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ShortcutKind {
    /// x_{l+1} = f(h(x_l) + F(x_l)) with h the identity (2015 eq. 1; 2016 Fig. 2a).
    #[default]
    Identity,
    /// No shortcut at all: the plain network of 2015 sec. 4.1 (same layers, no addition).
    #[serde(alias = "none")]
    Plain,
    /// Constant scaling (2016 Fig. 2b, Table 1): λ_s·h(x) + λ_f·F(x). λ_s = 0 is a plain
    /// net; the paper's rows are (λ_s, λ_f) = (0, 1), (0.5, 1), (0.5, 0.5).
    Scaling {
        /// λ_s, the shortcut's factor.
        lambda_s: f64,
        /// λ_f, the residual branch's factor.
        lambda_f: f64,
    },
    /// Exclusive gating (2016 Fig. 2c): g(x) = σ(W_g x + b_g), W_g a 1×1 convolution;
    /// output (1 − g)·h(x) + g·F(x).
    ExclusiveGating {
        /// Initial b_g (the paper tries 0 … −7; −6 is best).
        gate_bias: f64,
    },
    /// Shortcut-only gating (2016 Fig. 2d): (1 − g)·h(x) + F(x).
    ShortcutOnlyGating {
        /// Initial b_g.
        gate_bias: f64,
    },
    /// A 1×1 convolution shortcut on every unit (2016 Fig. 2e), with BN after it: the paper
    /// calls it option C of the 2015 paper, and Fig. 2's caption says its BN layers, though not
    /// drawn, follow every weight layer.
    #[serde(rename = "conv1x1")]
    Conv1x1,
    /// Dropout on the shortcut's output during training (2016 Fig. 2f).
    Dropout {
        /// Probability of dropping an element (the paper: 0.5).
        ratio: f64,
    },
}

/// Where BN and ReLU sit relative to the addition (2016 Fig. 4, Table 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationPlacement {
    /// (a) weight–BN–ReLU–weight–BN, addition, ReLU (2015).
    #[default]
    Original,
    /// (b) weight–BN–ReLU–weight, addition, BN, ReLU.
    BnAfterAddition,
    /// (c) weight–BN–ReLU–weight–BN–ReLU, addition.
    ReluBeforeAddition,
    /// (d) ReLU–weight–BN–ReLU–weight–BN, addition.
    ReluOnlyPreactivation,
    /// (e) BN–ReLU–weight–BN–ReLU–weight, addition (the pre-activation unit).
    FullPreactivation,
}

impl ActivationPlacement {
    /// Every placement, in the order of 2016 Fig. 4.
    pub const ALL: [ActivationPlacement; 5] = [
        Self::Original,
        Self::BnAfterAddition,
        Self::ReluBeforeAddition,
        Self::ReluOnlyPreactivation,
        Self::FullPreactivation,
    ];

    /// (d) and (e): the activation moves in front of the weights, which changes the stem,
    /// the head and where the first activation sits (2016 sec. 4.1, last paragraph).
    pub fn is_preactivation(self) -> bool {
        matches!(self, Self::ReluOnlyPreactivation | Self::FullPreactivation)
    }
}

impl ShortcutKind {
    /// The serde name of the variant.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Plain => "plain",
            Self::Scaling { .. } => "scaling",
            Self::ExclusiveGating { .. } => "exclusive_gating",
            Self::ShortcutOnlyGating { .. } => "shortcut_only_gating",
            Self::Conv1x1 => "conv1x1",
            Self::Dropout { .. } => "dropout",
        }
    }

    /// Checks the numeric parameters (finite factors, scalings not negative, dropout ratio
    /// in [0, 1)).
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(ConfigError::InvalidSetting(format!(
                    "{name} = {v} must be finite"
                )))
            }
        };
        // 2016 Fig. 2b scales by λ ≥ 0 (λ_s = 0 removes the shortcut); a negative factor
        // flips the sign of a path, which neither paper studies
        let scale = |name: &str, v: f64| {
            finite(name, v)?;
            if v < 0.0 {
                return Err(ConfigError::InvalidSetting(format!(
                    "{name} = {v} must not be negative (2016 Fig. 2b scales by λ ≥ 0)"
                )));
            }
            Ok(())
        };
        match *self {
            Self::Identity | Self::Plain | Self::Conv1x1 => Ok(()),
            Self::Scaling { lambda_s, lambda_f } => {
                scale("lambda_s", lambda_s)?;
                scale("lambda_f", lambda_f)
            }
            Self::ExclusiveGating { gate_bias } | Self::ShortcutOnlyGating { gate_bias } => {
                finite("gate_bias", gate_bias)
            }
            Self::Dropout { ratio } => {
                if (0.0..1.0).contains(&ratio) {
                    Ok(())
                } else {
                    Err(ConfigError::InvalidSetting(format!(
                        "dropout ratio = {ratio} must be in [0, 1)"
                    )))
                }
            }
        }
    }
}

macro_rules! display_as_serde_name {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $name),+ })
            }
        }
    };
}
display_as_serde_name!(Family { Cifar => "cifar", Imagenet => "imagenet" });
display_as_serde_name!(BlockKind { Basic => "basic", Bottleneck => "bottleneck" });
display_as_serde_name!(Downsample { A => "a", B => "b", C => "c" });
display_as_serde_name!(ActivationPlacement {
    Original => "original",
    BnAfterAddition => "bn_after_addition",
    ReluBeforeAddition => "relu_before_addition",
    ReluOnlyPreactivation => "relu_only_preactivation",
    FullPreactivation => "full_preactivation",
});

impl fmt::Display for ShortcutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Scaling { lambda_s, lambda_f } => {
                write!(f, "scaling(lambda_s={lambda_s}, lambda_f={lambda_f})")
            }
            Self::ExclusiveGating { gate_bias } => write!(f, "exclusive_gating(b_g={gate_bias})"),
            Self::ShortcutOnlyGating { gate_bias } => {
                write!(f, "shortcut_only_gating(b_g={gate_bias})")
            }
            Self::Dropout { ratio } => write!(f, "dropout(ratio={ratio})"),
            Self::Identity | Self::Plain | Self::Conv1x1 => f.write_str(self.name()),
        }
    }
}

fn default_num_classes() -> i64 {
    10
}

fn default_replicas() -> i64 {
    1
}

/// A whole network: family, depth and one value per ablation axis.
///
/// Only `depth` is required in a file; the rest defaults to the CIFAR ResNet of 2015
/// sec. 4.2 (option A, identity shortcuts, original placement, 10 classes, one replica).
/// [`NetConfig::default`] is ResNet-20.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// CIFAR (2015 sec. 4.2) or ImageNet (2015 Table 1).
    #[serde(default)]
    pub family: Family,
    /// Number of weighted layers: stem conv + convs of the residual branches + fc
    /// (projection shortcuts and gates not counted, as in the papers).
    pub depth: usize,
    /// Basic or bottleneck units.
    #[serde(default)]
    pub block: BlockKind,
    /// The shortcut variant, or `plain` for no shortcut.
    #[serde(default)]
    pub shortcut: ShortcutKind,
    /// Where BN and ReLU sit (2016 Fig. 4).
    #[serde(default)]
    pub placement: ActivationPlacement,
    /// Shortcut across a change of shape (2015 options A/B/C). Ignored by plain nets and by
    /// the `conv1x1` shortcut, which projects on every unit.
    #[serde(default)]
    pub downsample: Downsample,
    /// Width of the final fully connected layer.
    #[serde(default = "default_num_classes")]
    pub num_classes: i64,
    /// K independent models held in one network (grouped convs over K·C channels); see the
    /// crate docs for the input/output convention.
    #[serde(default = "default_replicas")]
    pub replicas: i64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self::cifar(20)
    }
}

/// ImageNet depths of 2015 Table 1, with their unit type and units per stage.
const IMAGENET_TABLE1: [(usize, BlockKind, [usize; 4]); 5] = [
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
];

impl NetConfig {
    /// The CIFAR ResNet of the given depth (2015 sec. 4.2: basic units, option A).
    pub fn cifar(depth: usize) -> Self {
        Self {
            family: Family::Cifar,
            depth,
            block: BlockKind::Basic,
            shortcut: ShortcutKind::Identity,
            placement: ActivationPlacement::Original,
            downsample: Downsample::A,
            num_classes: 10,
            replicas: 1,
        }
    }

    /// The ImageNet ResNet of the given depth (2015 Table 1, option B, 1000 classes); the
    /// unit type follows the table (basic for 18/34, bottleneck above).
    pub fn imagenet(depth: usize) -> Self {
        let block = if depth >= 50 {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        Self {
            family: Family::Imagenet,
            depth,
            block,
            shortcut: ShortcutKind::Identity,
            placement: ActivationPlacement::Original,
            downsample: Downsample::B,
            num_classes: 1000,
            replicas: 1,
        }
    }

    /// The same network with K replicas.
    pub fn with_replicas(&self, replicas: i64) -> Self {
        Self {
            replicas,
            ..self.clone()
        }
    }

    /// The same network with another shortcut.
    pub fn with_shortcut(&self, shortcut: ShortcutKind) -> Self {
        Self {
            shortcut,
            ..self.clone()
        }
    }

    /// The same network with another activation placement.
    pub fn with_placement(&self, placement: ActivationPlacement) -> Self {
        Self {
            placement,
            ..self.clone()
        }
    }

    /// Input size (height, width) of the family: 32×32 for CIFAR, 224×224 for ImageNet.
    pub fn default_input_size(&self) -> (i64, i64) {
        match self.family {
            Family::Cifar => (32, 32),
            Family::Imagenet => (224, 224),
        }
    }

    /// Number of residual units per stage, from the depth (2015 sec. 4.2 and Table 1; 2016
    /// appendix for 9n+2 bottleneck nets). Errors name the valid depths.
    pub fn units_per_stage(&self) -> Result<Vec<usize>> {
        let depth = self.depth;
        match (self.family, self.block) {
            (Family::Cifar, block) => {
                let per_unit = block.cifar_layers_per_unit();
                let rule = match block {
                    BlockKind::Basic => "6n+2 with basic units (2015 sec. 4.2)",
                    BlockKind::Bottleneck => "9n+2 with bottleneck units (2016 appendix)",
                };
                if depth < per_unit + 2 || (depth - 2) % per_unit != 0 {
                    let below = depth.saturating_sub(2) / per_unit * per_unit + 2;
                    let above = below + per_unit;
                    let near = if below > per_unit + 1 {
                        format!("{below} or {above}")
                    } else {
                        format!("{above}")
                    };
                    return Err(ConfigError::InvalidDepth {
                        depth,
                        reason: format!(
                            "a CIFAR network has depth {rule}, n >= 1; nearest: {near}"
                        ),
                    });
                }
                Ok(vec![(depth - 2) / per_unit; 3])
            }
            (Family::Imagenet, block) => {
                let Some(&(_, table_block, units)) =
                    IMAGENET_TABLE1.iter().find(|(d, _, _)| *d == depth)
                else {
                    return Err(ConfigError::InvalidDepth {
                        depth,
                        reason: "ImageNet networks have depth 18, 34, 50, 101 or 152 \
                                 (2015 Table 1)"
                            .into(),
                    });
                };
                if table_block != block {
                    return Err(ConfigError::InvalidDepth {
                        depth,
                        reason: format!(
                            "the {depth}-layer ImageNet network uses {table_block} units \
                             (2015 Table 1), not {block}"
                        ),
                    });
                }
                Ok(units.to_vec())
            }
        }
    }

    /// Checks the whole configuration without building anything: depth, numeric settings,
    /// and that the papers define the combination of variants. The error says which rule
    /// was broken and where the papers define the variant.
    pub fn validate(&self) -> Result<()> {
        if self.replicas < 1 {
            return Err(ConfigError::InvalidSetting(format!(
                "replicas = {} must be at least 1",
                self.replicas
            )));
        }
        if self.num_classes < 1 {
            return Err(ConfigError::InvalidSetting(format!(
                "num_classes = {} must be at least 1",
                self.num_classes
            )));
        }
        self.shortcut.validate()?;
        self.units_per_stage()?;
        let unsupported = |msg: String| Err(ConfigError::Unsupported(msg));
        match self.shortcut {
            ShortcutKind::Identity => {}
            ShortcutKind::Plain => {
                if self.block != BlockKind::Basic {
                    return unsupported(
                        "plain networks are defined with basic units only (2015 sec. 4.1-4.2: \
                         plain-18/34 and CIFAR plain-20…110)"
                            .into(),
                    );
                }
                if self.placement != ActivationPlacement::Original {
                    return unsupported(format!(
                        "shortcut `plain` (no shortcut) keeps the original conv-BN-ReLU order \
                         (2015 sec. 4.1); placement `{}` is studied on residual units with \
                         identity shortcuts (2016 Table 2, Fig. 4)",
                        self.placement
                    ));
                }
            }
            other => {
                let name = other.name();
                if self.family != Family::Cifar || self.block != BlockKind::Basic {
                    return unsupported(format!(
                        "shortcut `{name}` is studied on CIFAR nets with basic units \
                         (2016 Table 1, ResNet-110), not on {} {} nets",
                        self.family, self.block
                    ));
                }
                if self.placement != ActivationPlacement::Original {
                    return unsupported(format!(
                        "shortcut `{name}` is defined with the original unit and its \
                         after-addition ReLU (2016 Table 1); placement `{}` is studied with \
                         identity shortcuts only (2016 Table 2)",
                        self.placement
                    ));
                }
            }
        }
        if self.family == Family::Imagenet && self.placement != ActivationPlacement::Original {
            return unsupported(format!(
                "the ImageNet family here is 2015 Table 1 (original units); placement `{}` \
                 is built for CIFAR nets only",
                self.placement
            ));
        }
        if self.block == BlockKind::Bottleneck
            && self.downsample == Downsample::A
            && self.shortcut != ShortcutKind::Plain
        {
            return unsupported(
                "bottleneck units use projection shortcuts where dimensions grow (2015 \
                 sec. 4.1, option B; 2016 appendix): set downsample = \"b\" (or \"c\")"
                    .into(),
            );
        }
        Ok(())
    }
}
