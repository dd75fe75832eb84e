//! A run directory and every file name in it, spelled here once.

use std::path::{Path, PathBuf};

/// The three files Burn's default checkpointers write per epoch, under `checkpoint/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// The network's weights (`model-N.bpk`).
    Model,
    /// The optimiser's state (`optim-N.bpk`).
    Optim,
    /// The learning-rate scheduler's state (`scheduler-N.bpk`).
    Scheduler,
}

impl Checkpoint {
    /// Every kind: a resumable epoch has all three.
    pub const ALL: [Checkpoint; 3] = [Self::Model, Self::Optim, Self::Scheduler];

    /// Burn's prefix for this kind.
    pub fn stem(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Optim => "optim",
            Self::Scheduler => "scheduler",
        }
    }
}

/// A run directory: config copy, checkpoints, CSV logs, plots and the exported model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// What a finished run leaves, for a person reading the summary.
    pub const CONTENTS: &str = "config.toml, checkpoint/, metrics-steps.csv, metrics-epochs.csv, \
                                loss.png, accuracy.png, lr.png, model.bpk";

    /// The run directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself (Burn's learner writes `checkpoint/` under it).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The effective config; `--resume` reads it back.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The exported best model, a rekindle model file.
    pub fn model(&self) -> PathBuf {
        self.root.join("model.bpk")
    }

    /// Where Burn keeps the checkpoints.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// One checkpoint file of one epoch, as Burn names it.
    pub fn checkpoint(&self, kind: Checkpoint, epoch: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("{}-{epoch}.bpk", kind.stem()))
    }

    /// The checksums of one epoch's checkpoint files, written once all three are on disk.
    pub fn checksums(&self, epoch: usize) -> PathBuf {
        self.checkpoints().join(format!("checksums-{epoch}.txt"))
    }

    /// The lock a training process holds on the directory while it writes there.
    pub fn lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Where the export writes the model before it is published as [`Self::model`]; a model
    /// file at that name therefore means the run finished.
    pub fn model_staging(&self) -> PathBuf {
        self.root.join("model.bpk.tmp")
    }

    /// How the run's last process ended (see [`crate::durable::ending`]).
    pub fn ended(&self) -> PathBuf {
        self.root.join("ended.json")
    }

    /// The per-step log.
    pub fn steps_csv(&self) -> PathBuf {
        self.root.join("metrics-steps.csv")
    }

    /// The per-epoch log, one row per epoch and split.
    pub fn epochs_csv(&self) -> PathBuf {
        self.root.join("metrics-epochs.csv")
    }

    /// TensorBoard's event files (with `[run] tensorboard = true`).
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tensorboard")
    }

    /// A plot of the run: `loss`, `accuracy` or `lr`.
    pub fn plot(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.png"))
    }

    /// The evaluation report of the exported model on the validation split.
    pub fn eval(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// The last epoch whose model, optimiser and scheduler checkpoints are all on disk.
    pub fn last_checkpoint(&self) -> Option<usize> {
        let entries = std::fs::read_dir(self.checkpoints()).ok()?;
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_prefix("model-")?
                    .strip_suffix(".bpk")?
                    .parse::<usize>()
                    .ok()
            })
            .filter(|&e| {
                Checkpoint::ALL
                    .iter()
                    .all(|&k| self.checkpoint(k, e).exists())
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_checkpoint_needs_all_three_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        assert_eq!(dir.last_checkpoint(), None);
        std::fs::create_dir_all(dir.checkpoints()).unwrap();
        for epoch in [1, 2] {
            for k in Checkpoint::ALL {
                std::fs::write(dir.checkpoint(k, epoch), b"x").unwrap();
            }
        }
        // Epoch 3 lost its scheduler file (a kill mid-checkpoint): not resumable.
        std::fs::write(dir.checkpoint(Checkpoint::Model, 3), b"x").unwrap();
        std::fs::write(dir.checkpoint(Checkpoint::Optim, 3), b"x").unwrap();
        std::fs::write(dir.checkpoints().join("model-x.bpk"), b"x").unwrap();
        assert_eq!(dir.last_checkpoint(), Some(2));
        assert_eq!(
            dir.checkpoint(Checkpoint::Scheduler, 2),
            tmp.path().join("checkpoint/scheduler-2.bpk")
        );
    }
}
