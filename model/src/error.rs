//! Errors of the model crate; each names the file, key or value at fault.

use std::path::PathBuf;

/// Everything that can go wrong building, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An architecture name that is not a ResNet depth we build.
    #[error("unknown architecture `{name}`; valid ones: {valid}")]
    UnknownArch {
        /// What the user wrote.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A stage name that is not one of the network's stages.
    #[error("unknown stage `{name}`; valid ones: {valid}")]
    UnknownStage {
        /// What the user wrote.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A backend name that is not one of ours.
    #[error("unknown backend `{name}`; valid ones: {valid}")]
    UnknownBackend {
        /// What the user wrote.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A backend we know but this binary was built without.
    #[error(
        "backend `{name}` is not compiled into this binary (compiled: {compiled}); rebuild with \
         the cargo feature `{name}`, which `cargo xtask <command> --backend {name}` does for you"
    )]
    BackendNotCompiled {
        /// The backend asked for.
        name: &'static str,
        /// Backends this binary has, comma-separated.
        compiled: String,
    },
    /// A compiled-in backend whose device cannot be opened on this machine.
    #[error("backend `{name}` device {index} is not usable here: {reason}")]
    DeviceUnavailable {
        /// The backend asked for.
        name: &'static str,
        /// The device index asked for.
        index: usize,
        /// Why, and what the backend needs.
        reason: String,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file that is not one, is damaged, or does not match the model.
    #[error("{}: {message}", path.display())]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}
