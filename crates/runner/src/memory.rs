//! The memory a sweep needs, estimated from the network description before any tensor is
//! allocated, against what the device has: a network too big for the machine is refused at
//! once, with the estimate, instead of growing until the kernel's OOM killer ends it.
//!
//! The estimate is deliberately on the high side. Measured here (peak resident memory of
//! `runner bench`, CPU, batches of 1 and 256) training keeps 10.7–14.3 bytes per feature-map
//! element and image in fp32 (ResNet-110, ResNet-20) and about 6 in bf16 (ResNet-56); the
//! estimate counts 16 and 8, plus libtorch's own 256 MiB and the dataset on the device.

use std::path::Path;

use anyhow::{bail, Context, Result};
use models::{NetConfig, NetConfigExt};
use spec::{Experiment, Precision, Profile, Variant};
use tch::Device;

/// Bytes per parameter: the weight, its gradient, the momentum, and room for the update's
/// temporaries (all fp32 whatever the precision).
const BYTES_PER_PARAM: u64 = 16;
/// What libtorch and the runner hold before the first batch.
const RUNTIME_BYTES: u64 = 256 << 20;
/// CIFAR-10 on the device: 60,000 images of 3×32×32 bytes.
const DATA_BYTES: u64 = 60_000 * 3 * 32 * 32;

/// Bytes per feature-map element and image that a training step keeps for its backward pass
/// (the convolution's, the BN's and the ReLU's outputs and the addition's, with room).
fn bytes_per_feature(precision: Precision) -> u64 {
    match precision {
        Precision::Fp32 => 16,
        Precision::Bf16 | Precision::Fp16 => 8,
    }
}

/// The memory one stacked network of `replicas` needs to train on batches of `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub params: i64,
    pub replicas: i64,
    pub batch: i64,
    /// Weights, gradients and momentum of every replica.
    pub weight_bytes: u64,
    /// The feature maps of one step, every replica.
    pub activation_bytes: u64,
    /// The dataset on the device and libtorch's own.
    pub fixed_bytes: u64,
    /// `weight_bytes` and `activation_bytes` of one replica.
    per_replica: (u64, u64),
}

impl Need {
    pub fn of(config: &NetConfig, batch: i64, replicas: i64, precision: Precision) -> Result<Need> {
        let summary = config.with_replicas(1).summary()?;
        let weights = (summary.params as u64).saturating_mul(BYTES_PER_PARAM);
        let activations = (summary.feature_elements as u64)
            .saturating_mul(batch.max(1) as u64)
            .saturating_mul(bytes_per_feature(precision));
        let one = Need {
            params: summary.params,
            replicas: 1,
            batch,
            weight_bytes: weights,
            activation_bytes: activations,
            fixed_bytes: RUNTIME_BYTES + DATA_BYTES,
            per_replica: (weights, activations),
        };
        Ok(one.with_replicas(replicas))
    }

    /// The same network stacked `replicas` times (at least once).
    pub fn with_replicas(&self, replicas: i64) -> Need {
        let k = replicas.max(1);
        let (weights, activations) = self.per_replica;
        Need {
            replicas: k,
            weight_bytes: weights.saturating_mul(k as u64),
            activation_bytes: activations.saturating_mul(k as u64),
            ..*self
        }
    }

    /// The most replicas of up to `replicas` that fit in `available`; 0 when not even one
    /// does.
    pub fn replicas_that_fit(&self, replicas: i64, available: u64) -> i64 {
        (1..=replicas.max(1))
            .rev()
            .find(|&k| self.with_replicas(k).total() <= available)
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.weight_bytes
            .saturating_add(self.activation_bytes)
            .saturating_add(self.fixed_bytes)
    }

    /// `about 2.3 GiB (1.73M parameters × 4 replicas: weights, gradients and momentum
    /// 110 MiB; activations of 128 images each 1.9 GiB; data and libtorch 432 MiB)`.
    pub fn describe(&self) -> String {
        format!(
            "about {} ({:.2}M parameters × {} replica{}: weights, gradients and momentum {}; \
             activations of {} images{} {}; data and libtorch {})",
            bytes(self.total()),
            self.params as f64 / 1e6,
            self.replicas,
            if self.replicas == 1 { "" } else { "s" },
            bytes(self.weight_bytes),
            self.batch,
            if self.replicas == 1 { "" } else { " each" },
            bytes(self.activation_bytes),
            bytes(self.fixed_bytes),
        )
    }
}

/// `512 MiB`, `1.2 GiB`, `3.4 TiB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    match n {
        n if n < 1024.0 * MIB => format!("{:.0} MiB", n / MIB),
        n if n < 1024.0 * 1024.0 * MIB => format!("{:.1} GiB", n / (1024.0 * MIB)),
        n => format!("{:.1} TiB", n / (1024.0 * 1024.0 * MIB)),
    }
}

/// Memory `device` can give this process now, and where the figure comes from.
pub fn available(device: Device) -> Result<(u64, String)> {
    match device {
        Device::Cuda(index) => {
            let gpu = crate::device::gpu_info(index as i32)?;
            Ok((gpu.free_memory_bytes, format!("free on {}", gpu.name)))
        }
        _ => {
            let meminfo =
                std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
            let mut best = (
                mem_available(&meminfo).context("no MemAvailable in /proc/meminfo")?,
                "available (MemAvailable)".to_string(),
            );
            if let Some(left) = cgroup_left(Path::new("/sys/fs/cgroup")) {
                if left < best.0 {
                    best = (left, "left under its memory limit (cgroup)".into());
                }
            }
            Ok(best)
        }
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The room left under a cgroup v2 memory limit (`memory.max` − `memory.current`), if one
/// is set.
fn cgroup_left(root: &Path) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" when unlimited
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Refuses a network that cannot fit even alone; `where_` names the experiment file's line.
pub fn refuse_unless_fits(
    need: &Need,
    available: u64,
    source: &str,
    where_: &str,
    device: Device,
) -> Result<()> {
    if need.total() <= available {
        return Ok(());
    }
    let on = if device.is_cuda() {
        "the GPU"
    } else {
        "this machine"
    };
    bail!(
        "{where_}: too big for {on}: training needs {} and {on} has {} {source}; lower the \
         depth (units_per_stage), batch_size or --replicas",
        need.describe(),
        bytes(available),
    )
}

/// Checks, before any tensor exists, that every variant's network fits in `device`'s memory
/// at the batch size and stack size asked for. Returns the most seeds to stack (`asked`,
/// else the device's default, 16 on CUDA and 1 on the CPU, lowered to what fits) and the
/// largest estimate, for the time estimate to say. Refuses a network that does not fit alone,
/// or with `--replicas` as asked.
pub fn fit_sweep(
    experiment: &Experiment,
    profile: &Profile,
    variants: &[&Variant],
    seeds: &[u64],
    device: Device,
    asked: Option<usize>,
    precision: Option<Precision>,
) -> Result<(usize, String)> {
    let (available, source) = available(device)?;
    let sweep = Sweep {
        experiment,
        profile,
        variants,
        seeds,
        device,
        asked,
        precision,
    };
    sweep.fit(available, &source)
}

/// What [`fit_sweep`] checks.
struct Sweep<'a> {
    experiment: &'a Experiment,
    profile: &'a Profile,
    variants: &'a [&'a Variant],
    seeds: &'a [u64],
    device: Device,
    asked: Option<usize>,
    precision: Option<Precision>,
}

impl Sweep<'_> {
    /// [`fit_sweep`] against `available` bytes (`source` says where the figure comes from).
    fn fit(&self, available: u64, source: &str) -> Result<(usize, String)> {
        let default = if self.device.is_cuda() { 16 } else { 1 };
        let stack = self.asked.unwrap_or(default).min(self.seeds.len()).max(1) as i64;
        let mut replicas = stack;
        let mut largest: Option<(Need, &str)> = None;
        for variant in self.variants {
            let protocol = self.experiment.protocol(variant, self.profile)?;
            let one = Need::of(
                &self.experiment.net_config(variant, self.profile)?,
                protocol.batch_size,
                1,
                self.precision.unwrap_or(protocol.precision),
            )?;
            let location = format!(
                "{}: profile `{}`, variant `{}`",
                self.experiment.model_location(variant, self.profile),
                self.profile.name,
                variant.name
            );
            refuse_unless_fits(&one, available, source, &location, self.device)?;
            let fit = one.replicas_that_fit(stack, available);
            if fit < stack && self.asked.is_some() {
                bail!(
                    "{location}: {stack} stacked replicas do not fit: they need {} and the \
                     device has {} {source}; --replicas {fit} fits",
                    one.with_replicas(stack).describe(),
                    bytes(available),
                );
            }
            replicas = replicas.min(fit);
            let need = one.with_replicas(fit);
            if largest.is_none_or(|(l, _)| need.total() > l.total()) {
                largest = Some((need, &variant.name));
            }
        }
        if replicas < stack {
            eprintln!(
                "memory: stacking at most {replicas} seeds at once (not {stack}): more do not \
                 fit in {} {source}",
                bytes(available)
            );
        }
        let said = largest.map_or_else(String::new, |(need, name)| {
            format!(
                "memory for {name}: {} of {} {source}",
                need.describe(),
                bytes(available)
            )
        });
        Ok((replicas as usize, said))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cgroup_limits_are_read_in_bytes() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   \
                       20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_left(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "1000\n").unwrap();
        assert_eq!(cgroup_left(dir.path()), None, "no limit set");
        std::fs::write(dir.path().join("memory.max"), "5000\n").unwrap();
        assert_eq!(cgroup_left(dir.path()), Some(4000));
    }

    /// The estimate's arithmetic for ResNet-20 (269,722 parameters, 188,416 feature-map
    /// elements per image), and that it scales with replicas and halves its activations in
    /// bf16.
    #[test]
    fn the_estimate_counts_weights_activations_and_the_data() {
        let config = NetConfig::cifar(20);
        let one = Need::of(&config, 128, 1, Precision::Fp32).unwrap();
        assert_eq!(one.params, 269_722);
        assert_eq!(one.weight_bytes, 269_722 * 16);
        assert_eq!(one.activation_bytes, 188_416 * 128 * 16);
        assert_eq!(one.fixed_bytes, (256 << 20) + 184_320_000);
        let four = Need::of(&config, 128, 4, Precision::Fp32).unwrap();
        assert_eq!(four.weight_bytes, 4 * one.weight_bytes);
        assert_eq!(four.activation_bytes, 4 * one.activation_bytes);
        let bf16 = Need::of(&config, 128, 1, Precision::Bf16).unwrap();
        assert_eq!(2 * bf16.activation_bytes, one.activation_bytes);
        // 368 MiB of activations, 4 MiB of weights, 432 MiB fixed
        assert_eq!(bytes(one.total()), "804 MiB");
        assert_eq!(one.with_replicas(4), four);
        let fit = |available| one.replicas_that_fit(8, available);
        assert_eq!(fit(one.total()), 1);
        assert_eq!(fit(four.total()), 4);
        assert_eq!(fit(one.total() - 1), 0);
    }

    /// The sweep's check: a default stack shrinks to what fits, `--replicas` beyond it is
    /// refused naming the count that fits, a network too big alone is refused, each in one
    /// line naming the experiment file's line.
    #[test]
    fn a_sweep_stacks_what_fits_and_refuses_what_cannot() {
        let text = "title = \"t\"\nsource = \"s\"\n[model]\ndepth = 20\n[[variants]]\n\
                    name = \"a\"\n[profiles.p]\nseeds = [0, 1, 2, 3, 4]\n\
                    protocol = { batch_size = 128, iterations = 10, lr = 0.1, lr_drops = [] }\n";
        let experiment =
            Experiment::parse(std::path::Path::new("experiments/t.toml"), text).unwrap();
        let profile = experiment.profile("p").unwrap();
        let variants = experiment.select_variants(profile, &[]).unwrap();
        let sweep = |asked| Sweep {
            experiment: &experiment,
            profile,
            variants: &variants,
            seeds: &profile.seeds,
            device: Device::Cuda(0),
            asked,
            precision: None,
        };
        let one = Need::of(&NetConfig::cifar(20), 128, 1, Precision::Fp32).unwrap();
        let three = one.with_replicas(3).total();
        let (replicas, said) = sweep(None).fit(three, "free").unwrap();
        assert_eq!(
            replicas, 3,
            "the default 16, at most the 5 seeds, lowered to what fits"
        );
        assert!(said.starts_with("memory for a: about "), "{said}");
        assert_eq!(sweep(Some(3)).fit(three, "free").unwrap().0, 3);
        let err = format!("{:#}", sweep(Some(5)).fit(three, "free").unwrap_err());
        assert!(
            err.starts_with("experiments/t.toml:7: profile `p`, variant `a`: 5 stacked replicas do not fit: they need about "),
            "{err}"
        );
        assert!(
            err.ends_with(" and the device has 1.5 GiB free; --replicas 3 fits"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            sweep(None).fit(one.total() - 1, "free").unwrap_err()
        );
        assert!(
            err.contains(": too big for the GPU: training needs about "),
            "{err}"
        );
        assert!(!err.contains("  "), "{err}");
    }

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
    }
}
