//! One training run = one [`TrainConfig`]: a TOML file where every field has a default, plus
//! command-line overrides. The effective config is saved in the run directory.

pub mod check;
mod names;

use std::path::{Path, PathBuf};

use rekindle_model::{Arch, Backend, HeadConfig, Preprocess, Stage};
use serde::{Deserialize, Serialize};

use crate::catalog::init::InitSection;
use crate::catalog::loss::LossSection;
use crate::catalog::optim::{OptimSection, OptimizerKind};
use crate::catalog::prune::PruneSection;
use crate::catalog::schedule::{Per, ScheduleKind, ScheduleSection};
use crate::config::check::{
    End::{Closed, Open},
    in_range, positive,
};
use crate::data::manifest::Format;
use crate::data::mixup::MixupSection;
use crate::data::policy::{AutoAugment, ErasingFill};
use crate::data::sampler::Sampler;
use crate::error::TrainError;
use crate::run::ema::EmaSection;

/// Everything a run needs; `TrainConfig::default()` is a sensible full fine-tune.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the starting weights come from and which head to put on.
    pub model: ModelSection,
    /// Which images, how they are split and transformed.
    pub data: DataSection,
    /// Optimisation: epochs, batch size, learning rate, strategy.
    pub train: TrainSection,
    /// The optimiser.
    pub optim: OptimSection,
    /// The learning-rate schedule.
    pub schedule: ScheduleSection,
    /// How the parameters in scope are initialised.
    pub init: InitSection,
    /// Magnitude pruning.
    pub prune: PruneSection,
    /// The training loss: label smoothing, class weights.
    pub loss: LossSection,
    /// Mixup and cutmix of training batches.
    pub mixup: MixupSection,
    /// An exponential moving average of the weights (timm's `ModelEmaV3`).
    pub ema: EmaSection,
    /// Where the run writes, and on which backend it runs.
    pub run: RunSection,
}

/// Where a run's starting weights come from; written `"random"` or a path in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ModelSource {
    /// torchvision's initialisation, seeded by `train.seed`.
    Random,
    /// A rekindle model file, or a `.pth`/`.pt`/`.safetensors`/`.onnx` file to import; told
    /// apart by its first bytes, not its name.
    File(PathBuf),
}

impl From<String> for ModelSource {
    fn from(s: String) -> Self {
        if s == "random" {
            Self::Random
        } else {
            Self::File(s.into())
        }
    }
}

impl From<ModelSource> for String {
    fn from(s: ModelSource) -> Self {
        match s {
            ModelSource::Random => "random".into(),
            ModelSource::File(p) => p.display().to_string(),
        }
    }
}

/// `[model]`: the starting point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// `random`, a rekindle model file (`.bpk`), or a `.pth`/`.pt`/`.safetensors` file to import.
    pub source: ModelSource,
    /// Architecture for `random` (none: resnet18), or to check a file against (none: detect).
    #[serde(with = "names::optional", skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// Width of an optional hidden layer in the new head.
    pub head_hidden: Option<usize>,
    /// Dropout before the new head's last layer.
    pub head_dropout: f64,
    /// timm's `drop_path_rate`: stochastic depth of the last residual block in training,
    /// rising linearly from 0 at the first (0: off).
    pub drop_path: f64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            source: ModelSource::Random,
            arch: None,
            head_hidden: None,
            head_dropout: 0.0,
            drop_path: 0.0,
        }
    }
}

/// The kind of dataset under `data.root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadImage {
    /// Leave it out, with a warning and a count.
    Skip,
    /// Stop before training, naming the file.
    Fail,
}

/// `[data]`: the dataset and its transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// How much of the pretrained network trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every layer trains.
    Full,
    /// Only the new head trains; the backbone, BatchNorm statistics included, stays as loaded.
    FeatureExtraction,
    /// The stem and stages up to `freeze_to` stay frozen; the rest trains.
    Partial,
    /// Starts as feature extraction, then every `unfreeze_every` epochs one more stage trains,
    /// from the top down (layer4, layer3, .., stem), as in ULMFiT.
    Gradual,
}

/// How the learning rate follows the effective batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrScaling {
    /// `lr` as written.
    None,
    /// `lr * effective_batch / base_batch_size` (Goyal et al. 2017).
    Linear,
    /// `lr * sqrt(effective_batch / base_batch_size)` (for adaptive optimisers).
    Sqrt,
}

/// `[train]`: optimisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of every random choice (init, split, shuffle, augmentation, dropout).
    pub seed: u64,
    /// Learning rate of the head (and of the backbone, times `backbone_lr_mult`).
    pub lr: f64,
    /// Backbone learning rate as a fraction of `lr` (1: one rate for all).
    pub backbone_lr_mult: f64,
    /// Layer-wise learning-rate decay: layer4 trains at lr * d, layer3 at lr * d^2, .., the
    /// stem at lr * d^5 (1: off).
    pub layer_decay: f64,
    /// Scale `lr` with the effective batch (batch_size x grad_accumulation x devices).
    pub lr_scaling: LrScaling,
    /// The batch size `lr` was tuned for, for `lr_scaling`.
    pub base_batch_size: usize,
    /// `[[epoch, batch_size], ..]`: from that epoch on, batches of that size (grow the batch
    /// instead of decaying the rate, Smith et al. 2018).
    pub batch_schedule: Vec<[usize; 2]>,
    /// Which layers train.
    pub strategy: Strategy,
    /// Last frozen stage for `partial`: `stem`, `layer1` .. `layer4`.
    pub freeze_to: Stage,
    /// Epochs between two unfreezings for `gradual`.
    pub unfreeze_every: usize,
    /// Backward passes summed before each optimiser step.
    pub grad_accumulation: usize,
    /// Stop after this many epochs without a better validation accuracy; 0: never.
    pub early_stopping_patience: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 32,
            seed: 42,
            lr: 0.01,
            backbone_lr_mult: 1.0,
            layer_decay: 1.0,
            lr_scaling: LrScaling::None,
            base_batch_size: 256,
            batch_schedule: Vec::new(),
            strategy: Strategy::Full,
            freeze_to: Stage::Layer2,
            unfreeze_every: 1,
            grad_accumulation: 1,
            early_stopping_patience: 0,
        }
    }
}

/// `[run]`: output and hardware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Run directory: config copy, checkpoints, logs, plots, final model.
    pub dir: PathBuf,
    /// Backend: flex, ndarray, wgpu, tch, cuda (aliases as `--backend` takes them).
    #[serde(with = "names")]
    pub backend: Backend,
    /// Device indices; more than one trains data-parallel.
    pub devices: Vec<usize>,
    /// Also write the step and epoch scalars as TensorBoard event files (`DIR/tensorboard/`).
    pub tensorboard: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/train"),
            backend: Backend::default_compiled(),
            devices: vec![0],
            tensorboard: false,
        }
    }
}

impl Default for TrainConfig {
    /// The recipe a run gets with no config: SGD with momentum 0.9 and weight decay 1e-4,
    /// cosine decay per step. A config that writes an `[optim]` or `[schedule]` table gets
    /// PyTorch's defaults for whatever that table leaves out.
    fn default() -> Self {
        Self {
            model: ModelSection::default(),
            data: DataSection::default(),
            train: TrainSection::default(),
            optim: OptimSection {
                name: OptimizerKind::Sgd,
                momentum: Some(0.9),
                weight_decay: Some(1e-4),
                ..Default::default()
            },
            schedule: ScheduleSection {
                name: ScheduleKind::Cosine,
                ..Default::default()
            },
            init: InitSection::default(),
            prune: PruneSection::default(),
            loss: LossSection::default(),
            mixup: MixupSection::default(),
            ema: EmaSection::default(),
            run: RunSection::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config; an unknown key or a wrong type is an error naming it and the file.
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text (see [`TrainConfig::from_file`]).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The config as TOML, every field written out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Rejects impossible values before anything is loaded or trained.
    pub fn validate(&self) -> Result<(), TrainError> {
        let t = &self.train;
        let bad = |msg: String| Err(TrainError::Config(msg));
        if t.epochs == 0 {
            return bad("train.epochs must be at least 1".into());
        }
        if t.batch_size == 0 {
            return bad("train.batch_size must be at least 1".into());
        }
        let d = &self.data;
        d.check_roots().map_err(TrainError::Config)?;
        [
            in_range("train.lr", t.lr, Open(0.0), Closed(1.0)),
            positive("train.backbone_lr_mult", t.backbone_lr_mult),
            in_range("train.layer_decay", t.layer_decay, Open(0.0), Closed(1.0)),
            in_range("data.val_split", d.val_split, Closed(0.0), Open(1.0)),
            in_range(
                "data.crop_scale_min",
                d.crop_scale_min,
                Open(0.0),
                Closed(1.0),
            ),
            in_range("data.hflip", d.hflip, Closed(0.0), Closed(1.0)),
            in_range(
                "data.random_erasing",
                d.random_erasing,
                Closed(0.0),
                Closed(1.0),
            ),
            in_range(
                "model.drop_path",
                self.model.drop_path,
                Closed(0.0),
                Open(1.0),
            ),
        ]
        .into_iter()
        .collect::<Result<(), String>>()
        .map_err(TrainError::Config)?;
        if d.rand_augment_magnitude > 30 {
            return bad(format!(
                "data.rand_augment_magnitude = {}: must be 0 to 30",
                d.rand_augment_magnitude
            ));
        }
        let [b, c, s, h] = d.color_jitter;
        if [b, c, s].iter().any(|v| !(v.is_finite() && *v >= 0.0)) || !(0.0..=0.5).contains(&h) {
            return bad(format!(
                "data.color_jitter = {:?}: brightness, contrast and saturation must be 0 or \
                 more, hue within [0, 0.5]",
                d.color_jitter
            ));
        }
        if t.base_batch_size == 0 {
            return bad("train.base_batch_size must be at least 1".into());
        }
        let mut last = 1;
        for &[epoch, size] in &t.batch_schedule {
            if epoch <= last || epoch > t.epochs || size == 0 {
                return bad(format!(
                    "train.batch_schedule entry [{epoch}, {size}]: epochs must increase from \
                     2 to train.epochs ({}) and sizes be at least 1",
                    t.epochs
                ));
            }
            last = epoch;
        }
        self.optim.validate().map_err(TrainError::Config)?;
        if self.optim.clip_grad_norm.is_some() && self.run.devices.len() > 1 {
            return bad(
                "optim.clip_grad_norm needs every gradient on one device; it is not \
                        supported with several run.devices"
                    .into(),
            );
        }
        if self.schedule.per == Per::Epoch {
            self.schedule
                .validate(t.epochs)
                .map_err(TrainError::Config)?;
        }
        self.init.validate().map_err(TrainError::Config)?;
        self.prune.validate(t.epochs).map_err(TrainError::Config)?;
        self.loss.validate().map_err(TrainError::Config)?;
        self.mixup.validate().map_err(TrainError::Config)?;
        self.ema.validate().map_err(TrainError::Config)?;
        if self.ema.active() && self.prune.active() {
            return bad(
                "ema.decay with [prune]: an average of pruned weights is not sparse; use one \
                 or the other"
                    .into(),
            );
        }
        if t.unfreeze_every == 0 {
            return bad("train.unfreeze_every must be at least 1".into());
        }
        if t.grad_accumulation == 0 {
            return bad("train.grad_accumulation must be at least 1".into());
        }
        d.preprocess(&Preprocess::imagenet())?;
        let m = &self.model;
        HeadConfig {
            num_classes: 1,
            hidden: m.head_hidden,
            dropout: m.head_dropout,
        }
        .validate()
        .map_err(|e| TrainError::Config(format!("model.head_hidden/model.head_dropout: {e}")))?;
        if self.run.devices.is_empty() {
            return bad("run.devices must name at least one device".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!(TrainConfig::from_toml(&c.to_toml()).unwrap(), c);
        assert_eq!(TrainConfig::from_toml("").unwrap(), c);
    }

    #[test]
    fn typed_names_read_as_before() {
        let c = TrainConfig::from_toml(
            "[model]\nsource = \"r50.pth\"\narch = \"ResNet-50\"\n[run]\nbackend = \"LibTorch\"",
        )
        .unwrap();
        assert_eq!(c.model.source, ModelSource::File("r50.pth".into()));
        assert_eq!(c.model.arch, Some(Arch::Resnet50));
        assert_eq!(c.run.backend, Backend::Tch);
        let text = c.to_toml();
        assert!(text.contains("source = \"r50.pth\"") && text.contains("arch = \"resnet50\""));
        assert!(text.contains("backend = \"tch\""), "{text}");
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), c);
        // An empty arch is "detect", as it always was.
        let c = TrainConfig::from_toml("[model]\narch = \"\"").unwrap();
        assert_eq!(c.model.arch, None);
    }

    #[test]
    fn extra_roots_are_optional_and_written_only_when_set() {
        let c = TrainConfig::from_toml("[data]\nkind = \"folder\"\nroot = \"a\"").unwrap();
        assert!(c.data.roots.is_empty() && !c.to_toml().contains("roots"));
        let text = "[data]\nkind = \"manifest\"\nroot = \"a.csv\"\nroots = [\"b.jsonl\"]";
        let c = TrainConfig::from_toml(text).unwrap();
        c.validate().unwrap();
        let all: Vec<&Path> = c.data.all_roots().collect();
        assert_eq!(all, [Path::new("a.csv"), Path::new("b.jsonl")]);
        assert_eq!(TrainConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn crop_alone_keeps_the_models_resize_ratio() {
        let data = |resize, crop| DataSection {
            resize,
            crop,
            ..Default::default()
        };
        let imagenet = Preprocess::imagenet();
        // 256/224 at crop 32: resize ceil(32 * 256 / 224) = 37.
        let pre = data(None, Some(32)).preprocess(&imagenet).unwrap();
        assert_eq!((pre.resize, pre.crop), (37, 32));
        let pre = data(Some(40), Some(32)).preprocess(&imagenet).unwrap();
        assert_eq!((pre.resize, pre.crop), (40, 32));
        let pre = data(Some(300), None).preprocess(&imagenet).unwrap();
        assert_eq!((pre.resize, pre.crop), (300, 224));
        assert!(data(Some(100), None).preprocess(&imagenet).is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = TrainConfig::from_toml("[train]\nepocs = 3\n").unwrap_err();
        assert!(err.contains("epocs"), "{err}");
        let err = TrainConfig::from_toml("[trian]\n").unwrap_err();
        assert!(err.contains("trian"), "{err}");
        let err = TrainConfig::from_toml("[data]\nsampler = \"weighted\"\n").unwrap_err();
        assert!(
            err.contains("weighted") && err.contains("balanced"),
            "{err}"
        );
        let err = TrainConfig::from_toml("[mixup]\nalpha = 0.2\n").unwrap_err();
        assert!(
            err.contains("alpha") && err.contains("mixup_alpha"),
            "{err}"
        );
        let err = TrainConfig::from_toml("[model]\narch = \"resnet99\"\n").unwrap_err();
        assert!(
            err.contains("resnet99") && err.contains("resnet152"),
            "{err}"
        );
        let err = TrainConfig::from_toml("[train]\nfreeze_to = \"layer9\"\n").unwrap_err();
        assert!(err.contains("layer9") && err.contains("layer4"), "{err}");
        let err = TrainConfig::from_toml("[run]\nbackend = \"opencl\"\n").unwrap_err();
        assert!(err.contains("opencl") && err.contains("flex"), "{err}");
        let err = TrainConfig::from_toml("[train]\nstrategy = \"most\"\n").unwrap_err();
        assert!(
            err.contains("full") && err.contains("feature-extraction"),
            "{err}"
        );
    }

    #[test]
    fn impossible_values_are_refused() {
        for (toml, word) in [
            ("[train]\nlr = -0.1", "train.lr"),
            ("[optim]\nmomentum = 1.0", "optim.momentum"),
            ("[prune]\nsparsity = 1.0", "prune.sparsity"),
            ("[schedule]\nper = \"epoch\"\nwarmup = 5", "schedule.warmup"),
            ("[train]\nbatch_schedule = [[1, 64]]", "batch_schedule"),
            ("[train]\nepochs = 0", "train.epochs"),
            ("[data]\nval_split = 1.5", "data.val_split"),
            ("[data]\nresize = 16\ncrop = 32", "crop"),
            ("[data]\ncrop = 0", "data.resize/data.crop"),
            ("[model]\nhead_dropout = 1.0", "head_dropout"),
            ("[loss]\nlabel_smoothing = -0.1", "loss.label_smoothing"),
            (
                "[data]\nrand_augment_magnitude = 31",
                "data.rand_augment_magnitude",
            ),
            (
                "[data]\ncolor_jitter = [0.4, 0.4, 0.4, 0.7]",
                "data.color_jitter",
            ),
            ("[data]\nrandom_erasing = 1.5", "data.random_erasing"),
            (
                "[data]\nkind = \"manifest\"\nroot = \"list.txt\"",
                "list.txt",
            ),
            (
                "[data]\nkind = \"manifest\"\nroot = \"a.csv\"\nroots = [\"b.tsv\"]",
                "b.tsv",
            ),
            ("[data]\nroots = [\"more\"]", "data.roots"),
            ("[model]\ndrop_path = 1.0", "model.drop_path"),
            ("[loss]\nclass_weights = [1.0, nan]", "loss.class_weights"),
            ("[mixup]\nmixup_alpha = -1.0", "mixup.mixup_alpha"),
            ("[mixup]\ncutmix_minmax = [0.6, 0.4]", "mixup.cutmix_minmax"),
            ("[mixup]\nswitch_prob = 2.0", "mixup.switch_prob"),
        ] {
            let err = TrainConfig::from_toml(toml)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(word), "{toml}: {err}");
        }
    }
}
