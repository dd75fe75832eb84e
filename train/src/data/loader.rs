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
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use rekindle_model::Preprocess;
use rekindle_model::preprocess::{eval_transform, normalize_into};

use crate::data::augment::Augment;
use crate::data::dataset::{Dataset, ImageRef, Item};

/// Images and their class indices, one step's worth.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, 3, side, side]`, normalised.
    pub images: Tensor<4>,
    /// `[n]` class indices.
    pub targets: Tensor<1, Int>,
}

/// Batches still being decoded when the step asks for the next one.
const PREFETCH: usize = 2;

/// A loader over one split of a [`Dataset`].
#[derive(Clone)]
pub struct EpochLoader {
    data: Arc<Dataset>,
    items: Arc<Vec<Item>>,
    batch_size: usize,
    preprocess: Preprocess,
    /// `Some` for training: shuffled, augmented, reseeded each epoch.
    augment: Option<Option<Augment>>,
    seed: u64,
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
        Self::new(
            data, items, batch_size, preprocess, None, 0, 1, workers, device,
        )
    }

    /// A training loader: reshuffled and re-augmented every epoch from `seed`; the first
    /// `iter()` serves `first_epoch` (1-based; a resumed run starts past its checkpoint).
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        data: Arc<Dataset>,
        items: Vec<Item>,
        batch_size: usize,
        preprocess: Preprocess,
        augment: Option<Augment>,
        seed: u64,
        first_epoch: usize,
        workers: usize,
        device: Device,
    ) -> Self {
        let aug = Some(augment);
        Self::new(
            data,
            items,
            batch_size,
            preprocess,
            aug,
            seed,
            first_epoch,
            workers,
            device,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        data: Arc<Dataset>,
        items: Vec<Item>,
        batch_size: usize,
        preprocess: Preprocess,
        augment: Option<Option<Augment>>,
        seed: u64,
        first_epoch: usize,
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
        Self {
            data,
            items: Arc::new(items),
            batch_size: batch_size.max(1),
            preprocess,
            augment,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch)),
            device,
            pool,
        }
    }

    /// The order of the items in `epoch`: a seeded permutation for training, as stored otherwise.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if self.augment.is_some() {
            order.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, epoch as u64, 0)));
        }
        order
    }

    /// Decodes and transforms the images at `positions` of `epoch` into one batch.
    fn batch(&self, epoch: usize, positions: &[(usize, usize)]) -> Result<Batch, DatasetError> {
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
                    let pixels = match &self.augment {
                        Some(Some(aug)) => {
                            let mut rng =
                                StdRng::seed_from_u64(mix(self.seed, epoch as u64, pos as u64 + 1));
                            let mut out = Vec::with_capacity(3 * side * side);
                            normalize_into(&aug.apply(&img, &mut rng), &self.preprocess, &mut out);
                            out
                        }
                        _ => eval_transform(&img, &self.preprocess),
                    };
                    Ok((pixels, item.label as i64))
                })
                .collect()
        });
        let n = prepared.len();
        let mut pixels = Vec::with_capacity(n * 3 * side * side);
        let mut labels = Vec::with_capacity(n);
        for p in prepared {
            let (px, label) = p.map_err(|e| DatasetError::new(std::io::Error::other(e)))?;
            pixels.extend_from_slice(&px);
            labels.push(label);
        }
        Ok(Batch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, side, side]), &self.device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), &self.device),
        })
    }
}

fn describe(image: &ImageRef, err: &str) -> String {
    match image {
        ImageRef::File(p) => format!("{}: unreadable image: {err}", p.display()),
        ImageRef::Memory(i) => format!("in-memory image {i}: {err}"),
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
        let item = self.rx.recv().ok()?;
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
        let epoch = if self.augment.is_some() {
            let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
            // Dropout and any other device-side randomness restart from the seed each epoch,
            // so that a resumed epoch draws what the uninterrupted one drew.
            self.device.seed(mix(self.seed, epoch as u64, u64::MAX));
            epoch
        } else {
            0
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
                for chunk in chunks {
                    let batch = me.batch(epoch, &chunk);
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
