//! Networks of He et al., *Deep Residual Learning* (2015) and *Identity Mappings in Deep
//! Residual Networks* (2016): plain nets, ResNets and every variant their ablations compare,
//! as inspectable modules that hold K independent replicas in one network.
//!
//! # Building
//! A [`NetConfig`] (serde, one enum per ablation axis; defined in the `spec` crate, which
//! `report` shares without linking libtorch) names a network; [`NetConfig::validate`] checks
//! it without building; [`NetConfigExt::build`] creates it under a `tch::nn::Path`. Weight names are paper-like: `stem.conv.weight`,
//! `stage2.unit3.conv1.weight`, `stage2.unit3.bn1.weight`, `stage2.unit1.shortcut.conv.weight`,
//! `stage1.unit1.shortcut.gate.bias`, `head.fc.weight` (tch joins path components with `.`;
//! inside `.ot` files tch writes `|` for `.`, as in `stage2|unit3|conv1|weight`).
//! Init: convolutions Kaiming normal with fan_out (std = sqrt(2 / (k²·C_out))); BN γ = 1,
//! β = 0; the fc as PyTorch's `nn.Linear` (U(±1/√fan_in) for weight and bias); gate biases
//! b_g as configured.
//!
//! # Replicas (stacking)
//! A net with `replicas = K` holds K independent models. [`Net::forward_stacked`] (and
//! `ModuleT::forward_t` on a 5-d tensor) maps images `[K, B, 3, H, W]` to logits
//! `[K, B, classes]`; replica k sees `xs[k]`. With K = 1, [`Net::forward_single`] (and
//! `forward_t` on a 4-d tensor) maps `[B, 3, H, W]` to `[B, classes]`. Inside, activations
//! are `[B, K·C, H, W]`, convolutions use `groups = K`, BN over K·C channels is per replica,
//! the fc is a batched matmul. Every variable of a K-replica store is the K single-model
//! tensors concatenated along dim 0, so [`stack_var_stores`] and [`extract_replica`] are
//! exact copies; [`init_replicas_from_seeds`] initialises replica k as the lone model of
//! `seeds[k]` (built on the CPU after `tch::manual_seed`), as the runner initialises every
//! run. Train with [`per_replica_loss`] (each replica's mean loss, `[K]`; the runner's
//! optimizer steps on them) or its sum [`stacked_loss`]; either gives each replica the
//! gradient it would get alone. Count mistakes with [`stacked_errors`].
//!
//! # Introspection
//! [`summarize`] / [`NetConfigExt::summary`] count depth, units, parameters and multiply-adds
//! and lay the network out like 2015 Table 1, without building tensors; [`catalogue`] lists
//! the named architectures; [`unit_grad_norms`] and [`probe_grad_norms`] read ‖∂E/∂x_l‖ per
//! residual unit.

pub mod config;
mod dropout;
pub mod error;
pub mod fused;
pub mod layers;
pub mod net;
pub mod stack;
pub mod summary;
pub mod unit;

pub use config::{
    ActivationPlacement, BlockKind, ConfigError, Downsample, Family, NetConfig, NetConfigExt,
    ShortcutKind,
};
pub use error::{ModelError, Result};
pub use layers::{is_channels_last, MemoryFormat};
pub use net::{splitmix64_finish, HeadConfig, Net, NetPlan, StemConfig, SPLITMIX64_GAMMA};
pub use stack::{
    extract_replica, init_replicas_from_seeds, per_replica_loss, probe_grad_norms,
    stack_var_stores, stacked_errors, stacked_loss, unit_grad_norms,
};
pub use summary::{catalogue, summarize, CatalogueEntry, LayoutRow, Summary};
pub use unit::{ResidualUnit, ShortcutPath, UnitConfig};
