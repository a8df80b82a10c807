//! The dataset on the training device, and seeded batches with augmentation as tensor ops.
//!
//! Images are normalised once, zero-padded once (padding after normalisation, so a padded pixel
//! is the mean image's value under per-pixel mean subtraction, as in fb.resnet.torch), and kept
//! on the device. A batch is one gather of indices, then one gather per axis that crops and
//! flips every image of the batch at its own random offset: no per-image loop on the host.
//!
//! All randomness derives from (seed, stream, counter) — the data order from (seed, epoch), the
//! crops and flips from (seed, iteration) — so a run resumed at any epoch sees exactly the data
//! an uninterrupted run would, and replica k of a stacked run sees what a lone run of its seed
//! would.

use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::data::Split;
use spec::protocol::{Augmentation, Normalization, Protocol, SplitKind};

/// Independent random streams of one seed.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    DataOrder = 1,
    Augmentation = 2,
    Forward = 3,
    Init = 4,
}

/// A libtorch seed for (seed, stream, counter): SplitMix64 over the three.
pub fn derived_seed(seed: u64, stream: Stream, counter: u64) -> i64 {
    let z = seed
        .wrapping_mul(models::SPLITMIX64_GAMMA)
        .wrapping_add((stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(counter.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    (models::splitmix64_finish(z) >> 1) as i64
}

/// Runs `f` with libtorch's global random generator seeded with `seed`, holding a process-wide
/// lock so that no other thread reseeds or draws from it meanwhile (tch exposes no generator
/// objects; without the lock, concurrent runs in one process would steal each other's draws).
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static RNG: Mutex<()> = Mutex::new(());
    let _guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    f()
}

/// Train and evaluation images on the device, normalised.
#[derive(Debug)]
pub struct DeviceData {
    /// `[n, 3, 32 + 2·pad, 32 + 2·pad]`, float, normalised then zero-padded.
    train_padded: Tensor,
    /// `[n]`, int64.
    train_labels: Tensor,
    /// `[m, 3, 32, 32]`, float, normalised.
    pub eval_images: Tensor,
    /// `[m]`, int64.
    pub eval_labels: Tensor,
    pad: i64,
    flip: bool,
    device: Device,
}

impl DeviceData {
    /// Splits, subsets, normalises and moves the data to `device` as `protocol` says.
    pub fn new(train: &Split, test: &Split, protocol: &Protocol, device: Device) -> Self {
        let (train_images, train_labels, eval_images, eval_labels) = match protocol.split {
            SplitKind::Full => (
                train.images.shallow_clone(),
                train.labels.shallow_clone(),
                test.images.shallow_clone(),
                test.labels.shallow_clone(),
            ),
            SplitKind::Holdout5k => {
                let (n, held) = protocol.split.sizes(train.len(), test.len());
                (
                    train.images.narrow(0, 0, n),
                    train.labels.narrow(0, 0, n),
                    train.images.narrow(0, n, held),
                    train.labels.narrow(0, n, held),
                )
            }
        };
        let take = |t: Tensor, n: Option<i64>| match n {
            Some(n) if n < t.size()[0] => t.narrow(0, 0, n),
            _ => t,
        };
        let train_images = take(train_images, protocol.train_subset)
            .to_device(device)
            .to_kind(Kind::Float);
        let train_labels = take(train_labels, protocol.train_subset).to_device(device);
        let eval_images = take(eval_images, protocol.test_subset)
            .to_device(device)
            .to_kind(Kind::Float);
        let eval_labels = take(eval_labels, protocol.test_subset).to_device(device);

        // Statistics from the training images of this run only.
        let (shift, scale) = match protocol.normalization {
            // [1, 3, 32, 32]
            Normalization::PerPixelMean => (
                train_images.mean_dim(0, true, Kind::Float),
                Tensor::ones([1], (Kind::Float, device)),
            ),
            // [1, 3, 1, 1]
            Normalization::PerChannelMeanStd => (
                train_images.mean_dim([0, 2, 3].as_slice(), true, Kind::Float),
                train_images.std_dim([0, 2, 3].as_slice(), true, true),
            ),
        };
        let normalise = |x: &Tensor| (x - &shift) / &scale;
        let Augmentation { pad, flip } = protocol.augmentation;
        let train_padded = normalise(&train_images).constant_pad_nd([pad, pad, pad, pad]);
        Self {
            train_padded,
            train_labels,
            eval_images: normalise(&eval_images),
            eval_labels,
            pad,
            flip,
            device,
        }
    }

    /// Training images.
    pub fn train_len(&self) -> i64 {
        self.train_labels.size()[0]
    }

    /// Full batches per epoch (the last, partial batch of a permutation is dropped).
    pub fn steps_per_epoch(&self, batch_size: i64) -> i64 {
        self.train_len() / batch_size
    }

    /// The data order of `epoch` for `seed`: a permutation of the training images, on the device.
    pub fn epoch_order(&self, seed: u64, epoch: i64) -> Tensor {
        // Drawn on the CPU, so the order is the same on every device.
        seeded(derived_seed(seed, Stream::DataOrder, epoch as u64), || {
            Tensor::randperm(self.train_len(), (Kind::Int64, Device::Cpu))
        })
        .to_device(self.device)
    }

    /// The augmented batch of step `iteration` for one model: images `[b, 3, 32, 32]` and
    /// labels `[b]`, for the training images at `indices` (`[b]`, int64, on the device).
    pub fn batch(&self, indices: &Tensor, seed: u64, iteration: i64) -> (Tensor, Tensor) {
        let b = indices.size()[0];
        let images = self.train_padded.index_select(0, indices); // [b, 3, 32+2p, 32+2p]
        let labels = self.train_labels.index_select(0, indices);
        let opts = (Kind::Int64, self.device);
        let span = 2 * self.pad + 1;
        // One draw per image encodes its row offset, column offset and mirroring.
        let draws = seeded(
            derived_seed(seed, Stream::Augmentation, iteration as u64),
            || {
                Tensor::randint(span * span * 2, [b, 1], opts) // [b, 1]
            },
        );
        let dy = draws.remainder(span);
        let dx = draws.floor_divide_scalar(span).remainder(span);
        let flipped = draws.floor_divide_scalar(span * span) * i64::from(self.flip); // 1: mirror this image
        let steps = Tensor::arange(32, opts).unsqueeze(0); // [1, 32]
        let rows = &dy + &steps; // [b, 32]
                                 // Mirrored images read their columns right to left, dx+31 down to dx.
        let cols = &dx + &steps * (&flipped * -2 + 1) + &flipped * 31; // [b, 32]
        let width = 32 + 2 * self.pad;
        let rows = rows.view([b, 1, 32, 1]).expand([b, 3, 32, width], false);
        let cols = cols.view([b, 1, 1, 32]).expand([b, 3, 32, 32], false);
        let crops = images.gather(2, &rows, false).gather(3, &cols, false); // [b, 3, 32, 32]
        (crops, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(pad: i64, flip: bool) -> Protocol {
        toml::from_str(&format!(
            "batch_size = 4\niterations = 10\nlr = 0.1\nlr_drops = []\naugmentation = {{ pad = {pad}, flip = {flip} }}"
        ))
        .unwrap()
    }

    /// 6 training images whose pixel values encode (image, channel, row, column).
    fn split(n: i64) -> Split {
        let images = Tensor::arange(n * 3 * 32 * 32, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8);
        Split {
            images: images.view([n, 3, 32, 32]),
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)),
        }
    }

    /// The seeds every committed run was trained with (computed independently from the
    /// SplitMix64 formula): a change here changes every result.
    #[test]
    fn derived_seeds_are_pinned() {
        assert_eq!(
            derived_seed(0, Stream::Augmentation, 5),
            8822997517884218646
        );
        assert_eq!(derived_seed(3, Stream::Init, 0), 3810224613764853804);
        assert_eq!(
            derived_seed(123_456_789, Stream::DataOrder, 64_000),
            7523493970481429383
        );
    }

    #[test]
    fn derived_seeds_differ_by_seed_stream_and_counter() {
        let a = derived_seed(0, Stream::Augmentation, 5);
        assert_ne!(a, derived_seed(1, Stream::Augmentation, 5));
        assert_ne!(a, derived_seed(0, Stream::DataOrder, 5));
        assert_ne!(a, derived_seed(0, Stream::Augmentation, 6));
        assert_eq!(a, derived_seed(0, Stream::Augmentation, 5));
        assert!(a >= 0);
    }

    #[test]
    fn per_pixel_mean_is_subtracted_and_nothing_else_without_augmentation() {
        let train = split(6);
        let data = DeviceData::new(&train, &split(2), &protocol(0, false), Device::Cpu);
        let idx = Tensor::from_slice(&[2i64, 0]);
        let (x, y) = data.batch(&idx, 0, 0);
        assert_eq!(x.size(), [2, 3, 32, 32]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [2, 0]);
        let raw = train.images.to_kind(Kind::Float);
        let expected = raw.get(2) - raw.mean_dim(0, false, Kind::Float);
        assert!(x.get(0).allclose(&expected, 1e-5, 1e-4, false));
        // Normalised training images have zero mean at every pixel.
        let all = data
            .batch(&Tensor::arange(6, (Kind::Int64, Device::Cpu)), 0, 0)
            .0;
        assert!(
            all.mean_dim(0, false, Kind::Float)
                .abs()
                .max()
                .double_value(&[])
                < 1e-4
        );
    }

    #[test]
    fn crops_and_flips_are_windows_of_the_padded_image_and_seeded() {
        let data = DeviceData::new(&split(6), &split(2), &protocol(4, true), Device::Cpu);
        let idx = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
        let (x, _) = data.batch(&idx, 9, 17);
        assert_eq!(x.size(), [12, 3, 32, 32]);
        // Same (seed, iteration): same batch. Another iteration: another batch.
        assert!(x.equal(&data.batch(&idx, 9, 17).0));
        assert!(!x.equal(&data.batch(&idx, 9, 18).0));
        // Each crop equals some window of its padded image, mirrored or not.
        let mut flips = 0;
        for i in 0..12 {
            let image = idx.int64_value(&[i]);
            let padded = data.train_padded.get(image);
            let crop = x.get(i);
            let found = (0..9).any(|dy| {
                (0..9).any(|dx| {
                    let window = padded.narrow(1, dy, 32).narrow(2, dx, 32);
                    if crop.equal(&window) {
                        return true;
                    }
                    let mirrored = crop.equal(&window.flip([2]));
                    flips += i64::from(mirrored);
                    mirrored
                })
            });
            assert!(found, "crop {i} is no window of image {image}");
        }
        assert!(flips > 0 && flips < 12, "flips: {flips} of 12");
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let data = DeviceData::new(&split(6), &split(2), &protocol(4, true), Device::Cpu);
        let order = data.epoch_order(3, 1);
        let mut sorted = Vec::<i64>::try_from(&order).unwrap();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
        assert!(order.equal(&data.epoch_order(3, 1)));
        assert_eq!(data.steps_per_epoch(4), 1);
    }

    #[test]
    fn holdout_split_evaluates_on_the_last_5k_training_images() {
        let mut p = protocol(4, true);
        p.split = SplitKind::Holdout5k;
        let data = DeviceData::new(&split(5_010), &split(2), &p, Device::Cpu);
        assert_eq!(data.train_len(), 10);
        assert_eq!(data.eval_labels.size(), [5_000]);
        assert_eq!(data.eval_labels.int64_value(&[0]), 10);
    }
}
