//! The contract between `runner` and `report`: everything that passes between them on disk,
//! declared once, in a crate that does not link libtorch.
//!
//! - [`net`]: a network as data (one enum per ablation axis, [`NetConfig`]) and its
//!   validation; `models` builds modules from it.
//! - [`protocol`]: the training protocol of a profile ([`Protocol`], [`Protocol::lr_at`]).
//! - [`experiment`]: experiment files (`experiments/*.toml`), checked strictly with
//!   `file:line` errors; the runner and the report read them through the same code.
//! - [`records`]: the files of a run (`config.toml`, `epochs.csv`, `final.json`) and of a
//!   gradients measurement (`norms.csv`, `provenance.json`).
//! - [`layout`]: where those files live in `results/`, atomic writes, and the run lock.

pub mod experiment;
pub mod layout;
pub mod net;
pub mod protocol;
pub mod records;

pub use experiment::{Experiment, ExperimentKind, FailMarker, PaperNumber, Profile, Variant};
pub use layout::{profile_dir, write_atomic, RunDir, RunLock, VariantDir};
pub use net::{
    ActivationPlacement, BlockKind, ConfigError, Downsample, Family, NetConfig, ShortcutKind,
};
pub use protocol::{BnRelu, Precision, Protocol};
pub use records::{
    gate_units, human_seconds, EpochRow, FileDigest, FinalRecord, Fingerprint, GradientRecord,
    NormRow, Provenance, RunConfig, Status, Stretch, UNRECORDED_REVISION,
};
