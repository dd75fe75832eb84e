//! rekindle-infer: loading a fine-tuned rekindle model file and predicting, as a library, a CLI
//! and an HTTP service. Depends on the model crate only, never on training.

pub mod app;
pub mod auth;
pub mod batcher;
pub mod classifier;
pub mod decode;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod oip;
pub mod server;

pub use classifier::{Classifier, Label, Prediction};
pub use decode::Limits;
pub use error::InferError;
pub use rekindle_model;
