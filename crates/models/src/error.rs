//! The crate's error type.

/// Everything that can go wrong when validating, building, stacking or inspecting a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A network description the papers do not define (depth, combination, setting).
    #[error(transparent)]
    Config(#[from] spec::ConfigError),
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
