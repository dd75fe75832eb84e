//! rekindle-train: fine-tuning a rekindle ResNet on Burn's `SupervisedTraining`: a TOML config,
//! image-folder and Fashion-MNIST data with seeded augmentation, full / partial / gradual /
//! feature-extraction fine-tuning, checkpoints with exact resume, CSV logs, plots, and the best model
//! exported as a rekindle model file for `infer`.

pub mod augment;
pub mod check;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod error;
pub mod init;
pub mod loader;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod prune;
pub mod run;
pub mod schedule;
pub mod strategy;
pub mod trainee;

pub use config::TrainConfig;
pub use error::TrainError;
pub use run::{Outcome, train};
