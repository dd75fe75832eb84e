//! The data loader: Burn's `DataLoader` trait, implemented here because Burn's own loader
//! shuffles with an RNG that advances from epoch to epoch, so a run resumed at epoch k would
//! see epoch 1's order. Here the order and every augmentation are functions of
//! (seed, epoch, position), and batches are decoded on worker threads ahead of the step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::DynamicImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use rekindle_model::Preprocess;
use rekindle_model::preprocess::{center_crop, eval_transform, normalize_into, resize_shorter};

use crate::config::{BadImage, TrainConfig};
use crate::data::augment::Augment;
use crate::data::dataset::{Dataset, ImageRef, Item};
use crate::data::mixup::{Mixup, mix_images, mix_targets};
use crate::data::policy::Policy;
use crate::data::sampler::Sampler;

/// Images and their class indices, one step's worth.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, 3, side, side]`, normalised.
    pub images: Tensor<4>,
    /// `[n]` class indices (each image's own, also when mixed).
    pub targets: Tensor<1, Int>,
    /// `[n, classes]` target probabilities, when the run mixes batches (mixup, cutmix).
    pub mixed: Option<Tensor<2>>,
}

/// Batches still being decoded when the step asks for the next one.
const PREFETCH: usize = 2;

/// What a training loader draws, every draw a function of the seed, the epoch and a position.
#[derive(Clone, Debug)]
pub struct Training {
    /// Random resized crop and flip, or none.
    pub augment: Option<Augment>,
    /// Automatic augmentation, colour jitter and erasing after it.
    pub policy: Policy,
    /// Batch mixing, or none.
    pub mixup: Option<Mixup>,
    /// The order of each epoch.
    pub sampler: Sampler,
    /// The run's seed.
    pub seed: u64,
    /// The epoch the first `iter()` serves (1-based; a resumed run starts past its checkpoint).
    pub first_epoch: usize,
}

impl Training {
    /// The draws `cfg` asks for, at input side `side`, for `classes` classes.
    pub fn of(cfg: &TrainConfig, side: usize, classes: usize, first_epoch: usize) -> Self {
        let d = &cfg.data;
        Self {
            augment: d.augment.then_some(Augment {
                size: side as u32,
                scale_min: d.crop_scale_min,
                hflip: d.hflip,
            }),
            policy: Policy {
                auto: d.auto_augment,
                ops: d.rand_augment_ops,
                magnitude: d.rand_augment_magnitude,
                jitter: d.color_jitter,
                erasing: d.random_erasing,
                erasing_fill: d.erasing_fill,
            },
            mixup: cfg.mixup.active().then(|| Mixup {
                cfg: cfg.mixup.clone(),
                classes,
            }),
            sampler: d.sampler,
            seed: cfg.train.seed,
            first_epoch,
        }
    }
}

/// Stream of the batch-level draws (mixup), apart from the shuffle's and the images'.
const BATCH_STREAM: u64 = 0x6d69_7875_7021;

/// A loader over one split of a [`Dataset`].
#[derive(Clone)]
pub struct EpochLoader {
    data: Arc<Dataset>,
    items: Arc<Vec<Item>>,
    batch_size: usize,
    preprocess: Preprocess,
    /// `Some` for training: drawn anew every epoch from the seed.
    training: Option<Training>,
    /// The epoch the next `iter()` serves (shared by clones made for other devices).
    next_epoch: Arc<AtomicUsize>,
    device: Device,
    pool: Arc<rayon::ThreadPool>,
}

impl EpochLoader {
    /// A validation loader: fixed order, evaluation transform.
    pub fn eval(
        data: Arc<Dataset>,
        items: Vec<Item>,
        batch_size: usize,
        preprocess: Preprocess,
        workers: usize,
        device: Device,
    ) -> Self {
        Self::new(data, items, batch_size, preprocess, None, workers, device)
    }

    /// A training loader: reordered, augmented and mixed every epoch as `training` says.
    pub fn train(
        data: Arc<Dataset>,
        items: Vec<Item>,
        batch_size: usize,
        preprocess: Preprocess,
        training: Training,
        workers: usize,
        device: Device,
    ) -> Self {
        Self::new(
            data,
            items,
            batch_size,
            preprocess,
            Some(training),
            workers,
            device,
        )
    }

    fn new(
        data: Arc<Dataset>,
        items: Vec<Item>,
        batch_size: usize,
        preprocess: Preprocess,
        training: Option<Training>,
        workers: usize,
        device: Device,
    ) -> Self {
        let threads = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rekindle-data-{i}"))
            .build()
            .map(Arc::new)
            .unwrap_or_else(|_| {
                Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .build()
                        .expect("a default thread pool"),
                )
            });
        let first = training.as_ref().map_or(1, |t| t.first_epoch);
        Self {
            data,
            items: Arc::new(items),
            batch_size: batch_size.max(1),
            preprocess,
            training,
            next_epoch: Arc::new(AtomicUsize::new(first)),
            device,
            pool,
        }
    }

    /// The order of the items in `epoch`: the sampler's seeded draw for training, as stored
    /// otherwise.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        match &self.training {
            Some(t) => {
                let labels: Vec<usize> = self.items.iter().map(|i| i.label).collect();
                let mut rng = StdRng::seed_from_u64(mix(t.seed, epoch as u64, 0));
                t.sampler.order(&labels, &mut rng)
            }
            None => (0..self.items.len()).collect(),
        }
    }

    /// Decodes and transforms the images at `positions` of `epoch` into one batch.
    fn batch(
        &self,
        epoch: usize,
        step: usize,
        positions: &[(usize, usize)],
    ) -> Result<Batch, DatasetError> {
        let side = self.preprocess.crop;
        let prepared: Vec<Result<(Vec<f32>, i64), String>> = self.pool.install(|| {
            positions
                .par_iter()
                .map(|&(pos, index)| {
                    let item = &self.items[index];
                    let img = self
                        .data
                        .decode(&item.image)
                        .map_err(|e| describe(&item.image, &e))?;
                    let pixels = match &self.training {
                        Some(t) => self.train_transform(t, &img, epoch, pos),
                        None => eval_transform(&img, &self.preprocess),
                    };
                    Ok((pixels, item.label as i64))
                })
                .collect()
        });
        let mut pixels = Vec::with_capacity(prepared.len() * 3 * side * side);
        let mut labels = Vec::with_capacity(prepared.len());
        let mut failed = Vec::new();
        for (p, &(_, index)) in prepared.into_iter().zip(positions) {
            match p {
                Ok((px, label)) => {
                    pixels.extend_from_slice(&px);
                    labels.push(label);
                }
                Err(e) => failed.push((&self.items[index].image, e)),
            }
        }
        self.leave_out(&failed, labels.is_empty())?;
        let n = labels.len();
        let mixed = self.mix(epoch, step, &mut pixels, &labels);
        Ok(Batch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, side, side]), &self.device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), &self.device),
            mixed,
        })
    }

    /// Leaves the images that failed to decode out of their batch (counted in the dataset's
    /// `load_failures`, a warning the first time each fails), or fails as `on_bad_image` says;
    /// a batch with nothing left (`empty`) is an error too, as there is nothing to step on.
    fn leave_out(&self, failed: &[(&ImageRef, String)], empty: bool) -> Result<(), DatasetError> {
        let Some((_, first)) = failed.first() else {
            return Ok(());
        };
        let fail = |e: &str| Err(DatasetError::new(std::io::Error::other(e.to_string())));
        if self.data.on_bad_image == BadImage::Fail {
            return fail(first);
        }
        for (image, why) in failed {
            let ImageRef::File(path) = image else {
                return fail(why);
            };
            if self.data.load_failures.record(path, why) {
                eprintln!("warning: {why}; left out of its batch");
            }
        }
        if empty {
            return fail(&format!(
                "every image of a batch failed to decode, the first: {first}"
            ));
        }
        Ok(())
    }

    /// The training transform of the image at `pos` of `epoch`: crop and flip (or the
    /// evaluation crop), the policies, normalisation, erasing; drawn from the image's stream.
    fn train_transform(
        &self,
        t: &Training,
        img: &DynamicImage,
        epoch: usize,
        pos: usize,
    ) -> Vec<f32> {
        let side = self.preprocess.crop;
        let mut rng = StdRng::seed_from_u64(mix(t.seed, epoch as u64, pos as u64 + 1));
        let cropped = match t.augment {
            Some(aug) => aug.apply(img, &mut rng),
            None => eval_crop(img, &self.preprocess),
        };
        let mut out = Vec::with_capacity(3 * side * side);
        if t.policy.is_identity() {
            normalize_into(&cropped, &self.preprocess, &mut out);
            return out;
        }
        let rgb = t.policy.apply(cropped.to_rgb8(), &mut rng);
        normalize_into(&DynamicImage::ImageRgb8(rgb), &self.preprocess, &mut out);
        t.policy.erase(&mut out, side, &mut rng);
        out
    }

    /// Mixes the batch `step` of `epoch` in place when the run mixes; its target probabilities.
    fn mix(
        &self,
        epoch: usize,
        step: usize,
        pixels: &mut [f32],
        labels: &[i64],
    ) -> Option<Tensor<2>> {
        let t = self.training.as_ref()?;
        let m = t.mixup.as_ref()?;
        let side = self.preprocess.crop;
        let seed = mix(t.seed ^ BATCH_STREAM, epoch as u64, step as u64);
        let drawn = m.draw(side, &mut StdRng::seed_from_u64(seed));
        mix_images(&drawn, pixels, labels.len(), side);
        let probs = mix_targets(&drawn, labels, m.classes);
        Some(Tensor::from_data(
            TensorData::new(probs, [labels.len(), m.classes]),
            &self.device,
        ))
    }
}

/// The evaluation's resize and centre crop, before normalisation.
fn eval_crop(img: &DynamicImage, p: &Preprocess) -> DynamicImage {
    center_crop(&resize_shorter(img, p.resize as u32), p.crop as u32)
}

fn describe(image: &ImageRef, err: &str) -> String {
    match image {
        ImageRef::File(p) => format!("{}: unreadable image: {err}", p.display()),
        ImageRef::Memory(_) => format!("{image}: {err}"),
    }
}

/// A 64-bit mix (splitmix64) of the seed, the epoch and a position: independent streams for
/// the shuffle (position 0) and each image.
pub fn mix(seed: u64, epoch: u64, pos: u64) -> u64 {
    let mut z =
        seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ pos.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct EpochIter {
    rx: Receiver<Result<Batch, DatasetError>>,
    sizes: Vec<usize>,
    done: usize,
    total: usize,
    step: usize,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let Ok(item) = self.rx.recv() else {
            // The producer hung up. At the end that is the epoch's end; before it, the decoding
            // thread died (a panic), and a short epoch must not pass for a whole one.
            if self.step >= self.sizes.len() {
                return None;
            }
            let msg = format!(
                "the loader's decoding thread stopped after {} of {} batches",
                self.step,
                self.sizes.len()
            );
            self.step = self.sizes.len();
            return Some(Err(DatasetError::new(std::io::Error::other(msg))));
        };
        self.done += self.sizes.get(self.step).copied().unwrap_or(0);
        self.step += 1;
        Some(item)
    }
}

impl DataLoaderIterator<Batch> for EpochIter {
    fn progress(&self) -> Progress {
        Progress::new(self.done, self.total, Some("images".into()))
    }
}

impl DataLoader<Batch> for EpochLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<Batch> + 'a> {
        let epoch = match &self.training {
            Some(t) => {
                let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
                // Dropout and any other device-side randomness restart from the seed each
                // epoch, so that a resumed epoch draws what the uninterrupted one drew.
                self.device.seed(mix(t.seed, epoch as u64, u64::MAX));
                epoch
            }
            None => 0,
        };
        let order = self.order(epoch);
        let chunks: Vec<Vec<(usize, usize)>> = order
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>()
            .chunks(self.batch_size)
            .map(|c| c.to_vec())
            .collect();
        let sizes = chunks.iter().map(Vec::len).collect();
        let (tx, rx) = sync_channel(PREFETCH);
        let me = self.clone();
        std::thread::Builder::new()
            .name("rekindle-loader".into())
            .spawn(move || {
                for (step, chunk) in chunks.iter().enumerate() {
                    let batch = me.batch(epoch, step, chunk);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the data loader thread");
        Box::new(EpochIter {
            rx,
            sizes,
            done: 0,
            total: self.items.len(),
            step: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.items.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<Batch>> {
        let mut me = self.clone();
        me.device = device.clone();
        Arc::new(me)
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<Batch>> {
        let mut me = self.clone();
        let end = end.min(self.items.len());
        me.items = Arc::new(self.items[start.min(end)..end].to_vec());
        // A slice (one device's share) counts its own epochs.
        me.next_epoch = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iter_after(sent: usize, batches: usize) -> EpochIter {
        let (tx, rx) = std::sync::mpsc::sync_channel(batches);
        for i in 0..sent {
            let e = std::io::Error::other(format!("batch {i}"));
            tx.send(Err(DatasetError::new(e))).unwrap();
        }
        EpochIter {
            rx,
            sizes: vec![4; batches],
            done: 0,
            total: 4 * batches,
            step: 0,
        }
    }

    #[test]
    fn a_dead_decoder_is_an_error_not_a_short_epoch() {
        let got: Vec<String> = iter_after(1, 3)
            .map(|b| b.err().map(|e| e.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("batch 0"), "{got:?}");
        assert!(got[1].contains("stopped after 1 of 3 batches"), "{got:?}");
        assert_eq!(iter_after(3, 3).count(), 3);
    }
}
