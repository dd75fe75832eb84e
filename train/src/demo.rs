//! The embedded default, `cargo xtask train` with no arguments: transfer learning on this
//! machine without a network. A ResNet-18 is pretrained on Fashion-MNIST's first five classes
//! (cached, so only the first run pays for it), then fine-tuned on the other five with a few
//! labels per class, next to the same budget from random weights.

use std::path::{Path, PathBuf};

use rekindle_model::{Arch, Backend};

use crate::catalog::optim::{OptimSection, OptimizerKind};
use crate::catalog::prune::{PruneSchedule, PruneSection};
use crate::catalog::schedule::{Per, ScheduleKind, ScheduleSection};
use crate::config::{DataKind, ModelSource, Strategy, TrainConfig};
use crate::error::TrainError;
use crate::run::{Outcome, train};

/// Classes the "pretrained" model learns (T-shirt/top .. Coat).
pub const PRETRAIN_CLASSES: [&str; 5] = ["0", "1", "2", "3", "4"];
/// Classes the demo fine-tunes on (Sandal .. Ankle boot): never seen in pretraining.
pub const FINETUNE_CLASSES: [&str; 5] = ["5", "6", "7", "8", "9"];

/// Where the demo caches its pretrained model unless told: `$REKINDLE_CACHE/demo`, else
/// `~/.cache/rekindle/demo`.
pub fn default_cache() -> PathBuf {
    std::env::var_os("REKINDLE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rekindle")))
        .unwrap_or_else(|| PathBuf::from(".cache/rekindle"))
        .join("demo")
}

/// Knobs of the demo.
#[derive(Clone, Debug)]
pub struct Demo {
    /// Where the two fine-tuning runs go (`transfer/`, `scratch/`).
    pub out: PathBuf,
    /// Where the pretrained model is cached between runs.
    pub cache: PathBuf,
    /// Backend name.
    pub backend: Backend,
    /// Labelled training images per class for fine-tuning.
    pub labels_per_class: usize,
}

/// Both accuracies and where the runs are.
#[derive(Debug)]
pub struct DemoReport {
    /// Fine-tuning from the pretrained model.
    pub transfer: Outcome,
    /// The same budget from random weights.
    pub scratch: Outcome,
    /// Seconds spent pretraining in this process (0 when the cache was used).
    pub pretrain_seconds: f64,
    /// The pretrained model file.
    pub pretrained: PathBuf,
}

impl Demo {
    /// What every demo run shares: a ResNet-18 from `source` on Fashion-MNIST `classes` at
    /// 32x32, 200 validation images per class, written to `dir`.
    fn base(&self, source: &str, classes: &[&str], dir: PathBuf) -> TrainConfig {
        let mut c = TrainConfig::default();
        c.model.source = ModelSource::from(source.to_string());
        c.model.arch = Some(Arch::Resnet18);
        c.data.kind = DataKind::FashionMnist;
        c.data.classes = classes.iter().map(|s| s.to_string()).collect();
        c.data.val_per_class = 200;
        c.data.resize = Some(32);
        c.data.crop = Some(32);
        c.data.crop_scale_min = 0.6;
        c.run.backend = self.backend;
        c.run.dir = dir;
        c
    }

    /// The pretraining run: half of Fashion-MNIST's classes.
    pub fn pretrain_config(&self) -> TrainConfig {
        let mut c = self.base("random", &PRETRAIN_CLASSES, self.cache.join("pretrain-run"));
        c.data.train_per_class = 1200;
        c.train.epochs = 5;
        c.train.batch_size = 64;
        c.train.lr = 0.05;
        c.train.seed = 7;
        c
    }

    /// A fine-tuning run on the other half with few labels, from `source`.
    pub fn finetune_config(&self, source: &str, name: &str) -> TrainConfig {
        let mut c = self.base(source, &FINETUNE_CLASSES, self.out.join(name));
        c.data.train_per_class = self.labels_per_class;
        c.train.epochs = 10;
        c.train.batch_size = 10;
        c.train.lr = 0.03;
        c.train.strategy = Strategy::Full;
        c.train.seed = 11;
        c
    }

    /// Pretrains (or reuses the cache), then runs both fine-tunings.
    pub fn run(&self) -> Result<DemoReport, TrainError> {
        let (pretrained, pretrain_seconds) = self.pretrained()?;
        let source = pretrained.display().to_string();
        let mut runs = Vec::new();
        for (name, src) in [("transfer", source.as_str()), ("scratch", "random")] {
            let c = self.finetune_config(src, name);
            clear(&c.run.dir)?;
            eprintln!(
                "\nfine-tuning on classes 5-9 with {} labels per class: {name}",
                self.labels_per_class
            );
            runs.push(train(&c, false)?);
        }
        let scratch = runs
            .pop()
            .ok_or_else(|| TrainError::Stopped("no scratch run".into()))?;
        let transfer = runs
            .pop()
            .ok_or_else(|| TrainError::Stopped("no transfer run".into()))?;
        Ok(DemoReport {
            transfer,
            scratch,
            pretrain_seconds,
            pretrained,
        })
    }

    /// The demo's transfer fine-tune under each of [`RECIPES`], from the same pretrained model:
    /// the README's experiment table.
    pub fn recipes(&self) -> Result<Vec<(&'static Recipe, Outcome)>, TrainError> {
        let (pretrained, _) = self.pretrained()?;
        let source = pretrained.display().to_string();
        let mut out = Vec::new();
        for recipe in RECIPES.iter() {
            let mut c = self.finetune_config(&source, &format!("recipe-{}", recipe.name));
            (recipe.edit)(&mut c);
            c.validate()?;
            clear(&c.run.dir)?;
            eprintln!("\nrecipe {}: {}", recipe.name, recipe.description);
            out.push((recipe, train(&c, false)?));
        }
        Ok(out)
    }

    /// The demo's transfer fine-tune with each of [`REGULARISERS`], once per seed in `seeds`
    /// (one run of a small fine-tune is noisy): the README's regularisation table.
    pub fn regularisers(
        &self,
        seeds: &[u64],
    ) -> Result<Vec<(&'static Recipe, Vec<Outcome>)>, TrainError> {
        let (pretrained, _) = self.pretrained()?;
        let source = pretrained.display().to_string();
        let mut out = Vec::new();
        for recipe in REGULARISERS.iter() {
            let mut runs = Vec::new();
            for &seed in seeds {
                let name = format!("regularise-{}-seed{seed}", recipe.name);
                let mut c = self.finetune_config(&source, &name);
                c.train.seed = seed;
                (recipe.edit)(&mut c);
                c.validate()?;
                clear(&c.run.dir)?;
                eprintln!(
                    "
{} (seed {seed}): {}",
                    recipe.name, recipe.description
                );
                runs.push(train(&c, false)?);
            }
            out.push((recipe, runs));
        }
        Ok(out)
    }

    /// The pretrained model file (trained now unless cached) and the seconds it took.
    pub fn pretrained(&self) -> Result<(PathBuf, f64), TrainError> {
        let pre = self.pretrain_config();
        // The cache is keyed by the pretraining config, so changing it retrains.
        let key = fnv(pre.to_toml().replace(self.backend.name(), "").as_bytes());
        let pretrained = self.cache.join(format!("pretrained-{key:016x}.bpk"));
        let mut pretrain_seconds = 0.0;
        if pretrained.exists() {
            eprintln!("using the cached pretrained model {}", pretrained.display());
        } else {
            eprintln!(
                "pretraining ResNet-18 on Fashion-MNIST classes 0-4 (once; cached in {})",
                self.cache.display()
            );
            clear(&pre.run.dir)?;
            let out = train(&pre, false)?;
            pretrain_seconds = out.seconds;
            eprintln!(
                "pretrained: {:.2}% validation accuracy on its 5 classes in {:.0} s",
                out.best_accuracy, out.seconds
            );
            std::fs::copy(&out.model, &pretrained).map_err(|e| TrainError::io(&pretrained, e))?;
        }
        Ok((pretrained, pretrain_seconds))
    }
}

/// A fine-tuning recipe for the experiment table: a change to the demo's transfer config.
pub struct Recipe {
    /// Short name (run directory `recipe-NAME`).
    pub name: &'static str,
    /// What it is, for the table.
    pub description: &'static str,
    /// The change.
    pub edit: fn(&mut TrainConfig),
}

/// The recipes of the README's table (10 epochs of 5 steps each, batch 10, from the demo's
/// pretrained ResNet-18).
pub static RECIPES: [Recipe; 6] = [
    Recipe {
        name: "sgd-cosine",
        description: "SGD momentum 0.9, wd 1e-4, lr 0.03, cosine per step (the demo's)",
        edit: |_| {},
    },
    Recipe {
        name: "sgd-step",
        description: "SGD momentum 0.9, wd 1e-4, lr 0.03, x0.1 every 4 epochs",
        edit: |c| {
            c.schedule = ScheduleSection {
                name: ScheduleKind::Step,
                per: Per::Epoch,
                step_size: 4,
                ..Default::default()
            };
        },
    },
    Recipe {
        name: "adamw-warmup-cosine",
        description: "AdamW lr 1e-3, wd 0.05 (not on biases/BN), 5-step warmup + cosine",
        edit: |c| {
            c.train.lr = 1e-3;
            c.optim = OptimSection {
                name: OptimizerKind::Adamw,
                weight_decay: Some(0.05),
                no_decay_bias_norm: true,
                ..Default::default()
            };
            c.schedule = ScheduleSection {
                name: ScheduleKind::Cosine,
                warmup: 5,
                warmup_factor: 0.1,
                ..Default::default()
            };
        },
    },
    Recipe {
        name: "features-one-cycle",
        description: "feature extraction (head only), SGD momentum 0.9, one-cycle to lr 0.1",
        edit: |c| {
            c.train.strategy = Strategy::FeatureExtraction;
            c.train.lr = 0.1;
            c.schedule = ScheduleSection {
                name: ScheduleKind::OneCycle,
                ..Default::default()
            };
        },
    },
    Recipe {
        name: "layer-decay",
        description: "SGD momentum 0.9, lr 0.05, layer-wise decay 0.5 (stem at lr/32), cosine",
        edit: |c| {
            c.train.lr = 0.05;
            c.train.layer_decay = 0.5;
        },
    },
    Recipe {
        name: "pruned-50",
        description: "the demo's recipe with gradual magnitude pruning to 50% (epochs 1-9)",
        edit: |c| {
            c.prune = PruneSection {
                sparsity: 0.5,
                schedule: PruneSchedule::Gradual,
                ..Default::default()
            };
        },
    },
];

/// The regularisation options of the README's second table, each alone over the demo's
/// recipe, then all together.
pub static REGULARISERS: [Recipe; 7] = [
    Recipe {
        name: "none",
        description: "the demo's recipe (random resized crop and flip only)",
        edit: |_| {},
    },
    Recipe {
        name: "label-smoothing",
        description: "label smoothing 0.1",
        edit: |c| c.loss.label_smoothing = 0.1,
    },
    Recipe {
        name: "mixup",
        description: "mixup, alpha 0.2",
        edit: |c| c.mixup.mixup_alpha = 0.2,
    },
    Recipe {
        name: "cutmix",
        description: "cutmix, alpha 1.0",
        edit: |c| c.mixup.cutmix_alpha = 1.0,
    },
    Recipe {
        name: "mixup-cutmix",
        description: "timm's mix: mixup 0.8 or cutmix 1.0, half each",
        edit: |c| {
            c.mixup.mixup_alpha = 0.8;
            c.mixup.cutmix_alpha = 1.0;
        },
    },
    Recipe {
        name: "drop-path",
        description: "stochastic depth 0.1",
        edit: |c| c.model.drop_path = 0.1,
    },
    Recipe {
        name: "all",
        description: "label smoothing 0.1, mixup 0.2, stochastic depth 0.05, balanced sampler",
        edit: |c| {
            c.loss.label_smoothing = 0.1;
            c.mixup.mixup_alpha = 0.2;
            c.model.drop_path = 0.05;
            c.data.sampler = crate::data::sampler::Sampler::Balanced;
        },
    },
];

/// Removes a previous demo run directory (only ever one the demo itself writes).
fn clear(dir: &Path) -> Result<(), TrainError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    Ok(())
}

/// FNV-1a: a stable hash for the cache key (std's hasher is not stable across releases).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
