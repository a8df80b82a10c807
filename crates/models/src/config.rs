//! The network as data lives in the `spec` crate (shared with `report`, which never links
//! libtorch); this module re-exports it and adds what needs tensors or the catalogue:
//! [`NetConfigExt`] builds, plans and summarises a [`NetConfig`].

pub use spec::net::{
    ActivationPlacement, BlockKind, ConfigError, Downsample, Family, NetConfig, ShortcutKind,
};

use crate::error::Result;
use crate::{Net, NetPlan, Summary};

/// What `models` adds to a [`NetConfig`].
pub trait NetConfigExt: Sized {
    /// Validates, then builds the network under `p` (weights `stem/conv`,
    /// `stage2/unit3/conv1`, `head/fc`, ...).
    fn build(&self, p: &tch::nn::Path) -> Result<Net>;
    /// Validates and resolves the configuration into layers.
    fn plan(&self) -> Result<NetPlan>;
    /// Depth, units, parameters, multiply-adds and the layout, at the family's input size.
    fn summary(&self) -> Result<Summary>;
    /// The network called `name` (see [`crate::summary::from_name`]).
    fn from_name(name: &str) -> Result<Self>;
}

impl NetConfigExt for NetConfig {
    fn build(&self, p: &tch::nn::Path) -> Result<Net> {
        Net::new(self, p)
    }
    fn plan(&self) -> Result<NetPlan> {
        crate::net::plan(self)
    }
    fn summary(&self) -> Result<Summary> {
        crate::summary::summary(self)
    }
    fn from_name(name: &str) -> Result<Self> {
        crate::summary::from_name(name)
    }
}
