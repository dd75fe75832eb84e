//! Import and export errors; each names the file and what is wrong with it.

use std::path::PathBuf;

/// Everything that can go wrong importing or exporting weights.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not in a format we read, or is damaged.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file holds tensors, but not a ResNet we can map.
    #[error("{}: not a torchvision-style ResNet: {message}", path.display())]
    NotAResNet {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The tensors do not fit the model asked for.
    #[error("{}: {message}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The report of what does not fit.
        message: String,
    },
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// From the model crate (model files, configs).
    #[error(transparent)]
    Model(#[from] rekindle_model::Error),
}

pub(crate) fn format_error(path: &std::path::Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
