//! Networks of He et al., *Deep Residual Learning* (2015) and *Identity Mappings in Deep
//! Residual Networks* (2016).
