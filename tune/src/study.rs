//! The study file: what to search, over which base config, for how long.

use std::path::{Path, PathBuf};

use rekindle_train::report::log::EpochRow;
use serde::Deserialize;

use crate::error::TuneError;
use crate::prune::{Asha, Hyperband, Percentile, Pruner};
use crate::space::Space;
use crate::trial::{parse, set};

/// How the next point is proposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerName {
    /// Independent uniform draws from the space.
    #[default]
    Random,
    /// Every combination of the choices and integer ranges ([`Space::grid`]); a continuous
    /// range is refused when the study is read.
    Grid,
    /// A scrambled Sobol sequence over the space.
    Sobol,
    /// Optuna's tree-structured Parzen estimator, with a constant liar.
    Tpe,
}

/// How unpromising trials are stopped early.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrunerName {
    /// Every trial runs all its epochs (a NaN loss still stops it).
    #[default]
    None,
    /// Below the median of earlier trials at the same epoch.
    Median,
    /// Asynchronous successive halving.
    Asha,
    /// Several successive-halving brackets.
    Hyperband,
}

/// What a trial is judged by, at its best epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Validation accuracy, maximised.
    #[default]
    ValidAccuracy,
    /// Validation loss, minimised.
    ValidLoss,
}

impl Objective {
    /// Whether larger is better.
    pub fn maximize(self) -> bool {
        self == Self::ValidAccuracy
    }

    /// The objective in one epoch's validation row.
    pub fn of(self, row: &EpochRow) -> f64 {
        match self {
            Self::ValidAccuracy => row.accuracy,
            Self::ValidLoss => row.loss,
        }
    }
}

/// `[study]`: budget, sampler, pruner, objective, seed and where the base config is.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySection {
    /// How many trials to run, invalid ones included.
    pub trials: usize,
    /// How points are proposed.
    #[serde(default)]
    pub sampler: SamplerName,
    /// How trials are stopped early.
    #[serde(default)]
    pub pruner: PrunerName,
    /// What the trials are ranked by.
    #[serde(default)]
    pub objective: Objective,
    /// Seeds the sampler.
    #[serde(default)]
    pub seed: u64,
    /// A train config file, relative to the study file; or an inline `[base]` table instead.
    pub base: Option<PathBuf>,
    /// The study's name (default: the study file's name without its extension).
    pub name: Option<String>,
    /// No new trial starts this many seconds after the workers started.
    pub timeout: Option<f64>,
    /// Seconds between a running trial's heartbeats; after three missed ones another worker
    /// takes the trial over.
    #[serde(default = "heartbeat")]
    pub heartbeat: u64,
    /// Keep each ended trial's checkpoints (by default only its logs and model file stay).
    #[serde(default)]
    pub keep_checkpoints: bool,
}

fn heartbeat() -> u64 {
    10
}

/// `[pruner]`: the pruner's settings where Optuna's defaults will not do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunerSection {
    /// median: no pruning until this many trials are complete (Optuna: 5).
    pub startup_trials: Option<usize>,
    /// median: no pruning before this epoch (Optuna: 0).
    pub warmup_steps: Option<usize>,
    /// median: judge every this many epochs (Optuna: 1).
    pub interval_steps: Option<usize>,
    /// median: the percentile a trial must reach instead of 50.
    pub percentile: Option<f64>,
    /// asha and hyperband: epochs before the first rung (Optuna: "auto" for asha, 1 for
    /// hyperband).
    pub min_resource: Option<usize>,
    /// hyperband: the most epochs a trial runs (Optuna: "auto", the longest complete + 1).
    pub max_resource: Option<usize>,
    /// asha and hyperband: rungs grow by this factor and keep this fraction (Optuna: 4 for
    /// asha, 3 for hyperband).
    pub reduction_factor: Option<usize>,
    /// asha: rungs skipped at the start (Optuna: 0).
    pub min_early_stopping_rate: Option<u32>,
    /// asha and hyperband: trials a rung needs before it promotes anyone (Optuna: 0).
    pub bootstrap_count: Option<usize>,
}

impl PrunerSection {
    /// The median (percentile) pruner with these settings over Optuna's defaults.
    pub fn percentile(&self) -> Percentile {
        let d = Percentile::median();
        Percentile {
            percentile: self.percentile.unwrap_or(d.percentile),
            startup_trials: self.startup_trials.unwrap_or(d.startup_trials),
            warmup_steps: self.warmup_steps.unwrap_or(d.warmup_steps),
            interval_steps: self.interval_steps.unwrap_or(d.interval_steps),
            min_trials: d.min_trials,
        }
    }

    /// ASHA with these settings over Optuna's defaults.
    pub fn asha(&self) -> Asha {
        let d = Asha::default();
        Asha {
            min_resource: self.min_resource.or(d.min_resource),
            reduction_factor: self.reduction_factor.unwrap_or(d.reduction_factor),
            min_early_stopping_rate: self
                .min_early_stopping_rate
                .unwrap_or(d.min_early_stopping_rate),
            bootstrap_count: self.bootstrap_count.unwrap_or(d.bootstrap_count),
        }
    }

    /// Hyperband with these settings over Optuna's defaults, for the study named `study`.
    pub fn hyperband(&self, study: &str) -> Hyperband {
        let d = Hyperband::new(study);
        Hyperband {
            min_resource: self.min_resource.unwrap_or(d.min_resource),
            max_resource: self.max_resource.or(d.max_resource),
            reduction_factor: self.reduction_factor.unwrap_or(d.reduction_factor),
            bootstrap_count: self.bootstrap_count.unwrap_or(d.bootstrap_count),
            study: d.study,
        }
    }

    fn check(&self, pruner: PrunerName) -> Result<(), String> {
        if pruner != PrunerName::Hyperband && self.max_resource.is_some() {
            return Err("pruner.max_resource is a hyperband setting".into());
        }
        if pruner == PrunerName::Hyperband
            && self.bootstrap_count.unwrap_or(0) > 0
            && self.max_resource.is_none()
        {
            // As Optuna: bootstrapping needs brackets fixed before any trial completes.
            let msg = "pruner.bootstrap_count needs pruner.max_resource with hyperband";
            return Err(msg.into());
        }
        if self.max_resource == Some(0) {
            return Err("pruner.max_resource must be at least 1".into());
        }
        if self.percentile.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
            return Err("pruner.percentile must be in [0, 100]".into());
        }
        if self.reduction_factor.is_some_and(|r| r < 2) {
            return Err("pruner.reduction_factor must be at least 2".into());
        }
        if self.min_resource == Some(0) || self.interval_steps == Some(0) {
            return Err("pruner.min_resource and pruner.interval_steps must be at least 1".into());
        }
        Ok(())
    }
}

/// The study file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    study: StudySection,
    #[serde(default)]
    pruner: PrunerSection,
    base: Option<toml::Table>,
    space: Space,
}

/// A study, read and checked: its base config parses and validates, and every searched key
/// exists in the train config with the type its values have.
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    /// `[study]`.
    pub section: StudySection,
    /// `[pruner]`.
    pub pruner: PrunerSection,
    /// The base train config, as a TOML table the sampled keys are set in.
    pub base: toml::Table,
    /// `[space]`.
    pub space: Space,
    /// `study.name`, or the study file's name without its extension: Hyperband hashes it with
    /// each trial's number to choose the trial's bracket, as Optuna hashes its study name.
    pub name: String,
    /// The file as read, for [`Study::resolved`].
    source: toml::Table,
}

impl Study {
    /// Reads and checks a study file; errors name the file and the key at fault.
    pub fn load(path: &Path) -> Result<Self, TuneError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TuneError::Io { path, source }
        };
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let bad = |path: &Path, message: String| TuneError::Study {
            path: path.to_path_buf(),
            message,
        };
        let source: toml::Table = toml::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let file: StudyFile = toml::Value::Table(source.clone())
            .try_into()
            .map_err(|e: toml::de::Error| bad(path, e.to_string()))?;
        let base = match (&file.study.base, file.base) {
            (Some(rel), None) => {
                let base_path = path.parent().unwrap_or(Path::new(".")).join(rel);
                let text = std::fs::read_to_string(&base_path).map_err(io(&base_path))?;
                toml::from_str(&text).map_err(|e| bad(&base_path, e.to_string()))?
            }
            (None, Some(inline)) => inline,
            _ => {
                let msg = "give the base config once: study.base = \"FILE\" or a [base] table";
                return Err(bad(path, msg.into()));
            }
        };
        let name = file.study.name.clone().unwrap_or_else(|| {
            let stem = path.file_stem().unwrap_or_default();
            stem.to_string_lossy().into_owned()
        });
        let study = Self {
            section: file.study,
            pruner: file.pruner,
            base,
            space: file.space,
            name,
            source,
        };
        study.check().map_err(|message| bad(path, message))?;
        Ok(study)
    }

    /// The pruner `[study] pruner` names, with the `[pruner]` settings.
    pub fn build_pruner(&self) -> Pruner {
        match self.section.pruner {
            PrunerName::None => Pruner::None,
            PrunerName::Hyperband => Pruner::Hyperband(self.pruner.hyperband(&self.name)),
            PrunerName::Median => Pruner::Percentile(self.pruner.percentile()),
            PrunerName::Asha => Pruner::Asha(self.pruner.asha()),
        }
    }

    /// The study file with its base config inline: what the study directory keeps
    /// (`study.toml`), readable wherever the directory is moved.
    pub fn resolved(&self) -> String {
        let mut table = self.source.clone();
        if let Some(toml::Value::Table(study)) = table.get_mut("study") {
            study.remove("base");
            study.insert("name".into(), self.name.clone().into());
        }
        table.insert("base".into(), toml::Value::Table(self.base.clone()));
        toml::to_string(&table).unwrap_or_default()
    }

    /// What identifies the search: base config, space, sampler, pruner, objective and seed
    /// (not the budget, which a resumed study may extend).
    pub fn fingerprint(&self) -> String {
        let s = &self.section;
        // Hyperband's brackets depend on the study's name.
        let name = match s.pruner {
            PrunerName::Hyperband => self.name.as_str(),
            _ => "",
        };
        format!(
            "{}\n{:?}\n{:?} {:?} {:?} {} {:?} {name}",
            toml::to_string(&self.base).unwrap_or_default(),
            self.space,
            s.sampler,
            s.pruner,
            s.objective,
            s.seed,
            self.pruner
        )
    }

    /// What [`Study::load`] checks beyond the file's shape.
    fn check(&self) -> Result<(), String> {
        let s = &self.section;
        if s.trials == 0 {
            return Err("study.trials must be at least 1".into());
        }
        if s.timeout.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return Err("study.timeout must be a positive number of seconds".into());
        }
        if !(1..=3600).contains(&s.heartbeat) {
            return Err("study.heartbeat must be 1 to 3600 seconds".into());
        }
        self.pruner.check(s.pruner)?;
        let base = parse(self.base.clone()).map_err(|e| format!("base config: {e}"))?;
        base.validate().map_err(|e| format!("base config: {e}"))?;
        self.space.order()?;
        if self.section.sampler == SamplerName::Grid {
            self.space
                .grid()
                .map_err(|e| format!("sampler = \"grid\": {e}"))?;
        }
        for (key, param) in &self.space.0 {
            for value in param.distribution.shapes() {
                let mut table = self.base.clone();
                set(&mut table, key, value.clone()).map_err(|e| format!("space: {e}"))?;
                parse(table).map_err(|e| format!("space.\"{key}\" = {value}: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The study of the issue that asked for this crate, with its base inline.
    const STUDY: &str = r#"
        [study]
        trials = 24
        sampler = "tpe"
        pruner = "asha"
        objective = "valid-accuracy"
        seed = 7

        [base.train]
        epochs = 3

        [space]
        "train.lr" = { log-uniform = [1e-4, 1e-1] }
        "optim.name" = { choice = ["sgd", "adamw"] }
        "optim.momentum" = { uniform = [0.8, 0.99], when = { "optim.name" = "sgd" } }
        "train.batch_size" = { choice = [8, 16, 32] }
    "#;

    fn load(text: &str) -> Result<Study, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("study.toml");
        std::fs::write(&path, text).expect("write");
        Study::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_study_loads() {
        let study = load(STUDY).expect("loads");
        assert_eq!(study.section.trials, 24);
        assert_eq!(study.section.sampler, SamplerName::Tpe);
        assert_eq!(study.section.pruner, PrunerName::Asha);
        assert_eq!(study.space.0.len(), 4);
    }

    #[test]
    fn a_base_file_is_read_relative_to_the_study() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("my.toml"), "[train]\nepochs = 2\n").expect("write");
        let study = STUDY
            .replace("seed = 7", "seed = 7\nbase = \"my.toml\"")
            .replace("[base.train]\n        epochs = 3", "");
        let path = dir.path().join("study.toml");
        std::fs::write(&path, study).expect("write");
        let study = Study::load(&path).expect("loads");
        assert_eq!(study.base["train"]["epochs"].as_integer(), Some(2));
    }

    #[test]
    fn the_resolved_study_loads_as_the_same_study() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("my.toml"), "[train]\nepochs = 2\n").expect("write");
        let text = STUDY
            .replace("seed = 7", "seed = 7\nbase = \"my.toml\"")
            .replace("[base.train]\n        epochs = 3", "");
        let path = dir.path().join("study.toml");
        std::fs::write(&path, text).expect("write");
        let study = Study::load(&path).expect("loads");
        let copy = dir.path().join("elsewhere").join("study.toml");
        std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
        std::fs::write(&copy, study.resolved()).expect("write");
        let again = Study::load(&copy).expect("the copy loads without my.toml beside it");
        assert_eq!(again.fingerprint(), study.fingerprint());
    }

    #[test]
    fn bad_studies_name_the_key_at_fault() {
        let cases = [
            (
                STUDY.replace("\"train.lr\"", "\"train.learning_rate\""),
                "learning_rate",
            ),
            (
                STUDY.replace("[8, 16, 32]", "[\"big\"]"),
                "train.batch_size",
            ),
            (STUDY.replace("trials = 24", "trials = 0"), "study.trials"),
            (STUDY.replace("epochs = 3", "epochs = 0"), "base config: "),
            (STUDY.replace("\"tpe\"", "\"bayes\""), "bayes"),
            (
                STUDY.replace("[base.train]\n        epochs = 3", ""),
                "give the base config",
            ),
            (
                STUDY.replace("\"optim.name\" = {", "\"optim.nam\" = {"),
                "not searched",
            ),
            (
                STUDY.replace("\"tpe\"", "\"grid\""),
                "a grid needs choice or int",
            ),
        ];
        for (text, want) in cases {
            let err = load(&text).expect_err(want);
            assert!(
                err.contains("study.toml") && err.contains(want),
                "{want}: {err}"
            );
        }
    }
}
