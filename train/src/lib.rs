//! rekindle-train: fine-tuning a rekindle ResNet on Burn's `SupervisedTraining`: a TOML config,
//! image-folder and Fashion-MNIST data with seeded augmentation, full / partial / gradual /
//! feature-extraction fine-tuning, the tuning catalog (initialisers, optimisers, schedules,
//! pruning), checkpoints with exact resume, CSV logs, plots, and the best model exported as a
//! rekindle model file for `infer`.
//!
//! The folders follow a run: [`config`] (what to do) -> [`data`] (the images) -> [`run`] (plan,
//! starting model, phases, export) using [`catalog`] (init, optimiser, schedule, pruning) and
//! [`report`] (progress, CSV logs, plots); [`durable`] keeps the run's directory whole through
//! crashes; [`eval`] is a model file's report; [`cli`] is the `rekindle-train` command line.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod data;
pub mod demo;
pub mod durable;
pub mod error;
pub mod eval;
pub mod report;
pub mod run;

pub use config::TrainConfig;
pub use error::TrainError;
pub use run::watch::Watch;
pub use run::{Outcome, train, train_watched};
