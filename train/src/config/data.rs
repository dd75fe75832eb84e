//! `[data]`: which images, how they are split, transformed and augmented.

use std::path::{Path, PathBuf};

use rekindle_model::Preprocess;
use serde::{Deserialize, Serialize};

use crate::config::check::{
    End::{Closed, Open},
    in_range,
};
use crate::data::manifest::Format;
use crate::data::policy::{AutoAugment, ErasingFill};
use crate::data::sampler::Sampler;
use crate::error::TrainError;

/// The kind of dataset under `data.root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// `root/<class>/*.png|jpg`, or `root/train/<class>/..` and `root/val/<class>/..`.
    Folder,
    /// The four IDX `.gz` files of Fashion-MNIST (Debian's `dataset-fashion-mnist`).
    FashionMnist,
    /// A `.csv` or `.jsonl` file listing `path`, `label` and optional `split` (train, val).
    Manifest,
}

/// What to do with an image that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BadImage {
    /// Leave it out, with a warning and a count.
    Skip,
    /// Stop before training, naming the file.
    Fail,
}

/// `[data]`: the dataset and its transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Dataset layout.
    pub kind: DataKind,
    /// Dataset directory, or manifest file for `kind = "manifest"`.
    pub root: PathBuf,
    /// More datasets of the same kind merged with `root` (folders: union of class names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<PathBuf>,
    /// Use only these classes (names, or indices for Fashion-MNIST); empty: all. Manifests:
    /// the full class list in label order, every label must be one of them.
    pub classes: Vec<String>,
    /// At most this many training images per class (few-label fine-tuning); 0: all.
    pub train_per_class: usize,
    /// At most this many validation images per class; 0: all.
    pub val_per_class: usize,
    /// Fraction held out for validation when the folder has no `val/` subfolder.
    pub val_split: f64,
    /// Shorter side before the centre crop (evaluation); default: the model's.
    pub resize: Option<usize>,
    /// Input side; default: the model's.
    pub crop: Option<usize>,
    /// Training augmentation: random resized crop and horizontal flip.
    pub augment: bool,
    /// Smallest area fraction of a random resized crop (torchvision: 0.08).
    pub crop_scale_min: f64,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Automatic augmentation after the crop: `none`, `rand-augment`, `trivial-augment-wide`.
    pub auto_augment: AutoAugment,
    /// RandAugment's operations per image (torchvision's `num_ops`).
    pub rand_augment_ops: usize,
    /// RandAugment's magnitude, 0..=30 (torchvision's `magnitude`).
    pub rand_augment_magnitude: usize,
    /// `ColorJitter`'s `[brightness, contrast, saturation, hue]`; 0 leaves one alone.
    pub color_jitter: [f64; 4],
    /// Probability of `RandomErasing` of a box of the normalised image; 0: off.
    pub random_erasing: f64,
    /// What erased boxes hold: `zero` (the mean colour) or `noise`.
    pub erasing_fill: ErasingFill,
    /// Order of the training images: `shuffle`, or `balanced` (each class equally likely).
    pub sampler: Sampler,
    /// Threads decoding and augmenting images; 0: one per core.
    pub workers: usize,
    /// Skip or fail on an unreadable image.
    pub on_bad_image: BadImage,
}

impl DataSection {
    /// `root`, then every extra one of `roots`.
    pub fn all_roots(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.root.as_path()).chain(self.roots.iter().map(PathBuf::as_path))
    }

    /// Checks `[data]` on its own: the roots the kind can read, the ranges of the split and the
    /// augmentations, and the input size against the model's rule (ImageNet's, until the model
    /// is loaded).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.check_roots().map_err(TrainError::Config)?;
        [
            in_range("data.val_split", self.val_split, Closed(0.0), Open(1.0)),
            in_range(
                "data.crop_scale_min",
                self.crop_scale_min,
                Open(0.0),
                Closed(1.0),
            ),
            in_range("data.hflip", self.hflip, Closed(0.0), Closed(1.0)),
            in_range(
                "data.random_erasing",
                self.random_erasing,
                Closed(0.0),
                Closed(1.0),
            ),
        ]
        .into_iter()
        .collect::<Result<(), String>>()
        .map_err(TrainError::Config)?;
        if self.rand_augment_magnitude > 30 {
            return Err(TrainError::Config(format!(
                "data.rand_augment_magnitude = {}: must be 0 to 30",
                self.rand_augment_magnitude
            )));
        }
        let [b, c, s, h] = self.color_jitter;
        if [b, c, s].iter().any(|v| !(v.is_finite() && *v >= 0.0)) || !(0.0..=0.5).contains(&h) {
            return Err(TrainError::Config(format!(
                "data.color_jitter = {:?}: brightness, contrast and saturation must be 0 or \
                 more, hue within [0, 0.5]",
                self.color_jitter
            )));
        }
        self.preprocess(&Preprocess::imagenet())?;
        Ok(())
    }

    /// Refuses roots the kind cannot read, before anything is loaded.
    fn check_roots(&self) -> Result<(), String> {
        match self.kind {
            DataKind::FashionMnist if !self.roots.is_empty() => Err(
                "data.roots merges folder or manifest datasets; data.kind = \"fashion-mnist\" \
                 reads data.root alone"
                    .into(),
            ),
            DataKind::Manifest => self
                .all_roots()
                .try_for_each(|p| Format::of(p).map(drop))
                .map_err(|e| format!("data.root/data.roots: {e}")),
            _ => Ok(()),
        }
    }

    /// A model's preprocessing at the input size asked for here: `crop` alone keeps the model's
    /// resize/crop ratio (256/224 stays 256/224 at the new size). Checked by the model's rule.
    pub fn preprocess(&self, model: &Preprocess) -> Result<Preprocess, TrainError> {
        let mut pre = model.clone();
        if let Some(c) = self.crop {
            pre.crop = c;
            pre.resize = match self.resize {
                Some(r) => r,
                None => (c * model.resize).div_ceil(model.crop.max(1)).max(c),
            };
        } else if let Some(r) = self.resize {
            pre.resize = r;
        }
        pre.validate()
            .map_err(|e| TrainError::Config(format!("data.resize/data.crop: {e}")))?;
        Ok(pre)
    }
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            kind: DataKind::FashionMnist,
            root: PathBuf::from("/usr/share/datasets/fashion-mnist"),
            roots: Vec::new(),
            classes: Vec::new(),
            train_per_class: 0,
            val_per_class: 0,
            val_split: 0.1,
            resize: None,
            crop: None,
            augment: true,
            crop_scale_min: 0.08,
            hflip: 0.5,
            auto_augment: AutoAugment::None,
            rand_augment_ops: 2,
            rand_augment_magnitude: 9,
            color_jitter: [0.0; 4],
            random_erasing: 0.0,
            erasing_fill: ErasingFill::Zero,
            sampler: Sampler::Shuffle,
            workers: 0,
            on_bad_image: BadImage::Skip,
        }
    }
}
