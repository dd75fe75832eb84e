//! rekindle-tune: hyper-parameter search where every trial is an ordinary, resumable training
//! run. A study file ([`Study`]) names a base train config, a search space over its dotted keys
//! ([`Space`]) and the budget; each sampled point becomes a [`TrainConfig`] checked by the same
//! validation a run makes ([`trial_config`]), so an impossible point costs nothing. The trials,
//! their reports and ASHA rungs live in SQLite ([`Store`]), shared by the workers; pruners
//! ([`Percentile`], [`Asha`]) decide on them by Optuna's rules.
//!
//! Its own crate, above `rekindle-train`, so that training alone and the service never pull in
//! what the search needs.

pub mod demo;
mod error;
mod launch;
mod plots;
mod prune;
pub mod report;
mod run;
mod sampler;
mod space;
mod sql;
mod store;
mod study;
mod summary;
mod tpe;
mod trial;
pub mod worker;

pub use error::TuneError;
pub use launch::{Launch, RESOLVED};
pub use prune::{Asha, History, Hyperband, Percentile, Pruner, Reports};
pub use rekindle_train::TrainConfig;
pub use run::{best, run_trial};
pub use sampler::{budget, propose};
pub use space::{Assignment, Distribution, Param, Space};
pub use sql::Storage;
pub use store::{Store, Trial, TrialState};
pub use study::{Objective, PrunerName, PrunerSection, SamplerName, Study, StudySection};
pub use summary::{Summary, summary};
pub use tpe::Tpe;
pub use trial::{Invalid, trial_config};
