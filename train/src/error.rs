//! Errors of a training run; each names the file, key or value at fault.

use std::path::{Path, PathBuf};

/// Everything that stops a run before or during training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config value or combination that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A dataset that cannot be trained on (empty, one class, unreadable image, ...).
    #[error("dataset {}: {message}", path.display())]
    Data {
        /// The dataset root or the file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Building, loading or saving the model failed.
    #[error(transparent)]
    Model(#[from] rekindle_model::Error),
    /// Importing pretrained weights failed.
    #[error(transparent)]
    Import(#[from] rekindle_import::Error),
    /// A run to resume that has nothing to resume from.
    #[error("cannot resume {}: {message}", path.display())]
    Resume {
        /// The run directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another process is training in the run directory (it holds the directory's lock).
    #[error(
        "run directory {} is in use by another rekindle process{}; wait for it to end or stop \
         it (the lock is released when that process exits)",
        path.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The run directory.
        path: PathBuf,
        /// The process holding the lock, when it could be read.
        holder: Option<u32>,
    },
    /// Training stopped on an error (failed checkpoint, unreadable batch).
    #[error("training stopped: {0}")]
    Stopped(String),
    /// The training loss became NaN or infinite; the last complete checkpoint is kept.
    #[error("training stopped: {0}")]
    Diverged(String),
    /// Ctrl-C stopped the run after a step; it resumes from its last checkpoint.
    #[error("training stopped: {0}")]
    Interrupted(String),
    /// The run's [`crate::Watch`] stopped it after an epoch (a search pruned it).
    #[error("training halted: {0}")]
    Halted(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A dataset problem at `path`.
    pub fn data(path: &Path, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
