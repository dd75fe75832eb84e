//! Errors of inference; each names the file, input or limit at fault.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or predicting.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model file could not be loaded (missing, damaged, not a rekindle model).
    #[error(transparent)]
    Model(#[from] rekindle_model::Error),
    /// An input that is not an image we can decode.
    #[error("{source_name}: {message}")]
    BadImage {
        /// The file path, or a description of the input (`request body`).
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
    /// An image larger than the configured limits.
    #[error("{source_name}: {message}")]
    TooLarge {
        /// The file path or input description.
        source_name: String,
        /// Which limit, and by how much.
        message: String,
    },
    /// Reading an input file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl InferError {
    /// An error about the image in `source_name`.
    pub fn bad_image(source_name: impl Into<String>, message: impl ToString) -> Self {
        Self::BadImage {
            source_name: source_name.into(),
            message: message.to_string(),
        }
    }
}
