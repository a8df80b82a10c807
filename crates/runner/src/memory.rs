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
use spec::Precision;
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
}

impl Need {
    pub fn of(config: &NetConfig, batch: i64, replicas: i64, precision: Precision) -> Result<Need> {
        let summary = config.with_replicas(1).summary()?;
        let k = replicas.max(1) as u64;
        let saturating = |a: u64, b: u64| a.saturating_mul(b);
        Ok(Need {
            params: summary.params,
            replicas: replicas.max(1),
            batch,
            weight_bytes: saturating(summary.params as u64, BYTES_PER_PARAM * k),
            activation_bytes: saturating(
                saturating(summary.feature_elements as u64, batch.max(1) as u64),
                bytes_per_feature(precision) * k,
            ),
            fixed_bytes: RUNTIME_BYTES + DATA_BYTES,
        })
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

/// The most replicas of up to `replicas` that fit in `available`; 0 when not even one does.
pub fn replicas_that_fit(
    config: &NetConfig,
    batch: i64,
    replicas: i64,
    precision: Precision,
    available: u64,
) -> Result<i64> {
    for k in (1..=replicas.max(1)).rev() {
        if Need::of(config, batch, k, precision)?.total() <= available {
            return Ok(k);
        }
    }
    Ok(0)
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
        let fit = |available| replicas_that_fit(&config, 128, 8, Precision::Fp32, available);
        assert_eq!(fit(one.total()).unwrap(), 1);
        assert_eq!(fit(four.total()).unwrap(), 4);
        assert_eq!(fit(one.total() - 1).unwrap(), 0);
    }

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
    }
}
