//! One training run = one [`TrainConfig`]: a TOML file where every field has a default, plus
//! command-line overrides. The effective config is saved in the run directory.

pub mod check;
mod data;
mod model;
mod names;
pub mod reference;
mod train;

pub use data::{BadImage, DataKind, DataSection};
pub use model::{ModelSection, ModelSource};
pub use train::{LrScaling, Strategy, TrainSection};

use std::path::{Path, PathBuf};

use rekindle_model::{Backend, HeadConfig};
use serde::{Deserialize, Serialize};

use crate::catalog::init::InitSection;
use crate::catalog::loss::LossSection;
use crate::catalog::optim::{OptimSection, OptimizerKind};
use crate::catalog::prune::PruneSection;
use crate::catalog::schedule::{Per, ScheduleKind, ScheduleSection};
use crate::config::check::{
    End::{Closed, Open},
    in_range,
};
use crate::data::mixup::MixupSection;
use crate::error::TrainError;
use crate::run::ema::EmaSection;

/// Everything a run needs; `TrainConfig::default()` is a sensible full fine-tune.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// `[run]`: output and hardware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Run directory: config copy, checkpoints, logs, plots, final model.
    pub dir: PathBuf,
    /// Backend: flex, ndarray, wgpu, tch, cuda (aliases as `--backend` takes them).
    #[serde(with = "names")]
    #[schemars(with = "String")]
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
        t.validate().map_err(TrainError::Config)?;
        self.data.validate()?;
        in_range(
            "model.drop_path",
            self.model.drop_path,
            Closed(0.0),
            Open(1.0),
        )
        .map_err(TrainError::Config)?;
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
    use rekindle_model::{Arch, Preprocess};

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
