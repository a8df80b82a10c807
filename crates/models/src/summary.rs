//! Introspection without tensors: depth, units, parameters, multiply-adds and the layer
//! layout of any configuration (the shape of 2015 Table 1), plus the named catalogue.

use std::fmt;

use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::unit::{ShortcutPath, UnitConfig};
use spec::{ActivationPlacement, BlockKind, Family, NetConfig, ShortcutKind};

/// One row of the layer layout, as in 2015 Table 1.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayoutRow {
    /// `stem`, `stage1`, ..., `head` (ImageNet rows add the paper's `conv2_x`, ...).
    pub layer: String,
    /// Output height and width for the summary's input size.
    pub output_size: [i64; 2],
    /// Layers of one unit (`3×3, 16; 3×3, 16`) or of the stem/head.
    pub description: String,
    /// Units in the stage (1 for stem and head).
    pub units: usize,
    /// The shortcuts of the stage's units (`zero_pad ×1, identity ×2`); empty for stem, head.
    pub shortcuts: String,
}

/// What `runner models` prints for one network. Counts are for one replica unless named
/// `_total`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The catalogue name, if the network (whatever its replicas) has one.
    pub name: Option<String>,
    /// The configuration.
    pub config: NetConfig,
    /// Weighted layers counted from the layout: stem conv + branch convs + fc (as the papers
    /// count; projection shortcuts and gates excluded). Equals `config.depth`.
    pub depth: usize,
    /// Residual (or plain) units.
    pub residual_units: usize,
    /// Trainable parameters of one replica (BN γ, β included; running statistics not).
    pub params: i64,
    /// Trainable parameters of one replica without BN's γ and β (convolution and fc weights
    /// and biases only). 2016's "10.2M" for ResNet-1001 matches this count (10.19M; 10.33M
    /// with BN), while 2015's "19.4M" for ResNet-1202 matches `params` (19.42M; 19.33M
    /// without BN).
    pub params_excluding_bn: i64,
    /// Trainable parameters of all K replicas.
    pub params_total: i64,
    /// Input height and width the multiply-adds are counted for.
    pub input_size: [i64; 2],
    /// Multiply-adds of one replica for one image: convolutions (projections and gates
    /// included) and the fc layer; BN, ReLU, additions and pooling not counted (the papers'
    /// "FLOPs").
    pub macs: i64,
    /// Feature-map elements of one replica for one image: the output of every convolution
    /// (stem, branches, projections, gates). Training keeps a few tensors of about this size
    /// per image for the backward pass (each convolution's output, its BN's and its ReLU's);
    /// the runner's memory estimate starts from it.
    pub feature_elements: i64,
    /// The layer layout.
    pub layout: Vec<LayoutRow>,
}

fn unit_description(unit: &UnitConfig) -> String {
    let (m, o) = (unit.mid_channels, unit.out_channels);
    match unit.block {
        BlockKind::Basic => format!("3×3, {o}; 3×3, {o}"),
        BlockKind::Bottleneck => format!("1×1, {m}; 3×3, {m}; 1×1, {o}"),
    }
}

fn shortcut_description(units: &[UnitConfig]) -> String {
    let name = |u: &UnitConfig| match u.path {
        ShortcutPath::None => "none",
        ShortcutPath::Identity => "identity",
        ShortcutPath::ZeroPad => "zero_pad",
        ShortcutPath::Projection { batch_norm: true } => "projection+bn",
        ShortcutPath::Projection { batch_norm: false } => "projection",
    };
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for unit in units {
        match runs.last_mut() {
            Some((last, count)) if *last == name(unit) => *count += 1,
            _ => runs.push((name(unit), 1)),
        }
    }
    runs.iter()
        .map(|(n, c)| format!("{n} ×{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts and lays out `config` for an input of `input_size` (height, width) without
/// building any tensor. Errors as [`NetConfig::validate`].
pub fn summarize(config: &NetConfig, input_size: (i64, i64)) -> Result<Summary> {
    let plan = crate::net::plan(config)?;
    let mut layout = Vec::new();
    let (stem_conv_macs, conv_size) = plan.stem.conv.macs(input_size);
    let (_, mut size) = plan.stem.macs(input_size);
    let mut macs = stem_conv_macs;
    let mut feature_elements = plan.stem.conv.output_elements(input_size);
    let k = plan.stem.conv.kernel;
    let mut stem = format!("{k}×{k}, {}", plan.stem.conv.out_channels);
    if plan.stem.conv.stride != 1 {
        stem.push_str(&format!(", stride {}", plan.stem.conv.stride));
    }
    let imagenet = config.family == Family::Imagenet;
    layout.push(LayoutRow {
        layer: if imagenet {
            "stem (conv1)".into()
        } else {
            "stem".into()
        },
        output_size: [conv_size.0, conv_size.1],
        description: stem,
        units: 1,
        shortcuts: String::new(),
    });
    if plan.stem.max_pool {
        layout.push(LayoutRow {
            layer: "stem (pool)".into(),
            output_size: [size.0, size.1],
            description: "3×3 max pool, stride 2".into(),
            units: 1,
            shortcuts: String::new(),
        });
    }
    let mut params = plan.stem.params() + plan.head.params();
    let mut norm_params =
        plan.stem.norm.map_or(0, |n| n.params()) + plan.head.norm.map_or(0, |n| n.params());
    let mut depth = 2;
    let mut residual_units = 0;
    for (s, units) in plan.stages.iter().enumerate() {
        for unit in units {
            let (m, out) = unit.macs(size);
            feature_elements += unit.feature_elements(size);
            macs += m;
            size = out;
            params += unit.params();
            norm_params += unit.norm_params();
            depth += unit.convs().len();
        }
        residual_units += units.len();
        let layer = if imagenet {
            format!("stage{} (conv{}_x)", s + 1, s + 2)
        } else {
            format!("stage{}", s + 1)
        };
        layout.push(LayoutRow {
            layer,
            output_size: [size.0, size.1],
            description: units.last().map(unit_description).unwrap_or_default(),
            units: units.len(),
            shortcuts: shortcut_description(units),
        });
    }
    macs += plan.head.fc.macs();
    let mut head = String::new();
    if plan.head.norm.is_some() {
        head.push_str("BN, ");
    }
    if plan.head.relu {
        head.push_str("ReLU, ");
    }
    head.push_str(&format!("average pool, {}-d fc", plan.head.fc.out_features));
    layout.push(LayoutRow {
        layer: "head".into(),
        output_size: [1, 1],
        description: head,
        units: 1,
        shortcuts: String::new(),
    });
    let single = config.with_replicas(1);
    let name = catalogue()
        .into_iter()
        .find(|e| e.config == single)
        .map(|e| e.name);
    Ok(Summary {
        name,
        config: config.clone(),
        depth,
        residual_units,
        params,
        params_excluding_bn: params - norm_params,
        params_total: params * config.replicas,
        input_size: [input_size.0, input_size.1],
        macs,
        feature_elements,
        layout,
    })
}

/// [`summarize`] at the family's input size (32×32 CIFAR, 224×224 ImageNet).
pub fn summary(config: &NetConfig) -> Result<Summary> {
    summarize(config, config.default_input_size())
}

impl fmt::Display for Summary {
    /// A text block: a title line, then the layout as a table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let title = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", c.family, c.depth));
        writeln!(
            f,
            "{title}: {} {} depth {}, {} units, shortcut {}, placement {}, downsample {}; \
             {:.2}M params, {:.2}G mult-adds at {}×{}{}",
            c.family,
            c.block,
            self.depth,
            self.residual_units,
            c.shortcut,
            c.placement,
            c.downsample,
            self.params as f64 / 1e6,
            self.macs as f64 / 1e9,
            self.input_size[0],
            self.input_size[1],
            if c.replicas > 1 {
                format!(" (×{} replicas)", c.replicas)
            } else {
                String::new()
            },
        )?;
        for row in &self.layout {
            let size = format!("{}×{}", row.output_size[0], row.output_size[1]);
            let body = if row.units > 1 || !row.shortcuts.is_empty() {
                format!("[{}] × {}", row.description, row.units)
            } else {
                row.description.clone()
            };
            write!(f, "  {:<20} {:>9}  {}", row.layer, size, body)?;
            if !row.shortcuts.is_empty() {
                write!(f, "   shortcuts: {}", row.shortcuts)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A named architecture of the papers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatalogueEntry {
    /// Lower-case name (`resnet110`, `plain20`, `resnet164`, `resnet50`, ...).
    pub name: String,
    /// Where the papers define it.
    pub source: &'static str,
    /// The network.
    pub config: NetConfig,
}

/// Every named architecture: CIFAR resnet20/32/44/56/110/1202 and plain20/32/44/56/110
/// (2015 sec. 4.2, option A); resnet164 and resnet1001 (bottleneck, full pre-activation,
/// projection where dimensions grow: 2016 Table 3 and appendix), resnet110-preact,
/// resnet164-original and resnet1001-original (2016 Table 3); ImageNet resnet18/34/50/101/152
/// and plain18/34 (2015 Table 1, option B).
pub fn catalogue() -> Vec<CatalogueEntry> {
    let entry = |name: String, source, config| CatalogueEntry {
        name,
        source,
        config,
    };
    let bottleneck = |depth, placement| NetConfig {
        block: BlockKind::Bottleneck,
        placement,
        downsample: spec::Downsample::B,
        ..NetConfig::cifar(depth)
    };
    let mut out = Vec::new();
    for depth in [20, 32, 44, 56, 110, 1202] {
        out.push(entry(
            format!("resnet{depth}"),
            "2015 sec. 4.2, Table 6",
            NetConfig::cifar(depth),
        ));
    }
    for depth in [20, 32, 44, 56, 110] {
        let config = NetConfig::cifar(depth).with_shortcut(ShortcutKind::Plain);
        out.push(entry(
            format!("plain{depth}"),
            "2015 sec. 4.2, Fig. 6",
            config,
        ));
    }
    let preact = ActivationPlacement::FullPreactivation;
    let original = ActivationPlacement::Original;
    out.push(entry(
        "resnet164".into(),
        "2016 Table 3, appendix",
        bottleneck(164, preact),
    ));
    out.push(entry(
        "resnet1001".into(),
        "2016 Table 3, appendix",
        bottleneck(1001, preact),
    ));
    out.push(entry(
        "resnet110-preact".into(),
        "2016 Table 3",
        NetConfig::cifar(110).with_placement(preact),
    ));
    out.push(entry(
        "resnet164-original".into(),
        "2016 Table 3",
        bottleneck(164, original),
    ));
    out.push(entry(
        "resnet1001-original".into(),
        "2016 Table 3",
        bottleneck(1001, original),
    ));
    for depth in [18, 34, 50, 101, 152] {
        out.push(entry(
            format!("resnet{depth}"),
            "2015 Table 1",
            NetConfig::imagenet(depth),
        ));
    }
    for depth in [18, 34] {
        let config = NetConfig::imagenet(depth).with_shortcut(ShortcutKind::Plain);
        out.push(entry(
            format!("plain{depth}"),
            "2015 Table 1, Table 2",
            config,
        ));
    }
    out
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The network called `name`: a [`catalogue`] name (case, `-` and `_` ignored, so
/// `ResNet-110` works), or `resnetN` / `plainN` for any CIFAR depth N = 6n+2 (basic
/// units, option A).
pub fn from_name(name: &str) -> Result<NetConfig> {
    let wanted = normalize(name);
    let entries = catalogue();
    if let Some(entry) = entries.iter().find(|e| normalize(&e.name) == wanted) {
        return Ok(entry.config.clone());
    }
    let parsed = [
        ("resnet", ShortcutKind::Identity),
        ("plain", ShortcutKind::Plain),
    ]
    .into_iter()
    .find_map(|(prefix, shortcut)| {
        let depth = wanted.strip_prefix(prefix)?.parse::<usize>().ok()?;
        Some(NetConfig::cifar(depth).with_shortcut(shortcut))
    });
    match parsed {
        Some(config) => {
            config.validate()?;
            Ok(config)
        }
        None => Err(ModelError::UnknownName {
            name: name.to_string(),
            known: entries
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
