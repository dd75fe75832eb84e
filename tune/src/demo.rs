//! `cargo xtask tune demo`: a search over the training demo's fine-tune (the pretrained
//! ResNet-18 on Fashion-MNIST classes 5-9, 10 labels per class), TPE with ASHA on parallel
//! workers; then the best trial's model and the demo's default recipe are both scored on a
//! test split that played no part in the selection: the rest of the t10k images of those
//! classes, outside the validation subset the trials were ranked on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rekindle_model::Backend;
use rekindle_train::data::dataset::{Dataset, Item};
use rekindle_train::demo::Demo;
use rekindle_train::eval::top1_accuracy;
use rekindle_train::{TrainConfig, train};

use crate::error::TuneError;
use crate::launch::Launch;
use crate::sql::Storage;
use crate::study::Study;
use crate::summary::Summary;

/// The demo's search space: what a person would try on a small fine-tune.
const SPACE: &str = r#"
[space]
"train.lr" = { log-uniform = [3e-4, 1e-1] }
"optim.name" = { choice = ["sgd", "adamw"] }
"optim.momentum" = { uniform = [0.8, 0.99], when = { "optim.name" = "sgd" } }
"optim.weight_decay" = { log-uniform = [1e-5, 1e-1] }
"train.strategy" = { choice = ["full", "partial"] }
"train.freeze_to" = { choice = ["stem", "layer1", "layer2"], when = { "train.strategy" = "partial" } }
"data.crop_scale_min" = { uniform = [0.3, 1.0] }
"#;

/// The demo's knobs.
pub struct TuneDemo {
    /// Where the study, the default run and the report go.
    pub out: PathBuf,
    /// The training demo's cache (its pretrained model).
    pub cache: PathBuf,
    /// Backend of every run.
    pub backend: Backend,
    /// Trials side by side.
    pub workers: usize,
    /// Trials in the study.
    pub trials: usize,
}

/// What the demo found.
pub struct DemoResult {
    /// The study's summary.
    pub summary: Summary,
    /// Test accuracy of the demo's default recipe, and of the best trial.
    pub test: (f64, f64),
    /// Validation accuracy (the selection metric) of the same two.
    pub valid: (f64, f64),
    /// Test images.
    pub test_images: usize,
    /// Seconds of the search alone, and of the whole demo.
    pub seconds: (f64, f64),
}

impl TuneDemo {
    /// The training demo this searches over.
    fn demo(&self) -> Demo {
        Demo {
            out: self.out.clone(),
            cache: self.cache.clone(),
            backend: self.backend,
            labels_per_class: 10,
        }
    }

    /// The training demo's pretrained model: trained now (in this process, where Ctrl-C
    /// stops it as it stops any run) unless cached.
    pub fn pretrained(&self) -> Result<PathBuf, TuneError> {
        Ok(self.demo().pretrained().map_err(|e| self.error(e))?.0)
    }

    /// Searches from `pretrained`, trains the default recipe and scores both; `stop` (Ctrl-C)
    /// ends it after the search, which the next run resumes.
    pub fn run(
        &self,
        pretrained: &Path,
        program: &Path,
        name: &str,
        stop: &AtomicBool,
    ) -> Result<DemoResult, TuneError> {
        let started = Instant::now();
        let demo = self.demo();
        let base = demo.finetune_config(&pretrained.display().to_string(), "default");
        let study_file = self.write_study(&base)?;
        let study = Study::load(&study_file)?;
        let launch = Launch {
            study_file,
            dir: self.out.join("study"),
            storage: Storage::sqlite(self.out.join("study").join("study.db")),
            workers: self.workers,
            backend: Some(self.backend),
            program: program.to_path_buf(),
            name: name.to_string(),
        };
        let searched = Instant::now();
        let summary = launch.run(&study, stop)?;
        if stop.load(Ordering::SeqCst) {
            return Err(self.error("interrupted; run it again to resume the search"));
        }
        let search_seconds = searched.elapsed().as_secs_f64();
        let Some((best, best_config)) = summary.best.clone() else {
            return Err(self.error("no trial completed"));
        };
        eprintln!("\nthe demo's default recipe, for comparison:");
        let _ = std::fs::remove_dir_all(&base.run.dir);
        let default = train(&base, false).map_err(|e| self.error(e))?;
        let best_cfg = TrainConfig::from_file(&best_config).map_err(|e| self.error(e))?;
        let (data, test) = test_split(&base)?;
        let score = |model: &Path| top1_accuracy(model, &data, &test, self.backend);
        let test_default = score(&default.model).map_err(|e| self.error(e))?;
        let test_best = score(&best_cfg.run.dir.join("model.bpk")).map_err(|e| self.error(e))?;
        Ok(DemoResult {
            test: (test_default, test_best),
            valid: (default.best_accuracy, best.value.unwrap_or(f64::NAN)),
            test_images: test.len(),
            summary,
            seconds: (search_seconds, started.elapsed().as_secs_f64()),
        })
    }

    /// The study file: the demo's fine-tune as the base, [`SPACE`], TPE and ASHA.
    fn write_study(&self, base: &TrainConfig) -> Result<PathBuf, TuneError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TuneError::Io { path, source }
        };
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let base_file = self.out.join("base.toml");
        std::fs::write(&base_file, base.to_toml()).map_err(io(&base_file))?;
        let text = format!(
            "# The tune demo's study, written by `cargo xtask tune demo`.\n\
             [study]\ntrials = {}\nsampler = \"tpe\"\npruner = \"asha\"\n\
             objective = \"valid-accuracy\"\nseed = 7\nheartbeat = 5\nbase = \"base.toml\"\n\
             # Rungs at epochs 2 and 6 of 10, keeping a third: one epoch of a cosine schedule\n\
             # says too little about where a trial ends.\n\
             [pruner]\nmin_resource = 2\nreduction_factor = 3\n{SPACE}",
            self.trials
        );
        let path = self.out.join("demo.toml");
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(path)
    }

    fn error(&self, e: impl std::fmt::Display) -> TuneError {
        TuneError::Study {
            path: self.out.clone(),
            message: format!("tune demo: {e}"),
        }
    }
}

/// The images of `base`'s classes in its validation source (Fashion-MNIST's t10k) that are not
/// in the validation subset its runs rank epochs and trials by.
fn test_split(base: &TrainConfig) -> Result<(Dataset, Vec<Item>), TuneError> {
    let load = |data| {
        Dataset::load(data, base.train.seed).map_err(|e| TuneError::Study {
            path: base.data.root.clone(),
            message: e.to_string(),
        })
    };
    let valid: HashSet<_> = load(&base.data)?.val.into_iter().map(|i| i.image).collect();
    let mut all = base.data.clone();
    all.val_per_class = 0;
    let data = load(&all)?;
    let test = data
        .val
        .iter()
        .filter(|i| !valid.contains(&i.image))
        .cloned()
        .collect();
    Ok((data, test))
}

impl DemoResult {
    /// The table the README shows.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let count = |st| s.count(st);
        format!(
            "| recipe | validation accuracy (selection) | test accuracy ({} images) |\n\
             |---|---|---|\n\
             | the demo's default (SGD 0.9, lr 0.03, cosine, full) | {:.2}% | {:.2}% |\n\
             | best of {} trials (TPE + ASHA) | {:.2}% | {:.2}% |\n\n\
             {} complete, {} pruned, {} invalid, {} failed; search {:.0} s, whole demo {:.0} s",
            self.test_images,
            self.valid.0,
            self.test.0,
            s.trials.len(),
            self.valid.1,
            self.test.1,
            count(crate::TrialState::Complete),
            count(crate::TrialState::Pruned),
            count(crate::TrialState::Invalid),
            count(crate::TrialState::Failed),
            self.seconds.0,
            self.seconds.1,
        )
    }
}
