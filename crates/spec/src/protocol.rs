//! The training protocol of a profile: everything hyper-parameter-like about a run.
//!
//! He et al. 2015, sec. 4.2, and Identity Mappings, appendix: SGD with momentum 0.9, weight
//! decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k; lr 0.01
//! for the first 400 iterations of the deepest nets; 4-pixel padding, random 32×32 crops and
//! horizontal flips; per-pixel mean subtraction. The values live in `experiments/*.toml`; the
//! defaults below are only there so that a file may leave out what equals the paper.

use serde::{Deserialize, Serialize};

/// One profile's protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Images per model per step.
    pub batch_size: i64,
    /// Total SGD steps.
    pub iterations: i64,
    /// Base learning rate.
    pub lr: f64,
    /// Steps at which the learning rate is multiplied by `lr_drop_factor`.
    pub lr_drops: Vec<i64>,
    #[serde(default = "default_drop_factor")]
    pub lr_drop_factor: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// A constant low learning rate for the first iterations (He 2015: 0.01 for 400 iterations).
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// Which images train and which test.
    #[serde(default)]
    pub split: SplitKind,
    /// Input normalisation, computed from the training images.
    #[serde(default)]
    pub normalization: Normalization,
    #[serde(default)]
    pub augmentation: Augmentation,
    /// Use only the first N training images (the `smoke` profile); all when absent.
    #[serde(default)]
    pub train_subset: Option<i64>,
    /// Use only the first N test images; all when absent.
    #[serde(default)]
    pub test_subset: Option<i64>,
    /// A final test error above this (in %) is recorded as `fail` (Identity Mappings: 20%).
    #[serde(default = "default_fail_threshold")]
    pub fail_above_percent: f64,
    /// Evaluate on the test set every this many epochs (and always after the last step).
    #[serde(default = "default_eval_every")]
    pub eval_every_epochs: i64,
    /// Numeric precision of training (fp32 as in the papers; `runner train --precision`
    /// overrides it, and a run records the one it trained with).
    #[serde(default)]
    pub precision: Precision,
}

/// Numeric precision of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Float32 throughout, as the papers.
    #[default]
    Fp32,
    /// Forward passes under CUDA fp16 autocast, with dynamic loss scaling. CUDA only.
    Fp16,
    /// bf16 activations (autocast's semantics: convolutions and the fc in bf16, BN
    /// statistics, the loss, the weights and the momentum in fp32); no loss scaling. CPU
    /// (fast with AMX-BF16 or AVX512-BF16) and CUDA.
    Bf16,
}

/// How batch normalisation, the shortcut's addition and ReLU run while training on the CPU
/// (channels-last, fp32 or bf16): an execution choice, not part of a protocol; the same
/// numbers either way to within rounding. Elsewhere (CUDA, evaluation) libtorch's ops run one
/// after the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum BnRelu {
    /// One operation, two passes over the activation each way (the default).
    #[default]
    Fused,
    /// libtorch's batch norm, addition and ReLU, one after the other.
    Separate,
}

fn default_drop_factor() -> f64 {
    0.1
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    1e-4
}
/// A final test error above this (%) is a failed run, unless a protocol says otherwise: the
/// threshold of Identity Mappings (2016), which reports "fail" for error above 20%.
pub const DEFAULT_FAIL_ABOVE_PERCENT: f64 = 20.0;

fn default_fail_threshold() -> f64 {
    DEFAULT_FAIL_ABOVE_PERCENT
}
fn default_eval_every() -> i64 {
    1
}

/// A constant learning rate for the first `iterations` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    pub lr: f64,
    pub iterations: i64,
}

/// Which images train and which are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Train on all 50k training images, evaluate on the 10k test images (the papers' tables).
    #[default]
    Full,
    /// Train on the first 45k, evaluate on the last 5k training images (He 2015, Fig. 6 curves).
    Holdout5k,
}

impl SplitKind {
    /// The training images `Holdout5k` keeps out of training and evaluates on (the last ones).
    pub const HOLDOUT_IMAGES: i64 = 5_000;
    /// CIFAR-10's training and test images.
    pub const CIFAR10_IMAGES: (i64, i64) = (50_000, 10_000);

    /// (training, evaluation) image counts of this split of `train` training and `test`
    /// test images.
    pub fn sizes(self, train: i64, test: i64) -> (i64, i64) {
        match self {
            SplitKind::Full => (train, test),
            SplitKind::Holdout5k => (train - Self::HOLDOUT_IMAGES, Self::HOLDOUT_IMAGES),
        }
    }
}

/// How inputs are normalised; the statistics come from the training images of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Subtract the mean image (He 2015: "the per-pixel mean is subtracted").
    #[default]
    PerPixelMean,
    /// Subtract each channel's mean and divide by its standard deviation.
    PerChannelMeanStd,
}

/// Training-time augmentation (He 2015, sec. 4.2, after Lee et al.).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// Zero padding on each side before a random crop back to 32×32 (0: no crop).
    pub pad: i64,
    /// Random horizontal flips with probability 1/2.
    pub flip: bool,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self { pad: 4, flip: true }
    }
}

impl Protocol {
    /// The epochs `iterations` make on CIFAR-10: an epoch is as many whole batches as its
    /// training images fill (the split's, or `train_subset` of them), as the runner steps.
    pub fn epochs(&self) -> f64 {
        let (split, _) = self
            .split
            .sizes(SplitKind::CIFAR10_IMAGES.0, SplitKind::CIFAR10_IMAGES.1);
        let images = self.train_subset.map_or(split, |n| n.min(split));
        let steps = (images / self.batch_size.max(1)).max(1);
        self.iterations as f64 / steps as f64
    }

    /// The learning rate of step `iteration` (0-based).
    pub fn lr_at(&self, iteration: i64) -> f64 {
        if let Some(warmup) = &self.warmup {
            if iteration < warmup.iterations {
                return warmup.lr;
            }
        }
        let drops = self.lr_drops.iter().filter(|&&at| iteration >= at).count();
        let lr = self.lr * self.lr_drop_factor.powi(drops as i32);
        // 0.1 · 0.1 is 0.010000000000000002 in binary floating point; the papers mean 0.01.
        (lr * 1e15).round() / 1e15
    }

    /// Checks the values for contradictions; returns the reasons found.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.batch_size < 1 {
            problems.push(format!(
                "batch_size must be positive, not {}",
                self.batch_size
            ));
        }
        if self.iterations < 1 {
            problems.push(format!(
                "iterations must be positive, not {}",
                self.iterations
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            problems.push(format!("lr must be a positive number, not {}", self.lr));
        }
        // the lr is multiplied by it at each drop: 10 (for "divide by 10") is a likely slip;
        // 1 keeps the lr (drops switched off), and with no drops it is never used
        let factor = self.lr_drop_factor;
        let usable = factor > 0.0 && factor <= 1.0;
        if !usable && !self.lr_drops.is_empty() {
            problems.push(format!(
                "lr_drop_factor multiplies the lr at each drop and must be in (0, 1], not {}{}",
                factor,
                if factor.is_finite() && factor > 1.0 {
                    format!(
                        " (to divide by {0}, write {1})",
                        self.lr_drop_factor,
                        1.0 / self.lr_drop_factor
                    )
                } else {
                    String::new()
                }
            ));
        }
        if self.lr_drops.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!("lr_drops must increase: {:?}", self.lr_drops));
        }
        if self
            .lr_drops
            .iter()
            .any(|&at| at <= 0 || at >= self.iterations)
        {
            problems.push(format!(
                "lr_drops {:?} must lie inside 1..{}",
                self.lr_drops, self.iterations
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            problems.push(format!("momentum must be in [0, 1), not {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            problems.push(format!(
                "weight_decay must be a number >= 0, not {}",
                self.weight_decay
            ));
        }
        if let Some(w) = &self.warmup {
            if w.iterations < 0
                || w.iterations >= self.iterations
                || !(w.lr.is_finite() && w.lr > 0.0)
            {
                problems.push(format!(
                    "warmup needs 0 <= iterations < {} and lr > 0",
                    self.iterations
                ));
            }
        }
        if !(0..=16).contains(&self.augmentation.pad) {
            problems.push(format!(
                "augmentation.pad must be in 0..=16, not {}",
                self.augmentation.pad
            ));
        }
        for (name, subset) in [
            ("train_subset", self.train_subset),
            ("test_subset", self.test_subset),
        ] {
            if subset.is_some_and(|n| n < 1) {
                problems.push(format!("{name} must be positive"));
            }
        }
        let (train, eval) = self
            .split
            .sizes(SplitKind::CIFAR10_IMAGES.0, SplitKind::CIFAR10_IMAGES.1);
        for (name, subset, available) in [
            ("train_subset", self.train_subset, train),
            ("test_subset", self.test_subset, eval),
        ] {
            if let Some(n) = subset.filter(|&n| n > available) {
                problems.push(format!(
                    "{name} = {n}, but this split of CIFAR-10 has only {available} such images"
                ));
            }
        }
        if self.train_subset.is_some_and(|n| n < self.batch_size) {
            problems.push("train_subset is smaller than one batch".to_string());
        }
        if !(0.0..=100.0).contains(&self.fail_above_percent) {
            problems.push(format!(
                "fail_above_percent is a test error in % and must be in 0..=100, not {}",
                self.fail_above_percent
            ));
        }
        if self.eval_every_epochs < 1 {
            problems.push("eval_every_epochs must be positive".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> Protocol {
        toml::from_str(
            r#"
            batch_size = 128
            iterations = 64000
            lr = 0.1
            lr_drops = [32000, 48000]
            warmup = { lr = 0.01, iterations = 400 }
            "#,
        )
        .unwrap()
    }

    #[test]
    fn epochs_count_whole_batches_of_the_split_or_subset() {
        let mut p = paper();
        // 50,000 images fill 390 batches of 128: 64,000 steps are 164.1 epochs
        assert!((p.epochs() - 64000.0 / 390.0).abs() < 1e-9);
        p.iterations = 5850;
        assert_eq!(p.epochs(), 15.0);
        p.split = SplitKind::Holdout5k; // 45,000 images: 351 batches
        p.iterations = 702;
        assert_eq!(p.epochs(), 2.0);
        p.train_subset = Some(2560); // 20 batches
        p.iterations = 60;
        assert_eq!(p.epochs(), 3.0);
    }

    #[test]
    fn defaults_are_the_papers() {
        let p = paper();
        assert_eq!(
            (p.momentum, p.weight_decay, p.lr_drop_factor),
            (0.9, 1e-4, 0.1)
        );
        assert_eq!(p.augmentation, Augmentation { pad: 4, flip: true });
        assert_eq!(p.normalization, Normalization::PerPixelMean);
        assert_eq!(p.split, SplitKind::Full);
        assert!(p.problems().is_empty(), "{:?}", p.problems());
    }

    #[test]
    fn learning_rate_steps_at_32k_and_48k_after_warmup() {
        let p = paper();
        let close = |a: f64, b: f64| a == b;
        assert!(close(p.lr_at(0), 0.01));
        assert!(close(p.lr_at(399), 0.01));
        assert!(close(p.lr_at(400), 0.1));
        assert!(close(p.lr_at(31_999), 0.1));
        assert!(close(p.lr_at(32_000), 0.01));
        assert!(close(p.lr_at(47_999), 0.01));
        assert!(close(p.lr_at(48_000), 0.001));
        assert!(close(p.lr_at(63_999), 0.001));
    }

    #[test]
    fn unknown_keys_and_contradictions_are_refused() {
        let err = toml::from_str::<Protocol>(
            "batch_size = 1\niterations = 2\nlr = 0.1\nlr_drops = []\nlr_decay = 3",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lr_decay"), "{err}");
        let mut p = paper();
        p.lr_drops = vec![48_000, 32_000];
        p.batch_size = 0;
        let problems = p.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn out_of_range_and_non_finite_numbers_are_refused() {
        let one = |change: fn(&mut Protocol)| {
            let mut p = paper();
            change(&mut p);
            let problems = p.problems();
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems[0].clone()
        };
        let ten = one(|p| p.lr_drop_factor = 10.0);
        assert!(
            ten.contains("lr_drop_factor") && ten.contains("write 0.1"),
            "{ten}"
        );
        for change in [
            (|p: &mut Protocol| p.lr_drop_factor = 0.0) as fn(&mut Protocol),
            |p| p.lr_drop_factor = -1.0,
            |p| p.lr_drop_factor = f64::NAN,
            |p| p.lr_drop_factor = f64::INFINITY,
        ] {
            assert!(one(change).starts_with("lr_drop_factor"));
        }
        let infinite = one(|p| p.lr_drop_factor = f64::INFINITY);
        assert!(!infinite.contains("write"), "{infinite}");
        assert!(one(|p| p.lr = f64::INFINITY).starts_with("lr must"));
        assert!(one(|p| p.weight_decay = f64::NAN).starts_with("weight_decay"));
        assert!(one(|p| p.weight_decay = f64::INFINITY).starts_with("weight_decay"));
        assert!(one(|p| p.warmup.as_mut().unwrap().lr = f64::INFINITY).starts_with("warmup"));
        assert!(one(|p| p.fail_above_percent = -5.0).starts_with("fail_above_percent"));
        assert!(one(|p| p.fail_above_percent = 120.0).starts_with("fail_above_percent"));
        assert!(one(|p| p.train_subset = Some(99_999)).contains("only 50000"));
        assert!(one(|p| {
            p.split = SplitKind::Holdout5k;
            p.test_subset = Some(6_000);
        })
        .contains("only 5000"));
        let mut edge = paper();
        edge.fail_above_percent = 100.0;
        edge.weight_decay = 0.0;
        edge.lr_drop_factor = 1.0;
        assert!(edge.problems().is_empty(), "{:?}", edge.problems());
        // without drops the factor is never used
        edge.lr_drops.clear();
        edge.lr_drop_factor = 10.0;
        assert!(edge.problems().is_empty(), "{:?}", edge.problems());
    }
}
