//! The dropout shortcut's masks on the CPU, from a counter-based generator.
//!
//! libtorch's `bernoulli_` draws on the CPU one element at a time from one Mersenne Twister:
//! for ResNet-32's 15 units at batch 128 that is 170 ms a training step on a 2-core AMD EPYC,
//! more than half a step's other work. Here element `i` of a replica's mask (in NCHW order)
//! is kept when SplitMix64's output for counter `i` of the unit's seed falls below the keep
//! probability: every element is a function of (seed, i) alone, so the mask is the same
//! whatever the number of threads that fill it, the memory format or the replicas stacked
//! beside it, and the threads fill it in parallel.

use std::thread;

use tch::{Device, Kind, Tensor};

use crate::net::{splitmix64_finish, SPLITMIX64_GAMMA};

/// Element `i` of the stream of `seed`: the top 24 bits of SplitMix64's `i`-th output, a
/// whole number below 2^24, kept where it is below [`threshold`]`(keep)`.
fn draw(seed: u64, i: u64) -> u64 {
    splitmix64_finish(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(SPLITMIX64_GAMMA))) >> 40
}

/// The draws below which an element is kept: keep·2^24 rounded up, so that a draw d is kept
/// when d / 2^24 < keep.
fn threshold(keep: f32) -> u64 {
    (f64::from(keep) * 16_777_216.0).ceil() as u64
}

/// The shape of a stacked activation `[B, K·C, H, W]` as the mask generator sees it.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Channels of one replica.
    c: usize,
    /// Pixels of one channel (H·W).
    hw: usize,
    /// Memory order: NHWC (`true`) or NCHW.
    channels_last: bool,
}

/// Fills `out`, one image `[K·C, H, W]` (in `layout`'s memory order) after another, with
/// `1 / keep` where kept and 0 elsewhere; replica k's elements come from `seeds[k]`, numbered
/// in NCHW order within the replica. Splits the images over `threads` threads.
fn fill(out: &mut [f32], seeds: &[u64], keep: f32, layout: Layout, threads: usize) {
    let Layout {
        c,
        hw,
        channels_last,
    } = layout;
    let k = seeds.len();
    let per_image = k * c * hw;
    if per_image == 0 {
        return;
    }
    debug_assert_eq!(out.len() % per_image, 0, "whole images only");
    let images = out.len() / per_image;
    let scale = 1.0 / keep;
    let below = threshold(keep);
    // without a branch: on random draws one would be mispredicted every other element
    let value = |seed: u64, i: u64| f32::from(u8::from(draw(seed, i) < below)) * scale;
    let fill_image = |image: usize, dst: &mut [f32]| {
        // the first stream index of this image in each replica's stream (NCHW order)
        let base = (image * c * hw) as u64;
        if channels_last {
            // pixel by pixel, each pixel's K·C channels: stream index base + ch·HW + p
            for (p, pixel) in dst.chunks_exact_mut(k * c).enumerate() {
                for (&seed, channels) in seeds.iter().zip(pixel.chunks_exact_mut(c)) {
                    for (ch, v) in channels.iter_mut().enumerate() {
                        *v = value(seed, base + (ch * hw + p) as u64);
                    }
                }
            }
        } else {
            // channel by channel, each replica's C in turn: base + ch·HW + p, p = 0, 1, …
            for (kc, row) in dst.chunks_exact_mut(hw).enumerate() {
                let (seed, first) = (seeds[kc / c], base + ((kc % c) * hw) as u64);
                for (p, v) in row.iter_mut().enumerate() {
                    *v = value(seed, first + p as u64);
                }
            }
        }
    };
    let per_thread = images.div_ceil(threads.max(1)).max(1);
    thread::scope(|scope| {
        for (chunk_index, chunk) in out.chunks_mut(per_thread * per_image).enumerate() {
            scope.spawn(move || {
                for (j, dst) in chunk.chunks_mut(per_image).enumerate() {
                    fill_image(chunk_index * per_thread + j, dst);
                }
            });
        }
    });
}

/// The dropout multiplier for a CPU activation `hx` `[B, K·C, H, W]` (K = `seeds.len()`):
/// 0 or `1 / keep`, in `hx`'s kind and memory format; see the module docs.
pub(crate) fn cpu_mask(hx: &Tensor, keep: f64, seeds: &[i64], channels_last: bool) -> Tensor {
    let size = hx.size();
    let k = seeds.len() as i64;
    let (b, kc, h, w) = (size[0], size[1], size[2], size[3]);
    assert!(
        k > 0 && kc % k == 0,
        "dropout mask: {kc} channels do not split into {k} replicas"
    );
    let numel = (b * kc * h * w) as usize;
    if numel == 0 {
        // an empty tensor's data pointer may be null: nothing to draw
        return Tensor::zeros(size.as_slice(), (hx.kind(), Device::Cpu));
    }
    let layout = Layout {
        c: (kc / k) as usize,
        hw: (h * w) as usize,
        channels_last,
    };
    let shape = if channels_last {
        [b, h, w, kc]
    } else {
        [b, kc, h, w]
    };
    let mut mask = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    // SAFETY: `mask` is a new contiguous fp32 tensor of `numel` elements that nothing else
    // refers to while `out` lives.
    let out = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, numel) };
    let seeds: Vec<u64> = seeds.iter().map(|&s| s as u64).collect();
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
    fill(out, &seeds, keep as f32, layout, threads);
    if channels_last {
        mask = mask.permute([0, 3, 1, 2]);
    }
    if hx.kind() == Kind::Float {
        mask
    } else {
        mask.to_kind(hx.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(seeds: &[u64], layout: Layout, images: usize, threads: usize) -> Vec<f32> {
        mask_keeping(0.5, seeds, layout, images, threads)
    }

    fn mask_keeping(
        keep: f32,
        seeds: &[u64],
        layout: Layout,
        images: usize,
        threads: usize,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; images * seeds.len() * layout.c * layout.hw];
        fill(&mut out, seeds, keep, layout, threads);
        out
    }

    const NCHW: Layout = Layout {
        c: 3,
        hw: 20,
        channels_last: false,
    };

    #[test]
    fn the_mask_does_not_depend_on_the_threads() {
        let one = mask(&[7, 8], NCHW, 9, 1);
        for threads in [2, 3, 16] {
            assert_eq!(one, mask(&[7, 8], NCHW, 9, threads), "{threads} threads");
        }
        assert!(one.iter().all(|&v| v == 0.0 || v == 2.0), "{one:?}");
    }

    /// Replica k of a stack draws what it draws alone, and NHWC holds NCHW's values moved.
    #[test]
    fn each_replica_draws_its_own_stream_in_any_memory_format() {
        let (c, hw, images) = (NCHW.c, NCHW.hw, 4);
        let stacked = mask(&[7, 8], NCHW, images, 2);
        let nhwc = Layout {
            channels_last: true,
            ..NCHW
        };
        let stacked_nhwc = mask(&[7, 8], nhwc, images, 2);
        for (k, seed) in [7u64, 8].into_iter().enumerate() {
            let alone = mask(&[seed], NCHW, images, 1);
            for image in 0..images {
                for ch in 0..c {
                    for p in 0..hw {
                        let value = alone[(image * c + ch) * hw + p];
                        let kc = k * c + ch;
                        assert_eq!(stacked[(image * 2 * c + kc) * hw + p], value);
                        assert_eq!(stacked_nhwc[(image * hw + p) * 2 * c + kc], value);
                    }
                }
            }
        }
        assert_ne!(mask(&[7], NCHW, images, 1), mask(&[8], NCHW, images, 1));
    }

    /// Half of a million elements kept, within 5 standard deviations (0.0025), and
    /// neighbours unrelated: as often equal as not.
    #[test]
    fn half_of_the_elements_are_kept_independently() {
        let layout = Layout {
            c: 16,
            hw: 1024,
            channels_last: false,
        };
        let values = mask(&[42], layout, 64, 2);
        let n = values.len() as f64;
        let kept = values.iter().filter(|&&v| v == 2.0).count() as f64 / n;
        assert!((kept - 0.5).abs() < 0.0025, "{kept}");
        let equal = values.windows(2).filter(|w| w[0] == w[1]).count() as f64 / (n - 1.0);
        assert!((equal - 0.5).abs() < 0.0025, "{equal}");
    }

    /// Other keep probabilities: the fraction kept and the scale follow `keep` (not the
    /// ratio dropped), and keep = 1 keeps everything unscaled.
    #[test]
    fn the_keep_probability_sets_the_fraction_and_the_scale() {
        let layout = Layout {
            c: 8,
            hw: 1024,
            channels_last: true,
        };
        let values = mask_keeping(0.9, &[5], layout, 64, 2);
        let scale = 1.0 / 0.9f32;
        assert!(values.iter().all(|&v| v == 0.0 || v == scale));
        let kept = values.iter().filter(|&&v| v == scale).count() as f64 / values.len() as f64;
        // 5 standard deviations of 524,288 draws at 0.9: 0.0021
        assert!((kept - 0.9).abs() < 0.0021, "{kept}");
        assert!(mask_keeping(1.0, &[5], layout, 4, 2)
            .iter()
            .all(|&v| v == 1.0));
    }

    #[test]
    fn empty_and_uneven_activations() {
        let empty = Tensor::zeros([0, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert_eq!(
            cpu_mask(&empty, 0.5, &[1, 2], true).size(),
            vec![0, 4, 3, 3]
        );
        let uneven = Tensor::zeros([2, 5, 3, 3], (Kind::Float, Device::Cpu));
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cpu_mask(&uneven, 0.5, &[1, 2], false)
        }));
        assert!(refused.is_err(), "5 channels split into 2 replicas");
    }

    #[test]
    fn the_tensor_follows_the_activation_kind_and_format() {
        let hx = Tensor::zeros([2, 6, 4, 5], (Kind::BFloat16, Device::Cpu));
        let m = cpu_mask(&hx, 0.5, &[1, 2], false);
        assert_eq!((m.size(), m.kind()), (vec![2, 6, 4, 5], Kind::BFloat16));
        let cl = cpu_mask(&hx, 0.5, &[1, 2], true);
        assert!(crate::layers::is_channels_last(&cl));
        assert!(cl.equal(&m), "the same values in either memory format");
        // a multiplier of mean 1 whatever the probability kept: here 90% of 1/0.9
        let big = Tensor::zeros([8, 32, 16, 16], (Kind::Float, Device::Cpu));
        let mean = cpu_mask(&big, 0.9, &[3, 4], true)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
    }
}
