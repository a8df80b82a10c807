//! The crate's error type.

/// Everything that can go wrong when validating, building, stacking or inspecting a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
    /// A name that is not in [`crate::catalogue`] and not of the form `resnetN` / `plainN`.
    #[error("unknown architecture `{name}`; known: {known}")]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The catalogue's names, comma separated.
        known: String,
    },
    /// Var stores that cannot be stacked or split (missing names, shapes that disagree).
    #[error("stacking: {0}")]
    Stacking(String),
    /// A tensor argument with the wrong shape or type.
    #[error("shape: {0}")]
    Shape(String),
    /// An error from libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
