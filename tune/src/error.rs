//! What can go wrong reading a study.

use std::path::PathBuf;

/// A study that cannot run, naming the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The study file is malformed or names something impossible.
    #[error("{}: {message}", path.display())]
    Study {
        /// The study file (or the base config it names).
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}
